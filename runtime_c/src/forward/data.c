/* int8 data movement: constant pad, channel concat, copy, window copy (patch schedules). */
#include <string.h>

#include "tinyc/kernels.h"

void tinyc_pad(const tinyc_pad_params *p, const int8_t *in, int8_t *out)
{
    const int32_t c = p->channels;
    const int32_t out_h = p->in_h + p->pad_top + p->pad_bottom;
    const int32_t out_w = p->in_w + p->pad_left + p->pad_right;
    const size_t row_bytes = (size_t)(p->in_w * c);
    int32_t y;
    memset(out, (int8_t)p->value, (size_t)(out_h * out_w * c));
    for (y = 0; y < p->in_h; ++y) {
        memcpy(out + ((y + p->pad_top) * out_w + p->pad_left) * c, in + y * p->in_w * c,
               row_bytes);
    }
}

void tinyc_concat_channels(int32_t pixels, int32_t in_c, int32_t out_c, int32_t c_offset,
                           const int8_t *in, int8_t *out)
{
    int32_t i;
    for (i = 0; i < pixels; ++i) {
        memcpy(out + i * out_c + c_offset, in + i * in_c, (size_t)in_c);
    }
}

void tinyc_copy(int32_t size, const int8_t *in, int8_t *out)
{
    if (in != out) {
        memmove(out, in, (size_t)size);
    }
}

void tinyc_copy_window(const tinyc_window_params *p, const int8_t *src, int8_t *dst)
{
    const int32_t c = p->channels;
    const size_t row_bytes = (size_t)(p->cols * c);
    int32_t y;
    for (y = 0; y < p->rows; ++y) {
        memmove(dst + ((p->dst_row0 + y) * p->dst_w + p->dst_col0) * c,
                src + ((p->src_row0 + y) * p->src_w + p->src_col0) * c, row_bytes);
    }
}

void tinyc_gather_channels(int32_t pixels, int32_t in_c, int32_t count, const int32_t *channels,
                           const int8_t *in, int8_t *out)
{
    int32_t i, j;
    for (i = 0; i < pixels; ++i) {
        const int8_t *src = in + i * in_c;
        int8_t *dst = out + i * count;
        for (j = 0; j < count; ++j) {
            dst[j] = src[channels[j]];
        }
    }
}

void tinyc_transpose(const tinyc_transpose_params *p, const int8_t *in, int8_t *out)
{
    int32_t a, b, c;
    for (a = 0; a < p->d1; ++a) {
        for (b = 0; b < p->d2; ++b) {
            const int8_t *src = in + a * p->s1 + b * p->s2;
            for (c = 0; c < p->d3; ++c) {
                *out++ = src[c * p->s3];
            }
        }
    }
}
