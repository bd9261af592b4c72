"""pyqinfer.train graph mode (torch.fx): residual adds, global / 2-D average pooling, concat.

* The eval forms of QAdd, QGlobalAvgPool, QAvgPool2d and QConcat equal the golden model
  (pyqinfer.reference: semantics 11.3-11.5) bit for bit: the add exhaustively over all
  256 x 256 code pairs for random scales (including scales where ORT's FMA contraction
  changes the result) and for every broadcast form, with ReLU and low-bit ranges.
* A small ResNet (two residual blocks, one with a 1x1 downsample conv, BatchNorm folded,
  global average pool, linear) and a concat / average-pool model, prepared with int8,
  int4, mixed 4/8 and PoT configs, PTQ-calibrated and after a few QAT steps, exported:
  pyqinfer.load(...).run equals the eval-mode model element for element (float32 bits),
  every add / pool / concat's integer codes included; ONNX Runtime gives the same bits
  for the standard-op files.
* Graph mode on an nn.Sequential equals the order-based path; errors name the node.
"""
import operator
from fractions import Fraction

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import pyqinfer  # noqa: E402
import pyqinfer.reference as ref  # noqa: E402
import pyqinfer.train as qt  # noqa: E402
from pyqinfer.reference.eltwise import _fma  # noqa: E402
from pyqinfer.train.export import ExportError  # noqa: E402
from pyqinfer.train.integer import fma32, qlinear_add_ort  # noqa: E402

f32 = np.float32


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def _act(scale, zp, bits=8, signed=False):
    q = qt.UniformQuantizer(bits=bits, signed=signed, symmetric=False)
    q.set_qparams(torch.tensor(scale, dtype=torch.float32), torch.tensor(float(zp), dtype=torch.float64))
    return q


# ------------------------------------------------------------------ the eval forms vs the contract
def _fma_exact(a, b, c):
    q = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    r = f32(float(q))
    cands = [np.nextafter(r, f32(-np.inf)), r, np.nextafter(r, f32(np.inf))]
    return min(cands, key=lambda v: (abs(Fraction(float(v)) - q), int(np.asarray(v, f32).view(np.uint32)) & 1))


def test_fma32_is_single_rounding():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 20000)) * [[300], [2], [2 ** 20]]).astype(f32)
    got = fma32(*map(torch.from_numpy, x)).numpy()
    assert np.array_equal(_bits(got), _bits(_fma(*x)))
    for i in range(300):
        assert got[i] == _fma_exact(*x[:, i])
    # the exact value 2^24 + 1 + 2^-23 lies above the float32 midpoint 2^24 + 1
    t = fma32(torch.tensor(f32(1 + 2 ** -23)), torch.tensor(f32(1.0)), torch.tensor(f32(2 ** 24)))
    assert float(t) == 2 ** 24 + 2


def _naive_add(a, b, sa, za, sb, zb, sc, zc):
    """ORT's formula without the FMA contraction (two roundings per product): must differ somewhere."""
    rA, rB = f32(sa) / f32(sc), f32(sb) / f32(sc)
    Fc = f32(f32(zc) - f32(f32(rA * f32(za)) + f32(rB * f32(zb))))
    v = f32(f32(a.astype(f32) * rA) + f32(f32(b.astype(f32) * rB) + Fc))
    return np.clip(np.rint(v), 0, 255)


def test_qadd_exhaustive_codes_equal_reference():
    a = np.repeat(np.arange(256), 256).astype(np.uint8)
    b = np.tile(np.arange(256), 256).astype(np.uint8)
    ta, tb = torch.from_numpy(a.astype(np.float64)), torch.from_numpy(b.astype(np.float64))
    rng = np.random.default_rng(0)
    naive_differs = 0
    for t in range(14):
        sa, sb, sc = (f32(np.exp(rng.uniform(-5, -1))) for _ in range(3))
        za, zb, zc = (int(v) for v in rng.integers(0, 256, 3))
        if t == 0:
            sa = sb = f32(0.5) * sc              # exact ties: (a + b) / 2
        m = qt.QAdd(_act(sa, za), _act(sb, zb), _act(sc, zc), [True, True])
        got = m.forward_int(ta, tb).numpy()
        want = ref.qlinear_add(a, sa, np.uint8(za), b, sb, np.uint8(zb), sc, np.uint8(zc))
        assert np.array_equal(got, want), (t, int((got != want).sum()))
        naive_differs += int((_naive_add(a, b, sa, za, sb, zb, sc, zc) != want).any())
    assert naive_differs >= 2, "no case where the FMA contraction matters: the test cannot tell"


@pytest.mark.parametrize("shapes", [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), (1, 3, 1, 1)),
                                    ((1, 3, 1, 1), (2, 3, 4, 5)), ((4, 1), (1,)), ((3, 5), ())],
                         ids=["general", "b_scalar", "a_scalar", "corner", "0d"])
@pytest.mark.parametrize("bits,relu,signed", [(8, False, False), (8, True, False), (4, True, False),
                                              (8, False, True), (5, True, True)])
def test_qadd_forms_relu_lowbit(shapes, bits, relu, signed):
    rng = np.random.default_rng(len(shapes[0]) * 7 + bits + relu)
    dt = np.int8 if signed else np.uint8
    lo, hi = (-128, 127) if signed else (0, 255)
    a = rng.integers(lo, hi + 1, shapes[0]).astype(dt)
    b = rng.integers(lo, hi + 1, shapes[1]).astype(dt)
    sa, sb, sc = (f32(np.exp(rng.uniform(-5, -1))) for _ in range(3))
    za, zb = (int(v) for v in rng.integers(lo, hi + 1, 2))
    oq = qt.UniformQuantizer(bits=bits, signed=signed, symmetric=False)
    zc = int(rng.integers(oq.qmin, oq.qmax + 1))
    oq.set_qparams(torch.tensor(sc), torch.tensor(float(zc), dtype=torch.float64))
    m = qt.QAdd(_act(sa, za, signed=signed), _act(sb, zb, signed=signed), oq, [True, True],
                "relu" if relu else None)
    got = m.forward_int(torch.from_numpy(a.astype(np.float64)), torch.from_numpy(b.astype(np.float64))).numpy()
    clo = max(oq.qmin, zc) if relu else oq.qmin
    want = ref.qlinear_add(a, sa, dt(za), b, sb, dt(zb), sc, dt(zc), clip=(clo, oq.qmax))
    assert got.shape == want.shape and np.array_equal(got, want)


def test_qadd_rule_function_matches_reference_forms():
    """qlinear_add_ort picks ORT's operand form from the shapes: a_scalar swaps the roles."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        a = rng.integers(0, 256, (1, 4, 1, 1)).astype(np.uint8)
        b = rng.integers(0, 256, (3, 4, 5, 6)).astype(np.uint8)
        sa, sb, sc = (f32(np.exp(rng.uniform(-5, -1))) for _ in range(3))
        za, zb, zc = (int(v) for v in rng.integers(0, 256, 3))
        got = qlinear_add_ort(torch.from_numpy(a.astype(np.float64)), torch.from_numpy(b.astype(np.float64)),
                              sa, za, sb, zb, sc, zc, 0, 255).numpy()
        assert np.array_equal(got, ref.qlinear_add(a, sa, np.uint8(za), b, sb, np.uint8(zb), sc, np.uint8(zc)))


@pytest.mark.parametrize("hw", [(1, 1), (4, 4), (7, 5), (16, 16)])
@pytest.mark.parametrize("bits", [8, 4])
def test_global_avg_pool_equals_reference(hw, bits):
    rng = np.random.default_rng(hw[0] * 31 + bits)
    for trial in range(6):
        x = rng.integers(0, 256, (3, 5) + hw).astype(np.uint8)
        if trial == 0:
            x[:] = rng.integers(0, 2, x.shape) * 2 + 1      # sums with ties after the division
        sx, sy = f32(np.exp(rng.uniform(-5, -1))), f32(np.exp(rng.uniform(-5, -1)))
        if trial < 2:
            sy = sx                                            # the mean on the input grid
        zx = int(rng.integers(0, 256))
        oq = qt.UniformQuantizer(bits=bits, signed=False, symmetric=False)
        zy = int(rng.integers(0, oq.qmax + 1))
        oq.set_qparams(torch.tensor(sy), torch.tensor(float(zy), dtype=torch.float64))
        for keep in (True, False):
            m = qt.QGlobalAvgPool(_act(sx, zx), oq, True, keepdim=keep)
            got = m.forward_int(torch.from_numpy(x.astype(np.float64))).numpy()
            want = ref.qlinear_global_average_pool(x, sx, np.uint8(zx), sy, np.uint8(zy)).clip(oq.qmin, oq.qmax)
            assert np.array_equal(got, want if keep else want.reshape(3, 5))


@pytest.mark.parametrize("k,s,p,cip", [((2, 2), (2, 2), (0, 0), True), ((3, 3), (1, 1), (1, 1), True),
                                       ((3, 3), (2, 2), (1, 1), False), ((2, 3), (1, 2), (1, 0), False),
                                       ((6, 6), (1, 1), (0, 0), True)],
                         ids=["2x2", "3x3pad", "3x3s2pad_exclude", "2x3", "whole_image"])
def test_avg_pool_equals_reference(k, s, p, cip):
    rng = np.random.default_rng(sum(k) + sum(s) * 3 + sum(p) * 5 + cip)
    for _ in range(4):
        x = rng.integers(0, 256, (2, 3, 6, 6)).astype(np.uint8)
        sx, sy = f32(np.exp(rng.uniform(-5, -1))), f32(np.exp(rng.uniform(-5, -1)))
        zx, zy = (int(v) for v in rng.integers(0, 256, 2))
        m = qt.QAvgPool2d(_act(sx, zx), _act(sy, zy), k, s, p, cip, input_on_grid=True)
        got = m.forward_int(torch.from_numpy(x.astype(np.float64))).numpy()
        want = ref.qlinear_average_pool(x, sx, np.uint8(zx), sy, np.uint8(zy), list(k), list(s),
                                        [p[0], p[1], p[0], p[1]], count_include_pad=int(cip))
        assert np.array_equal(got, want)


def test_concat_equals_reference():
    rng = np.random.default_rng(5)
    for trial in range(8):
        xs = [rng.integers(0, 256, (2, c, 3, 4)).astype(np.uint8) for c in (3, 1, 2)]
        qps = [(f32(np.exp(rng.uniform(-5, -1))), int(rng.integers(0, 256))) for _ in xs]
        sy, zy = f32(np.exp(rng.uniform(-5, -1))), int(rng.integers(0, 256))
        if trial == 0:
            qps[1] = (sy, zy)                                  # equal parameters: a copy
        m = qt.QConcat([_act(s, z) for s, z in qps], _act(sy, zy), 1, [True] * 3)
        got = m.forward_int(*[torch.from_numpy(x.astype(np.float64)) for x in xs]).numpy()
        want = ref.qlinear_concat(sy, np.uint8(zy), [(x, s, np.uint8(z)) for x, (s, z) in zip(xs, qps)], 1)
        assert np.array_equal(got, want)


# ------------------------------------------------------------------ models
class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """Two residual blocks (the second with a 1x1 stride-2 downsample), global average pool, linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.layer1 = Block(8, 8, 1)
        self.layer2 = Block(8, 16, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class ConcatNet(nn.Module):
    """Two branches concatenated, an average pool, an add of two branches, x.mean((2, 3))."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.a = nn.Conv2d(6, 4, 1)
        self.b = nn.Conv2d(6, 4, 3, padding=1)
        self.avg = nn.AvgPool2d(3, 2, 1)
        self.c = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.cat([F.relu(self.a(x)), self.b(x)], dim=1)
        x = self.avg(x)
        y = self.c(x)
        x = torch.add(x, y).relu()
        return self.fc(x.mean((2, 3)))


def _randomize_bn(model, seed):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    return model


def resnet(seed=0):
    torch.manual_seed(seed)
    return qt.fold_bn_graph(_randomize_bn(ResNet(), seed).eval())


def concatnet(seed=0):
    torch.manual_seed(seed)
    return ConcatNet().eval()


def W(**kw):
    return {"weight": kw}


CONFIGS = {
    "resnet_int8": (resnet, {}),
    "resnet_int4": (resnet, {"default": W(bits=4)}),
    "resnet_mixed": (resnet, {"default": {"weight": {"bits": 4}, "act": {"bits": 4, "observer": "percentile"}},
                              "stem": W(bits=8), "add_1": {"act": {"bits": 8}},
                              "pool": {"act": {"bits": 8}}, "fc": {"weight": {"bits": 8}, "act": {"bits": 8}}}),
    "resnet_pot4": (resnet, {"default": W(scheme="pot", bits=4)}),
    "resnet_lsq_asym": (resnet, {"default": {"weight": {"scheme": "lsq", "bits": 4},
                                             "act": {"scheme": "lsq", "bits": 8, "symmetric": False}},
                                 "fc": {"act": None}}),          # dequantized int32 logits
    "concat_int8": (concatnet, {}),
    "concat_int4": (concatnet, {"default": {"weight": {"bits": 4}, "act": {"bits": 4}},
                                "fc": {"act": {"bits": 8}}}),
}


def _prepared(name, qat_steps=0):
    build, cfg = CONFIGS[name]
    q = qt.prepare(build(), cfg)
    assert isinstance(q, torch.fx.GraphModule)
    g = torch.Generator().manual_seed(7)
    qt.calibrate(q, [torch.rand(64, 1, 8, 8, generator=g)])
    if qat_steps:
        opt = torch.optim.SGD(q.parameters(), lr=1e-2)
        q.train()
        for _ in range(qat_steps):
            loss = q(torch.rand(32, 1, 8, 8, generator=g)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return q.eval()


def _inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return {"random": torch.rand(48, 1, 8, 8, generator=g) * 1.4 - 0.2,      # beyond the range: saturation
            "grid": torch.round(torch.rand(16, 1, 8, 8, generator=g) * 255) / 255}


def _op_output(proto, base):
    names = [n.output[0] for n in proto.graph.node]
    for cand in (f"{base}_clip_q", base):
        if cand in names:
            return cand
    raise AssertionError(f"no output tensor for {base}: {names}")


@pytest.mark.parametrize("qat", [0, 3], ids=["ptq", "qat"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_graph_round_trip_bit_exact(name, qat, tmp_path):
    q = _prepared(name, qat)
    path = tmp_path / f"{name}.onnx"
    proto = qt.export(q, _inputs(0)["grid"][:4], str(path))          # check=True: the round trip too
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    kinds = {n.op_type for n in proto.graph.node}
    want_ops = {"QLinearAdd", "QLinearGlobalAveragePool"} if name.startswith("resnet") else \
        {"QLinearAdd", "QLinearAveragePool", "QLinearConcat", "QLinearGlobalAveragePool"}
    assert kinds >= want_ops
    m = pyqinfer.load(str(path))
    ops_ = [(n, mod) for n, mod in qt.quantized_modules(q) if isinstance(mod, qt.qops._QOp)]
    assert len(ops_) >= 3
    for kind, x in _inputs(qat + 1).items():
        with torch.no_grad():
            want = q(x).numpy()
        got = m.run({"x": x.numpy()})["y"]
        assert got.shape == want.shape
        diff = int((_bits(got) != _bits(want)).sum())
        assert diff == 0, f"{name} {kind}: {diff} of {want.size} outputs differ"
        for lname, mod in ops_:                      # the integer codes of every add / pool / concat
            t = _op_output(proto, lname.replace(".", "_"))
            codes = m.run({"x": x.numpy()}, outputs=[t])[t]
            assert np.array_equal(codes.astype(np.float64).reshape(mod.last_int_output.shape),
                                  mod.last_int_output.numpy()), (name, lname)


@pytest.mark.parametrize("name", ["resnet_int8", "resnet_pot4", "concat_int8"])
def test_graph_onnxruntime_matches(name):
    ort = pytest.importorskip("onnxruntime")
    q = _prepared(name, 2)
    proto = qt.export(q, _inputs(0)["grid"][:2])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for kind, x in _inputs(9).items():
        with torch.no_grad():
            want = q(x).numpy()
        got = sess.run(None, {"x": x.numpy()})[0]
        assert np.array_equal(_bits(got), _bits(want)), f"{name} {kind}: ORT differs"


def test_graph_prepare_structure():
    q = qt.prepare(resnet(), {})
    mods = dict(q.named_modules())
    # BatchNorm folded; ReLUs after conv1 fused; the block's final ReLU fused into its add
    assert isinstance(mods["layer1.conv1"], qt.QConv2d) and mods["layer1.conv1"].activation == "relu"
    assert mods["layer1.conv2"].activation is None
    adds = [m for m in q.modules() if isinstance(m, qt.QAdd)]
    assert len(adds) == 2 and all(a.activation == "relu" and a.inputs_on_grid == [True, True] for a in adds)
    # shared quantizers: the block input's quantizer is the add's operand and the next convs' input
    assert mods["layer2.conv1"].in_quant is adds[0].out_quant is mods["layer2.down.0"].in_quant
    assert adds[1].in_quants[1] is mods["layer2.down.0"].out_quant
    assert mods["pool"].in_quants[0] is adds[1].out_quant
    assert mods["fc"].in_quant is mods["pool"].out_quant and mods["fc"].input_on_grid
    assert not mods["stem"].input_on_grid
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())


def test_qat_gradients_flow_through_add_and_pool():
    q = _prepared("resnet_lsq_asym")
    q.train()
    x = torch.rand(8, 1, 8, 8)
    q(x).square().mean().backward()
    mods = dict(q.named_modules())
    for n in ("stem", "layer1.conv1", "layer2.down.0", "fc"):
        g = mods[n].weight.grad
        assert g is not None and float(g.abs().sum()) > 0, n
    adds = [m for m in q.modules() if isinstance(m, qt.QAdd)]
    assert all(a.out_quant.scale.grad is not None for a in adds)      # LSQ step of the add's output


@pytest.mark.parametrize("builder", ["cnn", "mlp"])
def test_graph_mode_on_sequential_equals_order_path(builder):
    from test_export import CONFIGS as SEQ, _digits
    build, cfg = SEQ[f"{builder}_mixed"]
    a = qt.prepare(build(), cfg)
    b = qt.prepare(build(), cfg, graph=True)
    assert isinstance(b, torch.fx.GraphModule) and not isinstance(a, torch.fx.GraphModule)
    x = _digits()
    qt.calibrate(a, [x[:200]])
    qt.calibrate(b, [x[:200]])
    with torch.no_grad():
        ya, yb = a.eval()(x), b.eval()(x)
    assert np.array_equal(_bits(ya.numpy()), _bits(yb.numpy()))
    pa, pb = qt.export(a, x[:4]), qt.export(b, x[:4])
    assert [n.op_type for n in pa.graph.node] == [n.op_type for n in pb.graph.node]


def test_auto_mode():
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
    assert not isinstance(qt.prepare(seq), torch.fx.GraphModule)
    nested = nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()), nn.Flatten(), nn.Linear(144, 10))
    assert not isinstance(qt.prepare(nested), torch.fx.GraphModule)
    assert isinstance(qt.prepare(nn.Sequential(nn.Conv2d(1, 4, 3), Residual(4))), torch.fx.GraphModule)
    assert isinstance(qt.prepare(ConcatNet()), torch.fx.GraphModule)


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


# ------------------------------------------------------------------ errors
class Sig(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(self.conv(x))


class ScalarAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.conv(x) + 1.0


class SignedMix(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3)
        self.b = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return operator.add(self.a(x), self.b(x))


def test_unsupported_nodes_are_named():
    with pytest.raises(qt.UnsupportedNodeError, match=r"node 'sigmoid' \(call_function torch.*sigmoid\)"):
        qt.prepare(Sig())
    with pytest.raises(qt.UnsupportedNodeError, match=r"node 'add' \(call_function .*add\)"):
        qt.prepare(ScalarAdd())
    with pytest.raises(qt.UnsupportedNodeError, match=r"called 2 times"):
        qt.prepare(Twice())
    with pytest.raises(qt.UnsupportedNodeError, match=r"node 'bn'.*BatchNorm2d.*fold_bn_graph"):
        qt.prepare(ResNet().eval())
    with pytest.raises(ValueError, match="'add'.*signed and unsigned"):
        qt.prepare(SignedMix(), {"a": {"act": {"bits": 8, "signed": True}}})
    with pytest.raises(ValueError, match="output quantizer"):
        qt.prepare(SignedMix(), {"add": {"act": None}})
    # export: an unprepared graph names the node
    gm = torch.fx.symbolic_trace(Sig())
    with pytest.raises(ExportError, match=r"node 'conv' \(call_module conv \(Conv2d\)\).*prepare"):
        qt.export(gm, torch.rand(1, 1, 8, 8))


def test_fold_bn_graph_matches_float():
    m = _randomize_bn(ResNet(), 3).eval()
    g = qt.fold_bn_graph(m)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(m(x), g(x), atol=1e-5)
    assert not any(isinstance(t, nn.BatchNorm2d) for t in g.modules())
    assert any(isinstance(t, nn.BatchNorm2d) for t in m.modules())      # the original is untouched


def test_training_md_graph_example(tmp_path, monkeypatch):
    """docs/training.md's graph-mode block runs as written on a residual model."""
    import os
    import re
    doc = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "training.md")
    text = open(doc, encoding="utf-8").read()
    section = text[text.index("## Graph mode"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    ns = {"model": _randomize_bn(ResNet(), 1), "x": torch.rand(32, 1, 8, 8)}
    exec(compile(block, doc, "exec"), ns)
    assert os.path.getsize(tmp_path / "resnet.onnx") > 0
    assert {"QLinearAdd", "QLinearGlobalAveragePool"} <= {n.op_type for n in onnx.load("resnet.onnx").graph.node}


def test_readme_path_with_a_residual_model(tmp_path, monkeypatch):
    """The README's PyTorch block (fold_bn_graph, prepare, calibrate, export, verify) on a ResNet."""
    import os
    import re
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    block = re.findall(r"```py\n(.*?)```", open(readme, encoding="utf-8").read(), re.S)[0]
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(2)
    ns = {"model": _randomize_bn(ResNet(), 2), "x": torch.rand(32, 1, 8, 8)}
    exec(compile(block, readme, "exec"), ns)
    assert isinstance(ns["q"], torch.fx.GraphModule)
    assert "QLinearAdd" in {n.op_type for n in onnx.load("model.onnx").graph.node}


class FloatOperands(nn.Module):
    """An add of the (float) model input and a conv output; a pool of a layer without output quantizer."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(2, 2, 3, padding=1)
        self.d = nn.Conv2d(2, 3, 3)
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        z = self.d(x + self.c(x))
        return self.fc(z.mean((2, 3)))


@pytest.mark.parametrize("qat", [0, 2])
def test_float_operands_get_their_own_quantizers(qat):
    torch.manual_seed(qat)
    q = qt.prepare(FloatOperands(), {"d": {"act": None}})
    add, pool = q.get_submodule("add"), q.get_submodule("mean")
    assert add.inputs_on_grid == [False, True] and pool.inputs_on_grid == [False]
    g = torch.Generator().manual_seed(4)
    qt.calibrate(q, [torch.randn(32, 2, 6, 6, generator=g)])
    if qat:
        opt = torch.optim.SGD(q.parameters(), lr=1e-3)
        for _ in range(qat):
            q.train()
            loss = q(torch.randn(8, 2, 6, 6, generator=g)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    q.eval()
    x = torch.randn(64, 2, 6, 6, generator=g) * 1.3
    proto = qt.export(q, x[:2])
    assert [n.op_type for n in proto.graph.node].count("QuantizeLinear") >= 3
    with torch.no_grad():
        want = q(x).numpy()
    assert np.array_equal(_bits(pyqinfer.load(proto).run({"x": x.numpy()})["y"]), _bits(want))
