"""Host target: build the generated C with the machine's gcc and run it on int8 inputs.

build_host(out_dir) compiles out_dir/model.c, out_dir/tinyc/*.c and the stdin/stdout harness
runtime_c/host/tinyc_host_main.c into out_dir/tinyc_host (an ordinary executable, so a crash in
a kernel cannot take the calling Python process down). run_host(out_dir, x) pipes int8 inputs
through it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np

from .. import procs
from ..errors import TinycError, ToolFailedError
from .platformio import model_dir

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "runtime_c" / "host" / "tinyc_host_main.c"
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic")
EXE = "tinyc_host"
TRAIN_HARNESS = ROOT / "runtime_c" / "host" / "tinyc_train_main.c"
TRAIN_EXE = "tinyc_train_host"
TRAIN_CFLAGS = ("-ffp-contract=off",)


def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise TinycError("no C compiler found for the host target: install gcc "
                         "(apt-get install gcc) or set CC")
    return cc


def is_training_build(out_dir) -> bool:
    """The generated project has tinyc_train_step() (built with --train)."""
    return "TINYC_TRAINING" in model_defines(out_dir)


def build_host(out_dir, extra_flags: tuple[str, ...] = (), harness: Path = HARNESS,
               exe_name: str = EXE) -> Path:
    """Compile the generated project in out_dir into out_dir/tinyc_host; returns its path.
    A training build is compiled without floating-point contraction (no FMA: the backward pass
    must round every product as the numpy reference does) and linked with libm (logf)."""
    out = Path(out_dir)
    lib = model_dir(out)
    if not (lib / "model.c").is_file():
        raise TinycError(f"{out}: no model.c; generate the C code first (tinyc build)")
    sources = [str(lib / "model.c")] + sorted(str(p) for p in (lib / "tinyc").glob("*.c"))
    exe = out / exe_name
    train = is_training_build(out)
    # linked under a temporary name, then renamed: another `tinyc emulate` may be running it
    tmp = out / f".{exe_name}.{os.getpid()}.tmp"
    cmd = [_compiler(), *CFLAGS, *(TRAIN_CFLAGS if train else ()), *extra_flags, "-I", str(lib),
           *sources, str(harness), "-o", str(tmp), *(("-lm",) if train else ())]
    try:
        res = procs.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise ToolFailedError(f"host build failed ({' '.join(cmd)}):\n{res.stderr.strip()}")
        os.replace(tmp, exe)
    finally:
        tmp.unlink(missing_ok=True)
    return exe


def model_defines(out_dir) -> dict[str, str]:
    """The #define TINYC_* values of out_dir/model.h."""
    text = (model_dir(out_dir) / "model.h").read_text()
    return dict(re.findall(r"^#define (TINYC_\w+) (.+)$", text, flags=re.M))


def _int_define(defs: dict, key: str) -> int:
    return int(defs[key].strip("()"))


def _stale(out: Path, exe: Path, harness: Path = HARNESS) -> bool:
    """The executable is missing or older than a source it is built from (a rebuild into the
    same folder must never run the previous model)."""
    lib = model_dir(out)
    if not exe.is_file() or not (lib / "model.c").is_file():   # build_host says what is missing
        return True
    sources = [lib / "model.c", lib / "model.h", harness, *(lib / "tinyc").glob("*")]
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
    try:
        res = procs.run([str(exe)], input=np.ascontiguousarray(x).tobytes(),
                        capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TinycError(f"{exe} did not finish within {timeout:.0f} s (killed)") from None
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


# ---------------------------------------------------------------- training builds
def build_host_training(out_dir, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile a training build with the training harness (runtime_c/host/tinyc_train_main.c)
    into out_dir/tinyc_train_host; returns its path."""
    out = Path(out_dir)
    if not (model_dir(out) / "model.h").is_file() or not is_training_build(out):
        raise TinycError(f"{out}: not a training build (tinyc build ... --train SCHEME)")
    return build_host(out, extra_flags, TRAIN_HARNESS, TRAIN_EXE)


class HostTrainer:
    """A running training harness: tinyc_train_step / tinyc_infer / parameter access of the
    generated C in a child process (so a crash cannot take Python down). Use as a context
    manager; the parameters start from their initial (flash) values and step count 0.

        with HostTrainer(out) as t:
            losses = t.train(x_int8_nhwc, labels, lr=0.01)
            params = t.params()          # tensor name -> int8 / int32 array
            logits = t.infer(x_int8_nhwc)
    """

    CHUNK = 1024   # commands written before their replies are read (replies < pipe buffer)

    def __init__(self, out_dir, extra_flags: tuple[str, ...] = (), rebuild: bool = False):
        self.out = Path(out_dir)
        exe = self.out / TRAIN_EXE
        if rebuild or extra_flags or _stale(self.out, exe, TRAIN_HARNESS):
            build_host_training(self.out, extra_flags)
        defs = model_defines(self.out)
        self.n_in = _int_define(defs, "TINYC_INPUT_SIZE")
        self.n_out = _int_define(defs, "TINYC_OUTPUT_SIZE")
        self.classes = _int_define(defs, "TINYC_NUM_CLASSES")
        self.mse = _int_define(defs, "TINYC_LOSS_MSE") == 1 if "TINYC_LOSS_MSE" in defs else False
        self.out_shape = tuple(int(v) for v in defs["TINYC_OUTPUT_SHAPE"].strip("{} ").split(","))
        self.table = json.loads((model_dir(self.out) / "train_params.json").read_text())
        self.param_bytes = _int_define(defs, "TINYC_PARAM_BYTES")
        self.proc = procs.popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    # -- plumbing
    def _send(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._died()

    def _recv(self, n: int) -> bytes:
        data = self.proc.stdout.read(n)
        if len(data) != n:
            self._died()
        return data

    def _died(self):
        procs.kill(self.proc)
        err = self.proc.stderr.read().decode(errors="replace").strip()
        raise TinycError(f"{self.out / TRAIN_EXE} stopped (exit code {self.proc.wait()})"
                         + (f": {err}" if err else ""))

    def _inputs(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.int8:
            raise TinycError(f"the training harness takes int8 inputs (got {x.dtype}); "
                             "quantize them first")
        if x.size % self.n_in:
            raise TinycError(f"input of {x.size} values is not a whole number of model inputs "
                             f"({self.n_in} values each)")
        return np.ascontiguousarray(x).reshape(-1, self.n_in)

    # -- commands
    def train(self, x, labels, lr, progress=None) -> np.ndarray:
        """One tinyc_train_step per sample, in order; returns the float32 losses. `lr` is one
        rate for every step or one per sample (a schedule, e.g. decaying over the epoch: the
        step takes its rate per call). `progress` (optional) is called with the number of steps
        done after each chunk."""
        xs = self._inputs(x)
        rates = np.asarray(lr, np.float32).reshape(-1)
        if rates.size == 1:
            rates = np.full(len(xs), rates[0], np.float32)
        elif rates.size != len(xs):
            raise TinycError(f"{len(xs)} inputs but {rates.size} learning rates: give one rate "
                             "or one per input")
        if self.mse:   # int8 targets of the output's shape and quantization
            targets = np.asarray(labels)
            if targets.dtype != np.int8 or targets.size != len(xs) * self.n_out:
                raise TinycError(f"{len(xs)} inputs need {len(xs)} int8 targets of "
                                 f"{self.n_out} values (got {targets.dtype} {targets.shape})")
            keys = [t.tobytes() for t in np.ascontiguousarray(targets).reshape(len(xs), -1)]
        else:
            labels = np.asarray(labels).reshape(-1)
            if len(labels) != len(xs):
                raise TinycError(f"{len(xs)} inputs but {len(labels)} labels")
            bad = np.flatnonzero((labels < 0) | (labels >= self.classes))
            if len(bad):
                raise TinycError(f"label {labels[bad[0]]} of sample {bad[0]} is out of range: "
                                 f"the model has {self.classes} classes")
            keys = [struct.pack("=i", int(v)) for v in labels]
        heads = [struct.pack("=f", float(r)) for r in rates]
        losses = np.empty(len(xs), np.float32)
        for start in range(0, len(xs), self.CHUNK):
            stop = min(start + self.CHUNK, len(xs))
            self._send(b"".join(b"T" + keys[k] + heads[k] + xs[k].tobytes()
                                for k in range(start, stop)))
            losses[start:stop] = np.frombuffer(self._recv(4 * (stop - start)), np.float32)
            if progress is not None:
                progress(stop)
        return losses

    def step(self, x, label: int, lr: float) -> float:
        return float(self.train(np.asarray(x)[None], [label], lr)[0])

    def infer(self, x) -> np.ndarray:
        """tinyc_infer on each input (N, ...) -> int8 outputs (N,) + output shape[1:]."""
        xs = self._inputs(x)
        chunk = max(1, min(self.CHUNK, 65536 // max(self.n_out, 1) // 2))
        ys = []
        for start in range(0, len(xs), chunk):
            part = xs[start:start + chunk]
            self._send(b"".join(b"I" + v.tobytes() for v in part))
            ys.append(np.frombuffer(self._recv(self.n_out * len(part)), np.int8))
        y = np.concatenate(ys) if ys else np.zeros(0, np.int8)
        return y.reshape((len(xs),) + self.out_shape[1:]).copy()

    def params(self) -> dict[str, np.ndarray]:
        """The current trained parameters: tensor name -> int8 weights / int32 biases."""
        self._send(b"P")
        raw = self._recv(self.param_bytes)
        out, at = {}, 0
        for p in self.table:
            dt = np.int8 if p["dtype"] == "int8" else np.int32
            out[p["name"]] = np.frombuffer(raw[at:at + p["bytes"]], dt).reshape(p["shape"]).copy()
            at += p["bytes"]
        return out

    def guard_stats(self):
        """The training guard's counters since the start (tinyc_get_train_stats), as the
        reference's GuardStats."""
        from ..reference.train import GuardStats
        self._send(b"G")
        return GuardStats(*(int(v) for v in np.frombuffer(self._recv(24), np.uint32)))

    def set_params(self, params: dict) -> None:
        """Load trained parameters (tensor name -> array, as params() returns them)."""
        chunks = []
        for p in self.table:
            if p["name"] not in params:
                raise TinycError(f"parameter '{p['name']}' is missing")
            dt = np.int8 if p["dtype"] == "int8" else np.int32
            v = np.asarray(params[p["name"]])
            if v.size * np.dtype(dt).itemsize != p["bytes"]:
                raise TinycError(f"parameter '{p['name']}' has {v.size} values, expected "
                                 f"{p['bytes'] // np.dtype(dt).itemsize}")
            chunks.append(np.ascontiguousarray(v, dt).tobytes())
        self._send(b"L" + b"".join(chunks))
        self._recv(1)

    def set_step(self, step: int) -> None:
        self._send(b"S" + struct.pack("=I", int(step) & 0xFFFFFFFF))
        self._recv(1)

    def reset(self) -> None:
        """Back to the initial parameters and step 0 (tinyc_train_init)."""
        self._send(b"R")
        self._recv(1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                procs.kill(self.proc)
        procs.finished(self.proc)
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_host_training(out_dir, x_int8_nhwc: np.ndarray, labels, lr: float
                      ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Train a fresh instance of the generated C (initial parameters, step 0) on the samples
    in order, one step each; returns (float32 losses, trained parameters name -> array)."""
    with HostTrainer(out_dir) as t:
        losses = t.train(x_int8_nhwc, labels, lr)
        return losses, t.params()
