"""Argument checks shared by every op family: each raises TypeError/ValueError
naming the argument, as the project's standard asks."""
from __future__ import annotations

import math

import numpy as np

_RANGES = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}

#: The kernels index with int32 in places (docs/robustness.md): no tensor an op or
#: the runner allocates may have more than 2^31 - 1 elements.
MAX_ELEMENTS = 2 ** 31 - 1


def max_tensor_bytes():
    """The largest tensor (bytes) an op or the runner allocates: PYQINFER_MAX_TENSOR_BYTES,
    default 2^31 - 1 (2 GiB). Larger requests are rejected before allocating."""
    import os
    try:
        return int(os.environ.get("PYQINFER_MAX_TENSOR_BYTES", "")) or MAX_ELEMENTS
    except ValueError:
        return MAX_ELEMENTS


def check_alloc(what, shape, itemsize=1):
    """ValueError unless a tensor of ``shape`` (Python ints, any size) and ``itemsize``
    stays within MAX_ELEMENTS and max_tensor_bytes(); checked before allocating, in
    exact integer arithmetic (numpy's int64 products wrap)."""
    n = 1
    for d in shape:
        d = int(d)
        if d < 0:
            raise ValueError(f"{what}: negative dimension in shape {tuple(int(v) for v in shape)}")
        n *= d
    limit = max_tensor_bytes()
    if n > MAX_ELEMENTS or n * itemsize > limit:
        raise ValueError(f"{what}: shape {tuple(int(v) for v in shape)} is {n} elements ({n * itemsize} bytes); "
                         f"the limit is {MAX_ELEMENTS} elements and {limit} bytes (PYQINFER_MAX_TENSOR_BYTES)")
    return n


def _int8_array(name, x):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of uint8 or int8, got {type(x).__name__}")
    if x.dtype not in _RANGES:
        raise TypeError(f"{name} must have dtype uint8 or int8, got {x.dtype}")
    if x.size > MAX_ELEMENTS:   # e.g. a broadcast view: rejected before any contiguous copy
        check_alloc(name, x.shape, 1)
    return x


def _zero_point(name, zp, dtype, n=None):
    """A zero point as an int (scalar) or an int32 array of n entries (per channel)."""
    lo, hi = _RANGES[np.dtype(dtype)]
    if zp is None:
        return 0
    if type(zp) is int or (isinstance(zp, np.generic) and zp.dtype == dtype):
        # fast path: a Python int, or a numpy scalar of the tensor's own dtype
        v = int(zp)
        if not lo <= v <= hi:
            raise ValueError(f"{name}={v} is outside the range [{lo}, {hi}] of {np.dtype(dtype)}")
        return v
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
    if isinstance(s, (float, np.floating)) and not isinstance(s, np.float16):
        # Fast path for the common scalar case (this runs on every call).
        v = np.float32(s)
        if math.isfinite(v) and v > 0:
            return np.array([v], dtype=np.float32)
    if isinstance(s, np.ndarray) and s.dtype == np.float32 and s.ndim == 1 and s.size == n and s.flags.c_contiguous:
        # Fast path for per-channel float32 scales (every call of a layer passes the same array).
        if np.isfinite(s).all() and (s > 0).all():
            return s
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
    if np.dtype(dtype) not in _RANGES:
        raise TypeError(f"output dtype must be one of {sorted(str(d) for d in _RANGES)}, got {np.dtype(dtype)}")
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


def same_zero_point(given, packed, n):
    """Whether a zero point given at call time equals the one weights were packed with."""
    if isinstance(given, int) and isinstance(packed, int):
        return given == packed
    return np.array_equal(np.broadcast_to(given, (n,)), np.broadcast_to(packed, (n,)))


def cached_requant(weights, mode, x_s, w_s, y_s, n):
    """``_core.derive_requant`` for packed ``weights``, derived once per (mode, scales)
    and kept on the weights object (layers call with the same scales every time)."""
    from .. import _core

    key = (mode, float(x_s[0]), w_s.tobytes(), float(y_s[0]))
    cache = weights.__dict__.setdefault("_requant_cache", {})
    rq = cache.get(key)
    if rq is None:
        if len(cache) > 16:
            cache.clear()
        rq = cache[key] = _core.derive_requant(mode, key[1], w_s, key[3], n)
    return rq


def bias_array(bias, n, name="bias"):
    """An int32 bias of n entries (scale x_scale*w_scale, zero point 0), contiguous, or None."""
    if bias is None:
        return None
    arr = np.asarray(bias)
    if arr.dtype != np.int32:
        raise TypeError(f"{name} must be int32 (scale x_scale*w_scale, zero point 0), got {arr.dtype}")
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    return np.ascontiguousarray(arr)
