"""Channel-by-channel backward through an inverted-residual block's 1x1 project, depthwise and
1x1 expand convs.

In an inverted-residual block (1x1 expand -> ReLU6 -> depthwise -> ReLU6 -> 1x1 project) the
backward pass materialises the gradients of the expanded tensors in float32, 4 bytes for each of
their elements (mbv2-w0.35 at 128 px: 16x16x96 floats = 96 KB), the largest buffers of the whole
training step. Yet, once the project's output gradient g_p is known, everything works channel by
channel of the expanded tensors:

    g_d  = 1x1 project input gradient of g_p   (channel c: sum over o of g_p[., o] * w[o, c])
    g_dm = g_d masked by the depthwise layer's clamp, then its bias step (channel c)
    g_e  = depthwise input gradient of g_dm    (channel c of g_e from channel c of g_dm)
    g_em = g_e masked by the expand layer's clamp, then its bias step (channel c)
    g_x  = 1x1 expand input gradient of g_em   (g_x[p, i] = sum over c of g_em[p, c] * w[c, i])

so `dw_pw_grad` computes them one expanded channel c at a time: channel c's plane of g_d,
masked, feeds the depthwise bias step of channel c, and the plane of g_e, masked, is
accumulated into g_x and feeds the expand layer's step of channel c (bias, or weights and
bias). Only three planes (one out_h x out_w and, the kernel taking the expanded channels two
at a time, two in_h x in_w floats) of the expanded gradients exist at a time. The float32 operations are the very ones of the unfused nodes
in the same order per element: g_d[p, c] gets its terms in o order and g_x[p, i] in c order (the
o order of conv2d_grad_input), a bias gradient sums its plane row-major, skipping zeros as
before. The numpy reference runs the unfused nodes (attrs["parts"]), so the two stay the same by
construction; the C kernel is tinyc_depthwise_pointwise_grad.

The pattern (a rewrite of the backward nodes of passes/autodiff.py), named by attrs["parts"]:
- "dw": conv2d_grad_input of a depthwise conv (groups == C): g_dm -> g_e, read only by
- "mask": grad_mask(g_e, E) -> g_em (E: the expand layer's clamped output), read only by
- "pw": conv2d_grad_input of a 1x1 conv (stride 1, no padding, groups 1) -> g_x, and at most
- "update": its conv2d_update (bias, or weights of all or some input channels and bias):
  channel c's weight gradient needs only plane c (and the saved input), and its step comes
  after plane c's terms of g_x were added with the old weights, as the unfused update after
  the input gradient;
(the depthwise and project weights not stored split, memory/planner.split_weights; the expand
conv's may be: the kernel reads its rows through tinyc_split_row), and, when g_dm comes that
way (the "head", optional):
- "proj": conv2d_grad_input of a 1x1 conv -> g_d, read only by
- "proj_mask": grad_mask(g_d, D) -> g_dm (D: the depthwise layer's clamped output), read only by
  "dw" and at most "dw_update", the depthwise layer's bias-only conv2d_update.
Without the head it is fused only where it saves memory (_saves_memory: the stride-2 blocks);
with it, g_d and g_e are never materialised, which always does. A *tail* is the head alone: the
project's input gradient, its mask and the depthwise layer's bias step, where that layer is the
earliest trained one (no "dw" input gradient to continue with); it has no output. The fused
node runs at the place of its first part: its inputs are ready there, and no node in between
changes the weights it reads (weight updates come after the input gradients of their layer).
"""
from __future__ import annotations

import copy

from ..ir import Graph, Node
from ..memory.planner import split_weights
from ..ops.conv_train import is_depthwise_grad, pointwise_grad_inplace_ok

FUSED_OP = "dw_pw_grad"


def _saves_memory(g: Graph, n1: Node, n4: Node, readers: dict, at: dict) -> bool:
    """Whether fusing beats the unfused nodes locally. Unfused, the expanded gradient g_e is
    computed over g_d in place when g_d dies there (planner: depthwise_grad*), and g_x over it
    (pointwise_grad): about max(g_d, g_e) bytes, plus g_d when something reads it later (a
    weight update of the depthwise layer). Fused: g_d, g_x and one plane side by side. A stride
    2 wins (g_e is 4x g_d); a stride 1 usually does not."""
    g_d, g_e, g_x = (g.tensors[t].nbytes for t in (n1.inputs[0], n1.outputs[0], n4.outputs[0]))
    _, h, w, _ = g.tensors[n1.outputs[0]].shape
    g_d_later = any(at[id(r)] > at[id(n1)] for r in readers.get(n1.inputs[0], []))
    unfused = g_e + g_d if g_d_later else max(g_d, g_e)
    fused = g_d + g_x + 4 * h * w
    return fused < unfused


def bias_only(update: Node) -> bool:
    ch = update.attrs.get("channels")
    return ch is None or len(ch) == 0


def with_hidden_tensors(g: Graph, node: Node) -> Graph:
    """A view of g that also knows the tensors a dw_pw_grad node never materialises, to read
    its parts' shapes."""
    view = copy.copy(g)
    view.tensors = {**g.tensors, **node.attrs["hidden"]}
    return view


def _sole_reader(readers: dict, t: str, op: str) -> Node | None:
    rs = readers.get(t, [])
    return rs[0] if len(rs) == 1 and rs[0].op == op and rs[0].inputs[0] == t else None


def _head(g: Graph, n1: Node, readers: dict, producer: dict) -> dict | None:
    """The project input gradient and mask that produce n1's input, and the depthwise layer's
    bias-only update, when the pattern's head is there."""
    mask = producer.get(n1.inputs[0])
    if mask is None or mask.op != "grad_mask":
        return None
    proj = producer.get(mask.inputs[0])
    if (proj is None or not pointwise_grad_inplace_ok(g, proj)
            or _sole_reader(readers, proj.outputs[0], "grad_mask") is not mask):
        return None
    others = [r for r in readers.get(n1.inputs[0], []) if r is not n1]
    if len(others) > 1 or (others and (others[0].op != "conv2d_update"
                                       or not bias_only(others[0]))):
        return None
    if (g.tensors[mask.inputs[1]].shape[-1] != g.tensors[mask.inputs[0]].shape[-1]
            or n1.inputs[0] in g.outputs or proj.outputs[0] in g.outputs):
        return None
    return {"proj": proj, "proj_mask": mask, "dw_update": others[0] if others else None}


def _tail(g: Graph, n0: Node, readers: dict) -> dict | None:
    """The mask and the bias-only update that alone read the output of n0, a 1x1 conv's input
    gradient (g_d), when the layer they belong to (D) gets no input gradient (the earliest
    trained layer): channel by channel, only g_p and one plane of g_d are needed."""
    mask = _sole_reader(readers, n0.outputs[0], "grad_mask")
    if mask is None or mask.inputs[1] == mask.inputs[0]:
        return None
    update = _sole_reader(readers, mask.outputs[0], "conv2d_update")
    g_p, g_d = g.tensors[n0.inputs[0]], g.tensors[n0.outputs[0]]
    if (update is None or not bias_only(update) or mask.outputs[0] in g.outputs
            or n0.outputs[0] in g.outputs
            or g.tensors[mask.inputs[1]].shape[-1] != g_d.shape[-1]):
        return None
    _, h, w, _ = g_d.shape
    if g_p.nbytes + 4 * h * w >= g_d.nbytes:
        return None
    return {"proj_mask": mask, "dw_update": update}


def _overlaps(parts, dropped: set, fused: dict) -> bool:
    """Whether any of these nodes already belongs to a fused node."""
    return any(n is not None and (id(n) in dropped or id(n) in fused) for n in parts)


def fuse_depthwise_pointwise_grads(g: Graph) -> Graph:
    """The training graph with every pattern of the module docstring replaced by one dw_pw_grad
    node. Returns g itself (modified) for convenience."""
    n_forward = g.meta["train"]["forward_nodes"]
    readers: dict[str, list[Node]] = {}
    producer: dict[str, Node] = {}
    for n in g.nodes:
        for t in n.inputs:
            if t:
                readers.setdefault(t, []).append(n)
        for t in n.outputs:
            producer[t] = n
    at = {id(n): k for k, n in enumerate(g.nodes)}   # node -> position
    split = split_weights(g)        # weights the fused kernel cannot read (kept in two places)
    fused: dict[int, Node] = {}     # id of the first part -> the fused node
    dropped: set[int] = set()       # ids of the other parts
    for n1 in g.nodes[n_forward:]:
        if not is_depthwise_grad(g, n1):
            continue
        g_e = n1.outputs[0]
        n2 = _sole_reader(readers, g_e, "grad_mask")
        if n2 is None:
            continue
        g_em = n2.outputs[0]
        r4 = readers.get(g_em, [])
        n4 = [n for n in r4 if n.op == "conv2d_grad_input"]
        n3 = [n for n in r4 if n.op == "conv2d_update"]
        if (len(n4) != 1 or len(n3) > 1 or len(n4) + len(n3) != len(r4)
                or not pointwise_grad_inplace_ok(g, n4[0]) or g_em in g.outputs
                or (n3 and n3[0].attrs.get("groups", 1) != 1)
                or g.tensors[n2.inputs[1]].shape[-1] != g.tensors[g_e].shape[-1]):
            continue
        head = _head(g, n1, readers, producer)
        if head is not None and (head["proj"].inputs[1] in split
                                 or _overlaps(head.values(), dropped, fused)):
            # e.g. in a chain of depthwise-separable blocks (DS-CNN) the project conv of this
            # pattern is the expand conv ("pw") of the pattern fused just before: a node runs
            # in one fused node only, so this one starts at its depthwise layer
            head = None
        if n1.inputs[1] in split:   # the expand conv's may be: the kernel reads it row by row
            continue
        body = [n1, n2, n4[0]] + n3
        if _overlaps(body, dropped, fused):
            continue
        if head is None and not _saves_memory(g, n1, n4[0], readers, at):
            continue
        parts = {"proj": None, "proj_mask": None, "dw_update": None, **(head or {}),
                 "dw": n1, "mask": n2, "update": n3[0] if n3 else None, "pw": n4[0]}
        node = _fused_node(g, parts)
        first = parts["proj"] if head else n1
        fused[id(first)] = node
        dropped.update(id(n) for n in parts.values() if n is not None and n is not first)
    taken = dropped | set(fused)
    for n0 in g.nodes[n_forward:]:   # tails: a project input gradient, mask and bias step only
        if id(n0) in taken or not pointwise_grad_inplace_ok(g, n0) or n0.inputs[1] in split:
            continue
        tail = _tail(g, n0, readers)
        if tail is None or _overlaps(tail.values(), dropped, fused):
            continue
        parts = {"proj": n0, **tail, "dw": None, "mask": None, "update": None, "pw": None}
        fused[id(n0)] = _fused_node(g, parts)
        dropped.update(id(n) for n in tail.values())
    if not fused:
        return g
    g.nodes = [fused.get(id(n), n) for n in g.nodes if id(n) not in dropped]
    g.remove_unused_tensors()
    return g


def _fused_node(g: Graph, parts: dict) -> Node:
    """inputs: [gy (g_p with a head, else g_dm), project weight | "", D | "", depthwise weight,
    E, expand weight, depthwise bias | "", expand bias | "", the expand layer's saved input
    when its weights are trained | ""]; a tail (no "dw") has only the first three and the
    depthwise bias, and no output."""
    proj, dw, pw = parts["proj"], parts["dw"], parts["pw"]
    if dw is None:
        mask, update = parts["proj_mask"], parts["dw_update"]
        return Node(update.name.rsplit("/", 1)[0] + "/dw_pw_grad", FUSED_OP,
                    [proj.inputs[0], proj.inputs[1], mask.inputs[1], "", "", "",
                     update.inputs[3], "", ""], [],
                    {"parts": parts, "hidden": {t: g.tensors[t]
                                                for t in (proj.outputs[0], mask.outputs[0])}})
    opt = {k: parts[k] for k in ("proj_mask", "dw_update", "update")}
    ins = [proj.inputs[0] if proj else dw.inputs[0], proj.inputs[1] if proj else "",
           opt["proj_mask"].inputs[1] if proj else "", dw.inputs[1], parts["mask"].inputs[1],
           pw.inputs[1], opt["dw_update"].inputs[3] if opt["dw_update"] else "",
           opt["update"].inputs[3] if opt["update"] else "",
           opt["update"].inputs[1] if opt["update"] else ""]
    hidden = [dw.inputs[0], dw.outputs[0], parts["mask"].outputs[0]]
    if proj:
        hidden.append(proj.outputs[0])
    return Node(pw.name.rsplit("/", 1)[0] + "/dw_pw_grad", FUSED_OP, ins, [pw.outputs[0]],
                {"parts": parts,
                 # the gradients it never materialises (shapes for the reference and C)
                 "hidden": {t: g.tensors[t] for t in hidden}})
