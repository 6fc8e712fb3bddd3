"""Quantized int8 IR -> .tflite flatbuffer, for checking our kernels against TFLite's.

The exported model is meant to run in TFLite's reference kernels (LiteRT with the BUILTIN_REF
op resolver) and in TFLite Micro and give, bit for bit, what our int8 reference executor gives.
So every IR op maps to TFLite ops whose integer arithmetic is exactly the IR's:

- conv2d: CONV_2D (per-channel weights, quantized_dimension 0); a depthwise conv
  (groups == C_in > 1) becomes DEPTHWISE_CONV_2D with its weight as (1, KH, KW, C_out) and
  quantized_dimension 3; a grouped conv (1 < groups < C_in) is one CONV_2D whose weight has
  C_in / groups input channels (TFLite infers the groups), or optionally SPLIT -> one CONV_2D per
  group -> CONCATENATION (all three keep the quant params, so this is exact too).
- Explicit pads that are TFLite's SAME padding for that size become SAME, all-zero pads VALID,
  anything else an explicit PAD (filled with the input zero point) or, for max pooling, a PADV2
  filled with -128, followed by a VALID op.
- Fused clamps: (0, inf) -> RELU, (0, 6) -> RELU6, (-1, 1) -> RELU_N1_TO_1 after checking that
  the range TFLite derives from the float output scale is the one the quantizer chose; any other
  clamp -> no fused activation, then MAXIMUM / MINIMUM with int8 constants (exact).
- avg_pool with count_include_pad: PAD with the zero point, then a VALID AVERAGE_POOL_2D (TFLite's
  SAME averaging divides by the number of real pixels, i.e. count_include_pad=False).
  avg_pool without count_include_pad and with non-SAME pads: the output is cut into blocks whose
  windows are clipped alike, each a VALID AVERAGE_POOL_2D on a SLICE of the input, then
  CONCATENATION (exact: every value is the rounded mean of its in-bounds pixels).
- fully_connected: FULLY_CONNECTED, or (fc_as_conv) RESHAPE -> 1x1 CONV_2D -> RESHAPE.
- requantize -> QUANTIZE (int8 -> int8), softmax -> SOFTMAX (beta 1), reshape -> RESHAPE.

Public API: export_tflite(graph) -> bytes.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..ir import Graph, Node, Tensor, conv_out_size
from ..ops.pool import pool_groups as _pool_groups  # noqa: F401  (tests/test_tflite_export.py)

INT8_MIN, INT8_MAX = -128, 127


def _schema():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb
    return fb


class ExportError(ValueError):
    """The quantized IR is inconsistent with what the TFLite kernels would compute."""


# ---------------------------------------------------------------------------------------------
# Arithmetic helpers that mirror how TFLite derives numbers from the float quant params.
def _round_half_away(x: float) -> float:
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def tflite_activation_range(clamp, scale: float, zero_point: int) -> tuple[int, int] | None:
    """The int8 [act_min, act_max] TFLite computes for a fused activation, or None if the clamp
    is not one of RELU / RELU6 / RELU_N1_TO_1. The quantization of the bound is done as TFLite
    does it: float32 division by the float32 scale, rounded half away from zero."""
    s = np.float32(scale)

    def q(f):
        return int(zero_point) + int(_round_half_away(float(np.float32(f) / s)))

    lo, hi = clamp
    if lo == 0.0 and math.isinf(hi) and hi > 0:
        return max(INT8_MIN, q(0.0)), INT8_MAX
    if lo == 0.0 and hi == 6.0:
        return max(INT8_MIN, q(0.0)), min(INT8_MAX, q(6.0))
    if lo == -1.0 and hi == 1.0:
        return max(INT8_MIN, q(-1.0)), min(INT8_MAX, q(1.0))
    return None


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int, int]:
    """TFLite SAME padding for one spatial dim: (out, pad_before, pad_after)."""
    eff = (kernel - 1) * dilation + 1
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + eff - size, 0)
    return out, total // 2, total - total // 2


def classify_pads(in_hw, kernel, strides, pads, dilations=(1, 1)) -> str | None:
    """'VALID', 'SAME', or None when the explicit pads (t, l, b, r) are neither."""
    t, l, b, r = pads
    if not any(pads):
        return "VALID"
    (oh, pt, pb), (ow, pl, pr) = (same_padding(in_hw[0], kernel[0], strides[0], dilations[0]),
                                  same_padding(in_hw[1], kernel[1], strides[1], dilations[1]))
    ir_oh = conv_out_size(in_hw[0], kernel[0], strides[0], t, b, dilations[0])
    ir_ow = conv_out_size(in_hw[1], kernel[1], strides[1], l, r, dilations[1])
    if (t, b, l, r) == (pt, pb, pl, pr) and (ir_oh, ir_ow) == (oh, ow):
        return "SAME"
    return None


# ---------------------------------------------------------------------------------------------
class _AlignedBuffer:
    """A flatbuffer Buffer whose data vector is 16-byte aligned (as the TFLite converter does;
    TFLM reads int32 biases in place)."""

    def __init__(self, data: bytes | None):
        self.data = data

    def Pack(self, builder):
        fb = _schema()
        off = None
        if self.data is not None:
            n = len(self.data)
            builder.StartVector(1, n, 16)
            builder.head = builder.head - n
            builder.Bytes[builder.head:builder.head + n] = self.data
            builder.vectorNumElems = n
            off = builder.EndVector()
        fb.BufferStart(builder)
        if off is not None:
            fb.BufferAddData(builder, off)
        return fb.BufferEnd(builder)


_TYPE = {"int8": "INT8", "int32": "INT32", "float32": "FLOAT32"}
_NP = {"int8": np.int8, "int32": np.int32, "float32": np.float32}

# Operator versions as the TFLite converter writes them for int8 models (every one is within the
# range the LiteRT builtin and reference resolvers register; TFLM ignores versions).
_VERSIONS = {
    "CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 4, "ADD": 2, "AVERAGE_POOL_2D": 2,
    "MAX_POOL_2D": 2, "PAD": 2, "PADV2": 2, "CONCATENATION": 2, "RESHAPE": 1, "SOFTMAX": 2,
    "QUANTIZE": 2, "MAXIMUM": 2, "MINIMUM": 2, "SPLIT": 2, "SLICE": 2,
}


class _Exporter:
    def __init__(self, graph: Graph, fc_as_conv: bool = True, grouped_conv: str = "native"):
        if grouped_conv not in ("native", "split"):
            raise ValueError(f"grouped_conv must be 'native' or 'split', not {grouped_conv!r}")
        self.g = graph
        self.fc_as_conv = fc_as_conv
        self.grouped_conv = grouped_conv
        self.fb = _schema()
        self.buffers: list[_AlignedBuffer] = [_AlignedBuffer(None)]   # buffer 0: empty sentinel
        self.tensors = []            # TensorT
        self.index: dict[str, int] = {}
        self.ops = []                # OperatorT
        self.opcodes: dict[str, int] = {}
        self.names: set[str] = set()
        self._codes = []             # OperatorCodeT, in opcode-index order

    # ---------------------------------------------------------------- tensors
    def _unique(self, name: str) -> str:
        base, k = name, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def _new_tensor(self, name, shape, dtype, scale=None, zero_point=None, qdim=0, data=None) -> int:
        fb = self.fb
        t = fb.TensorT()
        t.name = self._unique(name)
        t.shape = [int(s) for s in shape]
        t.type = getattr(fb.TensorType, _TYPE[dtype])
        if data is not None:
            arr = np.ascontiguousarray(np.asarray(data).astype(_NP[dtype], copy=False))
            if tuple(arr.shape) != tuple(t.shape):
                arr = arr.reshape(t.shape)
            self.buffers.append(_AlignedBuffer(arr.astype(arr.dtype.newbyteorder("<")).tobytes()))
            t.buffer = len(self.buffers) - 1
        else:
            t.buffer = 0
        if scale is not None:
            qp = fb.QuantizationParametersT()
            qp.scale = [float(s) for s in np.atleast_1d(np.asarray(scale, np.float32))]
            qp.zeroPoint = [int(z) for z in np.atleast_1d(np.asarray(zero_point, np.int64))]
            if len(qp.zeroPoint) == 1 and len(qp.scale) > 1:
                qp.zeroPoint = qp.zeroPoint * len(qp.scale)
            qp.quantizedDimension = int(qdim)
            t.quantization = qp
        self.tensors.append(t)
        return len(self.tensors) - 1

    def tensor(self, name: str) -> int:
        """Index of the TFLite tensor for an IR tensor (created on first use)."""
        if name in self.index:
            return self.index[name]
        t = self.g.tensors[name]
        q = t.q
        scale = zp = None
        qdim = 0
        if q is not None:
            scale, zp = q.scale, q.zero_point
            qdim = q.axis if (q.per_channel and q.axis is not None) else 0
        self.index[name] = self._new_tensor(name, t.shape, t.dtype, scale, zp, qdim, t.data)
        return self.index[name]

    def like(self, name: str, shape, suffix: str) -> int:
        """A new activation tensor with the quant params of IR tensor `name`."""
        t = self.g.tensors[name]
        return self._new_tensor(name + suffix, shape, t.dtype, t.q.scale, t.q.zero_point)

    def const_int8_like(self, name: str, value: int, suffix: str) -> int:
        t = self.g.tensors[name]
        return self._new_tensor(name + suffix, (1,), "int8", t.q.scale, t.q.zero_point,
                                data=np.array([value], np.int8))

    def const_i32(self, name: str, values) -> int:
        arr = np.asarray(values, np.int32)
        return self._new_tensor(name, arr.shape, "int32", data=arr)

    # ---------------------------------------------------------------- operators
    def op(self, opname: str, inputs, outputs, options=None, options_type: str | None = None):
        fb = self.fb
        if opname not in self.opcodes:
            code = fb.OperatorCodeT()
            code.builtinCode = getattr(fb.BuiltinOperator, opname)
            code.deprecatedBuiltinCode = min(code.builtinCode, 127)
            code.version = _VERSIONS.get(opname, 1)
            self.opcodes[opname] = len(self.opcodes)
            self._codes.append(code)
        o = fb.OperatorT()
        o.opcodeIndex = self.opcodes[opname]
        o.inputs = [int(i) for i in inputs]
        o.outputs = [int(i) for i in outputs]
        if options is not None:
            o.builtinOptionsType = getattr(fb.BuiltinOptions, options_type)
            o.builtinOptions = options
        self.ops.append(o)

    # ---------------------------------------------------------------- activation fusion
    def fused_activation(self, node: Node, out_name: str):
        """(ActivationFunctionType, needs_minmax) for the node's 'clamp' attr."""
        fb = self.fb
        clamp = node.attrs.get("clamp")
        if clamp is None:
            return fb.ActivationFunctionType.NONE, None
        lo, hi = float(clamp[0]), float(clamp[1])
        if math.isinf(lo) and lo < 0 and math.isinf(hi) and hi > 0:
            return fb.ActivationFunctionType.NONE, None
        q = node.attrs.get("q") or {}
        want = (q.get("act_min"), q.get("act_max"))
        if want[0] is None or want[1] is None:
            raise ExportError(f"{node.describe()}: clamp {clamp} but attrs['q'] has no "
                              "act_min/act_max")
        want = (int(want[0]), int(want[1]))
        scale, zp = self.g.tensors[out_name].q.scalar()
        rng = tflite_activation_range((lo, hi), scale, zp)
        if rng is not None:
            if rng != want:
                raise ExportError(
                    f"{node.describe()}: TFLite derives the fused clamp {clamp} as int8 range "
                    f"{rng} from output scale {scale!r}, zero point {zp}, but the quantizer chose "
                    f"{want}; the exported model would not match our reference")
            kind = {(0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1"}.get((lo, hi), "RELU")
            return getattr(fb.ActivationFunctionType, kind), None
        return fb.ActivationFunctionType.NONE, want

    def emit_minmax(self, out_name: str, src: int, dst: int, rng):
        """dst = min(max(src, act_min), act_max) with int8 constants (exact)."""
        lo, hi = rng
        shape = self.g.tensors[out_name].shape
        steps = []
        if lo > INT8_MIN:
            steps.append(("MAXIMUM", lo))
        if hi < INT8_MAX:
            steps.append(("MINIMUM", hi))
        if not steps:
            steps = [("MAXIMUM", INT8_MIN)]
        cur = src
        for k, (opname, v) in enumerate(steps):
            nxt = dst if k == len(steps) - 1 else self.like(out_name, shape, f"_{opname.lower()}_in")
            c = self.const_int8_like(out_name, v, f"_{opname.lower()}_bound")
            self.op(opname, [cur, c], [nxt], self.fb.MaximumMinimumOptionsT(),
                    "MaximumMinimumOptions")
            cur = nxt

    def with_activation(self, node: Node, out_name: str, emit):
        """Call emit(output_index, fused_activation); adds MAXIMUM/MINIMUM when needed."""
        act, rng = self.fused_activation(node, out_name)
        out = self.tensor(out_name)
        if rng is None:
            emit(out, act)
        else:
            tmp = self.like(out_name, self.g.tensors[out_name].shape, "_preclamp")
            emit(tmp, act)
            self.emit_minmax(out_name, tmp, out, rng)

    # ---------------------------------------------------------------- padding
    def padded_input(self, node: Node, x_name: str, pads, pad_value: int) -> int:
        """An explicit PAD / PADV2 of x; returns the padded tensor's index."""
        x = self.g.tensors[x_name]
        _, h, w, c = x.shape
        t, l, b, r = (int(p) for p in pads)
        shape = (1, h + t + b, w + l + r, c)
        out = self.like(x_name, shape, f"_pad_{node.name}")
        paddings = self.const_i32(f"{node.name}_paddings", [[0, 0], [t, b], [l, r], [0, 0]])
        _, zp = x.q.scalar()
        if int(pad_value) == zp:
            self.op("PAD", [self.tensor(x_name), paddings], [out], self.fb.PadOptionsT(),
                    "PadOptions")
        else:
            v = self.const_int8_like(x_name, int(pad_value), f"_padvalue_{node.name}")
            self.op("PADV2", [self.tensor(x_name), paddings, v], [out], self.fb.PadV2OptionsT(),
                    "PadV2Options")
        return out

    def resolve_padding(self, node: Node, x_name: str, kernel, strides, dilations, pads,
                        pad_value: int, allow_same: bool = True):
        """(input tensor index, Padding enum) for a conv/pool node."""
        fb = self.fb
        x = self.g.tensors[x_name]
        kind = classify_pads(x.shape[1:3], kernel, strides, pads, dilations)
        if kind == "VALID":
            return self.tensor(x_name), fb.Padding.VALID
        if kind == "SAME" and allow_same:
            return self.tensor(x_name), fb.Padding.SAME
        return self.padded_input(node, x_name, pads, pad_value), fb.Padding.VALID

    # ---------------------------------------------------------------- ops
    def _concat(self, out_name, parts, axis, lead_shape, suffix, c, final=False):
        """Concatenate (tensor index, size) parts along `axis`; returns the result's index."""
        total = sum(n for _, n in parts)
        if final:
            dst = self.tensor(out_name)
        elif len(parts) == 1:
            return parts[0][0]
        else:
            dst = self.like(out_name, lead_shape + (total, c), suffix)
        if len(parts) == 1:   # final output made of one part: copy through a RESHAPE
            shape = self.g.tensors[out_name].shape
            self.op("RESHAPE", [parts[0][0], self.const_i32(out_name + "_shape", list(shape))],
                    [dst], _reshape_options(self.fb, shape), "ReshapeOptions")
            return dst
        opt = self.fb.ConcatenationOptionsT()
        opt.axis = axis
        self.op("CONCATENATION", [i for i, _ in parts], [dst], opt, "ConcatenationOptions")
        return dst

    # ---------------------------------------------------------------- model
    def run(self) -> bytes:
        import flatbuffers
        fb = self.fb
        for name in list(self.g.inputs) + list(self.g.outputs):
            t = self.g.tensors[name]
            if t.dtype != "int8" or t.q is None:
                raise ExportError(f"graph input/output '{name}' is {t.dtype} without int8 quant "
                                  "params: export_tflite needs the quantized graph")
        for name in self.g.inputs:
            self.tensor(name)
        for node in self.g.nodes:
            ops.get(node).tflite(self, node)

        sub = fb.SubGraphT()
        sub.tensors = self.tensors
        sub.inputs = [self.index[n] for n in self.g.inputs]
        sub.outputs = [self.index[n] for n in self.g.outputs]
        sub.operators = self.ops
        sub.name = "main"
        model = fb.ModelT()
        model.version = 3
        model.description = "tinyc int8 export"
        model.operatorCodes = self._codes
        model.subgraphs = [sub]
        model.buffers = self.buffers
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def _reshape_options(fb, shape):
    opt = fb.ReshapeOptionsT()
    opt.newShape = [int(s) for s in shape]
    return opt


def _same_params(node: Node, a: Tensor, b: Tensor):
    if a.q is None or b.q is None or a.q.scalar() != b.q.scalar():
        raise ExportError(f"{node.describe()}: input '{a.name}' and output '{b.name}' must share "
                          f"quant params ({a.q and a.q.scalar()} vs {b.q and b.q.scalar()})")


def export_tflite(graph: Graph, fc_as_conv: bool = True, grouped_conv: str = "native") -> bytes:
    """Serialize a quantized int8 IR graph as a .tflite flatbuffer (bytes).

    fc_as_conv (default, what `tinyc build --export-tflite` writes): write each fully_connected as
      RESHAPE -> 1x1 CONV_2D -> RESHAPE instead of FULLY_CONNECTED, so that both LiteRT and TFLM
      reproduce the generated C exactly. Same arithmetic as TFLM's FULLY_CONNECTED (double rounding); needed to
      compare with LiteRT's reference kernels, whose FULLY_CONNECTED requantizes by rounding the
      accumulator times the real scale once, and so differs by 1 at near-ties.
    grouped_conv: 'native' writes a grouped conv (1 < groups < C_in) as one CONV_2D whose weight
      has C_in / groups input channels (LiteRT's reference and default kernels and TFLM all run it,
      bit-exact with our reference: see tests/test_tflite_export.py); 'split' writes
      SPLIT -> CONV_2D per group -> CONCATENATION, for runtimes without grouped CONV_2D.
    """
    return _Exporter(graph, fc_as_conv, grouped_conv).run()
