"""The pyqinfer ONNX domain (docs/model-format.md section 9): ShiftMatMul, ShiftConv,
MultiThreshold, PWLQMatMul and the requant-mode / acc_bits metadata of standard ops.

Every model is built with onnx.helper, passes onnx.checker, goes through
onnx.save / onnx.load, and its outputs are compared element for element with
pyqinfer.reference. Malformed nodes must give an UnsupportedModelError naming them.
"""
import zlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper as nh

import pyqinfer
from pyqinfer import quant
from pyqinfer import reference as ref
from pyqinfer.frontends.pyqinfer_domain import make_shift_node, pack_conv_codes
from pyqinfer.graph import UnsupportedModelError
from pyqinfer.graph.customops import ShiftLayer
from pyqinfer.reference.shiftcodes import shift_linear

ELEM = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
        np.dtype(np.int16): TensorProto.INT16, np.dtype(np.int32): TensorProto.INT32,
        np.dtype(np.float32): TensorProto.FLOAT}


def model(nodes, inits, inputs, outputs, opset=17, pq=1, meta=None):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, ELEM[np.dtype(d)], s) for n, d, s in inputs],
                          [helper.make_tensor_value_info(o[0], ELEM[np.dtype(o[1])], o[2] if len(o) > 2 else ["?"])
                           for o in outputs], inits)
    ops = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("pyqinfer", pq)] if pq else [])
    m = helper.make_model(g, opset_imports=ops)
    for k, v in (meta or {}).items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    return m


def roundtrip(m, tmp_path):
    onnx.checker.check_model(m)
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    onnx.checker.check_model(onnx.load(p))
    return pyqinfer.load(str(p))


CODEBOOKS = [
    ("pot", lambda w: quant.pot_encode(w, bits=4, e_min=-6, e_max=0)),
    ("pot-binary", lambda w: quant.pot_encode(np.where(w == 0, 0.01, w), bits=5, e_min=-15, e_max=0,
                                              zero_code=False)),
    ("log2", lambda w: quant.log_encode(w, bits=5, e_max=1, e_min=-12, signed=True)),
    ("log-sqrt2", lambda w: quant.log_encode(w, bits=6, e_max=2, e_min=-20, base="sqrt2", signed=True)),
    ("apot-paper", lambda w: quant.apot_encode(w, bits=5, k=2, per_channel=True)),
    ("apot-repo", lambda w: quant.apot_encode(w, bits=4, construction="repo")),
]


@pytest.mark.parametrize("name,enc", CODEBOOKS, ids=[c[0] for c in CODEBOOKS])
@pytest.mark.parametrize("mode", ["fp32", "q31", "q31_single"])
def test_shift_matmul_matches_reference(name, enc, mode, tmp_path):
    rng = np.random.default_rng(zlib.crc32(repr((name, mode)).encode()))
    K, N = 24, 7
    codes = enc(rng.normal(size=(K, N)))
    bias = rng.integers(-300, 300, N).astype(np.int32)
    xs, ys = np.float32(0.037), np.float32(0.11)
    node, inits = make_shift_node("layer", codes, "x", "y", x_scale=xs, x_zero_point=np.uint8(9), bias=bias,
                                  y_scale=ys, y_zero_point=np.int8(-5), mode=mode, acc_bits=20, clip=[-100, 120])
    m = roundtrip(model([node], inits, [("x", np.uint8, ["N", K])], [("y", np.int8)]), tmp_path)
    x = rng.integers(0, 256, (9, K)).astype(np.uint8)
    x[0] = 255
    x[1] = 0
    want = shift_linear(x, xs, np.uint8(9), codes, ys, np.int8(-5), bias=bias, mode=mode, clip=(-100, 120),
                        acc_bits=20)
    got = m(x)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, want)


def test_shift_matmul_deepshift_int32_pot_mode(tmp_path):
    """rule deepshift on int32 fixed-point activations, int32 accumulator output; then pot requant."""
    rng = np.random.default_rng(3)
    K, N = 16, 5
    codes = quant.deepshift_q_encode(rng.normal(size=(K, N)), bits=5)
    s, e, _ = codes.terms("deepshift")
    node, inits = make_shift_node("ds", codes, "x", "acc", rule="deepshift", acc_bits=24)
    m = roundtrip(model([node], inits, [("x", np.int32, ["N", K])], [("acc", np.int32)]), tmp_path)
    x = rng.integers(-2 ** 20, 2 ** 20, (6, K)).astype(np.int32)
    want = ref.shift_accumulate(x, s, e, acc_bits=24, rule="deepshift")
    np.testing.assert_array_equal(m(x), want)
    # pot mode: every effective scale a power of two
    c2 = quant.pot_encode(rng.normal(size=(K, N)), bits=4, e_min=-6, e_max=0)
    node, inits = make_shift_node("p", c2, "x", "y", x_scale=2.0 ** -3, x_zero_point=np.int8(0),
                                  y_scale=2.0 ** -2, y_zero_point=np.int8(0), mode="pot")
    m = roundtrip(model([node], inits, [("x", np.int8, ["N", K])], [("y", np.int8)]), tmp_path)
    x8 = rng.integers(-128, 128, (6, K)).astype(np.int8)
    np.testing.assert_array_equal(m(x8), shift_linear(x8, np.float32(2 ** -3), np.int8(0), c2, np.float32(0.25),
                                                       np.int8(0), mode="pot"))


def test_shift_layer_adapter_equals_reference():
    """The numpy adapter (until the C++ kernels are merged) equals reference.shift_accumulate, both rules,
    saturation, and the wide fallback (products beyond int64)."""
    rng = np.random.default_rng(5)
    for rule, T, elo, ehi, adt, W in (("exact", 3, 0, 30, np.uint8, 24), ("deepshift", 1, -31, 30, np.int32, 32),
                                      ("exact", 2, 20, 30, np.int32, 32), ("deepshift", 1, -5, 5, np.int16, 12)):
        K, N = 11, 4
        s = rng.integers(-1, 2, (T, K, N)).astype(np.int8)
        e = rng.integers(elo, ehi + 1, (T, K, N)).astype(np.int8)
        info = np.iinfo(adt)
        a = rng.integers(info.min, int(info.max) + 1, (5, K), dtype=np.int64).astype(adt)
        za = 3 if adt == np.uint8 else 0
        bias = rng.integers(-1000, 1000, N).astype(np.int32)
        lay = ShiftLayer(s, e, rule, adt, za, bias, W)
        want = ref.shift_accumulate(a, s, e, a_zero_point=za or None, bias=bias, acc_bits=W, rule=rule)
        np.testing.assert_array_equal(lay._numpy_exact(a), want)
        np.testing.assert_array_equal(lay.accumulate(a), want)     # the C++ kernels once merged
        if elo == 20:
            assert not lay.int64_exact    # the object-integer fallback ran


def _im2col_nchw(x, za, KH, KW, pads, strides):
    n, C, H, W = x.shape
    xp = np.full((n, C, H + pads[0] + pads[2], W + pads[1] + pads[3]), za, x.dtype)
    xp[:, :, pads[0]:pads[0] + H, pads[1]:pads[1] + W] = x
    OH = (xp.shape[2] - KH) // strides[0] + 1
    OW = (xp.shape[3] - KW) // strides[1] + 1
    rows = []
    for b in range(n):
        for i in range(OH):
            for j in range(OW):
                patch = xp[b, :, i * strides[0]:i * strides[0] + KH, j * strides[1]:j * strides[1] + KW]
                rows.append(patch.reshape(-1))           # (c, kh, kw) order
    return np.array(rows), (n, OH, OW)


@pytest.mark.parametrize("rule", ["exact", "deepshift"])
def test_shift_conv_matches_reference(rule, tmp_path):
    rng = np.random.default_rng(7)
    OC, C, KH, KW = 5, 3, 3, 2
    w_shape = [OC, C, KH, KW]
    w = rng.normal(size=(C * KH * KW, OC))
    codes = quant.pot_encode(w, bits=5, e_min=-10, e_max=2) if rule == "exact" else \
        quant.deepshift_q_encode(w, bits=4)
    xdt, za = (np.uint8, 17) if rule == "exact" else (np.int8, 0)
    bias = rng.integers(-500, 500, OC).astype(np.int32)
    xs, ys = np.float32(0.02), np.float32(0.07)
    pads, strides = [1, 0, 2, 1], [2, 1]
    node, inits = make_shift_node("conv", codes, "x", "y", conv=True, w_shape=w_shape, x_scale=xs,
                                  x_zero_point=xdt(za), bias=bias, y_scale=ys, y_zero_point=np.uint8(128),
                                  rule=rule, pads=pads, strides=strides, acc_bits=18)
    m = roundtrip(model([node], inits, [("x", xdt, ["N", C, 7, 6])], [("y", np.uint8)]), tmp_path)
    info = np.iinfo(xdt)
    x = rng.integers(info.min, int(info.max) + 1, (2, C, 7, 6)).astype(xdt)
    cols, (n, OH, OW) = _im2col_nchw(x, za, KH, KW, pads, strides)
    s, e, _ = codes.terms(rule)
    acc = ref.shift_accumulate(cols, s, e, a_zero_point=za or None, bias=bias, acc_bits=18, rule=rule)
    params = ref.derive_requant("fp32", xs, codes.effective_scale(rule), ys)
    want = ref.requantize(acc, params, 128, 0, 255).astype(np.uint8)
    want = want.reshape(n, OH, OW, OC).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(m(x), want)
    # the packed stream is the ONNX-order code tensor
    assert np.array_equal(nh.to_array([i for i in inits if i.name == "conv_codes"][0]),
                          pack_conv_codes(codes, w_shape))


def test_shift_conv_then_threshold_then_shift_matmul(tmp_path):
    """A small all-pyqinfer network: ShiftConv -> int32 -> MultiThreshold (codes) -> Flatten -> ShiftMatMul."""
    rng = np.random.default_rng(11)
    OC, C = 4, 2
    cw = quant.pot_encode(rng.normal(size=(C * 9, OC)), bits=4, e_min=-6, e_max=0)
    n1, i1 = make_shift_node("c1", cw, "x", "acc", conv=True, w_shape=[OC, C, 3, 3], x_scale=np.float32(0.1),
                             x_zero_point=np.uint8(0), pads=[1, 1, 1, 1])
    T = np.sort(rng.integers(-200, 200, (OC, 15)), axis=1).astype(np.int32)
    i2 = [nh.from_array(T, "T")]
    n2 = helper.make_node("MultiThreshold", ["acc", "T"], ["h"], domain="pyqinfer", name="mt", out_dtype="uint8")
    n3 = helper.make_node("Flatten", ["h"], ["hf"], name="flat")
    mw = quant.apot_encode(rng.normal(size=(OC * 16, 3)), bits=5)
    n4, i4 = make_shift_node("fc", mw, "hf", "y", x_scale=np.float32(0.5), x_zero_point=np.uint8(0),
                             y_scale=np.float32(0.3), y_zero_point=np.int8(0))
    m = roundtrip(model([n1, n2, n3, n4], i1 + i2 + i4, [("x", np.uint8, ["N", C, 4, 4])], [("y", np.int8)]),
                  tmp_path)
    x = rng.integers(0, 256, (3, C, 4, 4)).astype(np.uint8)
    cols, (n, OH, OW) = _im2col_nchw(x, 0, 3, 3, [1, 1, 1, 1], [1, 1])
    s, e, _ = cw.terms()
    acc = ref.shift_accumulate(cols, s, e).reshape(n, OH, OW, OC).transpose(0, 3, 1, 2)
    h = ref.multi_threshold(acc, T, out_dtype="uint8")
    want = shift_linear(h.reshape(n, -1), np.float32(0.5), np.uint8(0), mw, np.float32(0.3), np.int8(0))
    np.testing.assert_array_equal(m(x), want)


@pytest.mark.parametrize("case", ["float", "int32-lut", "int8-outdtype", "nhwc", "uint8-table"])
def test_multi_threshold(case, tmp_path):
    rng = np.random.default_rng(13)
    attrs, lut = {}, None
    if case == "float":
        xdt, shape = np.float32, [2, 3, 4, 4]
        T = np.sort(rng.normal(size=(3, 6)), axis=1).astype(np.float32)
        T[0, 2] = T[0, 3]            # a repeated threshold
        attrs = dict(out_scale=0.5, out_bias=-1.0)
    elif case == "int32-lut":
        xdt, shape = np.int32, [5, 4]
        T = np.sort(rng.integers(-1000, 1000, (4, 7)), axis=1).astype(np.int64)
        lut = rng.integers(-100, 100, (4, 8)).astype(np.int8)
    elif case == "int8-outdtype":
        xdt, shape = np.int32, [2, 6, 3, 3]
        T = np.sort(rng.integers(-5000, 5000, (1, 15)), axis=1).astype(np.int32)
        attrs = dict(out_dtype="int8", out_bias=-8.0)
    elif case == "nhwc":
        xdt, shape = np.float32, [2, 3, 5, 4]
        T = np.sort(rng.normal(size=(4, 3)), axis=1)
        attrs = dict(data_layout="NHWC")
    else:
        xdt, shape = np.uint8, [3, 5, 2, 2]
        T = np.sort(rng.integers(0, 256, (5, 9)), axis=1).astype(np.float32) - 0.5
        attrs = dict(out_dtype="uint8")
    inits = [nh.from_array(np.asarray(T), "T")] + ([nh.from_array(lut, "lut")] if lut is not None else [])
    node = helper.make_node("MultiThreshold", ["x", "T"] + (["lut"] if lut is not None else []), ["y"],
                            domain="pyqinfer", name="mt", **attrs)
    ydt = lut.dtype if lut is not None else np.dtype(attrs.get("out_dtype", "float32"))
    m = roundtrip(model([node], inits, [("x", xdt, shape)], [("y", ydt)]), tmp_path)
    if np.dtype(xdt).kind == "f":
        x = rng.normal(size=shape).astype(np.float32)
        x.reshape(-1)[:3] = np.asarray(T).reshape(-1)[:3]           # exact hits: >= counts them
    else:
        info = np.iinfo(xdt)
        lo, hi = (max(info.min, -6000), min(int(info.max), 6000))
        x = rng.integers(lo, hi + 1, shape).astype(xdt)
    kw = {k: v for k, v in attrs.items() if k in ("out_scale", "out_bias", "data_layout", "out_dtype")}
    want = ref.multi_threshold(x, T, kw.pop("out_scale", None), kw.pop("out_bias", None), lut=lut, **kw)
    got = m(x)
    if ydt == np.float32:
        want = want.astype(np.float32)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_pwlq_matmul(tmp_path):
    from pyqinfer.reference.pwlq import pwlq_linear
    rng = np.random.default_rng(17)
    K, N = 20, 6
    codes = quant.pwlq_encode(rng.normal(size=(K, N)).astype(np.float32), bits=4)
    prm = np.stack([codes.m, codes.p, codes.s_c, codes.s_t]).astype(np.float32)
    bias = rng.integers(-100, 100, N).astype(np.int32)
    inits = [nh.from_array(v, k) for k, v in (("xs", np.float32(0.05)), ("xz", np.uint8(100)),
                                               ("reg", codes.region), ("q", codes.q), ("prm", prm),
                                               ("b", bias), ("ys", np.float32(0.08)), ("yz", np.int8(2)))]
    node = helper.make_node("PWLQMatMul", ["x", "xs", "xz", "reg", "q", "prm", "b", "ys", "yz"], ["y"],
                            domain="pyqinfer", name="pw", bits=4)
    m = roundtrip(model([node], inits, [("x", np.uint8, ["N", K])], [("y", np.int8)]), tmp_path)
    x = rng.integers(0, 256, (5, K)).astype(np.uint8)
    want = pwlq_linear(x, np.float32(0.05), np.uint8(100), codes, np.float32(0.08), np.int8(2), bias)
    np.testing.assert_array_equal(m(x), want)


# ---------------------------------------------------------------- requant mode metadata
def _qlinear_matmul_model(meta=None, node_meta=None):
    rng = np.random.default_rng(19)
    K, N = 32, 8
    w = rng.integers(-127, 128, (K, N)).astype(np.int8)
    w[:, :4] = rng.integers(-1, 2, (K, 4))          # small accumulators: exact ties at S = 1/2 below
    inits = [nh.from_array(v, k) for k, v in (("as", np.float32(0.5)), ("az", np.uint8(120)), ("w", w),
                                               ("ws", np.float32(0.25)), ("wz", np.int8(0)),
                                               ("ys", np.float32(0.25)), ("yz", np.uint8(128)))]
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "w", "ws", "wz", "ys", "yz"], ["y"], name="mm")
    for k, v in (node_meta or {}).items():
        p = node.metadata_props.add()
        p.key, p.value = k, v
    m = model([node], inits, [("a", np.uint8, ["N", K])], [("y", np.uint8)], pq=0, meta=meta)
    if node_meta:
        m.ir_version = 10
    return m, w


@pytest.mark.parametrize("how", ["model", "node-key", "node-metadata"])
@pytest.mark.parametrize("mode", ["q31", "q31_single"])
def test_requant_mode_metadata(how, mode, tmp_path):
    meta = {"model": {"pyqinfer.requant_mode": mode},
            "node-key": {"pyqinfer.requant_mode": "fp32", "pyqinfer.requant_mode:mm": mode}}.get(how)
    m, w = _qlinear_matmul_model(meta, {"pyqinfer.requant_mode": mode} if how == "node-metadata" else None)
    mod = roundtrip(m, tmp_path)
    rng = np.random.default_rng(23)
    a = rng.integers(116, 125, (40, 32)).astype(np.uint8)
    args = (a, np.float32(0.5), np.uint8(120), w, np.float32(0.25), np.int8(0), np.float32(0.25), np.uint8(128))
    want = ref.qlinear_matmul(*args, mode=mode)
    got = mod(a)
    np.testing.assert_array_equal(got, want)
    assert mod.graph.nodes[0].attrs["mode"] == mode
    # S = 1/2: odd accumulators are ties, where RNE (fp32) and round-half-up (q31*) differ
    assert not np.array_equal(want, ref.qlinear_matmul(*args, mode="fp32"))


def test_acc_bits_declaration_is_verified():
    m, w = _qlinear_matmul_model({"pyqinfer.acc_bits": "32", "pyqinfer.exporter": "train.export 0.1"})
    assert pyqinfer.load(m).graph.nodes[0].attrs["acc_bits"] == 32
    m, w = _qlinear_matmul_model({"pyqinfer.acc_bits:mm": "16"})
    with pytest.raises(UnsupportedModelError, match=r"'mm'.*acc_bits=16.*static bound"):
        pyqinfer.load(m)
    for meta, msg in (({"pyqinfer.requant_mode:nope": "q31"}, "names no QLinearConv"),
                      ({"pyqinfer.requant_mode": "fp64"}, "not one of"),
                      ({"pyqinfer.acc_bits": "7"}, r"\[8, 32\]")):
        m, _ = _qlinear_matmul_model(meta)
        with pytest.raises(UnsupportedModelError, match=msg):
            pyqinfer.load(m)


# ---------------------------------------------------------------- malformed nodes
def _shift_model(mutate=None, pq=1):
    rng = np.random.default_rng(29)
    codes = quant.pot_encode(rng.normal(size=(8, 3)), bits=4, e_min=-6, e_max=0)
    node, inits = make_shift_node("bad_layer", codes, "x", "y", x_scale=np.float32(0.1),
                                  x_zero_point=np.uint8(0), y_scale=np.float32(0.3), y_zero_point=np.uint8(0))
    if mutate:
        mutate(node, inits)
    return model([node], inits, [("x", np.uint8, ["N", 8])], [("y", np.uint8)], pq=pq)


def _set_attr(name, value):
    def f(node, inits):
        keep = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(keep)
        if value is not None:
            node.attribute.append(helper.make_attribute(name, value))
    return f


def _set_init(name, arr):
    def f(node, inits):
        for i, t in enumerate(inits):
            if t.name == name:
                inits[i] = nh.from_array(arr, name)
    return f


MALFORMED = [
    (_set_attr("scheme", None), "missing attribute 'scheme'"),
    (_set_attr("scheme", "ternary"), "scheme='ternary' is not one of"),
    (_set_attr("bits", 9), "bits=9 is outside"),
    (_set_attr("w_shape", None), "missing attribute 'w_shape'"),
    (_set_attr("e_max", None), "missing attribute 'e_max'"),
    (_set_attr("rule", "floor"), "rule='floor'"),
    (_set_attr("acc_bits", 40), "acc_bits=40"),
    (_set_attr("mode", "fp16"), "mode='fp16'"),
    (_set_attr("e_min", -30), "invalid codebook parameters"),
    (_set_attr("clip", [10, 5]), "clip"),
    (_set_init("bad_layer_codes", np.zeros(5, np.uint8)), "W_codes has 5 bytes; 24 codes of 4 bits need 12"),
    (_set_init("bad_layer_codes", np.full(12, 0x88, np.uint8)), "not valid pot codes"),   # negative zero
    (_set_init("bad_layer_codes", np.zeros(12, np.int8)), "W_codes must be a 1-D uint8"),
    (_set_init("bad_layer_w_scale", np.ones(5, np.float32)), "W_scale must be float32, a scalar or \\[3\\]"),
    (_set_init("bad_layer_w_scale", np.float32(-1)), "W_scale must be finite and > 0"),
    (_set_attr("mode", "pot"), "requantization mode 'pot'"),
]


@pytest.mark.parametrize("mutate,msg", MALFORMED, ids=[m[1][:30] for m in MALFORMED])
def test_malformed_shift_node(mutate, msg):
    m = _shift_model(mutate)
    with pytest.raises(UnsupportedModelError, match=msg) as ei:
        pyqinfer.load(m)
    assert "'bad_layer' (pyqinfer.ShiftMatMul)" in str(ei.value)


def test_malformed_domain_and_other_ops():
    with pytest.raises(UnsupportedModelError, match="version 1"):
        pyqinfer.load(_shift_model(pq=2))
    bad = helper.make_node("ShiftGemm", ["x"], ["y"], domain="pyqinfer", name="odd")
    with pytest.raises(UnsupportedModelError, match=r"'odd' \(pyqinfer.ShiftGemm\): unknown op"):
        pyqinfer.load(model([bad], [], [("x", np.uint8, [1, 4])], [("y", np.uint8)]))
    mt = helper.make_node("MultiThreshold", ["x"], ["y"], domain="pyqinfer", name="mt0")
    with pytest.raises(UnsupportedModelError, match=r"'mt0'.*thresholds must be a constant"):
        pyqinfer.load(model([mt], [], [("x", np.float32, [1, 4])], [("y", np.float32)]))
    T = nh.from_array(np.zeros((1, 3), np.float32), "T")
    L = nh.from_array(np.zeros((1, 4), np.uint8), "L")
    mt = helper.make_node("MultiThreshold", ["x", "T", "L"], ["y"], domain="pyqinfer", name="mt1", out_scale=2.0)
    with pytest.raises(UnsupportedModelError, match=r"'mt1'.*lut excludes"):
        pyqinfer.load(model([mt], [T, L], [("x", np.float32, [1, 4])], [("y", np.uint8)]))
    L5 = nh.from_array(np.zeros((1, 5), np.uint8), "L")
    mt = helper.make_node("MultiThreshold", ["x", "T", "L"], ["y"], domain="pyqinfer", name="mt2")
    with pytest.raises(UnsupportedModelError, match=r"'mt2'.*lut must have shape"):
        pyqinfer.load(model([mt], [T, L5], [("x", np.float32, [1, 4])], [("y", np.uint8)]))
    mt = helper.make_node("MultiThreshold", ["x", "T"], ["y"], domain="pyqinfer", name="mt3", out_dtype="int8",
                          out_scale=0.5)
    with pytest.raises(UnsupportedModelError, match=r"'mt3'.*out_scale=0.5 must be"):
        pyqinfer.load(model([mt], [T], [("x", np.float32, [1, 4])], [("y", np.int8)]))
    q = np.full((4, 2), 9, np.int8)
    inits = [nh.from_array(v, k) for k, v in (("xs", np.float32(0.05)), ("reg", np.zeros((4, 2), np.uint8)),
                                               ("q", q), ("prm", np.ones((4, 2), np.float32)),
                                               ("ys", np.float32(0.08)))]
    pw = helper.make_node("PWLQMatMul", ["x", "xs", "", "reg", "q", "prm", "", "ys"], ["y"], domain="pyqinfer",
                          name="pw0", bits=4)
    with pytest.raises(UnsupportedModelError, match=r"'pw0'.*out of range for 4 bits"):
        pyqinfer.load(model([pw], inits, [("x", np.uint8, [1, 4])], [("y", np.uint8)]))


@pytest.mark.parametrize("conv", [False, True])
def test_shift_zero_point_without_scale(conv, tmp_path):
    """A_zero_point with no A_scale (an int32-output layer needs no scale) is still subtracted:
    the engine, verify's contract and the reference agree; it was once silently dropped."""
    rng = np.random.default_rng(11)
    K, N = (2 * 3 * 3, 4) if conv else (7, 5)
    codes = quant.pot_encode(rng.normal(size=(K, N)), bits=4, e_min=-3, e_max=0)
    s, e, _ = codes.terms("exact")
    za = np.uint8(5)
    if conv:
        node, inits = make_shift_node("c", codes, "x", "acc", conv=True, w_shape=[N, 2, 3, 3], x_zero_point=za,
                                      pads=[1, 1, 1, 1])
        m = roundtrip(model([node], inits, [("x", np.uint8, ["N", 2, 5, 5])], [("acc", np.int32)]), tmp_path)
        x = np.full((1, 2, 5, 5), 5, np.uint8)
        assert not m(x).any()       # the input equals its zero point: every term adds 0, padding too
        x = rng.integers(0, 256, (2, 2, 5, 5)).astype(np.uint8)
        cols, _ = _im2col_nchw(x, 5, 3, 3, (1, 1, 1, 1), (1, 1))
        want = ref.shift_accumulate(cols, s, e, a_zero_point=5)
        np.testing.assert_array_equal(np.moveaxis(m(x), 1, -1).reshape(-1, N), want)
    else:
        node, inits = make_shift_node("m", codes, "x", "acc", x_zero_point=za)
        m = roundtrip(model([node], inits, [("x", np.uint8, ["N", K])], [("acc", np.int32)]), tmp_path)
        assert not m(np.full((3, K), 5, np.uint8)).any()
        x = rng.integers(0, 256, (3, K)).astype(np.uint8)
        np.testing.assert_array_equal(m(x), ref.shift_accumulate(x, s, e, a_zero_point=5))
    from pyqinfer.verify import verify
    rep = verify(m, {"x": x}, use_ort=False)
    assert rep.bit_exact and rep.exit_status == 0
    assert rep.layers[0]["contract"]["status"] == "exact", rep.layers[0]


# ---------------------------------------------------------------- grouped / depthwise ShiftConv
GROUPED = [(4, 6, 2), (3, 3, 3), (3, 6, 3)]      # (C, OC, group): two groups, depthwise, depthwise x2


def _grouped_want(x, s, e, group, za, bias, pads, strides, acc_bits, rule):
    """acc [N*OH*OW, OC] of a grouped shift conv, computed independently: each group's input channels
    through the test's own im2col and reference.shift_accumulate, the output blocks side by side."""
    C, OC = x.shape[1], s.shape[2]
    Cg, OCg = C // group, OC // group
    parts = []
    for gi in range(group):
        og = slice(gi * OCg, (gi + 1) * OCg)
        cols, shape = _im2col_nchw(x[:, gi * Cg:(gi + 1) * Cg], za, 3, 2, pads, strides)
        parts.append(ref.shift_accumulate(cols, s[:, :, og], e[:, :, og], a_zero_point=za or None,
                                          bias=None if bias is None else bias[og], acc_bits=acc_bits, rule=rule))
    return np.concatenate(parts, axis=1), shape


@pytest.mark.parametrize("out", ["requant", "int32"])
@pytest.mark.parametrize("rule", ["exact", "deepshift"])
@pytest.mark.parametrize("C,OC,group", GROUPED, ids=["g2", "depthwise", "depthwise-x2"])
def test_shift_conv_group_matches_reference(C, OC, group, rule, out, tmp_path):
    from pyqinfer.reference.shift_conv import shift_conv_accumulate
    from pyqinfer.verify import verify
    rng = np.random.default_rng(zlib.crc32(repr((C, OC, group, rule, out)).encode()))
    Cg, KH, KW = C // group, 3, 2
    w_shape = [OC, Cg, KH, KW]
    w = rng.normal(size=(Cg * KH * KW, OC))
    codes = quant.pot_encode(w, bits=5, e_min=-10, e_max=2) if rule == "exact" else \
        quant.deepshift_q_encode(w, bits=4)
    w_scale = rng.uniform(0.5, 2.0, OC).astype(np.float32)            # per output channel
    codes = quant.ShiftCodes(codes.codes, codes.codebook, w_scale)
    xdt, za = (np.uint8, 17) if rule == "exact" else (np.int8, 0)
    bias = rng.integers(-500, 500, OC).astype(np.int32)
    xs, ys = np.float32(0.02), np.float32(0.07)
    pads, strides = [1, 0, 2, 1], [2, 1]
    requant = out == "requant"
    acc_bits = (14 if rule == "exact" else 8) if requant else 32     # some accumulators saturate
    node, inits = make_shift_node("gconv", codes, "x", "y", conv=True, w_shape=w_shape, x_scale=xs,
                                  x_zero_point=xdt(za), bias=bias, y_scale=ys if requant else None,
                                  y_zero_point=np.uint8(128) if requant else None, rule=rule, pads=pads,
                                  strides=strides, acc_bits=acc_bits, group=group)
    ydt = np.uint8 if requant else np.int32
    m = roundtrip(model([node], inits, [("x", xdt, ["N", C, 7, 6])], [("y", ydt)]), tmp_path)
    info = np.iinfo(xdt)
    x = rng.integers(info.min, int(info.max) + 1, (2, C, 7, 6)).astype(xdt)
    x[0, :, 0] = info.max
    x[1, :, 1] = info.min
    s, e, _ = codes.terms(rule)                                       # [T, Cg*KH*KW, OC]
    acc, (n, OH, OW) = _grouped_want(x, s, e, group, za, bias, pads, strides, acc_bits, rule)
    if requant:
        params = ref.derive_requant("fp32", xs, codes.effective_scale(rule), ys)
        want = ref.requantize(acc, params, 128, 0, 255).astype(np.uint8)
    else:
        want = acc.astype(np.int32)
        assert np.abs(acc).max() > 0
    want = want.reshape(n, OH, OW, OC).transpose(0, 3, 1, 2)
    got = m(x)
    assert got.dtype == ydt and got.shape == (2, OC, OH, OW)
    np.testing.assert_array_equal(got, want)
    if requant:
        lim = (1 << (acc_bits - 1)) - 1
        assert (np.abs(acc) == lim + (acc < 0)).any(), "no saturated accumulator: raise the weights"
    # the reference with group= is the same per-group loop
    T = s.shape[0]
    onnx_terms = lambda v: v.reshape(T, Cg, KH, KW, OC).transpose(0, 4, 1, 2, 3)  # noqa: E731
    got_ref = shift_conv_accumulate(x, onnx_terms(s), onnx_terms(e), x_zero_point=za or None, pads=pads,
                                    strides=strides, bias=bias, acc_bits=acc_bits, rule=rule, group=group)
    np.testing.assert_array_equal(got_ref, acc.reshape(n, OH, OW, OC).transpose(0, 3, 1, 2))
    rep = verify(m, {"x": x}, use_ort=False)
    assert rep.bit_exact and rep.exit_status == 0, rep
    lay = rep.layers[0]
    assert lay["contract"]["status"] == "exact", lay
    assert lay["float"]["real"] == 0 and lay["float"]["unclassified"] == 0, lay      # the per-group float model
    assert lay["float"]["exact"] + lay["float"]["saturation"] + lay["float"]["ties"] == lay["float"]["compared"], lay


def test_shift_conv_group_one_attribute_is_the_default(tmp_path):
    rng = np.random.default_rng(3)
    codes = quant.pot_encode(rng.normal(size=(2 * 3 * 3, 4)), bits=4, e_min=-3, e_max=0)
    x = rng.integers(0, 256, (1, 2, 5, 5)).astype(np.uint8)
    outs = []
    for extra in ({}, {"group": 1}):
        node, inits = make_shift_node("c", codes, "x", "acc", conv=True, w_shape=[4, 2, 3, 3],
                                      x_zero_point=np.uint8(3), pads=[1, 1, 1, 1], **extra)
        outs.append(roundtrip(model([node], inits, [("x", np.uint8, ["N", 2, 5, 5])], [("acc", np.int32)]),
                              tmp_path)(x))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_shift_conv_bad_group():
    from pyqinfer.reference.shift_conv import shift_conv_accumulate
    rng = np.random.default_rng(4)

    def load(OC, Cg, group, C):
        codes = quant.pot_encode(rng.normal(size=(Cg * 9, OC)), bits=4, e_min=-3, e_max=0)
        node, inits = make_shift_node("badg", codes, "x", "acc", conv=True, w_shape=[OC, Cg, 3, 3], group=group)
        return pyqinfer.load(model([node], inits, [("x", np.int8, ["N", C, 5, 5])], [("acc", np.int32)]))
    with pytest.raises(UnsupportedModelError, match=r"'badg' \(pyqinfer.ShiftConv\): group=2 does not divide the 5"):
        load(5, 2, 2, 4)
    with pytest.raises(UnsupportedModelError, match=r"'badg' \(pyqinfer.ShiftConv\): input 'x' has 5 channels but "
                                                    r"group=2 .* needs 4"):
        load(4, 2, 2, 5)
    with pytest.raises(UnsupportedModelError, match=r"'badg' \(pyqinfer.ShiftConv\): attribute group=0"):
        load(4, 2, 0, 4)
    m = load(4, 2, 2, 4)
    assert m(np.ones((1, 4, 5, 5), np.int8)).shape == (1, 4, 3, 3)
    with pytest.raises(ValueError, match=r"must have shape \(N, 4, 5, 5\)"):
        m(np.ones((1, 6, 5, 5), np.int8))
    s = np.ones((1, 4, 2, 3, 3), np.int8)
    with pytest.raises(ValueError, match="group=3 does not divide"):
        shift_conv_accumulate(np.zeros((1, 6, 5, 5), np.int8), s, s * 0, group=3)
    with pytest.raises(ValueError, match="2 input channels per group"):
        shift_conv_accumulate(np.zeros((1, 6, 5, 5), np.int8), s, s * 0, group=2)
