"""The golden model: a numpy executor of the int8 IR with TFLite's integer arithmetic.

The generated C must produce exactly these bytes; TFLite's reference kernels and TFLite Micro
are checked against it on exported .tflite files.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..ir import Graph, Node
from .common import pool_windows
from .fixedpoint import multiply_by_quantized_multiplier as mbqm


def _saturate(y, lo=-128, hi=127) -> np.ndarray:
    return np.clip(y, lo, hi).astype(np.int8)


def run_int8_node(g: Graph, node: Node, env: dict) -> np.ndarray:
    op = ops.REGISTRY.get(node.op)
    if op is not None:
        return op.run_int8(g, node, env)
    a, q = node.attrs, node.attrs["q"]
    x = env[node.inputs[0]]
    if node.op == "avg_pool":
        zp = int(g.tensors[node.inputs[0]].q.zero_point)
        vals, valid = pool_windows(x[0].astype(np.int64), a["kernel"], a["strides"], a["pads"], zp)
        if a.get("count_include_pad"):
            count = np.full(valid.shape[:2] + (1,), vals.shape[2], np.int64)
            total = vals.sum(axis=2)
        else:
            count = valid.sum(axis=2).astype(np.int64)
            total = np.where(valid, vals, 0).sum(axis=2)
        # TFLite: round half away from zero with C's truncating division
        avg = np.where(total > 0, (total + count // 2) // count, -((-total + count // 2) // count))
        return _saturate(avg, q["act_min"], q["act_max"])[None]
    if node.op == "max_pool":
        vals, _ = pool_windows(x[0].astype(np.int64), a["kernel"], a["strides"], a["pads"], -129)
        return _saturate(vals.max(axis=2), q["act_min"], q["act_max"])[None]
    raise NotImplementedError(node.op)


def run_int8(g: Graph, x_int8_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """Run the int8 graph on one int8 NHWC input; returns every activation by name."""
    x = np.asarray(x_int8_nhwc)
    if x.dtype != np.int8:
        raise TypeError("run_int8 takes an int8 input; quantize it first (pipeline.quantize_input)")
    env = {g.inputs[0]: x.reshape(g.tensors[g.inputs[0]].shape)}
    for node in g.nodes:
        env[node.outputs[0]] = run_int8_node(g, node, env)
    return env
