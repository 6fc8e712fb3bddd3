/* TFLite int8 softmax (reference Softmax with gemmlowp fixed point): the input differences to the
 * row maximum are rescaled to Q5.26, exponentiated in fixed point, summed in Q12.19, and the
 * output is exp * 1/sum at scale 1/256, zero point -128. Integers only. */
#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"

#define SCALED_DIFF_INTEGER_BITS 5
#define ACCUM_INTEGER_BITS 12

/* x * 2^exponent, saturating at the int32 limits (gemmlowp SaturatingRoundingMultiplyByPOT for
 * exponent > 0). */
static int32_t shl_saturating(int32_t x, int exponent)
{
    const int32_t threshold = (int32_t)(((int64_t)1 << (31 - exponent)) - 1);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return tinyc_shl_wrap(x, exponent);
}

/* exp(a) for a in [-1/4, 0) (Q0.31 in and out): Taylor series around -1/8. */
static int32_t exp_neg_quarter_to_zero(int32_t a)
{
    const int32_t exp_minus_one_eighth = 1895147668;
    const int32_t one_third = 715827883;
    const int32_t x = a + (1 << 28);   /* a + 1/8 */
    const int32_t x2 = tinyc_srdhm(x, x);
    const int32_t x3 = tinyc_srdhm(x2, x);
    const int32_t x4 = tinyc_srdhm(x2, x2);
    const int32_t x4_over_4 = tinyc_rdbypot(x4, 2);
    const int32_t poly = tinyc_rdbypot(tinyc_srdhm(x4_over_4 + x3, one_third) + x2, 1);
    return exp_minus_one_eighth + tinyc_srdhm(exp_minus_one_eighth, x + poly);
}

/* exp(a) for a <= 0 given in Q5.26; result in Q0.31. */
static int32_t exp_on_negative_values(int32_t a)
{
    /* exp(-2^k) in Q0.31 for k = -2 .. 4 */
    static const int32_t barrel[7] = {1672461947, 1302514674, 790015084, 290630308,
                                      39332535, 720401, 242};
    const int frac_bits = 31 - SCALED_DIFF_INTEGER_BITS;
    const int32_t quarter = (int32_t)1 << (frac_bits - 2);
    const int32_t a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter;
    const int32_t remainder = a_mod_quarter_minus_quarter - a;
    int32_t result = exp_neg_quarter_to_zero(
        shl_saturating(a_mod_quarter_minus_quarter, SCALED_DIFF_INTEGER_BITS));
    int k;
    for (k = 0; k < 7; ++k) {
        if (remainder & ((int32_t)1 << (frac_bits - 2 + k))) {
            result = tinyc_srdhm(result, barrel[k]);
        }
    }
    return a == 0 ? INT32_MAX : result;
}

/* 1 / (1 + a) for a in [0, 1) in Q0.31 (Newton-Raphson on half the denominator, 3 steps). */
static int32_t one_over_one_plus_x(int32_t a)
{
    const int64_t sum = (int64_t)a + INT32_MAX;
    const int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    const int32_t one_q2 = (int32_t)1 << 29;   /* 1.0 in Q2.29 */
    int32_t x = 1515870810 + tinyc_srdhm(half_denominator, -1010580540);   /* 48/17 - 32/17 d */
    int i;
    for (i = 0; i < 3; ++i) {
        const int32_t one_minus = one_q2 - tinyc_srdhm(half_denominator, x);
        x = x + shl_saturating(tinyc_srdhm(x, one_minus), 2);
    }
    return shl_saturating(x, 1);
}

static int count_leading_zeros(uint32_t x)
{
    int n = 0;
    if (x == 0) {
        return 32;
    }
    while (!(x & 0x80000000u)) {
        x <<= 1;
        ++n;
    }
    return n;
}

void tinyc_softmax(const tinyc_softmax_params *p, const int8_t *in, int8_t *out)
{
    int32_t r, c;
    for (r = 0; r < p->rows; ++r) {
        const int8_t *x = in + r * p->depth;
        int8_t *y = out + r * p->depth;
        int32_t max_in_row = TINYC_INT8_MIN;
        uint32_t sum_of_exps = 0;
        int headroom_plus_one, bits_over_unit, out_shift;
        int32_t shifted_sum_minus_one, scale;

        for (c = 0; c < p->depth; ++c) {
            if (x[c] > max_in_row) {
                max_in_row = x[c];
            }
        }
        for (c = 0; c < p->depth; ++c) {
            const int32_t diff = (int32_t)x[c] - max_in_row;
            if (diff >= p->diff_min) {
                const int32_t scaled = tinyc_srdhm(tinyc_shl_wrap(diff, p->input_left_shift),
                                                   p->input_multiplier);
                sum_of_exps += (uint32_t)tinyc_rdbypot(exp_on_negative_values(scaled),
                                                       ACCUM_INTEGER_BITS);
            }
        }
        /* the sum as an int32 (TFLite's FixedPoint add wraps); >= 2^19 for any real row */
        if ((int32_t)sum_of_exps > 0) {
            headroom_plus_one = count_leading_zeros(sum_of_exps);
            shifted_sum_minus_one =
                (int32_t)(uint32_t)((sum_of_exps << headroom_plus_one) - 0x80000000u);
        } else {
            headroom_plus_one = 32;
            shifted_sum_minus_one = INT32_MIN;
        }
        bits_over_unit = ACCUM_INTEGER_BITS - headroom_plus_one;
        /* A sum of 512.0 or more (>= 512 logits at the maximum) needs a shift past 31 bits:
         * TFLite aborts there; every probability is below 1/512 and the output is -128. */
        out_shift = bits_over_unit + 31 - 8;
        scale = one_over_one_plus_x(shifted_sum_minus_one);

        for (c = 0; c < p->depth; ++c) {
            const int32_t diff = (int32_t)x[c] - max_in_row;
            if (diff >= p->diff_min) {
                const int32_t scaled = tinyc_srdhm(tinyc_shl_wrap(diff, p->input_left_shift),
                                                   p->input_multiplier);
                const int32_t e = exp_on_negative_values(scaled);
                const int32_t v = (out_shift > 31 ? 0 : tinyc_rdbypot(tinyc_srdhm(scale, e),
                                                                       out_shift))
                                  + TINYC_INT8_MIN;
                y[c] = (int8_t)tinyc_clamp_i32(v, TINYC_INT8_MIN, TINYC_INT8_MAX);
            } else {
                y[c] = TINYC_INT8_MIN;
            }
        }
    }
}
