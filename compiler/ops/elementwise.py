"""Element-wise ops: add, clamp, requantize and the element-wise nodes of a training step
(grad_mask, grad_add, grad_alias).

Import: Add of two activations of one shape (an Add of a constant after a MatMul is that FC
layer's bias), Relu and Clip as a standalone clamp (passes/fuse_activations.py fuses it into a
producer that takes a clamp). int8: TFLite's ADD (both inputs rescaled to twice the larger scale
with 20 bits of headroom), a clamp keeps its input's parameters, a requantize (inserted before a
concat input: passes/quantize.py) rescales. Gradients: add gives its output gradient to both
inputs, a clamp or requantize passes it as is (grad_alias: a view, or a copy where the planner
could not place it over its input); a fused clamp masks it (grad_mask, passes/autodiff.py);
a tensor reached by two paths sums its gradients (grad_add). Kernels:
runtime_c/src/forward/elementwise.c, backward/elementwise_grad.c.
"""
from __future__ import annotations

import numpy as np

from ..ir import Node
from ..reference.fixedpoint import multiply_by_quantized_multiplier as mbqm
from ..errors import TinycError
from .base import (Op, TrainRun, constant_operand, operand, operand_float,
                   quantize_scalar_constant)

F32 = np.float32
TEMPLATE = "ops/elementwise.c.j2"


# ---------------------------------------------------------------- ONNX import
def _import_clamp(imp, node, lo, hi) -> None:
    x = imp.act(node.input[0], node)
    out = imp.new_act(node.output[0], x.shape)
    imp.emit(node, "clamp", [x.name], [out], clamp=(float(lo), float(hi)))


def _import_relu(imp, node) -> None:
    _import_clamp(imp, node, 0.0, float("inf"))


def _import_clip(imp, node) -> None:
    lo, hi = -float("inf"), float("inf")
    if len(node.input) > 1 and node.input[1]:
        lo = imp.scalar(node.input[1], node, "Clip's min")
    if len(node.input) > 2 and node.input[2]:
        hi = imp.scalar(node.input[2], node, "Clip's max")
    if not lo <= hi:
        raise imp.err(node, f"Clip min {lo} is above max {hi}")
    if lo > 0 or hi < 0:
        raise imp.err(node, f"Clip range [{lo}, {hi}] does not contain 0; int8 activations "
                            "need 0 to be representable")
    _import_clamp(imp, node, lo, hi)


def _import_add(imp, node) -> None:
    ins = [imp.alias.get(i, i) for i in node.input]
    consts = [i for i in node.input if i in imp.consts]
    if len(consts) == 1:
        # MatMul + Add (bias) -> one fully-connected layer (its fold_constant_add)
        x = imp.act([i for i in node.input if i not in imp.consts][0], node)
        prod = imp.producer(x.name)
        c = imp.consts[consts[0]]
        from . import get
        if prod is not None and get(prod).fold_constant_add(imp, prod, node, x, c):
            return
        _import_add_constant(imp, node, x, c, "Add")
        return
    if consts:
        raise imp.err(node, "Add of two constants is not supported")
    a, b = (imp.act(i, node) for i in ins)
    if a.shape != b.shape:
        raise imp.err(node, f"Add needs two inputs of the same shape (got {a.shape} and "
                            f"{b.shape}); broadcasting is not supported")
    out = imp.new_act(node.output[0], a.shape)
    imp.emit(node, "add", [a.name, b.name], [out], clamp=None)


def _import_add_constant(imp, node, x, c, what: str, sign: float = 1.0) -> None:
    """x + c (x - c: sign -1) for one number c or one per channel: an ADD of a constant."""
    value = constant_operand(imp, node, x, c, what)
    k = imp.new_const(f"{node.name or node.output[0]}/term", (sign * value).astype(np.float32),
                      node)
    imp.emit(node, "add", [x.name, k], [imp.new_act(node.output[0], x.shape)], clamp=None)


def _import_sub(imp, node) -> None:
    names = [imp.alias.get(i, i) for i in node.input]
    if names[1] not in imp.consts or names[0] in imp.consts:
        raise imp.err(node, "Sub is supported only as an activation minus a constant number")
    _import_add_constant(imp, node, imp.act(names[0], node), imp.consts[names[1]], "Sub", -1.0)


# ---------------------------------------------------------------- shared rules
def _clamp_float(y, clamp):
    if clamp is None:
        return y
    return np.clip(y, clamp[0], clamp[1])


def _saturate(y, lo=-128, hi=127) -> np.ndarray:
    return np.clip(y, lo, hi).astype(np.int8)


def _plan_over_any_input(ctx, i, node) -> None:
    """add / grad_add: the output may overwrite the first input that dies here."""
    if not ctx.inplace:
        return
    for src in node.inputs:
        if ctx.dies_at(src, i):
            ctx.join(i, src, node.outputs[0], "add")
            break


def _plan_over_input(ctx, i, node) -> None:
    """One input, element by element: the output may overwrite it where it dies here."""
    if ctx.inplace and ctx.dies_at(node.inputs[0], i):
        ctx.join(i, node.inputs[0], node.outputs[0], "elementwise")


def _alias_grad(ad, node, g_out, need) -> None:
    """The input's gradient is the output's, unchanged (a grad_alias node)."""
    if need:
        g_x = ad.new_grad(node.inputs[0])
        ad.emit(Node(node.name + "/grad", "grad_alias", [g_out], [g_x]))
        ad.give_grad(node.inputs[0], g_x, node)


# ---------------------------------------------------------------- forward ops
class Add(Op):
    name = "add"
    onnx = {"Add": (_import_add, (2, 2)), "Sub": (_import_sub, (2, 2))}
    requantizing = True
    masks_gradient = True
    takes_clamp = True
    patchable = True
    sources = {"add": "elementwise.c", "add_channels": "elementwise.c"}

    def elementwise_int8(self, g, node):
        # with a constant number: only ever part of a table (passes/fuse_lut.py)
        b = g.tensors[node.inputs[1]]
        return ("table" if b.size == 1 else None) if b.is_const else "plain"

    def run_float(self, g, node, env):
        y = env[node.inputs[0]].astype(np.float64) + operand_float(g, env, node.inputs[1])
        return _clamp_float(y, node.attrs["clamp"]).astype(np.float32)

    def run_int8(self, g, node, env):
        q = node.attrs["q"]
        x, x2 = env[node.inputs[0]], operand(g, env, node.inputs[1])
        s1 = mbqm((x.astype(np.int64) - q["in1_zp"]) << q["left_shift"], q["in1_mult"], q["in1_shift"])
        s2 = mbqm((x2.astype(np.int64) - q["in2_zp"]) << q["left_shift"], q["in2_mult"], q["in2_shift"])
        y = mbqm(s1 + s2, q["out_mult"], q["out_shift"]) + q["out_zp"]
        return _saturate(y, q["act_min"], q["act_max"])

    def quantize(self, g, node):
        from ..passes.quantize import activation_range
        from ..reference.fixedpoint import quantize_multiplier
        t = g.tensors
        if t[node.inputs[1]].is_const:
            quantize_scalar_constant(g, node.inputs[1])
        y = t[node.outputs[0]]
        s_in, zp_in = t[node.inputs[0]].q.scalar()
        s_out, zp_out = y.q.scalar()
        s2, zp2 = t[node.inputs[1]].q.scalar()
        left_shift = 20
        twice_max = 2.0 * float(max(np.float32(s_in), np.float32(s2)))
        m1, sh1 = quantize_multiplier(float(s_in) / twice_max)
        m2, sh2 = quantize_multiplier(float(s2) / twice_max)
        mo, sho = quantize_multiplier(twice_max / float(np.float32((1 << left_shift) * np.float32(s_out))))
        act_min, act_max = activation_range(y.q, node.attrs.get("clamp"))
        return dict(in1_zp=zp_in, in2_zp=zp2, out_zp=zp_out, left_shift=left_shift,
                    in1_mult=m1, in1_shift=sh1, in2_mult=m2, in2_shift=sh2,
                    out_mult=mo, out_shift=sho, act_min=act_min, act_max=act_max)

    def grad(self, ad, node, g_out, need):
        for i in need:
            ad.give_grad(i, g_out, node)

    def plan(self, ctx, i, node):
        _plan_over_any_input(ctx, i, node)

    def layer(self, g, node, i, plan, consts, params):
        b = g.tensors[node.inputs[1]]
        extra = {}
        if b.is_const:   # one term per channel, from flash (one number: in a table)
            if b.size == 1:
                raise TinycError(f"{node.describe()}: an Add of a number runs only inside a "
                                 "table (passes/fuse_lut.py), which did not take it")
            extra = dict(kind="add_channels", channels=b.size,
                         terms=consts.add(b.name, f"tinyc_k{i}", "int8_t", b.data, b.name))
        q = node.attrs["q"]
        y = g.tensors[node.outputs[0]]
        L = dict(kind="add", template=TEMPLATE, ptype="tinyc_add_params",
                    params=dict(size=y.size, in1_zp=q["in1_zp"], in2_zp=q["in2_zp"],
                                out_zp=q["out_zp"], left_shift=q["left_shift"],
                                in1_mult=q["in1_mult"], in1_shift=q["in1_shift"],
                                in2_mult=q["in2_mult"], in2_shift=q["in2_shift"],
                                out_mult=q["out_mult"], out_shift=q["out_shift"],
                                act_min=q["act_min"], act_max=q["act_max"]))
        L.update(extra)
        return L

    def tflite(self, x, node):
        fb = x.fb
        a, b = (x.tensor(n) for n in node.inputs[:2])

        def emit(out, act):
            opt = fb.AddOptionsT()
            opt.fusedActivationFunction = act
            x.op("ADD", [a, b], [out], opt, "AddOptions")
        x.with_activation(node, node.outputs[0], emit)

    def onnx_export(self, x, node, raw):
        k = node.inputs[1]
        if x.g.tensors[k].is_const:   # a number: its int8 value, dequantized
            x.const(k, x.dequantized(k))
        x.add("Add", node.inputs, [raw], name=node.name)


class Clamp(Op):
    name = "clamp"
    onnx = {"Relu": (_import_relu, (1, 1)), "Clip": (_import_clip, (1, 3))}
    pass_through_q = True
    masks_gradient = True
    patchable = True
    sources = {"clamp": "elementwise.c"}

    def elementwise_int8(self, g, node):
        return "plain"

    def run_float(self, g, node, env):
        return _clamp_float(env[node.inputs[0]], node.attrs["clamp"]).astype(np.float32)

    def run_int8(self, g, node, env):
        q = node.attrs["q"]
        return _saturate(env[node.inputs[0]], q["act_min"], q["act_max"])

    def quantize(self, g, node):
        from ..passes.quantize import activation_range
        if node.attrs.get("bounds") is not None:   # integer bounds (a .tflite MAXIMUM/MINIMUM)
            return dict(act_min=int(node.attrs["bounds"][0]), act_max=int(node.attrs["bounds"][1]))
        act_min, act_max = activation_range(g.tensors[node.outputs[0]].q, node.attrs.get("clamp"))
        return dict(act_min=act_min, act_max=act_max)

    def grad(self, ad, node, g_out, need):
        _alias_grad(ad, node, g_out, need)

    def plan(self, ctx, i, node):
        _plan_over_input(ctx, i, node)

    def layer(self, g, node, i, plan, consts, params):
        q = node.attrs["q"]
        return dict(kind="clamp", template=TEMPLATE,
                    params=dict(size=g.tensors[node.outputs[0]].size, act_min=q["act_min"],
                                act_max=q["act_max"]))

    def tflite(self, x, node):
        from ..export.tflite import ExportError, _same_params
        x_name, out_name = node.inputs[0], node.outputs[0]
        _same_params(node, x.g.tensors[x_name], x.g.tensors[out_name])
        q = node.attrs.get("q") or {}
        if q.get("act_min") is None or q.get("act_max") is None:
            raise ExportError(f"{node.describe()}: attrs['q'] has no act_min/act_max")
        x.emit_minmax(out_name, x.tensor(x_name), x.tensor(out_name),
                      (int(q["act_min"]), int(q["act_max"])))

    def onnx_export(self, x, node, raw):
        x.clip(node, node.inputs[0], raw)


class Requantize(Op):
    name = "requantize"
    patchable = True
    sources = {"requantize": "elementwise.c"}

    def elementwise_int8(self, g, node):
        return "plain"

    def run_float(self, g, node, env):
        return env[node.inputs[0]]

    def run_int8(self, g, node, env):
        q = node.attrs["q"]
        y = mbqm(env[node.inputs[0]].astype(np.int64) - q["in_zp"], q["mult"], q["shift"]) + q["out_zp"]
        return _saturate(y)

    def quantize(self, g, node):
        from ..reference.fixedpoint import quantize_multiplier
        s_in, zp_in = g.tensors[node.inputs[0]].q.scalar()
        s_out, zp_out = g.tensors[node.outputs[0]].q.scalar()
        m, sh = quantize_multiplier(float(s_in) / float(s_out))
        return dict(in_zp=zp_in, out_zp=zp_out, mult=m, shift=sh)

    def grad(self, ad, node, g_out, need):
        _alias_grad(ad, node, g_out, need)

    def plan(self, ctx, i, node):
        _plan_over_input(ctx, i, node)

    def layer(self, g, node, i, plan, consts, params):
        q = node.attrs["q"]
        return dict(kind="requantize", template=TEMPLATE, ptype="tinyc_requantize_params",
                    params=dict(size=g.tensors[node.outputs[0]].size, in_zp=q["in_zp"],
                                out_zp=q["out_zp"], mult=q["mult"], shift=q["shift"]))

    def tflite(self, x, node):
        x.op("QUANTIZE", [x.tensor(node.inputs[0])], [x.tensor(node.outputs[0])],
             x.fb.QuantizeOptionsT(), "QuantizeOptions")

    def onnx_export(self, x, node, raw):
        x.add("Identity", node.inputs, [raw], name=node.name)


# ---------------------------------------------------------------- training step
def grad_mask(g_y: np.ndarray, y_q: np.ndarray, attrs: dict) -> np.ndarray:
    """g_y where the clamped int8 output y_q lies strictly inside (lo, hi), else 0."""
    y = y_q.astype(np.int32)
    keep = np.ones(y.shape, bool)
    if attrs["lo"] is not None:
        keep &= y > attrs["lo"]
    if attrs["hi"] is not None:
        keep &= y < attrs["hi"]
    return np.where(keep, g_y, F32(0)).astype(F32)


class GradMask(Op):
    name = "grad_mask"
    backward = True
    sources = {"grad_mask": "backward/elementwise_grad.c",
               "grad_mask_bits": "backward/elementwise_grad.c"}

    def run_train(self, g, node, env, run: TrainRun):
        return grad_mask(env[node.inputs[0]], env[node.inputs[1]], node.attrs)

    def plan(self, ctx, i, node):
        _plan_over_input(ctx, i, node)

    def mask_read(self, node, y):
        if node.inputs[1] == y and node.inputs[0] != y:
            return node.attrs["lo"], node.attrs["hi"]
        return None

    def layer(self, g, node, i, plan, consts, params):
        a = node.attrs
        L = dict(kind="grad_mask", template=TEMPLATE,
                 params=dict(size=g.tensors[node.outputs[0]].size,
                             lo=-129 if a["lo"] is None else int(a["lo"]),
                             hi=128 if a["hi"] is None else int(a["hi"])))
        m = plan.masks.get(node.inputs[1])
        if m is not None:   # the activation is kept as a bit mask (planner packable_masks)
            L.update(kind="grad_mask_bits", mask_off=plan.tensor_offsets[m["name"]])
        return L


class GradAdd(Op):
    name = "grad_add"
    backward = True
    sources = {"grad_add": "backward/elementwise_grad.c"}

    def run_train(self, g, node, env, run: TrainRun):
        return (env[node.inputs[0]] + env[node.inputs[1]]).astype(F32)

    def plan(self, ctx, i, node):
        _plan_over_any_input(ctx, i, node)

    def layer(self, g, node, i, plan, consts, params):
        return dict(kind="grad_add", template=TEMPLATE,
                    params=dict(size=g.tensors[node.outputs[0]].size))


class GradAlias(Op):
    name = "grad_alias"
    backward = True
    alias = True
    sources = {"grad_alias": None, "grad_copy": "backward/elementwise_grad.c"}

    def run_train(self, g, node, env, run: TrainRun):
        return env[node.inputs[0]].reshape(g.tensors[node.outputs[0]].shape)

    def layer(self, g, node, i, plan, consts, params):
        same = plan.tensor_offsets[node.inputs[0]] == plan.tensor_offsets[node.outputs[0]]
        return dict(kind="grad_alias" if same else "grad_copy", template=TEMPLATE,
                    params=dict(size=g.tensors[node.outputs[0]].size))


OPS = (Add(), Clamp(), Requantize(), GradMask(), GradAdd(), GradAlias())
