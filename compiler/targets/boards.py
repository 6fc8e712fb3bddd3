"""Board descriptions: one TOML file per board in boards/ (see boards/README.md for the schema).

A board gives the chip (CPU, FPU, clock, memory sizes), the budget tinyc may use (sram_bytes,
flash_bytes; the memory check of `tinyc build` is against these), the linker memory map, how the
demo firmware talks (console) and counts (SysTick unit), the official PlatformIO ids for users
online, and the upload protocols `tinyc flash` knows.

`--board` takes a board id (boards/<id>.toml) or the path of a TOML file (a custom board).
"""
from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TinycError

BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"

CPUS = {   # cpu -> (architecture, FPUs it may have)
    "cortex-m0plus": ("armv6-m", ("none",)),
    "cortex-m4": ("armv7e-m", ("none", "fpv4-sp-d16")),
    "cortex-m7": ("armv7e-m", ("none", "fpv5-sp-d16", "fpv5-d16")),
}
CONSOLES = ("semihosting", "stm32f4_usart", "stm32f7_usart", "nrf52_uart", "rp2040_uart",
            "nrf52_usb", "rp2040_usb")
COUNTER_UNITS = ("cycles", "instructions")


@dataclass(frozen=True)
class MemoryMap:
    """The linker script's two regions (origin and length in bytes)."""
    flash_origin: int
    flash_length: int
    ram_origin: int
    ram_length: int


@dataclass(frozen=True)
class Firmware:
    console: str                  # console_<console>.c of runtime_c/firmware
    baud: int = 115200            # UART consoles
    counter_unit: str = "cycles"  # what counter_scale SysTick ticks measure
    counter_scale: int = 1
    boot2: bool = False           # RP2040 second-stage boot loader in the first 256 flash bytes


@dataclass(frozen=True)
class UploadProtocol:
    name: str
    tool: str             # executable that must be on PATH
    install: str          # how to get it
    command: str          # {elf} {bin} {hex} {uf2} {port} {project} are filled in
    needs_port: bool = False
    pio_protocol: str = ""   # the official PlatformIO upload_protocol it corresponds to


@dataclass(frozen=True)
class Board:
    id: str
    name: str
    cpu: str
    fpu: str
    sram_bytes: int            # SRAM budget tinyc may use (arena + firmware data + stack)
    flash_bytes: int           # flash budget tinyc may use (code + constants)
    stack_reserve_bytes: int   # the firmware's stack (inside the SRAM budget)
    emulated: bool
    mcu: str = ""
    f_cpu: int = 0
    sram_total_bytes: int = 0  # the chip's
    flash_total_bytes: int = 0
    memory: MemoryMap | None = None
    firmware: Firmware | None = None
    platformio: dict = field(default_factory=dict)   # official platform/board/framework ids
    upload_default: str = ""
    protocols: tuple[UploadProtocol, ...] = ()
    qemu_machine: str = ""
    path: str = ""

    @property
    def float_abi(self) -> str:
        return "soft" if self.fpu == "none" else "hard"

    @property
    def armv7m(self) -> bool:
        return CPUS[self.cpu][0] != "armv6-m"

    @property
    def guard_bytes(self) -> int:
        """MPU stack guard: the smallest region the MPU allows (32 B on Armv7-M, 256 on v6-M)."""
        return 32 if self.armv7m else 256

    @property
    def counter_unit(self) -> str:
        return self.firmware.counter_unit

    @property
    def counter_scale(self) -> int:
        return self.firmware.counter_scale

    @property
    def boot2(self) -> bool:
        return self.firmware.boot2

    def protocol(self, name: str | None = None) -> UploadProtocol:
        name = name or self.upload_default
        for p in self.protocols:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.protocols) or "none"
        raise TinycError(f"board '{self.id}' has no upload protocol '{name}' (known: {known})")


def list_boards() -> list[Board]:
    return [load_board(p.stem) for p in sorted(BOARDS_DIR.glob("*.toml"))]


def board_path(board: str) -> Path:
    if board.endswith(".toml") or "/" in board:
        path = Path(board)
        if not path.is_file():
            raise TinycError(f"board file {board} not found")
        return path
    path = BOARDS_DIR / f"{board}.toml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(BOARDS_DIR.glob("*.toml")))
        raise TinycError(f"unknown board '{board}'; known boards: {known} (see `tinyc boards`), "
                         "or give the path of a board .toml file")
    return path


def load_board(board: str) -> Board:
    path = board_path(board)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise TinycError(f"{path}: not valid TOML ({e})") from e
    return _parse(data, path)


# ------------------------------------------------------------------------ schema
# Board files come from anywhere (a forum, a colleague), and their values reach platformio.ini,
# link.ld, C headers, SCons and a shell: every field is checked here, before anything is written.
ADDRESS_SPACE = 1 << 32
ID_RE = re.compile(r"[a-z0-9_]{1,40}")
PIO_ID_RE = re.compile(r"[A-Za-z0-9_.-]{0,60}")        # PlatformIO platform/protocol ids
PIO_ENV_RE = re.compile(r"[A-Za-z0-9_-]{0,60}")         # PlatformIO environment names
MACHINE_RE = re.compile(r"[a-z0-9][a-z0-9.-]{0,40}")    # a QEMU -M machine
TOOL_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,40}")   # a program name, no path
PROTOCOL_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}")
# upload commands run through a shell (PlatformIO's upload_command): one line, words of these
# characters, double quotes to group words, {placeholders} of the build's files
COMMAND_RE = re.compile(r'[A-Za-z0-9_.,:=/+@{}" -]{1,300}')
PLACEHOLDERS = ("elf", "bin", "hex", "uf2", "port", "project")
# names and chip names: no `$` (SCons substitutes it), `\`, quotes, backticks or control characters
TEXT_PUNCT = set(" _.,:;()[]+/&'#@!-")


def _shown(value) -> str:
    text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Table:
    """One table of a board file: unknown keys are refused, each field is checked as it is read."""

    def __init__(self, table, where: str, known: tuple[str, ...]):
        if not isinstance(table, dict):
            raise TinycError(f"{where}: must be a table (got {_shown(table)})")
        unknown = sorted(k for k in table if k not in known)
        if unknown:
            raise TinycError(f"{where}: unknown field {_shown(unknown[0])} (known fields: "
                             f"{', '.join(known)})")
        self.table, self.where = table, where

    def has(self, key: str) -> bool:
        return key in self.table

    def _get(self, key: str, default):
        if key not in self.table:
            if default is None:
                raise TinycError(f"{self.where}: missing field '{key}'")
            return default
        return self.table[key]

    def fail(self, key: str, allowed: str):
        raise TinycError(f"{self.where}: field '{key}' must be {allowed} (got "
                         f"{_shown(self.table.get(key))})")

    def int(self, key: str, lo: int, hi: int, default: int | None = None) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.fail(key, f"an integer from {lo} to {hi}")
        return value

    def bool(self, key: str, default: bool | None = None) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            self.fail(key, "true or false")
        return value

    def choice(self, key: str, choices, default: str | None = None) -> str:
        value = self._get(key, default)
        if value not in choices:
            self.fail(key, "one of " + ", ".join(choices))
        return value

    def match(self, key: str, pattern: re.Pattern, allowed: str, default: str | None = None) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            self.fail(key, allowed)
        return value

    def text(self, key: str, max_len: int, default: str | None = None) -> str:
        """Free text (a name): letters, digits, spaces and the punctuation of TEXT_PUNCT."""
        value = self._get(key, default)
        if (not isinstance(value, str) or not 0 < len(value) <= max_len
                or not all(ch.isalnum() or ch in TEXT_PUNCT for ch in value)):
            self.fail(key, f"text of 1 to {max_len} letters, digits, spaces and "
                      f"{''.join(sorted(TEXT_PUNCT - {' '}))}")
        return value


def _upload_command(t: _Table, tool: str) -> str:
    """The upload command: one line of safe characters, balanced double quotes, known
    placeholders, and the protocol's tool as the program it runs (after an optional
    `timeout SECONDS`)."""
    command = t.match("command", COMMAND_RE, "one line of letters, digits, spaces, double quotes, "
                      "{placeholders} and _.,:=/+@- (no other shell characters)")
    bare = re.sub(r"\{\w*\}", "", command)
    if "{" in bare or "}" in bare or any(name not in PLACEHOLDERS
                                         for name in re.findall(r"\{(\w*)\}", command)):
        t.fail("command", "a command whose braces are placeholders: "
               + " ".join("{" + p + "}" for p in PLACEHOLDERS))
    if command.count('"') % 2:
        t.fail("command", "a command with balanced double quotes")
    words = shlex.split(command)
    if words[:1] == ["timeout"] and len(words) > 2 and words[1].isdigit():
        words = words[2:]
    if not words or words[0] != tool:
        t.fail("command", f"a command that runs the protocol's tool '{tool}' (its first word, "
               "after an optional `timeout SECONDS`)")
    return command


def _parse(data: dict, path: Path) -> Board:
    where = str(path) if str(path).isprintable() else ascii(str(path))
    top = _Table(data, where, ("id", "name", "cpu", "fpu", "mcu", "f_cpu", "sram_total_bytes",
                               "flash_total_bytes", "sram_bytes", "flash_bytes",
                               "stack_reserve_bytes", "emulated", "memory", "firmware",
                               "platformio", "qemu", "upload"))
    cpu = top.choice("cpu", tuple(CPUS))
    core = dict(
        id=top.match("id", ID_RE, "1 to 40 of a-z, 0-9 and _ (the file's name without .toml)"),
        name=top.text("name", 100), cpu=cpu, fpu=top.choice("fpu", CPUS[cpu][1]),
        sram_bytes=top.int("sram_bytes", 1, ADDRESS_SPACE),
        flash_bytes=top.int("flash_bytes", 1, ADDRESS_SPACE),
        stack_reserve_bytes=top.int("stack_reserve_bytes", 0, ADDRESS_SPACE),
        emulated=top.bool("emulated"))
    guard = 32 if CPUS[cpu][0] != "armv6-m" else 256
    if core["stack_reserve_bytes"] % 8 or core["stack_reserve_bytes"] < 2 * guard:
        raise TinycError(f"{where}: stack_reserve_bytes must be a multiple of 8 and at least "
                         f"{2 * guard} (it includes the {guard}-byte MPU guard)")
    if core["stack_reserve_bytes"] >= core["sram_bytes"]:
        top.fail("stack_reserve_bytes", f"less than sram_bytes ({core['sram_bytes']})")
    extra: dict = {"path": str(path)}
    if top.has("mcu"):
        extra["mcu"] = top.text("mcu", 80)
    if top.has("f_cpu"):
        extra["f_cpu"] = top.int("f_cpu", 1000, 2_000_000_000)
    for key in ("sram_total_bytes", "flash_total_bytes"):
        if top.has(key):
            extra[key] = top.int(key, 1, ADDRESS_SPACE)
    if top.has("memory"):
        m = _Table(data["memory"], where + " [memory]",
                   ("flash_origin", "flash_length", "ram_origin", "ram_length"))
        regions = {}
        for region in ("flash", "ram"):
            origin = m.int(f"{region}_origin", 0, ADDRESS_SPACE - 1)
            length = m.int(f"{region}_length", 1, ADDRESS_SPACE)
            if origin + length > ADDRESS_SPACE:
                m.fail(f"{region}_length", f"at most {ADDRESS_SPACE - origin} (the region must "
                       "end inside the 32-bit address space)")
            regions[f"{region}_origin"], regions[f"{region}_length"] = origin, length
        mem = MemoryMap(**regions)
        if core["sram_bytes"] > mem.ram_length or core["flash_bytes"] > mem.flash_length:
            raise TinycError(f"{where}: the budget (sram_bytes, flash_bytes) exceeds the linker "
                             "regions of [memory] (ram_length, flash_length)")
        extra["memory"] = mem
    if top.has("firmware"):
        fw = _Table(data["firmware"], where + " [firmware]",
                    ("console", "baud", "counter_unit", "counter_scale", "boot2"))
        extra["firmware"] = Firmware(
            console=fw.choice("console", CONSOLES),
            baud=fw.int("baud", 300, 10_000_000, 115200),
            counter_unit=fw.choice("counter_unit", COUNTER_UNITS, "cycles"),
            counter_scale=fw.int("counter_scale", 1, 1_000_000, 1),
            boot2=fw.bool("boot2", False))
    if top.has("platformio"):
        pio = _Table(data["platformio"], where + " [platformio]",
                     ("platform", "board", "framework", "upload_protocol"))
        extra["platformio"] = {k: pio.match(k, PIO_ID_RE, "a PlatformIO id: up to 60 of "
                                            "A-Z, a-z, 0-9 and _.-")
                               for k in ("platform", "framework", "upload_protocol") if pio.has(k)}
        if pio.has("board"):   # also the name of the official environment, [env:BOARD]
            extra["platformio"]["board"] = pio.match("board", PIO_ENV_RE, "a PlatformIO board id "
                                                     "(an environment name): up to 60 of A-Z, "
                                                     "a-z, 0-9 and _-")
    if top.has("qemu"):
        qemu = _Table(data["qemu"], where + " [qemu]", ("machine",))
        extra["qemu_machine"] = qemu.match("machine", MACHINE_RE, "a QEMU machine name (a-z, 0-9, "
                                           ".-)")
    if top.has("upload"):
        up = _Table(data["upload"], where + " [upload]", ("default", "protocols"))
        protocols = up.table.get("protocols", {})
        if not isinstance(protocols, dict):
            up.fail("protocols", "a table of protocols ([upload.protocols.NAME])")
        protos = []
        for name, table in protocols.items():
            if not PROTOCOL_RE.fullmatch(name):
                raise TinycError(f"{where}: protocol name {_shown(name)} in [upload.protocols] "
                                 "must be up to 31 of A-Z, a-z, 0-9 and _.-")
            p = _Table(table, f"{where} [upload.protocols.{name}]",
                       ("tool", "install", "command", "needs_port", "pio_protocol"))
            tool = p.match("tool", TOOL_RE, "a program name (A-Z, a-z, 0-9, _.+-; no path)")
            protos.append(UploadProtocol(
                name=name, tool=tool, install=p.text("install", 200), command=_upload_command(p, tool),
                needs_port=p.bool("needs_port", False),
                pio_protocol=p.match("pio_protocol", PIO_ID_RE, "a PlatformIO upload protocol "
                                     "id (A-Z, a-z, 0-9, _.-)", "")))
        extra["protocols"] = tuple(protos)
        extra["upload_default"] = up.match("default", PROTOCOL_RE, "a protocol name")
        if protos and extra["upload_default"] not in {p.name for p in protos}:
            raise TinycError(f"{where}: [upload] default '{extra['upload_default']}' is not "
                             "among [upload.protocols]")
    return Board(**core, **extra)


def require_firmware(board: Board) -> None:
    """Boards without [memory] and [firmware] can only take `--no-firmware` builds."""
    if board.memory is None or board.firmware is None or not board.f_cpu:
        raise TinycError(f"board '{board.id}' ({board.path}) has no [memory]/[firmware] tables or "
                         "f_cpu, so tinyc cannot make its firmware; add them (see "
                         "boards/README.md) or build with --no-firmware")
