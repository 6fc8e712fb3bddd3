/* int8 average / max pooling (TFLite reference integer_ops pooling arithmetic), NHWC. */
#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"

void tinyc_avg_pool(const tinyc_pool_params *p, const int8_t *in, int8_t *out)
{
    const int32_t c = p->channels;
    int32_t oy, ox, ch, y, x;
    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        const int32_t y_start = iy0 < 0 ? 0 : iy0;
        const int32_t y_end = iy0 + p->kernel_h > p->in_h ? p->in_h : iy0 + p->kernel_h;
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            const int32_t x_start = ix0 < 0 ? 0 : ix0;
            const int32_t x_end = ix0 + p->kernel_w > p->in_w ? p->in_w : ix0 + p->kernel_w;
            const int32_t valid = (y_end - y_start) * (x_end - x_start);
            int8_t *o = out + (oy * p->out_w + ox) * c;
            for (ch = 0; ch < c; ++ch) {
                int32_t sum = 0;
                int32_t count = valid;
                for (y = y_start; y < y_end; ++y) {
                    const int8_t *row = in + (y * p->in_w) * c + ch;
                    for (x = x_start; x < x_end; ++x) {
                        sum += row[x * c];
                    }
                }
                if (p->count_include_pad) {
                    count = p->kernel_h * p->kernel_w;
                    sum += (count - valid) * p->zero_point;
                }
                if (count <= 0) {
                    sum = p->zero_point;   /* window entirely outside (never for valid shapes) */
                } else if (sum > 0) {
                    sum = (sum + count / 2) / count;
                } else {
                    sum = (sum - count / 2) / count;
                }
                o[ch] = (int8_t)tinyc_clamp_i32(sum, p->act_min, p->act_max);
            }
        }
    }
}

void tinyc_max_pool(const tinyc_pool_params *p, const int8_t *in, int8_t *out)
{
    const int32_t c = p->channels;
    int32_t oy, ox, ch, y, x;
    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        const int32_t y_start = iy0 < 0 ? 0 : iy0;
        const int32_t y_end = iy0 + p->kernel_h > p->in_h ? p->in_h : iy0 + p->kernel_h;
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            const int32_t x_start = ix0 < 0 ? 0 : ix0;
            const int32_t x_end = ix0 + p->kernel_w > p->in_w ? p->in_w : ix0 + p->kernel_w;
            int8_t *o = out + (oy * p->out_w + ox) * c;
            for (ch = 0; ch < c; ++ch) {
                int32_t m = TINYC_INT8_MIN;
                for (y = y_start; y < y_end; ++y) {
                    const int8_t *row = in + (y * p->in_w) * c + ch;
                    for (x = x_start; x < x_end; ++x) {
                        if (row[x * c] > m) {
                            m = row[x * c];
                        }
                    }
                }
                o[ch] = (int8_t)tinyc_clamp_i32(m, p->act_min, p->act_max);
            }
        }
    }
}
