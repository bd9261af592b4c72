"""int32 accumulation and its static overflow bound (docs/semantics.md section 2).

acc[m, n] = wrap32( sum_k (a[m,k] - za) * (b[k,n] - zb[n]) + bias[n] )
"""
import numpy as np

from .arith import INT32_MAX, wrap32
from .dtypes import check_int_array, check_zero_point, dtype_name, dtype_range


def _check_bias(bias, n):
    if bias is None:
        return np.zeros(n, dtype=np.int64)
    arr = np.asarray(bias)
    if arr.dtype != np.int32:
        raise TypeError(f"bias must have dtype int32, got {arr.dtype}")
    if arr.shape != (n,):
        raise ValueError(f"bias must have shape ({n},), got {arr.shape}")
    return arr.astype(np.int64)


def _check_matmul_operands(a, b, a_zero_point, b_zero_point):
    a = check_int_array(a, "a")
    b = check_int_array(b, "b")
    if a.ndim < 2:
        raise ValueError(f"a must have shape [..., M, K], got {a.shape}")
    if b.ndim != 2:
        raise ValueError(f"b must have shape [K, N], got {b.shape}")
    if a.shape[-1] != b.shape[0]:
        raise ValueError(f"inner dimensions differ: a {a.shape} vs b {b.shape}")
    za = check_zero_point(a_zero_point, a.dtype.name, "a_zero_point")
    zb = check_zero_point(b_zero_point, b.dtype.name, "b_zero_point", per_channel_len=b.shape[1])
    return a, b, za, zb


def accumulate(a, b, a_zero_point=None, b_zero_point=None, bias=None):
    """The int32 accumulator as an int64 array of wrapped (int32-range) values.

    The exact sum is computed in int64: each product is at most 255 * 255 < 2^16
    in magnitude and the bias < 2^31, so int64 is exact for K < 2^46; wrap32
    of the exact sum is then the modulo-2^32 result every kernel must produce.
    """
    a, b, za, zb = _check_matmul_operands(a, b, a_zero_point, b_zero_point)
    if a.shape[-1] >= 2**46:
        raise ValueError("K too large for the exact int64 reference sum")
    bias64 = _check_bias(bias, b.shape[1])
    exact = np.matmul(a.astype(np.int64) - za[0], b.astype(np.int64) - zb) + bias64
    return wrap32(exact)


def accumulator_bound(b, b_zero_point, a_dtype, a_zero_point, bias=None):
    """Per-column bound on |exact acc|, int64 [N]:

    bound[n] = max|a - za| * sum_k |b[k,n] - zb[n]| + |bias[n]|,
    max|a - za| = max(za - amin, amax - za) over the activation dtype range.
    The layer cannot wrap if every bound[n] <= 2^31 - 1 (a sufficient
    condition; see docs/semantics.md 2.2). int64 is exact
    (each term <= 255 * 255 * K + 2^31).
    """
    b = check_int_array(b, "b")
    if b.ndim != 2:
        raise ValueError(f"b must have shape [K, N], got {b.shape}")
    zb = check_zero_point(b_zero_point, b.dtype.name, "b_zero_point", per_channel_len=b.shape[1])
    a_dtype = dtype_name(a_dtype, "a_dtype")
    za = int(check_zero_point(a_zero_point, a_dtype, "a_zero_point")[0])
    amin, amax = dtype_range(a_dtype)
    max_a = max(za - amin, amax - za)
    col_abs = np.abs(b.astype(np.int64) - zb).sum(axis=0)
    return max_a * col_abs + np.abs(_check_bias(bias, b.shape[1]))


def can_overflow(b, b_zero_point, a_dtype, a_zero_point, bias=None):
    """True iff some column's accumulator_bound exceeds 2^31 - 1."""
    return bool(np.any(accumulator_bound(b, b_zero_point, a_dtype, a_zero_point, bias) > INT32_MAX))
