"""Planning: turn a :class:`~pyqinfer.graph.ir.Graph` into a list of prepared steps.

Done once at load:

* **Rewrites.** A ``Clip`` whose input comes only from a ``QLinearConv`` /
  ``QLinearMatMul`` with the same qparams is fused into that node's clamp
  (``clamp(clamp(v))`` is one clamp with the intersected bounds: exact).
  ``Rescale`` becomes a 256-entry table (``Lookup``).
* **Weights** are packed once (``pack_conv_weights`` / ``pack_weights``) and the
  requantization parameters derived once (``_core.derive_requant``, the fp32
  mode of docs/semantics.md 4.1).
* **Layouts.** Convolutions and pools compute in NHWC. A tensor produced by one
  of them stays NHWC while its consumers are layout-agnostic (conv, pools, add,
  concat, clip, lookup); it is transposed to the ONNX layout (NCHW) only for a
  consumer that needs it (reshape, flatten, matmul, float ops, graph outputs).
* **Fast calls.** Each step calls the ``pyqinfer._core`` binding directly with
  pre-validated, pre-packed arguments. The first call of a step with a new input
  shape goes through the public, validating op instead (so a bad shape gets
  the op's error message); later calls with that shape take the fast path.
  Both compute the same bits (the public ops call the same bindings).
* **Buffers.** Each intermediate is dropped right after its last consumer, so
  the allocator reuses its memory for later tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .. import _core
from .. import ops
from ..ops._checks import check_alloc
from ..ops.conv import _auto_pads
from . import UnsupportedModelError
from . import customops
from .ir import Graph, Node

NHWC, NCHW = "NHWC", "NCHW"
_TO_NHWC = (0, 2, 3, 1)
_TO_NCHW = (0, 3, 1, 2)


def _zp(qp, dt):
    return np.dtype(dt).type(int(qp.zero_point[0]))


def _err(node, msg):
    return ValueError(f"node {node.name!r} ({node.kind}): {msg}")


def _check_alloc(node, shape, itemsize):
    """The output of a numpy data-movement step stays within the tensor limits (ops._checks)."""
    try:
        check_alloc("output", shape, itemsize)
    except ValueError as e:
        raise _err(node, str(e)) from None


@dataclass
class Step:
    """One prepared node. ``run(vals)`` reads ``vals[ins]`` and writes ``vals[outs]``."""
    node: Node
    ins: List[int]
    outs: List[int]
    in_layouts: List[str]
    out_layout: str = NCHW
    kernel: str = "numpy"          # what computes it (for inspect)
    numpy_float: bool = False      # a float op evaluated in numpy
    exact: bool = True
    info: dict = field(default_factory=dict)
    fast: object = None            # callable(*arrays) -> array, pre-validated fast path
    slow: object = None            # callable(*arrays) -> array, validating path
    seen: set = field(default_factory=set)   # input shapes the slow path has validated
    free_after: List[int] = field(default_factory=list)


def _layout_of(arr, have, want):
    if have == want or arr.ndim != 4:
        return arr
    return np.ascontiguousarray(arr.transpose(_TO_NHWC if want == NHWC else _TO_NCHW))


# Kinds that accept NHWC (when the tensor is 4-D) and keep it.
_ELTWISE = ("Clip", "Lookup", "Identity")
_NHWC_NATIVE = ("QLinearConv", "ConvInteger", "MaxPool", "QLinearAveragePool", "QLinearGlobalAveragePool")


class Plan:
    def __init__(self, graph: Graph, *, add_rule: Optional[str] = None, layout: str = "auto"):
        if layout not in ("auto", "NCHW"):
            raise ValueError(f"layout must be 'auto' or 'NCHW', got {layout!r}")
        self.g = graph
        self.add_rule = add_rule
        self.layout = layout
        self._fuse_clips()
        self.slot: Dict[str, int] = {}
        for name in list(graph.inputs) + list(graph.constants):
            self.slot.setdefault(name, len(self.slot))
        for n in graph.nodes:
            for o in n.outputs:
                self.slot.setdefault(o, len(self.slot))
        self.n_slots = len(self.slot)
        self.layouts: Dict[str, str] = {name: NCHW for name in self.slot}
        self.steps: List[Step] = [self._step(n) for n in graph.nodes]
        self.const_vals = [(self.slot[k], v) for k, v in graph.constants.items()]
        self.input_slots = [self.slot[i] for i in graph.inputs]
        self.output_slots = [(o, self.slot[o], self.layouts[o]) for o in graph.outputs]
        self._plan_frees()

    # -------------------------------------------------------------- rewrites
    def _fuse_clips(self):
        g = self.g
        cons = g.consumers()
        prod = g.producers()
        drop = []
        rename = {}
        for n in g.nodes:
            if n.kind != "Clip":
                continue
            x = n.inputs[0]
            p = prod.get(x)
            if p is None or p.kind not in ("QLinearConv", "QLinearMatMul") or len(cons.get(x, [])) != 1 \
                    or x in g.outputs:
                continue
            tx, ty = g.tensors[x], g.tensors[n.outputs[0]]
            if tx.quant is None or ty.quant is None or not tx.quant.same(ty.quant) or tx.dtype != ty.dtype:
                continue
            lo, hi = n.attrs["lo"], n.attrs["hi"]
            if p.attrs.get("clip") is not None:
                lo, hi = max(lo, p.attrs["clip"][0]), min(hi, p.attrs["clip"][1])
                if lo > hi:
                    continue
            p.attrs["clip"] = (lo, hi)
            p.attrs["fused"] = (p.attrs.get("fused") or []) + [f"{n.attrs.get('source', 'Clip')} {n.name}"]
            p.outputs = [n.outputs[0]]
            drop.append(n)
            rename[x] = n.outputs[0]
        if drop:
            g.nodes = [n for n in g.nodes if all(n is not d for d in drop)]
            for x in rename:
                g.tensors.pop(x, None)

    def _plan_frees(self):
        last = {}
        for k, st in enumerate(self.steps):
            for i in st.ins:
                last[i] = k
        keep = {s for _, s, _ in self.output_slots} | set(self.input_slots) | {s for s, _ in self.const_vals}
        for i, k in last.items():
            if i not in keep:
                self.steps[k].free_after.append(i)

    # ----------------------------------------------------------------- steps
    def _step(self, n: Node) -> Step:
        ins = [self.slot[i] for i in n.inputs if i]
        outs = [self.slot[o] for o in n.outputs]
        st = Step(n, ins, outs, [NCHW] * len(ins))
        build = getattr(self, f"_build_{n.kind}", None)
        if build is None:
            raise UnsupportedModelError(f"node {n.name!r}: kind {n.kind} has no runner")
        build(n, st)
        for o in n.outputs:
            self.layouts[o] = st.out_layout
        return st

    def _want(self, st, k, layout):
        """Input k is consumed in ``layout``; the step converts what arrives otherwise."""
        st.in_layouts[k] = layout

    def _have(self, n, k):
        return self.layouts.get(n.inputs[k], NCHW)

    def _native(self, st):
        if self.layout == "auto":
            st.out_layout = NHWC
            st.in_layouts = [NHWC] * len(st.ins)
        else:
            st.out_layout = NCHW
            st.in_layouts = [NCHW] * len(st.ins)
        return st.out_layout == NHWC

    def _q(self, name):
        t = self.g.tensors[name]
        return t, t.quant

    # --- convolution
    def _conv_common(self, n, st, int32_out):
        t_x, xq = self._q(n.inputs[0])
        t_y, yq = self._q(n.outputs[0])
        w = n.params["w"]
        bits = int(n.params.get("w_bits", 8)) if n.params.get("w_bits") is not None else 8
        group = n.attrs["group"]
        wz = n.params["w_zero_point"]
        wzp = w.dtype.type(wz[0]) if wz.size == 1 else wz.astype(w.dtype)
        try:
            pw = ops.pack_conv_weights(w, wzp, group, bits=None if bits == 8 else bits)
        except (TypeError, ValueError) as e:
            raise _err(n, f"weights cannot be packed: {e}") from None
        OC, Cg, KH, KW = w.shape
        za = int(xq.zero_point[0]) if xq is not None else 0
        if t_x.dtype not in (np.uint8, np.int8):
            raise _err(n, f"input must be uint8/int8, got {t_x.dtype}")
        strides, dil = tuple(n.attrs["strides"]), tuple(n.attrs["dilations"])
        auto_pad = n.attrs.get("auto_pad", "NOTSET")
        pads0 = tuple(n.attrs["pads"])
        nhwc = self._native(st)
        bias = n.params.get("bias")
        if int32_out:
            rq, ydt, zy, lo, hi = None, "int32", 0, 0, 0
        else:
            ydt = t_y.dtype.name
            zy = int(yq.zero_point[0])
            clip = n.attrs.get("clip")
            lo, hi = ops.activation_bounds(clip, float(yq.scale[0]), zy, t_y.dtype)
            try:
                rq = _core.derive_requant(n.attrs.get("mode") or "fp32", float(xq.scale[0]), n.params["w_scale"],
                                          float(yq.scale[0]), OC)
            except ValueError as e:
                raise _err(n, f"requantization scale: {e}") from None
        core_w = pw._core
        geo_cache = {}
        xdt = t_x.dtype

        def pads_for(x):
            if auto_pad == "NOTSET":
                return pads0
            hw = x.shape[1:3]
            p = geo_cache.get(hw)
            if p is None:
                p = geo_cache[hw] = _auto_pads(auto_pad, hw, (KH, KW), strides, dil)
            return p

        if auto_pad == "NOTSET":
            def fast(x):
                return _core.qconv(x, za, core_w, strides, pads0, dil, bias, ydt, rq, zy, lo, hi)
        else:
            def fast(x):
                return _core.qconv(x, za, core_w, strides, pads_for(x), dil, bias, ydt, rq, zy, lo, hi)

        def slow(x):
            if x.dtype != xdt:
                raise TypeError(f"node {n.name!r}: input has dtype {x.dtype}, expected {xdt}")
            kw = dict(auto_pad=auto_pad, dilations=dil, group=group, pads=None if auto_pad != "NOTSET" else pads0,
                      strides=strides, layout="NHWC")
            try:
                if int32_out:
                    return ops.conv_integer(x, pw, xdt.type(za), **kw)
                return ops.qlinear_conv(x, float(xq.scale[0]), xdt.type(za), pw, n.params["w_scale"], None,
                                        float(yq.scale[0]), t_y.dtype.type(zy), bias, mode=n.attrs.get("mode") or "fp32",
                                        clip=(lo, hi), **kw)
            except (TypeError, ValueError) as e:
                raise _err(n, str(e)) from None

        st.fast, st.slow = fast, slow
        if len(n.inputs) > 1:   # a runtime zero point (DynamicQuantizeLinear -> ConvInteger): NCHW in and out
            st.in_layouts = [NCHW, NCHW]
            st.out_layout = NCHW

            def dyn(x, z):
                try:
                    return ops.conv_integer(x, pw, xdt.type(int(z)), auto_pad=auto_pad, dilations=dil, group=group,
                                            pads=None if auto_pad != "NOTSET" else pads0, strides=strides)
                except (TypeError, ValueError) as e:
                    raise _err(n, str(e)) from None
            st.fast = st.slow = dyn
        elif not nhwc:  # NCHW plan: transpose in and out around the NHWC kernels
            st.fast = lambda x: _layout_of(fast(_layout_of(x, NCHW, NHWC)), NHWC, NCHW)
            st.slow = lambda x: _layout_of(slow(_layout_of(x, NCHW, NHWC)), NHWC, NCHW)
        depthwise = group > 1 and Cg == 1 and OC == group
        if depthwise:
            kern = f"depthwise ({_core.dw_kernel_name()})"
        elif KH == KW == 1 and strides == (1, 1) and not any(pads0) and auto_pad in ("NOTSET", "VALID"):
            kern = f"1x1 GEMM ({_core.gemm_kernel_name()})"
        else:
            kern = f"gathered GEMM ({_core.gemm_kernel_name()})"
        st.kernel = kern
        st.info = {"weights": f"{w.dtype.name}{'' if bits == 8 else f'/{bits}-bit'} "
                              f"{'per-channel' if n.params.get('w_scale', np.ones(1)).size > 1 else 'per-tensor'}",
                   "weight_bytes": int(w.size * (bits if bits < 8 else 8) // 8 + (4 * OC if bias is not None else 0)),
                   "macs_per_out": int(Cg * KH * KW), "out_channels": OC,
                   "clip": None if int32_out else ((lo, hi) if (lo, hi) != ops.activation_bounds(None, 1.0, 0, t_y.dtype) else None)}

    def _build_QLinearConv(self, n, st):
        self._conv_common(n, st, False)

    def _build_ConvInteger(self, n, st):
        self._conv_common(n, st, True)

    # --- matmul
    def _mm_common(self, n, st, int32_out):
        t_x, xq = self._q(n.inputs[0])
        t_y, yq = self._q(n.outputs[0])
        w = n.params["w"]
        bits = int(n.params.get("w_bits", 8)) if n.params.get("w_bits") is not None else 8
        wz = n.params["w_zero_point"]
        wzp = w.dtype.type(wz[0]) if wz.size == 1 else wz.astype(w.dtype)
        try:
            pw = ops.pack_weights(w, wzp, bits=None if bits == 8 else bits)
        except (TypeError, ValueError) as e:
            raise _err(n, f"weights cannot be packed: {e}") from None
        K, N = w.shape
        za = int(xq.zero_point[0]) if xq is not None else 0
        bias = n.params.get("bias")
        if int32_out:
            rq, ydt, zy, lo, hi = None, "int32", 0, 0, 0
        else:
            ydt = t_y.dtype.name
            zy = int(yq.zero_point[0])
            lo, hi = ops.activation_bounds(n.attrs.get("clip"), float(yq.scale[0]), zy, t_y.dtype)
            try:
                rq = _core.derive_requant(n.attrs.get("mode") or "fp32", float(xq.scale[0]), n.params["w_scale"],
                                          float(yq.scale[0]), N)
            except ValueError as e:
                raise _err(n, f"requantization scale: {e}") from None
        core_w = pw._core
        xdt = t_x.dtype
        if len(n.inputs) > 1:   # a runtime zero point (DynamicQuantizeLinear -> MatMulInteger)
            def dyn(x, z):
                try:
                    return ops.matmul_integer(x, pw, xdt.type(int(z)))
                except (TypeError, ValueError) as e:
                    raise _err(n, str(e)) from None
            st.fast = st.slow = dyn
            st.kernel = f"GEMM ({_core.gemm_kernel_name()})"
            st.info = {"weights": f"{w.dtype.name} {'per-channel' if wz.size > 1 else 'per-tensor'}",
                       "weight_bytes": int(w.size), "macs_per_out": int(K), "out_channels": N}
            return

        def fast(x):
            lead = x.shape[:-1]
            return _core.qgemm(x.reshape(-1, K), za, core_w, bias, ydt, rq, zy, lo, hi).reshape(*lead, N)

        def slow(x):
            if x.dtype != xdt:
                raise TypeError(f"node {n.name!r}: input has dtype {x.dtype}, expected {xdt}")
            try:
                if int32_out:
                    return ops.matmul_integer(x, pw, xdt.type(za))
                return ops.qlinear_matmul(x, float(xq.scale[0]), xdt.type(za), pw, n.params["w_scale"], None,
                                          float(yq.scale[0]), t_y.dtype.type(zy), bias, mode=n.attrs.get("mode") or "fp32",
                                          clip=(lo, hi))
            except (TypeError, ValueError) as e:
                raise _err(n, str(e)) from None

        st.fast, st.slow = fast, slow
        st.kernel = f"GEMM ({_core.gemm_kernel_name()}{', int4 nibbles' if bits <= 4 else ''})"
        st.info = {"weights": f"{w.dtype.name}{'' if bits == 8 else f'/{bits}-bit'} "
                              f"{'per-channel' if n.params.get('w_scale', np.ones(1)).size > 1 else 'per-tensor'}",
                   "weight_bytes": int(w.size * bits // 8 + (4 * N if bias is not None else 0)),
                   "macs_per_out": int(K), "out_channels": N}

    def _build_QLinearMatMul(self, n, st):
        self._mm_common(n, st, False)

    def _build_MatMulInteger(self, n, st):
        self._mm_common(n, st, True)

    # --- eltwise integer kernels
    def _build_QLinearAdd(self, n, st):
        ta, aq = self._q(n.inputs[0])
        tb, bq = self._q(n.inputs[1])
        tc, cq = self._q(n.outputs[0])
        rule = self.add_rule or n.attrs.get("rule", "onnxruntime")
        if rule not in ("onnxruntime", "onnx", "tflite", "xnnpack"):
            raise _err(n, f"unknown add rule {rule!r}")
        la, lb = self._have(n, 0), self._have(n, 1)
        # NHWC only when both operands arrive NHWC (same logical shape then means same physical shape)
        if self.layout == "auto" and la == NHWC and lb == NHWC:
            st.in_layouts = [NHWC, NHWC]
            st.out_layout = NHWC
        dt = tc.dtype
        sa, sb, sc = float(aq.scale[0]), float(bq.scale[0]), float(cq.scale[0])
        za, zb, zc = int(aq.zero_point[0]), int(bq.zero_point[0]), int(cq.zero_point[0])
        lo, hi = ops.activation_bounds(n.attrs.get("clip"), sc, zc, dt)
        if rule == "onnxruntime":
            # ORT's kernel converts the float result with cvtps2dq, which gives INT_MIN
            # (then 0 after saturation) for |v| >= 2^31 where docs/semantics.md 11.4 clamps.
            # |v| <= 255 + 510 (rA + rB): below 2^22 for the ratios nothing can overflow.
            with np.errstate(over="ignore"):
                ra, rb = float(np.float32(sa) / np.float32(sc)), float(np.float32(sb) / np.float32(sc))
            if ra + rb >= 2.0 ** 22:
                raise _err(n, f"scale ratios a_scale/y_scale = {ra:.3g} and b_scale/y_scale = {rb:.3g} are absurd "
                              f"(sum >= 2^22): ONNX Runtime's kernel overflows int32 there")
        st.kernel = f"eltwise ({_core.eltwise_kernel_name()})" if rule != "onnx" else "numpy float32 (onnx rule)"
        st.info = {"rule": rule}
        if rule == "onnx":
            def fn(a, b):
                fa = ops.dequantize_linear(a, sa, a.dtype.type(za))
                fb = ops.dequantize_linear(b, sb, b.dtype.type(zb))
                r = np.clip(ops.quantize_linear(np.add(fa, fb, dtype=np.float32), sc, dt.type(zc)), lo, hi)
                return r.astype(dt)
            st.fast = st.slow = fn
            return

        def fast(a, b):
            # any broadcastable pair, with ORT's operand forms (a scalar a swaps the operands)
            y = _core.qlinear_add(a, sa, za, b, sb, zb, sc, zc, rule, lo, hi)
            return y if y.ndim == max(a.ndim, b.ndim) else y.reshape(np.broadcast_shapes(a.shape, b.shape))

        def slow(a, b):
            for nm, v in (("A", a), ("B", b)):
                if v.dtype != dt:
                    raise TypeError(f"node {n.name!r}: input {nm} has dtype {v.dtype}, expected {dt}")
            try:
                np.broadcast_shapes(a.shape, b.shape)
            except ValueError:
                raise _err(n, f"the inputs' shapes {a.shape} and {b.shape} do not broadcast") from None
            return fast(np.ascontiguousarray(a), np.ascontiguousarray(b))

        st.fast, st.slow = fast, slow

    def _pool_geometry_check(self, n, x, k, s, p, d, ceil_mode=0):
        try:
            ops.eltwise._geometry(x, k, s, p, d, ceil_mode)
        except (TypeError, ValueError) as e:
            raise _err(n, str(e)) from None

    def _build_MaxPool(self, n, st):
        nhwc = self._native(st)
        k, s, p, d = (list(n.attrs[a]) for a in ("kernel_shape", "strides", "pads", "dilations"))
        ceil = bool(n.attrs.get("ceil_mode"))
        st.kernel = f"eltwise ({_core.eltwise_kernel_name()})"

        def fast(x):
            return _core.max_pool(x, k, s, p, d, ceil)

        def slow(x):
            if x.dtype not in (np.uint8, np.int8):
                raise TypeError(f"node {n.name!r}: MaxPool on {x.dtype} is not supported")
            self._pool_geometry_check(n, x, k, s, p, d, int(ceil))
            return fast(np.ascontiguousarray(x))
        self._wrap_layout(st, fast, slow, nhwc)

    def _wrap_layout(self, st, fast, slow, nhwc):
        if nhwc:
            st.fast, st.slow = fast, slow
        else:
            st.fast = lambda x: _layout_of(fast(_layout_of(x, NCHW, NHWC)), NHWC, NCHW)
            st.slow = lambda x: _layout_of(slow(_layout_of(x, NCHW, NHWC)), NHWC, NCHW)

    def _build_QLinearAveragePool(self, n, st):
        nhwc = self._native(st)
        tx, xq = self._q(n.inputs[0])
        ty, yq = self._q(n.outputs[0])
        k, s, p = (list(n.attrs[a]) for a in ("kernel_shape", "strides", "pads"))
        cip = bool(n.attrs.get("count_include_pad", 0))
        ceil = bool(n.attrs.get("ceil_mode", 0))
        sx, zx, sy, zy = float(xq.scale[0]), int(xq.zero_point[0]), float(yq.scale[0]), int(yq.zero_point[0])
        st.kernel = f"eltwise ({_core.eltwise_kernel_name()}, float32 rule of ORT)"

        def fast(x):
            if tuple(k) == x.shape[1:3] and not any(p):
                return _core.global_avg_pool(x, sx, zx, sy, zy)
            return _core.avg_pool(x, sx, zx, sy, zy, k, s, p, cip, ceil)

        def slow(x):
            self._pool_geometry_check(n, x, k, s, p, None, int(ceil))
            return fast(np.ascontiguousarray(x))
        self._wrap_layout(st, fast, slow, nhwc)

    def _build_QLinearGlobalAveragePool(self, n, st):
        nhwc = self._native(st)
        tx, xq = self._q(n.inputs[0])
        ty, yq = self._q(n.outputs[0])
        sx, zx, sy, zy = float(xq.scale[0]), int(xq.zero_point[0]), float(yq.scale[0]), int(yq.zero_point[0])
        st.kernel = f"eltwise ({_core.eltwise_kernel_name()})"

        def fast(x):
            return _core.global_avg_pool(x, sx, zx, sy, zy)

        def slow(x):
            try:
                return ops.qlinear_global_average_pool(x, sx, x.dtype.type(zx), sy, x.dtype.type(zy), layout="NHWC")
            except (TypeError, ValueError) as e:
                raise _err(n, str(e)) from None
        self._wrap_layout(st, fast, slow, nhwc)

    def _build_QLinearConcat(self, n, st):
        ty, yq = self._q(n.outputs[0])
        axis = int(n.attrs["axis"])
        ranks = {len(self.g.tensors[i].shape) for i in n.inputs if self.g.tensors[i].shape is not None}
        all_nhwc = all(self._have(n, k) == NHWC for k in range(len(n.inputs)))
        if self.layout == "auto" and all_nhwc:
            st.in_layouts = [NHWC] * len(n.inputs)
            st.out_layout = NHWC
            axis = {0: 0, 1: 3, 2: 1, 3: 2}[axis % 4]
        elif axis < 0:
            if len(ranks) != 1:
                raise _err(n, "a negative axis needs inputs of known rank")
            axis += ranks.pop()
        scales = [float(self.g.tensors[i].quant.scale[0]) for i in n.inputs]
        zps = [int(self.g.tensors[i].quant.zero_point[0]) for i in n.inputs]
        sy, zy = float(yq.scale[0]), int(yq.zero_point[0])
        st.kernel = f"eltwise ({_core.eltwise_kernel_name()})"

        def fast(*xs):
            return _core.concat(list(xs), scales, zps, sy, zy, axis)

        def slow(*xs):
            try:
                return ops.qlinear_concat(sy, ty.dtype.type(zy),
                                          [(x, s, x.dtype.type(z)) for x, s, z in zip(xs, scales, zps)], axis)
            except (TypeError, ValueError) as e:
                raise _err(n, str(e)) from None
        st.fast, st.slow = fast, slow

    def _eltwise_layout(self, n, st):
        if self.layout == "auto" and self._have(n, 0) == NHWC:
            st.in_layouts = [NHWC]
            st.out_layout = NHWC

    def _build_Clip(self, n, st):
        self._eltwise_layout(n, st)
        lo, hi = int(n.attrs["lo"]), int(n.attrs["hi"])
        st.kernel = f"eltwise ({_core.eltwise_kernel_name()})"
        st.fast = lambda x: _core.clip(x, lo, hi)
        st.slow = lambda x: ops.clip(np.ascontiguousarray(x), lo, hi)

    def _build_Lookup(self, n, st):
        self._eltwise_layout(n, st)
        table = n.params["table"]
        st.kernel = "numpy table lookup (exact, 256 entries)"
        st.info = {"source": n.attrs.get("source")}
        st.fast = lambda x: table[x.view(np.uint8)]
        st.slow = st.fast

    def _build_Rescale(self, n, st):
        from ..frontends.onnx import _build_table
        tx, xq = self._q(n.inputs[0])
        ty, yq = self._q(n.outputs[0])
        n.params["table"] = _build_table(tx.dtype, xq, ty.dtype, yq, lambda v: v)
        self._build_Lookup(n, st)
        st.info = {"source": "Rescale (Q(DQ(x)))"}

    def _build_Identity(self, n, st):
        self._eltwise_layout(n, st)
        st.fast = st.slow = lambda x: x
        st.kernel = "none (alias)"

    def _build_Requantize(self, n, st):
        tx, xq = self._q(n.inputs[0])
        ty, yq = self._q(n.outputs[0])
        st.fast = st.slow = lambda x: ops.requantize(x, xq.scale, float(yq.scale[0]), ty.dtype.type(yq.zero_point[0]),
                                                     mode="fp32", clip=n.attrs.get("clip"))
        st.kernel = f"eltwise ({_core.eltwise_kernel_name()})"

    def _build_QuantizeLinear(self, n, st):
        ty, yq = self._q(n.outputs[0])
        dt = ty.dtype
        st.kernel = f"eltwise ({_core.eltwise_kernel_name()})"
        if yq.per_channel:
            ax = yq.axis
            zps = yq.zero_point.astype(dt)

            def f(x):
                return np.ascontiguousarray(np.moveaxis(ops.quantize_linear(np.moveaxis(x, ax, -1), yq.scale, zps), -1, ax))
            st.fast = st.slow = f
            return
        s = np.ascontiguousarray(yq.scale[:1])
        z = np.ascontiguousarray(yq.zero_point[:1].astype(np.int32))
        dts = dt.name
        zpt = dt.type(yq.zero_point[0])

        def fast(x):
            if x.ndim == 0 or x.size == 0:
                return ops.quantize_linear(x, s[0], zpt)
            return _core.quantize(x.reshape(-1, x.shape[-1]), s, z, "onnx", dts).reshape(x.shape)

        def slow(x):
            if x.dtype != np.float32:
                raise TypeError(f"node {n.name!r}: QuantizeLinear input must be float32, got {x.dtype}")
            return ops.quantize_linear(np.ascontiguousarray(x), s[0], zpt)
        st.fast, st.slow = fast, slow

    def _build_DynamicQuantizeLinear(self, n, st):
        """ONNX Runtime's DynamicQuantizeLinear (uint8), in numpy float32:
        lo = min(0, min x), hi = max(0, max x); scale = fl32(hi - lo) / 255 (1 if hi == lo);
        zp = rne(clamp(fl32(0 - lo / scale), 0, 255)); y = quantize_linear(x, scale, zp) (rule onnx)."""
        st.kernel = "numpy min/max + eltwise quantize"

        def f(x):
            if x.dtype != np.float32:
                raise TypeError(f"node {n.name!r}: DynamicQuantizeLinear input must be float32, got {x.dtype}")
            if np.isnan(x).any():
                raise _err(n, "the input contains NaN")
            lo = min(np.float32(x.min()), np.float32(0)) if x.size else np.float32(0)
            hi = max(np.float32(x.max()), np.float32(0)) if x.size else np.float32(0)
            scale = np.float32(1) if hi == lo else np.float32(np.float32(hi - lo) / np.float32(255))
            izp = np.float32(np.float32(0) - np.float32(lo / scale))
            zp = np.uint8(np.rint(min(max(izp, np.float32(0)), np.float32(255))))
            y = ops.quantize_linear(x, scale, zp)
            return y, np.array(scale, np.float32), np.array(zp, np.uint8)
        st.fast = st.slow = f

    def _build_DequantizeLinear(self, n, st):
        tx, xq = self._q(n.inputs[0])
        st.kernel = f"eltwise ({_core.eltwise_kernel_name()})"
        if xq.per_channel:
            ax = xq.axis
            zps = xq.zero_point.astype(tx.dtype)

            def f(x):
                return np.ascontiguousarray(np.moveaxis(ops.dequantize_linear(np.ascontiguousarray(np.moveaxis(x, ax, -1)),
                                                                              xq.scale, zps), -1, ax))
            st.fast = st.slow = f
            return
        zpt = tx.dtype.type(xq.zero_point[0])
        sc = float(xq.scale[0])
        s1 = np.ascontiguousarray(xq.scale[:1])
        z1 = np.ascontiguousarray(xq.zero_point[:1].astype(np.int32))

        def fast(x):
            if x.ndim == 0:
                return ops.dequantize_linear(x, sc, zpt)
            return _core.dequantize(x.reshape(-1, x.shape[-1]), s1, z1).reshape(x.shape)
        st.fast = fast
        st.slow = lambda x: ops.dequantize_linear(np.ascontiguousarray(x), sc, zpt)

    # --- data movement (numpy, NCHW)
    def _build_Reshape(self, n, st):
        shape, allowzero = list(n.attrs["shape"]), n.attrs.get("allowzero", 0)

        def f(x):
            tgt = shape if allowzero else [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
            try:
                return x.reshape(tgt)
            except ValueError as e:
                raise _err(n, f"cannot reshape {x.shape} to {shape}: {e}") from None
        st.fast = st.slow = f

    def _build_Flatten(self, n, st):
        axis = n.attrs["axis"]

        def f(x):
            a = axis % x.ndim if axis < 0 else axis
            if a > x.ndim:
                raise _err(n, f"axis {axis} is out of range for rank {x.ndim}")
            return x.reshape(math.prod(x.shape[:a]), math.prod(x.shape[a:]))
        st.fast = st.slow = f

    def _build_Transpose(self, n, st):
        perm = n.attrs.get("perm")
        st.fast = st.slow = lambda x: np.ascontiguousarray(np.transpose(x, perm))

    def _build_Squeeze(self, n, st):
        axes = n.attrs.get("axes")
        st.fast = st.slow = lambda x: np.squeeze(x, None if axes is None else tuple(axes))

    def _build_Unsqueeze(self, n, st):
        axes = n.attrs["axes"]

        def f(x):
            r = x.ndim + len(axes)
            out = x
            for a in sorted(int(v) % r for v in axes):
                out = np.expand_dims(out, a)
            return out
        st.fast = st.slow = f

    def _build_Pad(self, n, st):
        pads, mode, value = n.attrs["pads"], n.attrs["mode"], n.attrs["value"]

        def f(x):
            r = x.ndim
            if len(pads) != 2 * r:
                raise _err(n, f"pads has {len(pads)} entries for a rank-{r} input")
            pw = [(pads[i], pads[i + r]) for i in range(r)]
            _check_alloc(n, [d + a + b for d, (a, b) in zip(x.shape, pw)], x.dtype.itemsize)
            if mode == "constant":
                return np.pad(x, pw, mode="constant", constant_values=np.asarray(value).astype(x.dtype))
            return np.pad(x, pw, mode=mode)
        st.fast = st.slow = f

    def _build_DepthToSpace(self, n, st):
        b, mode = n.attrs["blocksize"], n.attrs.get("mode", "DCR")

        def f(x):
            N, C, H, W = x.shape
            if C % (b * b):
                raise _err(n, f"channels {C} not divisible by blocksize^2 = {b * b}")
            if mode == "DCR":
                t = x.reshape(N, b, b, C // (b * b), H, W).transpose(0, 3, 4, 1, 5, 2)
            else:
                t = x.reshape(N, C // (b * b), b, b, H, W).transpose(0, 1, 4, 2, 5, 3)
            return np.ascontiguousarray(t.reshape(N, C // (b * b), H * b, W * b))
        st.fast = st.slow = f

    def _build_SpaceToDepth(self, n, st):
        b = n.attrs["blocksize"]

        def f(x):
            N, C, H, W = x.shape
            if H % b or W % b:
                raise _err(n, f"spatial size {H}x{W} not divisible by blocksize {b}")
            t = x.reshape(N, C, H // b, b, W // b, b).transpose(0, 3, 5, 1, 2, 4)
            return np.ascontiguousarray(t.reshape(N, C * b * b, H // b, W // b))
        st.fast = st.slow = f

    def _build_ResizeNearest(self, n, st):
        a = n.attrs
        st.kernel = "numpy gather (nearest)"

        def index(in_size, out_size, scale):
            # ONNX Resize, float32 like ONNX Runtime
            o = np.arange(out_size, dtype=np.float32)
            sc = np.float32(scale)
            ctm = a["coordinate_transformation_mode"]
            if ctm == "half_pixel":
                xo = (o + np.float32(0.5)) / sc - np.float32(0.5)
            elif ctm == "pytorch_half_pixel":
                xo = (o + np.float32(0.5)) / sc - np.float32(0.5) if out_size > 1 else np.zeros_like(o)
            elif ctm == "align_corners":
                xo = o * np.float32(in_size - 1) / np.float32(out_size - 1) if out_size > 1 else np.zeros_like(o)
            else:
                xo = o / sc
            nm = a["nearest_mode"]
            if nm == "floor":
                idx = np.floor(xo)
            elif nm == "ceil":
                idx = np.ceil(xo)
            elif nm == "round_prefer_ceil":
                idx = np.floor(xo + np.float32(0.5))
            else:  # round_prefer_floor
                idx = np.ceil(xo - np.float32(0.5))
            return np.clip(idx.astype(np.int64), 0, in_size - 1)

        cache = {}

        def f(x):
            key = x.shape
            idx = cache.get(key)
            if idx is None:
                if a.get("sizes"):
                    out = list(a["sizes"])
                    scales = [o / i for o, i in zip(out, x.shape)]
                else:
                    scales = a["scales"]
                    out = [int(math.floor(i * s)) for i, s in zip(x.shape, scales)]
                if len(out) != x.ndim:
                    raise _err(n, f"scales/sizes have {len(out)} entries for a rank-{x.ndim} input")
                _check_alloc(n, out, x.dtype.itemsize)
                idx = cache[key] = [index(i, o, s) for i, o, s in zip(x.shape, out, scales)]
            return x[np.ix_(*idx)]
        st.fast = st.slow = f

    # --- pyqinfer domain and QONNX kinds (customops.py)
    def _build_ShiftMatMul(self, n, st):
        customops.build_shift_matmul(self, n, st)

    def _build_ShiftConv(self, n, st):
        customops.build_shift_conv(self, n, st)

    def _build_MultiThreshold(self, n, st):
        customops.build_multi_threshold(self, n, st)

    def _build_PWLQMatMul(self, n, st):
        customops.build_pwlq_matmul(self, n, st)

    def _build_QonnxQuant(self, n, st):
        customops.build_qonnx_quant(self, n, st)

    def _build_AffineChain(self, n, st):
        customops.build_affine_chain(self, n, st)

    # --- float ops (numpy float32)
    def _build_FloatOp(self, n, st):
        from .floatops import make_float_op
        st.fast = st.slow = make_float_op(n, [self.g.constants.get(i) for i in n.inputs])
        st.kernel = "numpy float32"
        st.numpy_float = True
        st.exact = bool(n.attrs.get("exact"))
