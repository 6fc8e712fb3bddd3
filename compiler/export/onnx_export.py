"""The forward part of an int8 IR graph as a float ONNX model (NCHW), weights dequantized.

Used by `tinyc export` to turn parameters trained on the device back into an ordinary ONNX model.
Fused clamps become Clip nodes, FC layers Gemm, requantize nodes Identity; a flatten of a spatial
tensor gets its consumer's weight columns back in ONNX's (C, H, W) order.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..ir import Graph, Node


def _dequantized(g: Graph, name: str) -> np.ndarray:
    t = g.tensors[name]
    data = t.data.astype(np.float64)
    if t.q is not None and t.dtype in ("int8", "int32"):
        scale = np.asarray(t.q.scale, np.float64)
        if scale.ndim == 1 and data.ndim > 1:
            scale = scale.reshape((-1,) + (1,) * (data.ndim - 1))
        data = data * scale
    return data.astype(np.float32)


class OnnxWriter:
    """The float ONNX graph being written, as an op's `onnx_export` hook sees it."""

    def __init__(self, g: Graph):
        self.g = g
        self.nodes, self.inits = [], []
        self.node_names: set[str] = set()
        self.spatial_flatten = {}   # FC node name -> (h, w, c) of the flattened input

    def const(self, name, arr, dtype=np.float32) -> str:
        from onnx import numpy_helper
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype), name))
        return name

    def add(self, op_type: str, inputs, outputs, **attrs) -> None:
        """One ONNX node; its name made unique (one IR node may become several, e.g. a mean
        over H and W -> GlobalAveragePool + Flatten: onnxruntime refuses repeated names)."""
        from onnx import helper
        name = attrs.pop("name", None) or outputs[0]
        base, k = name, 1
        while name in self.node_names:
            name, k = f"{base}_{k}", k + 1
        self.node_names.add(name)
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=name, **attrs))

    def dequantized(self, name: str) -> np.ndarray:
        return _dequantized(self.g, name)

    def clip(self, node, src: str, dst: str) -> None:
        """dst = Clip(src) to the node's "clamp" range (bounds that are infinite left out)."""
        lo, hi = node.attrs["clamp"]
        ins = [src, self.const(dst + "_min", lo) if np.isfinite(lo) else "",
               self.const(dst + "_max", hi) if np.isfinite(hi) else ""]
        self.add("Clip", ins, [dst], name=node.name + "/clip")


def _fused_clamp(node: Node) -> bool:
    """A clamp is fused into the node: a Clip follows its raw output."""
    return node.attrs.get("clamp") is not None and ops.get(node).takes_clamp


def export_onnx(g: Graph, path: str, opset: int = 17) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = OnnxWriter(g)
    n_forward = g.meta.get("train", {}).get("forward_nodes", len(g.nodes))
    for node in g.nodes[:n_forward]:
        op = ops.get(node)
        if op.training_only:
            continue   # no part of the inference
        out = node.outputs[0]
        fused = _fused_clamp(node)
        raw = out + "_preact" if fused else out
        op.onnx_export(x, node, raw)
        if fused:
            x.clip(node, raw, out)

    in_shape, in_name = list(g.meta["input_nchw"]), g.inputs[0]
    if len(in_shape) == 3:   # a 1-D model is exported as the N,C,1,L image tinyc compiled
        in_shape = [1, in_shape[1], 1, in_shape[2]]
    if g.meta.get("input_layout") == "nhwc":   # as the source model: N,H,W,C, then N,C,H,W
        in_name = g.inputs[0] + "_nhwc"
        x.nodes.insert(0, helper.make_node("Transpose", [in_name], [g.inputs[0]],
                                           name=in_name + "/transpose", perm=[0, 3, 1, 2]))
    output = g.outputs[0]
    out_shape = list(g.tensors[output].shape)
    if len(out_shape) == 4:
        out_shape = [out_shape[0], out_shape[3], out_shape[1], out_shape[2]]
    graph = helper.make_graph(
        x.nodes, "tinyc_export",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)], x.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="tinyc")
    onnx.checker.check_model(model)
    onnx.save(model, path)
