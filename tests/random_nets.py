"""Random CNN architectures from a seed: models no test was written for.

Each net is a random chain of blocks (conv of random kernel/stride/pads/groups/dilation, optional
BN, random activation, residual adds, concats, pools, pad) ending in a pooled or flattened
classifier, possibly with a softmax. Sizes, channel counts and opsets vary with the seed.
"""
from __future__ import annotations

import numpy as np

from nets import NetBuilder


def random_net(seed: int):
    rng = np.random.default_rng(1000 + seed)
    c = int(rng.choice([1, 2, 3, 4]))
    h, w = int(rng.integers(9, 34)), int(rng.integers(9, 34))
    b = NetBuilder(f"random_{seed}", (1, c, h, w), opset=int(rng.choice([11, 13, 17, 21])),
                   seed=seed)
    x = "input"

    def act(t):
        kind = rng.choice(["relu", "relu6", "none", "clip"])
        if kind == "relu":
            return b.relu(t)
        if kind == "relu6":
            return b.clip(t, 0.0, 6.0)
        if kind == "clip":
            return b.clip(t, float(-rng.uniform(0.5, 2)), float(rng.uniform(0.5, 3)))
        return t

    def rand_conv(t, cout=None, allow_stride=True):
        cin = b.shape[t][1]
        kh, kw = int(rng.choice([1, 3, 5, 7])), int(rng.choice([1, 3, 5]))
        hh, ww = b.shape[t][2:]
        kh, kw = min(kh, hh), min(kw, ww)
        stride = int(rng.choice([1, 2])) if allow_stride and min(hh, ww) > 6 else 1
        dil = 2 if rng.random() < 0.15 and kh <= 3 and kw <= 3 and min(hh, ww) > 8 else 1
        mode = rng.choice(["sym", "asym", "valid"])
        if mode == "sym":
            pads = [dil * (kh // 2), dil * (kw // 2)] * 2
        elif mode == "asym":
            pads = [int(rng.integers(0, kh)), int(rng.integers(0, kw)),
                    int(rng.integers(0, kh)), int(rng.integers(0, kw))]
        else:
            pads = [0, 0, 0, 0]
        kind = rng.choice(["dense", "depthwise", "grouped"]) if cin > 1 else "dense"
        if kind == "depthwise":
            group, cout = cin, cin * int(rng.choice([1, 1, 2]))
        elif kind == "grouped" and cin % 2 == 0:
            group = 2
            cout = cout or 2 * int(rng.integers(2, 8))
        else:
            group = 1
            cout = cout or int(rng.integers(2, 17))
        if cout % group:
            cout += group - cout % group
        out = b.conv(t, cout, (kh, kw), stride=stride, pads=pads, group=group, dilation=dil,
                     bias=bool(rng.random() < 0.8))
        if rng.random() < 0.3:
            out = b.bn(out)
        return act(out)

    for _ in range(int(rng.integers(2, 6))):
        r = rng.random()
        if r < 0.5:
            x = rand_conv(x)
        elif r < 0.65:
            y = b.conv(x, b.shape[x][1], 3, pads=[1, 1, 1, 1])
            x = act(b.add(x, y))
        elif r < 0.75:
            y = rand_conv(x, allow_stride=False)
            if b.shape[y][2:] == b.shape[x][2:]:
                x = b.concat([x, y])
            else:
                x = y
        elif r < 0.85 and min(b.shape[x][2:]) > 4:
            op = str(rng.choice(["MaxPool", "AveragePool"]))
            extra = {"count_include_pad": int(rng.integers(0, 2))} if op == "AveragePool" else {}
            k = int(rng.choice([2, 3]))
            pads = [k // 2] * 4 if (op == "MaxPool" or extra.get("count_include_pad")) else [0] * 4
            x = b.pool(op, x, k, int(rng.choice([1, 2])), pads, **extra)
        else:
            x = b.pad(x, *[int(v) for v in rng.integers(0, 3, 4)])
    if rng.random() < 0.5:
        x = b.flatten(b.gap(x) if rng.random() < 0.5 else b.reduce_mean(x))
    else:
        x = b.flatten(x)
    x = b.gemm(x, int(rng.integers(2, 12)))
    if rng.random() < 0.3:
        x = b.softmax(x)
    return b.build(x)
