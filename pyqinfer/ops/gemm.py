"""GEMM operators: MatMulInteger, QLinearMatMul, and packed weights.

Every function validates its inputs and raises ``TypeError``/``ValueError``
naming the argument; the arithmetic is defined in ``docs/semantics.md`` and
mirrored by :mod:`pyqinfer.reference`.

>>> import numpy as np, pyqinfer.ops as ops
>>> a = np.array([[1, 2, 3]], np.uint8); b = np.array([[1], [1], [1]], np.int8)
>>> ops.matmul_integer(a, b, a_zero_point=1)
array([[3]], dtype=int32)

Low-bit weights and activations (docs/semantics.md section 9) declare a width:

>>> w4 = ops.pack_weights(np.array([[-8], [7], [1]], np.int8), np.int8(-1), bits=4)
>>> ops.matmul_integer(np.array([[1, 1, 2]], np.uint8), w4)   # -7 + 8 + 2*2
array([[5]], dtype=int32)
>>> packed = ops.pack_int4(np.array([[-8, 7, 1]], np.int8))   # ONNX order, 2 per byte
>>> packed.data, packed.shape
(array([120,   1], dtype=uint8), (1, 3))
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _core

__all__ = [
    "MODES",
    "PackedWeights",
    "PackedInt4",
    "pack_int4",
    "pack_weights",
    "matmul_integer",
    "qlinear_matmul",
    "activation_bounds",
]

#: Requantization modes, see docs/semantics.md.
MODES = ("fp32", "q31", "q31_single", "pot")

from ._checks import (  # noqa: F401
    _RANGES, _int8_array, _scale, _zero_point, activation_bounds, bias_array, cached_requant, same_zero_point)


#: Named low-bit value sets of int8 containers (docs/semantics.md 9.1).
NAMED_WIDTHS = ("ternary", "binary")


def _width_range(name, bits, signed):
    """(qmin, qmax) of a declared width; see docs/semantics.md 9.1."""
    if isinstance(bits, str):
        if bits not in NAMED_WIDTHS:
            raise ValueError(f"{name} must be an int in 1..8, 'ternary' or 'binary', got {bits!r}")
        if not signed:
            raise ValueError(f"{name}={bits!r} needs an int8 container, got uint8")
        return (-1, 1)
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, numbers.Integral):
        raise TypeError(f"{name} must be an int in 1..8, 'ternary' or 'binary', got {bits!r}")
    if not 1 <= int(bits) <= 8:
        raise ValueError(f"{name} must be in 1..8, got {bits}")
    if signed and bits == 1:
        raise ValueError(f"{name}=1 with an int8 container: use {name}='binary' for {{-1, +1}}")
    half = 1 << (int(bits) - 1)
    return (-half, half - 1) if signed else (0, 2 * half - 1)


def _core_bits(bits):
    """The width the C++ layer checks: ternary and binary lie within signed 2-bit."""
    return 2 if isinstance(bits, str) else int(bits)


def _check_values(name, x, bits, what="bits"):
    """ValueError naming `name` if x (int8/uint8) has a value outside the declared width."""
    if bits == 8 or x.size == 0:
        return
    qmin, qmax = _width_range(what, bits, x.dtype == np.int8)
    lo, hi = int(x.min()), int(x.max())
    if lo < qmin or hi > qmax:
        raise ValueError(f"{name} has values in [{lo}, {hi}], outside [{qmin}, {qmax}] of {what}={bits!r}")
    if bits == "binary" and not np.all(x):
        raise ValueError(f"{name} has the value 0, outside {{-1, +1}} of {what}='binary'")


def _check_zero_point_width(name, zp, dtype, bits, what="bits"):
    qmin, qmax = _width_range(what, bits, np.dtype(dtype) == np.int8)
    arr = np.atleast_1d(zp)
    if arr.min() < qmin or arr.max() > qmax:
        raise ValueError(f"{name} must lie in [{qmin}, {qmax}] for {what}={bits!r}, got {zp}")


class PackedInt4:
    """An int4 (``signed=True``) or uint4 tensor of ``shape``, packed two values per
    byte in ONNX order (docs/semantics.md 1.2): flattened row-major, element 2i in the
    low nibble of byte i; an odd count has a zero high nibble of padding.

    ``data`` is a uint8 array (any shape) of exactly ceil(prod(shape) / 2) bytes,
    e.g. the raw data of an ONNX INT4/UINT4 initializer. Pass it as weights to
    :func:`pack_weights` or as activations ``a`` to :func:`matmul_integer` /
    :func:`qlinear_matmul`.

    >>> import numpy as np
    >>> PackedInt4(np.array([0x8F], np.uint8), (2,), signed=True).unpack()
    array([-1, -8], dtype=int8)
    """

    def __init__(self, data, shape, signed=True):
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
            raise TypeError(f"data must be a numpy uint8 array of packed nibbles, got "
                            f"{type(data).__name__ if not isinstance(data, np.ndarray) else data.dtype}")
        try:
            shape = tuple(int(d) for d in shape)
        except TypeError:
            raise TypeError(f"shape must be a tuple of ints, got {shape!r}") from None
        if any(d < 0 for d in shape):
            raise ValueError(f"shape must not have negative dimensions, got {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        if data.size != (count + 1) // 2:
            raise ValueError(f"data has {data.size} bytes but shape {shape} ({count} int4 values) "
                             f"needs ceil({count}/2) = {(count + 1) // 2}")
        self.data = np.ascontiguousarray(data).reshape(-1)
        self.shape = shape
        self.signed = bool(signed)

    @property
    def dtype(self):
        """The container dtype of the unpacked values: int8 (int4) or uint8 (uint4)."""
        return np.dtype(np.int8 if self.signed else np.uint8)

    def unpack(self):
        """The values as an int8 (int4) or uint8 (uint4) array of ``shape``."""
        return _core.unpack_int4(self.data, int(np.prod(self.shape, dtype=np.int64)), self.signed).reshape(self.shape)

    def __repr__(self):
        return f"PackedInt4(shape={self.shape}, {'int4' if self.signed else 'uint4'}, {self.data.size} bytes)"


def pack_int4(values):
    """Pack int8 values in [-8, 7] (int4) or uint8 values in [0, 15] (uint4) into a
    :class:`PackedInt4` (ONNX order). Out-of-range values are a ValueError."""
    values = _int8_array("values", values)
    _check_values("values", values, 4)
    v = values.reshape(-1).astype(np.uint8) & 0x0F
    if v.size % 2:
        v = np.append(v, np.uint8(0))
    return PackedInt4((v[0::2] | (v[1::2] << 4)).astype(np.uint8), values.shape, values.dtype == np.int8)


class PackedWeights:
    """Weights B [K, N] (MatMul layout) packed once for the kernels and reused.

    Create with :func:`pack_weights`; pass it wherever an op takes ``b``.
    ``bits`` is the declared width (docs/semantics.md 9.1); weights of at most 4
    bits are stored as nibbles on the AVX-512 VNNI path (half the bytes).
    """

    def __init__(self, b, b_zero_point=None, *, bits=None):
        if isinstance(b, PackedInt4):
            if bits not in (None, 4):
                raise ValueError(f"bits must be 4 (or omitted) for PackedInt4 weights, got {bits!r}")
            bits = 4
            if len(b.shape) != 2 or b.shape[0] == 0 or b.shape[1] == 0:
                raise ValueError(f"b must be 2-D [K, N] with K > 0 and N > 0, got shape {b.shape}")
            dtype, shape = b.dtype, b.shape
        else:
            bits = 8 if bits is None else bits
            b = _int8_array("b", b)
            if b.ndim != 2:
                raise ValueError(f"b must be 2-D [K, N], got shape {b.shape}")
            if b.shape[0] == 0 or b.shape[1] == 0:
                raise ValueError(f"b must have K > 0 and N > 0, got shape {b.shape}")
            dtype, shape = b.dtype, b.shape
        _width_range("bits", bits, dtype == np.int8)
        self.dtype = dtype
        self.shape = shape
        self.bits = bits
        zp = _zero_point("b_zero_point", b_zero_point, dtype, n=shape[1])
        _check_zero_point_width("b_zero_point", zp, dtype, bits)
        self.zero_point = zp
        zps = np.ascontiguousarray(np.atleast_1d(np.asarray(zp, dtype=np.int32)))
        if isinstance(b, PackedInt4):
            self._core = _core.pack_int4_weights(b.data, shape[0], shape[1], b.signed, zps)
        elif bits == 8:
            self._core = _core.pack_weights(np.ascontiguousarray(b), zps)
        else:
            _check_values("b", b, bits)
            self._core = _core.pack_weights_lowbit(np.ascontiguousarray(b), zps, _core_bits(bits))

    @property
    def K(self):
        return self.shape[0]

    @property
    def N(self):
        return self.shape[1]

    def __repr__(self):
        zp = "per-channel" if isinstance(self.zero_point, np.ndarray) else self.zero_point
        width = "" if self.bits == 8 else f", bits={self.bits!r}"
        return f"PackedWeights(K={self.K}, N={self.N}, dtype={self.dtype}{width}, zero_point={zp})"


def pack_weights(b, b_zero_point=None, *, bits=None):
    """Pack ``b`` ([K, N], uint8 or int8) with its zero point (scalar or per column).

    ``bits`` declares a low-bit width (docs/semantics.md 9.1): an int in 1..8
    (uint8) or 2..8 (int8), or ``"ternary"`` ([-1, 1]) / ``"binary"`` ({-1, +1})
    for int8. Values or zero points outside it are a ValueError. ``b`` may also
    be a :class:`PackedInt4` (ONNX-packed int4/uint4 [K, N]; bits is then 4).

    >>> import numpy as np
    >>> w = pack_weights(np.array([[1, -1], [0, 1]], np.int8), bits="ternary")
    >>> w.bits, w.shape
    ('ternary', (2, 2))
    """
    return PackedWeights(b, b_zero_point, bits=bits)


def _weights(b, b_zero_point, b_bits=None):
    if isinstance(b, PackedWeights):
        if b_bits is not None and b_bits != b.bits:
            raise ValueError(f"b_bits={b_bits!r} differs from the width b was packed with ({b.bits!r})")
        if b_zero_point is not None:
            given = _zero_point("b_zero_point", b_zero_point, b.dtype, n=b.N)
            if not same_zero_point(given, b.zero_point, b.N):
                raise ValueError("b_zero_point differs from the zero point b was packed with")
        return b
    return PackedWeights(b, b_zero_point, bits=b_bits)


def _lowbit_activations(a, a_bits):
    """(a as an int8/uint8 array, its width): unpacks PackedInt4 activations."""
    if isinstance(a, PackedInt4):
        if a_bits not in (8, 4):
            raise ValueError(f"a_bits must be 4 (or omitted) for PackedInt4 activations, got {a_bits!r}")
        return a.unpack(), 4
    return a, a_bits


def _activations(a, K):
    a = _int8_array("a", a)
    if a.ndim == 0:
        raise ValueError("a must have at least one dimension")
    if a.shape[-1] != K:
        raise ValueError(f"a has {a.shape[-1]} columns (K) but b has {K} rows; shapes {a.shape} and ({K}, N)")
    lead = a.shape[:-1]
    a2 = np.ascontiguousarray(a).reshape(-1, K)  # no copy when a is already C-contiguous
    return a2, lead


def _bias(bias, N):
    return bias_array(bias, N)


def _checked_activations(a, a_zero_point, a_bits, K):
    a, a_bits = _lowbit_activations(a, a_bits)
    a2, lead = _activations(a, K)
    za = _zero_point("a_zero_point", a_zero_point, a2.dtype)
    if a_bits != 8:
        _width_range("a_bits", a_bits, a2.dtype == np.int8)
        _check_zero_point_width("a_zero_point", za, a2.dtype, a_bits, "a_bits")
        _check_values("a", a2, a_bits, "a_bits")
    return a2, lead, za


def matmul_integer(a, b, a_zero_point=None, b_zero_point=None, *, bias=None, a_bits=8, b_bits=None):
    """ONNX MatMulInteger: int32 ``(a - a_zero_point) @ (b - b_zero_point)``.

    ``a`` is [..., K] uint8/int8 with a scalar zero point; ``b`` is [K, N]
    uint8/int8 (or a :class:`PackedWeights`) with a scalar or per-column zero
    point. Accumulation wraps modulo 2^32 (docs/semantics.md). ``bias`` (int32,
    N entries) is an extension: it is added inside the same wrapping sum.

    Low bit widths (docs/semantics.md 9): ``a_bits`` / ``b_bits`` declare the
    widths of ``a`` and of an unpacked ``b`` (see :func:`pack_weights`); values
    outside them are a ValueError. ``a`` and ``b`` may be :class:`PackedInt4`
    (ONNX-packed int4/uint4), e.g. int4 x int4:

    >>> import numpy as np
    >>> a = pack_int4(np.array([[1, -2, 3]], np.int8))
    >>> b = pack_int4(np.array([[1], [1], [-8]], np.int8))
    >>> matmul_integer(a, b)
    array([[-25]], dtype=int32)
    """
    w = _weights(b, b_zero_point, b_bits)
    a2, lead, za = _checked_activations(a, a_zero_point, a_bits, w.K)
    out = _core.qgemm(a2, za, w._core, _bias(bias, w.N), "int32", None, 0, 0, 0)
    return out.reshape(*lead, w.N)


def qlinear_matmul(
    a,
    a_scale,
    a_zero_point,
    b,
    b_scale,
    b_zero_point,
    y_scale,
    y_zero_point,
    bias=None,
    *,
    mode="fp32",
    clip=None,
    a_bits=8,
    b_bits=None,
):
    """ONNX QLinearMatMul with an optional int32 bias, a requant ``mode`` and a fused clip.

    ``y`` has the dtype of ``y_zero_point`` (a numpy uint8/int8 scalar or array;
    a Python int means uint8, as in ONNX's default). ``mode`` is one of
    :data:`MODES`; ``clip`` is ``None``, ``"relu"``, ``"relu6"`` or ``(lo, hi)``.
    ``a_bits``, ``b_bits`` and :class:`PackedInt4` operands work as in
    :func:`matmul_integer` (docs/semantics.md 9); the output stays 8-bit.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    w = _weights(b, b_zero_point, b_bits)
    a2, lead, za = _checked_activations(a, a_zero_point, a_bits, w.K)
    x_s = _scale("a_scale", a_scale)
    w_s = _scale("b_scale", b_scale, n=w.N)
    y_s = _scale("y_scale", y_scale)
    y_dtype = np.asarray(y_zero_point).dtype if isinstance(y_zero_point, (np.ndarray, np.generic)) else np.dtype(np.uint8)
    if isinstance(y_zero_point, numbers.Integral) and not isinstance(y_zero_point, np.generic):
        y_dtype = np.dtype(np.uint8)
    if y_dtype not in _RANGES:
        raise TypeError(f"y_zero_point must be uint8 or int8 (it sets the output dtype), got {y_dtype}")
    zy = _zero_point("y_zero_point", y_zero_point, y_dtype)
    lo, hi = activation_bounds(clip, float(y_s[0]), zy, y_dtype)
    rq = cached_requant(w, mode, x_s, w_s, y_s, w.N)
    out = _core.qgemm(a2, za, w._core, _bias(bias, w.N), str(y_dtype), rq, zy, lo, hi)
    return out.reshape(*lead, w.N)
