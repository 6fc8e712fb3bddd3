"""tinyc command line: build | emulate | flash | report | boards.

User errors (TinycError) print one clear message and exit 1 without a traceback; `--debug` shows
the traceback. Anything else is an internal error: exit 3 with a request to rerun with --debug.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from .datasets import labelled_data, model_inputs
from .errors import TinycError, printable
from . import lr_schedule
from .lr_schedule import DEFAULT_LR_SCHEDULE, LR_SCHEDULES


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
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from None
    if not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"'{text}': give finite numbers")
    return values


def _positive_floats(text: str) -> tuple[float, ...]:
    values = _floats(text)
    if min(values) <= 0:
        raise argparse.ArgumentTypeError(f"'{text}': give positive numbers")
    return values


def _positive_float(text: str) -> float:
    """A finite number > 0 (a learning rate, a time limit): nan, inf, 0 and negatives refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"'{text}': give a finite number > 0")
    return value


def _learning_rate(text: str) -> float:
    """A finite number > 0 that a float32 holds (the C step takes a float lr)."""
    value = _positive_float(text)
    if not float(np.finfo(np.float32).tiny) <= value <= float(np.finfo(np.float32).max):
        raise argparse.ArgumentTypeError(f"'{text}': give a learning rate a float32 holds "
                                         "(e.g. 0.003)")
    return value


def _learning_rate_or_auto(text: str) -> float | str:
    return "auto" if text == "auto" else _learning_rate(text)


def _int_at_least(least: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"'{text}': give an integer >= {least}")
        return value
    parse.__name__ = f"integer >= {least}"
    return parse


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are like every other bad input: one line, exit status 1."""

    def error(self, message):
        self.exit(1, f"tinyc: error: {message} (see `{self.prog} --help`)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tinyc", description="ONNX CNN -> int8 C for microcontrollers")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="compile an ONNX model to C for a board")
    b.add_argument("model", help="float ONNX model (NCHW image input)")
    b.add_argument("--board", required=True, help="board id (see `tinyc boards`)")
    b.add_argument("-o", "--output", required=True, help="output folder")
    b.add_argument("--calib", help="calibration inputs: .npy/.npz (N,C,H,W float, model layout) "
                                   "or a folder of images")
    b.add_argument("--calib-mean", type=_floats, default=(0.5, 0.5, 0.5),
                   help="image preprocessing: per-channel mean of pixel/255, one value per "
                        "channel or one for all (default 0.5,0.5,0.5)")
    b.add_argument("--calib-std", type=_positive_floats, default=(0.5, 0.5, 0.5),
                   help="image preprocessing: per-channel std, one value per channel or one for "
                        "all (default 0.5,0.5,0.5: p/127.5-1)")
    b.add_argument("--calib-limit", type=_int_at_least(1), default=100,
                   help="use at most N samples (100)")
    b.add_argument("--input-shape", type=_shape, help="override the input shape, e.g. 1x3x96x96")
    b.add_argument("--export-tflite", action="store_true", help="also write OUT/model.tflite")
    b.add_argument("--patch", default="auto", metavar="auto|off|RxC@NODE",
                   help="patch-based schedule of the first layers: auto (default) picks the "
                        "smallest arena; off runs layer by layer; e.g. 4x4@12 forces a 4x4 grid "
                        "over the output of node 12")
    b.add_argument("--sram", type=_bytes, metavar="BYTES",
                   help="with --patch auto: pick the schedule with the fewest MACs whose arena "
                        "+ stack reserve fits BYTES (e.g. 131072 or 128K; with --train also "
                        "the trained parameters)")
    b.add_argument("--profile", action="store_true",
                   help="the demo firmware also times each layer of the first sample (training: "
                        "of the first step); `tinyc emulate --qemu --profile` prints them")
    b.add_argument("--kernels", choices=("auto", "portable"), default="auto",
                   help="auto (default): the Arm DSP kernels (SMLAD) on cores with the DSP "
                        "extension (Cortex-M4/M7/M33), plain C99 elsewhere; portable: plain C99")
    b.add_argument("--train", metavar="SCHEME",
                   help="also generate tinyc_train_step(): full | bias-only | last:K | auto | "
                        "scheme.json (auto: the most trainable nested scheme that fits --sram or "
                        "the board's SRAM)")
    b.add_argument("--num-classes", type=_int_at_least(2),
                   help="replace the classifier by a new N-class head (N >= 2)")
    b.add_argument("--lr", type=_learning_rate_or_auto, default=0.003,
                   help="peak learning rate, the first step's (0.003, from the sweep in "
                        "bench/results/transfer.md), or auto: the best of a sweep of the "
                        "generated step on --train-data (a fifth held out; recorded in "
                        "report.json)")
    b.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="the rate over a run of T steps: linear (default: step k at "
                        "lr x (1 - k/T), bench/results/train_decay.md) or constant; "
                        "tinyc_train_lr() in model.h")
    b.add_argument("--train-data", metavar="FILE.npz",
                   help="labelled samples (x in the model layout, y labels; --loss mse: float "
                        "targets) that --lr auto and --train auto learn from (--train auto: "
                        "the updates with the most gradient signal per byte on them that fit)")
    b.add_argument("--body-lr-scale", type=_positive_float, metavar="F",
                   help="train the layers below the classifier at F times the learning rate "
                        "(default: 0.3 with --train auto --train-data --lr-schedule constant, "
                        "else 1)")
    b.add_argument("--train-warmup", type=_int_at_least(0), default=0, metavar="STEPS",
                   help="the first STEPS training steps update the classifier only, the whole "
                        "scheme after (TINYC_TRAIN_WARMUP_STEPS; default 0)")
    b.add_argument("--no-qas", action="store_true",
                   help="ablation: plain integer-domain gradients, no quantization-aware scaling")
    b.add_argument("--rounding", choices=("nearest", "stochastic"),
                   help="rounding of the integer parameter updates (default stochastic: seeded, "
                        "reproducible; measured better in bench/results/transfer.md)")
    b.add_argument("--loss", choices=("ce", "mse"), default="ce",
                   help="training loss: ce (softmax cross-entropy on class labels, default) or "
                        "mse (mean squared error against targets of the output's shape, e.g. an "
                        "autoencoder's input)")
    b.add_argument("--no-firmware", action="store_true",
                   help="write only the model library (model.c, model.h, tinyc/) into OUT, no "
                        "PlatformIO project")
    b.add_argument("--samples", help="the firmware demo's inputs: .npy/.npz in the model layout "
                                     "(NCHW; float is quantized, int8 taken as is); default: the "
                                     "first calibration input")

    e = sub.add_parser("emulate", help="run a built model with the host C compiler")
    e.add_argument("out", help="folder written by tinyc build")
    e.add_argument("--input", help=".npy/.npz input in the ONNX layout (NCHW); "
                                   "float is quantized, int8 taken as quantized")
    e.add_argument("--output", help=".npy file for the output")
    e.add_argument("--dequantize", action="store_true", help="write float output instead of int8")
    e.add_argument("--train-data", help=".npz with x (inputs, model layout) and y (int labels): "
                                        "train with the generated tinyc_train_step()")
    e.add_argument("--epochs", type=_int_at_least(1), default=1)
    e.add_argument("--eval-data", help=".npz (x, y) to report accuracy on after each epoch")
    e.add_argument("--save-params", help=".npz file for the trained parameters")
    e.add_argument("--lr", type=_learning_rate, help="peak learning rate (default: the build's "
                   "--lr)")
    e.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="the rate over the epochs x samples steps (default: the build's)")
    e.add_argument("--allow-divergence", action="store_true",
                   help="with --train-data: exit 0 even when the training guard skipped steps "
                        "or refused updates (a diverging run; otherwise exit 1)")
    e.add_argument("--qemu", action="store_true",
                   help="run the built firmware under qemu-system-arm (mps2 boards) instead of "
                        "the host build; prints the instructions per inference, or with "
                        "--train-data per training step, and checks the trained parameters "
                        "against the host build's")
    e.add_argument("--timeout", type=_positive_float,
                   help="with --qemu: seconds before a hung guest is killed (300; training: "
                        "300 + 5 per step)")
    e.add_argument("--profile", action="store_true",
                   help="with --qemu, for a build made with --profile: instructions per layer, "
                        "per op and (training) per phase of the first sample or step; also "
                        "written to OUT/profile.json")

    f = sub.add_parser("flash", help="upload the built firmware to the board (pio run -t upload); "
                                     "mps2 boards run it in QEMU")
    f.add_argument("out", help="folder written by tinyc build")
    f.add_argument("--port", help="serial port or drive of the board, when its protocol needs one")
    f.add_argument("--protocol", help="one of the board's upload protocols (see `tinyc boards -v`)")
    f.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")

    d = sub.add_parser("device", help="talk to a running firmware over the device link "
                       "(info, infer, train, pull, push, ...)")
    d.add_argument("out", help="folder written by tinyc build (the model the device runs)")
    d.add_argument("action", choices=DEVICE_ACTIONS,
                   help="info | infer --input x.npy [--output y.npy] | train --train-data d.npz "
                        "| pull -o p.npz | push --params p.npz | reset | stats | save | restore "
                        "| storage")
    where = d.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="the board's serial port (/dev/ttyACM0, COM3, a pty) or "
                       "socket://HOST:PORT")
    where.add_argument("--qemu", action="store_true",
                       help="start the build's firmware under QEMU and talk to it (emulated "
                            "boards; it starts from the built parameters each time)")
    d.add_argument("--storage", help="with --qemu: the host file standing for the emulated "
                   "board's flash, where save keeps the trained parameters (created if missing; "
                   "restored from at start)")
    d.add_argument("--baud", type=_int_at_least(300), default=115200)
    d.add_argument("--timeout", type=_positive_float, default=30.0,
                   help="seconds to wait for each answer (default 30)")
    d.add_argument("--input", help="infer: .npy/.npz inputs in the model layout")
    d.add_argument("--output", "-o", help="infer: .npy for the outputs; pull: .npz for the "
                   "parameters")
    d.add_argument("--train-data", help="train: .npz with x (inputs) and y (labels)")
    d.add_argument("--epochs", type=_int_at_least(1), default=1)
    d.add_argument("--lr", type=_learning_rate, help="train: peak learning rate (default: the "
                   "build's --lr)")
    d.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="train: the rate over the epochs x samples steps (default: the build's)")
    d.add_argument("--reset", action="store_true",
                   help="train: start from the built parameters (the steps of tinyc emulate "
                        "--train-data); default: go on from what the device holds")
    d.add_argument("--save-params", help="train: .npz for the trained parameters afterwards")
    d.add_argument("--save", action="store_true",
                   help="train, push: then save the parameters in the device's persistent "
                        "storage (with --qemu, each command starts a new emulated board: train "
                        "and save in one command)")
    d.add_argument("--params", help="push: .npz of trained parameters (tinyc emulate "
                   "--save-params, tinyc device pull)")

    fl = sub.add_parser("fleet", help="federated learning over a fleet of devices through "
                        "Flower: serve the rounds, or join a device to them")
    fsub = fl.add_subparsers(dest="fleet_action", required=True)
    fs = fsub.add_parser("serve", help="the fleet's server (Flower, gRPC): aggregates the "
                         "devices' trained parameters round by round")
    fs.add_argument("out", help="folder written by tinyc build --train (the fleet's model)")
    fs.add_argument("--rounds", type=_int_at_least(1), required=True)
    fs.add_argument("--address", default="0.0.0.0:8080",
                    help="HOST:PORT to listen on (default 0.0.0.0:8080)")
    fs.add_argument("--devices", type=_int_at_least(1), default=2,
                    help="devices to wait for before the first round (default 2); later rounds "
                         "go on with those still there")
    fs.add_argument("--strategy", choices=("fedavg", "fedprox", "fedavgm"), default="fedavg",
                    help="Flower's FedAvg (weighted by samples, default), FedProx, or FedAvgM "
                         "(server momentum 0.9)")
    fs.add_argument("--mu", type=_positive_float, default=0.01,
                    help="FedProx: the proximal term's mu (default 0.01)")
    fs.add_argument("--lr", type=_learning_rate, help="learning rate sent to the devices "
                    "(default: each device's own, the build's --lr)")
    fs.add_argument("--epochs", type=_int_at_least(1), default=1,
                    help="passes over its own data each device trains per round (default 1)")
    fs.add_argument("--timeout", type=_positive_float, default=600.0,
                    help="seconds to wait for the devices to join (default 600)")
    fs.add_argument("--eval-every", type=_int_at_least(0), default=0,
                    help="also send the aggregate to the devices for their accuracy every N "
                         "rounds (default 0: after the last round only; each costs a download)")
    fs.add_argument("--save-params", help=".npz for the fleet's final trained elements (codes)")
    fj = fsub.add_parser("join", help="join a device to a fleet: it trains on its own data, "
                         "only its trained parameters cross")
    fj.add_argument("out", help="folder written by tinyc build --train (the model the device "
                    "runs)")
    fw = fj.add_mutually_exclusive_group(required=True)
    fw.add_argument("--port", help="the board's serial port or socket://HOST:PORT")
    fw.add_argument("--qemu", action="store_true", help="the build's firmware under QEMU")
    fw.add_argument("--host", action="store_true",
                    help="the host build of the model (gcc; the generated C as a process)")
    fj.add_argument("--data", required=True, help=".npz with x (inputs, model layout) and y "
                    "(labels): the device's own samples (they never leave this process)")
    fj.add_argument("--eval-data", help=".npz the device's accuracy is measured on after each "
                    "round (default: its --data)")
    fj.add_argument("--server", default="127.0.0.1:8080",
                    help="the fleet server's HOST:PORT (default 127.0.0.1:8080)")
    fj.add_argument("--lr", type=_learning_rate, help="learning rate (default: the server's, "
                    "else the build's --lr)")
    fj.add_argument("--epochs", type=_int_at_least(1), default=1,
                    help="passes per round unless the server says (default 1)")
    fj.add_argument("--storage", help="with --qemu: the host file standing for the board's flash")
    fj.add_argument("--baud", type=_int_at_least(300), default=115200)
    fj.add_argument("--timeout", type=_positive_float, default=30.0,
                    help="seconds: each device answer; the server connection's retries "
                         "(default 30)")
    fj.add_argument("--save-params", help=".npz for the device's parameters at the end")
    fj.add_argument("--save", action="store_true",
                    help="then save them in the device's persistent storage")
    fj.add_argument("--seed", type=int, default=0, help="the local sample order's seed")

    r = sub.add_parser("report", help="show a build's report; --plot draws arena occupancy")
    r.add_argument("out", help="folder written by tinyc build")
    r.add_argument("--plot", help="PNG file for the arena occupancy plot")

    x = sub.add_parser("export", help="trained parameters -> float ONNX model")
    x.add_argument("out", help="folder written by tinyc build --train")
    x.add_argument("--params", required=True, help=".npz written by tinyc emulate --save-params")
    x.add_argument("-o", "--output", required=True, help="ONNX file to write")

    bl = sub.add_parser("boards", help="list the supported boards")
    bl.add_argument("-v", "--verbose", action="store_true",
                    help="also the memory map, PlatformIO ids and upload protocols")
    return p


def summary(report: dict) -> str:
    from .pipeline import layout_name
    inf = report["inference"]
    lines = [
        f"board      {report['board']}: {report['board_name']}",
        f"model      {report['model']}",
        f"input      {'x'.join(map(str, report['input']['shape_nchw']))} "
        f"({layout_name(report['input']['shape_nchw'], report['input'].get('layout'))}) -> int8, scale {report['input']['scale']:.6g}, zero point {report['input']['zero_point']}",
        f"ops        {len(report['ops'])}, {report['macs']:,} MACs",
        f"SRAM       {'inference ' if 'training' in report else ''}arena {inf['arena_bytes']:,} B"
        f" + stack reserve {report['stack_reserve_bytes']:,} B"
        f" = {inf['sram_bytes']:,} B of {report['sram_limit_bytes']:,} B"
        f" ({100 * inf['sram_bytes'] / report['sram_limit_bytes']:.1f}%)",
        f"flash      weights {report['weights_bytes']:,} B of {report['flash_limit_bytes']:,} B"
        f" ({100 * report['weights_bytes'] / report['flash_limit_bytes']:.1f}%)",
    ]
    tr = report.get("training")
    if tr:   # the step's SRAM, what the board check uses (the SRAM line: tinyc_infer alone)
        lines.append(
            f"training   {tr['scheme']}: arena {tr['arena_bytes']:,} B + trained parameters "
            f"{tr['params_sram_bytes']:,} B + stack reserve {tr['stack_reserve_bytes']:,} B = "
            f"{tr['sram_bytes']:,} B of {report['sram_limit_bytes']:,} B "
            f"({100 * tr['sram_bytes'] / report['sram_limit_bytes']:.1f}%), {tr['peak']} peak")
        if isinstance(tr.get("lr"), (int, float)):
            lines.append(f"rate       {lr_schedule.describe(tr['lr'], lr_schedule.of_report(report))}"
                         " (tinyc_train_lr in model.h)")
        auto = tr.get("lr_auto")
        if auto:
            def held_out(r):
                return (f"mse {r['val_mse']:.4g}" if "val_mse" in r else
                        f"{100 * r['val_accuracy']:.1f}%")
            runs = ", ".join(f"{r['lr']:g}: " + (f"{r['val_loss']:.3f}" if r.get("val_loss")
                                                 is not None else "diverged")
                             + f" ({held_out(r)})" for r in auto["runs"])
            lines.append(f"lr auto    {auto['lr']:g}: held-out loss after an epoch of "
                         f"{auto['train_samples']} steps (held-out {auto['validation_samples']}"
                         f") {runs}; {auto['seconds']:.0f} s")
    if inf.get("patch"):
        lines.append(f"schedule   {patch_summary(inf['patch'])}")
    fw = report.get("firmware")
    if fw and fw.get("built"):
        rs = fw["ram_sections"]
        lines.append(
            f"firmware   RAM {fw['ram_bytes']:,} B of {fw['ram_limit_bytes']:,} B (.data "
            f"{rs.get('.data', 0):,} + .bss {rs.get('.bss', 0):,} [arena {fw['arena_bytes']:,}] + "
            f"stack {rs.get('.stack', 0):,}), flash {fw['flash_bytes']:,} B of "
            f"{fw['flash_limit_bytes']:,} B; {fw['elf']}")
        if fw.get("link"):
            ln = fw["link"]
            what = " and storage" if fw.get("storage") else ""
            lines.append(f"link       device link (protocol {ln['protocol']}){what}: RAM "
                         f"{ln['ram_bytes']:,} B (receive buffer {ln['rx_buffer_bytes']:,} B; "
                         f"samples stream into the model's input), flash {ln['flash_bytes']:,} B, "
                         "in the firmware's figures")
        if fw.get("usb"):
            us = fw["usb"]
            lines.append(f"usb        console and device link over USB CDC (rings of "
                         f"{us['rx_buffer_bytes']:,} B in, {us['tx_buffer_bytes']:,} B out): RAM "
                         f"{us['ram_bytes']:,} B, flash {us['flash_bytes']:,} B, in the "
                         "firmware's figures (not run on hardware)")
        if fw.get("storage"):
            st = fw["storage"]
            lines.append(f"storage    trained parameters saved in 2 slots of "
                         f"{st['slot_bytes']:,} B (flash {st['flash_bytes']:,} B, counted in the "
                         f"flash check; {st['backend']})")
        if fw.get("stack_worst_case_bytes") is not None:
            train = (f"; tinyc_train_step {fw['train_step_stack_bytes']:,} B"
                     if fw.get("train_step_stack_bytes") is not None else "")
            lines.append(f"stack      worst case {fw['stack_worst_case_bytes']:,} B of "
                         f"{fw['stack_bytes'] - fw.get('stack_guard_bytes', 0):,} B (GCC call "
                         f"graph: {' -> '.join(fw['stack_worst_case_chain'][:6])}{train})")
        elif fw.get("stack_worst_case_unknown"):
            lines.append(f"stack      worst case unknown: {fw['stack_worst_case_unknown']}")
    elif fw:
        lines.append(f"firmware   project written, not built: {fw.get('reason') or fw.get('error')}")
    return "\n".join(lines)


def patch_summary(p: dict) -> str:
    if not p["enabled"]:
        why = {"off": "--patch off", "auto": "no patch schedule is smaller"}.get(p["mode"], "")
        if p.get("scope") == "training step":
            if p["mode"] == "auto":
                why += ("; a training step can patch no layer" if p["max_split"] < 0 else
                        f"; a training step can patch nodes 0-{p['max_split']} only")
            return f"layer by layer ({why}), training-step arena {p['peak_bytes']:,} B"
        return f"layer by layer ({why}), arena {p['peak_bytes']:,} B"
    rows, cols = p["grid"]
    scope = " (training step)" if p.get("scope") == "training step" else ""
    return (f"patches {rows}x{cols} over node {p['split_index']} ({p['split_node']}, "
            f"{'x'.join(map(str, p['split_shape'][1:]))}), then layer by layer; "
            f"arena{scope} {p['peak_bytes']:,} B vs {p['peak_layer_by_layer_bytes']:,} B layer by "
            f"layer; recomputation +{p['overhead_macs']:,} MACs (+{p['overhead_pct']:.1f}%)")


def cmd_build(a) -> int:
    from .build import BuildOptions, DoesNotFitError, build
    from .targets.boards import load_board

    board = load_board(a.board)
    train = None
    if a.train:
        from .passes.sparse_update import parse_scheme
        train = parse_scheme(a.train)
    elif (a.num_classes is not None or a.no_qas or a.rounding or a.body_lr_scale is not None
          or a.train_warmup or a.lr_schedule):
        raise TinycError("--num-classes, --no-qas, --rounding, --body-lr-scale, --train-warmup "
                         "and --lr-schedule need --train SCHEME")
    if a.train_data and a.lr != "auto" and a.train != "auto":
        raise TinycError("--train-data is read by --lr auto and --train auto; to train on it, "
                         "run tinyc emulate OUT --train-data FILE after the build")
    opts = BuildOptions(calib=a.calib, calib_mean=a.calib_mean, calib_std=a.calib_std,
                        calib_limit=a.calib_limit, input_shape=a.input_shape,
                        export_tflite=a.export_tflite, train=train, num_classes=a.num_classes,
                        qas=not a.no_qas, rounding=a.rounding or "stochastic", lr=a.lr,
                        lr_schedule=a.lr_schedule or DEFAULT_LR_SCHEDULE,
                        train_data=a.train_data, body_lr_scale=a.body_lr_scale,
                        train_warmup=a.train_warmup, loss=a.loss,
                        firmware=not a.no_firmware, samples=a.samples, patch=a.patch,
                        sram=a.sram, profile=a.profile, kernels=a.kernels)
    try:
        report = build(a.model, board, a.output, opts)
    except DoesNotFitError as err:
        print(f"tinyc: error: {printable(str(err))}", file=sys.stderr)
        report_path = getattr(err, "report_path", None)   # refused before compiling: none
        print(printable(f"(nothing was written to {a.output}"
                        + (f"; the full report is in {report_path})" if report_path else ")")),
              file=sys.stderr)
        return 1
    print(printable(summary(report)))
    if a.no_firmware:
        print(f"wrote      {a.output}/ (model.c, model.h, tinyc/, report.json"
              + (", model.tflite" if a.export_tflite else "") + ")")
    else:
        print(f"wrote      {a.output}/ (PlatformIO project: platformio.ini, src/main.c, "
              "lib/tinyc_model/, lib/tinyc_board/; report.json"
              + (", model.tflite" if a.export_tflite else "") + ")")
    return 0


def load_report(out: str) -> dict:
    path = Path(out) / "report.json"
    if not path.is_file():
        raise TinycError(f"{out}: no report.json; run `tinyc build ... -o {out}` first")
    try:
        rep = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TinycError(f"{path}: corrupt report ({e}); rebuild") from e
    from .report_shape import report_problem
    problem = report_problem(rep)
    if not problem:   # the optional parts (schedule, firmware) as the commands print them
        try:
            summary(rep)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            problem = f"cannot summarise it: {type(e).__name__} {e}"
    if problem:
        raise TinycError(f"{path}: not a tinyc report ({problem}); rebuild with tinyc build")
    return rep


def board_of_report(rep: dict):
    from .targets.boards import load_board
    path = rep.get("board_file")
    return load_board(path if path and Path(path).is_file() else rep["board"])


def cmd_emulate(a) -> int:
    from .outdir import using

    rep = load_report(a.out)
    if a.profile and not a.qemu:
        raise TinycError("--profile times the firmware's layers: add --qemu")
    if a.profile and not rep.get("build_options", {}).get("profile"):
        raise TinycError(f"{a.out} was built without --profile: rebuild it with `tinyc build "
                         f"... --profile` (the firmware then times each layer)")
    with using(a.out):   # it writes its executables there: no build may replace them meanwhile
        if a.train_data:
            return emulate_training(a, rep)
        return emulate_inference(a, rep)


def npy_name(path: str, ext: str) -> str:
    """The file numpy writes for `path` (np.save / np.savez add their extension; a folder is
    left as it is, for atomic_output to refuse)."""
    return path if path.endswith(ext) or Path(path).is_dir() else path + ext


def emulate_inference(a, rep: dict) -> int:
    from .calib import load_array
    from .outdir import atomic_output

    if not a.input or not a.output:
        raise TinycError("tinyc emulate needs --input and --output (or --train-data)")
    with atomic_output(npy_name(a.output, ".npy"), ".npy", "--output") as tmp:   # a bad path fails now
        x = load_array(a.input)
        xq = model_inputs(rep, x, a.input)
        n = xq.shape[0]
        if a.qemu:
            from .targets.qemu import run_qemu
            board = board_of_report(rep)
            y, demo = run_qemu(a.out, board, rep, xq, timeout=a.timeout or 300.0)
            how = f"the firmware under QEMU ({board.qemu_machine})"
        else:
            from .targets.host import run_host
            y = run_host(a.out, xq)
            how = "host gcc"
        y = y.reshape((n,) + tuple(rep["output"]["shape"][1:]))
        if a.dequantize:
            y = ((y.astype(np.float32) - rep["output"]["zero_point"])
                 * np.float32(rep["output"]["scale"]))
        np.save(tmp, y)
    print(f"ran {n} input(s) through {a.out} ({how}); wrote {npy_name(a.output, '.npy')} "
          f"{y.dtype} {tuple(y.shape)}")
    if a.qemu:
        macs = rep["macs"]
        for i, c in enumerate(demo.counts):
            print(f"sample {i}: {c:,} {demo.unit} per inference ({c / max(macs, 1):.2f} per MAC)")
        if demo.stack_used is not None:
            print(f"stack: {demo.stack_used:,} of {demo.stack_size:,} bytes used")
        if a.profile:
            # a training build numbers the layers of its training step (an inference is its
            # forward pass)
            print_profile(a.out, rep, demo.profile, demo.unit, "training" in rep,
                          demo.counts[0], what="inference")
    return 0


def print_profile(out, rep: dict, counts: dict, unit: str, training: bool, whole: int,
                  what: str | None = None) -> None:
    from .profile import format_summary, summary, write_summary

    if not counts:
        raise TinycError(f"the firmware of {out} printed no profile: rebuild it with --profile")
    s = summary(rep, counts, unit, training, whole)
    if what:
        s["what"] = what
    print(format_summary(s))
    print(f"wrote {write_summary(out, s)}")


def cmd_flash(a) -> int:
    import shlex
    import shutil

    from .outdir import using
    from .targets.platformio import (pio_environ, run_pio_upload, set_upload_protocol,
                                     toolchain_missing, upload_plan)

    rep = load_report(a.out)
    board = board_of_report(rep)
    fw = rep.get("firmware")
    if fw is None:
        raise TinycError(f"{a.out} was built with --no-firmware: there is no firmware to flash; "
                         "rebuild without --no-firmware")
    plan = upload_plan(a.out, board, a.protocol, a.port)
    proto = plan["protocol"]
    core = Path(a.out).resolve() / ".pio-core"
    if a.dry_run:
        print(f"PLATFORMIO_CORE_DIR={shlex.quote(str(core))} " + shlex.join(plan["pio"]))
        print(f"# which runs ({proto.name}, board {board.id}):")
        print(plan["tool_command"])
        return 0
    if not fw.get("built"):
        raise TinycError(f"{a.out}: the firmware was not built "
                         f"({fw.get('reason') or fw.get('error')}); fix that and rebuild")
    missing = toolchain_missing()
    if missing:
        raise TinycError(f"cannot run PlatformIO: {missing}")
    if not shutil.which(proto.tool):
        raise TinycError(f"board '{board.id}' uploads with protocol '{proto.name}', which needs "
                         f"'{proto.tool}': not found on PATH. Install: {proto.install}")
    with using(a.out, exclusive=True, what="flash"):   # it rewrites platformio.ini and .pio
        if a.protocol:
            set_upload_protocol(a.out, board, proto.name)
        try:
            returncode = run_pio_upload(plan["pio"], pio_environ(Path(a.out)))
        finally:
            if a.protocol and a.protocol != board.upload_default:
                set_upload_protocol(a.out, board, board.upload_default)
    if returncode != 0:
        hint = ("is the board connected and powered" + (", and is --port right" if proto.needs_port
                                                      else "") + "?")
        if board.emulated:
            hint = "see the firmware's output above"
        raise TinycError(f"upload to board '{board.id}' with '{proto.name}' ({proto.tool}) failed "
                         f"(exit status {returncode}): {hint}")
    return 0


def _progress(total: int, what: str):
    """A progress bar on stderr (tqdm; a context manager: `bar.update(n)`)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=f"  {what}", unit="step", file=sys.stderr, leave=True,
                dynamic_ncols=True)


def emulate_training(a, rep: dict) -> int:
    """Train with the generated tinyc_train_step() (host gcc, or the firmware under QEMU with
    --qemu) over --train-data."""
    from .outdir import atomic_output

    if "training" not in rep:
        raise TinycError(f"{a.out}: built without --train; rebuild with --train SCHEME")
    if a.epochs < 1:
        raise TinycError(f"--epochs {a.epochs}: must be at least 1")
    x, y = labelled_data(rep, a.train_data)
    evaluation = labelled_data(rep, a.eval_data) if a.eval_data else None
    lr = a.lr if a.lr is not None else rep["training"]["lr"]
    if not (np.isfinite(lr) and lr > 0):
        raise TinycError(f"--lr {lr}: must be a positive number")
    schedule = a.lr_schedule or lr_schedule.of_report(rep)
    save = (atomic_output(npy_name(a.save_params, ".npz"), ".npz",
                          "--save-params") if a.save_params
            else contextlib.nullcontext())
    with save as params_tmp:   # an unwritable --save-params fails now, not after training
        print(f"training   {a.epochs} epoch(s) x {len(x):,} samples = {a.epochs * len(x):,} "
              f"steps, {lr_schedule.describe(lr, schedule, a.epochs * len(x))}", flush=True)
        run = emulate_training_qemu if a.qemu else host_training_run
        guard = run(a, rep, x, y, evaluation, lr, schedule, params_tmp)
    check_divergence(guard, lr, a.allow_divergence)   # after --save-params is in place
    return 0


def host_training_run(a, rep: dict, x, y, evaluation, lr: float, schedule: str,
                      params_tmp: str | None):
    """Training on the host build (peak lr, `schedule` over all epochs x samples steps);
    returns the guard's counters."""
    from .targets.firmware_train import training_order
    from .targets.host import HostTrainer

    chunk = 256
    orders = training_order(len(x), a.epochs).reshape(a.epochs, len(x))
    rates = lr_schedule.rates(lr, schedule, a.epochs * len(x)).reshape(a.epochs, len(x))
    with HostTrainer(a.out) as trainer:
        for epoch in range(1, a.epochs + 1):
            order = orders[epoch - 1]
            losses = []
            with _progress(len(x), f"epoch {epoch}") as bar:
                for start in range(0, len(x), chunk):
                    idx = order[start:start + chunk]
                    losses.extend(trainer.train(x[idx], y[idx],
                                                rates[epoch - 1, start:start + chunk]))
                    bar.update(len(idx))
            losses = np.asarray(losses)
            finite = losses[np.isfinite(losses)]   # a skipped step's loss may be NaN
            line = f"epoch {epoch}: loss {finite.mean() if len(finite) else float('nan'):.4f}"
            if evaluation is not None:
                logits = trainer.infer(evaluation[0]).reshape(len(evaluation[0]), -1)
                if trainer.mse:   # the eval mean squared error, dequantized
                    scale = rep["output"]["scale"]
                    d = (logits.astype(np.float64) - evaluation[1].astype(np.float64)) * scale
                    line += f", eval mse {np.mean(d * d):.5f} ({len(evaluation[1])} samples)"
                else:
                    acc = float(np.mean(np.argmax(logits, axis=1) == evaluation[1]))
                    line += f", eval accuracy {100 * acc:.2f}% ({len(evaluation[1])} samples)"
            print(line, flush=True)
            guard = trainer.guard_stats()
            print(f"epoch {epoch}: {guard_summary(guard)}", flush=True)
        if params_tmp:   # also after a diverging run: nothing learned is lost
            np.savez(params_tmp, **trainer.params())
            print(f"wrote {npy_name(a.save_params, '.npz')} (trained parameters; tinyc export "
                  "turns them into ONNX)")
    return guard


def guard_summary(guard) -> str:
    """The training guard's counters (runtime_c/include/tinyc/train.h), totals so far."""
    return (f"guard: {guard.steps_skipped} of {guard.steps} steps skipped (lr, loss or logit "
            f"gradient not finite), {guard.refused} of {guard.updates} channel updates refused "
            f"({guard.refused_nonfinite} non-finite gradient, {guard.refused_saturation} "
            f"saturation) in {guard.steps_guarded} steps")


def check_divergence(guard, lr: float, allow: bool) -> None:
    """A run diverged when the guard acted at all: a step skipped or an update refused (at the
    default lr the guard stays silent: README, On-device training)."""
    if not (guard.steps_skipped or guard.refused):
        return
    what = (f"the guard skipped {guard.steps_skipped} steps and refused {guard.refused} "
            f"channel updates (in {guard.steps_guarded} of {guard.steps} steps)")
    if allow:
        print(f"training diverged at lr {lr:g}: {what}; --allow-divergence: exit status 0")
        return
    raise TinycError(f"training diverged at lr {lr:g}: {what}; try a lower --lr (e.g. "
                     f"{lr / 10:g}), or pass --allow-divergence to accept the run")


def emulate_training_qemu(a, rep: dict, x, y, evaluation, lr: float, schedule: str,
                          params_tmp: str | None):
    """The training demo firmware under QEMU over --train-data (the host's step order), then the
    same steps on the host build: parameters bit for bit, losses and accuracy compared."""
    from .targets.firmware_train import TrainingData, compare, host_training
    from .targets.host import _compiler
    from .targets.qemu import QemuError, run_qemu_training

    board = board_of_report(rep)
    data = TrainingData.make(x, y, a.epochs, lr, *(evaluation or (None, None)),
                             lr_schedule=schedule)
    timeout = a.timeout or 300.0 + 5.0 * data.steps
    with _progress(data.steps, f"{board.qemu_machine} training steps") as bar:
        demo, params = run_qemu_training(a.out, board, rep, data, timeout=timeout,
                                         progress=lambda k: bar.update(k - bar.n))
    unit = demo.unit
    per_epoch = data.steps // a.epochs
    losses = demo.losses
    for epoch in range(1, a.epochs + 1):
        part = slice((epoch - 1) * per_epoch, epoch * per_epoch)
        print(f"epoch {epoch}: loss {float(np.mean(losses[part])):.4f}, "
              f"{np.mean(demo.counts[part]):,.0f} {unit} per training step (firmware)")
        if epoch <= len(demo.guard):
            print(f"epoch {epoch}: {guard_summary(demo.guard[epoch - 1])} (firmware)")
    if len(demo.guard) != a.epochs:
        raise QemuError(f"the training firmware printed the guard's counters for "
                        f"{len(demo.guard)} of {a.epochs} epochs")
    which = "eval" if evaluation is not None else "training"
    print(f"accuracy after training: {100 * demo.accuracy:.2f}% ({demo.correct} of "
          f"{demo.evaluated} {which} samples, firmware)")
    print(f"{unit} per training step: mean {np.mean(demo.counts):,.0f}, min {min(demo.counts):,}, "
          f"max {max(demo.counts):,} ({data.steps} steps on {board.qemu_machine})")
    print(f"stack: {demo.train_stack_used:,} of {demo.stack_size:,} bytes used by a training step "
          f"(main included), {demo.stack_used:,} at most overall")
    check_train_stack(board, demo)
    if a.profile:
        print_profile(a.out, rep, demo.profile, unit, True, demo.counts[0])
    if params_tmp:
        np.savez(params_tmp, **params)
        print(f"wrote {npy_name(a.save_params, '.npz')} (trained parameters; tinyc export "
              "turns them into ONNX)")
    try:
        _compiler()
    except TinycError as e:
        print(f"not compared with the host build: {e}")
        return demo.guard[-1]
    host = host_training(a.out, data)
    cmp = compare(demo, params, host)
    losses_text = ("identical bits" if cmp.losses_identical
                   else f"max relative difference {cmp.loss_max_rel_diff:.1e} (the loss's logf: "
                        "newlib's and the host C library's may differ in the last bit)")
    if not cmp.ok:
        raise QemuError(
            f"the firmware's training differs from the host build's on the same {data.steps} "
            f"steps: parameters {'identical' if cmp.params_identical else 'differ: ' + ', '.join(cmp.differing[:5])}; "
            f"losses: {losses_text}; accuracy {demo.correct}/{demo.evaluated} vs host "
            f"{host.correct}/{host.evaluated}; learning rates "
            f"{'identical' if cmp.rates_identical else 'differ'}; guard counters "
            f"{'identical' if cmp.guard_identical else f'{demo.guard[-1]} vs host {host.guard}'}")
    print(f"host check: after {data.steps} steps the {len(params)} trained parameter tensors are "
          f"bit-identical to the host build's; losses: {losses_text}; same learning rates (bits), "
          "accuracy and guard counters")
    return demo.guard[-1]


def check_train_stack(board, demo) -> None:
    """The stack reserve must cover the deepest training step measured on the painted stack."""
    import warnings as _w
    if demo.train_stack_used is None or demo.stack_size is None:
        return
    if demo.train_stack_used >= demo.stack_size:
        raise TinycError(f"board '{board.id}': a training step used all {demo.stack_size:,} bytes "
                         "of the stack (painted stack); raise the board's stack_reserve_bytes")
    if demo.train_stack_used > 0.75 * demo.stack_size:
        _w.warn(f"board '{board.id}': a training step used {demo.train_stack_used:,} of "
                f"{demo.stack_size:,} stack bytes (over 75%); consider a larger "
                "stack_reserve_bytes", stacklevel=2)


DEVICE_ACTIONS = ("info", "infer", "train", "pull", "push", "reset", "stats", "save", "restore",
                  "storage")
# the options each action takes (others given are an error, not ignored)
DEVICE_OPTIONS = {"infer": {"input", "output"}, "pull": {"output"}, "push": {"params", "save"},
                  "train": {"train_data", "epochs", "lr", "lr_schedule", "reset", "save_params",
                            "save"}}
DEVICE_REQUIRED = {"infer": ("input",), "pull": ("output",), "push": ("params",),
                   "train": ("train_data",)}
DEVICE_DEFAULTS = {"input": None, "output": None, "train_data": None, "epochs": 1, "lr": None,
                   "lr_schedule": None,
                   "reset": False, "save_params": None, "params": None, "save": False}


def cmd_device(a) -> int:
    """`tinyc device OUT --port P ACTION`: one action on a running firmware over the link."""
    from .outdir import using

    rep = load_report(a.out)
    allowed = DEVICE_OPTIONS.get(a.action, set())
    extra = [k for k, v in DEVICE_DEFAULTS.items() if getattr(a, k) != v and k not in allowed]
    if extra:
        raise TinycError(f"tinyc device {a.action} takes no --{extra[0].replace('_', '-')}")
    for k in DEVICE_REQUIRED.get(a.action, ()):
        if getattr(a, k) is None:
            raise TinycError(f"tinyc device {a.action} needs --{k.replace('_', '-')}")
    training = "training" in rep
    if a.action in ("train", "pull", "push") and not training:
        raise TinycError(f"{a.out}: built without --train; its firmware has no trained "
                         f"parameters (rebuild with --train SCHEME for `device {a.action}`)")
    if a.action == "train" and rep["training"].get("loss") == "mse":
        raise TinycError("tinyc device train takes class labels: a --loss mse build cannot "
                         "train over the link yet")
    if a.storage and not a.qemu:
        raise TinycError("--storage is the emulated board's flash: use it with --qemu (a real "
                         "board keeps its own)")
    if a.qemu:
        from .targets.qemu import QemuLink
        board = board_of_report(rep)
        storage = Path(a.storage) if a.storage else None
        with using(a.out), QemuLink(a.out, board, rep, timeout=a.timeout,
                                    storage=storage) as link:
            return device_action(a, rep, link.device)
    from .device import Device
    with Device(a.port, baudrate=a.baud, timeout=a.timeout) as dev:
        return device_action(a, rep, dev)


def device_action(a, rep: dict, dev) -> int:
    from .calib import load_array
    from .outdir import atomic_output

    info = dev.check_build(a.out)
    from .targets.platformio import model_dir
    table = (json.loads((model_dir(a.out) / "train_params.json").read_text())
             if "training" in rep else [])
    if a.action == "info":
        print(f"device     {dev.port}: link protocol {info.version}, build id "
              f"0x{info.build_id:08x} (= {a.out})")
        print(f"model      input {info.input_size} B, output {info.output_size} B, arena "
              f"{info.arena_bytes:,} B, {info.layers} layers")
        if info.training:
            print(f"training   {info.classes} classes, {info.params} trained tensors, "
                  f"{info.param_bytes:,} B ({info.param_sram_bytes:,} B in SRAM), step "
                  f"{dev.step()}")
        print(f"link       frames up to {info.max_payload} B of payload (buffer "
              f"{info.link_buffer_bytes} B); persistent storage: "
              f"{dev.storage().describe() if info.storage else 'not in this build'}; costs in "
              f"{info.unit}")
    elif a.action == "infer":
        with atomic_output(npy_name(a.output, ".npy"), ".npy", "--output") if a.output \
                else contextlib.nullcontext() as tmp:
            xq = model_inputs(rep, load_array(a.input), a.input)
            ys = []
            for i, x in enumerate(xq):
                y, cost = dev.infer(x.reshape(-1))
                ys.append(y)
                print(f"sample {i}: argmax {int(np.argmax(y))}, {cost:,} {info.unit}")
            y = np.stack(ys).reshape((len(xq),) + tuple(rep["output"]["shape"][1:]))
            if tmp:
                np.save(tmp, y)
        if a.output:
            print(f"wrote {npy_name(a.output, '.npy')} int8 {tuple(y.shape)}")
    elif a.action == "train":
        device_train(a, rep, dev, info, table)
    elif a.action == "pull":
        with atomic_output(npy_name(a.output, ".npz"), ".npz", "--output") as tmp:
            np.savez(tmp, **dev.pull(table))
        print(f"wrote {npy_name(a.output, '.npz')} ({info.param_bytes:,} B of trained "
              f"parameters in {info.params} tensors, step {dev.step()})")
    elif a.action == "push":
        try:
            params = dict(np.load(a.params, allow_pickle=False))
        except (OSError, ValueError, EOFError) as e:
            raise TinycError(f"{a.params}: not a readable .npz of parameters ({e})") from None
        dev.push(params, table)
        print(f"pushed {info.param_bytes:,} B of trained parameters from {a.params}")
        if a.save:
            print(f"saved: {dev.save().describe()}")
    elif a.action == "storage":
        print(f"storage    {dev.storage().describe()}")
    elif a.action == "reset":
        dev.reset_params()
        print("the device is back to its built parameters (step 0)")
    elif a.action == "stats":
        s = dev.stats()
        print(f"link       {s.frames} frames, {s.errors} errors, {s.skipped_bytes} bytes skipped")
        print(f"last cost  inference {s.last_infer_cost:,}, training step "
              f"{s.last_train_cost:,} {info.unit}")
        if info.training:
            print(f"training   step {s.step}; guard: {s.steps_skipped} of {s.steps} steps "
                  f"skipped, {s.refused_nonfinite + s.refused_saturation} of {s.updates} "
                  f"channel updates refused")
        for layer, count in sorted(s.profile.items()):
            if count:
                print(f"profile    layer {layer}: {count:,} {info.unit}")
    elif a.action in ("save", "restore"):
        st = (dev.save if a.action == "save" else dev.restore)()
        print(f"{a.action}d the trained parameters: {st.describe()}")
    return 0


def device_train(a, rep: dict, dev, info, table) -> None:
    """Training steps over the link, in the step order of tinyc emulate --train-data."""
    from .outdir import atomic_output
    from .targets.firmware_train import training_order

    x, y = labelled_data(rep, a.train_data)
    lr = a.lr if a.lr is not None else rep["training"]["lr"]
    schedule = a.lr_schedule or lr_schedule.of_report(rep)
    save = (atomic_output(npy_name(a.save_params, ".npz"), ".npz", "--save-params")
            if a.save_params else contextlib.nullcontext())
    with save as params_tmp:
        if a.reset:
            dev.reset_params()
        order = training_order(len(x), a.epochs)
        # the rate of each step, sent with it (the run: these epochs x samples steps)
        rates = lr_schedule.rates(lr, schedule, len(order))
        print(f"training   {len(order):,} steps over the link, "
              f"{lr_schedule.describe(lr, schedule, len(order))}", flush=True)
        per_epoch = len(x)
        losses, costs, last = [], [], None
        with _progress(len(order), "training steps over the link") as bar:
            for k, i in enumerate(order):
                last = dev.train(x[i].reshape(-1), int(y[i]), float(rates[k]))
                losses.append(last.loss)
                costs.append(last.cost)
                bar.update(1)
                if (k + 1) % per_epoch == 0:
                    part = np.asarray(losses[-per_epoch:])
                    finite = part[np.isfinite(part)]
                    print(f"epoch {(k + 1) // per_epoch}: loss "
                          f"{finite.mean() if len(finite) else float('nan'):.4f}, "
                          f"{np.mean(costs[-per_epoch:]):,.0f} {info.unit} per training step; "
                          f"guard: {last.skipped} of {last.steps} steps skipped, {last.refused} "
                          f"channel updates refused", flush=True)
        print(f"device at step {last.step}")
        if params_tmp:
            np.savez(params_tmp, **dev.pull(table))
            print(f"wrote {npy_name(a.save_params, '.npz')} (trained parameters)")
        if a.save:
            print(f"saved: {dev.save().describe()}")


def cmd_fleet(a) -> int:
    """`tinyc fleet serve OUT --rounds R` / `tinyc fleet join OUT --host|--qemu|--port P`."""
    from .outdir import atomic_output
    rep = load_report(a.out)
    if "training" not in rep:
        raise TinycError(f"{a.out}: built without --train; a fleet shares trained parameters "
                         "(rebuild with --train SCHEME)")
    if rep["training"].get("loss") == "mse":
        raise TinycError("tinyc fleet takes class labels: a --loss mse build cannot learn in a "
                         "fleet yet")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # Flower's dependencies' deprecations
            from . import fleet
    except ImportError as e:   # a broken Flower install
        raise TinycError(f"tinyc fleet needs Flower (pip install 'tinyc[fleet]'): {e}") from None
    if a.fleet_action == "serve":
        with (atomic_output(npy_name(a.save_params, ".npz"), ".npz", "--save-params")
              if a.save_params else contextlib.nullcontext()) as tmp:
            fleet.serve(a.out, a.rounds, a.address, a.devices, a.strategy, lr=a.lr,
                        epochs=a.epochs, proximal_mu=a.mu, wait_timeout=a.timeout, save=tmp,
                        eval_every=a.eval_every)
        if a.save_params:
            print(f"wrote {npy_name(a.save_params, '.npz')} (the fleet's trained elements)")
        return 0
    return fleet_join(a, rep, fleet)


def fleet_join(a, rep: dict, fleet) -> int:
    from .outdir import atomic_output, using
    if a.storage and not a.qemu:
        raise TinycError("--storage is the emulated board's flash: use it with --qemu")
    if a.save and a.host:
        raise TinycError("--save keeps the parameters in a device's flash: the host build has "
                         "none (use --save-params)")
    x, y = labelled_data(rep, a.data)
    ex, ey = labelled_data(rep, a.eval_data) if a.eval_data else (None, None)
    layout = fleet.ParamLayout.from_build(a.out)
    save = (atomic_output(npy_name(a.save_params, ".npz"), ".npz", "--save-params")
            if a.save_params else contextlib.nullcontext())
    with save as params_tmp, using(a.out):
        if a.host:
            backend = fleet.HostBackend(a.out)
        elif a.qemu:
            backend = fleet.DeviceBackend.qemu(a.out, rep, storage=a.storage, timeout=a.timeout)
        else:
            from .device import Device
            dev = Device(a.port, baudrate=a.baud, timeout=a.timeout)
            try:
                backend = fleet.DeviceBackend(dev, a.out)
            except BaseException:
                dev.close()
                raise
        try:
            name = backend.name
            client = fleet.FleetClient(
                backend, layout, x, y, lr=a.lr if a.lr is not None else rep["training"]["lr"],
                lr_schedule=lr_schedule.of_report(rep),
                epochs=a.epochs, eval_x=ex, eval_y=ey, seed=a.seed,
                output_q=(rep["output"]["scale"], rep["output"]["zero_point"]),
                log=lambda m: print(f"{name}: {m}", flush=True))
            print(f"fleet      {name} joins {a.server} with {len(y):,} samples of its own; "
                  f"{layout.count:,} trained elements ({layout.nbytes:,} B) cross per round "
                  f"and direction; each round's local steps: "
                  f"{lr_schedule.describe(client.lr, client.lr_schedule)}", flush=True)
            fleet.join(client, a.server, retries=max(1, int(a.timeout)))
            print(f"fleet      done after {client.rounds} rounds: {client.bytes_down:,} B "
                  f"received, {client.bytes_up:,} B sent", flush=True)
            if params_tmp:
                np.savez(params_tmp, **backend.pull())
            if a.save:
                print(f"saved: {backend.save().describe()}")
        finally:
            backend.close()
    if a.save_params:
        print(f"wrote {npy_name(a.save_params, '.npz')} (the device's trained parameters)")
    return 0


def cmd_report(a) -> int:
    rep = load_report(a.out)
    print(printable(summary(rep)))
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
        try:
            plot_arena(rep, a.plot)
        except (OSError, ValueError) as e:   # an unwritable path, an unknown image suffix
            raise TinycError(f"--plot {a.plot}: cannot write it ({e})") from e
        print(f"wrote {a.plot}")
    return 0


def _print_hidden(rows: list[dict]) -> None:
    patches = len({tuple(r["patch"]) for r in rows})
    print(f"{'':>4} ... ops {rows[0]['index']}-{rows[-1]['index']}: the same layers on "
          f"{patches} more patches, {sum(r['macs'] for r in rows):,} MACs")


def cmd_export(a) -> int:
    from .build import check_recorded_inputs, compile_graph, options_from_report
    from .export.onnx_export import export_onnx
    from .outdir import atomic_output
    from .passes.autodiff import set_parameters
    from .pipeline import forward_graph

    rep = load_report(a.out)
    if "training" not in rep:
        raise TinycError(f"{a.out}: built without --train; there are no trained parameters")
    try:
        params = dict(np.load(a.params, allow_pickle=False))
    except (OSError, ValueError, EOFError) as e:
        raise TinycError(f"{a.params}: not a readable .npz of parameters ({e})") from e
    check_recorded_inputs(rep, a.out)   # the same model and data as the build's
    model, opts = options_from_report(rep)
    with atomic_output(a.output, ".onnx", "-o") as tmp:   # a bad -o fails before the work
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # the build already warned about its calibration
            g = compile_graph(model, opts)
        set_parameters(g, params, a.params)
        export_onnx(forward_graph(g), tmp)
    print(f"wrote {a.output}: {model} with the parameters of {a.params}")
    return 0


def cmd_boards(a) -> int:
    from .targets.boards import list_boards
    print(f"{'id':<14} {'SRAM budget':>11} {'flash budget':>12} {'chip SRAM/flash':>17}  "
          f"{'cpu':<14} {'fpu':<12} name")
    for b in list_boards():
        chip = (f"{b.sram_total_bytes // 1024} / {b.flash_total_bytes // 1024} KB"
                if b.sram_total_bytes else "-")
        print(f"{b.id:<14} {b.sram_bytes // 1024:>8} KB {b.flash_bytes // 1024:>9} KB "
              f"{chip:>17}  {b.cpu:<14} {b.fpu:<12} {b.name}")
        if a.verbose and b.memory:
            m = b.memory
            print(f"{'':14} linker: FLASH 0x{m.flash_origin:08x} +{m.flash_length:,}  RAM "
                  f"0x{m.ram_origin:08x} +{m.ram_length:,}; stack {b.stack_reserve_bytes:,} B; "
                  f"console {b.firmware.console}; counter {b.counter_unit}")
            if b.qemu_machine:
                print(f"{'':14} QEMU machine {b.qemu_machine}")
            if b.platformio.get("platform"):
                pio = b.platformio
                print(f"{'':14} PlatformIO (online): platform {pio['platform']}, board "
                      f"{pio.get('board', b.id)}, upload_protocol {pio.get('upload_protocol', '-')}")
            for p in b.protocols:
                default = " (default)" if p.name == b.upload_default else ""
                print(f"{'':14} upload {p.name}{default}: {p.command}")
    return 0


def quiet_broken_pipe() -> int:
    """The reader of stdout went away (`tinyc report out | head -1`): stop quietly. stdout is
    pointed at /dev/null so that Python's flush at exit finds no closed pipe."""
    import os
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141   # 128 + SIGPIPE, as a tool killed by the closed pipe


def main(argv=None) -> int:
    from .procs import Terminated, install_signal_handlers, kill_all

    args = parser().parse_args(argv)
    warnings.simplefilter("always")
    warnings.formatwarning = lambda msg, cat, *rest: f"tinyc: warning: {printable(str(msg))}\n"
    commands = {"build": cmd_build, "emulate": cmd_emulate, "flash": cmd_flash,
                "report": cmd_report, "boards": cmd_boards, "export": cmd_export,
                "device": cmd_device, "fleet": cmd_fleet}
    install_signal_handlers()
    try:
        status = commands[args.command](args)
        sys.stdout.flush()   # here, where a closed pipe is caught
        return status
    except BrokenPipeError:
        kill_all()
        return quiet_broken_pipe()
    except TinycError as err:
        if args.debug:
            raise
        print(f"tinyc: error: {printable(str(err), err.multiline)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        kill_all()
        return 130
    except Terminated as sig:   # SIGTERM, SIGHUP, SIGINT: children killed, staging removed
        kill_all()
        return 128 + sig.signum
    except Exception as err:  # an internal error: say so plainly
        if args.debug:
            raise
        print(f"tinyc: internal error: {type(err).__name__}: {printable(str(err))}\n"
              "rerun with --debug for the traceback and report it", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
