"""Convolutions (2-D, NHWC, weights OHWI: regular, grouped, depthwise, pointwise) and
fully-connected layers.

Import: Conv; BatchNormalization (folded into the Conv before it, else a 1x1 depthwise conv);
Gemm and MatMul (an Add of a constant after a MatMul becomes its bias). int8: TFLite's
per-channel CONV_2D / per-tensor FULLY_CONNECTED; weights symmetric int8, biases int32 at
s_in * s_w. Kernels: runtime_c/src/forward/conv2d.c (plain, im2col, 1x1, in-place 1x1, split
weights), depthwise_conv.c (plain, in place), fully_connected.c. Training: `grad` makes the
nodes of conv_train.py (conv2d_grad_input, conv2d_update).
"""
from __future__ import annotations

import numpy as np

from ..errors import TinycError
from ..ir import Graph, Node, QParams, Tensor, conv_out_size
from ..reference.common import conv_accumulate
from ..reference.fixedpoint import multiply_by_quantized_multiplier as mbqm
from ..reference.fixedpoint import quantize_multiplier, round_half_away
from .base import Op, PlanContext

TEMPLATE = "ops/conv.c.j2"
# forward conv kernels whose bias argument has the input zero point folded in (runtime_c kernels.h)
FOLDED_BIAS_KINDS = ("conv_im2col", "conv_1x1", "conv_1x1_inplace")
# kernels that write their output over their input (model.c says so: layer field in_place)
INPLACE_KINDS = ("depthwise_inplace", "conv_1x1_inplace")


# ---------------------------------------------------------------- ONNX import
def _import_conv(imp, node) -> None:
    a = imp.attrs(node)
    x = imp.act(node.input[0], node)
    if len(x.shape) != 4:
        raise imp.err(node, f"input must be 4-D, got shape {x.shape}")
    w = imp.const(node.input[1], node, "the weight")
    if w.ndim != 4:
        raise imp.err(node, f"only 2-D convolutions are supported (weight shape {w.shape})")
    cout, cin_g, kh, kw = w.shape
    if cout < 1:
        raise imp.err(node, f"weight {w.shape} has 0 output channels; a Conv needs at least one")
    if min(cin_g, kh, kw) < 1:
        raise imp.err(node, f"weight {w.shape} has an empty kernel or no input channel")
    if list(a.get("kernel_shape", [kh, kw])) != [kh, kw]:
        raise imp.err(node, f"kernel_shape={list(a['kernel_shape'])} does not match the "
                            f"weight's {kh}x{kw} kernel")
    b = (imp.const(node.input[2], node, "the bias") if len(node.input) > 2 and node.input[2]
         else np.zeros(w.shape[0], np.float32))
    if b.size != cout:
        raise imp.err(node, f"bias of {b.size} values for {cout} output channels")
    groups = int(a.get("group", 1))
    _, h, wd, cin = x.shape
    if groups < 1 or cin_g * groups != cin or cout % groups:
        raise imp.err(node, f"weight {w.shape} with group={groups} does not match "
                            f"{cin} input channels (group must be >= 1 and divide the input "
                            "and output channels)")
    sh, sw = imp.ints(node, a, "strides", [1, 1], 2, 1)
    dh, dw = imp.ints(node, a, "dilations", [1, 1], 2, 1)
    pads = imp.spatial_pads(node, a, h, wd, kh, kw, sh, sw, dh, dw)
    oh = conv_out_size(h, kh, sh, pads[0], pads[2], dh)
    ow = conv_out_size(wd, kw, sw, pads[1], pads[3], dw)
    if oh <= 0 or ow <= 0:
        raise imp.err(node, f"output would be empty ({oh}x{ow}) for input {h}x{wd}: the "
                            f"{kh}x{kw} kernel (dilation {dh}x{dw}) is larger than the padded "
                            "input")
    out = imp.new_act(node.output[0], (1, oh, ow, cout))
    imp.count_macs(node, oh * ow * cout * cin_g * kh * kw)
    wn = imp.new_const(node.input[1], w.transpose(0, 2, 3, 1), node)
    bn = imp.new_const(node.input[2] if len(node.input) > 2 and node.input[2]
                       else node.output[0] + "_bias", b.reshape(-1), node)
    imp.emit(node, "conv2d", [x.name, wn, bn], [out], strides=(int(sh), int(sw)),
             pads=pads, dilations=(int(dh), int(dw)), groups=groups, clamp=None)


def _import_batch_norm(imp, node) -> None:
    a = imp.attrs(node)
    if a.get("training_mode", 0):
        raise imp.err(node, "training_mode=1 is not supported; export the model in eval mode")
    x = imp.act(node.input[0], node)
    gamma, beta, mean, var = (imp.const(i, node, "a BatchNormalization parameter")
                              for i in node.input[1:5])
    eps = float(a.get("epsilon", 1e-5))
    channels = x.shape[-1]
    for what, v in (("scale", gamma), ("B", beta), ("mean", mean), ("var", var)):
        if v.shape != (channels,):
            raise imp.err(node, f"{what} has shape {v.shape}; the input has {channels} "
                                "channels")
    if not np.isfinite(eps) or np.any(var + eps <= 0):
        raise imp.err(node, "a variance (+ epsilon) is not positive; fix the exported "
                            "running_var")
    with np.errstate(over="ignore", invalid="ignore"):
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
    prod = imp.producer(x.name)
    if (prod is not None and prod.op == "conv2d" and prod.attrs["clamp"] is None
            and imp.uses.get(x.name, 0) == 1):
        w, b = imp.tensors[prod.inputs[1]], imp.tensors[prod.inputs[2]]
        with np.errstate(over="ignore", invalid="ignore"):
            w.data = (w.data * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
            b.data = (b.data * scale + shift).astype(np.float32)
        if not (np.all(np.isfinite(w.data)) and np.all(np.isfinite(b.data))):
            raise imp.err(node, "folding it into the Conv before it overflows float32 (Inf "
                                "or NaN weights); fix the exported BatchNormalization "
                                "parameters")
        imp.alias[node.output[0]] = x.name
        return
    # A BatchNormalization not after a Conv is a per-channel affine map: a 1x1 depthwise conv.
    if len(x.shape) != 4:
        raise imp.err(node, f"BatchNormalization on a {len(x.shape)}-D tensor is not supported")
    c = x.shape[3]
    wn = imp.new_const(node.output[0] + "_bn_weight", scale.reshape(c, 1, 1, 1), node)
    bn = imp.new_const(node.output[0] + "_bn_bias", shift.reshape(-1), node)
    out = imp.new_act(node.output[0], x.shape)
    imp.emit(node, "conv2d", [x.name, wn, bn], [out], strides=(1, 1), pads=(0, 0, 0, 0),
             dilations=(1, 1), groups=c, clamp=None)


def _import_fc(imp, node, x, w_oi, bias) -> None:
    if len(x.shape) != 2:
        raise imp.err(node, f"needs a 2-D input (1, N), got {x.shape}; insert a Flatten")
    if w_oi.ndim != 2:
        raise imp.err(node, f"weight must be 2-D, got {w_oi.shape}")
    if w_oi.shape[0] < 1:
        raise imp.err(node, f"weight {w_oi.shape} gives 0 outputs; a layer needs at least one")
    if w_oi.shape[1] != x.shape[1]:
        raise imp.err(node, f"weight {w_oi.shape} does not match input {x.shape}")
    wn = imp.new_const(node.input[1], w_oi, node)
    bn = imp.new_const(node.output[0] + "_bias", bias.reshape(-1), node)
    imp.count_macs(node, w_oi.size)
    out = imp.new_act(node.output[0], (1, w_oi.shape[0]))
    imp.emit(node, "fully_connected", [x.name, wn, bn], [out], clamp=None)


def _import_gemm(imp, node) -> None:
    a = imp.attrs(node)
    if a.get("transA", 0):
        raise imp.err(node, "transA=1 is not supported")
    x = imp.act(node.input[0], node)
    b = imp.const(node.input[1], node, "B (the weight)").astype(np.float32)
    if b.ndim != 2:
        raise imp.err(node, f"B (the weight) must be 2-D, got shape {b.shape}")
    w = b if a.get("transB", 0) else b.T
    w = w * float(a.get("alpha", 1.0))
    bias = np.zeros(w.shape[0], np.float32)
    if len(node.input) > 2 and node.input[2]:
        c = imp.const(node.input[2], node, "C (the bias)").astype(np.float32)
        if c.size not in (1, w.shape[0]):
            raise imp.err(node, f"bias C of shape {c.shape} is not per-output")
        bias = bias + float(a.get("beta", 1.0)) * c.reshape(-1)
    _import_fc(imp, node, x, w, bias)


def _import_matmul(imp, node) -> None:
    x = imp.act(node.input[0], node)
    b = imp.const(node.input[1], node, "the second input (weight)")
    if b.ndim != 2:
        raise imp.err(node, f"weight must be 2-D, got {b.shape}")
    _import_fc(imp, node, x, b.T, np.zeros(b.shape[1], np.float32))


# ---------------------------------------------------------------- both layers
class _Layer(Op):
    """What conv2d and fully_connected share: weights and bias as inputs 1 and 2, a fused clamp,
    requantized output, trainable parameters."""
    requantizing = True
    masks_gradient = True
    takes_clamp = True
    trainable_params = True
    per_channel = False        # per-output-channel weight scales (else one scale)

    def quantize(self, g, node):
        from ..passes.quantize import activation_range
        t = g.tensors
        x = t[node.inputs[0]]
        y = t[node.outputs[0]]
        s_in, zp_in = x.q.scalar()
        s_out, zp_out = y.q.scalar()
        if g.meta.get("prequantized"):   # an int8 .tflite file: its own weight scales
            scale = t[node.inputs[1]].q.scale
        elif t[node.inputs[1]].dtype != "float32":
            raise TinycError(f"{node.describe()}: its weights are shared with another layer; "
                             "tinyc needs one weight tensor per layer")
        else:
            scale, _ = quantize_weights(g, node, s_in, self.per_channel)
        cout = t[node.inputs[1]].shape[0]
        scales = np.broadcast_to(scale, (cout,))
        mults, shifts = zip(*(quantize_multiplier(float(s_in) * float(s) / float(s_out))
                              for s in scales))
        act_min, act_max = activation_range(y.q, node.attrs.get("clamp"))
        return dict(in_zp=zp_in, out_zp=zp_out, mult=np.array(mults, np.int32),
                    shift=np.array(shifts, np.int32), act_min=act_min, act_max=act_max)

    def grad(self, ad, node, g_out, need):
        from ..passes.fuse_grad import bias_only
        x = node.inputs[0]
        update = _update_node(ad, node, g_out) if node.name in ad.trainable else None
        # a bias-only update reads just g_out: run it first, so that g_out dies at the
        # input gradient, which may then overwrite it (planner: depthwise_grad). A weight
        # update runs after it: the input gradient needs the weights before their step.
        bias_first = update is not None and bias_only(update)
        if bias_first:
            ad.emit(update)
        if x in ad.dep:
            g_x = ad.new_grad(x)
            ad.emit(Node(node.name + "/grad_input", "conv2d_grad_input",
                         [g_out, node.inputs[1]], [g_x], _conv_attrs(ad.t, node)))
            ad.give_grad(x, g_x, node)
        if update is not None and not bias_first:
            ad.emit(update)


def quantize_weights(g: Graph, node: Node, s_in: float,
                     per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """int8 weights (one symmetric scale per output channel, or one for all) and int32 biases
    at s_in * s_w, in place in the node's tensors; returns (weight scale, int8 weights)."""
    from ..passes.quantize import BIAS_LIMIT, MAX_DOT_LENGTH, round_scale
    wt, bt = g.tensors[node.inputs[1]], g.tensors[node.inputs[2]]
    w, b = wt.data.astype(np.float64), bt.data.astype(np.float64)
    if w[0].size > MAX_DOT_LENGTH:
        raise TinycError(f"{node.describe()}: each output sums {w[0].size:,} products, more "
                         f"than the {MAX_DOT_LENGTH:,} an int32 accumulator holds without "
                         "overflow; split the layer (fewer input channels or a smaller kernel)")
    absmax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1) if per_channel else np.abs(w).max()
    # a new classifier's weights get room to grow in training (passes/train_head.py)
    absmax = np.maximum(absmax, node.attrs.get("weight_range", 0.0))
    scale = absmax / 127.0
    # keep the int32 bias representable even for channels with tiny weights
    bias_floor = np.abs(b) / (float(s_in) * BIAS_LIMIT)
    scale = np.maximum(scale, bias_floor if per_channel else bias_floor.max())
    scale = round_scale(np.where(scale > 0, scale, 1.0 / 127.0))
    bshape = (-1,) + (1,) * (w.ndim - 1)
    w_q = np.clip(round_half_away(w / (scale.reshape(bshape) if per_channel else scale)), -127, 127)
    b_scale = np.float64(np.float32(s_in)) * scale.astype(np.float64)
    b_q = np.clip(round_half_away(b / b_scale), -(2 ** 31), 2 ** 31 - 1)
    wt.data, wt.dtype = w_q.astype(np.int8), "int8"
    wt.q = QParams(scale, np.zeros(scale.shape, np.int32), axis=0 if per_channel else None)
    bt.data, bt.dtype = b_q.astype(np.int32), "int32"
    # a per-tensor weight scale gives a per-tensor bias scale: TFLite's FULLY_CONNECTED checks it
    bscale = np.asarray(b_scale, np.float32)
    bt.q = QParams(bscale, np.zeros(bscale.shape, np.int32), axis=0 if per_channel else None)
    return scale, w_q


# ---------------------------------------------------------------- gradient rule
def _conv_attrs(g: Graph, node: Node) -> dict:
    w = g.tensors[node.inputs[1]]
    if node.op == "fully_connected":
        return {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "groups": 1,
                "fc": True, "w_scale": np.broadcast_to(w.q.scale, (w.shape[0],)).astype(np.float32)}
    return {"strides": node.attrs["strides"], "pads": node.attrs["pads"],
            "dilations": node.attrs["dilations"], "groups": node.attrs["groups"], "fc": False,
            "w_scale": np.asarray(w.q.scale, np.float32)}


def _update_node(ad, node: Node, g_out: str) -> Node:
    """The layer's conv2d_update (conv_train.py) for its scheme entry; a partial weight update
    keeps only the selected input channels (a select_channels node before the layer)."""
    g, opts, forward = ad.t, ad.opts, ad.forward
    upd = ad.scheme.layers[node.name]
    attrs = _conv_attrs(g, node)
    x = node.inputs[0]
    xq = g.tensors[x].q
    s_x = np.float32(xq.scale)
    s_w = attrs["w_scale"]
    # QAS: the integer-domain step equals the float SGD step of the dequantized parameter
    if opts.qas:
        f_w = (1.0 / s_w.astype(np.float64)).astype(np.float32)
        f_b = (1.0 / (s_w.astype(np.float64) * np.float64(s_x))).astype(np.float32)
    else:
        f_w = s_w.astype(np.float32)
        f_b = (s_w.astype(np.float64) * np.float64(s_x)).astype(np.float32)
    if opts.body_lr_scale != 1.0 and node.name != ad.head:
        # the body's rate relative to the head's, folded into its step factors
        f_w = (f_w.astype(np.float64) * opts.body_lr_scale).astype(np.float32)
        f_b = (f_b.astype(np.float64) * opts.body_lr_scale).astype(np.float32)
    ins = [g_out, "", node.inputs[1], node.inputs[2]]
    channels = upd.channels if upd.weights else None
    if channels is not None:
        cin = g.tensors[x].shape[-1]
        if len(channels) == cin:
            ins[1] = x
        else:
            sel = f"{x}:selected:{node.name}"
            g.tensors[sel] = Tensor(sel, g.tensors[x].shape[:-1] + (len(channels),), "int8",
                                    q=xq)
            forward.insert(forward.index(node),
                           Node(node.name + "/keep", "select_channels", [x], [sel],
                                {"channels": channels}))
            ins[1] = sel
    attrs.update(channels=channels, update_bias=upd.bias, x_scale=s_x,
                 x_zero_point=int(xq.zero_point), f_w=f_w, f_b=f_b,
                 rounding=opts.rounding, salt=(hash_name(node.name)))
    return Node(node.name + "/update", "conv2d_update", ins, [], attrs)


def hash_name(name: str) -> int:
    """A stable 32-bit salt per layer for stochastic rounding (FNV-1a)."""
    h = 0x811C9DC5
    for ch in name.encode():
        h = ((h ^ ch) * 0x01000193) & 0xFFFFFFFF
    return h


# ---------------------------------------------------------------- kernel variants
# The specialised depthwise code of runtime_c/src/forward/depthwise_conv.c (DSP kernels), one
# tinyc/config.h define each: the rows of 3x3, 5x5, 7x7 windows at stride 1 or 2, the direct
# 3x3 stride 2 kernel and the four-channel kernels of tiles without padding, each with a full
# int8 clamp or a narrower one.
DW_ROW_SHAPES = ((3, 1), (3, 2), (5, 1), (5, 2), (7, 1), (7, 2))
DW_VARIANTS = tuple(f"TINYC_DW_ROWS_{k}X{k}_S{s}_{c}" for k, s in DW_ROW_SHAPES
                    for c in ("NARROW", "FULL")) + tuple(
    f"TINYC_DW_DIRECT_3X3_S2_{c}" for c in ("NARROW", "FULL")) + tuple(
    f"TINYC_DW_QUAD_{k}X{k}_S{s}_{c}" for k, s in DW_ROW_SHAPES for c in ("NARROW", "FULL"))
DW_QUAD_S1_MAX_OUT = 64   # TINYC_DW_QUAD_S1_MAX_OUT of kernels.h


def dw_variants(kind: str, p: dict) -> set:
    """The variants tinyc_depthwise_conv[_inplace] may take for a layer of these parameters:
    the rows dw_row_for picks, and (in place only) when every window of a layer without leading
    padding lies inside the input, dw_direct_for's kernel (3x3 stride 2) and dw_quad_for's (3x3,
    5x5, 7x7 at stride 1 or 2, four channels or more; 3x3 stride 1 with at most
    DW_QUAD_S1_MAX_OUT outputs per channel)."""
    if kind not in ("depthwise", "depthwise_inplace"):
        return set()
    clamp = "FULL" if (p["act_min"], p["act_max"]) == (-128, 127) else "NARROW"
    k, s = p["kernel_w"], p["stride_w"]
    out = set()
    if (p["kernel_h"] == k and (k, s) in DW_ROW_SHAPES
            and p["dilation_h"] == p["dilation_w"] == 1):
        out.add(f"TINYC_DW_ROWS_{k}X{k}_S{s}_{clamp}")

    def inside(out_n, in_n):   # interior_range of a pad 0, stride s, k-tap axis
        return in_n >= k and (in_n - k) // s + 1 >= out_n

    if not (kind == "depthwise_inplace" and p["kernel_h"] == k and (k, s) in DW_ROW_SHAPES
            and p["stride_h"] == s and p["dilation_h"] == p["dilation_w"] == 1
            and p["pad_top"] == 0 and p["pad_left"] == 0 and inside(p["out_h"], p["in_h"])
            and inside(p["out_w"], p["in_w"]) and p["out_w"] <= p["in_w"]
            and p["out_c"] == p["in_c"]):
        return out
    if (k, s) == (3, 2):
        out.add(f"TINYC_DW_DIRECT_3X3_S2_{clamp}")
    if p["in_c"] >= 4 and ((k, s) != (3, 1) or p["out_h"] * p["out_w"] <= DW_QUAD_S1_MAX_OUT):
        out.add(f"TINYC_DW_QUAD_{k}X{k}_S{s}_{clamp}")
    return out


# ---------------------------------------------------------------- conv2d
class Conv2d(_Layer):
    name = "conv2d"
    onnx = {"Conv": (_import_conv, (2, 3)),
            "BatchNormalization": (_import_batch_norm, (5, 5))}
    per_channel = True
    patchable = True
    windowed = True
    sources = {"conv": "conv2d.c", "conv_1x1": "conv2d.c", "conv_1x1_inplace": "conv2d.c",
               "conv_split": "conv2d.c", "conv_im2col": "conv2d.c",
               "depthwise": "depthwise_conv.c", "depthwise_inplace": "depthwise_conv.c"}

    def macs(self, g, node):
        w = g.tensors[node.inputs[1]]
        out = g.tensors[node.outputs[0]]
        return out.size * int(np.prod(w.shape[1:]))

    def kernel_variants(self, L):
        return dw_variants(L["kind"], L["params"])

    def layer_type(self, g, node):
        _, kh, kw, cin_g = g.tensors[node.inputs[1]].shape
        cin = g.tensors[node.inputs[0]].shape[-1]
        groups = node.attrs.get("groups", 1)
        stride = node.attrs.get("strides", (1, 1))
        s = f"s{stride[0]}" if stride[0] == stride[1] else f"s{stride[0]}x{stride[1]}"
        if groups == cin and groups > 1:
            return f"depthwise {kh}x{kw} {s}"
        if (kh, kw) == (1, 1) and groups == 1 and s == "s1":
            return "pointwise"
        return f"conv {kh}x{kw} {s}" + (f" groups {groups}" if groups > 1 else "")

    def run_float(self, g, node, env):
        a = node.attrs
        x = env[node.inputs[0]]
        w, b = g.tensors[node.inputs[1]].data, g.tensors[node.inputs[2]].data
        y = conv_accumulate(x[0], w, a["strides"], a["pads"], a["dilations"], a["groups"],
                            np.float64) + b
        return _clamp(y, a["clamp"])[None].astype(np.float32)

    def run_int8(self, g, node, env):
        a, q = node.attrs, node.attrs["q"]
        x = env[node.inputs[0]]
        w, b = g.tensors[node.inputs[1]].data, g.tensors[node.inputs[2]].data
        xin = x[0].astype(np.int64) - q["in_zp"]
        acc = conv_accumulate(xin, w, a["strides"], a["pads"], a["dilations"], a["groups"],
                              np.int64) + b
        y = mbqm(acc, q["mult"], q["shift"]) + q["out_zp"]
        return np.clip(y, q["act_min"], q["act_max"]).astype(np.int8)[None]

    def window(self, g, node, axis):
        a = node.attrs
        kernel = g.tensors[node.inputs[1]].shape[1 + axis]
        dilation = a.get("dilations", (1, 1))[axis]
        return kernel, a.get("strides", (1, 1))[axis], a["pads"][axis], dilation

    def plan(self, ctx: PlanContext, i, node):
        if not ctx.inplace or node.inputs[1] in ctx.split:
            return   # no in-place kernels, no scratch: the plain reference kernels
        g, x, out = ctx.g, node.inputs[0], node.outputs[0]
        if depthwise_inplace_ok(g, node) and ctx.dies_at(x, i):
            ctx.join(i, x, out, "depthwise")
            _, h, w, _ = g.tensors[x].shape
            ctx.scratch[i] = h * w   # one input plane
            ctx.roomy[i] = depthwise_plane_bytes(g, node)   # the plane with its padding: faster
        elif ctx.pointwise and pointwise_inplace_ok(g, node) and ctx.dies_at(x, i):
            ctx.join(i, x, out, "pointwise")
            ctx.scratch[i] = g.tensors[x].shape[-1]        # one input pixel
            ctx.roomy[i] = 2 * g.tensors[x].shape[-1]      # two: faster
        elif conv_scratch_bytes(g, node):
            ctx.scratch[i] = conv_scratch_bytes(g, node)   # one window
            if node.attrs.get("groups", 1) == 1:
                ctx.roomy[i] = 2 * ctx.scratch[i]          # two: faster

    def bias_scratch_bytes(self, ctx, i, node, inplace_kind):
        # a trained layer whose kernel takes a folded bias refolds it from its SRAM parameters
        if node.name not in ctx.g.meta.get("train", {}).get("trainable", ()):
            return 0
        kind = conv_kernel_kind(ctx.g, node, inplace_kind, i in ctx.scratch, ctx.split)
        return 4 * ctx.g.tensors[node.outputs[0]].shape[-1] if kind in FOLDED_BIAS_KINDS else 0

    def layer(self, g, node, i, plan, consts, params):
        a, q = node.attrs, node.attrs["q"]
        x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
        w, b = g.tensors[node.inputs[1]], g.tensors[node.inputs[2]]
        _, ih, iw, ic = x.shape
        _, oh, ow, oc = y.shape
        kh, kw = w.shape[1:3]
        groups = int(a.get("groups", 1))
        strides, dil, pads = a.get("strides", (1, 1)), a.get("dilations", (1, 1)), a["pads"]
        cparams = dict(in_h=ih, in_w=iw, in_c=ic, out_h=oh, out_w=ow, out_c=oc, kernel_h=kh,
                       kernel_w=kw, stride_h=strides[0], stride_w=strides[1], dilation_h=dil[0],
                       dilation_w=dil[1], pad_top=pads[0], pad_left=pads[1], groups=groups,
                       in_zp=q["in_zp"], out_zp=q["out_zp"], act_min=q["act_min"],
                       act_max=q["act_max"])
        # "conv" is the plain reference loop (a plan without the im2col scratch)
        kind = conv_kernel_kind(g, node, plan.inplace.get(i), i in plan.scratch)
        if w.dtype != "int8" or b.dtype != "int32":
            raise TinycError(f"{node.describe()}: weights must be int8 and bias int32; quantize "
                             "the graph first")
        fold = None
        wc = f"{w.name} {tuple(w.shape)} OHWI"
        if kind == "conv_split":
            weights = params.split_ref(consts, w.name, f"tinyc_w{i}", wc)
        else:
            weights = params.ref(consts, w.name, f"tinyc_w{i}", wc)
        if params.is_split(w.name) != (kind == "conv_split"):
            raise TinycError(f"{node.describe()}: split weights need tinyc_conv2d_split (planner "
                             "conv_kernel_kind)")
        if kind in FOLDED_BIAS_KINDS and i in plan.bias_scratch:
            # a trained layer: its folded bias is recomputed from the current parameters each run
            fold = dict(off=plan.bias_scratch[i], out_c=oc, filter_size=int(np.prod(w.shape[1:])),
                        in_zp=int(q["in_zp"]), weights=weights,
                        bias=params.ref(consts, b.name, f"tinyc_b{i}", b.name))
            bias = f"(const int32_t *)TINYC_AT({plan.bias_scratch[i]})"
        elif kind in FOLDED_BIAS_KINDS:
            if params.trained(w.name) or params.trained(b.name):
                raise TinycError(f"{node.describe()}: a trained layer needs a folded-bias scratch "
                                 "in the memory plan (plan the training graph with plan_memory)")
            # sum((x - zp) * w) + b == sum(x * w) + (b - zp * sum(w)): the fast kernels' bias
            folded = (b.data.astype(np.int64)
                      - int(q["in_zp"]) * w.data.reshape(oc, -1).astype(np.int64).sum(axis=1))
            if folded.min() < -(1 << 31) or folded.max() >= (1 << 31):
                raise TinycError(f"{node.describe()}: the bias with the input zero point folded in "
                                 "overflows int32; the layer's weights are out of range")
            bias = consts.add(b.name + "#folded", f"tinyc_b{i}", "int32_t", folded, b.name,
                              note=" - in_zp * sum(w)")
        else:
            bias = params.ref(consts, b.name, f"tinyc_b{i}", b.name)
        if kind in INPLACE_KINDS and (plan.tensor_offsets[node.inputs[0]]
                                      != plan.tensor_offsets[node.outputs[0]]):
            raise TinycError(f"{node.describe()}: an in-place conv needs its output planned over "
                             "its input")
        return dict(kind=kind, template=TEMPLATE, ptype="tinyc_conv_params", params=cparams,
                    fold=fold, in_place=kind in INPLACE_KINDS, weights=weights, bias=bias,
                    mult=consts.add(w.name + "#mult", f"tinyc_m{i}", "int32_t", q["mult"]),
                    shift=consts.add(w.name + "#shift", f"tinyc_s{i}", "int32_t", q["shift"]))

    def tflite(self, x, node):
        fb = x.fb
        x_name, w_name, b_name = node.inputs[:3]
        out_name = node.outputs[0]
        xt, w, b = (x.g.tensors[n] for n in (x_name, w_name, b_name))
        _check_int8(node, xt, w)
        cin, cout = xt.shape[3], w.shape[0]
        groups = int(node.attrs.get("groups", 1))
        kh, kw = w.shape[1], w.shape[2]
        sh, sw = node.attrs["strides"]
        dh, dw = node.attrs.get("dilations", (1, 1))
        _, zp_in = xt.q.scalar()
        xi, padding = x.resolve_padding(node, x_name, (kh, kw), (sh, sw), (dh, dw),
                                        node.attrs["pads"], zp_in)
        w_scale = np.atleast_1d(w.q.scale).astype(np.float32)
        if w_scale.size == 1:
            w_scale = np.repeat(w_scale, cout)
        bias = b.data.astype(np.int32).reshape(-1)
        b_scale = (b.q.scale if b.q is not None
                   else np.float32(xt.q.scale) * w_scale).astype(np.float32)
        b_scale = np.broadcast_to(np.atleast_1d(b_scale), (cout,))

        zeros = np.zeros(cout, np.int32)
        if groups == 1 or (groups != cin and x.grouped_conv == "native"):
            # CONV_2D; grouped, it infers groups = C_in / the weight's C_in (the weight stays
            # OHWI: C_out, KH, KW, C_in / groups)
            wi = (x.tensor(w_name) if groups == 1 and w.q.per_channel
                  else x._new_tensor(w_name, w.shape, "int8", w_scale, zeros, 0, w.data))
            bi = x._new_tensor(b_name, (cout,), "int32", b_scale, zeros, 0, bias)
            x.with_activation(node, out_name, lambda out, act: x.op(
                "CONV_2D", [xi, wi, bi], [out],
                _window_options(fb.Conv2DOptionsT(), padding, (sh, sw), (dh, dw), act),
                "Conv2DOptions"))
            return

        if groups == cin:
            wd = np.ascontiguousarray(w.data.astype(np.int8).transpose(3, 1, 2, 0))  # (1,KH,KW,Cout)
            wi = x._new_tensor(w_name, wd.shape, "int8", w_scale, zeros, 3, wd)
            bi = x._new_tensor(b_name, (cout,), "int32", b_scale, zeros, 0, bias)

            def emit(out, act):
                opt = _window_options(fb.DepthwiseConv2DOptionsT(), padding, (sh, sw), (dh, dw),
                                      act)
                opt.depthMultiplier = cout // cin
                x.op("DEPTHWISE_CONV_2D", [xi, wi, bi], [out], opt, "DepthwiseConv2DOptions")
            x.with_activation(node, out_name, emit)
            return

        # Grouped conv: SPLIT -> CONV_2D per group -> CONCATENATION.
        cin_g, cout_g = cin // groups, cout // groups
        xshape = x.tensors[xi].shape
        pieces = []
        for g in range(groups):
            xs = x.like(x_name, (1, xshape[1], xshape[2], cin_g), f"_{node.name}_group{g}")
            pieces.append(xs)
        axis = x.const_i32(f"{node.name}_split_axis", np.int32(3))
        opt = fb.SplitOptionsT()
        opt.numSplits = groups
        x.op("SPLIT", [axis, xi], pieces, opt, "SplitOptions")
        out_shape = x.g.tensors[out_name].shape

        def emit(out, act):
            outs = []
            for g in range(groups):
                sl = slice(g * cout_g, (g + 1) * cout_g)
                wi = x._new_tensor(f"{w_name}_group{g}", (cout_g, kh, kw, cin_g), "int8",
                                   w_scale[sl], np.zeros(cout_g, np.int32), 0, w.data[sl])
                bi = x._new_tensor(f"{b_name}_group{g}", (cout_g,), "int32", b_scale[sl],
                                   np.zeros(cout_g, np.int32), 0, bias[sl])
                og = x.like(out_name, out_shape[:3] + (cout_g,), f"_group{g}")
                copt = _window_options(fb.Conv2DOptionsT(), padding, (sh, sw), (dh, dw), act)
                x.op("CONV_2D", [pieces[g], wi, bi], [og], copt, "Conv2DOptions")
                outs.append(og)
            copt = fb.ConcatenationOptionsT()
            copt.axis = 3
            x.op("CONCATENATION", outs, [out], copt, "ConcatenationOptions")
        x.with_activation(node, out_name, emit)

    def onnx_export(self, x, node, raw):
        a = node.attrs
        w = x.dequantized(node.inputs[1]).transpose(0, 3, 1, 2)
        t, l, b, r = a["pads"]
        x.add("Conv", [node.inputs[0], x.const(node.inputs[1], w),
                       x.const(node.inputs[2], x.dequantized(node.inputs[2]))],
              [raw], name=node.name, kernel_shape=list(w.shape[2:]), strides=list(a["strides"]),
              pads=[t, l, b, r], dilations=list(a["dilations"]), group=a["groups"])


def _clamp(y, clamp):
    if clamp is None:
        return y
    return np.clip(y, clamp[0], clamp[1])


# ---------------------------------------------------------------- conv kernel choice
def depthwise_inplace_ok(g: Graph, node: Node) -> bool:
    """A conv the in-place depthwise kernel can run: groups == C_in == C_out, more than 1 channel."""
    if node.op != "conv2d":
        return False
    cin = g.tensors[node.inputs[0]].shape[-1]
    cout = g.tensors[node.outputs[0]].shape[-1]
    return node.attrs.get("groups", 1) == cin == cout and cin > 1


DW_PLANE_SLACK = 3   # TINYC_DW_PLANE_SLACK of kernels.h: the DSP kernel's 4-byte row reads


def depthwise_plane_bytes(g: Graph, node: Node) -> int:
    """The scratch of tinyc_depthwise_conv_inplace: one input channel with the conv's padding
    around it (every window an interior one), as far as the windows reach, plus the slack."""
    _, h, w, _ = g.tensors[node.inputs[0]].shape
    _, oh, ow, _ = g.tensors[node.outputs[0]].shape
    _, kh, kw, _ = g.tensors[node.inputs[1]].shape
    a = node.attrs
    (sh, sw), (dh, dw) = a.get("strides", (1, 1)), a.get("dilations", (1, 1))
    pads = a.get("pads", (0, 0, 0, 0))
    if pads[0] < 0 or pads[1] < 0:
        return h * w   # a patch tile's crop: the kernel gathers the plane as it is

    def extent(out, size, k, stride, pad, dilation):
        return max(pad + size, (out - 1) * stride + (k - 1) * dilation + 1)

    return (extent(oh, h, kh, sh, pads[0], dh) * extent(ow, w, kw, sw, pads[1], dw)
            + DW_PLANE_SLACK)


def pointwise_inplace_ok(g: Graph, node: Node) -> bool:
    """A conv the in-place pointwise kernel can run: 1x1, stride 1, no padding, groups 1."""
    if node.op != "conv2d" or node.attrs.get("groups", 1) != 1:
        return False
    w = g.tensors[node.inputs[1]]
    return (tuple(w.shape[1:3]) == (1, 1) and tuple(node.attrs.get("strides", (1, 1))) == (1, 1)
            and tuple(node.attrs.get("pads", (0, 0, 0, 0))) == (0, 0, 0, 0))


def conv_scratch_bytes(g: Graph, node: Node) -> int:
    """Scratch of a conv run out of place: the im2col window of tinyc_conv2d_im2col
    (kh * kw * C_in / groups bytes); 0 for depthwise and pointwise convs, which need none."""
    if node.op != "conv2d":
        return 0
    cin = g.tensors[node.inputs[0]].shape[-1]
    groups = node.attrs.get("groups", 1)
    if (groups == cin and groups > 1) or pointwise_inplace_ok(g, node):
        return 0
    _, kh, kw, cin_g = g.tensors[node.inputs[1]].shape
    return kh * kw * cin_g


def conv_kernel_kind(g: Graph, node: Node, inplace_kind: str | None, has_scratch: bool,
                     split: dict | None = None) -> str:
    """The C kernel a conv2d node runs with, given the plan's in-place decision for it and
    whether it has a scratch buffer (the code generator calls the kernel named here).
    A conv over split weights (split_weights; `split` if already computed) always runs
    tinyc_conv2d_split: out of place, no scratch, bias not folded."""
    if split is None:
        from ..memory.planner import split_weights
        split = split_weights(g)
    if node.inputs[1] in split:
        return "conv_split"
    ic = g.tensors[node.inputs[0]].shape[-1]
    kh, kw = g.tensors[node.inputs[1]].shape[1:3]
    groups = int(node.attrs.get("groups", 1))
    if inplace_kind == "depthwise":
        return "depthwise_inplace"
    if inplace_kind == "pointwise":
        return "conv_1x1_inplace"
    if groups == ic and groups > 1:
        return "depthwise"
    if (groups == 1 and kh == kw == 1 and tuple(node.attrs.get("strides", (1, 1))) == (1, 1)
            and tuple(node.attrs["pads"]) == (0, 0, 0, 0)):
        return "conv_1x1"
    return "conv_im2col" if has_scratch else "conv"


# ---------------------------------------------------------------- fully_connected
class FullyConnected(_Layer):
    name = "fully_connected"
    onnx = {"Gemm": (_import_gemm, (2, 3)), "MatMul": (_import_matmul, (2, 2))}
    sources = {"fc": "fully_connected.c"}

    def macs(self, g, node):
        w = g.tensors[node.inputs[1]]
        return int(w.shape[0] * w.shape[1])

    def run_float(self, g, node, env):
        x = env[node.inputs[0]]
        w, b = g.tensors[node.inputs[1]].data, g.tensors[node.inputs[2]].data
        y = x.astype(np.float64) @ w.T.astype(np.float64) + b
        return _clamp(y, node.attrs["clamp"]).astype(np.float32)

    def run_int8(self, g, node, env):
        q = node.attrs["q"]
        x = env[node.inputs[0]]
        w, b = g.tensors[node.inputs[1]].data, g.tensors[node.inputs[2]].data
        acc = (x.astype(np.int64) - q["in_zp"]) @ w.T.astype(np.int64) + b
        y = mbqm(acc, q["mult"], q["shift"]) + q["out_zp"]
        return np.clip(y, q["act_min"], q["act_max"]).astype(np.int8)

    def fold_constant_add(self, imp, prod, node, x, c) -> bool:
        # MatMul + Add (bias) -> one fully-connected layer
        if imp.uses.get(x.name) == 1 and prod.attrs["clamp"] is None and c.size == x.shape[-1]:
            b = imp.tensors[prod.inputs[2]]
            b.data = (b.data + c.reshape(-1)).astype(np.float32)
            imp.alias[node.output[0]] = x.name
            return True
        return False

    def layer(self, g, node, i, plan, consts, params):
        q = node.attrs["q"]
        w, b = g.tensors[node.inputs[1]], g.tensors[node.inputs[2]]
        n_out, n_in = w.shape
        mult = np.broadcast_to(np.asarray(q["mult"], np.int64), (n_out,))
        shift = np.broadcast_to(np.asarray(q["shift"], np.int64), (n_out,))
        return dict(kind="fc", template=TEMPLATE, ptype="tinyc_fc_params",
                    params=dict(in_n=n_in, out_n=n_out, in_zp=q["in_zp"], out_zp=q["out_zp"],
                                act_min=q["act_min"], act_max=q["act_max"]),
                    weights=params.ref(consts, w.name, f"tinyc_w{i}",
                                       f"{w.name} {tuple(w.shape)}"),
                    bias=params.ref(consts, b.name, f"tinyc_b{i}", b.name),
                    mult=consts.add(w.name + "#mult", f"tinyc_m{i}", "int32_t", mult),
                    shift=consts.add(w.name + "#shift", f"tinyc_s{i}", "int32_t", shift))

    def tflite(self, x, node):
        from ..export.tflite import ExportError, _reshape_options
        fb = x.fb
        x_name, w_name, b_name = node.inputs[:3]
        out_name = node.outputs[0]
        xt, w, b = (x.g.tensors[n] for n in (x_name, w_name, b_name))
        _check_int8(node, xt, w)
        if len(xt.shape) != 2:
            raise ExportError(f"{node.describe()}: fully_connected input must be (1, N), got "
                              f"{xt.shape}")
        xi = x.tensor(x_name)
        cout = w.shape[0]
        if b.q is not None:
            b_scale = np.asarray(b.q.scale, np.float32)
        else:
            b_scale = np.float32(xt.q.scale) * np.asarray(w.q.scale, np.float32)
        if not w.q.per_channel:   # per-tensor weights: one bias scale too
            b_scale = np.atleast_1d(b_scale)[:1]

        if not x.fc_as_conv:
            wi = x.tensor(w_name)
            bi = x._new_tensor(b_name, (cout,), "int32", b_scale,
                               np.zeros(b_scale.shape, np.int32), 0,
                               b.data.astype(np.int32).reshape(-1))

            def emit(out, act):
                opt = fb.FullyConnectedOptionsT()
                opt.fusedActivationFunction = act
                x.op("FULLY_CONNECTED", [xi, wi, bi], [out], opt, "FullyConnectedOptions")
            x.with_activation(node, out_name, emit)
            return

        # RESHAPE (1, N) -> (1, 1, 1, N), 1x1 CONV_2D with the scale repeated per channel,
        # RESHAPE back to (1, O): the same multiplier (TFLite computes both in double) and the
        # same integer arithmetic as TFLM's FULLY_CONNECTED.
        n_in = xt.shape[1]
        x4 = x.like(x_name, (1, 1, 1, n_in), "_as_nhwc")
        x.op("RESHAPE", [xi, x.const_i32(f"{node.name}_in_shape", [1, 1, 1, n_in])], [x4],
             _reshape_options(fb, (1, 1, 1, n_in)), "ReshapeOptions")
        w_scale = np.broadcast_to(np.atleast_1d(np.asarray(w.q.scale, np.float32)), (cout,))
        wc = x._new_tensor(w_name + "_as_conv", (cout, 1, 1, n_in), "int8", w_scale,
                           np.zeros(cout, np.int32), 0, w.data.reshape(cout, 1, 1, n_in))
        bc = x._new_tensor(b_name + "_as_conv", (cout,), "int32",
                           np.broadcast_to(np.atleast_1d(np.asarray(b_scale, np.float32)),
                                           (cout,)),
                           np.zeros(cout, np.int32), 0, b.data.astype(np.int32).reshape(-1))
        y4 = x.like(out_name, (1, 1, 1, cout), "_as_nhwc")

        def emit(out, act):
            opt = fb.Conv2DOptionsT()
            opt.padding, opt.strideH, opt.strideW = fb.Padding.VALID, 1, 1
            opt.fusedActivationFunction = act
            x.op("CONV_2D", [x4, wc, bc], [y4], opt, "Conv2DOptions")
            x.op("RESHAPE", [y4, x.const_i32(f"{node.name}_out_shape", [1, cout])], [out],
                 _reshape_options(fb, (1, cout)), "ReshapeOptions")
        x.with_activation(node, out_name, emit)

    def onnx_export(self, x, node, raw):
        w = x.dequantized(node.inputs[1])
        if node.name in x.spatial_flatten:
            h, wd, c = x.spatial_flatten[node.name]
            # NHWC column order (h, w, c) back to ONNX's (c, h, w)
            w = w.reshape(w.shape[0], h, wd, c).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)
        x.add("Gemm", [node.inputs[0], x.const(node.inputs[1], w),
                       x.const(node.inputs[2], x.dequantized(node.inputs[2]))],
              [raw], name=node.name, transB=1)


# ---------------------------------------------------------------- TFLite export helpers
def _window_options(opt, padding, strides, dilations, act):
    """Fill the padding, strides, dilations and fused activation of a conv's options table."""
    opt.padding, (opt.strideH, opt.strideW) = padding, strides
    opt.dilationHFactor, opt.dilationWFactor = dilations
    opt.fusedActivationFunction = act
    return opt


def _check_int8(node: Node, x: Tensor, w: Tensor):
    from ..export.tflite import ExportError
    if x.dtype != "int8" or w.dtype != "int8" or x.q is None or w.q is None:
        raise ExportError(f"{node.describe()}: expects int8 input and weight with quant params "
                          f"(got {x.dtype}, {w.dtype}); run the quantize pass first")
    if np.any(np.asarray(w.q.zero_point) != 0):
        raise ExportError(f"{node.describe()}: TFLite int8 weights must have zero point 0")


OPS = (Conv2d(), FullyConnected())
