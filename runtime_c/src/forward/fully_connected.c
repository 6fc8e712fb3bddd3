/* int8 fully-connected layer (TFLite reference FullyConnected arithmetic, per-output scales). */
#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"

void tinyc_fully_connected(const tinyc_fc_params *p, const int8_t *in, const int8_t *weights,
                           const int32_t *bias, const int32_t *mult, const int32_t *shift,
                           int8_t *out)
{
    const int32_t in_off = -p->in_zp;
    int32_t o, i;
    for (o = 0; o < p->out_n; ++o) {
        const int8_t *w = weights + o * p->in_n;
        int32_t acc = 0;
        for (i = 0; i < p->in_n; ++i) {
            acc += ((int32_t)in[i] + in_off) * (int32_t)w[i];
        }
        if (bias) {
            acc += bias[o];
        }
        acc = tinyc_mbqm(acc, mult[o], shift[o]) + p->out_zp;
        out[o] = (int8_t)tinyc_clamp_i32(acc, p->act_min, p->act_max);
    }
}
