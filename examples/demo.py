"""The default example (`make demo`), on the emulated 256 KB Cortex-M4 board (mps2_an386).

Part 1, inference: compile a pretrained CNN, run the generated C on two photos and check it
against TFLite's reference kernels, then the firmware under QEMU. Model:
../shared/models/mbv2-w0.35_96.onnx (ImageNet MobileNetV2-0.35) when present, otherwise
examples/tiny_cnn.onnx (random weights, written by examples/tiny_cnn.py).

Part 2, the deployed learner: a small network pretrained on the host on the digits 0-4
(examples/digits_net.py, scikit-learn's bundled 8x8 digits) is built for training with a new
5-class head. Through the device link, the firmware under QEMU classifies held-out digits 5-9,
learns them from labelled samples, classifies again, saves its parameters to its flash (a host
file), loses power (QEMU killed) and, restarted, holds what it learned.

    python examples/demo.py [--quick] [--learner-only]
--quick: part 2 on 200 samples, 2 epochs (the test's short run); --learner-only: skip part 1.
"""
import json
import subprocess
import sys
import time
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


def inference_demo():
    """Part 1: a pretrained CNN compiled for the board, its C checked against TFLite."""
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


LEARNER_SCHEME = "last:1"   # the new head and the last hidden layer (weights and biases)
LEARNER_LRS = (0.03, 0.01, 0.003)   # one per epoch: each request carries its own lr


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(outputs.astype(int), axis=1) == labels))


def infer_all(dev, xq: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Every sample through the device link: the int8 outputs and the cost of each inference."""
    outs, costs = [], []
    for x in xq:
        y, cost = dev.infer(x.reshape(-1))
        outs.append(y)
        costs.append(cost)
    return np.stack(outs), costs


def learner_demo(quick: bool) -> None:
    """Part 2: the deployed learner. The emulated board learns a new task over the device link,
    saves what it learned, loses power and still holds it after the restart."""
    from digits_net import NEW_TASK, build, new_task

    from tinyc import procs
    from tinyc.cli import model_inputs
    from tinyc.targets.boards import load_board
    from tinyc.targets.qemu import QemuLink

    out = OUT / "learner"
    out.mkdir(parents=True, exist_ok=True)
    (x_learn, y_learn), (x_test, y_test) = new_task(seed=0)
    lrs = LEARNER_LRS
    if quick:   # the test's short run
        (x_learn, y_learn), (x_test, y_test), lrs = (x_learn[:200], y_learn[:200]), \
            (x_test[:200], y_test[:200]), LEARNER_LRS[:2]
    epochs = len(lrs)
    print(f"\n== Part 2: the deployed learner (digits, scikit-learn's load_digits) ==\n"
          f"model: pretrained on the host on the digits 0-4 (examples/digits_net.py); the board "
          f"learns a new task, the digits {NEW_TASK[0]}-{NEW_TASK[-1]}, with a new 5-class head",
          flush=True)
    model = build(out / "digits_net.onnx")
    np.save(out / "calib.npy", x_learn[:64])
    tinyc("build", model, "--board", "mps2_an386", "-o", out / "build", "--calib",
          out / "calib.npy", "--train", LEARNER_SCHEME, "--num-classes", len(NEW_TASK),
          "--lr", LEARNER_LRS[0])
    rep = json.loads((out / "build" / "report.json").read_text())
    if not rep.get("firmware", {}).get("built"):
        sys.exit(f"firmware not built: {rep.get('firmware', {}).get('reason')}")
    board = load_board("mps2_an386")
    q_learn, q_test = model_inputs(rep, x_learn, "x"), model_inputs(rep, x_test, "x")
    flash = out / "flash.bin"            # the emulated board's flash: a fresh, erased one
    flash.unlink(missing_ok=True)
    t_start = time.monotonic()

    print(f"QEMU {board.qemu_machine}: the firmware serves the device link on a pty", flush=True)
    with QemuLink(out / "build", board, rep, timeout=20, storage=flash) as link:
        dev = link.device
        info = dev.check_build(out / "build")
        boot_storage = dev.storage()
        y_before, infer_costs = infer_all(dev, q_test)
        acc_before = accuracy(y_before, y_test)
        print(f"held-out {len(y_test)} digits, before learning: accuracy {acc_before:.1%}",
              flush=True)
        t0 = time.monotonic()
        answers = [dev.train(q_learn[i].reshape(-1), int(y_learn[i]), lr)
                   for epoch, lr in enumerate(lrs)
                   for i in np.random.default_rng(epoch).permutation(len(y_learn))]
        t_learn = time.monotonic() - t0
        y_after, _ = infer_all(dev, q_test)
        acc_after = accuracy(y_after, y_test)
        trained = dev.pull(json.loads(
            (out / "build" / "lib" / "tinyc_model" / "train_params.json").read_text()))
        params_after, step_after = dev.read_params(), dev.step()
        saved = dev.save()
        procs.kill(link.proc)            # the power cut: QEMU killed, no shutdown of any kind
    with QemuLink(out / "build", board, rep, timeout=20, storage=flash) as link:   # power on
        dev = link.device
        dev.check_build(out / "build")
        restored = dev.storage()
        params_restart, step_restart = dev.read_params(), dev.step()
        y_restart, _ = infer_all(dev, q_test)
        console = "".join(link.console)
    t_device = time.monotonic() - t_start

    np.savez(out / "trained_params.npz", **trained)
    np.savez(out / "outputs.npz", before=y_before, after=y_after, restart=y_restart,
             labels=y_test)
    costs = [a.cost for a in answers]
    boot_line = next((ln.strip() for ln in console.splitlines() if ln.startswith("storage:")),
                     "no storage line")
    same_outputs = np.array_equal(y_restart, y_after)
    same_params = params_restart == params_after and step_restart == step_after
    tr, fw = rep["training"], rep["firmware"]
    print(f"learned over the link from {len(y_learn)} labelled samples x {epochs} epochs "
          f"(lr {', '.join(map(str, lrs))}): "
          f"{len(answers)} steps in {t_learn:.1f} s, loss {np.mean([a.loss for a in answers[:len(y_learn)]]):.3f} "
          f"(first epoch) -> {np.mean([a.loss for a in answers[-len(y_learn):]]):.3f} (last); "
          f"guard: {answers[-1].skipped} skipped, {answers[-1].guarded} with refused updates")
    print(f"held-out {len(y_test)} digits, after learning: accuracy {acc_after:.1%}")
    print(f"saved: {saved.describe()}; power cut (QEMU killed); restarted, the firmware said "
          f"'{boot_line}'; the device now reports: {restored.describe()}")
    print(f"after the restart: accuracy {accuracy(y_restart, y_test):.1%}, outputs identical to "
          f"before the cut: {same_outputs}, parameters and step index ({step_restart}) "
          f"identical: {same_params}")
    print("the same board from the command line (a third boot on that flash):", flush=True)
    tinyc("device", out / "build", "--qemu", "--storage", flash, "storage")
    print(f"\nsummary (mps2_an386, 256 KB SRAM, Cortex-M4F under QEMU; figures of this run)\n"
          f"  accuracy on {len(y_test)} held-out digits: {acc_before:.1%} before -> "
          f"{acc_after:.1%} after learning -> {accuracy(y_restart, y_test):.1%} after the power cut\n"
          f"  SRAM: training step {tr['sram_bytes']:,} B planned (report.json training.sram_bytes: "
          f"arena, trained parameters, stack reserve); firmware RAM {fw['ram_bytes']:,} B of "
          f"{rep['sram_limit_bytes']:,} B\n"
          f"  {info.unit} per training step: {int(np.median(costs)):,} (median, min {min(costs):,}, "
          f"max {max(costs):,}); per inference: {int(np.median(infer_costs)):,}\n"
          f"  time on the emulated board: {t_device:.1f} s (learning {t_learn:.1f} s, "
          f"{len(answers) / t_learn:.0f} steps/s over the pty)")
    if not (same_outputs and same_params and restored.loaded == saved.loaded):
        sys.exit("the device did not hold what it learned across the power cut: this is a bug")
    if boot_storage.loaded is not None:
        sys.exit("the fresh flash held saved parameters: this is a bug")


def main():
    args = sys.argv[1:]
    if any(a not in ("--quick", "--learner-only") for a in args):
        print(f"usage: {sys.argv[0]} [--quick] [--learner-only]", file=sys.stderr)
        sys.exit(1)
    from tinyc.errors import TinycError
    t0 = time.monotonic()
    try:
        if "--learner-only" not in args:
            print("== Part 1: inference, the generated C against TFLite ==", flush=True)
            inference_demo()
        learner_demo(quick="--quick" in args)
    except subprocess.CalledProcessError as e:   # tinyc printed its own error
        sys.exit(f"demo: `tinyc {' '.join(map(str, e.cmd[3:]))}` failed (exit status {e.returncode})")
    except TinycError as e:                      # QEMU or the device link
        sys.exit(f"demo: {e}")
    print(f"\ndemo wall time {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
