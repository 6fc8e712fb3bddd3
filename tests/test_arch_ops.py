"""What ordinary architectures need beyond the basic CNN ops (issue 10): pooling with ceil_mode
(SqueezeNet), Split / Slice on channels and the channel shuffle (ShuffleNetV2, GhostNet, MixNet),
constant subgraphs and Shape folded at import, views (Squeeze, Unsqueeze, a Keras-style
Transpose before Flatten), 1-D signal inputs (N, C, L: Conv1d, pooling) and feature-vector inputs
(N, F: MLPs), classifiers that are convs before a global pooling. Each: the float import against onnxruntime and bit-exact four ways (generated C
== numpy reference == LiteRT == TFLite Micro)."""
import numpy as np
import onnx
import pytest

from nets import NetBuilder
from test_bitexact import four_way
from test_frontend import float_ir_output, onnxruntime_output
from tinyc.errors import TinycError


def net_ceil_pool(size, op="MaxPool", count_include_pad=0) -> onnx.ModelProto:
    """SqueezeNet's MaxPool(3, stride 2, ceil_mode=True), on odd and even sizes, twice."""
    b = NetBuilder("ceil", (1, 3) + size, opset=13, seed=4)
    x = b.relu(b.conv("input", 8, 3, stride=2, pads=[0, 0, 0, 0]))
    extra = {"count_include_pad": count_include_pad} if op == "AveragePool" else {}
    h, w = b.shape[x][2:]
    out = lambda n: -(-(n - 3) // 2) + 1   # noqa: E731  (ceil; no window starts past the end)
    x = b.node(op, [x], (1, 8, out(h), out(w)), kernel_shape=[3, 3], strides=[2, 2],
               ceil_mode=1, **extra)
    x = b.relu(b.conv(x, 8, 1, pads=[0, 0, 0, 0]))
    h, w = b.shape[x][2:]
    x = b.node(op, [x], (1, 8, out(h), out(w)), kernel_shape=[3, 3], strides=[2, 2],
               ceil_mode=1, **extra)
    return b.build(b.gemm(b.flatten(b.gap(x)), 4))


@pytest.mark.parametrize("size", [(31, 36), (29, 27)])
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_ceil_mode_pooling(tmp_path, size, op):
    path = tmp_path / "ceil.onnx"
    onnx.save(net_ceil_pool(size, op), path)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3) + size).astype(np.float32)
    ours, ref = float_ir_output(path, x), onnxruntime_output(path, x)
    assert ours.shape == ref.shape and np.allclose(ours, ref, atol=1e-4), np.abs(ours - ref).max()
    four_way(path, tmp_path, n_inputs=2)


def test_ceil_mode_average_with_padding_counted_is_refused(tmp_path):
    from tinyc.pipeline import import_float
    path = tmp_path / "ceil.onnx"
    onnx.save(net_ceil_pool((31, 36), "AveragePool", count_include_pad=1), path)
    with pytest.raises(TinycError, match=r"\(AveragePool\).*ceil_mode=1 with count_include_pad"):
        import_float(str(path))


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_split_slice_shuffle_views_four_ways(tmp_path, opset):
    from onnx import helper
    b = NetBuilder("shuffle", (1, 3, 12, 10), opset=opset, seed=6)
    x = b.relu(b.conv("input", 16, 3))
    left, right = "split_left", "split_right"
    if opset >= 13:
        b.nodes.append(helper.make_node("Split", [x, b.const_node("sizes", np.array([8, 8], np.int64), np.int64)],
                                        [left, right], axis=1))
    else:
        b.nodes.append(helper.make_node("Split", [x], [left, right], axis=1, split=[8, 8]))
    b.shape[left] = b.shape[right] = (1, 8, 12, 10)
    right = b.relu(b.conv(right, 8, 1, pads=[0, 0, 0, 0]))
    y = b.node("Concat", [left, right], (1, 16, 12, 10), axis=1)
    # the shuffle's shape from the tensor's own Shape (PyTorch's x.view(n, g, c // g, h, w))
    shape = b.node("Shape", [y], (4,))
    dims = [b.node("Gather", [shape, b.const_node(f"i{k}", np.array(k, np.int64), np.int64)], ()) for k in range(4)]
    g2 = b.const_node("two", np.array([2], np.int64), np.int64)
    cg = b.node("Div", [b.node("Unsqueeze", [dims[1], b.const_node("ax0", np.array([0], np.int64), np.int64)]
                               if opset >= 13 else [dims[1]], (1,), **({} if opset >= 13 else
                                                                      {"axes": [0]})), g2], (1,))
    unsq = []
    for k in (0, 2, 3):
        unsq.append(b.node("Unsqueeze", [dims[k], b.const_node(f"ax{k}x", np.array([0], np.int64), np.int64)]
                           if opset >= 13 else [dims[k]], (1,), **({} if opset >= 13 else
                                                                   {"axes": [0]})))
    five = b.node("Concat", [unsq[0], g2, cg, unsq[1], unsq[2]], (5,), axis=0)
    y = b.node("Reshape", [y, five], (1, 2, 8, 12, 10))
    y = b.node("Transpose", [y], (1, 8, 2, 12, 10), perm=[0, 2, 1, 3, 4])
    y = b.node("Reshape", [y, b.const_node("back", np.array([1, -1, 12, 10], np.int64), np.int64)], (1, 16, 12, 10))
    # GhostNet: keep the first 12 channels (Slice on axis 1)
    if opset >= 11:
        y = b.node("Slice", [y, b.const_node("st", np.array([0], np.int64), np.int64),
                             b.const_node("en", np.array([12], np.int64), np.int64),
                             b.const_node("axs", np.array([1], np.int64), np.int64)], (1, 12, 12, 10))
    y = b.relu(b.conv(y, 8, 3))
    v = b.node("Squeeze", [b.gap(y), b.const_node("sq", np.array([2, 3], np.int64), np.int64)]
               if opset >= 13 else [b.gap(y)], (1, 8), **({} if opset >= 13 else {"axes": [2, 3]}))
    path = tmp_path / "shuffle.onnx"
    onnx.save(b.build(b.gemm(v, 4)), path)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 12, 10)).astype(np.float32)
    ours, ref = float_ir_output(path, x), onnxruntime_output(path, x)
    assert np.allclose(ours, ref, atol=1e-4), np.abs(ours - ref).max()
    four_way(path, tmp_path, n_inputs=2)
    code = (tmp_path / "out" / "model.c").read_text()
    assert code.count("tinyc_gather_channels(") >= 4   # two halves, the shuffle, the slice (each
    # patch of a patch-based prefix has its own)


def test_keras_style_transpose_before_flatten(tmp_path):
    """A Keras model converted to ONNX flattens in H, W, C order: Transpose (0, 2, 3, 1) ->
    Flatten reads the IR's own bytes (the Gemm keeps its columns)."""
    b = NetBuilder("keras", (1, 3, 8, 6), opset=13, seed=9)
    x = b.relu(b.conv("input", 4, 3))
    t = b.node("Transpose", [x], (1, 8, 6, 4), perm=[0, 2, 3, 1])
    path = tmp_path / "keras.onnx"
    onnx.save(b.build(b.gemm(b.flatten(t), 5)), path)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 8, 6)).astype(np.float32)
    ours, ref = float_ir_output(path, x), onnxruntime_output(path, x)
    assert np.allclose(ours, ref, atol=1e-4), np.abs(ours - ref).max()
    four_way(path, tmp_path, n_inputs=2)


def test_view_refusals_and_folding_limits(tmp_path):
    from onnx import helper
    from tinyc.pipeline import import_float
    b = NetBuilder("bad", (1, 3, 8, 6), opset=13)
    x = b.conv("input", 4, 3)
    t = b.node("Transpose", [x], (1, 8, 6, 4), perm=[0, 2, 3, 1])
    path = tmp_path / "bad.onnx"
    onnx.save(b.build(b.gemm(b.flatten(b.relu(t)), 3)), path)
    with pytest.raises(TinycError, match=r"\(Relu\).*an N,H,W,C view \(made by node 'transpose_\d+'"
                                         r"\), which only Flatten"):
        import_float(str(path))
    # a constant subgraph that would allocate without bound is refused before it runs
    b = NetBuilder("bomb", (1, 3, 8, 6), opset=13)
    x = b.conv("input", 4, 3)
    big = b.node("ConstantOfShape", [b.const_node("s", [1 << 20, 1 << 20], np.int64)], (1,))
    b.nodes[-1].attribute.append(helper.make_attribute(
        "value", helper.make_tensor("v", 1, [1], [0.0])))
    b.node("Mul", [big, big], (1 << 20, 1 << 20))   # read by nothing the output needs
    onnx.save(b.build(b.gemm(b.flatten(b.gap(x)), 3)), path)
    with pytest.raises(TinycError, match=r"\(ConstantOfShape\).*1,099,511,627,776-element tensor"):
        import_float(str(path))


def net_squeeze_head() -> onnx.ModelProto:
    """SqueezeNet's head: a conv classifier (+ ReLU) followed by global pooling and a flatten."""
    b = NetBuilder("squeeze_head", (1, 3, 12, 12), opset=13, seed=3)
    x = b.relu(b.conv("input", 8, 3, stride=2))
    x = b.relu(b.conv(x, 6, 1, pads=[0, 0, 0, 0]))
    return b.build(b.flatten(b.gap(x)))


@pytest.mark.parametrize("scheme,classes", [("last:1", 4), ("full", None)])
def test_conv_classifier_before_pooling_trains_like_the_reference(tmp_path, scheme, classes):
    from test_train_c import assert_same_training
    from tinyc.passes.autodiff import TrainOptions
    from tinyc.pipeline import compile_training
    path = tmp_path / "sq.onnx"
    onnx.save(net_squeeze_head(), path)
    g = compile_training(str(path), None, scheme, classes, TrainOptions())
    assert g.meta["train"]["logits"] == g.outputs[0] or \
        g.producer(g.outputs[0]).op == "reshape"   # the loss reads the pooled logits
    assert "avg_pool_grad" in [n.op for n in g.nodes]
    assert_same_training(g, tmp_path, lr=0.05)


def test_hidden_fully_connected_layers_count_in_schemes(small_nets):
    """last:K and bias-only reach Gemm/MatMul layers besides the classifier (an MLP's)."""
    from tinyc.passes.sparse_update import conv_layers, resolve_scheme
    from tinyc.pipeline import compile_int8
    g = compile_int8(str(small_nets["fc_only"]), None)
    layers = conv_layers(g)
    assert [n.op for n in layers] == ["fully_connected"]
    s = resolve_scheme(g, "last:1")
    assert s.layers[layers[0].name].weights and s.layers[layers[0].name].bias


def net_conv1d() -> onnx.ModelProto:
    """A 1-D conv net on sensor data (N, C, L): strided Conv1d, MaxPool1d, a depthwise and a
    pointwise Conv1d, global pooling, a Gemm."""
    b = NetBuilder("seq1d", (1, 6, 64), opset=13, seed=2)
    rng = np.random.default_rng(0)

    def conv1d(x, cin, cout, k, stride=1, pad=None, group=1):
        w = b.init("w", rng.normal(0, 0.3, (cout, cin // group, k)))
        bias = b.init("b", rng.normal(0, 0.1, (cout,)))
        p = k // 2 if pad is None else pad
        length = (b.shape[x][2] + 2 * p - k) // stride + 1
        return b.node("Conv", [x, w, bias], (1, cout, length), kernel_shape=[k],
                      strides=[stride], pads=[p, p], group=group)

    x = b.relu(conv1d("input", 6, 16, 5, stride=2))
    x = b.node("MaxPool", [x], (1, 16, 16), kernel_shape=[2], strides=[2])
    x = b.relu(conv1d(x, 16, 16, 3, group=16))
    x = b.relu(conv1d(x, 16, 24, 1, pad=0))
    x = b.flatten(b.node("GlobalAveragePool", [x], (1, 24, 1)))
    return b.build(b.gemm(x, 5))


def net_mlp() -> onnx.ModelProto:
    """An MLP on a feature vector (N, F): an anomaly-detection autoencoder's shape."""
    b = NetBuilder("mlp", (1, 40), opset=13, seed=3)
    x = b.relu(b.gemm("input", 16))
    x = b.relu(b.gemm(x, 8))
    x = b.relu(b.gemm(x, 16))
    return b.build(b.gemm(x, 40))


@pytest.mark.parametrize("net", [net_conv1d, net_mlp])
def test_1d_and_vector_inputs_four_ways(tmp_path, net):
    path = tmp_path / "m.onnx"
    onnx.save(net(), path)
    shape = [d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    ours, ref = float_ir_output(path, x), onnxruntime_output(path, x)
    assert np.allclose(ours.reshape(ref.shape), ref, atol=1e-4), np.abs(ours - ref).max()
    four_way(path, tmp_path, n_inputs=3)


@pytest.mark.parametrize("net,scheme,classes", [(net_conv1d, "last:2", 4), (net_mlp, "last:2", None),
                                                (net_mlp, "full", 3)])
def test_1d_and_vector_nets_train_like_the_reference(tmp_path, net, scheme, classes):
    from test_train_c import assert_same_training
    from tinyc.passes.autodiff import TrainOptions
    from tinyc.pipeline import compile_training
    path = tmp_path / "m.onnx"
    onnx.save(net(), path)
    g = compile_training(str(path), None, scheme, classes, TrainOptions())
    assert_same_training(g, tmp_path, lr=0.05)


def test_vector_model_through_the_cli(tmp_path):
    """--calib and emulate --input take the model's own layout (here N, F)."""
    from conftest import tinyc
    path = tmp_path / "mlp.onnx"
    onnx.save(net_mlp(), path)
    rng = np.random.default_rng(1)
    np.save(tmp_path / "c.npy", rng.uniform(-1, 1, (16, 40)).astype(np.float32))
    np.save(tmp_path / "x.npy", rng.uniform(-1, 1, (3, 40)).astype(np.float32))
    res = tinyc("build", path, "--board", "mps2_an386", "-o", tmp_path / "o", "--calib",
                tmp_path / "c.npy", "--no-firmware")
    assert "(N, F)" in res.stdout
    tinyc("emulate", tmp_path / "o", "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert np.load(tmp_path / "y.npy").shape == (3, 40)
    np.save(tmp_path / "bad.npy", rng.uniform(-1, 1, (3, 41)).astype(np.float32))
    res = tinyc("emulate", tmp_path / "o", "--input", tmp_path / "bad.npy", "--output",
                tmp_path / "y.npy", check=False)
    assert res.returncode == 1 and "(N, 40) N, F" in res.stderr, res.stderr


def test_softmax_inside_the_network(tmp_path):
    """Softmax over the channels of a feature map (an attention-like gate), and over a vector
    that a Gemm then reads: not only at the output."""
    b = NetBuilder("softmax_mid", (1, 3, 8, 8), opset=13, seed=12)
    x = b.relu(b.conv("input", 8, 3))
    att = b.node("Softmax", [b.conv(x, 8, 1, pads=[0, 0, 0, 0])], b.shape[x], axis=1)
    y = b.node("Mul", [x, att], b.shape[x])
    v = b.node("Softmax", [b.gemm(b.flatten(b.gap(y)), 6)], (1, 6), axis=-1)
    path = tmp_path / "sm.onnx"
    onnx.save(b.build(b.gemm(v, 4)), path)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    ours, ref = float_ir_output(path, x), onnxruntime_output(path, x)
    assert np.allclose(ours, ref, atol=1e-4), np.abs(ours - ref).max()
    four_way(path, tmp_path, n_inputs=2)


def assert_same_mse_training(g, out_dir, xq, tq, lr=0.05) -> list[float]:
    """The generated C's --loss mse steps on int8 inputs xq and targets tq equal the numpy
    reference's: parameters bit for bit, losses to 1e-6. Returns the reference's losses."""
    from tinyc.reference import train as ref
    from tinyc.codegen.c import generate_c
    from tinyc.memory.planner import plan_memory, trainable_tensors
    from tinyc.targets.host import TRAIN_EXE, TRAIN_HARNESS, HostTrainer
    from conftest import host_build
    generate_c(g, plan_memory(g), out_dir)
    host_build(out_dir, harness=TRAIN_HARNESS, exe_name=TRAIN_EXE)   # runtime objects shared
    g_ref, guard = g.copy(), ref.GuardStats()
    want = [ref.train_step(g_ref, xq[k][None], tq[k], lr, k, guard) for k in range(len(xq))]
    with HostTrainer(out_dir) as t:
        got = t.train(xq, tq, lr)
        params = t.params()
    assert np.allclose(got, want, rtol=1e-6, atol=0), (got, want)
    moved = 0
    for name, _ in trainable_tensors(g):
        assert np.array_equal(params[name].reshape(g_ref.tensors[name].data.shape),
                              g_ref.tensors[name].data), name
        moved += int(np.sum(g_ref.tensors[name].data != g.tensors[name].data))
    assert moved > 0, "no parameter moved: the comparison would prove nothing"
    return want


def test_mse_loss_trains_an_autoencoder_like_the_reference(tmp_path):
    """--loss mse: the generated C's step equals the numpy reference's (parameters bit for bit,
    losses to 1e-6), and reconstruction training lowers the loss."""
    from tinyc.passes.autodiff import TrainOptions
    from tinyc.pipeline import compile_training, quantize_array
    path = tmp_path / "ae.onnx"
    onnx.save(net_mlp(), path)
    rng = np.random.default_rng(3)
    calib = rng.uniform(-1, 1, (16, 40)).astype(np.float32)
    g = compile_training(str(path), calib, "full", None, TrainOptions(loss="mse"))
    assert [n.op for n in g.nodes].count("mse") == 1
    xin, yout = (g.tensors[t].q.scalar() for t in (g.inputs[0], g.outputs[0]))
    x = rng.uniform(-1, 1, (40, 40)).astype(np.float32)
    xq, tq = quantize_array(x, *xin), quantize_array(x, *yout)   # reconstruct the input
    want = assert_same_mse_training(g, tmp_path / "out", xq, tq)
    assert np.mean(want[-10:]) < np.mean(want[:10])


def test_mse_loss_refusals(small_nets, tmp_path):
    from tinyc.passes.autodiff import TrainOptions
    from tinyc.pipeline import compile_training
    with pytest.raises(TinycError, match="--num-classes .* goes with --loss ce"):
        compile_training(str(small_nets["mbv2_block"]), None, "last:1", 3,
                         TrainOptions(loss="mse"))
    with pytest.raises(TinycError, match="ends in a Softmax"):
        compile_training(str(small_nets["fc_only"]), None, "last:1", None,
                         TrainOptions(loss="mse"))


def test_mse_through_the_cli(tmp_path):
    """build --train full --loss mse --no-firmware, then emulate --train-data with float targets
    (an autoencoder: the input itself) and --eval-data: the eval error falls."""
    import re
    from conftest import assert_clean_failure, tinyc
    path = tmp_path / "ae.onnx"
    onnx.save(net_mlp(), path)
    rng = np.random.default_rng(5)
    basis = rng.normal(0, 1, (4, 40))
    x = np.tanh(rng.normal(0, 1, (120, 4)) @ basis / 2).astype(np.float32)   # a 4-D manifold
    np.save(tmp_path / "c.npy", x[:32])
    np.savez(tmp_path / "train.npz", x=x[:100], y=x[:100])
    np.savez(tmp_path / "eval.npz", x=x[100:], y=x[100:])
    tinyc("build", path, "--board", "mps2_an386", "-o", tmp_path / "o", "--calib",
          tmp_path / "c.npy", "--train", "full", "--loss", "mse", "--no-firmware", "--lr", "0.05")
    res = tinyc("emulate", tmp_path / "o", "--train-data", tmp_path / "train.npz", "--eval-data",
                tmp_path / "eval.npz", "--epochs", "3")
    errors = [float(v) for v in re.findall(r"eval mse ([\d.]+)", res.stdout)]
    assert len(errors) == 3 and errors[-1] < errors[0], res.stdout
    res = tinyc("build", path, "--board", "mps2_an386", "-o", tmp_path / "f", "--train", "full",
                "--loss", "mse", check=False)
    assert_clean_failure(res, "--loss mse", "--no-firmware")


def test_keras_style_nhwc_input(tmp_path):
    """tf2onnx's layout: an N,H,W,C input read by a Transpose to N,C,H,W, and a Transpose back
    before the flatten. The input stays N,H,W,C for --calib and emulate (the model's own)."""
    from conftest import tinyc
    b = NetBuilder("keras_nhwc", (1, 10, 8, 3), opset=13, seed=13)
    x = b.node("Transpose", ["input"], (1, 3, 10, 8), perm=[0, 3, 1, 2])
    x = b.relu(b.conv(x, 6, 3, stride=2))
    x = b.node("Transpose", [x], (1, 5, 4, 6), perm=[0, 2, 3, 1])
    path = tmp_path / "keras.onnx"
    onnx.save(b.build(b.gemm(b.flatten(x), 4)), path)
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (1, 10, 8, 3)).astype(np.float32)
    ours, ref = float_ir_output(path, x), onnxruntime_output(path, x)
    assert np.allclose(ours, ref, atol=1e-4), np.abs(ours - ref).max()
    four_way(path, tmp_path, n_inputs=2)
    np.save(tmp_path / "x.npy", rng.uniform(-1, 1, (2, 10, 8, 3)).astype(np.float32))
    res = tinyc("build", path, "--board", "mps2_an386", "-o", tmp_path / "o", "--no-firmware",
                "--calib", tmp_path / "x.npy")
    assert "(N, H, W, C)" in res.stdout
    tinyc("emulate", tmp_path / "o", "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy")
    assert np.load(tmp_path / "y.npy").shape == (2, 4)


@pytest.mark.parametrize("perm", [[0, 1, 3, 2], [0, 2, 1, 3], [0, 3, 2, 1]])
def test_transpose_kernel(tmp_path, perm):
    """A Transpose that moves data (H <-> W, C <-> H, C <-> W): a real kernel (TFLite
    TRANSPOSE), forward four ways and its gradient in training."""
    from test_train_c import assert_same_training
    from tinyc.passes.autodiff import TrainOptions
    from tinyc.pipeline import compile_training
    b = NetBuilder("transpose", (1, 3, 10, 8), opset=13, seed=14)
    x = b.relu(b.conv("input", 6, 3))
    shape = b.shape[x]
    x = b.node("Transpose", [x], tuple(shape[p] for p in perm), perm=perm)
    x = b.relu(b.conv(x, 5, 3))
    path = tmp_path / "t.onnx"
    onnx.save(b.build(b.gemm(b.flatten(b.gap(x)), 4)), path)
    xin = np.random.default_rng(0).uniform(-1, 1, (1, 3, 10, 8)).astype(np.float32)
    ours, ref = float_ir_output(path, xin), onnxruntime_output(path, xin)
    assert np.allclose(ours, ref, atol=1e-4), np.abs(ours - ref).max()
    four_way(path, tmp_path, n_inputs=2)
    g = compile_training(str(path), None, "full", 3, TrainOptions())
    assert "grad_transpose" in [n.op for n in g.nodes]
    assert_same_training(g, tmp_path / "train", lr=0.05)


def net_per_channel_constants() -> onnx.ModelProto:
    """An input normalisation baked into the model ((x - mean[c]) / std[c]), and a per-channel
    scale and shift mid-network (a layer-scale or an unfused affine)."""
    b = NetBuilder("per_channel", (1, 3, 10, 8), opset=13, seed=15)
    x = b.node("Sub", ["input", b.init("mean", np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1))],
               (1, 3, 10, 8))
    x = b.node("Div", [x, b.init("std", np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1))],
               (1, 3, 10, 8))
    x = b.relu(b.conv(x, 6, 3))
    x = b.node("Mul", [x, b.init("gamma", np.linspace(0.5, 2.0, 6).reshape(6, 1, 1))], b.shape[x])
    x = b.node("Add", [x, b.init("beta", np.linspace(-0.3, 0.3, 6).reshape(1, 6, 1, 1))],
               b.shape[x])
    x = b.relu(b.conv(x, 5, 3))
    return b.build(b.gemm(b.flatten(b.gap(x)), 4))


def test_per_channel_constants_four_ways_and_training(tmp_path):
    from test_train_c import assert_same_training
    from tinyc.passes.autodiff import TrainOptions
    from tinyc.pipeline import compile_training
    path = tmp_path / "pc.onnx"
    onnx.save(net_per_channel_constants(), path)
    xin = np.random.default_rng(0).uniform(0, 1, (1, 3, 10, 8)).astype(np.float32)
    ours, ref = float_ir_output(path, xin), onnxruntime_output(path, xin)
    assert np.allclose(ours, ref, atol=1e-4), np.abs(ours - ref).max()
    four_way(path, tmp_path, n_inputs=2)
    code = (tmp_path / "out" / "model.c").read_text()
    assert "tinyc_add_channels(" in code and "tinyc_mul(" in code
    g = compile_training(str(path), None, "full", 3, TrainOptions())
    assert any(n.op == "grad_mul" for n in g.nodes)
    assert_same_training(g, tmp_path / "train", lr=0.05)


def test_training_through_softmax_and_crops(tmp_path):
    """Gradients through a softmax inside the network (softmax_grad) and a Slice of rows and
    columns (crop_grad): generated C == numpy reference."""
    from test_train_c import assert_same_training
    from tinyc.passes.autodiff import TrainOptions
    from tinyc.pipeline import compile_training
    b = NetBuilder("softmax_crop", (1, 3, 10, 9), opset=13, seed=16)
    x = b.relu(b.conv("input", 8, 3))
    att = b.node("Softmax", [b.conv(x, 8, 1, pads=[0, 0, 0, 0])], b.shape[x], axis=1)
    y = b.node("Mul", [x, att], b.shape[x])
    y = b.node("Slice", [y, b.const_node("s", [1, 2], np.int64), b.const_node("e", [9, 8], np.int64),
                         b.const_node("a", [2, 3], np.int64)], (1, 8, 8, 6))
    path = tmp_path / "sc.onnx"
    onnx.save(b.build(b.gemm(b.flatten(b.gap(b.relu(b.conv(y, 6, 3)))), 4)), path)
    four_way(path, tmp_path, n_inputs=2)
    g = compile_training(str(path), None, "full", 3, TrainOptions())
    assert {"softmax_grad", "crop_grad"} <= {n.op for n in g.nodes}
    assert_same_training(g, tmp_path / "train", lr=0.05)
