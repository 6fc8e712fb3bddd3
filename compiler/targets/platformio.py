"""The firmware: a PlatformIO project around the generated model, built offline, checked against
the board, and uploaded (`tinyc flash`).

Project written by write_project(out, ...):
    out/platformio.ini           env:tinyc (tinyc's offline platform, boards/platformio) and, for
                                 real boards, the official PlatformIO platform for users online
    out/boards/tinyc_<id>.json   the PlatformIO board manifest of env:tinyc
    out/src/main.c               the demo (templates/main.c.j2; a training build's:
                                 templates/firmware/train_main.c.j2); samples.c/.h (training:
                                 train_samples.c/.h) on real boards
    out/samples.bin              the demo's samples for the emulated boards (read by semihosting;
                                 a training build's: labelled data, firmware_train.py)
    out/lib/tinyc_model/         the model and the runtime kernels it uses (a PlatformIO library)
    out/lib/tinyc_board/         start-up, linker script, console, counter (runtime_c/firmware)

build_firmware(out, board) runs `pio run -e tinyc` with a core folder inside out/ (never
~/.platformio, never the registry), then reads RAM and flash from the ELF.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from .. import procs
from ..errors import TinycError, ToolFailedError
from ..outdir import write_atomic
from .boards import Board, UploadProtocol, require_firmware
from .elf import Elf, biggest, memory_usage

ROOT = Path(__file__).resolve().parents[2]
PLATFORM_DIR = ROOT / "boards" / "platformio"
FIRMWARE_SRC = ROOT / "runtime_c" / "firmware"
ENV = "tinyc"
CORE_DIR = ".pio-core"
MODEL_LIB = Path("lib") / "tinyc_model"
BOARD_LIB = Path("lib") / "tinyc_board"
ELF_PATH = Path(".pio") / "build" / ENV / "firmware.elf"
SAMPLES_BIN = "samples.bin"
REPEAT_SECONDS = 2
BOARD_COMMON = ("cortexm.h", "tinyc_board.h", "startup.c", "counter.c", "print.c", "link_port.c",
                "tinyc_pio.py")
# the files each console needs besides its console_<name>.c (the emulated boards' device link
# is on UART0, beside the semihosting console; the USB consoles are a USB CDC device: its
# chip-independent part and the chip's driver)
USB_CDC = ("usb_cdc.c", "usb_cdc.h", "console_usb_common.h")
RP2040_CLOCKS = ("rp2040_clocks.c", "rp2040_clocks.h")
CONSOLE_EXTRA = {"semihosting": ("semihosting.c", "semihosting.h", "link_uart_cmsdk.c"),
                 "rp2040_uart": ("console_uart_common.h",) + RP2040_CLOCKS,
                 "nrf52_usb": USB_CDC + ("usb_nrf52.c",),
                 "rp2040_usb": USB_CDC + ("usb_rp2040.c",) + RP2040_CLOCKS}
# the USB consoles' controller interrupt (its vector: startup.c, TINYC_BOARD_USB_IRQ)
USB_IRQ = {"nrf52_usb": 39, "rp2040_usb": 5}
# the device link's protocol (runtime_c/src/link), portable C: part of the model library, so an
# application that embeds lib/tinyc_model can serve it too
LINK_SRC = ROOT / "runtime_c" / "src" / "link"
LINK_FILES = ("tinyc_link.c", "tinyc_link.h", "tinyc_store.h")
STORE_FILES = ("tinyc_store.c",)    # training builds: the trained parameters' A/B slots
# the persistent storage of a training build's trained parameters, by console (chip family):
# its source in runtime_c/firmware, write and erase units, what it is, whether it takes the
# top of the board's flash region (the linker script then ends the firmware below it)
NRF52_FLASH = ("storage_nrf52_nvmc.c", 256, 4096, True,
               "the nRF52840's flash (NVMC, 4 KB pages) above the firmware")
RP2040_FLASH = ("storage_rp2040_flash.c", 256, 4096, True,
                "the RP2040's QSPI flash (boot ROM routines, 4 KB sectors) above the firmware")
STORAGE_BACKENDS = {
    "semihosting": ("storage_semihosting.c", 128, 128, False,
                    "a host file written page by page through semihosting (QEMU)"),
    "nrf52_uart": NRF52_FLASH,
    "nrf52_usb": NRF52_FLASH,
    # the top sectors, which are uniform from sector 5 on: 128 KB on the F4, 256 KB on the F7
    "stm32f4_usart": ("storage_stm32_flash.c", 256, 128 * 1024, True,
                      "the STM32F4's flash (128 KB sectors) above the firmware"),
    "stm32f7_usart": ("storage_stm32_flash.c", 256, 256 * 1024, True,
                      "the STM32F7's flash (256 KB sectors) above the firmware"),
    "rp2040_uart": RP2040_FLASH,
    "rp2040_usb": RP2040_FLASH,
}


def storage_plan(board: Board, param_bytes: int) -> dict | None:
    """The flash the trained parameters' two slots take (tinyc_store.h: a header write unit,
    then the parameters and the step index, on whole erase units), on a board with a storage
    back end; None elsewhere. Part of the flash plan and its fit check."""
    backend = STORAGE_BACKENDS.get(board.firmware.console)
    if backend is None:
        return None
    source, write, erase, in_flash, what = backend
    data = param_bytes + 4
    slot = -(-(write + data) // erase) * erase
    return {"backend": what, "source": source, "write_bytes": write, "erase_bytes": erase,
            "slot_bytes": slot, "slots": 2, "flash_bytes": 2 * slot, "data_bytes": data,
            "in_board_flash": in_flash}


def training_param_bytes(out: Path) -> int | None:
    params = model_dir(out) / "train_params.json"
    return sum(p["bytes"] for p in json.loads(params.read_text())) if params.is_file() else None


UART_EXTRA = ("console_uart_common.h",)
STORAGE_IN_FLASH_H = "storage_in_flash.h"   # what the back ends in the board's flash share
PIO_ENV = {"PLATFORMIO_DISABLE_UPGRADE_CHECK": "true",
           "PLATFORMIO_SETTING_ENABLE_TELEMETRY": "No",
           "PLATFORMIO_SETTING_CHECK_PLATFORMIO_INTERVAL": "3650",
           "PLATFORMIO_NO_ANSI": "true"}


class FirmwareDoesNotFitError(TinycError):
    multiline = True
    pass


def model_dir(out) -> Path:
    """Where the model library of a build is: out/lib/tinyc_model for a firmware project, out/
    itself for a --no-firmware build."""
    out = Path(out)
    lib = out / MODEL_LIB
    return lib if (lib / "model.c").is_file() and not (out / "model.c").is_file() else out


def _env():
    from ..codegen.c import template_environment
    return template_environment()


# characters tinyc's own folder cannot hold for PlatformIO to find its platform there: the
# platformio.ini value `platform = symlink://PATH` is read with %-interpolation, ` ;` and ` #`
# start comments, PlatformIO expands `${...}` and cuts package specs at `@` and `?`
PLATFORM_PATH_UNSAFE = "$%;#@?\n\r"


def symlink_uri(path: Path) -> str:
    """PlatformIO's symlink://PATH: the plain path (PlatformIO does not decode a file URI's
    %-escapes)."""
    return "symlink://" + path.as_posix()


def check_project_path(out) -> None:
    """PlatformIO expands `${...}` in the project's paths (as Python expressions, through SCons),
    so a firmware project cannot live under a path with a `$`; every other character works (the
    build passes the project's own files to the tools by relative paths)."""
    out = Path(out).resolve()
    if "$" in str(out):
        raise TinycError(f"the output folder {ascii(str(out))} contains '$', which PlatformIO "
                         "expands in paths: choose a folder without '$' for a firmware build "
                         "(or build with --no-firmware)")
    bad = sorted(set(str(PLATFORM_DIR)) & set(PLATFORM_PATH_UNSAFE))
    if bad:
        raise TinycError(f"tinyc is installed in {ascii(str(ROOT))}, whose path holds "
                         f"{ascii(''.join(bad))}: PlatformIO cannot use tinyc's platform "
                         f"({PLATFORM_DIR.name}) from there; install tinyc in a folder without "
                         f"{' '.join(PLATFORM_PATH_UNSAFE[:-2])} or a line break, or build with "
                         "--no-firmware")


# what is allowed in `tinyc flash --port`: PlatformIO passes the port unquoted to a shell
PORT_RE = re.compile(r"[A-Za-z0-9_./:@+,=-]+")


def official_env(board: Board) -> str | None:
    if board.emulated or not board.platformio.get("platform"):
        return None
    return board.platformio.get("board") or board.id


def board_manifest(board: Board) -> dict:
    """PlatformIO board JSON of env:tinyc (PlatformIO prints its RAM/flash bars from it)."""
    proto = board.protocol()
    return {
        "name": board.name,
        "vendor": "tinyc",
        "url": "",
        "frameworks": [],
        "build": {"cpu": board.cpu, "mcu": board.mcu or board.id, "f_cpu": f"{board.f_cpu}L"},
        "upload": {"maximum_size": board.flash_bytes, "maximum_ram_size": board.sram_bytes,
                   "protocol": proto.name, "protocols": [p.name for p in board.protocols]},
    }


def pio_command_text(command: str) -> str:
    """A board's upload command template -> the PlatformIO upload_command form. The images are
    SCons nodes of tinyc's platform (TINYC_ELF...: boards/platformio/builder/main.py), named
    relative to the project folder, where the command runs: the project's absolute path,
    whatever its characters, never reaches the shell."""
    subs = {"elf": "${TINYC_ELF}", "bin": "${TINYC_BIN}", "hex": "${TINYC_HEX}",
            "uf2": "${TINYC_UF2}", "port": "${UPLOAD_PORT}", "project": "."}
    return re.sub(r"\{(\w+)\}", lambda m: subs.get(m.group(1), m.group(0)), command)


def _copy_runtime(board: Board, dst: Path) -> None:
    console = board.firmware.console
    names = list(BOARD_COMMON) + [f"console_{console}.c"]
    names += list(CONSOLE_EXTRA.get(console, UART_EXTRA))
    if board.boot2:
        names.append("rp2040_boot2.c")
    for name in names:
        src = FIRMWARE_SRC / name
        if not src.is_file():
            raise TinycError(f"{src} not found: tinyc reads its firmware sources from its source "
                             "tree; install it from a checkout (pip install -e .)")
        shutil.copy2(src, dst / name)


def vector_align(board: Board, usb_irq: int | None) -> int:
    """The vector table's alignment (VTOR): at least its size rounded up to a power of two, and
    128 bytes on Armv7-M, 256 on Armv6-M (whose VTOR ignores the low 8 bits)."""
    words = 16 + (usb_irq + 1 if usb_irq is not None else 0)
    align = 128 if board.armv7m else 256
    while align < 4 * words:
        align *= 2
    return align


def link_build_id(model_c: Path) -> int:
    """What the device link's INFO answers as the build id: the CRC-32 of model.c."""
    import zlib
    return zlib.crc32(Path(model_c).read_bytes())


def _format_samples(samples: np.ndarray) -> list[str]:
    from ..codegen.c import format_values
    return [format_values(s.reshape(-1)) for s in samples]


def write_project(out, board: Board, model_name: str, samples: np.ndarray,
                  samples_source: str, protocol: str | None = None, training=None,
                  input_size: int = 0, num_classes: int = 0,
                  cflags: list[str] | tuple = ()) -> Path:
    """Turns a build folder whose model library is in out/lib/tinyc_model into a PlatformIO
    project for `board`. `samples` are int8 NHWC inputs (N, H, W, C) for the demo. A training
    build passes `training` (a firmware_train.TrainingData, `samples` its inputs): the demo then
    trains (templates/firmware/train_main.c.j2). `cflags`: extra compiler flags of the build
    (BuildOptions.firmware_cflags: tinyc's own -D options, never from a model or board file)."""
    require_firmware(board)
    out = Path(out)
    proto = board.protocol(protocol)
    env = _env()
    lib = out / BOARD_LIB
    if lib.exists():
        shutil.rmtree(lib)
    lib.mkdir(parents=True)
    _copy_runtime(board, lib)
    for name in LINK_FILES + (STORE_FILES if training is not None else ()):
        shutil.copy2(LINK_SRC / name, out / MODEL_LIB / name)
    for name in STORE_FILES if training is None else ():
        (out / MODEL_LIB / name).unlink(missing_ok=True)
    param_bytes = training_param_bytes(out) if training is not None else None
    storage = storage_plan(board, param_bytes) if param_bytes is not None else None
    if storage:
        shutil.copy2(FIRMWARE_SRC / storage["source"], lib / storage["source"])
        if storage["in_board_flash"]:
            shutil.copy2(FIRMWARE_SRC / STORAGE_IN_FLASH_H, lib / STORAGE_IN_FLASH_H)
    usb_irq = USB_IRQ.get(board.firmware.console)
    ctx = dict(board=board, guard_bytes=board.guard_bytes, guard_align=board.guard_bytes,
               vector_align=vector_align(board, usb_irq), usb_irq=usb_irq,
               model_name=model_name,
               semihosting=board.firmware.console == "semihosting",
               repeat_seconds=REPEAT_SECONDS,
               link_build_id=link_build_id(out / MODEL_LIB / "model.c"),
               storage=storage, training=training is not None)
    (lib / "link.ld").write_text(env.get_template("firmware/link.ld.j2").render(**ctx))
    (lib / "tinyc_board_config.h").write_text(
        env.get_template("firmware/tinyc_board_config.h.j2").render(**ctx))
    (lib / "library.json").write_text(json.dumps({
        "name": "tinyc_board", "version": "0.1.0",
        "description": f"tinyc start-up, linker script and console for {board.name}",
        # linked as objects: the vector table and handlers are only reached from the linker script
        "build": {"libArchive": False}}, indent=2) + "\n")
    (out / MODEL_LIB / "library.json").write_text(json.dumps({
        "name": "tinyc_model", "version": "0.1.0",
        "description": f"int8 model {model_name} generated by tinyc, with the runtime kernels it uses"},
        indent=2) + "\n")

    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir()
    main = "firmware/train_main.c.j2" if training is not None else "main.c.j2"
    (src / "main.c").write_text(env.get_template(main).render(**ctx))
    samples = np.asarray(samples, np.int8)
    (out / SAMPLES_BIN).unlink(missing_ok=True)
    if training is not None:
        if ctx["semihosting"]:   # samples.bin: the training data file (firmware_train.py)
            (out / SAMPLES_BIN).write_bytes(training.pack(input_size, num_classes))
        else:
            arrays = training.c_arrays(input_size, num_classes)
            (src / "train_samples.h").write_text(env.get_template(
                "firmware/train_samples.h.j2").render(source=samples_source, **arrays))
            (src / "train_samples.c").write_text(env.get_template(
                "firmware/train_samples.c.j2").render(source=samples_source, **arrays))
    elif ctx["semihosting"]:
        (out / SAMPLES_BIN).write_bytes(np.ascontiguousarray(samples).tobytes())
    else:
        (src / "samples.h").write_text(env.get_template("firmware/samples.h.j2").render(
            count=len(samples)))
        (src / "samples.c").write_text(env.get_template("firmware/samples.c.j2").render(
            samples=_format_samples(samples), source=samples_source))

    boards_dir = out / "boards"
    boards_dir.mkdir(exist_ok=True)
    for old in boards_dir.glob("tinyc_*.json"):
        old.unlink()
    (boards_dir / f"tinyc_{board.id}.json").write_text(
        json.dumps(board_manifest(board), indent=2) + "\n")
    (out / "platformio.ini").write_text(env.get_template("firmware/platformio.ini.j2").render(
        board=board, model_name=model_name, platform_uri=symlink_uri(PLATFORM_DIR),
        official=official_env(board) is not None,
        official_env=official_env(board), protocol=proto,
        upload_command=pio_command_text(proto.command), cflags=list(cflags)))
    return out


# ------------------------------------------------------------------------ running PlatformIO

def toolchain_missing() -> str | None:
    """Why the firmware cannot be built here, or None."""
    if not shutil.which("arm-none-eabi-gcc"):
        return ("arm-none-eabi-gcc not found (apt-get install --no-install-recommends "
                "gcc-arm-none-eabi libnewlib-arm-none-eabi)")
    try:
        import platformio  # noqa: F401
        import SCons  # noqa: F401
    except ImportError:
        return ("PlatformIO is not installed in this Python environment "
                "(pip install 'platformio==6.2.0' 'scons==4.11.1', or pip install -e '.[firmware]')")
    return None


def prepare_core(out: Path) -> Path:
    """A PlatformIO core folder inside the project with tool-scons linked to tinyc's local
    package (SCons from PyPI), so PlatformIO never asks its registry."""
    core = out / CORE_DIR
    (core / "packages").mkdir(parents=True, exist_ok=True)
    link = {"cwd": "/", "spec": {"owner": "platformio", "id": None, "name": "tool-scons",
                                 "requirements": None,
                                 "uri": symlink_uri(PLATFORM_DIR / "tool-scons")}}
    (core / "packages" / "tool-scons.pio-link").write_text(json.dumps(link))
    return core


def pio_environ(out: Path) -> dict:
    env = dict(os.environ)
    env.update(PIO_ENV)
    env["PLATFORMIO_CORE_DIR"] = str(prepare_core(out).resolve())
    # PlatformIO runs SCons with the Python that runs PlatformIO: this one
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def pio_command(out, *args) -> list[str]:
    return [sys.executable, "-m", "platformio", "run", "-d", str(Path(out).resolve()),
            "-e", ENV, *args]


def run_pio(out, *args, timeout: float = 900, what: str = "firmware build") -> str:
    out = Path(out)
    cmd = pio_command(out, *args)
    try:
        res = procs.run(cmd, capture_output=True, text=True, env=pio_environ(out),
                        timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TinycError(f"{what} did not finish within {timeout:.0f} s: "
                         f"{shlex.join(cmd)}") from None
    if res.returncode != 0:
        raise PioError(res.stdout + res.stderr, cmd)
    return res.stdout + res.stderr


def run_pio_upload(cmd: list[str], env: dict) -> int:
    """Runs `pio run -t upload`, passing its output on line by line; returns its exit status.
    PlatformIO never writes to tinyc's stdout itself: when that is a pipe whose reader is gone
    (`tinyc flash out | head -1`), PlatformIO's output thread dies, SCons and QEMU under it
    block on a full pipe and the upload hangs for ever. Here the closed pipe raises
    BrokenPipeError in tinyc, which kills the whole group (procs.py) and stops quietly."""
    proc = procs.popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    try:
        for line in proc.stdout:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
        proc.stdout.close()
        returncode = proc.wait()
    except BaseException:
        procs.kill(proc)
        proc.stdout.close()
        raise
    procs.finished(proc)
    return returncode


class PioError(ToolFailedError):
    def __init__(self, log: str, cmd: list[str]):
        self.log, self.cmd = log, cmd
        tail = "\n".join(log.strip().splitlines()[-25:])
        super().__init__(f"`{shlex.join(cmd)}` failed:\n{tail}")


MODEL_CONST_RE = re.compile(r"^tinyc_[wbmsl]\d+$")
OVERFLOW_RE = re.compile(r"region [`']?(\w+)'? overflowed by (\d+) bytes")


def _consumers(symbols, region: str, stack: int) -> list[tuple[int, str]]:
    rows = [(s.size, f"{s.name} ({s.section}, {s.file})") for s in biggest(symbols, region)]
    if region == "ram":
        rows.append((stack, "stack (the board's stack_reserve_bytes)"))
    return sorted(rows, key=lambda r: -r[0])[:8]


def _does_not_fit(board: Board, problems: list[str], consumers: dict) -> FirmwareDoesNotFitError:
    lines = [f"the firmware does not fit board '{board.id}' ({board.name}): " + "; ".join(problems)]
    for region, rows in consumers.items():
        if rows:
            lines.append(f"biggest {region} consumers:")
            lines += [f"  {size:>10,} B  {what}" for size, what in rows]
    lines.append("fixes: a board with more memory, a smaller --input-shape or a narrower model, "
                 "fewer --samples (real boards keep them in flash), or --no-firmware")
    return FirmwareDoesNotFitError("\n".join(lines))


def file_sha256(path) -> str:
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_firmware(out, board: Board) -> dict:
    """`pio run` offline, then RAM and flash from the ELF checked against the board's budget.
    Returns the report's "firmware" section; raises FirmwareDoesNotFitError with the biggest
    consumers when the image does not fit."""
    out = Path(out)
    try:
        log = run_pio(out)
    except PioError as e:
        overflow = OVERFLOW_RE.findall(e.log)
        if not overflow:
            raise
        objects = sorted((out / ".pio" / "build" / ENV).rglob("*.o"))
        symbols = [s for o in objects for s in Elf(o).symbols()]
        problems, consumers = [], {}
        for region, excess in overflow:
            is_ram = region.upper() == "RAM"
            limit = board.memory.ram_length if is_ram else board.memory.flash_length
            problems.append(f"{'RAM' if is_ram else 'flash'} needs {limit + int(excess):,} B > "
                            f"{limit:,} B (linker region {region}, overflowed by {int(excess):,} B)")
            consumers["RAM" if is_ram else "flash"] = _consumers(
                symbols, "ram" if is_ram else "flash", board.stack_reserve_bytes)
        raise _does_not_fit(board, problems, consumers) from None
    elf_path = out / ELF_PATH
    elf = Elf(elf_path)
    usage = memory_usage(elf, board.memory.ram_origin, board.memory.ram_length)
    symbols = elf.symbols()
    arena = next((s.size for s in symbols if s.name == "tinyc_arena"), 0)
    # weights, biases, multipliers, shifts and layer parameters of model.c (codegen/c.py names)
    consts = sum(s.size for s in symbols if MODEL_CONST_RE.match(s.name))
    fw = {
        "built": True,
        "elf": str(ELF_PATH),
        # what the ELF was built from (SCons rebuilds by content: the ELF's date can be older)
        "model_c_sha256": file_sha256(out / MODEL_LIB / "model.c"),
        "ram_bytes": usage["ram_bytes"],
        "flash_bytes": usage["flash_bytes"],
        "ram_limit_bytes": board.sram_bytes,
        "flash_limit_bytes": board.flash_bytes,
        "ram_sections": usage["ram_sections"],
        "flash_sections": usage["flash_sections"],
        "arena_bytes": arena,
        "model_const_bytes": consts,
        "stack_bytes": board.stack_reserve_bytes,
        "platformio_log_tail": log.strip().splitlines()[-3:],
    }
    linked = {(s.name, s.kind) for s in symbols}
    fw["link"] = link_usage(out / ".pio" / "build" / ENV, linked)
    if board.firmware.console in USB_IRQ:
        fw["usb"] = objects_usage(out / ".pio" / "build" / ENV, linked, USB_OBJECTS)
        sizes = {s.name: s.size for s in symbols if s.name in ("rx_ring", "tx_ring")}
        fw["usb"].update(rx_buffer_bytes=sizes.get("rx_ring", 0),
                         tx_buffer_bytes=sizes.get("tx_ring", 0))
    param_bytes = training_param_bytes(out)
    storage = storage_plan(board, param_bytes) if param_bytes is not None else None
    if storage and (out / BOARD_LIB / storage["source"]).is_file():
        fw["storage"] = storage
    else:
        storage = None
    fw.update(stack_check(out / ".pio" / "build" / ENV, board))
    problems, consumers = [], {}
    if fw["ram_bytes"] > board.sram_bytes:
        problems.append(f"RAM needs {fw['ram_bytes']:,} B > {board.sram_bytes:,} B (sram_bytes)")
        consumers["RAM"] = _consumers(symbols, "ram", board.stack_reserve_bytes)
    # the slots are outside the ELF: in the board's flash above the firmware (the linker
    # script ends the firmware below them), or a host file standing for that flash (QEMU)
    stored = storage["flash_bytes"] if storage else 0
    if fw["flash_bytes"] + stored > board.flash_bytes:
        problems.append(f"flash needs {fw['flash_bytes'] + stored:,} B > {board.flash_bytes:,} B "
                        "(flash_bytes)" + (f", of which {stored:,} B are the two storage slots "
                                           "of the trained parameters" if stored else ""))
        consumers["flash"] = _consumers(symbols, "flash", 0)
    if problems:
        raise _does_not_fit(board, problems, consumers)
    return fw


LINK_OBJECTS = ("tinyc_link.o", "link_port.o", "link_uart_cmsdk.o", "tinyc_store.o",
                "storage_semihosting.o", "storage_nrf52_nvmc.o", "storage_stm32_flash.o",
                "storage_rp2040_flash.o")


# the USB CDC device of the USB consoles (the console's and the link's transport)
USB_OBJECTS = ("usb_cdc.o", "usb_nrf52.o", "usb_rp2040.o", "console_nrf52_usb.o",
               "console_rp2040_usb.o")


def objects_usage(build_dir: Path, linked: set, objects) -> dict:
    """RAM and flash of the symbols the link kept from these object files (part of the
    firmware's figures, which the board check covers)."""
    from .elf import region_of_section
    ram = flash = 0
    for obj in sorted(p for name in objects for p in build_dir.rglob(name)):
        for s in Elf(obj).symbols():
            if (s.name, s.kind) not in linked:
                continue
            region = region_of_section(s.section)
            ram += s.size if region in ("ram", "both") else 0
            flash += s.size if region in ("flash", "both") else 0
    return {"ram_bytes": ram, "flash_bytes": flash}


def link_usage(build_dir: Path, linked: set) -> dict:
    """What the device link and the storage (runtime_c/src/link, the board's link_*.c and
    storage_*.c) take of the firmware's RAM and flash: the symbols of their object files that
    the link kept (the figures are part of the firmware's, which the board check covers)."""
    from .elf import region_of_section
    ram = flash = rx = 0
    for obj in sorted(p for name in LINK_OBJECTS for p in build_dir.rglob(name)):
        for s in Elf(obj).symbols():
            if (s.name, s.kind) not in linked:
                continue   # dropped by --gc-sections, or inlined
            region = region_of_section(s.section)
            ram += s.size if region in ("ram", "both") else 0
            flash += s.size if region in ("flash", "both") else 0
            if obj.name == "tinyc_link.o" and s.name == "rx":
                rx = s.size
    return {"protocol": 1, "ram_bytes": ram, "flash_bytes": flash, "rx_buffer_bytes": rx}


class StackTooSmallError(FirmwareDoesNotFitError):
    pass


def stack_check(build_dir: Path, board: Board) -> dict:
    """The firmware's worst-case stack (GCC's call graph, targets/stack.py) against the board's
    stack; for a training build, that of tinyc_train_step too. Raises StackTooSmallError when
    the known worst case does not fit."""
    from .stack import function_stack, worst_case_stack
    bound = worst_case_stack(build_dir, board.fpu != "none")
    size = board.stack_reserve_bytes - board.guard_bytes
    info = {"stack_guard_bytes": board.guard_bytes, "stack_worst_case_bytes": bound.bytes, "stack_worst_case_chain": bound.chain,
            "stack_worst_case_interrupt_bytes": bound.interrupt_bytes,
            "stack_worst_case_unknown": bound.unknown}
    train = function_stack(build_dir, "tinyc_train_step")
    if train.bytes is not None:
        info["train_step_stack_bytes"] = train.bytes
    if bound.bytes is not None and bound.bytes > size:
        raise StackTooSmallError(
            f"the firmware's worst-case stack is {bound.bytes:,} B, more than the {size:,} B "
            f"stack of board '{board.id}' (stack_reserve_bytes {board.stack_reserve_bytes:,} "
            f"minus the {board.guard_bytes}-byte MPU guard): deepest call chain "
            f"{bound.chain_text()}, plus {bound.interrupt_bytes} B for an interrupt on top"
            + (f"; tinyc_train_step alone needs {train.bytes:,} B" if train.bytes else "")
            + f". Raise stack_reserve_bytes in {board.path or 'the board file'}")
    return info


# ------------------------------------------------------------------------ upload

def upload_plan(out, board: Board, protocol: str | None, port: str | None) -> dict:
    """What `tinyc flash` runs: the pio command, and the tool command it leads to."""
    out = Path(out).resolve()
    check_project_path(out)
    proto: UploadProtocol = board.protocol(protocol)
    if proto.needs_port and not port:
        raise TinycError(f"board '{board.id}' uploads with '{proto.name}' ({proto.tool}), which "
                         "needs --port (the board's serial port or drive)")
    if port is not None and not PORT_RE.fullmatch(port):
        raise TinycError(f"--port {ascii(port)}: a port or drive path may hold only letters, "
                         "digits and _./:@+,=- (PlatformIO hands it to a shell unquoted)")
    build = out / ".pio" / "build" / ENV
    files = {"elf": build / "firmware.elf", "bin": build / "firmware.bin",
             "hex": build / "firmware.hex", "uf2": build / "firmware.uf2",
             "port": port or "", "project": out}
    tool_cmd = re.sub(r"\{(\w+)\}", lambda m: shlex.quote(str(files.get(m.group(1), m.group(0)))),
                      proto.command)
    args = ["-t", "upload"]
    if port:
        args += ["--upload-port", port]
    return {"protocol": proto, "pio": pio_command(out, *args), "tool_command": tool_cmd}


def set_upload_protocol(out, board: Board, protocol: str) -> None:
    """Points env:tinyc's upload_command at another of the board's protocols."""
    ini = Path(out) / "platformio.ini"
    proto = board.protocol(protocol)
    text = ini.read_text()
    text = re.sub(r"^; protocol '.*$", f"; protocol '{proto.name}' ({proto.tool}); tinyc flash "
                  "--protocol NAME picks another", text, flags=re.M)
    text = re.sub(r"^upload_command = .*$", lambda _: "upload_command = "
                  + pio_command_text(proto.command), text, flags=re.M)
    write_atomic(ini, text)
