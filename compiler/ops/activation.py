"""Smooth activations (ONNX Sigmoid, HardSwish, HardSigmoid; swish as x * Sigmoid(x)) and `lut`,
the one kernel every int8 function of a single activation runs as.

int8: Sigmoid is TFLite's LOGISTIC (output scale 1/256, zero point -128, gemmlowp's fixed-point
logistic), HardSwish TFLite's HARD_SWISH (int16 fixed point); both are tabulated over the 256
int8 inputs by compiler/reference/fixedpoint.py, value by value what TFLite Micro computes.
HardSigmoid(x) = clip(alpha * x + beta, 0, 1) is imported as the TFLite ops a converter writes
for it: MUL by alpha, ADD of beta with the clamp (compiler/ops/mul.py, elementwise.py).

`lut` (passes/fuse_lut.py): any chain of element-wise int8 ops that reads one activation, e.g.
HardSigmoid's MUL, ADD and clamp or swish's LOGISTIC and MUL(x, .), is a function of that one
int8 value, so the compiler runs the chain's own int8 rules on all 256 inputs and the generated
code does one table lookup per element (in place). The exported .tflite keeps the chain (the
node's "region"), so the oracles check the table. Its gradient (training) multiplies by the
float derivative of the chain's float function at each int8 input (a second, float table).
Kernels: runtime_c/src/forward/lut.c, backward/elementwise_grad.c (tinyc_grad_lut).
"""
from __future__ import annotations

import numpy as np

from ..ir import Node, QParams
from ..reference import fixedpoint as fx
from .base import Op, PlanContext, TrainRun

F32 = np.float32
TEMPLATE = "ops/lut.c.j2"


def _import_unary(op: str):
    def rule(imp, node) -> None:
        x = imp.act(node.input[0], node)
        imp.emit(node, op, [x.name], [imp.new_act(node.output[0], x.shape)])
    return rule


def _import_hard_sigmoid(imp, node) -> None:
    """HardSigmoid -> Mul(x, alpha), Add(., beta) clamped to [0, 1]: the TFLite ops it is."""
    a = imp.attrs(node)
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    x = imp.act(node.input[0], node)
    name = node.name or node.output[0]
    scaled = imp.new_act(f"{node.output[0]}/scaled", x.shape)
    n = imp.emit(node, "mul", [x.name, imp.new_const(f"{name}/alpha", np.float32(alpha), node)],
                 [scaled], clamp=None)
    n.name = f"{name}/mul"
    n = imp.emit(node, "add", [scaled, imp.new_const(f"{name}/beta", np.float32(beta), node)],
                 [imp.new_act(node.output[0], x.shape)], clamp=(0.0, 1.0))
    n.name = f"{name}/add"


def _lookup(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.asarray(table, np.int8)[x.astype(np.int64) + 128]


def _plan_in_place(ctx: PlanContext, i: int, node: Node) -> None:
    if ctx.inplace and ctx.dies_at(node.inputs[0], i):
        ctx.join(i, node.inputs[0], node.outputs[0], "elementwise")


class _Tabulated(Op):
    """An op whose int8 rule is a table of its 256 inputs (attrs q["table"])."""
    patchable = True
    sources = {"lut": "lut.c"}

    def elementwise_int8(self, g, node):
        return "table"

    def run_int8(self, g, node, env):
        return _lookup(node.attrs["q"]["table"], env[node.inputs[0]])

    def plan(self, ctx, i, node):
        _plan_in_place(ctx, i, node)

    def layer(self, g, node, i, plan, consts, params):
        return _lut_layer(g, node, i, consts)


def _lut_layer(g, node, i, consts) -> dict:
    table = consts.add(f"lut:{node.name}:{i}", f"tinyc_lut{i}", "int8_t",
                       np.asarray(node.attrs["q"]["table"], np.int8),
                       note=f"int8 table of {node.op}")
    return dict(kind="lut", template=TEMPLATE, table=table,
                params=dict(size=g.tensors[node.outputs[0]].size))


class Sigmoid(_Tabulated):
    name = "sigmoid"
    onnx = {"Sigmoid": (_import_unary("sigmoid"), (1, 1))}

    def run_float(self, g, node, env):
        x = env[node.inputs[0]].astype(np.float64)
        return (1.0 / (1.0 + np.exp(-x))).astype(F32)

    def out_qparams(self, g, node, q, ranges):
        return QParams(np.asarray(1.0 / 256.0, F32), np.asarray(-128, np.int32))

    def quantize(self, g, node):
        s_in, zp_in = g.tensors[node.inputs[0]].q.scalar()
        return dict(table=fx.logistic_table(s_in, zp_in))

    def tflite(self, x, node):
        x.op("LOGISTIC", [x.tensor(node.inputs[0])], [x.tensor(node.outputs[0])])

    def onnx_export(self, x, node, raw):
        x.add("Sigmoid", node.inputs, [raw], name=node.name)


class HardSwish(_Tabulated):
    name = "hard_swish"
    onnx = {"HardSwish": (_import_unary("hard_swish"), (1, 1)),
            "HardSigmoid": (_import_hard_sigmoid, (1, 1))}   # as MUL, ADD (see above)

    def run_float(self, g, node, env):
        x = env[node.inputs[0]].astype(np.float64)
        return (x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)).astype(F32)

    def out_qparams(self, g, node, q, ranges):
        """From the output's range, widened where needed to over 1/128 of the input scale:
        TFLite's int8 HARD_SWISH refuses a smaller one (its output multiplier must be < 1)."""
        from ..passes.quantize import QMAX, QMIN, choose_qparams, round_scale
        lo, hi = ranges[node.outputs[0]]
        out = choose_qparams(lo, hi)
        s_in = np.float32(q[node.inputs[0]].scale)
        floor = np.float32(1.0 / 128.0) * s_in
        if fx.hard_swish_params(float(s_in), float(out.scale))["out_exp"] <= 0:
            return out
        scale = round_scale(float(floor) * 1.001)
        zp = int(np.clip(fx.round_half_away(QMIN - min(lo, 0.0) / float(scale)), QMIN, QMAX))
        return QParams(np.asarray(scale, F32), np.asarray(zp, np.int32))

    def quantize(self, g, node):
        from ..errors import TinycError
        s_in, zp_in = g.tensors[node.inputs[0]].q.scalar()
        s_out, zp_out = g.tensors[node.outputs[0]].q.scalar()
        if fx.hard_swish_params(s_in, s_out)["out_exp"] > 0:   # out_qparams prevents it
            raise TinycError(f"{node.describe()}: its output scale {s_out:.3g} is under 1/128 of "
                             f"its input scale {s_in:.3g}, which TFLite's int8 HARD_SWISH does not "
                             "support")
        return dict(table=fx.hard_swish_table(s_in, zp_in, s_out, zp_out))

    def tflite(self, x, node):
        x.op("HARD_SWISH", [x.tensor(node.inputs[0])], [x.tensor(node.outputs[0])])

    def onnx_export(self, x, node, raw):
        x.add("HardSwish", node.inputs, [raw], name=node.name)


class Lut(_Tabulated):
    """The fused chain (passes/fuse_lut.py): attrs "region" holds its nodes, whose tensors stay
    in the graph for the exporters; q["table"] its int8 table, q["slope"] the derivative table."""
    name = "lut"

    def elementwise_int8(self, g, node):
        return None   # already a table

    def _region(self, node):
        return node.attrs["region"]

    def run_float(self, g, node, env):
        from . import get
        local = dict(env)
        for n in self._region(node):
            local[n.outputs[0]] = get(n).run_float(g, n, local)
        return local[node.outputs[0]]

    def grad(self, ad, node, g_out, need):
        if need:
            g_x = ad.new_grad(node.inputs[0])
            ad.emit(Node(node.name + "/grad", "grad_lut", [g_out, node.inputs[0]], [g_x],
                         {"slope": node.attrs["q"]["slope"]}))
            ad.give_grad(node.inputs[0], g_x, node)

    def tflite(self, x, node):
        from . import get
        for n in self._region(node):
            get(n).tflite(x, n)

    def onnx_export(self, x, node, raw):
        from ..export.onnx_export import _fused_clamp
        from . import get
        region = self._region(node)
        for k, n in enumerate(region):
            out = raw if k == len(region) - 1 else n.outputs[0]
            fused = _fused_clamp(n)
            get(n).onnx_export(x, n, out + "_preact" if fused else out)
            if fused:
                x.clip(n, out + "_preact", out)


class GradLut(Op):
    """g_x = g_y * slope[x + 128] (float32; slope: the float derivative at each int8 input)."""
    name = "grad_lut"
    backward = True
    sources = {"grad_lut": "backward/elementwise_grad.c"}

    def run_train(self, g, node, env, run: TrainRun):
        slope = np.asarray(node.attrs["slope"], F32)
        return (env[node.inputs[0]] * slope[env[node.inputs[1]].astype(np.int64) + 128]).astype(F32)

    def plan(self, ctx, i, node):
        _plan_in_place(ctx, i, node)

    def layer(self, g, node, i, plan, consts, params):
        slope = consts.add(f"slope:{node.name}:{i}", f"tinyc_slope{i}", "float",
                           np.asarray(node.attrs["slope"], F32), note="derivative table")
        return dict(kind="grad_lut", template=TEMPLATE, slope=slope,
                    params=dict(size=g.tensors[node.outputs[0]].size))


OPS = (Sigmoid(), HardSwish(), Lut(), GradLut())
