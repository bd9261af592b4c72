"""Low-bit convolution weights (docs/semantics.md 9.1, 9.2 and 10.5): int4/uint4
given as PackedInt4 or with bits=4, widths 1..8 (unsigned) / 2..8 (signed),
ternary and binary. The result equals pyqinfer.reference.qlinear_conv /
conv_integer on the unpacked weights bit for bit on every kernel path and
thread count, in every requant mode and through every operator path (1x1
direct, gathered blocks, grouped, depthwise); the width is checked at pack time
exactly as reference.check_lowbit checks it.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import pyqinfer.ops as ops
import pyqinfer.reference as R
from test_conv import check_everywhere

BASE_EXAMPLES = settings.default.max_examples

# (bits, container dtype) pairs allowed by section 9.1.
WIDTHS = ([(b, "uint8") for b in range(1, 9)] + [(b, "int8") for b in range(2, 9)]
          + [("ternary", "int8"), ("binary", "int8")])


def examples(n):
    return n if BASE_EXAMPLES < 1000 else BASE_EXAMPLES


def width_values(rng, shape, bits, dtype, style="random"):
    """Random values of the declared width (extremes only: qmin and qmax)."""
    qmin, qmax = R.lowbit_range(bits, dtype == "int8")
    if bits == "binary" or style == "extremes":
        v = rng.choice(np.array([qmin, qmax]), size=shape)
    else:
        v = rng.integers(qmin, qmax + 1, size=shape)
    return v.astype(dtype)


def width_zero_point(rng, bits, dtype, OC, per_channel):
    qmin, qmax = R.lowbit_range(bits, dtype == "int8")
    if per_channel:
        return rng.integers(qmin, qmax + 1, OC).astype(dtype)
    return getattr(np, dtype)(rng.integers(qmin, qmax + 1))


def ops_conv(c, w_arg, w_bits, quant):
    kw = dict(pads=c["pads"], strides=c["strides"], dilations=c["dilations"], group=c["group"], w_bits=w_bits)
    if not quant:
        return ops.conv_integer(c["x"], w_arg, c["zx"], c["zw"], **kw)
    return ops.qlinear_conv(c["x"], c["sx"], c["zx"], w_arg, c["sw"], c["zw"], c["sy"], c["zy"], c["bias"],
                            mode=c["mode"], clip=c["clip"], **kw)


def ref_conv(c, quant):
    w = R.check_lowbit(c["w"], c["bits"], "w")  # the declared width holds (section 9.1)
    if not quant:
        return R.conv_integer(c["x"], w, c["zx"], c["zw"], c["pads"], c["strides"], c["dilations"], c["group"])
    return R.qlinear_conv(c["x"], c["sx"], c["zx"], w, c["sw"], c["zw"], c["sy"], c["zy"], c["bias"],
                          pads=c["pads"], strides=c["strides"], dilations=c["dilations"], group=c["group"],
                          mode=c["mode"], clip=c["clip"])


def quant_params(rng, c, mode, per_channel, OC, K):
    bits, w_dt = c["bits"], c["w"].dtype.name
    qmin, qmax = R.lowbit_range(bits, w_dt == "int8")
    sx = np.float32(2.0 ** rng.integers(-8, -3))
    sw = (np.asarray(2.0 ** rng.integers(-6, -2, OC), np.float32) if per_channel
          else np.float32(2.0 ** rng.integers(-6, -2)))
    if mode != "pot":
        sx = np.float32(sx * rng.uniform(0.6, 1.4))
        sw = np.asarray(sw * rng.uniform(0.6, 1.4, np.shape(sw)), np.float32)
    spread = 128.0 * max(1, qmax - qmin) * np.sqrt(K) * float(sx) * float(np.max(sw))
    sy = np.float32(2.0 ** np.round(np.log2(spread / 60.0)))
    y_dt = rng.choice(["uint8", "int8"])
    zy = getattr(np, y_dt)(0 if y_dt == "int8" else 128)
    bias = rng.integers(-2**12, 2**12, OC).astype(np.int32) if rng.integers(2) else None
    return dict(sx=sx, sw=sw, sy=sy, zy=zy, bias=bias, mode=mode, clip=rng.choice([None, "relu"]))


@st.composite
def lowbit_cases(draw):
    bits, w_dt = draw(st.sampled_from(WIDTHS + [(4, "int8"), (4, "uint8")] * 3))
    how = draw(st.sampled_from(["packed_int4", "w_bits", "pack"])) if bits == 4 else \
        draw(st.sampled_from(["w_bits", "pack"]))
    k = draw(st.sampled_from([1, 1, 3, 3, 5]))
    stride, dil = draw(st.sampled_from([1, 1, 2])), draw(st.sampled_from([1, 1, 2]))
    kind = draw(st.sampled_from(["dense", "dense", "grouped", "depthwise"]))
    if kind == "dense":
        group, cg, ocg = 1, draw(st.sampled_from([1, 3, 16, 17, 33])), draw(st.sampled_from([1, 7, 16, 33, 65]))
    elif kind == "grouped":
        group, cg, ocg = draw(st.integers(2, 4)), draw(st.integers(1, 12)), draw(st.integers(1, 12))
    else:
        group, cg, ocg = draw(st.integers(2, 24)), 1, draw(st.sampled_from([1, 1, 2]))
    C, OC = group * cg, group * ocg
    pads = draw(st.one_of(st.just((0, 0, 0, 0)), st.tuples(*[st.integers(0, 2)] * 4)))
    ek = (k - 1) * dil + 1
    H = draw(st.integers(max(1, ek - pads[0] - pads[2]), max(1, ek - pads[0] - pads[2]) + 8))
    W = draw(st.integers(max(1, ek - pads[1] - pads[3]), max(1, ek - pads[1] - pads[3]) + 8))
    N = draw(st.sampled_from([1, 1, 2]))
    x_dt = draw(st.sampled_from(["uint8", "int8"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lo, hi = (0, 255) if x_dt == "uint8" else (-128, 127)
    x = rng.integers(lo, hi + 1, (N, C, H, W)).astype(x_dt)
    w = width_values(rng, (OC, cg, k, k), bits, w_dt, draw(st.sampled_from(["random", "random", "extremes"])))
    per_channel = draw(st.booleans())
    zw = width_zero_point(rng, bits, w_dt, OC, per_channel)
    c = dict(x=x, w=w, bits=bits, how=how, zx=getattr(np, x_dt)(rng.integers(lo, hi + 1)), zw=zw, pads=pads,
             strides=(stride, stride), dilations=(dil, dil), group=group)
    c.update(quant_params(rng, c, draw(st.sampled_from(R.MODES)), per_channel, OC, cg * k * k))
    return c


def _run(c, quant):
    """The op as a function of nothing, with w given as c["how"] says: a PackedInt4,
    an array with w_bits=, or PackedConvWeights from pack_conv_weights(bits=)."""
    if c["how"] == "pack":
        pw = ops.pack_conv_weights(c["w"], c["zw"], c["group"], bits=c["bits"])
        assert pw.bits == c["bits"]
        return lambda: ops_conv(c, pw, None, quant)
    if c["how"] == "packed_int4":
        packed = ops.pack_int4(c["w"])
        return lambda: ops_conv(c, packed, None, quant)
    return lambda: ops_conv(c, c["w"], c["bits"], quant)


@settings(max_examples=examples(120))
@given(lowbit_cases())
def test_lowbit_qlinear_conv_matches_reference(run_everywhere, c):
    check_everywhere(run_everywhere, _run(c, True), ref_conv(c, True))


@settings(max_examples=examples(60))
@given(lowbit_cases())
def test_lowbit_conv_integer_matches_reference(run_everywhere, c):
    check_everywhere(run_everywhere, _run(c, False), ref_conv(c, False))


# Every operator path (csrc/conv/conv.cpp) with int4/uint4 weights in each form.
LAYERS = [  # (N, C, H, W, OC, k, stride, pads, group)
    (1, 32, 13, 11, 40, 3, 1, (1, 1, 1, 1), 1),      # gathered blocks
    (1, 24, 15, 15, 33, 1, 1, (0, 0, 0, 0), 1),      # 1x1 direct GEMM
    (1, 24, 12, 12, 24, 3, 2, (1, 0, 1, 1), 24),     # depthwise kernel
    (1, 24, 9, 9, 16, 3, 1, (1, 1, 1, 1), 4),        # grouped
]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda l: "x".join(map(str, l[:6])) + f"s{l[6]}g{l[8]}")
@pytest.mark.parametrize("w_dt", ["int8", "uint8"], ids=["int4", "uint4"])
@pytest.mark.parametrize("mode", R.MODES)
def test_int4_layers_every_mode(run_everywhere, layer, w_dt, mode):
    N, C, H, W, OC, k, s, pads, g = layer
    rng = np.random.default_rng(list(layer[:7]) + [len(mode), len(w_dt)])
    x_dt = "int8" if mode in ("q31", "pot") else "uint8"
    lo, hi = (0, 255) if x_dt == "uint8" else (-128, 127)
    w = width_values(rng, (OC, C // g, k, k), 4, w_dt)
    c = dict(x=rng.integers(lo, hi + 1, (N, C, H, W)).astype(x_dt), w=w, bits=4,
             zx=getattr(np, x_dt)(rng.integers(lo, hi + 1)), zw=width_zero_point(rng, 4, w_dt, OC, True),
             pads=pads, strides=(s, s), dilations=(1, 1), group=g)
    c.update(quant_params(rng, c, mode, True, OC, (C // g) * k * k))
    for quant in (True, False):
        want = ref_conv(c, quant)
        for how in ("packed_int4", "w_bits", "pack"):
            c["how"] = how
            check_everywhere(run_everywhere, _run(c, quant), want)
        # The unpacked int8 weights with no declared width give the same bits.
        c8 = dict(c, bits=8)
        assert np.array_equal(ops_conv(c8, c["w"], None, quant), want)


def test_packed_int4_layout_is_onnx_order():
    """Element 2i in the low nibble of byte i over the flattened [OC, Cg, KH, KW] (odd count padded)."""
    w = np.array([-8, 7, -1, 3, 0, 5, -2, 1, 6], np.int8).reshape(1, 1, 3, 3)
    data = np.array([0x78, 0x3F, 0x50, 0x1E, 0x06], np.uint8)
    pw = ops.pack_conv_weights(ops.PackedInt4(data, w.shape, signed=True))
    x = np.zeros((1, 1, 3, 3), np.int8)
    for i in range(9):
        x.reshape(-1)[:] = 0
        x.reshape(-1)[i] = 1
        assert ops.conv_integer(x, pw)[0, 0, 0, 0] == w.reshape(-1)[i]
    assert pw.bits == 4 and pw.shape == w.shape and pw.dtype == np.int8


# --- bad input ---------------------------------------------------------------

@pytest.mark.parametrize("bits,dtype,bad", [
    (4, "int8", 8), (4, "int8", -9), (4, "uint8", 16), (2, "int8", -3), (3, "uint8", 8), (1, "uint8", 2),
    ("ternary", "int8", 2), ("ternary", "int8", -2), ("binary", "int8", 0), (7, "int8", -65)])
def test_out_of_width_weight_is_value_error(bits, dtype, bad):
    w = width_values(np.random.default_rng(0), (4, 3, 3, 3), bits, dtype)
    w[1, 2, 0, 1] = bad
    with pytest.raises(ValueError):
        R.check_lowbit(w, bits, "w")  # the reference rejects it too
    with pytest.raises(ValueError, match=r"\bw has"):
        ops.pack_conv_weights(w, bits=bits)
    x = np.zeros((1, 3, 5, 5), np.uint8)
    with pytest.raises(ValueError, match=r"\bw has"):
        ops.conv_integer(x, w, w_bits=bits)
    with pytest.raises(ValueError, match=r"\bw has"):
        ops.qlinear_conv(x, 1.0, 0, w, 1.0, None, 1.0, 0, w_bits=bits)


def test_out_of_width_zero_point_is_value_error():
    w = np.zeros((2, 1, 1, 1), np.int8)
    with pytest.raises(ValueError, match="w_zero_point"):
        ops.pack_conv_weights(w, np.int8(8), bits=4)
    with pytest.raises(ValueError, match="w_zero_point"):
        ops.pack_conv_weights(w, np.array([0, -2], np.int8), bits="ternary")
    with pytest.raises(ValueError, match="w_zero_point"):
        ops.pack_conv_weights(ops.pack_int4(w), np.array([7, -9], np.int8))


def test_wrong_packed_length_is_value_error():
    with pytest.raises(ValueError, match="bytes"):
        ops.PackedInt4(np.zeros(4, np.uint8), (2, 1, 3, 1), signed=True)  # needs 3
    with pytest.raises(ValueError, match="bytes"):
        ops.PackedInt4(np.zeros(2, np.uint8), (1, 1, 3, 3), signed=False)  # needs 5


def test_bad_width_arguments():
    w = np.zeros((2, 1, 3, 3), np.int8)
    packed = ops.pack_int4(w)
    with pytest.raises(ValueError, match="bits must be 4"):
        ops.pack_conv_weights(packed, bits=8)
    with pytest.raises(ValueError, match="bits must be 4"):
        ops.conv_integer(np.zeros((1, 1, 3, 3), np.uint8), packed, w_bits=2)
    with pytest.raises(ValueError, match="4-D"):
        ops.pack_conv_weights(ops.pack_int4(np.zeros((2, 9), np.int8)))
    with pytest.raises(ValueError, match="binary"):
        ops.pack_conv_weights(w, bits=1)  # signed 1-bit
    with pytest.raises(ValueError, match="int8 container"):
        ops.pack_conv_weights(w.astype(np.uint8), bits="ternary")
    with pytest.raises(ValueError, match="1..8"):
        ops.pack_conv_weights(w, bits=9)
    with pytest.raises(TypeError, match="bits"):
        ops.pack_conv_weights(w, bits=4.0)
    pw = ops.pack_conv_weights(w, bits=4)
    with pytest.raises(ValueError, match="w_bits=2 differs"):
        ops.conv_integer(np.zeros((1, 1, 3, 3), np.uint8), pw, w_bits=2)
    assert ops.conv_integer(np.zeros((1, 1, 3, 3), np.uint8), pw, w_bits=4).shape == (1, 2, 1, 1)
