"""`make demo` runs examples/demo.py: it must run through and find C == TFLite."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs():
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py")], capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "True" in res.stdout and "False" not in res.stdout.split("TFLM")[-1]
    assert (ROOT / "out" / "demo" / "memory.png").is_file()
