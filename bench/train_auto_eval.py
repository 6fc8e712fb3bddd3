"""One run of the --train auto study (issue 12): a build on Fashion-MNIST at 96 px (the splits of
bench/transfer.py), one epoch of the generated C on the host (HostTrainer) over the 2,000
training samples in the order of SEED (0: as drawn), then accuracy on the 1,000 test and 500
validation images. One JSON line per run is appended to WORK/results.jsonl.

Usage: python bench/train_auto_eval.py [--decay=KIND] WORK NET KEY SEED [SRAM_BYTES] [LR]
           [WARMUP [BODY_SCALE]]
  NET: mbv2-w0.35 | mcunet-5fps (shared/models/NET_96.onnx)
  KEY: auto (--train auto --train-data, budget SRAM_BYTES, default 262144) | cls (classifier
       only) | a published scheme of shared/models/README.md (49kb, 99kb, 138kb, 148kb) |
       file:SCHEME.json (a scheme, e.g. one auto chose, without the probe)
  WARMUP: head warm-up steps (--train-warmup; default 0); BODY_SCALE: --body-lr-scale
  (default: the build's: 0.3 for auto under --decay=const, 1 otherwise)
  --decay=KIND: the rate over the epoch, given per step:
       build (default: the build's --lr-schedule, linear from LR to LR/T: tinyc's own rates,
       lr_schedule.py) | const (the build made with --lr-schedule constant) | lin0 (linear from
       LR to exactly 0 at the last step, the measured study's bench/results/train_decay.md) |
       lin10 (linear from LR to LR/10)
Selection host time is in the line's auto.probe_seconds and auto.plan_seconds.
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

PUBLISHED = common.PUBLISHED_SCHEMES   # shared/models/README.md


def schedule(kind: str, lr: float, steps: int, rep: dict):
    """The rate of each step: the build's schedule (tinyc's rates), constant, or linear over the
    epoch from lr to 0 / to lr/10."""
    from tinyc.lr_schedule import of_report, rates
    if kind in ("build", "const"):
        return rates(lr, of_report(rep) if kind == "build" else "constant", steps)
    ends = {"lin0": 0.0, "lin10": lr / 10}
    if kind not in ends:
        raise SystemExit(f"--decay={kind}: not one of build, const, {', '.join(ends)}")
    return np.linspace(lr, ends[kind], steps, dtype=np.float32)


def main(argv):
    from tinyc.build import BuildOptions
    from tinyc.targets.host import HostTrainer
    warnings.simplefilter("ignore")
    decay = next((a.split("=", 1)[1] for a in argv if a.startswith("--decay=")), "build")
    argv = [a for a in argv if not a.startswith("--decay=")]
    work, net, key, seed = Path(argv[0]), argv[1], argv[2], int(argv[3])
    sram = int(argv[4]) if len(argv) > 4 else 262144
    lr = float(argv[5]) if len(argv) > 5 else 0.001
    warmup = {"train_warmup": int(argv[6])} if len(argv) > 6 else {}
    if len(argv) > 7:   # the body's rate relative to the head's
        warmup["body_lr_scale"] = float(argv[7])
    work.mkdir(parents=True, exist_ok=True)
    xs, ys = T.train_in_order(work, seed)
    base = dict(calib=str(work / "calib_x.npy"), calib_limit=T.N_CALIB, num_classes=10, lr=lr,
                lr_schedule="constant" if decay == "const" else "linear", **warmup)
    if key == "auto":
        np.savez(work / f"td_s{seed}.npz", x=xs, y=ys)
        opts = BuildOptions(train="auto", train_data=str(work / f"td_s{seed}.npz"), sram=sram,
                            **base)
    elif key == "cls":
        opts = BuildOptions(train={"name": "classifier only", "bias_last": 0, "weights": {}},
                            **base)
    elif key.startswith("file:"):   # a scheme .json (e.g. what auto chose, without its probe)
        opts = BuildOptions(train=json.loads(Path(key[5:]).read_text()), **base)
        key = Path(key[5:]).stem
    else:
        opts = BuildOptions(train=common.published_scheme(net, key), **base)
    given = [argv[i] if len(argv) > i else "d" for i in (6, 7)]   # d: the build's default
    out = work / f"{net}_{key}_{sram}_s{seed}_lr{lr:g}_w{given[0]}_b{given[1]}"
    t0 = time.time()
    rep = common.build_measured(common.MODELS_DIR / f"{net}_96.onnx", common.BOARD, out, opts)
    build_s = time.time() - t0
    with HostTrainer(out) as tr:
        losses = tr.train(T.quantized(rep, xs), ys, schedule(decay, lr, len(ys), rep))
        res = dict(net=net, key=key, seed=seed, sram=sram, lr=lr, decay=decay,
                   test=T.accuracy_c(tr, rep, *T.load_split(work, "test")),
                   val=T.accuracy_c(tr, rep, *T.load_split(work, "val")),
                   warmup_steps=rep["training"].get("warmup_steps"),
                   body_lr_scale=rep["build_options"].get("body_lr_scale"),
                   scheme=rep["build_options"]["train"], sram_bytes=rep["training"]["sram_bytes"],
                   build_s=round(build_s, 1),
                   late_loss=float(np.mean(losses[len(losses) // 2:])),
                   auto=rep["training"].get("auto"))
    print(json.dumps(res))
    with open(work / "results.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
