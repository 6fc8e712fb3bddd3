/* int8 depthwise convolution (TFLite reference DepthwiseConvPerChannel arithmetic), NHWC.
 * Weights are tinyc's OHWI with one input channel per group: (out_c, kh, kw, 1);
 * output channel oc reads input channel oc / depth_multiplier. */
#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"

/* One output channel from a gathered input plane `plane` (in_h x in_w, stride 1). */
static void dw_plane(const tinyc_conv_params *p, const int8_t *plane, const int8_t *wk,
                     int32_t bias, int32_t mult, int32_t shift, int8_t *out, int32_t out_stride)
{
    const int32_t in_off = -p->in_zp;
    int32_t oy, ox, ky, kx;
    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            int32_t acc = 0;
            for (ky = 0; ky < p->kernel_h; ++ky) {
                const int32_t iy = iy0 + ky * p->dilation_h;
                const int8_t *row;
                const int8_t *wrow;
                if (iy < 0 || iy >= p->in_h) {
                    continue;
                }
                row = plane + iy * p->in_w;
                wrow = wk + ky * p->kernel_w;
                for (kx = 0; kx < p->kernel_w; ++kx) {
                    const int32_t ix = ix0 + kx * p->dilation_w;
                    if (ix < 0 || ix >= p->in_w) {
                        continue;
                    }
                    acc += ((int32_t)row[ix] + in_off) * (int32_t)wrow[kx];
                }
            }
            acc += bias;
            acc = tinyc_mbqm(acc, mult, shift) + p->out_zp;
            out[(oy * p->out_w + ox) * out_stride] =
                (int8_t)tinyc_clamp_i32(acc, p->act_min, p->act_max);
        }
    }
}

void tinyc_depthwise_conv(const tinyc_conv_params *p, const int8_t *in, const int8_t *weights,
                          const int32_t *bias, const int32_t *mult, const int32_t *shift,
                          int8_t *out)
{
    const int32_t depth_mult = p->out_c / p->in_c;
    const int32_t ksize = p->kernel_h * p->kernel_w;
    const int32_t in_off = -p->in_zp;
    int32_t oy, ox, ic, m, ky, kx;

    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            int8_t *o = out + (oy * p->out_w + ox) * p->out_c;
            for (ic = 0; ic < p->in_c; ++ic) {
                for (m = 0; m < depth_mult; ++m) {
                    const int32_t oc = ic * depth_mult + m;
                    const int8_t *wk = weights + oc * ksize;
                    int32_t acc = 0;
                    for (ky = 0; ky < p->kernel_h; ++ky) {
                        const int32_t iy = iy0 + ky * p->dilation_h;
                        if (iy < 0 || iy >= p->in_h) {
                            continue;
                        }
                        for (kx = 0; kx < p->kernel_w; ++kx) {
                            const int32_t ix = ix0 + kx * p->dilation_w;
                            if (ix < 0 || ix >= p->in_w) {
                                continue;
                            }
                            acc += ((int32_t)in[(iy * p->in_w + ix) * p->in_c + ic] + in_off) *
                                   (int32_t)wk[ky * p->kernel_w + kx];
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
}

void tinyc_depthwise_conv_inplace(const tinyc_conv_params *p, int8_t *buf,
                                  const int8_t *weights, const int32_t *bias,
                                  const int32_t *mult, const int32_t *shift, int8_t *scratch)
{
    const int32_t channels = p->in_c;   /* == out_c */
    const int32_t plane = p->in_h * p->in_w;
    const int32_t ksize = p->kernel_h * p->kernel_w;
    int32_t c, i;

    for (c = 0; c < channels; ++c) {
        for (i = 0; i < plane; ++i) {
            scratch[i] = buf[i * channels + c];
        }
        dw_plane(p, scratch, weights + c * ksize, bias ? bias[c] : 0, mult[c], shift[c],
                 buf + c, channels);
    }
}
