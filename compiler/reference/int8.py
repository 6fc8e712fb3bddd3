"""The golden model: a numpy executor of the int8 IR with TFLite's integer arithmetic.

The generated C must produce exactly these bytes; TFLite's reference kernels and TFLite Micro
are checked against it on exported .tflite files. Each op's int8 rule is its `run_int8`
(compiler/ops).
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..ir import Graph, Node


def run_int8_node(g: Graph, node: Node, env: dict) -> np.ndarray:
    return ops.get(node).run_int8(g, node, env)


def run_int8(g: Graph, x_int8_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """Run the int8 graph on one int8 NHWC input; returns every activation by name."""
    x = np.asarray(x_int8_nhwc)
    if x.dtype != np.int8:
        raise TypeError("run_int8 takes an int8 input; quantize it first (pipeline.quantize_input)")
    env = {g.inputs[0]: x.reshape(g.tensors[g.inputs[0]].shape)}
    for node in g.nodes:
        env[node.outputs[0]] = run_int8_node(g, node, env)
    return env
