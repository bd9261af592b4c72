"""QONNX / Brevitas importer: docs/model-format.md section 11.

Used by :mod:`pyqinfer.frontends.onnx` when a model has nodes in a QONNX
domain. The meaning given to a QONNX graph:

* a ``Quant`` output is the exact real ``(q - z) * s`` of its integer code ``q``;
* ``Conv`` / ``MatMul`` / ``Gemm`` between a quantized activation and Quant
  weights is an exact integer accumulator (``ConvInteger`` / ``MatMulInteger``)
  with the real value ``v = acc * s_x * s_w[c] + bias[c]``;
* the elementwise chain (Add/Sub/Mul/Div by constants, BatchNormalization,
  Relu, Clip) from such a value to the next ``Quant`` or ``MultiThreshold`` is a
  monotone staircase of the integer per channel, converted with exact rational
  arithmetic into integer thresholds (a ``MultiThreshold`` IR node on the
  accumulator or on 8-bit codes, tabulated by the planner for 8-bit inputs);
* Quant of float tensors and constants is QONNX's float32 computation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import List, Optional

import numpy as np

from ..graph.ir import QParams
from .pyqinfer_domain import _attrs, _u

ROUNDING_MODES = ("ROUND", "FLOOR", "CEIL", "UP", "DOWN", "HALF_UP", "HALF_DOWN")
CHAIN_OPS = ("Add", "Sub", "Mul", "Div", "BatchNormalization", "Relu", "Clip", "Identity")
_BIG = 1 << 40          # beyond any int32 / 8-bit source value: an always/never threshold


def _mode(n, a, default):
    """The rounding_mode attribute, upper case; HALF_EVEN is QONNX's alias of ROUND."""
    mode = str(a.get("rounding_mode", default)).upper()
    mode = "ROUND" if mode == "HALF_EVEN" else mode
    if mode not in ROUNDING_MODES:
        raise _u(n, f"rounding_mode {mode!r} is not one of {list(ROUNDING_MODES) + ['HALF_EVEN']}")
    return mode


def int_range(signed, narrow, bits):
    """QONNX min_int / max_int (narrow applies to unsigned too, as QONNX's code does)."""
    if signed:
        return -(1 << (bits - 1)) + (1 if narrow else 0), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1 - (1 if narrow else 0)


def _F(v):
    return Fraction(float(v))


# ------------------------------------------------------------ the staircase
_FLIP = {">=": "<=", ">": "<", "<=": ">=", "<": ">"}


def _holds(rel, a, b):
    return {">=": a >= b, ">": a > b, "<=": a <= b, "<": a < b}[rel]


def _pull_affine(cond, a, c):
    """Condition on w from a condition on a*w + c."""
    if isinstance(cond, bool):
        return cond
    rel, g = cond
    if a == 0:
        return _holds(rel, c, g)
    r = (g - c) / a
    return (rel, r) if a > 0 else (_FLIP[rel], r)


def _pull_clip(cond, lo, hi):
    """Condition on w from a condition on min(max(w, lo), hi) (None = unbounded)."""
    if isinstance(cond, bool):
        return cond
    rel, g = cond
    if rel == ">=":
        if lo is not None and g <= lo:
            return True
        if hi is not None and g > hi:
            return False
    elif rel == ">":
        if lo is not None and g < lo:
            return True
        if hi is not None and g >= hi:
            return False
    elif rel == "<=":
        if hi is not None and g >= hi:
            return True
        if lo is not None and g < lo:
            return False
    else:
        if hi is not None and g > hi:
            return True
        if lo is not None and g <= lo:
            return False
    return cond


def _to_int(cond):
    """(sign, threshold) with the condition == sign*x >= threshold for an integer x."""
    if cond is True:
        return None, -_BIG
    if cond is False:
        return None, _BIG
    rel, r = cond
    fl, ce = math.floor(r), math.ceil(r)
    if rel == ">=":
        return 1, ce
    if rel == ">":
        return 1, fl + 1
    if rel == "<=":
        return -1, -fl
    return -1, 1 - ce


def level_condition(mode, k):
    """(rel, beta): round_mode(u) >= k  <=>  u rel beta (k an integer)."""
    h = Fraction(1, 2)
    if mode == "ROUND":
        return (">=" if k % 2 == 0 else ">"), k - h
    if mode == "HALF_UP":
        return (">=" if k >= 1 else ">"), k - h
    if mode == "HALF_DOWN":
        return (">=" if k <= 0 else ">"), k - h
    if mode == "FLOOR":
        return ">=", Fraction(k)
    if mode == "CEIL":
        return ">", Fraction(k - 1)
    if mode == "UP":
        return (">", Fraction(k - 1)) if k >= 1 else (">=", Fraction(k))
    if mode == "DOWN":
        return (">=", Fraction(k)) if k >= 1 else (">", Fraction(k - 1))
    raise ValueError(mode)


def round_mode(mode, u: Fraction) -> int:
    """mode(u) for an exact rational u (the QONNX rounding functions)."""
    fl = math.floor(u)
    if mode == "FLOOR":
        return fl
    if mode == "CEIL":
        return math.ceil(u)
    if mode == "DOWN":
        return int(u)                     # toward zero
    if mode == "UP":
        return math.ceil(u) if u > 0 else fl
    frac = u - fl
    if frac != Fraction(1, 2):
        return fl + (1 if frac > Fraction(1, 2) else 0)
    if mode == "ROUND":
        return fl if fl % 2 == 0 else fl + 1
    if mode == "HALF_UP":
        return fl + 1 if u > 0 else fl
    if mode == "HALF_DOWN":
        return fl if u > 0 else fl + 1
    raise ValueError(mode)


@dataclass
class AView:
    """A float tensor that is an exact function of an integer tensor ``src``:
    ``chain(A[c] * x + B[c])`` per channel (lists of length C or 1)."""
    src: str
    A: List[Fraction]
    B: List[Fraction]
    chain: list = field(default_factory=list)     # ("affine", [a], [c]) | ("clip", lo, hi)
    chan_pos: Optional[int] = None                # channel position counted from the right (3 NCHW, 1 last)
    C: Optional[int] = None

    def channels(self, extra=1):
        return max(len(self.A), extra, *(len(op[1]) for op in self.chain if op[0] == "affine"))

    def at(self, lst, c):
        return lst[0] if len(lst) == 1 else lst[c]

    def thresholds(self, conds_for):
        """Integer thresholds of ``conds_for(c) -> [(rel, gamma) | bool]`` pulled back to x:
        (T int64 [C, L], sign int64 [C]) with condition t <=> sign[c] * x >= T[c, t]."""
        C = max(self.channels(), self.C or 1)
        rows, signs = [], []
        for c in range(C):
            sg, row = None, []
            for cond in conds_for(c):
                for op in reversed(self.chain):
                    if op[0] == "affine":
                        cond = _pull_affine(cond, self.at(op[1], c), self.at(op[2], c))
                    else:
                        cond = _pull_clip(cond, op[1], op[2])
                cond = _pull_affine(cond, self.at(self.A, c), self.at(self.B, c))
                s, t = _to_int(cond)
                if s is not None:
                    if sg is not None and s != sg:
                        raise AssertionError("a monotone chain gave thresholds of both directions")
                    sg = s
                row.append((cond, t))
            sg = sg or 1
            vals = []
            for cond, t in row:
                if isinstance(cond, bool):
                    t = -_BIG if cond else _BIG
                vals.append(int(max(-_BIG, min(_BIG, t))))
            rows.append(vals)
            signs.append(sg)
        return np.array(rows, dtype=np.int64), np.array(signs, dtype=np.int64)

    def evaluate(self, x: int, c: int) -> Fraction:
        """The exact real value for integer x in channel c."""
        v = self.at(self.A, c) * x + self.at(self.B, c)
        for op in self.chain:
            if op[0] == "affine":
                v = self.at(op[1], c) * v + self.at(op[2], c)
            else:
                if op[1] is not None:
                    v = max(v, op[1])
                if op[2] is not None:
                    v = min(v, op[2])
        return v


# ------------------------------------------------------------ the importer
class QonnxImporter:
    def __init__(self, imp):
        self.imp = imp
        self.aview = {}           # float tensor name -> AView
        self.qw = {}              # Quant-folded constant name -> (codes, QParams, signed, bits)

    # ---- helpers
    def const(self, n, name, what):
        if not name or name not in self.imp.const:
            raise _u(n, f"{what} ({name!r}) must be a constant (initializer or Constant node)")
        return np.asarray(self.imp.const[name])

    def real_const(self, n, name, what):
        """Exact real values (float64 array of the exact values, and Fractions) of a constant:
        a float constant's own values, or (q - z) * s of a Quant-folded one."""
        if name in self.qw:
            q, qp, _, _ = self.qw[name]
            return self._dequant_exact(q, qp)
        if name in self.imp.qconst:
            raise _u(n, f"{what} ({name!r}) is a DequantizeLinear constant; not supported in a QONNX chain")
        arr = self.const(n, name, what)
        if arr.dtype.kind not in "fiu":
            raise _u(n, f"{what} must be numeric, got {arr.dtype}")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise _u(n, f"{what} must be finite")
        return np.vectorize(_F, otypes=[object])(arr) if arr.size else arr.astype(object)

    @staticmethod
    def _dequant_exact(q, qp):
        out = np.empty(q.shape, dtype=object)
        ax = qp.axis
        for idx in np.ndindex(q.shape):
            c = 0 if not qp.per_channel else idx[ax]
            out[idx] = (int(q[idx]) - int(qp.zero_point[c])) * _F(qp.scale[c])
        return out

    def chan_values(self, n, vals, av: AView, what):
        """A constant broadcast against the aview: a list of Fractions of length 1 or C."""
        if vals.size == 1:
            return [vals.reshape(-1)[0]]
        shp = vals.shape
        non1 = [i for i, d in enumerate(shp) if d != 1]
        pos = len(shp) - non1[0] if len(non1) == 1 else None
        if pos is None or av.chan_pos is None or pos != av.chan_pos:
            raise _u(n, f"{what} of shape {list(shp)} is neither a scalar nor per channel of its input")
        C = shp[non1[0]]
        if av.C is not None and C != av.C:
            raise _u(n, f"{what} has {C} channels, the input has {av.C}")
        av.C = C
        return list(vals.reshape(-1))

    def quant_params(self, n, activation):
        """(s Fraction-able float32 array, z int array, bits, signed, narrow, mode) of a Quant node."""
        a = _attrs(n)
        ins = list(n.input) + [""] * (4 - len(n.input))
        s = self.const(n, ins[1], "the scale").astype(np.float64)
        z = self.const(n, ins[2], "the zero point")
        bw = self.const(n, ins[3], "the bit width")
        if bw.size != 1 or not np.isfinite(float(bw.reshape(-1)[0])) or \
                float(bw.reshape(-1)[0]) != int(bw.reshape(-1)[0]):
            raise _u(n, f"the bit width must be an integer scalar, got {bw.reshape(-1)[:4]}")
        bits = int(bw.reshape(-1)[0])
        signed = int(a.get("signed", 1))
        narrow = int(a.get("narrow", 0))
        if signed not in (0, 1) or narrow not in (0, 1):
            raise _u(n, f"attributes signed={signed}, narrow={narrow} must be 0 or 1")
        mode = _mode(n, a, "ROUND")
        lim = (2, 8) if activation else (2, 32 if signed else 31)
        if not lim[0] <= bits <= lim[1] and not (bits == 1 and signed):
            raise _u(n, f"bit width {bits} is outside [{lim[0]}, {lim[1]}]")
        s32 = s.astype(np.float32)
        if not (np.all(np.isfinite(s32)) and np.all(s32 > 0) and np.array_equal(s32.astype(np.float64), s)):
            raise _u(n, "the scale must be finite float32 values > 0")
        if not np.all(np.isfinite(z)) or not np.array_equal(np.round(z), z):
            raise _u(n, f"the zero point must be an integer, got {z.reshape(-1)[:4]}")
        if np.any(np.abs(z.astype(np.float64)) > 2.0 ** 32):
            raise _u(n, f"the zero point {z.reshape(-1)[:4]} is outside any integer code range")
        return s32, z.astype(np.int64), bits, signed, narrow, mode

    def codes_dtype(self, n, signed, bits, z):
        if bits <= 8:
            dt = np.dtype(np.int8 if signed else np.uint8)
        else:
            dt = np.dtype(np.int32)
        info = np.iinfo(dt)
        if np.any(z < info.min) or np.any(z > info.max):
            raise _u(n, f"zero point {z.reshape(-1)[:4]} does not fit the {dt} codes")
        return dt

    # ---- dispatch
    def custom_node(self, n):
        op = n.op_type
        if op in ("Quant", "IntQuant"):
            return self.op_Quant(n)
        if op == "BipolarQuant":
            return self.op_BipolarQuant(n)
        if op == "Trunc":
            return self.op_Trunc(n)
        if op == "MultiThreshold":
            return self.op_MultiThreshold(n)
        raise _u(n, "this QONNX op is not supported (Quant/IntQuant, BipolarQuant, Trunc, MultiThreshold are)")

    def intercept(self, n) -> bool:
        """Handle a standard op of a QONNX model when it belongs to an integer pattern."""
        imp = self.imp
        op = n.op_type
        data = n.input[0] if n.input else ""
        if op in CHAIN_OPS and (data in self.aview or data in imp.view) and self.chain(n):
            return True
        if op in ("Transpose", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze") and data in self.qw:
            self.move_weight(n)
            return True
        if op in ("Conv", "MatMul", "Gemm") and data in imp.view and len(n.input) > 1 and n.input[1] in self.qw:
            self.layer(n)
            return True
        for i in n.input:
            if i in self.aview:
                self.check_float_tail(n, i)
                self.materialize(i)
        return False

    def check_float_tail(self, n, name):
        """An unquantized real value may leave the integer domain only toward float outputs: if a
        QONNX quantizer depends on n's output, running n in float would break exactness."""
        from .onnx import QONNX_DOMAINS
        cons, seen, stack = self.imp.consumers, set(), list(n.output)
        while stack:
            t = stack.pop()
            for c in cons.get(t, []):
                if id(c) in seen:
                    continue
                seen.add(id(c))
                if (c.domain or "") in QONNX_DOMAINS:
                    raise _u(n, f"runs on {name!r}, the real value of an integer layer before its quantizer, and "
                                f"its result reaches {c.op_type} {c.name!r}: this cannot be computed exactly "
                                f"(only Add/Sub/Mul/Div by constants, BatchNormalization, Relu, Clip may stand "
                                f"between a layer and its quantizer; quantize before this op)")
                stack.extend(o for o in c.output if o)

    def move_weight(self, n):
        """Data movement of a Quant-folded constant (e.g. Quant(W) -> Transpose -> MatMul): the codes move,
        the quantization axis follows (Transpose), or must be per tensor (reshapes)."""
        q, qp, signed, bits = self.qw[n.input[0]]
        a = _attrs(n)
        op = n.op_type
        if op == "Transpose":
            perm = list(a.get("perm", range(q.ndim)[::-1]))
            q2 = np.transpose(q, perm)
            qp2 = qp if not qp.per_channel else QParams(qp.scale, qp.zero_point, perm.index(qp.axis), qp.bits)
        elif op == "Identity":
            q2, qp2 = q, qp
        else:
            if qp.per_channel:
                raise _u(n, "reshaping a per-channel quantized constant is not supported")
            try:
                if op == "Reshape":
                    from .onnx import _reshape
                    q2 = _reshape(q, self.const(n, n.input[1], "the shape"), a.get("allowzero", 0))
                elif op == "Flatten":
                    ax = a.get("axis", 1) % max(q.ndim, 1)
                    q2 = q.reshape(int(np.prod(q.shape[:ax])), -1)
                else:
                    axes = a.get("axes")
                    if axes is None and len(n.input) > 1 and n.input[1]:
                        axes = [int(v) for v in self.const(n, n.input[1], "axes")]
                    if op == "Squeeze":
                        q2 = np.squeeze(q, None if axes is None else tuple(axes))
                    else:
                        q2 = q
                        for ax in sorted(int(v) % (q.ndim + len(axes)) for v in axes):
                            q2 = np.expand_dims(q2, ax)
            except (ValueError, TypeError) as e:
                raise _u(n, f"cannot apply to the constant of shape {list(q.shape)}: {e}") from None
            qp2 = qp
        self.qw[n.output[0]] = (np.ascontiguousarray(q2), qp2, signed, bits)
        self.imp.qconst[n.output[0]] = (np.ascontiguousarray(q2), qp2)

    # ---- Quant
    def op_Quant(self, n):
        imp = self.imp
        x = n.input[0]
        y = n.output[0]
        if x in imp.const:
            return self.fold_quant(n)
        s, z, bits, signed, narrow, mode = self.quant_params(n, activation=True)
        if s.size != 1 or z.size != 1:
            raise _u(n, "per-channel quantization of an activation is not supported")
        if bits == 1:
            return self.bipolar(n, x, y, s)
        lo, hi = int_range(signed, narrow, bits)
        zi = int(z.reshape(-1)[0])
        dt = self.codes_dtype(n, signed, bits, z)
        qp = QParams(s.reshape(-1), np.array([zi]))
        codes = imp.fresh(y)
        if x in self.aview or x in imp.view:
            av = self.as_aview(n, x)
            sy = _F(s.reshape(-1)[0])

            def conds(c):
                out = []
                for k in range(lo + 1, hi + 1):
                    rel, beta = level_condition(mode, k)
                    out.append((rel, (beta - zi) * sy))
                return out
            T, sign = av.thresholds(conds)
            imp.tensor(codes, dt, qp)
            self.emit_threshold(n, av, T, sign, codes, {"out_scale": 1.0, "out_bias": float(lo), "out_dtype": dt.name})
        else:
            t = imp.out.tensors.get(x)
            if t is None or t.dtype != np.float32:
                raise _u(n, f"input {x!r} must be a float32 tensor, a constant or a quantized value")
            imp.tensor(codes, dt, qp)
            imp.emit("QonnxQuant", n.name or y, [x], [codes], {"rounding_mode": mode, "lo": lo, "hi": hi})
        imp.view[y] = (codes, qp, n)

    def bipolar(self, n, x, y, s):
        imp = self.imp
        qp = QParams(np.asarray(s, np.float32).reshape(-1)[:1], np.array([0]))
        codes = imp.fresh(y)
        imp.tensor(codes, np.int8, qp)
        if x in self.aview or x in imp.view:
            av = self.as_aview(n, x)
            T, sign = av.thresholds(lambda c: [(">=", Fraction(0))])
            self.emit_threshold(n, av, T, sign, codes, {"out_scale": 2.0, "out_bias": -1.0, "out_dtype": "int8"})
        else:
            t = imp.out.tensors.get(x)
            if t is None or t.dtype != np.float32:
                raise _u(n, f"input {x!r} must be a float32 tensor, a constant or a quantized value")
            imp.emit("QonnxQuant", n.name or y, [x], [codes], {"rounding_mode": "BIPOLAR", "lo": -1, "hi": 1})
        imp.view[y] = (codes, qp, n)

    def op_BipolarQuant(self, n):
        s = self.const(n, n.input[1] if len(n.input) > 1 else "", "the scale").astype(np.float32)
        if not (np.all(np.isfinite(s)) and np.all(s > 0)):
            raise _u(n, "the scale must be finite and > 0")
        x = n.input[0]
        if x in self.imp.const:
            w = np.asarray(self.imp.const[x], np.float32)
            q = np.where(w >= 0, 1, -1).astype(np.int8)
            self._store_weight(n, q, s, np.zeros(1, np.int64), 1, True)
            return
        if s.size != 1:
            raise _u(n, "per-channel quantization of an activation is not supported")
        self.bipolar(n, x, n.output[0], s)

    def _store_weight(self, n, q, s, z, bits, signed):
        s = np.asarray(s, np.float32)
        if s.size == 1 and np.asarray(z).size == 1:
            qp = QParams(s.reshape(-1), np.asarray(z).reshape(-1))
        else:
            shp = np.broadcast_shapes(s.shape, np.asarray(z).shape)
            shp = (1,) * (q.ndim - len(shp)) + tuple(shp)
            non1 = [i for i, d in enumerate(shp) if d != 1]
            if len(non1) != 1 or shp[non1[0]] != q.shape[non1[0]]:
                raise _u(n, f"scale/zero point of shape {list(shp)} must be per tensor or along one axis of "
                            f"the constant {list(q.shape)}")
            ax = non1[0]
            C = q.shape[ax]
            qp = QParams(np.broadcast_to(s.reshape(-1) if s.size > 1 else s.reshape(1), (C,)).astype(np.float32),
                         np.broadcast_to(np.asarray(z).reshape(-1), (C,)), ax)
        self.qw[n.output[0]] = (q, qp, signed, bits)
        self.imp.qconst[n.output[0]] = (q, qp)

    def fold_quant(self, n):
        """Quant of a float constant: QONNX's float32 computation (model-format 11.1)."""
        s, z, bits, signed, narrow, mode = self.quant_params(n, activation=False)
        w = np.asarray(self.imp.const[n.input[0]])
        if w.dtype.kind != "f":
            w = w.astype(np.float32)
        if np.isnan(w).any():       # NaN has no code (QONNX's own cast would give an arbitrary integer)
            raise _u(n, f"the constant {n.input[0]!r} contains NaN")
        if bits == 1:
            q = np.where(w >= 0, 1, -1).astype(np.int8)
            self._store_weight(n, q, s, np.zeros(1, np.int64), 1, True)
            return
        lo, hi = int_range(signed, narrow, bits)
        dt = self.codes_dtype(n, signed, bits, z)
        try:
            sb = np.broadcast_to(s.reshape(s.shape), np.broadcast_shapes(w.shape, s.shape, z.shape))
            zb = np.broadcast_to(z, sb.shape)
        except ValueError:
            raise _u(n, f"scale {list(s.shape)} / zero point {list(z.shape)} do not broadcast to the constant "
                        f"{list(w.shape)}") from None
        w32 = np.broadcast_to(w.astype(np.float32), sb.shape)
        with np.errstate(over="ignore"):     # float32 overflow to inf is the defined result (then clipped)
            y = (w32 / sb).astype(np.float32)
            y = (y + zb.astype(np.float32)).astype(np.float32)
        y = np.clip(y, np.float32(lo), np.float32(hi))
        from ..graph.customops import _ROUND
        q = _ROUND[mode](y).astype(np.int64)
        self._store_weight(n, q.astype(dt), s, z, bits, signed)

    # ---- Trunc
    def op_Trunc(self, n):
        imp = self.imp
        a = _attrs(n)
        x = n.input[0]
        if x not in imp.view:
            raise _u(n, "Trunc needs a quantized input (the output of a Quant node)")
        src, qp, _ = imp.view[x]
        if qp.per_channel:
            raise _u(n, "per-channel input is not supported")
        mode = _mode(n, a, "FLOOR")
        signed, narrow = int(a.get("signed", 1)), int(a.get("narrow", 0))
        ins = list(n.input)
        s = self.const(n, ins[1], "the scale").astype(np.float32).reshape(-1)
        z = self.const(n, ins[2], "the zero point").reshape(-1)
        if s.size != 1 or z.size != 1 or s[0] != qp.scale[0] or float(z[0]) != float(qp.zero_point[0]):
            raise _u(n, "scale and zero point must equal those of the input's Quant (per tensor)")
        in_bw = self.const(n, ins[3], "the input bit width").reshape(-1)
        if len(ins) == 5:          # v1
            out_bw = self.const(n, ins[4], "the output bit width").reshape(-1)
            k = int(in_bw[0]) - int(out_bw[0])
            out_scale = None
        elif len(ins) == 7:        # v2
            out_scale = self.const(n, ins[4], "the output scale").astype(np.float32).reshape(-1)
            out_bw = self.const(n, ins[6], "the output bit width").reshape(-1)
            ratio = _F(out_scale[0]) / _F(s[0])
            if out_scale.size != 1 or ratio <= 0 or (ratio.numerator & (ratio.numerator - 1)) or \
                    (ratio.denominator & (ratio.denominator - 1)):
                raise _u(n, f"output_scale / scale = {float(ratio)} must be an exact power of two")
            k = ratio.numerator.bit_length() - 1 - (ratio.denominator.bit_length() - 1)
        else:
            raise _u(n, f"expects 5 (v1) or 7 (v2) inputs, got {len(ins)}")
        ob = int(out_bw[0])
        if not 2 <= ob <= 8:
            raise _u(n, f"output bit width {ob} is outside [2, 8]")
        lo, hi = int_range(signed, narrow, ob)
        z0 = int(qp.zero_point[0])
        zp_out = Fraction(z0) / Fraction(2) ** k
        if zp_out.denominator != 1:
            raise _u(n, f"the output zero point {z0} / 2^{k} is not an integer")
        dt = np.dtype(np.int8 if signed else np.uint8)
        sc = np.float32(out_scale[0]) if out_scale is not None else np.float32(float(_F(s[0]) * Fraction(2) ** k))
        if out_scale is None and Fraction(float(sc)) != _F(s[0]) * Fraction(2) ** k:
            raise _u(n, "scale * 2^k is not a float32")
        xdt = imp.out.tensors[src].dtype
        vals = np.arange(256, dtype=np.uint8).view(xdt).astype(np.int64)
        table = np.array([round_mode(mode, min(max(Fraction(int(v)) / Fraction(2) ** k, Fraction(lo)), Fraction(hi)))
                          for v in vals], dtype=np.int64)
        if table.min() < np.iinfo(dt).min or table.max() > np.iinfo(dt).max:
            raise _u(n, "output codes do not fit 8 bits")
        oqp = QParams(np.array([sc]), np.array([int(zp_out)]))
        codes = imp.fresh(n.output[0])
        imp.tensor(codes, dt, oqp)
        imp.emit("Lookup", n.name or codes, [imp.int_view(n, x, qp)], [codes], {"source": "QONNX Trunc"},
                 {"table": table.astype(dt)})
        imp.view[n.output[0]] = (codes, oqp, n)

    # ---- MultiThreshold (QONNX)
    def op_MultiThreshold(self, n):
        imp = self.imp
        a = _attrs(n)
        x = n.input[0]
        T = self.const(n, n.input[1] if len(n.input) > 1 else "", "the thresholds")
        if T.ndim != 2 or T.dtype.kind not in "fiu" or (T.dtype.kind == "f" and np.isnan(T).any()):
            raise _u(n, f"thresholds must be a real [C, B] tensor without NaN, got {T.dtype}{list(T.shape)}")
        osc = float(a.get("out_scale", 1.0))
        obi = float(a.get("out_bias", 0.0))
        layout = str(a.get("data_layout", "NCHW"))
        if layout not in ("NCHW", "NHWC"):
            raise _u(n, f"data_layout {layout!r} is not supported")
        if T.shape[1] > 255:
            raise _u(n, f"{T.shape[1]} thresholds do not fit 8-bit codes")
        s32 = np.float32(osc)
        zf = -Fraction(obi) / Fraction(float(s32)) if osc > 0 else None
        if not (osc > 0 and float(s32) == osc and zf.denominator == 1 and 0 <= zf <= 255):
            raise _u(n, f"out_scale={osc}, out_bias={obi} must give codes: out_scale a float32 > 0 and "
                        f"-out_bias/out_scale an integer in [0, 255]")
        qp = QParams(np.array([s32]), np.array([int(zf)]))
        codes = imp.fresh(n.output[0])
        imp.tensor(codes, np.uint8, qp)
        if x in self.aview or x in imp.view:
            av = self.as_aview(n, x)
            if T.shape[0] > 1:
                if layout != "NCHW" and av.chan_pos == 3:
                    raise _u(n, "data_layout NHWC does not match the NCHW channel axis of its input")
                if av.C is not None and av.C != T.shape[0]:
                    raise _u(n, f"{T.shape[0]} threshold rows for {av.C} channels")
                av.C = T.shape[0]
            rows = [[(">=", Fraction(float(v))) if np.isfinite(v) else bool(v < 0) for v in row] for row in T]
            Ti, sign = av.thresholds(lambda c: rows[0 if len(rows) == 1 else c])
            self.emit_threshold(n, av, Ti, sign, codes, {"out_scale": 1.0, "out_bias": 0.0, "out_dtype": "uint8"})
        else:
            t = imp.out.tensors.get(x)
            if t is None:
                raise _u(n, f"input {x!r} is not defined before this node")
            imp.emit("MultiThreshold", n.name or codes, [x], [codes],
                     {"data_layout": layout, "out_scale": None, "out_bias": None, "out_dtype": "uint8",
                      "source": "QONNX MultiThreshold"},
                     {"thresholds": T.astype(np.int64 if T.dtype.kind in "iu" else np.float64), "sign": None,
                      "lut": None})
        imp.view[n.output[0]] = (codes, qp, n)

    def emit_threshold(self, n, av, T, sign, codes, out):
        imp = self.imp
        if np.all(sign == 1):
            sign = None
        if T.shape[0] > 1 and np.all(T == T[:1]) and sign is None:
            T = T[:1]
        imp.emit("MultiThreshold", n.name or codes, [av.src], [codes],
                 dict(out, data_layout="NCHW", source=f"QONNX {n.op_type} (exact staircase)"),
                 {"thresholds": T, "sign": sign, "lut": None})

    # ---- views
    def as_aview(self, n, x):
        imp = self.imp
        if x in self.aview:
            return self.aview[x]
        src, qp, _ = imp.view[x]
        if qp.per_channel:
            raise _u(n, f"input {x!r} is quantized per channel; not supported here")
        src = imp.int_view(n, x, qp)
        s, z = _F(qp.scale[0]), int(qp.zero_point[0])
        t = imp.out.tensors[src]
        pos = None
        if t.shape is not None:
            pos = 3 if len(t.shape) == 4 else (1 if len(t.shape) in (2, 3) else None)
        return AView(src, [s], [-z * s], [], pos, None)

    def chain(self, n) -> bool:
        """Extend the aview of n's data input by one elementwise op; False if not a chain op."""
        op = n.op_type
        a = _attrs(n)
        ins = list(n.input)
        x = ins[0]
        if op in ("Add", "Mul", "Sub", "Div"):
            if len(ins) != 2:
                return False
            if ins[0] in self.aview or ins[0] in self.imp.view:
                x, cname, first = ins[0], ins[1], True
            else:
                x, cname, first = ins[1], ins[0], False
            if cname in self.aview or cname in self.imp.view or (cname not in self.imp.const and cname not in self.qw):
                return False
            if op == "Div" and not first:
                return False
        av0 = self.as_aview(n, x)
        av = AView(av0.src, list(av0.A), list(av0.B), list(av0.chain), av0.chan_pos, av0.C)
        if op == "Identity":
            self.aview[n.output[0]] = av
            return True
        if op in ("Relu", "Clip"):
            lo, hi = (Fraction(0), None)
            if op == "Clip":
                if "min" in a or "max" in a:
                    lo_v, hi_v = a.get("min"), a.get("max")
                else:
                    lo_v = self.const(n, ins[1], "min").reshape(-1)[0] if len(ins) > 1 and ins[1] else None
                    hi_v = self.const(n, ins[2], "max").reshape(-1)[0] if len(ins) > 2 and ins[2] else None
                lo = None if lo_v is None or np.isneginf(lo_v) else _F(np.float32(lo_v))
                hi = None if hi_v is None or np.isposinf(hi_v) else _F(np.float32(hi_v))
                if lo is not None and hi is not None and lo > hi:
                    raise _u(n, f"min {lo} > max {hi}")
            av.chain.append(("clip", lo, hi))
            self.aview[n.output[0]] = av
            return True
        if op == "BatchNormalization":
            if int(a.get("training_mode", 0)):
                raise _u(n, "training_mode=1 is not supported")
            if len(n.output) > 1 and any(n.output[1:]):
                raise _u(n, "only the first output is supported")
            if av.chan_pos not in (3, 1):
                raise _u(n, "BatchNormalization needs a per-channel input of known layout (a Conv or MatMul output)")
            g, b, m, v = (self.const(n, i, nm).astype(np.float32).reshape(-1)
                          for i, nm in zip(ins[1:5], ("scale", "B", "mean", "var")))
            eps = np.float32(a.get("epsilon", 1e-5))
            sc, sh = bn_affine(g, b, m, v, eps)
            C = sc.size
            if av.C is not None and C != av.C and C != 1:
                raise _u(n, f"{C} channels, the input has {av.C}")
            av.C = av.C or C
            aa, cc = [_F(t) for t in sc], [_F(t) for t in sh]
        else:
            vals = self.real_const(n, cname, "the constant operand")
            vv = self.chan_values(n, vals, av, "the constant operand")
            if op == "Add":
                aa, cc = [Fraction(1)], vv
            elif op == "Sub":
                aa, cc = ([Fraction(1)], [-t for t in vv]) if first else ([Fraction(-1)], vv)
            elif op == "Mul":
                aa, cc = vv, [Fraction(0)]
            else:
                if any(t == 0 for t in vv):
                    raise _u(n, "division by zero")
                aa, cc = [1 / t for t in vv], [Fraction(0)]
        if not av.chain:       # fold into the source affine map
            C = max(len(av.A), len(aa), len(cc))
            A = [av.at(aa, c) * av.at(av.A, c) for c in range(C)]
            B = [av.at(aa, c) * av.at(av.B, c) + av.at(cc, c) for c in range(C)]
            av.A, av.B = A, B
        else:
            av.chain.append(("affine", aa, cc))
        self.aview[n.output[0]] = av
        return True

    def layer(self, n):
        """Conv / MatMul / Gemm between a quantized activation and Quant weights: an exact integer accumulator."""
        imp = self.imp
        op = n.op_type
        a = _attrs(n)
        x = n.input[0]
        src, xqp, _ = imp.view[x]
        if xqp.per_channel:
            raise _u(n, "per-channel activation quantization is not supported")
        w, wqp, _signed, bits = self.qw[n.input[1]]
        if bits > 8:
            raise _u(n, f"{bits}-bit weights are not supported in an integer layer (2..8)")
        bias_name = n.input[2] if len(n.input) > 2 and n.input[2] else ""
        if op == "Conv":
            if w.ndim != 4:
                raise _u(n, f"only 2-D convolution (4-D weights) is supported, got weights {list(w.shape)}")
            if wqp.per_channel and wqp.axis != 0:
                raise _u(n, f"per-channel weights must be along axis 0 (output channels), got axis {wqp.axis}")
            N = w.shape[0]
            attrs = imp.conv_attrs(n, a, w.shape)
            kind, pos = "ConvInteger", 3
        else:
            if op == "Gemm":
                if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or (bias_name and a.get("beta", 1.0) != 1.0):
                    raise _u(n, "transA=1 or alpha/beta other than 1 are not supported")
                if a.get("transB", 0):
                    w = w.T
                    if wqp.per_channel:
                        wqp = QParams(wqp.scale, wqp.zero_point, 1 - wqp.axis)
            if w.ndim != 2:
                raise _u(n, f"weights must be 2-D, got {list(w.shape)}")
            if wqp.per_channel and wqp.axis != 1:
                raise _u(n, f"per-channel weights must be along the output axis, got axis {wqp.axis}")
            N = w.shape[1]
            attrs, kind, pos = {}, "MatMulInteger", 1
        bias = [Fraction(0)]
        if bias_name:
            bv = self.real_const(n, bias_name, "the bias").reshape(-1)
            if bv.size not in (1, N):
                raise _u(n, f"the bias has {bv.size} values, expected {N}")
            bias = list(bv)
        xi = imp.int_view(n, x, xqp)
        acc = imp.fresh(n.output[0])
        imp.tensor(acc, np.int32)
        imp.emit(kind, n.name or acc, [xi], [acc], attrs,
                 {"w": np.ascontiguousarray(w), "w_zero_point": wqp.zero_point.copy()})
        sx = _F(xqp.scale[0])
        A = [sx * _F(v) for v in wqp.scale]
        self.aview[n.output[0]] = AView(acc, A, bias, [], pos, N)

    def materialize(self, name):
        """The float32 value of an aview (a float tail): AffineChain, numpy float64 (model-format 11.1)."""
        av = self.aview.pop(name)
        imp = self.imp
        chain = []
        for op in av.chain:
            if op[0] == "affine":
                chain.append(("affine", np.array([float(t) for t in op[1]]), np.array([float(t) for t in op[2]])))
            else:
                chain.append(("clip", None if op[1] is None else float(op[1]), None if op[2] is None else float(op[2])))
        imp.tensor(name, np.float32)
        imp.emit("AffineChain", f"{name}/float", [av.src], [name], {"chain": chain, "data_layout": "NCHW"},
                 {"A": np.array([float(t) for t in av.A]), "B": np.array([float(t) for t in av.B])})

    def finish(self):
        used = set(self.imp.graph_outputs)
        for nd in self.imp.out.nodes:
            used.update(nd.inputs)
        for name in list(self.aview):
            if name in used:
                self.materialize(name)


def bn_affine(gamma, beta, mean, var, eps):
    """BatchNormalization as a*v + c, float32 (model-format 11.1 and 12):
    a = fl32(gamma / fl32(sqrt(fl32(var + eps)))), c = fl32(beta - fl32(mean * a))."""
    f = np.float32
    g, b, m, v = (np.asarray(t, f) for t in (gamma, beta, mean, var))
    with np.errstate(all="ignore"):
        a = (g / np.sqrt((v + f(eps)).astype(f)).astype(f)).astype(f)
        c = (b - (m * a).astype(f)).astype(f)
    return a, c
