"""Shift term arithmetic for power-of-two weights (docs/semantics.md §12.1-12.4).

A shift weight is w[k, n] = sum_t s[t, k, n] * 2^e[t, k, n] (T <= 3 terms).
The reference computes every term product with Python-exact integers
(numpy object arrays), sums exactly and saturates once to the declared
accumulator width.
"""
import numpy as np

from .arith import INT32_MAX

PRODUCT_RULES = ("exact", "deepshift")

# activation dtype -> (amin, amax); zero points only for the 8-bit types
_ACT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-(2 ** 15), 2 ** 15 - 1),
               "int32": (-(2 ** 31), 2 ** 31 - 1)}
_EXP_RANGE = {"exact": (0, 30), "deepshift": (-31, 30)}


def check_shift_terms(signs, exponents, rule="exact"):
    """signs, exponents as int64 arrays [T, K, N] after checking §12.1.

    Exponents of switched-off terms (sign 0) are ignored and may hold anything
    in the int8 range.
    """
    if rule not in PRODUCT_RULES:
        raise ValueError(f"rule must be one of {PRODUCT_RULES}, got {rule!r}")
    s = np.asarray(signs)
    e = np.asarray(exponents)
    for name, arr in (("signs", s), ("exponents", e)):
        if arr.dtype != np.int8:
            raise TypeError(f"{name} must have dtype int8, got {arr.dtype}")
    if s.ndim == 2:
        s, e = s[None], (e[None] if e.ndim == 2 else e)
    if s.ndim != 3 or s.shape != e.shape:
        raise ValueError(f"signs and exponents must both have shape [T, K, N] (or [K, N]), "
                         f"got {np.asarray(signs).shape} and {np.asarray(exponents).shape}")
    if not 1 <= s.shape[0] <= 3:
        raise ValueError(f"a shift weight has 1 to 3 terms, got T = {s.shape[0]}")
    if np.any((s < -1) | (s > 1)):
        raise ValueError("signs must be in {-1, 0, +1}")
    lo, hi = _EXP_RANGE[rule]
    on = s != 0
    if np.any(on & ((e < lo) | (e > hi))):
        bad = e[on & ((e < lo) | (e > hi))]
        raise ValueError(f"exponents {sorted(set(bad.tolist()))[:4]} are outside [{lo}, {hi}] "
                         f"of rule {rule!r}")
    return s.astype(np.int64), e.astype(np.int64)


def _check_activations(a, a_zero_point, rule):
    a = np.asarray(a)
    if a.dtype.name not in _ACT_RANGES:
        raise TypeError(f"a must have dtype in {list(_ACT_RANGES)}, got {a.dtype}")
    if rule == "deepshift" and a.dtype == np.uint8:
        raise TypeError("rule 'deepshift' needs signed activations (int8, int16, int32)")
    if a.ndim < 2:
        raise ValueError(f"a must have shape [..., M, K], got {a.shape}")
    za = 0 if a_zero_point is None else int(a_zero_point)
    amin, amax = _ACT_RANGES[a.dtype.name]
    if za and (a.dtype.name not in ("int8", "uint8") or rule != "exact"):
        raise ValueError(f"a_zero_point must be 0 for {a.dtype} activations and rule {rule!r}")
    if not amin <= za <= amax:
        raise ValueError(f"a_zero_point {za} is outside the {a.dtype} range [{amin}, {amax}]")
    return a, za


def _check_acc_bits(acc_bits):
    if isinstance(acc_bits, (bool, np.bool_)) or not isinstance(acc_bits, (int, np.integer)):
        raise TypeError(f"acc_bits must be an int in [8, 32], got {acc_bits!r}")
    if not 8 <= int(acc_bits) <= 32:
        raise ValueError(f"acc_bits must be in [8, 32], got {acc_bits}")
    return int(acc_bits)


def _bias(bias, n):
    if bias is None:
        return [0] * n
    b = np.asarray(bias)
    if b.dtype != np.int32:
        raise TypeError(f"bias must have dtype int32, got {b.dtype}")
    if b.shape != (n,):
        raise ValueError(f"bias must have shape ({n},), got {b.shape}")
    return [int(v) for v in b]


def term_product(a, s, e, za=0, rule="exact"):
    """One term times one activation (§12.1), Python ints."""
    if s == 0:
        return 0
    x = a - za
    if e >= 0:
        return s * x * (1 << e)
    return s * (x >> -e)          # Python >> on ints is floor division by 2^-e


def saturate(v, acc_bits):
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    return min(max(v, lo), hi)


def shift_accumulate(a, signs, exponents, *, a_zero_point=None, bias=None, acc_bits=32,
                     rule="exact"):
    """acc[..., m, n] of §12.2 as an int64 array (values in the W-bit range)."""
    s, e = check_shift_terms(signs, exponents, rule)
    a, za = _check_activations(a, a_zero_point, rule)
    W = _check_acc_bits(acc_bits)
    T, K, N = s.shape
    if a.shape[-1] != K:
        raise ValueError(f"inner dimensions differ: a {a.shape} vs terms [T={T}, K={K}, N={N}]")
    bias_l = _bias(bias, N)
    lead = a.shape[:-1]
    a2 = a.reshape(-1, K).astype(object)
    out = np.empty((a2.shape[0], N), dtype=np.int64)
    x = a2 - za
    for n in range(N):
        col = np.zeros(a2.shape[0], dtype=object)
        for t in range(T):
            for k in range(K):
                st = int(s[t, k, n])
                if st == 0:
                    continue
                et = int(e[t, k, n])
                if et >= 0:
                    col = col + st * x[:, k] * (1 << et)
                else:
                    col = col + st * np.array([int(v) >> -et for v in x[:, k]], dtype=object)
        for m in range(a2.shape[0]):
            out[m, n] = saturate(int(col[m]) + bias_l[n], W)
    return out.reshape(*lead, N)


def shift_accumulator_bound(signs, exponents, a_dtype, *, a_zero_point=None, bias=None,
                            rule="exact"):
    """bound[n] of §12.3 (int64 [N]; Python ints where it would not fit)."""
    s, e = check_shift_terms(signs, exponents, rule)
    name = np.dtype(a_dtype).name
    if name not in _ACT_RANGES:
        raise TypeError(f"a_dtype must be one of {list(_ACT_RANGES)}, got {name}")
    amin, amax = _ACT_RANGES[name]
    za = 0 if a_zero_point is None else int(a_zero_point)
    max_a = max(za - amin, amax - za)
    T, K, N = s.shape
    bias_l = _bias(bias, N)
    out = []
    for n in range(N):
        tot = abs(bias_l[n])
        for t in range(T):
            for k in range(K):
                if s[t, k, n] == 0:
                    continue
                et = int(e[t, k, n])
                tot += max_a << et if et >= 0 else -((-max_a) >> -et)   # ceil(max_a / 2^-e)
        out.append(tot)
    return np.array(out, dtype=object if max(out, default=0) > 2 ** 62 else np.int64)


def shift_can_overflow_int32(signs, exponents, a_dtype, **kw):
    """True when int32 lanes cannot be proven exact (§12.3)."""
    return bool(np.any(shift_accumulator_bound(signs, exponents, a_dtype, **kw) > INT32_MAX))


def shift_decode(signs, exponents, rule="exact"):
    """The integer weight values sum_t s * 2^e (rule 'exact'), int64 [K, N].

    This is what a multiply kernel runs on the same codes.
    """
    s, e = check_shift_terms(signs, exponents, rule)
    if rule != "exact":
        raise ValueError("only rule 'exact' weights have integer values; 'deepshift' products "
                         "floor each term and cannot be decoded to a multiplier")
    return np.sum(np.where(s != 0, s << np.where(s != 0, e, 0), 0), axis=0)
