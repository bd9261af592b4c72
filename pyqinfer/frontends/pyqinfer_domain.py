"""Importer of the custom ONNX domain ``pyqinfer`` (opset 1): docs/model-format.md section 9.

``ShiftMatMul`` / ``ShiftConv`` (shift-code weights), ``MultiThreshold``,
``PWLQMatMul``, and the model/node metadata that sets the requantization mode
and the declared accumulator width of standard QLinear ops. Every malformed
node is an :class:`~pyqinfer.graph.UnsupportedModelError` naming it.

:func:`make_shift_node` and :func:`pack_conv_codes` are the exporter side (used
by the tests and by ``pyqinfer.train.export``).
"""
from __future__ import annotations

import numpy as np

from ..graph import UnsupportedModelError
from ..graph.ir import QParams

DOMAIN = "pyqinfer"
VERSION = 1
OPS = ("ShiftMatMul", "ShiftConv", "MultiThreshold", "PWLQMatMul")
SCHEMES = ("pot", "log", "apot")
MODES = ("fp32", "q31", "q31_single", "pot")
_ACT = (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int16), np.dtype(np.int32))
_OUT_DTYPES = ("uint8", "int8", "int16", "int32")


def _u(node, what):
    """UnsupportedModelError naming the node and its (domain-qualified) op type."""
    dom = node.domain or ""
    return UnsupportedModelError(f"node {node.name or '(unnamed)'!r} ({dom + '.' if dom else ''}{node.op_type}): "
                                 f"{what}")


def _attrs(node):
    """Attributes as Python values (strings decoded)."""
    import onnx
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _int_attr(n, a, name, default=None, lo=None, hi=None):
    if name not in a:
        if default is None:
            raise _u(n, f"missing attribute {name!r}")
        return default
    v = a[name]
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
        raise _u(n, f"attribute {name!r} must be an int, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise _u(n, f"attribute {name}={v} is outside [{lo}, {hi}]")
    return int(v)


def _str_attr(n, a, name, choices, default=None):
    if name not in a:
        if default is None:
            raise _u(n, f"missing attribute {name!r}")
        return default
    v = a[name]
    if not isinstance(v, str) or v not in choices:
        raise _u(n, f"attribute {name}={v!r} is not one of {list(choices)}")
    return v


def _inputs(n, count):
    return list(n.input) + [""] * (count - len(n.input))


def _scalar_const(imp, n, name, what, dtype_kind=None):
    if not name:
        return None
    v = imp.const.get(name)
    if v is None:
        raise _u(n, f"{what} ({name!r}) must be a constant (initializer or Constant node)")
    v = np.asarray(v)
    if v.size != 1:
        raise _u(n, f"{what} must be a scalar, got shape {v.shape}")
    if dtype_kind and v.dtype.kind not in dtype_kind:
        raise _u(n, f"{what} has dtype {v.dtype}")
    return v.reshape(())


def _scale(n, v, what):
    v = np.asarray(v, np.float32).reshape(-1)
    if not (np.all(np.isfinite(v)) and np.all(v > 0)):
        raise _u(n, f"{what} must be finite and > 0, got {v[:4]}")
    return v


def _codebook(n, a):
    from ..reference.shiftcodes import apot_codebook, log_codebook, pot_codebook
    scheme = _str_attr(n, a, "scheme", SCHEMES)
    bits = _int_attr(n, a, "bits", None, 2, 8)
    signed = bool(_int_attr(n, a, "signed", 1, 0, 1))
    try:
        if scheme in ("pot", "log"):
            e_max = _int_attr(n, a, "e_max", None, -1000, 1000)
            e_min = _int_attr(n, a, "e_min", e_max, -1000, 1000) if "e_min" in a else None
            zero = bool(_int_attr(n, a, "zero_code", 1, 0, 1))
            if scheme == "pot":
                return pot_codebook(bits, e_max=e_max, e_min=e_min, zero_code=zero, signed=signed)
            base = _str_attr(n, a, "base", ("2", "sqrt2"), "2")
            return log_codebook(bits, e_max=e_max, e_min=e_min, zero_code=zero, signed=signed,
                                base=2 if base == "2" else "sqrt2")
        cons = _str_attr(n, a, "construction", ("paper", "repo"), "paper")
        return apot_codebook(bits, construction=cons, k=_int_attr(n, a, "k", 2, 1, 8), signed=signed)
    except (TypeError, ValueError) as e:
        raise _u(n, f"invalid codebook parameters: {e}") from None


def _activation(imp, n, name, sname, zname, required_scale):
    """(integer input tensor name, dtype): binds A's scale/zero point to the tensor."""
    t = imp.out.tensors.get(name)
    if t is None and name in imp.view:
        raise _u(n, f"input {name!r} is a float tensor (DequantizeLinear output); a shift layer reads integers")
    if t is None:
        raise _u(n, f"input {name!r} is not defined before this node")
    if t.dtype not in _ACT:
        raise _u(n, f"input {name!r} must be uint8, int8, int16 or int32, got {t.dtype}")
    s = _scalar_const(imp, n, sname, "A_scale", "f")
    if s is None and required_scale:
        raise _u(n, "A_scale is required with Y_scale")
    z = _scalar_const(imp, n, zname, "A_zero_point", "iu")
    if z is not None and np.dtype(z.dtype) != t.dtype:
        raise _u(n, f"A_zero_point has dtype {z.dtype} but A is {t.dtype}")
    za = 0 if z is None else int(z)
    if za and t.dtype.itemsize > 1:
        raise _u(n, f"A_zero_point must be 0 for {t.dtype} activations, got {za}")
    if s is None:
        return name, t.dtype, za
    qp = QParams(_scale(n, s, "A_scale"), np.array([za]))
    if t.dtype.itemsize == 1:
        return imp.int_view(n, name, qp, "A"), t.dtype, za
    if t.quant is not None and not t.quant.same(qp):
        raise _u(n, f"input {name!r} already has other quantization parameters")
    t.quant = qp
    return name, t.dtype, za


def _output(imp, n, yname, sname, zname):
    """Declare Y; returns True for a requantized (8-bit) output, False for int32."""
    if not sname:
        if zname:
            raise _u(n, "Y_zero_point without Y_scale")
        imp.tensor(yname, np.int32)
        return False
    s = _scale(n, _scalar_const(imp, n, sname, "Y_scale", "f"), "Y_scale")
    z = _scalar_const(imp, n, zname, "Y_zero_point", "iu") if zname else np.uint8(0)
    dt = np.dtype(np.asarray(z).dtype)
    if dt not in (np.uint8, np.int8):
        raise _u(n, f"Y_zero_point must be uint8 or int8, got {dt}")
    imp.tensor(yname, dt, QParams(s, np.array([int(z)])))
    return True


def _clip(n, a, ydt):
    if "clip" not in a:
        return None
    c = list(a["clip"])
    info = np.iinfo(ydt) if ydt is not None else None
    if len(c) != 2 or c[0] > c[1] or (info is not None and (c[0] < info.min or c[1] > info.max)):
        raise _u(n, f"attribute clip={c} must be [lo, hi] with lo <= hi inside the output range")
    if ydt is None:
        raise _u(n, "attribute clip needs a requantized output (Y_scale)")
    return (int(c[0]), int(c[1]))


def _codes(imp, n, name, shape, cb, scale):
    from .. import quant
    p = imp.const.get(name)
    if p is None:
        raise _u(n, f"W_codes ({name!r}) must be an initializer")
    p = np.asarray(p)
    if p.dtype != np.uint8 or p.ndim != 1:
        raise _u(n, f"W_codes must be a 1-D uint8 tensor, got {p.dtype}{list(p.shape)}")
    count = int(np.prod(shape))
    need = (count * cb.bits + 7) // 8
    if p.size != need:
        raise _u(n, f"W_codes has {p.size} bytes; {count} codes of {cb.bits} bits need {need}")
    try:
        return quant.unpack(p, shape, cb, scale)
    except (TypeError, ValueError) as e:
        raise _u(n, f"W_codes: {e}") from None


def _shift(imp, n, conv):
    a = _attrs(n)
    ins = _inputs(n, 8)
    cb = _codebook(n, a)
    rule = _str_attr(n, a, "rule", ("exact", "deepshift"), "exact")
    acc_bits = _int_attr(n, a, "acc_bits", 32, 8, 32)
    mode = _str_attr(n, a, "mode", MODES, "fp32")
    if "w_shape" not in a:
        raise _u(n, "missing attribute 'w_shape'")
    w_shape = [int(v) for v in a["w_shape"]]
    if len(w_shape) != (4 if conv else 2) or min(w_shape) < 1:
        raise _u(n, f"attribute w_shape={w_shape} must be {'[OC, C/group, KH, KW]' if conv else '[K, N]'} "
                    f"(positive)")
    N = w_shape[0] if conv else w_shape[1]
    if not ins[3]:
        raise _u(n, "missing input W_codes")
    if not ins[4] or ins[4] not in imp.const:
        raise _u(n, "W_scale must be a constant initializer")
    S = np.asarray(imp.const[ins[4]])
    if S.dtype != np.float32 or S.size not in (1, N) or (S.size > 1 and S.ndim != 1):
        raise _u(n, f"W_scale must be float32, a scalar or [{N}], got {S.dtype}{list(S.shape)}")
    S = _scale(n, S, "W_scale")
    Sarg = S.reshape(()) if S.size == 1 else S
    if conv:
        OC = w_shape[0]
        raw = _codes(imp, n, ins[3], w_shape, cb, 1.0)
        from ..quant import ShiftCodes
        codes = ShiftCodes(raw.codes.reshape(OC, -1).T, cb, Sarg)          # [K = C*KH*KW, OC]
    else:
        codes = _codes(imp, n, ins[3], w_shape, cb, Sarg)
    try:
        signs, exps, _ = codes.terms(rule)
        s_eff = np.asarray(codes.effective_scale(rule), np.float32).reshape(-1)
    except (TypeError, ValueError) as e:
        raise _u(n, f"codes cannot be used with rule {rule!r}: {e}") from None
    if conv:
        T = signs.shape[0]
        OC, C, KH, KW = w_shape
        signs = np.ascontiguousarray(signs.reshape(T, C, KH, KW, OC).transpose(0, 4, 1, 2, 3))
        exps = np.ascontiguousarray(exps.reshape(T, C, KH, KW, OC).transpose(0, 4, 1, 2, 3))
    bias = None
    if ins[5]:
        bias = imp.const.get(ins[5])
        if bias is None or np.asarray(bias).dtype != np.int32 or np.asarray(bias).size != N:
            raise _u(n, f"B must be an int32 initializer with {N} values")
        bias = np.ascontiguousarray(np.asarray(bias).reshape(-1))
    x, xdt, za = _activation(imp, n, ins[0], ins[1], ins[2], bool(ins[6]))
    if rule == "deepshift" and (xdt == np.uint8 or za):
        raise _u(n, "rule 'deepshift' needs signed activations with zero point 0")
    y = n.output[0]
    requant = _output(imp, n, y, ins[6], ins[7])
    clip = _clip(n, a, imp.out.tensors[y].dtype if requant else None)
    if requant:
        from .. import _core
        xs = float(imp.out.tensors[x].quant.scale[0])
        try:
            _core.derive_requant(mode, xs, np.ascontiguousarray(s_eff), float(imp.out.tensors[y].quant.scale[0]),
                                 N)
        except ValueError as e:
            raise _u(n, f"requantization mode {mode!r}: {e}") from None
    # A_zero_point as an attribute too: without A_scale the tensor carries no quantization
    # parameters, and the zero point must not be lost (an int32-output layer needs no scale)
    attrs = {"rule": rule, "acc_bits": acc_bits, "mode": mode, "clip": clip, "bits": cb.bits,
             "scheme": f"{cb.name} {cb.bits}-bit", "a_zero_point": za}
    if conv:
        ks = list(a.get("kernel_shape", w_shape[2:]))
        if ks != w_shape[2:]:
            raise _u(n, f"kernel_shape {ks} does not match w_shape {w_shape}")
        group = _int_attr(n, a, "group", 1, 1, 1 << 16)
        if w_shape[0] % group:
            raise _u(n, f"group={group} does not divide the {w_shape[0]} output channels of w_shape {w_shape}")
        xshape = imp.out.tensors[x].shape
        if xshape is not None and len(xshape) == 4 and isinstance(xshape[1], (int, np.integer)) \
                and int(xshape[1]) != group * w_shape[1]:
            raise _u(n, f"input {x!r} has {xshape[1]} channels but group={group} with w_shape {w_shape} "
                        f"needs {group * w_shape[1]} (group * w_shape[1])")
        attrs["group"] = group
        if a.get("auto_pad", "NOTSET") != "NOTSET":
            raise _u(n, "auto_pad is not supported; give explicit pads")
        for nm, dflt, ln, lo in (("strides", [1, 1], 2, 1), ("dilations", [1, 1], 2, 1), ("pads", [0, 0, 0, 0], 4, 0)):
            v = list(a.get(nm, dflt))
            if len(v) != ln or min(v) < lo or max(v) > 1 << 16:
                raise _u(n, f"attribute {nm}={v} is invalid (need {ln} values in [{lo}, 65536])")
            attrs[nm] = v
    imp.emit("ShiftConv" if conv else "ShiftMatMul", n.name or y, [x], [y], attrs,
             {"signs": signs, "exponents": exps, "w_scale": s_eff, "bias": bias})


def _multi_threshold(imp, n):
    a = _attrs(n)
    ins = _inputs(n, 3)
    x = ins[0]
    t = imp.out.tensors.get(x)
    if t is None:
        if x in imp.view:
            imp.tensor(x, np.float32)          # materialized as a DequantizeLinear at the end
            t = imp.out.tensors[x]
        else:
            raise _u(n, f"input {x!r} is not defined before this node")
    T = imp.const.get(ins[1]) if ins[1] else None
    if T is None:
        raise _u(n, "thresholds must be a constant initializer")
    T = np.asarray(T)
    if T.ndim != 2 or T.dtype.kind not in "fiu" or (T.dtype.kind == "f" and np.isnan(T).any()):
        raise _u(n, f"thresholds must be a real [C, B] or [1, B] tensor without NaN, got {T.dtype}{list(T.shape)}")
    lut = None
    if ins[2]:
        lut = imp.const.get(ins[2])
        if lut is None:
            raise _u(n, "lut must be a constant initializer")
        lut = np.asarray(lut)
        if lut.ndim != 2 or lut.shape[1] != T.shape[1] + 1:
            raise _u(n, f"lut must have shape [C or 1, {T.shape[1] + 1}], got {list(lut.shape)}")
        if any(k in a for k in ("out_scale", "out_bias", "out_dtype")):
            raise _u(n, "lut excludes out_scale, out_bias and out_dtype")
    layout = _str_attr(n, a, "data_layout", ("NCHW", "NHWC"), "NCHW")
    odt = a.get("out_dtype", "") or None
    if odt is not None and odt not in _OUT_DTYPES:
        raise _u(n, f"attribute out_dtype={odt!r} is not one of {list(_OUT_DTYPES)}")
    osc, obi = a.get("out_scale"), a.get("out_bias")
    for nm, v in (("out_scale", osc), ("out_bias", obi)):
        if v is not None and (not np.isfinite(v) or (odt is not None and float(v) != int(v))):
            raise _u(n, f"attribute {nm}={v} must be finite (an integer for an integer out_dtype)")
    y = n.output[0]
    ydt = lut.dtype if lut is not None else (np.dtype(odt) if odt else np.dtype(np.float32))
    imp.tensor(y, ydt)
    imp.emit("MultiThreshold", n.name or y, [x], [y],
             {"data_layout": layout, "out_scale": osc, "out_bias": obi,
              "out_dtype": odt if lut is None else None, "source": "pyqinfer.MultiThreshold"},
             {"thresholds": T.astype(np.int64) if T.dtype.kind in "iu" else T.astype(np.float64),
              "sign": None, "lut": lut})


def _pwlq(imp, n):
    a = _attrs(n)
    ins = _inputs(n, 9)
    bits = _int_attr(n, a, "bits", None, 2, 8)
    region, q, prm = (imp.const.get(i) if i else None for i in ins[3:6])
    if region is None or q is None or prm is None:
        raise _u(n, "W_region, W_q and W_params must be constant initializers")
    region, q, prm = np.asarray(region), np.asarray(q), np.asarray(prm)
    if region.dtype != np.uint8 or q.dtype != np.int8 or region.ndim != 2 or q.shape != region.shape:
        raise _u(n, f"W_region (uint8) and W_q (int8) must be [K, N] of the same shape, got "
                    f"{region.dtype}{list(region.shape)} and {q.dtype}{list(q.shape)}")
    K, N = q.shape
    if prm.dtype != np.float32 or prm.shape != (4, N):
        raise _u(n, f"W_params must be float32 [4, {N}], got {prm.dtype}{list(prm.shape)}")
    J = 2 ** (bits - 1) - 1
    c = region == 0
    if np.any(region > 2) or np.any(c & ((q < -J - 1) | (q > J))) or np.any(~c & ((q < 0) | (q > J))):
        raise _u(n, f"W_region/W_q hold codes out of range for {bits} bits")
    if not np.all(np.isfinite(prm)) or np.any(prm[[0, 2, 3]] <= 0):
        raise _u(n, "W_params m, s_c, s_t must be finite and > 0")
    bias = None
    if ins[6]:
        bias = imp.const.get(ins[6])
        if bias is None or np.asarray(bias).dtype != np.int32 or np.asarray(bias).size != N:
            raise _u(n, f"B must be an int32 initializer with {N} values")
        bias = np.asarray(bias).reshape(-1)
    if not ins[7]:
        raise _u(n, "Y_scale is required")
    x, xdt, za = _activation(imp, n, ins[0], ins[1], ins[2], True)
    if xdt not in (np.uint8, np.int8):
        raise _u(n, f"A must be uint8 or int8, got {xdt}")
    y = n.output[0]
    _output(imp, n, y, ins[7], ins[8])
    imp.emit("PWLQMatMul", n.name or y, [x], [y], {"bits": bits, "clip": _clip(n, a, imp.out.tensors[y].dtype)},
             {"region": region, "q": q, "m": prm[0].copy(), "p": prm[1].copy(), "s_c": prm[2].copy(),
              "s_t": prm[3].copy(), "bias": bias})


def import_node(imp, n):
    """Import one node of domain ``pyqinfer`` into the importer ``imp``."""
    ver = imp.opset.get(DOMAIN)
    if ver != VERSION:
        raise _u(n, f"domain {DOMAIN!r} must be imported at version {VERSION} in opset_import, got {ver}")
    op = n.op_type
    if op == "ShiftMatMul":
        return _shift(imp, n, conv=False)
    if op == "ShiftConv":
        return _shift(imp, n, conv=True)
    if op == "MultiThreshold":
        return _multi_threshold(imp, n)
    if op == "PWLQMatMul":
        return _pwlq(imp, n)
    raise _u(n, f"unknown op; the pyqinfer domain has {list(OPS)}")


# ------------------------------------------------------- requant mode metadata (9.4)
def apply_metadata(proto, graph):
    """Set ``mode`` / check ``acc_bits`` on QLinearConv/QLinearMatMul nodes from metadata_props."""
    model_kv = {p.key: p.value for p in proto.metadata_props if p.key.startswith("pyqinfer.")}
    node_kv = {}
    for nd in proto.graph.node:
        for p in getattr(nd, "metadata_props", []):
            if p.key in ("pyqinfer.requant_mode", "pyqinfer.acc_bits"):
                node_kv[(p.key, nd.name)] = p.value
    if not model_kv and not node_kv:
        return
    targets = {n.name: n for n in graph.nodes if n.kind in ("QLinearConv", "QLinearMatMul")}
    for key, value in model_kv.items():
        base, _, name = key.partition(":")
        if base not in ("pyqinfer.requant_mode", "pyqinfer.acc_bits"):
            continue      # other pyqinfer.* keys are free (provenance)
        if name and name not in targets:
            raise UnsupportedModelError(f"metadata_props key {key!r} names no QLinearConv/QLinearMatMul node "
                                        f"(nodes: {sorted(targets)[:8]})")
    for name, node in targets.items():
        for base in ("pyqinfer.requant_mode", "pyqinfer.acc_bits"):
            v = node_kv.get((base, name), model_kv.get(f"{base}:{name}", model_kv.get(base)))
            if v is None:
                continue
            if base == "pyqinfer.requant_mode":
                if v not in MODES:
                    raise UnsupportedModelError(f"node {name!r} ({node.kind}): requant mode {v!r} is not one of "
                                                f"{list(MODES)}")
                node.attrs["mode"] = v
            else:
                try:
                    w = int(v)
                except ValueError:
                    w = -1
                if not 8 <= w <= 32:
                    raise UnsupportedModelError(f"node {name!r} ({node.kind}): acc_bits {v!r} must be an integer "
                                                f"in [8, 32]")
                node.attrs["acc_bits"] = w
                _check_acc_bits(graph, node, w)


def _check_acc_bits(graph, node, W):
    from ..reference.accum import accumulator_bound
    w = node.params["w"]
    if node.kind == "QLinearConv":
        w = w.reshape(w.shape[0], -1).T
    wz = node.params["w_zero_point"]
    wz = w.dtype.type(wz[0]) if wz.size == 1 else wz.astype(w.dtype)
    t = graph.tensors[node.inputs[0]]
    za = int(t.quant.zero_point[0]) if t.quant is not None else 0
    bias = node.params.get("bias")
    bound = int(np.max(accumulator_bound(np.ascontiguousarray(w), wz, t.dtype, za, bias)))
    if bound > (1 << (W - 1)) - 1:
        raise UnsupportedModelError(f"node {node.name!r} ({node.kind}): declared acc_bits={W} cannot hold this "
                                    f"layer's accumulator (static bound {bound} > 2^{W - 1} - 1)")


# ------------------------------------------------------------------ exporter side
def pack_conv_codes(codes, w_shape):
    """Packed code stream of conv codes held as a ShiftCodes [K = C*KH*KW, OC] in ONNX [OC, C, KH, KW] order."""
    from ..reference.shiftcodes import pack_codes
    c = np.asarray(codes.codes).T.reshape(w_shape)
    return pack_codes(c, codes.bits)


def make_shift_node(name, codes, x, y, *, conv=False, w_shape=None, x_scale=None, x_zero_point=None,
                    bias=None, y_scale=None, y_zero_point=None, **attrs):
    """(NodeProto, [initializers]) of a pyqinfer.ShiftMatMul / ShiftConv from a ShiftCodes.

    ``codes`` is [K, N] (ShiftMatMul) or [C/group*KH*KW, OC] (ShiftConv, ``w_shape`` =
    [OC, C/group, KH, KW]); the codebook parameters are taken from ``codes.codebook.desc``;
    ``attrs`` adds or overrides attributes (rule, acc_bits, mode, clip, strides, pads,
    dilations, group).
    """
    from onnx import helper, numpy_helper
    cb = codes.codebook
    d = dict(cb.desc)
    a = {"bits": cb.bits, "signed": int(cb.signed)}
    if cb.name == "pot" or cb.name.startswith("log"):
        a.update(scheme="pot" if cb.name == "pot" else "log", e_min=int(d["e_min"]), e_max=int(d["e_max"]),
                 zero_code=int(d["zero_code"]))
        if cb.name.startswith("log"):
            a["base"] = "2" if cb.name == "log2" else "sqrt2"
    else:
        a.update(scheme="apot", construction=d["construction"])
        if d["construction"] == "paper":
            a["k"] = int(d["k"])
    if conv:
        if w_shape is None:
            raise ValueError("conv=True needs w_shape [OC, C, KH, KW]")
        packed = pack_conv_codes(codes, list(w_shape))
    else:
        w_shape = list(codes.shape)
        packed = codes.pack()
    a["w_shape"] = [int(v) for v in w_shape]
    a.update(attrs)
    inits = []

    def init(suffix, arr):
        if arr is None:
            return ""
        nm = f"{name}_{suffix}"
        inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    ins = [x, init("a_scale", None if x_scale is None else np.float32(x_scale)),
           init("a_zp", x_zero_point), init("codes", packed),
           init("w_scale", np.asarray(codes.scale, np.float32)), init("bias", bias),
           init("y_scale", None if y_scale is None else np.float32(y_scale)), init("y_zp", y_zero_point)]
    while ins and ins[-1] == "":
        ins.pop()
    node = helper.make_node("ShiftConv" if conv else "ShiftMatMul", ins, [y], name=name, domain=DOMAIN, **a)
    return node, inits
