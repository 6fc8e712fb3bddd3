"""TFLite's integer arithmetic, vectorised in numpy (int64 inside, int32 semantics outside).

These are the primitives the int8 reference executor is built from; the C runtime implements the
same functions (runtime_c/include/tinyc/fixedpoint.h) and the tests check both against TFLite.
"""
from __future__ import annotations

import math

import numpy as np

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """double -> (int32 significand in [2^30, 2^31), shift) with real ~= q * 2^(shift - 31)."""
    if real == 0.0:
        return 0, 0
    frac, shift = math.frexp(real)
    q = int(round_half_away(frac * (1 << 31)))
    if q == (1 << 31):
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def round_half_away(x):
    """C's round(): halves away from zero (numpy's round is half-to-even)."""
    x = np.asarray(x, dtype=np.float64)
    r = np.sign(x) * np.floor(np.abs(x) + 0.5)
    return r if r.ndim else float(r)


def wrap_int32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) % (1 << 32)) - (1 << 31)


def _trunc_div_pow2_31(x: np.ndarray) -> np.ndarray:
    # C integer division by 2^31 truncates toward zero
    return np.where(x >= 0, x >> 31, -((-x) >> 31))


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == b) & (a == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    res = _trunc_div_pow2_31(ab + nudge)
    return np.where(overflow, INT32_MAX, res)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, mult, shift) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (double rounding); shift > 0 shifts left first."""
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = wrap_int32(np.asarray(x, dtype=np.int64) * (np.int64(1) << left))
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, mult), right)



# ---------------------------------------------------------------- TFLite's int8 LOGISTIC, HARD_SWISH
# Both are functions of one int8 input, so the compiler tabulates them (ops/activation.py): these
# are the tables TFLite Micro's kernels compute, value by value, vectorised over the 256 inputs.
def _wrap(x) -> np.ndarray:
    return wrap_int32(x)


def _saturating_shift_left(x, exponent: int, bits: int = 32) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent > 0> on `bits`-bit integers."""
    top = (1 << (bits - 1)) - 1
    threshold = (1 << (bits - 1 - exponent)) - 1
    x = np.asarray(x, np.int64)
    return np.where(x > threshold, top, np.where(x < -threshold, -top - 1, x << exponent))


def _exp_on_interval_minus_quarter_to_0(a) -> np.ndarray:
    """gemmlowp exp_on_interval_between_negative_one_quarter_and_0_excl (Q0.31 in and out)."""
    srdhm = saturating_rounding_doubling_high_mul
    constant_term, one_third = 1895147668, 715827883   # exp(-1/8), 1/3
    x = _wrap(a + (1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(_wrap(srdhm(_wrap(x4_over_4 + x3), one_third) + x2), 1)
    return _wrap(constant_term + srdhm(constant_term, _wrap(x + poly)))


def _exp_on_negative_values(a, integer_bits: int) -> np.ndarray:
    """gemmlowp exp_on_negative_values: a (raw, `integer_bits` integer bits, <= 0) -> Q0.31."""
    frac = 31 - integer_bits
    quarter = 1 << (frac - 2)
    a = np.asarray(a, np.int64)
    a_mod = _wrap((a & (quarter - 1)) - quarter)
    result = _exp_on_interval_minus_quarter_to_0(_saturating_shift_left(a_mod, integer_bits))
    remainder = _wrap(a_mod - a)
    for exponent, mult in ((-2, 1672461947), (-1, 1302514674), (0, 790015084),
                           (1, 290630308), (2, 39332535), (3, 720401), (4, 242)):
        if integer_bits > exponent:
            bit = (remainder >> (frac + exponent)) & 1
            result = np.where(bit != 0, saturating_rounding_doubling_high_mul(result, mult), result)
    if integer_bits > 5:
        result = np.where(a < -(1 << (36 - integer_bits)), 0, result)
    return np.where(a == 0, INT32_MAX, result)


def _one_over_one_plus_x(a) -> np.ndarray:
    """gemmlowp one_over_one_plus_x_for_x_in_0_1 (Q0.31 in and out): Newton-Raphson."""
    srdhm = saturating_rounding_doubling_high_mul
    s = np.asarray(a, np.int64) + INT32_MAX
    half_denominator = np.where(s >= 0, (s + 1) // 2, -((-(s - 1)) // 2))   # RoundingHalfSum
    x = _wrap(1515870810 + srdhm(half_denominator, -1010580540))         # 48/17 - 32/17 * d
    for _ in range(3):
        one_minus = _wrap((1 << 29) - srdhm(half_denominator, x))
        x = _wrap(x + _saturating_shift_left(srdhm(x, one_minus), 2))
    return _saturating_shift_left(x, 1)


def _logistic_q4(a) -> np.ndarray:
    """gemmlowp logistic of a Q4.27 raw value -> Q0.31."""
    a = np.asarray(a, np.int64)
    positive = a > 0
    abs_a = np.where(positive, a, _wrap(-a))
    if_positive = _one_over_one_plus_x(_exp_on_negative_values(_wrap(-abs_a), 4))
    if_negative = _wrap(INT32_MAX - if_positive)
    return np.where(a == 0, 1 << 30, np.where(positive, if_positive, if_negative))


INT8_VALUES = np.arange(-128, 128, dtype=np.int64)   # table index i holds input value i - 128


def logistic_table(in_scale: float, in_zp: int) -> np.ndarray:
    """TFLite Micro's int8 LOGISTIC (output scale 1/256, zero point -128) of every int8 input:
    LogisticPrepare's multiplier and input radius, reference_integer_ops::Logistic."""
    real = float(np.float32(in_scale)) * float(1 << 27)
    q, left_shift = math.frexp(real)
    mult = int(round_half_away(q * (1 << 31)))
    radius = math.floor(15.0 * (1 << 27) / 2.0 ** left_shift)
    x = INT8_VALUES - int(in_zp)
    inside = np.clip(x, -radius + 1, radius - 1)   # the saturated ends are set below
    q0 = _logistic_q4(multiply_by_quantized_multiplier(inside, mult, left_shift))
    y = np.clip(rounding_divide_by_pot(q0, 23) - 128, -128, 127)
    y = np.where(x <= -radius, -128, np.where(x >= radius, 127, y))
    return y.astype(np.int8)


def _downscale_to_int16(m: int) -> int:
    """TFLite DownScaleInt32ToInt16Multiplier."""
    if m >= INT32_MAX - (1 << 15):
        return 32767
    return (m + (1 << 15)) >> 16


def _srdhm16(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    res = _trunc_div(ab + nudge, 1 << 15)
    return np.where((a == b) & (a == -32768), 32767, res)


def _trunc_div(x, d: int) -> np.ndarray:
    """C integer division (toward zero) by a positive d."""
    return np.where(x >= 0, x // d, -((-x) // d))


def _sat16(x) -> np.ndarray:
    return np.clip(x, -32768, 32767)


def hard_swish_params(in_scale: float, out_scale: float) -> dict:
    """TFLite's HardSwishPrepare (float32 scale arithmetic, int16 multipliers)."""
    hires = np.float32(1.0 / 128.0) * np.float32(in_scale)
    out_m, out_e = quantize_multiplier(float(np.float32(hires / np.float32(out_scale))))
    relu_m, relu_e = quantize_multiplier(float(np.float32(hires / np.float32(3.0 / 32768.0))))
    return dict(out_mult=_downscale_to_int16(out_m), out_exp=out_e,
                relu_mult=_downscale_to_int16(relu_m), relu_exp=relu_e)


def hard_swish_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int) -> np.ndarray:
    """TFLite's int8 HARD_SWISH (reference_ops::HardSwish, int16 fixed point) of every input."""
    p = hard_swish_params(in_scale, out_scale)
    hires = (INT8_VALUES - int(in_zp)) * 128
    pre_out = _srdhm16(hires, p["out_mult"])
    relu = hires
    if p["relu_exp"] > 0:
        relu = _sat16(relu * (1 << (p["relu_exp"] - 1)))
    relu = _srdhm16(relu, p["relu_mult"])
    if p["relu_exp"] > 0:
        relu = _sat16(relu * 2)
    if p["relu_exp"] < 0:
        relu = rounding_divide_by_pot(relu, -p["relu_exp"])
    relu = (relu + (1 << 15)) >> 1
    prod = relu * pre_out
    pre = np.where((relu == -32768) & (pre_out == -32768), 32767, _trunc_div(prod, 1 << 15))
    y = rounding_divide_by_pot(pre, -p["out_exp"]) + int(out_zp)
    return np.clip(y, -128, 127).astype(np.int8)
