"""C code generation: the planned int8 graph -> model.c / model.h + the runtime kernels it uses.

Python only prepares data here (per-layer parameter values, arena offsets, constant arrays as
number lists); every line of C lives in templates/model.c.j2 and templates/model.h.j2 or in
runtime_c/.

Layout written to out_dir (compile every .c in it with `-I out_dir`):
    out_dir/model.h           the API: tinyc_infer() and the TINYC_* constants
    out_dir/model.c           weights (static const, flash), the arena, the layer calls
    out_dir/tinyc/*.h         runtime headers (included as "tinyc/kernels.h")
    out_dir/tinyc/*.c         the runtime kernel sources the model uses
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from ..errors import TinycError, UnsupportedError
from ..ir import Graph, Node
from ..memory.planner import MemoryPlan, plan_memory, verify_plan

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_DIR = ROOT / "runtime_c"
TEMPLATE_DIR = ROOT / "templates"

# runtime source file (runtime_c/src/forward/) of each kernel kind
KERNEL_SOURCES = {
    "conv": "conv2d.c", "conv_1x1": "conv2d.c", "conv_1x1_inplace": "conv2d.c",
    "conv_im2col": "conv2d.c",
    "depthwise": "depthwise_conv.c",
    "depthwise_inplace": "depthwise_conv.c", "fc": "fully_connected.c", "add": "elementwise.c",
    "clamp": "elementwise.c", "requantize": "elementwise.c", "avg_pool": "pool.c",
    "max_pool": "pool.c", "pad": "data.c", "concat": "data.c", "copy": "data.c", "alias": None,
    "window": "data.c",
    "softmax": "softmax.c",
}
VALUES_PER_LINE = 24
# kernels whose bias argument has the input zero point folded in (see runtime_c kernels.h)
FOLDED_BIAS_KINDS = ("conv_im2col", "conv_1x1", "conv_1x1_inplace")


def c_ident(text: str) -> str:
    s = re.sub(r"[^0-9A-Za-z_]", "_", text)
    return s if s and not s[0].isdigit() else "_" + s


def c_comment(text: str) -> str:
    return text.replace("*/", "* /").replace("\n", " ")


def format_values(values: np.ndarray) -> str:
    """Flat number list, VALUES_PER_LINE per line (the template indents nothing)."""
    flat = [str(v) for v in np.asarray(values).reshape(-1).tolist()]
    lines = [", ".join(flat[i:i + VALUES_PER_LINE]) for i in range(0, len(flat), VALUES_PER_LINE)]
    return ",\n    ".join(lines)


class _Consts:
    """The static const arrays of model.c, one per constant tensor or per-layer table."""

    def __init__(self):
        self.arrays: list[dict] = []
        self.by_key: dict[str, str] = {}

    def add(self, key: str, ident: str, ctype: str, values, comment: str = "") -> str:
        if key in self.by_key:
            return self.by_key[key]
        values = np.asarray(values)
        if values.size == 0:
            raise TinycError(f"constant '{key}' is empty")
        self.arrays.append(dict(ident=ident, ctype=ctype, count=int(values.size),
                                data=format_values(values), comment=c_comment(comment)))
        self.by_key[key] = ident
        return ident


def _conv_layer(g: Graph, node: Node, i: int, plan: MemoryPlan, consts: _Consts) -> dict:
    a, q = node.attrs, node.attrs["q"]
    x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
    w, b = g.tensors[node.inputs[1]], g.tensors[node.inputs[2]]
    _, ih, iw, ic = x.shape
    _, oh, ow, oc = y.shape
    kh, kw = w.shape[1:3]
    groups = int(a.get("groups", 1))
    strides, dil, pads = a.get("strides", (1, 1)), a.get("dilations", (1, 1)), a["pads"]
    params = dict(in_h=ih, in_w=iw, in_c=ic, out_h=oh, out_w=ow, out_c=oc, kernel_h=kh,
                  kernel_w=kw, stride_h=strides[0], stride_w=strides[1], dilation_h=dil[0],
                  dilation_w=dil[1], pad_top=pads[0], pad_left=pads[1], groups=groups,
                  in_zp=q["in_zp"], out_zp=q["out_zp"], act_min=q["act_min"],
                  act_max=q["act_max"])
    if plan.inplace.get(i) == "depthwise":
        kind = "depthwise_inplace"
    elif plan.inplace.get(i) == "pointwise":
        kind = "conv_1x1_inplace"
    elif groups == ic and groups > 1:
        kind = "depthwise"
    elif (groups == 1 and kh == kw == 1 and tuple(strides) == (1, 1)
          and tuple(pads) == (0, 0, 0, 0)):
        kind = "conv_1x1"
    elif i in plan.scratch:
        kind = "conv_im2col"
    else:
        kind = "conv"   # the plain reference loop (a plan without the im2col scratch)
    if w.dtype != "int8" or b.dtype != "int32":
        raise TinycError(f"{node.describe()}: weights must be int8 and bias int32; quantize "
                         "the graph first")
    if kind in FOLDED_BIAS_KINDS:
        # sum((x - zp) * w) + b == sum(x * w) + (b - zp * sum(w)): the fast kernels' bias
        folded = (b.data.astype(np.int64)
                  - int(q["in_zp"]) * w.data.reshape(oc, -1).astype(np.int64).sum(axis=1))
        if folded.min() < -(1 << 31) or folded.max() >= (1 << 31):
            raise TinycError(f"{node.describe()}: the bias with the input zero point folded in "
                             "overflows int32; the layer's weights are out of range")
        bias = consts.add(b.name + "#folded", f"tinyc_b{i}", "int32_t", folded,
                          f"{b.name} - in_zp * sum(w)")
    else:
        bias = consts.add(b.name, f"tinyc_b{i}", "int32_t", b.data, b.name)
    return dict(kind=kind, ptype="tinyc_conv_params", params=params,
                weights=consts.add(w.name, f"tinyc_w{i}", "int8_t", w.data,
                                   f"{w.name} {tuple(w.shape)} OHWI"),
                bias=bias,
                mult=consts.add(w.name + "#mult", f"tinyc_m{i}", "int32_t", q["mult"]),
                shift=consts.add(w.name + "#shift", f"tinyc_s{i}", "int32_t", q["shift"]))


def _fc_layer(g: Graph, node: Node, i: int, consts: _Consts) -> dict:
    q = node.attrs["q"]
    w, b = g.tensors[node.inputs[1]], g.tensors[node.inputs[2]]
    n_out, n_in = w.shape
    mult = np.broadcast_to(np.asarray(q["mult"], np.int64), (n_out,))
    shift = np.broadcast_to(np.asarray(q["shift"], np.int64), (n_out,))
    return dict(kind="fc", ptype="tinyc_fc_params",
                params=dict(in_n=n_in, out_n=n_out, in_zp=q["in_zp"], out_zp=q["out_zp"],
                            act_min=q["act_min"], act_max=q["act_max"]),
                weights=consts.add(w.name, f"tinyc_w{i}", "int8_t", w.data,
                                   f"{w.name} {tuple(w.shape)}"),
                bias=consts.add(b.name, f"tinyc_b{i}", "int32_t", b.data, b.name),
                mult=consts.add(w.name + "#mult", f"tinyc_m{i}", "int32_t", mult),
                shift=consts.add(w.name + "#shift", f"tinyc_s{i}", "int32_t", shift))


def _pool_layer(g: Graph, node: Node) -> dict:
    a, q = node.attrs, node.attrs["q"]
    x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
    _, ih, iw, c = x.shape
    _, oh, ow, _ = y.shape
    return dict(kind=node.op, ptype="tinyc_pool_params",
                params=dict(in_h=ih, in_w=iw, channels=c, out_h=oh, out_w=ow,
                            kernel_h=a["kernel"][0], kernel_w=a["kernel"][1],
                            stride_h=a["strides"][0], stride_w=a["strides"][1],
                            pad_top=a["pads"][0], pad_left=a["pads"][1],
                            count_include_pad=int(bool(a.get("count_include_pad", False))),
                            zero_point=int(x.q.zero_point), act_min=q["act_min"],
                            act_max=q["act_max"]))


def _window_layer(g: Graph, node: Node, i: int, plan: MemoryPlan) -> dict:
    """crop: a window of the input -> the whole output; paste: the whole patch -> a window of
    the output, which the planner put over the accumulator (inputs[1]) in place."""
    x, y = g.tensors[node.inputs[0]], g.tensors[node.outputs[0]]
    r0, c0 = node.attrs["origin"]
    if node.op == "crop":
        rows, cols = y.shape[1:3]
        where = dict(src_w=x.shape[2], src_row0=r0, src_col0=c0, dst_w=cols, dst_row0=0,
                     dst_col0=0)
    else:
        rows, cols = x.shape[1:3]
        where = dict(src_w=cols, src_row0=0, src_col0=0, dst_w=y.shape[2], dst_row0=r0,
                     dst_col0=c0)
        if len(node.inputs) > 1 and (plan.tensor_offsets[node.inputs[1]]
                                     != plan.tensor_offsets[node.outputs[0]]):
            raise TinycError(f"{node.describe()}: a paste needs its output planned over its "
                             "accumulator")
    return dict(kind="window", ptype="tinyc_window_params",
                params=dict(rows=rows, cols=cols, channels=y.shape[3], **where))


def _layer(g: Graph, node: Node, i: int, plan: MemoryPlan, consts: _Consts) -> dict:
    q = node.attrs.get("q")
    if q is None:
        raise TinycError(f"{node.describe()}: has no integer parameters (attrs['q']); run the "
                         "quantize pass before code generation")
    y = g.tensors[node.outputs[0]]
    op = node.op
    if op == "conv2d":
        layer = _conv_layer(g, node, i, plan, consts)
    elif op == "fully_connected":
        layer = _fc_layer(g, node, i, consts)
    elif op == "add":
        layer = dict(kind="add", ptype="tinyc_add_params",
                     params=dict(size=y.size, in1_zp=q["in1_zp"], in2_zp=q["in2_zp"],
                                 out_zp=q["out_zp"], left_shift=q["left_shift"],
                                 in1_mult=q["in1_mult"], in1_shift=q["in1_shift"],
                                 in2_mult=q["in2_mult"], in2_shift=q["in2_shift"],
                                 out_mult=q["out_mult"], out_shift=q["out_shift"],
                                 act_min=q["act_min"], act_max=q["act_max"]))
    elif op in ("avg_pool", "max_pool"):
        layer = _pool_layer(g, node)
    elif op == "clamp":
        layer = dict(kind="clamp", params=dict(size=y.size, act_min=q["act_min"],
                                               act_max=q["act_max"]))
    elif op == "requantize":
        layer = dict(kind="requantize", ptype="tinyc_requantize_params",
                     params=dict(size=y.size, in_zp=q["in_zp"], out_zp=q["out_zp"],
                                 mult=q["mult"], shift=q["shift"]))
    elif op == "pad":
        x = g.tensors[node.inputs[0]]
        _, h, w, c = x.shape
        t, l, b, r = node.attrs["pads"]
        layer = dict(kind="pad", ptype="tinyc_pad_params",
                     params=dict(in_h=h, in_w=w, channels=c, pad_top=t, pad_left=l,
                                 pad_bottom=b, pad_right=r, value=q["pad_value"]))
    elif op == "concat":
        pixels = y.size // y.shape[-1]
        parts, c0 = [], 0
        for name in node.inputs:
            c = g.tensors[name].shape[-1]
            parts.append(dict(in_c=c, c_offset=c0, in_off=plan.tensor_offsets[name]))
            c0 += c
        layer = dict(kind="concat", params=dict(pixels=pixels, out_c=y.shape[-1]), parts=parts)
    elif op == "reshape":
        same = plan.tensor_offsets[node.inputs[0]] == plan.tensor_offsets[node.outputs[0]]
        layer = dict(kind="alias" if same else "copy", params=dict(size=y.size))
    elif op in ("crop", "paste"):
        layer = _window_layer(g, node, i, plan)
    elif op == "softmax":
        layer = dict(kind="softmax", ptype="tinyc_softmax_params",
                     params=dict(rows=y.size // y.shape[-1], depth=y.shape[-1],
                                 input_multiplier=q["input_multiplier"],
                                 input_left_shift=q["input_left_shift"],
                                 diff_min=q["diff_min"]))
    else:
        raise UnsupportedError(f"{node.describe()}: no C kernel for op '{op}'")
    layer["params"] = {k: int(v) for k, v in layer["params"].items()}
    layer.update(index=i, ident=f"tinyc_l{i}", op=op, name=c_comment(node.name),
                 in_offs=[plan.tensor_offsets[t] for t in node.inputs
                          if t and not g.tensors[t].is_const],
                 out_off=plan.tensor_offsets[node.outputs[0]],
                 scratch_off=plan.scratch.get(i, (None, 0))[0],
                 out_shape="x".join(map(str, y.shape)))
    if layer["kind"] in ("depthwise_inplace", "conv_1x1_inplace") and layer["in_offs"][0] != layer["out_off"]:
        raise TinycError(f"{node.describe()}: an in-place conv needs its output planned over "
                         "its input")
    return layer


def _share_parameters(layers: list[dict]) -> None:
    """Layers with identical parameter structs (the patches of a patch schedule mostly are) use
    the first one's: L["params_ident"] names the struct, L["own_params"] says who defines it."""
    seen: dict[tuple, str] = {}
    for L in layers:
        key = (L.get("ptype"), tuple(sorted(L["params"].items())))
        L["own_params"] = "ptype" in L and key not in seen
        L["params_ident"] = seen.setdefault(key, L["ident"])


def model_context(g: Graph, plan: MemoryPlan) -> dict:
    """Everything the templates need, as plain Python data."""
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise UnsupportedError(f"code generation needs one input and one output (graph has "
                               f"{len(g.inputs)} inputs, {len(g.outputs)} outputs)")
    x, y = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    for t in (x, y):
        if t.dtype != "int8" or t.q is None:
            raise TinycError(f"tensor '{t.name}' is {t.dtype}; quantize the graph to int8 before "
                             "code generation")
    consts = _Consts()
    layers = [_layer(g, n, i, plan, consts) for i, n in enumerate(g.nodes)]
    _share_parameters(layers)
    in_scale, in_zp = x.q.scalar()
    out_scale, out_zp = y.q.scalar()
    _, h, w, c = x.shape if len(x.shape) == 4 else (1, 1, 1, x.shape[-1])
    return dict(
        model_name=c_comment(Path(str(g.meta.get("source", "model"))).name),
        layers=layers, consts=consts.arrays, arena_bytes=max(plan.arena_bytes, 4),
        in_off=plan.tensor_offsets[x.name], out_off=plan.tensor_offsets[y.name],
        in_size=x.size, out_size=y.size, in_h=h, in_w=w, in_c=c,
        in_scale=f"{float(np.float32(in_scale)):.9g}", in_zp=int(in_zp),
        out_scale=f"{float(np.float32(out_scale)):.9g}", out_zp=int(out_zp),
        out_shape=list(y.shape), in_shape=list(x.shape),
        peak_live=plan.peak_live_bytes, no_reuse=plan.no_reuse_bytes,
        weight_bytes=int(sum(g.tensors[t].nbytes for t in g.constants())),
        macs=int(sum(g.macs(n) for n in g.nodes)))


def _environment():
    import jinja2
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True)


def runtime_files(layers: list[dict]) -> list[Path]:
    """Runtime headers plus the kernel sources the layers call."""
    files = sorted((RUNTIME_DIR / "include" / "tinyc").glob("*.h"))
    srcs = sorted({KERNEL_SOURCES[L["kind"]] for L in layers if KERNEL_SOURCES[L["kind"]]})
    return files + [RUNTIME_DIR / "src" / "forward" / s for s in srcs]


def generate_c(g: Graph, plan: MemoryPlan | None = None, out_dir=".") -> Path:
    """Write model.c, model.h and the runtime kernels into out_dir; returns out_dir."""
    for needed in (TEMPLATE_DIR / "model.c.j2", RUNTIME_DIR / "include" / "tinyc" / "kernels.h"):
        if not needed.is_file():
            raise TinycError(f"{needed} not found: tinyc reads its C runtime and templates from "
                             "its source tree; install it from a checkout (pip install -e .)")
    if plan is None:
        plan = plan_memory(g)
    verify_plan(g, plan)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = model_context(g, plan)
    env = _environment()
    (out / "model.h").write_text(env.get_template("model.h.j2").render(**ctx))
    (out / "model.c").write_text(env.get_template("model.c.j2").render(**ctx))
    rt = out / "tinyc"
    if rt.exists():
        shutil.rmtree(rt)
    rt.mkdir()
    for f in runtime_files(ctx["layers"]):
        shutil.copy2(f, rt / f.name)
    return out
