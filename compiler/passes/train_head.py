"""Find the classifier of a float graph and, for transfer learning, replace it by a new N-class head.

The classifier is the last conv2d / fully_connected layer: only reshapes (and an output softmax)
may follow it, or for a conv classifier a global average pooling (SqueezeNet). Training computes the loss on its output (the logits), so an output softmax is
dropped from a training graph.
"""
from __future__ import annotations

import numpy as np

from ..errors import TinycError
from ..ir import Graph, Node

HEAD_SEED = 20221128
# A new classifier's int8 weights span HEAD_WEIGHT_HEADROOM times their initial bound: trained
# in float (bench/learning.py's reference), they grow to about 3x it in one epoch at lr 0.003 and
# 4.6x at 0.01; a scale fitted to the initial weights pinned them at +-127 and cost the cheap
# schemes several points at the larger rates. The growth is about proportional to the rate
# (bench/head_quant.py, Fashion-MNIST, 2000 samples: 2.9x at 0.003, 4.6-7.1x at 0.01, 13-24x at
# 0.03), so no fixed int8 range suits every rate. 8x (logits over +-48) recovered 8-11 points
# at 0.03, where 4x pins 5-9% of the weights, but its coarser codes lost 1-3 points at 0.001
# (classifier only, both shared nets; single runs), where the generated C and float do best:
# 4x stays. Good training at large rates too would need a wider type for the head's weights.
HEAD_WEIGHT_HEADROOM = 4.0


def _global_pool(g: Graph, node: Node) -> bool:
    return node.op == "avg_pool" and g.tensors[node.outputs[0]].shape[1:3] == (1, 1)


def classifier(g: Graph) -> Node:
    """The classifier node: its output reaches the graph output through reshapes/softmax only,
    or, for a conv classifier (SqueezeNet), through a global average pooling too."""
    name, pooled = g.outputs[0], False
    while True:
        node = g.producer(name)
        if node is None:
            break
        if node.op in ("conv2d", "fully_connected"):
            if node.op == "conv2d" and not pooled and \
                    g.tensors[node.outputs[0]].shape[1:3] != (1, 1):
                break
            return node
        if _global_pool(g, node) and not pooled:
            pooled = True
        elif node.op not in ("reshape", "softmax"):
            break
        name = node.inputs[0]
    raise TinycError("training needs a classifier: a Conv / Gemm / MatMul whose output is the "
                     "model output (possibly through Flatten/Reshape/Softmax, or a conv's through "
                     "a global average pooling)")


def logits(g: Graph) -> str:
    """The tensor the loss reads: the classifier's output, or its global pooling's."""
    name = g.outputs[0]
    while g.producer(name) is not None and g.producer(name).op == "reshape":
        name = g.producer(name).inputs[0]
    return name


def drop_output_softmax(g: Graph) -> Graph:
    g = g.copy()
    last = g.producer(g.outputs[0])
    if last is not None and last.op == "softmax":
        g.nodes.remove(last)
        g.outputs = [last.inputs[0]]
        g.remove_unused_tensors()
    return g


# weights of a new classifier beyond any board (16 MB of int8), refused before allocating them
MAX_HEAD_WEIGHTS = 16 << 20


def replace_head(g: Graph, num_classes: int, seed: int = HEAD_SEED) -> Graph:
    """A new classifier with `num_classes` outputs: weights uniform in +-1/sqrt(fan_in) from a
    fixed seed (so a build is reproducible), biases zero; its int8 weights will have room for
    HEAD_WEIGHT_HEADROOM times that bound (attrs weight_range, ops/conv.py quantize_weights)."""
    if num_classes < 2:
        raise TinycError(f"--num-classes {num_classes}: a classifier needs at least 2 classes")
    g = drop_output_softmax(g)
    head = classifier(g)
    w = g.tensors[head.inputs[1]]
    b = g.tensors[head.inputs[2]]
    fan_in = int(np.prod(w.shape[1:]))
    if num_classes * fan_in > MAX_HEAD_WEIGHTS:
        raise TinycError(f"--num-classes {num_classes}: the new classifier would hold "
                         f"{num_classes * fan_in:,} weights ({fan_in} inputs each), over "
                         f"{MAX_HEAD_WEIGHTS:,}: more than any microcontroller's flash")
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(fan_in)
    w.data = rng.uniform(-bound, bound, (num_classes,) + tuple(w.shape[1:])).astype(np.float32)
    w.shape = w.data.shape
    b.data = np.zeros(num_classes, np.float32)
    b.shape = b.data.shape
    head.attrs["weight_range"] = HEAD_WEIGHT_HEADROOM * bound
    # every tensor from the head's output to the graph output now has num_classes channels
    name = head.outputs[0]
    while True:
        t = g.tensors[name]
        t.shape = t.shape[:-1] + (num_classes,)
        users = g.consumers(name)
        if not users:
            break
        name = users[0].outputs[0]
    return g


def replace_head_int8(gq: Graph, num_classes: int, logit_range) -> Graph:
    """replace_head on an int8 graph whose quantization is given (an int8 .tflite model): the new
    head's weights quantized as the quantizer does (compiler/ops/conv.py quantize_weights), its
    output (and the reshapes after it) at the fixed logit range of a new head."""
    from .. import ops
    from ..ops.conv import quantize_weights
    from .quantize import choose_qparams
    g = replace_head(gq, num_classes)   # float weights and zero biases, shapes updated
    head = classifier(g)
    w, b = g.tensors[head.inputs[1]], g.tensors[head.inputs[2]]
    w.dtype = b.dtype = "float32"
    s_in = g.tensors[head.inputs[0]].q.scalar()[0]
    quantize_weights(g, head, s_in, per_channel=head.op == "conv2d")
    q = choose_qparams(*logit_range)
    name = head.outputs[0]
    while True:   # the logits and the reshapes that carry them to the output
        g.tensors[name].q = q
        users = g.consumers(name)
        if not users:
            break
        name = users[0].outputs[0]
    for node in g.nodes:
        if node is head or g.tensors[node.inputs[0]].q is q:
            node.attrs["q"] = ops.get(node).quantize(g, node)
    return g
