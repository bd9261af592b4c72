"""Float ops around the integer core, evaluated in numpy float32 (``FloatOp`` nodes).

Elementwise ops that are one correctly rounded IEEE float32 operation per
element (Add, Sub, Mul, Div, Sqrt, Neg, Abs, Relu, Clip, LeakyRelu, Cast,
ArgMax) give the same bits as ONNX Runtime. Transcendental and reducing ops
(Sigmoid, Tanh, Exp, Softmax, LogSoftmax, ReduceMean, GlobalAveragePool) and
float MatMul/Gemm/Conv depend on the library's approximations and summation
order: they are *not* covered by the bit-exactness contract, and ``inspect``
marks them.
"""
from __future__ import annotations

import numpy as np

from . import UnsupportedModelError

F32 = np.float32


def _softmax(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return (e / np.sum(e, axis=axis, keepdims=True)).astype(F32)


def _conv_f32(x, w, b, a):
    """Reference float convolution (NCHW, 2-D), float32 result of a float64 sum."""
    strides = a.get("strides", [1, 1])
    dil = a.get("dilations", [1, 1])
    pads = a.get("pads", [0, 0, 0, 0])
    group = a.get("group", 1)
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ValueError("float Conv: auto_pad SAME_* is not supported; give explicit pads")
    N, C, H, W = x.shape
    OC, Cg, KH, KW = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    OH = (H + pads[0] + pads[2] - dil[0] * (KH - 1) - 1) // strides[0] + 1
    OW = (W + pads[1] + pads[3] - dil[1] * (KW - 1) - 1) // strides[1] + 1
    out = np.zeros((N, OC, OH, OW), np.float64)
    ocg = OC // group
    for gi in range(group):
        xs = xp[:, gi * Cg:(gi + 1) * Cg]
        ws = w[gi * ocg:(gi + 1) * ocg].astype(np.float64)
        for kh in range(KH):
            for kw in range(KW):
                h0, w0 = kh * dil[0], kw * dil[1]
                patch = xs[:, :, h0:h0 + strides[0] * (OH - 1) + 1:strides[0], w0:w0 + strides[1] * (OW - 1) + 1:strides[1]]
                out[:, gi * ocg:(gi + 1) * ocg] += np.einsum("nchw,oc->nohw", patch, ws[:, :, kh, kw])
    if b is not None:
        out += b.astype(np.float64).reshape(1, -1, 1, 1)
    return out.astype(F32)


def _pool(node, a):
    """2-D max pool (exact: padding never wins) or average pool (float64 sums; not bit-exact)."""
    k = a["kernel_shape"]
    s = a.get("strides", [1, 1])
    p = a.get("pads", [0, 0, 0, 0])
    d = a.get("dilations", [1, 1])
    is_max = node.attrs["op"] == "MaxPool"
    if a.get("ceil_mode", 0) or a.get("auto_pad", "NOTSET") != "NOTSET" or len(k) != 2:
        raise UnsupportedModelError(f"node {node.name!r} ({node.attrs['op']}): only 2-D pooling with explicit pads "
                                    f"and ceil_mode=0 is supported")
    cip = a.get("count_include_pad", 0)

    def f(x):
        N, C, H, W = x.shape
        fill = -np.inf if is_max else 0.0
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])), constant_values=fill)
        ones = np.pad(np.ones((H, W)), ((p[0], p[2]), (p[1], p[3])))
        OH = (H + p[0] + p[2] - d[0] * (k[0] - 1) - 1) // s[0] + 1
        OW = (W + p[1] + p[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1
        acc = np.full((N, C, OH, OW), -np.inf if is_max else 0.0)
        cnt = np.zeros((OH, OW))
        for i in range(k[0]):
            for j in range(k[1]):
                h0, w0 = i * d[0], j * d[1]
                win = xp[:, :, h0:h0 + s[0] * (OH - 1) + 1:s[0], w0:w0 + s[1] * (OW - 1) + 1:s[1]]
                cnt += ones[h0:h0 + s[0] * (OH - 1) + 1:s[0], w0:w0 + s[1] * (OW - 1) + 1:s[1]]
                acc = np.maximum(acc, win) if is_max else acc + win
        if is_max:
            return acc.astype(F32)
        return (acc / (k[0] * k[1] if cip else cnt)).astype(F32)
    return f


def make_float_op(node, consts):
    """A callable(*inputs) for a FloatOp node; ``consts`` are the constant inputs (or None)."""
    op = node.attrs["op"]
    a = node.attrs.get("onnx", {})

    def binary(fn):
        return lambda x, y: fn(x, y).astype(F32)

    if op == "Add":
        return binary(np.add)
    if op == "Sub":
        return binary(np.subtract)
    if op == "Mul":
        return binary(np.multiply)
    if op == "Div":
        return binary(np.divide)
    if op == "Relu":
        return lambda x: np.maximum(x, F32(0))
    if op == "LeakyRelu":
        al = F32(a.get("alpha", 0.01))
        return lambda x: np.where(x >= 0, x, (x * al).astype(F32)).astype(F32)
    if op == "Clip":
        lo_attr, hi_attr = a.get("min"), a.get("max")

        def clip(x, lo=None, hi=None):
            lo = lo_attr if lo is None else lo
            hi = hi_attr if hi is None else hi
            r = x
            if lo is not None:
                r = np.maximum(r, F32(lo))
            if hi is not None:
                r = np.minimum(r, F32(hi))
            return r
        return clip
    if op == "Sigmoid":
        return lambda x: (1 / (1 + np.exp(-x.astype(np.float64)))).astype(F32)
    if op == "Tanh":
        return lambda x: np.tanh(x).astype(F32)
    if op == "Exp":
        return lambda x: np.exp(x).astype(F32)
    if op == "Sqrt":
        return lambda x: np.sqrt(x).astype(F32)
    if op == "Neg":
        return lambda x: np.negative(x)
    if op == "Abs":
        return lambda x: np.abs(x)
    if op in ("Softmax", "LogSoftmax"):
        axis = a.get("axis", -1)
        if op == "Softmax":
            return lambda x: _softmax(x, axis)
        return lambda x: np.log(_softmax(x, axis)).astype(F32)
    if op == "Cast":
        from ..frontends.onnx import _ELEM
        to = np.dtype(_ELEM[a["to"]])
        return lambda x: x.astype(to)
    if op == "ArgMax":
        axis, keep = a.get("axis", 0), a.get("keepdims", 1)
        if a.get("select_last_index", 0):
            raise UnsupportedModelError(f"node {node.name!r} (ArgMax): select_last_index=1 is not supported")
        return lambda x: (np.expand_dims(np.argmax(x, axis), axis) if keep else np.argmax(x, axis)).astype(np.int64)
    if op == "ReduceMean":
        axes, keep = a.get("axes"), a.get("keepdims", 1)

        def rm(x, ax=None):
            ax = axes if ax is None else [int(v) for v in ax]
            return np.mean(x, axis=None if ax is None else tuple(ax), keepdims=bool(keep)).astype(F32)
        return rm
    if op == "GlobalAveragePool":
        return lambda x: np.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True).astype(F32)
    if op in ("MaxPool", "AveragePool"):
        return _pool(node, a)
    if op == "Concat":
        axis = a["axis"]
        return lambda *xs: np.concatenate(xs, axis=axis)
    if op == "MatMul":
        return lambda x, y: np.matmul(x.astype(np.float64), y.astype(np.float64)).astype(F32)
    if op == "Gemm":
        alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
        ta, tb = a.get("transA", 0), a.get("transB", 0)

        def gemm(x, y, c=None):
            x = x.T if ta else x
            y = y.T if tb else y
            r = alpha * (x.astype(np.float64) @ y.astype(np.float64))
            if c is not None:
                r = r + beta * c.astype(np.float64)
            return r.astype(F32)
        return gemm
    if op == "Conv":
        return lambda x, w, b=None: _conv_f32(x, w, b, a)
    raise UnsupportedModelError(f"node {node.name!r} ({op}): no numpy implementation")
