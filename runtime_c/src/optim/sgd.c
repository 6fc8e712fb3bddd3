/* Integer-domain SGD update of a conv / fully connected layer, in place, with QAS factors
 * (f_w, f_b) and nearest or stochastic rounding; operation order of compiler/reference/train.py
 * (conv_update, weight_grad, bias_grad). Steps are held to the quantizer's ranges and pass the
 * update guard (train.h) channel by channel. */
#include <math.h>
#include <string.h>

#include "tinyc/simd.h"
#include "tinyc/train.h"

#define TINYC_STEP_MULT 2654435761u
#define TINYC_BIAS_COUNTER (1u << 30)

/* tinyc_floorf, tinyc_round_stochastic and tinyc_round_nearest (loss.c)
 * with the same operations, here where the compiler can inline them into the weight loop
 * (the stochastic one: stochastic_weight_step) */
static float floor_f(float x)
{
    int32_t i;
    float f;
    if (!(x > -8388608.0f && x < 8388608.0f)) {
        return x;
    }
    i = (int32_t)x;
    f = (float)i;
    return f > x ? f - 1.0f : f;
}

static float nearest_round(float x)
{
    return x >= 0.0f ? floor_f(x + 0.5f) : -floor_f(-(x - 0.5f));
}

static float round_step(float x, int32_t stochastic, uint32_t counter)
{
    return stochastic ? tinyc_round_stochastic(x, counter) : tinyc_round_nearest(x);
}

/* b - r held in [-TINYC_BIAS_LIMIT, TINYC_BIAS_LIMIT]; *saturates: the step carries b past a
 * bound it was not already at. r is integral (or infinite), never NaN. */
static int32_t bias_step(int32_t b, float r, int32_t *saturates)
{
    int64_t v;
    if (r < -2147483648.0f) {
        r = -2147483648.0f;
    } else if (r > 2147483520.0f) {
        r = 2147483520.0f;   /* the largest float32 below 2^31 */
    }
    v = (int64_t)b - (int64_t)r;
    if (v > TINYC_BIAS_LIMIT) {
        *saturates = b < TINYC_BIAS_LIMIT;
        return TINYC_BIAS_LIMIT;
    }
    if (v < -TINYC_BIAS_LIMIT) {
        *saturates = b > -TINYC_BIAS_LIMIT;
        return -TINYC_BIAS_LIMIT;
    }
    *saturates = 0;
    return (int32_t)v;
}

/* w - r held in [-TINYC_WEIGHT_LIMIT, TINYC_WEIGHT_LIMIT]; *saturates as bias_step's. */
static int8_t weight_step(int8_t w, float r, int32_t *saturates)
{
    const float v = (float)w - r;
    if (v > (float)TINYC_WEIGHT_LIMIT) {
        *saturates = w < TINYC_WEIGHT_LIMIT;
        return TINYC_WEIGHT_LIMIT;
    }
    if (v < (float)-TINYC_WEIGHT_LIMIT) {
        *saturates = w > -TINYC_WEIGHT_LIMIT;
        return -TINYC_WEIGHT_LIMIT;
    }
    *saturates = 0;
    return (int8_t)v;
}

/* weight_step(w, stochastic_round(d, counter), saturates) in integers where d + u lies within
 * floor_f's exact range (+-2^23): floor and difference are then exact integers either way, so
 * the new weight and the saturation are the same; elsewhere (huge, infinite or NaN steps) it
 * takes the float path itself. */
static int8_t stochastic_weight_step(int8_t w, float d, uint32_t counter, int32_t *saturates)
{
    const float x = d + (float)(tinyc_lowbias32(counter) >> 8) * 0x1p-24f;
    int32_t i, v;
    if (!(x > -8388608.0f && x < 8388608.0f)) {
        return weight_step(w, x, saturates);   /* floor_f(x) is x */
    }
    i = (int32_t)x;
    if ((float)i > x) {
        --i;
    }
    v = (int32_t)w - i;
    if (v > TINYC_WEIGHT_LIMIT) {
        *saturates = w < TINYC_WEIGHT_LIMIT;
        return TINYC_WEIGHT_LIMIT;
    }
    if (v < -TINYC_WEIGHT_LIMIT) {
        *saturates = w > -TINYC_WEIGHT_LIMIT;
        return -TINYC_WEIGHT_LIMIT;
    }
    *saturates = 0;
    return (int8_t)v;
}

/* The usual case of channel_step's row (stochastic rounding, kept channels contiguous): the
 * new weights new_w[j] = stochastic_weight_step(w[j], (lr * acc[j]) * fw, counter + j); returns
 * how many saturate, or -1 when a gradient is not finite (the row is then refused: its new
 * weights are never written). new_w may lie over acc (byte j over the float acc[j / 4], read
 * before). The finiteness test is the slow path's: a finite step keeps d + u inside floor_f's
 * exact range, and a non-finite gradient never does (inf and NaN times anything: inf, NaN). */
static int32_t stochastic_row(const float *acc, const int8_t *w, int8_t *new_w, int32_t n,
                              float lr, float fw, uint32_t counter)
{
    int32_t j, saturated = 0, saturates;
    for (j = 0; j < n; ++j) {
        const float a = acc[j];
        const float d = (lr * a) * fw;
        const int32_t wj = w[j];
        const float x = d + (float)(tinyc_lowbias32(counter + (uint32_t)j) >> 8) * 0x1p-24f;
        int32_t i, v;
        if (!(fabsf(x) < 8388608.0f)) {   /* also false for NaN */
            if (!isfinite(a)) {
                return -1;
            }
            new_w[j] = weight_step((int8_t)wj, x, &saturates);   /* floor_f(x) is x */
            saturated += saturates;
            continue;
        }
        i = (int32_t)x;
        if ((float)i > x) {
            --i;
        }
        v = wj - i;
        if (v > TINYC_WEIGHT_LIMIT) {
            saturated += wj < TINYC_WEIGHT_LIMIT;
            v = TINYC_WEIGHT_LIMIT;
        } else if (v < -TINYC_WEIGHT_LIMIT) {
            saturated += wj > -TINYC_WEIGHT_LIMIT;
            v = -TINYC_WEIGHT_LIMIT;
        }
        new_w[j] = (int8_t)v;
    }
    return saturated;
}

int tinyc_guard_refuses(tinyc_update_guard *guard, int32_t nonfinite, int32_t saturated,
                        int32_t elements)
{
    ++guard->updates;
    if (nonfinite) {
        ++guard->refused_nonfinite;
        return 1;
    }
    if ((int64_t)saturated * 100 > (int64_t)elements * TINYC_GUARD_SATURATED_PERCENT) {
        ++guard->refused_saturation;
        return 1;
    }
    return 0;
}

/* The integer step of bias[o] (its rounding counter: TINYC_BIAS_COUNTER + o). */
static float bias_delta(const tinyc_conv_update_params *p, int32_t o, float gb, const float *f_b,
                        float lr, uint32_t base)
{
    float d = lr * gb;
    d = d * f_b[o];
    return round_step(d, p->stochastic, base + TINYC_BIAS_COUNTER + (uint32_t)o);
}

void tinyc_bias_update(const tinyc_conv_update_params *p, int32_t o, float gb, int32_t *bias,
                       const float *f_b, float lr, uint32_t step, tinyc_update_guard *guard)
{
    const uint32_t base = step * TINYC_STEP_MULT + p->salt;
    int32_t saturates = 0, b = bias[o];
    if (isfinite(gb)) {
        b = bias_step(bias[o], bias_delta(p, o, gb, f_b, lr, base), &saturates);
    }
    if (!tinyc_guard_refuses(guard, !isfinite(gb), saturates, 1)) {
        bias[o] = b;
    }
}

void tinyc_update_x_table(const tinyc_conv_update_params *p, float *table)
{
    int32_t b;
    for (b = -128; b < 128; ++b) {
        table[b + 128] = p->x_scale * (float)(b - p->x_zero_point);
    }
}

/* Whether the gradient of p's weights is a 1x1 conv's (stride 1, no padding, one input pixel
 * per output pixel): tinyc_pointwise_weight_grad's case. */
static int is_pointwise(const tinyc_conv_grad_params *c)
{
    return c->kernel_h == 1 && c->kernel_w == 1 && c->stride_h == 1 && c->stride_w == 1
        && c->pad_top == 0 && c->pad_left == 0 && c->in_h == c->out_h && c->in_w == c->out_w;
}

int tinyc_update_uses_x_table(const tinyc_conv_update_params *p)
{
    return p->num_channels > 0 && is_pointwise(&p->conv);
}

/* acc[j] = sum over pixels q (ascending, g(q) = gy[q * gy_step] != 0) of g(q) * xr[q, j] for
 * j < n, xr[q, j] = table[x[q * k + j] + 128]: the sums of the general loop below, eight (then
 * four, then one) accumulators in registers, each int8 input converted by one table read.
 * Returns the bias gradient (the nonzero g(q) summed in q order). */
static float pointwise_weight_grad(const float *gy, int32_t gy_step, int32_t pixels,
                                   const int8_t *x, int32_t k, int32_t n, const float *table,
                                   float *acc)
{
    const float *t = table + 128;
    float gb = 0.0f;
    int32_t q, j = 0;
    for (q = 0; q < pixels; ++q) {
        const float g = gy[q * gy_step];
        if (g != 0.0f) {
            gb = gb + g;
        }
    }
    for (; j + 8 <= n; j += 8) {
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, a4 = 0.0f, a5 = 0.0f, a6 = 0.0f,
              a7 = 0.0f;
        const int8_t *xp = x + j;
        for (q = 0; q < pixels; ++q, xp += k) {
            const float g = gy[q * gy_step];
            if (g == 0.0f) {
                continue;   /* adds +-0 to sums that are never -0: skipping it is exact */
            }
            a0 = a0 + g * t[xp[0]];
            a1 = a1 + g * t[xp[1]];
            a2 = a2 + g * t[xp[2]];
            a3 = a3 + g * t[xp[3]];
            a4 = a4 + g * t[xp[4]];
            a5 = a5 + g * t[xp[5]];
            a6 = a6 + g * t[xp[6]];
            a7 = a7 + g * t[xp[7]];
        }
        acc[j] = a0;
        acc[j + 1] = a1;
        acc[j + 2] = a2;
        acc[j + 3] = a3;
        acc[j + 4] = a4;
        acc[j + 5] = a5;
        acc[j + 6] = a6;
        acc[j + 7] = a7;
    }
    for (; j + 4 <= n; j += 4) {
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        const int8_t *xp = x + j;
        for (q = 0; q < pixels; ++q, xp += k) {
            const float g = gy[q * gy_step];
            if (g == 0.0f) {
                continue;
            }
            a0 = a0 + g * t[xp[0]];
            a1 = a1 + g * t[xp[1]];
            a2 = a2 + g * t[xp[2]];
            a3 = a3 + g * t[xp[3]];
        }
        acc[j] = a0;
        acc[j + 1] = a1;
        acc[j + 2] = a2;
        acc[j + 3] = a3;
    }
    for (; j < n; ++j) {
        float a0 = 0.0f;
        const int8_t *xp = x + j;
        for (q = 0; q < pixels; ++q, xp += k) {
            const float g = gy[q * gy_step];
            if (g != 0.0f) {
                a0 = a0 + g * t[xp[0]];
            }
        }
        acc[j] = a0;
    }
    return gb;
}

/* The step of output channel o from its gradients (bias: gb; weights: scratch, n kept channels
 * from j0, split weights at `at`): what tinyc_conv2d_update_channel does after summing them.
 * The guard (train.h): every step of o is computed, and checked, before any is written. */
static void channel_step(const tinyc_conv_update_params *p, int32_t o, float gb, int32_t j0,
                         int32_t n, int32_t at, const int32_t *channels, int8_t *weights,
                         int32_t *bias, const float *f_w, const float *f_b, float lr,
                         uint32_t step, tinyc_update_guard *guard, float *scratch)
{
    const tinyc_conv_grad_params *c = &p->conv;
    const int32_t cin_g = c->in_c / c->groups;
    const int32_t cout_g = c->out_c / c->groups;
    const uint32_t base = step * TINYC_STEP_MULT + p->salt;
    const int32_t kk = c->kernel_h * c->kernel_w;
    const int32_t grp = o / cout_g;
    const int32_t split = p->split_weights, stochastic = p->stochastic;
    int32_t t, j, new_bias = 0;
    int32_t nonfinite = 0, saturated = 0, saturates = 0;
    if (bias) {
        nonfinite = !isfinite(gb);
        if (!nonfinite) {
            new_bias = bias_step(bias[o], bias_delta(p, o, gb, f_b, lr, base), &saturated);
        }
    }
    /* one pass computes each new weight and counts the saturating ones (the new weights are
     * kept as bytes over the gradients already read: byte t * n + j of scratch lies in a float
     * at or before acc[j]); the second only stores them */
    for (t = 0; t < kk && n > 0 && !nonfinite; ++t) {
        const float *acc = scratch + t * n;
        int8_t *new_w = (int8_t *)(void *)scratch + t * n;
        const int32_t row = (o * kk + t) * cin_g - grp * cin_g;   /* + the global channel */
        const int8_t *w_at = split ? weights + at + t * n : weights + row;
        const float fw = f_w[o];
        const uint32_t row_base = base + (uint32_t)row;
        if (stochastic && !channels) {   /* the usual case: kept channels j0.., no lookups */
            const int32_t s = stochastic_row(acc, split ? w_at : w_at + j0, new_w, n, lr, fw,
                                             row_base + (uint32_t)j0);
            if (s < 0) {
                nonfinite = 1;
            } else {
                saturated += s;
            }
            continue;
        }
        for (j = 0; j < n; ++j) {
            const int32_t ch = channels ? channels[j0 + j] : j0 + j;
            const int8_t w = split ? w_at[j] : w_at[ch];
            const float a = acc[j];
            float d;
            if (!isfinite(a)) {
                nonfinite = 1;
                break;
            }
            d = lr * a;
            d = d * fw;
            /* the counter is the logical (OHWI) index wherever the weight is stored */
            new_w[j] = stochastic ? stochastic_weight_step(w, d, row_base + (uint32_t)ch,
                                                           &saturates)
                                  : weight_step(w, nearest_round(d), &saturates);
            saturated += saturates;
        }
    }
    if (tinyc_guard_refuses(guard, nonfinite, saturated, kk * n + (bias ? 1 : 0))) {
        return;
    }
    if (bias) {
        bias[o] = new_bias;
    }
    for (t = 0; t < kk && n > 0; ++t) {
        const int8_t *new_w = (const int8_t *)(const void *)scratch + t * n;
        int8_t *w_at = split ? weights + at + t * n
                             : weights + (o * kk + t) * cin_g - grp * cin_g;
        if (split || !channels) {
            memcpy(split ? w_at : w_at + j0, new_w, (size_t)n);
            continue;
        }
        for (j = 0; j < n; ++j) {
            w_at[channels ? channels[j0 + j] : j0 + j] = new_w[j];
        }
    }
}


/* acc0[j] (acc1[j]) = sum over pixels q (ascending) of gy0[q] * xr[q, j] (gy1's) for j < k:
 * pointwise_weight_grad's sums, xr[q, j] = X(xp[j]) with xp the row of pixel q (the int8 input
 * through the table, or its floats from tinyc_update_x_float). Eight sums of each plane in
 * registers; per pixel, only the planes whose value is not zero add their terms (a zero term
 * adds +-0 to a sum that is never -0: skipping it is exact; ReLU masks zero many of them, one
 * plane's or both). gy1 NULL: gy0 alone. */
#define TINYC_WEIGHT_GRAD_PAIR(name, T, X, LOAD8)                                            \
    static void name(const float *gy0, const float *gy1, int32_t pixels, const T *x,        \
                     const float *t, int32_t k, float *acc0, float *acc1)                    \
    {                                                                                         \
        int32_t q, j = 0;                                                                     \
        (void)t;                                                                              \
        for (; j + 8 <= k; j += 8) {                                                          \
            float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, a4 = 0.0f, a5 = 0.0f,           \
                  a6 = 0.0f, a7 = 0.0f;                                                       \
            float b0 = 0.0f, b1 = 0.0f, b2 = 0.0f, b3 = 0.0f, b4 = 0.0f, b5 = 0.0f,           \
                  b6 = 0.0f, b7 = 0.0f;                                                       \
            const T *xp = x + j;                                                              \
            for (q = 0; q < pixels; ++q, xp += k) {                                           \
                const float g = gy0[q], h = gy1 ? gy1[q] : 0.0f;                              \
                float v0, v1, v2, v3, v4, v5, v6, v7;                                         \
                if (g == 0.0f && h == 0.0f) {                                                 \
                    continue;                                                                 \
                }                                                                             \
                LOAD8(xp);                                                                    \
                if (g != 0.0f && h != 0.0f) {                                                 \
                    a0 = a0 + g * v0; b0 = b0 + h * v0; a1 = a1 + g * v1; b1 = b1 + h * v1;   \
                    a2 = a2 + g * v2; b2 = b2 + h * v2; a3 = a3 + g * v3; b3 = b3 + h * v3;   \
                    a4 = a4 + g * v4; b4 = b4 + h * v4; a5 = a5 + g * v5; b5 = b5 + h * v5;   \
                    a6 = a6 + g * v6; b6 = b6 + h * v6; a7 = a7 + g * v7; b7 = b7 + h * v7;   \
                } else if (g != 0.0f) {                                                       \
                    a0 = a0 + g * v0; a1 = a1 + g * v1; a2 = a2 + g * v2; a3 = a3 + g * v3;   \
                    a4 = a4 + g * v4; a5 = a5 + g * v5; a6 = a6 + g * v6; a7 = a7 + g * v7;   \
                } else {                                                                      \
                    b0 = b0 + h * v0; b1 = b1 + h * v1; b2 = b2 + h * v2; b3 = b3 + h * v3;   \
                    b4 = b4 + h * v4; b5 = b5 + h * v5; b6 = b6 + h * v6; b7 = b7 + h * v7;   \
                }                                                                             \
            }                                                                                 \
            acc0[j] = a0; acc0[j + 1] = a1; acc0[j + 2] = a2; acc0[j + 3] = a3;               \
            acc0[j + 4] = a4; acc0[j + 5] = a5; acc0[j + 6] = a6; acc0[j + 7] = a7;           \
            if (gy1) {                                                                        \
                acc1[j] = b0; acc1[j + 1] = b1; acc1[j + 2] = b2; acc1[j + 3] = b3;           \
                acc1[j + 4] = b4; acc1[j + 5] = b5; acc1[j + 6] = b6; acc1[j + 7] = b7;       \
            }                                                                                 \
        }                                                                                     \
        for (; j < k; ++j) {                                                                  \
            float a0 = 0.0f, b0 = 0.0f;                                                       \
            const T *xp = x + j;                                                              \
            for (q = 0; q < pixels; ++q, xp += k) {                                           \
                const float v = X(xp[0]);                                                     \
                a0 = a0 + gy0[q] * v;                                                         \
                if (gy1) {                                                                    \
                    b0 = b0 + gy1[q] * v;                                                     \
                }                                                                             \
            }                                                                                 \
            acc0[j] = a0;                                                                     \
            if (gy1) {                                                                        \
                acc1[j] = b0;                                                                 \
            }                                                                                 \
        }                                                                                     \
    }

/* eight inputs of a row: through the table, or floats four at a time (tinyc_get4a/b) */
#define TINYC_X_TABLE(b) t[128 + (b)]
#define TINYC_X_FLOAT(v) (v)
#define TINYC_LOAD8_TABLE(xp)                                                                \
    (v0 = t[128 + (xp)[0]], v1 = t[128 + (xp)[1]], v2 = t[128 + (xp)[2]],                  \
     v3 = t[128 + (xp)[3]], v4 = t[128 + (xp)[4]], v5 = t[128 + (xp)[5]],                  \
     v6 = t[128 + (xp)[6]], v7 = t[128 + (xp)[7]])
#define TINYC_LOAD8_FLOAT(xp)                                                                \
    (tinyc_get4a((xp), &v0, &v1, &v2, &v3), tinyc_get4b((xp) + 4, &v4, &v5, &v6, &v7))
TINYC_WEIGHT_GRAD_PAIR(pointwise_weight_grad_pair, int8_t, TINYC_X_TABLE, TINYC_LOAD8_TABLE)
TINYC_WEIGHT_GRAD_PAIR(pointwise_weight_grad_float, float, TINYC_X_FLOAT, TINYC_LOAD8_FLOAT)

void tinyc_update_x_float(const tinyc_conv_update_params *p, const int8_t *x,
                          const float *x_table, float *xf)
{
    const int32_t n = p->conv.in_h * p->conv.in_w * p->num_channels;
    const float *t = x_table + 128;
    int32_t i;
    for (i = 0; i < n; ++i) {
        xf[i] = t[x[i]];
    }
}

/* The bias gradient of a plane of tinyc_depthwise_pointwise_grad (sums started at +0, or +0:
 * never -0): its zeros add +0 to a sum that is never -0, so adding them instead of skipping
 * them (tinyc_conv2d_update) is exact. */
static float plane_sum(const float *g, int32_t n)
{
    float s = 0.0f;
    int32_t q;
    TINYC_UNROLL4
    for (q = 0; q < n; ++q) {
        s = s + g[q];
    }
    return s;
}

int tinyc_update_pair_ok(const tinyc_conv_update_params *p)
{
    return tinyc_update_uses_x_table(p) && p->conv.groups == 1;
}

void tinyc_conv2d_update_pair(const tinyc_conv_update_params *p, int32_t o, const float *gy0,
                              const float *gy1, const int8_t *x, const float *x_table,
                              const float *xf, const int32_t *channels, int8_t *weights,
                              int32_t *bias, const float *f_w, const float *f_b, float lr,
                              uint32_t step, tinyc_update_guard *guard, float *scratch0,
                              float *scratch1)
{
    const int32_t k = p->num_channels;
    const int32_t pixels = p->conv.out_h * p->conv.out_w;
    if (xf) {
        pointwise_weight_grad_float(gy0, gy1, pixels, xf, NULL, k, scratch0, scratch1);
    } else {
        pointwise_weight_grad_pair(gy0, gy1, pixels, x, x_table, k, scratch0, scratch1);
    }
    /* groups 1: every kept channel is o's (j0 0, n k); split weights: o's after o * k */
    channel_step(p, o, plane_sum(gy0, pixels), 0, k, o * k, channels, weights, bias, f_w, f_b,
                 lr, step, guard, scratch0);
    if (gy1) {
        channel_step(p, o + 1, plane_sum(gy1, pixels), 0, k, (o + 1) * k, channels, weights,
                     bias, f_w, f_b, lr, step, guard, scratch1);
    }
}

void tinyc_conv2d_update(const tinyc_conv_update_params *p, const float *gy, const int8_t *x,
                         const int32_t *channels, int8_t *weights, int32_t *bias,
                         const float *f_w, const float *f_b, float lr, uint32_t step,
                         tinyc_update_guard *guard, float *scratch)
{
    float table[256];
    const float *x_table = NULL;
    int32_t o;
    if (tinyc_update_uses_x_table(p)) {
        tinyc_update_x_table(p, table);
        x_table = table;
    }
    for (o = 0; o < p->conv.out_c; ++o) {
        tinyc_conv2d_update_channel_table(p, o, gy + o, p->conv.out_c, x, channels, weights,
                                          bias, f_w, f_b, lr, step, guard, scratch, x_table);
    }
}

void tinyc_conv2d_update_channel(const tinyc_conv_update_params *p, int32_t o, const float *gy,
                                 int32_t gy_step, const int8_t *x, const int32_t *channels,
                                 int8_t *weights, int32_t *bias, const float *f_w,
                                 const float *f_b, float lr, uint32_t step,
                                 tinyc_update_guard *guard, float *scratch)
{
    tinyc_conv2d_update_channel_table(p, o, gy, gy_step, x, channels, weights, bias, f_w, f_b,
                                      lr, step, guard, scratch, NULL);
}

void tinyc_conv2d_update_channel_table(const tinyc_conv_update_params *p, int32_t o,
                                       const float *gy, int32_t gy_step, const int8_t *x,
                                       const int32_t *channels, int8_t *weights, int32_t *bias,
                                       const float *f_w, const float *f_b, float lr,
                                       uint32_t step, tinyc_update_guard *guard, float *scratch,
                                       const float *x_table)
{
    const tinyc_conv_grad_params *c = &p->conv;
    const int32_t cin_g = c->in_c / c->groups;
    const int32_t cout_g = c->out_c / c->groups;
    const int32_t k = p->num_channels;
    const int32_t kk = c->kernel_h * c->kernel_w;
    const int32_t grp = o / cout_g;
    int32_t oy, ox, ky, kx, j, j0 = 0, j1, n, at;
    float gb = 0.0f;

    /* kept channels of o's group: [j0, j1) (kept channels ascend) */
    while (j0 < k && (channels ? channels[j0] : j0) / cin_g < grp) {
        ++j0;
    }
    j1 = j0;
    while (j1 < k && (channels ? channels[j1] : j1) / cin_g == grp) {
        ++j1;
    }
    n = j1 - j0;
    if (n == 0 && !bias) {
        return;   /* nothing of o is trained */
    }
    /* split weights: weights + at holds o's kept weights, after those of the output channels
     * before it (j0 kept channels in earlier groups, each for cout_g output channels) */
    at = kk * (j0 * cout_g + n * (o - grp * cout_g));
    if (x_table && n > 0 && is_pointwise(c)) {
        gb = pointwise_weight_grad(gy, gy_step, c->out_h * c->out_w, x + j0, k, n, x_table,
                                   scratch);
    } else {
        if (n > 0) {
            memset(scratch, 0, (size_t)(kk * n) * sizeof(float));
        }
        for (oy = 0; oy < c->out_h; ++oy) {
            const int32_t iy0 = oy * c->stride_h - c->pad_top;
            for (ox = 0; ox < c->out_w; ++ox) {
                const int32_t ix0 = ox * c->stride_w - c->pad_left;
                const float g = gy[(oy * c->out_w + ox) * gy_step];
                /* g == 0 adds +-0 to sums that are never -0: skipping it is exact */
                if (g == 0.0f) {
                    continue;
                }
                gb = gb + g;
                if (n == 0) {
                    continue;
                }
                for (ky = 0; ky < c->kernel_h; ++ky) {
                    const int32_t iy = iy0 + ky * c->dilation_h;
                    if (iy < 0 || iy >= c->in_h) {
                        continue;   /* padding contributes exactly 0 */
                    }
                    for (kx = 0; kx < c->kernel_w; ++kx) {
                        const int32_t ix = ix0 + kx * c->dilation_w;
                        const int8_t *px;
                        float *acc;
                        if (ix < 0 || ix >= c->in_w) {
                            continue;
                        }
                        px = x + (iy * c->in_w + ix) * k + j0;
                        acc = scratch + (ky * c->kernel_w + kx) * n;
                        TINYC_UNROLL4
                        for (j = 0; j < n; ++j) {
                            const float xr = p->x_scale * (float)((int32_t)px[j] - p->x_zero_point);
                            const float t = g * xr;
                            acc[j] = acc[j] + t;
                        }
                    }
                }
            }
        }
    }
    channel_step(p, o, gb, j0, n, at, channels, weights, bias, f_w, f_b, lr, step, guard,
                 scratch);
}

/* The sum of n int8 weights. DSP: four a word, offset to unsigned bytes (w + 128) and summed by
 * USADA8 into one uint32, less 128 per weight: the same int32 (|sum| < 2^31 for any n < 2^24). */
static int32_t weight_sum(const int8_t *w, int32_t n)
{
    int32_t sum = 0, i = 0;
#if TINYC_USE_DSP
    uint32_t u = 0, v = 0;
    for (; i + 8 <= n; i += 8) {
        u = tinyc_usada8(tinyc_read4(w + i) ^ 0x80808080u, u);
        v = tinyc_usada8(tinyc_read4(w + i + 4) ^ 0x80808080u, v);
    }
    for (; i + 4 <= n; i += 4) {
        u = tinyc_usada8(tinyc_read4(w + i) ^ 0x80808080u, u);
    }
    sum = (int32_t)(u + v - 128u * (uint32_t)i);
#endif
    for (; i < n; ++i) {
        sum += w[i];
    }
    return sum;
}

void tinyc_fold_bias(int32_t out_c, int32_t filter_size, int32_t in_zp, const int8_t *weights,
                     const int32_t *bias, int32_t *bias_eff)
{
    int32_t o;
    for (o = 0; o < out_c; ++o) {
        const int32_t sum = weight_sum(weights + o * filter_size, filter_size);
        bias_eff[o] = (int32_t)((uint32_t)bias[o] - (uint32_t)in_zp * (uint32_t)sum);
    }
}
