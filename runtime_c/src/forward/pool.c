/* int8 average / max pooling (TFLite reference integer_ops pooling arithmetic), NHWC. */
#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"

void tinyc_avg_pool(const tinyc_pool_params *p, const int8_t *in, int8_t *out)
{
    const int32_t c = p->channels;
    int32_t oy, ox, ch, y, x;
    for (oy = 0; oy < p->out_h; ++oy) {
        for (ox = 0; ox < p->out_w; ++ox) {
            const tinyc_window w = tinyc_pool_window(p, oy, ox);
            const int32_t valid = (w.y1 - w.y0) * (w.x1 - w.x0);
            int8_t *o = out + (oy * p->out_w + ox) * c;
            for (ch = 0; ch < c; ++ch) {
                int32_t sum = 0;
                int32_t count = valid;
                for (y = w.y0; y < w.y1; ++y) {
                    const int8_t *row = in + (y * p->in_w) * c + ch;
                    for (x = w.x0; x < w.x1; ++x) {
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
        for (ox = 0; ox < p->out_w; ++ox) {
            const tinyc_window w = tinyc_pool_window(p, oy, ox);
            int8_t *o = out + (oy * p->out_w + ox) * c;
            for (ch = 0; ch < c; ++ch) {
                int32_t m = TINYC_INT8_MIN;
                for (y = w.y0; y < w.y1; ++y) {
                    const int8_t *row = in + (y * p->in_w) * c + ch;
                    for (x = w.x0; x < w.x1; ++x) {
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

void tinyc_mean(const tinyc_mean_params *p, const int8_t *in, int8_t *out)
{
    const int32_t c = p->channels;
    int32_t ch, i;
    for (ch = 0; ch < c; ++ch) {
        int32_t sum = 0;
        for (i = 0; i < p->pixels; ++i) {
            sum += in[i * c + ch];
        }
        sum = tinyc_mbqm(sum - p->in_zp * p->pixels, p->mult, p->shift) + p->out_zp;
        out[ch] = (int8_t)tinyc_clamp_i32(sum, TINYC_INT8_MIN, TINYC_INT8_MAX);
    }
}
