/* tinyc_add (runtime_c/src/forward/elementwise.c) against TFLite's int8 ADD arithmetic written
 * out with fixedpoint.h, on every pair of int8 inputs for many parameter sets: the larger-scale
 * input first, second or both, edge and pseudo-random multipliers, every input shift in
 * [-31, -1], output shifts inside and outside the DSP variant's range, zero points, clamps, in
 * place and not. Built with -DTINYC_SIMD_EMULATE (the DSP variant, its instructions written in
 * C) or without (the portable loop); prints the number of cases and exits 1 at the first
 * difference. */
#include <stdio.h>

#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"

static uint32_t state = 2024u;

static uint32_t next(void)
{
    state = state * 1664525u + 1013904223u;
    return state;
}

static int8_t tflite_add(const tinyc_add_params *p, int32_t x1, int32_t x2)
{
    const int32_t a = (x1 - p->in1_zp) * (1 << p->left_shift);
    const int32_t b = (x2 - p->in2_zp) * (1 << p->left_shift);
    const int32_t s = tinyc_mbqm_small(a, p->in1_mult, p->in1_shift) +
                      tinyc_mbqm_small(b, p->in2_mult, p->in2_shift);
    return (int8_t)tinyc_clamp_i32(tinyc_mbqm_small(s, p->out_mult, p->out_shift) + p->out_zp,
                                   p->act_min, p->act_max);
}

static int8_t in1[65536], in2[65536], out[65536];

int main(void)
{
    static const int32_t edge_mult[] = {1073741824, 1073741825, 1518500250, 2147483647};
    static const int32_t clamps[][2] = {{-128, 127}, {0, 127}, {-128, -100}, {-5, 6}};
    static const int32_t out_shifts[] = {-1, -2, -13, -18, -19, -20, -21, -22, -23, -25, 0};
    static const int32_t zps[] = {-128, 127, 0, -1};
    long cases = 0;
    int set;
    for (set = 0; set < 400; ++set) {
        tinyc_add_params p;
        const int exact = set % 3;   /* 0: in1 of the larger scale, 1: in2, 2: both */
        const int32_t m = set < 124 ? edge_mult[set % 4] : (int32_t)(0x40000000u | (next() >> 2));
        const int32_t sh = -1 - (int32_t)(set % 31);
        const int in_place = set % 5 == 0;
        int8_t *dst = in_place ? in1 : out;
        int32_t i;
        p.size = 65536;
        p.left_shift = 20;
        p.in1_zp = set < 16 ? zps[set % 4] : (int32_t)(next() % 256u) - 128;
        p.in2_zp = set < 16 ? zps[(set / 4) % 4] : (int32_t)(next() % 256u) - 128;
        p.out_zp = set < 16 ? zps[(set + 1) % 4] : (int32_t)(next() % 256u) - 128;
        p.in1_mult = exact == 1 ? m : 1073741824;
        p.in1_shift = exact == 1 ? sh : 0;
        p.in2_mult = exact == 0 ? m : 1073741824;
        p.in2_shift = exact == 0 ? sh : 0;
        p.out_mult = set % 7 == 0 ? edge_mult[(set / 7) % 4] : (int32_t)(0x40000000u | (next() >> 2));
        p.out_shift = out_shifts[set % 11];
        p.act_min = clamps[(set / 3) % 4][0];
        p.act_max = clamps[(set / 3) % 4][1];
        for (i = 0; i < 65536; ++i) {
            in1[i] = (int8_t)(i & 0xFF);
            in2[i] = (int8_t)(i >> 8);
        }
        tinyc_add(&p, in1, in2, dst);
        for (i = 0; i < 65536; ++i) {
            const int8_t want = tflite_add(&p, (int8_t)(i & 0xFF), (int8_t)(i >> 8));
            ++cases;
            if (dst[i] != want) {
                printf("differs: set %d x1 %d x2 %d: %d, TFLite %d\n", set, (int8_t)(i & 0xFF),
                       (int8_t)(i >> 8), dst[i], want);
                return 1;
            }
        }
    }
    printf("%ld cases equal\n", cases);
    return 0;
}
