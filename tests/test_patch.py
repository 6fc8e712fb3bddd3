"""Patch-based schedules (passes/patch.py, memory/schedule.py): the patched graph computes exactly
the layer-by-layer values, in the numpy reference and in the generated C; its plan is sound; the
automatic choice never does worse than layer by layer."""
from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest

from conftest import shared_model
from random_nets import random_net
from test_runtime_c import IRBuilder, int8_inputs
from conftest import assert_clean_failure, host_build, tinyc
from tinyc.errors import TinycError
from tinyc.ir import Graph
from tinyc.memory.planner import plan_memory
from tinyc.memory.schedule import choose_schedule, split_points
from tinyc.passes.patch import (PatchSpec, apply_patches, patch_regions, prefix_problem,
                                recompute_macs)
from tinyc.pipeline import compile_int8
from tinyc.reference.int8 import run_int8

GRIDS = [(1, 2), (2, 1), (2, 2), (3, 2), (2, 5), (4, 4), (8, 8)]


# ---------------------------------------------------------------- test networks (float IR)
def net_strided_odd():
    """Odd, non-square input; strides 1/2; kernels 3/5/7; a stride-2 7x7 depthwise with
    asymmetric pads; a (2, 1) stride and a 3x5 kernel."""
    b = IRBuilder((1, 37, 29, 3), seed=21)
    x = b.conv("input", 8, 3, stride=2, pads=(1, 1, 1, 1))
    x = b.dw(x, 5)
    x = b.conv(x, 12, 1, pads=(0, 0, 0, 0))
    x = b.dw(x, 7, stride=2, pads=(3, 2, 4, 3))
    x = b.conv(x, 10, (3, 5), stride=(2, 1), pads=(0, 2, 1, 2), clamp=None)
    x = b.conv(x, 6, 3, stride=1, pads=(1, 1, 1, 1))
    return b.quantized(b.fc(b.flatten(b.gap(x)), 5))


def net_residual_prefix():
    """MobileNetV2 blocks with residual adds early in the network, on a 23x31 image."""
    b = IRBuilder((1, 23, 31, 3), seed=22)
    x = b.conv("input", 8, 3, stride=2, pads=(1, 1, 1, 1))
    for k in (3, 5):
        e = b.conv(x, 24, 1, pads=(0, 0, 0, 0))
        d = b.dw(e, k)
        p = b.conv(d, 8, 1, pads=(0, 0, 0, 0), clamp=None)
        x = b.add(x, p)
    e = b.conv(x, 24, 1, pads=(0, 0, 0, 0))
    x = b.dw(e, 3, stride=2, pads=(0, 0, 1, 1))
    x = b.conv(x, 12, 1, pads=(0, 0, 0, 0), clamp=None)
    y = b.conv(b.dw(x, 3), 12, 1, pads=(0, 0, 0, 0), clamp=None)
    x = b.add(x, y, clamp=(0.0, 6.0))
    return b.quantized(b.fc(b.flatten(b.gap(x)), 4))


def net_pools_pad_concat():
    """Every other spatial op in a prefix: pools with and without padding counted, a constant
    pad with a non-zero value and asymmetric pads, a concat of branches (requantize inserted),
    a standalone clamp, grouped and dilated convs, an even 4x4 kernel, depthwise multiplier 2."""
    b = IRBuilder((1, 26, 21, 4), seed=23)
    x = b.conv("input", 8, 3, groups=2)
    x = b.pool("max_pool", x, 3, 2, (1, 1, 1, 1))
    x = b.pad(x, (2, 0, 1, 3), value=0.25)
    p1 = b.conv(x, 6, 3, dilation=2, pads=(2, 2, 2, 2))
    p2 = b.pool("avg_pool", x, 3, 1, (1, 1, 1, 1), count_include_pad=True)
    x = b.clamp(b.concat([p1, p2]), 0.0, 3.0)
    x = b.dw(x, 3, mult=2)
    x = b.conv(x, 8, 4, stride=1, pads=(1, 2, 2, 1))
    x = b.pool("avg_pool", x, 2, 2, (0, 1, 1, 0), count_include_pad=False)
    return b.quantized(b.softmax(b.fc(b.flatten(x), 6)))


IR_NETS = {f.__name__[4:]: f for f in (net_strided_odd, net_residual_prefix,
                                        net_pools_pad_concat)}


@pytest.fixture(scope="module")
def ir_nets():
    return {name: fn() for name, fn in IR_NETS.items()}


# ---------------------------------------------------------------- reference bit-exactness
def check_reference(g: Graph, spec: PatchSpec, xs: np.ndarray) -> Graph:
    """The patched graph gives the very same split tensor and output as layer by layer."""
    gp = apply_patches(g, spec)
    split = g.nodes[spec.split].outputs[0]
    for k, x in enumerate(xs):
        ref = run_int8(g, x[None])
        got = run_int8(gp, x[None])
        for t in (split, g.outputs[0]):
            assert np.array_equal(got[t], ref[t]), f"{spec} input {k}: '{t}' differs"
    return gp


def all_specs(g: Graph):
    for s in split_points(g, limit=1 << 62):
        _, h, w, _ = g.tensors[g.nodes[s].outputs[0]].shape
        for rows, cols in GRIDS:
            if rows <= h and cols <= w:
                yield PatchSpec(s, rows, cols)


@pytest.mark.parametrize("name", sorted(IR_NETS))
def test_every_split_and_grid_matches_layer_by_layer(name, ir_nets):
    g = ir_nets[name]
    xs = int8_inputs(g, n_random=2)
    checked = 0
    for spec in all_specs(g):
        try:
            check_reference(g, spec, xs)
        except TinycError as e:
            assert "empty window" in str(e), e   # a grid finer than a padded window allows
            continue
        checked += 1
    assert checked >= 20


def test_residual_adds_inside_the_prefix(ir_nets):
    g = ir_nets["residual_prefix"]
    adds = [i for i, n in enumerate(g.nodes) if n.op == "add"]
    spec = PatchSpec(adds[1], 3, 4)                          # both early residual blocks inside
    gp = check_reference(g, spec, int8_inputs(g, n_random=2))
    ops = [n.op for n in gp.nodes if n.attrs.get("patch") == (1, 1)]
    assert ops.count("add") == 2 and "crop" in ops           # the skip branch is cropped


def test_onnx_nets_every_split(small_nets):
    for name in ("gray_odd", "mbv2_block", "big_kernels", "groups_concat", "residual_chain"):
        g = compile_int8(str(small_nets[name]), None)
        xs = int8_inputs(g, n_random=1)
        specs = list(all_specs(g))
        assert specs, name
        for spec in specs:
            try:
                check_reference(g, spec, xs)
            except TinycError as e:
                assert "empty window" in str(e), e


@pytest.mark.parametrize("seed", range(0, 60, 3))
def test_random_nets_every_split(seed, tmp_path):
    onnx.save(random_net(seed), tmp_path / "m.onnx")
    g = compile_int8(str(tmp_path / "m.onnx"), None)
    xs = int8_inputs(g, n_random=1)
    for spec in all_specs(g):
        try:
            check_reference(g, spec, xs)
        except TinycError as e:
            assert "empty window" in str(e), e


def test_padding_only_at_image_borders(ir_nets):
    """In a patch's local frame the positive part of each pad is exactly the image padding the
    patch's windows reach (none at a patch-interior border); a negative pad skips rows of a
    larger buffer."""
    from tinyc.passes.patch import WINDOWED_OPS, _window_params
    for name, spec in (("strided_odd", PatchSpec(4, 3, 3)), ("pools_pad_concat", PatchSpec(9, 4, 3))):
        g = ir_nets[name]
        gp = apply_patches(g, spec)
        reg = patch_regions(g, spec)
        orig = {n.name: n for n in g.nodes}
        interior = border = 0
        for n in gp.nodes:
            if n.op not in WINDOWED_OPS or "patch" not in n.attrs:
                continue   # layers after the split run on full tensors
            src = orig[n.name.split("#")[0]]
            i, j = n.attrs["patch"]
            out_reg = reg.region(src.outputs[0], i, j)
            local_pads = n.attrs["pads"]
            for axis in (0, 1):
                k, s, p, d = _window_params(g, src, axis)
                size = g.tensors[src.inputs[0]].shape[1 + axis]
                a, b = out_reg[axis]
                first, last = a * s - p, (b - 1) * s - p + (k - 1) * d
                assert max(0, local_pads[axis]) == max(0, -first), (n.name, axis)
                assert max(0, local_pads[axis + 2]) == max(0, last - (size - 1)), (n.name, axis)
                border += first < 0
                interior += local_pads[axis] < 0
        assert interior and border, name


def test_recompute_macs_and_meta(ir_nets):
    g = ir_nets["residual_prefix"]
    spec = PatchSpec(9, 2, 3)
    gp = apply_patches(g, spec)
    base = sum(g.macs(n) for n in g.nodes)
    extra = sum(gp.macs(n) for n in gp.nodes) - base
    assert extra > 0 and recompute_macs(g, spec) == extra
    meta = gp.meta["patch"]
    assert meta["overhead_macs"] == extra and meta["grid"] == [2, 3] and meta["patches"] == 6
    assert meta["split_index"] == 9 and meta["split_tensor"] == g.nodes[9].outputs[0]


def test_prefix_rules(ir_nets):
    g = ir_nets["residual_prefix"]
    add = [i for i, n in enumerate(g.nodes) if n.op == "add"][0]
    # a split inside a residual block would leave the skip tensor alive after the prefix
    assert "read after the split" in prefix_problem(g, add - 1)
    assert prefix_problem(g, add) is None
    fc = [i for i, n in enumerate(g.nodes) if n.op == "fully_connected"][0]
    assert "not a spatially local op" in prefix_problem(g, fc)
    assert "out of range" in prefix_problem(g, len(g.nodes))
    with pytest.raises(TinycError, match="finer than the split tensor"):
        apply_patches(g, PatchSpec(0, 40, 1))
    with pytest.raises(TinycError, match="ROWSxCOLS@NODE"):
        PatchSpec.parse("4x4")
    assert PatchSpec.parse("3x5@7") == PatchSpec(7, 3, 5)


# ---------------------------------------------------------------- plans and generated C
def run_in_arena(g: Graph, plan, x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Execute g inside ONE simulated arena laid out by `plan`, independently of the planner's
    bookkeeping: every node reads its inputs from the arena at their planned offsets and writes
    its output there (a paste writes only its window); the arena starts as random garbage and
    every scratch region is refilled with garbage before its node. Any byte still needed that
    the plan lets another buffer overwrite changes the result."""
    from tinyc.reference.int8 import run_int8_node

    rng = np.random.default_rng(seed)
    arena = rng.integers(-128, 128, plan.arena_bytes).astype(np.int8)

    def view(t):
        off, shape = plan.tensor_offsets[t], g.tensors[t].shape
        assert 0 <= off and off + g.tensors[t].nbytes <= arena.size, f"{t} outside the arena"
        return arena[off: off + g.tensors[t].nbytes].reshape(shape)

    view(g.inputs[0])[...] = x.reshape(g.tensors[g.inputs[0]].shape)
    for i, node in enumerate(g.nodes):
        if i in plan.scratch:
            off, size = plan.scratch[i]
            arena[off: off + size] = rng.integers(-128, 128, size)
        if node.op == "paste":
            patch = view(node.inputs[0]).copy()
            _, _, w, c = g.tensors[node.outputs[0]].shape
            r0, c0 = node.attrs["origin"]
            base = plan.tensor_offsets[node.outputs[0]]
            for r in range(patch.shape[1]):
                start = base + ((r0 + r) * w + c0) * c
                assert start + patch.shape[2] * c <= arena.size, "paste outside the arena"
                arena[start: start + patch.shape[2] * c] = patch[0, r].reshape(-1)
            continue
        env = {t: view(t).copy() for t in node.inputs if t and not g.tensors[t].is_const}
        view(node.outputs[0])[...] = run_int8_node(g, node, env)
    return view(g.outputs[0]).copy()


def assert_arena_run_matches(g: Graph, gp: Graph, plan, n_random: int = 2):
    for k, x in enumerate(int8_inputs(g, n_random=n_random)):
        ref = run_int8(g, x[None])[g.outputs[0]]
        assert np.array_equal(run_in_arena(gp, plan, x, seed=k), ref), f"input {k}"


@pytest.mark.parametrize("name, spec", [("strided_odd", "3x2@4"), ("residual_prefix", "4x3@9"),
                                        ("pools_pad_concat", "2x3@6")])
def test_patched_plan_is_sound(name, spec, ir_nets):
    g = ir_nets[name]
    gp = apply_patches(g, PatchSpec.parse(spec))
    for inplace in (True, False):
        plan = plan_memory(gp, inplace=inplace)
        assert "paste" in plan.inplace.values()
        assert_arena_run_matches(g, gp, plan)


def test_arena_emulator_catches_a_bad_plan(ir_nets):
    """The emulator is a real check: shifting one live buffer onto another breaks the result."""
    g = ir_nets["residual_prefix"]
    gp = apply_patches(g, PatchSpec(9, 2, 2))
    plan = plan_memory(gp)
    assert_arena_run_matches(g, gp, plan, n_random=1)
    # the first intermediate of patch (0, 1) over the image's last rows, which patches (1, *)
    # still need
    t = gp.nodes[[n.attrs.get("patch") for n in gp.nodes].index((0, 1))].outputs[0]
    image = g.tensors[g.inputs[0]]
    plan.tensor_offsets[t] = plan.tensor_offsets[image.name] + image.nbytes - gp.tensors[t].nbytes
    with pytest.raises(AssertionError):
        assert_arena_run_matches(g, gp, plan, n_random=1)


def test_split_tensor_laid_over_consumed_image_rows(ir_nets):
    """The assembled split tensor may grow over image rows no later patch reads: the plan
    overlaps them, and the arena run proves it is safe."""
    g = ir_nets["strided_odd"]
    gp = apply_patches(g, PatchSpec(1, 6, 1))
    plan = plan_memory(gp)
    image = plan.buffers[plan.tensor_buffer[g.inputs[0]]]
    assert image.low, "the image never frees rows"
    split = g.nodes[1].outputs[0]
    a0, a1 = plan.tensor_offsets["input"], plan.tensor_offsets["input"] + g.tensors["input"].nbytes
    b0 = plan.tensor_offsets[split]
    b1 = b0 + g.tensors[split].nbytes
    assert a0 < b1 and b0 < a1, "no overlay on this net"
    assert_arena_run_matches(g, gp, plan)


@pytest.mark.parametrize("name, spec", [("strided_odd", "3x2@4"), ("strided_odd", "5x4@1"),
                                        ("residual_prefix", "4x3@8"),
                                        ("residual_prefix", "2x2@14"),
                                        ("pools_pad_concat", "2x3@6"),
                                        ("pools_pad_concat", "3x3@9")])
def test_generated_c_matches_layer_by_layer(name, spec, ir_nets, tmp_path):
    """The C of the patched graph == the numpy reference of the ORIGINAL graph."""
    g = ir_nets[name]
    gp = apply_patches(g, PatchSpec.parse(spec))
    assert_c_matches_reference_of(g, gp, tmp_path)


def test_patch_loop_or_unrolled(ir_nets):
    """Patches that run the same kernels become one loop over a table (a row per patch); a
    schedule with a layer that has no parameter struct to point at (here a concat, its parts
    written out in each call) stays unrolled. Both are checked against the reference above."""
    from tinyc.codegen.c import model_context
    for name, spec, looped in [("strided_odd", "3x2@4", True), ("residual_prefix", "4x3@8", True),
                               ("pools_pad_concat", "2x3@6", False)]:
        gp = apply_patches(ir_nets[name], PatchSpec.parse(spec))
        loop = model_context(gp, plan_memory(gp))["patch_loop"]
        assert (loop is not None) == looped, (name, spec)
        if looped:
            assert loop["count"] == gp.meta["patch"]["patches"]
            assert len(loop["rows"]) == loop["count"]
            assert all(len(r) == len(loop["columns"]) for r in loop["rows"])


def assert_c_matches_reference_of(g: Graph, gp: Graph, tmp_path, plan=None):
    from tinyc.codegen.c import generate_c
    from tinyc.targets.host import run_host

    plan = plan or plan_memory(gp)
    generate_c(gp, plan, tmp_path)
    host_build(tmp_path)   # the runtime's objects shared (conftest)
    xs = int8_inputs(g, n_random=2)
    ys = run_host(tmp_path, xs)
    for k, (x, y) in enumerate(zip(xs, ys)):
        ref = run_int8(g, x[None])[g.outputs[0]]
        assert np.array_equal(y.reshape(ref.shape), ref), f"input {k}: C != layer-by-layer reference"
    return plan


def test_generated_c_without_inplace_kernels(ir_nets, tmp_path):
    g = ir_nets["residual_prefix"]
    gp = apply_patches(g, PatchSpec(9, 3, 3))
    plan = plan_memory(gp, inplace=False)
    assert set(plan.inplace.values()) == {"paste", "alias"}   # alias: the flatten
    assert_c_matches_reference_of(g, gp, tmp_path, plan)


@pytest.mark.parametrize("name, spec", [("mbv2-w0.35_96", "auto"), ("mcunet-5fps_96", "3x5@9"),
                                        ("proxyless-w0.3_96", "auto")])
def test_shared_model_patched_c(name, spec, tmp_path):
    """The patched stage of a shared model runs as one loop over a table of what changes from
    patch to patch (codegen/c.py _patch_loop): one call and at most one parameter struct per
    layer of a patch in model.c, the layer-by-layer reference's bytes."""
    g = compile_int8(str(shared_model(name)), None)
    sched = choose_schedule(g, spec if spec == "auto" else PatchSpec.parse(spec))
    assert sched.spec is not None
    assert_c_matches_reference_of(g, sched.graph, tmp_path, sched.plan)
    code = (tmp_path / "model.c").read_text()
    patches = sched.graph.meta["patch"]["patches"]
    staged = sum("patch" in n.attrs for n in sched.graph.nodes)
    calls = code.count("TINYC_LAYER_HOOK(") - code.count("#define TINYC_LAYER_HOOK(")
    assert f"tinyc_patches[{patches}]" in code and patches > 1
    assert calls == len(sched.graph.nodes) - staged + staged // patches
    # patch 0's parameter structs only: the others' differing fields are in the table
    structs = len(re.findall(r"^static const tinyc_\w+_params tinyc_l\d+ = ", code, re.M))
    assert structs <= len(sched.graph.nodes) - staged + staged // patches


# ---------------------------------------------------------------- the automatic choice
@pytest.mark.parametrize("name", sorted(IR_NETS))
def test_auto_never_worse_than_layer_by_layer(name, ir_nets):
    g = ir_nets[name]
    base = plan_memory(g).arena_bytes
    sched = choose_schedule(g, "auto")
    assert sched.plan.arena_bytes <= base
    assert sched.info["peak_bytes"] == sched.plan.arena_bytes
    assert sched.info["peak_layer_by_layer_bytes"] == base
    if sched.spec is not None:
        assert sched.plan.arena_bytes < base
        assert sched.info["overhead_macs"] == recompute_macs(g, sched.spec)


def test_auto_respects_max_split(ir_nets):
    g = ir_nets["residual_prefix"]
    free = choose_schedule(g, "auto")
    assert free.spec is not None and free.spec.split > 0
    limited = choose_schedule(g, "auto", max_split=free.spec.split - 1)
    assert limited.spec is None or limited.spec.split < free.spec.split
    assert choose_schedule(g, "auto", max_split=-1).spec is None


def test_patched_first_conv_gets_two_windows(monkeypatch):
    """mcunet-5fps_96's default schedule (8x8@9): after many patches' im2col scratch the placed
    arena has only a few bytes free, short of the second window that lets tinyc_conv2d_im2col
    compute two pixels at a time (scratch_bytes >= 2 k; one window costs the first conv about
    half its speed). The planner moves such a scratch to a gap free at its node: every patch of
    the first conv gets two windows, and the arena is the one without any growing."""
    import tinyc.memory.planner as planner
    from tinyc.pipeline import import_float
    g = import_float(str(shared_model("mcunet-5fps_96")))
    for name in g.activations():   # the planner needs byte sizes only
        g.tensors[name].dtype = "int8"
    gp = apply_patches(g, PatchSpec.parse("8x8@9"))
    plan = plan_memory(gp)
    firsts = [i for i, n in enumerate(gp.nodes)
              if n.op == "conv2d" and n.inputs[0] == g.inputs[0] and "patch" in n.attrs]
    k = int(np.prod(g.tensors[gp.nodes[firsts[0]].inputs[1]].shape[1:]))
    assert len(firsts) == 64 and k == 27
    assert [plan.scratch[i][1] for i in firsts] == [2 * k] * 64
    monkeypatch.setattr(planner, "_grow_scratch", lambda *a: None)
    assert plan_memory(gp).arena_bytes == plan.arena_bytes


def test_float_graph_patches_too():
    """The pass is dtype-agnostic: a float graph's patched prefix gives the same float values,
    up to the summation order of numpy's einsum (a training step's frozen prefix may run in
    either form)."""
    from tinyc.reference.float_exec import run_float

    b = IRBuilder((1, 19, 14, 3), seed=31)
    x = b.conv("input", 8, 3, stride=2, pads=(1, 0, 1, 2))
    e = b.conv(x, 16, 1, pads=(0, 0, 0, 0))
    x = b.add(x, b.conv(b.dw(e, 5), 8, 1, pads=(0, 0, 0, 0), clamp=None))
    out = b.fc(b.flatten(b.gap(x)), 3)
    g = Graph(b.tensors, b.nodes, ["input"], [out])
    g.remove_unused_tensors()
    gp = apply_patches(g, PatchSpec(4, 3, 2))
    xin = np.random.default_rng(0).uniform(-1, 1, (1, 19, 14, 3)).astype(np.float32)
    ref, got = run_float(g, xin), run_float(gp, xin)
    for t in (g.nodes[4].outputs[0], out):
        np.testing.assert_allclose(got[t], ref[t], rtol=1e-6, atol=1e-6)


def test_auto_keeps_layer_by_layer_when_nothing_helps(small_nets):
    g = compile_int8(str(small_nets["fc_only"]), None)
    sched = choose_schedule(g, "auto")
    assert sched.spec is None and sched.graph is g
    assert sched.info["enabled"] is False and sched.info["grid"] == [1, 1]


@pytest.mark.parametrize("name", ["mbv2-w0.35_128", "proxyless-w0.3_128", "mcunet-5fps_128"])
def test_auto_on_shared_models(name):
    g = compile_int8(str(shared_model(name)), None)
    base = plan_memory(g).arena_bytes
    sched = choose_schedule(g, "auto")
    assert sched.spec is not None
    assert sched.plan.arena_bytes < 0.6 * base     # the first stage dominated the arena
    assert_arena_run_matches(g, sched.graph, sched.plan, n_random=1)
    # no candidate planned for real is smaller: compare with a few fixed schedules
    for spec in ("2x2@5", "4x4@12"):
        other = plan_memory(apply_patches(g, PatchSpec.parse(spec))).arena_bytes
        assert sched.plan.arena_bytes <= other


def test_budget_picks_the_cheapest_schedule_that_fits(ir_nets):
    g = ir_nets["residual_prefix"]
    base = plan_memory(g).arena_bytes
    smallest = choose_schedule(g, "auto")
    assert smallest.spec is not None
    # a budget layer by layer meets: no patches, no recomputation
    roomy = choose_schedule(g, "auto", arena_budget=base)
    assert roomy.spec is None and roomy.info["fits_budget"]
    # a budget between the two: fits, and recomputes no more than the smallest schedule
    budget = (base + smallest.plan.arena_bytes) // 2
    mid = choose_schedule(g, "auto", arena_budget=budget)
    assert mid.spec is not None and mid.plan.arena_bytes <= budget and mid.info["fits_budget"]
    assert mid.info["overhead_macs"] <= smallest.info["overhead_macs"]
    # an impossible budget: the smallest arena, flagged as not fitting
    tight = choose_schedule(g, "auto", arena_budget=64)
    assert tight.plan.arena_bytes == smallest.plan.arena_bytes and not tight.info["fits_budget"]


# ---------------------------------------------------------------- command line and report
def test_cli_patch_modes(small_nets, tmp_path):
    net = small_nets["mbv2_block"]
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).uniform(-1, 1, (4, 3, 32, 24)).astype(np.float32))
    common = ["--board", "mps2_an386", "--calib", calib]
    # the library only for two of them (the schedule and the host build are what differ; the
    # firmware of a patched model: test_firmware's offline builds and QEMU runs); the forced
    # schedule goes into a firmware
    tinyc("build", net, "-o", tmp_path / "off", "--patch", "off", "--no-firmware", *common)
    tinyc("build", net, "-o", tmp_path / "auto", "--no-firmware", *common)
    res = tinyc("build", net, "-o", tmp_path / "forced", "--patch", "2x3@4", *common)
    assert json.loads((tmp_path / "forced" / "report.json").read_text())["firmware"]["built"]
    assert "patches 2x3 over node 4" in res.stdout
    reps = {k: json.loads((tmp_path / k / "report.json").read_text())["inference"]
            for k in ("off", "auto", "forced")}
    assert reps["off"]["patch"]["enabled"] is False
    assert reps["off"]["arena_bytes"] == reps["auto"]["patch"]["peak_layer_by_layer_bytes"]
    assert reps["auto"]["arena_bytes"] <= reps["off"]["arena_bytes"]
    forced = reps["forced"]["patch"]
    for key in ("split_index", "split_node", "grid", "overhead_macs", "overhead_pct",
                "peak_bytes", "peak_layer_by_layer_bytes"):
        assert key in forced
    assert forced["split_index"] == 4 and forced["grid"] == [2, 3] and forced["overhead_macs"] > 0
    assert forced["peak_bytes"] == reps["forced"]["arena_bytes"]
    shown = tinyc("report", tmp_path / "forced").stdout
    assert "patches 2x3 over node 4" in shown and "more patches" in shown
    # the three builds compute the same outputs
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 32, 24)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ys = []
    for k in ("off", "auto", "forced"):
        tinyc("emulate", tmp_path / k, "--input", tmp_path / "x.npy", "--output", tmp_path / f"{k}.npy")
        ys.append(np.load(tmp_path / f"{k}.npy"))
    assert np.array_equal(ys[0], ys[1]) and np.array_equal(ys[0], ys[2])


@pytest.mark.parametrize("arg, message", [("4x4", "ROWSxCOLS@NODE"), ("2x2@99", "out of range"),
                                          ("2x2@10", "not a spatially local op"),
                                          ("64x1@0", "finer than")])
def test_cli_bad_patch_specs(arg, message, small_nets, tmp_path):
    res = tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", tmp_path / "o",
                "--patch", arg, check=False)
    assert_clean_failure(res, message)


def test_cli_sram_budget(small_nets, tmp_path):
    net = small_nets["mbv2_block"]
    # the schedule is chosen before the firmware: the library only
    res = tinyc("build", net, "--board", "mps2_an386", "-o", tmp_path / "o", "--sram", "1M",
                "--no-firmware")
    assert "layer by layer" in res.stdout            # plenty of room: nothing recomputed
    assert_clean_failure(tinyc("build", net, "--board", "mps2_an386", "-o", tmp_path / "o",
                               "--sram", "100", check=False), "stack reserve")
    res = tinyc("build", net, "--board", "mps2_an386", "-o", tmp_path / "o", "--sram", "8300",
                "--no-firmware")
    assert "no schedule fits" in res.stderr and "schedule   patches" in res.stdout
    res = tinyc("build", net, "--board", "mps2_an386", "-o", tmp_path / "o", "--patch", "2x1@0",
                "--no-firmware")
    assert "not smaller than layer by layer" in res.stderr
    assert_clean_failure(tinyc("build", net, "--board", "mps2_an386", "-o", tmp_path / "o",
                               "--sram", "200K", "--patch", "off", check=False), "--patch auto")
