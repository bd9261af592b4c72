"""Power-of-two quantizers: PoT (APoT's non-additive level set) and DeepShift-Q.

PoT (the note §2, yhhhli/APoT_Quantization ``build_power_value(B, additive=False)``):
magnitudes ``{0} U {2^-i : i = 0 .. 2^B - 2}`` after normalising the max to 1
(2^B magnitudes; weights use B = bits - 1 plus a sign, activations B = bits),
times a learned clipping scale alpha (APoT's RCF, levels.RCFQuantize).
Projection in the **linear** domain, ``argmin |x/alpha - L|`` (decision point
1.5 2^n), ties as the reference repo (its ``list(set(values))`` scan order).
``pot_levels`` is the one place that builds this set.

DeepShift-Q (Elhoushi et al., arXiv 1905.13298, mostafaelhoushi/DeepShift
``modules_q.py``): a float weight, each forward ``clampabs(w, 2^p_min, 2^0)``
then ``sign(w) 2^round(log2|w|)``, ``p in [-(2^(b-1) - 1), 0]``; zero only for an
exact 0; **log-domain** rounding (decision point sqrt(2) 2^n); identity STE;
``rounding='stochastic'`` = floor + Bernoulli(frac) on the exponent. No scale
(alpha = 1): BatchNorm absorbs it. Integer codebook ``2^(p - p_min)``, scale
``2^p_min``. DeepShift's own Q16.16 truncated activations (§12.1 ``deepshift``
product rule) are not emulated: the layer's activations are the layer config's.
"""
from fractions import Fraction

import torch

from .levels import LevelQuantizer, LevelSet
from .logq import LogDomainQuantizer


def _repo_scan_order(floats):
    """The order APoT's build_power_value scans its levels: list(set(python floats))."""
    return [Fraction(v) for v in list(set(floats))]


def pot_levels(B):
    """LevelSet of PoT magnitudes {0, 2^-(2^B - 2), ..., 1/2, 1} (B >= 1), repo tie order."""
    B = int(B)
    if not 1 <= B <= 4:
        raise ValueError(f"PoT B must be in [1, 4] (bits 2-5 signed, 1-4 unsigned), got {B}")
    base = [0.0] + [2.0 ** (-i - 1) for i in range(2 ** B - 1)]
    return LevelSet.from_fractions([Fraction(v) for v in base], _repo_scan_order(base))


def deepshift_levels(bits):
    """LevelSet {0} U {2^p : p in [-(2^(bits-1) - 1), 0]} (DeepShift-Q, sign separate)."""
    pmin = -(2 ** (int(bits) - 1) - 1)
    return LevelSet.from_fractions([Fraction(0)] + [Fraction(2) ** p for p in range(pmin, 1)])


class PoTQuantizer(LevelQuantizer):
    """PoT with RCF clipping (see the module docstring)."""

    scheme = "pot"

    def __init__(self, bits=4, signed=True, weight=False, learn_alpha=True, alpha_init=None,
                 rounding="nearest", seed=None, observer="minmax", observer_kw=None):
        self.bits = int(bits)
        super().__init__(pot_levels(self.bits - 1 if signed else self.bits), signed, weight,
                         learn_alpha, alpha_init, rounding, seed, observer, observer_kw)


class DeepShiftQuantizer(LogDomainQuantizer):
    """DeepShift-Q weights (see the module docstring); weights only."""

    scheme = "deepshift"

    def __init__(self, bits=5, signed=True, weight=True, rounding="nearest", seed=None, **_):
        if not signed:
            raise ValueError("DeepShift-Q weights are signed")
        self.bits = int(bits)
        pmin = -(2 ** (self.bits - 1) - 1)
        super().__init__(pmin, 0, 1, "exact", True, weight, rounding, seed)

    def forward(self, x):
        if self.calibrating:
            return x
        # identity STE (DeepShift ste.py), no RCF: alpha is fixed to 1
        q = self._proj(torch.clamp(x.detach(), -1.0, 1.0))
        return x + (q - x).detach()
