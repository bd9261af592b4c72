"""Logarithmic quantization (Miyashita, Lee, Murmann 2016, arXiv 1603.01025) and the
log-domain rounding it shares with DeepShift-Q (pot.py).

Definition (the note §1): ``LogQuant(x) = 0`` if x = 0, else ``2^x~`` with
``x~ = Clip(Round(log2|x|), FSR - 2^b, FSR)``. The paper's Clip and QuantTorch's
differ at the ends, so pyqinfer takes the exponent range and the zero code
explicitly: codes ``c in [c_min, c_max]``, level ``2^(c / r)`` (r = 1 for base 2,
r = 2 for base sqrt(2): ``c = Round(2 log2|x|)``), and ``zero``:

* ``"below"``: a value whose rounded code is below c_min becomes 0 (the paper's
  Clip as the note reads it; ``miyashita_range(bits, fsr)`` gives
  ``(fsr - 2^bits + 1, fsr - 1)``: one zero code and 2^bits - 1 exponents);
* ``"none"``: it becomes level c_min (QuantTorch's clamp; only x = 0 maps to 0);
* ``"exact"``: only x = 0 is 0 (DeepShift-Q's clampabs).

Values above the top level clamp to it. Rounding happens in the log domain,
so the decision point between 2^n and 2^(n+1) is sqrt(2) 2^n (not 1.5 2^n as
in APoT's linear projection). ``rounding="stochastic"`` rounds the code with
floor + Bernoulli(frac) (DeepShift's stochastic rounding), training only.

Base sqrt(2) levels: odd codes use the paper's hardware form
``sqrt(2) 2^n ~ 1.5 2^n = 2^n + 2^(n-1)`` (two shift terms), in the training
form too, so training and the integer engine use the same level values; the
decision points stay at the exact log-domain midpoints ``2^((c + 1/2) / 2)``.
Activations are unsigned; weights are sign + log code. The scale ``alpha``
is the top level (fixed, not learned); the integer codebook is
``level / level(c_min)`` (times 2 for sqrt(2) bases with an odd code).
"""
from fractions import Fraction
import math

import torch

from .levels import LevelQuantizer, LevelSet
from .rounding import round_stochastic


def _code_value(c, r):
    if r == 1:
        return Fraction(2) ** c
    n = c // 2
    return Fraction(2) ** n if c % 2 == 0 else Fraction(3, 2) * Fraction(2) ** n


def log_levels(c_min, c_max, zero=True, base="2"):
    """LevelSet of {0 (if zero)} U {level(c) : c_min <= c <= c_max}; base '2' or 'sqrt2'."""
    r = {"2": 1, "sqrt2": 2}[str(base)]
    if c_min > c_max:
        raise ValueError(f"c_min {c_min} > c_max {c_max}")
    raw = [_code_value(c, r) for c in range(c_min, c_max + 1)]
    if zero:
        raw = [Fraction(0)] + raw
    return LevelSet.from_fractions(raw)


def miyashita_range(bits, fsr):
    """(c_min, c_max) = (fsr - 2^bits + 1, fsr - 1): with the zero code, 2^bits codes."""
    return int(fsr) - 2 ** int(bits) + 1, int(fsr) - 1


class LogDomainQuantizer(LevelQuantizer):
    """LevelQuantizer whose projection rounds the code r*log2|x| (see the module docstring)."""

    domain = "log"

    def __init__(self, c_min, c_max, r=1, zero="below", signed=True, weight=False,
                 rounding="nearest", seed=None, observer="minmax", observer_kw=None):
        if zero not in ("below", "none", "exact"):
            raise ValueError(f"zero must be 'below', 'none' or 'exact', got {zero!r}")
        self.c_min, self.c_max, self.r, self.zero = int(c_min), int(c_max), int(r), zero
        ls = log_levels(self.c_min, self.c_max, True, "2" if r == 1 else "sqrt2")
        top = float(_code_value(self.c_max, self.r))
        super().__init__(ls, signed=signed, weight=weight, learn_alpha=False, alpha_init=top,
                         rounding=rounding, seed=seed, observer=observer, observer_kw=observer_kw)

    def set_range(self, c_min, c_max):
        """Move the code range (the level set and alpha follow)."""
        self.c_min, self.c_max = int(c_min), int(c_max)
        self.ls = log_levels(self.c_min, self.c_max, True, "2" if self.r == 1 else "sqrt2")
        self._set_alpha(float(_code_value(self.c_max, self.r)))

    def project_index(self, m):
        a = float(self.alpha.detach())
        with torch.no_grad():
            absval = (m.to(torch.float64) * a).clamp(min=1e-300)
            code = self.r * torch.log2(absval)
            if self.rounding == "stochastic" and self.training:
                c = round_stochastic(code, self.generator)
            else:
                c = torch.round(code)
            below = c < self.c_min
            c = c.clamp(self.c_min, self.c_max)
            idx = (c - self.c_min + 1).to(torch.long)
            zero = m == 0
            if self.zero == "below":
                zero = zero | below
            return torch.where(zero, torch.zeros_like(idx), idx)

    def thresholds_normalized(self):
        a = float(self.alpha.detach())
        first = 0.0 if self.zero == "exact" else \
            (2.0 ** ((self.c_min - 0.5) / self.r) / a if self.zero == "below" else 0.0)
        mids = [2.0 ** ((c + 0.5) / self.r) / a for c in range(self.c_min, self.c_max)]
        return torch.tensor([first] + mids, dtype=torch.float64)

    def qparams(self):
        d = super().qparams()
        d.update({"c_min": self.c_min, "c_max": self.c_max, "base": "2" if self.r == 1 else "sqrt2",
                  "zero": self.zero})
        return d


class LogQuantizer(LogDomainQuantizer):
    """Miyashita log quantizer. Give (c_min, c_max) explicitly, or ``bits`` (and
    optionally ``fsr``; by default fsr = round(log2 max|x|) + 1 at first use, so the
    top exponent is the data's) for ``miyashita_range``. Signed: sign + (bits - 1)-bit code."""

    scheme = "log"

    def __init__(self, bits=None, c_min=None, c_max=None, fsr=None, base="2", zero="below",
                 signed=True, weight=False, rounding="nearest", seed=None, observer="minmax",
                 observer_kw=None):
        self.bits = bits
        self.fsr_bits = None if bits is None else int(bits) - (1 if signed else 0)
        r = {"2": 1, "sqrt2": 2}[str(base)]
        self.auto = c_min is None and fsr is None
        if c_min is None:
            if bits is None:
                raise ValueError("give bits or (c_min, c_max)")
            c_min, c_max = miyashita_range(self.fsr_bits, 0 if fsr is None else fsr)
        super().__init__(c_min, c_max, r, zero, signed, weight, rounding, seed, observer, observer_kw)
        if self.auto:
            self.initialized.fill_(False)

    def init_from(self, x):
        if self.observer.seen:
            lo, hi = self.observer.range()
            mx = max(float(hi), float(-lo) if self.signed else 0.0)
        elif x is not None:
            mx = float(x.detach().abs().max())
        else:
            return
        fsr = int(round(self.r * math.log2(max(mx, 1e-30)))) + 1
        c_min, c_max = miyashita_range(self.fsr_bits, fsr)   # codes end at fsr - 1 (1/r octaves)
        self.set_range(c_min, c_max)
