"""Shared helpers of the benchmarks: the reference models, fixed real-image data sets (calibration
and evaluation, disjoint), tinyc builds, and the provenance block (date, versions, command) that
every results file carries.

Data (all offline, nothing downloaded):
- photos: scikit-learn's `load_sample_images()` (china.jpg, flower.jpg, 427x640 RGB).
  EVALUATION: the two whole photos + random square crops (seed EVAL_SEED, side 96..427 px).
  CALIBRATION: other random square crops of the same photos (seed CALIB_SEED), each rejected and
  redrawn if its intersection-over-union with any evaluation crop of the same photo exceeds
  MAX_IOU, so no calibration input is (nearly) an evaluation input. With only two photos,
  calibration and evaluation crops do share some pixels; `calib_samples(region="right")` gives
  the stricter but biased alternative used as a control (crops of the right 40% only).
- fashion: Fashion-MNIST (Debian `dataset-fashion-mnist`, /usr/share/datasets/fashion-mnist):
  evaluation images from the 10k TEST file, calibration images from the 60k TRAIN file. Grey
  28x28 is resized to the model's H x W (PIL bilinear) and replicated to 3 channels.
All crops and image picks are drawn from seeded generators: every run uses the same pixels.

Preprocessing of the shared ImageNet models: pixel p in [0, 255] -> p / 127.5 - 1, NCHW float32.
"""
from __future__ import annotations

import datetime
import gzip
import json
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
MODELS_DIR = Path(__file__).resolve().parents[2] / "shared" / "models"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
MODEL_NAMES = ("mbv2-w0.35_128", "mbv2-w0.35_96", "proxyless-w0.3_128", "proxyless-w0.3_96",
               "mcunet-5fps_128", "mcunet-5fps_96")
BOARD = "mps2_an386"

# calib_samples(region="right"): crops from the right (1 - RIGHT_STRIP) of each photo's width only.
RIGHT_STRIP = 0.6
MAX_IOU = 0.5
CALIB_SEED = 1234
EVAL_SEED = 5678


# The published sparse-update schemes of shared/models/README.md: net -> name -> (bias K,
# {conv index: ratio}). A ratio of 0 updates that layer's bias only, which bias K already covers.
PUBLISHED_SCHEMES = {
    "mbv2-w0.35": {"49kb": (16, {36: 1, 39: 1, 40: 0, 41: .25, 42: .125, 45: .125, 48: .125,
                                 49: .125}),
                   "99kb": (25, {27: 1, 30: 1, 33: 1, 36: 1, 39: 1, 42: .125, 45: .5, 48: 1}),
                   "138kb": (34, {i: 1 for i in (27, 30, 33, 36, 39, 42, 45, 48)})},
    "mcunet-5fps": {"49kb": (20, {23: 0, 24: .25, 27: .5, 30: .5, 33: 0, 39: 0}),
                    "99kb": (22, {21: 1, 24: 1, 27: 1, 30: 1, 36: .125, 39: .25}),
                    "148kb": (23, {21: 1, 24: 1, 27: 1, 30: 1, 36: 1, 39: .5})},
    "proxyless-w0.3": {"49kb": (21, {39: .25, 42: 1, 44: 0, 45: 1, 50: 0, 51: .125, 54: .25,
                                     57: .25}),
                       "148kb": (45, {i: 1 for i in (36, 39, 42, 45, 48, 51, 54, 57)})},
}


def published_scheme(net: str, name: str) -> dict:
    """A published scheme as a tinyc --train dict (zero ratios dropped: bias K covers them)."""
    k, w = PUBLISHED_SCHEMES[net][name]
    return {"name": name, "bias_last": k, "weights": {str(i): r for i, r in w.items() if r}}


def die(msg: str) -> None:
    print(f"{Path(sys.argv[0]).name}: error: {msg}", file=sys.stderr)
    sys.exit(2)


def require_firmware_tools() -> None:
    """Exit with a one-line error when the firmware toolchain or QEMU is missing."""
    import shutil
    from tinyc.targets.platformio import toolchain_missing
    if toolchain_missing():
        die(toolchain_missing())
    if not shutil.which("qemu-system-arm"):
        die("qemu-system-arm not found: apt-get install --no-install-recommends qemu-system-arm")


def model_paths() -> list[Path]:
    if not MODELS_DIR.is_dir():
        die(f"the shared reference models are not here: {MODELS_DIR} does not exist. These "
            "benchmarks need the six float ONNX models described in shared/models/README.md "
            "(they are data, never part of the repository).")
    paths = [MODELS_DIR / f"{n}.onnx" for n in MODEL_NAMES]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        die(f"{MODELS_DIR}: missing {', '.join(missing)}")
    return paths


# ---------------------------------------------------------------- images

@dataclass(frozen=True)
class Sample:
    """One image before resizing: a photo crop box or a Fashion-MNIST index."""
    source: str          # "photos" or "fashion"
    label: str           # human-readable id, e.g. "china.jpg[x=10,y=40,s=200]"
    photo: int = -1      # index into load_sample_images().images
    box: tuple = ()      # (left, top, right, bottom) for photos
    fashion_file: str = ""   # "train" or "t10k"
    fashion_index: int = -1


_PHOTOS = None
_FASHION: dict[str, np.ndarray] = {}


def photos() -> tuple[list[np.ndarray], list[str]]:
    global _PHOTOS
    if _PHOTOS is None:
        try:
            from sklearn.datasets import load_sample_images
        except ImportError:
            die("scikit-learn is needed for the sample photos: pip install -e '.[test]'")
        d = load_sample_images()
        _PHOTOS = (list(d.images), [Path(f).name for f in d.filenames])
    return _PHOTOS


def fashion_images(which: str) -> np.ndarray:
    """Fashion-MNIST images of the 'train' or 't10k' idx file: (N, 28, 28) uint8."""
    if which not in _FASHION:
        path = FASHION_DIR / f"{which}-images-idx3-ubyte.gz"
        if not path.is_file():
            die(f"{path} not found: install the Debian package dataset-fashion-mnist")
        with gzip.open(path, "rb") as f:
            raw = f.read()
        magic, n, rows, cols = np.frombuffer(raw[:16], ">u4")
        if magic != 2051:
            die(f"{path}: not an idx3 image file (magic {magic})")
        _FASHION[which] = np.frombuffer(raw[16:], np.uint8).reshape(int(n), int(rows), int(cols))
    return _FASHION[which]


def _iou(a: tuple, b: tuple) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
    return inter / (area(a) + area(b) - inter)


def _photo_crops(rng, count: int, region: str = "all", avoid: list[Sample] = (),
                 min_size: int = 96) -> list[Sample]:
    """`count` random square crops alternating over the photos, anywhere in the photo
    (region "all") or in its right strip (region "right"); a crop whose IoU with a crop of
    `avoid` on the same photo exceeds MAX_IOU is redrawn."""
    imgs, names = photos()
    out = []
    for k in range(count):
        p = k % len(imgs)
        h, w = imgs[p].shape[:2]
        x_lo = int(round(w * RIGHT_STRIP)) if region == "right" else 0
        max_size = min(h, w - x_lo)
        while True:
            s = int(rng.integers(min_size, max_size + 1))
            x0 = int(rng.integers(x_lo, w - s + 1))
            y0 = int(rng.integers(0, h - s + 1))
            box = (x0, y0, x0 + s, y0 + s)
            if all(_iou(box, a.box) <= MAX_IOU for a in avoid if a.photo == p):
                break
        out.append(Sample("photos", f"{names[p]}[x={x0},y={y0},s={s}]", photo=p, box=box))
    return out


def _fashion_picks(rng, count: int, which: str) -> list[Sample]:
    n = fashion_images(which).shape[0]
    idx = np.sort(rng.choice(n, size=count, replace=False))
    return [Sample("fashion", f"fashion-{which}[{i}]", fashion_file=which, fashion_index=int(i))
            for i in idx]


N_EVAL_CROPS, N_EVAL_FASHION = 38, 40
N_CALIB_CROPS, N_CALIB_FASHION = 48, 16


def _eval_crops() -> list[Sample]:
    return _photo_crops(np.random.default_rng(EVAL_SEED), N_EVAL_CROPS)


def eval_samples() -> list[Sample]:
    """Evaluation set: the two whole photos + random crops + Fashion-MNIST TEST images."""
    rng = np.random.default_rng(EVAL_SEED)
    imgs, names = photos()
    whole = [Sample("photos", names[p], photo=p,
                    box=(0, 0, imgs[p].shape[1], imgs[p].shape[0])) for p in range(len(imgs))]
    crops = _photo_crops(rng, N_EVAL_CROPS)
    return whole + crops + _fashion_picks(rng, N_EVAL_FASHION, "t10k")


def calib_samples(region: str = "all") -> list[Sample]:
    """Calibration set: photo crops (IoU <= MAX_IOU with every evaluation crop) + Fashion-MNIST
    TRAIN images."""
    rng = np.random.default_rng(CALIB_SEED)
    crops = _photo_crops(rng, N_CALIB_CROPS, region, avoid=_eval_crops())
    return crops + _fashion_picks(rng, N_CALIB_FASHION, "train")


def render(samples: list[Sample], hw: tuple[int, int]) -> np.ndarray:
    """Samples -> (N, 3, H, W) float32 in the shared models' range p / 127.5 - 1."""
    from PIL import Image

    h, w = hw
    imgs, _ = photos()
    out = np.empty((len(samples), 3, h, w), np.float32)
    for i, s in enumerate(samples):
        if s.source == "photos":
            im = Image.fromarray(imgs[s.photo]).crop(s.box).resize((w, h), Image.BILINEAR)
            a = np.asarray(im.convert("RGB"), np.float32)
        else:
            g = fashion_images(s.fashion_file)[s.fashion_index]
            im = Image.fromarray(g, mode="L").resize((w, h), Image.BILINEAR)
            a = np.repeat(np.asarray(im, np.float32)[:, :, None], 3, axis=2)
        out[i] = (a / 127.5 - 1.0).transpose(2, 0, 1)
    return out


def check_disjoint(calib: list[Sample], evals: list[Sample]) -> float:
    """Calibration and evaluation never share a Fashion-MNIST image, and no calibration crop
    overlaps an evaluation crop by more than MAX_IOU (the whole photos, which contain every
    crop, excepted). Returns the largest such IoU."""
    cal_f = {(s.fashion_file, s.fashion_index) for s in calib if s.source == "fashion"}
    ev_f = {(s.fashion_file, s.fashion_index) for s in evals if s.source == "fashion"}
    assert not cal_f & ev_f, "calibration and evaluation share Fashion-MNIST images"
    imgs, _ = photos()
    ev_crops = [e for e in evals if e.source == "photos"
                and e.box != (0, 0, imgs[e.photo].shape[1], imgs[e.photo].shape[0])]
    worst = max((_iou(c.box, e.box) for c in calib if c.source == "photos"
                 for e in ev_crops if e.photo == c.photo), default=0.0)
    assert worst <= MAX_IOU, worst
    return worst


def write_calibration(path: Path, hw: tuple[int, int], region: str = "all") -> Path:
    """The fixed calibration set for an H x W model, saved as an .npy for `--calib`."""
    np.save(path, render(calib_samples(region), hw))
    return path


def model_hw(onnx_path: Path) -> tuple[int, int]:
    import onnx
    m = onnx.load(str(onnx_path), load_external_data=False)
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    return int(dims[2]), int(dims[3])


# ---------------------------------------------------------------- builds

def build_model(onnx_path: Path, out_dir: Path, calib_npy: Path, export_tflite: bool = True,
                patch: str = "auto") -> dict:
    """tinyc build for the benchmark board (`patch`: tinyc build --patch). A model that exceeds
    the board's budget is still measured (build_measured): returns its report either way, with
    report['fits'] set."""
    from tinyc.build import BuildOptions

    opts = BuildOptions(calib=str(calib_npy), export_tflite=export_tflite,
                        calib_limit=10_000, patch=patch)
    report = build_measured(onnx_path, BOARD, out_dir, opts)
    # run_host compiles the host executable only when it is missing: rebuild it now, or a reused
    # output folder (--keep) would run an executable compiled from an earlier model.c
    from tinyc.targets.host import build_host
    build_host(out_dir)
    return report


def build_measured(onnx_path, board_id: str, out_dir, opts) -> dict:
    """tinyc build for `board_id`; a model over the board's budget is refused (nothing written),
    so it is built again for the same board with unlimited SRAM and flash budgets, to be
    measured all the same. Returns the board's report (the refused one: its figures are those
    of the board) with 'fits' and, for a refusal, its first line as 'refusal'."""
    import dataclasses

    from tinyc.build import DoesNotFitError, build
    from tinyc.targets.boards import load_board

    board = load_board(board_id)
    try:
        report = build(str(onnx_path), board, str(out_dir), opts)
        return {**report, "fits": True}
    except DoesNotFitError as e:
        refusal = str(e).splitlines()[0]
        refused_path = getattr(e, "report_path", None)
    roomy = dataclasses.replace(board, sram_bytes=2 ** 31, flash_bytes=2 ** 31,
                                memory=None, firmware=None)
    report = build(str(onnx_path), roomy, str(out_dir), dataclasses.replace(opts, firmware=False))
    if refused_path:
        report = json.loads(Path(refused_path).read_text())
    else:   # refused before compiling: the figures of the build, the board's limits
        report.update(sram_limit_bytes=board.sram_bytes, flash_limit_bytes=board.flash_bytes)
    return {**report, "fits": False, "refusal": refusal}


# ---------------------------------------------------------------- provenance

def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def tinyc_source() -> Path:
    """The checkout the imported tinyc comes from (normally this repository; another checkout
    when PYTHONPATH points at a `tinyc` link to its compiler/ folder)."""
    import tinyc
    return Path(tinyc.__file__).resolve().parents[1]


def git_revision(root: Path) -> str:
    """Short commit of the checkout, flagged when its compiler, runtime or templates have
    uncommitted changes (results then do not correspond to any commit)."""
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "compiler",
                                "runtime_c", "templates", "boards"],
                               capture_output=True, text=True).stdout.strip()
        return rev + (" + uncommitted changes" if dirty else ", clean")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def gcc_version() -> str:
    try:
        out = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0] if out else "unknown"
    except OSError:
        return "unknown"


def provenance(argv: list[str] | None = None) -> dict:
    argv = sys.argv if argv is None else argv
    script = Path(argv[0]).resolve()
    try:
        script_txt = str(script.relative_to(REPO))
    except ValueError:
        script_txt = str(script)
    src = tinyc_source()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python " + shlex.join([script_txt] + list(argv[1:])),
        "tinyc": f"{_version('tinyc')} (git {git_revision(src)}"
                 + ("" if src == REPO else "; a separate checkout of that commit") + ")",
        "versions": {d: _version(d) for d in ("ai-edge-litert", "tflite-micro", "onnxruntime",
                                              "numpy", "onnx", "scikit-learn", "pillow")},
        "python": platform.python_version(),
        "host": f"{platform.machine()}, {gcc_version()}",
    }


def provenance_md(p: dict, runtime_s: float | None = None) -> str:
    lines = [f"- date: {p['date']}",
             f"- command (from the repository root, venv active): `{p['command']}`",
             f"- tinyc {p['tinyc']}",
             "- " + ", ".join(f"{k} {v}" for k, v in p["versions"].items()),
             f"- Python {p['python']}, {p['host']}"]
    if runtime_s is not None:
        lines.append(f"- runtime: {runtime_s:.0f} s")
    return "\n".join(lines)


def md_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def text_table(header: list[str], rows: list[list]) -> str:
    cols = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cols) for i in range(len(header))]
    fmt = lambda r: "  ".join((c.ljust(w) if i == 0 else c.rjust(w))
                              for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in cols[1:]])
