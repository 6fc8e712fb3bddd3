"""Smooth activations (compiler/ops/activation.py) and the table lookups every element-wise int8
chain of one activation becomes (passes/fuse_lut.py): TFLite's LOGISTIC and HARD_SWISH tables
checked value by value against TFLite Micro and LiteRT's reference kernels, whole nets four ways
(generated C == numpy reference == LiteRT == TFLite Micro), the float import against onnxruntime,
training through a table, and the refusals."""
import numpy as np
import onnx
import pytest

from nets import NetBuilder
from test_bitexact import four_way
from test_frontend import float_ir_output, onnxruntime_output
from tinyc.errors import TinycError
from tinyc.export.oracles import run_litert_ref, run_tflm
from tinyc.export.tflite import export_tflite
from tinyc.ir import Graph, Node, QParams, Tensor
from tinyc.ops import get
from tinyc.passes.quantize import round_scale
from tinyc.reference.fixedpoint import INT8_VALUES


def _one_op_graph(op: str, s_in: float, zp_in: int, y_range) -> Graph:
    """input (1, 16, 16, 1) -> op -> output, quantized as the compiler does given the float
    range of the output: the 256 int8 values in one tensor."""
    x_q = QParams(np.asarray(s_in, np.float32), np.asarray(zp_in, np.int32))
    g = Graph({"x": Tensor("x", (1, 16, 16, 1), "int8", q=x_q),
               "y": Tensor("y", (1, 16, 16, 1), "int8")},
              [Node("f", op, ["x"], ["y"])], ["x"], ["y"], meta={"input_nchw": (1, 1, 16, 16)})
    g.tensors["y"].q = get(op).out_qparams(g, g.nodes[0], {"x": x_q}, {"y": y_range})
    g.nodes[0].attrs["q"] = get(op).quantize(g, g.nodes[0])
    return g


# input scales from tiny to large, zero points across the range (the output scale of LOGISTIC
# is fixed; HARD_SWISH's from the output range of its input range)
SCALES = [0.002, 0.0117, 0.03125, 0.0473, 0.1, 0.2391, 0.5, 1.7]
ZERO_POINTS = [-128, -77, -3, 0, 41, 127]


@pytest.mark.parametrize("op", ["sigmoid", "hard_swish"])
def test_tables_equal_tflite_micro_and_litert_on_every_input(op):
    x = INT8_VALUES.astype(np.int8).reshape(1, 16, 16, 1)
    checked = 0
    for s in SCALES:
        for zp in ZERO_POINTS:
            s_in = float(round_scale(s))
            lo, hi = (-128 - zp) * s_in, (127 - zp) * s_in
            if op == "sigmoid":
                y_range = (0.0, 1.0)
            else:   # hard_swish's output range over the input's (its minimum is at -1.5)
                y_lo = -0.375 if lo <= -1.5 else min(0.0, lo * (lo + 3) / 6)
                y_range = (y_lo, max(0.0, hi * min(1.0, max(0.0, hi / 6 + 0.5))))
            g = _one_op_graph(op, s_in, zp, y_range)
            table = g.nodes[0].attrs["q"]["table"]
            tfl = export_tflite(g)
            tflm = run_tflm(tfl, x).ravel()
            assert np.array_equal(tflm, table), (op, s_in, zp, np.flatnonzero(tflm != table))
            assert np.array_equal(run_litert_ref(tfl, x).ravel(), table), (op, s_in, zp)
            checked += len(np.unique(table)) > 16   # a table with many levels
    # most cases are far from degenerate (a large scale saturates nearly every input)
    assert checked >= 0.75 * len(SCALES) * len(ZERO_POINTS)


def net_activations(opset: int = 14, hard_swish_op: bool = True) -> onnx.ModelProto:
    """MobileNetV3 / EfficientNet style: HardSwish (or x * HardSigmoid(x) before opset 14), a
    sigmoid gate, swish (x * Sigmoid(x)), HardSigmoid, Sub and Div by numbers."""
    b = NetBuilder("act", (1, 3, 10, 12), opset=opset, seed=5)
    x = b.conv("input", 8, 3)
    if hard_swish_op:
        x = b.node("HardSwish", [x], b.shape[x])
    else:
        x = b.node("Mul", [x, b.node("HardSigmoid", [x], b.shape[x], alpha=1 / 6, beta=0.5)],
                   b.shape[x])
    s = b.node("Sigmoid", [b.conv(x, 8, 3)], b.shape[x])
    y = b.node("Mul", [x, s], b.shape[x])
    c = b.conv(y, 8, 1, pads=[0, 0, 0, 0])
    sw = b.node("Mul", [c, b.node("Sigmoid", [c], b.shape[c])], b.shape[c])
    hs = b.node("HardSigmoid", [sw], b.shape[sw], alpha=1 / 6, beta=0.5)
    z = b.node("Mul", [sw, hs], b.shape[sw])
    z = b.node("Sub", [z, b.init("k", np.array(0.25, np.float32))], b.shape[z])
    z = b.node("Div", [z, b.init("d", np.array(2.0, np.float32))], b.shape[z])
    return b.build(b.gemm(b.flatten(b.gap(z)), 5))


@pytest.mark.parametrize("opset,hard_swish_op", [(14, True), (13, False)])
def test_activation_net_bitexact_four_ways(tmp_path, opset, hard_swish_op):
    path = tmp_path / "act.onnx"
    onnx.save(net_activations(opset, hard_swish_op), path)
    four_way(path, tmp_path, n_inputs=3)
    code = (tmp_path / "out" / "model.c").read_text()
    # the chains after each conv are one table each: no MUL or ADD kernel by a constant
    assert code.count("tinyc_lut(") == 3 and "tinyc_add(" not in code


def test_activation_float_import_matches_onnxruntime(tmp_path):
    path = tmp_path / "act.onnx"
    onnx.save(net_activations(17), path)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 10, 12)).astype(np.float32)
    ours, ref = float_ir_output(path, x), onnxruntime_output(path, x)
    assert np.allclose(ours, ref, atol=1e-4), np.abs(ours - ref).max()


def _bad(tmp_path, op, const, first=False):
    b = NetBuilder("bad", (1, 3, 8, 8), opset=13)
    x = b.conv("input", 4, 3)
    k = b.init("k", np.asarray(const, np.float32))
    y = b.node(op, [k, x] if first else [x, k], b.shape[x])
    path = tmp_path / "bad.onnx"
    onnx.save(b.build(b.gemm(b.flatten(b.gap(y)), 3)), path)
    return str(path)


def test_refusals_name_the_node_and_what_is_supported(tmp_path):
    from tinyc.pipeline import import_float
    cases = [("Div", 0.0, False, r"div_\d+.*\(Div\).*Div by the constant 0"),
             ("Div", 2.0, True, r"\(Div\).*only Div of an activation by a constant number"),
             ("Sub", 1.0, True, r"\(Sub\).*only as an activation minus a constant number"),
             ("Mul", np.ones((1, 4, 8, 8)), False, r"\(Mul\).*constant of shape \[1, 4, 8, 8\]"
                                                    r".*only by one number or one per channel"),
             ("Add", np.ones((1, 1, 8, 8)), False, r"\(Add\).*constant of shape \[1, 1, 8, 8\]")]
    for op, const, first, msg in cases:
        with pytest.raises(TinycError, match=msg):
            import_float(_bad(tmp_path, op, const, first))


def net_v3_head() -> onnx.ModelProto:
    """A MobileNetV3-style tail: convs with HardSwish and a sigmoid gate, then global pooling,
    a Linear + HardSwish and the classifier (`last:2` trains through the two last tables)."""
    b = NetBuilder("v3_head", (1, 3, 12, 12), opset=14, seed=8)
    x = b.conv("input", 8, 3, stride=2)
    x = b.node("HardSwish", [x], b.shape[x])
    c = b.conv(x, 16, 1, pads=[0, 0, 0, 0])
    x = b.node("Mul", [c, b.node("Sigmoid", [c], b.shape[c])], b.shape[c])     # swish
    x = b.gemm(b.flatten(b.gap(x)), 24)
    x = b.node("HardSwish", [x], b.shape[x])
    return b.build(b.gemm(x, 4))


@pytest.mark.parametrize("scheme", ["last:2", "full"])
def test_training_through_tables_matches_reference(tmp_path, scheme):
    from test_train_c import assert_same_training
    from tinyc.passes.autodiff import TrainOptions
    from tinyc.pipeline import compile_training
    path = tmp_path / "v3.onnx"
    onnx.save(net_v3_head(), path)
    g = compile_training(str(path), None, scheme, 4, TrainOptions())
    assert [n.op for n in g.nodes].count("grad_lut") >= (2 if scheme == "last:2" else 3)
    assert_same_training(g, tmp_path, lr=0.05)


def test_table_slopes_are_the_float_derivatives():
    """grad_lut's slope table: the derivative of the chain's float function at each input."""
    g = _one_op_graph("sigmoid", 0.05, 3, (0.0, 1.0))
    from tinyc.passes.fuse_lut import _slope
    x = (INT8_VALUES - 3) * np.float32(0.05)
    sig = 1 / (1 + np.exp(-x))
    slope = _slope(g, "x", "y", g.nodes)
    assert np.allclose(slope, sig * (1 - sig), atol=2e-4)


def test_onnx_export_of_tables_and_a_mean_head_loads_in_onnxruntime(tmp_path):
    """tinyc export's float ONNX: the tables' chains come back as their ONNX ops, and a head that
    is a mean over H and W (GlobalAveragePool + Flatten: once two nodes of one name, which
    onnxruntime refused) loads and runs, close to the source model."""
    import onnxruntime as ort
    from tinyc.export.onnx_export import export_onnx
    from tinyc.pipeline import check_model_input, import_float
    from tinyc.passes.quantize import quantize
    b = NetBuilder("mean_head", (1, 3, 10, 12), opset=14, seed=2)
    x = b.conv("input", 8, 3)
    x = b.node("Mul", [x, b.node("HardSigmoid", [x], b.shape[x], alpha=1 / 6, beta=0.5)],
               b.shape[x])
    src = tmp_path / "src.onnx"
    mean = b.node("ReduceMean", [x], (1, 8), axes=[2, 3], keepdims=0)   # (1, C): no Flatten
    onnx.save(b.build(b.gemm(mean, 5)), src)
    g = import_float(str(src))
    rng = np.random.default_rng(0)
    calib = rng.uniform(-1, 1, (8, 3, 10, 12)).astype(np.float32)
    gq = quantize(g, check_model_input(g, calib, "calib", batch=True))
    assert [n.op for n in gq.nodes].count("lut") == 1
    export_onnx(gq, str(tmp_path / "out.onnx"))
    names = [n.name for n in onnx.load(tmp_path / "out.onnx").graph.node]
    assert len(names) == len(set(names))
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                for p in (tmp_path / "out.onnx", src)]
    got = [np.concatenate([s.run(None, {"input": calib[i:i + 1]})[0] for i in range(4)])
           for s in sessions]
    cos = np.sum(got[0] * got[1], 1) / (np.linalg.norm(got[0], axis=1) * np.linalg.norm(got[1], axis=1))
    assert cos.min() > 0.98, cos
