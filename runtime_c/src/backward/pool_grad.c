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
                const int32_t iy = oy * p->stride_h - p->pad_top + ky;
                if (iy < 0 || iy >= p->in_h) {
                    continue;
                }
                for (ox = 0; ox < p->out_w; ++ox) {
                    const int32_t ix = ox * p->stride_w - p->pad_left + kx;
                    const float *g = gy + (oy * p->out_w + ox) * c;
                    float *d = gx + (iy * p->in_w + ix) * c;
                    tinyc_window w;
                    float count;
                    if (ix < 0 || ix >= p->in_w) {
                        continue;
                    }
                    w = tinyc_pool_window(p, oy, ox);
                    count = (float)(p->count_include_pad ? p->kernel_h * p->kernel_w
                                                         : (w.y1 - w.y0) * (w.x1 - w.x0));
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
        for (ox = 0; ox < p->out_w; ++ox) {
            const tinyc_window w = tinyc_pool_window(p, oy, ox);
            const float *g = gy + (oy * p->out_w + ox) * c;
            for (ch = 0; ch < c; ++ch) {
                int32_t best = -129;
                int32_t arg = -1;
                for (y = w.y0; y < w.y1; ++y) {
                    for (xx = w.x0; xx < w.x1; ++xx) {
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
