/* int8 depthwise convolution (TFLite reference DepthwiseConvPerChannel arithmetic), NHWC.
 * Weights are tinyc's OHWI with one input channel per group: (out_c, kh, kw, 1);
 * output channel oc reads input channel oc / depth_multiplier.
 *
 * One output channel is computed at a time from one input plane. Windows fully inside the input
 * use sum((x - zp) * w) = sum(x * w) - zp * sum(w) and no bounds checks; border windows skip the
 * padded taps (they contribute 0). Both give TFLite's int32 accumulator exactly. */
#include <string.h>

#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"
#include "tinyc/simd.h"

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

/* The output rows [y_lo, y_hi) and columns [x_lo, x_hi) whose windows lie inside the input:
 * the same for every channel, computed once per layer. */
typedef struct {
    int32_t y_lo, y_hi, x_lo, x_hi;
} dw_interior;

static dw_interior interior_of(const tinyc_conv_params *p)
{
    dw_interior b;
    interior_range(p->out_h, p->in_h, p->kernel_h, p->stride_h, p->pad_top, p->dilation_h,
                   &b.y_lo, &b.y_hi);
    interior_range(p->out_w, p->in_w, p->kernel_w, p->stride_w, p->pad_left, p->dilation_w,
                   &b.x_lo, &b.x_hi);
    return b;
}

#if TINYC_USE_DSP
/* The DSP variant of an interior window on a contiguous plane (in_stride 1, dilation 1): each
 * filter row is read four input bytes at a time and multiplied by its taps packed as int16
 * pairs (taps 0/2 and 1/3 of each group of four, zero past the row's end), two MACs per SMLAD.
 * The zero taps add 0: the accumulator is the portable loop's. */
#define TINYC_DW_MAX_GROUPS 32   /* kernel_h * ceil(kernel_w / 4): 7x7 needs 14 */

static uint32_t pair16(int32_t lo, int32_t hi)
{
    return ((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16);
}

static int32_t dw_pack_taps(const int8_t *wk, int32_t kh, int32_t kw, uint32_t *packed)
{
    const int32_t groups = (kw + 3) / 4;
    int32_t ky, gi, j;
    if (kw == 3) {   /* the common case, without the general loop's bookkeeping */
        for (ky = 0; ky < kh; ++ky, wk += 3) {
            packed[2 * ky] = pair16(wk[0], wk[2]);
            packed[2 * ky + 1] = pair16(wk[1], 0);
        }
        return 1;
    }
    for (ky = 0; ky < kh; ++ky) {
        for (gi = 0; gi < groups; ++gi) {
            int32_t t[4];
            for (j = 0; j < 4; ++j) {
                const int32_t kx = gi * 4 + j;
                t[j] = kx < kw ? wk[ky * kw + kx] : 0;
            }
            packed[2 * (ky * groups + gi)] = pair16(t[0], t[2]);
            packed[2 * (ky * groups + gi) + 1] = pair16(t[1], t[3]);
        }
    }
    return groups;
}

/* Outputs [0, n) of one row of interior windows, the first window's top-left input at `row`,
 * the next ones `step` bytes further; output k to out[k * out_stride]. */
static void dw_span_dsp(const tinyc_conv_params *p, const int8_t *row, int32_t step, int32_t n,
                        int32_t kh, int32_t groups, const uint32_t *packed, int32_t acc0,
                        int32_t mult, int32_t shift, int8_t *restrict out, int32_t out_stride)
{
    const int32_t in_w = p->in_w;
    const int32_t out_zp = p->out_zp, act_min = p->act_min, act_max = p->act_max;
    int32_t k, ky, gi;
    if (groups == 1 && kh == 3) {   /* 3x3: the taps in registers, the rows unrolled */
        const uint32_t w0a = packed[0], w0b = packed[1], w1a = packed[2], w1b = packed[3];
        const uint32_t w2a = packed[4], w2b = packed[5];
        for (k = 0; k < n; ++k, row += step, out += out_stride) {
            const uint32_t v0 = tinyc_read4(row);
            const uint32_t v1 = tinyc_read4(row + in_w);
            const uint32_t v2 = tinyc_read4(row + 2 * in_w);
            int32_t acc = tinyc_smlad(tinyc_sxtb16(v0), w0a, acc0);
            acc = tinyc_smlad(tinyc_sxtb16_ror8(v0), w0b, acc);
            acc = tinyc_smlad(tinyc_sxtb16(v1), w1a, acc);
            acc = tinyc_smlad(tinyc_sxtb16_ror8(v1), w1b, acc);
            acc = tinyc_smlad(tinyc_sxtb16(v2), w2a, acc);
            acc = tinyc_smlad(tinyc_sxtb16_ror8(v2), w2b, acc);
            *out = (int8_t)tinyc_requant_dsp(acc, mult, shift, out_zp, act_min, act_max);
        }
        return;
    }
    for (k = 0; k < n; ++k, row += step, out += out_stride) {
        const uint32_t *w = packed;
        const int8_t *r = row;
        int32_t acc = acc0;
        for (ky = 0; ky < kh; ++ky, r += in_w) {
            for (gi = 0; gi < groups; ++gi, w += 2) {
                const uint32_t v = tinyc_read4(r + 4 * gi);
                acc = tinyc_smlad(tinyc_sxtb16(v), w[0], acc);
                acc = tinyc_smlad(tinyc_sxtb16_ror8(v), w[1], acc);
            }
        }
        *out = (int8_t)tinyc_requant_dsp(acc, mult, shift, out_zp, act_min, act_max);
    }
}
#endif

/* One output channel from input plane `plane` (element (y, x) at plane[(y * in_w + x) *
 * in_stride]), written to out[(oy * out_w + ox) * out_stride]. `readable`: for a plane
 * gathered into scratch (in_stride 1), the bytes that may be read from `plane` on; else 0. */
static void dw_plane(const tinyc_conv_params *p, const dw_interior *b, const int8_t *plane,
                     int32_t in_stride, int32_t readable, const int8_t *wk, int32_t bias,
                     int32_t mult, int32_t shift, int8_t *out, int32_t out_stride)
{
    const int32_t in_off = -p->in_zp;
    const int32_t kh = p->kernel_h, kw = p->kernel_w;
    const int32_t dy = p->dilation_h * p->in_w * in_stride;
    const int32_t dx = p->dilation_w * in_stride;
    const int32_t y_lo = b->y_lo, y_hi = b->y_hi, x_lo = b->x_lo, x_hi = b->x_hi;
    int32_t wsum = 0, oy, ox, ky, kx, i;

    for (i = 0; i < kh * kw; ++i) {
        wsum += wk[i];
    }

#if !TINYC_USE_DSP
    (void)readable;   /* the portable loop treats every plane alike */
#else
    /* on a gathered plane, the interior windows of each row in one go */
    uint32_t packed[2 * TINYC_DW_MAX_GROUPS];
    const int dsp = readable > 0 && p->dilation_h == 1 && p->dilation_w == 1 &&
                    kh * ((kw + 3) / 4) <= TINYC_DW_MAX_GROUPS;
    const int32_t groups = dsp ? dw_pack_taps(wk, kh, kw, packed) : 0;
#endif

    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        const int y_inside = oy >= y_lo && oy < y_hi;
#if TINYC_USE_DSP
        /* the 4-byte reads may run past a row's end (onto zero taps), never past the readable
         * bytes: from ix0 in the window's last row, 4 * groups bytes must be left */
        int32_t x_end = x_lo;
        if (dsp && y_inside) {
            const int32_t room = readable - (iy0 + kh - 1) * p->in_w - 4 * groups;
            x_end = room >= (x_hi - 1) * p->stride_w - p->pad_left ? x_hi   /* all of them */
                    : room < -p->pad_left ? x_lo : (room + p->pad_left) / p->stride_w + 1;
            x_end = x_end > x_hi ? x_hi : (x_end < x_lo ? x_lo : x_end);
        }
#endif
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            int32_t acc = bias;
#if TINYC_USE_DSP
            if (ox == x_lo && x_end > x_lo) {
                dw_span_dsp(p, plane + iy0 * p->in_w + ix0, p->stride_w, x_end - x_lo, kh,
                            groups, packed, bias + in_off * wsum, mult, shift,
                            out + (oy * p->out_w + ox) * out_stride, out_stride);
                ox = x_end - 1;
                continue;
            }
#endif
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
    const dw_interior b = interior_of(p);
    int32_t oc;
    for (oc = 0; oc < p->out_c; ++oc) {
        dw_plane(p, &b, in + oc / depth_mult, p->in_c, 0, weights + oc * ksize, bias ? bias[oc] : 0,
                 mult[oc], shift[oc], out + oc, p->out_c);
    }
}

/* The padded plane's rows or columns: the padding before, the input, and the padding after
 * that the last window reaches (none when the stride skips the input's last rows). */
static int32_t padded_extent(int32_t out, int32_t in, int32_t kernel, int32_t stride,
                             int32_t pad, int32_t dilation)
{
    const int32_t reach = (out - 1) * stride + (kernel - 1) * dilation + 1;
    return reach > pad + in ? reach : pad + in;
}

int32_t tinyc_dw_padded_plane_bytes(const tinyc_conv_params *p)
{
    return padded_extent(p->out_h, p->in_h, p->kernel_h, p->stride_h, p->pad_top,
                         p->dilation_h) *
               padded_extent(p->out_w, p->in_w, p->kernel_w, p->stride_w, p->pad_left,
                             p->dilation_w) +
           TINYC_DW_PLANE_SLACK;
}

void tinyc_depthwise_conv_inplace(const tinyc_conv_params *p, int8_t *buf,
                                  const int8_t *weights, const int32_t *bias,
                                  const int32_t *mult, const int32_t *shift, int8_t *scratch,
                                  int32_t scratch_bytes)
{
    const int32_t channels = p->in_c;   /* == out_c */
    const int32_t ksize = p->kernel_h * p->kernel_w;
    /* (negative pads crop the input, as a patch schedule's tiles do: the plane as it is) */
    const int padded = p->pad_top >= 0 && p->pad_left >= 0 &&
                       scratch_bytes >= tinyc_dw_padded_plane_bytes(p);
    tinyc_conv_params q = *p;   /* padded: the same conv over the padded plane, no padding */
    dw_interior b;
    int32_t c, y, x;

    if (padded) {
        q.in_h = padded_extent(p->out_h, p->in_h, p->kernel_h, p->stride_h, p->pad_top,
                               p->dilation_h);
        q.in_w = padded_extent(p->out_w, p->in_w, p->kernel_w, p->stride_w, p->pad_left,
                               p->dilation_w);
        q.pad_top = 0;
        q.pad_left = 0;
        /* the padding holds the input zero point (it contributes exactly 0) and stays: only the
         * input positions are rewritten for each channel */
        memset(scratch, (int8_t)p->in_zp, (size_t)scratch_bytes);
    }
    b = interior_of(&q);
    for (c = 0; c < channels; ++c) {
        const int8_t *src = buf + c;
        for (y = 0; y < p->in_h; ++y) {
            int8_t *dst = scratch + (y + (padded ? p->pad_top : 0)) * q.in_w +
                          (padded ? p->pad_left : 0);
            for (x = 0; x + 3 < p->in_w; x += 4, src += 4 * channels) {   /* unrolled */
                dst[x] = src[0];
                dst[x + 1] = src[channels];
                dst[x + 2] = src[2 * channels];
                dst[x + 3] = src[3 * channels];
            }
            for (; x < p->in_w; ++x, src += channels) {
                dst[x] = *src;
            }
        }
        dw_plane(&q, &b, scratch, 1, scratch_bytes, weights + c * ksize, bias ? bias[c] : 0,
                 mult[c], shift[c], buf + c, channels);
    }
}
