"""Data movement: pad, concat (channels), reshape (a flatten: an alias), the crop and paste of
patch schedules, and the training step's select_channels, pad_grad and slice_grad.

Import: Pad (constant, H and W only), Concat (channels), Flatten, Reshape, Squeeze, Unsqueeze and
Transpose where they keep the bytes in place: a flatten to 2-D (an N,C,H,W flatten's reader takes
its weights in the IR's H,W,C order: passes/flatten_order.py), (1, C, 1, 1) <-> (1, C), a Transpose
to N,H,W,C read by a flatten (Keras-origin models) or by the inverse Transpose; the 5-D Reshape and
Transpose of a channel shuffle become one gather_channels (compiler/ops/channels.py). A
Transpose / 5-D Reshape is held as a view (the importer's `views`) until its reader says which
of these it is. int8: pad
writes the quantized pad value; concat copies bytes, so its inputs share its output parameters
(the quantizer retargets or requantizes them); reshape and pad keep their input's parameters.
Patch schedules (passes/patch.py) create crop and paste themselves. Kernels:
runtime_c/src/forward/data.c, backward/elementwise_grad.c.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinycError
from ..ir import Node, Tensor
from ..reference.common import crop, paste
from .base import Op, TrainRun

TEMPLATE = "ops/data.c.j2"


# ---------------------------------------------------------------- ONNX import
def _to_2d(imp, node, x) -> None:
    """Flatten (1, H, W, C) to (1, H*W*C) in ONNX's (C, H, W) order."""
    out = imp.new_act(node.output[0], (1, x.size))
    nchw = len(x.shape) == 4 and x.shape[1] * x.shape[2] > 1 and x.shape[3] > 1
    imp.emit(node, "reshape", [x.name], [out], nchw_order=nchw, nchw_shape=x.shape)


def onnx_shape(shape) -> tuple[int, ...]:
    """The ONNX view of an IR shape: (1, H, W, C) -> (1, C, H, W); other ranks as they are."""
    shape = tuple(shape)
    return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape


def _same_bytes(shape) -> bool:
    """The tensor's ONNX order (N, C, H, W or N, C, L) is its IR order (N, H, W, C): a reshape
    is a view."""
    if len(shape) == 3:
        return shape[1] == 1 or shape[2] == 1
    return len(shape) != 4 or shape[1] == 1 or shape[2] * shape[3] == 1


def _target(imp, node, src, spec) -> tuple[int, ...]:
    """Reshape's target (0: the input's dimension, -1: the rest) for an input of ONNX shape src."""
    shape = [src[k] if d == 0 and k < len(src) else d for k, d in enumerate(spec)]
    size = int(np.prod(src))
    if shape.count(-1) == 1:
        rest = int(np.prod([d for d in shape if d != -1]))
        shape[shape.index(-1)] = size // rest if rest and size % rest == 0 else -2
    if min(shape, default=0) < 1 or int(np.prod(shape)) != size:
        raise imp.err(node, f"cannot reshape {list(src)} to {list(spec)}")
    return tuple(shape)


def _reshape_to(imp, node, x, shape) -> None:
    """x (IR) as the ONNX shape `shape`: a flatten to 2-D, or a view that keeps its bytes."""
    src = imp.onnx_shape(x)
    if tuple(shape) == tuple(src):
        imp.alias[node.output[0]] = x.name   # the same shape: nothing to do
    elif len(shape) == 2 and shape[0] == 1:
        _to_2d(imp, node, x)
    elif shape[0] == 1 and len(shape) in (2, 3, 4) and _same_bytes(src) and _same_bytes(shape):
        ir = {4: lambda: (1, shape[2], shape[3], shape[1]), 3: lambda: (1, 1, shape[2], shape[1]),
              2: lambda: tuple(shape)}[len(shape)]()
        out = imp.new_act(node.output[0], ir)
        imp.emit(node, "reshape", [x.name], [out], nchw_order=False)
        if len(shape) == 3:
            imp.lifted.add(out)
    else:
        raise imp.err(node, f"{node.op_type} of {list(src)} to {list(shape)} is not supported; "
                            "only a flatten to 2-D, a view that keeps the bytes in place (e.g. "
                            "(1, C, 1, 1) <-> (1, C)) or a channel shuffle")


def _nhwc_view_to_2d(imp, node, view) -> None:
    """A Transpose to N,H,W,C then a flatten (Keras-origin models): the IR's own byte order."""
    x = imp.tensors[view["source"]]
    imp.emit(node, "reshape", [x.name], [imp.new_act(node.output[0], (1, x.size))],
             nchw_order=False)


def _import_flatten(imp, node) -> None:
    name = imp.alias.get(node.input[0], node.input[0])
    axis = int(imp.attrs(node).get("axis", 1))
    if name in imp.views and imp.views[name]["kind"] == "nhwc" and axis == 1:
        _nhwc_view_to_2d(imp, node, imp.views[name])
        return
    x = imp.act(node.input[0], node)
    if axis % len(x.shape) != 1:
        raise imp.err(node, f"Flatten axis={axis} is not supported (only axis=1)")
    _to_2d(imp, node, x)


def _import_reshape(imp, node) -> None:
    from .channels import emit_gather
    name = imp.alias.get(node.input[0], node.input[0])
    spec = imp.int_list(node.input[1], node, "the target shape")
    view = imp.views.get(name)
    if view is not None:
        shape = _target(imp, node, view["shape"], spec)
        if view["kind"] == "nhwc" and len(shape) == 2 and shape[0] == 1:
            _nhwc_view_to_2d(imp, node, view)
            return
        x = imp.tensors[view["source"]]
        if view["kind"] == "shuffled" and shape == imp.onnx_shape(x):
            g, c = view["groups"], x.shape[-1]
            # output channel b * g + a is input channel a * (C / g) + b
            emit_gather(imp, node, x, [(o % g) * (c // g) + o // g for o in range(c)],
                        node.output[0])
            return
        imp.act(node.input[0], node)   # the view's error
    x = imp.act(node.input[0], node)
    src = imp.onnx_shape(x)
    shape = _target(imp, node, src, spec)
    if len(shape) == 5 and len(src) == 4 and shape[0] == 1 and shape[1] * shape[2] == src[1] \
            and shape[3:] == src[2:]:
        imp.views[node.output[0]] = dict(
            kind="grouped", source=x.name, groups=shape[1], shape=shape, node=node.name,
            what="a (1, groups, C / groups, H, W) view", readers="a Transpose (0, 2, 1, 3, 4)")
        return
    _reshape_to(imp, node, x, shape)


def _axes(imp, node, what: str) -> list[int]:
    if len(node.input) > 1 and node.input[1]:
        return imp.int_list(node.input[1], node, f"{what}'s axes")
    return [int(a) for a in imp.attrs(node).get("axes", [])]


def _import_squeeze(imp, node) -> None:
    x = imp.act(node.input[0], node)
    src = imp.onnx_shape(x)
    axes = {a % len(src) for a in _axes(imp, node, "Squeeze")} or \
        {k for k, d in enumerate(src) if d == 1 and k > 0}
    if 0 in axes or any(src[a] != 1 for a in axes):
        raise imp.err(node, f"Squeeze of axes {sorted(axes)} of {list(src)}: only size-1 axes "
                            "other than the batch can go")
    _reshape_to(imp, node, x, tuple(d for k, d in enumerate(src) if k not in axes))


def _import_unsqueeze(imp, node) -> None:
    x = imp.act(node.input[0], node)
    shape = list(imp.onnx_shape(x))
    rank = len(shape) + len(_axes(imp, node, "Unsqueeze"))
    for a in sorted(a % rank for a in _axes(imp, node, "Unsqueeze")):
        shape.insert(a, 1)
    _reshape_to(imp, node, x, tuple(shape))


def _import_transpose(imp, node) -> None:
    name = imp.alias.get(node.input[0], node.input[0])
    view = imp.views.get(name)
    perm = [int(p) for p in imp.attrs(node).get("perm", [])]
    if view is not None:
        if view["kind"] == "grouped" and perm == [0, 2, 1, 3, 4]:
            imp.views[node.output[0]] = dict(
                view, kind="shuffled", node=node.name, shape=tuple(view["shape"][k] for k in perm),
                what="a channel shuffle's transposed 5-D view", readers="a Reshape back to 4-D")
            return
        if view["kind"] == "nhwc" and perm == [0, 3, 1, 2]:
            imp.alias[node.output[0]] = view["source"]   # back to N,C,H,W: the IR tensor
            return
        imp.act(node.input[0], node)   # the view's error
    x = imp.act(node.input[0], node)
    if imp.input_nhwc and x.name == imp.model.graph.input[0].name and perm == [0, 3, 1, 2]:
        imp.alias[node.output[0]] = x.name   # an N,H,W,C input to N,C,H,W: the IR tensor
        return
    src = imp.onnx_shape(x)
    perm = perm or list(range(len(src)))[::-1]
    if sorted(perm) != list(range(len(src))):
        raise imp.err(node, f"perm {perm} is not a permutation of the {len(src)} axes")
    moved = [p for p in perm if src[p] != 1]
    if moved == sorted(moved):
        _reshape_to(imp, node, x, tuple(src[p] for p in perm))   # only size-1 axes move
        return
    if len(src) == 4 and perm == [0, 2, 3, 1]:
        imp.views[node.output[0]] = dict(
            kind="nhwc", source=x.name, shape=tuple(src[p] for p in perm), node=node.name,
            what="an N,H,W,C view", readers="Flatten, a Reshape to 2-D or the Transpose back")
        return
    if len(src) == 4 and perm[0] == 0:   # a real permutation of C, H, W: a transpose kernel
        onnx_out = tuple(src[p] for p in perm)
        to_ir = (0, 3, 1, 2)     # the ONNX axes of the IR's (N, H, W, C)
        ir_perm = tuple(to_ir[perm[k]] for k in (0, 2, 3, 1))
        out = imp.new_act(node.output[0], (1, onnx_out[2], onnx_out[3], onnx_out[1]))
        imp.emit(node, "transpose", [x.name], [out], perm=ir_perm)
        return
    raise imp.err(node, f"Transpose {perm} of {list(src)} is not supported; only permutations "
                        "of the C, H, W axes of an N,C,H,W tensor (and layout changes that a "
                        "flatten reads, or a channel shuffle)")


def _import_concat(imp, node) -> None:
    xs = [imp.act(i, node) for i in node.input]
    if "axis" not in imp.attrs(node):
        raise imp.err(node, "the axis attribute is missing")
    axis = int(imp.attrs(node)["axis"])
    rank = len(xs[0].shape)
    if axis % rank != 1:
        raise imp.err(node, f"Concat on axis {axis} is not supported (only channels, axis 1)")
    for x in xs[1:]:
        if len(x.shape) != rank or x.shape[:-1] != xs[0].shape[:-1]:
            raise imp.err(node, f"inputs {[x.shape for x in xs]} differ outside the channel axis")
    shape = xs[0].shape[:-1] + (sum(x.shape[-1] for x in xs),)
    out = imp.new_act(node.output[0], shape)
    imp.emit(node, "concat", [x.name for x in xs], [out])


def _import_pad(imp, node) -> None:
    a = imp.attrs(node)
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise imp.err(node, f"Pad mode '{mode}' is not supported (only constant)")
    x = imp.act(node.input[0], node)
    if len(x.shape) != 4:
        raise imp.err(node, f"needs a 4-D input, got {x.shape}")
    p = imp.int_list(node.input[1], node, "the pads")
    if len(node.input) > 3 and node.input[3]:
        raise imp.err(node, "Pad with an 'axes' input is not supported")
    if len(p) != 8 or p[0] or p[1] or p[4] or p[5]:
        raise imp.err(node, f"pads {p} are not supported: only H and W may be padded")
    if min(p) < 0:
        raise imp.err(node, f"negative pads (cropping) {p} are not supported")
    value = 0.0
    if len(node.input) > 2 and node.input[2]:
        value = imp.scalar(node.input[2], node, "the pad value")
    _, h, w, c = x.shape
    pads = (p[2], p[3], p[6], p[7])
    out = imp.new_act(node.output[0], (1, h + p[2] + p[6], w + p[3] + p[7], c))
    imp.emit(node, "pad", [x.name], [out], pads=pads, value=value)


# ---------------------------------------------------------------- forward ops
class Pad(Op):
    name = "pad"
    onnx = {"Pad": (_import_pad, (2, 4))}
    pass_through_q = True
    patchable = True
    sources = {"pad": "data.c"}

    def run_float(self, g, node, env):
        t, l, b_, r = node.attrs["pads"]
        return np.pad(env[node.inputs[0]], ((0, 0), (t, b_), (l, r), (0, 0)),
                      constant_values=node.attrs["value"]).astype(np.float32)

    def run_int8(self, g, node, env):
        t, l, b_, r = node.attrs["pads"]
        return np.pad(env[node.inputs[0]], ((0, 0), (t, b_), (l, r), (0, 0)),
                      constant_values=node.attrs["q"]["pad_value"])

    def quantize(self, g, node):
        from ..passes.quantize import quantize_value
        return dict(pad_value=quantize_value(g.tensors[node.inputs[0]].q, node.attrs["value"]))

    def grad(self, ad, node, g_out, need):
        if need:
            g_x = ad.new_grad(node.inputs[0])
            ad.emit(Node(node.name + "/grad", "pad_grad", [g_out], [g_x],
                         {"pads": node.attrs["pads"]}))
            ad.give_grad(node.inputs[0], g_x, node)

    def input_interval(self, g, node, out, axis):
        p = node.attrs["pads"][axis]
        return out[0] - p, out[1] - p

    def patch_attrs(self, g, node, out_reg, in_reg):
        """The pads that make the patch's input buffer (in_reg) exactly its output (out_reg)."""
        (a, b), (c, d) = out_reg
        (r0, r1), (c0, c1) = in_reg
        t, l, _, _ = node.attrs["pads"]
        top, left = r0 - (a - t), c0 - (c - l)
        return {"pads": (top, left, b - a - top - (r1 - r0), d - c - left - (c1 - c0))}

    def layer(self, g, node, i, plan, consts, params):
        _, h, w, c = g.tensors[node.inputs[0]].shape
        t, l, b, r = node.attrs["pads"]
        return dict(kind="pad", template=TEMPLATE, ptype="tinyc_pad_params",
                    params=dict(in_h=h, in_w=w, channels=c, pad_top=t, pad_left=l,
                                pad_bottom=b, pad_right=r, value=node.attrs["q"]["pad_value"]))

    def tflite(self, x, node):
        from ..export.tflite import ExportError, _same_params
        x_name, out_name = node.inputs[0], node.outputs[0]
        xt = x.g.tensors[x_name]
        _same_params(node, xt, x.g.tensors[out_name])
        q = node.attrs.get("q") or {}
        pv = q.get("pad_value")
        if pv is None:
            raise ExportError(f"{node.describe()}: attrs['q']['pad_value'] is missing")
        t, l, b, r = (int(p) for p in node.attrs["pads"])
        paddings = x.const_i32(f"{node.name}_paddings", [[0, 0], [t, b], [l, r], [0, 0]])
        out = x.tensor(out_name)
        _, zp = xt.q.scalar()
        if int(pv) == zp:
            x.op("PAD", [x.tensor(x_name), paddings], [out], x.fb.PadOptionsT(), "PadOptions")
        else:
            v = x.const_int8_like(x_name, int(pv), f"_padvalue_{node.name}")
            x.op("PADV2", [x.tensor(x_name), paddings, v], [out], x.fb.PadV2OptionsT(),
                 "PadV2Options")

    def onnx_export(self, x, node, raw):
        t, l, b, r = node.attrs["pads"]
        out = node.outputs[0]
        x.add("Pad", [node.inputs[0], x.const(out + "_pads", [0, 0, t, l, 0, 0, b, r], np.int64),
                      x.const(out + "_value", node.attrs["value"])], [raw], name=node.name,
              mode="constant")


class Concat(Op):
    name = "concat"
    onnx = {"Concat": (_import_concat, (1, 1 << 16))}
    patchable = True
    sources = {"concat": "data.c"}

    def run_float(self, g, node, env):
        return np.concatenate([env[i] for i in node.inputs], axis=-1)

    def run_int8(self, g, node, env):
        return np.concatenate([env[i] for i in node.inputs], axis=-1)

    def out_qparams(self, g, node, q, ranges):
        """From the output's range; every input is then given these parameters."""
        from ..passes.quantize import choose_qparams
        target = choose_qparams(*ranges[node.outputs[0]])
        _unify_inputs(g, node, q, target)
        return target

    def quantize(self, g, node):
        return {}

    def grad(self, ad, node, g_out, need):
        offset = 0
        for i in node.inputs:
            c = ad.t.tensors[i].shape[-1]
            if i in need:
                g_x = ad.new_grad(i)
                ad.emit(Node(node.name + "/grad", "slice_grad", [g_out], [g_x],
                             {"offset": offset}))
                ad.give_grad(i, g_x, node)
            offset += c

    def layer(self, g, node, i, plan, consts, params):
        y = g.tensors[node.outputs[0]]
        pixels = y.size // y.shape[-1]
        parts, c0 = [], 0
        for name in node.inputs:
            c = g.tensors[name].shape[-1]
            parts.append(dict(in_c=c, c_offset=c0, in_off=plan.tensor_offsets[name]))
            c0 += c
        return dict(kind="concat", template=TEMPLATE,
                    params=dict(pixels=pixels, out_c=y.shape[-1]), parts=parts)

    def tflite(self, x, node):
        from ..export.tflite import _same_params
        out = x.g.tensors[node.outputs[0]]
        for i in node.inputs:
            _same_params(node, x.g.tensors[i], out)
        opt = x.fb.ConcatenationOptionsT()
        opt.axis = len(out.shape) - 1
        x.op("CONCATENATION", [x.tensor(i) for i in node.inputs], [x.tensor(out.name)],
             opt, "ConcatenationOptions")

    def onnx_export(self, x, node, raw):
        x.add("Concat", node.inputs, [raw], name=node.name, axis=1)


def _unify_inputs(g, node: Node, q: dict, target) -> None:
    """TFLite's int8 concat copies bytes: every input must share the output's parameters
    (`target`). An input made by a requantizing op with no other reader simply gets them;
    otherwise a requantize node is inserted."""
    from ..passes.quantize import _requantizing, _same
    for k, name in enumerate(list(node.inputs)):
        if _same(q[name], target):
            continue
        prod = g.producer(name)
        if (prod is not None and _requantizing(prod) and name not in g.outputs
                and len(g.consumers(name)) == 1 and node.inputs.count(name) == 1):
            q[name] = target
            continue
        new = f"{name}_requant_{node.name}"
        g.tensors[new] = Tensor(new, g.tensors[name].shape)
        q[new] = target
        g.nodes.insert(g.nodes.index(node),
                       Node(node.name + "_requant", "requantize", [name], [new], {}, "Concat"))
        node.inputs[k] = new


class Reshape(Op):
    """A flatten to (1, N): NHWC bytes unchanged once passes/flatten_order.py reordered the
    weights of an NCHW flatten's reader, so its output is its input's memory."""
    name = "reshape"
    onnx = {"Flatten": (_import_flatten, (1, 1)), "Reshape": (_import_reshape, (2, 2)),
            "Squeeze": (_import_squeeze, (1, 2)), "Unsqueeze": (_import_unsqueeze, (1, 2)),
            "Transpose": (_import_transpose, (1, 1))}
    alias = True
    pass_through_q = True
    sources = {"alias": None, "copy": "data.c"}

    def run_float(self, g, node, env):
        return env[node.inputs[0]].reshape(g.tensors[node.outputs[0]].shape)

    def run_int8(self, g, node, env):
        return env[node.inputs[0]].reshape(g.tensors[node.outputs[0]].shape)

    def quantize(self, g, node):
        return {}

    def grad(self, ad, node, g_out, need):
        if need:
            g_x = ad.new_grad(node.inputs[0])
            ad.emit(Node(node.name + "/grad", "grad_alias", [g_out], [g_x]))
            ad.give_grad(node.inputs[0], g_x, node)

    def layer(self, g, node, i, plan, consts, params):
        same = plan.tensor_offsets[node.inputs[0]] == plan.tensor_offsets[node.outputs[0]]
        return dict(kind="alias" if same else "copy", template=TEMPLATE,
                    params=dict(size=g.tensors[node.outputs[0]].size))

    def tflite(self, x, node):
        from ..export.tflite import _reshape_options
        xt, out = x.g.tensors[node.inputs[0]], x.g.tensors[node.outputs[0]]
        shape = x.const_i32(f"{node.name}_shape", np.array(out.shape, np.int32))
        x.op("RESHAPE", [x.tensor(xt.name), shape], [x.tensor(out.name)],
             _reshape_options(x.fb, out.shape), "ReshapeOptions")

    def onnx_export(self, x, node, raw):
        if node.attrs.get("nchw_shape") is not None:
            # its readers (a fully connected layer) take their weights back to ONNX's order
            _, h, w, c = node.attrs["nchw_shape"]
            for u in x.g.consumers(node.outputs[0]):
                x.spatial_flatten[u.name] = (h, w, c)
        shape = g_shape = x.g.tensors[node.outputs[0]].shape
        if len(g_shape) != 2:   # a view to 4-D: in ONNX's N,C,H,W
            shape = onnx_shape(g_shape)
            x.add("Reshape", [node.inputs[0], x.const(raw + "_shape", shape, np.int64)], [raw],
                  name=node.name)
            return
        x.add("Flatten", node.inputs, [raw], name=node.name, axis=1)


class Transpose(Op):
    """A permutation of the H, W, C axes of an IR tensor (attrs perm: of the IR's N, H, W, C
    axes; axis 0 stays): int8 bytes moved, the input's parameters; TFLite TRANSPOSE. Gradient:
    the inverse permutation of the float gradient (grad_transpose)."""
    name = "transpose"
    pass_through_q = True
    sources = {"transpose": "data.c"}

    def run_float(self, g, node, env):
        return np.ascontiguousarray(env[node.inputs[0]].transpose(node.attrs["perm"]))

    run_int8 = run_float

    def quantize(self, g, node):
        return {}

    def grad(self, ad, node, g_out, need):
        if need:
            inverse = tuple(int(k) for k in np.argsort(node.attrs["perm"]))
            g_x = ad.new_grad(node.inputs[0])
            ad.emit(Node(node.name + "/grad", "grad_transpose", [g_out], [g_x],
                         {"perm": inverse}))
            ad.give_grad(node.inputs[0], g_x, node)

    def layer(self, g, node, i, plan, consts, params):
        return _transpose_layer(g, node, "transpose")

    def tflite(self, x, node):
        perm = x.const_i32(f"{node.name}_perm", np.asarray(node.attrs["perm"], np.int32))
        x.op("TRANSPOSE", [x.tensor(node.inputs[0]), perm], [x.tensor(node.outputs[0])],
             x.fb.TransposeOptionsT(), "TransposeOptions")

    def onnx_export(self, x, node, raw):
        to_ir, to_onnx = (0, 3, 1, 2), (0, 2, 3, 1)
        # the ONNX perm of the same permutation: ONNX out axis k = IR out axis to_onnx^-1 ...
        ir = node.attrs["perm"]
        perm = [int(np.argsort(to_ir)[ir[to_ir[k]]]) for k in range(4)]
        x.add("Transpose", node.inputs, [raw], name=node.name, perm=perm)


def _transpose_layer(g, node, kind: str) -> dict:
    """out[a, b, c] = in at the permuted position: the input strides of the output's axes."""
    x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
    strides = [int(np.prod(x.shape[k + 1:])) for k in range(4)]
    perm = node.attrs["perm"]
    return dict(kind=kind, template=TEMPLATE, ptype="tinyc_transpose_params",
                params=dict(d1=y.shape[1], d2=y.shape[2], d3=y.shape[3],
                            s1=strides[perm[1]], s2=strides[perm[2]], s3=strides[perm[3]]))


class GradTranspose(Op):
    name = "grad_transpose"
    backward = True
    sources = {"grad_transpose": "backward/elementwise_grad.c"}

    def run_train(self, g, node, env, run: TrainRun):
        return np.ascontiguousarray(env[node.inputs[0]].transpose(node.attrs["perm"]))

    def layer(self, g, node, i, plan, consts, params):
        return _transpose_layer(g, node, "grad_transpose")


# ---------------------------------------------------------------- patch schedules
def _window_params(g, node: Node, plan) -> dict:
    """crop: a window of the input -> the whole output; paste: the whole patch -> a window of
    the output, which the planner put over the accumulator (inputs[1]) in place."""
    x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
    r0, c0 = node.attrs["origin"]
    if node.op == "crop":
        rows, cols = y.shape[1:3]
        where = dict(src_w=x.shape[2], src_row0=r0, src_col0=c0, dst_w=cols, dst_row0=0,
                     dst_col0=0)
    else:
        rows, cols = x.shape[1:3]
        where = dict(src_w=cols, src_row0=0, src_col0=0, dst_w=y.shape[2], dst_row0=r0,
                     dst_col0=c0)
        if len(node.inputs) > 1 and (plan.tensor_offsets[node.inputs[1]]
                                     != plan.tensor_offsets[node.outputs[0]]):
            raise TinycError(f"{node.describe()}: a paste needs its output planned over its "
                             "accumulator")
    return dict(kind="window", template=TEMPLATE, ptype="tinyc_window_params",
                params=dict(rows=rows, cols=cols, channels=y.shape[3], **where))


class Crop(Op):
    """The window of its input starting at attrs origin=(row, col), of its output's size (a
    patch schedule's, or a Slice of rows and columns: TFLite SLICE)."""
    name = "crop"
    pass_through_q = True
    sources = {"window": "data.c"}

    def quantize(self, g, node):
        return {}

    def grad(self, ad, node, g_out, need):
        """The input gradient: the output's, with zeros around it (crop_grad)."""
        if need:
            (_, h, w, _), (_, hh, ww, _) = (ad.t.tensors[t].shape
                                            for t in (node.outputs[0], node.inputs[0]))
            r0, c0 = node.attrs["origin"]
            g_x = ad.new_grad(node.inputs[0])
            ad.emit(Node(node.name + "/grad", "crop_grad", [g_out], [g_x],
                         {"pads": (r0, c0, hh - r0 - h, ww - c0 - w)}))
            ad.give_grad(node.inputs[0], g_x, node)

    def tflite(self, x, node):
        y = x.g.tensors[node.outputs[0]]
        r0, c0 = node.attrs["origin"]
        begin = x.const_i32(f"{node.name}_begin", np.array([0, r0, c0, 0], np.int32))
        size = x.const_i32(f"{node.name}_size", np.array(y.shape, np.int32))
        x.op("SLICE", [x.tensor(node.inputs[0]), begin, size], [x.tensor(y.name)],
             x.fb.SliceOptionsT(), "SliceOptions")

    def onnx_export(self, x, node, raw):
        (_, h, w, _), (r0, c0) = x.g.tensors[node.outputs[0]].shape, node.attrs["origin"]
        x.add("Slice", [node.inputs[0], x.const(raw + "_starts", [r0, c0], np.int64),
                        x.const(raw + "_ends", [r0 + h, c0 + w], np.int64),
                        x.const(raw + "_axes", [2, 3], np.int64)], [raw], name=node.name)

    def run_float(self, g, node, env):
        return crop(env[node.inputs[0]], node.attrs["origin"], g.tensors[node.outputs[0]].shape)

    def run_int8(self, g, node, env):
        return crop(env[node.inputs[0]], node.attrs["origin"], g.tensors[node.outputs[0]].shape)

    def plan(self, ctx, i, node):
        # row by row forwards: every row lands at or before its source
        if ctx.inplace and ctx.dies_at(node.inputs[0], i):
            ctx.join(i, node.inputs[0], node.outputs[0], "crop")

    def first_byte_read(self, g, node, t):
        shape = g.tensors[t].shape
        if len(shape) != 4 or t != node.inputs[0]:
            return 0
        _, _, w, c = shape
        r0, c0 = node.attrs["origin"]
        return (r0 * w + c0) * c

    def layer(self, g, node, i, plan, consts, params):
        return _window_params(g, node, plan)


class Paste(Op):
    """Inputs [patch] or [patch, acc]: acc (or, for the first patch, uninitialised memory) with
    the patch written at attrs origin=(row, col); the split tensor is assembled in one buffer."""
    name = "paste"
    assembled = True
    sources = {"window": "data.c"}

    def run_float(self, g, node, env):
        acc = env[node.inputs[1]] if len(node.inputs) > 1 else None
        return paste(acc, env[node.inputs[0]], node.attrs["origin"],
                     g.tensors[node.outputs[0]].shape, np.float32)

    def run_int8(self, g, node, env):
        acc = env[node.inputs[1]] if len(node.inputs) > 1 else None
        return paste(acc, env[node.inputs[0]], node.attrs["origin"],
                     g.tensors[node.outputs[0]].shape, np.int8)

    def plan(self, ctx, i, node):
        # always over its accumulator (in-place kernels or not)
        if len(node.inputs) > 1:
            if not ctx.dies_at(node.inputs[1], i):
                raise TinycError(f"{node.describe()}: its accumulator is read after the paste")
            ctx.join(i, node.inputs[1], node.outputs[0], "paste")

    def written_bytes(self, g, node, held):
        _, _, w, c = g.tensors[node.outputs[0]].shape
        r0, c0 = node.attrs["origin"]
        _, ph, pw, _ = g.tensors[node.inputs[0]].shape
        end = ((r0 + ph - 1) * w + c0 + pw) * c
        prev = held(node.inputs[1]) if len(node.inputs) > 1 else 0
        return max(prev, end)

    def layer(self, g, node, i, plan, consts, params):
        return _window_params(g, node, plan)


# ---------------------------------------------------------------- training steps
class SelectChannels(Op):
    """The channels (attrs channels) of a partially updated layer's input that its weight
    update reads, kept by the forward pass of a training step (passes/autodiff.py)."""
    name = "select_channels"
    training_only = True
    sources = {"select_channels": "data.c"}   # tinyc_gather_channels

    def run_train(self, g, node, env, run: TrainRun):
        return np.ascontiguousarray(env[node.inputs[0]][..., node.attrs["channels"]])

    def layer(self, g, node, i, plan, consts, params):
        x = g.tensors[node.inputs[0]]
        ch = np.asarray(node.attrs["channels"], np.int64)
        return dict(kind=node.op, template=TEMPLATE, training_only=True,
                    params=dict(pixels=x.size // x.shape[-1], in_c=x.shape[-1], count=len(ch)),
                    channels=consts.add(f"channels{i}", f"tinyc_ch{i}", "int32_t", ch,
                                        f"channels of {node.inputs[0]} kept for the update"))


class _Compact(Op):
    """A gradient that keeps a part of its input's elements, each moved towards the buffer's
    start: it may run in place over a dying input."""
    backward = True

    def plan(self, ctx, i, node):
        if ctx.inplace and ctx.dies_at(node.inputs[0], i):
            ctx.join(i, node.inputs[0], node.outputs[0], "compact")


class PadGrad(_Compact):
    """The input gradient of a pad: the output gradient without the padded border."""
    name = "pad_grad"
    sources = {"pad_grad": "backward/elementwise_grad.c"}

    def run_train(self, g, node, env, run: TrainRun):
        t_, l_, _, _ = node.attrs["pads"]
        _, h, w, _ = g.tensors[node.outputs[0]].shape
        return np.ascontiguousarray(env[node.inputs[0]][:, t_:t_ + h, l_:l_ + w])

    def layer(self, g, node, i, plan, consts, params):
        return _zero_pad_layer(node, g.tensors[node.outputs[0]].shape)


def _zero_pad_layer(node, inner_shape) -> dict:
    """A float gradient of inner_shape placed inside attrs pads of zeros (tinyc_pad_params)."""
    _, h, w, c = inner_shape
    t, l, b, r = node.attrs["pads"]
    return dict(kind=node.op, template=TEMPLATE, ptype="tinyc_pad_params",
                params=dict(in_h=h, in_w=w, channels=c, pad_top=t, pad_left=l, pad_bottom=b,
                            pad_right=r, value=0))


class CropGrad(Op):
    """The input gradient of a crop: the output gradient placed at the window (attrs pads:
    top, left, bottom, right around it), zeros elsewhere."""
    name = "crop_grad"
    backward = True
    sources = {"crop_grad": "backward/elementwise_grad.c"}

    def run_train(self, g, node, env, run: TrainRun):
        t_, l_, b_, r_ = node.attrs["pads"]
        return np.pad(env[node.inputs[0]], ((0, 0), (t_, b_), (l_, r_), (0, 0))).astype(np.float32)

    def layer(self, g, node, i, plan, consts, params):
        return _zero_pad_layer(node, g.tensors[node.inputs[0]].shape)


class SliceGrad(_Compact):
    """The input gradient of one concat input: its channels (from attrs offset) of the output
    gradient."""
    name = "slice_grad"
    sources = {"slice_grad": "backward/elementwise_grad.c"}

    def run_train(self, g, node, env, run: TrainRun):
        c = g.tensors[node.outputs[0]].shape[-1]
        off = node.attrs["offset"]
        return np.ascontiguousarray(env[node.inputs[0]][..., off:off + c])

    def layer(self, g, node, i, plan, consts, params):
        out, g_in = g.tensors[node.outputs[0]], g.tensors[node.inputs[0]]
        return dict(kind=node.op, template=TEMPLATE,
                    params=dict(pixels=out.size // out.shape[-1], in_c=out.shape[-1],
                                out_c=g_in.shape[-1], c_offset=int(node.attrs["offset"])))


OPS = (Pad(), Concat(), Reshape(), Crop(), Paste(), SelectChannels(), PadGrad(), SliceGrad(),
       Transpose(), GradTranspose(), CropGrad())
