"""Quantized graph ops without weights: residual add, global / 2-D average pooling, concat.

Each op is an ``nn.Module`` holding one activation quantizer per input
(``in_quants``; shared with the producer when the input already lies on that
producer's output grid, ``inputs_on_grid[i]``) and its own output quantizer
``out_quant``, calibrated (PTQ) and trained (QAT, straight-through estimator)
like the layers' activation quantizers (``pyqinfer.train.layers``).

* ``train()``: the float op on the fake-quantized inputs, then ``out_quant``
  (fake quant, STE).
* ``eval()``: what the integer engine computes (docs/semantics.md section 11),
  on the integer codes read back from the inputs, returning the dequantized
  output ``fl32(fl32(y - zp) * s)`` (§5); ``last_int_output`` keeps ``y``:

  - ``QAdd``: the ``onnxruntime`` rule of §11.4 (ONNX Runtime's x86 QLinearAdd,
    float32 FMAs; ORT's operand form chosen by the shapes), a fused ReLU and a
    low-bit output range as the clamp;
  - ``QGlobalAvgPool``: §11.3 global average pool (exact integer sum, one fp32
    requantization);
  - ``QAvgPool2d``: §11.3 average pool (ORT's float32 rule; the whole-image
    kernel falls back to the global rule as ORT does);
  - ``QConcat``: §11.5 (each input requantized to the output's parameters by
    ``quantize_linear(dequantize_linear(x))``, a copy when they are equal).

The inputs and the output must be uniform, per-tensor activation quantizers
(8-bit containers; 2-8 bit ranges); the engine ops need one dtype for all of
them (the exporter checks it).
"""
import torch
import torch.nn.functional as F
from torch import nn

from .integer import avg_pool_ort, global_avg_pool_int, qlinear_add_ort, requantize_tensor

__all__ = ["QAdd", "QGlobalAvgPool", "QAvgPool2d", "QConcat", "act_qparams"]


def act_qparams(q, what):
    """(scale float32 0-d, zero point float, qmin, qmax, dtype) of a uniform per-tensor
    activation quantizer; ValueError otherwise."""
    qp = q.qparams()
    if qp.get("scheme") not in ("uniform", "lsq", "dsq") or hasattr(q, "integer_thresholds"):
        raise ValueError(f"{what}: a {qp.get('scheme')!r} activation quantizer has no integer form in the "
                         f"add / pool / concat ops; use a uniform activation quantizer there")
    if qp.get("ch_axis") is not None:
        raise ValueError(f"{what}: per-channel activation quantization is not supported")
    return (qp["scale"].to(torch.float32).reshape(()), float(qp["zero_point"].reshape(-1)[0]),
            int(qp["qmin"]), int(qp["qmax"]), qp["dtype"])


class _QOp(nn.Module):
    """Base class: input quantizers (shared or own), output quantizer, the three forwards."""

    op_name = None

    def __init__(self, in_quants, out_quant, inputs_on_grid=None, activation=None):
        super().__init__()
        if out_quant is None:
            raise ValueError(f"{type(self).__name__} needs an output quantizer (act must not be None)")
        if activation not in (None, "relu"):
            raise ValueError(f"activation must be None or 'relu', got {activation!r}")
        self.in_quants = nn.ModuleList(in_quants)
        self.inputs_on_grid = list(inputs_on_grid or [False] * len(in_quants))
        if len(self.inputs_on_grid) != len(in_quants):
            raise ValueError("inputs_on_grid must have one entry per input quantizer")
        self.out_quant = out_quant
        self.activation = activation
        self.calibrating = False
        self.last_int_output = None
        self.config = {}

    def quantizers(self):
        return list(self.in_quants) + [self.out_quant]

    def forward(self, *xs):
        if len(xs) != len(self.in_quants):
            raise ValueError(f"{type(self).__name__} takes {len(self.in_quants)} inputs, got {len(xs)}")
        if self.calibrating:
            for x, q, on in zip(xs, self.in_quants, self.inputs_on_grid):
                if not on:
                    q.calibrate(True)(x)
            z = self._relu(self._op(*xs))
            self.out_quant.calibrate(True)(z)
            return z
        if self.training:
            xs = [x if on else q(x) for x, q, on in zip(xs, self.in_quants, self.inputs_on_grid)]
            return self.out_quant(self._relu(self._op(*xs)))
        return self.eval_forward(*xs)

    def _relu(self, z):
        return F.relu(z) if self.activation == "relu" else z

    @torch.no_grad()
    def input_codes(self, i, x):
        q = self.in_quants[i]
        return q.grid_read(x) if self.inputs_on_grid[i] else q.int_repr(x)

    def out_range(self):
        """(lo, hi) of the output codes: the quantizer's range, raised to the zero point by a fused ReLU."""
        _, zy, lo, hi, _ = act_qparams(self.out_quant, f"{type(self).__name__} output")
        if self.activation == "relu":
            lo = max(lo, int(zy))
        return lo, hi

    @torch.no_grad()
    def eval_forward(self, *xs):
        codes = [self.input_codes(i, x) for i, x in enumerate(xs)]
        oq = self.out_quant
        if hasattr(oq, "initialized") and not bool(oq.initialized):   # never calibrated: set from this data
            oq.init_from(self._relu(self._op(*xs)).detach())
        y = self.forward_int(*codes)
        self.last_int_output = y
        return self.out_quant.dequantize(y)

    def _in_qp(self, i):
        return act_qparams(self.in_quants[i], f"{type(self).__name__} input {i}")


class QAdd(_QOp):
    """C = A + B (broadcasting) with an output quantizer and an optional fused ReLU;
    eval: docs/semantics.md 11.4 rule ``onnxruntime`` (com.microsoft.QLinearAdd)."""

    op_name = "QLinearAdd"

    def __init__(self, in_quant_a, in_quant_b, out_quant, inputs_on_grid=None, activation=None):
        super().__init__([in_quant_a, in_quant_b], out_quant, inputs_on_grid, activation)

    def _op(self, a, b):
        return a + b

    def forward_int(self, a, b):
        sa, za, _, _, _ = self._in_qp(0)
        sb, zb, _, _, _ = self._in_qp(1)
        sc, zc, _, _, _ = act_qparams(self.out_quant, "QAdd output")
        lo, hi = self.out_range()
        return qlinear_add_ort(a, b, sa, za, sb, zb, sc, zc, lo, hi)


class QGlobalAvgPool(_QOp):
    """Global average pooling of an [N, C, H, W] tensor (nn.AdaptiveAvgPool2d(1); ``keepdim=False``:
    ``x.mean((2, 3))``); eval: docs/semantics.md 11.3 (com.microsoft.QLinearGlobalAveragePool)."""

    op_name = "QLinearGlobalAveragePool"

    def __init__(self, in_quant, out_quant, input_on_grid=False, keepdim=True):
        super().__init__([in_quant], out_quant, [input_on_grid])
        self.keepdim = bool(keepdim)

    def _op(self, x):
        if x.dim() != 4:
            raise ValueError(f"QGlobalAvgPool takes an [N, C, H, W] tensor, got {x.dim()}-D")
        return x.mean(dim=(2, 3), keepdim=self.keepdim)

    def forward_int(self, x):
        sx, zx, _, _, _ = self._in_qp(0)
        sy, zy, _, _, _ = act_qparams(self.out_quant, "QGlobalAvgPool output")
        lo, hi = self.out_range()
        y = global_avg_pool_int(x, sx, zx, sy, zy, lo, hi)
        return y if self.keepdim else y.flatten(2).squeeze(-1)


class QAvgPool2d(_QOp):
    """nn.AvgPool2d (ceil_mode False, no divisor_override); eval: docs/semantics.md 11.3
    average pool (com.microsoft.QLinearAveragePool, ORT's float32 rule)."""

    op_name = "QLinearAveragePool"

    def __init__(self, in_quant, out_quant, kernel_size, stride=None, padding=0, count_include_pad=True,
                 input_on_grid=False):
        super().__init__([in_quant], out_quant, [input_on_grid])

        def pair(v):
            return tuple(int(t) for t in v) if isinstance(v, (tuple, list)) else (int(v), int(v))
        self.kernel_size = pair(kernel_size)
        self.stride = pair(stride if stride is not None and stride != [] else kernel_size)
        self.padding = pair(padding)
        self.count_include_pad = bool(count_include_pad)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError("padding must be at most half the kernel size")

    def _op(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, False, self.count_include_pad)

    def forward_int(self, x):
        sx, zx, _, _, _ = self._in_qp(0)
        sy, zy, _, _, _ = act_qparams(self.out_quant, "QAvgPool2d output")
        lo, hi = self.out_range()
        return avg_pool_ort(x, sx, zx, sy, zy, lo, hi, self.kernel_size, self.stride, self.padding,
                            self.count_include_pad)


class QConcat(_QOp):
    """torch.cat(xs, dim) with an output quantizer; eval: docs/semantics.md 11.5
    (com.microsoft.QLinearConcat)."""

    op_name = "QLinearConcat"

    def __init__(self, in_quants, out_quant, dim, inputs_on_grid=None):
        super().__init__(in_quants, out_quant, inputs_on_grid)
        self.dim = int(dim)

    def _op(self, *xs):
        return torch.cat(xs, self.dim)

    def forward_int(self, *xs):
        sy, zy, lo, hi, _ = act_qparams(self.out_quant, "QConcat output")
        parts = []
        for i, x in enumerate(xs):
            sx, zx, _, _, _ = self._in_qp(i)
            parts.append(requantize_tensor(x, sx, zx, sy, zy, lo, hi))
        return torch.cat(parts, self.dim)
