/* int8 element-wise kernels: ADD (TFLite reference), clamp, requantize. All may run in place. */
#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"

static TINYC_ALWAYS_INLINE int8_t add_one(const tinyc_add_params *p, int8_t x1, int8_t x2)
{
    const int32_t a = ((int32_t)x1 - p->in1_zp) * (1 << p->left_shift);
    const int32_t b = ((int32_t)x2 - p->in2_zp) * (1 << p->left_shift);
    const int32_t sa = tinyc_mbqm_small(a, p->in1_mult, p->in1_shift);
    const int32_t sb = tinyc_mbqm_small(b, p->in2_mult, p->in2_shift);
    const int32_t y = tinyc_mbqm_small(sa + sb, p->out_mult, p->out_shift) + p->out_zp;
    return (int8_t)tinyc_clamp_i32(y, p->act_min, p->act_max);
}

void tinyc_add(const tinyc_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        out[i] = add_one(p, in1[i], in2[i]);
    }
}

void tinyc_add_channels(const tinyc_add_params *p, int32_t channels, const int8_t *in1,
                        const int8_t *terms, int8_t *out)
{
    int32_t i, c;
    for (i = 0; i < p->size; i += channels) {
        for (c = 0; c < channels; ++c) {
            out[i + c] = add_one(p, in1[i + c], terms[c]);
        }
    }
}

void tinyc_clamp(int32_t size, int32_t act_min, int32_t act_max, const int8_t *in, int8_t *out)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        out[i] = (int8_t)tinyc_clamp_i32(in[i], act_min, act_max);
    }
}

void tinyc_requantize(const tinyc_requantize_params *p, const int8_t *in, int8_t *out)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t y = tinyc_mbqm((int32_t)in[i] - p->in_zp, p->mult, p->shift) + p->out_zp;
        out[i] = (int8_t)tinyc_clamp_i32(y, TINYC_INT8_MIN, TINYC_INT8_MAX);
    }
}
