"""The learner demo's model and data: scikit-learn's bundled 8x8 handwritten digits
(load_digits, no download). A small network is pretrained on the host (float, scikit-learn's
MLPClassifier) on the digits 0-4 only; the device then learns a new task, the digits 5-9, with
a new 5-class head.

The network is written as a CNN over the 1x8x8 image: an 8x8 Conv (the first hidden layer, one
output pixel), ReLU, a 1x1 Conv (the second hidden layer), ReLU, Flatten, Gemm (the 0-4 head,
which `tinyc build --num-classes 5` replaces).
"""
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HIDDEN = (64, 32)
OLD_TASK = (0, 1, 2, 3, 4)   # what the model was pretrained on
NEW_TASK = (5, 6, 7, 8, 9)   # what the device learns (labels 0-4 of the new head)


def digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as float32 (N, 1, 8, 8) in [0, 1], and their labels 0-9."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.images / 16.0).astype(np.float32)[:, None], d.target.astype(np.int64)


def new_task(seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The digits 5-9 relabelled 0-4, shuffled with `seed` and split in two halves: (x, y) to
    learn from and a held-out (x, y)."""
    x, y = digits()
    keep = np.isin(y, NEW_TASK)
    x, y = x[keep], y[keep] - NEW_TASK[0]
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    half = len(x) // 2
    return (x[:half], y[:half]), (x[half:], y[half:])


def build(path: Path, seed: int = 0) -> Path:
    """Pretrains on the digits 0-4 and writes the ONNX model to `path`."""
    from sklearn.neural_network import MLPClassifier
    x, y = digits()
    keep = np.isin(y, OLD_TASK)
    mlp = MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=300, random_state=seed)
    mlp.fit(x[keep].reshape(int(keep.sum()), -1), y[keep])
    return save_mlp_as_cnn(mlp, 8, path, "digits_net")


def save_mlp_as_cnn(mlp, side: int, path: Path, name: str) -> Path:
    """A fitted two-hidden-layer MLPClassifier over side x side images, as the CNN above: a
    side x side Conv, ReLU, a 1x1 Conv, ReLU, Flatten, Gemm; written to `path` (ONNX)."""
    (w1, w2, w3), (b1, b2, b3) = mlp.coefs_, mlp.intercepts_
    hidden = (w1.shape[1], w2.shape[1])
    f32 = lambda a: np.ascontiguousarray(a, np.float32)
    inits = [numpy_helper.from_array(f32(w1.T.reshape(hidden[0], 1, side, side)), "hidden1.w"),
             numpy_helper.from_array(f32(b1), "hidden1.b"),
             numpy_helper.from_array(f32(w2.T.reshape(hidden[1], hidden[0], 1, 1)), "hidden2.w"),
             numpy_helper.from_array(f32(b2), "hidden2.b"),
             numpy_helper.from_array(f32(w3.T), "head.w"),
             numpy_helper.from_array(f32(b3), "head.b")]
    nodes = [helper.make_node("Conv", ["input", "hidden1.w", "hidden1.b"], ["h1"], name="hidden1",
                              kernel_shape=[side, side]),
             helper.make_node("Relu", ["h1"], ["h1r"], name="hidden1.relu"),
             helper.make_node("Conv", ["h1r", "hidden2.w", "hidden2.b"], ["h2"], name="hidden2",
                              kernel_shape=[1, 1]),
             helper.make_node("Relu", ["h2"], ["h2r"], name="hidden2.relu"),
             helper.make_node("Flatten", ["h2r"], ["flat"], name="flatten", axis=1),
             helper.make_node("Gemm", ["flat", "head.w", "head.b"], ["logits"], name="head",
                              transB=1)]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, side, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, w3.shape[1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


if __name__ == "__main__":
    print(build(Path(__file__).with_name("digits_net.onnx")))
