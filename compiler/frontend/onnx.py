"""ONNX file -> float IR (NHWC), with clear errors for everything that is not supported.

The importer does the layout change (NCHW -> NHWC, OIHW -> OHWI) and the foldings that need the
ONNX view of the graph: BatchNormalization into the Conv before it, MatMul + Add into one
fully-connected layer, Identity/Dropout removed, Constant nodes turned into constants.
Activation fusion and other clean-ups are passes on the IR (compiler/passes/).
"""
from __future__ import annotations

import functools
import os

import numpy as np

from .. import ops
from ..errors import TinycError, UnsupportedError
from ..ir import Graph, Node, Tensor, conv_out_size

SUPPORTED_OPS = (
    "Conv", "BatchNormalization", "Relu", "Clip", "Add", "GlobalAveragePool", "ReduceMean",
    "AveragePool", "MaxPool", "Gemm", "MatMul", "Flatten", "Reshape", "Concat", "Pad",
    "Identity", "Dropout", "Softmax", "Constant",
)
MIN_OPSET, MAX_OPSET = 11, 21
# (fewest, most) inputs of each op; the first `fewest` must be named (not optional "")
ARITY = {
    "Conv": (2, 3), "BatchNormalization": (5, 5),
    "Gemm": (2, 3), "MatMul": (2, 2), "Flatten": (1, 1), "Reshape": (2, 2), "Concat": (1, 1 << 16),
    "Pad": (2, 4), "Identity": (1, 1), "Dropout": (1, 3), "Constant": (0, 0),
}
# ONNX types of the attributes tinyc reads (a model with another type is malformed)
ATTRIBUTE_TYPES = {
    "strides": "INTS", "pads": "INTS", "dilations": "INTS", "kernel_shape": "INTS",
    "axes": "INTS", "group": "INT", "axis": "INT", "keepdims": "INT", "transA": "INT",
    "transB": "INT", "ceil_mode": "INT", "count_include_pad": "INT", "training_mode": "INT",
    "epsilon": "FLOAT", "alpha": "FLOAT", "beta": "FLOAT", "auto_pad": "STRING",
    "mode": "STRING", "value": "TENSOR",
}

# Sizes no microcontroller model can have, refused before anything is allocated or run (float
# calibration would take minutes or exhaust the host's memory first): one float32 activation
# over 64 MiB (16 MiB as int8, far beyond any board's SRAM), or over 1e9 multiply-accumulates
# per inference (seconds per inference even on a fast Cortex-M7; mcunet at 128 px: 3e7).
MAX_ACTIVATION_BYTES = 64 << 20
MAX_MACS = 10 ** 9
# layers (ops other than Constant / Identity / Dropout): the shared models have under 200; the
# passes take minutes on tens of thousands
MAX_LAYERS = 2000


def load_onnx(path: str, input_shape: tuple[int, ...] | None = None) -> Graph:
    """Read an ONNX file into a float IR graph. `input_shape` (NCHW) overrides the input size."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx.checker import ValidationError

    if not os.path.isfile(path):
        raise TinycError(f"{path}: no such file")
    try:
        model = onnx.load(path)
    except ValidationError as e:   # external data: a missing file or a location outside
        raise TinycError(f"{path}: its external weight data cannot be read ({e}); keep the "
                         "data file(s) beside the model") from e
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise TinycError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e}); "
                         "is the file truncated or not an .onnx file?") from e
    if not model.graph.node:
        raise TinycError(f"{path}: the ONNX graph has no nodes (truncated or not an ONNX model?)")
    return import_model(model, input_shape, source=path)


def _opset(model) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise TinycError("the model imports no default-domain ONNX opset")


def import_model(model, input_shape=None, source="model") -> Graph:
    return _Importer(model, input_shape, source).run()


class _Importer:
    def __init__(self, model, input_shape, source):
        from onnx import numpy_helper
        self.numpy_helper = numpy_helper
        self.model = model
        self.source = source
        self.input_shape = input_shape
        self.opset = _opset(model)
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise UnsupportedError(
                f"{source}: ONNX opset {self.opset} is not supported (tinyc reads opsets "
                f"{MIN_OPSET}-{MAX_OPSET}); convert it with onnx.version_converter.convert_version")
        self.consts: dict[str, np.ndarray] = {}   # ONNX constant name -> value (ONNX layout)
        self.alias: dict[str, str] = {}           # ONNX tensor name -> IR tensor name
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        self.node = None                          # the ONNX node being imported
        self.macs = 0
        self.uses: dict[str, int] = {}
        for n in model.graph.node:
            for i in n.input:
                self.uses[i] = self.uses.get(i, 0) + 1
        for o in model.graph.output:
            self.uses[o.name] = self.uses.get(o.name, 0) + 1

    # ---------------------------------------------------------------- helpers
    def err(self, node, msg) -> TinycError:
        name = node.name or (node.output[0] if node.output else "") or "(unnamed)"
        return UnsupportedError(f"{self.source}: node '{name}' "
                                f"({node.op_type}): {msg}")

    def check_arity(self, node) -> None:
        fewest, most = (ARITY[node.op_type] if node.op_type in ARITY
                        else ops.onnx_rules()[node.op_type][1])
        if not fewest <= len(node.input) <= most or not all(node.input[:fewest]):
            raise self.err(node, f"has {len(node.input)} inputs {list(node.input)}; {node.op_type} "
                                 f"takes {fewest}" + (f" to {most}" if most > fewest else "")
                                 + " (the required ones named)")
        if not node.output or not node.output[0]:
            raise self.err(node, "has no output")
        if node.output[0] in self.produced or node.output[0] in self.consts:
            raise self.err(node, f"output '{node.output[0]}' is already produced by another "
                                 "node or is an input/initializer; ONNX tensors are assigned once")

    def scalar(self, name: str, node, what: str) -> float:
        value = self.const(name, node, what)
        if value.size != 1:
            raise self.err(node, f"{what} must be one number, got shape {value.shape}")
        return float(value.reshape(-1)[0])

    def int_list(self, name: str, node, what: str) -> list[int]:
        value = self.const(name, node, what)
        if value.ndim != 1 or value.dtype.kind not in "iu":
            raise self.err(node, f"{what} must be a 1-D integer tensor, got {value.dtype} "
                                 f"of shape {value.shape}")
        return [int(v) for v in value]

    def attrs(self, node) -> dict:
        from onnx import AttributeProto, helper
        for a in node.attribute:
            want = ATTRIBUTE_TYPES.get(a.name)
            if want is not None and a.type != getattr(AttributeProto, want):
                raise self.err(node, f"attribute {a.name} must be of type {want}, not "
                                     f"{AttributeProto.AttributeType.Name(a.type)}")
        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def const(self, name: str, node, what: str) -> np.ndarray:
        if name not in self.consts:
            raise self.err(node, f"{what} ('{name}') must be a constant (initializer or Constant "
                                 "node); computed values are not supported")
        return self.consts[name]

    def act(self, name: str, node) -> Tensor:
        name = self.alias.get(name, name)
        if name not in self.tensors:
            if name in self.consts:
                raise self.err(node, f"input '{name}' is a constant where tinyc expects an "
                                     "activation; constant folding of this op is not supported")
            raise self.err(node, f"input '{name}' is not produced by any node")
        return self.tensors[name]

    def new_act(self, onnx_name: str, shape) -> str:
        shape = tuple(int(s) for s in shape)
        nbytes = 4 * int(np.prod(shape, dtype=object))
        if nbytes > MAX_ACTIVATION_BYTES:
            where = (f"node '{self.node.name or self.node.output[0]}' ({self.node.op_type})"
                     if self.node is not None else "the input")
            raise TinycError(
                f"{self.source}: {where}: tensor '{onnx_name}' of shape {list(shape)} (NHWC) would "
                f"need {nbytes / 2**20:,.0f} MiB as float32 (over {MAX_ACTIVATION_BYTES >> 20} "
                "MiB, more than any microcontroller holds); check its pads, strides and the "
                "input shape")
        self.tensors[onnx_name] = Tensor(onnx_name, shape)
        return onnx_name

    def ints(self, node, a: dict, name: str, default, count: int, least: int) -> list[int]:
        """An attribute of `count` integers, each at least `least`."""
        values = [int(v) for v in a.get(name, default)]
        if len(values) != count or min(values) < least:
            raise self.err(node, f"{name}={values}: give {count} integers, each >= {least}")
        return values

    def count_macs(self, node, macs: int) -> None:
        self.macs += macs
        if self.macs > MAX_MACS:
            raise self.err(node, f"the model needs over {self.macs:,} multiply-accumulates per "
                                 f"inference by this node (limit {MAX_MACS:,}); far too large for "
                                 "a microcontroller: check the input shape and the layer sizes")

    def new_const(self, name: str, data: np.ndarray, node) -> str:
        data = np.ascontiguousarray(data, dtype=np.float32)
        if not np.all(np.isfinite(data)):
            bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
            raise TinycError(f"{self.source}: node '{node.name or node.output[0]}' "
                             f"({node.op_type}): parameter '{name}' has {bad} NaN/Inf values; "
                             "fix the exported weights")
        base, k = name, 1
        while name in self.tensors:
            name, k = f"{base}_{k}", k + 1
        self.tensors[name] = Tensor(name, data.shape, data=data)
        return name

    def emit(self, node, op, inputs, outputs, **attrs) -> Node:
        if len(self.nodes) >= MAX_LAYERS:
            raise self.err(node, f"the model has over {MAX_LAYERS} layers; far more than a "
                                 "microcontroller model (tinyc's limit)")
        n = Node(node.name or node.output[0], op, inputs, outputs, attrs, node.op_type)
        self.nodes.append(n)
        return n

    # ---------------------------------------------------------------- main
    def run(self) -> Graph:
        g = self.model.graph
        for init in g.initializer:
            self.consts[init.name] = self.numpy_helper.to_array(init)
        inputs = [i for i in g.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise UnsupportedError(f"{self.source}: tinyc compiles models with exactly one input; "
                                   f"this one has {len(inputs)} ({[i.name for i in inputs]})")
        inp = inputs[0]
        tt = inp.type.tensor_type
        if tt.elem_type != 1:
            raise UnsupportedError(f"{self.source}: input '{inp.name}' must be float32 "
                                   f"(ONNX elem_type {tt.elem_type} given)")
        if not tt.HasField("shape"):
            raise TinycError(f"{self.source}: input '{inp.name}' has no shape; give one with "
                             "--input-shape 1xCxHxW")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if self.input_shape is not None:
            if len(self.input_shape) != len(dims):
                raise TinycError(f"--input-shape {'x'.join(map(str, self.input_shape))} has "
                                 f"{len(self.input_shape)} dims but input '{inp.name}' has {len(dims)}")
            dims = list(self.input_shape)
        if len(dims) != 4:
            raise UnsupportedError(f"{self.source}: input '{inp.name}' must be 4-D NCHW "
                                   f"(shape {dims}); tinyc compiles image CNNs")
        if dims[0] is None:
            dims[0] = 1   # symbolic batch: tinyc always runs batch 1
        if any(d is None or d <= 0 for d in dims[1:]):
            raise TinycError(f"{self.source}: input '{inp.name}' has a dynamic, missing or "
                             f"non-positive shape {dims}; give a static one with --input-shape "
                             "1xCxHxW")
        if dims[0] != 1:
            raise UnsupportedError(f"{self.source}: batch size {dims[0]}: tinyc compiles batch 1 "
                                   "(use --input-shape 1xCxHxW)")
        n, c, h, w = dims
        self.new_act(inp.name, (1, h, w, c))
        self.produced = {inp.name}   # tensor names assigned so far (ONNX assigns each once)

        for node in g.node:
            handler = getattr(self, "op_" + node.op_type, None)
            if handler is None and node.op_type in ops.onnx_rules():
                handler = functools.partial(ops.onnx_rules()[node.op_type][0], self)
            if node.domain not in ("", "ai.onnx") or handler is None:
                raise UnsupportedError(
                    f"{self.source}: node '{node.name or node.output[0]}' uses op "
                    f"'{node.domain + '.' if node.domain else ''}{node.op_type}', which tinyc does "
                    f"not support. Supported ONNX ops: {', '.join(SUPPORTED_OPS)}")
            self.node = node
            self.check_arity(node)
            handler(node)
            self.produced.update(node.output)
        self.node = None
        if not self.nodes:
            raise UnsupportedError(f"{self.source}: the model has no layer tinyc can compile (only "
                                   "Identity/Dropout/Constant nodes); nothing to generate")

        outputs = []
        for o in g.output:
            name = self.alias.get(o.name, o.name)
            if name not in self.tensors or self.tensors[name].is_const or name == inp.name:
                raise UnsupportedError(f"{self.source}: output '{o.name}' is not computed from "
                                       "the input")
            outputs.append(name)
        graph = Graph(self.tensors, self.nodes, [inp.name], outputs,
                      meta={"source": self.source, "opset": self.opset,
                            "input_nchw": (1, c, h, w), "input_name": inp.name,
                            "output_names": [o.name for o in g.output]})
        graph.remove_unused_tensors()
        return graph

    # ---------------------------------------------------------------- ops
    def op_Constant(self, node):
        a = self.attrs(node)
        if "value" not in a:
            raise self.err(node, "only Constant nodes with a 'value' tensor are supported")
        self.consts[node.output[0]] = self.numpy_helper.to_array(a["value"])

    def op_Identity(self, node):
        src = node.input[0]
        if src in self.consts:
            self.consts[node.output[0]] = self.consts[src]
        else:
            self.alias[node.output[0]] = self.alias.get(src, src)

    def op_Dropout(self, node):
        if len(node.output) > 1 and node.output[1] and self.uses.get(node.output[1]):
            raise self.err(node, "the Dropout mask output is used; only inference Dropout "
                                 "(removed) is supported")
        self.op_Identity(node)

    def _spatial_pads(self, node, a, h, w, kh, kw, sh, sw, dh=1, dw=1):
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("NOTSET", ""):
            p = [int(v) for v in a.get("pads", [0, 0, 0, 0])]
            if len(p) != 4:
                raise self.err(node, f"pads {p} must have 4 values for a 2-D op")
            if min(p) < 0:
                raise self.err(node, f"negative pads {p} are not supported")
            return (p[0], p[1], p[2], p[3])
        if auto == "VALID":
            return (0, 0, 0, 0)
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            res = []
            for size, k, s, d in ((h, kh, sh, dh), (w, kw, sw, dw)):
                out = -(-size // s)
                total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
                small = total // 2
                res.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
            return (res[0][0], res[1][0], res[0][1], res[1][1])
        raise self.err(node, f"auto_pad={auto} is not supported")

    def op_Conv(self, node):
        a = self.attrs(node)
        x = self.act(node.input[0], node)
        if len(x.shape) != 4:
            raise self.err(node, f"input must be 4-D, got shape {x.shape}")
        w = self.const(node.input[1], node, "the weight")
        if w.ndim != 4:
            raise self.err(node, f"only 2-D convolutions are supported (weight shape {w.shape})")
        cout, cin_g, kh, kw = w.shape
        if cout < 1:
            raise self.err(node, f"weight {w.shape} has 0 output channels; a Conv needs at least one")
        if min(cin_g, kh, kw) < 1:
            raise self.err(node, f"weight {w.shape} has an empty kernel or no input channel")
        if list(a.get("kernel_shape", [kh, kw])) != [kh, kw]:
            raise self.err(node, f"kernel_shape={list(a['kernel_shape'])} does not match the "
                                 f"weight's {kh}x{kw} kernel")
        b = (self.const(node.input[2], node, "the bias") if len(node.input) > 2 and node.input[2]
             else np.zeros(w.shape[0], np.float32))
        if b.size != cout:
            raise self.err(node, f"bias of {b.size} values for {cout} output channels")
        groups = int(a.get("group", 1))
        _, h, wd, cin = x.shape
        if groups < 1 or cin_g * groups != cin or cout % groups:
            raise self.err(node, f"weight {w.shape} with group={groups} does not match "
                                 f"{cin} input channels (group must be >= 1 and divide the input "
                                 "and output channels)")
        sh, sw = self.ints(node, a, "strides", [1, 1], 2, 1)
        dh, dw = self.ints(node, a, "dilations", [1, 1], 2, 1)
        pads = self._spatial_pads(node, a, h, wd, kh, kw, sh, sw, dh, dw)
        oh = conv_out_size(h, kh, sh, pads[0], pads[2], dh)
        ow = conv_out_size(wd, kw, sw, pads[1], pads[3], dw)
        if oh <= 0 or ow <= 0:
            raise self.err(node, f"output would be empty ({oh}x{ow}) for input {h}x{wd}: the "
                                 f"{kh}x{kw} kernel (dilation {dh}x{dw}) is larger than the padded "
                                 "input")
        out = self.new_act(node.output[0], (1, oh, ow, cout))
        self.count_macs(node, oh * ow * cout * cin_g * kh * kw)
        wn = self.new_const(node.input[1], w.transpose(0, 2, 3, 1), node)
        bn = self.new_const(node.input[2] if len(node.input) > 2 and node.input[2]
                            else node.output[0] + "_bias", b.reshape(-1), node)
        self.emit(node, "conv2d", [x.name, wn, bn], [out], strides=(int(sh), int(sw)),
                  pads=pads, dilations=(int(dh), int(dw)), groups=groups, clamp=None)

    def op_BatchNormalization(self, node):
        a = self.attrs(node)
        if a.get("training_mode", 0):
            raise self.err(node, "training_mode=1 is not supported; export the model in eval mode")
        x = self.act(node.input[0], node)
        gamma, beta, mean, var = (self.const(i, node, "a BatchNormalization parameter")
                                  for i in node.input[1:5])
        eps = float(a.get("epsilon", 1e-5))
        channels = x.shape[-1]
        for what, v in (("scale", gamma), ("B", beta), ("mean", mean), ("var", var)):
            if v.shape != (channels,):
                raise self.err(node, f"{what} has shape {v.shape}; the input has {channels} "
                                     "channels")
        if not np.isfinite(eps) or np.any(var + eps <= 0):
            raise self.err(node, "a variance (+ epsilon) is not positive; fix the exported "
                                 "running_var")
        with np.errstate(over="ignore", invalid="ignore"):
            scale = gamma / np.sqrt(var + eps)
            shift = beta - mean * scale
        prod = self._producer(x.name)
        if (prod is not None and prod.op == "conv2d" and prod.attrs["clamp"] is None
                and self.uses.get(x.name, 0) == 1):
            w, b = self.tensors[prod.inputs[1]], self.tensors[prod.inputs[2]]
            with np.errstate(over="ignore", invalid="ignore"):
                w.data = (w.data * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
                b.data = (b.data * scale + shift).astype(np.float32)
            if not (np.all(np.isfinite(w.data)) and np.all(np.isfinite(b.data))):
                raise self.err(node, "folding it into the Conv before it overflows float32 (Inf "
                                     "or NaN weights); fix the exported BatchNormalization "
                                     "parameters")
            self.alias[node.output[0]] = x.name
            return
        # A BatchNormalization not after a Conv is a per-channel affine map: a 1x1 depthwise conv.
        if len(x.shape) != 4:
            raise self.err(node, f"BatchNormalization on a {len(x.shape)}-D tensor is not supported")
        c = x.shape[3]
        wn = self.new_const(node.output[0] + "_bn_weight", scale.reshape(c, 1, 1, 1), node)
        bn = self.new_const(node.output[0] + "_bn_bias", shift.reshape(-1), node)
        out = self.new_act(node.output[0], x.shape)
        self.emit(node, "conv2d", [x.name, wn, bn], [out], strides=(1, 1), pads=(0, 0, 0, 0),
                  dilations=(1, 1), groups=c, clamp=None)

    def _producer(self, name):
        for n in reversed(self.nodes):
            if name in n.outputs:
                return n
        return None

    def _fc(self, node, x, w_oi, bias):
        if len(x.shape) != 2:
            raise self.err(node, f"needs a 2-D input (1, N), got {x.shape}; insert a Flatten")
        if w_oi.ndim != 2:
            raise self.err(node, f"weight must be 2-D, got {w_oi.shape}")
        if w_oi.shape[0] < 1:
            raise self.err(node, f"weight {w_oi.shape} gives 0 outputs; a layer needs at least one")
        if w_oi.shape[1] != x.shape[1]:
            raise self.err(node, f"weight {w_oi.shape} does not match input {x.shape}")
        wn = self.new_const(node.input[1], w_oi, node)
        bn = self.new_const(node.output[0] + "_bias", bias.reshape(-1), node)
        self.count_macs(node, w_oi.size)
        out = self.new_act(node.output[0], (1, w_oi.shape[0]))
        self.emit(node, "fully_connected", [x.name, wn, bn], [out], clamp=None)

    def op_Gemm(self, node):
        a = self.attrs(node)
        if a.get("transA", 0):
            raise self.err(node, "transA=1 is not supported")
        x = self.act(node.input[0], node)
        b = self.const(node.input[1], node, "B (the weight)").astype(np.float32)
        if b.ndim != 2:
            raise self.err(node, f"B (the weight) must be 2-D, got shape {b.shape}")
        w = b if a.get("transB", 0) else b.T
        w = w * float(a.get("alpha", 1.0))
        bias = np.zeros(w.shape[0], np.float32)
        if len(node.input) > 2 and node.input[2]:
            c = self.const(node.input[2], node, "C (the bias)").astype(np.float32)
            if c.size not in (1, w.shape[0]):
                raise self.err(node, f"bias C of shape {c.shape} is not per-output")
            bias = bias + float(a.get("beta", 1.0)) * c.reshape(-1)
        self._fc(node, x, w, bias)

    def op_MatMul(self, node):
        x = self.act(node.input[0], node)
        b = self.const(node.input[1], node, "the second input (weight)")
        if b.ndim != 2:
            raise self.err(node, f"weight must be 2-D, got {b.shape}")
        self._fc(node, x, b.T, np.zeros(b.shape[1], np.float32))

    def _to_2d(self, node, x):
        """Flatten (1, H, W, C) to (1, H*W*C) in ONNX's (C, H, W) order."""
        out = self.new_act(node.output[0], (1, x.size))
        nchw = len(x.shape) == 4 and x.shape[1] * x.shape[2] > 1 and x.shape[3] > 1
        self.emit(node, "reshape", [x.name], [out], nchw_order=nchw, nchw_shape=x.shape)

    def op_Flatten(self, node):
        x = self.act(node.input[0], node)
        axis = int(self.attrs(node).get("axis", 1))
        if axis % len(x.shape) != 1:
            raise self.err(node, f"Flatten axis={axis} is not supported (only axis=1)")
        self._to_2d(node, x)

    def op_Reshape(self, node):
        x = self.act(node.input[0], node)
        shape = self.int_list(node.input[1], node, "the target shape")
        if len(shape) != 2 or shape[0] not in (1, -1, 0) or shape[1] not in (-1, x.size) \
                or (shape[0] == -1 and shape[1] == -1):
            raise self.err(node, f"Reshape to {shape} is not supported; only a flatten to 2-D "
                                 f"(1, {x.size}) is")
        self._to_2d(node, x)

    def op_Concat(self, node):
        xs = [self.act(i, node) for i in node.input]
        if "axis" not in self.attrs(node):
            raise self.err(node, "the axis attribute is missing")
        axis = int(self.attrs(node)["axis"])
        rank = len(xs[0].shape)
        if axis % rank != 1:
            raise self.err(node, f"Concat on axis {axis} is not supported (only channels, axis 1)")
        for x in xs[1:]:
            if len(x.shape) != rank or x.shape[:-1] != xs[0].shape[:-1]:
                raise self.err(node, f"inputs {[x.shape for x in xs]} differ outside the channel axis")
        shape = xs[0].shape[:-1] + (sum(x.shape[-1] for x in xs),)
        out = self.new_act(node.output[0], shape)
        self.emit(node, "concat", [x.name for x in xs], [out])

    def op_Pad(self, node):
        a = self.attrs(node)
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            raise self.err(node, f"Pad mode '{mode}' is not supported (only constant)")
        x = self.act(node.input[0], node)
        if len(x.shape) != 4:
            raise self.err(node, f"needs a 4-D input, got {x.shape}")
        p = self.int_list(node.input[1], node, "the pads")
        if len(node.input) > 3 and node.input[3]:
            raise self.err(node, "Pad with an 'axes' input is not supported")
        if len(p) != 8 or p[0] or p[1] or p[4] or p[5]:
            raise self.err(node, f"pads {p} are not supported: only H and W may be padded")
        if min(p) < 0:
            raise self.err(node, f"negative pads (cropping) {p} are not supported")
        value = 0.0
        if len(node.input) > 2 and node.input[2]:
            value = self.scalar(node.input[2], node, "the pad value")
        _, h, w, c = x.shape
        pads = (p[2], p[3], p[6], p[7])
        out = self.new_act(node.output[0], (1, h + p[2] + p[6], w + p[3] + p[7], c))
        self.emit(node, "pad", [x.name], [out], pads=pads, value=value)
