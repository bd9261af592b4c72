"""GEMM operators: MatMulInteger, QLinearMatMul, and packed weights.

Every function validates its inputs and raises ``TypeError``/``ValueError``
naming the argument; the arithmetic is defined in ``docs/semantics.md`` and
mirrored by :mod:`pyqinfer.reference`.

>>> import numpy as np, pyqinfer.ops as ops
>>> a = np.array([[1, 2, 3]], np.uint8); b = np.array([[1], [1], [1]], np.int8)
>>> ops.matmul_integer(a, b, a_zero_point=1)
array([[3]], dtype=int32)
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _core

__all__ = [
    "MODES",
    "PackedWeights",
    "pack_weights",
    "matmul_integer",
    "qlinear_matmul",
    "activation_bounds",
]

#: Requantization modes, see docs/semantics.md.
MODES = ("fp32", "q31", "q31_single", "pot")

from ._checks import _RANGES, _int8_array, _scale, _zero_point, activation_bounds  # noqa: F401


class PackedWeights:
    """Weights B [K, N] (MatMul layout) packed once for the kernels and reused.

    Create with :func:`pack_weights`; pass it wherever an op takes ``b``.
    """

    def __init__(self, b, b_zero_point=None):
        b = _int8_array("b", b)
        if b.ndim != 2:
            raise ValueError(f"b must be 2-D [K, N], got shape {b.shape}")
        if b.shape[0] == 0 or b.shape[1] == 0:
            raise ValueError(f"b must have K > 0 and N > 0, got shape {b.shape}")
        self.dtype = b.dtype
        self.shape = b.shape
        zp = _zero_point("b_zero_point", b_zero_point, b.dtype, n=b.shape[1])
        self.zero_point = zp
        zps = np.atleast_1d(np.asarray(zp, dtype=np.int32))
        self._core = _core.pack_weights(np.ascontiguousarray(b), np.ascontiguousarray(zps))

    @property
    def K(self):
        return self.shape[0]

    @property
    def N(self):
        return self.shape[1]

    def __repr__(self):
        zp = "per-channel" if isinstance(self.zero_point, np.ndarray) else self.zero_point
        return f"PackedWeights(K={self.K}, N={self.N}, dtype={self.dtype}, zero_point={zp})"


def pack_weights(b, b_zero_point=None):
    """Pack ``b`` ([K, N], uint8 or int8) with its zero point (scalar or per column)."""
    return PackedWeights(b, b_zero_point)


def _weights(b, b_zero_point):
    if isinstance(b, PackedWeights):
        if b_zero_point is not None:
            given = _zero_point("b_zero_point", b_zero_point, b.dtype, n=b.N)
            same = (given == b.zero_point) if isinstance(given, int) and isinstance(b.zero_point, int) else \
                np.array_equal(np.broadcast_to(given, (b.N,)), np.broadcast_to(b.zero_point, (b.N,)))
            if not same:
                raise ValueError("b_zero_point differs from the zero point b was packed with")
        return b
    return PackedWeights(b, b_zero_point)


def _requant(w, mode, x_s, w_s, y_s):
    """Requantization parameters, derived once per (weights, mode, scales) and cached."""
    key = (mode, float(x_s[0]), w_s.tobytes(), float(y_s[0]))
    cache = w.__dict__.setdefault("_requant_cache", {})
    rq = cache.get(key)
    if rq is None:
        if len(cache) > 16:
            cache.clear()
        rq = cache[key] = _core.derive_requant(mode, key[1], w_s, key[3], w.N)
    return rq


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
    if bias is None:
        return None
    arr = np.asarray(bias)
    if arr.dtype != np.int32:
        raise TypeError(f"bias must be int32 (scale x_scale*w_scale, zero point 0), got {arr.dtype}")
    if arr.shape != (N,):
        raise ValueError(f"bias must have shape ({N},), got {arr.shape}")
    return np.ascontiguousarray(arr)


def matmul_integer(a, b, a_zero_point=None, b_zero_point=None, *, bias=None):
    """ONNX MatMulInteger: int32 ``(a - a_zero_point) @ (b - b_zero_point)``.

    ``a`` is [..., K] uint8/int8 with a scalar zero point; ``b`` is [K, N]
    uint8/int8 (or a :class:`PackedWeights`) with a scalar or per-column zero
    point. Accumulation wraps modulo 2^32 (docs/semantics.md). ``bias`` (int32,
    N entries) is an extension: it is added inside the same wrapping sum.
    """
    w = _weights(b, b_zero_point)
    a2, lead = _activations(a, w.K)
    za = _zero_point("a_zero_point", a_zero_point, a2.dtype)
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
):
    """ONNX QLinearMatMul with an optional int32 bias, a requant ``mode`` and a fused clip.

    ``y`` has the dtype of ``y_zero_point`` (a numpy uint8/int8 scalar or array;
    a Python int means uint8, as in ONNX's default). ``mode`` is one of
    :data:`MODES`; ``clip`` is ``None``, ``"relu"``, ``"relu6"`` or ``(lo, hi)``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    w = _weights(b, b_zero_point)
    a2, lead = _activations(a, w.K)
    za = _zero_point("a_zero_point", a_zero_point, a2.dtype)
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
    rq = _requant(w, mode, x_s, w_s, y_s)
    out = _core.qgemm(a2, za, w._core, _bias(bias, w.N), str(y_dtype), rq, zy, lo, hi)
    return out.reshape(*lead, w.N)
