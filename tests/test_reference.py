"""Tests of the golden reference (pyqinfer.reference) against hand-worked
values, exact-arithmetic properties and ONNX Runtime.

docs/semantics.md is the contract; section numbers below refer to it.
"""
from fractions import Fraction
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import pyqinfer.reference as R
from pyqinfer.reference import (INT32_MAX, INT32_MIN, MODES, derive_requant, requantize,
                                rounding_divide_by_pot, srdhm, wrap32)

HYP = settings(max_examples=200, deadline=None)


def rq(mode, acc, x_scale, w_scale=1.0, y_scale=1.0, zp=0, lo=INT32_MIN, hi=INT32_MAX):
    """requantize a list of accumulators with a freshly derived mode."""
    p = derive_requant(mode, x_scale, w_scale, y_scale)
    return requantize(np.array(acc, dtype=np.int64), p, zp, lo, hi).tolist()


# ---------------------------------------------------------------- primitives (section 3)

def test_wrap32():
    assert wrap32(2**31) == INT32_MIN
    assert wrap32(-(2**31) - 1) == INT32_MAX
    assert wrap32(2**32 + 5) == 5
    assert wrap32(np.array([2**31 - 1, 2**31, -(2**33) - 7])).tolist() == [INT32_MAX, INT32_MIN, -7]


def test_rne_rhaz_ties():
    ties = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5]
    assert [R.rne(v) for v in ties] == [0, 2, 2, 0, -2, -2]
    assert [R.rhaz(v) for v in ties] == [1, 2, 3, -1, -2, -3]
    assert R.rne(np.array(ties)).tolist() == [0, 2, 2, 0, -2, -2]
    assert R.rhaz(np.array(ties)).tolist() == [1, 2, 3, -1, -2, -3]
    # the floor(x + 0.5) trap: 0.49999999999999994 + 0.5 rounds to 1.0 in double
    below_half = 0.49999999999999994
    assert R.rhaz(below_half) == 0 and R.rhaz(-below_half) == 0
    assert R.rhaz(np.array([below_half, -below_half])).tolist() == [0, 0]


def test_srdhm():
    assert srdhm(INT32_MIN, INT32_MIN) == INT32_MAX  # the only saturating case
    assert srdhm(INT32_MIN, INT32_MAX) == -INT32_MAX  # -2^31 * (2^31-1) / 2^31, exact
    half = 2**30  # b = 2^30 means x * 2^30 / 2^31 = x / 2: round half up
    assert [srdhm(x, half) for x in (1, 3, 5, -1, -3, -5)] == [1, 2, 3, 0, -1, -2]
    assert srdhm(np.array([1, -1, -3]), half).tolist() == [1, 0, -1]


def test_rounding_divide_by_pot():
    # ties away from zero
    assert [rounding_divide_by_pot(x, 1) for x in (1, 3, 5, -1, -3, -5)] == [1, 2, 3, -1, -2, -3]
    assert [rounding_divide_by_pot(x, 2) for x in (2, 6, -2, -6, 5, -5, 7)] == [1, 2, -1, -2, 1, -1, 2]
    assert rounding_divide_by_pot(INT32_MIN, 31) == -1
    assert rounding_divide_by_pot(INT32_MAX, 31) == 1
    assert rounding_divide_by_pot(INT32_MAX, 0) == INT32_MAX
    with pytest.raises(ValueError, match="exponent"):
        rounding_divide_by_pot(1, 32)


@HYP
@given(st.integers(INT32_MIN, INT32_MAX), st.integers(0, 31))
def test_rounding_divide_by_pot_is_rhaz(x, e):
    f = Fraction(x, 2**e)
    t = math.trunc(f)
    expected = t + (int(math.copysign(1, x)) if abs(f - t) >= Fraction(1, 2) else 0)
    assert rounding_divide_by_pot(x, e) == expected


@HYP
@given(st.integers(INT32_MIN, INT32_MAX), st.integers(INT32_MIN, INT32_MAX))
def test_srdhm_is_round_half_up(a, b):
    if a == b == INT32_MIN:
        return
    assert srdhm(a, b) == math.floor(Fraction(a * b, 2**31) + Fraction(1, 2))


# ---------------------------------------------------------------- multiplier (section 4.2)

def test_quantize_multiplier_basic():
    assert R.quantize_multiplier(0.5) == (2**30, 0)
    assert R.quantize_multiplier(0.25) == (2**30, -1)
    assert R.quantize_multiplier(1.0) == (2**30, 1)
    assert R.quantize_multiplier(0.0) == (0, 0)
    m, sh = R.quantize_multiplier(0.1)
    assert abs(m * 2.0 ** (sh - 31) - 0.1) < 2**-31 * 0.1


def test_multiplier_rounding_to_2_pow_31():
    # q = 1 - 2^-34: q * 2^31 = 2^31 - 1/8 rounds to 2^31 -> m = 2^30, e + 1
    assert R.quantize_multiplier(1 - 2**-34) == (2**30, 1)
    # the same M from float32 scales: (1 - 2^-17) * (1 + 2^-17) = 1 - 2^-34 exactly in double
    sx, sw = np.float32(1 - 2**-17), np.float32(1 + 2**-17)
    for mode in ("q31", "q31_single"):
        p = derive_requant(mode, sx, sw, 1.0)
        assert (int(p.multiplier[0]), int(p.shift[0])) == (2**30, 1)
        assert rq(mode, [100, -100, 7], sx, sw) == [100, -100, 7]
    # just below: 1 - 2^-24 keeps its mantissa
    assert R.quantize_multiplier(1 - 2**-24) == (2**31 - 2**7, 0)


def test_tiny_multiplier_shift_below_minus_31():
    assert R.quantize_multiplier(2.0**-32) == (2**30, -31)  # e = -31 still representable
    assert R.quantize_multiplier(2.0**-33) == (0, 0)  # e = -32 < -31 -> 0
    for mode in ("q31", "q31_single"):
        p = derive_requant(mode, 2.0**-20, 2.0**-20, 1.0)  # M = 2^-40
        assert (int(p.multiplier[0]), int(p.shift[0])) == (0, 0)
        assert rq(mode, [INT32_MIN, -1, 0, INT32_MAX], 2.0**-20, 2.0**-20, zp=3) == [3, 3, 3, 3]


def test_shift_above_30_rejected():
    ok = derive_requant("q31", 2.0**15, np.float32(2.0**15 * (1 - 2**-24)), 1.0)
    assert int(ok.shift[0]) == 30
    for mode in ("q31", "q31_single"):
        with pytest.raises(ValueError, match="too large"):
            derive_requant(mode, 2.0**15, 2.0**15, 1.0)  # M = 2^30 -> sh = 31


def test_q31_left_shift_wraps():
    # peer quirk: gemmlowp's int32 multiply acc * 2^left wraps (M = 4: m = 2^30, sh = 3)
    assert rq("q31", [2**29], 4.0, lo=-128, hi=127) == [0]  # 2^29 * 8 = 2^32 wraps to 0
    assert rq("q31_single", [2**29], 4.0, lo=-128, hi=127) == [127]  # exact 2^31: no wrap
    assert rq("q31", [2**28], 4.0) == [-(2**30)]  # 2^28 * 8 = 2^31 wraps to INT32_MIN; SRDHM halves it
    assert rq("q31", [100, -100], 4.0) == [400, -400]


# ---------------------------------------------------------------- ties per mode (section 4.3)

def test_ties_m_half():
    # M = 0.5 (m = 2^30, sh = 0): q31 has no right shift, its only rounding is SRDHM (half up)
    acc = [5, -5, 3, -3, 1, -1]
    assert rq("fp32", acc, 0.5) == [2, -2, 2, -2, 0, -0]  # ties to even
    assert rq("q31", acc, 0.5) == [3, -2, 2, -1, 1, 0]  # half up (SRDHM)
    assert rq("q31_single", acc, 0.5) == [3, -2, 2, -1, 1, 0]  # half up
    assert rq("pot", acc, 0.5) == [3, -2, 2, -1, 1, 0]  # half up


def test_ties_m_quarter():
    # M = 0.25 (m = 2^30, sh = -1): SRDHM is exact for even acc, RDBPOT(., 1) rounds away from zero
    acc = [10, -10, 6, -6, 2, -2]  # exact values +-2.5, +-1.5, +-0.5
    assert rq("fp32", acc, 0.25) == [2, -2, 2, -2, 0, 0]
    assert rq("q31", acc, 0.25) == [3, -3, 2, -2, 1, -1]  # away from zero
    assert rq("q31_single", acc, 0.25) == [3, -2, 2, -1, 1, 0]  # half up
    assert rq("pot", acc, 0.25) == [3, -2, 2, -1, 1, 0]


def test_double_rounding():
    # acc = 5, M = 0.25: exact 1.25 -> 1; q31: SRDHM(5, 2^30) = 2.5 -> 3, then 3/2 = 1.5 -> 2
    assert rq("q31", [5, -5, 3, -3], 0.25) == [2, -1, 1, -1]
    assert rq("q31_single", [5, -5, 3, -3], 0.25) == [1, -1, 1, -1]
    assert rq("fp32", [5, -5, 3, -3], 0.25) == [1, -1, 1, -1]


def test_fp32_is_float32_arithmetic():
    # 2^24 + 1 is not a float32: fl32(acc) = 2^24, so fp32 loses the odd 1
    assert rq("fp32", [2**24 + 1], 1.0) == [2**24]
    assert rq("q31_single", [2**24 + 1], 1.0) == [2**24 + 1]
    # fl32(INT32_MIN) is exact
    assert rq("fp32", [INT32_MIN], 1.0) == [INT32_MIN]
    # S = fl32(fl32(sx*sw)/sy), with each op in float32
    sx, sw, sy = np.float32(0.1), np.float32(0.3), np.float32(0.7)
    expected = (sx * sw) / sy
    assert derive_requant("fp32", sx, sw, sy).scale[0] == expected
    assert expected != np.float32(float(sx) * float(sw) / float(sy))  # double would differ here


def test_fp32_tiny_scales():
    # S subnormal: tiny results round to 0
    p = derive_requant("fp32", 1e-20, 1e-20, 1.0)
    assert 0 < p.scale[0] < np.finfo(np.float32).tiny
    assert requantize(np.array([INT32_MIN, INT32_MAX]), p, 5, -128, 127).tolist() == [5, 5]
    # S underflows to 0: every output is the zero point
    p = derive_requant("fp32", 1e-30, 1e-30, 1.0)
    assert p.scale[0] == 0
    assert requantize(np.array([INT32_MIN, 0, INT32_MAX]), p, -7, -128, 127).tolist() == [-7, -7, -7]


def test_fp32_infinite_product_clamps_and_inf_scale_rejected():
    p = derive_requant("fp32", 1e19, 1e19, 1.0)  # S = 1e38: acc * S overflows to inf
    assert requantize(np.array([-3, 0, 3]), p, 1, -128, 127).tolist() == [-128, 1, 127]
    with pytest.raises(ValueError, match="overflows float32"):
        derive_requant("fp32", 1e30, 1e30, 1.0)


# ---------------------------------------------------------------- pot (section 4.4)

def test_pot_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="channel 1"):
        derive_requant("pot", 1.0, np.array([0.5, 0.3, 0.25], np.float32), 1.0)
    p = derive_requant("pot", 0.5, np.array([0.5, 2.0, 1.0], np.float32), 1.0)
    assert p.right_shift.tolist() == [2, 0, 1]


def test_pot_left_shift_and_large_right_shift():
    assert rq("pot", [3, -3], 8.0) == [24, -24]
    assert rq("pot", [1, -1], 2.0**40, lo=-128, hi=127) == [127, -128]  # beyond int64 intermediates
    assert rq("pot", [INT32_MAX, INT32_MIN], 2.0**-40) == [0, 0]
    assert rq("pot", [INT32_MIN], 2.0**-32) == [0]  # -2^31 / 2^32 = -0.5 -> half up -> 0
    assert rq("pot", [INT32_MIN], 2.0**-31) == [-1]


@HYP
@given(st.lists(st.integers(INT32_MIN, INT32_MAX), min_size=1, max_size=8),
       st.integers(-29, 40), st.integers(-128, 127))
def test_pot_equals_q31_single(acc, rs, zp):
    scale = 2.0**-rs
    pot = derive_requant("pot", scale, 1.0, 1.0)
    single = derive_requant("q31_single", scale, 1.0, 1.0)
    if rs <= 32:
        assert (int(single.multiplier[0]), int(single.shift[0])) == (2**30, 1 - rs)
    a = np.array(acc, dtype=np.int64)
    assert requantize(a, pot, zp, -128, 127).tolist() == requantize(a, single, zp, -128, 127).tolist()


# ---------------------------------------------------------------- properties of the modes

@HYP
@given(st.lists(st.integers(INT32_MIN, INT32_MAX), min_size=1, max_size=8),
       st.floats(2**-10, 1.0, width=32), st.floats(2**-10, 1.0, width=32), st.floats(2**-10, 1.0, width=32))
def test_modes_against_exact_formulas(acc, sx, sw, sy):
    a = np.array(acc, dtype=np.int64)
    # fp32: elementwise numpy float32 scalar arithmetic
    S = (np.float32(sx) * np.float32(sw)) / np.float32(sy)
    def clamp(v):
        return min(max(v, INT32_MIN), INT32_MAX)

    fp = rq("fp32", acc, sx, sw, sy)
    assert fp == [clamp(int(np.rint(np.float32(v) * S))) for v in acc]
    # q31_single: exact round half up of acc * m / 2^(31 - sh)
    p = derive_requant("q31_single", sx, sw, sy)
    m, sh = int(p.multiplier[0]), int(p.shift[0])
    single = requantize(a, p, 0, INT32_MIN, INT32_MAX).tolist()
    assert single == [clamp(math.floor(Fraction(v * m, 2 ** (31 - sh)) + Fraction(1, 2))) for v in acc]
    # q31 (double rounding) is within 1 of q31_single unless acc * 2^left wraps
    double = rq("q31", acc, sx, sw, sy)
    for v, d, s1 in zip(acc, double, single):
        if abs(v) * 2 ** max(sh, 0) < 2**31:
            assert abs(d - s1) <= 1


def test_q31_vs_q31_single_divergence_rate():
    # a fraction ~2^-(rs+1) of outputs differ by exactly 1 for right shift rs = -sh >= 1
    # (for M whose products acc*M have equidistributed fractional parts)
    rng = np.random.default_rng(1)
    acc = rng.integers(-(2**20), 2**20, 40000)
    for M, rs in ((0.3711, 1), (0.0417, 4)):
        assert int(derive_requant("q31", M, 1.0, 1.0).shift[0]) == -rs
        d = np.array(rq("q31", acc, M)) - np.array(rq("q31_single", acc, M))
        assert set(np.unique(d)) == {-1, 0, 1}
        assert abs(np.mean(d != 0) - 2.0 ** -(rs + 1)) < 0.15 * 2.0 ** -(rs + 1)


def test_per_channel_broadcast():
    sw = np.array([0.5, 0.25, 1.0], np.float32)
    acc = np.array([[5, 10, 3], [-5, -10, -3]])
    for mode in MODES:
        p = derive_requant(mode, 1.0, sw, 1.0)
        y = requantize(acc, p, 0, -128, 127)
        for c in range(3):
            pc = derive_requant(mode, 1.0, sw[c], 1.0)
            assert y[:, c].tolist() == requantize(acc[:, c], pc, 0, -128, 127).tolist()
        with pytest.raises(ValueError, match="channels"):
            requantize(acc[:, :2], p, 0, -128, 127)


# ---------------------------------------------------------------- activations and clip

def test_activation_bounds():
    assert R.activation_bounds("none", 0.1, np.int8(-10), "int8") == (-128, 127)
    assert R.activation_bounds(None, 0.1, np.uint8(3), "uint8") == (0, 255)
    assert R.activation_bounds("relu", 0.1, np.int8(-10), "int8") == (-10, 127)
    # 6 / 4 = 1.5 -> RNE 2; 6 / 12 = 0.5 -> RNE 0 (TFLite's RHAZ would give 1)
    assert R.activation_bounds("relu6", 4.0, np.int8(-10), "int8") == (-10, -8)
    assert R.activation_bounds("relu6", 12.0, np.int8(-10), "int8") == (-10, -10)
    assert R.activation_bounds("relu6", 0.001, np.uint8(0), "uint8") == (0, 255)
    assert R.activation_bounds((-5, 9), 0.1, np.int8(0), "int8") == (-5, 9)
    with pytest.raises(ValueError, match="clip"):
        R.activation_bounds((-200, 9), 0.1, np.int8(0), "int8")
    with pytest.raises(ValueError, match="clip"):
        R.activation_bounds((9, -5), 0.1, np.int8(0), "int8")
    with pytest.raises(ValueError, match="activation"):
        R.activation_bounds("gelu", 0.1, np.int8(0), "int8")


def test_qlinear_matmul_clip_and_bias():
    a = np.array([[10, -10]], np.int8)
    b = np.array([[3, -3], [-1, 1]], np.int8)
    bias = np.array([100, -200], np.int32)
    args = (a, 1.0, np.int8(0), b, 1.0, np.int8(0), 2.0, np.int8(0))
    # acc = [30+10+100, -30-10-200] = [140, -240]; * 0.5 = [70, -120]
    assert R.qlinear_matmul(*args, bias=bias).tolist() == [[70, -120]]
    assert R.qlinear_matmul(*args, bias=bias, clip="relu").tolist() == [[70, 0]]
    assert R.qlinear_matmul(*args, bias=bias, clip=(-5, 50)).tolist() == [[50, -5]]
    assert R.qlinear_matmul(*args, bias=bias, clip="relu6").tolist() == [[3, 0]]  # 6/2 = 3
    y = R.qlinear_matmul(*args)
    assert y.dtype == np.int8 and y.tolist() == [[20, -20]]


# ---------------------------------------------------------------- accumulation (section 2)

def test_wrap32_large_k():
    K = 70000
    a = np.full((1, K), 255, np.uint8)
    b = np.full((K, 1), 127, np.int8)
    exact = K * 255 * 127
    assert exact > INT32_MAX
    assert R.matmul_integer(a, b).tolist() == [[exact - 2**32]]
    assert R.can_overflow(b, np.int8(0), "uint8", np.uint8(0))


def test_accumulator_bound_threshold():
    per_k = 255 * 127
    k_max = INT32_MAX // per_k
    for K, overflows in ((k_max, False), (k_max + 1, True)):
        b = np.full((K, 2), 127, np.int8)
        assert R.accumulator_bound(b, np.int8(0), "uint8", np.uint8(0)).tolist() == [K * per_k] * 2
        assert R.can_overflow(b, np.int8(0), "uint8", np.uint8(0)) is overflows
        acc = R.matmul_integer(np.full((1, K), 255, np.uint8), b)
        assert (acc[0, 0] == K * per_k) is not overflows


def test_accumulator_bound_zero_points_and_bias():
    b = np.array([[1, -4], [-2, 5]], np.int8)
    zb = np.array([1, -1], np.int8)
    # |b - zb| column sums: [0 + 3, 3 + 6] = [3, 9]; int8 za = -28: max|a-za| = max(100, 155) = 155
    bias = np.array([-7, 2**31 - 1], np.int32)
    assert R.accumulator_bound(b, zb, "int8", np.int8(-28), bias).tolist() == [155 * 3 + 7, 155 * 9 + 2**31 - 1]
    assert R.can_overflow(b, zb, "int8", np.int8(-28), bias)
    assert not R.can_overflow(b, zb, "int8", np.int8(-28))
    # int4 activations: range [-8, 7], za = 0 -> max|a-za| = 8
    assert R.accumulator_bound(b, zb, "int4", 0).tolist() == [24, 72]


@HYP
@given(st.integers(1, 40), st.integers(1, 8), st.integers(0, 255), st.integers(-128, 127),
       st.integers(0, 2**32 - 1))
def test_zero_point_folding_is_order_independent(K, N, za, zb, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (3, K)).astype(np.uint8)
    b = rng.integers(-128, 128, (K, N)).astype(np.int8)
    A, B = a.astype(np.int64), b.astype(np.int64)
    folded = A @ B - zb * A.sum(1, keepdims=True) - za * B.sum(0) + K * za * zb
    assert np.array_equal(R.matmul_integer(a, b, np.uint8(za), np.int8(zb)), wrap32(folded))


def test_matmul_integer_batched_and_per_column_zp():
    a = np.array([[[1, 2]], [[3, 4]]], np.uint8)  # [2, 1, 2]
    b = np.array([[1, 2], [3, 4]], np.uint8)
    zb = np.array([1, 2], np.uint8)
    y = R.matmul_integer(a, b, np.uint8(1), zb)
    # (a - 1) @ (b - [1, 2]) = [[0,1]] @ [[0,0],[2,2]] = [2, 2]; [[2,3]] @ ... = [6, 6]
    assert y.dtype == np.int32 and y.tolist() == [[[2, 2]], [[6, 6]]]


# ---------------------------------------------------------------- validation

def test_validation_errors():
    a = np.zeros((2, 3), np.uint8)
    b = np.zeros((3, 4), np.int8)
    zy = np.uint8(0)
    with pytest.raises(ValueError, match="b_scale"):
        R.qlinear_matmul(a, 1.0, np.uint8(0), b, 0.0, np.int8(0), 1.0, zy)
    with pytest.raises(ValueError, match="a_scale"):
        R.qlinear_matmul(a, float("nan"), np.uint8(0), b, 1.0, np.int8(0), 1.0, zy)
    with pytest.raises(ValueError, match="y_scale"):
        R.qlinear_matmul(a, 1.0, np.uint8(0), b, 1.0, np.int8(0), float("inf"), zy)
    with pytest.raises(ValueError, match="b_scale"):
        R.qlinear_matmul(a, 1.0, np.uint8(0), b, np.ones(3, np.float32), np.int8(0), 1.0, zy)
    with pytest.raises(ValueError, match="a_zero_point"):
        R.qlinear_matmul(a, 1.0, 300, b, 1.0, np.int8(0), 1.0, zy)
    with pytest.raises(TypeError, match="a_zero_point"):
        R.qlinear_matmul(a, 1.0, np.int8(0), b, 1.0, np.int8(0), 1.0, zy)
    with pytest.raises(TypeError, match="y_zero_point"):
        R.qlinear_matmul(a, 1.0, np.uint8(0), b, 1.0, np.int8(0), 1.0, 0)
    with pytest.raises(TypeError, match="a must"):
        R.qlinear_matmul(a.astype(np.int32), 1.0, 0, b, 1.0, np.int8(0), 1.0, zy)
    with pytest.raises(ValueError, match="inner dimensions"):
        R.matmul_integer(a, np.zeros((4, 4), np.int8))
    with pytest.raises(TypeError, match="bias"):
        R.qlinear_matmul(a, 1.0, np.uint8(0), b, 1.0, np.int8(0), 1.0, zy, bias=np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="bias"):
        R.qlinear_matmul(a, 1.0, np.uint8(0), b, 1.0, np.int8(0), 1.0, zy, bias=np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="mode"):
        R.qlinear_matmul(a, 1.0, np.uint8(0), b, 1.0, np.int8(0), 1.0, zy, mode="q15")
    with pytest.raises(ValueError, match="int32"):
        requantize(np.array([2**31]), derive_requant("fp32", 1.0, 1.0, 1.0), 0, -128, 127)
    with pytest.raises(ValueError, match="lo"):
        requantize(np.array([1]), derive_requant("fp32", 1.0, 1.0, 1.0), 0, 5, 4)


# ---------------------------------------------------------------- quantize / dequantize (section 5)

TIES = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5], np.float32)


@pytest.mark.parametrize("rule,expected", [
    ("onnx", [0, 2, 2, 0, -2, -2]),
    ("torch", [0, 2, 2, 0, -2, -2]),
    ("tflite", [1, 2, 3, -1, -2, -3]),
])
def test_quantize_ties(rule, expected):
    assert R.quantize_linear(TIES, 1.0, np.int8(0), rule=rule).tolist() == expected
    # the zero point is added after rounding: zp = 1 shifts the result, not the tie
    assert R.quantize_linear(TIES, 1.0, np.int8(1), rule=rule).tolist() == [v + 1 for v in expected]


def test_quantize_fbgemm_reciprocal_counterexample():
    s, x = np.float32(0.00214854861), np.float32(0.273939937)
    assert x / s < 127.5 and x * (np.float32(1) / s) == 127.5
    assert R.quantize_linear(x, s, np.uint8(0), rule="onnx") == 127
    assert R.quantize_linear(x, s, np.uint8(0), rule="tflite") == 127
    assert R.quantize_linear(x, s, np.uint8(0), rule="torch") == 128
    assert R.quantize_linear(x, s, np.uint8(0)).shape == ()


def test_quantize_saturation_nan_and_dtypes():
    x = np.array([-np.inf, -1e30, 1e30, np.inf], np.float32)
    assert R.quantize_linear(x, 0.1, np.int8(5)).tolist() == [-128, -128, 127, 127]
    assert R.quantize_linear(x, 0.1, None).dtype == np.uint8  # ONNX default
    assert R.quantize_linear(x, 0.1, 3, dtype="int4").tolist() == [-8, -8, 7, 7]
    assert R.quantize_linear(np.array([7.4, -0.2], np.float32), 1.0, 0, dtype="uint4").tolist() == [7, 0]
    with pytest.raises(ValueError, match="NaN"):
        R.quantize_linear(np.array([1.0, np.nan], np.float32), 0.1, np.int8(0))
    with pytest.raises(TypeError, match="dtype"):
        R.quantize_linear(np.array([1.0], np.float32), 0.1, 0)
    with pytest.raises(ValueError, match="zero_point"):
        R.quantize_linear(np.array([1.0], np.float32), 0.1, 9, dtype="int4")


def test_quantize_per_channel_last_axis():
    x = np.array([[1.0, 1.0], [2.0, -2.0]], np.float32)
    q = R.quantize_linear(x, np.array([0.5, 0.25], np.float32), np.array([0, 1], np.int8))
    assert q.tolist() == [[2, 5], [4, -7]]


def test_dequantize():
    q = np.array([0, 255, 128], np.uint8)
    x = R.dequantize_linear(q, np.float32(0.1), np.uint8(128))
    assert x.dtype == np.float32
    assert x.tolist() == [np.float32(-128) * np.float32(0.1), np.float32(127) * np.float32(0.1), 0.0]
    # int32 (bias): zp 0; fl32 of a large difference rounds to nearest even
    assert R.dequantize_linear(np.array([2**24 + 1], np.int32), 1.0).tolist() == [2.0**24]


@HYP
@given(st.lists(st.floats(-300, 300, width=32), min_size=1, max_size=16),
       st.floats(2**-10, 10, width=32), st.integers(-128, 127))
def test_quantize_onnx_rule_matches_formula(xs, s, zp):
    x = np.array(xs, np.float32)
    q = R.quantize_linear(x, s, np.int8(zp), rule="onnx")
    ref = np.clip(np.rint(x / np.float32(s)).astype(np.int64) + zp, -128, 127)
    assert q.tolist() == ref.tolist()
    # dequantize then quantize again is the identity on the grid
    assert R.quantize_linear(R.dequantize_linear(q, s, np.int8(zp)), s, np.int8(zp)).tolist() == q.tolist()


# ---------------------------------------------------------------- int4 packing (section 1.2)

def test_int4_layout():
    assert R.pack_int4(np.array([1, 2, 3]), signed=False).tolist() == [0x21, 0x03]
    assert R.pack_int4(np.array([-1, -8]), signed=True).tolist() == [0x8F]
    assert R.pack_int4(np.array([[1, 2], [3, 4]]), signed=True).tolist() == [0x21, 0x43]  # row-major
    with pytest.raises(ValueError, match="values"):
        R.pack_int4(np.array([8]), signed=True)
    with pytest.raises(ValueError, match="count"):
        R.unpack_int4(np.array([0x21], np.uint8), 3, signed=False)


@HYP
@given(st.booleans(), st.lists(st.integers(0, 15), min_size=0, max_size=33))
def test_int4_round_trip(signed, raw):
    vals = np.array([v - 8 if signed else v for v in raw], np.int64)
    packed = R.pack_int4(vals, signed)
    assert packed.dtype == np.uint8 and packed.size == (len(raw) + 1) // 2
    if len(raw) % 2:
        assert packed[-1] >> 4 == 0  # zero padding nibble
    out = R.unpack_int4(packed, len(raw), signed)
    assert out.dtype == (np.int8 if signed else np.uint8)
    assert out.tolist() == vals.tolist()


# ---------------------------------------------------------------- ONNX Runtime (fp32 mode)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ONNX_TYPES = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
              np.dtype(np.int32): TensorProto.INT32}


def _session(op, inputs, initializers, out_dtype, out_shape):
    """One-node model: `inputs` are (name, array) graph inputs, `initializers` (name, array)."""
    names = [n for n, _ in inputs] + [n for n, _ in initializers]
    node = helper.make_node(op, names, ["y"])
    graph = helper.make_graph(
        [node], op,
        [helper.make_tensor_value_info(n, ONNX_TYPES[v.dtype], list(v.shape)) for n, v in inputs],
        [helper.make_tensor_value_info("y", ONNX_TYPES[np.dtype(out_dtype)], list(out_shape))],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _vnni_or_not_avx2():
    """Without VNNI, MLAS u8s8 on AVX2 uses VPMADDUBSW, which saturates int16 pair sums."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return True
    return "vnni" in flags or " avx2" not in flags


def _random_case(rng, a_dt, b_dt, M, K, N, per_column):
    ai, bi = np.iinfo(a_dt), np.iinfo(b_dt)
    a = rng.integers(ai.min, ai.max + 1, (M, K)).astype(a_dt)
    b_lo, b_hi = bi.min, bi.max
    if a_dt == np.uint8 and b_dt == np.int8 and not _vnni_or_not_avx2():
        b_lo, b_hi = -64, 63
    b = rng.integers(b_lo, b_hi + 1, (K, N)).astype(b_dt)
    za = a_dt(rng.integers(ai.min, ai.max + 1))
    zb = b_dt(rng.integers(b_lo, b_hi + 1))
    sa = np.float32(rng.uniform(1e-3, 0.1))
    sb = rng.uniform(1e-3, 0.1, N if per_column else None)
    sb = np.asarray(sb, np.float32)
    # choose y_scale / y_zero_point so outputs spread over the range instead of saturating:
    # |acc| * S <= ~100 and the centre of the accumulators lands mid-range
    acc = R.matmul_integer(a, b, za, zb).astype(np.float64)
    S = 100.0 / max(np.abs(acc).max(), 1.0) * rng.uniform(0.8, 1.2)
    sy = np.float32(float(sa) * float(np.max(sb)) / S)
    centre = (acc.max() + acc.min()) / 2 * S
    zy = a_dt(np.clip(round((ai.min + ai.max) / 2 - centre), ai.min, ai.max))
    return a, sa, za, b, sb, zb, sy, zy


SHAPES = [(1, 1, 1), (1, 1, 7), (1, 16, 3), (4, 1, 5), (5, 37, 19), (16, 64, 32), (33, 200, 17)]


@pytest.mark.parametrize("a_dt,b_dt", [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8)])
@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("per_column", [False, True])
def test_ort_qlinear_matmul_fp32(a_dt, b_dt, M, K, N, per_column):
    rng = np.random.default_rng([M, K, N, per_column, np.dtype(a_dt).num, np.dtype(b_dt).num])
    a, sa, za, b, sb, zb, sy, zy = _random_case(rng, a_dt, b_dt, M, K, N, per_column)
    sess = _session("QLinearMatMul", [("a", a)],
                    [("a_scale", sa), ("a_zero_point", za), ("b", b), ("b_scale", sb),
                     ("b_zero_point", zb), ("y_scale", sy), ("y_zero_point", zy)], a_dt, (M, N))
    got = sess.run(None, {"a": a})[0]
    ref = R.qlinear_matmul(a, sa, za, b, sb, zb, sy, zy, mode="fp32")
    assert ref.dtype == got.dtype
    np.testing.assert_array_equal(got, ref)
    if M * N >= 50:
        assert np.unique(ref).size > 5  # the case really exercises the rounding


@pytest.mark.parametrize("a_dt", [np.uint8, np.int8])
def test_ort_qlinear_matmul_ties_to_even(a_dt):
    # S = 1/2 and 1/4 exactly: every odd accumulator is a tie; ORT must round to even
    K = 1
    a = np.arange(-40, 41, dtype=np.int64).reshape(-1, 1)
    a = (a + (128 if a_dt == np.uint8 else 0)).astype(a_dt)
    za = a_dt(128 if a_dt == np.uint8 else 0)
    b = np.ones((K, 2), np.int8) if a_dt == np.int8 else np.ones((K, 2), np.uint8)
    zb = b.dtype.type(0)
    for sy in (np.float32(2.0), np.float32(4.0)):
        sess = _session("QLinearMatMul", [("a", a)],
                        [("a_scale", np.float32(1)), ("a_zero_point", za), ("b", b),
                         ("b_scale", np.float32(1)), ("b_zero_point", zb),
                         ("y_scale", sy), ("y_zero_point", za)], a_dt, a.shape[:1] + (2,))
        got = sess.run(None, {"a": a})[0]
        ref = R.qlinear_matmul(a, 1.0, za, b, 1.0, zb, sy, za, mode="fp32")
        np.testing.assert_array_equal(got, ref)
        exact = np.arange(-40, 41) / float(sy)
        assert np.array_equal(ref[:, 0].astype(np.int64) - int(za), np.rint(exact).astype(np.int64))


@pytest.mark.parametrize("a_dt,b_dt", [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8),
                                       (np.int8, np.uint8)])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (3, 50, 7), (16, 257, 33)])
@pytest.mark.parametrize("per_column_zp", [False, True])
def test_ort_matmul_integer(a_dt, b_dt, M, K, N, per_column_zp):
    rng = np.random.default_rng([M, K, N, per_column_zp, np.dtype(a_dt).num, np.dtype(b_dt).num])
    ai, bi = np.iinfo(a_dt), np.iinfo(b_dt)
    a = rng.integers(ai.min, ai.max + 1, (M, K)).astype(a_dt)
    b = rng.integers(bi.min, bi.max + 1, (K, N)).astype(b_dt)
    za = a_dt(rng.integers(ai.min, ai.max + 1))
    zb = rng.integers(bi.min, bi.max + 1, N if per_column_zp else None)
    zb = np.asarray(zb).astype(b_dt)
    sess = _session("MatMulInteger", [("a", a), ("b", b)],
                    [("a_zero_point", za), ("b_zero_point", zb)], np.int32, (M, N))
    got = sess.run(None, {"a": a, "b": b})[0]
    np.testing.assert_array_equal(got, R.matmul_integer(a, b, za, zb))


@pytest.mark.parametrize("a_dt", [np.uint8, np.int8])
def test_ort_qlinear_matmul_fp32_where_alternatives_differ(a_dt):
    """Accumulators chosen where fp32 mode differs from the near-miss alternatives
    (the product in float64, as the ONNX reference evaluator does, or S in double):
    random inputs almost never hit them, so ORT could agree with either by chance."""
    qmin, qmax = np.iinfo(a_dt).min, np.iinfo(a_dt).max
    w = qmax  # b column [1, w]: acc = a0 + w * a1 covers a contiguous range
    acc_all = np.arange(qmin + w * qmin, qmax + w * qmax + 1)
    a1_all = np.clip(np.floor_divide(acc_all - qmin, w), qmin, qmax)
    a0_all = acc_all - w * a1_all
    ok = (a0_all >= qmin) & (a0_all <= qmax)
    acc_all, a0_all, a1_all = acc_all[ok], a0_all[ok], a1_all[ok]
    rng = np.random.default_rng(7)
    picked, sa, sb, sy = [], np.float32(1), np.float32(1), np.float32(1)
    for _ in range(200):
        sa, sb = np.float32(rng.uniform(0.5, 2)), np.float32(rng.uniform(0.5, 2))
        sy = np.float32(float(sa) * float(sb) * np.abs(acc_all).max() / (qmax - 1) * rng.uniform(1, 1.5))
        S = (sa * sb) / sy
        y32 = np.rint(acc_all.astype(np.float32) * S)
        y64 = np.rint(acc_all * np.float64(S))  # onnx_ref: f64(acc) * f64(S_f32)
        yd = np.rint(acc_all * (float(sa) * float(sb) / float(sy)))  # S in double
        picked = np.flatnonzero((y32 != y64) | (y32 != yd))
        if (y32 != y64).any() and (y32 != yd).any():
            break
    assert (y32 != y64).any() and (y32 != yd).any()
    acc = acc_all[picked]
    a = np.stack([a0_all[picked], a1_all[picked]], axis=1).astype(a_dt)
    b = np.array([[1], [w]], dtype=a_dt)
    z = a_dt(0)
    assert np.array_equal(R.matmul_integer(a, b, z, z)[:, 0], acc)
    sess = _session("QLinearMatMul", [("a", a)],
                    [("a_scale", sa), ("a_zero_point", z), ("b", b), ("b_scale", sb),
                     ("b_zero_point", z), ("y_scale", sy), ("y_zero_point", z)], a_dt, (len(acc), 1))
    got = sess.run(None, {"a": a})[0]
    np.testing.assert_array_equal(got, R.qlinear_matmul(a, sa, z, b, sb, z, sy, z, mode="fp32"))
