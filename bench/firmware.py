"""Firmware cost: instructions per inference and per training step under QEMU and the firmware's
RAM and flash, on the six shared models (three networks at 96 and 128 px).

For every model: `tinyc build` (with the firmware) for mps2_an386 with the fixed real-image
calibration of bench/common.py; the firmware's RAM (.data + .bss + stack) and flash read from its
ELF; then the firmware runs under qemu-system-arm -icount shift=0 on evaluation photos, and its
SysTick count gives the instructions per inference (40-instruction resolution, deterministic).
The outputs are checked against the host build of the same C (bit for bit). The same model is
also built and run for mps2_an500 (Cortex-M7): same instruction set, other code generation.

Training: every model is also built with its net's largest published sparse-update scheme
(bench/training_memory.py's SCHEMES) and a new 10-class head for mps2_an386. Where that build
fits the 256 KB board, its training demo firmware runs under QEMU for --train-steps steps on
evaluation photos (labels 0, 1, ... in turn) and SysTick gives the instructions per
tinyc_train_step(); the trained parameters are checked against the host build's (HostTrainer on
the same steps), bit for bit. The stack a training step used (painted stack) is recorded next to
the worst case from GCC's call graph.

Instructions are not cycles: QEMU models no pipeline, wait states or caches.

Usage (repository root, venv active):
    python bench/firmware.py [--keep DIR] [--samples N] [--train-steps N]
Writes bench/results/firmware.md and .json and prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import numpy as np  # noqa: E402

BOARDS = ("mps2_an386", "mps2_an500")
CLASSES = 10          # the new head of the training builds
TRAIN_LR = 0.02


def build_firmware(onnx_path: Path, board_id: str, out: Path, calib: Path) -> dict:
    from tinyc.build import BuildOptions, DoesNotFitError, build
    from tinyc.targets.boards import load_board

    opts = BuildOptions(calib=str(calib), calib_limit=10_000, firmware=True)
    try:
        rep = build(str(onnx_path), load_board(board_id), str(out), opts)
        rep["fits"] = True
    except DoesNotFitError as e:   # nothing was written: the refused report is elsewhere
        rep = refused_report(e)
    return rep


def refused_report(e) -> dict:
    """The report of a refused build (in the temporary folder; none when refused before
    compiling), with 'fits' and the refusal's first line."""
    path = getattr(e, "report_path", None)
    rep = json.loads(Path(path).read_text()) if path else {}
    return {**rep, "fits": False, "refusal": str(e).splitlines()[0]}


def build_training_firmware(onnx_path: Path, out: Path, calib: Path, scheme: dict) -> dict:
    from tinyc.build import BuildOptions, DoesNotFitError, build
    from tinyc.targets.boards import load_board

    opts = BuildOptions(calib=str(calib), calib_limit=10_000, firmware=True, train=scheme,
                        num_classes=CLASSES)
    try:
        rep = build(str(onnx_path), load_board(BOARDS[0]), str(out), opts)
        rep["fits"] = True
    except DoesNotFitError as e:   # nothing was written: the refused report is elsewhere
        rep = refused_report(e)
    return rep


def run_training(out: Path, rep: dict, x_nchw: np.ndarray) -> dict:
    """The training demo under QEMU for len(x_nchw) steps (one epoch, labels k % CLASSES), and
    the host build on the same steps."""
    from tinyc.build import int8_inputs
    from tinyc.targets.boards import load_board
    from tinyc.targets.firmware_train import TrainingData, compare, host_training
    from tinyc.targets.qemu import run_qemu_training

    inp = rep["input"]
    xq = int8_inputs(x_nchw, inp["shape_nchw"], inp["scale"], inp["zero_point"], "train")
    data = TrainingData.make(xq, np.arange(len(xq)) % CLASSES, 1, TRAIN_LR)
    t0 = time.time()
    demo, params = run_qemu_training(out, load_board(BOARDS[0]), rep, data, timeout=1800)
    wall = time.time() - t0
    cmp = compare(demo, params, host_training(out, data))
    return {"train_instructions": demo.counts, "losses": demo.losses.tolist(),
            "train_stack_used_bytes": demo.train_stack_used, "train_qemu_wall_s": wall,
            "params_bit_exact_vs_host": cmp.params_identical,
            "loss_max_rel_diff_vs_host": cmp.loss_max_rel_diff}


def run(out: Path, board_id: str, rep: dict, x_nchw: np.ndarray) -> dict:
    from tinyc.build import int8_inputs
    from tinyc.targets.boards import load_board
    from tinyc.targets.host import run_host
    from tinyc.targets.qemu import run_qemu

    inp = rep["input"]
    xq = int8_inputs(x_nchw, inp["shape_nchw"], inp["scale"], inp["zero_point"], "eval")
    t0 = time.time()
    y, demo = run_qemu(out, load_board(board_id), rep, xq, timeout=1800)
    wall = time.time() - t0
    host = run_host(out, xq).reshape(len(xq), -1)
    return {"instructions": demo.counts, "stack_used_bytes": demo.stack_used,
            "qemu_wall_s": wall, "bit_exact_vs_host": bool(np.array_equal(y, host))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", help="build into this folder and keep it (default: a temp dir)")
    ap.add_argument("--samples", type=int, default=2, help="evaluation photos per model (2)")
    ap.add_argument("--train-steps", type=int, default=4,
                    help="training steps per model (4; one per evaluation photo)")
    args = ap.parse_args()
    common.require_firmware_tools()
    prov = common.provenance()
    prov["firmware_tools"] = tool_versions()
    t_start = time.time()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tinyc-bench-fw-"))
    work.mkdir(parents=True, exist_ok=True)
    all_evals = common.eval_samples()
    evals = all_evals[:args.samples]
    train_evals = all_evals[:args.train_steps]
    from training_memory import largest_scheme
    rows = []
    for onnx_path in common.model_paths():
        name = onnx_path.stem
        hw = common.model_hw(onnx_path)
        calib = common.write_calibration(work / f"calib_{hw[0]}x{hw[1]}.npy", hw)
        x = common.render(evals, hw)
        row = {"model": name}
        for board_id in BOARDS:
            out = work / name / board_id
            rep = build_firmware(onnx_path, board_id, out, calib)
            entry = {"fits": rep["fits"], "macs": rep["macs"],
                     "arena_bytes": rep["inference"]["arena_bytes"],
                     "weights_bytes": rep["weights_bytes"]}
            if rep["fits"]:
                fw = rep["firmware"]
                entry.update({k: fw[k] for k in ("ram_bytes", "flash_bytes", "ram_sections",
                                                 "flash_sections", "stack_bytes",
                                                 "model_const_bytes")})
                entry.update(run(out, board_id, rep, x))
            else:
                entry["refusal"] = rep["refusal"]
            row[board_id] = entry
            print(f"{name} {board_id}: " + (f"{np.mean(entry['instructions']):,.0f} instructions"
                                            if rep["fits"] else entry["refusal"]), flush=True)
        net = name.rsplit("_", 1)[0]
        scheme = largest_scheme(net)
        scheme_name = scheme["name"]
        out = work / name / "train"
        rep = build_training_firmware(onnx_path, out, calib, scheme)
        entry = {"scheme": scheme_name, "fits": rep["fits"],
                 "training_sram_bytes": rep["training"]["sram_bytes"],
                 "params_sram_bytes": rep["training"]["params_sram_bytes"]}
        if rep["fits"]:
            fw = rep["firmware"]
            entry.update({k2: fw[k2] for k2 in ("ram_bytes", "flash_bytes", "ram_sections",
                                                "flash_sections", "stack_bytes",
                                                "stack_worst_case_bytes", "train_step_stack_bytes")})
            entry.update(run_training(out, rep, common.render(train_evals, hw)))
        else:
            entry["refusal"] = rep["refusal"]
        row["train"] = entry
        print(f"{name} train ({scheme_name}): "
              + (f"{np.mean(entry['train_instructions']):,.0f} instructions per step"
                 if rep["fits"] else entry["refusal"]), flush=True)
        rows.append(row)
    runtime = time.time() - t_start
    write_results(rows, prov, runtime, args.samples, args.train_steps)


def tool_versions() -> str:
    import subprocess
    from importlib import metadata

    def first_line(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "unknown"
    return (f"{first_line(['arm-none-eabi-gcc', '--version'])}; "
            f"{first_line(['qemu-system-arm', '--version'])}; "
            f"platformio {metadata.version('platformio')}, scons {metadata.version('scons')}")


def write_results(rows: list[dict], prov: dict, runtime: float, n: int, steps: int) -> None:
    main_b, m7 = BOARDS
    table = []
    for r in rows:
        a = r[main_b]
        if not a["fits"]:
            table.append([r["model"], f"{a['macs']:,}", "does not fit: " + a["refusal"]]
                         + [""] * 8)
            continue
        ins = a["instructions"]
        mean = float(np.mean(ins))
        b = r[m7]
        m7_mean = float(np.mean(b["instructions"])) if b.get("fits") else None
        table.append([
            r["model"], f"{a['macs']:,}", f"{mean:,.0f}", f"{max(ins) - min(ins):,}",
            f"{mean / a['macs']:.2f}",
            f"{a['ram_bytes']:,}", f"{a['arena_bytes']:,}", f"{a['flash_bytes']:,}",
            f"{a['model_const_bytes']:,}", f"{a['stack_used_bytes']:,} / {a['stack_bytes'] - 32:,}",
            f"{m7_mean:,.0f}" if m7_mean else "-",
        ])
    exact = all(r[b]["bit_exact_vs_host"] for r in rows for b in BOARDS if r[b].get("fits"))
    header = ["model", "MACs", "instructions / inference", "spread", "instructions / MAC",
              "firmware RAM B", "of which arena B", "firmware flash B", "of which model constants B",
              "stack used / size B", "M7 (mps2_an500) instructions"]
    train_table = []
    for r in rows:
        t = r["train"]
        if not t["fits"]:
            train_table.append([r["model"], t["scheme"], f"{t['training_sram_bytes']:,}",
                                "does not fit: " + t["refusal"].split(": ", 1)[-1]] + [""] * 6)
            continue
        ins = t["train_instructions"]
        mean = float(np.mean(ins))
        infer = r[main_b].get("instructions")
        train_table.append([
            r["model"], t["scheme"], f"{t['training_sram_bytes']:,}", f"{t['ram_bytes']:,}",
            f"{t['flash_bytes']:,}", f"{mean:,.0f}", f"{max(ins) - min(ins):,}",
            f"{mean / float(np.mean(infer)):.2f}" if infer else "-",
            f"{t['train_stack_used_bytes']:,} / {t['stack_worst_case_bytes']:,} / "
            f"{t['stack_bytes'] - 32:,}",
            "yes" if t["params_bit_exact_vs_host"] else "NO",
        ])
    train_header = ["model", "scheme (largest published)", "training.sram_bytes (plan)",
                    "firmware RAM B", "firmware flash B", "instructions / training step",
                    "spread", "training step / inference", "stack B: used / worst case / size",
                    "parameters == host"]
    train_exact = all(r["train"]["params_bit_exact_vs_host"] for r in rows if r["train"]["fits"])
    loss_rel = max((r["train"]["loss_max_rel_diff_vs_host"] for r in rows if r["train"]["fits"]),
                   default=0.0)
    md = "\n\n".join([
        "# Firmware: instructions per inference and per training step, and memory, on the "
        "emulated Cortex-M4 (mps2_an386)",
        common.provenance_md(prov, runtime) + f"\n- {prov['firmware_tools']}\n- board: mps2_an386 (QEMU 7.2 -icount shift=0, "
        "Cortex-M4F, 256 KB SRAM / 1 MB flash budget); firmware built offline with PlatformIO "
        "6.2.0 and Debian's arm-none-eabi-gcc at -O2 (tinyc's local platform); calibration: the "
        "fixed real-image set of bench/common.py",
        f"Each model is measured on the first {n} evaluation photos of bench/common.py. "
        "*instructions / inference*: the mean of the SysTick counts the demo firmware prints "
        "(one tick = 40 instructions at -icount shift=0, so counts are multiples of 40); "
        "*spread*: max - min over the photos (the kernels' clamps and branches depend on the "
        "data); *instructions / MAC*: the mean over the model's multiply-accumulates (conv, "
        "depthwise, fully connected). *firmware RAM*: .data + .bss (the arena, console buffers, "
        "counters) + the stack section, from the ELF; *firmware flash*: code + constants + "
        "initial data, from the ELF; *model constants*: the weights, biases, per-channel "
        "multipliers and shifts and layer parameters of model.c (sizes of their symbols in the "
        "ELF). *stack used*: the high-water mark of the painted stack "
        "(the MPU guard's 32 bytes excluded from the size). The last column is the same model "
        "built for the Cortex-M7 machine.",
        common.md_table(header, table),
        f"Outputs under QEMU equal the host build's bit for bit on every model and board: "
        f"{exact}.",
        "## Training step (on-device training firmware, mps2_an386)",
        f"Each model built with `--train` and its net's largest published sparse-update scheme "
        f"(bench/training_memory.py) and a new {CLASSES}-class head. The training demo firmware "
        f"runs {steps} steps (one per evaluation photo, labels 0, 1, ... in turn, lr {TRAIN_LR}) "
        "under QEMU. *instructions / training step*: the mean SysTick count around "
        "tinyc_train_step() (int8 forward pass, loss, float32 backward pass, in-place updates); "
        "*training step / inference*: that over the inference count of the table above. "
        "*firmware RAM*: .data + .bss (training arena, trained parameters in SRAM, console) + "
        "stack, from the ELF; *training.sram_bytes*: the plan of `tinyc build` (arena + "
        "parameters + stack reserve). *stack used*: the deepest stack of a training step on the "
        "painted stack (main() and the SysTick interrupt included); *worst case*: the bound "
        "from GCC's call graph that `tinyc build` checks against the stack's *size*. A row that "
        "does not fit would show `tinyc build`'s refusal (see training_memory.md).",
        common.md_table(train_header, train_table),
        f"After the steps the trained parameters under QEMU equal the host build's (same steps, "
        f"same lr) bit for bit on every model that fits: {train_exact}. Losses: largest "
        f"relative difference {loss_rel:.1e} (the loss's logf comes from newlib on the board "
        "and from glibc on the host, which may differ in the last bit; the parameters do not "
        "depend on the loss value).",
        "QEMU counts instructions, not cycles: on a real Cortex-M4 the cycle count is higher "
        "(multi-cycle loads, multiplies and branches, flash wait states).",
    ]) + "\n"
    common.RESULTS_DIR.mkdir(exist_ok=True)
    (common.RESULTS_DIR / "firmware.md").write_text(md)
    (common.RESULTS_DIR / "firmware.json").write_text(json.dumps(
        {"provenance": prov, "runtime_s": runtime, "rows": rows}, indent=1))
    print(common.text_table(header, table))
    print(common.text_table(train_header, train_table))
    print(f"wrote {common.RESULTS_DIR / 'firmware.md'}")


if __name__ == "__main__":
    main()
