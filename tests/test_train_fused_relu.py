"""A ReLU that ``prepare`` fuses into a layer is applied in every form of the layer.

With an output quantizer the fused ReLU is the requantization clamp at the zero point (unchanged);
without one (``act=None``: the dequantized int32 accumulator) it is a float32 ``max(out, 0)`` after
the dequantization, exported as an ONNX ``Relu`` on the float32 output. For Sequential and graph-mode
(torch.fx) models, Linear and Conv2d layers, int8, PoT weights in int8 and PoT weights as pyqinfer
shift layers, PWLQ (several weight parts): the training forward applies the ReLU; the eval form is
bit for bit the ReLU of the unfused eval form (which does go negative, so the check can fail);
``pyqinfer.load`` of the exported file gives the eval form's bits; ONNX Runtime does too for the
standard-op files; ``pyqinfer verify`` exits 0.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import pyqinfer  # noqa: E402
import pyqinfer.train as qt  # noqa: E402


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


# ------------------------------------------------------------------ models
def seq_linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(72, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(),
                         nn.Linear(16, 10), nn.ReLU()).eval()


def seq_conv():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1, stride=2),
                         nn.ReLU(), nn.Conv2d(8, 4, 3), nn.ReLU(), nn.Flatten()).eval()


class GraphNet(nn.Module):
    """Not a Sequential: prepare takes graph mode; the three ReLU spellings torch.fx sees."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.c1 = nn.Conv2d(2, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 8, 3, padding=1, stride=2)
        self.fc = nn.Linear(8 * 3 * 3, 10)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = self.c2(x).relu()
        return torch.relu(self.fc(torch.flatten(x, 1)))


def graph_net():
    return GraphNet().eval()


BUILDERS = {"seq_linear": (seq_linear, ["1", "3", "5"]), "seq_conv": (seq_conv, ["0", "2", "4"]),
            "graph": (graph_net, ["c1", "c2", "fc"])}

SCHEMES = {    # name -> (weight config, pyqinfer_domain)
    "int8": ({"scheme": "uniform", "bits": 8}, False),
    "pot4": ({"scheme": "pot", "bits": 4}, False),          # levels fit int8: standard ops
    "pot5_shift": ({"scheme": "pot", "bits": 5}, True),     # levels up to 2^14: pyqinfer.ShiftConv/MatMul
    "pwlq4": ({"scheme": "pwlq", "bits": 4}, False),        # several weight parts, summed in float32
}

# which layers (by position) have no output quantizer
ACT_NONE = {"all_act": [], "last_none": [2], "mid_none": [1], "all_none": [0, 1, 2]}


def _inputs(model_name, seed, n=48):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 2, 6, 6)
    return torch.randn(*shape, generator=g) * 1.5     # both signs: the layers' outputs go negative


def _prepared(model_name, scheme, act_none):
    build, names = BUILDERS[model_name]
    wcfg, domain = SCHEMES[scheme]
    cfg = {"default": {"weight": wcfg}}
    for i in ACT_NONE[act_none]:
        cfg[names[i]] = {"act": None}
    q = qt.prepare(build(), cfg)
    qt.calibrate(q, [_inputs(model_name, 100, 200)])
    return q.eval(), names, domain


def _capture(q, x):
    """{layer name: input} of every quantized layer in one eval forward."""
    seen, hooks = {}, []
    for name, layer in qt.quantized_layers(q):
        hooks.append(layer.register_forward_hook(lambda m, a, out, name=name: seen.__setitem__(name, a[0])))
    try:
        with torch.no_grad():
            q(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _check_eval_form(q, x, names, act_none):
    """Per layer, the fused eval form is the ReLU of the unfused one: max(out, 0) in float32 without
    an output quantizer (bit for bit, and the unfused output has negatives), the codes clamped at the
    zero point with one."""
    layers = dict(qt.quantized_layers(q))
    assert set(layers) == set(names)
    ins = _capture(q, x)
    for i, name in enumerate(names):
        layer = layers[name]
        assert layer.activation == "relu", f"{name}: the ReLU after it was not fused"
        assert (layer.out_quant is None) == (i in ACT_NONE[act_none])
        with torch.no_grad():
            fused = layer(ins[name])
            codes = layer.last_int_output
            layer.activation = None
            try:
                unfused = layer(ins[name])
                ucodes = layer.last_int_output
            finally:
                layer.activation = "relu"
        if layer.out_quant is None:
            assert fused.dtype == torch.float32 and codes is None
            assert (unfused < 0).any(), f"{name}: no negative pre-activation, the check proves nothing"
            assert fused.min() >= 0 and (fused == 0).any()
            want = np.maximum(unfused.numpy(), np.float32(0))
            assert np.array_equal(_bits(fused.numpy()), _bits(want)), name
        else:
            zp = float(layer.out_quant.qparams()["zero_point"])
            assert np.array_equal(codes.numpy(), np.maximum(ucodes.numpy(), zp)), name
            assert (fused >= 0).all()


def _ort_bits(proto, x):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x.numpy()})[0]


@pytest.mark.parametrize("act_none", sorted(ACT_NONE))
@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("model_name", sorted(BUILDERS))
def test_fused_relu_train_eval_export_agree(model_name, scheme, act_none, tmp_path):
    q, names, domain = _prepared(model_name, scheme, act_none)
    assert isinstance(q, torch.fx.GraphModule) == (model_name == "graph")
    assert not any(isinstance(m, nn.ReLU) for m in q.modules()), "every ReLU is fused"
    x = _inputs(model_name, 7)
    # training forward (fake quant): the ReLU is applied
    q.train()
    with torch.no_grad():
        t = q(x)
    q.eval()
    assert t.min() >= 0 and (t == 0).any()
    with torch.no_grad():
        want = q(x).numpy()
    assert want.min() >= 0 and (want == 0).any()
    # fake quant vs the integer form (float vs int32 bias, rounding rules): close, zero in the same places
    assert (t - torch.from_numpy(want)).abs().max() <= 0.05 * float(np.abs(want).max())
    assert ((t == 0) == torch.from_numpy(want == 0)).float().mean() >= 0.95
    _check_eval_form(q, x, names, act_none)
    # the exported file: pyqinfer.load gives the eval form's bits
    path = tmp_path / "m.onnx"
    proto = qt.export(q, x, str(path), pyqinfer_domain=domain)        # check=True: the bits on x
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    got = pyqinfer.load(str(path)).run({"x": x.numpy()})["y"]
    assert np.array_equal(_bits(got), _bits(want))
    relus = {n.name for n in proto.graph.node if n.op_type == "Relu"}
    want_relus = {f"{names[i]}_relu" for i in ACT_NONE[act_none]}
    assert relus == want_relus, "a float32 Relu exactly for the layers without output quantizer"
    if domain:
        assert {"ShiftConv", "ShiftMatMul"} & {n.op_type for n in proto.graph.node}
    else:
        assert np.array_equal(_bits(_ort_bits(proto, x)), _bits(want)), "ONNX Runtime differs"


@pytest.mark.parametrize("case", [("seq_conv", "int8", "all_none"), ("graph", "pot4", "mid_none"),
                                  ("seq_linear", "pot5_shift", "last_none"), ("seq_linear", "pwlq4", "all_none")])
def test_verify_exits_zero(case, tmp_path, capsys):
    from pyqinfer.cli import main
    model_name, scheme, act_none = case
    q, _, domain = _prepared(model_name, scheme, act_none)
    path = tmp_path / "m.onnx"
    qt.export(q, _inputs(model_name, 3), str(path), pyqinfer_domain=domain)
    np.savez(tmp_path / "x.npz", x=_inputs(model_name, 4, 8).numpy())
    for extra in ([], ["--inputs", str(tmp_path / "x.npz")]):
        assert main(["verify", str(path), *extra]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "Relu" in out and "first divergent layer: none" in out


def test_repro_linear_relu_act_none():
    """The report: Linear + ReLU with act=None gave negative eval-mode outputs (min about -0.9)."""
    torch.manual_seed(0)
    q = qt.prepare(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), {"0": {"act": None}})
    x = torch.randn(256, 4)
    qt.calibrate(q, [x])
    q.eval()
    with torch.no_grad():
        y = q(x)
    assert y.min() == 0 and (y > 0).any()
    got = pyqinfer.load(qt.export(q, x)).run({"x": x.numpy()})["y"]
    assert np.array_equal(_bits(got), _bits(y.numpy()))


def test_fuse_relu_false_keeps_the_relu_module():
    """``fuse_relu=False``: the ReLU stays a module after a float output, applied by the model and
    exported as the same float32 Relu; the layer itself has no activation."""
    q = qt.prepare(seq_linear(), {"default": {"fuse_relu": False}, "5": {"act": None}})
    qt.calibrate(q, [_inputs("seq_linear", 100, 200)])
    q.eval()
    assert all(m.activation is None for _, m in qt.quantized_layers(q))
    assert isinstance(q[6], nn.ReLU)
    x = _inputs("seq_linear", 9)
    with torch.no_grad():
        want = q(x).numpy()
    assert want.min() >= 0
    proto = qt.export(q, x)
    assert [n.name for n in proto.graph.node if n.op_type == "Relu"] == ["6"]
    got = pyqinfer.load(proto).run({"x": x.numpy()})["y"]
    assert np.array_equal(_bits(got), _bits(want))
