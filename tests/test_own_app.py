"""An application of the user's own (examples/own_app/main.c) embedding lib/tinyc_model of a
training build serves the device link and the persistent storage: built for mps2_an386 in place
of the generated demo's src/main.c, run under QEMU, it answers info, infer (as the host build),
train, save; after a power cut (QEMU killed) it restores what it learned."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from conftest import tinyc
from test_firmware import needs_qemu, needs_toolchain
from tinyc import procs
from tinyc.cli import model_inputs
from tinyc.targets.boards import load_board
from tinyc.targets.elf import Elf
from tinyc.targets.firmware_train import unpack_params
from tinyc.targets.host import HostTrainer
from tinyc.targets.platformio import ELF_PATH, link_build_id, run_pio
from tinyc.targets.qemu import QemuLink

ROOT = Path(__file__).resolve().parents[1]
pytestmark = needs_toolchain


def own_app(tmp_path, board: str) -> Path:
    """The digits net of the demo as a training build for `board`, then the user's project:
    the model and board libraries of that build, main.c of their own, built with PlatformIO."""
    sys.path.insert(0, str(ROOT / "examples"))
    from digits_net import build, new_task
    (x_learn, _), _ = new_task(seed=0)
    np.save(tmp_path / "calib.npy", x_learn[:64])
    tinyc("build", build(tmp_path / "digits_net.onnx"), "--board", board, "-o",
          tmp_path / "out", "--calib", tmp_path / "calib.npy", "--train", "last:1",
          "--num-classes", "5")
    app = tmp_path / "app"
    shutil.copytree(tmp_path / "out", app, ignore=shutil.ignore_patterns(".pio", ".pio-core"))
    shutil.copy(ROOT / "examples" / "own_app" / "main.c", app / "src" / "main.c")
    run_pio(app)
    assert (app / ELF_PATH).is_file()
    return app


def test_own_application_builds_and_links_for_the_nano_33_ble(tmp_path):
    """A real board with flash storage (nRF52840): built and linked, not run."""
    app = own_app(tmp_path, "nano33ble")
    symbols = {s.name for s in Elf(app / ELF_PATH).symbols()}
    assert {"main", "tinyc_link_poll", "tinyc_store_save", "tinyc_train_step"} <= symbols


@needs_qemu
def test_own_application_serves_the_link_and_storage(tmp_path):
    app = own_app(tmp_path, "mps2_an386")
    from digits_net import new_task
    (x_learn, y_learn), (x_test, _) = new_task(seed=0)
    rep = json.loads((app / "report.json").read_text())
    table = json.loads((app / "lib" / "tinyc_model" / "train_params.json").read_text())
    xq = model_inputs(rep, x_test[:4], "x")
    lq = model_inputs(rep, x_learn[:6], "x")
    board = load_board("mps2_an386")
    flash = tmp_path / "own_app_flash.bin"   # the app's flash file, in QEMU's working folder
    with QemuLink(app, board, rep, timeout=20, storage=flash) as q:
        dev = q.device
        info = dev.check_build(app)
        assert info.build_id == link_build_id(app / "lib" / "tinyc_model" / "model.c")
        assert info.training and info.storage and info.classes == 5
        assert dev.storage().loaded is None
        y_built = np.stack([dev.infer(x.reshape(-1))[0] for x in xq])
        answers = [dev.train(x.reshape(-1), int(y), 0.03) for x, y in zip(lq, y_learn[:6])]
        y_trained = np.stack([dev.infer(x.reshape(-1))[0] for x in xq])
        saved = dev.save()
        params = dev.read_params()
        procs.kill(q.proc)                 # power cut
        console = "".join(q.console)
    assert "own app: nothing saved" in console
    assert [a.step for a in answers] == list(range(1, 7)) and all(a.cost > 0 for a in answers)
    assert (saved.loaded, saved.loaded_seq) == (0, 1)
    with QemuLink(app, board, rep, timeout=20, storage=flash) as q:
        dev = q.device
        restored = dev.storage()
        assert dev.read_params() == params and dev.step() == 6
        y_restart = np.stack([dev.infer(x.reshape(-1))[0] for x in xq])
        console = "".join(q.console)
    assert "own app: restored the saved parameters" in console
    assert (restored.loaded, restored.loaded_seq) == (0, 1)
    assert np.array_equal(y_restart, y_trained)
    # the outputs are the host build's, with the built and with the trained parameters
    with HostTrainer(tmp_path / "out") as t:
        assert np.array_equal(t.infer(xq).reshape(len(xq), -1), y_built)
        t.set_params(unpack_params(params, table))
        assert np.array_equal(t.infer(xq).reshape(len(xq), -1), y_trained)
    assert not np.array_equal(y_built, y_trained)
