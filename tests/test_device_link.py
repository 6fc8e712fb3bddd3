"""The device link (runtime_c/src/link, compiler/device.py): the firmware of an inference and of a
training build under QEMU, talked to over its UART0 (a pty) with the host API and `tinyc device`.
Outputs and trained parameters are compared bit for bit with the host build (gcc), broken and
hostile frames get error answers and leave the device working."""
import json
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_clean_failure, tinyc
from test_firmware import inputs, labelled, needs_qemu, needs_toolchain
from tinyc import device as dv
from tinyc.cli import model_inputs
from tinyc.targets.boards import load_board
from tinyc.targets.firmware_train import training_order
from tinyc.targets.host import HostTrainer, run_host
from tinyc.targets.platformio import link_build_id
from tinyc.targets.qemu import QemuLink

pytestmark = [needs_toolchain, needs_qemu]
LR = 0.05


@pytest.fixture(scope="module")
def builds(an386_dir, an386_inference_build, an386_training_build):
    """mbv2_block for mps2_an386 (conftest's session builds): an inference build (inf/), and a
    training build (train/, at lr LR) whose scheme trains some conv layers on part of their
    input channels (split weights); beside them calib.npy and scheme.json."""
    assert an386_training_build == an386_dir / "train" and LR == 0.05
    return an386_dir


def report(out) -> dict:
    return json.loads((Path(out) / "report.json").read_text())


def link(out):
    return QemuLink(out, load_board("mps2_an386"), report(out), timeout=20)


def table(out) -> list:
    return json.loads((Path(out) / "lib" / "tinyc_model" / "train_params.json").read_text())


def test_frame_layout_and_crc():
    """The frame the host sends, byte by byte; the CRC is zlib's CRC-32 of version..payload."""
    f = dv.encode_frame(dv.INFER, b"\x01\x02")
    assert f[:5] == bytes([0xA5, 1, 2, 2, 0]) and f[5:7] == b"\x01\x02"
    assert struct.unpack("<I", f[7:])[0] == zlib.crc32(bytes([1, 2, 2, 0, 1, 2]))
    assert zlib.crc32(b"123456789") == 0xCBF43926   # the check value the C table must match


def test_connect_waits_longer_at_each_attempt(monkeypatch):
    """connect() doubles each attempt's wait: a device still waiting for the rest of a cut
    frame takes a request sent meanwhile as more of that frame, so equal short attempts on a
    slow device (an emulator under load) could keep it waiting for ever."""
    from tinyc.errors import TinycError
    waits = []

    def silent(self, timeout=None):
        waits.append(timeout)
        if len(waits) < 4:
            raise TinycError("no answer")
        return "answered"

    monkeypatch.setattr(dv.Device, "info", silent)
    monkeypatch.setattr(dv.time, "sleep", lambda s: None)
    with dv.Device("loop://", timeout=60) as dev:
        assert dev.connect(attempt_seconds=0.5) == "answered"
    assert waits == [0.5, 1.0, 2.0, 4.0]


def test_host_side_refuses_broken_answers():
    """A device (here pyserial's loop:// echo) that answers garbage: one-line TinycErrors, no
    crash, no hang past the timeout."""
    from tinyc.errors import TinycError
    with dv.Device("loop://", timeout=0.5) as dev:
        with pytest.raises(TinycError, match="answered type 0x01"):   # its own request echoed
            dev.request(dv.INFO)
        bad = bytearray(dv.encode_frame(dv.INFO | dv.ANSWER, b"x"))
        bad[-1] ^= 1
        dev.send_raw(bytes(bad))
        with pytest.raises(TinycError, match="CRC mismatch"):
            dev.read_frame()
        dev.send_raw(dv.encode_frame(dv.INFO | dv.ANSWER, b"x", version=9))
        with pytest.raises(TinycError, match="protocol version 9"):
            dev.read_frame()
        dev._serial.reset_input_buffer()
        # answers of the wrong size (each read before the echo of its own request)
        dev._info = dv.DeviceInfo(1, 1, 256, 0, 4, 2, 0, 0, 4, 8, 1, 8, 256)
        for kind, payload, call in [
                (dv.INFO, b"\x01" * 5, lambda: dev.info()),
                (dv.STEP, b"\x01", lambda: dev.step()),
                (dv.TRAIN, b"", lambda: dev.train(np.zeros(4, np.int8), 0, 0.1)),
                (dv.INFER, b"\x01" * 3, lambda: dev.infer(np.zeros(4, np.int8))),
                (dv.STATS, b"\x00" * 10, lambda: dev.stats()),
                (dv.STORAGE, b"\x00", lambda: dev.storage()),
                (dv.PARAMS_READ, b"\x00" * 4, lambda: dev.read_params())]:
            dev.send_raw(dv.encode_frame(kind | dv.ANSWER, payload))
            with pytest.raises(TinycError, match="malformed"):
                call()
            dev._serial.reset_input_buffer()
        dev.send_raw(dv.encode_frame(dv.ERROR, b"\x07"))
        with pytest.raises(TinycError, match="malformed error answer"):
            dev.request(dv.INFO)
        dev._serial.reset_input_buffer()
        # an error answer (after a console's text) raises DeviceError naming the problem
        dev.send_raw(b"text of a console\r\n" + dv.encode_frame(dv.ERROR, b"\x07\x03bad label"))
        with pytest.raises(dv.DeviceError, match=r"refused 'train': bad argument \(bad label\)"):
            dev.request(dv.INFO)
        dev._serial.reset_input_buffer()
        t0 = time.monotonic()
        with pytest.raises(TinycError, match="no answer from the device"):
            dev.read_frame()
        assert time.monotonic() - t0 < 3
        dev._info = dv.DeviceInfo(1, 0, 256, 0, 4, 2, 0, 0, 0, 0, 0, 0, 256)
        with pytest.raises(TinycError, match="int8"):
            dev.infer(np.zeros(4, np.float32))
        with pytest.raises(TinycError, match="holds 3 values"):
            dev.infer(np.zeros(3, np.int8))
    with pytest.raises(TinycError, match="cannot open the device port"):
        dv.Device("/dev/no-such-port")


def test_inference_build_infers_over_the_link_like_the_host(builds):
    out = builds / "inf"
    rep = report(out)
    xq = model_inputs(rep, inputs(3, seed=5), "x")
    with link(out) as q:
        info = q.device.check_build(out)
        assert info.build_id == link_build_id(out / "lib" / "tinyc_model" / "model.c")
        assert (info.input_size, info.output_size) == (xq[0].size, int(np.prod(rep["output"]["shape"])))
        assert not info.training and info.unit == "instructions" and info.max_payload == 256
        # the link's RAM: small, static, in the build report and the firmware's checked figures
        ln = rep["firmware"]["link"]
        assert ln["rx_buffer_bytes"] == info.link_buffer_bytes == 256
        assert 256 < ln["ram_bytes"] < 400 and 1000 < ln["flash_bytes"] < 6000
        assert ln["ram_bytes"] < rep["firmware"]["ram_bytes"] - rep["firmware"]["arena_bytes"]
        got = [q.device.infer(x.reshape(-1)) for x in xq]
        # a training request to an inference build: refused, the device goes on
        with pytest.raises(dv.DeviceError, match="not supported in this build"):
            q.device.train(xq[0].reshape(-1), 0, 0.01)
        with pytest.raises(dv.DeviceError, match="not supported"):
            q.device.request(dv.PARAMS_READ, struct.pack("<IH", 0, 4))
        with pytest.raises(dv.DeviceError, match="no persistent storage in this build"):
            q.device.save()
        again, _ = q.device.infer(xq[0].reshape(-1))
    host = run_host(out, xq).reshape(len(xq), -1)
    assert np.array_equal(np.stack([y for y, _ in got]), host)
    assert np.array_equal(again, host[0])
    assert all(cost > 1000 for _, cost in got)


def test_training_over_the_link_equals_the_host_build_bit_for_bit(builds):
    """Steps sent one by one over the link in the order of `tinyc emulate --train-data`, then the
    parameters pulled in chunks: equal to HostTrainer's after the same steps, bit for bit; the
    losses to 1e-6 (newlib's logf and glibc's may differ in the last bit), the guard's counters
    equal."""
    out = builds / "train"
    rep = report(out)
    x, y = labelled(6)
    xq = model_inputs(rep, x, "x")
    order = training_order(len(x), 2)
    with link(out) as q:
        dev = q.device
        info = dev.check_build(out)
        assert info.training and info.classes == 4 and info.params == len(table(out))
        assert info.param_bytes == sum(p["bytes"] for p in table(out))
        initial = dev.pull(table(out))
        answers = [dev.train(xq[i].reshape(-1), int(y[i]), LR) for i in order]
        params = dev.pull(table(out))
        stats = dev.stats()
        y_dev, _ = dev.infer(xq[0].reshape(-1))
    with HostTrainer(out) as t:
        assert all(np.array_equal(initial[k], v) for k, v in t.params().items())
        losses = t.train(xq[order], y[order], LR)
        host, guard = t.params(), t.guard_stats()
        y_host = t.infer(xq[:1]).reshape(-1)
    split = [p["name"] for p in table(out) if p["sram_bytes"] < p["bytes"]]
    assert split, "the scheme should train some layers on part of their channels"
    assert sorted(params) == sorted(host)
    for name, v in host.items():
        assert params[name].dtype == v.dtype and np.array_equal(params[name], v), name
    assert any(not np.array_equal(initial[k], params[k]) for k in params)
    got = np.array([a.loss for a in answers], np.float32)
    assert np.max(np.abs(got - losses) / np.abs(losses)) <= 1e-6
    assert [a.step for a in answers] == list(range(1, len(order) + 1))
    assert (stats.steps, stats.steps_skipped, stats.steps_guarded, stats.updates,
            stats.refused_nonfinite, stats.refused_saturation) == \
        (guard.steps, guard.steps_skipped, guard.steps_guarded, guard.updates,
         guard.refused_nonfinite, guard.refused_saturation)
    assert stats.step == len(order) and stats.errors == 0
    assert np.array_equal(y_dev, y_host)


def test_push_pull_reset_and_step(builds):
    """Pushed parameters (split tensors included) come back bit for bit and the device infers
    with them as the host build does; reset returns to the built parameters and step 0."""
    out = builds / "train"
    rep = report(out)
    tab = table(out)
    rng = np.random.default_rng(3)
    new = {p["name"]: (rng.integers(-127, 128, p["shape"]).astype(np.int8) if p["dtype"] == "int8"
                       else rng.integers(-5000, 5000, p["shape"]).astype(np.int32)) for p in tab}
    xq = model_inputs(rep, inputs(2, seed=9), "x")
    with HostTrainer(out) as t:
        initial = t.params()
        t.set_params(new)
        expected_params = t.params()   # of a split tensor only its trained channels change
        y_host = t.infer(xq).reshape(len(xq), -1)
    with link(out) as q:
        dev = q.device
        dev.push(new, tab)
        assert dev.step(7) == 7 and dev.step() == 7
        pulled = dev.pull(tab)
        y_dev = np.stack([dev.infer(x.reshape(-1))[0] for x in xq])
        dev.reset_params()
        back = dev.pull(tab)
        assert dev.step() == 0
        with pytest.raises(Exception, match="shape"):
            dev.push({k: v.reshape(-1) for k, v in new.items()}, tab)
    for name in expected_params:
        assert np.array_equal(pulled[name], expected_params[name]), name
        assert np.array_equal(back[name], initial[name]), name
    assert np.array_equal(y_dev, y_host)


def _error(dev) -> tuple[int, int, str]:
    kind, data = dev.read_frame()
    assert kind == dv.ERROR, hex(kind)
    return data[0], data[1], data[2:].decode()


def test_broken_and_hostile_frames_get_errors_and_the_device_goes_on(builds):
    out = builds / "train"
    rep = report(out)
    x = model_inputs(rep, inputs(1, seed=2), "x")[0].reshape(-1)
    with HostTrainer(out) as t:
        y_host = t.infer(x[None]).reshape(-1)
    with link(out) as q:
        dev = q.device
        info = dev.info()
        good = dv.encode_frame(dv.INFER, x.tobytes())
        cases = [
            (good[:-1] + bytes([good[-1] ^ 1]), 1),                          # bad CRC
            (good[:7] + bytes([good[7] ^ 0x40]) + good[8:], 1),              # a flipped bit
            (dv.encode_frame(0x42), 3),                                      # unknown command
            (dv.encode_frame(0x00), 3),
            (dv.encode_frame(dv.INFO, version=2), 2),                        # another version
            (dv.encode_frame(dv.INFER, x.tobytes()[:-1]), 4),                # short sample
            (dv.encode_frame(dv.TRAIN, x.tobytes()), 4),                     # no label, lr
            (dv.encode_frame(dv.PARAMS_WRITE, bytes(300)), 4),               # over the buffer
            (dv.encode_frame(dv.STATS, b"\x01\x02\x03"), 4),
            (dv.encode_frame(dv.PARAMS_READ, struct.pack("<IH", info.param_bytes - 2, 4)), 7),
            (dv.encode_frame(dv.PARAMS_READ, struct.pack("<IH", 0, 300)), 7),
            (dv.encode_frame(dv.PARAMS_WRITE, struct.pack("<I", 0xFFFFFFF0) + b"\x01\x02"), 7),
            (dv.encode_frame(dv.TRAIN, struct.pack("<if", 4, LR) + x.tobytes()), 7),   # label
            (dv.encode_frame(dv.TRAIN, struct.pack("<if", -1, LR) + x.tobytes()), 7),
            (dv.encode_frame(dv.TRAIN, struct.pack("<if", 0, float("nan")) + x.tobytes()), 7),
            (dv.encode_frame(dv.TRAIN, struct.pack("<if", 0, -1.0) + x.tobytes()), 7),
            (dv.encode_frame(dv.SAVE), 6),
            (dv.encode_frame(dv.RESTORE), 6),
        ]
        for frame, code in cases:
            dev.send_raw(frame)
            got = _error(dev)
            assert got[0] == code, (frame[:8], got)
        # a frame that stops arriving (a false length of 65535, a cut cable): answered after
        # the device's byte time limit, then the device works again
        t0 = time.monotonic()
        dev.send_raw(bytes([0xA5, 1, dv.PARAMS_WRITE, 0xFF, 0xFF, 1, 2, 3]))
        assert _error(dev)[0] in (4, 5)
        dev.send_raw(bytes([0xA5, 1, dv.INFER]))
        assert _error(dev)[0] == 5
        assert time.monotonic() - t0 < 15
        # noise before a frame (a console's text) is skipped
        dev.send_raw(b"hello\r\n\x00\xff" + dv.encode_frame(dv.INFO))
        kind, _ = dev.read_frame()
        assert kind == dv.INFO | dv.ANSWER
        y, _ = dev.infer(x)
        s = dev.stats()
        params = dev.pull(table(out))
        # a request cut short just before a host connects (a board busy with its demo loses
        # bytes): connect() tries again until the device answers
        dev.send_raw(bytes([0xA5, 1]))
        t0 = time.monotonic()
        assert dev.connect().build_id == info.build_id
        assert time.monotonic() - t0 < 15
    assert np.array_equal(y, y_host)
    assert s.errors == len(cases) + 2 and s.skipped_bytes >= 9
    assert s.steps == 0   # no refused request trained
    with HostTrainer(out) as t:
        assert all(np.array_equal(params[k], v) for k, v in t.params().items())


def test_device_command_line(builds, tmp_path):
    """`tinyc device --qemu`: info, infer (= host), train --reset (= tinyc emulate --train-data,
    bit for bit), pull, push; and `tinyc emulate --qemu --input` of a training build."""
    out = builds / "train"
    x, y = labelled(4, seed=4)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.save(tmp_path / "x.npy", x[:2])
    res = tinyc("device", out, "--qemu", "info")
    assert "link protocol 1" in res.stdout and "4 classes" in res.stdout
    assert "persistent storage: not in this build" in res.stdout
    res = tinyc("device", out, "--qemu", "infer", "--input", tmp_path / "x.npy",
                "-o", tmp_path / "yd.npy")
    assert "sample 1: argmax" in res.stdout
    tinyc("emulate", out, "--input", tmp_path / "x.npy", "--output", tmp_path / "yh.npy")
    assert np.array_equal(np.load(tmp_path / "yd.npy"), np.load(tmp_path / "yh.npy"))
    res = tinyc("emulate", out, "--qemu", "--input", tmp_path / "x.npy", "--output",
                tmp_path / "yq.npy")
    assert "instructions per inference" in res.stdout
    assert np.array_equal(np.load(tmp_path / "yq.npy"), np.load(tmp_path / "yh.npy"))
    res = tinyc("device", out, "--qemu", "train", "--reset", "--train-data", tmp_path / "d.npz",
                "--epochs", "2", "--save-params", tmp_path / "pd.npz")
    assert "epoch 2: loss" in res.stdout and "device at step 8" in res.stdout
    tinyc("emulate", out, "--train-data", tmp_path / "d.npz", "--epochs", "2",
          "--save-params", tmp_path / "ph.npz")
    d, h = np.load(tmp_path / "pd.npz"), np.load(tmp_path / "ph.npz")
    assert sorted(d.files) == sorted(h.files)
    for k in h.files:
        assert d[k].dtype == h[k].dtype and np.array_equal(d[k], h[k]), k
    tinyc("device", out, "--qemu", "push", "--params", tmp_path / "ph.npz")
    res = tinyc("device", out, "--qemu", "pull", "-o", tmp_path / "p0.npz")
    assert "step 0" in res.stdout   # a new QEMU: the built parameters again
    with HostTrainer(out) as t:
        initial = t.params()
    p0 = np.load(tmp_path / "p0.npz")
    assert all(np.array_equal(p0[k], v) for k, v in initial.items())


def test_device_command_line_errors(builds, tmp_path):
    inf, out = builds / "inf", builds / "train"
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    assert_clean_failure(tinyc("device", out, "--port", "/dev/nonexistent-tty", "info",
                               check=False), "cannot open the device port")
    assert_clean_failure(tinyc("device", out, "--qemu", "train", check=False),
                         "needs --train-data")
    assert_clean_failure(tinyc("device", out, "--qemu", "info", "--params", "p.npz",
                               check=False), "takes no --params")
    assert_clean_failure(tinyc("device", inf, "--qemu", "pull", "-o", tmp_path / "p.npz",
                               check=False), "built without --train")
    assert_clean_failure(tinyc("device", out, "--qemu", "push", "--params", tmp_path / "bad.npz",
                               check=False), "missing")
    assert_clean_failure(tinyc("device", out, "--qemu", "push", "--params",
                               tmp_path / "none.npz", check=False), "not a readable .npz")
    # the device runs another model than the folder given
    with link(inf) as q:
        with pytest.raises(Exception, match="runs another model"):
            q.device.check_build(out)


def test_the_link_over_a_tcp_socket(builds):
    """QEMU's UART0 on a TCP socket (-serial tcp:...,server=on) and the host on
    socket://HOST:PORT: the same Device code as for a serial port."""
    import socket
    import subprocess

    from tinyc import procs
    from tinyc.targets.qemu import qemu_command
    out = builds / "inf"
    rep = report(out)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = qemu_command(load_board("mps2_an386"), out / ".pio" / "build" / "tinyc" / "firmware.elf",
                       ["firmware", "link"])
    cmd[cmd.index("-serial") + 1] = f"tcp:127.0.0.1:{port},server=on,wait=off"
    proc = procs.popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        dev = None
        for _ in range(50):   # QEMU listens once it has started
            try:
                dev = dv.Device(f"socket://127.0.0.1:{port}", timeout=20)
                break
            except Exception:
                time.sleep(0.1)
        assert dev is not None
        with dev:
            dev.check_build(out)
            xq = model_inputs(rep, inputs(1, seed=6), "x")
            y, _ = dev.infer(xq[0].reshape(-1))
    finally:
        procs.kill(proc)
    assert np.array_equal(y, run_host(out, xq).reshape(-1))


def test_stats_give_the_profile_of_the_last_run(builds, small_nets, tmp_path):
    """A --profile build: stats answers each layer's count of the last inference or training
    step; they add up to nearly its whole cost (the marks cost a little outside the layers).
    `tinyc emulate --qemu --profile --input` of a training build reads them over the link."""
    out = tmp_path / "p"
    tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", out, "--calib",
          builds / "calib.npy", "--train", builds / "scheme.json", "--num-classes", "4",
          "--profile")
    rep = report(out)
    x = model_inputs(rep, inputs(1, seed=3), "x")[0].reshape(-1)
    with link(out) as q:
        info = q.device.info()
        assert info.flags & dv.FLAG_PROFILE
        _, cost = q.device.infer(x)
        s = q.device.stats()
        q.device.train(x, 1, LR)
        t = q.device.stats()
        page = q.device.stats(first_layer=3)
    assert s.layers == info.layers and len(s.profile) == s.layers
    ran = sum(s.profile.values())
    assert 0.9 * cost <= ran <= cost, (ran, cost)
    assert sum(t.profile.values()) > ran   # a training step: forward, backward and updates
    assert t.last_train_cost >= sum(t.profile.values()) and t.last_infer_cost == cost
    assert min(page.profile) == 3 and page.profile[3] == t.profile[3]
    np.save(tmp_path / "x.npy", inputs(1, seed=3))
    res = tinyc("emulate", out, "--qemu", "--profile", "--input", tmp_path / "x.npy",
                "--output", tmp_path / "y.npy")
    assert "by layer type" in res.stdout, res.stdout


def test_training_over_the_link_on_the_cortex_m7(small_nets, builds, tmp_path):
    """mps2_an500 (Cortex-M7, double-precision FPU): the same link on its UART0, training over
    it bit-identical to the host build (`tinyc device --qemu train` against `tinyc emulate
    --train-data`)."""
    out = tmp_path / "m7"
    tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an500", "-o", out, "--calib",
          builds / "calib.npy", "--train", builds / "scheme.json", "--num-classes", "4",
          "--lr", str(LR))
    x, y = labelled(5, seed=13)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    res = tinyc("device", out, "--qemu", "train", "--train-data", tmp_path / "d.npz", "--epochs",
                "2", "--save-params", tmp_path / "d_params.npz")
    # the host sends each step's rate: the build's linear decay over the 10 steps
    assert "10 steps over the link, lr 0.05 at the first step, decaying linearly" in res.stdout
    tinyc("emulate", out, "--train-data", tmp_path / "d.npz", "--epochs", "2",
          "--save-params", tmp_path / "h_params.npz")
    d, h = np.load(tmp_path / "d_params.npz"), np.load(tmp_path / "h_params.npz")
    assert sorted(d.files) == sorted(h.files)
    for k in h.files:
        assert d[k].dtype == h[k].dtype and np.array_equal(d[k], h[k]), k
