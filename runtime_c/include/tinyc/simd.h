/* Which kernel variant is compiled, and the few SIMD operations the DSP variants use.
 *
 * TINYC_USE_DSP is 1 on a core with the Arm DSP extension (Cortex-M4, M7, M33, M55...:
 * __ARM_FEATURE_DSP), unless TINYC_PORTABLE is defined; the kernels then use SMLAD (two 16x16
 * multiply-accumulates per instruction) on bytes widened with SXTB16. Elsewhere (Cortex-M0+, the
 * host) the plain C99 kernels are compiled. Both variants give the same bytes: same int32
 * accumulators, same requantization.
 *
 * TINYC_SIMD_EMULATE compiles the DSP variants on any host, with the instructions written in C
 * below, so that the host tests check the DSP kernels' arithmetic on every test net.
 */
#ifndef TINYC_SIMD_H
#define TINYC_SIMD_H

#include <stdint.h>
#include <string.h>

#include "tinyc/fixedpoint.h"

#if (defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP == 1 && !defined(TINYC_PORTABLE)) || \
    defined(TINYC_SIMD_EMULATE)
#define TINYC_USE_DSP 1
#else
#define TINYC_USE_DSP 0
#endif

#if TINYC_USE_DSP

/* four int8 from any address (Cortex-M3 and later load unaligned words in one LDR) */
static inline uint32_t tinyc_read4(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

#if defined(__ARM_FEATURE_DSP) && !defined(TINYC_SIMD_EMULATE)
#include <arm_acle.h>

/* bytes 0 and 2 of x sign-extended into the two halfwords */
static inline uint32_t tinyc_sxtb16(uint32_t x) { return (uint32_t)__sxtb16((int8x4_t)x); }
/* bytes 1 and 3: one SXTB16 with its ROR #8 operand (gcc does not fold a rotation into the
 * intrinsic's operand by itself) */
static inline uint32_t tinyc_sxtb16_ror8(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
/* acc + lo(a) * lo(b) + hi(a) * hi(b), signed halfwords */
static inline int32_t tinyc_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlad((int16x2_t)a, (int16x2_t)b, acc);
}
/* a + b saturated to int32 (QADD) */
static inline int32_t tinyc_qadd(int32_t a, int32_t b) { return __qadd(a, b); }
/* x clamped to [-128, 127] (SSAT #8) */
static inline int32_t tinyc_ssat8(int32_t x) { return __ssat(x, 8); }
/* the high word of hi:lo + a * b (SMLAL; written out so that gcc does not split it into
 * UMULL + MLA when it shares a sign extension between two products) */
static inline int32_t tinyc_smlal_hi(uint32_t lo, int32_t hi, int32_t a, int32_t b)
{
    __asm__("smlal %0, %1, %2, %3" : "+r"(lo), "+r"(hi) : "r"(a), "r"(b));
    return hi;
}
/* c + floor((a * b + 2^31) / 2^32): the rounded high word of a * b plus c (SMMLAR) */
static inline int32_t tinyc_smmlar(int32_t a, int32_t b, int32_t c)
{
    int32_t r;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
/* the halfwords of a plus bytes 0 and 2 of x, sign-extended (SXTAB16) */
static inline uint32_t tinyc_sxtab16(uint32_t a, uint32_t x)
{
    return (uint32_t)__sxtab16((int16x2_t)a, (int8x4_t)x);
}
/* the same with bytes 1 and 3 */
static inline uint32_t tinyc_sxtab16_ror8(uint32_t a, uint32_t x)
{
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
/* 0xFF in each byte lane of x with lo <= x <= hi (signed bytes; lo4, hi4: the bounds in every
 * lane), 0x00 elsewhere: SSUB8 sets a lane's GE flag when its difference is >= 0, SEL keeps
 * the lanes whose flag is set */
static inline uint32_t tinyc_in_range8(uint32_t x, uint32_t lo4, uint32_t hi4)
{
    uint32_t m, t;
    __asm__("ssub8 %1, %2, %3\n\t"
            "sel %0, %4, %5\n\t"
            "ssub8 %1, %6, %2\n\t"
            "sel %0, %0, %5"
            : "=&r"(m), "=&r"(t)
            : "r"(x), "r"(lo4), "r"(0xFFFFFFFFu), "r"(0u), "r"(hi4));
    return m;
}
/* acc + the sum of the four unsigned bytes of x (USADA8 against zero) */
static inline uint32_t tinyc_usada8(uint32_t x, uint32_t acc)
{
    return __usada8((uint8x4_t)x, (uint8x4_t)0u, acc);
}

#else /* TINYC_SIMD_EMULATE: the same operations in C */

static inline uint32_t tinyc_sxtb16(uint32_t x)
{
    const uint32_t lo = (uint32_t)(int32_t)(int8_t)(x & 0xFF) & 0xFFFFu;
    const uint32_t hi = (uint32_t)(int32_t)(int8_t)((x >> 16) & 0xFF) & 0xFFFFu;
    return lo | (hi << 16);
}
static inline uint32_t tinyc_sxtb16_ror8(uint32_t x)
{
    return tinyc_sxtb16((x >> 8) | (x << 24));
}
static inline int32_t tinyc_qadd(int32_t a, int32_t b)
{
    const int64_t s = (int64_t)a + b;
    return s > INT32_MAX ? INT32_MAX : (s < INT32_MIN ? INT32_MIN : (int32_t)s);
}
static inline int32_t tinyc_ssat8(int32_t x)
{
    return x < -128 ? -128 : (x > 127 ? 127 : x);
}
static inline int32_t tinyc_smlal_hi(uint32_t lo, int32_t hi, int32_t a, int32_t b)
{
    const uint64_t s = (((uint64_t)(uint32_t)hi << 32) | lo) + (uint64_t)((int64_t)a * b);
    return (int32_t)(uint32_t)(s >> 32);
}
static inline int32_t tinyc_smmlar(int32_t a, int32_t b, int32_t c)
{
    const uint64_t s = ((uint64_t)(uint32_t)c << 32) + (uint64_t)((int64_t)a * b) + 0x80000000u;
    return (int32_t)(uint32_t)(s >> 32);
}
static inline uint32_t tinyc_sxtab16(uint32_t a, uint32_t x)
{
    const uint32_t e = tinyc_sxtb16(x);
    return ((a + e) & 0xFFFFu) | (((a >> 16) + (e >> 16)) << 16);
}
static inline uint32_t tinyc_sxtab16_ror8(uint32_t a, uint32_t x)
{
    return tinyc_sxtab16(a, (x >> 8) | (x << 24));
}
static inline uint32_t tinyc_in_range8(uint32_t x, uint32_t lo4, uint32_t hi4)
{
    uint32_t m = 0;
    int k;
    for (k = 0; k < 32; k += 8) {
        const int32_t v = (int8_t)(x >> k), lo = (int8_t)(lo4 >> k), hi = (int8_t)(hi4 >> k);
        m |= (uint32_t)(lo <= v && v <= hi ? 0xFFu : 0u) << k;
    }
    return m;
}
static inline uint32_t tinyc_usada8(uint32_t x, uint32_t acc)
{
    return acc + (x & 0xFFu) + ((x >> 8) & 0xFFu) + ((x >> 16) & 0xFFu) + (x >> 24);
}
static inline int32_t tinyc_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    const int32_t a_lo = (int16_t)(a & 0xFFFF), a_hi = (int16_t)(a >> 16);
    const int32_t b_lo = (int16_t)(b & 0xFFFF), b_hi = (int16_t)(b >> 16);
    /* the accumulation wraps like the instruction (the int32 accumulators never overflow) */
    return (int32_t)((uint32_t)acc + (uint32_t)(a_lo * b_lo) + (uint32_t)(a_hi * b_hi));
}

#endif

/* acc plus the four products of an input word, already widened (x02: bytes 0 and 2, x13: bytes
 * 1 and 3), and the weight word w: two SMLADs */
static inline int32_t tinyc_dot4(uint32_t x02, uint32_t x13, uint32_t w, int32_t acc)
{
    acc = tinyc_smlad(x02, tinyc_sxtb16(w), acc);
    return tinyc_smlad(x13, tinyc_sxtb16_ror8(w), acc);
}

/* clamp(MultiplyByQuantizedMultiplier(acc, mult, shift) + zp, lo, hi): TFLite's int8 output of
 * an accumulator, for mult >= 0, zp in [-128, 127], -128 <= lo <= hi <= 127.
 *
 * For the common right shifts e = -shift in [2, 31] both roundings are one SMLAL and a shift.
 * TFLite computes h = floor((acc * mult + 2^30) / 2^31) (its doubling high multiply; mult >= 0
 * never saturates), then RoundingDivideByPOT(h, e) = floor((h + 2^(e-1) - [h < 0]) / 2^e).
 * As floor(floor(X / 2^31) / 2^e) = floor(X / 2^(31+e)), that is
 *     floor((acc * mult + 2^30 - [h < 0] * 2^31 + 2^(30+e)) / 2^(31+e)),
 * and [h < 0] may be replaced by s = [acc < 0]: they differ only when acc < 0 and h = 0, i.e.
 * acc * mult + 2^30 in [0, 2^31), where the numerator stays in [0, 2^(31+e)) and the result is
 * 0 = RoundingDivideByPOT(0, e) either way. The 64-bit addend is built in two words,
 * low 2^30 + s * 2^31 (mod 2^32) and high 2^(e-2) - s (the borrow of -s * 2^31); the SMLAL
 * adds acc * mult; as 31 + e >= 32 only the high word is shifted, by e - 1. No intermediate
 * saturates (|acc * mult| < 2^62). Other shifts: tinyc_mbqm. */
/* whether tinyc_requant_pre takes the shift (e = -shift in [2, 31]) */
static TINYC_ALWAYS_INLINE int tinyc_requant_fast(int32_t shift)
{
    return ~(uint32_t)shift - 1u < 30u;
}

/* the per-channel constants of the fast path: e - 1, and the rounding term 2^(e-2) */
static TINYC_ALWAYS_INLINE uint32_t tinyc_requant_e1(int32_t shift) { return ~(uint32_t)shift; }
static TINYC_ALWAYS_INLINE int32_t tinyc_requant_round(uint32_t e1)
{
    return (int32_t)((1u << e1) >> 1);
}

/* MultiplyByQuantizedMultiplier(acc, mult, shift) for a shift that tinyc_requant_fast takes,
 * e1 = tinyc_requant_e1(shift), round = tinyc_requant_round(e1): five instructions */
static TINYC_ALWAYS_INLINE int32_t tinyc_requant_pre(int32_t acc, int32_t mult, uint32_t e1,
                                                     int32_t round)
{
    const uint32_t low = ((uint32_t)acc & 0x80000000u) | 0x40000000u;
    return tinyc_smlal_hi(low, round + (acc >> 31), acc, mult) >> e1;
}

/* The output zero point folded into the rounding word, for e = -shift in [2, 23] (e1 = e - 1 in
 * [1, 22]): with rz = 2^(e1-1) + zp * 2^e1 = (2 zp + 1) * 2^(e1-1) in place of the rounding term,
 * the SMLAL's high word is hi + zp * 2^e1 (h the high word of tinyc_requant_pre), and
 * (hi + zp * 2^e1) >> e1 == (hi >> e1) + zp exactly (an arithmetic shift of hi plus a multiple
 * of 2^e1). No wrap: |acc * mult| < 2^62 and the addend is below 2^54, so |hi| <= 2^30 + 2^22,
 * and |zp * 2^e1| <= 2^29: the sum stays below 2^31. One instruction less per output (the
 * add of zp), and the constant is derived once per channel. */
/* whether the shift is in that range */
static TINYC_ALWAYS_INLINE int tinyc_requant_zfast(int32_t shift)
{
    return ~(uint32_t)shift - 1u < 22u;
}

/* rz for e1 = tinyc_requant_e1(shift) (in [1, 22]) and zp21 = 2 * zp + 1 (as uint32):
 * (2 zp + 1) * 2^e1 (|.| < 2^30, as int32) halved by an arithmetic shift, exact as the product is
 * even (two instructions; the e1 - 1 of a direct shift costs gcc three more) */
static TINYC_ALWAYS_INLINE int32_t tinyc_requant_round_zp(uint32_t e1, uint32_t zp21)
{
    return (int32_t)(zp21 << e1) >> 1;
}

static TINYC_ALWAYS_INLINE int32_t tinyc_requant_dsp(int32_t acc, int32_t mult, int32_t shift,
                                                     int32_t zp, int32_t lo, int32_t hi)
{
    int32_t v;
    if (tinyc_requant_fast(shift)) {
        const uint32_t e1 = tinyc_requant_e1(shift);
        v = tinyc_requant_pre(acc, mult, e1, tinyc_requant_round(e1));
    } else {
        v = tinyc_mbqm(acc, mult, shift);
    }
    return tinyc_clamp_i32(v + zp, lo, hi);
}
#endif /* TINYC_USE_DSP */
#endif /* TINYC_SIMD_H */
