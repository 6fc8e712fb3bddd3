"""`tinyc build` as a function: (model, board, options) -> output folder + report.

Steps: import + quantize (pipeline.py; a training build: the training-step graph), choose the
schedule (layer by layer or a patch-based prefix, memory/schedule.py) and plan its memory,
generate C, optional .tflite export (of the layer-by-layer int8 forward graph: the same numbers),
then a report checked against the board. A model that does not fit is refused with a breakdown;
its full report goes to a file in the system's temporary folder (refused_report), never into the
output folder.

Everything is written into a staging folder and moved into the output folder only when the build
succeeded (outdir.py: tinyc owns only what it made there, one build per folder at a time).

Training builds may patch only the frozen prefix of the forward pass: the split ends before the
first trained layer and before every tensor the backward pass reads
(memory/schedule.training_max_split), so the backward pass and the weight updates see exactly
the tensors of the layer-by-layer graph.

With `firmware` (the CLI's default), the output folder becomes a PlatformIO project around the
model (targets/platformio.py): the model library goes to out/lib/tinyc_model, and when
arm-none-eabi-gcc and PlatformIO are at hand the firmware is built offline and its RAM and flash,
read from the ELF, are checked against the board too (report["firmware"]).
"""
from __future__ import annotations

import dataclasses

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import ops
from .errors import TinycError, printable
from .ir import Graph
from .lr_schedule import DEFAULT_LR_SCHEDULE, LR_SCHEDULES, check_schedule
from .pipeline import input_layout, ir_batch_to_model
from .targets.boards import Board, require_firmware
from .targets.platformio import MODEL_LIB

# Everything the generated model keeps in flash besides code: int8 weights, int32 biases and the
# per-channel int32 multipliers and shifts.
PER_CHANNEL_CONST_BYTES = 8


class DoesNotFitError(TinycError):
    multiline = True
    pass


@dataclass
class BuildOptions:
    calib: str | None = None
    calib_mean: tuple = (0.5, 0.5, 0.5)
    calib_std: tuple = (0.5, 0.5, 0.5)
    calib_limit: int = 100
    input_shape: tuple | None = None
    export_tflite: bool = False
    firmware: bool = False          # write (and, with a toolchain, build) the PlatformIO project
    samples: str | None = None      # the demo's inputs (.npy/.npz, NCHW); default: 1st calibration input
    # training (issue 3): a scheme (shorthand or dict), a new head, QAS and rounding
    train: str | dict | None = None
    num_classes: int | None = None
    qas: bool = True
    rounding: str = "stochastic"
    loss: str = "ce"     # ce (softmax cross-entropy, labels) | mse (targets of the output's shape)
    lr: float | str = 0.003   # the peak rate; "auto": chosen on --train-data (autotune.py)
    # the rate over a run of steps: linear (from lr to lr/T over T steps) | constant
    # (lr_schedule.py; tinyc_train_lr() in model.h)
    lr_schedule: str = DEFAULT_LR_SCHEDULE
    train_data: str | None = None   # labelled .npz (x, y) that --lr auto learns from
    train_warmup: int = 0   # steps that update only the classifier first (head warm-up)
    # the body's learning rate relative to the head's; None: AUTO_BODY_LR_SCALE for --train auto
    # with --train-data, 1 otherwise (resolved_body_lr_scale)
    body_lr_scale: float | None = None
    # patch-based inference (issue 4): auto | off | ROWSxCOLS@NODE (memory/schedule.py), and
    # the SRAM budget (arena + stack reserve; training: + the SRAM parameters) for --patch auto
    patch: str = "auto"
    sram: int | None = None
    # the firmware (issue 9): per-layer profile in the demo; kernel variant (auto: the Arm DSP
    # ones on a core with the extension, runtime_c/include/tinyc/simd.h; portable: plain C99)
    profile: bool = False
    kernels: str = "auto"

    def resolved_body_lr_scale(self) -> float:
        if self.body_lr_scale is not None:
            return float(self.body_lr_scale)
        slower = self.train == "auto" and self.train_data and self.lr_schedule == "constant"
        return AUTO_BODY_LR_SCALE if slower else 1.0

    def firmware_cflags(self) -> list[str]:
        """The firmware's extra compiler flags these options ask for."""
        if self.kernels not in KERNEL_VARIANTS:
            raise TinycError(f"unknown kernel variant '{self.kernels}'; choose from "
                             f"{', '.join(KERNEL_VARIANTS)}")
        return ((["-DTINYC_PROFILE"] if self.profile else [])
                + (["-DTINYC_PORTABLE"] if self.kernels == "portable" else []))

    def recorded(self, model: str) -> dict:
        """What report.json keeps so that a later command (tinyc export) can redo the build:
        the options, the absolute paths of the model and data, and their sha256
        (RECORDED_INPUTS; tinyc export refuses files that changed since)."""
        keep = dict(self.__dict__)
        keep["model"] = str(Path(model).resolve())
        for key in ("calib", "samples", "train_data"):
            if keep[key]:
                keep[key] = str(Path(keep[key]).resolve())
        for key in RECORDED_INPUTS:
            if keep[key]:
                try:
                    keep[f"{key}_sha256"] = input_sha256(keep[key])
                except OSError as e:
                    option = "the model" if key == "model" else f"--{key.replace('_', '-')}"
                    raise TinycError(f"{keep[key]}: cannot read {option} "
                                     f"({e.strerror})") from None
        return keep


KERNEL_VARIANTS = ("auto", "portable")

# --train auto with --train-data under --lr-schedule constant trains the body at this fraction
# of the head's learning rate: at a constant full rate, batch-1 steps into the body distort the
# pretrained features before they help (Fashion-MNIST 96 px, 128 KB, mbv2-w0.35 seed 1: 71.1%
# test at 1, 78.0% at 0.3, 75.2% at 0.1, classifier only 75.0%). Under the linear decay (the
# default) the body learns best at the head's rate: 1 beat 0.3 in every pair measured (auto's
# picks and 148kb, both nets, 128 and 256 KB, three orders: +0.9 to +2.0 test points).
# bench/train_auto_eval.py, bench/results/train_auto.md.
AUTO_BODY_LR_SCALE = 0.3

# the files (or image folder) a build reads, by their BuildOptions.recorded key
RECORDED_INPUTS = ("model", "calib", "samples", "train_data")


def input_sha256(path: str) -> str:
    """sha256 of a file (an ONNX model: with its external-data files), or of a folder: over its
    files' sorted relative paths and contents."""
    digest = hashlib.sha256()
    root = Path(path)
    if root.is_dir():
        files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*")
                       if p.is_file())
    else:
        files = [("", root)] + _external_data_files(root)
    for name, f in files:
        digest.update(name.encode() + b"\0")
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _external_data_files(model: Path) -> list[tuple[str, Path]]:
    """(location, path) of the external-data files an ONNX model's initializers name."""
    if model.suffix.lower() != ".onnx":
        return []
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data
    try:
        m = onnx.load_model(str(model), load_external_data=False)
    except Exception:   # not readable as ONNX: the build or export says why
        return []
    names = {ExternalDataInfo(t).location for t in m.graph.initializer if uses_external_data(t)}
    return [(n, model.parent / n) for n in sorted(names) if (model.parent / n).is_file()]


def check_recorded_inputs(rep: dict, out: str) -> None:
    """The model and data a build read are still those files (tinyc export redoes the build
    from them): same sha256 as recorded in report.json, else a one-line error."""
    recorded = rep.get("build_options", {})
    for key in RECORDED_INPUTS:
        path = recorded.get(key)
        if not path:
            continue
        what = {"model": "the model", "calib": "the calibration data (--calib)",
                "samples": "the demo samples (--samples)"}[key]
        fix = f"rebuild with `tinyc build ... -o {out}` first"
        if not Path(path).exists():
            raise TinycError(f"{path}: {what} that {out} was built from is missing; {fix}")
        want = recorded.get(f"{key}_sha256")
        if want is None:
            raise TinycError(f"{out}/report.json records no hash of {what} ({path}): it was "
                             f"built by an older tinyc; {fix}")
        try:
            have = input_sha256(path)
        except OSError as e:
            raise TinycError(f"{path}: cannot read {what} ({e.strerror}); {fix}") from None
        if have != want:
            raise TinycError(f"{path}: {what} changed since {out} was built (sha256 differs); "
                             f"{fix}")


def weights_bytes(g: Graph) -> int:
    """Constants in flash, each counted once (the patches of a patch schedule share them)."""
    total, seen = 0, set()
    for node in g.nodes:
        weights = [t for t in node.inputs[1:] if t and g.tensors[t].is_const]
        if not weights or weights[0] in seen:
            continue
        seen.update(weights)
        total += sum(g.tensors[t].nbytes for t in weights)
        mult = node.attrs.get("q", {}).get("mult")
        if isinstance(mult, np.ndarray):
            total += mult.size * PER_CHANNEL_CONST_BYTES
    return total


def node_rows(g: Graph, plan) -> list[dict]:
    rows = []
    for i, node in enumerate(g.nodes):
        out = g.tensors[node.outputs[0]]
        rows.append({
            "index": i, "name": node.name, "op": node.op, "onnx_op": node.source_op,
            "layer_type": ops.get(node).layer_type(g, node),
            "output_shape": list(out.shape), "output_bytes": out.nbytes,
            "output_offset": plan.tensor_offsets[node.outputs[0]],
            "macs": g.macs(node),
            "weights_bytes": sum(g.tensors[t].nbytes for t in node.inputs[1:]
                                 if t and g.tensors[t].is_const),
            "scratch_bytes": plan.scratch.get(i, (0, 0))[1],
            "in_place": plan.inplace.get(i),
            "patch": list(node.attrs["patch"]) if "patch" in node.attrs else None,
        })
    return rows


def make_report(g: Graph, plan, board: Board, calibrated: bool, patch: dict | None = None) -> dict:
    """`g` is the graph as compiled (patched or not); `patch` the schedule's description
    (memory/schedule.py), stored as inference.patch."""
    inp, out = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    arena = plan.arena_bytes
    wbytes = weights_bytes(g)
    return {
        "model": g.meta.get("source"),
        "board": board.id,
        "board_name": board.name,
        "sram_limit_bytes": board.sram_bytes,
        "flash_limit_bytes": board.flash_bytes,
        "stack_reserve_bytes": board.stack_reserve_bytes,
        "calibrated": calibrated,
        "input": {"name": g.meta.get("input_name"), "shape_nchw": list(g.meta["input_nchw"]),
                  "layout": input_layout(g.meta["input_nchw"], g.meta.get("input_layout")),
                  "layout_c": "NHWC", "scale": float(inp.q.scale),
                  "zero_point": int(inp.q.zero_point)},
        "output": {"name": g.meta.get("output_names", [None])[0], "shape": list(out.shape),
                   "scale": float(out.q.scale), "zero_point": int(out.q.zero_point)},
        "inference": {
            "arena_bytes": arena,
            "activation_peak_bytes": plan.peak_live_bytes,
            "no_reuse_bytes": plan.no_reuse_bytes,
            "sram_bytes": arena + board.stack_reserve_bytes,
            "patch": patch,
        },
        "weights_bytes": wbytes,
        "macs": int(sum(g.macs(n) for n in g.nodes)),
        "ops": node_rows(g, plan),
        "buffers": [{"id": b.id, "kind": b.kind, "offset": b.offset, "size": b.size,
                     "first": b.first, "last": b.last, "tensors": b.tensors, "node": b.node}
                    for b in plan.buffers],
    }


def training_node_rows(g: Graph) -> list[dict]:
    """Every node of the training step with its phase: forward, backward, update, or
    backward+update (a fused block that also updates: passes/fuse_grad.py)."""
    n_forward = g.meta["train"]["forward_nodes"]
    rows = []
    for i, node in enumerate(g.nodes):
        updates = ops.get(node).updates(node)
        phase = ("forward" if i < n_forward else "update" if updates == [node]
                 else "backward+update" if updates else "backward")
        rows.append({"index": i, "name": node.name, "op": node.op, "phase": phase,
                     "layer_type": ops.get(node).layer_type(g, node),
                     "macs": g.macs(node) if i < n_forward else 0})
    return rows


def add_training_report(report: dict, g: Graph, plan, board: Board, opts: BuildOptions) -> None:
    from .memory.planner import training_memory

    mem = training_memory(g, plan, board.stack_reserve_bytes)
    report["training"] = {
        "scheme": g.meta["train"]["scheme"], "num_classes": opts.num_classes,
        "qas": opts.qas, "rounding": opts.rounding, "lr": opts.lr, "loss": opts.loss,
        # the rate of step k of a run of T steps (lr is the peak): lr_schedule.py
        "lr_schedule": opts.lr_schedule,
        "trainable_layers": g.meta["train"]["trainable"],
        # steps that update the classifier only, the whole scheme after (TINYC_TRAIN_WARMUP_STEPS)
        "warmup_steps": g.meta["train"].get("warmup_steps", 0),
        "body_lr_scale": opts.resolved_body_lr_scale(),   # the body's rate / the head's (lr)
        **({"auto": g.meta["train"]["auto"]} if "auto" in g.meta["train"] else {}),
        **mem,
        "nodes": training_node_rows(g),
    }


def check_fits(report: dict) -> None:
    sram_need = max(report["inference"]["sram_bytes"],
                    report.get("training", {}).get("sram_bytes", 0))
    problems = []
    if sram_need > report["sram_limit_bytes"]:
        problems.append(f"SRAM: needs {sram_need:,} B > {report['sram_limit_bytes']:,} B")
    if report["weights_bytes"] > report["flash_limit_bytes"]:
        problems.append(f"flash: weights need {report['weights_bytes']:,} B > "
                        f"{report['flash_limit_bytes']:,} B")
    if not problems:
        return
    lines = [f"the model does not fit board '{report['board']}' ({report['board_name']}): "
             + "; ".join(problems)]
    if sram_need > report["sram_limit_bytes"]:
        lines += ["SRAM breakdown:",
                  f"  arena (activations + scratch)  {report['inference']['arena_bytes']:>10,} B",
                  f"  stack reserve                  {report['stack_reserve_bytes']:>10,} B",
                  "largest buffers alive at the peak:"]
        for b in peak_buffers(report)[:8]:
            lines.append(f"  {b['size']:>10,} B  {b['kind']:<10} {printable(', '.join(b['tensors']), keep_newlines=False) or 'scratch of node ' + str(b['node'])}")
    if report["weights_bytes"] > report["flash_limit_bytes"]:
        lines.append("largest weights in flash (weights + biases of a layer):")
        for r in largest_weights(report)[:8]:
            lines.append(f"  {r['weights_bytes']:>10,} B  node {r['index']:>3} {r['op']:<16} "
                         f"'{printable(r['name'], keep_newlines=False)}' (ONNX {r['onnx_op'] or r['op']})")
    if sram_need > report["sram_limit_bytes"]:
        lines.append("fixes: a board with more SRAM/flash, a smaller --input-shape, or a narrower "
                     "model")
    else:   # the input size does not change the weights
        lines.append("fixes: a board with more flash, or a model with fewer or narrower layers "
                     "(the largest are listed above)")
    raise DoesNotFitError("\n".join(lines))


def largest_weights(report: dict) -> list[dict]:
    """The layers (op rows) holding constants, largest first; a patch schedule's copies of a
    layer (same weights) once."""
    rows = [r for r in report["ops"] if r.get("weights_bytes")
            and (not r.get("patch") or r["patch"] == [0, 0])]
    return sorted(rows, key=lambda r: -r["weights_bytes"])


def peak_buffers(report: dict) -> list[dict]:
    """Buffers alive at the step where the arena is fullest, largest first."""
    bufs = report["buffers"]
    steps = range(len(report["ops"]))
    peak = max(steps, key=lambda s: sum(b["size"] for b in bufs if b["first"] <= s <= b["last"]))
    return sorted((b for b in bufs if b["first"] <= peak <= b["last"]), key=lambda b: -b["size"])


def int8_inputs(x: np.ndarray, shape_nchw, scale: float, zero_point: int, what: str,
                layout: str | None = None) -> np.ndarray:
    """Model inputs in the ONNX layout (N,C,H,W; N,C,L; N,F; one sample or a batch) -> int8
    batch in the IR's layout. Float is quantized with the model's input parameters; int8 is
    taken as already quantized."""
    from .pipeline import layout_name, model_batch_to_ir, quantize_array

    shape = tuple(shape_nchw)
    if x.ndim == len(shape) - 1:
        x = x[None]
    if x.ndim != len(shape) or tuple(x.shape[1:]) != shape[1:]:
        raise TinycError(f"{what}: shape {x.shape}; the model expects "
                         f"(N, {', '.join(map(str, shape[1:]))}) {layout_name(shape, layout)}")
    if len(x) == 0:
        raise TinycError(f"{what}: holds no sample (shape {x.shape})")
    if x.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
        if len(bad):
            raise TinycError(f"{what}: sample {bad[0]} contains NaN or Inf")
        xq = quantize_array(x, scale, zero_point)
    elif x.dtype == np.int8:
        xq = x
    else:
        raise TinycError(f"{what}: dtype {x.dtype}; give float32 (quantized with the model's "
                         "input parameters) or int8 (already quantized)")
    return model_batch_to_ir(xq, shape, layout)


def demo_samples(report: dict, opts: BuildOptions, calib_nhwc: np.ndarray) -> tuple[np.ndarray, str]:
    """The firmware demo's int8 NHWC inputs and where they come from."""
    from .calib import load_array

    inp = report["input"]
    if opts.samples:
        x = int8_inputs(load_array(opts.samples), inp["shape_nchw"], inp["scale"],
                        inp["zero_point"], f"--samples {opts.samples}", inp.get("layout"))
        if len(x) == 0:
            raise TinycError(f"--samples {opts.samples}: holds no sample")
        return x, f"--samples {Path(opts.samples).name}"
    x = int8_inputs(ir_batch_to_model(calib_nhwc[:1], inp["shape_nchw"], inp.get("layout")),
                    inp["shape_nchw"], inp["scale"], inp["zero_point"], "calibration data",
                    inp.get("layout"))
    return x, ("the first calibration input" if opts.calib
               else "uniform noise in [-1, 1] (no --calib)")


def demo_training_data(report: dict, opts: BuildOptions, calib_nhwc: np.ndarray):
    """A training build's demo data (firmware_train.TrainingData) and where it comes from:
    --samples (x, and labels y when the .npz has them) or the first calibration inputs; labels
    k % classes where none are given; DEMO_EPOCHS epochs at the build's --lr."""
    from .calib import load_array
    from .targets.firmware_train import DEMO_EPOCHS, DEMO_SAMPLES, TrainingData

    inp = report["input"]
    classes = int(report["output"]["shape"][-1])
    y = None
    if opts.samples:
        x = int8_inputs(load_array(opts.samples), inp["shape_nchw"], inp["scale"],
                        inp["zero_point"], f"--samples {opts.samples}", inp.get("layout"))
        if len(x) == 0:
            raise TinycError(f"--samples {opts.samples}: holds no sample")
        if opts.samples.endswith(".npz"):
            with np.load(opts.samples, allow_pickle=False) as z:
                if "y" in z.files:
                    y = z["y"]
        source = f"--samples {Path(opts.samples).name}"
    else:
        x = int8_inputs(ir_batch_to_model(calib_nhwc[:DEMO_SAMPLES], inp["shape_nchw"],
                                          inp.get("layout")),
                        inp["shape_nchw"], inp["scale"], inp["zero_point"], "calibration data",
                        inp.get("layout"))
        source = (f"the first {len(x)} calibration inputs" if opts.calib
                  else "uniform noise in [-1, 1] (no --calib)")
    if y is None:
        y = np.arange(len(x)) % classes
        source += f", labels 0..{min(len(x), classes) - 1} in turn"
    else:
        y = np.asarray(y)
        if y.dtype.kind not in "iu" or y.shape != (len(x),):
            raise TinycError(f"--samples {opts.samples}: y must hold one integer label per input "
                             f"({len(x)}); got {y.dtype} {y.shape}")
        bad = np.flatnonzero((y < 0) | (y >= classes))
        if len(bad):
            raise TinycError(f"--samples {opts.samples}: label {y[bad[0]]} of sample {bad[0]} is "
                             f"out of range (the model has {classes} classes)")
    return TrainingData.make(x, y, DEMO_EPOCHS, opts.lr, lr_schedule=opts.lr_schedule), source


def compile_graph(model: str, opts: BuildOptions) -> Graph:
    """ONNX -> the int8 graph a build generates code for (inference, or a training step).
    A function of (model, options) only: tinyc export redoes it from report.json."""
    return compile_with_calibration(model, opts)[0]


def compile_with_calibration(model: str, opts: BuildOptions,
                             board: Board | None = None) -> tuple[Graph, np.ndarray]:
    """compile_graph, and the calibration inputs (NHWC) it used. `board` gives --train auto
    its default budget (the board's SRAM) and stack reserve."""
    from .calib import load_calibration
    from .pipeline import check_model_input, import_float, synthetic_calibration, training_graph
    from .passes.autodiff import TrainOptions
    from .passes.quantize import quantize

    if is_tflite(model):
        return compile_tflite(model, opts, board)
    g = import_float(model, opts.input_shape)
    samples = opts.calib_limit if opts.calib else 8
    if board is not None and sum(g.macs(n) for n in g.nodes) * samples > SLOW_CALIBRATION_MACS:
        # a slow calibration ahead: first what the shapes alone show cannot fit (a quick
        # build is refused after compiling, with the full breakdown and report.json)
        refuse_weights_over_flash(g, board, new_head=opts.num_classes is not None)
        if opts.num_classes is None:   # a new head changes the shapes of the last layers
            refuse_arena_over_sram(g, board, opts.patch)
    if opts.calib:
        raw = load_calibration(opts.calib, g.meta["input_nchw"], opts.calib_mean, opts.calib_std,
                               opts.calib_limit, g.meta.get("input_layout"))
        calib = check_model_input(g, raw, f"calibration data {opts.calib}", batch=True)
    else:
        warnings.warn("no --calib data: activation ranges come from uniform noise in [-1, 1]; "
                      "int8 accuracy on real inputs may be poor. Pass --calib FILE.npy|FOLDER",
                      stacklevel=2)
        calib = synthetic_calibration(g)
    if opts.train is None:
        return quantize(g, calib), calib
    budget = opts.sram if opts.sram is not None else (board.sram_bytes if board else None)
    return training_graph(g, calib, opts.train, opts.num_classes,
                          TrainOptions(qas=opts.qas, rounding=opts.rounding, loss=opts.loss,
                                              warmup=opts.train_warmup,
                                              body_lr_scale=opts.resolved_body_lr_scale()), budget,
                          board.stack_reserve_bytes if board else 0,
                          patched=opts.patch != "off",
                          train_data=opts.train_data if opts.train == "auto" else None), calib


def is_tflite(model: str) -> bool:
    return str(model).lower().endswith(".tflite")


def compile_tflite(model: str, opts: BuildOptions,
                   board: Board | None = None) -> tuple[Graph, np.ndarray]:
    """An int8 .tflite file keeps its own quantization (frontend/tflite.py): no calibration.
    The float inputs returned (for the firmware demo's samples) are --calib's, or noise over
    the input's int8 range."""
    from .calib import load_calibration
    from .frontend.tflite import load_tflite
    from .pipeline import check_model_input
    if opts.input_shape is not None:
        raise TinycError("--input-shape: a .tflite model has a fixed input shape")
    g = load_tflite(model)
    if opts.calib:
        raw = load_calibration(opts.calib, g.meta["input_nchw"], opts.calib_mean, opts.calib_std,
                               opts.calib_limit, g.meta.get("input_layout"))
        x = check_model_input(g, raw, f"input data {opts.calib}", batch=True)
    else:
        scale, zp = g.tensors[g.inputs[0]].q.scalar()
        shape = (8,) + g.tensors[g.inputs[0]].shape[1:]
        q = np.random.default_rng(0).integers(-128, 128, shape)
        x = ((q - zp) * scale).astype(np.float32)
    if opts.train is None:
        return g, x
    from .passes.autodiff import TrainOptions
    from .pipeline import tflite_training_graph
    budget = opts.sram if opts.sram is not None else (board.sram_bytes if board else None)
    return tflite_training_graph(g, opts.train, opts.num_classes,
                                 TrainOptions(qas=opts.qas, rounding=opts.rounding, loss=opts.loss,
                                              warmup=opts.train_warmup,
                                              body_lr_scale=opts.resolved_body_lr_scale()), budget,
                                 board.stack_reserve_bytes if board else 0,
                                 patched=opts.patch != "off"), x


def refuse_weights_over_flash(g: Graph, board: Board, new_head: bool) -> None:
    """Before a slow calibration: int8 weights over the board's flash cannot fit,
    whatever the schedule. One byte per conv / fully-connected weight, biases and multipliers
    not counted: a lower bound of weights_bytes (a classifier --num-classes replaces: left out)."""
    layers, seen = [], set()   # a weight two nodes share is stored once
    for i, n in enumerate(g.nodes):
        if n.op in ("conv2d", "fully_connected") and n.inputs[1] not in seen:
            seen.add(n.inputs[1])
            layers.append((g.tensors[n.inputs[1]].size, i, n))
    if new_head and layers and layers[-1][2].op == "fully_connected":
        layers = layers[:-1]
    total = sum(size for size, _, _ in layers)
    if total <= board.flash_bytes:
        return
    lines = [f"the model does not fit board '{board.id}' ({board.name}): flash: its int8 weights "
             f"alone need {total:,} B > {board.flash_bytes:,} B",
             "largest weights in flash (int8 weights of a layer):"]
    for size, i, n in sorted(layers, key=lambda t: -t[0])[:8]:
        lines.append(f"  {size:>10,} B  node {i:>3} {n.op:<16} '{printable(n.name, keep_newlines=False)}' (ONNX {n.source_op or n.op})")
    lines.append("fixes: a board with more flash, or a model with fewer or narrower layers "
                 "(the largest are listed above)")
    raise DoesNotFitError("\n".join(lines))


def _recorded_problem(recorded: dict) -> str | None:
    """What is wrong with a report's build_options (None: nothing)."""
    def count(v, least):
        return isinstance(v, int) and not isinstance(v, bool) and v >= least

    def numbers(v):
        return isinstance(v, list) and v and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in v)
    checks = {
        "model": lambda v: isinstance(v, str),
        "calib": lambda v: v is None or isinstance(v, str),
        "samples": lambda v: v is None or isinstance(v, str),
        "train_data": lambda v: v is None or isinstance(v, str),
        "calib_mean": numbers, "calib_std": lambda v: numbers(v) and min(v) > 0,
        "calib_limit": lambda v: count(v, 1),
        "input_shape": lambda v: v is None or (isinstance(v, list) and len(v) in (2, 3, 4)
                                               and all(count(d, 1) for d in v)),
        "train": lambda v: v is None or isinstance(v, (str, dict)),
        "num_classes": lambda v: v is None or count(v, 2),
        "lr": lambda v: isinstance(v, (int, float)) and np.isfinite(v) and v > 0,
        "rounding": lambda v: v in ("nearest", "stochastic"), "loss": lambda v: v in ("ce", "mse"),
        "lr_schedule": lambda v: v in LR_SCHEDULES,
        "train_warmup": lambda v: count(v, 0),
        "body_lr_scale": lambda v: v is None or (isinstance(v, (int, float))
                                                 and np.isfinite(v) and v > 0),
        "patch": lambda v: isinstance(v, str), "sram": lambda v: v is None or count(v, 1),
        "profile": lambda v: isinstance(v, bool), "kernels": lambda v: v in KERNEL_VARIANTS,
    }
    checks.update({f"{key}_sha256": lambda v: v is None or isinstance(v, str)
                   for key in RECORDED_INPUTS})
    unknown = set(recorded) - set(BuildOptions.__dataclass_fields__) - set(checks)
    if unknown:
        return f"unknown build option {sorted(unknown)[0]!r}"
    for key, ok in checks.items():
        if key in recorded and not ok(recorded[key]):
            return f"build option {key!r} is {json.dumps(recorded[key])[:40]}"
    return None if "model" in recorded else "build option 'model' is missing"


# float calibration work (multiply-accumulates x samples) from which a build first checks that
# the weights and the arena can fit at all (refuse_weights_over_flash, refuse_arena_over_sram):
# about ten seconds of numpy
SLOW_CALIBRATION_MACS = 2 * 10 ** 9


def refuse_arena_over_sram(g: Graph, board: Board, patch: str) -> None:
    """Before a slow calibration (minutes on large activations): the arena of the schedule a
    build would choose depends only on the ops and shapes, so it is estimated on the float graph
    with int8 activations; when even that does not fit the board's SRAM, nothing will (a
    training step needs at least the inference arena). Only when some activation alone is over
    the limit: a model whose tensors all fit pays nothing."""
    from .memory.schedule import choose_schedule
    from .passes.patch import PatchSpec

    limit = board.sram_bytes - board.stack_reserve_bytes
    if max(g.tensors[t].size for t in g.activations()) <= limit:
        return
    int8 = g.copy()
    for t in int8.activations():
        int8.tensors[t].dtype = "int8"
    mode = patch if patch in ("auto", "off") else PatchSpec.parse(patch)
    sched = choose_schedule(int8, mode)
    arena = sched.plan.arena_bytes
    if arena <= limit:
        return
    how = ("layer by layer" if not sched.info.get("enabled") else
           f"patches {'x'.join(map(str, sched.info['grid']))} over node {sched.info['split_index']}")
    largest = sorted(g.activations(), key=lambda t: -g.tensors[t].size)[:3]
    raise TinycError(
        f"the model does not fit board '{board.id}' ({board.name}): SRAM: its smallest arena "
        f"({how}, --patch {patch}) is {arena:,} B + stack reserve {board.stack_reserve_bytes:,} B "
        f"> {board.sram_bytes:,} B; largest activations (int8): "
        + ", ".join(f"'{t}' {'x'.join(map(str, g.tensors[t].shape[1:]))} = "
                    f"{g.tensors[t].size:,} B" for t in largest)
        + ". Fixes: a board with more SRAM, a smaller --input-shape, or a narrower model "
        "(check the pads and strides)")


def options_from_report(rep: dict) -> tuple[str, BuildOptions]:
    """(model path, options) of the build that wrote this report."""
    recorded = dict(rep["build_options"])
    problem = _recorded_problem(recorded)
    if problem:
        raise TinycError(f"report.json: not a tinyc report ({problem}); rebuild with tinyc build")
    model = recorded.pop("model")
    for key in RECORDED_INPUTS:
        recorded.pop(f"{key}_sha256", None)
    for key in ("input_shape", "calib_mean", "calib_std"):
        if recorded.get(key) is not None:
            recorded[key] = tuple(recorded[key])
    return model, BuildOptions(**recorded)


def schedule_request(opts: BuildOptions, board: Board):
    """(mode, --sram bytes or None) for choose_schedule, checked before any work."""
    from .passes.patch import PatchSpec

    mode = opts.patch if opts.patch in ("auto", "off") else PatchSpec.parse(opts.patch)
    if opts.sram is not None:
        if mode != "auto" and opts.train != "auto":
            raise TinycError("--sram is the budget of --patch auto and --train auto: use it "
                             "with one of them")
        if opts.sram <= board.stack_reserve_bytes:
            raise TinycError(f"--sram {opts.sram}: not even the board's stack reserve "
                             f"({board.stack_reserve_bytes} B) fits")
    return mode, opts.sram


def choose_build_schedule(gq: Graph, opts: BuildOptions, board: Board, mode, sram):
    """The schedule a build compiles: memory/schedule.choose_schedule on the int8 graph. A
    training step may patch only its frozen prefix (training_max_split); its SRAM budget also
    leaves room for the trained parameters kept in SRAM."""
    from .memory.planner import params_sram_bytes
    from .memory.schedule import choose_schedule, training_max_split

    budget = None
    train = "train" in gq.meta
    if sram is not None:
        params = params_sram_bytes(gq) if train else 0
        budget = sram - board.stack_reserve_bytes - params
        if budget <= 0:
            raise TinycError(f"--sram {sram}: not even the board's stack reserve "
                             f"({board.stack_reserve_bytes} B) and the trained parameters "
                             f"({params} B) fit")
    max_split = training_max_split(gq) if train else None
    sched = choose_schedule(gq, mode, budget, max_split)
    info = sched.info
    if train:   # the arenas compared are those of the whole training step
        info.update(scope="training step", max_split=max_split)
    if info["mode"] == "forced" and info["peak_bytes"] >= info["peak_layer_by_layer_bytes"]:
        warnings.warn(f"--patch {opts.patch}: the arena ({info['peak_bytes']:,} B) is not smaller "
                      f"than layer by layer ({info['peak_layer_by_layer_bytes']:,} B); "
                      "--patch auto picks the smallest", stacklevel=3)
    if info.get("fits_budget") is False:
        warnings.warn(f"--sram {sram}: no schedule fits; using the smallest arena "
                      f"({info['peak_bytes']:,} B + {board.stack_reserve_bytes:,} B stack reserve"
                      + (" + the trained parameters" if train else "") + ")", stacklevel=3)
    return sched


def build(model: str, board: Board, out_dir: str, opts: BuildOptions) -> dict:
    """Builds into `out_dir` (outdir.py: checked, locked, staged, committed on success only)."""
    from .outdir import BuildFolder, check_output_dir

    out = check_output_dir(out_dir)
    if opts.loss != "ce" and opts.train is None:
        raise TinycError(f"--loss {opts.loss} needs --train SCHEME")
    if opts.loss == "mse" and opts.firmware:
        raise TinycError("--loss mse: the firmware's training demo reads class labels; build "
                         "with --no-firmware and train through tinyc_train_step(input, target, lr)"
                         " (tinyc emulate --train-data on the host)")
    if opts.lr == "auto" and (opts.train is None or not opts.train_data):
        raise TinycError("--lr auto chooses the learning rate by training on your labelled "
                         "data: give --train SCHEME and --train-data FILE.npz (x, y)")
    if isinstance(opts.lr, str) and opts.lr != "auto":
        raise TinycError(f"--lr {opts.lr}: give a number or auto")
    check_schedule(opts.lr_schedule)
    mode, sram = schedule_request(opts, board)
    if opts.firmware:
        from .targets.platformio import check_project_path
        require_firmware(board)
        check_project_path(out)
    with BuildFolder(out) as folder:
        report = build_into(folder.stage, model, board, opts, mode, sram)
        folder.commit()
    return report


def build_into(out: Path, model: str, board: Board, opts: BuildOptions, mode, sram) -> dict:
    """The build itself, into the (empty) staging folder `out`."""
    from .codegen.c import generate_c
    from .memory.planner import plan_memory
    from .pipeline import forward_graph

    gq, calib = compile_with_calibration(model, opts, board)
    recorded = opts.recorded(model)   # with the hashes of the files just read
    if opts.samples:   # checked before anything is written (the demo reads them at the end)
        from .calib import load_array
        int8_inputs(load_array(opts.samples), gq.meta["input_nchw"],
                    *gq.tensors[gq.inputs[0]].q.scalar(), f"--samples {opts.samples}",
                    gq.meta.get("input_layout"))
    sched = choose_build_schedule(gq, opts, board, mode, sram)
    gs, plan = sched.graph, sched.plan
    if opts.train is not None:   # model.h's tinyc_train_lr(): the build's peak and schedule
        gs.meta["train"].update(lr=None if opts.lr == "auto" else float(opts.lr),
                                lr_schedule=opts.lr_schedule)
    generate_c(gs, plan, out / MODEL_LIB if opts.firmware else out)
    if opts.export_tflite:
        from .export.tflite import export_tflite
        (out / "model.tflite").write_bytes(export_tflite(forward_graph(gq)))
    if opts.train is not None:
        # the inference figures are those of tinyc_infer alone (an inference-only build of the
        # same, possibly patched, forward pass); the schedule was chosen on the training step
        fwd = forward_graph(gs)
        report = make_report(fwd, plan_memory(fwd), board, calibrated=bool(opts.calib),
                             patch=sched.info)
        add_training_report(report, gs, plan, board, opts)
        report["training"]["patch"] = sched.info   # the step's schedule (also inference.patch)
    else:
        report = make_report(gs, plan, board, calibrated=bool(opts.calib), patch=sched.info)
    report["build_options"] = recorded
    if opts.train == "auto":   # what auto chose, so that tinyc export redoes exactly this build
        report["build_options"]["train"] = gq.meta["train"]["scheme_spec"]
        report["build_options"]["body_lr_scale"] = opts.resolved_body_lr_scale()
    report["board_file"] = board.path
    try:
        check_fits(report)
        if opts.lr == "auto":   # after the fit check: the search trains for minutes
            opts = dataclasses.replace(opts, lr=auto_lr(out / MODEL_LIB if opts.firmware
                                                        else out, report, opts))
            gs.meta["train"]["lr"] = opts.lr   # model.h's TINYC_TRAIN_LR_PEAK: the chosen rate
            generate_c(gs, plan, out / MODEL_LIB if opts.firmware else out)
        if opts.firmware:
            report["firmware"] = firmware_step(out, board, report, opts, calib)
    except DoesNotFitError as e:
        e.report_path = refused_report(report)
        raise
    (out / "report.json").write_text(report_text(report))
    return report


def auto_lr(lib: Path, report: dict, opts: BuildOptions) -> float:
    """--lr auto: the rate autotune.choose_lr picks on --train-data with the generated step in
    `lib`; recorded in the report (training.lr, training.lr_auto, build_options.lr)."""
    from .autotune import choose_lr
    from .datasets import labelled_data

    x, y = labelled_data(report, opts.train_data)
    choice = choose_lr(lib, x, y, report["training"]["loss"] == "mse",
                       float(report["output"]["scale"]), lr_schedule=opts.lr_schedule)
    report["training"]["lr"] = report["build_options"]["lr"] = choice["lr"]
    report["training"]["lr_auto"] = choice
    return choice["lr"]


def refused_report(report: dict) -> str:
    """The full report of a refused build, in a file of the system's temporary folder (the
    output folder stays as it was); returns its path."""
    fd, path = tempfile.mkstemp(prefix="tinyc-refused-report-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(report_text(report))
    return path


def report_text(report: dict) -> str:
    """report.json's text: strict JSON, never NaN or Infinity (which JSON readers refuse)."""
    try:
        return json.dumps(report, indent=1, allow_nan=False)
    except ValueError:
        raise TinycError(f"report.json would hold a non-finite number at "
                         f"{_nonfinite_at(report) or 'an unknown place'}: check the build's "
                         "options (e.g. --lr) and the model's values") from None


def _nonfinite_at(v, at: str = "") -> str | None:
    """The path of the first NaN or infinite float in a JSON-like value."""
    if isinstance(v, float) and not np.isfinite(v):
        return at or "the top level"
    items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
    for k, sub in items:
        found = _nonfinite_at(sub, f"{at}.{k}" if at else str(k))
        if found:
            return found
    return None


def firmware_step(out: Path, board: Board, report: dict, opts: BuildOptions,
                  calib_nhwc: np.ndarray) -> dict:
    """Writes the PlatformIO project, then builds and checks it when the tools are here."""
    from .targets.platformio import (FirmwareDoesNotFitError, build_firmware, toolchain_missing,
                                     write_project)

    training = None
    if "training" in report:
        training, source = demo_training_data(report, opts, calib_nhwc)
        samples = training.x
    else:
        samples, source = demo_samples(report, opts, calib_nhwc)
    write_project(out, board, Path(str(report["model"])).name, samples, source,
                  training=training, input_size=int(np.prod(report["input"]["shape_nchw"])),
                  num_classes=int(report["output"]["shape"][-1]),
                  cflags=opts.firmware_cflags())
    info = {"project": "platformio.ini", "samples": len(samples), "samples_source": source}
    if training is not None:
        info["train_demo"] = {"steps": training.steps, "epochs": training.epochs,
                              "lr": training.lr, "lr_schedule": training.lr_schedule}
    missing = toolchain_missing()
    if missing:
        warnings.warn(f"firmware project written but not built: {missing}", stacklevel=2)
        return {**info, "built": False, "reason": missing}
    try:
        return {**info, **build_firmware(out, board)}
    except FirmwareDoesNotFitError as e:
        report["firmware"] = {**info, "built": False, "error": str(e)}
        raise DoesNotFitError(str(e)) from None
