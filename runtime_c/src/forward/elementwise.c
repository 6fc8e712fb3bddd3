/* int8 element-wise kernels: ADD (TFLite reference), clamp, requantize. All may run in place. */
#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"
#include "tinyc/simd.h"

static TINYC_ALWAYS_INLINE int8_t add_one(const tinyc_add_params *p, int8_t x1, int8_t x2)
{
    const int32_t a = ((int32_t)x1 - p->in1_zp) * (1 << p->left_shift);
    const int32_t b = ((int32_t)x2 - p->in2_zp) * (1 << p->left_shift);
    const int32_t sa = tinyc_mbqm_small(a, p->in1_mult, p->in1_shift);
    const int32_t sb = tinyc_mbqm_small(b, p->in2_mult, p->in2_shift);
    const int32_t y = tinyc_mbqm_small(sa + sb, p->out_mult, p->out_shift) + p->out_zp;
    return (int8_t)tinyc_clamp_i32(y, p->act_min, p->act_max);
}

#if TINYC_USE_DSP
/* The DSP variant of TFLite's ADD: each input term and the output in one SMMLAR and a shift.
 *
 * TFLite rescales input x to t = RDBPOT(SRDHM((x - zp) * 2^20, m), e) (e = -shift >= 0), adds
 * the two terms and gives RDBPOT(SRDHM(t1 + t2, mo), eo) + zp_out. With m >= 0,
 * SRDHM(a, m) = floor((a * m + 2^30) / 2^31) (fixedpoint.h), so for d = x - zp (|d| <= 255):
 *   - the input of the larger scale has m = 2^30, e = 0: t = d * 2^19 exactly;
 *   - the other input: h = SRDHM(d * 2^20, m) = floor((d * 2^21 * m + 2^31) / 2^32), the
 *     rounded high word of SMMLAR(d * 2^21, m, c) = c + h, and RDBPOT(h, e) = floor((h +
 *     2^(e-1) - [h < 0]) / 2^e) for e >= 1: c = 2^(e-1) - [d < 0], then an arithmetic shift by
 *     e. [d < 0] may stand for [h < 0]: they differ only when d < 0 and h = 0, where both
 *     give 0.
 *   - the output, the same with S = t1 + t2 doubled (SRDHM(S, mo) = floor((2S * mo + 2^31) /
 *     2^32)) and the zero point folded into c = 2^(eo-1) + zp_out * 2^eo - [S < 0] (a multiple
 *     of 2^eo inside the floor), for eo in [1, 22].
 * No intermediate wraps: |d * 2^21| < 2^29, |2S| <= 2 * 255 * 2^20 < 2^29, |c + h| < 2^30.
 * Two inputs of one scale (both exact) are left to the portable loop: rare, and a third loop
 * would cost flash. The host tests run this with the instructions written in C
 * (TINYC_SIMD_EMULATE). */
typedef struct {
    int32_t a_zp20;                  /* the larger-scale input's zero point * 2^20 */
    int32_t b_zp21, b_mult, b_round; /* the other input: zero point * 2^21, multiplier, */
    int32_t b_e;                     /* 2^(e-1) and e */
    int32_t out_mult, out_rz, out_e; /* out_rz = 2^(eo-1) + zp_out * 2^eo */
    int32_t lo, hi;
} add_dsp_consts;

/* The loop with the constants in locals (an int8 store may alias the struct), a clamp
 * narrower than int8 (`narrow`) as a constant argument. */
static TINYC_ALWAYS_INLINE void add_dsp_loop(const add_dsp_consts *k, int32_t n,
                                             const int8_t *a, const int8_t *b, int8_t *out,
                                             int narrow)
{
    const int32_t a_zp20 = k->a_zp20, b_zp21 = k->b_zp21, b_mult = k->b_mult;
    const int32_t b_round = k->b_round, b_e = k->b_e;
    const int32_t out_mult = k->out_mult, out_rz = k->out_rz, out_e = k->out_e;
    const int32_t lo = k->lo, hi = k->hi;
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t d21 = b[i] * (1 << 21) - b_zp21;
        const int32_t sum2 = a[i] * (1 << 20) - a_zp20 +   /* twice the two terms */
                             2 * (tinyc_smmlar(d21, b_mult, b_round + (d21 >> 31)) >> b_e);
        const int32_t o = tinyc_smmlar(sum2, out_mult, out_rz + (sum2 >> 31)) >> out_e;
        out[i] = (int8_t)(narrow ? tinyc_clamp_i32(o, lo, hi) : tinyc_ssat8(o));
    }
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((noinline))   /* its own registers, apart from the portable fallback's */
#endif
static void add_dsp(const add_dsp_consts *k, int32_t n, const int8_t *a, const int8_t *b,
                    int8_t *out)
{
    if (k->lo > TINYC_INT8_MIN || k->hi < TINYC_INT8_MAX) {
        add_dsp_loop(k, n, a, b, out, 1);
    } else {
        add_dsp_loop(k, n, a, b, out, 0);
    }
}

/* An input whose term is (x - zp) * 2^19 exactly: the one of the larger scale. */
static int add_exact_input(int32_t mult, int32_t shift)
{
    return mult == (1 << 30) && shift == 0;
}

/* Whether the DSP variant takes these parameters (TFLite's int8 ADD of two scales always gives
 * it one exact input and the other's shift in [-31, -1]; otherwise the portable loop runs).
 * swap: the exact input is in2. */
static int add_dsp_consts_of(const tinyc_add_params *p, int swap, add_dsp_consts *k)
{
    const int32_t m_b = swap ? p->in1_mult : p->in2_mult;
    const int32_t e_b = -(swap ? p->in1_shift : p->in2_shift);
    const int32_t eo = -p->out_shift;
    if (p->left_shift != 20 || eo < 1 || eo > 22 || p->out_mult < 0 || m_b < 0 || e_b < 1 ||
        e_b > 31 ||
        !add_exact_input(swap ? p->in2_mult : p->in1_mult, swap ? p->in2_shift : p->in1_shift)) {
        return 0;
    }
    k->a_zp20 = (swap ? p->in2_zp : p->in1_zp) * (1 << 20);
    k->b_zp21 = (swap ? p->in1_zp : p->in2_zp) * (1 << 21);
    k->b_mult = m_b;
    k->b_e = e_b;
    k->b_round = (int32_t)(1u << (e_b - 1));
    k->out_mult = p->out_mult;
    k->out_e = eo;
    k->out_rz = (int32_t)(1u << (eo - 1)) + p->out_zp * (1 << eo);
    k->lo = p->act_min;
    k->hi = p->act_max;
    return 1;
}
#endif /* TINYC_USE_DSP */

void tinyc_add(const tinyc_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    int32_t i;
#if TINYC_USE_DSP
    add_dsp_consts k;
    const int swap = !add_exact_input(p->in1_mult, p->in1_shift);
    if (add_dsp_consts_of(p, swap, &k)) {
        add_dsp(&k, p->size, swap ? in2 : in1, swap ? in1 : in2, out);
        return;
    }
#endif
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
