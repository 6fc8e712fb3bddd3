/* Element-wise and data-movement gradients (float32), and the channel selection that keeps the
 * input of a partially updated layer. */
#include <string.h>

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

void tinyc_pack_mask(int32_t size, const int8_t *y, int32_t lo, int32_t hi, uint8_t *bits)
{
    int32_t i;
    memset(bits, 0, (size_t)((size + 7) / 8));
    for (i = 0; i < size; ++i) {
        const int32_t v = y[i];
        if (v > lo && v < hi) {
            bits[i >> 3] = (uint8_t)(bits[i >> 3] | (1u << (i & 7)));
        }
    }
}

void tinyc_grad_mask_bits(int32_t size, const float *g, const uint8_t *bits, float *out)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
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
