"""MultiThreshold (docs/semantics.md §13): pyqinfer.ops.multi_threshold vs the reference, QONNX's
own formula, and the shift-code encoder it can replace."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyqinfer.quant as quant
from pyqinfer.ops import multi_threshold
from pyqinfer.reference import shiftcodes as scref
from pyqinfer.reference import threshold as ref


def qonnx_multithreshold(v, thresholds, out_scale=None, out_bias=None):
    """qonnx custom_op/general/multithreshold.py multithreshold() on NC_ data, as written there."""
    vm = np.expand_dims(np.moveaxis(v, 1, -1), -1)
    ret = np.moveaxis(np.count_nonzero(vm >= thresholds, axis=-1), -1, 1)
    return (1.0 if out_scale is None else out_scale) * ret + (0.0 if out_bias is None else out_bias)


XDTYPES = ["float32", "float64", "float16", "int8", "uint8", "int16", "int32", "uint32"]


@settings(max_examples=80)
@given(data=st.data())
def test_matches_reference_and_qonnx(data):
    ndim = data.draw(st.integers(1, 5))
    shape = tuple(data.draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim)))
    layout = data.draw(st.sampled_from(["NCHW", "NHWC"]))
    ax = ref.channel_axis(ndim, layout)
    C = shape[ax]
    rows = data.draw(st.sampled_from([1, C]))
    B = data.draw(st.integers(0, 6))
    seed = data.draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    xdt = data.draw(st.sampled_from(XDTYPES))
    if np.dtype(xdt).kind == "f":
        x = (rng.standard_normal(shape) * 4).astype(xdt)
    else:
        info = np.iinfo(xdt)
        x = rng.integers(max(info.min, -300), min(info.max, 300) + 1, shape).astype(xdt)
    T = np.round(rng.standard_normal((rows, B)) * 4 * 2) / 2            # ties with integers
    if B and data.draw(st.booleans()):
        T[0, 0] = np.inf if data.draw(st.booleans()) else -np.inf
    flat = x.reshape(-1)
    if B and flat.size:                                                  # exact equalities
        flat[0] = T[0, -1] if np.isfinite(T[0, -1]) else flat[0]
        x = flat.reshape(shape)
    kw = data.draw(st.sampled_from([{}, dict(out_scale=0.5, out_bias=-1.25),
                                    dict(out_scale=2, out_bias=-3, out_dtype="int16")]))
    got = multi_threshold(x, T, data_layout=layout, **kw)
    want = ref.multi_threshold(x, T, data_layout=layout, **kw)
    assert got.dtype == want.dtype and np.array_equal(got, want)
    # QONNX on NC data: the channel axis moved last, the rest flattened
    xm = np.moveaxis(x, ax, -1)
    q = qonnx_multithreshold(xm.reshape(-1, C).astype(np.float64), T, kw.get("out_scale"),
                             kw.get("out_bias"))
    assert np.array_equal(np.moveaxis(q.reshape(xm.shape), -1, ax), got.astype(np.float64))
    # lut form
    L = rng.integers(0, 100, (rows, B + 1)).astype(np.int8)
    assert np.array_equal(multi_threshold(x, T, data_layout=layout, lut=L),
                          ref.multi_threshold(x, T, data_layout=layout, lut=L))


def test_qonnx_channel_axis_rules_and_exact_compare():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)          # 3-D: channel = last (4)
    T = np.array([[5.0], [10.0], [15.0], [100.0]])
    y = multi_threshold(x, T)
    assert y.shape == x.shape and y[0, 1, :].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert y[1, 2, :].tolist() == [1.0, 1.0, 1.0, 0.0]
    x4 = np.zeros((1, 2, 2, 3))
    assert multi_threshold(x4, np.zeros((2, 1))).shape == x4.shape                       # NCHW: C = 2
    assert multi_threshold(x4, np.zeros((3, 1)), data_layout="NHWC").shape == x4.shape  # NHWC: C = 3
    with pytest.raises(ValueError, match="channels"):
        multi_threshold(x4, np.zeros((3, 1)))
    # exact: 2^24 + 1 (int32) vs threshold 2^24 + 1 (a float64), and float32 x vs float64 T
    xi = np.array([[2 ** 24 + 1, 2 ** 24]], dtype=np.int32)
    assert multi_threshold(xi, np.array([[2.0 ** 24 + 1]]), out_dtype="uint8").tolist() == [[1, 0]]
    xf = np.array([[np.float32(0.1)]])
    assert multi_threshold(xf, np.array([[0.1]]), out_dtype="uint8")[0, 0] == 1   # f32(0.1) > 0.1
    assert multi_threshold(np.array([[0.1]], dtype=np.float64), np.array([[np.float32(0.1)]]),
                           out_dtype="uint8")[0, 0] == 0
    # FINN: ReLU + unsigned Quant(s, b) == T[t] = s/2 + t*s (ties go up: x >= T)
    s, b = 0.25, 3
    T = np.array([[s / 2 + t * s for t in range(2 ** b - 1)]])
    xs = np.array([[0.0, 0.125, 0.124, 0.3, 1.0, 9.0]])
    assert multi_threshold(xs, T, out_dtype="uint8").tolist() == [[0, 1, 0, 1, 4, 7]]


def test_errors():
    with pytest.raises(ValueError, match="NaN"):
        multi_threshold(np.array([[np.nan]]), np.zeros((1, 1)))
    with pytest.raises(ValueError, match="NaN"):
        multi_threshold(np.zeros((1, 1)), np.array([[np.nan]]))
    with pytest.raises(ValueError, match="shape"):
        multi_threshold(np.zeros((1, 1)), np.zeros(3))
    with pytest.raises(ValueError, match="out_scale"):
        multi_threshold(np.zeros((1, 1)), np.zeros((1, 1)), out_scale=0.5, out_dtype="int8")
    with pytest.raises(ValueError, match="range"):
        multi_threshold(np.ones((1, 1)), np.zeros((1, 1)), out_bias=-2, out_dtype="uint8")
    with pytest.raises(TypeError, match="out_dtype"):
        multi_threshold(np.ones((1, 1)), np.zeros((1, 1)), out_dtype="float32")
    with pytest.raises(ValueError, match="lut"):
        multi_threshold(np.ones((1, 1)), np.zeros((1, 1)), lut=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="lut excludes"):
        multi_threshold(np.ones((1, 1)), np.zeros((1, 1)), lut=np.zeros((1, 2)), out_scale=2)
    with pytest.raises(ValueError, match="2\\^53"):
        multi_threshold(np.array([[2 ** 53 + 1]], dtype=np.int64), np.zeros((1, 1)))
    with pytest.raises(ValueError, match="2\\^53"):
        multi_threshold(np.zeros((1, 1)), np.array([[-(2 ** 53) - 1]], dtype=np.int64))
    assert multi_threshold(np.array([[2 ** 53]], dtype=np.uint64), np.array([[2.0 ** 53]]))[0, 0] == 1
    with pytest.raises(ValueError, match="data_layout"):
        multi_threshold(np.ones((1, 1)), np.zeros((1, 1)), data_layout="NC")
    with pytest.raises(TypeError, match="x"):
        multi_threshold(np.array([[True]]), np.zeros((1, 1)))


@pytest.mark.parametrize("cb,rounding", [
    (scref.apot_codebook(4, construction="repo", signed=False), "linear"),
    (scref.log_codebook(3, e_max=0, base="sqrt2"), "log"),
    (scref.pot_codebook(4, e_max=0, signed=False), "linear"),
])
def test_encoder_as_multithreshold(cb, rounding):
    rng = np.random.default_rng(3)
    S = np.array([0.3, 1.7], dtype=np.float32)
    x = np.abs(rng.standard_normal((50, 2))) * 2
    T, lut = quant.encode_thresholds(cb, S, rounding)
    # add the exact cutoffs and their neighbours as inputs
    x = np.concatenate([x, T.T, np.nextafter(T.T, 0)])
    fields = multi_threshold(x, T, data_layout="NHWC", lut=lut)
    assert np.array_equal(fields, quant.encode(x, cb, scale=S, rounding=rounding).codes)
