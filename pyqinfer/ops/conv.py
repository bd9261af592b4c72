"""Convolution operators: QLinearConv and ConvInteger (NHWC inside, NCHW accepted).

docs/semantics.md section 10. ``x`` is NCHW by default (ONNX); ``layout="NHWC"``
takes ``x`` as [N, H, W, C] and returns [N, OH, OW, OC] without the two
transposes NCHW costs. Weights are always ONNX [OC, C/group, KH, KW]; pack them
once with :func:`pack_conv_weights` and pass the result in place of ``w``.
Low-bit weights (docs/semantics.md 9 and 10.5) declare a width with ``bits=``
(``w_bits=`` at the ops) or come as a :class:`PackedInt4` [OC, C/group, KH, KW];
they are checked against the width and unpacked once at pack time.

>>> import numpy as np, pyqinfer.ops as ops
>>> x = np.ones((1, 1, 3, 3), np.uint8); w = np.ones((1, 1, 3, 3), np.int8)
>>> ops.conv_integer(x, w, pads=(1, 1, 1, 1))[0, 0]
array([[4, 6, 4],
       [6, 9, 6],
       [4, 6, 4]], dtype=int32)
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _core
from ._checks import (_RANGES, _int8_array, _scale, _zero_point, activation_bounds, bias_array,
                      cached_requant, same_zero_point)
from .gemm import PackedInt4, _check_values, _check_zero_point_width, _width_range

__all__ = ["PackedConvWeights", "pack_conv_weights", "qlinear_conv", "conv_integer"]

MODES = ("fp32", "q31", "q31_single", "pot")
AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
LAYOUTS = ("NCHW", "NHWC")
_DTYPE_NAMES = {np.dtype(np.uint8): "uint8", np.dtype(np.int8): "int8"}


class PackedConvWeights:
    """Convolution weights [OC, C/group, KH, KW] packed once (per group) and reused.

    Create with :func:`pack_conv_weights`; pass it as ``w`` to :func:`qlinear_conv`
    or :func:`conv_integer` (with the same ``group``).
    """

    def __init__(self, w, w_zero_point=None, group=1, *, bits=None):
        if isinstance(w, PackedInt4):
            if bits not in (None, 4):
                raise ValueError(f"bits must be 4 (or omitted) for PackedInt4 weights, got {bits!r}")
            if len(w.shape) != 4:
                raise ValueError(f"w must be 4-D [OC, C/group, KH, KW], got shape {w.shape}")
            bits, w = 4, w.unpack()  # section 10.5: int4 conv weights are unpacked at pack time
        else:
            bits = 8 if bits is None else bits
            w = _int8_array("w", w)
        if w.ndim != 4:
            raise ValueError(f"w must be 4-D [OC, C/group, KH, KW], got shape {w.shape}")
        if min(w.shape) == 0:
            raise ValueError(f"w must have no empty dimension, got shape {w.shape}")
        group = _positive_int("group", group)
        if w.shape[0] % group:
            raise ValueError(f"group={group} must divide the output channels OC={w.shape[0]} of w")
        _width_range("bits", bits, w.dtype == np.int8)
        _check_values("w", w, bits)
        self.dtype = w.dtype
        self.shape = w.shape
        self.group = group
        self.bits = bits
        zp = _zero_point("w_zero_point", w_zero_point, w.dtype, n=w.shape[0])
        _check_zero_point_width("w_zero_point", zp, w.dtype, bits)
        self.zero_point = zp
        zps = np.atleast_1d(np.asarray(zp, dtype=np.int32))
        self._zp_bytes = np.broadcast_to(zps, (w.shape[0],)).tobytes()  # for the per-call comparison
        self._core = _core.pack_conv_weights(np.ascontiguousarray(w), np.ascontiguousarray(zps), group)

    @property
    def OC(self):
        return self.shape[0]

    @property
    def kernel_shape(self):
        return tuple(self.shape[2:])

    def __repr__(self):
        zp = "per-channel" if isinstance(self.zero_point, np.ndarray) else self.zero_point
        width = "" if self.bits == 8 else f", bits={self.bits!r}"
        return (f"PackedConvWeights(shape={self.shape}, group={self.group}, dtype={self.dtype}{width}, "
                f"zero_point={zp})")


def pack_conv_weights(w, w_zero_point=None, group=1, *, bits=None):
    """Pack ONNX conv weights ``w`` [OC, C/group, KH, KW] (int8/uint8) with a scalar or [OC] zero point.

    ``bits`` declares a low-bit width (docs/semantics.md 9.1, 10.5): an int in 1..8
    (uint8) or 2..8 (int8), or ``"ternary"`` / ``"binary"`` (int8); omitted means 8.
    Values or zero points outside it are a ValueError. ``w`` may also be a
    :class:`PackedInt4` of shape [OC, C/group, KH, KW] (bits is then 4). Low-bit
    weights are unpacked to one byte each; the arithmetic is section 10 unchanged.

    >>> import numpy as np, pyqinfer.ops as ops
    >>> w4 = ops.pack_conv_weights(ops.pack_int4(np.array([[[[-8, 7]]]], np.int8)))
    >>> w4.bits, w4.shape
    (4, (1, 1, 1, 2))
    """
    return PackedConvWeights(w, w_zero_point, group, bits=bits)


def _positive_int(name, v):
    if type(v) is int and v >= 1:  # fast path: a plain int (bool is not int by type)
        return v
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    if int(v) < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return int(v)


def _int_tuple(name, v, n, minimum):
    if v is None:
        return None
    if type(v) in (tuple, list) and len(v) == n and all(type(e) is int and e >= minimum for e in v):
        return tuple(v)  # fast path: plain ints in range (bool is not int by type)
    try:
        vals = tuple(v)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of {n} integers, got {v!r}") from None
    if len(vals) != n:
        raise ValueError(f"{name} must have {n} entries, got {len(vals)}: {vals}")
    for e in vals:
        if isinstance(e, (bool, np.bool_)) or not isinstance(e, numbers.Integral):
            raise TypeError(f"{name} must contain integers, got {vals}")
    vals = tuple(int(e) for e in vals)
    if min(vals) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {vals}")
    return vals


def _weights(w, w_zero_point, group, w_bits=None):
    if isinstance(w, PackedConvWeights):
        if w_bits is not None and w_bits != w.bits:
            raise ValueError(f"w_bits={w_bits!r} differs from the width w was packed with ({w.bits!r})")
        if w.group != group:
            raise ValueError(f"w was packed with group={w.group} but group={group}")
        if (isinstance(w_zero_point, np.ndarray) and w_zero_point.dtype == w.dtype and w_zero_point.shape == (w.OC,)
                and w_zero_point.astype(np.int32).tobytes() == w._zp_bytes):
            pass  # fast path: the per-channel zero points w was packed with (w's dtype: in range)
        elif w_zero_point is not None:
            given = _zero_point("w_zero_point", w_zero_point, w.dtype, n=w.OC)
            if not same_zero_point(given, w.zero_point, w.OC):
                raise ValueError("w_zero_point differs from the zero point w was packed with")
        return w
    return PackedConvWeights(w, w_zero_point, group, bits=w_bits)


def _prepare(x, w, x_zero_point, w_zero_point, auto_pad, dilations, group, kernel_shape, pads,
             strides, layout, w_bits=None):
    """Validated (x_nhwc, x_zp, packed, strides, pads, dilations)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if auto_pad not in AUTO_PADS:
        raise ValueError(f"auto_pad must be one of {AUTO_PADS}, got {auto_pad!r}")
    group = _positive_int("group", group)
    x = _int8_array("x", x)
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D ({'[N, C, H, W]' if layout == 'NCHW' else '[N, H, W, C]'}), "
                         f"got shape {x.shape}")
    pw = _weights(w, w_zero_point, group, w_bits)
    N, C, H, W = x.shape if layout == "NCHW" else (x.shape[0], x.shape[3], x.shape[1], x.shape[2])
    OC, Cg, KH, KW = pw.shape
    if C % group:
        raise ValueError(f"group={group} must divide the input channels C={C}")
    if C // group != Cg:
        raise ValueError(f"w has {Cg} input channels per group but x has C/group = {C}/{group} = {C // group}")
    ks = _int_tuple("kernel_shape", kernel_shape, 2, 1)
    if ks is not None and ks != (KH, KW):
        raise ValueError(f"kernel_shape={ks} differs from w's kernel ({KH}, {KW})")
    strides = _int_tuple("strides", strides, 2, 1) or (1, 1)
    dilations = _int_tuple("dilations", dilations, 2, 1) or (1, 1)
    p = _int_tuple("pads", pads, 4, 0)
    if auto_pad == "NOTSET":
        p = p or (0, 0, 0, 0)
    else:
        if p is not None and any(p):
            raise ValueError(f"pads={p} cannot be combined with auto_pad={auto_pad!r}")
        p = _auto_pads(auto_pad, (H, W), (KH, KW), strides, dilations)
    for axis, size, k, d, b, e in (("H", H, KH, dilations[0], p[0], p[2]),
                                   ("W", W, KW, dilations[1], p[1], p[3])):
        if size < 1:
            raise ValueError(f"x must have {axis} >= 1, got shape {x.shape}")
        if size + b + e < (k - 1) * d + 1:
            raise ValueError(f"the kernel ({k} taps, dilation {d}: {(k - 1) * d + 1}) is larger than the "
                             f"padded input along {axis} ({size} + pads {b}+{e})")
    za = _zero_point("x_zero_point", x_zero_point, x.dtype)
    xn = np.ascontiguousarray(x.transpose(0, 2, 3, 1) if layout == "NCHW" else x)
    return xn, za, pw, strides, p, dilations


def _auto_pads(auto_pad, hw, kernel, strides, dilations):
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    begin, end = [], []
    for size, k, s, d in zip(hw, kernel, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small = total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else total - small)
        end.append(total - small if auto_pad == "SAME_UPPER" else small)
    return tuple(begin + end)


def _bias(B, OC):
    return bias_array(B, OC, "B (bias)")


def _out(y, layout):
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if layout == "NCHW" else y


def conv_integer(x, w, x_zero_point=None, w_zero_point=None, *, auto_pad="NOTSET", dilations=None,
                 group=1, kernel_shape=None, pads=None, strides=None, layout="NCHW", w_bits=None):
    """ONNX ConvInteger: int32 ``sum (x - x_zero_point) * (w - w_zero_point)`` per output pixel.

    ``x`` [N, C, H, W] (or [N, H, W, C] with ``layout="NHWC"``) uint8/int8 with a
    scalar zero point; ``w`` [OC, C/group, KH, KW] uint8/int8 (or a
    :class:`PackedConvWeights`) with a scalar or [OC] zero point. Padding taps
    contribute 0 (the padding value is the input zero point). Wraps modulo 2^32.
    ``w_bits`` declares a low-bit width of an unpacked ``w``, and ``w`` may be a
    :class:`PackedInt4` (see :func:`pack_conv_weights`, docs/semantics.md 10.5).
    """
    xn, za, pw, st, p, dl = _prepare(x, w, x_zero_point, w_zero_point, auto_pad, dilations, group,
                                     kernel_shape, pads, strides, layout, w_bits)
    y = _core.qconv(xn, za, pw._core, st, p, dl, None, "int32", None, 0, 0, 0)
    return _out(y, layout)


def qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B=None, *,
                 auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None,
                 mode="fp32", clip=None, layout="NCHW", w_bits=None):
    """ONNX QLinearConv with a requant ``mode`` and a fused ``clip`` (docs/semantics.md section 10).

    Arguments in ONNX order and with ONNX attribute names. ``B`` is the optional
    int32 bias [OC]. ``w_scale``/``w_zero_point`` are scalars or [OC] (any per-channel
    zero points). The output has ``y_zero_point``'s dtype (a Python int means uint8).
    ``mode`` is one of fp32, q31, q31_single, pot; ``clip`` None, "relu", "relu6" or (lo, hi).
    ``w_bits`` and :class:`PackedInt4` weights work as in :func:`conv_integer`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    xn, za, pw, st, p, dl = _prepare(x, w, x_zero_point, w_zero_point, auto_pad, dilations, group,
                                     kernel_shape, pads, strides, layout, w_bits)
    OC = pw.OC
    x_s = _scale("x_scale", x_scale)
    w_s = _scale("w_scale", w_scale, n=OC)
    y_s = _scale("y_scale", y_scale)
    if isinstance(y_zero_point, (np.ndarray, np.generic)):
        y_dtype = np.asarray(y_zero_point).dtype
    elif isinstance(y_zero_point, numbers.Integral):
        y_dtype = np.dtype(np.uint8)
    else:
        raise TypeError(f"y_zero_point must be an integer (numpy uint8/int8 selects the output type), "
                        f"got {type(y_zero_point).__name__}")
    if y_dtype not in _RANGES:
        raise TypeError(f"y_zero_point must be uint8 or int8 (it sets the output dtype), got {y_dtype}")
    zy = _zero_point("y_zero_point", y_zero_point, y_dtype)
    lo, hi = activation_bounds(clip, float(y_s[0]), zy, y_dtype)
    rq = cached_requant(pw, mode, x_s, w_s, y_s, OC)
    y = _core.qconv(xn, za, pw._core, st, p, dl, _bias(B, OC), _DTYPE_NAMES[y_dtype], rq, zy, lo, hi)
    return _out(y, layout)
