"""Patch-based scheduling inside a training build: only the frozen prefix may be patched.

A training step (passes/autodiff.py) may run its forward prefix patch by patch only up to the
node before its first trained layer and before the producer of any tensor its backward pass
reads (memory/schedule.training_max_split). Then the backward pass and the updates see the
very same tensors as layer by layer, so the generated C of the patched training step must train
exactly like the numpy reference of the unpatched step, bit for bit, in the real (overlaid)
arena.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import assert_clean_failure, tinyc
from tinyc.build import compile_graph, options_from_report
from tinyc.errors import TinycError
from tinyc.memory.planner import trainable_tensors
from tinyc.memory.schedule import choose_schedule, training_max_split
from tinyc.passes.autodiff import TrainOptions
from tinyc.passes.patch import PatchSpec, prefix_problem
from tinyc.pipeline import compile_training, forward_graph, quantize_array
from tinyc.reference import train as ref

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def _training(small_nets, net: str, scheme, qas: bool = True, rounding: str = "nearest"):
    return compile_training(str(small_nets[net]), None, scheme, 10,
                            TrainOptions(qas=qas, rounding=rounding))


@pytest.mark.parametrize("net, scheme", [("mbv2_block", "last:1"), ("big_kernels", "last:1"),
                                         ("groups_concat", "last:1"), ("mbv2_block", "full"),
                                         ("residual_chain", "bias-only")])
def test_max_split_is_before_trained_layers_and_backward_reads(net, scheme, small_nets):
    g = _training(small_nets, net, scheme)
    n_forward = g.meta["train"]["forward_nodes"]
    m = training_max_split(g)
    trained = set(g.meta["train"]["trainable"])
    first_trained = min(i for i, n in enumerate(g.nodes[:n_forward]) if n.name in trained)
    assert -1 <= m < first_trained
    prefix = {t for n in g.nodes[:m + 1] for t in n.outputs}
    read_back = {t for n in g.nodes[n_forward:] for t in n.inputs
                 if t and not g.tensors[t].is_const}
    assert not prefix & read_back
    if read_back & set(g.inputs):   # the backward pass reads the image itself
        assert m == -1
    if scheme in ("full", "bias-only"):   # the first layer is trained: nothing to patch
        assert m == -1
        sched = choose_schedule(g, "auto", None, m)
        assert sched.spec is None and sched.graph is g
    else:
        assert any(prefix_problem(g, s) is None for s in range(m + 1))


def test_forced_schedule_beyond_the_frozen_prefix_is_refused(small_nets):
    g = _training(small_nets, "mbv2_block", "last:1")
    m = training_max_split(g)
    with pytest.raises(TinycError, match="frozen layers"):
        choose_schedule(g, PatchSpec(m + 1, 2, 2), None, m)
    g = _training(small_nets, "mbv2_block", "full")
    with pytest.raises(TinycError, match="there are none"):
        choose_schedule(g, PatchSpec(0, 2, 2), None, training_max_split(g))


def _train_both(g, sched, out_dir, lr: float, steps: int = 12, seed: int = 3):
    """The generated C of the scheduled (patched) graph and the reference of the unpatched g."""
    from test_train_c import run_both
    return run_both(g, out_dir, lr, steps, seed, plan=sched.plan, gen=sched.graph)[:6]


@pytest.mark.parametrize("net, scheme, spec, qas, rounding", [
    ("mbv2_block", "last:1", "auto", True, "nearest"),
    ("mbv2_block", "last:1", "2x2@4", False, "stochastic"),
    ("mbv2_block", "last:1", "3x1@0", True, "stochastic"),
    ("big_kernels", "last:1", "auto", True, "nearest"),
    ("groups_concat", "last:1", "2x2@3", True, "nearest"),
    ("mbv2_block", {"bias_last": 2, "weights": {"5": 0.5}}, "auto", True, "stochastic"),
])
def test_patched_training_step_matches_unpatched_reference(net, scheme, spec, qas, rounding,
                                                           small_nets, tmp_path):
    g = _training(small_nets, net, scheme, qas, rounding)
    m = training_max_split(g)
    sched = choose_schedule(g, "auto" if spec == "auto" else PatchSpec.parse(spec), None, m)
    gp = sched.graph
    assert sched.spec is not None and sched.spec.split <= m
    assert any(n.op == "paste" for n in gp.nodes)
    # the patched forward pass is longer; the backward pass is unchanged
    n_fwd, n_fwd_p = g.meta["train"]["forward_nodes"], gp.meta["train"]["forward_nodes"]
    assert len(gp.nodes) - n_fwd_p == len(g.nodes) - n_fwd
    assert [n.name for n in gp.nodes[n_fwd_p:]] == [n.name for n in g.nodes[n_fwd:]]
    assert all(n.op not in ("crop", "paste") and "patch" not in n.attrs
               for n in gp.nodes[n_fwd_p:])
    assert trainable_tensors(gp) == trainable_tensors(g)

    lr = 0.05 if qas else 2000.0
    g_ref, ref_losses, losses, params, logits, xs = _train_both(g, sched, tmp_path, lr)
    changed = 0
    for name, kind in trainable_tensors(g):
        want = g_ref.tensors[name].data
        got = params[name].reshape(want.shape)
        assert np.array_equal(got, want), f"{kind} {name} differs from the reference"
        changed += int(np.sum(want != g.tensors[name].data))
    assert changed > 0, "no parameter moved: the comparison would prove nothing"
    rel = np.abs(losses - ref_losses) / np.maximum(np.abs(ref_losses), 1e-12)
    assert rel.max() <= 1e-5, f"losses differ: C {losses} vs reference {ref_losses}"
    want = np.stack([ref.predict(g_ref, x[None]).reshape(-1) for x in xs[:4]])
    assert np.array_equal(logits.reshape(want.shape), want)


def test_patched_training_arena_is_smaller(small_nets):
    g = _training(small_nets, "mbv2_block", "last:1")
    sched = choose_schedule(g, "auto", None, training_max_split(g))
    assert sched.spec is not None
    assert sched.plan.arena_bytes < sched.info["peak_layer_by_layer_bytes"]
    # the forward pass alone (tinyc_infer's figures) is patched the same way
    fwd = forward_graph(sched.graph)
    assert sum(n.op == "paste" for n in fwd.nodes) == sched.spec.patches


def test_cli_training_build_patches_only_the_frozen_prefix(small_nets, tmp_path):
    net = small_nets["mbv2_block"]
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).uniform(-1, 1, (4, 3, 32, 24)).astype(np.float32))
    common = ["--board", "mps2_an386", "--calib", calib, "--num-classes", "4", "--no-firmware"]
    res = tinyc("build", net, "-o", tmp_path / "auto", "--train", "last:1", *common)
    assert "schedule   patches" in res.stdout and "(training step)" in res.stdout
    rep = json.loads((tmp_path / "auto" / "report.json").read_text())
    patch = rep["training"]["patch"]
    assert rep["inference"]["patch"] == patch
    assert patch["enabled"] and patch["scope"] == "training step"
    assert patch["split_index"] <= patch["max_split"]
    assert rep["training"]["arena_bytes"] == patch["peak_bytes"]
    assert rep["training"]["arena_bytes"] < patch["peak_layer_by_layer_bytes"]
    assert any(r["patch"] for r in rep["ops"])
    # training through the CLI on the patched build == the reference of the unpatched step
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (10, 3, 32, 24)).astype(np.float32)
    y = (np.arange(10) % 4).astype(np.int64)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    tinyc("emulate", tmp_path / "auto", "--train-data", tmp_path / "train.npz",
          "--save-params", tmp_path / "params.npz")
    model, opts = options_from_report(rep)
    g = compile_graph(model, opts)
    initial = {t: g.tensors[t].data.copy() for t, _ in trainable_tensors(g)}
    assert opts.patch == "auto" and not any("patch" in n.attrs for n in g.nodes)
    xq = np.moveaxis(quantize_array(x, rep["input"]["scale"], rep["input"]["zero_point"]), 1, -1)
    # tinyc emulate trains at the build's schedule: linear decay from lr, lr * (1 - k / T)
    assert rep["training"]["lr_schedule"] == "linear"
    peak, steps = np.float32(rep["training"]["lr"]), np.float32(len(xq))
    for step, i in enumerate(np.random.default_rng(1).permutation(len(xq))):
        rate = peak * (np.float32(1) - np.float32(step) / steps)
        ref.train_step(g, xq[i:i + 1], int(y[i]), float(rate), step)
    params = np.load(tmp_path / "params.npz")
    assert sorted(params.files) == sorted(t for t, _ in trainable_tensors(g))
    for name in params.files:
        assert np.array_equal(params[name], g.tensors[name].data), name
    assert any(not np.array_equal(initial[t], g.tensors[t].data) for t in initial)

    res = tinyc("build", net, "-o", tmp_path / "full", "--train", "full", *common)
    assert "a training step can patch no layer" in res.stdout
    rep = json.loads((tmp_path / "full" / "report.json").read_text())
    assert rep["inference"]["patch"]["enabled"] is False
    assert_clean_failure(tinyc("build", net, "-o", tmp_path / "bad", "--train", "full",
                               "--patch", "2x2@0", *common, check=False), "frozen layers")


def test_patched_training_step_on_cortex_m4_in_qemu(small_nets, tmp_path):
    """The patched training step on an emulated Cortex-M4F (QEMU mps2-an386), compiled at -O3 in
    GNU C mode: the same integer state as the numpy reference of the unpatched step."""
    from test_train_c import train_in_qemu

    g = _training(small_nets, "mbv2_block", {"bias_last": 2, "weights": {"5": 0.5}},
                  rounding="stochastic")
    sched = choose_schedule(g, "auto", None, training_max_split(g))
    assert sched.spec is not None
    assert train_in_qemu(sched.graph, sched.plan, g, tmp_path, steps=10, lr=0.05, seed=5) > 0
