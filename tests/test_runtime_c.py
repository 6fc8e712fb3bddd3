"""Generated C (host gcc) == numpy int8 reference, byte for byte.

Graphs: the ONNX test nets of tests/nets.py, float IR graphs built here and quantized by the
quantize pass (corner cases of shapes, pads, in-place kernels), hand-made int8 graphs with random
integer parameters (left shifts, extreme zero points), and the shared pretrained models.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinyc.codegen.c import generate_c
from tinyc.ir import Graph, Node, QParams, Tensor, conv_out_size
from tinyc.memory.planner import plan_memory
from tinyc.passes.quantize import quantize
from tinyc.pipeline import compile_int8, quantize_input
from tinyc.reference.fixedpoint import quantize_multiplier
from tinyc.reference.int8 import run_int8
from tinyc.reference.softmax import softmax_params
from tinyc.targets.host import build_host, run_host
from conftest import host_build, shared_model

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime_c"
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
# The two kernel variants (runtime_c/include/tinyc/simd.h): the plain C99 loops, and the Arm DSP
# ones (SMLAD/SXTB16) compiled for the host with those instructions written in C. QEMU runs the
# DSP ones natively (tests/test_firmware.py).
VARIANTS = {"portable": (), "dsp": ("-DTINYC_SIMD_EMULATE",)}


def int8_inputs(g: Graph, n_random: int = 3, seed: int = 0) -> np.ndarray:
    """Random int8 inputs, the quantized calibration distribution, and the two extremes."""
    shape = g.tensors[g.inputs[0]].shape
    rng = np.random.default_rng(seed)
    xs = [rng.integers(-128, 128, shape).astype(np.int8) for _ in range(n_random)]
    if g.tensors[g.inputs[0]].q is not None:
        xs.append(quantize_input(g, rng.uniform(-1, 1, shape).astype(np.float32)))
    xs += [np.full(shape, -128, np.int8), np.full(shape, 127, np.int8)]
    return np.concatenate(xs)


def assert_c_matches_reference(g: Graph, out_dir: Path, plan=None, n_random: int = 3,
                               variant: str = "portable"):
    plan = plan if plan is not None else plan_memory(g)
    generate_c(g, plan, out_dir)
    host_build(out_dir, extra_flags=VARIANTS[variant])   # the runtime's objects shared
    xs = int8_inputs(g, n_random)
    ys = run_host(out_dir, xs)
    assert ys.shape[0] == xs.shape[0]
    for k, (x, y) in enumerate(zip(xs, ys)):
        ref = run_int8(g, x[None])[g.outputs[0]]
        if not np.array_equal(y.reshape(ref.shape), ref):
            bad = np.flatnonzero(y.reshape(-1) != ref.reshape(-1))
            pytest.fail(f"input {k}: C differs from the reference at {bad.size} of {ref.size} "
                        f"values, first at {bad[0]}: C {y.reshape(-1)[bad[0]]} vs ref "
                        f"{ref.reshape(-1)[bad[0]]}")
    return plan


# ---------------------------------------------------------------- float IR graphs built here
class IRBuilder:
    """Float IR directly (NHWC / OHWI), with the importer's attribute conventions."""

    def __init__(self, shape_nhwc, seed=0):
        self.rng = np.random.default_rng(seed)
        self.tensors = {"input": Tensor("input", tuple(shape_nhwc))}
        self.nodes: list[Node] = []

    def _act(self, base, shape):
        name = f"{base}_{len(self.nodes)}"
        self.tensors[name] = Tensor(name, tuple(int(s) for s in shape))
        return name

    def _const(self, base, data):
        name = f"{base}_{len(self.nodes)}"
        self.tensors[name] = Tensor(name, data.shape, data=data.astype(np.float32))
        return name

    def shape(self, x):
        return self.tensors[x].shape

    def conv(self, x, cout, k, stride=1, pads=None, groups=1, dilation=1, clamp=(0.0, 6.0)):
        _, h, w, cin = self.shape(x)
        kh, kw = (k, k) if isinstance(k, int) else k
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        pads = pads if pads is not None else (kh // 2, kw // 2, kh // 2, kw // 2)
        fan_in = cin // groups * kh * kw
        wt = self._const("w", self.rng.normal(0, np.sqrt(2.0 / fan_in), (cout, kh, kw, cin // groups)))
        b = self._const("b", self.rng.normal(0, 0.1, cout))
        oh = conv_out_size(h, kh, sh, pads[0], pads[2], dilation)
        ow = conv_out_size(w, kw, sw, pads[1], pads[3], dilation)
        y = self._act("conv", (1, oh, ow, cout))
        self.nodes.append(Node(y, "conv2d", [x, wt, b], [y],
                               dict(strides=(sh, sw), pads=tuple(pads),
                                    dilations=(dilation, dilation), groups=groups, clamp=clamp)))
        return y

    def dw(self, x, k, stride=1, pads=None, mult=1, dilation=1, clamp=(0.0, 6.0)):
        c = self.shape(x)[3]
        return self.conv(x, c * mult, k, stride, pads, groups=c, dilation=dilation, clamp=clamp)

    def _simple(self, op, ins, shape, **attrs):
        y = self._act(op, shape)
        self.nodes.append(Node(y, op, list(ins), [y], attrs))
        return y

    def add(self, a, b, clamp=None):
        return self._simple("add", [a, b], self.shape(a), clamp=clamp)

    def clamp(self, x, lo, hi):
        return self._simple("clamp", [x], self.shape(x), clamp=(lo, hi))

    def pool(self, op, x, k, stride, pads, count_include_pad=False):
        _, h, w, c = self.shape(x)
        kh, kw = (k, k) if isinstance(k, int) else k
        oh = conv_out_size(h, kh, stride, pads[0], pads[2])
        ow = conv_out_size(w, kw, stride, pads[1], pads[3])
        extra = {"count_include_pad": count_include_pad} if op == "avg_pool" else {}
        return self._simple(op, [x], (1, oh, ow, c), kernel=(kh, kw), strides=(stride, stride),
                            pads=tuple(pads), **extra)

    def gap(self, x):
        _, h, w, c = self.shape(x)
        return self._simple("avg_pool", [x], (1, 1, 1, c), kernel=(h, w), strides=(1, 1),
                            pads=(0, 0, 0, 0), count_include_pad=False)

    def pad(self, x, pads, value=0.0):
        _, h, w, c = self.shape(x)
        t, l, b, r = pads
        return self._simple("pad", [x], (1, h + t + b, w + l + r, c), pads=tuple(pads),
                            value=value)

    def concat(self, xs):
        shape = self.shape(xs[0])[:-1] + (sum(self.shape(x)[-1] for x in xs),)
        return self._simple("concat", xs, shape)

    def flatten(self, x):
        return self._simple("reshape", [x], (1, int(np.prod(self.shape(x)))), nchw_order=False)

    def fc(self, x, nout, clamp=None):
        nin = self.shape(x)[1]
        wt = self._const("fc_w", self.rng.normal(0, np.sqrt(1.0 / nin), (nout, nin)))
        b = self._const("fc_b", self.rng.normal(0, 0.1, nout))
        y = self._act("fc", (1, nout))
        self.nodes.append(Node(y, "fully_connected", [x, wt, b], [y], dict(clamp=clamp)))
        return y

    def softmax(self, x):
        return self._simple("softmax", [x], self.shape(x))

    def quantized(self, out, n_calib=6) -> Graph:
        g = Graph(self.tensors, self.nodes, ["input"], [out])
        g.remove_unused_tensors()
        calib = self.rng.uniform(-1, 1, (n_calib,) + g.tensors["input"].shape[1:])
        return quantize(g, calib.astype(np.float32))


def net_dw_inplace_grow():
    """In-place depthwise whose output is larger than its input (pads 2 on a 3x3), odd sizes,
    a 7x7 depthwise with asymmetric pads, a dilated depthwise, a stride-2 depthwise."""
    b = IRBuilder((1, 9, 7, 5), seed=11)
    x = b.conv("input", 6, 1, pads=(0, 0, 0, 0))
    x = b.dw(x, 3, pads=(2, 2, 2, 2))                     # 11x9 > 9x7
    x = b.dw(x, 7, pads=(3, 2, 4, 3))
    x = b.dw(x, 3, pads=(2, 2, 2, 2), dilation=2)
    x = b.dw(x, 3, stride=2, pads=(0, 0, 1, 1))
    x = b.dw(x, (3, 1), pads=(1, 0, 1, 0), clamp=None)
    return b.quantized(b.conv(x, 4, 1, pads=(0, 0, 0, 0), clamp=None))


def net_gray_strides():
    """1-channel input, non-square 7x5 and 1x3 kernels, stride (2,1), stride-2 symmetric and
    asymmetric pads, 1x1 stride 2, depthwise multiplier 3, average pool with padding counted."""
    b = IRBuilder((1, 23, 18, 1), seed=12)
    x = b.conv("input", 8, (7, 5), stride=2, pads=(3, 2, 3, 2))
    x = b.conv(x, 8, (1, 3), stride=(2, 1), pads=(0, 1, 0, 1))
    x = b.conv(x, 12, 1, stride=2, pads=(0, 0, 0, 0), clamp=None)
    x = b.dw(x, 3, mult=3, pads=(1, 1, 1, 1))
    x = b.conv(x, 10, 5, stride=2, pads=(2, 1, 1, 2))
    x = b.pool("avg_pool", x, 3, 1, (1, 1, 1, 1), count_include_pad=True)
    return b.quantized(b.fc(b.flatten(b.gap(x)), 7))


def net_branches():
    """Grouped conv, concat of three branches (requantize inserted where needed), standalone
    clamp, constant pad with a non-zero value, max pool with padding, add of one tensor to
    itself, avg pool without padding counted, softmax head."""
    b = IRBuilder((1, 12, 10, 6), seed=13)
    x = b.conv("input", 12, 3, groups=3)
    p1 = b.conv(x, 4, 1, pads=(0, 0, 0, 0), clamp=None)
    p2 = b.pool("max_pool", x, 3, 1, (1, 1, 1, 1))
    p3 = b.conv(x, 6, 3, groups=2, clamp=(-1.0, 1.0))
    c = b.clamp(b.concat([p1, p2, p3]), 0.0, 4.0)
    c = b.pad(c, (1, 0, 2, 1), value=0.5)
    c = b.pool("max_pool", c, 3, 2, (1, 1, 1, 1))
    c = b.add(c, c, clamp=(0.0, 6.0))
    c = b.pool("avg_pool", c, 2, 2, (0, 1, 1, 0), count_include_pad=False)
    return b.quantized(b.softmax(b.fc(b.flatten(c), 9)))


def net_residuals():
    """MobileNetV2-like: expand, in-place depthwise, project, residual add in place (twice)."""
    b = IRBuilder((1, 16, 16, 3), seed=14)
    x = b.conv("input", 8, 3, stride=2, pads=(1, 1, 1, 1))
    for _ in range(2):
        e = b.conv(x, 24, 1, pads=(0, 0, 0, 0))
        d = b.dw(e, 3)
        p = b.conv(d, 8, 1, pads=(0, 0, 0, 0), clamp=None)
        x = b.add(x, p)
    x = b.dw(x, 5, stride=2, pads=(2, 2, 2, 2))
    return b.quantized(b.fc(b.flatten(b.gap(x)), 5))


def net_pointwise_chain():
    """In-place 1x1 convs: expanding (backwards over the pixels) and shrinking (forwards)."""
    b = IRBuilder((1, 7, 9, 3), seed=15)
    x = b.conv("input", 16, 1, pads=(0, 0, 0, 0))
    x = b.conv(x, 5, 1, pads=(0, 0, 0, 0), clamp=None)
    x = b.conv(x, 11, 1, pads=(0, 0, 0, 0))
    x = b.conv(x, 11, 1, pads=(0, 0, 0, 0))
    return b.quantized(b.fc(b.flatten(b.gap(x)), 4))


def net_big_pools():
    """Average pools straight on the input (its extremes reach them): windows of 256 pixels (the
    most the DSP kernel's 16-bit lanes take: -128 * 256 fills a lane), a global pool of 272
    (the per-channel loop), 6 channels (one block of four and two left)."""
    b = IRBuilder((1, 17, 16, 6), seed=16)
    a = b.gap(b.pool("avg_pool", "input", (16, 16), 1, (0, 0, 0, 0)))
    return b.quantized(b.fc(b.flatten(b.add(a, b.gap("input"))), 3))


IR_NETS = {f.__name__[4:]: f for f in (net_dw_inplace_grow, net_gray_strides, net_branches,
                                        net_residuals, net_pointwise_chain, net_big_pools)}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", sorted(IR_NETS))
def test_ir_net_matches_reference(name, variant, tmp_path):
    g = IR_NETS[name]()
    plan = assert_c_matches_reference(g, tmp_path, variant=variant)
    if name in ("dw_inplace_grow", "residuals"):
        assert "depthwise" in plan.inplace.values()
    if name == "residuals":
        assert "add" in plan.inplace.values()
    if name == "pointwise_chain":
        assert [plan.inplace.get(i) for i in range(4)] == ["pointwise"] * 4


def test_dw_inplace_output_larger_than_input():
    g = net_dw_inplace_grow()
    plan = plan_memory(g)
    node = g.nodes[1]
    assert plan.inplace[1] == "depthwise"
    x, y = node.inputs[0], node.outputs[0]
    assert g.tensors[y].nbytes > g.tensors[x].nbytes
    assert plan.tensor_offsets[x] == plan.tensor_offsets[y]
    buf = plan.buffers[plan.tensor_buffer[y]]
    assert buf.size >= g.tensors[y].nbytes
    assert plan.scratch[1][1] == 9 * 7   # one input plane: no free bytes for the padded one here


def test_depthwise_scratch_grows_only_into_free_bytes(monkeypatch):
    """The in-place depthwise kernel is faster with its plane padded (every window interior);
    the planner gives it that scratch only where the bytes are free: same arena as without."""
    import tinyc.memory.planner as planner
    g = net_dw_inplace_grow()
    plan = plan_memory(g)
    sizes = {}
    for i, kind in plan.inplace.items():
        if kind == "depthwise":
            node = g.nodes[i]
            _, h, w, _ = g.tensors[node.inputs[0]].shape
            _, oh, ow, _ = g.tensors[node.outputs[0]].shape
            kh, kw = g.tensors[node.inputs[1]].shape[1:3]
            (sh, sw), (dh, dw) = node.attrs["strides"], node.attrs["dilations"]
            pt, pl = node.attrs["pads"][:2]
            padded = (max(pt + h, (oh - 1) * sh + (kh - 1) * dh + 1)
                      * max(pl + w, (ow - 1) * sw + (kw - 1) * dw + 1) + 3)
            assert plan.scratch[i][1] in (h * w, padded)
            sizes[i] = "padded" if plan.scratch[i][1] == padded else "one plane"
    assert set(sizes.values()) == {"padded", "one plane"}   # the net has both cases
    monkeypatch.setattr(planner, "_grow_scratch", lambda *a: None)
    assert plan_memory(g).arena_bytes == plan.arena_bytes


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pointwise_inplace_one_pixel_scratch(variant, monkeypatch, tmp_path):
    """In-place 1x1 convs with one pixel of scratch only (the planner's minimum): pixel pairs
    whose outputs do not overlap their own inputs are read in place, two at a time, the others
    copied one by one. Expanding, shrinking and equal widths, odd pixel counts."""
    import tinyc.memory.planner as planner
    monkeypatch.setattr(planner, "_grow_scratch", lambda *a: None)
    g = net_pointwise_chain()
    plan = assert_c_matches_reference(g, tmp_path / "chain", n_random=2, variant=variant)
    pw = [i for i, kind in plan.inplace.items() if kind == "pointwise"]
    assert len(pw) >= 3
    assert all(plan.scratch[i][1] == g.tensors[g.nodes[i].inputs[0]].shape[-1] for i in pw)
    for name in ("pointwise_k8_c12_full_zfast", "pointwise_k16_c7_full_zfast",
                 "pointwise_k13_c3"):
        gi = int8_conv_graph(seed=len(name), **INT8_CONVS[name])
        plan = assert_c_matches_reference(gi, tmp_path / name, n_random=2, variant=variant)
        assert plan.inplace.get(0) == "pointwise" and plan.scratch[0][1] == gi.tensors[
            "input"].shape[-1]


def test_without_inplace_same_output(tmp_path):
    g = net_residuals()
    plan = plan_memory(g, inplace=False)
    assert set(plan.inplace.values()) <= {"alias"}
    assert_c_matches_reference(g, tmp_path, plan=plan, n_random=1)


# ---------------------------------------------------------------- the ONNX test nets
NET_NAMES = ["gray_odd", "mbv2_block", "big_kernels", "groups_concat", "residual_chain", "fc_only"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", NET_NAMES)
def test_onnx_net_matches_reference(name, variant, small_nets, tmp_path):
    g = compile_int8(str(small_nets[name]), None)
    assert_c_matches_reference(g, tmp_path, variant=variant)


# ---------------------------------------------------------------- hand-made int8 graphs
def _int8_tensor(name, shape, scale, zp):
    return Tensor(name, tuple(shape), "int8",
                  q=QParams(np.asarray(scale, np.float32), np.asarray(zp, np.int32)))


def _random_requant(rng, n, allow_left=True):
    """Per-channel (mult, shift) pairs over a wide range, left shifts included."""
    mult = rng.integers(1 << 30, (1 << 31) - 1, n).astype(np.int32)
    shift = rng.integers(-12, 3 if allow_left else 1, n).astype(np.int32)
    return mult, shift


def int8_conv_graph(seed, in_shape, cout, k, stride, pads, groups, dilation=1, full=False,
                    zfast=False, fast=False):
    rng = np.random.default_rng(seed)
    _, h, w, cin = in_shape
    kh, kw = k
    oh = conv_out_size(h, kh, stride[0], pads[0], pads[2], dilation)
    ow = conv_out_size(w, kw, stride[1], pads[1], pads[3], dilation)
    in_zp, out_zp = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
    t = {"input": _int8_tensor("input", in_shape, 0.05, in_zp),
         "y": _int8_tensor("y", (1, oh, ow, cout), 0.1, out_zp),
         "w": Tensor("w", (cout, kh, kw, cin // groups), "int8",
                     rng.integers(-127, 128, (cout, kh, kw, cin // groups)).astype(np.int8)),
         "b": Tensor("b", (cout,), "int32", rng.integers(-5000, 5000, cout).astype(np.int32))}
    mult, shift = _random_requant(rng, cout)
    if zfast:
        # every shift in the DSP kernels' zero-point-folding range (e = -shift in [2, 23], both
        # ends present) and an extreme output zero point: the RQ_ZFAST paths at their bounds
        shift = rng.integers(-23, -1, cout).astype(np.int32)
        shift[0], shift[-1] = -23, -2
        out_zp = 127 if seed % 2 else -128
    if fast:
        # every shift in the DSP kernels' fast requantization (e in [2, 31]), two past the zero
        # point folding (e = 24 and 31): the RQ_FAST paths, zero point added
        shift = rng.integers(-12, -1, cout).astype(np.int32)
        shift[0], shift[cout // 2], shift[-1] = -24, -31, -2
    lo = int(rng.integers(-128, 0))
    q = dict(in_zp=in_zp, out_zp=out_zp, mult=mult, shift=shift, act_min=lo,
             act_max=int(rng.integers(lo + 1, 128)))
    if full:   # no clamp left after quantization (the DSP kernels' SSAT path)
        q.update(act_min=-128, act_max=127)
    node = Node("conv", "conv2d", ["input", "w", "b"], ["y"],
                dict(strides=stride, pads=pads, dilations=(dilation, dilation), groups=groups,
                     clamp=None, q=q))
    return Graph(t, [node], ["input"], ["y"])


INT8_CONVS = {
    "generic_5x3_s21": dict(in_shape=(1, 11, 9, 3), cout=5, k=(5, 3), stride=(2, 1),
                            pads=(2, 0, 1, 1), groups=1),
    "pointwise": dict(in_shape=(1, 6, 5, 7), cout=9, k=(1, 1), stride=(1, 1),
                      pads=(0, 0, 0, 0), groups=1),
    # every tail of the pointwise kernels: odd pixel counts, k % 4 != 0, 1 or 3 output
    # channels, both clamps
    "pointwise_k13_c3": dict(in_shape=(1, 5, 3, 13), cout=3, k=(1, 1), stride=(1, 1),
                             pads=(0, 0, 0, 0), groups=1),
    "pointwise_k6_c1_full": dict(in_shape=(1, 3, 3, 6), cout=1, k=(1, 1), stride=(1, 1),
                                 pads=(0, 0, 0, 0), groups=1, full=True),
    "pointwise_k20_c5_full": dict(in_shape=(1, 4, 5, 20), cout=5, k=(1, 1), stride=(1, 1),
                                  pads=(0, 0, 0, 0), groups=1, full=True),
    "pointwise_k8_c12_full": dict(in_shape=(1, 3, 5, 8), cout=12, k=(1, 1), stride=(1, 1),
                                  pads=(0, 0, 0, 0), groups=1, full=True),
    "conv3x3_s2_first_full": dict(in_shape=(1, 9, 8, 3), cout=5, k=(3, 3), stride=(2, 2),
                                  pads=(1, 1, 1, 1), groups=1, full=True),
    # the same tails with every channel on the DSP kernels' fast requantization (RQ_ZFAST):
    # k = 8 and 16 (unrolled), odd pixels and channels, narrow clamps, the first conv
    "pointwise_k13_c3_zfast": dict(in_shape=(1, 5, 3, 13), cout=3, k=(1, 1), stride=(1, 1),
                                   pads=(0, 0, 0, 0), groups=1, zfast=True),
    "pointwise_k8_c12_full_zfast": dict(in_shape=(1, 3, 5, 8), cout=12, k=(1, 1),
                                        stride=(1, 1), pads=(0, 0, 0, 0), groups=1, full=True,
                                        zfast=True),
    "pointwise_k16_c7_full_zfast": dict(in_shape=(1, 3, 3, 16), cout=7, k=(1, 1),
                                        stride=(1, 1), pads=(0, 0, 0, 0), groups=1, full=True,
                                        zfast=True),
    "pointwise_k20_c5_full_zfast": dict(in_shape=(1, 4, 5, 20), cout=5, k=(1, 1),
                                        stride=(1, 1), pads=(0, 0, 0, 0), groups=1, full=True,
                                        zfast=True),
    "conv3x3_s2_first_full_zfast": dict(in_shape=(1, 9, 8, 3), cout=5, k=(3, 3),
                                        stride=(2, 2), pads=(1, 1, 1, 1), groups=1, full=True,
                                        zfast=True),
    # the constant-k pair kernels with a narrow clamp (k = 8, 16, 27), odd channel counts
    "pointwise_k8_c5_zfast": dict(in_shape=(1, 3, 5, 8), cout=5, k=(1, 1), stride=(1, 1),
                                  pads=(0, 0, 0, 0), groups=1, zfast=True),
    "pointwise_k16_c6_zfast": dict(in_shape=(1, 3, 3, 16), cout=6, k=(1, 1), stride=(1, 1),
                                   pads=(0, 0, 0, 0), groups=1, zfast=True),
    "pointwise_k24_c5_full_zfast": dict(in_shape=(1, 3, 3, 24), cout=5, k=(1, 1),
                                        stride=(1, 1), pads=(0, 0, 0, 0), groups=1, full=True,
                                        zfast=True),
    "conv3x3_s2_first_c7_zfast": dict(in_shape=(1, 9, 8, 3), cout=7, k=(3, 3), stride=(2, 2),
                                      pads=(1, 1, 1, 1), groups=1, zfast=True),
    # RQ_FAST layers (a shift past the zero point folding): any k, and the first conv's k = 27
    "pointwise_k20_c5_full_fast": dict(in_shape=(1, 4, 5, 20), cout=5, k=(1, 1), stride=(1, 1),
                                       pads=(0, 0, 0, 0), groups=1, full=True, fast=True),
    "conv3x3_s2_first_full_fast": dict(in_shape=(1, 9, 8, 3), cout=5, k=(3, 3), stride=(2, 2),
                                       pads=(1, 1, 1, 1), groups=1, full=True, fast=True),
    # im2col windows with k % 4 = 1 and 2 (the masked last step), interior and border windows,
    # an odd channel count, a dilated kernel (no interior fast copy)
    "conv5x3_s21_zfast": dict(in_shape=(1, 11, 9, 3), cout=5, k=(5, 3), stride=(2, 1),
                              pads=(2, 0, 1, 1), groups=1, zfast=True),
    "conv3x3_c2_zfast": dict(in_shape=(1, 8, 9, 2), cout=7, k=(3, 3), stride=(1, 1),
                             pads=(1, 1, 1, 1), groups=1, zfast=True),
    "conv3x3_dilated_zfast": dict(in_shape=(1, 10, 9, 5), cout=6, k=(3, 3), stride=(1, 1),
                                  pads=(2, 2, 2, 2), groups=1, dilation=2, zfast=True),
    "conv3x3_grouped_zfast": dict(in_shape=(1, 7, 6, 6), cout=4, k=(3, 3), stride=(1, 1),
                                  pads=(1, 1, 1, 1), groups=2, zfast=True),
    "grouped_dilated": dict(in_shape=(1, 9, 10, 6), cout=4, k=(3, 3), stride=(1, 1),
                            pads=(2, 2, 2, 2), groups=2, dilation=2),
    "depthwise_inplace": dict(in_shape=(1, 8, 7, 6), cout=6, k=(3, 3), stride=(2, 2),
                              pads=(1, 1, 1, 1), groups=6),
    # negative pads crop (a patch schedule's tiles): the in-place kernel's padded plane would be
    # smaller than the input plane here, and must not be used
    "depthwise_inplace_crop": dict(in_shape=(1, 17, 17, 3), cout=3, k=(5, 5), stride=(1, 1),
                                   pads=(-4, -12, 2, 2), groups=3),
    "depthwise_mult2": dict(in_shape=(1, 7, 7, 3), cout=6, k=(5, 5), stride=(1, 1),
                            pads=(2, 2, 2, 2), groups=3),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", sorted(INT8_CONVS))
def test_int8_conv_random_params(name, variant, tmp_path):
    """Integer parameters the quantizer rarely produces (left shifts, extreme zero points,
    narrow clamps) against the reference arithmetic."""
    g = int8_conv_graph(seed=len(name), **INT8_CONVS[name])
    plan = assert_c_matches_reference(g, tmp_path, n_random=4, variant=variant)
    if name.startswith("depthwise_inplace"):
        assert plan.inplace.get(0) == "depthwise"
    if name == "pointwise":
        assert plan.inplace.get(0) == "pointwise"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", sorted(n for n in INT8_CONVS if n.startswith("conv")))
def test_int8_conv_two_windows(name, variant, tmp_path):
    """The im2col kernel with room for two windows (the planner grants it only where the bytes
    are free, which a one-layer graph rarely has): a scratch of twice the window at the end of
    the arena, so that the two-pixel paths run (interior and border windows, the masked last
    step of k % 4 != 0, odd channel counts)."""
    g = int8_conv_graph(seed=len(name), **INT8_CONVS[name])
    plan = plan_memory(g)
    off, size = plan.scratch[0]
    plan.scratch[0] = (plan.arena_bytes, 2 * size)
    plan.arena_bytes += 2 * size
    assert_c_matches_reference(g, tmp_path, plan=plan, n_random=4, variant=variant)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_int8_fc_and_add_random_params(variant, tmp_path):
    rng = np.random.default_rng(7)
    n_in, n_out = 37, 11
    t = {"input": _int8_tensor("input", (1, n_in), 0.05, 17),
         "a": _int8_tensor("a", (1, n_out), 0.1, -20), "b": _int8_tensor("b", (1, n_out), 0.1, 5),
         "y": _int8_tensor("y", (1, n_out), 0.2, 3),
         "w1": Tensor("w1", (n_out, n_in), "int8", rng.integers(-127, 128, (n_out, n_in)).astype(np.int8)),
         "w2": Tensor("w2", (n_out, n_in), "int8", rng.integers(-127, 128, (n_out, n_in)).astype(np.int8)),
         "b1": Tensor("b1", (n_out,), "int32", rng.integers(-9000, 9000, n_out).astype(np.int32)),
         "b2": Tensor("b2", (n_out,), "int32", rng.integers(-9000, 9000, n_out).astype(np.int32))}
    m1, s1 = quantize_multiplier(0.0031)
    m2, s2 = quantize_multiplier(1.7)   # a multiplier above one: left shift
    fc1 = Node("fc1", "fully_connected", ["input", "w1", "b1"], ["a"], dict(clamp=None, q=dict(
        in_zp=17, out_zp=-20, mult=np.full(n_out, m1, np.int32), shift=np.full(n_out, s1, np.int32),
        act_min=-128, act_max=127)))
    fc2 = Node("fc2", "fully_connected", ["input", "w2", "b2"], ["b"], dict(clamp=None, q=dict(
        in_zp=17, out_zp=5, mult=np.full(n_out, m2, np.int32), shift=np.full(n_out, s2, np.int32),
        act_min=-100, act_max=90)))
    im1, is1 = quantize_multiplier(0.1 / 0.4)
    im2, is2 = quantize_multiplier(0.1 / 0.4)
    om, os_ = quantize_multiplier(0.4 / ((1 << 20) * 0.2))
    add = Node("add", "add", ["a", "b"], ["y"], dict(clamp=None, q=dict(
        in1_zp=-20, in2_zp=5, out_zp=3, left_shift=20, in1_mult=im1, in1_shift=is1,
        in2_mult=im2, in2_shift=is2, out_mult=om, out_shift=os_, act_min=-128, act_max=127)))
    g = Graph(t, [fc1, fc2, add], ["input"], ["y"])
    plan = assert_c_matches_reference(g, tmp_path, n_random=6, variant=variant)
    assert plan.inplace.get(2) == "add"


@pytest.mark.parametrize("scale", [1 / 16, 0.02, 0.1, 0.4])
def test_softmax_many_rows(scale, tmp_path):
    """The fixed-point exp/reciprocal over many random rows and input scales."""
    n = 100
    t = {"input": _int8_tensor("input", (1, n), scale, 0),
         "y": _int8_tensor("y", (1, n), 1 / 256, -128)}
    node = Node("softmax", "softmax", ["input"], ["y"], dict(q=softmax_params(scale)))
    g = Graph(t, [node], ["input"], ["y"])
    generate_c(g, plan_memory(g), tmp_path)
    host_build(tmp_path)
    rng = np.random.default_rng(int(scale * 1000))
    xs = rng.integers(-128, 128, (60, 1, n)).astype(np.int8)
    xs[:20] = (xs[:20] // 8)                                   # narrow rows
    xs[20, 0, :] = 127                                         # all equal
    xs[21, 0, :] = -128
    xs[21, 0, 5] = 127                                         # one hot
    ys = run_host(tmp_path, xs)
    ref = np.stack([run_int8(g, x)["y"] for x in xs])
    assert np.array_equal(ys.reshape(ref.shape), ref)


def test_softmax_sum_over_512_does_not_crash(tmp_path):
    """>= 512 logits at the maximum: TFLite aborts; tinyc outputs the reference's -128."""
    n = 1000
    t = {"input": _int8_tensor("input", (1, n), 0.05, 0),
         "y": _int8_tensor("y", (1, n), 1 / 256, -128)}
    node = Node("softmax", "softmax", ["input"], ["y"], dict(q=softmax_params(0.05)))
    g = Graph(t, [node], ["input"], ["y"])
    generate_c(g, plan_memory(g), tmp_path)
    build_host(tmp_path, extra_flags=("-fsanitize=undefined", "-fno-sanitize-recover=all"))
    rng = np.random.default_rng(3)
    xs = np.stack([np.full((1, n), 7, np.int8), np.full((1, n), -128, np.int8),
                   rng.integers(120, 128, (1, n)).astype(np.int8),
                   rng.integers(-128, 128, (1, n)).astype(np.int8)])
    ys = run_host(tmp_path, xs)
    ref = np.stack([run_int8(g, x)["y"] for x in xs])
    assert np.array_equal(ys.reshape(ref.shape), ref)


def test_dsp_requantization_is_tflite_exact(tmp_path):
    """The DSP kernels' requantization (one saturating add for the second rounding) against
    TFLite's double rounding, clamped, on 12.8 million edge and pseudo-random cases, with the
    output zero point folded into the rounding word where the shift allows it
    (tests/c/requant_exact.c; the DSP instructions written in C)."""
    exe = tmp_path / "requant_exact"
    subprocess.run(["gcc", *STRICT, "-DTINYC_SIMD_EMULATE", "-I", str(RUNTIME / "include"),
                    str(ROOT / "tests" / "c" / "requant_exact.c"), "-o", str(exe)], check=True)
    res = subprocess.run([str(exe)], capture_output=True, text=True)
    assert res.returncode == 0 and "12798400 cases equal" in res.stdout, res.stdout


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_add_is_tflite_exact(variant, tmp_path):
    """tinyc_add against TFLite's ADD arithmetic on every pair of int8 inputs for 400 parameter
    sets (tests/c/add_exact.c): the DSP variant's one-SMMLAR rescaling of each term, the exact
    term of the larger-scale input (first, second or both), in place, narrow clamps, and the
    parameters it leaves to the portable loop."""
    exe = tmp_path / "add_exact"
    subprocess.run(["gcc", *STRICT, *VARIANTS[variant], "-I", str(RUNTIME / "include"),
                    str(ROOT / "tests" / "c" / "add_exact.c"),
                    str(RUNTIME / "src" / "forward" / "elementwise.c"), "-o", str(exe)],
                   check=True)
    res = subprocess.run([str(exe)], capture_output=True, text=True)
    assert res.returncode == 0 and "26214400 cases equal" in res.stdout, res.stdout


# ---------------------------------------------------------------- kernel variants (tinyc/config.h)
CONV_FIELDS = ("in_h", "in_w", "in_c", "out_h", "out_w", "out_c", "kernel_h", "kernel_w",
               "stride_h", "stride_w", "dilation_h", "dilation_w", "pad_top", "pad_left",
               "groups", "in_zp", "out_zp", "act_min", "act_max")


def test_runtime_config_lists_every_variant():
    from tinyc.ops import KERNEL_VARIANTS
    text = (RUNTIME / "include" / "tinyc" / "config.h").read_text()
    assert re.findall(r"^#define (TINYC_\w+) 1$", text, flags=re.M) == list(KERNEL_VARIANTS)


def test_config_enables_every_variant_the_kernels_pick(tmp_path):
    """For every depthwise layer of some IR nets and a patched shared model (whose patches have
    zero or negative pads), the variants depthwise_conv.c picks (tests/c/dw_variants.c,
    the kernel's own dw_row_for / dw_direct_for) are among those the code generator enables."""
    from tinyc.codegen.c import model_context
    from tinyc.memory.schedule import choose_schedule
    from tinyc.ops.conv import dw_variants
    from tinyc.passes.patch import PatchSpec
    exe = tmp_path / "dw_variants"
    # -O0: the picks are the kernel's plain selection logic; at -O2 gcc spends ~35 s optimising
    # every variant's loops, which test_every_depthwise_variant_compiles_warning_free does
    subprocess.run(["gcc", *STRICT, "-O0", "-DTINYC_SIMD_EMULATE", "-I", str(RUNTIME / "include"),
                    str(ROOT / "tests" / "c" / "dw_variants.c"), "-o", str(exe)], check=True)
    graphs = [(IR_NETS[n](), None) for n in ("dw_inplace_grow", "gray_strides", "residuals")]
    sched = choose_schedule(compile_int8(str(shared_model("mbv2-w0.35_96")), None),
                            PatchSpec.parse("3x3@9"))
    graphs.append((sched.graph, sched.plan))
    lines, want = [], []
    for g, plan in graphs:
        for L in model_context(g, plan or plan_memory(g))["layers"]:
            if L["kind"] in ("depthwise", "depthwise_inplace"):
                p = L["params"]
                lines.append(" ".join(str(v) for v in
                                      [int(L["kind"] == "depthwise_inplace")] +
                                      [p[f] for f in CONV_FIELDS]))
                want.append(dw_variants(L["kind"], p))
    res = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True,
                         text=True, check=True)
    picked = [set(line.split()[:-1]) for line in res.stdout.splitlines()]
    assert len(picked) == len(want) > 40
    assert all(c <= w for c, w in zip(picked, want)), [
        (c, w) for c, w in zip(picked, want) if not c <= w]
    assert any("TINYC_DW_DIRECT_3X3_S2_FULL" in c for c in picked)   # the patches' direct kernel
    assert set().union(*picked) == set().union(*want)


@pytest.mark.benchmark   # ~35 s of gcc; the variants a test net uses compile at -O2 in every C test
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_depthwise_variant_compiles_warning_free(variant, tmp_path):
    """depthwise_conv.c with the runtime's config.h (every variant enabled), -O2 -Werror."""
    res = subprocess.run(["gcc", *STRICT, *VARIANTS[variant], "-I", str(RUNTIME / "include"), "-c",
                          str(RUNTIME / "src" / "forward" / "depthwise_conv.c"), "-o",
                          str(tmp_path / "dw.o")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_unused_depthwise_variants_left_out(tmp_path):
    """A net without 7x7 (or 5x5 stride 1) depthwise: its config leaves those rows out, its
    compiled kernels hold no such code (the symbols of the rows it uses are there) and it still
    computes the reference's bytes on the DSP kernels."""
    g = IR_NETS["residuals"]()   # 3x3 stride 1 and 5x5 stride 2 depthwise
    assert_c_matches_reference(g, tmp_path, variant="dsp")
    config = (tmp_path / "tinyc" / "config.h").read_text()
    used = set(re.findall(r"^#define (TINYC_DW_\w+) 1$", config, flags=re.M))
    assert used and all("3X3_S1" in v or "5X5_S2" in v for v in used), used
    syms = subprocess.run(["nm", str(tmp_path / "tinyc_host")], capture_output=True, text=True,
                          check=True).stdout
    rows = set(re.findall(r"\b(dw_row_\d_\d_\d)\b", syms))
    assert rows and all(r.startswith(("dw_row_3_1_", "dw_row_5_2_")) for r in rows), rows


# (kernel, stride, input HxW, channels, full-range clamp): tiles without padding, the
# four-channel kernel's (3x3 stride 1 up to 64 outputs per channel; 3x3 stride 2, 5x5 and 7x7
# any size); odd sizes, channel counts with a tail of 1-3, one row or one column of outputs, and
# a 3x3 stride-1 tile past 64 outputs (the gathered plane's rows)
DW_QUAD_CASES = [(3, 1, (5, 5), 9, True), (3, 1, (3, 7), 6, False), (3, 1, (10, 10), 8, True),
                 (3, 1, (11, 10), 7, False), (3, 2, (9, 11), 11, True),
                 (3, 2, (4, 7), 5, False), (3, 2, (13, 3), 4, True),
                 (5, 1, (7, 6), 9, True), (5, 2, (11, 9), 6, False), (5, 2, (5, 12), 8, True),
                 (7, 1, (9, 8), 5, False), (7, 2, (13, 15), 10, True)]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("case", DW_QUAD_CASES, ids=lambda c: "k{}s{}_{}x{}c{}_{}".format(
    c[0], c[1], *c[2], c[3], "full" if c[4] else "clamp"))
def test_depthwise_inplace_quad_tiles(case, variant, tmp_path):
    """In-place depthwise on a patch tile without padding, four channels at a time
    (depthwise_conv.c dw_quad, DSP kernels): every shift a right shift the doubled taps allow,
    except in one group of four (a left shift, a dead channel: that group goes one channel at a
    time) when there are two groups; the last channels one at a time. Against the reference,
    bit for bit; most outputs unsaturated."""
    from tinyc.codegen.c import model_context
    from tinyc.ops.conv import dw_variants
    k, s, (h, w), c, full = case
    g = int8_conv_graph(seed=h * 31 + w * 7 + c + k, in_shape=(1, h, w, c), cout=c, k=(k, k),
                        stride=(s, s), pads=(0, 0, 0, 0), groups=c)
    q = g.nodes[0].attrs["q"]
    rng = np.random.default_rng(c + s + k)
    q["mult"] = rng.integers(1 << 30, (1 << 31) - 1, c).astype(np.int32)
    # right shifts that leave most outputs inside the clamp (a saturated output hides a wrong
    # accumulator), the extremes of the doubled taps' range on two channels
    q["shift"] = rng.integers(-15 if k > 3 else -14, -8, c).astype(np.int32)
    q["shift"][[1, 3]] = -23, -1
    q["act_min"], q["act_max"] = (-128, 127) if full else (-90, 100)
    if c >= 8:
        q["shift"][5] = 2                                          # a left shift
        g.tensors["b"].data[6], q["shift"][6] = -(1 << 30), -23    # a dead channel
    plan = plan_memory(g)
    assert plan.inplace.get(0) == "depthwise"
    L = model_context(g, plan)["layers"][0]
    uses_quad = any("QUAD" in v for v in dw_variants(L["kind"], L["params"]))
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    assert uses_quad == ((k, s) != (3, 1) or oh * ow <= 64)
    assert_c_matches_reference(g, tmp_path, plan=plan, n_random=3, variant=variant)


# ---------------------------------------------------------------- a shared pretrained model
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", ["mbv2-w0.35_96", "mcunet-5fps_96"])
def test_shared_model_matches_reference(name, variant, tmp_path):
    path = shared_model(name)
    g = compile_int8(str(path), None)
    plan = assert_c_matches_reference(g, tmp_path, n_random=1, variant=variant)
    assert "depthwise" in plan.inplace.values()
    assert plan.arena_bytes <= plan_memory(g, inplace=False).arena_bytes


# ---------------------------------------------------------------- portability of the C
def _runtime_sources():
    return sorted((RUNTIME / "src" / "forward").glob("*.c"))


def test_runtime_has_no_float_and_no_malloc():
    """The inference runtime (the training kernels and train.h are float32 by design)."""
    files = _runtime_sources() + sorted(f for f in (RUNTIME / "include" / "tinyc").glob("*.h")
                                        if f.name != "train.h")
    for f in files:
        code = re.sub(r"/\*.*?\*/", "", f.read_text(), flags=re.S)   # comments may say "float"
        for word in ("float", "double", "malloc", "calloc", "realloc", "free"):
            assert not re.search(rf"\b{word}\b", code), f"{f.name} uses {word}"


@pytest.mark.parametrize("compiler, flags", [("gcc", []), ("arm-none-eabi-gcc", ARM_FLAGS)])
def test_runtime_and_model_compile_warning_free(compiler, flags, small_nets, tmp_path):
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed")
    g = compile_int8(str(small_nets["mbv2_block"]), None)
    out = generate_c(g, plan_memory(g), tmp_path / "gen")
    sources = [out / "model.c"] + _runtime_sources()
    for src in sources:
        res = subprocess.run([compiler, *STRICT, *flags, "-I", str(out), "-I",
                              str(RUNTIME / "include"), "-c", str(src), "-o",
                              str(tmp_path / (src.stem + ".o"))], capture_output=True, text=True)
        assert res.returncode == 0, f"{compiler} {src.name}:\n{res.stderr}"


# ---------------------------------------------------------------- depthwise: every row kernel
def _dw_cases():
    """(kernel, stride, input HxW, channels, pads, full-range clamp): the DSP kernel's specialised
    rows (3x3, 5x5, 7x7, stride 1 and 2), odd sizes, channel counts not a multiple of 4, pads
    on one side only, windows wider than the input."""
    cases = []
    for k in (3, 5, 7):
        p = k // 2
        cases += [(k, 1, (9, 7), 5, (p, p, p, p), True),
                  (k, 2, (11, 9), 3, (p, p, p, p), False),
                  (k, 2, (8, 13), 6, (p, 0, p - 1, p), True),
                  (k, 1, (3, 5), 7, (p, p, p, 0), False)]
    cases += [(3, 2, (12, 12), 9, (0, 0, 1, 1), True),   # TF "same" stride 2: bottom/right only
              (5, 1, (2, 2), 4, (2, 2, 2, 2), True),    # every window wider than the input
              (3, 1, (1, 17), 5, (1, 1, 1, 1), False)]
    # the padded band (scratch: one plane, smaller than the padded plane): several steps
    cases += [(3, 2, (16, 16), 6, (1, 1, 1, 1), True),
              (3, 1, (14, 12), 5, (1, 1, 1, 1), False),
              (5, 1, (12, 12), 4, (2, 2, 2, 2), True),
              (7, 2, (15, 15), 5, (3, 3, 3, 3), False)]
    # no padding (a patch schedule's inner tiles): 3x3 stride 2 read straight from the buffer
    cases += [(3, 1, (7, 9), 6, (0, 0, 0, 0), True),
              (3, 2, (11, 11), 5, (0, 0, 0, 0), False),
              (3, 2, (10, 9), 7, (0, 0, 0, 0), True)]
    return cases


@pytest.mark.parametrize("scratch", ["plane", "padded"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("case", _dw_cases(), ids=lambda c: "k{}s{}_{}x{}c{}_p{}{}{}{}_{}".format(
    c[0], c[1], *c[2], c[3], *c[4], "full" if c[5] else "clamp"))
def test_depthwise_inplace_rows(case, variant, scratch, tmp_path):
    """The in-place depthwise kernel with its scratch one input plane (the padded band where it
    fits, else border windows and interior spans bounded by the readable bytes) and the padded
    plane (every window interior), random integer parameters (left shifts and large biases take
    the general path, dead channels the constant one), against the reference."""
    k, s, (h, w), c, pads, full = case
    g = int8_conv_graph(seed=k * 100 + s * 10 + c, in_shape=(1, h, w, c), cout=c, k=(k, k),
                        stride=(s, s), pads=pads, groups=c)
    node = g.nodes[0]
    q = node.attrs["q"]
    rng = np.random.default_rng(k + s + c)
    q["mult"], q["shift"] = _random_requant(rng, c)
    q["shift"][: c // 2] = rng.integers(-23, 0, c // 2)   # the specialised rows' right shifts
    q["shift"][0] = -26 if c > 2 else q["shift"][0]       # beyond them: the general span
    if full:
        q["act_min"], q["act_max"] = -128, 127
    b = g.tensors["b"].data
    b[-1] = 1 << 29 if c > 3 else b[-1]                   # too large for the doubled taps
    if c > 4:   # dead channels: one output value for every input (written without the plane)
        b[1], q["shift"][1] = -(1 << 30), -23
        b[2], q["shift"][2] = (1 << 30) + 12345, -20
    plan = plan_memory(g)
    assert plan.inplace.get(0) == "depthwise"
    off, size = plan.scratch[0]
    assert size >= h * w   # (the padded plane where it is free: no padding, no bigger)
    plan.scratch[0] = (off, h * w)
    if scratch == "padded":
        oh, ow = g.tensors["y"].shape[1:3]
        padded = (max(pads[0] + h, (oh - 1) * s + k) * max(pads[1] + w, (ow - 1) * s + k) + 3)
        plan.scratch[0] = (plan.arena_bytes, padded)   # free bytes after the arena
        plan.arena_bytes += padded + 3
    assert_c_matches_reference(g, tmp_path, plan=plan, n_random=3, variant=variant)
