"""The quantizer and the fixed-point primitives the reference (and so the C code) is built from."""
import math

import numpy as np
import pytest

from tinyc.passes.quantize import SCALE_BITS, activation_range, choose_qparams, quantize, round_scale
from tinyc.pipeline import check_model_input, import_float
from tinyc.reference import fixedpoint as fp

rng = np.random.default_rng(0)


def srdhm_scalar(a: int, b: int) -> int:
    """Textbook definition with Python integers (C semantics: truncating division)."""
    if a == b == -(2 ** 31):
        return 2 ** 31 - 1
    ab = a * b
    nudge = 2 ** 30 if ab >= 0 else 1 - 2 ** 30
    v = ab + nudge
    return abs(v) // 2 ** 31 * (1 if v >= 0 else -1)


def rdbpot_scalar(x: int, e: int) -> int:
    """Round x / 2^e to nearest, halves away from zero."""
    if e == 0:
        return x
    q, r = divmod(abs(x), 2 ** e)
    q += 1 if 2 * r >= 2 ** e else 0
    return q if x >= 0 else -q


def test_srdhm_matches_definition():
    a = rng.integers(-2 ** 31, 2 ** 31, 5000)
    b = rng.integers(-2 ** 31, 2 ** 31, 5000)
    a[:3], b[:3] = -2 ** 31, [-2 ** 31, 2 ** 31 - 1, 0]
    got = fp.saturating_rounding_doubling_high_mul(a, b)
    assert [int(v) for v in got] == [srdhm_scalar(int(x), int(y)) for x, y in zip(a, b)]


def test_rounding_divide_by_pot_rounds_half_away():
    x = rng.integers(-2 ** 31, 2 ** 31, 3000)
    e = rng.integers(0, 31, 3000)
    got = fp.rounding_divide_by_pot(x, e)
    assert [int(v) for v in got] == [rdbpot_scalar(int(v), int(s)) for v, s in zip(x, e)]
    assert int(fp.rounding_divide_by_pot(-3, 1)) == -2 and int(fp.rounding_divide_by_pot(3, 1)) == 2


@pytest.mark.parametrize("real", [1e-9, 3.1e-5, 0.0123, 0.5, 0.99999999, 1.0, 1.7, 123.456])
def test_quantize_multiplier_represents_the_real_value(real):
    q, shift = fp.quantize_multiplier(real)
    assert 2 ** 30 <= q < 2 ** 31
    assert math.isclose(q * 2.0 ** (shift - 31), real, rel_tol=2 ** -30)


def test_quantize_multiplier_tiny_is_zero():
    assert fp.quantize_multiplier(1e-12) == (0, 0)
    assert fp.quantize_multiplier(0.0) == (0, 0)


def test_multiply_by_quantized_multiplier_approximates_product():
    x = rng.integers(-2 ** 20, 2 ** 20, 2000)
    for real in (0.000731, 0.25, 0.8, 3.5):
        q, shift = fp.quantize_multiplier(real)
        got = fp.multiply_by_quantized_multiplier(x, q, shift)
        assert np.abs(got - x * real).max() <= 1.0


def test_scales_have_few_significant_bits_and_are_never_smaller():
    s = rng.uniform(1e-6, 1.0, 1000).astype(np.float32)
    r = round_scale(s)
    assert np.all(r >= s) and np.all(r <= s * (1 + 2.0 ** (1 - SCALE_BITS)))
    mant, _ = np.frexp(r.astype(np.float64))
    assert np.all(mant * 2 ** SCALE_BITS == np.round(mant * 2 ** SCALE_BITS))
    # the product of two such scales is exact in float32 (what makes LiteRT's FC multiplier
    # and TFLM's agree)
    a, b = r[:500], r[500:]
    assert np.array_equal((a * b).astype(np.float64), a.astype(np.float64) * b.astype(np.float64))


def test_qparams_cover_range_and_zero():
    for lo, hi in [(-1.0, 1.0), (0.0, 6.0), (0.5, 3.0), (-4.0, -1.0), (0.0, 0.0)]:
        q = choose_qparams(lo, hi)
        s, zp = q.scalar()
        assert -128 <= zp <= 127 and s > 0
        real_lo, real_hi = (-128 - zp) * s, (127 - zp) * s
        assert real_lo <= min(lo, 0) + s and real_hi >= max(hi, 0) - s
        assert (zp - zp) * s == 0.0  # zero is exactly representable (by the zero point)


def test_relu6_activation_range_like_tflite():
    q = choose_qparams(0.0, 6.0)
    s, zp = q.scalar()
    lo, hi = activation_range(q, (0.0, 6.0))
    assert lo == zp == -128
    assert hi == min(127, zp + int(np.floor(np.float32(6.0) / np.float32(s) + 0.5)))
    assert activation_range(q, None) == (-128, 127)


def test_weights_and_biases(small_nets):
    g = import_float(str(small_nets["groups_concat"]))
    calib = rng.uniform(-1, 1, (4, 4, 15, 15)).astype(np.float32)
    gq = quantize(g, check_model_input(g, calib, "calib", batch=True))
    for node in gq.nodes:
        if node.op != "conv2d":
            continue
        w, b = gq.tensors[node.inputs[1]], gq.tensors[node.inputs[2]]
        assert w.dtype == "int8" and b.dtype == "int32"
        assert w.data.min() >= -127 and w.q.scale.shape == (w.shape[0],)
        # each channel uses its full range: per-channel symmetric
        assert np.all(np.abs(w.data.reshape(w.shape[0], -1)).max(axis=1) >= 126)
        s_in = float(gq.tensors[node.inputs[0]].q.scale)
        np.testing.assert_allclose(b.q.scale, s_in * w.q.scale, rtol=1e-6)
    # every activation is int8 with scalar parameters; pass-through ops keep their input's
    for node in gq.nodes:
        if node.op in ("max_pool", "avg_pool", "pad", "reshape", "clamp", "concat"):
            assert gq.tensors[node.inputs[0]].q.scalar() == gq.tensors[node.outputs[0]].q.scalar()


def test_concat_inputs_share_parameters(small_nets):
    g = import_float(str(small_nets["groups_concat"]))
    calib = rng.uniform(-1, 1, (4, 4, 15, 15)).astype(np.float32)
    gq = quantize(g, check_model_input(g, calib, "calib", batch=True))
    concat = next(n for n in gq.nodes if n.op == "concat")
    params = {gq.tensors[i].q.scalar() for i in concat.inputs + concat.outputs}
    assert len(params) == 1


def test_nan_calibration_rejected(small_nets):
    from tinyc.errors import TinycError
    g = import_float(str(small_nets["fc_only"]))
    x = np.zeros((2, 1, 1, 16), np.float32)
    x[1, 0, 0, 3] = np.inf
    with pytest.raises(TinycError, match="NaN or Inf"):
        quantize(g, x)


def test_a_dot_product_too_long_for_int32_is_refused(tmp_path):
    """|bias| <= 2^30 plus K products of 127 * 255: over MAX_DOT_LENGTH terms an int32
    accumulator could overflow, so such a layer is refused by name."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from conftest import assert_clean_failure, tinyc
    from tinyc.passes.quantize import MAX_DOT_LENGTH

    assert 127 * 255 * MAX_DOT_LENGTH + 2 ** 30 < 2 ** 31
    assert 127 * 255 * (MAX_DOT_LENGTH + 1) + 2 ** 30 >= 2 ** 31
    cin = MAX_DOT_LENGTH + 1
    w = numpy_helper.from_array(rng.normal(0, 0.01, (2, cin, 1, 1)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="wide_conv")], "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 1, 1])], [w])
    path = tmp_path / "wide.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    res = tinyc("build", path, "--board", "mps2_an386", "-o", tmp_path / "o", "--no-firmware",
                check=False)
    assert_clean_failure(res, "wide_conv", f"{cin:,} products")
