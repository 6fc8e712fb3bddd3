"""Does `--lr auto`'s grid need more points now that the rate decays linearly? (issue 12)

bench/results/train_decay.md found the best peak under linear decay at 0.002 for mcunet-5fps,
between the grid points 0.001 and 0.003. Here: mcunet-5fps at 96 px on Fashion-MNIST (the splits
of bench/transfer.py: 2,000 training samples in the order of SEED, 500 val, 1,000 test), a fixed
scheme (KEY: `s0` = the weighted scheme auto chose on seed 0 in train_decay.md, 25 biases +
weights {21: 1, 30: 1, 24: 0.25, 39: 0.5}, body at 0.3; or `cls` = classifier only), built with
the default --lr-schedule linear. Then:
1. compiler/autotune.choose_lr over LR_GRID plus 0.002 and 0.006 on the 2,000 samples (as
   `--lr auto` does: four fifths trained, one fifth held out), and the pick of its rule (one
   standard error) on LR_GRID alone and on the widened grid;
2. one epoch over all 2,000 samples at every rate of the widened grid (linear decay), the test
   and val accuracy: what each pick is worth.
One JSON line to WORK/lr_grid.jsonl per run.

Usage: python bench/lr_grid_decay.py WORK KEY [SEED]
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import transfer as T  # noqa: E402

SCHEMES = {"s0": {"name": "mc_s0", "bias_last": 25,
                  "weights": {"21": 1, "30": 1, "24": 0.25, "39": 0.5}},
           "cls": {"name": "classifier only", "bias_last": 0, "weights": {}}}
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


def main(argv):
    from tinyc.autotune import LR_GRID, choose_lr
    from tinyc.build import BuildOptions
    from tinyc.lr_schedule import rates
    from tinyc.targets.host import HostTrainer
    warnings.simplefilter("ignore")
    work, key = Path(argv[0]), argv[1]
    seed = int(argv[2]) if len(argv) > 2 else 0
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "test_y.npy").exists():
        T.make_data(work)
    xtr, ytr = T.load_split(work, "train")
    order = np.random.default_rng(seed).permutation(len(ytr)) if seed else np.arange(len(ytr))
    xs, ys = xtr[order], ytr[order]
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
    print(json.dumps(res))
    with open(work / "lr_grid.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
