"""A firmware's memory from its ELF file (read with pyelftools): section sizes and addresses,
and the sized symbols (functions and objects) with their sections. Works on linked executables
and on relocatable objects (.o), so the biggest consumers can be named even when the link failed
for lack of room."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..errors import TinycError

SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHT_NOBITS = "SHT_NOBITS"
KINDS = {"STT_OBJECT": "object", "STT_FUNC": "func"}


@dataclass(frozen=True)
class Section:
    name: str
    type: str      # pyelftools' name of the section type ("SHT_PROGBITS", "SHT_NOBITS", ...)
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


class Elf:
    def __init__(self, path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                elf = ELFFile(f)
                if elf.elfclass != 32 or not elf.little_endian:
                    raise TinycError(f"{path} is not a 32-bit little-endian ELF file")
                self.sections = [Section(s.name, s["sh_type"], s["sh_flags"], s["sh_addr"],
                                         s["sh_offset"], s["sh_size"])
                                 for s in elf.iter_sections()]
                self._symbols = self._read_symbols(elf)
        except OSError as e:
            raise TinycError(f"cannot read {path}: {e}") from e
        except (ELFError, ValueError, KeyError, IndexError) as e:
            raise TinycError(f"{path} is not a readable ELF file: {e}") from e

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def _read_symbols(self, elf: ELFFile) -> list[Symbol]:
        out = []
        for table in elf.iter_sections("SHT_SYMTAB"):
            for sym in table.iter_symbols():
                kind = KINDS.get(sym["st_info"]["type"])
                shndx = sym["st_shndx"]
                if not kind or sym["st_size"] == 0 or shndx == "SHN_UNDEF":
                    continue
                if shndx == "SHN_COMMON":
                    sec = "COMMON"
                elif isinstance(shndx, int) and shndx < len(self.sections):
                    sec = self.sections[shndx].name
                else:
                    continue
                out.append(Symbol(sym.name, sym["st_size"], kind, sec, self.path.name))
        return out

    def symbols(self) -> list[Symbol]:
        """Functions and objects with a size, defined in this file."""
        return list(self._symbols)


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
