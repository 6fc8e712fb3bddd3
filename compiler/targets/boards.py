"""Board descriptions: one TOML file per board in boards/ (memory sizes, CPU, budget)."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import TinycError

BOARDS_DIR = Path(__file__).resolve().parents[2] / "boards"


@dataclass(frozen=True)
class Board:
    id: str
    name: str
    cpu: str
    fpu: str
    sram_bytes: int
    flash_bytes: int
    stack_reserve_bytes: int
    emulated: bool


def list_boards() -> list[Board]:
    return [load_board(p.stem) for p in sorted(BOARDS_DIR.glob("*.toml"))]


def load_board(board_id: str) -> Board:
    path = BOARDS_DIR / f"{board_id}.toml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(BOARDS_DIR.glob("*.toml")))
        raise TinycError(f"unknown board '{board_id}'; known boards: {known} (see `tinyc boards`)")
    with open(path, "rb") as f:
        data = tomllib.load(f)
    try:
        return Board(**{k: data[k] for k in Board.__dataclass_fields__})
    except KeyError as e:
        raise TinycError(f"{path}: missing field {e}") from e
