"""The interface every quantizer implements (so layers and a later exporter can read it).

A quantizer is an ``nn.Module`` with

* ``forward(x)``: the training form (fake-quantized float, differentiable); when
  ``calibrating`` is set it only records statistics and returns x unchanged.
* ``int_repr(x)``: the integer codes of the eval/engine form, as float64 tensors
  holding exact integers.
* ``qparams()``: a dict naming the scheme and everything an engine needs:
  ``scheme``, ``bits``, ``signed``, ``dtype`` (container 'int8'/'uint8'), ``qmin``,
  ``qmax``, ``scale`` (float32 tensor, 0-d or per channel), ``zero_point``
  (float64 tensor of integers), ``ch_axis`` (None or 0), plus scheme fields.

Weight quantizers also give ``integer_parts(w) -> [WeightPart]``: the weight as
a sum of integer tensors with per-channel float32 scales (one part for every
scheme except PWLQ), i.e. what the integer forward multiplies.
"""
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class WeightPart:
    """One integer weight tensor: real weight contribution = scale[c] * (w_int - zero_point[c]).

    w_int: float64 tensor of exact integers, the layer's weight shape.
    scale: float32 tensor [OC] (per channel) or 0-d; zero_point: float64 [OC] or 0-d.
    bits / signed: the declared width of w_int's values (docs/semantics.md §9.1);
    bits None means "wider than 8" (held exactly in float64; a shift kernel or
    an int16 path must run it).
    codes: optional scheme codes (e.g. shift terms {'signs', 'exponents'}).
    """

    w_int: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: object = 8
    signed: bool = True
    codes: dict = field(default_factory=dict)


def per_channel_view(t, x, ch_axis):
    """Reshape a per-channel [C] tensor to broadcast against x along ch_axis (0-d passes)."""
    if t.dim() == 0 or ch_axis is None:
        return t
    shape = [1] * x.dim()
    shape[ch_axis] = -1
    return t.reshape(shape)


class Quantizer(nn.Module):
    """Base class: calibration switch and the common attributes."""

    scheme = "base"

    def __init__(self):
        super().__init__()
        self.calibrating = False

    def calibrate(self, on=True):
        self.calibrating = bool(on)
        return self

    def grid_read(self, x):
        """Integer codes of a tensor that already lies on this quantizer's output grid
        (the dequantized output of the previous layer): rne(fl32(x / s)) + zp, exact."""
        return self.int_repr(x)

    def integer_parts(self, w):  # pragma: no cover - overridden
        raise NotImplementedError(f"{type(self).__name__} is not a weight quantizer")
