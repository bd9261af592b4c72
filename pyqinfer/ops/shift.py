"""Shift GEMM and convolution for power-of-two weights (docs/semantics.md section 12).

A shift weight is ``w[k, n] = sum_t s[t, k, n] * 2^e[t, k, n]`` with up to three
terms (PoT, log and DeepShift: one term; APoT: two or three). The terms are
int8 arrays ``signs`` (-1, 0, +1) and ``exponents`` of shape [T, K, N] (or [K, N]
for one term); the code formats (PoT/APoT/log encoders) produce them.

The kernels compute the same bits (section 12.4a):

* ``kernel="shift"``: every product is a shift (AVX-512BW ``vpsllvw`` on int16
  lanes where the static bound allows, ``vpsllvd`` int32 lanes otherwise, int64
  beyond), the sum saturated once to ``acc_bits``;
* ``kernel="multiply"``: the weights decoded once to integers and multiplied
  (the int8 VNNI GEMM when they fit int8, a 4-bit table kernel when a layer has at
  most 16 distinct values, int32/int64 otherwise). Rule ``"deepshift"`` with a
  negative exponent floors each product and has no multiply form: ValueError.
* ``kernel="hybrid"``: on AVX-512 VNNI, most columns on the int8 VNNI kernel
  and the rest as shift-add units inside the same loop (section 12.4a); only
  where nothing can saturate and the values fit int8, else as ``"multiply"``.
  Bit-exact like the others; measured 0.91-0.93x of the int8 route at 1024^3
  PoT-4 (docs/performance.md), so ``"auto"`` does not pick it.
* ``kernel="auto"`` (default): multiply when the weights have one, else shift;
  but where the multiply form would be the int32-lane kernel (values past int8)
  the shift kernel, for 8-bit activations and for 16-bit ones with >= 8 rows
  (measured 1.3-5x faster there; the int32 multiply kernel stays below 8 rows of
  16-bit activations).

>>> import numpy as np, pyqinfer.ops as ops
>>> s = np.array([[[1, -1]], [[1, 0]]], np.int8)           # T=2, K=1, N=2
>>> e = np.array([[[3, 1]], [[0, 0]]], np.int8)            # w = [2^3 + 2^0, -2^1] = [9, -2]
>>> w = ops.pack_shift_weights(s, e)
>>> ops.shift_matmul(np.array([[5]], np.uint8), w, a_zero_point=1)
array([[36, -8]], dtype=int32)
>>> ops.shift_matmul(np.array([[5]], np.uint8), w, a_zero_point=1, acc_bits=8, kernel="shift")
array([[36, -8]], dtype=int32)
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import _core
from ._checks import _RANGES, _scale, activation_bounds, bias_array, cached_requant
from .conv import _int_tuple

__all__ = ["SHIFT_RULES", "SHIFT_KERNELS", "PackedShiftWeights", "pack_shift_weights", "shift_matmul",
           "shift_kernel_name", "PackedShiftConvWeights", "pack_shift_conv_weights", "shift_conv"]

#: Product rules (docs/semantics.md 12.1).
SHIFT_RULES = ("exact", "deepshift")
#: Kernel choices of :func:`shift_matmul`.
SHIFT_KERNELS = ("shift", "multiply", "hybrid", "auto")
MODES = ("fp32", "q31", "q31_single", "pot")

_ACT = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127),
        np.dtype(np.int16): (-(2 ** 15), 2 ** 15 - 1), np.dtype(np.int32): (-(2 ** 31), 2 ** 31 - 1)}
_EXP_RANGE = {"exact": (0, 30), "deepshift": (-31, 30)}


def _terms(signs, exponents, rule):
    """signs, exponents as C-contiguous int8 [T, K, N], checked (section 12.1)."""
    if rule not in SHIFT_RULES:
        raise ValueError(f"rule must be one of {SHIFT_RULES}, got {rule!r}")
    for name, arr in (("signs", signs), ("exponents", exponents)):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"{name} must be a numpy int8 array, got {type(arr).__name__}")
        if arr.dtype != np.int8:
            raise TypeError(f"{name} must have dtype int8, got {arr.dtype}")
    s, e = signs, exponents
    if s.ndim == 2:
        s = s[None]
    if e.ndim == 2:
        e = e[None]
    if s.ndim != 3 or s.shape != e.shape:
        raise ValueError(f"signs and exponents must both have shape [T, K, N] (or [K, N]), "
                         f"got {signs.shape} and {exponents.shape}")
    T, K, N = s.shape
    if not 1 <= T <= 3:
        raise ValueError(f"a shift weight has 1 to 3 terms, got T = {T}")
    if K == 0 or N == 0:
        raise ValueError(f"shift weights must have K > 0 and N > 0, got shape {s.shape}")
    if np.any((s < -1) | (s > 1)):
        raise ValueError("signs must be in {-1, 0, +1}")
    lo, hi = _EXP_RANGE[rule]
    bad = (s != 0) & ((e < lo) | (e > hi))
    if np.any(bad):
        raise ValueError(f"exponents {sorted(set(e[bad].tolist()))[:4]} are outside [{lo}, {hi}] of rule {rule!r}")
    return np.ascontiguousarray(s), np.ascontiguousarray(e)


class PackedShiftWeights:
    """Shift-weight terms [T, K, N] packed once for both kernels; create with
    :func:`pack_shift_weights` and pass wherever ``w`` is taken. ``signs`` and
    ``exponents`` keep the terms as given (int8 [T, K, N])."""

    def __init__(self, signs, exponents, *, rule="exact"):
        self.signs, self.exponents = _terms(signs, exponents, rule)
        self.rule = rule
        self.T, self.K, self.N = self.signs.shape
        self._core = _core.pack_shift(self.signs, self.exponents, rule)

    @property
    def shape(self):
        return (self.K, self.N)

    @property
    def has_multiply_form(self):
        """Whether the weights have integer values (rule exact, or deepshift without right shifts)."""
        return bool(self._core.decodable)

    def __repr__(self):
        return f"PackedShiftWeights(T={self.T}, K={self.K}, N={self.N}, rule={self.rule!r})"


def pack_shift_weights(signs, exponents, *, rule="exact"):
    """Pack the terms ``signs``/``exponents`` (int8 [T, K, N] or [K, N]) of shift
    weights under product ``rule`` (``"exact"`` or ``"deepshift"``, section 12.1)."""
    return PackedShiftWeights(signs, exponents, rule=rule)


def _weights(w, rule):
    if isinstance(w, PackedShiftWeights):
        if rule is not None and rule != w.rule:
            raise ValueError(f"rule={rule!r} differs from the rule w was packed with ({w.rule!r})")
        return w
    if isinstance(w, tuple) and len(w) == 2:
        return PackedShiftWeights(w[0], w[1], rule="exact" if rule is None else rule)
    raise TypeError(f"w must be a PackedShiftWeights or a (signs, exponents) tuple, got {type(w).__name__}")


def _acc_bits(acc_bits):
    if isinstance(acc_bits, (bool, np.bool_)) or not isinstance(acc_bits, numbers.Integral):
        raise TypeError(f"acc_bits must be an int in [8, 32], got {acc_bits!r}")
    if not 8 <= int(acc_bits) <= 32:
        raise ValueError(f"acc_bits must be in [8, 32], got {acc_bits}")
    return int(acc_bits)


def _activations(a, a_zero_point, K, rule):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"a must be a numpy array, got {type(a).__name__}")
    if a.dtype not in _ACT:
        raise TypeError(f"a must have dtype uint8, int8, int16 or int32, got {a.dtype}")
    if a.ndim < 1:
        raise ValueError("a must have at least one dimension")
    if a.shape[-1] != K:
        raise ValueError(f"a has {a.shape[-1]} columns (K) but w has K = {K}")
    if rule == "deepshift" and a.dtype == np.uint8:
        raise TypeError("rule 'deepshift' needs signed activations (int8, int16, int32)")
    za = 0
    if a_zero_point is not None:
        arr = np.asarray(a_zero_point)
        if arr.dtype.kind not in "iu" or arr.size != 1:
            raise TypeError(f"a_zero_point must be an integer scalar, got {a_zero_point!r}")
        za = int(arr.reshape(()))
        lo, hi = _ACT[a.dtype]
        if not lo <= za <= hi:
            raise ValueError(f"a_zero_point={za} is outside the range [{lo}, {hi}] of {a.dtype}")
        if za and (a.dtype.itemsize > 1 or rule != "exact"):
            raise ValueError(f"a_zero_point must be 0 for {a.dtype} activations and rule {rule!r}, got {za}")
    lead = a.shape[:-1]
    return np.ascontiguousarray(a).reshape(-1, K), lead, za


def _kernel(kernel):
    if kernel not in SHIFT_KERNELS:
        raise ValueError(f"kernel must be one of {SHIFT_KERNELS}, got {kernel!r}")
    return kernel


def _output(w, a_scale, w_scale, y_scale, y_zero_point, mode, clip):
    """(out_dtype, requant, zy, lo, hi) for the requantized output, or int32."""
    if y_scale is None:
        if any(v is not None for v in (a_scale, w_scale, y_zero_point)) or clip is not None:
            raise ValueError("a_scale, w_scale, y_zero_point and clip need y_scale (requantized output)")
        return "int32", None, 0, 0, 0
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if a_scale is None or w_scale is None:
        raise ValueError("a requantized output needs a_scale and w_scale as well as y_scale")
    x_s = _scale("a_scale", a_scale)
    w_s = _scale("w_scale", w_scale, n=w.N)
    y_s = _scale("y_scale", y_scale)
    y_zero_point = np.uint8(0) if y_zero_point is None else y_zero_point
    y_dtype = np.asarray(y_zero_point).dtype if isinstance(y_zero_point, (np.ndarray, np.generic)) \
        else np.dtype(np.uint8)
    if y_dtype not in _RANGES:
        raise TypeError(f"y_zero_point must be uint8 or int8 (it sets the output dtype), got {y_dtype}")
    zy = int(np.asarray(y_zero_point).reshape(()))
    qlo, qhi = _RANGES[y_dtype]
    if not qlo <= zy <= qhi:
        raise ValueError(f"y_zero_point={zy} is outside the range [{qlo}, {qhi}] of {y_dtype}")
    lo, hi = activation_bounds(clip, float(y_s[0]), zy, y_dtype)
    rq = cached_requant(w, mode, x_s, w_s, y_s, w.N)
    return str(y_dtype), rq, zy, lo, hi


def shift_matmul(a, w, *, a_zero_point=None, bias=None, acc_bits=32, kernel="auto", rule=None,
                 a_scale=None, w_scale=None, y_scale=None, y_zero_point=None, mode="fp32", clip=None):
    """``acc = sat_acc_bits( sum_k sum_t p(a - a_zero_point, s, e) + bias )`` (section 12.2).

    ``a`` is [..., K] uint8/int8 (any zero point, rule exact) or int16/int32 (zero
    point 0); ``w`` a :class:`PackedShiftWeights` or a ``(signs, exponents)`` tuple
    (``rule`` applies to a tuple). Returns int32 ``acc``, or, with ``y_scale``, the
    requantized 8-bit output exactly as :func:`qlinear_matmul` (``a_scale``,
    ``w_scale`` scalar or per column, ``y_zero_point`` sets the dtype, ``mode``,
    ``clip``; section 12.4). ``kernel``: ``"shift"``, ``"multiply"``, ``"hybrid"`` or ``"auto"`` (module docstring);
    every choice gives the same bits.
    """
    w = _weights(w, rule)
    acc_bits = _acc_bits(acc_bits)
    kernel = _kernel(kernel)
    a2, lead, za = _activations(a, a_zero_point, w.K, w.rule)
    b = bias_array(bias, w.N)
    out_dtype, rq, zy, lo, hi = _output(w, a_scale, w_scale, y_scale, y_zero_point, mode, clip)
    out = _core.shift_gemm(a2, za, w._core, b, acc_bits, kernel, out_dtype, rq, zy, lo, hi)
    return out.reshape(*lead, w.N)


def shift_kernel_name(a, w, *, a_zero_point=None, bias=None, acc_bits=32, kernel="auto"):
    """The kernel :func:`shift_matmul` runs for these arguments on the active path
    (e.g. ``"shift_avx512bw:int16x3,int32x1,wide64x0"``: lane width per panel). Pass the
    call's ``bias``: routes that need no saturation (the hybrid) depend on it."""
    w = _weights(w, None)
    a2, _, za = _activations(a, a_zero_point, w.K, w.rule)
    return _core.shift_gemm_kernel_name(a2, za, w._core, _acc_bits(acc_bits), _kernel(kernel), bias_array(bias, w.N))


# ------------------------------------------------------------------ convolution

class PackedShiftConvWeights:
    """Shift convolution weights: terms [T, OC, C/group, KH, KW] (ONNX weight order per
    term). Create with :func:`pack_shift_conv_weights`.

    ``group`` 1: packed as the GEMM terms [T, K = KH*KW*C, OC] (``gemm``) in the NHWC
    gather order k = (kh*KW + kw)*C + c. ``group`` g > 1 (section 12.4a): one such GEMM
    per group (``groups``, output channels [gi*OC/g, (gi+1)*OC/g) on input channels
    [gi*C/g, (gi+1)*C/g)); depthwise (g = C, any channel multiplier OC/C) moreover
    packs the depthwise shift kernel (``depthwise``, used for 8-bit activations), and
    builds its per-group GEMMs only when a call needs them."""

    def __init__(self, signs, exponents, *, rule="exact", group=1):
        for name, arr in (("signs", signs), ("exponents", exponents)):
            if not isinstance(arr, np.ndarray) or arr.dtype != np.int8:
                raise TypeError(f"{name} must be a numpy int8 array")
        if isinstance(group, (bool, np.bool_)) or not isinstance(group, numbers.Integral):
            raise TypeError(f"group must be an int >= 1, got {group!r}")
        if group < 1:
            raise ValueError(f"group must be >= 1, got {group}")
        s, e = (x[None] if x.ndim == 4 else x for x in (signs, exponents))
        if s.ndim != 5 or s.shape != e.shape:
            raise ValueError(f"signs and exponents must both have shape [T, OC, C/group, KH, KW] (or "
                             f"[OC, C/group, KH, KW]), got {signs.shape} and {exponents.shape}")
        T, OC, Cg, KH, KW = s.shape
        g = int(group)
        if OC % g:
            raise ValueError(f"group={g} does not divide the {OC} output channels")
        self.kernel_shape = (KH, KW)
        self.C, self.OC, self.group, self.T = Cg * g, OC, g, T
        self.rule = rule
        self._terms5 = (np.ascontiguousarray(s), np.ascontiguousarray(e))
        self.depthwise = None
        self.groups = None
        if g == 1:
            self.gemm = self._group_gemm(0)
            return
        if Cg == 1 and g == self.C:
            _terms(s.reshape(T, OC, KH * KW).transpose(0, 2, 1), e.reshape(T, OC, KH * KW).transpose(0, 2, 1), rule)
            self.depthwise = _core.pack_dwshift(np.ascontiguousarray(s[:, :, 0]), np.ascontiguousarray(e[:, :, 0]),
                                                self.C, rule)
        else:
            self.group_gemms()

    def _group_gemm(self, gi):
        s, e = self._terms5
        T, OC, Cg, KH, KW = s.shape
        OCg = OC // self.group
        to_kn = lambda x: np.ascontiguousarray(  # noqa: E731
            x[:, gi * OCg:(gi + 1) * OCg].transpose(0, 3, 4, 2, 1).reshape(T, KH * KW * Cg, OCg))
        return PackedShiftWeights(to_kn(s), to_kn(e), rule=self.rule)

    def group_gemms(self):
        """The per-group GEMM weights (built on first use for depthwise layers)."""
        if self.groups is None:
            self.groups = [self._group_gemm(gi) for gi in range(self.group)]
        return self.groups

    @property
    def N(self):
        return self.OC

    def __repr__(self):
        grp = f", group={self.group}" if self.group > 1 else ""
        return f"PackedShiftConvWeights(T={self.T}, OC={self.OC}, C={self.C}, kernel={self.kernel_shape}{grp})"


def pack_shift_conv_weights(signs, exponents, *, rule="exact", group=1):
    """Pack shift convolution terms [T, OC, C/group, KH, KW] (or [OC, C/group, KH, KW])
    once. ``group`` is ONNX Conv's (section 12.4a): it must divide OC; the input then
    has ``C/group * group`` channels. ``group == C`` is depthwise (any multiplier OC/C)."""
    return PackedShiftConvWeights(signs, exponents, rule=rule, group=group)


def _conv_geometry(x_hw, kernel_shape, pads, strides, dilations):
    strides = _int_tuple("strides", strides, 2, 1) or (1, 1)
    dilations = _int_tuple("dilations", dilations, 2, 1) or (1, 1)
    pads = _int_tuple("pads", pads, 4, 0) or (0, 0, 0, 0)
    for axis, size, k, d, b, e in (("H", x_hw[0], kernel_shape[0], dilations[0], pads[0], pads[2]),
                                   ("W", x_hw[1], kernel_shape[1], dilations[1], pads[1], pads[3])):
        if size < 1 or size + b + e < (k - 1) * d + 1:
            raise ValueError(f"the kernel ({k} taps, dilation {d}) does not fit the padded input along "
                             f"{axis} ({size} + pads {b}+{e})")
    return pads, strides, dilations


def im2col_nhwc(x, x_zero_point, kernel_shape, pads, strides, dilations):
    """[N*OH*OW, KH*KW*C] patches of an NHWC tensor (padding taps = the zero point)."""
    n, H, W, C = x.shape
    KH, KW = kernel_shape
    pt, pl, pb, pr = pads
    OH = (H + pt + pb - (dilations[0] * (KH - 1) + 1)) // strides[0] + 1
    OW = (W + pl + pr - (dilations[1] * (KW - 1) + 1)) // strides[1] + 1
    xp = np.full((n, H + pt + pb, W + pl + pr, C), x_zero_point, dtype=x.dtype)
    xp[:, pt:pt + H, pl:pl + W] = x
    cols = np.empty((n, OH, OW, KH, KW, C), dtype=x.dtype)
    for kh in range(KH):
        for kw in range(KW):
            h0, w0 = kh * dilations[0], kw * dilations[1]
            cols[:, :, :, kh, kw] = xp[:, h0:h0 + strides[0] * (OH - 1) + 1:strides[0],
                                       w0:w0 + strides[1] * (OW - 1) + 1:strides[1]]
    return cols.reshape(n * OH * OW, KH * KW * C), (n, OH, OW)


def shift_conv(x, w, *, x_zero_point=None, bias=None, pads=None, strides=None, dilations=None,
               acc_bits=32, kernel="auto", layout="NCHW", x_scale=None, w_scale=None, y_scale=None,
               y_zero_point=None, mode="fp32", clip=None):
    """2-D convolution with shift weights: the im2col patches of ``x`` (padding taps
    equal ``x_zero_point``, so they add 0; section 12.4a) times the GEMM terms, through
    :func:`shift_matmul` with the same ``acc_bits``, ``kernel``, bias and
    requantization arguments. ``x`` is NCHW (default) or NHWC; the output has the same
    layout. Weights packed with ``group`` g > 1 run one GEMM per group on that group's
    channels, except depthwise layers (g = C) with 8-bit ``x`` and ``kernel`` ``"auto"``
    or ``"shift"``, which run the depthwise shift kernel (same bits)."""
    if not isinstance(w, PackedShiftConvWeights):
        raise TypeError(f"w must be a PackedShiftConvWeights (pack_shift_conv_weights), got {type(w).__name__}")
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError("x must be a 4-D numpy array")
    xn = x.transpose(0, 2, 3, 1) if layout == "NCHW" else x
    if xn.shape[3] != w.C:
        grp = f" (group={w.group} x {w.C // w.group} channels)" if w.group > 1 else ""
        raise ValueError(f"x has {xn.shape[3]} channels but w expects C = {w.C}{grp}")
    pads, strides, dilations = _conv_geometry(xn.shape[1:3], w.kernel_shape, pads, strides, dilations)
    za = 0 if x_zero_point is None else int(np.asarray(x_zero_point).reshape(()))
    if x.dtype in _ACT:
        lo, hi = _ACT[x.dtype]
        if not lo <= za <= hi:
            raise ValueError(f"x_zero_point={za} is outside the range [{lo}, {hi}] of {x.dtype}")
    if w.group > 1:
        y = _grouped_conv(xn, w, x_zero_point, za, bias, pads, strides, dilations, acc_bits, kernel,
                          (x_scale, w_scale, y_scale, y_zero_point, mode, clip))
    else:
        cols, (n, OH, OW) = im2col_nhwc(np.ascontiguousarray(xn), za, w.kernel_shape, pads, strides, dilations)
        y = shift_matmul(cols, w.gemm, a_zero_point=x_zero_point, bias=bias, acc_bits=acc_bits, kernel=kernel,
                         a_scale=x_scale, w_scale=w_scale, y_scale=y_scale, y_zero_point=y_zero_point,
                         mode=mode, clip=clip)
        y = y.reshape(n, OH, OW, w.OC)
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if layout == "NCHW" else y


def _grouped_conv(xn, w, x_zero_point, za, bias, pads, strides, dilations, acc_bits, kernel, out_args):
    """NHWC output of a grouped shift conv (section 12.4a): the depthwise kernel (its
    epilogue requantizes), or one shift GEMM per group into the int32 accumulators, then
    the requantization."""
    acc_bits = _acc_bits(acc_bits)
    kernel = _kernel(kernel)
    x2, _, za = _activations(xn, x_zero_point, w.C, w.rule)     # checks dtype, zero point, rule
    xn = x2.reshape(xn.shape)
    b = bias_array(bias, w.OC)
    out_dtype, rq, zy, lo, hi = _output(w, *out_args)
    if w.depthwise is not None and kernel in ("auto", "shift") and xn.dtype.itemsize == 1:
        return _core.dwshift_conv(xn, za, w.depthwise, b, acc_bits, pads, strides, dilations, out_dtype, rq, zy, lo, hi)
    else:
        cols, (n, OH, OW) = im2col_nhwc(xn, za, w.kernel_shape, pads, strides, dilations)
        KK = w.kernel_shape[0] * w.kernel_shape[1]
        Cg, OCg = w.C // w.group, w.OC // w.group
        cols = cols.reshape(cols.shape[0], KK, w.C)                   # k = (kh*KW + kw)*C + c
        acc = np.empty((cols.shape[0], w.OC), np.int32)
        for gi, wg in enumerate(w.group_gemms()):
            cg = np.ascontiguousarray(cols[:, :, gi * Cg:(gi + 1) * Cg]).reshape(cols.shape[0], KK * Cg)
            og = slice(gi * OCg, (gi + 1) * OCg)
            acc[:, og] = _core.shift_gemm(cg, za, wg._core, None if b is None else np.ascontiguousarray(b[og]),
                                          acc_bits, kernel, "int32", None, 0, 0, 0)
        acc = acc.reshape(n, OH, OW, w.OC)
    if rq is None:
        return acc
    return _core.requantize(acc.reshape(-1, w.OC), rq, zy, lo, hi, out_dtype).reshape(acc.shape)
