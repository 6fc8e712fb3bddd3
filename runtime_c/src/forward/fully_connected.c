/* int8 fully-connected layer (TFLite reference FullyConnected arithmetic, per-output scales).
 *
 * The DSP variant adds the input offset to four input bytes at once (SXTAB16: (x + in_off) as
 * int16 pairs, in [-255, 255]) and multiplies them by the weights with SMLAD, two outputs at a
 * time; the products and sums are the portable loop's. */
#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"
#include "tinyc/simd.h"

static TINYC_ALWAYS_INLINE int8_t fc_out(const tinyc_fc_params *p, int32_t acc,
                                         const int32_t *bias, const int32_t *mult,
                                         const int32_t *shift, int32_t o)
{
    if (bias) {
        acc += bias[o];
    }
#if TINYC_USE_DSP
    return (int8_t)tinyc_requant_dsp(acc, mult[o], shift[o], p->out_zp, p->act_min, p->act_max);
#else
    acc = tinyc_mbqm(acc, mult[o], shift[o]) + p->out_zp;
    return (int8_t)tinyc_clamp_i32(acc, p->act_min, p->act_max);
#endif
}

void tinyc_fully_connected(const tinyc_fc_params *p, const int8_t *in, const int8_t *weights,
                           const int32_t *bias, const int32_t *mult, const int32_t *shift,
                           int8_t *out)
{
    const int32_t in_off = -p->in_zp;
    int32_t o = 0, i;
#if TINYC_USE_DSP
    const uint32_t off2 = ((uint32_t)in_off & 0xFFFFu) | ((uint32_t)in_off << 16);
    const int32_t n4 = p->in_n & ~3;
    for (; o + 1 < p->out_n; o += 2) {
        const int8_t *w0 = weights + o * p->in_n;
        const int8_t *w1 = w0 + p->in_n;
        int32_t a0 = 0, a1 = 0;
        for (i = 0; i < n4; i += 4) {
            const uint32_t xv = tinyc_read4(in + i);
            const uint32_t xa = tinyc_sxtab16(off2, xv), xb = tinyc_sxtab16_ror8(off2, xv);
            a0 = tinyc_dot4(xa, xb, tinyc_read4(w0 + i), a0);
            a1 = tinyc_dot4(xa, xb, tinyc_read4(w1 + i), a1);
        }
        for (; i < p->in_n; ++i) {
            const int32_t v = (int32_t)in[i] + in_off;
            a0 += v * w0[i];
            a1 += v * w1[i];
        }
        out[o] = fc_out(p, a0, bias, mult, shift, o);
        out[o + 1] = fc_out(p, a1, bias, mult, shift, o + 1);
    }
#endif
    for (; o < p->out_n; ++o) {
        const int8_t *w = weights + o * p->in_n;
        int32_t acc = 0;
        for (i = 0; i < p->in_n; ++i) {
            acc += ((int32_t)in[i] + in_off) * (int32_t)w[i];
        }
        out[o] = fc_out(p, acc, bias, mult, shift, o);
    }
}
