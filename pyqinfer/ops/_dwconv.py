"""Depthwise 2-D convolution kernel (groups = C, one output channel per input
channel), NHWC. Private: :mod:`pyqinfer.ops.conv` dispatches depthwise layers here.

For each output pixel (n, oh, ow) and channel c (docs/semantics.md sections 2, 4, 10)::

    acc = wrap32( sum_{kh,kw} (x[n, ih, iw, c] - x_zp) * (w[c, 0, kh, kw] - w_zp[c]) + bias[c] )
    ih  = oh*stride_h - pad_top + kh*dil_h       iw = ow*stride_w - pad_left + kw*dil_w

Taps outside the input contribute 0 (the padding value is x_zp, i.e. real 0).
Then int32 output, or requantization with ``requant`` (a ``_core.RequantParams``
with C channels, from :func:`derive_requant`) and the clamp ``[lo, hi]``.

>>> import numpy as np
>>> x = np.ones((1, 3, 3, 2), np.uint8); w = pack_depthwise_weights(np.ones((2, 1, 3, 3), np.int8))
>>> depthwise_conv_nhwc(x, 0, w, None, "int32", None, 0, 0, 0, None, (1, 1), (1, 1, 1, 1), (1, 1))[0, :, :, 0]
array([[4, 6, 4],
       [6, 9, 6],
       [4, 6, 4]], dtype=int32)
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _core
from ._checks import _RANGES, _int8_array, _scale, _zero_point

_OUT_DTYPES = ("int32", "uint8", "int8")


class DepthwiseWeights:
    """Depthwise weights [C, 1, KH, KW] (ONNX layout, uint8 or int8) packed once.

    ``w_zero_point`` is a scalar or C values in w's dtype. The packed form is
    int32 ``w - w_zero_point`` laid out [tap][C] (``packed_bytes`` of it).
    """

    def __init__(self, w, w_zero_point=None):
        w = _int8_array("w", w)
        if w.ndim != 4 or w.shape[1] != 1:
            raise ValueError(f"w must be 4-D [C, 1, KH, KW] (depthwise, groups = C), got shape {w.shape}")
        if 0 in w.shape:
            raise ValueError(f"w must have C, KH, KW > 0, got shape {w.shape}")
        self.dtype = w.dtype
        self.shape = w.shape
        zp = _zero_point("w_zero_point", w_zero_point, w.dtype, n=w.shape[0])
        self.zero_point = zp
        zps = np.atleast_1d(np.asarray(zp, dtype=np.int32))
        self._core = _core.pack_dw_weights(np.ascontiguousarray(w), np.ascontiguousarray(zps))

    @property
    def C(self):
        return self.shape[0]

    @property
    def kernel(self):
        return self.shape[2], self.shape[3]

    @property
    def packed_bytes(self):
        return self._core.packed_bytes

    def __repr__(self):
        zp = "per-channel" if isinstance(self.zero_point, np.ndarray) else self.zero_point
        return f"DepthwiseWeights(C={self.C}, kernel={self.kernel}, dtype={self.dtype}, zero_point={zp})"


def pack_depthwise_weights(w, w_zero_point=None):
    """Pack depthwise weights ``w`` [C, 1, KH, KW] with their zero point (scalar or per channel)."""
    return DepthwiseWeights(w, w_zero_point)


def derive_requant(mode, x_scale, w_scale, y_scale, C):
    """``_core.RequantParams`` for C channels (``w_scale`` scalar or C values); see semantics section 4."""
    x_s = _scale("x_scale", x_scale)
    w_s = _scale("w_scale", w_scale, n=C)
    y_s = _scale("y_scale", y_scale)
    return _core.derive_requant(mode, float(x_s[0]), w_s, float(y_s[0]), C)


def _pair(name, v, n):
    if type(v) in (tuple, list) and len(v) == n and all(type(i) is int for i in v):
        return list(v)  # the common case, without the Integral ABC checks (a few us per call)
    try:
        vals = tuple(v)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of {n} integers, got {v!r}") from None
    if len(vals) != n or not all(isinstance(i, numbers.Integral) for i in vals):
        raise ValueError(f"{name} must be {n} integers, got {v!r}")
    return [int(i) for i in vals]


def _int_zero_point(name, zp, dtype):
    """_zero_point for a scalar, with a fast path for a Python int in range."""
    if type(zp) is int:
        lo, hi = _RANGES[dtype]
        if lo <= zp <= hi:
            return zp
    return _zero_point(name, zp, dtype)


def depthwise_conv_nhwc(x_nhwc, x_zp, packed_w, bias, out_dtype, requant, y_zp, lo, hi,
                        kernel, strides, pads, dilations):
    """Depthwise convolution of ``x_nhwc`` [N, H, W, C] (uint8/int8) with ``packed_w``.

    ``x_zp``: int in x's range. ``packed_w``: :class:`DepthwiseWeights`.
    ``bias``: None or int32 [C]. ``out_dtype``: "int32", "uint8" or "int8";
    for 8-bit output ``requant`` is a ``_core.RequantParams`` of C channels
    (:func:`derive_requant`), ``y_zp`` the output zero point and ``[lo, hi]``
    the clamp (output dtype range intersected with a fused clip); they are
    ignored for int32. ``kernel``: None or (KH, KW), checked against the
    weights. ``strides``, ``dilations``: (h, w), each >= 1. ``pads``: ONNX
    order (top, left, bottom, right), each >= 0. Returns NHWC
    [N, OH, OW, C] with OH = (H + top + bottom - dil_h*(KH-1) - 1) // stride_h + 1.
    """
    x = _int8_array("x_nhwc", x_nhwc)
    if x.ndim != 4:
        raise ValueError(f"x_nhwc must be 4-D [N, H, W, C], got shape {x.shape}")
    if not isinstance(packed_w, DepthwiseWeights):
        raise TypeError(f"packed_w must be DepthwiseWeights (pack_depthwise_weights), got {type(packed_w).__name__}")
    C = packed_w.C
    if x.shape[3] != C:
        raise ValueError(f"x_nhwc has {x.shape[3]} channels but the depthwise weights have C={C}")
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"x_nhwc must have H, W >= 1, got shape {x.shape}")
    za = _int_zero_point("x_zp", x_zp, x.dtype)
    if kernel is not None and tuple(_pair("kernel", kernel, 2)) != packed_w.kernel:
        raise ValueError(f"kernel={tuple(kernel)} does not match the weights' kernel {packed_w.kernel}")
    strides = _pair("strides", strides, 2)
    pads = _pair("pads", pads, 4)
    dilations = _pair("dilations", dilations, 2)
    if min(strides) < 1:
        raise ValueError(f"strides must be >= 1, got {strides}")
    if min(dilations) < 1:
        raise ValueError(f"dilations must be >= 1, got {dilations}")
    if min(pads) < 0:
        raise ValueError(f"pads must be >= 0, got {pads}")
    for axis, size, k, s, p0, p1, d in (("H", x.shape[1], packed_w.kernel[0], strides[0], pads[0], pads[2], dilations[0]),
                                        ("W", x.shape[2], packed_w.kernel[1], strides[1], pads[1], pads[3], dilations[1])):
        if size + p0 + p1 < d * (k - 1) + 1:
            raise ValueError(f"the dilated kernel ({d * (k - 1) + 1}) is larger than the padded input along {axis} "
                             f"({size + p0 + p1})")
    if bias is not None:
        b = np.asarray(bias)
        if b.dtype != np.int32:
            raise TypeError(f"bias must be int32 (scale x_scale*w_scale, zero point 0), got {b.dtype}")
        if b.shape != (C,):
            raise ValueError(f"bias must have shape ({C},), got {b.shape}")
        bias = np.ascontiguousarray(b)
    if out_dtype not in _OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {_OUT_DTYPES}, got {out_dtype!r}")
    if out_dtype == "int32":
        requant, y_zp, lo, hi = None, 0, 0, 0
    else:
        if not isinstance(requant, _core.RequantParams):
            raise TypeError("requant must be a _core.RequantParams (derive_requant) for 8-bit output")
        qmin, qmax = _RANGES[np.dtype(out_dtype)]
        zy = _int_zero_point("y_zp", y_zp, np.dtype(out_dtype))
        if not (qmin <= int(lo) <= int(hi) <= qmax):
            raise ValueError(f"lo={lo}, hi={hi} must satisfy {qmin} <= lo <= hi <= {qmax} for {out_dtype}")
        y_zp, lo, hi = zy, int(lo), int(hi)
    return _core.dwconv_nhwc(np.ascontiguousarray(x), za, packed_w._core, bias, out_dtype, requant, y_zp, lo, hi,
                             strides, pads, dilations)
