"""QONNX / Brevitas import (docs/model-format.md section 11).

Models are built by hand with onnx.helper in the QONNX domain (qonnx and brevitas
are not installed). Oracles are written here, independently of the importer:
a numpy float64 evaluation of the QONNX graph (``Quant: (clamp(round(x/s + z)) - z) * s``)
where every value is exact in float64 (dyadic scales), and an exact rational
(Fraction) evaluation for arbitrary float32 scales, BatchNormalization and
negative per-channel multipliers. The integer codes of every quantized tensor
are compared element for element.
"""
import math
import zlib
from fractions import Fraction as Fr

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper as nh

import pyqinfer
from pyqinfer.frontends.qonnx import AView, int_range, level_condition
from pyqinfer.graph import UnsupportedModelError

Q = "qonnx.custom_op.general"
MODES = ["ROUND", "FLOOR", "CEIL", "UP", "DOWN", "HALF_UP", "HALF_DOWN"]


# ---------------------------------------------------------------- oracle rounding (independent)
def rnd(mode, u):
    """QONNX's rounding functions on an exact Fraction."""
    if mode == "ROUND":
        return round(u)                        # Python rounds a Fraction half to even
    if mode == "FLOOR":
        return math.floor(u)
    if mode == "CEIL":
        return math.ceil(u)
    if mode == "UP":
        return int(math.copysign(math.ceil(abs(u)), u)) if u else 0
    if mode == "DOWN":
        return math.trunc(u)
    if mode == "HALF_UP":
        return int(math.copysign(math.floor(abs(u) + Fr(1, 2)), u)) if u else 0
    if mode == "HALF_DOWN":
        return int(math.copysign(math.ceil(abs(u) - Fr(1, 2)), u)) if u else 0
    raise ValueError(mode)


NP_ROUND = {"ROUND": np.round, "FLOOR": np.floor, "CEIL": np.ceil, "UP": lambda v: np.sign(v) * np.ceil(np.abs(v)),
            "DOWN": np.fix, "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + 0.5),
            "HALF_DOWN": lambda v: np.sign(v) * np.ceil(np.abs(v) - 0.5)}


def qrange(bits, signed, narrow):
    if signed:
        return -(2 ** (bits - 1)) + narrow, 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1 - narrow


def quant_np(v, s, z, bits, signed=1, narrow=0, mode="ROUND"):
    """QONNX Quant in float64 numpy (exact for the dyadic values used with it): (codes, values)."""
    lo, hi = qrange(bits, signed, narrow)
    q = NP_ROUND[mode](np.clip(v / s + z, lo, hi))
    return q, (q - z) * s


def quant_f32(x, s, z, bits, signed=1, narrow=0, mode="ROUND"):
    """QONNX Quant of a float32 tensor as QONNX executes it (float32 numpy)."""
    lo, hi = qrange(bits, signed, narrow)
    y = (np.asarray(x, np.float32) / np.float32(s)).astype(np.float32) + np.float32(z)
    return NP_ROUND[mode](np.clip(y.astype(np.float32), lo, hi)).astype(np.int64)


def quant_exact(v, s, z, bits, signed=1, narrow=0, mode="ROUND"):
    """QONNX Quant on exact Fractions (object array) -> int codes."""
    lo, hi = qrange(bits, signed, narrow)
    sf = Fr(float(np.float32(s)))
    return np.vectorize(lambda t: min(max(rnd(mode, t / sf + z), lo), hi), otypes=[object])(v).astype(np.int64)


# ---------------------------------------------------------------- model builder
class Builder:
    def __init__(self):
        self.nodes, self.inits, self.k = [], [], 0

    def c(self, arr, base="c"):
        self.k += 1
        name = f"{base}{self.k}"
        self.inits.append(nh.from_array(np.asarray(arr), name))
        return name

    def quant(self, x, s, z, bits, signed=1, narrow=0, mode="ROUND", name=None):
        self.k += 1
        y = name or f"q{self.k}"
        self.nodes.append(helper.make_node("Quant", [x, self.c(np.asarray(s, np.float32), "s"),
                                                     self.c(np.asarray(z, np.float32), "z"),
                                                     self.c(np.float32(bits), "b")], [y], domain=Q, name=y,
                                           signed=signed, narrow=narrow, rounding_mode=mode))
        return y

    def op(self, op, ins, domain="", **attrs):
        self.k += 1
        y = f"{op.lower()}{self.k}"
        self.nodes.append(helper.make_node(op, ins, [y], name=y, domain=domain, **attrs))
        return y

    def model(self, inputs, outputs, opset=13):
        g = helper.make_graph(self.nodes, "qonnx_test",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["?"]) for n in outputs],
                              self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(Q, 1)])
        onnx.checker.check_model(m)
        return m


def load_rt(m, tmp_path):
    p = tmp_path / "q.onnx"
    onnx.save(m, p)
    m2 = onnx.load(p)
    onnx.checker.check_model(m2)
    return pyqinfer.load(str(p))


# ---------------------------------------------------------------- MLP, all rounding modes (float64 oracle)
def mlp_model(W1, W2, b1, sw1, zy, bits, signed, narrow, mode):
    b = Builder()
    xq = b.quant("x", 2 ** -2, 0, 8)
    w1 = b.quant(b.c(W1, "W"), sw1, 0, 4, narrow=1)
    h = b.op("Add", [b.op("MatMul", [xq, w1]), b.c(b1, "bias")])
    hr = b.op("Relu", [h])
    hq = b.quant(hr, 2 ** -1, zy, bits, signed=signed, narrow=narrow, mode=mode, name="hq")
    w2 = b.quant(b.c(W2, "W"), 2 ** -5, 0, 8, narrow=1)
    out = b.op("MatMul", [hq, w2])
    return b.model([("x", ["N", W1.shape[0]])], ["hq", out]), out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("signed,narrow,bits", [(0, 0, 4), (1, 1, 3), (1, 0, 8), (0, 1, 2)])
def test_mlp_rounding_modes_float64_oracle(mode, signed, narrow, bits, tmp_path):
    rng = np.random.default_rng(zlib.crc32(repr((mode, signed, narrow, bits)).encode()))
    K, H, N = 16, 12, 5
    W1 = rng.normal(size=(K, H)).astype(np.float32)
    W2 = rng.normal(size=(H, N)).astype(np.float32)
    b1 = (rng.integers(-64, 64, H) * 2.0 ** -5).astype(np.float32)   # dyadic: exact ties happen
    sw1 = (2.0 ** rng.integers(-3, -1, (1, H))).astype(np.float32)   # per-column power-of-two scales
    zy = 1 if not signed else -1
    mm, out = mlp_model(W1, W2, b1, sw1, zy, bits, signed, narrow, mode)
    m = load_rt(mm, tmp_path)
    x = (rng.normal(size=(33, K)) * 2).astype(np.float32)
    got = m.run({"x": x})
    _, xv = quant_np(x.astype(np.float64), 2 ** -2, 0, 8)
    _, w1v = quant_np(W1.astype(np.float64), sw1.astype(np.float64), 0, 4, narrow=1)
    _, w2v = quant_np(W2.astype(np.float64), 2 ** -5, 0, 8, narrow=1)
    pre = np.maximum(xv @ w1v + b1, 0)
    hcodes, hv = quant_np(pre, 2 ** -1, zy, bits, signed, narrow, mode)
    # the float64 oracle is exact here: every product and sum is a short dyadic
    u = pre / 2 ** -1 + zy
    lo, hi = qrange(bits, signed, narrow)
    ties = np.sum((u % 1 == 0.5) & (u > lo) & (u < hi))
    np.testing.assert_array_equal(got["hq"], hv.astype(np.float32))
    np.testing.assert_allclose(got[out], hv @ w2v, rtol=1e-6, atol=1e-6)
    assert ties > 0 or mode in ("FLOOR", "CEIL") or bits <= 3   # the data does exercise the tie rule


# ---------------------------------------------------------------- conv + BN + mixed-sign Mul (exact oracle)
def conv_exact_int(xq, wq, pads, strides, group):
    n, C, H, W = xq.shape
    OC, Cg, KH, KW = wq.shape
    xp = np.zeros((n, C, H + pads[0] + pads[2], W + pads[1] + pads[3]), np.int64)
    xp[:, :, pads[0]:pads[0] + H, pads[1]:pads[1] + W] = xq
    OH = (xp.shape[2] - KH) // strides[0] + 1
    OW = (xp.shape[3] - KW) // strides[1] + 1
    out = np.zeros((n, OC, OH, OW), np.int64)
    opg = OC // group
    for oc in range(OC):
        g = oc // opg
        for i in range(OH):
            for j in range(OW):
                patch = xp[:, g * Cg:(g + 1) * Cg, i * strides[0]:i * strides[0] + KH, j * strides[1]:j * strides[1] + KW]
                out[:, oc, i, j] = (patch * wq[oc]).sum(axis=(1, 2, 3))
    return out


@pytest.mark.parametrize("group", [1, 3])
def test_conv_bn_mul_relu_quant_pool_gemm_exact(group, tmp_path):
    """Arbitrary float32 scales, zero points, per-channel weights, BN, a per-channel Mul with
    negative entries (decreasing channels), HALF_UP rounding; then MaxPool, Flatten, Gemm(transB)."""
    rng = np.random.default_rng(41 + group)
    C, OC, H, W = 3, 6, 6, 5
    sx, zx = np.float32(0.0371), 5
    Wc = rng.normal(size=(OC, C // group, 3, 3)).astype(np.float32)
    sw = (rng.uniform(0.05, 0.2, (OC, 1, 1, 1))).astype(np.float32)
    bc = rng.normal(size=OC).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2, OC).astype(np.float32), rng.normal(size=OC).astype(np.float32)
    mean, var = rng.normal(size=OC).astype(np.float32), rng.uniform(0.5, 2, OC).astype(np.float32)
    mul = rng.uniform(0.5, 1.5, (1, OC, 1, 1)).astype(np.float32) * np.array([1, -1, 1, 1, -1, 1],
                                                                                 np.float32).reshape(1, OC, 1, 1)
    sy, zy, by = np.float32(0.173), 2, 3
    Wg = rng.normal(size=(4, OC * 2 * 2)).astype(np.float32)
    swg = rng.uniform(0.02, 0.05, (4, 1)).astype(np.float32)
    bg = rng.normal(size=4).astype(np.float32)
    so, zo = np.float32(0.219), 3
    b = Builder()
    xq = b.quant("x", sx, zx, 8, signed=0, name="xq")
    wq = b.quant(b.c(Wc, "W"), sw, 0, 4, narrow=1)
    cv = b.op("Conv", [xq, wq, b.c(bc, "bias")], pads=[1, 1, 1, 1], kernel_shape=[3, 3], group=group)
    bn = b.op("BatchNormalization", [cv] + [b.c(v, "bn") for v in (gamma, beta, mean, var)], epsilon=1e-3)
    mu = b.op("Mul", [bn, b.c(mul, "mul")])
    r = b.op("Relu", [mu])
    yq = b.quant(r, sy, zy, by, signed=0, mode="HALF_UP", name="yq")
    mp = b.op("MaxPool", [yq], kernel_shape=[3, 3], strides=[3, 2], pads=[0, 0, 0, 1])
    fl = b.op("Flatten", [mp])
    gw = b.quant(b.c(Wg, "W"), swg, 0, 8, narrow=1)
    gm = b.op("Gemm", [fl, gw, b.c(bg, "bias")], transB=1)
    oq = b.quant(gm, so, zo, 8, signed=1, name="oq")
    m = load_rt(b.model([("x", ["N", C, H, W])], [yq, oq]), tmp_path)
    x = (rng.normal(size=(2, C, H, W)) * 2).astype(np.float32)
    got = m.run({"x": x})
    # oracle
    xc = quant_f32(x, sx, zx, 8, signed=0)
    wcodes = quant_f32(Wc, sw, 0, 4, narrow=1)
    acc = conv_exact_int(xc - zx, wcodes, [1, 1, 1, 1], [1, 1], group)
    F = np.vectorize(lambda v: Fr(float(v)), otypes=[object])
    a = (gamma / np.sqrt((var + np.float32(1e-3)).astype(np.float32)).astype(np.float32)).astype(np.float32)
    cb = (beta - (mean * a).astype(np.float32)).astype(np.float32)
    real = acc.astype(object) * F(sx) * F(sw.reshape(1, OC, 1, 1)) + F(bc.reshape(1, OC, 1, 1))
    real = real * F(a.reshape(1, OC, 1, 1)) + F(cb.reshape(1, OC, 1, 1))
    real = real * F(mul)
    real = np.vectorize(lambda t: max(t, Fr(0)), otypes=[object])(real)
    ycodes = quant_exact(real, sy, zy, by, signed=0, mode="HALF_UP")
    np.testing.assert_array_equal(got["yq"], ((ycodes - zy) * np.float64(sy)).astype(np.float32))
    assert len(np.unique(ycodes)) > 3
    # max pool (ceil of windows with the padding), flatten, gemm, quant
    yp = np.full((2, OC, H, W + 1), -10 ** 9, np.int64)
    yp[:, :, :, :W] = ycodes
    pooled = np.stack([[[[yp[n, c, i * 3:i * 3 + 3, j * 2:j * 2 + 3].max() for j in range(2)] for i in range(2)]
                        for c in range(OC)] for n in range(2)])
    flat = (pooled.reshape(2, -1) - zy)
    gcodes = quant_f32(Wg, swg, 0, 8, narrow=1)
    gacc = flat @ gcodes.T
    greal = gacc.astype(object) * F(sy) * F(swg.reshape(1, 4)) + F(bg.reshape(1, 4))
    ocodes = quant_exact(greal, so, zo, 8)
    np.testing.assert_array_equal(got["oq"], ((ocodes - zo) * np.float64(so)).astype(np.float32))


# ---------------------------------------------------------------- the staircase itself (property)
@pytest.mark.parametrize("seed", range(12))
def test_staircase_thresholds_equal_direct_evaluation(seed):
    """Integer thresholds of random monotone chains equal mode(chain(x)/s + z) for every x in a range."""
    rng = np.random.default_rng(seed)
    C = 3
    rf = lambda lo, hi: Fr(int(rng.integers(lo, hi)), int(rng.integers(1, 17)))  # noqa: E731
    A = [rf(-40, 40) for _ in range(C)]
    B = [rf(-200, 200) for _ in range(C)]
    chain = []
    for _ in range(rng.integers(0, 4)):
        if rng.random() < 0.5:
            chain.append(("affine", [rf(-5, 6) for _ in range(C)], [rf(-50, 50) for _ in range(C)]))
        else:
            lo = rf(-100, 0) if rng.random() < 0.7 else None
            hi = rf(0, 100) if rng.random() < 0.5 else None
            chain.append(("clip", lo, hi))
    av = AView("x", A, B, chain, 1, C)
    mode = MODES[seed % len(MODES)]
    signed, narrow, bits = int(rng.integers(0, 2)), int(rng.integers(0, 2)), int(rng.integers(2, 6))
    lo, hi = int_range(signed, narrow, bits)
    s, z = rf(1, 40), int(rng.integers(-2, 3)) if signed else int(rng.integers(0, 3))

    def conds(c):
        out = []
        for k in range(lo + 1, hi + 1):
            rel, beta = level_condition(mode, k)
            out.append((rel, (beta - z) * s))
        return out
    T, sign = av.thresholds(conds)
    xs = np.arange(-400, 401)
    for c in range(C):
        got = lo + (sign[c] * xs[:, None] >= T[c][None, :]).sum(axis=1)
        want = [min(max(rnd(mode, av.evaluate(int(v), c) / s + z), lo), hi) for v in xs]
        assert got.tolist() == want, (c, mode)


# ---------------------------------------------------------------- Quant -> Relu -> Quant, Trunc, MultiThreshold
def test_requant_chain_on_codes_and_trunc(tmp_path):
    rng = np.random.default_rng(5)
    b = Builder()
    xq = b.quant("x", 0.05, 3, 8, name="xq")                       # int8 codes, zp 3
    r = b.op("Relu", [b.op("Reshape", [xq, b.c(np.array([-1, 12], np.int64), "shape")])])
    yq = b.quant(r, 0.13, 0, 4, signed=0, mode="ROUND", name="yq")    # a table over the 256 codes
    # Trunc v1: 8 -> 5 bits (FLOOR) of the int8 input codes (zero point 3 is not a multiple of 8: use zp 0)
    xq0 = b.quant("x", 0.05, 0, 8, name="xq0")
    t1 = b.op("Trunc", [xq0, b.c(np.float32(0.05)), b.c(np.float32(0)), b.c(np.float32(8)), b.c(np.float32(5))],
              domain=Q, rounding_mode="FLOOR")
    t2 = b.op("Trunc", [xq0, b.c(np.float32(0.05)), b.c(np.float32(0)), b.c(np.float32(8)), b.c(np.float32(0.2)),
                        b.c(np.float32(0)), b.c(np.float32(6))], domain=Q, rounding_mode="ROUND")
    m = load_rt(b.model([("x", [4, 3, 4])], [yq, t1, t2]), tmp_path)
    x = (rng.normal(size=(4, 3, 4)) * 4).astype(np.float32)
    x.reshape(-1)[:4] = [0.325, -0.325, 6.5, 100.0]
    got = m.run({"x": x})
    xc = quant_f32(x, 0.05, 3, 8)
    real = np.maximum((xc - 3).astype(object) * Fr(float(np.float32(0.05))), 0).reshape(-1, 12)
    yc = quant_exact(real, 0.13, 0, 4, signed=0)
    np.testing.assert_array_equal(got["yq"], (yc * np.float64(np.float32(0.13))).astype(np.float32))
    x0 = quant_f32(x, 0.05, 0, 8)
    # QONNX trunc: y = clamp(q / 2^k, min, max), then rounding; value (y - zp / 2^k) * out_scale
    t1c = np.floor(np.clip(x0 / 8.0, -16, 15))
    np.testing.assert_array_equal(got[t1], (t1c * np.float64(np.float32(0.4))).astype(np.float32))
    t2c = np.round(np.clip(x0 / 4.0, -32, 31))
    np.testing.assert_array_equal(got[t2], (t2c * np.float64(np.float32(0.2))).astype(np.float32))


def test_multithreshold_finn_style_and_on_float(tmp_path):
    """Conv -> MultiThreshold on the real conv output (thresholds pulled back to the accumulator),
    and MultiThreshold on a float input."""
    rng = np.random.default_rng(9)
    C, OC = 2, 3
    Wc = rng.normal(size=(OC, C, 2, 2)).astype(np.float32)
    T = np.sort(rng.normal(size=(OC, 7)) * 2, axis=1).astype(np.float32)
    T[0, 0] = -np.inf
    b = Builder()
    xq = b.quant("x", 2 ** -4, 0, 8)
    wq = b.quant(b.c(Wc, "W"), 2 ** -4, 0, 8)
    cv = b.op("Conv", [xq, wq], kernel_shape=[2, 2])
    mt = b.op("MultiThreshold", [cv, b.c(T, "T")], domain=Q, out_scale=0.5, out_bias=-1.0)
    Tf = np.sort(rng.normal(size=(1, 5)), axis=1).astype(np.float32)
    mt2 = b.op("MultiThreshold", ["x", b.c(Tf, "T")], domain=Q)
    m = load_rt(b.model([("x", [2, C, 4, 4])], [mt, mt2]), tmp_path)
    x = rng.normal(size=(2, C, 4, 4)).astype(np.float32)
    got = m.run({"x": x})
    xc = quant_f32(x, 2 ** -4, 0, 8)
    wc = quant_f32(Wc, 2 ** -4, 0, 8)
    real = conv_exact_int(xc, wc, [0, 0, 0, 0], [1, 1], 1) * 2.0 ** -8      # exact in float64
    cnt = (real[..., None] >= T[None, :, None, None, :].astype(np.float64).transpose(0, 1, 2, 3, 4)
           .reshape(1, OC, 1, 1, 7)).sum(-1)
    np.testing.assert_array_equal(got[mt], (0.5 * cnt - 1).astype(np.float32))
    cnt2 = (x[..., None] >= Tf.reshape(-1)).sum(-1)
    np.testing.assert_array_equal(got[mt2], cnt2.astype(np.float32))


def test_bipolar_mlp(tmp_path):
    rng = np.random.default_rng(21)
    K, N = 10, 4
    W = rng.normal(size=(K, N)).astype(np.float32)
    b = Builder()
    xb = b.op("BipolarQuant", ["x", b.c(np.float32(0.5))], domain=Q)
    wb = b.op("BipolarQuant", [b.c(W, "W"), b.c(np.float32(0.25))], domain=Q)
    h = b.op("MatMul", [xb, wb])
    hb = b.op("BipolarQuant", [b.op("Add", [h, b.c(np.float32(0.125))]), b.c(np.float32(2.0))], domain=Q)
    m = load_rt(b.model([("x", ["N", K])], [hb]), tmp_path)
    x = rng.normal(size=(9, K)).astype(np.float32)
    x[0, :3] = 0.0
    got = m.run({"x": x})[hb]
    xs = np.where(x >= 0, 1, -1) * 0.5
    ws = np.where(W >= 0, 1, -1) * 0.25
    want = np.where(xs @ ws + 0.125 >= 0, 1, -1) * 2.0
    np.testing.assert_array_equal(got, want.astype(np.float32))


# ---------------------------------------------------------------- errors
def _err_model(mutate):
    b = Builder()
    xq = b.quant("x", 0.1, 0, 8, name="xq")
    w = b.quant(b.c(np.ones((4, 3), np.float32), "W"), 0.1, 0, 8, name="wq")
    out = b.op("MatMul", [xq, w])
    yq = b.quant(out, 0.2, 0, 4, name="yq")
    mutate(b)
    return b.model([("x", ["N", 4])], [yq])


def _quant_node(b, name):
    return [n for n in b.nodes if n.name == name][0]


def _set(name, attr=None, value=None, input_idx=None, arr=None, op_type=None):
    def f(b):
        n = _quant_node(b, name)
        if attr is not None:
            keep = [a for a in n.attribute if a.name != attr]
            del n.attribute[:]
            n.attribute.extend(keep + [helper.make_attribute(attr, value)])
        if input_idx is not None:
            if arr is None:
                n.input[input_idx] = "x"                     # a non-constant
            else:
                n.input[input_idx] = b.c(arr, "bad")
        if op_type is not None:
            n.op_type = op_type
    return f


ERRORS = [
    (_set("yq", "rounding_mode", "STOCHASTIC"), "'yq'.*rounding_mode 'STOCHASTIC'"),
    (_set("yq", input_idx=3, arr=np.float32(9)), "'yq'.*bit width 9 is outside"),
    (_set("yq", input_idx=2, arr=np.float32(0.5)), "'yq'.*zero point must be an integer"),
    (_set("yq", input_idx=1), "'yq'.*the scale .* must be a constant"),
    (_set("yq", input_idx=1, arr=np.full((1, 3), 0.2, np.float32)), "'yq'.*per-channel quantization of an activation"),
    (_set("xq", input_idx=1, arr=np.float32(-0.1)), "'xq'.*scale must be finite float32 values > 0"),
    (_set("xq", input_idx=2, arr=np.float32(300)), "'xq'.*does not fit the int8 codes"),
    (_set("wq", input_idx=3, arr=np.float32(12)), r"12-bit weights are not supported"),
    (_set("yq", op_type="FloatQuant"), "'yq'.*FloatQuant.*not supported"),
]


@pytest.mark.parametrize("mutate,msg", ERRORS, ids=[e[1][:40] for e in ERRORS])
def test_errors_name_the_node(mutate, msg):
    with pytest.raises(UnsupportedModelError, match=msg):
        pyqinfer.load(_err_model(mutate))


def test_trunc_errors():
    b = Builder()
    xq = b.quant("x", 0.05, 0, 8, name="xq")
    t = b.op("Trunc", [xq, b.c(np.float32(0.05)), b.c(np.float32(0)), b.c(np.float32(8)), b.c(np.float32(0.3)),
                       b.c(np.float32(0)), b.c(np.float32(4))], domain=Q)
    with pytest.raises(UnsupportedModelError, match=rf"'{t}'.*exact power of two"):
        pyqinfer.load(b.model([("x", [2, 3])], [t]))
    b = Builder()
    xq = b.quant("x", 0.05, 0, 8, name="xq")
    t = b.op("Trunc", [xq, b.c(np.float32(0.1)), b.c(np.float32(0)), b.c(np.float32(8)), b.c(np.float32(4))],
             domain=Q)
    with pytest.raises(UnsupportedModelError, match=rf"'{t}'.*must equal those of the input"):
        pyqinfer.load(b.model([("x", [2, 3])], [t]))


# ---------------------------------------------------------------- BatchNormalization folding (model-format 12)
def _bn_params(rng, OC, neg=False):
    g = rng.uniform(0.5, 2, OC).astype(np.float32)
    if neg:
        g[1] = -g[1]
    return [g, rng.normal(size=OC).astype(np.float32), rng.normal(size=OC).astype(np.float32),
            rng.uniform(0.5, 2, OC).astype(np.float32)]


def _bn_fold_oracle(w_scale, bias, xs, bn, eps, OC):
    g, beta, mean, var = bn
    f = np.float32
    a = (g / np.sqrt((var + f(eps)).astype(f)).astype(f)).astype(f)
    c = (beta - (mean * a).astype(f)).astype(f)
    ws2 = (np.broadcast_to(w_scale, (OC,)) * a).astype(f)
    adj = [round(Fr(float(cv)) / (Fr(float(f(xs))) * Fr(float(wv)))) for cv, wv in zip(c, ws2)]
    return ws2, (bias.astype(np.int64) + np.array(adj, np.int64)).astype(np.int32)


def test_qdq_conv_batchnorm_folded_into_requantization(tmp_path):
    from pyqinfer import reference as ref
    rng = np.random.default_rng(31)
    C, OC = 3, 4
    w = rng.integers(-127, 128, (OC, C, 3, 3)).astype(np.int8)
    ws = rng.uniform(0.002, 0.01, OC).astype(np.float32)
    xs, ys = np.float32(0.02), np.float32(0.05)
    bias = rng.integers(-2000, 2000, OC).astype(np.int32)
    bn = _bn_params(rng, OC)
    inits = [nh.from_array(v, k) for k, v in (("xs", xs), ("xz", np.uint8(128)), ("w", w), ("ws", ws),
                                               ("wz", np.zeros(OC, np.int8)), ("b", bias),
                                               ("bs", (xs * ws).astype(np.float32)), ("bz", np.zeros(OC, np.int32)),
                                               ("ys", ys), ("yz", np.uint8(100)))]
    inits += [nh.from_array(v, k) for k, v in zip(("g", "be", "mu", "va"), bn)]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="qx"),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"], name="dqx"),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], name="dqw", axis=0),
             helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bf"], name="dqb", axis=0),
             helper.make_node("Conv", ["xf", "wf", "bf"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "va"], ["n"], name="bn", epsilon=1e-4),
             helper.make_node("QuantizeLinear", ["n", "ys", "yz"], ["yq"], name="qy"),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"], name="dqy")]
    g = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", OC, 5, 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    mod = load_rt(m, tmp_path)
    assert any("folded" in " ".join(r["fused"] or []) for r in mod.layers())
    x = rng.normal(size=(2, C, 5, 5)).astype(np.float32)
    ws2, b2 = _bn_fold_oracle(ws, bias, xs, bn, 1e-4, OC)
    xq = ref.quantize_linear(x, xs, np.uint8(128))
    want = ref.qlinear_conv(xq, xs, np.uint8(128), w, ws2, np.zeros(OC, np.int8), ys, np.uint8(100), b2,
                            pads=[1, 1, 1, 1])
    want = ref.dequantize_linear(want, ys, np.uint8(100))
    np.testing.assert_array_equal(mod(x), want)
    # close to the float graph (BN in float): within one output step
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    assert np.max(np.abs(sess.run(None, {"x": x})[0] - want)) <= ys * 1.0001
    # a negative multiplier is rejected, naming the BatchNormalization
    m.graph.initializer[-4].CopyFrom(nh.from_array(_bn_params(rng, OC, neg=True)[0], "g"))
    with pytest.raises(UnsupportedModelError, match=r"'bn' \(BatchNormalization\).*> 0"):
        pyqinfer.load(m)


def test_float_conv_batchnorm_folded(tmp_path):
    import onnxruntime as ort
    rng = np.random.default_rng(37)
    C, OC = 2, 3
    W = rng.normal(size=(OC, C, 3, 3)).astype(np.float32)
    bc = rng.normal(size=OC).astype(np.float32)
    bn = _bn_params(rng, OC)
    inits = [nh.from_array(W, "W"), nh.from_array(bc, "bc")] + \
        [nh.from_array(v, k) for k, v in zip(("g", "be", "mu", "va"), bn)]
    nodes = [helper.make_node("Conv", ["x", "W", "bc"], ["c"], name="conv"),
             helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "va"], ["y"], name="bn")]
    g = helper.make_graph(nodes, "fbn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, OC, 4, 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    mod = load_rt(m, tmp_path)
    assert [r["kind"] for r in mod.layers()] == ["FloatOp:Conv"]
    x = rng.normal(size=(1, C, 6, 6)).astype(np.float32)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(mod(x), sess.run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_float_op_between_layer_and_quantizer_is_rejected():
    """MaxPool (or a residual Add) on the unquantized conv output before a Quant cannot be exact."""
    b = Builder()
    xq = b.quant("x", 2 ** -4, 0, 8)
    wq = b.quant(b.c(np.ones((2, 2, 3, 3), np.float32), "W"), 2 ** -4, 0, 8)
    cv = b.op("Conv", [xq, wq], kernel_shape=[3, 3])
    mp = b.op("MaxPool", [cv], kernel_shape=[2, 2])
    y = b.quant(mp, 0.1, 0, 4, name="yq")
    with pytest.raises(UnsupportedModelError, match=rf"'{mp}' \(MaxPool\).*reaches Quant 'yq'"):
        pyqinfer.load(b.model([("x", [1, 2, 6, 6])], [y]))
    # a float tail to the graph output is fine (logits)
    b = Builder()
    xq = b.quant("x", 2 ** -4, 0, 8)
    wq = b.quant(b.c(np.ones((2, 2, 3, 3), np.float32), "W"), 2 ** -4, 0, 8)
    cv = b.op("Conv", [xq, wq], kernel_shape=[3, 3])
    mp = b.op("MaxPool", [cv], kernel_shape=[2, 2], strides=[2, 2])
    m = pyqinfer.load(b.model([("x", [1, 2, 6, 6])], [mp]))
    x = np.random.default_rng(0).normal(size=(1, 2, 6, 6)).astype(np.float32)
    xv = quant_np(x.astype(np.float64), 2 ** -4, 0, 8)[1]
    conv = np.array([[[[xv[0, :, i:i + 3, j:j + 3].sum() for j in range(4)] for i in range(4)] for _ in range(2)]])
    want = conv.reshape(1, 2, 2, 2, 2, 2).max(axis=(3, 5))
    np.testing.assert_allclose(m(x), want, rtol=1e-6)
    assert any(r["kind"] == "AffineChain" and not r["exact"] for r in m.layers())


def test_residual_add_of_quantized_tensors_is_qonnx_float32(tmp_path):
    """Add of two Quant outputs, then Quant: QONNX's float32 execution, reproduced bit for bit;
    the legacy domain onnx.brevitas is read as QONNX."""
    rng = np.random.default_rng(3)
    b = Builder()
    a = b.quant("x", 0.0371, 2, 8, signed=0)
    c = b.quant("x2", 0.0213, -3, 6)
    y = b.quant(b.op("Add", [a, c]), 0.047, 1, 5, signed=0, mode="HALF_DOWN", name="y")
    for nd in b.nodes:
        if nd.domain == Q:
            nd.domain = "onnx.brevitas"
    g = helper.make_graph(b.nodes, "res", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3, 7])
                                            for n in ("x", "x2")],
                          [helper.make_tensor_value_info(y, TensorProto.FLOAT, [3, 7])], b.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11), helper.make_opsetid("onnx.brevitas", 1)])
    mod = load_rt(m, tmp_path)
    x, x2 = (rng.normal(size=(2, 3, 7)) * 2).astype(np.float32)
    got = mod.run({"x": x, "x2": x2})[y]
    f = np.float32
    av = ((quant_f32(x, 0.0371, 2, 8, 0).astype(f) - f(2)) * f(0.0371)).astype(f)
    cv = ((quant_f32(x2, 0.0213, -3, 6).astype(f) - f(-3)) * f(0.0213)).astype(f)
    yc = quant_f32((av + cv).astype(f), 0.047, 1, 5, 0, mode="HALF_DOWN")
    np.testing.assert_array_equal(got, ((yc - 1) * np.float64(f(0.047))).astype(f))


# ---------------------------------------------------------------- optional oracle: QONNX's own executor
@pytest.mark.parametrize("mode", MODES + ["HALF_EVEN"])
def test_against_qonnx_execute_onnx(mode):
    """When the qonnx package is importable: its execute_onnx (float32, standard ops through
    ONNX Runtime) gives the same codes on a model whose float32 arithmetic is exact (dyadic)."""
    onnx_exec = pytest.importorskip("qonnx.core.onnx_exec")
    from qonnx.core.modelwrapper import ModelWrapper
    rng = np.random.default_rng(99)
    K, H, N = 16, 12, 5
    W1, W2 = rng.normal(size=(K, H)).astype(np.float32), rng.normal(size=(H, N)).astype(np.float32)
    b1 = (rng.integers(-64, 64, H) * 2.0 ** -5).astype(np.float32)
    sw1 = (2.0 ** rng.integers(-3, -1, (1, H))).astype(np.float32)
    m, out = mlp_model(W1, W2, b1, sw1, 1, 4, 0, 0, mode)
    x = (rng.normal(size=(64, K)) * 2).astype(np.float32)
    from qonnx.transformation.infer_shapes import InferShapes
    mq = onnx.ModelProto()
    mq.CopyFrom(m)
    del mq.graph.output[:]
    mq.graph.output.extend([helper.make_tensor_value_info("hq", TensorProto.FLOAT, [64, H]),
                            helper.make_tensor_value_info(out, TensorProto.FLOAT, [64, N])])
    mw = ModelWrapper(mq)
    mw.set_tensor_shape("x", [64, K])
    mw = mw.transform(InferShapes())
    ctx = onnx_exec.execute_onnx(mw, {"x": x})
    got = pyqinfer.load(m).run({"x": x})
    np.testing.assert_array_equal(got["hq"], ctx["hq"])
    np.testing.assert_allclose(got[out], ctx[out], rtol=1e-6, atol=1e-6)


def test_quant_weight_through_transpose_and_reshape():
    """torch Linear as exported: Quant(W [out, in], per-row scale) -> Transpose -> MatMul; and a reshape."""
    rng = np.random.default_rng(4)
    K, N = 6, 4
    W = rng.normal(size=(N, K)).astype(np.float32)
    sw = (2.0 ** rng.integers(-5, -3, (N, 1))).astype(np.float32)
    b = Builder()
    xq = b.quant("x", 2 ** -3, 0, 8)
    wt = b.op("Transpose", [b.quant(b.c(W, "W"), sw, 0, 6, narrow=1)], perm=[1, 0])
    y = b.quant(b.op("MatMul", [xq, wt]), 2 ** -2, 0, 8, name="y")
    W2 = rng.normal(size=(2, 12)).astype(np.float32)
    w2 = b.op("Reshape", [b.quant(b.c(W2, "W"), 2 ** -4, 0, 8), b.c(np.array([6, 4], np.int64), "shape")])
    y2 = b.op("MatMul", [xq, w2])
    m = pyqinfer.load(b.model([("x", [3, K])], [y, y2]))
    x = rng.normal(size=(3, K)).astype(np.float32)
    got = m.run({"x": x})
    xv = quant_np(x.astype(np.float64), 2 ** -3, 0, 8)[1]
    wv = quant_np(W.astype(np.float64), sw.astype(np.float64), 0, 6, narrow=1)[1]
    np.testing.assert_array_equal(got[y], quant_np(xv @ wv.T, 2 ** -2, 0, 8)[1].astype(np.float32))
    w2v = quant_np(W2.astype(np.float64), 2 ** -4, 0, 8)[1].reshape(6, 4)
    np.testing.assert_allclose(got[y2], xv @ w2v, rtol=1e-6)
