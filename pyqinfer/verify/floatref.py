"""The float reference: what a quantized graph *means*, evaluated in float64 (docs/verify.md).

For each node of the IR graph, :meth:`FloatReference.evaluate` takes the node's
input values (stored integers for quantized tensors, floats otherwise),
dequantizes them exactly (``(q - zp) * scale`` is exact in float64), evaluates
the op in float64 (convolution, matmul, add, pools, concat...) and applies the
node's quantize point with the ONNX rule: divide by the output scale, round
half to even, add the zero point, saturate to the output type (and to a fused
activation's bounds). The result is the integer tensor the float model means.

For every op that rounds, the result also carries an ``exact`` function: for
flat output indices it returns ``(V, E)`` pairs of Fractions, the exact real
value in output units (zero point included) and the documented error bound of
the engine's float32 path for that element (:mod:`pyqinfer.verify.exact`).
Ops without arithmetic (data movement, max pool, integer clip, ``*Integer``
ops) have no rounding: any mismatch there is real.

This module never calls the engine (``pyqinfer.ops`` / ``_core``) nor the
contract's arithmetic (``pyqinfer.reference``); it shares only numpy and the
SAME-padding geometry (``reference.same_pads``) with them.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .exact import F, U, gamma

F64 = np.float64
I64 = np.int64
_QRANGE = {"int8": (-128, 127), "uint8": (0, 255), "int32": (-2 ** 31, 2 ** 31 - 1)}


@dataclass
class RefOut:
    """The float reference's output of one node.

    ``value``: int64 (quantized outputs: the stored integers) or float64.
    ``integer``: whether ``value`` holds stored integers.
    ``exact``: flat indices -> [(V, E)] (Fractions), for ops that round; None otherwise.
    """
    value: np.ndarray
    integer: bool
    exact: Optional[Callable[[np.ndarray], List[Tuple[Fraction, Fraction]]]] = None
    note: str = ""


class NoFloatReference(Exception):
    """The float meaning of a node is unknown (e.g. a lookup table without its source op)."""


def _quant(v, zp, lo, hi):
    """Quantize point in float64: sat(RNE(v) + zp) clamped to [lo, hi]; v = real / scale."""
    return np.clip(np.rint(v) + zp, lo, hi).astype(I64)


def _sq(qp):
    return float(qp.scale[0]), int(qp.zero_point[0])


# ----------------------------------------------------------------- geometry (NCHW)

def _conv(x, w, pads, strides, dil, group):
    """Direct 2-D convolution of x [N,C,H,W] with w [OC,C/g,KH,KW] in x's dtype (int64: exact)."""
    N, C, H, W = x.shape
    OC, Cg, KH, KW = w.shape
    pt, pl, pb, pr = pads
    (sh, sw), (dh, dw) = strides, dil
    OH = (H + pt + pb - ((KH - 1) * dh + 1)) // sh + 1
    OW = (W + pl + pr - ((KW - 1) * dw + 1)) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    out = np.zeros((N, OC, OH, OW), x.dtype)
    ocg = OC // group
    for g in range(group):
        xs = xp[:, g * Cg:(g + 1) * Cg]
        ws = w[g * ocg:(g + 1) * ocg]
        for kh in range(KH):
            for kw in range(KW):
                patch = xs[:, :, kh * dh:kh * dh + sh * (OH - 1) + 1:sh, kw * dw:kw * dw + sw * (OW - 1) + 1:sw]
                out[:, g * ocg:(g + 1) * ocg] += np.einsum("nchw,oc->nohw", patch, ws[:, :, kh, kw])
    return out


def _conv_pads(attrs, hw, khw):
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", None):
        return tuple(attrs["pads"])
    from ..reference.conv import same_pads   # geometry only (no arithmetic)
    return tuple(same_pads(auto, hw, khw, attrs["strides"], attrs["dilations"]))


def _taps(x, k, s, p, d=(1, 1)):
    """Pooling windows of x [N,C,H,W]: values [T,N,C,OH,OW] (padding = 0) and in-bounds mask [T,OH,OW]."""
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (dh, dw) = k, s, d
    pt, pl, pb, pr = p
    OH = (H + pt + pb - ((kh - 1) * dh + 1)) // sh + 1
    OW = (W + pl + pr - ((kw - 1) * dw + 1)) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    mp = np.pad(np.ones((H, W), bool), ((pt, pb), (pl, pr)))
    vals, masks = [], []
    for i in range(kh):
        for j in range(kw):
            sl = (slice(i * dh, i * dh + sh * (OH - 1) + 1, sh), slice(j * dw, j * dw + sw * (OW - 1) + 1, sw))
            vals.append(xp[(slice(None), slice(None)) + sl])
            masks.append(mp[sl])
    return np.stack(vals), np.stack(masks)


# ----------------------------------------------------------------- data movement (any dtype)

def movement(node, x):
    """The data-movement kinds of the IR (ONNX semantics), written from the ONNX spec."""
    a, k = node.attrs, node.kind
    if k == "Identity":
        return x
    if k == "Reshape":
        shape = [int(v) for v in a["shape"]]
        if not a.get("allowzero", 0):
            shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
        return x.reshape(shape)
    if k == "Flatten":
        ax = a["axis"] % x.ndim if a["axis"] < 0 else a["axis"]
        return x.reshape(int(np.prod(x.shape[:ax], dtype=I64)), -1)
    if k == "Transpose":
        return np.transpose(x, a.get("perm"))
    if k == "Squeeze":
        ax = a.get("axes")
        return np.squeeze(x, None if ax is None else tuple(int(v) % x.ndim for v in ax))
    if k == "Unsqueeze":
        r = x.ndim + len(a["axes"])
        for ax in sorted(int(v) % r for v in a["axes"]):
            x = np.expand_dims(x, ax)
        return x
    if k == "Pad":
        pads, r = a["pads"], x.ndim
        pw = [(pads[i], pads[i + r]) for i in range(r)]
        if a["mode"] == "constant":
            return np.pad(x, pw, mode="constant", constant_values=a["value"])
        return np.pad(x, pw, mode=a["mode"])
    if k == "DepthToSpace":
        b = a["blocksize"]
        N, C, H, W = x.shape
        if a.get("mode", "DCR") == "DCR":
            t = x.reshape(N, b, b, C // (b * b), H, W).transpose(0, 3, 4, 1, 5, 2)
        else:
            t = x.reshape(N, C // (b * b), b, b, H, W).transpose(0, 1, 4, 2, 5, 3)
        return t.reshape(N, C // (b * b), H * b, W * b)
    if k == "SpaceToDepth":
        b = a["blocksize"]
        N, C, H, W = x.shape
        t = x.reshape(N, C, H // b, b, W // b, b).transpose(0, 3, 5, 1, 2, 4)
        return t.reshape(N, C * b * b, H // b, W // b)
    if k == "ResizeNearest":
        if a.get("sizes"):
            out = [int(v) for v in a["sizes"]]
            scales = [o / i for o, i in zip(out, x.shape)]
        else:
            scales = [float(v) for v in a["scales"]]
            out = [int(np.floor(i * s)) for i, s in zip(x.shape, scales)]
        idx = []
        for n_in, n_out, sc in zip(x.shape, out, scales):
            o = np.arange(n_out, dtype=F64)
            ctm = a["coordinate_transformation_mode"]
            if ctm == "half_pixel" or (ctm == "pytorch_half_pixel" and n_out > 1):
                xo = (o + 0.5) / sc - 0.5
            elif ctm in ("pytorch_half_pixel", "align_corners") and n_out <= 1:
                xo = np.zeros_like(o)
            elif ctm == "align_corners":
                xo = o * (n_in - 1) / (n_out - 1)
            else:
                xo = o / sc
            nm = a["nearest_mode"]
            r = {"floor": np.floor(xo), "ceil": np.ceil(xo), "round_prefer_ceil": np.floor(xo + 0.5),
                 "round_prefer_floor": np.ceil(xo - 0.5)}[nm]
            idx.append(np.clip(r.astype(I64), 0, n_in - 1))
        return x[np.ix_(*idx)]
    raise KeyError(k)


MOVEMENT = ("Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Pad", "DepthToSpace",
            "SpaceToDepth", "ResizeNearest")


# ----------------------------------------------------------------- float ops in float64

def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def float_op(node, ins):
    """A FloatOp node evaluated in float64 (constants as stored)."""
    op, a = node.attrs["op"], node.attrs.get("onnx", {})
    x = [None if v is None else (v.astype(F64) if v.dtype.kind == "f" else v) for v in ins]
    if op in ("Add", "Sub", "Mul", "Div"):
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](x[0], x[1])
    unary = {"Relu": lambda v: np.maximum(v, 0.0), "Sigmoid": lambda v: 1 / (1 + np.exp(-v)), "Tanh": np.tanh,
             "Exp": np.exp, "Sqrt": np.sqrt, "Neg": np.negative, "Abs": np.abs}
    if op in unary:
        return unary[op](x[0])
    if op == "LeakyRelu":
        al = float(np.float32(a.get("alpha", 0.01)))
        return np.where(x[0] >= 0, x[0], x[0] * al)
    if op == "Clip":
        lo = a.get("min", x[1] if len(x) > 1 else None)
        hi = a.get("max", x[2] if len(x) > 2 else None)
        r = x[0]
        if lo is not None:
            r = np.maximum(r, float(np.float32(lo)))
        if hi is not None:
            r = np.minimum(r, float(np.float32(hi)))
        return r
    if op in ("Softmax", "LogSoftmax"):
        s = _softmax(x[0], a.get("axis", -1))
        return s if op == "Softmax" else np.log(s)
    if op == "MatMul":
        return np.matmul(x[0], x[1])
    if op == "Gemm":
        A = x[0].T if a.get("transA", 0) else x[0]
        B = x[1].T if a.get("transB", 0) else x[1]
        r = a.get("alpha", 1.0) * (A @ B)
        if len(x) > 2 and x[2] is not None:
            r = r + a.get("beta", 1.0) * x[2]
        return r
    if op == "Conv":
        w = x[1]
        hw, khw = x[0].shape[2:], w.shape[2:]
        attrs = {"pads": a.get("pads", [0, 0, 0, 0]), "strides": a.get("strides", [1, 1]),
                 "dilations": a.get("dilations", [1, 1]), "auto_pad": a.get("auto_pad", "NOTSET")}
        r = _conv(x[0], w, _conv_pads(attrs, hw, khw), attrs["strides"], attrs["dilations"], a.get("group", 1))
        if len(x) > 2 and x[2] is not None:
            r = r + x[2].reshape(1, -1, 1, 1)
        return r
    if op == "GlobalAveragePool":
        return x[0].mean(axis=tuple(range(2, x[0].ndim)), keepdims=True)
    if op == "ReduceMean":
        axes = a.get("axes", None if len(x) < 2 or x[1] is None else [int(v) for v in x[1]])
        return x[0].mean(axis=None if axes is None else tuple(axes), keepdims=bool(a.get("keepdims", 1)))
    if op == "Cast":
        from ..frontends.onnx import _ELEM
        to = np.dtype(_ELEM[a["to"]])
        return x[0].astype(F64) if to.kind == "f" else x[0].astype(to)
    if op == "ArgMax":
        ax, keep = a.get("axis", 0), a.get("keepdims", 1)
        r = np.argmax(x[0], ax)
        return np.expand_dims(r, ax) if keep else r
    raise NoFloatReference(f"no float64 definition of {op}")


# ----------------------------------------------------------------- the evaluator

class FloatReference:
    """Float64 evaluation of the nodes of an IR graph.

    ``onnx_model`` (optional ModelProto) lets the evaluator recover the float
    function behind a ``Lookup`` node (Relu / Clip / LeakyRelu tables); without
    it those nodes have no float reference.
    """

    def __init__(self, graph, onnx_model=None, add_rule=None):
        self.g = graph
        self.add_rule = add_rule
        self.lut_fns: Dict[str, tuple] = {}
        if onnx_model is not None:
            self._scan_onnx(onnx_model)

    # the float functions behind lookup tables, by ONNX node name
    def _scan_onnx(self, proto):
        from onnx import helper, numpy_helper
        consts = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        for n in proto.graph.node:
            if n.op_type == "Constant":
                for at in n.attribute:
                    if at.name == "value":
                        consts[n.output[0]] = numpy_helper.to_array(at.t)
                    elif at.name in ("value_float", "value_floats"):
                        consts[n.output[0]] = np.asarray(helper.get_attribute_value(at), np.float32)
        q_of = {n.input[0]: n.output[0] for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input}
        for n in proto.graph.node:
            # the IR names a node after the ONNX node, or after its output when it has no name
            # (a QDQ table after the output of the QuantizeLinear that closes it)
            keys = [n.name] if n.name else [o for o in (n.output[0], q_of.get(n.output[0])) if o]
            a = {at.name: helper.get_attribute_value(at) for at in n.attribute}
            if n.op_type == "Relu":
                spec = ("relu", None, None)
            elif n.op_type in ("LeakyRelu", "QLinearLeakyRelu"):
                spec = ("leaky", np.float32(a.get("alpha", 0.01)), None)
            elif n.op_type == "Clip":
                if "min" in a or "max" in a:
                    lo, hi = a.get("min"), a.get("max")
                else:
                    ins = list(n.input) + ["", ""]
                    if (ins[1] and ins[1] not in consts) or (ins[2] and ins[2] not in consts):
                        continue
                    lo = consts[ins[1]] if ins[1] else None
                    hi = consts[ins[2]] if ins[2] else None
                spec = ("clip", None if lo is None else np.float32(lo), None if hi is None else np.float32(hi))
            else:
                continue
            for k in keys:
                self.lut_fns.setdefault(k, spec)

    def _q(self, name):
        t = self.g.tensors[name]
        return t, t.quant

    def _bounds(self, node, ty, yq):
        lo, hi = _QRANGE[ty.dtype.name]
        clip = node.attrs.get("clip")
        if isinstance(clip, tuple) or isinstance(clip, list):
            lo, hi = max(lo, int(clip[0])), min(hi, int(clip[1]))
        elif clip is not None:
            raise NoFloatReference(f"fused activation {clip!r} given by name")
        return lo, hi

    def evaluate(self, node, ins) -> RefOut:
        if node.kind in MOVEMENT:
            v = movement(node, ins[0])
            return RefOut(v.astype(I64) if v.dtype.kind in "iu" else v.astype(F64), v.dtype.kind in "iu")
        fn = getattr(self, f"_{node.kind}", None)
        if fn is None:
            raise NoFloatReference(f"no float reference for kind {node.kind}")
        return fn(node, ins)

    # --- linear ops: conv and matmul (fp32 requantization of an exact accumulator)
    def _linear(self, n, ins, conv):
        x = ins[0]
        tx, xq = self._q(n.inputs[0])
        ty, yq = self._q(n.outputs[0])
        w = n.params["w"]
        OC = w.shape[0] if conv else w.shape[1]
        ws = np.broadcast_to(n.params["w_scale"].astype(np.float32), (OC,))
        wz = np.broadcast_to(n.params["w_zero_point"].astype(I64), (OC,))
        sx, zx = _sq(xq)
        sy, zy = _sq(yq)
        bias = n.params.get("bias")
        c = (np.float32(sx) * ws).astype(np.float32)          # the bias scale fl32(s_x * s_w)
        lo, hi = self._bounds(n, ty, yq)
        xi = x.astype(I64) - zx
        if conv:
            shp = (-1, 1, 1, 1)
            pads = _conv_pads(n.attrs, x.shape[2:], w.shape[2:])
            geo = (pads, tuple(n.attrs["strides"]), tuple(n.attrs["dilations"]), n.attrs["group"])
            wi = w.astype(I64) - wz.reshape(shp)
            y = _conv(xi * F64(sx), wi * ws.astype(F64).reshape(shp), *geo)
            bshape = (1, OC, 1, 1)
        else:
            wi = w.astype(I64) - wz.reshape(1, -1)
            y = np.matmul(xi * F64(sx), wi * ws.astype(F64).reshape(1, -1))
            bshape = (OC,)
        if bias is not None:
            y = y + (bias.astype(F64) * c.astype(F64)).reshape(bshape)
        q = _quant(y / F64(sy), zy, lo, hi)
        cache = {}

        def exact(idx):
            if "acc" not in cache:
                cache["acc"] = (_conv(xi, wi, *geo) if conv else np.matmul(xi, wi)).reshape(-1)
            acc = cache["acc"]
            chans = np.unravel_index(idx, q.shape)[1] if conv else np.asarray(idx) % OC
            Fsx, Fsy = F(sx), F(sy)
            res = []
            for i, ch in zip(idx, chans):
                a = Fsx * F(ws[ch])
                s = int(acc[i])
                b = int(bias[ch]) if bias is not None else 0
                A = s + b
                V = (s * a + b * F(c[ch])) / Fsy + zy
                E = a / Fsy * (abs(A) * gamma(4) + abs(b) * U)
                res.append((V, E))
            return res
        return RefOut(q, True, exact)

    def _QLinearConv(self, n, ins):
        return self._linear(n, ins, True)

    def _QLinearMatMul(self, n, ins):
        return self._linear(n, ins, False)

    def _ConvInteger(self, n, ins):
        x = ins[0].astype(I64) - int(self._q(n.inputs[0])[1].zero_point[0])
        w = n.params["w"]
        wz = np.broadcast_to(n.params["w_zero_point"].astype(I64), (w.shape[0],))
        pads = _conv_pads(n.attrs, x.shape[2:], w.shape[2:])
        acc = _conv(x, w.astype(I64) - wz.reshape(-1, 1, 1, 1), pads, tuple(n.attrs["strides"]),
                    tuple(n.attrs["dilations"]), n.attrs["group"])
        return RefOut(acc, True, None, "exact integer sum (no wrap)")

    def _MatMulInteger(self, n, ins):
        x = ins[0].astype(I64) - int(self._q(n.inputs[0])[1].zero_point[0])
        w = n.params["w"]
        wz = np.broadcast_to(n.params["w_zero_point"].astype(I64), (w.shape[1],))
        return RefOut(np.matmul(x, w.astype(I64) - wz.reshape(1, -1)), True, None, "exact integer sum (no wrap)")

    # --- add
    def _QLinearAdd(self, n, ins):
        a, b = ins
        (_, aq), (_, bq) = self._q(n.inputs[0]), self._q(n.inputs[1])
        ty, cq = self._q(n.outputs[0])
        (sa, za), (sb, zb), (sc, zc) = _sq(aq), _sq(bq), _sq(cq)
        lo, hi = self._bounds(n, ty, cq)
        real = (a.astype(I64) - za) * F64(sa) + (b.astype(I64) - zb) * F64(sb)
        q = _quant(real / F64(sc), zc, lo, hi)
        rule = self.add_rule or n.attrs.get("rule", "onnxruntime")
        ab = np.broadcast_to(a, q.shape).reshape(-1)
        bb = np.broadcast_to(b, q.shape).reshape(-1)

        def exact(idx):
            ra, rb = F(sa) / F(sc), F(sb) / F(sc)
            res = []
            for i in idx:
                ai, bi = int(ab[i]), int(bb[i])
                V = (ai - za) * ra + (bi - zb) * rb + zc
                if rule == "onnx":
                    E = (ra * abs(ai - za) + rb * abs(bi - zb)) * gamma(4)
                else:
                    M = ra * (abs(ai) + abs(za)) + rb * (abs(bi) + abs(zb)) + abs(zc)
                    E = M * (gamma(7) if rule == "onnxruntime" else Fraction(1, 2 ** 19))
                res.append((V, E))
            return res
        return RefOut(q, True, exact)

    # --- pools
    def _MaxPool(self, n, ins):
        x = ins[0]
        _, xq = self._q(n.inputs[0])
        sx, zx = _sq(xq)
        a = n.attrs
        vals, mask = _taps((x.astype(I64) - zx) * F64(sx), a["kernel_shape"], a["strides"], a["pads"], a["dilations"])
        m = np.where(mask[:, None, None], vals, -np.inf).max(axis=0)
        return RefOut(_quant(m / F64(sx), zx, *_QRANGE[x.dtype.name]), True, None, "max: no rounding")

    def _avg(self, n, x, k, s, p, cip):
        _, xq = self._q(n.inputs[0])
        ty, yq = self._q(n.outputs[0])
        sx, zx = _sq(xq)
        sy, zy = _sq(yq)
        xi = x.astype(I64) - zx
        vals, mask = _taps(xi, k, s, p)
        m = mask[:, None, None]
        taps = np.broadcast_to(mask.sum(axis=0), vals.shape[1:])
        count = np.full(vals.shape[1:], k[0] * k[1]) if cip else taps
        tot = np.where(m, vals, 0).sum(axis=0)
        q = _quant(tot * F64(sx) / count / F64(sy), zy, *_QRANGE[ty.dtype.name])
        absum = np.where(m, np.abs(vals), 0).sum(axis=0)
        glob = tuple(k) == tuple(x.shape[2:]) and not any(p)
        tot_f, abs_f, cnt_f, taps_f = tot.reshape(-1), absum.reshape(-1), count.reshape(-1), taps.reshape(-1)

        def exact(idx):
            r = F(sx) / F(sy)
            res = []
            for i in idx:
                V = int(tot_f[i]) * r / int(cnt_f[i]) + zy
                if glob:   # ORT's integer global pool: fl32(acc) * fl32(s_x / fl32(s_y * count))
                    E = abs(V - zy) * gamma(4)
                else:      # ORT's float32 average pool: per-tap product, running sum, two divisions, + zp
                    T = int(abs_f[i]) * r / int(cnt_f[i])
                    g = gamma(int(taps_f[i]) + 2)
                    E = T * g + (abs(V) + T * g) * U
                res.append((V, E))
            return res
        return RefOut(q, True, exact)

    def _QLinearAveragePool(self, n, ins):
        a = n.attrs
        return self._avg(n, ins[0], a["kernel_shape"], a["strides"], a["pads"], a.get("count_include_pad", 0))

    def _QLinearGlobalAveragePool(self, n, ins):
        x = ins[0]
        return self._avg(n, x, x.shape[2:], (1, 1), (0, 0, 0, 0), 0)

    # --- per-element requantization
    def _rescale_parts(self, xs_names, ins, yq, ydt, axis):
        sy, zy = _sq(yq)
        lo, hi = _QRANGE[ydt.name]
        qs, parts = [], []
        for name, x in zip(xs_names, ins):
            _, xq = self._q(name)
            sx, zx = _sq(xq)
            qs.append(_quant((x.astype(I64) - zx) * F64(sx) / F64(sy), zy, lo, hi))
            parts.append((x.astype(I64), sx, zx, xq.same(yq)))
        q = np.concatenate(qs, axis=axis)
        src = np.concatenate([np.broadcast_to(np.int64(k), p.shape) for k, p in enumerate(qs)], axis=axis).reshape(-1)
        val = np.concatenate([p[0] for p in parts], axis=axis).reshape(-1)

        def exact(idx):
            res = []
            for i in idx:
                _, sx, zx, same = parts[int(src[i])]
                d = int(val[i]) - zx
                V = d * F(sx) / F(sy) + zy
                E = Fraction(0) if same else abs(d) * F(sx) / F(sy) * gamma(2)
                res.append((V, E))
            return res
        return RefOut(q, True, exact)

    def _QLinearConcat(self, n, ins):
        ty, yq = self._q(n.outputs[0])
        axis = int(n.attrs["axis"])
        axis = axis % ins[0].ndim
        return self._rescale_parts(n.inputs, ins, yq, ty.dtype, axis)

    def _Rescale(self, n, ins):
        ty, yq = self._q(n.outputs[0])
        return self._rescale_parts(n.inputs[:1], ins[:1], yq, ty.dtype, 0)

    def _Lookup(self, n, ins):
        spec = self.lut_fns.get(n.name)
        if spec is None:
            raise NoFloatReference(f"the float function of lookup table {n.name!r} "
                                   f"({n.attrs.get('source', '?')}) is not known (no ONNX node of that name)")
        kind, p1, p2 = spec
        x = ins[0]
        _, xq = self._q(n.inputs[0])
        ty, yq = self._q(n.outputs[0])
        sx, zx = _sq(xq)
        sy, zy = _sq(yq)
        v = (x.astype(I64) - zx) * F64(sx)
        if kind == "relu":
            f = np.maximum(v, 0.0)
        elif kind == "leaky":
            f = np.where(v >= 0, v, v * float(p1))
        else:
            f = v
            if p1 is not None:
                f = np.maximum(f, float(p1))
            if p2 is not None:
                f = np.minimum(f, float(p2))
        q = _quant(f / F64(sy), zy, *self._bounds(n, ty, yq))
        xf = x.astype(I64).reshape(-1)
        L = max(Fraction(1), abs(F(p1))) if kind == "leaky" else Fraction(1)

        def fexact(t):
            if kind == "relu":
                return max(t, Fraction(0))
            if kind == "leaky":
                return t if t >= 0 else t * F(p1)
            if p1 is not None:
                t = max(t, F(p1))
            if p2 is not None:
                t = min(t, F(p2))
            return t

        def exact(idx):
            res = []
            for i in idx:
                t = (int(xf[i]) - zx) * F(sx)
                ft = fexact(t)
                res.append((ft / F(sy) + zy, (L * abs(t) + abs(ft)) / F(sy) * gamma(3)))
            return res
        return RefOut(q, True, exact)

    def _Clip(self, n, ins):
        x = ins[0]
        return RefOut(np.clip(x.astype(I64), int(n.attrs["lo"]), int(n.attrs["hi"])), True, None, "clip: no rounding")

    def _Requantize(self, n, ins):
        x = ins[0]
        _, xq = self._q(n.inputs[0])
        ty, yq = self._q(n.outputs[0])
        sy, zy = _sq(yq)
        sxs = np.broadcast_to(xq.scale.astype(np.float32), (x.shape[-1],)) if xq.per_channel else \
            np.full(x.shape[-1], xq.scale[0], np.float32)
        q = _quant(x.astype(F64) * sxs.astype(F64) / F64(sy), zy, *self._bounds(n, ty, yq))
        xf = x.astype(I64).reshape(-1)

        def exact(idx):
            return [(int(xf[i]) * F(sxs[i % x.shape[-1]]) / F(sy) + zy,
                     abs(int(xf[i])) * F(sxs[i % x.shape[-1]]) / F(sy) * gamma(3)) for i in idx]
        return RefOut(q, True, exact)

    def _QuantizeLinear(self, n, ins):
        x = ins[0]
        ty, yq = self._q(n.outputs[0])
        lo, hi = _QRANGE[ty.dtype.name]
        if yq.per_channel:
            shp = [1] * x.ndim
            shp[yq.axis] = -1
            s = yq.scale.astype(F64).reshape(shp)
            z = yq.zero_point.reshape(shp)
        else:
            s, z = F64(yq.scale[0]), int(yq.zero_point[0])
        q = np.clip(np.rint(x.astype(F64) / s) + z, lo, hi).astype(I64)
        xf = x.reshape(-1)
        sb = np.broadcast_to(s, x.shape).reshape(-1)
        zb = np.broadcast_to(z, x.shape).reshape(-1)

        def exact(idx):
            res = []
            for i in idx:
                t = F(xf[i]) / F(sb[i])
                res.append((t + int(zb[i]), abs(t) * U))
            return res
        return RefOut(q, True, exact)

    def _DequantizeLinear(self, n, ins):
        x = ins[0]
        _, xq = self._q(n.inputs[0])
        if xq.per_channel:
            shp = [1] * x.ndim
            shp[xq.axis] = -1
            return RefOut((x.astype(I64) - xq.zero_point.reshape(shp)) * xq.scale.astype(F64).reshape(shp), False)
        return RefOut((x.astype(I64) - int(xq.zero_point[0])) * F64(xq.scale[0]), False)

    def _FloatOp(self, n, ins):
        v = np.asarray(float_op(n, ins))
        return RefOut(v.astype(F64) if v.dtype.kind == "f" else v.astype(I64), v.dtype.kind != "f")
