"""Sparse-update schemes: which biases and which weight channels a training step updates.

Scheme JSON: {"bias_last": K, "weights": {"IDX": ratio, ...}} (semantics of
../shared/models/README.md):
- layers are numbered 0.. in topological order over the model's Conv and Gemm/MatMul nodes,
  EXCLUDING the classifier, which is always trained fully (weights and bias);
- "bias_last": K updates the biases of the last K conv layers;
- "weights": {IDX: r} updates floor(r * C_in) input channels of conv IDX (for a depthwise conv,
  its channels), chosen at compile time as those with the largest weight L2 norm; a layer whose
  weights are updated also gets its bias updated.
Shorthands: "full" (every layer), "bias-only" (every conv bias), "last:K" (weights and biases of
the last K conv layers).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TinycError
from ..ir import Graph, Node
from .train_head import classifier


@dataclass
class LayerUpdate:
    bias: bool
    channels: np.ndarray | None   # updated input channels (sorted), None = weights frozen

    @property
    def weights(self) -> bool:
        return self.channels is not None and len(self.channels) > 0


@dataclass
class UpdateScheme:
    name: str
    layers: dict[str, LayerUpdate]   # node name -> what is updated
    conv_index: dict[str, int]       # node name -> scheme conv index (classifier excluded)

    def describe(self) -> str:
        nw = sum(1 for u in self.layers.values() if u.weights)
        nb = sum(1 for u in self.layers.values() if u.bias)
        return f"{self.name}: weights of {nw} layers, biases of {nb} layers"


def conv_layers(g: Graph) -> list[Node]:
    """The model's Conv and Gemm/MatMul layers in topological order, classifier excluded (the
    scheme indices; the shared models' schemes count their convs, as they have no other)."""
    head = classifier(g)
    return [n for n in g.nodes if n is not head and
            ((n.op == "conv2d" and n.source_op in ("Conv", "CONV_2D", "DEPTHWISE_CONV_2D"))
             or n.op == "fully_connected")]


def input_channel_norms(g: Graph, node: Node) -> np.ndarray:
    """L2 norm of the (dequantized) weights that read each input channel of a conv."""
    w = g.tensors[node.inputs[1]]
    data = w.data.astype(np.float64)
    if w.q is not None:
        data = data * np.asarray(w.q.scale, np.float64).reshape((-1,) + (1,) * (data.ndim - 1))
    if node.op == "fully_connected":   # (N_out, N_in): each input feature is a channel
        return np.sqrt((data ** 2).sum(axis=0))
    cout, _, _, cin_g = data.shape
    groups = node.attrs["groups"]
    cout_g = cout // groups
    norms = np.zeros(cin_g * groups)
    for grp in range(groups):
        block = data[grp * cout_g:(grp + 1) * cout_g]
        norms[grp * cin_g:(grp + 1) * cin_g] = np.sqrt((block ** 2).sum(axis=(0, 1, 2)))
    return norms


def top_channels(g: Graph, node: Node, ratio: float) -> np.ndarray:
    cin = g.tensors[node.inputs[0]].shape[-1]
    k = int(math.floor(ratio * cin + 1e-9))
    order = np.argsort(-input_channel_norms(g, node), kind="stable")
    return np.sort(order[:k])


def parse_scheme(text: str) -> dict | str:
    """--train value -> a shorthand string or the scheme dict (from a JSON file)."""
    if text in ("full", "bias-only") or text.startswith("last:") or text == "auto":
        return text
    path = Path(text)
    if not path.is_file():
        raise TinycError(f"--train {text}: neither a shorthand (full, bias-only, last:K, auto) "
                         "nor a scheme .json file")
    try:
        scheme = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TinycError(f"{path}: not valid JSON ({e})") from e
    if (not isinstance(scheme, dict) or set(scheme) - {"bias_last", "weights", "name"}
            or not isinstance(scheme.get("weights", {}), dict)):
        raise TinycError(f'{path}: a scheme is {{"bias_last": K, "weights": {{"IDX": ratio}}}}')
    return scheme


def resolve_scheme(g: Graph, scheme: dict | str) -> UpdateScheme:
    """Turn a scheme into per-layer updates for graph g (int8 or float)."""
    convs = conv_layers(g)
    n = len(convs)
    head = classifier(g)
    if isinstance(scheme, str):
        if scheme == "full":
            spec = {"bias_last": n, "weights": {str(i): 1.0 for i in range(n)}}
        elif scheme == "bias-only":
            spec = {"bias_last": n, "weights": {}}
        elif scheme.startswith("last:"):
            try:
                k = int(scheme[5:])
            except ValueError:
                raise TinycError(f"--train {scheme}: K must be an integer") from None
            if not 0 <= k <= n:
                raise TinycError(f"--train {scheme}: the model has {n} conv layers besides the "
                                 "classifier")
            spec = {"bias_last": k, "weights": {str(i): 1.0 for i in range(n - k, n)}}
        else:
            raise TinycError(f"unknown scheme '{scheme}'")
        name = scheme
    else:
        spec, name = scheme, scheme.get("name", "custom")
    k = spec.get("bias_last", 0)
    if not isinstance(k, int) or not 0 <= k <= n:
        raise TinycError(f"bias_last={k!r}: must be an integer in 0..{n} (conv layers besides "
                         "the classifier)")
    layers: dict[str, LayerUpdate] = {}
    for node in convs[n - k:]:
        layers[node.name] = LayerUpdate(bias=True, channels=None)
    for idx, ratio in spec.get("weights", {}).items():
        try:
            i = int(idx)
        except ValueError:
            raise TinycError(f"weights key '{idx}' is not a conv layer index") from None
        if not 0 <= i < n:
            raise TinycError(f"weights index {i} is out of range: the model has conv layers "
                             f"0..{n - 1} besides the classifier")
        if not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
            raise TinycError(f"weights ratio {ratio!r} of layer {i} must be in [0, 1]")
        chans = top_channels(g, convs[i], float(ratio))
        prev = layers.get(convs[i].name)
        layers[convs[i].name] = LayerUpdate(bias=True if len(chans) else bool(prev and prev.bias),
                                            channels=chans if len(chans) else None)
    if scheme == "full":   # every layer: also fully-connected layers besides the classifier
        for node in g.nodes:
            if node.op == "fully_connected" and node is not head:
                layers[node.name] = LayerUpdate(True, np.arange(g.tensors[node.inputs[0]].shape[-1]))
    cin = g.tensors[head.inputs[0]].shape[-1]
    layers[head.name] = LayerUpdate(bias=True, channels=np.arange(cin))
    layers = {k: v for k, v in layers.items() if v.bias or v.weights}
    return UpdateScheme(name, layers, {c.name: i for i, c in enumerate(convs)})
