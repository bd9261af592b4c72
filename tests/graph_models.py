"""Small float ONNX models built with onnx.helper, and their quantized versions
(onnxruntime.quantization.quantize_static), for tests/test_graph_*.py."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class Builder:
    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.k = 0

    def name(self, base):
        self.k += 1
        return f"{base}{self.k}"

    def init(self, arr, base="w"):
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def node(self, op, inputs, n_out=1, **attrs):
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x, cin, cout, k=3, stride=1, pad=None, group=1, bias=True):
        pad = k // 2 if pad is None else pad
        w = self.rng.normal(0, 1 / np.sqrt(cin // group * k * k), (cout, cin // group, k, k)).astype(np.float32)
        ins = [x, self.init(w)]
        if bias:
            ins.append(self.init(self.rng.normal(0, 0.1, cout).astype(np.float32), "b"))
        return self.node("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4, group=group)

    def gemm(self, x, k, n):
        w = self.rng.normal(0, 1 / np.sqrt(k), (n, k)).astype(np.float32)
        return self.node("Gemm", [x, self.init(w), self.init(self.rng.normal(0, 0.1, n).astype(np.float32), "b")],
                         transB=1)

    def matmul(self, x, k, n):
        w = self.rng.normal(0, 1 / np.sqrt(k), (k, n)).astype(np.float32)
        return self.node("MatMul", [x, self.init(w)])

    def model(self, x_shape, out, out_shape=None, name="m"):
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, x_shape)
        outp = helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)
        g = helper.make_graph(self.nodes, name, [inp], [outp], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def cnn(seed=0, batch="N"):
    """conv+relu, depthwise conv, residual add, max pool, avg pool, concat, global pool, flatten, gemm."""
    b = Builder(seed)
    x = "input"
    c1 = b.node("Relu", [b.conv(x, 3, 8)])
    c2 = b.node("Relu", [b.conv(c1, 8, 8, group=8)])            # depthwise
    c3 = b.conv(c2, 8, 8, k=1)
    r = b.node("Relu", [b.node("Add", [c1, c3])])               # residual
    p = b.node("MaxPool", [r], kernel_shape=[2, 2], strides=[2, 2])
    c4 = b.node("Relu", [b.conv(p, 8, 16, stride=2)])
    a = b.node("AveragePool", [p], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cat = b.node("Concat", [c4, a], axis=1)
    c5 = b.node("Relu", [b.conv(cat, 24, 16, k=1)])
    g = b.node("GlobalAveragePool", [c5])
    f = b.node("Flatten", [g], axis=1)
    out = b.gemm(f, 16, 10)
    return b.model([batch, 3, 16, 16], out, [batch, 10], "cnn")


def mlp(seed=1, batch="N"):
    b = Builder(seed)
    f = b.node("Flatten", ["input"], axis=1)
    h = b.node("Relu", [b.gemm(f, 64, 32)])
    h2 = b.node("Relu", [b.matmul(h, 32, 24)])
    r = b.node("Reshape", [h2, b.init(np.array([-1, 24], np.int64), "shape")])
    out = b.gemm(r, 24, 10)
    return b.model([batch, 1, 8, 8], out, [batch, 10], "mlp")


def with_opset(model, opset):
    """The same model declaring another ai.onnx opset (21 needs IR version 10)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset
    m.ir_version = 10 if opset >= 21 else 8
    return m


class RandomReader:
    """A calibration data reader of random inputs (onnxruntime.quantization.CalibrationDataReader)."""

    def __init__(self, shape, n=8, seed=0):
        rng = np.random.default_rng(seed)
        self.data = [{"input": rng.normal(0, 1, shape).astype(np.float32)} for _ in range(n)]
        self.it = iter(self.data)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):
        self.it = iter(self.data)


def quantize(model, fmt="QDQ", per_channel=False, act="uint8", weight="int8", shape=None, tmpdir=None,
             extra_options=None, nodes_to_exclude=None):
    """quantize_static on a float model; returns the quantized ModelProto."""
    import os
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    qt = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8, "int4": QuantType.QInt4, "uint4": QuantType.QUInt4}
    d = tmpdir or tempfile.mkdtemp()
    src, dst = os.path.join(d, "f.onnx"), os.path.join(d, f"q_{fmt}_{per_channel}_{act}_{weight}.onnx")
    onnx.save(model, src)
    if shape is None:
        shape = [1 if not isinstance(v.dim_value, int) or v.dim_value == 0 else v.dim_value
                 for v in model.graph.input[0].type.tensor_type.shape.dim]
    quantize_static(src, dst, RandomReader(shape), quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
                    per_channel=per_channel, activation_type=qt[act], weight_type=qt[weight],
                    calibrate_method=CalibrationMethod.MinMax, extra_options=extra_options or {},
                    nodes_to_exclude=nodes_to_exclude or [])
    return onnx.load(dst)


def mlp_residual(seed=2, batch="N"):
    """Gemm -> Relu -> Gemm -> Add (residual) -> Gemm: the residual Add is where ONNX
    Runtime's fused QLinearAdd and the ONNX float rule differ."""
    b = Builder(seed)
    h = b.node("Relu", [b.gemm("input", 32, 32)])
    h2 = b.gemm(h, 32, 32)
    r = b.node("Add", [h, h2])
    out = b.gemm(r, 32, 10)
    return b.model([batch, 32], out, [batch, 10], "mlp_residual")


def resnet_small(seed=3, batch="N", width=16, hw=32):
    """A ~20-node ResNet-style CNN (stem, 4 residual blocks, a strided transition,
    global pool, gemm) for timing the runner (not used by the default tests)."""
    b = Builder(seed)
    x = b.node("Relu", [b.conv("input", 3, width)])

    def block(x, c):
        h = b.node("Relu", [b.conv(x, c, c)])
        return b.node("Relu", [b.node("Add", [x, b.conv(h, c, c)])])
    x = block(block(x, width), width)
    x = b.node("Relu", [b.conv(x, width, 2 * width, stride=2)])
    x = block(block(x, 2 * width), 2 * width)
    g = b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1)
    return b.model([batch, 3, hw, hw], b.gemm(g, 2 * width, 10), [batch, 10], "resnet_small")


def movement(seed=4, batch="N"):
    """conv -> Pad -> Transpose -> DepthToSpace (CRD) -> Resize (nearest x2) -> conv ->
    SpaceToDepth -> global pool -> gemm: data movement inside QDQ groups. The first conv is
    node 'Conv4' (exclude it from quantization to leave a float first layer)."""
    b = Builder(seed)
    c = b.node("Relu", [b.conv("input", 3, 8)])
    p = b.node("Pad", [c, b.init(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")], mode="constant")
    t = b.node("Transpose", [p], perm=[0, 1, 3, 2])
    d = b.node("DepthToSpace", [t], blocksize=2, mode="CRD")
    r = b.node("Resize", [d, "", b.init(np.array([1, 1, 2, 2], np.float32), "sc")], mode="nearest")
    s2d = b.node("SpaceToDepth", [b.conv(r, 2, 4)], blocksize=2)
    g = b.node("Flatten", [b.node("GlobalAveragePool", [s2d])])
    return b.model([batch, 3, 8, 8], b.gemm(g, 16, 5), [batch, 5], "movement")


def quantize_dynamic(model, weight="int8", per_channel=False, tmpdir=None):
    """onnxruntime.quantization.quantize_dynamic (DynamicQuantizeLinear -> MatMulInteger /
    ConvInteger -> Cast -> Mul) on a float model."""
    import os
    import tempfile

    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as qd
    d = tmpdir or tempfile.mkdtemp()
    src, dst = os.path.join(d, "f.onnx"), os.path.join(d, f"qd_{weight}_{per_channel}.onnx")
    onnx.save(model, src)
    qd(src, dst, weight_type=QuantType.QInt8 if weight == "int8" else QuantType.QUInt8, per_channel=per_channel,
       op_types_to_quantize=["MatMul", "Gemm", "Conv"])
    return onnx.load(dst)
