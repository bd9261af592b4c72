"""Shift convolution and a fast int64 oracle for the shift term arithmetic
(docs/semantics.md §12.4a). Both are built on §12.1-12.3 (pyqinfer/reference/shift.py).

* ``shift_conv_accumulate``: a 2-D convolution (NCHW, ONNX ``group``) whose weights
  are shift terms [T, OC, C/group, KH, KW]; every output is §12.2 over the receptive
  field with k = (c, kh, kw), padding taps equal to the zero point (so they add 0
  under both rules: floor(0 / 2^j) = 0); a group > 1 is the per-group loop of
  §12.4a. Slow, exact Python, for small shapes.
* ``shift_accumulate_int64``: §12.2 for rule 'exact' (or 'deepshift' without right
  shifts) via the decoded integer weights and a numpy matmul, exact whenever the
  static bound of §12.3 is below 2^62; for the large shapes the Python reference is
  too slow for.
"""
import numpy as np

from .conv import conv_output_shape
from .shift import (_ACT_RANGES, _bias, _check_acc_bits, _check_activations, check_shift_terms, saturate,
                    shift_accumulate)


def shift_accumulate_int64(a, signs, exponents, *, a_zero_point=None, bias=None, acc_bits=32, rule="exact"):
    """acc of §12.2 as int64, computed as (a - za) @ decoded weights (bound below 2^62)."""
    s, e = check_shift_terms(signs, exponents, rule)
    if np.any((s != 0) & (e < 0)):
        raise ValueError("right shifts (deepshift, e < 0) floor each product: no integer weights")
    a, za = _check_activations(a, a_zero_point, rule)
    W = _check_acc_bits(acc_bits)
    T, K, N = s.shape
    if a.shape[-1] != K:
        raise ValueError(f"inner dimensions differ: a {a.shape} vs terms [T={T}, K={K}, N={N}]")
    # §12.3's bound, vectorized and in float64 (the Python one is too slow for these
    # shapes); a relative error of 2^-50 cannot move it across the 2^52 / 2^62 limits
    amin, amax = _ACT_RANGES[a.dtype.name]
    max_a = max(za - amin, amax - za)
    bias_abs = np.abs(np.array(_bias(bias, N), dtype=np.float64))
    col = np.zeros(N)
    for k0 in range(0, K, 256):  # in slices: [T, K, N] float64 temporaries would be large
        sk, ek = s[:, k0:k0 + 256], e[:, k0:k0 + 256]
        col += np.where(sk != 0, np.exp2(np.where(sk != 0, ek, 0).astype(np.float64)), 0.0).sum(axis=(0, 1))
    bound = (float(max_a) * col + bias_abs).max(initial=0.0)
    if bound >= 2.0 ** 62:
        raise ValueError("the static bound reaches 2^62: use shift_accumulate")
    w = np.sum(np.where(s != 0, s << np.where(s != 0, e, 0), 0), axis=0)  # int64 [K, N]
    x = a.reshape(-1, K).astype(np.int64) - za
    if bound < 2.0 ** 52:  # float64 BLAS is exact here, and fast
        acc = (x.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
    else:
        acc = x @ w
    acc = acc + np.array(_bias(bias, N), dtype=np.int64)
    lo, hi = saturate(-(2 ** 62), W), saturate(2 ** 62, W)
    return np.clip(acc, lo, hi).reshape(*a.shape[:-1], N)


def shift_conv_accumulate(x, signs, exponents, *, x_zero_point=None, pads=None, strides=None,
                          dilations=None, bias=None, acc_bits=32, rule="exact", group=1):
    """[N, OC, OH, OW] accumulators of a shift convolution (NCHW).

    The terms are [T, OC, C/group, KH, KW] (ONNX Conv): with ``group`` g > 1 output
    channel block gi (OC/g channels) reads input channel block gi (C/g channels),
    computed as g group-1 convolutions concatenated along the channels (§12.4a)."""
    x = np.asarray(x)
    s, e = np.asarray(signs), np.asarray(exponents)
    if s.ndim == 4:
        s, e = s[None], e[None]
    if x.ndim != 4 or s.ndim != 5 or s.shape != e.shape:
        raise ValueError(f"x must be NCHW and the terms [T, OC, C/group, KH, KW], got {x.shape}, {s.shape}")
    if x.dtype.name not in _ACT_RANGES:
        raise TypeError(f"x must have dtype in {list(_ACT_RANGES)}, got {x.dtype}")
    n, C, H, W = x.shape
    T, OC, Cw, KH, KW = s.shape
    if not isinstance(group, (int, np.integer)) or isinstance(group, bool) or group < 1:
        raise ValueError(f"group must be an int >= 1, got {group!r}")
    g = int(group)
    if OC % g:
        raise ValueError(f"group={g} does not divide the {OC} output channels")
    if Cw * g != C:
        raise ValueError(f"x has C={C} but the terms have {Cw} input channels per group (group={g})")
    if g > 1:
        OCg = OC // g
        b = None if bias is None else np.asarray(bias)
        if b is not None and b.shape != (OC,):
            raise ValueError(f"bias must have shape ({OC},), got {b.shape}")
        parts = [shift_conv_accumulate(x[:, gi * Cw:(gi + 1) * Cw], s[:, gi * OCg:(gi + 1) * OCg],
                                       e[:, gi * OCg:(gi + 1) * OCg], x_zero_point=x_zero_point, pads=pads,
                                       strides=strides, dilations=dilations,
                                       bias=None if b is None else b[gi * OCg:(gi + 1) * OCg],
                                       acc_bits=acc_bits, rule=rule)
                 for gi in range(g)]
        return np.concatenate(parts, axis=1)
    pads = (0, 0, 0, 0) if pads is None else tuple(int(p) for p in pads)
    strides = (1, 1) if strides is None else tuple(int(v) for v in strides)
    dilations = (1, 1) if dilations is None else tuple(int(v) for v in dilations)
    OH, OW = conv_output_shape(H, W, (KH, KW), pads, strides, dilations)
    za = 0 if x_zero_point is None else int(x_zero_point)
    # patches [n*OH*OW, C*KH*KW], k = (c, kh, kw); taps outside the input are za
    patches = np.full((n, OH, OW, C, KH, KW), za, dtype=np.int64)
    for oh in range(OH):
        for ow in range(OW):
            for kh in range(KH):
                for kw in range(KW):
                    h = oh * strides[0] - pads[0] + kh * dilations[0]
                    w_ = ow * strides[1] - pads[1] + kw * dilations[1]
                    if 0 <= h < H and 0 <= w_ < W:
                        patches[:, oh, ow, :, kh, kw] = x[:, :, h, w_]
    a = patches.reshape(n * OH * OW, C * KH * KW).astype(x.dtype)
    st = np.ascontiguousarray(s.reshape(T, OC, C * KH * KW).transpose(0, 2, 1))
    et = np.ascontiguousarray(e.reshape(T, OC, C * KH * KW).transpose(0, 2, 1))
    acc = shift_accumulate(a, st, et, a_zero_point=x_zero_point, bias=bias, acc_bits=acc_bits, rule=rule)
    return acc.reshape(n, OH, OW, OC).transpose(0, 3, 1, 2)
