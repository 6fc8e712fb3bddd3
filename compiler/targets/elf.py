"""Just enough of the ELF format (32-bit little-endian, Arm) to account for a firmware's memory:
section sizes and addresses, and the sized symbols (functions and objects) with their sections.
Works on linked executables and on relocatable objects (.o), so the biggest consumers can be
named even when the link failed for lack of room."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import TinycError

SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHT_SYMTAB, SHT_NOBITS = 2, 8
SHN_COMMON = 0xFFF2
STT_OBJECT, STT_FUNC = 1, 2


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int

    @property
    def alloc(self) -> bool:
        return bool(self.flags & SHF_ALLOC)

    @property
    def nobits(self) -> bool:
        return self.type == SHT_NOBITS


@dataclass(frozen=True)
class Symbol:
    name: str
    size: int
    kind: str      # "func" or "object"
    section: str   # section name ("COMMON" for common symbols of an object file)
    file: str


def _cstr(data: bytes, offset: int) -> str:
    end = data.index(b"\0", offset)
    return data[offset:end].decode(errors="replace")


class Elf:
    def __init__(self, path):
        self.path = Path(path)
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise TinycError(f"cannot read {path}: {e}") from e
        if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
            raise TinycError(f"{path} is not a 32-bit little-endian ELF file")
        self.data = data
        shoff, = struct.unpack_from("<I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
        raw = [struct.unpack_from("<IIIIIIIIII", data, shoff + i * shentsize) for i in range(shnum)]
        strtab = raw[shstrndx][4]
        self._raw = raw
        self.sections = [Section(_cstr(data, strtab + h[0]), h[1], h[2], h[3], h[4], h[5])
                         for h in raw]

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def symbols(self) -> list[Symbol]:
        """Functions and objects with a size, defined in this file."""
        out = []
        for h in self._raw:
            if h[1] != SHT_SYMTAB:
                continue
            strtab = self._raw[h[6]][4]
            for off in range(h[4], h[4] + h[5], 16):
                name_off, _value, size, info, _other, shndx = struct.unpack_from(
                    "<IIIBBH", self.data, off)
                kind = {STT_OBJECT: "object", STT_FUNC: "func"}.get(info & 0xF)
                if not kind or size == 0 or shndx == 0:
                    continue
                if shndx == SHN_COMMON:
                    sec = "COMMON"
                elif shndx < len(self.sections):
                    sec = self.sections[shndx].name
                else:
                    continue
                out.append(Symbol(_cstr(self.data, strtab + name_off), size, kind, sec,
                                  self.path.name))
        return out


def region_of_section(name: str) -> str:
    """'ram', 'flash' or 'both' (initialised data) for a section name of an object file."""
    if name == "COMMON" or name.startswith((".bss", ".noinit", ".stack")):
        return "ram"
    if name.startswith(".data"):
        return "both"
    return "flash"


def memory_usage(elf: Elf, ram_origin: int, ram_length: int) -> dict:
    """Flash and static RAM of a linked firmware, by section.

    flash = every allocated section with contents (code, constants, the initial values of
    .data); RAM = from the region's origin to the end of the last allocated section in it (.data,
    .bss, the stack section; alignment gaps included)."""
    flash_sections, ram_sections = {}, {}
    ram_end = ram_origin
    for s in elf.sections:
        if not s.alloc or s.size == 0:
            continue
        in_ram = ram_origin <= s.addr < ram_origin + max(ram_length, 1) or (
            s.nobits and s.addr >= ram_origin)
        if in_ram:
            ram_sections[s.name] = s.size
            ram_end = max(ram_end, s.addr + s.size)
        if not s.nobits:
            flash_sections[s.name] = s.size
    return {"flash_bytes": sum(flash_sections.values()), "ram_bytes": ram_end - ram_origin,
            "flash_sections": flash_sections, "ram_sections": ram_sections}


def biggest(symbols: list[Symbol], region: str, n: int = 8) -> list[Symbol]:
    picked = [s for s in symbols if region_of_section(s.section) in (region, "both")]
    return sorted(picked, key=lambda s: (-s.size, s.name))[:n]
