"""The README's per-op table (ONNX op -> IR op, training, patch-based schedules), from the op
catalogue itself (compiler/ops), so that it cannot drift from the code.

    python bench/op_table.py            # prints the markdown table
"""
from __future__ import annotations

from tinyc import ops
from tinyc.frontend.onnx import FOLDABLE, PLUMBING
from tinyc.ops.base import Op

NOTES = {   # what the table's columns cannot say
    "Mul": "two activations (same shape / per-channel gate), by a number (in a table) or a "
           "constant per channel",
    "Add": "two activations of one shape, a number or a constant per channel; a MatMul's bias",
    "Sub": "an activation minus a number or a constant per channel",
    "Div": "an activation by a number or a constant per channel",
    "HardSigmoid": "as TFLite's MUL + ADD, in a table", "Sigmoid": "TFLite LOGISTIC, a table",
    "HardSwish": "TFLite HARD_SWISH, a table",
    "Reshape": "flatten to 2-D, views that keep the bytes, channel shuffle",
    "Transpose": "any permutation of C, H, W (a kernel: TFLite TRANSPOSE); to N,H,W,C before a "
                 "flatten, its inverse and a channel shuffle move nothing",
    "Split": "channels", "Slice": "channels (patch-based too); rows / columns",
    "Conv": "2-D and 1-D, groups, dilation, any pads",
    "AveragePool": "pads, count_include_pad, ceil_mode", "MaxPool": "pads, ceil_mode",
    "Softmax": "over the last axis of (1, N) or the channels, anywhere (at the output, "
               "training computes its loss there instead)", "Concat": "channels", "Pad": "constant, H and W",
    "ReduceMean": "over H, W", "BatchNormalization": "folded into the conv before it",
}


def _trains(op, onnx_type: str) -> str:
    if type(op).grad is not Op.grad:
        return "yes"
    # passes/fuse_lut.py makes these part of a table (`lut`), which has a gradient
    if op.name in ("sigmoid", "hard_swish") or onnx_type == "Div":
        return "yes (in a table)"
    return "no"


def rows() -> list[tuple[str, str, str, str, str]]:
    out = []
    for op in ops.REGISTRY.values():
        for onnx_type in op.onnx:
            out.append((onnx_type, op.name, _trains(op, onnx_type),
                        "yes" if op.patchable else "no", NOTES.get(onnx_type, "")))
    return sorted(out)


def markdown() -> str:
    lines = ["| ONNX op | IR op | gradient (training) | patch-based | notes |",
             "|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows()]
    lines.append(f"\nRemoved or folded at import: {', '.join(sorted(PLUMBING))}; any node whose "
                 f"inputs are all constants ({', '.join(sorted(FOLDABLE))}).")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
