"""The integer contract of each node: pyqinfer.reference (the golden model of
docs/semantics.md) applied to the node's inputs. The engine must equal it bit
for bit; any difference is a bug.

``contract(graph, node, ins, add_rule)`` returns the output array in the ONNX
layout, or raises :class:`NoContract` for a node the contract does not cover
(float ops run in numpy).
"""
from __future__ import annotations

import numpy as np

from .. import reference as ref
from ..reference import shift_conv as _rshift_conv
from .floatref import MOVEMENT, movement
from ..graph.customops import shift_input_zero_point


class NoContract(Exception):
    """The node has no integer contract (a float op)."""


def _sq(qp, dt):
    return float(qp.scale[0]), np.dtype(dt).type(int(qp.zero_point[0]))


def _wzp(node, dt):
    z = node.params["w_zero_point"]
    return np.dtype(dt).type(int(z[0])) if z.size == 1 else z.astype(dt)


def _wscale(node):
    s = node.params["w_scale"].astype(np.float32)
    return float(s[0]) if s.size == 1 else s


def _clip(node):
    c = node.attrs.get("clip")
    return tuple(int(v) for v in c) if isinstance(c, (tuple, list)) else c


def contract(graph, node, ins, add_rule=None):
    k = node.kind
    if k in MOVEMENT:
        return movement(node, ins[0])
    t = graph.tensors
    if k == "FloatOp":
        raise NoContract("float op (numpy float32; not covered by the integer contract)")
    x = ins[0]
    tx = t[node.inputs[0]]
    ty = t[node.outputs[0]]
    if k in ("QLinearConv", "ConvInteger"):
        w = node.params["w"]
        a = node.attrs
        pads = a["pads"]
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", None):
            pads = ref.same_pads(a["auto_pad"], x.shape[2:], w.shape[2:], a["strides"], a["dilations"])
        geo = dict(pads=pads, strides=a["strides"], dilations=a["dilations"], group=a["group"])
        zx = x.dtype.type(int(tx.quant.zero_point[0]))
        if k == "ConvInteger":
            return ref.conv_integer(x, w, zx, _wzp(node, w.dtype), **geo)
        sx, _ = _sq(tx.quant, x.dtype)
        sy, zy = _sq(ty.quant, ty.dtype)
        return ref.qlinear_conv(x, sx, zx, w, _wscale(node), _wzp(node, w.dtype), sy, zy, node.params.get("bias"),
                                mode=node.attrs.get("mode", "fp32"), clip=_clip(node), **geo)
    if k in ("QLinearMatMul", "MatMulInteger"):
        w = node.params["w"]
        K, N = w.shape
        lead = x.shape[:-1]
        a2 = x.reshape(-1, K)
        zx = x.dtype.type(int(tx.quant.zero_point[0]))
        if k == "MatMulInteger":
            return ref.matmul_integer(a2, w, zx, _wzp(node, w.dtype)).reshape(*lead, N)
        sx, _ = _sq(tx.quant, x.dtype)
        sy, zy = _sq(ty.quant, ty.dtype)
        y = ref.qlinear_matmul(a2, sx, zx, w, _wscale(node), _wzp(node, w.dtype), sy, zy,
                               bias=node.params.get("bias"), mode=node.attrs.get("mode", "fp32"), clip=_clip(node))
        return y.reshape(*lead, N)
    if k == "QLinearAdd":
        a, b = ins
        (sa, za), (sb, zb) = _sq(t[node.inputs[0]].quant, a.dtype), _sq(t[node.inputs[1]].quant, b.dtype)
        sc, zc = _sq(ty.quant, ty.dtype)
        rule = add_rule or node.attrs.get("rule", "onnxruntime")
        if rule == "onnx":   # ONNX reference: dequantize, float32 add, quantize (docs/model-format.md)
            s = np.add(ref.dequantize_linear(a, sa, za), ref.dequantize_linear(b, sb, zb), dtype=np.float32)
            lo, hi = ref.activation_bounds(_clip(node), sc, zc, ty.dtype.name)
            return np.clip(ref.quantize_linear(s, sc, zc), lo, hi).astype(ty.dtype)
        if b.size != 1 and a.size == 1:     # ORT swaps a scalar A into the B position
            a, sa, za, b, sb, zb = b, sb, zb, a, sa, za
        elif b.size != 1 and b.shape != a.shape:
            b = np.ascontiguousarray(np.broadcast_to(b, np.broadcast_shapes(a.shape, b.shape)))
        return ref.qlinear_add(a, sa, za, b, sb, zb, sc, zc, rule=rule, clip=_clip(node))
    if k == "MaxPool":
        a = node.attrs
        return ref.max_pool(x, a["kernel_shape"], a["strides"], a["pads"], a["dilations"])
    if k == "QLinearAveragePool":
        a = node.attrs
        sx, zx = _sq(tx.quant, x.dtype)
        sy, zy = _sq(ty.quant, ty.dtype)
        return ref.qlinear_average_pool(x, sx, zx, sy, zy, a["kernel_shape"], a["strides"], a["pads"],
                                        a.get("count_include_pad", 0))
    if k == "QLinearGlobalAveragePool":
        sx, zx = _sq(tx.quant, x.dtype)
        sy, zy = _sq(ty.quant, ty.dtype)
        return ref.qlinear_global_average_pool(x, sx, zx, sy, zy)
    if k == "QLinearConcat":
        sy, zy = _sq(ty.quant, ty.dtype)
        parts = [(v, *_sq(t[nm].quant, v.dtype)) for nm, v in zip(node.inputs, ins)]
        return ref.qlinear_concat(sy, zy, parts, int(node.attrs["axis"]))
    if k == "Rescale":
        sx, zx = _sq(tx.quant, x.dtype)
        sy, zy = _sq(ty.quant, ty.dtype)
        return ref.requantize_tensor(x, sx, zx, sy, zy)
    if k == "Lookup":
        return node.params["table"][np.ascontiguousarray(x).view(np.uint8)]
    if k == "Clip":
        return ref.clip(x, node.attrs["lo"], node.attrs["hi"])
    if k == "Requantize":
        sy, zy = _sq(ty.quant, ty.dtype)
        xs = tx.quant.scale
        return ref.requantize_int32(x, xs if xs.size > 1 else float(xs[0]), sy, zy, mode="fp32", clip=_clip(node))
    if k in ("QuantizeLinear", "DequantizeLinear"):
        q, zdt = (ty.quant, ty.dtype) if k == "QuantizeLinear" else (tx.quant, x.dtype)
        fn = ref.quantize_linear if k == "QuantizeLinear" else ref.dequantize_linear
        if q.per_channel:   # the reference takes the channel as the last axis
            return np.moveaxis(fn(np.moveaxis(x, q.axis, -1), q.scale, q.zero_point.astype(zdt)), -1, q.axis)
        return fn(x, float(q.scale[0]), zdt.type(int(q.zero_point[0])))
    if k in ("ShiftMatMul", "ShiftConv"):
        return _shift(node, x, tx, ty)
    if k == "MultiThreshold":
        return _multi_threshold(node, x, ty)
    if k == "PWLQMatMul":
        p = node.params
        codes = ref.pwlq.PWLQCodes(int(node.attrs["bits"]), p["region"], p["q"], p["m"], p["p"], p["s_c"], p["s_t"])
        sx, zx = _sq(tx.quant, x.dtype)
        sy, zy = _sq(ty.quant, ty.dtype)
        K = x.shape[-1]
        y = ref.pwlq_linear(x.reshape(-1, K), sx, zx, codes, sy, zy, p.get("bias"), clip=_clip(node))
        return y.reshape(*x.shape[:-1], -1)
    if k == "QonnxQuant":
        return _qonnx_quant(node, x, ty)
    if k == "AffineChain":
        return _affine_chain(node, x)
    raise NoContract(f"no contract for kind {k}")


# ----------------------------------------------------------------- pyqinfer domain and QONNX kinds

def _shift_acc(x2, s, e, za, bias, W, rule):
    """semantics 12.2 on x2 [M, K]: the int64 oracle of the reference where it applies (no right
    shifts, static bound below 2^62), else the Python-integer reference."""
    if not np.any((s != 0) & (e < 0)):
        try:
            return _rshift_conv.shift_accumulate_int64(x2, s, e, a_zero_point=za or None, bias=bias,
                                                         acc_bits=W, rule=rule)
        except ValueError:
            pass
    return ref.shift_accumulate(x2, s, e, a_zero_point=za or None, bias=bias, acc_bits=W, rule=rule)


def _shift_conv_acc(x, s, e, za, bias, W, rule, pads, strides, dil):
    """[N, OC, OH, OW] of a group-1 shift convolution: the patches of shift_conv_accumulate
    (taps outside the input = za), int64 sums by _shift_acc."""
    T, OC, C, KH, KW = s.shape
    n, _, H, Wd = x.shape
    OH, OW = ref.conv_output_shape(H, Wd, (KH, KW), pads, strides, dil)
    xp = np.full((n, C, H + pads[0] + pads[2], Wd + pads[1] + pads[3]), za, x.dtype)
    xp[:, :, pads[0]:pads[0] + H, pads[1]:pads[1] + Wd] = x
    cols = np.empty((n, OH, OW, C, KH, KW), x.dtype)
    for kh in range(KH):
        for kw in range(KW):
            h0, w0 = kh * dil[0], kw * dil[1]
            cols[..., kh, kw] = xp[:, :, h0:h0 + strides[0] * (OH - 1) + 1:strides[0],
                                   w0:w0 + strides[1] * (OW - 1) + 1:strides[1]].transpose(0, 2, 3, 1)
    kn = lambda v: np.ascontiguousarray(v.reshape(T, OC, -1).transpose(0, 2, 1))  # noqa: E731
    acc = _shift_acc(cols.reshape(n * OH * OW, -1), kn(s), kn(e), za, bias, W, rule)
    return acc.reshape(n, OH, OW, OC).transpose(0, 3, 1, 2)


def _shift(node, x, tx, ty):
    """ShiftMatMul / ShiftConv: shift_accumulate (12.2, ShiftConv: 12.4a's patches), then
    derive_requant / requantize (12.4) unless the output is the int32 accumulator."""
    a, p = node.attrs, node.params
    s, e = p["signs"], p["exponents"]
    za = shift_input_zero_point(node, tx.quant)
    W, rule = int(a["acc_bits"]), a["rule"]
    if node.kind == "ShiftConv":
        T, OC, Cg, KH, KW = s.shape
        g = int(a.get("group", 1))
        pads, strides, dil = tuple(a["pads"]), tuple(a["strides"]), tuple(a["dilations"])
        if np.any((s != 0) & (e < 0)) or x.size * KH * KW > 200_000:
            acc = _rshift_conv.shift_conv_accumulate(x, s, e, x_zero_point=za or None, pads=pads, strides=strides,
                                                       dilations=dil, bias=p.get("bias"), acc_bits=W, rule=rule,
                                                       group=g)
        else:   # per group (12.4a), the patches of shift_conv_accumulate (taps outside the input = za)
            if OC % g or x.shape[1] != Cg * g:
                raise ValueError(f"group={g}: x has {x.shape[1]} channels, the terms {list(s.shape)}")
            OCg, b = OC // g, p.get("bias")
            acc = np.concatenate([_shift_conv_acc(x[:, gi * Cg:(gi + 1) * Cg], s[:, gi * OCg:(gi + 1) * OCg],
                                                  e[:, gi * OCg:(gi + 1) * OCg], za,
                                                  None if b is None else b[gi * OCg:(gi + 1) * OCg],
                                                  W, rule, pads, strides, dil) for gi in range(g)], axis=1)
        chan_last = np.moveaxis(acc, 1, -1)
    else:
        K = x.shape[-1]
        acc = _shift_acc(x.reshape(-1, K), s, e, za, p.get("bias"), W, rule).reshape(*x.shape[:-1], -1)
        chan_last = acc
    if ty.quant is None:
        return acc.astype(np.int32)
    sy, zy = _sq(ty.quant, ty.dtype)
    ws = p["w_scale"].astype(np.float32)
    params = ref.derive_requant(a.get("mode", "fp32"), float(tx.quant.scale[0]), ws if ws.size > 1 else float(ws[0]), sy)
    lo, hi = ref.activation_bounds(_clip(node), sy, zy, ty.dtype.name)
    y = ref.requantize(chan_last, params, int(zy), lo, hi).astype(ty.dtype)
    return np.moveaxis(y, -1, 1) if node.kind == "ShiftConv" else y


def _multi_threshold(node, x, ty):
    """semantics 13 (reference.multi_threshold) on sign * x when the node carries signs; a float
    output is the float64 value rounded once to float32 (model-format 9.2)."""
    a, p = node.attrs, node.params
    layout = a.get("data_layout", "NCHW")
    xx = x
    if p.get("sign") is not None:
        ax = ref.threshold.channel_axis(x.ndim, layout)
        sh = [1] * x.ndim
        sh[ax] = -1
        xx = x.astype(np.int64) * p["sign"].astype(np.int64).reshape(sh)
    y = ref.multi_threshold(xx, p["thresholds"], a.get("out_scale"), a.get("out_bias"), data_layout=layout,
                            out_dtype=a.get("out_dtype"), lut=p.get("lut"))
    return y.astype(ty.dtype) if y.dtype.kind == "f" else y


# the rounding modes as QONNX's numpy code applies them to the float32 value v (resolve_rounding_mode):
# HALF_UP / HALF_DOWN add or subtract the half in float32 (np.abs(v) + 0.5 stays float32)
_H = np.float32(0.5)
_QONNX_ROUND = {
    "ROUND": np.rint, "FLOOR": np.floor, "CEIL": np.ceil, "DOWN": np.trunc,
    "UP": lambda v: np.sign(v) * np.ceil(np.abs(v)),
    "HALF_UP": lambda v: np.sign(v) * np.floor(np.add(np.abs(v), _H, dtype=np.float32)),
    "HALF_DOWN": lambda v: np.sign(v) * np.ceil(np.subtract(np.abs(v), _H, dtype=np.float32)),
}


def _qonnx_quant(node, x, ty):
    """QONNX Quant of a float32 tensor, written from docs/model-format.md 11.1:
    q = clamp(mode(fl32(fl32(x / s) + z)), lo, hi), every step one float32 operation (the
    half of HALF_UP / HALF_DOWN too, as QONNX's numpy code);
    BipolarQuant: +1 where x >= 0, else -1."""
    a = node.attrs
    x = np.asarray(x, np.float32)
    if a["rounding_mode"] == "BIPOLAR":
        return np.where(x >= 0, 1, -1).astype(ty.dtype)
    s, z = np.float32(ty.quant.scale[0]), np.float32(int(ty.quant.zero_point[0]))
    v = np.add(np.divide(x, s, dtype=np.float32), z, dtype=np.float32)
    return np.clip(_QONNX_ROUND[a["rounding_mode"]](v), a["lo"], a["hi"]).astype(ty.dtype)


def _affine_chain(node, x):
    """A QONNX float tail, docs/model-format.md 11.1: A[c] x + B[c] and the chain evaluated in
    float64 from the exact integers, rounded once to float32."""
    ax = ref.threshold.channel_axis(x.ndim, node.attrs.get("data_layout", "NCHW"))
    v = np.moveaxis(x, ax, -1).astype(np.float64) * node.params["A"] + node.params["B"]
    for op in node.attrs["chain"]:
        if op[0] == "affine":
            v = v * op[1] + op[2]
        else:
            v = v if op[1] is None else np.maximum(v, op[1])
            v = v if op[2] is None else np.minimum(v, op[2])
    return np.ascontiguousarray(np.moveaxis(v, -1, ax)).astype(np.float32)
