"""MultiThreshold (QONNX): a staircase activation, docs/semantics.md §13.

``multi_threshold(x, thresholds)`` counts, per element, the thresholds of its
channel that ``x`` is greater than or equal to, comparing exact values, and
scales/biases the count (QONNX), returns it as an integer type, or looks it up
in a per-channel table (a level or a code). Vectorized numpy; the golden
model is :mod:`pyqinfer.reference.threshold`.
"""
import numpy as np

from ..reference.threshold import check_lut, check_shapes  # argument checks only

__all__ = ["multi_threshold"]

_EXACT_INT = 2 ** 53


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
    xf = _as_float64(x, "x")
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
    ints = []
    for v, nm in ((sc, "out_scale"), (bi, "out_bias")):
        fv = float(v)
        if not np.isfinite(fv) or fv != int(fv) or abs(fv) > _EXACT_INT:
            raise ValueError(f"{nm} must be an integer for an integer out_dtype, got {v!r}")
        ints.append(int(fv))
    y = cnt.astype(object) * ints[0] + ints[1] if cnt.size else cnt
    info = np.iinfo(dt)
    if cnt.size and (min(y.flat) < info.min or max(y.flat) > info.max):
        raise ValueError(f"outputs span [{min(y.flat)}, {max(y.flat)}], outside the {dt} range "
                         f"[{info.min}, {info.max}]")
    return np.asarray(y).astype(dt)
