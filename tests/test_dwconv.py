"""The C++ depthwise convolution (pyqinfer.ops._dwconv -> _core.dwconv_nhwc) equals
an independent int64 oracle bit for bit (docs/semantics.md sections 2 and 4;
convolution is section 10).

The oracle (``oracle_acc`` below) is the formula itself, written with numpy int64
and an explicit validity mask per tap, no padding tricks and no zero-point
folding; requantization is pyqinfer.reference's (derive_requant,
activation_bounds, requantize). Every comparison runs on every kernel path this
CPU has and with 1 and 2 threads (``run_everywhere``). Channel counts straddle
the kernels' vectors (8 int32 lanes on AVX2, 16 on AVX-512) and 4-vector blocks
(32 / 64 channels).
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import pyqinfer
import pyqinfer.reference as R
from pyqinfer import _core
from pyqinfer.ops import _dwconv as D

from test_qgemm import (DTYPES, FILL_STYLES, RANGES, assert_everywhere_equal, examples, fill,  # noqa: E402
                        requant_scales, zero_point_st)

MODES = R.MODES
CLIPS = (None, None, "relu", "relu6", "range")
EDGE_C = (1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 96, 127, 144)
KSIZES = (1, 3, 5, 7)
# Below 2 * kMinMacsPerThread (csrc/conv/dwconv.cpp) the operator runs one thread.
TWO_THREAD_MACS = 2 ** 19


# ----------------------------------------------------------------------------- the oracle

def out_size(n, k, s, p0, p1, d):
    return (n + p0 + p1 - d * (k - 1) - 1) // s + 1


def oracle_acc(x, za, w, zw, bias, strides, pads, dilations):
    """acc[n,oh,ow,c] = wrap32( sum_{kh,kw} (x[n,ih,iw,c] - za) * (w[c,0,kh,kw] - zw[c]) + bias[c] ),
    ih = oh*sh - pad_top + kh*dh, iw = ow*sw - pad_left + kw*dw; a tap outside x adds 0."""
    N, H, W, C = x.shape
    _, _, KH, KW = w.shape
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = strides, pads, dilations
    OH, OW = out_size(H, KH, sh, pt, pb, dh), out_size(W, KW, sw, pl, pr, dw)
    xd = x.astype(np.int64) - int(za)                                     # x - za
    wd = w[:, 0].astype(np.int64) - np.broadcast_to(np.asarray(zw, np.int64), (C,))[:, None, None]  # w - zw
    acc = np.zeros((N, OH, OW, C), np.int64)
    oh, ow = np.arange(OH), np.arange(OW)
    for kh in range(KH):
        ih = oh * sh - pt + kh * dh
        for kw in range(KW):
            iw = ow * sw - pl + kw * dw
            valid = (ih[:, None] >= 0) & (ih[:, None] < H) & (iw[None, :] >= 0) & (iw[None, :] < W)
            tap = xd[:, np.clip(ih, 0, H - 1)][:, :, np.clip(iw, 0, W - 1)]  # [N, OH, OW, C]
            acc += np.where(valid[None, :, :, None], tap, 0) * wd[:, kh, kw]
    if bias is not None:
        acc += bias.astype(np.int64)
    return ((acc + 2 ** 31) % 2 ** 32 - 2 ** 31).astype(np.int32)  # wrap32


def oracle_requant(acc, mode, x_s, w_s, y_s, y_zp, clip):
    params = R.derive_requant(mode, x_s, w_s, y_s)
    lo, hi = R.activation_bounds(clip, y_s, y_zp, y_zp.dtype)
    return R.requantize(acc, params, y_zp, lo, hi).astype(y_zp.dtype)


def test_oracle_by_hand():
    """The oracle on a case small enough to check by hand: 1x3x3x2, 3x3 kernel, pads 1, stride 2."""
    x = np.arange(18, dtype=np.uint8).reshape(1, 3, 3, 2)
    w = np.ones((2, 1, 3, 3), np.int8)
    w[1] = 2
    acc = oracle_acc(x, 1, w, np.array([0, 1]), np.array([5, -5], np.int32), (2, 2), (1, 1, 1, 1), (1, 1))
    # channel 0 values x[.,.,0] - 1 = [[-1,1,3],[5,7,9],[11,13,15]]; output (0,0) covers the top-left 2x2.
    assert acc.shape == (1, 2, 2, 2)
    assert acc[0, 0, 0, 0] == (-1 + 1 + 5 + 7) + 5
    assert acc[0, 1, 1, 0] == (7 + 9 + 13 + 15) + 5
    # channel 1: w - zw = 1, values x[.,.,1] - 1 = [[0,2,4],[6,8,10],[12,14,16]]
    assert acc[0, 0, 1, 1] == (2 + 4 + 8 + 10) - 5


# ----------------------------------------------------------------------------- cases

class Case:
    def __init__(self, **kw):
        self.__dict__.update(kw)

    @property
    def packed(self):
        return D.pack_depthwise_weights(self.w, self.w_zp)

    def kernel_int32(self):
        return D.depthwise_conv_nhwc(self.x, self.x_zp, self.packed, self.bias, "int32", None, 0, 0, 0,
                                     self.w.shape[2:], self.strides, self.pads, self.dilations)

    def kernel_q(self):
        C = self.w.shape[0]
        rq = D.derive_requant(self.mode, self.x_s, self.w_s, self.y_s, C)
        lo, hi = pyqinfer.ops.activation_bounds(self.clip, float(self.y_s), int(self.y_zp), self.y_zp.dtype)
        return D.depthwise_conv_nhwc(self.x, self.x_zp, self.packed, self.bias, str(self.y_zp.dtype), rq,
                                     int(self.y_zp), lo, hi, None, self.strides, self.pads, self.dilations)

    def acc(self):
        return oracle_acc(self.x, self.x_zp, self.w, self.w_zp, self.bias, self.strides, self.pads, self.dilations)

    def macs(self):
        N, H, W, C = self.x.shape
        KH, KW = self.w.shape[2:]
        OH = out_size(H, KH, self.strides[0], self.pads[0], self.pads[2], self.dilations[0])
        OW = out_size(W, KW, self.strides[1], self.pads[1], self.pads[3], self.dilations[1])
        return N * OH * OW * C * KH * KW

    def describe(self):
        return (f"x {self.x.dtype}{self.x.shape} zp={self.x_zp!r}, w {self.w.dtype}{self.w.shape} zp={self.w_zp!r}, "
                f"strides={self.strides} pads={self.pads} dilations={self.dilations}, "
                f"bias={'none' if self.bias is None else 'int32[C]'}, {getattr(self, 'mode', '')} "
                f"scales=({getattr(self, 'x_s', '')!r}, {getattr(self, 'w_s', '')!r}, {getattr(self, 'y_s', '')!r}) "
                f"y_zp={getattr(self, 'y_zp', '')!r} clip={getattr(self, 'clip', '')!r}")


@st.composite
def geometry(draw, big=False):
    ks = KSIZES[1:] if big else KSIZES
    KH, KW = draw(st.sampled_from(ks)), draw(st.sampled_from(ks))
    strides = (draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2])))
    dil = (draw(st.sampled_from([1, 1, 2])), draw(st.sampled_from([1, 1, 2])))
    pads = tuple(draw(st.integers(0, 4)) for _ in range(4))  # top, left, bottom, right; asymmetric
    spans = (dil[0] * (KH - 1) + 1, dil[1] * (KW - 1) + 1)
    if big:
        C = draw(st.sampled_from([144, 150, 161]))
        H = draw(st.integers(40, 48))
        W = draw(st.integers(40, 48))
        N = 2
    else:
        C = draw(st.one_of(st.sampled_from(EDGE_C), st.integers(1, 160)))
        # H + pads >= span; odd and tiny sizes included
        H = draw(st.integers(max(1, spans[0] - pads[0] - pads[2]), max(1, spans[0] - pads[0] - pads[2]) + 9))
        W = draw(st.integers(max(1, spans[1] - pads[1] - pads[3]), max(1, spans[1] - pads[1] - pads[3]) + 9))
        N = draw(st.sampled_from([1, 1, 2]))
    return N, H, W, C, KH, KW, strides, pads, dil


@st.composite
def operands(draw, big=False):
    N, H, W, C, KH, KW, strides, pads, dil = draw(geometry(big))
    x_dt, w_dt = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    x = fill(rng, (N, H, W, C), x_dt, draw(FILL_STYLES))
    w = fill(rng, (C, 1, KH, KW), w_dt, draw(FILL_STYLES))
    x_zp = np.dtype(x_dt).type(draw(zero_point_st(x_dt)))
    if draw(st.booleans()):
        w_zp = np.dtype(w_dt).type(draw(zero_point_st(w_dt)))
    else:
        w_zp = fill(rng, (C,), w_dt, draw(st.sampled_from(["random", "extremes", "min", "max"])))
    bias_kind = draw(st.sampled_from([None, None, "small", "small", "full", "extreme"]))
    bias = None
    if bias_kind == "small":
        bias = rng.integers(-(2 ** 16), 2 ** 16, size=C).astype(np.int32)
    elif bias_kind == "full":
        bias = rng.integers(-(2 ** 31), 2 ** 31, size=C, dtype=np.int64).astype(np.int32)
    elif bias_kind == "extreme":
        bias = rng.choice(np.array([-(2 ** 31), 2 ** 31 - 1], np.int32), size=C)
    return Case(x=x, w=w, x_zp=x_zp, w_zp=w_zp, bias=bias, strides=strides, pads=pads, dilations=dil)


@st.composite
def qcases(draw, big=False):
    case = draw(operands(big))
    acc = case.acc()
    return draw_requant(draw, case, acc, draw(st.sampled_from(MODES)))


def draw_requant(draw, case, acc, mode):
    """Sets case's mode, scales, output zero point (often centred on the outputs) and clip."""
    case.mode = mode
    case.x_s, case.w_s, case.y_s, _, center = draw(requant_scales(mode, acc))
    y_dt = draw(st.sampled_from(DTYPES))
    lo, hi = RANGES[y_dt]
    if center is not None and draw(st.integers(0, 7)):  # the outputs' median mid-range
        y_zp = int(np.clip(round((lo + hi) / 2 - center) + draw(st.integers(-20, 20)), lo, hi))
    else:
        y_zp = draw(zero_point_st(y_dt))
    case.y_zp = np.dtype(y_dt).type(y_zp)
    clip = draw(st.sampled_from(CLIPS))
    if clip == "range":
        c_lo = draw(st.integers(lo, hi))
        clip = (c_lo, draw(st.integers(c_lo, hi)))
    case.clip = clip
    return case


def check_q(case, run_everywhere):
    try:
        want = oracle_requant(case.acc(), case.mode, case.x_s, case.w_s, case.y_s, case.y_zp, case.clip)
    except ValueError:  # a scale the mode cannot represent: the kernel API must reject it too
        with pytest.raises(ValueError):
            case.kernel_q()
        return
    assert_everywhere_equal(run_everywhere, case.kernel_q, want, case.describe())


# ----------------------------------------------------------------------------- properties

@settings(max_examples=examples(0.5))
@given(case=operands())
def test_int32_matches_oracle(case, run_everywhere):
    assert_everywhere_equal(run_everywhere, case.kernel_int32, case.acc(), case.describe())


@settings(max_examples=examples(0.6))
@given(case=qcases())
def test_requantized_matches_oracle(case, run_everywhere):
    check_q(case, run_everywhere)


@settings(max_examples=examples(0.04))
@given(case=qcases(big=True))
def test_two_thread_shapes(case, run_everywhere):
    assert case.macs() >= TWO_THREAD_MACS  # the operator really splits rows over 2 threads
    assert_everywhere_equal(run_everywhere, case.kernel_int32, case.acc(), case.describe())
    check_q(case, run_everywhere)


# ----------------------------------------------------------------------------- the row-quad kernel

def _on_quad_path(case, out_dtype, mode):
    """Whether the avx512vnni path runs dwconv_avx512vnni.cpp's row-quad kernel for this case."""
    if "avx512vnni" not in pyqinfer.kernel_paths():
        return False
    try:
        pyqinfer.set_kernel_path("avx512vnni")
        return _core.dw_uses_quad_kernel(case.packed._core, case.dilations[1], out_dtype, mode)
    finally:
        pyqinfer.set_kernel_path("auto")


@st.composite
def quad_cases(draw):
    """Cases the row-quad kernel takes: KW <= 4, dilation 1 along W, w - zw in int8
    (int8 weights with zero point 0, or uint8 weights in [zw - 128, zw + 127]);
    int8 and uint8 activations, any zero point, strides 1-3 and padding."""
    KH, KW = draw(st.sampled_from([1, 2, 3, 3, 3, 5])), draw(st.sampled_from([1, 2, 3, 3, 3, 4]))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dil = (draw(st.sampled_from([1, 1, 2])), 1)
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    spans = (dil[0] * (KH - 1) + 1, KW)
    C = draw(st.one_of(st.sampled_from(EDGE_C + (128, 191, 192, 193)), st.integers(1, 200)))
    H = draw(st.integers(max(1, spans[0] - pads[0] - pads[2]), max(1, spans[0] - pads[0] - pads[2]) + 8))
    W = draw(st.integers(max(1, spans[1] - pads[1] - pads[3]), max(1, spans[1] - pads[1] - pads[3]) + 8))
    N = draw(st.sampled_from([1, 1, 2]))
    x_dt = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    x = fill(rng, (N, H, W, C), x_dt, draw(FILL_STYLES))
    x_zp = np.dtype(x_dt).type(draw(zero_point_st(x_dt)))
    if draw(st.booleans()):
        w = fill(rng, (C, 1, KH, KW), "int8", draw(FILL_STYLES))
        w_zp = np.int8(0)
    else:  # uint8 weights within int8 reach of their (per-channel) zero point
        zw = rng.integers(0, 256, C)
        lo, hi = np.maximum(zw - 128, 0), np.minimum(zw + 127, 255)
        w = (lo[:, None, None, None] + (rng.random((C, 1, KH, KW)) * (hi - lo + 1)[:, None, None, None])
             .astype(np.int64)).clip(0, 255).astype(np.uint8)
        w_zp = zw.astype(np.uint8)
    bias = draw(st.sampled_from([None, "small", "extreme"]))
    if bias == "small":
        bias = rng.integers(-(2 ** 16), 2 ** 16, size=C).astype(np.int32)
    elif bias == "extreme":
        bias = rng.choice(np.array([-(2 ** 31), 2 ** 31 - 1], np.int32), size=C)
    case = Case(x=x, w=w, x_zp=x_zp, w_zp=w_zp, bias=bias, strides=strides, pads=pads, dilations=dil)
    return draw_requant(draw, case, case.acc(), "fp32")


@settings(max_examples=examples(0.6))
@given(case=quad_cases())
def test_quad_kernel_matches_oracle(case, run_everywhere):
    """The row-quad kernel (int32 and fp32 8-bit output) on every path and thread count."""
    if "avx512vnni" in pyqinfer.kernel_paths():
        assert _on_quad_path(case, "int32", "fp32") and _on_quad_path(case, str(case.y_zp.dtype), "fp32")
    assert_everywhere_equal(run_everywhere, case.kernel_int32, case.acc(), case.describe())
    check_q(case, run_everywhere)


@pytest.mark.parametrize("y_dt", DTYPES)
@pytest.mark.parametrize("x_dt", DTYPES)
def test_quad_kernel_saturation_and_clamps(x_dt, y_dt, run_everywhere):
    """The 64-channel epilogue's saturating packs: huge and tiny effective scales
    (f far beyond int32, then far beyond int16), extreme zero points and clip
    bounds, 3x3 pads 1 on 2 x 130 channels (two 64-groups and a 2-channel tail)."""
    rng = np.random.default_rng(3)
    (xl, xh), (yl, yh) = RANGES[x_dt], RANGES[y_dt]
    C = 130
    x = rng.integers(xl, xh + 1, (2, 6, 7, C)).astype(x_dt)
    w = rng.integers(-128, 128, (C, 1, 3, 3)).astype(np.int8)
    saturated = set()
    for y_s in (np.float32(1e-30), np.float32(1e-6), np.float32(0.3), np.float32(40.0)):
        for y_zp in (yl, yh, (yl + yh) // 2):
            for clip in (None, (yl + 3, yh - 5), ((yl + yh) // 2, (yl + yh) // 2)):
                w_s = (rng.random(C) * 2 + 0.5).astype(np.float32)
                case = Case(x=x, w=w, x_zp=np.dtype(x_dt).type(xl + 7), w_zp=np.int8(0),
                            bias=rng.integers(-(2 ** 31), 2 ** 31, C, dtype=np.int64).astype(np.int32),
                            strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), mode="fp32",
                            x_s=np.float32(1.0), w_s=w_s, y_s=y_s, y_zp=np.dtype(y_dt).type(y_zp), clip=clip)
                want = oracle_requant(case.acc(), "fp32", case.x_s, case.w_s, case.y_s, case.y_zp, clip)
                assert_everywhere_equal(run_everywhere, case.kernel_q, want, case.describe())
                if clip is None and y_s < 1e-5:
                    saturated |= set(np.unique(want).tolist()) & {yl, yh}
    assert saturated == {yl, yh}  # the huge effective scales (f beyond int32, even inf) saturate both ways


def test_quad_kernel_is_not_used_when_weights_do_not_fit_int8():
    if "avx512vnni" not in pyqinfer.kernel_paths():
        pytest.skip("no AVX-512 VNNI on this CPU")
    w = np.full((8, 1, 3, 3), 200, np.uint8)
    c = Case(x=np.zeros((1, 4, 4, 8), np.uint8), w=w, x_zp=np.uint8(0), w_zp=np.uint8(0), bias=None, strides=(1, 1),
             pads=(1, 1, 1, 1), dilations=(1, 1))
    assert not _on_quad_path(c, "int32", "fp32")  # w - zw = 200 > 127
    c.w_zp = np.uint8(100)
    assert _on_quad_path(c, "int32", "fp32")
    assert not _on_quad_path(c, "uint8", "q31")  # other modes keep the madd16 kernel
    c.dilations = (1, 2)
    assert not _on_quad_path(c, "int32", "fp32")
    c.dilations, c.w = (1, 1), np.full((8, 1, 3, 5), 1, np.uint8)
    assert not _on_quad_path(c, "int32", "fp32")  # KW > 4


@pytest.mark.parametrize("x_dt", DTYPES)
@pytest.mark.parametrize("w_dt", DTYPES)
def test_extremes_every_zero_point_combination(x_dt, w_dt, run_everywhere):
    """All-min / all-max activations and weights against both extreme zero points, 7x7 with padding."""
    (xl, xh), (wl, wh) = RANGES[x_dt], RANGES[w_dt]
    C = 37
    for xv in (xl, xh):
        for wv in (wl, wh):
            for za in (xl, xh):
                for zw in (wl, wh):
                    case = Case(x=np.full((2, 9, 8, C), xv, x_dt), w=np.full((C, 1, 7, 7), wv, w_dt),
                                x_zp=np.dtype(x_dt).type(za), w_zp=np.dtype(w_dt).type(zw),
                                bias=np.full(C, 2 ** 31 - 1, np.int32), strides=(1, 2), pads=(3, 2, 1, 3),
                                dilations=(1, 1))
                    want = case.acc()
                    assert_everywhere_equal(run_everywhere, case.kernel_int32, want, case.describe())


def test_bias_wraps(run_everywhere):
    """acc + bias beyond 2^31 - 1 wraps (semantics 2.1), it does not saturate."""
    C = 20
    case = Case(x=np.full((1, 3, 3, C), 255, np.uint8), w=np.full((C, 1, 3, 3), -128, np.int8), x_zp=np.uint8(0),
                w_zp=np.int8(127), bias=np.full(C, 2 ** 31 - 1, np.int32), strides=(1, 1), pads=(0, 0, 0, 0),
                dilations=(1, 1))
    want = case.acc()
    assert want[0, 0, 0, 0] == np.int32(2 ** 31 - 1 - 9 * 255 * 255)  # negative taps: no wrap here
    case.w_zp, case.w = np.int8(-128), np.full((C, 1, 3, 3), 127, np.int8)
    want = case.acc()
    assert want[0, 0, 0, 0] < 0  # 2^31 - 1 + 9*255*255 wrapped
    assert_everywhere_equal(run_everywhere, case.kernel_int32, want, case.describe())


@pytest.mark.slow
def test_accumulator_wraps_over_many_taps(run_everywhere):
    """A 1 x 33100 kernel of (255 - 0) * (127 - (-128)) terms exceeds 2^31 and wraps."""
    KW = 33100
    case = Case(x=np.full((1, 1, KW, 3), 255, np.uint8), w=np.full((3, 1, 1, KW), 127, np.int8), x_zp=np.uint8(0),
                w_zp=np.int8(-128), bias=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1))
    want = case.acc()
    assert want[0, 0, 0, 0] == np.int64(KW * 255 * 255) - 2 ** 32
    assert_everywhere_equal(run_everywhere, case.kernel_int32, want, case.describe())


@pytest.mark.parametrize("mode", MODES)
def test_mobilenet_like_layer_every_mode(mode, run_everywhere):
    """144 channels 3x3 stride 2 with relu6, per-channel scales and zero points, each mode."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (1, 29, 29, 144), dtype=np.int64).astype(np.uint8)
    w = rng.integers(-128, 128, (144, 1, 3, 3), dtype=np.int64).astype(np.int8)
    w_s = (2.0 ** rng.integers(-9, -5, 144)).astype(np.float32)  # powers of two: pot works too
    case = Case(x=x, w=w, x_zp=np.uint8(3), w_zp=rng.integers(-5, 5, 144).astype(np.int8),
                bias=rng.integers(-5000, 5000, 144).astype(np.int32), strides=(2, 2), pads=(1, 1, 1, 1),
                dilations=(1, 1), mode=mode, x_s=np.float32(0.5), w_s=w_s, y_s=np.float32(4.0),
                y_zp=np.uint8(10), clip="relu6")
    want = oracle_requant(case.acc(), mode, case.x_s, case.w_s, case.y_s, case.y_zp, case.clip)
    assert 0 < (want == 10).mean() < 0.9 and (want > 10).any()  # not all saturated or all zero
    assert_everywhere_equal(run_everywhere, case.kernel_q, want, case.describe())


def test_avx512vnni_path_uses_the_avx512bw_kernel():
    if "avx512vnni" not in pyqinfer.kernel_paths():
        pytest.skip("no AVX-512 VNNI on this CPU")
    try:
        pyqinfer.set_kernel_path("avx512vnni")
        assert "avx512bw" in _core.dw_kernel_name()
    finally:
        pyqinfer.set_kernel_path("auto")


# ----------------------------------------------------------------------------- validation

def _args(**over):
    C = 4
    a = dict(x_nhwc=np.zeros((1, 5, 5, C), np.uint8), x_zp=0, packed_w=D.pack_depthwise_weights(np.ones((C, 1, 3, 3), np.int8)),
             bias=None, out_dtype="int32", requant=None, y_zp=0, lo=0, hi=0, kernel=None, strides=(1, 1),
             pads=(1, 1, 1, 1), dilations=(1, 1))
    a.update(over)
    return a


@pytest.mark.parametrize("over, exc, words", [
    (dict(x_nhwc=np.zeros((1, 5, 5, 4), np.int16)), TypeError, "x_nhwc"),
    (dict(x_nhwc=[[1]]), TypeError, "x_nhwc"),
    (dict(x_nhwc=np.zeros((5, 5, 4), np.uint8)), ValueError, "x_nhwc"),
    (dict(x_nhwc=np.zeros((1, 5, 5, 3), np.uint8)), ValueError, "channels"),
    (dict(x_nhwc=np.zeros((1, 0, 5, 4), np.uint8)), ValueError, "H, W"),
    (dict(x_zp=256), ValueError, "x_zp"),
    (dict(x_zp=np.int8(0)), TypeError, "x_zp"),
    (dict(packed_w=np.ones((4, 1, 3, 3), np.int8)), TypeError, "packed_w"),
    (dict(bias=np.zeros(4, np.int64)), TypeError, "bias"),
    (dict(bias=np.zeros(5, np.int32)), ValueError, "bias"),
    (dict(out_dtype="float32"), ValueError, "out_dtype"),
    (dict(out_dtype="uint8"), TypeError, "requant"),
    (dict(kernel=(5, 5)), ValueError, "kernel"),
    (dict(strides=(0, 1)), ValueError, "strides"),
    (dict(strides=(1,)), ValueError, "strides"),
    (dict(pads=(1, 1, -1, 1)), ValueError, "pads"),
    (dict(dilations=(1, 0)), ValueError, "dilations"),
    (dict(pads=(0, 0, 0, 0), x_nhwc=np.zeros((1, 2, 5, 4), np.uint8)), ValueError, "along H"),
    (dict(dilations=(1, 4)), ValueError, "along W"),
])
def test_bad_arguments_name_the_argument(over, exc, words):
    with pytest.raises(exc, match=words):
        D.depthwise_conv_nhwc(**_args(**over))


def test_bad_requant_and_clip():
    rq3 = D.derive_requant("fp32", 0.1, 0.1, 0.1, 3)  # 3 channels for a 4-channel layer
    with pytest.raises(ValueError, match="C channels"):
        D.depthwise_conv_nhwc(**_args(out_dtype="uint8", requant=rq3, lo=0, hi=255))
    rq = D.derive_requant("fp32", 0.1, np.full(4, 0.1, np.float32), 0.1, 4)
    with pytest.raises(ValueError, match="lo="):
        D.depthwise_conv_nhwc(**_args(out_dtype="int8", requant=rq, lo=-128, hi=200))
    with pytest.raises(ValueError, match="y_zp"):
        D.depthwise_conv_nhwc(**_args(out_dtype="int8", requant=rq, y_zp=200, lo=-128, hi=127))
    with pytest.raises(ValueError, match="w_scale"):
        D.derive_requant("fp32", 0.1, np.full(3, 0.1, np.float32), 0.1, 4)


def test_bad_weights():
    with pytest.raises(ValueError, match=r"\[C, 1, KH, KW\]"):
        D.pack_depthwise_weights(np.ones((4, 2, 3, 3), np.int8))
    with pytest.raises(TypeError, match="w "):
        D.pack_depthwise_weights(np.ones((4, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match="w_zero_point"):
        D.pack_depthwise_weights(np.ones((4, 1, 3, 3), np.int8), np.array([0, 1, 2], np.int8))
    with pytest.raises(ValueError, match="w_zero_point"):
        D.pack_depthwise_weights(np.ones((4, 1, 3, 3), np.uint8), 300)


def test_core_rechecks_sizes():
    """The C++ layer rejects what the Python layer would have caught (ValueError, never a crash)."""
    pw = _core.pack_dw_weights(np.ones((4, 1, 3, 3), np.int8), np.zeros(1, np.int32))
    x = np.zeros((1, 5, 5, 4), np.uint8)
    ok = dict(x=x, x_zero_point=0, packed=pw, bias=None, out_dtype="int32", requant=None, y_zero_point=0, lo=0, hi=0,
              strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1])
    assert _core.dwconv_nhwc(**ok).shape == (1, 3, 3, 4)
    for over in (dict(x=np.zeros((1, 5, 5, 3), np.uint8)), dict(x_zero_point=-1), dict(strides=[1, 0]),
                 dict(pads=[0, 0, -1, 0]), dict(dilations=[3, 1]), dict(strides=[1]),
                 dict(bias=np.zeros(3, np.int32)), dict(out_dtype="uint8"),
                 dict(out_dtype="uint8", requant=_core.derive_requant("fp32", 1.0, np.ones(2, np.float32), 1.0, 2),
                      lo=0, hi=255)):
        with pytest.raises(ValueError):
            _core.dwconv_nhwc(**{**ok, **over})
    with pytest.raises(ValueError):
        _core.pack_dw_weights(np.ones((4, 1, 3, 3), np.int8), np.zeros(2, np.int32))
    with pytest.raises(ValueError):
        _core.pack_dw_weights(np.ones((4, 3, 3), np.int8), np.zeros(1, np.int32))


def test_noncontiguous_input_and_batch_zero(kernel_path, num_threads):
    case = Case(x=np.random.default_rng(1).integers(0, 256, (2, 7, 9, 40)).astype(np.uint8)[:, :, ::-1],
                w=np.random.default_rng(2).integers(-128, 128, (40, 1, 3, 5)).astype(np.int8), x_zp=np.uint8(9),
                w_zp=np.int8(-3), bias=None, strides=(2, 1), pads=(0, 2, 1, 2), dilations=(2, 1))
    np.testing.assert_array_equal(case.kernel_int32(), case.acc())
    case.x = case.x[:0]
    assert case.kernel_int32().shape == case.acc().shape == (0, 2, 9, 40)
