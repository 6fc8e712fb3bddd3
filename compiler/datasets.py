"""Users' data files -> the int8 arrays the generated C takes, given a build's report.json
(its input quantization and layout, its output and loss): `tinyc emulate` and `tinyc build
--train-data` read them the same way."""
from __future__ import annotations

import numpy as np

from .errors import TinycError


def model_inputs(rep: dict, x: np.ndarray, source: str) -> np.ndarray:
    """Inputs in the ONNX layout (NCHW; float or int8) -> int8 NHWC batch for the C code."""
    from .build import int8_inputs

    inp = rep["input"]
    return int8_inputs(x, inp["shape_nchw"], inp["scale"], inp["zero_point"], source,
                       inp.get("layout"))


def labelled_data(rep: dict, path: str) -> tuple[np.ndarray, np.ndarray]:
    """A training/eval .npz with x (inputs) and y (int labels; --loss mse: float targets of the
    output's shape) -> (int8 inputs in the IR layout, labels or int8 targets)."""
    from .calib import load_array

    x, y = load_array(path, "x"), load_array(path, "y")
    if rep.get("training", {}).get("loss") == "mse":
        return model_inputs(rep, x, path), mse_targets(rep, x, y, path)
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise TinycError(f"{path}: y must be a 1-D array of integer labels (got {y.dtype} {y.shape})")
    if len(y) != len(x):
        raise TinycError(f"{path}: {len(x)} inputs but {len(y)} labels")
    classes = rep["output"]["shape"][-1]
    bad = np.flatnonzero((y < 0) | (y >= classes))
    if len(bad):
        raise TinycError(f"{path}: label {y[bad[0]]} of sample {bad[0]} is out of range: the "
                         f"model has {classes} classes (0..{classes - 1}); use --num-classes")
    return model_inputs(rep, x, path), y.astype(np.int64)


def mse_targets(rep: dict, x: np.ndarray, y: np.ndarray, path: str) -> np.ndarray:
    """Float targets (N, output values) -> int8 in the output's quantization."""
    from .pipeline import quantize_array
    out = rep["output"]
    n_out = int(np.prod(out["shape"]))
    if y.dtype.kind != "f" or len(y) != len(x) or y[0].size != n_out:
        raise TinycError(f"{path}: y must hold one float target of {n_out} values per input "
                         f"(--loss mse; got {y.dtype} {y.shape} for {len(x)} inputs)")
    if not np.all(np.isfinite(y)):
        raise TinycError(f"{path}: y contains NaN or Inf")
    return quantize_array(y.reshape(len(y), n_out), out["scale"], out["zero_point"])


def labelled_data_for_graph(g, path: str, loss: str = "ce") -> tuple[np.ndarray, np.ndarray]:
    """labelled_data for an int8 graph being compiled (before its report exists)."""
    from .passes.train_head import logits
    scale, zp = g.tensors[g.inputs[0]].q.scalar()
    out = g.tensors[logits(g)]
    o_scale, o_zp = out.q.scalar()
    rep = {"input": {"shape_nchw": list(g.meta["input_nchw"]), "scale": float(scale),
                     "zero_point": int(zp), "layout": g.meta.get("input_layout")},
           "output": {"shape": list(out.shape), "scale": float(o_scale),
                      "zero_point": int(o_zp)},
           "training": {"loss": loss}}
    return labelled_data(rep, path)
