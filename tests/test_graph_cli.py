"""pyqinfer run / inspect, the IR printer, and small import features (initializer inputs,
Constant nodes, broadcasting adds)."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP, helper, numpy_helper

import pyqinfer
from pyqinfer.frontends.onnx import import_onnx

ort = pytest.importorskip("onnxruntime")


def main(argv):
    # Imported at call time: pyqinfer.cli binds sys.stdout as a default argument of its bench
    # commands, so importing it at collection (before capsys) would break other tests' capture.
    from pyqinfer.cli import main as cli_main
    return cli_main(argv)


def small_model(ir_version=8, init_as_input=False):
    """QuantizeLinear -> QLinearMatMul -> QLinearAdd with b repeated along the leading axis
    -> Reshape (shape from a Constant node) -> DequantizeLinear; an unused Constant node."""
    rng = np.random.default_rng(0)
    inits = {"s": np.float32(0.05), "z": np.uint8(120), "w": rng.integers(-128, 128, (16, 6)).astype(np.int8),
             "ws": np.float32(0.01), "wz": np.int8(0), "ys": np.float32(0.1), "yz": np.uint8(128),
             "bias": rng.integers(0, 256, (6,)).astype(np.uint8), "cs": np.float32(0.13), "cz": np.uint8(100)}
    nodes = [helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([0, 2, 3], np.int64))),
             helper.make_node("Constant", [], ["unused"], value_float=1.5),
             helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant"),
             helper.make_node("QLinearMatMul", ["q", "s", "z", "w", "ws", "wz", "ys", "yz"], ["mm"], name="mm"),
             helper.make_node("QLinearAdd", ["mm", "ys", "yz", "bias", "s", "z", "cs", "cz"], ["add"],
                              domain="com.microsoft", name="addb"),
             helper.make_node("Reshape", ["add", "shape"], ["r"], name="reshape"),
             helper.make_node("DequantizeLinear", ["r", "cs", "cz"], ["y"], name="dq")]
    inputs = [helper.make_tensor_value_info("x", TP.FLOAT, ["batch", 16])]
    if init_as_input:
        inputs.append(helper.make_tensor_value_info("w", TP.INT8, [16, 6]))
    g = helper.make_graph(nodes, "small", inputs, [helper.make_tensor_value_info("y", TP.FLOAT, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = ir_version
    return m


@pytest.mark.parametrize("init_as_input", [False, True])
def test_small_model_vs_ort(init_as_input):
    model = small_model(init_as_input=init_as_input)
    m = pyqinfer.load(model)
    assert [i.name for i in m.inputs] == ["x"]          # an input with an initializer is a constant
    assert m.outputs[0].shape == ("batch", 2, 3)
    x = np.random.default_rng(1).normal(0, 2, (7, 16)).astype(np.float32)
    y = m(x)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert y.shape == (7, 2, 3) and np.array_equal(y, ref)
    # the ONNX float rule for the Add is offered too, and differs only at near-ties
    y2 = pyqinfer.load(model, add_rule="onnx")(x)
    cs = np.float32(0.13)
    assert np.abs(np.rint(y2 / cs) - np.rint(y / cs)).max() <= 1


def test_ir_pretty_and_kinds():
    g = import_onnx(small_model())
    text = g.pretty()
    assert "QLinearMatMul(q) -> mm" in text and "QLinearAdd(mm, " in text and "# addb" in text
    assert "x: float32[batchx16]" in text and "[s=0.05 zp=120]" in text
    assert {n.kind for n in g.nodes} == {"QuantizeLinear", "QLinearMatMul", "QLinearAdd", "Reshape", "DequantizeLinear"}
    assert "unused" not in g.constants and "unused" not in g.tensors
    assert g.meta["format"] == "onnx-qoperator"
    for kind, spec in pyqinfer.graph.KINDS.items():
        assert len(spec) == 4, kind


def test_cli_run_and_inspect(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(small_model(), str(path))
    x = np.random.default_rng(2).normal(0, 2, (3, 16)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    assert main(["run", str(path), "--inputs", str(tmp_path / "x.npz"), "--out", str(tmp_path / "y.npz")]) == 0
    with np.load(tmp_path / "y.npz") as z:
        assert np.array_equal(z["y"], pyqinfer.load(str(path))(x))
    np.save(tmp_path / "x.npy", x)       # one-input models also take a .npy
    assert main(["run", str(path), "--inputs", str(tmp_path / "x.npy")]) == 0
    capsys.readouterr()
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "QLinearMatMul" in out and "GEMM (" in out and "total: 5 steps" in out and "96 weight bytes" in out
    assert main(["inspect", str(path), "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [r["kind"] for r in recs["layers"]][:2] == ["QuantizeLinear", "QLinearMatMul"]
    assert recs["layers"][1]["macs"] == 16 * 6
    assert main(["inspect", str(path), "--graph"]) == 0
    assert "graph small" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    path = tmp_path / "bad.onnx"
    path.write_bytes(small_model().SerializeToString()[:50])
    assert main(["inspect", str(path)]) == 1
    assert "not a valid ONNX model" in capsys.readouterr().err
    good = tmp_path / "m.onnx"
    onnx.save(small_model(), str(good))
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 5), np.float32))
    assert main(["run", str(good), "--inputs", str(tmp_path / "x.npz")]) == 1
    assert "must have shape (batch, 16)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--inputs" in capsys.readouterr().out
