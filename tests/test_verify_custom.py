"""pyqinfer verify on the pyqinfer-domain and QONNX kinds (docs/verify.md sections 2-4):
ShiftMatMul / ShiftConv (PoT, APoT, log), MultiThreshold, PWLQMatMul, QonnxQuant and
AffineChain have a contract (pyqinfer.reference) and a float64 reference; a corrupted
engine element is a real error, float32 rounding ties are ties, and a declared narrow
accumulator that saturates is the class "saturation". Every shipped demo model verifies
layer by layer with no n/a layer of these kinds."""
import glob
import os
import zlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper as nh

import pyqinfer
from pyqinfer import quant
from pyqinfer import reference as ref
from pyqinfer.frontends.pyqinfer_domain import make_shift_node
from pyqinfer.verify import verify
from pyqinfer.verify.floatref import FloatReference

CUSTOM = ("ShiftMatMul", "ShiftConv", "MultiThreshold", "PWLQMatMul", "QonnxQuant", "AffineChain")
DEMO = sorted(glob.glob(os.path.join(os.path.dirname(pyqinfer.__file__), "data", "demo", "*.onnx")))
ELEM = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
        np.dtype(np.int32): TensorProto.INT32, np.dtype(np.float32): TensorProto.FLOAT}
QD = "qonnx.custom_op.general"


def model(nodes, inits, inputs, outputs, qonnx=False):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, ELEM[np.dtype(d)], s) for n, d, s in inputs],
                          [helper.make_tensor_value_info(n, ELEM[np.dtype(d)], ["?"]) for n, d in outputs], inits)
    ops = [helper.make_opsetid("", 17), helper.make_opsetid(QD if qonnx else "pyqinfer", 1)]
    m = helper.make_model(g, opset_imports=ops)
    onnx.checker.check_model(m)
    return m


def corrupt(m, name, delta=1):
    """Monkeypatch the planned step of layer ``name``: its element 0 (the same element in any
    layout) moves by ``delta`` LSB, toward the inside of the dtype range."""
    st = next(s for s in m.plan.steps if s.node.name == name)
    for attr in ("fast", "slow"):
        f = getattr(st, attr)

        def g(*a, f=f):
            y = np.array(f(*a), copy=True)
            v = y.reshape(-1)
            hi = np.iinfo(y.dtype).max if y.dtype.kind in "iu" else np.inf
            v[0] = int(v[0]) - delta if int(v[0]) + delta > hi else int(v[0]) + delta
            return y
        setattr(st, attr, g)


def check_clean(rep, kinds):
    """Exit 0, every layer exact with the contract, no real float error, the custom kinds covered."""
    assert rep.exit_status == 0, rep.text()
    seen = set()
    for r in rep.layers:
        want = ("exact", "n/a") if r["kind"].startswith("FloatOp") else ("exact",)   # float ops: no contract
        assert r["contract"]["status"] in want, (r["name"], r["contract"])
        assert r["float"]["status"] in ("exact", "ties", "float", "saturation"), (r["name"], r["float"])
        assert r["float"].get("real", 0) == 0 and r["float"].get("unclassified", 0) == 0
        if r["float"].get("kind") == "int":
            f = r["float"]
            assert f["exact"] + f["ties"] + f["real"] + f["saturation"] + f["unclassified"] == f["compared"]
        seen.add(r["kind"])
    assert set(kinds) <= seen, seen
    assert rep.to_dict()["first_divergent"]["any"] is None
    assert not any("no float reference" in n for n in rep.to_dict()["notes"])


def check_corrupted(rep, name):
    """Exactly one element of layer ``name`` is off: a contract mismatch and one real float error
    there, and nowhere else (each layer is fed the engine's own inputs)."""
    assert rep.exit_status == 1 and not rep.bit_exact
    r = rep.layer(name)
    assert r["contract"]["status"] == "mismatch" and r["contract"]["exact"] == r["elements"] - 1
    f = r["float"]
    assert f["status"] == "real" and f["real"] == 1, f
    assert any(ex["index"] == [0] * len(r["shape"]) and ex["class"] == "real" for ex in f["examples"]), f
    fd = rep.to_dict()["first_divergent"]
    assert fd["contract"] == fd["float_real"] == fd["any"] == name
    for o in rep.layers:
        if o["name"] != name:
            assert o["contract"]["status"] == "exact" and o["float"].get("real", 0) == 0, o["name"]


def clean_then_corrupted(m, feeds, name, kind):
    """verify the model clean (check_clean), then with element 0 of layer ``name`` corrupted
    (check_corrupted); returns the clean report."""
    rep = verify(m, feeds)
    check_clean(rep, [kind])
    m2 = pyqinfer.load(m)
    corrupt(m2, name)
    check_corrupted(verify(m2, feeds, onnx_model=m), name)
    return rep


# ---------------------------------------------------------------- shipped demo models
@pytest.mark.parametrize("path", DEMO, ids=[os.path.basename(p)[:-5] for p in DEMO])
def test_demo_models_verify_layer_by_layer(path):
    rep = verify(path, seed=1, batch=2, use_ort=False)
    check_clean(rep, [])
    for r in rep.layers:
        assert r["float"]["status"] != "error", r
        if r["kind"] in CUSTOM:
            assert r["contract"]["status"] != "n/a" and r["float"]["status"] != "n/a", r


def test_demo_models_cover_the_custom_kinds():
    kinds = set()
    for p in DEMO:
        kinds |= {n.kind for n in pyqinfer.load(p).graph.nodes}
    assert {"ShiftMatMul", "ShiftConv", "MultiThreshold"} <= kinds, kinds


# ---------------------------------------------------------------- shift layers
SHIFT_CODEBOOKS = [
    ("pot", lambda w: quant.pot_encode(w, bits=4, e_min=-6, e_max=0)),
    ("apot", lambda w: quant.apot_encode(w, bits=5, k=2, per_channel=True)),
    ("log2", lambda w: quant.log_encode(w, bits=5, e_max=1, e_min=-12, signed=True)),
    ("log-sqrt2", lambda w: quant.log_encode(w, bits=6, e_max=2, e_min=-20, base="sqrt2", signed=True)),
]


def shift_mm(codes, mode="fp32", acc_bits=32, K=None, clip=None, xz=9, ys=0.11, bias=None):
    K, N = codes.shape
    node, inits = make_shift_node("sh", codes, "x", "y", x_scale=np.float32(0.037), x_zero_point=np.uint8(xz),
                                  bias=bias, y_scale=np.float32(ys), y_zero_point=np.int8(-5), mode=mode,
                                  acc_bits=acc_bits, **({"clip": clip} if clip else {}))
    return model([node], inits, [("x", np.uint8, ["N", K])], [("y", np.int8)])


@pytest.mark.parametrize("name,enc", SHIFT_CODEBOOKS, ids=[c[0] for c in SHIFT_CODEBOOKS])
@pytest.mark.parametrize("mode", ["fp32", "q31", "q31_single"])
def test_shift_matmul_exact_then_corrupted(name, enc, mode):
    rng = np.random.default_rng(zlib.crc32(f"{name}-{mode}".encode()))
    K, N = 24, 7
    codes = enc(rng.normal(size=(K, N)))
    m = shift_mm(codes, mode, acc_bits=32, clip=[-100, 120], bias=rng.integers(-300, 300, N).astype(np.int32))
    x = rng.integers(0, 256, (40, K)).astype(np.uint8)
    rep = clean_then_corrupted(m, {"x": x}, "sh", "ShiftMatMul")
    assert rep.layer("sh")["float"]["compared"] == 40 * N


@pytest.mark.parametrize("mode", ["pot", "fp32"])
def test_shift_matmul_deepshift(mode):
    """rule deepshift (right shifts floor each product): the float reference uses the rule's own
    products; pot-mode requantization (round half up) and fp32."""
    rng = np.random.default_rng(47)
    K, N = 16, 5
    codes = quant.deepshift_q_encode(rng.normal(size=(K, N)), bits=5)
    node, inits = make_shift_node("ds", codes, "x", "y", rule="deepshift", x_scale=np.float32(2 ** -3),
                                  x_zero_point=np.int8(0), y_scale=np.float32(2 ** -2 if mode == "pot" else 0.3),
                                  y_zero_point=np.int8(0), mode=mode)
    m = model([node], inits, [("x", np.int8, ["N", K])], [("y", np.int8)])
    x = rng.integers(-128, 128, (30, K)).astype(np.int8)
    clean_then_corrupted(m, {"x": x}, "ds", "ShiftMatMul")


def test_shift_matmul_float_reference_is_the_real_weights():
    """The float64 reference of a shift layer is sum (x - zx) s_x * dequantize(codes) / s_y, RNE:
    checked against a float64 evaluation with the codes' own dequantized weights."""
    rng = np.random.default_rng(7)
    codes = quant.apot_encode(rng.normal(size=(16, 5)), bits=5)
    m = pyqinfer.load(shift_mm(codes, xz=9))
    x = rng.integers(0, 256, (30, 16)).astype(np.uint8)
    node = m.graph.nodes[0]
    r = FloatReference(m.graph).evaluate(node, [x])
    real = (x.astype(np.float64) - 9) * np.float64(np.float32(0.037)) @ codes.dequantize().astype(np.float64)
    want = np.clip(np.rint(real / np.float64(np.float32(0.11))) - 5, -128, 127)
    np.testing.assert_array_equal(r.value, want)


def test_shift_matmul_tie_is_classified_tie():
    """PoT weights 2^11 .. 2^0 (scale 1), s_x = 1, s_y = 14: x = ones gives acc = 3563 and the exact
    value 3563/14 = 254.5; the fp32 multiplier fl32(1/14) > 1/14 rounds it to 255 (engine and
    contract), the float reference's RNE to 254: a tie. Other inputs are exact."""
    w = np.array([[2048.], [1024], [256], [128], [64], [32], [8], [2], [1]])
    codes = quant.pot_encode(w, bits=5, e_max=11, e_min=0, scale=1.0)
    node, inits = make_shift_node("sh", codes, "x", "y", x_scale=np.float32(1), x_zero_point=np.uint8(0),
                                  y_scale=np.float32(14), y_zero_point=np.uint8(0))
    m = model([node], inits, [("x", np.uint8, ["N", 9])], [("y", np.uint8)])
    x = np.array([[1] * 9, [0] * 9, [0, 0, 0, 0, 0, 0, 0, 1, 1]], np.uint8)
    rep = verify(m, {"x": x})
    f = rep.layer("sh")["float"]
    assert rep.exit_status == 0 and rep.layer("sh")["contract"]["status"] == "exact"
    assert (f["exact"], f["ties"], f["real"], f["status"]) == (2, 1, 0, "ties"), f
    ex = f["examples"][0]
    assert (ex["engine"], ex["reference"], ex["contract"], ex["exact_value"], ex["class"]) == \
        (255, 254, 255, "509/2", "tie")
    # an engine returning the float reference's 254 there is wrong: the contract says 255
    m2 = pyqinfer.load(m)
    corrupt(m2, "sh", delta=1)       # 255 is the top of uint8: the element moves down to 254
    rep2 = verify(m2, {"x": x}, onnx_model=m)
    r2 = rep2.layer("sh")
    assert rep2.exit_status == 1 and r2["contract"]["status"] == "mismatch" and r2["contract"]["exact"] == 2
    assert r2["float"]["status"] == "exact"


@pytest.mark.parametrize("name,enc", SHIFT_CODEBOOKS[:2], ids=[c[0] for c in SHIFT_CODEBOOKS[:2]])
def test_shift_conv_exact_then_corrupted(name, enc):
    rng = np.random.default_rng(19)
    OC, C = 5, 3
    codes = enc(rng.normal(size=(C * 9, OC)))
    node, inits = make_shift_node("conv", codes, "x", "y", conv=True, w_shape=[OC, C, 3, 3],
                                  x_scale=np.float32(0.02), x_zero_point=np.uint8(7),
                                  bias=rng.integers(-50, 50, OC).astype(np.int32), y_scale=np.float32(0.05),
                                  y_zero_point=np.uint8(3), pads=[1, 0, 1, 2], strides=[1, 2])
    m = model([node], inits, [("x", np.uint8, ["N", C, 7, 6])], [("y", np.uint8)])
    x = rng.integers(0, 256, (2, C, 7, 6)).astype(np.uint8)
    clean_then_corrupted(m, {"x": x}, "conv", "ShiftConv")


def _exact_acc(codes, x, xz, bias):
    s, e, _ = codes.terms()
    return ref.shift_accumulate(x, s, e, a_zero_point=xz, bias=bias, acc_bits=32).astype(np.int64)


def test_acc_bits_saturation_is_its_own_class():
    """acc_bits = 12: accumulators beyond [-2048, 2047] saturate in the engine and the contract but
    not in the float model; verify counts exactly those mismatches as 'saturation', exits 0, and a
    corrupted saturated element is still a real error."""
    rng = np.random.default_rng(23)
    K, N = 32, 6
    codes = quant.pot_encode(rng.normal(size=(K, N)), bits=4, e_min=-6, e_max=0)
    m = shift_mm(codes, acc_bits=12, xz=128, ys=0.037 * float(codes.effective_scale()) * 40)
    x = rng.integers(0, 256, (64, K)).astype(np.uint8)
    acc = _exact_acc(codes, x, np.uint8(128), None)
    sat = (acc < -2048) | (acc > 2047)
    assert 0 < sat.sum() < sat.size
    rep = verify(m, {"x": x})
    check_clean(rep, ["ShiftMatMul"])
    f = rep.layer("sh")["float"]
    y_sat = ref.requantize(np.clip(acc, -2048, 2047), ref.derive_requant("fp32", np.float32(0.037),
                           codes.effective_scale(), np.float32(0.037 * float(codes.effective_scale()) * 40)),
                           -5, -128, 127)
    y_wide = np.clip(np.rint(acc * (0.037 * float(codes.effective_scale())) /
                             float(np.float32(0.037 * float(codes.effective_scale()) * 40))) - 5, -128, 127)
    differ = sat & (y_sat != y_wide)
    assert differ.sum() > 0
    assert f["status"] == "saturation" and f["saturation"] == int(differ.sum()) and f["real"] == 0, f
    assert "acc_bits=12" in f["note"] and "accumulator saturation" in rep.text()
    assert rep.to_dict()["summary"]["float_saturation"] == f["saturation"]
    assert all(ex["class"] in ("saturation", "tie") for ex in f["examples"])
    # corrupt a saturated element that also differs: engine != contract there -> real
    i0 = int(np.flatnonzero(differ.reshape(-1))[0])
    xs = np.concatenate([x[i0 // N:i0 // N + 1], x])     # that row first: element 0 differs and saturates
    m2 = pyqinfer.load(m)
    corrupt(m2, "sh")
    rep2 = verify(m2, {"x": xs}, onnx_model=m)
    f2 = rep2.layer("sh")["float"]
    assert rep2.exit_status == 1 and f2["real"] == 1 and f2["examples"][0]["class"] == "real"
    assert f2["saturation"] == f["saturation"] + int(differ.reshape(-1)[(i0 // N) * N:(i0 // N) * N + N].sum()) - 1


def test_acc_bits_saturation_int32_output():
    """Without Y_scale the output is the saturated accumulator itself: the float model is the
    unbounded sum, and the saturated elements are exactly the 'saturation' mismatches."""
    rng = np.random.default_rng(29)
    K, N = 20, 4
    codes = quant.pot_encode(rng.normal(size=(K, N)) * 16, bits=4, e_min=0, e_max=5, scale=1.0)
    node, inits = make_shift_node("acc", codes, "x", "y", acc_bits=14)
    m = model([node], inits, [("x", np.int8, ["N", K])], [("y", np.int32)])
    x = rng.integers(-128, 128, (50, K)).astype(np.int8)
    acc = _exact_acc(codes, x, None, None)
    sat = (acc < -2 ** 13) | (acc > 2 ** 13 - 1)
    assert 0 < sat.sum() < sat.size
    rep = verify(m, {"x": x})
    check_clean(rep, ["ShiftMatMul"])
    f = rep.layer("acc")["float"]
    assert f["saturation"] == int(sat.sum()) and f["exact"] == int((~sat).sum()) and f["status"] == "saturation"


# ---------------------------------------------------------------- MultiThreshold
@pytest.mark.parametrize("case", ["int32-acc", "float-lut", "uint8-qparams"])
def test_multi_threshold_exact_then_corrupted(case):
    rng = np.random.default_rng(31)
    nodes, inits = [], []
    if case == "int32-acc":           # a ConvInteger accumulator, integer thresholds, uint8 codes
        W = rng.integers(-8, 8, (4, 2, 3, 3)).astype(np.int8)
        inits += [nh.from_array(W, "W"), nh.from_array(np.uint8(3), "xz")]
        nodes.append(helper.make_node("ConvInteger", ["x", "W", "xz"], ["acc"], name="ci"))
        T = np.sort(rng.integers(-400, 400, (4, 7)), axis=1).astype(np.int32)
        inp, xdt, shape, src, attrs = "x", np.uint8, [2, 2, 6, 6], "acc", {"out_dtype": "uint8"}
        ydt = np.uint8
    elif case == "float-lut":
        T = np.sort(rng.normal(size=(1, 5)), axis=1).astype(np.float32)
        inits.append(nh.from_array(rng.integers(-100, 100, (1, 6)).astype(np.int8), "lut"))
        inp, xdt, shape, src, attrs, ydt = "x", np.float32, [3, 5], "x", {}, np.int8
    else:                              # a QuantizeLinear output: uint8 with qparams
        inits += [nh.from_array(np.float32(0.05), "s"), nh.from_array(np.uint8(128), "z")]
        nodes.append(helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"))
        T = np.sort(rng.integers(0, 256, (3, 6)), axis=1).astype(np.int64)
        inp, xdt, shape, src, attrs, ydt = "x", np.float32, [2, 3, 4, 4], "xq", {"out_dtype": "int8",
                                                                               "out_bias": -3.0}, np.int8
    inits.append(nh.from_array(T, "T"))
    nodes.append(helper.make_node("MultiThreshold", [src, "T"] + (["lut"] if case == "float-lut" else []), ["y"],
                                  domain="pyqinfer", name="mt", **attrs))
    m = model(nodes, inits, [(inp, xdt, shape)], [("y", ydt)])
    if xdt == np.float32:
        x = (rng.normal(size=shape) * (3 if case == "uint8-qparams" else 1)).astype(np.float32)
        if case == "float-lut":
            x.reshape(-1)[:3] = T.reshape(-1)[:3]     # exact hits: >= counts them
    else:
        x = rng.integers(0, 256, shape).astype(np.uint8)
    rep = clean_then_corrupted(m, {"x": x}, "mt", "MultiThreshold")
    assert rep.layer("mt")["float"]["exact"] == rep.layer("mt")["elements"]


# ---------------------------------------------------------------- PWLQ
def pwlq_model(codes, bits, xs, xz, ys, yz, bias=None, ydt=np.int8):
    prm = np.stack([codes.m, codes.p, codes.s_c, codes.s_t]).astype(np.float32)
    vals = [("xs", np.float32(xs)), ("xz", np.uint8(xz)), ("reg", codes.region), ("q", codes.q), ("prm", prm),
            ("b", bias if bias is not None else np.zeros(codes.q.shape[1], np.int32)), ("ys", np.float32(ys)),
            ("yz", np.dtype(ydt).type(yz))]
    node = helper.make_node("PWLQMatMul", ["x", "xs", "xz", "reg", "q", "prm", "b", "ys", "yz"], ["y"],
                            domain="pyqinfer", name="pw", bits=bits)
    return model([node], [nh.from_array(np.asarray(v), k) for k, v in vals],
                 [("x", np.uint8, ["N", codes.q.shape[0]])], [("y", ydt)])


def test_pwlq_exact_then_corrupted():
    rng = np.random.default_rng(37)
    codes = quant.pwlq_encode(rng.normal(size=(20, 6)).astype(np.float32), bits=4)
    m = pwlq_model(codes, 4, 0.05, 100, 0.08, 2, rng.integers(-100, 100, 6).astype(np.int32))
    x = rng.integers(0, 256, (50, 20)).astype(np.uint8)
    clean_then_corrupted(m, {"x": x}, "pw", "PWLQMatMul")


def test_pwlq_tie_is_classified_tie():
    """8-bit PWLQ, centre codes [13, 1] with s_c = fl32(2 * 127.5 / 255) = 1, s_x = 1, s_y = 14:
    x = [255, 248] gives 3563/14 = 254.5 exactly; the float32 combine rounds to 255, RNE to 254."""
    from pyqinfer.reference.pwlq import PWLQCodes
    f32 = np.float32
    codes = PWLQCodes(8, np.zeros((2, 1), np.uint8), np.array([[13], [1]], np.int8), np.array([255.5], f32),
                      np.array([127.5], f32), np.array([1.0], f32), np.array([1.0], f32))
    m = pwlq_model(codes, 8, 1.0, 0, 14.0, 0, ydt=np.uint8)
    x = np.array([[255, 248], [0, 0], [17, 3]], np.uint8)
    rep = verify(m, {"x": x})
    f = rep.layer("pw")["float"]
    assert rep.exit_status == 0 and (f["exact"], f["ties"], f["real"]) == (2, 1, 0), f
    ex = f["examples"][0]
    assert (ex["engine"], ex["reference"], ex["exact_value"], ex["class"]) == (255, 254, "509/2", "tie")


# ---------------------------------------------------------------- QONNX float steps
def _quant(nodes, inits, x, y, s, z, bits, mode="ROUND", signed=1):
    k = len(inits)
    inits += [nh.from_array(np.float32(s), f"s{k}"), nh.from_array(np.float32(z), f"z{k}"),
              nh.from_array(np.float32(bits), f"b{k}")]
    nodes.append(helper.make_node("Quant", [x, f"s{k}", f"z{k}", f"b{k}"], [y], domain=QD, name=y,
                                  signed=signed, narrow=0, rounding_mode=mode))


@pytest.mark.parametrize("mode", ["ROUND", "HALF_UP", "FLOOR", "UP"])
def test_qonnx_quant_float_input_ties_and_corruption(mode):
    """Quant of a float32 input runs in float32 (fl32(fl32(x / s) + z)); the float reference rounds
    x / s + z exactly. Inputs picked where the two differ are float32-rounding ties; a corrupted
    code is real. The Conv after it ends in a float tail (AffineChain)."""
    rng = np.random.default_rng(41)
    s, z = np.float32(0.1), 3.0
    nodes, inits = [], []
    _quant(nodes, inits, "x", "xq", s, z, 8, mode)
    W = rng.normal(size=(2, 1, 2, 2)).astype(np.float32)
    inits.append(nh.from_array(W, "W"))
    _quant(nodes, inits, "W", "Wq", 2 ** -4, 0, 8)
    nodes.append(helper.make_node("Conv", ["xq", "Wq"], ["y"], name="conv", kernel_shape=[2, 2]))
    m = model(nodes, inits, [("x", np.float32, [1, 1, 6, 6])], [("y", np.float32)], qonnx=True)
    pm = pyqinfer.load(m)
    kinds = [n.kind for n in pm.graph.nodes]
    assert "QonnxQuant" in kinds and "AffineChain" in kinds, kinds
    qname = next(n.name for n in pm.graph.nodes if n.kind == "QonnxQuant")
    # candidates near the rounding boundaries of the mode, where float32 and exact rounding split
    frac = 0.5 if mode in ("ROUND", "HALF_UP") else 0.0
    cand = ((np.arange(-100, 100) + frac - z)[:, None] * np.float64(s) +
            np.arange(-40, 41)[None, :] * 1e-9).astype(np.float32).reshape(-1)
    v32 = (cand / s).astype(np.float32) + np.float32(z)
    rnd = {"ROUND": np.rint, "FLOOR": np.floor, "UP": lambda t: np.sign(t) * np.ceil(np.abs(t)),
           "HALF_UP": lambda t: np.sign(t) * np.floor(np.abs(t) + 0.5)}[mode]
    from fractions import Fraction
    exact = np.array([Fraction(float(c)) / Fraction(float(s)) + 3 for c in cand], dtype=object)
    ex_r = {"ROUND": lambda v: round(v), "FLOOR": lambda v: v.__floor__(),
            "UP": lambda v: v.__ceil__() if v >= 0 else v.__floor__(),
            "HALF_UP": lambda v: (v + Fraction(1, 2)).__floor__() if v >= 0 else -(-v + Fraction(1, 2)).__floor__()}
    split = np.array([rnd(np.float64(a)) != ex_r[mode](b) for a, b in zip(v32, exact)])
    picks = cand[split & (np.abs(cand) < 12)][:20]
    assert picks.size >= 3, "no float32/exact split found"
    x = rng.uniform(-5, 5, 36).astype(np.float32)
    x[:picks.size] = picks
    x = x.reshape(1, 1, 6, 6)
    rep = verify(m, {"x": x})
    check_clean(rep, ["QonnxQuant", "AffineChain"])
    f = rep.layer(qname)["float"]
    assert f["ties"] >= 1 and f["real"] == 0 and f["status"] == "ties", f
    assert all(ex["class"] == "tie" for ex in f["examples"])
    assert rep.layer("y/float")["contract"]["status"] == "exact"
    pm2 = pyqinfer.load(m)
    corrupt(pm2, qname, delta=2)
    rep2 = verify(pm2, {"x": x}, onnx_model=m)
    r = rep2.layer(qname)
    assert rep2.exit_status == 1 and r["contract"]["status"] == "mismatch" and r["float"]["real"] == 1


def test_qonnx_half_up_adds_the_half_in_float32():
    """QONNX's HALF_UP is sign(v) * floor(|v| + 0.5) on float32 v: for v = 0.5 - 2^-25 the float32
    sum is 1.0, so the code is 1 (engine and contract); the exact rounding gives 0. verify: a tie."""
    nodes, inits = [], []
    _quant(nodes, inits, "x", "y", 1.0, 0, 8, "HALF_UP")
    m = model(nodes, inits, [("x", np.float32, ["N"])], [("y", np.float32)], qonnx=True)
    x = np.array([0.5 - 2 ** -25, 0.25, -(0.5 - 2 ** -25), 2.5], np.float32)
    np.testing.assert_array_equal(pyqinfer.load(m)(x), [1, 0, -1, 3])
    rep = verify(m, {"x": x})
    name = next(r["name"] for r in rep.layers if r["kind"] == "QonnxQuant")
    r = rep.layer(name)
    assert rep.exit_status == 0 and r["contract"]["status"] == "exact"
    assert (r["float"]["ties"], r["float"]["real"], r["float"]["exact"]) == (2, 0, 2), r["float"]


def test_bipolar_quant_of_float_input():
    nodes, inits = [], []
    inits.append(nh.from_array(np.float32(0.5), "bs"))
    nodes.append(helper.make_node("BipolarQuant", ["x", "bs"], ["xb"], domain=QD, name="bq"))
    W = np.ones((6, 2), np.float32)
    inits.append(nh.from_array(W, "W"))
    _quant(nodes, inits, "W", "Wq", 0.25, 0, 8)
    nodes.append(helper.make_node("MatMul", ["xb", "Wq"], ["y"], name="mm"))
    m = model(nodes, inits, [("x", np.float32, ["N", 6])], [("y", np.float32)], qonnx=True)
    x = np.random.default_rng(43).normal(size=(5, 6)).astype(np.float32)
    x[0, :2] = 0.0
    rep = verify(m, {"x": x})
    check_clean(rep, ["QonnxQuant"])
    pm = pyqinfer.load(m)
    name = next(n.name for n in pm.graph.nodes if n.kind == "QonnxQuant")
    corrupt(pm, name, delta=-2)        # 1 -> -1 or -1 -> ... (inside int8)
    assert verify(pm, {"x": x}, onnx_model=m).layer(name)["float"]["real"] == 1


# ---------------------------------------------------------------- near ties (V off the boundary, inside E)
def _grid():
    a, b = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    return np.stack([a.reshape(-1), b.reshape(-1)], axis=1).astype(np.uint8)


def _near_tie_rows(m, x, real):
    """Rows of x where the engine differs from RNE of the exact value ``real`` (float64 here is
    within 1e-12 of it: no boundary case left), at most 40."""
    y = np.asarray(m(x)).astype(np.int64).reshape(-1)
    f = np.rint(real).astype(np.int64)
    rows = np.flatnonzero(y != f)
    assert rows.size, "no near tie on the grid"
    assert np.all(np.abs(np.abs(real[rows] - np.floor(real[rows])) - 0.5) < 1e-4)   # they are near halves
    assert np.any(np.abs(np.abs(real[rows] - np.floor(real[rows])) - 0.5) > 1e-9)   # and not all exact
    return x[rows[:40]]


def test_near_ties_shift_and_pwlq():
    """s_x = 0.1, s_y = 1.4 (float32): the engine's float32 multiplier moves values within about
    1e-7 of a half across it. Every such mismatch on a 2-input grid is a tie for ShiftMatMul
    (fp32 mode) and PWLQMatMul (float32 combine), none is real."""
    from pyqinfer.reference.pwlq import PWLQCodes
    f32 = np.float32
    sx, sy = f32(0.1), f32(1.4)
    x = _grid()
    codes = quant.pot_encode(np.array([[8.0], [1.0]]), bits=5, e_max=3, e_min=0, scale=1.0)
    node, inits = make_shift_node("sh", codes, "x", "y", x_scale=sx, x_zero_point=np.uint8(0), y_scale=sy,
                                  y_zero_point=np.uint8(0))
    m = model([node], inits, [("x", np.uint8, ["N", 2])], [("y", np.uint8)])
    real = (x[:, 0].astype(np.float64) * 8 + x[:, 1]) * np.float64(sx) / np.float64(sy)
    rows = _near_tie_rows(pyqinfer.load(m), x, real)
    f = verify(m, {"x": rows}).layer("sh")["float"]
    assert f["ties"] == len(rows) and f["real"] == 0 and f["exact"] == 0, f
    pc = PWLQCodes(8, np.zeros((2, 1), np.uint8), np.array([[13], [1]], np.int8), np.array([255.5], f32),
                   np.array([127.5], f32), np.array([1.0], f32), np.array([1.0], f32))
    pm = pwlq_model(pc, 8, sx, 0, sy, 0, ydt=np.uint8)
    real = (x[:, 0].astype(np.float64) * 13 + x[:, 1]) * np.float64(sx) / np.float64(sy)
    rows = _near_tie_rows(pyqinfer.load(pm), x, real)
    f = verify(pm, {"x": rows}).layer("pw")["float"]
    assert f["ties"] == len(rows) and f["real"] == 0 and f["exact"] == 0, f


@pytest.mark.parametrize("mode", ["q31", "q31_single"])
def test_qlinear_matmul_requant_mode_metadata(mode):
    """A QLinearMatMul whose requantization mode is set by metadata (model-format 9.4): the contract
    uses that mode (not fp32) and the float reference its tie rule; S = 1/2 makes exact ties."""
    rng = np.random.default_rng(19)
    K, N = 32, 8
    w = rng.integers(-1, 2, (K, N)).astype(np.int8)
    inits = [nh.from_array(v, k) for k, v in (("as", np.float32(0.5)), ("az", np.uint8(120)), ("w", w),
                                               ("ws", np.float32(0.25)), ("wz", np.int8(0)),
                                               ("ys", np.float32(0.25)), ("yz", np.uint8(128)))]
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "w", "ws", "wz", "ys", "yz"], ["y"], name="mm")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.UINT8, ["N", K])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, ["N", N])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    p = m.metadata_props.add()
    p.key, p.value = "pyqinfer.requant_mode", mode
    a = rng.integers(116, 125, (40, K)).astype(np.uint8)
    rep = verify(m, {"a": a}, use_ort=False)
    r = rep.layer("mm")
    assert rep.exit_status == 0 and r["contract"]["status"] == "exact"
    assert r["float"]["status"] == "exact", r["float"]      # half up at the exact ties, as the mode rounds


def test_qonnx_staircase_with_decreasing_channels():
    """Quant -> MatMul -> Mul by a per-channel constant with negative entries -> Quant: the importer
    pulls the chain back to integer thresholds on the accumulator with sign -1 on the decreasing
    channels (a MultiThreshold with signs); contract and float reference count on sign * x."""
    rng = np.random.default_rng(53)
    nodes, inits = [], []
    _quant(nodes, inits, "x", "xq", 2 ** -3, 0, 8)
    inits.append(nh.from_array(rng.normal(size=(6, 4)).astype(np.float32), "W"))
    _quant(nodes, inits, "W", "Wq", 2 ** -4, 0, 8)
    nodes.append(helper.make_node("MatMul", ["xq", "Wq"], ["h"], name="mm"))
    inits.append(nh.from_array(np.array([0.5, -0.75, 1.25, -2.0], np.float32), "g"))
    nodes.append(helper.make_node("Mul", ["h", "g"], ["hg"], name="mul"))
    _quant(nodes, inits, "hg", "y", 0.25, 0, 4)
    m = model(nodes, inits, [("x", np.float32, ["N", 6])], [("y", np.float32)], qonnx=True)
    mt = [n for n in pyqinfer.load(m).graph.nodes if n.kind == "MultiThreshold"]
    assert len(mt) == 1 and mt[0].params["sign"] is not None and (mt[0].params["sign"] < 0).any()
    x = (rng.normal(size=(40, 6)) * 4).astype(np.float32)
    clean_then_corrupted(m, {"x": x}, mt[0].name, "MultiThreshold")
