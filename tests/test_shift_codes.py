"""Shift codebooks (docs/semantics.md §12.5-12.10): level sets, exact encoding, terms, packing,
DeepShift fixed point and the reference layer.

pyqinfer.quant (vectorized float64 cutoffs) is checked against
pyqinfer.reference.shiftcodes (Fractions, one element at a time), and both against
independent re-implementations of the sources' formulas written here.
"""
import doctest
import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyqinfer.quant as quant
from pyqinfer.reference import (derive_requant, pack_int4, qlinear_matmul, requantize,
                                shift_accumulate, shift_decode)
from pyqinfer.reference import shiftcodes as ref

F = Fraction


# ---------------------------------------------------------------- source formulas
def build_power_value(B, additive=True):
    """yhhhli/APoT_Quantization quant_layer.py build_power_value, in Python floats (exact:
    every value is a short dyadic). Returns the normalized set as Fractions."""
    base_a, base_b, base_c = [0.], [0.], [0.]
    if additive:
        if B == 2:
            for i in range(3):
                base_a.append(2 ** (-i - 1))
        elif B == 4:
            for i in range(3):
                base_a.append(2 ** (-2 * i - 1))
                base_b.append(2 ** (-2 * i - 2))
        elif B == 6:
            for i in range(3):
                base_a.append(2 ** (-3 * i - 1))
                base_b.append(2 ** (-3 * i - 2))
                base_c.append(2 ** (-3 * i - 3))
        elif B == 3:
            for i in range(3):
                if i < 2:
                    base_a.append(2 ** (-i - 1))
                else:
                    base_b.append(2 ** (-i - 1))
                    base_a.append(2 ** (-i - 2))
        elif B == 5:
            for i in range(3):
                if i < 2:
                    base_a.append(2 ** (-2 * i - 1))
                    base_b.append(2 ** (-2 * i - 2))
                else:
                    base_c.append(2 ** (-2 * i - 1))
                    base_a.append(2 ** (-2 * i - 2))
                    base_b.append(2 ** (-2 * i - 3))
    else:
        for i in range(2 ** B - 1):
            base_a.append(2 ** (-i - 1))
    vals = {F(a) + F(b) + F(c) for a in base_a for b in base_b for c in base_c}
    m = max(vals)
    return sorted(v / m for v in vals), m


def apot_paper_levels(B, k):
    """Eq. 5 of the APoT paper by direct enumeration, normalized by gamma (top level 1)."""
    n = B // k
    sets = [[F(0)] + [F(2) ** -(i + j * n) for j in range(2 ** k - 1)] for i in range(n)]
    gamma_inv = sum(F(2) ** -i for i in range(n))
    return sorted({sum(p) / gamma_inv for p in itertools.product(*sets)})


def deepshift_cpu_linear(x, shift, sign, bias):
    """mostafaelhoushi/DeepShift shift_cpu.cpp linear_kernel on int32 (wrapping), weights [N, K]."""
    M, K = x.shape
    N = shift.shape[0]
    out = np.zeros((M, N), dtype=np.int32)
    with np.errstate(over="ignore"):
        for m in range(M):
            for n in range(N):
                y = np.int32(0)
                for k in range(K):
                    s, sg, xv = int(shift[n, k]), int(sign[n, k]), np.int32(x[m, k])
                    if sg < 0 and s >= 0:
                        y = np.int32(y - np.int32(xv << np.int32(s)))
                    elif sg > 0 and s >= 0:
                        y = np.int32(y + np.int32(xv << np.int32(s)))
                    elif sg < 0 and s < 0:
                        y = np.int32(y - (xv >> np.int32(-s)))
                    elif sg > 0 and s < 0:
                        y = np.int32(y + (xv >> np.int32(-s)))
                out[m, n] = np.int32(y + np.int32(bias[n]))
    return out


# ---------------------------------------------------------------- codebooks under test
CODEBOOKS = (
    [ref.pot_codebook(b, e_max=0, zero_code=z, signed=sg) for b in (2, 3, 4, 5)
     for z in (True, False) for sg in (True, False)]
    + [ref.pot_codebook(4, e_max=3, e_min=-2, zero_code=True)]
    + [ref.log_codebook(b, e_max=e, zero_code=z, base=base, signed=sg)
       for b, e in ((3, -1), (4, 2)) for z in (True, False) for base in (2, "sqrt2")
       for sg in (False, True)]
    + [ref.apot_codebook(b, construction="repo", signed=sg) for b in range(2, 8)
       for sg in (True, False) if not (b == 7 and not sg) and not (b == 2 and not sg)]
    + [ref.apot_codebook(b, construction="paper", k=k, signed=sg)
       for b, k, sg in ((5, 2, True), (4, 2, False), (3, 1, False), (4, 1, True), (6, 2, False),
                        (7, 2, True), (4, 3, True), (3, 3, False))]
)
CB_IDS = [f"{cb.name}-b{cb.bits}-{'s' if cb.signed else 'u'}-{i}" for i, cb in enumerate(CODEBOOKS)]


def roundings(cb):
    return ("linear",) if cb.log_pos is None else ("log", "linear")


# ---------------------------------------------------------------- level sets
@pytest.mark.parametrize("B", [2, 3, 4, 5, 6])
def test_apot_repo_levels_match_build_power_value(B):
    want, m = build_power_value(B, additive=True)
    assert quant.apot_levels(B, construction="repo", signed=False, exact=True) == want
    cb = ref.apot_codebook(B, construction="repo", signed=False)
    assert cb.norm == m == {2: F(1, 2), 3: F(5, 8), 4: F(3, 4), 5: F(25, 32), 6: F(7, 8)}[B]
    assert len(want) == 2 ** B                         # all term combinations distinct
    # weights: sign x B = bits - 1
    signed = quant.apot_levels(B + 1, construction="repo", signed=True, exact=True)
    assert signed == sorted({-v for v in want} | set(want))
    assert np.array_equal(quant.apot_levels(B, construction="repo", signed=False),
                          np.array([float(v) for v in want]))


def test_apot_paper_b4_example_and_repo_agreement():
    note = [F(0), F(1, 48), F(1, 24), F(1, 16), F(1, 12), F(1, 8), F(1, 6), F(3, 16), F(1, 4),
            F(1, 3), F(3, 8), F(1, 2), F(2, 3), F(11, 16), F(3, 4), F(1)]
    assert quant.apot_levels(4, signed=False, exact=True) == note
    assert quant.apot_levels(4, construction="repo", signed=False, exact=True) == note
    assert quant.apot_levels(5, signed=True, exact=True) == sorted({-v for v in note} | set(note))
    # the constructions differ for 3 and 5 magnitude bits
    for B in (3, 5):
        repo = quant.apot_levels(B, construction="repo", signed=False, exact=True)
        for k in (1, B):
            assert repo != apot_paper_levels(B, k)
    # 11/16 = (2^-1 + 2^-6) / (3/4): the repo code with a = 2^-1 (index 1), b = 2^-6 (index 3)
    cb = ref.apot_codebook(4, construction="repo", signed=False)
    code = 1 | (3 << 2)
    assert cb.fields[code] == (-1, -6)
    assert cb.value(code) / cb.norm == F(11, 16)


@pytest.mark.parametrize("B,k", [(2, 1), (2, 2), (3, 1), (3, 3), (4, 2), (4, 4), (6, 2), (6, 3),
                                 (6, 6)])
def test_apot_paper_levels_match_eq5(B, k):
    if B // k > 3:
        with pytest.raises(ValueError, match="n = B/k"):
            quant.apot_levels(B, k=k, signed=False)
        return
    assert quant.apot_levels(B, k=k, signed=False, exact=True) == apot_paper_levels(B, k)
    if k == B:           # k = b is PoT: {0} U {2^-j : j = 0 .. 2^B - 2}
        assert quant.apot_levels(B, k=k, signed=False, exact=True) == \
            quant.pot_levels(B, construction="repo", signed=False, exact=True)


@pytest.mark.parametrize("B", [2, 3, 4])
def test_pot_levels_match_build_power_value_non_additive(B):
    want, _ = build_power_value(B, additive=False)
    assert quant.pot_levels(B, construction="repo", signed=False, exact=True) == want
    assert quant.pot_levels(B + 1, construction="repo", signed=True, exact=True) == \
        sorted({-v for v in want} | set(want))
    if B == 3:
        assert want[1] == F(1, 64) and want[-2:] == [F(1, 2), F(1)]


def test_log_levels_presets_and_sqrt2():
    # Miyashita 'paper' preset, bw = 3, FSR = 0: {0} U {2^-7 .. 2^-1}
    kw, _ = ref.log_preset(3, 0, "paper")
    assert quant.log_levels(**kw, exact=True) == [F(0)] + [F(2) ** e for e in range(-7, 0)]
    kw, _ = ref.log_preset(3, 0, "quanttorch")
    assert kw["bits"] == 4 and quant.log_levels(**kw, exact=True) == \
        [F(2) ** e for e in range(-8, 1)]
    # base sqrt(2): even x~ = 2q -> 2^q, odd x~ = 2q + 1 -> 2^q + 2^(q-1) = 1.5 * 2^q
    lv = quant.log_levels(3, e_max=1, e_min=-4, base="sqrt2", exact=True)
    assert lv == [F(0), F(1, 4), F(3, 8), F(1, 2), F(3, 4), F(1), F(3, 2)]
    cb = ref.log_codebook(3, e_max=1, e_min=-4, base="sqrt2")
    assert cb.fields[6] == (0, -1) and cb.num_terms == 2


# ---------------------------------------------------------------- hand-computed examples
def test_miyashita_logquant_examples():
    # bw = 3, FSR = 0 (paper): exponents [-7, -1], below range -> 0, above -> 2^-1
    x = np.array([0.3, 0.9, 5.0, 0.005, 0.0055, 0.00553, 0.006, 0.0, -0.2])
    c = quant.miyashita_encode(x, 3, 0)
    assert c.dequantize().tolist() == [0.25, 0.5, 0.5, 0.0, 0.0, 2 ** -7, 2 ** -7, 0.0, 0.0]
    # 0.0055 < 2^-7.5 = 0.0055243 < 0.00553: the log-domain threshold, not 1.5 * 2^-8 = 0.00586
    assert 0.0055 < 2 ** -7.5 < 0.00553
    # QuantTorch clamp: [-8, 0], no zero
    c = quant.miyashita_encode(np.array([0.9, 0.001, 3.0]), 3, 0, preset="quanttorch")
    assert c.dequantize().tolist() == [1.0, 2 ** -8, 1.0]
    with pytest.raises(ValueError, match="exact 0"):
        quant.miyashita_encode(np.array([0.0]), 3, 0, preset="quanttorch")
    # base sqrt(2): x~ = Round(2 log2 x); 0.3 -> 2 log2 0.3 = -3.47 -> -3 = 2q+1, q = -2:
    # 1.5 * 2^-2 = 0.375 (hardware value of sqrt(2) * 2^-2 = 0.354)
    c = quant.miyashita_encode(np.array([0.3, 0.45, 0.6]), 3, 0, base="sqrt2")
    assert c.dequantize().tolist() == [0.375, 0.5, 0.75]


def test_deepshift_q_examples_and_float_formula():
    w = np.array([0.3, -0.7, 1e-5, 2.0, -0.35, 0.75], dtype=np.float32)
    c = quant.deepshift_q_encode(w, bits=5)
    assert c.dequantize().tolist() == [0.25, -0.5, 2.0 ** -15, 1.0, -0.25, 1.0]
    sg, ex, sh = c.terms("deepshift")
    assert sh == 0 and ex[0].tolist() == [-2, -1, -15, 0, -2, 0]
    # DeepShift's own float32 formula agrees away from the thresholds sqrt(2) * 2^n
    rng = np.random.default_rng(0)
    w = (rng.standard_normal(4000) * rng.choice([1e-4, 1e-2, 1.0], 4000)).astype(np.float32)
    w = w[w != 0]
    clamped = np.sign(w) * np.clip(np.abs(w), np.float32(2.0 ** -15), np.float32(1.0))
    p = np.round(np.log(np.abs(clamped)) / np.float32(np.log(2)))
    theirs = np.sign(clamped) * 2.0 ** p
    lg = np.log2(np.abs(w).astype(np.float64))
    far = np.abs(lg - np.floor(lg) - 0.5) > 1e-4
    assert far.sum() > 3500
    assert np.array_equal(quant.deepshift_q_encode(w[far]).dequantize(), theirs[far])


def test_deepshift_ps_codes():
    shift = np.array([-3.4, -3.5, -2.5, -20.0, 1.7, -0.2])
    sign = np.array([0.7, -0.6, 0.2, 1.0, -1.0, 0.5])
    c = quant.from_deepshift_ps(shift, sign, bits=5)          # shift_range [-14, 0], ternary
    # round half-even: -3.5 -> -4, -2.5 -> -2; sign(round(0.2)) = 0, sign(round(0.5)) = 0
    assert c.dequantize().tolist() == [2 ** -3, -(2 ** -4), 0.0, 2 ** -14, -1.0, 0.0]
    assert c.codebook.has_zero and c.codebook.desc["e_min"] == -14


def test_linear_and_log_rounding_ties():
    # PoT: linear threshold 1.5 * 2^n (tie -> smaller), log threshold sqrt(2) * 2^n
    x = np.array([0.75, np.nextafter(0.75, 1), 0.7071, 0.7072])
    lin = quant.pot_encode(x, 4, e_min=-4, rounding="linear").dequantize().tolist()
    log = quant.pot_encode(x, 4, e_min=-4, rounding="log").dequantize().tolist()
    assert lin == [0.5, 1.0, 0.5, 0.5] and log == [1.0, 1.0, 0.5, 1.0]
    # APoT repo B = 4 raw levels (scale 1): ties at 1/128 (0 vs 1/64) and 65/128 (1/2 vs 33/64)
    t = np.array([1 / 128, np.nextafter(1 / 128, 1), 65 / 128, np.nextafter(65 / 128, 1), -65 / 128])
    c = quant.apot_encode(t, 4, construction="repo", signed=False, scale=1.0)
    assert c.dequantize().tolist() == [0.0, 1 / 64, 0.5, 33 / 64, 0.0]
    c = quant.apot_encode(t, 5, construction="repo", signed=True, scale=1.0)
    assert c.dequantize().tolist() == [0.0, 1 / 64, 0.5, 33 / 64, -0.5]
    # 2-bit weights: the repo's round(clamp(w / alpha, -1, 1)) with torch.round (0.5 -> 0)
    c = quant.apot_encode(np.array([0.5, -0.5, 0.51, 3.0]), 2, construction="repo", alpha=1.0)
    assert c.dequantize().tolist() == [0.0, 0.0, 1.0, 1.0]


def test_apot_alpha_scale():
    w = np.array([[0.9, -3.0], [3.0, 0.01]], dtype=np.float32)
    c = quant.apot_encode(w, 5, construction="repo", alpha=3.0)
    assert c.scale == np.float32(3.0 / 0.75) and c.dequantize()[0, 1] == -3.0
    cpc = quant.apot_encode(w, 5, per_channel=True)
    assert cpc.scale.shape == (2,) and np.abs(cpc.dequantize()).max(axis=0).tolist() == [3.0, 3.0]
    # S = fl32(alpha / M), one rounding: alpha = 1 with M = 3/4 (repo) or 3/2 (paper, gamma)
    assert quant.apot_encode(w, 5, construction="repo", alpha=1.0).scale == np.float32(4 / 3)
    assert quant.apot_encode(w, 5, alpha=1.0).scale == np.float32(2 / 3)
    assert ref.apot_codebook(5).norm == F(3, 2)


# ---------------------------------------------------------------- exact encoder properties
def boundary_values(cb, S):
    """Floats at and next to every threshold, plus extremes."""
    mags = [cb.magnitude(f) for f in cb.sorted_fields]
    pts = [F(0)] + mags + [(a + b) / 2 for a, b in zip(mags[:-1], mags[1:])]
    out = []
    for p in pts:
        q = F(float(S)) * p
        v = float(q) if q < F(np.finfo(np.float64).max) else np.inf
        out += [v, float(np.nextafter(v, np.inf)), float(np.nextafter(v, -np.inf))]
        if cb.log_pos is not None and p > 0:
            for d in (-0.25, 0.25, -0.5):          # log thresholds (irrational)
                e2 = math.frexp(float(p))[1] if np.isfinite(float(p)) else 1024
                try:
                    g = math.ldexp(float(S) * (float(p) / 2.0 ** e2) * 2 ** d, e2)
                except OverflowError:
                    g = np.inf
                out += [g, float(np.nextafter(g, np.inf)), float(np.nextafter(g, -np.inf))]
    out += [1e30, np.inf, 1e-300, 5e-324]
    out = [v for v in out if v != 0 or cb.has_zero]
    return np.array(out + [-v for v in out])


@pytest.mark.parametrize("cb", CODEBOOKS, ids=CB_IDS)
def test_encode_matches_reference_at_thresholds(cb):
    S = np.float32(0.37) if cb.bits <= 5 else np.float32(1.0)
    x = boundary_values(cb, S)
    if not cb.has_zero:
        x = x[x > 0] if not cb.signed else x[x != 0]
    for rounding in roundings(cb):
        for underflow in (("round", "clamp") if cb.has_zero else ("round",)):
            got = quant.encode(x, cb, scale=S, rounding=rounding, underflow=underflow)
            want = ref.encode_exact(x, S, cb, rounding, underflow)
            assert np.array_equal(got.codes, want), (rounding, underflow)


@pytest.mark.parametrize("cb", CODEBOOKS, ids=CB_IDS)
def test_idempotent_terms_exact_and_packing(cb):
    codes = np.array(cb.valid_codes(), dtype=np.uint8)
    S = np.float32(0.75)
    c = quant.ShiftCodes(codes, cb, S)
    vals = c.values()
    # encode(decode(c)) == c in every domain and underflow rule
    for rounding in roundings(cb):
        for underflow in (("round", "clamp") if cb.has_zero else ("round",)):
            again = quant.encode(c.dequantize(), cb, scale=S, rounding=rounding, underflow=underflow)
            assert np.array_equal(again.codes, codes)
    # terms decode exactly to the values (Fractions), for both rules where allowed
    exact_vals = ref.values_exact(codes, cb)
    if cb.max_exponent - cb.min_exponent <= 30:
        s, e, sh = c.terms("exact")
        assert e.min() >= 0 and s.shape == (cb.num_terms, codes.size)
        dec = [sum(F(int(s[t, i])) * F(2) ** int(e[t, i]) for t in range(s.shape[0])) / F(2) ** sh
               for i in range(codes.size)]
        assert dec == list(exact_vals)
        if (e.astype(int) <= 30).all():
            assert [F(int(v)) / F(2) ** sh for v in shift_decode(s[:, :, None], e[:, :, None])[:, 0]] \
                == list(exact_vals)
        rs, re_, rsh = ref.codes_to_terms(codes, cb)
        assert np.array_equal(rs, s) and np.array_equal(re_, e) and rsh == sh
        assert c.effective_scale() == np.float32(0.75 * 2.0 ** -sh)
    assert [F(v) for v in vals] == list(exact_vals)
    assert sorted(set(vals.tolist())) == [float(v) for v in cb.levels()]
    assert np.array_equal(c.levels(), np.array(sorted(set(vals.tolist()))) * 0.75)
    # packing: the bit stream of the reference, and a round trip
    p = c.pack()
    assert np.array_equal(p, ref.pack_codes(codes, cb.bits))
    back = quant.unpack(p, codes.shape, cb, S)
    assert np.array_equal(back.codes, codes)
    assert np.array_equal(ref.unpack_codes(p, codes.size, cb.bits), codes)


@settings(max_examples=60)
@given(data=st.data())
def test_encode_matches_reference_random(data):
    cb = data.draw(st.sampled_from(CODEBOOKS))
    rounding = data.draw(st.sampled_from(roundings(cb)))
    underflow = data.draw(st.sampled_from(("round", "clamp") if cb.has_zero else ("round",)))
    n = data.draw(st.integers(1, 3))
    per_channel = data.draw(st.booleans())
    scale = (np.array(data.draw(st.lists(st.floats(1e-3, 1e3), min_size=n, max_size=n)),
                      dtype=np.float32) if per_channel else
             np.float32(data.draw(st.floats(1e-3, 1e3))))
    vals = data.draw(st.lists(st.floats(-1e4, 1e4, width=data.draw(st.sampled_from((32, 64)))),
                              min_size=n, max_size=4 * n))
    x = np.array(vals[: len(vals) // n * n] or vals[:1] * n).reshape(-1, n)
    if not cb.has_zero:
        x = np.where(x == 0, 1.0, x)
        if not cb.signed:
            x = np.abs(x) + 1e-6
    got = quant.encode(x, cb, scale=scale, rounding=rounding, underflow=underflow)
    want = ref.encode_exact(x, scale, cb, rounding, underflow)
    assert np.array_equal(got.codes, want)


@settings(max_examples=40)
@given(cb=st.sampled_from(CODEBOOKS), seed=st.integers(0, 2 ** 32 - 1))
def test_encode_monotone_and_clamped(cb, seed):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.standard_normal(200) * 10.0 ** rng.uniform(-4, 2, 200))
    if not cb.has_zero:
        x = x[x != 0] if cb.signed else np.abs(x[x > 0])
        x = np.sort(x)
    for rounding in roundings(cb):
        d = quant.encode(x, cb, scale=0.5, rounding=rounding).dequantize()
        assert np.all(np.diff(d) >= 0)                       # monotone
        top = 0.5 * float(cb.norm)
        big = quant.encode(np.array([1e6, np.inf] + ([-1e6, -np.inf] if cb.signed else [])),
                           cb, scale=0.5, rounding=rounding).dequantize()
        assert np.all(np.abs(big) == top)                     # exponents clamp to e_max
        assert np.all(np.abs(d) <= top)


def test_zero_code_and_underflow():
    cb = ref.pot_codebook(4, e_max=0, e_min=-3)
    x = np.array([0.0, -0.0, 1e-9, -1e-9, 0.08])
    assert quant.encode(x, cb).codes.tolist() == [0, 0, 0, 0, 0]        # 0.08 < 2^-3.5 = 0.088
    clamp = quant.encode(x, cb, underflow="clamp")
    assert clamp.dequantize().tolist() == [0.0, 0.0, 0.125, -0.125, 0.125]
    assert quant.encode(np.array([0.0625]), cb, rounding="linear").codes.tolist() == [0]  # tie
    # unsigned codes clamp negative inputs to zero
    u = ref.pot_codebook(3, e_max=0, e_min=-3, signed=False)
    assert quant.encode(np.array([-5.0, 0.3]), u).dequantize().tolist() == [0.0, 0.25]


# ---------------------------------------------------------------- packing specifics
def test_pack_4bit_is_onnx_nibble_order():
    cb = ref.pot_codebook(4, e_max=0)
    codes = np.array([[1, 2, 3], [15, 8 + 1, 0]], dtype=np.uint8)
    c = quant.ShiftCodes(codes, cb)
    assert np.array_equal(c.pack(), pack_int4(codes.reshape(-1), signed=False))
    assert c.pack().tolist() == [0x21, 0xF3, 0x09]
    cb2 = ref.pot_codebook(2, e_max=0, signed=False)
    c2 = quant.ShiftCodes(np.array([1, 2, 3, 0, 1], dtype=np.uint8), cb2)
    assert c2.pack().tolist() == [0b00111001, 0b01]
    with pytest.raises(ValueError, match="bytes"):
        quant.unpack(c2.pack()[:1], (5,), cb2)
    with pytest.raises(TypeError, match="packed"):
        quant.unpack(c2.pack().astype(np.int16), (5,), cb2)


# ---------------------------------------------------------------- layers
def _rational_layer(xq, za, sx, c):
    deq = ref.dequantize_exact(c.codes, c.scale, c.codebook)
    K, N = c.codes.shape
    return [[sum(F(int(xq[m, k]) - za) * F(float(sx)) * deq[k, n] for k in range(K))
             for n in range(N)] for m in range(xq.shape[0])]


@settings(max_examples=25)
@given(data=st.data())
def test_shift_linear_is_the_exact_float_layer(data):
    cb = data.draw(st.sampled_from([c for c in CODEBOOKS if c.signed
                                    and c.max_exponent - c.min_exponent <= 12]))
    M, K, N = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 6)), data.draw(st.integers(1, 3))
    seed = data.draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((K, N))
    pc = data.draw(st.booleans())
    scale = rng.uniform(0.01, 2, N).astype(np.float32) if pc else np.float32(0.3)
    rounding = data.draw(st.sampled_from(roundings(cb)))
    if not cb.has_zero:
        w = np.where(w == 0, 0.5, w)
    c = quant.encode(w, cb, scale=scale, rounding=rounding)
    xdt = data.draw(st.sampled_from(["int8", "uint8"]))
    lo, hi = (-128, 127) if xdt == "int8" else (0, 255)
    xq = rng.integers(lo, hi + 1, (M, K)).astype(xdt)
    za = int(rng.integers(lo, hi + 1))
    sx, sy = np.float32(0.05), np.float32(0.2)
    s, e, sh = c.terms()
    acc = shift_accumulate(xq, s, e, a_zero_point=za)
    exact = _rational_layer(xq, za, sx, c)
    seff = c.effective_scale()
    for m in range(M):
        for n in range(N):
            sn = seff[n] if np.ndim(seff) else seff
            assert F(int(acc[m, n])) * F(float(sx)) * F(float(sn)) == exact[m][n]
    for mode in ("fp32", "q31_single"):
        y = ref.shift_linear(xq, sx, za, c, sy, np.int8(3), mode=mode)
        want = requantize(acc, derive_requant(mode, sx, seff, sy), 3, -128, 127).astype(np.int8)
        assert np.array_equal(y, want)
        # the multiply path on the same codes: decoded integer weights through qlinear_matmul
        wint = shift_decode(s, e)
        if np.abs(wint).max() <= 127:
            y2 = qlinear_matmul(xq, sx, np.asarray(za, dtype=xdt), wint.astype(np.int8), seff, np.int8(0),
                                sy, np.int8(3), mode=mode)
            assert np.array_equal(y, y2)


def test_log_activations_times_log_weights_is_exponent_addition():
    rng = np.random.default_rng(5)
    a = quant.log_encode(np.abs(rng.standard_normal((3, 7))), 3, e_max=0)      # 2^-6 .. 1, zero
    w = quant.log_encode(rng.standard_normal((7, 4)), 4, e_max=0, signed=True)  # +-2^-6 .. 1, zero
    ai, a_scale = a.to_integers()
    assert ai.dtype == np.uint8 and ai.max() <= 64 and a_scale == np.float32(2.0 ** -6)
    s, e, sh = w.terms()
    acc = shift_accumulate(ai, s, e)
    # one-hot form: sum over k of +-2^(ta + tw), exponents added
    ta = a.codebook
    for m in range(3):
        for n in range(4):
            tot = 0
            for k in range(7):
                sa, fa = ta.split(a.codes[m, k])
                sw, fw = w.codebook.split(w.codes[k, n])
                if sa and sw:
                    (xa,), (xw,) = ta.fields[fa], w.codebook.fields[fw]
                    tot += sa * sw * (1 << (xa + 6 + xw + sh))
            assert acc[m, n] == tot
    # sqrt(2) activations need two terms: integers 2^q + 2^(q-1)
    b = quant.log_encode(np.array([[0.3, 0.7]]), 3, e_max=0, base="sqrt2")
    bi, bs = b.to_integers()
    assert (bi * float(bs)).tolist() == b.dequantize().tolist()


def test_deepshift_linear_matches_cpu_kernel():
    rng = np.random.default_rng(7)
    for trial in range(6):
        M, K, N = 2, 9, 3
        w = rng.standard_normal((K, N)).astype(np.float32)
        x = (rng.standard_normal((M, K)) * 4).astype(np.float32)
        bias = rng.standard_normal(N).astype(np.float32)
        c = quant.deepshift_q_encode(w, bits=5)
        for rounding in ("floor", "trunc"):
            xq = quant.to_fixed(x, rounding=rounding)
            bq = quant.to_fixed(bias, rounding=rounding)
            assert np.array_equal(xq, ref.to_fixed(x, rounding=rounding))
            s, e, _ = c.terms("deepshift")
            theirs = deepshift_cpu_linear(xq, e[0].T, s[0].T, bq)
            out = ref.deepshift_linear(x, c, bias, rounding=rounding)
            assert np.array_equal(out, theirs.astype(np.float32) / np.float32(65536))
    # floor vs truncation of the conversion, and DeepShift's clamp (2^15 - 1, not 2^31 - 1)
    v = np.array([-1.5 / 65536, 1.5 / 65536, 1e9, -1e9])
    assert quant.to_fixed(v).tolist() == [-2, 1, (2 ** 15 - 1) * 65536, -(2 ** 31)]
    assert quant.to_fixed(v[:2], rounding="trunc").tolist() == [-1, 1]
    with pytest.raises(ValueError, match="int32"):
        quant.to_fixed(v, rounding="trunc")
    # where DeepShift's int32 wraps, pyqinfer does not
    c = quant.ShiftCodes(np.array([[11]], dtype=np.uint8), ref.pot_codebook(5, e_max=15, e_min=0,
                                                                             zero_code=False))
    s, e, _ = c.terms("deepshift")
    xq = np.array([[2 ** 20]], dtype=np.int32)
    assert shift_accumulate(xq, s, e, rule="deepshift", acc_bits=32)[0, 0] == 2 ** 31 - 1
    assert deepshift_cpu_linear(xq, e[0].T, s[0].T, np.zeros(1, np.int32))[0, 0] == -(2 ** 31)


# ---------------------------------------------------------------- bad input
def test_bad_input_errors():
    cb = ref.pot_codebook(4, e_max=0)
    with pytest.raises(ValueError, match="not valid"):
        quant.ShiftCodes(np.array([8], dtype=np.uint8), cb)          # negative zero
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        quant.ShiftCodes(np.array([16]), cb)
    with pytest.raises(TypeError, match="codes"):
        quant.ShiftCodes(np.array([1.0]), cb)
    with pytest.raises(ValueError, match="NaN"):
        quant.pot_encode(np.array([np.nan]), 4)
    with pytest.raises(ValueError, match="exact 0"):
        quant.pot_encode(np.array([0.0, 1.0]), 4, zero_code=False)
    with pytest.raises(ValueError, match="exact 0"):
        quant.deepshift_q_encode(np.array([0.0]))
    with pytest.raises(ValueError, match="bits"):
        quant.pot_encode(np.array([1.0]), 9)
    with pytest.raises(ValueError, match="1000"):
        quant.pot_encode(np.array([1.0]), 4, e_max=-998)
    with pytest.raises(ValueError, match="do not fit"):
        quant.pot_encode(np.array([1.0]), 3, e_min=-5)
    with pytest.raises(ValueError, match="n = B/k"):
        quant.apot_encode(np.array([1.0]), 4, k=2)                  # B = 3
    with pytest.raises(ValueError, match="construction 'repo'"):
        quant.apot_levels(8, construction="repo")
    with pytest.raises(ValueError, match="construction"):
        quant.apot_levels(4, construction="nope")
    with pytest.raises(ValueError, match="linear domain"):
        quant.encode(np.array([1.0]), ref.apot_codebook(5), rounding="log")
    with pytest.raises(ValueError, match="rounding"):
        quant.pot_encode(np.array([1.0]), 4, rounding="nearest")
    with pytest.raises(ValueError, match="underflow"):
        quant.pot_encode(np.array([1.0]), 4, underflow="zero")
    with pytest.raises(ValueError, match="scale or alpha"):
        quant.pot_encode(np.array([1.0]), 4, scale=1.0, alpha=1.0)
    with pytest.raises(ValueError, match="scale"):
        quant.pot_encode(np.array([1.0]), 4, scale=-1.0)
    with pytest.raises(ValueError, match="per-channel"):
        quant.pot_encode(np.ones((2, 3)), 4, scale=np.ones(2))
    with pytest.raises(ValueError, match="per-channel"):
        quant.ShiftCodes(np.zeros((2, 3), dtype=np.uint8), cb, np.ones(2))
    with pytest.raises(TypeError, match="real"):
        quant.pot_encode(np.array(["a"]), 4)
    with pytest.raises(ValueError, match="deepshift"):
        quant.apot_encode(np.ones((2, 2)), 5).terms("deepshift")
    with pytest.raises(ValueError, match="30"):
        quant.ShiftCodes(np.array([1]), ref.pot_codebook(7, e_max=0, zero_code=False)).terms()
    with pytest.raises(ValueError, match="shape"):
        quant.from_deepshift_ps(np.zeros(2), np.zeros(3))
    with pytest.raises(TypeError, match="codebook"):
        quant.ShiftCodes(np.zeros(1, dtype=np.uint8), "pot")
    with pytest.raises(ValueError, match="normal float32"):
        quant.ShiftCodes(np.array([1]), ref.pot_codebook(4, e_max=0), np.float32(1e-38)).effective_scale()


def test_docstring_examples():
    res = doctest.testmod(quant)
    assert res.attempted >= 5 and res.failed == 0


def test_fl32_of_fraction_single_rounding():
    # a rational just above a float32 midpoint whose float64 rounding lands on the midpoint
    mid = F(1) + F(1, 2 ** 24)                       # halfway between 1 and 1 + 2^-23
    q = mid + F(1, 2 ** 60)
    assert np.float32(float(q)) == np.float32(1.0)   # double rounding goes to even (1.0)
    assert ref.fl32_of_fraction(q) == np.float32(1 + 2 ** -23)
    assert ref.fl32_of_fraction(mid) == np.float32(1.0)
    assert math.isclose(float(ref.fl32_of_fraction(F(1, 3))), 1 / 3, rel_tol=1e-7)


@pytest.mark.parametrize("cb,S", [
    (ref.pot_codebook(8, e_max=1000, signed=False), np.float32(3e38)),
    (ref.pot_codebook(8, e_max=-700, signed=False), np.float32(1e-45)),
    (ref.log_codebook(8, e_max=60, base="sqrt2", signed=False), np.float32(1e-30)),
    (ref.pot_codebook(8, e_max=127, zero_code=False), np.float32(1e-3)),
])
def test_encode_extreme_ranges_match_reference(cb, S):
    """Cutoffs beyond float64's range (inf) or in its subnormals are still exact."""
    x = boundary_values(cb, S)
    x = x[np.isfinite(x) | (np.abs(x) == np.inf)]
    if not cb.has_zero:
        x = x[x != 0]
    x = np.random.default_rng(1).choice(x, 150, replace=False)
    x = np.concatenate([x, [5e-324, 1e-320, 1e308, np.inf]])
    for rounding in roundings(cb):
        got = quant.encode(x, cb, scale=S, rounding=rounding)
        assert np.array_equal(got.codes, ref.encode_exact(x, S, cb, rounding))
