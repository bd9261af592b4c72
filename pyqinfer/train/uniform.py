"""Uniform (affine) quantizers: symmetric and asymmetric, per tensor and per channel,
2-8 bits, straight-through estimator, LSQ learned step, stochastic rounding.

Definitions (/work/shared/notes/quantization-schemes.md §7):

* Integer form, the ``onnx`` rule of docs/semantics.md §5:
  ``q = clamp(rne(fl32(x / s)) + zp, qmin, qmax)`` (float32 division, round half
  to even, zero point added after rounding, saturation). ``torch.round`` is RNE
  and ``x / s`` on float32 tensors is one IEEE float32 division, so ``int_repr``
  equals ``pyqinfer.reference.quantize_linear(x, s, zp, rule="onnx")`` bit for bit.
  (PyTorch's own fake-quant uses the ``torch`` rule, ``x * fl32(1/s)``; it
  differs at rare ties, see §5's FBGEMM counterexample; pyqinfer.train never uses it.)
* Training form (fake quant): ``x_hat = s * (round(clamp(x/s, qmin - zp, qmax - zp)))``
  with the STE (Bengio et al. 2013, arXiv 1308.3432): ``ste="clipped"`` passes the
  gradient only inside the range (the clamp's own gradient), ``ste="identity"``
  passes it everywhere.
* LSQ (Esser et al., ICLR 2020, arXiv 1902.08153), ``lsq=True``: the step ``s`` is
  an ``nn.Parameter``; with the clipped STE autograd gives exactly LSQ's
  ``d x_hat / d s = -x/s + round(x/s)`` inside, ``-Q_N`` below, ``Q_P`` above;
  the gradient is scaled by ``g = 1/sqrt(N * Q_P)`` (N: elements per channel for
  weights, features per sample for activations); init ``s = 2 mean|x| / sqrt(Q_P)``
  (or the calibrated range if an observer saw data). LSQ learns the step only;
  an asymmetric zero point stays at its initial value.
* Stochastic rounding (Gupta et al. 2015), ``rounding="stochastic"``: training
  forward only, seeded by ``seed``.

Ranges (``qrange``): signed ``[-2^(b-1), 2^(b-1)-1]`` (``narrow``: lower end
``-(2^(b-1)-1)``), unsigned ``[0, 2^b-1]``, the value sets of docs/semantics.md §9.1.
Symmetric means zero point 0, scale = absmax / qmax.
"""
import math

import torch
from torch import nn

from .base import Quantizer, WeightPart, per_channel_view
from .observers import make_observer, qparams_from_range
from .rounding import grad_scale, make_generator, round_ste, ste


def qrange(bits, signed, narrow=False):
    """(qmin, qmax) of a b-bit signed (two's complement) or unsigned integer, 2 <= b <= 8."""
    bits = int(bits)
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8], got {bits}")
    if signed:
        return (-(2 ** (bits - 1)) + (1 if narrow else 0), 2 ** (bits - 1) - 1)
    return (0, 2 ** bits - 1)


LSQ_MIN_STEP = 1e-8       # the learned step never goes below this (the LSQ init clamps the same way)


class UniformQuantizer(Quantizer):
    """Uniform affine quantizer (see the module docstring).

    bits, signed, symmetric, per_channel (channel axis ``ch_axis``, 0 for weights),
    lsq (learned step), ste ('clipped' | 'identity'), rounding ('nearest' |
    'stochastic'), seed, observer ('minmax' | 'percentile' | 'mse') with
    observer_kw, weight (True: the range follows the tensor at every forward
    unless lsq or frozen; False: activations, range from calibration).
    """

    scheme = "uniform"

    def __init__(self, bits=8, signed=True, symmetric=True, per_channel=False, ch_axis=0,
                 lsq=False, ste="clipped", rounding="nearest", seed=None, observer="minmax",
                 observer_kw=None, narrow=False, weight=False):
        super().__init__()
        if ste not in ("clipped", "identity"):
            raise ValueError(f"ste must be 'clipped' or 'identity', got {ste!r}")
        self.bits, self.signed, self.symmetric = int(bits), bool(signed), bool(symmetric)
        self.qmin, self.qmax = qrange(bits, signed, narrow)
        self.per_channel = bool(per_channel)
        self.ch_axis = ch_axis if per_channel else None
        self.lsq, self.ste_mode, self.rounding = bool(lsq), ste, rounding
        self.generator = make_generator(seed)
        self.weight = bool(weight)
        self.observer_name = observer
        self.observer_kw = dict(observer_kw or {})
        self.observer = make_observer(observer, self.ch_axis, **self.observer_kw)
        self.frozen = False
        if self.lsq:
            self.scale = nn.Parameter(torch.ones((), dtype=torch.float32))
        else:
            self.register_buffer("scale", torch.ones((), dtype=torch.float32))
        self.register_buffer("zero_point", torch.zeros((), dtype=torch.float64))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    # ------------------------------------------------------------------ params
    @property
    def dtype_name(self):
        return "int8" if self.signed else "uint8"

    def set_qparams(self, scale, zero_point=None):
        scale = torch.as_tensor(scale, dtype=torch.float32).detach().clone()
        if torch.any(~torch.isfinite(scale)) or torch.any(scale <= 0):
            raise ValueError(f"scale must be finite and > 0, got {scale}")
        zp = torch.zeros_like(scale, dtype=torch.float64) if zero_point is None else \
            torch.as_tensor(zero_point, dtype=torch.float64).clone()
        if torch.any(zp != torch.round(zp)) or torch.any(zp < self.qmin) or torch.any(zp > self.qmax):
            raise ValueError(f"zero_point must be integers in [{self.qmin}, {self.qmax}], got {zp}")
        if self.lsq:
            self.scale.data = scale   # in place: an optimizer holding the Parameter keeps it
        else:
            self.scale = scale
        self.zero_point = zp
        self.initialized.fill_(True)

    def _range_qparams(self, lo, hi):
        return qparams_from_range(lo, hi, self.qmin, self.qmax, self.symmetric)

    def init_from(self, x):
        """Set scale/zero point from the observer (if it saw data) or from x itself."""
        if self.observer.seen:
            lo, hi = self.observer.range(self.qmin, self.qmax, self.symmetric)
            self.set_qparams(*self._range_qparams(lo, hi))
        elif self.lsq:
            x = x.detach().to(torch.float64)
            mean_abs = x.abs().mean() if self.ch_axis is None else \
                x.transpose(0, self.ch_axis).reshape(x.shape[self.ch_axis], -1).abs().mean(1)
            s = (2 * mean_abs / math.sqrt(self.qmax)).clamp(min=LSQ_MIN_STEP)
            zp = None
            if not self.symmetric:
                _, zp = self._range_qparams(*self._minmax(x))
            self.set_qparams(s.to(torch.float32), zp)
        else:
            self.set_qparams(*self._range_qparams(*self._minmax(x)))

    def _minmax(self, x):
        obs = make_observer(self.observer_name, self.ch_axis, **self.observer_kw)
        obs.observe(x)
        return obs.range(self.qmin, self.qmax, self.symmetric)

    def qparams(self):
        return {"scheme": self.scheme, "bits": self.bits, "signed": self.signed,
                "dtype": self.dtype_name, "qmin": self.qmin, "qmax": self.qmax,
                "scale": self.scale.detach().clone(), "zero_point": self.zero_point.clone(),
                "ch_axis": self.ch_axis, "symmetric": self.symmetric, "lsq": self.lsq}

    # ----------------------------------------------------------------- forward
    def _prepare(self, x):
        if not bool(self.initialized):
            self.init_from(x)
        elif self.lsq:
            # projected step: an optimizer step can drive the learned step to <= 0, which no
            # quantized tensor can carry (the exporter and pyqinfer.load reject it)
            with torch.no_grad():
                self.scale.clamp_(min=LSQ_MIN_STEP)
        elif self.weight and not self.lsq and not self.frozen:
            self.set_qparams(*self._range_qparams(*self._minmax(x)))

    def forward(self, x):
        if self.calibrating:
            self.observer.observe(x)
            return x
        self._prepare(x)
        return self.fake_quant(x)

    def _grad_factor(self, x):
        if self.ch_axis is not None:
            n = x.numel() // x.shape[self.ch_axis]
        else:
            n = x.numel() if self.weight or x.dim() < 2 else x[0].numel()
        return 1.0 / math.sqrt(max(n, 1) * max(self.qmax, 1))

    def fake_quant(self, x):
        s = self.scale
        if self.lsq:
            s = grad_scale(s, self._grad_factor(x))
        s = per_channel_view(s, x, self.ch_axis)
        zp = per_channel_view(self.zero_point.to(x.dtype), x, self.ch_axis)
        v = x / s
        lo, hi = self.qmin - zp, self.qmax - zp
        if self.ste_mode == "clipped" or self.lsq:
            q = round_ste(torch.clamp(v, lo, hi), self.rounding, self.generator, self.training)
        else:
            hard = round_ste(torch.clamp(v, lo, hi), self.rounding, self.generator, self.training)
            q = ste(v, hard.detach())
        return q * s

    @torch.no_grad()
    def int_repr(self, x):
        """q = clamp(rne(fl32(x / s)) + zp, qmin, qmax) as float64 integers (docs §5 'onnx')."""
        self._prepare(x)
        x = x.detach().to(torch.float32)
        s = per_channel_view(self.scale.detach(), x, self.ch_axis)
        zp = per_channel_view(self.zero_point, x, self.ch_axis)
        v = (x / s).to(torch.float64)
        return torch.clamp(torch.round(v) + zp, self.qmin, self.qmax)

    @torch.no_grad()
    def dequantize(self, q):
        """fl32(fl32(q - zp) * s) (docs §5 dequantize), float32."""
        s = per_channel_view(self.scale.detach(), q, self.ch_axis)
        zp = per_channel_view(self.zero_point, q, self.ch_axis)
        return (q.to(torch.float64) - zp).to(torch.float32) * s

    def integer_parts(self, w):
        q = self.int_repr(w)
        return [WeightPart(q, self.scale.detach().clone().reshape(-1), self.zero_point.clone().reshape(-1),
                           self.bits, self.signed)]

    def extra_repr(self):
        return (f"bits={self.bits}, signed={self.signed}, symmetric={self.symmetric}, "
                f"ch_axis={self.ch_axis}, lsq={self.lsq}, rounding={self.rounding!r}")
