"""Generated training C (host gcc) == the numpy training-step reference, bit for bit.

For small nets and shared pretrained models, several update schemes (full, bias-only, last:K,
partial channel subsets), QAS on/off and both roundings: 20 steps of tinyc_train_step against
tinyc.reference.train.train_step(step=0..19) must leave identical int8 weights and int32
biases, losses equal to 1e-5 relative, and tinyc_infer afterwards must equal
reference.train.predict. Also: the float32 helpers (exp, rounding, hash) against the reference
one value at a time, the training memory plan, the parameter API of the harness, and
warning-free compilation for the host and a Cortex-M4F.
"""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from tinyc import ops
from tinyc.codegen.c import generate_c
from tinyc.memory.planner import plan_memory, trainable_tensors, training_memory
from tinyc.passes.autodiff import TrainOptions
from tinyc.passes.train_head import classifier
from tinyc.pipeline import compile_training
from tinyc.reference import train as ref
from tinyc.targets.host import TRAIN_EXE, TRAIN_HARNESS, HostTrainer, run_host_training
from conftest import host_build, shared_model, tinyc

# the reference's uint32 counters wrap on purpose
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime_c"
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
STEPS = 20

# partial-channel schemes per test net (conv indices exclude the classifier)
PARTIAL = {
    "gray_odd": {"bias_last": 2, "weights": {"1": 0.5}},
    "mbv2_block": {"bias_last": 3, "weights": {"1": 0, "2": 0.5, "4": 0.25, "5": 0.5}},
    "big_kernels": {"bias_last": 2, "weights": {"1": 0.5}},             # dilated conv
    "groups_concat": {"bias_last": 2, "weights": {"1": 0.5, "2": 0.5}},  # grouped, depthwise x2
    "residual_chain": {"bias_last": 2, "weights": {"0": 0.34, "3": 0.5}},  # subset of the input
}
SCHEMES = ["full", "bias-only", "last:1", "partial"]
MODES = [(True, "nearest"), (True, "stochastic"), (False, "stochastic"), (False, "nearest")]
# without QAS the integer step lr * g * s_w is tiny: a large rate makes it move the parameters
NO_QAS_LR = 2000.0


def run_both(graph, out_dir: Path, lr: float, steps: int = STEPS, seed: int = 1, plan=None,
             gen=None):
    """Train the reference (a copy of graph) and the generated C on the same samples. The C is
    generated from `gen` with `plan` (default: graph and its plan; e.g. a patched schedule)."""
    gen = graph if gen is None else gen
    plan = plan if plan is not None else plan_memory(gen)
    generate_c(gen, plan, out_dir)
    host_build(out_dir, harness=TRAIN_HARNESS, exe_name=TRAIN_EXE)   # the runtime's objects shared
    shape = graph.tensors[graph.inputs[0]].shape
    classes = graph.tensors[graph.meta["train"]["logits"]].shape[-1]
    rng = np.random.default_rng(seed)
    xs = rng.integers(-128, 128, (steps,) + shape[1:]).astype(np.int8)
    ys = rng.integers(0, classes, steps)
    g_ref = graph.copy()
    ref_guard = ref.GuardStats()
    ref_losses = np.array([ref.train_step(g_ref, xs[k][None], int(ys[k]), lr, k, ref_guard)
                           for k in range(steps)])
    with HostTrainer(out_dir) as t:
        losses = t.train(xs, ys, lr)
        params = t.params()
        logits = t.infer(xs[:4])
        guard = t.guard_stats()
    # the guard's counters of the C and of the reference
    assert guard == ref_guard and guard.steps == steps and guard.updates > 0
    return g_ref, ref_losses, losses, params, logits, xs, plan


def assert_same_training(graph, out_dir: Path, lr: float, steps: int = STEPS,
                         expect_change: bool = True, plan=None):
    initial = {n: graph.tensors[n].data.copy() for n, _ in trainable_tensors(graph)}
    g_ref, ref_losses, losses, params, logits, xs, plan = run_both(graph, out_dir, lr, steps,
                                                                   plan=plan)
    assert set(params) == set(initial)
    changed = 0
    for name, kind in trainable_tensors(graph):
        want = g_ref.tensors[name].data
        got = params[name].reshape(want.shape)
        assert got.dtype == want.dtype, name
        if not np.array_equal(got, want):
            bad = np.flatnonzero(got.reshape(-1) != want.reshape(-1))
            pytest.fail(f"{kind} {name}: {bad.size} of {want.size} values differ after {steps} "
                        f"steps, first at {bad[0]}: C {got.reshape(-1)[bad[0]]} vs reference "
                        f"{want.reshape(-1)[bad[0]]}")
        changed += int(np.sum(want != initial[name]))
    rel = np.abs(losses - ref_losses) / np.maximum(np.abs(ref_losses), 1e-12)
    assert np.all(np.isfinite(losses))
    assert rel.max() <= 1e-5, f"losses differ: C {losses} vs reference {ref_losses}"
    want_logits = np.stack([ref.predict(g_ref, x[None]).reshape(-1) for x in xs[:4]])
    assert np.array_equal(logits.reshape(want_logits.shape), want_logits), \
        "tinyc_infer after training differs from reference.train.predict"
    if expect_change:
        assert changed > 0, "no parameter moved: the comparison would prove nothing"
    return plan


def _scheme(net: str, scheme: str):
    return PARTIAL[net] if scheme == "partial" else scheme


CASES = []
for k, net in enumerate(["gray_odd", "mbv2_block", "big_kernels", "groups_concat",
                         "residual_chain"]):
    for j, scheme in enumerate(SCHEMES):
        CASES.append((net, scheme) + MODES[(k + j) % len(MODES)])
CASES += [("fc_only", "full", True, "nearest"), ("fc_only", "bias-only", False, "stochastic")]


@pytest.mark.parametrize("net, scheme, qas, rounding", CASES)
def test_train_step_matches_reference(net, scheme, qas, rounding, small_nets, tmp_path):
    g = compile_training(str(small_nets[net]), None, _scheme(net, scheme), 10,
                         TrainOptions(qas=qas, rounding=rounding))
    assert_same_training(g, tmp_path, lr=0.05 if qas else NO_QAS_LR)


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_saturation(rounding, small_nets, tmp_path):
    """A huge learning rate: the guard refuses the channel updates that would pin their values
    at a bound, the C and the reference agree on every value and counter (run_both), and what
    is applied stays in [-127, 127] and within the quantizer's bias headroom."""
    g = compile_training(str(small_nets["groups_concat"]), None, "full", 10,
                         TrainOptions(qas=True, rounding=rounding))
    assert_same_training(g, tmp_path, lr=1e9, steps=6, expect_change=False)
    with HostTrainer(tmp_path) as t:
        t.train(np.zeros((3,) + g.tensors[g.inputs[0]].shape[1:], np.int8), [0, 1, 2], 1e9)
        params = t.params()
        guard = t.guard_stats()
    assert guard.refused_saturation > 0 and guard.steps_guarded == 3
    for name, v in params.items():
        limit = ref.BIAS_LIMIT if v.dtype == np.int32 else ref.WEIGHT_LIMIT
        assert np.abs(v.astype(np.int64)).max() <= limit, name


@pytest.mark.parametrize("options", [dict(inplace=False), dict(pack_masks=False),
                                     dict(pointwise=True)])
def test_other_plans(options, small_nets, tmp_path):
    """Plain kernels without in-place sharing, int8 masks instead of bits, in-place 1x1 convs:
    the same training step."""
    g = compile_training(str(small_nets["mbv2_block"]), None, PARTIAL["mbv2_block"], 10,
                         TrainOptions(rounding="stochastic"))
    assert_same_training(g, tmp_path, lr=0.05, plan=plan_memory(g, **options))


@pytest.mark.parametrize("seed", range(6))
def test_random_nets(seed, tmp_path):
    from random_nets import random_net
    path = tmp_path / "net.onnx"
    onnx.save(random_net(seed), path)
    scheme = "full" if seed % 2 == 0 else "bias-only"
    g = compile_training(str(path), None, scheme, 6,
                         TrainOptions(rounding="stochastic" if seed % 3 else "nearest"))
    assert_same_training(g, tmp_path / "c", lr=0.05)


def net_depthwise_chain():
    """Convs of every shape the in-place input gradients handle: depthwise 3x3 stride 1 (channel
    by channel), 3x3 / 5x5 / 7x7 stride 2 (reverse raster order, the 7x7 with a saved prefix of
    its output gradient), a dilated one, and 1x1 convs that expand and shrink the channels, on
    an odd non-square input."""
    from nets import NetBuilder
    b = NetBuilder("depthwise_chain", (1, 3, 31, 27), opset=13, seed=7)
    x = b.clip(b.conv("input", 8, 3, pads=[1, 1, 1, 1]), 0.0, 6.0)
    x = b.clip(b.conv(x, 8, 3, group=8, pads=[1, 1, 1, 1]), 0.0, 6.0)
    x = b.clip(b.conv(x, 8, 5, stride=2, group=8, pads=[2, 2, 2, 2]), 0.0, 6.0)
    x = b.clip(b.conv(x, 8, 3, group=8, dilation=2, pads=[2, 2, 2, 2]), 0.0, 6.0)
    x = b.clip(b.conv(x, 20, 1, pads=[0, 0, 0, 0]), 0.0, 6.0)
    x = b.clip(b.conv(x, 8, 1, pads=[0, 0, 0, 0]), 0.0, 6.0)
    x = b.clip(b.conv(x, 8, 7, stride=2, group=8, pads=[3, 3, 3, 3]), 0.0, 6.0)
    x = b.clip(b.conv(x, 8, 3, stride=2, group=8, pads=[1, 0, 0, 1]), 0.0, 6.0)
    x = b.flatten(b.reduce_mean(x))
    return b.build(b.gemm(x, 5))


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_inplace_depthwise_input_gradients(rounding, tmp_path):
    """Bias-only updates of depthwise convs: their bias step runs before the input gradient, so
    the output gradient dies there and the input gradient overwrites it (planner kinds
    depthwise_grad, depthwise_grad_backwards, pointwise_grad); the step is the same bit for bit,
    and the arena smaller than with separate buffers."""
    from tinyc.memory.planner import depthwise_grad_backwards_saved
    path = tmp_path / "net.onnx"
    onnx.save(net_depthwise_chain(), path)
    g = compile_training(str(path), None, "bias-only", 5,
                         TrainOptions(rounding=rounding, channelwise=False))
    plan = plan_memory(g)
    kinds = {i: k for i, k in plan.inplace.items() if k.endswith(("_grad", "_grad_backwards"))}
    assert set(kinds.values()) == {"depthwise_grad", "depthwise_grad_backwards",
                                   "pointwise_grad"}
    assert sum(k == "pointwise_grad" for k in kinds.values()) == 2   # expanding and shrinking
    saved = [depthwise_grad_backwards_saved(g, g.nodes[i]) for i, k in kinds.items()
             if k == "depthwise_grad_backwards"]
    assert any(saved) and not all(saved), saved   # the 7x7 saves a prefix, the 3x3 none
    for i in kinds:   # a bias-only update reads the output gradient before it is overwritten
        assert g.nodes[i - 1].op == "conv2d_update" or g.nodes[i - 1].op == "grad_mask"
    assert_same_training(g, tmp_path / "c", lr=0.05, plan=plan)
    plain = plan_memory(g, inplace=False)
    assert plan.arena_bytes < plain.arena_bytes


def net_inverted_residuals(hw=(23, 19), blocks=((3, 1, 8), (5, 2, 12), (7, 1, 12))):
    """Inverted-residual blocks (1x1 expand, ReLU6, depthwise 3x3 / 5x5 stride 2 / 7x7, ReLU6,
    1x1 project, a residual add; blocks: (kernel, stride, channels)) on an odd non-square input
    (13x15: the 7x7 on a 4x4 plane)."""
    from nets import NetBuilder
    b = NetBuilder("inverted_residuals", (1, 3) + hw, opset=13, seed=8)
    x = b.clip(b.conv("input", 8, 3, stride=2, pads=[1, 1, 1, 1]), 0.0, 6.0)
    for k, stride, cout in blocks:
        wide = 4 * b.shape[x][1]
        e = b.clip(b.conv(x, wide, 1, pads=[0, 0, 0, 0]), 0.0, 6.0)
        d = b.clip(b.conv(e, wide, k, stride=stride, group=wide, pads=[k // 2] * 4), 0.0, 6.0)
        p = b.conv(d, cout, 1, pads=[0, 0, 0, 0])
        x = b.add(x, p) if stride == 1 and cout == b.shape[x][1] else p
    x = b.flatten(b.reduce_mean(x))
    return b.build(b.gemm(x, 6))


# (scheme, planner options): every 1x1 bias updated / none (only the first conv trained, the
# gradient passes through untrained layers) / every weight; masks as bits / as int8
# activations; expand weights trained inside fused nodes; partially trained (split) layers
# outside and (an expand conv) inside; a tail (the earliest trained layer is a depthwise conv)
FUSED_CASES = [("bias-only", {}), ({"bias_last": 0, "weights": {"0": 1}}, {}),
               ("full", {}), ({"bias_last": 7, "weights": {"9": 1}}, {"pack_masks": False}),
               ({"bias_last": 10, "weights": {"4": 1, "7": 1}}, {}),
               ({"bias_last": 10, "weights": {"3": 0.5, "5": 0.5}}, {}),
               ({"bias_last": 10, "weights": {"7": 0.5}}, {}),
               ({"bias_last": 8, "weights": {"9": 1}}, {"pack_masks": False})]


@pytest.mark.parametrize("case", range(len(FUSED_CASES)))
def test_channelwise_depthwise_pointwise_backward(case, tmp_path):
    """passes/fuse_grad.py: the backward through each 1x1 expand + depthwise pair runs one
    channel at a time (dw_pw_grad), from the project's output gradient where the pattern has
    that head, with the same parameters bit for bit as the reference, and an arena no larger
    than the unfused graph's."""
    from tinyc.passes.fuse_grad import bias_only
    scheme, options = FUSED_CASES[case]
    path = tmp_path / "net.onnx"
    onnx.save(net_inverted_residuals(), path)
    rounding = "stochastic" if case % 2 else "nearest"
    g = compile_training(str(path), None, scheme, 6, TrainOptions(rounding=rounding))
    fused = [n for n in g.nodes if n.op == "dw_pw_grad"]
    assert fused
    if scheme == "full":   # a depthwise weight update needs its whole output gradient: no head
        assert not any(n.attrs["parts"]["proj"] for n in fused)
    if case == 1:   # no bias steps inside
        assert all(n.attrs["parts"]["update"] is None and n.attrs["parts"]["dw_update"] is None
                   for n in fused)
    if case == 0:   # every block: with the project's input gradient (the head), or the stride 2
        assert len(fused) == 3 and any(n.attrs["parts"]["proj"] for n in fused)
    if case in (5, 6):   # weights stored split (partial updates): not the fused depthwise or
        from tinyc.memory.planner import split_weights   # project conv's, the expand conv's may
        split = split_weights(g)
        assert split and not any(n.inputs[i] in split for n in fused for i in (1, 3))
        assert any(n.inputs[5] in split for n in fused) == (case == 6)
    if case == 7:   # the earliest trained layer is a depthwise conv: a tail (no output)
        assert any(not n.outputs and n.attrs["parts"]["dw"] is None for n in fused)
    if case == 4:   # expand weights trained inside, channel by channel
        assert sum(n.attrs["parts"]["update"] is not None
                   and not bias_only(n.attrs["parts"]["update"]) for n in fused) == 2
    plan = plan_memory(g, **options)
    assert_same_training(g, tmp_path / "c", lr=0.05, plan=plan)
    if fused:
        plain = compile_training(str(path), None, scheme, 6,
                                 TrainOptions(rounding=rounding, channelwise=False))
        assert plan.arena_bytes <= plan_memory(plain, **options).arena_bytes


@pytest.mark.parametrize("case", [0, 4])
def test_depthwise_5x5_and_7x7_on_small_planes(case, tmp_path):
    """A 5x5 stride-1 'same' depthwise conv on a 7x8 plane (conv_grad.c: depthwise_plane_5x5)
    and a 7x7 on a 4x4 plane, where each input pixel's 16 terms are all inside the kernel
    (depthwise_plane_4x4_covered), from the head's gradient: the same parameters bit for bit
    as the reference."""
    scheme, options = FUSED_CASES[case]
    path = tmp_path / "net.onnx"
    onnx.save(net_inverted_residuals((13, 15), ((5, 1, 8), (5, 2, 12), (7, 1, 12))), path)
    g = compile_training(str(path), None, scheme, 6, TrainOptions(rounding="nearest"))
    heads = [n.attrs["parts"] for n in g.nodes if n.op == "dw_pw_grad"
             and n.attrs["parts"]["proj"] and n.attrs["parts"]["dw"] is not None]
    shapes = {(tuple(g.tensors[parts["dw"].inputs[1]].shape[1:3]),   # OHWI weights
               tuple(g.tensors[parts["proj_mask"].inputs[1]].shape[1:3]))   # NHWC output
              for parts in heads}
    assert {((7, 7), (4, 4)), ((5, 5), (7, 8))} <= shapes
    assert_same_training(g, tmp_path / "c", lr=0.05, plan=plan_memory(g, **options))

# (kernel, input H x W, scheme): the stem halves the input, so the stride-2 depthwise convs
# see 17x16 / 16x17 planes (odd rows and even columns, and the reverse), then half that
S2_CASES = [(k, hw, scheme) for k in (3, 5, 7)
            for hw, scheme in (((34, 31), "bias-only"), ((31, 34), "full"))]


@pytest.mark.parametrize("kernel, hw, scheme", S2_CASES)
def test_stride2_depthwise_input_gradients(kernel, hw, scheme, tmp_path):
    """Two stride-2 'same' depthwise convs of one kernel size in a row (conv_grad.c:
    depthwise_plane_rows with s2_row_3/5/7 where the output is 8+ wide, the tap lists below that)
    on odd and even planes, their input gradients from the head's plane (bias-only: step 1) or
    from the whole output gradient (full: step = channels): the same parameters bit for bit as
    the reference."""
    path = tmp_path / "net.onnx"
    onnx.save(net_inverted_residuals(hw, ((kernel, 2, 8), (kernel, 2, 12))), path)
    g = compile_training(str(path), None, scheme, 6, TrainOptions(rounding="nearest"))
    assert sum(n.op == "dw_pw_grad" and n.attrs["parts"]["dw"] is not None
               for n in g.nodes) == 2
    widths = sorted(g.tensors[n.outputs[0]].shape[2] for n in g.nodes   # NHWC outputs
                    if n.op == "conv2d" and n.attrs.get("groups", 1) > 1)
    assert len(widths) == 2 and widths[-1] >= 8 and widths[0] < 8
    assert_same_training(g, tmp_path / "c", lr=0.05)


@pytest.mark.parametrize("scheme, options", [("bias-only", {}), ("full", {}),
                                             ("bias-only", {"pack_masks": False})])
def test_depthwise_masks_of_any_channel_count(scheme, options, tmp_path):
    """The 3x3, 5x5 and 7x7-on-4x4 depthwise input gradients read a packed mask a byte step per
    pixel when the channels are a multiple of 8 (32 here), bit by bit otherwise (20), or the int8
    activations (pack_masks off): the same parameters bit for bit as the reference."""
    path = tmp_path / "net.onnx"
    onnx.save(net_inverted_residuals((13, 15), ((3, 1, 8), (5, 1, 5), (3, 1, 5), (5, 1, 5),
                                                (7, 2, 5), (7, 1, 5))), path)
    g = compile_training(str(path), None, scheme, 6, TrainOptions(rounding="nearest"))
    wide = {g.tensors[n.outputs[0]].shape[3] for n in g.nodes
            if n.op == "conv2d" and n.attrs.get("groups", 1) > 1}
    assert wide == {20, 32}
    assert_same_training(g, tmp_path / "c", lr=0.05, plan=plan_memory(g, **options))


# ---------------------------------------------------------------- split weights
def net_split_chain():
    """A chain whose trained layers are all partial: a 3x3 conv (groups 1), a depthwise 3x3, a
    1x1 conv, a depthwise 5x5 stride 2 with multiplier 2 and a grouped 3x3 conv, over a first
    conv that trains only its bias, so every partial layer also propagates its input gradient
    (through the split weights) further down."""
    from nets import NetBuilder
    b = NetBuilder("split_chain", (1, 3, 19, 23), opset=13, seed=11)
    x = b.clip(b.conv("input", 8, 3), 0.0, 6.0)                         # 0: bias only
    x = b.clip(b.conv(x, 12, 3), 0.0, 6.0)                              # 1: 3x3, half of 8
    x = b.clip(b.conv(x, 12, 3, group=12), 0.0, 6.0)                    # 2: depthwise, 6 of 12
    x = b.clip(b.conv(x, 16, 1, pads=[0, 0, 0, 0]), 0.0, 6.0)           # 3: 1x1, 3 of 12
    x = b.clip(b.conv(x, 32, 5, stride=2, group=16), 0.0, 6.0)          # 4: depthwise x2, 8 of 16
    x = b.clip(b.conv(x, 16, 3, group=4), 0.0, 6.0)                     # 5: grouped, 8 of 32
    x = b.flatten(b.reduce_mean(x))
    return b.build(b.gemm(x, 5))


SPLIT_SCHEME = {"bias_last": 6, "weights": {"1": 0.5, "2": 0.5, "3": 0.25, "4": 0.5, "5": 0.25}}


def split_chain_training(tmp_path, rounding="stochastic"):
    path = tmp_path / "split_chain.onnx"
    onnx.save(net_split_chain(), path)
    return compile_training(str(path), None, SPLIT_SCHEME, 5, TrainOptions(rounding=rounding))


def sram_count_by_hand(g, weight):
    """kh * kw * (out_c / groups) per kept input channel: the weights of the kept channels."""
    upd = next(n for n in g.nodes if n.op == "conv2d_update" and n.inputs[2] == weight)
    out_c, kh, kw, _ = g.tensors[weight].shape
    return kh * kw * out_c // upd.attrs["groups"] * len(upd.attrs["channels"])


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("options", [{}, dict(pointwise=True, pointwise_grad=True)])
def test_split_weights_train_like_the_reference(rounding, options, tmp_path):
    """Every partially trained conv keeps only its trained channels' weights in SRAM and reads
    the others from flash (tinyc_conv2d_split forward, tinyc_conv2d_grad_input_split backward,
    the update on the SRAM array): the same step as the reference, bit for bit, whatever
    in-place kernels the plan may otherwise pick."""
    from tinyc.memory.planner import conv_kernel_kind, split_weights
    g = split_chain_training(tmp_path, rounding)
    split = split_weights(g)
    assert len(split) == 5
    plan = plan_memory(g, **options)
    for i, node in enumerate(g.nodes):
        if node.op == "conv2d" and node.inputs[1] in split:
            assert i not in plan.inplace and i not in plan.scratch and i not in plan.bias_scratch
            assert conv_kernel_kind(g, node, None, False) == "conv_split"
        if node.op == "conv2d_grad_input" and not node.attrs["fc"]:
            assert node.inputs[1] in split and i not in plan.inplace
    assert_same_training(g, tmp_path / "c", lr=0.05, plan=plan)
    code = (tmp_path / "c" / "model.c").read_text()
    assert code.count("tinyc_conv2d_split(&") == 5
    assert code.count("tinyc_conv2d_grad_input_split(&") == 5   # all: layer 0 needs one


def test_split_weights_sram_bytes(tmp_path):
    """params_sram_bytes is what the generated SRAM arrays hold (model.c, model.h, the hand
    count kh * kw * out_c / groups * kept channels per split weight), less than the whole
    tensors; the transfer size (TINYC_PARAM_BYTES, train_params.json bytes) stays the whole
    tensors'."""
    from tinyc.memory.planner import split_weights
    g = split_chain_training(tmp_path)
    plan = plan_memory(g)
    mem = training_memory(g, plan)
    out = generate_c(g, plan, tmp_path / "c")
    code = (out / "model.c").read_text()
    arrays = re.findall(r"^static (int8_t|int32_t) tinyc_p\d+\[(\d+)\]", code, flags=re.M)
    assert len(arrays) == len(trainable_tensors(g))
    in_c = sum(int(n) * (4 if t == "int32_t" else 1) for t, n in arrays)
    split = split_weights(g)
    by_hand = sum(sram_count_by_hand(g, t) if t in split else g.tensors[t].nbytes
                  for t, _ in trainable_tensors(g))
    whole = sum(g.tensors[t].nbytes for t, _ in trainable_tensors(g))
    assert mem["params_sram_bytes"] == in_c == by_hand < whole
    assert whole - by_hand == mem["params"]["split_flash_bytes"]
    assert mem["sram_bytes"] == plan.arena_bytes + in_c
    header = (out / "model.h").read_text()
    assert f"#define TINYC_PARAM_SRAM_BYTES {in_c}\n" in header
    assert f"#define TINYC_PARAM_BYTES {whole}\n" in header
    table = json.loads((out / "train_params.json").read_text())
    assert sum(p["bytes"] for p in table) == whole
    assert sum(p["sram_bytes"] for p in table) == in_c


def test_split_weights_param_round_trip(tmp_path):
    """tinyc_get_param / tinyc_set_param move the whole (logical) tensor of a split weight: the
    host harness saves and restores a run as with whole tensors; values given for the channels
    that are not trained are ignored (those weights are flash constants)."""
    from tinyc.memory.planner import split_weights
    g = split_chain_training(tmp_path)
    generate_c(g, plan_memory(g), tmp_path / "c")
    split = split_weights(g)
    shape = g.tensors[g.inputs[0]].shape
    rng = np.random.default_rng(2)
    xs = rng.integers(-128, 128, (8,) + shape[1:]).astype(np.int8)
    ys = rng.integers(0, 5, 8)
    with HostTrainer(tmp_path / "c") as t:
        assert all(np.array_equal(v, g.tensors[k].data) for k, v in t.params().items())
        full = t.train(xs, ys, 0.05)
        p_full = t.params()
        t.reset()
        t.train(xs[:4], ys[:4], 0.05)
        saved = t.params()
        t.reset()
        tampered = {k: v.copy() for k, v in saved.items()}
        for name, s in split.items():
            out_c, _, _, cin_g = tampered[name].shape
            channel = (np.arange(out_c)[:, None] // (out_c // s["groups"]) * cin_g
                       + np.arange(cin_g)[None, :])          # (o, i) -> global input channel
            frozen = np.broadcast_to(~np.isin(channel, s["channels"])[:, None, None, :],
                                     tampered[name].shape)
            tampered[name][frozen] = 77   # ignored: those weights are read from flash
        t.set_params(tampered)
        assert all(np.array_equal(v, saved[k]) for k, v in t.params().items())
        t.set_step(4)
        rest = t.train(xs[4:], ys[4:], 0.05)
        assert all(np.array_equal(p_full[k], v) for k, v in t.params().items())
    assert np.array_equal(rest, full[4:])
    assert any(not np.array_equal(p_full[k], g.tensors[k].data) for k in split)


def test_host_trainer_takes_a_rate_per_step(tmp_path):
    """HostTrainer.train with one rate per sample (a schedule) is the same run as one call per
    sample at that step's rate; a decayed schedule is not the constant one; a schedule of the
    wrong length is refused."""
    from tinyc.errors import TinycError
    g = split_chain_training(tmp_path)
    generate_c(g, plan_memory(g), tmp_path / "c")
    shape = g.tensors[g.inputs[0]].shape
    rng = np.random.default_rng(3)
    xs = rng.integers(-128, 128, (8,) + shape[1:]).astype(np.int8)
    ys = rng.integers(0, 5, 8)
    rates = np.linspace(0.05, 0.005, 8)
    with HostTrainer(tmp_path / "c") as t:
        scheduled = t.train(xs, ys, rates)
        p_scheduled = t.params()
        t.reset()
        one_by_one = [t.step(x, int(y), float(r)) for x, y, r in zip(xs, ys, rates)]
        assert all(np.array_equal(v, p_scheduled[k]) for k, v in t.params().items())
        t.reset()
        t.train(xs, ys, 0.05)
        assert any(not np.array_equal(v, p_scheduled[k]) for k, v in t.params().items())
        with pytest.raises(TinycError, match="8 inputs but 3 learning rates"):
            t.train(xs, ys, rates[:3])
    assert np.array_equal(scheduled, np.float32(one_by_one))


LR_MAIN = r"""
#include <stdio.h>
#include "model.h"
int main(void)
{
    float peak;
    uint32_t kind, step, steps;
    while (fread(&peak, 4, 1, stdin) == 1 && fread(&kind, 4, 1, stdin) == 1
           && fread(&step, 4, 1, stdin) == 1 && fread(&steps, 4, 1, stdin) == 1) {
        float r[2];
        r[0] = tinyc_lr_schedule(peak, kind, step, steps);
        r[1] = tinyc_train_lr(step, steps);
        fwrite(r, 4, 2, stdout);
    }
    return 0;
}
"""


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_lr_schedule_host_equals_c_bitwise(schedule, tmp_path):
    """tinyc_lr_schedule / tinyc_train_lr of the generated model.h (host gcc, strict C99) give
    the same float32 bits as lr_schedule.rates on the host, for many peaks, run lengths (up to
    2^32 - 1, where (float)step rounds) and steps (the last one, and past the end)."""
    from tinyc import lr_schedule as L
    g = split_chain_training(tmp_path)
    g.meta["train"].update(lr=0.0037, lr_schedule=schedule)
    out = generate_c(g, plan_memory(g), tmp_path / "c")
    header = (out / "model.h").read_text()
    assert f"#define TINYC_TRAIN_LR_SCHEDULE TINYC_LR_{schedule.upper()}" in header
    (tmp_path / "main.c").write_text(LR_MAIN)
    exe = tmp_path / "lr"
    subprocess.run(["gcc", *STRICT, "-I", str(out), str(tmp_path / "main.c"), "-o", str(exe)],
                   check=True)
    rng = np.random.default_rng(5)
    rows = []   # (peak, kind, step, steps)
    for steps in [0, 1, 2, 3, 7, 10, 999, 1000, 2 ** 24 - 1, 2 ** 24 + 1, 2 ** 31 + 3,
                  2 ** 32 - 1, *rng.integers(1, 2 ** 32, 20)]:
        steps = int(steps)
        ks = {0, 1, steps // 3, steps // 2, max(steps - 2, 0), max(steps - 1, 0), steps,
              min(steps + 5, 2 ** 32 - 1)}
        ks |= {int(k) for k in rng.integers(0, max(steps, 1), 30)}
        for peak in (0.0037, 0.003, 0.001, 0.03, float(rng.uniform(1e-5, 1))):
            rows += [(peak, kind, k, steps) for k in sorted(ks) for kind in (0, 1)]
    raw = b"".join(struct.pack("<fIII", *r) for r in rows)
    res = subprocess.run([str(exe)], input=raw, capture_output=True, check=True).stdout
    got = np.frombuffer(res, np.uint32).reshape(-1, 2)
    names = {v: k for k, v in L.LR_SCHEDULE_CODES.items()}
    want = np.array([np.float32(L.rate(p, names[kind], k, n)) for p, kind, k, n in rows],
                    np.float32).view(np.uint32)
    bad = np.flatnonzero(got[:, 0] != want)
    assert not len(bad), f"tinyc_lr_schedule{rows[bad[0]]}: C and host differ"
    mine = np.array([np.float32(L.rate(0.0037, schedule, k, n)) for _, _, k, n in rows],
                    np.float32).view(np.uint32)
    assert np.array_equal(got[:, 1], mine)
    # linear decays: the first step at the peak, the last at peak / T, never 0 nor past it
    lin = L.rates(0.003, "linear", 1000)
    assert lin[0] == np.float32(0.003) and np.all(np.diff(lin) < 0) and lin[-1] > 0
    assert np.isclose(lin[-1], 0.003 / 1000, rtol=1e-5)


# ---------------------------------------------------------------- shared pretrained models
PUBLISHED = {   # ../shared/models/README.md
    "mbv2-w0.35_96": {"name": "99kb", "bias_last": 25,
                      "weights": {"27": 1, "30": 1, "33": 1, "36": 1, "39": 1, "42": .125,
                                  "45": .5, "48": 1}},
    "mcunet-5fps_96": {"name": "49kb", "bias_last": 20,
                       "weights": {"23": 0, "24": .25, "27": .5, "30": .5, "33": 0, "39": 0}},
    "mcunet-5fps_128": {"name": "148kb", "bias_last": 23,
                        "weights": {"21": 1, "24": 1, "27": 1, "30": 1, "36": 1, "39": .5}},
}


@pytest.mark.parametrize("name, rounding", [("mbv2-w0.35_96", "stochastic"),
                                            ("mcunet-5fps_96", "nearest"),
                                            pytest.param("mcunet-5fps_128", "stochastic",
                                                         marks=pytest.mark.benchmark)])
def test_shared_model_published_scheme(name, rounding, tmp_path):
    path = shared_model(name)
    g = compile_training(str(path), None, PUBLISHED[name], 10, TrainOptions(rounding=rounding))
    plan = assert_same_training(g, tmp_path, lr=0.01)
    assert plan.masks, "clamp outputs read only by masks should be saved as bits"
    mem = training_memory(g, plan, 8192)
    if name == "mcunet-5fps_128":
        # blocks.13.0.0 (1x1, 96 x 576) trains half its input channels: 27,648 B of its
        # 55,296 stay in flash (the layer-by-layer arena of 128 px needs a patch schedule to
        # fit 256 KB; tinyc build picks one)
        whole = sum(g.tensors[t].nbytes for t, _ in trainable_tensors(g))
        assert mem["params"]["split_flash_bytes"] == 27648
        assert mem["params_sram_bytes"] == whole - 27648
    else:
        assert mem["sram_bytes"] <= 256 * 1024


# ---------------------------------------------------------------- the float32 helpers
HELPERS_MAIN = r"""
#include <stdio.h>
#include "tinyc/train.h"
int main(void)
{
    float x;
    uint32_t c;
    while (fread(&x, 4, 1, stdin) == 1 && fread(&c, 4, 1, stdin) == 1) {
        float r[4];
        uint32_t h = tinyc_lowbias32(c);
        r[0] = tinyc_expf(x > 0.0f ? -x : x);
        r[1] = tinyc_round_nearest(x);
        r[2] = tinyc_round_stochastic(x, c);
        r[3] = tinyc_floorf(x);
        fwrite(r, 4, 4, stdout);
        fwrite(&h, 4, 1, stdout);
    }
    return 0;
}
"""


def test_float_helpers_match_reference(tmp_path):
    """tinyc_expf, the roundings, floor and lowbias32 on edge values and a dense sweep."""
    main = tmp_path / "main.c"
    main.write_text(HELPERS_MAIN)
    exe = tmp_path / "helpers"
    srcs = [RUNTIME / "src" / "backward" / "loss.c", RUNTIME / "src" / "optim" / "sgd.c"]
    subprocess.run(["gcc", *STRICT, "-ffp-contract=off", "-I", str(RUNTIME / "include"),
                    str(main), *map(str, srcs), "-o", str(exe), "-lm"], check=True)
    rng = np.random.default_rng(0)
    edges = [0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999997, -0.49999997, 8388607.5,
             -8388607.5, 8388608.0, 16777215.0, 3e9, -3e9, 1e-45, -87.0, -87.5, -200.0,
             -103.9, -0.1, -1e-8, np.inf, -np.inf]
    x = np.concatenate([np.array(edges, np.float32),
                        rng.uniform(-90, 0, 20000).astype(np.float32),
                        rng.normal(0, 3, 20000).astype(np.float32),
                        (rng.normal(0, 1, 5000) * 10.0 ** rng.integers(-6, 10, 5000))
                        .astype(np.float32)])
    c = rng.integers(0, 2 ** 32, x.size, dtype=np.uint64).astype(np.uint32)
    c[:4] = [0, 1, 0xFFFFFFFF, 0x80000000]
    raw = np.empty(x.size * 2, np.uint32)
    raw[0::2] = x.view(np.uint32)
    raw[1::2] = c
    out = subprocess.run([str(exe)], input=raw.tobytes(), capture_output=True, check=True).stdout
    res = np.frombuffer(out, np.uint32).reshape(-1, 5)
    got = res[:, :4].copy().view(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        e_in = np.where(x > 0, -x, x)
        want = [ref.expf(e_in), ref.round_nearest(x), ref.round_stochastic(x, c), np.floor(x)]
    for k, what in enumerate(["expf", "round_nearest", "round_stochastic", "floor"]):
        w = np.asarray(want[k], np.float32)
        same = (got[:, k] == w) | (np.isnan(got[:, k]) & np.isnan(w))
        assert same.all(), f"{what}({x[~same][0]!r}) = {got[~same, k][0]!r}, reference {w[~same][0]!r}"
    assert np.array_equal(res[:, 4], ref.lowbias32(c))


# ---------------------------------------------------------------- plan and API
def test_training_plan_and_memory(small_nets):
    g = compile_training(str(small_nets["groups_concat"]), None, "bias-only", 10)
    plan = plan_memory(g)
    n_fwd = g.meta["train"]["forward_nodes"]
    # float gradients are 4 bytes an element; in-place gradient nodes exist
    grads = [t for t in plan.tensor_offsets if t in g.tensors and g.tensors[t].dtype == "float32"]
    assert grads and all(plan.buffers[plan.tensor_buffer[t]].size >= 4 * g.tensors[t].size
                         for t in grads)
    assert {"elementwise", "alias"} & set(plan.inplace.values())
    # bias-only: no activation is kept for a weight update, only bit masks
    assert plan.masks
    for y, m in plan.masks.items():
        assert plan.lifetimes[y][1] < n_fwd, f"{y} should die in the forward pass"
    mem = training_memory(g, plan, stack_reserve=1000)
    assert mem["arena_bytes"] == plan.arena_bytes
    assert mem["sram_bytes"] == plan.arena_bytes + mem["params_sram_bytes"] + 1000
    assert mem["params_sram_bytes"] == sum(g.tensors[t].nbytes for t, _ in trainable_tensors(g))
    assert mem["forward_peak"]["node"] < n_fwd <= mem["backward_peak"]["node"]
    for moment in (mem["forward_peak"], mem["backward_peak"]):
        assert moment["live_bytes"] == sum(moment[k] for k in (
            "activation_bytes", "saved_bytes", "gradient_bytes", "scratch_bytes"))
        assert moment["live_bytes"] <= plan.arena_bytes
    assert mem["saved_mask_bytes"] == sum(m["bytes"] for m in plan.masks.values())


def test_inference_build_unchanged(small_nets, tmp_path):
    """A build without --train has no training code, header or parameter table."""
    from tinyc.pipeline import compile_int8
    g = compile_int8(str(small_nets["mbv2_block"]), None)
    out = generate_c(g, plan_memory(g), tmp_path)
    assert not (out / "tinyc" / "train.h").exists()
    assert not (out / "train_params.json").exists()
    assert "tinyc_train_step" not in (out / "model.c").read_text()
    assert "TINYC_TRAINING" not in (out / "model.h").read_text()


def test_harness_api(small_nets, tmp_path):
    """Resuming from saved parameters and step count equals an uninterrupted run; bad labels
    are refused by the C (-1) and by the Python side; run_host_training starts afresh."""
    from tinyc.errors import TinycError
    g = compile_training(str(small_nets["residual_chain"]), None, "last:2", 4,
                         TrainOptions(rounding="stochastic"))
    generate_c(g, plan_memory(g), tmp_path)
    shape = g.tensors[g.inputs[0]].shape
    rng = np.random.default_rng(5)
    xs = rng.integers(-128, 128, (10,) + shape[1:]).astype(np.int8)
    ys = rng.integers(0, 4, 10)
    with HostTrainer(tmp_path) as t:
        full = t.train(xs, ys, 0.05)
        p_full = t.params()
        t.reset()
        first = t.train(xs[:6], ys[:6], 0.05)
        saved = t.params()
        t.reset()
        t.set_params(saved)
        t.set_step(6)
        rest = t.train(xs[6:], ys[6:], 0.05)
        assert all(np.array_equal(p_full[k], v) for k, v in t.params().items())
        with pytest.raises(TinycError, match="out of range"):
            t.train(xs[:1], [4], 0.05)
    assert np.array_equal(np.concatenate([first, rest]), full)
    losses, params = run_host_training(tmp_path, xs, ys, 0.05)
    assert np.array_equal(losses, full)
    assert all(np.array_equal(p_full[k], v) for k, v in params.items())
    # the C refuses an out-of-range label without touching the state
    cmd = b"T" + struct.pack("=if", 7, 0.05) + xs[0].tobytes() + b"P"
    res = subprocess.run([str(tmp_path / TRAIN_EXE)], input=cmd, capture_output=True, check=True)
    assert struct.unpack("=f", res.stdout[:4])[0] == -1.0
    n = 0
    for name, v in g_initial_params(g).items():
        got = np.frombuffer(res.stdout[4 + n:4 + n + v.nbytes], v.dtype).reshape(v.shape)
        assert np.array_equal(got, v), name
        n += v.nbytes


def g_initial_params(g):
    return {name: g.tensors[name].data for name, _ in trainable_tensors(g)}


# ---------------------------------------------------------------- portability of the C
def _training_sources():
    return sorted((RUNTIME / "src" / "backward").glob("*.c")) + sorted(
        (RUNTIME / "src" / "optim").glob("*.c"))


@pytest.mark.parametrize("compiler, flags", [("gcc", []), ("arm-none-eabi-gcc", ARM_FLAGS)])
def test_training_code_compiles_warning_free(compiler, flags, small_nets, tmp_path):
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed")
    g = compile_training(str(small_nets["groups_concat"]), None, PARTIAL["groups_concat"], 10,
                         TrainOptions(rounding="stochastic"))
    out = generate_c(g, plan_memory(g), tmp_path / "gen")
    assert "tinyc_conv2d_split(&" in (out / "model.c").read_text()   # split weights
    for src in [out / "model.c", *_training_sources(), *sorted((out / "tinyc").glob("*.c"))]:
        res = subprocess.run([compiler, *STRICT, *flags, "-I", str(out), "-c", str(src), "-o",
                              str(tmp_path / (src.stem + ".o"))], capture_output=True, text=True)
        assert res.returncode == 0, f"{compiler} {src.name}:\n{res.stderr}"


def test_no_fused_multiply_add_on_cortex_m4(tmp_path):
    """GNU C mode contracts a * b + c into vfma by default; train.h turns that off, so the
    kernels round every product as the reference does even without -ffp-contract=off."""
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc is not installed")
    for src in _training_sources():
        res = subprocess.run(["arm-none-eabi-gcc", "-std=gnu99", "-O3", *ARM_FLAGS, "-I",
                              str(RUNTIME / "include"), "-S", str(src), "-o", "-"],
                             capture_output=True, text=True, check=True)
        fused = re.findall(r"\bv(?:fma|fms|fnma|fnms|mla|mls|nmla|nmls)\.f32\b", res.stdout)
        assert not fused, f"{src.name}: fused multiply-add instructions {fused[:3]}"


# ---------------------------------------------------------------- on a Cortex-M4F (QEMU)
QEMU_STARTUP = r"""
#include <stdint.h>
extern uint32_t __stack_top, __etext, __data_start__, __data_end__;
extern void _start(void);
void Reset_Handler(void);
void Default_Handler(void);
void Default_Handler(void) { for (;;) {} }
void Reset_Handler(void)
{
    const uint32_t *src = &__etext;
    uint32_t *dst = &__data_start__;
    *(volatile uint32_t *)0xE000ED88 |= (0xFu << 20);   /* CPACR: enable the FPU */
    __asm volatile("dsb\n isb");
    while (dst < &__data_end__) {
        *dst++ = *src++;
    }
    _start();   /* newlib: zero .bss, semihosting set-up, main(), exit() */
}
__attribute__((section(".vectors"), used)) const void *const vectors[8] = {
    &__stack_top, (const void *)Reset_Handler, (const void *)Default_Handler,
    (const void *)Default_Handler, (const void *)Default_Handler,
    (const void *)Default_Handler, (const void *)Default_Handler, (const void *)Default_Handler,
};
"""
QEMU_LINK = """
MEMORY { FLASH (rx) : ORIGIN = 0x00000000, LENGTH = 4M
         RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 4M }
ENTRY(Reset_Handler)
SECTIONS {
  .text : { KEEP(*(.vectors)) *(.text*) *(.rodata*) KEEP(*(.init)) KEEP(*(.fini)) . = ALIGN(4); } > FLASH
  .ARM.exidx : { *(.ARM.exidx*) } > FLASH
  __etext = .;
  .data : AT(__etext) { __data_start__ = .; *(.data*) . = ALIGN(4); __data_end__ = .; } > RAM
  .bss : { __bss_start__ = .; *(.bss*) *(COMMON) . = ALIGN(4); __bss_end__ = .; } > RAM
  __end__ = .; end = .;
  __HeapLimit = ORIGIN(RAM) + LENGTH(RAM) - 0x10000;
  __stack_top = ORIGIN(RAM) + LENGTH(RAM);
  __stack = __stack_top;
}
"""
QEMU_MAIN = r"""
#include <stdio.h>
#include "model.h"
#include "samples.h"
static unsigned char params[TINYC_PARAM_BYTES];
int main(void)
{
    float losses[NUM_SAMPLES];
    size_t at = 0;
    int k;
    FILE *f;
    for (k = 0; k < NUM_SAMPLES; ++k) {
        losses[k] = tinyc_train_step(samples[k], labels[k], LR);
    }
    for (k = 0; k < TINYC_NUM_PARAMS; ++k) {
        at += (size_t)tinyc_get_param(k, params + at);
    }
    f = fopen("result.bin", "wb");
    fwrite(losses, 4, NUM_SAMPLES, f);
    fwrite(params, 1, at, f);
    return fclose(f) == 0 ? 0 : 1;
}
"""


def train_in_qemu(gen, plan, g, tmp_path: Path, steps: int, lr: float, seed: int) -> int:
    """Compile the training step generated from `gen` (planned by `plan`) for an emulated
    Cortex-M4F (QEMU mps2-an386, hard-float FPU) in GNU C mode at -O3, where GCC would fuse
    multiply-adds, run `steps` steps and check losses and parameters against the numpy
    reference of graph `g` (the same step, possibly unpatched or unfused). Returns how many
    parameter values moved."""
    from tinyc.codegen.c import format_values
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    out = generate_c(gen, plan, tmp_path / "gen")
    shape = g.tensors[g.inputs[0]].shape
    classes = g.tensors[g.meta["train"]["logits"]].shape[-1]
    rng = np.random.default_rng(seed)
    xs = rng.integers(-128, 128, (steps,) + shape[1:]).astype(np.int8)
    ys = rng.integers(0, classes, steps)
    (out / "samples.h").write_text(
        f"#define NUM_SAMPLES {steps}\n#define LR {float(np.float32(lr)).hex()}f\n"
        "static const int8_t samples[NUM_SAMPLES][TINYC_INPUT_SIZE] = {\n"
        f"    {format_values(xs)}\n}};\n"
        f"static const int labels[NUM_SAMPLES] = {{ {format_values(ys)} }};\n")
    for name, text in (("startup.c", QEMU_STARTUP), ("link.ld", QEMU_LINK),
                       ("main.c", QEMU_MAIN)):
        (tmp_path / name).write_text(text)
    srcs = [out / "model.c", *sorted((out / "tinyc").glob("*.c")), tmp_path / "main.c",
            tmp_path / "startup.c"]
    res = subprocess.run(["arm-none-eabi-gcc", "-O3", *ARM_FLAGS, "-I", str(out),
                          *map(str, srcs), "-T", str(tmp_path / "link.ld"),
                          "--specs=rdimon.specs", "-lm", "-o", str(tmp_path / "fw.elf")],
                         capture_output=True, text=True)
    if res.returncode != 0 and "rdimon" in res.stderr:
        pytest.skip(f"newlib's semihosting library is missing: {res.stderr.strip()[:200]}")
    assert res.returncode == 0, res.stderr
    subprocess.run(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-semihosting-config",
                    "enable=on,target=native", "-kernel", str(tmp_path / "fw.elf")],
                   cwd=tmp_path, capture_output=True, timeout=120, check=True)
    raw = (tmp_path / "result.bin").read_bytes()
    losses = np.frombuffer(raw[:4 * steps], np.float32)
    g_ref = g.copy()
    want = np.array([ref.train_step(g_ref, xs[k][None], int(ys[k]), lr, k) for k in range(steps)])
    assert np.max(np.abs(losses - want) / np.abs(want)) <= 1e-5
    at, changed = 4 * steps, 0
    for name, _ in trainable_tensors(g):
        t = g_ref.tensors[name]
        got = np.frombuffer(raw[at:at + t.data.nbytes], t.data.dtype).reshape(t.data.shape)
        assert np.array_equal(got, t.data), name
        changed += int(np.sum(t.data != g.tensors[name].data))
        at += t.data.nbytes
    assert at == len(raw)
    return changed


def test_cortex_m4_in_qemu(small_nets, tmp_path):
    """The generated training step on an emulated Cortex-M4F: the same integer state as the
    numpy reference."""
    g = compile_training(str(small_nets["groups_concat"]), None, PARTIAL["groups_concat"], 10,
                         TrainOptions(rounding="stochastic"))
    assert train_in_qemu(g, plan_memory(g), g, tmp_path, steps=12, lr=0.05, seed=3) > 0


def test_channelwise_backward_on_cortex_m4_in_qemu(tmp_path):
    """The in-place and channel-by-channel input gradients (dw_pw_grad, depthwise_grad*,
    pointwise_grad) on an emulated Cortex-M4F: the same integer state as the reference."""
    path = tmp_path / "net.onnx"
    onnx.save(net_inverted_residuals(), path)
    g = compile_training(str(path), None, {"bias_last": 8, "weights": {"4": 1, "7": 0.5}}, 6,
                         TrainOptions(rounding="stochastic"))   # layer 7: split weights
    fused = [n for n in g.nodes if n.op == "dw_pw_grad"]
    assert len(fused) >= 3 and any(not n.outputs for n in fused)   # a tail too
    assert train_in_qemu(g, plan_memory(g), g, tmp_path, steps=8, lr=0.05, seed=6) > 0


@pytest.mark.parametrize("room", [True, False])
def test_expand_weight_gradients_from_floats(room, monkeypatch, tmp_path):
    """dw_pw_grad with trained expand weights: where the arena has room at the node, the
    planner gives its scratch the expand layer's input as floats too (dw_pw_grad_roomy_bytes,
    moved to a free gap if need be; the arena does not grow), else the kernel reads the int8
    input through the table. Both: the same parameters bit for bit as the reference, on the
    host (plain C) and on an emulated Cortex-M4F (four floats per VLDM / VSTM)."""
    import tinyc.memory.planner as planner
    from tinyc.ops.conv_train import dw_pw_grad_roomy_bytes
    path = tmp_path / "net.onnx"
    onnx.save(net_inverted_residuals(), path)
    g = compile_training(str(path), None, {"bias_last": 10, "weights": {"7": 1}}, 6,
                         TrainOptions(rounding="stochastic"))
    arena = plan_memory(g).arena_bytes
    if not room:
        monkeypatch.setattr(planner, "_grow_scratch", lambda *a: None)
    plan = plan_memory(g)
    assert plan.arena_bytes == arena
    fused = [i for i, n in enumerate(g.nodes) if n.op == "dw_pw_grad"
             and dw_pw_grad_roomy_bytes(g, n)]
    assert len(fused) == 1
    assert {plan.scratch[i][1] >= dw_pw_grad_roomy_bytes(g, g.nodes[i]) for i in fused} == {room}
    assert_same_training(g, tmp_path / "c", lr=0.05, plan=plan)
    assert train_in_qemu(g, plan, g, tmp_path, steps=6, lr=0.05, seed=4) > 0


MASK_FOLD_SOURCES = [ROOT / "tests" / "c" / "mask_fold_exact.c",
                     RUNTIME / "src" / "backward" / "elementwise_grad.c",
                     RUNTIME / "src" / "backward" / "loss.c", RUNTIME / "src" / "optim" / "sgd.c",
                     RUNTIME / "src" / "optim" / "split_weights.c"]
MASK_FOLD_CASES = "271489 cases equal"


@pytest.mark.parametrize("variant", [(), ("-DTINYC_SIMD_EMULATE",)], ids=["portable", "dsp"])
def test_mask_and_folded_bias_exact(variant, tmp_path):
    """The training forward's helpers, tinyc_pack_mask (four elements a word with SSUB8/SEL on
    the DSP variant) and tinyc_fold_bias (USADA8), and the backward's tinyc_grad_mask_bits (a
    byte at a time), against their definitions element by element (tests/c/mask_fold_exact.c):
    every int8 value under every pair of bounds in [-130, 129], partial bytes, unaligned inputs,
    -0, infinities and NaNs through the mask, filters of 1 to 70 and 1000 weights."""
    exe = tmp_path / "mask_fold_exact"
    subprocess.run(["gcc", *STRICT, *variant, "-I", str(RUNTIME / "include"),
                    *map(str, MASK_FOLD_SOURCES), "-lm", "-o", str(exe)], check=True)
    res = subprocess.run([str(exe)], capture_output=True, text=True)
    assert res.returncode == 0 and MASK_FOLD_CASES in res.stdout, res.stdout


def test_mask_and_folded_bias_exact_on_cortex_m4(tmp_path):
    """The same cases on an emulated Cortex-M4F: the DSP variant's real SSUB8, SEL and USADA8."""
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    for name, text in (("startup.c", QEMU_STARTUP), ("link.ld", QEMU_LINK)):
        (tmp_path / name).write_text(text)
    res = subprocess.run(["arm-none-eabi-gcc", "-O2", *ARM_FLAGS, "-I", str(RUNTIME / "include"),
                          *map(str, MASK_FOLD_SOURCES), str(tmp_path / "startup.c"), "-T",
                          str(tmp_path / "link.ld"), "--specs=rdimon.specs", "-lm", "-o",
                          str(tmp_path / "fw.elf")], capture_output=True, text=True)
    if res.returncode != 0 and "rdimon" in res.stderr:
        pytest.skip(f"newlib's semihosting library is missing: {res.stderr.strip()[:200]}")
    assert res.returncode == 0, res.stderr
    run = subprocess.run(["qemu-system-arm", "-M", "mps2-an386", "-nographic",
                          "-semihosting-config", "enable=on,target=native", "-kernel",
                          str(tmp_path / "fw.elf")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and MASK_FOLD_CASES in run.stdout, run.stdout + run.stderr


def test_stride2_depthwise_on_cortex_m4_in_qemu(tmp_path):
    """The stride-2 row passes of 5x5, 7x7 and 3x3 depthwise input gradients (18x17, 9x9 and 5x5
    outputs) on an emulated Cortex-M4F: the same integer state as the reference."""
    path = tmp_path / "net.onnx"
    onnx.save(net_inverted_residuals((70, 67), ((5, 2, 8), (7, 2, 12), (3, 2, 12))), path)
    g = compile_training(str(path), None, "bias-only", 6, TrainOptions(rounding="stochastic"))
    assert sum(n.op == "dw_pw_grad" for n in g.nodes) == 3
    assert train_in_qemu(g, plan_memory(g), g, tmp_path, steps=4, lr=0.05, seed=9) > 0

@pytest.mark.parametrize("channels", [16, 64])
def test_ds_cnn_bias_only(channels, tmp_path):
    """A DS-CNN keyword-spotting net (tests/nets.net_ds_cnn): chained depthwise-separable blocks,
    where a block's pointwise conv is both the project conv of one dw_pw_grad pattern and the
    expand conv of the next. Each node is fused at most once (the graph stays complete and in
    order), a --no-firmware training build succeeds, and the C trains like the reference."""
    from nets import net_ds_cnn
    path = tmp_path / "ds_cnn.onnx"
    onnx.save(net_ds_cnn(channels), path)
    g = compile_training(str(path), None, "bias-only", 12, TrainOptions(rounding="nearest"))
    fused = [n for n in g.nodes if n.op == "dw_pw_grad"]
    assert len(fused) == 2
    produced = set(g.inputs) | {t for t, v in g.tensors.items() if v.is_const}
    for n in g.nodes:   # topological: every input is produced before it is read
        assert all(not t or t in produced for t in n.inputs), n.name
        produced.update(n.outputs)
    updates = [n for n in g.nodes if n.op == "conv2d_update"]
    fused_updates = sum(p is not None for n in fused
                        for p in (n.attrs["parts"]["update"], n.attrs["parts"]["dw_update"]))
    assert len(updates) + fused_updates == 10   # every conv's bias and the classifier's
    assert_same_training(g, tmp_path / "c", lr=0.05)
    if channels == 64:   # the command line too (it failed with an internal compiler error)
        res = tinyc("build", path, "--board", "mps2_an386", "-o", tmp_path / "out",
                    "--no-firmware", "--train", "bias-only", "--num-classes", "12")
        assert "training   bias-only" in res.stdout


# ---------------------------------------------------------------- head warm-up
def test_head_warmup_leaves_the_body_untouched_then_trains_it(small_nets, tmp_path):
    """TrainOptions(warmup=N): the first N steps of the C and of the reference update the
    classifier only (the body's parameters stay bit for bit), the steps after the whole
    scheme; C == reference at every point (run_both)."""
    warmup = 5
    g = compile_training(str(small_nets["mbv2_block"]), None, PARTIAL["mbv2_block"], 10,
                         TrainOptions(rounding="stochastic", warmup=warmup))
    assert g.meta["train"]["warmup_steps"] == warmup
    update = next(n for n in g.nodes if n.name == g.meta["train"]["warmup_after"])
    head = set(update.inputs[2:4])   # its weights and bias
    initial = {n: g.tensors[n].data.copy() for n, _ in trainable_tensors(g)}
    body = [n for n in initial if n not in head]
    assert body and len(head) == 2
    model_h = None
    for steps, body_moves in ((warmup, False), (warmup + 6, True)):
        g_ref, ref_losses, losses, params, _, _, _ = run_both(g, tmp_path / str(steps), 0.05,
                                                              steps=steps)
        model_h = (tmp_path / str(steps) / "model.h").read_text()
        assert np.allclose(losses, ref_losses, rtol=1e-5, atol=0)
        for name in initial:
            assert np.array_equal(params[name].reshape(initial[name].shape),
                                  g_ref.tensors[name].data), name
        assert any(not np.array_equal(g_ref.tensors[n].data, initial[n]) for n in head)
        moved = [n for n in body if not np.array_equal(g_ref.tensors[n].data, initial[n])]
        assert bool(moved) == body_moves, moved
    assert f"#define TINYC_TRAIN_WARMUP_STEPS {warmup}" in model_h


def test_head_warmup_of_a_classifier_only_scheme_is_nothing(small_nets):
    """Nothing follows the head's update: no warm-up to record or generate."""
    g = compile_training(str(small_nets["mbv2_block"]), None, {"bias_last": 0, "weights": {}}, 10,
                         TrainOptions(warmup=5))
    assert g.meta["train"]["warmup_steps"] == 0


def test_head_warmup_on_cortex_m4_in_qemu(small_nets, tmp_path):
    """The warm-up's early exit on an emulated Cortex-M4F: the same integer state as the
    reference, steps across the warm-up's end."""
    g = compile_training(str(small_nets["groups_concat"]), None, PARTIAL["groups_concat"], 10,
                         TrainOptions(rounding="stochastic", warmup=5))
    assert g.meta["train"]["warmup_steps"] == 5
    assert train_in_qemu(g, plan_memory(g), g, tmp_path, steps=9, lr=0.05, seed=3) > 0


def test_body_lr_scale_folds_into_the_body_step_factors(small_nets, tmp_path):
    """TrainOptions(body_lr_scale=s): the body's update nodes take s times their step factors
    (the head's stay), so the generated C, given the same lr, trains the body at s * lr; the
    C and the reference agree."""
    net = str(small_nets["mbv2_block"])
    plain = compile_training(net, None, PARTIAL["mbv2_block"], 10, TrainOptions())
    slow = compile_training(net, None, PARTIAL["mbv2_block"], 10, TrainOptions(body_lr_scale=0.3))

    def factors(g):
        out = {}
        for n in g.nodes:
            for u in ops.get(n).updates(n):
                out[u.name] = (np.asarray(u.attrs["f_w"], np.float64),
                               np.asarray(u.attrs["f_b"], np.float64))
        return out
    head = classifier(plain).name + "/update"
    a, b = factors(plain), factors(slow)
    assert set(a) == set(b) and len(a) > 1
    for name in a:
        want = 1.0 if name == head else 0.3
        for x, y in zip(a[name], b[name]):
            np.testing.assert_allclose(y, x * want, rtol=1e-6)
    assert_same_training(slow, tmp_path, lr=0.05)
