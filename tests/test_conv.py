"""2-D convolution (docs/semantics.md section 10): pyqinfer.ops.qlinear_conv /
conv_integer equal the golden model pyqinfer.reference bit for bit on every
kernel path and thread count, NCHW and NHWC agree, the reference (and the
kernels) equal ONNX Runtime's QLinearConv (fp32 mode) and ConvInteger, and bad
input raises a clear error.

Paths through the operator (csrc/conv/conv.cpp): 1x1 stride-1 unpadded runs the
GEMM on x in place; everything else gathers blocks of output-pixel rows; groups
run one GEMM per group (depthwise: groups = C).
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import pyqinfer
import pyqinfer.ops as ops
import pyqinfer.reference as R
from pyqinfer import _core

RANGES = {"uint8": (0, 255), "int8": (-128, 127)}
BASE_EXAMPLES = settings.default.max_examples


def examples(fraction):
    return max(5, int(BASE_EXAMPLES * fraction)) if BASE_EXAMPLES < 1000 else BASE_EXAMPLES


def rand(rng, shape, dtype, style="random"):
    lo, hi = RANGES[dtype]
    if style == "extremes":
        return rng.choice(np.array([lo, hi], dtype), size=shape)
    if style == "max":
        return np.full(shape, hi, dtype)
    return rng.integers(lo, hi + 1, size=shape).astype(dtype)


@st.composite
def conv_cases(draw, quant=True):
    """A random convolution: geometry, dtypes, zero points, scales, bias, mode and clip."""
    k = draw(st.sampled_from([1, 1, 3, 3, 3, 5, 7]))
    kh, kw = (k, k) if draw(st.booleans()) else (k, draw(st.sampled_from([1, 3])))
    stride = draw(st.sampled_from([1, 1, 2]))
    dil = draw(st.sampled_from([1, 1, 1, 2]))
    kind = draw(st.sampled_from(["dense", "dense", "grouped", "depthwise"]))
    if kind == "dense":
        group, cg = 1, draw(st.sampled_from([1, 3, 4, 5, 8, 12, 16, 17, 33, 64, 67]))
        ocg = draw(st.sampled_from([1, 7, 16, 33, 64, 65, 100]))
    elif kind == "grouped":
        group, cg, ocg = draw(st.integers(2, 4)), draw(st.integers(1, 20)), draw(st.integers(1, 20))
    else:
        group, cg, ocg = draw(st.integers(2, 40)), 1, draw(st.sampled_from([1, 1, 2]))
    C, OC = group * cg, group * ocg
    pads = draw(st.one_of(st.just((0, 0, 0, 0)), st.tuples(*[st.integers(0, 3)] * 4)))
    ekh, ekw = (kh - 1) * dil + 1, (kw - 1) * dil + 1
    H = draw(st.integers(max(1, ekh - pads[0] - pads[2]), max(1, ekh - pads[0] - pads[2]) + 12))
    W = draw(st.integers(max(1, ekw - pads[1] - pads[3]), max(1, ekw - pads[1] - pads[3]) + 12))
    N = draw(st.sampled_from([1, 1, 2]))
    x_dt, w_dt = draw(st.sampled_from(["uint8", "int8"])), draw(st.sampled_from(["int8", "int8", "uint8"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    style = draw(st.sampled_from(["random"] * 4 + ["extremes", "max"]))
    x = rand(rng, (N, C, H, W), x_dt, style)
    w = rand(rng, (OC, cg, kh, kw), w_dt, draw(st.sampled_from(["random"] * 3 + ["extremes"])))
    lo, hi = RANGES[x_dt]
    zx = getattr(np, x_dt)(draw(st.one_of(st.sampled_from([lo, hi, 0]), st.integers(lo, hi))))
    wlo, whi = RANGES[w_dt]
    per_channel = draw(st.booleans())
    zw_kind = draw(st.sampled_from(["zero", "zero", "any"]))
    if zw_kind == "zero":
        zw = getattr(np, w_dt)(0 if w_dt == "int8" else 128)
        zw = np.full(OC, zw, w_dt) if per_channel else zw
    else:
        zw = rand(rng, OC, w_dt) if per_channel else getattr(np, w_dt)(rng.integers(wlo, whi + 1))
    case = dict(x=x, w=w, zx=zx, zw=zw, pads=pads, strides=(stride, stride), dilations=(dil, dil),
                group=group)
    if not quant:
        return case
    mode = draw(st.sampled_from(R.MODES))
    y_dt = draw(st.sampled_from(["uint8", "int8"]))
    ylo, yhi = RANGES[y_dt]
    bias = rng.integers(-2**20, 2**20, OC).astype(np.int32) if draw(st.booleans()) else None
    sx = np.float32(2.0 ** rng.integers(-8, -3))
    sw = (np.asarray(2.0 ** rng.integers(-8, -4, OC), np.float32) if per_channel
          else np.float32(2.0 ** rng.integers(-8, -4)))
    if mode != "pot":
        sx = np.float32(sx * rng.uniform(0.6, 1.4))
        sw = np.asarray(sw * rng.uniform(0.6, 1.4, np.shape(sw)), np.float32)
    K = cg * kh * kw
    spread = 128.0 * 64.0 * np.sqrt(K) * float(sx) * float(np.max(sw))  # about the real acc spread
    sy = np.float32(2.0 ** np.round(np.log2(spread / 60.0)))
    zy = getattr(np, y_dt)(rng.integers(ylo // 2 + yhi // 4, yhi // 2 + yhi // 4 + 1))
    clip = draw(st.sampled_from([None, None, "relu", "relu6", "range"]))
    if clip == "range":
        a, b = sorted(rng.integers(ylo, yhi + 1, 2).tolist())
        clip = (a, b)
    case.update(sx=sx, sw=sw, sy=sy, zy=zy, bias=bias, mode=mode, clip=clip)
    return case


def ref_q(c):
    return R.qlinear_conv(c["x"], c["sx"], c["zx"], c["w"], c["sw"], c["zw"], c["sy"], c["zy"], c["bias"],
                          pads=c["pads"], strides=c["strides"], dilations=c["dilations"], group=c["group"],
                          mode=c["mode"], clip=c["clip"])


def ops_q(c, w=None, layout="NCHW"):
    x = c["x"] if layout == "NCHW" else np.ascontiguousarray(c["x"].transpose(0, 2, 3, 1))
    y = ops.qlinear_conv(x, c["sx"], c["zx"], c["w"] if w is None else w, c["sw"], c["zw"], c["sy"], c["zy"],
                         c["bias"], pads=c["pads"], strides=c["strides"], dilations=c["dilations"],
                         group=c["group"], mode=c["mode"], clip=c["clip"], layout=layout)
    return y if layout == "NCHW" else y.transpose(0, 3, 1, 2)


def check_everywhere(run_everywhere, fn, want):
    got = run_everywhere(fn)
    for key, y in got.items():
        assert y.dtype == want.dtype and y.shape == want.shape, key
        if not np.array_equal(y, want):
            bad = np.argwhere(y != want)[:5]
            raise AssertionError(f"{key}: {int(np.sum(y != want))}/{y.size} differ, e.g. at {bad.tolist()}: "
                                 f"{[int(y[tuple(i)]) for i in bad]} vs {[int(want[tuple(i)]) for i in bad]}")


@settings(max_examples=examples(1.0))
@given(conv_cases(quant=False))
def test_conv_integer_matches_reference(run_everywhere, c):
    want = R.conv_integer(c["x"], c["w"], c["zx"], c["zw"], c["pads"], c["strides"], c["dilations"], c["group"])
    check_everywhere(run_everywhere, lambda: ops.conv_integer(
        c["x"], c["w"], c["zx"], c["zw"], pads=c["pads"], strides=c["strides"], dilations=c["dilations"],
        group=c["group"]), want)


@settings(max_examples=examples(1.0))
@given(conv_cases())
def test_qlinear_conv_matches_reference(run_everywhere, c):
    want = ref_q(c)
    packed = ops.pack_conv_weights(c["w"], c["zw"], c["group"])
    check_everywhere(run_everywhere, lambda: ops_q(c, w=packed), want)


@settings(max_examples=examples(0.3))
@given(conv_cases())
def test_nhwc_equals_nchw(c):
    assert np.array_equal(ops_q(c, layout="NHWC"), ops_q(c, layout="NCHW"))
    x = np.ascontiguousarray(c["x"].transpose(0, 2, 3, 1))
    y = ops.conv_integer(x, c["w"], c["zx"], c["zw"], pads=c["pads"], strides=c["strides"],
                         dilations=c["dilations"], group=c["group"], layout="NHWC")
    assert np.array_equal(y.transpose(0, 3, 1, 2),
                          R.conv_integer(c["x"], c["w"], c["zx"], c["zw"], c["pads"], c["strides"],
                                         c["dilations"], c["group"]))


# Larger layers: several gathered blocks, both threads busy, all paths.
LAYERS = [  # (N, C, H, W, OC, k, stride, pads, group)
    (1, 64, 23, 19, 96, 3, 1, (1, 1, 1, 1), 1),      # gather, many blocks
    (1, 32, 29, 29, 70, 1, 1, (0, 0, 0, 0), 1),      # 1x1 direct
    (2, 48, 15, 17, 33, 1, 2, (0, 0, 0, 0), 1),      # 1x1 strided: gathered
    (1, 40, 21, 21, 40, 3, 2, (1, 0, 2, 1), 40),     # depthwise, asymmetric pads
    (1, 96, 13, 11, 64, 5, 1, (2, 2, 2, 2), 4),      # grouped 5x5
    (1, 24, 20, 20, 24, 1, 1, (0, 0, 0, 0), 3),      # grouped 1x1 direct
    (1, 3, 31, 31, 20, 7, 2, (3, 3, 3, 3), 1),       # stem-like 7x7 stride 2, C=3
    (2, 16, 17, 15, 16, 3, 1, (1, 1, 1, 1), 1),      # small-channel 3x3: indirect rows, 16-column tiles
    (1, 4, 14, 19, 33, 3, 2, (0, 2, 1, 1), 1),       # 12-byte kernel rows, strided, asymmetric pads
]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda l: "x".join(map(str, l[:6])) + f"s{l[6]}g{l[8]}")
@pytest.mark.parametrize("mode", R.MODES)
def test_layers_every_mode(run_everywhere, layer, mode):
    N, C, H, W, OC, k, s, pads, g = layer
    rng = np.random.default_rng(list(layer[:7]) + [len(mode)])
    x_dt = "int8" if mode in ("q31", "pot") else "uint8"
    c = dict(x=rand(rng, (N, C, H, W), x_dt), w=rand(rng, (OC, C // g, k, k), "int8"),
             zx=getattr(np, x_dt)(rng.integers(*RANGES[x_dt])), zw=rand(rng, OC, "int8"),
             pads=pads, strides=(s, s), dilations=(1, 1), group=g,
             sx=np.float32(2**-6), sw=np.full(OC, 2**-7, np.float32), sy=np.float32(2.0 ** 2),
             zy=np.int8(-5) if mode != "fp32" else np.uint8(120),
             bias=rng.integers(-5000, 5000, OC).astype(np.int32), mode=mode, clip="relu")
    check_everywhere(run_everywhere, lambda: ops_q(c), ref_q(c))
    want = R.conv_integer(c["x"], c["w"], c["zx"], c["zw"], pads, (s, s), (1, 1), g)
    check_everywhere(run_everywhere, lambda: ops.conv_integer(c["x"], c["w"], c["zx"], c["zw"], pads=pads,
                                                              strides=(s, s), group=g), want)


@pytest.fixture
def gathered_conv():
    """Dense convolutions through the gathered im2col blocks instead of indirect rows."""
    _core.set_conv_indirect_enabled(False)
    try:
        yield
    finally:
        _core.set_conv_indirect_enabled(True)


@settings(max_examples=examples(0.5))
@given(conv_cases())
def test_gathered_path_matches_reference(run_everywhere, c):
    """The gathered path (which the indirect one replaces where it applies) stays exact."""
    _core.set_conv_indirect_enabled(False)
    try:
        check_everywhere(run_everywhere, lambda: ops_q(c), ref_q(c))
    finally:
        _core.set_conv_indirect_enabled(True)


@pytest.mark.parametrize("layer", [l for l in LAYERS if l[8] == 1 and l[5] > 1],
                         ids=lambda l: "x".join(map(str, l[:6])) + f"s{l[6]}")
def test_layers_gathered_path(run_everywhere, gathered_conv, layer):
    N, C, H, W, OC, k, s, pads, g = layer
    rng = np.random.default_rng(list(layer[:7]))
    x, w = rand(rng, (N, C, H, W), "uint8"), rand(rng, (OC, C, k, k), "int8")
    zx, zw = np.uint8(rng.integers(0, 256)), rand(rng, OC, "int8")
    want = R.conv_integer(x, w, zx, zw, pads, (s, s), (1, 1), 1)
    check_everywhere(run_everywhere, lambda: ops.conv_integer(x, w, zx, zw, pads=pads, strides=(s, s)), want)


def test_accumulator_wraps(run_everywhere):
    """int32 wraparound (semantics 2.1): a bias near INT32_MAX plus a positive sum wraps."""
    x = np.full((1, 8, 5, 5), 255, np.uint8)
    w = np.full((4, 8, 3, 3), 127, np.int8)
    bias = np.full(4, 2**31 - 1000, np.int32)
    acc = R.conv_accumulate(x, w, np.uint8(0), np.int8(0), (1, 1, 1, 1), bias=bias)
    assert acc.min() < 0  # it did wrap
    want = R.qlinear_conv(x, 1.0, np.uint8(0), w, 1.0, np.int8(0), 2.0**20, np.int8(0), bias,
                          pads=(1, 1, 1, 1), mode="q31_single")
    check_everywhere(run_everywhere, lambda: ops.qlinear_conv(x, 1.0, np.uint8(0), w, 1.0, np.int8(0), 2.0**20,
                                                              np.int8(0), bias, pads=(1, 1, 1, 1),
                                                              mode="q31_single"), want)


def test_padding_is_input_zero_point():
    """A constant input equal to its zero point gives bias everywhere, padded or not."""
    x = np.full((1, 5, 6, 6), 200, np.uint8)
    w = np.random.default_rng(1).integers(-128, 128, (3, 5, 3, 3)).astype(np.int8)
    bias = np.array([7, -8, 9], np.int32)
    w_packed = ops.pack_conv_weights(w, np.int8(3))
    y = ops.conv_integer(x, w_packed, np.uint8(200), pads=(2, 1, 0, 3), dilations=(2, 1))
    assert y.shape == (1, 3, 4, 8) and not y.any()
    y = ops.qlinear_conv(x, 1.0, np.uint8(200), w_packed, 1.0, np.int8(3), 1.0, np.int8(0), bias, pads=(2, 2, 2, 2))
    assert (y == bias.reshape(1, 3, 1, 1)).all()


def test_auto_pad():
    rng = np.random.default_rng(3)
    x = rand(rng, (1, 4, 7, 8), "uint8")
    w = rand(rng, (5, 4, 3, 4), "int8")
    for auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        pads = R.same_pads(auto_pad, (7, 8), (3, 4), (2, 2), (1, 1))
        want = R.conv_integer(x, w, np.uint8(9), None, pads, (2, 2))
        got = ops.conv_integer(x, w, np.uint8(9), auto_pad=auto_pad, strides=(2, 2))
        assert np.array_equal(got, want), auto_pad
        if auto_pad != "VALID":
            assert got.shape[2:] == (4, 4)
    assert R.same_pads("SAME_UPPER", (8,), (4,), (1,), (1,)) == (1, 2)
    assert R.same_pads("SAME_LOWER", (8,), (4,), (1,), (1,)) == (2, 1)


# ------------------------------------------------------------------ ONNX Runtime

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def ort_run(op, x, inits, out_dtype, out_shape, attrs):
    from onnx import helper, numpy_helper

    names = ["x"] + [n if v is not None else "" for n, v in inits]
    elem = helper.np_dtype_to_tensor_dtype
    graph = helper.make_graph(
        [helper.make_node(op, names, ["y"], **attrs)], op,
        [helper.make_tensor_value_info("x", elem(x.dtype), list(x.shape))],
        [helper.make_tensor_value_info("y", elem(np.dtype(out_dtype)), list(out_shape))],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in inits if v is not None])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


ORT_SHAPES = [  # (N, C, H, W, OC, k, stride, pads, dilation, group, x dtype)
    (1, 16, 9, 9, 32, 3, 1, (1, 1, 1, 1), 1, 1, "uint8"),
    (2, 5, 11, 7, 7, 3, 2, (0, 1, 2, 0), 1, 1, "int8"),
    (1, 24, 10, 10, 24, 3, 1, (1, 1, 1, 1), 1, 24, "uint8"),   # depthwise
    (1, 32, 6, 6, 48, 1, 1, (0, 0, 0, 0), 1, 1, "uint8"),      # pointwise
    (1, 12, 13, 13, 8, 5, 1, (2, 2, 2, 2), 2, 2, "int8"),      # grouped, dilated
]


@pytest.mark.parametrize("shape", ORT_SHAPES, ids=lambda s: "x".join(map(str, s[:6])) + f"g{s[9]}{s[10]}")
def test_qlinear_conv_matches_onnxruntime(shape):
    N, C, H, W, OC, k, s, pads, d, g, x_dt = shape
    rng = np.random.default_rng(list(shape[:7]))
    x = rand(rng, (N, C, H, W), x_dt)
    w = rand(rng, (OC, C // g, k, k), "int8")
    zx = getattr(np, x_dt)(rng.integers(*RANGES[x_dt]))
    zw = np.zeros(OC, np.int8)                    # ORT: per-channel zero points must be equal
    sx, sw = np.float32(0.0173), rng.uniform(0.002, 0.01, OC).astype(np.float32)
    bias = rng.integers(-20000, 20000, OC).astype(np.int32)
    acc = R.conv_accumulate(x, w, zx, zw, pads, (s, s), (d, d), g, bias)
    sy = np.float32(float(sx) * float(sw.max()) * np.abs(acc).max() / 100.0)
    zy = np.uint8(128) if x_dt == "uint8" else np.int8(3)
    attrs = dict(kernel_shape=[k, k], pads=list(pads), strides=[s, s], dilations=[d, d], group=g)
    want = R.qlinear_conv(x, sx, zx, w, sw, zw, sy, zy, bias, pads=pads, strides=(s, s),
                          dilations=(d, d), group=g)
    inits = [("x_scale", sx), ("x_zero_point", zx), ("w", w), ("w_scale", sw), ("w_zero_point", zw),
             ("y_scale", sy), ("y_zero_point", zy), ("B", bias)]
    got_ort = ort_run("QLinearConv", x, inits, zy.dtype, want.shape, attrs)
    assert np.array_equal(got_ort, want), f"{int(np.sum(got_ort != want))} differ from ORT"
    assert np.array_equal(ops.qlinear_conv(x, sx, zx, w, sw, zw, sy, zy, bias, pads=pads, strides=(s, s),
                                           dilations=(d, d), group=g, kernel_shape=(k, k)), got_ort)


@pytest.mark.parametrize("shape", ORT_SHAPES[:2] + ORT_SHAPES[3:4],
                         ids=lambda s: "x".join(map(str, s[:6])) + f"g{s[9]}")
def test_conv_integer_matches_onnxruntime(shape):
    N, C, H, W, OC, k, s, pads, d, g, _ = shape
    rng = np.random.default_rng(list(shape[:7]) + [1])
    x = rand(rng, (N, C, H, W), "uint8")       # ORT's ConvInteger kernel: uint8 x, uint8 w
    w = rand(rng, (OC, C // g, k, k), "uint8")
    zx, zw = np.uint8(rng.integers(256)), np.uint8(rng.integers(256))
    attrs = dict(kernel_shape=[k, k], pads=list(pads), strides=[s, s], dilations=[d, d], group=g)
    want = R.conv_integer(x, w, zx, zw, pads, (s, s), (d, d), g)
    got_ort = ort_run("ConvInteger", x, [("w", w), ("x_zero_point", zx), ("w_zero_point", zw)], np.int32,
                      want.shape, attrs)
    assert np.array_equal(got_ort, want)
    assert np.array_equal(ops.conv_integer(x, w, zx, zw, pads=pads, strides=(s, s), dilations=(d, d), group=g),
                          got_ort)


# ------------------------------------------------------------------ bad input

X = np.zeros((1, 4, 5, 5), np.uint8)
Wt = np.zeros((6, 4, 3, 3), np.int8)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(x=X.astype(np.int16)), TypeError, "x must have dtype"),
    (dict(x=[[1]]), TypeError, "x must be a numpy array"),
    (dict(x=X[0]), ValueError, "x must be 4-D"),
    (dict(w=Wt.astype(np.float32)), TypeError, "w must have dtype"),
    (dict(w=Wt[0]), ValueError, "w must be 4-D"),
    (dict(w=np.zeros((6, 3, 3, 3), np.int8)), ValueError, "input channels per group"),
    (dict(group=3), ValueError, "group=3 must divide the input channels"),
    (dict(group=4, w=np.zeros((6, 1, 3, 3), np.int8)), ValueError, "divide the output channels"),
    (dict(group=0), ValueError, "group must be >= 1"),
    (dict(group=1.5), TypeError, "group must be an integer"),
    (dict(pads=(1, 1)), ValueError, "pads must have 4 entries"),
    (dict(pads=(1, 1, -1, 1)), ValueError, "pads must be >= 0"),
    (dict(strides=(0, 1)), ValueError, "strides must be >= 1"),
    (dict(dilations=(1,)), ValueError, "dilations must have 2 entries"),
    (dict(kernel_shape=(3, 2)), ValueError, "kernel_shape"),
    (dict(w=np.zeros((6, 4, 8, 3), np.int8)), ValueError, "larger than the padded input along H"),
    (dict(dilations=(1, 4)), ValueError, "larger than the padded input along W"),
    (dict(auto_pad="SAME"), ValueError, "auto_pad must be one of"),
    (dict(auto_pad="VALID", pads=(1, 1, 1, 1)), ValueError, "cannot be combined"),
    (dict(layout="NWHC"), ValueError, "layout must be one of"),
    (dict(x_zero_point=300), ValueError, "x_zero_point=300"),
    (dict(x_zero_point=np.int8(0)), TypeError, "x_zero_point has dtype int8"),
    (dict(w_zero_point=np.zeros(5, np.int8)), ValueError, "w_zero_point must be"),
    (dict(w_zero_point=np.uint8(0)), TypeError, "w_zero_point has dtype uint8"),
    (dict(x_scale=0.0), ValueError, "x_scale must be finite and > 0"),
    (dict(w_scale=np.ones(5, np.float32)), ValueError, "w_scale must be"),
    (dict(y_scale=float("nan")), ValueError, "y_scale must be finite"),
    (dict(y_zero_point=np.int16(0)), TypeError, "y_zero_point must be uint8 or int8"),
    (dict(y_zero_point=1.5), TypeError, "y_zero_point must be an integer"),
    (dict(B=np.zeros(6, np.int64)), TypeError, "B \\(bias\\) must be int32"),
    (dict(B=np.zeros(5, np.int32)), ValueError, "B \\(bias\\) must have shape"),
    (dict(mode="q15"), ValueError, "mode must be one of"),
    (dict(clip="gelu"), ValueError, "clip must be"),
])
def test_bad_input(kwargs, exc, match):
    args = dict(x=X, x_scale=0.1, x_zero_point=np.uint8(0), w=Wt, w_scale=0.1, w_zero_point=np.int8(0),
                y_scale=0.1, y_zero_point=np.uint8(0), B=None)
    attrs = dict(pads=(1, 1, 1, 1))
    for key, v in kwargs.items():
        (attrs if key in ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides", "mode", "clip",
                          "layout") else args)[key] = v
    if attrs.get("auto_pad", "NOTSET") != "NOTSET" and "pads" not in kwargs:
        attrs.pop("pads")
    with pytest.raises(exc, match=match):
        ops.qlinear_conv(**args, **attrs)


def test_packed_weights_mismatch():
    w = ops.pack_conv_weights(Wt, np.int8(0))
    with pytest.raises(ValueError, match="packed with group=1"):
        ops.conv_integer(np.zeros((1, 8, 5, 5), np.uint8), w, group=2)
    with pytest.raises(ValueError, match="differs from the zero point"):
        ops.conv_integer(X, w, w_zero_point=np.int8(1))
    with pytest.raises(ValueError, match="input channels per group"):
        ops.conv_integer(np.zeros((1, 5, 5, 5), np.uint8), w)
    assert w.kernel_shape == (3, 3) and "group=1" in repr(w)
    with pytest.raises(ValueError, match="must be 4-D"):  # the C++ layer re-checks too
        pyqinfer._core.qconv(X[0], 0, w._core, [1, 1], [0, 0, 0, 0], [1, 1], None, "int32", None, 0, 0, 0)
    with pytest.raises(ValueError, match="channels"):
        pyqinfer._core.qconv(np.zeros((1, 5, 5, 3), np.uint8), 0, w._core, [1, 1], [0, 0, 0, 0], [1, 1], None,
                             "int32", None, 0, 0, 0)
    with pytest.raises(ValueError, match="larger than the padded input"):
        pyqinfer._core.qconv(np.zeros((1, 2, 2, 4), np.uint8), 0, w._core, [1, 1], [0, 0, 0, 0], [1, 1], None,
                             "int32", None, 0, 0, 0)


def test_bench_conv_cli_runs(capsys):
    """`pyqinfer bench conv` runs end to end on one small layer and reports exact outputs."""
    import json

    from pyqinfer import cli

    assert cli.main(["bench", "conv", "--layers", "mb2_pw_160to960x7", "--threads", "1", "--repeats", "1",
                     "--min-time", "0.01", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (rec,) = doc["records"]
    assert rec["layer"] == "mb2_pw_160to960x7" and rec["exact_nhwc_nchw"]
    assert rec.get("exact_vs_ort", True)
    assert rec["gops"]["pyq_nhwc"] > 0
