"""Fuse standalone clamps (ReLU, ReLU6, Clip) into the conv / fully-connected / add before them.

int8 kernels clamp for free while requantizing, and the fused graph is what TFLite runs too.
A clamp stays standalone when its input has other consumers or comes from an op that cannot
clamp (pools, concat, pad, the graph input).
"""
from __future__ import annotations

from .. import ops
from ..ir import Graph, Node


def _takes_clamp(node: Node) -> bool:
    return ops.get(node).takes_clamp


def fuse_activations(graph: Graph) -> Graph:
    g = graph.copy()
    changed = True
    while changed:
        changed = False
        for node in list(g.nodes):
            if node.op != "clamp":
                continue
            src = node.inputs[0]
            prod = g.producer(src)
            if (prod is None or not _takes_clamp(prod) or src in g.outputs
                    or len(g.consumers(src)) != 1):
                continue
            lo, hi = node.attrs["clamp"]
            if prod.attrs.get("clamp") is not None:
                plo, phi = prod.attrs["clamp"]
                lo, hi = max(lo, plo), min(hi, phi)
            prod.attrs["clamp"] = (lo, hi)
            prod.outputs = list(node.outputs)
            g.nodes.remove(node)
            changed = True
    g.remove_unused_tensors()
    return g
