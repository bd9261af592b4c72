"""Planner steps for the pyqinfer-domain and QONNX kinds (docs/model-format.md sections 9, 11).

``ShiftMatMul`` / ``ShiftConv`` accumulate with the shift term arithmetic of
docs/semantics.md 12.1-12.3 and requantize with 4 / 12.4; ``MultiThreshold`` is
semantics 13; ``PWLQMatMul`` semantics 14; ``QonnxQuant`` and ``AffineChain``
model-format section 11.

SHIFT KERNEL ADAPTER. The C++ shift kernels live on branch ``shiftkern``.
:func:`shift_accumulate` is the one place that computes the shift accumulator:
``pyqinfer.ops.shift_matmul`` when it exists (the line marked ``SWITCH``), else an
exact vectorized numpy evaluation of ``pyqinfer.reference.shift_accumulate``
(tested equal to it bit for bit). The tests compare either with the reference.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _core
from .. import ops
from ..reference import shift as _rshift

_ACT_RANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127),
              np.dtype(np.int16): (-(2 ** 15), 2 ** 15 - 1), np.dtype(np.int32): (-(2 ** 31), 2 ** 31 - 1)}


def _err(node, msg):
    return ValueError(f"node {node.name!r} ({node.kind}): {msg}")


# ----------------------------------------------------------------- shift layers
class ShiftLayer:
    """Shift terms [T, K, N] of one layer, prepared once (per-exponent masks, bound)."""

    def __init__(self, signs, exponents, rule, a_dtype, za, bias, acc_bits):
        s, e = _rshift.check_shift_terms(signs, exponents, rule)      # int64 [T, K, N]
        self.signs, self.exponents = np.ascontiguousarray(signs), np.ascontiguousarray(exponents)
        self.rule, self.za, self.acc_bits = rule, int(za), int(acc_bits)
        self.bias = None if bias is None else np.ascontiguousarray(bias, np.int32)
        self.K, self.N = s.shape[1], s.shape[2]
        lo, hi = _ACT_RANGE[np.dtype(a_dtype)]
        max_a = max(self.za - lo, hi - self.za)
        on = s != 0
        # float64 over-estimate of the static bound (semantics 12.3): decides whether int64 is exact
        mag = np.where(on, np.ceil(max_a * np.exp2(e.astype(np.float64))), 0.0).sum(axis=(0, 1))
        bmax = float(mag.max()) + (float(np.abs(self.bias.astype(np.float64)).max()) if self.bias is not None else 0.0)
        self.int64_exact = bmax * (1 + 1e-9) < 2.0 ** 62
        # one int64 weight matrix per distinct exponent: sum_t s_t [e_t == eps]
        self.masks = []
        for eps in sorted(set(e[on].tolist())):
            m = np.where(on & (e == eps), s, 0).sum(axis=0).astype(np.int64)
            self.masks.append((int(eps), m))
        if rule == "exact":   # every exponent >= 0: one decoded integer matrix
            self.decoded = _rshift.shift_decode(signs, exponents, "exact").astype(np.int64) if self.int64_exact else None

    def packed(self):
        """The C++ packed weights (built once, on first use)."""
        p = self.__dict__.get("_packed")
        if p is None:
            p = self._packed = ops.pack_shift_weights(self.signs, self.exponents, rule=self.rule)
        return p

    def accumulate(self, a2):
        """int32 [M, N] accumulator of a2 [M, K] (semantics 12.2)."""
        return shift_accumulate(a2, self)

    def _numpy_exact(self, a2):
        if not self.int64_exact:   # products beyond int64: the reference, Python integers
            return _rshift.shift_accumulate(a2, self.signs, self.exponents, a_zero_point=self.za or None,
                                            bias=self.bias, acc_bits=self.acc_bits, rule=self.rule).astype(np.int32)
        x = a2.astype(np.int64) - self.za
        if self.rule == "exact":
            acc = x @ self.decoded
        else:
            acc = np.zeros((x.shape[0], self.N), np.int64)
            for eps, m in self.masks:
                sh = (x << eps) if eps >= 0 else (x >> -eps)          # >> on int64 is floor
                acc += sh @ m
        if self.bias is not None:
            acc += self.bias.astype(np.int64)
        W = self.acc_bits
        return np.clip(acc, -(1 << (W - 1)), (1 << (W - 1)) - 1).astype(np.int32)


#: The C++ shift kernels (branch shiftkern) when present, else the exact numpy adapter.
SHIFT_KERNELS = hasattr(ops, "shift_matmul") and hasattr(ops, "pack_shift_weights")


def shift_accumulate(a2, layer: ShiftLayer):
    """ADAPTER: the shift accumulator (semantics 12.2) of a2 [M, K] as int32 [M, N].

    With ``pyqinfer.ops.shift_matmul`` available (branch shiftkern merged) this is the
    C++ kernel (the SWITCH line); until then the exact numpy evaluation above.
    """
    if SHIFT_KERNELS:   # SWITCH
        return ops.shift_matmul(np.ascontiguousarray(a2), layer.packed(), a_zero_point=layer.za,
                                bias=layer.bias, acc_bits=layer.acc_bits)
    return layer._numpy_exact(a2)


def _requant_args(plan, n, N, w_scale):
    """(rq, ydt, zy, lo, hi) or None for an int32 output."""
    t_x, xq = plan._q(n.inputs[0])
    t_y, yq = plan._q(n.outputs[0])
    if yq is None:
        return None
    mode = n.attrs.get("mode", "fp32")
    zy = int(yq.zero_point[0])
    lo, hi = ops.activation_bounds(n.attrs.get("clip"), float(yq.scale[0]), zy, t_y.dtype)
    try:
        rq = _core.derive_requant(mode, float(xq.scale[0]), np.ascontiguousarray(w_scale, np.float32),
                                  float(yq.scale[0]), N)
    except ValueError as e:
        raise _err(n, f"requantization scale: {e}") from None
    return rq, t_y.dtype.name, zy, lo, hi


def _finish(acc, rqa):
    if rqa is None:
        return acc
    rq, ydt, zy, lo, hi = rqa
    return _core.requantize(np.ascontiguousarray(acc), rq, zy, lo, hi, ydt)


def shift_input_zero_point(n, xq):
    """A shift layer's activation zero point: the node's ``a_zero_point`` attribute (set by the
    importer, also when A has no scale), else the input's quantization parameters."""
    if "a_zero_point" in n.attrs:
        return int(n.attrs["a_zero_point"])
    return int(xq.zero_point[0]) if xq is not None else 0


def _act_zp(plan, n):
    t_x, xq = plan._q(n.inputs[0])
    return t_x.dtype, shift_input_zero_point(n, xq)


def build_shift_matmul(plan, n, st):
    xdt, za = _act_zp(plan, n)
    s, e = n.params["signs"], n.params["exponents"]
    layer = ShiftLayer(s, e, n.attrs["rule"], xdt, za, n.params.get("bias"), n.attrs["acc_bits"])
    K, N = layer.K, layer.N
    rqa = _requant_args(plan, n, N, n.params["w_scale"])

    def f(x):
        if x.dtype != xdt or x.shape[-1] != K:
            raise _err(n, f"input has dtype {x.dtype} and shape {x.shape}; expected {xdt} [..., {K}]")
        lead = x.shape[:-1]
        return _finish(layer.accumulate(x.reshape(-1, K)), rqa).reshape(*lead, N)
    st.fast = st.slow = f
    st.kernel = "shift (C++ shift_matmul)" if SHIFT_KERNELS else \
        "shift (exact numpy reference adapter; C++ shift kernels pending merge)"
    st.info = {"weights": f"{n.attrs.get('scheme', 'shift')} T={s.shape[0]} rule={n.attrs['rule']}",
               "weight_bytes": int(math.ceil(s[0].size * n.attrs.get("bits", 8) / 8)),
               "macs_per_out": K, "out_channels": N, "rule": f"acc_bits={n.attrs['acc_bits']} mode={n.attrs.get('mode', 'fp32')}"}


def im2col_nhwc(x, za, KH, KW, pads, strides, dil):
    n, H, W, C = x.shape
    pt, pl, pb, pr = pads
    OH = (H + pt + pb - (dil[0] * (KH - 1) + 1)) // strides[0] + 1
    OW = (W + pl + pr - (dil[1] * (KW - 1) + 1)) // strides[1] + 1
    if OH < 1 or OW < 1:
        raise ValueError(f"the kernel {KH}x{KW} does not fit the padded input {H}x{W}")
    xp = np.full((n, H + pt + pb, W + pl + pr, C), za, dtype=x.dtype)
    xp[:, pt:pt + H, pl:pl + W] = x
    cols = np.empty((n, OH, OW, KH, KW, C), dtype=x.dtype)
    for kh in range(KH):
        for kw in range(KW):
            h0, w0 = kh * dil[0], kw * dil[1]
            cols[:, :, :, kh, kw] = xp[:, h0:h0 + strides[0] * (OH - 1) + 1:strides[0],
                                       w0:w0 + strides[1] * (OW - 1) + 1:strides[1]]
    return cols.reshape(n * OH * OW, KH * KW * C), (n, OH, OW)


def build_shift_conv(plan, n, st):
    xdt, za = _act_zp(plan, n)
    s, e = n.params["signs"], n.params["exponents"]          # [T, OC, C/group, KH, KW]
    T, OC, Cg, KH, KW = s.shape
    g = int(n.attrs.get("group", 1))
    if g < 1 or OC % g:
        raise _err(n, f"group={g} does not divide the {OC} output channels")
    C, OCg = Cg * g, OC // g
    to_kn = lambda v: np.ascontiguousarray(v.transpose(0, 3, 4, 2, 1).reshape(T, KH * KW * Cg, -1))  # noqa: E731
    bias = n.params.get("bias")
    rqa = _requant_args(plan, n, OC, n.params["w_scale"])
    pads, strides, dil = tuple(n.attrs["pads"]), tuple(n.attrs["strides"]), tuple(n.attrs["dilations"])
    nhwc = plan._native(st)

    # semantics 12.4a: depthwise layers (group = C) with 8-bit activations on the depthwise
    # shift kernel; otherwise one shift GEMM per group on its own im2col columns, channels side by side
    dw = None
    if g > 1 and Cg == 1 and np.dtype(xdt).itemsize == 1 and SHIFT_KERNELS:
        _rshift.check_shift_terms(to_kn(s), to_kn(e), n.attrs["rule"])
        dw = _core.pack_dwshift(np.ascontiguousarray(s[:, :, 0]), np.ascontiguousarray(e[:, :, 0]), C, n.attrs["rule"])
        dw_bias = None if bias is None else np.ascontiguousarray(bias, np.int32)
        dw_out = ("int32", None, 0, 0, 0) if rqa is None else (rqa[1], rqa[0], *rqa[2:])   # fused requantization
        layers = []
    else:
        layers = [ShiftLayer(to_kn(s[:, gi * OCg:(gi + 1) * OCg]), to_kn(e[:, gi * OCg:(gi + 1) * OCg]),
                             n.attrs["rule"], xdt, za, None if bias is None else bias[gi * OCg:(gi + 1) * OCg],
                             n.attrs["acc_bits"])
                  for gi in range(g)]

    def fast(x):   # NHWC in and out
        if x.dtype != xdt or x.ndim != 4 or x.shape[3] != C:
            raise _err(n, f"input has dtype {x.dtype} and shape {x.shape}; expected {xdt} with {C} channels"
                          + (f" (group={g} x {Cg})" if g > 1 else ""))
        if dw is not None:
            try:
                return _core.dwshift_conv(np.ascontiguousarray(x), za, dw, dw_bias, n.attrs["acc_bits"], pads, strides,
                                          dil, *dw_out)
            except ValueError as err:
                raise _err(n, str(err)) from None
        try:
            cols, (nb, OH, OW) = im2col_nhwc(x, za, KH, KW, pads, strides, dil)
        except ValueError as err:
            raise _err(n, str(err)) from None
        if g == 1:
            acc = layers[0].accumulate(cols)
        else:
            cols = cols.reshape(cols.shape[0], KH * KW, C)           # k = (kh*KW + kw)*C + c
            acc = np.empty((cols.shape[0], OC), np.int32)
            for gi, layer in enumerate(layers):
                cg = np.ascontiguousarray(cols[:, :, gi * Cg:(gi + 1) * Cg]).reshape(cols.shape[0], KH * KW * Cg)
                acc[:, gi * OCg:(gi + 1) * OCg] = layer.accumulate(cg)
        return _finish(acc, rqa).reshape(nb, OH, OW, OC)
    plan._wrap_layout(st, fast, fast, nhwc)
    grp = f", {g} groups" if g > 1 else ""
    st.kernel = "depthwise shift conv (C++ dwshift_conv)" if dw is not None else \
        f"shift conv (im2col + C++ shift_matmul{grp})" if SHIFT_KERNELS else \
        f"shift conv (im2col + exact numpy reference adapter{grp}; C++ shift kernels pending merge)"
    st.info = {"weights": f"{n.attrs.get('scheme', 'shift')} T={T} rule={n.attrs['rule']}"
                          + (f" group={g}" if g > 1 else ""),
               "weight_bytes": int(math.ceil(s[0].size * n.attrs.get("bits", 8) / 8)),
               "macs_per_out": Cg * KH * KW, "out_channels": OC,
               "rule": f"acc_bits={n.attrs['acc_bits']} mode={n.attrs.get('mode', 'fp32')}"}


# ---------------------------------------------------------------- MultiThreshold
THRESHOLD_KERNEL = True   # False: plan the numpy step below instead (A/B in benchmarks/threshold_bench.py)


def numpy_int_count(x, ax, Tsorted, sign, o_s, o_b, odt):
    """The numpy step for integer x and sorted int64 thresholds: per-channel searchsorted on
    contiguous rows, exact int64 comparisons of sign[c] * x (the kernel's fallback and A/B peer)."""
    C = x.shape[ax]
    if Tsorted.shape[0] not in (1, C):
        raise ValueError(f"thresholds have {Tsorted.shape[0]} rows but x has {C} channels")
    xt = np.ascontiguousarray(np.moveaxis(x, ax, 0)).reshape(C, -1)
    cnt = np.empty(xt.shape, np.int64)
    for c in range(C):
        row = xt[c].astype(np.int64) if sign is None else xt[c].astype(np.int64) * sign[c]
        cnt[c] = np.searchsorted(Tsorted[0 if Tsorted.shape[0] == 1 else c], row, side="right")
    y = (cnt * o_s + o_b).astype(odt).reshape((C,) + tuple(np.delete(x.shape, ax)))
    return np.ascontiguousarray(np.moveaxis(y, 0, ax))


def build_multi_threshold(plan, n, st):
    T = n.params["thresholds"]
    sign = n.params.get("sign")
    lut = n.params.get("lut")
    layout = n.attrs.get("data_layout", "NCHW")
    osc, obi, odt = n.attrs.get("out_scale"), n.attrs.get("out_bias"), n.attrs.get("out_dtype")
    t_x = plan.g.tensors[n.inputs[0]]
    nhwc_in = plan.layout == "auto" and plan._have(n, 0) == "NHWC" and layout == "NCHW"
    if nhwc_in:   # a 4-D NCHW tensor held NHWC: the channel is the last physical axis
        st.in_layouts = ["NHWC"]
        st.out_layout = "NHWC"
        layout = "NHWC"
    tables = {}

    def count_out(x, lay):
        xx = x
        if sign is not None:
            ax = _axis(x.ndim, lay)
            sh = [1] * x.ndim
            sh[ax] = sign.size
            xx = x.astype(np.int64) * sign.reshape(sh)
        r = ops.multi_threshold(xx, T, osc, obi, data_layout=lay, out_dtype=odt, lut=lut)
        return r.astype(np.float32) if (lut is None and odt is None) else r

    # integer input, integer thresholds and an integer output whose static range fits: the C++
    # kernel (csrc/threshold/, semantics 13.1) on thresholds prepared once per input dtype; the
    # numpy per-channel searchsorted (exact int64 comparisons) where the kernel does not apply
    int_fast = (T.dtype.kind in "iu" and lut is None and odt is not None
                and float(osc if osc is not None else 1) == int(osc if osc is not None else 1)
                and float(obi if obi is not None else 0) == int(obi if obi is not None else 0))
    if int_fast:
        o_s, o_b = int(osc if osc is not None else 1), int(obi if obi is not None else 0)
        info = np.iinfo(np.dtype(odt))
        ends = (o_b, o_b + o_s * T.shape[1])
        int_fast = info.min <= min(ends) and max(ends) <= info.max
    Tsorted = np.sort(T.astype(np.int64), axis=1) if int_fast else None
    odt_name = np.dtype(odt).name if int_fast else None
    ktables = {}

    def kernel_table(dt, ndim):
        """(prepared C++ table or None, channel axis) for input dtype dt, built once per (dtype, rank)."""
        key = (dt, ndim)
        r = ktables.get(key)
        if r is None:
            tab = (ops.int_threshold_table(T, dt, o_s, o_b, odt, sign)
                   if int_fast and THRESHOLD_KERNEL and dt.isnative else None)
            r = ktables[key] = (tab, _axis(ndim, layout))
        return r

    def f(x):
        try:
            if int_fast and x.dtype.kind in "iu" and x.ndim >= 1:
                tab, ax = kernel_table(x.dtype, x.ndim)
                if sign is not None and sign.size != x.shape[ax]:
                    raise ValueError(f"{sign.size} channel signs but x has {x.shape[ax]} channels")
                if tab is not None:
                    return _core.multi_threshold_int(np.ascontiguousarray(x), tab, ax, odt_name)
                if 2 <= x.dtype.itemsize and x.dtype != np.uint64:
                    return numpy_int_count(x, ax, Tsorted, sign, o_s, o_b, odt)
            if x.dtype in (np.uint8, np.int8) and x.ndim >= 1:   # 8-bit input: a [C, 256] table, built once
                ax = _axis(x.ndim, layout)
                C = x.shape[ax]
                tab = tables.get(C)
                if tab is None:
                    vals = np.arange(256, dtype=np.uint8).view(x.dtype)
                    grid = np.ascontiguousarray(np.broadcast_to(vals[:, None], (256, C)))
                    tab = tables[C] = np.ascontiguousarray(count_out(grid, "NHWC").T)   # [C, 256]
                xm = np.moveaxis(x, ax, -1)
                y = tab[np.arange(C), xm.view(np.uint8)]
                return np.ascontiguousarray(np.moveaxis(y, -1, ax))
            return count_out(x, layout)
        except (TypeError, ValueError) as e:
            raise _err(n, str(e)) from None
    st.fast = st.slow = f
    nd = len(t_x.shape) if t_x.shape is not None else 4
    ktab = kernel_table(np.dtype(t_x.dtype), nd)[0] if int_fast else None
    if ktab is not None:
        lanes = ktab.rows > 1 and _axis(nd, layout) == nd - 1
        st.kernel = (f"C++ thresholds ({_core.threshold_kernel_name()}, {ktab.algo(lanes)}"
                     f"{', channels in lanes' if lanes else ''}, W={ktab.width})")
    else:
        st.kernel = "numpy thresholds" + (" (8-bit input: table)" if t_x.dtype in (np.uint8, np.int8) else
                                          " (searchsorted per channel, int64)" if int_fast else
                                          " (searchsorted per channel)")
    st.info = {"thresholds": f"{T.shape[0]}x{T.shape[1]}", "source": n.attrs.get("source")}


def _axis(ndim, layout):
    from ..reference.threshold import channel_axis
    return channel_axis(ndim, layout)


# ---------------------------------------------------------------- PWLQ
def build_pwlq_matmul(plan, n, st):
    from ..reference.pwlq import PWLQCodes, pwlq_linear
    t_x, xq = plan._q(n.inputs[0])
    t_y, yq = plan._q(n.outputs[0])
    p = n.params
    codes = PWLQCodes(int(n.attrs["bits"]), p["region"], p["q"], p["m"], p["p"], p["s_c"], p["s_t"])
    sx, zx = float(xq.scale[0]), t_x.dtype.type(xq.zero_point[0])
    sy, zy = float(yq.scale[0]), t_y.dtype.type(yq.zero_point[0])
    clip = n.attrs.get("clip")

    def f(x):
        try:
            return pwlq_linear(x, sx, zx, codes, sy, zy, p.get("bias"), clip=clip)
        except (TypeError, ValueError) as e:
            raise _err(n, str(e)) from None
    st.fast = st.slow = f
    st.kernel = "numpy (reference pwlq_linear: four int GEMMs + float32 combine)"
    st.info = {"weights": f"pwlq {n.attrs['bits']}-bit", "macs_per_out": int(p["q"].shape[0]),
               "out_channels": int(p["q"].shape[1])}


# ---------------------------------------------------------------- QONNX float steps
_ROUND = {
    "ROUND": np.rint,
    "FLOOR": np.floor,
    "CEIL": np.ceil,
    "UP": lambda v: np.sign(v) * np.ceil(np.abs(v)),
    "DOWN": np.trunc,
    "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)),
    "HALF_DOWN": lambda v: np.sign(v) * np.ceil(np.abs(v) - np.float32(0.5)),
}


def qonnx_quant_float(x, s, z, lo, hi, mode):
    """QONNX Quant of a float32 array in float32 (model-format 11.1): clamp(mode(fl32(fl32(x/s) + z)))."""
    x = np.asarray(x, np.float32)
    if np.isnan(x).any():
        raise ValueError("the input contains NaN")
    if mode == "BIPOLAR":
        return np.where(x >= 0, 1, -1)
    with np.errstate(over="ignore"):         # float32 overflow to inf is the defined result (then clipped)
        y = (x / np.float32(s)).astype(np.float32)
        y = (y + np.float32(z)).astype(np.float32)
    y = np.clip(y, np.float32(lo), np.float32(hi))
    return _ROUND[mode](y)


def build_qonnx_quant(plan, n, st):
    ty, yq = plan._q(n.outputs[0])
    s, z = np.float32(yq.scale[0]), int(yq.zero_point[0])
    lo, hi, mode = n.attrs["lo"], n.attrs["hi"], n.attrs["rounding_mode"]
    dt = ty.dtype

    def f(x):
        if x.dtype != np.float32:
            raise TypeError(f"node {n.name!r}: input must be float32, got {x.dtype}")
        try:
            return qonnx_quant_float(x, s, z, lo, hi, mode).astype(dt)
        except ValueError as e:
            raise _err(n, str(e)) from None
    st.fast = st.slow = f
    st.kernel = "numpy float32 (QONNX Quant rule)"


def build_affine_chain(plan, n, st):
    A, B = n.params["A"], n.params["B"]
    chain = n.attrs["chain"]
    layout = n.attrs.get("data_layout", "NCHW")

    def f(x):
        ax = _axis(x.ndim, layout)
        xm = np.moveaxis(x, ax, -1).astype(np.float64)
        v = xm * A + B
        for op in chain:
            if op[0] == "affine":
                v = v * op[1] + op[2]
            else:
                lo, hi = op[1], op[2]
                if lo is not None:
                    v = np.maximum(v, lo)
                if hi is not None:
                    v = np.minimum(v, hi)
        return np.ascontiguousarray(np.moveaxis(v.astype(np.float32), -1, ax))
    st.fast = st.slow = f
    st.kernel = "numpy float64 -> float32 (QONNX float tail)"
    st.numpy_float = True
    st.exact = False
