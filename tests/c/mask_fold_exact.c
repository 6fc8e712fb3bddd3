/* tinyc_pack_mask and tinyc_grad_mask_bits (runtime_c/src/backward/elementwise_grad.c) and
 * tinyc_fold_bias (runtime_c/src/optim/sgd.c), the masks and folded biases of training, against
 * their definitions
 * written out one element at a time: every int8 value under every pair of bounds in [-130, 129]
 * (the DSP variant's lanes and the bounds it leaves to the portable loop), sizes with and
 * without a partial last byte, unaligned inputs; masked gradients (bit for bit: -0, infinities
 * and NaNs kept where the bit is set, +0 elsewhere; bytes all set, all clear and mixed; in place
 * and not); folded biases of filters of 1 to 70 and 1000
 * weights (the DSP variant's word loops and tails), extreme weights and zero points. Built with
 * -DTINYC_SIMD_EMULATE (the DSP variant) or without (the portable loops); prints the number of
 * cases and exits 1 at the first difference. */
#include <stdio.h>
#include <string.h>

#include "tinyc/train.h"

static uint32_t state = 77u;

static uint32_t next(void)
{
    state = state * 1664525u + 1013904223u;
    return state >> 8;
}

static int check_mask(const int8_t *y, int32_t size, int32_t lo, int32_t hi)
{
    uint8_t bits[64];
    int32_t i;
    memset(bits, 0xA5, sizeof(bits));
    tinyc_pack_mask(size, y, lo, hi, bits);
    for (i = 0; i < size; ++i) {
        const int want = y[i] > lo && y[i] < hi;
        if (((bits[i >> 3] >> (i & 7)) & 1) != want) {
            printf("pack_mask: size %d lo %d hi %d element %d (%d): bit %d\n", (int)size,
                   (int)lo, (int)hi, (int)i, (int)y[i], !want);
            return 1;
        }
    }
    for (i = size; i < 8 * ((size + 7) / 8); ++i) {   /* the last byte's unused bits: 0 */
        if ((bits[i >> 3] >> (i & 7)) & 1) {
            printf("pack_mask: size %d: bit %d past the end is set\n", (int)size, (int)i);
            return 1;
        }
    }
    if (bits[(size + 7) / 8] != 0xA5) {
        printf("pack_mask: size %d: wrote past its bytes\n", (int)size);
        return 1;
    }
    return 0;
}

static int check_grad_mask(const float *g, const uint8_t *bits, int32_t size, int in_place)
{
    static float buf[300], out[300];
    int32_t i;
    memcpy(buf, g, (size_t)size * sizeof(float));
    tinyc_grad_mask_bits(size, buf, bits, in_place ? buf : out);
    for (i = 0; i < size; ++i) {
        const float want = ((bits[i >> 3] >> (i & 7)) & 1) ? g[i] : 0.0f;
        const float got = in_place ? buf[i] : out[i];
        if (memcmp(&got, &want, sizeof(float)) != 0) {
            printf("grad_mask_bits: size %d in place %d element %d\n", (int)size, in_place,
                   (int)i);
            return 1;
        }
    }
    return 0;
}

static int check_fold(const int8_t *w, int32_t out_c, int32_t filter, int32_t zp)
{
    int32_t bias[8], got[8], o, i;
    for (o = 0; o < out_c; ++o) {
        bias[o] = (int32_t)(next() << 8) - (1 << 30);
    }
    tinyc_fold_bias(out_c, filter, zp, w, bias, got);
    for (o = 0; o < out_c; ++o) {
        int32_t sum = 0;
        for (i = 0; i < filter; ++i) {
            sum += w[o * filter + i];
        }
        if (got[o] != (int32_t)((uint32_t)bias[o] - (uint32_t)zp * (uint32_t)sum)) {
            printf("fold_bias: filter %d zp %d channel %d\n", (int)filter, (int)zp, (int)o);
            return 1;
        }
    }
    return 0;
}

int main(void)
{
    static int8_t y[300], w[8 * 1000 + 4];
    static const int32_t zps[] = {-128, 127, 0, -5, 1};
    long cases = 0;
    int32_t i, lo, hi, size, off, filter, k;
    for (i = 0; i < 256; ++i) {   /* every value, in a shuffled order */
        y[i] = (int8_t)(i - 128);
    }
    for (i = 255; i > 0; --i) {
        const int32_t j = (int32_t)(next() % (uint32_t)(i + 1));
        const int8_t t = y[i];
        y[i] = y[j];
        y[j] = t;
    }
    for (lo = -130; lo <= 129; ++lo) {
        for (hi = -130; hi <= 129; ++hi) {
            for (off = 0; off < 256; off += 64) {   /* 64 values from 4 places */
                if (check_mask(y + off, 64, lo, hi)) {
                    return 1;
                }
                ++cases;
            }
        }
    }
    for (size = 0; size <= 41; ++size) {   /* partial bytes, unaligned starts */
        for (off = 0; off < 4; ++off) {
            for (k = 0; k < 4; ++k) {
                static const int32_t bounds[][2] = {{-128, 127}, {-128, 0}, {3, 9}, {-1, 128}};
                if (check_mask(y + 100 + off + size, size, bounds[k][0], bounds[k][1])) {
                    return 1;
                }
                ++cases;
            }
        }
    }
    {
        static float g[300];
        static uint8_t bits[40];
        static const uint32_t specials[] = {0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00001u,
                                            0x00000001u};
        for (i = 0; i < 300; ++i) {
            const uint32_t u = i % 7 == 0 ? specials[(i / 7) % 5] : next() ^ (next() << 24);
            memcpy(&g[i], &u, sizeof(u));
        }
        for (k = 0; k < 40; ++k) {   /* all set, all clear, mixed */
            bits[k] = (uint8_t)(k % 3 == 0 ? 0xFF : (k % 3 == 1 ? 0x00 : next()));
        }
        for (size = 0; size <= 300; size += (size < 20 ? 1 : 37)) {
            if (check_grad_mask(g, bits, size, 0) || check_grad_mask(g, bits, size, 1)) {
                return 1;
            }
            cases += 2;
        }
    }
    for (i = 0; i < (int32_t)sizeof(w); ++i) {
        w[i] = (int8_t)(next() & 0xFF);
    }
    for (filter = 1; filter <= 70; ++filter) {
        for (k = 0; k < 5; ++k) {
            if (check_fold(w + (filter & 3), 8, filter, zps[k])) {
                return 1;
            }
            ++cases;
        }
    }
    memset(w, -128, sizeof(w));   /* the largest sums */
    for (k = 0; k < 5; ++k) {
        if (check_fold(w, 8, 1000, zps[k]) || check_fold(w + 1, 3, 1000, zps[k])) {
            return 1;
        }
        cases += 2;
    }
    memset(w, 127, sizeof(w));
    if (check_fold(w + 2, 8, 999, -128)) {
        return 1;
    }
    ++cases;
    printf("%ld cases equal\n", cases);
    return 0;
}
