"""Host target: build the generated C with the machine's gcc and run it on int8 inputs.

build_host(out_dir) compiles out_dir/model.c, out_dir/tinyc/*.c and the stdin/stdout harness
runtime_c/host/tinyc_host_main.c into out_dir/tinyc_host (an ordinary executable, so a crash in
a kernel cannot take the calling Python process down). run_host(out_dir, x) pipes int8 inputs
through it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..errors import TinycError
from .platformio import model_dir

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "runtime_c" / "host" / "tinyc_host_main.c"
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic")
EXE = "tinyc_host"


def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise TinycError("no C compiler found for the host target: install gcc "
                         "(apt-get install gcc) or set CC")
    return cc


def build_host(out_dir, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile the generated project in out_dir into out_dir/tinyc_host; returns its path."""
    out = Path(out_dir)
    lib = model_dir(out)
    if not (lib / "model.c").is_file():
        raise TinycError(f"{out}: no model.c; generate the C code first (tinyc build)")
    sources = [str(lib / "model.c")] + sorted(str(p) for p in (lib / "tinyc").glob("*.c"))
    exe = out / EXE
    cmd = [_compiler(), *CFLAGS, *extra_flags, "-I", str(lib), *sources, str(HARNESS),
           "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise TinycError(f"host build failed ({' '.join(cmd)}):\n{res.stderr.strip()}")
    return exe


def model_defines(out_dir) -> dict[str, str]:
    """The #define TINYC_* values of out_dir/model.h."""
    text = (model_dir(out_dir) / "model.h").read_text()
    return dict(re.findall(r"^#define (TINYC_\w+) (.+)$", text, flags=re.M))


def _int_define(defs: dict, key: str) -> int:
    return int(defs[key].strip("()"))


def _stale(out: Path, exe: Path) -> bool:
    """The executable is missing or older than a source it is built from (a rebuild into the
    same folder must never run the previous model)."""
    if not exe.is_file():
        return True
    lib = model_dir(out)
    sources = [lib / "model.c", lib / "model.h", HARNESS, *(lib / "tinyc").glob("*")]
    built = exe.stat().st_mtime_ns
    return any(p.is_file() and p.stat().st_mtime_ns >= built for p in sources)


def run_host(out_dir, x_int8_nhwc: np.ndarray, timeout: float = 600.0) -> np.ndarray:
    """Run the host build (rebuilt first if missing or stale) on one input (1,H,W,C) or a batch (N,H,W,C);
    returns the int8 output in the graph output's shape (batch dimension N for a batch)."""
    out = Path(out_dir)
    exe = out / EXE
    if _stale(out, exe):
        build_host(out)
    defs = model_defines(out)
    n_in, n_out = _int_define(defs, "TINYC_INPUT_SIZE"), _int_define(defs, "TINYC_OUTPUT_SIZE")
    x = np.asarray(x_int8_nhwc)
    if x.dtype != np.int8:
        raise TinycError(f"run_host takes int8 input (got {x.dtype}); quantize it first")
    if x.size % n_in:
        raise TinycError(f"input of {x.size} values is not a whole number of model inputs "
                         f"({n_in} values each)")
    batch = x.size // n_in
    res = subprocess.run([str(exe)], input=np.ascontiguousarray(x).tobytes(),
                         capture_output=True, timeout=timeout)
    if res.returncode != 0:
        raise TinycError(f"{exe} failed with exit code {res.returncode}: "
                         f"{res.stderr.decode(errors='replace').strip()}")
    y = np.frombuffer(res.stdout, dtype=np.int8)
    if y.size != batch * n_out:
        raise TinycError(f"{exe} wrote {y.size} bytes, expected {batch * n_out}")
    shape = tuple(int(v) for v in defs["TINYC_OUTPUT_SHAPE"].strip("{} ").split(","))
    if batch == 1 and x.ndim != 4 or x.ndim == 4 and x.shape[0] == 1:
        return y.reshape(shape).copy()
    return y.reshape((batch,) + shape[1:]).copy()
