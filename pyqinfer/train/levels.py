"""Shared machinery of the level-set quantizers (PoT, DeepShift-Q, APoT, log).

A level set is a finite set of magnitudes ``L`` in [0, 1] (max 1) proportional
to dyadic numbers, ``L[j] = I[j] / max(I)`` with integers ``I`` (the integer
codebook the engine multiplies by). The real weight is ``alpha * sign * L[j]``
in the training form and ``fl32(alpha / max(I)) * sign * I[j]`` in the eval
(engine) form: scale ``fl32(f64(alpha) / max(I))``, integer ``sign * I[j]``.
Each integer level is also a sum of powers of two (``terms``), the shift codes
of docs/semantics.md §12.1 (``exact`` rule: exponents >= 0).

``LevelSet`` holds the sorted levels; the order used for ties in the nearest
projection may differ (``tie_order``: APoT's reference repo order).
``LevelQuantizer`` is the module: ``x/alpha`` clamped to [-1, 1] (signed) or
[0, 1], projected (linear-domain nearest, or log-domain rounding in a
subclass), times alpha; the alpha gradient is APoT's RCF gradient and the x
gradient is the STE (unclipped for weights, as APoT's reference code does).
As an output (activation) quantizer after a layer, the eval form is a
MultiThreshold on the integer accumulator (``integer_thresholds``) followed
by the level lookup (``level_codes``).
"""
from dataclasses import dataclass
from fractions import Fraction
import torch
from torch import nn

from .base import Quantizer, WeightPart
from .observers import make_observer
from .rounding import make_generator, project_to_levels


@dataclass
class LevelSet:
    """Sorted normalised magnitudes ``values`` (float64, max 1) and their integer
    codebook ``ints`` (float64 exact integers, ``values = ints / max_int``), the shift
    ``terms`` of each integer level (exponents e >= 0 with int = sum 2^e), and
    ``tie_order`` (indices of ``values`` in the order the nearest projection scans
    them; a tie goes to the first; None: sorted order, i.e. to the lower level)."""

    values: torch.Tensor
    ints: torch.Tensor
    terms: list
    tie_order: torch.Tensor = None
    proj_values: torch.Tensor = None   # float32 levels the projection compares with (repo arithmetic)

    @property
    def max_int(self):
        return int(self.ints.max())

    @classmethod
    def from_fractions(cls, raw, scan_order=None):
        """From exact dyadic magnitudes ``raw`` (Fractions, any positive maximum M):
        ints = raw * D with D the largest denominator (a power of two), values =
        raw / M. scan_order: the same raw values in the projection's tie order."""
        vals = sorted(set(Fraction(v) for v in raw))
        D = max(v.denominator for v in vals)
        if D & (D - 1):
            raise ValueError(f"level denominators must be powers of two, got {D}")
        ints = [int(v * D) for v in vals]
        terms = [[i for i in range(n.bit_length()) if n >> i & 1] for n in ints]
        order = None
        if scan_order is not None:
            pos = {v: j for j, v in enumerate(vals)}
            order = torch.tensor([pos[Fraction(v)] for v in scan_order], dtype=torch.long)
        top = max(ints)
        return cls(torch.tensor([n / top for n in ints], dtype=torch.float64),
                   torch.tensor(ints, dtype=torch.float64), terms, order)

    def __len__(self):
        return len(self.values)


def shift_codes(ints_signed, levelset, max_terms=None):
    """Shift terms of signed integer weights: (signs, exponents) int8 tensors [T, ...]
    with w = sum_t s_t 2^e_t (docs/semantics.md §12.1, rule 'exact')."""
    T = max(1, max(len(t) for t in levelset.terms)) if max_terms is None else max_terms
    mag = ints_signed.abs().to(torch.int64)
    sign = torch.sign(ints_signed).to(torch.int8)
    signs = torch.zeros((T,) + tuple(mag.shape), dtype=torch.int8)
    exps = torch.zeros((T,) + tuple(mag.shape), dtype=torch.int8)
    for j, (v, t) in enumerate(zip(levelset.ints.tolist(), levelset.terms)):
        m = mag == int(v)
        for ti, e in enumerate(sorted(t, reverse=True)):
            signs[ti][m] = sign[m]
            exps[ti][m] = e
    return signs, exps


class RCFQuantize(torch.autograd.Function):
    """APoT's reparameterized clipping function around a projection ``proj``.

    forward: alpha * proj(clamp(x / alpha, lo, 1)); backward:
    grad_alpha = sum g * (sign(u) 1[|u| > 1] + (q - u) 1[|u| <= 1]) (0 below lo = 0
    for unsigned), grad_x = g (weights: not clipped, APoT's reference) or g 1[inside].
    """

    @staticmethod
    def forward(ctx, x, alpha, proj, signed, clip_x_grad):
        u = x / alpha
        lo = -1.0 if signed else 0.0
        q = proj(torch.clamp(u, lo, 1.0))
        ctx.save_for_backward(u, q)
        ctx.signed, ctx.clip = signed, clip_x_grad
        return q * alpha

    @staticmethod
    def backward(ctx, g):
        u, q = ctx.saved_tensors
        over = u.abs() > 1 if ctx.signed else u > 1
        under = torch.zeros_like(over) if ctx.signed else u < 0
        inside = ~over & ~under
        ga = g * torch.where(over, torch.sign(u), torch.where(under, torch.zeros_like(u), q - u))
        gx = g * inside.to(g.dtype) if ctx.clip else g
        return gx, ga.sum().reshape(()), None, None, None


class LevelQuantizer(Quantizer):
    """Base module for level-set quantizers (see the module docstring).

    signed: weights (sign x magnitude level); unsigned: activations.
    alpha: the clipping scale; ``learn_alpha`` makes it a Parameter trained by RCF.
    alpha_init: a number, or None for the data's max |x| (weights: at first use;
    activations: from the calibration observer).
    """

    scheme = "levels"
    domain = "linear"

    def __init__(self, levelset, signed=True, weight=False, learn_alpha=True, alpha_init=None,
                 rounding="nearest", seed=None, observer="minmax", observer_kw=None):
        super().__init__()
        self.ls = levelset
        self.signed, self.weight = bool(signed), bool(weight)
        self.rounding = rounding
        self.generator = make_generator(seed)
        self.learn_alpha = bool(learn_alpha)
        self.alpha_init = alpha_init
        self.observer = make_observer(observer, None, **dict(observer_kw or {}))
        a = torch.tensor(1.0 if alpha_init is None else float(alpha_init), dtype=torch.float32)
        if self.learn_alpha:
            self.alpha = nn.Parameter(a)
        else:
            self.register_buffer("alpha", a)
        self.register_buffer("initialized", torch.tensor(alpha_init is not None))

    # ---------------------------------------------------------------- alpha
    def _set_alpha(self, a):
        a = torch.as_tensor(float(a), dtype=torch.float32).clamp(min=torch.finfo(torch.float32).tiny)
        self.alpha.data = a.clone() if self.learn_alpha else a
        self.initialized.fill_(True)

    def init_from(self, x):
        if self.observer.seen:
            lo, hi = self.observer.range()
            self._set_alpha(max(float(hi), float(-lo) if self.signed else 0.0))
        elif x is not None:
            self._set_alpha(float(x.detach().abs().max()))

    def _prepare(self, x):
        if not bool(self.initialized):
            self.init_from(x)            # x is already transform()ed

    def transform(self, x):
        """The tensor that is quantized (APoT weight normalization overrides it)."""
        return x

    # ---------------------------------------------------------- projection
    def project_index(self, m):
        """Indices into ls.values of magnitudes m (in [0, 1]); deterministic unless
        stochastic rounding in training."""
        levels = self.ls.values.to(m.dtype) if self.ls.proj_values is None else \
            self.ls.proj_values.to(m.dtype)
        if self.ls.tie_order is not None and not (self.rounding == "stochastic" and self.training):
            _, idx = project_to_levels(m, levels[self.ls.tie_order], "nearest")
            return self.ls.tie_order[idx]
        rnd = self.rounding if self.training else "nearest"
        _, idx = project_to_levels(m, levels, rnd, self.generator)
        return idx

    def _proj(self, u):
        mag = u.abs() if self.signed else u
        idx = self.project_index(mag.detach())
        q = self.ls.values.to(u.dtype)[idx]
        return torch.sign(u) * q if self.signed else q

    def forward(self, x):
        if self.calibrating:
            self.observer.observe(x)
            return x
        x = self.transform(x)
        self._prepare(x)
        return RCFQuantize.apply(x, self.alpha, self._proj, self.signed, not self.weight)

    # ------------------------------------------------------------ integers
    @property
    def int_scale(self):
        """fl32(f64(alpha) / max_int): the real value of integer level 1."""
        return (self.alpha.detach().to(torch.float64) / self.ls.max_int).to(torch.float32)

    @torch.no_grad()
    def int_repr(self, x):
        """sign * L[j] * D as float64 integers (deterministic projection)."""
        x = self.transform(x.detach())
        self._prepare(x)
        u = torch.clamp(x.to(torch.float32) / self.alpha.detach(), -1.0 if self.signed else 0.0, 1.0)
        idx = self.project_index((u.abs() if self.signed else u))
        ints = self.ls.ints[idx]
        return torch.sign(u).to(torch.float64) * ints if self.signed else ints

    def grid_read(self, x):
        return torch.round((x.to(torch.float32) / self.int_scale).to(torch.float64))

    @torch.no_grad()
    def dequantize(self, q):
        return q.to(torch.float32) * self.int_scale

    def integer_parts(self, w):
        q = self.int_repr(w)
        bits = 8 if float(self.ls.ints.max()) <= 127 else None
        signs, exps = shift_codes(q, self.ls)
        return [WeightPart(q, self.int_scale.reshape(1), torch.zeros(1, dtype=torch.float64), bits,
                           True, {"signs": signs, "exponents": exps, "rule": "exact"})]

    def qparams(self):
        top = self.ls.max_int
        width = 8 if top <= (127 if self.signed else 255) else 16 if top <= (32767 if self.signed else 65535) else 32
        return {"scheme": self.scheme, "bits": self.bits, "signed": self.signed,
                "dtype": ("int" if self.signed else "uint") + str(width),   # container of the codes
                "qmin": -float(self.ls.ints.max()) if self.signed else 0.0,
                "qmax": float(self.ls.ints.max()), "scale": self.int_scale,
                "zero_point": torch.zeros((), dtype=torch.float64), "ch_axis": None,
                "alpha": float(self.alpha.detach()), "levels": self.ls.values.clone(),
                "level_ints": self.ls.ints.clone(),
                "domain": self.domain}

    # ------------------------------------------- as an output (MultiThreshold)
    def thresholds_normalized(self):
        """Decision points between consecutive sorted levels, in units of alpha:
        a value above t_j (strictly) maps to level j + 1. Linear domain: midpoints."""
        v = self.ls.values
        return (v[1:] + v[:-1]) / 2

    def level_codes(self):
        return self.ls.ints.clone()

    def integer_thresholds(self, x_scale, w_scale, relu=False):
        """T[c, j] with y = ints[#{j : acc >= T[c, j]}] on the int32 accumulator (MultiThreshold >=).

        z = acc * a_c with a_c = f64(fl32(s_x * s_w[c])); z > t (strict, ties to the lower
        level as the sorted nearest projection) is acc >= floor(t / a_c) + 1, in float64."""
        if self.signed:
            raise NotImplementedError("threshold outputs are implemented for unsigned levels")
        a = (x_scale.to(torch.float32).reshape(()) * w_scale.to(torch.float32).reshape(-1)).to(torch.float64)
        t = self.thresholds_normalized() * float(self.alpha.detach())
        T = torch.floor(t.reshape(1, -1) / a.reshape(-1, 1)) + 1
        return T


__all__ = ["LevelSet", "LevelQuantizer", "RCFQuantize", "shift_codes"]
