"""Reference 2-D convolution (docs/semantics.md section 10): ONNX ConvInteger and
QLinearConv in NCHW, with a requant ``mode`` and a fused clip.

Plain numpy over exact int64: the input is padded with its zero point (so a
padding tap contributes (zx - zx) * w = 0), and for every kernel tap the
strided input window is multiplied with that tap's weights and summed. The exact
sum is reduced modulo 2^32 (wrap32) like every kernel's int32 accumulator.
"""
import math

import numpy as np

from .arith import wrap32
from .dtypes import check_int_array, check_scale, check_zero_point
from .requant import activation_bounds, derive_requant, requantize


def _pair(v, name, default, minimum):
    v = default if v is None else tuple(int(e) for e in v)
    if len(v) != 2:
        raise ValueError(f"{name} must have 2 entries (H, W), got {v}")
    if min(v) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def conv_output_shape(H, W, kernel_shape, pads, strides, dilations):
    """(OH, OW) = floor((H + pt + pb - ((KH-1)*dh + 1)) / sh) + 1, the same for W."""
    (KH, KW), (pt, pl, pb, pr) = kernel_shape, pads
    (sh, sw), (dh, dw) = strides, dilations
    eh, ew = (KH - 1) * dh + 1, (KW - 1) * dw + 1
    if H + pt + pb < eh or W + pl + pr < ew:
        raise ValueError(f"the (dilated) kernel {eh}x{ew} is larger than the padded input "
                         f"{H + pt + pb}x{W + pl + pr}")
    return (H + pt + pb - eh) // sh + 1, (W + pl + pr - ew) // sw + 1


def conv_accumulate(x, w, x_zero_point=None, w_zero_point=None, pads=None, strides=None,
                    dilations=None, group=1, bias=None):
    """The int32 accumulator of section 10.2, as int64 values in the int32 range.

    x [N, C, H, W] int8/uint8, w [OC, C/group, KH, KW] int8/uint8, x_zero_point a
    scalar, w_zero_point a scalar or [OC], pads (pt, pl, pb, pr), bias int32 [OC].
    Returns [N, OC, OH, OW].
    """
    x = check_int_array(x, "x")
    w = check_int_array(w, "w")
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"x and w must be 4-D (NCHW, [OC, C/group, KH, KW]), got {x.shape}, {w.shape}")
    N, C, H, W = x.shape
    OC, Cg, KH, KW = w.shape
    group = int(group)
    if group < 1 or C % group or OC % group or C // group != Cg:
        raise ValueError(f"group={group} does not fit x with C={C} and w {w.shape}")
    pads = (0, 0, 0, 0) if pads is None else tuple(int(p) for p in pads)
    if len(pads) != 4 or min(pads) < 0:
        raise ValueError(f"pads must be 4 non-negative values (pt, pl, pb, pr), got {pads}")
    strides = _pair(strides, "strides", (1, 1), 1)
    dilations = _pair(dilations, "dilations", (1, 1), 1)
    OH, OW = conv_output_shape(H, W, (KH, KW), pads, strides, dilations)
    zx = int(check_zero_point(x_zero_point, x.dtype.name, "x_zero_point")[0])
    zw = check_zero_point(w_zero_point, w.dtype.name, "w_zero_point", per_channel_len=OC)
    pt, pl, pb, pr = pads
    (sh, sw), (dh, dw) = strides, dilations

    # Padding (x - zx) with zeros is padding x with its zero point.
    xs = np.pad(x.astype(np.int64) - zx, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    ws = w.astype(np.int64) - zw.reshape(-1, 1, 1, 1)
    OCg = OC // group
    acc = np.zeros((N, OC, OH, OW), dtype=np.int64)
    for g in range(group):
        xg = xs[:, g * Cg:(g + 1) * Cg]
        wg = ws[g * OCg:(g + 1) * OCg]
        for kh in range(KH):
            for kw in range(KW):
                win = xg[:, :, kh * dh: kh * dh + (OH - 1) * sh + 1: sh,
                         kw * dw: kw * dw + (OW - 1) * sw + 1: sw]        # [N, Cg, OH, OW]
                acc[:, g * OCg:(g + 1) * OCg] += np.einsum("nchw,oc->nohw", win, wg[:, :, kh, kw])
    if bias is not None:
        b = np.asarray(bias)
        if b.dtype != np.int32:
            raise TypeError(f"bias must have dtype int32, got {b.dtype}")
        if b.shape != (OC,):
            raise ValueError(f"bias must have shape ({OC},), got {b.shape}")
        acc += b.astype(np.int64).reshape(1, OC, 1, 1)
    if Cg * KH * KW >= 2**46:
        raise ValueError("K too large for the exact int64 reference sum")
    return wrap32(acc)


def conv_integer(x, w, x_zero_point=None, w_zero_point=None, pads=None, strides=None,
                 dilations=None, group=1):
    """ONNX ConvInteger (NCHW): int32 acc of section 10.2 without bias."""
    return conv_accumulate(x, w, x_zero_point, w_zero_point, pads, strides, dilations,
                           group).astype(np.int32)


def qlinear_conv(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias=None, *,
                 kernel_shape=None, pads=None, strides=None, dilations=None, group=1,
                 mode="fp32", clip=None):
    """ONNX QLinearConv (NCHW) with a requant ``mode`` and a fused ``clip`` (section 10.3).

    The output dtype is y_zp's dtype (a numpy int8 or uint8 value).
    """
    if not isinstance(y_zp, (np.ndarray, np.generic)) or np.asarray(y_zp).dtype.name not in ("int8", "uint8"):
        raise TypeError("y_zp must be a numpy int8 or uint8 scalar (its dtype selects the output type)")
    out_dtype = np.asarray(y_zp).dtype
    w_arr = check_int_array(w, "w")
    if kernel_shape is not None and tuple(int(k) for k in kernel_shape) != tuple(w_arr.shape[2:]):
        raise ValueError(f"kernel_shape {tuple(kernel_shape)} differs from w's {w_arr.shape[2:]}")
    OC = w_arr.shape[0]
    check_scale(x_scale, "x_scale")
    check_scale(w_scale, "w_scale", per_channel_len=OC)
    zy = int(check_zero_point(y_zp, out_dtype.name, "y_zero_point")[0])
    acc = conv_accumulate(x, w_arr, x_zp, w_zp, pads, strides, dilations, group, bias)
    params = derive_requant(mode, x_scale, w_scale, y_scale)
    lo, hi = activation_bounds(clip, y_scale, y_zp, out_dtype.name)
    y = requantize(acc.transpose(0, 2, 3, 1), params, zy, lo, hi)   # channel = last axis
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)).astype(out_dtype)


def same_pads(auto_pad, in_hw, kernel_shape, strides, dilations):
    """ONNX auto_pad SAME_UPPER / SAME_LOWER / VALID as explicit (pt, pl, pb, pr)."""
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel_shape, strides, dilations):
        out = math.ceil(size / s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small = total // 2
        if auto_pad == "SAME_UPPER":
            begin.append(small), end.append(total - small)
        else:
            begin.append(total - small), end.append(small)
    return tuple(begin + end)
