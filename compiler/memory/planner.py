"""Static memory planning: every activation and scratch buffer of one inference in one arena.

Contract
- Execution order is graph.nodes. A tensor is live from the node that produces it (the graph
  input: from node 0) to its last reader, inclusive; a graph output stays live to the last node
  (the model API copies the input into the arena before node 0 and the output out after the last
  node, so both count towards the arena).
- Tensors that share memory form one *buffer*:
    * reshape: its output is an alias of its input (same bytes, NHWC order is unchanged since
      passes/flatten_order.py removed every NCHW flatten);
    * add, clamp, requantize: the output is written over an input whose buffer dies at this node
      (element-wise kernels read element i before writing element i);
    * depthwise conv with depth multiplier 1: computed in place over its dying input, channel by
      channel through a scratch of in_h * in_w bytes (tinyc_depthwise_conv_inplace). The shared
      buffer has max(input, output) bytes.
  A buffer is live from its first member's birth to its last member's death; its size is its
  largest member's.
- Scratch buffers are live during their node only; they are placed in the same arena.
- Placement: greedy first fit. Buffers are taken one by one in some order and put at the lowest
  4-byte aligned offset where they overlap no already placed buffer with an overlapping lifetime.
  Several orders are tried (TFLite Micro's greedy-by-size order first) and the smallest arena is
  kept, so the result is never larger than TFLite Micro's greedy planner on the same buffers.
- Alignment: every offset is a multiple of ALIGN (4 bytes) so that kernels may use word accesses;
  arena_bytes is rounded up to ALIGN as well. The arena itself is declared 8-byte aligned.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import TinycError
from ..ir import Graph, Node

ALIGN = 4
ORDERS = ("size", "area", "lifetime", "first")


def _align(x: int, a: int = ALIGN) -> int:
    return (x + a - 1) // a * a


@dataclass
class Buffer:
    id: int
    size: int                 # bytes
    first: int                # first node index during which it is live
    last: int                 # last node index during which it is live (inclusive)
    tensors: list[str]        # activation tensors stored here (empty for scratch)
    kind: str = "activation"  # "activation" | "scratch"
    node: int | None = None   # for scratch: the node index that uses it
    offset: int = -1

    def overlaps_in_time(self, other: "Buffer") -> bool:
        return self.first <= other.last and other.first <= self.last

    def overlaps_in_space(self, other: "Buffer") -> bool:
        return self.offset < other.offset + other.size and other.offset < self.offset + self.size


@dataclass
class MemoryPlan:
    arena_bytes: int                      # exact size of the arena the code generator declares
    buffers: list[Buffer]
    tensor_offsets: dict[str, int]        # activation tensor -> arena offset
    tensor_buffer: dict[str, int]         # activation tensor -> buffer id
    scratch: dict[int, tuple[int, int]]   # node index -> (offset, size)
    inplace: dict[int, str]               # node index -> "alias" | "add" | "elementwise" | "depthwise"
    lifetimes: dict[str, tuple[int, int]]  # activation tensor -> (first, last) node index
    peak_live_bytes: int                  # max over nodes of the bytes live at once (lower bound)
    no_reuse_bytes: int                   # every activation tensor in its own memory (reshape aliases free)
    order: str = "size"                   # the placement order that won
    alignment: int = ALIGN
    node_names: list[str] = field(default_factory=list)

    def live_bytes(self, step: int) -> int:
        return sum(b.size for b in self.buffers if b.first <= step <= b.last)

    def summary(self) -> str:
        lines = [f"arena {self.arena_bytes} B (lower bound {self.peak_live_bytes} B, "
                 f"no reuse {self.no_reuse_bytes} B, order '{self.order}')"]
        for b in sorted(self.buffers, key=lambda b: (b.offset, b.first)):
            what = ", ".join(b.tensors) if b.tensors else f"scratch of node {b.node}"
            lines.append(f"  [{b.offset:>7}, {b.offset + b.size:>7})  nodes {b.first:>3}-{b.last:<3} "
                         f"{b.size:>7} B  {what}")
        return "\n".join(lines)


def depthwise_inplace_ok(g: Graph, node: Node) -> bool:
    """A conv the in-place depthwise kernel can run: groups == C_in == C_out, more than 1 channel."""
    if node.op != "conv2d":
        return False
    cin = g.tensors[node.inputs[0]].shape[-1]
    cout = g.tensors[node.outputs[0]].shape[-1]
    return node.attrs.get("groups", 1) == cin == cout and cin > 1


def tensor_lifetimes(g: Graph) -> dict[str, tuple[int, int]]:
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
                life[t][1] = max(life[t][1], i)
        for t in node.outputs:
            if t in life:
                raise TinycError(f"{node.describe()}: tensor '{t}' is produced twice")
            life[t] = [i, i]
    for name in g.outputs:
        life[name][1] = max(last_index, 0)
    return {k: (v[0], v[1]) for k, v in life.items()}


def plan_memory(g: Graph, inplace: bool = True, orders: tuple[str, ...] = ORDERS) -> MemoryPlan:
    """Lifetimes, in-place sharing and greedy placement of every activation and scratch buffer.
    `inplace=False` gives the plain TFLite-Micro-like plan (aliases only, no in-place kernels)."""
    life = tensor_lifetimes(g)
    acts = g.activations()

    # ---- union of tensors that share a buffer (greedy in execution order)
    parent = {t: t for t in acts}

    def find(t: str) -> str:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    members = {t: [t] for t in acts}

    def dies_at(t: str, i: int) -> bool:
        """The whole buffer of t is read for the last time by node i (and is no graph output)."""
        return all(life[m][1] <= i and m not in g.outputs for m in members[find(t)])

    def join(out: str, src: str) -> None:
        r_src, r_out = find(src), find(out)
        if r_src == r_out:
            return
        parent[r_out] = r_src
        members[r_src] += members.pop(r_out)

    inplace_nodes: dict[int, str] = {}
    scratch_sizes: dict[int, int] = {}
    for i, node in enumerate(g.nodes):
        out = node.outputs[0]
        if node.op == "reshape":
            join(out, node.inputs[0])
            inplace_nodes[i] = "alias"
        elif not inplace:
            continue
        elif node.op == "add":
            for src in node.inputs:
                if dies_at(src, i):
                    join(out, src)
                    inplace_nodes[i] = "add"
                    break
        elif node.op in ("clamp", "requantize"):
            if dies_at(node.inputs[0], i):
                join(out, node.inputs[0])
                inplace_nodes[i] = "elementwise"
        elif depthwise_inplace_ok(g, node) and dies_at(node.inputs[0], i):
            join(out, node.inputs[0])
            inplace_nodes[i] = "depthwise"
            _, h, w, _ = g.tensors[node.inputs[0]].shape
            scratch_sizes[i] = h * w

    # ---- buffers
    buffers: list[Buffer] = []
    tensor_buffer: dict[str, int] = {}
    for root in [t for t in acts if find(t) == t]:
        ms = members[root]
        b = Buffer(len(buffers), max(g.tensors[m].nbytes for m in ms),
                   min(life[m][0] for m in ms), max(life[m][1] for m in ms), list(ms))
        for m in ms:
            tensor_buffer[m] = b.id
        buffers.append(b)
    for i, size in scratch_sizes.items():
        buffers.append(Buffer(len(buffers), size, i, i, [], "scratch", i))

    # ---- placement: keep the best of several greedy orders
    best = None
    for order in orders:
        offsets = _greedy_place(buffers, order)
        arena = _align(max((offsets[b.id] + b.size for b in buffers), default=0))
        if best is None or arena < best[0]:
            best = (arena, order, offsets)
    arena, order, offsets = best
    for b in buffers:
        b.offset = offsets[b.id]

    steps = range(max(len(g.nodes), 1))
    peak_live = max(sum(b.size for b in buffers if b.first <= s <= b.last) for s in steps)
    no_reuse = sum(g.tensors[t].nbytes for t in acts if not _is_alias(g, t))
    plan = MemoryPlan(
        arena_bytes=arena, buffers=buffers,
        tensor_offsets={t: buffers[tensor_buffer[t]].offset for t in acts},
        tensor_buffer=tensor_buffer,
        scratch={b.node: (b.offset, b.size) for b in buffers if b.kind == "scratch"},
        inplace=inplace_nodes, lifetimes=life, peak_live_bytes=_align(peak_live),
        no_reuse_bytes=no_reuse, order=order, node_names=[n.name for n in g.nodes])
    verify_plan(g, plan)
    return plan


def _is_alias(g: Graph, t: str) -> bool:
    """Reshape outputs never get memory of their own, even without any planning."""
    p = g.producer(t)
    return p is not None and p.op == "reshape"


def _sort_key(order: str):
    if order == "size":        # TFLite Micro's GreedyMemoryPlanner: biggest first
        return lambda b: (-b.size, b.first, b.id)
    if order == "area":
        return lambda b: (-b.size * (b.last - b.first + 1), -b.size, b.id)
    if order == "lifetime":
        return lambda b: (-(b.last - b.first), -b.size, b.id)
    if order == "first":
        return lambda b: (b.first, -b.size, b.id)
    raise ValueError(f"unknown placement order '{order}'; choose from {ORDERS}")


def _greedy_place(buffers: list[Buffer], order: str) -> dict[int, int]:
    placed: list[tuple[int, int, Buffer]] = []   # (offset, end, buffer)
    offsets: dict[int, int] = {}
    for b in sorted(buffers, key=_sort_key(order)):
        conflicts = sorted((o, e) for o, e, p in placed if p.overlaps_in_time(b))
        offset = 0
        for o, e in conflicts:
            if offset + b.size <= o:
                break
            offset = max(offset, _align(e))
        offsets[b.id] = offset
        placed.append((offset, offset + b.size, b))
    return offsets


def verify_plan(g: Graph, plan: MemoryPlan) -> None:
    """Brute-force check: no two buffers live at the same node share a byte, all inside the
    arena, aligned, and every tensor fits its buffer. Raises AssertionError on a planner bug."""
    bs = plan.buffers
    for b in bs:
        assert b.offset % plan.alignment == 0, f"buffer {b.id} misaligned at {b.offset}"
        assert 0 <= b.offset and b.offset + b.size <= plan.arena_bytes, f"buffer {b.id} outside"
        for t in b.tensors:
            assert g.tensors[t].nbytes <= b.size
    for i, a in enumerate(bs):
        for b in bs[i + 1:]:
            if a.overlaps_in_time(b) and a.size and b.size:
                assert not a.overlaps_in_space(b), \
                    f"buffers {a.id} {a.tensors} and {b.id} {b.tensors} overlap"
