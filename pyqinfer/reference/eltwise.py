"""Pooling, quantized add, concat, clip and requantize (docs/semantics.md section 11).

One small function per op, plain numpy. Integer arithmetic is exact (int64 /
Python ints); float32 arithmetic is numpy float32, one RNE rounding per
operation, exactly where the contract says fl32. Pools take 4-D tensors,
NCHW by default or NHWC with layout="NHWC".
"""
import math

import numpy as np

from .arith import mbqm_double, quantize_multiplier, rne
from .dtypes import check_scale, check_zero_point, dtype_range
from .quant import dequantize_linear, quantize_linear
from .requant import activation_bounds, derive_requant, requantize

f32 = np.float32

ADD_RULES = ("onnxruntime", "tflite", "xnnpack")


# ----------------------------------------------------------------- helpers

def _int8_tensor(x, name):
    x = np.asarray(x)
    if x.dtype.name not in ("int8", "uint8"):
        raise TypeError(f"{name} must have dtype int8 or uint8, got {x.dtype}")
    return x


def _zp(zp, dtype, name):
    return int(check_zero_point(zp, np.dtype(dtype).name, name)[0])


def _scale(s, name):
    return f32(check_scale(s, name)[0])


def _to_nhwc(x, layout):
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D ({layout}), got shape {x.shape}")
    return x if layout == "NHWC" else x.transpose(0, 2, 3, 1)


def _from_nhwc(y, layout):
    return y if layout == "NHWC" else y.transpose(0, 3, 1, 2)


def _out_size(n, p0, p1, e, s, ceil_mode):
    """Output length along one axis (docs/semantics.md 11.1)."""
    span = n + p0 + p1 - e
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1  # ceil
    if (out - 1) * s >= n + p0:  # the last window would start in the bottom/right padding: dropped
        out -= 1
    return out


def pool_geometry(H, W, kernel_shape, strides=None, pads=None, dilations=None, ceil_mode=0):
    """Validated 2-D pooling geometry -> (kh, kw, sh, sw, pt, pl, dh, dw, OH, OW).

    pads are ONNX order [top, left, bottom, right]; with e = (k - 1) * d + 1,
    out = floor((H + pt + pb - e) / s) + 1 (ceil_mode 0) or ceil(...) + 1
    minus one if the last window would start in the bottom/right padding
    (ceil_mode 1). Every pad must be smaller than the dilated kernel extent,
    and every window must hold at least one tap inside the image.
    """
    def pair(v, name, default):
        v = default if v is None else v
        v = [int(t) for t in v]
        if len(v) != 2:
            raise ValueError(f"{name} must have 2 entries, got {v}")
        return v

    kh, kw = pair(kernel_shape, "kernel_shape", None)
    sh, sw = pair(strides, "strides", [1, 1])
    dh, dw = pair(dilations, "dilations", [1, 1])
    if pads is None:
        pads = [0, 0, 0, 0]
    pads = [int(t) for t in pads]
    if len(pads) != 4:
        raise ValueError(f"pads must have 4 entries [top, left, bottom, right], got {pads}")
    if min(kh, kw) < 1 or min(sh, sw) < 1 or min(dh, dw) < 1:
        raise ValueError("kernel_shape, strides and dilations must be >= 1")
    pt, pl, pb, pr = pads
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if min(pads) < 0 or max(pt, pb) >= eh or max(pl, pr) >= ew:
        raise ValueError(f"pads must lie in [0, dilated kernel size), got {pads}")
    if ceil_mode not in (0, 1, False, True):
        raise ValueError(f"ceil_mode must be 0 or 1, got {ceil_mode!r}")
    if H + pt + pb < eh or W + pl + pr < ew:
        raise ValueError(f"the (padded) input {H}x{W} is smaller than the kernel")
    OH = _out_size(H, pt, pb, eh, sh, ceil_mode)
    OW = _out_size(W, pl, pr, ew, sw, ceil_mode)
    if OH < 1 or OW < 1:
        raise ValueError(f"the (padded) input {H}x{W} is smaller than the kernel")
    for O, s, p, k, d, n, what in ((OH, sh, pt, kh, dh, H, "row"), (OW, sw, pl, kw, dw, W, "column")):
        for o in range(O):
            if not any(0 <= o * s - p + i * d < n for i in range(k)):
                raise ValueError(f"output {what} {o} has no kernel tap inside the input")
    return kh, kw, sh, sw, pt, pl, dh, dw, OH, OW


def _taps(o, s, p, k, d, n):
    """Input indices of the in-bounds taps of output index o, in tap order."""
    return [o * s - p + i * d for i in range(k) if 0 <= o * s - p + i * d < n]


# ----------------------------------------------------------------- max pool

def max_pool(x, kernel_shape, strides=None, pads=None, dilations=None, layout="NCHW", ceil_mode=0):
    """ONNX MaxPool on int8/uint8: max over the in-bounds taps (ceil_mode: 11.1).

    Padding never participates. The output keeps x's dtype, scale and zero point.
    """
    x = _int8_tensor(x, "x")
    xh = _to_nhwc(x, layout)
    N, H, W, C = xh.shape
    kh, kw, sh, sw, pt, pl, dh, dw, OH, OW = pool_geometry(H, W, kernel_shape, strides, pads, dilations, ceil_mode)
    y = np.empty((N, OH, OW, C), x.dtype)
    for oh in range(OH):
        rows = _taps(oh, sh, pt, kh, dh, H)
        for ow in range(OW):
            cols = _taps(ow, sw, pl, kw, dw, W)
            y[:, oh, ow, :] = xh[:, rows][:, :, cols].max(axis=(1, 2))
    return _from_nhwc(y, layout)


# ----------------------------------------------------------------- average pools

def _gap_scale(x_scale, y_scale, count):
    """S = fl32(s_x / fl32(s_y * fl32(count))) (ORT MLAS QLinearGlobalAveragePool)."""
    with np.errstate(over="ignore", under="ignore"):
        S = f32(x_scale) / (f32(y_scale) * f32(count))
    if not np.isfinite(S):
        raise ValueError("s_x / (s_y * count) overflows float32")
    return S


def _gap_nhwc(xh, x_scale, zx, y_scale, zy):
    N, H, W, C = xh.shape
    count = H * W
    if count >= 2**24:
        raise ValueError(f"global average pool over {count} >= 2^24 elements is not supported")
    S = _gap_scale(x_scale, y_scale, count)
    acc = xh.astype(np.int64).sum(axis=(1, 2)) - zx * count  # exact, |acc| < 2^32
    acc_f32 = acc.astype(np.float64).astype(f32)  # one RNE rounding
    lo, hi = dtype_range(xh.dtype.name)
    with np.errstate(over="ignore"):
        v = (acc_f32 * S).astype(np.float64)
    v = np.clip(v, lo - zy, hi - zy)
    return (np.rint(v).astype(np.int64) + zy).astype(xh.dtype).reshape(N, 1, 1, C)


def qlinear_global_average_pool(x, x_scale, x_zero_point, y_scale, y_zero_point, layout="NCHW"):
    """com.microsoft QLinearGlobalAveragePool (ORT MLAS), count = H*W:

    acc = sum(x) - zx * count (exact); S = fl32(s_x / fl32(s_y * fl32(count)));
    y = clamp(zy + RNE(fl32(fl32(acc) * S))). Output [N, C, 1, 1] (or NHWC).
    """
    x = _int8_tensor(x, "x")
    xh = _to_nhwc(x, layout)
    sx, sy = _scale(x_scale, "x_scale"), _scale(y_scale, "y_scale")
    zx, zy = _zp(x_zero_point, x.dtype, "x_zero_point"), _zp(y_zero_point, x.dtype, "y_zero_point")
    return _from_nhwc(_gap_nhwc(xh, sx, zx, sy, zy), layout)


def qlinear_average_pool(x, x_scale, x_zero_point, y_scale, y_zero_point, kernel_shape,
                         strides=None, pads=None, count_include_pad=0, layout="NCHW", ceil_mode=0):
    """com.microsoft QLinearAveragePool exactly as ORT computes it (float32 path):

    d = fl32(s_x * fl32(x - zx)) per element; acc = fl32 running sum over the
    in-bounds taps, kernel row by row (h outer, w inner); count = kh*kw if
    count_include_pad (also for a ceil_mode window past the padding) else the
    number of in-bounds taps;
    y = clamp(RNE(fl32(fl32(fl32(acc / fl32(count)) / s_y) + fl32(zy)))).
    Exception (ORT's fallback): a kernel equal to the whole image with all
    pads 0 is qlinear_global_average_pool.
    """
    x = _int8_tensor(x, "x")
    xh = _to_nhwc(x, layout)
    N, H, W, C = xh.shape
    sx, sy = _scale(x_scale, "x_scale"), _scale(y_scale, "y_scale")
    zx, zy = _zp(x_zero_point, x.dtype, "x_zero_point"), _zp(y_zero_point, x.dtype, "y_zero_point")
    kh, kw, sh, sw, pt, pl, _, _, OH, OW = pool_geometry(H, W, kernel_shape, strides, pads, None, ceil_mode)
    if (kh, kw) == (H, W) and not any(pads or ()):
        return _from_nhwc(_gap_nhwc(xh, sx, zx, sy, zy), layout)
    d = (sx * (xh.astype(np.int64) - zx).astype(f32)).astype(f32)
    lo, hi = dtype_range(x.dtype.name)
    y = np.empty((N, OH, OW, C), x.dtype)
    for oh in range(OH):
        rows = _taps(oh, sh, pt, kh, 1, H)
        for ow in range(OW):
            cols = _taps(ow, sw, pl, kw, 1, W)
            acc = np.zeros((N, C), f32)
            for r in rows:
                for c in cols:
                    acc = acc + d[:, r, c, :]  # float32 + float32: one rounding
            count = kh * kw if count_include_pad else len(rows) * len(cols)
            with np.errstate(over="ignore"):
                v = (acc / f32(count)) / sy + f32(zy)
            assert v.dtype == f32
            y[:, oh, ow, :] = np.clip(np.rint(v.astype(np.float64)), lo, hi)
    return _from_nhwc(y, layout)


# ----------------------------------------------------------------- add

def _add_inputs(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale, c_zero_point):
    a, b = _int8_tensor(a, "a"), _int8_tensor(b, "b")
    if a.dtype != b.dtype:
        raise TypeError(f"a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"b must have a shape that broadcasts with a's: {a.shape} and {b.shape}") from None
    sa, sb, sc = _scale(a_scale, "a_scale"), _scale(b_scale, "b_scale"), _scale(c_scale, "c_scale")
    za, zb, zc = (_zp(a_zero_point, a.dtype, "a_zero_point"), _zp(b_zero_point, a.dtype, "b_zero_point"),
                  _zp(c_zero_point, a.dtype, "c_zero_point"))
    return a, sa, za, b, sb, zb, sc, zc


def ort_add_form(a_shape, b_shape):
    """Which of MLAS's QLinearAdd formulas ONNX Runtime's broadcaster runs for these
    shapes (docs/semantics.md 11.4): "general" (both inputs vary along the span),
    "b_scalar" (b is constant along the span) or "a_scalar" (a is; ORT then swaps
    the operands). ORT decides it from the innermost dimension of the common
    (trailing) rank whose broadcast size exceeds 1, or the outermost common one when
    none does; an input is "scalar" when its size there is 1 (a 0-d input always is).
    Input 0 is tested first."""
    a_shape, b_shape = tuple(a_shape), tuple(b_shape)
    if not a_shape:
        return "a_scalar"
    if not b_shape:
        return "b_scalar" if a_shape[-1] > 1 else "a_scalar"
    m = min(len(a_shape), len(b_shape))
    for i in range(1, m + 1):
        da, db = a_shape[-i], b_shape[-i]
        use = min(da, db) if min(da, db) == 0 else max(da, db)
        if use <= 1 and i < m:
            continue
        break
    if da <= 1:
        return "a_scalar"
    if db <= 1:
        return "b_scalar"
    return "general"


def add_params(rule, a_scale, b_scale, c_scale, a_zero_point=0, b_zero_point=0, c_zero_point=0):
    """The integer/float parameters of an add rule (docs/semantics.md 11.3), as a dict."""
    sa, sb, sc = f32(a_scale), f32(b_scale), f32(c_scale)
    if rule == "onnxruntime":
        with np.errstate(over="ignore", under="ignore"):
            rA, rB = sa / sc, sb / sc
        if not (np.isfinite(rA) and np.isfinite(rB)):
            raise ValueError("a_scale/c_scale or b_scale/c_scale overflows float32")
        # F = fl32(zc - fma(rA, za, fl32(rB * zb))): ORT's AVX2 kernel as GCC contracts it
        t = f32(rB * f32(b_zero_point))
        inner = _fma(rA, f32(a_zero_point), t)
        F = f32(f32(c_zero_point) - inner)
        return {"rA": rA, "rB": rB, "F": F}
    if rule == "tflite":
        twice_max = 2.0 * max(float(sa), float(sb))
        m_a, s_a = quantize_multiplier(float(sa) / twice_max)
        m_b, s_b = quantize_multiplier(float(sb) / twice_max)
        m_o, s_o = quantize_multiplier(twice_max / (2.0**20 * float(sc)))
        if s_o > 30:
            raise ValueError("tflite add: output multiplier too large (max(a_scale, b_scale)/c_scale >= 2^49)")
        return {"m_a": m_a, "sh_a": s_a, "m_b": m_b, "sh_b": s_b, "m_o": m_o, "sh_o": s_o}
    if rule == "xnnpack":
        with np.errstate(over="ignore", under="ignore"):
            rA, rB = sa / sc, sb / sc
        for r, name in ((rA, "a_scale/c_scale"), (rB, "b_scale/c_scale")):
            if not (2.0**-10 <= r < 2.0**8):
                raise ValueError(f"xnnpack add needs {name} in [2^-10, 2^8), got {float(r)!r}")
        e = math.frexp(float(max(rA, rB)))[1] - 1  # unbiased exponent of the larger ratio
        shift = 20 - e  # in [13, 30]
        m_a = rne(float(rA) * 2.0**shift)  # exact power-of-two scaling, then lrintf (RNE)
        m_b = rne(float(rB) * 2.0**shift)
        bias = (1 << (shift - 1)) - m_a * int(a_zero_point) - m_b * int(b_zero_point)
        return {"m_a": m_a, "m_b": m_b, "shift": shift, "bias": bias}
    raise ValueError(f"rule must be one of {ADD_RULES}, got {rule!r}")


def _fma(a, b, c):
    """fl32(a * b + c) with one rounding (float32 fused multiply-add), exactly.

    a*b is exact in double; s = fl64(a*b + c) and its exact error e (TwoSum)
    give the exact value s + e. Rounding s to float32 is then correct unless
    s lies exactly halfway between two float32 values and e != 0 (double
    rounding); in that case the neighbour on e's side is the answer.
    """
    a, b, c = (np.asarray(v, f32).astype(np.float64) for v in (a, b, c))
    p = a * b  # exact: 24 + 24 bits
    s = p + c
    bb = s - p
    e = (p - (s - bb)) + (c - bb)  # TwoSum: p + c == s + e exactly
    with np.errstate(over="ignore"):
        r = s.astype(f32)
        toward = np.nextafter(r, np.where(s > r.astype(np.float64), f32(np.inf), f32(-np.inf)).astype(f32))
    tie = (r.astype(np.float64) + toward.astype(np.float64)) / 2 == s
    fix = tie & (e != 0)
    if np.any(fix):
        # the true value is on e's side of the midpoint s: the float32 neighbour of s there
        side = np.where(e > 0, np.maximum(r, toward), np.minimum(r, toward))
        r = np.where(fix, side, r).astype(f32)
    return r if r.ndim else f32(r)


def qlinear_add(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale, c_zero_point,
                rule="onnxruntime", clip=None):
    """Quantized add C = A + B with a named rule (docs/semantics.md 11.4).

    a and b broadcast (ONNX multidirectional / numpy rules); the output has the
    broadcast shape and a's dtype. For rule "onnxruntime" the shapes also select
    ORT's formula (ort_add_form). clip: None, 'relu', 'relu6' or (lo, hi), as
    activation_bounds (section 4.6).
    """
    a, sa, za, b, sb, zb, sc, zc = _add_inputs(a, a_scale, a_zero_point, b, b_scale, b_zero_point,
                                               c_scale, c_zero_point)
    lo, hi = activation_bounds(clip, sc, np.asarray(zc).astype(a.dtype), a.dtype.name)
    p = add_params(rule, sa, sb, sc, za, zb, zc)
    out_shape = np.broadcast_shapes(a.shape, b.shape)
    av = np.broadcast_to(a, out_shape).astype(np.int64)
    bv = np.broadcast_to(b, out_shape).astype(np.int64)
    if rule == "onnxruntime":
        af, bf = av.astype(f32), bv.astype(f32)
        if ort_add_form(a.shape, b.shape) != "a_scalar":
            # "general" and "b_scalar" (the kernel folds b into the constant, FMA-contracted) agree
            v = _fma(af, p["rA"], _fma(bf, p["rB"], np.full(out_shape, p["F"], f32)))
        else:
            # a is the span's scalar: ORT swaps the operands, so F, rA and rB swap roles too
            q = add_params(rule, sb, sa, sc, zb, za, zc)
            v = _fma(bf, q["rA"], _fma(af, q["rB"], np.full(out_shape, q["F"], f32)))
        r = np.clip(np.asarray(v, np.float64), lo, hi)
        return np.asarray(np.rint(r)).astype(np.int64).astype(a.dtype).reshape(out_shape)
    if rule == "tflite":
        va = (av - za) * (1 << 20)
        vb = (bv - zb) * (1 << 20)
        sa_ = mbqm_double(va, p["m_a"], p["sh_a"])
        sb_ = mbqm_double(vb, p["m_b"], p["sh_b"])
        r = mbqm_double(sa_ + sb_, p["m_o"], p["sh_o"]) + zc
        return np.asarray(np.clip(r, lo, hi)).astype(a.dtype).reshape(out_shape)
    # xnnpack
    acc = p["bias"] + av * p["m_a"] + bv * p["m_b"]
    r = (acc >> p["shift"]) + zc
    return np.asarray(np.clip(r, lo, hi)).astype(a.dtype).reshape(out_shape)


# ----------------------------------------------------------------- concat

def requantize_tensor(x, x_scale, x_zero_point, y_scale, y_zero_point):
    """ORT's QLinearConcat / lookup-table requantization of an 8-bit tensor:
    y = quantize_linear(dequantize_linear(x, s_x, zx), s_y, zy, rule='onnx'),
    i.e. sat(RNE(fl32(fl32(s_x * fl32(x - zx)) / s_y)) + zy). Identical
    (scale, zero point) is a plain copy."""
    x = _int8_tensor(x, "x")
    if f32(x_scale) == f32(y_scale) and int(x_zero_point) == int(y_zero_point):
        return x.copy()
    d = dequantize_linear(x, x_scale, np.asarray(x_zero_point).astype(x.dtype))
    return quantize_linear(d, y_scale, np.asarray(y_zero_point).astype(x.dtype), rule="onnx")


def qlinear_concat(y_scale, y_zero_point, inputs, axis):
    """com.microsoft QLinearConcat: inputs is a list of (x, x_scale, x_zero_point);
    each is requantized to (y_scale, y_zero_point) by requantize_tensor and the
    results are concatenated along axis (negative counts from the end)."""
    if not inputs:
        raise ValueError("inputs must not be empty")
    dt = _int8_tensor(inputs[0][0], "inputs[0]").dtype
    sy, zy = _scale(y_scale, "y_scale"), _zp(y_zero_point, dt, "y_zero_point")
    parts = []
    for i, (x, s, z) in enumerate(inputs):
        x = _int8_tensor(x, f"inputs[{i}]")
        if x.dtype != dt:
            raise TypeError(f"inputs[{i}] has dtype {x.dtype}, expected {dt}")
        parts.append(requantize_tensor(x, _scale(s, f"x_scale[{i}]"), _zp(z, dt, f"x_zero_point[{i}]"), sy, zy))
    return np.concatenate(parts, axis=axis)


# ----------------------------------------------------------------- clip, requantize

def clip(x, lo, hi):
    """Integer-domain clip: min(max(x, lo), hi), lo <= hi in x's dtype range."""
    x = _int8_tensor(x, "x")
    qmin, qmax = dtype_range(x.dtype.name)
    lo, hi = int(lo), int(hi)
    if not qmin <= lo <= hi <= qmax:
        raise ValueError(f"need {qmin} <= lo <= hi <= {qmax}, got lo={lo}, hi={hi}")
    return np.clip(x.astype(np.int64), lo, hi).astype(x.dtype)


def relu(x, zero_point):
    """Quantized ReLU: max(x, zero_point) (real 0 is the zero point)."""
    x = _int8_tensor(x, "x")
    qmin, qmax = dtype_range(x.dtype.name)
    return clip(x, max(qmin, int(zero_point)), qmax)


def requantize_int32(x, x_scale, y_scale, y_zero_point, mode="fp32", clip=None):
    """int32 -> int8/uint8 with a new scale: section 4 with acc = x and the
    effective scale from derive_requant(mode, 1, x_scale, y_scale), i.e.
    S = fl32(s_x / s_y) (fl32(1 * s_x) = s_x) or M = f64(s_x) / f64(s_y).
    x_scale is a scalar or per channel along the last axis. Output dtype =
    y_zero_point's numpy dtype."""
    x = np.asarray(x)
    if x.dtype != np.int32:
        raise TypeError(f"x must be int32, got {x.dtype}")
    if not isinstance(y_zero_point, (np.ndarray, np.generic)) or \
            np.asarray(y_zero_point).dtype.name not in ("int8", "uint8"):
        raise TypeError("y_zero_point must be a numpy int8 or uint8 value (it sets the output dtype)")
    out_dt = np.asarray(y_zero_point).dtype
    zy = _zp(y_zero_point, out_dt, "y_zero_point")
    params = derive_requant(mode, 1.0, x_scale, y_scale)
    lo, hi = activation_bounds(clip, y_scale, y_zero_point, out_dt.name)
    return requantize(x, params, zy, lo, hi).astype(out_dt)
