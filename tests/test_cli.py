"""The command line end to end: build, emulate, report, boards, and clean failures."""
import json

import numpy as np
import pytest

from conftest import assert_clean_failure, refused_report, shared_model, tinyc
from tinyc.pipeline import check_model_input, quantize_input
from tinyc.reference.int8 import run_int8




@pytest.fixture(scope="module")
def built(small_nets, tmp_path_factory):
    """mbv2_block built with .npy calibration and a .tflite export."""
    out = tmp_path_factory.mktemp("build")
    calib = out / "calib.npy"
    np.save(calib, np.random.default_rng(0).uniform(-1, 1, (6, 3, 32, 24)).astype(np.float32))
    res = tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", out / "o",
                "--calib", calib, "--export-tflite")
    # no warning, except that the firmware could not be built on a machine without the toolchain
    assert "arena" in res.stdout
    assert "warning" not in res.stderr.replace("warning: firmware project written but not built", "")
    return out / "o"


def test_build_writes_sources_and_report(built):
    # the default build is a PlatformIO project with the model as a library (tests/test_firmware.py)
    for f in ("lib/tinyc_model/model.c", "lib/tinyc_model/model.h", "platformio.ini",
              "src/main.c", "report.json", "model.tflite"):
        assert (built / f).is_file(), f
    rep = json.loads((built / "report.json").read_text())
    for key in ("board", "sram_limit_bytes", "flash_limit_bytes", "weights_bytes", "macs", "ops"):
        assert key in rep
    assert rep["board"] == "mps2_an386" and rep["sram_limit_bytes"] == 262144
    assert rep["inference"]["arena_bytes"] >= rep["inference"]["activation_peak_bytes"] > 0
    assert rep["macs"] == sum(r["macs"] for r in rep["ops"]) > 0
    # the net has 11 layers; a patch schedule runs its first split_index + 1 once per patch
    patch = rep["inference"]["patch"]
    first_patch = patch["split_index"] + 1 if patch["enabled"] else 0
    assert len([r for r in rep["ops"] if r["patch"] is None]) + first_patch == 11
    header = (built / "lib" / "tinyc_model" / "model.h").read_text()
    assert "tinyc_infer(const int8_t *in, int8_t *out)" in " ".join(header.split())


def test_emulate_float_and_int8_inputs_match_reference(built, small_nets, tmp_path):
    from tinyc.build import BuildOptions  # noqa: F401  (same package the CLI uses)
    from tinyc.pipeline import import_float
    from tinyc.passes.quantize import quantize

    g = import_float(str(small_nets["mbv2_block"]))
    calib = np.load(built.parent / "calib.npy")
    gq = quantize(g, check_model_input(g, calib, "calib", batch=True))
    x = np.random.default_rng(5).uniform(-1, 1, (3, 3, 32, 24)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    tinyc("emulate", built, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.int8 and y.shape == (3, 10)
    xq = quantize_input(gq, check_model_input(gq, x, "x", batch=True))
    expect = np.stack([run_int8(gq, xi[None])[gq.outputs[0]][0] for xi in xq])
    assert np.array_equal(y, expect)
    # int8 input is taken as already quantized (NCHW layout, like the float one)
    np.savez(tmp_path / "xq.npz", x=np.moveaxis(xq, -1, 1))
    tinyc("emulate", built, "--input", tmp_path / "xq.npz", "--output", tmp_path / "y2.npy",
          "--dequantize")
    y2 = np.load(tmp_path / "y2.npy")
    rep = json.loads((built / "report.json").read_text())
    assert y2.dtype == np.float32
    np.testing.assert_array_equal(
        y2, (expect.astype(np.float32) - rep["output"]["zero_point"]) * np.float32(rep["output"]["scale"]))


def test_report_and_plot(built, tmp_path):
    res = tinyc("report", built, "--plot", tmp_path / "mem.png")
    assert "conv2d" in res.stdout
    png = (tmp_path / "mem.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_boards_lists_memory():
    out = tinyc("boards").stdout
    assert "mps2_an386" in out and "nucleo_f411re" in out and "256 KB" in out and "128 KB" in out


def test_no_calib_warns_loudly(small_nets, tmp_path):
    res = tinyc("build", small_nets["fc_only"], "--board", "mps2_an386", "-o", tmp_path / "o")
    assert "warning" in res.stderr and "--calib" in res.stderr


def test_image_folder_calibration(small_nets, tmp_path):
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", tmp_path / "o",
          "--calib", folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    assert_clean_failure(tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o",
                               tmp_path / "o2", "--calib", folder, check=False), "broken.jpg")


def test_too_big_for_board_is_refused_with_breakdown(tmp_path):
    model = shared_model("mbv2-w0.35_128")
    res = tinyc("build", model, "--board", "nucleo_f411re", "-o", tmp_path / "o", "--patch", "off",
                check=False)
    assert_clean_failure(res, "nucleo_f411re", "does not fit", "arena", "stack reserve")
    assert not (tmp_path / "o").exists()   # a refused build writes nothing there
    rep = refused_report(res)
    assert rep["inference"]["sram_bytes"] > rep["sram_limit_bytes"]
    # the default patch schedule makes the same model fit the 128 KB board's SRAM (the model
    # library alone: with the demo firmware, its one 48 KB sample and the DSP kernels' code
    # leave the 512 KB of flash a few KB short)
    res = tinyc("build", model, "--board", "nucleo_f411re", "-o", tmp_path / "auto",
                "--no-firmware")
    assert "schedule   patches" in res.stdout
    rep = json.loads((tmp_path / "auto" / "report.json").read_text())
    assert rep["inference"]["sram_bytes"] <= rep["sram_limit_bytes"]


@pytest.mark.parametrize("case", ["unknown_board", "missing_model", "not_onnx", "bad_calib_shape",
                                  "corrupt_calib", "nan_calib", "bad_input_shape"])
def test_bad_inputs_fail_cleanly(case, small_nets, tmp_path):
    net = small_nets["gray_odd"]
    args = ["build", net, "--board", "mps2_an386", "-o", tmp_path / "o"]
    expect = []
    if case == "unknown_board":
        args[3], expect = "arduino_uno", ["unknown board", "mps2_an386"]
    elif case == "missing_model":
        args[1], expect = tmp_path / "nope.onnx", ["no such file"]
    elif case == "not_onnx":
        (tmp_path / "x.onnx").write_bytes(b"\x00\x01garbage" * 100)
        args[1], expect = tmp_path / "x.onnx", ["x.onnx"]
    elif case == "bad_calib_shape":
        np.save(tmp_path / "c.npy", np.zeros((2, 3, 17, 13), np.float32))
        args += ["--calib", tmp_path / "c.npy"]
        expect = ["(N, 1, 17, 13)"]
    elif case == "corrupt_calib":
        (tmp_path / "c.npy").write_bytes(b"\x93NUMPY garbage")
        args += ["--calib", tmp_path / "c.npy"]
        expect = ["c.npy"]
    elif case == "nan_calib":
        c = np.zeros((2, 1, 17, 13), np.float32)
        c[1, 0, 3, 3] = np.nan
        np.save(tmp_path / "c.npy", c)
        args += ["--calib", tmp_path / "c.npy"]
        expect = ["NaN"]
    elif case == "bad_input_shape":
        args += ["--input-shape", "1x3x17"]
        res = tinyc(*args, check=False)
        assert_clean_failure(res, "--input-shape", "1x3x17")
        assert len(res.stderr.splitlines()) == 1
        return
    assert_clean_failure(tinyc(*args, check=False), *expect)


def test_emulate_rejects_bad_inputs(built, tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((1, 3, 8, 8), np.float32))
    assert_clean_failure(tinyc("emulate", built, "--input", tmp_path / "wrong.npy", "--output",
                               tmp_path / "y.npy", check=False), "(N, 3, 32, 24)")
    np.save(tmp_path / "u8.npy", np.zeros((1, 3, 32, 24), np.uint8))
    assert_clean_failure(tinyc("emulate", built, "--input", tmp_path / "u8.npy", "--output",
                               tmp_path / "y.npy", check=False), "uint8")
    assert_clean_failure(tinyc("emulate", tmp_path, "--input", tmp_path / "u8.npy", "--output",
                               tmp_path / "y.npy", check=False), "report.json")


def test_rebuild_into_same_folder_never_runs_the_old_model(small_nets, tmp_path):
    """A second build with other calibration into the same folder must change what emulate runs."""
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 32, 24)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    outputs = []
    for k, hi in enumerate((0.2, 3.0)):
        np.save(tmp_path / "c.npy", np.random.default_rng(k).uniform(-hi, hi, (4, 3, 32, 24)).astype(np.float32))
        tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", tmp_path / "o",
              "--calib", tmp_path / "c.npy", "--no-firmware")
        tinyc("emulate", tmp_path / "o", "--input", tmp_path / "x.npy", "--output", tmp_path / f"y{k}.npy")
        tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", tmp_path / f"fresh{k}",
              "--calib", tmp_path / "c.npy", "--no-firmware")
        tinyc("emulate", tmp_path / f"fresh{k}", "--input", tmp_path / "x.npy", "--output", tmp_path / f"f{k}.npy")
        outputs.append((np.load(tmp_path / f"y{k}.npy"), np.load(tmp_path / f"f{k}.npy")))
    for same_folder, fresh in outputs:
        assert np.array_equal(same_folder, fresh)
    assert not np.array_equal(outputs[0][1], outputs[1][1]), "the two calibrations should differ"
