"""Write examples/tiny_cnn.onnx: a small MobileNet-style CNN (3x64x64 input, 10 classes) with
seeded random weights, for the demo when the pretrained models of ../shared are not at hand."""
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def param(name, shape, std):
        inits.append(numpy_helper.from_array(rng.normal(0, std, shape).astype(np.float32), name))
        return name

    def conv(x, name, cin, cout, k, stride=1, group=1, relu6=True):
        w = param(name + ".w", (cout, cin // group, k, k), np.sqrt(2.0 / (cin // group * k * k)))
        b = param(name + ".b", (cout,), 0.05)
        nodes.append(helper.make_node("Conv", [x, w, b], [name], name=name, kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4, group=group))
        if not relu6:
            return name
        lo, hi = name + ".min", name + ".max"
        inits.extend([numpy_helper.from_array(np.array(0, np.float32), lo),
                      numpy_helper.from_array(np.array(6, np.float32), hi)])
        nodes.append(helper.make_node("Clip", [name, lo, hi], [name + ".act"], name=name + ".relu6"))
        return name + ".act"

    x = conv("input", "stem", 3, 16, 3, stride=2)
    x = conv(x, "dw1", 16, 16, 3, group=16)
    x = conv(x, "pw1", 16, 24, 1, relu6=False)
    e = conv(x, "expand2", 24, 72, 1)
    e = conv(e, "dw2", 72, 72, 3, group=72)
    p = conv(e, "project2", 72, 24, 1, relu6=False)
    nodes.append(helper.make_node("Add", [x, p], ["res2"], name="res2"))
    x = conv("res2", "dw3", 24, 24, 3, stride=2, group=24)
    x = conv(x, "pw3", 24, 48, 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1))
    w = param("fc.w", (10, 48), np.sqrt(1.0 / 48))
    b = param("fc.b", (10,), 0.05)
    nodes.append(helper.make_node("Gemm", ["flat", w, b], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(
        nodes, "tiny_cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


if __name__ == "__main__":
    print(build(Path(__file__).with_name("tiny_cnn.onnx")))
