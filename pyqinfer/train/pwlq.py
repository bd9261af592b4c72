"""PWLQ: piecewise linear post-training weight quantization (Fang et al., ECCV 2020,
arXiv 2002.00104; the note §4). Follows jun-fang/PWLQ's code (``pw_opt=2``),
which produced the paper's numbers, where it differs from the paper.

Per output channel c, with m = max|w|, sigma = std(w) and a breakpoint p:

* centre (|w| < p): a b-bit **signed symmetric** quantizer on [-p, p], step
  ``s1 = 2p / (2^b - 1)``, integers clamped to [-2^(b-1), 2^(b-1) - 1] (the
  code's step; the paper's is p / (2^(b-1) - 1));
* tails (|w| >= p): ``sign(w) (p + s2 q2)``, a (b-1)-bit affine quantizer of |w|
  on [p, m], step ``s2 = (m - p) / (2^(b-1) - 1)``, q2 in [0, 2^(b-1) - 1];
* rounding: RNE (``torch.round``, as the code).

Breakpoint (``pwlq_breakpoint``): the code's closed forms in sigma units,
m~ = m / sigma: Gaussian ``p~ = ln(0.86143114 m~ + 0.607901097)``, Laplace
``p~ = 0.80304483 sqrt(m~) - 0.31667855``, p = p~ sigma; or ``"search"``: the
grid p = m * t, t in (0, 1/2] (the error is convex on (0, m/2)), minimising the
channel's squared quantization error.

Bias correction (``bias_correction=True``): ``w' = r (w_hat + d)`` with
``d = mean(w) - mean(w_hat)``, ``r = std(w) / std(w_hat)`` per channel.

Engine form (``integer_parts``): the weight is a sum of four integer tensors
with per-channel scales (r s1: centre codes; r s2: signed tail codes; r p:
tail signs; |r d|: sign(d) everywhere), i.e. the paper's three accumulators
plus the row-sum term of the bias-correction offset. The layer's eval forward
combines their int32 accumulators with layers._QLayer._requant_multi (a
proposal: docs/semantics.md has no PWLQ rule yet). PWLQ is post-training:
the training forward returns the quantized weight with an identity STE.
"""
import math

import torch

from .base import Quantizer, WeightPart

_GAUSS = (0.86143114, 0.607901097)
_LAPLACE = (0.80304483, -0.31667855)


def pwlq_breakpoint(w, bits=4, method="gaussian"):
    """Breakpoints p [OC] (float64) of weights w [OC, ...]: 'gaussian', 'laplace' or 'search'."""
    w = w.detach().to(torch.float64).reshape(w.shape[0], -1)
    m = w.abs().max(1).values
    sigma = w.std(1).clamp(min=1e-12)
    mt = m / sigma
    if method == "gaussian":
        pt = torch.log(_GAUSS[0] * mt + _GAUSS[1])
    elif method == "laplace":
        pt = _LAPLACE[0] * torch.sqrt(mt) + _LAPLACE[1]
    elif method == "search":
        best = torch.full_like(m, math.inf)
        p_best = m / 4
        for t in torch.linspace(0.01, 0.5, 50, dtype=torch.float64):
            p = m * t
            err = ((_pwlq_values(w, p, m, bits) - w) ** 2).sum(1)
            better = err < best
            best = torch.where(better, err, best)
            p_best = torch.where(better, p, p_best)
        return p_best
    else:
        raise ValueError(f"method must be 'gaussian', 'laplace' or 'search', got {method!r}")
    return (pt * sigma).clamp(min=0.0).minimum(m)


def _steps(p, m, bits):
    s1 = 2 * p / (2 ** bits - 1)
    s2 = (m - p) / (2 ** (bits - 1) - 1)
    return s1, s2


def _codes(w2, p, m, bits):
    """(centre mask, q1, q2, sign) for w2 [OC, K] float64."""
    s1, s2 = _steps(p, m, bits)
    s1c, s2c, pc = s1.reshape(-1, 1), s2.reshape(-1, 1), p.reshape(-1, 1)
    centre = w2.abs() < pc
    q1 = torch.clamp(torch.round(w2 / s1c.clamp(min=1e-300)), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    q2 = torch.clamp(torch.round((w2.abs() - pc) / s2c.clamp(min=1e-300)), 0, 2 ** (bits - 1) - 1)
    q1 = torch.where(centre, q1, torch.zeros_like(q1))
    q2 = torch.where(centre, torch.zeros_like(q2), q2)
    sign = torch.where(centre, torch.zeros_like(w2), torch.sign(w2))
    return centre, q1, q2, sign


def _pwlq_values(w2, p, m, bits):
    _, q1, q2, sign = _codes(w2, p, m, bits)
    s1, s2 = _steps(p, m, bits)
    return s1.reshape(-1, 1) * q1 + sign * (p.reshape(-1, 1) + s2.reshape(-1, 1) * q2)


def pwlq_levels(bits, p, m):
    """The sorted real level set of one channel with breakpoint p and range m (floats)."""
    s1, s2 = 2 * p / (2 ** bits - 1), (m - p) / (2 ** (bits - 1) - 1)
    centre = {s1 * k for k in range(-(2 ** (bits - 1)), 2 ** (bits - 1)) if abs(s1 * k) < p}
    tails = {sg * (p + s2 * j) for j in range(2 ** (bits - 1)) for sg in (-1, 1)}
    return sorted(centre | tails)


class PWLQQuantizer(Quantizer):
    """PWLQ weights, per output channel (see the module docstring)."""

    scheme = "pwlq"

    def __init__(self, bits=4, signed=True, weight=True, breakpoint="gaussian",
                 bias_correction=True, **_):
        super().__init__()
        if not (signed and weight):
            raise ValueError("PWLQ here quantizes (signed) weights only")
        self.bits = int(bits)
        if not 3 <= self.bits <= 8:
            raise ValueError(f"PWLQ bits must be in [3, 8], got {bits}")
        self.breakpoint = breakpoint
        self.bias_correction = bool(bias_correction)

    @torch.no_grad()
    def integer_parts(self, w):
        shape = w.shape
        w2 = w.detach().to(torch.float64).reshape(shape[0], -1)
        m = w2.abs().max(1).values.clamp(min=1e-12)
        p = pwlq_breakpoint(w2, self.bits, self.breakpoint).clamp(min=m * 1e-3)
        centre, q1, q2, sign = _codes(w2, p, m, self.bits)
        s1, s2 = _steps(p, m, self.bits)
        r = torch.ones_like(m)
        d = torch.zeros_like(m)
        if self.bias_correction:
            w_hat = s1.reshape(-1, 1) * q1 + sign * (p.reshape(-1, 1) + s2.reshape(-1, 1) * q2)
            d = w2.mean(1) - w_hat.mean(1)
            sd = w_hat.std(1)
            r = torch.where(sd > 0, w2.std(1) / sd.clamp(min=1e-300), torch.ones_like(sd))
        rd = r * d
        sd_sign = torch.sign(rd)
        ones = sd_sign.reshape(-1, 1).expand_as(w2)
        zeros = torch.zeros(shape[0], dtype=torch.float64)

        def f32(s):
            s = s.to(torch.float32)
            return torch.where(s > 0, s, torch.ones_like(s))

        meta = {"breakpoint": p.clone(), "range": m.clone(), "r": r.clone(), "d": d.clone()}
        parts = [WeightPart(q1.reshape(shape), f32(r * s1), zeros.clone(), self.bits, True, dict(meta, role="centre")),
                 WeightPart((sign * q2).reshape(shape), f32(r * s2), zeros.clone(), self.bits, True, {"role": "tail"}),
                 WeightPart(sign.reshape(shape), f32(r * p), zeros.clone(), "ternary", True, {"role": "tail_offset"})]
        if self.bias_correction:
            parts.append(WeightPart(ones.reshape(shape).clone(), f32(rd.abs()), zeros.clone(), "ternary",
                                    True, {"role": "mean_offset"}))
        return parts

    def forward(self, w):
        if self.calibrating:
            return w
        w_hat = sum(part.scale.reshape([-1] + [1] * (w.dim() - 1)) * part.w_int.to(torch.float32)
                    for part in self.integer_parts(w))
        return w + (w_hat - w).detach()

    def int_repr(self, w):
        return self.integer_parts(w)

    def qparams(self):
        return {"scheme": self.scheme, "bits": self.bits, "signed": True, "dtype": "int8",
                "ch_axis": 0, "breakpoint_method": self.breakpoint,
                "bias_correction": self.bias_correction}
