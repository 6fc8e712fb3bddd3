/* int8 average / max pooling (TFLite reference integer_ops pooling arithmetic), NHWC. */
#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"
#include "tinyc/simd.h"

/* TFLite's rounded average of an int8 window: (sum + count / 2) / count for sum > 0, else
 * (sum - count / 2) / count (C's division truncates). For sum == 0 both give 0 (half < count),
 * so the sign of the half can follow sum's sign bit without a branch. */
static TINYC_ALWAYS_INLINE int32_t avg_of(int32_t sum, int32_t count, int32_t half)
{
    const int32_t neg = sum >> 31;   /* -1 when sum < 0 */
    return (sum + ((half ^ neg) - neg)) / count;
}

static TINYC_ALWAYS_INLINE int8_t avg_out(int32_t sum, int32_t count, int32_t half, int32_t lo,
                                          int32_t hi)
{
    return (int8_t)tinyc_clamp_i32(avg_of(sum, count, half), lo, hi);
}

#if TINYC_USE_DSP
/* Channels [0, 4 * (c / 4)) of one window, four at a time: each pixel's four channels in one
 * load, summed in 16-bit lanes by two SXTAB16 (channels 0, 2 and 1, 3). Exact for windows of
 * at most 256 pixels (|sum| <= 256 * 128 = 2^15). No clamp: the caller's is int8's, which an
 * average of int8 values (padding at an int8 zero point) never leaves. Returns the channels
 * done. */
static int32_t avg_pool_4ch(const tinyc_pool_params *p, const tinyc_window *w, const int8_t *in,
                            int32_t pad_term, int32_t count, int8_t *o)
{
    const int32_t c = p->channels, half = count / 2;
    int32_t rows = w->y1 - w->y0, cols = w->x1 - w->x0;
    int32_t row_skip = (p->in_w - cols) * c;   /* from a row's end to the next's start */
    int32_t ch;
    if (row_skip == 0) {   /* whole rows: one run of pixels */
        cols *= rows;
        rows = 1;
    }
    for (ch = 0; ch + 4 <= c; ch += 4) {
        const int8_t *px = in + (w->y0 * p->in_w + w->x0) * c + ch;
        uint32_t acc02 = 0, acc13 = 0;
        int32_t y, x;
        for (y = rows; y > 0; --y) {
            for (x = cols; x > 0; --x) {
                const uint32_t v = tinyc_read4(px);
                acc02 = tinyc_sxtab16(acc02, v);
                acc13 = tinyc_sxtab16_ror8(acc13, v);
                px += c;
            }
            px += row_skip;
        }
        o[ch] = (int8_t)avg_of((int16_t)(acc02 & 0xFFFFu) + pad_term, count, half);
        o[ch + 1] = (int8_t)avg_of((int16_t)(acc13 & 0xFFFFu) + pad_term, count, half);
        o[ch + 2] = (int8_t)avg_of((int16_t)(acc02 >> 16) + pad_term, count, half);
        o[ch + 3] = (int8_t)avg_of((int16_t)(acc13 >> 16) + pad_term, count, half);
    }
    return ch;
}
#endif

void tinyc_avg_pool(const tinyc_pool_params *p, const int8_t *in, int8_t *out)
{
    const int32_t c = p->channels;
    int32_t oy, ox, ch, y, x;
    for (oy = 0; oy < p->out_h; ++oy) {
        for (ox = 0; ox < p->out_w; ++ox) {
            const tinyc_window w = tinyc_pool_window(p, oy, ox);
            const int32_t valid = (w.y1 - w.y0) * (w.x1 - w.x0);
            const int32_t count = p->count_include_pad ? p->kernel_h * p->kernel_w : valid;
            /* the padded positions count at the zero point's value */
            const int32_t pad_term = (count - valid) * p->zero_point;
            int8_t *o = out + (oy * p->out_w + ox) * c;
            if (count <= 0) {   /* window entirely outside (never for valid shapes) */
                for (ch = 0; ch < c; ++ch) {
                    o[ch] = (int8_t)tinyc_clamp_i32(p->zero_point, p->act_min, p->act_max);
                }
                continue;
            }
            ch = 0;
#if TINYC_USE_DSP
            if (valid <= 256 && p->act_min == TINYC_INT8_MIN && p->act_max == TINYC_INT8_MAX) {
                ch = avg_pool_4ch(p, &w, in, pad_term, count, o);
            }
#endif
            for (; ch < c; ++ch) {
                int32_t sum = pad_term;
                for (y = w.y0; y < w.y1; ++y) {
                    const int8_t *row = in + (y * p->in_w) * c + ch;
                    for (x = w.x0; x < w.x1; ++x) {
                        sum += row[x * c];
                    }
                }
                o[ch] = avg_out(sum, count, count / 2, p->act_min, p->act_max);
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
