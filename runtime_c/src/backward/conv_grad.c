/* Input gradient of a convolution (and of a fully connected layer, a 1x1 conv on a 1x1 image),
 * float32, NHWC activations, int8 OHWI weights with per-output-channel scales. */
#include <string.h>

#include "tinyc/train.h"

void tinyc_conv2d_grad_input(const tinyc_conv_grad_params *p, const float *gy,
                             const int8_t *weights, const float *w_scale, float *gx)
{
    const int32_t cin_g = p->in_c / p->groups;
    const int32_t cout_g = p->out_c / p->groups;
    int32_t o, ky, kx, oy, ox, i;
    memset(gx, 0, (size_t)(p->in_h * p->in_w * p->in_c) * sizeof(float));
    for (o = 0; o < p->out_c; ++o) {
        const int32_t c0 = (o / cout_g) * cin_g;
        const float s = w_scale[o];
        for (ky = 0; ky < p->kernel_h; ++ky) {
            for (kx = 0; kx < p->kernel_w; ++kx) {
                const int8_t *w = weights + ((o * p->kernel_h + ky) * p->kernel_w + kx) * cin_g;
                for (oy = 0; oy < p->out_h; ++oy) {
                    const int32_t iy = oy * p->stride_h - p->pad_top + ky * p->dilation_h;
                    if (iy < 0 || iy >= p->in_h) {
                        continue;   /* a padded position: its gradient is dropped */
                    }
                    for (ox = 0; ox < p->out_w; ++ox) {
                        const int32_t ix = ox * p->stride_w - p->pad_left + kx * p->dilation_w;
                        const float g = gy[(oy * p->out_w + ox) * p->out_c + o];
                        float *d;
                        /* g == 0 adds +-0 to a sum that is never -0: skipping it is exact */
                        if (ix < 0 || ix >= p->in_w || g == 0.0f) {
                            continue;
                        }
                        d = gx + (iy * p->in_w + ix) * p->in_c + c0;
                        for (i = 0; i < cin_g; ++i) {
                            const float wr = s * (float)w[i];
                            const float t = g * wr;
                            d[i] = d[i] + t;
                        }
                    }
                }
            }
        }
    }
}
