"""pyqinfer verify (docs/verify.md): per-layer comparison of the engine with the contract,
the float64 reference (mismatches classified exactly as ties or real errors) and ONNX
Runtime; the CLI, its JSON schema and the HTML report."""
import json
import logging
from fractions import Fraction

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP, helper, numpy_helper

import pyqinfer
from pyqinfer.cli import main
from pyqinfer.verify import SCHEMA, classify, random_inputs, verify

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")
import graph_models as gm  # noqa: E402

logging.getLogger().setLevel(logging.ERROR)
_CACHE = {}


def quantized(kind, fmt, per_channel, act, tmp_path_factory):
    key = (kind, fmt, per_channel, act)
    if key not in _CACHE:
        shape = {"cnn": [1, 3, 16, 16], "mlp": [1, 1, 8, 8], "mlp_residual": [1, 32]}[kind]
        _CACHE[key] = gm.quantize(getattr(gm, kind)(), fmt, per_channel=per_channel, act=act, shape=shape,
                                  tmpdir=str(tmp_path_factory.mktemp("q")))
    return _CACHE[key]


def tie_model():
    """QLinearMatMul u8 x s8 -> u8 with s_a = s_b = 1, s_y = 14, so S = fl32(1/14) > 1/14.

    a = [255, 248], b = [[13], [1]]: acc = 3563 and the exact value is 3563/14 = 254.5, an
    exact tie. The float reference rounds it half to even (254); the fp32 requantization of
    the contract computes fl32(3563 * fl32(1/14)) = 254.50002 and rounds to 255."""
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in {
        "sa": np.float32(1), "za": np.uint8(0), "b": np.array([[13], [1]], np.int8), "sb": np.float32(1),
        "zb": np.int8(0), "sy": np.float32(14), "zy": np.uint8(0)}.items()]
    node = helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"], name="mm")
    g = helper.make_graph([node], "tie", [helper.make_tensor_value_info("a", TP.UINT8, ["N", 2])],
                          [helper.make_tensor_value_info("y", TP.UINT8, ["N", 1])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def check_schema(doc):
    """The JSON document of docs/verify.md ("JSON schema")."""
    assert doc["schema"] == SCHEMA
    for k, t in (("model", str), ("inputs", dict), ("ort", dict), ("layers", list), ("end_to_end", list),
                 ("first_divergent", dict), ("summary", dict), ("bit_exact", bool), ("exit_status", int),
                 ("notes", list)):
        assert isinstance(doc[k], t), k
    assert set(doc["first_divergent"]) == {"contract", "float_real", "ort", "any"}
    assert set(doc["ort"]) >= {"available", "version", "compared", "error", "level"}
    for r in doc["layers"]:
        for k in ("index", "name", "kind", "output", "dtype", "shape", "elements", "contract", "float", "ort",
                  "contract_ok", "ort_ok"):
            assert k in r, k
        assert r["contract"]["status"] in ("exact", "mismatch", "n/a", "error")
        if r["contract"]["status"] in ("exact", "mismatch"):
            assert 0 <= r["contract"]["exact"] <= r["contract"]["compared"] == r["elements"]
        f = r["float"]
        assert f["status"] in ("exact", "ties", "saturation", "real", "float", "n/a", "error")
        if f.get("kind") == "int":
            assert f["exact"] + f["ties"] + f["real"] + f["saturation"] + f["unclassified"] == f["compared"] \
                == r["elements"]
            assert sum(f["hist"].values()) == f["compared"]
            for ex in f["examples"]:
                assert ex["class"] in ("tie", "real", "saturation")
        if r["ort"] is not None:
            assert r["ort"]["status"] in ("exact", "mismatch")
    for r in doc["end_to_end"]:
        assert {"output", "dtype", "shape", "elements", "float", "ort"} <= set(r)
    json.dumps(doc)  # serializable


@pytest.mark.parametrize("kind,fmt,pc,act", [("cnn", "QDQ", True, "uint8"), ("cnn", "QOperator", False, "int8"),
                                             ("mlp_residual", "QDQ", False, "uint8")])
def test_quantized_models_verify_exact(kind, fmt, pc, act, tmp_path_factory):
    q = quantized(kind, fmt, pc, act, tmp_path_factory)
    rep = verify(q, seed=3, batch=3)
    doc = rep.to_dict()
    check_schema(doc)
    assert rep.exit_status == 0 and rep.bit_exact and doc["ort"]["compared"] and doc["ort_exact"]
    for r in rep.layers:
        assert r["contract"]["status"] == "exact", r
        assert r["float"]["status"] in ("exact", "ties", "float"), r
        assert r["float"].get("real", 0) == 0
        assert r["ort"] is not None and r["ort"]["status"] == "exact", r
    assert doc["first_divergent"]["any"] is None
    kinds = {r["kind"] for r in rep.layers}
    if kind == "cnn":
        assert {"QLinearConv", "QLinearAdd", "MaxPool", "QLinearAveragePool", "QLinearConcat",
                "QLinearGlobalAveragePool", "QLinearMatMul"} <= kinds
    assert doc["inputs"]["input"]["shape"][0] == 3


def test_corrupted_layer_is_a_real_error_at_that_layer(tmp_path_factory):
    q = quantized("cnn", "QDQ", True, "uint8", tmp_path_factory)
    m = pyqinfer.load(q)
    k = [i for i, st in enumerate(m.plan.steps) if st.node.kind == "QLinearConv"][2]
    st = m.plan.steps[k]
    name = st.node.name
    fast, slow = st.fast, st.slow
    st.fast = lambda *a: fast(*a) + np.uint8(1)       # every element +1 (255 wraps to 0)
    st.slow = lambda *a: slow(*a) + np.uint8(1)
    rep = verify(m, onnx_model=q, seed=0, batch=2)
    assert rep.exit_status == 1 and not rep.bit_exact
    bad = rep.layer(name)
    assert bad["contract"]["status"] == "mismatch" and bad["contract"]["exact"] == 0
    assert bad["float"]["status"] == "real" and bad["float"]["real"] >= bad["elements"] - bad["float"]["exact"] > 0
    assert bad["float"]["ties"] == 0
    assert all(ex["class"] == "real" for ex in bad["float"]["examples"])
    assert bad["ort"]["status"] == "mismatch"
    assert rep.to_dict()["first_divergent"] == {"contract": name, "float_real": name, "ort": name, "any": name}
    # every layer is fed with the engine's own inputs: the error is attributed to that layer only
    for r in rep.layers:
        if r["name"] != name:
            assert r["contract"]["status"] == "exact", r["name"]
            assert r["float"].get("real", 0) == 0, r["name"]
    # the CLI prints the divergent layer and exits 1 (in-process, the same corrupted steps)
    assert name in rep.text() and "NOT BIT-EXACT" in rep.text()


def test_hand_built_tie_is_classified_tie():
    model = tie_model()
    a = np.array([[255, 248], [0, 0], [17, 3]], np.uint8)
    rep = verify(model, {"a": a})
    r = rep.layer("mm")
    assert rep.exit_status == 0
    assert r["contract"]["status"] == "exact" and r["ort"]["status"] == "exact"
    f = r["float"]
    assert (f["exact"], f["ties"], f["real"], f["max_lsb"]) == (2, 1, 0, 1) and f["status"] == "ties"
    ex = f["examples"][0]
    assert (ex["engine"], ex["reference"], ex["contract"], ex["exact_value"], ex["class"]) == \
        (255, 254, 255, "509/2", "tie")
    assert f["hist"] == {"0": 2, "1": 1}
    # the end-to-end float model rounds the tie to even too
    assert rep.to_dict()["end_to_end"][0]["float"]["max_lsb"] == 1


def test_classify_rules():
    V, E = Fraction(509, 2), Fraction(1, 10 ** 4)
    assert classify(255, 254, 255, V, E) == "tie"
    assert classify(255, 254, 254, V, E) == "real"          # the engine is not the contract
    assert classify(256, 254, 256, V, E) == "real"          # 2 LSB
    assert classify(255, 254, 255, Fraction(2543, 10), E) == "real"   # 254.3: far from the boundary
    assert classify(255, 254, 255, Fraction(509, 2) - Fraction(1, 10 ** 5), E) == "tie"
    assert classify(255, 254, 255, Fraction(509, 2) - Fraction(2, 10 ** 4), E) == "real"
    assert classify(3, 2, 3, None, None) == "real"          # an op without rounding


def test_cli_json_html_and_inputs(tmp_path, tmp_path_factory, capsys):
    q = quantized("cnn", "QDQ", True, "uint8", tmp_path_factory)
    path = tmp_path / "m.onnx"
    onnx.save(q, str(path))
    js, ht = tmp_path / "r.json", tmp_path / "r.html"
    assert main(["verify", str(path), "--seed", "1", "--batch", "2", "--json", str(js), "--html", str(ht)]) == 0
    out = capsys.readouterr().out
    assert "first divergent layer: none" in out and "BIT-EXACT" in out and "QLinearConv" in out
    doc = json.loads(js.read_text())
    check_schema(doc)
    assert doc["seed"] == 1 and doc["batch"] == 2 and doc["exit_status"] == 0
    page = ht.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") >= sum("hist" in r["float"] for r in doc["layers"]) > 10
    assert "Conv4" in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    # given inputs (.npz) and JSON on stdout
    x = random_inputs(pyqinfer.load(q), seed=5, batch=1)
    np.savez(tmp_path / "x.npz", **x)
    assert main(["verify", str(path), "--inputs", str(tmp_path / "x.npz"), "--json", "-", "--no-ort"]) == 0
    doc2 = json.loads(capsys.readouterr().out)
    check_schema(doc2)
    assert doc2["seed"] is None and doc2["ort"]["compared"] is False and doc2["ort_exact"] is None
    assert all(r["ort"] is None for r in doc2["layers"])


def test_cli_errors_and_help(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "missing.onnx")]) == 2
    assert "error" in capsys.readouterr().err
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    assert main(["verify", str(tmp_path / "bad.onnx")]) == 2
    onnx.save(tie_model(), str(tmp_path / "t.onnx"))
    np.savez(tmp_path / "wrong.npz", a=np.zeros((2, 3), np.uint8))
    assert main(["verify", str(tmp_path / "t.onnx"), "--inputs", str(tmp_path / "wrong.npz")]) == 2
    assert "shape" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    h = capsys.readouterr().out
    for word in ("--inputs", "--json", "--html", "--seed", "--batch", "exit status", "tie", "docs/verify.md"):
        assert word in h, word


def test_random_inputs_cover_the_quantizer_range(tmp_path_factory):
    m = pyqinfer.load(quantized("mlp", "QOperator", False, "int8", tmp_path_factory))
    x = random_inputs(m, seed=0, batch=4)["input"]
    assert x.dtype == np.float32 and x.shape == (4, 1, 8, 8)
    assert not np.array_equal(x, random_inputs(m, seed=1, batch=4)["input"])
    q = pyqinfer.load(tie_model())
    a = random_inputs(q, seed=0, batch=5)["a"]
    assert a.dtype == np.uint8 and a.shape == (5, 2)


def test_ort_mismatch_after_a_float_op_is_not_counted(tmp_path_factory):
    """The QOperator movement model ends in a float GlobalAveragePool (numpy float32, outside
    the contract): ORT differs there, and in the Flatten after it only because its input
    differs. verify attributes both, counts neither, and exits 0."""
    q = gm.quantize(gm.movement(), "QOperator", per_channel=True, act="uint8", shape=[1, 3, 8, 8],
                    tmpdir=str(tmp_path_factory.mktemp("mv")))
    rep = verify(q, seed=1, batch=4)
    check_schema(rep.to_dict())
    fl = [r for r in rep.layers if r["kind"].startswith("FloatOp")]
    assert fl and all(r["contract"]["status"] == "n/a" for r in fl)
    diverged = [r for r in rep.layers if r["ort"] and r["ort"]["status"] != "exact"]
    assert diverged, "ORT now equals numpy on the float pool: pick another seed"
    assert all(not r["ort"]["counts"] for r in diverged)
    assert all(r["ort"]["inherited"] for r in diverged if not r["kind"].startswith("FloatOp"))
    assert rep.exit_status == 0 and rep.to_dict()["first_divergent"]["ort"] is None
    assert "inherited" in rep.text()


def test_without_onnxruntime_the_contract_decides(monkeypatch):
    """ORT missing: nothing is compared with it, the verdict is the contract's, the report says so."""
    import pyqinfer.verify.ortref as ortref
    monkeypatch.setattr(ortref, "available", lambda: (False, None))
    rep = verify(tie_model(), seed=2, batch=4)
    doc = rep.to_dict()
    check_schema(doc)
    assert doc["ort"]["available"] is False and doc["ort"]["compared"] is False and doc["ort_exact"] is None
    assert rep.exit_status == 0 and all(r["ort"] is None for r in rep.layers)
    assert "not compared (not installed)" in rep.text()
    assert "ONNX Runtime not compared" in rep.html()
