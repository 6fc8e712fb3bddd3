"""--lr auto: the learning rate chosen on the user's labelled data with the generated step."""
import json

import numpy as np
import onnx

from conftest import assert_clean_failure, tinyc


def _data(tmp_path, n=90, classes=3, seed=0):
    """Noise whose class brightens one input channel (learnable by a new head), NCHW like the
    model: too few samples for the smallest rates to learn anything."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.uniform(-0.5, 0.5, (n, 3, 32, 24)).astype(np.float32)
    for c in range(classes):
        x[y == c, c] += 0.5
    path = tmp_path / "d.npz"
    np.savez(path, x=x.astype(np.float32), y=y)
    return path, x, y


def test_lr_auto_picks_the_best_validated_rate(small_nets, tmp_path):
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
    clean = [r for r in auto["runs"] if r["steps_skipped"] == 0]
    best = max(r["val_accuracy"] for r in clean)
    chosen = [r for r in clean if r["val_accuracy"] == best][0]["lr"]   # ties: the smaller
    assert rep["training"]["lr"] == rep["build_options"]["lr"] == auto["lr"] == chosen
    assert best > min(r["val_accuracy"] for r in auto["runs"])   # the rates were told apart
    train, val = split_train_validation(y, 3)
    assert len(train) + len(val) == len(y) and not set(train) & set(val)
    assert (auto["train_samples"], auto["validation_samples"]) == (len(train), len(val))
    # the recorded score is what `tinyc emulate` gives on that split (same order of steps)
    np.savez(tmp_path / "tr.npz", x=x[train], y=y[train])
    np.savez(tmp_path / "va.npz", x=x[val], y=y[val])
    res = tinyc("emulate", out, "--train-data", tmp_path / "tr.npz", "--eval-data",
                tmp_path / "va.npz", "--lr", str(chosen), "--allow-divergence")
    want = [r for r in auto["runs"] if r["lr"] == chosen][0]["val_accuracy"]
    assert f"eval accuracy {100 * want:.2f}%" in res.stdout, (want, res.stdout)


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
