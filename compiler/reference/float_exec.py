"""numpy executor of the float IR (NHWC). Used for calibration and to check the importer
against onnxruntime. Each op's float rule is its `run_float` (compiler/ops)."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..ir import Graph, Node


def run_float_node(g: Graph, node: Node, env: dict) -> np.ndarray:
    return ops.get(node).run_float(g, node, env)


def run_float(g: Graph, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """Run the float graph on one NHWC input; returns every activation by name."""
    env = {g.inputs[0]: np.asarray(x_nhwc, dtype=np.float32).reshape(g.tensors[g.inputs[0]].shape)}
    for node in g.nodes:
        env[node.outputs[0]] = run_float_node(g, node, env)
    return env
