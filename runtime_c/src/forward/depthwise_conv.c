/* int8 depthwise convolution (TFLite reference DepthwiseConvPerChannel arithmetic), NHWC.
 * Weights are tinyc's OHWI with one input channel per group: (out_c, kh, kw, 1);
 * output channel oc reads input channel oc / depth_multiplier.
 *
 * One output channel is computed at a time from one input plane. Windows fully inside the input
 * use sum((x - zp) * w) = sum(x * w) - zp * sum(w) and no bounds checks; border windows skip the
 * padded taps (they contribute 0). Both give TFLite's int32 accumulator exactly. */
#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"

/* first output index whose window starts inside (>= 0), and one past the last whose window ends
 * inside (< size), clamped to [0, out] */
static void interior_range(int32_t out, int32_t size, int32_t kernel, int32_t stride,
                           int32_t pad, int32_t dilation, int32_t *lo, int32_t *hi)
{
    const int32_t span = (kernel - 1) * dilation;
    int32_t a = (pad + stride - 1) / stride;
    int32_t b = size - 1 - span + pad;
    b = b < 0 ? 0 : b / stride + 1;
    *lo = a > out ? out : a;
    *hi = b > out ? out : b;
    if (*hi < *lo) {
        *hi = *lo;
    }
}

/* One output channel from input plane `plane` (element (y, x) at plane[(y * in_w + x) *
 * in_stride]), written to out[(oy * out_w + ox) * out_stride]. */
static void dw_plane(const tinyc_conv_params *p, const int8_t *plane, int32_t in_stride,
                     const int8_t *wk, int32_t bias, int32_t mult, int32_t shift, int8_t *out,
                     int32_t out_stride)
{
    const int32_t in_off = -p->in_zp;
    const int32_t kh = p->kernel_h, kw = p->kernel_w;
    const int32_t dy = p->dilation_h * p->in_w * in_stride;
    const int32_t dx = p->dilation_w * in_stride;
    int32_t wsum = 0, y_lo, y_hi, x_lo, x_hi, oy, ox, ky, kx, i;

    for (i = 0; i < kh * kw; ++i) {
        wsum += wk[i];
    }
    interior_range(p->out_h, p->in_h, kh, p->stride_h, p->pad_top, p->dilation_h, &y_lo, &y_hi);
    interior_range(p->out_w, p->in_w, kw, p->stride_w, p->pad_left, p->dilation_w, &x_lo, &x_hi);

    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        const int y_inside = oy >= y_lo && oy < y_hi;
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            int32_t acc = bias;
            if (y_inside && ox >= x_lo && ox < x_hi) {
                const int8_t *row = plane + (iy0 * p->in_w + ix0) * in_stride;
                const int8_t *w = wk;
                acc += in_off * wsum;
                for (ky = 0; ky < kh; ++ky, row += dy, w += kw) {
                    const int8_t *px = row;
                    for (kx = 0; kx < kw; ++kx, px += dx) {
                        acc += (int32_t)*px * w[kx];
                    }
                }
            } else {
                for (ky = 0; ky < kh; ++ky) {
                    const int32_t iy = iy0 + ky * p->dilation_h;
                    if (iy < 0 || iy >= p->in_h) {
                        continue;   /* padding contributes 0 */
                    }
                    for (kx = 0; kx < kw; ++kx) {
                        const int32_t ix = ix0 + kx * p->dilation_w;
                        if (ix < 0 || ix >= p->in_w) {
                            continue;
                        }
                        acc += ((int32_t)plane[(iy * p->in_w + ix) * in_stride] + in_off) *
                               (int32_t)wk[ky * kw + kx];
                    }
                }
            }
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
    int32_t oc;
    for (oc = 0; oc < p->out_c; ++oc) {
        dw_plane(p, in + oc / depth_mult, p->in_c, weights + oc * ksize, bias ? bias[oc] : 0,
                 mult[oc], shift[oc], out + oc, p->out_c);
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
        dw_plane(p, scratch, 1, weights + c * ksize, bias ? bias[c] : 0, mult[c], shift[c],
                 buf + c, channels);
    }
}
