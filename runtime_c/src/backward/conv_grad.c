/* Input gradient of a convolution (and of a fully connected layer, a 1x1 conv on a 1x1 image),
 * float32, NHWC activations, int8 OHWI weights with per-output-channel scales. */
#include <string.h>

#include "tinyc/fixedpoint.h"
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

/* The products s * w of a depthwise channel's taps, computed once per channel instead of once
 * per pixel and tap (the same float products, hence the same sums). */
#define DW_MAX_TAPS 81   /* up to 9x9 on the stack; larger kernels multiply as they go */

static const float *dw_tap_products(const int8_t *w, float s, int32_t taps, float *wr)
{
    int32_t t;
    if (taps > DW_MAX_TAPS) {
        return NULL;
    }
    for (t = 0; t < taps; ++t) {
        wr[t] = s * (float)w[t];
    }
    return wr;
}

/* gx[iy, ix] of one channel of a depthwise conv: the terms tinyc_conv2d_grad_input adds to 0,
 * in its (ky, kx) order; gy(oy, ox) is src[q * step] with q = oy * out_w + ox, and src is
 * `saved` for the first n_saved pixels (a copy made before they were overwritten), else gy.
 * wr: the taps' products s * w (dw_tap_products), or NULL to multiply here. */
static float depthwise_grad_at(const tinyc_conv_grad_params *p, const float *gy,
                               const float *saved, int32_t n_saved, int32_t step,
                               const int8_t *w, float s, const float *wr, int32_t iy, int32_t ix)
{
    float d = 0.0f;
    int32_t ky, kx;
    if (p->stride_h == 1 && p->stride_w == 1 && wr) {
        /* stride 1: output (oy, ox) = (ty, tx), no division; the same terms in the same order */
        for (ky = 0; ky < p->kernel_h; ++ky) {
            const int32_t oy = iy + p->pad_top - ky * p->dilation_h;
            if (oy < 0 || oy >= p->out_h) {
                continue;
            }
            for (kx = 0; kx < p->kernel_w; ++kx) {
                const int32_t ox = ix + p->pad_left - kx * p->dilation_w;
                int32_t q;
                float g;
                if (ox < 0 || ox >= p->out_w) {
                    continue;
                }
                q = oy * p->out_w + ox;
                g = q < n_saved ? saved[q * step] : gy[q * step];
                if (g != 0.0f) {
                    const float t = g * wr[ky * p->kernel_w + kx];
                    d = d + t;
                }
            }
        }
        return d;
    }
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
                const int32_t tap = ky * p->kernel_w + kx;
                const float r = wr ? wr[tap] : s * (float)w[tap];
                const float t = g * r;
                d = d + t;
            }
        }
    }
    return d;
}

static int mask_keeps(const uint8_t *bits, const int8_t *act, int32_t e, int32_t lo, int32_t hi)
{
    return bits ? (int)((bits[e >> 3] >> (e & 7)) & 1u) : (act[e] > lo && act[e] < hi);
}

/* where the kernels compiled per mask kind point their mask byte without packed bits (stepped
 * by 0, never read) */
static const uint8_t no_mask = 0xFFu;

/* The taps of input index i along one axis of a depthwise conv (dilation 1, pad >= 0):
 * tap k0 + a * s reads output index o0 - a, for a < the count returned (the taps inside the
 * output, in ascending tap order). */
static int32_t tap_range(int32_t i, int32_t pad, int32_t s, int32_t kernel, int32_t out,
                         int32_t *k0, int32_t *o0)
{
    const int32_t t = i + pad;
    int32_t k = t % s, o = t / s, n;
    if (o >= out) {
        k += (o - out + 1) * s;
        o = out - 1;
    }
    if (k >= kernel) {
        return 0;
    }
    n = (kernel - 1 - k) / s + 1;
    if (n > o + 1) {
        n = o + 1;
    }
    *k0 = k;
    *o0 = o;
    return n;
}

/* The depthwise input gradient of one channel, plane[px * out_step], where the mask (bits or
 * act; neither: none) keeps it, 0 elsewhere: the terms of depthwise_grad_at, in its (ky, kx)
 * order, with the taps of each pixel found once (tap_range) instead of tested one by one.
 * gd(q) = gd[q * step]; wr: the taps' products. A term with gd == 0 adds +-0 to a sum that is
 * never -0: adding it is exact. Needs dilation 1 and pads >= 0 (depthwise_plane_ok). */
static int depthwise_plane_ok(const tinyc_conv_grad_params *p, const float *wr)
{
    return wr && p->dilation_h == 1 && p->dilation_w == 1 && p->pad_top >= 0
        && p->pad_left >= 0;
}

/* d + g[0] * w[0] + g[-1] * w[1] + ... (n terms, in that order): a kernel row of the
 * depthwise input gradient, widths 5 and 7 written out. */
static float row_terms(float d, const float *g, const float *w, int32_t n)
{
    int32_t b;
    float t;
    switch (n) {   /* 3: written out by the caller */
    case 7:
        t = g[0] * w[0]; d = d + t;
        t = g[-1] * w[1]; d = d + t;
        t = g[-2] * w[2]; d = d + t;
        t = g[-3] * w[3]; d = d + t;
        t = g[-4] * w[4]; d = d + t;
        t = g[-5] * w[5]; d = d + t;
        t = g[-6] * w[6]; d = d + t;
        return d;
    case 5:
        t = g[0] * w[0]; d = d + t;
        t = g[-1] * w[1]; d = d + t;
        t = g[-2] * w[2]; d = d + t;
        t = g[-3] * w[3]; d = d + t;
        t = g[-4] * w[4]; d = d + t;
        return d;
    default:
        for (b = 0; b < n; ++b) {
            t = g[-b] * w[b];
            d = d + t;
        }
        return d;
    }
}

/* depthwise_plane for a 3x3 kernel, stride 1, pads 1, out = in (the blocks' usual depthwise):
 * each output gradient value is loaded once per row it serves, the three rows' values of
 * columns ix - 1, ix, ix + 1 in registers (STEP3: column x in slot x mod 3, no moves). Taps outside the gradient plane read
 * zeros (a row pointer to one zero with step 0; zero columns at the ends): a term 0 * w adds
 * +-0 to a sum that is never -0, so adding it instead of skipping it is exact, and the others
 * come in depthwise_grad_at's (ky, kx) order. Not inlined: inlined, gcc -O3 turns its products
 * and sums into vmla (the same floats, but slower on a Cortex-M4). */
static int depthwise_3x3_same(const tinyc_conv_grad_params *p)
{
    return p->kernel_h == 3 && p->kernel_w == 3 && p->pad_top == 1 && p->pad_left == 1
        && p->out_h == p->in_h && p->out_w == p->in_w;
}

/* pixel ix of depthwise_plane_3x3: load column ix + 1 of the three rows (zeros past the
 * plane's end) into slots k2 (the column ix - 2 held), then the terms of columns ix - 1, ix,
 * ix + 1 (slots k0, k1, k2) */
#define STEP3(k0, k1, k2)                                                                     \
    do {                                                                                      \
        if (ix + 1 < w) {                                                                     \
            g0 += s0;                                                                         \
            g1 += step;                                                                       \
            g2 += s2;                                                                         \
            a##k2 = *g0;                                                                      \
            b##k2 = *g1;                                                                      \
            c##k2 = *g2;                                                                      \
        } else {                                                                              \
            a##k2 = 0.0f;                                                                     \
            b##k2 = 0.0f;                                                                     \
            c##k2 = 0.0f;                                                                     \
        }                                                                                     \
        if (kind == 0 || (kind == 1 ? (*mb & bm) != 0 : mask_keeps(bits, act, e, lo, hi))) { \
            const float t0 = a##k2 * w0, t1 = a##k1 * w1, t2 = a##k0 * w2;                    \
            const float t3 = b##k2 * w3, t4 = b##k1 * w4, t5 = b##k0 * w5;                    \
            const float t6 = c##k2 * w6, t7 = c##k1 * w7, t8 = c##k0 * w8;                    \
            float d = 0.0f;                                                                   \
            d = d + t0;                                                                       \
            d = d + t1;                                                                       \
            d = d + t2;                                                                       \
            d = d + t3;                                                                       \
            d = d + t4;                                                                       \
            d = d + t5;                                                                       \
            d = d + t6;                                                                       \
            d = d + t7;                                                                       \
            d = d + t8;                                                                       \
            *out = d;                                                                         \
        } else {                                                                              \
            *out = 0.0f;                                                                      \
        }                                                                                     \
        out += out_step;                                                                      \
        e += c_n;                                                                             \
        mb += mstride;                                                                        \
    } while (0)

/* kind (a constant once inlined): 0 no mask; 1 bits with c_n a multiple of 8, so that pixel
 * px's bit is bit c % 8 (bm) of byte (px * c_n + c) / 8, stepped by c_n / 8 (mb, mstride) with
 * no division per pixel; 2 any mask (mask_keeps) */
static TINYC_ALWAYS_INLINE void plane_3x3(const tinyc_conv_grad_params *p, const float *gd,
                                          int32_t step, const float *wr, const uint8_t *bits,
                                          const int8_t *act, int32_t lo, int32_t hi, int32_t c,
                                          int32_t c_n, float *plane, int32_t out_step,
                                          const int kind)
{
    static const float zero = 0.0f;
    const int32_t h = p->in_h, w = p->in_w;
    const uint32_t bm = 1u << (c & 7);
    const int32_t mstride = kind == 1 ? c_n >> 3 : 0;
    const float w0 = wr[0], w1 = wr[1], w2 = wr[2], w3 = wr[3], w4 = wr[4], w5 = wr[5];
    const float w6 = wr[6], w7 = wr[7], w8 = wr[8];
    int32_t iy, ix;
    for (iy = 0; iy < h; ++iy) {
        /* the gradient rows of ky 0, 1, 2: oy = iy + 1, iy, iy - 1 */
        const int32_t s0 = iy + 1 < h ? step : 0, s2 = iy > 0 ? step : 0;
        const float *g0 = iy + 1 < h ? gd + (iy + 1) * w * step : &zero;
        const float *g1 = gd + iy * w * step;
        const float *g2 = iy > 0 ? gd + (iy - 1) * w * step : &zero;
        float *out = plane + iy * w * out_step;
        int32_t e = iy * w * c_n + c;   /* the mask's element of (iy, ix) */
        const uint8_t *mb = kind == 1 ? bits + (e >> 3) : &no_mask;   /* and its byte */
        /* column x of row a in slot x mod 3 (a0..a2; likewise b, c): each column loaded once
         * into the slot of the column it replaces, three columns a turn, no moves */
        float a0 = *g0, b0 = *g1, c0 = *g2;
        float a1 = 0.0f, b1 = 0.0f, c1 = 0.0f, a2 = 0.0f, b2 = 0.0f, c2 = 0.0f;
        for (ix = 0;;) {   /* slots of columns ix - 1, ix, ix + 1: */
            STEP3(2, 0, 1);
            if (++ix >= w) {
                break;
            }
            STEP3(0, 1, 2);
            if (++ix >= w) {
                break;
            }
            STEP3(1, 2, 0);
            if (++ix >= w) {
                break;
            }
        }
    }
}

TINYC_NOINLINE static void depthwise_plane_3x3(const tinyc_conv_grad_params *p, const float *gd,
                                               int32_t step, const float *wr,
                                               const uint8_t *bits, const int8_t *act,
                                               int32_t lo, int32_t hi, int32_t c, int32_t c_n,
                                               float *plane, int32_t out_step)
{
    if (!bits && !act) {
        plane_3x3(p, gd, step, wr, NULL, NULL, lo, hi, c, c_n, plane, out_step, 0);
    } else if (bits && (c_n & 7) == 0) {
        plane_3x3(p, gd, step, wr, bits, NULL, lo, hi, c, c_n, plane, out_step, 1);
    } else {
        plane_3x3(p, gd, step, wr, bits, act, lo, hi, c, c_n, plane, out_step, 2);
    }
}

#undef STEP3

/* depthwise_plane for a 5x5 kernel, stride 1, pads 2, out = in: depthwise_plane_3x3's
 * slots for five rows of five columns (row oy = iy + 2 - r, column x in slot x mod 5; STEP5) in
 * registers, the weights read as they are used. Zeros outside the plane
 * (exact, as there). Not inlined (vmla, as above). */
static int depthwise_5x5_same(const tinyc_conv_grad_params *p)
{
    return p->kernel_h == 5 && p->kernel_w == 5 && p->pad_top == 2 && p->pad_left == 2
        && p->out_h == p->in_h && p->out_w == p->in_w;
}

/* d + x4 * w[0] + x3 * w[1] + ... + x0 * w[4]: one kernel row of depthwise_plane_5x5, its
 * columns ix + 2 - kx in kx order. */
static float row5(float d, float x0, float x1, float x2, float x3, float x4, const float *w)
{
    const float t0 = x4 * w[0], t1 = x3 * w[1], t2 = x2 * w[2], t3 = x1 * w[3];
    const float t4 = x0 * w[4];
    d = d + t0;
    d = d + t1;
    d = d + t2;
    d = d + t3;
    return d + t4;
}

/* the next column of row g (step s), or a zero past the plane's end */
#define NEXT5(g, s, more) ((more) ? *((g) += (s)) : 0.0f)

/* pixel ix of depthwise_plane_5x5: load column ix + 2 of the five rows into slots k4 (the
 * column ix - 3 held), then the terms of columns ix - 2 .. ix + 2 (slots k0 .. k4) */
#define STEP5(k0, k1, k2, k3, k4)                                                             \
    do {                                                                                      \
        const int more = ix + 2 < w;   /* column ix + 2 inside */                            \
        a##k4 = NEXT5(ga, sa, more); b##k4 = NEXT5(gb, sb, more);                             \
        c##k4 = NEXT5(gc, step, more); d##k4 = NEXT5(gdd, sd, more);                          \
        e##k4 = NEXT5(ge, se, more);                                                          \
        if (kind == 0 || (kind == 1 ? (*mb & bm) != 0 : mask_keeps(bits, act, e, lo, hi))) { \
            float d = 0.0f;                                                                   \
            d = row5(d, a##k0, a##k1, a##k2, a##k3, a##k4, wr);                               \
            d = row5(d, b##k0, b##k1, b##k2, b##k3, b##k4, wr + 5);                           \
            d = row5(d, c##k0, c##k1, c##k2, c##k3, c##k4, wr + 10);                          \
            d = row5(d, d##k0, d##k1, d##k2, d##k3, d##k4, wr + 15);                          \
            d = row5(d, e##k0, e##k1, e##k2, e##k3, e##k4, wr + 20);                          \
            *out = d;                                                                         \
        } else {                                                                              \
            *out = 0.0f;                                                                      \
        }                                                                                     \
        out += out_step;                                                                      \
        e += c_n;                                                                             \
        mb += mstride;                                                                        \
    } while (0)

/* kind: as plane_3x3's */
static TINYC_ALWAYS_INLINE void plane_5x5(const tinyc_conv_grad_params *p, const float *gd,
                                          int32_t step, const float *wr, const uint8_t *bits,
                                          const int8_t *act, int32_t lo, int32_t hi, int32_t c,
                                          int32_t c_n, float *plane, int32_t out_step,
                                          const int kind)
{
    static const float zero = 0.0f;
    const int32_t h = p->in_h, w = p->in_w;
    const uint32_t bm = 1u << (c & 7);
    const int32_t mstride = kind == 1 ? c_n >> 3 : 0;
    int32_t iy, ix;
    for (iy = 0; iy < h; ++iy) {
        /* rows ky = 0..4 read output rows oy = iy + 2 - ky: a..e; columns ix - 2 .. ix + 2 */
        const int ia = iy + 2 < h, ib = iy + 1 < h, id = iy >= 1, ie = iy >= 2;
        const int32_t sa = ia ? step : 0, sb = ib ? step : 0, sd = id ? step : 0;
        const int32_t se = ie ? step : 0;
        const float *ga = ia ? gd + (iy + 2) * w * step : &zero;
        const float *gb = ib ? gd + (iy + 1) * w * step : &zero;
        const float *gc = gd + iy * w * step;
        const float *gdd = id ? gd + (iy - 1) * w * step : &zero;
        const float *ge = ie ? gd + (iy - 2) * w * step : &zero;
        float *out = plane + iy * w * out_step;
        int32_t e = iy * w * c_n + c;   /* the mask's element of (iy, ix) */
        const uint8_t *mb = kind == 1 ? bits + (e >> 3) : &no_mask;   /* and its byte */
        /* column x of row a in slot x mod 5 (a0..a4; likewise b..e): each column loaded once
         * into the slot of the column it replaces, five columns a turn, no moves */
        float a0 = *ga, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, a4 = 0.0f;
        float b0 = *gb, b1 = 0.0f, b2 = 0.0f, b3 = 0.0f, b4 = 0.0f;
        float c0 = *gc, c1 = 0.0f, c2 = 0.0f, c3 = 0.0f, c4 = 0.0f;
        float d0 = *gdd, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f, d4 = 0.0f;
        float e0 = *ge, e1 = 0.0f, e2 = 0.0f, e3 = 0.0f, e4 = 0.0f;
        if (w > 1) {
            a1 = NEXT5(ga, sa, 1); b1 = NEXT5(gb, sb, 1); c1 = NEXT5(gc, step, 1);
            d1 = NEXT5(gdd, sd, 1); e1 = NEXT5(ge, se, 1);
        }
        for (ix = 0;;) {   /* slots of columns ix - 2 .. ix + 2: */
            STEP5(3, 4, 0, 1, 2);
            if (++ix >= w) {
                break;
            }
            STEP5(4, 0, 1, 2, 3);
            if (++ix >= w) {
                break;
            }
            STEP5(0, 1, 2, 3, 4);
            if (++ix >= w) {
                break;
            }
            STEP5(1, 2, 3, 4, 0);
            if (++ix >= w) {
                break;
            }
            STEP5(2, 3, 4, 0, 1);
            if (++ix >= w) {
                break;
            }
        }
    }
}

TINYC_NOINLINE static void depthwise_plane_5x5(const tinyc_conv_grad_params *p, const float *gd,
                                               int32_t step, const float *wr,
                                               const uint8_t *bits, const int8_t *act,
                                               int32_t lo, int32_t hi, int32_t c, int32_t c_n,
                                               float *plane, int32_t out_step)
{
    if (!bits && !act) {
        plane_5x5(p, gd, step, wr, NULL, NULL, lo, hi, c, c_n, plane, out_step, 0);
    } else if (bits && (c_n & 7) == 0) {
        plane_5x5(p, gd, step, wr, bits, NULL, lo, hi, c, c_n, plane, out_step, 1);
    } else {
        plane_5x5(p, gd, step, wr, bits, act, lo, hi, c, c_n, plane, out_step, 2);
    }
}


#undef STEP5
#undef NEXT5

/* depthwise_plane for a 4x4 output gradient, stride 1, whose every pixel has all 16 terms
 * inside the kernel (a 7x7 'same' conv on a 4x4 plane, the last blocks' usual case): the 16
 * values stay in registers, and pixel (iy, ix) reads the kernel window ending at tap
 * (iy + pad_top, ix + pad_left). The terms come in depthwise_grad_at's (ky, kx) order, that is
 * output rows and columns descending; a term with g == 0 adds +-0 to a sum that is never -0:
 * adding it is exact. Not inlined (vmla, as above). */
static int depthwise_4x4_covered(const tinyc_conv_grad_params *p, int32_t step)
{
    return step == 1 && p->stride_h == 1 && p->stride_w == 1 && p->out_h == 4
        && p->out_w == 4 && p->pad_top >= 3 && p->pad_left >= 3
        && p->in_h - 1 + p->pad_top <= p->kernel_h - 1
        && p->in_w - 1 + p->pad_left <= p->kernel_w - 1;
}

/* kind: as plane_3x3's */
static TINYC_ALWAYS_INLINE void plane_4x4_covered(const tinyc_conv_grad_params *p,
                                                  const float *gd, const float *wr,
                                                  const uint8_t *bits, const int8_t *act,
                                                  int32_t lo, int32_t hi, int32_t c,
                                                  int32_t c_n, float *plane, int32_t out_step,
                                                  const int kind)
{
    const int32_t kw = p->kernel_w, iw = p->in_w, pt = p->pad_top, pl = p->pad_left;
    const uint32_t bm = 1u << (c & 7);
    const int32_t mstride = kind == 1 ? c_n >> 3 : 0;
    const uint8_t *mb = kind == 1 ? bits + (c >> 3) : &no_mask;   /* pixel 0's byte */
    const float g00 = gd[0], g01 = gd[1], g02 = gd[2], g03 = gd[3];
    const float g10 = gd[4], g11 = gd[5], g12 = gd[6], g13 = gd[7];
    const float g20 = gd[8], g21 = gd[9], g22 = gd[10], g23 = gd[11];
    const float g30 = gd[12], g31 = gd[13], g32 = gd[14], g33 = gd[15];
    int32_t iy, ix;
    for (iy = 0; iy < p->in_h; ++iy) {
        float *out = plane + iy * iw * out_step;
        for (ix = 0; ix < iw; ++ix, out += out_step, mb += mstride) {
            /* output row oy's taps end at w - oy * kw: (ky, kx) = (iy + pt - oy, ix + pl - ox) */
            const float *w0 = wr + (iy + pt) * kw + ix + pl;
            const float *w1 = w0 - kw, *w2 = w1 - kw, *w3 = w2 - kw;
            float d = 0.0f, t;
            if (kind == 1 ? !(*mb & bm)
                          : kind == 2 && !mask_keeps(bits, act, (iy * iw + ix) * c_n + c, lo, hi)) {
                *out = 0.0f;
                continue;
            }
            t = g33 * w3[-3]; d = d + t;
            t = g32 * w3[-2]; d = d + t;
            t = g31 * w3[-1]; d = d + t;
            t = g30 * w3[0]; d = d + t;
            t = g23 * w2[-3]; d = d + t;
            t = g22 * w2[-2]; d = d + t;
            t = g21 * w2[-1]; d = d + t;
            t = g20 * w2[0]; d = d + t;
            t = g13 * w1[-3]; d = d + t;
            t = g12 * w1[-2]; d = d + t;
            t = g11 * w1[-1]; d = d + t;
            t = g10 * w1[0]; d = d + t;
            t = g03 * w0[-3]; d = d + t;
            t = g02 * w0[-2]; d = d + t;
            t = g01 * w0[-1]; d = d + t;
            t = g00 * w0[0]; d = d + t;
            *out = d;
        }
    }
}

TINYC_NOINLINE static void depthwise_plane_4x4_covered(const tinyc_conv_grad_params *p,
                                                       const float *gd, const float *wr,
                                                       const uint8_t *bits, const int8_t *act,
                                                       int32_t lo, int32_t hi, int32_t c,
                                                       int32_t c_n, float *plane,
                                                       int32_t out_step)
{
    if (!bits && !act) {
        plane_4x4_covered(p, gd, wr, NULL, NULL, lo, hi, c, c_n, plane, out_step, 0);
    } else if (bits && (c_n & 7) == 0) {
        plane_4x4_covered(p, gd, wr, bits, NULL, lo, hi, c, c_n, plane, out_step, 1);
    } else {
        plane_4x4_covered(p, gd, wr, bits, act, lo, hi, c, c_n, plane, out_step, 2);
    }
}

/* depthwise_plane for stride 1: the taps of (iy, ix) are ky in [iy + pad_top - (out_h - 1),
 * iy + pad_top] and kx likewise, clipped to the kernel: bounds, no division. */
static void depthwise_plane_s1(const tinyc_conv_grad_params *p, const float *gd, int32_t step,
                               const float *wr, const uint8_t *bits, const int8_t *act,
                               int32_t lo, int32_t hi, int32_t c, int32_t c_n, float *plane,
                               int32_t out_step)
{
    const int32_t kh = p->kernel_h, kw = p->kernel_w, oh = p->out_h, ow = p->out_w;
    const int32_t iw = p->in_w, pt = p->pad_top, pl = p->pad_left;
    const int masked = bits || act;
    /* a 3x3 kernel's products in registers, for the pixels whose nine taps are all inside */
    const int k3 = kh == 3 && kw == 3 && step == 1;
    const float w0 = k3 ? wr[0] : 0.0f, w1 = k3 ? wr[1] : 0.0f, w2 = k3 ? wr[2] : 0.0f;
    const float w3 = k3 ? wr[3] : 0.0f, w4 = k3 ? wr[4] : 0.0f, w5 = k3 ? wr[5] : 0.0f;
    const float w6 = k3 ? wr[6] : 0.0f, w7 = k3 ? wr[7] : 0.0f, w8 = k3 ? wr[8] : 0.0f;
    int32_t iy, ix, ky, b;
    for (iy = 0; iy < p->in_h; ++iy) {
        const int32_t ky_lo = iy + pt - (oh - 1) > 0 ? iy + pt - (oh - 1) : 0;
        const int32_t ky_hi = iy + pt < kh - 1 ? iy + pt : kh - 1;
        float *out = plane + iy * iw * out_step;
        for (ix = 0; ix < iw; ++ix, out += out_step) {
            const int32_t kx_lo = ix + pl - (ow - 1) > 0 ? ix + pl - (ow - 1) : 0;
            const int32_t kx_hi = ix + pl < kw - 1 ? ix + pl : kw - 1;
            const int32_t n = kx_hi - kx_lo + 1;
            const float *g = gd + ((iy + pt - ky_lo) * ow + ix + pl - kx_lo) * step;
            const float *w = wr + ky_lo * kw + kx_lo;
            float d = 0.0f;
            if (masked && !mask_keeps(bits, act, (iy * iw + ix) * c_n + c, lo, hi)) {
                *out = 0.0f;
                continue;
            }
            if (k3 && n == 3 && ky_hi - ky_lo == 2) {   /* (ky, kx) order, as below */
                const float *g1 = g - ow, *g2 = g - 2 * ow;
                float t;
                t = g[0] * w0; d = d + t;
                t = g[-1] * w1; d = d + t;
                t = g[-2] * w2; d = d + t;
                t = g1[0] * w3; d = d + t;
                t = g1[-1] * w4; d = d + t;
                t = g1[-2] * w5; d = d + t;
                t = g2[0] * w6; d = d + t;
                t = g2[-1] * w7; d = d + t;
                t = g2[-2] * w8; d = d + t;
                *out = d;
                continue;
            }
            for (ky = ky_lo; ky <= ky_hi; ++ky, g -= ow * step, w += kw) {
                if (n == 3 && step == 1) {
                    const float t0 = g[0] * w[0], t1 = g[-1] * w[1], t2 = g[-2] * w[2];
                    d = d + t0;
                    d = d + t1;
                    d = d + t2;
                    continue;
                }
                if (step == 1) {
                    d = row_terms(d, g, w, n);
                    continue;
                }
                for (b = 0; b < n; ++b) {
                    const float t = g[-b * step] * w[b];
                    d = d + t;
                }
            }
            *out = d;
        }
    }
}

/* depthwise_plane for a 3x3, 5x5 or 7x7 kernel, stride 2, pads k / 2 (the blocks' usual
 * downsampling depthwise): input row iy takes kernel rows ky = (iy + pad) % 2, + 2, ... at
 * output rows oy = (iy + pad - ky) / 2, and each kernel row adds its terms to the whole input
 * row in one pass (s2_row_k), the partial sums kept in the plane between passes: each pixel
 * gets its terms in depthwise_grad_at's (ky, kx) order, output rows outside the plane are
 * skipped and columns outside it read zeros (a term with g == 0 adds +-0 to a sum that is never
 * -0: exact either way). Within a pass the output gradient values slide along in registers, the
 * kernel row's products are in registers, and an input column pair (2j, 2j + 1) shares them. */
static int depthwise_s2_same(const tinyc_conv_grad_params *p)
{
    const int32_t k = p->kernel_h;
    /* 5x5 and 7x7 on narrower planes: the per-pass costs outweigh what the passes save
     * (depthwise_plane's tap lists are faster there: mcunet's 7x7 on 8x8, +0.44M) */
    return p->stride_h == 2 && p->stride_w == 2 && p->kernel_w == k
        && (k == 3 || ((k == 5 || k == 7) && p->out_w >= 8)) && p->pad_top == k / 2
        && p->pad_left == k / 2;
}

/* g(ox) = g[ox * step] inside the plane's ow columns, else 0 */
#define S2_G(g, step, ox, ow) ((ox) < (ow) ? (g)[(ox) * (step)] : 0.0f)

/* out[ix] = in[ix] + the terms of kernel row w (3 taps) of the output gradient row g, for the
 * iw input columns (element ix at ix * out_step, in[] at ix * in_step: 0 reads a zero). Even
 * ix = 2j: kx 1 at g(j); odd: kx 0 at g(j + 1), kx 2 at g(j). */
TINYC_NOINLINE static void s2_row_3(const float *g, int32_t step, int32_t ow, const float *w,
                                    const float *in, int32_t in_step, float *out,
                                    int32_t out_step, int32_t iw)
{
    const float w0 = w[0], w1 = w[1], w2 = w[2];
    float g0 = g[0], g1 = S2_G(g, step, 1, ow);
    int32_t j, ix;
    for (j = 0, ix = 0; ix + 1 < iw; ++j, ix += 2) {
        float d = in[ix * in_step], t;
        t = g0 * w1; d = d + t;
        out[ix * out_step] = d;
        d = in[(ix + 1) * in_step];
        t = g1 * w0; d = d + t;
        t = g0 * w2; d = d + t;
        out[(ix + 1) * out_step] = d;
        g0 = g1;
        g1 = S2_G(g, step, j + 2, ow);
    }
    if (ix < iw) {
        const float t = g0 * w1;
        out[ix * out_step] = in[ix * in_step] + t;
    }
}

/* the same for 5 taps: even ix = 2j: kx 0, 2, 4 at g(j + 1), g(j), g(j - 1); odd: kx 1, 3 at
 * g(j + 1), g(j) */
TINYC_NOINLINE static void s2_row_5(const float *g, int32_t step, int32_t ow, const float *w,
                                    const float *in, int32_t in_step, float *out,
                                    int32_t out_step, int32_t iw)
{
    const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4];
    float gm = 0.0f, g0 = g[0], g1 = S2_G(g, step, 1, ow);
    int32_t j, ix;
    for (j = 0, ix = 0; ix + 1 < iw; ++j, ix += 2) {
        float d = in[ix * in_step], t;
        t = g1 * w0; d = d + t;
        t = g0 * w2; d = d + t;
        t = gm * w4; d = d + t;
        out[ix * out_step] = d;
        d = in[(ix + 1) * in_step];
        t = g1 * w1; d = d + t;
        t = g0 * w3; d = d + t;
        out[(ix + 1) * out_step] = d;
        gm = g0;
        g0 = g1;
        g1 = S2_G(g, step, j + 2, ow);
    }
    if (ix < iw) {
        float d = in[ix * in_step], t;
        t = g1 * w0; d = d + t;
        t = g0 * w2; d = d + t;
        t = gm * w4; d = d + t;
        out[ix * out_step] = d;
    }
}

/* the same for 7 taps: even ix = 2j: kx 1, 3, 5 at g(j + 1), g(j), g(j - 1); odd: kx 0, 2, 4,
 * 6 at g(j + 2), g(j + 1), g(j), g(j - 1) */
TINYC_NOINLINE static void s2_row_7(const float *g, int32_t step, int32_t ow, const float *w,
                                    const float *in, int32_t in_step, float *out,
                                    int32_t out_step, int32_t iw)
{
    const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6];
    float gm = 0.0f, g0 = g[0], g1 = S2_G(g, step, 1, ow), g2 = S2_G(g, step, 2, ow);
    int32_t j, ix;
    for (j = 0, ix = 0; ix + 1 < iw; ++j, ix += 2) {
        float d = in[ix * in_step], t;
        t = g1 * w1; d = d + t;
        t = g0 * w3; d = d + t;
        t = gm * w5; d = d + t;
        out[ix * out_step] = d;
        d = in[(ix + 1) * in_step];
        t = g2 * w0; d = d + t;
        t = g1 * w2; d = d + t;
        t = g0 * w4; d = d + t;
        t = gm * w6; d = d + t;
        out[(ix + 1) * out_step] = d;
        gm = g0;
        g0 = g1;
        g1 = g2;
        g2 = S2_G(g, step, j + 3, ow);
    }
    if (ix < iw) {
        float d = in[ix * in_step], t;
        t = g1 * w1; d = d + t;
        t = g0 * w3; d = d + t;
        t = gm * w5; d = d + t;
        out[ix * out_step] = d;
    }
}

#undef S2_G

static void depthwise_plane_s2(const tinyc_conv_grad_params *p, const float *gd, int32_t step,
                               const float *wr, const uint8_t *bits, const int8_t *act,
                               int32_t lo, int32_t hi, int32_t c, int32_t c_n, float *plane,
                               int32_t out_step)
{
    static const float zero = 0.0f;
    const int32_t k = p->kernel_h, pad = k / 2, iw = p->in_w, ow = p->out_w;
    int32_t iy, ix, ky;
    for (iy = 0; iy < p->in_h; ++iy) {
        float *out = plane + iy * iw * out_step;
        int first = 1;
        for (ky = (iy + pad) & 1; ky < k; ky += 2) {
            const int32_t oy = (iy + pad - ky) / 2;
            const float *g = gd + oy * ow * step;
            const float *in = first ? &zero : out;
            const int32_t in_step = first ? 0 : out_step;
            if (oy >= p->out_h) {
                continue;
            }
            if (oy < 0) {
                break;   /* and every later ky */
            }
            if (k == 3) {
                s2_row_3(g, step, ow, wr + ky * k, in, in_step, out, out_step, iw);
            } else if (k == 5) {
                s2_row_5(g, step, ow, wr + ky * k, in, in_step, out, out_step, iw);
            } else {
                s2_row_7(g, step, ow, wr + ky * k, in, in_step, out, out_step, iw);
            }
            first = 0;
        }
        if (!first && bits && (c_n & 7) == 0) {   /* the channel's bit, a byte step a pixel */
            const uint8_t *mb = bits + ((iy * iw * c_n + c) >> 3);
            const uint32_t bm = 1u << (c & 7);
            for (ix = 0; ix < iw; ++ix, mb += c_n >> 3) {
                if (!(*mb & bm)) {
                    out[ix * out_step] = 0.0f;
                }
            }
            continue;
        }
        for (ix = 0; ix < iw && (first || bits || act); ++ix) {   /* none: zeros */
            if (first || !mask_keeps(bits, act, (iy * iw + ix) * c_n + c, lo, hi)) {
                out[ix * out_step] = 0.0f;
            }
        }
    }
}

/* d + g[0] * w[0] + g[-step] * w[2] + ... (n <= 4 terms, in that order): a kernel row's
 * terms at stride 2, written out */
static float row_terms_s2(float d, const float *g, int32_t step, const float *w, int32_t n)
{
    float t;
    switch (n) {
    case 4:
        t = g[0] * w[0]; d = d + t;
        t = g[-step] * w[2]; d = d + t;
        t = g[-2 * step] * w[4]; d = d + t;
        t = g[-3 * step] * w[6]; d = d + t;
        return d;
    case 3:
        t = g[0] * w[0]; d = d + t;
        t = g[-step] * w[2]; d = d + t;
        t = g[-2 * step] * w[4]; d = d + t;
        return d;
    case 2:
        t = g[0] * w[0]; d = d + t;
        t = g[-step] * w[2]; d = d + t;
        return d;
    case 1:
        t = g[0] * w[0];
        return d + t;
    default:
        return d;
    }
}

#define DW_COLS 128   /* input columns whose taps are found once per plane (stack bytes: 3x) */

static void depthwise_plane(const tinyc_conv_grad_params *p, const float *gd, int32_t step,
                            const float *wr, const uint8_t *bits, const int8_t *act, int32_t lo,
                            int32_t hi, int32_t c, int32_t c_n, float *plane, int32_t out_step)
{
    const int32_t sh = p->stride_h, sw = p->stride_w, kw = p->kernel_w, ow = p->out_w;
    const int32_t iw = p->in_w;
    const int masked = bits || act;
    uint8_t col_k[DW_COLS], col_o[DW_COLS], col_n[DW_COLS];   /* each column's taps */
    const int cols = iw <= DW_COLS && ow <= 256 && kw <= 256;
    int32_t iy, ix, a, b;
    if (sh == 1 && sw == 1 && depthwise_3x3_same(p)) {
        depthwise_plane_3x3(p, gd, step, wr, bits, act, lo, hi, c, c_n, plane, out_step);
        return;
    }
    if (sh == 1 && sw == 1 && depthwise_5x5_same(p)) {
        depthwise_plane_5x5(p, gd, step, wr, bits, act, lo, hi, c, c_n, plane, out_step);
        return;
    }
    if (depthwise_4x4_covered(p, step)) {
        depthwise_plane_4x4_covered(p, gd, wr, bits, act, lo, hi, c, c_n, plane, out_step);
        return;
    }
    if (sh == 1 && sw == 1) {
        depthwise_plane_s1(p, gd, step, wr, bits, act, lo, hi, c, c_n, plane, out_step);
        return;
    }
    if (depthwise_s2_same(p)) {
        depthwise_plane_s2(p, gd, step, wr, bits, act, lo, hi, c, c_n, plane, out_step);
        return;
    }
    for (ix = 0; cols && ix < iw; ++ix) {
        int32_t kx0 = 0, ox0 = 0;
        col_n[ix] = (uint8_t)tap_range(ix, p->pad_left, sw, kw, ow, &kx0, &ox0);
        col_k[ix] = (uint8_t)kx0;
        col_o[ix] = (uint8_t)ox0;
    }
    for (iy = 0; iy < p->in_h; ++iy) {
        int32_t ky0 = 0, oy0 = 0;
        const int32_t ny = tap_range(iy, p->pad_top, sh, p->kernel_h, p->out_h, &ky0, &oy0);
        const float *grow = gd + oy0 * ow * step;   /* output row oy0 */
        const float *wrow = wr + ky0 * kw;          /* kernel row ky0 */
        for (ix = 0; ix < iw; ++ix) {
            const int32_t px = iy * iw + ix;
            int32_t kx0 = 0, ox0 = 0, nx;
            float d = 0.0f;
            if (masked && !mask_keeps(bits, act, px * c_n + c, lo, hi)) {
                plane[px * out_step] = 0.0f;
                continue;
            }
            if (cols) {
                nx = col_n[ix];
                kx0 = col_k[ix];
                ox0 = col_o[ix];
            } else {
                nx = tap_range(ix, p->pad_left, sw, kw, ow, &kx0, &ox0);
            }
            if (step == 1 && nx <= 2 && ny <= 2) {   /* a 3x3 (or smaller) kernel, stride 2 */
                const float *g = grow + ox0;
                const float *w = wrow + kx0;
                for (a = 0; a < ny; ++a, g -= ow, w += sh * kw) {
                    float t = g[0] * w[0];
                    d = d + t;
                    if (nx == 2) {
                        t = g[-1] * w[sw];
                        d = d + t;
                    }
                }
                plane[px * out_step] = d;
                continue;
            }
            for (a = 0; a < ny; ++a) {
                const float *g = gd + ((oy0 - a) * ow + ox0) * step;
                const float *w = wr + (ky0 + a * sh) * kw + kx0;
                if (sw == 2 && nx <= 4) {   /* a 7x7 (or smaller) kernel's row, stride 2 */
                    d = row_terms_s2(d, g, step, w, nx);
                    continue;
                }
                for (b = 0; b < nx; ++b) {
                    const float t = g[-b * step] * w[b * sw];
                    d = d + t;
                }
            }
            plane[px * out_step] = d;
        }
    }
}

void tinyc_depthwise_grad_input_inplace(const tinyc_conv_grad_params *p, float *buf,
                                        const int8_t *weights, const float *w_scale,
                                        float *scratch)
{
    const int32_t c_n = p->in_c;
    const int32_t taps = p->kernel_h * p->kernel_w;
    const int32_t plane = p->out_h * p->out_w;
    int32_t c, i, iy, ix;
    float products[DW_MAX_TAPS];
    for (c = 0; c < c_n; ++c) {
        const float *wr = dw_tap_products(weights + c * taps, w_scale[c], taps, products);
        for (i = 0; i < plane; ++i) {
            scratch[i] = buf[i * c_n + c];   /* gy's channel c: gx[., c] overwrites it */
        }
        if (depthwise_plane_ok(p, wr)) {
            depthwise_plane(p, scratch, 1, wr, NULL, NULL, 0, 0, c, c_n, buf + c, c_n);
            continue;
        }
        for (iy = 0; iy < p->in_h; ++iy) {
            for (ix = 0; ix < p->in_w; ++ix) {
                buf[(iy * p->in_w + ix) * c_n + c] = depthwise_grad_at(
                    p, scratch, NULL, 0, 1, weights + c * taps, w_scale[c], wr, iy, ix);
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
                                              weights + c * taps, w_scale[c], NULL, iy, ix);
            buf[px * c_n + c] = d;
        }
    }
}

/* gx of one pixel (out[i], i < cin) from its gy (cout values): the terms tinyc_conv2d_grad_input
 * adds to gx[px, i], in its o order, eight (then one) sums in registers; a term with g == 0
 * adds +-0 to a sum that is never -0. */
static void pointwise_pixel(const float *gy, const int8_t *weights, const float *w_scale,
                            int32_t cin, int32_t cout, float *out)
{
    int32_t i, o;
    for (i = 0; i + 8 <= cin; i += 8) {
        float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f, d4 = 0.0f, d5 = 0.0f, d6 = 0.0f,
              d7 = 0.0f;
        const int8_t *w = weights + i;
        for (o = 0; o < cout; ++o, w += cin) {
            const float g = gy[o];
            const float s = w_scale[o];
            d0 = d0 + g * (s * (float)w[0]);
            d1 = d1 + g * (s * (float)w[1]);
            d2 = d2 + g * (s * (float)w[2]);
            d3 = d3 + g * (s * (float)w[3]);
            d4 = d4 + g * (s * (float)w[4]);
            d5 = d5 + g * (s * (float)w[5]);
            d6 = d6 + g * (s * (float)w[6]);
            d7 = d7 + g * (s * (float)w[7]);
        }
        out[i] = d0;
        out[i + 1] = d1;
        out[i + 2] = d2;
        out[i + 3] = d3;
        out[i + 4] = d4;
        out[i + 5] = d5;
        out[i + 6] = d6;
        out[i + 7] = d7;
    }
    for (; i < cin; ++i) {
        float d = 0.0f;
        for (o = 0; o < cout; ++o) {
            const float t = gy[o] * (w_scale[o] * (float)weights[o * cin + i]);
            d = d + t;
        }
        out[i] = d;
    }
}

/* pointwise_pixel of two pixels (gy1 -> out1, gy2 -> out2), each weight product computed once
 * for both: the same sums. */
static void pointwise_pixel_pair(const float *gy1, const float *gy2, const int8_t *weights,
                                 const float *w_scale, int32_t cin, int32_t cout, float *out1,
                                 float *out2)
{
    int32_t i, o;
    for (i = 0; i + 8 <= cin; i += 8) {
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, a4 = 0.0f, a5 = 0.0f, a6 = 0.0f,
              a7 = 0.0f;
        float b0 = 0.0f, b1 = 0.0f, b2 = 0.0f, b3 = 0.0f, b4 = 0.0f, b5 = 0.0f, b6 = 0.0f,
              b7 = 0.0f;
        const int8_t *w = weights + i;
        for (o = 0; o < cout; ++o, w += cin) {
            const float g = gy1[o], h = gy2[o];
            const float s = w_scale[o];
            const float p0 = s * (float)w[0], p1 = s * (float)w[1], p2 = s * (float)w[2];
            const float p3 = s * (float)w[3], p4 = s * (float)w[4], p5 = s * (float)w[5];
            const float p6 = s * (float)w[6], p7 = s * (float)w[7];
            a0 = a0 + g * p0; b0 = b0 + h * p0; a1 = a1 + g * p1; b1 = b1 + h * p1;
            a2 = a2 + g * p2; b2 = b2 + h * p2; a3 = a3 + g * p3; b3 = b3 + h * p3;
            a4 = a4 + g * p4; b4 = b4 + h * p4; a5 = a5 + g * p5; b5 = b5 + h * p5;
            a6 = a6 + g * p6; b6 = b6 + h * p6; a7 = a7 + g * p7; b7 = b7 + h * p7;
        }
        out1[i] = a0; out1[i + 1] = a1; out1[i + 2] = a2; out1[i + 3] = a3;
        out1[i + 4] = a4; out1[i + 5] = a5; out1[i + 6] = a6; out1[i + 7] = a7;
        out2[i] = b0; out2[i + 1] = b1; out2[i + 2] = b2; out2[i + 3] = b3;
        out2[i + 4] = b4; out2[i + 5] = b5; out2[i + 6] = b6; out2[i + 7] = b7;
    }
    for (; i < cin; ++i) {
        float d1 = 0.0f, d2 = 0.0f;
        for (o = 0; o < cout; ++o) {
            const float wr = w_scale[o] * (float)weights[o * cin + i];
            d1 = d1 + gy1[o] * wr;
            d2 = d2 + gy2[o] * wr;
        }
        out1[i] = d1;
        out2[i] = d2;
    }
}

/* Whether [a, a + na) and [b, b + nb) (floats of buf) share an element. */
static int overlaps(int32_t a, int32_t na, int32_t b, int32_t nb)
{
    return a < b + nb && b < a + na;
}

void tinyc_pointwise_grad_input_inplace(const tinyc_conv_grad_params *p, float *buf,
                                        const int8_t *weights, const float *w_scale,
                                        float *scratch)
{
    const int32_t cin = p->in_c;
    const int32_t cout = p->out_c;
    const int32_t pixels = p->in_h * p->in_w;
    /* shrinking (cout >= cin): pixel p's gx ends before gy's next pixel, so go forwards;
     * expanding: it starts after gy's previous pixels, so go backwards. Either way no pixel's
     * gx overlaps the gy of a pixel after it in that order. */
    const int32_t first = cout >= cin ? 0 : pixels - 1;
    const int32_t step = cout >= cin ? 1 : -1;
    int32_t n, px;
    for (n = 0, px = first; n < pixels;) {
        const int32_t px2 = px + step;
        /* two pixels at once where the second's gx, written as it is summed, overlaps the gy
         * of neither (the first's goes through scratch, copied once both are done) */
        if (n + 1 < pixels && !overlaps(px2 * cin, cin, px * cout, cout)
            && !overlaps(px2 * cin, cin, px2 * cout, cout)) {
            pointwise_pixel_pair(buf + px * cout, buf + px2 * cout, weights, w_scale, cin, cout,
                                 scratch, buf + px2 * cin);
            memcpy(buf + px * cin, scratch, (size_t)cin * sizeof(float));
            n += 2;
            px += 2 * step;
            continue;
        }
        pointwise_pixel(buf + px * cout, weights, w_scale, cin, cout, scratch);
        memcpy(buf + px * cin, scratch, (size_t)cin * sizeof(float));
        n += 1;
        px += step;
    }
}

#define ROW_CHUNK 96   /* weight products kept on the stack at a time (floats) */

/* The bias gradient of a plane (as tinyc_conv2d_update sums it: zeros skipped) and its step.
 * The kernel's planes are sums started at +0 or +0 itself, never -0, so their zeros add +0 to
 * a sum that is never -0: adding them is exact, and cheaper than testing each. */
static void plane_bias_step(const tinyc_conv_update_params *u, const float *plane, int32_t n,
                            int32_t c, int32_t *bias, const float *f_b, float lr, uint32_t step,
                            tinyc_update_guard *guard)
{
    float gb = 0.0f;
    int32_t k;
    TINYC_UNROLL4
    for (k = 0; k < n; ++k) {
        gb = gb + plane[k];
    }
    tinyc_bias_update(u, c, gb, bias, f_b, lr, step, guard);
}

/* d[q] += sum over o < n (ascending) of g_q[o] * products[o] for two pixels at once (each
 * product read once for both). */
static void dot_pair(const float *g1, const float *g2, const float *products, int32_t n,
                     float *d1, float *d2)
{
    float a1 = *d1, a2 = *d2;
    const float *const end4 = products + (n & ~3);
    int32_t o;
    while (products != end4) {   /* four o at a time, as dot_quad */
        float w0, w1, w2, w3, x0, x1, x2, x3, y0, y1, y2, y3;
        products = tinyc_ld4a(products, &w0, &w1, &w2, &w3);
        g1 = tinyc_ld4b(g1, &x0, &x1, &x2, &x3);
        g2 = tinyc_ld4c(g2, &y0, &y1, &y2, &y3);
        a1 = a1 + x0 * w0;
        a2 = a2 + y0 * w0;
        a1 = a1 + x1 * w1;
        a2 = a2 + y1 * w1;
        a1 = a1 + x2 * w2;
        a2 = a2 + y2 * w2;
        a1 = a1 + x3 * w3;
        a2 = a2 + y3 * w3;
    }
    n &= 3;
    for (o = 0; o < n; ++o) {
        const float w = products[o];
        const float t1 = g1[o] * w;
        const float t2 = g2[o] * w;
        a1 = a1 + t1;
        a2 = a2 + t2;
    }
    *d1 = a1;
    *d2 = a2;
}

static void dot_quad(const float *g1, const float *g2, const float *g3, const float *g4,
                     const float *products, int32_t n, float *d1, float *d2, float *d3,
                     float *d4)
{
    float a1 = *d1, a2 = *d2, a3 = *d3, a4 = *d4;
    const float *const end4 = products + (n & ~3);
    int32_t o;
    /* four o at a time: each group of four floats loaded at once (tinyc_ld4a/b) */
    while (products != end4) {
        float w0, w1, w2, w3, x0, x1, x2, x3, y0, y1, y2, y3, z0, z1, z2, z3, u0, u1, u2, u3;
        products = tinyc_ld4a(products, &w0, &w1, &w2, &w3);
        g1 = tinyc_ld4b(g1, &x0, &x1, &x2, &x3);
        g2 = tinyc_ld4c(g2, &y0, &y1, &y2, &y3);
        g3 = tinyc_ld4d(g3, &z0, &z1, &z2, &z3);
        g4 = tinyc_ld4e(g4, &u0, &u1, &u2, &u3);
        a1 = a1 + x0 * w0;
        a2 = a2 + y0 * w0;
        a3 = a3 + z0 * w0;
        a4 = a4 + u0 * w0;
        a1 = a1 + x1 * w1;
        a2 = a2 + y1 * w1;
        a3 = a3 + z1 * w1;
        a4 = a4 + u1 * w1;
        a1 = a1 + x2 * w2;
        a2 = a2 + y2 * w2;
        a3 = a3 + z2 * w2;
        a4 = a4 + u2 * w2;
        a1 = a1 + x3 * w3;
        a2 = a2 + y3 * w3;
        a3 = a3 + z3 * w3;
        a4 = a4 + u3 * w3;
    }
    n &= 3;
    for (o = 0; o < n; ++o) {
        const float w = products[o];
        const float t1 = g1[o] * w;
        const float t2 = g2[o] * w;
        const float t3 = g3[o] * w;
        const float t4 = g4[o] * w;
        a1 = a1 + t1;
        a2 = a2 + t2;
        a3 = a3 + t3;
        a4 = a4 + t4;
    }
    *d1 = a1;
    *d2 = a2;
    *d3 = a3;
    *d4 = a4;
}

static float dot_one(const float *g, const float *products, int32_t n, float d)
{
    const float *const end4 = products + (n & ~3);
    int32_t o;
    while (products != end4) {   /* four o at a time, as dot_quad */
        float w0, w1, w2, w3, x0, x1, x2, x3;
        products = tinyc_ld4a(products, &w0, &w1, &w2, &w3);
        g = tinyc_ld4b(g, &x0, &x1, &x2, &x3);
        d = d + x0 * w0;
        d = d + x1 * w1;
        d = d + x2 * w2;
        d = d + x3 * w3;
    }
    n &= 3;
    for (o = 0; o < n; ++o) {
        const float t = g[o] * products[o];
        d = d + t;
    }
    return d;
}

/* Channel c's planes: the depthwise output gradient (from the head, masked, and the depthwise
 * bias step; without a head it is read from gy), then, unless a tail, the depthwise input
 * gradient, masked, in plane_e. */
static void channel_planes(const tinyc_dw_pw_grad_params *p, const tinyc_dw_pw_grad_io *io,
                           int32_t c, float *plane_d, float *plane_e, float *products, float lr,
                           uint32_t step, tinyc_update_guard *guard)
{
    const tinyc_conv_grad_params *dw = &p->dw;
    const int32_t c_n = dw->out_c;
    const int32_t taps = dw->kernel_h * dw->kernel_w;
    const int32_t in_px = dw->in_h * dw->in_w;
    const int32_t out_px = dw->out_h * dw->out_w;
    const float *gd = io->gy + c;   /* channel c of the depthwise output gradient */
    int32_t gd_step = c_n, px, o;
    if (p->proj_c) {
        /* the terms tinyc_conv2d_grad_input adds to each pixel, in its o order; the products
         * of the project weights' column c computed once per chunk of o, each read for four
         * pixels at a time (a term with g == 0 adds +-0 to a sum that is never -0: adding it
         * is exact) */
        int32_t o0;
        for (px = 0; px < out_px; ++px) {
            plane_d[px] = 0.0f;
        }
        for (o0 = 0; o0 < p->proj_c; o0 += ROW_CHUNK) {
            const int32_t n = p->proj_c - o0 < ROW_CHUNK ? p->proj_c - o0 : ROW_CHUNK;
            const float *gp = io->gy + o0;
            const int32_t pc = p->proj_c;
            int32_t kept[4], m = 0;
            for (o = 0; o < n; ++o) {
                products[o] = io->proj_scale[o0 + o] * (float)io->proj_w[(o0 + o) * c_n + c];
            }
            for (px = 0; px < out_px; ++px) {
                if (!mask_keeps(io->dmask_bits, io->d_act, px * c_n + c, p->dmask_lo,
                                p->dmask_hi)) {
                    continue;
                }
                kept[m++] = px;
                if (m == 4) {
                    dot_quad(gp + kept[0] * pc, gp + kept[1] * pc, gp + kept[2] * pc,
                             gp + kept[3] * pc, products, n, plane_d + kept[0],
                             plane_d + kept[1], plane_d + kept[2], plane_d + kept[3]);
                    m = 0;
                }
            }
            if (m >= 2) {
                dot_pair(gp + kept[0] * pc, gp + kept[1] * pc, products, n, plane_d + kept[0],
                         plane_d + kept[1]);
            }
            if (m == 1 || m == 3) {
                plane_d[kept[m - 1]] = dot_one(gp + kept[m - 1] * pc, products, n,
                                               plane_d[kept[m - 1]]);
            }
        }
        if (io->dw_bias) {
            plane_bias_step(&p->dw_update, plane_d, out_px, c, io->dw_bias, io->dw_f_b, lr,
                            step, guard);
        }
        gd = plane_d;
        gd_step = 1;
    }
    if (!io->dw_w) {
        return;   /* a tail: the depthwise layer is the earliest trained one */
    }
    {
        const float *wr = dw_tap_products(io->dw_w + c * taps, io->dw_scale[c], taps, products);
        if (depthwise_plane_ok(dw, wr)) {
            depthwise_plane(dw, gd, gd_step, wr, io->mask_bits, io->act, p->mask_lo, p->mask_hi,
                            c, c_n, plane_e, 1);
        } else {
            for (px = 0; px < in_px; ++px) {
                plane_e[px] = mask_keeps(io->mask_bits, io->act, px * c_n + c, p->mask_lo,
                                         p->mask_hi)
                    ? depthwise_grad_at(dw, gd, NULL, 0, gd_step, io->dw_w + c * taps,
                                        io->dw_scale[c], wr, px / dw->in_w, px % dw->in_w)
                    : 0.0f;
            }
        }
    }
}

/* gx[px, i] += e[px] * (s * w[i]) for i in [i0, cin): the products computed once per chunk. */
static void add_channel_terms(float *gx, int32_t cin, int32_t in_px, const float *e,
                              const int8_t *w, float s, int32_t i0, float *products)
{
    int32_t i, px;
    for (; i0 + 8 <= cin; i0 += 8) {   /* eight products in registers */
        const float p0 = s * (float)w[i0], p1 = s * (float)w[i0 + 1];
        const float p2 = s * (float)w[i0 + 2], p3 = s * (float)w[i0 + 3];
        const float p4 = s * (float)w[i0 + 4], p5 = s * (float)w[i0 + 5];
        const float p6 = s * (float)w[i0 + 6], p7 = s * (float)w[i0 + 7];
        float *d = gx + i0;
        for (px = 0; px < in_px; ++px, d += cin) {
            const float g = e[px];
            if (g == 0.0f) {
                continue;
            }
            d[0] = d[0] + g * p0;
            d[1] = d[1] + g * p1;
            d[2] = d[2] + g * p2;
            d[3] = d[3] + g * p3;
            d[4] = d[4] + g * p4;
            d[5] = d[5] + g * p5;
            d[6] = d[6] + g * p6;
            d[7] = d[7] + g * p7;
        }
    }
    for (; i0 < cin; i0 += ROW_CHUNK) {
        const int32_t n = cin - i0 < ROW_CHUNK ? cin - i0 : ROW_CHUNK;
        for (i = 0; i < n; ++i) {
            products[i] = s * (float)w[i0 + i];
        }
        for (px = 0; px < in_px; ++px) {
            const float g = e[px];
            float *d = gx + px * cin + i0;
            if (g == 0.0f) {
                continue;
            }
            TINYC_UNROLL4
            for (i = 0; i < n; ++i) {
                const float t = g * products[i];
                d[i] = d[i] + t;
            }
        }
    }
}

/* The terms of channels c and c + 1 (planes e0, e1; rows w0, w1 with scales s0, s1), each gx
 * element getting c's term then c + 1's: sixteen products in registers for eight elements,
 * each element read and written once for both. Per pixel, only the planes whose value is not
 * zero add their terms (a term with g == 0 adds +-0 to a sum that is never -0: skipping it is
 * exact; ReLU masks zero many values, of one plane or of both); returns the first i not done. */
static int32_t add_pair_terms(float *gx, int32_t cin, int32_t in_px, const float *e0,
                              const float *e1, const int8_t *w0, const int8_t *w1, float s0,
                              float s1)
{
    int32_t i0, px;
    for (i0 = 0; i0 + 8 <= cin; i0 += 8) {
        const float p0 = s0 * (float)w0[i0], p1 = s0 * (float)w0[i0 + 1];
        const float p2 = s0 * (float)w0[i0 + 2], p3 = s0 * (float)w0[i0 + 3];
        const float p4 = s0 * (float)w0[i0 + 4], p5 = s0 * (float)w0[i0 + 5];
        const float p6 = s0 * (float)w0[i0 + 6], p7 = s0 * (float)w0[i0 + 7];
        const float q0 = s1 * (float)w1[i0], q1 = s1 * (float)w1[i0 + 1];
        const float q2 = s1 * (float)w1[i0 + 2], q3 = s1 * (float)w1[i0 + 3];
        const float q4 = s1 * (float)w1[i0 + 4], q5 = s1 * (float)w1[i0 + 5];
        const float q6 = s1 * (float)w1[i0 + 6], q7 = s1 * (float)w1[i0 + 7];
        float *d = gx + i0;
        for (px = 0; px < in_px; ++px, d += cin) {
            const float g = e0[px], h = e1[px];
            float x0, x1, x2, x3, x4, x5, x6, x7;
            if (g == 0.0f && h == 0.0f) {
                continue;
            }
            tinyc_get4a(d, &x0, &x1, &x2, &x3);   /* the eight elements, four at a time */
            tinyc_get4b(d + 4, &x4, &x5, &x6, &x7);
            if (g != 0.0f && h != 0.0f) {
                x0 = (x0 + g * p0) + h * q0;
                x1 = (x1 + g * p1) + h * q1;
                x2 = (x2 + g * p2) + h * q2;
                x3 = (x3 + g * p3) + h * q3;
                x4 = (x4 + g * p4) + h * q4;
                x5 = (x5 + g * p5) + h * q5;
                x6 = (x6 + g * p6) + h * q6;
                x7 = (x7 + g * p7) + h * q7;
            } else if (g != 0.0f) {
                x0 = x0 + g * p0; x1 = x1 + g * p1; x2 = x2 + g * p2; x3 = x3 + g * p3;
                x4 = x4 + g * p4; x5 = x5 + g * p5; x6 = x6 + g * p6; x7 = x7 + g * p7;
            } else {
                x0 = x0 + h * q0; x1 = x1 + h * q1; x2 = x2 + h * q2; x3 = x3 + h * q3;
                x4 = x4 + h * q4; x5 = x5 + h * q5; x6 = x6 + h * q6; x7 = x7 + h * q7;
            }
            tinyc_put4a(d, x0, x1, x2, x3);
            tinyc_put4b(d + 4, x4, x5, x6, x7);
        }
    }
    return i0;
}

void tinyc_depthwise_pointwise_grad(const tinyc_dw_pw_grad_params *p,
                                    const tinyc_dw_pw_grad_io *io, float lr, uint32_t step,
                                    tinyc_update_guard *guard)
{
    const int32_t c_n = p->dw.out_c;   /* = in_c (depthwise); a tail's layer may be any conv */
    const int32_t cin = p->in_c;
    const int32_t in_px = p->dw.in_h * p->dw.in_w;
    const int32_t out_px = p->dw.out_h * p->dw.out_w;
    const int32_t kept = io->weights ? p->update.num_channels : 0;
    float *plane_d = io->scratch;                          /* head only */
    float *plane_e = NULL, *update_scratch = NULL;
    int8_t *row = NULL;
    float products[ROW_CHUNK > DW_MAX_TAPS ? ROW_CHUNK : DW_MAX_TAPS];
    float x_table[256];   /* the expand layer's input, dequantized (tinyc_update_x_table) */
    const float *x_lut = NULL;
    float *xf = NULL;     /* the same, value by value (tinyc_update_x_float) */
    int32_t c, k, cb;
    if (!io->dw_w) {   /* a tail: the head alone */
        for (c = 0; c < c_n; ++c) {
            channel_planes(p, io, c, plane_d, NULL, products, lr, step, guard);
        }
        return;
    }
    /* scratch: [plane_d] plane_e of c, of c + 1, the update's scratch of c, of c + 1 (one
     * float per kept channel: 1x1, groups 1), two rows of split expand weights, then (x_float)
     * the expand layer's input as floats from the next multiple of 4 bytes */
    plane_e = io->scratch + (p->proj_c ? out_px : 0);
    update_scratch = plane_e + 2 * in_px;
    row = (int8_t *)(void *)(update_scratch + 2 * kept);
    memset(io->gx, 0, (size_t)(in_px * cin) * sizeof(float));
    if (io->weights && tinyc_update_uses_x_table(&p->update)) {
        tinyc_update_x_table(&p->update, x_table);
        x_lut = x_table;
        if (p->x_float && tinyc_update_pair_ok(&p->update)) {
            xf = update_scratch + 2 * kept + (2 * (io->pw_split ? cin : 0) + 3) / 4;
            tinyc_update_x_float(&p->update, io->x, x_table, xf);
        }
    }
    /* two channels at a time (the last alone when c_n is odd): each gx element still gets its
     * terms in c order, and each channel's update comes after its terms of gx */
    for (c = 0; c < c_n; c += cb) {
        const int8_t *w[2];
        int32_t i0 = 0;
        cb = c + 1 < c_n ? 2 : 1;
        for (k = 0; k < cb; ++k) {
            channel_planes(p, io, c + k, plane_d, plane_e + k * in_px, products, lr, step,
                           guard);
            if (io->pw_split) {
                tinyc_split_row(io->pw_split, c + k, row + k * cin);
            }
            w[k] = io->pw_w ? io->pw_w + (c + k) * cin : row + k * cin;
        }
        if (cb == 2) {
            i0 = add_pair_terms(io->gx, cin, in_px, plane_e, plane_e + in_px, w[0], w[1],
                                io->pw_scale[c], io->pw_scale[c + 1]);
        }
        for (k = 0; k < cb; ++k) {   /* the elements from i0: channel c's terms, then c + 1's */
            add_channel_terms(io->gx, cin, in_px, plane_e + k * in_px, w[k],
                              io->pw_scale[c + k], i0, products);
        }
        /* after their terms of gx: the unfused update runs after the input gradient */
        if (io->weights && x_lut && tinyc_update_pair_ok(&p->update)) {
            tinyc_conv2d_update_pair(&p->update, c, plane_e, cb == 2 ? plane_e + in_px : NULL,
                                     io->x, x_lut, xf, io->channels, io->weights, io->bias,
                                     io->f_w, io->f_b, lr, step, guard, update_scratch,
                                     update_scratch + kept);
            continue;
        }
        for (k = 0; k < cb; ++k) {
            if (io->weights) {
                tinyc_conv2d_update_channel_table(&p->update, c + k, plane_e + k * in_px, 1,
                                                  io->x, io->channels, io->weights, io->bias,
                                                  io->f_w, io->f_b, lr, step, guard,
                                                  update_scratch + k * kept, x_lut);
            } else if (io->bias) {
                plane_bias_step(&p->update, plane_e + k * in_px, in_px, c + k, io->bias,
                                io->f_b, lr, step, guard);
            }
        }
    }
}
