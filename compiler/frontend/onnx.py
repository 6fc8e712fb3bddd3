"""ONNX file -> float IR (NHWC), with clear errors for everything that is not supported.

The importer checks the model, does the graph plumbing (Constant nodes become constants,
Identity/Dropout are removed) and the layout change of the input (NCHW -> NHWC); each other
ONNX op is imported by the rule of the IR op it becomes (compiler/ops, `onnx`), which gets this
importer (act, attrs, new_act, emit, err ...) and also does the foldings that need the ONNX view
of the graph (BatchNormalization into the Conv before it, MatMul + Add into one fully-connected
layer). Activation fusion and other clean-ups are passes on the IR (compiler/passes/).
"""
from __future__ import annotations

import functools
import os

import numpy as np

from .. import ops
from ..errors import TinycError, UnsupportedError
from ..ir import Graph, Node, Tensor

# Graph plumbing the importer does itself (constants; no-ops at inference), with the (fewest,
# most) inputs of each; every other ONNX op is imported by the rule an IR op declares
# (compiler/ops: `onnx`, with its arity). The first `fewest` inputs must be named (not "").
PLUMBING = {"Constant": (0, 0), "Identity": (1, 1), "Dropout": (1, 3), "Shape": (1, 1)}
# Ops computed at import when every input is a constant (e.g. PyTorch's ZeroPad2d pads, a view's
# target shape from Shape -> Gather -> Concat), by onnx's own reference evaluator: numpy
# arithmetic on the node's inputs, nothing from the model is run as code. Each result's size is
# bounded before it is computed (_folded_size).
FOLDABLE = {"Add", "Sub", "Mul", "Div", "Neg", "Abs", "Floor", "Ceil", "Sqrt", "Pow", "Min",
            "Max", "Equal", "Less", "Greater", "Where", "Not", "And", "Or", "Cast", "Identity",
            "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Reshape", "Flatten",
            "Transpose", "ConstantOfShape", "Range", "Expand", "Tile", "ReduceProd", "Clip",
            "Shape"}
MAX_FOLDED_ELEMENTS = 1 << 24
# ops whose rules set their output's rank themselves (the others keep a 1-D input's 1-D)
REASSIGN_RANK = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Shape", "Gemm",
                 "MatMul", "GlobalAveragePool", "ReduceMean"}
# 1-D ops lifted to 2-D (N,C,L -> N,C,1,L): their spatial attributes gain a leading 1 / 0
LIFTED_ATTRS = {"kernel_shape": 1, "strides": 1, "dilations": 1}
RULES = ops.onnx_rules()
SUPPORTED_OPS = tuple(sorted(set(PLUMBING) | set(RULES) | FOLDABLE))
MIN_OPSET, MAX_OPSET = 11, 21
# ONNX types of the attributes tinyc reads (a model with another type is malformed)
ATTRIBUTE_TYPES = {
    "strides": "INTS", "pads": "INTS", "dilations": "INTS", "kernel_shape": "INTS",
    "axes": "INTS", "group": "INT", "axis": "INT", "keepdims": "INT", "transA": "INT",
    "transB": "INT", "ceil_mode": "INT", "count_include_pad": "INT", "training_mode": "INT",
    "epsilon": "FLOAT", "alpha": "FLOAT", "beta": "FLOAT", "auto_pad": "STRING", "perm": "INTS",
    "split": "INTS", "num_outputs": "INT", "starts": "INTS", "ends": "INTS",
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
        # ONNX tensors that are another layout of an IR tensor (a Transpose to N,H,W,C; a
        # channel shuffle's 5-D reshape): dict(source=IR tensor, what=..., readers=..., node=...)
        # and what the rules that read them need (compiler/ops/data.py)
        self.views: dict[str, dict] = {}
        # 1-D tensors (ONNX N,C,L), held in the IR as (1, 1, L, C): an N,C,1,L image whose 1-D
        # convs and pools are lifted to 2-D (lift_1d)
        self.lifted: set[str] = set()
        self.input_nhwc = False   # the model input is N,H,W,C (run)
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
        if node.op_type not in PLUMBING and node.op_type not in RULES:
            return   # folded: the reference evaluator checks its inputs
        fewest, most = PLUMBING.get(node.op_type) or RULES[node.op_type][1]
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
        if name in self.views:
            v = self.views[name]
            raise self.err(node, f"input '{name}' is {v['what']} (made by node '{v['node']}'), "
                                 f"which only {v['readers']} may read here")
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
        if len(dims) not in (2, 3, 4):
            raise UnsupportedError(f"{self.source}: input '{inp.name}' of shape {dims}: tinyc "
                                   "compiles inputs N,C,H,W (images), N,C,L (1-D signals) and "
                                   "N,F (feature vectors)")
        if dims[0] is None:
            dims[0] = 1   # symbolic batch: tinyc always runs batch 1
        if any(d is None or d <= 0 for d in dims[1:]):
            raise TinycError(f"{self.source}: input '{inp.name}' has a dynamic, missing or "
                             f"non-positive shape {dims}; give a static one with --input-shape "
                             "1xCxHxW")
        if dims[0] != 1:
            raise UnsupportedError(f"{self.source}: batch size {dims[0]}: tinyc compiles batch 1 "
                                   "(use --input-shape 1xCxHxW)")
        self.input_nhwc = len(dims) == 4 and self._read_as_nhwc(inp.name)
        if self.input_nhwc:   # N,H,W,C (a Keras model's, via tf2onnx): the IR's own layout
            self.new_act(inp.name, (1, dims[1], dims[2], dims[3]))
        elif len(dims) == 4:
            self.new_act(inp.name, (1, dims[2], dims[3], dims[1]))
        elif len(dims) == 3:
            self.new_act(inp.name, (1, 1, dims[2], dims[1]))
            self.lifted.add(inp.name)
        else:
            self.new_act(inp.name, (1, dims[1]))
        self.produced = {inp.name}   # tensor names assigned so far (ONNX assigns each once)

        for node in g.node:
            handler = None
            if (node.op_type in FOLDABLE and node.domain in ("", "ai.onnx")
                    and all(not i or self.alias.get(i, i) in self.consts for i in node.input)
                    and node.input):
                handler = self.fold
            elif node.op_type in PLUMBING:
                handler = getattr(self, "op_" + node.op_type)
            elif node.op_type in RULES:
                handler = functools.partial(RULES[node.op_type][0], self)
            if node.domain not in ("", "ai.onnx") or handler is None:
                raise UnsupportedError(
                    f"{self.source}: node '{node.name or node.output[0]}' uses op "
                    f"'{node.domain + '.' if node.domain else ''}{node.op_type}', which tinyc does "
                    f"not support. Supported ONNX ops: {', '.join(SUPPORTED_OPS)}")
            self.node = node
            self.check_arity(node)
            lifted_in = any(self.alias.get(i, i) in self.lifted for i in node.input if i)
            if lifted_in and handler != self.fold:
                node = self.lift_1d(node)
            handler(node)
            if lifted_in and node.op_type not in REASSIGN_RANK:
                for o in node.output:   # a 1-D op's output is 1-D
                    t = self.tensors.get(self.alias.get(o, o))
                    if t is not None and len(t.shape) == 4 and t.shape[1] == 1:
                        self.lifted.add(t.name)
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
                            "input_nchw": tuple(dims), "input_name": inp.name,
                            "input_layout": "nhwc" if self.input_nhwc else None,
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

    def op_Shape(self, node):
        """The shape of an activation is known: a constant (ONNX's N,C,H,W view)."""
        name = self.alias.get(node.input[0], node.input[0])
        shape = (self.views[name]["shape"] if name in self.views
                 else self.onnx_shape(self.act(node.input[0], node)))
        a = self.attrs(node)
        start, end = int(a.get("start", 0)), a.get("end")
        self.consts[node.output[0]] = np.asarray(
            shape[start:None if end is None else int(end)], np.int64)

    def fold(self, node):
        """A node of constants only: computed now (onnx.reference), its outputs constants."""
        from onnx.reference import ReferenceEvaluator
        values = [self.consts[self.alias.get(i, i)] if i else None for i in node.input]
        size = _folded_size(node, [v for v in values if v is not None], self.attrs(node))
        if size is None or size > MAX_FOLDED_ELEMENTS:
            raise self.err(node, f"folding this node of constants would make "
                                 f"{'an unbounded' if size is None else f'{size:,}-element'} "
                                 f"tensor (limit {MAX_FOLDED_ELEMENTS:,})")
        feeds = {i: v for i, v in zip(node.input, values) if i}
        try:
            outs = ReferenceEvaluator(self.one_node_model(node)).run(None, feeds)
        except Exception as e:   # a malformed node: the evaluator's own message
            raise self.err(node, f"cannot compute this node of constants ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:200] if str(e) else ''})") from e
        for name, value in zip(node.output, outs):
            if name:
                self.consts[name] = np.asarray(value)

    def _read_as_nhwc(self, name: str) -> bool:
        """The input is N,H,W,C when only Transposes to N,C,H,W read it (tf2onnx's layout)."""
        from onnx import helper
        readers = [n for n in self.model.graph.node if name in n.input]
        return bool(readers) and all(
            n.op_type == "Transpose" and
            [int(v) for a in n.attribute if a.name == "perm"
             for v in helper.get_attribute_value(a)] == [0, 3, 1, 2] for n in readers)

    def onnx_shape(self, t: Tensor) -> tuple[int, ...]:
        """The shape ONNX sees for IR tensor t: N,C,H,W, N,C,L (a 1-D tensor) or as it is."""
        shape = tuple(t.shape)
        if t.name in self.lifted:
            return (shape[0], shape[3], shape[2])
        return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape

    def lift_1d(self, node):
        """A node reading a 1-D (N,C,L) tensor, as the same node on the N,C,1,L image: 1-D
        kernel attributes and Conv weights gain a height of 1, axes after C move by one."""
        from onnx import helper
        if node.op_type not in ("Conv", "MaxPool", "AveragePool", "ReduceMean", "Slice"):
            return node
        a = self.attrs(node)
        attrs = {}
        for k, v in a.items():
            if k in LIFTED_ATTRS and len(v) == 1:
                v = [1] + list(v)
            elif k == "pads" and len(v) == 2:
                v = [0, v[0], 0, v[1]]
            elif k == "axes" and node.op_type == "ReduceMean":
                v = [3 if int(x) % 3 == 2 else int(x) for x in v]
            attrs[k] = v
        inputs = list(node.input)
        if node.op_type == "Conv":
            w = self.const(node.input[1], node, "the weight")
            if w.ndim != 3:
                raise self.err(node, f"a 1-D convolution needs a 3-D weight (got {w.shape})")
            inputs[1] = node.input[1] + "/2d"
            self.consts[inputs[1]] = w.reshape(w.shape[0], w.shape[1], 1, w.shape[2])
        if node.op_type in ("ReduceMean", "Slice") and len(inputs) > (1 if node.op_type ==
                                                                      "ReduceMean" else 3):
            k = 1 if node.op_type == "ReduceMean" else 3
            if inputs[k]:
                axes = self.int_list(inputs[k], node, "the axes")
                inputs[k] = inputs[k] + "/2d"
                self.consts[inputs[k]] = np.asarray(
                    [3 if int(x) % 3 == 2 else int(x) % 3 for x in axes], np.int64)
        if node.op_type == "Slice" and len(inputs) < 4 and "axes" not in attrs:
            raise self.err(node, "a Slice of a 1-D tensor needs its axes")
        return helper.make_node(node.op_type, inputs, list(node.output), name=node.name,
                                domain=node.domain, **attrs)

    def one_node_model(self, node):
        """The node alone in a model of this model's opset (what the reference evaluator runs)."""
        from onnx import TypeProto, helper
        names = [i for i in node.input if i]
        graph = helper.make_graph([node], "fold", [helper.make_value_info(i, TypeProto())
                                                   for i in dict.fromkeys(names)],
                                  [helper.make_value_info(o, TypeProto()) for o in node.output if o])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])

    def op_Dropout(self, node):
        if len(node.output) > 1 and node.output[1] and self.uses.get(node.output[1]):
            raise self.err(node, "the Dropout mask output is used; only inference Dropout "
                                 "(removed) is supported")
        self.op_Identity(node)

    def spatial_pads(self, node, a, h, w, kh, kw, sh, sw, dh=1, dw=1):
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

    def producer(self, name):
        for n in reversed(self.nodes):
            if name in n.outputs:
                return n
        return None


def _folded_size(node, values: list[np.ndarray], attrs: dict) -> int | None:
    """An upper bound of the elements a folded node makes, before computing it (a model must
    not make the importer allocate without bound); None when it cannot be bounded."""
    sizes = [int(v.size) for v in values]
    op = node.op_type
    try:
        if op == "ConstantOfShape":
            return int(np.prod(values[0].astype(np.int64))) if values[0].size else 1
        if op == "Range":
            start, limit, delta = (float(v.reshape(-1)[0]) for v in values)
            return int(max(0, np.ceil((limit - start) / delta))) if delta else None
        if op == "Expand":
            return int(np.prod(np.broadcast_shapes(values[0].shape,
                                                   tuple(int(d) for d in values[1]))))
        if op == "Tile":
            return sizes[0] * int(np.prod(values[1].astype(np.int64)))
        if op == "Gather":
            axis = int(attrs.get("axis", 0)) % max(values[0].ndim, 1)
            return sizes[1] * sizes[0] // max(int(values[0].shape[axis]), 1)
        if op in ("Concat", "Where"):
            return sum(sizes) if op == "Concat" else int(np.prod(np.broadcast_shapes(
                *(v.shape for v in values))))
        if len(values) > 1 and op not in ("Gather", "Slice", "Reshape", "Unsqueeze", "Squeeze",
                                          "Clip"):
            return int(np.prod(np.broadcast_shapes(*(v.shape for v in values))))
        return max(sizes, default=1)
    except (ValueError, TypeError, OverflowError, IndexError):
        return None
