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

from .exact import F, HALF, U, directed_boundary, gamma, rne_fraction, round_half_up
from ..graph.customops import shift_input_zero_point

F64 = np.float64
I64 = np.int64
_QRANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-2 ** 15, 2 ** 15 - 1), "uint16": (0, 2 ** 16 - 1),
           "int32": (-2 ** 31, 2 ** 31 - 1)}


@dataclass
class RefOut:
    """The float reference's output of one node.

    ``value``: int64 (quantized outputs: the stored integers) or float64.
    ``integer``: whether ``value`` holds stored integers.
    ``exact``: flat indices -> [(V, E)] (Fractions), for ops that round; None otherwise.
    ``saturated``: flat bool mask of the elements whose exact accumulator exceeds the
    layer's declared accumulator width (``acc_bits``): the float model has no width, so a
    mismatch there is the explained class "saturation" (docs/verify.md section 3).
    ``boundary(lo, hi)``: the rounding boundary between two adjacent integers (default
    ``lo + 1/2``, round to nearest); ``round_exact``: the layer's rounding of an exact
    rational (default half to even), for the ``misrounded_reference`` count.
    """
    value: np.ndarray
    integer: bool
    exact: Optional[Callable[[np.ndarray], List[Tuple[Fraction, Fraction]]]] = None
    note: str = ""
    saturated: Optional[np.ndarray] = None
    boundary: Optional[Callable[[int, int], Fraction]] = None
    round_exact: Optional[Callable[[Fraction], int]] = None


class NoFloatReference(Exception):
    """The float meaning of a node is unknown (e.g. a lookup table without its source op)."""


def _quant(v, zp, lo, hi):
    """Quantize point in float64: sat(RNE(v) + zp) clamped to [lo, hi]; v = real / scale."""
    return np.clip(np.rint(v) + zp, lo, hi).astype(I64)


def _sq(qp):
    return float(qp.scale[0]), int(qp.zero_point[0])


# ----------------------------------------------------------------- requantization modes (semantics 4)

def _q31_right(sx, sw, sy):
    """``right = max(-sh, 0)`` of the q31 multiplier of one channel (semantics 4.2)."""
    import math
    q, e = math.frexp(float(np.float64(sx) * np.float64(sw) / np.float64(sy)))
    if int(Fraction(q) * 2 ** 31 + HALF) == 2 ** 31:
        e += 1
    return max(-e, 0)


def _round_f64(v, mode, away=None):
    """The quantize point's rounding of v (float64) with the tie rule of requant ``mode``:
    fp32 half to even (4.1), pot and q31_single half up (4.4, 4.5), q31 half up where the
    channel's right shift is 0 (SRDHM alone) and half away from zero where it is >= 1
    (RoundingDivideByPOT, 4.3); ``away`` broadcasts that choice over v's channels."""
    if mode == "fp32":
        return np.rint(v)
    if mode in ("pot", "q31_single"):
        return np.floor(v + 0.5)
    if mode == "q31":
        return np.where(away, np.sign(v) * np.floor(np.abs(v) + 0.5), np.floor(v + 0.5))
    raise NoFloatReference(f"unknown requantization mode {mode!r}")


def _q31_away(mode, sx, ws, sy, shape):
    """The per-channel 'half away from zero' mask of q31 (None for the other modes), reshaped."""
    if mode != "q31":
        return None, None
    away = np.array([_q31_right(sx, float(w), sy) >= 1 for w in ws])
    return away.reshape(shape), (_rhaz_fraction if away.all() else round_half_up)


def _rhaz_fraction(v: Fraction) -> int:
    a = round_half_up(abs(v))
    return a if v >= 0 else -a


_ROUND_EXACT = {"fp32": rne_fraction, "pot": round_half_up, "q31_single": round_half_up, "q31": _rhaz_fraction}


def _requant_bound(mode, sx, sw, sy):
    """E(A) for one channel: the documented error of the engine's requantization path of
    mode ``mode`` (semantics 4.1-4.5) for an exact accumulator A, in output units."""
    R = F(sx) * F(sw) / F(sy)
    if mode == "fp32":            # S = fl32(fl32(s_x s_w) / s_y), P = fl32(fl32(A) S): 4 roundings
        return lambda A: R * abs(A) * gamma(4)
    if mode == "pot":             # S = 2^-rs (two float32 roundings from R), then exact shifts
        return lambda A: R * abs(A) * gamma(2)
    if mode in ("q31", "q31_single"):
        # M = f64(s_x s_w / s_y) (one double rounding), m = rhaz(q 2^31) with m >= 2^30:
        # |m 2^(sh-31) - R| <= R (2^-31 + 2^-53 + 2^-84) < R 2^-30; q31 rounds twice: SRDHM to an
        # integer at scale 2^right (<= 1/2 of it), then RoundingDivideByPOT
        right = _q31_right(sx, sw, sy)
        extra = Fraction(1, 2 ** (right + 1)) if mode == "q31" and right >= 1 else Fraction(0)
        return lambda A: R * abs(A) * Fraction(1, 2 ** 30) + extra
    raise NoFloatReference(f"unknown requantization mode {mode!r}")


def _im2col0(x, KH, KW, pads, strides, dil):
    """Patches [N*OH*OW, C*KH*KW] (k = (c, kh, kw)) of x [N,C,H,W] padded with 0, and (N, OH, OW)."""
    N, C, H, W = x.shape
    pt, pl, pb, pr = pads
    OH = (H + pt + pb - ((KH - 1) * dil[0] + 1)) // strides[0] + 1
    OW = (W + pl + pr - ((KW - 1) * dil[1] + 1)) // strides[1] + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    cols = np.empty((N, OH, OW, C, KH, KW), x.dtype)
    for kh in range(KH):
        for kw in range(KW):
            cols[:, :, :, :, kh, kw] = xp[:, :, kh * dil[0]:kh * dil[0] + strides[0] * (OH - 1) + 1:strides[0],
                                          kw * dil[1]:kw * dil[1] + strides[1] * (OW - 1) + 1:strides[1]
                                          ].transpose(0, 2, 3, 1)
    return cols.reshape(N * OH * OW, C * KH * KW), (N, OH, OW)


def _exact_matmul(x, w):
    """x @ w of integer arrays, exact: int64 when the sum provably fits, else Python integers."""
    bound = float(np.abs(x).max(initial=0)) * float(np.abs(w).sum(axis=0).max(initial=0))
    if bound < 2.0 ** 62:
        return x.astype(I64) @ w.astype(I64)
    return (x.astype(object) @ w.astype(object))


# QONNX rounding modes of an exact rational (model-format 11.1)
def _qonnx_round_exact(mode):
    def floor(v):
        return v.numerator // v.denominator

    def ceil(v):
        return -((-v.numerator) // v.denominator)
    return {"ROUND": rne_fraction, "FLOOR": floor, "CEIL": ceil,
            "UP": lambda v: ceil(v) if v >= 0 else floor(v),
            "DOWN": lambda v: floor(v) if v >= 0 else ceil(v),
            "HALF_UP": lambda v: floor(v + HALF) if v >= 0 else -floor(-v + HALF),
            "HALF_DOWN": lambda v: ceil(v - HALF) if v >= 0 else -ceil(-v - HALF)}[mode]


def _qonnx_round_f64(v, mode):
    a = np.abs(v)
    return {"ROUND": np.rint, "FLOOR": np.floor, "CEIL": np.ceil,
            "UP": lambda t: np.sign(t) * np.ceil(a), "DOWN": np.trunc,
            "HALF_UP": lambda t: np.sign(t) * np.floor(a + 0.5),
            "HALF_DOWN": lambda t: np.sign(t) * np.ceil(a - 0.5)}[mode](v)


def _chan_axis(ndim, layout):
    """QONNX's channel axis (semantics 13): 1 for 2-D/4-D NCHW, else the last axis."""
    return 1 if layout == "NCHW" and ndim in (2, 4) else ndim - 1


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
        if lo is not None:     # a scalar attribute or a (0-d / 1-element) input tensor
            r = np.maximum(r, np.asarray(lo, np.float32).astype(F64))
        if hi is not None:
            r = np.minimum(r, np.asarray(hi, np.float32).astype(F64))
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
        mode = n.attrs.get("mode", "fp32")        # docs/model-format.md 9.4 (metadata)
        away, rx = _q31_away(mode, sx, ws, sy, (-1, 1, 1) if conv else (-1,))
        q = _quant(_round_f64(y / F64(sy), mode, away), zy, lo, hi)
        cache = {}
        other = {} if mode == "fp32" else {ch: _requant_bound(mode, sx, float(ws[ch]), sy) for ch in set(range(OC))}

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
                if mode == "fp32":
                    E = a / Fsy * (abs(A) * gamma(4) + abs(b) * U)
                else:   # the integer modes multiply A by M ~ s_x s_w / s_y (bias at scale s_x s_w, not fl32 of it)
                    E = other[ch](A) + a / Fsy * abs(b) * U
                res.append((V, E))
            return res
        return RefOut(q, True, exact, "", None, None, rx or _ROUND_EXACT[mode])

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
        sx, zx = _sq(xq) if xq is not None else (1.0, 0)      # no qparams: the integers are the values
        a = n.attrs
        vals, mask = _taps((x.astype(I64) - zx) * F64(sx), a["kernel_shape"], a["strides"], a["pads"], a["dilations"])
        m = np.where(mask[:, None, None], vals, -np.inf).max(axis=0)
        info = np.iinfo(x.dtype)
        return RefOut(_quant(m / F64(sx), zx, int(info.min), int(info.max)), True, None, "max: no rounding")

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

    # --- pyqinfer domain and QONNX kinds (docs/verify.md section 2)
    def _shift(self, n, ins, conv):
        """ShiftMatMul / ShiftConv: the real weights S_eff[n] * sum_t s 2^e, a float64 matmul of
        the dequantized input, the quantize point with the layer's requantization mode; the
        declared ``acc_bits`` is not part of the float model (saturated elements are flagged)."""
        x = ins[0]
        _, xq = self._q(n.inputs[0])
        ty, yq = self._q(n.outputs[0])
        rule, W, mode = n.attrs["rule"], int(n.attrs["acc_bits"]), n.attrs.get("mode", "fp32")
        s, e = n.params["signs"].astype(I64), n.params["exponents"].astype(I64)
        za = shift_input_zero_point(n, xq)
        if conv:      # per group (12.4a): [T, OCg, Cg, KH, KW] -> [T, K = Cg*KH*KW, OCg], its own patches
            T, OC, Cg, KH, KW = s.shape
            g = int(n.attrs.get("group", 1))
            OCg = OC // g
            parts = []
            for gi in range(g):
                og = slice(gi * OCg, (gi + 1) * OCg)
                xg, (nb, OH, OW) = _im2col0(x[:, gi * Cg:(gi + 1) * Cg].astype(I64) - za, KH, KW,
                                            tuple(n.attrs["pads"]), tuple(n.attrs["strides"]),
                                            tuple(n.attrs["dilations"]))
                parts.append((xg, s[:, og].reshape(T, OCg, -1).transpose(0, 2, 1),
                              e[:, og].reshape(T, OCg, -1).transpose(0, 2, 1)))
        else:
            parts = [(x.reshape(-1, x.shape[-1]).astype(I64) - za, s, e)]
        N = sum(sg.shape[2] for _, sg, _ in parts)
        b = n.params.get("bias")
        b = np.zeros(N, I64) if b is None else b.astype(I64)
        # the exact integer sum of the term products (semantics 12.1-12.2, before saturation)
        accs, wints = [], []
        for xs, sg, eg in parts:
            on = sg != 0
            if rule == "exact":
                wints.append(np.where(on, sg * (np.int64(1) << np.where(on, eg, 0)), 0).sum(axis=0))   # [K, N]
                accs.append(_exact_matmul(xs, wints[-1]))
            else:     # deepshift: each product floors (the model's own fixed-point product rule)
                acc = np.zeros((xs.shape[0], sg.shape[2]), I64)
                for eps in sorted(set(eg[on].tolist())):
                    m = np.where(on & (eg == eps), sg, 0).sum(axis=0)
                    sh = (xs << eps) if eps >= 0 else (xs >> -eps)
                    acc = acc + _exact_matmul(sh, m)
                accs.append(acc)
        acc = accs[0] if len(accs) == 1 else np.concatenate(accs, axis=1)
        A = acc + b                                                   # exact, unbounded
        lo_w, hi_w = -(1 << (W - 1)), (1 << (W - 1)) - 1
        sat = ((A < lo_w) | (A > hi_w)).astype(bool)

        def shape_out(v):
            return v.reshape(nb, OH, OW, N).transpose(0, 3, 1, 2) if conv else v.reshape(*x.shape[:-1], N)
        sat_f = np.ascontiguousarray(shape_out(np.asarray(sat))).reshape(-1)
        note = f"acc_bits={W}: {int(sat_f.sum())} accumulator(s) beyond the declared width" if sat_f.any() else ""
        if yq is None:    # int32 output: the accumulator itself, exact (no rounding)
            v = shape_out(np.asarray(A, dtype=object)).astype(object)
            val = v.astype(I64) if all(abs(int(t)) < 2 ** 63 for t in v.reshape(-1)) else v
            return RefOut(np.ascontiguousarray(val), True, None, note or "exact shift sum (no width)", sat_f)
        sx = float(xq.scale[0])
        sy, zy = _sq(yq)
        Seff = np.broadcast_to(n.params["w_scale"].astype(np.float32), (N,))
        lo, hi = self._bounds(n, ty, yq)
        if rule == "exact":   # float64: dequantized input times the real weights, summed in float64
            ys, c0 = [], 0
            for (xs, _, _), wint in zip(parts, wints):
                c1 = c0 + wint.shape[1]
                ys.append((xs.astype(F64) * F64(sx)) @ (wint.astype(F64) * Seff[c0:c1].astype(F64)))
                c0 = c1
            y = ys[0] if len(ys) == 1 else np.concatenate(ys, axis=1)
            y = y + b.astype(F64) * (F64(sx) * Seff.astype(F64))
        else:
            y = np.asarray(A, F64) * (F64(sx) * Seff.astype(F64))
        away, rx = _q31_away(mode, sx, Seff, sy, (-1,))
        q = _quant(shape_out(_round_f64(y / F64(sy), mode, away)), zy, lo, hi)
        A_f = np.ascontiguousarray(shape_out(np.asarray(A, dtype=object))).reshape(-1)
        bounds = [_requant_bound(mode, sx, float(Seff[c]), sy) for c in range(N)]

        def exact(idx):
            chans = np.unravel_index(idx, q.shape)[1] if conv else np.asarray(idx) % N
            res = []
            for i, ch in zip(idx, chans):
                a = int(A_f[i])
                res.append((a * F(sx) * F(Seff[ch]) / F(sy) + zy, bounds[ch](a)))
            return res
        return RefOut(q, True, exact, note, sat_f, None, rx or _ROUND_EXACT[mode])

    def _ShiftMatMul(self, n, ins):
        return self._shift(n, ins, False)

    def _ShiftConv(self, n, ins):
        return self._shift(n, ins, True)

    def _PWLQMatMul(self, n, ins):
        """The real piecewise-linear weights (q s_c, p + q s_t, -m + q s_t), float64 matmul of the
        dequantized input, RNE at the quantize point; ``exact`` from the four exact sums."""
        x = ins[0]
        _, xq = self._q(n.inputs[0])
        ty, yq = self._q(n.outputs[0])
        p = n.params
        region, qc = p["region"], p["q"].astype(I64)
        m, pp, sc, st = (p[k].astype(np.float32) for k in ("m", "p", "s_c", "s_t"))
        N = qc.shape[1]
        sx, zx = _sq(xq)
        sy, zy = _sq(yq)
        lo, hi = self._bounds(n, ty, yq)
        b = p.get("bias")
        b = np.zeros(N, I64) if b is None else b.astype(I64)
        cen, pos, neg = region == 0, region == 1, region == 2
        wreal = np.where(cen, qc * sc.astype(F64), np.where(pos, pp.astype(F64) + qc * st.astype(F64),
                                                             -m.astype(F64) + qc * st.astype(F64)))
        xs = x.reshape(-1, x.shape[-1]).astype(I64) - zx
        y = (xs.astype(F64) * F64(sx)) @ wreal + b.astype(F64) * (F64(sx) * sc.astype(F64))
        q = _quant((y / F64(sy)).reshape(*x.shape[:-1], N), zy, lo, hi)
        accs = [(_exact_matmul(xs, np.where(cen, qc, 0)) + b).reshape(-1),
                _exact_matmul(xs, np.where(~cen, qc, 0)).reshape(-1),
                _exact_matmul(xs, pos.astype(I64)).reshape(-1), _exact_matmul(xs, neg.astype(I64)).reshape(-1)]

        def exact(idx):
            r = F(sx) / F(sy)
            res = []
            for i in idx:
                ch = int(i) % N
                ac, at, ap, an = (int(a[i]) for a in accs)
                terms = (F(sc[ch]) * ac, F(st[ch]) * at, F(pp[ch]) * ap, -F(m[ch]) * an)
                # engine (semantics 14): four products fl32(fl32(acc_i) M_i), M_i with two roundings
                # (gamma(4) each), summed in float32 in a fixed order (3 roundings): gamma(7) overall
                res.append((r * sum(terms) + zy, r * sum(abs(t) for t in terms) * gamma(7)))
            return res
        return RefOut(q, True, exact)

    def _MultiThreshold(self, n, ins):
        """count = #{t: DQ(x) >= DQ(T[c, t])} on the real (dequantized) input, then
        out_scale * count + out_bias or lut[c, count]: comparisons only, no rounding."""
        x = ins[0]
        T = n.params["thresholds"]
        sign = n.params.get("sign")
        lut = n.params.get("lut")
        _, xq = self._q(n.inputs[0])
        ax = _chan_axis(x.ndim, n.attrs.get("data_layout", "NCHW"))
        C = x.shape[ax]
        if T.shape[0] not in (1, C):
            raise ValueError(f"{T.shape[0]} threshold rows for {C} channels")
        sg = np.ones(C, I64) if sign is None else np.broadcast_to(sign.astype(I64), (C,))
        xm = np.moveaxis(x, ax, -1)                                   # [..., C]
        if xq is not None and xq.per_channel:
            raise NoFloatReference("MultiThreshold on a per-channel quantized input")
        s, z = (float(xq.scale[0]), int(xq.zero_point[0])) if xq is not None else (1.0, 0)
        Tb = np.broadcast_to(T, (C, T.shape[1]))
        # real values: lhs = sign * (x - z) * s, thresholds (T - sign z) * s. Without qparams the
        # stored values are the values (compared as they are: exact); with them the float64 products
        # are exact when every difference is an integer below 2^29 (a float32 scale has 24 bits)
        ints = x.dtype.kind in "iu" and T.dtype.kind in "iu"
        if xq is None and (x.dtype.kind == "f" or T.dtype.kind in "iu" or np.abs(xm).max(initial=0) < 2 ** 53):
            lhs = xm.astype(F64 if x.dtype.kind == "f" else I64) * sg
            thr = Tb
        elif xq is not None and ints and np.abs(xm.astype(I64) - z).max(initial=0) < 2 ** 29 and \
                np.abs(Tb.astype(I64) - (sg * z)[:, None]).max(initial=0) < 2 ** 29:
            lhs = (sg * (xm.astype(I64) - z)).astype(F64) * F64(s)
            thr = (Tb.astype(I64) - (sg * z)[:, None]).astype(F64) * F64(s)
        else:         # exact rationals
            fx = np.vectorize(lambda v: F(v) if np.isfinite(v) else float(v), otypes=[object])
            lhs = (fx(xm) - z) * sg.astype(object) * F(s)
            thr = (fx(Tb) - (sg * z)[:, None].astype(object)) * F(s)
        count = (lhs[..., None] >= thr).sum(axis=-1).astype(I64)      # [..., C]
        if lut is not None:
            L = np.broadcast_to(lut, (C, lut.shape[1]))
            y = L[np.arange(C), count]
        else:
            osc = n.attrs.get("out_scale")
            obi = n.attrs.get("out_bias")
            if n.attrs.get("out_dtype") is not None:
                y = count * int(1 if osc is None else osc) + int(0 if obi is None else obi)
            else:
                y = F64(1.0 if osc is None else osc) * count + F64(0.0 if obi is None else obi)
        y = np.ascontiguousarray(np.moveaxis(y, -1, ax))
        integer = y.dtype.kind in "iu"
        return RefOut(y.astype(I64) if integer else y.astype(F64), integer, None, "comparisons: no rounding")

    def _QonnxQuant(self, n, ins):
        """QONNX Quant of a float input: clamp(mode(x / s + z)) in float64 with the node's rounding
        mode; the engine's float32 path (model-format 11.1) rounds x/s and the + z."""
        x = ins[0]
        ty, yq = self._q(n.outputs[0])
        mode, lo, hi = n.attrs["rounding_mode"], int(n.attrs["lo"]), int(n.attrs["hi"])
        xv = x.astype(F64)
        if mode == "BIPOLAR":
            return RefOut(np.where(xv >= 0, 1, -1).astype(I64), True, None, "sign: no rounding")
        sy, zy = _sq(yq)
        v = xv / F64(sy) + zy
        q = np.clip(_qonnx_round_f64(v, mode), lo, hi).astype(I64)
        xf = xv.reshape(-1)

        half = mode in ("HALF_UP", "HALF_DOWN")   # QONNX adds the half in float32: one more rounding

        def exact(idx):
            res = []
            for i in idx:
                t = F(xf[i]) / F(sy)
                E = abs(t) * U + (abs(t) * (1 + U) + abs(zy)) * U
                if half:
                    E += (abs(t + zy) + E + HALF) * U
                res.append((t + zy, E))
            return res
        bnd = None if mode in ("ROUND", "HALF_UP", "HALF_DOWN") else directed_boundary(mode)
        return RefOut(q, True, exact, "", None, bnd, _qonnx_round_exact(mode))

    def _AffineChain(self, n, ins):
        """A QONNX float tail: A[c] x + B[c], then the chain (affine steps, clips), in float64."""
        x = ins[0]
        ax = _chan_axis(x.ndim, n.attrs.get("data_layout", "NCHW"))
        v = np.moveaxis(x, ax, -1).astype(F64) * n.params["A"].astype(F64) + n.params["B"].astype(F64)
        for op in n.attrs["chain"]:
            if op[0] == "affine":
                v = v * np.asarray(op[1], F64) + np.asarray(op[2], F64)
            else:
                v = v if op[1] is None else np.maximum(v, F64(op[1]))
                v = v if op[2] is None else np.minimum(v, F64(op[2]))
        return RefOut(np.ascontiguousarray(np.moveaxis(v, -1, ax)), False)
