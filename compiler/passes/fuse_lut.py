"""Fuse every chain of element-wise int8 ops that reads one activation into table lookups.

An int8 tensor takes 256 values, so any chain of element-wise int8 ops whose only activation
input is x (e.g. HardSigmoid's MUL, ADD and clamp; swish's LOGISTIC and MUL(x, .)) computes
y[i] = T[x[i]]: the pass runs the chain's own int8 rules (compiler/ops `run_int8`) on the 256
values and replaces the chain by one `lut` node (compiler/ops/activation.py). Exact by
construction; the exported .tflite keeps the chain (the node's "region"), and the oracles check it.

A chain is fused only when it holds an op that runs only as a table (elementwise_int8 ==
'table'), so graphs without one are left exactly as they were. Each tensor of the chain that is
read outside it (or is a graph output) gets its own lut node from x.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..ir import Graph, Node
from ..reference.fixedpoint import INT8_VALUES

# the float derivative of the chain at each int8 input: central differences of its float rule
# over this fraction of the input's quantization step
SLOPE_STEP = 0.05


def _kind(g: Graph, node: Node) -> str | None:
    return ops.get(node).elementwise_int8(g, node)


def _activation_inputs(g: Graph, node: Node) -> list[str]:
    return [t for t in node.inputs if t and not g.tensors[t].is_const]


def fuse_lut(graph: Graph) -> Graph:
    g = graph.copy()
    root: dict[str, str] = {}          # tensor -> the one activation its chain reads
    members: dict[str, list[Node]] = {}  # root -> the chain's nodes, in graph order
    for node in g.nodes:
        kind = _kind(g, node)
        srcs = {root.get(t, t) for t in _activation_inputs(g, node)}
        if kind is None or len(srcs) != 1 or g.tensors[node.outputs[0]].dtype != "int8":
            continue
        r = srcs.pop()
        root[node.outputs[0]] = r
        members.setdefault(r, []).append(node)
    chains = {r: nodes for r, nodes in members.items()
              if any(_kind(g, n) == "table" for n in nodes)}
    if not chains:
        return g
    fused = {id(n) for nodes in chains.values() for n in nodes}
    new_nodes: list[Node] = []
    for node in g.nodes:
        if id(node) not in fused:
            new_nodes.append(node)
            continue
        y = node.outputs[0]
        outside = y in g.outputs or any(id(c) not in fused for c in g.consumers(y))
        if outside:
            new_nodes.append(_lut_node(g, root[y], y, chains[root[y]]))
    g.nodes = new_nodes
    g.meta["lut_regions"] = sorted({n.name for nodes in chains.values() for n in nodes})
    return g


def _needed(g: Graph, y: str, chain: list[Node]) -> list[Node]:
    """The nodes of the chain that y depends on, in graph order."""
    want, keep = {y}, []
    for n in reversed(chain):
        if n.outputs[0] in want:
            keep.append(n)
            want.update(_activation_inputs(g, n))
    return keep[::-1]


def _lut_node(g: Graph, x: str, y: str, chain: list[Node]) -> Node:
    region = _needed(g, y, chain)
    env = {x: INT8_VALUES.astype(np.int8)}
    for n in region:
        env[n.outputs[0]] = np.asarray(ops.get(n).run_int8(g, n, env)).reshape(-1)
    table = env[y].astype(np.int8)
    last = region[-1]
    return Node(last.name, "lut", [x], [y],
                {"region": region, "q": {"table": table, "slope": _slope(g, x, y, region)}},
                last.source_op)


def _slope(g: Graph, x: str, y: str, region: list[Node]) -> np.ndarray:
    """d y / d x of the chain's float rule at each int8 input's float value (float32)."""
    s, zp = g.tensors[x].q.scalar()
    xf = (INT8_VALUES - zp) * s
    h = SLOPE_STEP * s

    def f(v):
        env = {x: v.astype(np.float32)}
        for n in region:
            env[n.outputs[0]] = np.asarray(ops.get(n).run_float(g, n, env), np.float64).reshape(-1)
        return env[y]

    return ((f(xf + h) - f(xf - h)) / (2 * h)).astype(np.float32)
