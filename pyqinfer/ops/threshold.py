"""MultiThreshold (QONNX): a staircase activation, docs/semantics.md §13.

``multi_threshold(x, thresholds)`` counts, per element, the thresholds of its
channel that ``x`` is greater than or equal to, comparing exact values, and
scales/biases the count (QONNX), returns it as an integer type, or looks it up
in a per-channel table (a level or a code). Integer ``x`` (8, 16 or 32 bits)
with an integer ``out_dtype`` of at most 32 bits runs the C++ kernel
(``csrc/threshold/``, docs/semantics.md 13.1) on thresholds prepared by
:func:`int_threshold_table`; everything else is vectorized numpy. The golden
model is :mod:`pyqinfer.reference.threshold`.
"""
import numpy as np

from .. import _core
from ..reference.threshold import check_lut, check_shapes  # argument checks only

__all__ = ["multi_threshold", "int_threshold_table"]

_EXACT_INT = 2 ** 53
KERNEL_IN_DTYPES = ("uint8", "int8", "uint16", "int16", "int32")
KERNEL_OUT_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32")
_INT32_MAX = 2 ** 31 - 1
_M32 = 0xFFFFFFFF


def int_threshold_table(thresholds, x_dtype, out_scale=1, out_bias=0, out_dtype="int32", sign=None):
    """The C++ kernel's prepared thresholds for an integer ``x`` (docs/semantics.md 13.1), or None.

    ``thresholds``: [R, B] integer or float (no NaN), counted as ``sign[c] * x >= T[c, t]``
    (``sign``: None or a +-1 vector of one entry per channel); ``out_scale`` and ``out_bias``
    integers. None where the kernel does not apply: ``x_dtype`` not one of
    ``KERNEL_IN_DTYPES``, ``out_dtype`` not one of ``KERNEL_OUT_DTYPES``, or the static output
    range ``[out_bias, out_bias + out_scale * B]`` not inside ``out_dtype``.
    """
    xd, od = np.dtype(x_dtype), np.dtype(out_dtype)
    T = np.asarray(thresholds)
    if xd.name not in KERNEL_IN_DTYPES or od.name not in KERNEL_OUT_DTYPES or T.ndim != 2:
        return None
    if T.dtype.kind not in "fiu" or T.shape[1] > 2 ** 24:
        return None
    s, b, B = int(out_scale), int(out_bias), int(T.shape[1])
    oi = np.iinfo(od)
    if not (oi.min <= min(b, b + s * B) and max(b, b + s * B) <= oi.max):
        return None
    lo, hi = int(np.iinfo(xd).min), int(np.iinfo(xd).max)
    if T.dtype.kind == "f":
        if np.isnan(T).any():
            return None
        # x >= t <=> x >= ceil(t) for integer x; +-2^40 stand for anything beyond any x (and +-inf)
        Ti = np.ceil(np.clip(T.astype(np.float64), -2.0 ** 40, 2.0 ** 40)).astype(np.int64)
    else:
        ti = np.iinfo(T.dtype)
        Ti = np.clip(T, max(ti.min, -2 ** 40), min(ti.max, 2 ** 40)).astype(np.int64)
    R = Ti.shape[0]
    s_m, b_m = s & _M32, b & _M32                       # everything below is modulo 2^32
    scale = np.full(R, s_m, dtype=np.int64)
    bias = np.full(R, b_m, dtype=np.int64)
    if sign is not None:
        sign = np.asarray(sign).reshape(-1)
        if np.any(sign == -1):
            if R == 1:
                Ti = np.repeat(Ti, sign.size, axis=0)
                R = sign.size
                scale, bias = np.full(R, s_m, dtype=np.int64), np.full(R, b_m, dtype=np.int64)
            neg = sign == -1
            # -x >= t  <=>  not (x >= 1 - t): the count is B - count', y = -s * count' + (s * B + b)
            Ti[neg] = 1 - Ti[neg]
            scale[neg] = (-s) & _M32
            bias[neg] = (b_m + s_m * B) & _M32
    always = (Ti <= lo).sum(axis=1)
    inr = (Ti > lo) & (Ti <= hi)
    U = np.sort(np.where(inr, Ti - 1, _INT32_MAX), axis=1)
    W = int(inr.sum(axis=1).max()) if R else 0
    bias = (bias + scale * always) & _M32
    return _core.threshold_table(np.ascontiguousarray(U[:, :W], dtype=np.int32), scale, bias, xd.name)


def _int_scale_bias(out_scale, out_bias):
    ints = []
    for v, nm in ((1.0 if out_scale is None else out_scale, "out_scale"),
                  (0.0 if out_bias is None else out_bias, "out_bias")):
        fv = float(v)
        if not np.isfinite(fv) or fv != int(fv) or abs(fv) > _EXACT_INT:
            raise ValueError(f"{nm} must be an integer for an integer out_dtype, got {v!r}")
        ints.append(int(fv))
    return ints


def _as_float64(a, name):
    """The exact value of a real array as float64 (ValueError where that is impossible)."""
    a = np.asarray(a)
    if a.dtype.kind == "b" or a.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real (float or integer) array, got dtype {a.dtype}")
    if a.dtype.kind in "iu" and a.dtype.itemsize == 8 and a.size:
        if int(a.max()) > _EXACT_INT or int(a.min()) < -_EXACT_INT:
            raise ValueError(f"{name} holds 64-bit integers beyond 2^53, which are not compared "
                             "exactly")
    if a.dtype.kind == "f" and a.dtype.itemsize > 8:
        raise TypeError(f"{name} must be at most float64, got {a.dtype}")
    f = a.astype(np.float64)
    if np.isnan(f).any():
        raise ValueError(f"{name} contains NaN")
    return f


def multi_threshold(x, thresholds, out_scale=None, out_bias=None, *, data_layout="NCHW",
                    out_dtype=None, lut=None):
    """QONNX MultiThreshold: count = #{t : x >= thresholds[c, t]}.

    Returns ``out_scale * count + out_bias`` as float64 (QONNX; defaults 1 and 0), or,
    with ``out_dtype`` an integer type, the exact integer (scale and bias must be
    integers; out of range is a ValueError), or ``lut[c, count]``.

    >>> multi_threshold(np.array([[0.4, 2.0, 7.0]]), np.array([[0.5, 1.5, 2.5]]), out_dtype="uint8")
    array([[0, 2, 3]], dtype=uint8)
    """
    xa = np.asarray(x)
    if (lut is None and out_dtype is not None and xa.dtype.name in KERNEL_IN_DTYPES and xa.dtype.isnative
            and xa.ndim >= 1):
        T = _as_float64(thresholds, "thresholds")
        ax, C = check_shapes(xa.shape, T.shape, data_layout)
        dt = np.dtype(out_dtype)
        if dt.kind not in "iu":
            raise TypeError(f"out_dtype must be an integer type, got {dt}")
        sc, bi = _int_scale_bias(out_scale, out_bias)
        table = int_threshold_table(T, xa.dtype, sc, bi, dt)
        if table is not None:
            return _core.multi_threshold_int(np.ascontiguousarray(xa), table, ax, dt.name)
    xf = _as_float64(xa, "x")
    T = _as_float64(thresholds, "thresholds")
    ax, C = check_shapes(xf.shape, T.shape, data_layout)
    Ts = np.sort(T, axis=1)
    xm = np.moveaxis(xf, ax, -1)
    if T.shape[0] == 1:
        cnt = np.searchsorted(Ts[0], xm, side="right")          # #{t : t <= x}
    else:
        cnt = np.empty(xm.shape, dtype=np.int64)
        for c in range(C):
            cnt[..., c] = np.searchsorted(Ts[c], xm[..., c], side="right")
    if lut is not None:
        L = check_lut(lut, C, T.shape[1], out_scale, out_bias, out_dtype)
        y = L[0][cnt] if L.shape[0] == 1 else L[np.arange(C), cnt]
        return np.moveaxis(y, -1, ax)
    cnt = np.moveaxis(cnt, -1, ax).astype(np.int64)
    sc = 1.0 if out_scale is None else out_scale
    bi = 0.0 if out_bias is None else out_bias
    if out_dtype is None:
        return np.float64(sc) * cnt.astype(np.float64) + np.float64(bi)
    dt = np.dtype(out_dtype)
    if dt.kind not in "iu":
        raise TypeError(f"out_dtype must be an integer type, got {dt}")
    ints = _int_scale_bias(out_scale, out_bias)
    y = cnt.astype(object) * ints[0] + ints[1] if cnt.size else cnt
    info = np.iinfo(dt)
    if cnt.size and (min(y.flat) < info.min or max(y.flat) > info.max):
        raise ValueError(f"outputs span [{min(y.flat)}, {max(y.flat)}], outside the {dt} range "
                         f"[{info.min}, {info.max}]")
    return np.asarray(y).astype(dt)
