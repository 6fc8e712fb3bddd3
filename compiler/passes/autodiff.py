"""Compile-time autodiff: int8 forward graph + update scheme -> one training-step graph.

The result holds the forward nodes (int8, unchanged), then the loss, then backward nodes that
compute float32 gradients and update parameters in place. Everything a step computes or keeps
is a node or a tensor of this graph, so the memory planner places the whole step and the code
generator emits it in order. Pruning happens here:
- a gradient is computed only for tensors that lie between a trainable layer and the loss;
  back-propagation stops at the earliest updated layer, whose input gradient is never made;
- a layer that only updates its bias keeps no activation; a partially updated layer keeps only
  the selected channels of its input (a `select_channels` node in the forward pass);
- each layer's update node comes right after its input-gradient node (right before it when it
  updates only the bias, so that the output gradient can die at the input gradient), so a
  parameter is updated as soon as its gradient is complete and no gradient buffer outlives its
  layer (in-place update, the "operator reordering" of the TTE paper);
- then depthwise + 1x1 pairs are differentiated one channel at a time (passes/fuse_grad.py).
Gradients are w.r.t. the dequantized (real) values; clamps pass gradient only where the int8
forward output lies strictly inside the clamp range (straight-through elsewhere).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ops
from ..errors import TinycError
from ..ir import Graph, Node, Tensor
from .fuse_grad import fuse_depthwise_pointwise_grads
from .sparse_update import UpdateScheme
from .train_head import classifier
from .train_head import logits as logits_tensor


@dataclass
class TrainOptions:
    qas: bool = True               # quantization-aware scaling of the gradients
    # stochastic rounding: measured better than nearest on both nets of bench/results/transfer.md
    rounding: str = "stochastic"   # "nearest" | "stochastic"
    # backward through depthwise + 1x1 pairs one channel at a time (passes/fuse_grad.py)
    channelwise: bool = True
    # "ce": softmax cross-entropy on the logits and a class label; "mse": mean squared error of
    # the output against an int8 target of the output's quantization (e.g. an autoencoder's)
    loss: str = "ce"
    # head warm-up: the first `warmup` steps update only the classifier (the new head is random
    # at first, and its gradients into the body would be noise that distorts the pretrained
    # features: linear probing then fine-tuning); the step count decides, so it holds on device
    warmup: int = 0
    # the body's learning rate relative to the head's (1: the same)
    body_lr_scale: float = 1.0


def grad_name(t: str) -> str:
    return f"grad:{t}"


def _depends_on_params(g: Graph, trainable: set[str]) -> set[str]:
    """Tensors downstream of a trainable layer's output (their gradient matters)."""
    dep: set[str] = set()
    for n in g.nodes:
        if n.name in trainable or any(i in dep for i in n.inputs):
            dep.update(n.outputs)
    return dep


def _mask_bounds(node: Node) -> tuple[int | None, int | None] | None:
    """Integer bounds of the clamp applied to node's output, or None if it has none."""
    clamp = node.attrs.get("clamp")
    if clamp is None:
        return None
    q = node.attrs["q"]
    lo = q["act_min"] if np.isfinite(clamp[0]) else None
    hi = q["act_max"] if np.isfinite(clamp[1]) else None
    return (lo, hi) if (lo is not None or hi is not None) else None


class Backward:
    """The training graph being built, as an op's `grad` rule sees it (compiler/ops/base.py):
    it makes gradient tensors, appends backward nodes and sums the gradients a tensor gets."""

    def __init__(self, t: Graph, scheme: UpdateScheme, opts: TrainOptions, trainable: set[str],
                 dep: set[str], forward: list[Node]):
        self.t, self.scheme, self.opts = t, scheme, opts
        self.trainable, self.dep, self.forward = trainable, dep, forward
        self.backward: list[Node] = []
        self.head = classifier(t).name
        self.grads: dict[str, str] = {}

    def new_grad(self, tensor: str, suffix: str = "") -> str:
        t = self.t
        name = grad_name(tensor) + suffix
        k = 1
        while name in t.tensors:
            name, k = f"{grad_name(tensor)}{suffix}#{k}", k + 1
        t.tensors[name] = Tensor(name, t.tensors[tensor].shape, dtype="float32")
        return name

    def give_grad(self, tensor: str, g_new: str, where: Node) -> None:
        grads = self.grads
        if tensor not in grads:
            grads[tensor] = g_new
            return
        total = self.new_grad(tensor, ":sum")
        self.emit(Node(where.name + "/grad_add", "grad_add", [grads[tensor], g_new], [total]))
        grads[tensor] = total

    def emit(self, node: Node) -> None:
        self.backward.append(node)


def build_training_graph(g: Graph, scheme: UpdateScheme, opts: TrainOptions) -> Graph:
    t = g.copy()
    classifier(t)   # checks there is one
    logits = logits_tensor(t)
    trainable = set(scheme.layers)
    for name in trainable:
        node = next((n for n in t.nodes if n.name == name), None)
        if node is None or not ops.get(node).trainable_params:
            raise TinycError(f"scheme names layer '{name}', which is not a conv/FC of this model")
    dep = _depends_on_params(t, trainable)
    forward = list(t.nodes)
    ad = Backward(t, scheme, opts, trainable, dep, forward)
    backward, grads = ad.backward, ad.grads
    new_grad = ad.new_grad

    g_logits = new_grad(logits)
    backward.append(Node("loss", "mse" if opts.loss == "mse" else "softmax_ce", [logits],
                         [g_logits], {"scale": float(t.tensors[logits].q.scale),
                                      "zero_point": int(t.tensors[logits].q.zero_point)}))
    grads[logits] = g_logits

    for node in reversed(list(forward)):
        out = node.outputs[0]
        if out not in grads:
            continue
        g_out = grads[out]
        op = ops.get(node)
        bounds = _mask_bounds(node) if op.masks_gradient else None
        if bounds is not None:
            g_masked = new_grad(out, ":masked")
            backward.append(Node(node.name + "/mask", "grad_mask", [g_out, out], [g_masked],
                                 {"lo": bounds[0], "hi": bounds[1]}))
            g_out = g_masked
        need = [i for i in node.inputs if i in dep]
        op.grad(ad, node, g_out, need)   # raises naming the node if it has no rule

    t.nodes = forward + backward
    t.meta["train"] = {"scheme": scheme.name, "qas": opts.qas, "rounding": opts.rounding,
                       "loss": opts.loss,
                       "forward_nodes": len(forward), "logits": logits,
                       "trainable": sorted(trainable)}
    if opts.channelwise:
        fuse_depthwise_pointwise_grads(t)
    _set_warmup(t, opts.warmup)
    return t


def _set_warmup(t: Graph, steps: int) -> None:
    """meta["train"]: warmup_steps, and warmup_after, the head's update node, after which a
    warm-up step ends (0 and None when nothing follows it: a classifier-only scheme)."""
    if steps < 0:
        raise TinycError(f"--train-warmup {steps}: give a number of steps, 0 or more")
    head_update = classifier(t).name + "/update"
    names = [n.name for n in t.nodes]
    after = head_update if steps and names.index(head_update) < len(names) - 1 else None
    t.meta["train"].update(warmup_steps=steps if after else 0, warmup_after=after)


def trainable_parameters(g: Graph) -> list[str]:
    """Names of the weight and bias tensors a training step updates (they live in SRAM)."""
    from ..memory.planner import trainable_tensors
    return [name for name, _ in trainable_tensors(g)]


def set_parameters(g: Graph, params: dict, source: str) -> None:
    """Load trained parameters (tensor name -> int8/int32 array) into graph g."""
    expected = trainable_parameters(g)
    missing = [n for n in expected if n not in params]
    if missing:
        raise TinycError(f"{source}: lacks trained parameters {missing[:3]}"
                         f"{' ...' if len(missing) > 3 else ''}; was it saved from this build?")
    for name in expected:
        t, v = g.tensors[name], np.asarray(params[name])
        want = np.int8 if t.dtype == "int8" else np.int32
        if v.shape != t.data.shape or v.dtype != want:
            raise TinycError(f"{source}: parameter '{name}' is {v.dtype}{list(v.shape)}, expected "
                             f"{np.dtype(want)}{list(t.data.shape)}")
        t.data = v.copy()
