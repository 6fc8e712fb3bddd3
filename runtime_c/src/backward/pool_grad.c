/* Gradients of average and max pooling (float32, NHWC). */
#include <string.h>

#include "tinyc/train.h"

void tinyc_avg_pool_grad(const tinyc_pool_params *p, const float *gy, float *gx)
{
    const int32_t c = p->channels;
    int32_t ky, kx, oy, ox, ch;
    memset(gx, 0, (size_t)(p->in_h * p->in_w * c) * sizeof(float));
    for (ky = 0; ky < p->kernel_h; ++ky) {
        for (kx = 0; kx < p->kernel_w; ++kx) {
            for (oy = 0; oy < p->out_h; ++oy) {
                const int32_t iy0 = oy * p->stride_h - p->pad_top;
                const int32_t iy = iy0 + ky;
                int32_t count_h;
                if (iy < 0 || iy >= p->in_h) {
                    continue;
                }
                count_h = (iy0 + p->kernel_h > p->in_h ? p->in_h : iy0 + p->kernel_h)
                          - (iy0 < 0 ? 0 : iy0);
                for (ox = 0; ox < p->out_w; ++ox) {
                    const int32_t ix0 = ox * p->stride_w - p->pad_left;
                    const int32_t ix = ix0 + kx;
                    const float *g = gy + (oy * p->out_w + ox) * c;
                    float *d = gx + (iy * p->in_w + ix) * c;
                    float count;
                    if (ix < 0 || ix >= p->in_w) {
                        continue;
                    }
                    if (p->count_include_pad) {
                        count = (float)(p->kernel_h * p->kernel_w);
                    } else {
                        const int32_t count_w = (ix0 + p->kernel_w > p->in_w ? p->in_w
                                                 : ix0 + p->kernel_w) - (ix0 < 0 ? 0 : ix0);
                        count = (float)(count_h * count_w);
                    }
                    for (ch = 0; ch < c; ++ch) {
                        d[ch] = d[ch] + g[ch] / count;
                    }
                }
            }
        }
    }
}

void tinyc_max_pool_grad(const tinyc_pool_params *p, const float *gy, const int8_t *x,
                         float *gx)
{
    const int32_t c = p->channels;
    int32_t oy, ox, ch, y, xx;
    memset(gx, 0, (size_t)(p->in_h * p->in_w * c) * sizeof(float));
    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        const int32_t y_start = iy0 < 0 ? 0 : iy0;
        const int32_t y_end = iy0 + p->kernel_h > p->in_h ? p->in_h : iy0 + p->kernel_h;
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            const int32_t x_start = ix0 < 0 ? 0 : ix0;
            const int32_t x_end = ix0 + p->kernel_w > p->in_w ? p->in_w : ix0 + p->kernel_w;
            const float *g = gy + (oy * p->out_w + ox) * c;
            for (ch = 0; ch < c; ++ch) {
                int32_t best = -129;
                int32_t arg = -1;
                for (y = y_start; y < y_end; ++y) {
                    for (xx = x_start; xx < x_end; ++xx) {
                        const int32_t at = (y * p->in_w + xx) * c + ch;
                        if (x[at] > best) {   /* strictly greater: the first maximum wins */
                            best = x[at];
                            arg = at;
                        }
                    }
                }
                if (arg >= 0) {
                    gx[arg] = gx[arg] + g[ch];
                }
            }
        }
    }
}
