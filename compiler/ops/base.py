"""What every op of the IR may declare, in one interface (see CONTRIBUTING.md, "Adding an op").

An op module (compiler/ops/<family>.py) subclasses Op once per IR op and fills in only the hooks
that apply; the passes, the reference executors, the planner, the code generator and the
exporters ask the op (`ops.get(node.op).<hook>(...)`) instead of branching on its name. A hook an
op does not have raises UnsupportedError naming the node, the op and the hook, so a missing piece
is a clear error, never a silent fallback.

Hooks, grouped by the stage that calls them:
- frontend/onnx.py     `onnx`: ONNX op type -> (import rule, (fewest, most) inputs);
                       `fold_constant_add`
- passes/fuse_activations  trait `takes_clamp`
- passes/fuse_lut      `elementwise_int8` (element-wise ops that become one table lookup)
- reference/float_exec `run_float`        reference/int8 `run_int8`
- reference/train      `run_train` (the nodes of a training step); trait `training_only`
- passes/quantize      `out_qparams`, `quantize`; traits `pass_through_q`, `requantizing`
- passes/autodiff      `grad`; traits `masks_gradient` (a clamp on its output masks the
                       gradient), `trainable_params` (a layer a scheme may train)
- passes/fuse_activations  trait `takes_clamp` (a standalone clamp after it fuses into it)
- passes/patch         `patchable`, `window`, `input_interval`, `patch_attrs`
- memory/planner       trait `alias`; `plan` (in-place sharing, scratch), `bias_scratch_bytes`,
                       `first_byte_read`; trait `assembled` with `written_bytes`; `mask_read`
                       (packable_masks), `updates` (update_nodes)
- codegen/c            `layer` (the C call's parameters, kernel kind, template file), `sources`
- export/tflite        `tflite`       export/onnx_export `onnx_export`
- ir.Graph.macs        `macs`
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import UnsupportedError
from ..ir import Graph, Node

Interval = tuple[int, int]   # [lo, hi) rows or columns (passes/patch.py)


def operand(g: Graph, env: dict, name: str) -> np.ndarray:
    """An input's value in a reference executor: the activation from env, or the constant."""
    t = g.tensors[name]
    return env[name] if not t.is_const else t.data


def operand_float(g: Graph, env: dict, name: str) -> np.ndarray:
    """The same in a float executor: a quantized constant is dequantized."""
    t = g.tensors[name]
    if not t.is_const:
        return env[name]
    if t.dtype == "int8" and t.q is not None:
        scale, zp = t.q.scalar()
        return ((t.data.astype(np.float64) - zp) * scale).astype(np.float32)
    return t.data


def quantize_scalar_constant(g: Graph, name: str) -> None:
    """A constant operand of MUL / ADD (one number, or one per channel) as int8 with one
    symmetric scale: its largest magnitude is 127 steps (what TFLite's converter does with a
    constant input)."""
    from ..passes.quantize import round_scale
    from ..reference.fixedpoint import round_half_away
    from ..ir import QParams
    t = g.tensors[name]
    if t.dtype == "int8":
        return
    c = np.asarray(t.data, np.float64)
    top = float(np.abs(c).max())
    scale = round_scale(top / 127.0 if top > 0 else 1.0 / 127.0)
    q = np.clip(round_half_away(c / float(scale)), -127, 127)
    t.data, t.dtype = np.asarray(q, np.int8).reshape(t.shape), "int8"
    t.q = QParams(np.asarray(scale, np.float32), np.asarray(0, np.int32))


def constant_operand(imp, node, x, c: np.ndarray, what: str) -> np.ndarray:
    """An ONNX constant operand of an element-wise op on activation x as the IR's: one number
    (shape (1,)) or one per channel (shape (C,): an N,C,H,W constant (C, 1, 1), (1, C, 1, 1),
    an N,C,L one (C, 1), or a vector's (N,)); anything else is refused naming the node."""
    c = np.asarray(c, np.float64)
    if c.size == 1:
        return c.reshape(1)
    onnx_shape = imp.onnx_shape(x)
    channels = x.shape[-1]
    per_channel = (c.size == channels and len(c.shape) <= len(onnx_shape) and
                   all(d == 1 for d in (c.shape[:-1] if len(onnx_shape) == 2 else
                                        c.shape[-(len(onnx_shape) - 2):])))
    if not per_channel:
        raise imp.err(node, f"{what} by a constant of shape {list(c.shape)} is not supported; "
                            "only by one number or one per channel")
    return c.reshape(channels)


@dataclass
class PlanContext:
    """What an op's `plan` hook may use to share memory in place and ask for scratch
    (memory/planner.py _group)."""
    g: Graph
    inplace: bool                 # in-place kernels allowed at all (False: the plain plan)
    pointwise: bool               # in-place 1x1 convs allowed
    pointwise_grad: bool          # in-place 1x1 input gradients allowed
    split: dict                   # planner.split_weights(g)
    dies_at: Callable[[str, int], bool]          # (tensor, node index) -> its value dies there
    join: Callable[[int, str, str, str], None]   # (node index, input, output, kind): in place
    scratch: dict = field(default_factory=dict)  # node index -> scratch bytes (set by hooks)
    # node index -> the larger scratch a faster variant of the node's kernel can use: given only
    # where it fits in the arena's free bytes after placement (never growing the arena); the
    # kernel is told the size it got and picks its variant
    roomy: dict = field(default_factory=dict)


@dataclass
class TrainRun:
    """One training step of the numpy reference (reference/train.py train_step)."""
    lr: float
    step: int
    guard: object                 # reference.train.GuardStats
    label: int
    loss: float | None = None
    skip: bool = False            # the step's check failed: stop before any update
    # a probe step (autotune.fisher_of_updates): each update node calls observe(node, g_y,
    # saved input) instead of updating anything
    observe: object = None


class Op:
    name: str = ""                # the IR op name (Node.op)
    # ONNX op type -> (import rule(importer, onnx_node), (fewest, most) inputs)
    onnx: dict = {}
    # traits
    backward: bool = False        # a node of a training step (passes/autodiff.py)
    # a forward node of a training step that only keeps data for the backward pass (inference,
    # predict and the ONNX export skip it)
    training_only: bool = False
    alias: bool = False           # its output is its input's bytes (no kernel, no copy)
    assembled: bool = False       # its output is assembled window by window (`written_bytes`)
    pass_through_q: bool = False  # its output keeps its input's quantization parameters
    requantizing: bool = False    # it writes any output scale (concat may retarget it)
    masks_gradient: bool = False  # a fused clamp on its output masks the output gradient
    takes_clamp: bool = False     # a clamp on its output fuses into it (its "clamp" attribute)
    trainable_params: bool = False  # has weights and bias a training scheme may update
    patchable: bool = False       # may run patch by patch (passes/patch.py)
    windowed: bool = False        # reads windows of its input through pads (`window`)
    # runtime sources (runtime_c/src/...; a bare name is under forward/) of each kernel kind
    sources: dict = {}

    def kernel_variants(self, L: dict) -> set:
        """The specialised kernel variants (tinyc/config.h defines, KERNEL_VARIANTS) the C
        kernel of layer L may call; a build compiles only the variants its layers name."""
        return set()

    def unsupported(self, node: Node, hook: str) -> UnsupportedError:
        return UnsupportedError(f"{node.describe()}: op {self.name} has no '{hook}' "
                                "(compiler/ops); it cannot be used here")

    # ---------------------------------------------------------------- import
    def fold_constant_add(self, imp, prod: Node, node, x, c: np.ndarray) -> bool:
        """At import, absorb the ONNX Add `node` of constant c to this op's output x (node
        `prod` of the importer `imp`) into the op; True if it did (default: cannot)."""
        return False

    # ---------------------------------------------------------------- numbers
    def macs(self, g: Graph, node: Node) -> int:
        return 0

    def elementwise_int8(self, g: Graph, node: Node) -> str | None:
        """'plain' or 'table' if int8 output element i depends only on element i of the node's
        activation inputs (and on constants), else None. 'table': the op is only ever run as a
        table (passes/fuse_lut.py fuses a chain holding one); 'plain': it has its own kernel and
        joins a chain that needs a table anyway."""
        return None

    def layer_type(self, g: Graph, node: Node) -> str:
        """What a profile or a benchmark groups the node's cost by (e.g. 'depthwise 3x3 s2')."""
        return self.name

    def run_float(self, g: Graph, node: Node, env: dict) -> np.ndarray:
        raise self.unsupported(node, "run_float")

    def run_int8(self, g: Graph, node: Node, env: dict) -> np.ndarray:
        raise self.unsupported(node, "run_int8")

    def run_train(self, g: Graph, node: Node, env: dict, run: TrainRun) -> np.ndarray | None:
        """A training step's node on the reference; forward ops run their int8 rule."""
        return self.run_int8(g, node, env)

    # ---------------------------------------------------------------- quantization
    def out_qparams(self, g: Graph, node: Node, q: dict, ranges: dict):
        """The QParams of the node's output, given those chosen so far (`q`) and the calibrated
        float ranges. Default: from the output's range, or the input's with pass_through_q."""
        from ..passes.quantize import choose_qparams
        if self.pass_through_q:
            return q[node.inputs[0]]
        return choose_qparams(*ranges[node.outputs[0]])

    def quantize(self, g: Graph, node: Node) -> dict:
        """The integer parameters of the node (node.attrs['q']), its tensors already int8."""
        raise self.unsupported(node, "quantize")

    # ---------------------------------------------------------------- training
    def grad(self, ad, node: Node, g_out: str, need: list[str]) -> None:
        """Append the backward nodes of `node` to the training graph being built (`ad`:
        passes/autodiff.py _Backward): gradients for the inputs in `need` from g_out."""
        if need:
            raise self.unsupported(node, "grad")

    # ---------------------------------------------------------------- patch schedules
    def window(self, g: Graph, node: Node, axis: int) -> tuple[int, int, int, int]:
        """(kernel, stride, pad before, dilation) along axis 0 (H) or 1 (W) of a windowed op
        (its patches take their input buffer as is and shift their pads into its frame)."""
        raise self.unsupported(node, "window")

    def input_interval(self, g: Graph, node: Node, out: Interval, axis: int) -> Interval:
        """The input rows/columns (unclipped) that outputs `out` read along axis; default: a
        windowed op's windows, else the same positions (element-wise)."""
        if not self.windowed:
            return out
        k, s, p, d = self.window(g, node, axis)
        lo, hi = out
        return lo * s - p, (hi - 1) * s - p + (k - 1) * d + 1

    def patch_attrs(self, g: Graph, node: Node, out_reg, in_reg) -> dict:
        """Attributes of the node's copy computing region out_reg from an input buffer holding
        in_reg (regions: ((row lo, hi), (col lo, hi)))."""
        if not self.windowed:
            return {}
        pads = []
        for axis in (0, 1):
            (a, b), (r0, r1) = out_reg[axis], in_reg[axis]
            k, s, p, d = self.window(g, node, axis)
            before = p - (a * s - r0)
            after = (b - a - 1) * s + (k - 1) * d + 1 - (r1 - r0) - before
            pads.append((before, after))
        return {"pads": (pads[0][0], pads[1][0], pads[0][1], pads[1][1])}

    # ---------------------------------------------------------------- memory plan
    def plan(self, ctx: PlanContext, i: int, node: Node) -> None:
        """In-place sharing (ctx.join) and scratch (ctx.scratch[i]) of node i; default none."""

    def bias_scratch_bytes(self, ctx: PlanContext, i: int, node: Node,
                           inplace_kind: str | None) -> int:
        """Scratch bytes for a trained layer's folded bias, placed after the kernel's own
        scratch (plan.bias_scratch), once every node is planned; default none."""
        return 0

    def first_byte_read(self, g: Graph, node: Node, t: str) -> int:
        """The lowest byte of activation t that the node reads (0 unless it reads a window)."""
        shape = g.tensors[t].shape
        if not self.windowed or len(shape) != 4 or t != node.inputs[0]:
            return 0
        _, _, width, c = shape
        top, left = node.attrs.get("pads", (0, 0, 0, 0))[:2]
        return (max(0, -top) * width + max(0, -left)) * c

    def written_bytes(self, g: Graph, node: Node, held: Callable[[str], int]) -> int:
        """Bytes of its assembled output written so far; held(t): those of input t's buffer."""
        raise self.unsupported(node, "written_bytes")

    def mask_read(self, node: Node, y: str) -> tuple | None:
        """(lo, hi) when the node reads activation y only as the mask of a gradient, else None."""
        return None

    def updates(self, node: Node) -> list[Node]:
        """The conv2d_update nodes the node runs (itself, or those fused into it)."""
        return []

    # ---------------------------------------------------------------- code generation
    def layer(self, g: Graph, node: Node, i: int, plan, consts, params) -> dict:
        """The C call of node i: dict(kind=<kernel>, template=<templates/ops file>,
        ptype=<params struct>, params={...}, ...) (codegen/c.py adds offsets and names)."""
        raise UnsupportedError(f"{node.describe()}: no C kernel for op '{self.name}'")

    # ---------------------------------------------------------------- export
    def tflite(self, x, node: Node) -> None:
        """Write the node into the .tflite being built (`x`: export/tflite.py _Exporter)."""
        raise UnsupportedError(f"{node.describe()}: no TFLite export for op {self.name}")

    def onnx_export(self, x, node: Node, raw: str) -> None:
        """Append the node's float ONNX node(s) computing `raw` (`x`: export/onnx_export.py
        _OnnxWriter)."""
        raise UnsupportedError(f"{node.describe()}: cannot be exported to ONNX")
