/* Element-wise int8 multiplication (compiler/ops/mul.py), TFLite MUL's arithmetic. */
#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"

void tinyc_mul(const tinyc_mul_params *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    int32_t i, k;
    /* in2 repeats every in2_size elements: the whole tensor, or one value per channel */
    for (i = 0; i < p->size; i += p->in2_size) {
        for (k = 0; k < p->in2_size; ++k) {
            const int32_t prod = ((int32_t)in1[i + k] - p->in1_zp) * ((int32_t)in2[k] - p->in2_zp);
            const int32_t y = tinyc_mbqm(prod, p->mult, p->shift) + p->out_zp;
            out[i + k] = (int8_t)tinyc_clamp_i32(y, p->act_min, p->act_max);
        }
    }
}
