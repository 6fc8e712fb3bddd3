"""int8 .tflite files as input (compiler/frontend/tflite.py): the file's own quantization is kept,
and the generated C is bit-exact with TFLite Micro on the file itself.

The files are written by the project's exporter from the test nets (a different path from the
one that reads them: TFLite's own layouts, SAME/VALID padding, PAD/SLICE/GATHER/MAXIMUM ops,
FULLY_CONNECTED or its 1x1-conv form, LOGISTIC/HARD_SWISH, MUL/ADD by numbers), and one is
rewritten into the converter's default float-in/float-out form (QUANTIZE first, DEQUANTIZE
last). Hostile files get one line and exit status 1."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import assert_clean_failure, host_build, tinyc
from nets import ALL_NETS
from test_activations import net_activations
from tinyc.build import BuildOptions, build
from tinyc.export.oracles import run_tflm
from tinyc.export.tflite import export_tflite
from tinyc.frontend.tflite import load_tflite
from tinyc.passes.quantize import quantize
from tinyc.pipeline import check_model_input, import_float
from tinyc.reference.int8 import run_int8
from tinyc.targets.boards import load_board
from tinyc.targets.host import run_host


def tflite_of(model: onnx.ModelProto, tmp_path, fc_as_conv=True, seed=0):
    """The int8 .tflite tinyc's exporter writes for an ONNX net (calibrated on noise)."""
    onnx.save(model, tmp_path / "m.onnx")
    g = import_float(str(tmp_path / "m.onnx"))
    shape = tuple(g.meta["input_nchw"][1:])
    calib = np.random.default_rng(seed).uniform(-1, 1, (8,) + shape).astype(np.float32)
    gq = quantize(g, check_model_input(g, calib, "calib", batch=True))
    path = tmp_path / "m.tflite"
    path.write_bytes(export_tflite(gq, fc_as_conv=fc_as_conv))
    return path


def assert_c_equals_tflm(path, tmp_path, n=3, seed=1):
    build(str(path), load_board("mps2_an386"), str(tmp_path / "out"), BuildOptions(firmware=False))
    g = load_tflite(str(path))
    x = np.random.default_rng(seed).integers(-128, 128, (n,) + g.tensors[g.inputs[0]].shape[1:])
    x = x.astype(np.int8)
    host_build(tmp_path / "out")   # the runtime's objects shared (conftest)
    c_out = run_host(tmp_path / "out", x).reshape(n, -1)
    tfl = path.read_bytes()
    for i in range(n):
        want = run_tflm(tfl, x[i:i + 1]).ravel()
        assert np.array_equal(c_out[i], want), f"input {i}: generated C != TFLite Micro"
        assert np.array_equal(run_int8(g, x[i:i + 1])[g.outputs[0]].ravel(), want)


NETS = sorted(n for n in ALL_NETS if n != "big_kernels")   # its pooling blocks: spatial concat


@pytest.mark.parametrize("fc_as_conv", [True, False])
@pytest.mark.parametrize("name", NETS)
def test_tflite_file_bitexact_with_tflite_micro(name, fc_as_conv, small_nets, tmp_path):
    path = tmp_path / "m.tflite"
    path = tflite_of(onnx.load(small_nets[name]), tmp_path, fc_as_conv)
    assert_c_equals_tflm(path, tmp_path)


def test_tflite_activations_and_numbers(tmp_path):
    """LOGISTIC, HARD_SWISH, MUL / ADD by int8 numbers, MAXIMUM: read back as one table each."""
    path = tflite_of(net_activations(14), tmp_path)
    g = load_tflite(str(path))
    assert [n.op for n in g.nodes].count("lut") == 3
    assert_c_equals_tflm(path, tmp_path)


def test_tflite_channel_ops(tmp_path):
    """GATHER (split halves, a channel shuffle, a channel slice), SLICE of rows / columns and a
    TRANSPOSE of H and W."""
    from nets import NetBuilder
    from onnx import helper
    b = NetBuilder("chan", (1, 3, 12, 10), opset=13, seed=6)
    x = b.relu(b.conv("input", 8, 3))
    b.nodes.append(helper.make_node("Split", [x, b.const_node("sz", [4, 4], np.int64)],
                                    ["l", "r"], axis=1))
    b.shape["l"] = b.shape["r"] = (1, 4, 12, 10)
    y = b.node("Concat", [b.relu(b.conv("r", 4, 1, pads=[0, 0, 0, 0])), "l"], (1, 8, 12, 10),
               axis=1)
    y = b.node("Slice", [y, b.const_node("s", [1, 2], np.int64), b.const_node("e", [11, 9], np.int64),
                         b.const_node("a", [2, 3], np.int64)], (1, 8, 10, 7))
    y = b.node("Transpose", [y], (1, 8, 7, 10), perm=[0, 1, 3, 2])
    path = tflite_of(b.build(b.gemm(b.flatten(b.gap(b.conv(y, 6, 3))), 4)), tmp_path)
    g = load_tflite(str(path))
    assert {"gather_channels", "crop", "transpose"} <= {n.op for n in g.nodes}
    assert_c_equals_tflm(path, tmp_path)


def _float_io(path, tmp_path):
    """The converter's default layout: float input -> QUANTIZE ... DEQUANTIZE -> float output."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb
    m = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(path.read_bytes(), 0))
    sg = m.subgraphs[0]
    codes = {}

    def code(op):
        if op not in codes:
            c = fb.OperatorCodeT()
            c.builtinCode = c.deprecatedBuiltinCode = getattr(fb.BuiltinOperator, op)
            c.version = 1
            m.operatorCodes.append(c)
            codes[op] = len(m.operatorCodes) - 1
        return codes[op]

    def float_tensor(like, name):
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(sg.tensors[like].shape), \
            fb.TensorType.FLOAT32, 0
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    fin, fout = float_tensor(sg.inputs[0], "float_in"), float_tensor(sg.outputs[0], "float_out")
    q, dq = fb.OperatorT(), fb.OperatorT()
    q.opcodeIndex, q.inputs, q.outputs = code("QUANTIZE"), [fin], [sg.inputs[0]]
    dq.opcodeIndex, dq.inputs, dq.outputs = code("DEQUANTIZE"), [sg.outputs[0]], [fout]
    sg.operators = [q] + list(sg.operators) + [dq]
    sg.inputs, sg.outputs = [fin], [fout]
    import flatbuffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    out = tmp_path / "float_io.tflite"
    out.write_bytes(bytes(builder.Output()))
    return out


def test_float_io_file_is_read_at_its_int8_side(small_nets, tmp_path):
    path = _float_io(tflite_of(onnx.load(small_nets["mbv2_block"]), tmp_path), tmp_path)
    g = load_tflite(str(path))
    assert g.tensors[g.inputs[0]].dtype == "int8" and g.nodes[0].op in ("pad", "conv2d")
    assert g.nodes[-1].op != "requantize"


def test_cli_build_of_a_tflite_file(small_nets, tmp_path):
    path = tflite_of(onnx.load(small_nets["residual_chain"]), tmp_path)
    res = tinyc("build", path, "--board", "mps2_an386", "-o", tmp_path / "o", "--no-firmware",
                "--patch", "off")
    assert "arena" in res.stdout and "(N, H, W, C)" in res.stdout
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    g = load_tflite(str(path))
    assert len(rep["ops"]) == len(g.nodes) and rep["inference"]["arena_bytes"] > 0
    assert rep["input"]["scale"] == pytest.approx(g.tensors[g.inputs[0]].q.scalar()[0])


@pytest.mark.parametrize("name,scheme,classes,fc_as_conv", [
    ("mbv2_block", "last:2", 5, True), ("residual_chain", "full", None, False),
    ("fc_only", "last:1", 3, False)])
def test_training_a_tflite_model_matches_the_reference(name, scheme, classes, fc_as_conv,
                                                      small_nets, tmp_path):
    """The file's quantization is kept; a new head gets int8 weights and a new-head logit range."""
    from test_train_c import assert_same_training
    from tinyc.passes.autodiff import TrainOptions
    from tinyc.pipeline import tflite_training_graph
    path = tflite_of(onnx.load(small_nets[name]), tmp_path, fc_as_conv)
    g0 = load_tflite(str(path))
    g = tflite_training_graph(load_tflite(str(path)), scheme, classes, TrainOptions())
    for t in g0.tensors.values():   # frozen weights and activations keep the file's numbers
        if t.name in g.tensors and t.q is not None and t.name not in g.meta["train"]["trainable"]:
            same = g.tensors[t.name]
            if same.shape == t.shape:
                assert np.array_equal(np.asarray(same.q.scale), np.asarray(t.q.scale)), t.name
    assert_same_training(g, tmp_path, lr=0.05)


def test_new_head_of_a_tflite_model_has_room_to_grow(small_nets, tmp_path):
    """A new head on an int8 .tflite model (replace_head_int8) gets the ONNX path's room: int8
    weights over HEAD_WEIGHT_HEADROOM times their initial bound, logits over the new-head range."""
    from tinyc.passes.autodiff import TrainOptions
    from tinyc.passes.train_head import HEAD_WEIGHT_HEADROOM, classifier
    from tinyc.pipeline import NEW_HEAD_LOGIT_RANGE, tflite_training_graph
    path = tflite_of(onnx.load(small_nets["fc_only"]), tmp_path, fc_as_conv=False)
    g = tflite_training_graph(load_tflite(str(path)), "last:1", 3, TrainOptions())
    head = classifier(g)
    w = g.tensors[head.inputs[1]]
    bound = 1 / np.sqrt(np.prod(w.shape[1:]))
    assert np.allclose(np.asarray(w.q.scale), HEAD_WEIGHT_HEADROOM * bound / 127, rtol=1e-3)
    assert np.abs(w.data.astype(int)).max() <= 127 / HEAD_WEIGHT_HEADROOM + 1
    scale, zp = g.tensors[head.outputs[0]].q.scalar()
    lo, hi = NEW_HEAD_LOGIT_RANGE
    assert abs((127 - zp) * scale - hi) < scale and abs((-128 - zp) * scale - lo) < scale


def test_cli_trains_a_tflite_model(small_nets, tmp_path):
    path = tflite_of(onnx.load(small_nets["mbv2_block"]), tmp_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.uniform(-1, 1, (6, 32, 24, 3)).astype(np.float32),
             y=np.arange(6) % 3)   # TFLite's layout: N, H, W, C
    res = tinyc("build", path, "--board", "mps2_an386", "-o", tmp_path / "o", "--no-firmware",
                "--train", "last:2", "--num-classes", "3")
    assert "training" in res.stdout
    res = tinyc("emulate", tmp_path / "o", "--train-data", tmp_path / "d.npz")
    assert "loss" in res.stdout


@pytest.mark.parametrize("case", ["random", "truncated", "no_identifier", "unsupported_op"])
def test_bad_tflite_files_fail_cleanly(case, small_nets, tmp_path):
    good = tflite_of(onnx.load(small_nets["mbv2_block"]), tmp_path).read_bytes()
    bad = tmp_path / "bad.tflite"
    args, expect = [], []
    if case == "random":
        bad.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8)))
        expect = ["not a .tflite model"]
    elif case == "truncated":
        bad.write_bytes(good[:len(good) // 3])
        expect = ["bad.tflite"]
    elif case == "no_identifier":
        bad.write_bytes(good[:4] + b"XXXX" + good[8:])
        expect = ["no TFL3 identifier"]
    elif case == "unsupported_op":   # the first operator's code turned into TANH
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb
        import flatbuffers
        m = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(good, 0))
        code = m.operatorCodes[m.subgraphs[0].operators[0].opcodeIndex]
        code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.TANH
        builder = flatbuffers.Builder(1024)
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        bad.write_bytes(bytes(builder.Output()))
        expect = ["operator 0 (TANH)", "not supported", "CONV_2D"]
    res = tinyc("build", bad, "--board", "mps2_an386", "-o", tmp_path / "o", "--no-firmware",
                *args, check=False)
    assert_clean_failure(res, *expect)


def test_tflite_vector_model(tmp_path):
    """A (1, N) input (an MLP, e.g. an anomaly-detection autoencoder)."""
    from test_arch_ops import net_mlp
    path = tflite_of(net_mlp(), tmp_path)
    assert load_tflite(str(path)).meta["input_nchw"] == (1, 40)
    assert_c_equals_tflm(path, tmp_path)


def test_tflite_per_channel_constants(tmp_path):
    """MUL / ADD by a constant per channel (an input normalisation, a per-channel affine)."""
    from test_arch_ops import net_per_channel_constants
    path = tflite_of(net_per_channel_constants(), tmp_path)
    assert_c_equals_tflm(path, tmp_path)


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tflite"
CONVERTED = ["autoencoder", "ds_cnn", "resnet8", "se_hardswish", "vww_mobilenet"]


@pytest.mark.parametrize("name", CONVERTED)
def test_converter_made_tflite_files(name, tmp_path):
    """int8 files written by TensorFlow's own TFLiteConverter from Keras definitions in the style
    of the MLPerf Tiny models (tests/fixtures/make_tflite_fixtures.py): Keras' SHAPE-computed
    flatten, a requantizing MEAN, LOGISTIC / HARD_SWISH / MUL gates. Built unmodified, the C is
    bit-exact with TFLite Micro, and the model trains (a new head, then the last layers)."""
    from test_train_c import assert_same_training
    from tinyc.passes.autodiff import TrainOptions
    from tinyc.pipeline import tflite_training_graph
    path = FIXTURES / f"{name}.tflite"
    assert_c_equals_tflm(path, tmp_path)
    g = load_tflite(str(path))
    # tinyc's own export of what it read runs the same in TFLite Micro (MEAN written back)
    x = np.random.default_rng(4).integers(-128, 128, (1,) + g.tensors[g.inputs[0]].shape[1:])
    x = x.astype(np.int8)
    assert np.array_equal(run_tflm(export_tflite(g, fc_as_conv=False), x).ravel(),
                          run_int8(g, x)[g.outputs[0]].ravel())
    if name == "autoencoder":   # reconstruction (--loss mse) of int8 inputs
        from test_arch_ops import assert_same_mse_training
        from tinyc.pipeline import quantize_array
        t = tflite_training_graph(g, "last:2", None, TrainOptions(loss="mse"))
        x = np.random.default_rng(2).uniform(-1, 1, (12, 64)).astype(np.float32)
        xin, yout = (t.tensors[n].q.scalar() for n in (t.inputs[0], t.outputs[0]))
        assert_same_mse_training(t, tmp_path / "train", quantize_array(x, *xin),
                                 quantize_array(x, *yout), lr=0.01)
        return
    t = tflite_training_graph(g, "last:2", 3, TrainOptions())
    assert_same_training(t, tmp_path / "train", lr=0.01)
