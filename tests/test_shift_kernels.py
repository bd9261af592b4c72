"""Shift GEMM and convolution kernels vs the reference (docs/semantics.md §12).

The shift kernel, the multiply kernel on the same terms and the reference agree
bit for bit on every kernel path and thread count: hypothesis over shapes, T,
exponent ranges, activation dtypes and zero points, accumulator widths (including
saturating ones), bias and rules (the Python reference keeps these shapes small);
larger shapes against the int64 oracle (rule exact); then each lane mode, the
4-bit LUT route, requantization, convolution and bad input.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import pyqinfer
import pyqinfer.ops as ops
import pyqinfer.reference as ref
from pyqinfer.reference.shift import shift_accumulate, shift_accumulator_bound
from pyqinfer.reference.shift_conv import shift_accumulate_int64, shift_conv_accumulate

ACT = {"uint8": np.uint8, "int8": np.int8, "int16": np.int16, "int32": np.int32}


def _terms(rng, T, K, N, elo, ehi, p_off):
    s = rng.choice(np.array([-1, 0, 1], np.int8), size=(T, K, N), p=[(1 - p_off) / 2, p_off, (1 - p_off) / 2])
    e = rng.integers(elo, ehi, size=(T, K, N), endpoint=True).astype(np.int8)
    e[s == 0] = rng.integers(-128, 128, size=int((s == 0).sum()))  # ignored where the sign is 0
    return s.astype(np.int8), e


def _acts(rng, dtype, shape, extremes):
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    if extremes:  # the values that reach the bound
        a.flat[:: 2] = info.min
        a.flat[1:: 3] = info.max
    return a


def _kernels(w):
    return ("shift", "multiply", "hybrid", "auto") if w.has_multiply_form else ("shift", "hybrid", "auto")


@st.composite
def cases(draw):
    rule = draw(st.sampled_from(["exact", "exact", "deepshift"]))
    dt = draw(st.sampled_from(["uint8", "int8", "int16", "int32"] if rule == "exact" else ["int8", "int16", "int32"]))
    T = draw(st.integers(1, 3))
    K = draw(st.integers(1, 40))
    N = draw(st.sampled_from([1, 3, 17, 64, 65, 70]))
    M = draw(st.integers(1, 12))  # >= 8 rows: the int32 records (pack32)
    lo_e = 0 if rule == "exact" else -31
    elo = draw(st.integers(lo_e, 30))
    ehi = draw(st.integers(elo, min(30, elo + draw(st.sampled_from([0, 2, 6, 30])))))
    za = 0
    if dt in ("uint8", "int8") and rule == "exact":
        info = np.iinfo(ACT[dt])
        za = draw(st.sampled_from([0, int(info.min), int(info.max), 3]))
    acc_bits = draw(st.sampled_from([32, 32, 24, 16, 12, 8]))
    return dict(rule=rule, dt=dt, T=T, K=K, N=N, M=M, elo=elo, ehi=ehi, za=za, acc_bits=acc_bits,
                p_off=draw(st.sampled_from([0.0, 0.3, 0.9])), bias=draw(st.booleans()),
                extremes=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 32 - 1)))


@settings(max_examples=250)
@given(cases())
def test_shift_and_multiply_match_reference(run_everywhere, c):
    rng = np.random.default_rng(c["seed"])
    s, e = _terms(rng, c["T"], c["K"], c["N"], c["elo"], c["ehi"], c["p_off"])
    a = _acts(rng, ACT[c["dt"]], (c["M"], c["K"]), c["extremes"])
    bias = rng.integers(-2 ** 31, 2 ** 31, c["N"]).astype(np.int32) if c["bias"] else None
    kw = dict(a_zero_point=c["za"] or None, bias=bias, acc_bits=c["acc_bits"])
    want = shift_accumulate(a, s, e, rule=c["rule"], **kw)
    w = ops.pack_shift_weights(s, e, rule=c["rule"])
    for kernel in _kernels(w):
        got = run_everywhere(lambda: ops.shift_matmul(a, w, kernel=kernel, **kw))
        for key, y in got.items():
            assert y.dtype == np.int32
            np.testing.assert_array_equal(y, want, err_msg=f"{kernel} {key} {c}")


def test_hypothesis_cases_reach_every_lane_mode():
    """The lane plan of the generated cases covers int16, int32 and both wide widths."""
    seen = set()
    rng = np.random.default_rng(0)
    pyqinfer.set_kernel_path("avx512bw" if "avx512bw" in pyqinfer.kernel_paths() else "scalar")
    try:
        for dt, elo, ehi in (("uint8", 0, 2), ("int8", 0, 9), ("int16", 0, 20), ("int32", 20, 30)):
            s, e = _terms(rng, 2, 40, 70, elo, ehi, 0.0)
            name = ops.shift_kernel_name(np.zeros((2, 40), ACT[dt]), ops.pack_shift_weights(s, e), kernel="shift")
            seen.update(part.split("x")[0] for part in name.split(":")[1].split(",") if not part.endswith("x0"))
    finally:
        pyqinfer.set_kernel_path("auto")
    assert {"int16", "int32", "wide64", "wide128"} <= seen


def test_saturation_happens_and_matches(run_everywhere):
    """A narrow accumulator saturates some outputs (both signs) identically everywhere."""
    rng = np.random.default_rng(3)
    s, e = _terms(rng, 2, 33, 70, 0, 7, 0.1)
    a = _acts(rng, np.uint8, (5, 33), True)
    want = shift_accumulate(a, s, e, a_zero_point=128, acc_bits=16)
    assert (want == 2 ** 15 - 1).any() and (want == -2 ** 15).any()
    w = ops.pack_shift_weights(s, e)
    for kernel in ("shift", "multiply"):
        for y in run_everywhere(lambda: ops.shift_matmul(a, w, a_zero_point=128, acc_bits=16, kernel=kernel)).values():
            np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("dt,za,elo,ehi,T,acc_bits", [
    ("uint8", 128, 0, 2, 1, 32),    # int16 lanes, many k blocks
    ("int8", -5, 0, 6, 2, 20),      # int16/int32 mix, saturating
    ("uint8", 0, 0, 6, 1, 32),      # PoT codes that fit int8: the VNNI multiply
    ("int16", 0, 0, 14, 3, 32),     # int32 lanes, int32 multiply
    ("int32", 0, 10, 20, 2, 24),    # wide panels (int64; int128 is in the hypothesis cases)
])
def test_large_shapes_against_int64_oracle(run_everywhere, dt, za, elo, ehi, T, acc_bits):
    rng = np.random.default_rng([elo, ehi, T])
    M, K, N = 37, 700, 150
    s, e = _terms(rng, T, K, N, elo, ehi, 0.2)
    a = _acts(rng, ACT[dt], (M, K), False)
    bias = rng.integers(-2 ** 20, 2 ** 20, N).astype(np.int32)
    kw = dict(a_zero_point=za or None, bias=bias, acc_bits=acc_bits)
    want = shift_accumulate_int64(a, s, e, **kw)
    w = ops.pack_shift_weights(s, e)
    for kernel in ("shift", "multiply"):
        for key, y in run_everywhere(lambda: ops.shift_matmul(a, w, kernel=kernel, **kw)).items():
            np.testing.assert_array_equal(y, want, err_msg=f"{kernel} {key}")


def test_int64_oracle_matches_reference():
    rng = np.random.default_rng(5)
    s, e = _terms(rng, 3, 25, 9, 20, 24, 0.2)  # bound ~2^62: the int64 matmul branch
    a = _acts(rng, np.int32, (4, 25), True)
    for W in (32, 17):
        np.testing.assert_array_equal(shift_accumulate_int64(a, s, e, acc_bits=W), shift_accumulate(a, s, e, acc_bits=W))


def test_int16_lanes_are_chosen_where_the_bound_allows():
    if "avx512bw" not in pyqinfer.kernel_paths():
        pytest.skip("no AVX-512BW")
    rng = np.random.default_rng(1)
    s, e = _terms(rng, 1, 1024, 128, 0, 2, 0.0)
    w = ops.pack_shift_weights(s, e)
    pyqinfer.set_kernel_path("avx512bw")
    try:
        name = ops.shift_kernel_name(np.zeros((4, 1024), np.uint8), w, a_zero_point=128, kernel="shift")
        assert name == "shift_avx512bw:int16x2,int32x0,wide64x0"
        # from 32 rows on, the packed-field kernel (measured above the chunks, which beat int16 column lanes)
        assert ops.shift_kernel_name(np.zeros((32, 1024), np.uint8), w, a_zero_point=128,
                                     kernel="shift") == "shift_packed48_avx512bw"
        # int32 activations can never use int16 lanes
        assert "int16x0" in ops.shift_kernel_name(np.zeros((4, 1024), np.int32), w, kernel="shift")
    finally:
        pyqinfer.set_kernel_path("auto")


#: the kernel name (prefix) by _core.set_shift_rows_variant (0 = auto: packed fields when the column
#: table sums fit uint32, else chunks of 16 when every exponent <= 16)
ROWS_VARIANTS = {0: "shift_packed48_avx512bw", 1: "shift_bucket_avx512bw", 2: "shift_chunk8_avx512bw",
                 3: "shift_chunk16_avx512bw", 4: "shift_avx512bw:", 5: "shift_packed48_avx512bw"}


@pytest.fixture
def rows_variant(request):
    from pyqinfer import _core

    _core.set_shift_rows_variant(request.param)
    yield request.param
    _core.set_shift_rows_variant(0)


@pytest.mark.parametrize("rows_variant", sorted(ROWS_VARIANTS), indirect=True)
@pytest.mark.parametrize("rule,adt,za,pattern", [
    ("exact", "uint8", 255, "random"),    # the largest |a - za|
    ("exact", "int8", -128, "same"),      # one exponent and sign: groups split at 128 offsets, many full chunks
    ("exact", "uint8", 0, "sparse"),
    ("deepshift", "int8", 0, "random"),   # deepshift without right shifts
])
@pytest.mark.parametrize("M,K", [(32, 127), (33, 300), (70, 1)])
@pytest.mark.parametrize("acc_bits", [27, 32])   # 32 and a small bias: no saturation, the direct int32 store
def test_exponent_bucket_route(run_everywhere, rows_variant, rule, adt, za, pattern, M, K, acc_bits):
    """The rows-in-lanes shift kernels (8-bit activations, M >= 32, int32 panels): exponent
    buckets and fixed chunks of 8 or 16 terms with 4-term tails (padding rows, partial row
    blocks, k tails); variant 4 forces the column kernels on the same layers."""
    rng = np.random.default_rng([M, K])
    N = 90
    s, e = _terms(rng, 2, K, N, 0, 9, 0.9 if pattern == "sparse" else 0.1)
    if pattern == "same":
        s[:] = 1
        e[:] = 7
    a = _acts(rng, ACT[adt], (M, K), True)
    bias = rng.integers(-2 ** 31, 2 ** 31, N).astype(np.int32) if acc_bits == 27 else \
        rng.integers(-1000, 1000, N).astype(np.int32)
    kw = dict(a_zero_point=za or None, bias=bias, acc_bits=acc_bits)
    w = ops.pack_shift_weights(s, e, rule=rule)
    if "avx512bw" in pyqinfer.kernel_paths():
        pyqinfer.set_kernel_path("avx512bw")
        try:
            assert ops.shift_kernel_name(a, w, kernel="shift", a_zero_point=za).startswith(ROWS_VARIANTS[rows_variant])
        finally:
            pyqinfer.set_kernel_path("auto")
    want = shift_accumulate_int64(a, s, e, rule=rule, **kw)
    if acc_bits == 27:
        assert ((want == 2 ** 26 - 1) | (want == -2 ** 26)).any()   # some outputs saturate
    for y in run_everywhere(lambda: ops.shift_matmul(a, w, kernel="shift", **kw)).values():
        np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("rows_variant", [0, 2, 3], indirect=True)
@pytest.mark.parametrize("elo,ehi,K,chunked", [
    (14, 16, 128, True),    # e = 16: the chunk scaling shifts by 16 - e = 0; bound 128 * 255 * 2^16 < 2^31
    (0, 16, 120, True),
    (15, 17, 60, False),    # an exponent above 16: no chunk form, the exponent buckets run
    (20, 23, 1, False),
])
def test_chunk_exponent_edges(run_everywhere, rows_variant, elo, ehi, K, chunked):
    """Chunks scale a chunk's even and odd rows by 2^e with one arithmetic shift each, exact up
    to e = 16; weights with a larger exponent take the bucket kernel (visible in the name)."""
    rng = np.random.default_rng([elo, ehi, K])
    M, N = 40, 70
    s, e = _terms(rng, 1, K, N, elo, ehi, 0.1)
    s[0, :, 0], e[0, :, 0] = 1, ehi    # one column at the bound's edge
    a = _acts(rng, np.uint8, (M, K), True)
    a[:, :] = np.where(np.arange(K) % 2 == 0, 255, a)
    kw = dict(a_zero_point=None, bias=rng.integers(-1000, 1000, N).astype(np.int32), acc_bits=32)
    w = ops.pack_shift_weights(s, e)
    if "avx512bw" in pyqinfer.kernel_paths():
        pyqinfer.set_kernel_path("avx512bw")
        try:
            name = ops.shift_kernel_name(a, w, kernel="shift")
            assert name == (ROWS_VARIANTS[rows_variant] if chunked or rows_variant == 0 else "shift_bucket_avx512bw")
        finally:
            pyqinfer.set_kernel_path("auto")
    want = shift_accumulate_int64(a, s, e, **kw)
    assert want[:, 0].max() > 2 ** 30 or K < 100   # column 0 reaches the int32 edge
    for y in run_everywhere(lambda: ops.shift_matmul(a, w, kernel="shift", **kw)).values():
        np.testing.assert_array_equal(y, want)


# ------------------------------------------------------------------ the packed-field kernel

def _span(s, e):
    """255 * max over columns of the sum of 2^e over active terms: the packed kernel's
    largest table sum (it runs when this is below 2^32)."""
    p = np.where(s != 0, np.ldexp(1.0, np.where(s != 0, e, 0).astype(np.int64)), 0.0)
    return 255 * int(p.sum(axis=(0, 1)).max()) if s.size else 0


@st.composite
def packed_cases(draw):
    rule = draw(st.sampled_from(["exact", "exact", "deepshift"]))
    dt = draw(st.sampled_from(["uint8", "int8"] if rule == "exact" else ["int8"]))
    elo = draw(st.integers(0, 24))
    ehi = draw(st.integers(elo, min(30, elo + draw(st.sampled_from([0, 3, 6, 30])))))
    za = 0
    if rule == "exact":
        info = np.iinfo(ACT[dt])
        za = draw(st.sampled_from([0, int(info.min), int(info.max), 3]))
    return dict(rule=rule, dt=dt, T=draw(st.integers(1, 3)), K=draw(st.sampled_from([1, 3, 64, 65, 200, 383, 384, 900])),
                N=draw(st.sampled_from([1, 5, 64, 65, 130])), M=draw(st.sampled_from([32, 47, 48, 49, 56, 96, 110])),
                elo=elo, ehi=ehi, za=za, acc_bits=draw(st.sampled_from([32, 32, 24, 16])),
                p_off=draw(st.sampled_from([0.0, 0.3, 0.9])), bias=draw(st.booleans()),
                extremes=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 32 - 1)))


@pytest.mark.parametrize("variant", [0, 5])
@settings(max_examples=40, deadline=None)
@given(c=packed_cases())
def test_packed_kernel_matches_oracle(run_everywhere, variant, c):
    """The packed-field kernel (section 12.4a: 48 rows as 10-bit fields, x' and 255 - x' tables,
    groups of <= 64 terms) on 8-bit activations from 32 rows: partial row blocks, k blocks and
    their tails, every exponent, both rules, saturating widths; where a column's table sum
    reaches 2^32 the operator takes another kernel (the name says which)."""
    rng = np.random.default_rng(c["seed"])
    s, e = _terms(rng, c["T"], c["K"], c["N"], c["elo"], c["ehi"], c["p_off"])
    a = _acts(rng, ACT[c["dt"]], (c["M"], c["K"]), c["extremes"])
    bias = rng.integers(-2 ** 31, 2 ** 31, c["N"]).astype(np.int32) if c["bias"] else None
    kw = dict(a_zero_point=c["za"] or None, bias=bias, acc_bits=c["acc_bits"])
    w = ops.pack_shift_weights(s, e, rule=c["rule"])
    want = shift_accumulate_int64(a, s, e, rule=c["rule"], **kw)
    from pyqinfer import _core

    _core.set_shift_rows_variant(variant)
    try:
        if "avx512bw" in pyqinfer.kernel_paths():
            pyqinfer.set_kernel_path("avx512bw")
            try:
                name = ops.shift_kernel_name(a, w, kernel="shift", a_zero_point=c["za"] or None)
            finally:
                pyqinfer.set_kernel_path("auto")
            assert (name == "shift_packed48_avx512bw") == (_span(s, e) < 2 ** 32), (name, _span(s, e))
        got = run_everywhere(lambda: ops.shift_matmul(a, w, kernel="shift", **kw))
    finally:
        _core.set_shift_rows_variant(0)
    for key, y in got.items():
        np.testing.assert_array_equal(y, want, err_msg=f"{key} {c}")


@pytest.mark.parametrize("adt", ["uint8", "int8"])
def test_packed_kernel_field_edges(run_everywhere, adt):
    """Every field at its largest: groups of exactly 64 terms of 255 (x' = 255 for +1, x' = 0 and
    so 255 - x' for -1) and the 65th term starting a new group; 47-49 rows; a column whose table
    sum is just below 2^32 (one term 2^24: 255 * 2^24) and one just above (two), which sends the
    layer to another kernel."""
    K = 3 * 65
    s = np.zeros((1, K, 6), np.int8)
    e = np.zeros((1, K, 6), np.int8)
    s[0, :, 0], e[0, :, 0] = 1, 5             # 195 terms of one exponent: groups 64, 64, 64, 3
    s[0, :, 1], e[0, :, 1] = -1, 0
    s[0, :64, 2], e[0, :64, 2] = 1, 9         # exactly one full group
    s[0, :65, 3], e[0, :65, 3] = -1, 9        # a full group and one more term
    s[0, ::2, 4], e[0, ::2, 4] = 1, np.arange(0, K, 2) % 7
    s[0, 7, 5], e[0, 7, 5] = 1, 24            # 255 * 2^24 < 2^32
    lo, hi = (0, 255) if adt == "uint8" else (-128, 127)
    for M in (47, 48, 49):
        a = np.full((M, K), hi, ACT[adt])
        a[1::2] = lo
        za = lo if adt == "uint8" else 0
        w = ops.pack_shift_weights(s, e)
        want = shift_accumulate_int64(a, s, e, a_zero_point=za or None)
        if "avx512bw" in pyqinfer.kernel_paths():
            pyqinfer.set_kernel_path("avx512bw")
            try:
                assert ops.shift_kernel_name(a, w, kernel="shift", a_zero_point=za or None) == "shift_packed48_avx512bw"
            finally:
                pyqinfer.set_kernel_path("auto")
        for key, y in run_everywhere(lambda: ops.shift_matmul(a, w, kernel="shift", a_zero_point=za or None)).items():
            np.testing.assert_array_equal(y, want, err_msg=f"{key} M={M}")
    s2 = s.copy()
    s2[0, 8, 5], e[0, 8, 5] = 1, 24           # two such terms: 2 * 255 * 2^24 >= 2^32
    if "avx512bw" in pyqinfer.kernel_paths():
        pyqinfer.set_kernel_path("avx512bw")
        try:
            w2 = ops.pack_shift_weights(s2, e)
            assert ops.shift_kernel_name(np.zeros((48, K), np.uint8), w2, kernel="shift") != "shift_packed48_avx512bw"
        finally:
            pyqinfer.set_kernel_path("auto")


@pytest.mark.parametrize("M", [49, 52, 56, 57, 101])
@pytest.mark.parametrize("out", ["int32", "uint8", "int8"])
def test_packed_kernel_row_tail(run_everywhere, M, out):
    """The packed route hands a last row block of <= 8 rows (M % 48) to the column kernels:
    the rows on both sides of the split, int32 and requantized 8-bit outputs (the tail's
    output offset is in elements of the output type), saturating and not."""
    rng = np.random.default_rng([M, len(out)])
    K, N = 150, 70
    s, e = _terms(rng, 1, K, N, 0, 6, 0.1)
    a = _acts(rng, np.uint8, (M, K), True)
    bias = rng.integers(-3000, 3000, N).astype(np.int32)
    w = ops.pack_shift_weights(s, e)
    if "avx512bw" in pyqinfer.kernel_paths():
        pyqinfer.set_kernel_path("avx512bw")
        try:
            assert ops.shift_kernel_name(a, w, a_zero_point=100, kernel="shift") == "shift_packed48_avx512bw"
        finally:
            pyqinfer.set_kernel_path("auto")
    for acc_bits in (32, 17):
        acc = shift_accumulate_int64(a, s, e, a_zero_point=100, bias=bias, acc_bits=acc_bits)
        if out == "int32":
            want, kw, dt = acc, {}, np.dtype(np.int32)
        else:
            zy = np.uint8(90) if out == "uint8" else np.int8(-7)
            xs, ws, ys = np.float32(0.02), np.float32(0.01), np.float32(0.9)
            lo, hi = ref.activation_bounds(None, ys, int(zy), zy.dtype)
            want = ref.requantize(acc, ref.derive_requant("fp32", xs, ws, ys), int(zy), lo, hi)
            kw, dt = dict(a_scale=xs, w_scale=ws, y_scale=ys, y_zero_point=zy), zy.dtype
        assert acc_bits == 32 or (np.abs(acc) == 2 ** 16).any() or (acc == 2 ** 16 - 1).any()  # 17 bits saturate
        for key, y in run_everywhere(lambda: ops.shift_matmul(a, w, a_zero_point=100, bias=bias, acc_bits=acc_bits,
                                                              kernel="shift", **kw)).items():
            assert y.dtype == dt
            np.testing.assert_array_equal(y, want, err_msg=f"{key} acc_bits={acc_bits}")


@pytest.mark.parametrize("adt,za", [("uint8", 7), ("int8", -3), ("int8", 0)])
@pytest.mark.parametrize("K", [1, 13, 64, 259])
def test_lut4_route(run_everywhere, adt, za, K):
    """<= 16 distinct int8 values and a small batch: the 4-bit table kernel on VNNI
    (K not a multiple of 8: the padding index must be the value 0)."""
    rng = np.random.default_rng(K)
    s, e = _terms(rng, 1, K, 130, 0, 6, 0.1)  # 15 values: 0 and +-2^0..2^6 (0 is index 0)
    s[0, 0, 0], e[0, 0, 0] = -1, 6             # make sure the table has negative values
    a = _acts(rng, ACT[adt], (3, K), True)
    bias = rng.integers(-1000, 1000, 130).astype(np.int32)
    w = ops.pack_shift_weights(s, e)
    if "avx512vnni" in pyqinfer.kernel_paths():
        pyqinfer.set_kernel_path("avx512vnni")
        try:
            assert ops.shift_kernel_name(a, w, a_zero_point=za, kernel="multiply").startswith("mul_lut4")
        finally:
            pyqinfer.set_kernel_path("auto")
    want = shift_accumulate_int64(a, s, e, a_zero_point=za, bias=bias, acc_bits=22)
    for y in run_everywhere(lambda: ops.shift_matmul(a, w, a_zero_point=za, bias=bias, acc_bits=22,
                                                     kernel="multiply")).values():
        np.testing.assert_array_equal(y, want)


@settings(max_examples=25)
@given(mode=st.sampled_from(ops.MODES), per_channel=st.booleans(), signed_out=st.booleans(),
       clip=st.sampled_from([None, "relu"]), acc_bits=st.sampled_from([32, 18]), seed=st.integers(0, 2 ** 31))
def test_requantized_output(run_everywhere, mode, per_channel, signed_out, clip, acc_bits, seed):
    rng = np.random.default_rng(seed)
    M, K, N = 4, 30, 67
    s, e = _terms(rng, 2, K, N, 0, 5, 0.2)
    a = _acts(rng, np.uint8, (M, K), False)
    bias = rng.integers(-5000, 5000, N).astype(np.int32)
    pot = mode == "pot"
    ws = (2.0 ** -rng.integers(0, 6, N)).astype(np.float32) if per_channel else np.float32(2.0 ** -3)
    if not pot and per_channel:
        ws = rng.uniform(0.001, 0.01, N).astype(np.float32)
    xs, ys = np.float32(0.5 if pot else 0.02), np.float32(2.0 ** 6 if pot else 0.3)
    zy = np.int8(-3) if signed_out else np.uint8(100)
    acc = shift_accumulate(a, s, e, a_zero_point=60, bias=bias, acc_bits=acc_bits)
    lo, hi = ref.activation_bounds(clip, ys, int(zy), zy.dtype)
    want = ref.requantize(acc, ref.derive_requant(mode, xs, ws, ys), int(zy), lo, hi)
    w = ops.pack_shift_weights(s, e)
    for kernel in ("shift", "multiply", "hybrid"):
        got = run_everywhere(lambda: ops.shift_matmul(a, w, a_zero_point=60, bias=bias, acc_bits=acc_bits,
                                                      kernel=kernel, a_scale=xs, w_scale=ws, y_scale=ys,
                                                      y_zero_point=zy, mode=mode, clip=clip))
        for y in got.values():
            assert y.dtype == zy.dtype
            np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("rule,dt,za", [("exact", np.uint8, 120), ("deepshift", np.int8, 0)])
def test_shift_conv_matches_reference(run_everywhere, layout, rule, dt, za):
    rng = np.random.default_rng(7)
    T, OC, C, KH, KW = 2, 9, 5, 3, 3
    elo = 0 if rule == "exact" else -4
    s, e = _terms(rng, T, OC, C * KH * KW, elo, 6, 0.2)
    s, e = s.reshape(T, OC, C, KH, KW), e.reshape(T, OC, C, KH, KW)
    x = _acts(rng, dt, (2, C, 7, 6), False)
    geo = dict(pads=(1, 1, 1, 0), strides=(2, 1), dilations=(1, 2))
    bias = rng.integers(-100, 100, OC).astype(np.int32)
    want = shift_conv_accumulate(x, s, e, x_zero_point=za, bias=bias, acc_bits=20, rule=rule, **geo)
    w = ops.pack_shift_conv_weights(s, e, rule=rule)
    xin = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    kernels = ("shift", "multiply") if rule == "exact" else ("shift",)
    for kernel in kernels:
        for y in run_everywhere(lambda: ops.shift_conv(xin, w, x_zero_point=za or None, bias=bias, acc_bits=20,
                                                       kernel=kernel, layout=layout, **geo)).values():
            np.testing.assert_array_equal(y if layout == "NCHW" else y.transpose(0, 3, 1, 2), want)


def test_bound_matches_reference_bound():
    """The lane plan rests on §12.3: spot-check a column whose bound sits at int16's edge."""
    s = np.ones((1, 128, 1), np.int8)
    e = np.zeros((1, 128, 1), np.int8)
    assert shift_accumulator_bound(s, e, np.uint8, a_zero_point=0)[0] == 128 * 255 == 32640


# --------------------------------------------------------------------- bad input

def test_bad_input():
    s = np.ones((1, 4, 3), np.int8)
    e = np.zeros((1, 4, 3), np.int8)
    w = ops.pack_shift_weights(s, e)
    a = np.zeros((2, 4), np.uint8)
    with pytest.raises(TypeError, match="signs"):
        ops.pack_shift_weights(s.astype(np.int16), e)
    with pytest.raises(ValueError, match="shape"):
        ops.pack_shift_weights(s, e[:, :3])
    with pytest.raises(ValueError, match="1 to 3 terms"):
        ops.pack_shift_weights(np.ones((4, 4, 3), np.int8), np.zeros((4, 4, 3), np.int8))
    with pytest.raises(ValueError, match="signs must be"):
        ops.pack_shift_weights(s * 2, e)
    with pytest.raises(ValueError, match="exponents"):
        ops.pack_shift_weights(s, e - 1)                   # e < 0 under rule exact
    with pytest.raises(ValueError, match="exponents"):
        ops.pack_shift_weights(s, e + 31, rule="deepshift")
    with pytest.raises(ValueError, match="rule"):
        ops.pack_shift_weights(s, e, rule="shifty")
    with pytest.raises(TypeError, match="a must"):
        ops.shift_matmul(a.astype(np.float32), w)
    with pytest.raises(ValueError, match="K"):
        ops.shift_matmul(np.zeros((2, 5), np.uint8), w)
    with pytest.raises(ValueError, match="acc_bits"):
        ops.shift_matmul(a, w, acc_bits=33)
    with pytest.raises(TypeError, match="acc_bits"):
        ops.shift_matmul(a, w, acc_bits=16.0)
    with pytest.raises(ValueError, match="kernel"):
        ops.shift_matmul(a, w, kernel="fast")
    with pytest.raises(ValueError, match="a_zero_point"):
        ops.shift_matmul(a, w, a_zero_point=256)
    with pytest.raises(ValueError, match="a_zero_point"):
        ops.shift_matmul(np.zeros((2, 4), np.int16), w, a_zero_point=1)
    with pytest.raises(TypeError, match="bias"):
        ops.shift_matmul(a, w, bias=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="bias"):
        ops.shift_matmul(a, w, bias=np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="y_scale"):
        ops.shift_matmul(a, w, a_scale=0.1)
    with pytest.raises(ValueError, match="w_scale"):
        ops.shift_matmul(a, w, a_scale=0.1, y_scale=0.1)
    with pytest.raises(ValueError, match="mode"):
        ops.shift_matmul(a, w, a_scale=0.1, w_scale=0.1, y_scale=0.1, mode="nope")
    with pytest.raises(TypeError, match="w must"):
        ops.shift_matmul(a, s)
    ds = ops.pack_shift_weights(-s, e - 2, rule="deepshift")
    with pytest.raises(TypeError, match="deepshift"):
        ops.shift_matmul(a, ds)
    with pytest.raises(ValueError, match="rule"):
        ops.shift_matmul(a, w, rule="deepshift")
    a8 = np.full((2, 4), -7, np.int8)
    with pytest.raises(ValueError, match="multiply form"):
        ops.shift_matmul(a8, ds, kernel="multiply")
    # auto routes deepshift right shifts to the shift kernel: floor(-7 / 4) = -2, negated, x4
    np.testing.assert_array_equal(ops.shift_matmul(a8, ds), np.full((2, 3), 8, np.int32))
    # deepshift without right shifts has a multiply form
    dl = ops.pack_shift_weights(s, e + 1, rule="deepshift")
    np.testing.assert_array_equal(ops.shift_matmul(a8, dl, kernel="multiply"), np.full((2, 3), -56, np.int32))


def test_bad_input_reaches_cpp_checks():
    """The binding re-checks what the Python layer checks (ValueError, never a crash)."""
    from pyqinfer import _core

    w = _core.pack_shift(np.ones((1, 4, 3), np.int8), np.zeros((1, 4, 3), np.int8), "exact")
    with pytest.raises(ValueError):
        _core.shift_gemm(np.zeros((2, 5), np.uint8), 0, w, None, 32, "shift", "int32", None, 0, 0, 0)
    with pytest.raises(ValueError):
        _core.shift_gemm(np.zeros((2, 4), np.uint8), 0, w, None, 40, "shift", "int32", None, 0, 0, 0)
    with pytest.raises(ValueError):
        _core.shift_gemm(np.zeros((2, 4), np.int16), 3, w, None, 32, "shift", "int32", None, 0, 0, 0)
    with pytest.raises(ValueError):
        _core.pack_shift(np.full((1, 4, 3), 2, np.int8), np.zeros((1, 4, 3), np.int8), "exact")
    with pytest.raises(ValueError):
        _core.pack_shift(np.ones((1, 4, 3), np.int8), np.full((1, 4, 3), 31, np.int8), "exact")
    with pytest.raises(ValueError):
        _core.shift_gemm(np.zeros((2, 4), np.uint8), 0, w, None, 32, "shift", "uint8", None, 0, 0, 0)


@pytest.mark.parametrize("encoder", [
    lambda w: __import__("pyqinfer.quant", fromlist=["x"]).pot_encode(w, 4, e_min=-6),
    lambda w: __import__("pyqinfer.quant", fromlist=["x"]).apot_encode(w, 5),
    lambda w: __import__("pyqinfer.quant", fromlist=["x"]).apot_encode(w, 5, construction="repo"),
    lambda w: __import__("pyqinfer.quant", fromlist=["x"]).log_encode(w, 5, e_max=0, base="sqrt2", signed=True),
], ids=["pot4", "apot5", "apot5-repo", "log5-sqrt2"])
def test_codes_from_pyqinfer_quant(run_everywhere, encoder):
    """Codes of pyqinfer.quant (§12.5+) through their term form run bit-exact with the
    reference shift layer (shift_linear), on both kernels."""
    from pyqinfer.reference.shiftcodes import shift_linear

    rng = np.random.default_rng(11)
    K, N, M = 150, 70, 40
    codes = encoder(rng.normal(0, 0.3, (K, N)).astype(np.float32))
    s, e, _ = codes.terms("exact")
    x = rng.integers(0, 256, (M, K), dtype=np.uint8)
    bias = rng.integers(-500, 500, N).astype(np.int32)
    xs, ys, zy = np.float32(0.05), np.float32(0.02), np.uint8(128)
    want = shift_linear(x, xs, 120, codes, ys, zy, bias=bias, acc_bits=20)
    w = ops.pack_shift_weights(s, e)
    for kernel in ("shift", "multiply"):
        got = run_everywhere(lambda: ops.shift_matmul(x, w, a_zero_point=120, bias=bias, acc_bits=20, kernel=kernel,
                                                      a_scale=xs, w_scale=codes.effective_scale("exact"),
                                                      y_scale=ys, y_zero_point=zy))
        for y in got.values():
            np.testing.assert_array_equal(y, want)


def test_bench_records_and_cli(monkeypatch):
    """bench shift-vs-mul: one record per kernel with the documented fields, all bit-exact;
    --plot without matplotlib is a clear error before any timing."""
    import importlib.util

    from pyqinfer import _core
    from pyqinfer.bench import shift as bench
    from pyqinfer.cli import main

    monkeypatch.setattr(bench, "GEMM_SHAPES", bench.GEMM_SHAPES + [("gemm 40x300x100", 40, 300, 100)])
    monkeypatch.setattr(bench, "CONV_LAYERS", bench.CONV_LAYERS + [("conv3x3 5x5x16", 5, 16, 24)])
    recs = []
    for name in ("gemm 40x300x100", "conv3x3 5x5x16"):
        recs = bench.bench_case(name, "pot4", 1, min_runs=1, target_seconds=0.0)
        assert [r["kernel"] for r in recs] == list(bench.KERNELS)
        for r in recs:
            assert {"shape", "scheme", "kernel", "gops", "bit_exact"} <= set(r)
            assert r["bit_exact"] is True and r["gops"] > 0 and r["model_energy_uj"] > 0
    assert "model" in bench.LEGEND and "not a CPU measurement" in bench.LEGEND
    # --ab-rows: the forced rows-in-lanes variants as extra, bit-exact, named records
    recs = bench.bench_case("gemm 40x300x100", "pot4", 2, min_runs=1, target_seconds=0.0, ab_rows=True)
    assert [r["kernel"] for r in recs] == list(bench.KERNELS) + list(bench.AB_ROWS)
    assert all(r["bit_exact"] is True for r in recs)
    if "avx512bw" in pyqinfer.kernel_paths():
        names = {r["kernel"]: r["kernel_name"] for r in recs}
        assert names["shift"] == names["shift:packed48"] == "shift_packed48_avx512bw"
        assert names["shift:chunk16"] == "shift_chunk16_avx512bw"
        assert names["shift:chunk8"] == "shift_chunk8_avx512bw"
        assert names["shift:bucket"] == "shift_bucket_avx512bw"
        assert names["shift:columns"].startswith("shift_avx512bw:")
    assert _core.shift_rows_variant() == 0
    if importlib.util.find_spec("matplotlib") is None:
        assert main(["bench", "shift-vs-mul", "--quick", "--plot", "/tmp/never-written.png"]) == 2


# ------------------------------------------------------------------ the hybrid kernel

def _hybrid_name(a, w, za, acc_bits=32):
    if "avx512vnni" not in pyqinfer.kernel_paths():
        return None
    pyqinfer.set_kernel_path("avx512vnni")
    try:
        return ops.shift_kernel_name(a, w, a_zero_point=za, acc_bits=acc_bits, kernel="hybrid")
    finally:
        pyqinfer.set_kernel_path("auto")


@settings(max_examples=40, deadline=None)
@given(M=st.sampled_from([1, 5, 29, 30, 31, 61, 250]), K=st.sampled_from([1, 3, 4, 127, 128, 255, 301]),
       N=st.sampled_from([65, 70, 129, 200]), T=st.integers(1, 3), adt=st.sampled_from(["uint8", "int8"]),
       zsel=st.sampled_from(["min", "max", "mid"]), ns=st.sampled_from([0, 1, 17, -1]),
       period=st.sampled_from([0, 1, 3]), bias=st.booleans(), extremes=st.booleans(),
       seed=st.integers(0, 2 ** 32 - 1))
def test_hybrid_matches_oracle_and_other_kernels(run_everywhere, M, K, N, T, adt, zsel, ns, period, bias, extremes,
                                                 seed):
    """kernel="hybrid" (VNNI columns + shift-add units in one loop, section 12.4a) ==
    the int64 oracle == multiply == shift, on every path (the hybrid exists on VNNI;
    elsewhere it falls back) and thread count, for forced splits (1, 17, N-1 shift
    columns) and unit periods, rows across blocks of 30 and groups, K across the
    127-k table blocks, N not a multiple of 16 or 64."""
    rng = np.random.default_rng(seed)
    s, e = _terms(rng, T, K, N, 0, 5 if T > 1 else 6, 0.1)  # values fit int8
    info = np.iinfo(ACT[adt])
    za = {"min": int(info.min), "max": int(info.max), "mid": 3}[zsel]
    a = _acts(rng, ACT[adt], (M, K), extremes)
    b = rng.integers(-2 ** 20, 2 ** 20, N).astype(np.int32) if bias else None
    w = ops.pack_shift_weights(s, e)
    want = shift_accumulate_int64(a, s, e, a_zero_point=za, bias=b)
    pyqinfer._core.set_shift_hybrid(period, N - 1 if ns == -1 else ns)
    try:
        name = _hybrid_name(a, w, za)
        if name is not None:  # a forced split always runs; the automatic one where the model says it pays,
            # else the multiply route (the int8 GEMM, or the 4-bit table kernel for M <= 16)
            assert name.startswith("hybrid_vnni") or (ns == 0 and name.startswith(("mul_int8", "mul_lut4"))), name
        got = run_everywhere(lambda: ops.shift_matmul(a, w, a_zero_point=za, bias=b, kernel="hybrid"))
    finally:
        pyqinfer._core.set_shift_hybrid(0, 0)
    for key, y in got.items():
        np.testing.assert_array_equal(y, want, err_msg=f"{key} {name}")
    for kernel in ("multiply", "shift"):
        np.testing.assert_array_equal(ops.shift_matmul(a, w, a_zero_point=za, bias=b, kernel=kernel), want)


def test_kernel_name_sees_the_bias():
    """A bias that makes saturation possible sends the hybrid to the multiply route, and
    shift_kernel_name(bias=...) names the route shift_matmul(bias=...) takes."""
    if "avx512vnni" not in pyqinfer.kernel_paths():
        pytest.skip("no AVX-512 VNNI")
    rng = np.random.default_rng(4)
    s, e = _terms(rng, 1, 256, 128, 0, 6, 0.1)
    a = _acts(rng, np.uint8, (60, 256), True)
    w = ops.pack_shift_weights(s, e)
    big = np.full(128, 2 ** 31 - 1, np.int32)   # bound + |bias| > 2^31 - 1: saturation possible
    pyqinfer._core.set_shift_hybrid(0, 64)      # a forced split: runs whenever the route applies
    try:
        assert ops.shift_kernel_name(a, w, a_zero_point=128, kernel="hybrid").startswith("hybrid_vnni")
        assert ops.shift_kernel_name(a, w, a_zero_point=128, bias=big, kernel="hybrid").startswith("mul_")
        for b in (None, big):
            np.testing.assert_array_equal(ops.shift_matmul(a, w, a_zero_point=128, bias=b, kernel="hybrid"),
                                          shift_accumulate_int64(a, s, e, a_zero_point=128, bias=b))
    finally:
        pyqinfer._core.set_shift_hybrid(0, 0)


def test_hybrid_large_against_oracle(run_everywhere):
    """Several row groups per thread, APoT (T=2), a split with many units."""
    rng = np.random.default_rng(11)
    s, e = _terms(rng, 2, 1031, 333, 0, 5, 0.05)
    a = _acts(rng, np.uint8, (517, 1031), True)
    w = ops.pack_shift_weights(s, e)
    want = shift_accumulate_int64(a, s, e, a_zero_point=255)
    for ns in (0, 100):
        pyqinfer._core.set_shift_hybrid(0, ns)
        try:
            got = run_everywhere(lambda: ops.shift_matmul(a, w, a_zero_point=255, kernel="hybrid"))
        finally:
            pyqinfer._core.set_shift_hybrid(0, 0)
        for y in got.values():
            np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("acc_bits", [32, 22, 12])
def test_hybrid_saturation_falls_back(run_everywhere, acc_bits):
    """The hybrid only runs where the static bound proves sat_W the identity; a layer
    that may saturate takes the multiply route (same bits as the reference)."""
    rng = np.random.default_rng(acc_bits)
    s, e = _terms(rng, 1, 200, 130, 0, 6, 0.0)
    a = _acts(rng, np.uint8, (40, 200), True)
    w = ops.pack_shift_weights(s, e)
    bound = int(shift_accumulator_bound(s, e, a_dtype=np.uint8, a_zero_point=0).max())
    want = shift_accumulate_int64(a, s, e, a_zero_point=0, acc_bits=acc_bits)
    pyqinfer._core.set_shift_hybrid(0, 40)  # a forced split: only the bound decides
    try:
        name = _hybrid_name(a, w, 0, acc_bits)
        if name is not None:
            assert name.startswith("hybrid") == (bound <= 2 ** (acc_bits - 1) - 1), (name, bound)
        got = run_everywhere(lambda: ops.shift_matmul(a, w, a_zero_point=0, acc_bits=acc_bits, kernel="hybrid"))
    finally:
        pyqinfer._core.set_shift_hybrid(0, 0)
    for y in got.values():
        np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("signed_out", [False, True])
def test_hybrid_requantized_and_conv(run_everywhere, signed_out):
    """Requantized output (the VNNI columns through the GEMM epilogue, the shift
    columns through finish_row) and shift_conv equal the multiply route."""
    rng = np.random.default_rng(5)
    s, e = _terms(rng, 1, 96, 150, 0, 6, 0.1)
    a = _acts(rng, np.uint8, (70, 96), False)
    w = ops.pack_shift_weights(s, e)
    b = rng.integers(-5000, 5000, 150).astype(np.int32)
    kw = dict(a_zero_point=128, bias=b, a_scale=np.float32(0.02),
              w_scale=rng.uniform(0.001, 0.01, 150).astype(np.float32), y_scale=np.float32(0.5),
              y_zero_point=np.int8(-3) if signed_out else np.uint8(100))
    pyqinfer._core.set_shift_hybrid(0, 40)
    if _hybrid_name(a, w, 128) is not None:
        assert _hybrid_name(a, w, 128).startswith("hybrid")
    want = ops.shift_matmul(a, w, kernel="multiply", **kw)
    assert want.dtype == (np.int8 if signed_out else np.uint8)
    try:
        got = run_everywhere(lambda: ops.shift_matmul(a, w, kernel="hybrid", **kw))
    finally:
        pyqinfer._core.set_shift_hybrid(0, 0)
    for y in got.values():
        np.testing.assert_array_equal(y, want)
    cs, ce = _terms(rng, 1, 80, 16 * 3 * 3, 0, 6, 0.1)
    cw = ops.pack_shift_conv_weights(cs.reshape(1, 80, 16, 3, 3), ce.reshape(1, 80, 16, 3, 3))
    x = rng.integers(0, 256, (1, 12, 12, 16), dtype=np.uint8)
    want = ops.shift_conv(x, cw, x_zero_point=7, pads=(1, 1, 1, 1), layout="NHWC", kernel="multiply")
    for y in run_everywhere(lambda: ops.shift_conv(x, cw, x_zero_point=7, pads=(1, 1, 1, 1), layout="NHWC",
                                                   kernel="hybrid")).values():
        np.testing.assert_array_equal(y, want)


def test_auto_route_for_values_past_int8():
    """Values past int8 with an int32 bound: auto takes the shift kernel for 8-bit
    activations and for 16-bit ones from 8 rows on, the int32 multiply kernel for
    16-bit activations below 8 rows (section 12.4a); never the hybrid."""
    rng = np.random.default_rng(2)
    s, e = _terms(rng, 1, 128, 96, 0, 7, 0.1)
    s[0, 0, 0], e[0, 0, 0] = 1, 7  # 128: past int8
    w = ops.pack_shift_weights(s, e)
    a8 = rng.integers(0, 256, (4, 128), dtype=np.uint8)
    assert ops.shift_kernel_name(a8, w, a_zero_point=0).startswith("shift")
    small = rng.integers(-300, 300, (4, 128)).astype(np.int16)
    big = rng.integers(-300, 300, (8, 128)).astype(np.int16)
    assert ops.shift_kernel_name(small, w).startswith("mul_int32")
    assert ops.shift_kernel_name(big, w).startswith("shift")
    for a, za in ((a8, 0), (small, None), (big, None)):
        np.testing.assert_array_equal(ops.shift_matmul(a, w, a_zero_point=za),
                                      shift_accumulate_int64(a, s, e, a_zero_point=za or 0))
    s2, e2 = _terms(rng, 1, 64, 130, 0, 6, 0.1)
    w2 = ops.pack_shift_weights(s2, e2)
    assert not ops.shift_kernel_name(rng.integers(0, 256, (64, 64), dtype=np.uint8), w2,
                                     a_zero_point=0).startswith("hybrid")


def test_hybrid_knobs_reject_bad_values():
    with pytest.raises(ValueError, match="period"):
        pyqinfer._core.set_shift_hybrid(-1, 0)
    with pytest.raises(ValueError, match="shift columns"):
        pyqinfer._core.set_shift_hybrid(0, -5)
    w = ops.pack_shift_weights(np.ones((1, 4, 70), np.int8), np.zeros((1, 4, 70), np.int8))
    with pytest.raises(ValueError, match="kernel"):
        ops.shift_matmul(np.zeros((2, 4), np.uint8), w, kernel="hybird")
