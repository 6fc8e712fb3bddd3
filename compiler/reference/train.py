"""numpy reference of one training step: int8 forward, float32 backward, QAS updates.

The generated C must reproduce the integer state (int8 weights, int32 biases) bit for bit, so
every float32 operation here happens in the same order as in runtime_c/src/backward/ (no FMA,
sums in the order written below). The loop-order contract of each op:
- softmax_ce: z_i = s * (float)(q_i - zp); m = max z; e_i = tinyc_expf(z_i - m);
  S = sum_i e_i (i ascending); p_i = e_i / S; g_i = p_i - [i == label];
  loss = logf(S) - (z_label - m).
- grad_mask: g * (lo < y_q < hi) (bounds that are None are not checked).
- conv2d_grad_input: g_x = 0; for o, ky, kx, oy, ox (in range), i of o's group:
  g_x[iy, ix, i] += g_y[oy, ox, o] * (s_w[o] * (float)w[o, ky, kx, i_local]).
- conv2d_update, for each output channel o: bias gradient gb = sum over (oy, ox) row-major of
  g_y; weight gradient of each updated (ky, kx, i): gw = sum over (oy, ox) row-major (skipping
  padding) of g_y[oy, ox, o] * (s_x * (float)(x_q[iy, ix, i] - zp_x)). The integer step is
  r = round((lr * gw) * f_w[o]) (f_w = 1/s_w with QAS, s_w without); w = clamp(w - r, -127, 127);
  biases likewise with f_b (1/(s_w s_x) with QAS), clamped to +-BIAS_LIMIT (the quantizer's
  headroom). All weight gradients of a layer are computed before any of its weights changes.
- the guard (runtime_c/include/tinyc/train.h): a step whose lr is not finite or negative, or
  whose loss or logit gradient is not finite, updates nothing (skipped). The update of one
  output channel o of a layer (its kept weights and its bias) is refused, not written at all,
  when one of its gradients is not finite or when more than GUARD_SATURATED_PERCENT % of its
  values would saturate: the step carries them past their bound from inside it.
- rounding "nearest": x >= 0 ? floorf(x + 0.5f) : ceilf(x - 0.5f); "stochastic":
  floorf(x + u), u = (lowbias32(counter) >> 8) * 2^-24 with counter = step * 2654435761 + salt
  + flat index (+ 2^30 for biases), all uint32.
- avg_pool_grad: share = g_y / (float)count; for ky, kx, oy, ox (valid), c: g_x += share.
- max_pool_grad: for oy, ox, c: the first maximum of the window in (ky, kx) order receives
  g_y (accumulated in that order).
- grad_add: g1 + g2.
- dw_pw_grad (passes/fuse_grad.py): its unfused nodes in order; the C kernel computes them
  channel by channel with the same float operations in the same order per element.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ops
from ..ir import Graph
from ..ops.base import TrainRun
from ..ops.pool import pool_grad  # noqa: F401  (tests/test_autodiff.py)
from ..ops.softmax import softmax_ce  # noqa: F401  (tests/test_autodiff.py)
from ..passes.quantize import BIAS_LIMIT
from .int8 import run_int8_node

WEIGHT_LIMIT = 127   # the quantizer's symmetric int8 range (train.h TINYC_WEIGHT_LIMIT)
# train.h TINYC_GUARD_SATURATED_PERCENT (the reason for the value is there)
GUARD_SATURATED_PERCENT = 25


@dataclass
class GuardStats:
    """The guard's counters, as tinyc_get_train_stats (model.h) reports them."""
    steps: int = 0
    steps_skipped: int = 0
    steps_guarded: int = 0
    updates: int = 0
    refused_nonfinite: int = 0
    refused_saturation: int = 0

    @property
    def refused(self) -> int:
        return self.refused_nonfinite + self.refused_saturation

F32 = np.float32
HALF = F32(0.5)

# tinyc_expf: exp(x) for x <= 0 with float32 operations only (the C kernel does the same ops)
LOG2E = F32(1.44269504088896341)
LN2_HI = F32(0.693145751953125)
LN2_LO = F32(1.42860682030941723212e-6)
EXP_COEF = [F32(1.0 / 720), F32(1.0 / 120), F32(1.0 / 24), F32(1.0 / 6), F32(0.5), F32(1.0), F32(1.0)]


def expf(x: np.ndarray) -> np.ndarray:
    x = np.maximum(np.asarray(x, F32), F32(-87.0))
    k = np.floor(x * LOG2E + HALF).astype(F32)
    r = (x - k * LN2_HI) - k * LN2_LO
    p = EXP_COEF[0]
    for c in EXP_COEF[1:]:
        p = p * r + c
    return np.ldexp(p.astype(F32), k.astype(np.int32)).astype(F32)


def lowbias32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.uint32)
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def round_nearest(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, F32)
    return np.where(x >= 0, np.floor(x + HALF), np.ceil(x - HALF)).astype(F32)


def round_stochastic(x: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """counters are uint32 and wrap around, as in C."""
    u = (lowbias32(counters) >> np.uint32(8)).astype(F32) * F32(2.0 ** -24)
    return np.floor(np.asarray(x, F32) + u).astype(F32)


def _geometry(attrs, x_shape, g_shape):
    h, w = x_shape[1], x_shape[2]
    oh, ow = g_shape[1], g_shape[2]
    return h, w, oh, ow


def conv_grad_input(g_y: np.ndarray, w: np.ndarray, attrs: dict, x_shape) -> np.ndarray:
    """g_y (1, OH, OW, O) float32 -> g_x (1, H, W, C) float32; w int8 OHWI (FC: (O, N))."""
    if attrs["fc"]:
        w = w.reshape(w.shape[0], 1, 1, w.shape[1])
        x_shape = (1, 1, 1, x_shape[-1])
        g_y = g_y.reshape(1, 1, 1, -1)
    _, h, wd, cin = x_shape
    cout, kh, kw, cin_g = w.shape
    oh, ow = g_y.shape[1:3]
    sh, sw = attrs["strides"]
    dh, dw = attrs["dilations"]
    t, l, b, r = attrs["pads"]
    cout_g = cout // attrs["groups"]
    s_w = attrs["w_scale"]
    gx = np.zeros((h + t + b + sh + kh * dh, wd + l + r + sw + kw * dw, cin), F32)
    for o in range(cout):
        grp = o // cout_g
        wr = (s_w[o] * w[o].astype(F32)).astype(F32)           # (KH, KW, cin_g)
        go = g_y[0, :, :, o][:, :, None]                        # (OH, OW, 1)
        for ky in range(kh):
            for kx in range(kw):
                ys = slice(ky * dh, ky * dh + sh * (oh - 1) + 1, sh)
                xs = slice(kx * dw, kx * dw + sw * (ow - 1) + 1, sw)
                cs = slice(grp * cin_g, (grp + 1) * cin_g)
                gx[ys, xs, cs] += go * wr[ky, kx]
    out = gx[t:t + h, l:l + wd][None]
    return np.ascontiguousarray(out).reshape(x_shape if not attrs["fc"] else (1, cin))


def bias_grad(gy: np.ndarray) -> np.ndarray:
    """gy (OH, OW, O) -> sum over pixels, row-major order."""
    gb = np.zeros(gy.shape[-1], F32)
    for oy in range(gy.shape[0]):
        for ox in range(gy.shape[1]):
            gb = (gb + gy[oy, ox]).astype(F32)
    return gb


def weight_grad(gy: np.ndarray, x_q: np.ndarray, attrs: dict, kernel) -> np.ndarray:
    """Weight gradient (O, KH, KW, k) for the k saved input channels x_q (1, H, W, k): for each
    output pixel in row-major order, gw += g_y[pixel, o] * window(x_real). Entries of an output
    channel outside the channel's group are computed too and ignored by the caller."""
    kh, kw = kernel
    sh, sw = attrs["strides"]
    dh, dw = attrs["dilations"]
    t, l, bt, r = attrs["pads"]
    xr = (F32(attrs["x_scale"]) * (x_q[0].astype(np.int32) - attrs["x_zero_point"]).astype(F32)
          ).astype(F32)
    h, wd = xr.shape[:2]
    xp = np.zeros((h + t + bt + sh + kh * dh, wd + l + r + sw + kw * dw, xr.shape[2]), F32)
    xp[t:t + h, l:l + wd] = xr
    gw = np.zeros((gy.shape[-1], kh, kw, xr.shape[2]), F32)
    for oy in range(gy.shape[0]):
        for ox in range(gy.shape[1]):
            win = xp[oy * sh: oy * sh + (kh - 1) * dh + 1: dh,
                     ox * sw: ox * sw + (kw - 1) * dw + 1: dw]
            gw = (gw + gy[oy, ox][:, None, None, None] * win[None]).astype(F32)
    return gw


def _saturates(old: np.ndarray, new: np.ndarray, limit: int) -> np.ndarray:
    """The step carries the value past a bound it was not already at."""
    return ((new > limit) & (old < limit)) | ((new < -limit) & (old > -limit))


# the uint32 rounding counters wrap around, as in C; a refused channel's steps may be NaN
@np.errstate(over="ignore", invalid="ignore")
def conv_update(g_y: np.ndarray, x_q: np.ndarray | None, w: np.ndarray, b: np.ndarray,
                attrs: dict, lr: float, step: int,
                guard: GuardStats | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return the updated (w int8, b int32). x_q holds the layer input (or its selected
    channels, in attrs['channels'] order). The guard's counters go to `guard`."""
    fc = attrs["fc"]
    w_shape = w.shape
    if fc:
        w = w.reshape(w.shape[0], 1, 1, w.shape[1])
        g_y = g_y.reshape(1, 1, 1, -1)
        if x_q is not None:
            x_q = x_q.reshape(1, 1, 1, -1)
    cout, kh, kw, cin_g = w.shape
    oh, ow = g_y.shape[1:3]
    sh, sw = attrs["strides"]
    dh, dw = attrs["dilations"]
    t, l, bt, r = attrs["pads"]
    cout_g = cout // attrs["groups"]
    lr = F32(lr)
    gy = g_y[0]                                                  # (OH, OW, O)
    w_new, b_new = w.copy(), b.copy()
    rounding = attrs["rounding"]
    salt = np.uint32(attrs["salt"])
    step_base = np.uint32((step * 2654435761) & 0xFFFFFFFF)

    # per output channel: values updated, a gradient not finite, values that would saturate
    elements = np.zeros(cout, np.int64)
    nonfinite = np.zeros(cout, bool)
    saturated = np.zeros(cout, np.int64)
    if attrs["update_bias"]:
        gb = bias_grad(gy)
        delta = ((lr * gb).astype(F32) * attrs["f_b"]).astype(F32)
        if rounding == "nearest":
            rb = round_nearest(delta)
        else:
            ctr = step_base + salt + np.uint32(1 << 30) + np.arange(cout, dtype=np.uint32)
            rb = round_stochastic(delta, ctr)
        elements += 1
        nonfinite |= ~np.isfinite(gb)
        rb = np.where(np.isfinite(gb), rb, F32(0))
        rb = np.clip(rb, F32(-(2.0 ** 31)), F32(2.0 ** 31 - 128)).astype(np.int64)
        v = b.astype(np.int64) - rb
        saturated += _saturates(b, v, BIAS_LIMIT)
        b_new = np.clip(v, -BIAS_LIMIT, BIAS_LIMIT).astype(np.int32)

    channels = attrs["channels"]
    if channels is not None:
        channels = np.asarray(channels)
        # for each selected input channel: its group and its index inside the group's weights
        grp_of = channels // cin_g
        local = channels % cin_g
        # mask[o, j]: output channel o reads selected channel j
        mask = (np.arange(cout)[:, None] // cout_g) == grp_of[None, :]
        gw = weight_grad(gy, x_q, attrs, (kh, kw))
        delta = ((lr * gw).astype(F32) * attrs["f_w"][:, None, None, None]).astype(F32)
        if rounding == "nearest":
            rw = round_nearest(delta)
        else:
            o_idx, ky_idx, kx_idx, j_idx = np.meshgrid(np.arange(cout), np.arange(kh),
                                                       np.arange(kw), np.arange(len(channels)),
                                                       indexing="ij")
            flat = (((o_idx * kh + ky_idx) * kw + kx_idx) * cin_g + local[j_idx]).astype(np.uint32)
            rw = round_stochastic(delta, step_base + salt + flat)
        finite = np.isfinite(gw)
        rw = np.where(finite, rw, F32(0))
        for j, (c_local, m) in enumerate(zip(local, mask.T)):
            cur = w_new[m, :, :, c_local]
            v = (cur.astype(F32) - rw[m, :, :, j]).astype(F32)
            elements[m] += kh * kw
            nonfinite[m] |= ~finite[m, :, :, j].all(axis=(1, 2))
            saturated[m] += _saturates(cur, v, WEIGHT_LIMIT).sum(axis=(1, 2))
            w_new[m, :, :, c_local] = np.clip(v, -WEIGHT_LIMIT, WEIGHT_LIMIT).astype(np.int8)

    # the guard: a refused channel keeps all its old values
    refused = nonfinite | (saturated * 100 > elements * GUARD_SATURATED_PERCENT)
    w_new[refused], b_new[refused] = w[refused], b[refused]
    if guard is not None:
        seen = elements > 0
        guard.updates += int(seen.sum())
        guard.refused_nonfinite += int((seen & nonfinite).sum())
        guard.refused_saturation += int((seen & refused & ~nonfinite).sum())
    return w_new.reshape(w_shape), b_new


class TrainState:
    """Mutable parameters of a training graph (int8 weights, int32 biases) and the step count."""

    def __init__(self, g: Graph):
        self.g = g
        self.step = 0


def train_step(g: Graph, x_q: np.ndarray, label: int, lr: float, step: int,
               guard: GuardStats | None = None, observe=None) -> float:
    """One training step on graph g (from build_training_graph), updating its parameter
    tensors in place. Returns the loss. The guard's counters go to `guard`. With `observe`,
    a probe: each update node calls observe(node, g_y, saved input) and updates nothing."""
    guard = guard if guard is not None else GuardStats()
    guard.steps += 1
    refused = guard.refused
    env = {g.inputs[0]: np.asarray(x_q).reshape(g.tensors[g.inputs[0]].shape)}
    run = TrainRun(lr, step, guard, label, observe=observe)
    meta = g.meta["train"]
    warmup_after = meta.get("warmup_after") if step < meta.get("warmup_steps", 0) else None
    for node in g.nodes:
        out = ops.get(node).run_train(g, node, env, run)
        if out is not None:
            env[node.outputs[0]] = out
        if run.skip:   # the loss's check failed: nothing was updated
            return run.loss
        if node.name == warmup_after:   # a head warm-up step: the body stays as it is
            break
    guard.steps_guarded += guard.refused != refused
    return run.loss


def predict(g: Graph, x_q: np.ndarray) -> np.ndarray:
    """int8 logits of the current parameters (forward nodes only)."""
    env = {g.inputs[0]: np.asarray(x_q).reshape(g.tensors[g.inputs[0]].shape)}
    logits = g.meta["train"]["logits"]
    for node in g.nodes[:g.meta["train"]["forward_nodes"]]:
        if ops.get(node).training_only:
            continue
        env[node.outputs[0]] = run_int8_node(g, node, env)
        if node.outputs[0] == logits:
            break
    return env[logits]
