"""Pooling, quantized add, concat, clip, requantize, quantize and dequantize.

docs/semantics.md section 11 defines every result bit for bit; the golden
model is :mod:`pyqinfer.reference.eltwise`. Pools take 4-D tensors in NCHW
(ONNX) or, with ``layout="NHWC"``, channels-last; the kernels run in NHWC, so
NCHW costs a transpose copy on the way in and out.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _core
from ._checks import _RANGES, _int8_array, _scale, _zero_point, activation_bounds

__all__ = [
    "ADD_RULES",
    "QUANTIZE_RULES",
    "max_pool",
    "qlinear_average_pool",
    "qlinear_global_average_pool",
    "qlinear_add",
    "qlinear_concat",
    "clip",
    "relu",
    "requantize",
    "quantize_linear",
    "dequantize_linear",
]

ADD_RULES = ("onnxruntime", "tflite", "xnnpack")
QUANTIZE_RULES = ("onnx", "torch", "tflite")
_MODES = ("fp32", "q31", "q31_single", "pot")


def _layout_in(x, layout):
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    x = _int8_array("x", x)
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D ({layout}), got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"x must not be empty, got shape {x.shape}")
    return np.ascontiguousarray(x if layout == "NHWC" else x.transpose(0, 2, 3, 1))


def _layout_out(y, layout):
    return y if layout == "NHWC" else np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def _ints(name, v, n, default):
    if v is None:
        return list(default)
    try:
        out = [int(t) for t in v]
    except TypeError:
        raise TypeError(f"{name} must be a sequence of {n} integers, got {v!r}") from None
    if len(out) != n:
        raise ValueError(f"{name} must have {n} entries, got {out}")
    return out


def _geometry(x_nhwc, kernel_shape, strides, pads, dilations, ceil_mode=0):
    H, W = x_nhwc.shape[1:3]
    k = _ints("kernel_shape", kernel_shape, 2, None) if kernel_shape is not None else None
    if k is None:
        raise ValueError("kernel_shape is required")
    s = _ints("strides", strides, 2, [1, 1])
    p = _ints("pads", pads, 4, [0, 0, 0, 0])
    d = _ints("dilations", dilations, 2, [1, 1])
    if min(k) < 1:
        raise ValueError(f"kernel_shape must be >= 1, got {k}")
    if min(s) < 1:
        raise ValueError(f"strides must be >= 1, got {s}")
    if min(d) < 1:
        raise ValueError(f"dilations must be >= 1, got {d}")
    e = [(k[0] - 1) * d[0] + 1, (k[1] - 1) * d[1] + 1]
    if min(p) < 0 or max(p[0], p[2]) >= e[0] or max(p[1], p[3]) >= e[1]:
        raise ValueError(f"pads must lie in [0, dilated kernel size {e}), got {p}")
    if H + p[0] + p[2] < e[0] or W + p[1] + p[3] < e[1]:
        raise ValueError(f"the padded input ({H}x{W}, pads {p}) is smaller than the kernel {e}")
    if not isinstance(ceil_mode, (numbers.Integral, np.bool_)) or int(ceil_mode) not in (0, 1):
        raise ValueError(f"ceil_mode must be 0 or 1, got {ceil_mode!r}")
    return k, s, p, d


def _scalar_zp(name, zp, dtype):
    v = _zero_point(name, zp, dtype)
    if isinstance(v, np.ndarray):
        raise ValueError(f"{name} must be a scalar")
    return v


def _scalar_scale(name, s):
    return float(_scale(name, s)[0])


def max_pool(x, kernel_shape, strides=None, pads=None, dilations=None, *, layout="NCHW", ceil_mode=0):
    """ONNX MaxPool on uint8/int8; the output keeps x's scale and zero point.

    ``pads`` is ``[top, left, bottom, right]``; padding never participates.
    ``ceil_mode=1`` rounds the output size up (a window that would start in the
    bottom/right padding is dropped), as ONNX and ONNX Runtime do.
    """
    xh = _layout_in(x, layout)
    k, s, p, d = _geometry(xh, kernel_shape, strides, pads, dilations, ceil_mode)
    return _layout_out(_core.max_pool(xh, k, s, p, d, bool(ceil_mode)), layout)


def qlinear_average_pool(x, x_scale, x_zero_point, y_scale, y_zero_point, kernel_shape, strides=None,
                         pads=None, count_include_pad=0, *, layout="NCHW", ceil_mode=0):
    """com.microsoft QLinearAveragePool, bit-exact with ONNX Runtime (a float32 rule,
    docs/semantics.md 11.3). A kernel covering the whole image with zero pads is
    the global average pool, as in ORT. ``ceil_mode`` as in :func:`max_pool`;
    ``count_include_pad=1`` always divides by kh*kw (ORT's rule)."""
    xh = _layout_in(x, layout)
    k, s, p, _ = _geometry(xh, kernel_shape, strides, pads, None, ceil_mode)
    sx, sy = _scalar_scale("x_scale", x_scale), _scalar_scale("y_scale", y_scale)
    zx = _scalar_zp("x_zero_point", x_zero_point, xh.dtype)
    zy = _scalar_zp("y_zero_point", y_zero_point, xh.dtype)
    if count_include_pad not in (0, 1, False, True):
        raise ValueError(f"count_include_pad must be 0 or 1, got {count_include_pad!r}")
    if tuple(k) == tuple(xh.shape[1:3]) and not any(p):
        y = _core.global_avg_pool(xh, sx, zx, sy, zy)
    else:
        y = _core.avg_pool(xh, sx, zx, sy, zy, k, s, p, bool(count_include_pad), bool(ceil_mode))
    return _layout_out(y, layout)


def qlinear_global_average_pool(x, x_scale, x_zero_point, y_scale, y_zero_point, *, layout="NCHW"):
    """com.microsoft QLinearGlobalAveragePool (ORT MLAS): exact integer sums, then
    fp32 requantization with S = fl32(s_x / fl32(s_y * H*W)). Output [N, C, 1, 1]."""
    xh = _layout_in(x, layout)
    if xh.shape[1] * xh.shape[2] >= 2**24:
        raise ValueError(f"H*W = {xh.shape[1] * xh.shape[2]} must be < 2^24")
    sx, sy = _scalar_scale("x_scale", x_scale), _scalar_scale("y_scale", y_scale)
    zx = _scalar_zp("x_zero_point", x_zero_point, xh.dtype)
    zy = _scalar_zp("y_zero_point", y_zero_point, xh.dtype)
    return _layout_out(_core.global_avg_pool(xh, sx, zx, sy, zy), layout)


def qlinear_add(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale, c_zero_point, *,
                rule="onnxruntime", clip=None):
    """Quantized add C = A + B (com.microsoft QLinearAdd argument order).

    ``rule``: ``"onnxruntime"`` (ORT's float rule, bit-exact with ORT on x86),
    ``"tflite"`` (three-step fixed point, double rounding) or ``"xnnpack"``.
    ``a`` and ``b`` broadcast (ONNX multidirectional / numpy rules, e.g.
    ``[N, C, H, W] + [1, C, 1, 1]`` or a scalar); the output has the broadcast
    shape and a's dtype; ``clip`` (None, "relu", "relu6", (lo, hi)) bounds it as
    in a fused activation.
    """
    if rule not in ADD_RULES:
        raise ValueError(f"rule must be one of {ADD_RULES}, got {rule!r}")
    a = _int8_array("a", a)
    b = _int8_array("b", b)
    if a.dtype != b.dtype:
        raise TypeError(f"a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    try:
        out_shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"b must have a shape that broadcasts with a's: {a.shape} and {b.shape}") from None
    sa, sb, sc = (_scalar_scale(n, v) for n, v in (("a_scale", a_scale), ("b_scale", b_scale), ("c_scale", c_scale)))
    za = _scalar_zp("a_zero_point", a_zero_point, a.dtype)
    zb = _scalar_zp("b_zero_point", b_zero_point, a.dtype)
    zc = _scalar_zp("c_zero_point", c_zero_point, a.dtype)
    lo, hi = activation_bounds(clip, sc, zc, a.dtype)
    y = _core.qlinear_add(np.ascontiguousarray(a), sa, za, np.ascontiguousarray(b), sb, zb, sc, zc, rule, lo, hi)
    return y if y.shape == out_shape else y.reshape(out_shape)  # 0-d


def qlinear_concat(y_scale, y_zero_point, inputs, axis):
    """com.microsoft QLinearConcat: ``inputs`` is a sequence of ``(x, x_scale, x_zero_point)``.

    Each input is requantized to (y_scale, y_zero_point) by ORT's rule
    ``sat(rne(fl32(fl32(s_x * fl32(x - zx)) / s_y)) + zy)``; identical parameters copy.
    """
    try:
        items = [tuple(t) for t in inputs]
    except TypeError:
        raise TypeError("inputs must be a sequence of (x, x_scale, x_zero_point) triples") from None
    if not items or any(len(t) != 3 for t in items):
        raise ValueError("inputs must be a non-empty sequence of (x, x_scale, x_zero_point) triples")
    xs = [_int8_array(f"inputs[{i}]", t[0]) for i, t in enumerate(items)]
    dt = xs[0].dtype
    nd = xs[0].ndim
    if nd == 0:
        raise ValueError("inputs must have at least one dimension")
    if not isinstance(axis, numbers.Integral) or not -nd <= int(axis) < nd:
        raise ValueError(f"axis must be an integer in [{-nd}, {nd}), got {axis!r}")
    axis = int(axis) % nd
    for i, x in enumerate(xs):
        if x.dtype != dt:
            raise TypeError(f"inputs[{i}] has dtype {x.dtype}, expected {dt}")
        if x.ndim != nd or x.shape[:axis] + x.shape[axis + 1:] != xs[0].shape[:axis] + xs[0].shape[axis + 1:]:
            raise ValueError(f"inputs[{i}] has shape {x.shape}, which does not match {xs[0].shape} outside axis {axis}")
    scales = [_scalar_scale(f"inputs[{i}] x_scale", t[1]) for i, t in enumerate(items)]
    zps = [_scalar_zp(f"inputs[{i}] x_zero_point", t[2], dt) for i, t in enumerate(items)]
    sy = _scalar_scale("y_scale", y_scale)
    zy = _scalar_zp("y_zero_point", y_zero_point, dt)
    return _core.concat([np.ascontiguousarray(x) for x in xs], scales, zps, sy, zy, axis)


def clip(x, lo, hi):
    """Integer-domain clip of uint8/int8 ``x`` to [lo, hi] (stored values)."""
    x = _int8_array("x", x)
    qmin, qmax = _RANGES[x.dtype]
    for name, v in (("lo", lo), ("hi", hi)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    lo, hi = int(lo), int(hi)
    if not qmin <= lo <= hi <= qmax:
        raise ValueError(f"need {qmin} <= lo <= hi <= {qmax} for {x.dtype}, got lo={lo}, hi={hi}")
    return _core.clip(np.ascontiguousarray(x), lo, hi)


def relu(x, zero_point):
    """Quantized ReLU: ``max(x, zero_point)``; real 0 is the zero point."""
    x = _int8_array("x", x)
    zp = _scalar_zp("zero_point", zero_point, x.dtype)
    return clip(x, zp, _RANGES[x.dtype][1])


def _rows(arr):
    """View as [rows, C] (C = last axis; a 0-d array is one row of one)."""
    if arr.ndim == 0:
        return arr.reshape(1, 1)
    return np.ascontiguousarray(arr).reshape(-1, arr.shape[-1]) if arr.shape[-1] else arr.reshape(-1, 0)


def _out_dtype(name, zp, default=np.uint8):
    if zp is None or (isinstance(zp, numbers.Integral) and not isinstance(zp, np.generic)):
        return np.dtype(default)
    dt = np.asarray(zp).dtype
    if dt not in _RANGES:
        raise TypeError(f"{name} must be uint8 or int8 (it sets the output dtype), got {dt}")
    return dt


def requantize(x, x_scale, y_scale, y_zero_point, *, mode="fp32", clip=None):
    """int32 ``x`` -> uint8/int8 (the dtype of ``y_zero_point``; a Python int means
    uint8) with scale ``y_scale``: docs/semantics.md section 4 with acc = x and
    effective scale s_x/s_y. ``x_scale`` is a scalar or per channel (last axis)."""
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if not isinstance(x, np.ndarray) or x.dtype != np.int32:
        raise TypeError(f"x must be a numpy int32 array, got {getattr(x, 'dtype', type(x).__name__)}")
    C = x.shape[-1] if x.ndim else 1
    xs = _scale("x_scale", x_scale, n=C)
    ys = _scalar_scale("y_scale", y_scale)
    dt = _out_dtype("y_zero_point", y_zero_point)
    zy = _scalar_zp("y_zero_point", y_zero_point, dt)
    lo, hi = activation_bounds(clip, ys, zy, dt)
    if x.size == 0:
        return np.empty(x.shape, dt)
    rq = _core.derive_requant(mode, 1.0, xs, ys, xs.size)
    return _core.requantize(_rows(x), rq, zy, lo, hi, str(dt)).reshape(x.shape)


def _params(x, scale, zero_point, dtype):
    C = x.shape[-1] if x.ndim else 1
    s = _scale("scale", scale, n=C)
    if zero_point is None:
        z = np.zeros(1, np.int32)
    else:
        z = _zero_point("zero_point", zero_point, dtype, n=C) if dtype is not None else None
        z = np.atleast_1d(np.asarray(z, np.int32))
    if s.size != z.size:
        if s.size == 1:
            s = np.full(z.size, s[0], np.float32)
        else:
            z = np.full(s.size, z[0], np.int32)
    return np.ascontiguousarray(s), np.ascontiguousarray(z)


def quantize_linear(x, scale, zero_point=None, *, rule="onnx", dtype=None):
    """float32 -> uint8/int8 (docs/semantics.md section 5): ``rule`` is ``"onnx"``
    (x / s, RNE; ONNX QuantizeLinear), ``"torch"`` (x * fl32(1/s), RNE) or
    ``"tflite"`` (x / s, ties away from zero). The output dtype is ``dtype`` or the
    numpy dtype of ``zero_point`` (uint8 when both are None). Scale and zero point
    are scalars or per channel along the last axis. NaN is a ValueError."""
    if rule not in QUANTIZE_RULES:
        raise ValueError(f"rule must be one of {QUANTIZE_RULES}, got {rule!r}")
    if dtype is not None:
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be 'uint8' or 'int8', got {dtype!r}") from None
        if dt not in _RANGES:
            raise TypeError(f"dtype must be 'uint8' or 'int8', got {dtype!r}")
        if isinstance(zero_point, (np.ndarray, np.generic)) and np.asarray(zero_point).dtype != dt:
            raise TypeError(f"zero_point has dtype {np.asarray(zero_point).dtype} but dtype is {dt}")
    else:
        dt = _out_dtype("zero_point", zero_point)
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"x must be a real array, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if np.isnan(arr).any():
        raise ValueError("x contains NaN; NaN has no quantized value")
    s, z = _params(arr, scale, zero_point, dt)
    if arr.size == 0:
        return np.empty(arr.shape, dt)
    return _core.quantize(_rows(arr), s, z, rule, str(dt)).reshape(arr.shape)


def dequantize_linear(x, scale, zero_point=None):
    """uint8/int8/int32 -> float32: ``fl32(fl32(x - zp) * s)`` (ONNX DequantizeLinear).
    int32 input must have zero point 0. Per channel along the last axis."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy array, got {type(x).__name__}")
    if x.dtype not in _RANGES and x.dtype != np.int32:
        raise TypeError(f"x must have dtype uint8, int8 or int32, got {x.dtype}")
    if x.dtype == np.int32:
        if zero_point is not None and np.any(np.asarray(zero_point) != 0):
            raise ValueError("zero_point must be 0 for int32 input")
        C = x.shape[-1] if x.ndim else 1
        s = _scale("scale", scale, n=C)
        z = np.zeros(s.size, np.int32)
    else:
        s, z = _params(x, scale, zero_point, x.dtype)
    if x.size == 0:
        return np.empty(x.shape, np.float32)
    return _core.dequantize(_rows(x), s, z).reshape(x.shape)
