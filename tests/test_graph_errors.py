"""Malformed models and inputs get clear errors naming the node (or input) and what is wrong."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP, helper, numpy_helper

import pyqinfer
from pyqinfer.graph import Graph, GraphError, Node, Tensor, UnsupportedModelError


def qconv_model(attrs=None, drop_init=None, extra_nodes=(), op="QLinearConv", w_shape=(4, 3, 3, 3)):
    rng = np.random.default_rng(0)
    inits = {"xs": np.float32(0.1), "xz": np.uint8(128), "w": rng.integers(-128, 128, w_shape).astype(np.int8),
             "ws": np.float32(0.01), "wz": np.int8(0), "ys": np.float32(0.2), "yz": np.uint8(100)}
    if drop_init:
        inits.pop(drop_init)
    attrs = {"pads": [1, 1, 1, 1]} if attrs is None else attrs
    nodes = [helper.make_node(op, ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], name="conv1", **attrs)]
    nodes += list(extra_nodes)
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TP.UINT8, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info(nodes[-1].output[0], TP.UINT8, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_good_model_runs():
    m = pyqinfer.load(qconv_model())
    assert m(np.zeros((2, 3, 8, 8), np.uint8)).shape == (2, 4, 8, 8)
    assert m.inputs[0].name == "x" and m.inputs[0].dtype == np.uint8 and m.inputs[0].shape == ("N", 3, 8, 8)


def test_truncated_bytes():
    data = qconv_model().SerializeToString()
    for cut in (len(data) // 2, len(data) - 3, 7):
        with pytest.raises(ValueError, match="not a valid ONNX model|truncated"):
            pyqinfer.load(data[:cut])


def test_path_and_type_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        pyqinfer.load(str(tmp_path / "nope.onnx"))
    with pytest.raises(TypeError, match="path, bytes or onnx.ModelProto"):
        pyqinfer.load(12)
    p = tmp_path / "m.onnx"
    onnx.save(qconv_model(), str(p))
    assert pyqinfer.load(str(p)).run({"x": np.zeros((1, 3, 8, 8), np.uint8)})["y"].shape == (1, 4, 8, 8)
    assert pyqinfer.load(p.read_bytes()).inputs[0].name == "x"


def test_wrong_inputs():
    m = pyqinfer.load(qconv_model())
    with pytest.raises(TypeError, match="'x' must have dtype uint8, got int8"):
        m.run({"x": np.zeros((1, 3, 8, 8), np.int8)})
    with pytest.raises(ValueError, match=r"'x' must have shape \(N, 3, 8, 8\), got \(1, 3, 8\)"):
        m.run({"x": np.zeros((1, 3, 8), np.uint8)})
    with pytest.raises(ValueError, match=r"must have shape"):
        m.run({"x": np.zeros((1, 4, 8, 8), np.uint8)})
    with pytest.raises(ValueError, match=r"unknown: \['y'\]"):
        m.run({"x": np.zeros((1, 3, 8, 8), np.uint8), "y": np.zeros(1)})
    with pytest.raises(ValueError, match=r"missing: \['x'\]"):
        m.run({})
    with pytest.raises(TypeError, match="must be a numpy array"):
        m.run({"x": [[1]]})
    with pytest.raises(TypeError, match="takes a dict"):
        m.run(np.zeros((1, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="is empty"):
        m.run({"x": np.zeros((0, 3, 8, 8), np.uint8)})


def test_missing_initializer():
    with pytest.raises(UnsupportedModelError, match=r"'conv1' \(QLinearConv\).*the weight w \('w'\) must be a constant"):
        pyqinfer.load(qconv_model(drop_init="w"))
    with pytest.raises(UnsupportedModelError, match=r"'conv1' \(QLinearConv\).*scale"):
        pyqinfer.load(qconv_model(drop_init="ys"))


def test_unsupported_op_names_node():
    extra = [helper.make_node("Hardmax", ["y"], ["z"], name="hm")]
    with pytest.raises(UnsupportedModelError, match=r"node 'hm' \(Hardmax\): this op is not supported"):
        pyqinfer.load(qconv_model(extra_nodes=extra))
    extra = [helper.make_node("Foo", ["y"], ["z"], name="custom", domain="my.domain")]
    with pytest.raises(UnsupportedModelError, match=r"'custom' \(my.domain.Foo\): domain 'my.domain'"):
        pyqinfer.load(qconv_model(extra_nodes=extra))
    assert issubclass(UnsupportedModelError, ValueError)


@pytest.mark.parametrize("attrs,msg", [
    ({"strides": [0, 1]}, r"strides=\[0, 1\] is invalid"),
    ({"pads": [1, 1, 1]}, r"pads=\[1, 1, 1\] is invalid"),
    ({"dilations": [1, 10 ** 9]}, r"dilations=.* is invalid"),
    ({"group": 5}, "group=5 is invalid"),
    ({"kernel_shape": [5, 5]}, r"kernel_shape \[5, 5\] does not match"),
    ({"auto_pad": "SOMETIMES"}, "auto_pad='SOMETIMES' is invalid"),
])
def test_absurd_attributes(attrs, msg):
    with pytest.raises(UnsupportedModelError, match=r"node 'conv1' \(QLinearConv\): .*" + msg):
        pyqinfer.load(qconv_model(attrs=attrs))


def test_kernel_larger_than_input_names_node():
    with pytest.raises(ValueError, match=r"node 'conv1' \(QLinearConv\).*larger than the padded input"):
        pyqinfer.load(qconv_model(attrs={"pads": [0, 0, 0, 0]}, w_shape=(4, 3, 9, 9)))


def test_cycle():
    a = helper.make_node("Identity", ["b"], ["a"], name="n1")
    b = helper.make_node("Identity", ["a"], ["b"], name="n2")
    g = helper.make_graph([a, b], "cyc", [helper.make_tensor_value_info("x", TP.UINT8, [1])],
                          [helper.make_tensor_value_info("b", TP.UINT8, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedModelError, match=r"cycle: nodes 'n1' \(Identity\), 'n2' \(Identity\)"):
        pyqinfer.load(m)
    # the IR itself reports cycles by node name
    gr = Graph(inputs=["x"], outputs=["z"])
    for t in "xyz":
        gr.add_tensor(Tensor(t, np.uint8, (1,)))
    gr.nodes = [Node("Identity", "p", ["z"], ["y"]), Node("Identity", "q", ["y"], ["z"])]
    with pytest.raises(GraphError, match=r"cycle: nodes 'p' \(Identity\), 'q' \(Identity\)"):
        gr.check()


def test_nodes_out_of_order_are_sorted():
    m = qconv_model(extra_nodes=[helper.make_node("Identity", ["y"], ["z"], name="id")])
    m.graph.node.reverse()
    assert pyqinfer.load(m)(np.zeros((1, 3, 8, 8), np.uint8)).shape == (1, 4, 8, 8)


def test_batchnorm_is_rejected_with_advice():
    extra = [helper.make_node("DequantizeLinear", ["y", "ys", "yz"], ["f"], name="dq"),
             helper.make_node("BatchNormalization", ["f", "bs", "bb", "bm", "bv"], ["bn"], name="bn1")]
    m = qconv_model(extra_nodes=extra)
    for k in ("bs", "bb", "bm", "bv"):
        m.graph.initializer.append(numpy_helper.from_array(np.ones(4, np.float32), k))
    m.graph.output[0].type.tensor_type.elem_type = TP.FLOAT
    with pytest.raises(UnsupportedModelError, match=r"'bn1' \(BatchNormalization\).*fold it into the preceding"):
        pyqinfer.load(m)


def test_qdq_float_bias_and_float_weights_rejected():
    from onnx import helper as h
    inits = {"s": np.float32(0.1), "z": np.uint8(128), "w": np.ones((2, 3, 1, 1), np.float32),
             "b": np.ones(2, np.float32)}
    nodes = [h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), h.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             h.make_node("Conv", ["d", "w", "b"], ["c"], name="fconv"), h.make_node("QuantizeLinear", ["c", "s", "z"], ["y"])]
    g = h.make_graph(nodes, "t", [h.make_tensor_value_info("x", TP.FLOAT, [1, 3, 4, 4])],
                     [h.make_tensor_value_info("y", TP.UINT8, None)],
                     [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    with pytest.raises(UnsupportedModelError, match=r"'fconv' \(Conv\): weight 'w' is a float constant"):
        pyqinfer.load(m)


def test_model_call_needs_single_input():
    m = pyqinfer.load(qconv_model())
    with pytest.raises(TypeError, match="single-input"):
        m(np.zeros((1, 3, 8, 8), np.uint8), np.zeros(1))


def _movement_model(node):
    g = helper.make_graph([node], "mv", [helper.make_tensor_value_info("x", TP.UINT8, [1, 4, 4, 4])],
                          [helper.make_tensor_value_info("y", TP.UINT8, None)],
                          [numpy_helper.from_array(np.array([1, 1, 1e9, 2], np.float32), "sc"),
                           numpy_helper.from_array(np.array([0, 0, 10 ** 7, 0, 0, 0, 0, 0], np.int64), "pads")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("node,msg", [
    (helper.make_node("Resize", ["x", "", "sc"], ["y"], name="rs", mode="nearest"), r"'rs' \(Resize\): scales"),
    (helper.make_node("Resize", ["x", "", "sc"], ["y"], name="rs", mode="linear"), r"'rs' \(Resize\): mode 'linear'"),
    (helper.make_node("Pad", ["x", "pads"], ["y"], name="pad"), r"'pad' \(Pad\): pads .* absurdly large"),
    (helper.make_node("DepthToSpace", ["x"], ["y"], name="d2s", blocksize=0), r"'d2s' \(DepthToSpace\): blocksize"),
    (helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2, 0]), r"'mp' \(MaxPool\): attribute kernel_shape"),
    (helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[9, 9]), r"'mp' \(MaxPool\).*smaller than the kernel"),
])
def test_absurd_data_movement_attributes(node, msg):
    with pytest.raises(ValueError, match=msg):
        pyqinfer.load(_movement_model(node))
