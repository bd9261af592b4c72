"""The integer arithmetic of the eval-mode forward, written after docs/semantics.md.

All integer tensors are float64 tensors holding exact integers: a float64 sum
of integers is exact while every partial sum stays below 2^53, which holds for
any layer whose int32 accumulator bound (§2.2) is below 2^31 with K < 2^22, so
the order in which torch's float64 convolution/matmul adds is irrelevant.

* ``accumulate_linear`` / ``accumulate_conv``: §2.1 / §10.2 without the wrap.
* ``wrap32``: the int32 accumulator's two's-complement wrap (§2.1).
* ``saturate``: a declared ``acc_bits`` W: the exact sum saturated once to W bits (§12.2).
* ``quantize_bias``: int32 bias = sat32(rne(fl32(b / fl32(s_x * s_w[c])))), the
  ``onnx`` rule of §5 with the bias scale ``s_x * s_w`` of §1.1 (float32 product).
* ``requantize_fp32``: §4.1 ``fp32``: ``S = fl32(fl32(s_x*s_w[c]) / s_y)``,
  ``r = rne(fl32(fl32(acc) * S))``, ``y = clamp(zp_y + r, lo, hi)``.
* ``dequantize_acc``: §5 dequantize of an int32 accumulator with scale
  ``fl32(s_x * s_w[c])``: ``fl32(fl32(acc) * scale)`` (a layer without output
  quantizer: MatMulInteger/ConvInteger + bias, then DequantizeLinear).
"""
import torch
import torch.nn.functional as F

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def wrap32(acc):
    """((acc + 2^31) mod 2^32) - 2^31 on float64 integers (exact below 2^53)."""
    return torch.remainder(acc + 2.0 ** 31, 2.0 ** 32) - 2.0 ** 31


def saturate(acc, bits):
    """sat_W(acc) = min(max(acc, -2^(W-1)), 2^(W-1) - 1) on float64 integers (§12.2)."""
    return torch.clamp(acc, -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)


def accumulate_linear(x_int, x_zp, w_int, w_zp):
    """sum_k (x - zx) * (w[n, k] - zw[n]); x [..., K], w [N, K] (torch layout), float64."""
    xs = x_int.to(torch.float64) - float(x_zp)
    ws = w_int.to(torch.float64) - w_zp.to(torch.float64).reshape(-1, 1)
    return xs @ ws.t()


def accumulate_conv(x_int, x_zp, w_int, w_zp, stride, padding, dilation, groups):
    """§10.2: the input padded with its zero point, i.e. (x - zx) padded with 0."""
    xs = x_int.to(torch.float64) - float(x_zp)
    ws = w_int.to(torch.float64) - w_zp.to(torch.float64).reshape(-1, 1, 1, 1)
    return F.conv2d(xs, ws, None, stride, padding, dilation, groups)


def bias_scale(x_scale, w_scale):
    """fl32(s_x * s_w[c]) as float32 [C]."""
    return (x_scale.to(torch.float32).reshape(()) * w_scale.to(torch.float32).reshape(-1))


def quantize_bias(b, x_scale, w_scale):
    """int32 bias = sat32(rne(fl32(b / fl32(s_x * s_w[c])))) as float64 [C]."""
    v = (b.detach().to(torch.float32) / bias_scale(x_scale, w_scale)).to(torch.float64)
    return torch.round(torch.clamp(v, INT32_MIN, INT32_MAX))


def effective_scale(x_scale, w_scale, y_scale):
    """S[c] = fl32(fl32(s_x * s_w[c]) / s_y) (§4.1), float32 [C]."""
    return bias_scale(x_scale, w_scale) / y_scale.to(torch.float32).reshape(())


def _channel_last_view(t, acc, ch_axis):
    shape = [1] * acc.dim()
    shape[ch_axis] = -1
    return t.reshape(shape)


def requantize_fp32(acc, S, y_zp, lo, hi, ch_axis):
    """y = clamp(zp_y + rne(fl32(fl32(acc) * S[c])), lo, hi) (§4.0, §4.1), float64 integers.

    Clamping the float product to [lo - zp, hi - zp] before rne equals clamping after
    (integer bounds) and maps an infinite product to the bound, as the reference does.
    """
    acc32 = acc.to(torch.float32)                      # int32 -> float32, RNE
    S = _channel_last_view(S.to(torch.float32), acc, ch_axis) if S.numel() > 1 else S.reshape(())
    p = (acc32 * S).to(torch.float64)                  # one float32 product, widened exactly
    p = torch.clamp(p, lo - float(y_zp), hi - float(y_zp))
    return torch.round(p) + float(y_zp)


def dequantize_acc(acc, x_scale, w_scale, ch_axis):
    """fl32(fl32(acc) * fl32(s_x * s_w[c])), float32 (§5 dequantize of int32, zp 0)."""
    s = bias_scale(x_scale, w_scale)
    s = _channel_last_view(s, acc, ch_axis) if s.numel() > 1 else s.reshape(())
    return acc.to(torch.float32) * s
