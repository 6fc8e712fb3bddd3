"""The default example (`make demo`): compile a pretrained CNN for the emulated 256 KB Cortex-M4
board, run the generated C on a real photo, and check it against TFLite's reference kernels.

Model: ../shared/models/mbv2-w0.35_96.onnx (ImageNet MobileNetV2-0.35) when present, otherwise
examples/tiny_cnn.onnx (random weights, written by examples/tiny_cnn.py).
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out" / "demo"
SHARED_MODEL = ROOT.parent / "shared" / "models" / "mbv2-w0.35_96.onnx"


def photos(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The two scikit-learn sample photos resized (test inputs) and 32 seeded crops of them
    (calibration), preprocessed as p / 127.5 - 1, NCHW float32."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    imgs = load_sample_images().images
    test, calib = [], []
    for im in imgs:
        test.append(np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)))
    for k in range(32):
        im = imgs[k % 2]
        s = int(rng.integers(120, 400))
        y, x = int(rng.integers(0, im.shape[0] - s)), int(rng.integers(0, im.shape[1] - s))
        crop = Image.fromarray(im[y:y + s, x:x + s]).resize((size, size), Image.BILINEAR)
        calib.append(np.asarray(crop))
    prep = lambda a: (np.stack(a).astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2)
    return prep(test), prep(calib)


def tinyc(*args):
    cmd = [sys.executable, "-m", "tinyc.cli", *map(str, args)]
    print("$ tinyc " + " ".join(map(str, args)), flush=True)
    subprocess.run(cmd, check=True)


def main():
    import onnxruntime as ort

    from tinyc.export.oracles import run_litert_ref, run_tflm
    from tinyc.pipeline import quantize_array

    if SHARED_MODEL.is_file():
        model, size = SHARED_MODEL, 96
    else:
        sys.path.insert(0, str(ROOT / "examples"))
        from tiny_cnn import build
        model, size = build(ROOT / "examples" / "tiny_cnn.onnx"), 64
        print(f"{SHARED_MODEL} not found: using the random-weight examples/tiny_cnn.onnx")
    OUT.mkdir(parents=True, exist_ok=True)
    test, calib = photos(size)
    np.save(OUT / "calib.npy", calib)
    np.save(OUT / "photos.npy", test)

    tinyc("build", model, "--board", "mps2_an386", "-o", OUT / "build", "--calib",
          OUT / "calib.npy", "--export-tflite")
    tinyc("emulate", OUT / "build", "--input", OUT / "photos.npy", "--output", OUT / "logits_int8.npy")
    tinyc("report", OUT / "build", "--plot", OUT / "memory.png")

    rep = json.loads((OUT / "build" / "report.json").read_text())
    y_c = np.load(OUT / "logits_int8.npy")
    tfl = (OUT / "build" / "model.tflite").read_bytes()
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    print("\nphoto      top-5 float ONNX (onnxruntime)     top-5 int8 generated C    C == TFLite ref == TFLM")
    all_equal = True
    for i, name in enumerate(["china.jpg", "flower.jpg"]):
        xq = quantize_array(test[i], rep["input"]["scale"], rep["input"]["zero_point"])
        xq = np.moveaxis(xq, 0, -1)[None]
        equal = (np.array_equal(run_litert_ref(tfl, xq).ravel(), y_c[i].ravel())
                 and np.array_equal(run_tflm(tfl, xq).ravel(), y_c[i].ravel()))
        all_equal &= equal
        y_f = sess.run(None, {sess.get_inputs()[0].name: test[i:i + 1]})[0][0]
        print(f"{name:<10} {str(np.argsort(-y_f)[:5].tolist()):<34} "
              f"{str(np.argsort(-y_c[i].astype(int), kind='stable')[:5].tolist()):<25} {equal}")
    print(f"\narena {rep['inference']['arena_bytes']:,} B, weights {rep['weights_bytes']:,} B, "
          f"{rep['macs']:,} MACs; memory plot: {OUT / 'memory.png'}")
    if not all_equal:
        sys.exit("the generated C differs from TFLite: this is a bug")
    fw = rep.get("firmware", {})
    if fw.get("built"):
        # the same photos through the Cortex-M4 firmware under QEMU
        tinyc("emulate", OUT / "build", "--input", OUT / "photos.npy", "--output",
              OUT / "logits_qemu.npy", "--qemu")
        same = np.array_equal(np.load(OUT / "logits_qemu.npy"), y_c)
        print(f"firmware: RAM {fw['ram_bytes']:,} B, flash {fw['flash_bytes']:,} B; QEMU output "
              f"== host C output: {same}")
        if not same:
            sys.exit("the firmware under QEMU differs from the host build: this is a bug")
    else:
        print(f"firmware not built: {fw.get('reason')}")


if __name__ == "__main__":
    main()
