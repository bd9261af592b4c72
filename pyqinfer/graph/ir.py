"""The internal graph IR: typed tensors and integer-op nodes (docs/model-format.md).

A :class:`Graph` is what every importer produces and what the planner
(:mod:`pyqinfer.graph.planner`) and the ``verify`` tooling consume. It is
deliberately small and free of ONNX objects:

* :class:`Tensor` -- a named value: numpy ``dtype``, ``shape`` (ints; a ``str``
  is a symbolic dimension such as the batch ``"N"``; ``None`` unknown) and, for a
  quantized integer tensor, its :class:`QParams` (scale, zero point, axis).
  Shapes are in the *ONNX logical layout* (NCHW for images); the planner picks
  physical layouts.
* :class:`Node` -- one op: ``kind`` (a key of :data:`KINDS`), ``name`` (the
  source node name, for error messages), ``inputs``/``outputs`` (tensor names;
  ``""`` is an absent optional input), ``attrs`` (plain Python values) and
  ``params`` (constant numpy arrays owned by the node: weights, bias).
  Quantization parameters of activations are **not** duplicated on nodes: a
  node reads them from its input and output tensors.
* :class:`Graph` -- tensors, nodes, graph inputs/outputs and ``constants``
  (numpy arrays for constant tensors still referenced by nodes).

Integer semantics of every kind are the ops of docs/semantics.md; the table
:data:`KINDS` lists, for each kind, the inputs, params and attrs it takes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

Dim = Union[int, str, None]


class GraphError(ValueError):
    """A structurally invalid graph (cycle, undefined tensor, duplicate producer)."""


@dataclass
class QParams:
    """Quantization parameters of an integer tensor: ``real = (q - zero_point) * scale``.

    ``scale`` float32 and ``zero_point`` (int64) are 1-D: one entry (per tensor)
    or one per channel along ``axis`` (``axis`` is None for per tensor).
    ``bits`` is the declared width of the values (8, or 4 for int4/uint4).
    """
    scale: np.ndarray
    zero_point: np.ndarray
    axis: Optional[int] = None
    bits: int = 8

    def __post_init__(self):
        self.scale = np.ascontiguousarray(np.asarray(self.scale, np.float32).reshape(-1))
        self.zero_point = np.ascontiguousarray(np.asarray(self.zero_point, np.int64).reshape(-1))
        if self.zero_point.size == 1 and self.scale.size > 1:
            self.zero_point = np.full(self.scale.size, self.zero_point[0], np.int64)
        if self.scale.size > 1 and self.axis is None:
            raise GraphError("per-channel QParams need an axis")
        if self.scale.size == 1:
            self.axis = None

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    def same(self, other: "QParams") -> bool:
        """Identical scale, zero point and axis (bit for bit)."""
        return (other is not None and self.axis == other.axis and self.scale.shape == other.scale.shape
                and np.array_equal(self.scale.view(np.uint32), other.scale.view(np.uint32))
                and np.array_equal(self.zero_point, other.zero_point))

    def describe(self) -> str:
        if self.per_channel:
            return f"per-channel(axis={self.axis}, {self.scale.size} ch)"
        return f"s={float(self.scale[0]):.6g} zp={int(self.zero_point[0])}"


@dataclass
class Tensor:
    name: str
    dtype: np.dtype
    shape: Optional[Tuple[Dim, ...]] = None
    quant: Optional[QParams] = None

    def __post_init__(self):
        self.dtype = np.dtype(self.dtype)
        if self.shape is not None:
            self.shape = tuple(self.shape)

    def describe(self) -> str:
        shp = "?" if self.shape is None else "x".join("?" if d is None else str(d) for d in self.shape)
        q = f" [{self.quant.describe()}]" if self.quant is not None else ""
        return f"{self.name}: {self.dtype.name}[{shp}]{q}"


#: Node kinds: ``kind -> (inputs, params, attrs, description)``. Inputs are the
#: activation tensors (in order); params are constant arrays in ``node.params``.
KINDS: Dict[str, Tuple[str, str, str, str]] = {
    # integer compute (docs/semantics.md sections 4, 8-11)
    "QLinearConv": ("x", "w [OC,C/g,KH,KW] int8/uint8, w_scale [1|OC], w_zero_point [1|OC], bias int32 [OC]|None",
                    "strides, pads (t,l,b,r), dilations, group, clip (lo,hi)|None, w_bits",
                    "2-D convolution, requantized to y's qparams (semantics 10)"),
    "ConvInteger": ("x [, x_zero_point (runtime scalar tensor)]", "w, w_zero_point", "strides, pads, dilations, group",
                    "2-D convolution, int32 output; x's zero point from x's qparams or the second input"),
    "QLinearMatMul": ("a [..., K]", "w [K,N], w_scale [1|N], w_zero_point [1|N], bias int32 [N]|None",
                      "clip (lo,hi)|None, w_bits", "matrix product with constant weights, requantized (semantics 8)"),
    "MatMulInteger": ("a [..., K] [, a_zero_point (runtime scalar tensor)]", "w [K,N], w_zero_point [1|N]", "",
                      "matrix product, int32 output; a's zero point from a's qparams or the second input"),
    "DynamicQuantizeLinear": ("x float32", "", "",
                              "ONNX DynamicQuantizeLinear as ONNX Runtime computes it (uint8): outputs y, "
                              "y_scale, y_zero_point (numpy min/max and parameters, then the 5 quantize rule)"),
    "QLinearAdd": ("a, b", "", "rule ('onnxruntime'|'onnx'), clip (lo,hi)|None",
                   "c = a + b requantized (semantics 11.4); b has a's shape or one element"),
    "MaxPool": ("x", "", "kernel_shape, strides, pads, dilations", "max pool (semantics 11.2)"),
    "QLinearAveragePool": ("x", "", "kernel_shape, strides, pads, count_include_pad", "ORT average pool (11.3)"),
    "QLinearGlobalAveragePool": ("x", "", "", "ORT global average pool (11.3), output [N,C,1,1]"),
    "QLinearConcat": ("x0, x1, ...", "", "axis", "requantize each input to y's qparams, concatenate (11.5)"),
    "Clip": ("x", "", "lo, hi (stored integers)", "integer clip; x and y share qparams (11.6)"),
    "Lookup": ("x", "table uint8/int8 [256] indexed by the byte value of x (x.view(uint8))", "source",
               "exact table of an elementwise DQ->f->Q chain, evaluated in float32 once at load (numpy)"),
    "Rescale": ("x", "", "", "y = Q(DQ(x)) with x's and y's qparams, per element (the 11.5 rule)"),
    "Requantize": ("x int32", "", "clip (lo,hi)|None", "int32 with x's scale -> y (semantics 11.6)"),
    "QuantizeLinear": ("x float32", "", "", "float -> y's qparams (semantics 5, rule onnx)"),
    "DequantizeLinear": ("x int", "", "", "x's qparams -> float32"),
    # pyqinfer domain and QONNX (docs/model-format.md sections 9 and 11)
    "ShiftMatMul": ("a [..., K] (uint8/int8/int16/int32)",
                    "signs, exponents int8 [T,K,N], w_scale float32 [1|N] (S_eff), bias int32 [N]|None",
                    "rule, acc_bits, mode, clip (lo,hi)|None, scheme (description); output int32 when y has no qparams",
                    "shift-code weights: semantics 12.2 accumulation, 12.4 requantization"),
    "ShiftConv": ("x [N,C,H,W]",
                  "signs, exponents int8 [T,OC,C/group,KH,KW], w_scale [1|OC] (S_eff), bias int32 [OC]|None",
                  "strides, pads, dilations, group (default 1), rule, acc_bits, mode, clip, scheme",
                  "2-D convolution (ONNX group) with shift-code weights"),
    "MultiThreshold": ("x (float or integer)",
                       "thresholds [C|1,B] (float64 or int64), sign int64 [C]|None (count on sign*x), lut [C|1,B+1]|None",
                       "data_layout ('NCHW'|'NHWC', QONNX channel rule), out_scale, out_bias, out_dtype (None: float32)",
                       "count = #{t: x >= T[c,t]} (semantics 13), then out_scale*count+out_bias or lut[c,count]"),
    "PWLQMatMul": ("a [..., K] uint8/int8", "region uint8 [K,N], q int8 [K,N], m, p, s_c, s_t float32 [N], bias int32|None",
                   "bits, clip", "piecewise-linear weights (semantics 14), pwlq_linear"),
    "QonnxQuant": ("x float32", "", "rounding_mode, lo, hi",
                   "QONNX Quant of a float tensor in float32: clamp(mode(fl32(fl32(x/s) + z)), lo, hi) -> y's qparams; "
                   "rounding_mode 'BIPOLAR' gives where(x >= 0, 1, -1)"),
    "AffineChain": ("x int", "A, B float64 [C|1]", "chain [('affine', a, c) | ('clip', lo, hi)], data_layout",
                    "float32 value of an integer tensor: v = A[c]*x + B[c] then the chain, float64, rounded once "
                    "(a QONNX float tail; not bit-exact with QONNX's float32 evaluation)"),
    # data movement (no arithmetic; output keeps the input's qparams)
    "Reshape": ("x", "", "shape (ONNX: 0 copies, -1 infers), allowzero", ""),
    "Flatten": ("x", "", "axis", ""),
    "Transpose": ("x", "", "perm", ""),
    "Squeeze": ("x", "", "axes", ""),
    "Unsqueeze": ("x", "", "axes", ""),
    "Pad": ("x", "", "pads (ONNX begin..., end...), mode 'constant'|'edge'|'reflect', value (stored integer)", ""),
    "DepthToSpace": ("x", "", "blocksize, mode 'DCR'|'CRD'", ""),
    "SpaceToDepth": ("x", "", "blocksize", ""),
    "ResizeNearest": ("x", "", "out_hw or scales (integer upsampling factors)", "nearest, integer factors only"),
    "Identity": ("x", "", "", ""),
    # float ops (numpy float32; not covered by the bit-exactness contract unless noted)
    "FloatOp": ("x, ...", "constant inputs by position", "op (ONNX op type), onnx attrs",
                "an ONNX float op run in numpy (inspect reports it)"),
}

INTEGER_COMPUTE = ("QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QLinearAdd",
                   "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "Requantize",
                   "Rescale", "Lookup", "Clip", "MaxPool", "QuantizeLinear", "DequantizeLinear",
                   "ShiftMatMul", "ShiftConv", "MultiThreshold", "PWLQMatMul", "QonnxQuant")


@dataclass
class Node:
    kind: str
    name: str
    inputs: List[str]
    outputs: List[str]
    attrs: dict = field(default_factory=dict)
    params: Dict[str, Optional[np.ndarray]] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise GraphError(f"node {self.name!r}: unknown kind {self.kind!r}")

    def describe(self) -> str:
        a = ", ".join(f"{k}={v}" for k, v in self.attrs.items() if v is not None and k != "source")
        p = ", ".join(f"{k}:{v.dtype.name}{list(v.shape)}" for k, v in self.params.items()
                      if isinstance(v, np.ndarray) and v.size > 1)
        extra = "; ".join(s for s in (a, p) if s)
        return (f"{self.kind}({', '.join(self.inputs)}) -> {', '.join(self.outputs)}"
                + (f"  {{{extra}}}" if extra else "") + f"  # {self.name}")


@dataclass
class Graph:
    name: str = "graph"
    tensors: Dict[str, Tensor] = field(default_factory=dict)
    nodes: List[Node] = field(default_factory=list)
    inputs: List[str] = field(default_factory=list)
    outputs: List[str] = field(default_factory=list)
    constants: Dict[str, np.ndarray] = field(default_factory=dict)
    #: free-form provenance, e.g. {"format": "onnx-qdq", "opset": 17}
    meta: dict = field(default_factory=dict)

    def add_tensor(self, t: Tensor) -> Tensor:
        self.tensors[t.name] = t
        return t

    def producers(self) -> Dict[str, Node]:
        out = {}
        for n in self.nodes:
            for o in n.outputs:
                if o in out:
                    raise GraphError(f"tensor {o!r} is produced by both node {out[o].name!r} and {n.name!r}")
                out[o] = n
        return out

    def consumers(self) -> Dict[str, List[Node]]:
        out: Dict[str, List[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    out.setdefault(i, []).append(n)
        return out

    def toposort(self) -> None:
        """Order ``nodes`` so each runs after its producers; GraphError on a cycle
        (naming the nodes on it) or on an input nobody defines."""
        prod = self.producers()
        avail = set(self.inputs) | set(self.constants)
        for n in self.nodes:
            for i in n.inputs:
                if i and i not in prod and i not in avail:
                    raise GraphError(f"node {n.name!r} ({n.kind}) reads tensor {i!r}, which is neither a graph "
                                     f"input, a constant nor produced by any node")
        # Kahn's algorithm, stable (keeps the source order among ready nodes).
        deps = {id(n): {id(prod[t]) for t in n.inputs if t and t in prod} for n in self.nodes}
        users: Dict[int, List[Node]] = {}
        for n in self.nodes:
            for d in deps[id(n)]:
                users.setdefault(d, []).append(n)
        ready = [n for n in self.nodes if not deps[id(n)]]
        order: List[Node] = []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for u in users.get(id(n), ()):
                deps[id(u)].discard(id(n))
                if not deps[id(u)]:
                    ready.append(u)
        if len(order) != len(self.nodes):
            done = {id(n) for n in order}
            stuck = [n for n in self.nodes if id(n) not in done]
            raise GraphError("the graph has a cycle: nodes " + ", ".join(f"{n.name!r} ({n.kind})" for n in stuck[:8])
                             + (" ..." if len(stuck) > 8 else "") + " depend on each other's outputs")
        self.nodes = order
        for o in self.outputs:
            if o not in prod and o not in avail:
                raise GraphError(f"graph output {o!r} is not produced by any node")

    def prune(self) -> None:
        """Drop nodes and constants no graph output depends on."""
        prod = self.producers()
        need, stack = set(), list(self.outputs)
        while stack:
            t = stack.pop()
            if t in need:
                continue
            need.add(t)
            if t in prod:
                stack.extend(i for i in prod[t].inputs if i)
        self.nodes = [n for n in self.nodes if any(o in need for o in n.outputs)]
        self.constants = {k: v for k, v in self.constants.items() if k in need}
        self.tensors = {k: v for k, v in self.tensors.items() if k in need or k in self.inputs}

    def check(self) -> None:
        """Structural checks: known kinds, every tensor described, acyclic."""
        for n in self.nodes:
            for t in list(n.inputs) + list(n.outputs):
                if t and t not in self.tensors and t not in self.constants:
                    raise GraphError(f"node {n.name!r} ({n.kind}) uses tensor {t!r} that has no description")
        self.toposort()

    def pretty(self) -> str:
        lines = [f"graph {self.name}" + (f"  {self.meta}" if self.meta else "")]
        for i in self.inputs:
            lines.append(f"  input  {self.tensors[i].describe()}")
        for n in self.nodes:
            lines.append(f"  {n.describe()}")
            for o in n.outputs:
                if o in self.tensors:
                    lines.append(f"      {self.tensors[o].describe()}")
        for o in self.outputs:
            lines.append(f"  output {self.tensors[o].describe() if o in self.tensors else o}")
        return "\n".join(lines)

    __str__ = pretty
