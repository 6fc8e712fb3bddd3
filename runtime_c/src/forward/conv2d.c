/* Generic int8 2-D convolution (TFLite reference ConvPerChannel arithmetic), NHWC / OHWI. */
#include <string.h>

#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"

void tinyc_conv2d(const tinyc_conv_params *p, const int8_t *in, const int8_t *weights,
                  const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out)
{
    const int32_t cin_g = p->in_c / p->groups;
    const int32_t cout_g = p->out_c / p->groups;
    const int32_t in_off = -p->in_zp;
    const int32_t filter_size = p->kernel_h * p->kernel_w * cin_g;
    int32_t oy, ox, oc, ky, kx, ic;

    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            int8_t *o = out + (oy * p->out_w + ox) * p->out_c;
            for (oc = 0; oc < p->out_c; ++oc) {
                const int32_t c0 = (oc / cout_g) * cin_g;
                const int8_t *wk = weights + oc * filter_size;
                int32_t acc = 0;
                for (ky = 0; ky < p->kernel_h; ++ky) {
                    const int32_t iy = iy0 + ky * p->dilation_h;
                    if (iy < 0 || iy >= p->in_h) {
                        continue;   /* padding contributes 0 */
                    }
                    for (kx = 0; kx < p->kernel_w; ++kx) {
                        const int32_t ix = ix0 + kx * p->dilation_w;
                        const int8_t *px;
                        const int8_t *pw;
                        if (ix < 0 || ix >= p->in_w) {
                            continue;
                        }
                        px = in + (iy * p->in_w + ix) * p->in_c + c0;
                        pw = wk + (ky * p->kernel_w + kx) * cin_g;
                        for (ic = 0; ic < cin_g; ++ic) {
                            acc += ((int32_t)px[ic] + in_off) * (int32_t)pw[ic];
                        }
                    }
                }
                if (bias) {
                    acc += bias[oc];
                }
                acc = tinyc_mbqm(acc, mult[oc], shift[oc]) + p->out_zp;
                o[oc] = (int8_t)tinyc_clamp_i32(acc, p->act_min, p->act_max);
            }
        }
    }
}

/* All output channels of one pixel of a pointwise conv. */
static void pointwise_pixel(const tinyc_conv_params *p, const int8_t *px, const int8_t *weights,
                            const int32_t *bias, const int32_t *mult, const int32_t *shift,
                            int8_t *o)
{
    const int32_t cin = p->in_c;
    const int32_t in_off = -p->in_zp;
    int32_t oc, ic;
    for (oc = 0; oc < p->out_c; ++oc) {
        const int8_t *pw = weights + oc * cin;
        int32_t acc = 0;
        for (ic = 0; ic < cin; ++ic) {
            acc += ((int32_t)px[ic] + in_off) * (int32_t)pw[ic];
        }
        if (bias) {
            acc += bias[oc];
        }
        acc = tinyc_mbqm(acc, mult[oc], shift[oc]) + p->out_zp;
        o[oc] = (int8_t)tinyc_clamp_i32(acc, p->act_min, p->act_max);
    }
}

void tinyc_conv2d_1x1(const tinyc_conv_params *p, const int8_t *in, const int8_t *weights,
                      const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out)
{
    const int32_t pixels = p->out_h * p->out_w;
    int32_t i;
    for (i = 0; i < pixels; ++i) {
        pointwise_pixel(p, in + i * p->in_c, weights, bias, mult, shift, out + i * p->out_c);
    }
}

void tinyc_conv2d_1x1_inplace(const tinyc_conv_params *p, int8_t *buf, const int8_t *weights,
                              const int32_t *bias, const int32_t *mult, const int32_t *shift,
                              int8_t *scratch)
{
    const int32_t pixels = p->out_h * p->out_w;
    int32_t i;
    if (p->out_c > p->in_c) {
        /* expanding: output pixel i covers input bytes of pixels >= i only, so go backwards */
        for (i = pixels - 1; i >= 0; --i) {
            memcpy(scratch, buf + i * p->in_c, (size_t)p->in_c);
            pointwise_pixel(p, scratch, weights, bias, mult, shift, buf + i * p->out_c);
        }
    } else {
        /* shrinking: output pixel i covers input bytes of pixels <= i only, so go forwards */
        for (i = 0; i < pixels; ++i) {
            memcpy(scratch, buf + i * p->in_c, (size_t)p->in_c);
            pointwise_pixel(p, scratch, weights, bias, mult, shift, buf + i * p->out_c);
        }
    }
}
