/* TFLite's integer requantization arithmetic (gemmlowp fixed point), C99, no float.
 *
 * These inline helpers are the single definition used by every tinyc kernel; the numpy golden
 * model implements the same functions in compiler/reference/fixedpoint.py.
 */
#ifndef TINYC_FIXEDPOINT_H
#define TINYC_FIXEDPOINT_H

#include <stdint.h>

/* for the few helpers of an inner loop that gcc would otherwise call (requantization) */
#if defined(__GNUC__) || defined(__clang__)
#define TINYC_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define TINYC_ALWAYS_INLINE inline
#endif

#define TINYC_INT8_MIN (-128)
#define TINYC_INT8_MAX 127

/* (a * b * 2) >> 32 with rounding to nearest (ties away from zero), saturating the one overflow
 * case a == b == INT32_MIN. */
static inline int32_t tinyc_srdhm(int32_t a, int32_t b)
{
    int64_t ab;
    int64_t nudge;
    if (a == b && a == INT32_MIN) {
        return INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    /* C99 division truncates toward zero, as gemmlowp requires */
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* x / 2^exponent rounded to nearest, ties away from zero (0 <= exponent <= 31). */
static TINYC_ALWAYS_INLINE int32_t tinyc_rdbypot(int32_t x, int exponent)
{
    const int32_t mask = (int32_t)((1u << exponent) - 1u);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* x * 2^shift wrapped to 32 bits (two's complement, like TFLite's int32 multiply on every
 * target tinyc supports), 0 <= shift <= 31. */
static TINYC_ALWAYS_INLINE int32_t tinyc_shl_wrap(int32_t x, int shift)
{
    return (int32_t)(uint32_t)((uint32_t)x << shift);
}

/* tinyc_srdhm for a multiplier >= 0 (every requantization multiplier is in [2^30, 2^31) or 0),
 * in the form of one multiply-accumulate and a shift (SMLAL on Arm): with b >= 0 the saturating
 * case cannot occur, and floor((ab + 2^30) / 2^31) equals gemmlowp's
 * trunc((ab + (ab >= 0 ? 2^30 : 1 - 2^30)) / 2^31) for every ab (for ab < 0 the truncation of
 * (ab + 1 - 2^30) / 2^31 is the floor of (ab + 1 - 2^30 + 2^31 - 1) / 2^31). The right shift of a
 * negative int64 is arithmetic on every compiler tinyc supports (gcc, clang; checked below). */
#if (-1 >> 1) != -1
#error "tinyc needs an arithmetic right shift of negative integers"
#endif
static TINYC_ALWAYS_INLINE int32_t tinyc_srdhm_pos(int32_t a, int32_t b)
{
    return (int32_t)(((int64_t)a * (int64_t)b + ((int64_t)1 << 30)) >> 31);
}

/* TFLite MultiplyByQuantizedMultiplier (default double rounding), multiplier >= 0. shift > 0 is
 * a left shift of x before the high multiply, shift < 0 a rounding right shift after it. */
static TINYC_ALWAYS_INLINE int32_t tinyc_mbqm(int32_t x, int32_t multiplier, int shift)
{
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    return tinyc_rdbypot(tinyc_srdhm_pos(tinyc_shl_wrap(x, left), multiplier), right);
}

/* TFLite MultiplyByQuantizedMultiplierSmallerThanOneExp: shift <= 0, multiplier >= 0. */
static TINYC_ALWAYS_INLINE int32_t tinyc_mbqm_small(int32_t x, int32_t multiplier, int shift)
{
    return tinyc_rdbypot(tinyc_srdhm_pos(x, multiplier), -shift);
}

static TINYC_ALWAYS_INLINE int32_t tinyc_clamp_i32(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

#endif /* TINYC_FIXEDPOINT_H */
