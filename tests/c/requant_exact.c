/* tinyc_requant_dsp (the DSP kernels' requantization, simd.h) against TFLite's arithmetic
 * (tinyc_mbqm, fixedpoint.h) on edge and pseudo-random accumulators, multipliers, shifts, zero
 * points and clamps. Built with -DTINYC_SIMD_EMULATE on the host (tests/test_runtime_c.py) or for
 * Arm; prints the number of cases checked and exits 1 at the first difference. */
#include <stdio.h>

#include "tinyc/fixedpoint.h"
#include "tinyc/simd.h"

static uint32_t state = 12345u;

static uint32_t next(void)
{
    state = state * 1664525u + 1013904223u;
    return state;
}

int main(void)
{
    static const int32_t edge_acc[] = {INT32_MIN, INT32_MIN + 1, -1073741824, -65536, -257, -2,
                                       -1, 0, 1, 2, 255, 65536, 1073741824, INT32_MAX - 1,
                                       INT32_MAX};
    static const int32_t edge_mult[] = {0, 1073741824, 1073741825, 1518500250, 2147483646,
                                        2147483647};
    static const int32_t clamps[][2] = {{-128, 127}, {-128, -100}, {0, 127}, {-5, 6}, {90, 127}};
    static const int32_t zps[] = {-128, -127, -1, 0, 3, 127};
    long cases = 0;
    int32_t shift;
    for (shift = -31; shift <= 8; ++shift) {
        int k;
        for (k = 0; k < 6000; ++k) {
            const int32_t acc = k < 15 * 6 ? edge_acc[k % 15]
                              : (k & 1) ? (int32_t)next() : (int32_t)next() >> (next() % 31u);
            const int32_t mult = k < 15 * 6 ? edge_mult[k / 15]
                               : (int32_t)(0x40000000u | (next() >> 2));
            unsigned z, c;
            for (z = 0; z < sizeof zps / sizeof zps[0]; ++z) {
                for (c = 0; c < sizeof clamps / sizeof clamps[0]; ++c) {
                    const int32_t lo = clamps[c][0], hi = clamps[c][1];
                    const int32_t want = tinyc_clamp_i32(tinyc_mbqm(acc, mult, shift) + zps[z],
                                                         lo, hi);
                    const int32_t got = tinyc_requant_dsp(acc, mult, shift, zps[z], lo, hi);
                    ++cases;
                    if (got != want) {
                        printf("differs: acc %ld mult %ld shift %ld zp %ld clamp [%ld, %ld]: "
                               "%ld, TFLite %ld\n", (long)acc, (long)mult, (long)shift,
                               (long)zps[z], (long)lo, (long)hi, (long)got, (long)want);
                        return 1;
                    }
                    if (tinyc_requant_zfast(shift)) {
                        /* the zero point folded into the rounding word (RQ_ZFAST kernels) */
                        const uint32_t e1 = tinyc_requant_e1(shift);
                        const int32_t rz = tinyc_requant_round_zp(
                            e1, 2u * (uint32_t)zps[z] + 1u);
                        const int32_t got_z = tinyc_clamp_i32(
                            tinyc_requant_pre(acc, mult, e1, rz), lo, hi);
                        ++cases;
                        if (got_z != want) {
                            printf("differs (zero point folded): acc %ld mult %ld shift %ld "
                                   "zp %ld: %ld, TFLite %ld\n", (long)acc, (long)mult,
                                   (long)shift, (long)zps[z], (long)got_z, (long)want);
                            return 1;
                        }
                    }
                }
            }
        }
    }
    /* every small accumulator on multipliers that make the roundings' ties frequent (2^30:
     * h = floor((acc + 1) / 2)), at every shift */
    for (shift = -31; shift <= 8; ++shift) {
        static const int32_t tie_mult[] = {0, 1073741824, 1073741825, 1610612736, 2147483647};
        unsigned m;
        int32_t acc;
        for (m = 0; m < sizeof tie_mult / sizeof tie_mult[0]; ++m) {
            for (acc = -4096; acc <= 4095; ++acc) {
                const int32_t want = tinyc_clamp_i32(tinyc_mbqm(acc, tie_mult[m], shift) - 3,
                                                     -128, 127);
                const int32_t got = tinyc_requant_dsp(acc, tie_mult[m], shift, -3, -128, 127);
                ++cases;
                if (got != want) {
                    printf("differs: acc %ld mult %ld shift %ld: %ld, TFLite %ld\n", (long)acc,
                           (long)tie_mult[m], (long)shift, (long)got, (long)want);
                    return 1;
                }
            }
        }
    }
    printf("%ld cases equal\n", cases);
    return 0;
}
