"""Static memory planning: every activation and scratch buffer of one inference in one arena.

Contract
- Execution order is graph.nodes. A tensor is live from the node that produces it (the graph
  input: from node 0) to its last reader, inclusive; a graph output stays live to the last node
  (the model API copies the input into the arena before node 0 and the output out after the last
  node, so both count towards the arena).
- A *buffer* is one value: a tensor together with its reshapes (a reshape's output is its input's
  bytes; NHWC order is unchanged since passes/flatten_order.py removed every NCHW flatten). It is
  live from its first tensor's birth to its last tensor's death.
- In place and scratch: which node may write its output over an input value that dies at that
  node (is read by no later node and is no graph output), and which scratch its kernel needs,
  is the op's own knowledge: its `plan` hook (compiler/ops) calls `PlanContext.join` and sets
  `PlanContext.scratch` (e.g. element-wise ops over a dying input; depthwise and pointwise convs
  through a channel or pixel of scratch; other convs' im2col window; a paste always over its
  accumulator). In-place 1x1 convs (`pointwise`) and 1x1 input gradients (`pointwise_grad`) are
  tried with and without: sharing one offset can make the greedy placement worse.
  Values chained by in-place nodes form a *group* placed at one offset. A group occupies, at each
  node, the bytes of its largest value live at that node (max(input, output) at the in-place
  node itself), so a long chain that shrinks frees its tail for other buffers.
- Partly dead values (patch schedules only; ordinary graphs never have them):
    * a value whose readers all read windows of it (the op's `first_byte_read`: a conv or pool
      with a negative pad skips leading rows/columns, a crop starts at its origin) frees, at
      each node, the bytes before the first byte any reader at or after that node touches: the
      image frees its rows as the patches move down;
    * an assembled output (a paste's: trait `assembled`) occupies only the bytes written so far
      (`written_bytes`: up to the end of its window).
  So a buffer occupies the byte range [offset + low(step), offset + size) at each step; the
  assembled split tensor can grow over the image rows already consumed.
- Scratch buffers are live during their node only; they are placed in the same arena.
- Placement: greedy first fit. Groups are taken one by one in some order and put at the lowest
  aligned offset where, at every node, they overlap no already placed group live at that node.
  Several orders are tried (TFLite Micro's greedy-by-size order first) and the smallest arena is
  kept; with in-place disabled this is exactly TFLite Micro's greedy planner on the same buffers.
- Alignment: every offset is a multiple of ALIGN (4 bytes) so that kernels may use word accesses;
  arena_bytes is rounded up to ALIGN as well. The arena itself is declared 8-byte aligned.
- Training graphs (passes/autodiff.py) are planned whole, forward and backward in one arena:
  float32 gradients take 4 bytes an element; a saved activation lives until its last backward
  reader; the backward ops' in-place rules and scratch are their `plan` hooks (compiler/ops/
  elementwise.py, data.py, conv_train.py); an activation the backward pass reads only as a
  gradient's mask (the op's `mask_read`) is kept as a bit mask (packable_masks); a trained layer
  whose forward kernel takes a folded bias gets the scratch its `bias_scratch_bytes` asks for, to
  refold it from its SRAM parameters. training_memory() reports it.
- Split weights (training): a conv whose update changes only some of its input channels keeps
  just those channels' weights in SRAM and reads the others from flash (split_weights). Its
  forward conv and input gradient run the plain split kernels (tinyc_conv2d_split,
  tinyc_conv2d_grad_input_split): out of place, no scratch, no folded bias.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import ops
from ..errors import TinycError
from ..ir import Graph, Node
from ..ops.base import PlanContext
from ..ops.conv import conv_kernel_kind  # noqa: F401  (tests/test_train_c.py)
# the in-place rules of the training steps' convs (tests import depthwise_grad_backwards_saved)
from ..ops.conv_train import depthwise_grad_backwards_saved, pointwise_grad_inplace_ok  # noqa: F401

ALIGN = 4
ORDERS = ("size", "area", "lifetime", "first")


def _is_alias(node: Node) -> bool:
    """The node's output is its input's bytes (a reshape, a gradient's view)."""
    return ops.get(node).alias


def _align(x: int, a: int = ALIGN) -> int:
    return (x + a - 1) // a * a


@dataclass
class Buffer:
    """One value in the arena: a tensor with its reshape aliases, or a node's scratch."""
    id: int
    size: int                 # bytes
    first: int                # first node index during which it is live
    last: int                 # last node index during which it is live (inclusive)
    tensors: list[str]        # activation tensors stored here (a tensor and its reshapes)
    kind: str = "activation"  # "activation" | "scratch" | "mask" (training: packed bit mask)
    node: int | None = None   # for scratch: the node index that uses it
    offset: int = -1
    # step -> first byte still read at or after that step (bytes before it are dead); absent: 0
    low: dict[int, int] = field(default_factory=dict)

    def span(self, step: int) -> tuple[int, int]:
        """Arena bytes [start, end) the buffer occupies during `step`."""
        return self.offset + self.low.get(step, 0), self.offset + self.size

    def overlaps_in_time(self, other: "Buffer") -> bool:
        return self.first <= other.last and other.first <= self.last

    def overlaps_in_space(self, other: "Buffer", step: int) -> bool:
        (a0, a1), (b0, b1) = self.span(step), other.span(step)
        return a0 < b1 and b0 < a1


@dataclass
class MemoryPlan:
    arena_bytes: int                      # exact size of the arena the code generator declares
    buffers: list[Buffer]
    tensor_offsets: dict[str, int]        # activation tensor -> arena offset
    tensor_buffer: dict[str, int]         # activation tensor -> buffer id
    scratch: dict[int, tuple[int, int]]   # node index -> (offset, size)
    inplace: dict[int, str]               # node index -> alias|paste|add|elementwise|crop|depthwise|pointwise
    lifetimes: dict[str, tuple[int, int]]  # activation tensor -> (first, last) node index
    peak_live_bytes: int                  # max over nodes of the bytes live at once (lower bound)
    no_reuse_bytes: int                   # every activation tensor in its own memory (reshape aliases free)
    order: str = "size"                   # the placement order that won
    alignment: int = ALIGN
    node_names: list[str] = field(default_factory=list)
    groups: list[list[int]] = field(default_factory=list)   # buffer ids placed at one offset
    handovers: list[tuple[int, int, int]] = field(default_factory=list)  # (node, input buf, output buf)
    # training: node index -> arena offset of the folded bias a trained layer recomputes each step
    bias_scratch: dict[int, int] = field(default_factory=dict)
    # training: activation -> its packed mask (packable_masks; the mask's offset is
    # tensor_offsets[masks[t]["name"]])
    masks: dict[str, dict] = field(default_factory=dict)

    def live_bytes(self, step: int) -> int:
        return sum(b.size - b.low.get(step, 0) for b in self.buffers if b.first <= step <= b.last)

    def summary(self) -> str:
        lines = [f"arena {self.arena_bytes} B (lower bound {self.peak_live_bytes} B, "
                 f"no reuse {self.no_reuse_bytes} B, order '{self.order}')"]
        for b in sorted(self.buffers, key=lambda b: (b.offset, b.first)):
            what = ", ".join(b.tensors) if b.tensors else f"scratch of node {b.node}"
            lines.append(f"  [{b.offset:>7}, {b.offset + b.size:>7})  nodes {b.first:>3}-{b.last:<3} "
                         f"{b.size:>7} B  {what}")
        return "\n".join(lines)


def tensor_lifetimes(g: Graph, skip: frozenset = frozenset()) -> dict[str, tuple[int, int]]:
    """(first, last) node index of every activation. Reads listed in `skip` as (node index,
    tensor) do not extend a lifetime (a packed mask stands in for them)."""
    last_index = len(g.nodes) - 1
    life: dict[str, list[int]] = {}
    for name in g.inputs:
        life[name] = [0, 0]
    for i, node in enumerate(g.nodes):
        for t in node.inputs:
            if t and not g.tensors[t].is_const:
                if t not in life:
                    raise TinycError(f"{node.describe()}: input '{t}' is read before it is "
                                     "produced; the node order is not topological")
                if (i, t) not in skip:
                    life[t][1] = max(life[t][1], i)
        for t in node.outputs:
            if t in life:
                raise TinycError(f"{node.describe()}: tensor '{t}' is produced twice")
            life[t] = [i, i]
    for name in g.outputs:
        life[name][1] = max(last_index, 0)
    return {k: (v[0], v[1]) for k, v in life.items()}


def plan_memory(g: Graph, inplace: bool = True, orders: tuple[str, ...] = ORDERS,
                pointwise: bool | None = None, pack_masks: bool = True,
                pointwise_grad: bool | None = None) -> MemoryPlan:
    """Lifetimes, in-place sharing and greedy placement of every activation and scratch buffer.
    `inplace=False` gives the plain TFLite-Micro-like plan (aliases only, no in-place kernels, no
    scratch: the code generator then calls the plain reference conv loop).
    `pointwise` enables in-place 1x1 convs, `pointwise_grad` in-place 1x1 input gradients
    (default for each: plan with and without, keep the smaller: sharing one offset can make the
    greedy placement worse).
    Training graphs: `pack_masks` keeps an activation that the backward pass reads only through
    grad_mask as a bit mask (see packable_masks)."""
    if not inplace:
        pointwise = pointwise_grad = False
    if pointwise is None or pointwise_grad is None:
        # no 1x1 input gradient could run in place: one plan fewer to try
        if pointwise_grad is None and not any(pointwise_grad_inplace_ok(g, n) for n in g.nodes):
            pointwise_grad = False
        plans = [plan_memory(g, inplace, orders, pw, pack_masks, pwg)
                 for pw in ((True, False) if pointwise is None else (pointwise,))
                 for pwg in ((True, False) if pointwise_grad is None else (pointwise_grad,))]
        return min(plans, key=lambda p: p.arena_bytes)   # ties: the first (in place)
    grp = _group(g, inplace, pointwise, pack_masks, pointwise_grad)
    buffers, group_list, profiles = grp.buffers, grp.groups, grp.profiles

    # ---- placement: keep the best of several greedy orders
    best = None
    for order in orders:
        offsets = _greedy_place(profiles, order)
        arena = _align(max((offsets[k] + _top(p) for k, p in enumerate(profiles)), default=0))
        if best is None or arena < best[0]:
            best = (arena, order, offsets)
    arena, order, offsets = best
    for k, members in enumerate(group_list):
        for v in members:
            buffers[v].offset = offsets[k]
    _grow_scratch(buffers, arena, grp.roomy)

    plan = MemoryPlan(
        arena_bytes=arena, buffers=buffers,
        tensor_offsets={t: buffers[v].offset for t, v in grp.value_of.items()},
        tensor_buffer=dict(grp.value_of),
        scratch={b.node: (b.offset, b.size) for b in buffers if b.kind == "scratch"},
        inplace=grp.inplace_nodes, lifetimes=grp.life, peak_live_bytes=_align(grp.peak_live()),
        no_reuse_bytes=grp.no_reuse, order=order, node_names=[n.name for n in g.nodes],
        groups=group_list, handovers=grp.handovers,
        masks=grp.masks)
    for i, rel in grp.bias_scratch.items():
        plan.bias_scratch[i] = plan.scratch[i][0] + rel
    verify_plan(g, plan)
    return plan


def _grow_scratch(buffers: list[Buffer], arena: int, roomy: dict[int, int]) -> None:
    """Give a node's scratch the larger size its kernel's faster variant asks for (roomy) where
    the placed arena has that many free bytes at that node: after the scratch where it was
    placed, else the lowest free gap elsewhere (a scratch lives at its node only, so it may
    move; in a patch schedule the gap after it is often a few bytes short of a second im2col
    window, which costs the first conv half its speed). The arena never grows."""
    scratch_of = {b.node: b for b in buffers if b.kind == "scratch"}
    for i, size in sorted(roomy.items()):
        b = scratch_of.get(i)
        if b is None or size <= b.size or b.first != b.last:
            continue
        others = [c.span(i) for c in buffers
                  if c is not b and c.size and c.first <= i <= c.last]

        def free(lo: int) -> bool:
            return lo + size <= arena and all(e <= lo or s >= lo + size for s, e in others)

        for lo in [b.offset] + sorted({0} | {_align(e) for _, e in others}):
            if free(lo):
                b.offset, b.size = lo, size
                break


def live_peak(g: Graph) -> int:
    """The planner's lower bound (peak_live_bytes of plan_memory with in-place kernels) without
    placing anything: cheap enough for searching many schedules."""
    return _align(_group(g, True, True).peak_live())


@dataclass
class _Grouping:
    """Values, scratch buffers and the in-place groups of a graph, before placement."""
    buffers: list[Buffer]
    value_of: dict[str, int]
    groups: list[list[int]]
    profiles: list[dict[int, int]]
    handovers: list[tuple[int, int, int]]
    inplace_nodes: dict[int, str]
    life: dict[str, tuple[int, int]]
    no_reuse: int
    steps: int
    # training: node index -> offset of the refolded bias inside the node's scratch
    bias_scratch: dict[int, int] = field(default_factory=dict)
    masks: dict[str, dict] = field(default_factory=dict)   # packable_masks
    roomy: dict[int, int] = field(default_factory=dict)   # PlanContext.roomy

    def peak_live(self) -> int:
        live = [0] * max(self.steps, 1)
        for p in self.profiles:
            for s, (lo, hi) in p.items():
                live[s] += hi - lo
        return max(live)


def _group(g: Graph, inplace: bool, pointwise: bool, pack_masks: bool = True,
           pointwise_grad: bool = True) -> _Grouping:
    masks = packable_masks(g) if pack_masks else {}
    split = split_weights(g)
    life = tensor_lifetimes(g, frozenset((i, y) for y, m in masks.items() for i in m["readers"]))
    acts = g.activations()
    producer = {t: n for n in g.nodes for t in n.outputs}

    # ---- values: a tensor and its reshapes are one value (same bytes)
    value_of: dict[str, int] = {}
    values: list[Buffer] = []
    for t in acts:
        prod = producer.get(t)
        if prod is not None and _is_alias(prod):
            b = values[value_of[prod.inputs[0]]]
            b.tensors.append(t)
            b.size = max(b.size, g.tensors[t].nbytes)
            b.first, b.last = min(b.first, life[t][0]), max(b.last, life[t][1])
        else:
            b = Buffer(len(values), g.tensors[t].nbytes, life[t][0], life[t][1], [t])
            values.append(b)
        value_of[t] = b.id
    outputs = {value_of[t] for t in g.outputs}
    _partly_dead(g, values, value_of, outputs)

    def dies_at(t: str, i: int) -> bool:
        """The value of t is read for the last time by node i and is no graph output."""
        v = value_of[t]
        return values[v].last <= i and v not in outputs

    # ---- groups: values chained by in-place nodes share one offset
    group_of = {b.id: b.id for b in values}
    groups: dict[int, list[int]] = {b.id: [b.id] for b in values}
    handovers: list[tuple[int, int, int]] = []
    inplace_nodes: dict[int, str] = {}
    scratch_sizes: dict[int, int] = {}

    def join(i: int, src: str, out: str, kind: str) -> None:
        vs, vo = value_of[src], value_of[out]
        gs, go = group_of[vs], group_of[vo]
        for v in groups.pop(go):
            group_of[v] = gs
            groups[gs].append(v)
        handovers.append((i, vs, vo))
        inplace_nodes[i] = kind

    ctx = PlanContext(g, inplace, pointwise, pointwise_grad, split, dies_at, join, scratch_sizes)
    for i, node in enumerate(g.nodes):
        op = ops.get(node)
        if op.alias:
            inplace_nodes[i] = "alias"
        else:
            op.plan(ctx, i, node)   # in-place sharing (join) and scratch, if its kernel has any

    # a trained layer whose forward kernel takes a folded bias gets it recomputed from the current
    # (SRAM) weights and bias into its scratch, after the kernel's own scratch
    bias_scratch: dict[int, int] = {}
    for i, node in enumerate(g.nodes):
        size = ops.get(node).bias_scratch_bytes(ctx, i, node, inplace_nodes.get(i))
        if size:
            bias_scratch[i] = _align(scratch_sizes.get(i, 0))
            scratch_sizes[i] = bias_scratch[i] + size

    buffers = list(values)
    for y, m in masks.items():
        b = Buffer(len(buffers), m["bytes"], m["after"], max(m["readers"]), [m["name"]], "mask")
        buffers.append(b)
        groups[b.id] = [b.id]
        value_of[m["name"]] = b.id
    for i, size in scratch_sizes.items():
        b = Buffer(len(buffers), size, i, i, [], "scratch", i)
        buffers.append(b)
        groups[b.id] = [b.id]
    group_list = [sorted(m) for m in groups.values()]
    profiles = [_profile([buffers[v] for v in m]) for m in group_list]
    no_reuse = sum(g.tensors[t].nbytes for t in acts
                   if not (t in producer and _is_alias(producer[t])))
    return _Grouping(buffers, value_of, group_list, profiles, handovers, inplace_nodes, life,
                     no_reuse, len(g.nodes), bias_scratch, masks,
                     {i: n for i, n in ctx.roomy.items() if i not in bias_scratch})


def packable_masks(g: Graph) -> dict[str, dict]:
    """Saved activations the backward pass reads only through grad_mask nodes (or as the mask
    of a dw_pw_grad node: passes/fuse_grad.py) (the output of a
    clamped layer whose gradient is masked): one bit per element, lo < y < hi, is all it needs.
    For each: the mask is packed right after the node producing y ('after', in training runs
    only), y itself dies after its last forward reader, and the mask lives until its last
    grad_mask ('readers'). Bits are little-endian within a byte: element e is bit e % 8 of
    byte e / 8."""
    train = g.meta.get("train")
    if not train:
        return {}
    n_forward = train["forward_nodes"]
    readers: dict[str, list[tuple[int, Node]]] = {}
    producer: dict[str, int] = {}
    for i, node in enumerate(g.nodes):
        for t in node.inputs:
            if t:
                readers.setdefault(t, []).append((i, node))
        for t in node.outputs:
            producer[t] = i
    masks = {}
    for y, rs in readers.items():
        t = g.tensors[y]
        back = [(i, n) for i, n in rs if i >= n_forward]
        if (t.is_const or t.dtype != "int8" or not back or y in g.outputs
                or producer.get(y, n_forward) >= n_forward or t.size < 16):
            continue
        bounds = {ops.get(n).mask_read(n, y) for _, n in back}
        if None in bounds:
            continue
        if len(bounds) != 1:
            continue
        lo, hi = bounds.pop()
        masks[y] = {"name": f"{y}#mask", "after": producer[y], "readers": [i for i, _ in back],
                    "bytes": (t.size + 7) // 8, "size": t.size,
                    "lo": -129 if lo is None else int(lo), "hi": 128 if hi is None else int(hi)}
    return masks


def first_byte_read(g: Graph, node: Node, t: str) -> int:
    """The lowest byte of tensor t that node reads: 0 unless the node reads a window of it (a
    conv/pool whose negative pads skip leading rows/columns, a crop)."""
    return ops.get(node).first_byte_read(g, node, t)


def _partly_dead(g: Graph, values: list[Buffer], value_of: dict[str, int], outputs: set) -> None:
    """Buffer.size of assembled outputs (a paste's) = bytes written so far; Buffer.low of values
    read only through windows. See the module docstring."""
    readers: dict[int, list[tuple[int, int]]] = {}   # value -> [(step, first byte read)]
    for i, node in enumerate(g.nodes):
        for t in node.inputs:
            if t in value_of:
                readers.setdefault(value_of[t], []).append((i, first_byte_read(g, node, t)))
        if ops.get(node).assembled:   # a paste: its buffer holds the bytes written so far
            b = values[value_of[node.outputs[0]]]
            if len(b.tensors) == 1:
                b.size = ops.get(node).written_bytes(g, node, lambda t: values[value_of[t]].size)
    for v, rs in readers.items():
        b = values[v]
        if v in outputs or all(fb == 0 for _, fb in rs):
            continue
        born = b.first if b.tensors[0] not in g.inputs else -1
        later = 1 << 62
        for s in range(b.last, b.first - 1, -1):
            later = min([later] + [fb for step, fb in rs if step == s])
            if s != born and later:
                b.low[s] = min(later, b.size)


def _profile(members: list[Buffer]) -> dict[int, tuple[int, int]]:
    """Byte range [lo, hi) relative to the group's offset that a group of buffers placed at one
    offset occupies at each node it is live."""
    prof: dict[int, tuple[int, int]] = {}
    for b in members:
        for s in range(b.first, b.last + 1):
            lo, hi = b.low.get(s, 0), b.size
            if s in prof:
                lo, hi = min(lo, prof[s][0]), max(hi, prof[s][1])
            prof[s] = (lo, hi)
    return prof


def _top(profile: dict[int, tuple[int, int]]) -> int:
    return max(hi for _, hi in profile.values())


def _sort_key(order: str, profiles: list[dict[int, int]]):
    def size(k):
        return _top(profiles[k])

    def first(k):
        return min(profiles[k])

    def span(k):
        return max(profiles[k]) - min(profiles[k])

    if order == "size":        # TFLite Micro's GreedyMemoryPlanner: biggest first
        return lambda k: (-size(k), first(k), k)
    if order == "area":
        return lambda k: (-sum(hi - lo for lo, hi in profiles[k].values()), -size(k), k)
    if order == "lifetime":
        return lambda k: (-span(k), -size(k), k)
    if order == "first":
        return lambda k: (first(k), -size(k), k)
    raise ValueError(f"unknown placement order '{order}'; choose from {ORDERS}")


def _greedy_place(profiles: list[dict[int, int]], order: str) -> dict[int, int]:
    """First fit: each group (in `order`) at the lowest aligned offset where, at every node it is
    live, its bytes overlap none of the groups already placed that are live at that node."""
    placed: list[int] = []
    offsets: dict[int, int] = {}
    spans = [(min(p), max(p)) for p in profiles]
    for k in sorted(range(len(profiles)), key=_sort_key(order, profiles)):
        prof = profiles[k]
        forbidden = []   # offsets x in [lo, hi) would overlap a placed group
        for j in placed:
            if spans[j][0] > spans[k][1] or spans[k][0] > spans[j][1]:
                continue   # never live at the same time
            o, other = offsets[j], profiles[j]
            for s, (lo, hi) in prof.items():
                if s in other and hi > lo and other[s][1] > other[s][0]:
                    # x + [lo, hi) meets o + [olo, ohi)  <=>  o + olo - hi < x < o + ohi - lo
                    olo, ohi = other[s]
                    forbidden.append((o + olo - hi + 1, o + ohi - lo))
        offset = 0
        for lo, hi in sorted(forbidden):
            if hi <= offset:
                continue
            if lo > offset:
                break
            offset = _align(hi)
        offsets[k] = offset
        placed.append(k)
    return offsets


def verify_plan(g: Graph, plan: MemoryPlan) -> None:
    """Brute-force check: at every node, no two live buffers share a byte (except an in-place
    node's input and output at that node), all inside the arena and aligned, and every tensor
    fits its buffer (a paste's output: the bytes written so far). Raises AssertionError on a
    planner bug."""
    bs = plan.buffers
    handover = {(i, min(a, b), max(a, b)) for i, a, b in plan.handovers}
    assembled = {t for n in g.nodes if ops.get(n).assembled for t in n.outputs}
    for b in bs:
        assert b.offset % plan.alignment == 0, f"buffer {b.id} misaligned at {b.offset}"
        assert 0 <= b.offset and b.offset + b.size <= plan.arena_bytes, f"buffer {b.id} outside"
        if b.kind == "mask":
            continue
        for t in b.tensors:
            assert t in assembled or g.tensors[t].nbytes <= b.size
    for y, m in plan.masks.items():
        b = bs[plan.tensor_buffer[m["name"]]]
        assert b.size * 8 >= g.tensors[y].size and b.first == m["after"]
        assert b.last >= max(m["readers"])
    live_at: list[list[Buffer]] = [[] for _ in g.nodes]
    for b in bs:
        if b.size:
            for i in range(b.first, b.last + 1):
                live_at[i].append(b)
    for i, live in enumerate(live_at):
        live.sort(key=lambda b: b.span(i))
        for k, a in enumerate(live):
            for b in live[k + 1:]:
                if b.span(i)[0] >= a.span(i)[1]:
                    break   # sorted by start: no later buffer reaches into a
                assert (i, min(a.id, b.id), max(a.id, b.id)) in handover, \
                    f"node {i}: buffers {a.id} {a.tensors} and {b.id} {b.tensors} overlap"


# ---------------------------------------------------------------- training steps
def update_nodes(g: Graph) -> list[Node]:
    """The conv2d_update nodes of a training graph, those inside fused nodes included."""
    return [u for n in g.nodes for u in ops.get(n).updates(n)]


def trainable_tensors(g: Graph) -> list[tuple[str, str]]:
    """(tensor, "weight" | "bias") of every parameter a training graph updates, in forward
    order of their layers (weights before biases): the arrays kept in SRAM."""
    updates = {n.name[:-len("/update")]: n for n in update_nodes(g)}
    out = []
    for node in g.nodes:
        upd = updates.get(node.name)
        if upd is None:
            continue
        if upd.attrs.get("channels") is not None and len(upd.attrs["channels"]):
            out.append((upd.inputs[2], "weight"))
        if upd.attrs.get("update_bias"):
            out.append((upd.inputs[3], "bias"))
    return out


def split_weights(g: Graph) -> dict[str, dict]:
    """Trained conv weights stored split (runtime_c kernels.h tinyc_split_weights): only the
    input channels their update changes are copied to SRAM, the other channels are read from
    the flash tensor. weight tensor -> {"channels": those channels (global, ascending),
    "groups": the conv's groups}. Weights updated on every input channel (and fully connected
    layers) stay whole in SRAM."""
    out = {}
    for node in update_nodes(g):
        channels = node.attrs.get("channels")
        if channels is None or node.attrs.get("fc"):
            continue
        w = g.tensors[node.inputs[2]]
        groups = int(node.attrs["groups"])
        if 0 < len(channels) < w.shape[3] * groups:
            out[node.inputs[2]] = {"channels": np.asarray(channels, np.int64), "groups": groups}
    return out


def split_sram_count(g: Graph, name: str, split: dict) -> int:
    """Elements of a split weight in SRAM: kernel_h * kernel_w for each output channel and each
    kept channel of its group, i.e. kh * kw * (out_c / groups) * kept channels."""
    out_c, kh, kw, _ = g.tensors[name].shape
    return kh * kw * (out_c // split["groups"]) * len(split["channels"])


def params_sram_bytes(g: Graph) -> int:
    """Bytes of all the trained parameters a training graph keeps in SRAM."""
    split = split_weights(g)
    return sum(param_sram_bytes(g, t, split) for t, _ in trainable_tensors(g))


def param_sram_bytes(g: Graph, name: str, split: dict | None = None) -> int:
    """Bytes a trained parameter takes in SRAM (the whole tensor unless stored split)."""
    split = split_weights(g) if split is None else split
    t = g.tensors[name]
    if name in split:
        return split_sram_count(g, name, split[name]) * t.nbytes // t.size
    return t.nbytes


def _category(g: Graph, b: Buffer, n_forward: int) -> str:
    if b.kind == "scratch":
        return "scratch"
    if b.kind == "mask":
        return "saved"          # a packed mask, kept for the backward pass
    if g.tensors[b.tensors[0]].dtype == "float32":
        return "gradient"
    if b.first < n_forward <= b.last:
        return "saved"          # an int8 forward activation kept for the backward pass
    return "activation"


def _moment(g: Graph, plan: MemoryPlan, i: int, n_forward: int) -> dict:
    """What occupies the arena while node i runs. A group of buffers placed at one offset
    (in-place chains) counts once, with the bytes of its largest member live at node i (a
    partly dead buffer of a patch schedule: only its byte range still live)."""
    cats = {"activation_bytes": 0, "saved_bytes": 0, "gradient_bytes": 0, "scratch_bytes": 0}
    rows = []
    high = 0
    for members in plan.groups:
        live = [plan.buffers[v] for v in members
                if plan.buffers[v].first <= i <= plan.buffers[v].last and plan.buffers[v].size]
        if not live:
            continue
        big = max(live, key=lambda b: b.size - b.low.get(i, 0))
        nbytes = big.size - big.low.get(i, 0)
        cat = _category(g, big, n_forward)
        cats[cat + "_bytes"] += nbytes
        high = max(high, big.offset + big.size)
        rows.append({"bytes": nbytes, "kind": cat, "offset": big.offset + big.low.get(i, 0),
                     "what": ", ".join(big.tensors) if big.tensors else f"scratch of node {big.node}"})
    node = g.nodes[i]
    return {"node": i, "name": node.name, "op": node.op,
            "arena_bytes": sum(cats.values()), "live_bytes": sum(cats.values()),
            "high_water_bytes": _align(high), **cats,
            "largest": sorted(rows, key=lambda r: -r["bytes"])[:6]}


def training_memory(g: Graph, plan: MemoryPlan, stack_reserve: int = 0) -> dict:
    """Memory of one training step (a graph from passes/autodiff.py planned by plan_memory):
    the arena, the trainable parameters copied to SRAM (of a split weight only its trained
    channels: param_sram_bytes), and the two moments that matter:
    the fullest node of the forward pass and the fullest node of the backward pass (loss
    included), each with the bytes live while it runs ('live_bytes', an in-place chain counted
    once) split into int8 activations, int8 activations saved for the backward pass, float32
    gradients and kernel scratch, and the arena's high-water mark at that node. The arena is at
    least the larger of the two live figures; the placement may need a little more."""
    if "train" not in g.meta:
        raise TinycError("training_memory needs a training graph (passes/autodiff.py)")
    n_forward = g.meta["train"]["forward_nodes"]
    params = trainable_tensors(g)
    split = split_weights(g)
    w_bytes = sum(param_sram_bytes(g, t, split) for t, kind in params if kind == "weight")
    b_bytes = sum(g.tensors[t].nbytes for t, kind in params if kind == "bias")
    moments = [_moment(g, plan, i, n_forward) for i in range(len(g.nodes))]
    fwd = max(moments[:n_forward], key=lambda m: m["live_bytes"])
    bwd = max(moments[n_forward:], key=lambda m: m["live_bytes"])
    saved = {t for b in plan.buffers if b.kind == "activation" and b.first < n_forward <= b.last
             for t in b.tensors[:1] if g.tensors[t].dtype == "int8"}
    mask_bytes = sum(b.size for b in plan.buffers if b.kind == "mask")
    return {
        "arena_bytes": plan.arena_bytes,
        "params_sram_bytes": w_bytes + b_bytes,
        "params": {"weights_bytes": w_bytes, "biases_bytes": b_bytes, "tensors": len(params),
                   # trained weights of which only the updated channels are in SRAM, and the
                   # bytes of those tensors left in flash (read from there, never copied)
                   "split_tensors": len(split),
                   "split_flash_bytes": sum(g.tensors[t].nbytes - param_sram_bytes(g, t, split)
                                            for t in split)},
        "stack_reserve_bytes": stack_reserve,
        "sram_bytes": plan.arena_bytes + w_bytes + b_bytes + stack_reserve,
        "saved_activation_bytes": sum(g.tensors[t].nbytes for t in saved),
        "saved_mask_bytes": mask_bytes,
        "peak": "forward" if fwd["live_bytes"] >= bwd["live_bytes"] else "backward",
        "forward_peak": fwd,
        "backward_peak": bwd,
        "nodes": len(g.nodes), "forward_nodes": n_forward,
    }
