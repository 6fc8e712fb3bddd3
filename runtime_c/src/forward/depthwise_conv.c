/* int8 depthwise convolution (TFLite reference DepthwiseConvPerChannel arithmetic), NHWC.
 * Weights are tinyc's OHWI with one input channel per group: (out_c, kh, kw, 1);
 * output channel oc reads input channel oc / depth_multiplier.
 *
 * One output channel is computed at a time from one input plane. Windows fully inside the input
 * use sum((x - zp) * w) = sum(x * w) - zp * sum(w) and no bounds checks; border windows skip the
 * padded taps (they contribute 0). Both give TFLite's int32 accumulator exactly. */
#include <string.h>

#include "tinyc/config.h"
#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"
#include "tinyc/simd.h"

/* first output index whose window starts inside (>= 0), and one past the last whose window ends
 * inside (< size), clamped to [0, out] */
static void interior_range(int32_t out, int32_t size, int32_t kernel, int32_t stride,
                           int32_t pad, int32_t dilation, int32_t *lo, int32_t *hi)
{
    const int32_t span = (kernel - 1) * dilation;
    int32_t a = (pad + stride - 1) / stride;
    int32_t b = size - 1 - span + pad;
    b = b < 0 ? 0 : b / stride + 1;
    *lo = a > out ? out : a;
    *hi = b > out ? out : b;
    if (*hi < *lo) {
        *hi = *lo;
    }
}

/* The output rows [y_lo, y_hi) and columns [x_lo, x_hi) whose windows lie inside the input:
 * the same for every channel, computed once per layer. */
typedef struct {
    int32_t y_lo, y_hi, x_lo, x_hi;
} dw_interior;

static dw_interior interior_of(const tinyc_conv_params *p)
{
    dw_interior b;
    interior_range(p->out_h, p->in_h, p->kernel_h, p->stride_h, p->pad_top, p->dilation_h,
                   &b.y_lo, &b.y_hi);
    interior_range(p->out_w, p->in_w, p->kernel_w, p->stride_w, p->pad_left, p->dilation_w,
                   &b.x_lo, &b.x_hi);
    return b;
}

#if TINYC_USE_DSP
/* The DSP variant of interior windows on a contiguous plane (in_stride 1, dilation 1): each
 * filter row is read four input bytes at a time and multiplied by its taps packed as int16
 * pairs (taps 0/2 and 1/3 of each group of four, zero past the row's end), two MACs per SMLAD.
 * The zero taps add 0: the accumulator is the portable loop's. */
#define TINYC_DW_MAX_GROUPS 32   /* kernel_h * ceil(kernel_w / 4): 7x7 needs 14 */

/* the few instructions of the specialised rows below that simd.h does not have */
#if defined(__ARM_FEATURE_DSP) && !defined(TINYC_SIMD_EMULATE)
/* acc + lo(a) * lo(b) (SMLABB), acc + hi(a) * lo(b) (SMLATB) */
static inline int32_t dw_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlabb((int32_t)a, (int32_t)b, acc);
}
static inline int32_t dw_smlatb(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlatb((int32_t)a, (int32_t)b, acc);
}
/* acc + lo(a) * hi(b) (SMLABT) */
static inline int32_t dw_smlabt(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlabt((int32_t)a, (int32_t)b, acc);
}
/* acc + hi(a) * hi(b) (SMLATT) */
static inline int32_t dw_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlatt((int32_t)a, (int32_t)b, acc);
}
/* (a * b + 2^31) >> 32 (SMMULR) */
static inline int32_t dw_smmulr(int32_t a, int32_t b)
{
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
#define dw_ssat8(v) __ssat((v), 8)
#else
static inline int32_t dw_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)((int32_t)(int16_t)(a & 0xFFFF) *
                                                (int32_t)(int16_t)(b & 0xFFFF)));
}
static inline int32_t dw_smlatb(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)((int32_t)(int16_t)(a >> 16) *
                                                (int32_t)(int16_t)(b & 0xFFFF)));
}
static inline int32_t dw_smlabt(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)((int32_t)(int16_t)(a & 0xFFFF) *
                                                (int32_t)(int16_t)(b >> 16)));
}
static inline int32_t dw_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)((int32_t)(int16_t)(a >> 16) *
                                                (int32_t)(int16_t)(b >> 16)));
}
static inline int32_t dw_smmulr(int32_t a, int32_t b)
{
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 31)) >> 32);
}
static inline int32_t dw_ssat8(int32_t v)
{
    return v < -128 ? -128 : (v > 127 ? 127 : v);
}
#endif

/* One output channel's requantization in the rows below, from an accumulator of doubled taps
 * (2 * acc: |acc| < 2^29, checked per channel by dw_fast_rq):
 *     h = SMMULR(2 acc, mult) = floor((acc * mult + 2^30) / 2^31) = tinyc_srdhm_pos(acc, mult)
 *     v = (h + 2^(e-1) + zp 2^e - [h < 0]) >> e = rounding_divide_by_pot(h, e) + zp
 * (tinyc_requant_dsp's second rounding, without its saturation: |h| < 2^29 and
 * |2^(e-1) + zp 2^e| <= 2^30 + 2^22 for e = -shift in [1, 23]), then the clamp (full: the whole
 * int8 range, one SSAT). */
typedef struct {
    int32_t mult, add, e, lo, hi;
} dw_rq;

static TINYC_ALWAYS_INLINE int8_t dw_requant(int32_t acc2, const dw_rq rq, const int full)
{
    const int32_t h = dw_smmulr(acc2, rq.mult);
    int32_t v = (h + rq.add - (int32_t)((uint32_t)h >> 31)) >> rq.e;
    if (full) {
        return (int8_t)dw_ssat8(v);
    }
    v = v < rq.lo ? rq.lo : v;
    return (int8_t)(v > rq.hi ? rq.hi : v);
}

static uint32_t pair16(int32_t lo, int32_t hi)
{
    return ((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16);
}

/* The taps of one channel in the layout of the rows below, each multiplied by `scale` (1, or 2
 * for the doubled accumulators of dw_requant): per filter row and group of four taps, the pairs
 * (t0, t2) and (t1, t3); the second pair is left out of a last group of one tap. Returns the
 * number of words per filter row. */
static int32_t dw_pack_taps(const int8_t *wk, int32_t kh, int32_t kw, int32_t scale,
                            uint32_t *packed)
{
    const int32_t groups = (kw + 3) / 4;
    int32_t ky, gi, j, n = 0;
    for (ky = 0; ky < kh; ++ky) {
        for (gi = 0; gi < groups; ++gi) {
            int32_t t[4];
            for (j = 0; j < 4; ++j) {
                const int32_t kx = gi * 4 + j;
                t[j] = kx < kw ? scale * wk[ky * kw + kx] : 0;
            }
            packed[n++] = pair16(t[0], t[2]);
            if (gi * 4 + 1 < kw) {
                packed[n++] = pair16(t[1], t[3]);
            }
        }
    }
    return n / kh;
}

/* acc plus one filter row of K (3, 5 or 7) taps from r: its packed words w */
static TINYC_ALWAYS_INLINE int32_t dw_taps_row(const int8_t *r, const uint32_t *w, int32_t acc,
                                               const int K)
{
    uint32_t v = tinyc_read4(r);
    acc = tinyc_smlad(tinyc_sxtb16(v), w[0], acc);
    acc = tinyc_smlad(tinyc_sxtb16_ror8(v), w[1], acc);
    if (K >= 5) {
        v = tinyc_read4(r + 4);
        acc = tinyc_smlad(tinyc_sxtb16(v), w[2], acc);
        if (K == 7) {
            acc = tinyc_smlad(tinyc_sxtb16_ror8(v), w[3], acc);
        }
    }
    return acc;
}

/* one filter row of two neighbouring 3x3 stride-2 outputs: x0 x1 x2 and x2 x3 x4, one word and
 * one byte (x4 sign-extended: its low half is x4 as int16); taps w0 = (t0, t2), w1 = (t1, 0) */
static TINYC_ALWAYS_INLINE void dw_s2_pair_row(const int8_t *r, uint32_t w0, uint32_t w1,
                                               int32_t *s0, int32_t *s1)
{
    const uint32_t v = tinyc_read4(r), x4 = (uint32_t)(int32_t)r[4];
    const uint32_t a = tinyc_sxtb16(v), b = tinyc_sxtb16_ror8(v);   /* x0 x2, x1 x3 */
    *s0 = dw_smlabb(b, w1, tinyc_smlad(a, w0, *s0));                /* x0 t0 + x2 t2 + x1 t1 */
    *s1 = dw_smlabt(x4, w0, dw_smlatb(b, w1, dw_smlatb(a, w0, *s1)));   /* x2 t0 + x3 t1 + x4 t2 */
}

/* n interior outputs of one output row for a K x K filter, stride S (1 or 2) along the row,
 * the first window's top-left input at `row`, the filter rows in_w apart; output k to
 * out[k * out_stride]. The taps are doubled (dw_requant). K and S are constants at every call:
 * the filter loops unroll. With K = 3, S = 1 two neighbouring outputs share each input word. */
static TINYC_ALWAYS_INLINE void dw_row(const int8_t *row, int32_t in_w, int32_t n, const int K,
                                       const int S, const uint32_t *wp, int32_t acc0,
                                       const dw_rq *rqp, int8_t *out, int32_t out_stride,
                                       const int full)
{
    const dw_rq rq = *rqp;   /* in registers: the byte stores below may alias anything */
    const int WPR = K == 3 ? 2 : (K == 5 ? 3 : 4);   /* packed words per filter row */
    if (K == 3 && S == 1) {
        const uint32_t a0 = wp[0], b0 = wp[1], a1 = wp[2], b1 = wp[3], a2 = wp[4], b2 = wp[5];
        for (; n >= 2; n -= 2, row += 2, out += 2 * out_stride) {
            uint32_t v = tinyc_read4(row), x02 = tinyc_sxtb16(v), x13 = tinyc_sxtb16_ror8(v);
            int32_t s0 = tinyc_smlad(x02, a0, acc0), s1 = tinyc_smlad(x13, a0, acc0);
            s0 = dw_smlabb(x13, b0, s0);
            s1 = dw_smlatb(x02, b0, s1);
            v = tinyc_read4(row + in_w);
            x02 = tinyc_sxtb16(v);
            x13 = tinyc_sxtb16_ror8(v);
            s0 = tinyc_smlad(x02, a1, s0);
            s1 = tinyc_smlad(x13, a1, s1);
            s0 = dw_smlabb(x13, b1, s0);
            s1 = dw_smlatb(x02, b1, s1);
            v = tinyc_read4(row + 2 * in_w);
            x02 = tinyc_sxtb16(v);
            x13 = tinyc_sxtb16_ror8(v);
            s0 = tinyc_smlad(x02, a2, s0);
            s1 = tinyc_smlad(x13, a2, s1);
            s0 = dw_smlabb(x13, b2, s0);
            s1 = dw_smlatb(x02, b2, s1);
            out[0] = dw_requant(s0, rq, full);
            out[out_stride] = dw_requant(s1, rq, full);
        }
    }
    if (K == 3 && S == 2) {   /* two neighbouring outputs (dw_s2_pair_row), rows written out */
        const uint32_t a0 = wp[0], b0 = wp[1], a1 = wp[2], b1 = wp[3], a2 = wp[4], b2 = wp[5];
        for (; n >= 2; n -= 2, row += 4, out += 2 * out_stride) {
            int32_t s0 = acc0, s1 = acc0;
            dw_s2_pair_row(row, a0, b0, &s0, &s1);
            dw_s2_pair_row(row + in_w, a1, b1, &s0, &s1);
            dw_s2_pair_row(row + 2 * in_w, a2, b2, &s0, &s1);
            out[0] = dw_requant(s0, rq, full);
            out[out_stride] = dw_requant(s1, rq, full);
        }
    }
    if (K != 3 && S == 1) {   /* 5x5, 7x7: two neighbouring outputs share each input word */
        for (; n >= 2; n -= 2, row += 2, out += 2 * out_stride) {
            const int8_t *r = row;
            const uint32_t *w = wp;
            int32_t s0 = acc0, s1 = acc0, ky;
            for (ky = 0; ky < K; ++ky, r += in_w, w += WPR) {
                const uint32_t v0 = tinyc_read4(r), v1 = tinyc_read4(r + 4);
                const uint32_t a = tinyc_sxtb16(v0), b = tinyc_sxtb16_ror8(v0);   /* x0 x2, x1 x3 */
                const uint32_t c = tinyc_sxtb16(v1), d = tinyc_sxtb16_ror8(v1);   /* x4 x6, x5 x7 */
                const uint32_t w0 = w[0], w1 = w[1], w2 = w[2];
                s0 = tinyc_smlad(a, w0, s0);
                s0 = tinyc_smlad(b, w1, s0);
                s1 = tinyc_smlad(b, w0, s1);       /* x1 t0 + x3 t2 */
                s1 = dw_smlatb(a, w1, s1);         /* x2 t1 */
                s1 = dw_smlabt(c, w1, s1);         /* x4 t3 */
                if (K == 5) {                      /* w2 = (t4, 0) */
                    s0 = tinyc_smlad(c, w2, s0);
                    s1 = dw_smlabb(d, w2, s1);     /* x5 t4 */
                } else {                           /* w2 = (t4, t6), w3 = (t5, 0) */
                    const uint32_t w3 = w[3];
                    s0 = tinyc_smlad(c, w2, s0);
                    s0 = tinyc_smlad(d, w3, s0);
                    s1 = tinyc_smlad(d, w2, s1);   /* x5 t4 + x7 t6 */
                    s1 = dw_smlatb(c, w3, s1);     /* x6 t5 */
                }
            }
            out[0] = dw_requant(s0, rq, full);
            out[out_stride] = dw_requant(s1, rq, full);
        }
    }
    for (; n > 0; --n, row += S, out += out_stride) {
        const int8_t *r = row;
        int32_t acc = dw_taps_row(r, wp, acc0, K);   /* the filter rows written out */
        acc = dw_taps_row(r += in_w, wp + WPR, acc, K);
        acc = dw_taps_row(r += in_w, wp + 2 * WPR, acc, K);
        if (K >= 5) {
            acc = dw_taps_row(r += in_w, wp + 3 * WPR, acc, K);
            acc = dw_taps_row(r += in_w, wp + 4 * WPR, acc, K);
        }
        if (K == 7) {
            acc = dw_taps_row(r += in_w, wp + 5 * WPR, acc, K);
            acc = dw_taps_row(r += in_w, wp + 6 * WPR, acc, K);
        }
        *out = dw_requant(acc, rq, full);
    }
}

/* the specialised rows: kernel (3, 5, 7) x stride (1, 2) x full-range clamp or not; `rows`
 * output rows of n outputs, row_step input bytes and out_step output bytes apart */
typedef void (*dw_row_fn)(const int8_t *row, int32_t in_w, int32_t n, const uint32_t *wp,
                          int32_t acc0, const dw_rq *rq, int8_t *out, int32_t out_stride,
                          int32_t rows, int32_t row_step, int32_t out_step);
#define TINYC_DW_ROW(K, S, F)                                                                \
    static void dw_row_##K##_##S##_##F(const int8_t *row, int32_t in_w, int32_t n,           \
                                       const uint32_t *wp, int32_t acc0, const dw_rq *rq,    \
                                       int8_t *out, int32_t out_stride, int32_t rows,        \
                                       int32_t row_step, int32_t out_step)                   \
    {                                                                                        \
        for (; rows > 0; --rows, row += row_step, out += out_step) {                         \
            dw_row(row, in_w, n, K, S, wp, acc0, rq, out, out_stride, F);                    \
        }                                                                                    \
    }
/* only the variants tinyc/config.h names are compiled; a variant left out is 0 in the table */
#if TINYC_DW_ROWS_3X3_S1_NARROW
TINYC_DW_ROW(3, 1, 0)
#define DW_ROW_3_1_0 dw_row_3_1_0
#else
#define DW_ROW_3_1_0 0
#endif
#if TINYC_DW_ROWS_3X3_S1_FULL
TINYC_DW_ROW(3, 1, 1)
#define DW_ROW_3_1_1 dw_row_3_1_1
#else
#define DW_ROW_3_1_1 0
#endif
#if TINYC_DW_ROWS_3X3_S2_NARROW
TINYC_DW_ROW(3, 2, 0)
#define DW_ROW_3_2_0 dw_row_3_2_0
#else
#define DW_ROW_3_2_0 0
#endif
#if TINYC_DW_ROWS_3X3_S2_FULL
TINYC_DW_ROW(3, 2, 1)
#define DW_ROW_3_2_1 dw_row_3_2_1
#else
#define DW_ROW_3_2_1 0
#endif
#if TINYC_DW_ROWS_5X5_S1_NARROW
TINYC_DW_ROW(5, 1, 0)
#define DW_ROW_5_1_0 dw_row_5_1_0
#else
#define DW_ROW_5_1_0 0
#endif
#if TINYC_DW_ROWS_5X5_S1_FULL
TINYC_DW_ROW(5, 1, 1)
#define DW_ROW_5_1_1 dw_row_5_1_1
#else
#define DW_ROW_5_1_1 0
#endif
#if TINYC_DW_ROWS_5X5_S2_NARROW
TINYC_DW_ROW(5, 2, 0)
#define DW_ROW_5_2_0 dw_row_5_2_0
#else
#define DW_ROW_5_2_0 0
#endif
#if TINYC_DW_ROWS_5X5_S2_FULL
TINYC_DW_ROW(5, 2, 1)
#define DW_ROW_5_2_1 dw_row_5_2_1
#else
#define DW_ROW_5_2_1 0
#endif
#if TINYC_DW_ROWS_7X7_S1_NARROW
TINYC_DW_ROW(7, 1, 0)
#define DW_ROW_7_1_0 dw_row_7_1_0
#else
#define DW_ROW_7_1_0 0
#endif
#if TINYC_DW_ROWS_7X7_S1_FULL
TINYC_DW_ROW(7, 1, 1)
#define DW_ROW_7_1_1 dw_row_7_1_1
#else
#define DW_ROW_7_1_1 0
#endif
#if TINYC_DW_ROWS_7X7_S2_NARROW
TINYC_DW_ROW(7, 2, 0)
#define DW_ROW_7_2_0 dw_row_7_2_0
#else
#define DW_ROW_7_2_0 0
#endif
#if TINYC_DW_ROWS_7X7_S2_FULL
TINYC_DW_ROW(7, 2, 1)
#define DW_ROW_7_2_1 dw_row_7_2_1
#else
#define DW_ROW_7_2_1 0
#endif

static dw_row_fn dw_row_for(const tinyc_conv_params *p)
{
    static const dw_row_fn rows[3][2][2] = {
        {{DW_ROW_3_1_0, DW_ROW_3_1_1}, {DW_ROW_3_2_0, DW_ROW_3_2_1}},
        {{DW_ROW_5_1_0, DW_ROW_5_1_1}, {DW_ROW_5_2_0, DW_ROW_5_2_1}},
        {{DW_ROW_7_1_0, DW_ROW_7_1_1}, {DW_ROW_7_2_0, DW_ROW_7_2_1}}};
    const int32_t k = p->kernel_w;
    if (k != p->kernel_h || (k != 3 && k != 5 && k != 7) || p->stride_w < 1 || p->stride_w > 2 ||
        p->dilation_h != 1 || p->dilation_w != 1) {
        return 0;
    }
    return rows[k / 2 - 1][p->stride_w - 1][p->act_min == -128 && p->act_max == 127];
}

/* The constants of dw_requant for one channel, if its arithmetic allows it: a right shift in
 * [1, 23] and |acc| < 2^29 for every input: |acc| <= |bias| + 255 * 128 * 49 (at most 7x7
 * taps of at most 128 on inputs minus zero point of at most 255), below 2^29 when
 * |bias| < 2^29 - 2^21. */
static int dw_fast_rq(const tinyc_conv_params *p, int32_t bias, int32_t mult, int32_t shift,
                      dw_rq *rq)
{
    const int32_t e = -shift;
    const int32_t limit = (1 << 29) - (1 << 21);
    if (e < 1 || e > 23 || mult < 0 || bias >= limit || bias <= -limit) {
        return 0;
    }
    rq->mult = mult;
    rq->e = e;
    rq->add = (int32_t)((1 << (e - 1)) + (int32_t)((uint32_t)p->out_zp << e));
    rq->lo = p->act_min;
    rq->hi = p->act_max;
    return 1;
}

/* dw_pack_taps(wk, K, K, 2, packed) for the specialised rows, unrolled for a constant K; returns
 * the sum of the (undoubled) taps */
static TINYC_ALWAYS_INLINE int32_t dw_pack_k(const int8_t *wk, const int K, uint32_t *packed)
{
    int32_t ky, sum = 0;
    for (ky = 0; ky < K; ++ky, wk += K) {
        const int32_t t0 = wk[0], t1 = wk[1], t2 = wk[2];
        sum += t0 + t1 + t2;
        if (K == 3) {
            *packed++ = pair16(2 * t0, 2 * t2);
            *packed++ = pair16(2 * t1, 0);
        } else {
            const int32_t t3 = wk[3], t4 = wk[4];
            sum += t3 + t4;
            *packed++ = pair16(2 * t0, 2 * t2);
            *packed++ = pair16(2 * t1, 2 * t3);
            if (K == 5) {
                *packed++ = pair16(2 * t4, 0);
            } else {
                const int32_t t5 = wk[5], t6 = wk[6];
                sum += t5 + t6;
                *packed++ = pair16(2 * t4, 2 * t6);
                *packed++ = pair16(2 * t5, 0);
            }
        }
    }
    return sum;
}

static int32_t dw_pack_fast(const int8_t *wk, int32_t k, uint32_t *packed)
{
    return k == 3 ? dw_pack_k(wk, 3, packed)
                  : (k == 5 ? dw_pack_k(wk, 5, packed) : dw_pack_k(wk, 7, packed));
}

/* Outputs [0, n) of one row of interior windows, the first window's top-left input at `row`,
 * the next ones `step` bytes further; output k to out[k * out_stride]: the general shape (taps
 * not doubled, the shared requantization). */
static void dw_span_dsp(const tinyc_conv_params *p, const int8_t *row, int32_t step, int32_t n,
                        int32_t kh, int32_t words, const uint32_t *packed, int32_t acc0,
                        int32_t mult, int32_t shift, int8_t *restrict out, int32_t out_stride)
{
    const int32_t in_w = p->in_w, kw = p->kernel_w, groups = (kw + 3) / 4;
    const int32_t out_zp = p->out_zp, act_min = p->act_min, act_max = p->act_max;
    int32_t k, ky, gi;
    (void)words;
    for (k = 0; k < n; ++k, row += step, out += out_stride) {
        const uint32_t *w = packed;
        const int8_t *r = row;
        int32_t acc = acc0;
        for (ky = 0; ky < kh; ++ky, r += in_w) {
            for (gi = 0; gi < groups; ++gi) {
                const uint32_t v = tinyc_read4(r + 4 * gi);
                acc = tinyc_smlad(tinyc_sxtb16(v), *w++, acc);
                if (gi * 4 + 1 < kw) {
                    acc = tinyc_smlad(tinyc_sxtb16_ror8(v), *w++, acc);
                }
            }
        }
        *out = (int8_t)tinyc_requant_dsp(acc, mult, shift, out_zp, act_min, act_max);
    }
}
#endif

/* One output channel from input plane `plane` (element (y, x) at plane[(y * in_w + x) *
 * in_stride]), written to out[(oy * out_w + ox) * out_stride]. `readable`: for a plane
 * gathered into scratch (in_stride 1), the bytes that may be read from `plane` on; else 0. */
static void dw_plane(const tinyc_conv_params *p, const dw_interior *b, const int8_t *plane,
                     int32_t in_stride, int32_t readable, const int8_t *wk, int32_t bias,
                     int32_t mult, int32_t shift, int8_t *out, int32_t out_stride)
{
    const int32_t in_off = -p->in_zp;
    const int32_t kh = p->kernel_h, kw = p->kernel_w;
    const int32_t dy = p->dilation_h * p->in_w * in_stride;
    const int32_t dx = p->dilation_w * in_stride;
    const int32_t y_lo = b->y_lo, y_hi = b->y_hi, x_lo = b->x_lo, x_hi = b->x_hi;
    int32_t wsum = 0, oy, ox, ky, kx, i;

#if !TINYC_USE_DSP
    (void)readable;   /* the portable loop treats every plane alike */
#else
    /* on a gathered plane, the interior windows of each row in one go */
    uint32_t packed[2 * TINYC_DW_MAX_GROUPS];
    dw_rq rq;
    const int32_t groups = (kw + 3) / 4;
    const int dsp = readable > 0 && p->dilation_h == 1 && p->dilation_w == 1 &&
                    kh * groups <= TINYC_DW_MAX_GROUPS;
    /* the specialised rows (3x3, 5x5, 7x7, stride 1 or 2) where the channel's requantization
     * allows their doubled taps, else the general span */
    const dw_row_fn fast = dsp && dw_fast_rq(p, bias, mult, shift, &rq) ? dw_row_for(p) : 0;
    int32_t words = 0;
    if (fast) {
        wsum = dw_pack_fast(wk, kw, packed);
        /* a padded plane: every window interior and readable, one call per output row */
        if (y_lo == 0 && y_hi == p->out_h && x_lo == 0 && x_hi == p->out_w &&
            readable - ((p->out_h - 1) * p->stride_h - p->pad_top + kh - 1) * p->in_w - 4 * groups >=
                (p->out_w - 1) * p->stride_w - p->pad_left) {
            const int32_t acc0 = 2 * (bias + in_off * wsum);
            const int32_t row_step = p->stride_h * p->in_w, out_step = p->out_w * out_stride;
            const int8_t *row = plane - p->pad_top * p->in_w - p->pad_left;
            fast(row, p->in_w, p->out_w, packed, acc0, &rq, out, out_stride, p->out_h, row_step,
                 out_step);
            return;
        }
    } else {
        for (i = 0; i < kh * kw; ++i) {
            wsum += wk[i];
        }
        words = dsp ? dw_pack_taps(wk, kh, kw, 1, packed) : 0;
    }
#endif
#if !TINYC_USE_DSP
    for (i = 0; i < kh * kw; ++i) {
        wsum += wk[i];
    }
#endif

    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        const int y_inside = oy >= y_lo && oy < y_hi;
#if TINYC_USE_DSP
        /* the 4-byte reads may run past a row's end (onto zero taps), never past the readable
         * bytes: from ix0 in the window's last row, 4 * groups bytes must be left */
        int32_t x_end = x_lo;
        if (dsp && y_inside) {
            const int32_t room = readable - (iy0 + kh - 1) * p->in_w - 4 * groups;
            x_end = room >= (x_hi - 1) * p->stride_w - p->pad_left ? x_hi   /* all of them */
                    : room < -p->pad_left ? x_lo : (room + p->pad_left) / p->stride_w + 1;
            x_end = x_end > x_hi ? x_hi : (x_end < x_lo ? x_lo : x_end);
        }
#endif
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            int32_t acc = bias;
#if TINYC_USE_DSP
            if (ox == x_lo && x_end > x_lo) {
                if (fast) {
                    fast(plane + iy0 * p->in_w + ix0, p->in_w, x_end - x_lo, packed,
                         2 * (bias + in_off * wsum), &rq,
                         out + (oy * p->out_w + ox) * out_stride, out_stride, 1, 0, 0);
                } else {
                    dw_span_dsp(p, plane + iy0 * p->in_w + ix0, p->stride_w, x_end - x_lo, kh,
                                words, packed, bias + in_off * wsum, mult, shift,
                                out + (oy * p->out_w + ox) * out_stride, out_stride);
                }
                ox = x_end - 1;
                continue;
            }
#endif
            if (y_inside && ox >= x_lo && ox < x_hi) {
                const int8_t *row = plane + (iy0 * p->in_w + ix0) * in_stride;
                const int8_t *w = wk;
                acc += in_off * wsum;
                for (ky = 0; ky < kh; ++ky, row += dy, w += kw) {
                    const int8_t *px = row;
                    for (kx = 0; kx < kw; ++kx, px += dx) {
                        acc += (int32_t)*px * w[kx];
                    }
                }
            } else {
                for (ky = 0; ky < kh; ++ky) {
                    const int32_t iy = iy0 + ky * p->dilation_h;
                    if (iy < 0 || iy >= p->in_h) {
                        continue;   /* padding contributes 0 */
                    }
                    for (kx = 0; kx < kw; ++kx) {
                        const int32_t ix = ix0 + kx * p->dilation_w;
                        if (ix < 0 || ix >= p->in_w) {
                            continue;
                        }
                        acc += ((int32_t)plane[(iy * p->in_w + ix) * in_stride] + in_off) *
                               (int32_t)wk[ky * kw + kx];
                    }
                }
            }
            acc = tinyc_mbqm(acc, mult, shift) + p->out_zp;
            out[(oy * p->out_w + ox) * out_stride] =
                (int8_t)tinyc_clamp_i32(acc, p->act_min, p->act_max);
        }
    }
}

void tinyc_depthwise_conv(const tinyc_conv_params *p, const int8_t *in, const int8_t *weights,
                          const int32_t *bias, const int32_t *mult, const int32_t *shift,
                          int8_t *out)
{
    const int32_t depth_mult = p->out_c / p->in_c;
    const int32_t ksize = p->kernel_h * p->kernel_w;
    const dw_interior b = interior_of(p);
    int32_t oc;
    for (oc = 0; oc < p->out_c; ++oc) {
        dw_plane(p, &b, in + oc / depth_mult, p->in_c, 0, weights + oc * ksize, bias ? bias[oc] : 0,
                 mult[oc], shift[oc], out + oc, p->out_c);
    }
}

/* The padded plane's rows or columns: the padding before, the input, and the padding after
 * that the last window reaches (none when the stride skips the input's last rows). */
static int32_t padded_extent(int32_t out, int32_t in, int32_t kernel, int32_t stride,
                             int32_t pad, int32_t dilation)
{
    const int32_t reach = (out - 1) * stride + (kernel - 1) * dilation + 1;
    return reach > pad + in ? reach : pad + in;
}

int32_t tinyc_dw_padded_plane_bytes(const tinyc_conv_params *p)
{
    return padded_extent(p->out_h, p->in_h, p->kernel_h, p->stride_h, p->pad_top,
                         p->dilation_h) *
               padded_extent(p->out_w, p->in_w, p->kernel_w, p->stride_w, p->pad_left,
                             p->dilation_w) +
           TINYC_DW_PLANE_SLACK;
}

/* A channel whose output is the same for every input (a "dead" channel: a bias so large that
 * no window's sum moves the requantized value off one clamp bound): its value. The accumulator
 * lies in bias +- 255 * sum|w| (|x - zp| <= 255); with a right shift (or none) and mult >= 0
 * the requantization is monotonic, so equal values at both ends mean one value for all. */
static int dw_constant(const tinyc_conv_params *p, const int8_t *wk, int32_t bias, int32_t mult,
                       int32_t shift, int32_t *value)
{
    const int32_t ksize = p->kernel_h * p->kernel_w;
    int32_t k, sum = 0, lo, hi;
    if (shift > 0 || mult < 0) {
        return 0;
    }
    for (k = 0; k < ksize; ++k) {
        sum += wk[k] < 0 ? -wk[k] : wk[k];
    }
    sum *= 255;   /* <= 255 * 128 * ksize: no overflow for any kernel that fits the arena */
    if (bias > INT32_MAX - sum || bias < INT32_MIN + sum) {
        return 0;
    }
    lo = tinyc_clamp_i32(tinyc_mbqm(bias - sum, mult, shift) + p->out_zp, p->act_min, p->act_max);
    hi = tinyc_clamp_i32(tinyc_mbqm(bias + sum, mult, shift) + p->out_zp, p->act_min, p->act_max);
    *value = lo;
    return lo == hi;
}

/* One channel of an NHWC tensor (every `channels`-th byte from src on, in_h x in_w) into rows
 * `pitch` bytes apart from dst on: eight bytes, two word stores, per iteration. */
static void dw_gather(const int8_t *src, int32_t channels, int32_t in_h, int32_t in_w,
                      int8_t *dst, int32_t pitch)
{
    const int32_t c2 = 2 * channels, c3 = 3 * channels, c4 = 4 * channels;
    int32_t y;
    for (y = 0; y < in_h; ++y, dst += pitch) {   /* the byte stores may alias: locals only */
        int8_t *d = dst;
        int8_t *const end8 = dst + (in_w & ~7), *const end = dst + in_w;
        for (; d < end8; d += 8) {
            const uint8_t *u = (const uint8_t *)src;   /* word stores (little-endian) */
            uint32_t v = (uint32_t)u[0] | ((uint32_t)u[channels] << 8) |
                         ((uint32_t)u[c2] << 16) | ((uint32_t)u[c3] << 24);
            memcpy(d, &v, 4);
            u += c4;
            v = (uint32_t)u[0] | ((uint32_t)u[channels] << 8) | ((uint32_t)u[c2] << 16) |
                ((uint32_t)u[c3] << 24);
            memcpy(d + 4, &v, 4);
            src += 2 * c4;
        }
        if (d + 4 <= end) {
            const uint8_t *u = (const uint8_t *)src;
            const uint32_t v = (uint32_t)u[0] | ((uint32_t)u[channels] << 8) |
                               ((uint32_t)u[c2] << 16) | ((uint32_t)u[c3] << 24);
            memcpy(d, &v, 4);
            d += 4;
            src += c4;
        }
        for (; d < end; ++d, src += channels) {
            *d = *src;
        }
    }
}

#if TINYC_USE_DSP
/* The padded band: where the scratch holds the plane but not the plane with its padding (the
 * planner grants h * w, the padded plane is larger), B rows of the padded plane (pw bytes each)
 * at a time: the output rows whose windows lie in the band are computed, the rows still needed
 * move to the band's top, the next input rows are gathered below them. Every window is then an
 * interior one. Safe in place when the output rows of each step only overwrite input rows
 * already gathered (dw_band_rows checks every step once per layer). */
typedef struct {
    int32_t rows, pw, ph;   /* band rows B, padded row width and padded height */
} dw_band;

/* the output rows [oy, returned) of the step whose band starts at padded row oy * stride */
static int32_t dw_band_step(const tinyc_conv_params *p, const dw_band *bd, int32_t oy)
{
    const int32_t top = oy * p->stride_h + bd->rows;
    while (oy < p->out_h && oy * p->stride_h + p->kernel_h <= top) {
        ++oy;
    }
    return oy;
}

/* the band's rows, if every step computes some output row and overwrites no input row not yet
 * gathered; else 0 */
static int32_t dw_band_rows(const tinyc_conv_params *p, int32_t scratch_bytes, int32_t pw,
                            int32_t ph)
{
    dw_band bd;
    int32_t oy = 0;
    bd.rows = (scratch_bytes - TINYC_DW_PLANE_SLACK) / pw;
    bd.pw = pw;
    bd.ph = ph;
    if (bd.rows < p->kernel_h || bd.rows >= ph) {
        return 0;
    }
    while (oy < p->out_h) {
        const int32_t ob = dw_band_step(p, &bd, oy);
        const int32_t gathered = oy * p->stride_h + bd.rows - p->pad_top;   /* input rows */
        if (ob == oy || (gathered < p->in_h &&
                         (int64_t)ob * p->out_w > (int64_t)gathered * p->in_w)) {
            return 0;
        }
        oy = ob;
    }
    return bd.rows;
}

/* one channel through the band (`scratch` filled with in_zp: the pad columns stay so) */
static void dw_band_channel(const tinyc_conv_params *p, const dw_band *bd, dw_row_fn fast,
                            const int8_t *src, int32_t channels, int8_t *scratch,
                            const uint32_t *packed, int32_t acc0, const dw_rq *rq, int8_t *out)
{
    const int32_t pw = bd->pw, s = p->stride_h;
    int32_t oy = 0, r0 = 0, kept = 0;
    while (oy < p->out_h) {
        int32_t top = r0 + bd->rows, r, ob;
        top = top > bd->ph ? bd->ph : top;
        for (r = r0 + kept; r < top; ++r) {
            int8_t *d = scratch + (r - r0) * pw;
            const int32_t iy = r - p->pad_top;
            if (iy < 0 || iy >= p->in_h) {
                memset(d, (int8_t)p->in_zp, (size_t)pw);
            } else {
                dw_gather(src + iy * p->in_w * channels, channels, 1, p->in_w, d + p->pad_left,
                          pw);
            }
        }
        ob = dw_band_step(p, bd, oy);
        fast(scratch, pw, p->out_w, packed, acc0, rq, out + oy * p->out_w * channels, channels,
             ob - oy, s * pw, p->out_w * channels);
        oy = ob;
        if (oy < p->out_h) {
            kept = top - oy * s;
            memmove(scratch, scratch + (oy * s - r0) * pw, (size_t)(kept * pw));
            r0 = oy * s;
        }
    }
}
#endif

#if TINYC_USE_DSP
/* 3x3 stride 2 windows that all lie inside the input (no padding), read straight from the NHWC
 * buffer (`channels` bytes between neighbours): no gathering, no scratch, no per-channel set-up
 * beyond the taps. In place: output (oy, ox) of channel c lands on pixel oy * out_w + ox, which
 * no later window reads (each later window's first pixel, 2 oy' in_w + 2 ox', comes after it).
 * Two neighbouring outputs at a time, the taps doubled (dw_requant) as int16 pairs. (Stride 1
 * reads three times as many input bytes per output as the gathered plane's word reads: slower
 * but on the smallest tiles.) */
static TINYC_ALWAYS_INLINE void dw_direct_row3(const int8_t *a, int32_t C, uint32_t t01,
                                              uint32_t t2, int32_t *s0, int32_t *s1)
{
    const uint32_t x0 = (uint32_t)(int32_t)a[0], x1 = (uint32_t)(int32_t)a[C];
    const uint32_t x2 = (uint32_t)(int32_t)a[2 * C], x3 = (uint32_t)(int32_t)a[3 * C];
    const uint32_t x4 = (uint32_t)(int32_t)a[4 * C];
    *s0 = dw_smlabb(x2, t2, dw_smlabt(x1, t01, dw_smlabb(x0, t01, *s0)));   /* x0 x1 x2 */
    *s1 = dw_smlabb(x4, t2, dw_smlabt(x3, t01, dw_smlabb(x2, t01, *s1)));   /* x2 x3 x4 */
}

static TINYC_ALWAYS_INLINE void dw_direct3(const tinyc_conv_params *p, int8_t *buf,
                                           const int8_t *wk, int32_t acc0, const dw_rq *rqp,
                                           const int full)
{
    const dw_rq rq = *rqp;
    const int32_t C = p->in_c, R = p->in_w * C, out_w = p->out_w;
    const uint32_t a01 = pair16(2 * wk[0], 2 * wk[1]), a2 = (uint32_t)(2 * wk[2]);
    const uint32_t b01 = pair16(2 * wk[3], 2 * wk[4]), b2 = (uint32_t)(2 * wk[5]);
    const uint32_t c01 = pair16(2 * wk[6], 2 * wk[7]), c2 = (uint32_t)(2 * wk[8]);
    int8_t *out = buf;
    int32_t oy, ox;
    for (oy = 0; oy < p->out_h; ++oy) {
        const int8_t *row = buf + oy * 2 * R;
        for (ox = 0; ox + 1 < out_w; ox += 2, row += 4 * C, out += 2 * C) {
            int32_t s0 = acc0, s1 = acc0;
            dw_direct_row3(row, C, a01, a2, &s0, &s1);
            dw_direct_row3(row + R, C, b01, b2, &s0, &s1);
            dw_direct_row3(row + 2 * R, C, c01, c2, &s0, &s1);
            out[0] = dw_requant(s0, rq, full);
            out[C] = dw_requant(s1, rq, full);
        }
        if (ox < out_w) {   /* the odd last output */
            int32_t acc = acc0, k;
            for (k = 0; k < 3; ++k) {
                const int8_t *a = row + k * R;
                acc += 2 * (a[0] * wk[3 * k] + a[C] * wk[3 * k + 1] + a[2 * C] * wk[3 * k + 2]);
            }
            *out = dw_requant(acc, rq, full);
            out += C;
        }
    }
}

typedef void (*dw_direct_fn)(const tinyc_conv_params *p, int8_t *buf, const int8_t *wk,
                             int32_t acc0, const dw_rq *rq);
#if TINYC_DW_DIRECT_3X3_S2_NARROW
static void dw_direct3_0(const tinyc_conv_params *p, int8_t *buf, const int8_t *wk,
                         int32_t acc0, const dw_rq *rq)
{
    dw_direct3(p, buf, wk, acc0, rq, 0);
}
#define DW_DIRECT3_0 dw_direct3_0
#else
#define DW_DIRECT3_0 (dw_direct_fn)0
#endif
#if TINYC_DW_DIRECT_3X3_S2_FULL
static void dw_direct3_1(const tinyc_conv_params *p, int8_t *buf, const int8_t *wk,
                         int32_t acc0, const dw_rq *rq)
{
    dw_direct3(p, buf, wk, acc0, rq, 1);
}
#define DW_DIRECT3_1 dw_direct3_1
#else
#define DW_DIRECT3_1 (dw_direct_fn)0
#endif

/* the direct kernel of a 3x3 stride 2 layer without padding (every window inside), else 0 */
static dw_direct_fn dw_direct_for(const tinyc_conv_params *p)
{
    const dw_interior b = interior_of(p);   /* of p: windows past the bottom or right edge */
    if (p->kernel_h != 3 || p->kernel_w != 3 || p->stride_h != 2 || p->stride_w != 2 ||
        p->dilation_h != 1 || p->dilation_w != 1 || p->pad_top != 0 || p->pad_left != 0 ||
        b.y_lo != 0 || b.y_hi != p->out_h || b.x_lo != 0 || b.x_hi != p->out_w ||
        p->out_w > p->in_w || p->out_c != p->in_c) {
        return 0;
    }
    return p->act_min == -128 && p->act_max == 127 ? DW_DIRECT3_1 : DW_DIRECT3_0;
}
#endif

#if TINYC_USE_DSP
/* K x K windows (K 3, 5 or 7) at stride S (1 or 2) that all lie inside the input (no padding: a
 * patch schedule's inner tiles), four channels at a time, read straight from the NHWC buffer:
 * one word of four channels per tap, widened once (SXTB16: channels 0/2 and 1/3) and multiplied
 * by the four channels' taps packed as int16 pairs (SMLABB / SMLATT). No plane is gathered and
 * the taps are packed once per four channels, not per channel: on a small tile those costs are
 * most of the per-channel kernels' work. In place: output (oy, ox) lands on pixel
 * oy * out_w + ox, which no later window of these channels reads (each later window's first
 * pixel, S oy' in_w + S ox', comes after it); other channels' bytes are not touched. The taps
 * are doubled (dw_requant): acc0[j] = 2 * (bias - in_zp * sum(taps)) for channel j. */

/* one tap of four channels: the word at x times the packed taps w02 (channels 0, 2) and w13 */
static TINYC_ALWAYS_INLINE void dw_quad_tap(const int8_t *x, uint32_t w02, uint32_t w13,
                                            int32_t *a0, int32_t *a1, int32_t *a2, int32_t *a3)
{
    const uint32_t v = tinyc_read4(x);
    const uint32_t x02 = tinyc_sxtb16(v), x13 = tinyc_sxtb16_ror8(v);
    *a0 = dw_smlabb(x02, w02, *a0);
    *a2 = dw_smlatt(x02, w02, *a2);
    *a1 = dw_smlabb(x13, w13, *a1);
    *a3 = dw_smlatt(x13, w13, *a3);
}

/* one filter row (K taps from r, pixels C bytes apart) of four channels, written out */
static TINYC_ALWAYS_INLINE void dw_quad_row(const int8_t *r, int32_t C, const int K,
                                            const uint32_t *w02, const uint32_t *w13,
                                            int32_t *a0, int32_t *a1, int32_t *a2, int32_t *a3)
{
    dw_quad_tap(r, w02[0], w13[0], a0, a1, a2, a3);
    dw_quad_tap(r + C, w02[1], w13[1], a0, a1, a2, a3);
    dw_quad_tap(r + 2 * C, w02[2], w13[2], a0, a1, a2, a3);
    if (K >= 5) {
        dw_quad_tap(r + 3 * C, w02[3], w13[3], a0, a1, a2, a3);
        dw_quad_tap(r + 4 * C, w02[4], w13[4], a0, a1, a2, a3);
    }
    if (K == 7) {
        dw_quad_tap(r + 5 * C, w02[5], w13[5], a0, a1, a2, a3);
        dw_quad_tap(r + 6 * C, w02[6], w13[6], a0, a1, a2, a3);
    }
}

static TINYC_ALWAYS_INLINE void dw_quad(const tinyc_conv_params *p, int8_t *buf,
                                        const uint32_t *w02, const uint32_t *w13,
                                        const int32_t *acc0, const dw_rq *rq, const int K,
                                        const int S, const int full)
{
    const int32_t C = p->in_c, R = p->in_w * C, out_w = p->out_w;
    int8_t *out = buf;
    int32_t oy, ox;
    for (oy = 0; oy < p->out_h; ++oy) {
        const int8_t *row = buf + oy * S * R;
        for (ox = 0; ox < out_w; ++ox, row += S * C, out += C) {
            int32_t a0 = acc0[0], a1 = acc0[1], a2 = acc0[2], a3 = acc0[3];
            const int8_t *r = row + 2 * R;
            /* (3x3: the rows addressed from `row`, which gcc compiles with fewer spills) */
            dw_quad_row(row, C, K, w02, w13, &a0, &a1, &a2, &a3);
            dw_quad_row(row + R, C, K, w02 + K, w13 + K, &a0, &a1, &a2, &a3);
            dw_quad_row(r, C, K, w02 + 2 * K, w13 + 2 * K, &a0, &a1, &a2, &a3);
            if (K >= 5) {
                dw_quad_row(r += R, C, K, w02 + 3 * K, w13 + 3 * K, &a0, &a1, &a2, &a3);
                dw_quad_row(r += R, C, K, w02 + 4 * K, w13 + 4 * K, &a0, &a1, &a2, &a3);
            }
            if (K == 7) {
                dw_quad_row(r += R, C, K, w02 + 5 * K, w13 + 5 * K, &a0, &a1, &a2, &a3);
                dw_quad_row(r += R, C, K, w02 + 6 * K, w13 + 6 * K, &a0, &a1, &a2, &a3);
            }
            out[0] = dw_requant(a0, rq[0], full);
            out[1] = dw_requant(a1, rq[1], full);
            out[2] = dw_requant(a2, rq[2], full);
            out[3] = dw_requant(a3, rq[3], full);
        }
    }
}

typedef void (*dw_quad_fn)(const tinyc_conv_params *p, int8_t *buf, const uint32_t *w02,
                           const uint32_t *w13, const int32_t *acc0, const dw_rq *rq);
/* gcc's first scheduling pass (before register allocation) hoists the taps' loads and
 * widenings ahead of their multiplies, more values than registers: spilled to the stack, about
 * 200 instructions per 3x3 pixel instead of 150 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__arm__)
#define DW_QUAD_ATTR __attribute__((optimize("no-schedule-insns")))
#else
#define DW_QUAD_ATTR
#endif
#define TINYC_DW_QUAD(K, S, F)                                                                \
    static DW_QUAD_ATTR void dw_quad_##K##_##S##_##F(                                         \
        const tinyc_conv_params *p, int8_t *buf, const uint32_t *w02, const uint32_t *w13,    \
        const int32_t *acc0, const dw_rq *rq)                                                 \
    {                                                                                         \
        dw_quad(p, buf, w02, w13, acc0, rq, K, S, F);                                         \
    }
#if TINYC_DW_QUAD_3X3_S1_NARROW
TINYC_DW_QUAD(3, 1, 0)
#define DW_QUAD_3_1_0 dw_quad_3_1_0
#else
#define DW_QUAD_3_1_0 (dw_quad_fn)0
#endif
#if TINYC_DW_QUAD_3X3_S1_FULL
TINYC_DW_QUAD(3, 1, 1)
#define DW_QUAD_3_1_1 dw_quad_3_1_1
#else
#define DW_QUAD_3_1_1 (dw_quad_fn)0
#endif
#if TINYC_DW_QUAD_3X3_S2_NARROW
TINYC_DW_QUAD(3, 2, 0)
#define DW_QUAD_3_2_0 dw_quad_3_2_0
#else
#define DW_QUAD_3_2_0 (dw_quad_fn)0
#endif
#if TINYC_DW_QUAD_3X3_S2_FULL
TINYC_DW_QUAD(3, 2, 1)
#define DW_QUAD_3_2_1 dw_quad_3_2_1
#else
#define DW_QUAD_3_2_1 (dw_quad_fn)0
#endif
#if TINYC_DW_QUAD_5X5_S1_NARROW
TINYC_DW_QUAD(5, 1, 0)
#define DW_QUAD_5_1_0 dw_quad_5_1_0
#else
#define DW_QUAD_5_1_0 (dw_quad_fn)0
#endif
#if TINYC_DW_QUAD_5X5_S1_FULL
TINYC_DW_QUAD(5, 1, 1)
#define DW_QUAD_5_1_1 dw_quad_5_1_1
#else
#define DW_QUAD_5_1_1 (dw_quad_fn)0
#endif
#if TINYC_DW_QUAD_5X5_S2_NARROW
TINYC_DW_QUAD(5, 2, 0)
#define DW_QUAD_5_2_0 dw_quad_5_2_0
#else
#define DW_QUAD_5_2_0 (dw_quad_fn)0
#endif
#if TINYC_DW_QUAD_5X5_S2_FULL
TINYC_DW_QUAD(5, 2, 1)
#define DW_QUAD_5_2_1 dw_quad_5_2_1
#else
#define DW_QUAD_5_2_1 (dw_quad_fn)0
#endif
#if TINYC_DW_QUAD_7X7_S1_NARROW
TINYC_DW_QUAD(7, 1, 0)
#define DW_QUAD_7_1_0 dw_quad_7_1_0
#else
#define DW_QUAD_7_1_0 (dw_quad_fn)0
#endif
#if TINYC_DW_QUAD_7X7_S1_FULL
TINYC_DW_QUAD(7, 1, 1)
#define DW_QUAD_7_1_1 dw_quad_7_1_1
#else
#define DW_QUAD_7_1_1 (dw_quad_fn)0
#endif
#if TINYC_DW_QUAD_7X7_S2_NARROW
TINYC_DW_QUAD(7, 2, 0)
#define DW_QUAD_7_2_0 dw_quad_7_2_0
#else
#define DW_QUAD_7_2_0 (dw_quad_fn)0
#endif
#if TINYC_DW_QUAD_7X7_S2_FULL
TINYC_DW_QUAD(7, 2, 1)
#define DW_QUAD_7_2_1 dw_quad_7_2_1
#else
#define DW_QUAD_7_2_1 (dw_quad_fn)0
#endif

/* the four-channel kernel of a 3x3, 5x5 or 7x7 layer at stride 1 or 2 without padding (every
 * window inside) and at least four channels; a 3x3 stride 1 layer only on a tile of at most
 * TINYC_DW_QUAD_S1_MAX_OUT outputs per channel (on larger planes the gathered plane's 3x3 rows
 * are faster); else 0 */
static dw_quad_fn dw_quad_for(const tinyc_conv_params *p)
{
    static const dw_quad_fn quads[3][2][2] = {
        {{DW_QUAD_3_1_0, DW_QUAD_3_1_1}, {DW_QUAD_3_2_0, DW_QUAD_3_2_1}},
        {{DW_QUAD_5_1_0, DW_QUAD_5_1_1}, {DW_QUAD_5_2_0, DW_QUAD_5_2_1}},
        {{DW_QUAD_7_1_0, DW_QUAD_7_1_1}, {DW_QUAD_7_2_0, DW_QUAD_7_2_1}}};
    const int32_t k = p->kernel_w, s = p->stride_w;
    dw_interior b;
    if (k != p->kernel_h || (k != 3 && k != 5 && k != 7) || s != p->stride_h || s < 1 || s > 2 ||
        p->dilation_h != 1 || p->dilation_w != 1 || p->pad_top != 0 || p->pad_left != 0 ||
        p->out_w > p->in_w || p->out_c != p->in_c || p->in_c < 4 ||
        (k == 3 && s == 1 && p->out_h * p->out_w > TINYC_DW_QUAD_S1_MAX_OUT)) {
        return 0;
    }
    b = interior_of(p);   /* of p: windows past the bottom or right edge */
    if (b.y_lo != 0 || b.y_hi != p->out_h || b.x_lo != 0 || b.x_hi != p->out_w) {
        return 0;
    }
    return quads[k / 2 - 1][s - 1][p->act_min == -128 && p->act_max == 127];
}
#endif

/* One channel of the in-place kernel, the general way: a constant channel written out, else
 * the plane gathered (its first input byte `at` bytes into the scratch, rows q->in_w apart) and
 * dw_plane over q. */
static void dw_channel(const tinyc_conv_params *p, const tinyc_conv_params *q,
                       const dw_interior *b, int8_t *buf, int32_t c, const int8_t *wk,
                       int32_t bias, int32_t mult, int32_t shift, int8_t *scratch,
                       int32_t scratch_bytes, int32_t at)
{
    const int32_t channels = p->in_c;
    int32_t value;
    if (dw_constant(p, wk, bias, mult, shift, &value)) {
        /* (output channel c only overwrites input channel c: nothing to gather) */
        int8_t *o = buf + c;
        const int32_t n = p->out_h * p->out_w;
        int32_t k;
        for (k = 0; k < n; ++k, o += channels) {
            *o = (int8_t)value;
        }
        return;
    }
    dw_gather(buf + c, channels, p->in_h, p->in_w, scratch + at, q->in_w);
    dw_plane(q, b, scratch, 1, scratch_bytes, wk, bias, mult, shift, buf + c, channels);
}

#if TINYC_USE_DSP
/* The in-place kernel over four channels at a time (quad), the last channels and any channel
 * the doubled taps do not allow one at a time (direct, else dw_channel). Out of line: inlined,
 * it changed the register allocation of the other paths (a few instructions per channel). */
static __attribute__((noinline)) void dw_inplace_quads(
    const tinyc_conv_params *p, const tinyc_conv_params *q, const dw_interior *b, int8_t *buf,
    const int8_t *weights, const int32_t *bias, const int32_t *mult, const int32_t *shift,
    int8_t *scratch, int32_t scratch_bytes, int32_t at, dw_quad_fn quad, dw_direct_fn direct)
{
    const int32_t channels = p->in_c, ksize = p->kernel_h * p->kernel_w;
    int32_t c;
    for (c = 0; c < channels; c += 4) {
        /* the four channels' taps doubled as int16 pairs: channels 0/2 and 1/3 */
        uint32_t w02[49], w13[49];
        dw_rq rq[4];
        int32_t acc0[4], j, k;
        int ok = c + 4 <= channels;
        for (j = 0; ok && j < 4; ++j) {
            const int8_t *wk = weights + (c + j) * ksize;
            const int32_t bc = bias ? bias[c + j] : 0;
            int32_t wsum = 0;
            for (k = 0; k < ksize; ++k) {
                wsum += wk[k];
            }
            acc0[j] = 2 * (bc - p->in_zp * wsum);
            ok = dw_fast_rq(p, bc, mult[c + j], shift[c + j], &rq[j]);
        }
        if (ok) {
            const int8_t *wk = weights + c * ksize;
            for (k = 0; k < ksize; ++k) {
                w02[k] = pair16(2 * wk[k], 2 * wk[2 * ksize + k]);
                w13[k] = pair16(2 * wk[ksize + k], 2 * wk[3 * ksize + k]);
            }
            quad(p, buf + c, w02, w13, acc0, rq);
            continue;
        }
        /* the last channels, or a channel the doubled taps do not allow: one at a time */
        for (j = c; j < c + 4 && j < channels; ++j) {
            const int8_t *wk = weights + j * ksize;
            const int32_t bc = bias ? bias[j] : 0;
            if (direct && dw_fast_rq(p, bc, mult[j], shift[j], &rq[0])) {
                int32_t wsum = 0;
                for (k = 0; k < 9; ++k) {
                    wsum += wk[k];
                }
                direct(p, buf + j, wk, 2 * (bc - p->in_zp * wsum), &rq[0]);
            } else {
                dw_channel(p, q, b, buf, j, wk, bc, mult[j], shift[j], scratch,
                           scratch_bytes, at);
            }
        }
    }
}
#endif

void tinyc_depthwise_conv_inplace(const tinyc_conv_params *p, int8_t *buf,
                                  const int8_t *weights, const int32_t *bias,
                                  const int32_t *mult, const int32_t *shift, int8_t *scratch,
                                  int32_t scratch_bytes)
{
    const int32_t channels = p->in_c;   /* == out_c */
    const int32_t ksize = p->kernel_h * p->kernel_w;
    /* (negative pads crop the input, as a patch schedule's tiles do: the plane as it is) */
    const int padded = p->pad_top >= 0 && p->pad_left >= 0 &&
                       scratch_bytes >= tinyc_dw_padded_plane_bytes(p);
    tinyc_conv_params q = *p;   /* padded: the same conv over the padded plane, no padding */
    dw_interior b;
    int32_t c, at;
#if TINYC_USE_DSP
    dw_row_fn fast = 0;
    dw_direct_fn direct;
    dw_quad_fn quad;
    dw_band band = {0, 0, 0};
#endif

    if (padded) {
        q.in_h = padded_extent(p->out_h, p->in_h, p->kernel_h, p->stride_h, p->pad_top,
                               p->dilation_h);
        q.in_w = padded_extent(p->out_w, p->in_w, p->kernel_w, p->stride_w, p->pad_left,
                               p->dilation_w);
        q.pad_top = 0;
        q.pad_left = 0;
        /* the padding holds the input zero point (it contributes exactly 0) and stays: only the
         * input positions are rewritten for each channel */
        memset(scratch, (int8_t)p->in_zp, (size_t)scratch_bytes);
    }
    b = interior_of(&q);
    at = padded ? p->pad_top * q.in_w + p->pad_left : 0;
#if TINYC_USE_DSP
    /* the padded plane through the specialised rows, one call per channel: the layer's shape
     * checked once (every window interior, the rows' 4-byte reads inside the scratch) */
    if (padded && b.y_lo == 0 && b.y_hi == q.out_h && b.x_lo == 0 && b.x_hi == q.out_w &&
        scratch_bytes - ((q.out_h - 1) * q.stride_h + q.kernel_h - 1) * q.in_w -
                4 * ((q.kernel_w + 3) / 4) >= (q.out_w - 1) * q.stride_w) {
        fast = dw_row_for(&q);
    } else if (!padded && p->pad_top >= 0 && p->pad_left >= 0 && dw_row_for(p)) {
        band.pw = padded_extent(p->out_w, p->in_w, p->kernel_w, p->stride_w, p->pad_left, 1);
        band.ph = padded_extent(p->out_h, p->in_h, p->kernel_h, p->stride_h, p->pad_top, 1);
        band.rows = dw_band_rows(p, scratch_bytes, band.pw, band.ph);
        if (band.rows) {
            memset(scratch, (int8_t)p->in_zp, (size_t)scratch_bytes);
        }
    }
#endif
#if TINYC_USE_DSP
    direct = dw_direct_for(p);
    quad = dw_quad_for(p);
    if (quad) {
        dw_inplace_quads(p, &q, &b, buf, weights, bias, mult, shift, scratch, scratch_bytes, at,
                         quad, direct);
        return;
    }
    if (direct) {
        for (c = 0; c < channels; ++c) {
            const int8_t *wk = weights + c * ksize;
            const int32_t bc = bias ? bias[c] : 0;
            dw_rq rq;
            if (dw_fast_rq(p, bc, mult[c], shift[c], &rq)) {
                int32_t k, wsum = 0;
                for (k = 0; k < 9; ++k) {
                    wsum += wk[k];
                }
                direct(p, buf + c, wk, 2 * (bc - p->in_zp * wsum), &rq);
            } else {
                dw_channel(p, &q, &b, buf, c, wk, bc, mult[c], shift[c], scratch, scratch_bytes,
                           at);
            }
        }
        return;
    }
    if (fast) {
        for (c = 0; c < channels; ++c) {
            const int8_t *wk = weights + c * ksize;
            const int32_t bc = bias ? bias[c] : 0;
            dw_rq rq;
            if (dw_fast_rq(&q, bc, mult[c], shift[c], &rq)) {
                uint32_t packed[4 * 7];
                const int32_t wsum = dw_pack_fast(wk, q.kernel_w, packed);
                dw_gather(buf + c, channels, p->in_h, p->in_w, scratch + at, q.in_w);
                fast(scratch, q.in_w, q.out_w, packed, 2 * (bc - q.in_zp * wsum), &rq, buf + c,
                     channels, q.out_h, q.stride_h * q.in_w, q.out_w * channels);
            } else {
                dw_channel(p, &q, &b, buf, c, wk, bc, mult[c], shift[c], scratch, scratch_bytes,
                           at);
            }
        }
        return;
    }
    if (band.rows) {
        const dw_row_fn rows = dw_row_for(p);
        int dirty = 0;
        for (c = 0; c < channels; ++c) {
            const int8_t *wk = weights + c * ksize;
            const int32_t bc = bias ? bias[c] : 0;
            dw_rq rq;
            if (dw_fast_rq(p, bc, mult[c], shift[c], &rq)) {
                uint32_t packed[4 * 7];
                const int32_t wsum = dw_pack_fast(wk, p->kernel_w, packed);
                if (dirty) {   /* a channel before took the plane: the pad columns again */
                    memset(scratch, (int8_t)p->in_zp, (size_t)scratch_bytes);
                    dirty = 0;
                }
                dw_band_channel(p, &band, rows, buf + c, channels, scratch, packed,
                                2 * (bc - p->in_zp * wsum), &rq, buf + c);
            } else {
                dw_channel(p, &q, &b, buf, c, wk, bc, mult[c], shift[c], scratch, scratch_bytes,
                           at);
                dirty = 1;
            }
        }
        return;
    }
#endif
    for (c = 0; c < channels; ++c) {
        dw_channel(p, &q, &b, buf, c, weights + c * ksize, bias ? bias[c] : 0, mult[c], shift[c],
                   scratch, scratch_bytes, at);
    }
}
