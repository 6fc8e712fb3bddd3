"""The central claim: for the shared pretrained models and the six test networks, the numpy
reference, the generated C (host gcc), TFLite's reference kernels (LiteRT BUILTIN_REF) and
TFLite Micro give bit-identical int8 outputs, through the same `tinyc build` path users run."""
import numpy as np
import pytest

from conftest import SHARED_96_TESTED, host_build, shared_model
from nets import ALL_NETS
from tinyc.build import BuildOptions, build
from tinyc.pipeline import check_model_input, import_float, quantize_input
from tinyc.passes.quantize import quantize
from tinyc.reference.int8 import run_int8
from tinyc.targets.boards import load_board
from tinyc.targets.host import run_host


def four_way(model_path, tmp_path, n_inputs, seed=0):
    from tinyc.export.oracles import run_litert_ref, run_tflm

    g = import_float(str(model_path))
    shape = tuple(g.meta["input_nchw"][1:])
    rng = np.random.default_rng(seed)
    calib = rng.uniform(-1, 1, (8,) + shape).astype(np.float32)
    np.save(tmp_path / "calib.npy", calib)
    build(str(model_path), load_board("mps2_an386"), str(tmp_path / "out"),
          BuildOptions(calib=str(tmp_path / "calib.npy"), export_tflite=True))
    gq = quantize(g, check_model_input(g, calib, "calib", batch=True))
    tfl = (tmp_path / "out" / "model.tflite").read_bytes()
    # inputs a little outside the calibration range exercise saturation too
    x = rng.uniform(-1.3, 1.3, (n_inputs,) + shape).astype(np.float32)
    xq = quantize_input(gq, check_model_input(gq, x, "x", batch=True))
    host_build(tmp_path / "out")   # the runtime's objects shared (conftest)
    c_out = run_host(tmp_path / "out", xq).reshape(n_inputs, -1)
    for i in range(n_inputs):
        ref = run_int8(gq, xq[i:i + 1])[gq.outputs[0]].ravel()
        assert np.array_equal(c_out[i], ref), f"input {i}: generated C != reference"
        assert np.array_equal(run_litert_ref(tfl, xq[i:i + 1]).ravel(), ref), \
            f"input {i}: LiteRT reference kernels != reference"
        assert np.array_equal(run_tflm(tfl, xq[i:i + 1]).ravel(), ref), \
            f"input {i}: TFLite Micro != reference"


@pytest.mark.parametrize("name", sorted(ALL_NETS))
def test_small_net_four_way(name, small_nets, tmp_path):
    four_way(small_nets[name], tmp_path, n_inputs=4)


@pytest.mark.parametrize("name", SHARED_96_TESTED)
def test_shared_model_four_way(name, tmp_path):
    four_way(shared_model(name), tmp_path, n_inputs=2)
