"""pyqinfer.train.export: grouped and depthwise QConv2d layers with level-set weights (PoT, APoT,
log, DeepShift-Q) as ``pyqinfer.ShiftConv`` with the ``group`` attribute (docs/model-format.md 9.1,
docs/semantics.md 12.4a), bit-exact round trips.

Each model has a depthwise conv (groups == channels), a depthwise conv with channel multiplier 2
(OC = 2C, groups = C), a grouped conv with groups=4 and one with groups=2 and dilation 2; BatchNorm
is folded into the first three (``fold_bn_sequential`` before ``prepare``). After PTQ calibration and
after a few QAT steps, ``pyqinfer.load`` of the exported file gives outputs equal to the model's
eval form (its integer forward, pyqinfer.train.layers) in float32 bits, on the digits images, on
random inputs beyond the input range (saturation) and on inputs on the quantization grid (ties);
every layer's integer codes equal ``last_int_output``; ``pyqinfer verify`` exits 0 on the file.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from torch import nn  # noqa: E402

import pyqinfer  # noqa: E402
import pyqinfer.train as qt  # noqa: E402
from pyqinfer.cli import main  # noqa: E402
from pyqinfer.train.export import SHIFT_CONV_MAX_GROUP, ExportError  # noqa: E402
from test_export import _bits, _digits, _layer_output, prepared_model  # noqa: E402

GROUPS = {"0": 1, "3": 8, "7": 8, "10": 4, "13": 2}       # QConv2d name -> groups in gnet()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """torch's float64 grouped convolution (the eval form) is several times slower with 2 threads on
    a busy 2-core machine; its integer results do not depend on the thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _randomize_bn(bn):
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.3, 0.3)


def gnet_float(seed=0):
    """The float model before BatchNorm folding (layer indices are the Sequential's)."""
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),                 # 0 1 2
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),       # 3 4 5 depthwise
        nn.MaxPool2d(2),                                                             # 6
        nn.Conv2d(8, 16, 3, padding=1, groups=8), nn.BatchNorm2d(16), nn.ReLU(),     # 7 8 9 depthwise x2
        nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.ReLU(),                        # 10 11  groups=4
        nn.Identity(),                                                               # 12
        nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=2), nn.ReLU(),            # 13 14  groups=2
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))                            # 15 16 17
    for bn in (m[1], m[4], m[8]):
        _randomize_bn(bn)
    return m.eval()


def gnet(seed=0):
    return qt.fold_bn_sequential(gnet_float(seed))


def W(**kw):
    return {"default": {"weight": kw}}


# name -> (config, whether the grouped layers' integer weights are wider than int8)
CONFIGS = {
    "pot4": (W(scheme="pot", bits=4), False),
    "pot5": (W(scheme="pot", bits=5), True),
    "apot4_repo": (W(scheme="apot", bits=4, weight_norm=False), False),
    "apot7_repo": (W(scheme="apot", bits=7, weight_norm=False), True),
    "apot5_paper": (W(scheme="apot", bits=5, k=2, weight_norm=False), False),
    "apot3_norm": (W(scheme="apot", bits=3), False),
    "log5": (W(scheme="log", bits=5), True),
    "log4_sqrt2": (W(scheme="log", bits=4, base="sqrt2"), False),
    "log5_sqrt2": (W(scheme="log", bits=5, base="sqrt2"), True),
    "deepshift5": (W(scheme="deepshift", bits=5), True),
    # unfused ReLUs: asymmetric uint8 / int8 activations, so the grouped layers' inputs have zero
    # points != 0 and their padding taps are the zero point (semantics 10.2)
    "pot5_asym_act": ({"default": {"weight": {"scheme": "pot", "bits": 5}, "fuse_relu": False,
                                   "act": {"bits": 8, "symmetric": False}}}, True),
    "log5_int8_act": ({"default": {"weight": {"scheme": "log", "bits": 5}, "fuse_relu": False,
                                   "act": {"bits": 8, "signed": True, "symmetric": False}}}, True),
}
QAT = ("pot5", "apot4_repo", "apot5_paper", "log5", "log4_sqrt2", "pot5_asym_act")


def _prepared(cfg, qat_steps=0, build=gnet):
    return prepared_model(build, cfg, qat_steps)


def _inputs(seed, shape=(1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    rand = torch.rand(48, *shape, generator=g) * 1.4 - 0.2                  # beyond [0, 1]: saturation
    ties = torch.round(torch.rand(16, *shape, generator=g) * 255) / 255      # on the input grid
    real = _digits()[torch.randperm(360, generator=g)[:96]]
    return {"real": real, "random": rand, "grid": ties}


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _eval_form(q, seed):
    """{input kind: (x, the eval form's output, {layer name: its integer output codes})}."""
    out = {}
    for kind, x in _inputs(seed).items():
        with torch.no_grad():
            y = q(x).numpy()
        out[kind] = (x, y, {n: m.last_int_output.numpy().copy() for n, m in qt.quantized_layers(q)
                            if m.out_quant is not None})
    return out


def _check_round_trip(proto, want, what):
    """Outputs and every layer's integer codes of pyqinfer.load(proto) equal the eval form's ``want``."""
    m = pyqinfer.load(proto)
    for kind, (x, y, codes) in want.items():
        tensors = {n: _layer_output(proto, n.replace(".", "_")) for n in codes}
        got = m.run({"x": x.numpy()}, outputs=["y", *tensors.values()])
        assert got["y"].shape == y.shape and got["y"].dtype == np.float32
        diff = int((_bits(got["y"]) != _bits(y)).sum())
        assert diff == 0, f"{what} {kind}: {diff} of {y.size} outputs differ"
        for n, t in tensors.items():
            assert np.array_equal(got[t].astype(np.float64), codes[n]), (what, kind, n, t)
    return m


def _verify_cli(path, tmp_path, x):
    np.savez(tmp_path / "x.npz", x=x.numpy())
    assert main(["verify", str(path), "--inputs", str(tmp_path / "x.npz"), "--no-ort", "--json",
                 str(tmp_path / "r.json")]) == 0
    assert main(["verify", str(path), "--seed", "3", "--batch", "4", "--no-ort", "--json",
                 str(tmp_path / "r2.json")]) == 0


@pytest.mark.parametrize("name,qat", [(n, 0) for n in CONFIGS] + [(n, 2) for n in QAT],
                         ids=[f"{n}-ptq" for n in CONFIGS] + [f"{n}-qat" for n in QAT])
def test_grouped_shift_round_trip(name, qat, tmp_path):
    cfg, wide = CONFIGS[name]
    q = _prepared(cfg, qat)
    layers = dict(qt.quantized_layers(q))
    assert {n: m.groups for n, m in layers.items() if isinstance(m, qt.QConv2d)} == GROUPS
    grouped_wide = any(float(layers[n].integer_params()["parts"][0].w_int.abs().max()) > 127
                       for n, g in GROUPS.items() if g > 1)
    assert grouped_wide == wide, "the configuration no longer tests what its table entry says"
    if name.endswith("_act"):
        assert all(int(layers[n].in_quant.qparams()["zero_point"].reshape(-1)[0]) != 0 for n in GROUPS if n != "0")
    path = tmp_path / f"{name}.onnx"
    proto = qt.export(q, _digits()[:8], str(path), pyqinfer_domain=True, shift_layers="all")   # check=True
    onnx.checker.check_model(onnx.load(str(path)))
    convs = {n.name: n for n in proto.graph.node if n.op_type == "ShiftConv"}
    assert set(convs) == set(GROUPS)
    for lname, g in GROUPS.items():
        a, layer = _attrs(convs[lname]), layers[lname]
        assert a.get("group", 1) == g and convs[lname].domain == "pyqinfer"
        assert a["w_shape"] == list(layer.weight.shape) and a["w_shape"][1] * g == layer.in_channels
        assert a["dilations"] == list(layer.dilation) and a["pads"] == [layer.padding[0], layer.padding[1]] * 2
    want = _eval_form(q, qat + 11)
    m = _check_round_trip(proto, want, name)
    kinds = {r["name"]: r["kind"] for r in m.layers()}
    assert all(kinds[n] == "ShiftConv" for n in GROUPS)
    _verify_cli(path, tmp_path, _inputs(5)["random"][:6])
    # the default shift_layers="wide": wide layers as ShiftConv (with their group), the others as
    # grouped QLinearConv; the same bits
    p2 = qt.export(q, _digits()[:8], pyqinfer_domain=True)
    ops2 = {n.name: n.op_type for n in p2.graph.node if n.name in GROUPS}
    if wide:
        assert "ShiftConv" in ops2.values()
    else:
        assert set(ops2.values()) == {"QLinearConv"}
        assert all(_attrs(n)["group"] == GROUPS[n.name] for n in p2.graph.node if n.name in GROUPS and
                   GROUPS[n.name] > 1)
    _check_round_trip(p2, want, f"{name} wide")


def test_grouped_shift_codes_decode_to_the_weights():
    """The ShiftConv codes of a depthwise and a grouped layer, unpacked in ONNX [OC, C/g, KH, KW]
    order, decode to the layer's integer weights."""
    from pyqinfer import quant
    q = _prepared(CONFIGS["log5"][0])
    proto = qt.export(q, _digits()[:2], pyqinfer_domain=True, shift_layers="all")
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    checked = []
    for n in proto.graph.node:
        if n.op_type != "ShiftConv" or GROUPS[n.name] == 1:
            continue
        checked.append(n.name)
        a = _attrs(n)
        w = q.get_submodule(n.name).integer_params()["parts"][0].w_int.numpy()
        assert a["w_shape"] == list(w.shape) and w.shape[1] in (1, 2, 4, 8)
        cb = quant.log_codebook(a["bits"], e_min=a["e_min"], e_max=a["e_max"], base=2, signed=True)
        ints, _ = quant.unpack(inits[n.input[3]], w.shape, cb).to_integers()
        assert np.array_equal(ints.astype(np.float64), w), n.name
    assert checked == [n for n, g in GROUPS.items() if g > 1]


def test_bn_folded_into_grouped_conv():
    """fold_bn on a depthwise / grouped conv scales each output channel's [C/g, KH, KW] slice by its
    own BatchNorm factor: the folded float model equals conv + BN, and the folded layers' bias
    reaches the exported ShiftConv (int32 bias) bit-exactly."""
    f = gnet_float(3)
    folded = qt.fold_bn_sequential(gnet_float(3))
    assert all(isinstance(folded[i], nn.Identity) for i in (1, 4, 8))
    for i in (3, 7):
        assert folded[i].groups == 8 and folded[i].bias is not None
        assert not torch.equal(folded[i].weight, f[i].weight)
    x = torch.rand(64, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), f(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(folded[3](f[:3](x)), f[4](f[3](f[:3](x))), rtol=1e-5, atol=1e-5)
    q = _prepared(CONFIGS["pot5"][0], build=lambda: qt.fold_bn_sequential(gnet_float(3)))
    proto = qt.export(q, _digits()[:8], pyqinfer_domain=True, shift_layers="all")
    for n in proto.graph.node:
        if n.op_type == "ShiftConv" and n.name in ("3", "7"):
            assert len(n.input) > 5 and n.input[5], f"{n.name}: the folded BatchNorm's bias is missing"
    _check_round_trip(proto, _eval_form(q, 21), "bn folded")


class GraphNet(nn.Module):
    """A residual model (graph mode): depthwise + BN + ReLU added to its input, a grouped conv + BN,
    global average pool, linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn1 = nn.BatchNorm2d(8)
        self.g = nn.Conv2d(8, 16, 3, padding=1, stride=2, groups=4)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + torch.relu(self.bn1(self.dw(x)))
        x = torch.relu(self.bn2(self.g(x)))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("qat", [0, 2])
def test_graph_mode_grouped_shift(qat):
    """fold_bn_graph + graph-mode prepare: the folded depthwise and grouped layers as ShiftConv."""
    torch.manual_seed(4)
    net = GraphNet()
    _randomize_bn(net.bn1)
    _randomize_bn(net.bn2)
    gm = qt.fold_bn_graph(net.eval())
    assert not [m for m in gm.modules() if isinstance(m, nn.BatchNorm2d)]
    q = _prepared(W(scheme="log", bits=5), qat, build=lambda: gm)
    assert isinstance(q, torch.fx.GraphModule)
    proto = qt.export(q, _digits()[:8], pyqinfer_domain=True, shift_layers="all")
    groups = {n.name: _attrs(n).get("group", 1) for n in proto.graph.node if n.op_type == "ShiftConv"}
    assert groups == {"stem": 1, "dw": 8, "g": 4}
    assert "QLinearAdd" in {n.op_type for n in proto.graph.node}
    _check_round_trip(proto, _eval_form(q, 30 + qat), f"graph qat={qat}")


def test_grouped_shift_threshold_int32_and_saturation():
    """A grouped shift layer before threshold activations (MultiThreshold reads its int32
    accumulator), one without output quantizer (int32 -> Cast -> Mul), and a declared acc_bits that
    does saturate on a depthwise layer: all bit-exact."""
    cfg = {"default": {"weight": {"scheme": "pot", "bits": 5}},
           "3": {"act": {"scheme": "qn", "bits": 2}},           # depthwise, threshold activations
           "10": {"act": None, "fuse_relu": False},            # grouped, int32 accumulator out
           "7": {"acc_bits": 12}}                              # depthwise x2, saturating
    q = _prepared(cfg)
    ref = _prepared({"default": cfg["default"], "3": cfg["3"], "10": cfg["10"]})
    x = torch.cat([_digits(), _inputs(6)["random"]])
    with torch.no_grad():
        want = q(x).numpy()
        unsat = ref(x).numpy()
    assert not np.array_equal(want, unsat), "acc_bits=12 never saturates here: the test proves nothing"
    proto = qt.export(q, x, pyqinfer_domain=True)              # check=True on inputs that saturate
    nodes = {n.name: n for n in proto.graph.node}
    assert nodes["3"].op_type == "ShiftConv" and _attrs(nodes["3"])["group"] == 8
    assert [n.op_type for n in proto.graph.node if nodes["3"].output[0] in n.input] == ["MultiThreshold"]
    assert _attrs(nodes["7"])["acc_bits"] == 12 and _attrs(nodes["7"])["group"] == 8
    assert nodes["10"].op_type == "ShiftConv" and _attrs(nodes["10"])["group"] == 4
    assert len(nodes["10"].input) <= 6                         # no Y_scale: the int32 accumulator
    assert [n.op_type for n in proto.graph.node if nodes["10"].output[0] in n.input] == ["Cast"]
    got = pyqinfer.load(proto).run({"x": x.numpy()})["y"]
    assert np.array_equal(_bits(got), _bits(want))


def test_too_many_groups_refused():
    """A group count beyond what the ShiftConv importer takes is refused by the exporter, naming what
    is supported; the importer's limit is the same number."""
    from onnx import TensorProto, helper
    from pyqinfer import quant
    from pyqinfer.frontends.pyqinfer_domain import make_shift_node
    c = SHIFT_CONV_MAX_GROUP + 1
    m = nn.Sequential(nn.Conv2d(c, c, 1, groups=c), nn.Flatten()).eval()
    q = qt.prepare(m, W(scheme="pot", bits=4))
    qt.calibrate(q, [torch.rand(2, c, 1, 1)])
    with pytest.raises(ExportError, match=rf"group 1\.\.{SHIFT_CONV_MAX_GROUP}.*depthwise.*groups={c}"):
        qt.export(q.eval(), torch.rand(1, c, 1, 1), pyqinfer_domain=True, shift_layers="all")
    codes = quant.pot_encode(np.ones((1, c)), bits=4, e_min=-3, e_max=0)
    node, inits = make_shift_node("c", codes, "x", "acc", conv=True, w_shape=[c, 1, 1, 1], group=c)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", c, 1, 1])],
                          [helper.make_tensor_value_info("acc", TensorProto.INT32, None)], inits)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("pyqinfer", 1)])
    with pytest.raises(pyqinfer.UnsupportedModelError, match=rf"group={c} is outside \[1, {SHIFT_CONV_MAX_GROUP}\]"):
        pyqinfer.load(proto)
