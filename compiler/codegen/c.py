"""C code generation: the planned int8 graph -> model.c / model.h + the runtime kernels it uses.

Python only prepares data here (per-layer parameter values, arena offsets, constant arrays as
number lists); every line of C lives in templates/model.c.j2 and templates/model.h.j2 or in
runtime_c/.

Layout written to out_dir (compile every .c in it with `-I out_dir`):
    out_dir/model.h           the API: tinyc_infer() and the TINYC_* constants
    out_dir/model.c           weights (static const, flash), the arena, the layer calls
    out_dir/tinyc/*.h         runtime headers (included as "tinyc/kernels.h"); config.h is
                              generated: the specialised kernel variants the model uses
    out_dir/tinyc/*.c         the runtime kernel sources the model uses
    out_dir/train_params.json training builds: the trained parameters (name, kind, dtype,
                              shape, bytes; scales and trained channels: trained_elements)
                              in tinyc_params[] order

Training graphs (passes/autodiff.py, g.meta["train"]) also get tinyc_train_step(), the SRAM copies
of the trained parameters (static arrays initialised from their flash constants by
tinyc_train_init(); the forward kernels then read the SRAM copies) and the parameter table;
templates/train.c.j2 holds that C. A conv trained on some input channels only (planner
.split_weights) gets an SRAM array of just those channels' weights; its kernels read the rest
from the unchanged flash tensor (kernels.h tinyc_split_weights). Flash holds the tensor as
built, so no extra copy: the SRAM part is gathered from it, and tinyc_get_param merges both.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from .. import ops
from ..errors import TinycError, UnsupportedError
from ..lr_schedule import DEFAULT_LR_SCHEDULE
from ..ir import Graph, Node
from ..memory.planner import MemoryPlan, plan_memory, verify_plan

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_DIR = ROOT / "runtime_c"
TEMPLATE_DIR = ROOT / "templates"

# every training build also needs these (rounding helpers, exp, the folded-bias refresh, masks)
TRAIN_SOURCES = ("backward/loss.c", "optim/sgd.c", "backward/elementwise_grad.c",
                 "optim/split_weights.c")
VALUES_PER_LINE = 24


def c_ident(text: str) -> str:
    s = re.sub(r"[^0-9A-Za-z_]", "_", text)
    return s if s and not s[0].isdigit() else "_" + s


def c_string(text: str) -> str:
    """A C string literal of any text: its UTF-8 bytes, printable ASCII as is except `"`, `\\`
    (escaped) and `?` (no trigraph can form); every other byte as a three-digit octal escape
    (three digits: a following digit cannot join it)."""
    out = []
    for ch in text.encode("utf-8", "surrogatepass"):
        c = chr(ch)
        out.append("\\" + c if c in '"\\' else c if 32 <= ch < 127 and c != "?" else f"\\{ch:03o}")
    return '"' + "".join(out) + '"'


# What a name may keep in a comment of generated C, linker script or platformio.ini. No `*` (so
# neither `*/` nor `/*` can form), no `\` (line splicing), no `?` (trigraphs), no control
# character (a new line); everything else becomes `_`.
COMMENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                          " _-.,:;/()[]<>{}#=+!@$%&|^~'\"")
COMMENT_MAX = 160


def c_comment(text: str) -> str:
    """Any text (a model's tensor or node name, a board name) as comment text that cannot close,
    nest, splice or end the comment's line, whatever its characters; long text is cut."""
    text = "".join(ch if ch in COMMENT_CHARS else "_" for ch in str(text))
    return text if len(text) <= COMMENT_MAX else text[:COMMENT_MAX - 3] + "..."


def c_float(v) -> str:
    """A float32 value as an exact C float literal (hexadecimal: no decimal rounding)."""
    f = float(np.float32(v))
    if not np.isfinite(f):
        raise TinycError(f"float constant {f} is not finite")
    return float.hex(f) + "f"


def format_values(values: np.ndarray) -> str:
    """Flat number list, VALUES_PER_LINE per line (the template indents nothing)."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        flat = [c_float(v) for v in values.reshape(-1)]
    else:
        flat = [str(v) for v in values.reshape(-1).tolist()]
    lines = [", ".join(flat[i:i + VALUES_PER_LINE]) for i in range(0, len(flat), VALUES_PER_LINE)]
    return ",\n    ".join(lines)


class _Consts:
    """The static const arrays of model.c, one per constant tensor or per-layer table."""

    def __init__(self):
        self.arrays: list[dict] = []
        self.by_key: dict[str, str] = {}

    def add(self, key: str, ident: str, ctype: str, values, comment: str = "",
            note: str = "") -> str:
        """`comment` (a model's name) is escaped; `note` is tinyc's own text, kept as written
        (it never holds a '*/')."""
        assert "*/" not in note and "\n" not in note
        if key in self.by_key:
            return self.by_key[key]
        values = np.asarray(values)
        if values.size == 0:
            raise TinycError(f"constant '{key}' is empty")
        self.arrays.append(dict(ident=ident, ctype=ctype, count=int(values.size),
                                data=format_values(values),
                                comment=c_comment(comment) + note))
        self.by_key[key] = ident
        return ident


class _Params:
    """Trainable parameters (training builds): static SRAM arrays initialised from flash copies.
    ref() names the array a kernel reads: the SRAM copy of a trained tensor, else the constant.
    A split weight (planner.split_weights) has only its trained channels in SRAM: its kernels
    take a tinyc_split_weights (split_ref()) over the flash tensor and that SRAM array."""

    def __init__(self, g: Graph):
        from ..memory.planner import split_sram_count, split_weights, trainable_tensors
        self.g = g
        self.table: list[dict] = []
        self.by_name: dict[str, dict] = {}
        split = split_weights(g) if "train" in g.meta else {}
        for k, (name, kind) in enumerate(trainable_tensors(g) if "train" in g.meta else []):
            t = g.tensors[name]
            count = split_sram_count(g, name, split[name]) if name in split else t.size
            entry = dict(index=k, name=name, c_name=c_string(name),
                         kind=kind, ident=f"tinyc_p{k}", ctype=_CTYPES[t.dtype], count=t.size,
                         bytes=t.nbytes, sram_count=count, sram_bytes=count * t.nbytes // t.size,
                         shape=list(t.shape), dtype=t.dtype, init=None, split=None)
            if name in split:
                out_c, kh, kw, cin_g = t.shape
                entry["split"] = dict(ident=f"tinyc_sw{k}", channels=split[name]["channels"],
                                      out_c=out_c, taps=kh * kw, cin_g=cin_g,
                                      cout_g=out_c // split[name]["groups"])
            self.table.append(entry)
            self.by_name[name] = entry

    def trained(self, name: str) -> bool:
        return name in self.by_name

    def is_split(self, name: str) -> bool:
        return name in self.by_name and self.by_name[name]["split"] is not None

    def ref(self, consts: "_Consts", name: str, ident: str, comment: str) -> str:
        t = self.g.tensors[name]
        const = consts.add(name, ident, _CTYPES[t.dtype], t.data, comment)
        entry = self.by_name.get(name)
        if entry is None:
            return const
        entry["init"] = const
        if entry["split"] is not None:
            entry["split"]["kept"] = kept_channels(consts, name, entry["split"]["channels"])
        return entry["ident"]

    def split_ref(self, consts: "_Consts", name: str, ident: str, comment: str) -> str:
        """The tinyc_split_weights of a split weight (a pointer expression)."""
        self.ref(consts, name, ident, comment)
        return "&" + self.by_name[name]["split"]["ident"]


def kept_channels(consts: "_Consts", weight: str, channels) -> str:
    """The const array of the input channels trained in `weight` (shared by its update and its
    split storage)."""
    return consts.add(f"kept:{weight}", f"tinyc_kc{len(consts.arrays)}", "int32_t",
                      np.asarray(channels, np.int64), f"input channels of {weight} trained")


_CTYPES = {"int8": "int8_t", "int32": "int32_t", "float32": "float"}


def _layer(g: Graph, node: Node, i: int, plan: MemoryPlan, consts: _Consts,
           params: _Params) -> dict:
    q = node.attrs.get("q")
    if q is None:
        raise TinycError(f"{node.describe()}: has no integer parameters (attrs['q']); run the "
                         "quantize pass before code generation")
    y = g.tensors[node.outputs[0]]
    op = node.op
    layer = ops.get(node).layer(g, node, i, plan, consts, params)
    layer["params"] = {k: int(v) for k, v in layer["params"].items()}
    layer.update(index=i, ident=f"tinyc_l{i}", op=op, name=c_comment(node.name),
                 in_offs=[plan.tensor_offsets[t] for t in node.inputs
                          if t and not g.tensors[t].is_const],
                 out_off=plan.tensor_offsets[node.outputs[0]],
                 scratch_off=plan.scratch.get(i, (None, 0))[0],
                 scratch_bytes=kernel_scratch_bytes(plan, i),
                 out_shape="x".join(map(str, y.shape)))
    return layer


def kernel_scratch_bytes(plan: MemoryPlan, i: int) -> int:
    """The bytes of node i's scratch that its kernel may use: a trained layer's refolded bias
    follows them in the same buffer (plan.bias_scratch), and a kernel told the whole size would
    write over it."""
    off, size = plan.scratch.get(i, (None, 0))
    return plan.bias_scratch[i] - off if i in plan.bias_scratch else size


def _train_layer(g: Graph, node: Node, i: int, plan: MemoryPlan, consts: _Consts,
                 params: _Params) -> dict:
    """A node of the training step (forward channel selection, loss, backward, update)."""
    op = node.op
    out = g.tensors[node.outputs[0]] if node.outputs else None
    L: dict = dict(kind=op, params={})
    L.update(ops.get(node).layer(g, node, i, plan, consts, params))
    ins = [t for t in node.inputs if t and not g.tensors[t].is_const]
    L.update(index=i, ident=f"tinyc_l{i}", op=op, name=c_comment(node.name),
             in_offs=[plan.tensor_offsets[t] for t in ins],
             out_off=plan.tensor_offsets[node.outputs[0]] if node.outputs else None,
             scratch_off=plan.scratch.get(i, (None, 0))[0],
             scratch_bytes=kernel_scratch_bytes(plan, i),
             out_shape="x".join(map(str, out.shape)) if out is not None else "-")
    return L


def _training_only(node: Node) -> bool:
    """A forward node that only keeps data for the backward pass: a training layer."""
    return ops.get(node).training_only


def _share_parameters(layers: list[dict]) -> None:
    """Layers with identical parameter structs (the patches of a patch schedule mostly are) use
    the first one's: L["params_ident"] names the struct, L["own_params"] says who defines it."""
    def frozen(params: dict) -> tuple:
        return tuple(sorted((k, frozen(v) if isinstance(v, dict) else v)
                            for k, v in params.items()))

    seen: dict[tuple, str] = {}
    for L in layers:
        key = (L.get("ptype"), frozen(L["params"]))
        L["own_params"] = "ptype" in L and key not in seen
        L["params_ident"] = seen.setdefault(key, L["ident"])


# the fields of a layer that may change from patch to patch of a patch schedule (the table's
# columns) and those that only describe it (comments, the hook)
_PATCH_VARYING = ("params_ident", "in_offs", "out_off", "scratch_off", "scratch_bytes",
                  "params", "own_params")
_PATCH_LABELS = ("index", "ident", "name", "out_shape")


def _patch_loop(g: Graph, layers: list[dict], arena_bytes: int) -> dict | None:
    """The patched stage of an inference graph as one loop over a table (templates/model.c.j2):
    patch k runs the same kernels as patch 0, on its own arena offsets and scratch sizes and with
    patch 0's parameter struct copied and the fields that differ (a tile's size, its padding, a
    paste's position) set, all read from row k. Unrolled call by call instead, the stage's code
    grows with the patches (about 25 bytes of argument set-up per call), and so do the
    parameter structs, one per patch for most layers (76 bytes each). Marks the structs the
    loop no longer needs (own_params False). None when there is no patched stage or its
    patches differ in anything else (their layers, kernels, weights), or their layers are not
    numbered patch after patch."""
    staged = [L for L, node in zip(layers, g.nodes) if "patch" in node.attrs]
    if not staged or [L["index"] for L in staged] != list(range(staged[0]["index"],
                                                                  staged[-1]["index"] + 1)):
        return None   # none, or not one stretch of layers
    runs: list[list[dict]] = []
    for L in staged:
        patch = g.nodes[L["index"]].attrs["patch"]
        if not runs or g.nodes[runs[-1][0]["index"]].attrs["patch"] != patch:
            runs.append([])
        runs[-1].append(L)
    first, n = staged[0]["index"], len(runs[0])
    if len(runs) < 2 or any(len(r) != n or "ptype" not in L for r in runs for L in r):
        return None

    def fixed(L: dict) -> dict:
        return {k: v for k, v in L.items() if k not in _PATCH_VARYING + _PATCH_LABELS}

    def ctype(values: list) -> str:
        lo, hi = min(values), max(values)
        return ("int16_t" if -0x8000 <= lo and hi <= 0x7FFF
                else "uint16_t" if 0 <= lo and hi <= 0xFFFF else "int32_t")

    columns, rows, slots = [], [[] for _ in runs], []
    named: dict[tuple, str] = {}   # a column's values -> its name
    for j in range(n):
        run = [r[j] for r in runs]
        if any(fixed(L) != fixed(run[0]) or (L["scratch_off"] is None) !=
               (run[0]["scratch_off"] is None) or L["params"].keys() != run[0]["params"].keys()
               for L in run):
            return None
        S = dict(run[0], index=f"{first + j} + {n} * k",
                 out_shape=run[0]["out_shape"] + " (patch 0)")

        def column(name: str, values: list):
            if all(v == values[0] for v in values):
                return values[0]
            if not all(isinstance(v, int) for v in values):
                raise ValueError(name)
            if tuple(values) not in named:   # (an in-place chain: one offset for several calls)
                named[tuple(values)] = name
                columns.append(f"{ctype(values)} {name}")
                for row, v in zip(rows, values):
                    row.append(v)
            return f"t->{named[tuple(values)]}"

        try:
            # the parameter fields that differ: patch 0's struct copied, these fields set
            S["set_params"] = [(f, c) for f in run[0]["params"]
                               for c in [column(f"f{j}_{f}", [L["params"][f] for L in run])]
                               if isinstance(c, str)]
            S["in_offs"] = [column(f"i{j}_{e}", [L["in_offs"][e] for L in run])
                            for e in range(len(S["in_offs"]))]
            S["out_off"] = column(f"o{j}", [L["out_off"] for L in run])
            if S["scratch_off"] is not None:
                S["scratch_off"] = column(f"s{j}", [L["scratch_off"] for L in run])
                S["scratch_bytes"] = column(f"n{j}", [L["scratch_bytes"] for L in run])
        except ValueError:   # a nested parameter differs: leave the stage unrolled
            return None
        if S["set_params"]:
            S["base_params"], S["params_ident"] = S["params_ident"], f"q{j}"
        slots.append(S)
    # the structs of patches 1.. are not needed, unless a layer after the stage shares one
    outside = {L["params_ident"] for L in layers if L["index"] > staged[-1]["index"]}
    for r in runs[1:]:
        for L in r:
            L["own_params"] = L["own_params"] and L["ident"] in outside
    return dict(first=first, slots_per_patch=n, count=len(runs), last=first + n * len(runs) - 1,
                slots=slots, columns=columns, rows=rows)


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
    params = _Params(g)
    train = g.meta.get("train")
    n_forward = train["forward_nodes"] if train else len(g.nodes)
    layers = [_layer(g, n, i, plan, consts, params) if i < n_forward and not _training_only(n)
              else _train_layer(g, n, i, plan, consts, params) for i, n in enumerate(g.nodes)]
    for act, m in plan.masks.items():   # training: bit masks packed after their activation
        layers[m["after"]].setdefault("packs", []).append(
            dict(size=m["size"], lo=m["lo"], hi=m["hi"], y_off=plan.tensor_offsets[act],
                 mask_off=plan.tensor_offsets[m["name"]], tensor=c_comment(act)))
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
        macs=int(sum(g.macs(n) for n in g.nodes)),
        patch_loop=None if train else _patch_loop(g, layers, plan.arena_bytes),
        train=_train_context(g, plan, params, layers) if train else None)


def _train_context(g: Graph, plan: MemoryPlan, params: _Params, layers: list[dict]) -> dict:
    train = g.meta["train"]
    n_forward = train["forward_nodes"]
    missing = [p["name"] for p in params.table if p["init"] is None]
    if missing:
        raise TinycError(f"trained parameters {missing[:3]} are read by no layer")
    warmup_steps = train.get("warmup_steps", 0)
    if warmup_steps:   # the head's update ends a warm-up step (passes/autodiff.py)
        names = [n.name for n in g.nodes]
        if train["warmup_after"] not in names[n_forward:]:
            raise TinycError(f"head warm-up: the step has no node '{train['warmup_after']}'")
        layers[names.index(train["warmup_after"])]["warmup_exit"] = True
    return dict(forward=layers[:n_forward], backward=layers[n_forward:], params=params.table,
                warmup_steps=warmup_steps,
                param_bytes=sum(p["bytes"] for p in params.table),
                param_sram_bytes=sum(p["sram_bytes"] for p in params.table),
                split=[p for p in params.table if p["split"] is not None],
                num_classes=g.tensors[train["logits"]].size, scheme=c_comment(str(train["scheme"])),
                qas=bool(train["qas"]), rounding=train["rounding"],
                mse=train.get("loss", "ce") == "mse",
                # the build's peak rate and schedule (build.py puts them in meta; --lr auto
                # regenerates the code once the rate is chosen): tinyc_train_lr() in model.h
                lr=train.get("lr"), lr_c=c_float(train["lr"]) if train.get("lr") else None,
                lr_schedule=train.get("lr_schedule", DEFAULT_LR_SCHEDULE))


def template_environment():
    """The jinja2 environment of every template; text from a model or a board file goes through
    its filters: `comment` (c_comment) in comments, `c_string` in C string literals."""
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(comment=c_comment, c_string=c_string)
    return env


def _kernel_source(L: dict) -> str | None:
    """The runtime source file (under runtime_c/src; a bare name is a forward kernel) of a
    layer's kernel; None for a layer without a kernel (an alias)."""
    return ops.get(L["op"]).sources[L["kind"]]


def runtime_files(layers: list[dict], train: bool = False) -> list[Path]:
    """Runtime headers plus the kernel sources the layers call (paths under runtime_c/src;
    a bare name is a forward kernel). train.h and the training sources only for training."""
    files = sorted(f for f in (RUNTIME_DIR / "include" / "tinyc").glob("*.h")
                   if train or f.name != "train.h")
    srcs = {_kernel_source(L) for L in layers if _kernel_source(L)}
    if train:
        srcs.update(TRAIN_SOURCES)
    return files + [RUNTIME_DIR / "src" / (s if "/" in s else "forward/" + s)
                    for s in sorted(srcs)]


def kernel_variants(layers: list[dict]) -> set:
    """The specialised kernel variants (tinyc/config.h) that the layers' kernels may call."""
    return set().union(*(ops.get(L["op"]).kernel_variants(L) for L in layers))


def trained_elements(g: Graph, name: str) -> dict:
    """What train_params.json says of trained parameter `name` besides its layout (tinyc fleet
    moves only the elements a step changes, dequantized): "scale", the float32 scale of each
    output channel (axis 0; a per-tensor scale repeated); "channels", the input channels whose
    weights the update changes (global indices, ascending; null: all of them; biases: null) and
    "groups" of the layer (a conv's weight element [o, ky, kx, i] is trained when
    (o // (out_c / groups)) * in_c_per_group + i is in channels; a fully connected [o, i] when i
    is)."""
    from ..memory.planner import update_nodes
    t = g.tensors[name]
    scale = t.q.scale if t.q is not None else None
    out = {"scale": None, "channels": None, "groups": 1}
    for u in update_nodes(g):
        if scale is None and name in u.inputs[1:3] and "w_scale" in u.attrs:
            # a bias read without quantization parameters (a .tflite file may leave them out):
            # the update steps it in units of w_scale * x_scale, as TFLite defines its scale
            w_scale = np.asarray(u.attrs["w_scale"], np.float64)
            scale = w_scale * float(u.attrs["x_scale"]) if name == u.inputs[2] else w_scale
        if len(u.inputs) > 2 and u.inputs[2] == name:
            ch = u.attrs.get("channels")
            width = t.shape[-1] * (1 if u.attrs.get("fc") else int(u.attrs.get("groups", 1)))
            if ch is not None and len(ch) < width:
                out["channels"] = [int(c) for c in ch]
            out["groups"] = 1 if u.attrs.get("fc") else int(u.attrs.get("groups", 1))
    if scale is not None:
        scale = np.broadcast_to(np.asarray(scale, np.float32).reshape(-1), (t.shape[0],))
        out["scale"] = [float(v) for v in scale]
    return out


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
    env = template_environment()
    (out / "model.h").write_text(env.get_template("model.h.j2").render(**ctx))
    (out / "model.c").write_text(env.get_template("model.c.j2").render(**ctx))
    rt = out / "tinyc"
    if rt.exists():
        shutil.rmtree(rt)
    rt.mkdir()
    for f in runtime_files(ctx["layers"], train=ctx["train"] is not None):
        shutil.copy2(f, rt / f.name)
    # the model's own kernel configuration in place of the runtime's (which compiles everything)
    (rt / "config.h").write_text(env.get_template("config.h.j2").render(
        model_name=ctx["model_name"], variants=ops.KERNEL_VARIANTS,
        used=kernel_variants(ctx["layers"])))
    params_json = out / "train_params.json"
    if ctx["train"] is not None:
        params_json.write_text(json.dumps(
            [{**{k: p[k] for k in ("name", "kind", "dtype", "shape", "bytes", "sram_bytes")},
              **trained_elements(g, p["name"])} for p in ctx["train"]["params"]], indent=1))
    elif params_json.exists():
        params_json.unlink()
    return out
