"""bench/learning_matrix.py: its matrix, run cache and tables (pure logic, no training), and a
tiny end-to-end run as a benchmark."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402
import learning_matrix as M  # noqa: E402


def test_matrix_has_every_scheme_of_every_net():
    cells = M.cells_of(M.NETS, M.PXS, M.DATA_SETS, ["cls", "bias", "pub", "auto"], M.BUDGETS_KB)
    per_net = {n: 2 + len(common.PUBLISHED_SCHEMES[n]) + len(M.BUDGETS_KB) for n in M.NETS}
    assert len(cells) == len(M.PXS) * len(M.DATA_SETS) * sum(per_net.values())
    assert len({M.cell_id(c) for c in cells}) == len(cells)
    # a published name a net has no scheme of is skipped, not an error
    assert M.scheme_keys("proxyless-w0.3", ["99kb", "cls"]) == ["cls"]
    assert M.scheme_keys("mbv2-w0.35", ["pub"]) == list(common.PUBLISHED_SCHEMES["mbv2-w0.35"])


def test_run_keys_and_the_cache_resume(tmp_path):
    cell = {"net": "mcunet-5fps", "px": 96, "data": "fashion", "scheme": "cls", "budget_kb": None}
    keys = {M.run_key(cell, s, e, lr, lim) for s in (0, 1) for e in M.ENGINES
            for lr in ("auto", 0.001) for lim in (None, 200)}
    assert len(keys) == 16                     # every parameter is in the key
    path = tmp_path / "runs.jsonl"
    M.append_run(path, {"key": M.run_key(cell, 0, "c", "auto", None), "test_acc": 0.5})
    with open(path, "a") as f:
        f.write('{"key": "torn')               # an interrupted write
    done = M.load_runs(path)
    assert list(done) == [M.run_key(cell, 0, "c", "auto", None)]
    left = M.todo([cell], [0, 1], ["c", "float"], "auto", None, done)
    assert left == [(cell, [(0, "float"), (1, "c"), (1, "float")])]
    assert M.todo([cell], [0], ["c"], "auto", None, done) == []


def _rec(cell, seed, test, val, sram, engine="c", status="ok"):
    return {"cell": M.cell_id(cell), **cell, "seed": seed, "engine": engine, "status": status,
            "test_acc": test, "val_acc": val, "lr": 0.001, "cpu_ms_per_step": 10.0,
            "tinyc": "abc, clean", "build": {"sram_bytes": sram, "build_seconds": 5.0}}


def test_auto_against_the_best_hand_scheme_that_fits():
    base = {"net": "mbv2-w0.35", "px": 96, "data": "fashion", "budget_kb": None}
    cls = {**base, "scheme": "cls"}
    pub = {**base, "scheme": "99kb"}
    big = {**base, "scheme": "bias"}            # best of all, but over the budget
    low = {**base, "scheme": "49kb"}            # best test accuracy, worse validation
    auto = {**base, "scheme": "auto", "budget_kb": 128}
    records = []
    for seed, d in ((0, 0.0), (1, 0.02)):
        records += [_rec(cls, seed, 0.70 + d, 0.70, 40_000),
                    _rec(pub, seed, 0.80 + d, 0.85, 100_000),
                    _rec(low, seed, 0.82 + d, 0.80, 60_000),
                    _rec(big, seed, 0.95, 0.95, 300_000),
                    _rec(auto, seed, 0.79 + 2 * d, 0.84, 120_000),
                    _rec(cls, seed, 0.71 + d, 0.70, None, engine="float")]
    sums = M.summarize(records, [0, 1])
    assert sums[M.cell_id(cls)]["c"]["test"]["mean"] == pytest.approx(71.0)
    assert sums[M.cell_id(cls)]["c_minus_float"]["mean"] == pytest.approx(-1.0)
    (comp,) = M.comparisons(sums, records, [0, 1], [128])
    assert comp["best_hand_scheme"] == "99kb"   # by validation; bias-only does not fit 128 KB
    vs = comp["vs_best_hand"]                   # per seed: -1 then +1 points
    assert vs["mean"] == pytest.approx(0.0) and vs["sd"] == pytest.approx(2 ** 0.5)
    assert M.at_least(vs)
    assert comp["vs_cls"]["mean"] == pytest.approx(10.0) and M.clearly_above(comp["vs_cls"])
    text = "\n".join(M.findings(sums, [comp], records, None, None))
    assert "1 of 1 comparisons" in text
    rows = M.comparison_rows([comp], sums)
    assert rows[0][8] == "yes"


def test_a_budget_nothing_fits_is_reported_not_trained():
    cell = {"net": "mcunet-5fps", "px": 128, "data": "mnist", "scheme": "auto", "budget_kb": 128}
    rec = {**_rec(cell, 0, None, None, None), "status": "no scheme fits the budget",
           "build": {"error": "needs at least ...", "build_seconds": 3.0}}
    sums = M.summarize([rec], [0])
    s = sums[M.cell_id(cell)]
    assert not s["fits_budget"] and s["c"]["test"]["n"] == 0
    (comp,) = M.comparisons(sums, [rec], [0], [128])
    assert not comp["auto_fits"] and comp["vs_best_hand"] is None
    assert "no scheme within the budget" in "\n".join(M.findings(sums, [comp], [rec], "x", None))


def test_the_estimate_scales_with_the_training_samples():
    cell = {"net": "mcunet-5fps", "px": 96, "data": "fashion", "scheme": "cls", "budget_kb": None}
    rec = {**_rec(cell, 0, 0.5, 0.5, 40_000), "lr_rule": 0.001, "steps": 200,
           "train_cpu_seconds": 4.0, "eval_cpu_seconds": 15.0}
    rec["build"]["build_cpu_seconds"] = 10.0
    macs = {(n, p): 1_000_000 * (1 + (p == 128)) for n in M.NETS for p in M.PXS}
    one, two = (M.estimate_full([rec], macs, n_train=n) for n in (1000, 2000))
    assert two["parts_cpu_seconds"]["C training"] == pytest.approx(
        2 * one["parts_cpu_seconds"]["C training"])
    assert one["cpu_seconds"] == pytest.approx(sum(one["parts_cpu_seconds"].values()))


@pytest.mark.benchmark
def test_tiny_end_to_end_run(tmp_path):
    """One cell, 20 training samples, generated C only: the results files and the cache."""
    if not (common.MODELS_DIR / "mcunet-5fps_96.onnx").is_file():
        pytest.skip(f"shared models not in {common.MODELS_DIR}")
    args = ["--nets", "mcunet-5fps", "--px", "96", "--data", "fashion", "--seeds", "0",
            "--schemes", "cls", "--engines", "c", "--lr", "0.001", "--train-limit", "20",
            "--jobs", "1", "--keep", str(tmp_path / "w"), "--out", str(tmp_path / "out")]
    assert M.main(args) == 0
    runs = M.load_runs(tmp_path / "w" / "runs.jsonl")
    assert len(runs) == 1
    res = json.loads((tmp_path / "out.json").read_text())
    assert res["config"]["train_limit"] == 20 and len(res["runs"]) == 1
    assert "SMOKE RUN" in (tmp_path / "out.md").read_text()
    assert M.main(args + ["--resume"]) == 0      # nothing left to run: same single record
    assert len(M.load_runs(tmp_path / "w" / "runs.jsonl")) == 1
