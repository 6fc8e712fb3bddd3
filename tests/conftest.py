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



@pytest.fixture(scope="session")
def real_board_training_build(small_nets, an386_dir, tmp_path_factory, request):
    """board id -> its folder: mbv2_block built (offline, not run) for a real board with the
    training scheme of an386_dir, a new 4-class head and 3 labelled samples in flash
    (samples.npz beside it, from test_firmware.labelled(3, classes=4, seed=2)). The firmware
    and storage tests of a board read the same build: made once per run (under xdist by the
    first worker that needs it, the others wait on its lock)."""
    import fcntl
    import numpy as np
    from test_firmware import labelled
    base = tmp_path_factory.getbasetemp()
    if hasattr(request.config, "workerinput"):   # the run's folder, above each worker's
        base = base.parent
    folder = base / "real_board_training"
    folder.mkdir(exist_ok=True)

    def build(board_id: str) -> Path:
        out = folder / board_id
        with open(folder / f"{board_id}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / f"{board_id}.stdout").is_file():   # written once built
                x, y = labelled(3, classes=4, seed=2)
                samples = folder / f"{board_id}.samples.npz"
                np.savez(samples, x=x, y=y)
                res = tinyc("build", small_nets["mbv2_block"], "--board", board_id, "-o", out,
                            "--calib", an386_dir / "calib.npy", "--train",
                            an386_dir / "scheme.json", "--num-classes", "4", "--samples", samples)
                (folder / f"{board_id}.stdout").write_text(res.stdout)
        return out
    return build


# ---------------------------------------------------------------- host builds, objects shared
# The C tests build hundreds of small models whose runtime files (tinyc/*.c, the same bytes for
# the same kernels and variant set) cost nearly all of gcc's time (conv2d.c at -O2: ~2 s, the
# model and the harness: 0.1 s). host_build() compiles each distinct runtime file once per worker
# and links it with each model; the same compiler, flags and link as build_host.
_OBJECTS: list[Path] = []   # the worker's object folder (set by the session fixture below)


@pytest.fixture(scope="session", autouse=True)
def _host_objects(tmp_path_factory):
    _OBJECTS.append(tmp_path_factory.mktemp("host_objects"))
    yield
    _OBJECTS.clear()


def host_build(out_dir, extra_flags=(), harness=None, exe_name=None) -> Path:
    """tinyc.targets.host.build_host with the runtime's objects cached by content: the key is
    the compiler, the flags, the source and every header of the generated tinyc/ folder (and
    model.h where the source includes it). The link is build_host's command with the objects in
    place of the runtime sources."""
    import hashlib
    import os
    from tinyc.targets import host
    from tinyc.targets.platformio import model_dir
    harness = Path(harness or host.HARNESS)
    exe_name = exe_name or host.EXE
    if not _OBJECTS:
        return host.build_host(out_dir, tuple(extra_flags), harness, exe_name)
    out = Path(out_dir)
    lib = model_dir(out)
    train = host.is_training_build(out)
    cc = host._compiler()
    flags = [*host.CFLAGS, *(host.TRAIN_CFLAGS if train else ()), *extra_flags]
    headers = b"".join(p.name.encode() + b"\0" + p.read_bytes()
                       for p in sorted((lib / "tinyc").glob("*.h")))
    model_h = (lib / "model.h").read_bytes()
    objects = []
    for src in sorted((lib / "tinyc").glob("*.c")):
        text = src.read_bytes()
        key = hashlib.sha256(repr((cc, flags, src.name)).encode() + b"\0" + text + b"\0" + headers
                             + (b"\0" + model_h if b"model.h" in text else b"")).hexdigest()
        obj = _OBJECTS[0] / f"{src.stem}-{key[:24]}.o"
        if not obj.is_file():
            tmp = obj.with_suffix(f".{os.getpid()}.tmp")
            res = subprocess.run([cc, *flags, "-I", str(lib), "-c", str(src), "-o", str(tmp)],
                                 capture_output=True, text=True)
            assert res.returncode == 0, f"{src.name} failed to compile:\n{res.stderr}"
            os.replace(tmp, obj)
        objects.append(str(obj))
    exe = out / exe_name
    tmp = out / f".{exe_name}.{os.getpid()}.tmp"
    res = subprocess.run([cc, *flags, "-I", str(lib), str(lib / "model.c"), *objects,
                          str(harness), "-o", str(tmp), *(("-lm",) if train else ())],
                         capture_output=True, text=True)
    assert res.returncode == 0, f"host build of {out} failed:\n{res.stderr}"
    os.replace(tmp, exe)
    return exe
