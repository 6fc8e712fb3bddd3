"""Post-training int8 quantization (TFLite's scheme, so TFLite's kernels are an exact oracle).

- activations: per-tensor asymmetric int8 from calibration min/max (range always contains 0);
  ops that only move data (pools, pad, reshape, standalone clamp, concat) keep their input's
  parameters, as TFLite's int8 kernels require;
- conv weights: per-output-channel symmetric int8 in [-127, 127]; fully-connected weights: one
  symmetric scale (TFLite's per-tensor FULLY_CONNECTED); biases int32 at scale s_in * s_w;
- every scale is rounded to float32 first (what a .tflite file stores) and kernel multipliers are
  derived from those float32 values in double precision exactly as TFLite's Prepare() does;
- the integer parameters every kernel needs go to node.attrs["q"]: the reference executor and the
  code generator read them from there and never recompute them.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..errors import TinycError
from ..ir import Graph, Node, QParams
from ..reference.fixedpoint import quantize_multiplier, round_half_away
from ..reference.float_exec import run_float_node

QMIN, QMAX = -128, 127
# |int32 bias| <= 2^30: the headroom that keeps every int32 accumulator (bias plus products)
# from overflowing; the training update holds biases there too (train.h TINYC_BIAS_LIMIT)
BIAS_LIMIT = 2 ** 30
# ...and with products of at most 127 * 255 (weight times input minus its zero point), a dot
# product of up to MAX_DOT_LENGTH terms stays inside int32 on top of such a bias
MAX_DOT_LENGTH = (2 ** 31 - 1 - BIAS_LIMIT) // (127 * 255)


def calibrate(g: Graph, samples: np.ndarray) -> dict[str, tuple[float, float]]:
    """min/max of every activation over the calibration samples (N, H, W, C) float."""
    ranges: dict[str, tuple[float, float]] = {}
    shape = g.tensors[g.inputs[0]].shape
    for i, x in enumerate(samples):
        x = np.asarray(x, dtype=np.float32).reshape(shape)
        if not np.all(np.isfinite(x)):
            raise TinycError(f"calibration sample {i} contains NaN or Inf")
        env = {g.inputs[0]: x}
        for node in g.nodes:
            with np.errstate(over="ignore", invalid="ignore"):
                y = env[node.outputs[0]] = run_float_node(g, node, env)
            if not np.all(np.isfinite(y)):
                raise TinycError(f"{node.describe()}: its float output overflows (Inf or NaN) on "
                                 f"calibration sample {i}; {_weights_note(g, node)}fix the "
                                 "exported weights or the input scaling")
        for name, v in env.items():
            lo, hi = float(v.min()), float(v.max())
            if name in ranges:
                lo, hi = min(lo, ranges[name][0]), max(hi, ranges[name][1])
            ranges[name] = (lo, hi)
    return ranges


def _weights_note(g: Graph, node: Node) -> str:
    consts = [g.tensors[t].data for t in node.inputs[1:] if t and g.tensors[t].is_const]
    if not consts:
        return ""
    return f"its parameters reach {max(float(np.abs(c).max(initial=0)) for c in consts):.3g}; "


SCALE_BITS = 12


def round_scale(scale):
    """Round scales up to SCALE_BITS significant bits (float32). The product of two such scales is
    exact in float32, so TFLite (which multiplies input and filter scales in float32 for
    FULLY_CONNECTED) and TFLite Micro (which does it in double) derive the same multiplier.
    Rounding up only widens a range by at most 2^-12: no weight or activation gets clipped."""
    mant, exp = np.frexp(np.asarray(scale, np.float64))
    return np.ldexp(np.ceil(mant * 2.0 ** SCALE_BITS) / 2.0 ** SCALE_BITS, exp).astype(np.float32)


def choose_qparams(lo: float, hi: float) -> QParams:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = round_scale((hi - lo) / 255.0) if hi > lo else round_scale(1.0 / 255.0)
    zp = int(np.clip(round_half_away(QMIN - lo / float(scale)), QMIN, QMAX))
    return QParams(np.asarray(scale, np.float32), np.asarray(zp, np.int32))


def quantize_value(q: QParams, value: float) -> int:
    """TFLite's float -> int8 of one value: zp + round(value / scale) in float32, saturated."""
    scale, zp = q.scalar()
    v = np.float32(value) / np.float32(scale)
    return int(np.clip(zp + round_half_away(v), QMIN, QMAX))


def activation_range(q: QParams, clamp) -> tuple[int, int]:
    """Integer clamp of a fused activation, computed the way TFLite's
    CalculateActivationRangeQuantized does (float32 division, round half away)."""
    if clamp is None:
        return QMIN, QMAX
    lo, hi = clamp
    act_min = QMIN if lo == -np.inf else max(QMIN, quantize_value(q, lo))
    act_max = QMAX if hi == np.inf else min(QMAX, quantize_value(q, hi))
    return act_min, act_max


def quantize(graph: Graph, samples: np.ndarray | None,
             fixed_ranges: dict[str, tuple[float, float]] | None = None) -> Graph:
    """Float IR -> int8 IR. `samples`: calibration inputs (N, H, W, C) float32, NHWC.
    Without samples the caller must provide synthetic ones (see pipeline.py). `fixed_ranges`
    sets the float range of some tensors instead of calibration (e.g. the logits of a new
    classifier, which calibration cannot know before training)."""
    g = graph.copy()
    if samples is None or len(samples) == 0:
        raise TinycError("quantization needs at least one calibration sample")
    ranges = calibrate(g, samples)
    ranges.update(fixed_ranges or {})
    q: dict[str, QParams] = {g.inputs[0]: choose_qparams(*ranges[g.inputs[0]])}

    for node in list(g.nodes):
        q[node.outputs[0]] = ops.get(node).out_qparams(g, node, q, ranges)

    for name in g.activations():
        t = g.tensors[name]
        t.dtype, t.q = "int8", q[name]
    for node in g.nodes:
        _quantize_node(g, node)
    g.meta["calibration_samples"] = int(len(samples))
    g.meta["activation_ranges"] = {k: v for k, v in ranges.items()}
    from .fuse_lut import fuse_lut
    return fuse_lut(g)


def _requantizing(node: Node) -> bool:
    return ops.get(node).requantizing


def _same(a: QParams, b: QParams) -> bool:
    return float(a.scale) == float(b.scale) and int(a.zero_point) == int(b.zero_point)


def _quantize_node(g: Graph, node: Node) -> None:
    node.attrs["q"] = ops.get(node).quantize(g, node)
