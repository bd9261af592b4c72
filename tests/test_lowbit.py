"""int4 and low-bit (1-8 bit, ternary, binary) GEMM (docs/semantics.md section 9):
pyqinfer.ops equals the golden model bit for bit on every kernel path and thread
count, with weights packed as nibbles on the VNNI path (qgemm_6x64c8_w4) and
ONNX-packed int4 operands; out-of-width values and malformed packed buffers are
rejected with errors naming the argument.

The w4 VNNI kernel packs K in pairs of 4-byte groups (8 k per 64-byte load) and
64-column panels, so shapes straddle multiples of 8 in K and of 16/64 in N; odd
K*N exercise the padding nibble of ONNX packing.
"""
import zlib
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import pyqinfer
import pyqinfer.ops as ops
import pyqinfer.reference as R
from pyqinfer import _core
from test_qgemm import assert_everywhere_equal, examples, pow2, requant_scales

MODES = R.MODES
W4_KERNEL = "qgemm_6x64c8_w4_avx512vnni"
SIGNED_WIDTHS = (2, 3, 4, 5, 6, 7, 8, "ternary", "binary")
UNSIGNED_WIDTHS = (1, 2, 3, 4, 5, 6, 7, 8)
EDGE_K = (1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 23, 24, 25, 63, 64, 65, 127, 129, 255, 257)
EDGE_N = (1, 3, 15, 16, 17, 33, 63, 64, 65, 127, 129, 193)


def width_values(bits, signed):
    """All allowed values of a declared width, as a sorted int array."""
    lo, hi = R.lowbit_range(bits, signed)
    vals = np.arange(lo, hi + 1)
    return vals[vals != 0] if bits == "binary" else vals


def fill(rng, shape, bits, signed, style):
    vals = width_values(bits, signed)
    dt = np.int8 if signed else np.uint8
    if style == "random":
        return rng.choice(vals, size=shape).astype(dt)
    if style == "min":
        return np.full(shape, vals[0], dt)
    if style == "max":
        return np.full(shape, vals[-1], dt)
    return rng.choice(vals[[0, -1]], size=shape).astype(dt)  # extremes


@dataclass
class LowbitCase:
    a: np.ndarray  # unpacked container values
    b: np.ndarray
    a_bits: object
    b_bits: object
    a_zp: object
    b_zp: object
    a_packed: bool = False  # pass a as ops.PackedInt4
    b_form: str = "packed"  # "packed" (pack_weights), "int4" (PackedInt4 weights), "raw" (array + b_bits)
    bias: object = None
    a_scale: object = np.float32(1)
    b_scale: object = np.float32(1)
    y_scale: object = np.float32(1)
    y_zp: object = np.uint8(0)
    mode: str = "fp32"
    clip: object = None
    notes: dict = field(default_factory=dict)

    def a_arg(self):
        return ops.pack_int4(self.a) if self.a_packed else self.a

    def a_bits_arg(self):
        return 8 if self.a_packed else self.a_bits

    def b_args(self):
        """(b, b_zero_point, b_bits) as passed to the ops."""
        if self.b_form == "packed":
            return ops.pack_weights(self.b, self.b_zp, bits=self.b_bits), None, None
        if self.b_form == "int4":
            return ops.pack_weights(ops.pack_int4(self.b), self.b_zp), None, None
        return self.b, self.b_zp, self.b_bits

    def kernel_int32(self):
        b, zb, bb = self.b_args()
        return ops.matmul_integer(self.a_arg(), b, self.a_zp, zb, bias=self.bias, a_bits=self.a_bits_arg(), b_bits=bb)

    def reference_int32(self):
        return R.lowbit_accumulate(self.a, self.b, self.a_zp, self.b_zp, self.bias,
                                   a_bits=self.a_bits, b_bits=self.b_bits).astype(np.int32)

    def kernel_qlinear(self):
        b, zb, bb = self.b_args()
        return ops.qlinear_matmul(self.a_arg(), self.a_scale, self.a_zp, b, self.b_scale, zb, self.y_scale,
                                  self.y_zp, self.bias, mode=self.mode, clip=self.clip,
                                  a_bits=self.a_bits_arg(), b_bits=bb)

    def reference_qlinear(self):
        return R.lowbit_qlinear_matmul(self.a, self.a_scale, self.a_zp, self.b, self.b_scale, self.b_zp,
                                       self.y_scale, self.y_zp, bias=self.bias, mode=self.mode, clip=self.clip,
                                       a_bits=self.a_bits, b_bits=self.b_bits)

    def describe(self):
        return (f"a {self.a.dtype}{self.a.shape} bits={self.a_bits!r} packed={self.a_packed} zp={self.a_zp!r}; "
                f"b {self.b.dtype}{self.b.shape} bits={self.b_bits!r} form={self.b_form} zp={self.b_zp!r}; "
                f"bias={'none' if self.bias is None else 'int32[N]'} mode={self.mode} clip={self.clip!r} "
                f"scales=({self.a_scale!r}, {self.b_scale!r}, {self.y_scale!r}) y_zp={self.y_zp!r} {self.notes}")


@st.composite
def width(draw, int4_bias=True):
    """(bits, signed): int4/uint4 drawn most often, every other width too."""
    signed = draw(st.booleans())
    if int4_bias and draw(st.booleans()):
        return 4, signed
    return draw(st.sampled_from(SIGNED_WIDTHS if signed else UNSIGNED_WIDTHS)), signed


@st.composite
def zero_point(draw, bits, signed):
    lo, hi = R.lowbit_range(bits, signed)
    return draw(st.one_of(st.sampled_from([lo, hi]), st.integers(lo, hi)))


@st.composite
def lowbit_operands(draw, big=False):
    a_bits, a_signed = draw(width())
    b_bits, b_signed = draw(width())
    if big:  # above the operator's 2-thread threshold
        M, N, K = draw(st.integers(30, 70)), draw(st.integers(100, 200)), draw(st.integers(400, 600))
    else:
        M = draw(st.one_of(st.sampled_from([1, 2, 3, 5, 6, 7, 13]), st.integers(1, 20)))
        N = draw(st.one_of(st.sampled_from(EDGE_N), st.integers(1, 200)))
        K = draw(st.one_of(st.sampled_from(EDGE_K), st.integers(1, 300)))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    styles = st.sampled_from(["random", "random", "random", "min", "max", "extremes"])
    a = fill(rng, (M, K), a_bits, a_signed, draw(styles))
    b = fill(rng, (K, N), b_bits, b_signed, draw(styles))
    a_dt, b_dt = a.dtype.type, b.dtype.type
    a_zp = a_dt(draw(zero_point(a_bits, a_signed)))
    if draw(st.booleans()):
        b_zp = b_dt(draw(zero_point(b_bits, b_signed)))
    else:  # per channel, with both range ends present
        lo, hi = R.lowbit_range(b_bits, b_signed)
        b_zp = rng.integers(lo, hi + 1, size=N).astype(b_dt)
        b_zp[0], b_zp[-1] = lo, hi
    forms = ["packed", "raw"] + (["int4", "int4"] if b_bits == 4 else [])
    bias_kind = draw(st.sampled_from([None, None, "small", "full"]))
    bias = None
    if bias_kind == "small":
        bias = rng.integers(-(2 ** 12), 2 ** 12, size=N).astype(np.int32)
    elif bias_kind == "full":
        bias = rng.integers(-(2 ** 31), 2 ** 31, size=N, dtype=np.int64).astype(np.int32)
    return LowbitCase(a=a, b=b, a_bits=a_bits, b_bits=b_bits, a_zp=a_zp, b_zp=b_zp,
                      a_packed=a_bits == 4 and draw(st.booleans()), b_form=draw(st.sampled_from(forms)), bias=bias)


@st.composite
def lowbit_qlinear_cases(draw, big=False):
    case = draw(lowbit_operands(big))
    acc = case.reference_int32()
    case.mode = draw(st.sampled_from(MODES))
    case.a_scale, case.b_scale, case.y_scale, kind, center = draw(requant_scales(case.mode, acc))
    y_dt = draw(st.sampled_from([np.uint8, np.int8]))
    lo, hi = (0, 255) if y_dt is np.uint8 else (-128, 127)
    if center is not None:
        y_zp = int(np.clip(round((lo + hi) / 2 - center), lo, hi))
    else:
        y_zp = draw(st.integers(lo, hi))
    case.y_zp = y_dt(y_zp)
    case.clip = draw(st.sampled_from([None, None, "relu", "relu6"]))
    case.notes["scales"] = kind
    return case


def check_w4_selected(case):
    """On the VNNI path, weights of <= 4 bits must run on the nibble kernel (so the
    properties below really test it); wider weights on the int8 kernel."""
    if "avx512vnni" not in pyqinfer.kernel_paths():
        return
    w = case.b_args()[0] if case.b_form != "raw" else ops.pack_weights(case.b, case.b_zp, bits=case.b_bits)
    pyqinfer.set_kernel_path("avx512vnni")
    try:
        name = _core.gemm_kernel_name_for(w._core)
    finally:
        pyqinfer.set_kernel_path("auto")
    narrow = isinstance(case.b_bits, str) or case.b_bits <= 4
    assert (name == W4_KERNEL) == narrow, (name, case.b_bits)


# ------------------------------------------------------------------ hypothesis properties

@settings(max_examples=examples(1.0))
@given(case=lowbit_operands())
def test_lowbit_matmul_integer_matches_reference(case, run_everywhere):
    check_w4_selected(case)
    assert_everywhere_equal(run_everywhere, case.kernel_int32, case.reference_int32(), case.describe())


@settings(max_examples=examples(1.5))
@given(case=lowbit_qlinear_cases())
def test_lowbit_qlinear_matmul_matches_reference(case, run_everywhere):
    try:
        want = case.reference_qlinear()
    except ValueError:  # a scale the mode cannot represent: the ops must reject it as well
        with pytest.raises(ValueError):
            case.kernel_qlinear()
        assume(False)
    assert_everywhere_equal(run_everywhere, case.kernel_qlinear, want, case.describe())


@settings(max_examples=examples(0.2))
@given(case=lowbit_qlinear_cases(big=True))
def test_lowbit_two_thread_shapes(case, run_everywhere):
    assert_everywhere_equal(run_everywhere, case.kernel_int32, case.reference_int32(), case.describe())
    try:
        want = case.reference_qlinear()
    except ValueError:
        assume(False)
    assert_everywhere_equal(run_everywhere, case.kernel_qlinear, want, case.describe())


# ------------------------------------------------------------------ deterministic cases

@pytest.mark.parametrize("signed", [True, False], ids=["int4", "uint4"])
def test_int4_weights_every_mode_zero_points_at_range_ends(signed, run_everywhere):
    """int4/uint4 weights, per-tensor and per-channel zero points at both range ends,
    constant extremes and random data, every mode, odd K and N (odd packed count)."""
    rng = np.random.default_rng(3)
    lo, hi = R.lowbit_range(4, signed)
    dt = np.int8 if signed else np.uint8
    K, N, M = 37, 67, 7
    assert (K * N) % 2 == 1
    for style in ("min", "max", "extremes", "random"):
        b = fill(rng, (K, N), 4, signed, style)
        for zb in (dt(lo), dt(hi), np.array([lo, hi] * (N // 2) + [lo], dt)):
            for a_dt, za in ((np.uint8, 0), (np.uint8, 255), (np.int8, -128), (np.int8, 127)):
                a = rng.integers(np.iinfo(a_dt).min, np.iinfo(a_dt).max + 1, (M, K)).astype(a_dt)
                case = LowbitCase(a=a, b=b, a_bits=8, b_bits=4, a_zp=a_dt(za), b_zp=zb, b_form="int4")
                assert_everywhere_equal(run_everywhere, case.kernel_int32, case.reference_int32(), case.describe())
                for mode in MODES:
                    case.mode, case.b_scale, case.y_zp = mode, pow2(-9), np.int8(1)
                    assert_everywhere_equal(run_everywhere, case.kernel_qlinear, case.reference_qlinear(),
                                            case.describe())


@pytest.mark.parametrize("bits", SIGNED_WIDTHS + tuple(f"u{b}" for b in UNSIGNED_WIDTHS))
def test_every_width_both_operands(bits, run_everywhere):
    """Each width as weights and as activations (against int8/uint8 and int4 partners)."""
    signed = not (isinstance(bits, str) and bits.startswith("u"))
    bits = int(bits[1:]) if not signed else bits
    rng = np.random.default_rng(zlib.crc32(repr(str(bits)).encode()))
    lo, hi = R.lowbit_range(bits, signed)
    dt = np.int8 if signed else np.uint8
    M, K, N = 5, 41, 71
    for partner_bits, partner_signed in ((8, False), (8, True), (4, True), (4, False)):
        pdt = np.int8 if partner_signed else np.uint8
        plo, phi = R.lowbit_range(partner_bits, partner_signed)
        x = fill(rng, (M, K), bits, signed, "random")
        w = fill(rng, (K, N), bits, signed, "random")
        pa = fill(rng, (M, K), partner_bits, partner_signed, "random")
        pb = fill(rng, (K, N), partner_bits, partner_signed, "random")
        for case in (
            LowbitCase(a=pa, b=w, a_bits=partner_bits, b_bits=bits, a_zp=pdt(plo), b_zp=dt(hi)),
            LowbitCase(a=x, b=pb, a_bits=bits, b_bits=partner_bits, a_zp=dt(lo), b_zp=pdt(phi),
                       a_packed=bits == 4 and signed),
        ):
            check_w4_selected(case)
            assert_everywhere_equal(run_everywhere, case.kernel_int32, case.reference_int32(), case.describe())
            for mode in MODES:
                case.mode, case.b_scale, case.y_zp = mode, pow2(-6), np.uint8(128)
                assert_everywhere_equal(run_everywhere, case.kernel_qlinear, case.reference_qlinear(),
                                        case.describe())


def test_int4_x_int4_packed_both_sides(run_everywhere):
    """int4 x int4 and uint4 x int4 given as ONNX-packed bytes on both sides."""
    rng = np.random.default_rng(5)
    for a_signed, b_signed in ((True, True), (False, True), (True, False), (False, False)):
        M, K, N = 9, 131, 65  # M*K and K*N odd
        a = fill(rng, (M, K), 4, a_signed, "random")
        b = fill(rng, (K, N), 4, b_signed, "random")
        za = (np.int8 if a_signed else np.uint8)(-8 if a_signed else 15)
        zb = (np.int8 if b_signed else np.uint8)(7 if b_signed else 0)
        pa, pb = ops.pack_int4(a), ops.pack_int4(b)
        assert pa.data.size == (M * K + 1) // 2 and pb.data.size == (K * N + 1) // 2
        np.testing.assert_array_equal(pa.data, R.pack_int4(a, a_signed))  # ONNX order, as the reference
        want = R.lowbit_matmul_integer(a, b, za, zb, a_bits=4, b_bits=4)
        assert_everywhere_equal(run_everywhere, lambda: ops.matmul_integer(pa, pb, za, zb), want, "int4 x int4")
        want_q = R.lowbit_qlinear_matmul(a, 0.5, za, b, pow2(-5), zb, 1.0, np.int8(0), mode="q31",
                                         a_bits=4, b_bits=4)
        assert_everywhere_equal(run_everywhere, lambda: ops.qlinear_matmul(
            pa, 0.5, za, pb, pow2(-5), zb, 1.0, np.int8(0), mode="q31"), want_q, "int4 x int4 q31")


def test_onnx_packed_weights_straddle_rows():
    """With odd N a byte holds the last element of one row of b and the first of the next."""
    b = np.array([[1, 2, 3], [-1, -8, 7]], np.int8)
    p = ops.pack_int4(b)
    assert p.data.tolist() == [0x21, 0xF3, 0x78]
    np.testing.assert_array_equal(p.unpack(), b)
    np.testing.assert_array_equal(R.unpack_int4_tensor(p.data, (2, 3), True), b)
    got = ops.matmul_integer(np.array([[1, 1]], np.uint8), p)
    assert got.tolist() == [[0, -6, 10]]


@pytest.mark.slow
def test_int4_weights_wrap_large_k(run_everywhere):
    """uint8 x int4 with K past lowbit_k_max (561433): (255 - 0) * (-8 - 7) per term wraps."""
    K = R.lowbit_k_max(8, False, 4, True) + 8000
    assert K % 2 == 1
    M, N = 2, 19
    a = np.full((M, K), 255, np.uint8)
    b = np.full((K, N), -8, np.int8)
    b[:, 3] = np.random.default_rng(1).integers(-8, 8, K)
    zb = np.full(N, 7, np.int8)
    exact = K * 255 * -15
    assert exact < -(2 ** 31)
    assert R.lowbit_can_overflow(b, zb, "uint8", np.uint8(0), a_bits=8, b_bits=4)
    want = R.lowbit_matmul_integer(a, b, np.uint8(0), zb, a_bits=8, b_bits=4)
    assert want[0, 0] == (exact + 2 ** 31) % 2 ** 32 - 2 ** 31
    pb = ops.pack_int4(b)
    assert_everywhere_equal(run_everywhere, lambda: ops.matmul_integer(a, ops.pack_weights(pb, zb), np.uint8(0)),
                            want, "wrap")
    want_q = R.lowbit_qlinear_matmul(a, 1.0, np.uint8(0), b, pow2(-24), zb, 1.0, np.int8(0), mode="q31_single",
                                     a_bits=8, b_bits=4)
    assert_everywhere_equal(run_everywhere, lambda: ops.qlinear_matmul(
        a, 1.0, np.uint8(0), pb, pow2(-24), zb, 1.0, np.int8(0), mode="q31_single"), want_q, "wrap q31_single")


def test_accumulator_bound_by_width():
    """Section 9.3: the documented K limits, and the bound uses the declared activation range."""
    assert R.lowbit_k_max(4, True, 4, True) == 9544371
    assert R.lowbit_k_max(8, False, 4, True) == 561433
    assert R.lowbit_k_max("ternary", True, 8, False) == 4210752
    b = np.full((10, 2), -8, np.int8)
    # int4 activations with za = 7: max |a - za| = 15, not int8's 135
    bound = R.lowbit_accumulator_bound(b, np.int8(0), "int8", np.int8(7), a_bits=4, b_bits=4)
    assert bound.tolist() == [15 * 80, 15 * 80]
    assert R.accumulator_bound(b, np.int8(0), "int8", np.int8(7)).tolist() == [135 * 80, 135 * 80]
    with pytest.raises(ValueError, match="a_zero_point"):
        R.lowbit_accumulator_bound(b, np.int8(0), "int8", np.int8(8), a_bits=4)


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("bits", SIGNED_WIDTHS[:-3] + ("ternary",))
def test_pack_rejects_values_outside_signed_width(bits):
    lo, hi = R.lowbit_range(bits, True)
    for bad in (lo - 1, hi + 1):
        b = np.zeros((3, 5), np.int8)
        b[2, 4] = bad
        with pytest.raises(ValueError, match=r"\bb\b"):
            ops.pack_weights(b, bits=bits)
        with pytest.raises(ValueError):
            R.check_lowbit(b, bits, "b")
        if bits != "ternary" or bad > 1:  # the C++ layer re-checks (ternary as signed 2-bit: [-2, 1])
            with pytest.raises(ValueError):
                _core.pack_weights_lowbit(b, np.zeros(1, np.int32), 2 if bits == "ternary" else bits)


@pytest.mark.parametrize("bits", UNSIGNED_WIDTHS[:-1])
def test_pack_rejects_values_outside_unsigned_width(bits):
    b = np.zeros((4, 3), np.uint8)
    b[1, 1] = 2 ** bits
    with pytest.raises(ValueError, match=r"\bb\b"):
        ops.pack_weights(b, bits=bits)
    with pytest.raises(ValueError):
        _core.pack_weights_lowbit(b, np.zeros(1, np.int32), bits)


def test_width_and_zero_point_errors():
    b = np.zeros((2, 2), np.int8)
    with pytest.raises(ValueError, match="binary"):
        ops.pack_weights(b, bits=1)  # signed 1-bit: use 'binary'
    with pytest.raises(ValueError, match="0"):
        ops.pack_weights(b, bits="binary")  # 0 is not a binary value
    ops.pack_weights(np.array([[1, -1], [-1, 1]], np.int8), bits="binary")
    with pytest.raises(ValueError, match="int8 container"):
        ops.pack_weights(np.zeros((2, 2), np.uint8), bits="ternary")
    with pytest.raises(ValueError, match="bits"):
        ops.pack_weights(b, bits=9)
    with pytest.raises(TypeError, match="bits"):
        ops.pack_weights(b, bits=2.0)
    with pytest.raises(ValueError, match="b_zero_point"):
        ops.pack_weights(b, np.int8(8), bits=4)
    with pytest.raises(ValueError, match="b_zero_point"):
        ops.pack_weights(b, np.array([0, -9], np.int8), bits=4)
    with pytest.raises(ValueError):
        _core.pack_weights_lowbit(b, np.array([8], np.int32), 4)
    w = ops.pack_weights(b, bits=4)
    with pytest.raises(ValueError, match="b_bits"):
        ops.matmul_integer(np.zeros((1, 2), np.uint8), w, b_bits=3)
    a = np.array([[0, 16]], np.uint8)
    with pytest.raises(ValueError, match=r"\ba\b"):
        ops.matmul_integer(a, w, a_bits=4)
    with pytest.raises(ValueError, match="a_zero_point"):
        ops.qlinear_matmul(np.zeros((1, 2), np.uint8), 1.0, np.uint8(16), w, 1.0, None, 1.0, np.uint8(0),
                           a_bits=4)


def test_packed_int4_errors():
    with pytest.raises(ValueError, match="needs ceil"):
        ops.PackedInt4(np.zeros(7, np.uint8), (3, 5), signed=True)  # 15 values need 8 bytes
    with pytest.raises(ValueError, match="needs ceil"):
        ops.PackedInt4(np.zeros(9, np.uint8), (3, 5), signed=True)
    with pytest.raises(TypeError, match="uint8"):
        ops.PackedInt4(np.zeros(8, np.int8), (3, 5))
    with pytest.raises(ValueError):
        _core.pack_int4_weights(np.zeros(7, np.uint8), 3, 5, True, np.zeros(1, np.int32))
    with pytest.raises(ValueError):
        _core.unpack_int4(np.zeros(2, np.uint8), 5, True)
    with pytest.raises(ValueError, match="values"):
        ops.pack_int4(np.array([8], np.int8))
    with pytest.raises(ValueError, match="bits"):
        ops.pack_weights(ops.pack_int4(np.zeros((2, 2), np.int8)), bits=8)
    with pytest.raises(ValueError, match="2-D"):
        ops.pack_weights(ops.pack_int4(np.zeros(4, np.int8)))
    p = ops.PackedInt4(np.zeros(8, np.uint8), (3, 5), signed=False)
    with pytest.raises(ValueError, match="a_bits"):
        ops.matmul_integer(p, ops.pack_weights(np.zeros((5, 2), np.int8)), a_bits=2)
    with pytest.raises(ValueError, match="packed has"):
        R.unpack_int4_tensor(np.zeros(7, np.uint8), (3, 5), True)


def test_unpack_int4_matches_reference():
    rng = np.random.default_rng(9)
    for count in (0, 1, 2, 3, 1001):
        data = rng.integers(0, 256, (count + 1) // 2).astype(np.uint8)
        for signed in (True, False):
            np.testing.assert_array_equal(_core.unpack_int4(data, count, signed), R.unpack_int4(data, count, signed))
