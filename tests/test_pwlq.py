"""PWLQ weights (docs/semantics.md §14): the encoder vs a float32 transcription of jun-fang/PWLQ's
code, the level count, the four-GEMM execution against exact rationals, and errors."""
from fractions import Fraction as F

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyqinfer.reference import pwlq

f32 = np.float32


# jun-fang/PWLQ quant/uniform.py + pwlq.py (pw_opt=2), transcribed to numpy float32: a tensor
# divided by a Python float is a float32 division by the float's float32 rounding (torch).
def uniform_symmetric(x, bits, maxv):
    maxv = float(maxv)
    minv = -maxv
    scale = f32((maxv - minv) / (2 ** bits - 1))
    x = np.clip(x, f32(minv), f32(maxv))
    xi = np.rint(x / scale)
    xq = np.clip(xi, -(2 ** bits) / 2, 2 ** bits / 2 - 1)
    return xq, xq * scale


def uniform_affine(x, bits, minv, maxv):
    minv, maxv = float(minv), float(maxv)
    scale = f32((maxv - minv) / (2 ** bits - 1))
    offset = f32(minv)
    x = np.clip(x, f32(minv), f32(maxv))
    xi = np.rint((x - offset) / scale)
    xq = np.clip(xi, 0, 2 ** bits - 1)
    return xq, xq * scale + offset


def pwlq_code(w, bits, m, p):
    qn, dn = uniform_affine(w, bits - 1, -m, -p)
    qp, dp = uniform_affine(w, bits - 1, p, m)
    qc, dc = uniform_symmetric(w, bits, p)
    q = np.where(-p < w, qc, qn)
    q = np.where(p > w, q, qp)
    d = np.where(-p < w, dc, dn)
    d = np.where(p > w, d, dp)
    return q, d


@settings(max_examples=40)
@given(bits=st.integers(2, 8), seed=st.integers(0, 2 ** 32 - 1), ratio=st.floats(0.05, 0.95))
def test_encoder_matches_the_code(bits, seed, ratio):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((64, 3)) * rng.uniform(0.01, 3)).astype(f32)
    m = np.abs(w).max(axis=0)
    p = (m * f32(ratio)).astype(f32)
    w[0] = p                                   # region boundaries exactly
    w[1] = -p
    c = pwlq.pwlq_encode(w, bits, p=p, m=m)
    for n in range(3):
        q, d = pwlq_code(w[:, n], bits, m[n], p[n])
        assert np.array_equal(c.q[:, n].astype(np.float64), q.astype(np.float64))
        # the code's float32 dequantization is the float32 rounding of the exact level, up to
        # its own double rounding (q * s, then + offset)
        lv = c.levels_exact()[:, n]
        for k in range(64):
            assert abs(F(float(d[k])) - lv[k]) <= abs(lv[k]) * F(1, 2 ** 22) + F(float(m[n])) / 2 ** 22
    assert c.s_c[0] == f32(2.0 * float(p[0]) / (2 ** bits - 1))


def test_level_count_and_regions():
    w = np.linspace(-1, 1, 20001, dtype=f32)[:, None]
    c = pwlq.pwlq_encode(w, 4, p=np.float32(0.3), m=np.float32(1.0))
    lv = set(c.levels_exact()[:, 0].tolist())
    assert len(lv) == 31                                    # 15 centre + 8 + 8 tail levels (note §4)
    assert set(c.q[c.region == 0].tolist()) == set(range(-7, 8))
    assert set(c.q[c.region > 0].tolist()) == set(range(8))
    r = c.region[:, 0]
    assert r[w[:, 0] == f32(0.3)].tolist() == [1] and r[w[:, 0] == f32(-0.3)].tolist() == [2]
    # centre step 2p/15 (the code), not p/7 (the paper)
    assert c.s_c[0] == f32(2 * float(f32(0.3)) / 15) != f32(float(f32(0.3)) / 7)


def test_breakpoint_formula():
    # max / std close to 5 -> p = ln(0.86143114 * 5 + 0.6079) std = 1.59 std (note §4)
    w = np.where(np.arange(1000) % 2 == 0, 1.0, -1.0)[:, None]
    w[0] = 5.0
    std = w.std(ddof=1) + 1e-12
    mt = 5.0 / std
    assert 4.9 < mt < 5.0
    p = pwlq.pwlq_breakpoint(w)[0]
    assert p == f32(np.log(0.86143114 * mt + 0.607901097496529) / mt * 5.0)
    assert 1.55 < float(p) / std < 1.65
    pl = pwlq.pwlq_breakpoint(w, "laplace")[0]
    assert pl == f32((0.80304483 * np.sqrt(mt) - 0.3166785508381478) / mt * 5.0)


@settings(max_examples=30)
@given(data=st.data())
def test_linear_is_four_gemms_and_the_fixed_combine(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    M, K, N = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 12)), data.draw(st.integers(1, 3))
    bits = data.draw(st.integers(2, 8))
    w = rng.standard_normal((K, N)).astype(f32)
    w[0] = np.where(w[0] == 0, 1, w[0])
    m = np.abs(w).max(axis=0)
    p = (m * f32(data.draw(st.floats(0.1, 0.9)))).astype(f32)
    c = pwlq.pwlq_encode(w, bits, p=p, m=m)
    xdt = data.draw(st.sampled_from(["int8", "uint8"]))
    lo, hi = (-128, 127) if xdt == "int8" else (0, 255)
    x = rng.integers(lo, hi + 1, (M, K)).astype(xdt)
    za = np.asarray(int(rng.integers(lo, hi + 1)), dtype=xdt)
    bias = rng.integers(-1000, 1000, N).astype(np.int32)
    sx, sy = f32(0.02), f32(data.draw(st.sampled_from([0.01, 0.1, 0.37])))
    acc = pwlq.pwlq_accumulate(x, za, c, bias)
    lv = c.levels_exact()
    for i in range(M):
        for n in range(N):
            exact = sum((int(x[i, k]) - int(za)) * lv[k, n] for k in range(K))
            got = (F(float(c.s_c[n])) * (acc[0][i, n] - int(bias[n])) + F(float(c.s_t[n])) * acc[1][i, n]
                   + F(float(c.p[n])) * acc[2][i, n] - F(float(c.m[n])) * acc[3][i, n])
            assert got == exact
    y = pwlq.pwlq_linear(x, sx, za, c, sy, np.int8(-5), bias=bias)
    # the combine, element by element with float32 scalars
    for i in range(M):
        for n in range(N):
            Ms = [f32(f32(sx * s) / sy) for s in (c.s_c[n], c.s_t[n], c.p[n], c.m[n])]
            a = [f32(int(v[i, n])) for v in acc]
            f = f32(a[0] * Ms[0])
            f = f32(f + f32(a[1] * Ms[1]))
            f = f32(f + f32(a[2] * Ms[2]))
            f = f32(f - f32(a[3] * Ms[3]))
            want = min(max(-5 + int(np.rint(np.float64(f))), -128), 127)
            assert y[i, n] == want
            real = F(float(sx)) * (sum((int(x[i, k]) - int(za)) * lv[k, n] for k in range(K))
                                   + int(bias[n]) * F(float(c.s_c[n]))) / F(float(sy))
            if -120 < real - 5 < 120:
                assert abs(int(y[i, n]) - (-5) - real) <= 1            # float32 steps only


def test_errors():
    w = np.ones((4, 2), dtype=f32)
    with pytest.raises(ValueError, match="bits"):
        pwlq.pwlq_encode(w, 9, p=0.5)
    with pytest.raises(ValueError, match="0 < p < m"):
        pwlq.pwlq_encode(w, 4, p=1.0)
    with pytest.raises(ValueError, match="all-zero"):
        pwlq.pwlq_encode(np.zeros((4, 2)), 4, p=0.5)
    with pytest.raises(ValueError, match="NaN"):
        pwlq.pwlq_encode(np.full((4, 2), np.nan), 4, p=0.5)
    with pytest.raises(ValueError, match=r"\[K, N\]"):
        pwlq.pwlq_encode(np.ones(4), 4, p=0.5)
    with pytest.raises(ValueError, match="dist"):
        pwlq.pwlq_breakpoint(w, "cauchy")
    c = pwlq.pwlq_encode(np.array([[0.1, -1.0], [1.0, 0.4]], dtype=f32), 4, p=0.5)
    with pytest.raises(TypeError, match="y_zero_point"):
        pwlq.pwlq_linear(np.zeros((1, 2), np.int8), 1.0, 0, c, 1.0, 0)
    with pytest.raises(ValueError, match="overflows"):
        pwlq.pwlq_linear(np.zeros((1, 2), np.int8), 3e38, 0, c, 1e-38, np.int8(0))
