"""--lr auto: the learning rate chosen on the user's labelled data with the generated step."""
import json

import numpy as np
import onnx
import pytest

from conftest import assert_clean_failure, tinyc



def int8_graph_with_new_head(net):
    """The int8 forward graph of `net` with a new 3-class head (what --train auto probes)."""
    from tinyc.build import BuildOptions, compile_graph
    head_only = compile_graph(str(net), BuildOptions(train={"bias_last": 0, "weights": {}},
                                                     num_classes=3, patch="off"))
    gq = head_only.copy()
    gq.nodes = gq.nodes[:head_only.meta["train"]["forward_nodes"]]
    return gq

def _data(tmp_path, n=90, classes=3, seed=0, shape=(3, 32, 24)):
    """Noise whose class brightens one input channel (learnable by a new head), NCHW like the
    model: too few samples for the smallest rates to learn anything."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.uniform(-0.5, 0.5, (n,) + shape).astype(np.float32)
    for c in range(classes):
        x[y == c, c] += 0.5
    path = tmp_path / "d.npz"
    np.savez(path, x=x.astype(np.float32), y=y)
    return path, x, y


def test_lr_auto_picks_the_rate_of_lowest_held_out_loss(small_nets, tmp_path):
    from tinyc.autotune import LR_GRID, split_train_validation
    data, x, y = _data(tmp_path)
    out = tmp_path / "o"
    res = tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", out,
                "--no-firmware", "--train", "last:2", "--num-classes", "3", "--lr", "auto",
                "--train-data", data)
    assert "lr auto" in res.stdout
    rep = json.loads((out / "report.json").read_text())
    auto = rep["training"]["lr_auto"]
    assert [r["lr"] for r in auto["runs"]] == list(LR_GRID)
    # each rate is the peak of the build's schedule over its epoch; emulate below takes the same
    assert auto["lr_schedule"] == rep["training"]["lr_schedule"] == "linear"
    clean = [r for r in auto["runs"] if r["steps_skipped"] == 0 and r["val_loss"] is not None]
    lowest = min(clean, key=lambda r: (r["val_loss"], r["lr"]))
    chosen = lowest["lr"]
    assert lowest["val_loss_excess"] == 0.0
    assert all(r["val_loss_excess"] > 0 and r["val_loss_excess_se"] > 0
               for r in clean if r is not lowest)
    assert rep["training"]["lr"] == rep["build_options"]["lr"] == auto["lr"] == chosen
    # model.h's tinyc_train_lr() peaks at the chosen rate (the code is written again after it)
    assert (f"#define TINYC_TRAIN_LR_PEAK {float(np.float32(chosen)).hex()}f"
            in (out / "model.h").read_text())
    assert lowest["val_loss"] < max(r["val_loss"] for r in clean)   # the rates were told apart
    for r in clean:   # every candidate score is recorded, each with its standard error
        assert r["late_loss_se"] > 0 and r["tail_loss_se"] > 0 and r["val_loss_se"] > 0
    train, val = split_train_validation(y, 3)
    assert len(train) + len(val) == len(y) and not set(train) & set(val)
    assert (auto["train_samples"], auto["validation_samples"]) == (len(train), len(val))
    # the recorded run is what `tinyc emulate` does on that split (same steps, same order)
    np.savez(tmp_path / "tr.npz", x=x[train], y=y[train])
    np.savez(tmp_path / "va.npz", x=x[val], y=y[val])
    for run in auto["runs"][1:3]:
        res = tinyc("emulate", out, "--train-data", tmp_path / "tr.npz", "--eval-data",
                    tmp_path / "va.npz", "--lr", str(run["lr"]), "--allow-divergence")
        assert f"loss {run['train_loss']:.4f}, eval accuracy {100 * run['val_accuracy']:.2f}%" \
            in res.stdout, (run, res.stdout)


def test_lr_auto_refusals(small_nets, tmp_path):
    data, _, _ = _data(tmp_path, n=10)
    net = small_nets["mbv2_block"]
    common = ("--board", "mps2_an386", "-o", tmp_path / "o", "--no-firmware")
    assert_clean_failure(tinyc("build", net, *common, "--lr", "auto", check=False),
                         "--lr auto", "--train SCHEME and --train-data")
    assert_clean_failure(tinyc("build", net, *common, "--train", "last:1", "--num-classes", "3",
                               "--lr", "auto", check=False), "--train-data")
    assert_clean_failure(tinyc("build", net, *common, "--train", "last:1", "--lr", "0.01",
                               "--train-data", data, check=False), "--train-data is read by")
    assert_clean_failure(tinyc("build", net, *common, "--train", "last:1", "--num-classes", "3",
                               "--lr", "auto", "--train-data", data, check=False),
                         "10 labelled samples", "at least 20")
    assert_clean_failure(tinyc("build", net, *common, "--train", "last:1", "--num-classes", "3",
                               "--lr", "auto", "--train-data", tmp_path / "none.npz",
                               check=False), "none.npz", "cannot read --train-data")
    assert not (tmp_path / "o").exists()


def test_new_head_has_room_to_grow(small_nets):
    """A new classifier's int8 weights start at 1/HEAD_WEIGHT_HEADROOM of their range (a scale
    fitted to the random initial weights pinned trained ones at +-127), and its logits get the
    wide fixed range of a new head."""
    from tinyc.passes.autodiff import TrainOptions
    from tinyc.passes.train_head import HEAD_WEIGHT_HEADROOM, classifier
    from tinyc.pipeline import NEW_HEAD_LOGIT_RANGE, compile_training
    g = compile_training(str(small_nets["mbv2_block"]), None, "last:1", 4, TrainOptions())
    head = classifier(g)
    w = g.tensors[head.inputs[1]]
    fan_in = int(np.prod(w.shape[1:]))
    room = 127 / HEAD_WEIGHT_HEADROOM
    assert room - 2 <= np.abs(w.data.astype(int)).max() <= room + 1
    bound = 1 / np.sqrt(fan_in)   # replace_head's initial weights: uniform in +-bound
    assert np.allclose(np.asarray(w.q.scale), HEAD_WEIGHT_HEADROOM * bound / 127, rtol=1e-3)
    scale, zp = g.tensors[head.outputs[0]].q.scalar()
    lo, hi = NEW_HEAD_LOGIT_RANGE
    assert abs((127 - zp) * scale - hi) < scale and abs((-128 - zp) * scale - lo) < scale


def test_train_auto_ranks_updates_by_gradient_signal(small_nets, tmp_path):
    """--train auto --train-data: a probe pass measures each candidate update's gradient signal
    and Fisher information (updating nothing), the ranking is a chain of nested schemes in which
    a trained weight brings the biases down to its layer, and the build takes the longest prefix
    whose planned training SRAM fits the budget, then steps around the step over it (ranking on
    without that unit); report.json says what was chosen and why."""
    from tinyc.autotune import fisher_of_updates, ranked_schemes
    from tinyc.build import BuildOptions, compile_graph
    from tinyc.datasets import labelled_data_for_graph
    from tinyc.memory.planner import plan_memory, training_memory
    from tinyc.passes.autodiff import TrainOptions, build_training_graph
    from tinyc.passes.sparse_update import conv_layers, resolve_scheme
    data, _, _ = _data(tmp_path, n=30, shape=(3, 20, 20))
    net = str(small_nets["residual_chain"])
    # the int8 graph with its new head, then the probe and the ranking
    gq = int8_graph_with_new_head(net)
    x, y = labelled_data_for_graph(gq, str(data))
    before = {n: gq.tensors[n].data.copy() for n in gq.tensors if gq.tensors[n].data is not None}
    fisher = fisher_of_updates(gq, x, y, TrainOptions())
    assert all(np.array_equal(gq.tensors[n].data, v) for n, v in before.items())
    convs = conv_layers(gq)
    n = len(convs)
    assert fisher["bias"].shape == (n,) and np.all(fisher["bias"] >= 0) and fisher["bias"].any()
    # the signal |E g|^2 is at most the Fisher information E|g|^2 (up to the estimate's noise)
    assert np.all(fisher["bias_fisher"] >= 0) and fisher["bias_fisher"].sum() > fisher["bias"].sum()
    # weight candidates: the deeper half, no linear conv
    assert set(fisher["channels"]) == {i for i in range(n // 2, n)
                                       if convs[i].attrs.get("clamp") is not None}
    chain = ranked_schemes(gq, fisher)
    for a, b in zip(chain, chain[1:]):   # nested: each candidate trains a superset
        assert b["bias_last"] >= a["bias_last"]
        assert all(float(b["weights"].get(k, 0)) >= r for k, r in a["weights"].items())
    for s in chain:                      # a trained weight: every bias down to its layer
        assert all(s["bias_last"] >= n - int(k) for k in s["weights"])

    def sram(scheme):
        g = build_training_graph(gq, resolve_scheme(gq, dict(scheme)), TrainOptions())
        return training_memory(g, plan_memory(g), 0)["sram_bytes"]
    srams = [sram(s) for s in chain]
    # a budget that cuts the ranking inside, right at a step: nothing is stepped around then
    budget = srams[len(chain) // 2]
    assert budget < srams[-1]
    t = compile_graph(net, BuildOptions(train="auto", num_classes=3, train_data=str(data),
                                        sram=budget, patch="off"))
    auto = t.meta["train"]["auto"]
    assert auto["ranked_by"].startswith("gradient signal")
    assert auto["planned_sram_bytes"] <= budget == auto["budget_bytes"]
    assert 0 < auto["signal_share"] < 1 and auto["head_fit_samples"] == auto["probe_samples"]
    k = max(k for k in range(len(chain)) if max(srams[:k + 1]) <= budget)
    assert t.meta["train"]["scheme_spec"] == chain[k] and auto["chosen_step"] == k
    assert auto["next_step_over_budget"] == chain[k + 1]
    assert auto["steps_skipped_over_budget"] == []   # less than SKIP_ROOM of it left
    # a continuation leaves the over-budget unit out, and everything that needs it
    for j in range(1, len(chain) - 1):
        before, after = chain[j], chain[j + 1]
        rest = ranked_schemes(gq, fisher, before, j, [(before, after)])
        assert rest[0] == before and all(int(s["name"].split()[1]) == j + m
                                         for m, s in enumerate(rest[1:], 1))
        for s in rest:
            if after["bias_last"] > before["bias_last"]:
                assert s["bias_last"] < after["bias_last"]
            for i, r in after["weights"].items():
                if before["weights"].get(i) != r:
                    assert s["weights"].get(i, 0) < r


def test_train_auto_steps_around_a_step_over_the_budget(small_nets):
    """A deep bias ranked before a layer's weights whose gradient map does not fit the budget
    no longer ends the choice while more than SKIP_ROOM of the budget is free: the ranking goes
    on without it (and without what needs it) and the weights still get in."""
    from tinyc.autotune import chain_benefit, ranked_schemes
    from tinyc.memory.planner import plan_memory, training_memory
    from tinyc.memory.train_budget import SKIP_ROOM, choose_update_scheme
    from tinyc.passes.autodiff import TrainOptions, build_training_graph
    from tinyc.passes.sparse_update import conv_layers, resolve_scheme
    gq = int8_graph_with_new_head(small_nets["mbv2_block"])
    convs = conv_layers(gq)
    n = len(convs)
    # every bias strong, the deepest the strongest: the chain takes them all before layer 4's
    # weights, whose signal is weaker per byte
    fisher = {"bias": np.linspace(1.0, 0.2, n) * 1e3,
              "channels": {4: np.full(gq.tensors[convs[4].inputs[0]].shape[-1], 1e-2)}}
    chain = ranked_schemes(gq, fisher)

    def sram(scheme):
        g = build_training_graph(gq, resolve_scheme(gq, dict(scheme)), TrainOptions())
        return training_memory(g, plan_memory(g), 0)["sram_bytes"]
    srams = [sram(s) for s in chain]
    first_weight = next(k for k, s in enumerate(chain) if s["weights"])
    # a budget under every step from a deep bias on (the planner's arena is not monotone
    # along the chain: compare with all later steps) leaving more than SKIP_ROOM free before it
    k0 = max(k for k in range(first_weight - 1) if max(srams[:k + 1]) == srams[k]
             and min(srams[k + 1:]) - 1 > srams[k] / (1 - SKIP_ROOM))
    budget = min(srams[k0 + 1:]) - 1
    assert not any(s["weights"] for s in chain[:k0 + 1])   # the longest prefix: no weights
    t, mem = choose_update_scheme(gq, budget, 0, TrainOptions(), False, chain,
                                  lambda start, step, too_big:
                                  ranked_schemes(gq, fisher, start, step, too_big))
    assert mem["auto_skipped"][0] == chain[k0 + 1]
    assert all(sram(s) > budget for s in mem["auto_skipped"])
    chosen = t.meta["train"]["scheme_spec"]
    assert chosen["weights"] and sram(chosen) <= budget == mem["auto_budget_bytes"]
    assert chain_benefit(gq, fisher, chosen) > chain_benefit(gq, fisher, chain[k0])
    assert chosen["bias_last"] < chain[k0 + 1]["bias_last"]
    # no stepping around when the longest prefix leaves less than SKIP_ROOM free
    t, mem = choose_update_scheme(gq, srams[k0], 0, TrainOptions(), False, chain,
                                  lambda *a: pytest.fail("stepped around near the budget"))
    assert mem["auto_skipped"] == [] and t.meta["train"]["scheme_spec"] == chain[k0]


def test_probe_weight_gradients_are_the_reference_ones():
    """The probe's vectorised weight gradient per kept input channel equals reference/train.py
    weight_grad (the C step's float32 sums) on the output channels of the channel's group:
    plain, strided depthwise and grouped convs, with padding."""
    from tinyc.autotune import channel_weight_grads
    from tinyc.reference.train import weight_grad
    rng = np.random.default_rng(0)
    for cin, cout, groups, k, stride, pad in [(8, 12, 1, 3, 1, 1), (8, 8, 8, 3, 2, 1),
                                              (16, 32, 2, 1, 1, 0), (6, 12, 6, 5, 1, 2)]:
        attrs = dict(strides=(stride, stride), dilations=(1, 1), pads=(pad,) * 4,
                     x_scale=0.05, x_zero_point=3)
        x = rng.integers(-128, 128, (1, 9, 9, cin)).astype(np.int8)
        side = (9 + 2 * pad - k) // stride + 1
        gy = rng.normal(size=(side, side, cout)).astype(np.float32)
        sel = np.sort(rng.choice(cin, cin // 2, replace=False))
        cin_g, cout_g = cin // groups, cout // groups
        ref = weight_grad(gy, x[..., sel], attrs, (k, k)).astype(np.float64)
        want = np.stack([ref[(c // cin_g) * cout_g:(c // cin_g + 1) * cout_g, :, :, j]
                         for j, c in enumerate(sel)])
        got = channel_weight_grads(gy, x[..., sel], attrs, (k, k), sel // cin_g, groups)
        assert got.shape == (len(sel), cout_g, k, k)
        assert np.allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_ranked_schemes_reach_good_biases_behind_a_poor_one(small_nets, tmp_path):
    """The greedy scores whole blocks: a last conv whose bias has no signal does not keep the
    strong biases below it out of the chain (it did when units were taken one at a time)."""
    from tinyc.autotune import ranked_schemes
    from tinyc.passes.sparse_update import conv_layers
    gq = int8_graph_with_new_head(small_nets["residual_chain"])
    convs = conv_layers(gq)
    n = len(convs)
    assert n >= 3
    bias = np.full(n, 10.0)
    bias[n - 1] = 0.0                  # the last conv's bias: nothing to learn
    weak = {i: np.full(gq.tensors[convs[i].inputs[0]].shape[-1], 1e-6)
            for i in range(n // 2, n)}
    chain = ranked_schemes(gq, {"bias": bias, "channels": weak})
    first_weight = next(k for k, s in enumerate(chain) if s["weights"])
    assert chain[first_weight - 1]["bias_last"] == n   # every bias before any weak weight


def test_train_auto_with_data_trains_the_body_slower(small_nets, tmp_path):
    """--train auto --train-data --lr-schedule constant: the body at AUTO_BODY_LR_SCALE of the
    head's rate, recorded in report.json (training and build_options, so that tinyc export
    redoes it); under the linear schedule (the default) the head's rate; --body-lr-scale
    and --train-warmup override, and without --train they are refused."""
    from tinyc.build import AUTO_BODY_LR_SCALE, options_from_report
    data, _, _ = _data(tmp_path, n=30, shape=(3, 20, 20))
    net = small_nets["residual_chain"]
    common = ("--board", "mps2_an386", "--no-firmware", "--num-classes", "3", "--patch", "off")
    out = tmp_path / "linear"
    tinyc("build", net, "-o", out, *common, "--train", "auto", "--train-data", data)
    rep = json.loads((out / "report.json").read_text())
    assert rep["training"]["lr_schedule"] == "linear"
    assert rep["training"]["body_lr_scale"] == rep["build_options"]["body_lr_scale"] == 1.0
    out = tmp_path / "auto"
    tinyc("build", net, "-o", out, *common, "--train", "auto", "--train-data", data,
          "--lr-schedule", "constant")
    rep = json.loads((out / "report.json").read_text())
    assert rep["training"]["body_lr_scale"] == AUTO_BODY_LR_SCALE < 1
    assert rep["build_options"]["body_lr_scale"] == AUTO_BODY_LR_SCALE
    # what tinyc export redoes: the chosen scheme (no longer "auto") at the same body rate
    _, redo = options_from_report(rep)
    assert isinstance(redo.train, dict) and redo.resolved_body_lr_scale() == AUTO_BODY_LR_SCALE
    assert rep["training"]["warmup_steps"] == 0
    assert "#define TINYC_TRAIN_WARMUP_STEPS 0" in (out / "model.h").read_text()
    out = tmp_path / "given"
    tinyc("build", net, "-o", out, *common, "--train", "full", "--body-lr-scale", "0.5",
          "--train-warmup", "7")
    rep = json.loads((out / "report.json").read_text())
    assert (rep["training"]["body_lr_scale"], rep["training"]["warmup_steps"]) == (0.5, 7)
    assert "#define TINYC_TRAIN_WARMUP_STEPS 7" in (out / "model.h").read_text()
    out = tmp_path / "plain"
    tinyc("build", net, "-o", out, *common, "--train", "full")
    assert json.loads((out / "report.json").read_text())["training"]["body_lr_scale"] == 1.0
    assert_clean_failure(tinyc("build", net, "-o", tmp_path / "o", "--board", "mps2_an386",
                               "--no-firmware", "--train-warmup", "5", check=False),
                         "--train-warmup and --lr-schedule need --train SCHEME")


# ---------------------------------------------------------------- --lr auto's selection rule
def _trial(lr, late, val, steps_skipped=0):
    """A trial run as choose_lr records it, from its late training loss and its per-sample
    held-out losses."""
    from tinyc.autotune import run_scores
    losses = np.full(40, late) + np.linspace(-0.05, 0.05, 40)
    return {"lr": lr, **run_scores(losses, np.asarray(val, np.float64)),
            "steps_skipped": steps_skipped, "updates_refused": 0, "updates": 40}


def test_lr_auto_rule_follows_the_final_held_out_loss():
    """Under a decaying rate a high peak trains noisily early (a high late loss) and settles
    late: the final model's held-out loss decides, not the loss during the epoch; a run the
    guard stopped never wins."""
    from tinyc.autotune import pick_lr
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 1.5, 400)
    held = {0.001: base + 0.30, 0.003: base + 0.10, 0.01: base, 0.03: base + 0.5}
    late = {0.001: 0.70, 0.003: 0.60, 0.01: 0.90, 0.03: 1.50}   # lowest at 0.003
    runs = [_trial(lr, late[lr], held[lr]) for lr in held]
    assert pick_lr(runs, held) == 0.01
    assert [r["val_loss_excess"] for r in runs] == pytest.approx([0.30, 0.10, 0.0, 0.5])
    assert [r["val_loss_excess_se"] for r in runs] == pytest.approx([0, 0, 0, 0], abs=1e-12)
    # a noisy difference: its paired standard error is recorded (0.4 / sqrt(400))
    held[0.003] = base + 0.01 + np.resize([-0.4, 0.4], 400)
    runs = [_trial(lr, late[lr], held[lr]) for lr in held]
    assert pick_lr(runs, held) == 0.01
    assert runs[1]["val_loss_excess"] == pytest.approx(0.01)
    assert runs[1]["val_loss_excess_se"] == pytest.approx(0.4 / np.sqrt(400), rel=1e-2)
    # the lowest loss on a run the guard stopped does not count
    held[0.003] = base + 0.10
    runs = [_trial(lr, late[lr], held[lr], steps_skipped=int(lr == 0.01)) for lr in held]
    assert pick_lr(runs, held) == 0.003
    # nothing clean: no choice
    runs = [_trial(lr, late[lr], held[lr], steps_skipped=1) for lr in held]
    assert pick_lr(runs, held) is None


def test_validation_losses_are_softmax_cross_entropy_of_dequantized_logits():
    from tinyc.autotune import validation_losses
    out = np.array([[10, 0, -10], [0, 0, 0]], np.int8)
    got = validation_losses(out, np.array([0, 2]), False, 0.1)
    z = out * 0.1
    want = [np.log(np.exp(z[0]).sum()) - z[0, 0], np.log(3.0)]
    assert got == pytest.approx(want)
    assert got[0] < got[1]      # the confident right answer costs less than a tie
