"""Make NCHW flattens free: permute the weights of the fully-connected layer that reads them.

ONNX flattens a (1, C, H, W) tensor in C, H, W order; tinyc keeps activations NHWC, whose memory
is in H, W, C order. Instead of transposing at run time, the FC weight columns are reordered once.
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError
from ..ir import Graph


def fix_flatten_order(graph: Graph) -> Graph:
    g = graph.copy()
    for node in g.nodes:
        if node.op != "reshape" or not node.attrs.get("nchw_order"):
            continue
        out = node.outputs[0]
        users = g.consumers(out)
        if out in g.outputs or not users or any(u.op != "fully_connected" for u in users):
            raise UnsupportedError(
                f"{node.describe()}: flattening a spatial tensor {node.attrs['nchw_shape']} is "
                "supported only when a Gemm/MatMul consumes it (its weights absorb the NCHW order); "
                "add a global pooling before the flatten or end the model with the Gemm")
        _, h, w, c = node.attrs["nchw_shape"]
        # column index in NHWC memory (h, w, c) -> column index in ONNX order (c, h, w)
        hh, ww, cc = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
        onnx_col = (cc * h * w + hh * w + ww).reshape(-1)
        for u in users:
            wt = g.tensors[u.inputs[1]]
            wt.data = np.ascontiguousarray(wt.data[:, onnx_col])
        node.attrs["nchw_order"] = False
    return g
