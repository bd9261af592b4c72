"""DSQ: Differentiable Soft Quantization (Gong et al., ICCV 2019, arXiv 1908.05033).

Training form (the note §5; k/s/alpha as MQBench ``mqbench/fake_quantize/dsq.py``):
on the integer grid of a uniform quantizer (scale s, zero point zp, [qmin, qmax]),
with ``v = clamp(x/s, qmin - zp, qmax - zp)`` and the cell ``i = floor(v)``,

    phi(v) = S * tanh(k * (v - i - 1/2)),   S = 1 / (1 - alpha),   k = ln((2 - alpha) / alpha)

(in units of one step Delta, so ``k Delta`` of the paper is ``k`` here), and the soft value
``i + (phi + 1) / 2``. As in MQBench, the forward pass uses the hard value
``round(v)`` and the backward pass the derivative of the soft value
(``(hard - soft).detach() + soft``); alpha (default 0.4, MQBench's) is a buffer.

Eval form: phi becomes its sign, i.e. plain uniform affine quantization with
the same scale and zero point (``UniformQuantizer.int_repr``, docs §5 'onnx'),
so the engine runs DSQ layers as ordinary integer layers. Because DSQ here is
parameterised by (s, zp) instead of the paper's (l, u), the clipping bounds are
``s * (qmin - zp)`` and ``s * (qmax - zp)`` and the zero point is an integer,
as the engine requires (the paper's l need not sit on the grid).
"""
import math

import torch

from .base import per_channel_view
from .uniform import UniformQuantizer


class DSQQuantizer(UniformQuantizer):
    """UniformQuantizer whose training backward is DSQ's soft staircase."""

    scheme = "dsq"

    def __init__(self, *args, alpha=0.4, **kw):
        super().__init__(*args, **kw)
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.register_buffer("alpha", torch.tensor(float(alpha)))

    def fake_quant(self, x):
        s = per_channel_view(self.scale, x, self.ch_axis)
        zp = per_channel_view(self.zero_point.to(x.dtype), x, self.ch_axis)
        a = float(self.alpha)
        S, k = 1.0 / (1.0 - a), math.log((2.0 - a) / a)
        # relative to the zero point (an integer, so the cells are the same): the hard
        # value is exactly int_repr's rne(fl32(x / s)) clamped, minus zp
        v = torch.clamp(x / s, self.qmin - zp, self.qmax - zp)
        i = torch.floor(v).detach()
        soft = i + (S * torch.tanh(k * (v - i - 0.5)) + 1.0) / 2.0
        hard = torch.round(v)
        q = soft + (hard - soft).detach()
        return q * s

    def qparams(self):
        d = super().qparams()
        d["alpha"] = float(self.alpha)
        return d
