"""Exact integer rounding primitives (docs/semantics.md, section 3).

Every function accepts a Python int/float or a numpy array and returns the
same kind (Python int for scalar input, int64 array for array input).
Integer inputs are validated to lie in the range the primitive is defined on;
inside those ranges all intermediates provably fit in int64 (stated per
function), so numpy int64 arithmetic is exact.
"""
from fractions import Fraction
import math

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def _as_int64(x, name):
    """Return (int64 array, was_scalar). Rejects non-integer input."""
    arr = np.asarray(x)
    if arr.dtype == object:
        # exact Python ints, e.g. from unbounded intermediate arithmetic
        if not all(isinstance(v, (int, np.integer)) for v in arr.flat):
            raise TypeError(f"{name} must hold integers")
        if arr.size and not all(-(2**63) <= int(v) < 2**63 for v in arr.flat):
            raise ValueError(f"{name} does not fit in int64")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iub":
        raise TypeError(f"{name} must be an integer or integer array, got dtype {arr.dtype}")
    return arr.astype(np.int64), arr.ndim == 0


def _check_int32(arr, name):
    if arr.size and (arr.min() < INT32_MIN or arr.max() > INT32_MAX):
        raise ValueError(f"{name} must lie in the int32 range [-2^31, 2^31-1]")


def _out(arr, scalar):
    return int(arr) if scalar else arr


def wrap32(x):
    """Two's-complement reduction modulo 2^32 into [-2^31, 2^31).

    Works on any integer (Python ints are unbounded; for int64 arrays the low
    32 bits of the two's-complement representation are what matters, and
    numpy's int64 `&` operates on exactly that representation).
    """
    if isinstance(x, (int, np.integer)):
        v = int(x) & 0xFFFFFFFF
        return v - 2**32 if v >= 2**31 else v
    arr = np.asarray(x)
    if arr.dtype == object:
        return np.array([wrap32(int(v)) for v in arr.flat], dtype=np.int64).reshape(arr.shape)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"wrap32 needs integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64:
        arr = arr & np.uint64(0xFFFFFFFF)
    v = arr.astype(np.int64) & 0xFFFFFFFF
    return np.where(v >= 2**31, v - 2**32, v)


def rne(x):
    """Round to the nearest integer, ties to even (IEEE roundTiesToEven).

    x: finite float(s). Python's round() and np.rint are both exact RNE.
    """
    if np.ndim(x) == 0:
        v = float(x)
        if not math.isfinite(v):
            raise ValueError("rne: value must be finite")
        return int(round(v))
    arr = np.asarray(x, dtype=np.float64)  # float32 -> float64 is exact
    if not np.all(np.isfinite(arr)):
        raise ValueError("rne: values must be finite")
    return np.rint(arr).astype(np.int64)


def rhaz(x):
    """Round to the nearest integer, ties away from zero (C's round()).

    Computed without the floor(x + 0.5) trap: x - trunc(x) is exact in binary
    floating point, so the comparison with 0.5 is exact.
    """
    if np.ndim(x) == 0:
        v = float(x)
        if not math.isfinite(v):
            raise ValueError("rhaz: value must be finite")
        f = Fraction(v)
        t = math.trunc(f)
        if abs(f - t) >= Fraction(1, 2):
            t += 1 if f > 0 else -1
        return int(t)
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("rhaz: values must be finite")
    t = np.trunc(arr)
    frac = arr - t  # exact
    return (t + np.where(np.abs(frac) >= 0.5, np.sign(arr), 0.0)).astype(np.int64)


def srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul(a, b) for int32 a, b.

    a == b == INT32_MIN -> INT32_MAX; otherwise, with ab = a*b exact,
    nudge = 2^30 if ab >= 0 else 1 - 2^30, result = trunc((ab + nudge) / 2^31).
    int64 is exact: |ab| <= 2^62 and |ab + nudge| < 2^62 + 2^30.
    The net effect is round-half-up of ab / 2^31 (= ARM VQRDMULH).
    """
    a_arr, a_scalar = _as_int64(a, "a")
    b_arr, b_scalar = _as_int64(b, "b")
    _check_int32(a_arr, "a")
    _check_int32(b_arr, "b")
    ab = a_arr * b_arr
    v = ab + np.where(ab >= 0, 2**30, 1 - 2**30)
    q = np.abs(v) >> 31
    q = np.where(v < 0, -q, q)  # truncation toward zero
    q = np.where((a_arr == INT32_MIN) & (b_arr == INT32_MIN), INT32_MAX, q)
    return _out(q, a_scalar and b_scalar)


def rounding_divide_by_pot(x, exponent):
    """gemmlowp RoundingDivideByPOT(x, e), 0 <= e <= 31: x / 2^e, ties away from zero.

    mask = 2^e - 1, rem = x & mask, thr = (mask >> 1) + (x < 0),
    result = (x >> e) + (rem > thr). x is int32, so int64 is exact.
    """
    e = int(exponent)
    if not 0 <= e <= 31:
        raise ValueError(f"exponent must be in [0, 31], got {e}")
    arr, scalar = _as_int64(x, "x")
    _check_int32(arr, "x")
    mask = (1 << e) - 1
    rem = arr & mask
    thr = (mask >> 1) + (arr < 0).astype(np.int64)
    return _out((arr >> e) + (rem > thr).astype(np.int64), scalar)


def quantize_multiplier(real_multiplier):
    """TFLite QuantizeMultiplier: real M (a Python float / double) -> (m, sh).

    M == 0 -> (0, 0). Else (q, e) = frexp(M) with q in [0.5, 1);
    m = round_half_away_from_zero(q * 2^31); if m == 2^31: m = 2^30, e += 1;
    if e < -31: (0, 0); else (m, e). M ~= m * 2^(sh - 31).
    No upper limit on sh here: callers reject sh > 30 (see requant.py).
    """
    M = float(real_multiplier)
    if not math.isfinite(M) or M < 0:
        raise ValueError(f"real multiplier must be finite and >= 0, got {M!r}")
    if M == 0.0:
        return 0, 0
    q, e = math.frexp(M)
    m = rhaz(q * 2.0**31)  # q * 2^31 is exact (power-of-two scaling)
    if m == 2**31:
        m = 2**30
        e += 1
    if e < -31:
        return 0, 0
    return m, e


def mbqm_double(acc, multiplier, shift):
    """Double-rounding MultiplyByQuantizedMultiplier (gemmlowp / TFLite reference).

    RoundingDivideByPOT(SRDHM(wrap32(acc * 2^left), m), right),
    left = max(sh, 0), right = max(-sh, 0); requires 0 <= m < 2^31, -31 <= sh <= 30.
    int64 is exact: |acc * 2^left| <= 2^31 * 2^30 = 2^61 before the wrap.
    """
    m, sh = int(multiplier), int(shift)
    _check_multiplier(m, sh)
    arr, scalar = _as_int64(acc, "acc")
    _check_int32(arr, "acc")
    left, right = max(sh, 0), max(-sh, 0)
    shifted = wrap32(arr * (1 << left))  # peer quirk: int32 multiply wraps
    return _out(rounding_divide_by_pot(srdhm(shifted, m), right), scalar)


def mbqm_single(acc, multiplier, shift):
    """Single-rounding MultiplyByQuantizedMultiplier (ruy / TFLITE_SINGLE_ROUNDING).

    floor((acc * m + 2^(30 - sh)) / 2^(31 - sh)), i.e. round-half-up of
    acc * m / 2^(31 - sh); requires 0 <= m < 2^31, -31 <= sh <= 30.
    int64 is exact: |acc * m| <= 2^31 * (2^31 - 1) < 2^62 and the rounding
    term is <= 2^61, so the sum stays inside (-2^63, 2^63).
    """
    m, sh = int(multiplier), int(shift)
    _check_multiplier(m, sh)
    arr, scalar = _as_int64(acc, "acc")
    _check_int32(arr, "acc")
    if m == 0:
        return _out(np.zeros_like(arr), scalar)
    total = 31 - sh
    return _out((arr * m + (1 << (total - 1))) >> total, scalar)


def _check_multiplier(m, sh):
    if not 0 <= m <= INT32_MAX:
        raise ValueError(f"multiplier must be in [0, 2^31-1], got {m}")
    if not -31 <= sh <= 30:
        raise ValueError(f"shift must be in [-31, 30], got {sh}")
