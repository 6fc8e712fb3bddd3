"""numpy executor of the float IR (NHWC). Used for calibration and to check the importer
against onnxruntime."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..ir import Graph, Node
from .common import conv_accumulate, crop, paste, pool_windows


def _clamp(y, clamp):
    if clamp is None:
        return y
    return np.clip(y, clamp[0], clamp[1])


def run_float_node(g: Graph, node: Node, env: dict) -> np.ndarray:
    op = ops.REGISTRY.get(node.op)
    if op is not None:
        return op.run_float(g, node, env)
    a = node.attrs
    x = env[node.inputs[0]]
    if node.op == "conv2d":
        w, b = g.tensors[node.inputs[1]].data, g.tensors[node.inputs[2]].data
        y = conv_accumulate(x[0], w, a["strides"], a["pads"], a["dilations"], a["groups"],
                            np.float64) + b
        return _clamp(y, a["clamp"])[None].astype(np.float32)
    if node.op == "fully_connected":
        w, b = g.tensors[node.inputs[1]].data, g.tensors[node.inputs[2]].data
        y = x.astype(np.float64) @ w.T.astype(np.float64) + b
        return _clamp(y, a["clamp"]).astype(np.float32)
    if node.op in ("avg_pool", "max_pool"):
        pad_value = 0.0 if node.op == "avg_pool" else -np.inf
        vals, valid = pool_windows(x[0], a["kernel"], a["strides"], a["pads"], pad_value)
        if node.op == "max_pool":
            y = vals.max(axis=2)
        elif a.get("count_include_pad"):
            y = vals.mean(axis=2)
        else:
            y = vals.sum(axis=2) / valid.sum(axis=2)
        return y[None].astype(np.float32)
    if node.op == "pad":
        t, l, b_, r = a["pads"]
        return np.pad(x, ((0, 0), (t, b_), (l, r), (0, 0)),
                      constant_values=a["value"]).astype(np.float32)
    if node.op == "concat":
        return np.concatenate([env[i] for i in node.inputs], axis=-1)
    if node.op == "reshape":
        return x.reshape(g.tensors[node.outputs[0]].shape)
    if node.op == "crop":
        return crop(x, a["origin"], g.tensors[node.outputs[0]].shape)
    if node.op == "paste":
        acc = env[node.inputs[1]] if len(node.inputs) > 1 else None
        return paste(acc, x, a["origin"], g.tensors[node.outputs[0]].shape, np.float32)
    raise NotImplementedError(node.op)


def run_float(g: Graph, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """Run the float graph on one NHWC input; returns every activation by name."""
    env = {g.inputs[0]: np.asarray(x_nhwc, dtype=np.float32).reshape(g.tensors[g.inputs[0]].shape)}
    for node in g.nodes:
        env[node.outputs[0]] = run_float_node(g, node, env)
    return env
