"""Depthwise shift convolution (docs/semantics.md §12.4a, "Depthwise kernel") vs the reference.

``pyqinfer.ops.shift_conv`` with weights packed for ``group == C`` runs the C++
depthwise kernel (csrc/shift/dwshift*) for 8-bit activations; it must equal
``pyqinfer.reference.shift_conv.shift_conv_accumulate(..., group=C)`` bit for bit on
every kernel path and thread count: hypothesis over shapes (kernels 1x1..5x5,
strides, dilations, pads, odd sizes, channel counts off the 16/32/64 lanes, channel
multipliers), T = 1..3, both rules, exponent ranges reaching each lane width,
activation extremes and zero points, saturating acc_bits and bias. Larger layers go
against an int64 numpy oracle (checked equal to the reference on the small ones).
Then each lane width and epilogue explicitly, the other groupings and the fallbacks,
the graph runner and bad input.
"""
import zlib

import numpy as np
import onnx
import pytest
from hypothesis import event, given, settings, strategies as st
from onnx import TensorProto, helper

import pyqinfer
import pyqinfer.ops as ops
import pyqinfer.reference as ref
from pyqinfer import _core, quant
from pyqinfer.frontends.pyqinfer_domain import make_shift_node
from pyqinfer.reference.shift_conv import shift_conv_accumulate

AVX512 = {"avx512bw", "avx512vnni"}


def oracle(x, s, e, *, za=0, pads=(0, 0, 0, 0), strides=(1, 1), dilations=(1, 1), bias=None, acc_bits=32):
    """Depthwise §12.2 in int64 numpy (NCHW x, terms [T, OC, 1, KH, KW], OC = m * C)."""
    n, C, H, W = x.shape
    T, OC, _, KH, KW = s.shape
    m = OC // C
    pt, pl, pb, pr = pads
    xp = np.full((n, C, H + pt + pb, W + pl + pr), za, np.int64)
    xp[:, :, pt:pt + H, pl:pl + W] = x
    xe = np.repeat(xp, m, axis=1) - za                        # output channel oc reads input channel oc // m
    OH = (xp.shape[2] - (dilations[0] * (KH - 1) + 1)) // strides[0] + 1
    OW = (xp.shape[3] - (dilations[1] * (KW - 1) + 1)) // strides[1] + 1
    acc = np.zeros((n, OC, OH, OW), np.int64)
    for kh in range(KH):
        for kw in range(KW):
            h0, w0 = kh * dilations[0], kw * dilations[1]
            patch = xe[:, :, h0:h0 + strides[0] * (OH - 1) + 1:strides[0], w0:w0 + strides[1] * (OW - 1) + 1:strides[1]]
            for t in range(T):
                sg = s[t, :, 0, kh, kw].astype(np.int64)[None, :, None, None]
                ex = e[t, :, 0, kh, kw].astype(np.int64)[None, :, None, None]
                v = np.where(ex >= 0, patch << np.maximum(ex, 0), patch >> np.maximum(-ex, 0))  # >>: floor
                acc += np.where(sg != 0, sg * v, 0)
    if bias is not None:
        acc += np.asarray(bias, np.int64)[None, :, None, None]
    lim = 1 << (acc_bits - 1)
    return np.clip(acc, -lim, lim - 1)


def make_terms(rng, T, OC, KH, KW, elo, ehi, p_off=0.2):
    s = rng.choice(np.array([-1, 0, 1], np.int8), size=(T, OC, 1, KH, KW), p=[(1 - p_off) / 2, p_off, (1 - p_off) / 2])
    e = rng.integers(elo, ehi, size=s.shape, endpoint=True).astype(np.int8)
    e[s == 0] = rng.integers(-128, 128, size=int((s == 0).sum()))      # ignored where the sign is 0
    return s.astype(np.int8), e


def acts(rng, dtype, shape, extremes):
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    if extremes:
        x.flat[::2] = info.min
        x.flat[1::3] = info.max
    return x


@st.composite
def cases(draw):
    rule = draw(st.sampled_from(["exact", "exact", "deepshift"]))
    dt = draw(st.sampled_from(["uint8", "int8"])) if rule == "exact" else "int8"
    C = draw(st.sampled_from([1, 3, 5, 16, 17, 31, 33, 40]))
    m = draw(st.sampled_from([1, 1, 2, 3]))
    KH, KW = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    span_h, span_w = dh * (KH - 1) + 1, dw * (KW - 1) + 1
    H = draw(st.integers(max(1, span_h - pads[0] - pads[2]), max(1, span_h - pads[0] - pads[2]) + 7))
    W = draw(st.integers(max(1, span_w - pads[1] - pads[3]), max(1, span_w - pads[1] - pads[3]) + 9))
    lo_e = 0 if rule == "exact" else -31
    # exponent ranges for int16 lanes (small), int32 lanes and the int64 code (large)
    elo, ehi = draw(st.sampled_from([(0, 2), (0, 4), (0, 5), (2, 5), (0, 6), (0, 12), (20, 30), (0, 30), (lo_e, 3),
                                     (lo_e, 30)]))
    elo = max(elo, lo_e)
    za = 0
    if rule == "exact":
        info = np.iinfo(np.dtype(dt))
        za = draw(st.sampled_from([0, int(info.min), int(info.max), 3]))
    return dict(rule=rule, dt=dt, C=C, m=m, KH=KH, KW=KW, strides=(sh, sw), dilations=(dh, dw), pads=pads,
                H=H, W=W, N=draw(st.integers(1, 2)), T=draw(st.integers(1, 3)), elo=elo, ehi=ehi, za=za,
                acc_bits=draw(st.sampled_from([32, 32, 24, 16, 12, 8])), p_off=draw(st.sampled_from([0.0, 0.3, 0.9])),
                bias=draw(st.sampled_from([None, "small", "extreme"])), extremes=draw(st.booleans()),
                layout=draw(st.sampled_from(["NCHW", "NHWC"])), seed=draw(st.integers(0, 2 ** 32 - 1)))


@settings(max_examples=150)
@given(c=cases())
def test_depthwise_matches_reference(run_everywhere, c):
    rng = np.random.default_rng(c["seed"])
    C, OC = c["C"], c["C"] * c["m"]
    s, e = make_terms(rng, c["T"], OC, c["KH"], c["KW"], c["elo"], c["ehi"], c["p_off"])
    x = acts(rng, np.dtype(c["dt"]), (c["N"], C, c["H"], c["W"]), c["extremes"])
    bias = None
    if c["bias"] == "small":
        bias = rng.integers(-1000, 1000, OC).astype(np.int32)
    elif c["bias"] == "extreme":   # |bias| near 2^31: the int64 epilogue where the bound is large
        bias = rng.choice(np.array([-2 ** 31, 2 ** 31 - 1, -5], np.int64), OC).astype(np.int32)
    geo = dict(pads=c["pads"], strides=c["strides"], dilations=c["dilations"])
    want = shift_conv_accumulate(x, s, e, x_zero_point=c["za"] or None, bias=bias, acc_bits=c["acc_bits"],
                                 rule=c["rule"], group=C, **geo)
    np.testing.assert_array_equal(oracle(x, s, e, za=c["za"], bias=bias, acc_bits=c["acc_bits"], **geo), want)
    w = ops.pack_shift_conv_weights(s, e, rule=c["rule"], group=C)
    assert (w.depthwise is not None) == (C > 1)      # C = 1 is group 1: the GEMM
    if C > 1:
        info = np.iinfo(np.dtype(c["dt"]))
        max_a = max(c["za"] - int(info.min), int(info.max) - c["za"])
        xn = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        for path in pyqinfer.kernel_paths():
            pyqinfer.set_kernel_path(path)
            try:
                kname = _core.dwshift_kernel_name(xn, c["za"], w.depthwise, 32, c["pads"], c["strides"], c["dilations"])
            finally:
                pyqinfer.set_kernel_path("auto")
            assert kname.split(":")[1] == expected_lanes(s, e, max_a, path), (path, kname)
            event(f"{path}: {kname}")
    xin = x if c["layout"] == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if c["layout"] == "NHWC":
        want = want.transpose(0, 2, 3, 1)
    got = run_everywhere(lambda: ops.shift_conv(xin, w, x_zero_point=c["za"], bias=bias, acc_bits=c["acc_bits"],
                                                kernel="shift", layout=c["layout"], **geo))
    for key, y in got.items():
        assert y.dtype == np.int32 and y.shape == want.shape, key
        np.testing.assert_array_equal(y, want, err_msg=str(key))


def _dw_case(seed, C, m, T, elo, ehi, rule="exact", dt=np.uint8, za=0, H=13, W=11, bias=None, acc_bits=32,
             pads=(1, 1, 1, 1), strides=(1, 1), dilations=(1, 1), K=3):
    rng = np.random.default_rng(seed)
    s, e = make_terms(rng, T, C * m, K, K, elo, ehi)
    x = acts(rng, dt, (2, C, H, W), True)
    x[1] = rng.integers(np.iinfo(dt).min, int(np.iinfo(dt).max) + 1, x[1].shape)
    geo = dict(pads=pads, strides=strides, dilations=dilations)
    want = oracle(x, s, e, za=za, bias=bias, acc_bits=acc_bits, **geo)
    return s, e, x, geo, want


def expected_lanes(s, e, max_a, path):
    """The lane choice of §12.4a ("Depthwise kernel") for terms [T, OC, 1, KH, KW]: int16 when
    every channel's bound + negative-term count fits int16, int16 blocks (AVX-512 only) when
    taps cut greedily into blocks whose partial bounds fit int16 average >= 2 taps, int32 when
    it fits int32, else int64."""
    T, OC, _, KH, KW = s.shape
    on = s != 0
    per_term = np.where(on, np.where(e >= 0, max_a * 2.0 ** np.maximum(e, 0),
                                     np.ceil(max_a / 2.0 ** np.maximum(-e, 0))) + (s < 0), 0)
    tap = per_term.reshape(T, OC, KH * KW).sum(axis=0)              # [OC, taps], exact in float64
    worst = tap.sum(axis=1).max()
    simd = path in AVX512 or path in ("avx2", "avxvnni")
    if not simd or worst > 2 ** 31 - 1:
        return "int64"
    if path not in AVX512:
        return "int32"
    if worst <= 2 ** 15 - 1:
        return "int16"
    nblocks, part = 1, np.zeros(OC)
    for k in range(KH * KW):
        if tap[:, k].max() > 2 ** 15 - 1:
            return "int32"
        if (part + tap[:, k]).max() > 2 ** 15 - 1:
            nblocks, part = nblocks + 1, np.zeros(OC)
        part += tap[:, k]
    return "int16blocks" if KH * KW >= 2 * nblocks else "int32"


# (name, exponent range, K): ranges that give each lane width on AVX-512 (asserted below)
LANES = [("int16", (0, 2), 3), ("int16blocks", (4, 4), 3), ("int16blocks-5x5", (0, 3), 5),
         ("int32", (0, 14), 3), ("int64", (20, 30), 3)]


@pytest.mark.parametrize("name,erange,K", LANES, ids=[n[0] for n in LANES])
@pytest.mark.parametrize("rule", ["exact", "deepshift"])
def test_each_lane_width(kernel_path, num_threads, name, erange, K, rule):
    """Each lane width on each path (the choice as §12.4a says), 67 channels (a 64-lane tail),
    multiplier 2, T = 3; deepshift with some right shifts."""
    elo = erange[0] if rule == "exact" else min(erange[0], -2)
    dt, za = (np.uint8, 200) if rule == "exact" else (np.int8, 0)
    s, e, x, geo, want = _dw_case(zlib.crc32(f"{name}{rule}".encode()), 67, 2, 3, elo, erange[1], rule, dt, za, K=K,
                                  pads=(K // 2,) * 4)
    w = ops.pack_shift_conv_weights(s, e, rule=rule, group=67)
    xn = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    kname = _core.dwshift_kernel_name(xn, za, w.depthwise, 32, geo["pads"], geo["strides"], geo["dilations"])
    lanes = expected_lanes(s, e, 200 if rule == "exact" else 128, kernel_path)
    assert kname.split(":")[1] == lanes, kname
    if kernel_path in AVX512 and rule == "exact":
        assert lanes == name.split("-")[0], "the case no longer reaches its lane width: adjust LANES"
    assert kname.startswith("dwshift_scalar") == (lanes == "int64"), kname
    got = ops.shift_conv(x, w, x_zero_point=za, kernel="shift", **geo)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("acc_bits", [32, 16, 12])
def test_saturation_and_int64_epilogue(kernel_path, num_threads, acc_bits):
    """Saturating acc_bits, and |bias| near 2^31 with a large bound (bound + |bias| past int32:
    the int64 epilogue), on a 28x28 layer of 64 channels (threads split the rows)."""
    rng = np.random.default_rng(acc_bits)
    bias = rng.choice(np.array([-2 ** 31, 2 ** 31 - 1, 0, -7], np.int64), 64).astype(np.int32)
    s, e, x, geo, want = _dw_case(acc_bits, 64, 1, 2, 8, 18, H=28, W=28, bias=bias, acc_bits=acc_bits, za=128)
    lim = 1 << (acc_bits - 1)
    assert (want == lim - 1).any() and (want == -lim).any(), "no saturated accumulator"
    w = ops.pack_shift_conv_weights(s, e, group=64)
    got = ops.shift_conv(x, w, x_zero_point=128, bias=bias, acc_bits=acc_bits, **geo)
    np.testing.assert_array_equal(got, want)
    small = ops.shift_conv(x, w, x_zero_point=128, bias=np.zeros(64, np.int32), acc_bits=acc_bits, **geo)
    np.testing.assert_array_equal(small, oracle(x, s, e, za=128, bias=np.zeros(64), acc_bits=acc_bits, **geo))


@pytest.mark.parametrize("C,m,H,strides,dilations", [(64, 1, 28, (1, 1), (1, 1)), (37, 3, 15, (2, 2), (1, 2)),
                                                     (256, 1, 14, (1, 2), (2, 1))])
def test_larger_layers_match_oracle(kernel_path, num_threads, C, m, H, strides, dilations):
    for T, (elo, ehi) in ((1, (0, 6)), (2, (0, 3)), (3, (0, 20))):
        s, e, x, geo, want = _dw_case(C + T, C, m, T, elo, ehi, H=H, W=H + 3, za=5, strides=strides,
                                      dilations=dilations, pads=(2, 1, 0, 2))
        w = ops.pack_shift_conv_weights(s, e, group=C)
        np.testing.assert_array_equal(ops.shift_conv(x, w, x_zero_point=5, **geo), want)


def test_results_do_not_depend_on_thread_count():
    s, e, x, geo, want = _dw_case(9, 48, 1, 2, 0, 7, H=40, W=40)
    w = ops.pack_shift_conv_weights(s, e, group=48)
    outs = []
    try:
        for n in (1, 2, 3):
            pyqinfer.set_num_threads(n)
            outs.append(ops.shift_conv(x, w, **geo))
    finally:
        pyqinfer.set_num_threads(0)
    for o in outs:
        np.testing.assert_array_equal(o, want)


@pytest.mark.parametrize("mode", ["fp32", "q31", "q31_single"])
def test_requantized_output_matches_reference(kernel_path, num_threads, mode):
    """The fused requantization (fp32 in registers on AVX-512, requant_store otherwise), uint8
    and int8 output with a clip, 40 channels (a tail on every lane width), bound past int16."""
    rng = np.random.default_rng(11)
    bias = rng.integers(-500, 500, 40).astype(np.int32)
    s, e, x, geo, acc = _dw_case(11, 20, 2, 2, 0, 5, za=100, bias=bias, acc_bits=16)
    w = ops.pack_shift_conv_weights(s, e, group=20)
    ws = rng.uniform(0.5, 2.0, 40).astype(np.float32)
    params = ref.derive_requant(mode, np.float32(0.02), ws, np.float32(0.9))
    a2 = acc.transpose(0, 2, 3, 1).reshape(-1, 40)
    for zy, clip in ((np.int8(-3), "relu"), (np.uint8(7), None), (np.uint8(200), (190, 250))):
        y = ops.shift_conv(x, w, x_zero_point=100, bias=bias, acc_bits=16, x_scale=0.02, w_scale=ws, y_scale=0.9,
                           y_zero_point=zy, mode=mode, clip=clip, **geo)
        lo, hi = ref.activation_bounds(clip, np.float32(0.9), int(zy), zy.dtype)
        want = ref.requantize(a2, params, int(zy), lo, hi).astype(zy.dtype).reshape(2, 13, 11, 40).transpose(0, 3, 1, 2)
        assert y.dtype == zy.dtype
        assert len(np.unique(y)) > 20, "requantized output is nearly constant: rescale the test"
        np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("kernel", ["multiply", "hybrid", "auto"])
def test_other_groupings_and_fallbacks(kernel_path, kernel):
    """group = 2 and 4 (per-group GEMMs), depthwise with int16 activations or kernel multiply
    / hybrid (per-group GEMMs too): all equal the reference."""
    rng = np.random.default_rng(5)
    for C, OC, g, dt in ((8, 12, 2, np.uint8), (8, 8, 4, np.int8), (6, 6, 6, np.int16), (6, 12, 6, np.uint8)):
        s = rng.integers(-1, 2, (2, OC, C // g, 3, 2)).astype(np.int8)
        e = rng.integers(0, 9, s.shape).astype(np.int8)
        x = acts(rng, dt, (1, C, 6, 5), True)
        za = 3 if dt != np.int16 else 0
        bias = rng.integers(-99, 99, OC).astype(np.int32)
        geo = dict(pads=(1, 0, 1, 1), strides=(1, 2))
        want = shift_conv_accumulate(x, s, e, x_zero_point=za or None, bias=bias, acc_bits=14, group=g, **geo)
        w = ops.pack_shift_conv_weights(s, e, group=g)
        assert (w.depthwise is not None) == (C // g == 1)
        got = ops.shift_conv(x, w, x_zero_point=za, bias=bias, acc_bits=14, kernel=kernel, **geo)
        np.testing.assert_array_equal(got, want, err_msg=f"C={C} OC={OC} group={g} {dt}")
        ws = rng.uniform(0.5, 2.0, OC).astype(np.float32)                  # requantized (per channel)
        y = ops.shift_conv(x, w, x_zero_point=za, bias=bias, acc_bits=14, kernel=kernel, x_scale=0.01, w_scale=ws,
                           y_scale=0.3, y_zero_point=np.uint8(9), **geo)
        params = ref.derive_requant("fp32", np.float32(0.01), ws, np.float32(0.3))
        a2 = want.transpose(0, 2, 3, 1).reshape(-1, OC)
        wy = ref.requantize(a2, params, 9, 0, 255).astype(np.uint8).reshape(
            want.shape[0], want.shape[2], want.shape[3], OC).transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(y, wy, err_msg=f"requantized: C={C} OC={OC} group={g} {dt}")


def test_deepshift_right_shifts_have_no_multiply_form():
    rng = np.random.default_rng(6)
    s, e = make_terms(rng, 1, 4, 3, 3, -5, 2, p_off=0.0)
    e[:] = -3
    w = ops.pack_shift_conv_weights(s, e, rule="deepshift", group=4)
    x = acts(rng, np.int8, (1, 4, 5, 5), True)
    with pytest.raises(ValueError, match="multiply"):
        ops.shift_conv(x, w, kernel="multiply")
    np.testing.assert_array_equal(ops.shift_conv(x, w), shift_conv_accumulate(x, s, e, rule="deepshift", group=4))


# ---------------------------------------------------------------- the graph runner
def _model(node, inits, C, xdt, ydt):
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.helper.np_dtype_to_tensor_dtype(
        np.dtype(xdt)), ["N", C, 9, 8])], [helper.make_tensor_value_info("y", onnx.helper.np_dtype_to_tensor_dtype(
            np.dtype(ydt)), ["?"])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("pyqinfer", 1)])
    onnx.checker.check_model(m)
    return pyqinfer.load(m)


@pytest.mark.parametrize("out", ["int32", "requant"])
@pytest.mark.parametrize("rule,m", [("exact", 1), ("exact", 2), ("deepshift", 1)])
def test_graph_depthwise_shift_conv(kernel_path, rule, m, out):
    rng = np.random.default_rng(zlib.crc32(f"{rule}{m}{out}".encode()))
    C, KH, KW = 19, 3, 3
    OC = C * m
    w = rng.normal(size=(KH * KW, OC))
    codes = quant.pot_encode(w, bits=5, e_min=-10, e_max=2) if rule == "exact" else quant.deepshift_q_encode(w, bits=4)
    w_scale = rng.uniform(0.5, 2.0, OC).astype(np.float32)
    codes = quant.ShiftCodes(codes.codes, codes.codebook, w_scale)
    xdt, za = (np.uint8, 17) if rule == "exact" else (np.int8, 0)
    bias = rng.integers(-500, 500, OC).astype(np.int32)
    requant = out == "requant"
    acc_bits = 14 if requant else 32
    pads, strides = [1, 0, 2, 1], [2, 1]
    node, inits = make_shift_node("dw", codes, "x", "y", conv=True, w_shape=[OC, 1, KH, KW], x_scale=np.float32(0.02),
                                  x_zero_point=xdt(za), bias=bias, y_scale=np.float32(0.07) if requant else None,
                                  y_zero_point=np.uint8(128) if requant else None, rule=rule, pads=pads,
                                  strides=strides, acc_bits=acc_bits, group=C)
    ydt = np.uint8 if requant else np.int32
    model = _model(node, inits, C, xdt, ydt)
    step = next(s for s in model.plan.steps if s.node.name == "dw")
    assert "depthwise shift conv" in step.kernel, step.kernel
    x = acts(rng, xdt, (2, C, 9, 8), True)
    s, e, _ = codes.terms(rule)                                       # [T, KH*KW, OC]
    T = s.shape[0]
    onnx_terms = lambda v: np.ascontiguousarray(v.reshape(T, 1, KH, KW, OC).transpose(0, 4, 1, 2, 3))  # noqa: E731
    acc = shift_conv_accumulate(x, onnx_terms(s), onnx_terms(e), x_zero_point=za or None, pads=pads, strides=strides,
                                bias=bias, acc_bits=acc_bits, rule=rule, group=C)
    if requant:
        params = ref.derive_requant("fp32", np.float32(0.02), codes.effective_scale(rule), np.float32(0.07))
        a2 = acc.transpose(0, 2, 3, 1).reshape(-1, OC)
        want = ref.requantize(a2, params, 128, 0, 255).astype(np.uint8).reshape(
            acc.shape[0], acc.shape[2], acc.shape[3], OC).transpose(0, 3, 1, 2)
    else:
        want = acc.astype(np.int32)
    got = model(x)
    assert got.dtype == ydt
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- bad input
def test_bad_groupings_and_inputs():
    s = np.ones((1, 6, 1, 3, 3), np.int8)
    e = np.zeros_like(s)
    with pytest.raises(ValueError, match="group=4 does not divide the 6 output channels"):
        ops.pack_shift_conv_weights(s, e, group=4)
    with pytest.raises(ValueError, match="group must be >= 1"):
        ops.pack_shift_conv_weights(s, e, group=0)
    for bad in (True, 1.5, "6", None):
        with pytest.raises(TypeError, match="group must be an int"):
            ops.pack_shift_conv_weights(s, e, group=bad)
    with pytest.raises(ValueError, match="outside"):
        ops.pack_shift_conv_weights(s, e + 31, group=6)
    with pytest.raises(ValueError, match="outside"):
        ops.pack_shift_conv_weights(s, e - 1, group=6)                      # rule exact: e >= 0
    w = ops.pack_shift_conv_weights(s, e, group=6)
    x = np.zeros((1, 6, 5, 5), np.uint8)
    with pytest.raises(ValueError, match=r"x has 4 channels but w expects C = 6 \(group=6 x 1 channels\)"):
        ops.shift_conv(np.zeros((1, 4, 5, 5), np.uint8), w)
    with pytest.raises(TypeError, match="dtype"):
        ops.shift_conv(x.astype(np.float32), w)
    with pytest.raises(ValueError, match="x_zero_point=300"):
        ops.shift_conv(x, w, x_zero_point=300)
    with pytest.raises(ValueError, match="acc_bits"):
        ops.shift_conv(x, w, acc_bits=7)
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        ops.shift_conv(x, w, bias=np.zeros(5, np.int32))
    with pytest.raises(TypeError, match="bias must be int32"):
        ops.shift_conv(x, w, bias=np.zeros(6, np.int64))
    with pytest.raises(ValueError, match="does not fit"):
        ops.shift_conv(np.zeros((1, 6, 2, 5), np.uint8), w)
    with pytest.raises(ValueError, match="kernel must be one of"):
        ops.shift_conv(x, w, kernel="fast")
    wd = ops.pack_shift_conv_weights(s, e, rule="deepshift", group=6)
    with pytest.raises(TypeError, match="deepshift"):
        ops.shift_conv(x, wd)
    with pytest.raises(ValueError, match="a_zero_point must be 0"):
        ops.shift_conv(x.astype(np.int8), wd, x_zero_point=1)


def test_core_rechecks():
    s = np.ones((1, 6, 3, 3), np.int8)
    p = _core.pack_dwshift(s, s * 0, 3, "exact")                             # multiplier 2
    x = np.zeros((1, 5, 5, 3), np.uint8)
    geo = ((0, 0, 0, 0), (1, 1), (1, 1))
    assert _core.dwshift_conv(x, 0, p, None, 32, *geo).shape == (1, 3, 3, 6)
    with pytest.raises(ValueError, match="not a multiple of C"):
        _core.pack_dwshift(s, s * 0, 4, "exact")
    with pytest.raises(ValueError, match="signs must be"):
        _core.pack_dwshift(s * 2, s * 0, 3, "exact")
    with pytest.raises(ValueError, match="exponent 31"):
        _core.pack_dwshift(s, s * 31, 3, "exact")
    with pytest.raises(ValueError, match="exponent -1"):
        _core.pack_dwshift(s, -s, 3, "exact")
    with pytest.raises(ValueError, match="1 to 3 terms"):
        _core.pack_dwshift(np.ones((4, 6, 3, 3), np.int8), np.zeros((4, 6, 3, 3), np.int8), 3, "exact")
    with pytest.raises(ValueError, match="rule"):
        _core.pack_dwshift(s, s * 0, 3, "floor")
    with pytest.raises(ValueError, match="x has C=4"):
        _core.dwshift_conv(np.zeros((1, 5, 5, 4), np.uint8), 0, p, None, 32, *geo)
    with pytest.raises(ValueError, match="8-bit"):
        _core.dwshift_conv(x.astype(np.int16), 0, p, None, 32, *geo)
    with pytest.raises(ValueError, match="NHWC"):
        _core.dwshift_conv(x[0], 0, p, None, 32, *geo)
    with pytest.raises(ValueError, match="contiguous"):
        _core.dwshift_conv(x[:, :, ::2], 0, p, None, 32, *geo)
    with pytest.raises(ValueError, match="x_zero_point"):
        _core.dwshift_conv(x, 256, p, None, 32, *geo)
    with pytest.raises(ValueError, match="acc_bits"):
        _core.dwshift_conv(x, 0, p, None, 33, *geo)
    with pytest.raises(ValueError, match="bias"):
        _core.dwshift_conv(x, 0, p, np.zeros(3, np.int32), 32, *geo)
    with pytest.raises(ValueError, match="larger than the padded input along H"):
        _core.dwshift_conv(np.zeros((1, 2, 5, 3), np.uint8), 0, p, None, 32, *geo)
    with pytest.raises(ValueError, match="stride along W"):
        _core.dwshift_conv(x, 0, p, None, 32, (0, 0, 0, 0), (1, 0), (1, 1))
    with pytest.raises(ValueError, match="deepshift"):
        pd = _core.pack_dwshift(s, s * 0, 3, "deepshift")
        _core.dwshift_conv(x, 0, pd, None, 32, *geo)                          # uint8 activations
    assert _core.dwshift_conv(np.zeros((0, 5, 5, 3), np.uint8), 0, p, None, 32, *geo).shape == (0, 3, 3, 6)
