"""Board descriptions: one TOML file per board in boards/ (see boards/README.md for the schema).

A board gives the chip (CPU, FPU, clock, memory sizes), the budget tinyc may use (sram_bytes,
flash_bytes; the memory check of `tinyc build` is against these), the linker memory map, how the
demo firmware talks (console) and counts (SysTick unit), the official PlatformIO ids for users
online, and the upload protocols `tinyc flash` knows.

`--board` takes a board id (boards/<id>.toml) or the path of a TOML file (a custom board).
"""
from __future__ import annotations

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
CONSOLES = ("semihosting", "stm32f4_usart", "stm32f7_usart", "nrf52_uart", "rp2040_uart")
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


def _need(table: dict, key: str, kind, where: str):
    if key not in table:
        raise TinycError(f"{where}: missing field '{key}'")
    value = table[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise TinycError(f"{where}: '{key}' must be an integer (got {value!r})")
    if kind is not int and not isinstance(value, kind):
        raise TinycError(f"{where}: '{key}' must be {kind.__name__} (got {value!r})")
    return value


def _parse(data: dict, path: Path) -> Board:
    where = str(path)
    core = {k: _need(data, k, t, where) for k, t in (
        ("id", str), ("name", str), ("cpu", str), ("fpu", str), ("sram_bytes", int),
        ("flash_bytes", int), ("stack_reserve_bytes", int), ("emulated", bool))}
    if core["cpu"] not in CPUS:
        raise TinycError(f"{where}: cpu '{core['cpu']}' is not one of {', '.join(CPUS)}")
    if core["fpu"] not in CPUS[core["cpu"]][1]:
        raise TinycError(f"{where}: fpu '{core['fpu']}' does not go with {core['cpu']} "
                         f"(one of {', '.join(CPUS[core['cpu']][1])})")
    guard = 32 if CPUS[core["cpu"]][0] != "armv6-m" else 256
    if core["stack_reserve_bytes"] % 8 or core["stack_reserve_bytes"] < 2 * guard:
        raise TinycError(f"{where}: stack_reserve_bytes must be a multiple of 8 and at least "
                         f"{2 * guard} (it includes the {guard}-byte MPU guard)")
    extra: dict = {"path": str(path)}
    for key in ("mcu",):
        if key in data:
            extra[key] = _need(data, key, str, where)
    for key in ("f_cpu", "sram_total_bytes", "flash_total_bytes"):
        if key in data:
            extra[key] = _need(data, key, int, where)
    if "memory" in data:
        m = data["memory"]
        mem = MemoryMap(**{k: _need(m, k, int, where + " [memory]") for k in
                           ("flash_origin", "flash_length", "ram_origin", "ram_length")})
        if core["sram_bytes"] > mem.ram_length or core["flash_bytes"] > mem.flash_length:
            raise TinycError(f"{where}: the budget (sram_bytes, flash_bytes) exceeds the linker "
                             "regions of [memory] (ram_length, flash_length)")
        extra["memory"] = mem
    if "firmware" in data:
        fw = dict(data["firmware"])
        fw_where = where + " [firmware]"
        console = _need(fw, "console", str, fw_where)
        if console not in CONSOLES:
            raise TinycError(f"{fw_where}: console '{console}' is not one of {', '.join(CONSOLES)}")
        unit = fw.get("counter_unit", "cycles")
        if unit not in COUNTER_UNITS:
            raise TinycError(f"{fw_where}: counter_unit must be one of {', '.join(COUNTER_UNITS)}")
        extra["firmware"] = Firmware(console=console, baud=int(fw.get("baud", 115200)),
                                     counter_unit=unit,
                                     counter_scale=int(fw.get("counter_scale", 1)),
                                     boot2=bool(fw.get("boot2", False)))
    if "platformio" in data:
        extra["platformio"] = dict(data["platformio"])
    if "qemu" in data:
        extra["qemu_machine"] = _need(data["qemu"], "machine", str, where + " [qemu]")
    if "upload" in data:
        up = data["upload"]
        protos = []
        for name, p in up.get("protocols", {}).items():
            pw = f"{where} [upload.protocols.{name}]"
            protos.append(UploadProtocol(
                name=name, tool=_need(p, "tool", str, pw), install=_need(p, "install", str, pw),
                command=_need(p, "command", str, pw), needs_port=bool(p.get("needs_port", False)),
                pio_protocol=str(p.get("pio_protocol", ""))))
        extra["protocols"] = tuple(protos)
        extra["upload_default"] = _need(up, "default", str, where + " [upload]")
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
