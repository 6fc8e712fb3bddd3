/* Input gradient of a convolution (and of a fully connected layer, a 1x1 conv on a 1x1 image),
 * float32, NHWC activations, int8 OHWI weights with per-output-channel scales. */
#include <string.h>

#include "tinyc/train.h"

/* d[i] += g * (s * w_i) for the cin_g channels of one tap, w_i from flash except at the n
 * kept channels (local indices kept[j] - c0), which come from sram[j]. */
static void add_tap(float *d, float g, float s, const int8_t *flash, const int8_t *sram,
                    const int32_t *kept, int32_t n, int32_t c0, int32_t cin_g)
{
    int32_t i = 0, j;
    for (j = 0; j <= n; ++j) {
        const int32_t stop = j < n ? kept[j] - c0 : cin_g;
        for (; i < stop; ++i) {
            const float wr = s * (float)flash[i];
            const float t = g * wr;
            d[i] = d[i] + t;
        }
        if (j < n) {
            const float wr = s * (float)sram[j];
            const float t = g * wr;
            d[i] = d[i] + t;
            ++i;
        }
    }
}

/* The input gradient over weights `flash` of which the kept channels of `split` (NULL: none)
 * are read from its SRAM array instead: every gx element gets its terms in (o, ky, kx, oy, ox)
 * order either way. */
static void grad_input(const tinyc_conv_grad_params *p, const float *gy, const int8_t *flash,
                       const tinyc_split_weights *split, const float *w_scale, float *gx)
{
    const int32_t cin_g = p->in_c / p->groups;
    const int32_t cout_g = p->out_c / p->groups;
    const int32_t taps = p->kernel_h * p->kernel_w;
    int32_t at = 0;   /* split->sram + at: output channel o's kept weights */
    int32_t o, ky, kx, oy, ox, j0 = 0, n = 0;
    memset(gx, 0, (size_t)(p->in_h * p->in_w * p->in_c) * sizeof(float));
    for (o = 0; o < p->out_c; at += taps * n, ++o) {
        const int32_t c0 = (o / cout_g) * cin_g;
        const float s = w_scale[o];
        if (split && o % cout_g == 0) {
            n = tinyc_split_group(split, o / cout_g, &j0);
        }
        for (ky = 0; ky < p->kernel_h; ++ky) {
            for (kx = 0; kx < p->kernel_w; ++kx) {
                const int32_t t = ky * p->kernel_w + kx;
                const int8_t *w = flash + (o * taps + t) * cin_g;
                for (oy = 0; oy < p->out_h; ++oy) {
                    const int32_t iy = oy * p->stride_h - p->pad_top + ky * p->dilation_h;
                    if (iy < 0 || iy >= p->in_h) {
                        continue;   /* a padded position: its gradient is dropped */
                    }
                    for (ox = 0; ox < p->out_w; ++ox) {
                        const int32_t ix = ox * p->stride_w - p->pad_left + kx * p->dilation_w;
                        const float g = gy[(oy * p->out_w + ox) * p->out_c + o];
                        /* g == 0 adds +-0 to a sum that is never -0: skipping it is exact */
                        if (ix < 0 || ix >= p->in_w || g == 0.0f) {
                            continue;
                        }
                        add_tap(gx + (iy * p->in_w + ix) * p->in_c + c0, g, s, w,
                                split ? split->sram + at + t * n : NULL,
                                split ? split->channels + j0 : NULL, n, c0, cin_g);
                    }
                }
            }
        }
    }
}

void tinyc_conv2d_grad_input(const tinyc_conv_grad_params *p, const float *gy,
                             const int8_t *weights, const float *w_scale, float *gx)
{
    grad_input(p, gy, weights, NULL, w_scale, gx);
}

void tinyc_conv2d_grad_input_split(const tinyc_conv_grad_params *p, const float *gy,
                                   const tinyc_split_weights *weights, const float *w_scale,
                                   float *gx)
{
    grad_input(p, gy, weights->flash, weights, w_scale, gx);
}

/* gx[iy, ix] of one channel of a depthwise conv: the terms tinyc_conv2d_grad_input adds to 0,
 * in its (ky, kx) order; gy(oy, ox) is src[q * step] with q = oy * out_w + ox, and src is
 * `saved` for the first n_saved pixels (a copy made before they were overwritten), else gy. */
static float depthwise_grad_at(const tinyc_conv_grad_params *p, const float *gy,
                               const float *saved, int32_t n_saved, int32_t step,
                               const int8_t *w, float s, int32_t iy, int32_t ix)
{
    float d = 0.0f;
    int32_t ky, kx;
    for (ky = 0; ky < p->kernel_h; ++ky) {
        const int32_t ty = iy + p->pad_top - ky * p->dilation_h;
        int32_t oy;
        if (ty < 0 || ty % p->stride_h != 0 || (oy = ty / p->stride_h) >= p->out_h) {
            continue;
        }
        for (kx = 0; kx < p->kernel_w; ++kx) {
            const int32_t tx = ix + p->pad_left - kx * p->dilation_w;
            int32_t ox, q;
            float g;
            if (tx < 0 || tx % p->stride_w != 0 || (ox = tx / p->stride_w) >= p->out_w) {
                continue;
            }
            q = oy * p->out_w + ox;
            g = q < n_saved ? saved[q * step] : gy[q * step];
            if (g != 0.0f) {
                const float wr = s * (float)w[ky * p->kernel_w + kx];
                const float t = g * wr;
                d = d + t;
            }
        }
    }
    return d;
}

void tinyc_depthwise_grad_input_inplace(const tinyc_conv_grad_params *p, float *buf,
                                        const int8_t *weights, const float *w_scale,
                                        float *scratch)
{
    const int32_t c_n = p->in_c;
    const int32_t taps = p->kernel_h * p->kernel_w;
    const int32_t plane = p->out_h * p->out_w;
    int32_t c, i, iy, ix;
    for (c = 0; c < c_n; ++c) {
        for (i = 0; i < plane; ++i) {
            scratch[i] = buf[i * c_n + c];   /* gy's channel c: gx[., c] overwrites it */
        }
        for (iy = 0; iy < p->in_h; ++iy) {
            for (ix = 0; ix < p->in_w; ++ix) {
                buf[(iy * p->in_w + ix) * c_n + c] =
                    depthwise_grad_at(p, scratch, NULL, 0, 1, weights + c * taps, w_scale[c], iy, ix);
            }
        }
    }
}

void tinyc_depthwise_grad_input_backwards(const tinyc_conv_grad_params *p, float *buf,
                                          const int8_t *weights, const float *w_scale,
                                          int32_t n_saved, float *scratch)
{
    const int32_t c_n = p->in_c;
    const int32_t taps = p->kernel_h * p->kernel_w;
    int32_t px, c;
    if (n_saved > 0) {
        memcpy(scratch, buf, (size_t)(n_saved * c_n) * sizeof(float));
    }
    for (px = p->in_h * p->in_w - 1; px >= 0; --px) {
        const int32_t iy = px / p->in_w;
        const int32_t ix = px % p->in_w;
        for (c = 0; c < c_n; ++c) {
            /* gy[px, c], overwritten here, is read by no pixel still to come (lower px) unless
             * px < n_saved, and those are read from the copy */
            const float d = depthwise_grad_at(p, buf + c, scratch + c, n_saved, c_n,
                                              weights + c * taps, w_scale[c], iy, ix);
            buf[px * c_n + c] = d;
        }
    }
}

void tinyc_pointwise_grad_input_inplace(const tinyc_conv_grad_params *p, float *buf,
                                        const int8_t *weights, const float *w_scale,
                                        float *scratch)
{
    const int32_t cin = p->in_c;
    const int32_t cout = p->out_c;
    const int32_t pixels = p->in_h * p->in_w;
    /* shrinking (cout >= cin): pixel p's gx ends before gy's next pixel, so go forwards;
     * expanding: it starts after gy's previous pixels, so go backwards */
    const int32_t first = cout >= cin ? 0 : pixels - 1;
    const int32_t step = cout >= cin ? 1 : -1;
    int32_t n, px, i, o;
    for (n = 0, px = first; n < pixels; ++n, px += step) {
        const float *gy = buf + px * cout;
        for (i = 0; i < cin; ++i) {
            /* the terms tinyc_conv2d_grad_input adds to gx[px, i], in its o order */
            float d = 0.0f;
            for (o = 0; o < cout; ++o) {
                const float g = gy[o];
                if (g != 0.0f) {
                    const float wr = w_scale[o] * (float)weights[o * cin + i];
                    const float t = g * wr;
                    d = d + t;
                }
            }
            scratch[i] = d;
        }
        memcpy(buf + px * cin, scratch, (size_t)cin * sizeof(float));
    }
}
