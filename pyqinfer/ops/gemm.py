"""Functional integer operators, with ONNX names and argument order.

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

from . import _core

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

_RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


def _int8_array(name, x):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of uint8 or int8, got {type(x).__name__}")
    if x.dtype not in _RANGES:
        raise TypeError(f"{name} must have dtype uint8 or int8, got {x.dtype}")
    return x


def _zero_point(name, zp, dtype, n=None):
    """A zero point as an int (scalar) or an int32 array of n entries (per channel)."""
    lo, hi = _RANGES[np.dtype(dtype)]
    if zp is None:
        return 0
    arr = np.asarray(zp)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer (got dtype {arr.dtype})")
    if isinstance(zp, (np.ndarray, np.generic)) and zp.dtype in _RANGES and zp.dtype != np.dtype(dtype):
        raise TypeError(f"{name} has dtype {zp.dtype} but its tensor has dtype {np.dtype(dtype)}")
    if arr.size == 1:
        v = int(arr.reshape(()))
        if not lo <= v <= hi:
            raise ValueError(f"{name}={v} is outside the range [{lo}, {hi}] of {np.dtype(dtype)}")
        return v
    if n is None or arr.ndim != 1 or arr.shape[0] != n:
        want = "a scalar" if n is None else f"a scalar or {n} entries (one per output channel)"
        raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    if arr.min() < lo or arr.max() > hi:
        raise ValueError(f"{name} has values outside the range [{lo}, {hi}] of {np.dtype(dtype)}")
    return arr.astype(np.int32)


def _scale(name, s, n=None):
    """A scale as a float32 array of 1 or n entries, finite and > 0."""
    arr = np.asarray(s)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a float, got dtype {arr.dtype}")
    arr = arr.astype(np.float32).reshape(-1)
    if arr.size != 1 and (n is None or arr.size != n):
        want = "a scalar" if n is None else f"a scalar or {n} entries (one per output channel)"
        raise ValueError(f"{name} must be {want}, got shape {np.shape(s)}")
    if not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        raise ValueError(f"{name} must be finite and > 0 (as float32), got {arr if arr.size > 1 else arr[0]}")
    return np.ascontiguousarray(arr)


def activation_bounds(clip, y_scale, y_zero_point, dtype):
    """Integer output bounds [lo, hi] for a fused activation.

    ``clip`` is ``None`` (the dtype range), ``"relu"`` (lo = zero point),
    ``"relu6"`` (also hi = zp + RNE(fl32(6 / y_scale))), or a ``(lo, hi)`` pair of
    integers in the quantized output domain.
    """
    qmin, qmax = _RANGES[np.dtype(dtype)]
    if clip is None or clip == "none":
        return qmin, qmax
    if isinstance(clip, str):
        if clip not in ("relu", "relu6"):
            raise ValueError(f"clip must be None, 'relu', 'relu6' or (lo, hi), got {clip!r}")
        lo, hi = max(qmin, y_zero_point), qmax
        if clip == "relu6":
            with np.errstate(over="ignore"):
                six = np.float32(6.0) / np.float32(y_scale)  # float32 division, as the contract says
            if np.isfinite(six):
                hi = min(qmax, y_zero_point + int(np.rint(six)))
        return lo, hi
    try:
        lo, hi = (int(v) for v in clip)
    except (TypeError, ValueError):
        raise ValueError(f"clip must be None, 'relu', 'relu6' or (lo, hi), got {clip!r}") from None
    if not (qmin <= lo <= hi <= qmax):
        raise ValueError(f"clip=({lo}, {hi}) must satisfy {qmin} <= lo <= hi <= {qmax} for {np.dtype(dtype)}")
    return lo, hi


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
            if not np.array_equal(np.broadcast_to(given, (b.N,)), np.broadcast_to(b.zero_point, (b.N,))):
                raise ValueError("b_zero_point differs from the zero point b was packed with")
        return b
    return PackedWeights(b, b_zero_point)


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
    rq = _core.derive_requant(mode, float(x_s[0]), w_s, float(y_s[0]), w.N)
    out = _core.qgemm(a2, za, w._core, _bias(bias, w.N), str(y_dtype), rq, zy, lo, hi)
    return out.reshape(*lead, w.N)
