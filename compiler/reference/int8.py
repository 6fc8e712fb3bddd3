"""The golden model: a numpy executor of the int8 IR with TFLite's integer arithmetic.

The generated C must produce exactly these bytes; TFLite's reference kernels and TFLite Micro
are checked against it on exported .tflite files.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..ir import Graph, Node
from .common import conv_accumulate, crop, paste, pool_windows
from .fixedpoint import multiply_by_quantized_multiplier as mbqm


def _saturate(y, lo=-128, hi=127) -> np.ndarray:
    return np.clip(y, lo, hi).astype(np.int8)


def run_int8_node(g: Graph, node: Node, env: dict) -> np.ndarray:
    op = ops.REGISTRY.get(node.op)
    if op is not None:
        return op.run_int8(g, node, env)
    a, q = node.attrs, node.attrs["q"]
    x = env[node.inputs[0]]
    if node.op == "conv2d":
        w, b = g.tensors[node.inputs[1]].data, g.tensors[node.inputs[2]].data
        xin = x[0].astype(np.int64) - q["in_zp"]
        acc = conv_accumulate(xin, w, a["strides"], a["pads"], a["dilations"], a["groups"],
                              np.int64) + b
        y = mbqm(acc, q["mult"], q["shift"]) + q["out_zp"]
        return _saturate(y, q["act_min"], q["act_max"])[None]
    if node.op == "fully_connected":
        w, b = g.tensors[node.inputs[1]].data, g.tensors[node.inputs[2]].data
        acc = (x.astype(np.int64) - q["in_zp"]) @ w.T.astype(np.int64) + b
        y = mbqm(acc, q["mult"], q["shift"]) + q["out_zp"]
        return _saturate(y, q["act_min"], q["act_max"])
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
    if node.op == "pad":
        t, l, b_, r = a["pads"]
        return np.pad(x, ((0, 0), (t, b_), (l, r), (0, 0)), constant_values=q["pad_value"])
    if node.op == "concat":
        return np.concatenate([env[i] for i in node.inputs], axis=-1)
    if node.op == "reshape":
        return x.reshape(g.tensors[node.outputs[0]].shape)
    if node.op == "crop":
        return crop(x, a["origin"], g.tensors[node.outputs[0]].shape)
    if node.op == "paste":
        acc = env[node.inputs[1]] if len(node.inputs) > 1 else None
        return paste(acc, x, a["origin"], g.tensors[node.outputs[0]].shape, np.int8)
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
