"""Shape-level building blocks shared by the float and the int8 reference executors (NHWC, batch 1)."""
from __future__ import annotations

import numpy as np

from ..ir import conv_out_size


def pad_hw(x: np.ndarray, pads, value) -> np.ndarray:
    """x (H, W, C); pads (top, left, bottom, right). A negative pad removes that many rows or
    columns instead (a patch's local frame: passes/patch.py)."""
    t, l, b, r = pads
    x = np.pad(x, ((max(t, 0), max(b, 0)), (max(l, 0), max(r, 0)), (0, 0)),
               constant_values=value)
    h, w = x.shape[:2]
    return x[max(-t, 0): h - max(-b, 0), max(-l, 0): w - max(-r, 0)]


def conv_accumulate(x: np.ndarray, w: np.ndarray, strides, pads, dilations, groups,
                    dtype) -> np.ndarray:
    """sum over the window of x * w. x (H, W, C_in) already offset (padding contributes 0);
    w (C_out, KH, KW, C_in/groups). Returns (OH, OW, C_out) in `dtype`."""
    h, wd, cin = x.shape
    cout, kh, kw, cin_g = w.shape
    sh, sw = strides
    dh, dw = dilations
    oh = conv_out_size(h, kh, sh, pads[0], pads[2], dh)
    ow = conv_out_size(wd, kw, sw, pads[1], pads[3], dw)
    xp = pad_hw(x.astype(dtype), pads, 0)
    wg = w.astype(dtype).reshape(groups, cout // groups, kh, kw, cin_g)
    acc = np.zeros((oh, ow, groups, cout // groups), dtype=dtype)
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[ky * dh: ky * dh + sh * (oh - 1) + 1: sh,
                       kx * dw: kx * dw + sw * (ow - 1) + 1: sw, :]
            patch = patch.reshape(oh, ow, groups, cin_g)
            acc += np.einsum("hwgi,goi->hwgo", patch, wg[:, :, ky, kx, :])
    return acc.reshape(oh, ow, cout)


def pool_windows(x: np.ndarray, kernel, strides, pads, pad_value):
    """Yield-free window view: returns (OH, OW, KH*KW, C) values and a matching validity mask."""
    h, w, c = x.shape
    kh, kw = kernel
    sh, sw = strides
    oh = conv_out_size(h, kh, sh, pads[0], pads[2])
    ow = conv_out_size(w, kw, sw, pads[1], pads[3])
    xp = pad_hw(x, pads, pad_value)
    valid = pad_hw(np.ones((h, w, 1), dtype=bool), pads, False)
    vals, masks = [], []
    for ky in range(kh):
        for kx in range(kw):
            sl = (slice(ky, ky + sh * (oh - 1) + 1, sh), slice(kx, kx + sw * (ow - 1) + 1, sw))
            vals.append(xp[sl])
            masks.append(valid[sl])
    return np.stack(vals, axis=2), np.stack(masks, axis=2)


def crop(x: np.ndarray, origin, shape) -> np.ndarray:
    """The (1, h, w, C) window of x (1, H, W, C) whose top-left pixel is origin (row, col)."""
    r0, c0 = origin
    return x[:, r0: r0 + shape[1], c0: c0 + shape[2], :]


def paste(acc: np.ndarray | None, patch: np.ndarray, origin, shape, dtype) -> np.ndarray:
    """acc (or zeros of `shape`) with patch written at origin (row, col)."""
    out = np.zeros(shape, dtype) if acc is None else acc.copy()
    r0, c0 = origin
    out[:, r0: r0 + patch.shape[1], c0: c0 + patch.shape[2], :] = patch
    return out
