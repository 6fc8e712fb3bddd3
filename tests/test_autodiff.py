"""Backward rules against numerical differentiation, and backward pruning for update schemes."""
import json

import numpy as np
import pytest

from conftest import shared_model
from nets import ALL_NETS
from tinyc.errors import TinycError
from tinyc.ir import Node
from tinyc.pipeline import compile_training
from tinyc.reference.common import conv_accumulate, pool_windows
from tinyc.reference import train as tr

rng = np.random.default_rng(0)


def numeric_grad(f, x, eps=1e-3):
    """Central differences of scalar f at x (float64)."""
    g = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f(x)
        flat[i] = old - eps
        down = f(x)
        flat[i] = old
        g.reshape(-1)[i] = (up - down) / (2 * eps)
    return g


CONV_CASES = [
    # (cin, cout, k, stride, pads, dilation, groups, H, W)
    (3, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 7, 6),
    (4, 4, (3, 3), (2, 2), (1, 0, 0, 1), (1, 1), 4, 8, 7),      # depthwise, stride 2, asym pads
    (2, 4, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 2, 6, 6),      # depthwise multiplier 2
    (4, 6, (1, 3), (1, 2), (0, 1, 0, 1), (1, 1), 2, 5, 9),      # grouped, non-square kernel
    (3, 2, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1, 7, 7),      # dilated
    (5, 3, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 1, 9, 8),
]


def conv_case(case):
    cin, cout, k, strides, pads, dil, groups, h, w = case
    attrs = {"strides": strides, "pads": pads, "dilations": dil, "groups": groups, "fc": False,
             "w_scale": rng.uniform(0.005, 0.02, cout).astype(np.float32),
             "x_scale": np.float32(0.03), "x_zero_point": -5}
    w_q = rng.integers(-127, 128, (cout, k[0], k[1], cin // groups)).astype(np.int8)
    x_q = rng.integers(-128, 128, (1, h, w, cin)).astype(np.int8)
    return attrs, w_q, x_q


def real_conv(x_real, w_real, attrs):
    return conv_accumulate(x_real[0], w_real, attrs["strides"], attrs["pads"],
                           attrs["dilations"], attrs["groups"], np.float64)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_input_and_weight_gradients(case):
    attrs, w_q, x_q = conv_case(case)
    w_real = attrs["w_scale"].astype(np.float64).reshape(-1, 1, 1, 1) * w_q
    x_real = float(attrs["x_scale"]) * (x_q.astype(np.float64) - attrs["x_zero_point"])
    y_shape = real_conv(x_real, w_real, attrs).shape
    g_y = rng.normal(size=(1,) + y_shape).astype(np.float32)
    loss_x = lambda xr: float(np.sum(g_y[0] * real_conv(xr, w_real, attrs)))
    loss_w = lambda wr: float(np.sum(g_y[0] * real_conv(x_real, wr, attrs)))
    g_x = tr.conv_grad_input(g_y, w_q, attrs, x_q.shape)
    np.testing.assert_allclose(g_x, numeric_grad(loss_x, x_real.copy()), rtol=1e-4, atol=1e-4)
    g_w = tr.weight_grad(g_y[0], x_q, attrs, w_q.shape[1:3])      # (O, KH, KW, C_in)
    num_w = numeric_grad(loss_w, w_real.copy())                    # (O, KH, KW, C_in/groups)
    cout_g, cin_g = w_q.shape[0] // attrs["groups"], w_q.shape[3]
    for o in range(w_q.shape[0]):
        grp = o // cout_g
        np.testing.assert_allclose(g_w[o, :, :, grp * cin_g:(grp + 1) * cin_g], num_w[o],
                                   rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tr.bias_grad(g_y[0]), g_y[0].sum(axis=(0, 1)), rtol=1e-5)


def test_fully_connected_gradients():
    attrs = {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1), "groups": 1, "fc": True,
             "w_scale": np.full(5, 0.01, np.float32), "x_scale": np.float32(0.05), "x_zero_point": 3}
    w_q = rng.integers(-127, 128, (5, 7)).astype(np.int8)
    x_q = rng.integers(-128, 128, (1, 7)).astype(np.int8)
    g_y = rng.normal(size=(1, 5)).astype(np.float32)
    w_real = 0.01 * w_q.astype(np.float64)
    x_real = 0.05 * (x_q.astype(np.float64) - 3)
    np.testing.assert_allclose(tr.conv_grad_input(g_y, w_q, attrs, x_q.shape),
                               numeric_grad(lambda xr: float(g_y[0] @ (w_real @ xr[0])), x_real.copy()),
                               rtol=1e-4, atol=1e-5)
    gw = tr.weight_grad(g_y.reshape(1, 1, 5), x_q.reshape(1, 1, 1, 7), attrs, (1, 1))
    np.testing.assert_allclose(gw.reshape(5, 7), np.outer(g_y[0], x_real[0]), rtol=1e-5, atol=1e-6)


def test_softmax_cross_entropy_gradient():
    q = rng.integers(-128, 128, (1, 10)).astype(np.int8)
    scale, zp, label = 0.07, 4, 3

    def ce(z):
        z = z - z.max()
        return float(np.log(np.exp(z).sum()) - z[0, label])

    z = scale * (q.astype(np.float64) - zp)
    g, loss = tr.softmax_ce(q, scale, zp, label)
    np.testing.assert_allclose(g, numeric_grad(ce, z.copy()), rtol=1e-4, atol=1e-6)
    assert abs(loss - ce(z)) < 1e-5 * abs(ce(z))


def test_expf_is_accurate():
    x = np.linspace(-80, 0, 20001).astype(np.float32)
    np.testing.assert_allclose(tr.expf(x), np.exp(x.astype(np.float64)), rtol=4 * 2.0 ** -23, atol=0)  # within 4 ulp


@pytest.mark.parametrize("op,count_pad", [("avg_pool", False), ("avg_pool", True), ("max_pool", False)])
def test_pool_gradients(op, count_pad):
    h, w, c = 7, 6, 2
    # distinct values per channel so the max is unique and the numeric derivative defined
    x_q = np.stack([rng.permutation(h * w) - 60 for _ in range(c)], -1).reshape(1, h, w, c).astype(np.int8)
    attrs = {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 0), "count_include_pad": count_pad}
    node = Node("p", op + "_grad", [], [], attrs)

    def pool(xr):
        vals, valid = pool_windows(xr[0], attrs["kernel"], attrs["strides"], attrs["pads"],
                                   -np.inf if op == "max_pool" else 0.0)
        if op == "max_pool":
            return vals.max(axis=2)
        return vals.sum(axis=2) / (vals.shape[2] if count_pad else valid.sum(axis=2))

    xr = 0.1 * x_q.astype(np.float64)
    y = pool(xr)
    g_y = rng.normal(size=(1,) + y.shape).astype(np.float32)
    got = tr.pool_grad(node, g_y, x_q, x_q.shape)
    num = numeric_grad(lambda v: float(np.sum(g_y[0] * pool(v))), xr.copy(), eps=1e-3)
    np.testing.assert_allclose(got, num, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ pruning

def _training_graph(small_nets, name, scheme, num_classes=3):
    import onnx
    path = str(small_nets[name])
    shape = [d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim]
    calib = rng.uniform(-1, 1, [4] + shape[1:]).astype(np.float32)
    return compile_training(path, calib, scheme, num_classes)


def _backward(g):
    """The backward nodes, each fused dw_pw_grad node (passes/fuse_grad.py) as its parts."""
    out = []
    for n in g.nodes[g.meta["train"]["forward_nodes"]:]:
        out += ([p for p in n.attrs["parts"].values() if p is not None] if n.op == "dw_pw_grad"
                else [n])
    return out


def test_bias_only_keeps_no_activation(small_nets):
    g = _training_graph(small_nets, "mbv2_block", "bias-only")
    updates = [n for n in _backward(g) if n.op == "conv2d_update"]
    assert len(updates) == 7                     # 6 convs + the classifier
    head = updates[0]
    assert head.inputs[1] != "" and head.attrs["channels"] is not None  # classifier: full
    for u in updates[1:]:
        assert u.inputs[1] == "" and u.attrs["channels"] is None and u.attrs["update_bias"]
    assert not any(n.op == "select_channels" for n in g.nodes)
    # back-propagation stops at the first conv: its input gradient is never computed
    first = g.nodes[0]
    assert not any(n.op == "conv2d_grad_input" and n.name.startswith(first.name + "/")
                   for n in _backward(g))
    assert "grad:" + g.inputs[0] not in g.tensors


def test_last_k_stops_backprop(small_nets):
    g = _training_graph(small_nets, "mbv2_block", "last:1")
    ops = [n.op for n in _backward(g)]
    assert ops.count("conv2d_update") == 2
    assert ops.count("conv2d_grad_input") == 1   # only through the classifier
    produced = {o for n in _backward(g) for o in n.outputs}
    convs = [n for n in g.nodes if n.op == "conv2d"]
    last_conv_input = convs[-2].inputs[0]        # input of the last conv before the classifier
    assert "grad:" + last_conv_input not in produced


def test_partial_channels_saved_only(small_nets, tmp_path):
    scheme = tmp_path / "s.json"
    scheme.write_text(json.dumps({"bias_last": 2, "weights": {"3": 0.5}}))
    from tinyc.passes.sparse_update import parse_scheme
    g = _training_graph(small_nets, "mbv2_block", parse_scheme(str(scheme)))
    keep = [n for n in g.nodes if n.op == "select_channels"]
    assert len(keep) == 1
    conv3 = [n for n in g.nodes if n.op == "conv2d" and n.source_op == "Conv"][3]
    cin = g.tensors[conv3.inputs[0]].shape[-1]
    chans = keep[0].attrs["channels"]
    assert len(chans) == cin // 2 and g.tensors[keep[0].outputs[0]].shape[-1] == cin // 2
    # the kept channels are those with the largest weight norm
    w = g.tensors[conv3.inputs[1]]
    norms = np.sqrt(((w.data.astype(np.float64) * w.q.scale.reshape(-1, 1, 1, 1)) ** 2).sum(axis=(0, 1, 2)))
    assert set(chans) == set(np.argsort(-norms, kind="stable")[:cin // 2])


def test_training_reduces_loss_on_a_separable_task(small_nets):
    """A sanity check of the whole chain: a fixed set of 12 inputs with 3 labels is learned."""
    import onnx
    from tinyc.pipeline import check_model_input, quantize_input
    path = str(small_nets["residual_chain"])
    x = rng.uniform(-1, 1, (12, 3, 20, 20)).astype(np.float32)
    g = compile_training(path, x, "full", 3)
    xq = quantize_input(g, check_model_input(g, x, "x", batch=True))
    y = np.arange(12) % 3
    first = [tr.train_step(g, xq[i:i + 1], int(y[i]), 0.05, i) for i in range(12)]
    for epoch in range(1, 8):
        last = [tr.train_step(g, xq[i:i + 1], int(y[i]), 0.05, 12 * epoch + i) for i in range(12)]
    assert np.mean(last) < 0.6 * np.mean(first)


def test_bad_schemes_are_rejected(small_nets, tmp_path):
    from tinyc.passes.sparse_update import parse_scheme
    for bad, msg in [({"bias_last": 99}, "bias_last"), ({"weights": {"17": 1}}, "out of range"),
                     ({"weights": {"0": 1.5}}, "ratio"), ({"nonsense": 1}, "scheme")]:
        f = tmp_path / "bad.json"
        f.write_text(json.dumps(bad))
        with pytest.raises(TinycError, match=msg):
            _training_graph(small_nets, "mbv2_block", parse_scheme(str(f)))
    with pytest.raises(TinycError, match="shorthand"):
        parse_scheme("everything")


# ------------------------------------------------------------------ published schemes

PUBLISHED = {
    "mbv2-w0.35": {"49kb": (16, {36: 1, 39: 1, 40: 0, 41: .25, 42: .125, 45: .125, 48: .125, 49: .125}),
                   "99kb": (25, {27: 1, 30: 1, 33: 1, 36: 1, 39: 1, 42: .125, 45: .5, 48: 1}),
                   "138kb": (34, {i: 1 for i in (27, 30, 33, 36, 39, 42, 45, 48)})},
    "mcunet-5fps": {"49kb": (20, {23: 0, 24: .25, 27: .5, 30: .5, 33: 0, 39: 0}),
                    "99kb": (22, {21: 1, 24: 1, 27: 1, 30: 1, 36: .125, 39: .25}),
                    "148kb": (23, {21: 1, 24: 1, 27: 1, 30: 1, 36: 1, 39: .5})},
    "proxyless-w0.3": {"49kb": (21, {39: .25, 42: 1, 44: 0, 45: 1, 50: 0, 51: .125, 54: .25, 57: .25}),
                       "148kb": (45, {i: 1 for i in (36, 39, 42, 45, 48, 51, 54, 57)})},
}


@pytest.mark.parametrize("net,scheme", [(n, s) for n in PUBLISHED for s in PUBLISHED[n]])
def test_published_schemes_reproduce(net, scheme, tmp_path):
    from tinyc.memory.planner import update_nodes
    from tinyc.passes.sparse_update import conv_layers, parse_scheme
    path = shared_model(f"{net}_128")
    k, weights = PUBLISHED[net][scheme]
    f = tmp_path / "scheme.json"
    f.write_text(json.dumps({"bias_last": k, "weights": {str(i): r for i, r in weights.items()}}))
    calib = rng.uniform(-1, 1, (2, 3, 128, 128)).astype(np.float32)
    g = compile_training(str(path), calib, parse_scheme(str(f)), 10)
    convs = conv_layers(g)
    updates = {n.name[:-len("/update")]: n for n in update_nodes(g)}   # fused ones included
    n = len(convs)
    for i, conv in enumerate(convs):
        ratio = weights.get(i, 0)
        cin = g.tensors[conv.inputs[0]].shape[-1]
        expect_w = int(np.floor(ratio * cin + 1e-9))
        expect_b = i >= n - k or expect_w > 0
        u = updates.get(conv.name)
        assert (u is not None and u.attrs["update_bias"]) == expect_b, (i, conv.name)
        got_w = 0 if u is None or u.attrs["channels"] is None else len(u.attrs["channels"])
        assert got_w == expect_w, (i, got_w, expect_w)
    # back-propagation stops at the earliest updated layer
    first = min(i for i, c in enumerate(convs) if c.name in updates)
    inside = [p for nd in g.nodes if nd.op == "dw_pw_grad" for p in nd.attrs["parts"].values()
              if p is not None]
    assert not any(nd.op == "conv2d_grad_input" and nd.name == convs[first].name + "/grad_input"
                   for nd in g.nodes + inside)
    assert len(updates) == sum(1 for i in range(n) if i >= n - k or np.floor(weights.get(i, 0) * 1e9) > 0) + 1
