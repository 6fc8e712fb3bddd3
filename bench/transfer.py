"""Transfer learning with the generated training C: Fashion-MNIST on the shared ImageNet nets.

A shared pretrained net at 96 px gets a new 10-class head (tinyc build --train SCHEME
--num-classes 10) and is trained by the generated tinyc_train_step() itself, compiled with host
gcc and driven through tinyc.targets.host.HostTrainer (int8 forward, float32 backward, integer
parameter updates), for one epoch, batch 1, plain SGD. Accuracy is that of tinyc_infer (int8
logits, argmax) on held-out Fashion-MNIST TEST images.

Data (Debian dataset-fashion-mnist, /usr/share/datasets/fashion-mnist, offline): grey 28x28
images resized to 96x96 (PIL bilinear), replicated to 3 channels, p / 127.5 - 1, NCHW float32;
the C model gets them quantized with the build's input scale / zero point
(tinyc.pipeline.quantize_array, as `tinyc emulate` does). All splits are class-balanced and
drawn from one seeded generator, and are disjoint:
- TRAIN: N_TRAIN images of the 60k train file, visited once in one seeded order (every run,
  the float reference included, sees the same order);
- VALIDATION: N_VAL other train-file images, used only to choose learning rates;
- CALIBRATION: N_CALIB other train-file images (--calib .npy of the builds);
- TEST: N_TEST images of the 10k test file (never used for any choice).

Rows (per net): the published sparse scheme ('99kb') with QAS, nearest and stochastic rounding;
the same without QAS (--no-qas); bias-only (every conv bias + classifier); last layer only
(the classifier: {"bias_last": 0, "weights": {}}); and, when torch is importable, the same
published scheme trained in float32 PyTorch (bench/torch_reference.py: a float model built from
tinyc's float IR with the same initial head, only the scheme's parameters trained, weight
gradients masked to the same input channels, same samples and order, batch 1, plain SGD).

Learning rate: the published scheme is swept over LR_GRID three ways -- generated C with QAS
and nearest rounding, the same with stochastic rounding, float PyTorch -- each point trained
on TRAIN and scored on VALIDATION. The best nearest-rounding lr (the current default rounding;
ties: the smaller lr) is the common lr of that net: every row uses it. Stochastic rounding and
the float reference get a second row at their own best validation lr where it differs, so both
"same lr" and "each at its best lr" comparisons are in the table. Sweep runs that become rows
are not retrained: their trained parameters are reloaded into the generated C for the TEST
evaluation.

Usage: python bench/transfer.py [--nets mcunet-5fps,mbv2-w0.35] [--jobs 2] [--keep DIR]
       -> bench/results/transfer.md and .json
torch is optional: without it the float reference is skipped (and the results say so).
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import math
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (bench/common.py: models, Fashion-MNIST images, provenance)

SEED = 20240603
N_TRAIN, N_VAL, N_CALIB, N_TEST = 2000, 500, 60, 1000
CLASSES = 10
HW = (96, 96)
LR_GRID = (0.0003, 0.001, 0.003)
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")

# published sparse-update schemes (shared/models/README.md): (bias_last, {conv idx: ratio})
PUBLISHED = {
    "mcunet-5fps": ("99kb", 22, {21: 1, 24: 1, 27: 1, 30: 1, 36: .125, 39: .25}),
    "mbv2-w0.35": ("99kb", 25, {27: 1, 30: 1, 33: 1, 36: 1, 39: 1, 42: .125, 45: .5, 48: 1}),
}


def published_scheme(net: str) -> dict:
    name, k, weights = PUBLISHED[net]
    return {"name": name, "bias_last": k, "weights": {str(i): r for i, r in weights.items()}}


def row_specs(net: str) -> list[dict]:
    """The table's rows for one net (the lr is filled in after the sweep)."""
    pub = published_scheme(net)
    last = {"name": "last layer", "bias_last": 0, "weights": {}}
    return [
        {"key": "pub-qas-nearest", "scheme": pub, "qas": True, "rounding": "nearest"},
        {"key": "pub-qas-stochastic", "scheme": pub, "qas": True, "rounding": "stochastic"},
        {"key": "pub-noqas-nearest", "scheme": pub, "qas": False, "rounding": "nearest"},
        {"key": "bias-qas-nearest", "scheme": "bias-only", "qas": True, "rounding": "nearest"},
        {"key": "last-qas-nearest", "scheme": last, "qas": True, "rounding": "nearest"},
        {"key": "pub-float-torch", "scheme": pub, "torch": True},
    ]


def scheme_name(scheme) -> str:
    return scheme if isinstance(scheme, str) else scheme["name"]


# ---------------------------------------------------------------- data

def fashion_labels(which: str) -> np.ndarray:
    path = common.FASHION_DIR / f"{which}-labels-idx1-ubyte.gz"
    if not path.is_file():
        common.die(f"{path} not found: install the Debian package dataset-fashion-mnist")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n = np.frombuffer(raw[:8], ">u4")
    if magic != 2049:
        common.die(f"{path}: not an idx1 label file (magic {magic})")
    labels = np.frombuffer(raw[8:], np.uint8)
    if len(labels) != n:
        common.die(f"{path}: {len(labels)} labels, header says {n}")
    return labels.astype(np.int64)


def balanced_pick(rng, labels: np.ndarray, per_class: list[int], exclude=()) -> list[np.ndarray]:
    """Class-balanced disjoint index sets: for each count c in per_class, c // CLASSES images
    of every class (sorted), none in `exclude` or in an earlier set."""
    taken = set(int(i) for i in exclude)
    sets = [[] for _ in per_class]
    for cls in range(CLASSES):
        pool = np.array([i for i in np.flatnonzero(labels == cls) if int(i) not in taken])
        pool = rng.permutation(pool)
        at = 0
        for s, count in enumerate(per_class):
            k = count // CLASSES
            sets[s].extend(int(i) for i in pool[at:at + k])
            at += k
    return [np.sort(np.asarray(s, np.int64)) for s in sets]


def render(which: str, idx: np.ndarray, hw: tuple[int, int] = HW) -> np.ndarray:
    """Fashion-MNIST images -> (N, 3, H, W) float32 (96 x 96 by default), p / 127.5 - 1."""
    from PIL import Image

    imgs = common.fashion_images(which)
    out = np.empty((len(idx), 3) + tuple(hw), np.float32)
    for k, i in enumerate(idx):
        im = Image.fromarray(imgs[i], mode="L").resize((hw[1], hw[0]), Image.BILINEAR)
        out[k] = np.asarray(im, np.float32)[None] / 127.5 - 1.0
    return out


def make_data(work: Path, hw: tuple[int, int] = HW) -> dict:
    """Write the four splits as .npy files in `work`, images at `hw` (the same picks at every
    size); returns their description."""
    rng = np.random.default_rng(SEED)
    ytr_all, yte_all = fashion_labels("train"), fashion_labels("t10k")
    if len(ytr_all) != len(common.fashion_images("train")):
        common.die("Fashion-MNIST train images and labels differ in number")
    train_idx, val_idx, calib_idx = balanced_pick(rng, ytr_all, [N_TRAIN, N_VAL, N_CALIB])
    (test_idx,) = balanced_pick(rng, yte_all, [N_TEST])
    order = rng.permutation(len(train_idx))       # the one training order of every row
    train_idx = train_idx[order]
    assert not (set(train_idx) & set(val_idx) or set(train_idx) & set(calib_idx)
                or set(val_idx) & set(calib_idx))
    splits = {"train": ("train", train_idx), "val": ("train", val_idx),
              "calib": ("train", calib_idx), "test": ("t10k", test_idx)}
    desc = {}
    for name, (which, idx) in splits.items():
        np.save(work / f"{name}_x.npy", render(which, idx, hw))
        y = (ytr_all if which == "train" else yte_all)[idx]
        np.save(work / f"{name}_y.npy", y)
        desc[name] = {"file": which, "count": len(idx),
                      "per_class": np.bincount(y, minlength=CLASSES).tolist(),
                      "first_indices": idx[:5].tolist()}
    return desc


def load_split(work: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    return np.load(work / f"{name}_x.npy"), np.load(work / f"{name}_y.npy")


def train_in_order(work: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training split in the order of `seed` (0: as drawn; k > 0: a permutation by
    numpy.random.default_rng(k)), the data made in `work` first if it is not there yet."""
    if not (work / "test_y.npy").exists():
        make_data(work)
    x, y = load_split(work, "train")
    order = np.random.default_rng(seed).permutation(len(y)) if seed else np.arange(len(y))
    return x[order], y[order]


# ---------------------------------------------------------------- generated C (HostTrainer)

def build_row(net: str, spec: dict, lr: float, work: Path, out: Path) -> dict:
    """tinyc build --train for one row; a build over the board's budget is still trained
    (common.build_measured) and flagged."""
    from tinyc.build import BuildOptions

    opts = BuildOptions(calib=str(work / "calib_x.npy"), calib_limit=N_CALIB,
                        train=spec["scheme"], num_classes=CLASSES, qas=spec["qas"],
                        rounding=spec["rounding"], lr=lr)
    rep = common.build_measured(common.MODELS_DIR / f"{net}_96.onnx", common.BOARD, out, opts)
    if not spec["qas"]:
        rep["noqas_lr_factors"] = noqas_lr_factors(net, opts)
    return rep


def noqas_lr_factors(net: str, opts) -> dict:
    """Without QAS the integer step is lr * (gradient w.r.t. the integer parameter), i.e. a float
    SGD step of the dequantized parameter with lr scaled by s_w^2 (weights) or (s_w s_x)^2
    (biases). The range over the trained layers of the per-layer median factors."""
    from tinyc.build import compile_graph

    g = compile_graph(str(common.MODELS_DIR / f"{net}_96.onnx"), opts)
    head = g.meta["train"]["trainable"]
    w_f, b_f = [], []
    for n in g.nodes:
        if n.op != "conv2d_update":
            continue
        s_w = np.asarray(n.attrs["w_scale"], np.float64)
        if n.attrs["channels"] is not None:
            w_f.append(float(np.median(s_w ** 2)))
        if n.attrs["update_bias"]:
            b_f.append(float(np.median((s_w * n.attrs["x_scale"]) ** 2)))
    return {"weights": [min(w_f), max(w_f)], "biases": [min(b_f), max(b_f)],
            "layers": len(head)}


def quantized(rep: dict, x: np.ndarray) -> np.ndarray:
    """float NCHW -> int8 NHWC with the build's input parameters (as tinyc emulate does)."""
    from tinyc.pipeline import nchw_to_nhwc, quantize_array

    return nchw_to_nhwc(quantize_array(x, rep["input"]["scale"], rep["input"]["zero_point"]))


def accuracy_c(trainer, rep: dict, x: np.ndarray, y: np.ndarray) -> float:
    logits = trainer.infer(quantized(rep, x)).reshape(len(x), -1)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def run_c(net: str, spec: dict, lr: float, work: Path, evals: tuple[str, ...],
          save_params: bool = False) -> dict:
    """Build one row, train it for one epoch with the generated C, evaluate on `evals`."""
    import warnings

    from tinyc.targets.host import HostTrainer

    warnings.simplefilter("ignore")
    tag = f"{net}/{spec['key']}@{lr:g}"
    out = work / net / f"{spec['key']}_lr{lr:g}"
    t0 = time.time()
    rep = build_row(net, spec, lr, work, out)
    t_build = time.time() - t0
    xtr, ytr = load_split(work, "train")
    res = {"net": net, "key": spec["key"], "scheme": scheme_name(spec["scheme"]),
           "qas": spec["qas"], "rounding": spec["rounding"], "lr": lr, "engine": "tinyc C",
           "fits": rep["fits"], "training": {k: v for k, v in rep["training"].items()
                                             if k in ("arena_bytes", "params_sram_bytes",
                                                      "sram_bytes", "peak", "params")},
           "trainable_layers": len(rep["training"]["trainable_layers"]), "dir": str(out),
           "noqas_lr_factors": rep.get("noqas_lr_factors")}
    with HostTrainer(out) as tr:
        t1 = time.time()
        from tinyc.lr_schedule import of_report, rates
        # the build's schedule over the epoch (run_torch trains the float model at the same)
        losses = tr.train(quantized(rep, xtr), ytr, rates(lr, of_report(rep), len(ytr)))
        res["train_seconds"] = time.time() - t1
        res["ms_per_step"] = 1000 * res["train_seconds"] / len(ytr)
        res.update(_loss_stats(losses))
        res["guard"] = dataclasses.asdict(tr.guard_stats())   # the training guard's counters
        for split in evals:
            x, y = load_split(work, split)
            res[f"{split}_acc"] = accuracy_c(tr, rep, x, y) if res["finite"] else 1.0 / CLASSES
        if save_params:
            np.savez(out / "trained_params.npz", **tr.params())
    res["seconds"] = time.time() - t0
    res["build_seconds"] = t_build
    print(f"  {tag}: loss {res['train_loss']:.3f}"
          + "".join(f", {s} {100 * res[s + '_acc']:.1f}%" for s in evals)
          + f" ({res['seconds']:.0f} s)", flush=True)
    return res


def test_saved_c(res: dict, work: Path) -> dict:
    """TEST accuracy of a sweep run's trained parameters, loaded into the generated C."""
    from tinyc.targets.host import HostTrainer

    out = Path(res["dir"])
    rep = json.loads((out / "report.json").read_text())
    params = dict(np.load(out / "trained_params.npz"))
    t0 = time.time()
    with HostTrainer(out) as tr:
        tr.set_params(params)
        x, y = load_split(work, "test")
        acc = accuracy_c(tr, rep, x, y) if res["finite"] else 1.0 / CLASSES
    print(f"  {res['net']}/{res['key']}@{res['lr']:g}: test {100 * acc:.1f}% "
          f"({time.time() - t0:.0f} s)", flush=True)
    return {**res, "test_acc": acc, "seconds": res["seconds"] + time.time() - t0}


def _loss_stats(losses: np.ndarray) -> dict:
    losses = np.asarray(losses, np.float64)
    finite = bool(np.all(np.isfinite(losses)))
    tail = losses[-500:]
    return {"train_loss": float(losses.mean()) if finite else float("nan"),
            "train_loss_last500": float(tail.mean()) if finite else float("nan"),
            "loss_curve": [float(losses[i:i + 200].mean()) for i in range(0, len(losses), 200)],
            "finite": finite}


# ---------------------------------------------------------------- float reference (torch)

def torch_available() -> str | None:
    try:
        import torch
        return f"{torch.__version__} (from {Path(torch.__file__).parent.parent})"
    except ImportError:
        return None


def run_torch(net: str, spec: dict, lr: float, work: Path, evals: tuple[str, ...]) -> dict:
    """The published scheme trained in float32 PyTorch: see torch_reference.py."""
    import torch

    import torch_reference as tref

    torch.set_num_threads(1)
    t0 = time.time()
    model, params, n_bytes = tref.scheme_model(
        str(common.MODELS_DIR / f"{net}_96.onnx"), spec["scheme"], CLASSES,
        str(work / "calib_x.npy"))
    xtr, ytr = load_split(work, "train")
    t1 = time.time()
    from tinyc.lr_schedule import DEFAULT_LR_SCHEDULE   # the schedule of build_row's builds
    losses = tref.train(model, params, xtr, ytr, lr, lr_schedule=DEFAULT_LR_SCHEDULE)
    res = {"net": net, "key": spec["key"], "scheme": scheme_name(spec["scheme"]),
           "qas": None, "rounding": "float", "lr": lr,
           "engine": f"PyTorch {torch.__version__} float32", "fits": None,
           "training": {"params_sram_bytes": n_bytes}, "dir": None,
           "ms_per_step": 1000 * (time.time() - t1) / len(ytr)}
    res.update(_loss_stats(losses))
    for split in evals:
        x, y = load_split(work, split)
        res[f"{split}_acc"] = tref.accuracy(model, x, y) if res["finite"] else 1.0 / CLASSES
    res["seconds"] = time.time() - t0
    print(f"  {net}/{spec['key']}@{lr:g}: loss {res['train_loss']:.3f}"
          + "".join(f", {s} {100 * res[s + '_acc']:.1f}%" for s in evals)
          + f" ({res['seconds']:.0f} s)", flush=True)
    return res


# ---------------------------------------------------------------- driver

# the three sweeps of the published scheme: variant -> row spec index in row_specs()
SWEPT = {"nearest": 0, "stochastic": 1, "float": 5}
CHANCE_MARGIN = 0.05     # a run within 5 points of chance on validation has diverged


def best_lr(runs: list[dict]) -> float:
    """Best validation accuracy; ties go to the smaller learning rate."""
    return max(runs, key=lambda r: (round(r["val_acc"], 6), -r["lr"]))["lr"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default="mcunet-5fps,mbv2-w0.35",
                    help="comma-separated nets among " + ", ".join(PUBLISHED))
    ap.add_argument("--jobs", type=int, default=2, help="parallel worker processes (2)")
    ap.add_argument("--keep", help="keep the builds and data in this folder")
    a = ap.parse_args()
    nets = [n.strip() for n in a.nets.split(",") if n.strip()]
    for n in nets:
        if n not in PUBLISHED:
            common.die(f"unknown net {n}: choose among {', '.join(PUBLISHED)}")
        if not (common.MODELS_DIR / f"{n}_96.onnx").is_file():
            common.die(f"{common.MODELS_DIR / (n + '_96.onnx')} is missing (shared/models)")
    t_start = time.time()
    load_start = os.getloadavg()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="tinyc-transfer-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"data -> {work}", flush=True)
    data = make_data(work)
    torch_version = torch_available()
    variants = [v for v in SWEPT if v != "float" or torch_version]
    if torch_version is None:
        print("torch is not installed: the float PyTorch reference is skipped", flush=True)

    results: dict[str, list[dict]] = {n: [] for n in nets}
    sweeps: dict[str, list[dict]] = {n: [] for n in nets}
    chosen: dict[str, dict] = {}
    pending = {}
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        def submit(kind, net, fn, *args):
            pending[pool.submit(fn, *args)] = (kind, net)

        # generated-C sweeps first (the slow ones; mcunet before mbv2), the float ones last
        for variant in variants:
            for lr in LR_GRID:
                for net in nets:
                    spec = row_specs(net)[SWEPT[variant]]
                    if variant == "float":
                        submit("sweep", net, run_torch, net, spec, lr, work, ("val", "test"))
                    else:
                        submit("sweep", net, run_c, net, spec, lr, work, ("val",), True)
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                kind, net = pending.pop(fut)
                res = fut.result()
                if kind != "sweep":
                    results[net].append(res)
                    continue
                sweeps[net].append(res)
                if len(sweeps[net]) < len(variants) * len(LR_GRID):
                    continue
                by = {v: [r for r in sweeps[net] if r["rounding"] == v] for v in variants}
                best = {v: best_lr(runs) for v, runs in by.items()}
                lr = best["nearest"]
                chosen[net] = {"lr": lr, "best_lr": best}
                print(f"{net}: lr {lr:g}; best lr per variant {best}", flush=True)
                for v in variants:
                    for r in by[v]:
                        if r["lr"] == lr or r["lr"] == best[v]:
                            tag = "common lr" if r["lr"] == lr else f"best {v} lr"
                            if v == "float":
                                results[net].append({**r, "lr_from": tag})
                            else:
                                submit("row", net, test_saved_c, {**r, "lr_from": tag}, work)
                for spec in row_specs(net)[2:5]:
                    submit("row", net, run_c, net, spec, lr, work, ("test",))
    runtime = time.time() - t_start
    t = os.times()     # this process + all waited-for descendants (workers, gcc, C harnesses)
    machine = {"cpus": os.cpu_count(), "loadavg_start": load_start,
               "loadavg_end": os.getloadavg(), "jobs": a.jobs,
               "cpu_seconds": t.user + t.system + t.children_user + t.children_system}
    write_results(nets, results, sweeps, chosen, data, torch_version, runtime, machine)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


ROW_ORDER = ["pub-qas-nearest", "pub-qas-stochastic", "pub-noqas-nearest", "bias-qas-nearest",
             "last-qas-nearest", "pub-float-torch"]


def write_results(nets, results, sweeps, chosen, data, torch_version, runtime, machine) -> None:
    header = ["net", "scheme", "QAS", "rounding", "lr", "lr from", "train loss",
              "test accuracy %", "trainable params B", "training.sram_bytes",
              "guard: refused updates / skipped steps"]
    rows, records = [], []
    for net in nets:
        ordered = sorted(results[net], key=lambda r: (ROW_ORDER.index(r["key"]),
                                                      r.get("lr_from") != "common lr"))
        for res in ordered:
            res.setdefault("lr_from", "common lr")
            records.append(res)
            float_row = res["engine"].startswith("PyTorch")
            rows.append([
                net, res["scheme"] + (" (float PyTorch)" if float_row else ""),
                "—" if float_row else ("yes" if res["qas"] else "no"),
                "—" if float_row else res["rounding"], f"{res['lr']:g}", res["lr_from"],
                f"{res['train_loss']:.3f}" if res["finite"] else "NaN",
                f"{100 * res['test_acc']:.1f}",
                f"{res['training']['params_sram_bytes']:,}"
                + (" (float32)" if float_row else ""),
                "—" if float_row else f"{res['training']['sram_bytes']:,}"
                + ("" if res["fits"] else " (over 256 KB)"),
                "—" if float_row else guard_cell(res)])
        if not torch_version:
            rows.append([net, published_scheme(net)["name"] + " (float PyTorch)", "—", "—",
                         "—", "—", "skipped: torch not installed", "—", "—", "—", "—"])
    variants = ["nearest", "stochastic"] + (["float"] if torch_version else [])
    sweep_rows = []
    for net in nets:
        for lr in LR_GRID:
            by = {r["rounding"]: r for r in sweeps[net] if r["lr"] == lr}
            cells = []
            for v in variants:
                r = by[v]
                cells.append(f"{100 * r['val_acc']:.1f}"
                             + (" *" if lr == chosen[net]["best_lr"][v] else ""))
            losses = [f"{by[v]['train_loss']:.3f}" if by[v]["finite"] else "NaN"
                      for v in variants]
            sweep_rows.append([net, f"{lr:g}", *cells, *losses,
                               "common lr" if lr == chosen[net]["lr"] else ""])
    prov = common.provenance(sys.argv)
    prov["versions"]["torch"] = torch_version or "not installed"
    md = ["# Transfer learning with the generated training C (Fashion-MNIST, 96 px)", "",
          common.provenance_md(prov, runtime),
          f"- machine: {machine['cpus']} CPUs, {machine['jobs']} worker processes; CPU time of "
          f"the whole run {machine['cpu_seconds']:.0f} s; 1-minute load average "
          f"{machine['loadavg_start'][0]:.1f} at the start and "
          f"{machine['loadavg_end'][0]:.1f} at the end (other work on the machine slows the "
          "runtime, never the numbers: every run is deterministic)", "",
          _method_md(data), "",
          "## Results", "",
          common.md_table(header, rows, "llllrlrrrrr"), "",
          "## Learning-rate sweep (published scheme, validation split)", "",
          "Validation accuracy % of each variant at each lr (* = that variant's best); the "
          "common lr (every row of the table) is the best of the generated C with QAS and "
          "nearest rounding, the current default.", "",
          common.md_table(["net", "lr"] + [f"val % {v}" for v in variants]
                          + [f"train loss {v}" for v in variants] + [""],
                          sweep_rows, "lr" + "r" * (2 * len(variants)) + "l"), "",
          "## Findings (computed from the tables above)", "",
          findings_md(nets, results, sweeps, chosen, torch_version), ""]
    out = common.RESULTS_DIR
    out.mkdir(exist_ok=True)
    (out / "transfer.md").write_text("\n".join(md))
    (out / "transfer.json").write_text(json.dumps(
        {"provenance": prov, "runtime_s": runtime, "machine": machine, "data": data,
         "seed": SEED, "lr_grid": LR_GRID, "chosen_lr": chosen, "sweep": sweeps,
         "rows": records}, indent=1, default=str))
    print(common.text_table(header, rows))
    print(f"wrote {out / 'transfer.md'} and .json ({runtime:.0f} s)")


def guard_cell(res: dict) -> str:
    g = res["guard"]
    return (f"{g['refused_nonfinite'] + g['refused_saturation']:,} of {g['updates']:,} / "
            f"{g['steps_skipped']} of {g['steps']}")


def guard_finding(nets, results, sweeps) -> str:
    """The training guard over every generated-C run of the bench (table rows and sweep)."""
    runs = {(r["net"], r["key"], r["lr"]): r for net in nets
            for r in list(results[net]) + list(sweeps[net]) if r.get("guard")}
    acted = sorted(f"{n}/{k}@{lr:g}" for (n, k, lr), r in runs.items()
                   if r["guard"]["steps_skipped"] or r["guard"]["refused_nonfinite"]
                   or r["guard"]["refused_saturation"])
    updates = sum(r["guard"]["updates"] for r in runs.values())
    return (f"- Training guard (runtime_c/include/tinyc/train.h): over the {len(runs)} "
            f"generated-C runs of this bench (sweep included; {updates:,} channel updates), "
            + (f"it acted in {len(acted)}: {', '.join(acted)}." if acted else
               "it refused no update and skipped no step."))


def findings_md(nets, results, sweeps, chosen, torch_version) -> str:
    """Plain statements of the comparisons the issue asks for (no hand-written numbers)."""
    se = 100 * math.sqrt(0.8 * 0.2 / N_TEST)
    se_val = 100 * math.sqrt(0.8 * 0.2 / N_VAL)
    lines = [f"- Noise: one standard error of an accuracy near 80% is about {se:.1f} points on "
             f"the {N_TEST} test images and {se_val:.1f} on the {N_VAL} validation images; "
             "single differences of 1-2 points are within noise."]
    for net in nets:
        rows = {(x["key"], x["lr_from"]): x for x in results[net]}
        acc = {k: 100 * v["test_acc"] for k, v in rows.items()}
        common_lr = chosen[net]["lr"]
        c = lambda key: acc.get((key, "common lr"))   # noqa: E731
        near, sto = c("pub-qas-nearest"), c("pub-qas-stochastic")
        pub = rows[("pub-qas-nearest", "common lr")]["scheme"]
        # the generated-C configuration chosen on VALIDATION (rounding and lr), and its test row
        sel = max((x for x in sweeps[net] if x["rounding"] != "float"),
                  key=lambda x: (round(x["val_acc"], 6), -x["lr"]))
        sel_row = next(x for x in results[net]
                       if x["key"] == sel["key"] and x["lr"] == sel["lr"])
        best_c = 100 * sel_row["test_acc"]
        best_txt = f"{sel['rounding']} rounding at lr {sel['lr']:g}, chosen on validation"
        lines.append(f"- **{net}** (common lr {common_lr:g}):")
        lines.append(f"  - QAS: '{pub}' nearest {near:.1f}% with QAS vs "
                     f"{c('pub-noqas-nearest'):.1f}% without.")
        diffs = []
        for lr in LR_GRID:
            by = {x["rounding"]: x for x in sweeps[net] if x["lr"] == lr}
            if max(by["nearest"]["val_acc"], by["stochastic"]["val_acc"]) \
                    > 1 / CLASSES + CHANCE_MARGIN:
                diffs.append(100 * (by["stochastic"]["val_acc"] - by["nearest"]["val_acc"]))
        diffs.append(sto - near)
        lines.append(f"  - rounding: stochastic - nearest, '{pub}' with QAS, over "
                     f"{len(diffs)} paired runs (validation at each sweep lr where training "
                     f"did not diverge, then test at the common lr): "
                     + ", ".join(f"{d:+.1f}" for d in diffs)
                     + f" points (mean {np.mean(diffs):+.1f}); best validation accuracy "
                     f"{_best_val(sweeps[net], 'nearest'):.1f}% nearest vs "
                     f"{_best_val(sweeps[net], 'stochastic'):.1f}% stochastic.")
        bias, last = c("bias-qas-nearest"), c("last-qas-nearest")
        lines.append(f"  - schemes (QAS, nearest, common lr): '{pub}' {near:.1f}% "
                     f"(stochastic {sto:.1f}%) vs bias-only {bias:.1f}% vs last layer only "
                     f"{last:.1f}%. Target 'clearly above bias-only' (by more than 2 points; "
                     f"generated C '{pub}' with QAS, {best_txt}: {best_c:.1f}%): "
                     + ("met" if best_c - bias > 2 else "NOT met") + ".")
        if torch_version:
            fl = c("pub-float-torch")
            fl_own = acc.get(("pub-float-torch", "best float lr"), fl)
            own_lr = chosen[net]["best_lr"]["float"]
            lines.append(f"  - float PyTorch reference: {fl:.1f}% at the common lr "
                         f"(generated C with QAS there: nearest {near - fl:+.1f}, stochastic "
                         f"{sto - fl:+.1f} points), {fl_own:.1f}% at its own best validation "
                         f"lr {own_lr:g}. Target 'within 2 points of the float reference', "
                         f"each side at its lr chosen on validation (generated C {best_txt}: "
                         f"{best_c:.1f}%, {best_c - fl_own:+.1f} points): "
                         f"{'met' if best_c >= fl_own - 2 else 'NOT met'}.")
        else:
            lines.append("  - float reference skipped (torch not installed).")
        b = rows[("bias-qas-nearest", "common lr")]
        if not b["fits"]:
            lines.append(f"  - bias-only needs training.sram_bytes {b['training']['sram_bytes']:,}"
                         " B, over the 256 KB board: back-propagating to the first layer keeps "
                         "float32 gradients of the high-resolution early activations (this row "
                         "runs in emulation only).")
        f = rows[("pub-noqas-nearest", "common lr")].get("noqas_lr_factors")
        if f:
            span = math.log10(max(f["weights"][1], f["biases"][1])
                              / min(f["weights"][0], f["biases"][0]))
            lines.append(
                "  - without QAS the integer step equals a float SGD step with the lr "
                f"multiplied by s_w^2 = {f['weights'][0]:.1e}..{f['weights'][1]:.1e} (weights, "
                f"per-layer medians) and (s_w s_x)^2 = {f['biases'][0]:.1e}.."
                f"{f['biases'][1]:.1e} (biases), so at an lr that suits QAS almost every "
                "update rounds to 0 and the model keeps its initial random head; the factors "
                f"span {span:.1f} orders of magnitude across the trained tensors, so no single "
                "lr suits them all (what QAS corrects).")
    lines.append(guard_finding(nets, results, sweeps))
    return "\n".join(lines)


def _best_val(runs: list[dict], variant: str) -> float:
    return 100 * max(r["val_acc"] for r in runs if r["rounding"] == variant)


def _method_md(data: dict) -> str:
    return "\n".join([
        "Each shared net (ImageNet-pretrained, 96x96 input) gets a new 10-class head "
        "(`tinyc build --train SCHEME --num-classes 10`, deterministic initial head) and is "
        "trained by the generated `tinyc_train_step()` compiled with host gcc "
        "(`tinyc.targets.host.HostTrainer`, default flags): int8 forward, float32 backward, "
        "integer updates, plain SGD, batch 1, one epoch. Test accuracy is that of the generated "
        "`tinyc_infer()` (argmax of the int8 logits).",
        "",
        f"- Data: Debian `dataset-fashion-mnist` idx files (images and labels); 28x28 grey "
        f"resized to 96x96 (PIL bilinear), replicated to 3 channels, p/127.5 - 1, quantized with "
        f"each build's input scale and zero point. Class-balanced, disjoint, seed {SEED}: "
        f"train {data['train']['count']} (train file, one fixed shuffled order for every run), "
        f"validation {data['val']['count']} (train file, learning-rate choice only), "
        f"calibration {data['calib']['count']} (train file, `--calib`), "
        f"test {data['test']['count']} (t10k file, never used for a choice).",
        "- Schemes: the published '99kb' sparse update (`shared/models/README.md`); `bias-only` "
        "(every conv bias + the classifier); last layer = `{\"bias_last\": 0, \"weights\": {}}` "
        "(the classifier only). The classifier is always trained fully.",
        f"- Learning rate: the published scheme is swept over "
        f"{', '.join(f'{v:g}' for v in LR_GRID)} three ways (generated C with QAS and nearest "
        "rounding, the same with stochastic rounding, float PyTorch where torch is "
        "installed), trained on the train split and scored on the validation split. The "
        "best nearest-rounding lr is the *common lr* of every row (no per-row sweep for "
        "no-QAS, bias-only and last layer); stochastic "
        "rounding and the float reference get a second row at their own best lr where it "
        "differs. Rows that come from the sweep are those runs, evaluated on the test split.",
        "- Float reference: the same published scheme in float32 PyTorch "
        "(`bench/torch_reference.py`): a float model built from tinyc's float IR "
        "(`torch_reference.py --check`: equal to onnxruntime to 1e-6) with the same initial "
        "(float) head; only the scheme's parameters are trained, weight gradients masked to "
        "the same input channels as the C build; same samples, order, batch 1, plain SGD; "
        "float input (not quantized).",
        "- trainable params B: `training.params_sram_bytes` (int8 weights + int32 biases "
        "copied to SRAM); for the float row, float32 bytes of the same tensors. "
        "training.sram_bytes: arena + trainable parameters + stack reserve of board "
        f"{common.BOARD} (report.json).",
    ])


if __name__ == "__main__":
    sys.exit(main())
