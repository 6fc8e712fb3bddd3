"""Patch schedules near the smallest arena: what a little more arena buys in recomputation.

`tinyc build --patch auto` takes the smallest planned arena (ties within 1%: the fewest MACs).
This script plans for real the patch schedules whose estimated arena is within --slack of the
best estimate (memory/schedule.py's candidates), and prints each one's arena and recomputed MACs,
marking the ones no other beats on both. With --qemu it also builds each marked schedule and the
layer-by-layer one for mps2_an386 (`tinyc build --patch SPEC`) and counts the instructions of one
inference under QEMU (`tinyc emulate --qemu`, the firmware's SysTick count).

    .venv/bin/python bench/patch_tradeoff.py ../shared/models/mcunet-5fps_96.onnx [--slack 0.1]
        [--qemu] [--work DIR]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tinyc.memory.planner import plan_memory
from tinyc.memory.schedule import _patched, candidates, choose_schedule
from tinyc.pipeline import compile_int8


def qemu_instructions(model: str, spec: str, work: Path, x: Path) -> tuple[int, int]:
    """(arena bytes, instructions of one inference) of `tinyc build --patch spec` under QEMU."""
    out = work / spec.replace("@", "_at_")
    build = subprocess.run([sys.executable, "-m", "tinyc.cli", "build", model, "--board",
                            "mps2_an386", "--patch", spec, "-o", str(out)],
                           capture_output=True, text=True, check=True).stdout
    run = subprocess.run([sys.executable, "-m", "tinyc.cli", "emulate", str(out), "--qemu",
                          "--input", str(x), "--output", str(out / "y.npy")],
                         capture_output=True, text=True, check=True).stdout
    arena = int(re.search(r"arena ([0-9,]+) B", build).group(1).replace(",", ""))
    instr = int(re.search(r"([0-9,]+) instructions per inference", run).group(1).replace(",", ""))
    return arena, instr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--slack", type=float, default=0.10,
                    help="plan the candidates estimated within this fraction of the best")
    ap.add_argument("--qemu", action="store_true",
                    help="also count QEMU instructions of the marked schedules")
    ap.add_argument("--work", help="build folder for --qemu (default: a temporary one)")
    a = ap.parse_args()

    g = compile_int8(a.model, None)
    total = sum(g.macs(n) for n in g.nodes)
    base = plan_memory(g)
    auto = choose_schedule(g, "auto")
    cands = candidates(g, base.arena_bytes)
    if not cands:
        print("no patch schedule beats layer by layer")
        return
    near = [c for c in cands if c.estimate <= cands[0].estimate * (1 + a.slack)]
    rows = sorted((_patched(g, c.spec).plan.arena_bytes, c.extra_macs, str(c.spec))
                  for c in near)
    front = []
    for arena, extra, spec in rows:
        if not front or extra < front[-1][1]:
            front.append((arena, extra, spec))
    print(f"{Path(a.model).name}: {total:,} MACs; layer by layer arena {base.arena_bytes:,} B; "
          f"--patch auto: {auto.spec}, arena {auto.plan.arena_bytes:,} B")
    print(f"{len(near)} of {len(cands)} candidates planned (estimate within {a.slack:.0%}); "
          "* = no other has both a smaller arena and fewer MACs")
    for arena, extra, spec in rows:
        mark = "*" if (arena, extra, spec) in front else " "
        print(f"{mark} {spec:>8}  arena {arena:>8,} B ({arena / auto.plan.arena_bytes - 1:+6.1%})"
              f"  recomputed {extra:>11,} MACs ({100 * extra / total:5.1f}%)")
    if a.qemu:
        work = Path(a.work or tempfile.mkdtemp(prefix="patch_tradeoff_"))
        work.mkdir(parents=True, exist_ok=True)
        shape = tuple(g.meta["input_nchw"])
        x = work / "x.npy"
        np.save(x, np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32))
        print("QEMU (mps2_an386, DSP kernels), one inference:")
        for spec in ["off"] + [s for _, _, s in front]:
            arena, instr = qemu_instructions(a.model, spec, work, x)
            print(f"  --patch {spec:>8}: arena {arena:>8,} B, {instr:>12,} instructions")


if __name__ == "__main__":
    main()
