/* int8 fully-connected layer (TFLite reference FullyConnected arithmetic, per-output scales).
 *
 * The DSP variant adds the input offset to four input bytes at once (SXTAB16: (x + in_off) as
 * int16 pairs, in [-255, 255]) and multiplies them by the weights with SMLAD, three outputs at a
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

#if TINYC_USE_DSP
/* one output of a layer whose shifts all fold the zero point (simd.h tinyc_requant_zfast) */
static TINYC_ALWAYS_INLINE int8_t fc_out_zfast(int32_t acc, int32_t mult, int32_t shift,
                                               uint32_t zp21, int32_t lo, int32_t hi)
{
    const uint32_t e1 = tinyc_requant_e1(shift);
    return (int8_t)tinyc_clamp_i32(
        tinyc_requant_pre(acc, mult, e1, tinyc_requant_round_zp(e1, zp21)), lo, hi);
}

/* three outputs at a time: each input word gets its offset added and is widened once (SXTAB16),
 * then multiplied by three weight rows (one pointer, the rows at offsets n and 2n: with four
 * rows gcc runs out of registers and spills accumulators in the loop) */
static TINYC_ALWAYS_INLINE void fc_rows3(const tinyc_fc_params *p, const int8_t *in,
                                         const int8_t *weights, const int32_t *bias,
                                         const int32_t *mult, const int32_t *shift, int8_t *out,
                                         int zfast)
{
    const int32_t n = p->in_n, n2 = 2 * n, n4 = n & ~3, in_off = -p->in_zp;
    const uint32_t off2 = ((uint32_t)in_off & 0xFFFFu) | ((uint32_t)in_off << 16);
    const uint32_t zp21 = 2u * (uint32_t)p->out_zp + 1u;
    const int32_t lo = p->act_min, hi = p->act_max;
    const int8_t *const x_end = in + n4;
    const int8_t *w = weights;
    int32_t o, i;
    for (o = 0; o + 2 < p->out_n; o += 3, w += 3 * n) {
        const int8_t *xp = in, *wp = w;
        int32_t a0 = 0, a1 = 0, a2 = 0;
        if (bias) {
            a0 = bias[o];
            a1 = bias[o + 1];
            a2 = bias[o + 2];
        }
        for (; xp != x_end; xp += 4, wp += 4) {
            const uint32_t xv = tinyc_read4(xp);
            const uint32_t xa = tinyc_sxtab16(off2, xv), xb = tinyc_sxtab16_ror8(off2, xv);
            a0 = tinyc_dot4(xa, xb, tinyc_read4(wp), a0);
            a1 = tinyc_dot4(xa, xb, tinyc_read4(wp + n), a1);
            a2 = tinyc_dot4(xa, xb, tinyc_read4(wp + n2), a2);
        }
        for (i = n4; i < n; ++i) {
            const int32_t v = (int32_t)in[i] + in_off;
            a0 += v * w[i];
            a1 += v * w[n + i];
            a2 += v * w[n2 + i];
        }
        if (zfast) {
            out[o] = fc_out_zfast(a0, mult[o], shift[o], zp21, lo, hi);
            out[o + 1] = fc_out_zfast(a1, mult[o + 1], shift[o + 1], zp21, lo, hi);
            out[o + 2] = fc_out_zfast(a2, mult[o + 2], shift[o + 2], zp21, lo, hi);
        } else {
            out[o] = fc_out(p, a0, NULL, mult, shift, o);
            out[o + 1] = fc_out(p, a1, NULL, mult, shift, o + 1);
            out[o + 2] = fc_out(p, a2, NULL, mult, shift, o + 2);
        }
    }
}
#endif

void tinyc_fully_connected(const tinyc_fc_params *p, const int8_t *in, const int8_t *weights,
                           const int32_t *bias, const int32_t *mult, const int32_t *shift,
                           int8_t *out)
{
    const int32_t in_off = -p->in_zp;
    int32_t o = 0, i;
#if TINYC_USE_DSP
    int zfast = 1;   /* every shift folds the zero point (simd.h tinyc_requant_zfast) */
    for (o = 0; o < p->out_n; ++o) {
        if (!tinyc_requant_zfast(shift[o])) {
            zfast = 0;
            break;
        }
    }
    if (zfast) {
        fc_rows3(p, in, weights, bias, mult, shift, out, 1);
    } else {
        fc_rows3(p, in, weights, bias, mult, shift, out, 0);
    }
    o = p->out_n - p->out_n % 3;
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
