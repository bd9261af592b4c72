"""Hand-built QOperator and integer data-movement models (onnx.helper) vs ONNX Runtime,
element for element, at ORT_ENABLE_ALL and ORT_DISABLE_ALL."""
import numpy as np
import pytest
from onnx import TensorProto as TP, helper, numpy_helper

import pyqinfer

ort = pytest.importorskip("onnxruntime")
LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
DT = {np.uint8: TP.UINT8, np.int8: TP.INT8, np.float32: TP.FLOAT, np.int32: TP.INT32}


def ort_run(model, feeds, level="all"):
    so = ort.SessionOptions()
    so.graph_optimization_level = LEVELS[level]
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def make(nodes, inputs, outputs, inits, opset=17, ms=True):
    g = helper.make_graph(nodes, "t", inputs, outputs, [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    ops = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    m = helper.make_model(g, opset_imports=ops)
    m.ir_version = 8
    return m


def vi(name, dt, shape):
    return helper.make_tensor_value_info(name, DT[dt], shape)


def check(model, feeds, levels=("all", "none"), **load_kw):
    m = pyqinfer.load(model, **load_kw)
    ours = m.run(feeds)
    for lv in levels:
        theirs = ort_run(model, feeds, lv)
        for (name, a), b in zip(ours.items(), theirs):
            assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, b.dtype, a.shape, b.shape)
            assert np.array_equal(a, b), f"{name} at ORT level {lv}: {(a != b).sum()} of {a.size} differ"
    return m, ours


def qp(dt, s, z):
    return np.float32(s), dt(z)


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_conv_chain_pool_add_concat(dt, per_channel):
    """QLinearConv (3x3, depthwise, strided, 1x1) -> QLinearAdd -> QLinearConcat -> pools."""
    rng = np.random.default_rng(1)
    lo, hi = (0, 256) if dt == np.uint8 else (-128, 128)
    inits, nodes = {}, []
    zmid = dt(lo + 100)

    def conv(x, cin, cout, k, stride, group, name, zp_y=zmid, s_y=0.05):
        w = rng.integers(-128, 128, (cout, cin // group, k, k)).astype(np.int8)
        ws = rng.uniform(0.001, 0.01, cout if per_channel else 1).astype(np.float32)
        inits.update({f"{name}_w": w, f"{name}_ws": ws if per_channel else ws[0],
                      f"{name}_wz": np.zeros(cout, np.int8) if per_channel else np.int8(0),
                      f"{name}_b": rng.integers(-5000, 5000, cout).astype(np.int32),
                      f"{name}_ys": np.float32(s_y), f"{name}_yz": zp_y})
        nodes.append(helper.make_node("QLinearConv", [x, "xs", "xz", f"{name}_w", f"{name}_ws", f"{name}_wz",
                                                      f"{name}_ys", f"{name}_yz", f"{name}_b"], [name], name=name,
                                      pads=[k // 2] * 4, strides=[stride] * 2, group=group, kernel_shape=[k, k]))
        return name
    inits.update({"xs": np.float32(0.05), "xz": zmid})
    # every conv reads x's qparams: chain them by giving outputs the same (s, z)
    a = conv("x", 4, 8, 3, 1, 1, "c1")
    b = conv(a, 8, 8, 3, 1, 8, "dw")
    c = conv(b, 8, 8, 1, 1, 1, "pw")
    inits.update({"as": np.float32(0.07), "az": dt(lo + 90)})
    nodes.append(helper.make_node("QLinearAdd", [a, "xs", "xz", c, "xs", "xz", "as", "az"], ["add"],
                                  domain="com.microsoft", name="add"))
    nodes.append(helper.make_node("QLinearConcat", ["as", "az", "add", "as", "az", b, "xs", "xz"], ["cat"],
                                  domain="com.microsoft", axis=1, name="cat"))
    nodes.append(helper.make_node("MaxPool", ["cat"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("QLinearAveragePool", ["mp", "as", "az", "xs", "xz"], ["ap"], domain="com.microsoft",
                                  kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1], count_include_pad=0))
    nodes.append(helper.make_node("QLinearGlobalAveragePool", ["ap", "xs", "xz", "as", "az"], ["gp"],
                                  domain="com.microsoft"))
    nodes.append(helper.make_node("DequantizeLinear", ["gp", "as", "az"], ["y"]))
    model = make(nodes, [vi("x", dt, ["N", 4, 9, 11])], [vi("y", np.float32, None), vi("mp", dt, None)], inits)
    x = rng.integers(lo, hi, (3, 4, 9, 11)).astype(dt)
    m, _ = check(model, {"x": x})
    assert m.inputs[0].shape == ("N", 4, 9, 11)
    assert m.outputs[0].shape == ("N", 16, 1, 1)
    # the batch is free
    check(model, {"x": rng.integers(lo, hi, (1, 4, 9, 11)).astype(dt)}, levels=("all",))


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
def test_matmul_gemm_integer(dt):
    """QLinearMatMul (per-column weights), com.microsoft QGemm (transB, bias), MatMulInteger, ConvInteger."""
    rng = np.random.default_rng(2)
    lo, hi = (0, 256) if dt == np.uint8 else (-128, 128)
    inits = {"as": np.float32(0.03), "az": dt(lo + 7), "w": rng.integers(-128, 128, (24, 16)).astype(np.int8),
             "ws": rng.uniform(0.002, 0.02, 16).astype(np.float32), "wz": np.zeros(16, np.int8),
             "ys": np.float32(0.2), "yz": dt(lo + 120),
             "w2": rng.integers(-128, 128, (8, 16)).astype(np.int8), "w2s": np.float32(0.01), "w2z": np.int8(0),
             "b2": rng.integers(-3000, 3000, 8).astype(np.int32), "y2s": np.float32(0.3), "y2z": dt(lo + 128),
             "w3": rng.integers(-128, 128, (8, 5)).astype(np.int8), "w3z": np.int8(3),
             "cw": rng.integers(-128, 128, (6, 3, 3, 3)).astype(np.int8), "cz": np.int8(-2)}
    nodes = [helper.make_node("QLinearMatMul", ["a", "as", "az", "w", "ws", "wz", "ys", "yz"], ["mm"]),
             helper.make_node("QGemm", ["mm", "ys", "yz", "w2", "w2s", "w2z", "b2", "y2s", "y2z"], ["gm"],
                              domain="com.microsoft", transB=1),
             helper.make_node("MatMulInteger", ["gm", "w3", "y2z", "w3z"], ["mi"]),
             helper.make_node("ConvInteger", ["img", "cw", "az", "cz"], ["ci"], pads=[1, 1, 1, 1], strides=[2, 1])]
    model = make(nodes, [vi("a", dt, ["N", 24]), vi("img", dt, [2, 3, 7, 8])],
                 [vi("mm", dt, None), vi("gm", dt, None), vi("mi", np.int32, None), vi("ci", np.int32, None)], inits)
    feeds = {"a": rng.integers(lo, hi, (5, 24)).astype(dt), "img": rng.integers(lo, hi, (2, 3, 7, 8)).astype(dt)}
    check(model, feeds)


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
def test_data_movement_on_integers(dt):
    """Transpose, Pad, DepthToSpace (DCR/CRD), SpaceToDepth, Resize nearest, Squeeze, Unsqueeze,
    Reshape, Flatten, Identity on int tensors between QuantizeLinear and DequantizeLinear."""
    rng = np.random.default_rng(3)
    inits = {"s": np.float32(0.02), "z": dt(3), "pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64),
             "pv": dt(5), "scales": np.array([1, 1, 2, 3], np.float32), "shape": np.array([0, -1], np.int64),
             "ax": np.array([0], np.int64)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("Pad", ["q", "pads", "pv"], ["p"], mode="constant"),
             helper.make_node("DepthToSpace", ["p"], ["d2s"], blocksize=2, mode="DCR"),
             helper.make_node("SpaceToDepth", ["d2s"], ["s2d"], blocksize=2),
             helper.make_node("DepthToSpace", ["s2d"], ["d2s2"], blocksize=2, mode="CRD"),
             helper.make_node("Resize", ["d2s2", "", "scales"], ["rs"], mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
             helper.make_node("Transpose", ["rs"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Unsqueeze", ["t", "ax"], ["u"]),
             helper.make_node("Squeeze", ["u", "ax"], ["sq"]),
             helper.make_node("Identity", ["sq"], ["id"]),
             helper.make_node("Reshape", ["id", "shape"], ["r"]),
             helper.make_node("Pad", ["q", "pads"], ["pe"], mode="edge"),
             helper.make_node("Flatten", ["pe"], ["f"], axis=2),
             helper.make_node("DequantizeLinear", ["r", "s", "z"], ["y"])]
    model = make(nodes, [vi("x", np.float32, [2, 8, 4, 6])], [vi("y", np.float32, None), vi("f", dt, None)],
                 inits, ms=False)
    check(model, {"x": rng.normal(0, 1, (2, 8, 4, 6)).astype(np.float32)})


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
def test_leaky_relu_and_scalar_add(dt):
    """Every byte value through QLinearLeakyRelu, then QLinearAdd with a one-element operand
    on either side (ORT swaps a scalar A into the second place)."""
    lo, hi = (0, 256) if dt == np.uint8 else (-128, 128)
    inits = {"s": np.float32(0.04), "z": dt(lo + 60), "s2": np.float32(0.03), "z2": dt(lo + 20),
             "c": np.array([lo + 200], dt)}
    nodes = [helper.make_node("QLinearLeakyRelu", ["x", "s", "z", "s2", "z2"], ["lr"], domain="com.microsoft",
                              alpha=0.1),
             helper.make_node("QLinearAdd", ["lr", "s2", "z2", "c", "s", "z", "s", "z"], ["add"], domain="com.microsoft"),
             helper.make_node("QLinearAdd", ["c", "s", "z", "lr", "s2", "z2", "s2", "z2"], ["add2"], domain="com.microsoft")]
    model = make(nodes, [vi("x", dt, [4, 64])], [vi("lr", dt, None), vi("add", dt, None), vi("add2", dt, None)], inits)
    x = np.tile(np.arange(lo, hi, dtype=np.int64).astype(dt), 1).reshape(4, 64)
    check(model, {"x": x})


def test_float_softmax_tail_is_reported():
    """A float Softmax after the integer core runs in numpy and inspect says so."""
    inits = {"s": np.float32(0.1), "z": np.uint8(128)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
             helper.make_node("Softmax", ["dq"], ["y"], axis=1)]
    model = make(nodes, [vi("x", np.float32, [2, 10])], [vi("y", np.float32, None)], inits, ms=False)
    m = pyqinfer.load(model)
    x = np.random.default_rng(0).normal(0, 3, (2, 10)).astype(np.float32)
    y = m(x)
    ref = ort_run(model, {"x": x})[0]
    assert np.allclose(y, ref, rtol=1e-6, atol=1e-7)   # a float op: not covered by the exactness contract
    rec = [r for r in m.layers() if r["numpy_float"]]
    assert [r["kind"] for r in rec] == ["FloatOp:Softmax"] and rec[0]["exact"] is False
    assert "NUMPY FLOAT" in m.summary()
    q = m.run({"x": x}, outputs=["q"])["q"]     # the integer part is exact
    assert np.array_equal(q, np.clip(np.rint(x / np.float32(0.1)) + 128, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
@pytest.mark.parametrize("H,W,k,s,pads,dil", [
    (5, 5, 2, 2, [0, 0, 0, 0], 1), (6, 7, 3, 2, [1, 1, 1, 1], 1), (4, 4, 2, 3, [0, 0, 1, 1], 1),
    (7, 6, 3, 3, [1, 0, 0, 1], 1), (3, 3, 2, 2, [1, 1, 1, 1], 1), (9, 8, 2, 3, [0, 0, 0, 0], 2)])
def test_max_pool_ceil_mode(dt, H, W, k, s, pads, dil):
    """ceil_mode=1 (the kernel's own geometry), including a last window that would start
    in the end padding, which ONNX Runtime drops."""
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[k, k], strides=[s, s], pads=pads,
                            dilations=[dil, dil], ceil_mode=1)
    model = make([node], [vi("x", dt, [2, 3, H, W])], [vi("y", dt, None)], {}, ms=False)
    lo, hi = (0, 256) if dt == np.uint8 else (-128, 128)
    m, _ = check(model, {"x": np.random.default_rng(H * W).integers(lo, hi, (2, 3, H, W)).astype(dt)})
    assert "fallback" not in m.layers()[0]["kernel"] and m.layers()[0]["kernel"].startswith("eltwise")


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
@pytest.mark.parametrize("H,W,k,s,pads,cip", [
    (5, 5, 2, 2, [0, 0, 0, 0], 0), (6, 7, 3, 2, [1, 1, 1, 1], 1), (4, 4, 2, 3, [0, 0, 1, 1], 0),
    (7, 6, 3, 3, [1, 0, 0, 1], 1), (3, 3, 2, 2, [1, 1, 1, 1], 0)])
def test_average_pool_ceil_mode(dt, H, W, k, s, pads, cip):
    """QLinearAveragePool with ceil_mode=1 (dropped windows in the end padding, both
    count_include_pad rules), NHWC kernel, bit-exact with ONNX Runtime."""
    lo, hi = (0, 256) if dt == np.uint8 else (-128, 128)
    inits = {"xs": np.float32(0.05), "xz": dt(lo + 100), "ys": np.float32(0.03), "yz": dt(lo + 77)}
    node = helper.make_node("QLinearAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"], domain="com.microsoft",
                            kernel_shape=[k, k], strides=[s, s], pads=pads, count_include_pad=cip, ceil_mode=1)
    model = make([node], [vi("x", dt, [2, 3, H, W])], [vi("y", dt, None)], inits)
    m, _ = check(model, {"x": np.random.default_rng(H * W + 1).integers(lo, hi, (2, 3, H, W)).astype(dt)})
    assert m.layers()[0]["kernel"].startswith("eltwise")


def test_add_broadcast_forms():
    """QLinearAdd broadcasting through the kernel: [N,C,H,W] + [1,C,1,1] (both orders),
    [N,C,H,W] + [W] and a scalar A (ORT swaps the operands), bit-exact with ONNX Runtime."""
    rng = np.random.default_rng(11)
    dt = np.uint8
    inits = {"s1": np.float32(0.04), "z1": dt(120), "s2": np.float32(0.09), "z2": dt(30),
             "s3": np.float32(0.07), "z3": dt(128),
             "c": rng.integers(0, 256, (1, 5, 1, 1)).astype(dt), "r": rng.integers(0, 256, (7,)).astype(dt),
             "k": np.array(201, dt)}
    nodes = [helper.make_node("QLinearAdd", ["x", "s1", "z1", "c", "s2", "z2", "s3", "z3"], ["a1"], domain="com.microsoft"),
             helper.make_node("QLinearAdd", ["c", "s2", "z2", "x", "s1", "z1", "s3", "z3"], ["a2"], domain="com.microsoft"),
             helper.make_node("QLinearAdd", ["x", "s1", "z1", "r", "s2", "z2", "s3", "z3"], ["a3"], domain="com.microsoft"),
             helper.make_node("QLinearAdd", ["k", "s2", "z2", "x", "s1", "z1", "s3", "z3"], ["a4"], domain="com.microsoft")]
    model = make(nodes, [vi("x", dt, [2, 5, 6, 7])], [vi(o, dt, None) for o in ("a1", "a2", "a3", "a4")], inits)
    check(model, {"x": rng.integers(0, 256, (2, 5, 6, 7)).astype(dt)})


def test_warm_runs_skip_the_shape_checks_and_stay_exact(tmp_path):
    """After one full run with given input shapes every step has validated them, so later runs
    with those shapes call the fast paths only; other shapes go through the checked loop first."""
    import graph_models as gm
    q = gm.quantize(gm.resnet_small(), "QOperator", per_channel=True, act="uint8", shape=[1, 3, 32, 32],
                    tmpdir=str(tmp_path))
    m = pyqinfer.load(q)
    rng = np.random.default_rng(4)
    x1 = rng.normal(0, 1, (1, 3, 32, 32)).astype(np.float32)
    x3 = rng.normal(0, 1, (3, 3, 32, 32)).astype(np.float32)
    want1, want3 = ort_run(q, {"input": x1}), ort_run(q, {"input": x3})
    out = m.graph.outputs[0]
    assert np.array_equal(m.run({"input": x1})[out], want1[0])       # batch 1 was seen at load
    calls = []
    for st in m.plan.steps:
        st.slow = (lambda f: lambda *a: (calls.append(1), f(*a))[1])(st.slow)
    assert np.array_equal(m.run({"input": x1})[out], want1[0])
    assert not calls                                                 # warm: fast paths only
    assert np.array_equal(m.run({"input": x3})[out], want3[0])       # a new batch: checked loop
    assert calls
    n = len(calls)
    assert np.array_equal(m.run({"input": x3})[out], want3[0]) and len(calls) == n
    with pytest.raises(ValueError, match="must have shape"):
        m.run({"input": x1[:, :, :16]})
