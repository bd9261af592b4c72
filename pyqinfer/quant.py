"""Non-uniform shift codes: PoT, DeepShift, log (Miyashita) and APoT (docs/semantics.md §12.5-12.9).

Encoders turn float weights (or activations) into a :class:`ShiftCodes`
object: b-bit codes, their codebook and a float32 scale ``S`` (per tensor or
per output channel along the last axis). A code's level is ``S * v`` with
``v = sign * sum_t 2^t`` (at most 3 power-of-two terms); ``.terms()`` gives
the term form the shift kernels run (§12.1).

Encoding is exact and platform independent: every decision compares the
float64 value ``|x|`` with a float64 cutoff derived exactly from the rational
(linear) or irrational (log) threshold, so the result equals the rational
reference ``pyqinfer.reference.shiftcodes.encode_exact`` bit for bit.

Example::

    >>> import numpy as np
    >>> from pyqinfer import quant
    >>> c = quant.pot_encode(np.array([[0.3, -1.0], [0.0, 0.09]]), bits=4, e_min=-6, e_max=0)
    >>> c.dequantize()
    array([[ 0.25 , -1.   ],
           [ 0.   ,  0.125]])
    >>> signs, exponents, shift = c.terms()      # level = S * 2^-shift * sum s * 2^e
    >>> [float(v) for v in quant.apot_levels(3, construction="repo", signed=False)][:4]
    [0.0, 0.1, 0.2, 0.3]
"""
import math
from fractions import Fraction

import numpy as np

from .reference import shiftcodes as _ref
from .reference.pwlq import PWLQCodes, pwlq_breakpoint, pwlq_encode  # noqa: F401 (§14)
from .reference.shiftcodes import (APOT_CONSTRUCTIONS, LOG_PRESETS, ROUNDINGS, UNDERFLOWS,
                                   Codebook, apot_codebook, log_codebook, pot_codebook)

__all__ = [
    "ShiftCodes", "Codebook", "encode", "encode_thresholds", "pot_encode", "log_encode", "miyashita_encode",
    "apot_encode", "deepshift_q_encode", "from_deepshift_ps", "pot_levels", "log_levels",
    "apot_levels", "pot_codebook", "log_codebook", "apot_codebook", "to_fixed", "unpack",
    "ROUNDINGS", "UNDERFLOWS", "APOT_CONSTRUCTIONS", "LOG_PRESETS",
    "PWLQCodes", "pwlq_encode", "pwlq_breakpoint",
]


# -- per-codebook lookup tables -------------------------------------------------
def _luts(cb):
    """valid[code], value[code] (float64, exact), term signs/exponents [2^b, T] (raw exponents).

    Cached on the (frozen) codebook object.
    """
    hit = cb.__dict__.get("_lut")
    if hit is not None:
        return hit
    n = 1 << cb.bits
    valid = np.zeros(n, dtype=bool)
    value = np.zeros(n, dtype=np.float64)
    T = cb.num_terms
    ts = np.zeros((n, T), dtype=np.int8)
    te = np.zeros((n, T), dtype=np.int64)
    for code in cb.valid_codes():
        s, f = cb.split(code)
        valid[code] = True
        v = s * cb.magnitude(f)
        value[code] = float(v)
        assert Fraction(value[code]) == v
        for t, e in enumerate(cb.fields[f]):
            ts[code, t], te[code, t] = s, e
    out = dict(valid=valid, value=value, signs=ts, exps=te)
    object.__setattr__(cb, "_lut", out)
    return out


def _check_codebook(cb):
    if not isinstance(cb, Codebook):
        raise TypeError(f"codebook must be a Codebook, got {type(cb).__name__}")
    return cb


def _check_scale(scale):
    s = np.asarray(scale)
    if s.dtype.kind not in "fiu":
        raise TypeError(f"scale must be a real number or 1-D array, got dtype {s.dtype}")
    s = s.astype(np.float32)
    if s.ndim > 1:
        raise ValueError(f"scale must be a scalar or 1-D (per channel), got shape {s.shape}")
    if s.size == 1:
        s = s.reshape(())
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError("scale must be finite and > 0")
    return s


class ShiftCodes:
    """b-bit shift codes with their codebook and float32 scale S (§12.5).

    ``codes``: uint8 array (any shape; weights are ``[K, N]``); ``scale``: a
    scalar or a length-N array for the last axis. Every code must be valid
    (ValueError naming ``codes`` otherwise).
    """

    def __init__(self, codes, codebook, scale=1.0):
        self.codebook = _check_codebook(codebook)
        c = np.asarray(codes)
        if c.dtype.kind not in "iu":
            raise TypeError(f"codes must be an integer array, got dtype {c.dtype}")
        lut = _luts(self.codebook)
        if c.size and (c.min() < 0 or c.max() >= (1 << self.codebook.bits)):
            raise ValueError(f"codes must be in [0, {(1 << self.codebook.bits) - 1}] "
                             f"for {self.codebook.bits}-bit codes")
        c = c.astype(np.uint8)
        if c.size and not lut["valid"][c].all():
            bad = sorted(set(c[~lut["valid"][c]].tolist()))[:4]
            raise ValueError(f"codes {bad} are not valid {self.codebook.name} codes "
                             f"(unused field or negative zero)")
        self.codes = c
        self.scale = _check_scale(scale)
        if self.scale.ndim == 1 and (c.ndim == 0 or c.shape[-1] != self.scale.size):
            raise ValueError(f"a per-channel scale has length {self.scale.size} but codes have "
                             f"shape {c.shape} (channels = last axis)")

    # -- description
    bits = property(lambda self: self.codebook.bits)
    signed = property(lambda self: self.codebook.signed)
    scheme = property(lambda self: self.codebook.name)
    shape = property(lambda self: self.codes.shape)

    def __repr__(self):
        return (f"ShiftCodes({self.scheme}, bits={self.bits}, shape={self.shape}, "
                f"{'per-channel' if self.scale.ndim else 'per-tensor'} scale, "
                f"{dict(self.codebook.desc)})")

    # -- values
    def values(self):
        """v(code) without the scale, float64 (exact)."""
        return _luts(self.codebook)["value"][self.codes]

    def dequantize(self):
        """S * v(code) as float64 (exact)."""
        return self.values() * self.scale.astype(np.float64)

    def levels(self, exact=False):
        """The distinct levels S * v of the codebook, sorted: [L], or [N, L] per channel.

        exact=True gives Fractions.
        """
        vs = self.codebook.levels()
        if exact:
            if self.scale.ndim == 0:
                return [Fraction(float(self.scale)) * v for v in vs]
            return [[Fraction(float(s)) * v for v in vs] for s in self.scale]
        v = np.array([float(x) for x in vs])
        return v * self.scale.astype(np.float64)[..., None] if self.scale.ndim else \
            v * float(self.scale)

    # -- term form
    def terms(self, rule="exact"):
        """(signs, exponents, shift): int8 [T, *shape] each and an int (§12.5).

        level = S * 2^-shift * sum_t signs[t] * 2^exponents[t]; rule 'exact'
        makes every exponent >= 0, rule 'deepshift' keeps the raw ones.
        """
        cb = self.codebook
        sh = _ref.terms_shift(cb, rule)
        lo, hi = cb.min_exponent + sh, cb.max_exponent + sh
        if rule == "exact" and hi > 30:
            raise ValueError(f"{cb.name}: exponents span {hi} > 30; rule 'exact' cannot hold them")
        if rule == "deepshift" and not -31 <= lo <= hi <= 30:
            raise ValueError(f"exponents [{lo}, {hi}] are outside [-31, 30] of rule 'deepshift'")
        lut = _luts(cb)
        s = np.moveaxis(lut["signs"][self.codes], -1, 0)
        e = np.moveaxis(np.where(lut["signs"] != 0, lut["exps"] + sh, 0).astype(np.int8)
                        [self.codes], -1, 0)
        return np.ascontiguousarray(s), np.ascontiguousarray(e), sh

    def effective_scale(self, rule="exact"):
        """S_eff = S * 2^-shift (float32, exact): the weight scale of requantization (§12.4)."""
        return _ref.effective_scale(self.scale, self.codebook, rule)

    def to_integers(self):
        """(ints, scale): the codes as integers v * 2^shift (rule 'exact') in the narrowest
        of int8/uint8, int16, int32, and the float32 scale S * 2^-shift (§12.7: log activations)."""
        sh = _ref.terms_shift(self.codebook, "exact")
        vmax = max(abs(v) for v in self.codebook.levels()) * Fraction(2) ** sh
        for dt in ((np.int8, np.int16, np.int32) if self.signed else (np.uint8, np.int16, np.int32)):
            if vmax <= np.iinfo(dt).max:
                break
        else:
            raise ValueError(f"levels up to {vmax} do not fit int32")
        ints = np.rint(self.values() * 2.0 ** sh).astype(dt)
        return ints, self.effective_scale("exact")

    # -- storage
    def pack(self):
        """The codes as a little-endian bit stream, uint8 [ceil(count * bits / 8)] (§12.5).

        For 4-bit codes this is the ONNX nibble order (element 2i in the low nibble of byte i).
        """
        b = self.bits
        bits = ((self.codes.reshape(-1, 1) >> np.arange(b, dtype=np.uint8)) & 1).astype(np.uint8)
        return np.packbits(bits.reshape(-1), bitorder="little")


def unpack(packed, shape, codebook, scale=1.0):
    """The :class:`ShiftCodes` of ``ShiftCodes.pack()`` output, given the shape."""
    cb = _check_codebook(codebook)
    p = np.asarray(packed)
    if p.dtype != np.uint8:
        raise TypeError(f"packed must have dtype uint8, got {p.dtype}")
    shape = tuple(int(d) for d in np.atleast_1d(shape)) if np.ndim(shape) else (int(shape),)
    count = int(np.prod(shape, dtype=np.int64))
    need = (count * cb.bits + 7) // 8
    if p.size != need:
        raise ValueError(f"packed must hold {need} bytes for {count} {cb.bits}-bit codes, "
                         f"got {p.size}")
    bits = np.unpackbits(p.reshape(-1), bitorder="little")[: count * cb.bits]
    codes = (bits.reshape(count, cb.bits).astype(np.uint16) << np.arange(cb.bits)).sum(axis=1)
    return ShiftCodes(codes.astype(np.uint8).reshape(shape), cb, scale)


# -- exact float64 cutoffs ------------------------------------------------------
def _next_up(f):
    return float(np.nextafter(f, np.inf))


_FMAX = Fraction(np.finfo(np.float64).max)


def _cutoff_linear(r):
    """min{f float64 : f > r} for a rational r >= 0 (inf when r >= the largest float)."""
    if r >= _FMAX:
        return np.inf
    c = float(r)                      # RNE: within half an ulp, so one step at most
    if Fraction(c) <= r:
        c = _next_up(c)
    return c


def _cutoff_root4(S, j):
    """min{f float64 >= 0 : f^4 > S^4 * 2^j}, i.e. the cutoff of the threshold S * 2^(j/4)."""
    R = Fraction(float(S)) ** 4 * Fraction(2) ** j
    a, rem = divmod(j, 4)
    try:
        c = math.ldexp(float(S) * 2.0 ** (rem / 4), a)  # within a few ulps (or 0)
    except OverflowError:
        c = np.inf
    if c == np.inf:
        if _FMAX ** 4 <= R:
            return np.inf
        c = float(np.finfo(np.float64).max)
    while Fraction(c) ** 4 <= R:
        c = _next_up(c)
        if c == np.inf:
            return c
    while c > 0:
        p = float(np.nextafter(c, -np.inf))
        if Fraction(p) ** 4 > R:
            c = p
        else:
            break
    return c


def _cutoffs(cb, S, rounding, underflow):
    """Float64 cutoffs [len(sorted fields) - 1] for one scale S (increasing)."""
    fs = cb.sorted_fields
    Sf = Fraction(float(S))
    out = []
    for lo, hi in zip(fs[:-1], fs[1:]):
        if cb.fields[lo] == () and underflow == "clamp":
            out.append(_cutoff_linear(Fraction(0)))
        elif rounding == "linear":
            out.append(_cutoff_linear(Sf * (cb.magnitude(lo) + cb.magnitude(hi)) / 2))
        else:
            if cb.fields[lo] == ():
                j = 4 * cb.log_pos[hi] - 2 * cb.log_step
            else:
                j = 2 * (cb.log_pos[lo] + cb.log_pos[hi])
            out.append(_cutoff_root4(S, int(j)))
    return np.array(out, dtype=np.float64)


def _float_input(x, name="x"):
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real array, got dtype {a.dtype}")
    if a.dtype.kind in "iu" and a.size and np.abs(a.astype(object)).max() > 2 ** 53:
        raise ValueError(f"{name} has integers beyond 2^53, which float64 cannot hold exactly")
    a = a.astype(np.float64)
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN; NaN has no code")
    return a


def _resolve_scale(x, cb, scale, alpha, per_channel, default_alpha):
    if scale is not None and alpha is not None:
        raise ValueError("give scale or alpha, not both")
    if scale is not None:
        return _check_scale(scale)
    if alpha is None and default_alpha:
        ax = np.abs(x)
        if per_channel:
            if x.ndim == 0:
                raise ValueError("per_channel needs an array with a channel (last) axis")
            alpha = ax.reshape(-1, x.shape[-1]).max(axis=0) if x.size else np.ones(x.shape[-1])
        else:
            alpha = ax.max() if x.size else 1.0
    if alpha is None:
        return np.float32(1.0).reshape(())
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim > 1 or not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError("alpha must be a finite scalar or 1-D array >= 0")
    return _check_scale(_ref.scale_from_alpha(a, cb))


def encode(x, codebook, *, scale=None, alpha=None, rounding="log", underflow="round",
           per_channel=False, _default_alpha=False):
    """Codes of the float array x in a codebook (§12.5).

    scale: S (float32, scalar or per channel = last axis); or alpha: the clipping
    threshold (S = fl32(alpha / M)); neither: S = 1.
    """
    cb = _check_codebook(codebook)
    _ref.check_encode_args(cb, rounding, underflow)
    x = _float_input(x)
    S = _resolve_scale(x, cb, scale, alpha, per_channel, _default_alpha)
    if S.ndim == 1 and (x.ndim == 0 or x.shape[-1] != S.size):
        raise ValueError(f"a per-channel scale has length {S.size} but x has shape {x.shape}")
    if not cb.signed:
        x = np.maximum(x, 0.0)
    if not cb.has_zero and (x == 0).any():
        raise ValueError(f"x contains an exact 0 but {cb.name} codes have no zero code "
                         f"(every source maps 0 to 0); use a codebook with zero_code=True")
    ax = np.abs(x)
    if S.ndim == 0:
        cuts = _cutoffs(cb, S, rounding, underflow)[:, None]
    else:
        cuts = np.stack([_cutoffs(cb, s, rounding, underflow) for s in S], axis=1)
    idx = np.zeros(x.shape, dtype=np.int64)
    for c in cuts:
        idx += ax >= c                      # c broadcasts over the last axis
    fields = np.array(cb.sorted_fields, dtype=np.int64)[idx]
    is_zero = (fields == 0) if cb.has_zero else np.zeros(x.shape, dtype=bool)
    neg = (x < 0) & ~is_zero if cb.signed else np.zeros(x.shape, dtype=bool)
    codes = fields | np.where(neg, 1 << (cb.bits - 1), 0)
    return ShiftCodes(codes.astype(np.uint8), cb, S)


def encode_thresholds(codebook, scale=1.0, rounding="log", underflow="round"):
    """MultiThreshold form of the encoder (§13): (thresholds [C, L-1] float64, lut [1, L] uint8).

    ``pyqinfer.ops.multi_threshold(|x|, thresholds, lut=lut)`` is the magnitude field that
    :func:`encode` picks for x (one threshold row per channel of a per-channel scale).
    """
    cb = _check_codebook(codebook)
    _ref.check_encode_args(cb, rounding, underflow)
    S = _check_scale(scale)
    rows = [_cutoffs(cb, s, rounding, underflow) for s in np.atleast_1d(S)]
    return np.stack(rows), np.array([cb.sorted_fields], dtype=np.uint8)


# -- scheme encoders ------------------------------------------------------------
def pot_encode(w, bits, *, e_max=0, e_min=None, zero_code=True, signed=True, rounding="log",
               underflow="round", scale=None, alpha=None):
    """PoT codes (§12.6): sign (binary, or ternary with zero_code) x 2^e, e in [e_min, e_max].

    >>> pot_encode([0.7, -0.2], bits=4, e_min=-6).dequantize()   # log domain: 0.7 > 2^-0.5
    array([ 0.5 , -0.25])
    """
    cb = pot_codebook(bits, e_max=e_max, e_min=e_min, zero_code=zero_code, signed=signed)
    return encode(w, cb, scale=scale, alpha=alpha, rounding=rounding, underflow=underflow)


def log_encode(x, bits, *, e_max, e_min=None, zero_code=True, base=2, signed=False,
               rounding="log", underflow="round", scale=None, alpha=None):
    """Log codes (§12.7), unsigned by default (activations). base 2 or 'sqrt2'
    (then e_min/e_max range over x~ = Round(2 log2|x|))."""
    cb = log_codebook(bits, e_max=e_max, e_min=e_min, zero_code=zero_code, base=base,
                      signed=signed)
    return encode(x, cb, scale=scale, alpha=alpha, rounding=rounding, underflow=underflow)


def miyashita_encode(x, bitwidth, fsr, *, preset="paper", base=2, signed=False):
    """LogQuant with FSR (§12.7 presets 'paper' or 'quanttorch'); S = 1."""
    kw, underflow = _ref.log_preset(bitwidth, fsr, preset, base=base, signed=signed)
    return encode(x, log_codebook(**kw), rounding="log", underflow=underflow)


def apot_encode(w, bits, *, construction="paper", k=2, signed=True, alpha=None, scale=None,
                per_channel=False):
    """APoT codes (§12.8): nearest level (linear domain, ties toward zero) of (alpha/M) * levels.

    alpha defaults to max|w| (per channel along the last axis if per_channel).
    """
    cb = apot_codebook(bits, construction=construction, k=k, signed=signed)
    return encode(w, cb, scale=scale, alpha=alpha, rounding="linear", per_channel=per_channel,
                  _default_alpha=True)


def deepshift_q_encode(w, bits=5):
    """DeepShift-Q (§12.6): sign(w) * 2^round(log2 clampabs(|w|, 2^-(2^(b-1)-1), 1)), S = 1."""
    bits = _ref._check_int(bits, "bits")
    cb = pot_codebook(bits, e_max=0, e_min=-(2 ** (bits - 1) - 1), zero_code=False)
    return encode(w, cb, rounding="log", underflow="clamp")


def from_deepshift_ps(shift, sign, bits=5):
    """DeepShift-PS codes (§12.6) from the trained float tensors P (shift) and S (sign)."""
    bits = _ref._check_int(bits, "bits")
    p = _float_input(shift, "shift")
    s = _float_input(sign, "sign")
    if p.shape != s.shape:
        raise ValueError(f"shift and sign must have the same shape, got {p.shape} and {s.shape}")
    lo = -(2 ** (bits - 1) - 2)
    cb = pot_codebook(bits, e_max=0, e_min=lo, zero_code=True)
    e = np.round(np.clip(p, lo, 0)).astype(np.int64)            # np.round is half-even
    sg = np.sign(np.round(s)).astype(np.int64)
    field = np.where(sg == 0, 0, e - lo + 1)
    codes = field | np.where(sg < 0, 1 << (bits - 1), 0)
    return ShiftCodes(codes.astype(np.uint8), cb, 1.0)


# -- level sets -----------------------------------------------------------------
def _out_levels(cb, exact, signed_levels=True):
    vals = cb.levels(normalized=True)
    if exact:
        return vals
    return np.array([float(v) for v in vals], dtype=np.float64)


def apot_levels(bits, *, construction="paper", k=2, signed=True, exact=False):
    """The APoT level set normalized to max 1 (sorted; §12.8).

    Float64 values are the exact rationals rounded once (RNE); exact=True gives Fractions.

    >>> [str(v) for v in apot_levels(4, signed=False, exact=True)][:4]
    ['0', '1/48', '1/24', '1/16']
    """
    return _out_levels(apot_codebook(bits, construction=construction, k=k, signed=signed), exact)


def pot_levels(bits, *, e_max=0, e_min=None, zero_code=True, signed=True, construction=None,
               exact=False):
    """PoT levels normalized to max 1. construction='repo' is the APoT repository's
    build_power_value(B, additive=False): B = bits-1 (signed) or bits, e in [-(2^B-2), 0]."""
    if construction == "repo":
        B = bits - 1 if signed else bits
        cb = pot_codebook(bits, e_max=0, e_min=-(2 ** B - 2), zero_code=True, signed=signed)
    elif construction is None:
        cb = pot_codebook(bits, e_max=e_max, e_min=e_min, zero_code=zero_code, signed=signed)
    else:
        raise ValueError(f"construction must be None or 'repo', got {construction!r}")
    return _out_levels(cb, exact)


def log_levels(bits, *, e_max, e_min=None, zero_code=True, base=2, signed=False, exact=False):
    """Log levels (v, not normalized: the exponents carry the FSR), sorted."""
    cb = log_codebook(bits, e_max=e_max, e_min=e_min, zero_code=zero_code, base=base,
                      signed=signed)
    vals = cb.levels()
    return vals if exact else np.array([float(v) for v in vals], dtype=np.float64)


def to_fixed(x, frac_bits=16, int_bits=16, rounding="floor"):
    """DeepShift's float -> fixed-point conversion (§12.9) as int32 (vectorized, exact)."""
    if rounding not in ("floor", "trunc"):
        raise ValueError(f"rounding must be 'floor' or 'trunc', got {rounding!r}")
    a = _float_input(x)
    v = a * 2.0 ** frac_bits                          # exact: a power-of-two scaling
    if rounding == "floor":
        lo = -(2.0 ** (int_bits - 1 + frac_bits))
        hi = (2.0 ** (int_bits - 1) - 1) * 2.0 ** frac_bits
        return np.clip(np.floor(v), lo, hi).astype(np.int32)
    t = np.trunc(v)
    if np.any((t < -2.0 ** 31) | (t >= 2.0 ** 31)):
        raise ValueError("x * 2^frac is outside int32")
    return t.astype(np.int32)
