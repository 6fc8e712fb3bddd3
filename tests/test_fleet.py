"""tinyc fleet (compiler/fleet.py): federated sparse updates of tinyc devices through Flower.

A fleet of host-build devices and a QEMU firmware with non-IID splits of the learner demo's
digits (examples/digits_net.py) runs rounds through `tinyc fleet serve` / `join` (Flower's gRPC
server and clients); only the trained elements cross, every device ends with the aggregate bit
for bit, a device killed mid-round does not stop the fleet. The pull/push round trip is exact,
also for weights trained on some input channels only (split weights)."""
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_clean_failure, tinyc
from test_firmware import needs_qemu, needs_toolchain

pytest.importorskip("flwr")
from tinyc import fleet  # noqa: E402
from tinyc.targets.host import HostTrainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
LR = 0.03


@pytest.fixture(scope="module")
def learner(tmp_path_factory):
    """The demo's digits net built for training (last:1, a new 5-class head) for mps2_an386,
    and non-IID device data: device k holds mostly the digits k and k+1 (of the new task)."""
    from digits_net import build, new_task
    d = tmp_path_factory.mktemp("fleet")
    (x, y), (xt, yt) = new_task(seed=0)
    np.save(d / "calib.npy", x[:64])
    tinyc("build", build(d / "digits.onnx"), "--board", "mps2_an386", "-o", d / "b", "--calib",
          d / "calib.npy", "--train", "last:1", "--num-classes", "5", "--lr", LR)
    for k in range(4):
        idx = np.flatnonzero(np.isin(y, [k, (k + 1) % 5]))[:60 + 10 * k]
        np.savez(d / f"dev{k}.npz", x=x[idx], y=y[idx])
    np.savez(d / "eval.npz", x=xt[:100], y=yt[:100])
    np.savez(d / "slow.npz", x=np.tile(x[:200], (4, 1, 1, 1)), y=np.tile(y[:200], 4))
    return d


def codes_equal(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(u, v) and u.dtype == v.dtype
                                    for u, v in zip(a, b))


def test_pull_push_round_trip_is_exact(learner):
    """Codes -> float -> codes is the identity; pushing back what was pulled changes nothing;
    the trained elements are the whole trained tensors here (2,356 B: SRAM's)."""
    out = learner / "b"
    layout = fleet.ParamLayout.from_build(out)
    table = json.loads((out / "lib" / "tinyc_model" / "train_params.json").read_text())
    assert layout.nbytes == sum(p["sram_bytes"] for p in table) == 2356
    with HostTrainer(out) as t:
        t.train(np.random.default_rng(0).integers(-128, 128, (20, 8, 8, 1)).astype(np.int8),
                np.arange(20) % 5, LR)
        before = t.params()
        codes = layout.extract(before)
        again = layout.quantize(layout.dequantize(codes))
        assert codes_equal(codes, again)
        assert codes_equal(codes, layout.quantize(layout.dequantize(codes),
                                                  np.random.default_rng(1)))
        t.set_params(layout.insert(t.params(), again))
        after = t.params()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    # the float values are code x scale of the channel, exactly
    head = layout.entries[layout.names.index("head.w")]
    assert np.array_equal(layout.dequantize(codes)[2], codes[2] * head.scale)
    # out-of-range aggregates are held as the device holds a trained parameter
    big = layout.quantize([v * 1e6 for v in layout.dequantize(codes)])
    assert max(abs(int(b.min())) for b in big[::2]) <= 127
    assert max(abs(int(b.max())) for b in big[1::2]) <= 1 << 30
    # the build rounds its steps stochastically, and so does the server an aggregate: an
    # average moved by a quarter of a code keeps that quarter in expectation (nearest: lost)
    assert layout.rounding == "stochastic"
    quarter = [v + 0.25 * e.scale for v, e in zip(layout.dequantize(codes), layout.entries)]
    assert codes_equal(layout.quantize(quarter), codes)
    rng = np.random.default_rng(2)
    moved = np.mean([layout.quantize(quarter, rng)[0].astype(float) - codes[0]
                     for _ in range(50)])
    assert 0.2 < moved < 0.3


def test_split_weights_only_trained_channels_cross(tmp_path):
    """A scheme that trains some input channels of each layer (split weights: 3x3, depthwise,
    1x1, depthwise x2, grouped): the layout's elements are exactly what SRAM holds, training on
    the host build changes no element outside them, and the round trip stays exact."""
    from test_train_c import split_chain_training
    from tinyc.codegen.c import generate_c
    from tinyc.memory.planner import plan_memory
    g = split_chain_training(tmp_path)
    out = generate_c(g, plan_memory(g), tmp_path / "c")
    table = json.loads((out / "train_params.json").read_text())
    layout = fleet.ParamLayout.from_build(out)
    assert layout.nbytes == sum(p["sram_bytes"] for p in table) < sum(p["bytes"] for p in table)
    assert sum(e.index is not None for e in layout.entries) == 5
    shape = g.tensors[g.inputs[0]].shape
    rng = np.random.default_rng(3)
    with HostTrainer(out) as t:
        p0 = t.params()
        t.train(rng.integers(-128, 128, (16,) + shape[1:]).astype(np.int8), rng.integers(0, 5, 16),
                0.05)
        p1 = t.params()
        for e in layout.entries:
            changed = np.flatnonzero(p0[e.name].reshape(-1) != p1[e.name].reshape(-1))
            assert e.index is None or np.isin(changed, e.index).all(), e.name
        assert any(e.index is not None and not np.array_equal(p0[e.name], p1[e.name])
                   for e in layout.entries)
        codes = layout.extract(p1)
        t.set_params(layout.insert(p0, layout.quantize(layout.dequantize(codes))))
        assert all(np.array_equal(p1[k], v) for k, v in t.params().items())


def read_lines(proc) -> str:
    out, _ = proc.communicate(timeout=120)
    return out


def fleet_cmd(*args):
    return [sys.executable, "-m", "tinyc.cli", "fleet", *map(str, args)]


@needs_toolchain
@needs_qemu
def test_fleet_rounds_same_parameters_and_a_dropout(learner, tmp_path):
    """`tinyc fleet serve` and four `tinyc fleet join`: three host builds and a QEMU firmware
    with a large data set, which is stopped (SIGTERM: its QEMU killed) while it trains in round
    1. The rounds go on without it; after the last, the three devices and the server hold the
    same parameters bit for bit, and per round each device received and sent exactly the
    trained elements (2,356 B)."""
    out, port = learner / "b", 18700 + int(time.time()) % 200
    server = subprocess.Popen(fleet_cmd("serve", out, "--rounds", 2, "--address",
                                        f"127.0.0.1:{port}", "--devices", 4, "--save-params",
                                        tmp_path / "final.npz", "--timeout", 120),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    joins = [subprocess.Popen(fleet_cmd("join", out, "--host", "--data", learner / f"dev{k}.npz",
                                        "--eval-data", learner / "eval.npz", "--server",
                                        f"127.0.0.1:{port}", "--save-params",
                                        tmp_path / f"p{k}.npz"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for k in range(3)]
    slow = subprocess.Popen(fleet_cmd("join", out, "--qemu", "--data", learner / "slow.npz",
                                      "--server", f"127.0.0.1:{port}"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # the QEMU device is in round 1 once a host device has finished its round-1 training
        first = joins[0].stdout.readline() + joins[0].stdout.readline()
        assert "round 1: trained" in first, first
        time.sleep(0.5)
        slow.send_signal(signal.SIGTERM)
        slow_log = read_lines(slow)
        logs = [first + read_lines(joins[0])] + [read_lines(j) for j in joins[1:]]
        serve_log = read_lines(server)
    finally:
        for p in [server, slow, *joins]:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert server.returncode == 0, serve_log + slow_log
    assert all(j.returncode == 0 for j in joins), logs
    assert slow.returncode != 0 and "round 1: trained" not in slow_log, slow_log
    assert re.search(r"round 1: 3 devices trained on \d+ samples, 1 failed", serve_log), serve_log
    assert "round 2: 3 devices trained" in serve_log, serve_log
    assert "round 2: the aggregate pushed to 3 devices" in serve_log, serve_log
    layout = fleet.ParamLayout.from_build(out)
    params = [dict(np.load(tmp_path / f"p{k}.npz")) for k in range(3)]
    final = dict(np.load(tmp_path / "final.npz"))
    for p in params:
        assert codes_equal(layout.extract(p), [final[n] for n in layout.names])
        assert all(np.array_equal(p[k], params[0][k]) for k in p)
    for log in logs:   # per round: 2,356 B in, 2,356 B out (no frozen weight, no raw sample)
        rounds = re.findall(r"round \d: trained .*; ([\d,]+) B in, ([\d,]+) B out", log)
        assert rounds == [("2,356", "2,356")] * 2, log
    assert serve_log.count("per device 2,356 B down, 2,356 B up") == 2, serve_log


@needs_toolchain
def test_a_round_is_one_run_of_the_schedule(learner):
    """A fit's local steps are one run of the learning-rate schedule: the build's linear decay
    from lr over the round's steps (the server may send lr_schedule constant instead); the same
    trained codes as the host build trained on the round's order at those rates, written out."""
    from tinyc.cli import load_report
    from tinyc.datasets import labelled_data
    out = learner / "b"
    rep = load_report(out)
    assert rep["training"]["lr_schedule"] == "linear"
    layout = fleet.ParamLayout.from_build(out)
    x, y = labelled_data(rep, learner / "dev1.npz")
    x, y = x[:20], y[:20]
    order = np.random.default_rng((0, 1, 0)).permutation(len(x))   # seed 0, round 1, epoch 0
    k = np.arange(len(x)).astype(np.float32)
    linear = np.float32(LR) * (np.float32(1) - k / np.float32(len(x)))
    got = {}
    for schedule, rates in (("linear", linear), ("constant", np.full(len(x), LR, np.float32))):
        host = fleet.HostBackend(out)   # a fresh step counter (the stochastic rounding's)
        try:
            start = layout.extract(host.pull())
            cfg = {"server_round": 1, "epochs": 1, "lr": LR,   # linear: the client's default
                   **({"lr_schedule": schedule} if schedule == "constant" else {})}
            got[schedule] = fleet.FleetClient(host, layout, x, y, lr=LR).fit(start, cfg)[0]
        finally:
            host.close()
        with HostTrainer(out) as t:
            t.train(x[order], y[order], rates)
            assert codes_equal(got[schedule], layout.extract(t.params())), schedule
    assert not codes_equal(got["linear"], got["constant"])


@needs_qemu
def test_qemu_device_client_like_host_build(learner):
    """A FleetClient on the QEMU firmware (over the link) and one on the host build, given the
    same parameters, data and round: the same trained elements, bit for bit; and the QEMU
    device's pull/push round trip is exact."""
    from tinyc.cli import load_report
    from tinyc.datasets import labelled_data
    out = learner / "b"
    rep = load_report(out)
    layout = fleet.ParamLayout.from_build(out)
    x, y = labelled_data(rep, learner / "dev1.npz")
    x, y = x[:30], y[:30]
    cfg = {"server_round": 1, "epochs": 1, "lr": LR}
    host = fleet.HostBackend(out)
    dev = fleet.DeviceBackend.qemu(out, rep, timeout=20)
    try:
        start = layout.extract(host.pull())
        start = layout.quantize([v * 0.9 for v in layout.dequantize(start)])   # not the built
        got = [fleet.FleetClient(b, layout, x, y, lr=LR).fit(start, cfg) for b in (host, dev)]
        assert codes_equal(got[0][0], got[1][0]) and got[0][1] == got[1][1] == 30
        assert not codes_equal(got[0][0], start)
        pulled = dev.pull()
        dev.push(layout.insert(pulled, layout.quantize(layout.dequantize(layout.extract(pulled)))))
        assert all(np.array_equal(pulled[k], v) for k, v in dev.pull().items())
    finally:
        host.close()
        dev.close()


def test_bad_input(learner, tmp_path):
    """Missing build, inference build, bad data file, unreachable server, bad address, devices
    that do not come: one line, exit status 1."""
    out = learner / "b"
    assert_clean_failure(tinyc("fleet", "join", tmp_path / "none", "--host", "--data",
                               learner / "dev0.npz", check=False), "no report.json")
    inf = tmp_path / "inf"
    inf.mkdir()
    rep = json.loads((out / "report.json").read_text())
    del rep["training"]
    (inf / "report.json").write_text(json.dumps(rep))
    assert_clean_failure(tinyc("fleet", "serve", inf, "--rounds", 1, check=False),
                         "built without --train")
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 1, 8, 8), np.float32), y=np.array([0, 1, 9]))
    assert_clean_failure(tinyc("fleet", "join", out, "--host", "--data", tmp_path / "bad.npz",
                               check=False), "label 9")
    assert_clean_failure(tinyc("fleet", "join", out, "--host", "--data", tmp_path / "no.npz",
                               check=False), "no.npz")
    assert_clean_failure(tinyc("fleet", "join", out, "--host", "--data", learner / "dev0.npz",
                               "--server", "127.0.0.1:1", "--timeout", 2, check=False),
                         "cannot reach the fleet server at 127.0.0.1:1")
    assert_clean_failure(tinyc("fleet", "serve", out, "--rounds", 1, "--address", "nowhere",
                               check=False), "cannot listen on 'nowhere'")
    assert_clean_failure(tinyc("fleet", "serve", out, "--rounds", 1, "--address",
                               f"127.0.0.1:{18600 + int(time.time()) % 100}", "--devices", 2,
                               "--timeout", 1, check=False), "0 of 2 devices joined within 1 s")
    # a server serving another build: the device refuses its parameters, no round completes
    import shutil
    other = tmp_path / "other"
    shutil.copytree(out, other, ignore=shutil.ignore_patterns("tinyc_*host", ".pio"))
    with open(other / "lib" / "tinyc_model" / "model.c", "a") as f:
        f.write("/* another build */\n")
    addr = f"127.0.0.1:{18500 + int(time.time()) % 100}"
    server = subprocess.Popen(fleet_cmd("serve", other, "--rounds", 1, "--address", addr,
                                        "--devices", 1), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        res = tinyc("fleet", "join", out, "--host", "--data", learner / "dev0.npz", "--server",
                    addr, check=False, timeout=120)
        _, serve_err = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert_clean_failure(res, "the fleet server serves another build")
    assert server.returncode == 1 and "no round completed" in serve_err, serve_err


def test_master_copy_keeps_updates_under_half_a_code(learner):
    """Ten devices whose updates average +0.3 code on every trained element each round (as many
    small steps do): rounded to the nearest code every round, the fleet never moves; with the
    server's float master copy (the default) it moves by 1 code after round 2 and 2 codes after
    round 7, the devices' updates being measured against the codes they were sent."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    layout = fleet.ParamLayout.from_build(learner / "b")
    with HostTrainer(learner / "b") as t:
        start = layout.extract(t.params())
    start = [np.clip(c, -100, 100).astype(c.dtype) for c in start]   # away from the limits

    def rounds(rounding, n):
        strat = fleet.fleet_strategy(layout, rounding=rounding)
        sent = start
        for r in range(1, n + 1):
            strat._sent = sent
            res = []
            for k in range(10):   # device k moves the elements i with (i + k) % 10 < 3 by 1
                codes = [(c + ((np.arange(len(c)) + k) % 10 < 3)).astype(c.dtype) for c in sent]
                res.append((None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(codes), 10,
                                         {})))
            params, _ = strat.aggregate_fit(r, res, [])
            sent = parameters_to_ndarrays(params)
        return [s.astype(np.int64) - s0 for s, s0 in zip(sent, start)]

    assert all(not d.any() for d in rounds("nearest", 7))
    assert all((d == 1).all() for d in rounds("master", 2))   # 0.6 code
    assert all((d == 2).all() for d in rounds("master", 7))   # 2.1 codes


def test_fedavgm_steps_the_master_copy_with_momentum(learner):
    """FedAvgM (Flower's, server momentum 0.9) takes the devices' average update as a step of
    the fleet's master copy: devices that each move every trained element by +1 code per round
    move the fleet by 1, 1.9, 2.71 codes in rounds 1-3 (5.61 in all: 6 codes sent), where
    FedAvg moves it by 3."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    layout = fleet.ParamLayout.from_build(learner / "b")
    with HostTrainer(learner / "b") as t:
        start = layout.extract(t.params())
    start = [np.clip(c, -100, 100).astype(c.dtype) for c in start]   # away from the limits

    def moved(name, n):
        strat = fleet.fleet_strategy(layout, name)
        sent = start
        for r in range(1, n + 1):
            strat._sent = sent
            res = [(None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(
                [(c + 1).astype(c.dtype) for c in sent]), 10, {})) for _ in range(3)]
            params, _ = strat.aggregate_fit(r, res, [])
            sent = parameters_to_ndarrays(params)
        return [s.astype(np.int64) - s0 for s, s0 in zip(sent, start)]

    assert all((d == 3).all() for d in moved("fedavg", 3))
    assert all((d == 6).all() for d in moved("fedavgm", 3))
    assert all((d == 1).all() for d in moved("fedavgm", 1))
