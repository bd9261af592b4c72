"""_core.derive_requant equals reference.derive_requant (docs/semantics.md 4.1, 4.2, 4.5),
including the edge cases of QuantizeMultiplier and the rejections.

_core returns per-channel arrays expanded to n entries: scale (fp32, pot),
multiplier and shift (q31 modes; shift holds the right shift rs for pot).
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import pyqinfer.reference as R
from pyqinfer import _core

MODES = R.MODES


def f32(v):
    return np.float32(v)


def derive_both(mode, x, w, y):
    """(reference params or ValueError, core params or ValueError) for float32 x, w[], y."""
    w = np.atleast_1d(np.asarray(w, np.float32))
    n = len(w)
    out = []
    for fn in (lambda: R.derive_requant(mode, x, w if n > 1 else w[0], y),
               lambda: _core.derive_requant(mode, float(x), np.ascontiguousarray(w), float(y), n)):
        try:
            out.append(fn())
        except ValueError as e:
            out.append(e)
    return out


def assert_same(mode, x, w, y):
    """Both reject, or both accept with identical parameters. Returns the reference params (or None)."""
    ref, core = derive_both(mode, x, w, y)
    args = f"mode={mode} x={x!r} w={w!r} y={y!r}"
    assert isinstance(ref, ValueError) == isinstance(core, ValueError), f"{args}: reference {ref!r} vs core {core!r}"
    if isinstance(ref, ValueError):
        return None
    n = len(np.atleast_1d(w))
    assert core.mode == mode
    if mode in ("fp32", "pot"):
        want = np.broadcast_to(ref.scale, (n,)).astype(np.float32)
        got = np.asarray(core.scale, np.float32)
        assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist(), f"{args}: S {got} vs {want}"
    if mode == "pot":
        assert np.asarray(core.shift).tolist() == np.broadcast_to(ref.right_shift, (n,)).tolist(), args
    if mode in ("q31", "q31_single"):
        assert np.asarray(core.multiplier).tolist() == np.broadcast_to(ref.multiplier, (n,)).tolist(), args
        assert np.asarray(core.shift).tolist() == np.broadcast_to(ref.shift, (n,)).tolist(), args
    return ref


# float32 scales: anything positive and finite (tiny, subnormal, huge), near 1, or powers of two.
any_scale = st.floats(min_value=float(np.finfo(np.float32).smallest_subnormal),
                      max_value=float(np.finfo(np.float32).max),
                      width=32, allow_subnormal=True)
near_one = st.integers(-(2 ** 10), 2 ** 10).map(lambda i: f32(1 + i * 2.0 ** -23))
power_of_two = st.integers(-149, 127).map(lambda e: f32(math.ldexp(1.0, e)))
useful = st.floats(min_value=float(f32(1e-12)), max_value=1000.0, width=32)
scales = st.one_of(any_scale, near_one, power_of_two, useful, st.sampled_from([1e-30, 1e-38, 1e30, 0.1, 3.0]))


@settings(max_examples=max(1000, settings.default.max_examples))
@given(mode=st.sampled_from(MODES), x=scales, y=scales, w=st.lists(scales, min_size=1, max_size=5))
def test_derivation_matches_reference(mode, x, w, y):
    assert_same(mode, f32(x), np.array(w, np.float32), f32(y))


@given(mode=st.sampled_from(MODES), x=st.one_of(near_one, useful), y_exp=st.integers(-60, 40),
       w_exps=st.lists(st.integers(-60, 40), min_size=1, max_size=4))
def test_power_of_two_ratios(mode, x, y_exp, w_exps):
    """S = 2^(sum of exponents) exactly: pot accepts, q31 gives m = 2^30 (or 0 / rejection at the ends)."""
    w = np.array([math.ldexp(1.0, e) for e in w_exps], np.float32)
    y = f32(x * f32(math.ldexp(1.0, y_exp)))
    ref = assert_same(mode, f32(x), w, y)
    if mode == "pot":
        assert ref is not None and ref.right_shift.tolist() == [y_exp - e for e in w_exps]


@given(i=st.integers(1, 128), k=st.integers(-29, 30), mode=st.sampled_from(["q31", "q31_single"]))
def test_mantissa_rounds_up_to_2_pow_31(i, k, mode):
    """x = 1 - a, w = 1 + a (a = i*2^-23 <= 2^-16, both exact in float32), y = 2^-k:
    M = (1 - a^2) 2^k, and q*2^31 >= 2^31 - 1/2 rounds (half away from zero) to 2^31."""
    a = i * 2.0 ** -23
    x, w, y = f32(1 - a), f32(1 + a), f32(math.ldexp(1.0, -k))
    ref = assert_same(mode, x, np.array([w]), y)
    if k + 1 <= 30:
        assert ref.multiplier.tolist() == [2 ** 30] and ref.shift.tolist() == [k + 1]
    else:
        assert ref is None


@pytest.mark.parametrize("mode", ["q31", "q31_single"])
def test_quantize_multiplier_edges(mode):
    # semantics 4.2: (1 - 2^-17)(1 + 2^-17) = 1 - 2^-34 -> (2^30, 1)
    ref = assert_same(mode, f32(1 - 2 ** -17), np.array([1 + 2 ** -17], np.float32), f32(1))
    assert (ref.multiplier.tolist(), ref.shift.tolist()) == ([2 ** 30], [1])
    # M = 2^-32 -> (2^30, -31); M = 2^-33 -> (0, 0); tiny scales -> 0
    ref = assert_same(mode, f32(2 ** -16), np.array([2 ** -16], np.float32), f32(1))
    assert (ref.multiplier.tolist(), ref.shift.tolist()) == ([2 ** 30], [-31])
    for x, w, y in ((2 ** -16, 2 ** -17, 1), (1e-30, 1e-30, 1), (1e-30, 1.0, 3e38)):
        ref = assert_same(mode, f32(x), np.array([w], np.float32), f32(y))
        assert (ref.multiplier.tolist(), ref.shift.tolist()) == ([0], [0])
    # just below 2^30 is still accepted; 2^30 - 1/4 and above are rejected
    ref = assert_same(mode, f32(2 ** 29), np.array([1.5], np.float32), f32(1))
    assert ref.shift.tolist() == [30]
    for x, w in ((2 ** 15, 2 ** 15), (2 ** 15 * (1 - 2 ** -17), 2 ** 15 * (1 + 2 ** -17)), (1e30, 1e30)):
        assert assert_same(mode, f32(x), np.array([w], np.float32), f32(1)) is None


def test_rejections_agree_with_reasons():
    """Both reject with ValueError: q31 too large, pot not a power of two (any channel), fp32/pot overflow."""
    cases = [
        ("q31", 2.0 ** 15, [1.0, 2.0 ** 15], 1.0, None),
        ("q31_single", 1e20, [1.0], 1e-20, None),
        ("pot", 3.0, [1.0], 1.0, None),
        ("pot", 1.0, [0.5, 0.25, 0.3], 1.0, "channel 2"),
        ("fp32", 1e30, [1e30], 1.0, None),
        ("pot", 1e30, [1e30], 1.0, None),
        ("fp32", 1.0, [1.0], 1e-45, None),  # 1 / smallest subnormal overflows float32
    ]
    for mode, x, w, y, text in cases:
        ref, core = derive_both(mode, f32(x), np.array(w, np.float32), f32(y))
        assert isinstance(ref, ValueError) and isinstance(core, ValueError), (mode, x, w, y, ref, core)
        if text:
            assert text in str(core) and text in str(ref)


def test_fp32_underflow_is_accepted_and_equal():
    """S that underflows to a subnormal or to 0 is valid for fp32 (semantics 4.1)."""
    ref = assert_same("fp32", f32(1e-30), np.array([1e-30, 1e-10, 1.0], np.float32), f32(1.0))
    assert ref.scale[0] == 0 and 0 < ref.scale[1] < np.finfo(np.float32).tiny


def test_unknown_mode_and_bad_w_scale_rejected():
    w = np.array([1.0], np.float32)
    with pytest.raises(ValueError, match="mode"):
        _core.derive_requant("q15", 1.0, w, 1.0, 1)
    with pytest.raises(ValueError, match="mode"):
        R.derive_requant("q15", 1.0, 1.0, 1.0)
    with pytest.raises((ValueError, TypeError), match="w_scale"):
        _core.derive_requant("fp32", 1.0, np.array([1.0]), 1.0, 1)  # float64
    with pytest.raises(ValueError, match="w_scale"):
        _core.derive_requant("fp32", 1.0, np.ones(3, np.float32), 1.0, 2)  # neither 1 nor n entries
