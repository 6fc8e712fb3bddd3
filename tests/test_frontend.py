"""The importer: float IR executed in numpy equals onnxruntime; bad models fail with clear errors."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import SHARED_NAMES, shared_model
from nets import ALL_NETS, NetBuilder
from tinyc.errors import TinycError, UnsupportedError
from tinyc.pipeline import import_float, nchw_to_nhwc
from tinyc.reference.float_exec import run_float


def onnxruntime_output(path, x):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def float_ir_output(path, x, input_shape=None):
    from tinyc.pipeline import model_batch_to_ir
    g = import_float(str(path), input_shape)
    return run_float(g, model_batch_to_ir(x, g.meta["input_nchw"], g.meta.get("input_layout"))
                     )[g.outputs[0]]


@pytest.mark.parametrize("name", sorted(ALL_NETS))
def test_small_nets_match_onnxruntime(small_nets, name):
    path = small_nets[name]
    shape = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(7).uniform(-1, 1, shape).astype(np.float32)
    ours, ref = float_ir_output(path, x), onnxruntime_output(path, x)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("name", SHARED_NAMES[::2])
def test_shared_models_match_onnxruntime(name):
    path = shared_model(name)
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, 96, 96)).astype(np.float32)
    ours, ref = float_ir_output(path, x), onnxruntime_output(path, x)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_input_shape_override():
    path = shared_model("mbv2-w0.35_96")
    g = import_float(str(path), (1, 3, 64, 80))
    assert g.tensors[g.inputs[0]].shape == (1, 64, 80, 3)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 80)).astype(np.float32)
    assert float_ir_output(path, x, (1, 3, 64, 80)).shape == (1, 1000)


def test_batchnorm_and_clamps_are_folded(small_nets):
    g = import_float(str(small_nets["mbv2_block"]))
    ops = [n.op for n in g.nodes]
    assert "clamp" not in ops                  # every ReLU6 fused into its conv
    assert ops.count("conv2d") == 6            # the BN disappeared into the first conv
    assert g.nodes[0].attrs["clamp"] == (0.0, 6.0)


def _model(nodes, inits, in_shape=(1, 3, 8, 8), out_shape=None, opset=13, out="y"):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _save(tmp_path, model, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, path)
    return str(path)


def _conv_init(rng, cout=4, cin=3, k=3):
    return numpy_helper.from_array(rng.normal(size=(cout, cin, k, k)).astype(np.float32), "w")


def test_unsupported_op_names_node_op_and_supported_set(tmp_path):
    m = _model([helper.make_node("Tanh", ["x"], ["y"], name="my_tanh")], [])
    with pytest.raises(UnsupportedError) as e:
        import_float(_save(tmp_path, m))
    msg = str(e.value)
    assert "my_tanh" in msg and "Tanh" in msg and "Conv" in msg and "Supported" in msg


def test_nan_weights_rejected(tmp_path):
    w = np.ones((4, 3, 3, 3), np.float32)
    w[1, 0, 0, 0] = np.nan
    m = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv_nan", pads=[1, 1, 1, 1])],
               [numpy_helper.from_array(w, "w")])
    with pytest.raises(TinycError, match="conv_nan.*NaN"):
        import_float(_save(tmp_path, m))


def test_truncated_and_non_onnx_files(tmp_path, small_nets):
    data = small_nets["gray_odd"].read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(TinycError):
        import_float(str(bad))
    txt = tmp_path / "notes.onnx"
    txt.write_text("this is not a model\n" * 20)
    with pytest.raises(TinycError):
        import_float(str(txt))
    with pytest.raises(TinycError, match="no such file"):
        import_float(str(tmp_path / "missing.onnx"))


def test_dynamic_shape_needs_input_shape(tmp_path):
    rng = np.random.default_rng(0)
    m = _model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], [_conv_init(rng)],
               in_shape=[1, 3, "H", "W"])
    path = _save(tmp_path, m)
    with pytest.raises(TinycError, match="--input-shape"):
        import_float(path)
    g = import_float(path, (1, 3, 10, 12))
    assert g.tensors[g.outputs[0]].shape == (1, 10, 12, 4)


def test_opset_out_of_range(tmp_path):
    rng = np.random.default_rng(0)
    m = _model([helper.make_node("Conv", ["x", "w"], ["y"])], [_conv_init(rng)], opset=9)
    with pytest.raises(UnsupportedError, match="opset 9"):
        import_float(_save(tmp_path, m))


def test_computed_reshape_shape_is_folded(tmp_path):
    """Shape of an activation is a constant (static shapes), so a view computed from it is one."""
    b = NetBuilder("computed", (1, 3, 6, 6), opset=13)
    x = b.conv("input", 4, 3)
    x = b.node("Reshape", [x, b.node("Shape", [x], (4,))], b.shape[x])
    path = _save(tmp_path, b.build(b.gemm(b.flatten(b.gap(x)), 3)))
    assert [n.op for n in import_float(path).nodes] == ["conv2d", "avg_pool", "reshape",
                                                        "fully_connected"]


def test_spatial_flatten_must_feed_a_gemm(tmp_path):
    b = NetBuilder("flat_out", (1, 3, 6, 6), opset=13)
    x = b.flatten(b.conv("input", 4, 3))
    with pytest.raises(UnsupportedError, match="Gemm"):
        import_float(_save(tmp_path, b.build(x)))


def test_broadcast_add_is_rejected(tmp_path):
    b = NetBuilder("bcast", (1, 3, 6, 6), opset=13)
    a = b.conv("input", 4, 3)
    c = b.gap(a)
    y = b.node("Add", [a, c], b.shape[a])
    with pytest.raises(UnsupportedError, match="same shape"):
        import_float(_save(tmp_path, b.build(y)))
