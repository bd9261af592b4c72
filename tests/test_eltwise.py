"""Pooling, add, concat, clip, requantize, quantize and dequantize (docs/semantics.md 11).

Every kernel is compared bit for bit with pyqinfer.reference on every kernel
path and thread count (``run_everywhere``); the reference is compared with
ONNX Runtime where ORT has the op, and the places where ORT refuses an input
pyqinfer accepts are pinned down explicitly.
"""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import pyqinfer.ops as ops
import pyqinfer.reference as ref
from pyqinfer.reference.eltwise import _fma

f32 = np.float32
DTYPES = (np.uint8, np.int8)


def assert_everywhere(run_everywhere, fn, want, what=""):
    got = run_everywhere(fn)
    for key, y in got.items():
        assert y.dtype == want.dtype, (key, what)
        assert y.shape == want.shape, (key, what)
        bad = np.flatnonzero(y != want)
        assert bad.size == 0, f"{what} {key}: {bad.size} mismatches, first at {bad[0]}: {y.flat[bad[0]]} != {want.flat[bad[0]]}"


# ------------------------------------------------------------------ strategies

def _qparams(rng, dt):
    info = np.iinfo(dt)
    return f32(np.exp(rng.uniform(-4, 1))), dt(rng.integers(info.min, info.max + 1))


@st.composite
def q8(draw, shape, dtype=None):
    dt = dtype or draw(st.sampled_from(DTYPES))
    info = np.iinfo(dt)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mode = draw(st.sampled_from(["uniform", "extremes", "narrow"]))
    if mode == "uniform":
        x = rng.integers(info.min, info.max + 1, shape)
    elif mode == "extremes":
        x = rng.choice([info.min, info.min + 1, info.max - 1, info.max], shape)
    else:
        c = int(rng.integers(info.min, info.max + 1))
        x = np.clip(c + rng.integers(-3, 4, shape), info.min, info.max)
    return np.asarray(x).astype(dt)  # a 0-d array, not a numpy scalar, for shape ()


def zp_of(dt):
    info = np.iinfo(dt)
    return st.one_of(st.sampled_from([info.min, info.max, 0]), st.integers(info.min, info.max)).map(dt)


scales = st.one_of(
    st.floats(float(f32(1e-3)), 10.0, width=32),
    st.sampled_from([0.5, 1.0, 2.0, 0.25, 1 / 3, 0.1]),
).map(f32)


@st.composite
def pool_case(draw, dilation=True):
    kh, kw = draw(st.sampled_from([1, 2, 3, 5, 7])), draw(st.sampled_from([1, 2, 3, 5, 7]))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    pads = [draw(st.integers(0, eh - 1)), draw(st.integers(0, ew - 1)),
            draw(st.integers(0, eh - 1)), draw(st.integers(0, ew - 1))]
    H = draw(st.integers(max(1, eh - pads[0] - pads[2]), eh + 6))
    W = draw(st.integers(max(1, ew - pads[1] - pads[3]), ew + 6))
    N = draw(st.integers(1, 2))
    C = draw(st.sampled_from([1, 3, 8, 17, 33, 64, 70]))
    x = draw(q8((N, H, W, C)))
    ceil_mode = draw(st.integers(0, 1))
    try:
        ref.pool_geometry(H, W, [kh, kw], [sh, sw], pads, [dh, dw], ceil_mode)
    except ValueError:
        assume(False)
    return x, [kh, kw], [sh, sw], pads, [dh, dw], ceil_mode


# ------------------------------------------------------------------ dispatch

def test_each_path_runs_its_own_kernels(kernel_path):
    from pyqinfer import _core
    want = {"scalar": "scalar", "avx2": "avx2", "avxvnni": "avx2", "avx512bw": "avx512bw",
            "avx512vnni": "avx512bw"}[kernel_path]
    assert _core.eltwise_kernel_name() == want


# ------------------------------------------------------------------ max pool

@settings(max_examples=100)
@given(pool_case())
def test_max_pool_matches_reference(run_everywhere, case):
    x, k, s, p, d, cm = case
    want = ref.max_pool(x, k, s, p, d, layout="NHWC", ceil_mode=cm)
    assert_everywhere(run_everywhere, lambda: ops.max_pool(x, k, s, p, d, layout="NHWC", ceil_mode=cm), want,
                      "max_pool")
    # NCHW at the API gives the same numbers, transposed
    xn = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    assert np.array_equal(ops.max_pool(xn, k, s, p, d, ceil_mode=cm), want.transpose(0, 3, 1, 2))


def test_pool_ceil_mode_worked_examples(run_everywhere):
    """1-D along W (semantics 11.1): W=7, k=2, s=2 gives 4 windows with ceil_mode (the
    last one, [6, 7), runs past the input); W=5, k=3, s=3, right pad 2 would give a
    third window starting at 6, in the right padding: dropped."""
    x = np.arange(1, 8, dtype=np.uint8).reshape(1, 1, 7, 1)
    for cm, want in ((0, [2, 4, 6]), (1, [2, 4, 6, 7])):
        w = np.array(want, np.uint8).reshape(1, 1, -1, 1)
        assert np.array_equal(ref.max_pool(x, [1, 2], [1, 2], layout="NHWC", ceil_mode=cm), w)
        assert_everywhere(run_everywhere, lambda: ops.max_pool(x, [1, 2], [1, 2], layout="NHWC", ceil_mode=cm), w)
    x5 = x[:, :, :5]
    assert ref.pool_geometry(1, 5, [1, 3], [1, 3], [0, 0, 0, 2], None, 1)[-1] == 2  # not ceil(4/3) + 1 = 3
    w = np.array([3, 5], np.uint8).reshape(1, 1, 2, 1)
    assert_everywhere(run_everywhere, lambda: ops.max_pool(x5, [1, 3], [1, 3], [0, 0, 0, 2], layout="NHWC",
                                                           ceil_mode=1), w)
    # average pool, W=7, k=2, s=2, ceil: the last window holds only x=7; count_include_pad
    # divides it by kh*kw = 2 although the window runs past the (zero) padding
    for cip, last in ((0, 7), (1, 4)):  # 7 / 2 = 3.5 -> RNE 4
        y = ops.qlinear_average_pool(x, 1.0, 0, 1.0, 0, [1, 2], [1, 2], None, cip, layout="NHWC", ceil_mode=1)
        assert y.ravel().tolist() == [2, 4, 6, last]  # 1.5, 3.5, 5.5 -> 2, 4, 6
        assert np.array_equal(ref.qlinear_average_pool(x, 1.0, 0, 1.0, 0, [1, 2], [1, 2], None, cip, layout="NHWC",
                                                       ceil_mode=1), y)


def test_max_pool_padding_does_not_participate():
    # all values are the dtype minimum: a padding value of 0 would win for int8
    x = np.full((1, 1, 3, 3), -128, np.int8)
    assert (ops.max_pool(x, [3, 3], [1, 1], [1, 1, 1, 1]) == -128).all()
    assert (ref.max_pool(x, [3, 3], [1, 1], [1, 1, 1, 1]) == -128).all()


# ------------------------------------------------------------------ average pools

@settings(max_examples=100)
@given(pool_case(dilation=False), st.data())
def test_average_pool_matches_reference(run_everywhere, case, data):
    x, k, s, p, _, cm = case
    dt = x.dtype.type
    sx, sy = data.draw(scales), data.draw(scales)
    zx, zy = data.draw(zp_of(dt)), data.draw(zp_of(dt))
    cip = data.draw(st.integers(0, 1))
    want = ref.qlinear_average_pool(x, sx, zx, sy, zy, k, s, p, cip, layout="NHWC", ceil_mode=cm)
    assert_everywhere(run_everywhere, lambda: ops.qlinear_average_pool(x, sx, zx, sy, zy, k, s, p, cip, layout="NHWC",
                                                                       ceil_mode=cm),
                      want, "qlinear_average_pool")


@settings(max_examples=40)
@given(st.data())
def test_global_average_pool_matches_reference(run_everywhere, data):
    N, H, W = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9))
    C = data.draw(st.sampled_from([1, 5, 64, 65, 130]))
    x = data.draw(q8((N, H, W, C)))
    dt = x.dtype.type
    sx, sy = data.draw(scales), data.draw(scales)
    zx, zy = data.draw(zp_of(dt)), data.draw(zp_of(dt))
    want = ref.qlinear_global_average_pool(x, sx, zx, sy, zy, layout="NHWC")
    assert_everywhere(run_everywhere, lambda: ops.qlinear_global_average_pool(x, sx, zx, sy, zy, layout="NHWC"),
                      want, "qlinear_global_average_pool")


def test_global_average_pool_ties_and_extremes(run_everywhere):
    # count = 4, S = 1/4: sums 2, 6, 10 are exact ties 0.5, 1.5, 2.5 -> RNE 0, 2, 2
    x = np.array([[1, 1, 0, 0], [2, 1, 2, 1], [3, 3, 2, 2], [0, 0, 0, 0]], np.uint8).T.reshape(1, 2, 2, 4)
    want = np.array([0, 2, 2, 0], np.uint8).reshape(1, 1, 1, 4)
    assert np.array_equal(ref.qlinear_global_average_pool(x, 1.0, 0, 1.0, 0, layout="NHWC"), want)
    assert_everywhere(run_everywhere, lambda: ops.qlinear_global_average_pool(x, 1.0, 0, 1.0, 0, layout="NHWC"),
                      want, "gap ties")
    # the largest image: 255 everywhere with zp 0, S = 1 -> 255; int8 -128 everywhere, zp 127
    big = np.full((1, 64, 64, 3), 255, np.uint8)
    assert (ops.qlinear_global_average_pool(big, 1.0, 0, 1.0, 0, layout="NHWC") == 255).all()
    neg = np.full((1, 64, 64, 3), -128, np.int8)
    y = ops.qlinear_global_average_pool(neg, 1.0, np.int8(127), 1.0, np.int8(0), layout="NHWC")
    assert (y == -128).all()


def test_average_pool_whole_image_is_the_global_pool():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (1, 3, 5, 4), dtype=np.uint8)
    a = ops.qlinear_average_pool(x, 0.3, 7, 0.11, 3, [5, 4])
    g = ops.qlinear_global_average_pool(x, 0.3, 7, 0.11, 3)
    assert np.array_equal(a, g)
    assert np.array_equal(ref.qlinear_average_pool(x, 0.3, 7, 0.11, 3, [5, 4]), g)


# ------------------------------------------------------------------ add

@st.composite
def broadcast_shapes(draw):
    """Two shapes that broadcast: equal, per channel ([N,C,H,W] + [1,C,1,1] and the
    reverse), [N,C,1,1], scalars and 0-d, and random numpy-compatible pairs."""
    kind = draw(st.sampled_from(["same", "per_channel", "per_channel_rev", "nc11", "scalar", "zero_d", "random",
                                 "nhwc_channel", "nhwc_channel_rev"]))
    N, C, H, W = (draw(st.integers(1, 2)), draw(st.sampled_from([1, 3, 16, 33])), draw(st.integers(1, 9)),
                  draw(st.integers(1, 9)))
    if kind == "same":
        n = draw(st.sampled_from([1, 7, 31, 32, 33, 64, 100, 257]))
        return (n,), (n,)
    if kind == "per_channel":
        return (N, C, H, W), (1, C, 1, 1)
    if kind == "per_channel_rev":
        return (1, C, 1, 1), (N, C, H, W)
    if kind == "nc11":
        return (N, C, H, W), (N, C, 1, 1)
    if kind.startswith("nhwc"):      # a channel vector repeated at every pixel (the tiled spans)
        C = draw(st.sampled_from([1, 3, 16, 33, 64, 200, 5000]))
        H, W = draw(st.integers(1, 40)), draw(st.integers(1, 9))
        v = draw(st.sampled_from([(C,), (1, 1, 1, C), (1, 1, C)]))
        return ((N, H, W, C), v) if kind == "nhwc_channel" else (v, (N, H, W, C))
    if kind == "scalar":
        return ((N, C, H, W), (1,)) if draw(st.booleans()) else ((1,), (N, C, H, W))
    if kind == "zero_d":
        return draw(st.sampled_from([((), ()), ((), (N, C, H, W)), ((N, C, H, W), ()), ((C, 1), ())]))
    nd = draw(st.integers(1, 4))
    out = [draw(st.integers(1, 5)) for _ in range(nd)]
    a = [d if draw(st.booleans()) else 1 for d in out]
    b = [d if draw(st.booleans()) else 1 for d in out]
    return tuple(a[draw(st.integers(0, nd - 1)):]), tuple(b[draw(st.integers(0, nd - 1)):])


@settings(max_examples=200)
@given(st.data())
def test_add_matches_reference(run_everywhere, data):
    rule = data.draw(st.sampled_from(ops.ADD_RULES))
    ash, bsh = data.draw(broadcast_shapes())
    a = data.draw(q8(ash))
    dt = a.dtype.type
    b = data.draw(q8(bsh, dt))
    sa, sb, sc = data.draw(scales), data.draw(scales), data.draw(scales)
    za, zb, zc = data.draw(zp_of(dt)), data.draw(zp_of(dt)), data.draw(zp_of(dt))
    clip = data.draw(st.sampled_from([None, "relu"]))
    try:
        want = ref.qlinear_add(a, sa, za, b, sb, zb, sc, zc, rule=rule, clip=clip)
    except ValueError:
        with pytest.raises(ValueError):
            ops.qlinear_add(a, sa, za, b, sb, zb, sc, zc, rule=rule, clip=clip)
        return
    assert want.shape == np.broadcast_shapes(ash, bsh)
    assert_everywhere(run_everywhere, lambda: ops.qlinear_add(a, sa, za, b, sb, zb, sc, zc, rule=rule, clip=clip),
                      want, f"qlinear_add {rule} {ash} + {bsh}")


def test_ort_add_form():
    """The broadcast form ORT's QLinearAdd runs (semantics 11.4), worked through."""
    form = ref.ort_add_form
    assert form((2, 3), (2, 3)) == "general"
    assert form((1, 64, 56, 56), (1, 64, 56, 56)) == "general"
    assert form((2, 16, 5, 7), (1, 16, 1, 1)) == "b_scalar"
    assert form((2, 16, 5, 7), (2, 16, 1, 1)) == "b_scalar"
    assert form((2, 16, 5, 7), (1,)) == "b_scalar"
    assert form((2, 16, 5, 7), ()) == "b_scalar"
    assert form((1, 16, 1, 1), (2, 16, 5, 7)) == "a_scalar"
    assert form((), (3, 4)) == "a_scalar"
    assert form((1,), (1,)) == "a_scalar"  # two single elements
    assert form((4, 1), (1,)) == "a_scalar"  # the common rank holds only 1s: its outermost dim decides
    assert form((4, 1), ()) == "a_scalar"
    assert form((3, 4, 5), (4, 1)) == "b_scalar"
    assert form((5,), (3, 4, 5)) == "general"


@pytest.mark.parametrize("rule", ("onnxruntime", "tflite", "xnnpack"))
@pytest.mark.parametrize("dt", DTYPES)
def test_add_broadcast_every_pair_matches_reference(run_everywhere, rule, dt):
    """All 65536 (a, b) pairs with b per row ([256, 256] + [256, 1]) and a per row
    ([256, 1] + [256, 256]): the b_scalar and a_scalar forms, every pair."""
    rng = np.random.default_rng(13)
    info = np.iinfo(dt)
    vals = np.arange(info.min, info.max + 1).astype(dt)
    grid, col = np.tile(vals, (256, 1)), vals.reshape(256, 1)
    for _ in range(2):
        (sa, za), (sb, zb), (sc, zc) = (_qparams(rng, dt) for _ in range(3))
        for a, b in ((grid, col), (col, grid)):
            try:
                want = ref.qlinear_add(a, sa, za, b, sb, zb, sc, zc, rule=rule)
            except ValueError:
                continue
            assert_everywhere(run_everywhere, lambda: ops.qlinear_add(a, sa, za, b, sb, zb, sc, zc, rule=rule),
                              want, f"{rule} {a.shape} + {b.shape}")


@pytest.mark.parametrize("rule", ("onnxruntime", "tflite", "xnnpack"))
@pytest.mark.parametrize("dt", DTYPES)
def test_add_every_pair_matches_reference(run_everywhere, rule, dt):
    """All 65536 (a, b) pairs, so rare rounding cases (e.g. an FMA that a plain
    multiply-add would round differently) are certain to be hit."""
    rng = np.random.default_rng(11)
    info = np.iinfo(dt)
    vals = np.arange(info.min, info.max + 1).astype(dt)
    a, b = np.repeat(vals, 256), np.tile(vals, 256)
    for _ in range(4):
        (sa, za), (sb, zb), (sc, zc) = (_qparams(rng, dt) for _ in range(3))
        try:
            want = ref.qlinear_add(a, sa, za, b, sb, zb, sc, zc, rule=rule)
        except ValueError:
            continue
        assert_everywhere(run_everywhere, lambda: ops.qlinear_add(a, sa, za, b, sb, zb, sc, zc, rule=rule),
                          want, rule)


def test_add_rules_worked_examples():
    # s_a = s_b = s_c = 1, zero points 0: 1 + 2 = 3 under every rule
    a, b = np.array([1, 100, 200], np.uint8), np.array([2, 100, 100], np.uint8)
    for rule in ops.ADD_RULES:
        assert ops.qlinear_add(a, 1.0, 0, b, 1.0, 0, 1.0, 0, rule=rule).tolist() == [3, 200, 255], rule
    # a tie: (1 + 2) / 2 = 1.5. onnxruntime: RNE(1.5) = 2; xnnpack: RHU 2; tflite: 2
    # and 2.5 = (2 + 3) / 2: onnxruntime 2 (even), xnnpack 3 (half up)
    a, b = np.array([1, 2], np.uint8), np.array([2, 3], np.uint8)
    assert ops.qlinear_add(a, 1.0, 0, b, 1.0, 0, 2.0, 0, rule="onnxruntime").tolist() == [2, 2]
    assert ops.qlinear_add(a, 1.0, 0, b, 1.0, 0, 2.0, 0, rule="xnnpack").tolist() == [2, 3]
    assert ref.qlinear_add(a, 1.0, 0, b, 1.0, 0, 2.0, 0, rule="xnnpack").tolist() == [2, 3]


def _fma_exact(a, b, c):
    q = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    r = f32(float(q))
    cands = [np.nextafter(r, f32(-np.inf)), r, np.nextafter(r, f32(np.inf))]
    return min(cands, key=lambda v: (abs(Fraction(float(v)) - q), int(np.asarray(v, f32).view(np.uint32)) & 1))


@settings(max_examples=300)
@given(st.floats(-300, 300, width=32), st.floats(float(f32(1e-9)), 300, width=32), st.floats(-2**25, 2**25, width=32))
def test_reference_fma_is_single_rounding(a, b, c):
    assert _fma(f32(a), f32(b), f32(c)) == _fma_exact(f32(a), f32(b), f32(c))


def test_reference_fma_double_rounding_case():
    # exact value 2^24 + 1 + 2^-23 lies just above the float32 midpoint 2^24 + 1:
    # rounding to double first gives the midpoint, and then ties-to-even would go down
    a, b, c = f32(1 + 2**-23), f32(1.0), f32(2**24)
    assert _fma(a, b, c) == f32(2**24 + 2) == _fma_exact(a, b, c)


# ------------------------------------------------------------------ concat, clip, requantize

@settings(max_examples=40)
@given(st.data())
def test_concat_matches_reference(run_everywhere, data):
    dt = data.draw(st.sampled_from(DTYPES))
    nd = data.draw(st.integers(1, 4))
    base = [data.draw(st.integers(1, 4)) for _ in range(nd)]
    axis = data.draw(st.integers(-nd, nd - 1))
    inputs = []
    for _ in range(data.draw(st.integers(1, 4))):
        shape = list(base)
        shape[axis] = data.draw(st.integers(1, 5))
        x = data.draw(q8(tuple(shape), dt))
        inputs.append((x, data.draw(scales), data.draw(zp_of(dt))))
    sy, zy = data.draw(scales), data.draw(zp_of(dt))
    if data.draw(st.booleans()):
        inputs[0] = (inputs[0][0], sy, zy)  # identical parameters: a plain copy
    want = ref.qlinear_concat(sy, zy, inputs, axis)
    assert_everywhere(run_everywhere, lambda: ops.qlinear_concat(sy, zy, inputs, axis), want, "qlinear_concat")


@settings(max_examples=30)
@given(st.data())
def test_clip_and_relu_match_reference(run_everywhere, data):
    x = data.draw(q8((data.draw(st.integers(1, 300)),)))
    info = np.iinfo(x.dtype)
    lo = data.draw(st.integers(info.min, info.max))
    hi = data.draw(st.integers(lo, info.max))
    assert_everywhere(run_everywhere, lambda: ops.clip(x, lo, hi), ref.clip(x, lo, hi), "clip")
    zp = data.draw(zp_of(x.dtype.type))
    assert_everywhere(run_everywhere, lambda: ops.relu(x, zp), ref.relu(x, zp), "relu")


@settings(max_examples=150)
@given(st.data())
def test_requantize_matches_reference(run_everywhere, data):
    mode = data.draw(st.sampled_from(["fp32", "q31", "q31_single", "pot"]))
    rows, C = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 20))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    bits = data.draw(st.sampled_from([8, 16, 24, 31]))
    x = rng.integers(-(2**bits), 2**bits, (rows, C)).clip(-(2**31), 2**31 - 1).astype(np.int32)
    x.flat[0] = data.draw(st.sampled_from([-(2**31), 2**31 - 1, 0, 5, -5]))
    dt = data.draw(st.sampled_from(DTYPES))
    zy = data.draw(zp_of(dt))
    if mode == "pot":
        xs = f32(2.0 ** data.draw(st.integers(-10, 2)))
        ys = f32(2.0 ** data.draw(st.integers(-3, 8)))
    else:
        xs = data.draw(scales) if data.draw(st.booleans()) else np.array([data.draw(scales) for _ in range(C)], f32)
        ys = data.draw(scales)
    clip = data.draw(st.sampled_from([None, "relu", "relu6"]))
    try:
        want = ref.requantize_int32(x, xs, ys, zy, mode=mode, clip=clip)
    except ValueError:
        with pytest.raises(ValueError):
            ops.requantize(x, xs, ys, zy, mode=mode, clip=clip)
        return
    assert_everywhere(run_everywhere, lambda: ops.requantize(x, xs, ys, zy, mode=mode, clip=clip), want, mode)


# ------------------------------------------------------------------ quantize / dequantize

@settings(max_examples=150)
@given(st.data())
def test_quantize_dequantize_match_reference(run_everywhere, data):
    rule = data.draw(st.sampled_from(ops.QUANTIZE_RULES))
    rows, C = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 40))
    dt = data.draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    per_channel = data.draw(st.booleans())
    s = np.array([data.draw(scales) for _ in range(C)], f32) if per_channel else data.draw(scales)
    info = np.iinfo(dt)
    zp = (np.array([data.draw(zp_of(dt)) for _ in range(C)], dt) if per_channel else data.draw(zp_of(dt)))
    # values at and near ties of x / s, plus extremes and infinities
    k = rng.integers(-300, 300, (rows, C)).astype(np.float64) + rng.choice([0.0, 0.5, -0.5, 0.49999997, 0.25], (rows, C))
    x = (k * np.broadcast_to(np.asarray(s, np.float64), (rows, C))).astype(f32)
    x.flat[0] = data.draw(st.sampled_from([np.inf, -np.inf, 0.0, -0.0, 3e38, -3e38, 1e-40]))
    want = ref.quantize_linear(x, s, zp, rule=rule)
    assert_everywhere(run_everywhere, lambda: ops.quantize_linear(x, s, zp, rule=rule), want, f"quantize {rule}")
    q = data.draw(q8((rows, C), dt))
    dq = ref.dequantize_linear(q, s, zp)
    got = run_everywhere(lambda: ops.dequantize_linear(q, s, zp))
    for key, y in got.items():
        assert y.dtype == np.float32 and np.array_equal(y.view(np.uint32), dq.view(np.uint32)), key
    del info


def test_quantize_rules_ties_and_fbgemm_counterexample():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5], f32)
    assert ops.quantize_linear(x, 1.0, np.int8(0), rule="onnx").tolist() == [0, 2, 2, 0, -2, -2]
    assert ops.quantize_linear(x, 1.0, np.int8(0), rule="torch").tolist() == [0, 2, 2, 0, -2, -2]
    assert ops.quantize_linear(x, 1.0, np.int8(0), rule="tflite").tolist() == [1, 2, 3, -1, -2, -3]
    s, v = f32(0.00214854861), np.array([0.273939937], f32)
    assert ops.quantize_linear(v, s, np.uint8(0), rule="onnx").tolist() == [127]
    assert ops.quantize_linear(v, s, np.uint8(0), rule="torch").tolist() == [128]
    assert ops.quantize_linear(v, s, np.uint8(0), rule="tflite").tolist() == [127]


def test_dequantize_int32():
    q = np.array([[2**31 - 1, -(2**31), 2**24 + 1]], np.int32)
    want = ref.dequantize_linear(q, f32(0.5))
    assert np.array_equal(ops.dequantize_linear(q, f32(0.5)), want)


# ------------------------------------------------------------------ bad input

def test_bad_input_is_rejected_with_the_argument_named():
    x = np.zeros((1, 2, 4, 4), np.uint8)
    with pytest.raises(TypeError, match="x"):
        ops.max_pool(x.astype(np.float32), [2, 2])
    with pytest.raises(ValueError, match="x must be 4-D"):
        ops.max_pool(x[0], [2, 2])
    with pytest.raises(ValueError, match="pads"):
        ops.max_pool(x, [2, 2], pads=[2, 0, 0, 0])
    with pytest.raises(ValueError, match="strides"):
        ops.max_pool(x, [2, 2], strides=[0, 1])
    with pytest.raises(ValueError, match="layout"):
        ops.max_pool(x, [2, 2], layout="NCWH")
    with pytest.raises(ValueError, match="kernel"):
        ops.max_pool(x, [5, 5])
    with pytest.raises(ValueError, match="ceil_mode"):
        ops.max_pool(x, [2, 2], ceil_mode=2)
    with pytest.raises(ValueError, match="ceil_mode"):
        ops.qlinear_average_pool(x, 1.0, 0, 1.0, 0, [2, 2], ceil_mode="yes")
    with pytest.raises(ValueError, match="x_scale"):
        ops.qlinear_average_pool(x, -1.0, 0, 1.0, 0, [2, 2])
    with pytest.raises(ValueError, match="y_zero_point"):
        ops.qlinear_global_average_pool(x, 1.0, 0, 1.0, 300)
    with pytest.raises(TypeError, match="x_zero_point"):
        ops.qlinear_global_average_pool(x, 1.0, np.int8(0), 1.0, 0)
    a = np.zeros(4, np.uint8)
    with pytest.raises(ValueError, match="rule"):
        ops.qlinear_add(a, 1.0, 0, a, 1.0, 0, 1.0, 0, rule="gemmlowp")
    with pytest.raises(TypeError, match="same dtype"):
        ops.qlinear_add(a, 1.0, 0, a.astype(np.int8), 1.0, 0, 1.0, 0)
    with pytest.raises(ValueError, match="b must have a shape that broadcasts"):
        ops.qlinear_add(a, 1.0, 0, np.zeros(3, np.uint8), 1.0, 0, 1.0, 0)
    with pytest.raises(ValueError, match="b must have a shape that broadcasts"):
        ops.qlinear_add(np.zeros((2, 3, 4), np.uint8), 1.0, 0, np.zeros((3, 1, 2), np.uint8), 1.0, 0, 1.0, 0)
    with pytest.raises(ValueError, match="c_scale"):
        ops.qlinear_add(a, 1.0, 0, a, 1.0, 0, np.inf, 0)
    with pytest.raises(ValueError, match="xnnpack"):
        ops.qlinear_add(a, 1.0, 0, a, 1.0, 0, 1e-4, 0, rule="xnnpack")
    with pytest.raises(ValueError, match="axis"):
        ops.qlinear_concat(1.0, 0, [(a, 1.0, 0)], 1)
    with pytest.raises(ValueError, match="inputs\\[1\\]"):
        ops.qlinear_concat(1.0, 0, [(a.reshape(2, 2), 1.0, 0), (a, 1.0, 0)], 0)
    with pytest.raises(TypeError, match="inputs\\[1\\]"):
        ops.qlinear_concat(1.0, 0, [(a, 1.0, 0), (a.astype(np.int8), 1.0, 0)], 0)
    with pytest.raises(ValueError, match="lo"):
        ops.clip(a, 10, 5)
    with pytest.raises(TypeError, match="x must be a numpy int32"):
        ops.requantize(a, 1.0, 1.0, np.uint8(0))
    with pytest.raises(ValueError, match="mode"):
        ops.requantize(a.astype(np.int32), 1.0, 1.0, np.uint8(0), mode="round")
    with pytest.raises(ValueError, match="x_scale"):
        ops.requantize(np.zeros((2, 3), np.int32), np.ones(4, f32), 1.0, np.uint8(0))
    with pytest.raises(ValueError, match="NaN"):
        ops.quantize_linear(np.array([np.nan], f32), 1.0, np.uint8(0))
    with pytest.raises(ValueError, match="rule"):
        ops.quantize_linear(np.zeros(2, f32), 1.0, np.uint8(0), rule="round")
    with pytest.raises(ValueError, match="scale"):
        ops.quantize_linear(np.zeros((2, 3), f32), np.ones(2, f32), np.uint8(0))
    with pytest.raises(ValueError, match="zero_point"):
        ops.dequantize_linear(np.zeros(3, np.int32), 1.0, 3)


# ------------------------------------------------------------------ ONNX Runtime

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

_TP = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
       np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32}


def ort_run(op, inputs, out_dtype, domain="", **attrs):
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    vis = [helper.make_tensor_value_info(n, _TP[np.asarray(v).dtype], np.shape(v))
           for n, v in zip(names, inputs) if v is not None]
    node = helper.make_node(op, names, ["y"], domain=domain, **attrs)
    graph = helper.make_graph([node], "g", vis, [helper.make_tensor_value_info("y", _TP[np.dtype(out_dtype)], None)])
    opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid("com.microsoft", 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {n: np.asarray(v) for n, v in zip(names, inputs) if v is not None})[0]


@pytest.mark.parametrize("dt", DTYPES)
def test_max_pool_matches_ort(dt):
    rng = np.random.default_rng(1)
    info = np.iinfo(dt)
    for _ in range(20):
        k = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
        d = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
        s = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
        p = [int(rng.integers(0, k[0])), int(rng.integers(0, k[1]))] * 2
        x = rng.integers(info.min, info.max + 1, (1, 5, 9, 8)).astype(dt)
        want = ort_run("MaxPool", [x], dt, kernel_shape=k, strides=s, pads=p, dilations=d)
        assert np.array_equal(ref.max_pool(x, k, s, p, d), want)
        assert np.array_equal(ops.max_pool(x, k, s, p, d), want)


def _ceil_cases(rng, n, dilation):
    """Random pooling geometries with ceil_mode=1 that ORT accepts (pads < k) and
    pyqinfer accepts; counts how many change the output size and how many drop a
    window that would start in the bottom/right padding."""
    out, grew, dropped = [], 0, 0
    while len(out) < n:
        k = [int(rng.integers(1, 5)), int(rng.integers(1, 5))]
        s = [int(rng.integers(1, 5)), int(rng.integers(1, 5))]
        d = [int(rng.integers(1, 3)), int(rng.integers(1, 3))] if dilation else [1, 1]
        p = [int(rng.integers(0, k[0])), int(rng.integers(0, k[1])), int(rng.integers(0, k[0])),
             int(rng.integers(0, k[1]))]
        H, W = int(rng.integers(1, 10)), int(rng.integers(1, 10))
        try:
            g1 = ref.pool_geometry(H, W, k, s, p, d, 1)
            g0 = ref.pool_geometry(H, W, k, s, p, d, 0)
        except ValueError:
            continue
        grew += g1[-2:] != g0[-2:]
        e = [(k[i] - 1) * d[i] + 1 for i in range(2)]
        full = [-(-(n_ + p[i] + p[i + 2] - e[i]) // s[i]) + 1 for i, n_ in enumerate((H, W))]
        dropped += list(g1[-2:]) != full
        out.append((H, W, k, s, p, d))
    assert grew > n // 4 and dropped > n // 20, (grew, dropped)  # both rules are exercised
    return out


@pytest.mark.parametrize("dt", DTYPES)
def test_max_pool_ceil_mode_matches_ort(dt):
    rng = np.random.default_rng(11)
    info = np.iinfo(dt)
    for H, W, k, s, p, d in _ceil_cases(rng, 120, dilation=True):
        x = rng.integers(info.min, info.max + 1, (1, 3, H, W)).astype(dt)
        want = ort_run("MaxPool", [x], dt, kernel_shape=k, strides=s, pads=p, dilations=d, ceil_mode=1)
        assert np.array_equal(ref.max_pool(x, k, s, p, d, ceil_mode=1), want), (H, W, k, s, p, d)
        got = ops.max_pool(x, k, s, p, d, ceil_mode=1)
        assert got.shape == want.shape and np.array_equal(got, want), (H, W, k, s, p, d)


@pytest.mark.parametrize("dt", DTYPES)
def test_average_pool_ceil_mode_matches_ort(dt):
    rng = np.random.default_rng(12)
    info = np.iinfo(dt)
    for i, (H, W, k, s, p, _) in enumerate(_ceil_cases(rng, 120, dilation=False)):
        x = rng.integers(info.min, info.max + 1, (1, 5, H, W)).astype(dt)
        (sx, zx), (sy, zy) = _qparams(rng, dt), _qparams(rng, dt)
        cip = i % 2
        want = ort_run("QLinearAveragePool", [x, np.array(sx), np.array(zx), np.array(sy), np.array(zy)], dt,
                       domain="com.microsoft", kernel_shape=k, strides=s, pads=p, count_include_pad=cip,
                       ceil_mode=1)
        assert np.array_equal(ref.qlinear_average_pool(x, sx, zx, sy, zy, k, s, p, cip, ceil_mode=1), want)
        got = ops.qlinear_average_pool(x, sx, zx, sy, zy, k, s, p, cip, ceil_mode=1)
        assert got.shape == want.shape and np.array_equal(got, want), (H, W, k, s, p, cip)


@pytest.mark.parametrize("dt", DTYPES)
def test_qlinear_add_matches_ort(dt):
    """ORT 1.32 on x86 runs the AVX2 float kernel, FMA-contracted (semantics 11.4)."""
    rng = np.random.default_rng(2)
    info = np.iinfo(dt)
    vals = np.arange(info.min, info.max + 1).astype(dt)
    a_all, b_all = np.repeat(vals, 256), np.tile(vals, 256)  # every (a, b) pair
    contraction_mattered = 0
    for trial in range(40):
        (sa, za), (sb, zb), (sc, zc) = (_qparams(rng, dt) for _ in range(3))
        b = b_all if trial % 4 else b_all[:1]  # also a scalar B
        args = [a_all, np.array(sa), np.array(za), b, np.array(sb), np.array(zb), np.array(sc), np.array(zc)]
        want = ort_run("QLinearAdd", args, dt, domain="com.microsoft")
        got = ref.qlinear_add(a_all, sa, za, b, sb, zb, sc, zc, rule="onnxruntime")
        assert np.array_equal(got, want), (sa, za, sb, zb, sc, zc)
        assert np.array_equal(ops.qlinear_add(a_all, sa, za, b, sb, zb, sc, zc), want)
        # does the constant with a separate multiply and add (no contraction) give other bits?
        rA, rB = sa / sc, sb / sc
        F_plain = f32(f32(zc) - f32(f32(rA * f32(za)) + f32(rB * f32(zb))))
        if F_plain != ref.add_params("onnxruntime", sa, sb, sc, za, zb, zc)["F"]:
            contraction_mattered += 1
    assert contraction_mattered > 0  # the FMA in F is exercised, not just assumed


@pytest.mark.parametrize("dt", DTYPES)
def test_qlinear_add_broadcast_matches_ort(dt):
    """Every broadcast form against ORT's QLinearAdd: a residual add, an SE block's
    per-channel tensor either way round, [N,C,1,1], scalars, 0-d and odd corner
    shapes; the b_scalar form over all 65536 pairs."""
    rng = np.random.default_rng(21)
    info = np.iinfo(dt)
    vals = np.arange(info.min, info.max + 1).astype(dt)
    pairs = [((2, 16, 5, 7), (1, 16, 1, 1)), ((2, 16, 5, 7), (2, 16, 1, 1)), ((1, 16, 1, 1), (2, 16, 5, 7)),
             ((2, 16, 5, 7), (2, 16, 5, 7)), ((2, 16, 5, 7), ()), ((2, 16, 5, 7), (1,)), ((), (3, 4)), ((1,), (1,)),
             ((), ()), ((4, 1), (1,)), ((4, 1), ()), ((3, 1, 5), (1, 4, 1)), ((3, 4, 5), (4, 1)), ((5,), (3, 4, 5)),
             ((1, 3), (1, 1)), ((2, 3, 1), (3, 1))]
    form_mattered = 0
    for trial in range(30):
        (sa, za), (sb, zb), (sc, zc) = (_qparams(rng, dt) for _ in range(3))
        shapes = pairs if trial < 10 else pairs[:3]
        cases = [(np.asarray(rng.integers(info.min, info.max + 1, ash)).astype(dt),
                  np.asarray(rng.integers(info.min, info.max + 1, bsh)).astype(dt)) for ash, bsh in shapes]
        cases += [(np.tile(vals, (256, 1)), vals.reshape(256, 1)), (vals.reshape(256, 1), np.tile(vals, (256, 1)))]
        for a, b in cases:
            args = [a, np.array(sa), np.array(za), b, np.array(sb), np.array(zb), np.array(sc), np.array(zc)]
            want = ort_run("QLinearAdd", args, dt, domain="com.microsoft")
            got = ref.qlinear_add(a, sa, za, b, sb, zb, sc, zc)
            assert got.shape == want.shape and np.array_equal(got, want), (a.shape, b.shape, sa, za, sb, zb, sc, zc)
            y = ops.qlinear_add(a, sa, za, b, sb, zb, sc, zc)
            assert y.shape == want.shape and np.array_equal(y, want), (a.shape, b.shape)
            if ref.ort_add_form(a.shape, b.shape) == "a_scalar" and b.size > 1:
                # the general form (a broadcast explicitly, so the shapes are equal) would differ?
                full = np.ascontiguousarray(np.broadcast_to(a, want.shape))
                form_mattered += not np.array_equal(ref.qlinear_add(full, sa, za, b, sb, zb, sc, zc), want)
    assert form_mattered > 0  # the operand swap of the a_scalar form is exercised, not just assumed


def test_qlinear_add_scalar_b_is_fma_contracted():
    """ORT folds a span's scalar b into the constant as fma(b, rB, F); the separately
    rounded fl32(F + fl32(b * rB)) (this contract's earlier wording) gives -21 here,
    ORT -20 (found by search, int8)."""
    dt = np.int8
    sa, za, sb, zb, sc, zc = f32(0.22915533), dt(4), f32(0.23217902), dt(-4), f32(0.9731034), dt(-70)
    a, b = np.full((1, 2, 3, 3), 122, dt), np.full((1, 2, 1, 1), 87, dt)
    want = ort_run("QLinearAdd", [a, np.array(sa), np.array(za), b, np.array(sb), np.array(zb), np.array(sc),
                                  np.array(zc)], dt, domain="com.microsoft")
    assert (want == -20).all()
    assert (ref.qlinear_add(a, sa, za, b, sb, zb, sc, zc) == -20).all()
    assert (ops.qlinear_add(a, sa, za, b, sb, zb, sc, zc) == -20).all()
    p = ref.add_params("onnxruntime", sa, sb, sc, za, zb, zc)
    G = f32(p["F"] + f32(f32(87) * p["rB"]))
    assert np.rint(np.float64(_fma(f32(122), p["rA"], G))) == -21


def test_qlinear_add_fixed_point_is_not_what_ort_runs_on_x86():
    """The notes' MLAS fixed-point formula (RHAZ of ~22-bit multipliers) differs from
    ORT's x86 result on some pairs; our onnxruntime rule matches ORT on all of them."""
    dt = np.uint8
    vals = np.arange(256).astype(dt)
    a, b = np.repeat(vals, 256), np.tile(vals, 256)
    # found by search: one (a, b) pair of 65536 differs
    sa, sb, sc, za, zb, zc = f32(0.7034751), f32(0.0440812), f32(1.3714857), dt(8), dt(5), dt(138)
    want = ort_run("QLinearAdd", [a, np.array(sa), np.array(za), b, np.array(sb), np.array(zb),
                                  np.array(sc), np.array(zc)], dt, domain="com.microsoft")
    rA, rB = sa / sc, sb / sc
    e = int(np.frexp(max(rA, rB))[1]) - 1
    shift = 21 - e
    mA, mB = int(np.rint(rA * f32(2.0**shift))), int(np.rint(rB * f32(2.0**shift)))
    acc = (a.astype(np.int64) - int(za)) * mA + (b.astype(np.int64) - int(zb)) * mB
    acc = acc + (acc >> 63)  # acc += acc >> 31 in int32: -1 for negatives
    fixed = np.clip(((acc + (1 << (shift - 1))) >> shift) + int(zc), 0, 255)
    assert (fixed != want).sum() == 1
    assert np.array_equal(ops.qlinear_add(a, sa, za, b, sb, zb, sc, zc), want)


@pytest.mark.parametrize("dt", DTYPES)
def test_global_average_pool_matches_ort(dt):
    rng = np.random.default_rng(4)
    info = np.iinfo(dt)
    for _ in range(30):
        H, W, C = int(rng.integers(1, 12)), int(rng.integers(1, 12)), int(rng.integers(1, 70))
        x = rng.integers(info.min, info.max + 1, (2, C, H, W)).astype(dt)
        (sx, zx), (sy, zy) = _qparams(rng, dt), _qparams(rng, dt)
        try:
            want = ort_run("QLinearGlobalAveragePool", [x, np.array(sx), np.array(zx), np.array(sy), np.array(zy)],
                           dt, domain="com.microsoft", channels_last=0)
        except Exception:  # ORT refuses S outside [2^-32, 256): checked below
            continue
        assert np.array_equal(ref.qlinear_global_average_pool(x, sx, zx, sy, zy), want)
        assert np.array_equal(ops.qlinear_global_average_pool(x, sx, zx, sy, zy), want)


def test_global_average_pool_where_ort_refuses():
    """ORT rejects S = s_x/(s_y*count) >= 256; pyqinfer computes the same formula."""
    x = np.array([[[[1, 2]]]], np.uint8)  # count 2
    args = [x, np.array(f32(1024.0)), np.array(np.uint8(0)), np.array(f32(1.0)), np.array(np.uint8(0))]
    with pytest.raises(Exception):
        ort_run("QLinearGlobalAveragePool", args, np.uint8, domain="com.microsoft", channels_last=0)
    assert ops.qlinear_global_average_pool(x, 1024.0, 0, 1.0, 0).item() == 255  # 3 * 512, saturated
    assert ops.qlinear_global_average_pool(x, 1.0, 0, 1024.0, 0).item() == 0  # S = 2^-11 / ... tiny: 0


@pytest.mark.parametrize("dt", DTYPES)
def test_average_pool_matches_ort(dt):
    rng = np.random.default_rng(5)
    info = np.iinfo(dt)
    for trial in range(40):
        k = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
        s = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
        p = [int(rng.integers(0, k[0])), int(rng.integers(0, k[1]))] * 2
        H, W = (3, 3) if trial % 8 == 0 else (int(rng.integers(3, 10)), int(rng.integers(3, 10)))
        if trial % 8 == 0:
            k, p = [3, 3], [0, 0, 0, 0]  # ORT's global-pool fallback
        x = rng.integers(info.min, info.max + 1, (1, int(rng.integers(1, 20)), H, W)).astype(dt)
        (sx, zx), (sy, zy) = _qparams(rng, dt), _qparams(rng, dt)
        cip = int(rng.integers(0, 2))
        want = ort_run("QLinearAveragePool", [x, np.array(sx), np.array(zx), np.array(sy), np.array(zy)], dt,
                       domain="com.microsoft", kernel_shape=k, strides=s, pads=p, count_include_pad=cip)
        assert np.array_equal(ref.qlinear_average_pool(x, sx, zx, sy, zy, k, s, p, cip), want)
        assert np.array_equal(ops.qlinear_average_pool(x, sx, zx, sy, zy, k, s, p, cip), want)


@pytest.mark.parametrize("dt", DTYPES)
def test_concat_matches_ort(dt):
    rng = np.random.default_rng(6)
    info = np.iinfo(dt)
    for _ in range(20):
        xs = [rng.integers(info.min, info.max + 1, (2, int(rng.integers(1, 300)))).astype(dt) for _ in range(3)]
        qp = [_qparams(rng, dt) for _ in range(4)]
        qp[1] = qp[3]  # one input already has the output's parameters
        args = [np.array(qp[3][0]), np.array(qp[3][1])]
        for x, (s, z) in zip(xs, qp):
            args += [x, np.array(s), np.array(z)]
        want = ort_run("QLinearConcat", args, dt, domain="com.microsoft", axis=1)
        inputs = [(x, s, z) for x, (s, z) in zip(xs, qp)]
        assert np.array_equal(ref.qlinear_concat(qp[3][0], qp[3][1], inputs, 1), want)
        assert np.array_equal(ops.qlinear_concat(qp[3][0], qp[3][1], inputs, 1), want)


@pytest.mark.parametrize("dt", DTYPES)
def test_quantize_dequantize_match_ort(dt):
    rng = np.random.default_rng(7)
    for _ in range(20):
        s, z = _qparams(rng, dt)
        k = rng.integers(-400, 400, 2000) + rng.choice([0.0, 0.5, -0.5, 0.25], 2000)
        x = (k * float(s)).astype(f32)
        x[:4] = [np.inf, -np.inf, 0.0, 1e30]
        want = ort_run("QuantizeLinear", [x, np.array(s), np.array(z)], dt)
        assert np.array_equal(ops.quantize_linear(x, s, z), want)
        q = rng.integers(np.iinfo(dt).min, np.iinfo(dt).max + 1, 500).astype(dt)
        dq = ort_run("DequantizeLinear", [q, np.array(s), np.array(z)], np.float32)
        assert np.array_equal(ops.dequantize_linear(q, s, z).view(np.uint32), dq.view(np.uint32))
