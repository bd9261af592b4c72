"""Low-bit (1-8 bit, ternary, binary) and packed int4 GEMM (docs/semantics.md section 9).

The arithmetic is sections 2 and 4 on the unpacked values; this module only
defines the value sets, checks them, unpacks ONNX int4 and computes the
accumulator bound with the declared widths.
"""
import numpy as np

from .accum import _check_bias, accumulate
from .arith import INT32_MAX
from .dtypes import check_int_array, check_zero_point, dtype_name, dtype_range
from .ops import matmul_integer, qlinear_matmul
from .quant import unpack_int4

#: Named value sets of signed containers besides the integer widths.
NAMED_WIDTHS = ("ternary", "binary")


def lowbit_range(bits, signed):
    """(qmin, qmax) of a declared width (section 9.1).

    bits: an int in 1..8 (unsigned) or 2..8 (signed), or "ternary" / "binary"
    (signed only; binary's values are {-1, +1}, its interval [-1, 1]).
    """
    if isinstance(bits, str):
        if bits not in NAMED_WIDTHS:
            raise ValueError(f"bits must be an int in 1..8, 'ternary' or 'binary', got {bits!r}")
        if not signed:
            raise ValueError(f"bits={bits!r} needs a signed (int8) container")
        return -1, 1
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an int in 1..8, 'ternary' or 'binary', got {bits!r}")
    bits = int(bits)
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    if not signed:
        return 0, 2 ** bits - 1
    if bits == 1:
        raise ValueError("signed 1-bit is not supported: use bits='binary' for {-1, +1}")
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def check_lowbit(x, bits, name):
    """x as an int8/uint8 array whose values lie in the declared width's value set."""
    x = check_int_array(x, name)
    signed = x.dtype == np.int8
    qmin, qmax = lowbit_range(bits, signed)
    if x.size:
        lo, hi = int(x.min()), int(x.max())
        if lo < qmin or hi > qmax:
            raise ValueError(f"{name} has values in [{lo}, {hi}], outside [{qmin}, {qmax}] of bits={bits!r}")
        if bits == "binary" and np.any(x == 0):
            raise ValueError(f"{name} has the value 0, outside {{-1, +1}} of bits='binary'")
    return x


def _check_lowbit_zero_point(zp, dtype, bits, name, per_channel_len=None):
    z = check_zero_point(zp, dtype, name, per_channel_len=per_channel_len)
    qmin, qmax = lowbit_range(bits, np.dtype(dtype) == np.int8)
    if np.any(z < qmin) or np.any(z > qmax):
        raise ValueError(f"{name} must lie in [{qmin}, {qmax}] for bits={bits!r}, got {z.tolist()}")
    return z


def _check_operands(a, b, a_zero_point, b_zero_point, a_bits, b_bits):
    a = check_lowbit(a, a_bits, "a")
    b = check_lowbit(b, b_bits, "b")
    n = b.shape[1] if b.ndim == 2 else None
    _check_lowbit_zero_point(a_zero_point, a.dtype.name, a_bits, "a_zero_point")
    _check_lowbit_zero_point(b_zero_point, b.dtype.name, b_bits, "b_zero_point", per_channel_len=n)
    return a, b


def unpack_int4_tensor(packed, shape, signed):
    """ONNX-packed int4/uint4 bytes (ceil(prod(shape)/2) of them) as an int8/uint8 array of `shape`."""
    shape = tuple(int(s) for s in shape)
    count = int(np.prod(shape, dtype=np.int64))
    return unpack_int4(packed, count, signed).reshape(shape)


def lowbit_matmul_integer(a, b, a_zero_point=None, b_zero_point=None, *, a_bits=8, b_bits=8):
    """matmul_integer (section 6) after checking the declared widths of a, b and their zero points."""
    a, b = _check_operands(a, b, a_zero_point, b_zero_point, a_bits, b_bits)
    return matmul_integer(a, b, a_zero_point, b_zero_point)


def lowbit_qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point,
                          bias=None, mode="fp32", clip=None, *, a_bits=8, b_bits=8):
    """qlinear_matmul (section 6) after checking the declared widths; the output stays 8-bit."""
    a, b = _check_operands(a, b, a_zero_point, b_zero_point, a_bits, b_bits)
    return qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point,
                          bias=bias, mode=mode, clip=clip)


def lowbit_accumulate(a, b, a_zero_point=None, b_zero_point=None, bias=None, *, a_bits=8, b_bits=8):
    """accumulate (section 2.1) after checking the declared widths."""
    a, b = _check_operands(a, b, a_zero_point, b_zero_point, a_bits, b_bits)
    return accumulate(a, b, a_zero_point, b_zero_point, bias)


def lowbit_accumulator_bound(b, b_zero_point, a_dtype, a_zero_point, bias=None, *, a_bits=8, b_bits=8):
    """Section 9.3: bound[n] = max_a * sum_k |b[k,n] - zb[n]| + |bias[n]| with
    max_a = max(za - qmin_a, qmax_a - za) over the declared activation width. int64 [N]."""
    b = check_lowbit(b, b_bits, "b")
    if b.ndim != 2:
        raise ValueError(f"b must have shape [K, N], got {b.shape}")
    zb = _check_lowbit_zero_point(b_zero_point, b.dtype.name, b_bits, "b_zero_point", per_channel_len=b.shape[1])
    a_dtype = dtype_name(a_dtype, "a_dtype")
    if a_dtype not in ("int8", "uint8"):
        raise TypeError(f"a_dtype must be the container dtype int8 or uint8, got {a_dtype!r}")
    za = int(_check_lowbit_zero_point(a_zero_point, a_dtype, a_bits, "a_zero_point")[0])
    amin, amax = lowbit_range(a_bits, a_dtype == "int8")
    max_a = max(za - amin, amax - za)
    col_abs = np.abs(b.astype(np.int64) - zb).sum(axis=0)
    return max_a * col_abs + np.abs(_check_bias(bias, b.shape[1]))


def lowbit_can_overflow(b, b_zero_point, a_dtype, a_zero_point, bias=None, *, a_bits=8, b_bits=8):
    """True iff some column's lowbit_accumulator_bound exceeds 2^31 - 1."""
    bound = lowbit_accumulator_bound(b, b_zero_point, a_dtype, a_zero_point, bias, a_bits=a_bits, b_bits=b_bits)
    return bool(np.any(bound > INT32_MAX))


def lowbit_k_max(a_bits, a_signed, b_bits, b_signed):
    """Largest K such that K * span_a * span_b <= 2^31 - 1 (no bias): no values and no zero
    points of these widths can make the accumulator wrap (section 9.3)."""
    amin, amax = lowbit_range(a_bits, a_signed)
    bmin, bmax = lowbit_range(b_bits, b_signed)
    return INT32_MAX // ((amax - amin) * (bmax - bmin))


# int4 / uint4 as declared widths (section 1.1 types), for convenience.
assert dtype_range("int4") == lowbit_range(4, True) and dtype_range("uint4") == lowbit_range(4, False)
