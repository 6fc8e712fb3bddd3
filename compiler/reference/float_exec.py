"""numpy executor of the float IR (NHWC). Used for calibration and to check the importer
against onnxruntime."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..ir import Graph, Node
from .common import pool_windows


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
    raise NotImplementedError(node.op)


def run_float(g: Graph, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """Run the float graph on one NHWC input; returns every activation by name."""
    env = {g.inputs[0]: np.asarray(x_nhwc, dtype=np.float32).reshape(g.tensors[g.inputs[0]].shape)}
    for node in g.nodes:
        env[node.outputs[0]] = run_float_node(g, node, env)
    return env
