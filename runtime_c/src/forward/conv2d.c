/* int8 2-D convolution (TFLite reference ConvPerChannel arithmetic), NHWC / OHWI.
 *
 * tinyc_conv2d is the plain reference loop. The fast kernels use the identity
 *     sum((x - in_zp) * w) + bias == sum(x * w) + (bias - in_zp * sum(w))
 * with the folded bias precomputed by the code generator, and fill padded positions with in_zp
 * (which then contribute exactly 0): pure int8 dot products, same int32 results. */
#include <string.h>

#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"
#include "tinyc/simd.h"

#if TINYC_USE_DSP && defined(__GNUC__) && !defined(__clang__) && defined(__arm__)
/* gcc's first scheduling pass (before register allocation) interleaves the 2x2 blocks' loads,
 * multiplies and requantizations so far that their values no longer fit in the registers and
 * are spilled to the stack; without it mbv2-w0.35 (96 px, Cortex-M4) runs in 6% fewer
 * instructions, its k = 8 pointwise layers in 13% fewer */
#pragma GCC optimize("no-schedule-insns")
#endif

void tinyc_conv2d(const tinyc_conv_params *p, const int8_t *in, const int8_t *weights,
                  const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out)
{
    const int32_t cin_g = p->in_c / p->groups;
    const int32_t cout_g = p->out_c / p->groups;
    const int32_t in_off = -p->in_zp;
    const int32_t filter_size = p->kernel_h * p->kernel_w * cin_g;
    int32_t oy, ox, oc, ky, kx, ic;

    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            int8_t *o = out + (oy * p->out_w + ox) * p->out_c;
            for (oc = 0; oc < p->out_c; ++oc) {
                const int32_t c0 = (oc / cout_g) * cin_g;
                const int8_t *wk = weights + oc * filter_size;
                int32_t acc = 0;
                for (ky = 0; ky < p->kernel_h; ++ky) {
                    const int32_t iy = iy0 + ky * p->dilation_h;
                    if (iy < 0 || iy >= p->in_h) {
                        continue;   /* padding contributes 0 */
                    }
                    for (kx = 0; kx < p->kernel_w; ++kx) {
                        const int32_t ix = ix0 + kx * p->dilation_w;
                        const int8_t *px;
                        const int8_t *pw;
                        if (ix < 0 || ix >= p->in_w) {
                            continue;
                        }
                        px = in + (iy * p->in_w + ix) * p->in_c + c0;
                        pw = wk + (ky * p->kernel_w + kx) * cin_g;
                        for (ic = 0; ic < cin_g; ++ic) {
                            acc += ((int32_t)px[ic] + in_off) * (int32_t)pw[ic];
                        }
                    }
                }
                if (bias) {
                    acc += bias[oc];
                }
                acc = tinyc_mbqm(acc, mult[oc], shift[oc]) + p->out_zp;
                o[oc] = (int8_t)tinyc_clamp_i32(acc, p->act_min, p->act_max);
            }
        }
    }
}

static TINYC_ALWAYS_INLINE int8_t requant(int32_t acc, int32_t mult, int32_t shift,
                                          const tinyc_conv_params *p)
{
#if TINYC_USE_DSP
    return (int8_t)tinyc_requant_dsp(acc, mult, shift, p->out_zp, p->act_min, p->act_max);
#else
    acc = tinyc_mbqm(acc, mult, shift) + p->out_zp;
    return (int8_t)tinyc_clamp_i32(acc, p->act_min, p->act_max);
#endif
}

#if TINYC_USE_DSP
/* a loop of a constant, small trip count (k = 8, 16, 24 or 27 below) fully unrolled by gcc */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define TINYC_UNROLL_4 _Pragma("GCC unroll 4")
#define TINYC_UNROLL_8 _Pragma("GCC unroll 8")
#else
#define TINYC_UNROLL_4
#define TINYC_UNROLL_8
#endif

/* the rare shifts the fast requantization does not take (e = -shift <= 1): out of line */
static __attribute__((noinline)) int8_t requant_slow(int32_t acc, int32_t mult, int32_t shift,
                                                     const tinyc_conv_params *p)
{
    return requant(acc, mult, shift, p);
}

/* one output channel's requantization of two accumulators (two pixels), its constants derived
 * once */
static TINYC_ALWAYS_INLINE void requant2(int32_t a, int32_t b, int32_t mult, int32_t shift,
                                         int32_t zp, int32_t lo, int32_t hi, int full,
                                         const tinyc_conv_params *p, int8_t *oa, int8_t *ob)
{
    if (tinyc_requant_fast(shift)) {
        const uint32_t e1 = tinyc_requant_e1(shift);
        const int32_t r = tinyc_requant_round(e1);
        const int32_t va = tinyc_requant_pre(a, mult, e1, r) + zp;
        const int32_t vb = tinyc_requant_pre(b, mult, e1, r) + zp;
        *oa = (int8_t)(full ? tinyc_ssat8(va) : tinyc_clamp_i32(va, lo, hi));
        *ob = (int8_t)(full ? tinyc_ssat8(vb) : tinyc_clamp_i32(vb, lo, hi));
    } else {
        *oa = requant_slow(a, mult, shift, p);
        *ob = requant_slow(b, mult, shift, p);
    }
}

/* one output's requantization; SSAT clamps when the output range is the full int8 one */
static TINYC_ALWAYS_INLINE int8_t requant1(int32_t acc, int32_t mult, int32_t shift, int full,
                                           const tinyc_conv_params *p)
{
    if (tinyc_requant_fast(shift)) {
        const uint32_t e1 = tinyc_requant_e1(shift);
        const int32_t v = tinyc_requant_pre(acc, mult, e1, tinyc_requant_round(e1)) + p->out_zp;
        return (int8_t)(full ? tinyc_ssat8(v) : tinyc_clamp_i32(v, p->act_min, p->act_max));
    }
    return requant_slow(acc, mult, shift, p);
}

/* How a layer's outputs are requantized, decided once per kernel call: RQ_FULL when the output
 * range is the full int8 one (one SSAT clamps), RQ_ZFAST when every channel's shift takes the
 * fast requantization with the zero point folded in (tinyc_requant_zfast: no per-channel test,
 * no out-of-line call in the loops, so gcc keeps the block's values in registers). */
#define RQ_FULL 1
#define RQ_ZFAST 2
#define RQ_FAST 4   /* every channel's shift takes tinyc_requant_pre (RQ_ZFAST implies it) */

static int rq_mode(const tinyc_conv_params *p, const int32_t *shift)
{
    int32_t i, mode = RQ_ZFAST | RQ_FAST;
    for (i = 0; i < p->out_c; ++i) {
        if (!tinyc_requant_fast(shift[i])) {
            mode = 0;
            break;
        }
        if (!tinyc_requant_zfast(shift[i])) {
            mode &= ~RQ_ZFAST;
        }
    }
    if (p->act_min == TINYC_INT8_MIN && p->act_max == TINYC_INT8_MAX) {
        mode |= RQ_FULL;
    }
    return mode;
}

/* one output of a RQ_ZFAST layer from its accumulator and its channel's mult, e1, rz */
static TINYC_ALWAYS_INLINE int8_t rq_out(int32_t acc, int32_t mult, uint32_t e1, int32_t rz,
                                         int32_t lo, int32_t hi, int full)
{
    const int32_t v = tinyc_requant_pre(acc, mult, e1, rz);
    return (int8_t)(full ? tinyc_ssat8(v) : tinyc_clamp_i32(v, lo, hi));
}

/* the same from the channel's shift (zp21 = 2 * out_zp + 1) */
static TINYC_ALWAYS_INLINE int8_t rq_out_shift(int32_t acc, int32_t mult, int32_t shift,
                                               uint32_t zp21, int32_t lo, int32_t hi, int full)
{
    const uint32_t e1 = tinyc_requant_e1(shift);
    return rq_out(acc, mult, e1, tinyc_requant_round_zp(e1, zp21), lo, hi, full);
}

/* four output channels' dot products over x[0, k): each word of four input bytes is widened
 * once (SXTB16: bytes 0/2 and 1/3) and used against four weight words with SMLAD, two MACs per
 * instruction. Every product and sum is the portable loop's, so the int32 results are equal. */
static TINYC_ALWAYS_INLINE void dot_outputs_body(
    const tinyc_conv_params *p, const int8_t *x, int32_t k, const int8_t *weights,
    const int32_t *bias_eff, const int32_t *mult, const int32_t *shift, int32_t n_out,
    int8_t *restrict o, int full, int zfast)
{
    const int32_t k4 = k & ~3;
    const uint32_t zp21 = 2u * (uint32_t)p->out_zp + 1u;
    const int32_t lo = p->act_min, hi = p->act_max;
    int32_t oc = 0, i;
    const int8_t *const x_end = x + k4;
    for (; oc + 3 < n_out; oc += 4) {
        const int8_t *w0 = weights + oc * k;
        const int8_t *w1 = w0 + k;
        const int8_t *w2 = w1 + k;
        const int8_t *w3 = w2 + k;
        /* two row pointers, rows 1 and 3 at offset k (fewer live registers: no spill) */
        const int8_t *xp = x, *wp0 = w0, *wp2 = w2;
        int32_t a0 = bias_eff[oc], a1 = bias_eff[oc + 1];
        int32_t a2 = bias_eff[oc + 2], a3 = bias_eff[oc + 3];
        for (; xp != x_end; xp += 4, wp0 += 4, wp2 += 4) {
            const uint32_t xv = tinyc_read4(xp);
            const uint32_t x02 = tinyc_sxtb16(xv), x13 = tinyc_sxtb16_ror8(xv);
            a0 = tinyc_dot4(x02, x13, tinyc_read4(wp0), a0);
            a1 = tinyc_dot4(x02, x13, tinyc_read4(wp0 + k), a1);
            a2 = tinyc_dot4(x02, x13, tinyc_read4(wp2), a2);
            a3 = tinyc_dot4(x02, x13, tinyc_read4(wp2 + k), a3);
        }
        i = k4;
        for (; i < k; ++i) {
            const int32_t v = x[i];
            a0 += v * w0[i];
            a1 += v * w1[i];
            a2 += v * w2[i];
            a3 += v * w3[i];
        }
        if (zfast) {
            o[oc] = rq_out_shift(a0, mult[oc], shift[oc], zp21, lo, hi, full);
            o[oc + 1] = rq_out_shift(a1, mult[oc + 1], shift[oc + 1], zp21, lo, hi, full);
            o[oc + 2] = rq_out_shift(a2, mult[oc + 2], shift[oc + 2], zp21, lo, hi, full);
            o[oc + 3] = rq_out_shift(a3, mult[oc + 3], shift[oc + 3], zp21, lo, hi, full);
        } else {
            o[oc] = requant1(a0, mult[oc], shift[oc], full, p);
            o[oc + 1] = requant1(a1, mult[oc + 1], shift[oc + 1], full, p);
            o[oc + 2] = requant1(a2, mult[oc + 2], shift[oc + 2], full, p);
            o[oc + 3] = requant1(a3, mult[oc + 3], shift[oc + 3], full, p);
        }
    }
    for (; oc < n_out; ++oc) {
        const int8_t *w0 = weights + oc * k;
        int32_t a0 = bias_eff[oc];
        for (i = 0; i < k4; i += 4) {
            const uint32_t xv = tinyc_read4(x + i);
            a0 = tinyc_dot4(tinyc_sxtb16(xv), tinyc_sxtb16_ror8(xv), tinyc_read4(w0 + i), a0);
        }
        for (; i < k; ++i) {
            a0 += (int32_t)x[i] * w0[i];
        }
        o[oc] = zfast ? rq_out_shift(a0, mult[oc], shift[oc], zp21, lo, hi, full)
                      : requant1(a0, mult[oc], shift[oc], full, p);
    }
}

/* The outputs of two adjacent pixels (inputs x and x + k, k bytes each; outputs o and o + n_out),
 * two output channels at a time: a 2x2 register block. Each step reads one word of each pixel
 * and of each of the two weight rows; the rows and pixels are k bytes apart, so the loop walks
 * two pointers and addresses the second pixel and row at offset k (14 registers in all: the
 * four accumulators, the four widened weight halves, two widened input halves, the two
 * pointers, k and the end). The k % 4 tail runs once per output pair, after the loop. */

static void dot_outputs(const tinyc_conv_params *p, const int8_t *x, int32_t k,
                        const int8_t *weights, const int32_t *bias_eff, const int32_t *mult,
                        const int32_t *shift, int32_t n_out, int8_t *restrict o, int mode)
{
    switch (mode & (RQ_ZFAST | RQ_FULL)) {
    case RQ_ZFAST | RQ_FULL:
        dot_outputs_body(p, x, k, weights, bias_eff, mult, shift, n_out, o, 1, 1);
        break;
    case RQ_ZFAST:
        dot_outputs_body(p, x, k, weights, bias_eff, mult, shift, n_out, o, 0, 1);
        break;
    case RQ_FULL:
        dot_outputs_body(p, x, k, weights, bias_eff, mult, shift, n_out, o, 1, 0);
        break;
    default:
        dot_outputs_body(p, x, k, weights, bias_eff, mult, shift, n_out, o, 0, 0);
        break;
    }
}

/* one step of the 2x2 block: four bytes of both pixels (xp, xp + k) times four bytes of both
 * weight rows (wp, wp + k), the weight words masked (only the bytes mask keeps count) */
static TINYC_ALWAYS_INLINE void mac2x2_masked(const int8_t *xp, const int8_t *wp, int32_t k,
                                              uint32_t mask, int32_t *a00, int32_t *a01,
                                              int32_t *a10, int32_t *a11)
{
    const uint32_t wv0 = tinyc_read4(wp) & mask, wv1 = tinyc_read4(wp + k) & mask;
    const uint32_t w0a = tinyc_sxtb16(wv0), w0b = tinyc_sxtb16_ror8(wv0);
    const uint32_t w1a = tinyc_sxtb16(wv1), w1b = tinyc_sxtb16_ror8(wv1);
    uint32_t xv = tinyc_read4(xp);
    uint32_t xa = tinyc_sxtb16(xv), xb = tinyc_sxtb16_ror8(xv);
    *a00 = tinyc_smlad(xb, w0b, tinyc_smlad(xa, w0a, *a00));
    *a01 = tinyc_smlad(xb, w1b, tinyc_smlad(xa, w1a, *a01));
    xv = tinyc_read4(xp + k);
    xa = tinyc_sxtb16(xv);
    xb = tinyc_sxtb16_ror8(xv);
    *a10 = tinyc_smlad(xb, w0b, tinyc_smlad(xa, w0a, *a10));
    *a11 = tinyc_smlad(xb, w1b, tinyc_smlad(xa, w1a, *a11));
}

/* mac2x2_masked on every byte */
static TINYC_ALWAYS_INLINE void mac2x2(const int8_t *xp, const int8_t *wp, int32_t k,
                                       int32_t *a00, int32_t *a01, int32_t *a10, int32_t *a11)
{
    mac2x2_masked(xp, wp, k, ~0u, a00, a01, a10, a11);
}

static TINYC_ALWAYS_INLINE void dot_outputs_2px_body(
    const tinyc_conv_params *p, const int8_t *x, int32_t k, const int8_t *weights,
    const int32_t *bias_eff, const int32_t *mult, const int32_t *shift, int32_t n_out,
    int8_t *restrict o, int full, int unroll)
{
    const int32_t k4 = k & ~3;
    const int32_t zp = p->out_zp, lo = p->act_min, hi = p->act_max;
    const int8_t *const x_end = x + k4;
    const int8_t *w = weights;
    int32_t oc = 0, i;
    for (; oc + 1 < n_out; oc += 2, w += 2 * k) {
        const int8_t *xp = x, *wp = w;
        int32_t a00 = bias_eff[oc], a01 = bias_eff[oc + 1];
        int32_t a10 = a00, a11 = a01;
        if (unroll) {
            TINYC_UNROLL_4
            for (; xp != x_end; xp += 4, wp += 4) {
                mac2x2(xp, wp, k, &a00, &a01, &a10, &a11);
            }
        } else {
            for (; xp != x_end; xp += 4, wp += 4) {
                mac2x2(xp, wp, k, &a00, &a01, &a10, &a11);
            }
        }
        for (i = k4; i < k; ++i) {
            const int32_t v0 = x[i], v1 = x[k + i];
            a00 += v0 * w[i];
            a01 += v0 * w[k + i];
            a10 += v1 * w[i];
            a11 += v1 * w[k + i];
        }
        requant2(a00, a10, mult[oc], shift[oc], zp, lo, hi, full, p, o + oc, o + n_out + oc);
        requant2(a01, a11, mult[oc + 1], shift[oc + 1], zp, lo, hi, full, p, o + oc + 1,
                 o + n_out + oc + 1);
    }
    if (oc < n_out) {
        const int mode = full ? RQ_FULL : 0;
        dot_outputs(p, x, k, w, bias_eff + oc, mult + oc, shift + oc, 1, o + oc, mode);
        dot_outputs(p, x + k, k, w, bias_eff + oc, mult + oc, shift + oc, 1, o + n_out + oc,
                    mode);
    }
}

/* one channel's outputs of two pixels, its constants derived once: with the zero point folded
 * into the rounding word (zf: a RQ_ZFAST layer, zp21 = 2 * out_zp + 1) or added (a RQ_FAST one) */
static TINYC_ALWAYS_INLINE void rq_pair(int32_t a, int32_t b, int32_t mult, int32_t shift,
                                        uint32_t zp21, int32_t lo, int32_t hi, int full, int zf,
                                        int8_t *oa, int8_t *ob)
{
    const uint32_t e1 = tinyc_requant_e1(shift);
    if (zf) {
        const int32_t rz = tinyc_requant_round_zp(e1, zp21);
        *oa = rq_out(a, mult, e1, rz, lo, hi, full);
        *ob = rq_out(b, mult, e1, rz, lo, hi, full);
    } else {
        const int32_t r = tinyc_requant_round(e1), zp = (int32_t)(zp21 - 1u) / 2;
        const int32_t va = tinyc_requant_pre(a, mult, e1, r) + zp;
        const int32_t vb = tinyc_requant_pre(b, mult, e1, r) + zp;
        *oa = (int8_t)(full ? tinyc_ssat8(va) : tinyc_clamp_i32(va, lo, hi));
        *ob = (int8_t)(full ? tinyc_ssat8(vb) : tinyc_clamp_i32(vb, lo, hi));
    }
}

/* dot_outputs_2px_body for a RQ_ZFAST layer (zf) or a RQ_FAST one: the pointers walk the
 * channels, the per-channel constants are derived once for both pixels, and nothing in the loop
 * calls out. An odd last channel is left to the caller. */
static TINYC_ALWAYS_INLINE void dot2_zfast_body(const int8_t *x, int32_t k, const int8_t *w,
                                                const int32_t *bias_eff, const int32_t *mult,
                                                const int32_t *shift, int32_t n_out,
                                                int8_t *restrict o, uint32_t zp21, int32_t lo,
                                                int32_t hi, int full, int zf)
{
    const int32_t k4 = k & ~3;
    const int8_t *const x_end = x + k4;
    const int32_t *const b_end = bias_eff + (n_out & ~1);
    int32_t i;
    for (; bias_eff != b_end; bias_eff += 2, mult += 2, shift += 2, w += 2 * k, o += 2) {
        const int8_t *xp = x, *wp = w;
        int32_t a00 = bias_eff[0], a01 = bias_eff[1];
        int32_t a10 = a00, a11 = a01;
        for (; xp != x_end; xp += 4, wp += 4) {
            mac2x2(xp, wp, k, &a00, &a01, &a10, &a11);
        }
        if (k & 3) {
            if (k >= 4) {
                /* the last k % 4 bytes: one more step on the last word, its leading bytes
                 * (already summed) given weight 0 */
                mac2x2_masked(x + k - 4, w + k - 4, k, ~0u << (8 * (4 - (k & 3))), &a00, &a01,
                              &a10, &a11);
            } else {
                for (i = 0; i < k; ++i) {
                    const int32_t v0 = x[i], v1 = x[k + i];
                    a00 += v0 * w[i];
                    a01 += v0 * w[k + i];
                    a10 += v1 * w[i];
                    a11 += v1 * w[k + i];
                }
            }
        }
        rq_pair(a00, a10, mult[0], shift[0], zp21, lo, hi, full, zf, o, o + n_out);
        rq_pair(a01, a11, mult[1], shift[1], zp21, lo, hi, full, zf, o + 1, o + n_out + 1);
    }
}

/* dot2_zfast_body over `pairs` pixel pairs (x and o advancing by xstep and ostep bytes, either
 * way), with the odd last channel: the call and the dispatch once per run of pairs */
static TINYC_ALWAYS_INLINE void dot2_zfast_run(const tinyc_conv_params *p, const int8_t *x,
                                               int32_t k, const int8_t *weights,
                                               const int32_t *bias_eff, const int32_t *mult,
                                               const int32_t *shift, int32_t n_out, int8_t *o,
                                               int32_t pairs, int32_t xstep, int32_t ostep,
                                               int mode, int full, int zf)
{
    const uint32_t zp21 = 2u * (uint32_t)p->out_zp + 1u;
    const int32_t lo = p->act_min, hi = p->act_max, last = n_out & ~1;
    for (; pairs > 0; --pairs, x += xstep, o += ostep) {
        dot2_zfast_body(x, k, weights, bias_eff, mult, shift, n_out, o, zp21, lo, hi, full, zf);
        if (last < n_out) {
            const int8_t *w = weights + last * k;
            dot_outputs(p, x, k, w, bias_eff + last, mult + last, shift + last, 1, o + last,
                        mode);
            dot_outputs(p, x + k, k, w, bias_eff + last, mult + last, shift + last, 1,
                        o + n_out + last, mode);
        }
    }
}

/* dot2_zfast_run for a constant k >= 4: 8, 16 or 24 (the narrow inputs of expanding pointwise
 * layers), 27 (a first 3x3 convolution of an RGB image):
 * the channels are walked by one index (the bias, multiplier, shift and output addressed from
 * it), so that gcc keeps the 2x2 block's values in registers; the steps are fully unrolled. */
static TINYC_ALWAYS_INLINE void zfast_pairs_kconst(const int8_t *x, const int32_t K,
                                                   const int8_t *weights,
                                                   const int32_t *bias_eff,
                                                   const int32_t *mult, const int32_t *shift,
                                                   int32_t n_out, int8_t *o, int32_t pairs,
                                                   int32_t xstep, int32_t ostep, uint32_t zp21,
                                                   int32_t lo, int32_t hi, int full, int zf)
{
    const int32_t n2 = n_out & ~1;
    for (; pairs > 0; --pairs, x += xstep, o += ostep) {
        const int8_t *w = weights;
        int8_t *const o1 = o + n_out;
        int32_t c, j;
        for (c = 0; c < n2; c += 2, w += 2 * K) {
            int32_t a00 = bias_eff[c], a01 = bias_eff[c + 1];
            int32_t a10 = a00, a11 = a01;
            TINYC_UNROLL_8
            for (j = 0; j + 4 <= K; j += 4) {
                mac2x2(x + j, w + j, K, &a00, &a01, &a10, &a11);
            }
            if (K & 3) {
                /* the last K % 4 bytes: the last word again, its summed bytes given weight 0 */
                mac2x2_masked(x + K - 4, w + K - 4, K, ~0u << (8 * (4 - (K & 3))), &a00, &a01,
                              &a10, &a11);
            }
            rq_pair(a00, a10, mult[c], shift[c], zp21, lo, hi, full, zf, o + c, o1 + c);
            rq_pair(a01, a11, mult[c + 1], shift[c + 1], zp21, lo, hi, full, zf, o + c + 1,
                    o1 + c + 1);
        }
        if (n2 < n_out) {
            int32_t a0 = bias_eff[n2], a1 = a0;
            for (j = 0; j < K; ++j) {
                a0 += (int32_t)x[j] * w[j];
                a1 += (int32_t)x[K + j] * w[j];
            }
            rq_pair(a0, a1, mult[n2], shift[n2], zp21, lo, hi, full, zf, o + n2, o1 + n2);
        }
    }
}

/* its instances, each its own function (inlined together into one large function, gcc spilled
 * most of the block's values to the stack) */
#define ZFAST_PAIRS_K(name, K, full, zf)                                                          \
    static __attribute__((noinline)) void name(                                                 \
        const tinyc_conv_params *p, const int8_t *x, const int8_t *weights,                     \
        const int32_t *bias_eff, const int32_t *mult, const int32_t *shift, int32_t n_out,      \
        int8_t *o, int32_t pairs, int32_t xstep, int32_t ostep)                                 \
    {                                                                                           \
        zfast_pairs_kconst(x, K, weights, bias_eff, mult, shift, n_out, o, pairs, xstep, ostep, \
                           2u * (uint32_t)p->out_zp + 1u, p->act_min, p->act_max, full, zf);    \
    }
ZFAST_PAIRS_K(zfast_pairs_k8_full, 8, 1, 1)
ZFAST_PAIRS_K(zfast_pairs_k16_full, 16, 1, 1)
ZFAST_PAIRS_K(zfast_pairs_k24_full, 24, 1, 1)
ZFAST_PAIRS_K(zfast_pairs_k27_full, 27, 1, 1)
/* a first conv with a channel whose shift is past the zero point folding (e > 23) */
ZFAST_PAIRS_K(fast_pairs_k27_full, 27, 1, 0)

/* the outputs of `pairs` pixel pairs: the pair at x (2 * k bytes) gives 2 * n_out outputs at o;
 * x and o advance by xstep and ostep bytes from pair to pair. The bodies are compiled for the
 * full int8 output range (no fused activation left after quantization: one SSAT clamps; k = 8,
 * 16, 24, 27 and any) and for any other range. */
static void dot_outputs_2px(const tinyc_conv_params *p, const int8_t *x, int32_t k,
                            const int8_t *weights, const int32_t *bias_eff, const int32_t *mult,
                            const int32_t *shift, int32_t n_out, int8_t *o, int mode,
                            int32_t pairs, int32_t xstep, int32_t ostep)
{
    if ((mode & (RQ_ZFAST | RQ_FULL)) == (RQ_ZFAST | RQ_FULL)) {
        if (k == 8) {
            zfast_pairs_k8_full(p, x, weights, bias_eff, mult, shift, n_out, o, pairs, xstep,
                                ostep);
        } else if (k == 16) {
            zfast_pairs_k16_full(p, x, weights, bias_eff, mult, shift, n_out, o, pairs, xstep,
                                 ostep);
        } else if (k == 24) {
            zfast_pairs_k24_full(p, x, weights, bias_eff, mult, shift, n_out, o, pairs, xstep,
                                 ostep);
        } else if (k == 27) {
            zfast_pairs_k27_full(p, x, weights, bias_eff, mult, shift, n_out, o, pairs, xstep,
                                 ostep);
        } else {
            dot2_zfast_run(p, x, k, weights, bias_eff, mult, shift, n_out, o, pairs, xstep,
                           ostep, mode, 1, 1);
        }
        return;
    }
    if (mode & RQ_ZFAST) {
        dot2_zfast_run(p, x, k, weights, bias_eff, mult, shift, n_out, o, pairs, xstep, ostep,
                       mode, 0, 1);
        return;
    }
    if ((mode & (RQ_FAST | RQ_FULL)) == (RQ_FAST | RQ_FULL)) {
        /* a channel's shift past the zero point folding (e > 23): the zero point added */
        if (k == 27) {
            fast_pairs_k27_full(p, x, weights, bias_eff, mult, shift, n_out, o, pairs, xstep,
                                ostep);
        } else {
            dot2_zfast_run(p, x, k, weights, bias_eff, mult, shift, n_out, o, pairs, xstep,
                           ostep, mode, 1, 0);
        }
        return;
    }
    for (; pairs > 0; --pairs, x += xstep, o += ostep) {
        if (p->act_min == TINYC_INT8_MIN && p->act_max == TINYC_INT8_MAX) {
            /* the narrow inputs of expanding pointwise layers: k a constant, the loop unrolled */
            if (k == 8) {
                dot_outputs_2px_body(p, x, 8, weights, bias_eff, mult, shift, n_out, o, 1, 1);
            } else if (k == 16) {
                dot_outputs_2px_body(p, x, 16, weights, bias_eff, mult, shift, n_out, o, 1, 1);
            } else {
                dot_outputs_2px_body(p, x, k, weights, bias_eff, mult, shift, n_out, o, 1, 0);
            }
        } else {
            dot_outputs_2px_body(p, x, k, weights, bias_eff, mult, shift, n_out, o, 0, 0);
        }
    }
}
#else
/* the requantization mode of the DSP kernels: none here */
static int rq_mode(const tinyc_conv_params *p, const int32_t *shift)
{
    (void)p;
    (void)shift;
    return 0;
}

/* out[oc] for oc in [0, n_out): dot(x, weights[oc], k) + bias_eff[oc], requantized. */
static void dot_outputs(const tinyc_conv_params *p, const int8_t *x, int32_t k,
                        const int8_t *weights, const int32_t *bias_eff, const int32_t *mult,
                        const int32_t *shift, int32_t n_out, int8_t *restrict o, int mode)
{
    (void)mode;
    int32_t oc = 0, i;
    for (; oc + 1 < n_out; oc += 2) {
        const int8_t *w0 = weights + oc * k;
        const int8_t *w1 = w0 + k;
        int32_t a0 = bias_eff[oc];
        int32_t a1 = bias_eff[oc + 1];
        for (i = 0; i < k; ++i) {
            const int32_t v = x[i];
            a0 += v * w0[i];
            a1 += v * w1[i];
        }
        o[oc] = requant(a0, mult[oc], shift[oc], p);
        o[oc + 1] = requant(a1, mult[oc + 1], shift[oc + 1], p);
    }
    if (oc < n_out) {
        const int8_t *w0 = weights + oc * k;
        int32_t a0 = bias_eff[oc];
        for (i = 0; i < k; ++i) {
            a0 += (int32_t)x[i] * w0[i];
        }
        o[oc] = requant(a0, mult[oc], shift[oc], p);
    }
}
#endif

/* The outputs of n (1 or 2) adjacent pixels, inputs at x (n * k bytes), outputs at o; mode:
 * rq_mode of the layer. */
static void dot_pixels(const tinyc_conv_params *p, const int8_t *x, int32_t k, int32_t n,
                       const int8_t *weights, const int32_t *bias_eff, const int32_t *mult,
                       const int32_t *shift, int32_t n_out, int8_t *restrict o, int mode)
{
    int32_t j;
#if TINYC_USE_DSP
    if (n == 2) {
        dot_outputs_2px(p, x, k, weights, bias_eff, mult, shift, n_out, o, mode, 1, 0, 0);
        return;
    }
#endif
    for (j = 0; j < n; ++j) {
        dot_outputs(p, x + j * k, k, weights, bias_eff, mult, shift, n_out, o + j * n_out,
                    mode);
    }
}

/* `pairs` pixel pairs, the first at x (inputs) and o (outputs), the next ones xstep and ostep
 * bytes on (negative: backwards) */
static void dot_pairs(const tinyc_conv_params *p, const int8_t *x, int32_t k, int32_t pairs,
                      int32_t xstep, const int8_t *weights, const int32_t *bias_eff,
                      const int32_t *mult, const int32_t *shift, int32_t n_out, int8_t *o,
                      int32_t ostep, int mode)
{
#if TINYC_USE_DSP
    dot_outputs_2px(p, x, k, weights, bias_eff, mult, shift, n_out, o, mode, pairs, xstep,
                    ostep);
#else
    for (; pairs > 0; --pairs, x += xstep, o += ostep) {
        dot_pixels(p, x, k, 2, weights, bias_eff, mult, shift, n_out, o, mode);
    }
#endif
}

/* n bytes (a tap's channels: often 3 in a first conv, where a memcpy call costs more than
 * the copy) */
static TINYC_ALWAYS_INLINE void copy_bytes(int8_t *dst, const int8_t *src, int32_t n)
{
    int32_t i = 0;
    if (n >= 16) {
        memcpy(dst, src, (size_t)n);
        return;
    }
    for (; i + 4 <= n; i += 4) {
        memcpy(dst + i, src + i, 4);   /* one word (unaligned LDR/STR on Cortex-M3 and up) */
    }
    for (; i < n; ++i) {
        dst[i] = src[i];
    }
}

/* The window of output pixel (oy, ox) for group g into dst (k bytes). */
static void gather_window(const tinyc_conv_params *p, const int8_t *in, int32_t oy, int32_t ox,
                          int32_t g, int32_t cin_g, int8_t *dst)
{
    const int32_t iy0 = oy * p->stride_h - p->pad_top;
    const int32_t ix0 = ox * p->stride_w - p->pad_left;
    int32_t ky, kx;
    if (cin_g == p->in_c && p->dilation_w == 1 && iy0 >= 0 && ix0 >= 0 &&
        iy0 + (p->kernel_h - 1) * p->dilation_h < p->in_h && ix0 + p->kernel_w <= p->in_w) {
        /* an interior window (groups 1): each row of taps is kernel_w * in_c contiguous bytes */
        const int32_t row = p->kernel_w * cin_g;
        const int32_t step = p->dilation_h * p->in_w * p->in_c;
        const int8_t *src = in + (iy0 * p->in_w + ix0) * p->in_c;
        for (ky = 0; ky < p->kernel_h; ++ky, dst += row, src += step) {
            copy_bytes(dst, src, row);
        }
        return;
    }
    for (ky = 0; ky < p->kernel_h; ++ky) {
        const int32_t iy = iy0 + ky * p->dilation_h;
        for (kx = 0; kx < p->kernel_w; ++kx, dst += cin_g) {
            const int32_t ix = ix0 + kx * p->dilation_w;
            if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) {
                memset(dst, (int8_t)p->in_zp, (size_t)cin_g);
            } else {
                copy_bytes(dst, in + (iy * p->in_w + ix) * p->in_c + g * cin_g, cin_g);
            }
        }
    }
}

void tinyc_conv2d_im2col(const tinyc_conv_params *p, const int8_t *in, const int8_t *weights,
                         const int32_t *bias_eff, const int32_t *mult, const int32_t *shift,
                         int8_t *out, int8_t *scratch, int32_t scratch_bytes)
{
    const int32_t cin_g = p->in_c / p->groups;
    const int32_t cout_g = p->out_c / p->groups;
    const int32_t k = p->kernel_h * p->kernel_w * cin_g;
    /* two windows side by side (groups 1, room for both): computed at once */
    const int32_t pair = p->groups == 1 && scratch_bytes >= 2 * k ? 2 : 1;
    const int mode = rq_mode(p, shift);
    int32_t oy, ox, g, n;

    for (oy = 0; oy < p->out_h; ++oy) {
        for (ox = 0; ox < p->out_w; ox += n) {
            int8_t *o = out + (oy * p->out_w + ox) * p->out_c;
            n = p->out_w - ox < pair ? p->out_w - ox : pair;
            if (n == 2) {
                gather_window(p, in, oy, ox, 0, cin_g, scratch);
                gather_window(p, in, oy, ox + 1, 0, cin_g, scratch + k);
                dot_pixels(p, scratch, k, 2, weights, bias_eff, mult, shift, p->out_c, o,
                           mode);
                continue;
            }
            for (g = 0; g < p->groups; ++g) {
                gather_window(p, in, oy, ox, g, cin_g, scratch);
                dot_outputs(p, scratch, k, weights + g * cout_g * k, bias_eff + g * cout_g,
                            mult + g * cout_g, shift + g * cout_g, cout_g, o + g * cout_g,
                            mode);
            }
        }
    }
}

void tinyc_conv2d_1x1(const tinyc_conv_params *p, const int8_t *in, const int8_t *weights,
                      const int32_t *bias_eff, const int32_t *mult, const int32_t *shift,
                      int8_t *out)
{
    const int32_t pixels = p->out_h * p->out_w;
    const int mode = rq_mode(p, shift);
    int32_t i;
    dot_pairs(p, in, p->in_c, pixels / 2, 2 * p->in_c, weights, bias_eff, mult, shift,
              p->out_c, out, 2 * p->out_c, mode);
    if (pixels & 1) {
        i = pixels - 1;
        dot_pixels(p, in + i * p->in_c, p->in_c, 1, weights, bias_eff, mult, shift, p->out_c,
                   out + i * p->out_c, mode);
    }
}

void tinyc_conv2d_1x1_inplace(const tinyc_conv_params *p, int8_t *buf, const int8_t *weights,
                              const int32_t *bias_eff, const int32_t *mult,
                              const int32_t *shift, int8_t *scratch, int32_t scratch_bytes)
{
    const int32_t pixels = p->out_h * p->out_w;
    const int32_t cin = p->in_c;
    const int32_t cout = p->out_c;
    const int32_t step = scratch_bytes >= 2 * cin ? 2 : 1;   /* pixels copied and computed */
    const int mode = rq_mode(p, shift);
    int32_t i, n;
    if (cout > cin) {
        /* expanding: output pixel i covers input bytes of pixels >= i only, so go backwards.
         * Two pixels whose outputs start after their own inputs end (all but the first few)
         * are read where they are: no copy, and two at a time whatever the scratch. */
        for (i = pixels; i > 0;) {
            if (i >= 2 && (i - 2) * cout >= i * cin) {
                /* pairs [i - 2m, i - 2m + 2), m = 1, 2...: the condition holds down to some i */
                int32_t m = 1;
                while (i - 2 * (m + 1) >= 0 && (i - 2 * (m + 1)) * cout >= (i - 2 * m) * cin) {
                    ++m;
                }
                dot_pairs(p, buf + (i - 2) * cin, cin, m, -2 * cin, weights, bias_eff, mult,
                          shift, cout, buf + (i - 2) * cout, -2 * cout, mode);
                i -= 2 * m;
                continue;
            }
            n = i < step ? i : step;
            i -= n;
            memcpy(scratch, buf + i * cin, (size_t)(n * cin));
            dot_pixels(p, scratch, cin, n, weights, bias_eff, mult, shift, cout, buf + i * cout,
                       mode);
        }
    } else {
        /* shrinking: output pixel i covers input bytes of pixels <= i only, so go forwards;
         * pixels whose outputs end before their own inputs start are read in place */
        for (i = 0; i < pixels; i += n) {
            if (pixels - i >= 2 && (i + 2) * cout <= i * cin) {
                /* from here on every pair qualifies (i * (cin - cout) >= 2 * cout grows with
                 * i): the pairs in one run, then an odd last pixel, which qualifies too */
                const int32_t pairs = (pixels - i) / 2;
                dot_pairs(p, buf + i * cin, cin, pairs, 2 * cin, weights, bias_eff, mult, shift,
                          cout, buf + i * cout, 2 * cout, mode);
                n = 2 * pairs;
                if (n < pixels - i) {
                    dot_pixels(p, buf + (i + n) * cin, cin, 1, weights, bias_eff, mult, shift,
                               cout, buf + (i + n) * cout, mode);
                    ++n;
                }
                continue;
            }
            if (pixels - i == 1 && (i + 1) * cout <= i * cin) {
                n = 1;
                dot_pixels(p, buf + i * cin, cin, 1, weights, bias_eff, mult, shift, cout,
                           buf + i * cout, mode);
                continue;
            }
            n = pixels - i < step ? pixels - i : step;
            memcpy(scratch, buf + i * cin, (size_t)(n * cin));
            dot_pixels(p, scratch, cin, n, weights, bias_eff, mult, shift, cout, buf + i * cout,
                       mode);
        }
    }
}

/* sum over one tap's cin_g channels of (x + in_off) * w, w from flash except at the n kept
 * channels (local indices kept[j] - c0), which come from sram[j]: tinyc_conv2d's order. */
static int32_t split_tap(const int8_t *x, int32_t in_off, const int8_t *flash,
                         const int8_t *sram, const int32_t *kept, int32_t n, int32_t c0,
                         int32_t cin_g)
{
    int32_t acc = 0, i = 0, j;
    for (j = 0; j <= n; ++j) {
        const int32_t stop = j < n ? kept[j] - c0 : cin_g;
        for (; i < stop; ++i) {
            acc += ((int32_t)x[i] + in_off) * (int32_t)flash[i];
        }
        if (j < n) {
            acc += ((int32_t)x[i] + in_off) * (int32_t)sram[j];
            ++i;
        }
    }
    return acc;
}

void tinyc_conv2d_split(const tinyc_conv_params *p, const int8_t *in,
                        const tinyc_split_weights *w, const int32_t *bias, const int32_t *mult,
                        const int32_t *shift, int8_t *out)
{
    const int32_t cin_g = p->in_c / p->groups;
    const int32_t cout_g = p->out_c / p->groups;
    const int32_t in_off = -p->in_zp;
    const int32_t taps = p->kernel_h * p->kernel_w;
    const int8_t *sram = w->sram;   /* output channel oc's kept weights */
    int32_t oc, oy, ox, ky, kx, j0 = 0, n = 0;

    /* output channel by output channel: the kept weights follow one another in SRAM */
    for (oc = 0; oc < p->out_c; sram += taps * n, ++oc) {
        const int32_t c0 = (oc / cout_g) * cin_g;
        const int8_t *wk = w->flash + oc * taps * cin_g;
        if (oc % cout_g == 0) {
            n = tinyc_split_group(w, oc / cout_g, &j0);
        }
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_top;
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t ix0 = ox * p->stride_w - p->pad_left;
                int32_t acc = 0;
                for (ky = 0; ky < p->kernel_h; ++ky) {
                    const int32_t iy = iy0 + ky * p->dilation_h;
                    if (iy < 0 || iy >= p->in_h) {
                        continue;   /* padding contributes 0 */
                    }
                    for (kx = 0; kx < p->kernel_w; ++kx) {
                        const int32_t ix = ix0 + kx * p->dilation_w;
                        const int32_t t = ky * p->kernel_w + kx;
                        if (ix < 0 || ix >= p->in_w) {
                            continue;
                        }
                        acc += split_tap(in + (iy * p->in_w + ix) * p->in_c + c0, in_off,
                                         wk + t * cin_g, sram + t * n, w->channels + j0, n, c0,
                                         cin_g);
                    }
                }
                if (bias) {
                    acc += bias[oc];
                }
                out[(oy * p->out_w + ox) * p->out_c + oc] = requant(acc, mult[oc], shift[oc], p);
            }
        }
    }
}
