"""Choices tinyc makes on the host from the user's labelled data (`tinyc build --train-data`).

`--lr auto`: plain SGD on an int8 model is decided by its learning rate, and a device cannot
sweep it. tinyc tries every rate of LR_GRID with the generated training step itself (the build's
C compiled for the host: tinyc.targets.host.HostTrainer), each from the built parameters: one
epoch over four fifths of the data, in the order `tinyc emulate --train-data` would take them,
each rate as the peak of the build's schedule over that epoch (--lr-schedule, lr_schedule.py).
The final model of each trial decides: its loss on the held-out fifth (softmax cross-entropy
of the int8 logits dequantized with the output scale; squared error for mse). Under a decaying
rate a high peak trains noisily early and settles late, which the loss during the epoch (the
rule until issue 12's bench, kept beside as late_loss and tail_loss) does not see: on six
cases of bench/results/lr_grid_decay.md it picked 0.003 every time, up to 2.8 test points
below the sweep's best; the lowest held-out loss missed by 1.3 at worst and landed within 1
point in 4 of 6. The rate of the lowest held-out loss wins. Each run records how far its loss
is above the lowest and the standard error of that difference (paired: the same samples); a
one-standard-error rule toward the gentler rate was measured too and cost up to 1.4 test
points (under decay the best rate was never below the lowest held-out loss's). A rate whose
run the guard had to stop (skipped steps, refused updates beyond one in a thousand) is never
chosen over one that trained cleanly. Deterministic: same data, same choice. The runs and their
scores go into report.json (training.lr_auto).
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from .errors import TinycError

# each the peak of the build's schedule; under linear decay a grid widened by 0.002 and 0.006
# picked no better (mcunet-5fps: bench/results/lr_grid_decay.md)
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
              grid=LR_GRID, progress=None, lr_schedule: str | None = None,
              keep_samples: bool = False) -> dict:
    """Train one epoch from each peak rate of `grid` under `lr_schedule` on the training split
    of (x, y) with the generated C in `lib_dir` (the model library of a training build), score
    each on the validation split; returns the choice and every run's figures (every candidate
    score: see run_scores). keep_samples: each run also keeps its per-step training losses and
    per-sample validation losses and hits (`losses`, `val_losses`, `val_correct`, `val_logits`), for benches that compare selection
    rules offline (bench/lr_grid_decay.py); the build leaves them out of report.json."""
    from .lr_schedule import DEFAULT_LR_SCHEDULE, rates
    lr_schedule = lr_schedule or DEFAULT_LR_SCHEDULE
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
        held_out = {}      # per rate: the final model's loss on each held-out sample

        def run(lr: float) -> dict:
            with HostTrainer(lib) as t:
                losses = np.asarray(t.train(x[train_idx], y[train_idx],
                                            rates(lr, lr_schedule, len(train_idx))), np.float64)
                out = t.infer(x[val_idx]).reshape(len(val_idx), -1)
                guard = t.guard_stats()
            val_losses = validation_losses(out, y[val_idx], mse, output_scale)
            held_out[lr] = val_losses
            res = {"lr": lr, **run_scores(losses, val_losses),
                   "steps_skipped": int(guard.steps_skipped),
                   "updates_refused": int(guard.refused), "updates": int(guard.updates)}
            if mse:
                res["val_mse"] = float(np.mean(val_losses))
            else:
                res["val_accuracy"] = float(np.mean(np.argmax(out, axis=1) == y[val_idx]))
            if keep_samples:
                res["losses"], res["val_losses"] = losses.tolist(), val_losses.tolist()
                if not mse:
                    res["val_correct"] = (np.argmax(out, axis=1) == y[val_idx]).tolist()
                    res["val_logits"] = out.tolist()
            if progress:
                progress(res)
            return res

        workers = max(1, min(len(grid), _cpus()))
        with ThreadPoolExecutor(max_workers=workers) as pool:   # each run is a child process
            runs = list(pool.map(run, grid))
    best = pick_lr(runs, held_out)
    if best is None:
        raise TinycError("--lr auto: training diverged at every rate of "
                         f"{', '.join(f'{v:g}' for v in grid)} (the guard stopped each run); "
                         "check the data (inputs in the model layout, labels) or give --lr")
    return {"lr": best, "grid": list(grid), "lr_schedule": lr_schedule, "runs": runs,
            "train_samples": int(len(train_idx)), "validation_samples": int(len(val_idx)),
            "metric": LR_METRIC, "seconds": round(time.time() - t0, 1)}


LR_METRIC = "the final model's loss on the held-out samples (the lowest wins)"


def validation_losses(out: np.ndarray, y: np.ndarray, mse: bool, output_scale: float) -> \
        np.ndarray:
    """Per held-out sample: the softmax cross-entropy of its int8 logits dequantized with the
    output scale (the zero point cancels in the softmax), or its squared error (mse)."""
    z = out.astype(np.float64) * output_scale
    if mse:
        d = z - y.reshape(len(y), -1) * output_scale
        return np.mean(d * d, axis=1)
    z -= z.max(axis=1, keepdims=True)
    return np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]


def _mean_se(v: np.ndarray) -> tuple[float | None, float | None]:
    if len(v) < 2 or not np.all(np.isfinite(v)):
        return None, None
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v)))


def run_scores(losses: np.ndarray, val_losses: np.ndarray) -> dict:
    """A trial run's candidate scores, each a mean with its standard error (None if a loss was
    not finite): the training loss over the second half of the epoch (late_loss) and over its
    last quarter (tail_loss), each computed before that step's own update; the final model's
    loss on the held-out samples (val_loss)."""
    finite = losses[np.isfinite(losses)]
    n = len(losses)
    res = {"train_loss": float(finite.mean()) if len(finite) else None}
    for key, part in (("late_loss", losses[n // 2:]), ("tail_loss", losses[n - n // 4:]),
                      ("val_loss", val_losses)):
        res[key], res[key + "_se"] = _mean_se(np.asarray(part, np.float64))
    return res


def clean_run(r: dict) -> bool:
    """The guard never had to stop the run (no skipped steps, refused updates within
    GUARD_TOLERANCE) and its scores are finite."""
    return (r["steps_skipped"] == 0 and r["late_loss"] is not None
            and r["updates_refused"] <= GUARD_TOLERANCE * max(r["updates"], 1))


def pick_lr(runs: list[dict], val_losses: dict) -> float | None:
    """The rate --lr auto takes from the trial runs (None if none trained cleanly): the clean
    rate whose final model has the lowest loss on the held-out samples (val_losses: per rate,
    the per-sample losses; an exact tie goes to the smaller rate). Sets each clean run's
    `val_loss_excess` over the lowest and its standard error `val_loss_excess_se` (paired: the
    same samples), so that the report shows which rates the held-out set cannot tell apart. No
    tie rule toward the smaller rate: under a decaying rate it cost up to 1.4 test points and
    helped in no case measured (bench/results/lr_grid_decay.md)."""
    clean = [r for r in runs if clean_run(r) and r["val_loss"] is not None]
    if not clean:
        return None
    lowest = min(clean, key=lambda r: (r["val_loss"], r["lr"]))
    ref = np.asarray(val_losses[lowest["lr"]], np.float64)
    for r in clean:
        d = np.asarray(val_losses[r["lr"]], np.float64) - ref
        r["val_loss_excess"] = float(d.mean())
        r["val_loss_excess_se"] = float(d.std(ddof=1) / np.sqrt(len(d)))
    return lowest["lr"]


def _cpus() -> int:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)


# ---------------------------------------------------------------- --train auto with data
# `--train auto --train-data`: which biases and weight channels to update, from the user's data.
# Each candidate update (a conv layer's bias; its weights read from 1/8, 1/4, 1/2, all of its
# input channels, the channels of largest weight norm first as sparse_update.top_channels picks
# them) is scored by its gradient signal on the data: |E g|^2, the squared norm of the mean
# gradient of the loss w.r.t. those parameters over the probe samples (an unbiased estimate from
# the per-sample sums), i.e. the loss decrease per unit of lr that plain SGD buys there over an
# epoch (QAS makes the integer step the float one). Its Fisher information E|g|^2 adds the
# gradient's noise, which moves the parameters without lowering the loss (kept beside, unused).
# The gradients come from one probe pass of the numpy reference over PROBE_SAMPLES samples,
# after a float fit of the new head on PROBE_SAMPLES others (the random head's gradients would
# say little, and a head fitted on the probe samples themselves leaves them nothing to learn).
# Both sets are chosen by the samples' contents (probe_samples), so the order of --train-data
# does not change the pick. 256 each, not 64: on mcunet-5fps at 128 KB (Fashion-MNIST), the 64
# probe samples of one order (seed 1) measured the bias signal of shallow layers 3-6 4-11x
# above what 256 measure (large per-sample gradients, a mean near zero: noise), and the chain
# took 38 biases before any weight (the pick: bias-only, +0.6 points over classifier only where
# a weighted scheme gives +3); with 128 or 256 samples the same order ranks layer 39's weights
# at step 4 (bench/results/train_auto.md). The per-channel weight gradients are one matrix
# product per kernel tap (channel_weight_grads; the reference's pixel loop was half the probe).
# Candidates are ranked greedily by signal per byte (trained parameters, saved input channels,
# the float gradient map a deeper backward needs), whole blocks at a time: the biases down to
# any depth, a layer's weights up to any ratio together with the biases down to that layer (the
# backward pass reaches it anyway, and the paper's schemes train them). The longest prefix of
# that ranking whose planned training SRAM fits the budget wins (memory/train_budget.py bisects
# over it with the real planner), except that while more than 5% of the budget is free the step
# over it is stepped around: the ranking goes on without that unit and what needs it
# (ranked_schemes' start / too_big). A deeper backward's arena is neither monotone nor small
# (mcunet-5fps: 33 KB down to 32 biases, 119 KB at 33, 60 KB at 34), and on mbv2-w0.35 at 256 KB
# one deep bias over the budget kept 6 weight layers that fit out of the pick.
# The build trains the chosen body at the head's rate under the linear schedule (the default),
# at 0.3 of it under a constant rate (build.AUTO_BODY_LR_SCALE: at a constant full rate the
# body's batch-1 steps cost up to 7 points).
RATIOS = (0.125, 0.25, 0.5, 1.0)
PROBE_SAMPLES = 256
HEAD_FIT_EPOCHS = 30


def linear_free_weight_layers(convs) -> list[int]:
    """The weight candidates: the deeper half of the conv layers, those followed by an
    activation (a clamp). A linear conv (an inverted residual's projection into the residual
    stream) has the largest gradient signal of all, yet training its weights made every
    measured run worse (mbv2-w0.35, Fashion-MNIST, two orders: the late training loss 0.65-0.69
    with them, 0.57 without; bench/train_auto_eval.py), and the published schemes leave them
    frozen too."""
    n = len(convs)
    return [i for i in range(n // 2, n) if convs[i].attrs.get("clamp") is not None]


def probe_samples(x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """Up to n sample indices, as many of each class as possible (round robin), in an order
    given by the samples' contents (a hash of each input and label), not by their positions:
    the same data in any order gives the same samples in the same order, hence the same probe
    and the same scheme (by index, three orders of one data set picked three schemes). Returned
    in that content order, so that every other one is a fair split of the classes."""
    keys = np.array([int.from_bytes(hashlib.blake2b(np.ascontiguousarray(x[i]).tobytes()
                                                    + np.asarray(y[i]).tobytes(),
                                                    digest_size=8).digest(), "little")
                     for i in range(len(y))], dtype=np.uint64)
    order = np.argsort(keys, kind="stable")   # equal keys: equal samples, either will do
    if y.dtype.kind not in "iu" or y.ndim != 1:
        return order[:n]
    ranked = y[order]
    pools = [list(order[ranked == c]) for c in np.unique(y)]
    out = []
    while len(out) < min(n, len(y)):
        for p in pools:
            if p and len(out) < n:
                out.append(p.pop(0))
    rank = np.empty(len(y), np.int64)
    rank[order] = np.arange(len(y))
    return np.asarray(sorted(out, key=lambda i: rank[i]), np.int64)   # classes mixed


def _fit_head(gq, probe, feats: np.ndarray, labels: np.ndarray) -> None:
    """Softmax regression of the new head on the probe samples' (dequantized) features, in
    float, then written into the probe graph's int8 head at its own scales."""
    from .passes.train_head import classifier
    head = classifier(probe)
    wt, bt = probe.tensors[head.inputs[1]], probe.tensors[head.inputs[2]]
    s_w = np.asarray(wt.q.scale, np.float64).reshape(-1, 1)
    w = wt.data.reshape(wt.shape[0], -1).astype(np.float64) * s_w
    b = np.zeros(wt.shape[0])
    for _ in range(HEAD_FIT_EPOCHS):
        z = feats @ w.T + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(labels)), labels] -= 1.0
        w -= 0.5 * (p.T @ feats) / len(labels)
        b -= 0.5 * p.mean(axis=0)
    wt.data = np.clip(np.round(w / s_w), -127, 127).astype(np.int8).reshape(wt.shape)
    b_scale = np.asarray(bt.q.scale, np.float64)
    bt.data = np.clip(np.round(b / b_scale), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)


def channel_weight_grads(gy: np.ndarray, x_q: np.ndarray, attrs: dict, kernel,
                         group_of: np.ndarray, groups: int) -> np.ndarray:
    """The weight gradient of each kept input channel over the output channels of its group,
    (k, out_c / groups, KH, KW), in float64: reference/train.py weight_grad's values (it sums in
    float32, pixel by pixel, for the C step's rounding) as one matrix product per kernel tap,
    the probe's cost otherwise. gy (OH, OW, O); x_q (1, H, W, k) the kept channels;
    group_of: each kept channel's group."""
    kh, kw = kernel
    sh, sw = attrs["strides"]
    dh, dw = attrs["dilations"]
    t, l, bt, r = attrs["pads"]
    xr = attrs["x_scale"] * (x_q[0].astype(np.float64) - attrs["x_zero_point"])
    h, wd, k = xr.shape
    oh, ow, cout = gy.shape
    xp = np.zeros((h + t + bt + sh + kh * dh, wd + l + r + sw + kw * dw, k))
    xp[t:t + h, l:l + wd] = xr
    cout_g = cout // groups
    # per kept channel, the output-gradient columns of its group: (pixels, k, out_c / groups)
    g = gy.reshape(oh * ow, groups, cout_g).astype(np.float64)[:, group_of, :]
    out = np.empty((k, cout_g, kh, kw))
    for ky in range(kh):
        for kx in range(kw):
            win = xp[ky * dh: ky * dh + sh * (oh - 1) + 1: sh,
                     kx * dw: kx * dw + sw * (ow - 1) + 1: sw].reshape(oh * ow, k)
            if groups == 1:
                out[:, :, ky, kx] = win.T @ g[:, 0, :]
            else:
                out[:, :, ky, kx] = np.einsum("pkc,pk->kc", g, win)
    return out


def fisher_of_updates(gq, x: np.ndarray, y: np.ndarray, opts, samples=PROBE_SAMPLES) -> dict:
    """Per conv layer (scheme index): the gradient signal of its bias (summed over output
    channels) and of its weights per input channel (weight candidates only: the deeper half of
    the layers, where the published schemes train weights), with their Fisher information
    beside it (see the section comment); plus what the cost model needs."""
    from .passes.autodiff import build_training_graph
    from .passes.sparse_update import conv_layers, resolve_scheme
    from .passes.train_head import classifier
    from .reference import train as ref
    from .reference.int8 import run_int8

    if len(y) < 4:
        raise TinycError(f"--train auto: {len(y)} labelled samples in --train-data; ranking the "
                         "updates needs at least 4 (half fits the new head, half probes)")
    convs = conv_layers(gq)
    n = len(convs)
    weight_layers = linear_free_weight_layers(convs)
    spec = {"bias_last": n, "weights": {str(i): 1.0 for i in weight_layers}}
    # the probe sees every update node at every step (no head warm-up)
    probe = build_training_graph(gq, resolve_scheme(gq, spec), replace(opts, warmup=0))
    # the head is fitted on other samples than the probe's: on its own samples it would fit
    # them exactly, and their gradients would show nothing left to learn
    both = probe_samples(x, y, 2 * samples)
    fit, pick = both[0::2], both[1::2]
    head = classifier(gq)
    feat_t = gq.tensors[head.inputs[0]]
    s_f, zp_f = feat_t.q.scalar()
    feats = np.stack([(run_int8(gq, x[i:i + 1])[head.inputs[0]].astype(np.float64).ravel() - zp_f)
                      * s_f for i in fit])
    _fit_head(gq, probe, feats, y[fit])

    index = {c.name: i for i, c in enumerate(convs)}
    # per parameter: the sum of the per-sample gradients and of their squares
    bias_sum = [0.0] * n
    bias_sq = np.zeros(n)
    w_sum: dict[int, np.ndarray] = {}
    w_sq = {i: np.zeros(gq.tensors[convs[i].inputs[0]].shape[-1]) for i in weight_layers}
    w_sel: dict[int, np.ndarray] = {}

    def observe(node, g_y, x_q):
        i = index.get(node.name.removesuffix("/update"))
        if i is None:
            return
        gy = g_y[0].astype(np.float64)
        if node.attrs["update_bias"]:
            gb = gy.sum(axis=(0, 1))
            bias_sum[i] = bias_sum[i] + gb
            bias_sq[i] += float(np.sum(gb ** 2))
        if node.attrs["channels"] is not None and i in w_sq:
            fc = node.attrs["fc"]
            kh, kw = gq.tensors[convs[i].inputs[1]].shape[1:3] if not fc else (1, 1)
            sel = np.asarray(node.attrs["channels"])
            cin_g = gq.tensors[convs[i].inputs[1]].shape[-1]
            gw = channel_weight_grads(g_y.reshape(1, 1, -1) if fc else g_y[0],
                                      x_q.reshape(1, 1, 1, -1) if fc else x_q, node.attrs,
                                      (kh, kw), sel // cin_g, max(1, len(w_sq[i]) // cin_g))
            w_sum[i] = w_sum.get(i, 0.0) + gw
            w_sel[i] = sel
            w_sq[i][sel] += (gw ** 2).sum(axis=(1, 2, 3))

    guard = ref.GuardStats()
    for k, i in enumerate(pick):
        ref.train_step(probe, x[i:i + 1], int(y[i]), 0.0, k, guard, observe=observe)
    m = float(len(pick))

    def signal(total_sq_of_sum, sum_of_sq):
        # an unbiased estimate of |E g|^2 from m samples: ((sum g)^2 - sum g^2) / (m (m-1))
        return np.maximum((total_sq_of_sum - sum_of_sq) / (m * (m - 1)), 0.0)

    bias = np.array([signal(float(np.sum(np.asarray(s) ** 2)), q)
                     for s, q in zip(bias_sum, bias_sq)])
    chans = {}
    for i in weight_layers:
        v = np.zeros_like(w_sq[i])
        if i in w_sum:
            v[w_sel[i]] = signal((w_sum[i] ** 2).sum(axis=(1, 2, 3)), w_sq[i][w_sel[i]])
        chans[i] = v
    return {"bias": bias, "channels": chans, "bias_fisher": bias_sq / m,
            "channels_fisher": {i: v / m for i, v in w_sq.items()},
            "samples": int(len(pick)), "head_fit_samples": int(len(fit))}


def ranked_schemes(gq, fisher: dict, start: dict | None = None, step: int = 0,
                   too_big=()) -> list[dict]:
    """The candidate updates ranked greedily by gradient signal per byte, as nested schemes (each
    prefix of the ranking; see the section comment). Bytes: the trained parameters, the saved
    input channels of a weight update, and, for an update below every one taken so far, the
    growth of the largest float gradient map the deeper backward pass holds. A layer's weight
    ratios come in order (1/8 before 1/4 ...); biases reach down from the classifier (a
    scheme's bias_last); each greedy step takes the best block of units (see extensions).
    `start`: go on from this scheme (step `step` of a chain) instead of the classifier only;
    `too_big`: steps (scheme before, scheme after) over the SRAM budget, whose unit and all that
    needs it are left out: a bias at that depth or deeper, that weight ratio or more."""
    from .passes.sparse_update import conv_layers, top_channels
    convs = conv_layers(gq)
    n = len(convs)
    t = gq.tensors
    grad_map = [4 * t[c.outputs[0]].size for c in convs]
    # the backward's largest map down to layer i (n: no backward through the convs)
    deepest_map = [max(grad_map[i:]) for i in range(n)] + [0]

    units: dict[tuple, tuple[float, int]] = {}      # unit -> (benefit, own bytes)
    for i in range(n):
        units[("bias", i)] = (float(fisher["bias"][i]), 4 * t[convs[i].inputs[2]].size)
    for i, per_channel in fisher["channels"].items():
        node = convs[i]
        w = t[node.inputs[1]]
        groups = max(1, t[node.inputs[0]].shape[-1] // w.shape[-1])
        x_pixels = t[node.inputs[0]].size // t[node.inputs[0]].shape[-1]
        before = 0
        for r in RATIOS:
            new = top_channels(gq, node, r)[before:]
            if len(new):
                units[("w", i, r)] = (float(per_channel[new].sum()),
                                      len(new) * (w.shape[0] // groups * w.shape[1] * w.shape[2]
                                                  + x_pixels))
                before += len(new)

    ratios = {i: sorted(u[2] for u in units if u[0] == "w" and u[1] == i)
              for i in fisher["channels"]}

    def extensions(bias_last, weights):
        """Every next step the chain may take, as a block of units: the biases of the next
        conv layers down to any depth, or one layer's weights up to any larger ratio. Scoring
        whole blocks lets a step through a poor unit reach the good ones behind it (the last
        conv's bias, often near zero, would otherwise keep every deeper bias out)."""
        bottom = n - bias_last
        for i in range(bottom - 1, floor, -1):
            yield [("bias", j) for j in range(bottom - 1, i - 1, -1)]
        for i, rs in ratios.items():
            if i < bottom and i <= floor:
                continue
            later = [r for r in rs if weights.get(str(i), 0.0) < r < caps.get(i, 2.0)]
            # a weight update below the biases taken brings the biases down to its layer
            biases = [("bias", j) for j in range(bottom - 1, i - 1, -1)]
            for k in range(len(later)):
                yield biases + [("w", i, r) for r in later[:k + 1]]

    floor, caps = -1, {}        # no bias at layer `floor` or below; weight ratios under caps
    for before, after in too_big:
        if after["bias_last"] > before["bias_last"]:
            floor = max(floor, n - after["bias_last"])
        for i, r in after["weights"].items():
            if before["weights"].get(i) != r:
                caps[int(i)] = min(caps.get(int(i), 2.0), r)
    start = start or {"name": "classifier only", "bias_last": 0, "weights": {}}
    chain = [start]
    # depth: the deepest layer the backward reaches (a trained weight brings the biases down)
    bias_last, weights, depth = start["bias_last"], dict(start["weights"]), n - start["bias_last"]
    while True:
        def density(block):
            i = min(u[1] for u in block)
            grow = deepest_map[i] - deepest_map[depth] if i < depth else 0
            # a layer whose weights are trained has its bias trained already
            own = [u for u in block if u[0] != "bias" or str(u[1]) not in weights]
            return sum(units[u][0] for u in own) / max(sum(units[u][1] for u in own) + grow, 1)
        blocks = list(extensions(bias_last, weights))
        if not blocks:
            break
        block = max(blocks, key=density)   # ties: the first (shallowest, smallest) block
        for unit in block:
            i = unit[1]
            depth = min(depth, i)
            if unit[0] == "bias":
                bias_last = n - i
            else:
                weights[str(i)] = unit[2]
            chain.append({"name": f"data-ranked, {step + len(chain)} updates",
                          "bias_last": bias_last,
                          "weights": dict(weights)})
    return chain


def chain_benefit(gq, fisher: dict, scheme: dict) -> float:
    """The gradient signal a scheme trains (its biases and weight channels), as ranked."""
    from .passes.sparse_update import conv_layers, top_channels
    convs = conv_layers(gq)
    n = len(convs)
    bias = set(range(n - scheme["bias_last"], n)) | {int(i) for i in scheme["weights"]}
    total = float(sum(fisher["bias"][i] for i in bias))
    for i, r in scheme["weights"].items():
        total += float(fisher["channels"][int(i)][top_channels(gq, convs[int(i)], r)].sum())
    return total
