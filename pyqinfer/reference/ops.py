"""Reference ops, one class per op, each with a `run` staticmethod.

Like onnx/reference/ops: plain numpy over exact integers, no fusion tricks.
"""
import numpy as np

from .accum import accumulate
from .dtypes import check_scale, check_zero_point
from .requant import activation_bounds, derive_requant, requantize


class MatMulInteger:
    """ONNX MatMulInteger: int32 acc = wrap32(sum_k (a - za) * (b - zb[n])).

    a [M, K] or [..., M, K] int8/uint8, b [K, N] int8/uint8, a_zero_point a
    scalar, b_zero_point a scalar or [N]. Wraps modulo 2^32 like the kernels.
    """

    @staticmethod
    def run(a, b, a_zero_point=None, b_zero_point=None):
        return accumulate(a, b, a_zero_point, b_zero_point).astype(np.int32)


class QLinearMatMul:
    """ONNX QLinearMatMul with optional int32 bias, fused clip and a named requant mode.

    y = clamp(y_zp + r(acc), lo, hi), acc = wrap32(sum (a-za)(b-zb[n]) + bias[n]);
    the output dtype is y_zero_point's dtype (int8 or uint8).
    """

    @staticmethod
    def run(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point,
            bias=None, mode="fp32", clip=None):
        if not isinstance(y_zero_point, (np.ndarray, np.generic)) or \
                np.asarray(y_zero_point).dtype.name not in ("int8", "uint8"):
            raise TypeError("y_zero_point must be a numpy int8 or uint8 scalar "
                            "(its dtype selects the output type)")
        out_dtype = np.asarray(y_zero_point).dtype
        b_arr = np.asarray(b)
        n = b_arr.shape[-1] if b_arr.ndim == 2 else None
        check_scale(a_scale, "a_scale")
        check_scale(b_scale, "b_scale", per_channel_len=n)
        zy = int(check_zero_point(y_zero_point, out_dtype.name, "y_zero_point")[0])
        acc = accumulate(a, b, a_zero_point, b_zero_point, bias)
        params = derive_requant(mode, a_scale, b_scale, y_scale)
        lo, hi = activation_bounds(clip, y_scale, y_zero_point, out_dtype.name)
        return requantize(acc, params, zy, lo, hi).astype(out_dtype)


def matmul_integer(a, b, a_zero_point=None, b_zero_point=None):
    return MatMulInteger.run(a, b, a_zero_point, b_zero_point)


def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point,
                   bias=None, mode="fp32", clip=None):
    return QLinearMatMul.run(a, a_scale, a_zero_point, b, b_scale, b_zero_point,
                             y_scale, y_zero_point, bias=bias, mode=mode, clip=clip)


matmul_integer.__doc__ = MatMulInteger.__doc__
qlinear_matmul.__doc__ = QLinearMatMul.__doc__
