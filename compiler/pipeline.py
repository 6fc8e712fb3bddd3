"""The compile pipeline as plain function calls: ONNX -> float IR -> int8 IR (and data helpers)."""
from __future__ import annotations

import time

import numpy as np

from . import ops
from .errors import TinycError
from .frontend.onnx import load_onnx
from .ir import Graph
from .passes.flatten_order import fix_flatten_order
from .passes.fuse_activations import fuse_activations
from .passes.quantize import quantize
from .reference.fixedpoint import round_half_away


def import_float(path: str, input_shape=None) -> Graph:
    """ONNX file -> simplified float IR (activations fused, flatten order fixed)."""
    g = load_onnx(path, input_shape)
    g = fuse_activations(g)
    g = fix_flatten_order(g)
    return g


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, -3, -1))


LAYOUTS = {"nchw": "N, C, H, W", "nhwc": "N, H, W, C", "ncl": "N, C, L", "nf": "N, F"}


def input_layout(model_shape, layout: str | None = None) -> str:
    """The model input's layout: given (an N,H,W,C model: frontend/onnx.py), else by rank."""
    return layout or {4: "nchw", 3: "ncl", 2: "nf"}[len(model_shape)]


def model_batch_to_ir(x: np.ndarray, model_shape, layout: str | None = None) -> np.ndarray:
    """A batch in the model input's own layout -> the IR's: N,C,H,W -> N,H,W,C; N,C,L (a 1-D
    signal) -> N,1,L,C; N,H,W,C and N,F as they are."""
    layout = input_layout(model_shape, layout)
    if layout == "nchw":
        return nchw_to_nhwc(x)
    if layout == "ncl":
        return np.ascontiguousarray(np.moveaxis(x, 1, -1)[:, None])
    return np.ascontiguousarray(x)


def ir_batch_to_model(x: np.ndarray, model_shape, layout: str | None = None) -> np.ndarray:
    """The inverse of model_batch_to_ir."""
    layout = input_layout(model_shape, layout)
    if layout == "nchw":
        return np.ascontiguousarray(np.moveaxis(x, -1, 1))
    if layout == "ncl":
        return np.ascontiguousarray(np.moveaxis(x[:, 0], -1, 1))
    return np.ascontiguousarray(x)


def layout_name(model_shape, layout: str | None = None) -> str:
    return LAYOUTS[input_layout(model_shape, layout)]


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def synthetic_calibration(g: Graph, n: int = 8, seed: int = 0) -> np.ndarray:
    """The documented fallback without --calib: uniform noise in [-1, 1] (the range of the usual
    p/127.5 - 1 image normalisation). Activation ranges then rarely match real data."""
    shape = g.tensors[g.inputs[0]].shape[1:]
    return np.random.default_rng(seed).uniform(-1, 1, (n,) + shape).astype(np.float32)


def compile_int8(path: str, calib_nchw: np.ndarray | None, input_shape=None) -> Graph:
    g = import_float(path, input_shape)
    calib = (synthetic_calibration(g) if calib_nchw is None
             else check_model_input(g, calib_nchw, "calibration data", batch=True))
    return quantize(g, calib)


def check_model_input(g: Graph, x: np.ndarray, what: str, batch: bool) -> np.ndarray:
    """x in the ONNX model's layout (N,C,H,W; N,C,L; N,F), one sample or a batch -> float batch
    in the IR's layout."""
    shape, layout = tuple(g.meta["input_nchw"]), g.meta.get("input_layout")
    x = np.asarray(x)
    if x.ndim == len(shape) - 1:
        x = x[None]
    if x.ndim != len(shape) or tuple(x.shape[1:]) != shape[1:]:
        raise TinycError(f"{what} has shape {tuple(x.shape)}; the model expects "
                         f"(N, {', '.join(map(str, shape[1:]))}) in {layout_name(shape, layout)} "
                         "layout")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise TinycError(f"{what} contains NaN or Inf values")
    if not batch and x.shape[0] != 1:
        raise TinycError(f"{what} must hold one sample, got {x.shape[0]}")
    return model_batch_to_ir(x, shape, layout)


def quantize_array(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float -> int8 as TFLite's QUANTIZE op does: round(x / scale) in float32, half away."""
    v = np.asarray(x, np.float32) / np.float32(scale)
    return np.clip(round_half_away(v) + zero_point, -128, 127).astype(np.int8)


def quantize_input(g: Graph, x_nhwc_float: np.ndarray) -> np.ndarray:
    """float -> int8 with the graph input's parameters."""
    return quantize_array(x_nhwc_float, *g.tensors[g.inputs[0]].q.scalar())


def dequantize_output(g: Graph, y: np.ndarray) -> np.ndarray:
    scale, zp = g.tensors[g.outputs[0]].q.scalar()
    return ((y.astype(np.float32) - zp) * np.float32(scale)).astype(np.float32)


# The float range of the logits of a new classifier head (--num-classes): calibration sees only
# its random initial weights; training moves the logits into this range. A float head trained
# for one epoch reaches -8..+12 at lr 0.003 and -12..+22 at 0.01 (Fashion-MNIST, mbv2-w0.35):
# +-24 keeps them unclipped at a 0.19 step, fine enough for the argmax and the loss. On
# mcunet-5fps they reach -32..+42 at 0.01 and -108..+137 at 0.03 (bench/head_quant.py), where
# this range and the weights' (HEAD_WEIGHT_HEADROOM) clip them.
NEW_HEAD_LOGIT_RANGE = (-24.0, 24.0)


def compile_training(path: str, calib_nchw: np.ndarray | None, scheme, num_classes: int | None,
                     opts=None, input_shape=None) -> Graph:
    """ONNX -> int8 training-step graph (forward + pruned backward + in-place updates)."""
    g = import_float(path, input_shape)
    calib = (synthetic_calibration(g) if calib_nchw is None
             else check_model_input(g, calib_nchw, "calibration data", batch=True))
    return training_graph(g, calib, scheme, num_classes, opts)


def training_graph(g: Graph, calib_nhwc: np.ndarray, scheme, num_classes: int | None,
                   opts=None, sram_budget: int | None = None, stack_reserve: int = 0,
                   patched: bool = False, train_data: str | None = None) -> Graph:
    """Float IR + calibration (NHWC) -> int8 training-step graph. scheme "auto" picks one that
    fits sram_budget (memory/train_budget.py; `patched`: with the automatic patch schedule the
    build uses); the choice is in meta["train"]["scheme_spec"]."""
    from .passes.autodiff import TrainOptions
    from .passes.train_head import classifier, drop_output_softmax, replace_head

    opts = opts or TrainOptions()
    new_head = num_classes is not None
    check_loss(g, opts, num_classes)
    g = replace_head(g, num_classes) if new_head else drop_output_softmax(g)
    fixed = {classifier(g).outputs[0]: NEW_HEAD_LOGIT_RANGE} if new_head else {}
    return int8_training_graph(quantize(g, calib_nhwc, fixed), scheme, opts, sram_budget,
                               stack_reserve, patched, train_data)


def check_loss(g: Graph, opts, num_classes: int | None) -> None:
    """--loss mse trains the model's own output against targets: no new classifier, and no
    softmax at the output (whose probabilities a squared error would not train well)."""
    if opts.loss not in ("ce", "mse"):
        raise TinycError(f"--loss {opts.loss}: give ce (softmax cross-entropy) or mse")
    if opts.loss != "mse":
        return
    if num_classes is not None:
        raise TinycError("--loss mse trains the model's own output against targets; "
                         "--num-classes (a new classifier) goes with --loss ce")
    last = g.producer(g.outputs[0])
    if last is not None and last.op == "softmax":
        raise TinycError("--loss mse: the model ends in a Softmax; export it without, or use "
                         "--loss ce")


def int8_training_graph(gq: Graph, scheme, opts, sram_budget: int | None = None,
                        stack_reserve: int = 0, patched: bool = False,
                        train_data: str | None = None) -> Graph:
    """An int8 graph (its head in place) -> its training-step graph (see training_graph).
    scheme "auto" with `train_data` (a labelled .npz): candidates ranked by their Fisher
    information on those samples (autotune.py); without: the nested chain of train_budget.py."""
    from .passes.autodiff import build_training_graph
    from .passes.sparse_update import resolve_scheme
    if scheme == "auto":
        from .memory.train_budget import choose_update_scheme
        if sram_budget is None:
            raise TinycError("--train auto needs an SRAM budget (--sram BYTES or the board's)")
        chain, fisher = None, None
        if train_data:
            from .autotune import chain_benefit, fisher_of_updates, ranked_schemes
            from .datasets import labelled_data_for_graph
            if opts.loss != "ce":
                raise TinycError("--train auto with --train-data ranks updates by the "
                                 "cross-entropy of class labels; with --loss mse give a scheme")
            x, y = labelled_data_for_graph(gq, train_data, opts.loss)
            t0 = time.time()
            fisher = fisher_of_updates(gq, x, y, opts)
            chain = ranked_schemes(gq, fisher)
            probe_seconds = time.time() - t0
        t0 = time.time()
        t, mem = choose_update_scheme(
            gq, sram_budget, stack_reserve, opts, patched, chain,
            (lambda start, step, too_big: ranked_schemes(gq, fisher, start, step, too_big))
            if fisher else None)
        everything = chain[-1] if chain else None   # the ranking's last step trains all
        chain = mem["auto_chain"]
        auto = {"ranked_by": "gradient signal per byte on --train-data"
                if fisher else "the nested chain (no --train-data)",
                "probe_samples": fisher["samples"] if fisher else 0,
                "candidates_planned": mem["auto_candidates_planned"],
                "budget_bytes": sram_budget, "planned_sram_bytes": mem["sram_bytes"],
                "plan_seconds": round(time.time() - t0, 1)}
        if fisher:
            spec = t.meta["train"]["scheme_spec"]
            k = chain.index(spec)
            total = chain_benefit(gq, fisher, everything)
            auto.update(probe_seconds=round(probe_seconds, 1),
                        head_fit_samples=fisher["head_fit_samples"],
                        weight_candidates="the deeper half of the convs, those followed by "
                                          "an activation",
                        chain_length=len(chain), chosen_step=k,
                        next_step_over_budget=chain[k + 1] if k + 1 < len(chain) else None,
                        steps_skipped_over_budget=mem["auto_skipped"],
                        signal_share=round(chain_benefit(gq, fisher, spec) / total, 4)
                        if total > 0 else None)
        t.meta["train"]["auto"] = auto
        return t
    t = build_training_graph(gq, resolve_scheme(gq, scheme), opts)
    t.meta["train"]["scheme_spec"] = scheme
    return t


def tflite_training_graph(gq: Graph, scheme, num_classes: int | None, opts=None,
                          sram_budget: int | None = None, stack_reserve: int = 0,
                          patched: bool = False) -> Graph:
    """An int8 .tflite model's graph (frontend/tflite.py) -> its training-step graph. Its own
    quantization stays; a new head (--num-classes) gets int8 weights as the quantizer makes
    them and the fixed logit range of a new head."""
    from .passes.autodiff import TrainOptions
    from .passes.train_head import drop_output_softmax, replace_head_int8
    opts = opts or TrainOptions()
    check_loss(gq, opts, num_classes)
    g = (replace_head_int8(gq, num_classes, NEW_HEAD_LOGIT_RANGE) if num_classes is not None
         else drop_output_softmax(gq))
    return int8_training_graph(g, scheme, opts, sram_budget, stack_reserve, patched)


def forward_graph(g: Graph) -> Graph:
    """The inference part of a training graph (what tinyc_infer runs)."""
    if "train" not in g.meta:
        return g
    f = g.copy()
    f.nodes = [n for n in f.nodes[:f.meta["train"]["forward_nodes"]]
               if not ops.get(n).training_only]
    del f.meta["train"]
    f.remove_unused_tensors()
    return f
