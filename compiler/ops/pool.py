"""Average and max pooling (2-D, NHWC) and their gradients.

Import: AveragePool, MaxPool, GlobalAveragePool, ReduceMean over H,W (keepdims or not: a reshape
follows); a .tflite file's MEAN over H,W is `mean` (TFLite Micro's arithmetic, any output scale). int8: TFLite's rounding average over the in-bounds pixels (or the whole window with
count_include_pad), max over the window; output parameters are the input's. Kernels:
runtime_c/src/forward/pool.c, backward/pool_grad.c.
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError
from ..ir import Node, conv_out_size
from ..reference.common import pool_windows
from .base import Op, TrainRun

F32 = np.float32
INT8_MIN = -128
TEMPLATE = "ops/pool.c.j2"


# ---------------------------------------------------------------- ONNX import
def _import_pool(imp, node, op: str) -> None:
    a = imp.attrs(node)
    x = imp.act(node.input[0], node)
    if len(x.shape) != 4:
        raise imp.err(node, f"needs a 4-D input, got {x.shape}")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        raise imp.err(node, "dilated pooling is not supported")
    if len(node.output) > 1 and node.output[1] and imp.uses.get(node.output[1]):
        raise imp.err(node, "the MaxPool Indices output is not supported")
    if "kernel_shape" not in a:
        raise imp.err(node, "kernel_shape is missing")
    kh, kw = imp.ints(node, a, "kernel_shape", None, 2, 1)
    sh, sw = imp.ints(node, a, "strides", [1, 1], 2, 1)
    _, h, w, c = x.shape
    pads = imp.spatial_pads(node, a, h, w, kh, kw, sh, sw)
    if max(pads[0], pads[2]) >= kh or max(pads[1], pads[3]) >= kw:
        # a window entirely in the padding has no value (max) or divides by 0 (average)
        raise imp.err(node, f"pads {list(pads)} must be smaller than the {kh}x{kw} kernel")
    if a.get("ceil_mode", 0):
        pads = _ceil_mode_pads(imp, node, op, a, (h, w), (kh, kw), (sh, sw), pads)
    oh, ow = conv_out_size(h, kh, sh, pads[0], pads[2]), conv_out_size(w, kw, sw, pads[1], pads[3])
    if oh <= 0 or ow <= 0:
        raise imp.err(node, f"output would be empty for input {h}x{w}: the {kh}x{kw} "
                            "kernel is larger than the padded input")
    out = imp.new_act(node.output[0], (1, oh, ow, c))
    extra = {"count_include_pad": bool(a.get("count_include_pad", 0))} if op == "avg_pool" else {}
    imp.emit(node, op, [x.name], [out], kernel=(int(kh), int(kw)), strides=(int(sh), int(sw)),
             pads=pads, **extra)


def _ceil_mode_pads(imp, node, op, a, size, kernel, strides, pads):
    """ceil_mode=1: the output size rounds up (onnxruntime's and PyTorch's rule: a last window
    must start inside the input or its leading pad). The extra windows are the same pooling with
    more padding after: exact for max (padding never wins) and for an average over the in-bounds
    pixels only (count_include_pad=0)."""
    before, after = [pads[0], pads[1]], [pads[2], pads[3]]
    for axis in (0, 1):
        n, k, s = size[axis], kernel[axis], strides[axis]
        span = n + before[axis] + after[axis] - k
        out = -(-span // s) + 1
        if (out - 1) * s >= n + before[axis]:
            out -= 1
        extra = (out - 1) * s + k - (n + before[axis] + after[axis])
        if extra <= 0:
            continue   # rounding up changes nothing on this axis
        if op == "avg_pool" and a.get("count_include_pad", 0):
            raise imp.err(node, "ceil_mode=1 with count_include_pad=1 is not supported where "
                                "it adds windows; export with ceil_mode=False or "
                                "count_include_pad=False")
        after[axis] += extra
    return (before[0], before[1], after[0], after[1])


def _import_global_pool(imp, node, keepdims=True) -> None:
    x = imp.act(node.input[0], node)
    if len(x.shape) != 4:
        raise imp.err(node, f"needs a 4-D input, got {x.shape}")
    _, h, w, c = x.shape
    out = imp.new_act(node.output[0] if keepdims else node.output[0] + "_4d", (1, 1, 1, c))
    imp.emit(node, "avg_pool", [x.name], [out], kernel=(h, w), strides=(1, 1),
             pads=(0, 0, 0, 0), count_include_pad=False)
    if not keepdims:
        out2 = imp.new_act(node.output[0], (1, c))
        imp.emit(node, "reshape", [out], [out2], nchw_order=False)


def _import_reduce_mean(imp, node) -> None:
    a = imp.attrs(node)
    axes = a.get("axes")
    if len(node.input) > 1 and node.input[1]:
        axes = imp.int_list(node.input[1], node, "ReduceMean's axes")
    if axes is None or sorted(int(x) % 4 for x in axes) != [2, 3]:
        raise imp.err(node, f"ReduceMean over axes {axes} is not supported; only the "
                            "spatial mean over H,W (axes [2, 3]) is")
    _import_global_pool(imp, node, keepdims=bool(a.get("keepdims", 1)))


# ---------------------------------------------------------------- forward ops
class _Pool(Op):
    pass_through_q = True
    patchable = True
    windowed = True
    pad_value = 0.0           # of the float reference's padding

    def run_float(self, g, node, env):
        a = node.attrs
        x = env[node.inputs[0]]
        vals, valid = pool_windows(x[0], a["kernel"], a["strides"], a["pads"], self.pad_value)
        return self.float_pool(a, vals, valid)[None].astype(np.float32)

    def quantize(self, g, node):
        return dict(act_min=-128, act_max=127)

    def window(self, g, node, axis):
        a = node.attrs
        return a["kernel"][axis], a.get("strides", (1, 1))[axis], a["pads"][axis], 1

    def grad(self, ad, node, g_out, need):
        if not need:
            return
        x = node.inputs[0]
        g_x = ad.new_grad(x)
        ins = [g_out] + ([x] if self.name == "max_pool" else [])
        attrs = {k: node.attrs[k] for k in ("kernel", "strides", "pads")}
        attrs["count_include_pad"] = bool(node.attrs.get("count_include_pad"))
        ad.emit(Node(node.name + "/grad", self.name + "_grad", ins, [g_x], attrs))
        ad.give_grad(x, g_x, node)

    def layer(self, g, node, i, plan, consts, params):
        a, q = node.attrs, node.attrs["q"]
        x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
        return dict(kind=node.op, template=TEMPLATE, ptype="tinyc_pool_params",
                    params=_pool_params(a, x.shape, y.shape, int(x.q.zero_point), q["act_min"],
                                        q["act_max"]))

    def onnx_export(self, x, node, raw):
        a = node.attrs
        xt = x.g.tensors[node.inputs[0]]
        if self.name == "avg_pool" and tuple(a["kernel"]) == xt.shape[1:3] and not any(a["pads"]):
            x.add("GlobalAveragePool", node.inputs, [raw], name=node.name)
            return
        t, l, b, r = a["pads"]
        extra = ({"count_include_pad": int(a.get("count_include_pad", False))}
                 if self.name == "avg_pool" else {})
        x.add("AveragePool" if self.name == "avg_pool" else "MaxPool", node.inputs, [raw],
              name=node.name, kernel_shape=list(a["kernel"]), strides=list(a["strides"]),
              pads=[t, l, b, r], **extra)


class AvgPool(_Pool):
    name = "avg_pool"
    onnx = {"AveragePool": (lambda imp, node: _import_pool(imp, node, "avg_pool"), (1, 1)),
            "GlobalAveragePool": (_import_global_pool, (1, 1)),
            "ReduceMean": (_import_reduce_mean, (1, 2))}
    sources = {"avg_pool": "pool.c"}

    @staticmethod
    def float_pool(a, vals, valid):
        if a.get("count_include_pad"):
            return vals.mean(axis=2)
        return vals.sum(axis=2) / valid.sum(axis=2)

    def run_int8(self, g, node, env):
        a, q = node.attrs, node.attrs["q"]
        x = env[node.inputs[0]]
        zp = int(g.tensors[node.inputs[0]].q.zero_point)
        vals, valid = pool_windows(x[0].astype(np.int64), a["kernel"], a["strides"], a["pads"], zp)
        if a.get("count_include_pad"):
            count = np.full(valid.shape[:2] + (1,), vals.shape[2], np.int64)
            total = vals.sum(axis=2)
        else:
            count = valid.sum(axis=2).astype(np.int64)
            total = np.where(valid, vals, 0).sum(axis=2)
        # TFLite: round half away from zero with C's truncating division
        avg = np.where(total > 0, (total + count // 2) // count, -((-total + count // 2) // count))
        return np.clip(avg, q["act_min"], q["act_max"]).astype(np.int8)[None]

    def tflite(self, x, node):
        from ..export.tflite import _same_params, classify_pads
        x_name, out_name = node.inputs[0], node.outputs[0]
        xt = x.g.tensors[x_name]
        _same_params(node, xt, x.g.tensors[out_name])
        kh, kw = node.attrs["kernel"]
        sh, sw = node.attrs["strides"]
        pads = tuple(int(p) for p in node.attrs.get("pads", (0, 0, 0, 0)))
        _, zp = xt.q.scalar()
        include = bool(node.attrs.get("count_include_pad", False))
        if not include and classify_pads(xt.shape[1:3], (kh, kw), (sh, sw), pads) is None:
            _avg_pool_pieces(x, node, (kh, kw), (sh, sw), pads)
            return
        # TFLite's SAME average divides by the count of real pixels: only right for
        # count_include_pad=False; with count_include_pad the pads become a PAD of zero points.
        xi, padding = x.resolve_padding(node, x_name, (kh, kw), (sh, sw), (1, 1), pads, zp,
                                        allow_same=not include)
        _pool_op(x, "AVERAGE_POOL_2D", xi, x.tensor(out_name), padding, (kh, kw), (sh, sw))


class MaxPool(_Pool):
    name = "max_pool"
    onnx = {"MaxPool": (lambda imp, node: _import_pool(imp, node, "max_pool"), (1, 1))}
    sources = {"max_pool": "pool.c"}
    pad_value = -np.inf

    @staticmethod
    def float_pool(a, vals, valid):
        return vals.max(axis=2)

    def run_int8(self, g, node, env):
        a, q = node.attrs, node.attrs["q"]
        x = env[node.inputs[0]]
        vals, _ = pool_windows(x[0].astype(np.int64), a["kernel"], a["strides"], a["pads"], -129)
        return np.clip(vals.max(axis=2), q["act_min"], q["act_max"]).astype(np.int8)[None]

    def tflite(self, x, node):
        from ..export.tflite import _same_params
        x_name, out_name = node.inputs[0], node.outputs[0]
        xt = x.g.tensors[x_name]
        _same_params(node, xt, x.g.tensors[out_name])
        kh, kw = node.attrs["kernel"]
        sh, sw = node.attrs["strides"]
        pads = tuple(int(p) for p in node.attrs.get("pads", (0, 0, 0, 0)))
        # SAME max pooling ignores padded cells, same as padding with -128.
        xi, padding = x.resolve_padding(node, x_name, (kh, kw), (sh, sw), (1, 1), pads, INT8_MIN)
        _pool_op(x, "MAX_POOL_2D", xi, x.tensor(out_name), padding, (kh, kw), (sh, sw))


class Mean(Op):
    """TFLite's int8 MEAN over H and W (keep_dims), as an int8 .tflite file has it: its output may
    have other quantization parameters than its input (a requantizing mean). TFLite Micro sums
    the pixels and rescales the sum by in_scale / out_scale / pixels, the division folded into
    the multiplier (reference_ops::QuantizedMeanOrSum); tinyc folds it at build time."""
    name = "mean"
    sources = {"mean": "pool.c"}

    def run_float(self, g, node, env):
        return env[node.inputs[0]].mean(axis=(1, 2), keepdims=True).astype(np.float32)

    def quantize(self, g, node):
        from ..reference.fixedpoint import quantize_multiplier
        x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
        s_in, zp_in = x.q.scalar()
        s_out, zp_out = y.q.scalar()
        mult, shift = quantize_multiplier(float(s_in) / float(s_out))
        pixels = x.shape[1] * x.shape[2]
        down = min(pixels.bit_length() - 1, 32, 31 + shift)
        return dict(in_zp=int(zp_in), out_zp=int(zp_out), pixels=pixels,
                    mult=(mult << down) // pixels, shift=shift - down)

    def run_int8(self, g, node, env):
        from ..reference.fixedpoint import multiply_by_quantized_multiplier as mbqm
        q = node.attrs["q"]
        total = env[node.inputs[0]].astype(np.int64).sum(axis=(1, 2), keepdims=True)
        y = mbqm(total - q["in_zp"] * q["pixels"], q["mult"], q["shift"]) + q["out_zp"]
        return np.clip(y, -128, 127).astype(np.int8)

    def grad(self, ad, node, g_out, need):
        if not need:
            return
        x = node.inputs[0]
        g_x = ad.new_grad(x)
        _, h, w, _ = ad.t.tensors[x].shape
        ad.emit(Node(node.name + "/grad", "avg_pool_grad", [g_out], [g_x],
                     dict(kernel=(h, w), strides=(1, 1), pads=(0, 0, 0, 0),
                          count_include_pad=False)))
        ad.give_grad(x, g_x, node)

    def layer(self, g, node, i, plan, consts, params):
        q = node.attrs["q"]
        x = g.tensors[node.inputs[0]]
        return dict(kind="mean", template=TEMPLATE, ptype="tinyc_mean_params",
                    params=dict(pixels=q["pixels"], channels=x.shape[3], in_zp=q["in_zp"],
                                out_zp=q["out_zp"], mult=q["mult"], shift=q["shift"]))

    def tflite(self, x, node):
        axes = x.const_i32(f"{node.name}_axes", [1, 2])
        opt = x.fb.ReducerOptionsT()
        opt.keepDims = True
        x.op("MEAN", [x.tensor(node.inputs[0]), axes], [x.tensor(node.outputs[0])], opt,
             "ReducerOptions")

    def onnx_export(self, x, node, raw):
        x.add("GlobalAveragePool", node.inputs, [raw], name=node.name)


def _pool_params(a: dict, x_shape, y_shape, zero_point: int, act_min: int, act_max: int) -> dict:
    """tinyc_pool_params of a pool (x: its input, y: its output) or of its gradient."""
    _, ih, iw, c = x_shape
    _, oh, ow, _ = y_shape
    return dict(in_h=ih, in_w=iw, channels=c, out_h=oh, out_w=ow,
                kernel_h=a["kernel"][0], kernel_w=a["kernel"][1],
                stride_h=a["strides"][0], stride_w=a["strides"][1],
                pad_top=a["pads"][0], pad_left=a["pads"][1],
                count_include_pad=int(bool(a.get("count_include_pad", False))),
                zero_point=zero_point, act_min=act_min, act_max=act_max)


# ---------------------------------------------------------------- TFLite export helpers
def _pool_op(x, opname, src, dst, padding, kernel, strides) -> None:
    fb = x.fb
    opt = fb.Pool2DOptionsT()
    opt.padding, opt.strideH, opt.strideW = padding, strides[0], strides[1]
    opt.filterHeight, opt.filterWidth = kernel
    opt.fusedActivationFunction = fb.ActivationFunctionType.NONE
    x.op(opname, [src], [dst], opt, "Pool2DOptions")


def _avg_pool_pieces(x, node: Node, kernel, strides, pads) -> None:
    """count_include_pad=False average pooling with pads TFLite cannot express: split the
    output into blocks whose windows are clipped the same way (the run of full windows, and
    each border row / column on its own), compute each block as a VALID AVERAGE_POOL_2D on a
    SLICE of the input holding exactly its clipped windows, and CONCATENATE the blocks. Each
    output value is then the rounded mean over its in-bounds pixels, as in the IR."""
    fb = x.fb
    x_name, out_name = node.inputs[0], node.outputs[0]
    xt, y = x.g.tensors[x_name], x.g.tensors[out_name]
    c = xt.shape[3]
    groups = [pool_groups(xt.shape[1 + d], kernel[d], strides[d], pads[d], y.shape[1 + d],
                          node) for d in (0, 1)]
    rows = []
    for gi, (oh, h0, h1, kh, sh) in enumerate(groups[0]):
        cols = []
        for gj, (ow, w0, w1, kw, sw) in enumerate(groups[1]):
            src = x.tensor(x_name)
            if (h0, h1, w0, w1) != (0, xt.shape[1], 0, xt.shape[2]):
                src = x.like(x_name, (1, h1 - h0, w1 - w0, c), f"_{node.name}_slice{gi}_{gj}")
                x.op("SLICE", [x.tensor(x_name),
                               x.const_i32(f"{node.name}_begin{gi}_{gj}", [0, h0, w0, 0]),
                               x.const_i32(f"{node.name}_size{gi}_{gj}",
                                           [1, h1 - h0, w1 - w0, c])],
                     [src], fb.SliceOptionsT(), "SliceOptions")
            dst = x.like(out_name, (1, oh, ow, c), f"_{node.name}_piece{gi}_{gj}")
            _pool_op(x, "AVERAGE_POOL_2D", src, dst, fb.Padding.VALID, (kh, kw), (sh, sw))
            cols.append((dst, ow))
        rows.append((x._concat(out_name, cols, 2, (1, oh), f"_{node.name}_row{gi}", c), oh))
    final = x._concat(out_name, rows, 1, (1,), "", c, final=True)
    assert final == x.tensor(out_name)


def pool_groups(size, k, s, pad_before, out, node):
    """Blocks of output indices along one dim whose windows clip alike:
    [(n_out, in_start, in_end, kernel, stride)] in output order."""
    groups, full = [], []
    for i in range(out):
        a, b = i * s - pad_before, i * s - pad_before + k
        lo, hi = max(a, 0), min(b, size)
        if hi <= lo:
            raise UnsupportedError(f"{node.describe()}: a pooling window lies entirely in the "
                                   "padding")
        if (lo, hi) == (a, b):
            full.append(i)
            continue
        if full:
            groups.append(_full_run(full, k, s, pad_before))
            full = []
        groups.append((1, lo, hi, hi - lo, 1))
    if full:
        groups.append(_full_run(full, k, s, pad_before))
    return groups


def _full_run(idx, k, s, pad_before):
    start = idx[0] * s - pad_before
    return (len(idx), start, idx[-1] * s - pad_before + k, k, s)


# ---------------------------------------------------------------- gradients
class _PoolGrad(Op):
    backward = True

    def run_train(self, g, node, env, run: TrainRun):
        x_q = env[node.inputs[1]] if self.name == "max_pool_grad" else None
        return pool_grad(node, env[node.inputs[0]], x_q, g.tensors[node.outputs[0]].shape)

    def layer(self, g, node, i, plan, consts, params):
        x, y = g.tensors[node.outputs[0]], g.tensors[node.inputs[0]]
        return dict(kind=node.op, template=TEMPLATE, ptype="tinyc_pool_params",
                    params=_pool_params(node.attrs, x.shape, y.shape, 0, -128, 127))


class AvgPoolGrad(_PoolGrad):
    name = "avg_pool_grad"
    sources = {"avg_pool_grad": "backward/pool_grad.c"}


class MaxPoolGrad(_PoolGrad):
    name = "max_pool_grad"
    sources = {"max_pool_grad": "backward/pool_grad.c"}


def pool_grad(node: Node, g_y: np.ndarray, x_q: np.ndarray | None, x_shape) -> np.ndarray:
    """The input gradient of a pool (reference/train.py's float32 rules: avg shares g_y / count
    over the window's valid pixels, max gives it to the window's first maximum)."""
    a = node.attrs
    _, h, w, c = x_shape
    kh, kw = a["kernel"]
    sh, sw = a["strides"]
    t, l, b, r = a["pads"]
    oh, ow = g_y.shape[1:3]
    gx = np.zeros((h + t + b + sh + kh, w + l + r + sw + kw, c), F32)
    gy = g_y[0]
    valid = np.zeros(gx.shape[:2], bool)
    valid[t:t + h, l:l + w] = True
    if node.op == "avg_pool_grad":
        if a["count_include_pad"]:
            count = np.full((oh, ow), kh * kw, np.int32)
        else:
            count = np.zeros((oh, ow), np.int32)
            for ky in range(kh):
                for kx in range(kw):
                    count += valid[ky: ky + sh * (oh - 1) + 1: sh, kx: kx + sw * (ow - 1) + 1: sw]
        share = (gy / count[:, :, None].astype(F32)).astype(F32)
        for ky in range(kh):
            for kx in range(kw):
                ys = slice(ky, ky + sh * (oh - 1) + 1, sh)
                xs = slice(kx, kx + sw * (ow - 1) + 1, sw)
                gx[ys, xs] += share * valid[ys, xs][:, :, None]
    else:
        xp = np.full(gx.shape, -129, np.int32)
        xp[t:t + h, l:l + w] = x_q[0]
        best = np.full((oh, ow, c), -130, np.int32)
        arg_y = np.zeros((oh, ow, c), np.int64)
        arg_x = np.zeros((oh, ow, c), np.int64)
        oy_idx = np.arange(oh)[:, None, None] * sh
        ox_idx = np.arange(ow)[None, :, None] * sw
        for ky in range(kh):
            for kx in range(kw):
                v = xp[ky: ky + sh * (oh - 1) + 1: sh, kx: kx + sw * (ow - 1) + 1: sw]
                better = v > best
                best = np.where(better, v, best)
                arg_y = np.where(better, oy_idx + ky, arg_y)
                arg_x = np.where(better, ox_idx + kx, arg_x)
        cc = np.broadcast_to(np.arange(c)[None, None, :], (oh, ow, c))
        np.add.at(gx, (arg_y.ravel(), arg_x.ravel(), cc.ravel()), gy.ravel())
    return np.ascontiguousarray(gx[t:t + h, l:l + w])[None]


OPS = (AvgPool(), MaxPool(), Mean(), AvgPoolGrad(), MaxPoolGrad())
