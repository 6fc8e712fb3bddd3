/* Softmax cross-entropy on the dequantized int8 logits, and the float32 helpers the training
 * kernels share (floor, exp, rounding, hash). Operation order: compiler/reference/train.py. */
#include <math.h>

#include "tinyc/train.h"

/* float32 constants of reference/train.py, written exactly (hexadecimal floats) */
#define TINYC_LOG2E 0x1.715476p+0f
#define TINYC_LN2_HI 0x1.62e4p-1f
#define TINYC_LN2_LO 0x1.7f7d1cp-20f
#define TINYC_EXP_C0 0x1.6c16c2p-10f   /* float32(1/720) */
#define TINYC_EXP_C1 0x1.111112p-7f    /* float32(1/120) */
#define TINYC_EXP_C2 0x1.555556p-5f    /* float32(1/24) */
#define TINYC_EXP_C3 0x1.555556p-3f    /* float32(1/6) */
#define TINYC_EXP_C4 0x1p-1f
#define TINYC_EXP_C5 0x1p+0f
#define TINYC_EXP_C6 0x1p+0f
#define TINYC_TWO_POW_23 8388608.0f

float tinyc_floorf(float x)
{
    int32_t i;
    float f;
    if (!(x > -TINYC_TWO_POW_23 && x < TINYC_TWO_POW_23)) {
        return x;   /* already integral (|x| >= 2^23), infinite or NaN */
    }
    i = (int32_t)x;   /* truncates towards zero */
    f = (float)i;
    return f > x ? f - 1.0f : f;
}

float tinyc_ceilf(float x)
{
    return -tinyc_floorf(-x);
}

/* 2^k as a float32 for -126 <= k <= 127 (exact) */
static float pow2i(int32_t k)
{
    union {
        uint32_t u;
        float f;
    } v;
    v.u = (uint32_t)(k + 127) << 23;
    return v.f;
}

float tinyc_expf(float x)
{
    float t, k, r, p;
    int32_t ki;
    if (x < -87.0f) {
        x = -87.0f;
    }
    t = x * TINYC_LOG2E;
    t = t + 0.5f;
    k = tinyc_floorf(t);
    t = k * TINYC_LN2_HI;
    r = x - t;
    t = k * TINYC_LN2_LO;
    r = r - t;
    p = TINYC_EXP_C0;
    p = p * r;
    p = p + TINYC_EXP_C1;
    p = p * r;
    p = p + TINYC_EXP_C2;
    p = p * r;
    p = p + TINYC_EXP_C3;
    p = p * r;
    p = p + TINYC_EXP_C4;
    p = p * r;
    p = p + TINYC_EXP_C5;
    p = p * r;
    p = p + TINYC_EXP_C6;
    ki = (int32_t)k;
    if (ki < -126) {
        ki = -126;   /* not reached for x >= -87 */
    } else if (ki > 127) {
        ki = 127;    /* outside the domain x <= 0 */
    }
    return p * pow2i(ki);
}

float tinyc_round_nearest(float x)
{
    return x >= 0.0f ? tinyc_floorf(x + 0.5f) : tinyc_ceilf(x - 0.5f);
}

float tinyc_round_stochastic(float x, uint32_t counter)
{
    const float u = (float)(tinyc_lowbias32(counter) >> 8) * 0x1p-24f;
    return tinyc_floorf(x + u);
}

float tinyc_softmax_ce(int32_t n, const int8_t *logits, float scale, int32_t zero_point,
                       int32_t label, float *grad)
{
    float m, s, z_label;
    int32_t i;
    m = scale * (float)((int32_t)logits[0] - zero_point);
    for (i = 1; i < n; ++i) {
        const float z = scale * (float)((int32_t)logits[i] - zero_point);
        if (z > m) {
            m = z;
        }
    }
    s = 0.0f;
    for (i = 0; i < n; ++i) {
        const float z = scale * (float)((int32_t)logits[i] - zero_point);
        grad[i] = tinyc_expf(z - m);
        s = s + grad[i];
    }
    for (i = 0; i < n; ++i) {
        grad[i] = grad[i] / s;
    }
    grad[label] = grad[label] - 1.0f;
    z_label = scale * (float)((int32_t)logits[label] - zero_point);
    return logf(s) - (z_label - m);
}

int tinyc_all_finite(int32_t n, const float *v)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        if (!isfinite(v[i])) {
            return 0;
        }
    }
    return 1;
}

float tinyc_mse(int32_t n, const int8_t *y, const int8_t *target, float scale, int32_t zero_point,
                float *grad)
{
    const float two_over_n = 2.0f / (float)n;
    float total = 0.0f;
    int32_t i;
    for (i = 0; i < n; ++i) {
        const float d = scale * (float)((int32_t)y[i] - zero_point)
                        - scale * (float)((int32_t)target[i] - zero_point);
        total += d * d;
        grad[i] = d * two_over_n;
    }
    return total / (float)n;
}

void tinyc_softmax_grad(int32_t rows, int32_t depth, const float *g, const int8_t *y, float *out)
{
    int32_t r, i;
    for (r = 0; r < rows; ++r, g += depth, y += depth, out += depth) {
        float dot = 0.0f;
        for (i = 0; i < depth; ++i) {
            dot += g[i] * ((float)((int32_t)y[i] + 128) * 0x1p-8f);
        }
        for (i = 0; i < depth; ++i) {
            out[i] = ((float)((int32_t)y[i] + 128) * 0x1p-8f) * (g[i] - dot);
        }
    }
}
