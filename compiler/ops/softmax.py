"""Softmax, and the losses of a training step: softmax_ce (classification), mse (--loss mse).

Import: Softmax over the last axis of a 2-D (1, N) tensor, only as the model's output. int8:
TFLite's softmax (reference/softmax.py), output scale 1/256 and zero point -128 (TFLite's
int8 kernel requires them). Training drops an output softmax (passes/train_head.py) and
computes softmax_ce on the logits: the logit gradient p - onehot(label) and the loss, in
float32 (reference/train.py's loop-order contract); the guard's step check follows it (a step
whose lr, loss or logit gradient is not finite changes nothing). Kernels:
runtime_c/src/forward/softmax.c, backward/loss.c.
"""
from __future__ import annotations

import numpy as np

from ..ir import Node, QParams
from ..reference import softmax as softmax_ref
from .base import Op, TrainRun

F32 = np.float32
TEMPLATE = "ops/softmax.c.j2"


def _import_softmax(imp, node) -> None:
    x = imp.act(node.input[0], node)
    rank = len(imp.onnx_shape(x))
    axis = int(imp.attrs(node).get("axis", -1 if imp.opset >= 13 else 1)) % rank
    if imp.opset < 13 and rank == 4 and axis == 1 and x.shape[1] * x.shape[2] > 1:
        raise imp.err(node, "Softmax (opset < 13) of a spatial tensor coerces C, H, W into one "
                            "axis; only over the channels (opset >= 13, axis 1) is supported")
    if not ((rank == 2 and axis == 1) or (rank in (3, 4) and axis == 1)):
        raise imp.err(node, f"Softmax over axis {axis} of a rank-{rank} tensor is not "
                            "supported; over the last axis of (1, N) or the channels is")
    out = imp.new_act(node.output[0], x.shape)
    imp.emit(node, "softmax", [x.name], [out])


class Softmax(Op):
    name = "softmax"
    onnx = {"Softmax": (_import_softmax, (1, 1))}
    sources = {"softmax": "softmax.c"}

    def run_float(self, g, node, env):
        x = env[node.inputs[0]]
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)

    def run_int8(self, g, node, env):
        return softmax_ref.softmax_int8(env[node.inputs[0]], node.attrs["q"])

    def out_qparams(self, g, node, q, ranges):
        return QParams(np.asarray(1.0 / 256.0, np.float32), np.asarray(-128, np.int32))

    def quantize(self, g, node):
        s_in, _ = g.tensors[node.inputs[0]].q.scalar()
        return softmax_ref.softmax_params(float(s_in))

    def layer(self, g, node, i, plan, consts, params):
        q = node.attrs["q"]
        y = g.tensors[node.outputs[0]]
        return dict(kind="softmax", template=TEMPLATE, ptype="tinyc_softmax_params",
                    params=dict(rows=y.size // y.shape[-1], depth=y.shape[-1],
                                input_multiplier=q["input_multiplier"],
                                input_left_shift=q["input_left_shift"],
                                diff_min=q["diff_min"]))

    def grad(self, ad, node, g_out, need):
        """Inside the network: g_x = p * (g_y - sum(g_y * p)) per row, p the int8 output
        dequantized (softmax_grad)."""
        if need:
            g_x = ad.new_grad(node.inputs[0])
            ad.emit(Node(node.name + "/grad", "softmax_grad", [g_out, node.outputs[0]], [g_x]))
            ad.give_grad(node.inputs[0], g_x, node)

    def tflite(self, x, node):
        from ..export.tflite import ExportError
        out = x.g.tensors[node.outputs[0]]
        scale, zp = out.q.scalar()
        if zp != -128 or np.float32(scale) != np.float32(1.0 / 256):
            raise ExportError(f"{node.describe()}: int8 softmax output must have scale 1/256 and "
                              f"zero point -128 (got {scale!r}, {zp})")
        opt = x.fb.SoftmaxOptionsT()
        opt.beta = 1.0
        x.op("SOFTMAX", [x.tensor(node.inputs[0])], [x.tensor(out.name)], opt,
             "SoftmaxOptions")

    def onnx_export(self, x, node, raw):
        x.add("Softmax", node.inputs, [raw], name=node.name, axis=-1)


class SoftmaxGrad(Op):
    name = "softmax_grad"
    backward = True
    sources = {"softmax_grad": "backward/loss.c"}

    def run_train(self, g, node, env, run: TrainRun):
        gy = env[node.inputs[0]]
        depth = gy.shape[-1]
        gr = gy.reshape(-1, depth)
        p = ((env[node.inputs[1]].astype(np.int32) + 128).astype(F32) * F32(1.0 / 256.0))
        p = p.reshape(-1, depth)
        dot = np.add.accumulate((gr * p).astype(F32), axis=1, dtype=F32)[:, -1:]
        return (p * (gr - dot).astype(F32)).astype(F32).reshape(gy.shape)

    def layer(self, g, node, i, plan, consts, params):
        y = g.tensors[node.outputs[0]]
        return dict(kind="softmax_grad", template=TEMPLATE,
                    params=dict(rows=y.size // y.shape[-1], depth=y.shape[-1]))


# ---------------------------------------------------------------- the loss
def softmax_ce(q: np.ndarray, scale: float, zp: int, label: int) -> tuple[np.ndarray, float]:
    from ..reference.train import expf
    z = F32(scale) * (q.astype(np.int32) - zp).astype(F32)
    z = z.ravel()
    m = z.max()
    e = expf(z - m)
    s = F32(0.0)
    for v in e:
        s = F32(s + v)
    p = (e / s).astype(F32)
    g = p.copy()
    g[label] = F32(g[label] - F32(1.0))
    loss = float(np.log(np.float64(s)) - np.float64(z[label] - m))
    return g.reshape(q.shape), loss


def _step_is_finite(lr: float, loss: float, grad: np.ndarray) -> bool:
    lr = F32(lr)
    return bool(lr >= 0 and np.isfinite(lr) and np.isfinite(loss) and np.isfinite(grad).all())


class _Loss(Op):
    """A training step's loss on the int8 output (attrs scale, zero_point): its float32 gradient,
    run.loss; the step is skipped (nothing updated) when lr, loss or gradient is not finite."""
    backward = True

    def loss(self, q, run: TrainRun, scale: float, zp: int):
        raise NotImplementedError

    def run_train(self, g, node, env, run: TrainRun):
        grad, run.loss = self.loss(env[node.inputs[0]], run, node.attrs["scale"],
                                   node.attrs["zero_point"])
        if not _step_is_finite(run.lr, run.loss, grad):
            run.guard.steps_skipped += 1   # before the first update: nothing changes
            run.skip = True
        return grad

    def layer(self, g, node, i, plan, consts, params):
        from ..codegen.c import c_float
        a = node.attrs
        return dict(kind=self.name, template=TEMPLATE,
                    params=dict(n=g.tensors[node.outputs[0]].size, scale=c_float(a["scale"]),
                                zero_point=int(a["zero_point"])))


class SoftmaxCE(_Loss):
    """Classification: run.label is the class."""
    name = "softmax_ce"
    sources = {"softmax_ce": "backward/loss.c"}

    def loss(self, q, run, scale, zp):
        return softmax_ce(q, scale, zp, run.label)


def mse(q: np.ndarray, target: np.ndarray, scale: float, zp: int) -> tuple[np.ndarray, float]:
    """Mean squared error of the dequantized output against the dequantized int8 target (same
    parameters), float32 in the C kernel's order: d_i = y_i - t_i; loss = sum d_i^2 / n
    (summed in order); g_i = d_i * (2 / n)."""
    s = F32(scale)
    y = s * (q.astype(np.int32) - zp).astype(F32)
    t = s * (np.asarray(target).astype(np.int32) - zp).astype(F32)
    d = (y.ravel() - t.ravel()).astype(F32)
    n = d.size
    total = np.add.accumulate((d * d).astype(F32), dtype=F32)[-1]
    loss = F32(total / F32(n))
    return (d * F32(F32(2.0) / F32(n))).astype(F32).reshape(q.shape), float(loss)


class MSE(_Loss):
    """The loss of a regression / reconstruction step (--loss mse); run.label holds the int8
    target (the output's shape and quantization)."""
    name = "mse"
    sources = {"mse": "backward/loss.c"}

    def loss(self, q, run, scale, zp):
        return mse(q, run.label, scale, zp)


OPS = (Softmax(), SoftmaxGrad(), SoftmaxCE(), MSE())
