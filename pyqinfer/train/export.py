"""``export(model, example_input, path)``: a prepared model as an ONNX file that
``pyqinfer.load`` runs bit-exactly (docs/model-format.md, docs/training.md).

The exported graph computes exactly the eval-mode forward of the prepared model
(``pyqinfer.train.layers``): the round trip ``pyqinfer.load(path).run(x)`` equals
``model.eval()(x)`` element for element. By default only standard-domain ops
(``ai.onnx`` opset 21 and ``com.microsoft`` QGemm) are written, so ONNX Runtime
runs the files too; ``pyqinfer_domain=True`` adds the ``pyqinfer`` domain
(docs/model-format.md section 9) for what standard ops cannot say. Per layer:

* **single integer weight part, 8-bit container** (uniform int8 and int2-8 held
  in int8, PoT/APoT/log levels that fit in int8): ``QLinearConv`` or
  ``com.microsoft.QGemm`` (int32 bias, §4.1 ``fp32`` requantization);
* **4-bit weights** (``bits <= 4``, values in the int4/uint4 range): a QDQ group
  ``DQ(x), DQ(INT4 W, per channel), DQ(int32 bias) -> Conv|Gemm -> Q`` that
  the importer fuses into the same integer op, with the weights stored as 4-bit
  initializers;
* **a low-bit output range or a fused ReLU with a non-zero zero point**: the
  clamp as ``DQ -> Clip -> Q`` with unchanged parameters (an integer clip, fused
  into the op's clamp by the planner);
* **several weight parts (PWLQ)** or **no output quantizer**: per part
  ``ConvInteger|MatMulInteger -> Cast(float32)``, the int32 bias added to part 0
  in float32, ``Mul`` by the part's float32 factor, ``Add`` in part order (the
  ``_requant_multi`` / ``dequantize_acc`` arithmetic of the layer), then
  ``Clip`` and ``QuantizeLinear`` with scale 1 for an output quantizer (without
  one, a fused ReLU is a float32 ``Relu`` on the sum). Each of
  these float ops is one correctly rounded float32 operation; the float32 bias
  addition is exact because the exporter proves from the quantizer ranges and
  the weights that every accumulator stays below 2^24 in magnitude (else it
  refuses the layer);
* ``MaxPool2d``, ``Flatten``, ``Identity``, ``Dropout`` on the integers; an
  unfused ``ReLU`` on integers as a clamp at the zero point;
* graph-mode models (a ``torch.fx.GraphModule`` from ``prepare``, walked in
  topological order): ``QAdd`` -> ``com.microsoft.QLinearAdd``, ``QGlobalAvgPool`` ->
  ``QLinearGlobalAveragePool`` (+ ``Flatten`` for ``mean((2, 3))``), ``QAvgPool2d`` ->
  ``QLinearAveragePool``, ``QConcat`` -> ``QLinearConcat`` (scalar 0-d parameters, which
  ONNX Runtime's type inference requires there), a fused ReLU / low-bit output range as
  the ``DQ -> Clip -> Q`` clamp; a float operand is quantized with the op's own input
  quantizer.

The input gets ``QuantizeLinear`` (the first layer's input quantizer, rule
``onnx``), the output ``DequantizeLinear`` (or the float accumulator path).

With ``pyqinfer_domain=True``:

* **threshold output quantizers** (QN, PoT/APoT/log activations):
  ``pyqinfer.MultiThreshold`` on the int32 accumulator, then the level codes;
* **level-set weights** (PoT, DeepShift-Q, APoT, log base 2 / sqrt(2)) whose
  integer levels do not fit int8, or whose declared ``acc_bits`` can saturate
  (``shift_layers="all"``: every one): ``pyqinfer.ShiftConv`` /
  ``pyqinfer.ShiftMatMul`` with the codes of :func:`shift_codes` (rule
  ``exact``, mode ``fp32``, the layer's ``acc_bits``); grouped and depthwise
  convolutions carry the ``group`` attribute (up to 65536).

A declared ``acc_bits`` on a standard op becomes the verified metadata
``pyqinfer.acc_bits:<node>`` (docs/model-format.md 9.4). Not exported
(``ExportError`` naming the piece): PWLQ as ``pyqinfer.PWLQMatMul`` (the
trainer's four parts are not the decomposition of semantics section 14), int16
activation codes, the non-``fp32`` requant modes.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .layers import QConv2d, QLinear, _QLayer
from .levels import LevelQuantizer
from .integer import bias_scale, effective_scale

MS = "com.microsoft"
PQ = "pyqinfer"
OPSET = 21
FLOAT_ACC_LIMIT = 2 ** 24       # |acc| below this: int32 -> float32 and the bias add are exact
SHIFT_CONV_MAX_GROUP = 1 << 16  # the largest ShiftConv group the importer takes (pyqinfer_domain.py)

__all__ = ["export", "ExportError", "shift_codes"]


class ExportError(NotImplementedError):
    """The model (or one layer) cannot be written as an exactly equivalent ONNX graph (yet)."""


def _f32(t):
    return np.ascontiguousarray(torch.as_tensor(t).detach().cpu().numpy().astype(np.float32))


def _i64(t):
    a = torch.as_tensor(t).detach().cpu().numpy().astype(np.float64)
    if np.any(a != np.round(a)):
        raise ExportError("integer tensor holds non-integers")
    return a.astype(np.int64)


class _Builder:
    def __init__(self):
        import onnx
        self.onnx = onnx
        self.nodes, self.inits, self.names = [], [], set()
        self.used_ms = False
        self.used_pq = False

    def fresh(self, base):
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def const(self, base, arr, dtype=None, int4=None, scalar=False):
        """An initializer. ``scalar``: a 0-d tensor (com.microsoft's QLinearAdd / pool / concat insist on
        scalars; the other constants stay as they were, 1-element tensors for scalars)."""
        from onnx import TensorProto, helper, numpy_helper
        name = self.fresh(base)
        arr = np.asarray(arr)
        if scalar:
            self.inits.append(numpy_helper.from_array(np.array(arr.astype(dtype) if dtype else arr).reshape(()), name))
            return name
        if int4 is not None:        # 'INT4' | 'UINT4'
            dt = TensorProto.INT4 if int4 == "INT4" else TensorProto.UINT4
            t = helper.make_tensor(name, dt, list(arr.shape), arr.astype(np.int64).reshape(-1).tolist())
        else:
            t = numpy_helper.from_array(np.ascontiguousarray(arr.astype(dtype) if dtype else arr), name)
        self.inits.append(t)
        return name

    def node(self, op, inputs, base, domain=None, n_out=1, **attrs):
        from onnx import helper
        name = self.fresh(base)
        outs = [name] if n_out == 1 else [self.fresh(f"{base}_out{k}") for k in range(n_out)]
        if domain == MS:
            self.used_ms = True
        if domain == PQ:
            self.used_pq = True
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs


class _Act:
    """The current tensor: an integer activation with its qparams, or float32."""

    def __init__(self, name, integer, scale=None, zp=None, dtype=None, lo=None, hi=None, ndim=None):
        self.name, self.integer = name, integer
        self.scale, self.zp, self.dtype = scale, zp, dtype   # float32 scalar, int, 'uint8'|'int8'
        self.lo, self.hi = lo, hi                            # value range the quantizer allows
        self.ndim = ndim


def _act_qparams(q, what, levels_ok=False):
    """(scale, zero point, dtype, qmin, qmax) of an activation quantizer. ``levels_ok``: a
    threshold quantizer (QN, PoT/APoT/log activations) read as integer codes with zero point 0."""
    qp = q.qparams()
    if levels_ok and hasattr(q, "integer_thresholds"):
        if qp.get("dtype") not in ("uint8", "int8") or qp.get("signed"):
            raise ExportError(f"{what}: {qp.get('scheme')!r} activation codes in {qp.get('dtype')} need "
                              f"a wider container than uint8 (int16 activations are not supported)")
        levels = _i64(q.level_codes())
        return (np.float32(_f32(qp["scale"]).reshape(-1)[0]), 0, "uint8", int(levels.min()), int(levels.max()))
    if qp.get("scheme") not in ("uniform", "lsq", "dsq") or hasattr(q, "integer_thresholds"):
        raise ExportError(
            f"{what}: a {qp.get('scheme')!r} activation quantizer is exported through the pyqinfer ONNX "
            f"domain (MultiThreshold / level codes, docs/model-format.md section 9), which pyqinfer.load "
            f"does not import yet; use a uniform activation quantizer for now")
    if qp.get("ch_axis") is not None:
        raise ExportError(f"{what}: per-channel activation quantization is not supported by the format")
    scale = np.float32(_f32(qp["scale"]).reshape(-1)[0])
    zp = int(_i64(qp["zero_point"]).reshape(-1)[0])
    return scale, zp, qp["dtype"], int(qp["qmin"]), int(qp["qmax"])


def _np_dtype(name):
    return {"uint8": np.uint8, "int8": np.int8}[name]


def _container(dtype):
    ii = np.iinfo(_np_dtype(dtype))
    return int(ii.min), int(ii.max)



# ------------------------------------------------------------------ shift codes
def _is_shift_quantizer(wq):
    """A signed level-set weight quantizer (PoT, DeepShift-Q, APoT, log): its integer
    levels are sums of powers of two, i.e. shift codes (docs/semantics.md 12.5)."""
    return isinstance(wq, LevelQuantizer) and bool(getattr(wq, "signed", False))


def _signed_bits(count):
    """The smallest signed code width 2..8 holding ``count`` magnitude fields (None beyond 8)."""
    b = max(2, (count - 1).bit_length() + 1)
    return b if b <= 8 else None


def _codebook_candidates(wq, mags):
    """Engine codebooks (pyqinfer.quant) that may hold the quantizer's integer levels, in
    order of preference. ``mags``: the non-negative integer levels (0 included)."""
    from ..quant import apot_codebook, log_codebook, pot_codebook
    nz = [m for m in mags if m]
    scheme = getattr(wq, "scheme", "")
    if scheme == "apot":
        k = getattr(wq, "k", None)
        try:
            yield apot_codebook(wq.bits, construction="repo" if k is None else "paper", k=k or 2, signed=True)
        except (TypeError, ValueError):
            pass
    if scheme == "log" and getattr(wq, "r", 1) == 2:      # base sqrt(2): the half-octave codes
        for lo in range(wq.c_min, wq.c_min - 4, -1):        # lower e_min: term 2^0 present
            b = _signed_bits(wq.c_max - lo + 2)
            if b is not None:
                yield log_codebook(b, e_min=lo, e_max=wq.c_max, base="sqrt2", signed=True)
    if all(m & (m - 1) == 0 for m in nz):                  # one term: 2^e, e in [0, e_max]
        emax = max((m.bit_length() - 1 for m in nz), default=0)
        b = _signed_bits(emax + 2)
        if b is not None:
            if scheme == "log":
                yield log_codebook(b, e_min=0, e_max=emax, base=2, signed=True)
            yield pot_codebook(b, e_min=0, e_max=emax, signed=True)


def _value_codes(cb):
    """{integer level v * 2^shift (rule 'exact'): code} of an engine codebook."""
    from fractions import Fraction
    from ..reference.shiftcodes import terms_shift
    sh = terms_shift(cb, "exact")
    out = {}
    for code in cb.valid_codes():
        v = cb.value(code) * Fraction(2) ** sh
        if v.denominator == 1:
            out[int(v)] = code
    return out


def shift_codes(layer, part=None):
    """The :class:`pyqinfer.quant.ShiftCodes` of a layer with level-set weights (PoT,
    DeepShift-Q, APoT, log), ``[K, OC]`` with ``K = C*KH*KW`` (conv) or ``in_features``:
    codes whose rule-'exact' integers equal the layer's integer weights and whose effective
    scale equals its float32 weight scale, so a shift layer computes the eval form exactly."""
    from ..quant import ShiftCodes
    wq = layer.weight_quant
    if not _is_shift_quantizer(wq):
        raise ExportError(f"{type(wq).__name__} weights are not shift codes")
    part = wq.integer_parts(layer.weight.detach())[0] if part is None else part
    w = _i64(part.w_int)
    mags = sorted({int(v) for v in _i64(wq.ls.ints).tolist()} | {0})
    need = set(mags) | {-m for m in mags}
    cb = table = None
    for cand in _codebook_candidates(wq, mags):
        t = _value_codes(cand)
        if need <= set(t):
            cb, table = cand, t
            break
    if cb is None:
        raise ExportError(f"{wq.scheme} weights with integer levels {mags[:6]}{'...' if len(mags) > 6 else ''} "
                          f"have no pyqinfer shift codebook of at most 8 bits (docs/semantics.md 12.6-12.8)")
    keys = np.array(sorted(table), np.int64)
    vals = np.array([table[k] for k in keys], np.uint8)
    w2 = w.reshape(w.shape[0], -1)
    codes = vals[np.searchsorted(keys, w2)].T                     # [K, OC]
    scale = _f32(part.scale).reshape(-1)
    from ..reference.shiftcodes import terms_shift
    sh = terms_shift(cb, "exact")
    S = np.ldexp(scale.astype(np.float64), sh).astype(np.float32)
    S = S.reshape(()) if S.size == 1 else S
    try:
        sc = ShiftCodes(codes, cb, S)
        s_eff = np.asarray(sc.effective_scale("exact"), np.float32).reshape(-1)
        sc.terms("exact")
    except ValueError as e:
        raise ExportError(f"{wq.scheme} weights as {cb.name} codes: {e}") from None
    if not np.array_equal(s_eff.view(np.uint32), np.broadcast_to(scale, s_eff.shape).view(np.uint32)):
        raise ExportError(f"{wq.scheme} weights: the codebook scale S * 2^-{sh} is not the weight scale {scale}")
    ints, _ = sc.to_integers()
    if not np.array_equal(ints.astype(np.int64), w2.T):          # pragma: no cover - a bug
        raise ExportError(f"{wq.scheme} weights: the shift codes do not decode to the integer weights")
    return sc


class _Exporter:
    def __init__(self, model, domain=False, shift_layers="wide"):
        self.model = model
        self.domain = bool(domain)
        self.shift_layers = shift_layers
        self.b = _Builder()
        self.metadata = {}

    # ------------------------------------------------------------ helpers
    def _scalar_qp(self, base, act, scalar=False):
        s = self.b.const(f"{base}_scale", np.array(act.scale, np.float32), scalar=scalar)
        z = self.b.const(f"{base}_zp", np.array(act.zp, _np_dtype(act.dtype)), scalar=scalar)
        return s, z

    def quantize_input(self, cur, layer, name):
        scale, zp, dtype, lo, hi = _act_qparams(layer.in_quant, f"layer {name!r} input quantizer")
        act = _Act(None, True, scale, zp, dtype, *_container(dtype), cur.ndim)
        s, z = self._scalar_qp(f"{name}_in", act)
        act.name = self.b.node("QuantizeLinear", [cur.name, s, z], f"{name}_quantize")
        # a narrower input range (e.g. 4-bit): clamp(sat8(rne(x / s) + zp), lo, hi) = the quantizer's codes
        return self.clamp(act, lo, hi, f"{name}_in_clip")

    def clamp(self, act, lo, hi, base):
        """Clamp integer codes to [lo, hi] with unchanged qparams: DQ -> Clip -> Q."""
        clo, chi = _container(act.dtype)
        lo, hi = max(lo, clo), min(hi, chi)
        if lo <= clo and hi >= chi:
            return act
        s, z = self._scalar_qp(base, act)
        f = self.b.node("DequantizeLinear", [act.name, s, z], f"{base}_dq")
        rlo = np.float32(np.float32(lo - act.zp) * act.scale)
        rhi = np.float32(np.float32(hi - act.zp) * act.scale)
        c = self.b.node("Clip", [f, self.b.const(f"{base}_min", np.array(rlo, np.float32)),
                                 self.b.const(f"{base}_max", np.array(rhi, np.float32))], f"{base}")
        y = self.b.node("QuantizeLinear", [c, s, z], f"{base}_q")
        return _Act(y, True, act.scale, act.zp, act.dtype, max(lo, act.lo), min(hi, act.hi), act.ndim)

    # ------------------------------------------------------------ layers
    def layer(self, cur, layer, name):
        if not isinstance(layer, (QConv2d, QLinear)):
            raise ExportError(f"{name!r}: {type(layer).__name__} is not supported")
        if layer.requant != "fp32":
            raise ExportError(f"{name!r}: requant mode {layer.requant!r} needs the pyqinfer domain")
        if layer.in_quant is None:
            raise ExportError(f"{name!r}: a layer without input quantizer has no integer form")
        p = layer.integer_params()
        xs, xz, xdt, xlo, xhi = _act_qparams(layer.in_quant, f"layer {name!r} input quantizer",
                                             levels_ok=cur.integer)
        if not cur.integer:
            cur = self.quantize_input(cur, layer, name)
        elif not (np.float32(cur.scale) == xs and cur.zp == xz and cur.dtype == xdt):
            raise ExportError(f"{name!r}: its input quantizer (s={xs}, zp={xz}, {xdt}) differs from the "
                              f"previous layer's output (s={cur.scale}, zp={cur.zp}, {cur.dtype}); "
                              f"prepare() shares them for Sequential models")
        parts = p["parts"]
        out_q = layer.out_quant
        if out_q is not None and hasattr(out_q, "integer_thresholds"):
            if not self.domain:
                raise ExportError(
                    f"{name!r}: threshold activations ({type(out_q).__name__}) become a pyqinfer-domain "
                    f"MultiThreshold on the accumulator (docs/model-format.md section 9); pass "
                    f"pyqinfer_domain=True (needs the pyqinfer-domain importer in pyqinfer.load)")
            if len(parts) != 1:
                raise ExportError(f"{name!r}: threshold activations after a multi-part weight (PWLQ)")
        wide = False
        for j, part in enumerate(parts):
            w = _i64(part.w_int)
            wide = wide or bool(w.min() < -128 or w.max() > (255 if w.min() >= 0 and not part.signed else 127))
        shift = len(parts) == 1 and _is_shift_quantizer(layer.weight_quant)
        if shift and self.domain and (wide or self.shift_layers == "all" or
                                      self._may_saturate(cur, layer, p)):
            return self.shift_layer(cur, layer, name, p)
        if wide:
            raise ExportError(
                f"{name!r}: the weights have integer levels wider than int8"
                + (" (shift codes): export with pyqinfer_domain=True, which writes them as "
                   "pyqinfer.ShiftConv / ShiftMatMul (docs/model-format.md section 9.1)" if shift else
                   ", which no exported op holds"))
        self._check_acc_bits(cur, layer, name, p)
        if out_q is not None and hasattr(out_q, "integer_thresholds"):
            return self.threshold_layer(cur, layer, name, p)
        if len(parts) == 1 and out_q is not None:
            return self.qlinear_layer(cur, layer, name, p)
        return self.float_acc_layer(cur, layer, name, p)

    def _weight_arrays(self, layer, part):
        w = _i64(part.w_int)
        zp = _i64(part.zero_point).reshape(-1)
        scale = _f32(part.scale).reshape(-1)
        oc = w.shape[0]
        signed = bool(part.signed) or w.min() < 0 or zp.min() < 0
        if scale.size not in (1, oc):
            raise ExportError(f"weight scale of size {scale.size} for {oc} output channels")
        bits = part.bits if isinstance(part.bits, int) else 8
        lo4, hi4 = (-8, 7) if signed else (0, 15)
        four = bits <= 4 and w.min() >= lo4 and w.max() <= hi4 and zp.min() >= lo4 and zp.max() <= hi4
        return w, zp, scale, signed, four

    def _per_channel(self, arr, oc):
        """A [OC] constant (scalar when per tensor)."""
        arr = np.asarray(arr).reshape(-1)
        return arr.reshape(()) if arr.size == 1 else arr

    def _out_act(self, out_q, name, ndim):
        ys, yz, ydt, ylo, yhi = _act_qparams(out_q, f"layer {name!r} output quantizer")
        return _Act(None, True, ys, yz, ydt, ylo, yhi, ndim)

    def qlinear_layer(self, cur, layer, name, p):
        part = p["parts"][0]
        w, wzp, wscale, signed, four = self._weight_arrays(layer, part)
        oc = w.shape[0]
        conv = isinstance(layer, QConv2d)
        out = self._out_act(layer.out_quant, name, cur.ndim if conv else 2)
        bias = None if p["bias_int"] is None else _i64(p["bias_int"]).astype(np.int32)
        xs, xz = self._scalar_qp(f"{name}_x", cur)
        ys, yz = self._scalar_qp(f"{name}_y", out)
        wdt = np.int8 if signed else np.uint8
        # ONNX Runtime's QGemm takes uint8 activations only: int8 ones go through a QDQ Gemm group
        qdq = four or (not conv and cur.dtype == "int8")
        if qdq:
            kind = ("INT4" if signed else "UINT4") if four else None
            wq = self.b.const(f"{name}_weight", w, wdt, int4=kind)
            wsc = self.b.const(f"{name}_w_scale", self._per_channel(wscale, oc), np.float32)
            wz = self.b.const(f"{name}_w_zp", self._per_channel(wzp, oc), wdt, int4=kind)
            fx = self.b.node("DequantizeLinear", [cur.name, xs, xz], f"{name}_x_dq")
            fw = self.b.node("DequantizeLinear", [wq, wsc, wz], f"{name}_w_dq", axis=0)
            ins = [fx, fw]
            if bias is not None:
                bsc = (np.float32(cur.scale) * wscale.astype(np.float32)).astype(np.float32)
                bq = self.b.const(f"{name}_bias", bias, np.int32)
                bs = self.b.const(f"{name}_b_scale", self._per_channel(bsc, oc), np.float32)
                bz = self.b.const(f"{name}_b_zp", np.zeros(np.shape(self._per_channel(bsc, oc)), np.int32))
                ins.append(self.b.node("DequantizeLinear", [bq, bs, bz], f"{name}_b_dq", axis=0))
            if conv:
                z = self.b.node("Conv", ins, name, **layer.op_attributes())
            else:
                z = self.b.node("Gemm", ins, name, transB=1)
            out.name = self.b.node("QuantizeLinear", [z, ys, yz], f"{name}_q")
        else:
            wq = self.b.const(f"{name}_weight", w, wdt)
            wsc = self.b.const(f"{name}_w_scale", self._per_channel(wscale, oc), np.float32)
            wz = self.b.const(f"{name}_w_zp", self._per_channel(wzp, oc), wdt)
            if conv:
                ins = [cur.name, xs, xz, wq, wsc, wz, ys, yz]
                if bias is not None:
                    ins.append(self.b.const(f"{name}_bias", bias, np.int32))
                out.name = self.b.node("QLinearConv", ins, name, **layer.op_attributes())
            else:
                c = self.b.const(f"{name}_bias", bias if bias is not None else np.zeros(oc, np.int32), np.int32)
                out.name = self.b.node("QGemm", [cur.name, xs, xz, wq, wsc, wz, c, ys, yz], name,
                                       domain=MS, transB=1, alpha=1.0)
        if layer.acc_bits is not None and self._acc_bound(cur, w, wzp, bias, conv, dtype_range=True) \
                <= 2 ** (layer.acc_bits - 1) - 1:
            # a verified declaration (pyqinfer.load checks the bound over the container range,
            # docs/model-format.md 9.4); when only the quantizer's narrower range proves it, it is
            # not written (the eval form's saturation is the identity either way)
            self.metadata[f"pyqinfer.acc_bits:{name}"] = str(layer.acc_bits)
        lo = max(out.lo, out.zp) if layer.activation == "relu" else out.lo
        return self.clamp(out, lo, out.hi, f"{name}_clip")

    def _acc_bound(self, cur, w, wzp, bias, conv, dtype_range=False):
        """max over channels of max|x - zx| * sum|w - zw| + |bias|; x in the quantizer's value range
        (what the eval form sees), or with ``dtype_range`` the container's (semantics 2.2, what
        pyqinfer.load verifies for a declared acc_bits)."""
        lo, hi = _container(cur.dtype) if dtype_range else (cur.lo, cur.hi)
        xmax = max(cur.zp - lo, hi - cur.zp)
        wd = np.abs(w.reshape(w.shape[0], -1) - wzp.reshape(-1, 1) if wzp.size > 1 else
                    w.reshape(w.shape[0], -1) - wzp.reshape(()))
        b = np.zeros(w.shape[0]) if bias is None else np.abs(bias.astype(np.float64))
        return float(np.max(xmax * wd.sum(1).astype(np.float64) + b))

    def float_acc_layer(self, cur, layer, name, p):
        conv = isinstance(layer, QConv2d)
        parts = p["parts"]
        oc = parts[0].w_int.shape[0]
        shape = [1, oc, 1, 1] if conv else [oc]
        bias = None if p["bias_int"] is None else _i64(p["bias_int"])
        out_q = layer.out_quant
        if out_q is not None:
            out = self._out_act(out_q, name, cur.ndim if conv else 2)
        total = None
        for j, part in enumerate(parts):
            w, wzp, wscale, signed, _ = self._weight_arrays(layer, part)
            bnd = self._acc_bound(cur, w, wzp, bias if j == 0 else None, conv)
            if bnd >= FLOAT_ACC_LIMIT:
                raise ExportError(
                    f"{name!r}: weight part {j}'s accumulator can reach {bnd:.0f} >= 2^24, so its float32 form "
                    f"is not exact; this layer needs the pyqinfer domain (multi-part accumulators) or an "
                    f"output quantizer with a single weight part")
            acc = self.integer_acc(cur, layer, name, w, wzp, np.int8 if signed else np.uint8, f"_p{j}")
            f = self.b.node("Cast", [acc], f"{name}_p{j}_cast", to=1)
            if j == 0 and bias is not None:
                f = self.b.node("Add", [f, self.b.const(f"{name}_bias_f", bias.astype(np.float32).reshape(shape))],
                                f"{name}_bias_add")
            sx = torch.tensor(float(cur.scale), dtype=torch.float32)
            if out_q is not None:
                fac = effective_scale(sx, part.scale, torch.tensor(float(out.scale), dtype=torch.float32))
            else:
                fac = bias_scale(sx, part.scale)
            fac = _f32(fac).reshape(-1)
            fac = fac.reshape(()) if fac.size == 1 else fac.reshape(shape)
            t = self.b.node("Mul", [f, self.b.const(f"{name}_p{j}_factor", fac, np.float32)], f"{name}_p{j}_scale")
            total = t if total is None else self.b.node("Add", [total, t], f"{name}_p{j}_sum")
        if out_q is None:
            return self._fused_relu_float(_Act(total, False, ndim=cur.ndim if conv else 2), layer, name)
        lo = max(out.lo, out.zp) if layer.activation == "relu" else out.lo
        c = self.b.node("Clip", [total, self.b.const(f"{name}_min", np.array(lo - out.zp, np.float32)),
                                 self.b.const(f"{name}_max", np.array(out.hi - out.zp, np.float32))],
                        f"{name}_clip")
        one = self.b.const(f"{name}_unit_scale", np.array(1.0, np.float32))
        z = self.b.const(f"{name}_y_zp", np.array(out.zp, _np_dtype(out.dtype)))
        out.name = self.b.node("QuantizeLinear", [c, one, z], f"{name}_q")
        out.lo = lo
        return out

    def _bounds(self, cur, p):
        """The static accumulator bound (semantics 2.2 / 12.3) of each weight part (bias with part 0)."""
        bias = None if p["bias_int"] is None else _i64(p["bias_int"])
        out = []
        for j, part in enumerate(p["parts"]):
            w, wzp = _i64(part.w_int), _i64(part.zero_point).reshape(-1)
            out.append(self._acc_bound(cur, w, wzp, bias if j == 0 else None, None))
        return out

    def _may_saturate(self, cur, layer, p):
        W = layer.acc_bits
        return W is not None and max(self._bounds(cur, p)) > 2 ** (W - 1) - 1

    def _check_acc_bits(self, cur, layer, name, p):
        """Standard ops never saturate: a declared acc_bits must be proven to hold every accumulator
        (pyqinfer.load verifies it again for the QLinear ops); then the saturation is the identity."""
        W = layer.acc_bits
        if W is None:
            return
        bnd = max(self._bounds(cur, p))
        if bnd > 2 ** (W - 1) - 1:
            hint = ("export with pyqinfer_domain=True: a pyqinfer.ShiftConv / ShiftMatMul saturates to acc_bits"
                    if _is_shift_quantizer(layer.weight_quant) and len(p["parts"]) == 1 else
                    "only the pyqinfer-domain shift layers (PoT/APoT/log/DeepShift weights) saturate")
            raise ExportError(f"{name!r}: the declared acc_bits={W} can saturate (accumulator bound {bnd:.0f} > "
                              f"2^{W - 1} - 1), and a standard op's acc_bits is a verified declaration that never "
                              f"saturates; {hint}")

    def shift_layer(self, cur, layer, name, p):
        """pyqinfer.ShiftConv / ShiftMatMul (docs/model-format.md 9.1): the level-set weights as shift
        codes, rule 'exact', the layer's acc_bits (int32 wraps in the eval form, so without acc_bits the
        accumulator must provably fit int32), fp32 requantization with the fused clamp."""
        from ..frontends.pyqinfer_domain import make_shift_node
        conv = isinstance(layer, QConv2d)
        part = p["parts"][0]
        if conv and not 1 <= layer.groups <= SHIFT_CONV_MAX_GROUP:
            raise ExportError(f"{name!r}: pyqinfer.ShiftConv takes group 1..{SHIFT_CONV_MAX_GROUP} (ONNX Conv's "
                              f"meaning: grouped and depthwise convolutions, docs/model-format.md 9.1), the layer "
                              f"has groups={layer.groups}")
        codes = shift_codes(layer, part)
        bias = None if p["bias_int"] is None else _i64(p["bias_int"]).astype(np.int32)
        bnd = max(self._bounds(cur, p))
        if layer.acc_bits is None and bnd > 2 ** 31 - 1:
            raise ExportError(f"{name!r}: the accumulator can reach {bnd:.0f}, beyond int32: the eval form wraps "
                              f"and a shift layer saturates; declare acc_bits in the layer config")
        if bnd >= 2 ** 53:
            raise ExportError(f"{name!r}: the accumulator bound {bnd:.0f} >= 2^53: the float64 eval form is not exact")
        attrs = {"rule": "exact", "acc_bits": 32 if layer.acc_bits is None else int(layer.acc_bits), "mode": "fp32"}
        if conv:
            attrs.update(layer.op_attributes())        # strides, pads, dilations, group, kernel_shape
        out_q = layer.out_quant
        thresh = out_q is not None and hasattr(out_q, "integer_thresholds")
        ndim = cur.ndim if conv else 2
        kw = dict(conv=conv, w_shape=list(part.w_int.shape) if conv else None, x_scale=np.float32(cur.scale),
                  x_zero_point=np.array(cur.zp, _np_dtype(cur.dtype)), bias=bias)
        out = None
        if out_q is not None and not thresh:
            out = self._out_act(out_q, name, ndim)
            lo = max(out.lo, out.zp) if layer.activation == "relu" else out.lo
            if (lo, out.hi) != _container(out.dtype):
                attrs["clip"] = [int(lo), int(out.hi)]
            out.lo = lo
            kw.update(y_scale=np.float32(out.scale), y_zero_point=np.array(out.zp, _np_dtype(out.dtype)))
        y = self.b.fresh(name)
        node, inits = make_shift_node(y, codes, cur.name, y, **kw, **attrs)
        for t in inits:
            if t.name in self.b.names:
                raise ExportError(f"{name!r}: initializer name {t.name!r} is taken")   # pragma: no cover
            self.b.names.add(t.name)
        self.b.nodes.append(node)
        self.b.inits.extend(inits)
        self.b.used_pq = True
        if out is not None:
            out.name = y
            return out
        if thresh:                     # the bias is already in the accumulator
            return self.threshold_layer(cur, layer, name, p, acc=y)
        f = self.b.node("Cast", [y], f"{name}_cast", to=1)       # int32 -> float32 (RNE), as the eval form
        sx = torch.tensor(float(cur.scale), dtype=torch.float32)
        fac = _f32(bias_scale(sx, part.scale)).reshape(-1)
        fac = fac.reshape(()) if fac.size == 1 else fac.reshape([1, -1, 1, 1] if conv else [-1])
        z = self.b.node("Mul", [f, self.b.const(f"{name}_factor", fac, np.float32)], f"{name}_scale")
        return self._fused_relu_float(_Act(z, False, ndim=ndim), layer, name)

    def _fused_relu_float(self, act, layer, name):
        """A layer without output quantizer returns float32; its fused ReLU (the eval form's
        ``clamp_min(out, 0)``) is an ONNX ``Relu`` on that float32 output, exact (max with 0)."""
        if layer.activation != "relu":
            return act
        return _Act(self.b.node("Relu", [act.name], f"{name}_relu"), False, ndim=act.ndim)

    def integer_acc(self, cur, layer, name, w, wzp, wdt, tag):
        """ConvInteger / MatMulInteger: the int32 accumulator without bias."""
        xz_name = self.b.const(f"{name}{tag}_x_zp", np.array(cur.zp, _np_dtype(cur.dtype)))
        # ONNX Runtime's ConvInteger takes only a per-tensor weight zero point
        wzc = wzp.reshape(-1)[:1] if np.all(wzp == wzp.reshape(-1)[0]) else wzp
        oc = w.shape[0]
        if isinstance(layer, QConv2d):
            wq = self.b.const(f"{name}{tag}_weight", w, wdt)
            wz = self.b.const(f"{name}{tag}_w_zp", self._per_channel(wzc, oc), wdt)
            return self.b.node("ConvInteger", [cur.name, wq, xz_name, wz], f"{name}{tag}", **layer.op_attributes())
        wq = self.b.const(f"{name}{tag}_weight", w.T, wdt)
        wz = self.b.const(f"{name}{tag}_w_zp", self._per_channel(wzc, oc), wdt)
        return self.b.node("MatMulInteger", [cur.name, wq, xz_name, wz], f"{name}{tag}")

    def threshold_layer(self, cur, layer, name, p, acc=None):
        """pyqinfer.MultiThreshold on the int32 accumulator (docs/model-format.md 9.2): the layer's
        count #{j : acc + bias >= T[c, j]} is #{j : acc >= T[c, j] - bias[c]}, then the level lookup.
        ``acc``: an accumulator that already holds the bias (a shift layer's int32 output)."""
        part = p["parts"][0]
        w, wzp, wscale, signed, _ = self._weight_arrays(layer, part)
        bias = None if p["bias_int"] is None else _i64(p["bias_int"])
        bnd = self._acc_bound(cur, w, wzp, bias, isinstance(layer, QConv2d))
        if bnd > 2 ** 31 - 1 and layer.acc_bits is None:
            raise ExportError(f"{name!r}: the accumulator can reach {bnd:.0f}, beyond int32 (it would wrap)")
        oq = layer.out_quant
        sx = torch.tensor(float(cur.scale), dtype=torch.float32)
        T = oq.integer_thresholds(sx, part.scale, relu=layer.activation == "relu").to(torch.float64).numpy()
        T = T.reshape(-1, T.shape[-1])
        if bias is not None and acc is None:
            T = T - bias.reshape(-1, 1).astype(np.float64)
        # thresholds beyond the int32 range are always / never reached: clamp them to the same effect
        T = np.clip(T, -(2.0 ** 32), 2.0 ** 32).astype(np.int64)
        if acc is None:
            acc = self.integer_acc(cur, layer, name, w, wzp, np.int8 if signed else np.uint8, "_acc")
        levels = _i64(oq.level_codes())
        ins = [acc, self.b.const(f"{name}_thresholds", T, np.int64)]
        attrs = {"data_layout": "NCHW"}
        if np.array_equal(levels, np.arange(levels.size)):
            attrs["out_dtype"] = "uint8"
        else:
            ins.append(self.b.const(f"{name}_levels", levels.reshape(1, -1), np.uint8))
        ys, yz, ydt, ylo, yhi = _act_qparams(oq, f"layer {name!r} output quantizer", levels_ok=True)
        y = self.b.node("MultiThreshold", ins, name, domain=PQ, **attrs)
        return _Act(y, True, ys, 0, "uint8", ylo, yhi, cur.ndim if isinstance(layer, QConv2d) else 2)

    # ------------------------------------------------------------ weightless quantized ops
    def _operand(self, cur, q, on_grid, base, what):
        """An operand of a QAdd / pool / concat as integer codes of its quantizer ``q``: a float
        value is quantized (QuantizeLinear, then the quantizer's narrower range); an integer one
        must already carry q's parameters (prepare shares the producer's quantizer)."""
        scale, zp, dtype, lo, hi = _act_qparams(q, f"{what} quantizer")
        if not cur.integer:
            act = _Act(None, True, scale, zp, dtype, *_container(dtype), cur.ndim)
            s, z = self._scalar_qp(f"{base}_in", act)
            act.name = self.b.node("QuantizeLinear", [cur.name, s, z], f"{base}_quantize")
            return self.clamp(act, lo, hi, f"{base}_in_clip")
        if not (np.float32(cur.scale) == scale and cur.zp == zp and cur.dtype == dtype):
            raise ExportError(f"{what}: its quantizer (s={scale}, zp={zp}, {dtype}) differs from the producer's "
                              f"output (s={cur.scale}, zp={cur.zp}, {cur.dtype})")
        return cur

    def qop(self, curs, m, name):
        from .qops import QAdd, QAvgPool2d, QConcat, QGlobalAvgPool
        ins = [self._operand(c, q, on, f"{name}_x{i}" if len(curs) > 1 else name, f"{name!r} input {i}")
               for i, (c, q, on) in enumerate(zip(curs, m.in_quants, m.inputs_on_grid))]
        out = self._out_act(m.out_quant, name, None)
        for i, a in enumerate(ins):
            if a.dtype != out.dtype:
                raise ExportError(f"{name!r}: input {i} is {a.dtype} and the output {out.dtype}; "
                                  f"{m.op_name} takes one dtype (make the quantizers' 'signed' agree)")
        ys, yz = self._scalar_qp(f"{name}_y", out, True)
        if isinstance(m, QAdd):
            (sa, za), (sb, zb) = (self._scalar_qp(f"{name}_a", ins[0], True), self._scalar_qp(f"{name}_b", ins[1], True))
            out.name = self.b.node("QLinearAdd", [ins[0].name, sa, za, ins[1].name, sb, zb, ys, yz], name, domain=MS)
            nd = [a.ndim for a in ins]
            out.ndim = None if None in nd else max(nd)
        elif isinstance(m, QGlobalAvgPool):
            xs, xz = self._scalar_qp(f"{name}_x", ins[0], True)
            if ins[0].ndim != 4:
                raise ExportError(f"{name!r}: global average pool of a rank-{ins[0].ndim} tensor")
            out.name = self.b.node("QLinearGlobalAveragePool", [ins[0].name, xs, xz, ys, yz], name, domain=MS,
                                   channels_last=0)
            out.ndim = 4
        elif isinstance(m, QAvgPool2d):
            xs, xz = self._scalar_qp(f"{name}_x", ins[0], True)
            ph, pw = m.padding
            out.name = self.b.node("QLinearAveragePool", [ins[0].name, xs, xz, ys, yz], name, domain=MS,
                                   kernel_shape=list(m.kernel_size), strides=list(m.stride), pads=[ph, pw, ph, pw],
                                   count_include_pad=int(m.count_include_pad))
            out.ndim = 4
        elif isinstance(m, QConcat):
            args = [ys, yz]
            for i, a in enumerate(ins):
                args += [a.name, *self._scalar_qp(f"{name}_x{i}", a, True)]
            nd = ins[0].ndim
            out.name = self.b.node("QLinearConcat", args, name, domain=MS,
                                   axis=m.dim if m.dim >= 0 or nd is None else m.dim + nd)
            out.ndim = nd
        else:
            raise ExportError(f"{name!r}: {type(m).__name__} is not supported")
        lo = max(out.lo, out.zp) if m.activation == "relu" else out.lo
        out = self.clamp(out, lo, out.hi, f"{name}_clip")
        if isinstance(m, QGlobalAvgPool) and not m.keepdim:
            y = self.b.node("Flatten", [out.name], f"{name}_flatten", axis=1)
            out = _Act(y, True, out.scale, out.zp, out.dtype, out.lo, out.hi, 2)
        return out

    # ------------------------------------------------------------ glue
    def maxpool(self, cur, m, name):
        def pair(v):
            return list(v) if isinstance(v, (tuple, list)) else [v, v]
        k = pair(m.kernel_size)
        s = pair(m.stride if m.stride is not None else m.kernel_size)
        pd = pair(m.padding)
        d = pair(m.dilation)
        if m.return_indices:
            raise ExportError(f"{name!r}: MaxPool2d(return_indices=True) is not supported")
        attrs = {"kernel_shape": k, "strides": s, "pads": [pd[0], pd[1], pd[0], pd[1]]}
        if d != [1, 1]:
            attrs["dilations"] = d
        if m.ceil_mode:
            attrs["ceil_mode"] = 1
        y = self.b.node("MaxPool", [cur.name], name, **attrs)
        return _Act(y, cur.integer, cur.scale, cur.zp, cur.dtype, cur.lo, cur.hi, cur.ndim)

    def flatten(self, cur, m, name):
        if m.start_dim != 1 or m.end_dim != -1:
            raise ExportError(f"{name!r}: only nn.Flatten(start_dim=1, end_dim=-1) is supported")
        y = self.b.node("Flatten", [cur.name], name, axis=1)
        return _Act(y, cur.integer, cur.scale, cur.zp, cur.dtype, cur.lo, cur.hi, 2)

    def relu(self, cur, name):
        if not cur.integer:
            return _Act(self.b.node("Relu", [cur.name], name), False, ndim=cur.ndim)
        return self.clamp(cur, cur.zp, cur.hi, name)


def _walk_graph(ex, gm, inp):
    """Emit a graph-mode model (a ``torch.fx.GraphModule`` from ``prepare``) node by node in the
    graph's (topological) order. Returns (the output act, whether a quantized layer was seen)."""
    from .graph import _arg, describe, node_kind
    modules = dict(gm.named_modules())
    env, seen_layer, out = {}, False, None
    for node in gm.graph.nodes:
        kind = node_kind(node, modules)
        base = node.target.replace(".", "_") if node.op == "call_module" else node.name

        def arg(i):
            a = node.args[i]
            if not isinstance(a, torch.fx.Node) or a not in env:
                raise ExportError(f"{describe(node, modules)}: argument {i} is not a tensor of the graph")
            return env[a]
        if kind == "input":
            if env:
                raise ExportError(f"{describe(node, modules)}: export takes a model with one input")
            env[node] = inp
        elif kind == "output":
            res = node.args[0]
            if not isinstance(res, torch.fx.Node):
                raise ExportError(f"{describe(node, modules)}: export takes a model with one tensor output, "
                                  f"got {type(res).__name__}")
            out = env[res]
        elif kind == "qlayer":
            env[node] = ex.layer(arg(0), modules[node.target], base)
            seen_layer = True
        elif kind == "qop":
            env[node] = ex.qop([arg(i) for i in range(len(node.args))], modules[node.target], base)
        elif kind == "relu":
            env[node] = ex.relu(arg(0), base)
        elif kind == "identity":
            env[node] = arg(0)
        elif kind == "flatten":
            cur = arg(0)
            if cur.ndim is None or cur.ndim < 2:
                raise ExportError(f"{describe(node, modules)}: flatten of a tensor of rank {cur.ndim}")
            y = ex.b.node("Flatten", [cur.name], base, axis=1)
            env[node] = _Act(y, cur.integer, cur.scale, cur.zp, cur.dtype, cur.lo, cur.hi, 2)
        elif kind == "maxpool":
            if node.op == "call_module":
                m = modules[node.target]
            else:
                m = nn.MaxPool2d(_arg(node, 1, "kernel_size"), _arg(node, 2, "stride"), _arg(node, 3, "padding", 0),
                                 _arg(node, 4, "dilation", 1), _arg(node, 6, "return_indices", False),
                                 _arg(node, 5, "ceil_mode", False))
            env[node] = ex.maxpool(arg(0), m, base)
        else:
            what = {"layer": "an unprepared Conv2d / Linear: prepare() the model first",
                    "bn": "a BatchNorm: fold it (fold_bn_graph) and prepare() the model"}.get(
                kind, "not supported by the exporter" if kind is None else
                f"a float {kind} (prepare() turns it into a quantized op)")
            raise ExportError(f"{describe(node, modules)}: {what}")
    return out, seen_layer


def _leaves(model, prefix=""):
    """Modules in registration order, a quantized layer counting as one leaf."""
    if isinstance(model, _QLayer) or not list(model.children()):
        return [(prefix or "0", model)]
    out = []
    for n, m in model.named_children():
        out += _leaves(m, f"{prefix}.{n}" if prefix else n)
    return out


def export(model, example_input, path=None, *, input_name="x", output_name="y", dynamic_batch=True,
           check=True, doc_string=None, pyqinfer_domain=False, shift_layers="wide"):
    """Write ``model`` (prepared with :func:`pyqinfer.train.prepare`, calibrated or
    trained) as an ONNX model whose :func:`pyqinfer.load` run equals ``model.eval()``'s
    output element for element.

    ``model``: a Sequential-like module (children applied in registration order) of
    ``QConv2d`` / ``QLinear`` (ReLU fused by ``prepare``), ``nn.MaxPool2d``,
    ``nn.Flatten``, ``nn.Identity``, ``nn.Dropout`` and ``nn.ReLU``; or a graph-mode
    model (the ``torch.fx.GraphModule`` that ``prepare`` returns for residual / concat
    models), walked node by node in topological order, which adds ``QAdd``
    (``com.microsoft.QLinearAdd``), ``QGlobalAvgPool`` (``QLinearGlobalAveragePool``),
    ``QAvgPool2d`` (``QLinearAveragePool``) and ``QConcat`` (``QLinearConcat``).
    ``example_input``: a float tensor of the input shape (the batch dimension becomes
    ``"N"`` when ``dynamic_batch``). ``path``: where to save (None: only return).
    ``check``: load the exported model with pyqinfer and compare it with the eval-mode
    model on ``example_input`` (RuntimeError on any difference).
    ``pyqinfer_domain``: allow the ``pyqinfer`` ONNX domain (docs/model-format.md 9):
    threshold activations as ``MultiThreshold``, PoT/APoT/log/DeepShift-Q weights as
    ``ShiftConv`` / ``ShiftMatMul``. ``shift_layers`` (with ``pyqinfer_domain``): ``"wide"``
    writes only the level-set layers whose integer weights do not fit int8 (or whose
    declared ``acc_bits`` can saturate) as shift layers, the others as int8 standard ops;
    ``"all"`` writes every level-set layer as a shift layer.

    Returns the ``onnx.ModelProto``. Raises :class:`ExportError` (a
    ``NotImplementedError``) naming the layer and the missing piece for what the
    format cannot express exactly yet.
    """
    import onnx
    from onnx import TensorProto, helper

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor) or not example_input.is_floating_point():
        raise TypeError("example_input must be a float torch.Tensor")
    if shift_layers not in ("wide", "all"):
        raise ValueError(f"shift_layers must be 'wide' or 'all', got {shift_layers!r}")
    was_training = model.training
    model.eval()
    try:
        ex = _Exporter(model, pyqinfer_domain, shift_layers)
        x = example_input.detach().to(torch.float32)
        with torch.no_grad():
            ref = model(x)            # also initialises quantizers that set themselves on first use
        cur = _Act(input_name, False, ndim=x.dim())
        ex.b.names.add(input_name)
        seen_layer = False
        if isinstance(model, torch.fx.GraphModule):
            cur, seen_layer = _walk_graph(ex, model, cur)
        for name, m in ([] if isinstance(model, torch.fx.GraphModule) else _leaves(model)):
            base = name.replace(".", "_")
            if isinstance(m, _QLayer):
                cur = ex.layer(cur, m, base)
                seen_layer = True
            elif isinstance(m, nn.MaxPool2d):
                cur = ex.maxpool(cur, m, base)
            elif isinstance(m, nn.Flatten):
                cur = ex.flatten(cur, m, base)
            elif isinstance(m, nn.ReLU):
                cur = ex.relu(cur, base)
            elif isinstance(m, (nn.Identity, nn.Dropout)):
                continue
            else:
                raise ExportError(f"{name!r}: {type(m).__name__} is not supported by the exporter "
                                  f"(QConv2d, QLinear, MaxPool2d, Flatten, ReLU, Identity, Dropout)")
        if not seen_layer:
            raise ExportError("the model has no QConv2d / QLinear layer: prepare() it first")
        if cur.integer:
            s, z = ex._scalar_qp("output", cur)
            ex.b.nodes.append(helper.make_node("DequantizeLinear", [cur.name, s, z], [output_name],
                                               name="output_dequantize"))
        else:
            ex.b.nodes.append(helper.make_node("Identity", [cur.name], [output_name], name="output"))
        shape = list(x.shape)
        in_shape = (["N"] + shape[1:]) if dynamic_batch else shape
        out_shape = [in_shape[0]] + list(ref.shape[1:])
        graph = helper.make_graph(
            ex.b.nodes, "pyqinfer_export",
            [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, out_shape)],
            initializer=ex.b.inits)
        opsets = [helper.make_opsetid("", OPSET)]
        if ex.b.used_ms:
            opsets.append(helper.make_opsetid(MS, 1))
        if ex.b.used_pq:
            opsets.append(helper.make_opsetid(PQ, 1))
        proto = helper.make_model(graph, opset_imports=opsets, producer_name="pyqinfer.train.export",
                                  doc_string=doc_string or "")
        proto.ir_version = 10
        if ex.metadata:
            helper.set_model_props(proto, ex.metadata)
        onnx.checker.check_model(proto)
        if check:
            import pyqinfer
            try:
                loaded = pyqinfer.load(proto)
            except pyqinfer.UnsupportedModelError as e:
                if ex.b.used_pq and "domain" in str(e):
                    raise ExportError(f"the exported model uses the pyqinfer ONNX domain, which this "
                                      f"pyqinfer.load does not import yet ({e}); export with check=False "
                                      f"to write it anyway") from None
                raise
            got = loaded.run({input_name: x.numpy()})[output_name]
            want = ref.detach().numpy().astype(np.float32)
            if got.shape != want.shape or not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
                bad = int((got != want).sum()) if got.shape == want.shape else got.size
                raise RuntimeError(f"export check failed: pyqinfer.load(...) differs from the eval-mode model "
                                   f"on {bad} of {want.size} outputs (please report: this is a bug)")
        if path is not None:
            onnx.save(proto, path)
        return proto
    finally:
        model.train(was_training)
