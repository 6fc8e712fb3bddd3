"""Independent int8 oracles for exported .tflite models.

- run_litert_ref: LiteRT (ai-edge-litert) with the BUILTIN_REF op resolver, i.e. TFLite's
  reference kernels (the default optimized / XNNPACK kernels round differently and are NOT
  bit-comparable).
- run_tflm: TensorFlow Lite Micro (the `tflite-micro` package), whose kernels are what an MCU
  build of TFLite would run.
- tflm_arena_head / tflm_min_arena: TFLM's activation-arena figures.

Both runtimes are optional test/benchmark dependencies; they are imported lazily.

Known differences (see SOFTMAX_NOTES.md): LiteRT 2.3's reference FULLY_CONNECTED rounds once
where TFLM (and our reference) round twice, so compare LiteRT on export_tflite(g, fc_as_conv=True);
both runtimes abort the process on an int8 SOFTMAX row whose sum of exponentials reaches 512.
"""
from __future__ import annotations

import os
import re
import tempfile

import numpy as np


def _check_input(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise TypeError(f"oracle input must be int8, got {x.dtype}")
    return np.ascontiguousarray(x)


def run_litert_ref(tflite_bytes: bytes, x_int8_nhwc) -> np.ndarray:
    """Run the model once in LiteRT's reference kernels; returns output 0 (int8)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=bytes(tflite_bytes),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    x = _check_input(x_int8_nhwc)
    if tuple(inp["shape"]) != x.shape:
        raise ValueError(f"input shape {x.shape} != model input {tuple(inp['shape'])}")
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    out = interp.get_output_details()[0]
    return np.array(interp.get_tensor(out["index"]), copy=True)


def _tflm():
    import tflite_micro.python.tflite_micro.runtime as tflm
    return tflm


def _default_arena(tflite_bytes: bytes) -> int:
    # Activations of the models we export are well under 16 MB; the model size term covers
    # big persistent data. Arena memory is only reserved, not touched, beyond what is used.
    return max(16 << 20, 4 * len(tflite_bytes))


def run_tflm(tflite_bytes: bytes, x_int8_nhwc, arena_size: int | None = None) -> np.ndarray:
    """Run the model once in TensorFlow Lite Micro; returns output 0 (int8)."""
    tflm = _tflm()
    interp = tflm.Interpreter.from_bytes(bytes(tflite_bytes),
                                         arena_size=arena_size or _default_arena(tflite_bytes))
    interp.set_input(_check_input(x_int8_nhwc), 0)
    interp.invoke()
    return np.array(interp.get_output(0), copy=True)


class _CaptureFd:
    """Capture what C/C++ code writes to a file descriptor (e.g. 2 = stderr)."""

    def __init__(self, fd: int = 2):
        self.fd = fd
        self.text = ""

    def __enter__(self):
        import sys
        for s in (sys.stdout, sys.stderr):
            s.flush()
        self._tmp = tempfile.TemporaryFile(mode="w+b")
        self._saved = os.dup(self.fd)
        os.dup2(self._tmp.fileno(), self.fd)
        return self

    def __exit__(self, *exc):
        try:
            _flush_c_stdio()
        finally:
            os.dup2(self._saved, self.fd)
            os.close(self._saved)
        self._tmp.seek(0)
        self.text = self._tmp.read().decode("utf-8", "replace")
        self._tmp.close()
        return False


def _flush_c_stdio():
    try:
        import ctypes
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


def tflm_allocations(tflite_bytes: bytes, arena_size: int | None = None) -> dict[str, int]:
    """TFLM's RecordingMicroAllocator report after one inference: {'total', 'head', 'tail'} bytes.

    'head' is the non-persistent section of the arena: the memory planner's activation buffers
    (every intermediate tensor, including the model input and output, each 16-byte aligned, with
    lifetimes overlapped by TFLM's greedy planner) plus kernel scratch buffers. 'tail' is the
    persistent section (interpreter, tensor and node structs, quantization params, op data);
    its size depends on the host's pointer width, so on a 64-bit host it overstates what an MCU
    needs.
    """
    tflm = _tflm()
    interp = tflm.Interpreter.from_bytes(bytes(tflite_bytes),
                                         arena_size=arena_size or _default_arena(tflite_bytes))
    inp = interp.get_input_details(0)
    interp.set_input(np.zeros(tuple(inp["shape"]), np.int8), 0)
    interp.invoke()
    with _CaptureFd(2) as cap:
        interp.print_allocations()
    found = {}
    for key in ("total", "head", "tail"):
        m = re.search(rf"Arena allocation {key} (\d+) bytes", cap.text)
        if m:
            found[key] = int(m.group(1))
    if "head" not in found:
        raise RuntimeError("could not read TFLM's allocation report from stderr; got:\n" + cap.text)
    return found


def tflm_arena_head(tflite_bytes: bytes) -> int:
    """Bytes of TFLM's activation arena ('head') for the model, from print_allocations.

    The head is the figure comparable to our own memory planner's peak activation memory: it is
    exactly what TFLM's planner lays out for tensors and scratch buffers, independent of the
    pointer width of the host. (The smallest total arena found by bisection, tflm_min_arena, adds
    the persistent tail, which is inflated on a 64-bit host and so not comparable.)"""
    return tflm_allocations(tflite_bytes)["head"]


def tflm_min_arena(tflite_bytes: bytes, hi: int | None = None, step: int = 16) -> int:
    """Smallest arena_size (to `step` bytes) with which TFLM can run the model, by bisection.
    Includes the host-dependent persistent tail; see tflm_arena_head."""
    tflm = _tflm()
    inp_shape = None

    def ok(n: int) -> bool:
        nonlocal inp_shape
        try:
            with _CaptureFd(2):   # failed allocations print to stderr
                interp = tflm.Interpreter.from_bytes(bytes(tflite_bytes), arena_size=n)
                if inp_shape is None:
                    inp_shape = tuple(interp.get_input_details(0)["shape"])
                interp.set_input(np.zeros(inp_shape, np.int8), 0)
                interp.invoke()
            return True
        except (RuntimeError, ValueError):
            return False

    hi = hi or _default_arena(tflite_bytes)
    if not ok(hi):
        raise RuntimeError(f"TFLM cannot run the model even with a {hi}-byte arena")
    lo = 0
    while hi - lo > step:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi
