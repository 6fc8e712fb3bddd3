"""tinyc owns only what it made: output folders (marker, refusal of foreign folders, rebuilds,
refused builds, the lock), the recorded inputs of export, outputs checked before the work, child
processes that die with tinyc, and a closed stdout pipe."""
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_clean_failure, refused_report, shared_model, tinyc
from tinyc.targets.platformio import toolchain_missing

ROOT = Path(__file__).resolve().parents[1]
MARKER = ".tinyc-build.json"


def snapshot(folder: Path) -> dict:
    """Every file under `folder` (relative path -> bytes) and every folder (-> None)."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def build(net, out, *extra, check=True):
    return tinyc("build", net, "--board", "mps2_an386", "-o", out, "--no-firmware", *extra,
                 check=check)


def test_build_refuses_a_folder_it_did_not_make(small_nets, tmp_path):
    user = tmp_path / "project"
    (user / "src").mkdir(parents=True)
    (user / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (user / "model.c").write_text("/* mine */\n")
    (user / "platformio.ini").write_text("[env:mine]\n")
    before = snapshot(user)
    res = tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", user,
                check=False)
    assert_clean_failure(res, str(user), "not made by tinyc", "give another folder")
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert snapshot(user) == before


@pytest.mark.parametrize("case", ["empty", "file", "under_file", "uncreatable"])
def test_bad_output_paths_get_one_line_errors(case, small_nets, tmp_path):
    (tmp_path / "f.txt").write_text("a file\n")
    out, expect = {"empty": ("", "give the output folder"),
                   "file": (tmp_path / "f.txt", "is a file, not a folder"),
                   "under_file": (tmp_path / "f.txt" / "o", "is a file, not a folder"),
                   "uncreatable": ("/proc/tinyc-nope/o", "cannot create")}[case]
    res = build(small_nets["gray_odd"], out, check=False)
    assert_clean_failure(res, expect)
    assert len([ln for ln in res.stderr.splitlines() if "error" in ln]) == 1, res.stderr
    assert (tmp_path / "f.txt").read_text() == "a file\n"
    assert sorted(os.listdir(tmp_path)) == ["f.txt"]


def test_empty_folder_then_rebuild_replaces_only_tinycs_entries(small_nets, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    build(small_nets["mbv2_block"], out, "--export-tflite")
    marker = json.loads((out / MARKER).read_text())
    assert set(marker["entries"]) == {"model.c", "model.h", "tinyc", "report.json",
                                      "model.tflite"}
    (out / "notes.txt").write_text("my notes\n")
    (out / "mine").mkdir()
    (out / "mine" / "data.bin").write_bytes(b"\x00\x01")
    build(small_nets["gray_odd"], out)   # another model, no .tflite this time
    assert (out / "notes.txt").read_text() == "my notes\n"
    assert (out / "mine" / "data.bin").read_bytes() == b"\x00\x01"
    assert not (out / "model.tflite").exists()   # tinyc's, from the build before
    rep = json.loads((out / "report.json").read_text())
    assert rep["input"]["shape_nchw"][1] == 1   # gray_odd's
    assert sorted(os.listdir(out)) == sorted([MARKER, "model.c", "model.h", "tinyc",
                                              "report.json", "notes.txt", "mine"])


def test_emulate_never_runs_an_executable_whose_model_c_is_gone(small_nets, tmp_path):
    out = tmp_path / "o"
    build(small_nets["fc_only"], out)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 16, 1, 1), np.float32))
    tinyc("emulate", out, "--input", x, "--output", tmp_path / "y.npy")
    assert (out / "tinyc_host").is_file()
    (out / "model.c").unlink()
    res = tinyc("emulate", out, "--input", x, "--output", tmp_path / "y2.npy", check=False)
    assert_clean_failure(res, "no model.c")
    assert not (tmp_path / "y2.npy").exists()


def test_refused_build_leaves_the_previous_build_byte_identical(small_nets, tmp_path):
    out = tmp_path / "o"
    build(small_nets["mbv2_block"], out)
    (out / "notes.txt").write_text("mine\n")
    before = snapshot(out)
    board = (ROOT / "boards" / "mps2_an386.toml").read_text()
    assert "sram_bytes = 262144" in board
    (tmp_path / "tiny.toml").write_text(board.replace("sram_bytes = 262144", "sram_bytes = 9000")
                                        .replace('id = "mps2_an386"', 'id = "tiny"'))
    res = tinyc("build", small_nets["mbv2_block"], "--board", tmp_path / "tiny.toml", "-o", out,
                "--no-firmware", check=False)
    assert_clean_failure(res, "does not fit", "'tiny'", f"nothing was written to {out}")
    assert snapshot(out) == before
    rep = refused_report(res)
    assert rep["board"] == "tiny" and rep["inference"]["sram_bytes"] > 9000


def test_a_second_build_into_a_locked_folder_fails_at_once(small_nets, tmp_path):
    out = tmp_path / "o"
    build(small_nets["mbv2_block"], out)
    before = snapshot(out)
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 24), np.float32))
    fd = os.open(out, os.O_RDONLY)   # what a running build holds: an exclusive flock on it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        start = time.monotonic()
        res = build(small_nets["gray_odd"], out, check=False)
        assert_clean_failure(res, str(out), "another tinyc build is writing this folder")
        assert time.monotonic() - start < 30
        res = tinyc("emulate", out, "--input", tmp_path / "x.npy", "--output",
                    tmp_path / "y.npy", check=False)
        assert_clean_failure(res, "another tinyc build is writing this folder")
        assert snapshot(out) == before
    finally:
        os.close(fd)
    build(small_nets["gray_odd"], out)


def test_an_interrupted_build_leaves_the_previous_build_whole(small_nets, tmp_path):
    """Ctrl-C (SIGINT) while a larger model compiles in the staging folder: exit status 130,
    the previous build unchanged, the staging folder gone."""
    model = shared_model("mbv2-w0.35_96")
    out = tmp_path / "o"
    build(small_nets["mbv2_block"], out)
    before = snapshot(out)
    proc = subprocess.Popen([sys.executable, "-m", "tinyc.cli", "build", model, "--board",
                             "mps2_an386", "-o", out, "--no-firmware"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(n.startswith(".tinyc-staging-") for n in os.listdir(out)):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert snapshot(out) == before


@pytest.fixture(scope="module")
def train_build(small_nets, tmp_path_factory):
    d = tmp_path_factory.mktemp("owner_train")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4, 3, 32, 24)).astype(np.float32)
    np.save(d / "calib.npy", x)
    np.savez(d / "train.npz", x=x, y=np.arange(4) % 3)
    shutil.copy(small_nets["mbv2_block"], d / "model.onnx")
    tinyc("build", d / "model.onnx", "--board", "mps2_an386", "-o", d / "o", "--no-firmware",
          "--calib", d / "calib.npy", "--train", "last:1", "--num-classes", "3")
    return d


def test_export_refuses_a_replaced_or_missing_model_or_calibration(train_build, small_nets):
    d = train_build
    tinyc("emulate", d / "o", "--train-data", d / "train.npz", "--save-params", d / "p.npz")
    tinyc("export", d / "o", "--params", d / "p.npz", "-o", d / "t.onnx")
    assert (d / "t.onnx").stat().st_size > 0
    rep = json.loads((d / "o" / "report.json").read_text())["build_options"]
    assert len(rep["model_sha256"]) == 64 and len(rep["calib_sha256"]) == 64
    model, calib = d / "model.onnx", d / "calib.npy"
    saved_model, saved_calib = model.read_bytes(), calib.read_bytes()
    try:
        shutil.copy(small_nets["residual_chain"], model)   # same name, other weights
        res = tinyc("export", d / "o", "--params", d / "p.npz", "-o", d / "t2.onnx", check=False)
        assert_clean_failure(res, str(model), "changed since", "rebuild")
        model.unlink()
        res = tinyc("export", d / "o", "--params", d / "p.npz", "-o", d / "t2.onnx", check=False)
        assert_clean_failure(res, str(model), "missing", "rebuild")
        model.write_bytes(saved_model)
        np.save(calib, np.load(calib) * 2)
        res = tinyc("export", d / "o", "--params", d / "p.npz", "-o", d / "t2.onnx", check=False)
        assert_clean_failure(res, str(calib), "calibration data", "changed since")
        assert not (d / "t2.onnx").exists()
    finally:
        model.write_bytes(saved_model)
        calib.write_bytes(saved_calib)


def test_unwritable_save_params_fails_before_training(train_build):
    d = train_build
    start = time.monotonic()
    res = tinyc("emulate", d / "o", "--train-data", d / "train.npz", "--save-params",
                "/proc/tinyc-nope/p.npz", check=False)
    assert_clean_failure(res, "/proc/tinyc-nope/p.npz", "does not exist")
    assert "epoch" not in res.stdout + res.stderr   # no step was taken
    assert time.monotonic() - start < 30
    (d / "p_dir.npz").mkdir()   # a folder where the file would go
    res = tinyc("emulate", d / "o", "--train-data", d / "train.npz", "--save-params",
                d / "p_dir.npz", check=False)
    assert_clean_failure(res, "is a folder")
    assert "epoch" not in res.stdout + res.stderr


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_tinyc_leaves_no_child_process(how, small_nets, tmp_path):
    """A fake C compiler (CC) that starts a grandchild and waits: killing `tinyc emulate` while
    it runs must take both down (SIGTERM: the whole process group; SIGKILL: the direct child,
    through PR_SET_PDEATHSIG)."""
    out = tmp_path / "o"
    build(small_nets["gray_odd"], out)
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 17, 13), np.float32))
    pids = tmp_path / "pids"
    cc = tmp_path / "slow-cc"
    cc.write_text(f"#!/bin/sh\nsleep 300 &\necho $$ $! > {pids}.tmp\nmv {pids}.tmp {pids}\nwait\n")
    cc.chmod(0o755)
    proc = subprocess.Popen([sys.executable, "-m", "tinyc.cli", "emulate", out, "--input",
                             tmp_path / "x.npy", "--output", tmp_path / "y.npy"],
                            env={**os.environ, "CC": str(cc)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not pids.exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        child, grandchild = map(int, pids.read_text().split())
        proc.send_signal(how)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == (128 + how if how == signal.SIGTERM else -how), err
        assert "Traceback" not in err
        watched = [child, grandchild] if how == signal.SIGTERM else [child]
        deadline = time.monotonic() + 10
        while not all(_gone(p) for p in watched):
            assert time.monotonic() < deadline, f"still running: {watched}"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if pids.exists():   # the grandchild of the SIGKILL case: its sleep outlives tinyc
            for pid in map(int, pids.read_text().split()):
                if not _gone(pid):
                    os.kill(pid, signal.SIGKILL)
    assert not (out / "tinyc_host").exists()


def _with_closed_stdout(*args) -> subprocess.CompletedProcess:
    """Runs tinyc with stdout a pipe whose reader is already gone (`tinyc ... | head -0`)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "tinyc.cli", *map(str, args)],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)


def test_a_closed_stdout_pipe_ends_tinyc_quietly(small_nets, tmp_path):
    build(small_nets["gray_odd"], tmp_path / "o")
    for args in (("boards",), ("report", tmp_path / "o")):
        res = _with_closed_stdout(*args)
        assert res.returncode == 141 and res.stderr == "", (args, res.stderr)
    # the same through a shell: `tinyc boards | head -1`
    res = subprocess.run(f"{sys.executable} -m tinyc.cli boards | head -1", shell=True,
                         capture_output=True, text=True, timeout=120)
    assert res.stdout.startswith("id ") and res.stderr == ""


@pytest.mark.skipif(toolchain_missing() is not None or shutil.which("qemu-system-arm") is None,
                    reason="needs the Arm toolchain, PlatformIO and QEMU")
def test_firmware_built_in_staging_runs_from_the_folder(small_nets, tmp_path):
    """The firmware is built in the staging folder, then moved: report, flash --dry-run,
    emulate --qemu and flash still work from the output folder, and `tinyc flash out | head`
    (PlatformIO runs the firmware in QEMU) ends instead of hanging."""
    out = tmp_path / "o"
    tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", out)
    assert not [n for n in os.listdir(out) if n.startswith(".tinyc-staging")]
    assert "firmware   RAM" in tinyc("report", out).stdout
    assert f"-d {out.resolve()} " in tinyc("flash", out, "--dry-run").stdout
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 32, 24), np.float32))
    res = tinyc("emulate", out, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy",
                "--qemu")
    assert "instructions per inference" in res.stdout
    res = _with_closed_stdout("flash", out)
    assert res.returncode == 141 and "Traceback" not in res.stderr, res.stderr
    assert tinyc("flash", out).stdout.count("sample 0 instructions") == 1
