"""Element-wise multiplication of two activations (ONNX Mul, TFLite MUL), int8 TFLite-exact.

Shapes: the same shape, or a per-channel gate (a squeeze-excite block's (1, C, 1, 1) times the
(1, C, H, W) feature map; either operand may be the gate). The IR keeps the full tensor first.
int8: out = out_zp + MultiplyByQuantizedMultiplier((x1 - zp1) * (x2 - zp2), M, shift), M from
s1 * s2 / s_out in double precision (TFLite Micro's CalculateOpDataMul), clamped to the fused
activation's range. Kernel: runtime_c/src/forward/mul.c (tinyc_mul).
By a constant: x * c and x / c for one number c (ONNX Mul, Div) are a MUL by a scalar int8
constant (127 steps of |c|); such a node is only ever run inside a table (passes/fuse_lut.py).
Gradient (training through a squeeze-excite gate or any product): each factor's gradient is the
output's times the other factor, dequantized; a gate's sums over the pixels (grad_mul).
Not yet: per-channel or tensor constants, other broadcasts, patch-based execution (a prefix
holding a Mul runs layer by layer).
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..reference.fixedpoint import multiply_by_quantized_multiplier as mbqm
from ..reference.fixedpoint import quantize_multiplier
from ..errors import TinycError
from .base import (Op, PlanContext, constant_operand, operand, operand_float,
                   quantize_scalar_constant)


def _import_mul(imp, node, divide: bool = False) -> None:
    names = [imp.alias.get(i, i) for i in node.input]
    consts = [n for n in names if n in imp.consts]
    if consts:
        _import_by_constant(imp, node, names, consts, divide)
        return
    if divide:
        raise imp.err(node, "Div of two activations is not supported; only Div by a constant "
                            "number is")
    a, b = (imp.act(n, node) for n in names)
    if a.size < b.size:
        a, b = b, a   # the full tensor first, the gate second
    gate = len(a.shape) == 4 and b.shape == (1, 1, 1, a.shape[-1])
    if a.shape != b.shape and not gate:
        raise imp.err(node, f"Mul of shapes {a.shape} and {b.shape} (NHWC) is not supported; "
                            "only the same shape or a per-channel gate (N,C,1,1) is")
    out = imp.new_act(node.output[0], a.shape)
    imp.emit(node, "mul", [a.name, b.name], [out], clamp=None)


def _import_by_constant(imp, node, names, consts, divide: bool) -> None:
    """x * c or x / c for one number c or one per channel: a MUL by a constant (x / c: by 1 / c)."""
    what = "Div" if divide else "Mul"
    if len(consts) == 2:
        raise imp.err(node, f"{what} of two constants is not supported (fold it before export)")
    if divide and names[1] not in imp.consts:
        raise imp.err(node, "Div of a constant by an activation is not supported; only Div of "
                            "an activation by a constant number is")
    x = imp.act([n for n in names if n not in imp.consts][0], node)
    value = constant_operand(imp, node, x, imp.consts[consts[0]], what)
    if divide:
        if np.any(value == 0.0):
            raise imp.err(node, "Div by the constant 0")
        value = 1.0 / value
    k = imp.new_const(f"{node.name or node.output[0]}/factor", value.astype(np.float32), node)
    imp.emit(node, "mul", [x.name, k], [imp.new_act(node.output[0], x.shape)], clamp=None)


def _clamp(y, clamp):
    return y if clamp is None else np.clip(y, clamp[0], clamp[1])


def _grad_node(node: Node, g_out: str, other: str, g_x: str, mode: str, g) -> Node:
    s, zp = g.tensors[other].q.scalar()
    return Node(f"{node.name}/grad_{mode}", "grad_mul", [g_out, other], [g_x],
                {"scale": float(s), "zero_point": int(zp), "mode": mode})


class Mul(Op):
    name = "mul"
    masks_gradient = True   # a fused clamp masks the output gradient
    onnx = {"Mul": (_import_mul, (2, 2)),
            "Div": (lambda imp, node: _import_mul(imp, node, divide=True), (2, 2))}
    requantizing = True   # its output scale is its own (a concat may retarget it)
    takes_clamp = True    # a ReLU/Clip after it fuses into its requantization
    sources = {"mul": "mul.c"}

    def elementwise_int8(self, g, node):
        a, b = (g.tensors[t] for t in node.inputs)
        if b.is_const:   # by a number: only ever part of a table (passes/fuse_lut.py)
            return "table" if b.size == 1 else None
        return "plain" if a.shape == b.shape else None

    def run_float(self, g, node, env):
        y = env[node.inputs[0]].astype(np.float64) * operand_float(g, env, node.inputs[1])
        return _clamp(y, node.attrs.get("clamp")).astype(np.float32)

    def quantize(self, g, node):
        from ..passes.quantize import activation_range
        if g.tensors[node.inputs[1]].is_const:
            quantize_scalar_constant(g, node.inputs[1])
        (s1, zp1), (s2, zp2) = (g.tensors[t].q.scalar() for t in node.inputs)
        y = g.tensors[node.outputs[0]]
        s_out, zp_out = y.q.scalar()
        mult, shift = quantize_multiplier(float(s1) * float(s2) / float(s_out))
        act_min, act_max = activation_range(y.q, node.attrs.get("clamp"))
        return dict(in1_zp=zp1, in2_zp=zp2, out_zp=zp_out, mult=mult, shift=shift,
                    act_min=act_min, act_max=act_max)

    def run_int8(self, g, node, env):
        q = node.attrs["q"]
        x1 = env[node.inputs[0]].astype(np.int64) - q["in1_zp"]
        x2 = operand(g, env, node.inputs[1]).astype(np.int64) - q["in2_zp"]
        y = mbqm(x1 * x2, q["mult"], q["shift"]) + q["out_zp"]
        return np.clip(y, q["act_min"], q["act_max"]).astype(np.int8)

    def grad(self, ad, node, g_out, need):
        """y = x1 * x2 in float: g_x1 = g_y * x2, g_x2 = g_y * x1 (a gate's: summed over the
        pixels), each factor the dequantized int8 activation the forward pass read."""
        x1, x2 = node.inputs
        gate = ad.t.tensors[x1].shape != ad.t.tensors[x2].shape
        for x, other, mode in ((x1, x2, "by_gate" if gate else "same"),
                               (x2, x1, "to_gate" if gate else "same")):
            if x in need:
                g_x = ad.new_grad(x, f":{mode}" if x1 == x2 else "")
                ad.emit(_grad_node(node, g_out, other, g_x, mode, ad.t))
                ad.give_grad(x, g_x, node)

    def plan(self, ctx: PlanContext, i: int, node: Node) -> None:
        # element i of the full-size input is read before element i of the output is written
        x = node.inputs[0]
        if ctx.inplace and ctx.dies_at(x, i):
            ctx.join(i, x, node.outputs[0], "elementwise")

    def layer(self, g, node, i, plan, consts, params):
        q = node.attrs["q"]
        y, gate = g.tensors[node.outputs[0]], g.tensors[node.inputs[1]]
        L = dict(kind="mul", template="ops/mul.c.j2", ptype="tinyc_mul_params",
                 params=dict(size=y.size, in2_size=gate.size, in1_zp=q["in1_zp"],
                             in2_zp=q["in2_zp"], out_zp=q["out_zp"], mult=q["mult"],
                             shift=q["shift"], act_min=q["act_min"], act_max=q["act_max"]))
        if gate.is_const:   # one factor per channel, from flash (one number: in a table)
            if gate.size == 1:
                raise TinycError(f"{node.describe()}: a Mul by a number runs only inside a "
                                 "table (passes/fuse_lut.py), which did not take it")
            L["in2_const"] = consts.add(gate.name, f"tinyc_k{i}", "int8_t", gate.data,
                                        gate.name)
        return L

    def tflite(self, x, node):
        fb = x.fb
        a, b = (x.tensor(n) for n in node.inputs[:2])

        def emit(out, act):
            opt = fb.MulOptionsT()
            opt.fusedActivationFunction = act
            x.op("MUL", [a, b], [out], opt, "MulOptions")
        x.with_activation(node, node.outputs[0], emit)

    def onnx_export(self, x, node, raw):
        k = node.inputs[1]
        if x.g.tensors[k].is_const:   # a number: its int8 value, dequantized
            x.const(k, x.dequantized(k))
        x.add("Mul", node.inputs, [raw], name=node.name)


class GradMul(Op):
    """One factor's gradient of a product: out = g_y * dequantized(other) (mode same; by_gate:
    other repeats every C elements), or a gate's: out[c] = sum over pixels p (in order) of
    g_y[p, c] * dequantized(other[p, c]) (to_gate). float32 as the C kernel."""
    name = "grad_mul"
    backward = True
    sources = {"grad_mul": "backward/elementwise_grad.c", "grad_mul_gate": "backward/elementwise_grad.c"}

    def run_train(self, g, node, env, run):
        a = node.attrs
        gy = env[node.inputs[0]]
        xf = (np.float32(a["scale"]) *
              (operand(g, env, node.inputs[1]).astype(np.int32) - a["zero_point"])
              .astype(np.float32))
        c = gy.shape[-1]
        if a["mode"] == "to_gate":
            prods = (gy.reshape(-1, c) * xf.reshape(-1, c)).astype(np.float32)
            return np.add.accumulate(prods, axis=0, dtype=np.float32)[-1].reshape(
                g.tensors[node.outputs[0]].shape)
        if a["mode"] == "by_gate":
            xf = np.broadcast_to(xf.reshape(-1)[None, :], gy.reshape(-1, c).shape).reshape(gy.shape)
        return (gy * xf).astype(np.float32)

    def plan(self, ctx, i, node):
        if node.attrs["mode"] != "to_gate" and ctx.inplace and ctx.dies_at(node.inputs[0], i):
            ctx.join(i, node.inputs[0], node.outputs[0], "elementwise")

    def layer(self, g, node, i, plan, consts, params):
        from ..codegen.c import c_float
        a = node.attrs
        gy, other = g.tensors[node.inputs[0]], g.tensors[node.inputs[1]]
        c = gy.shape[-1]
        common = dict(scale=c_float(a["scale"]), zero_point=int(a["zero_point"]))
        if a["mode"] == "to_gate":
            return dict(kind="grad_mul_gate", template="ops/mul.c.j2",
                        params=dict(pixels=gy.size // c, channels=c), **common)
        L = dict(kind="grad_mul", template="ops/mul.c.j2",
                 params=dict(size=gy.size, other_size=other.size), **common)
        if other.is_const:   # a per-channel constant factor
            L["other_const"] = consts.add(other.name, f"tinyc_k{i}", "int8_t", other.data,
                                          other.name)
        return L


OPS = (Mul(), GradMul())
