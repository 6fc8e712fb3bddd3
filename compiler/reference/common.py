"""Shape-level building blocks shared by the float and the int8 reference executors (NHWC, batch 1)."""
from __future__ import annotations

import numpy as np

from ..ir import conv_out_size


def pad_hw(x: np.ndarray, pads, value) -> np.ndarray:
    """x (H, W, C); pads (top, left, bottom, right)."""
    t, l, b, r = pads
    return np.pad(x, ((t, b), (l, r), (0, 0)), constant_values=value)


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
