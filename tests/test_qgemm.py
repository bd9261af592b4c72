"""The C++ quantized GEMM (pyqinfer.ops -> pyqinfer._core) equals the golden
model pyqinfer.reference bit for bit (docs/semantics.md sections 2 and 4).

Every comparison runs on every kernel path this CPU has and with 1 and 2
threads (``run_everywhere`` in conftest.py); the reference runs once per case.
Tiles: 64 columns x K groups of 4 (VNNI, 6-row register tiles), 16 and 64
columns (AVX2 / AVX-512BW), so shapes straddle those boundaries.
"""
from dataclasses import dataclass, field
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import pyqinfer
import pyqinfer.ops as ops
import pyqinfer.reference as R

RANGES = {"uint8": (0, 255), "int8": (-128, 127)}
DTYPES = tuple(RANGES)
MODES = R.MODES
CLIPS = (None, None, "relu", "relu6", "range")
# Sizes straddling 4-byte K groups, 16/64-column tiles and 6-row register tiles.
EDGE_K = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 257)
EDGE_N = (1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 127, 128, 129, 191, 193)
EDGE_M = (1, 2, 3, 5, 6, 7, 11, 12, 13)
# Below kMinMacsPerThread * 2 (csrc/qgemm/qgemm.cpp) the operator runs one thread.
TWO_THREAD_MACS = 2 ** 20
# The ci profile's example budget scales these per-test counts; "long" uses its own.
BASE_EXAMPLES = settings.default.max_examples


def examples(fraction):
    return max(5, int(BASE_EXAMPLES * fraction)) if BASE_EXAMPLES < 1000 else BASE_EXAMPLES


# ----------------------------------------------------------------------------- data

def fill(rng, shape, dtype, style):
    """int8/uint8 data: random, constant extremes, or a random mix of the two extremes."""
    lo, hi = RANGES[dtype]
    if style == "random":
        return rng.integers(lo, hi + 1, size=shape).astype(dtype)
    if style == "min":
        return np.full(shape, lo, dtype)
    if style == "max":
        return np.full(shape, hi, dtype)
    if style == "zero":
        return np.zeros(shape, dtype)
    assert style == "extremes"
    return rng.choice(np.array([lo, hi], dtype), size=shape)


FILL_STYLES = st.sampled_from(["random", "random", "random", "min", "max", "zero", "extremes"])


def zero_point_st(dtype):
    lo, hi = RANGES[dtype]
    return st.one_of(st.sampled_from([lo, hi, 0, lo + 1, hi - 1]), st.integers(lo, hi))


@dataclass
class Case:
    """One qgemm problem in both APIs' terms (numpy-typed zero points)."""

    a: np.ndarray
    b: np.ndarray
    a_zp: np.generic
    b_zp: object  # numpy scalar or [N] array
    bias: object = None
    a_scale: np.float32 = np.float32(1)
    b_scale: object = np.float32(1)
    y_scale: np.float32 = np.float32(1)
    y_zp: np.generic = np.uint8(0)
    mode: str = "fp32"
    clip: object = None
    packed: bool = False
    notes: dict = field(default_factory=dict)

    def weights(self):
        return ops.pack_weights(self.b, self.b_zp) if self.packed else self.b

    def kernel_int32(self):
        return ops.matmul_integer(self.a, self.weights(), self.a_zp, None if self.packed else self.b_zp,
                                  bias=self.bias)

    def reference_int32(self):
        if self.bias is None:
            return R.matmul_integer(self.a, self.b, self.a_zp, self.b_zp)
        return R.accumulate(self.a, self.b, self.a_zp, self.b_zp, self.bias).astype(np.int32)

    def kernel_qlinear(self):
        return ops.qlinear_matmul(self.a, self.a_scale, self.a_zp, self.weights(), self.b_scale,
                                  None if self.packed else self.b_zp, self.y_scale, self.y_zp,
                                  self.bias, mode=self.mode, clip=self.clip)

    def reference_qlinear(self):
        return R.qlinear_matmul(self.a, self.a_scale, self.a_zp, self.b, self.b_scale, self.b_zp,
                                self.y_scale, self.y_zp, bias=self.bias, mode=self.mode, clip=self.clip)

    def describe(self):
        return (f"a {self.a.dtype}{self.a.shape} zp={self.a_zp!r}, b {self.b.dtype}{self.b.shape} "
                f"zp={self.b_zp!r}, bias={'none' if self.bias is None else 'int32[N]'}, mode={self.mode}, "
                f"scales=({self.a_scale!r}, {self.b_scale!r}, {self.y_scale!r}), y_zp={self.y_zp!r}, "
                f"clip={self.clip!r}, packed={self.packed} {self.notes}")


def assert_everywhere_equal(run_everywhere, kernel, expected, what):
    """kernel() on every (path, threads) equals expected, dtype and shape included."""
    results = run_everywhere(kernel)
    for (path, threads), got in results.items():
        assert got.dtype == expected.dtype and got.shape == expected.shape, (
            f"{path}/threads={threads}: got {got.dtype}{got.shape}, want {expected.dtype}{expected.shape}; {what}")
        if not np.array_equal(got, expected):
            bad = np.argwhere(got != expected)
            i = tuple(bad[0])
            raise AssertionError(
                f"{path}/threads={threads}: {len(bad)} of {got.size} outputs differ from the reference, "
                f"first at {i}: kernel {got[i]} vs reference {expected[i]}; {what}")
    return results


# ------------------------------------------------------------------ hypothesis strategies

@st.composite
def shapes(draw, big=False):
    if big:  # large enough that the operator really splits the work over 2 threads
        M, N, K = draw(st.integers(40, 100)), draw(st.integers(100, 260)), draw(st.integers(270, 400))
        assert M * N * K >= TWO_THREAD_MACS
        return (), M, N, K
    M = draw(st.one_of(st.sampled_from(EDGE_M), st.integers(1, 20)))
    N = draw(st.one_of(st.sampled_from(EDGE_N), st.integers(1, 200)))
    K = draw(st.one_of(st.sampled_from(EDGE_K), st.integers(1, 300)))
    batch = draw(st.sampled_from([(), (), (), (1,), (2,), (3,), (2, 2)]))
    return batch, M, N, K


@st.composite
def operands(draw, big=False):
    """a, b, zero points, bias and the packed flag (everything but requantization)."""
    a_dt, b_dt = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(DTYPES))
    batch, M, N, K = draw(shapes(big))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    a = fill(rng, (*batch, M, K), a_dt, draw(FILL_STYLES))
    b = fill(rng, (K, N), b_dt, draw(FILL_STYLES))
    a_zp = np.dtype(a_dt).type(draw(zero_point_st(a_dt)))
    if draw(st.booleans()):
        b_zp = np.dtype(b_dt).type(draw(zero_point_st(b_dt)))
    else:
        lo, hi = RANGES[b_dt]
        b_zp = fill(rng, (N,), b_dt, draw(st.sampled_from(["random", "extremes", "min", "max"])))
        b_zp[0] = draw(st.integers(lo, hi))
    bias_kind = draw(st.sampled_from([None, None, None, "small", "small", "full", "extreme"]))
    bias = None
    if bias_kind == "small":
        bias = rng.integers(-(2 ** 16), 2 ** 16, size=N).astype(np.int32)
    elif bias_kind == "full":
        bias = rng.integers(-(2 ** 31), 2 ** 31, size=N, dtype=np.int64).astype(np.int32)
    elif bias_kind == "extreme":
        bias = rng.choice(np.array([-(2 ** 31), 2 ** 31 - 1], np.int32), size=N)
    return Case(a=a, b=b, a_zp=a_zp, b_zp=b_zp, bias=bias, packed=draw(st.booleans()))


def pow2(e):
    return np.float32(math.ldexp(1.0, e))


@st.composite
def requant_scales(draw, mode, acc):
    """(a_scale, b_scale, y_scale, description) as float32; b_scale per tensor or per channel.

    Calibrated draws (most) aim the effective scale S at each column's spread of
    the accumulator so outputs are not all saturated; free draws cover the rest.
    kinds: "tie" makes S[c] = fl32(s_x*s_w[c])/s_y an exact power of two (so
    acc*S has .5 fractions, where the modes differ; pot needs this anyway),
    "random" gives arbitrary float32 scales.
    """
    N = acc.shape[-1]
    cols = acc.reshape(-1, N).astype(np.float64)
    per_channel = draw(st.booleans())
    C = N if per_channel else 1
    calibrated = draw(st.sampled_from([True, True, True, False]))
    kind = "tie" if mode == "pot" else draw(st.sampled_from(["tie", "random"]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if calibrated:  # S ~ 2^E[c] maps 90% of column c onto ~ +-100 around the overall median
        dev = np.abs(cols - np.median(cols))
        spread = np.maximum(np.percentile(dev, 90, axis=0) if per_channel else [np.percentile(dev, 90)], 1.0)
        E = np.floor(np.log2(100.0 / spread)).astype(np.int64)
        E = E + rng.integers(-1, 2, size=C)
    else:
        E = rng.integers(-26, 4, size=C) if draw(st.booleans()) else np.full(C, draw(st.integers(-26, 3)))
        if mode != "pot" and draw(st.booleans()):
            E = E - 20  # q31 right shifts of 31 and beyond (m = 0)
    if kind == "tie":
        # s_x = u (any float32), s_w[c] = 2^(E[c]+f), s_y = u * 2^f: every product and quotient is exact.
        u = np.float32(draw(st.floats(2 ** -10, 2.0, width=32)))
        f = draw(st.integers(-4, 12))
        x_s, y_s = u, np.float32(u * pow2(f))
        w_s = np.array([pow2(int(v) + f) for v in E], np.float32)
    else:
        x_s = np.float32(2.0 ** rng.uniform(-12, 2))
        y_s = np.float32(2.0 ** rng.uniform(-8, 4))
        w_s = (2.0 ** (E + rng.uniform(-1, 1, size=C)) * float(y_s) / float(x_s)).astype(np.float32)
    b_scale = w_s if per_channel else w_s[0]
    S = float(x_s) * w_s.astype(np.float64) / float(y_s)
    center = float(np.median(cols * S)) if calibrated else None
    return x_s, b_scale, y_s, f"{kind}{'' if calibrated else '/free'}", center


@st.composite
def qlinear_cases(draw, big=False):
    case = draw(operands(big))
    acc = R.accumulate(case.a, case.b, case.a_zp, case.b_zp, case.bias)
    case.mode = draw(st.sampled_from(MODES))
    case.a_scale, case.b_scale, case.y_scale, kind, center = draw(requant_scales(case.mode, acc))
    y_dt = draw(st.sampled_from(DTYPES))
    lo, hi = RANGES[y_dt]
    if center is not None and draw(st.integers(0, 7)):  # put the outputs' median mid-range
        y_zp = int(np.clip(round((lo + hi) / 2 - center) + draw(st.integers(-20, 20)), lo, hi))
    else:
        y_zp = draw(zero_point_st(y_dt))
    case.y_zp = np.dtype(y_dt).type(y_zp)
    clip = draw(st.sampled_from(CLIPS))
    if clip == "range":
        c_lo = draw(st.one_of(st.integers(lo, lo + 100), st.integers(lo, hi)))
        clip = (c_lo, draw(st.one_of(st.integers(max(c_lo, hi - 100), hi), st.integers(c_lo, hi))))
    case.clip = clip
    case.notes["scales"] = kind
    return case


def reference_or_rejection(case):
    """The reference output, or None when the reference rejects the case; then ops must reject too."""
    try:
        return case.reference_qlinear()
    except ValueError:
        with pytest.raises(ValueError):
            case.kernel_qlinear()
        return None


# ------------------------------------------------------------------ hypothesis properties

@settings(max_examples=examples(1.0))
@given(case=operands())
def test_matmul_integer_matches_reference(case, run_everywhere):
    want = case.reference_int32()
    assert want.shape == (*case.a.shape[:-1], case.b.shape[1])
    assert_everywhere_equal(run_everywhere, case.kernel_int32, want, case.describe())


@settings(max_examples=examples(2.0))
@given(case=qlinear_cases())
def test_qlinear_matmul_matches_reference(case, run_everywhere):
    want = reference_or_rejection(case)
    assume(isinstance(want, np.ndarray))  # rejections are checked above, and rare
    assert want.dtype == case.y_zp.dtype
    assert_everywhere_equal(run_everywhere, case.kernel_qlinear, want, case.describe())


@settings(max_examples=examples(0.3))
@given(case=qlinear_cases(big=True))
def test_qlinear_matmul_two_thread_shapes(case, run_everywhere):
    """Shapes above the operator's 2-thread threshold, so threads=2 really splits the work."""
    want = reference_or_rejection(case)
    assume(isinstance(want, np.ndarray))
    assert_everywhere_equal(run_everywhere, case.kernel_qlinear, want, case.describe())
    assert_everywhere_equal(run_everywhere, case.kernel_int32, case.reference_int32(), case.describe())


@settings(max_examples=examples(0.5))
@given(acc=st.lists(st.integers(-(2 ** 31), 2 ** 31 - 1), min_size=1, max_size=40),
       mode=st.sampled_from(MODES), e=st.integers(-40, 8), y_dt=st.sampled_from(DTYPES),
       data=st.data())
def test_requantization_of_arbitrary_accumulators(acc, mode, e, y_dt, data, run_everywhere):
    """Any int32 accumulator (set through the bias with a, b = 0) requantizes as in the reference.

    S = 2^e exactly (fp32 / pot / q31 alike), e in [-40, 8]: covers the q31 left
    shift that wraps (sh > 0), right shifts past 31 and the m = 0 flush.
    """
    N = len(acc)
    if mode != "pot" and data.draw(st.booleans(), "non-pot scale"):
        x_s = np.float32(data.draw(st.floats(0.5, 2.0, width=32), "x_scale"))
    else:
        x_s = np.float32(1)
    assume(mode not in ("q31", "q31_single") or e <= 28)  # M = x_s * 2^e < 2^30
    lo, hi = RANGES[y_dt]
    case = Case(a=np.zeros((2, 3), np.uint8), b=np.zeros((3, N), np.int8), a_zp=np.uint8(0), b_zp=np.int8(0),
                bias=np.array(acc, np.int32), a_scale=x_s, b_scale=np.float32(1), y_scale=pow2(-e),
                y_zp=np.dtype(y_dt).type(data.draw(st.integers(lo, hi), "y_zp")), mode=mode,
                packed=data.draw(st.booleans(), "packed"))
    want = case.reference_qlinear()
    assert_everywhere_equal(run_everywhere, case.kernel_qlinear, want, case.describe())


# ------------------------------------------------------------------ deterministic cases

def test_wrap_large_k_all_max_activations_min_weights(run_everywhere):
    """K = 70000, a = 255, b = -128: the exact sum -2284800000 wraps to 2010167296."""
    K, M, N = 70000, 3, 70
    a = np.full((M, K), 255, np.uint8)
    b = np.full((K, N), -128, np.int8)
    exact = K * 255 * -128
    wrapped = (exact + 2 ** 31) % 2 ** 32 - 2 ** 31
    assert exact < -(2 ** 31) and wrapped == 2010167296
    want = np.full((M, N), wrapped, np.int32)
    np.testing.assert_array_equal(R.matmul_integer(a, b), want)
    case = Case(a=a, b=b, a_zp=np.uint8(0), b_zp=np.int8(0))
    assert_everywhere_equal(run_everywhere, case.kernel_int32, want, case.describe())
    for mode in MODES:  # the wrapped accumulator goes through requantization unchanged
        case.mode, case.b_scale, case.y_scale, case.y_zp = mode, pow2(-24), np.float32(1), np.int8(-3)
        ref = case.reference_qlinear()
        assert_everywhere_equal(run_everywhere, case.kernel_qlinear, ref, case.describe())
    # |wrapped| * 2^-24 ~ 119.8: both the sign and the magnitude come from the wrap
    assert ref[0, 0] == -3 + 120


@pytest.mark.slow
def test_wrap_large_k_extreme_zero_points_random(run_everywhere):
    """Wrapping with zero points at the far ends: (a - za) = -255, (b - zb) = 255, plus random data."""
    K = 70001
    rng = np.random.default_rng(7)
    a = np.full((7, K), -128, np.int8)
    a[3] = rng.integers(-128, 128, K)
    b = np.full((K, 67), 255, np.uint8)
    b[:, 5] = rng.integers(0, 256, K)
    zb = np.zeros(67, np.uint8)
    zb[6] = 255  # (b - zb) = 0 in this column
    case = Case(a=a, b=b, a_zp=np.int8(127), b_zp=zb, bias=np.full(67, 2 ** 31 - 1, np.int32))
    want = case.reference_int32()
    exact = K * -255 * 255 + 2 ** 31 - 1
    assert want[0, 0] == (exact + 2 ** 31) % 2 ** 32 - 2 ** 31 and want[0, 6] == 2 ** 31 - 1
    assert_everywhere_equal(run_everywhere, case.kernel_int32, want, case.describe())
    case.mode, case.y_zp, case.b_scale = "q31", np.uint8(128), np.float32(2 ** -24)
    assert_everywhere_equal(run_everywhere, case.kernel_qlinear, case.reference_qlinear(), case.describe())


@pytest.mark.parametrize("a_dt", DTYPES)
@pytest.mark.parametrize("b_dt", DTYPES)
def test_extremes_every_value_and_zero_point_combination(a_dt, b_dt, run_everywhere):
    """All constant-extreme a and b against zero points at both ends of the range, every mode."""
    (alo, ahi), (blo, bhi) = RANGES[a_dt], RANGES[b_dt]
    K, N = 37, 70
    for av in (alo, ahi, 0):
        for bv in (blo, bhi, 0):
            for za in (alo, ahi):
                a = np.full((5, K), av, a_dt)
                b = np.full((K, N), bv, b_dt)
                zb = np.array([blo, bhi] * (N // 2), b_dt)  # per-channel, both ends
                case = Case(a=a, b=b, a_zp=np.dtype(a_dt).type(za), b_zp=zb)
                assert_everywhere_equal(run_everywhere, case.kernel_int32, case.reference_int32(), case.describe())
                for mode in MODES:
                    case.mode, case.b_scale, case.y_zp = mode, pow2(-13), np.int8(0)
                    want = case.reference_qlinear()
                    assert_everywhere_equal(run_everywhere, case.kernel_qlinear, want, case.describe())


def test_m1_and_k1_shapes(kernel_path, num_threads):
    """M = 1 and K = 1 (one K group, 3 bytes of padding) across tile boundaries of N."""
    rng = np.random.default_rng(11)
    checked = 0
    for M, K in ((1, 1), (1, 5), (1, 300), (7, 1), (13, 1)):
        for N in (1, 16, 17, 64, 65, 130):
            for a_dt in DTYPES:
                for b_dt in DTYPES:
                    case = Case(a=fill(rng, (M, K), a_dt, "random"), b=fill(rng, (K, N), b_dt, "random"),
                                a_zp=np.dtype(a_dt).type(3), b_zp=fill(rng, (N,), b_dt, "random"),
                                bias=rng.integers(-1000, 1000, N).astype(np.int32))
                    np.testing.assert_array_equal(case.kernel_int32(), case.reference_int32(), case.describe())
                    for mode in MODES:
                        case.mode, case.b_scale, case.y_zp = mode, pow2(-7), np.uint8(100)
                        np.testing.assert_array_equal(case.kernel_qlinear(), case.reference_qlinear(),
                                                      case.describe())
                    checked += 1
    assert checked == 5 * 6 * 4


# docs/semantics.md 4.7: (acc, S) -> fp32, q31, q31_single, pot
TIE_TABLE = [
    (5, 2, (2, 3, 3, 3)),
    (-5, 2, (-2, -2, -2, -2)),
    (3, 2, (2, 2, 2, 2)),
    (10, 4, (2, 3, 3, 3)),
    (-10, 4, (-2, -3, -2, -2)),
    (-6, 4, (-2, -2, -1, -1)),
    (5, 4, (1, 2, 1, 1)),
]


@pytest.mark.parametrize("acc,denominator,expected", TIE_TABLE)
def test_semantics_tie_table(acc, denominator, expected, kernel_path, num_threads):
    """The worked values of docs/semantics.md 4.7, independent of the reference."""
    a = np.array([[acc]], np.int8)
    b = np.array([[1]], np.int8)
    for mode, want in zip(MODES, expected):
        got = ops.qlinear_matmul(a, 1.0, np.int8(0), b, 1.0, np.int8(0), float(denominator), np.int8(0), mode=mode)
        assert got.tolist() == [[want]], (mode, acc, denominator)


def test_fp32_rounds_the_accumulator_to_float32(kernel_path):
    """acc = 2^24 + 2^16 + 1, S = 2^-17: exact 128.5000076 -> 129, but fl32(acc) = 2^24 + 2^16 -> 128.5 -> 128."""
    acc = 2 ** 24 + 2 ** 16 + 1
    a, b = np.zeros((1, 1), np.uint8), np.zeros((1, 1), np.int8)
    bias = np.array([acc], np.int32)
    want = {"fp32": 128, "q31": 129, "q31_single": 129, "pot": 129}
    for mode in MODES:
        got = ops.qlinear_matmul(a, 1.0, 0, b, 2.0 ** -17, 0, 1.0, np.uint8(0), bias, mode=mode)
        assert int(got[0, 0]) == want[mode], mode


@pytest.mark.parametrize("y_dt", DTYPES)
def test_every_tie_in_range(y_dt, run_everywhere):
    """a = every uint8 value (K = 1), S[c] = 2^-c per channel: exact ties for c >= 1.

    Also checks the test is not vacuous: the modes must disagree somewhere.
    """
    a = np.arange(256, dtype=np.uint8).reshape(256, 1)
    b = np.array([[1, -1, 1, -1, 1, 1, 1, 1, 1, 1]], np.int8)
    N = b.shape[1]
    w_scale = np.array([pow2(-c) for c in range(N)], np.float32)
    bias = np.array([-128, 128, -300, 300, -1000, 1000, -64, 7, -2 ** 20, 2 ** 20], np.int32)
    outs = {}
    for mode in MODES:
        for clip in (None, "relu", "relu6", (RANGES[y_dt][0] + 10, RANGES[y_dt][1] - 10)):
            case = Case(a=a, b=b, a_zp=np.uint8(77), b_zp=np.int8(0), bias=bias, b_scale=w_scale,
                        y_scale=np.float32(0.25), y_zp=np.dtype(y_dt).type(RANGES[y_dt][0] + 100),
                        mode=mode, clip=clip)
            want = case.reference_qlinear()
            assert_everywhere_equal(run_everywhere, case.kernel_qlinear, want, case.describe())
            if clip is None:
                outs[mode] = want
    assert not np.array_equal(outs["fp32"], outs["q31_single"])
    assert not np.array_equal(outs["q31"], outs["q31_single"])
    np.testing.assert_array_equal(outs["pot"], outs["q31_single"])  # semantics 4.5 property


@pytest.mark.slow
def test_big_shape_identical_across_paths_and_threads(run_everywhere):
    """300 x 700 x 500: every path and thread count gives the reference's bits."""
    rng = np.random.default_rng(2024)
    M, K, N = 300, 700, 500
    case = Case(a=rng.integers(-128, 128, (M, K)).astype(np.int8), b=rng.integers(0, 256, (K, N)).astype(np.uint8),
                a_zp=np.int8(-5), b_zp=rng.integers(0, 256, N).astype(np.uint8),
                bias=rng.integers(-(2 ** 20), 2 ** 20, N).astype(np.int32),
                b_scale=(2.0 ** rng.uniform(-16, -12, N)).astype(np.float32), y_zp=np.uint8(128))
    want = case.reference_int32()
    assert_everywhere_equal(run_everywhere, case.kernel_int32, want, case.describe())
    acc = want.astype(np.int64)
    for mode in ("fp32", "q31"):
        case.mode = mode
        y = assert_everywhere_equal(run_everywhere, case.kernel_qlinear,
                                    R.requantize(acc, R.derive_requant(mode, case.a_scale, case.b_scale, case.y_scale),
                                                 128, 0, 255).astype(np.uint8), case.describe())
        assert len(set(v.tobytes() for v in y.values())) == 1
        assert len(np.unique(y[("scalar", 1)])) > 50  # not a saturated, trivially equal output


def test_batched_activations(kernel_path, num_threads):
    """a [B, M, K] gives out [B, M, N] equal to stacking the 2-D results."""
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (3, 4, 70)).astype(np.uint8)
    b = rng.integers(-128, 128, (70, 33)).astype(np.int8)
    got = ops.matmul_integer(a, b, np.uint8(9), np.int8(-2))
    assert got.shape == (3, 4, 33)
    np.testing.assert_array_equal(got, R.matmul_integer(a, b, np.uint8(9), np.int8(-2)))
    for i in range(3):
        np.testing.assert_array_equal(got[i], ops.matmul_integer(a[i], b, np.uint8(9), np.int8(-2)))
    y = ops.qlinear_matmul(a, 0.02, np.uint8(9), b, 0.01, np.int8(-2), 0.5, np.int8(1), mode="q31")
    np.testing.assert_array_equal(
        y, R.qlinear_matmul(a, 0.02, np.uint8(9), b, 0.01, np.int8(-2), 0.5, np.int8(1), mode="q31"))

