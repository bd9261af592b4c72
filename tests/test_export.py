"""pyqinfer.train.export: the round trip is bit-exact.

For every scheme the exporter writes (uniform int8 / int4 / mixed precision,
PoT / APoT / log levels in int8, PWLQ's four parts, asymmetric and signed
activations, a layer without output quantizer; with ``pyqinfer_domain=True``
threshold activations and PoT / APoT / log / DeepShift-Q weights as shift
layers, including codes wider than int8 and a saturating ``acc_bits``): ``pyqinfer.load(path).run(x)``
equals the prepared model's eval-mode output element for element (float32 bits),
on random inputs (including values outside the input quantizer's range) and on
the digits test images; every layer's integer codes equal ``last_int_output``;
``onnx.checker`` passes; ONNX Runtime gives the same bits (all ops here are
standard-domain with the contract's fp32 requantization).
"""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from torch import nn  # noqa: E402

import pyqinfer  # noqa: E402
import pyqinfer.train as qt  # noqa: E402
from pyqinfer.train.export import ExportError  # noqa: E402

DEMO = os.path.join(os.path.dirname(pyqinfer.__file__), "data", "demo", "digits_test.npz")


def cnn(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(8, 16, 3, padding=1, stride=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
                      nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    bn = m[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    return qt.fold_bn_sequential(m.eval())


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Dropout(0.1), nn.Linear(48, 24),
                         nn.ReLU(), nn.Linear(24, 10)).eval()


def W(**kw):
    return {"weight": kw}


# name -> (builder, config); layer names are the Sequential indices
CONFIGS = {
    "cnn_int8": (cnn, {"default": {"weight": {"bits": 8}, "act": {"bits": 8}}}),
    "cnn_int4": (cnn, {"default": {"weight": {"bits": 4}, "act": {"bits": 8}}}),
    "cnn_mixed": (cnn, {"default": {"weight": {"bits": 4}, "act": {"bits": 4, "observer": "mse"}},
                        "0": W(bits=8), "10": {"weight": {"bits": 8}, "act": {"bits": 8}}}),
    "cnn_w3a5_asym_w": (cnn, {"default": {"weight": {"bits": 3, "symmetric": False}, "act": {"bits": 5}}}),
    "cnn_pertensor": (cnn, {"default": {"weight": {"bits": 8, "per_channel": False}, "act": {"bits": 8}}}),
    "cnn_pot4": (cnn, {"default": {"weight": {"scheme": "pot", "bits": 4}}}),
    "cnn_apot4": (cnn, {"default": {"weight": {"scheme": "apot", "bits": 4, "weight_norm": False}}}),
    "cnn_log4": (cnn, {"default": {"weight": {"scheme": "log", "bits": 4}}}),
    "cnn_pwlq4": (cnn, {"default": {"weight": {"scheme": "pwlq", "bits": 4}}}),
    "cnn_logits_int32": (cnn, {"default": {"weight": {"bits": 8}}, "10": {"act": None}}),
    "cnn_relu_asym": (cnn, {"default": {"weight": {"bits": 8}, "act": {"bits": 8, "symmetric": False}}}),
    "mlp_int8": (mlp, {}),
    "mlp_int4": (mlp, {"default": W(bits=4)}),
    "mlp_mixed": (mlp, {"default": {"weight": {"bits": 4}, "act": {"bits": 4}}, "1": W(bits=8),
                        "6": {"weight": {"bits": 8}, "act": {"bits": 8}}}),
    "mlp_signed_act": (mlp, {"default": {"act": {"bits": 8, "signed": True, "symmetric": True}},
                             "1": {"fuse_relu": True}}),
    "mlp_pwlq_noact": (mlp, {"default": {"weight": {"scheme": "pwlq", "bits": 4}}, "6": {"act": None}}),
    "mlp_int2": (mlp, {"default": {"weight": {"bits": 2}, "act": {"bits": 2}}, "6": {"act": {"bits": 8}}}),
    "mlp_input4": (mlp, {"default": {"input": {"bits": 4}, "weight": {"bits": 4}, "act": {"bits": 4}},
                         "6": {"act": {"bits": 8}}}),
}


def _digits():
    d = np.load(DEMO)
    return torch.from_numpy(d["x_test"].astype(np.float32))


def _prepared(name, qat_steps=0):
    return prepared_model(*CONFIGS[name], qat_steps)


def prepared_model(build, cfg, qat_steps=0):
    """``build()`` prepared with ``cfg``, calibrated on 200 digits, then ``qat_steps`` QAT steps."""
    q = qt.prepare(build(), cfg)
    xcal = _digits()[:200] * 1.0
    qt.calibrate(q, [xcal])
    if qat_steps:                    # a few QAT steps move weights, scales and alphas off their PTQ values
        opt = torch.optim.SGD(q.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(1)
        q.train()
        for _ in range(qat_steps):
            x = _digits()[torch.randint(0, 360, (32,), generator=g)]
            loss = q(x).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return q.eval()


def _inputs(seed):
    g = torch.Generator().manual_seed(seed)
    real = _digits()
    rand = torch.rand(64, 1, 8, 8, generator=g) * 1.4 - 0.2      # beyond [0, 1]: saturation
    ties = torch.round(torch.rand(16, 1, 8, 8, generator=g) * 255) / 255   # on the input grid
    return {"real": real, "random": rand, "grid": ties}


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


@pytest.mark.parametrize("qat", [0, 3], ids=["ptq", "qat"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_round_trip_bit_exact(name, qat, tmp_path):
    q = _prepared(name, qat)
    path = tmp_path / f"{name}.onnx"
    proto = qt.export(q, _digits()[:4], str(path), check=False)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    m = pyqinfer.load(str(path))
    layers = qt.quantized_layers(q)
    for kind, x in _inputs(qat).items():
        with torch.no_grad():
            want = q(x).numpy()
        got = m.run({"x": x.numpy()})["y"]
        assert got.shape == want.shape and got.dtype == np.float32
        diff = int((_bits(got) != _bits(want)).sum())
        assert diff == 0, f"{name} {kind}: {diff} of {want.size} outputs differ"
        # the integer codes of every layer with an output quantizer
        for lname, layer in layers:
            if layer.out_quant is None:
                continue
            t = _layer_output(proto, lname.replace(".", "_"))
            codes = m.run({"x": x.numpy()}, outputs=[t])[t]
            assert np.array_equal(codes.astype(np.float64), layer.last_int_output.numpy()), (name, lname, t)


def _layer_output(proto, base):
    """The integer output of layer ``base``: the last node named base, base_q or base_clip_q."""
    names = [n.output[0] for n in proto.graph.node]
    for cand in (f"{base}_clip_q", f"{base}_q", base):
        if cand in names:
            return cand
    raise AssertionError(f"no output tensor for layer {base}: {names}")


@pytest.mark.parametrize("name", ["cnn_int8", "cnn_int4", "cnn_mixed", "cnn_pot4", "cnn_pwlq4",
                                  "cnn_logits_int32", "mlp_int4", "mlp_pwlq_noact"])
def test_onnxruntime_matches(name):
    ort = pytest.importorskip("onnxruntime")
    q = _prepared(name, 2)
    proto = qt.export(q, _digits()[:4])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for kind, x in _inputs(5).items():
        with torch.no_grad():
            want = q(x).numpy()
        got = sess.run(None, {"x": x.numpy()})[0]
        assert np.array_equal(_bits(got), _bits(want)), f"{name} {kind}: ORT differs"


def test_export_api(tmp_path):
    q = _prepared("cnn_int8")
    proto = qt.export(q, _digits()[:2], tmp_path / "m.onnx")      # PathLike accepted, check on
    assert os.path.getsize(tmp_path / "m.onnx") > 0
    assert [i.name for i in proto.graph.input] == ["x"] and [o.name for o in proto.graph.output] == ["y"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [1, 8, 8]
    assert {n.op_type for n in proto.graph.node} >= {"QuantizeLinear", "QLinearConv", "QGemm", "MaxPool",
                                                     "DequantizeLinear"}
    assert q.training is False
    q.train()
    qt.export(q, _digits()[:2])
    assert q.training is True         # the mode is restored
    m = pyqinfer.load(proto)
    assert m(_digits()[:7].numpy()).shape == (7, 10)   # free batch dimension
    with pytest.raises(TypeError, match="example_input"):
        qt.export(q, np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(TypeError, match="model"):
        qt.export("model", _digits()[:1])


def test_int4_weights_stored_as_int4():
    proto = qt.export(_prepared("cnn_mixed"), _digits()[:2])
    types = {t.name: t.data_type for t in proto.graph.initializer}
    assert types["4_weight"] == onnx.TensorProto.INT4           # the middle conv: 4-bit
    assert types["0_weight"] == onnx.TensorProto.INT8           # first layer 8-bit
    m = pyqinfer.load(proto)
    wb = {r["name"]: r["weight_bytes"] for r in m.layers()}
    assert wb["4"] < 16 * 8 * 9       # packed nibbles (+ bias), less than the int8 size


def test_threshold_activations_need_the_domain_flag():
    """Threshold activations are a pyqinfer-domain MultiThreshold: only with pyqinfer_domain=True."""
    m = cnn()
    q = qt.prepare(m, {"default": {"act": {"scheme": "qn", "bits": 2}}, "10": {"act": {"bits": 8}}})
    qt.calibrate(q, [_digits()[:64]])
    with pytest.raises(ExportError, match="MultiThreshold"):
        qt.export(q.eval(), _digits()[:2])


def _has_pyqinfer_domain():
    try:
        import pyqinfer.frontends.pyqinfer_domain  # noqa: F401
        return True
    except ImportError:
        return False


THRESHOLD_CONFIGS = {   # name -> (builder, activation quantizer of every layer but the logits)
    "cnn_qn2": (cnn, {"scheme": "qn", "bits": 2}),
    "mlp_qn3": (mlp, {"scheme": "qn", "bits": 3}),
    "cnn_apot4_act": (cnn, {"scheme": "apot", "bits": 4}),
    "mlp_pot3_act": (mlp, {"scheme": "pot", "bits": 3}),
}


def _threshold_model(name):
    build, act = THRESHOLD_CONFIGS[name]
    m = build()
    last = [n for n, mod in m.named_modules() if isinstance(mod, nn.Linear)][-1]
    q = qt.prepare(m, {"default": {"act": act}, last: {"act": {"scheme": "uniform", "bits": 8}}})
    qt.calibrate(q, [_digits()[:200]])
    return q.eval()


@pytest.mark.skipif(not _has_pyqinfer_domain(),
                    reason="waiting for the pyqinfer-domain importer (pyqinfer/frontends/pyqinfer_domain.py: "
                           "pyqinfer.MultiThreshold, docs/model-format.md section 9) on main")
@pytest.mark.parametrize("name", sorted(THRESHOLD_CONFIGS))
def test_round_trip_threshold_activations(name, tmp_path):
    """Threshold activations as pyqinfer.MultiThreshold on the int32 accumulator (bias folded
    into the thresholds), then the level lookup: bit-exact with the eval model."""
    q = _threshold_model(name)
    proto = qt.export(q, _digits()[:4], tmp_path / "t.onnx", pyqinfer_domain=True, check=False)
    onnx.checker.check_model(proto)
    assert "MultiThreshold" in {n.op_type for n in proto.graph.node}
    m = pyqinfer.load(str(tmp_path / "t.onnx"))
    for kind, x in _inputs(2).items():
        with torch.no_grad():
            want = q(x).numpy()
        got = m.run({"x": x.numpy()})["y"]
        assert np.array_equal(_bits(got), _bits(want)), f"{name} {kind}"


@pytest.mark.skipif(_has_pyqinfer_domain(), reason="the pyqinfer-domain importer is present")
def test_threshold_export_without_importer():
    """Without the importer the check cannot run: a clear ExportError; check=False writes the file."""
    q = _threshold_model("mlp_qn3")
    with pytest.raises(ExportError, match="pyqinfer ONNX domain"):
        qt.export(q, _digits()[:2], pyqinfer_domain=True)
    proto = qt.export(q, _digits()[:2], pyqinfer_domain=True, check=False)
    onnx.checker.check_model(proto)
    mt = [n for n in proto.graph.node if n.op_type == "MultiThreshold"]
    assert len(mt) == 2 and all(n.domain == "pyqinfer" for n in mt)
    assert {(o.domain, o.version) for o in proto.opset_import} >= {("pyqinfer", 1), ("", 21)}


def test_wide_codes_refused():
    """Log weights wider than int8 (shift codes up to 2^14) need shift layers: without the pyqinfer
    domain refused, naming the flag that writes them."""
    q = qt.prepare(mlp(), {"default": {"weight": {"scheme": "log", "bits": 5}}})
    qt.calibrate(q, [_digits()[:64]])
    q.eval()
    parts = q[1].integer_params()["parts"]
    if float(parts[0].w_int.abs().max()) <= 127:
        pytest.skip("this log configuration fits int8")
    with pytest.raises(ExportError, match="shift codes.*pyqinfer_domain=True"):
        qt.export(q, _digits()[:2])


def test_float_accumulator_bound_refused():
    """act=None after a huge layer: float32 accumulation could be inexact, so export refuses."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 600), nn.ReLU(), nn.Linear(600, 10)).eval()
    m[3].weight.data = torch.sign(torch.randn(10, 600))     # every weight code at +-127: 600*255*127 > 2^24
    q = qt.prepare(m, {"3": {"act": None}})
    qt.calibrate(q, [_digits()[:64] * 10])
    with pytest.raises(ExportError, match="2\\^24"):
        qt.export(q.eval(), _digits()[:2])


def test_unsupported_module():
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(36, 10)).eval()
    q = qt.prepare(m, {})
    qt.calibrate(q, [_digits()[:16]])
    with pytest.raises(ExportError, match="AvgPool2d"):
        qt.export(q.eval(), _digits()[:2])


def test_readme_pytorch_path(tmp_path, monkeypatch):
    """The README's 'From a PyTorch model to a verified integer model' block runs as written."""
    import re
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    blocks = re.findall(r"```py\n(.*?)```", open(readme, encoding="utf-8").read(), re.S)
    assert len(blocks) == 1, "README lost its PyTorch example"
    monkeypatch.chdir(tmp_path)
    ns = {"model": cnn(), "x": _digits()[:64]}
    exec(compile(blocks[0], readme, "exec"), ns)
    assert os.path.getsize(tmp_path / "model.onnx") > 0


# ---------------------------------------------------------------- shift layers (pyqinfer domain)
SHIFT_CONFIGS = {   # name -> (builder, config, at least one layer's integer weights wider than int8)
    "mlp_log5": (mlp, {"default": W(scheme="log", bits=5)}, True),
    "cnn_log5": (cnn, {"default": W(scheme="log", bits=5)}, True),
    "mlp_log5_sqrt2": (mlp, {"default": W(scheme="log", bits=5, base="sqrt2")}, True),
    "cnn_log4_sqrt2": (cnn, {"default": W(scheme="log", bits=4, base="sqrt2")}, False),
    "mlp_pot5": (mlp, {"default": W(scheme="pot", bits=5)}, True),
    "cnn_pot5": (cnn, {"default": W(scheme="pot", bits=5)}, True),
    "cnn_pot4": (cnn, {"default": W(scheme="pot", bits=4)}, False),
    "mlp_deepshift5": (mlp, {"default": W(scheme="deepshift", bits=5)}, True),
    "cnn_deepshift4": (cnn, {"default": W(scheme="deepshift", bits=4, rounding="stochastic", seed=0)}, False),
    "cnn_apot4_repo": (cnn, {"default": W(scheme="apot", bits=4, weight_norm=False)}, False),
    "mlp_apot7_repo": (mlp, {"default": W(scheme="apot", bits=7, weight_norm=False)}, True),
    "cnn_apot5_paper": (cnn, {"default": W(scheme="apot", bits=5, k=2, weight_norm=False)}, False),
    "mlp_apot7_paper": (mlp, {"default": W(scheme="apot", bits=7, k=2, weight_norm=False)}, True),
    "mlp_apot3_norm": (mlp, {"default": W(scheme="apot", bits=3)}, False),
    # mixed: 8-bit uniform first layer, wide shift codes inside, int32 logits
    "cnn_mixed_log5_logits": (cnn, {"default": W(scheme="log", bits=5), "0": W(scheme="uniform", bits=8),
                                   "10": {"act": None}}, True),
}


def _shift_prepared(name, qat_steps=0):
    build, cfg, _ = SHIFT_CONFIGS[name]
    return prepared_model(build, cfg, qat_steps)


def _wide(q):
    return any(float(m.integer_params()["parts"][0].w_int.abs().max()) > 127 for _, m in qt.quantized_layers(q))


SHIFT_QAT = ("mlp_log5", "cnn_pot5", "mlp_deepshift5", "mlp_apot7_paper", "cnn_log4_sqrt2")


@pytest.mark.parametrize("name,qat", [(n, 0) for n in sorted(SHIFT_CONFIGS)] + [(n, 2) for n in SHIFT_QAT],
                         ids=[f"{n}-ptq" for n in sorted(SHIFT_CONFIGS)] + [f"{n}-qat" for n in SHIFT_QAT])
def test_round_trip_shift_layers(name, qat, tmp_path):
    """Every level-set weight scheme as pyqinfer.ShiftConv / ShiftMatMul: outputs and every layer's
    integer codes equal the eval model's bit for bit; codes wider than int8 need the shift layers."""
    q = _shift_prepared(name, qat)
    assert _wide(q) == SHIFT_CONFIGS[name][2], "the configuration no longer tests what its name says"
    path = tmp_path / f"{name}.onnx"
    proto = qt.export(q, _digits()[:8], str(path), pyqinfer_domain=True, shift_layers="all")   # check=True
    onnx.checker.check_model(onnx.load(str(path)))
    shift = [n for n in proto.graph.node if n.op_type in ("ShiftConv", "ShiftMatMul")]
    assert shift and all(n.domain == "pyqinfer" for n in shift)
    level_layers = [n for n, m in qt.quantized_layers(q) if m.weight_quant.scheme != "uniform"]
    assert len(shift) == len(level_layers)
    m = pyqinfer.load(str(path))
    kinds = {r["name"]: r["kind"] for r in m.layers()}
    assert {kinds[n.name] for n in shift} <= {"ShiftConv", "ShiftMatMul"}
    for kind, x in _inputs(qat + 7).items():
        with torch.no_grad():
            want = q(x).numpy()
        got = m.run({"x": x.numpy()})["y"]
        diff = int((_bits(got) != _bits(want)).sum())
        assert diff == 0, f"{name} {kind}: {diff} of {want.size} outputs differ"
        for lname, layer in qt.quantized_layers(q):
            if layer.out_quant is None:
                continue
            t = _layer_output(proto, lname.replace(".", "_"))
            codes = m.run({"x": x.numpy()}, outputs=[t])[t]
            assert np.array_equal(codes.astype(np.float64), layer.last_int_output.numpy()), (name, lname, t)
    if not SHIFT_CONFIGS[name][2]:
        # fits int8: the default (shift_layers="wide") keeps the int8 standard ops
        p2 = qt.export(q, _digits()[:8], pyqinfer_domain=True)
        assert not {n.op_type for n in p2.graph.node} & {"ShiftConv", "ShiftMatMul"}


def test_shift_layer_codes_and_attributes():
    """The codes in the file decode to the layer's integer weights; the attributes name the codebook."""
    from pyqinfer import quant
    from pyqinfer.train.export import shift_codes
    q = _shift_prepared("cnn_log5")
    proto = qt.export(q, _digits()[:2], pyqinfer_domain=True)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    node = next(n for n in proto.graph.node if n.op_type == "ShiftConv")
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    assert a["scheme"] == b"log" and a["base"] == b"2" and a["bits"] == 5 and a["rule"] == b"exact"
    assert a["acc_bits"] == 32 and a["mode"] == b"fp32" and a["e_min"] == 0
    layer = q[0]
    w = layer.integer_params()["parts"][0].w_int.numpy()
    assert a["w_shape"] == list(w.shape) and np.abs(w).max() > 127
    codes = shift_codes(layer)
    cb = quant.log_codebook(5, e_min=a["e_min"], e_max=a["e_max"], base=2, signed=True)
    got = quant.unpack(inits[node.input[3]], w.shape, cb)
    ints, _ = got.to_integers()
    assert np.array_equal(ints.astype(np.float64), w)
    assert inits[node.input[3]].size == (w.size * 5 + 7) // 8            # 5 bits a weight
    assert np.array_equal(inits[node.input[4]], codes.scale)


def test_shift_threshold_activations(tmp_path):
    """Wide shift weights followed by threshold activations: MultiThreshold on the shift layer's
    int32 accumulator (bias inside), bit-exact."""
    m = mlp()
    q = qt.prepare(m, {"default": {"weight": {"scheme": "log", "bits": 5}, "act": {"scheme": "qn", "bits": 2}},
                       "6": {"act": {"scheme": "uniform", "bits": 8}}})
    qt.calibrate(q, [_digits()[:200]])
    q.eval()
    assert _wide(q)
    proto = qt.export(q, _digits()[:8], pyqinfer_domain=True)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("MultiThreshold") == 2 and ops.count("ShiftMatMul") == 3
    mod = pyqinfer.load(proto)
    for kind, x in _inputs(3).items():
        with torch.no_grad():
            want = q(x).numpy()
        assert np.array_equal(_bits(mod.run({"x": x.numpy()})["y"]), _bits(want)), kind


def test_shift_acc_bits_saturates():
    """A declared acc_bits narrower than the accumulator: the eval form and the shift layer saturate
    once to it (semantics 12.2), bit-exactly; a standard op cannot, so without the domain: refused."""
    # 4-bit log levels fit int8: the default shift_layers="wide" makes shift layers of the two layers
    # whose acc_bits can saturate and keeps the int8 QGemm for the last one
    cfg = {"default": {"weight": {"scheme": "log", "bits": 4}}, "1": {"acc_bits": 16}, "4": {"acc_bits": 16}}
    build = SHIFT_CONFIGS["mlp_log5"][0]
    q = qt.prepare(build(), cfg)
    qt.calibrate(q, [_digits()[:200]])
    q.eval()
    ref = qt.prepare(build(), {"default": cfg["default"]})
    qt.calibrate(ref, [_digits()[:200]])
    ref.eval()
    x = torch.cat([_digits(), _inputs(4)["random"]])
    with torch.no_grad():
        want = q(x).numpy()
        unsat = ref(x).numpy()
    assert not np.array_equal(want, unsat), "acc_bits=16 never saturates here: the test proves nothing"
    proto = qt.export(q, x, pyqinfer_domain=True)             # check=True on inputs that saturate
    acc = {n.name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}["acc_bits"]
           for n in proto.graph.node if n.op_type == "ShiftMatMul"}
    assert acc == {"1": 16, "4": 16} and "QGemm" in {n.op_type for n in proto.graph.node}
    got = pyqinfer.load(proto).run({"x": x.numpy()})["y"]
    assert np.array_equal(_bits(got), _bits(want))
    with pytest.raises(ExportError, match="acc_bits=16 can saturate"):
        qt.export(q, x)


def test_acc_bits_standard_ops():
    """acc_bits on int8 layers: written as verified metadata when the bound holds, refused when it can
    saturate (standard ops never saturate)."""
    q = qt.prepare(mlp(), {"1": {"acc_bits": 24}, "4": {"acc_bits": 24}})
    qt.calibrate(q, [_digits()[:200]])
    proto = qt.export(q.eval(), _digits()[:8])                 # check=True: pyqinfer.load verifies
    props = {p.key: p.value for p in proto.metadata_props}
    assert props == {"pyqinfer.acc_bits:1": "24", "pyqinfer.acc_bits:4": "24"}
    q = qt.prepare(mlp(), {"1": {"acc_bits": 12}})
    qt.calibrate(q, [_digits()[:200]])
    with pytest.raises(ExportError, match="verified declaration"):
        qt.export(q.eval(), _digits()[:8], pyqinfer_domain=True)
    with pytest.raises(ValueError, match="acc_bits"):
        qt.prepare(mlp(), {"1": {"acc_bits": 40}})


def test_shift_int32_bound_refused():
    """Without acc_bits the eval form wraps at int32 and a shift layer saturates: a layer whose
    accumulator can leave int32 is refused, naming acc_bits."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 700), nn.ReLU(), nn.Linear(700, 10)).eval()
    m[3].weight.data = torch.sign(torch.randn(10, 700))        # every weight at the top PoT level 2^14
    q = qt.prepare(m, {"default": {"weight": {"scheme": "pot", "bits": 5}}})
    qt.calibrate(q, [_digits()[:64]])
    with pytest.raises(ExportError, match="declare acc_bits"):
        qt.export(q.eval(), _digits()[:2], pyqinfer_domain=True)
    with pytest.raises(ValueError, match="shift_layers"):
        qt.export(q, _digits()[:2], pyqinfer_domain=True, shift_layers="some")
