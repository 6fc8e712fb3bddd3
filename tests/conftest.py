import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

SHARED_MODELS = TESTS.parents[1] / "shared" / "models"
SHARED_NAMES = ["mbv2-w0.35_96", "mbv2-w0.35_128", "proxyless-w0.3_96", "proxyless-w0.3_128",
                "mcunet-5fps_96", "mcunet-5fps_128"]
# the same, the 128 px ones as benchmarks (`-m benchmark`): the default suite checks each net
# once, at 96 px, and stays within CI's time
SHARED_96_TESTED = [n if n.endswith("_96") else pytest.param(n, marks=pytest.mark.benchmark)
                    for n in SHARED_NAMES]


def shared_model(name: str) -> Path:
    path = SHARED_MODELS / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared pretrained models live in ../shared/models "
                    "beside the repository (absent in a plain clone)")
    return path


@pytest.fixture(scope="session")
def small_nets(tmp_path_factory):
    """The six test networks of tests/nets.py written as .onnx files: name -> path."""
    from nets import save_all
    return save_all(tmp_path_factory.mktemp("nets"))


def tinyc(*args, check=True, timeout=600):
    """Run the tinyc command line in a subprocess (as users do)."""
    res = subprocess.run([sys.executable, "-m", "tinyc.cli", *map(str, args)],
                         capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"tinyc {' '.join(map(str, args))} failed:\n{res.stdout}\n{res.stderr}")
    return res


def assert_clean_failure(res, *fragments):
    """Exit status 1, no traceback, and a message that says what is wrong."""
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    for f in fragments:
        assert f in res.stderr, res.stderr


def refused_report(res) -> dict:
    """The full report of a refused build: in the file its error message names (a refused build
    writes nothing into its output folder)."""
    m = re.search(r"the full report is in (\S+)\)", res.stderr)
    assert m, res.stderr
    path = Path(m.group(1))
    try:
        return json.loads(path.read_text())
    finally:
        path.unlink()


# mbv2_block built for mps2_an386 through the CLI, once per worker: the firmware, device link,
# storage and profile tests all use the same two builds (none writes into them; those that
# change a build copy it first)
@pytest.fixture(scope="session")
def an386_dir(tmp_path_factory):
    """The builds' folder with their inputs: calib.npy (6 random inputs) and scheme.json."""
    import numpy as np
    from test_firmware import TRAIN_SCHEME, inputs
    d = tmp_path_factory.mktemp("an386")
    np.save(d / "calib.npy", inputs(6, seed=0))
    (d / "scheme.json").write_text(json.dumps(TRAIN_SCHEME))
    return d


@pytest.fixture(scope="session")
def an386_inference_build(small_nets, an386_dir):
    """an386_dir / "inf": an inference build (softmax output)."""
    res = tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o",
                an386_dir / "inf", "--calib", an386_dir / "calib.npy")
    (an386_dir / "inf.stdout").write_text(res.stdout)   # what the build printed
    return an386_dir / "inf"


@pytest.fixture(scope="session")
def an386_training_build(small_nets, an386_dir):
    """an386_dir / "train": a training build, a partial scheme (split weights) and a new 4-class
    head at lr 0.05."""
    tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", an386_dir / "train",
          "--calib", an386_dir / "calib.npy", "--train", an386_dir / "scheme.json",
          "--num-classes", "4", "--lr", "0.05")
    return an386_dir / "train"
