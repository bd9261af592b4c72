"""Rounding primitives shared by every quantizer.

* ``round_rne``: round half to even, which is what ``torch.round`` computes and
  the ``onnx`` / ``torch`` rules of docs/semantics.md §5 use (``rne``). Every
  deterministic rounding in pyqinfer.train goes through it, so a quantizer's
  integers equal ``pyqinfer.reference.quantize_linear(..., rule="onnx")``.
* ``round_stochastic``: Gupta et al. 2015 (arXiv 1502.02551): ``floor(x) + 1``
  with probability ``x - floor(x)``, otherwise ``floor(x)``; unbiased. Training
  only: an eval-mode forward always rounds deterministically.
* ``RoundSTE``: the straight-through estimator (Bengio et al. 2013,
  arXiv 1308.3432): forward rounds, backward passes the gradient unchanged.
  Clipping the STE to the range is done by clamping *before* rounding
  (``torch.clamp`` has zero gradient outside), see uniform.py.
* ``project_to_levels``: nearest level of a finite level set (``argmin |x - L|``),
  ties to the level listed first (``torch.argmin`` returns the first minimum),
  or stochastic between the two bracketing levels.
"""
import torch


def round_rne(x):
    """Round half to even (torch.round is RNE: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2)."""
    return torch.round(x)


def round_stochastic(x, generator=None):
    """floor(x) + Bernoulli(x - floor(x)), drawn from ``generator`` (torch.Generator or None)."""
    f = torch.floor(x)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return f + (u < (x - f)).to(x.dtype)


def do_round(x, rounding="nearest", generator=None, training=False):
    """The rounding of a quantizer: RNE, or stochastic when rounding='stochastic' and training."""
    if rounding == "stochastic" and training:
        return round_stochastic(x, generator)
    if rounding not in ("nearest", "stochastic"):
        raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    return round_rne(x)


class RoundSTE(torch.autograd.Function):
    """Forward: round (RNE or stochastic); backward: identity (STE)."""

    @staticmethod
    def forward(ctx, x, rounding="nearest", generator=None, training=False):
        return do_round(x, rounding, generator, training)

    @staticmethod
    def backward(ctx, g):
        return g, None, None, None


def round_ste(x, rounding="nearest", generator=None, training=False):
    return RoundSTE.apply(x, rounding, generator, training)


def ste(x, x_hard):
    """x_hard in the forward pass, the gradient of x in the backward pass."""
    return x + (x_hard - x).detach()


def grad_scale(s, g):
    """s in the forward pass, its gradient multiplied by g (LSQ's step-size gradient scale)."""
    return (s - s * g).detach() + s * g


def make_generator(seed):
    """A seeded CPU torch.Generator, or None (the global generator) when seed is None."""
    if seed is None:
        return None
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen


def project_to_levels(x, levels, rounding="nearest", generator=None):
    """(values, index) of each x projected onto ``levels`` (1-D tensor, any order).

    nearest: argmin_j |x - levels[j]|, computed in x's dtype; a tie goes to the
    lowest j (torch.argmin returns the first minimum), so the order of ``levels``
    is the tie rule. stochastic: between the two levels bracketing x, the upper
    one with probability (x - lo) / (hi - lo); x outside [min, max] goes to the end level.
    """
    levels = levels.to(x.dtype)
    flat = x.reshape(-1)
    if rounding == "nearest":
        idx = torch.argmin((flat.unsqueeze(1) - levels.unsqueeze(0)).abs(), dim=1)
    elif rounding == "stochastic":
        srt, order = torch.sort(levels)
        hi = torch.searchsorted(srt, flat.contiguous()).clamp(1, len(srt) - 1)
        lo = hi - 1
        p = ((flat - srt[lo]) / (srt[hi] - srt[lo])).clamp(0, 1)
        u = torch.rand(flat.shape, generator=generator, dtype=flat.dtype)
        idx = order[torch.where(u < p, hi, lo)]
    else:
        raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    return levels[idx].reshape(x.shape), idx.reshape(x.shape)
