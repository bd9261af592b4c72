"""MultiThreshold (QONNX), docs/semantics.md §13: a count of thresholds x >= T, compared exactly.

Pure Python: each comparison is between Fractions of the exact values.
"""
from fractions import Fraction

import numpy as np

LAYOUTS = ("NCHW", "NHWC")


def channel_axis(ndim, data_layout="NCHW"):
    """QONNX's channel axis: 1 for 2-D/4-D NCHW, else the last axis."""
    if data_layout not in LAYOUTS:
        raise ValueError(f"data_layout must be one of {LAYOUTS}, got {data_layout!r}")
    if ndim < 1:
        raise ValueError("x must have at least one dimension (the channel axis)")
    if data_layout == "NCHW" and ndim in (2, 4):
        return 1
    return ndim - 1


def check_shapes(x_shape, t_shape, data_layout):
    """(channel axis, C) after checking the threshold shape against x (§13)."""
    if len(t_shape) != 2:
        raise ValueError(f"thresholds must have shape [C, B] or [1, B], got {tuple(t_shape)}")
    ax = channel_axis(len(x_shape), data_layout)
    C = x_shape[ax]
    if t_shape[0] not in (1, C):
        raise ValueError(f"thresholds have {t_shape[0]} rows but x has {C} channels")
    return ax, C


def check_lut(lut, C, B, out_scale, out_bias, out_dtype):
    """The lut as an array [C or 1, B + 1] (§13)."""
    if out_scale is not None or out_bias is not None or out_dtype is not None:
        raise ValueError("lut excludes out_scale, out_bias and out_dtype")
    L = np.asarray(lut)
    if L.ndim != 2 or L.shape[0] not in (1, C) or L.shape[1] != B + 1:
        raise ValueError(f"lut must have shape [{C} or 1, {B + 1}], got {L.shape}")
    return L


def _exact(v, name):
    if isinstance(v, (float, np.floating)):
        if np.isnan(v):
            raise ValueError(f"{name} contains NaN")
        if np.isinf(v):
            return v
    return Fraction(v)


def _int_out_range(out_dtype):
    name = np.dtype(out_dtype).name
    if np.dtype(name).kind not in "iu":
        raise TypeError(f"out_dtype must be an integer type, got {name}")
    info = np.iinfo(name)
    return name, int(info.min), int(info.max)


def multi_threshold(x, thresholds, out_scale=None, out_bias=None, *, data_layout="NCHW",
                    out_dtype=None, lut=None):
    """count = #{t: x >= T[c, t]} per element; y = out_scale * count + out_bias, or lut[c, count]."""
    x = np.asarray(x)
    T = np.asarray(thresholds)
    ax, C = check_shapes(x.shape, T.shape, data_layout)
    rows = [[_exact(t.item() if hasattr(t, "item") else t, "thresholds") for t in row] for row in T]
    count = np.zeros(x.shape, dtype=np.int64)
    for idx in np.ndindex(x.shape):
        v = _exact(x[idx].item(), "x")
        row = rows[0 if T.shape[0] == 1 else idx[ax]]
        count[idx] = sum(1 for t in row if v >= t)
    if lut is not None:
        L = check_lut(lut, C, T.shape[1], out_scale, out_bias, out_dtype)
        out = np.empty(x.shape, dtype=L.dtype)
        for idx in np.ndindex(x.shape):
            out[idx] = L[0 if L.shape[0] == 1 else idx[ax], count[idx]]
        return out
    sc = 1.0 if out_scale is None else out_scale
    bi = 0.0 if out_bias is None else out_bias
    if out_dtype is None:
        out = np.empty(x.shape, dtype=np.float64)
        for idx in np.ndindex(x.shape):
            out[idx] = float(np.float64(sc) * np.float64(count[idx])) + np.float64(bi)
        return out
    name, lo, hi = _int_out_range(out_dtype)
    for v, nm in ((sc, "out_scale"), (bi, "out_bias")):
        if not np.isfinite(float(v)) or Fraction(v).denominator != 1:
            raise ValueError(f"{nm} must be an integer for an integer out_dtype, got {v!r}")
    out = np.empty(x.shape, dtype=name)
    for idx in np.ndindex(x.shape):
        y = int(sc) * int(count[idx]) + int(bi)
        if not lo <= y <= hi:
            raise ValueError(f"output {y} is outside the {name} range [{lo}, {hi}]")
        out[idx] = y
    return out


__all__ = ["multi_threshold", "channel_axis", "check_shapes", "check_lut", "LAYOUTS"]
