"""Float32 PyTorch reference for bench/transfer.py (torch is optional; only this file imports it).

The float model is built from tinyc's own float IR (tinyc.pipeline.import_float, plus
passes/train_head.replace_head for the new head), so it is the very network the int8 build
starts from, with the same initial head weights (before quantization). The IR is NHWC with
OHWI weights; the torch model runs NCHW with OIHW weights. Ops: conv2d (groups, pads, strides,
dilations, fused clamp), fully_connected, add (fused clamp), avg_pool, clamp, reshape.

Training the scheme's parameters only: the parameters and channels come from the int8 training
graph tinyc builds for the same scheme (the conv2d_update nodes), so both sides update exactly
the same weights: a partially updated layer's weight gradient is masked to its selected input
channels (the entries of output channels that read them), frozen parameters get no gradient,
and back-propagation stops at the earliest trainable layer.

    python bench/torch_reference.py --check   # float model == onnxruntime on the shared nets
"""
from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))


class IRNet(torch.nn.Module):
    """A float tinyc IR graph as a torch module (NCHW input, logits (1, N) output)."""

    def __init__(self, g):
        super().__init__()
        self.g = g
        self.weights = torch.nn.ParameterDict()
        self.key = {}                       # IR tensor name -> ParameterDict key
        for node in g.nodes:
            if node.op not in ("conv2d", "fully_connected", "add", "avg_pool", "clamp",
                               "reshape"):
                raise NotImplementedError(f"torch reference: no rule for {node.describe()}")
            for name in node.inputs[1:]:
                if not name or name in self.key:
                    continue
                data = np.asarray(g.tensors[name].data, np.float32)
                if node.op == "conv2d" and data.ndim == 4:
                    data = data.transpose(0, 3, 1, 2)           # OHWI -> OIHW
                k = f"p{len(self.key)}"
                self.key[name] = k
                self.weights[k] = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(data)))

    def param(self, tensor_name: str) -> torch.nn.Parameter:
        return self.weights[self.key[tensor_name]]

    @staticmethod
    def _clamp(y, clamp):
        if clamp is None:
            return y
        lo, hi = clamp
        return torch.clamp(y, None if not math.isfinite(lo) else float(lo),
                           None if not math.isfinite(hi) else float(hi))

    def forward(self, x):
        g = self.g
        env = {g.inputs[0]: x}
        for node in g.nodes:
            a = node.attrs
            ins = [env[i] for i in node.inputs[:1]]
            if node.op == "conv2d":
                t, l, b, r = a["pads"]
                xin = ins[0]
                if (t, l) == (b, r):
                    pad = (t, l)
                else:
                    xin, pad = F.pad(xin, (l, r, t, b)), (0, 0)
                bias = self.param(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
                y = F.conv2d(xin, self.param(node.inputs[1]), bias, stride=tuple(a["strides"]),
                             padding=pad, dilation=tuple(a["dilations"]), groups=a["groups"])
                y = self._clamp(y, a.get("clamp"))
            elif node.op == "fully_connected":
                bias = self.param(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
                y = self._clamp(F.linear(ins[0], self.param(node.inputs[1]), bias), a.get("clamp"))
            elif node.op == "add":
                y = self._clamp(env[node.inputs[0]] + env[node.inputs[1]], a.get("clamp"))
            elif node.op == "clamp":
                y = self._clamp(ins[0], a.get("clamp"))
            elif node.op == "avg_pool":
                t, l, b, r = a["pads"]
                xin, pad = ins[0], (t, l)
                if (t, l) != (b, r):
                    if a.get("count_include_pad"):
                        xin, pad = F.pad(xin, (l, r, t, b)), (0, 0)
                    else:
                        raise NotImplementedError("asymmetric avg_pool pads without "
                                                  "count_include_pad")
                y = F.avg_pool2d(xin, tuple(a["kernel"]), tuple(a["strides"]), pad,
                                 count_include_pad=bool(a.get("count_include_pad")))
            else:   # reshape: IR semantics are NHWC, so flatten in (h, w, c) order
                shape = g.tensors[node.outputs[0]].shape
                v = ins[0].permute(0, 2, 3, 1) if ins[0].dim() == 4 else ins[0]
                y = v.reshape((v.shape[0],) + tuple(shape[1:]))
                if len(shape) == 4:
                    y = y.permute(0, 3, 1, 2)
            env[node.outputs[0]] = y
        out = env[g.outputs[0]]
        return out.reshape(out.shape[0], -1)


def float_graph(onnx_path: str, num_classes: int | None):
    from tinyc.passes.train_head import drop_output_softmax, replace_head
    from tinyc.pipeline import import_float

    g = import_float(onnx_path)
    return replace_head(g, num_classes) if num_classes else drop_output_softmax(g)


def updates_of_build(onnx_path: str, scheme, num_classes: int, calib: str) -> dict:
    """What the int8 build with this scheme updates: conv node name -> (channels | None, bias)."""
    from tinyc.build import BuildOptions, compile_graph

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gq = compile_graph(onnx_path, BuildOptions(calib=calib, train=scheme,
                                                   num_classes=num_classes))
    ups = {}
    for n in parameter_updates(gq):
        layer = n.name[:-len("/update")]
        ch = n.attrs["channels"]
        ups[layer] = (None if ch is None else np.asarray(ch), bool(n.attrs["update_bias"]))
    return ups


def parameter_updates(gq):
    """The training graph's conv2d_update nodes, those inside fused dw_pw_grad nodes too
    (passes/fuse_grad.py keeps the nodes it replaced in attrs["parts"])."""
    from tinyc.passes.fuse_grad import FUSED_OP

    for n in gq.nodes:
        if n.op == "conv2d_update":
            yield n
        elif n.op == FUSED_OP:
            yield from (n.attrs["parts"][k] for k in ("dw_update", "update")
                        if n.attrs["parts"].get(k) is not None)


def scheme_model(onnx_path: str, scheme, num_classes: int, calib: str):
    """(model, [(parameter, gradient mask or None, of the classifier)], float32 bytes of the
    trained tensors)."""
    from tinyc.passes.train_head import classifier

    g = float_graph(onnx_path, num_classes)
    head = classifier(g).name
    model = IRNet(g)
    for p in model.parameters():
        p.requires_grad_(False)
    ups = updates_of_build(onnx_path, scheme, num_classes, calib)
    nodes = {n.name: n for n in g.nodes}
    trained, n_values = [], 0
    for layer, (channels, bias) in ups.items():
        node = nodes[layer]
        if channels is not None:
            w = model.param(node.inputs[1])
            mask = weight_mask(node, tuple(w.shape), channels)
            w.requires_grad_(True)
            trained.append((w, mask, layer == head))
            n_values += w.numel()     # the whole tensor, as the C build keeps it in SRAM
        if bias:
            b = model.param(node.inputs[2])
            b.requires_grad_(True)
            trained.append((b, None, layer == head))
            n_values += b.numel()
    return model, trained, 4 * n_values


def weight_mask(node, shape: tuple, channels: np.ndarray):
    """Mask of the weight entries that read the selected input channels (None: all)."""
    if node.op == "fully_connected":
        cout, cin_g, groups = shape[0], shape[1], 1
    else:
        cout, cin_g, groups = shape[0], shape[1], node.attrs["groups"]
    if len(channels) == cin_g * groups:
        return None
    cout_g = cout // groups
    mask = np.zeros(shape[:2], np.float32)
    for c in channels:
        grp, local = int(c) // cin_g, int(c) % cin_g
        mask[grp * cout_g:(grp + 1) * cout_g, local] = 1.0
    mask = mask.reshape(shape[:2] + (1,) * (len(shape) - 2))
    return torch.from_numpy(np.broadcast_to(mask, shape).copy())


def train(model, trained, x: np.ndarray, y: np.ndarray, lr: float,
          body_lr_scale: float = 1.0, lr_schedule: str = "constant") -> np.ndarray:
    """One epoch in the given order, batch 1, plain SGD (no momentum, no weight decay); the
    body's parameters at body_lr_scale times lr, as a build's `body_lr_scale` does. The
    epoch is one run of `lr_schedule` from peak lr (tinyc's lr_schedule.rates, the rates the
    generated C takes under a build's --lr-schedule): give the build's schedule so that C and
    float train at the same rates."""
    from tinyc.lr_schedule import rates
    step_rates = rates(lr, lr_schedule, len(x)).astype(np.float64) / np.float32(lr)
    groups = [{"params": [p for p, _, head in trained if head], "lr": lr},
              {"params": [p for p, _, head in trained if not head], "lr": lr * body_lr_scale}]
    groups = [grp for grp in groups if grp["params"]]
    peaks = [grp["lr"] for grp in groups]
    opt = torch.optim.SGD(groups, lr=lr, momentum=0.0, weight_decay=0.0)
    model.train()
    losses = np.empty(len(x), np.float32)
    for i in range(len(x)):
        for grp, peak in zip(opt.param_groups, peaks):   # step i's rate: the schedule's factor
            grp["lr"] = peak * float(step_rates[i])
        opt.zero_grad(set_to_none=True)
        logits = model(torch.from_numpy(x[i:i + 1]))
        loss = F.cross_entropy(logits, torch.tensor([int(y[i])]))
        loss.backward()
        for p, mask, _ in trained:
            if mask is not None and p.grad is not None:
                p.grad.mul_(mask)
        opt.step()
        losses[i] = float(loss.detach())
    return losses


@torch.no_grad()
def predict(model, x: np.ndarray, batch: int = 50) -> np.ndarray:
    model.eval()
    return np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy()
                           for i in range(0, len(x), batch)])


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(predict(model, x), axis=1) == y))


def check() -> int:
    """The float torch model of each shared 96 px net equals onnxruntime on real images."""
    import onnxruntime as ort

    import common

    worst = 0.0
    x = common.render(common.eval_samples()[:6], (96, 96))
    for name in ("mcunet-5fps_96", "mbv2-w0.35_96", "proxyless-w0.3_96"):
        path = str(common.MODELS_DIR / f"{name}.onnx")
        model = IRNet(float_graph(path, None))
        ours = predict(model, x, batch=6)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        ref = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i:i + 1]})[0]
                              .reshape(1, -1) for i in range(len(x))])
        err = float(np.abs(ours - ref).max() / np.abs(ref).max())
        worst = max(worst, err)
        print(f"{name}: max |torch - onnxruntime| / max |logit| = {err:.2e}, top-1 equal: "
              f"{np.mean(ours.argmax(1) == ref.argmax(1)) * 100:.0f}%")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(check())
    print(__doc__)
