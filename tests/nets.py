"""Small ONNX networks the tests build themselves (onnx.helper, seeded random weights).

Together they cover every op the importer supports, odd and non-square sizes, a 1-channel input,
5x5/7x7 and non-square kernels, stride-2 convs on even inputs with PyTorch-style symmetric pads,
asymmetric pads, dilation, grouped and depthwise (multiplier 1 and 2) convs, and opsets 11-21.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class NetBuilder:
    def __init__(self, name: str, input_shape, opset: int, seed: int = 0):
        self.name, self.opset = name, opset
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.shape = {"input": tuple(input_shape)}
        self.input_shape = tuple(input_shape)
        self.k = 0

    def _name(self, base):
        self.k += 1
        return f"{base}_{self.k}"

    def init(self, base, arr):
        name = self._name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def const_node(self, base, arr, dtype=np.float32):
        name = self._name(base)
        self.nodes.append(helper.make_node("Constant", [], [name], name=name,
                                           value=numpy_helper.from_array(np.asarray(arr, dtype))))
        return name

    def node(self, op, inputs, out_shape, n_out=1, **attrs):
        out = self._name(op.lower())
        outs = [out] + [self._name(op.lower() + "_extra") for _ in range(n_out - 1)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=out, **attrs))
        self.shape[out] = tuple(out_shape)
        return out

    def conv(self, x, cout, k, stride=1, pads=None, group=1, dilation=1, bias=True):
        n, c, h, w = self.shape[x]
        kh, kw = (k, k) if isinstance(k, int) else k
        pads = pads if pads is not None else [kh // 2, kw // 2, kh // 2, kw // 2]
        fan_in = c // group * kh * kw
        wt = self.init("w", self.rng.normal(0, np.sqrt(2.0 / fan_in), (cout, c // group, kh, kw)))
        ins = [x, wt] + ([self.init("b", self.rng.normal(0, 0.1, cout))] if bias else [])
        oh = (h + pads[0] + pads[2] - dilation * (kh - 1) - 1) // stride + 1
        ow = (w + pads[1] + pads[3] - dilation * (kw - 1) - 1) // stride + 1
        return self.node("Conv", ins, (n, cout, oh, ow), kernel_shape=[kh, kw],
                         strides=[stride, stride], pads=pads, group=group,
                         dilations=[dilation, dilation])

    def bn(self, x):
        c = self.shape[x][1]
        ins = [x, self.init("gamma", self.rng.uniform(0.5, 1.5, c)),
               self.init("beta", self.rng.normal(0, 0.2, c)),
               self.init("mean", self.rng.normal(0, 0.2, c)),
               self.init("var", self.rng.uniform(0.5, 2.0, c))]
        return self.node("BatchNormalization", ins, self.shape[x], epsilon=1e-5)

    def relu(self, x):
        return self.node("Relu", [x], self.shape[x])

    def clip(self, x, lo, hi):
        return self.node("Clip", [x, self.const_node("min", lo), self.const_node("max", hi)],
                         self.shape[x])

    def add(self, a, b):
        return self.node("Add", [a, b], self.shape[a])

    def pool(self, op, x, k, stride, pads, **attrs):
        n, c, h, w = self.shape[x]
        oh = (h + pads[0] + pads[2] - k) // stride + 1
        ow = (w + pads[1] + pads[3] - k) // stride + 1
        return self.node(op, [x], (n, c, oh, ow), kernel_shape=[k, k], strides=[stride, stride],
                         pads=pads, **attrs)

    def gap(self, x):
        n, c = self.shape[x][:2]
        return self.node("GlobalAveragePool", [x], (n, c, 1, 1))

    def reduce_mean(self, x):
        n, c = self.shape[x][:2]
        if self.opset >= 18:
            axes = self.const_node("axes", [2, 3], np.int64)
            return self.node("ReduceMean", [x, axes], (n, c, 1, 1), keepdims=1)
        return self.node("ReduceMean", [x], (n, c, 1, 1), axes=[2, 3], keepdims=1)

    def flatten(self, x):
        n = self.shape[x][0]
        return self.node("Flatten", [x], (n, int(np.prod(self.shape[x][1:]))), axis=1)

    def reshape2d(self, x):
        n = self.shape[x][0]
        name = self._name("shape")
        self.inits.append(numpy_helper.from_array(np.array([1, -1], np.int64), name))
        return self.node("Reshape", [x, name], (n, int(np.prod(self.shape[x][1:]))))

    def gemm(self, x, nout, trans_b=True):
        nin = self.shape[x][1]
        w = self.rng.normal(0, np.sqrt(1.0 / nin), (nout, nin))
        wt = self.init("fc_w", w if trans_b else w.T)
        b = self.init("fc_b", self.rng.normal(0, 0.1, nout))
        return self.node("Gemm", [x, wt, b], (1, nout), transB=int(trans_b), alpha=1.0, beta=1.0)

    def matmul_add(self, x, nout):
        nin = self.shape[x][1]
        wt = self.init("mm_w", self.rng.normal(0, np.sqrt(1.0 / nin), (nin, nout)))
        y = self.node("MatMul", [x, wt], (1, nout))
        return self.node("Add", [y, self.init("mm_b", self.rng.normal(0, 0.1, nout))], (1, nout))

    def concat(self, xs):
        n, _, h, w = self.shape[xs[0]]
        return self.node("Concat", xs, (n, sum(self.shape[x][1] for x in xs), h, w), axis=1)

    def pad(self, x, t, l, b, r, value=0.0):
        n, c, h, w = self.shape[x]
        pads = self._name("pads")
        self.inits.append(numpy_helper.from_array(np.array([0, 0, t, l, 0, 0, b, r], np.int64), pads))
        ins = [x, pads]
        if value != 0.0:
            ins.append(self._name("pad_value"))
            self.inits.append(numpy_helper.from_array(np.array(value, np.float32), ins[-1]))
        return self.node("Pad", ins, (n, c, h + t + b, w + l + r), mode="constant")

    def softmax(self, x):
        return self.node("Softmax", [x], self.shape[x], axis=-1 if self.opset >= 13 else 1)

    def build(self, output) -> onnx.ModelProto:
        # an unused initializer the importer must ignore
        self.inits.append(numpy_helper.from_array(np.zeros(3, np.float32), "unused_initializer"))
        g = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(self.input_shape))],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, list(self.shape[output]))],
            self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)],
                              producer_name="tinyc-tests")
        m.ir_version = 8
        onnx.checker.check_model(m, full_check=True)
        return m


def net_gray_odd() -> onnx.ModelProto:
    """1-channel odd non-square input, 5x5 conv, asymmetric pads, max pool, flatten of a spatial
    tensor into MatMul+Add, opset 11."""
    b = NetBuilder("gray_odd", (1, 1, 17, 13), opset=11, seed=1)
    x = b.relu(b.conv("input", 6, 5, pads=[2, 2, 2, 2]))
    x = b.clip(b.conv(x, 8, (3, 2), stride=2, pads=[1, 0, 0, 1]), 0.0, 6.0)
    x = b.pool("MaxPool", x, 3, 2, [1, 1, 1, 1])
    x = b.flatten(x)
    x = b.relu(b.matmul_add(x, 12))
    return b.build(b.gemm(x, 5))


def net_mbv2_block() -> onnx.ModelProto:
    """Stride-2 3x3 conv on an even input with symmetric pads (TFLite needs an explicit PAD),
    BN folding, ReLU6, an inverted residual block (expand, depthwise, project, Add), ReduceMean,
    Flatten, Gemm, Softmax, opset 13."""
    b = NetBuilder("mbv2_block", (1, 3, 32, 24), opset=13, seed=2)
    x = b.clip(b.bn(b.conv("input", 8, 3, stride=2, pads=[1, 1, 1, 1], bias=False)), 0.0, 6.0)
    e = b.clip(b.conv(x, 24, 1, pads=[0, 0, 0, 0]), 0.0, 6.0)
    d = b.clip(b.conv(e, 24, 3, group=24), 0.0, 6.0)
    p = b.conv(d, 8, 1, pads=[0, 0, 0, 0])
    x = b.add(x, p)
    d2 = b.clip(b.conv(x, 8, 3, stride=2, group=8, pads=[1, 1, 1, 1]), 0.0, 6.0)
    x = b.conv(d2, 16, 1, pads=[0, 0, 0, 0])
    x = b.flatten(b.reduce_mean(x))
    return b.build(b.softmax(b.gemm(x, 10)))


def net_big_kernels() -> onnx.ModelProto:
    """7x7 stride-2 stem, dilated conv, average pools (count_include_pad 0 and 1), stride-2 5x5
    on an odd input, GlobalAveragePool, opset 17 with ReduceMean-free head."""
    b = NetBuilder("big_kernels", (1, 3, 40, 36), opset=17, seed=3)
    x = b.relu(b.conv("input", 8, 7, stride=2, pads=[3, 3, 3, 3]))
    x = b.pool("AveragePool", x, 3, 2, [1, 1, 1, 1], count_include_pad=0)
    x = b.relu(b.conv(x, 12, 3, dilation=2, pads=[2, 2, 2, 2]))
    x = b.pool("AveragePool", x, 2, 1, [0, 0, 1, 1], count_include_pad=1)
    x = b.relu(b.conv(x, 16, 5, stride=2, pads=[2, 2, 2, 2]))
    x = b.flatten(b.gap(x))
    return b.build(b.gemm(x, 7, trans_b=False))


def net_groups_concat() -> onnx.ModelProto:
    """Grouped conv, depthwise with multiplier 2, channel concat of branches with different
    ranges, constant Pad, Clip(-1, 1) and a generic Clip(-2, 3), standalone ReLU after a concat,
    Identity and Dropout, opset 21 (ReduceMean axes as an input)."""
    b = NetBuilder("groups_concat", (1, 4, 15, 15), opset=21, seed=4)
    x = b.relu(b.conv("input", 8, 3))
    g = b.clip(b.conv(x, 8, 3, group=2), -1.0, 1.0)
    d = b.clip(b.conv(x, 16, 3, group=8), -2.0, 3.0)
    c = b.relu(b.concat([g, d]))
    c = b.node("Identity", [c], b.shape[c])
    c = b.node("Dropout", [c], b.shape[c])
    p = b.pad(c, 1, 0, 2, 1)
    y = b.relu(b.conv(p, 8, 3, stride=2, pads=[0, 0, 0, 0]))
    y = b.pool("MaxPool", y, 2, 2, [0, 0, 0, 0])
    y = b.reshape2d(b.reduce_mean(y))
    return b.build(b.gemm(y, 6))


def net_residual_chain() -> onnx.ModelProto:
    """Two residual adds in a row (one input read twice), BN after a non-conv op (becomes a
    1x1 depthwise conv), max pool with SAME-like pads, opset 12."""
    b = NetBuilder("residual_chain", (1, 3, 20, 20), opset=12, seed=5)
    x = b.relu(b.conv("input", 8, 3, stride=2, pads=[0, 0, 1, 1]))
    y = b.conv(b.relu(b.conv(x, 8, 3)), 8, 3)
    x = b.relu(b.add(x, y))
    z = b.conv(x, 8, 1, pads=[0, 0, 0, 0])
    x = b.add(z, x)
    x = b.bn(b.pool("MaxPool", x, 3, 1, [1, 1, 1, 1]))
    x = b.flatten(b.gap(x))
    return b.build(b.gemm(x, 4))


def net_fc_only() -> onnx.ModelProto:
    """A 1x1 spatial input (C=16): flatten, Gemm, ReLU, MatMul + Add, Softmax, opset 11."""
    b = NetBuilder("fc_only", (1, 16, 1, 1), opset=11, seed=6)
    x = b.flatten("input")
    x = b.relu(b.gemm(x, 24))
    x = b.matmul_add(x, 10)
    return b.build(b.softmax(x))


ALL_NETS = {f.__name__[4:]: f for f in (net_gray_odd, net_mbv2_block, net_big_kernels,
                                         net_groups_concat, net_residual_chain, net_fc_only)}


def save_all(folder) -> dict:
    """Write every net as <folder>/<name>.onnx; returns name -> path."""
    from pathlib import Path
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fn in ALL_NETS.items():
        paths[name] = folder / f"{name}.onnx"
        onnx.save(fn(), paths[name])
    return paths


def net_ds_cnn(channels: int = 64) -> onnx.ModelProto:
    """A DS-CNN keyword-spotting net (Hello Edge style): a 49x10 MFCC input, a (10, 4) stride-2
    conv, four depthwise-separable blocks (depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN +
    ReLU), global average pool, 12 classes, opset 13. Not in ALL_NETS (tests/test_train_c.py)."""
    b = NetBuilder("ds_cnn", (1, 1, 49, 10), opset=13, seed=12)
    x = b.relu(b.bn(b.conv("input", channels, (10, 4), stride=2, pads=[4, 1, 5, 2])))
    for _ in range(4):
        x = b.relu(b.bn(b.conv(x, channels, 3, group=channels)))
        x = b.relu(b.bn(b.conv(x, channels, 1, pads=[0, 0, 0, 0])))
    x = b.flatten(b.gap(x))
    return b.build(b.gemm(x, 12))
