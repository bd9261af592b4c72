"""ONNX importer: QOperator and QDQ models -> :class:`pyqinfer.graph.ir.Graph`.

What is accepted, fused and rejected is specified in docs/model-format.md.
In short:

* **QOperator** ops map one to one onto integer nodes (QLinearConv, QLinearMatMul,
  MatMulInteger, ConvInteger, com.microsoft QGemm / QLinearAdd /
  QLinearGlobalAveragePool / QLinearAveragePool / QLinearConcat /
  QLinearLeakyRelu, QuantizeLinear, DequantizeLinear).
* **QDQ**: ``DequantizeLinear -> op -> QuantizeLinear`` is fused into the integer
  node ONNX Runtime fuses it into (Conv -> QLinearConv, MatMul/Gemm ->
  QLinearMatMul, Add -> QLinearAdd, AveragePool, GlobalAveragePool, Concat;
  MaxPool and data movement run on the integers; Relu/Clip/LeakyRelu become an
  exact lookup table). Weights and biases are ``DequantizeLinear`` of constant
  integers (or ``QuantizeLinear`` of float constants, folded with the ONNX rule).
* Data movement (Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Pad,
  DepthToSpace, SpaceToDepth, Resize nearest, Identity) runs on whatever the
  tensor holds; a handful of float ops run in numpy (``FloatOp``).
* Anything else raises :class:`pyqinfer.graph.UnsupportedModelError` naming the
  node, its op type and what is missing.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import numpy as np

from ..graph import UnsupportedModelError
from ..graph.ir import Graph, GraphError, Node, QParams, Tensor

try:  # onnx is an optional dependency of pyqinfer as a whole, required here
    import onnx
    from onnx import numpy_helper
except ImportError as e:  # pragma: no cover
    raise ImportError("pyqinfer.frontends.onnx needs the 'onnx' package (pip install onnx)") from e

MS = "com.microsoft"
#: QONNX / Brevitas custom-op domains (docs/model-format.md section 11).
QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general")
_INT8 = (np.dtype(np.int8), np.dtype(np.uint8))

#: ONNX data movement ops run on integers (QOperator) or with QDQ around them.
DATA_MOVEMENT = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Pad", "DepthToSpace",
                 "SpaceToDepth", "Resize", "Identity", "MaxPool")
#: Elementwise float ops the QDQ importer turns into an exact lookup table.
LUT_OPS = ("Relu", "Clip", "LeakyRelu")
#: Float ops run in numpy when they are not part of a QDQ pattern.
FLOAT_OPS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Exp", "Add", "Sub", "Mul",
             "Div", "Cast", "MatMul", "Gemm", "Conv", "GlobalAveragePool", "Sqrt", "Neg", "Abs", "ReduceMean",
             "ArgMax", "MaxPool", "AveragePool", "Concat")
#: Which of them are bit-exact with ONNX Runtime (one correctly rounded IEEE float32 op per element).
FLOAT_EXACT = ("Relu", "Clip", "Add", "Sub", "Mul", "Div", "Cast", "Sqrt", "Neg", "Abs", "ArgMax", "LeakyRelu",
               "MaxPool", "Concat")


def _unsupported(node, what):
    op = f"{node.domain + '.' if node.domain not in ('', 'ai.onnx') else ''}{node.op_type}"
    return UnsupportedModelError(f"node {node.name or '(unnamed)'!r} ({op}): {what}")


def load_model_proto(model) -> "onnx.ModelProto":
    """A ModelProto from a ModelProto, bytes or a path; ValueError with the reason otherwise."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        what = f"{len(data)} bytes"
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model file not found: {path}")
        with open(path, "rb") as f:
            data = f.read()
        what = path
    else:
        raise TypeError(f"model must be a path, bytes or onnx.ModelProto, got {type(model).__name__}")
    try:
        proto = onnx.load_from_string(data)
    except Exception as e:  # protobuf DecodeError and friends
        raise ValueError(f"{what} is not a valid ONNX model (truncated or corrupt?): {e}") from None
    if len(proto.graph.node) == 0 and len(proto.graph.output) == 0:
        raise ValueError(f"{what} is not a valid ONNX model (truncated or corrupt?): no graph")
    return proto


def _to_array(t, what=None) -> np.ndarray:
    """numpy value of a TensorProto; int4/uint4 become int8/uint8 (QParams.bits says 4).
    A tensor whose data cannot be read (unknown element type, data of the wrong size
    for its dims, data in an external file) is a ValueError naming it, never a
    KeyError from onnx or a read of a file the model names."""
    what = what or f"tensor {t.name!r}"
    if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
        raise UnsupportedModelError(f"{what} keeps its data in an external file; pyqinfer loads self-contained "
                                    f"models only (onnx.save(model, path, save_as_external_data=False))")
    if t.data_type not in _ELEM_ALL:
        raise UnsupportedModelError(f"{what} has element type {t.data_type}, which pyqinfer does not read")
    n = 1
    for d in t.dims:
        if d < 0:
            raise UnsupportedModelError(f"{what} has a negative dimension: {list(t.dims)}")
        n *= d
    if n > MAX_CONSTANT_ELEMENTS:
        raise UnsupportedModelError(f"{what} claims {n} elements (dims {list(t.dims)}); limit {MAX_CONSTANT_ELEMENTS}")
    try:
        a = numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001 -- onnx raises KeyError/ValueError/TypeError/struct.error here
        raise UnsupportedModelError(f"{what} cannot be read (dims {list(t.dims)}, element type {t.data_type}): "
                                    f"{type(e).__name__}: {e}") from None
    if a.dtype.name in ("int4", "uint4"):
        a = np.asarray(a).astype(np.int8 if a.dtype.name == "int4" else np.uint8)
    return np.asarray(a)


#: Element types whose tensors (initializers, Constant values) pyqinfer reads.
_ELEM_ALL = (1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 21, 22)
#: The largest constant tensor accepted (a corrupt dims field must not allocate terabytes).
MAX_CONSTANT_ELEMENTS = 1 << 30

_ELEM = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16,
         11: np.float64, 4: np.uint16, 12: np.uint32, 13: np.uint64, 21: np.uint8, 22: np.int8}


def _input(node, k) -> str:
    """Name of input k of an ONNX node, "" when it has fewer inputs."""
    return node.input[k] if len(node.input) > k else ""


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Importer:
    def __init__(self, proto):
        self.proto = proto
        self.g = proto.graph
        self.opset = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
        self.out = Graph(name=self.g.name or "model")
        self.const: Dict[str, np.ndarray] = {}       # constant tensors (initializers, folded)
        self.qconst: Dict[str, tuple] = {}           # DQ(constant int) -> (int array, QParams)
        self.view: Dict[str, tuple] = {}             # DQ(int tensor) output -> (int tensor name, QParams, dq node)
        self.int4: set = set()                       # constants that were int4/uint4
        self.done: set = set()                       # ids of ONNX nodes consumed by a fusion
        self.needed_views: set = set()
        self.counter = 0
        self.qonnx = None                            # the QONNX handler when the model uses a QONNX domain
        if any((nd.domain or "") in QONNX_DOMAINS for nd in self.g.node):
            from .qonnx import QonnxImporter
            self.qonnx = QonnxImporter(self)

    # ---------------------------------------------------------------- helpers
    def fresh(self, base):
        self.counter += 1
        return f"{base}__pq{self.counter}"

    def tensor(self, name, dtype, quant=None, shape=None):
        t = self.out.tensors.get(name)
        if t is None:
            t = self.out.add_tensor(Tensor(name, dtype, shape, quant))
        else:
            if quant is not None and t.quant is None:
                t.quant = quant
        return t

    def emit(self, kind, name, inputs, outputs, attrs=None, params=None):
        n = Node(kind, name, list(inputs), list(outputs), attrs or {}, params or {})
        self.out.nodes.append(n)
        return n

    def is_const(self, name):
        return name in self.const

    def get_const(self, node, name, what):
        if not name:
            raise _unsupported(node, f"{what} is missing")
        if name not in self.const:
            raise _unsupported(node, f"{what} ({name!r}) must be a constant (initializer or Constant node)")
        return self.const[name]

    def qparams_from(self, node, scale_name, zp_name, dtype=None, axis=None, ndim=None, bits=8):
        s = self.get_const(node, scale_name, "the scale")
        if zp_name:
            z = self.get_const(node, zp_name, "the zero point")
        else:
            z = np.zeros(1, dtype or np.uint8)
        s = np.asarray(s, np.float32)
        if s.size > 1 or np.asarray(z).size > 1:
            if s.ndim != 1 and not (np.asarray(z).ndim <= 1):
                raise _unsupported(node, "blocked quantization (scale with more than one dimension) is not supported")
            if s.ndim > 1:
                raise _unsupported(node, "blocked quantization (scale with more than one dimension) is not supported")
            ax = 1 if axis is None else int(axis)
            if ndim is not None and ax < 0:
                ax += ndim
        else:
            ax = None
        if not (np.all(np.isfinite(s)) and np.all(s > 0)):
            raise _unsupported(node, f"scale must be finite and > 0, got {s.reshape(-1)[:4]}")
        z = np.asarray(z)
        if s.size == 0 or z.size == 0 or (z.size != 1 and s.size != 1 and z.size != s.size):
            raise _unsupported(node, f"scale ({s.size} values) and zero point ({z.size} values) do not match")
        if dtype is not None and zp_name and z.dtype != np.dtype(dtype):
            raise _unsupported(node, f"zero point {zp_name!r} has dtype {z.dtype}, but the quantized tensor is "
                                     f"{np.dtype(dtype)}")
        if z.dtype.kind not in "iu":
            raise _unsupported(node, f"zero point {zp_name!r} must be an integer, got {z.dtype}")
        return QParams(s, z.astype(np.int64), ax, bits)

    def int_view(self, node, name, qp: Optional[QParams], role="input"):
        """The name of an integer activation tensor holding ``name`` with qparams ``qp``
        (a reinterpreting Identity if the tensor already has different ones)."""
        if name in self.view:
            src, vqp, _ = self.view[name]
            name, qp2 = src, vqp
            if qp is None:
                qp = qp2
        t = self.out.tensors.get(name)
        if t is None:
            if name in self.const:
                arr = self.const[name]
                if arr.dtype not in _INT8:
                    raise _unsupported(node, f"{role} {name!r} must be an 8-bit integer tensor, got {arr.dtype}")
                self.out.constants[name] = arr
                return self.tensor(name, arr.dtype, qp, arr.shape).name
            raise _unsupported(node, f"{role} {name!r} is not defined before this node")
        if t.dtype not in _INT8 and qp is not None:
            raise _unsupported(node, f"{role} {name!r} must be uint8 or int8, got {t.dtype} (is a "
                                     f"QuantizeLinear missing in front of it?)")
        if qp is None or t.quant is None:
            if qp is not None:
                t.quant = qp
            return name
        if t.quant.same(qp):
            return name
        alias = self.fresh(name)
        self.tensor(alias, t.dtype, qp)
        self.emit("Identity", f"{node.name}/reinterpret", [name], [alias], {"reinterpret": True})
        return alias

    # ----------------------------------------------------------------- main
    def run(self):
        g = self.g
        for init in g.initializer:
            if init.name in self.const:
                # ONNX names are unique (the checker rejects this); runtimes differ in which copy
                # they use, and ORT then stops treating the tensor as a constant
                raise UnsupportedModelError(f"initializer {init.name!r} is defined more than once "
                                            f"(tensor names must be unique)")
            self.const[init.name] = _to_array(init, f"initializer {init.name!r}")
            if init.data_type in (21, 22):
                self.int4.add(init.name)
        for sp in g.sparse_initializer:
            raise UnsupportedModelError(f"sparse initializer {sp.values.name!r} is not supported")
        for vi in g.input:
            if vi.name in self.const:
                continue  # an input with an initializer (IR < 4 style): a constant
            tt = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                raise UnsupportedModelError(f"graph input {vi.name!r}: only tensor inputs are supported")
            if tt.elem_type not in _ELEM:
                raise UnsupportedModelError(f"graph input {vi.name!r}: element type {tt.elem_type} is not supported")
            shape = None
            if tt.HasField("shape"):
                shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
            self.out.inputs.append(vi.name)
            self.tensor(vi.name, _ELEM[tt.elem_type], None, shape)
        self.consumers: Dict[str, list] = {}
        self.producer = {}
        for n in g.node:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
            for o in n.output:
                self.producer[o] = n
        self.graph_outputs = [o.name for o in g.output]
        self.out.outputs = list(self.graph_outputs)
        for n in self.sorted_nodes():
            if id(n) in self.done:
                continue
            try:
                self.node(n)
            except (KeyError, IndexError, AttributeError) as e:
                # a safety net: whatever the checks above missed still names the node
                # (tests/test_fuzz_loader.py reports these as findings to fix)
                raise _unsupported(n, f"malformed node ({type(e).__name__}: {e})") from e
        if self.qonnx is not None:
            self.qonnx.finish()
        self.finish()
        from .pyqinfer_domain import apply_metadata
        apply_metadata(self.proto, self.out)
        return self.out

    def sorted_nodes(self):
        """The ONNX nodes in a topological order (stable); UnsupportedModelError on a cycle."""
        nodes = list(self.g.node)
        deps = {id(n): {id(self.producer[i]) for i in n.input if i in self.producer and self.producer[i] is not n}
                for n in nodes}
        selfloop = [n for n in nodes if any(i in n.output for i in n.input if i)]
        users = {}
        for n in nodes:
            for d in deps[id(n)]:
                users.setdefault(d, []).append(n)
        ready = [n for n in nodes if not deps[id(n)] and n not in selfloop]
        order, k = [], 0
        while k < len(ready):
            n = ready[k]
            k += 1
            order.append(n)
            for u in users.get(id(n), ()):
                deps[id(u)].discard(id(n))
                if not deps[id(u)] and u not in selfloop:
                    ready.append(u)
        if len(order) != len(nodes):
            done = {id(n) for n in order}
            stuck = [n for n in nodes if id(n) not in done]
            raise UnsupportedModelError("the graph has a cycle: nodes " + ", ".join(
                f"{n.name or '(unnamed)'!r} ({n.op_type})" for n in stuck[:8]) + (" ..." if len(stuck) > 8 else "")
                + " depend on each other's outputs")
        return order

    def finish(self):
        out = self.out
        # materialize DQ views something needs in float
        used = set(self.graph_outputs)
        for n in out.nodes:
            used.update(n.inputs)
        produced = {o for n in out.nodes for o in n.outputs}
        for name, (src, qp, dq) in list(self.view.items()):
            if name in used and name not in produced:
                srcname = self.int_view(dq, name, None)
                self.tensor(name, np.float32)
                self.emit("DequantizeLinear", dq.name or name, [srcname], [name])
        for o in self.graph_outputs:
            if o in self.const and o not in out.tensors:
                raise UnsupportedModelError(f"graph output {o!r} is a constant; constant outputs are not supported")
            if o in self.qconst and o not in out.tensors:
                raise UnsupportedModelError(f"graph output {o!r} is a constant; constant outputs are not supported")
        try:
            out.toposort()
        except GraphError as e:
            raise UnsupportedModelError(str(e)) from None
        out.prune()
        for n in out.nodes:
            for i in n.inputs:
                if i and i not in out.tensors and i in self.const:
                    out.constants[i] = self.const[i]
                    self.tensor(i, self.const[i].dtype, None, self.const[i].shape)
        out.meta = {"format": self.fmt(), "opset": self.opset.get("ai.onnx"),
                    "producer": f"{self.proto.producer_name} {self.proto.producer_version}".strip()}

    def fmt(self):
        kinds = {n.op_type for n in self.g.node}
        if self.qonnx is not None:
            return "qonnx"
        if any((n.domain or "") == "pyqinfer" for n in self.g.node):
            return "onnx-pyqinfer"
        if kinds & {"QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "MatMulInteger", "ConvInteger"}:
            return "onnx-qoperator"
        if "DequantizeLinear" in kinds:
            return "onnx-qdq"
        return "onnx"

    # --------------------------------------------------------- constant folding
    def try_fold(self, n) -> bool:
        ins = [i for i in n.input if i]
        if n.op_type == "Constant":
            a = _attrs(n)
            if "value" in a:
                v = a["value"]
                arr = _to_array(v, f"the value of Constant node {n.name or n.output[0]!r}")
                if v.data_type in (21, 22):
                    self.int4.add(n.output[0])
            elif "value_float" in a:
                arr = np.array(a["value_float"], np.float32)
            elif "value_floats" in a:
                arr = np.array(a["value_floats"], np.float32)
            elif "value_int" in a:
                arr = np.array(a["value_int"], np.int64)
            elif "value_ints" in a:
                arr = np.array(a["value_ints"], np.int64)
            else:
                raise _unsupported(n, f"Constant with attribute {list(a)} is not supported")
            self.const[n.output[0]] = arr
            return True
        if not ins or not all(i in self.const for i in ins):
            return False
        if n.op_type == "QuantizeLinear":
            return self.fold_quantize(n)
        if n.op_type == "DequantizeLinear":
            return False  # kept symbolic (a quantized constant), handled by the consumer
        a = _attrs(n)
        c = [self.const[i] if i else None for i in n.input]
        op = n.op_type
        try:
            if op == "Identity":
                r = c[0]
            elif op == "Transpose":
                r = np.transpose(c[0], a.get("perm"))
            elif op == "Reshape":
                r = _reshape(c[0], c[1], a.get("allowzero", 0))
            elif op == "Cast":
                r = c[0].astype(_ELEM[a["to"]])
            elif op == "Unsqueeze":
                axes = a.get("axes", None if len(c) < 2 else list(c[1]))
                r = c[0]
                for ax in sorted(int(x) % (r.ndim + len(axes)) for x in axes):
                    r = np.expand_dims(r, ax)
            elif op == "Squeeze":
                axes = a.get("axes", None if len(c) < 2 else list(c[1]))
                r = np.squeeze(c[0], tuple(int(x) for x in axes) if axes is not None else None)
            elif op == "Concat":
                r = np.concatenate(c, axis=a["axis"])
            else:
                return False
        except UnsupportedModelError:
            raise
        except Exception as e:
            raise _unsupported(n, f"cannot evaluate this node on its constant inputs: {e}") from None
        self.const[n.output[0]] = np.asarray(r)
        return True

    def fold_quantize(self, n):
        """Q(float constant) -> integer constant with the ONNX rule (x / s, RNE, + zp, saturate)."""
        from ..ops import quantize_linear
        x = np.asarray(self.const[n.input[0]], np.float32)
        a = _attrs(n)
        if a.get("block_size", 0):
            raise _unsupported(n, "blocked quantization (block_size) is not supported")
        zp = self.const.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        dt = np.dtype(zp.dtype) if zp is not None else np.dtype(_ELEM.get(a.get("output_dtype", 2), np.uint8))
        if dt not in _INT8:
            raise _unsupported(n, f"quantizing to {dt} is not supported (uint8/int8/int4/uint4 only)")
        s = np.asarray(self.const[n.input[1]], np.float32).reshape(-1)
        zpa = np.zeros(1, dt) if zp is None else np.asarray(zp).reshape(-1)
        if s.size > 1:
            ax = a.get("axis", 1) % x.ndim
            xm = np.moveaxis(x, ax, -1)
            q = np.moveaxis(quantize_linear(xm, s, zpa.astype(dt) if zpa.size > 1 else dt.type(zpa[0])), -1, ax)
        else:
            q = quantize_linear(x, s, dt.type(zpa[0]))
        if zp is not None and zp.dtype.name in ("int4", "uint4"):
            raise _unsupported(n, "quantizing a constant to int4 in the graph is not supported")
        self.const[n.output[0]] = np.ascontiguousarray(q)
        return True

    # ---------------------------------------------------------------- nodes
    def node(self, n):
        dom = n.domain or "ai.onnx"
        # every op imported here (all domains) reads input 0 and writes output 0
        if n.op_type != "Constant" and (not len(n.input) or not n.input[0]):
            raise _unsupported(n, "its first input is missing")
        if not len(n.output) or not n.output[0]:
            raise _unsupported(n, "its first output is missing")
        if dom == "pyqinfer":
            from . import pyqinfer_domain
            return pyqinfer_domain.import_node(self, n)
        if self.qonnx is not None and dom in QONNX_DOMAINS:
            return self.qonnx.custom_node(n)
        self.check_schema(n, dom)
        if self.qonnx is not None and dom == "ai.onnx" and self.qonnx.intercept(n):
            return
        if dom not in ("ai.onnx", MS):
            raise _unsupported(n, f"domain {dom!r} is not supported (pyqinfer reads ai.onnx and com.microsoft)")
        if dom == "ai.onnx" and self.try_fold(n):
            return
        op = n.op_type
        if dom == MS:
            if op in ("QuantizeLinear", "DequantizeLinear"):
                pass  # com.microsoft Q/DQ (int4 below opset 21): same semantics
            elif op not in ("QGemm", "QLinearAdd", "QLinearGlobalAveragePool", "QLinearAveragePool",
                            "QLinearConcat", "QLinearLeakyRelu"):
                raise _unsupported(n, "this com.microsoft op is not supported")
        handler = getattr(self, f"op_{op}", None)
        if op == "DequantizeLinear":
            return self.op_DequantizeLinear(n)
        if self.qdq_fuse(n):
            return
        if handler is not None:
            return handler(n)
        if op in FLOAT_OPS:
            return self.float_op(n)
        raise _unsupported(n, "this op is not supported")

    def check_schema(self, n, dom):
        """Required attributes present and no more inputs than the op takes (the ONNX
        schema at the model's opset; ops onnx does not know pass unchecked)."""
        version = int(self.opset.get(dom, 0))
        if dom == "ai.onnx" and not 1 <= version <= onnx.defs.onnx_opset_version():
            raise _unsupported(n, f"the model declares ai.onnx opset {version}; this onnx package knows opsets "
                                  f"1 to {onnx.defs.onnx_opset_version()}")
        try:
            schema = onnx.defs.get_schema(n.op_type, max(1, version), "" if dom == "ai.onnx" else dom)
        except Exception:  # noqa: BLE001 -- SchemaError: an op (or opset) onnx does not define
            if dom == "ai.onnx":
                raise _unsupported(n, f"ai.onnx has no op {n.op_type!r} at opset {version}") from None
            return
        have = {a.name for a in n.attribute}
        unknown = sorted(have - set(schema.attributes))
        if unknown:
            raise _unsupported(n, f"unknown attribute {unknown[0]!r} (the op's attributes at opset {version}: "
                                  f"{sorted(schema.attributes)})")
        missing = [k for k, a in schema.attributes.items() if a.required and k not in have]
        if missing:
            raise _unsupported(n, f"required attribute {missing[0]!r} is missing")
        if len(n.input) > schema.max_input or len(n.input) < schema.min_input:
            raise _unsupported(n, f"has {len(n.input)} inputs; the op takes {schema.min_input} to {schema.max_input}")

    # ---- QDQ
    def op_DequantizeLinear(self, n):
        a = _attrs(n)
        x = n.input[0]
        if a.get("block_size", 0):
            raise _unsupported(n, "blocked quantization (block_size) is not supported")
        zp = n.input[2] if len(n.input) > 2 and n.input[2] else None
        if x in self.const:
            arr = self.const[x]
            bits = 4 if x in self.int4 else 8
            if arr.dtype not in _INT8 + (np.dtype(np.int32),):
                raise _unsupported(n, f"dequantizing a constant of dtype {arr.dtype} is not supported")
            qp = self.qparams_from(n, n.input[1], zp, arr.dtype, a.get("axis", 1) % max(arr.ndim, 1), arr.ndim, bits)
            if arr.dtype == np.int32 and np.any(qp.zero_point != 0):
                raise _unsupported(n, "an int32 DequantizeLinear needs zero point 0")
            self.qconst[n.output[0]] = (arr, qp)
            return
        t = self.out.tensors.get(x) or (self.out.tensors.get(self.view[x][0]) if x in self.view else None)
        if t is None:
            raise _unsupported(n, f"input {x!r} is not defined before this node")
        if t.dtype not in _INT8:
            raise _unsupported(n, f"input {x!r} has dtype {t.dtype}; only uint8/int8 activations can be dequantized")
        ndim = len(t.shape) if t.shape is not None else None
        qp = self.qparams_from(n, n.input[1], zp, t.dtype, a.get("axis", 1), ndim)
        if qp.per_channel:
            if ndim is None:
                raise _unsupported(n, "per-axis DequantizeLinear of an activation needs its rank")
            qp.axis %= ndim
        self.view[n.output[0]] = (x, qp, n)

    def act_view(self, n, name):
        """(int tensor, QParams, dq node) of the DequantizeLinear view ``name`` a fused op reads."""
        if name not in self.view:
            raise _unsupported(n, f"input {name!r} must be a quantized activation (DequantizeLinear of a tensor)")
        return self.view[name]

    def only_q_consumer(self, name):
        """The single QuantizeLinear consuming float tensor ``name`` (and nothing else), or None."""
        cons = self.consumers.get(name, [])
        if name in self.graph_outputs or len(cons) != 1:
            return None
        q = cons[0]
        if q.op_type != "QuantizeLinear" or q.input[0] != name:
            return None
        return q

    def q_out(self, q, per_tensor=True):
        """(output name, dtype, QParams) of a QuantizeLinear node being fused."""
        self.check_schema(q, q.domain or "ai.onnx")     # fused before its own turn: check it here
        a = _attrs(q)
        if a.get("block_size", 0):
            raise _unsupported(q, "blocked quantization (block_size) is not supported")
        zpn = q.input[2] if len(q.input) > 2 and q.input[2] else None
        if zpn:
            zpa = self.get_const(q, zpn, "the zero point")
            dt = np.dtype(zpa.dtype)
        else:
            dt = np.dtype(_ELEM.get(a.get("output_dtype", 2), np.uint8))
        if dt not in _INT8:
            raise _unsupported(q, f"activations must be quantized to uint8 or int8, got {dt}")
        if q.input[1] in self.const and np.asarray(self.const[q.input[1]]).size > 1 and per_tensor:
            raise _unsupported(q, "per-axis quantization of an activation is not supported here")
        qp = self.qparams_from(q, q.input[1], zpn, dt, a.get("axis", 1))
        return q.output[0], dt, qp

    def qdq_fuse(self, n) -> bool:
        """Fuse DQ -> n -> Q when every float activation input of n is a DQ view."""
        op = n.op_type
        if (n.domain or "ai.onnx") != "ai.onnx" or op in ("QuantizeLinear",):
            return False
        acts = [i for i in n.input if i and i not in self.const and i not in self.qconst]
        if not acts or not all(i in self.view for i in acts):
            return False
        if op in ("Conv", "MatMul", "Gemm", "Add", "AveragePool", "GlobalAveragePool", "Concat") + LUT_OPS:
            q = self.only_q_consumer(n.output[0])
            if q is None and op == "Conv":
                bn = self.only_bn_consumer(n.output[0])
                q = self.only_q_consumer(bn.output[0]) if bn is not None else None
                if q is not None:   # DQ -> Conv -> BatchNormalization -> Q: BN folded (model-format 12)
                    self.fuse_Conv(n, q, bn)
                    self.done.add(id(bn))
                    self.done.add(id(q))
                    return True
            if q is None:
                return False  # runs in float after a materialized DequantizeLinear
            fn = getattr(self, f"fuse_{op}", None) or self.fuse_lut
            fn(n, q)
            self.done.add(id(q))
            return True
        if op in DATA_MOVEMENT:
            # integer op on the stored values; a trailing Q with other qparams is a Rescale
            if len(n.output) > 1 and any(n.output[1:]):
                raise _unsupported(n, "only the first output is supported")
            src, qp, _ = self.act_view(n, n.input[0])
            x = self.int_view(n, n.input[0], qp)
            q = self.only_q_consumer(n.output[0])
            if q is None:
                # DQ -> op -> (float consumers): run the op on the integers and keep a DQ view of it
                y = self.fresh(n.output[0])
                self.tensor(y, self.out.tensors[x].dtype, qp)
                self.data_movement(n, x, y, qp)
                self.view[n.output[0]] = (y, qp, n)
                return True
            name, dt, oqp = self.q_out(q)
            if dt != self.out.tensors[x].dtype:
                raise _unsupported(q, "changes the integer dtype around a data movement op; not supported")
            if oqp.same(qp):
                self.tensor(name, dt, oqp)
                self.data_movement(n, x, name, qp)
            else:
                mid = self.fresh(n.output[0])
                self.tensor(mid, dt, qp)
                self.data_movement(n, x, mid, qp)
                self.tensor(name, dt, oqp)
                self.emit("Rescale", q.name or name, [mid], [name])
            self.done.add(id(q))
            return True
        return False

    def weight(self, n, name, role="weight"):
        if name not in self.qconst:
            if name in self.const:
                raise _unsupported(n, f"{role} {name!r} is a float constant; it must be DequantizeLinear of "
                                      f"integer values (or QuantizeLinear of a constant)")
            raise _unsupported(n, f"{role} {name!r} must be a constant (DequantizeLinear of an initializer)")
        return self.qconst[name]

    def bias(self, n, name, x_scale, w_scale, role="bias"):
        if not name:
            return None
        arr, qp = self.weight(n, name, role)
        if arr.dtype != np.int32:
            raise _unsupported(n, f"{role} must be int32 (DequantizeLinear of an int32 initializer), got {arr.dtype}")
        want = (np.float32(x_scale) * np.asarray(w_scale, np.float32)).astype(np.float32)
        got = np.broadcast_to(qp.scale, want.shape) if qp.scale.size == 1 else qp.scale
        if got.shape != want.shape or not np.array_equal(got, want):
            raise _unsupported(n, "the int32 bias scale is not x_scale * w_scale (the quantizer enlarged it?); "
                                  "pyqinfer and ONNX Runtime's fused kernels need bias scale = x_scale * w_scale")
        return np.ascontiguousarray(arr.reshape(-1).astype(np.int32))

    def only_bn_consumer(self, name):
        cons = self.consumers.get(name, [])
        if name in self.graph_outputs or len(cons) != 1 or cons[0].op_type != "BatchNormalization":
            return None
        bn = cons[0]
        if (bn.domain or "ai.onnx") != "ai.onnx" or bn.input[0] != name or (len(bn.output) > 1 and any(bn.output[1:])):
            return None
        return bn

    def bn_params(self, bn, OC):
        """(a, c) float32 [OC] of a BatchNormalization (model-format 12), UnsupportedModelError otherwise."""
        from .qonnx import bn_affine
        a = _attrs(bn)
        if a.get("training_mode", 0):
            raise _unsupported(bn, "training_mode=1 is not supported")
        if len(bn.input) < 5:
            raise _unsupported(bn, "needs scale, B, mean and var inputs")
        vals = [np.asarray(self.get_const(bn, i, nm), np.float32).reshape(-1)
                for i, nm in zip(bn.input[1:5], ("scale", "B", "input_mean", "input_var"))]
        if any(v.size not in (1, OC) for v in vals):
            raise _unsupported(bn, f"parameters must have {OC} values (the convolution's output channels)")
        vals = [np.broadcast_to(v, (OC,)) for v in vals]
        return bn_affine(*vals, np.float32(a.get("epsilon", 1e-5)))

    def fold_bn_requant(self, n, bn, w, wqp, bias, x_scale):
        """w_scale' = fl32(w_scale * a), bias' = bias + rne(c / (x_scale * w_scale')) (model-format 12)."""
        from fractions import Fraction
        OC = w.shape[0]
        a, c = self.bn_params(bn, OC)
        if not (np.all(np.isfinite(a)) and np.all(a > 0) and np.all(np.isfinite(c))):
            raise _unsupported(bn, "folding needs a finite BatchNormalization multiplier "
                                   "gamma / sqrt(var + eps) > 0 on every channel")
        ws = np.broadcast_to(wqp.scale, (OC,)).astype(np.float32)
        ws2 = (ws * a).astype(np.float32)
        if not (np.all(np.isfinite(ws2)) and np.all(ws2 > 0)):
            raise _unsupported(bn, "the folded weight scale w_scale * a is not a normal float32")
        b0 = np.zeros(OC, np.int64) if bias is None else bias.astype(np.int64)
        xs = Fraction(float(np.float32(x_scale)))
        adj = np.array([round(Fraction(float(cv)) / (xs * Fraction(float(wv)))) for cv, wv in zip(c, ws2)],
                       dtype=object)
        b1 = np.array([int(b) + int(d) for b, d in zip(b0, adj)], dtype=object)
        if any(v < -(2 ** 31) or v > 2 ** 31 - 1 for v in b1):
            raise _unsupported(bn, "the folded bias overflows int32")
        zp = np.broadcast_to(wqp.zero_point, (OC,)).astype(np.int64)
        return QParams(ws2, zp, 0, wqp.bits), np.asarray(b1, dtype=np.int64).astype(np.int32)

    def fuse_Conv(self, n, q, bn=None):
        a = _attrs(n)
        xname = n.input[0]
        _, xqp, _ = self.act_view(n, xname)
        if xqp.per_channel:
            raise _unsupported(n, "per-channel activation quantization is not supported")
        w, wqp = self.weight(n, n.input[1])
        if w.dtype not in _INT8:
            raise _unsupported(n, f"weights must be int8/uint8/int4/uint4, got {w.dtype}")
        if w.ndim != 4:
            raise _unsupported(n, f"only 2-D convolution (4-D weights) is supported, got weights of shape {w.shape}")
        if wqp.per_channel and wqp.axis != 0:
            raise _unsupported(n, f"per-channel weights must be quantized along axis 0 (output channels), "
                                  f"got axis {wqp.axis}")
        bias = self.bias(n, n.input[2] if len(n.input) > 2 else "", xqp.scale[0], wqp.scale)
        attrs = self.conv_attrs(n, a, w.shape)
        if bn is not None:
            wqp, bias = self.fold_bn_requant(n, bn, w, wqp, bias, xqp.scale[0])
            attrs["fused"] = [f"BatchNormalization {bn.name or bn.output[0]} (folded, model-format 12)"]
        y, dt, yqp = self.q_out(q)
        x = self.int_view(n, xname, xqp)
        self.tensor(y, dt, yqp)
        self.emit("QLinearConv", n.name or y, [x], [y], attrs,
                  {"w": w, "w_scale": wqp.scale, "w_zero_point": wqp.zero_point, "bias": bias,
                   "w_bits": np.array(wqp.bits)})

    def conv_attrs(self, n, a, wshape):
        ks = list(a.get("kernel_shape", wshape[2:]))
        if len(ks) != 2 or tuple(ks) != tuple(wshape[2:]):
            raise _unsupported(n, f"kernel_shape {ks} does not match the 2-D weights {list(wshape)}")
        strides = list(a.get("strides", [1, 1]))
        dil = list(a.get("dilations", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        group = int(a.get("group", 1))
        auto_pad = a.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        for nm, v, ln, lo in (("strides", strides, 2, 1), ("dilations", dil, 2, 1), ("pads", pads, 4, 0)):
            if len(v) != ln or min(v) < lo or max(v) > 1 << 16:
                raise _unsupported(n, f"attribute {nm}={v} is invalid (need {ln} values in [{lo}, 65536])")
        if group < 1 or wshape[0] % group:
            raise _unsupported(n, f"attribute group={group} is invalid for {wshape[0]} output channels")
        if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
            raise _unsupported(n, f"attribute auto_pad={auto_pad!r} is invalid")
        return {"strides": strides, "pads": pads, "dilations": dil, "group": group, "auto_pad": auto_pad,
                "clip": None}

    def _matmul_common(self, n, q, xname, w, wqp, bias_name, trans_b):
        _, xqp, _ = self.act_view(n, xname)
        if xqp.per_channel:
            raise _unsupported(n, "per-channel activation quantization is not supported")
        if w.dtype not in _INT8 or w.ndim != 2:
            raise _unsupported(n, f"weights must be a 2-D int8/uint8 constant, got {w.dtype}{list(w.shape)}")
        if wqp.per_channel and wqp.axis != (0 if trans_b else 1):
            raise _unsupported(n, f"per-channel weights must be quantized along the output axis "
                                  f"({0 if trans_b else 1}), got axis {wqp.axis}")
        if trans_b:
            w = w.T
        w = np.ascontiguousarray(w)
        bias = self.bias(n, bias_name, xqp.scale[0], wqp.scale) if bias_name else None
        if bias is not None and bias.size != w.shape[1]:
            if bias.size == 1:
                bias = np.full(w.shape[1], bias[0], np.int32)
            else:
                raise _unsupported(n, f"bias has {bias.size} values, expected {w.shape[1]}")
        y, dt, yqp = self.q_out(q)
        x = self.int_view(n, xname, xqp)
        self.tensor(y, dt, yqp)
        self.emit("QLinearMatMul", n.name or y, [x], [y], {"clip": None},
                  {"w": w, "w_scale": wqp.scale, "w_zero_point": wqp.zero_point, "bias": bias,
                   "w_bits": np.array(wqp.bits)})

    def fuse_MatMul(self, n, q):
        if n.input[1] not in self.qconst:
            raise _unsupported(n, "the second input must be constant weights (DequantizeLinear of an initializer)")
        w, wqp = self.weight(n, n.input[1])
        self._matmul_common(n, q, n.input[0], w, wqp, None, False)

    def fuse_Gemm(self, n, q):
        a = _attrs(n)
        if a.get("transA", 0):
            raise _unsupported(n, "transA=1 is not supported")
        if a.get("alpha", 1.0) != 1.0 or (a.get("beta", 1.0) != 1.0 and len(n.input) > 2):
            raise _unsupported(n, f"alpha/beta other than 1 are not supported (alpha={a.get('alpha', 1.0)}, "
                                  f"beta={a.get('beta', 1.0)})")
        w, wqp = self.weight(n, n.input[1])
        self._matmul_common(n, q, n.input[0], w, wqp, n.input[2] if len(n.input) > 2 else "", bool(a.get("transB", 0)))

    def _operand(self, n, name, role):
        """An integer activation or constant with its qparams, for Add/Concat."""
        if name in self.qconst:
            arr, qp = self.qconst[name]
            if arr.dtype not in _INT8:
                raise _unsupported(n, f"{role} {name!r} must be uint8/int8, got {arr.dtype}")
            cname = self.fresh(name)
            self.out.constants[cname] = arr
            self.tensor(cname, arr.dtype, qp, arr.shape)
            return cname
        _, qp, _ = self.act_view(n, name)
        if qp.per_channel:
            raise _unsupported(n, f"{role} {name!r} is quantized per channel; only per-tensor is supported")
        return self.int_view(n, name, qp, role)

    def fuse_Add(self, n, q):
        a = self._operand(n, n.input[0], "input A")
        b = self._operand(n, n.input[1], "input B")
        y, dt, yqp = self.q_out(q)
        if self.out.tensors[a].dtype != dt or self.out.tensors[b].dtype != dt:
            raise _unsupported(n, "both inputs and the output of a quantized Add must have the same dtype")
        self.tensor(y, dt, yqp)
        self.emit("QLinearAdd", n.name or y, [a, b], [y], {"rule": "onnxruntime", "clip": None})

    def fuse_AveragePool(self, n, q):
        a = _attrs(n)
        x = self._operand(n, n.input[0], "input")
        y, dt, yqp = self.q_out(q)
        self.tensor(y, dt, yqp)
        self.emit("QLinearAveragePool", n.name or y, [x], [y], self.pool_attrs(n, a, avg=True))

    def fuse_GlobalAveragePool(self, n, q):
        x = self._operand(n, n.input[0], "input")
        y, dt, yqp = self.q_out(q)
        self.tensor(y, dt, yqp)
        self.emit("QLinearGlobalAveragePool", n.name or y, [x], [y])

    def fuse_Concat(self, n, q):
        xs = [self._operand(n, i, f"input {k}") for k, i in enumerate(n.input)]
        y, dt, yqp = self.q_out(q)
        if any(self.out.tensors[x].dtype != dt for x in xs):
            raise _unsupported(n, "all inputs and the output of a quantized Concat must have the same dtype")
        self.tensor(y, dt, yqp)
        self.emit("QLinearConcat", n.name or y, xs, [y], {"axis": int(_attrs(n)["axis"])})

    def fuse_lut(self, n, q):
        """DQ -> Relu/Clip/LeakyRelu -> Q as an exact 256-entry table (float32 evaluation once)."""
        _, xqp, _ = self.act_view(n, n.input[0])
        if xqp.per_channel:
            raise _unsupported(n, "per-channel activation quantization is not supported")
        x = self.int_view(n, n.input[0], xqp)
        y, dt, yqp = self.q_out(q)
        xdt = self.out.tensors[x].dtype
        fn = self.float_fn(n)
        table = _build_table(xdt, xqp, dt, yqp, fn)
        self.tensor(y, dt, yqp)
        attrs = {"source": n.op_type}
        if dt == xdt and xqp.same(yqp):
            vals = _table_values(xdt)
            res = table.astype(np.int64)
            lo, hi = int(res.min()), int(res.max())
            if np.array_equal(res, np.clip(vals, lo, hi)):
                self.emit("Clip", n.name or y, [x], [y], {"lo": lo, "hi": hi, "source": n.op_type})
                return
        self.emit("Lookup", n.name or y, [x], [y], attrs, {"table": table})

    def float_fn(self, n):
        a = _attrs(n)
        op = n.op_type
        if op == "Relu":
            return lambda v: np.maximum(v, np.float32(0))
        if op == "LeakyRelu":
            alpha = np.float32(a.get("alpha", 0.01))
            return lambda v: np.where(v >= 0, v, (v * alpha).astype(np.float32)).astype(np.float32)
        if op == "Clip":
            if "min" in a or "max" in a:
                lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
            else:
                lo = self.const.get(n.input[1]) if len(n.input) > 1 and n.input[1] else -np.inf
                hi = self.const.get(n.input[2]) if len(n.input) > 2 and n.input[2] else np.inf
                for name, v in ((1, lo), (2, hi)):
                    if v is None:
                        raise _unsupported(n, "Clip bounds must be constants")
            lo, hi = np.float32(lo), np.float32(hi)
            return lambda v: np.minimum(np.maximum(v, lo), hi)
        raise _unsupported(n, "no exact elementwise definition")

    # ---- data movement (integer or float tensors alike)
    def data_movement(self, n, x, y, qp):
        a = _attrs(n)
        op = n.op_type
        attrs = {}
        if op == "Reshape":
            attrs = {"shape": [int(v) for v in self.get_const(n, _input(n, 1), "the target shape").reshape(-1)],
                     "allowzero": int(a.get("allowzero", 0))}
        elif op == "Flatten":
            attrs = {"axis": int(a.get("axis", 1))}
        elif op == "Transpose":
            attrs = {"perm": list(a["perm"]) if "perm" in a else None}
        elif op in ("Squeeze", "Unsqueeze"):
            axes = a.get("axes")
            if axes is None and len(n.input) > 1 and n.input[1]:
                axes = [int(v) for v in self.get_const(n, n.input[1], "axes")]
            if axes is None and op == "Unsqueeze":
                raise _unsupported(n, "axes are required")
            attrs = {"axes": None if axes is None else list(axes)}
        elif op == "Pad":
            mode = a.get("mode", b"constant")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if "pads" in a:
                pads = list(a["pads"])
                value = a.get("value", 0.0)
            else:
                pads = [int(v) for v in self.get_const(n, _input(n, 1), "pads").reshape(-1)]
                value = self.const.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
                if len(n.input) > 2 and n.input[2] and value is None:
                    raise _unsupported(n, "constant_value must be a constant")
                if len(n.input) > 3 and n.input[3]:
                    raise _unsupported(n, "the axes input is not supported")
            if mode not in ("constant", "edge", "reflect"):
                raise _unsupported(n, f"mode {mode!r} is not supported")
            if min(pads) < 0:
                raise _unsupported(n, f"negative pads (cropping) are not supported: {pads}")
            if max(pads) > 1 << 16:
                raise _unsupported(n, f"pads {pads} are absurdly large (limit 65536)")
            dt = self.out.tensors[x].dtype
            if value is None:
                value = 0.0 if n.input[0] in self.view else 0  # QDQ: real 0.0; QOperator: the stored 0
            value = np.asarray(value).reshape(-1)
            if qp is not None and n.input[0] in self.view and value.dtype.kind == "f":
                # DQ -> Pad(float value) -> Q: the value quantized with the input's parameters
                from ..ops import quantize_linear
                value = quantize_linear(value.astype(np.float32), qp.scale[0], dt.type(qp.zero_point[0]))
            attrs = {"pads": pads, "mode": mode, "value": value.item() if value.size else 0}
        elif op in ("DepthToSpace", "SpaceToDepth"):
            mode = a.get("mode", b"DCR")
            attrs = {"blocksize": int(a["blocksize"])}
            if op == "DepthToSpace":
                attrs["mode"] = mode.decode() if isinstance(mode, bytes) else mode
            if not 1 <= attrs["blocksize"] <= 1 << 10:
                raise _unsupported(n, f"blocksize must be in [1, 1024], got {attrs['blocksize']}")
        elif op == "Resize":
            attrs = self.resize_attrs(n, a)
            op = "ResizeNearest"
        elif op == "MaxPool":
            if len(n.output) > 1 and n.output[1]:
                raise _unsupported(n, "the Indices output is not supported")
            attrs = self.pool_attrs(n, a, avg=False)
        elif op == "Identity":
            pass
        self.emit(op, n.name or y, [x], [y], attrs)

    def resize_attrs(self, n, a):
        mode = a.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "nearest":
            raise _unsupported(n, f"mode {mode!r} is not supported (nearest only)")
        ctm = a.get("coordinate_transformation_mode", b"half_pixel")
        ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
        nm = a.get("nearest_mode", b"round_prefer_floor")
        nm = nm.decode() if isinstance(nm, bytes) else nm
        if ctm not in ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"):
            raise _unsupported(n, f"coordinate_transformation_mode {ctm!r} is not supported")
        if nm not in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
            raise _unsupported(n, f"nearest_mode {nm!r} is not supported")
        if a.get("antialias", 0) or a.get("axes") is not None:
            raise _unsupported(n, "antialias and axes are not supported")
        scales = sizes = None
        ins = list(n.input) + [""] * 4
        if ins[2]:
            scales = [float(v) for v in self.get_const(n, ins[2], "scales")]
        if ins[3]:
            sizes = [int(v) for v in self.get_const(n, ins[3], "sizes")]
        if not scales and not sizes:
            raise _unsupported(n, "needs constant scales or sizes")
        if scales and not all(np.isfinite(v) and 0 < v <= 1024 for v in scales):
            raise _unsupported(n, f"scales {scales} must be finite and in (0, 1024]")
        if sizes and not all(0 < v <= 1 << 24 for v in sizes):
            raise _unsupported(n, f"sizes {sizes} must be in [1, 2^24]")
        return {"scales": scales or None, "sizes": sizes, "coordinate_transformation_mode": ctm,
                "nearest_mode": nm}

    def pool_attrs(self, n, a, avg):
        ks = list(a.get("kernel_shape", []))
        if len(ks) != 2:
            raise _unsupported(n, f"only 2-D pooling is supported (kernel_shape={ks})")
        auto_pad = a.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad != "NOTSET":
            raise _unsupported(n, f"auto_pad={auto_pad!r} is not supported (give explicit pads)")
        strides = list(a.get("strides", [1, 1]))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        dil = list(a.get("dilations", [1, 1]))
        for nm, v, ln, lo in (("kernel_shape", ks, 2, 1), ("strides", strides, 2, 1), ("dilations", dil, 2, 1),
                              ("pads", pads, 4, 0)):
            if len(v) != ln or min(v) < lo or max(v) > 1 << 16:
                raise _unsupported(n, f"attribute {nm}={v} is invalid (need {ln} values in [{lo}, 65536])")
        if avg:
            if dil != [1, 1]:
                raise _unsupported(n, "dilated average pooling is not supported")
            if a.get("channels_last", 0):
                raise _unsupported(n, "channels_last=1 is not supported")
            return {"kernel_shape": ks, "strides": strides, "pads": pads,
                    "count_include_pad": int(a.get("count_include_pad", 0)), "ceil_mode": int(a.get("ceil_mode", 0))}
        if a.get("storage_order", 0):
            pass  # only affects the Indices output
        return {"kernel_shape": ks, "strides": strides, "pads": pads, "dilations": dil,
                "ceil_mode": int(a.get("ceil_mode", 0))}

    # ---- QOperator
    def op_QuantizeLinear(self, n):
        x = n.input[0]
        if x in self.view:  # DQ -> Q: the stored values re-expressed with other parameters
            _, xqp, _ = self.view[x]
            src = self.int_view(n, x, xqp)
            y, dt, qp = self.q_out(n)
            if dt != self.out.tensors[src].dtype:
                raise _unsupported(n, "DequantizeLinear -> QuantizeLinear changing the integer dtype is not supported")
            self.tensor(y, dt, qp)
            self.emit("Identity" if qp.same(xqp) else "Rescale", n.name or y, [src], [y])
            return
        t = self.out.tensors.get(x)
        if t is None:
            raise _unsupported(n, f"input {x!r} is not defined before this node")
        if t.dtype != np.float32:
            raise _unsupported(n, f"input must be float32, got {t.dtype}")
        a = _attrs(n)
        ndim = len(t.shape) if t.shape is not None else None
        y, dt, qp = self.q_out(n, per_tensor=False)
        if qp.per_channel:
            if ndim is None:
                raise _unsupported(n, "per-axis QuantizeLinear of an activation needs its rank")
            qp.axis = a.get("axis", 1) % ndim
        self.tensor(y, dt, qp)
        self.emit("QuantizeLinear", n.name or y, [x], [y])

    def qop_params(self, n, sname, zname, dtype, n_ch=None, role="x"):
        if np.dtype(dtype) not in _INT8:
            raise _unsupported(n, f"{role} must be uint8 or int8 (its zero point's dtype), got {np.dtype(dtype)}")
        qp = self.qparams_from(n, sname, zname, dtype, 0)
        if qp.per_channel and role in ("x", "y", "a"):
            raise _unsupported(n, f"{role} must be quantized per tensor")
        return qp

    def act(self, n, name, role):
        t = self.out.tensors.get(name)
        if name in self.view:
            raise _unsupported(n, f"{role} {name!r} is a float tensor (DequantizeLinear output)")
        if t is None and name not in self.const:
            raise _unsupported(n, f"{role} {name!r} is not defined before this node")
        dt = t.dtype if t is not None else self.const[name].dtype
        if dt not in _INT8:
            raise _unsupported(n, f"{role} {name!r} must be uint8 or int8, got {dt}")
        return dt

    def op_QLinearConv(self, n):
        ins = list(n.input) + [""] * (9 - len(n.input))
        xdt = self.act(n, ins[0], "x")
        xqp = self.qop_params(n, ins[1], ins[2], xdt)
        w = self.get_const(n, ins[3], "the weight w")
        if w.dtype not in _INT8 or w.ndim != 4:
            raise _unsupported(n, f"w must be a 4-D int8/uint8 constant (2-D convolution), got {w.dtype}{list(w.shape)}")
        wqp = self.qparams_from(n, ins[4], ins[5], w.dtype, 0, 4, 4 if ins[3] in self.int4 else 8)
        ydt = np.dtype(self.get_const(n, ins[7], "y_zero_point").dtype) if ins[7] else np.dtype(np.uint8)
        yqp = self.qop_params(n, ins[6], ins[7], ydt, role="y")
        bias = None
        if ins[8]:
            bias = self.get_const(n, ins[8], "the bias B")
            if bias.dtype != np.int32:
                raise _unsupported(n, f"bias B must be int32, got {bias.dtype}")
            bias = np.ascontiguousarray(bias.reshape(-1))
        x = self.int_view(n, ins[0], xqp)
        y = n.output[0]
        self.tensor(y, ydt, yqp)
        self.emit("QLinearConv", n.name or y, [x], [y], self.conv_attrs(n, _attrs(n), w.shape),
                  {"w": w, "w_scale": wqp.scale, "w_zero_point": wqp.zero_point, "bias": bias,
                   "w_bits": np.array(wqp.bits)})

    def _runtime_zp(self, n, x, name, xdt, role):
        """(activation input names, x qparams) for an integer op whose zero point may be a tensor."""
        if not name or name in self.const:
            zx = self.const[name] if name else np.zeros(1, xdt)
            if np.asarray(zx).size != 1:
                raise _unsupported(n, f"{role} must be a scalar")
            if np.asarray(zx).dtype != xdt:
                raise _unsupported(n, f"{role} has dtype {np.asarray(zx).dtype} but the input is {xdt} "
                                      f"(ONNX: the same type)")
            return [self.int_view(n, x, QParams(np.ones(1, np.float32), np.asarray(zx).reshape(-1)))]
        t = self.out.tensors.get(name)
        if t is None or t.dtype != xdt:
            raise _unsupported(n, f"{role} {name!r} must be a {xdt} scalar tensor defined before this node")
        return [self.int_view(n, x, None), name]

    def op_ConvInteger(self, n):
        ins = list(n.input) + [""] * (4 - len(n.input))
        xdt = self.act(n, ins[0], "x")
        w = self.get_const(n, ins[1], "the weight w")
        if w.dtype not in _INT8 or w.ndim != 4:
            raise _unsupported(n, f"w must be a 4-D int8/uint8 constant, got {w.dtype}{list(w.shape)}")
        zw = self.get_const(n, ins[3], "w_zero_point") if ins[3] else np.zeros(1, w.dtype)
        xs = self._runtime_zp(n, ins[0], ins[2], xdt, "x_zero_point")
        y = n.output[0]
        self.tensor(y, np.int32)
        self.emit("ConvInteger", n.name or y, xs, [y], self.conv_attrs(n, _attrs(n), w.shape),
                  {"w": w, "w_zero_point": np.asarray(zw, np.int64).reshape(-1)})

    def op_DynamicQuantizeLinear(self, n):
        x = n.input[0]
        t = self.out.tensors.get(x)
        if t is None or t.dtype != np.float32:
            raise _unsupported(n, f"input {x!r} must be a float32 tensor defined before this node")
        outs = list(n.output) + [""] * (3 - len(n.output))
        names = [o or self.fresh(f"{n.name}_out{k}") for k, o in enumerate(outs)]
        self.tensor(names[0], np.uint8)
        self.tensor(names[1], np.float32, shape=())
        self.tensor(names[2], np.uint8, shape=())
        self.emit("DynamicQuantizeLinear", n.name or names[0], [x], names)

    def op_MatMulInteger(self, n):
        ins = list(n.input) + [""] * (4 - len(n.input))
        xdt = self.act(n, ins[0], "A")
        w = self.get_const(n, ins[1], "B (weights)")
        if w.dtype not in _INT8 or w.ndim != 2:
            raise _unsupported(n, f"B must be a 2-D int8/uint8 constant, got {w.dtype}{list(w.shape)}")
        zb = self.get_const(n, ins[3], "b_zero_point") if ins[3] else np.zeros(1, w.dtype)
        xs = self._runtime_zp(n, ins[0], ins[2], xdt, "a_zero_point")
        y = n.output[0]
        self.tensor(y, np.int32)
        self.emit("MatMulInteger", n.name or y, xs, [y], {},
                  {"w": np.ascontiguousarray(w), "w_zero_point": np.asarray(zb, np.int64).reshape(-1)})

    def op_QLinearMatMul(self, n):
        ins = list(n.input) + [""] * (8 - len(n.input))
        adt = self.act(n, ins[0], "a")
        aqp = self.qop_params(n, ins[1], ins[2], adt, role="a")
        w = self.get_const(n, ins[3], "b (weights)")
        if w.dtype not in _INT8 or w.ndim != 2:
            raise _unsupported(n, f"b must be a 2-D int8/uint8 constant (weights), got {w.dtype}{list(w.shape)}")
        wqp = self.qparams_from(n, ins[4], ins[5], w.dtype, 1, 2, 4 if ins[3] in self.int4 else 8)
        ydt = np.dtype(self.get_const(n, ins[7], "y_zero_point").dtype)
        yqp = self.qop_params(n, ins[6], ins[7], ydt, role="y")
        x = self.int_view(n, ins[0], aqp)
        y = n.output[0]
        self.tensor(y, ydt, yqp)
        self.emit("QLinearMatMul", n.name or y, [x], [y], {"clip": None},
                  {"w": np.ascontiguousarray(w), "w_scale": wqp.scale, "w_zero_point": wqp.zero_point,
                   "bias": None, "w_bits": np.array(wqp.bits)})

    def op_QGemm(self, n):
        a = _attrs(n)
        ins = list(n.input) + [""] * (9 - len(n.input))
        if not ins[7]:
            raise _unsupported(n, "QGemm without y_scale (float output) is not supported")
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0:
            raise _unsupported(n, f"transA=1 or alpha != 1 is not supported (alpha={a.get('alpha', 1.0)})")
        adt = self.act(n, ins[0], "A")
        aqp = self.qop_params(n, ins[1], ins[2], adt, role="a")
        w = self.get_const(n, ins[3], "B (weights)")
        tb = bool(a.get("transB", 0))
        if w.dtype not in _INT8 or w.ndim != 2:
            raise _unsupported(n, f"B must be a 2-D int8/uint8 constant, got {w.dtype}{list(w.shape)}")
        wqp = self.qparams_from(n, ins[4], ins[5], w.dtype, 0 if tb else 1, 2)
        if tb:
            w = w.T
        bias = None
        if ins[6]:
            bias = self.get_const(n, ins[6], "C (bias)")
            if bias.dtype != np.int32:
                raise _unsupported(n, f"C (bias) must be int32, got {bias.dtype}")
            bias = np.ascontiguousarray(np.broadcast_to(bias.reshape(-1), (w.shape[1],)).astype(np.int32))
        ydt = np.dtype(self.get_const(n, ins[8], "y_zero_point").dtype) if ins[8] else np.dtype(np.uint8)
        yqp = self.qop_params(n, ins[7], ins[8], ydt, role="y")
        x = self.int_view(n, ins[0], aqp)
        y = n.output[0]
        self.tensor(y, ydt, yqp)
        self.emit("QLinearMatMul", n.name or y, [x], [y], {"clip": None},
                  {"w": np.ascontiguousarray(w), "w_scale": wqp.scale, "w_zero_point": wqp.zero_point,
                   "bias": bias, "w_bits": np.array(wqp.bits)})

    def op_QLinearAdd(self, n):
        ins = list(n.input) + [""] * (8 - len(n.input))
        adt = self.act(n, ins[0], "A")
        aqp = self.qop_params(n, ins[1], ins[2], adt, role="a")
        bdt = self.act(n, ins[3], "B")
        bqp = self.qop_params(n, ins[4], ins[5], bdt, role="b")
        cqp = self.qop_params(n, ins[6], ins[7], adt, role="y")
        if adt != bdt:
            raise _unsupported(n, "A and B must have the same dtype")
        a = self.int_view(n, ins[0], aqp)
        b = self.int_view(n, ins[3], bqp)
        y = n.output[0]
        self.tensor(y, adt, cqp)
        self.emit("QLinearAdd", n.name or y, [a, b], [y], {"rule": "onnxruntime", "clip": None})

    def _unary_qop(self, n, kind, attrs):
        ins = list(n.input) + [""] * (5 - len(n.input))
        dt = self.act(n, ins[0], "X")
        xqp = self.qop_params(n, ins[1], ins[2], dt)
        yqp = self.qop_params(n, ins[3], ins[4], dt, role="y")
        x = self.int_view(n, ins[0], xqp)
        y = n.output[0]
        self.tensor(y, dt, yqp)
        return self.emit(kind, n.name or y, [x], [y], attrs)

    def op_QLinearGlobalAveragePool(self, n):
        if _attrs(n).get("channels_last", 0):
            raise _unsupported(n, "channels_last=1 is not supported")
        self._unary_qop(n, "QLinearGlobalAveragePool", {})

    def op_QLinearAveragePool(self, n):
        self._unary_qop(n, "QLinearAveragePool", self.pool_attrs(n, _attrs(n), avg=True))

    def op_QLinearLeakyRelu(self, n):
        alpha = np.float32(_attrs(n).get("alpha", 0.01))
        node = self._unary_qop(n, "Lookup", {"source": "QLinearLeakyRelu"})
        x, y = self.out.tensors[node.inputs[0]], self.out.tensors[node.outputs[0]]
        node.params["table"] = _build_table(x.dtype, x.quant, y.dtype, y.quant,
                                            lambda v: np.where(v >= 0, v, (v * alpha).astype(np.float32)),
                                            ort_dequant=True)

    def op_QLinearConcat(self, n):
        ins = list(n.input)
        if len(ins) < 5 or (len(ins) - 2) % 3:
            raise _unsupported(n, "expects Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) triples")
        if "axis" not in _attrs(n):      # required by the com.microsoft schema (onnx cannot check it)
            raise _unsupported(n, "required attribute 'axis' is missing")
        dt = np.dtype(self.get_const(n, ins[1], "Y_zero_point").dtype)
        yqp = self.qop_params(n, ins[0], ins[1], dt, role="y")
        xs = []
        for k in range(2, len(ins), 3):
            xdt = self.act(n, ins[k], f"input {(k - 2) // 3}")
            if xdt != dt:
                raise _unsupported(n, "all inputs must have Y's dtype")
            xs.append(self.int_view(n, ins[k], self.qop_params(n, ins[k + 1], ins[k + 2], xdt)))
        y = n.output[0]
        self.tensor(y, dt, yqp)
        self.emit("QLinearConcat", n.name or y, xs, [y], {"axis": int(_attrs(n)["axis"])})

    def op_Concat(self, n):
        """Concat outside a QDQ pattern: of integer tensors sharing qparams, or of floats."""
        ts = [self.out.tensors.get(i) for i in n.input]
        if all(t is not None and t.dtype in _INT8 for t in ts) and ts:
            qps = [t.quant for t in ts]
            if all(q is not None for q in qps) and all(q.same(qps[0]) for q in qps):
                y = n.output[0]
                self.tensor(y, ts[0].dtype, qps[0])
                self.emit("QLinearConcat", n.name or y, list(n.input), [y], {"axis": int(_attrs(n)["axis"])})
                return
            raise _unsupported(n, "Concat of integer tensors with different quantization parameters")
        return self.float_op(n)

    def _plain_data_movement(self, n):
        x = n.input[0]
        t = self.out.tensors.get(x)
        if t is None:
            if x in self.const:
                raise _unsupported(n, f"input {x!r} is a constant this op cannot fold")
            raise _unsupported(n, f"input {x!r} is not defined before this node")
        y = n.output[0]
        self.tensor(y, t.dtype, t.quant)
        self.data_movement(n, x, y, t.quant)

    op_Reshape = op_Flatten = op_Transpose = op_Squeeze = op_Unsqueeze = op_Pad = _plain_data_movement
    op_DepthToSpace = op_SpaceToDepth = op_Resize = op_Identity = _plain_data_movement

    def op_MaxPool(self, n):  # int MaxPool in QOperator models; a float MaxPool is rejected
        t = self.out.tensors.get(n.input[0])
        if t is not None and t.dtype == np.float32:
            self.pool_attrs(n, _attrs(n), avg=False)   # the same attribute checks
            return self.float_op(n)
        return self._plain_data_movement(n)

    # ---- float ops
    def op_BatchNormalization(self, n):
        """After a float Conv with constant weights (its only consumer): folded in float32 (model-format 12)."""
        x = n.input[0]
        prod = [p for p in self.out.nodes if x in p.outputs]
        p = prod[0] if prod else None
        ok = (p is not None and p.kind == "FloatOp" and p.attrs.get("op") == "Conv" and x not in self.graph_outputs
              and len(self.consumers.get(x, [])) == 1 and len(p.inputs) >= 2
              and all(i in self.out.constants for i in p.inputs[1:] if i)
              and not (len(n.output) > 1 and any(n.output[1:])))
        if not ok:
            raise _unsupported(n, "BatchNormalization is supported only right after a convolution: a float Conv "
                                  "with constant weights, or DequantizeLinear -> Conv -> BatchNormalization -> "
                                  "QuantizeLinear (docs/model-format.md section 12); otherwise fold it into the "
                                  "preceding convolution before quantizing (onnxruntime.quantization."
                                  "quant_pre_process or the exporter does this)")
        W = np.asarray(self.out.constants[p.inputs[1]], np.float32)
        OC = W.shape[0]
        f = np.float32
        a = _attrs(n)
        vals = [np.asarray(self.get_const(n, i, nm), f).reshape(-1)
                for i, nm in zip(n.input[1:5], ("scale", "B", "input_mean", "input_var"))]
        if any(v.size not in (1, OC) for v in vals):
            raise _unsupported(n, f"parameters must have {OC} values (the convolution's output channels)")
        g, beta, mean, var = (np.broadcast_to(v, (OC,)) for v in vals)
        with np.errstate(all="ignore"):
            s = (g / np.sqrt((var + f(a.get("epsilon", 1e-5))).astype(f)).astype(f)).astype(f)
            b = np.asarray(self.out.constants[p.inputs[2]], f).reshape(-1) if len(p.inputs) > 2 and p.inputs[2] \
                else np.zeros(OC, f)
            W2 = (W * s.reshape(-1, *([1] * (W.ndim - 1)))).astype(f)
            b2 = ((((b - mean).astype(f)) * s).astype(f) + beta).astype(f)
        wn, bname = self.fresh(p.inputs[1]), self.fresh(f"{n.name or 'bn'}_bias")
        for name, arr in ((wn, W2), (bname, b2)):
            self.out.constants[name] = np.ascontiguousarray(arr)
            self.tensor(name, np.float32, None, arr.shape)
        y = n.output[0]
        self.tensor(y, np.float32)
        p.inputs = [p.inputs[0], wn, bname]
        p.outputs = [y]
        p.attrs["fused"] = [f"BatchNormalization {n.name or y} (folded)"]
        self.out.tensors.pop(x, None)

    def float_op(self, n):
        op = n.op_type
        if op not in FLOAT_OPS:
            raise _unsupported(n, "this op is not supported")
        ins = []
        for i in n.input:
            if not i:
                ins.append("")
                continue
            if i in self.qconst:
                arr, qp = self.qconst[i]
                from ..ops import dequantize_linear
                if qp.per_channel:
                    f = np.moveaxis(dequantize_linear(np.moveaxis(arr, qp.axis, -1), qp.scale,
                                                      None if arr.dtype == np.int32 else qp.zero_point.astype(arr.dtype)), -1, qp.axis)
                else:
                    f = dequantize_linear(arr, qp.scale[0], None if arr.dtype == np.int32 else arr.dtype.type(qp.zero_point[0]))
                self.const[i] = np.ascontiguousarray(f)
                del self.qconst[i]
            if i in self.const:
                self.out.constants[i] = self.const[i]
                self.tensor(i, self.const[i].dtype, None, self.const[i].shape)
            elif i not in self.out.tensors and i not in self.view:
                raise _unsupported(n, f"input {i!r} is not defined before this node")
            if i in self.view:
                self.tensor(i, np.float32)
            t = self.out.tensors[i]
            if t.dtype != np.float32 and op not in ("Cast", "ArgMax") and t.name not in self.out.constants:
                raise _unsupported(n, f"input {i!r} has dtype {t.dtype}; float ops need float32 inputs")
            ins.append(i)
        a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in _attrs(n).items()}
        if op == "Cast":
            to = _ELEM.get(a.get("to"))
            if to is None:
                raise _unsupported(n, f"cast to element type {a.get('to')} is not supported")
            odt = np.dtype(to)
        elif op == "ArgMax":
            odt = np.dtype(np.int64)
        else:
            odt = np.dtype(np.float32)
        for o in n.output[:1]:
            self.tensor(o, odt)
        if len(n.output) > 1 and any(n.output[1:]):
            raise _unsupported(n, "only one output is supported")
        self.emit("FloatOp", n.name or n.output[0], ins, [n.output[0]],
                  {"op": op, "onnx": a, "exact": op in FLOAT_EXACT})


def _table_values(dt):
    """The stored values in the order of their byte value (x.view(uint8) indexes the table)."""
    return np.arange(256, dtype=np.uint8).view(dt).astype(np.int64)


def _build_table(xdt, xqp, ydt, yqp, fn, ort_dequant=False):
    """Table[byte] = Q(fn(DQ(v))) in float32 with the ONNX Q/DQ rules (docs/model-format.md)."""
    from ..ops import dequantize_linear, quantize_linear
    v = _table_values(np.dtype(xdt)).astype(np.dtype(xdt))
    if ort_dequant:  # ORT's QLinearLookupBase: fl32(int(v) - zp) * scale
        f = ((v.astype(np.int64) - int(xqp.zero_point[0])).astype(np.float32) * xqp.scale[0]).astype(np.float32)
    else:
        f = dequantize_linear(v, xqp.scale[0], np.dtype(xdt).type(xqp.zero_point[0]))
    r = np.asarray(fn(f), np.float32)
    return quantize_linear(r, yqp.scale[0], np.dtype(ydt).type(yqp.zero_point[0]))


def _reshape(x, shape, allowzero=0):
    shape = [int(v) for v in np.asarray(shape).reshape(-1)]
    if not allowzero:
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return x.reshape(shape)


def import_onnx(model) -> Graph:
    """Import an ONNX model (path, bytes or ModelProto) into a :class:`~pyqinfer.graph.ir.Graph`."""
    proto = load_model_proto(model)
    return _Importer(proto).run()
