"""Quantization quality: float ONNX (onnxruntime) vs tinyc's generated int8 C, on real images.

For every shared model: calibrate and build with tinyc on the fixed calibration set of
bench/common.py (random photo crops + Fashion-MNIST TRAIN images), then run a disjoint evaluation
set (the two whole photos, other random crops, Fashion-MNIST TEST images) through
- the float ONNX model in onnxruntime (float logits), and
- the generated C, compiled with the host gcc (tinyc.targets.host.run_host); its int8 logits are
  dequantized with the output scale / zero point of report.json.
Metrics, per model and per image source: top-1 agreement (also restricted to images whose float
top-1 leads the runner-up by >= MARGIN logits), mean and min cosine similarity of the logit
vectors, mean top-5 overlap |top5(float) & top5(int8)| / 5, and how often the float top-1 is in
the int8 top-5.

Controls that separate quantization error from bugs:
- bit-exactness: a few evaluation images also go through the exported .tflite in LiteRT's
  reference kernels (BUILTIN_REF), which must equal the generated C bit for bit;
- an independent int8 quantizer: onnxruntime's quantize_static (QDQ, per-channel int8 weights,
  int8 activations, MinMax calibration on the same calibration set), run by onnxruntime;
- calibration: the same model calibrated on crops of the right 40% of each photo only
  ("narrow", mostly background), and without calibration data (tinyc's documented fallback,
  uniform noise in [-1, 1]); plus how often the int8 top logit is saturated at 127.

Usage (repository root, venv active):  python bench/quant_quality.py [--keep DIR]
Writes bench/results/quant_quality.md and .json and prints the tables.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

N_BITEXACT = 4          # evaluation images also run through LiteRT's reference kernels
MARGIN = 1.0            # "confident" images: float top-1 logit leads the runner-up by >= MARGIN
SOURCES = ("photos", "fashion")
# The few ImageNet class ids the sanity check of shared/models/README.md names.
KNOWN_CLASSES = {832: "stupa", 497: "church", 442: "bell cote"}


def _session(onnx_path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def float_logits(onnx_path, x_nchw: np.ndarray) -> np.ndarray:
    sess = _session(onnx_path)
    name = sess.get_inputs()[0].name
    return np.stack([sess.run(None, {name: x[None]})[0].reshape(-1) for x in x_nchw])


def quantize_input(rep: dict, x_nchw: np.ndarray) -> np.ndarray:
    """float NCHW -> int8 NHWC with the model's input parameters (TFLite's QUANTIZE: round half
    away from zero, saturate)."""
    from tinyc.pipeline import quantize_array

    q = quantize_array(x_nchw, rep["input"]["scale"], rep["input"]["zero_point"])
    return np.ascontiguousarray(np.moveaxis(q, 1, -1))


def int8_logits(out_dir: Path, rep: dict, x_nchw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 output, dequantized float logits) of the generated C for a batch."""
    from tinyc.targets.host import run_host

    y = run_host(out_dir, quantize_input(rep, x_nchw)).reshape(len(x_nchw), -1)
    deq = (y.astype(np.float32) - rep["output"]["zero_point"]) * np.float32(rep["output"]["scale"])
    return y, deq


def bitexact_vs_litert(out_dir: Path, rep: dict, x_nchw: np.ndarray, y_c: np.ndarray) -> int:
    """Largest |generated C - LiteRT BUILTIN_REF| (int8 LSB) over the given images."""
    from tinyc.export.oracles import run_litert_ref

    tfl = (out_dir / "model.tflite").read_bytes()
    xq = quantize_input(rep, x_nchw)
    worst = 0
    for i in range(len(xq)):
        ref = run_litert_ref(tfl, xq[i:i + 1]).reshape(-1).astype(np.int32)
        worst = max(worst, int(np.abs(ref - y_c[i].astype(np.int32)).max()))
    return worst


def ort_int8_logits(onnx_path: Path, calib_nchw: np.ndarray, x_nchw: np.ndarray,
                    work: Path) -> np.ndarray:
    """Independent int8 baseline: onnxruntime's static quantization of the float model (QDQ,
    per-channel symmetric int8 weights, asymmetric int8 activations, MinMax), run by onnxruntime."""
    import logging
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    logging.getLogger().setLevel(logging.ERROR)
    name = _session(onnx_path).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({name: c[None]} for c in calib_nchw)

        def get_next(self):
            return next(self.it, None)

    qpath = work / f"{onnx_path.stem}_ort_int8.onnx"
    quantize_static(str(onnx_path), str(qpath), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    return float_logits(qpath, x_nchw)


def topk(a: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-a, axis=1, kind="stable")[:, :k]


def metrics(f: np.ndarray, q: np.ndarray, y_int8: np.ndarray | None = None) -> dict:
    cos = (f * q).sum(1) / (np.linalg.norm(f, axis=1) * np.linalg.norm(q, axis=1) + 1e-30)
    t5f, t5q = topk(f, 5), topk(q, 5)
    overlap = np.array([len(set(a) & set(b)) / 5 for a, b in zip(t5f, t5q)])
    in5 = np.array([a[0] in set(b) for a, b in zip(t5f, t5q)])
    agree = f.argmax(1) == q.argmax(1)
    top2 = np.sort(f, axis=1)[:, -2:]
    confident = top2[:, 1] - top2[:, 0] >= MARGIN
    m = {
        "n": int(len(f)),
        "top1_agreement_pct": float(100 * agree.mean()),
        "n_confident": int(confident.sum()),
        "top1_agreement_confident_pct": float(100 * agree[confident].mean()) if confident.any() else None,
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "top5_overlap_pct": float(100 * overlap.mean()),
        "float_top1_in_int8_top5_pct": float(100 * in5.mean()),
    }
    if y_int8 is not None:
        # the largest int8 logit is 127: the calibrated output range is exceeded, the top
        # classes are clipped to one value and the argmax among them is arbitrary
        m["top_logit_saturated_pct"] = float(100 * np.mean(y_int8.max(1) == 127))
    return m


def split_metrics(f, q, src, y=None) -> dict:
    return {"all": metrics(f, q, y),
            "by_source": {s: metrics(f[src == s], q[src == s], None if y is None else y[src == s])
                          for s in SOURCES}}


def build_noise_calibrated(onnx_path: Path, out: Path) -> dict:
    """tinyc build without --calib (its fallback: uniform noise calibration)."""
    from tinyc.build import BuildOptions
    from tinyc.targets.host import build_host

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = common.build_measured(onnx_path, common.BOARD, out, BuildOptions())
    build_host(out)   # never a stale executable from an earlier build in a kept folder
    return rep


def evaluate_model(onnx_path: Path, work: Path, evals: list) -> dict:
    name = onnx_path.stem
    hw = common.model_hw(onnx_path)
    calib = common.write_calibration(work / f"calib_{name}.npy", hw)
    x = common.render(evals, hw)
    src = np.array([s.source for s in evals])
    secs = {}

    t0 = time.time()
    out = work / name
    rep = common.build_model(onnx_path, out, calib, export_tflite=True)
    secs["build"] = time.time() - t0

    t0 = time.time()
    f = float_logits(onnx_path, x)
    secs["float_onnxruntime"] = time.time() - t0
    t0 = time.time()
    yq, q = int8_logits(out, rep, x)
    secs["generated_c"] = time.time() - t0

    # control: generated C == TFLite reference kernels (whole photos, a crop, a Fashion image)
    t0 = time.time()
    pick = list(range(N_BITEXACT - 1)) + [int(np.flatnonzero(src == "fashion")[0])]
    worst_lsb = bitexact_vs_litert(out, rep, x[pick], yq[pick])
    secs["litert_ref"] = time.time() - t0

    # control: an independent quantizer on the same calibration data
    t0 = time.time()
    q_ort = ort_int8_logits(onnx_path, np.load(calib), x, work)
    secs["onnxruntime_int8"] = time.time() - t0

    # control: other calibrations
    t0 = time.time()
    controls = {"onnxruntime_int8": split_metrics(f, q_ort, src)}
    rep_n = build_noise_calibrated(onnx_path, work / f"{name}_noise")
    y_n, q_n = int8_logits(work / f"{name}_noise", rep_n, x)
    controls["noise"] = split_metrics(f, q_n, src, y_n)
    cal_narrow = common.write_calibration(work / f"calib_{name}_narrow.npy", hw, "right")
    rep_w = common.build_model(onnx_path, work / f"{name}_narrow", cal_narrow, export_tflite=False)
    y_w, q_w = int8_logits(work / f"{name}_narrow", rep_w, x)
    controls["narrow"] = split_metrics(f, q_w, src, y_w)
    secs["calibration_controls"] = time.time() - t0

    whole = {evals[i].label: {"float_top3": topk(f[i:i + 1], 3)[0].tolist(),
                              "int8_top3": topk(q[i:i + 1], 3)[0].tolist()}
             for i in range(len(evals)) if "[" not in evals[i].label}
    return {
        "model": name,
        "input_nchw": rep["input"]["shape_nchw"],
        **split_metrics(f, q, src, yq),
        "controls": controls,
        "bitexact_images": len(pick),
        "bitexact_max_abs_lsb": worst_lsb,
        "input_scale": rep["input"]["scale"],
        "input_zero_point": rep["input"]["zero_point"],
        "output_scale": rep["output"]["scale"],
        "output_zero_point": rep["output"]["zero_point"],
        "float_logit_max": float(f.max()),
        "int8_logit_max_representable": float((127 - rep["output"]["zero_point"])
                                              * rep["output"]["scale"]),
        "whole_photos_top3": whole,
        "seconds": {k: round(v, 1) for k, v in secs.items()},
    }


HEADER = ["model", "source", "images", "top-1 agree %", f"top-1 agree %, margin >= {MARGIN:g} (n)",
          "cos mean", "cos min", "top-5 overlap %", "float top-1 in int8 top-5 %"]


def rows_for(r: dict) -> list[list]:
    out = []
    for key, m in [("all", r["all"])] + [(s, r["by_source"][s]) for s in SOURCES]:
        conf = ("-" if m["top1_agreement_confident_pct"] is None
                else f"{m['top1_agreement_confident_pct']:.1f}")
        out.append([r["model"], key, m["n"], f"{m['top1_agreement_pct']:.1f}",
                    f"{conf} ({m['n_confident']})",
                    f"{m['cosine_mean']:.4f}", f"{m['cosine_min']:.4f}",
                    f"{m['top5_overlap_pct']:.1f}", f"{m['float_top1_in_int8_top5_pct']:.1f}"])
    return out


CTRL_HEADER = ["model", "C vs LiteRT ref: max diff LSB (images)",
               "tinyc (this calibration)", "onnxruntime int8 (same calibration)",
               "tinyc, narrow calibration", "tinyc, no --calib (noise)",
               "tinyc: top logit saturated % (this / narrow / noise)"]


def ctrl_row(r: dict) -> list:
    c = r["controls"]
    pf = lambda d: " / ".join(f"{d['by_source'][s]['top1_agreement_pct']:.0f}" for s in SOURCES)
    sat = lambda d: f"{d['by_source']['photos']['top_logit_saturated_pct']:.0f}"
    return [r["model"], f"{r['bitexact_max_abs_lsb']} ({r['bitexact_images']})",
            pf(r), pf(c["onnxruntime_int8"]), pf(c["narrow"]), pf(c["noise"]),
            f"{sat(r)} / {sat(c['narrow'])} / {sat(c['noise'])}"]


def sanity_lines(rows: list[dict]) -> list[str]:
    fmt = lambda ids: ", ".join(f"{i}" + (f" ({KNOWN_CLASSES[i]})" if i in KNOWN_CLASSES else "")
                                for i in ids)
    lines = ["| model | photo | float top-3 ImageNet ids | int8 (generated C) top-3 |",
             "| --- | --- | --- | --- |"]
    for r in rows:
        for photo, t in r["whole_photos_top3"].items():
            lines.append(f"| {r['model']} | {photo} | {fmt(t['float_top3'])} | "
                         f"{fmt(t['int8_top3'])} |")
    return lines


def summary_lines(rows: list[dict]) -> list[str]:
    """A few pooled figures computed from the rows (photos of all models)."""
    pooled = lambda get: np.mean([get(r) for r in rows])
    conf_n = sum(r["by_source"]["photos"]["n_confident"] for r in rows)
    conf_ok = sum(r["by_source"]["photos"]["n_confident"]
                  * (r["by_source"]["photos"]["top1_agreement_confident_pct"] or 0) / 100
                  for r in rows)
    n = sum(r["by_source"]["photos"]["n"] for r in rows)
    ok = sum(r["by_source"]["photos"]["n"] * r["by_source"]["photos"]["top1_agreement_pct"] / 100
             for r in rows)
    exact = all(r["bitexact_max_abs_lsb"] == 0 for r in rows)
    return [
        "Summary (photos, all models pooled): top-1 agreement "
        f"{100 * ok / n:.1f}% ({ok:.0f}/{n}); on photos whose float top-1 leads by >= {MARGIN:g} "
        f"logit {100 * conf_ok / max(conf_n, 1):.1f}% ({conf_ok:.0f}/{conf_n}), on the others "
        f"{100 * (ok - conf_ok) / max(n - conf_n, 1):.1f}% ({ok - conf_ok:.0f}/{n - conf_n}). "
        "Mean over models: tinyc "
        f"{pooled(lambda r: r['by_source']['photos']['top1_agreement_pct']):.1f}%, onnxruntime's "
        "own int8 quantization of the same models with the same calibration data "
        f"{pooled(lambda r: r['controls']['onnxruntime_int8']['by_source']['photos']['top1_agreement_pct']):.1f}%, "
        "tinyc without calibration data "
        f"{pooled(lambda r: r['controls']['noise']['by_source']['photos']['top1_agreement_pct']):.1f}%. "
        + ("The generated C matched LiteRT's reference kernels bit for bit on every checked image."
           if exact else "The generated C did NOT match LiteRT's reference kernels everywhere "
           "(see the controls)."),
    ]


def markdown(rows: list[dict], prov: dict, runtime: float, data: dict) -> str:
    table = [x for r in rows for x in rows_for(r)]
    broken = [r["model"] for r in rows if r["bitexact_max_abs_lsb"]]
    warn = ([f"**WARNING: the generated C differs from LiteRT's reference kernels for "
             f"{', '.join(broken)}: those rows measure a bug, not quantization.**", ""]
            if broken else [])
    return "\n".join(warn + [
        "# Quantization quality: float ONNX vs tinyc's generated int8 C",
        "",
        common.provenance_md(prov, runtime),
        f"- board: {common.BOARD}; int8 logits from the generated C compiled with the host gcc, "
        "dequantized with report.json's output scale / zero point; float logits from onnxruntime",
        "",
        "Data (offline, seeded; bench/common.py): evaluation = "
        f"{data['eval_photos']} photos (the 2 whole scikit-learn sample photos + "
        f"{data['eval_photos'] - 2} random square crops of them, side 96-427 px) and "
        f"{data['eval_fashion']} Fashion-MNIST TEST images (grey, PIL-bilinear resized, replicated "
        f"to RGB); calibration = {data['calib_photos']} other random crops of the two photos (each "
        f"with IoU <= {common.MAX_IOU} against every evaluation crop; largest IoU here "
        f"{data['max_iou']:.2f}) + {data['calib_fashion']} Fashion-MNIST TRAIN images, saved as "
        ".npy and passed as `--calib`. Preprocessing p / 127.5 - 1, NCHW. No evaluation image is a "
        "calibration image, but with only two photos the crops of both sets share pixels.",
        "",
        "Metrics: top-1 agreement of the float and int8 argmax (also on the images where the float "
        f"top-1 leads the runner-up by >= {MARGIN:g} logit, n of them in brackets); cosine "
        "similarity of the 1000 logits (mean and worst image); top-5 overlap = mean "
        "|top-5(float) & top-5(int8)| / 5; how often the float top-1 class is in the int8 top 5. "
        "There are no labels: this measures fidelity to the float model, not accuracy. "
        "Fashion-MNIST items are not ImageNet classes: the float logits there are flat and their "
        "argmax is fragile.",
        "",
        common.md_table(HEADER, table, "ll" + "r" * (len(HEADER) - 2)),
        "",
        *summary_lines(rows),
        "",
        "## Controls",
        "",
        "Top-1 agreement %, photos / fashion. *C vs LiteRT ref*: the generated C against the "
        "exported .tflite in LiteRT's reference kernels (BUILTIN_REF) on the 2 whole photos, 1 crop "
        "and 1 Fashion-MNIST image (0 = bit-exact). *onnxruntime int8*: an independent quantizer "
        "(onnxruntime quantize_static: QDQ, per-channel int8 weights, int8 activations, MinMax) "
        "on the same calibration .npy. *narrow*: tinyc calibrated on crops of the right 40% of "
        "each photo only (+ the same Fashion-MNIST images), a narrower view of the two scenes. *noise*: tinyc without `--calib` "
        "(uniform noise in [-1, 1]). *saturated*: % of evaluation photos whose largest int8 "
        "logit is 127, i.e. beyond the calibrated output range (ties at the top).",
        "",
        common.md_table(CTRL_HEADER, [ctrl_row(r) for r in rows], "l" + "r" * 6),
        "",
        "## Sanity check (shared/models/README.md): whole photos",
        "",
        *sanity_lines(rows),
        "",
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", help="build into this folder and keep it (default: a temp dir)")
    ap.add_argument("--results", default=str(common.RESULTS_DIR), help="output folder")
    ap.add_argument("--models", nargs="*", help="only these model names (default: all six)")
    a = ap.parse_args(argv)
    paths = common.model_paths()
    if a.models:
        paths = [p for p in paths if p.stem in a.models]
    t_start = time.time()
    prov = common.provenance()
    evals, cal = common.eval_samples(), common.calib_samples()
    data = {"eval_photos": sum(s.source == "photos" for s in evals),
            "eval_fashion": sum(s.source == "fashion" for s in evals),
            "calib_photos": sum(s.source == "photos" for s in cal),
            "calib_fashion": sum(s.source == "fashion" for s in cal),
            "max_iou": common.check_disjoint(cal, evals),
            "eval_images": [s.label for s in evals], "calib_images": [s.label for s in cal]}
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinyc-bench-qq-") as tmp:
        work = Path(a.keep) if a.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for p in paths:
            r = evaluate_model(p, work, evals)
            m = r["all"]
            print(f"  {r['model']}: top-1 agree {m['top1_agreement_pct']:.1f}%, cos mean "
                  f"{m['cosine_mean']:.4f}, C vs LiteRT ref max {r['bitexact_max_abs_lsb']} LSB "
                  f"({r['seconds']})", flush=True)
            rows.append(r)
    runtime = time.time() - t_start
    res = Path(a.results)
    res.mkdir(parents=True, exist_ok=True)
    (res / "quant_quality.md").write_text(markdown(rows, prov, runtime, data))
    (res / "quant_quality.json").write_text(json.dumps(
        {"provenance": prov, "runtime_seconds": round(runtime, 1), "board": common.BOARD,
         "margin": MARGIN, "data": data, "rows": rows}, indent=1) + "\n")
    print()
    print(common.text_table(HEADER, [x for r in rows for x in rows_for(r)]))
    print()
    print(common.text_table(CTRL_HEADER, [ctrl_row(r) for r in rows]))
    print(f"\n{runtime:.0f} s; wrote {res / 'quant_quality.md'} and .json")
    broken = [r["model"] for r in rows if r["bitexact_max_abs_lsb"]]
    if broken:
        print(f"WARNING: generated C != LiteRT reference kernels for {', '.join(broken)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
