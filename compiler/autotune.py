"""Choices tinyc makes on the host from the user's labelled data (`tinyc build --train-data`).

`--lr auto`: plain SGD on an int8 model is decided by its learning rate, and a device cannot
sweep it. tinyc tries every rate of LR_GRID with the generated training step itself (the build's
C compiled for the host: tinyc.targets.host.HostTrainer), each from the built parameters: one
epoch over a training split of the data (in a seeded order), then the accuracy of tinyc_infer
on the held-out validation split (--loss mse: the lowest squared error); the epoch visits the
samples in the order `tinyc emulate --train-data` would. The best rate wins,
ties going to the smaller one; a rate whose run the guard had to stop (skipped steps, refused
updates beyond one in a thousand) is never chosen over one that trained cleanly. Deterministic:
same data, same choice. The runs and their scores go into report.json (training.lr_auto).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .errors import TinycError

LR_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03)
VALIDATION_FRACTION = 0.2
MIN_SAMPLES = 20          # fewer labelled samples cannot tell learning rates apart
SPLIT_SEED = 20261207
GUARD_TOLERANCE = 1e-3    # refused channel updates per update that still count as clean


def split_train_validation(y: np.ndarray, classes: int | None, fraction=VALIDATION_FRACTION,
                           seed=SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of a training and a validation split; with class labels, `fraction` of
    each class (at least one sample of every class with two or more) is held out."""
    rng = np.random.default_rng(seed)
    n = len(y)
    if classes is None:
        order = rng.permutation(n)
        k = max(1, int(round(fraction * n)))
        return np.sort(order[k:]), np.sort(order[:k])
    val = []
    for c in range(classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        if len(idx) >= 2:
            val.extend(idx[:max(1, int(round(fraction * len(idx))))])
    val = np.sort(np.asarray(val, np.int64))
    return np.setdiff1d(np.arange(n), val), val


def choose_lr(lib_dir: Path, x: np.ndarray, y: np.ndarray, mse: bool, output_scale: float,
              grid=LR_GRID, progress=None) -> dict:
    """Train one epoch at each rate of `grid` on the training split of (x, y) with the
    generated C in `lib_dir` (the model library of a training build), score each on the
    validation split; returns the choice and every run's figures."""
    if len(x) < MIN_SAMPLES:
        raise TinycError(f"--lr auto: {len(x)} labelled samples; it needs at least "
                         f"{MIN_SAMPLES} (a fifth of them is held out to compare the rates)")
    from .targets.firmware_train import training_order
    from .targets.host import HostTrainer, build_host_training

    t0 = time.time()
    train_idx, val_idx = split_train_validation(y, None if mse else int(y.max()) + 1)
    # one epoch over the training split in the order `tinyc emulate --train-data` would take it
    train_idx = train_idx[training_order(len(train_idx), 1)]
    with tempfile.TemporaryDirectory(prefix="tinyc-lr-auto-") as tmp:
        lib = Path(tmp) / "lib"
        shutil.copytree(lib_dir, lib)   # the harness is compiled beside a copy, not in OUT
        build_host_training(lib)

        def run(lr: float) -> dict:
            with HostTrainer(lib) as t:
                losses = np.asarray(t.train(x[train_idx], y[train_idx], lr), np.float64)
                out = t.infer(x[val_idx]).reshape(len(val_idx), -1)
                guard = t.guard_stats()
            finite = losses[np.isfinite(losses)]
            res = {"lr": lr, "train_loss": float(finite.mean()) if len(finite) else None,
                   "steps_skipped": int(guard.steps_skipped),
                   "updates_refused": int(guard.refused), "updates": int(guard.updates)}
            if mse:
                d = (out.astype(np.float64) - y[val_idx].reshape(len(val_idx), -1)) * output_scale
                res["val_mse"] = float(np.mean(d * d))
            else:
                res["val_accuracy"] = float(np.mean(np.argmax(out, axis=1) == y[val_idx]))
            if progress:
                progress(res)
            return res

        workers = max(1, min(len(grid), _cpus()))
        with ThreadPoolExecutor(max_workers=workers) as pool:   # each run is a child process
            runs = list(pool.map(run, grid))
    clean = [r for r in runs if r["steps_skipped"] == 0
             and r["updates_refused"] <= GUARD_TOLERANCE * max(r["updates"], 1)]
    pool_ = clean or runs

    def score(r):
        return -r["val_mse"] if mse else r["val_accuracy"]
    best = max(pool_, key=lambda r: (round(score(r), 9), -r["lr"]))
    return {"lr": best["lr"], "grid": list(grid), "runs": runs,
            "train_samples": int(len(train_idx)), "validation_samples": int(len(val_idx)),
            "metric": "validation mse" if mse else "validation accuracy",
            "seconds": round(time.time() - t0, 1)}


def _cpus() -> int:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)
