"""`tinyc build` as a function: (model, board, options) -> output folder + report.

Steps: import + quantize (pipeline.py), choose the schedule (layer by layer or a patch-based
prefix, memory/schedule.py) and plan its memory, generate C, optional .tflite export (of the
layer-by-layer int8 graph: the same numbers), then a report checked against the board. A model
that does not fit is refused with a breakdown, after report.json is written so the user can
inspect it.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import TinycError
from .ir import Graph
from .targets.boards import Board

# Everything the generated model keeps in flash besides code: int8 weights, int32 biases and the
# per-channel int32 multipliers and shifts.
PER_CHANNEL_CONST_BYTES = 8


class DoesNotFitError(TinycError):
    pass


@dataclass
class BuildOptions:
    calib: str | None = None
    calib_mean: tuple = (0.5, 0.5, 0.5)
    calib_std: tuple = (0.5, 0.5, 0.5)
    calib_limit: int = 100
    input_shape: tuple | None = None
    export_tflite: bool = False
    patch: str = "auto"          # auto | off | ROWSxCOLS@NODE (memory/schedule.py)
    sram: int | None = None      # SRAM budget (arena + stack reserve) for --patch auto


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
            "output_shape": list(out.shape), "output_bytes": out.nbytes,
            "output_offset": plan.tensor_offsets[node.outputs[0]],
            "macs": g.macs(node),
            "weights_bytes": sum(g.tensors[t].nbytes for t in node.inputs[1:]),
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


def check_fits(report: dict) -> None:
    sram_need = report["inference"]["sram_bytes"]
    problems = []
    if sram_need > report["sram_limit_bytes"]:
        problems.append(f"SRAM: needs {sram_need:,} B > {report['sram_limit_bytes']:,} B")
    if report["weights_bytes"] > report["flash_limit_bytes"]:
        problems.append(f"flash: weights need {report['weights_bytes']:,} B > "
                        f"{report['flash_limit_bytes']:,} B")
    if not problems:
        return
    lines = [f"the model does not fit board '{report['board']}' ({report['board_name']}): "
             + "; ".join(problems), "SRAM breakdown:",
             f"  arena (activations + scratch)  {report['inference']['arena_bytes']:>10,} B",
             f"  stack reserve                  {report['stack_reserve_bytes']:>10,} B",
             "largest buffers alive at the peak:"]
    for b in peak_buffers(report)[:8]:
        lines.append(f"  {b['size']:>10,} B  {b['kind']:<10} {', '.join(b['tensors']) or 'scratch of node ' + str(b['node'])}")
    lines.append("fixes: a board with more SRAM/flash, a smaller --input-shape, or a narrower model")
    raise DoesNotFitError("\n".join(lines))


def peak_buffers(report: dict) -> list[dict]:
    """Buffers alive at the step where the arena is fullest, largest first."""
    bufs = report["buffers"]
    steps = range(len(report["ops"]))
    peak = max(steps, key=lambda s: sum(b["size"] for b in bufs if b["first"] <= s <= b["last"]))
    return sorted((b for b in bufs if b["first"] <= peak <= b["last"]), key=lambda b: -b["size"])


def build(model: str, board: Board, out_dir: str, opts: BuildOptions) -> dict:
    from .calib import load_calibration
    from .codegen.c import generate_c
    from .memory.schedule import choose_schedule
    from .passes.patch import PatchSpec
    from .pipeline import check_model_input, import_float, synthetic_calibration
    from .passes.quantize import quantize

    mode = opts.patch if opts.patch in ("auto", "off") else PatchSpec.parse(opts.patch)
    budget = None
    if opts.sram is not None:
        if mode != "auto":
            raise TinycError("--sram chooses a patch schedule: use it with --patch auto")
        budget = opts.sram - board.stack_reserve_bytes
        if budget <= 0:
            raise TinycError(f"--sram {opts.sram}: not even the board's stack reserve "
                             f"({board.stack_reserve_bytes} B) fits")
    g = import_float(model, opts.input_shape)
    if opts.calib:
        raw = load_calibration(opts.calib, g.meta["input_nchw"], opts.calib_mean, opts.calib_std,
                               opts.calib_limit)
        calib = check_model_input(g, raw, f"calibration data {opts.calib}", batch=True)
    else:
        warnings.warn("no --calib data: activation ranges come from uniform noise in [-1, 1]; "
                      "int8 accuracy on real inputs may be poor. Pass --calib FILE.npy|FOLDER",
                      stacklevel=2)
        calib = synthetic_calibration(g)
    gq = quantize(g, calib)
    sched = choose_schedule(gq, mode, budget)
    info = sched.info
    if info["mode"] == "forced" and info["peak_bytes"] >= info["peak_layer_by_layer_bytes"]:
        warnings.warn(f"--patch {opts.patch}: the arena ({info['peak_bytes']:,} B) is not smaller "
                      f"than layer by layer ({info['peak_layer_by_layer_bytes']:,} B); "
                      "--patch auto picks the smallest", stacklevel=2)
    if info.get("fits_budget") is False:
        warnings.warn(f"--sram {opts.sram}: no schedule fits; using the smallest arena "
                      f"({info['peak_bytes']:,} B + {board.stack_reserve_bytes:,} B stack reserve)",
                      stacklevel=2)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tinyc_host").unlink(missing_ok=True)   # never run a previous build's executable
    generate_c(sched.graph, sched.plan, out)
    if opts.export_tflite:
        from .export.tflite import export_tflite
        (out / "model.tflite").write_bytes(export_tflite(gq))
    report = make_report(sched.graph, sched.plan, board, calibrated=bool(opts.calib),
                         patch=sched.info)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    check_fits(report)
    return report
