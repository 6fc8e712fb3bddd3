"""The op catalogue: every op of the IR, each declared once in its family's module.

    conv.py         conv2d (regular, depthwise, pointwise), fully_connected
    conv_train.py   conv2d_grad_input, conv2d_update, dw_pw_grad (training steps)
    pool.py         avg_pool, max_pool and their gradients
    elementwise.py  add, clamp, requantize, grad_mask, grad_add, grad_alias
    data.py         pad, concat, reshape, crop, paste, select_channels, pad_grad, slice_grad
    softmax.py      softmax, softmax_ce
    mul.py          mul
    activation.py   sigmoid, hard_swish, lut (a fused element-wise chain), grad_lut
    channels.py     gather_channels (Split, Slice, channel shuffle), its gradient

REGISTRY (IR op name -> Op) is the one list; base.py says what an op declares. The passes,
planner, code generator and exporters look ops up here (`get`) instead of naming them.
"""
from __future__ import annotations

from ..errors import UnsupportedError
from ..ir import Node
from . import activation, channels, conv, conv_train, data, elementwise, mul, pool, softmax
from .base import Op, PlanContext, TrainRun

MODULES = (pool, conv, conv_train, data, elementwise, softmax, mul, activation, channels)

REGISTRY: dict[str, Op] = {}
for _module in MODULES:
    for _op in _module.OPS:
        assert _op.name not in REGISTRY, f"op {_op.name} declared twice"
        REGISTRY[_op.name] = _op

# every specialised kernel variant a build may compile or leave out (tinyc/config.h)
KERNEL_VARIANTS: tuple = conv.DW_VARIANTS


def get(node_or_name: Node | str) -> Op:
    """The Op of a node (or an IR op name); UnsupportedError for an unknown op."""
    name = node_or_name.op if isinstance(node_or_name, Node) else node_or_name
    op = REGISTRY.get(name)
    if op is None:
        what = node_or_name.describe() if isinstance(node_or_name, Node) else f"op '{name}'"
        raise UnsupportedError(f"{what}: unknown op (not in compiler/ops)")
    return op


def onnx_rules() -> dict:
    """ONNX op type -> (import rule, (fewest, most) inputs), from every op's `onnx`."""
    rules = {}
    for op in REGISTRY.values():
        for onnx_type, rule in op.onnx.items():
            assert onnx_type not in rules, f"ONNX {onnx_type} imported twice"
            rules[onnx_type] = rule
    return rules


__all__ = ["REGISTRY", "get", "onnx_rules", "Op", "PlanContext", "TrainRun"]
