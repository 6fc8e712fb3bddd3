"""The op catalogue (compiler/ops): every op declares what each stage needs, and nothing else in
the compiler keeps per-op knowledge (the stages ask the op)."""
import re
from pathlib import Path

import pytest

from tinyc import ops
from tinyc.ops.base import Op

ROOT = Path(__file__).resolve().parents[1]
FORWARD_HOOKS = ("run_float", "run_int8", "quantize", "tflite", "onnx_export")


def overrides(op: Op, hook: str) -> bool:
    return getattr(type(op), hook) is not getattr(Op, hook)


@pytest.mark.parametrize("name", sorted(ops.REGISTRY))
def test_op_declares_what_each_stage_needs(name):
    op = ops.REGISTRY[name]
    assert op.name == name
    if op.backward:
        assert overrides(op, "run_train"), f"{name}: a backward op needs run_train"
    elif name not in ("crop", "paste", "select_channels", "lut"):   # made by passes, never imported
        missing = [h for h in FORWARD_HOOKS if not overrides(op, h)]
        assert not missing, f"{name}: missing {missing}"
    if op.windowed:
        assert op.patchable and overrides(op, "window")
    assert op.alias or overrides(op, "layer"), f"{name}: no C kernel (layer)"


@pytest.mark.parametrize("name", sorted(ops.REGISTRY))
def test_every_kernel_has_its_source_and_template_macro(name):
    op = ops.REGISTRY[name]
    for kind, source in op.sources.items():
        if source is not None:
            path = ROOT / "runtime_c" / "src" / (source if "/" in source else "forward/" + source)
            assert path.is_file(), f"{name}: kernel kind {kind}: {path} missing"
    templates = " ".join(p.read_text() for p in (ROOT / "templates" / "ops").glob("*.j2"))
    macros = set(re.findall(r"{%-? macro (\w+)\(", templates))
    generic = {"alias", "grad_alias"}   # no call: the output is the input's memory
    for kind in op.sources:
        assert kind in macros or kind in generic, f"{name}: no macro {kind} in templates/ops"


def test_onnx_types_are_imported_once():
    seen = {}
    for op in ops.REGISTRY.values():
        for onnx_type in op.onnx:
            assert onnx_type not in seen, f"{onnx_type}: {seen.get(onnx_type)} and {op.name}"
            seen[onnx_type] = op.name
    assert set(ops.onnx_rules()) == set(seen)


def test_unknown_op_is_a_clear_error():
    from tinyc.errors import UnsupportedError
    from tinyc.ir import Node
    with pytest.raises(UnsupportedError, match=r"node 'n' op frobnicate: unknown op"):
        ops.get(Node("n", "frobnicate", [], []))
