/* Element-wise and data-movement gradients (float32), and the channel selection that keeps the
 * input of a partially updated layer. */
#include <string.h>

#include "tinyc/simd.h"
#include "tinyc/train.h"

void tinyc_grad_mask(int32_t size, const float *g, const int8_t *y, int32_t lo, int32_t hi,
                     float *out)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        const int32_t v = y[i];
        out[i] = (v > lo && v < hi) ? g[i] : 0.0f;
    }
}

void tinyc_grad_lut(int32_t size, const float *g, const int8_t *x, const float *slope, float *out)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        out[i] = g[i] * slope[(int32_t)x[i] + 128];
    }
}

/* 1 if lo < v < hi: the sign bit of (v - hi) & (lo - v), both negative exactly then (no
 * branch; the differences fit an int32) */
#define MASK_BIT(v, lo, hi) ((uint32_t)(((int32_t)(v) - (hi)) & ((lo) - (int32_t)(v))) >> 31)

/* the bits of y[0..n) (n <= 8) */
static uint32_t mask_byte(const int8_t *y, int32_t n, int32_t lo, int32_t hi)
{
    uint32_t b = 0;
    int32_t k;
    for (k = 0; k < n; ++k) {
        b |= MASK_BIT(y[k], lo, hi) << k;
    }
    return b;
}

#if TINYC_USE_DSP
/* bit k of the result: lane k of m0 (0xFF or 0) for k < 4, lane k - 4 of m1 above. Keeping bit
 * 8k of m0's lanes and 8k + 4 of m1's, one multiply by 2^21 + 2^14 + 2^7 + 1 adds the word
 * shifted by 21, 14, 7 and 0, which moves them to 21 + k and 25 + k; every other copy lands on
 * a distinct bit outside 21..28, so the sum carries nothing into those eight. */
static uint32_t mask_lanes(uint32_t m0, uint32_t m1)
{
    const uint32_t t = (m0 & 0x01010101u) | (m1 & 0x10101010u);
    return (t * 0x00204081u) >> 21;
}
#endif

void tinyc_pack_mask(int32_t size, const int8_t *y, int32_t lo, int32_t hi, uint8_t *bits)
{
    int32_t i = 0;
#if TINYC_USE_DSP
    /* -128 <= lo + 1 <= v <= hi - 1 <= 127 in int8 lanes: four elements a word */
    if (lo + 1 >= -128 && lo + 1 <= hi - 1 && hi - 1 <= 127) {
        const uint32_t lo4 = (uint32_t)(uint8_t)(lo + 1) * 0x01010101u;
        const uint32_t hi4 = (uint32_t)(uint8_t)(hi - 1) * 0x01010101u;
        for (; i + 8 <= size; i += 8) {
            const uint32_t m0 = tinyc_in_range8(tinyc_read4(y + i), lo4, hi4);
            const uint32_t m1 = tinyc_in_range8(tinyc_read4(y + i + 4), lo4, hi4);
            bits[i >> 3] = (uint8_t)mask_lanes(m0, m1);
        }
    }
#endif
    for (; i + 8 <= size; i += 8) {   /* written out: gcc -O2 keeps mask_byte's loop */
        const int8_t *v = y + i;
        bits[i >> 3] = (uint8_t)(MASK_BIT(v[0], lo, hi) | MASK_BIT(v[1], lo, hi) << 1
                                 | MASK_BIT(v[2], lo, hi) << 2 | MASK_BIT(v[3], lo, hi) << 3
                                 | MASK_BIT(v[4], lo, hi) << 4 | MASK_BIT(v[5], lo, hi) << 5
                                 | MASK_BIT(v[6], lo, hi) << 6 | MASK_BIT(v[7], lo, hi) << 7);
    }
    if (i < size) {
        bits[i >> 3] = (uint8_t)mask_byte(y + i, size - i, lo, hi);
    }
}

void tinyc_grad_mask_bits(int32_t size, const float *g, const uint8_t *bits, float *out)
{
    int32_t i = 0, k;
    /* a byte at a time: all kept (in place: nothing to do) or none kept (eight zeros) are the
     * common bytes of a clamp's mask */
    for (; i + 8 <= size; i += 8) {
        const uint32_t b = bits[i >> 3];
        if (b == 0xFFu) {
            for (k = 0; out != g && k < 8; ++k) {
                out[i + k] = g[i + k];
            }
        } else if (b == 0u) {
            for (k = 0; k < 8; ++k) {
                out[i + k] = 0.0f;
            }
        } else {   /* g's bits or +0's, without a branch */
            for (k = 0; k < 8; ++k) {
                uint32_t v;
                float f;
                memcpy(&v, g + i + k, sizeof(v));
                v &= 0u - ((b >> k) & 1u);
                memcpy(&f, &v, sizeof(f));
                out[i + k] = f;
            }
        }
    }
    for (; i < size; ++i) {
        out[i] = ((bits[i >> 3] >> (i & 7)) & 1u) ? g[i] : 0.0f;
    }
}

void tinyc_grad_add(int32_t size, const float *a, const float *b, float *out)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        out[i] = a[i] + b[i];
    }
}

void tinyc_grad_copy(int32_t size, const float *g, float *out)
{
    if (g != out) {
        memmove(out, g, (size_t)size * sizeof(float));
    }
}

void tinyc_pad_grad(const tinyc_pad_params *p, const float *g, float *out)
{
    const int32_t c = p->channels;
    const int32_t padded_w = p->in_w + p->pad_left + p->pad_right;
    const size_t row = (size_t)(p->in_w * c) * sizeof(float);
    int32_t y;
    /* output row y comes from padded row y + pad_top: never behind it, so in place is safe */
    for (y = 0; y < p->in_h; ++y) {
        memmove(out + y * p->in_w * c, g + ((y + p->pad_top) * padded_w + p->pad_left) * c, row);
    }
}

void tinyc_slice_grad(int32_t pixels, int32_t in_c, int32_t out_c, int32_t c_offset,
                      const float *g, float *out)
{
    int32_t i;
    for (i = 0; i < pixels; ++i) {
        memmove(out + i * in_c, g + i * out_c + c_offset, (size_t)in_c * sizeof(float));
    }
}

void tinyc_grad_gather_channels(int32_t pixels, int32_t in_c, int32_t count,
                                const int32_t *channels, const float *g, float *out)
{
    int32_t i, j;
    memset(out, 0, (size_t)(pixels * in_c) * sizeof(float));
    for (i = 0; i < pixels; ++i) {
        const float *src = g + i * count;
        float *dst = out + i * in_c;
        for (j = 0; j < count; ++j) {
            dst[channels[j]] += src[j];
        }
    }
}

void tinyc_grad_mul(int32_t size, int32_t other_size, const float *g, const int8_t *other,
                    float scale, int32_t zero_point, float *out)
{
    int32_t i, k;
    for (i = 0; i < size; i += other_size) {
        for (k = 0; k < other_size; ++k) {
            out[i + k] = g[i + k] * (scale * (float)((int32_t)other[k] - zero_point));
        }
    }
}

void tinyc_grad_mul_gate(int32_t pixels, int32_t channels, const float *g, const int8_t *x,
                         float scale, int32_t zero_point, float *out)
{
    int32_t p, c;
    for (c = 0; c < channels; ++c) {
        out[c] = 0.0f;
    }
    for (p = 0; p < pixels; ++p) {
        for (c = 0; c < channels; ++c) {
            const int32_t at = p * channels + c;
            out[c] += g[at] * (scale * (float)((int32_t)x[at] - zero_point));
        }
    }
}

void tinyc_grad_transpose(const tinyc_transpose_params *p, const float *g, float *out)
{
    int32_t a, b, c;
    for (a = 0; a < p->d1; ++a) {
        for (b = 0; b < p->d2; ++b) {
            const float *src = g + a * p->s1 + b * p->s2;
            for (c = 0; c < p->d3; ++c) {
                *out++ = src[c * p->s3];
            }
        }
    }
}

void tinyc_crop_grad(const tinyc_pad_params *p, const float *g, float *out)
{
    const int32_t c = p->channels;
    const int32_t full_w = p->in_w + p->pad_left + p->pad_right;
    const int32_t full_h = p->in_h + p->pad_top + p->pad_bottom;
    int32_t y;
    memset(out, 0, (size_t)(full_h * full_w * c) * sizeof(float));
    for (y = 0; y < p->in_h; ++y) {
        memcpy(out + ((y + p->pad_top) * full_w + p->pad_left) * c, g + y * p->in_w * c,
               (size_t)(p->in_w * c) * sizeof(float));
    }
}
