"""Quantization Networks' learned thresholds for activations (Yang et al., CVPR 2019,
arXiv 1911.09464; aliyun/alibabacloud-quantization-networks; the note §5).

Training form: ``y = alpha * sum_i s_i sigmoid(T (beta x - b_i))`` with unit gaps
``s_i = 1`` for activations (values 0 .. n, n = 2^bits - 1, no offset), the
sigmoid argument clamped to [-10, 10] as the code does, temperature ``T``
raised during training (``set_temperature``; the code grows it linearly per
epoch). ``beta`` and ``alpha`` are learned; the thresholds ``b_i`` are buffers
(k-means midpoints in the code; here the midpoints ``i - 1/2`` of the unit
grid after ``beta = n / max`` from calibration, which is what k-means gives
for a uniform spread; ``learn_thresholds=True`` makes them Parameters).

Eval form: ``y = alpha * #{i : beta x - b_i > 0}`` (**strict**, the code's).
The integer output is the count (uint8, zero point 0, scale alpha). After a
layer the count is a MultiThreshold on the int32 accumulator:
``z > b_i / beta`` with ``z = acc * a_c``, ``a_c = f64(fl32(s_x s_w[c]))``, i.e.
``acc >= floor(f64(b_i) / f64(beta) / a_c) + 1`` (float64; QONNX MultiThreshold
compares with >=, so the strict comparison is folded into the integer threshold).
"""
import torch
from torch import nn

from .base import Quantizer
from .observers import make_observer


class QNActivation(Quantizer):
    """Learned-threshold activation quantizer (see the module docstring)."""

    scheme = "qn"

    def __init__(self, bits=2, weight=False, temperature=1.0, learn_thresholds=False,
                 observer="minmax", observer_kw=None, signed=False, **_):
        super().__init__()
        if weight or signed:
            raise ValueError("QNActivation quantizes (unsigned) activations only")
        self.bits = int(bits)
        self.n = 2 ** self.bits - 1
        self.temperature = float(temperature)
        self.observer = make_observer(observer, None, **dict(observer_kw or {}))
        b = torch.arange(1, self.n + 1, dtype=torch.float32) - 0.5
        if learn_thresholds:
            self.b = nn.Parameter(b)
        else:
            self.register_buffer("b", b)
        self.beta = nn.Parameter(torch.tensor(1.0))
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    def set_temperature(self, T):
        self.temperature = float(T)

    def init_from(self, x):
        if self.observer.seen:
            mx = float(self.observer.range()[1])
        elif x is not None:
            mx = float(x.detach().max())
        else:
            return
        mx = mx if mx > 0 else 1.0
        self.beta.data = torch.tensor(self.n / mx, dtype=torch.float32)
        self.alpha.data = torch.tensor(mx / self.n, dtype=torch.float32)
        self.initialized.fill_(True)

    def _prepare(self, x):
        if not bool(self.initialized):
            self.init_from(x)

    def forward(self, x):
        if self.calibrating:
            self.observer.observe(x)
            return x
        self._prepare(x)
        arg = self.temperature * (self.beta * x.unsqueeze(-1) - self.b)
        soft = torch.sigmoid(torch.clamp(arg, -10.0, 10.0)).sum(-1)
        if self.training:
            return self.alpha * soft
        return self.alpha * self.count(x)

    @torch.no_grad()
    def count(self, x):
        return ((self.beta * x.to(torch.float32)).unsqueeze(-1) - self.b > 0).sum(-1).to(torch.float32)

    @torch.no_grad()
    def int_repr(self, x):
        self._prepare(x)
        return self.count(x).to(torch.float64)

    @property
    def scale(self):
        return self.alpha.detach().to(torch.float32).abs()

    def grid_read(self, x):
        return torch.round((x.to(torch.float32) / self.scale).to(torch.float64))

    @torch.no_grad()
    def dequantize(self, q):
        return q.to(torch.float32) * self.scale

    def level_codes(self):
        return torch.arange(self.n + 1, dtype=torch.float64)

    def integer_thresholds(self, x_scale, w_scale, relu=False):
        a = (x_scale.to(torch.float32).reshape(()) * w_scale.to(torch.float32).reshape(-1)).to(torch.float64)
        t = self.b.detach().to(torch.float64) / float(self.beta.detach())
        if relu:   # relu(z) > t is z > t for t >= 0, always true for t < 0
            t = torch.where(t < 0, torch.full_like(t, -float("inf")), t)
        return torch.floor(t.reshape(1, -1) / a.reshape(-1, 1)) + 1

    def qparams(self):
        return {"scheme": self.scheme, "bits": self.bits, "signed": False, "dtype": "uint8",
                "qmin": 0, "qmax": self.n, "scale": self.scale,
                "zero_point": torch.zeros((), dtype=torch.float64), "ch_axis": None,
                "beta": float(self.beta.detach()), "thresholds": self.b.detach().clone(),
                "strict": True, "temperature": self.temperature}
