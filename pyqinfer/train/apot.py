"""APoT: Additive Powers-of-Two quantization (Li, Dong, Wang, ICLR 2020; the note §3).

Level sets (one function each):

* ``apot_levels(B, k)``: the paper's eq. 5, ``{sum_{i<n} p_i}`` with
  ``p_i in {0, 2^-i, 2^-(i+n), ..., 2^-(i+(2^k-2)n)}``, ``n = B / k`` terms, then
  normalised to max 1 (the paper's gamma). k = B gives PoT, k = 1 uniform.
* ``apot_levels_repo(B)``: yhhhli/APoT_Quantization ``build_power_value(B,
  additive=True)`` for B = 2..6 (B = 3 and 5 are not of the paper's k x n form),
  normalised by the max sum M. The projection compares, in float32, with the
  repo's float32 levels ``fl32(v) * fl32(1 / M)`` and scans them in the repo's
  order ``list(set(values))`` (Python float set order): ``torch.min(dim)``
  returns the first minimum, so **a tie goes to the level that comes first in
  that order** (not to the lower or the even one). B = 1 (2-bit weights) is
  ternary ``{0, 1}`` (the repo runs 2 bits uniform).

The quantizer (``APoTQuantizer``): weights are sign x B = bits - 1 (repo
levels by default, or the paper's with ``k``), activations unsigned with
B = bits. Weight normalization ``(w - mean) / std`` per layer (torch's
unbiased std, no epsilon; the repo's ``weight_norm``) before quantizing, never
rescaled (BatchNorm absorbs the scale; turn it off, ``weight_norm=False``, for
PTQ of a model without BN after the layer). RCF clipping
``alpha * Pi(clamp(w / alpha, -1, 1))`` with the note's alpha gradient
``sum g (sign 1[|w/alpha| > 1] + (q - w/alpha) 1[|w/alpha| <= 1])`` and an
unclipped weight gradient (levels.RCFQuantize). Init alpha_w = 3.0 (with
weight normalization) and alpha_a = 6.0 (the repo's), unless calibrated.
Engine form: integer levels = sums of powers of two (shift terms), scale
``fl32(alpha / max_int)`` (the note's S_w = alpha_w / M_{b-1}).
"""
from fractions import Fraction
from itertools import product

import torch

from .levels import LevelQuantizer, LevelSet

_REPO_TERMS = {
    2: ([1, 2, 3], [], []),
    3: ([1, 2, 4], [3], []),
    4: ([1, 3, 5], [2, 4, 6], []),
    5: ([1, 3, 6], [2, 4, 7], [5]),
    6: ([1, 4, 7], [2, 5, 8], [3, 6, 9]),
}


def apot_levels(B, k):
    """The paper's eq. 5 level set for B bits of magnitude and base bit-width k (k | B)."""
    B, k = int(B), int(k)
    if k < 1 or B % k:
        raise ValueError(f"k must divide B, got B={B}, k={k}")
    n = B // k
    term_sets = [[Fraction(0)] + [Fraction(1, 2 ** (i + j * n)) for j in range(2 ** k - 1)]
                 for i in range(n)]
    return LevelSet.from_fractions([sum(c) for c in product(*term_sets)])


def apot_levels_repo(B):
    """The reference repo's additive level set for B in 1..6 (tie order and float32 levels as the repo)."""
    B = int(B)
    if B == 1:
        return LevelSet.from_fractions([Fraction(0), Fraction(1)])
    if B not in _REPO_TERMS:
        raise ValueError(f"APoT repo levels exist for B in 1..6, got {B}")
    sets = [[0.0] + [2.0 ** -e for e in es] for es in _REPO_TERMS[B]]
    # the repo's loop order: for a in base_a: for b in base_b: for c in base_c
    sums = [a + b + c for a in sets[0] for b in (sets[1] or [0.0]) for c in (sets[2] or [0.0])]
    scan = list(set(sums))
    ls = LevelSet.from_fractions([Fraction(v) for v in sums], [Fraction(v) for v in scan])
    vals32 = torch.tensor(scan, dtype=torch.float32)
    vals32 = vals32.mul(1.0 / torch.max(vals32))          # the repo's float32 normalisation
    proj = torch.empty(len(ls), dtype=torch.float32)
    proj[ls.tie_order] = vals32
    ls.proj_values = proj
    return ls


class APoTQuantizer(LevelQuantizer):
    """APoT quantizer (see the module docstring)."""

    scheme = "apot"

    def __init__(self, bits=4, signed=True, weight=False, k=None, weight_norm=None,
                 learn_alpha=True, alpha_init=None, rounding="nearest", seed=None,
                 observer="minmax", observer_kw=None):
        self.bits = int(bits)
        B = self.bits - 1 if signed else self.bits
        ls = apot_levels_repo(B) if k is None else apot_levels(B, k)
        self.k = k
        self.weight_norm = bool(weight) if weight_norm is None else bool(weight_norm)
        self.default_alpha = (3.0 if self.weight_norm else None) if weight else 6.0
        super().__init__(ls, signed, weight, learn_alpha, alpha_init, rounding, seed, observer,
                         observer_kw)

    def transform(self, x):
        if self.weight and self.weight_norm:
            return (x - x.mean()) / x.std()
        return x

    def init_from(self, x):
        if self.observer.seen or self.default_alpha is None:
            return super().init_from(x)
        self._set_alpha(self.default_alpha)

    def qparams(self):
        d = super().qparams()
        d.update({"k": self.k, "weight_norm": self.weight_norm})
        return d
