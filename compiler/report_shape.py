"""The shape of a report.json, checked when a command loads one (tinyc report, emulate, flash,
export): a file that is not what tinyc build wrote (`{}`, missing keys, wrong types) gets one
line, "not a tinyc report", instead of a crash deep in the command."""
from __future__ import annotations

import json

import numpy as np

# What the commands read from report.json: key -> type, or a nested dict of the same. Counts
# and limits are positive integers, scales positive numbers, shapes lists of positive integers.
_COUNT, _SIZE, _SCALE, _SHAPE = "count", "size", "scale", "shape"
REPORT_SHAPE = {
    "model": str, "board": str, "board_name": str, "sram_limit_bytes": _SIZE,
    "flash_limit_bytes": _SIZE, "stack_reserve_bytes": _COUNT, "weights_bytes": _COUNT,
    "macs": _COUNT, "ops": list, "buffers": list, "build_options": dict,
    "input": {"shape_nchw": _SHAPE, "scale": _SCALE, "zero_point": int},
    "output": {"shape": _SHAPE, "scale": _SCALE, "zero_point": int},
    "inference": {"arena_bytes": _COUNT, "sram_bytes": _COUNT},
}
TRAINING_SHAPE = {"scheme": str, "lr": _SCALE, "arena_bytes": _COUNT, "params_sram_bytes": _COUNT,
                  "stack_reserve_bytes": _COUNT, "sram_bytes": _COUNT}
OP_ROW_SHAPE = {"index": _COUNT, "op": str, "output_shape": _SHAPE, "macs": _COUNT,
                "output_offset": _COUNT, "output_bytes": _COUNT, "in_place": object,
                "patch": object}
BUFFER_SHAPE = {"offset": _COUNT, "size": _COUNT, "first": _COUNT, "last": _COUNT, "kind": str,
                "tensors": list}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _value_problem(value, kind) -> bool:
    if kind == _COUNT:
        return not (_is_int(value) and value >= 0)
    if kind == _SIZE:
        return not (_is_int(value) and value > 0)
    if kind == _SCALE:
        return not ((_is_int(value) or isinstance(value, float)) and np.isfinite(value)
                    and value > 0)
    if kind == _SHAPE:
        return not (isinstance(value, list) and value and all(_is_int(d) and d > 0 for d in value))
    if kind is int:
        return not _is_int(value)
    return not isinstance(value, kind)


def _shape_problem(obj, shape: dict, where: str) -> str | None:
    if not isinstance(obj, dict):
        return f"{where or 'the file'} is not an object"
    for key, kind in shape.items():
        name = f"{where}.{key}" if where else key
        if key not in obj:
            return f"'{name}' is missing"
        if isinstance(kind, dict):
            problem = _shape_problem(obj[key], kind, name)
            if problem:
                return problem
        elif _value_problem(obj[key], kind):
            return f"'{name}' is {json.dumps(obj[key])[:40]}"
    return None


def report_problem(rep) -> str | None:
    """What makes `rep` unusable as a tinyc report (None: nothing)."""
    problem = _shape_problem(rep, REPORT_SHAPE, "")
    if problem:
        return problem
    if len(rep["input"]["shape_nchw"]) not in (2, 3, 4):
        return "'input.shape_nchw' is not N, C, H, W / N, C, L / N, F"
    if "training" in rep and (problem := _shape_problem(rep["training"], TRAINING_SHAPE,
                                                        "training")):
        return problem
    if rep.get("firmware") is not None and not isinstance(rep["firmware"], dict):
        return "'firmware' is not an object"
    for k, row in enumerate(rep["ops"]):
        if problem := _shape_problem(row, OP_ROW_SHAPE, f"ops[{k}]"):
            return problem
    for k, row in enumerate(rep["buffers"]):
        if problem := _shape_problem(row, BUFFER_SHAPE, f"buffers[{k}]"):
            return problem
    return None
