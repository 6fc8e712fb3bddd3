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

