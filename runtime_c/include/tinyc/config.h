/* Which specialised kernel variants are compiled (DSP kernels; the portable C99 kernels have
 * none). This copy, in the runtime's source tree, compiles all of them. A generated model's
 * copy (templates/config.h.j2) sets 1 only for the variants its layers use
 * (compiler/ops/conv.py, dw_variants), so that its firmware holds no other: a kernel finds a
 * variant left out as absent and takes its general path, which gives the same bytes. */
#ifndef TINYC_CONFIG_H
#define TINYC_CONFIG_H

/* depthwise_conv.c: rows of KxK windows at stride S, with a full int8 clamp or a narrower one */
#define TINYC_DW_ROWS_3X3_S1_NARROW 1
#define TINYC_DW_ROWS_3X3_S1_FULL 1
#define TINYC_DW_ROWS_3X3_S2_NARROW 1
#define TINYC_DW_ROWS_3X3_S2_FULL 1
#define TINYC_DW_ROWS_5X5_S1_NARROW 1
#define TINYC_DW_ROWS_5X5_S1_FULL 1
#define TINYC_DW_ROWS_5X5_S2_NARROW 1
#define TINYC_DW_ROWS_5X5_S2_FULL 1
#define TINYC_DW_ROWS_7X7_S1_NARROW 1
#define TINYC_DW_ROWS_7X7_S1_FULL 1
#define TINYC_DW_ROWS_7X7_S2_NARROW 1
#define TINYC_DW_ROWS_7X7_S2_FULL 1
/* depthwise_conv.c: in-place 3x3 stride 2 read straight from the NHWC buffer */
#define TINYC_DW_DIRECT_3X3_S2_NARROW 1
#define TINYC_DW_DIRECT_3X3_S2_FULL 1
/* depthwise_conv.c: in-place KxK at stride S without padding, four channels at a time from the
 * NHWC buffer (3x3 stride 1: small tiles) */
#define TINYC_DW_QUAD_3X3_S1_NARROW 1
#define TINYC_DW_QUAD_3X3_S1_FULL 1
#define TINYC_DW_QUAD_3X3_S2_NARROW 1
#define TINYC_DW_QUAD_3X3_S2_FULL 1
#define TINYC_DW_QUAD_5X5_S1_NARROW 1
#define TINYC_DW_QUAD_5X5_S1_FULL 1
#define TINYC_DW_QUAD_5X5_S2_NARROW 1
#define TINYC_DW_QUAD_5X5_S2_FULL 1
#define TINYC_DW_QUAD_7X7_S1_NARROW 1
#define TINYC_DW_QUAD_7X7_S1_FULL 1
#define TINYC_DW_QUAD_7X7_S2_NARROW 1
#define TINYC_DW_QUAD_7X7_S2_FULL 1

#endif /* TINYC_CONFIG_H */
