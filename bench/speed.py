"""Speed: instructions per MAC by layer type on the six shared models, Cortex-M4 and M7 under
QEMU, inference and training step, with tinyc's two kernel variants side by side.

For every model (three networks at 96 and 128 px), with the fixed real-image calibration of
bench/common.py:
- inference, layer by layer (`--patch off`): `tinyc build --profile` for mps2_an386 (Cortex-M4)
  and mps2_an500 (Cortex-M7) with the DSP kernels (`--kernels auto`, the default), and for
  mps2_an386 with the plain C99 ones (`--kernels portable`); `tinyc emulate --qemu --profile`
  on one evaluation photo gives the instructions of every layer (QEMU -icount shift=0, SysTick,
  40-instruction resolution per layer); the outputs are checked against the host build;
- inference with the default schedule (`--patch auto`, the smallest arena): the whole count;
- one training step (the net's largest published sparse-update scheme, a new 10-class head,
  mps2_an386), both kernel variants: the profile of the first step, by phase (forward, backward,
  update) and by layer type, and the trained parameters checked against the host build's.
MACs are the forward pass's (conv, depthwise, fully connected). Instructions, not cycles.
"Before" columns: bench/results/firmware.json at an older git revision (--before REV), the
figures this repository's bench/firmware.py recorded there.

Usage (repository root, venv active):
    python bench/speed.py [--keep DIR] [--models NAME ...] [--before REV]
Writes bench/results/speed.md and .json and prints the tables.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import numpy as np  # noqa: E402

M4, M7 = "mps2_an386", "mps2_an500"
RUNS = ((M4, "auto"), (M7, "auto"), (M4, "portable"))   # (board, kernels), layer by layer
CLASSES = 10
TRAIN_LR = 0.02
# published Tiny Training Engine step times at 128 px, largest scheme (216 MHz Cortex-M7), as
# cycles: the target (shared/models/README.md)
TTE_CYCLES = {"mbv2-w0.35": 80.6e6, "proxyless-w0.3": 95.7e6, "mcunet-5fps": 117.9e6}


def build(onnx_path: Path, out: Path, board_id: str, calib: Path, **opts) -> dict:
    from tinyc.build import BuildOptions, build as tinyc_build
    from tinyc.targets.boards import load_board

    options = BuildOptions(calib=str(calib), calib_limit=10_000, firmware=True, profile=True,
                           **opts)
    return tinyc_build(str(onnx_path), load_board(board_id), str(out), options)


def infer(out: Path, board_id: str, rep: dict, x_nchw: np.ndarray) -> dict:
    from tinyc.build import int8_inputs
    from tinyc.profile import summary
    from tinyc.targets.boards import load_board
    from tinyc.targets.host import run_host
    from tinyc.targets.qemu import run_qemu

    inp = rep["input"]
    xq = int8_inputs(x_nchw, inp["shape_nchw"], inp["scale"], inp["zero_point"], "eval")
    y, demo = run_qemu(out, load_board(board_id), rep, xq, timeout=1800)
    host = run_host(out, xq).reshape(len(xq), -1)
    s = summary(rep, demo.profile, demo.unit, False, demo.counts[0]) if demo.profile else None
    return {"instructions": demo.counts[0], "macs": rep["macs"],
            "by_layer_type": s["by_layer_type"] if s else None,
            "bit_exact_vs_host": bool(np.array_equal(y, host))}


def train(out: Path, rep: dict, x_nchw: np.ndarray) -> dict:
    from tinyc.build import int8_inputs
    from tinyc.profile import summary
    from tinyc.targets.boards import load_board
    from tinyc.targets.firmware_train import TrainingData, compare, host_training
    from tinyc.targets.qemu import run_qemu_training

    inp = rep["input"]
    xq = int8_inputs(x_nchw, inp["shape_nchw"], inp["scale"], inp["zero_point"], "train")
    data = TrainingData.make(xq, np.arange(len(xq)) % CLASSES, 1, TRAIN_LR)
    demo, params = run_qemu_training(out, load_board(M4), rep, data, timeout=3600)
    s = summary(rep, demo.profile, demo.unit, True, demo.counts[0])
    cmp = compare(demo, params, host_training(out, data))
    return {"instructions": demo.counts[0], "by_phase": s["by_phase"],
            "by_layer_type": s["by_layer_type"], "params_bit_exact_vs_host": cmp.params_identical}


def before_figures(rev: str | None) -> dict:
    """bench/results/firmware.json at git revision `rev`: model -> figures."""
    if not rev:
        return {}
    try:
        text = subprocess.run(["git", "-C", str(common.REPO), "show",
                               f"{rev}:bench/results/firmware.json"], capture_output=True,
                              text=True, check=True).stdout
    except subprocess.CalledProcessError as e:
        common.die(f"--before {rev}: {e.stderr.strip()}")
    rows = json.loads(text)["rows"]
    out = {}
    for r in rows:
        out[r["model"]] = {
            "m4_patch_auto": float(np.mean(r[M4]["instructions"])) if r[M4].get("fits") else None,
            "m7_patch_auto": float(np.mean(r[M7]["instructions"])) if r[M7].get("fits") else None,
            "train_step": (float(np.mean(r["train"]["train_instructions"]))
                           if r["train"].get("fits") else None)}
    return {"rev": rev, "models": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", help="build into this folder and keep it (default: a temp dir)")
    ap.add_argument("--models", nargs="*", help="a subset of the shared models (default: all six)")
    ap.add_argument("--before", metavar="REV",
                    help="git revision whose bench/results/firmware.json gives the 'before' "
                         "columns (e.g. 8c5059c)")
    ap.add_argument("--no-train", action="store_true", help="inference only")
    args = ap.parse_args()
    common.require_firmware_tools()
    from training_memory import largest_scheme
    prov = common.provenance()
    before = before_figures(args.before)
    t_start = time.time()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tinyc-bench-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    photo = common.eval_samples()[:1]
    rows = []
    for onnx_path in common.model_paths():
        name = onnx_path.stem
        if args.models and name not in args.models:
            continue
        hw = common.model_hw(onnx_path)
        calib = common.write_calibration(work / f"calib_{hw[0]}x{hw[1]}.npy", hw)
        x = common.render(photo, hw)
        row = {"model": name}
        for board_id, kernels in RUNS:
            out = work / name / f"{board_id}_{kernels}"
            rep = build(onnx_path, out, board_id, calib, patch="off", kernels=kernels)
            row[f"{board_id}_{kernels}"] = infer(out, board_id, rep, x)
            print(f"{name} {board_id} {kernels} layer by layer: "
                  f"{row[f'{board_id}_{kernels}']['instructions']:,} instructions", flush=True)
        for board_id in (M4, M7):
            out = work / name / f"{board_id}_patch"
            rep = build(onnx_path, out, board_id, calib)
            row[f"{board_id}_patch_auto"] = infer(out, board_id, rep, x)
            row[f"{board_id}_patch_auto"]["arena_bytes"] = rep["inference"]["arena_bytes"]
        if not args.no_train:
            net = name.rsplit("_", 1)[0]
            scheme = largest_scheme(net)
            scheme_name = scheme["name"]
            for kernels in ("auto", "portable"):
                out = work / name / f"train_{kernels}"
                rep = build(onnx_path, out, M4, calib, train=scheme, num_classes=CLASSES,
                            kernels=kernels)
                if kernels == "auto":
                    row["train_auto_arena_bytes"] = rep["training"]["arena_bytes"]
                row[f"train_{kernels}"] = {"scheme": scheme_name,
                                           **train(out, rep, common.render(photo * 2, hw))}
                print(f"{name} train {scheme_name} {kernels}: "
                      f"{row[f'train_{kernels}']['instructions']:,} instructions", flush=True)
            # the fastest schedule whose step fits the board (--sram: the fewest MACs that fit;
            # the default above is the smallest arena)
            from tinyc.targets.boards import load_board
            sram = load_board(M4).sram_bytes
            out = work / name / "train_fastest"
            rep = build(onnx_path, out, M4, calib, train=scheme, num_classes=CLASSES, sram=sram)
            row["train_fastest"] = {"scheme": scheme_name, "sram": sram,
                                    "arena_bytes": rep["training"]["arena_bytes"],
                                    "default_arena_bytes": row["train_auto_arena_bytes"],
                                    **train(out, rep, common.render(photo * 2, hw))}
            print(f"{name} train {scheme_name} --sram {sram}: "
                  f"{row['train_fastest']['instructions']:,} instructions", flush=True)
        rows.append(row)
    write_results(rows, before, prov, time.time() - t_start)


def _by_type(rows: list[dict], key: str) -> dict:
    acc: dict = defaultdict(lambda: [0, 0, 0])
    for r in rows:
        for t in r[key]["by_layer_type"]:
            a = acc[t["layer_type"]]
            a[0] += t["layers"]
            a[1] += t["macs"]
            a[2] += t["count"]
    return acc


def write_results(rows: list[dict], before: dict, prov: dict, runtime: float) -> None:
    out_json = common.RESULTS_DIR / "speed.json"
    out_json.write_text(json.dumps({"provenance": prov, "runtime_s": runtime, "before": before,
                                    "rows": rows}, indent=1) + "\n")
    f = "{:,.0f}".format
    lines = ["# Speed: instructions per MAC, tinyc's DSP kernels and plain C99 kernels, Cortex-M4 "
             "and M7 (QEMU)", "", common.provenance_md(prov, runtime), "",
             "Instructions counted by QEMU (`-icount shift=0`, SysTick, 40-instruction "
             "resolution), per layer with `tinyc build --profile` / `tinyc emulate --qemu "
             "--profile` on one evaluation photo (bench/common.py); MACs of the forward pass. "
             "*DSP*: `--kernels auto` (SMLAD/SXTB16 kernels on these cores); *C99*: `--kernels "
             "portable`. Outputs equal the host build's bit for bit in every run: "
             f"{all(r[k]['bit_exact_vs_host'] for r in rows for k in r if k.startswith('mps2'))}."
             + (f" *before*: bench/results/firmware.json at git {before['rev']} (the default "
                "schedule, bench/firmware.py)." if before else ""), "",
             "## By layer type, the six models summed, layer by layer (`--patch off`)", "",
             "| layer type | layers | MACs | M4 DSP instr/MAC | M4 C99 instr/MAC | M7 DSP instr/MAC "
             "| C99 / DSP | share of M4 DSP instructions |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
    dsp, c99, m7 = (_by_type(rows, k) for k in (f"{M4}_auto", f"{M4}_portable", f"{M7}_auto"))
    total = sum(a[2] for a in dsp.values()) or 1
    for t, (n, macs, count) in sorted(dsp.items(), key=lambda kv: -kv[1][2]):
        per = (lambda c: f"{c / macs:.2f}") if macs else (lambda c: "-")
        lines.append(f"| {t} | {n} | {f(macs)} | {per(count)} | {per(c99[t][2])} | "
                     f"{per(m7[t][2])} | {c99[t][2] / count:.2f} | {100 * count / total:.1f}% |")
    lines += ["", "## Whole models, inference", "",
              "| model | MACs | M4 DSP, layer by layer (instr/MAC) | M4 C99, layer by layer | "
              "M7 DSP, layer by layer | M4 DSP, default schedule | M7 DSP, default schedule | "
              "arena B (default) |" + (" M4 before, default schedule | M7 before |"
                                       if before else ""),
              "|---|--:|--:|--:|--:|--:|--:|--:|" + ("--:|--:|" if before else "")]
    for r in rows:
        macs = r[f"{M4}_auto"]["macs"]
        cell = (lambda e: f"{f(e['instructions'])} ({e['instructions'] / macs:.2f})")
        line = (f"| {r['model']} | {f(macs)} | {cell(r[f'{M4}_auto'])} | "
                f"{cell(r[f'{M4}_portable'])} | {cell(r[f'{M7}_auto'])} | "
                f"{cell(r[f'{M4}_patch_auto'])} | {cell(r[f'{M7}_patch_auto'])} | "
                f"{f(r[f'{M4}_patch_auto']['arena_bytes'])} |")
        if before:
            b = before["models"].get(r["model"], {})
            line += "".join(f" {f(b[k])} |" if b.get(k) else " - |"
                            for k in ("m4_patch_auto", "m7_patch_auto"))
        lines.append(line)
    if any("train_auto" in r for r in rows):
        lines += ["", "## Training step (largest published scheme, new 10-class head, M4)", "",
                  "Profile of the first step. Target: the Tiny Training Engine's published step "
                  "on a 216 MHz Cortex-M7 as cycles (128 px); QEMU instructions are not cycles "
                  "(a real core needs more cycles than instructions).", "",
                  "| model | scheme | DSP instructions | C99 instructions | forward | backward "
                  "| update | backward+update | TTE cycles (128 px) |"
                  + (" before |" if before else ""),
                  "|---|--:|--:|--:|--:|--:|--:|--:|--:|" + ("--:|" if before else "")]
        for r in rows:
            if "train_auto" not in r:
                continue
            t = r["train_auto"]
            ph = {p["phase"]: p["count"] for p in t["by_phase"]}
            tte = TTE_CYCLES.get(r["model"].rsplit("_", 1)[0]) if r["model"].endswith("128") else None
            line = (f"| {r['model']} | {t['scheme']} | {f(t['instructions'])} | "
                    f"{f(r['train_portable']['instructions'])} | "
                    + " | ".join(f(ph.get(k, 0)) for k in ("forward", "backward", "update",
                                                           "backward+update"))
                    + f" | {f(tte) if tte else '-'} |")
            if before:
                b = before["models"].get(r["model"], {}).get("train_step")
                line += f" {f(b) if b else '-'} |"
            lines.append(line)
        lines += ["", "### The fastest schedule that fits the board", "",
                  "The default schedule above takes the smallest arena (more patches, more "
                  "recomputation); `--sram` (here the board's 256 KB) takes the schedule with the "
                  "fewest MACs whose step fits it, as a user who only needs the step to fit would "
                  "(the Tiny Training Engine patches nothing). DSP kernels.", "",
                  "| model | scheme | instructions | forward | backward+update | update | "
                  "training arena B | default's arena B | TTE cycles (128 px) |",
                  "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in rows:
            if "train_fastest" not in r:
                continue
            t = r["train_fastest"]
            ph = {p["phase"]: p["count"] for p in t["by_phase"]}
            tte = TTE_CYCLES.get(r["model"].rsplit("_", 1)[0]) if r["model"].endswith("128") else None
            lines.append(f"| {r['model']} | {t['scheme']} | {f(t['instructions'])} | "
                         f"{f(ph.get('forward', 0))} | "
                         f"{f(ph.get('backward', 0) + ph.get('backward+update', 0))} | "
                         f"{f(ph.get('update', 0))} | {f(t['arena_bytes'])} | "
                         f"{f(t['default_arena_bytes'])} | {f(tte) if tte else '-'} |")
        ok = all(r[k]["params_bit_exact_vs_host"] for r in rows for k in r
                 if k.startswith("train") and isinstance(r[k], dict))
        lines += ["", f"Trained parameters under QEMU equal the host build's bit for bit: {ok}."]
    text = "\n".join(lines) + "\n"
    (common.RESULTS_DIR / "speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
