"""PWLQ weights following jun-fang/PWLQ's code (docs/semantics.md §14).

Encoding is float32 arithmetic in the code's order (numpy float32, one RNE
rounding per operation); execution is four int8 GEMMs of §2 (centre codes,
tail codes, two masked row sums) and a fixed-order float32 combine.
"""
from dataclasses import dataclass

import numpy as np

from .accum import accumulate
from .arith import rne
from .requant import activation_bounds

f32 = np.float32
REGIONS = {"centre": 0, "pos": 1, "neg": 2}


@dataclass
class PWLQCodes:
    """Per weight: region (0 centre, 1 positive tail, 2 negative tail) and its integer code;
    per channel: float32 m, p, s_c, s_t."""
    bits: int
    region: np.ndarray      # uint8 [K, N]
    q: np.ndarray           # int8 [K, N]: q_c in the centre, q_t in the tails
    m: np.ndarray           # float32 [N]
    p: np.ndarray
    s_c: np.ndarray
    s_t: np.ndarray

    def levels_exact(self):
        """The exact level of every weight (Fractions, object [K, N])."""
        from fractions import Fraction as Fr
        out = np.empty(self.q.shape, dtype=object)
        for k, n in np.ndindex(self.q.shape):
            q, r = int(self.q[k, n]), int(self.region[k, n])
            if r == 0:
                out[k, n] = q * Fr(float(self.s_c[n]))
            elif r == 1:
                out[k, n] = Fr(float(self.p[n])) + q * Fr(float(self.s_t[n]))
            else:
                out[k, n] = -Fr(float(self.m[n])) + q * Fr(float(self.s_t[n]))
        return out

    def gemm_weights(self):
        """(Wc, Wt, Wp, Wn) int8 [K, N] of §14."""
        c, pos, neg = (self.region == 0), (self.region == 1), (self.region == 2)
        return (np.where(c, self.q, 0).astype(np.int8), np.where(~c, self.q, 0).astype(np.int8),
                pos.astype(np.int8), neg.astype(np.int8))


def _check_bits(bits):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an int in [2, 8], got {bits!r}")
    return int(bits)


def pwlq_breakpoint(w, dist="norm"):
    """The code's approximate optimal breakpoint per channel (last axis), float32 [N]."""
    w = np.asarray(w, dtype=np.float64)
    w2 = w.reshape(-1, w.shape[-1])
    m = np.abs(w2).max(axis=0)
    std = w2.std(axis=0, ddof=1) + 1e-12
    mt = m / std
    if dist == "norm":
        pt = np.log(0.86143114 * mt + 0.607901097496529)
    elif dist == "laplace":
        pt = 0.80304483 * np.sqrt(mt) - 0.3166785508381478
    else:
        raise ValueError(f"dist must be 'norm' or 'laplace', got {dist!r}")
    return ((pt / mt) * m).astype(np.float32)


def pwlq_encode(w, bits=4, p=None, m=None, dist="norm"):
    """PWLQCodes of float weights w [K, N] (§14); p and m per channel (float32) or derived."""
    b = _check_bits(bits)
    w = np.asarray(w)
    if w.dtype.kind not in "fiu" or w.ndim != 2:
        raise ValueError(f"w must be a real [K, N] array, got {w.dtype} {w.shape}")
    w = w.astype(np.float32)
    if np.isnan(w).any():
        raise ValueError("w contains NaN")
    N = w.shape[1]
    m = (np.abs(w).max(axis=0) if m is None else np.broadcast_to(np.asarray(m, dtype=np.float32),
                                                                   (N,))).astype(np.float32)
    if np.any(m <= 0) or not np.all(np.isfinite(m)):
        raise ValueError("m must be finite and > 0 per channel (an all-zero channel has no PWLQ code)")
    p = (pwlq_breakpoint(w, dist) if p is None else
         np.broadcast_to(np.asarray(p, dtype=np.float32), (N,))).astype(np.float32)
    if not np.all((p > 0) & (p < m)):
        raise ValueError("p must satisfy 0 < p < m for every channel")
    J = 2 ** (b - 1) - 1
    s_c = np.array([f32(float(2.0 * float(pi)) / float(2 ** b - 1)) for pi in p], dtype=f32)
    s_t = np.array([f32((float(mi) - float(pi)) / float(J)) for mi, pi in zip(m, p)], dtype=f32)
    with np.errstate(all="ignore"):
        qc = np.clip(np.rint(w / s_c), -(2 ** (b - 1)), J)
        qp = np.clip(np.rint((np.minimum(w, m) - p) / s_t), 0, J)
        qn = np.clip(np.rint((np.maximum(w, -m) + m) / s_t), 0, J)
    region = np.where(w >= p, 1, np.where(w <= -p, 2, 0)).astype(np.uint8)
    q = np.where(region == 0, qc, np.where(region == 1, qp, qn)).astype(np.int8)
    return PWLQCodes(b, region, q, m, p, s_c, s_t)


def pwlq_accumulate(x, x_zero_point, codes, bias=None):
    """(acc_c, acc_t, acc_p, acc_n): int32-wrapped accumulators of §14 (int64 arrays)."""
    Wc, Wt, Wp, Wn = codes.gemm_weights()
    return (accumulate(x, Wc, x_zero_point, None, bias), accumulate(x, Wt, x_zero_point),
            accumulate(x, Wp, x_zero_point), accumulate(x, Wn, x_zero_point))


def pwlq_multipliers(x_scale, codes, y_scale):
    """M_c, M_t, M_p, M_m float32 [N]: fl32(fl32(s_x * s_i) / s_y)."""
    sx, sy = f32(x_scale), f32(y_scale)
    out = []
    with np.errstate(over="ignore"):
        for s in (codes.s_c, codes.s_t, codes.p, codes.m):
            M = (sx * s.astype(f32)) / sy
            if not np.all(np.isfinite(M)):
                raise ValueError("a PWLQ multiplier s_x * s_i / s_y overflows float32")
            out.append(M.astype(f32))
    return out


def pwlq_linear(x_q, x_scale, x_zero_point, codes, y_scale, y_zero_point, bias=None, clip=None):
    """y[..., M, N] of §14 in y_zero_point's dtype (numpy int8 or uint8)."""
    ydt = np.asarray(y_zero_point).dtype
    if not isinstance(y_zero_point, (np.ndarray, np.generic)) or ydt not in (np.int8, np.uint8):
        raise TypeError("y_zero_point must be a numpy int8 or uint8 value")
    accs = pwlq_accumulate(x_q, x_zero_point, codes, bias)
    Mc, Mt, Mp, Mm = pwlq_multipliers(x_scale, codes, y_scale)
    a = [v.astype(f32) for v in accs]          # fl32(acc): int32 -> float32, RNE
    f = a[0] * Mc
    f = f + a[1] * Mt
    f = f + a[2] * Mp
    f = f - a[3] * Mm
    assert f.dtype == f32
    lo, hi = activation_bounds(clip, y_scale, y_zero_point, ydt.name)
    zp = int(y_zero_point)
    v = np.clip(f.astype(np.float64), lo - zp, hi - zp)
    return (np.asarray(rne(v)) + zp).astype(ydt)
