"""`make demo` runs examples/demo.py. Its short run (--quick) must go through, find C == TFLite
(part 1) and show the deployed learner (part 2): accuracy on the held-out digits clearly higher
after learning over the device link, and the same outputs after the power cut. The figures it
prints are checked against what the run left behind: the device's outputs, the labels, the
build report, and the host build (gcc) with the parameters pulled from the device."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from test_firmware import needs_qemu, needs_toolchain

ROOT = Path(__file__).resolve().parents[1]
LEARNER = ROOT / "out" / "demo" / "learner"


def percent(text: str, pattern: str) -> float:
    m = re.search(pattern, text)
    assert m, f"no match for {pattern!r} in:\n{text}"
    return float(m.group(1)) / 100


@needs_toolchain
@needs_qemu
def test_demo_runs():
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--quick"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert "Traceback" not in res.stderr
    # part 1: inference, C == TFLite == TFLM
    part1 = out.split("== Part 2")[0]
    assert "True" in part1 and "False" not in part1.split("TFLM")[-1]
    assert (ROOT / "out" / "demo" / "memory.png").is_file()

    # part 2: the deployed learner
    before = percent(out, r"before learning: accuracy ([\d.]+)%")
    after = percent(out, r"after learning: accuracy ([\d.]+)%")
    restart = percent(out, r"after the restart: accuracy ([\d.]+)%")
    assert after - before >= 0.3, out   # the short run gives about +60 points
    assert restart == after
    assert "outputs identical to before the cut: True" in out
    assert "identical: True" in out
    assert "the firmware said 'storage: restored slot A seq 1'" in out
    assert "the device now reports: parameters from slot A seq 1" in out
    assert out.split("from the command line")[1].count("parameters from slot A seq 1") == 1

    # the printed accuracies are those of the device's outputs against the data set's labels
    sys.path.insert(0, str(ROOT / "examples"))
    from digits_net import new_task
    _, (_, labels) = new_task(seed=0)
    saved = np.load(LEARNER / "outputs.npz")
    labels = labels[:len(saved["labels"])]
    assert np.array_equal(saved["labels"], labels) and len(labels) == 200
    for name, printed in (("before", before), ("after", after), ("restart", restart)):
        acc = np.mean(np.argmax(saved[name].astype(int), axis=1) == labels)
        assert abs(acc - printed) <= 0.0005, name
    assert np.array_equal(saved["after"], saved["restart"])
    assert not np.array_equal(saved["before"], saved["after"])

    # the outputs after learning are the host build's with the parameters the device holds
    from tinyc.cli import model_inputs
    from tinyc.targets.host import HostTrainer
    build = LEARNER / "build"
    rep = json.loads((build / "report.json").read_text())
    _, (x_test, _) = new_task(seed=0)
    trained = dict(np.load(LEARNER / "trained_params.npz"))
    with HostTrainer(build) as t:
        t.set_params(trained)
        y_host = t.infer(model_inputs(rep, x_test[:200], "x")).reshape(200, -1)
    assert np.array_equal(y_host, saved["after"])

    # SRAM from the build report; instructions counted by the firmware (QEMU -icount)
    assert f"training step {rep['training']['sram_bytes']:,} B planned" in out
    assert f"firmware RAM {rep['firmware']['ram_bytes']:,} B of 262,144 B" in out
    m = re.search(r"instructions per training step: ([\d,]+) \(median, min ([\d,]+), "
                  r"max ([\d,]+)\); per inference: ([\d,]+)", out)
    assert m, out
    step, lo, hi, infer = (int(g.replace(",", "")) for g in m.groups())
    assert lo <= step <= hi and infer < lo   # a step is a forward pass and more
    assert rep["macs"] < infer                # at least an instruction per multiply-accumulate


def test_demo_refuses_unknown_options():
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--fast"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 1 and "usage:" in res.stderr and "Traceback" not in res.stderr
