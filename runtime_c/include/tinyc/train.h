/* tinyc on-device training kernels: float32 backward pass and integer-domain SGD updates.
 *
 * The forward pass stays int8 (kernels.h). Gradients are float32 tensors in the same arena;
 * parameters are updated in place right after their gradient is complete. Every kernel follows
 * the loop-order contract of compiler/reference/train.py operation by operation, so the int8
 * weights and int32 biases after a step are bit-identical to the numpy reference:
 *   - no fused multiply-add: each product is rounded to float32 before it is added (this header
 *     turns contraction off for GCC and clang; other compilers need their equivalent of
 *     -ffp-contract=off);
 *   - sums run in the order written next to each kernel below;
 *   - float32 arithmetic only (FLT_EVAL_METHOD 0: SSE on x86-64, the single-precision FPU of a
 *     Cortex-M4F/M7; not the x87 FPU).
 * No malloc; scratch comes from the caller (the generated model's arena).
 */
#ifndef TINYC_TRAIN_H
#define TINYC_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "tinyc/kernels.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* Unroll the float inner loops of the backward pass four times (gcc 8+; other compilers: as
 * written). Unrolling repeats each element's operations in the same order: the same floats. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define TINYC_UNROLL4 _Pragma("GCC unroll 4")
#else
#define TINYC_UNROLL4
#endif

/* Keeps a kernel's helper out of its caller (gcc, clang; other compilers: may inline). */
#if defined(__GNUC__)
#define TINYC_NOINLINE __attribute__((noinline))
#else
#define TINYC_NOINLINE
#endif

/* Four consecutive floats loaded (tinyc_ld4a..e, returning p + 4; tinyc_get4a..e) or stored
 * (tinyc_st4a..e, returning p + 4; tinyc_put4a..e) by one VLDM / VSTM on an Arm FPU with gcc
 * or clang (gcc never merges float loads by itself), by four loads or stores elsewhere and in
 * the portable build: the same values either way, in fewer instructions (and 1 + N cycles
 * instead of 2N on a Cortex-M4).
 * The variants a to e use s8-s11, s12-s15, s16-s19, s20-s23 and s24-s27: a loop that loads
 * several groups gives each its own (gcc hoists loads, and one shared set then costs moves). */
typedef struct {
    float v[4];
} tinyc_f4;

#if defined(__GNUC__) && defined(__ARM_FP) && (__ARM_FP & 4) && !defined(TINYC_PORTABLE)
#define TINYC_VLDM 1
#define TINYC_F4_FNS(sfx, r0, r1, r2, r3)                                                    \
    static inline const float *tinyc_ld4##sfx(const float *p, float *a, float *b, float *c,  \
                                              float *d)                                      \
    {                                                                                         \
        register float x0 __asm__(r0);                                                       \
        register float x1 __asm__(r1);                                                       \
        register float x2 __asm__(r2);                                                       \
        register float x3 __asm__(r3);                                                       \
        __asm__("vldmia %[p]!, {" r0 "-" r3 "}"                                              \
                : [p] "+r"(p), "=t"(x0), "=t"(x1), "=t"(x2), "=t"(x3)                        \
                : "m"(*(const tinyc_f4 *)(const void *)p));                                  \
        *a = x0;                                                                              \
        *b = x1;                                                                              \
        *c = x2;                                                                              \
        *d = x3;                                                                              \
        return p;                                                                             \
    }                                                                                         \
    static inline float *tinyc_st4##sfx(float *p, float a, float b, float c, float d)        \
    {                                                                                         \
        register float x0 __asm__(r0) = a;                                                   \
        register float x1 __asm__(r1) = b;                                                   \
        register float x2 __asm__(r2) = c;                                                   \
        register float x3 __asm__(r3) = d;                                                   \
        __asm__("vstmia %[p]!, {" r0 "-" r3 "}"                                              \
                : [p] "+r"(p), "=m"(*(tinyc_f4 *)(void *)p)                                  \
                : "t"(x0), "t"(x1), "t"(x2), "t"(x3));                                       \
        return p;                                                                             \
    }                                                                                         \
    static inline void tinyc_get4##sfx(const float *p, float *a, float *b, float *c,         \
                                       float *d)                                             \
    {                                                                                         \
        register float x0 __asm__(r0);                                                       \
        register float x1 __asm__(r1);                                                       \
        register float x2 __asm__(r2);                                                       \
        register float x3 __asm__(r3);                                                       \
        __asm__("vldmia %[p], {" r0 "-" r3 "}"                                               \
                : "=t"(x0), "=t"(x1), "=t"(x2), "=t"(x3)                                     \
                : [p] "r"(p), "m"(*(const tinyc_f4 *)(const void *)p));                      \
        *a = x0;                                                                              \
        *b = x1;                                                                              \
        *c = x2;                                                                              \
        *d = x3;                                                                              \
    }                                                                                         \
    static inline void tinyc_put4##sfx(float *p, float a, float b, float c, float d)         \
    {                                                                                         \
        register float x0 __asm__(r0) = a;                                                   \
        register float x1 __asm__(r1) = b;                                                   \
        register float x2 __asm__(r2) = c;                                                   \
        register float x3 __asm__(r3) = d;                                                   \
        __asm__("vstmia %[p], {" r0 "-" r3 "}"                                               \
                : "=m"(*(tinyc_f4 *)(void *)p)                                               \
                : [p] "r"(p), "t"(x0), "t"(x1), "t"(x2), "t"(x3));                           \
    }
TINYC_F4_FNS(a, "s8", "s9", "s10", "s11")
TINYC_F4_FNS(b, "s12", "s13", "s14", "s15")
TINYC_F4_FNS(c, "s16", "s17", "s18", "s19")
TINYC_F4_FNS(d, "s20", "s21", "s22", "s23")
TINYC_F4_FNS(e, "s24", "s25", "s26", "s27")
#else
#define TINYC_VLDM 0
#define TINYC_F4_FNS(sfx)                                                                    \
    static inline const float *tinyc_ld4##sfx(const float *p, float *a, float *b, float *c,  \
                                              float *d)                                      \
    {                                                                                         \
        *a = p[0];                                                                            \
        *b = p[1];                                                                            \
        *c = p[2];                                                                            \
        *d = p[3];                                                                            \
        return p + 4;                                                                         \
    }                                                                                         \
    static inline float *tinyc_st4##sfx(float *p, float a, float b, float c, float d)        \
    {                                                                                         \
        p[0] = a;                                                                             \
        p[1] = b;                                                                             \
        p[2] = c;                                                                             \
        p[3] = d;                                                                             \
        return p + 4;                                                                         \
    }                                                                                         \
    static inline void tinyc_get4##sfx(const float *p, float *a, float *b, float *c,         \
                                       float *d)                                             \
    {                                                                                         \
        (void)tinyc_ld4##sfx(p, a, b, c, d);                                                  \
    }                                                                                         \
    static inline void tinyc_put4##sfx(float *p, float a, float b, float c, float d)         \
    {                                                                                         \
        (void)tinyc_st4##sfx(p, a, b, c, d);                                                  \
    }
TINYC_F4_FNS(a)
TINYC_F4_FNS(b)
TINYC_F4_FNS(c)
TINYC_F4_FNS(d)
TINYC_F4_FNS(e)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ float32 helpers */
/* floor of a float32 (exact; integral values, infinities and NaN are returned unchanged). */
float tinyc_floorf(float x);
float tinyc_ceilf(float x);
/* exp(x) for x <= 0 with exactly the float32 operations of reference/train.py's expf:
 * x = max(x, -87); k = floor(x * log2e + 0.5); r = (x - k ln2_hi) - k ln2_lo;
 * p = degree-6 Horner polynomial in r; result p * 2^k. */
float tinyc_expf(float x);
/* The "lowbias32" integer hash (stochastic rounding's random numbers); inline: the weight
 * step's hot loop (sgd.c) calls it once per weight. */
static inline uint32_t tinyc_lowbias32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}
/* x >= 0 ? floor(x + 0.5) : ceil(x - 0.5) (ties away from zero), float32. */
float tinyc_round_nearest(float x);
/* floor(x + u), u = (lowbias32(counter) >> 8) * 2^-24 in [0, 1). */
float tinyc_round_stochastic(float x, uint32_t counter);

/* ------------------------------------------------------------------ loss */
/* Softmax cross-entropy on the dequantized logits z_i = scale * (q_i - zero_point):
 * m = max z; e_i = tinyc_expf(z_i - m); S = sum e_i (i ascending); grad_i = e_i / S - [i == label];
 * returns the loss log(S) - (z_label - m). `grad` holds n floats. */
float tinyc_softmax_ce(int32_t n, const int8_t *logits, float scale, int32_t zero_point,
                       int32_t label, float *grad);

/* Mean squared error of the dequantized output y against the int8 target (same parameters):
 * d_i = scale * (y_i - zp) - scale * (t_i - zp); returns sum d_i^2 / n (summed in order);
 * grad_i = d_i * (2 / n). */
float tinyc_mse(int32_t n, const int8_t *y, const int8_t *target, float scale, int32_t zero_point,
                float *grad);

/* The gradient of a softmax inside the network (int8 output y at scale 1/256, zero point
 * -128; p = (y + 128) / 256): out = p * (g - sum_i g_i p_i), row by row (sums in order).
 * `out` may alias `g` only if it is not read again: it is not (each row reads g first). */
void tinyc_softmax_grad(int32_t rows, int32_t depth, const float *g, const int8_t *y, float *out);

/* ------------------------------------------------------------------ element-wise gradients */
/* out_i = (lo < y_i < hi) ? g_i : 0 (use lo = -129 / hi = 128 for a missing bound).
 * `out` may alias `g`. */
void tinyc_grad_mask(int32_t size, const float *g, const int8_t *y, int32_t lo, int32_t hi,
                     float *out);
/* The mask of a clamped activation, one bit per element (element e -> bit e % 8 of byte e / 8):
 * bit = (lo < y_e < hi). Saved in the forward pass instead of y when only grad_mask reads it. */
void tinyc_pack_mask(int32_t size, const int8_t *y, int32_t lo, int32_t hi, uint8_t *bits);
/* out_i = bit i of `bits` ? g_i : 0 (tinyc_grad_mask with a packed mask). `out` may alias `g`. */
void tinyc_grad_mask_bits(int32_t size, const float *g, const uint8_t *bits, float *out);
/* out_i = g_i * slope[x_i + 128]: the gradient through a table (tinyc_lut) of input x, slope
 * holding the derivative at each int8 input. `out` may alias `g`. */
void tinyc_grad_lut(int32_t size, const float *g, const int8_t *x, const float *slope, float *out);
/* A factor's gradient of a product (compiler/ops/mul.py): out_i = g_i * scale * (other_j - zp)
 * with j = i % other_size (the other factor, or a per-channel gate). `out` may alias `g`. */
void tinyc_grad_mul(int32_t size, int32_t other_size, const float *g, const int8_t *other,
                    float scale, int32_t zero_point, float *out);
/* A gate's gradient: out_c = sum over pixels p (in order) of g[p, c] * scale * (x[p, c] - zp). */
void tinyc_grad_mul_gate(int32_t pixels, int32_t channels, const float *g, const int8_t *x,
                         float scale, int32_t zero_point, float *out);
/* tinyc_transpose on a float gradient (the inverse permutation of the forward one). */
void tinyc_grad_transpose(const tinyc_transpose_params *p, const float *g, float *out);
/* The gradient of a crop: g (in_h x in_w x channels) placed inside zeros with the pads around
 * it (tinyc_pad with value 0, on floats). */
void tinyc_crop_grad(const tinyc_pad_params *p, const float *g, float *out);
/* out = a + b. `out` may alias `a` or `b`. */
void tinyc_grad_add(int32_t size, const float *a, const float *b, float *out);
/* out = g (a gradient alias that could not share its input's memory). */
void tinyc_grad_copy(int32_t size, const float *g, float *out);

/* Gradient of a constant pad: the interior (in_h x in_w) of the padded gradient g
 * ((in_h + pads) x (in_w + pads) x channels). `out` may alias `g` (rows move forwards). */
void tinyc_pad_grad(const tinyc_pad_params *p, const float *g, float *out);
/* Gradient of one concat input: channels [c_offset, c_offset + in_c) of g (pixels x out_c).
 * `out` may alias `g` (every element moves forwards). */
void tinyc_slice_grad(int32_t pixels, int32_t in_c, int32_t out_c, int32_t c_offset,
                      const float *g, float *out);

/* The gradient of tinyc_gather_channels: out (pixels x in_c) = 0, then out[p, channels[j]] +=
 * g[p, j] for j in [0, count), in that order. */
void tinyc_grad_gather_channels(int32_t pixels, int32_t in_c, int32_t count,
                                const int32_t *channels, const float *g, float *out);

/* ------------------------------------------------------------------ pooling gradients */
/* gx = 0; share = gy / (float)count (count as the forward kernel: valid positions, or
 * kernel_h * kernel_w with count_include_pad); for ky, kx, oy, ox (valid), c: gx += share. */
void tinyc_avg_pool_grad(const tinyc_pool_params *p, const float *gy, float *gx);
/* gx = 0; for oy, ox, c: the first maximum of the int8 input window in (ky, kx) order
 * receives gy (accumulated in that order). */
void tinyc_max_pool_grad(const tinyc_pool_params *p, const float *gy, const int8_t *x,
                         float *gx);

/* ------------------------------------------------------------------ convolution */
typedef struct {
    int32_t in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t kernel_h, kernel_w;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t groups;
} tinyc_conv_grad_params;

/* Input gradient of a conv (a fully connected layer is a 1x1 conv on a 1x1 image), weights
 * int8 OHWI with per-output-channel scale w_scale:
 *   gx = 0; for o, ky, kx, oy, ox (inside the input), i of o's group:
 *       gx[iy, ix, i] += gy[oy, ox, o] * (w_scale[o] * (float)w[o, ky, kx, i_local]). */
void tinyc_conv2d_grad_input(const tinyc_conv_grad_params *p, const float *gy,
                             const int8_t *weights, const float *w_scale, float *gx);

/* The same input gradient over split weights (kernels.h tinyc_split_weights: the trained input
 * channels' weights from SRAM, the others from flash); the same sums in the same order. */
void tinyc_conv2d_grad_input_split(const tinyc_conv_grad_params *p, const float *gy,
                                   const tinyc_split_weights *weights, const float *w_scale,
                                   float *gx);

/* The same input gradient, bit for bit, of a depthwise conv (groups == in_c == out_c) whose
 * input and output have one shape, computed in place over gy (buf: gy in, gx out). Channel by
 * channel: channel c of gy is copied to scratch (out_h * out_w floats), then each gx[iy, ix, c]
 * is gathered from it, its terms added to 0 in the (ky, kx) order of tinyc_conv2d_grad_input. */
void tinyc_depthwise_grad_input_inplace(const tinyc_conv_grad_params *p, float *buf,
                                        const int8_t *weights, const float *w_scale,
                                        float *scratch);

/* The same input gradient of a depthwise conv whose input is larger than its output (a stride
 * 2), in place over gy: gx pixels in reverse raster order, each written over gy's pixel of the
 * same index. The first n_saved pixels of gy (all channels) are copied to scratch first: the
 * planner (planner.depthwise_grad_backwards) sets n_saved so that every other gy pixel is read
 * by no gx pixel computed after it is overwritten. */
void tinyc_depthwise_grad_input_backwards(const tinyc_conv_grad_params *p, float *buf,
                                          const int8_t *weights, const float *w_scale,
                                          int32_t n_saved, float *scratch);

/* The same input gradient of a pointwise conv (1x1, stride 1, no padding, groups 1), in place
 * over gy, pixel by pixel through a scratch of in_c floats (forwards when it shrinks, backwards
 * when it expands), each gx[p, i] the terms of tinyc_conv2d_grad_input in its o order. */
void tinyc_pointwise_grad_input_inplace(const tinyc_conv_grad_params *p, float *buf,
                                        const int8_t *weights, const float *w_scale,
                                        float *scratch);

/* ------------------------------------------------------------------ ranges and the guard
 * A step keeps int8 weights in the quantizer's symmetric range [-127, 127] and int32 biases in
 * [-2^30, 2^30] (compiler/passes/quantize.py BIAS_LIMIT, the same headroom). A forward
 * accumulator then holds at most 2^30 + 2 * 128 * 127 * (filter size) in magnitude (bias, zero
 * point fold, products): no int32 overflow up to 33,155 products per output, the longest dot
 * product the quantizer accepts (passes/quantize.py MAX_DOT_LENGTH refuses longer ones).
 *
 * The update guard. Updates are applied in place, layer by layer and output channel by output
 * channel, as soon as their gradient is complete (no copy of the parameters exists to roll a
 * step back), so the guard works at two granularities:
 *   - the step: when lr is not finite or negative, or the loss or any logit gradient is not
 *     finite, tinyc_train_step updates nothing (checked before the first update: atomic) and
 *     counts the step as skipped;
 *   - the channel update: the new values of one output channel o of one layer (its trained
 *     weights and its bias) are all computed before any is written. They are not written at all
 *     (the channel update is refused and counted) when one of their gradients is not finite, or
 *     when more than TINYC_GUARD_SATURATED_PERCENT % of them would saturate: be carried past
 *     their bound (+-127, +-2^30) from inside it. A value already at its bound and pushed
 *     further stays there without counting (the quantizer puts each channel's largest weight at
 *     +-127). The other channels of the step are updated as usual. */
#define TINYC_WEIGHT_LIMIT 127
#define TINYC_BIAS_LIMIT 1073741824   /* 2^30 */
/* The share of a channel update's values that may saturate: a margin that ordinary training
 * does not reach (tests/test_train_guard.py checks the test nets at lr 0.003 and 0.05;
 * bench/transfer.py reports the counters of each of its runs) and a diverging lr (100) exceeds
 * thousands of times. The numpy reference (reference/train.py GUARD_SATURATED_PERCENT) uses
 * the same value. */
#define TINYC_GUARD_SATURATED_PERCENT 25

/* Channel updates seen by the guard, and those not applied. */
typedef struct {
    uint32_t updates;              /* channel updates computed */
    uint32_t refused_nonfinite;    /* not applied: a gradient element was not finite */
    uint32_t refused_saturation;   /* not applied: too many values would saturate */
} tinyc_update_guard;

/* Counts one channel update of `elements` values (`saturated` of them would saturate) in
 * guard; returns 1 (and counts the refusal) when it must not be applied. */
int tinyc_guard_refuses(tinyc_update_guard *guard, int32_t nonfinite, int32_t saturated,
                        int32_t elements);

/* 1 when every v[i] is finite. */
int tinyc_all_finite(int32_t n, const float *v);

typedef struct {
    tinyc_conv_grad_params conv;
    int32_t num_channels;      /* input channels kept for the weight update (0: bias only) */
    int32_t x_zero_point;
    float x_scale;
    int32_t stochastic;        /* 0: round to nearest (ties away), 1: stochastic rounding */
    uint32_t salt;             /* per-layer constant of the stochastic rounding counters */
    int32_t split_weights;     /* 1: `weights` is the SRAM array of a tinyc_split_weights (only
                                  the kept channels), 0: the whole OHWI tensor */
} tinyc_conv_update_params;

/* Scratch (bytes) tinyc_conv2d_update needs: one output channel's weight gradient. */
#define TINYC_CONV_UPDATE_SCRATCH(kernel_h, kernel_w, group_channels) \
    ((size_t)(kernel_h) * (size_t)(kernel_w) * (size_t)(group_channels) * sizeof(float))

/* In-place SGD step of one conv / fully connected layer in the integer domain.
 * gy: the output gradient (out_h x out_w x out_c). x: the saved int8 input, its num_channels
 * selected channels in `channels` order (global input-channel indices, ascending; NULL = all
 * in_c channels in order). For each output channel o:
 *   gb = sum over (oy, ox) row-major of gy; b[o] = b[o] - round((lr * gb) * f_b[o])
 *   for each kept channel j of o's group and (ky, kx):
 *     gw = sum over (oy, ox) row-major, inside the input, of
 *          gy[oy, ox, o] * (x_scale * (float)(x[iy, ix, j] - x_zero_point))
 *     w[o, ky, kx, j_local] = clamp(w - round((lr * gw) * f_w[o]), -127, 127)
 *   (biases clamped to +-TINYC_BIAS_LIMIT); the guard may refuse o's update (see above).
 * Rounding counters: step * 2654435761 + salt + flat weight index (+ 2^30 + o for biases).
 * With split_weights, w[o, ky, kx, j_local] is stored at the kept channel's place in the SRAM
 * array (kernels.h tinyc_split_weights); the counters stay those of the OHWI index.
 * bias == NULL: biases frozen; num_channels == 0: weights frozen (weights, x, f_w unused).
 * scratch: TINYC_CONV_UPDATE_SCRATCH(kernel_h, kernel_w, kept channels in one group) bytes,
 * 4-byte aligned (unused when the weights are frozen). */
void tinyc_conv2d_update(const tinyc_conv_update_params *p, const float *gy, const int8_t *x,
                         const int32_t *channels, int8_t *weights, int32_t *bias,
                         const float *f_w, const float *f_b, float lr, uint32_t step,
                         tinyc_update_guard *guard, float *scratch);

/* tinyc_conv2d_update for output channel o alone; gy(oy, ox) = gy[(oy * out_w + ox) * gy_step]
 * (gy + o and out_c for the layer's output gradient, or a plane of channel o and 1). */
void tinyc_conv2d_update_channel(const tinyc_conv_update_params *p, int32_t o, const float *gy,
                                 int32_t gy_step, const int8_t *x, const int32_t *channels,
                                 int8_t *weights, int32_t *bias, const float *f_w,
                                 const float *f_b, float lr, uint32_t step,
                                 tinyc_update_guard *guard, float *scratch);

/* The dequantized values of p's saved input, one per int8 code:
 * table[b + 128] = x_scale * (float)(b - x_zero_point) (256 floats), the very products the
 * weight gradient multiplies g by. */
void tinyc_update_x_table(const tinyc_conv_update_params *p, float *table);
/* 1 when tinyc_conv2d_update_channel_table reads x through such a table (a 1x1 conv, stride 1,
 * no padding, weights trained): its weight gradients then keep eight sums in registers. */
int tinyc_update_uses_x_table(const tinyc_conv_update_params *p);
/* tinyc_conv2d_update_channel, reading the input through x_table (tinyc_update_x_table, or NULL
 * to dequantize as it goes) where tinyc_update_uses_x_table: the same sums, bit for bit. */
void tinyc_conv2d_update_channel_table(const tinyc_conv_update_params *p, int32_t o,
                                       const float *gy, int32_t gy_step, const int8_t *x,
                                       const int32_t *channels, int8_t *weights, int32_t *bias,
                                       const float *f_w, const float *f_b, float lr,
                                       uint32_t step, tinyc_update_guard *guard, float *scratch,
                                       const float *x_table);

/* p's saved input x (in_h * in_w pixels of num_channels kept channels) through x_table
 * (tinyc_update_x_table): xf[i] = x_table[x[i] + 128], the floats the weight gradient reads. */
void tinyc_update_x_float(const tinyc_conv_update_params *p, const int8_t *x,
                          const float *x_table, float *xf);
/* tinyc_conv2d_update_channel_table of output channels o and o + 1 (their output gradient
 * planes gy0 and gy1, step 1; scratch0 / scratch1 their scratch), both gradients summed in one
 * pass over the input: for a layer with tinyc_update_pair_ok (through a table, groups 1). The
 * input is read from xf (tinyc_update_x_float) unless it is NULL, else from x through x_table.
 * gy1 NULL: channel o alone. The planes hold no -0 (tinyc_depthwise_pointwise_grad's never
 * do): their zeros are then added to the bias gradients, not tested for. */
int tinyc_update_pair_ok(const tinyc_conv_update_params *p);
void tinyc_conv2d_update_pair(const tinyc_conv_update_params *p, int32_t o, const float *gy0,
                              const float *gy1, const int8_t *x, const float *x_table,
                              const float *xf, const int32_t *channels, int8_t *weights,
                              int32_t *bias, const float *f_w, const float *f_b, float lr,
                              uint32_t step, tinyc_update_guard *guard, float *scratch0,
                              float *scratch1);

/* The bias step of output channel o alone, from its gradient gb (summed as in
 * tinyc_conv2d_update): what tinyc_conv2d_update does to bias[o] (one channel update of one
 * value for the guard). */
void tinyc_bias_update(const tinyc_conv_update_params *p, int32_t o, float gb, int32_t *bias,
                       const float *f_b, float lr, uint32_t step, tinyc_update_guard *guard);

typedef struct {
    tinyc_conv_grad_params dw;        /* the depthwise conv (its input: the expanded tensor) */
    int32_t in_c;                     /* channels of gx, the expand conv's input */
    int32_t proj_c;                   /* output channels of the project conv; 0: no head */
    int32_t mask_lo, mask_hi;         /* bounds of the expand output's int8 mask */
    int32_t dmask_lo, dmask_hi;       /* bounds of the depthwise output's int8 mask (head) */
    tinyc_conv_update_params update;     /* the expand layer's bias step (when io->bias) */
    tinyc_conv_update_params dw_update;  /* the depthwise layer's bias step (io->dw_bias) */
    int32_t x_float;   /* 1: the scratch also holds the expand layer's input as floats */
} tinyc_dw_pw_grad_params;

/* Arrays of tinyc_depthwise_pointwise_grad. A mask is given as bits (packed) or as the int8
 * activation compared with its bounds; NULL optional parts are skipped. */
typedef struct {
    const float *gy;            /* project output gradient (proj_c > 0), else depthwise's */
    const int8_t *proj_w;       /* head: the project conv (out proj_c, in dw.in_c) */
    const float *proj_scale;
    const uint8_t *dmask_bits;  /* head: the depthwise output's mask */
    const int8_t *d_act;
    int32_t *dw_bias;           /* head: the depthwise layer's bias, or NULL */
    const float *dw_f_b;
    const int8_t *dw_w;         /* the depthwise conv; NULL: a tail (the head alone, then
                                 * no expand part and no gx) */
    const float *dw_scale;
    const uint8_t *mask_bits;   /* the expand output's mask */
    const int8_t *act;
    const int8_t *pw_w;         /* the expand conv (out dw.in_c, in in_c), or NULL when */
    const tinyc_split_weights *pw_split;   /* its weights are stored split */
    const float *pw_scale;
    int32_t *bias;              /* the expand layer's bias, or NULL */
    const float *f_b;
    int8_t *weights;            /* the expand layer's trained weights (in SRAM), or NULL */
    const float *f_w;
    const int8_t *x;            /* the expand layer's saved input (its kept channels) */
    const int32_t *channels;    /* the kept channels (NULL: all) */
    float *scratch;             /* planes: dw.out_h * dw.out_w (head) + 2 * dw.in_h * dw.in_w,
                                 * then twice the weight update's scratch (weights trained),
                                 * then 2 * in_c bytes for two rows of split expand weights,
                                 * then (x_float, from a multiple of 4 bytes) in_h * in_w *
                                 * update.num_channels floats */
    float *gx;                  /* the expand conv's input gradient */
} tinyc_dw_pw_grad_io;

/* Backward through an inverted-residual block's project (the head, optional), depthwise and
 * expand convs, one expanded channel c at a time (passes/fuse_grad.py): the plane of channel c
 * of the depthwise output gradient (head: sum over o of gy[., o] * proj_scale[o] * proj_w[o, c],
 * masked, the depthwise bias step of c), then of its input gradient, masked;
 * gx[p, i] += plane[p] * (pw_scale[c] * (float)pw_w[c, i]), then the expand layer's step of c
 * (tinyc_conv2d_update_channel: weights and bias, or the bias alone). The same float
 * operations, in the same order per element, as the unfused conv2d_grad_input, grad_mask and
 * conv2d_update nodes one after the other. The kernel takes the expanded channels two at a
 * time (c, c + 1): their input-gradient planes are computed one after the other, then each gx
 * element gets c's term and then c + 1's (its c order), both expand weight gradients are summed
 * in one pass over the saved input, and the steps of c and c + 1 follow. A term with a zero
 * factor adds +-0 to a sum that is never -0, so the kernel may add or skip it: the inner loops
 * skip zeros only where it pays. */
void tinyc_depthwise_pointwise_grad(const tinyc_dw_pw_grad_params *p,
                                    const tinyc_dw_pw_grad_io *io, float lr, uint32_t step,
                                    tinyc_update_guard *guard);

/* ------------------------------------------------------------------ split weights storage */
/* w->sram = the kept channels of the OHWI tensor `full` (tinyc_train_init: full = w->flash;
 * tinyc_set_param: the given tensor, whose other channels are ignored). */
void tinyc_split_load(const tinyc_split_weights *w, const int8_t *full);
/* dst = elements [lo, hi) of the logical OHWI tensor: flash, the kept channels from SRAM. */
void tinyc_split_read(const tinyc_split_weights *w, int32_t lo, int32_t hi, int8_t *dst);
/* The kept channels' elements among [lo, hi) of the logical OHWI tensor = src[index - lo]
 * (the other elements are constants in flash: their values in src are ignored). */
void tinyc_split_write(const tinyc_split_weights *w, int32_t lo, int32_t hi, const int8_t *src);
/* dst = the OHWI row of output channel o (taps * cin_g elements), in O(that row). */
void tinyc_split_row(const tinyc_split_weights *w, int32_t o, int8_t *dst);

/* bias_eff[o] = bias[o] - in_zp * sum(weights of o) (two's complement wrap, as the int32
 * accumulators of the fast forward kernels): refreshes the folded bias of a trained layer. */
void tinyc_fold_bias(int32_t out_c, int32_t filter_size, int32_t in_zp, const int8_t *weights,
                     const int32_t *bias, int32_t *bias_eff);

#ifdef __cplusplus
}
#endif

#endif /* TINYC_TRAIN_H */
