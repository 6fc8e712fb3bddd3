"""The one intermediate representation every tinyc pass reads and writes.

Conventions (fixed for the whole compiler):
- Activations are NHWC with batch 1: shape (1, H, W, C); 2-D activations are (1, N).
- Conv weights are OHWI: (C_out, KH, KW, C_in / groups). A depthwise conv is a conv whose
  groups == C_in (its weight is (C_out, KH, KW, 1)).
- Fully-connected weights are (N_out, N_in).
- Spatial pads are (top, left, bottom, right). Negative pads appear only in the local frames of a
  patch-based schedule (passes/patch.py): they skip rows/columns of a larger input buffer.
- A float graph has float32 tensors; the quantize pass turns activations and weights into int8
  (biases int32) and attaches QParams to every tensor and the integer parameters every kernel
  needs to node.attrs["q"], so the reference executor and the code generator read the same numbers.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from .errors import printable

# The ops of the IR and everything about each: compiler/ops (one module per family). Activation
# clamps (ReLU, ReLU6, Clip) are fused into the op before them where it can take them ("clamp"
# attr = (lo, hi) floats); a standalone clamp is the "clamp" op.


@dataclass
class QParams:
    scale: np.ndarray        # float32; shape () per tensor or (C,) per channel
    zero_point: np.ndarray   # int32, same shape as scale
    axis: int | None = None  # quantized dimension for per-channel params

    @property
    def per_channel(self) -> bool:
        return self.scale.ndim == 1

    def scalar(self) -> tuple[float, int]:
        assert not self.per_channel
        return float(self.scale), int(self.zero_point)


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"           # float32 | int8 | int32
    data: np.ndarray | None = None   # set for constants (weights, biases)
    q: QParams | None = None

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * {"float32": 4, "int8": 1, "int32": 4}[self.dtype]


@dataclass
class Node:
    name: str                  # name of the source ONNX node (used in every error message)
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    source_op: str = ""        # the ONNX op type it came from

    def describe(self) -> str:
        src = f" (ONNX {self.source_op})" if self.source_op and self.source_op != self.op else ""
        return f"node '{printable(self.name, keep_newlines=False)}' op {self.op}{src}"


@dataclass
class Graph:
    tensors: dict[str, Tensor]
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    meta: dict = field(default_factory=dict)

    def copy(self) -> "Graph":
        return copy.deepcopy(self)

    def tensor(self, name: str) -> Tensor:
        return self.tensors[name]

    def producer(self, tensor_name: str) -> Node | None:
        for n in self.nodes:
            if tensor_name in n.outputs:
                return n
        return None

    def consumers(self, tensor_name: str) -> list[Node]:
        return [n for n in self.nodes if tensor_name in n.inputs]

    def activations(self) -> list[str]:
        """Non-constant tensors in the order they are first produced (graph inputs first)."""
        names = list(self.inputs)
        for n in self.nodes:
            names += [o for o in n.outputs if o not in names]
        return names

    def constants(self) -> list[str]:
        seen = []
        for n in self.nodes:
            for i in n.inputs:
                if i and self.tensors[i].is_const and i not in seen:
                    seen.append(i)
        return seen

    def remove_unused_tensors(self) -> None:
        used = set(self.inputs) | set(self.outputs)
        for n in self.nodes:
            for m in [n] + list(n.attrs.get("region", ())):   # a lut node's fused chain
                used.update(i for i in m.inputs if i)
                used.update(m.outputs)
        self.tensors = {k: v for k, v in self.tensors.items() if k in used}

    def macs(self, node: Node) -> int:
        """Multiply-accumulates of one node (0 for data movement)."""
        from . import ops   # compiler/ops imports this module
        return ops.get(node).macs(self, node)


def conv_out_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int,
                  dilation: int = 1) -> int:
    eff = (kernel - 1) * dilation + 1
    return (size + pad_before + pad_after - eff) // stride + 1
