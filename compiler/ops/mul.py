"""Element-wise multiplication of two activations (ONNX Mul, TFLite MUL), int8 TFLite-exact.

Shapes: the same shape, or a per-channel gate (a squeeze-excite block's (1, C, 1, 1) times the
(1, C, H, W) feature map; either operand may be the gate). The IR keeps the full tensor first.
int8: out = out_zp + MultiplyByQuantizedMultiplier((x1 - zp1) * (x2 - zp2), M, shift), M from
s1 * s2 / s_out in double precision (TFLite Micro's CalculateOpDataMul), clamped to the fused
activation's range. Kernel: runtime_c/src/forward/mul.c (tinyc_mul).
Not yet: a constant operand, other broadcasts, a backward rule (training through a Mul is
refused naming the node), patch-based execution (a prefix holding a Mul runs layer by layer).
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node
from ..reference.fixedpoint import multiply_by_quantized_multiplier as mbqm
from ..reference.fixedpoint import quantize_multiplier
from .base import Op, PlanContext


def _import_mul(imp, node) -> None:
    names = [imp.alias.get(i, i) for i in node.input]
    if any(n in imp.consts for n in names):
        raise imp.err(node, "Mul by a constant is not supported yet; only the product of two "
                            "activations is (the same shape, or a per-channel gate)")
    a, b = (imp.act(n, node) for n in names)
    if a.size < b.size:
        a, b = b, a   # the full tensor first, the gate second
    gate = len(a.shape) == 4 and b.shape == (1, 1, 1, a.shape[-1])
    if a.shape != b.shape and not gate:
        raise imp.err(node, f"Mul of shapes {a.shape} and {b.shape} (NHWC) is not supported; "
                            "only the same shape or a per-channel gate (N,C,1,1) is")
    out = imp.new_act(node.output[0], a.shape)
    imp.emit(node, "mul", [a.name, b.name], [out], clamp=None)


def _clamp(y, clamp):
    return y if clamp is None else np.clip(y, clamp[0], clamp[1])


class Mul(Op):
    name = "mul"
    onnx = {"Mul": (_import_mul, (2, 2))}
    requantizing = True   # its output scale is its own (a concat may retarget it)
    takes_clamp = True    # a ReLU/Clip after it fuses into its requantization
    sources = {"mul": "mul.c"}

    def run_float(self, g, node, env):
        y = env[node.inputs[0]].astype(np.float64) * env[node.inputs[1]]
        return _clamp(y, node.attrs.get("clamp")).astype(np.float32)

    def quantize(self, g, node):
        from ..passes.quantize import activation_range
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
        x2 = env[node.inputs[1]].astype(np.int64) - q["in2_zp"]
        y = mbqm(x1 * x2, q["mult"], q["shift"]) + q["out_zp"]
        return np.clip(y, q["act_min"], q["act_max"]).astype(np.int8)

    def plan(self, ctx: PlanContext, i: int, node: Node) -> None:
        # element i of the full-size input is read before element i of the output is written
        x = node.inputs[0]
        if ctx.inplace and ctx.dies_at(x, i):
            ctx.join(i, x, node.outputs[0], "elementwise")

    def layer(self, g, node, i, plan, consts, params):
        q = node.attrs["q"]
        y, gate = g.tensors[node.outputs[0]], g.tensors[node.inputs[1]]
        return dict(kind="mul", template="ops/mul.c.j2", ptype="tinyc_mul_params",
                    params=dict(size=y.size, in2_size=gate.size, in1_zp=q["in1_zp"],
                                in2_zp=q["in2_zp"], out_zp=q["out_zp"], mult=q["mult"],
                                shift=q["shift"], act_min=q["act_min"], act_max=q["act_max"]))

    def tflite(self, x, node):
        fb = x.fb
        a, b = (x.tensor(n) for n in node.inputs[:2])

        def emit(out, act):
            opt = fb.MulOptionsT()
            opt.fusedActivationFunction = act
            x.op("MUL", [a, b], [out], opt, "MulOptions")
        x.with_activation(node, node.outputs[0], emit)

    def onnx_export(self, x, node, raw):
        x.add("Mul", node.inputs, [raw], name=node.name)


OPS = (Mul(),)
