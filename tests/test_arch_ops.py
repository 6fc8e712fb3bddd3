"""What ordinary architectures need beyond the basic CNN ops (issue 10): pooling with ceil_mode
(SqueezeNet), ... Each: the float import against onnxruntime and bit-exact four ways (generated C
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
