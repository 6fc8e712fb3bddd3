/* tinyc int8 forward kernels: NHWC, batch 1, TFLite reference arithmetic, no malloc, no float.
 *
 * Every kernel takes a const parameter struct (generated once per layer into flash by the code
 * generator), raw int8 activation pointers into the arena and its constant tensors.
 * Zero points are the tensor's (TFLite's "offset" is their negation). act_min/act_max are the
 * quantized clamp of a fused activation (-128/127 when there is none).
 */
#ifndef TINYC_KERNELS_H
#define TINYC_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define TINYC_ALIGN(n) __attribute__((aligned(n)))
#else
#define TINYC_ALIGN(n)
#endif

/* ------------------------------------------------------------------ convolution */
typedef struct {
    int32_t in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t kernel_h, kernel_w;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;     /* bottom/right padding follows from the output size */
    int32_t groups;
    int32_t in_zp, out_zp;
    int32_t act_min, act_max;
} tinyc_conv_params;

/* Any 2-D convolution, plain reference loop: weights OHWI (out_c, kernel_h, kernel_w,
 * in_c / groups), bias int32 per output channel (may be NULL), per-output-channel
 * multiplier/shift (TFLite sign: > 0 = left). */
void tinyc_conv2d(const tinyc_conv_params *p, const int8_t *in, const int8_t *weights,
                  const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out);

/* The fast convolutions below take a FOLDED bias (never NULL):
 *     bias_eff[oc] = bias[oc] - in_zp * sum(weights of output channel oc)
 * (the code generator precomputes it), so their inner loops are plain int8 dot products with
 * exactly the same int32 accumulators as tinyc_conv2d. */

/* Any 2-D convolution: each output pixel's window (per group) is gathered into `scratch`
 * (scratch_bytes >= k = kernel_h * kernel_w * in_c / groups), padded positions filled with
 * in_zp. With groups 1 and scratch_bytes >= 2 k, two neighbouring windows are gathered and
 * computed at once (faster: each weight is loaded once for both). */
void tinyc_conv2d_im2col(const tinyc_conv_params *p, const int8_t *in, const int8_t *weights,
                         const int32_t *bias_eff, const int32_t *mult, const int32_t *shift,
                         int8_t *out, int8_t *scratch, int32_t scratch_bytes);

/* 1x1, stride 1, no padding, groups 1 (pointwise). */
void tinyc_conv2d_1x1(const tinyc_conv_params *p, const int8_t *in, const int8_t *weights,
                      const int32_t *bias_eff, const int32_t *mult, const int32_t *shift,
                      int8_t *out);

/* Pointwise conv computed in place: `buf` holds the input on entry and the output on return
 * (max(input, output) bytes). Pixels go backwards when out_c > in_c and forwards otherwise, so
 * no output byte lands on an input pixel not yet consumed; a pixel pair whose outputs do not
 * overlap its own inputs is read in place, the others are copied to `scratch` first.
 * `scratch_bytes` >= in_c; from 2 * in_c on, two copied pixels are computed at once (faster:
 * each weight is loaded once for both). */
void tinyc_conv2d_1x1_inplace(const tinyc_conv_params *p, int8_t *buf, const int8_t *weights,
                              const int32_t *bias_eff, const int32_t *mult,
                              const int32_t *shift, int8_t *scratch, int32_t scratch_bytes);

/* Depthwise (groups == in_c, out_c = in_c * depth multiplier); weights (out_c, kh, kw, 1). */
void tinyc_depthwise_conv(const tinyc_conv_params *p, const int8_t *in, const int8_t *weights,
                          const int32_t *bias, const int32_t *mult, const int32_t *shift,
                          int8_t *out);

/* Depthwise with depth multiplier 1 computed in place: `buf` holds the input on entry and the
 * output on return. Channel c of the input is first gathered into `scratch`; output channel c
 * then only overwrites bytes of input channel c (same channel count, NHWC), so the other
 * channels are intact until their turn. `buf` must hold max(input, output) bytes.
 * `scratch_bytes` is at least in_h * in_w (one plane). From tinyc_dw_padded_plane_bytes(p) on,
 * and with pad_top, pad_left >= 0 (a negative pad crops), the plane is gathered with the conv's
 * padding around it (filled with in_zp): every window is then an interior one, which is faster;
 * the planner gives that size where it is free. With less (DSP kernels), the padded plane's rows
 * go through the scratch as a band where every step is safe in place; a 3x3, 5x5 or 7x7
 * layer without padding (3x3 stride 1: up to TINYC_DW_QUAD_S1_MAX_OUT outputs) reads the buffer
 * directly, four channels at a time (no scratch used); a channel whose output is one value for
 * every input (a dead channel) is written without gathering. */
void tinyc_depthwise_conv_inplace(const tinyc_conv_params *p, int8_t *buf,
                                  const int8_t *weights, const int32_t *bias,
                                  const int32_t *mult, const int32_t *shift, int8_t *scratch,
                                  int32_t scratch_bytes);

/* The padded plane: padded_h * padded_w + TINYC_DW_PLANE_SLACK bytes, padded_h =
 * max(pad_top + in_h, (out_h - 1) * stride_h + (kernel_h - 1) * dilation_h + 1) (as far as the
 * windows reach), the same for w. The slack: the DSP kernel reads filter rows four bytes at a
 * time. (compiler/ops/conv.py depthwise_plane_bytes computes the same.) */
#define TINYC_DW_PLANE_SLACK 3
int32_t tinyc_dw_padded_plane_bytes(const tinyc_conv_params *p);

/* The DSP kernel runs a 3x3, 5x5 or 7x7 layer without padding four channels at a time straight
 * from the buffer; a 3x3 stride-1 layer only up to this many outputs per channel (a patch
 * schedule's small tiles). Measured on mcunet-5fps_96's tiles: about 35 instructions per output
 * and channel, against the gathered plane's 29 plus some 460 per channel (break-even near 64).
 * (compiler/ops/conv.py DW_QUAD_S1_MAX_OUT is the same.) */
#define TINYC_DW_QUAD_S1_MAX_OUT 64

/* A conv weight tensor of which only some input channels are trained (training builds):
 * those channels' weights live in SRAM, the others are read from the flash tensor.
 *   flash     the whole OHWI tensor as built (the kept channels' initial values included)
 *   sram      for each output channel o, each tap (ky, kx): the kept channels of o's group in
 *             `channels` order; so (out_c, kh, kw, count) for groups == 1 and
 *             (count, kh, kw) for a depthwise conv (channel c's filter is all in one place)
 *   channels  the kept input channels, global indices, ascending
 * The logical weight of (o, ky, kx, i) is the SRAM one when i is kept, else the flash one. */
typedef struct {
    const int8_t *flash;
    int8_t *sram;
    const int32_t *channels;
    int32_t count;
    int32_t out_c, taps;           /* taps = kernel_h * kernel_w */
    int32_t cin_g, cout_g;         /* input / output channels per group */
} tinyc_split_weights;

/* The kept channels of group `grp`: returns how many (n) and advances *j0 to the first one
 * (channels[*j0 .. *j0 + n)). Call with ascending groups, *j0 = 0 before the first. */
static inline int32_t tinyc_split_group(const tinyc_split_weights *w, int32_t grp, int32_t *j0)
{
    int32_t j1;
    while (*j0 < w->count && w->channels[*j0] / w->cin_g < grp) {
        ++*j0;
    }
    for (j1 = *j0; j1 < w->count && w->channels[j1] / w->cin_g == grp; ++j1) {
    }
    return j1 - *j0;
}

/* tinyc_conv2d (the plain reference loop, same int32 accumulators, bias not folded, may be
 * NULL) over split weights: each weight is read from SRAM or flash as above. */
void tinyc_conv2d_split(const tinyc_conv_params *p, const int8_t *in,
                        const tinyc_split_weights *w, const int32_t *bias, const int32_t *mult,
                        const int32_t *shift, int8_t *out);

/* ------------------------------------------------------------------ fully connected */
typedef struct {
    int32_t in_n, out_n;
    int32_t in_zp, out_zp;
    int32_t act_min, act_max;
} tinyc_fc_params;

/* weights (out_n, in_n), bias int32 (may be NULL), per-output multiplier/shift. */
void tinyc_fully_connected(const tinyc_fc_params *p, const int8_t *in, const int8_t *weights,
                           const int32_t *bias, const int32_t *mult, const int32_t *shift,
                           int8_t *out);

/* ------------------------------------------------------------------ element-wise */
typedef struct {
    int32_t size;
    int32_t in1_zp, in2_zp, out_zp;
    int32_t left_shift;
    int32_t in1_mult, in1_shift;   /* shifts <= 0 (TFLite "smaller than one" multipliers) */
    int32_t in2_mult, in2_shift;
    int32_t out_mult, out_shift;
    int32_t act_min, act_max;
} tinyc_add_params;

/* TFLite int8 ADD of two same-shape tensors. `out` may alias in1 or in2 (in place). */
void tinyc_add(const tinyc_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *out);
/* tinyc_add with in2 one term per channel (NHWC: in2[i % channels]), a constant from flash. */
void tinyc_add_channels(const tinyc_add_params *p, int32_t channels, const int8_t *in1,
                        const int8_t *terms, int8_t *out);

typedef struct {
    int32_t size;                  /* elements of in1 and out */
    int32_t in2_size;              /* elements of in2: size, or the channels of a gate */
    int32_t in1_zp, in2_zp, out_zp;
    int32_t mult, shift;
    int32_t act_min, act_max;
} tinyc_mul_params;

/* TFLite int8 MUL: out[i] = in1[i] * in2[i % in2_size] (per-channel gate when in2_size is the
 * channel count, NHWC). `out` may alias in1 (in place). */
void tinyc_mul(const tinyc_mul_params *p, const int8_t *in1, const int8_t *in2, int8_t *out);

/* out[p, j] = in[p, channels[j]] for p < pixels, j < count (in: pixels x in_c): Split, Slice,
 * channel shuffle; a training step's kept channels. `out` may alias `in` when channels[j] >= j
 * rise (every byte moves towards the start). */
void tinyc_gather_channels(int32_t pixels, int32_t in_c, int32_t count, const int32_t *channels,
                           const int8_t *in, int8_t *out);

/* A permutation of an N,H,W,C tensor's H, W, C axes: out[a, b, c] (d1 x d2 x d3, row-major) =
 * in[a * s1 + b * s2 + c * s3], s_k the input stride of the axis that becomes output axis k. */
typedef struct {
    int32_t d1, d2, d3;
    int32_t s1, s2, s3;
} tinyc_transpose_params;
void tinyc_transpose(const tinyc_transpose_params *p, const int8_t *in, int8_t *out);

/* out[i] = table[in[i] + 128]: an int8 function of one activation, tabulated by the compiler
 * (LOGISTIC, HARD_SWISH, a fused element-wise chain). `out` may alias `in`. */
void tinyc_lut(int32_t size, const int8_t *table, const int8_t *in, int8_t *out);

/* out = clamp(in, act_min, act_max). `out` may alias `in`. */
void tinyc_clamp(int32_t size, int32_t act_min, int32_t act_max, const int8_t *in, int8_t *out);

typedef struct {
    int32_t size;
    int32_t in_zp, out_zp;
    int32_t mult, shift;
} tinyc_requantize_params;

/* int8 -> int8 rescale (TFLite REQUANTIZE/QUANTIZE int8->int8). `out` may alias `in`. */
void tinyc_requantize(const tinyc_requantize_params *p, const int8_t *in, int8_t *out);

/* ------------------------------------------------------------------ pooling */
typedef struct {
    int32_t in_h, in_w, channels;
    int32_t out_h, out_w;
    int32_t kernel_h, kernel_w;
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left;
    int32_t count_include_pad;     /* avg only: padded positions count, valued at zero_point */
    int32_t zero_point;            /* input (= output) zero point */
    int32_t act_min, act_max;
} tinyc_pool_params;

void tinyc_avg_pool(const tinyc_pool_params *p, const int8_t *in, int8_t *out);
void tinyc_max_pool(const tinyc_pool_params *p, const int8_t *in, int8_t *out);

/* TFLite's int8 MEAN over H and W: the sum of each channel's pixels, rescaled by
 * in_scale / out_scale / pixels (one multiplier, folded at build time as TFLite Micro folds it). */
typedef struct {
    int32_t pixels, channels;
    int32_t in_zp, out_zp;
    int32_t mult, shift;
} tinyc_mean_params;

void tinyc_mean(const tinyc_mean_params *p, const int8_t *in, int8_t *out);

/* The input rows [y0, y1) and columns [x0, x1) of pooling window (oy, ox), clipped to the
 * input (the padding is left out). */
typedef struct {
    int32_t y0, y1, x0, x1;
} tinyc_window;

static inline tinyc_window tinyc_pool_window(const tinyc_pool_params *p, int32_t oy, int32_t ox)
{
    const int32_t iy0 = oy * p->stride_h - p->pad_top;
    const int32_t ix0 = ox * p->stride_w - p->pad_left;
    tinyc_window w;
    w.y0 = iy0 < 0 ? 0 : iy0;
    w.y1 = iy0 + p->kernel_h > p->in_h ? p->in_h : iy0 + p->kernel_h;
    w.x0 = ix0 < 0 ? 0 : ix0;
    w.x1 = ix0 + p->kernel_w > p->in_w ? p->in_w : ix0 + p->kernel_w;
    return w;
}

/* ------------------------------------------------------------------ data movement */
typedef struct {
    int32_t in_h, in_w, channels;
    int32_t pad_top, pad_left, pad_bottom, pad_right;
    int32_t value;
} tinyc_pad_params;

void tinyc_pad(const tinyc_pad_params *p, const int8_t *in, int8_t *out);

/* Copies one concat input (pixels x in_c) into channels [c_offset, c_offset + in_c) of the
 * output (pixels x out_c). A concat is one call per input. */
void tinyc_concat_channels(int32_t pixels, int32_t in_c, int32_t out_c, int32_t c_offset,
                           const int8_t *in, int8_t *out);

/* memmove for the rare reshape that could not alias its input. */
void tinyc_copy(int32_t size, const int8_t *in, int8_t *out);

/* A rows x cols window of NHWC pixels (channels bytes each) copied from src (row width src_w,
 * window at src_row0, src_col0) to dst (row width dst_w, at dst_row0, dst_col0). Patch schedules
 * use it to crop a patch's window out of a larger local tensor and to paste a finished patch
 * into the full-size tensor. Rows are moved in increasing order with memmove, so an in-place
 * crop (dst == src, destination window at or before the source window) is safe. */
typedef struct {
    int32_t rows, cols, channels;
    int32_t src_w, src_row0, src_col0;
    int32_t dst_w, dst_row0, dst_col0;
} tinyc_window_params;

void tinyc_copy_window(const tinyc_window_params *p, const int8_t *src, int8_t *dst);

/* ------------------------------------------------------------------ softmax */
typedef struct {
    int32_t rows, depth;
    int32_t input_multiplier, input_left_shift;
    int32_t diff_min;
} tinyc_softmax_params;

/* TFLite int8 softmax (output scale 1/256, zero point -128) over the last axis. */
void tinyc_softmax(const tinyc_softmax_params *p, const int8_t *in, int8_t *out);

#ifdef __cplusplus
}
#endif

#endif /* TINYC_KERNELS_H */
