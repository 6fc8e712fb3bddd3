"""The training guard (runtime_c/include/tinyc/train.h) and the ranges of the trained parameters.

- A diverging learning rate, many steps, under UBSan and ASan (-fno-sanitize-recover=all): no
  sanitizer report in training or in inference with what was learned, weights stay in
  [-127, 127] and biases within the quantizer's 2^30 headroom, the guard refuses updates, and
  the C agrees with the numpy reference on every value and counter.
- At the default lr the guard stays silent.
- A non-finite lr skips the whole step; a non-finite gradient refuses channel updates.
- `tinyc emulate --train-data` prints the counters and exits 1 on a diverged run unless
  --allow-divergence, writing --save-params either way; `tinyc build` refuses a bad --lr.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import host_build, tinyc
from tinyc.build import report_text
from tinyc.codegen.c import generate_c
from tinyc.errors import TinycError
from tinyc.memory.planner import plan_memory, trainable_tensors
from tinyc.passes.autodiff import TrainOptions
from tinyc.pipeline import compile_int8, compile_training
from tinyc.reference import train as ref
from tinyc.targets.host import TRAIN_EXE, TRAIN_HARNESS, HostTrainer, run_host

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

SANITIZE = ("-fsanitize=undefined,address", "-fno-sanitize-recover=all")
DEFAULT_LR = 0.003   # tinyc build's default --lr


def _samples(g, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = g.tensors[g.inputs[0]].shape
    classes = g.tensors[g.meta["train"]["logits"]].shape[-1]
    return (rng.integers(-128, 128, (n,) + shape[1:]).astype(np.int8),
            rng.integers(0, classes, n))


def _reference(g, xs, ys, lr):
    g_ref, guard = g.copy(), ref.GuardStats()
    for k in range(len(xs)):
        ref.train_step(g_ref, xs[k][None], int(ys[k]), lr, k, guard)
    return g_ref, guard


def _assert_in_range(params: dict):
    for name, v in params.items():
        limit = ref.BIAS_LIMIT if v.dtype == np.int32 else ref.WEIGHT_LIMIT
        assert np.abs(v.astype(np.int64)).max() <= limit, name


def _finish_clean(trainer: HostTrainer):
    """End the harness; a sanitizer report would make it exit non-zero with a message."""
    trainer.proc.stdin.close()
    assert trainer.proc.wait(timeout=60) == 0
    assert trainer.proc.stderr.read() == b""


# lr 1e9 drove biases to the int32 limits before the guard, and the forward accumulators of
# conv2d.c, depthwise_conv.c and fully_connected.c into signed overflow (UBSan)
@pytest.mark.parametrize("net, scheme, lr", [("mbv2_block", "full", 100.0),
                                             ("mbv2_block", "bias-only", 1e9),
                                             ("fc_only", "bias-only", 1e9)])
def test_diverging_lr_under_sanitizers(net, scheme, lr, small_nets, tmp_path):
    g = compile_training(str(small_nets[net]), None, scheme, 10, TrainOptions())
    generate_c(g, plan_memory(g), tmp_path)
    xs, ys = _samples(g, 100)
    g_ref, want = _reference(g, xs, ys, lr)
    host_build(tmp_path, SANITIZE, TRAIN_HARNESS, TRAIN_EXE)   # runtime objects shared (conftest)
    with HostTrainer(tmp_path) as t:
        losses = t.train(xs, ys, lr)
        params = t.params()
        t.infer(xs[:20])   # the forward pass with what was learned
        guard = t.guard_stats()
        _finish_clean(t)
    assert np.all(np.isfinite(losses))
    assert guard == want and guard.steps == 100
    assert guard.refused_saturation > 0 and guard.steps_guarded > 0
    _assert_in_range(params)
    for name, _ in trainable_tensors(g):
        assert np.array_equal(params[name].reshape(g_ref.tensors[name].data.shape),
                              g_ref.tensors[name].data), name


def test_default_lr_is_silent(small_nets, tmp_path):
    """Normal training at the default lr (and at 0.05, used by test_train_c) refuses nothing;
    also under the sanitizers."""
    g = compile_training(str(small_nets["residual_chain"]), None, "full", 10, TrainOptions())
    generate_c(g, plan_memory(g), tmp_path)
    xs, ys = _samples(g, 200)
    host_build(tmp_path, SANITIZE, TRAIN_HARNESS, TRAIN_EXE)   # runtime objects shared (conftest)
    with HostTrainer(tmp_path) as t:
        for lr in (DEFAULT_LR, 0.05):
            t.reset()
            t.train(xs, ys, lr)
            guard = t.guard_stats()
            assert guard.steps == 200 and guard.updates > 0
            assert (guard.steps_skipped, guard.refused, guard.steps_guarded) == (0, 0, 0), lr
        _finish_clean(t)


def test_inference_under_sanitizers(small_nets, tmp_path):
    """The inference build of every op of the test nets, under UBSan and ASan."""
    rng = np.random.default_rng(3)
    for net in ("mbv2_block", "groups_concat"):
        out = tmp_path / net
        g = compile_int8(str(small_nets[net]), None)
        generate_c(g, plan_memory(g), out)
        host_build(out, SANITIZE)
        shape = g.tensors[g.inputs[0]].shape
        run_host(out, rng.integers(-128, 128, (4,) + shape[1:]).astype(np.int8))


def test_non_finite_lr_skips_the_step(small_nets, tmp_path):
    g = compile_training(str(small_nets["groups_concat"]), None, "full", 10, TrainOptions())
    generate_c(g, plan_memory(g), tmp_path)
    xs, ys = _samples(g, 3)
    lrs = [float("nan"), float("inf"), -1.0]
    g_ref, guard_ref = g.copy(), ref.GuardStats()
    for k, lr in enumerate(lrs):
        ref.train_step(g_ref, xs[k][None], int(ys[k]), lr, k, guard_ref)
    with HostTrainer(tmp_path) as t:
        before = t.params()
        for k, lr in enumerate(lrs):
            t.step(xs[k], int(ys[k]), lr)
        after = t.params()
        guard = t.guard_stats()
    assert guard == guard_ref
    assert (guard.steps, guard.steps_skipped, guard.updates) == (3, 3, 0)
    assert all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_non_finite_gradient_refuses_updates(small_nets, tmp_path):
    """A classifier whose weight scale makes the input gradient overflow to inf: the channel
    updates below it see non-finite gradients and are refused, in the C and the reference."""
    g = compile_training(str(small_nets["mbv2_block"]), None, "full", 10, TrainOptions())
    grad_in = [n for n in g.nodes if n.op == "conv2d_grad_input"][0]
    grad_in.attrs["w_scale"] = np.full_like(grad_in.attrs["w_scale"], 1e37)
    generate_c(g, plan_memory(g), tmp_path)
    xs, ys = _samples(g, 4)
    g_ref, want = _reference(g, xs, ys, DEFAULT_LR)
    with HostTrainer(tmp_path) as t:
        t.train(xs, ys, DEFAULT_LR)
        params = t.params()
        guard = t.guard_stats()
    assert guard == want and guard.refused_nonfinite > 0
    for name, _ in trainable_tensors(g):
        assert np.array_equal(params[name].reshape(g_ref.tensors[name].data.shape),
                              g_ref.tensors[name].data), name


@pytest.fixture(scope="module")
def trained_build(small_nets, tmp_path_factory):
    """A --no-firmware training build of a small net and labelled data for it."""
    root = tmp_path_factory.mktemp("guard_cli")
    out = root / "out"
    tinyc("build", small_nets["groups_concat"], "--board", "mps2_an386", "-o", out, "--train",
          "full", "--num-classes", "4", "--no-firmware")
    shape = json.loads((out / "report.json").read_text())["input"]["shape_nchw"]
    rng = np.random.default_rng(5)
    data = root / "train.npz"
    np.savez(data, x=rng.normal(size=[60] + shape[1:]).astype(np.float32),
             y=rng.integers(0, 4, 60))
    return out, data


def test_emulate_reports_divergence(trained_build, tmp_path):
    out, data = trained_build
    saved = tmp_path / "p.npz"
    res = tinyc("emulate", out, "--train-data", data, "--lr", "100", "--epochs", "2",
                "--save-params", saved, check=False)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    err = [line for line in res.stderr.splitlines() if "error" in line]   # not the progress
    assert len(err) == 1 and err[0].startswith("tinyc: error: training diverged at lr 100")
    assert "--lr" in err[0] and "--allow-divergence" in err[0]
    assert res.stdout.count("guard:") == 2   # one line per epoch
    params = dict(np.load(saved))            # what was learned is kept
    assert params
    _assert_in_range(params)
    res = tinyc("emulate", out, "--train-data", data, "--lr", "100", "--allow-divergence")
    assert res.returncode == 0 and "training diverged at lr 100" in res.stdout


def test_emulate_default_lr_passes(trained_build):
    out, data = trained_build
    res = tinyc("emulate", out, "--train-data", data)
    assert res.returncode == 0
    assert "guard: 0 of 60 steps skipped" in res.stdout and " 0 of " in res.stdout
    assert "diverged" not in res.stdout + res.stderr


@pytest.mark.parametrize("lr", ["nan", "inf", "-1", "0", "1e39", "1e-50"])
def test_build_refuses_bad_lr(lr, small_nets, tmp_path):
    res = tinyc("build", small_nets["fc_only"], "--board", "mps2_an386", "-o", tmp_path / "o",
                "--train", "full", "--no-firmware", f"--lr={lr}", check=False)
    assert res.returncode == 1
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tinyc: error: ") and "--lr" in err[0]
    assert lr in err[0]   # named by the option's parser
    assert not (tmp_path / "o" / "report.json").exists()


def test_report_json_is_strict():
    assert json.loads(report_text({"a": [1.5, {"b": 2}]})) == {"a": [1.5, {"b": 2}]}
    with pytest.raises(TinycError, match=r"non-finite number at training\.lr"):
        report_text({"training": {"lr": float("nan")}})
