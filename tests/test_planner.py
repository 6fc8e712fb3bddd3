"""Memory planner: no two live buffers overlap (checked by brute force, independently of the
planner's own bookkeeping), the arena is the exact peak of its placement, in-place rules."""
from __future__ import annotations

import numpy as np
import pytest

from tinyc.ir import Graph, Node, Tensor
from tinyc.memory.planner import ALIGN, plan_memory
from tinyc.pipeline import import_float
from conftest import SHARED_NAMES, shared_model


# ---------------------------------------------------------------- a tiny int8 graph builder
class G:
    """Shapes and ops only: the planner reads nothing else."""

    def __init__(self, shape):
        self.t = {"x": Tensor("x", tuple(shape), "int8")}
        self.nodes: list[Node] = []

    def _out(self, shape):
        name = f"t{len(self.nodes)}"
        self.t[name] = Tensor(name, tuple(shape), "int8")
        return name

    def conv(self, x, shape, groups=1, k=3):
        cin = self.t[x].shape[-1]
        w = f"w{len(self.nodes)}"
        self.t[w] = Tensor(w, (shape[-1], k, k, cin // groups), "int8",
                           np.zeros((shape[-1], k, k, cin // groups), np.int8))
        y = self._out(shape)
        self.nodes.append(Node(y, "conv2d", [x, w], [y], dict(groups=groups)))
        return y

    def op(self, op, ins, shape, **attrs):
        y = self._out(shape)
        self.nodes.append(Node(y, op, list(ins), [y], attrs))
        return y

    def graph(self, out):
        return Graph(self.t, self.nodes, ["x"], [out])


# ---------------------------------------------------------------- independent brute-force check
def brute_force_check(g: Graph, plan) -> None:
    """Every byte of the arena, at every node: at most one live value lives there, except the
    sharing the IR allows (a reshape output is its input's bytes; an in-place node's output may
    take its input's bytes at that very node, when the input is not read afterwards)."""
    n = len(g.nodes)
    birth, death = {g.inputs[0]: 0}, {g.inputs[0]: 0}
    for i, node in enumerate(g.nodes):
        for t in node.inputs:
            if t in birth:
                death[t] = max(death[t], i)
        for t in node.outputs:
            birth[t], death[t] = i, i
    for t in g.outputs:
        death[t] = n - 1
    # reshape alias classes: a value and its reshapes are one value
    root = {t: t for t in birth}
    for node in g.nodes:
        if node.op == "reshape":
            root[node.outputs[0]] = root[node.inputs[0]]
    values: dict[str, list] = {}
    for t in birth:
        r = root[t]
        lo, hi = values.get(r, (birth[t], death[t]))
        values[r] = (min(lo, birth[t]), max(hi, death[t]))
        if t != r:
            assert plan.tensor_offsets[t] == plan.tensor_offsets[r], f"reshape {t} not aliased"
    size = {r: max(g.tensors[t].nbytes for t in birth if root[t] == r) for r in values}
    for i in range(n):
        owner = np.full(plan.arena_bytes, -1, np.int64)
        names = [r for r, (lo, hi) in values.items() if lo <= i <= hi]
        handover = {}   # in-place at node i: output value -> the input value it replaces
        if i in plan.inplace and plan.inplace[i] != "alias":
            node = g.nodes[i]
            src = [root[t] for t in node.inputs if t in root
                   and plan.tensor_offsets[t] == plan.tensor_offsets[node.outputs[0]]]
            assert src, f"node {i} is in place but shares no input's memory"
            assert values[src[0]][1] == i, f"node {i} overwrites {src[0]}, read later"
            assert src[0] not in [root[o] for o in g.outputs]
            handover[root[node.outputs[0]]] = src[0]
        for k, r in sorted(enumerate(names), key=lambda kr: kr[1] in handover):
            off = plan.tensor_offsets[r]
            assert off % ALIGN == 0
            assert off + size[r] <= plan.arena_bytes, f"{r} outside the arena"
            region = owner[off: off + size[r]]
            allowed = [-1] + ([names.index(handover[r])] if r in handover else [])
            clash = ~np.isin(region, allowed)
            assert not clash.any(), f"node {i}: {r} overlaps {names[region[clash][0]]}"
            region[:] = k
        if i in plan.scratch:
            off, sz = plan.scratch[i]
            assert off % ALIGN == 0 and off + sz <= plan.arena_bytes
            assert (owner[off: off + sz] == -1).all(), f"scratch of node {i} overlaps a value"
            owner[off: off + sz] = len(names)


def chain_graph():
    b = G((1, 10, 10, 4))                                  # 400
    a = b.conv("x", (1, 10, 10, 8))                        # 800
    c = b.conv(a, (1, 5, 5, 16))                           # 400
    d = b.op("reshape", [c], (1, 400))
    e = b.op("fully_connected", [d], (1, 10))              # 10
    return b.graph(e)


def test_chain_peak_exact():
    g = chain_graph()
    plan = plan_memory(g)
    brute_force_check(g, plan)
    # live sets: {x, a, im2col 3*3*4} = 1236, {a, c, im2col 3*3*8} = 1272, {c, e} = 410
    assert plan.peak_live_bytes == 1272
    assert plan.arena_bytes == 1272
    # im2col windows of 36 and 72 bytes; node 0's scratch has room for two windows (the faster
    # kernel variant) in bytes free at that node: the arena does not grow for it
    assert plan.scratch[0][1] == 2 * 36 and plan.scratch[1][1] == 72
    plain = plan_memory(g, inplace=False)                  # no scratch: 1200
    brute_force_check(g, plain)
    assert plain.arena_bytes == 1200 and not plain.scratch
    assert plan.no_reuse_bytes == 400 + 800 + 400 + 10
    assert plan.inplace == {2: "alias"}
    assert plan.lifetimes["x"] == (0, 0)
    assert plan.lifetimes[g.outputs[0]] == (3, 3)


def test_arena_is_max_end_and_aligned():
    b = G((1, 3, 3, 3))                                    # 27 bytes: forces alignment
    a = b.conv("x", (1, 3, 3, 5))                          # 45
    c = b.conv(a, (1, 3, 3, 7))                            # 63
    d = b.op("add", [c, c], (1, 3, 3, 7))
    g = b.graph(b.op("max_pool", [d], (1, 1, 1, 7)))
    plan = plan_memory(g)
    brute_force_check(g, plan)
    ends = max(buf.offset + buf.size for buf in plan.buffers)
    assert plan.arena_bytes == (ends + ALIGN - 1) // ALIGN * ALIGN
    assert all(buf.offset % ALIGN == 0 for buf in plan.buffers)


def test_depthwise_in_place_with_scratch():
    b = G((1, 8, 8, 6))
    a = b.conv("x", (1, 8, 8, 6), groups=6)                # depthwise over the dying input
    g = b.graph(b.conv(a, (1, 8, 8, 4), k=1))
    plan = plan_memory(g)
    brute_force_check(g, plan)
    assert plan.inplace[0] == "depthwise"
    assert plan.tensor_offsets["x"] == plan.tensor_offsets[a]
    assert plan.scratch[0][1] == 64
    # the 1x1 conv runs in place too: x/a/out (384) + depthwise scratch (64) at node 0
    # one input pixel of scratch (6 B), grown to two where free (the faster variant)
    assert plan.inplace[1] == "pointwise" and plan.scratch[1][1] == 2 * 6
    assert plan.arena_bytes == 448
    # without in-place 1x1: a (384) + out (256) at node 1
    plan = plan_memory(g, pointwise=False)
    brute_force_check(g, plan)
    assert 1 not in plan.inplace and plan.arena_bytes == 640


def test_roomy_scratch_moves_to_a_free_gap():
    """A scratch whose faster size does not fit after its placed offset moves to the lowest gap
    free at its node (a patch schedule's first conv: two im2col windows instead of one); it
    never leaves the arena, never overlaps a live buffer, and stays put when no gap fits."""
    from tinyc.memory.planner import Buffer, _grow_scratch

    def bufs():
        return [Buffer(0, 40, 0, 3, ["a"], offset=0),     # live at node 2: [0, 40)
                Buffer(1, 27, 2, 2, [], "scratch", 2, offset=40),
                Buffer(2, 20, 1, 2, ["b"], offset=68),    # live at node 2: [68, 88)
                Buffer(3, 64, 0, 1, ["c"], offset=88)]    # dead at node 2: [88, 152) is free
    b = bufs()
    _grow_scratch(b, 152, {2: 54})
    assert (b[1].offset, b[1].size) == (88, 54)
    b = bufs()
    _grow_scratch(b, 130, {2: 54})                        # the gap ends at 130: too short
    assert (b[1].offset, b[1].size) == (40, 27)
    b = bufs()
    _grow_scratch(b, 152, {2: 28})                        # fits where it is: grows in place
    assert (b[1].offset, b[1].size) == (40, 28)


def test_pointwise_in_place_expand_and_shrink():
    b = G((1, 6, 6, 4))                                    # 144
    e = b.conv("x", (1, 6, 6, 24), k=1)                    # 864: expand in place
    p = b.conv(e, (1, 6, 6, 8), k=1)                       # 288: shrink in place
    g = b.graph(b.op("max_pool", [p], (1, 3, 3, 8)))       # 72
    plan = plan_memory(g)
    brute_force_check(g, plan)
    assert plan.inplace[0] == plan.inplace[1] == "pointwise"
    assert plan.tensor_offsets["x"] == plan.tensor_offsets[e] == plan.tensor_offsets[p]
    # one input pixel each (4 and 24 B); node 0's grows to two pixels in free bytes
    assert plan.scratch[0][1] == 2 * 4 and plan.scratch[1][1] == 24
    # node 1: max(864, 288) + 24 scratch
    assert plan.peak_live_bytes == 888
    assert plan.arena_bytes == 888


def test_shrinking_chain_frees_its_tail():
    """A group occupies only its live value's bytes at each node, not its largest value's."""
    b = G((1, 8, 8, 4))                                    # 256
    e = b.conv("x", (1, 8, 8, 32), k=1)                    # 2048, in place over x
    p = b.conv(e, (1, 8, 8, 2), k=1)                       # 128, in place over e
    q = b.conv(p, (1, 8, 8, 30), k=3)                      # 1920, not in place (3x3)
    g = b.graph(b.op("add", [q, q], (1, 8, 8, 30)))
    plan = plan_memory(g)
    brute_force_check(g, plan)
    assert plan.inplace[1] == "pointwise"
    # node 2: p (128) + q (1920): fits beside the dead expansion
    assert plan.arena_bytes <= 2048 + 32


def test_depthwise_not_in_place_when_input_read_later():
    b = G((1, 8, 8, 6))
    a = b.conv("x", (1, 8, 8, 6), groups=6)
    g = b.graph(b.op("add", ["x", a], (1, 8, 8, 6)))       # x is read again by the add
    plan = plan_memory(g)
    brute_force_check(g, plan)
    assert 0 not in plan.inplace and not plan.scratch
    assert plan.tensor_offsets["x"] != plan.tensor_offsets[a]
    assert plan.inplace[1] == "add"                        # both die there: the add reuses one


def test_depthwise_multiplier_2_not_in_place():
    b = G((1, 8, 8, 4))
    g = b.graph(b.conv("x", (1, 8, 8, 8), groups=4))
    plan = plan_memory(g)
    brute_force_check(g, plan)
    assert not plan.inplace


def test_depthwise_in_place_output_bigger_than_input():
    b = G((1, 5, 5, 6))
    a = b.conv("x", (1, 7, 7, 6), groups=6)                # pads 2: 7x7 out of 5x5
    g = b.graph(b.op("max_pool", [a], (1, 3, 3, 6)))
    plan = plan_memory(g)
    brute_force_check(g, plan)
    assert plan.inplace[0] == "depthwise"
    assert plan.tensor_offsets["x"] == plan.tensor_offsets[a]
    # node 0: output + one-channel scratch; node 1: output + pooled
    assert plan.peak_live_bytes == max(7 * 7 * 6 + 5 * 5, 7 * 7 * 6 + 3 * 3 * 6)


def test_add_not_in_place_when_inputs_live_on():
    b = G((1, 4, 4, 8))
    a = b.conv("x", (1, 4, 4, 8), k=1)
    s = b.op("add", ["x", a], (1, 4, 4, 8))
    g = b.graph(b.op("add", [s, a], (1, 4, 4, 8)))         # a is read again at node 2
    plan = plan_memory(g)
    brute_force_check(g, plan)
    assert plan.inplace[1] == "add"
    assert plan.tensor_offsets[s] == plan.tensor_offsets["x"]   # x dies at node 1, a does not
    assert plan.inplace[2] == "add"


def test_graph_output_never_overwritten():
    b = G((1, 4, 4, 8))
    a = b.conv("x", (1, 4, 4, 8), k=1)
    c = b.op("clamp", [a], (1, 4, 4, 8))
    g = b.graph(c)
    g.outputs = [a, c]                                     # a must survive to the end
    plan = plan_memory(g)
    brute_force_check(g, plan)
    assert 1 not in plan.inplace
    assert plan.lifetimes[a] == (0, 1)


def test_reshape_alias_keeps_input_alive():
    b = G((1, 2, 2, 8))
    r = b.op("reshape", ["x"], (1, 32))
    f = b.op("fully_connected", [r], (1, 32))
    g = b.graph(b.op("add", [f, r], (1, 32)))              # x (via r) read at node 2
    plan = plan_memory(g)
    brute_force_check(g, plan)
    assert plan.tensor_offsets[r] == plan.tensor_offsets["x"]
    assert plan.lifetimes["x"] == (0, 0) and plan.lifetimes[r] == (0, 2)
    assert plan.buffers[plan.tensor_buffer["x"]].last == 2


def test_inplace_never_worse_and_orders():
    g = chain_graph()
    for order in ("size", "area", "lifetime", "first"):
        p = plan_memory(g, orders=(order,))
        brute_force_check(g, p)
        assert p.arena_bytes >= plan_memory(g).arena_bytes


def _tflm_greedy_by_size(plan) -> int:
    """TFLite Micro's greedy planner, re-done from its contract: biggest buffer first, each at the
    lowest offset that overlaps no placed buffer alive at the same time."""
    placed, end = [], 0
    for b in sorted(plan.buffers, key=lambda b: -b.size):
        off = 0
        for o, e in sorted((o, e) for o, e, bb in placed
                           if bb.first <= b.last and b.first <= bb.last):
            if off + b.size <= o:
                break
            off = max(off, (e + ALIGN - 1) // ALIGN * ALIGN)
        placed.append((off, off + b.size, b))
        end = max(end, off + b.size)
    return end


@pytest.mark.parametrize("name", ["gray_odd", "mbv2_block", "big_kernels", "groups_concat",
                                  "residual_chain", "fc_only"])
def test_small_nets_no_overlap(name, small_nets):
    g = _int8_shapes(import_float(str(small_nets[name])))
    for inplace in (True, False):
        plan = plan_memory(g, inplace=inplace)
        brute_force_check(g, plan)
        assert plan.arena_bytes >= plan.peak_live_bytes
        assert plan.arena_bytes <= _tflm_greedy_by_size(plan) + ALIGN


def _int8_shapes(g: Graph) -> Graph:
    """The planner only needs byte sizes: mark the activations int8 without quantizing."""
    for name in g.activations():
        g.tensors[name].dtype = "int8"
    return g


@pytest.mark.parametrize("name", SHARED_NAMES)
def test_shared_models(name):
    g = _int8_shapes(import_float(str(shared_model(name))))
    plan = plan_memory(g)
    brute_force_check(g, plan)
    plain = plan_memory(g, inplace=False)
    assert plan.arena_bytes <= plain.arena_bytes <= _tflm_greedy_by_size(plain) + ALIGN
    assert plan.arena_bytes < plan.no_reuse_bytes / 3
    assert "depthwise" in plan.inplace.values()
