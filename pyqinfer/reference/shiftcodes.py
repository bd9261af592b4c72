"""Shift codebooks: PoT, DeepShift, log (Miyashita) and APoT codes (docs/semantics.md §12.5-12.10).

A codebook maps a b-bit code to a level S * v, v = sign * sum_t 2^t (at most
3 terms). This module defines every codebook (the tables of the contract),
decides every encoding with exact rationals (``fractions.Fraction``, one
element at a time, for clarity rather than speed), maps codes to the term form
of §12.1 and runs whole layers through ``shift_accumulate`` and ``requantize``.
``pyqinfer.quant`` is the fast public implementation tested against it.
"""
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from .requant import activation_bounds, derive_requant, requantize
from .shift import shift_accumulate

ROUNDINGS = ("log", "linear")
UNDERFLOWS = ("round", "clamp")
APOT_CONSTRUCTIONS = ("paper", "repo")

# build_power_value(B, additive=True) of yhhhli/APoT_Quantization, as term sets
# (exponents of the non-zero entries, in the repository's order).
_APOT_REPO_TERMS = {
    1: [[0]],                                   # bits = 2 weights: the repo's uniform ternary
    2: [[-1, -2, -3]],
    3: [[-1, -2, -4], [-3]],
    4: [[-1, -3, -5], [-2, -4, -6]],
    5: [[-1, -3, -6], [-2, -4, -7], [-5]],
    6: [[-1, -4, -7], [-2, -5, -8], [-3, -6, -9]],
}


@dataclass(frozen=True)
class Codebook:
    """A b-bit code -> level table (§12.5).

    fields: valid field value -> tuple of term exponents (empty = the zero).
    log_pos: field -> log2 position (Fraction) for schemes that may round in
    the log domain, else None; log_step: the position step d.
    """
    name: str
    bits: int
    signed: bool
    fields: dict
    log_pos: dict = None
    log_step: Fraction = None
    desc: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.bits, (int, np.integer)) or isinstance(self.bits, bool) \
                or not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be an int in [2, 8], got {self.bits!r}")
        cap = 1 << (self.bits - 1 if self.signed else self.bits)
        if not self.fields or max(self.fields) >= cap or min(self.fields) < 0:
            raise ValueError(f"{self.name}: {len(self.fields)} magnitudes do not fit a "
                             f"{self.bits}-bit {'signed' if self.signed else 'unsigned'} code "
                             f"({cap} fields)")
        mags = [self.magnitude(f) for f in self.fields]
        if len(set(mags)) != len(mags):
            raise ValueError(f"{self.name}: two fields decode to the same magnitude")
        for f, t in self.fields.items():
            if len(t) > 3 or (len(t) == 0 and f != 0):
                raise ValueError(f"{self.name}: field {f} has terms {t}")
            if any(not -1000 <= e <= 1000 for e in t):
                raise ValueError(f"{self.name}: term exponents must lie in [-1000, 1000] (float64 "
                                 f"holds every level exactly there), got {t}")

    # -- structure ---------------------------------------------------------
    def magnitude(self, f):
        return sum((Fraction(2) ** t for t in self.fields[f]), Fraction(0))

    @property
    def has_zero(self):
        return 0 in self.fields and self.fields[0] == ()

    @property
    def sorted_fields(self):
        return sorted(self.fields, key=self.magnitude)

    @property
    def norm(self):
        """M: the largest magnitude (alpha -> S = alpha / M; normalized levels = v / M)."""
        return max(self.magnitude(f) for f in self.fields)

    @property
    def num_terms(self):
        return max(len(t) for t in self.fields.values())

    @property
    def min_exponent(self):
        return min(e for t in self.fields.values() for e in t)

    @property
    def max_exponent(self):
        return max(e for t in self.fields.values() for e in t)

    def valid_codes(self):
        """All valid codes (ints), sorted."""
        out = list(self.fields)
        if self.signed:
            out += [(1 << (self.bits - 1)) | f for f in self.fields if self.fields[f] != ()]
        return sorted(out)

    def split(self, code):
        """code -> (sign in {-1, 0, +1}, field); ValueError for an invalid code."""
        code = int(code)
        if self.signed:
            neg, f = code >> (self.bits - 1), code & ((1 << (self.bits - 1)) - 1)
        else:
            neg, f = 0, code
        if code < 0 or code >= (1 << self.bits) or f not in self.fields or \
                (neg and self.fields[f] == ()):
            raise ValueError(f"code {code} is not a valid {self.name} code")
        if self.fields[f] == ():
            return 0, f
        return (-1 if neg else 1), f

    def value(self, code):
        """v(code) as a Fraction (the level without the scale S)."""
        s, f = self.split(code)
        return s * self.magnitude(f)

    def levels(self, normalized=False):
        """The distinct values v of all valid codes, sorted, as Fractions."""
        vals = sorted(self.value(c) for c in self.valid_codes())
        if normalized:
            m = self.norm
            vals = [v / m for v in vals]
        return vals


# -- codebook builders -----------------------------------------------------
def _check_int(v, name):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {v!r}")
    return int(v)


def _exponent_fields(bits, signed, e_min, e_max, zero_code, name):
    bits = _check_int(bits, "bits")
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8], got {bits}")
    cap = 1 << (bits - 1 if signed else bits)
    e_max = _check_int(e_max, "e_max")
    if e_min is None:
        e_min = e_max - (cap - (1 if zero_code else 0)) + 1
    e_min = _check_int(e_min, "e_min")
    if e_min > e_max:
        raise ValueError(f"e_min ({e_min}) must be <= e_max ({e_max})")
    count = e_max - e_min + 1 + (1 if zero_code else 0)
    if count > cap:
        raise ValueError(f"{name}: {count} magnitudes (exponents [{e_min}, {e_max}]"
                         f"{' and zero' if zero_code else ''}) do not fit a {bits}-bit "
                         f"{'signed' if signed else 'unsigned'} code ({cap} fields)")
    return bits, e_min, e_max


def pot_codebook(bits, *, e_max=0, e_min=None, zero_code=True, signed=True):
    """PoT (§12.6): magnitudes 2^e, e in [e_min, e_max], plus 0 if zero_code.

    e_min=None fills the code. Field = e - e_min + zero_code.
    """
    bits, e_min, e_max = _exponent_fields(bits, signed, e_min, e_max, zero_code, "pot")
    z = 1 if zero_code else 0
    fields = {e - e_min + z: (e,) for e in range(e_min, e_max + 1)}
    pos = {e - e_min + z: Fraction(e) for e in range(e_min, e_max + 1)}
    if zero_code:
        fields[0] = ()
    return Codebook("pot", bits, bool(signed), fields, pos, Fraction(1),
                    dict(e_min=e_min, e_max=e_max, zero_code=bool(zero_code)))


def log_codebook(bits, *, e_max, e_min=None, zero_code=True, base=2, signed=False):
    """Log (Miyashita, §12.7). base 2: magnitudes 2^e. base 'sqrt2': e is the
    code x~ = Round(2 log2|x|) in half-octaves; even x~ = 2q is 2^q, odd
    x~ = 2q+1 is the hardware approximation 2^q + 2^(q-1) = 1.5 * 2^q."""
    if base == 2:
        cb = pot_codebook(bits, e_max=e_max, e_min=e_min, zero_code=zero_code, signed=signed)
        return Codebook("log2", cb.bits, cb.signed, cb.fields, cb.log_pos, cb.log_step,
                        dict(cb.desc, base=2))
    if base not in ("sqrt2", "sqrt(2)"):
        raise ValueError(f"base must be 2 or 'sqrt2', got {base!r}")
    bits, e_min, e_max = _exponent_fields(bits, signed, e_min, e_max, zero_code, "log sqrt2")
    z = 1 if zero_code else 0
    fields, pos = {}, {}
    for c in range(e_min, e_max + 1):
        q = c // 2                                   # floor, also for negative c
        fields[c - e_min + z] = (q,) if c % 2 == 0 else (q, q - 1)
        pos[c - e_min + z] = Fraction(c, 2)
    if zero_code:
        fields[0] = ()
    return Codebook("log_sqrt2", bits, bool(signed), fields, pos, Fraction(1, 2),
                    dict(e_min=e_min, e_max=e_max, zero_code=bool(zero_code), base="sqrt2"))


LOG_PRESETS = ("paper", "quanttorch")


def log_preset(bitwidth, fsr, preset="paper", *, base=2, signed=False):
    """(codebook kwargs) of the table in §12.7 for a bitwidth bw and an FSR."""
    bw, fsr = _check_int(bitwidth, "bitwidth"), _check_int(fsr, "fsr")
    if preset == "paper":
        return dict(bits=bw + (1 if signed else 0), e_min=fsr - 2 ** bw + 1, e_max=fsr - 1,
                    zero_code=True, base=base, signed=signed), "round"
    if preset == "quanttorch":
        return dict(bits=bw + 1 + (1 if signed else 0), e_min=fsr - 2 ** bw, e_max=fsr,
                    zero_code=False, base=base, signed=signed), "round"
    raise ValueError(f"preset must be one of {LOG_PRESETS}, got {preset!r}")


def _term_set_fields(term_sets, widths):
    """Fields of independent term sets: index 0 = off, j+1 = term_sets[i][j]; set 0 lowest."""
    fields = {}
    shifts = np.cumsum([0] + list(widths[:-1]))

    def rec(i, f, terms):
        if i == len(term_sets):
            fields[f] = tuple(sorted(terms, reverse=True))
            return
        rec(i + 1, f, terms)
        for j, e in enumerate(term_sets[i]):
            rec(i + 1, f | ((j + 1) << int(shifts[i])), terms + [e])
    rec(0, 0, [])
    return fields


def apot_codebook(bits, *, construction="paper", k=2, signed=True):
    """APoT (§12.8): the paper's eq. 5 (base bit-width k, n = B/k terms) or the
    repository's build_power_value(B, additive=True); B = bits-1 signed, bits unsigned."""
    bits = _check_int(bits, "bits")
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8], got {bits}")
    B = bits - 1 if signed else bits
    if construction == "repo":
        if B not in _APOT_REPO_TERMS or (B == 1 and not signed):
            raise ValueError(f"construction 'repo' has B = 2..6 (bits {'3..7' if signed else '2..6'}"
                             f" {'signed' if signed else 'unsigned'}), got bits = {bits}")
        sets = _APOT_REPO_TERMS[B]
        widths = [max(1, int(np.ceil(np.log2(len(s) + 1)))) for s in sets]
        desc = dict(construction="repo", B=B)
    elif construction == "paper":
        k = _check_int(k, "k")
        if k < 1 or B % k != 0 or not 1 <= B // k <= 3:
            raise ValueError(f"construction 'paper' needs n = B/k in 1..3 with B = {B} magnitude "
                             f"bits; k = {k} does not divide it that way")
        n = B // k
        sets = [[-(i + j * n) for j in range(2 ** k - 1)] for i in range(n)]
        widths = [k] * n
        desc = dict(construction="paper", B=B, k=k, n=n)
    else:
        raise ValueError(f"construction must be one of {APOT_CONSTRUCTIONS}, got {construction!r}")
    fields = _term_set_fields(sets, widths)
    return Codebook(f"apot_{construction}", bits, bool(signed), fields, None, None, desc)


# -- scales ----------------------------------------------------------------
def fl32_of_fraction(q):
    """The float32 nearest to the rational q (RNE), one rounding."""
    q = Fraction(q)
    if q >= Fraction(np.finfo(np.float64).max):
        return np.float32(np.inf)
    with np.errstate(over="ignore"):
        c = np.float32(float(q))
    if not np.isfinite(c):
        return c
    cands = [np.nextafter(c, np.float32(-np.inf)), c, np.nextafter(c, np.float32(np.inf))]
    cands = [f for f in cands if np.isfinite(f)]

    def key(f):
        even = int(np.array(f, dtype=np.float32).view(np.uint32)) & 1
        return (abs(Fraction(float(f)) - q), even)
    return min(cands, key=key)


def scale_from_alpha(alpha, codebook):
    """S = fl32(alpha / M) (§12.5), alpha a float (array per channel allowed)."""
    a = np.asarray(alpha, dtype=np.float64)
    M = codebook.norm
    out = np.array([fl32_of_fraction(Fraction(float(v)) / M) if v > 0 else np.float32(1)
                    for v in a.reshape(-1)], dtype=np.float32)
    return out.reshape(a.shape)


# -- exact encoding ----------------------------------------------------------
def check_encode_args(codebook, rounding, underflow):
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    if rounding == "log" and codebook.log_pos is None:
        raise ValueError(f"{codebook.name} codes round in the linear domain only (rounding='linear')")
    if underflow not in UNDERFLOWS:
        raise ValueError(f"underflow must be one of {UNDERFLOWS}, got {underflow!r}")


def encode_exact_scalar(x, S, codebook, rounding="log", underflow="round"):
    """The code of one float x with scale S (float32 > 0), decided in Fractions (§12.5)."""
    check_encode_args(codebook, rounding, underflow)
    x = float(x)
    if np.isnan(x):
        raise ValueError("x contains NaN; NaN has no code")
    if not codebook.signed and x < 0:
        x = 0.0                                   # unsigned codes clamp x < 0 to 0
    fs = codebook.sorted_fields
    if x == 0:
        if not codebook.has_zero:
            raise ValueError(f"x contains an exact 0 but {codebook.name} codes have no zero")
        return 0
    if np.isinf(x):
        idx = len(fs) - 1
    else:
        u = abs(Fraction(x)) / Fraction(float(S))
        idx = 0
        for i in range(len(fs) - 1):
            lo, hi = fs[i], fs[i + 1]
            if codebook.fields[lo] == ():          # zero vs the smallest non-zero magnitude
                if underflow == "clamp":
                    up = True
                elif rounding == "linear":
                    up = u > codebook.magnitude(hi) / 2
                else:
                    j = 4 * codebook.log_pos[hi] - 2 * codebook.log_step
                    up = u ** 4 > Fraction(2) ** int(j)
            elif rounding == "linear":
                up = u > (codebook.magnitude(lo) + codebook.magnitude(hi)) / 2
            else:
                j = 2 * (codebook.log_pos[lo] + codebook.log_pos[hi])
                assert j.denominator == 1
                up = u ** 4 > Fraction(2) ** int(j)
            if up:
                idx = i + 1
            else:
                break                              # thresholds increase
    f = fs[idx]
    if codebook.fields[f] == ():
        return 0
    neg = codebook.signed and x < 0
    return ((1 << (codebook.bits - 1)) if neg else 0) | f


def _per_channel(S, shape):
    s = np.asarray(S, dtype=np.float32)
    if s.ndim == 0 or s.size == 1:
        return np.broadcast_to(s.reshape(()), shape)
    return np.broadcast_to(s, shape)


def encode_exact(x, S, codebook, rounding="log", underflow="round"):
    """Codes (uint8, x's shape) of a float array; S scalar or per channel (last axis)."""
    x = np.asarray(x)
    Sb = _per_channel(S, x.shape)
    out = np.empty(x.shape, dtype=np.uint8)
    for idx in np.ndindex(x.shape):
        out[idx] = encode_exact_scalar(x[idx], Sb[idx], codebook, rounding, underflow)
    return out


# -- decoding, terms ---------------------------------------------------------
def values_exact(codes, codebook):
    """v(code) for every code, as a Fraction object array."""
    c = np.asarray(codes)
    out = np.empty(c.shape, dtype=object)
    for idx in np.ndindex(c.shape):
        out[idx] = codebook.value(c[idx])
    return out


def dequantize_exact(codes, S, codebook):
    """S * v(code) as Fractions (S per tensor or per channel along the last axis)."""
    v = values_exact(codes, codebook)
    Sb = _per_channel(S, v.shape)
    out = np.empty(v.shape, dtype=object)
    for idx in np.ndindex(v.shape):
        out[idx] = Fraction(float(Sb[idx])) * v[idx]
    return out


def terms_shift(codebook, rule="exact"):
    """The static shift of §12.5 for a codebook and product rule."""
    if rule == "exact":
        return -codebook.min_exponent
    if rule == "deepshift":
        if codebook.num_terms != 1:
            raise ValueError("rule 'deepshift' takes one-term codes (PoT, log base 2, DeepShift)")
        return 0
    raise ValueError(f"rule must be 'exact' or 'deepshift', got {rule!r}")


def codes_to_terms(codes, codebook, rule="exact"):
    """(signs, exponents int8 [T, *codes.shape], shift) of §12.5."""
    c = np.asarray(codes)
    sh = terms_shift(codebook, rule)
    T = codebook.num_terms
    hi = codebook.max_exponent + sh
    lo = codebook.min_exponent + sh
    if rule == "exact" and hi > 30:
        raise ValueError(f"{codebook.name}: exponents span {codebook.max_exponent - codebook.min_exponent}"
                         " > 30; rule 'exact' cannot hold them")
    if rule == "deepshift" and not -31 <= lo <= hi <= 30:
        raise ValueError(f"exponents [{lo}, {hi}] are outside [-31, 30] of rule 'deepshift'")
    signs = np.zeros((T,) + c.shape, dtype=np.int8)
    exps = np.zeros((T,) + c.shape, dtype=np.int8)
    for idx in np.ndindex(c.shape):
        s, f = codebook.split(c[idx])
        for t, e in enumerate(codebook.fields[f]):
            signs[(t,) + idx] = s
            exps[(t,) + idx] = e + sh
    return signs, exps, sh


def effective_scale(S, codebook, rule="exact"):
    """S_eff = S * 2^-shift as float32 (exact; ValueError if not a normal float32)."""
    sh = terms_shift(codebook, rule)
    s = np.asarray(S, dtype=np.float32)
    out = []
    for v in s.reshape(-1):
        q = Fraction(float(v)) * Fraction(2) ** (-sh)
        f = np.float32(float(q))
        if not (np.isfinite(f) and f >= np.finfo(np.float32).tiny and Fraction(float(f)) == q):
            raise ValueError(f"effective scale S * 2^-{sh} = {float(q)!r} is not a normal float32")
        out.append(f)
    return np.array(out, dtype=np.float32).reshape(s.shape)


# -- packing -----------------------------------------------------------------
def pack_codes(codes, bits):
    """Little-endian bit stream of the row-major codes (§12.5), uint8 [ceil(count*bits/8)]."""
    flat = [int(v) for v in np.asarray(codes).reshape(-1)]
    nbytes = (len(flat) * bits + 7) // 8
    acc = 0
    for i, v in enumerate(flat):
        if not 0 <= v < (1 << bits):
            raise ValueError(f"code {v} does not fit {bits} bits")
        acc |= v << (i * bits)
    return np.array([(acc >> (8 * j)) & 0xFF for j in range(nbytes)], dtype=np.uint8)


def unpack_codes(packed, count, bits):
    p = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if p.size != (count * bits + 7) // 8:
        raise ValueError(f"packed must hold {(count * bits + 7) // 8} bytes for {count} "
                         f"{bits}-bit codes, got {p.size}")
    acc = 0
    for j, b in enumerate(p.tolist()):
        acc |= b << (8 * j)
    return np.array([(acc >> (i * bits)) & ((1 << bits) - 1) for i in range(count)], dtype=np.uint8)


# -- DeepShift fixed point (§12.9) -------------------------------------------
def to_fixed(x, frac_bits=16, int_bits=16, rounding="floor"):
    """DeepShift's float -> fixed-point int conversion, exact, int64 array."""
    x = np.asarray(x)
    out = np.empty(x.shape, dtype=np.int64)
    lo = -(1 << (int_bits - 1 + frac_bits))
    hi = ((1 << (int_bits - 1)) - 1) << frac_bits
    for idx in np.ndindex(x.shape):
        v = float(x[idx])
        if np.isnan(v):
            raise ValueError("x contains NaN")
        if rounding == "floor":
            if np.isinf(v):
                q = lo if v < 0 else hi
            else:
                q = min(max(int(np.floor(Fraction(v) * 2 ** frac_bits)), lo), hi)
        elif rounding == "trunc":
            if np.isinf(v):
                raise ValueError("x * 2^frac is outside int32")
            q = int(Fraction(v) * 2 ** frac_bits)          # int() of a Fraction truncates
            if not -(1 << 31) <= q < (1 << 31):
                raise ValueError(f"x * 2^frac = {q} is outside int32")
        else:
            raise ValueError(f"rounding must be 'floor' or 'trunc', got {rounding!r}")
        out[idx] = q
    return out


def deepshift_linear(x, codes, bias=None, *, frac_bits=16, int_bits=16, rounding="floor",
                     acc_bits=32):
    """DeepShift's fixed-point linear layer (§12.9): float32 [..., M, N]."""
    xq = to_fixed(x, frac_bits, int_bits, rounding).astype(np.int32)
    b = None if bias is None else to_fixed(bias, frac_bits, int_bits, rounding).astype(np.int32)
    signs, exps, _ = codes.terms("deepshift")
    acc = shift_accumulate(xq, signs, exps, bias=b, acc_bits=acc_bits, rule="deepshift")
    return (acc.astype(np.float32) / np.float32(2 ** frac_bits)).astype(np.float32)


# -- reference layer (§12.10) ------------------------------------------------
def shift_linear(x_q, x_scale, x_zero_point, codes, y_scale, y_zero_point, bias=None,
                 mode="fp32", clip=None, acc_bits=32, rule="exact"):
    """y = requantize(shift_accumulate(x_q, codes.terms(rule)), S_eff) (§12.10)."""
    signs, exps, _ = codes.terms(rule)
    acc = shift_accumulate(x_q, signs, exps, a_zero_point=x_zero_point, bias=bias,
                           acc_bits=acc_bits, rule=rule)
    params = derive_requant(mode, x_scale, codes.effective_scale(rule), y_scale)
    ydt = np.asarray(y_zero_point).dtype
    if ydt not in (np.int8, np.uint8):
        raise TypeError(f"y_zero_point must be a numpy int8 or uint8 value, got {ydt}")
    lo, hi = activation_bounds(clip, y_scale, y_zero_point, ydt.name)
    return requantize(acc, params, int(y_zero_point), lo, hi).astype(ydt)
