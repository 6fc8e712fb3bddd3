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


def _bytes(text: str) -> int:
    t = text.strip().upper()
    scale = 1024 if t.endswith("K") else 1024 * 1024 if t.endswith("M") else 1
    try:
        value = int(t.rstrip("KMB") if scale > 1 else t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a byte count like 131072 or 128K") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"'{text}': give a positive byte count")
    return value


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
    b.add_argument("--patch", default="auto", metavar="auto|off|RxC@NODE",
                   help="patch-based schedule of the first layers: auto (default) picks the "
                        "smallest arena; off runs layer by layer; e.g. 4x4@12 forces a 4x4 grid "
                        "over the output of node 12")
    b.add_argument("--sram", type=_bytes, metavar="BYTES",
                   help="with --patch auto: pick the schedule with the fewest MACs whose arena "
                        "+ stack reserve fits BYTES (e.g. 131072 or 128K)")

    e = sub.add_parser("emulate", help="run a built model with the host C compiler")
    e.add_argument("out", help="folder written by tinyc build")
    e.add_argument("--input", required=True, help=".npy/.npz input in the ONNX layout (NCHW); "
                                                  "float is quantized, int8 taken as quantized")
    e.add_argument("--output", required=True, help=".npy file for the output")
    e.add_argument("--dequantize", action="store_true", help="write float output instead of int8")

    r = sub.add_parser("report", help="show a build's report; --plot draws arena occupancy")
    r.add_argument("out", help="folder written by tinyc build")
    r.add_argument("--plot", help="PNG file for the arena occupancy plot")

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
    if inf.get("patch"):
        lines.append(f"schedule   {patch_summary(inf['patch'])}")
    return "\n".join(lines)


def patch_summary(p: dict) -> str:
    if not p["enabled"]:
        why = {"off": "--patch off", "auto": "no patch schedule is smaller"}.get(p["mode"], "")
        return f"layer by layer ({why}), arena {p['peak_bytes']:,} B"
    rows, cols = p["grid"]
    return (f"patches {rows}x{cols} over node {p['split_index']} ({p['split_node']}, "
            f"{'x'.join(map(str, p['split_shape'][1:]))}), then layer by layer; "
            f"arena {p['peak_bytes']:,} B vs {p['peak_layer_by_layer_bytes']:,} B layer by layer; "
            f"recomputation +{p['overhead_macs']:,} MACs (+{p['overhead_pct']:.1f}%)")


def cmd_build(a) -> int:
    from .build import BuildOptions, DoesNotFitError, build
    from .targets.boards import load_board

    board = load_board(a.board)
    opts = BuildOptions(calib=a.calib, calib_mean=a.calib_mean, calib_std=a.calib_std,
                        calib_limit=a.calib_limit, input_shape=a.input_shape,
                        export_tflite=a.export_tflite, patch=a.patch, sram=a.sram)
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


def cmd_emulate(a) -> int:
    from .calib import load_array
    from .reference.fixedpoint import round_half_away
    from .targets.host import run_host

    rep = load_report(a.out)
    x = load_array(a.input)
    c, h, w = rep["input"]["shape_nchw"][1:]
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
        raise TinycError(f"{a.input}: shape {x.shape}; the model expects (N, {c}, {h}, {w}) NCHW")
    if x.dtype.kind == "f":
        if not np.all(np.isfinite(x)):
            raise TinycError(f"{a.input}: contains NaN or Inf")
        scale, zp = rep["input"]["scale"], rep["input"]["zero_point"]
        v = np.asarray(x, np.float32) / np.float32(scale)
        xq = np.clip(round_half_away(v) + zp, -128, 127).astype(np.int8)
    elif x.dtype == np.int8:
        xq = x
    else:
        raise TinycError(f"{a.input}: dtype {x.dtype}; give float32 (quantized with the model's "
                         "input parameters) or int8 (already quantized)")
    y = run_host(a.out, np.ascontiguousarray(np.moveaxis(xq, 1, -1)))
    y = y.reshape((x.shape[0],) + tuple(rep["output"]["shape"][1:]))
    if a.dequantize:
        y = ((y.astype(np.float32) - rep["output"]["zero_point"])
             * np.float32(rep["output"]["scale"]))
    np.save(a.output, y)
    print(f"ran {x.shape[0]} input(s) through {a.out} (host gcc); wrote {a.output} "
          f"{y.dtype} {tuple(y.shape)}")
    return 0


def cmd_report(a) -> int:
    rep = load_report(a.out)
    print(summary(rep))
    print(f"{'#':>4} {'op':<16} {'output':<16} {'MACs':>11} {'offset':>8} {'bytes':>8}")
    hidden = []   # ops of the patches after the first: same layers on other windows
    for r in rep["ops"]:
        patch = r.get("patch")
        if patch and patch != [0, 0]:
            hidden.append(r)
            continue
        if hidden:
            _print_hidden(hidden)
            hidden = []
        print(f"{r['index']:>4} {r['op']:<16} {'x'.join(map(str, r['output_shape'])):<16} "
              f"{r['macs']:>11,} {r['output_offset']:>8} {r['output_bytes']:>8}"
              + (f"  in place ({r['in_place']})" if r["in_place"] else "")
              + ("  patch 0,0" if patch else ""))
    if hidden:
        _print_hidden(hidden)
    if a.plot:
        from .memory.plot import plot_arena
        plot_arena(rep, a.plot)
        print(f"wrote {a.plot}")
    return 0


def _print_hidden(rows: list[dict]) -> None:
    patches = len({tuple(r["patch"]) for r in rows})
    print(f"{'':>4} ... ops {rows[0]['index']}-{rows[-1]['index']}: the same layers on "
          f"{patches} more patches, {sum(r['macs'] for r in rows):,} MACs")


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
                "boards": cmd_boards}
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
