"""Models no test was written for: random architectures (tests/random_nets.py) go through the
whole path — ONNX import, calibration, quantization, generated C on the host, .tflite export —
and the numpy reference, the C code, TFLite's reference kernels and TFLite Micro agree bit for bit."""
import numpy as np
import onnx
import pytest

from random_nets import random_net
from tinyc.build import BuildOptions, build
from tinyc.errors import UnsupportedError
from tinyc.pipeline import check_model_input, import_float, quantize_input
from tinyc.passes.quantize import quantize
from tinyc.reference.int8 import run_int8
from tinyc.targets.boards import load_board
from tinyc.targets.host import run_host
from conftest import host_build

# 40 random architectures in the default suite (~1.5 s each of build, gcc and the oracles), 20
# more as benchmarks (`-m benchmark`)
SEEDS = [s if s < 40 else pytest.param(s, marks=pytest.mark.benchmark) for s in range(60)]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_net_bit_exact_four_ways(seed, tmp_path):
    from tinyc.export.oracles import run_litert_ref, run_tflm

    model = random_net(seed)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    calib = rng.uniform(-1, 1, [8] + shape[1:]).astype(np.float32)
    np.save(tmp_path / "calib.npy", calib)
    try:
        build(str(path), load_board("mps2_an386"), str(tmp_path / "out"),
              BuildOptions(calib=str(tmp_path / "calib.npy"), export_tflite=True))
    except UnsupportedError as e:
        # the only thing TFLite cannot express: average pooling that excludes padding with
        # pads TFLite's SAME would not choose
        assert "count_include_pad" in str(e) or "AveragePool" in str(e), e
        pytest.skip(f"not expressible in TFLite: {e}")
    g = import_float(str(path))
    gq = quantize(g, check_model_input(g, calib, "calib", batch=True))
    tfl = (tmp_path / "out" / "model.tflite").read_bytes()
    x = rng.uniform(-1.2, 1.2, [3] + shape[1:]).astype(np.float32)
    xq = quantize_input(gq, check_model_input(gq, x, "x", batch=True))
    host_build(tmp_path / "out")   # the runtime's objects shared (conftest)
    c_out = run_host(tmp_path / "out", xq)
    for i in range(len(xq)):
        ref = run_int8(gq, xq[i:i + 1])[gq.outputs[0]].ravel()
        assert np.array_equal(c_out.reshape(len(xq), -1)[i], ref), "generated C != reference"
        assert np.array_equal(run_litert_ref(tfl, xq[i:i + 1]).ravel(), ref), "TFLite ref != reference"
        assert np.array_equal(run_tflm(tfl, xq[i:i + 1]).ravel(), ref), "TFLM != reference"
