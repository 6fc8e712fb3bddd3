"""The training steps of convs and fully connected layers: conv2d_grad_input (the input
gradient), conv2d_update (the SGD step of the weights and the bias) and dw_pw_grad (an
inverted-residual block's depthwise + 1x1 backward, channel by channel: passes/fuse_grad.py).

The conv's grad rule (ops/conv.py) makes the first two; passes/fuse_grad.py makes dw_pw_grad
out of them. Reference: float32 in the C kernels' order (reference/train.py holds the training
arithmetic: conv_grad_input, conv_update, their rounding and guard). Memory: the input gradient
of a depthwise conv may run over its output gradient (channel by channel, or backwards in raster
order), that of a 1x1 conv pixel by pixel; an update and a dw_pw_grad get float scratch; over
split weights (memory/planner.split_weights) the input gradient runs out of place. Kernels:
runtime_c/src/backward/conv_grad.c, optim/sgd.c.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinycError
from ..ir import Graph, Node
from .base import Op, TrainRun

TEMPLATE = "ops/conv_train.c.j2"
# the in-place input gradients (planner join kinds) -> their kernel kinds
INPLACE_KINDS = {"depthwise_grad": "depthwise_grad_inplace",
                 "depthwise_grad_backwards": "depthwise_grad_backwards",
                 "pointwise_grad": "pointwise_grad_inplace"}


# ---------------------------------------------------------------- in-place rules
def is_depthwise_grad(g: Graph, node: Node) -> bool:
    if node.op != "conv2d_grad_input" or node.attrs.get("fc"):
        return False
    c = g.tensors[node.outputs[0]].shape[-1]
    return node.attrs.get("groups", 1) == c == g.tensors[node.inputs[0]].shape[-1] and c > 1


def depthwise_grad_backwards_saved(g: Graph, node: Node) -> int | None:
    """Pixels of gy that tinyc_depthwise_grad_input_backwards must copy to scratch to compute a
    depthwise conv's input gradient over its output gradient (same offset, same channel count,
    gx at least as large), or None when that kernel does not apply. The kernel writes gx pixel
    P over gy pixel P in reverse raster order, so a gy pixel q is safe where no gx pixel before
    q reads it; the unsafe ones (the first rows, with large kernels) are a prefix to save."""
    if not is_depthwise_grad(g, node):
        return None
    _, oh, ow, _ = g.tensors[node.inputs[0]].shape
    _, ih, iw, _ = g.tensors[node.outputs[0]].shape
    if ih * iw < oh * ow:
        return None
    first_reader = []
    for axis, (n_out, n_in) in enumerate(((oh, ih), (ow, iw))):
        s, d = node.attrs["strides"][axis], node.attrs["dilations"][axis]
        taps = np.arange(g.tensors[node.inputs[1]].shape[1 + axis])[None, :] * d
        pos = np.arange(n_out)[:, None] * s - node.attrs["pads"][axis] + taps   # input index
        pos = np.where((pos >= 0) & (pos < n_in), pos, n_in + n_out + 1)
        first_reader.append(pos.min(axis=1))                   # > n_in: read by no pixel
    fy, fx = np.meshgrid(first_reader[0], first_reader[1], indexing="ij")
    q = np.arange(oh * ow).reshape(oh, ow)
    unsafe = ~((fy > ih) | (fx > iw)) & (fy * iw + fx < q)
    return int(q[unsafe].max()) + 1 if unsafe.any() else 0


def pointwise_grad_inplace_ok(g: Graph, node: Node) -> bool:
    """An input gradient tinyc_pointwise_grad_input_inplace can compute over its output
    gradient: a 1x1 conv, stride 1, no padding, groups 1 (not a fully connected layer)."""
    if node.op != "conv2d_grad_input" or node.attrs.get("fc"):
        return False
    w = g.tensors[node.inputs[1]]
    return (w.shape[1:3] == (1, 1) and tuple(node.attrs["strides"]) == (1, 1)
            and not any(node.attrs["pads"]) and node.attrs.get("groups", 1) == 1
            and g.tensors[node.inputs[0]].shape[1:3] == g.tensors[node.outputs[0]].shape[1:3])


def depthwise_grad_inplace_ok(g: Graph, node: Node) -> bool:
    """An input gradient tinyc_depthwise_grad_input_inplace can compute over its output
    gradient: a depthwise conv (groups == C_in == C_out) whose input and output have the same
    shape, so that gx[p, c] and gy[p, c] are the same bytes."""
    return (is_depthwise_grad(g, node)
            and g.tensors[node.inputs[0]].shape == g.tensors[node.outputs[0]].shape)


# ---------------------------------------------------------------- scratch
def update_scratch_bytes(g: Graph, node: Node) -> int:
    """Float scratch of a conv2d_update node: the weight gradient of one output channel,
    kernel_h * kernel_w * (kept input channels of one group) floats; 0 for a bias-only update."""
    channels = node.attrs.get("channels")
    if channels is None or len(channels) == 0:
        return 0
    w = g.tensors[node.inputs[2]]
    if node.attrs.get("fc"):
        kh = kw = 1
        cin_g = w.shape[1]
    else:
        _, kh, kw, cin_g = w.shape
    per_group = max(int(np.max(np.bincount(np.asarray(channels) // cin_g))), 1)
    return kh * kw * per_group * 4


def dw_pw_grad_scratch_bytes(g: Graph, node: Node) -> int:
    """Scratch of a dw_pw_grad node: one channel's plane of the depthwise output gradient (when
    the node computes it from the project's), two channels' planes of its input gradient,
    float32, then the expand layer's weight-update scratch twice, then (its weights stored
    split) two rows of them: the kernel works through the expanded channels two at a time."""
    from ..memory.planner import split_weights
    dw = node.attrs["parts"]["dw"]
    hidden = node.attrs["hidden"]
    if dw is None:   # a tail: one plane of the project's input gradient
        _, oh, ow, _ = hidden[node.attrs["parts"]["proj"].outputs[0]].shape
        return 4 * oh * ow
    _, ih, iw, _ = hidden[dw.outputs[0]].shape
    _, oh, ow, _ = hidden[dw.inputs[0]].shape if dw.inputs[0] in hidden else \
        g.tensors[dw.inputs[0]].shape
    parts = node.attrs["parts"]
    update = parts["update"]
    row = g.tensors[node.outputs[0]].shape[-1] if parts["pw"].inputs[1] in split_weights(g) else 0
    kept = update_scratch_bytes(g, update) if update is not None else 0
    return 4 * (2 * ih * iw + (oh * ow if parts["proj"] else 0)) + 2 * kept + 2 * row


def dw_pw_grad_roomy_bytes(g: Graph, node: Node) -> int:
    """The faster scratch of a dw_pw_grad node whose expand weights are trained (1x1, stride 1,
    no padding, groups 1: tinyc_update_pair_ok), 0 for the others: dw_pw_grad_scratch_bytes
    rounded up to 4, then the expand layer's saved input as floats (tinyc_update_x_float), which
    the weight gradients read instead of dequantizing each int8 value again for every pair of
    expanded channels. The planner gives it only where the arena has room (never grows it)."""
    parts = node.attrs["parts"]
    update = parts["update"]
    if parts["dw"] is None or update is None or not update_scratch_bytes(g, update):
        return 0
    a = update.attrs
    if (a.get("fc") or tuple(g.tensors[update.inputs[2]].shape[1:3]) != (1, 1)
            or tuple(a["strides"]) != (1, 1) or any(a["pads"]) or int(a.get("groups", 1)) != 1):
        return 0
    _, ih, iw, _ = node.attrs["hidden"][parts["dw"].outputs[0]].shape
    base = dw_pw_grad_scratch_bytes(g, node)
    return (base + 3) // 4 * 4 + ih * iw * update_scratch_bytes(g, update)


# ---------------------------------------------------------------- the ops
class Conv2dGradInput(Op):
    """g_x from g_y and the (int8) weights: for o, ky, kx, oy, ox, i of o's group,
    g_x[iy, ix, i] += g_y[oy, ox, o] * (s_w[o] * w[o, ky, kx, i])."""
    name = "conv2d_grad_input"
    backward = True
    sources = {"conv2d_grad_input": "backward/conv_grad.c",
               "conv2d_grad_input_split": "backward/conv_grad.c",
               "depthwise_grad_inplace": "backward/conv_grad.c",
               "depthwise_grad_backwards": "backward/conv_grad.c",
               "pointwise_grad_inplace": "backward/conv_grad.c"}

    def run_train(self, g, node, env, run: TrainRun):
        from ..reference.train import conv_grad_input
        x_shape = g.tensors[node.outputs[0]].shape
        return conv_grad_input(env[node.inputs[0]], g.tensors[node.inputs[1]].data, node.attrs,
                               x_shape)

    def plan(self, ctx, i, node):
        """Over its dying output gradient: a depthwise conv's channel by channel through one
        float channel of scratch (same shapes) or backwards in raster order (a prefix of gy
        saved where a large kernel needs it), a 1x1 conv's pixel by pixel through one pixel.
        Over split weights: out of place (its output gradient outlives it anyway: the weight
        update after it reads it)."""
        g, dies_at, join = ctx.g, ctx.dies_at, ctx.join
        if not ctx.inplace or node.inputs[1] in ctx.split:
            return
        out = node.outputs[0]
        if depthwise_grad_inplace_ok(g, node) and dies_at(node.inputs[0], i):
            join(i, node.inputs[0], out, "depthwise_grad")
            _, h, w, _ = g.tensors[node.inputs[0]].shape
            ctx.scratch[i] = 4 * h * w     # one channel of the output gradient, float32
        elif (ctx.pointwise_grad and pointwise_grad_inplace_ok(g, node)
              and dies_at(node.inputs[0], i)):
            join(i, node.inputs[0], out, "pointwise_grad")
            ctx.scratch[i] = 4 * g.tensors[out].shape[-1]   # one pixel of the input gradient
        elif dies_at(node.inputs[0], i):
            saved = depthwise_grad_backwards_saved(g, node)
            gy = g.tensors[node.inputs[0]]
            if saved is not None and saved * gy.shape[-1] < gy.size:   # saves memory
                join(i, node.inputs[0], out, "depthwise_grad_backwards")
                if saved:
                    ctx.scratch[i] = 4 * saved * gy.shape[-1]

    def layer(self, g, node, i, plan, consts, params):
        L = dict(kind=node.op, template=TEMPLATE,
                 **_conv_train_params(g, node, i, plan, consts, params))
        inplace = plan.inplace.get(i)
        if params.is_split(node.inputs[1]):
            if inplace is not None:
                raise TinycError(f"{node.describe()}: the input gradient over split weights "
                                 "runs out of place")
            L.update(kind="conv2d_grad_input_split")
        if inplace in INPLACE_KINDS:
            if plan.tensor_offsets[node.inputs[0]] != plan.tensor_offsets[node.outputs[0]]:
                raise TinycError(f"{node.describe()}: an in-place input gradient needs its "
                                 "output planned over its input")
            L.update(kind=INPLACE_KINDS[inplace],
                     n_saved=depthwise_grad_backwards_saved(g, node) or 0)
        return L


class Conv2dUpdate(Op):
    """The SGD step of a layer's int8 weights (its kept input channels) and int32 bias, in
    place, with QAS and the guard (reference/train.py conv_update); no output."""
    name = "conv2d_update"
    backward = True
    sources = {"conv2d_update": "optim/sgd.c"}

    def run_train(self, g, node, env, run: TrainRun):
        from ..reference.train import conv_update
        wt, bt = g.tensors[node.inputs[2]], g.tensors[node.inputs[3]]
        x_q_saved = env[node.inputs[1]] if node.inputs[1] else None
        if run.observe is not None:
            run.observe(node, env[node.inputs[0]], x_q_saved)
            return None
        wt.data, bt.data = conv_update(env[node.inputs[0]], x_q_saved, wt.data, bt.data,
                                       node.attrs, run.lr, run.step, run.guard)
        return None

    def updates(self, node):
        return [node]

    def plan(self, ctx, i, node):
        """A float scratch for one output channel's weight gradient."""
        size = update_scratch_bytes(ctx.g, node)
        if size:
            ctx.scratch[i] = size

    def layer(self, g, node, i, plan, consts, params):
        return dict(kind=node.op, template=TEMPLATE,
                    **_conv_train_params(g, node, i, plan, consts, params))


class DwPwGrad(Op):
    """passes/fuse_grad.py: an inverted-residual block's backward one expanded channel at a
    time. Its parts (attrs["parts"]) are ordinary nodes; the reference runs them one after the
    other (the C kernel does the same float operations in the same order per element)."""
    name = "dw_pw_grad"
    backward = True
    sources = {"dw_pw_grad": "backward/conv_grad.c"}
    PARTS = ("proj", "proj_mask", "dw_update", "dw", "mask", "pw", "update")

    def run_train(self, g, node, env, run: TrainRun):
        from .. import ops
        from ..passes.fuse_grad import with_hidden_tensors
        view = with_hidden_tensors(g, node)   # the parts' gradients it never materialises
        local = dict(env)
        for key in self.PARTS:
            n = node.attrs["parts"][key]
            if n is None:
                continue
            out = ops.get(n).run_train(view, n, local, run)
            if out is not None:
                local[n.outputs[0]] = out
        return local[node.outputs[0]] if node.outputs else None   # a tail has no output

    def updates(self, node):
        parts = node.attrs["parts"]
        return [u for u in (parts["dw_update"], parts["update"]) if u]

    def mask_read(self, node, y):
        if y in (node.inputs[2], node.inputs[4]) and node.inputs.count(y) == 1:
            mask = node.attrs["parts"]["proj_mask" if y == node.inputs[2] else "mask"]
            return mask.attrs["lo"], mask.attrs["hi"]
        return None

    def plan(self, ctx, i, node):
        """Float32 planes of one channel: of g_d (with a head), g_e (dw_pw_grad_scratch_bytes)."""
        ctx.scratch[i] = dw_pw_grad_scratch_bytes(ctx.g, node)
        roomy = dw_pw_grad_roomy_bytes(ctx.g, node)
        if roomy:
            ctx.roomy[i] = roomy   # the expand layer's input as floats too, where there is room

    def layer(self, g, node, i, plan, consts, params):
        return dict(kind=node.op, template=TEMPLATE,
                    **_dw_pw_grad_params(g, node, i, plan, consts, params))


# ---------------------------------------------------------------- C call parameters
def _conv_train_params(g: Graph, node: Node, i: int, plan, consts, params) -> dict:
    from ..codegen.c import c_float, kept_channels
    a = node.attrs
    g_y = g.tensors[node.inputs[0]]
    w = g.tensors[node.inputs[1] if node.op == "conv2d_grad_input" else node.inputs[2]]
    cout = g_y.shape[-1]
    if a["fc"]:
        kh = kw = 1
        cin = w.shape[1]
        ih = iw = oh = ow = 1
    else:
        _, kh, kw, cin_g = w.shape
        cin = cin_g * int(a["groups"])
        _, oh, ow, _ = g_y.shape
        ih, iw = _conv_input_hw(g, node)
    geometry = dict(in_h=ih, in_w=iw, in_c=cin, out_h=oh, out_w=ow, out_c=cout, kernel_h=kh,
                    kernel_w=kw, stride_h=a["strides"][0], stride_w=a["strides"][1],
                    dilation_h=a["dilations"][0], dilation_w=a["dilations"][1],
                    pad_top=a["pads"][0], pad_left=a["pads"][1], groups=int(a["groups"]))
    geometry = {k: int(v) for k, v in geometry.items()}
    wc = f"{w.name} {tuple(w.shape)}"
    if node.op == "conv2d_grad_input":
        ref = params.split_ref if params.is_split(w.name) else params.ref
        return dict(ptype="tinyc_conv_grad_params", params=geometry,
                    weights=ref(consts, w.name, f"tinyc_w{i}", wc),
                    w_scale=consts.add(f"w_scale:{w.name}", f"tinyc_ws{i}", "float",
                                       np.asarray(a["w_scale"], np.float32),
                                       f"scales of {w.name}"))
    b = g.tensors[node.inputs[3]]
    channels = a["channels"]
    k = 0 if channels is None else len(channels)
    full = k == cin and k > 0 and np.array_equal(np.asarray(channels), np.arange(cin))
    f_w = np.asarray(a["f_w"], np.float32)
    f_b = np.asarray(a["f_b"], np.float32)
    return dict(
        ptype="tinyc_conv_update_params",
        params=dict(conv=geometry, num_channels=k, x_zero_point=int(a["x_zero_point"]),
                    x_scale=c_float(a["x_scale"]), stochastic=int(a["rounding"] == "stochastic"),
                    salt=f"{int(a['salt']) & 0xFFFFFFFF}u",
                    split_weights=int(k > 0 and params.is_split(w.name))),
        x_off=plan.tensor_offsets[node.inputs[1]] if k else None,
        channels="NULL" if full or not k else kept_channels(consts, w.name, channels),
        weights=params.ref(consts, w.name, f"tinyc_w{i}", wc) if k else "NULL",
        bias=params.ref(consts, b.name, f"tinyc_b{i}", b.name) if a["update_bias"] else "NULL",
        f_w=consts.add(f"f_w{i}", f"tinyc_fw{i}", "float", f_w, "weight step factors") if k
        else "NULL",
        f_b=consts.add(f"f_b{i}", f"tinyc_fb{i}", "float", f_b, "bias step factors")
        if a["update_bias"] else "NULL")


def _dw_pw_grad_params(g: Graph, node: Node, i: int, plan, consts, params) -> dict:
    """tinyc_depthwise_pointwise_grad's parameters and arrays: its parts' (passes/fuse_grad.py)."""
    from ..codegen.c import c_float
    from ..passes.fuse_grad import with_hidden_tensors
    parts = node.attrs["parts"]
    view = with_hidden_tensors(g, node)
    body = parts["dw"] is not None   # else a tail: the project's part alone
    split = body and params.is_split(parts["pw"].inputs[1])   # read through tinyc_split_row
    conv = {key: _conv_train_params(view, parts[key], f"{i}_{key}", plan, consts, params)
            for key in ("proj", "dw", "pw", "dw_update", "update") if parts[key] is not None}
    # the depthwise layer's geometry (a tail has only its bias step's)
    dw_geometry = conv["dw"]["params"] if body else conv["dw_update"]["params"]["conv"]

    def bounds(mask: Node | None) -> tuple[int, int]:
        if mask is None:
            return -129, 128
        lo, hi = mask.attrs["lo"], mask.attrs["hi"]
        return -129 if lo is None else int(lo), 128 if hi is None else int(hi)

    def mask_args(act: str) -> tuple[str, str]:
        if not act:
            return "NULL", "NULL"
        m = plan.masks.get(act)
        if m is not None:
            return f"TINYC_U8({plan.tensor_offsets[m['name']]})", "NULL"
        return "NULL", f"TINYC_AT({plan.tensor_offsets[act]})"

    def update(key: str) -> dict:   # a bias step's parameters; zeros when there is none
        if key in conv:
            return conv[key]["params"]
        return dict(conv=dw_geometry, num_channels=0, x_zero_point=0,
                    x_scale=c_float(0.0), stochastic=0, salt="0u")

    dlo, dhi = bounds(parts["proj_mask"])
    lo, hi = bounds(parts["mask"])
    dmask, d_act = mask_args(node.inputs[2])
    mask, act = mask_args(node.inputs[4])
    io = dict(gy=_float_ptr(plan, node.inputs[0]),
              proj_w=conv["proj"]["weights"] if "proj" in conv else "NULL",
              proj_scale=conv["proj"]["w_scale"] if "proj" in conv else "NULL",
              dmask_bits=dmask, d_act=d_act,
              dw_bias=conv["dw_update"]["bias"] if "dw_update" in conv else "NULL",
              dw_f_b=conv["dw_update"]["f_b"] if "dw_update" in conv else "NULL",
              dw_w=conv["dw"]["weights"] if body else "NULL",
              dw_scale=conv["dw"]["w_scale"] if body else "NULL",
              mask_bits=mask, act=act,
              pw_w="NULL" if split or not body else conv["pw"]["weights"],
              pw_split=conv["pw"]["weights"] if split else "NULL",
              pw_scale=conv["pw"]["w_scale"] if body else "NULL",
              bias=conv["update"]["bias"] if "update" in conv else "NULL",
              f_b=conv["update"]["f_b"] if "update" in conv else "NULL",
              weights=conv["update"]["weights"] if "update" in conv else "NULL",
              f_w=conv["update"]["f_w"] if "update" in conv else "NULL",
              x=f"TINYC_AT({plan.tensor_offsets[node.inputs[8]]})" if node.inputs[8] else "NULL",
              channels=conv["update"]["channels"] if "update" in conv else "NULL",
              scratch=f"TINYC_F({plan.scratch[i][0]})",
              gx=_float_ptr(plan, node.outputs[0]) if body else "NULL")
    proj_c = g.tensors[node.inputs[0]].shape[-1] if parts["proj"] is not None else 0
    roomy = dw_pw_grad_roomy_bytes(g, node)   # given by the planner: the input as floats too
    return dict(ptype="tinyc_dw_pw_grad_params", io=io,
                params=dict(dw=dw_geometry,
                            in_c=g.tensors[node.outputs[0]].shape[-1] if body else 0,
                            proj_c=proj_c, mask_lo=lo, mask_hi=hi, dmask_lo=dlo, dmask_hi=dhi,
                            update=update("update"), dw_update=update("dw_update"),
                            x_float=int(plan.scratch[i][1] >= roomy > 0)))


def _float_ptr(plan, tensor: str) -> str:
    return f"TINYC_F({plan.tensor_offsets[tensor]})"


def _conv_input_hw(g: Graph, node: Node) -> tuple[int, int]:
    """Spatial size of a conv's input: of the gradient it produces, the saved input, or the
    forward conv's input."""
    if node.op == "conv2d_grad_input":
        return tuple(g.tensors[node.outputs[0]].shape[1:3])
    if node.inputs[1]:
        return tuple(g.tensors[node.inputs[1]].shape[1:3])
    fwd = next(n for n in g.nodes if n.op in ("conv2d", "fully_connected")
               and n.inputs[1] == node.inputs[2])
    return tuple(g.tensors[fwd.inputs[0]].shape[1:3])


OPS = (Conv2dGradInput(), Conv2dUpdate(), DwPwGrad())
