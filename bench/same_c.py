"""Fingerprint of everything tinyc generates, to prove that a refactor changes nothing.

Builds a fixed corpus (the test nets, seeded random nets, the DS-CNN, and the shared pretrained
models with every published sparse-update scheme) for inference (--patch auto and off, with the
.tflite export) and for training, and records the sha256 of every file each build writes
(model.c, model.h, the runtime kernels, model.tflite, train_params.json, report.json with the
temporary paths removed), or the error a build refuses with, plus the int8 ONNX export of the
inference graph, and the arena bytes of each build (a change that grows one prints by how much).

    python bench/same_c.py --record before.json     # on the old code
    python bench/same_c.py --check before.json      # on the new code: exit 1 on any difference
    python bench/same_c.py --quick ...               # the small nets only (seconds, no ../shared)

Reproducible: calibration is the seeded synthetic one, so the same code writes the same bytes.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SHARED = ROOT.parent / "shared" / "models"
BOARD = "mps2_an386"
SMALL_TRAIN = ("full", "bias-only", "last:2")
RANDOM_SEEDS = range(12)


def small_models(folder: Path) -> dict[str, Path]:
    import onnx

    import nets
    import random_nets
    paths = dict(nets.save_all(folder))
    paths["ds_cnn"] = folder / "ds_cnn.onnx"
    onnx.save(nets.net_ds_cnn(), paths["ds_cnn"])
    for seed in RANDOM_SEEDS:
        paths[f"random_{seed}"] = folder / f"random_{seed}.onnx"
        onnx.save(random_nets.random_net(seed), paths[f"random_{seed}"])
    return paths


def cases(quick: bool, folder: Path) -> list[dict]:
    out = []
    for name, path in small_models(folder).items():
        for patch in ("auto", "off"):
            out.append(dict(case=f"{name} infer patch={patch}", model=str(path),
                            opts=dict(patch=patch, export_tflite=True), onnx=patch == "off"))
        for scheme in SMALL_TRAIN:
            out.append(dict(case=f"{name} train {scheme}", model=str(path),
                            opts=dict(train=scheme, num_classes=5)))
    if quick or not SHARED.is_dir():
        return out
    from training_memory import SCHEMES, scheme_dict   # the published schemes
    for net, schemes in SCHEMES.items():
        for px in (96, 128):
            path = SHARED / f"{net}_{px}.onnx"
            for patch in ("auto", "off"):
                out.append(dict(case=f"{net}_{px} infer patch={patch}", model=str(path),
                                opts=dict(patch=patch, export_tflite=px == 96),
                                onnx=px == 96 and patch == "off"))
            for sname in schemes:
                out.append(dict(case=f"{net}_{px} train {sname}", model=str(path),
                                opts=dict(train=scheme_dict(net, sname), num_classes=10)))
    return out


def fingerprint(case: dict) -> tuple[str, dict]:
    from tinyc.build import BuildOptions, build
    from tinyc.errors import TinycError
    from tinyc.targets.boards import load_board

    board = load_board(BOARD)
    roomy = dataclasses.replace(board, sram_bytes=2 ** 31, flash_bytes=2 ** 31, memory=None,
                                firmware=None)
    with tempfile.TemporaryDirectory(prefix="tinyc-same-") as tmp:
        out = Path(tmp) / "out"
        opts = BuildOptions(firmware=False, **case["opts"])
        try:
            build(case["model"], roomy, str(out), opts)
        except TinycError as e:
            return case["case"], {"error": _anonymous(str(e).encode(), case, tmp).decode()}
        files = {}
        for f in sorted(out.rglob("*")):
            if f.is_file():
                data = _anonymous(f.read_bytes(), case, tmp)
                files[str(f.relative_to(out))] = hashlib.sha256(data).hexdigest()
        if case.get("onnx"):
            files["export.onnx"] = _onnx_export_hash(case, Path(tmp))
        report = json.loads((out / "report.json").read_text())
        files["arena"] = {part: report[part]["arena_bytes"] for part in ("inference", "training")
                          if part in report}
        return case["case"], files


def _anonymous(data: bytes, case: dict, tmp: str) -> bytes:
    """The bytes without the temporary folders' names (they change from run to run) and the
    checkout's (a report names the board file: a worktree must compare with the main tree)."""
    models = str(Path(case["model"]).parent).encode()
    return (data.replace(tmp.encode(), b"<TMP>").replace(models, b"<MODELS>")
            .replace(str(ROOT).encode(), b"<ROOT>"))


def _onnx_export_hash(case: dict, tmp: Path) -> str:
    from tinyc.build import BuildOptions, compile_graph
    from tinyc.export.onnx_export import export_onnx
    from tinyc.pipeline import forward_graph

    g = compile_graph(case["model"], BuildOptions(**case["opts"]))
    path = tmp / "export.onnx"
    export_onnx(forward_graph(g), str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", metavar="JSON", help="write the fingerprints")
    mode.add_argument("--check", metavar="JSON", help="compare with recorded fingerprints")
    ap.add_argument("--quick", action="store_true", help="the small nets only")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    import warnings
    warnings.simplefilter("ignore")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="tinyc-same-models-") as folder:
        todo = cases(args.quick, Path(folder))
        with ProcessPoolExecutor(args.jobs) as pool:
            got = dict(pool.map(fingerprint, todo))
    print(f"{len(got)} builds in {time.time() - t0:.0f} s", file=sys.stderr)
    if args.record:
        Path(args.record).write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        return 0
    want = json.loads(Path(args.check).read_text())
    bad = 0
    for case, files in got.items():
        if case not in want:
            print(f"{case}: not recorded")
            continue
        if files != want[case]:
            bad += 1
            diff = sorted(k for k in set(files) | set(want[case])
                          if files.get(k) != want[case].get(k))
            print(f"{case}: DIFFERS in {', '.join(d for d in diff if d != 'arena')}")
            for part, n in files.get("arena", {}).items():
                was = want[case].get("arena", {}).get(part)
                if was is not None and was != n:
                    print(f"    {part} arena {was} -> {n} bytes ({n - was:+d})")
    print(f"{len(got) - bad} of {len(got)} builds identical" + ("" if bad else " (all)"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
