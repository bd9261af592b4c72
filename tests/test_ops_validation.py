"""pyqinfer.ops rejects bad input with a clear exception naming the argument,
copies non-contiguous activations, and PackedWeights reuse is exact."""
import numpy as np
import pytest

import pyqinfer.ops as ops
import pyqinfer.reference as R

RNG = np.random.default_rng(3)
A = RNG.integers(0, 256, (4, 10)).astype(np.uint8)
B = RNG.integers(-128, 128, (10, 6)).astype(np.int8)
GOOD = dict(a=A, a_scale=0.05, a_zero_point=np.uint8(3), b=B, b_scale=0.01, b_zero_point=np.int8(0),
            y_scale=0.1, y_zero_point=np.uint8(128))


def qlinear(**over):
    kw = dict(GOOD)
    mode, clip = over.pop("mode", "fp32"), over.pop("clip", None)
    kw.update(over)
    return ops.qlinear_matmul(kw["a"], kw["a_scale"], kw["a_zero_point"], kw["b"], kw["b_scale"],
                              kw["b_zero_point"], kw["y_scale"], kw["y_zero_point"], kw.get("bias"),
                              mode=mode, clip=clip)


def test_good_call_matches_reference():
    kw = dict(GOOD)
    want = R.qlinear_matmul(*(kw[k] for k in ("a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point",
                                              "y_scale", "y_zero_point")))
    np.testing.assert_array_equal(qlinear(), want)


BAD_QLINEAR = [
    # (overrides, exception, argument named in the message)
    (dict(a=A.astype(np.float32)), TypeError, "a"),
    (dict(a=A.tolist()), TypeError, "a"),
    (dict(b=B.astype(np.int16)), TypeError, "b"),
    (dict(bias=np.zeros(6, np.int64)), TypeError, "bias"),
    (dict(bias=np.zeros(5, np.int32)), ValueError, "bias"),
    (dict(a=A[:, :9]), ValueError, "K"),
    (dict(b=B.reshape(10, 6, 1)), ValueError, "b"),
    (dict(a=np.uint8(3)), TypeError, "a"),
    (dict(a_zero_point=300), ValueError, "a_zero_point"),
    (dict(a_zero_point=-1), ValueError, "a_zero_point"),
    (dict(a_zero_point=np.array([1, 2], np.uint8)), ValueError, "a_zero_point"),
    (dict(a_zero_point=1.5), TypeError, "a_zero_point"),
    (dict(b_zero_point=np.zeros(5, np.int8)), ValueError, "b_zero_point"),
    (dict(b_zero_point=200), ValueError, "b_zero_point"),
    (dict(b_zero_point=np.zeros(6, np.uint8)), TypeError, "b_zero_point"),
    (dict(y_zero_point=np.int16(0)), TypeError, "y_zero_point"),
    (dict(y_zero_point=300), ValueError, "y_zero_point"),
    (dict(a_scale=float("nan")), ValueError, "a_scale"),
    (dict(a_scale=float("inf")), ValueError, "a_scale"),
    (dict(a_scale=0.0), ValueError, "a_scale"),
    (dict(b_scale=-0.5), ValueError, "b_scale"),
    (dict(b_scale=np.full(5, 0.1, np.float32)), ValueError, "b_scale"),
    (dict(b_scale=np.array([0.1, 0.1, 0.1, 0.0, 0.1, 0.1], np.float32)), ValueError, "b_scale"),
    (dict(y_scale=1e-50), ValueError, "y_scale"),  # 0 as float32
    (dict(y_scale="0.1"), TypeError, "y_scale"),
    (dict(mode="q15"), ValueError, "mode"),
    (dict(mode="FP32"), ValueError, "mode"),
    (dict(clip="relu7"), ValueError, "clip"),
    (dict(clip=(10, 5)), ValueError, "clip"),
    (dict(clip=(-1, 100)), ValueError, "clip"),  # below uint8's range
    (dict(clip=(0, 256)), ValueError, "clip"),
    (dict(clip=(1, 2, 3)), ValueError, "clip"),
    (dict(mode="pot"), ValueError, "power"),  # 0.05 * 0.01 / 0.1 is not a power of two
    (dict(mode="pot", b_scale=np.array([1, 1, 1, 1, 1, 0.3], np.float32), a_scale=1.0, y_scale=1.0),
     ValueError, "channel 5"),
    (dict(mode="q31", a_scale=2.0 ** 20, b_scale=2.0 ** 20, y_scale=1.0), ValueError, "2^30"),
    (dict(mode="q31_single", a_scale=2.0 ** 20, b_scale=2.0 ** 20, y_scale=1.0), ValueError, "2^30"),
    (dict(a_scale=1e30, b_scale=1e30, y_scale=1.0), ValueError, "overflow"),
]


@pytest.mark.parametrize("over,exc,name", BAD_QLINEAR, ids=[f"{i}-{c[2]}" for i, c in enumerate(BAD_QLINEAR)])
def test_qlinear_rejects_bad_input(over, exc, name):
    with pytest.raises(exc) as info:
        qlinear(**over)
    assert name in str(info.value), f"{info.type.__name__}: {info.value}"


BAD_MATMUL = [
    (dict(a=A.astype(np.float32)), TypeError, "a"),
    (dict(b=B.astype(np.int16)), TypeError, "b"),
    (dict(b=B[:9]), ValueError, "K"),
    (dict(b=B.reshape(2, 5, 6)), ValueError, "b"),
    (dict(b=B[:, :0]), ValueError, "b"),
    (dict(a_zero_point=256), ValueError, "a_zero_point"),
    (dict(a_zero_point=np.int8(3)), TypeError, "a_zero_point"),
    (dict(a_zero_point=np.array(3, np.int8)), TypeError, "a_zero_point"),
    (dict(b_zero_point=np.array([1, 2, 3, 4, 5, 6], np.uint8)), TypeError, "b_zero_point"),
    (dict(b_zero_point=-129), ValueError, "b_zero_point"),
    (dict(b_zero_point=np.zeros(7, np.int8)), ValueError, "b_zero_point"),
    (dict(b_zero_point=np.zeros((2, 3), np.int8)), ValueError, "b_zero_point"),
    (dict(bias=np.zeros(6, np.int64)), TypeError, "bias"),
    (dict(bias=np.zeros((1, 6), np.int32)), ValueError, "bias"),
]


@pytest.mark.parametrize("over,exc,name", BAD_MATMUL)
def test_matmul_integer_rejects_bad_input(over, exc, name):
    kw = dict(a=A, b=B, a_zero_point=None, b_zero_point=None, bias=None)
    kw.update(over)
    with pytest.raises(exc) as info:
        ops.matmul_integer(kw["a"], kw["b"], kw["a_zero_point"], kw["b_zero_point"], bias=kw["bias"])
    assert name in str(info.value), f"{info.type.__name__}: {info.value}"


def test_packed_weights_reject_bad_input_and_mismatched_zero_point():
    with pytest.raises(TypeError, match="b"):
        ops.pack_weights(B.astype(np.float64))
    with pytest.raises(ValueError, match="b"):
        ops.pack_weights(B[0])
    with pytest.raises(ValueError, match="b_zero_point"):
        ops.pack_weights(B, np.zeros(3, np.int8))
    pw = ops.pack_weights(B, np.int8(4))
    with pytest.raises(ValueError, match="b_zero_point"):
        ops.matmul_integer(A, pw, None, np.int8(5))
    with pytest.raises(ValueError, match="K"):
        ops.matmul_integer(A[:, :7], pw)


@pytest.mark.parametrize("mode", R.MODES)
def test_non_contiguous_activations_are_copied(mode, kernel_path):
    big = RNG.integers(-128, 128, (5, 2 * 37)).astype(np.int8)
    a = big[:, ::2]
    assert not a.flags.c_contiguous
    b = RNG.integers(0, 256, (37, 70)).astype(np.uint8)
    zb = RNG.integers(0, 256, 70).astype(np.uint8)
    got = ops.matmul_integer(a, b, np.int8(-7), zb)
    np.testing.assert_array_equal(got, R.matmul_integer(np.ascontiguousarray(a), b, np.int8(-7), zb))
    np.testing.assert_array_equal(got, ops.matmul_integer(np.ascontiguousarray(a), b, np.int8(-7), zb))
    args = (1.0, np.int8(-7), b, 2.0 ** -9, zb, 1.0, np.int8(2))
    y = ops.qlinear_matmul(a, *args, mode=mode)
    np.testing.assert_array_equal(y, R.qlinear_matmul(np.ascontiguousarray(a), *args, mode=mode))
    # a transposed (Fortran-ordered) view and a batched non-contiguous view
    at = np.asfortranarray(a)
    np.testing.assert_array_equal(ops.matmul_integer(at, b, np.int8(-7), zb), got)
    a3 = np.stack([big, big])[:, :, ::2]
    np.testing.assert_array_equal(ops.matmul_integer(a3, b, np.int8(-7), zb), np.stack([got, got]))


def test_packed_weights_reuse_is_identical(kernel_path, num_threads):
    b = RNG.integers(-128, 128, (129, 131)).astype(np.int8)
    zb = RNG.integers(-128, 128, 131).astype(np.int8)
    pw = ops.pack_weights(b, zb)
    assert (pw.K, pw.N) == (129, 131)
    for i in range(3):  # the same packed object, several activations and both APIs
        a = RNG.integers(0, 256, (9 + i, 129)).astype(np.uint8)
        np.testing.assert_array_equal(ops.matmul_integer(a, pw, np.uint8(i)), ops.matmul_integer(a, b, np.uint8(i), zb))
        np.testing.assert_array_equal(ops.matmul_integer(a, pw, np.uint8(i), zb),
                                      R.matmul_integer(a, b, np.uint8(i), zb))
        for mode in R.MODES:
            args = (0.5, np.uint8(i))
            rest = (2.0 ** -12, None, 0.5, np.int8(-3))
            y_packed = ops.qlinear_matmul(a, *args, pw, *rest, mode=mode, clip="relu")
            y_direct = ops.qlinear_matmul(a, *args, b, rest[0], zb, *rest[2:], mode=mode, clip="relu")
            np.testing.assert_array_equal(y_packed, y_direct)
            np.testing.assert_array_equal(y_packed, R.qlinear_matmul(a, *args, b, rest[0], zb, *rest[2:],
                                                                     mode=mode, clip="relu"))


def test_relu6_with_tiny_y_scale_clamps_to_qmax():
    """6 / y_scale overflows float32 to inf: hi = qmax (semantics 4.6), not an OverflowError."""
    a = np.array([[0, 255]], np.uint8)
    b = np.array([[0], [1]], np.int8)
    for y_scale in (1e-39, float(np.finfo(np.float32).smallest_subnormal)):
        args = (a, 1e-30, np.uint8(0), b, 1e-30, np.int8(0), y_scale, np.uint8(3))
        got = ops.qlinear_matmul(*args, clip="relu6")
        np.testing.assert_array_equal(got, R.qlinear_matmul(*args, clip="relu6"))
        assert ops.activation_bounds("relu6", y_scale, 3, np.uint8) == (3, 255)
