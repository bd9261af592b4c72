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


# ------------------------------------------------------------------ eltwise (§11.3-11.5)
def fma32(a, b, c):
    """fl32(a * b + c) with one rounding (the float32 fused multiply-add), on float32 tensors.

    The same construction as ``pyqinfer.reference.eltwise._fma``: a*b is exact in float64
    (24 + 24 bits), s = fl64(a*b + c) with its exact error e (TwoSum); rounding s to
    float32 is correct unless s is exactly halfway between two float32 values and e != 0
    (double rounding), and then the neighbour on e's side is the answer."""
    a, b, c = torch.broadcast_tensors(*(torch.as_tensor(t).to(torch.float32).to(torch.float64)
                                        for t in (a, b, c)))
    p = a * b
    s = p + c
    bb = s - p
    e = (p - (s - bb)) + (c - bb)
    r = s.to(torch.float32)
    inf = torch.full_like(r, float("inf"))
    toward = torch.nextafter(r, torch.where(s > r.to(torch.float64), inf, -inf))
    tie = (r.to(torch.float64) + toward.to(torch.float64)) / 2 == s
    side = torch.where(e > 0, torch.maximum(r, toward), torch.minimum(r, toward))
    return torch.where(tie & (e != 0), side, r)


def f32(v):
    """A 0-d float32 tensor."""
    return torch.as_tensor(v, dtype=torch.float32).reshape(())


def ort_add_params(sa, sb, sc, za, zb, zc):
    """rA = fl32(s_a/s_c), rB = fl32(s_b/s_c), F = fl32(fl32(zc) - fma(rA, fl32(za), fl32(rB * fl32(zb))))
    (docs/semantics.md 11.4, rule ``onnxruntime``), 0-d float32 tensors."""
    rA, rB = f32(sa) / f32(sc), f32(sb) / f32(sc)
    if not (torch.isfinite(rA) and torch.isfinite(rB)):
        raise ValueError("a_scale/c_scale or b_scale/c_scale overflows float32")
    t = rB * f32(float(zb))
    F = f32(float(zc)) - fma32(rA, f32(float(za)), t)
    return rA, rB, F


def qlinear_add_ort(a, b, sa, za, sb, zb, sc, zc, lo, hi):
    """The ``onnxruntime`` rule of docs/semantics.md 11.4 on float64 integer tensors a, b
    (broadcasting, ORT's operand form by the shapes); returns float64 integers in [lo, hi]."""
    from ..reference.eltwise import ort_add_form
    af, bf = a.to(torch.float32), b.to(torch.float32)
    if ort_add_form(tuple(a.shape), tuple(b.shape)) != "a_scalar":
        rA, rB, F = ort_add_params(sa, sb, sc, za, zb, zc)
        v = fma32(af, rA, fma32(bf, rB, F))
    else:                                   # ORT swaps the operands: F, rA, rB swap roles
        rA, rB, F = ort_add_params(sb, sa, sc, zb, za, zc)
        v = fma32(bf, rA, fma32(af, rB, F))
    return torch.round(torch.clamp(v.to(torch.float64), lo, hi))


def global_avg_pool_int(x, sx, zx, sy, zy, lo, hi):
    """docs/semantics.md 11.3 global average pool on float64 integers x [N, C, H, W]:
    acc = sum x - zx*count (exact), S = fl32(s_x / fl32(s_y * fl32(count))),
    y = clamp(zy + rne(fl32(fl32(acc) * S)), lo, hi); output [N, C, 1, 1]."""
    count = x.shape[-1] * x.shape[-2]
    if count >= 2 ** 24:
        raise ValueError(f"global average pool over {count} >= 2^24 elements is not supported")
    S = f32(sx) / (f32(sy) * f32(float(count)))
    if not torch.isfinite(S):
        raise ValueError("s_x / (s_y * count) overflows float32")
    acc = x.sum(dim=(-2, -1), keepdim=True) - float(zx) * count
    p = (acc.to(torch.float32) * S).to(torch.float64)
    return torch.round(torch.clamp(p, lo - float(zy), hi - float(zy))) + float(zy)


def requantize_tensor(x, sx, zx, sy, zy, lo, hi):
    """docs/semantics.md 11.5 (QLinearConcat): y = sat(rne(fl32(fl32(s_x * fl32(x - zx)) / s_y)) + zy),
    a copy when (s_x, zx) == (s_y, zy); clamped to [lo, hi] (within the container)."""
    if float(f32(sx)) == float(f32(sy)) and float(zx) == float(zy):
        return torch.clamp(x, lo, hi)
    d = f32(sx) * (x - float(zx)).to(torch.float32)
    v = (d / f32(sy)).to(torch.float64)
    return torch.clamp(torch.round(v) + float(zy), lo, hi)


def avg_pool_ort(x, sx, zx, sy, zy, lo, hi, kernel, stride, pads, count_include_pad):
    """docs/semantics.md 11.3 average pool (ORT's float32 rule, ceil_mode 0) on float64
    integers x [N, C, H, W]: d = fl32(s_x * fl32(x - zx)); a float32 running sum over the
    in-bounds taps, kernel row by row; y = clamp(rne(fl32(fl32(fl32(acc / fl32(count)) / s_y)
    + fl32(zy)))). A kernel equal to the whole image with no padding is the global rule."""
    N, C, H, W = x.shape
    kh, kw = kernel
    sh, sw = stride
    ph, pw = pads
    if (kh, kw) == (H, W) and (ph, pw) == (0, 0):
        return global_avg_pool_int(x, sx, zx, sy, zy, lo, hi)
    d = f32(sx) * (x - float(zx)).to(torch.float32)
    dp = F.pad(d, (pw, pw, ph, ph))                     # out-of-bounds taps add +0.0: no effect
    ones = F.pad(torch.ones(1, 1, H, W, dtype=torch.float64), (pw, pw, ph, ph))
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    acc = torch.zeros(N, C, OH, OW, dtype=torch.float32)
    cnt = torch.zeros(1, 1, OH, OW, dtype=torch.float64)
    for i in range(kh):
        for j in range(kw):
            acc = acc + dp[:, :, i:i + sh * (OH - 1) + 1:sh, j:j + sw * (OW - 1) + 1:sw]
            cnt = cnt + ones[:, :, i:i + sh * (OH - 1) + 1:sh, j:j + sw * (OW - 1) + 1:sw]
    count = torch.full_like(cnt, float(kh * kw)) if count_include_pad else cnt
    v = ((acc / count.to(torch.float32)) / f32(sy)) + f32(float(zy))
    return torch.clamp(torch.round(v.to(torch.float64)), lo, hi)
