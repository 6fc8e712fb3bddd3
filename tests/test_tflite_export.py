"""The .tflite exporter and the two int8 oracles.

For every quantized graph: our numpy int8 reference == TFLite Micro == LiteRT's reference kernels,
bit for bit. One documented exception: LiteRT 2.3's reference FULLY_CONNECTED rounds differently
from TFLM (and from us) at near-ties, so LiteRT is compared on exports with fc_as_conv=True
(FULLY_CONNECTED written as a 1x1 CONV_2D, the same arithmetic); test_fc_litert_rounding pins it.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite_micro")

from tinyc.errors import UnsupportedError  # noqa: E402
from tinyc.export.oracles import (run_litert_ref, run_tflm, tflm_allocations,  # noqa: E402
                                     tflm_arena_head, tflm_min_arena)
from tinyc.export.tflite import (ExportError, _pool_groups, classify_pads,  # noqa: E402
                                    export_tflite, same_padding, tflite_activation_range)
from tinyc.ir import QParams  # noqa: E402
from tinyc.passes.quantize import activation_range  # noqa: E402
from tinyc.pipeline import compile_int8, quantize_input, synthetic_calibration  # noqa: E402
from tinyc.reference.int8 import run_int8  # noqa: E402
from conftest import SHARED_96_TESTED, shared_model  # noqa: E402
from nets import NetBuilder  # noqa: E402


# ------------------------------------------------------------------------------------ helpers
def _inputs(g, n_random=2, seed=0):
    """Random int8 inputs plus one quantized float input in the usual [-1, 1] range."""
    shape = g.tensors[g.inputs[0]].shape
    rng = np.random.default_rng(seed)
    xs = [rng.integers(-128, 128, shape).astype(np.int8) for _ in range(n_random)]
    xs.append(quantize_input(g, synthetic_calibration(g, 1, seed=seed + 99)[0][None]))
    return xs


def _has_fc(g):
    return any(n.op == "fully_connected" for n in g.nodes)


def assert_bit_exact(g, xs, grouped_conv="native"):
    """reference == TFLM (faithful export) == LiteRT reference kernels (FC as 1x1 conv)."""
    native = export_tflite(g, fc_as_conv=False, grouped_conv=grouped_conv)
    for_litert = export_tflite(g, fc_as_conv=True, grouped_conv=grouped_conv) if _has_fc(g) else native
    out = g.outputs[0]
    for i, x in enumerate(xs):
        ref = run_int8(g, x)[out]
        tflm = run_tflm(native, x)
        litert = run_litert_ref(for_litert, x)
        assert tflm.shape == ref.shape and litert.shape == ref.shape
        assert np.array_equal(ref, tflm), \
            f"input {i}: reference != TFLM at {np.count_nonzero(ref != tflm)} elements"
        assert np.array_equal(ref, litert), \
            f"input {i}: reference != LiteRT ref at {np.count_nonzero(ref != litert)} elements"


def _compile(tmp_path, model, name="m"):
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return compile_int8(str(path), None)


# ------------------------------------------------------------------------------------ units
def test_padding_classification():
    assert classify_pads((8, 8), (3, 3), (1, 1), (0, 0, 0, 0)) == "VALID"
    assert classify_pads((8, 8), (3, 3), (1, 1), (1, 1, 1, 1)) == "SAME"
    # PyTorch-style symmetric pads of a stride-2 3x3 conv on an even input are not SAME
    assert classify_pads((8, 8), (3, 3), (2, 2), (1, 1, 1, 1)) is None
    assert classify_pads((8, 8), (3, 3), (2, 2), (0, 0, 1, 1)) == "SAME"
    assert classify_pads((9, 9), (3, 3), (2, 2), (1, 1, 1, 1)) == "SAME"
    assert classify_pads((10, 10), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2)) == "SAME"
    assert same_padding(7, 1, 2) == (4, 0, 0)
    assert classify_pads((8, 8), (2, 2), (1, 1), (0, 0, 1, 1)) == "SAME"


@pytest.mark.parametrize("size,k,s,pad,out", [(20, 3, 2, 1, 10), (9, 5, 2, 2, 5), (5, 5, 1, 2, 5),
                                              (4, 3, 3, 2, 2), (6, 2, 1, 1, 6)])
def test_pool_groups_cover_every_window(size, k, s, pad, out):
    groups = _pool_groups(size, k, s, pad, out, None)
    i = 0
    for n_out, lo, hi, kernel, stride in groups:
        for j in range(n_out):
            a, b = (i + j) * s - pad, (i + j) * s - pad + k
            assert (lo + j * stride, lo + j * stride + kernel) == (max(a, 0), min(b, size))
        assert lo + (n_out - 1) * stride + kernel == hi
        i += n_out
    assert i == out


def test_fused_activation_range_matches_quantizer():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        q = QParams(np.asarray(np.float32(10 ** rng.uniform(-3, 0)), np.float32),
                    np.asarray(int(rng.integers(-128, 128)), np.int32))
        s, zp = q.scalar()
        for clamp in ((0.0, float("inf")), (0.0, 6.0), (-1.0, 1.0)):
            assert tflite_activation_range(clamp, s, zp) == activation_range(q, clamp)


def test_fused_activation_mismatch_raises(tmp_path):
    b = NetBuilder("relu6", (1, 3, 8, 8), opset=13)
    g = _compile(tmp_path, b.build(b.clip(b.conv("input", 4, 3), 0.0, 6.0)))
    conv = next(n for n in g.nodes if n.op == "conv2d")
    assert conv.attrs["clamp"] == (0.0, 6.0)
    export_tflite(g)
    conv.attrs["q"]["act_max"] -= 1
    with pytest.raises(ExportError, match="RELU|clamp"):
        export_tflite(g)


def test_float_graph_is_rejected(tmp_path):
    from tinyc.pipeline import import_float
    b = NetBuilder("f", (1, 3, 8, 8), opset=13)
    path = tmp_path / "f.onnx"
    onnx.save(b.build(b.conv("input", 4, 3)), path)
    with pytest.raises(ExportError, match="quantized"):
        export_tflite(import_float(str(path)))


def test_pool_window_fully_in_padding_is_unsupported():
    with pytest.raises(UnsupportedError):
        _pool_groups(4, 2, 2, 3, 3, type("N", (), {"describe": lambda self: "node 'p'"})())


# ------------------------------------------------------------------------------------ nets
def test_small_nets_bit_exact(small_nets):
    for name, path in small_nets.items():
        g = compile_int8(str(path), None)
        try:
            assert_bit_exact(g, _inputs(g, seed=len(name)))
        except AssertionError as e:
            raise AssertionError(f"net {name}: {e}") from None


def _edge_net():
    """Export corner cases the test nets do not all reach."""
    b = NetBuilder("edges", (1, 4, 19, 16), opset=13, seed=11)
    x = b.clip(b.conv("input", 8, 3, stride=2, pads=[1, 1, 1, 1]), 0.0, 6.0)       # PAD + VALID
    a1 = b.pool("AveragePool", x, 5, 2, [2, 2, 2, 2], count_include_pad=0)          # pieces
    a2 = b.pool("AveragePool", x, 3, 1, [1, 1, 1, 1], count_include_pad=0)          # SAME
    a2 = b.pool("AveragePool", a2, 3, 2, [1, 1, 1, 1], count_include_pad=1)         # PAD + VALID
    m = b.pool("MaxPool", x, 3, 2, [1, 1, 1, 1])                                    # PADV2 -128
    y = b.concat([a1, a2, m])
    y = b.pad(y, 1, 2, 0, 1, value=0.25)                                            # PADV2 value
    y = b.clip(b.conv(y, 12, 3, stride=2, group=4, dilation=1, pads=[1, 0, 1, 2]), -0.5, 2.5)
    y = b.relu(b.conv(y, 12, 3, group=3, dilation=2, pads=[2, 2, 2, 2]))            # grouped, SAME
    y = b.clip(b.conv(y, 24, 3, group=12, pads=[1, 1, 1, 1]), -1.0, 1.0)            # dw x2, N1_TO_1
    y = b.relu(b.reduce_mean(y))                                                    # standalone clamp
    return b.build(b.softmax(b.gemm(b.flatten(y), 30)))


@pytest.mark.parametrize("grouped_conv", ["native", "split"])
def test_edge_net_bit_exact(tmp_path, grouped_conv):
    g = _compile(tmp_path, _edge_net())
    ops = {n.op for n in g.nodes}
    assert {"avg_pool", "max_pool", "pad", "concat", "clamp", "softmax"} <= ops
    assert_bit_exact(g, _inputs(g, n_random=3), grouped_conv=grouped_conv)


@pytest.mark.parametrize("seed", range(40))
def test_random_nets_bit_exact(tmp_path, seed):
    random_net = pytest.importorskip("random_nets").random_net
    g = _compile(tmp_path, random_net(seed), f"r{seed}")
    assert_bit_exact(g, _inputs(g, n_random=1, seed=seed))


@pytest.mark.parametrize("name", SHARED_96_TESTED)
def test_shared_models_bit_exact(name):
    g = compile_int8(str(shared_model(name)), None)
    assert_bit_exact(g, _inputs(g, n_random=2))


# ------------------------------------------------------------------------------------ oracles
def test_fc_litert_rounding(tmp_path):
    """LiteRT 2.3's reference FULLY_CONNECTED requantizes with one rounding of acc * real_scale;
    TFLM (and our reference, and every other TFLite op) use the gemmlowp double rounding
    (SaturatingRoundingDoublingHighMul, then a rounding right shift). They differ by 1 at
    near-ties. With FULLY_CONNECTED exported as a 1x1 CONV_2D, LiteRT agrees with TFLM."""
    b = NetBuilder("fc", (1, 64, 1, 1), opset=13, seed=3)
    g = _compile(tmp_path, b.build(b.gemm(b.flatten("input"), 1000)))
    native, as_conv = export_tflite(g, fc_as_conv=False), export_tflite(g, fc_as_conv=True)
    differ = 0
    for x in _inputs(g, n_random=6):
        ref = run_int8(g, x)[g.outputs[0]]
        assert np.array_equal(ref, run_tflm(native, x))
        assert np.array_equal(ref, run_litert_ref(as_conv, x))
        assert np.array_equal(ref, run_tflm(as_conv, x))
        lit = run_litert_ref(native, x).astype(np.int32)
        assert np.abs(lit - ref).max() <= 1
        differ += int(np.count_nonzero(lit != ref))
    assert differ < 0.01 * 7 * 1000


def test_softmax_reference_matches_both_oracles():
    """Our int8 softmax == LiteRT BUILTIN_REF == TFLM on random rows and input scales (rows whose
    sum of exponentials would reach 512 are avoided: both runtimes abort there)."""
    from tinyc.ir import Graph, Node, Tensor
    from tinyc.reference.softmax import softmax_int8, softmax_params
    rng = np.random.default_rng(7)
    for trial in range(150):
        n = int(rng.choice([2, 3, 10, 37, 100, 400]))
        scale = float(np.float32(10 ** rng.uniform(-3, 0.5)))
        zp = int(rng.integers(-30, 30))
        t = {"x": Tensor("x", (1, n), "int8",
                         q=QParams(np.asarray(scale, np.float32), np.asarray(zp, np.int32))),
             "y": Tensor("y", (1, n), "int8",
                         q=QParams(np.asarray(1 / 256, np.float32), np.asarray(-128, np.int32)))}
        q = softmax_params(scale)
        g = Graph(t, [Node("sm", "softmax", ["x"], ["y"], {"q": q})], ["x"], ["y"])
        model = export_tflite(g)
        for _ in range(4):
            x = rng.integers(int(rng.integers(-128, 120)), 128, (1, n)).astype(np.int8)
            ref = softmax_int8(x, q)
            assert np.array_equal(ref, run_tflm(model, x)), (trial, scale, x)
            assert np.array_equal(ref, run_litert_ref(model, x)), (trial, scale, x)


def test_tflm_arena_head(tmp_path):
    # conv 1x8x8x3 -> 1x8x8x8 (int8): both buffers live at once: 192 + 512 bytes, 16-aligned
    b = NetBuilder("one_conv", (1, 3, 8, 8), opset=13)
    g = _compile(tmp_path, b.build(b.conv("input", 8, 3)))
    model = export_tflite(g)
    alloc = tflm_allocations(model)
    assert alloc["head"] == tflm_arena_head(model) == 192 + 512
    assert alloc["total"] >= alloc["head"] + alloc["tail"] - 16
    smallest = tflm_min_arena(model)   # total plus alignment slack of the arena start
    assert alloc["head"] < smallest <= alloc["total"] + 64
    x = _inputs(g, n_random=1)[0]
    assert np.array_equal(run_tflm(model, x, arena_size=smallest),
                          run_int8(g, x)[g.outputs[0]])
