"""gather_channels: output channel k is input channel channels[k], at every pixel (NHWC).

Import: Split and Slice on the channel axis (ShuffleNetV2's and GhostNet's halves, MixNet's
groups; a Slice of rows / columns is a crop, compiler/ops/data.py), and the channel shuffle ONNX exporters write as Reshape (1, g, C/g, H, W) -> Transpose
(0, 2, 1, 3, 4) -> Reshape (1, C, H, W) (compiler/ops/data.py's Reshape and Transpose rules see
the pattern through the importer's views). int8: bytes copied, the output keeps the input's
parameters; TFLite GATHER on axis 3. In place when the channels only move towards the start
(Slice, Split); a shuffle gets its own buffer. Gradient: each input channel gets the sum of the
output gradients that read it (grad_gather_channels). Kernels: runtime_c/src/forward/data.c,
backward/elementwise_grad.c.
"""
from __future__ import annotations

import numpy as np

from ..ir import Node
from .base import Op, TrainRun

F32 = np.float32
TEMPLATE = "ops/data.c.j2"


def _axis(imp, node, rank: int, a: dict) -> int:
    axis = int(a.get("axis", 0))
    if axis % rank != 1 or rank != 4:
        raise imp.err(node, f"{node.op_type} on axis {axis} of a rank-{rank} tensor is not "
                            "supported; only on the channels (axis 1) of an N,C,H,W tensor")
    return 1


def emit_gather(imp, node, x, channels, out_name: str) -> None:
    out = imp.new_act(out_name, x.shape[:-1] + (len(channels),))
    imp.emit(node, "gather_channels", [x.name], [out], channels=[int(c) for c in channels])


def _import_split(imp, node) -> None:
    a = imp.attrs(node)
    x = imp.act(node.input[0], node)
    _axis(imp, node, len(x.shape), a)
    c = x.shape[-1]
    outs = [o for o in node.output]
    if len(node.input) > 1 and node.input[1]:
        sizes = imp.int_list(node.input[1], node, "the split sizes")
    elif "split" in a:
        sizes = [int(s) for s in a["split"]]
    else:
        n = int(a.get("num_outputs", len(outs)))
        sizes = [-(-c // n)] * (n - 1) + [c - (n - 1) * -(-c // n)]
    if len(sizes) != len(outs) or min(sizes) < 1 or sum(sizes) != c:
        raise imp.err(node, f"split sizes {sizes} do not cut {c} channels into {len(outs)} parts")
    start = 0
    for size, out in zip(sizes, outs):
        if out:
            emit_gather(imp, node, x, range(start, start + size), out)
        start += size


def _import_slice(imp, node) -> None:
    x = imp.act(node.input[0], node)
    if len(node.input) < 3:   # opset < 10: attributes
        a = imp.attrs(node)
        starts, ends, axes, steps = a.get("starts"), a.get("ends"), a.get("axes"), None
    else:
        starts = imp.int_list(node.input[1], node, "Slice's starts")
        ends = imp.int_list(node.input[2], node, "Slice's ends")
        axes = (imp.int_list(node.input[3], node, "Slice's axes")
                if len(node.input) > 3 and node.input[3] else None)
        steps = (imp.int_list(node.input[4], node, "Slice's steps")
                 if len(node.input) > 4 and node.input[4] else None)
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if len(x.shape) != 4:
        raise imp.err(node, f"Slice of a {len(x.shape)}-D tensor is not supported (only N,C,H,W)")
    _, h, w, c = x.shape
    picked = {1: range(c), 2: range(h), 3: range(w)}
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= 4
        if axis == 0 and len(range(1)[slice(start, end, step)]) == 1:
            continue   # the whole batch
        if axis == 0 or (axis != 1 and step != 1):
            raise imp.err(node, f"Slice on axis {axis} with step {step} is not supported; only "
                                "on channels (any step) or rows / columns (step 1)")
        picked[axis] = picked[axis][slice(start, end, step)]
        if not len(picked[axis]):
            raise imp.err(node, f"Slice [{start}:{end}:{step}] of axis {axis} is empty")
    out = node.output[0]
    rows, cols = picked[2], picked[3]
    if (len(rows), len(cols)) != (h, w):   # a window of rows and columns: a crop
        win = out if len(picked[1]) == c else out + "/window"
        imp.emit(node, "crop", [x.name], [imp.new_act(win, (1, len(rows), len(cols), c))],
                 origin=(rows.start, cols.start))
        x = imp.tensors[win]
    if list(picked[1]) != list(range(c)):
        emit_gather(imp, node, x, list(picked[1]), out)
    elif x.name != out and out not in imp.tensors:
        imp.alias[out] = x.name   # takes everything


def _channels_layer(g, node, i, consts, full) -> dict:
    """The C call of a gather or its gradient: `full` is the tensor with every channel."""
    ch = np.asarray(node.attrs["channels"], np.int64)
    return dict(kind=node.op, template=TEMPLATE,
                params=dict(pixels=full.size // full.shape[-1], in_c=full.shape[-1],
                            count=len(ch)),
                channels=consts.add(f"channels{i}", f"tinyc_ch{i}", "int32_t", ch,
                                    f"channels of {node.inputs[0]}"))


class GatherChannels(Op):
    name = "gather_channels"
    onnx = {"Split": (_import_split, (1, 2)), "Slice": (_import_slice, (1, 5))}
    pass_through_q = True
    patchable = True
    sources = {"gather_channels": "data.c"}

    def run_float(self, g, node, env):
        return np.ascontiguousarray(env[node.inputs[0]][..., node.attrs["channels"]])

    def run_int8(self, g, node, env):
        return np.ascontiguousarray(env[node.inputs[0]][..., node.attrs["channels"]])

    def quantize(self, g, node):
        return {}

    def plan(self, ctx, i, node):
        # output byte (p, k) comes from input byte (p, channels[k]): never from behind it when
        # the channels rise from the first ones on (a Slice or Split), so it may run in place
        ch = node.attrs["channels"]
        rising = all(b > a for a, b in zip(ch, ch[1:])) and all(c >= k for k, c in enumerate(ch))
        if ctx.inplace and rising and ctx.dies_at(node.inputs[0], i):
            ctx.join(i, node.inputs[0], node.outputs[0], "compact")

    def grad(self, ad, node, g_out, need):
        if need:
            g_x = ad.new_grad(node.inputs[0])
            ad.emit(Node(node.name + "/grad", "grad_gather_channels", [g_out], [g_x],
                         {"channels": node.attrs["channels"]}))
            ad.give_grad(node.inputs[0], g_x, node)

    def layer(self, g, node, i, plan, consts, params):
        return _channels_layer(g, node, i, consts, g.tensors[node.inputs[0]])

    def tflite(self, x, node):
        idx = x.const_i32(f"{node.name}_channels", np.asarray(node.attrs["channels"], np.int32))
        opt = x.fb.GatherOptionsT()
        opt.axis = 3
        x.op("GATHER", [x.tensor(node.inputs[0]), idx], [x.tensor(node.outputs[0])], opt,
             "GatherOptions")

    def onnx_export(self, x, node, raw):
        idx = x.const(raw + "_channels", np.asarray(node.attrs["channels"]), np.int64)
        x.add("Gather", [node.inputs[0], idx], [raw], name=node.name, axis=1)


class GradGatherChannels(Op):
    """g_x[p, c] = sum of g_y[p, k] over the k with channels[k] == c (0 where none)."""
    name = "grad_gather_channels"
    backward = True
    sources = {"grad_gather_channels": "backward/elementwise_grad.c"}

    def run_train(self, g, node, env, run: TrainRun):
        gy = env[node.inputs[0]]
        gx = np.zeros(g.tensors[node.outputs[0]].shape, F32)
        for k, c in enumerate(node.attrs["channels"]):   # in the C kernel's order
            gx[..., c] = (gx[..., c] + gy[..., k]).astype(F32)
        return gx

    def layer(self, g, node, i, plan, consts, params):
        return _channels_layer(g, node, i, consts, g.tensors[node.outputs[0]])


OPS = (GatherChannels(), GradGatherChannels())
