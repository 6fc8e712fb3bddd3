"""What `--train auto --train-data` ranks, without building: the probe's gradient signal per
conv layer (biases; weights summed over their input channels) and the greedy chain of updates,
for one net at 96 px on the Fashion-MNIST splits of bench/transfer.py in the order of SEED (as
bench/train_auto_eval.py builds them). For diagnosing a pick (issue 12).

Usage: python bench/auto_probe_chain.py [--arena] WORK NET SEED [SAMPLES]
  WORK: the folder of bench/train_auto_eval.py (its data are made there if missing)
  SAMPLES: probe samples (autotune.fisher_of_updates; default PROBE_SAMPLES)
Prints the signals (x1e3), the chain (one entry per step: bias->K trains the last K biases,
wI:R layer I's weights at ratio R) and the probe's host seconds. --arena instead: the planned
training arena of "the last K biases" for every K, with the automatic patch schedule the
build uses (no stack reserve), and the trained parameters' SRAM.
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import transfer as T  # noqa: E402


def main(argv):
    from tinyc import autotune
    from tinyc.calib import load_calibration
    from tinyc.datasets import labelled_data_for_graph
    from tinyc.passes.autodiff import TrainOptions
    from tinyc.passes.train_head import classifier, replace_head
    from tinyc.pipeline import (NEW_HEAD_LOGIT_RANGE, check_model_input, import_float,
                                quantize)
    warnings.simplefilter("ignore")
    arena = "--arena" in argv
    argv = [a for a in argv if a != "--arena"]
    work, net, seed = Path(argv[0]), argv[1], int(argv[2])
    samples = int(argv[3]) if len(argv) > 3 else autotune.PROBE_SAMPLES
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "test_y.npy").exists():
        T.make_data(work)
    # the int8 graph with its new head, as pipeline.training_graph makes it for the build
    g = import_float(str(common.MODELS_DIR / f"{net}_96.onnx"), None)
    raw = load_calibration(str(work / "calib_x.npy"), g.meta["input_nchw"], (0.5,) * 3,
                           (0.5,) * 3, T.N_CALIB, g.meta.get("input_layout"))
    calib = check_model_input(g, raw, "calibration data", batch=True)
    g = replace_head(g, T.CLASSES)
    gq = quantize(g, calib, {classifier(g).outputs[0]: NEW_HEAD_LOGIT_RANGE})
    if arena:
        return print_arenas(gq)
    xs, ys = T.train_in_order(work, seed)
    path = work / f"td_s{seed}.npz"
    np.savez(path, x=xs, y=ys)
    x, y = labelled_data_for_graph(gq, str(path), "ce")
    t0 = time.time()
    fisher = autotune.fisher_of_updates(gq, x, y, TrainOptions(body_lr_scale=0.3), samples)
    seconds = time.time() - t0
    np.set_printoptions(precision=3, linewidth=120)
    print(f"{net} seed {seed}: {fisher['samples']} probe samples, probe {seconds:.1f} s")
    print("bias signal x1e3 by layer:", np.round(fisher["bias"] * 1e3, 1).tolist())
    print("weight signal x1e3 by layer:",
          {i: round(float(v.sum()) * 1e3, 1) for i, v in fisher["channels"].items()})
    chain = autotune.ranked_schemes(gq, fisher)
    steps = []
    for a, b in zip(chain, chain[1:]):
        step = [f"bias->{b['bias_last']}"] if b["bias_last"] != a["bias_last"] else []
        step += [f"w{i}:{r:g}" for i, r in b["weights"].items() if a["weights"].get(i) != r]
        steps.append(" ".join(step))
    print("chain:", " | ".join(f"{k} {s}" for k, s in enumerate(steps, 1)))


def print_arenas(gq) -> None:
    from tinyc.memory.planner import training_memory
    from tinyc.memory.schedule import choose_schedule, training_max_split
    from tinyc.passes.autodiff import TrainOptions, build_training_graph
    from tinyc.passes.sparse_update import conv_layers, resolve_scheme
    n = len(conv_layers(gq))
    for k in range(n + 1):
        t = build_training_graph(gq, resolve_scheme(gq, {"bias_last": k, "weights": {}}),
                                 TrainOptions(body_lr_scale=0.3))
        sched = choose_schedule(t, "auto", None, training_max_split(t))
        m = training_memory(sched.graph, sched.plan, 0)
        print(f"last {k} biases (down to layer {n - k}): arena {m['arena_bytes']} B, "
              f"trained parameters {m['params_sram_bytes']} B")


if __name__ == "__main__":
    main(sys.argv[1:])
