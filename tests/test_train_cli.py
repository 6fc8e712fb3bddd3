"""Training through the command line: build --train, emulate --train-data, export; bad data."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import assert_clean_failure, tinyc
from tinyc.build import compile_graph, options_from_report
from tinyc.pipeline import check_model_input, quantize_array
from tinyc.reference import train as tr


@pytest.fixture(scope="module")
def trained(small_nets, tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (24, 3, 32, 24)).astype(np.float32)
    y = (np.arange(24) % 4).astype(np.int64)
    np.save(d / "calib.npy", x[:8])
    np.savez(d / "train.npz", x=x, y=y)
    np.savez(d / "eval.npz", x=x[:12], y=y[:12])
    res = tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", d / "o",
                "--calib", d / "calib.npy", "--train", "last:2", "--num-classes", "4",
                "--lr", "0.02")
    assert "arena" in res.stdout
    rep = json.loads((d / "o" / "report.json").read_text())
    assert (f"training   last:2: arena {rep['training']['arena_bytes']:,} B + trained parameters "
            f"{rep['training']['params_sram_bytes']:,} B") in res.stdout
    assert "rate       lr 0.02 at a run's first step, decaying linearly" in res.stdout
    res = tinyc("emulate", d / "o", "--train-data", d / "train.npz", "--epochs", "2",
                "--eval-data", d / "eval.npz", "--save-params", d / "params.npz")
    return d, res


def linear_rates(peak: float, steps: int) -> np.ndarray:
    """The linear schedule written out here (float32, the order of model.h's C): step k of T at
    peak * (1 - k / T)."""
    k = np.arange(steps).astype(np.float32)
    return np.float32(peak) * (np.float32(1) - k / np.float32(steps))


def test_report_has_training_memory(trained):
    d, _ = trained
    rep = json.loads((d / "o" / "report.json").read_text())
    t = rep["training"]
    assert t["scheme"] == "last:2" and t["num_classes"] == 4 and rep["output"]["shape"][-1] == 4
    assert t["sram_bytes"] == t["arena_bytes"] + t["params_sram_bytes"] + rep["stack_reserve_bytes"]
    assert t["params_sram_bytes"] > 0 and "forward_peak" in t and "backward_peak" in t
    assert t["arena_bytes"] >= rep["inference"]["arena_bytes"] > 0
    # the default schedule, recorded for tinyc export and the commands that train
    assert t["lr"] == 0.02 and t["lr_schedule"] == rep["build_options"]["lr_schedule"] == "linear"
    assert options_from_report(rep)[1].lr_schedule == "linear"
    header = (d / "o" / "lib" / "tinyc_model" / "model.h").read_text()
    assert f"#define TINYC_TRAIN_LR_PEAK {float(np.float32(0.02)).hex()}f" in header
    assert "#define TINYC_TRAIN_LR_SCHEDULE TINYC_LR_LINEAR" in header


def reference_run(d, rep, epochs: int, rates) -> dict:
    """The numpy reference over the CLI's steps (seeded shuffles) at the given rate per step."""
    model, opts = options_from_report(rep)
    g = compile_graph(model, opts)
    data = np.load(d / "train.npz")
    xq = np.moveaxis(quantize_array(data["x"], rep["input"]["scale"], rep["input"]["zero_point"]), 1, -1)
    step = 0
    for epoch in range(1, epochs + 1):
        for i in np.random.default_rng(epoch).permutation(len(xq)):
            tr.train_step(g, xq[i:i + 1], int(data["y"][i]), float(rates[step]), step)
            step += 1
    return g


def test_emulate_training_matches_the_reference(trained):
    """The CLI's epochs (seeded shuffles) run the same steps as the numpy reference, at the
    linearly decaying rates of the whole run (2 epochs x 24 samples)."""
    d, res = trained
    assert res.stdout.count("epoch") >= 2 and "eval accuracy" in res.stdout
    assert ("training   2 epoch(s) x 24 samples = 48 steps, lr 0.02 at the first step, decaying "
            "linearly to 0.000417 at the last of 48") in res.stdout
    rep = json.loads((d / "o" / "report.json").read_text())
    g = reference_run(d, rep, 2, linear_rates(0.02, 48))
    params = np.load(d / "params.npz")
    assert len(params.files) > 0
    for name in params.files:
        assert np.array_equal(params[name], g.tensors[name].data), name


def test_constant_schedule_is_the_old_training(trained, tmp_path):
    """emulate --lr-schedule constant trains every step at --lr, as before schedules: the same
    parameters as the reference at one constant rate, and not those of the decayed run."""
    d, _ = trained
    res = tinyc("emulate", d / "o", "--train-data", d / "train.npz", "--lr-schedule", "constant",
                "--save-params", tmp_path / "p.npz")
    assert "lr 0.02 at every step (--lr-schedule constant)" in res.stdout
    rep = json.loads((d / "o" / "report.json").read_text())
    g = reference_run(d, rep, 1, np.full(24, 0.02))
    params = np.load(tmp_path / "p.npz")
    for name in params.files:
        assert np.array_equal(params[name], g.tensors[name].data), name
    tinyc("emulate", d / "o", "--train-data", d / "train.npz", "--save-params", tmp_path / "l.npz")
    decayed = np.load(tmp_path / "l.npz")
    assert any(not np.array_equal(params[k], decayed[k]) for k in params.files)


def test_export_trained_onnx_matches_int8(trained, small_nets):
    d, _ = trained
    tinyc("export", d / "o", "--params", d / "params.npz", "-o", d / "trained.onnx")
    m = onnx.load(d / "trained.onnx")
    onnx.checker.check_model(m)
    x = np.load(d / "eval.npz")["x"]
    sess = ort.InferenceSession(str(d / "trained.onnx"), providers=["CPUExecutionProvider"])
    float_logits = np.stack([sess.run(None, {sess.get_inputs()[0].name: xi[None]})[0][0] for xi in x])
    rep = json.loads((d / "o" / "report.json").read_text())
    model, opts = options_from_report(rep)
    g = compile_graph(model, opts)
    from tinyc.passes.autodiff import set_parameters
    set_parameters(g, dict(np.load(d / "params.npz")), "params")
    xq = np.moveaxis(quantize_array(x, rep["input"]["scale"], rep["input"]["zero_point"]), 1, -1)
    int8 = np.stack([tr.predict(g, xq[i:i + 1]).ravel() for i in range(len(x))]).astype(np.float32)
    deq = (int8 - rep["output"]["zero_point"]) * rep["output"]["scale"]
    cos = np.sum(deq * float_logits, 1) / (np.linalg.norm(deq, axis=1) * np.linalg.norm(float_logits, axis=1))
    assert cos.min() > 0.97
    # the trained head differs from the initial one
    assert float_logits.shape == (len(x), 4)


@pytest.mark.parametrize("case", ["label_range", "label_count", "nan", "not_training", "bad_params",
                                  "shape"])
def test_bad_training_inputs_fail_cleanly(case, trained, small_nets, tmp_path):
    d, _ = trained
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (4, 3, 32, 24)).astype(np.float32)
    y = np.array([0, 1, 2, 3])
    out, expect = d / "o", []
    if case == "label_range":
        y[2], expect = 7, ["label 7", "0..3"]
    elif case == "label_count":
        y, expect = y[:3], ["4 inputs but 3 labels"]
    elif case == "nan":
        x[1, 0, 0, 0], expect = np.nan, ["sample 1", "NaN"]
    elif case == "shape":
        x, expect = x[:, :, :16], ["(N, 3, 32, 24)"]
    if case == "not_training":
        tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", tmp_path / "inf",
              "--calib", d / "calib.npy")
        out, expect = tmp_path / "inf", ["without --train"]
    np.savez(tmp_path / "data.npz", x=x, y=y)
    if case == "bad_params":
        np.savez(tmp_path / "p.npz", nothing=np.zeros(3))
        res = tinyc("export", out, "--params", tmp_path / "p.npz", "-o", tmp_path / "m.onnx", check=False)
        assert_clean_failure(res, "lacks trained parameters")
        return
    res = tinyc("emulate", out, "--train-data", tmp_path / "data.npz", check=False)
    assert_clean_failure(res, *expect)


def test_bad_scheme_file_fails_cleanly(small_nets, tmp_path):
    (tmp_path / "s.json").write_text('{"bias_last": 3, "weights": {"9": 1}}')
    res = tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", tmp_path / "o",
                "--train", tmp_path / "s.json", check=False)
    assert_clean_failure(res, "weights index 9", "0..5")
    res = tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", tmp_path / "o",
                "--num-classes", "3", check=False)
    assert_clean_failure(res, "--train")
    res = tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", tmp_path / "o",
                "--train", "last:1", "--lr-schedule", "foo", check=False)
    assert_clean_failure(res, "--lr-schedule", "'foo'", "linear")
    assert len(res.stderr.strip().splitlines()) == 1
    res = tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", tmp_path / "o",
                "--lr-schedule", "constant", check=False)
    assert_clean_failure(res, "--lr-schedule need --train")


def test_train_auto_fits_the_budget_and_export_redoes_it(small_nets, tmp_path):
    """--train auto --sram picks the most trainable scheme of the chain that fits; report.json
    records the choice so that tinyc export rebuilds exactly that graph."""
    from tinyc.memory.train_budget import candidate_schemes  # noqa: F401
    x = np.random.default_rng(0).uniform(-1, 1, (8, 3, 32, 24)).astype(np.float32)
    np.save(tmp_path / "c.npy", x)
    chosen = {}
    for budget, patch in ((40_000, "off"), (2_000_000, "off"), (40_000, "auto")):
        out = tmp_path / f"o{budget}{patch}"
        tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", out, "--calib",
              tmp_path / "c.npy", "--train", "auto", "--sram", budget, "--num-classes", "3",
              "--no-firmware", "--patch", patch)
        rep = json.loads((out / "report.json").read_text())
        assert rep["training"]["sram_bytes"] <= budget
        assert isinstance(rep["build_options"]["train"], dict)
        chosen[budget if patch == "off" else "patched"] = rep["training"]
    # planned with the patch schedule the build uses: at least as much trained as layer by layer
    assert chosen["patched"]["params_sram_bytes"] >= chosen[40_000]["params_sram_bytes"]
    assert chosen[2_000_000]["params_sram_bytes"] > chosen[40_000]["params_sram_bytes"]
    assert chosen[2_000_000]["scheme"].startswith("auto: bias-only + weights of the last 6")
    res = tinyc("build", small_nets["mbv2_block"], "--board", "mps2_an386", "-o", tmp_path / "x",
                "--calib", tmp_path / "c.npy", "--train", "auto", "--sram", 12000,
                "--num-classes", "3", "--no-firmware", "--patch", "off", check=False)
    assert_clean_failure(res, "even training only the classifier")
