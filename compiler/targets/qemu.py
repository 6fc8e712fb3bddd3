"""Run a built firmware under QEMU (the emulated mps2 boards): `tinyc emulate OUT --qemu`.

The demo firmware reads int8 NHWC samples from a host file through semihosting, writes the
outputs to another, and prints one line per sample with the instruction count of the inference
(QEMU -icount shift=0 makes SysTick a deterministic instruction counter; see counter.c). A
guest that hangs is killed after `timeout` seconds; a stack overflow (the MPU guard below the
stack) ends the firmware with status 3 and a message, reported here as an error.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import procs
from ..errors import TinycError, ToolFailedError
from .boards import Board
from .platformio import ELF_PATH, file_sha256, model_dir

EXIT_USAGE, EXIT_STACK_OVERFLOW, EXIT_FAULT = 2, 3, 4
SAMPLE_RE = re.compile(r"^sample (\d+) (instructions|cycles) (\d+) argmax (-?\d+) output((?: -?\d+)*)$")
STACK_RE = re.compile(r"^stack (\d+) of (\d+) bytes$")
PROFILE_RE = re.compile(r"^profile (\d+) (\d+)$")


class QemuError(ToolFailedError):
    pass


@dataclass
class DemoOutput:
    """What the demo firmware printed."""
    counts: list[int] = field(default_factory=list)
    unit: str = ""
    argmax: list[int] = field(default_factory=list)
    outputs: list[list[int]] = field(default_factory=list)
    stack_used: int | None = None
    stack_size: int | None = None
    done: int | None = None
    profile: dict[int, int] = field(default_factory=dict)   # layer -> count (--profile)


def parse_demo_output(text: str) -> DemoOutput:
    """Parses the lines the demo prints (templates/main.c.j2)."""
    d = DemoOutput()
    for line in text.splitlines():
        line = line.strip()
        m = SAMPLE_RE.match(line)
        if m:
            if int(m.group(1)) != len(d.counts):
                raise QemuError(f"demo output out of order: {line[:60]}")
            d.unit = m.group(2)
            d.counts.append(int(m.group(3)))
            d.argmax.append(int(m.group(4)))
            d.outputs.append([int(v) for v in m.group(5).split()])
            continue
        m = PROFILE_RE.match(line)
        if m:
            d.profile[int(m.group(1))] = int(m.group(2))
            continue
        m = STACK_RE.match(line)
        if m:
            d.stack_used, d.stack_size = int(m.group(1)), int(m.group(2))
        elif line.startswith("done "):
            d.done = int(line.split()[1])
    return d


def qemu_command(board: Board, elf: Path, args: list[str]) -> list[str]:
    return ["qemu-system-arm", "-M", board.qemu_machine, "-nographic", "-monitor", "none",
            "-serial", "none", "-icount", "shift=0",
            "-semihosting-config", "enable=on,target=native," + ",".join(f"arg={a}" for a in args),
            "-kernel", str(elf)]


def firmware_elf(out, board: Board, report: dict) -> Path:
    out = Path(out)
    if not board.qemu_machine:
        raise TinycError(f"board '{board.id}' is real hardware, not a QEMU machine: run its "
                         f"firmware with `tinyc flash {out}` (QEMU boards: mps2_an386, mps2_an500)")
    elf = out / ELF_PATH
    fw = report.get("firmware")
    if fw is None:
        raise TinycError(f"{out} was built with --no-firmware; rebuild without it to run it under "
                         "QEMU")
    if not fw.get("built") or not elf.is_file():
        raise TinycError(f"{out}: the firmware was not built ({fw.get('reason') or fw.get('error') or 'no ELF'}); "
                         "install the toolchain and rebuild")
    model_c = model_dir(out) / "model.c"
    if not model_c.is_file() or fw.get("model_c_sha256") != file_sha256(model_c):
        raise TinycError(f"{elf} was not built from the current {model_c}: rebuild with "
                         "tinyc build")
    return elf


def _run_guest(board: Board, cmd: list[str], cwd: Path, timeout: float, on_line=None) -> str:
    """Runs QEMU, feeding each line the firmware prints to `on_line`; returns its output. A
    guest still running after `timeout` seconds is killed; a stack overflow or any other exit
    status than 0 is an error."""
    import threading
    proc = procs.popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, errors="replace")
    lines: list[str] = []
    err: list[str] = []

    def pump_out():
        for line in proc.stdout:
            lines.append(line)
            if on_line is not None:
                on_line(line)

    readers = [threading.Thread(target=pump_out, daemon=True),
               threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)]
    for r in readers:
        r.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        procs.kill(proc)
        for r in readers:
            r.join(5)
        proc.stdout.close()
        proc.stderr.close()
        printed = "".join(lines).strip().splitlines()
        raise QemuError(
            f"the firmware on {board.qemu_machine} did not finish within {timeout:.0f} s "
            f"(hung guest, killed); last output: {printed[-1:] or 'none'}. "
            "Raise --timeout for a very large model") from None
    except BaseException:   # Ctrl-C, SIGTERM: QEMU goes too
        procs.kill(proc)
        raise
    procs.finished(proc)
    for r in readers:
        r.join()
    proc.stdout.close()
    proc.stderr.close()
    text = "".join(lines)
    if proc.returncode == EXIT_STACK_OVERFLOW:
        msg = next((ln for ln in text.splitlines() if "stack overflow" in ln), "stack overflow")
        raise QemuError(f"board '{board.id}': {msg.replace('tinyc: error: ', '')}")
    if proc.returncode != 0:
        last = "\n".join((text + "".join(err)).strip().splitlines()[-5:])
        raise QemuError(f"the firmware on {board.qemu_machine} exited with status "
                        f"{proc.returncode}:\n{last}")
    return text


def _require_qemu() -> None:
    if not shutil.which("qemu-system-arm"):
        raise TinycError("qemu-system-arm not found: apt-get install --no-install-recommends "
                         "qemu-system-arm")


def run_qemu(out, board: Board, report: dict, x_int8_nhwc: np.ndarray,
             timeout: float = 300.0) -> tuple[np.ndarray, DemoOutput]:
    """Runs the firmware of `out` on int8 NHWC inputs (N, H, W, C); returns the int8 outputs
    (N, output size) and what the demo printed."""
    _require_qemu()
    elf = firmware_elf(out, board, report).resolve()
    if "training" in report:   # its demo trains: inference goes through the device link
        return run_qemu_link_inference(out, board, report, x_int8_nhwc, timeout)
    x = np.ascontiguousarray(np.asarray(x_int8_nhwc, np.int8))
    n = x.shape[0]
    out_size = int(np.prod(report["output"]["shape"]))
    with tempfile.TemporaryDirectory(prefix="tinyc-qemu-") as tmp:
        tmp = Path(tmp)
        (tmp / "in.bin").write_bytes(x.tobytes())
        text = _run_guest(board, qemu_command(board, elf, ["firmware", "in.bin", "out.bin"]),
                          tmp, timeout)
        y = np.fromfile(tmp / "out.bin", dtype=np.int8) if (tmp / "out.bin").is_file() else None
    demo = parse_demo_output(text)
    if y is None or y.size != n * out_size or len(demo.counts) != n:
        raise QemuError(f"the firmware processed {len(demo.counts)} of {n} samples "
                        f"(output file {0 if y is None else y.size} bytes, expected {n * out_size})")
    return y.reshape(n, out_size), demo


def run_qemu_training(out, board: Board, report: dict, data, timeout: float = 300.0,
                      progress=None):
    """Runs the training demo of a training build's firmware on `data` (a
    firmware_train.TrainingData); returns (what the demo printed, the trained parameters
    name -> array, read back from the file the firmware wrote). `progress(steps_done)` is
    called as the firmware reports its steps."""
    import json
    from .firmware_train import parse_train_output, unpack_params
    _require_qemu()
    if "training" not in report:
        raise TinycError(f"{out}: built without --train; its firmware runs inference only "
                         "(rebuild with --train SCHEME, or drop --train-data)")
    elf = firmware_elf(out, board, report).resolve()
    input_size = int(np.prod(report["input"]["shape_nchw"]))
    classes = int(report["output"]["shape"][-1])
    table = json.loads((model_dir(out) / "train_params.json").read_text())
    packed = data.pack(input_size, classes)
    on_line = None
    if progress is not None:
        def on_line(line):
            if line.startswith("step "):
                progress(int(line.split()[1]) + 1)
    with tempfile.TemporaryDirectory(prefix="tinyc-qemu-") as tmp:
        tmp = Path(tmp)
        (tmp / "train.bin").write_bytes(packed)
        text = _run_guest(board, qemu_command(board, elf, ["firmware", "train.bin", "params.bin"]),
                          tmp, timeout, on_line)
        raw = (tmp / "params.bin").read_bytes() if (tmp / "params.bin").is_file() else b""
    demo = parse_train_output(text)
    if len(demo.counts) != data.steps or demo.done != data.steps:
        raise QemuError(f"the firmware ran {len(demo.counts)} of {data.steps} training steps; "
                        "its last output:\n" + "\n".join(text.strip().splitlines()[-3:]))
    return demo, unpack_params(raw, table)


PTY_RE = re.compile(r"char device redirected to (\S+) \(label serial0\)")


class QemuLink:
    """The firmware of `out` under QEMU serving the device link (command line "link") on its
    UART0, which QEMU connects to a pty; `device` is a tinyc.device.Device on that pty. Use as a
    context manager: QEMU is killed at the end. Its console (semihosting) output is kept in
    `console`."""

    def __init__(self, out, board: Board, report: dict, timeout: float = 60.0,
                 storage: Path | None = None, cut: int = 0):
        """storage: the host file that stands for the board's flash (a training build keeps
        its saved parameters there; created if missing); cut: the firmware stops dead in the
        middle of its cut-th write to it (a simulated power cut, exit status 5)."""
        from ..device import Device
        _require_qemu()
        elf = firmware_elf(out, board, report).resolve()
        args = ["firmware", "link"]
        cwd = None
        if storage is not None:
            storage = Path(storage).resolve()
            if any(c in storage.name for c in " ,=") or not storage.parent.is_dir():
                raise TinycError(f"storage file {storage}: its folder must exist and its name "
                                 "hold no space, comma or '='")
            cwd, args = storage.parent, args + [f"storage={storage.name}"] + (
                [f"cut={cut}"] if cut else [])
        cmd = qemu_command(board, elf, args)
        cmd[cmd.index("-serial") + 1] = "pty"
        self.board, self.console, self._err = board, [], []
        self.proc = procs.popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace")
        try:
            pty = self._pty_path(timeout=20.0)
            self.device = Device(pty, timeout=timeout)
        except BaseException:
            self.close()
            raise

    def _pty_path(self, timeout: float) -> str:
        """QEMU names its pty on stdout before the guest starts; the rest of stdout is the
        firmware's console."""
        import threading
        found: list[str] = []
        ready = threading.Event()

        def read_out():
            for line in self.proc.stdout:
                m = PTY_RE.search(line)
                if m and not found:
                    found.append(m.group(1))
                    ready.set()
                else:
                    self.console.append(line)
            ready.set()

        def read_err():
            for line in self.proc.stderr:
                self._err.append(line)

        self._readers = [threading.Thread(target=read_out, daemon=True),
                         threading.Thread(target=read_err, daemon=True)]
        for r in self._readers:
            r.start()
        ready.wait(timeout)
        if not found:
            raise QemuError(f"QEMU ({self.board.qemu_machine}) did not open a pty for the device "
                            f"link: {''.join(self._err).strip()[-300:] or 'no message'}")
        return found[0]

    def close(self) -> None:
        dev = getattr(self, "device", None)
        if dev is not None:
            dev.close()
        if self.proc.poll() is None:
            procs.kill(self.proc)
        else:
            procs.finished(self.proc)
        for r in getattr(self, "_readers", []):
            r.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_qemu_link_inference(out, board: Board, report: dict, x_int8_nhwc: np.ndarray,
                            timeout: float = 300.0) -> tuple[np.ndarray, DemoOutput]:
    """Inference on the firmware under QEMU through the device link (any build, a training
    build's included): returns the int8 outputs (N, output size) and the costs as DemoOutput."""
    x = np.ascontiguousarray(np.asarray(x_int8_nhwc, np.int8))
    demo = DemoOutput()
    outs = []
    with QemuLink(out, board, report, timeout=timeout) as link:
        info = link.device.check_build(out)
        demo.unit = info.unit
        for k, sample in enumerate(x):
            y, cost = link.device.infer(sample.reshape(-1))
            outs.append(y)
            demo.counts.append(cost)
            demo.argmax.append(int(np.argmax(y)))
            demo.outputs.append(y.tolist())
            if k == 0 and info.flags & 2:   # --profile: the layers of the first sample
                s = link.device.stats()
                demo.profile = {i: c for i, c in s.profile.items() if c}
        demo.done = len(x)
    return np.stack(outs), demo
