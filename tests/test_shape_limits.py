"""Absurd shapes are rejected with a ValueError before anything is allocated
(docs/robustness.md, "Shape limits"): no tensor an op or the runner allocates may
exceed 2^31 - 1 elements (the kernels' int32 indexes) or PYQINFER_MAX_TENSOR_BYTES.
Every case here would otherwise ask for gigabytes to terabytes."""
import numpy as np
import pytest

import pyqinfer.ops as ops
from pyqinfer.ops._checks import MAX_ELEMENTS, check_alloc

TOO_MANY = "more than 2\\^31 - 1 elements|the limit is"


def test_check_alloc_is_exact_and_overflow_safe():
    assert check_alloc("t", (2 ** 16, 2 ** 15 - 1)) == 2 ** 31 - 2 ** 16
    assert check_alloc("t", (0, 2 ** 62)) == 0
    for shape in ((2 ** 31,), (2 ** 16, 2 ** 16), (2 ** 40, 2 ** 40, 2 ** 40)):   # int64 products would wrap
        with pytest.raises(ValueError, match="the limit is"):
            check_alloc("t", shape)
    with pytest.raises(ValueError, match="negative"):
        check_alloc("t", (4, -1))
    with pytest.raises(ValueError, match="bytes"):
        check_alloc("t", (MAX_ELEMENTS,), 4)


def test_env_limit(monkeypatch):
    monkeypatch.setenv("PYQINFER_MAX_TENSOR_BYTES", "1000")
    check_alloc("t", (10, 100))
    with pytest.raises(ValueError, match="1000 bytes"):
        check_alloc("t", (10, 101))


def test_gemm_output_too_large():
    a = np.zeros((65536, 1), np.uint8)
    w = ops.pack_weights(np.zeros((1, 65536), np.int8))
    with pytest.raises(ValueError, match=TOO_MANY):
        ops.matmul_integer(a, w)
    with pytest.raises(ValueError, match=TOO_MANY):
        ops.qlinear_matmul(a, 0.1, np.uint8(0), w, 0.1, np.int8(0), 0.1, np.uint8(0))


@pytest.mark.parametrize("pads", [[100000] * 4, [2 ** 31] * 4, [2 ** 40] * 4])
@pytest.mark.parametrize("depthwise", [False, True])
def test_conv_output_too_large(pads, depthwise):
    x = np.zeros((1, 4, 4, 4), np.uint8)
    w = np.zeros((4, 1, 3, 3), np.int8) if depthwise else np.zeros((8, 4, 1, 1), np.int8)
    g = 4 if depthwise else 1
    with pytest.raises(ValueError, match=TOO_MANY):
        ops.conv_integer(x, w, group=g, pads=pads)
    with pytest.raises(ValueError, match=TOO_MANY):
        ops.qlinear_conv(x, 0.1, np.uint8(0), w, 0.1, np.int8(0), 0.1, np.uint8(0), group=g, pads=pads)


def test_conv_many_output_channels():
    with pytest.raises(ValueError, match=TOO_MANY):
        ops.conv_integer(np.zeros((1, 1, 256, 256), np.uint8), np.zeros((2 ** 16, 1, 1, 1), np.int8))


@pytest.mark.parametrize("call", [
    lambda x: ops.max_pool(x, kernel_shape=[1, 1]),
    lambda x: ops.qlinear_average_pool(x, 0.1, np.uint8(0), 0.1, np.uint8(0), kernel_shape=[1, 1]),
    lambda x: ops.conv_integer(x, np.zeros((1, 1, 1, 1), np.int8), layout="NHWC"),
])
def test_huge_virtual_inputs(call):
    """A broadcast view of 2^32 elements (no memory behind it) is rejected before the
    contiguous copy an op would make."""
    x = np.broadcast_to(np.uint8(0), (1, 2 ** 16, 2 ** 16, 1))
    with pytest.raises(ValueError, match="x: shape .* the limit is"):
        call(x)


@pytest.mark.parametrize("kw", [dict(kernel_shape=[10 ** 9, 1]), dict(kernel_shape=[2, 2], pads=[10 ** 5] * 4),
                                dict(kernel_shape=[1, 1], pads=[2 ** 31] * 4), dict(kernel_shape=[2 ** 31, 2 ** 31])])
def test_pool_attributes(kw):
    x = np.zeros((1, 4, 4, 4), np.uint8)
    with pytest.raises(ValueError):
        ops.max_pool(x, **kw)
    with pytest.raises(ValueError):
        ops.qlinear_average_pool(x, 0.1, np.uint8(0), 0.1, np.uint8(0), **kw)


def test_graph_pad_and_resize_outputs_checked():
    import onnx
    from onnx import TensorProto as TP, helper, numpy_helper

    import pyqinfer
    for node, inits in (
            (helper.make_node("Pad", ["x", "pads"], ["y"], name="pad"),
             [numpy_helper.from_array(np.array([0, 0, 60000, 60000, 0, 0, 60000, 60000], np.int64), "pads")]),
            (helper.make_node("Resize", ["x", "", "sc"], ["y"], name="rs", mode="nearest"),
             [numpy_helper.from_array(np.array([1, 1, 1024, 1024], np.float32), "sc")])):
        g = helper.make_graph([node], "t", [helper.make_tensor_value_info("x", TP.UINT8, [1, 64, 8, 8])],
                              [helper.make_tensor_value_info("y", TP.UINT8, None)], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        with pytest.raises(ValueError, match=rf"node '{node.name}' .*output: shape .* the limit is"):
            pyqinfer.load(m)
