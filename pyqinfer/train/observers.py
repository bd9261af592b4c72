"""Post-training calibration observers: the clipping range [lo, hi] of a tensor.

The dynamic-range problem: the min/max range of an activation is set by rare
outliers, and a b-bit grid stretched over it wastes levels. Three answers:

* ``MinMaxObserver``: the running min and max (no clipping).
* ``PercentileObserver``: the ``pct`` and ``100 - pct`` percentiles of the
  values seen (a seeded reservoir sample of at most ``max_samples`` values).
* ``MSEObserver``: the clipping range ``r * [min, max]``, r on the geometric grid
  0.95^i in [0.01, 1], that minimises the mean squared quantization error of the values
  seen on the quantizer's own integer grid (Banner et al. / Sung et al.'s
  ``MSE clipping``, here a grid search rather than a closed form).

Each observer gives ``range() -> (lo, hi)`` as float64 tensors, per tensor (0-d)
or per channel (``ch_axis`` set: one value per index of that axis).
``qparams_from_range`` turns a range into a float32 scale and an integer zero point.
"""
import math

import torch


def qparams_from_range(lo, hi, qmin, qmax, symmetric):
    """(scale float32, zero_point float64 holding integers) for a range [lo, hi].

    The range is first widened to contain 0 (real 0 must be exact).
    symmetric: zero point 0 and scale = max(|lo|, |hi|) / max(|qmin|, qmax) over the
    side that matters (qmax for signed full range [-2^(b-1), 2^(b-1)-1], qmax for
    unsigned). Asymmetric: scale = (hi - lo) / (qmax - qmin),
    zero_point = clamp(qmin - rne(lo / scale), qmin, qmax).
    A degenerate range (all zeros) gives scale 1, so that the scale stays finite
    and > 0 as the engine requires (docs/semantics.md §1.3).
    """
    lo = torch.minimum(torch.as_tensor(lo, dtype=torch.float64), torch.zeros((), dtype=torch.float64))
    hi = torch.maximum(torch.as_tensor(hi, dtype=torch.float64), torch.zeros((), dtype=torch.float64))
    if symmetric:
        amax = torch.maximum(-lo, hi) if qmin < 0 else hi
        scale = amax / qmax
        zp = torch.zeros_like(scale)
    else:
        scale = (hi - lo) / (qmax - qmin)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        zp = torch.clamp(qmin - torch.round(lo / safe), qmin, qmax)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).to(torch.float32)
    tiny = torch.finfo(torch.float32).tiny
    scale = torch.clamp(scale, min=tiny)
    return scale, zp


def _reduce(x, ch_axis, fn):
    if ch_axis is None:
        return fn(x.reshape(-1))
    x = x.transpose(0, ch_axis).reshape(x.shape[ch_axis], -1)
    return torch.stack([fn(row) for row in x])


class MinMaxObserver:
    """Running min and max (per tensor, or per channel along ch_axis)."""

    def __init__(self, ch_axis=None, **_):
        self.ch_axis = ch_axis
        self.lo = self.hi = None

    def observe(self, x):
        x = x.detach().to(torch.float64)
        lo, hi = _reduce(x, self.ch_axis, torch.min), _reduce(x, self.ch_axis, torch.max)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)

    @property
    def seen(self):
        return self.lo is not None

    def range(self, qmin=None, qmax=None, symmetric=None):
        if self.lo is None:
            raise RuntimeError("observer has seen no data: run calibration first")
        return self.lo, self.hi


class _SampleObserver:
    """Keeps a seeded uniform sample of at most max_samples values per channel."""

    def __init__(self, ch_axis=None, max_samples=1 << 16, seed=0, **_):
        self.ch_axis = ch_axis
        self.max_samples = int(max_samples)
        self.gen = torch.Generator().manual_seed(seed)
        self.samples = None

    @property
    def seen(self):
        return self.samples is not None

    def observe(self, x):
        x = x.detach().to(torch.float64)
        rows = [x.reshape(-1)] if self.ch_axis is None else \
            list(x.transpose(0, self.ch_axis).reshape(x.shape[self.ch_axis], -1))
        if self.samples is None:
            self.samples = [r.new_empty(0) for r in rows]
        for i, r in enumerate(rows):
            s = torch.cat([self.samples[i], r])
            if s.numel() > self.max_samples:
                s = s[torch.randperm(s.numel(), generator=self.gen)[: self.max_samples]]
            self.samples[i] = s

    def _rows(self):
        if self.samples is None:
            raise RuntimeError("observer has seen no data: run calibration first")
        return self.samples

    def _out(self, vals):
        out = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in vals])
        return out[0] if self.ch_axis is None else out


class PercentileObserver(_SampleObserver):
    """Range = [pct-th percentile of negatives side, (100-pct)...]: [q(p/100), q(1 - p/100)]."""

    def __init__(self, ch_axis=None, pct=0.01, **kw):
        super().__init__(ch_axis, **kw)
        self.pct = float(pct)

    def range(self, qmin=None, qmax=None, symmetric=None):
        los, his = [], []
        for s in self._rows():
            los.append(torch.quantile(s, self.pct / 100.0))
            his.append(torch.quantile(s, 1.0 - self.pct / 100.0))
        return self._out(los), self._out(his)


class MSEObserver(_SampleObserver):
    """Range r * [min, max] minimising the quantization MSE on the quantizer's grid."""

    GRID = tuple(0.95 ** i for i in range(90))     # r from 1 down to 0.01

    def range(self, qmin, qmax, symmetric):
        los, his = [], []
        for s in self._rows():
            lo0, hi0 = s.min(), s.max()
            best = (math.inf, lo0, hi0)
            for r in self.GRID:
                lo, hi = lo0 * r, hi0 * r
                scale, zp = qparams_from_range(lo, hi, qmin, qmax, symmetric)
                sc = scale.to(torch.float64)
                q = torch.clamp(torch.round(s / sc) + zp, qmin, qmax)
                err = float(((q - zp) * sc - s).pow(2).mean())
                if err < best[0]:
                    best = (err, lo, hi)
            los.append(best[1])
            his.append(best[2])
        return self._out(los), self._out(his)


OBSERVERS = {"minmax": MinMaxObserver, "percentile": PercentileObserver, "mse": MSEObserver}


def make_observer(name, ch_axis=None, **kw):
    if name not in OBSERVERS:
        raise ValueError(f"observer must be one of {sorted(OBSERVERS)}, got {name!r}")
    return OBSERVERS[name](ch_axis=ch_axis, **kw)
