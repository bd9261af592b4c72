"""Quantized layers, BatchNorm folding, ``prepare`` and ``calibrate``.

``QLinear`` and ``QConv2d`` are one engine op each (ONNX QLinearMatMul /
QLinearConv, docs/semantics.md §6, §10): an input quantizer ``in_quant``, a
weight quantizer ``weight_quant``, an optional fused ReLU and an output
quantizer ``out_quant`` (``None``: the int32 accumulator is dequantized,
ConvInteger/MatMulInteger + bias + DequantizeLinear, then the fused ReLU, if any,
on that float32 output).

* ``model.train()``: the QAT form, fake-quantized floats (``in_quant(x)``,
  ``weight_quant(w)``, float bias, ReLU, ``out_quant(z)``).
* ``model.eval()``: the engine form, computed as the integer engine computes it:
  input codes by the ``onnx`` rule (§5), integer weights (``integer_parts``),
  int32 bias ``rne(fl32(b / fl32(s_x s_w)))``, exact accumulation with the int32
  wrap (§2.1, §10.2) or, with a declared ``acc_bits`` W, saturated once to W bits
  (the shift layers' §12.2), requantization by §4.1 ``fp32`` with the fused ReLU /
  low-bit range as the clamp (§4.0, §4.6), or integer thresholds (MultiThreshold,
  ``>=`` on the accumulator) for a threshold output quantizer. The layer returns
  the dequantized output ``fl32(fl32(y - zp) * s_y)`` (§5), from which the next
  layer's input quantizer (the same object after ``prepare``) reads the codes back
  exactly; ``last_int_output`` keeps the integer tensor.

Only ``requant="fp32"`` is implemented in the eval forward.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from .base import WeightPart
from .integer import (accumulate_conv, accumulate_linear, dequantize_acc, effective_scale,
                      quantize_bias, requantize_fp32, saturate, wrap32)

REQUANT_MODES = ("fp32",)


class _QLayer(nn.Module):
    ch_axis_out = -1  # channel axis of the accumulator

    def _init_q(self, weight_quant, in_quant, out_quant, activation, requant, acc_bits=None):
        if acc_bits is not None and (isinstance(acc_bits, bool) or not isinstance(acc_bits, int)
                                     or not 8 <= acc_bits <= 32):
            raise ValueError(f"acc_bits must be None or an int in [8, 32], got {acc_bits!r}")
        if activation not in (None, "relu"):
            raise ValueError(f"activation must be None or 'relu', got {activation!r}")
        if requant not in REQUANT_MODES:
            raise ValueError(f"requant must be one of {REQUANT_MODES}, got {requant!r} "
                             f"(the other modes of docs/semantics.md §4 are not in the eval forward yet)")
        self.weight_quant = weight_quant
        self.in_quant = in_quant
        self.out_quant = out_quant
        self.activation = activation
        self.requant = requant
        self.acc_bits = acc_bits
        self.input_on_grid = False
        self.calibrating = False
        self.last_int_output = None
        self.config = {}

    # ------------------------------------------------------------ train form
    def forward(self, x):
        if self.calibrating:
            return self._calibration_forward(x)
        if self.training:
            return self._train_forward(x)
        return self.eval_forward(x)

    def _calibration_forward(self, x):
        if self.in_quant is not None and not self.input_on_grid:
            self.in_quant.calibrate(True)(x)
        z = self._op(x, self.weight, self.bias)
        if self.activation == "relu":
            z = F.relu(z)
        if self.out_quant is not None:
            self.out_quant.calibrate(True)(z)
        return z

    def _train_forward(self, x):
        if self.in_quant is not None and not self.input_on_grid:
            x = self.in_quant(x)
        z = self._op(x, self.weight_quant(self.weight), self.bias)
        if self.activation == "relu":
            z = F.relu(z)
        return self.out_quant(z) if self.out_quant is not None else z

    # ------------------------------------------------------------- eval form
    def input_codes(self, x):
        if self.in_quant is None:
            raise RuntimeError("a layer without in_quant has no integer eval form")
        return self.in_quant.grid_read(x) if self.input_on_grid else self.in_quant.int_repr(x)

    @torch.no_grad()
    def integer_params(self):
        """Everything the engine needs for this layer (what an exporter reads).

        Returns a dict: x_scale, x_zero_point, x_qparams, parts (list of WeightPart),
        bias_int (float64 [OC] or None, scale fl32(s_x * s_w) of part 0), out_qparams
        (None without out_quant), activation, requant, op attributes.
        """
        xq = self.in_quant.qparams()
        parts = self.weight_quant.integer_parts(self.weight.detach())
        bias_int = None
        if self.bias is not None:
            bias_int = quantize_bias(self.bias, xq["scale"], parts[0].scale)
        return {"op": self.op_name, "x_qparams": xq, "x_scale": xq["scale"],
                "x_zero_point": xq["zero_point"], "parts": parts, "bias_int": bias_int,
                "weight_qparams": self.weight_quant.qparams(),
                "out_qparams": None if self.out_quant is None else self.out_quant.qparams(),
                "activation": self.activation, "requant": self.requant,
                "attributes": self.op_attributes()}

    @torch.no_grad()
    def forward_int(self, x_int):
        """Integer input codes (float64) -> integer output codes (float64), or the
        dequantized float32 accumulator (after the fused ReLU, if any) when there is
        no out_quant."""
        p = self.integer_params()
        sx, zx = p["x_scale"], p["x_zero_point"]
        accs = []
        for j, part in enumerate(p["parts"]):
            acc = self._accumulate(x_int, zx, part)
            if j == 0 and p["bias_int"] is not None:
                acc = acc + self._bias_view(p["bias_int"], acc)
            accs.append(wrap32(acc) if self.acc_bits is None else saturate(acc, self.acc_bits))
        if self.out_quant is None:
            out = dequantize_acc(accs[0], sx, p["parts"][0].scale, self.ch_axis_out)
            for acc, part in zip(accs[1:], p["parts"][1:]):
                out = out + dequantize_acc(acc, sx, part.scale, self.ch_axis_out)
            if self.activation == "relu":      # the fused ReLU on the float32 output (exact: max with 0)
                out = torch.clamp_min(out, 0.0)
            self.last_int_output = None
            return out
        if hasattr(self.out_quant, "integer_thresholds"):
            if len(accs) != 1:
                raise NotImplementedError("threshold outputs after a multi-part weight (PWLQ)")
            y = self._threshold(accs[0], sx, p["parts"][0].scale)
        else:
            oq = p["out_qparams"]
            lo, hi = oq["qmin"], oq["qmax"]
            zy = float(oq["zero_point"])
            if self.activation == "relu":
                lo = max(lo, zy)
            if len(accs) == 1:
                S = effective_scale(sx, p["parts"][0].scale, oq["scale"])
                y = requantize_fp32(accs[0], S, zy, lo, hi, self.ch_axis_out)
            else:
                y = self._requant_multi(accs, sx, p["parts"], oq, zy, lo, hi)
        self.last_int_output = y
        return y

    def _requant_multi(self, accs, sx, parts, oq, zy, lo, hi):
        """Proposal (not in docs/semantics.md yet): several int32 accumulators with their
        own weight scales: p = sum_j fl32(fl32(acc_j) * S_j) summed in float32 in part
        order, y = clamp(zp + rne(p), lo, hi), S_j = fl32(fl32(s_x*s_wj)/s_y)."""
        total = None
        for acc, part in zip(accs, parts):
            S = effective_scale(sx, part.scale, oq["scale"])
            S = S.reshape([-1 if d == (self.ch_axis_out % acc.dim()) else 1 for d in range(acc.dim())]) \
                if S.numel() > 1 else S.reshape(())
            t = acc.to(torch.float32) * S
            total = t if total is None else total + t
        p = torch.clamp(total.to(torch.float64), lo - zy, hi - zy)
        return torch.round(p) + zy

    def _threshold(self, acc, sx, w_scale):
        T = self.out_quant.integer_thresholds(sx, w_scale, relu=self.activation == "relu")  # [C, n]
        levels = self.out_quant.level_codes()                                               # [n+1]
        a = acc.movedim(self.ch_axis_out, -1).unsqueeze(-1)       # [..., C, 1]
        count = (a >= T).sum(-1)
        return levels.to(torch.float64)[count].movedim(-1, self.ch_axis_out)

    def eval_forward(self, x):
        y = self.forward_int(self.input_codes(x))
        if self.out_quant is None:
            return y
        return self.out_quant.dequantize(y)


class QLinear(_QLayer, nn.Linear):
    """nn.Linear with quantizers (see the module docstring)."""

    op_name = "QLinearMatMul"
    ch_axis_out = -1

    def __init__(self, in_features, out_features, bias=True, *, weight_quant, in_quant=None,
                 out_quant=None, activation=None, requant="fp32", acc_bits=None):
        nn.Linear.__init__(self, in_features, out_features, bias)
        self._init_q(weight_quant, in_quant, out_quant, activation, requant, acc_bits)

    @classmethod
    def from_float(cls, m, **kw):
        q = cls(m.in_features, m.out_features, m.bias is not None, **kw)
        q.weight.data.copy_(m.weight.data)
        if m.bias is not None:
            q.bias.data.copy_(m.bias.data)
        return q

    def _op(self, x, w, b):
        return F.linear(x, w, b)

    def _accumulate(self, x_int, zx, part):
        return accumulate_linear(x_int, zx, part.w_int, part.zero_point)

    def _bias_view(self, b, acc):
        return b

    def op_attributes(self):
        return {}


class QConv2d(_QLayer, nn.Conv2d):
    """nn.Conv2d (NCHW, zero padding) with quantizers (see the module docstring)."""

    op_name = "QLinearConv"
    ch_axis_out = 1

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, *, weight_quant, in_quant=None, out_quant=None,
                 activation=None, requant="fp32", acc_bits=None):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                           dilation, groups, bias)
        if isinstance(self.padding, str):
            raise ValueError("QConv2d needs explicit integer padding")
        self._init_q(weight_quant, in_quant, out_quant, activation, requant, acc_bits)

    @classmethod
    def from_float(cls, m, **kw):
        if m.padding_mode != "zeros":
            raise ValueError(f"only zero padding is supported, got padding_mode={m.padding_mode!r}")
        q = cls(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                m.groups, m.bias is not None, **kw)
        q.weight.data.copy_(m.weight.data)
        if m.bias is not None:
            q.bias.data.copy_(m.bias.data)
        return q

    def _op(self, x, w, b):
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def _accumulate(self, x_int, zx, part):
        return accumulate_conv(x_int, zx, part.w_int, part.zero_point, self.stride,
                               self.padding, self.dilation, self.groups)

    def _bias_view(self, b, acc):
        return b.reshape(1, -1, 1, 1)

    def op_attributes(self):
        ph, pw = self.padding
        return {"strides": list(self.stride), "pads": [ph, pw, ph, pw],
                "dilations": list(self.dilation), "group": self.groups,
                "kernel_shape": list(self.kernel_size)}


# ---------------------------------------------------------------- BN folding
@torch.no_grad()
def fold_bn(layer, bn):
    """A copy of ``layer`` (nn.Conv2d or nn.Linear) with eval-mode ``bn`` folded in:
    w' = w * g / sqrt(var + eps) (per output channel), b' = beta + (b - mean) * g / sqrt(var + eps)."""
    if not isinstance(layer, (nn.Conv2d, nn.Linear)):
        raise TypeError(f"layer must be nn.Conv2d or nn.Linear, got {type(layer).__name__}")
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
        raise TypeError(f"bn must be a BatchNorm module, got {type(bn).__name__}")
    out = copy.deepcopy(layer)
    oc = out.weight.shape[0]
    if bn.num_features != oc:
        raise ValueError(f"bn has {bn.num_features} features, the layer {oc} output channels")
    gamma = bn.weight if bn.affine else torch.ones(oc)
    beta = bn.bias if bn.affine else torch.zeros(oc)
    inv = gamma / torch.sqrt(bn.running_var + bn.eps)
    out.weight.data = layer.weight * inv.reshape([-1] + [1] * (layer.weight.dim() - 1))
    b = layer.bias if layer.bias is not None else torch.zeros(oc)
    out.bias = nn.Parameter(beta + (b - bn.running_mean) * inv)
    return out


def fold_bn_sequential(model):
    """Fold every (Conv2d|Linear, BatchNorm) pair of consecutive children in place
    (recursively); the BatchNorm becomes nn.Identity. Returns the model."""
    for parent in model.modules():
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            m, n = parent._modules[a], parent._modules[b]
            if isinstance(m, (nn.Conv2d, nn.Linear)) and isinstance(n, nn.modules.batchnorm._BatchNorm):
                parent._modules[a] = fold_bn(m, n)
                parent._modules[b] = nn.Identity()
    return model


# ------------------------------------------------------------------ prepare
GRID_PRESERVING = (nn.Flatten, nn.MaxPool2d, nn.Identity, nn.Dropout, nn.Unflatten)

DEFAULT_CONFIG = {
    "weight": {"scheme": "uniform", "bits": 8, "per_channel": True},
    "act": {"scheme": "uniform", "bits": 8},
    "input": {"scheme": "uniform", "bits": 8},
    "requant": "fp32",
    "fuse_relu": True,
    "acc_bits": None,
}


def _merge(base, over):
    out = dict(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and \
                v.get("scheme", out[k].get("scheme")) == out[k].get("scheme"):
            out[k] = {**out[k], **v}     # same scheme: override key by key
        else:
            out[k] = v
    return out


def layer_config(config, name):
    """DEFAULT_CONFIG <- config['default'] <- config[name]: a quantizer dict that keeps the
    scheme is merged key by key, one that names another scheme replaces the old one."""
    cfg = _merge(DEFAULT_CONFIG, (config or {}).get("default"))
    return _merge(cfg, (config or {}).get(name))


def _set_module(model, name, new):
    parent = model
    *path, last = name.split(".")
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, last, new)


def prepare(model, config=None, inplace=False, graph=None):
    """Swap every nn.Conv2d / nn.Linear for QConv2d / QLinear, configured per layer.

    ``graph``: ``None`` (default) picks the order-based path below for an ``nn.Sequential``
    whose containers are all ``nn.Sequential`` and graph mode (``torch.fx``, residual adds,
    concat, average pools; :func:`pyqinfer.train.graph.prepare_graph`, which returns a
    ``torch.fx.GraphModule``) for any other model; ``True`` / ``False`` force one of them.

    ``config`` maps layer names (``model.named_modules()``) to dicts, merged over
    ``config['default']`` and ``DEFAULT_CONFIG``:
    ``{"weight": {...}, "act": {...} | None, "input": {...}, "requant": "fp32",
    "fuse_relu": True, "acc_bits": None}``; ``weight``/``act``/``input`` name a ``scheme`` (see
    ``pyqinfer.train.registry``) and its arguments. Mixed precision is one dict,
    e.g. ``{"default": {"weight": {"bits": 4}}, "fc": {"weight": {"bits": 8}}}``.

    Order-based wiring (for models whose forward applies the modules in registration
    order, e.g. nn.Sequential): an nn.ReLU right after a layer (nn.Identity in between
    allowed, e.g. a folded BatchNorm) is fused into it; a
    layer whose input comes from the previous quantized layer through only
    grid-preserving modules (Flatten, MaxPool2d, Identity, Dropout) shares that
    layer's ``out_quant`` as its ``in_quant`` (no requantization between them).
    Fold BatchNorm first (``fold_bn_sequential``). Returns the prepared model
    (a deep copy unless ``inplace``).
    """
    from .registry import make_act_quantizer, make_weight_quantizer

    if graph is None:
        from .graph import is_chain_model
        graph = not is_chain_model(model)
    if graph:
        from .graph import prepare_graph
        return prepare_graph(model, config, inplace)
    if not inplace:
        model = copy.deepcopy(model)
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    prev = None            # previous quantized layer, while only grid-preserving modules follow it
    skip = set()
    for i, (name, m) in enumerate(leaves):
        if name in skip:
            continue
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            cfg = layer_config(config, name)
            relu = False
            j = i + 1
            while j < len(leaves) and type(leaves[j][1]) is nn.Identity:   # e.g. a folded BatchNorm
                j += 1
            if cfg.get("fuse_relu", True) and j < len(leaves) and isinstance(leaves[j][1], nn.ReLU):
                relu = True
                _set_module(model, leaves[j][0], nn.Identity())
                skip.add(leaves[j][0])
            wq = make_weight_quantizer(cfg["weight"])
            shared = prev is not None and prev.out_quant is not None
            inq = prev.out_quant if shared else make_act_quantizer(cfg["input"], relu_before=False)
            outq = None if cfg.get("act") is None else make_act_quantizer(cfg["act"], relu_before=relu)
            cls = QConv2d if isinstance(m, nn.Conv2d) else QLinear
            q = cls.from_float(m, weight_quant=wq, in_quant=inq, out_quant=outq,
                               activation="relu" if relu else None, requant=cfg.get("requant", "fp32"),
                               acc_bits=cfg.get("acc_bits"))
            q.input_on_grid = shared
            q.config = cfg
            _set_module(model, name, q)
            prev = q
        elif isinstance(m, GRID_PRESERVING) or (isinstance(m, nn.ReLU) and prev is not None):
            continue   # values on the grid stay on it (ReLU: max with the exact real 0)
        else:
            prev = None
    return model


def quantized_layers(model):
    """[(name, layer)] of the QLinear / QConv2d layers of a prepared model."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _QLayer)]


def quantized_modules(model):
    """[(name, module)] of the QLinear / QConv2d layers and the weightless quantized ops
    (QAdd, QGlobalAvgPool, QAvgPool2d, QConcat) of a prepared model."""
    from .qops import _QOp
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (_QLayer, _QOp))]


@torch.no_grad()
def calibrate(model, batches):
    """Post-training calibration: run ``batches`` (an iterable of inputs) through the
    float layers while the activation observers record them, then set every input and
    output quantizer's scale and zero point from its observer. Returns the model."""
    layers = [m for _, m in quantized_modules(model)]
    was_training = model.training
    model.eval()
    for m in layers:
        m.calibrating = True
    n = 0
    for x in batches:
        model(x)
        n += 1
    if n == 0:
        raise ValueError("batches is empty")
    for m in layers:
        m.calibrating = False
        for q in (m.quantizers() if hasattr(m, "quantizers") else (m.in_quant, m.out_quant)):
            if q is not None and q.calibrating:
                q.calibrate(False)
                q.init_from(None)
    model.train(was_training)
    return model


__all__ = ["QLinear", "QConv2d", "fold_bn", "fold_bn_sequential", "prepare", "calibrate",
           "quantized_layers", "quantized_modules", "layer_config", "DEFAULT_CONFIG", "WeightPart"]
