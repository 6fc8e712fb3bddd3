"""TFLite's int8 softmax, in numpy: gemmlowp fixed-point exp and reciprocal.

Fixed-point values are int32 raws with a known number of integer bits; products of two raws are
SaturatingRoundingDoublingHighMul, sums are plain int32 adds. Written from the semantics of
TFLite's reference int8 Softmax (5 integer bits for the scaled differences, 12 for the sum).
"""
from __future__ import annotations

import math

import numpy as np

from .fixedpoint import (INT32_MAX, INT32_MIN, quantize_multiplier,
                         rounding_divide_by_pot as rdbpot,
                         saturating_rounding_doubling_high_mul as mul)

SCALED_DIFF_INTEGER_BITS = 5
ACCUM_INTEGER_BITS = 12


def softmax_params(input_scale: float, beta: float = 1.0) -> dict:
    real = min(beta * float(np.float32(input_scale)) * (1 << (31 - SCALED_DIFF_INTEGER_BITS)),
               float((1 << 31) - 1))
    mult, left_shift = quantize_multiplier(real)
    assert left_shift >= 0
    max_rescaled = (1.0 * ((1 << SCALED_DIFF_INTEGER_BITS) - 1)
                    * (1 << (31 - SCALED_DIFF_INTEGER_BITS)) / (1 << left_shift))
    return dict(input_multiplier=mult, input_left_shift=left_shift,
                diff_min=-int(math.floor(max_rescaled)))


def _shift_left_saturating(x, exponent: int):
    threshold = (1 << (31 - exponent)) - 1
    y = x << exponent
    y = np.where(x > threshold, INT32_MAX, y)
    return np.where(x < -threshold, INT32_MIN, y)


def _exp_on_interval_neg_quarter_to_0(a):
    """exp(a) for a in [-1/4, 0), 0 integer bits in and out."""
    constant_term, one_third = 1895147668, 715827883
    x = a + (1 << 28)                       # a + 1/8
    x2 = mul(x, x)
    x3 = mul(x2, x)
    x4 = mul(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    poly = rdbpot(mul(x4_over_4 + x3, one_third) + x2, 1)
    return constant_term + mul(constant_term, x + poly)


_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
           (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a):
    """exp(a) for a <= 0 with 5 integer bits in; result with 0 integer bits."""
    frac_bits = 31 - SCALED_DIFF_INTEGER_BITS
    quarter = 1 << (frac_bits - 2)
    a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter
    result = _exp_on_interval_neg_quarter_to_0(
        _shift_left_saturating(a_mod_quarter_minus_quarter, SCALED_DIFF_INTEGER_BITS))
    remainder = a_mod_quarter_minus_quarter - a
    for exponent, multiplier in _BARREL:
        bit = (remainder & (1 << (frac_bits + exponent))) != 0
        result = np.where(bit, mul(result, multiplier), result)
    return np.where(a == 0, INT32_MAX, result)


def _one_over_one_plus_x(a):
    """1 / (1 + a) for a in [0, 1), 0 integer bits in and out (Newton-Raphson, 3 steps)."""
    s = np.asarray(a, np.int64) + INT32_MAX
    half_denominator = np.where(s >= 0, (s + 1) // 2, -((-s + 1) // 2))   # rounding half-sum
    x = 1515870810 + mul(half_denominator, -1010580540)       # 48/17 - 32/17 * d, 2 integer bits
    for _ in range(3):
        one_minus = (1 << 29) - mul(half_denominator, x)
        x = x + _shift_left_saturating(mul(x, one_minus), 2)
    return _shift_left_saturating(x, 1)


def softmax_int8(x: np.ndarray, q: dict) -> np.ndarray:
    """x int8 (1, N) -> int8 (1, N) at scale 1/256, zero point -128."""
    rows = np.asarray(x, np.int64).reshape(-1, x.shape[-1])
    out = np.empty(rows.shape, np.int8)
    for r, row in enumerate(rows):
        diff = row - row.max()
        valid = diff >= q["diff_min"]
        scaled = mul(diff * (1 << q["input_left_shift"]), q["input_multiplier"])
        exps = exp_on_negative_values(scaled)
        sum_of_exps = int(np.where(valid, rdbpot(exps, ACCUM_INTEGER_BITS), 0).sum())
        sum_of_exps = int(np.int64(sum_of_exps).astype(np.int32))
        headroom_plus_one = 32 - int(sum_of_exps).bit_length() if sum_of_exps > 0 else 32
        bits_over_unit = ACCUM_INTEGER_BITS - headroom_plus_one
        shifted_minus_one = ((sum_of_exps << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31)
        scale = _one_over_one_plus_x(np.int64(shifted_minus_one))
        y = rdbpot(mul(scale, exps), bits_over_unit + 31 - 8) - 128
        out[r] = np.where(valid, np.clip(y, -128, 127), -128)
    return out.reshape(x.shape)
