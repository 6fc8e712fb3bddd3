"""Hostile and malformed input (issue 11, item 4): every case ends with a one-line error that
names the problem and exit status 1, never an internal error (exit 3), a traceback or a hang.

The command line runs in this process (tinyc.cli.main) to keep the many cases cheap; the cases
build no firmware."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_clean_failure
from tinyc.cli import main

BOARD = ("--board", "mps2_an386")


def run(capsys, *args):
    """tinyc ARGS in this process: (returncode, stdout, stderr) like a subprocess result."""
    format_warning = warnings.formatwarning   # main() sets tinyc's own
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:   # argparse refusals
        code = e.code
    finally:
        warnings.formatwarning = format_warning
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


# ---------------------------------------------------------------- hostile models
def conv_net(path: Path, *, w_shape=(4, 3, 3, 3), conv=None, w_value=None, gemm_out=5,
             in_dims=(1, 3, 8, 8), pad=None):
    """input -> [Pad] -> Conv (attrs `conv`) -> Relu -> GlobalAveragePool -> Flatten -> Gemm,
    with whatever shapes and attributes the case asks for (no onnx.checker)."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, w_shape).astype(np.float32) if w_value is None else w_value
    cout = w.shape[0]
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.zeros(cout, np.float32), "b"),
             numpy_helper.from_array(rng.normal(0, 0.3, (gemm_out, cout)).astype(np.float32), "fw"),
             numpy_helper.from_array(np.zeros(gemm_out, np.float32), "fb")]
    nodes, x = [], "input"
    if pad is not None:
        inits.append(numpy_helper.from_array(np.array(pad, np.int64), "pads"))
        nodes.append(helper.make_node("Pad", ["input", "pads"], ["padded"], name="pad0"))
        x = "padded"
    attrs = {"kernel_shape": list(w.shape[2:]), "pads": [1, 1, 1, 1], **(conv or {})}
    nodes += [helper.make_node("Conv", [x, "w", "b"], ["c"], name="conv0", **attrs),
              helper.make_node("Relu", ["c"], ["r"], name="relu0"),
              helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap0"),
              helper.make_node("Flatten", ["p"], ["f"], name="flat0"),
              helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc0", transB=1)]
    g = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                       list(in_dims))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def identity_only(path: Path):
    g = helper.make_graph([helper.make_node("Identity", ["input"], ["y"], name="id0")], "id",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def external_data_missing(path: Path):
    conv_net(path)
    m = onnx.load(path)
    onnx.save(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    (path.parent / "weights.bin").unlink()
    return path


def edited(path: Path, edit):
    """conv_net with `edit(model)` applied (a hand-broken graph)."""
    conv_net(path)
    m = onnx.load(path)
    edit(m)
    onnx.save(m, path)
    return path


def _node(m, name):
    return next(n for n in m.graph.node if n.name == name)


def _conv_one_input(m):
    del _node(m, "conv0").input[1:]


def _relu_no_output(m):
    del _node(m, "relu0").output[:]


def _twice_assigned(m):
    _node(m, "relu0").output[0] = "c"


def _output_is_input(m):
    m.graph.output[0].name = "input"


def _bn_wrong_shape(m):
    c = np.ones(3, np.float32)   # the conv has 4 channels
    m.graph.initializer.extend(numpy_helper.from_array(c, n) for n in ("g", "be", "mu", "v"))
    m.graph.node.insert(1, helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "v"],
                                            ["bn"], name="bn0"))
    _node(m, "relu0").input[0] = "bn"


def _clip_vector_min(m):
    m.graph.initializer.extend([numpy_helper.from_array(np.zeros(2, np.float32), "lo")])
    relu = _node(m, "relu0")
    relu.op_type, relu.input[:] = "Clip", ["c", "lo"]


def _pool_pads_over_kernel(m):
    relu = _node(m, "relu0")
    relu.op_type, relu.name = "AveragePool", "pool0"
    relu.attribute.extend([helper.make_attribute("kernel_shape", [2, 2]),
                           helper.make_attribute("pads", [3, 3, 3, 3])])


def _long_chain(m):
    """2100 pass-through MaxPool 1x1 layers between the Relu and the pooling."""
    relu = _node(m, "relu0")
    relu.output[0] = "chain0"
    pools = [helper.make_node("MaxPool", [f"chain{i}"], [f"chain{i + 1}"], name=f"pool{i}",
                              kernel_shape=[1, 1]) for i in range(2100)]
    pools[-1].output[0] = "r"
    for k, pool in enumerate(pools):
        m.graph.node.insert(2 + k, pool)


MODEL_CASES = {
    # name: (model writer, fragments of the message)
    "gemm_0_outputs": (lambda p: conv_net(p, gemm_out=0), ["fc0", "Gemm", "0 outputs"]),
    "conv_0_channels": (lambda p: conv_net(p, w_shape=(0, 3, 3, 3)), ["conv0", "Conv", "0 output channels"]),
    "conv_0_kernel": (lambda p: conv_net(p, w_shape=(4, 3, 0, 3)), ["conv0", "Conv", "kernel"]),
    "stride_0": (lambda p: conv_net(p, conv={"strides": [0, 1]}), ["conv0", "Conv", "strides"]),
    "stride_negative": (lambda p: conv_net(p, conv={"strides": [-2, -2]}), ["conv0", "strides"]),
    "stride_3_values": (lambda p: conv_net(p, conv={"strides": [1, 1, 1]}), ["conv0", "strides"]),
    "dilation_0": (lambda p: conv_net(p, conv={"dilations": [0, 0]}), ["conv0", "dilations"]),
    "kernel_too_large": (lambda p: conv_net(p, w_shape=(4, 3, 15, 15), conv={"pads": [1, 1, 1, 1]}),
                         ["conv0", "empty"]),
    "group_0": (lambda p: conv_net(p, conv={"group": 0}), ["conv0", "group"]),
    "group_not_dividing": (lambda p: conv_net(p, w_shape=(4, 1, 3, 3), conv={"group": 2}),
                           ["conv0", "group"]),
    "kernel_shape_mismatch": (lambda p: conv_net(p, conv={"kernel_shape": [5, 5]}),
                              ["conv0", "kernel_shape"]),
    "weights_3e38": (lambda p: conv_net(p, w_value=np.full((4, 3, 3, 3), 3e38, np.float32)),
                     ["conv0", "3e+38"]),
    "identity_only": (identity_only, ["no layer"]),
    "external_data_missing": (external_data_missing, ["weights.bin"]),
    "huge_conv_pads": (lambda p: conv_net(p, conv={"pads": [30000, 30000, 30000, 30000]}),
                       ["conv0", "MiB"]),
    "huge_pad_op": (lambda p: conv_net(p, pad=[0, 0, 20000, 20000, 0, 0, 20000, 20000]),
                    ["pad0", "MiB"]),
    "huge_macs": (lambda p: conv_net(p, in_dims=(1, 3, 1000, 1000), w_shape=(16, 3, 101, 101),
                                     conv={"pads": [0, 0, 0, 0]}),
                  ["conv0", "multiply-accumulates"]),
    "zero_input_dim": (lambda p: conv_net(p, in_dims=(1, 3, 0, 8)), ["input", "shape"]),
    "negative_input_dim": (lambda p: conv_net(p, in_dims=(1, 3, -4, 8)), ["input", "shape"]),
    "conv_one_input": (lambda p: edited(p, _conv_one_input), ["conv0", "inputs"]),
    "node_without_output": (lambda p: edited(p, _relu_no_output), ["relu0", "no output"]),
    "tensor_assigned_twice": (lambda p: edited(p, _twice_assigned), ["relu0", "'c'"]),
    "output_is_input": (lambda p: edited(p, _output_is_input), ["output 'input'"]),
    "bn_parameter_shape": (lambda p: edited(p, _bn_wrong_shape), ["bn0", "4 channels"]),
    "clip_min_not_scalar": (lambda p: edited(p, _clip_vector_min), ["relu0", "one number"]),
    "pool_pads_over_kernel": (lambda p: edited(p, _pool_pads_over_kernel), ["pool0", "pads"]),
    # 600 M MACs: a calibration of minutes, for an arena of 1.8 MB: refused before calibrating
    "large_pads_over_sram": (lambda p: conv_net(p, in_dims=(1, 3, 40, 36), w_shape=(8, 3, 7, 7),
                                                conv={"pads": [700] * 4, "strides": [2, 2]}),
                             ["does not fit", "smallest arena", "717x715x8"]),
    "too_many_layers": (lambda p: edited(p, _long_chain), ["over 2000 layers"]),
    "attribute_of_wrong_type": (lambda p: conv_net(p, conv={"group": [1, 1]}),
                                ["conv0", "group", "INT"]),
    "pads_3_values": (lambda p: conv_net(p, conv={"pads": [1, 1, 1]}), ["conv0", "pads"]),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_hostile_models(case, capsys, tmp_path):
    write, fragments = MODEL_CASES[case]
    model = write(tmp_path / "m.onnx")
    start = time.monotonic()
    res = run(capsys, "build", model, *BOARD, "-o", tmp_path / "out", "--no-firmware")
    assert_clean_failure(res, *fragments)
    lines = [ln for ln in res.stderr.splitlines() if not ln.startswith("tinyc: warning: no --calib")]
    assert len(lines) == 1 and lines[0].startswith("tinyc: error: "), res.stderr
    assert time.monotonic() - start < 20, "refused, but not in seconds"


# ---------------------------------------------------------------- options and arrays
@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    return conv_net(tmp_path_factory.mktemp("good") / "good.onnx")


def _npy(path: Path, arr) -> Path:
    np.save(path, arr)
    return path


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


BUILD_CASES = {
    "lr_nan": (["--train", "bias-only", "--lr", "nan"], ["--lr"]),
    "lr_inf": (["--train", "bias-only", "--lr", "inf"], ["--lr"]),
    "lr_negative": (["--train", "bias-only", "--lr", "-1"], ["--lr"]),
    "lr_zero": (["--train", "bias-only", "--lr", "0"], ["--lr"]),
    "num_classes_0": (["--train", "bias-only", "--num-classes", "0"], ["--num-classes"]),
    "num_classes_1": (["--train", "bias-only", "--num-classes", "1"], ["--num-classes"]),
    "num_classes_negative": (["--train", "bias-only", "--num-classes", "-3"], ["--num-classes"]),
    "calib_limit_negative": (["--calib-limit", "-1"], ["--calib-limit"]),
    "calib_limit_zero": (["--calib-limit", "0"], ["--calib-limit"]),
    "calib_std_zero": (["--calib-std", "0"], ["--calib-std"]),
    "calib_mean_nan": (["--calib-mean", "nan"], ["--calib-mean"]),
    "num_classes_huge": (["--train", "bias-only", "--num-classes", "100000000"],
                         ["--num-classes", "weights"]),
}


@pytest.mark.parametrize("case", sorted(BUILD_CASES))
def test_bad_build_options(case, good_model, capsys, tmp_path):
    extra, fragments = BUILD_CASES[case]
    res = run(capsys, "build", good_model, *BOARD, "-o", tmp_path / "out", "--no-firmware", *extra)
    assert_clean_failure(res, *fragments)
    assert len(res.stderr.splitlines()) == 1, res.stderr
    assert not (tmp_path / "out").exists()


def _calib_files(tmp: Path) -> dict:
    rng = np.random.default_rng(1)
    return {
        "uint8": _npy(tmp / "u8.npy", rng.integers(0, 255, (4, 3, 8, 8)).astype(np.uint8)),
        "int32": _npy(tmp / "i32.npy", rng.integers(0, 255, (4, 3, 8, 8)).astype(np.int32)),
        "empty": _npy(tmp / "empty.npy", np.zeros((0, 3, 8, 8), np.float32)),
        "object": _npy(tmp / "obj.npy", np.array([{"a": 1}], dtype=object)),
    }


CALIB_CASES = {
    "uint8": ["uint8", "float"],
    "int32": ["int32", "float"],
    "empty": ["no sample"],
    "object": ["obj.npy"],
}


@pytest.mark.parametrize("case", sorted(CALIB_CASES))
def test_bad_calibration_arrays(case, good_model, capsys, tmp_path):
    files = _calib_files(tmp_path)
    res = run(capsys, "build", good_model, *BOARD, "-o", tmp_path / "out", "--no-firmware",
              "--calib", files[case])
    assert_clean_failure(res, *CALIB_CASES[case])


def _png(path: Path, size=(8, 8)):
    from PIL import Image
    Image.new("RGB", size, (10, 200, 30)).save(path)
    return path


def _bomb_png(path: Path, side=40000):
    """A PNG header announcing side x side pixels (1.6 G, over Pillow's bomb limit) and no data:
    a few bytes on disk, gigabytes once decoded."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_calibration_images(good_model, capsys, tmp_path):
    """A decompression bomb and a corrupt image are named; a one-value --calib-mean/--calib-std
    applies to every channel; a wrong number of values is refused."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    _png(folder / "a.png")
    res = run(capsys, "build", good_model, *BOARD, "-o", tmp_path / "o1", "--no-firmware",
              "--calib", folder, "--calib-mean", "0.4", "--calib-std", "0.3")
    assert res.returncode == 0, res.stderr
    res = run(capsys, "build", good_model, *BOARD, "-o", tmp_path / "o2", "--no-firmware",
              "--calib", folder, "--calib-mean", "0.4,0.5")
    assert_clean_failure(res, "--calib-mean", "3 channels")
    _bomb_png(folder / "bomb.png")
    res = run(capsys, "build", good_model, *BOARD, "-o", tmp_path / "o3", "--no-firmware",
              "--calib", folder)
    assert_clean_failure(res, "bomb.png")
    (folder / "bomb.png").unlink()
    (folder / "b.png").write_bytes(_png(tmp_path / "c.png").read_bytes()[:40])
    res = run(capsys, "build", good_model, *BOARD, "-o", tmp_path / "o4", "--no-firmware",
              "--calib", folder)
    assert_clean_failure(res, "b.png")


@pytest.fixture(scope="module")
def trained_build(good_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("tb") / "out"
    assert main(["build", str(good_model), *BOARD, "-o", str(out), "--no-firmware",
                 "--train", "bias-only"]) == 0
    return out


def test_bad_arrays_and_options_of_emulate(trained_build, good_model, capsys, tmp_path):
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (3, 3, 8, 8)).astype(np.float32)
    y = np.array([0, 1, 2])
    empty = _npz(tmp_path / "empty.npz", x=x[:0], y=y[:0])
    good = _npz(tmp_path / "good.npz", x=x, y=y)
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([None, 1], dtype=object), y=y)
    cases = [
        (["--input", _npy(tmp_path / "e.npy", x[:0]), "--output", tmp_path / "y.npy"], ["no sample"]),
        (["--train-data", empty], ["no sample"]),
        (["--train-data", good, "--eval-data", empty], ["no sample"]),
        (["--train-data", obj], ["obj.npz"]),
        (["--train-data", good, "--epochs", "0"], ["--epochs"]),
        (["--train-data", good, "--lr", "nan"], ["--lr"]),
        (["--input", _npy(tmp_path / "x.npy", x), "--output", tmp_path / "y.npy", "--qemu",
          "--timeout", "0"], ["--timeout"]),
        (["--input", _npy(tmp_path / "x.npy", x), "--output", tmp_path / "y.npy", "--qemu",
          "--timeout", "-5"], ["--timeout"]),
    ]
    for extra, fragments in cases:
        res = run(capsys, "emulate", trained_build, *extra)
        assert_clean_failure(res, *fragments)
    res = run(capsys, "build", good_model, *BOARD, "-o", tmp_path / "o", "--no-firmware",
              "--samples", _npy(tmp_path / "s.npy", x[:0]))
    assert_clean_failure(res, "no sample")


@pytest.mark.parametrize("content", ["{}", "[]", '{"board": 3}', "null"])
@pytest.mark.parametrize("command", ["report", "emulate", "flash", "export"])
def test_not_a_report(command, content, trained_build, capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text(content)
    extra = {"emulate": ["--input", "x.npy", "--output", "y.npy"], "flash": ["--dry-run"],
             "export": ["--params", "p.npz", "-o", tmp_path / "m.onnx"]}.get(command, [])
    res = run(capsys, command, out, *extra)
    assert_clean_failure(res, "not a tinyc report", "rebuild")


def test_report_with_wrong_types(trained_build, capsys, tmp_path):
    rep = json.loads((trained_build / "report.json").read_text())
    out = tmp_path / "out"
    out.mkdir()
    rep["inference"]["arena_bytes"] = "many"
    (out / "report.json").write_text(json.dumps(rep))
    assert_clean_failure(run(capsys, "report", out), "not a tinyc report")


@pytest.mark.parametrize("wide, slow", [(600, False), (600, True), (505, True)])
def test_flash_refusal_lists_the_largest_weights(wide, slow, capsys, tmp_path, monkeypatch):
    """Weights over the board's flash (512 KB): the refusal names the layers that hold them,
    largest first, with node index, op and bytes, and no SRAM breakdown (the SRAM fits). A build
    whose calibration would be slow (made so here) is refused before calibration when the int8
    weights alone are over (600 outputs); 505 outputs are over only with the biases and
    multipliers: refused by the board check after compiling, as every quick build is."""
    import tinyc.build
    if slow:
        monkeypatch.setattr(tinyc.build, "SLOW_CALIBRATION_MACS", 0)
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.normal(0, 0.05, (wide, 1024)).astype(np.float32), "big_w"),
             numpy_helper.from_array(np.zeros(wide, np.float32), "big_b"),
             numpy_helper.from_array(rng.normal(0, 0.05, (10, wide)).astype(np.float32), "small_w"),
             numpy_helper.from_array(np.zeros(10, np.float32), "small_b")]
    nodes = [helper.make_node("Flatten", ["input"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "big_w", "big_b"], ["h"], name="big_fc", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "small_w", "small_b"], ["y"], name="small_fc",
                              transB=1)]
    g = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, [1, 1024, 1, 1])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(m, tmp_path / "wide.onnx")
    res = run(capsys, "build", tmp_path / "wide.onnx", "--board", "nucleo_f411re", "-o",
              tmp_path / "out", "--no-firmware")
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "flash: " in res.stderr and "SRAM breakdown" not in res.stderr
    listed = [ln for ln in res.stderr.splitlines() if "node " in ln and "'" in ln]
    if wide == 600 and slow:   # int8 weights only
        assert "weights alone need 620,400 B > 524,288 B" in res.stderr, res.stderr
        big, small = "614,400 B", "6,000 B"
        assert not (tmp_path / "out").exists()
    else:             # int8 weights + int32 biases (+ multipliers in the total)
        assert "flash: weights need" in res.stderr, res.stderr
        big, small = f"{wide * 1024 + wide * 4:,} B", f"{10 * wide + 40:,} B"
    assert "'big_fc'" in listed[0] and big in listed[0] and "Gemm" in listed[0], res.stderr
    assert "'small_fc'" in listed[1] and small in listed[1], res.stderr


def test_bad_scheme_files_and_unwritable_outputs(trained_build, good_model, capsys, tmp_path):
    (tmp_path / "list.json").write_text('{"weights": [1]}')
    (tmp_path / "binary.json").write_bytes(b"\x93NUMPY\xb5\xff")
    for scheme in ("list.json", "binary.json"):
        res = run(capsys, "build", good_model, *BOARD, "-o", tmp_path / "out", "--no-firmware",
                  "--train", tmp_path / scheme)
        assert_clean_failure(res, scheme)
    x = _npy(tmp_path / "x.npy", np.zeros((1, 3, 8, 8), np.float32))
    res = run(capsys, "emulate", trained_build, "--input", x, "--output",
              tmp_path / "missing" / "y.npy")
    assert_clean_failure(res, "--output", "does not exist")
    xy = _npz(tmp_path / "xy.npz", x=np.zeros((2, 3, 8, 8), np.float32), y=np.array([0, 1]))
    res = run(capsys, "emulate", trained_build, "--train-data", xy, "--save-params", tmp_path)
    assert_clean_failure(res, "--save-params", "is a folder")
    assert "epoch" not in res.stdout + res.stderr   # refused before training
    res = run(capsys, "report", trained_build, "--plot", tmp_path / "missing" / "p.png")
    assert_clean_failure(res, "--plot", "cannot write")


@pytest.mark.parametrize("edit", [{"colour": 1}, {"calib_limit": -1}, {"lr": "x"},
                                  {"input_shape": [1, 3, 4, 4, 4]}, {"model": None}])
def test_export_of_a_report_with_bad_build_options(edit, trained_build, capsys, tmp_path):
    rep = json.loads((trained_build / "report.json").read_text())
    rep["build_options"].update(edit)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text(json.dumps(rep))
    np.savez(tmp_path / "p.npz", nothing=np.zeros(1))
    res = run(capsys, "export", out, "--params", tmp_path / "p.npz", "-o", tmp_path / "m.onnx")
    assert_clean_failure(res, "not a tinyc report", list(edit)[0])


@pytest.mark.parametrize("part", ["inference.patch", "firmware", "ops[0].in_place"])
def test_report_with_broken_optional_parts(part, trained_build, capsys, tmp_path):
    rep = json.loads((trained_build / "report.json").read_text())
    if part == "inference.patch":
        rep["inference"]["patch"] = {"enabled": True}
    elif part == "firmware":
        rep["firmware"] = {"built": True}
    else:
        del rep["ops"][0]["in_place"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text(json.dumps(rep))
    assert_clean_failure(run(capsys, "report", out), "not a tinyc report")
