"""Requantization modes: int32 accumulator -> output quantized value.

docs/semantics.md section 4. One class per mode; each has
  derive(x_scale, w_scale, y_scale) -> RequantParams
  apply(acc, params, y_zero_point, lo, hi) -> int64 array  (already clamped)
and `requantize` dispatches on params.mode. The channel is the last axis of
acc; per-tensor params (length 1) broadcast over it.
"""
from dataclasses import dataclass
import math

import numpy as np

from .arith import INT32_MAX, INT32_MIN, mbqm_double, mbqm_single, quantize_multiplier, rne
from .dtypes import check_scale, check_zero_point, dtype_name, dtype_range, storage_dtype

MODES = ("fp32", "q31", "q31_single", "pot")


@dataclass(frozen=True, eq=False)
class RequantParams:
    """Per-channel requantization parameters (length 1 for per-tensor).

    Fields a mode does not use are None:
      fp32:            scale (float32)
      q31, q31_single: multiplier (int64, in [0, 2^31-1]) and shift (int64,
                       TFLite convention: positive = left, in [-31, 30])
      pot:             scale (float32, = 2^-right_shift) and right_shift (int64)
    """

    mode: str
    scale: np.ndarray = None
    multiplier: np.ndarray = None
    shift: np.ndarray = None
    right_shift: np.ndarray = None

    @property
    def channels(self):
        for arr in (self.scale, self.multiplier, self.right_shift):
            if arr is not None:
                return len(arr)
        raise ValueError("empty RequantParams")


def _scales(x_scale, w_scale, y_scale):
    """Validated float32 scales: s_x [1], s_w [C], s_y [1]."""
    sx = check_scale(x_scale, "x_scale")
    sw = np.asarray(w_scale)
    sw = check_scale(w_scale, "w_scale", per_channel_len=sw.size if sw.ndim == 1 else None)
    sy = check_scale(y_scale, "y_scale")
    return sx, sw, sy


def effective_scale_f32(x_scale, w_scale, y_scale):
    """S[c] = fl32(fl32(s_x * s_w[c]) / s_y), each op a float32 op rounded RNE.

    S may underflow to a subnormal or to 0 (then every output is the zero
    point); an S that overflows to inf is rejected.
    """
    sx, sw, sy = _scales(x_scale, w_scale, y_scale)
    with np.errstate(over="ignore", under="ignore"):
        s = (sx[0] * sw) / sy[0]  # float32 * float32 array -> float32 array
    assert s.dtype == np.float32
    if not np.all(np.isfinite(s)):
        raise ValueError(f"effective scale s_x*s_w/s_y overflows float32: {s.tolist()}")
    return s


def effective_scale_f64(x_scale, w_scale, y_scale):
    """M[c] = f64(s_x) * f64(s_w[c]) / f64(s_y) in double (TFLite's order).

    The product of two float32 values is exact in double; the division rounds once.
    """
    sx, sw, sy = _scales(x_scale, w_scale, y_scale)
    return [float(sx[0]) * float(w) / float(sy[0]) for w in sw]


def _clamp(r, y_zero_point, lo, hi):
    """y = clamp(zp + r, lo, hi) on exact integers (int64 or object arrays)."""
    y = np.minimum(np.maximum(r + y_zero_point, lo), hi)
    return np.asarray(y).astype(np.int64)


def _per_channel(acc, params, fn):
    """Apply fn(acc_slice, c) channel by channel along the last axis."""
    out = np.empty(acc.shape, dtype=np.int64)
    if params.channels == 1:
        out[...] = fn(acc, 0)
    else:
        for c in range(params.channels):
            out[..., c] = fn(acc[..., c], c)
    return out


class Fp32Requant:
    """fp32 (ORT MLAS, XNNPACK, FBGEMM with int32 bias).

    r = RNE(fl32(fl32(acc) * S[c])). numpy float32 arithmetic is IEEE binary32
    with RNE, so this is exact by definition. int32 -> float32: going through
    float64 is exact for |acc| < 2^53, so only the float64 -> float32 step rounds.
    Clamping in float before RNE equals clamping after, because lo - zp and
    hi - zp are integers (and exactly representable in float64); it also
    turns an infinite product into the bound.
    """

    name = "fp32"

    @staticmethod
    def derive(x_scale, w_scale, y_scale):
        return RequantParams("fp32", scale=effective_scale_f32(x_scale, w_scale, y_scale))

    @staticmethod
    def apply(acc, params, y_zero_point, lo, hi):
        acc_f32 = acc.astype(np.float64).astype(np.float32)

        def one(a, c):
            with np.errstate(over="ignore"):
                p = (a * params.scale[c]).astype(np.float64)  # float32 product, widened exactly
            p = np.clip(p, lo - y_zero_point, hi - y_zero_point)
            return np.rint(p).astype(np.int64) + y_zero_point

        return _per_channel(acc_f32, params, one)


def _derive_q31(mode, x_scale, w_scale, y_scale):
    ms, shs = [], []
    for M in effective_scale_f64(x_scale, w_scale, y_scale):
        m, sh = quantize_multiplier(M)
        if sh > 30:
            raise ValueError(
                f"effective scale s_x*s_w/s_y = {M!r} too large for {mode}; must be < 2^30"
            )
        ms.append(m)
        shs.append(sh)
    return RequantParams(mode, multiplier=np.array(ms, np.int64), shift=np.array(shs, np.int64))


class Q31Requant:
    """q31 (gemmlowp / TFLite reference kernels): double rounding.

    r = RoundingDivideByPOT(SRDHM(wrap32(acc * 2^left), m), right),
    left = max(sh, 0), right = max(-sh, 0). See arith.mbqm_double.
    """

    name = "q31"
    mbqm = staticmethod(mbqm_double)

    @classmethod
    def derive(cls, x_scale, w_scale, y_scale):
        return _derive_q31(cls.name, x_scale, w_scale, y_scale)

    @classmethod
    def apply(cls, acc, params, y_zero_point, lo, hi):
        def one(a, c):
            r = cls.mbqm(a, params.multiplier[c], params.shift[c])
            return _clamp(r, y_zero_point, lo, hi)

        return _per_channel(acc, params, one)


class Q31SingleRequant(Q31Requant):
    """q31_single (ruy / TFLite with TFLITE_SINGLE_ROUNDING): single rounding.

    Same (m, sh) as q31; r = floor((acc * m + 2^(30 - sh)) / 2^(31 - sh)).
    See arith.mbqm_single.
    """

    name = "q31_single"
    mbqm = staticmethod(mbqm_single)


class PotRequant:
    """pot: S[c] (derived as in fp32) is exactly 2^-rs; r is a rounding shift.

    rs >= 1: r = (acc + 2^(rs-1)) >> rs   (round half up)
    rs <= 0: r = acc * 2^(-rs)            (exact)
    """

    name = "pot"

    @staticmethod
    def derive(x_scale, w_scale, y_scale):
        s = effective_scale_f32(x_scale, w_scale, y_scale)
        rss = []
        for c, v in enumerate(s):
            q, e = math.frexp(float(v))
            if q != 0.5:
                raise ValueError(
                    f"pot mode: effective scale of channel {c} is {float(v)!r}, not a power of two"
                )
            rss.append(1 - e)  # v = 0.5 * 2^e = 2^(e-1) = 2^-rs
        return RequantParams("pot", scale=s, right_shift=np.array(rss, np.int64))

    @staticmethod
    def apply(acc, params, y_zero_point, lo, hi):
        def one(a, c):
            rs = int(params.right_shift[c])
            if rs >= 33:
                # |acc| <= 2^31 < 2^(rs-1): 0 < acc + 2^(rs-1) < 2^rs, so r = 0
                r = np.zeros_like(a)
            elif rs >= 1:
                r = (a + (1 << (rs - 1))) >> rs  # < 2^32 + 2^31: int64 exact
            elif -rs <= 31:
                r = a * (1 << -rs)  # |r| <= 2^62: int64 exact
            else:
                r = a.astype(object) * (1 << -rs)  # exact Python ints
            return _clamp(r, y_zero_point, lo, hi)

        return _per_channel(acc, params, one)


MODE_CLASSES = {
    cls.name: cls for cls in (Fp32Requant, Q31Requant, Q31SingleRequant, PotRequant)
}


def derive_requant(mode, x_scale, w_scale, y_scale):
    """RequantParams for `mode` from float32 scales s_x (scalar), s_w (scalar or [C]), s_y."""
    if mode not in MODE_CLASSES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return MODE_CLASSES[mode].derive(x_scale, w_scale, y_scale)


def _check_int(v, name):
    """A single integer (Python int, numpy integer or 1-element integer array) in int32 range."""
    if isinstance(v, np.ndarray) and v.size == 1 and v.dtype.kind in "iu":
        v = v.reshape(-1)[0]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    v = int(v)
    if not INT32_MIN <= v <= INT32_MAX:
        raise ValueError(f"{name} must lie in the int32 range, got {v}")
    return v


def requantize(acc, params, y_zero_point, lo, hi):
    """y = clamp(y_zero_point + r, lo, hi) with r from params.mode; int64 array.

    acc: integer array with int32 values, channel = last axis.
    """
    if not isinstance(params, RequantParams):
        raise TypeError(f"params must be RequantParams, got {type(params).__name__}")
    acc = np.asarray(acc)
    if acc.dtype.kind not in "iu":
        raise TypeError(f"acc must be an integer array, got dtype {acc.dtype}")
    acc = acc.astype(np.int64)
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise ValueError("acc values must lie in the int32 range")
    zp = _check_int(y_zero_point, "y_zero_point")
    lo, hi = _check_int(lo, "lo"), _check_int(hi, "hi")
    if lo > hi:
        raise ValueError(f"lo must be <= hi, got lo={lo}, hi={hi}")
    C = params.channels
    if C != 1 and (acc.ndim == 0 or acc.shape[-1] != C):
        raise ValueError(f"params have {C} channels but acc has shape {acc.shape} (channel = last axis)")
    return MODE_CLASSES[params.mode].apply(acc, params, zp, lo, hi)


def activation_bounds(kind, y_scale, y_zero_point, dtype):
    """[lo, hi] of the output: dtype range intersected with a fused activation.

    kind: None / 'none', 'relu' (lo = max(qmin, zp)), 'relu6' (as relu and
    hi = min(qmax, zp + RNE(fl32(6 / y_scale)))), or an (lo, hi) tuple of
    integers in the output quantized domain (validated, passed through).
    """
    dt = dtype_name(dtype)
    qmin, qmax = dtype_range(dt)
    zp = int(check_zero_point(y_zero_point, dt, "y_zero_point")[0])
    if kind is None or (isinstance(kind, str) and kind == "none"):
        return qmin, qmax
    if isinstance(kind, tuple):
        if len(kind) != 2:
            raise ValueError(f"clip tuple must be (lo, hi), got {kind!r}")
        lo, hi = _check_int(kind[0], "clip lo"), _check_int(kind[1], "clip hi")
        if not (qmin <= lo <= hi <= qmax):
            raise ValueError(f"clip (lo, hi) must satisfy {qmin} <= lo <= hi <= {qmax} for {dt}, got {kind}")
        return lo, hi
    if kind == "relu":
        return max(qmin, zp), qmax
    if kind == "relu6":
        s = check_scale(y_scale, "y_scale")[0]
        with np.errstate(over="ignore"):
            six = np.float32(6) / s  # float32 division
        hi = qmax if not np.isfinite(six) else min(qmax, zp + rne(six))
        return max(qmin, zp), hi
    raise ValueError(f"activation kind must be 'none', 'relu', 'relu6' or (lo, hi), got {kind!r}")
