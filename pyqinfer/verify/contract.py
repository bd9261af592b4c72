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
from .floatref import MOVEMENT, movement


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
                                mode="fp32", clip=_clip(node), **geo)
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
                               bias=node.params.get("bias"), mode="fp32", clip=_clip(node))
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
    raise NoContract(f"no contract for kind {k}")
