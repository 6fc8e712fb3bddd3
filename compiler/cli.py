"""tinyc command line: build | emulate | report | boards.

User errors (TinycError) print one clear message and exit 1 without a traceback; `--debug` shows
the traceback. Anything else is an internal error: exit 3 with a request to rerun with --debug.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from .errors import TinycError


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape like 1x3x96x96") from None
    if len(dims) != 4 or min(dims) <= 0:
        raise argparse.ArgumentTypeError(f"'{text}': give N x C x H x W, all positive")
    return dims


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinyc", description="ONNX CNN -> int8 C for microcontrollers")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="compile an ONNX model to C for a board")
    b.add_argument("model", help="float ONNX model (NCHW image input)")
    b.add_argument("--board", required=True, help="board id (see `tinyc boards`)")
    b.add_argument("-o", "--output", required=True, help="output folder")
    b.add_argument("--calib", help="calibration inputs: .npy/.npz (N,C,H,W float, model layout) "
                                   "or a folder of images")
    b.add_argument("--calib-mean", type=_floats, default=(0.5, 0.5, 0.5),
                   help="image preprocessing: per-channel mean of pixel/255 (default 0.5,0.5,0.5)")
    b.add_argument("--calib-std", type=_floats, default=(0.5, 0.5, 0.5),
                   help="image preprocessing: per-channel std (default 0.5,0.5,0.5: p/127.5-1)")
    b.add_argument("--calib-limit", type=int, default=100, help="use at most N samples (100)")
    b.add_argument("--input-shape", type=_shape, help="override the input shape, e.g. 1x3x96x96")
    b.add_argument("--export-tflite", action="store_true", help="also write OUT/model.tflite")
    b.add_argument("--train", metavar="SCHEME",
                   help="also generate tinyc_train_step(): full | bias-only | last:K | scheme.json")
    b.add_argument("--num-classes", type=int, help="replace the classifier by a new N-class head")
    b.add_argument("--lr", type=float, default=0.05, help="default learning rate (0.05)")
    b.add_argument("--no-qas", action="store_true",
                   help="ablation: plain integer-domain gradients, no quantization-aware scaling")
    b.add_argument("--rounding", choices=("nearest", "stochastic"), default="nearest",
                   help="rounding of the integer parameter updates (default nearest)")

    e = sub.add_parser("emulate", help="run a built model with the host C compiler")
    e.add_argument("out", help="folder written by tinyc build")
    e.add_argument("--input", help=".npy/.npz input in the ONNX layout (NCHW); "
                                   "float is quantized, int8 taken as quantized")
    e.add_argument("--output", help=".npy file for the output")
    e.add_argument("--dequantize", action="store_true", help="write float output instead of int8")
    e.add_argument("--train-data", help=".npz with x (inputs, model layout) and y (int labels): "
                                        "train with the generated tinyc_train_step()")
    e.add_argument("--epochs", type=int, default=1)
    e.add_argument("--eval-data", help=".npz (x, y) to report accuracy on after each epoch")
    e.add_argument("--save-params", help=".npz file for the trained parameters")
    e.add_argument("--lr", type=float, help="learning rate (default: the build's --lr)")

    r = sub.add_parser("report", help="show a build's report; --plot draws arena occupancy")
    r.add_argument("out", help="folder written by tinyc build")
    r.add_argument("--plot", help="PNG file for the arena occupancy plot")

    x = sub.add_parser("export", help="trained parameters -> float ONNX model")
    x.add_argument("out", help="folder written by tinyc build --train")
    x.add_argument("--params", required=True, help=".npz written by tinyc emulate --save-params")
    x.add_argument("-o", "--output", required=True, help="ONNX file to write")

    sub.add_parser("boards", help="list the supported boards")
    return p


def summary(report: dict) -> str:
    inf = report["inference"]
    lines = [
        f"board      {report['board']}: {report['board_name']}",
        f"model      {report['model']}",
        f"input      {'x'.join(map(str, report['input']['shape_nchw']))} (NCHW) -> "
        f"int8 NHWC, scale {report['input']['scale']:.6g}, zero point {report['input']['zero_point']}",
        f"ops        {len(report['ops'])}, {report['macs']:,} MACs",
        f"SRAM       arena {inf['arena_bytes']:,} B + stack reserve {report['stack_reserve_bytes']:,} B"
        f" = {inf['sram_bytes']:,} B of {report['sram_limit_bytes']:,} B"
        f" ({100 * inf['sram_bytes'] / report['sram_limit_bytes']:.1f}%)",
        f"flash      weights {report['weights_bytes']:,} B of {report['flash_limit_bytes']:,} B"
        f" ({100 * report['weights_bytes'] / report['flash_limit_bytes']:.1f}%)",
    ]
    return "\n".join(lines)


def cmd_build(a) -> int:
    from .build import BuildOptions, DoesNotFitError, build
    from .targets.boards import load_board

    board = load_board(a.board)
    train = None
    if a.train:
        from .passes.sparse_update import parse_scheme
        train = parse_scheme(a.train)
    elif a.num_classes or a.no_qas or a.rounding != "nearest":
        raise TinycError("--num-classes, --no-qas and --rounding need --train SCHEME")
    opts = BuildOptions(calib=a.calib, calib_mean=a.calib_mean, calib_std=a.calib_std,
                        calib_limit=a.calib_limit, input_shape=a.input_shape,
                        export_tflite=a.export_tflite, train=train, num_classes=a.num_classes,
                        qas=not a.no_qas, rounding=a.rounding, lr=a.lr)
    try:
        report = build(a.model, board, a.output, opts)
    except DoesNotFitError as err:
        print(f"tinyc: error: {err}", file=sys.stderr)
        print(f"(the full report is in {Path(a.output) / 'report.json'})", file=sys.stderr)
        return 1
    print(summary(report))
    print(f"wrote      {a.output}/ (model.c, model.h, tinyc/, report.json"
          + (", model.tflite" if a.export_tflite else "") + ")")
    return 0


def load_report(out: str) -> dict:
    path = Path(out) / "report.json"
    if not path.is_file():
        raise TinycError(f"{out}: no report.json; run `tinyc build ... -o {out}` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TinycError(f"{path}: corrupt report ({e}); rebuild") from e


def model_inputs(rep: dict, x: np.ndarray, source: str) -> np.ndarray:
    """Inputs in the ONNX layout (NCHW; float or int8) -> int8 NHWC batch for the C code."""
    from .pipeline import quantize_array

    c, h, w = rep["input"]["shape_nchw"][1:]
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
        raise TinycError(f"{source}: shape {x.shape}; the model expects (N, {c}, {h}, {w}) NCHW")
    if x.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
        if len(bad):
            raise TinycError(f"{source}: sample {bad[0]} contains NaN or Inf")
        xq = quantize_array(x, rep["input"]["scale"], rep["input"]["zero_point"])
    elif x.dtype == np.int8:
        xq = x
    else:
        raise TinycError(f"{source}: dtype {x.dtype}; give float32 (quantized with the model's "
                         "input parameters) or int8 (already quantized)")
    return np.ascontiguousarray(np.moveaxis(xq, 1, -1))


def labelled_data(rep: dict, path: str) -> tuple[np.ndarray, np.ndarray]:
    """A training/eval .npz with x (inputs) and y (int labels) -> (int8 NHWC inputs, labels)."""
    from .calib import load_array

    x, y = load_array(path, "x"), load_array(path, "y")
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


def cmd_emulate(a) -> int:
    from .calib import load_array
    from .targets.host import run_host

    rep = load_report(a.out)
    if a.train_data:
        return emulate_training(a, rep)
    if not a.input or not a.output:
        raise TinycError("tinyc emulate needs --input and --output (or --train-data)")
    x = load_array(a.input)
    xq = model_inputs(rep, x, a.input)
    y = run_host(a.out, xq)
    y = y.reshape((x.shape[0],) + tuple(rep["output"]["shape"][1:]))
    if a.dequantize:
        y = ((y.astype(np.float32) - rep["output"]["zero_point"])
             * np.float32(rep["output"]["scale"]))
    np.save(a.output, y)
    print(f"ran {x.shape[0]} input(s) through {a.out} (host gcc); wrote {a.output} "
          f"{y.dtype} {tuple(y.shape)}")
    return 0


def _progress(done: int, total: int, what: str) -> None:
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done == total else ""
    print(f"\r  {what} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end,
          file=sys.stderr, flush=True)


def emulate_training(a, rep: dict) -> int:
    """Train with the generated tinyc_train_step() (host gcc) over --train-data."""
    from .targets.host import HostTrainer

    if "training" not in rep:
        raise TinycError(f"{a.out}: built without --train; rebuild with --train SCHEME")
    if a.epochs < 1:
        raise TinycError(f"--epochs {a.epochs}: must be at least 1")
    x, y = labelled_data(rep, a.train_data)
    evaluation = labelled_data(rep, a.eval_data) if a.eval_data else None
    lr = a.lr if a.lr is not None else rep["training"]["lr"]
    if not (np.isfinite(lr) and lr > 0):
        raise TinycError(f"--lr {lr}: must be a positive number")
    chunk = 256
    with HostTrainer(a.out) as trainer:
        for epoch in range(1, a.epochs + 1):
            order = np.random.default_rng(epoch).permutation(len(x))
            losses = []
            for start in range(0, len(x), chunk):
                idx = order[start:start + chunk]
                losses.extend(trainer.train(x[idx], y[idx], lr))
                _progress(min(start + chunk, len(x)), len(x), f"epoch {epoch}")
            losses = np.asarray(losses)
            if not np.all(np.isfinite(losses)):
                raise TinycError(f"epoch {epoch}: the loss became NaN/Inf; lower --lr")
            line = f"epoch {epoch}: loss {losses.mean():.4f}"
            if evaluation is not None:
                logits = trainer.infer(evaluation[0]).reshape(len(evaluation[0]), -1)
                acc = float(np.mean(np.argmax(logits, axis=1) == evaluation[1]))
                line += f", eval accuracy {100 * acc:.2f}% ({len(evaluation[1])} samples)"
            print(line, flush=True)
        if a.save_params:
            np.savez(a.save_params, **trainer.params())
            print(f"wrote {a.save_params} (trained parameters; tinyc export turns them into ONNX)")
    return 0


def cmd_report(a) -> int:
    rep = load_report(a.out)
    print(summary(rep))
    print(f"{'#':>3} {'op':<16} {'output':<16} {'MACs':>11} {'offset':>8} {'bytes':>8}")
    for r in rep["ops"]:
        print(f"{r['index']:>3} {r['op']:<16} {'x'.join(map(str, r['output_shape'])):<16} "
              f"{r['macs']:>11,} {r['output_offset']:>8} {r['output_bytes']:>8}"
              + (f"  in place ({r['in_place']})" if r["in_place"] else ""))
    if a.plot:
        from .memory.plot import plot_arena
        plot_arena(rep, a.plot)
        print(f"wrote {a.plot}")
    return 0


def cmd_export(a) -> int:
    from .build import compile_graph, options_from_report
    from .export.onnx_export import export_onnx
    from .passes.autodiff import set_parameters
    from .pipeline import forward_graph

    rep = load_report(a.out)
    if "training" not in rep:
        raise TinycError(f"{a.out}: built without --train; there are no trained parameters")
    try:
        params = dict(np.load(a.params, allow_pickle=False))
    except (OSError, ValueError, EOFError) as e:
        raise TinycError(f"{a.params}: not a readable .npz of parameters ({e})") from e
    model, opts = options_from_report(rep)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # the build already warned about its calibration
        g = compile_graph(model, opts)
    set_parameters(g, params, a.params)
    export_onnx(forward_graph(g), a.output)
    print(f"wrote {a.output}: {model} with the parameters of {a.params}")
    return 0


def cmd_boards(a) -> int:
    from .targets.boards import list_boards
    print(f"{'id':<16} {'SRAM':>9} {'flash':>10}  name")
    for b in list_boards():
        print(f"{b.id:<16} {b.sram_bytes // 1024:>6} KB {b.flash_bytes // 1024:>7} KB  {b.name}")
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    warnings.simplefilter("always")
    warnings.formatwarning = lambda msg, cat, *rest: f"tinyc: warning: {msg}\n"
    commands = {"build": cmd_build, "emulate": cmd_emulate, "report": cmd_report,
                "boards": cmd_boards, "export": cmd_export}
    try:
        return commands[args.command](args)
    except TinycError as err:
        if args.debug:
            raise
        print(f"tinyc: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # an internal error: say so plainly
        if args.debug:
            raise
        print(f"tinyc: internal error: {type(err).__name__}: {err}\n"
              "rerun with --debug for the traceback and report it", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
