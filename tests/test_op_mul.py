"""The Mul op (compiler/ops/mul.py): the proof that an op is added in one module, its C kernel,
its template macro and this test. Bit-exact four ways (numpy reference, generated C, LiteRT's
reference kernels, TFLite Micro), float import against onnxruntime, clear refusals."""
import numpy as np
import onnx
import pytest

from nets import NetBuilder
from test_bitexact import four_way
from test_frontend import float_ir_output, onnxruntime_output
from tinyc.build import BuildOptions, build
from tinyc.errors import TinycError
from tinyc.targets.boards import load_board


def net_mul(opset: int = 13, gate_first: bool = False) -> onnx.ModelProto:
    """A conv, then the product of two conv branches (same shape) and a squeeze-excite style
    gate: global pool, 1x1 conv, Clip(0, 1), multiplied per channel into the feature map."""
    b = NetBuilder("mul", (1, 3, 10, 12), opset=opset, seed=3)
    x = b.relu(b.conv("input", 8, 3))
    y = b.node("Mul", [b.conv(x, 8, 3), b.conv(x, 8, 1, pads=[0, 0, 0, 0])], b.shape[x])
    gate = b.clip(b.conv(b.gap(y), 8, 1, pads=[0, 0, 0, 0]), 0.0, 1.0)
    y = b.node("Mul", [gate, y] if gate_first else [y, gate], b.shape[y])
    return b.build(b.gemm(b.flatten(b.gap(b.relu(y))), 5))


@pytest.mark.parametrize("gate_first", [False, True])
def test_mul_bitexact_four_ways(tmp_path, gate_first):
    path = tmp_path / "mul.onnx"
    onnx.save(net_mul(gate_first=gate_first), path)
    four_way(path, tmp_path, n_inputs=3)


def test_mul_float_import_matches_onnxruntime(tmp_path):
    path = tmp_path / "mul.onnx"
    onnx.save(net_mul(opset=17), path)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 10, 12)).astype(np.float32)
    ours, ref = float_ir_output(path, x), onnxruntime_output(path, x)
    assert np.allclose(ours, ref, atol=1e-4), np.abs(ours - ref).max()


def test_mul_runs_in_place(tmp_path):
    path = tmp_path / "mul.onnx"
    onnx.save(net_mul(), path)
    report = build(str(path), load_board("mps2_an386"), str(tmp_path / "out"),
                   BuildOptions(firmware=False))
    muls = [r for r in report["ops"] if r["op"] == "mul"]
    code = (tmp_path / "out" / "model.c").read_text()
    assert code.count("tinyc_mul(") == 2 and (tmp_path / "out" / "tinyc" / "mul.c").is_file()
    # both products overwrite their dying full-size input
    assert [r["in_place"] for r in muls] == ["elementwise", "elementwise"]


def _mul_by(tmp_path, second, shape2):
    b = NetBuilder("bad_mul", (1, 3, 8, 8), opset=13)
    x = b.conv("input", 4, 3)
    if second == "const":
        other = b.init("k", np.full(shape2, 0.5))
    else:
        other = b.conv("input", shape2[1], 3)
    y = b.node("Mul", [x, other], b.shape[x])
    path = tmp_path / "bad.onnx"
    onnx.save(b.build(b.gemm(b.flatten(b.gap(y)), 3)), path)
    return path


def test_mul_refusals_name_node_and_fix(tmp_path):
    from tinyc.pipeline import import_float
    # a constant per pixel is not one number nor one per channel
    with pytest.raises(TinycError, match=r"mul_\d+.*\(Mul\).*constant of shape \[1, 4, 8, 8\] "
                                         r"is not supported; only by one number or one per channel"):
        import_float(str(_mul_by(tmp_path, "const", (1, 4, 8, 8))))
    # a spatial map (1 channel) times 4 channels: not a per-channel gate
    with pytest.raises(TinycError, match=r"\(Mul\).*shapes \(1, 8, 8, 4\) and \(1, 8, 8, 1\)"
                                         r".*per-channel gate"):
        import_float(str(_mul_by(tmp_path, "act", (1, 1, 8, 8))))


@pytest.mark.parametrize("scheme", ["full", "last:3"])
def test_training_through_mul_matches_the_reference(tmp_path, scheme):
    """Gradients through a product of two branches and a squeeze-excite gate (grad_mul): the
    generated C's step equals the numpy reference's, parameters bit for bit."""
    from test_train_c import assert_same_training
    from tinyc.passes.autodiff import TrainOptions
    from tinyc.pipeline import compile_training
    path = tmp_path / "mul.onnx"
    onnx.save(net_mul(), path)
    g = compile_training(str(path), None, scheme, 3, TrainOptions())
    modes = sorted(n.attrs["mode"] for n in g.nodes if n.op == "grad_mul")
    assert "to_gate" in modes and "by_gate" in modes
    assert_same_training(g, tmp_path, lr=0.05)
