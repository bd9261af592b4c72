"""pyqinfer.train layers: the eval-mode forward equals the integer engine's golden model
(pyqinfer.reference) bit for bit; prepare / calibrate / fold_bn / QAT work."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import pyqinfer.ops as ops  # noqa: E402
import pyqinfer.reference as ref  # noqa: E402
import pyqinfer.train as T  # noqa: E402
from pyqinfer.train.layers import QConv2d, QLinear  # noqa: E402


def _np_dtype(name):
    return np.int8 if name == "int8" else np.uint8


def _act(bits=8, signed=False, symmetric=False, **kw):
    return T.UniformQuantizer(bits=bits, signed=signed, symmetric=symmetric, **kw)


def _make(conv, wq, inq, outq, relu, gen, groups=1):
    if conv:
        m = QConv2d(4, 6, 3, stride=(1, 2), padding=(1, 0), dilation=(1, 1), groups=groups,
                    weight_quant=wq, in_quant=inq, out_quant=outq, activation="relu" if relu else None)
        x = torch.randn(2, 4, 7, 9, generator=gen)
    else:
        m = QLinear(19, 7, weight_quant=wq, in_quant=inq, out_quant=outq,
                    activation="relu" if relu else None)
        x = torch.randn(5, 19, generator=gen)
    with torch.no_grad():
        m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.3)
        m.bias.copy_(torch.randn(m.bias.shape, generator=gen))
    T.calibrate(nn.Sequential(m), [x])     # in/out ranges from the float layer
    m.eval()
    return m, x


def _reference(m, x, y_int, engine=False):
    """The same layer computed by pyqinfer.reference (or, engine=True, by the C++ operators
    of pyqinfer.ops) from the layer's integer parameters."""
    p = m.integer_params()
    assert len(p["parts"]) == 1
    part = p["parts"][0]
    xq, oq = p["x_qparams"], p["out_qparams"]
    xi = m.input_codes(x).numpy().astype(_np_dtype(xq["dtype"]))
    # the input codes are quantize_linear's (rule 'onnx') for a float input
    assert np.array_equal(ref.quantize_linear(x.numpy(), np.float32(xq["scale"]),
                                              _np_dtype(xq["dtype"])(int(xq["zero_point"])),
                                              rule="onnx", dtype=xq["dtype"])
                          .clip(xq["qmin"], xq["qmax"]), xi)
    w = part.w_int.numpy().astype(np.int8)
    ws = part.scale.numpy().astype(np.float32)
    wz = part.zero_point.numpy().astype(np.int8)
    if ws.size == 1:
        ws, wz = ws[0], wz[0]
    b = p["bias_int"].numpy().astype(np.int32)
    zy = _np_dtype(oq["dtype"])(int(oq["zero_point"]))
    lo, hi = oq["qmin"], oq["qmax"]
    if m.activation == "relu":
        lo = max(lo, int(zy))
    xz = _np_dtype(xq["dtype"])(int(xq["zero_point"]))
    args = (np.float32(xq["scale"]), xz)
    mod = ops if engine else ref
    if isinstance(m, QConv2d):
        a = p["attributes"]
        r = mod.qlinear_conv(xi, *args, w, ws, wz, np.float32(oq["scale"]), zy, b,
                             pads=a["pads"], strides=a["strides"], dilations=a["dilations"],
                             group=a["group"], mode="fp32", clip=(lo, hi))
    else:
        r = mod.qlinear_matmul(xi, *args, w.T, ws, wz, np.float32(oq["scale"]), zy, b,
                               mode="fp32", clip=(lo, hi))
    return r


UNIFORM_CASES = [
    # (weight bits, per_channel, symmetric weights, act bits, relu, conv)
    (8, False, True, 8, False, False), (8, True, True, 8, True, False),
    (4, True, True, 4, True, False), (4, False, False, 8, False, False),
    (8, True, True, 8, False, True), (8, False, True, 8, True, True),
    (4, True, True, 4, True, True), (4, True, False, 8, False, True), (2, True, True, 3, True, True),
]


@pytest.mark.parametrize("case", UNIFORM_CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uniform_eval_equals_reference(case, seed):
    wbits, pc, sym, abits, relu, conv = case
    gen = torch.Generator().manual_seed(seed)
    wq = T.UniformQuantizer(bits=wbits, signed=True, symmetric=sym, per_channel=pc, weight=True)
    m, x = _make(conv, wq, _act(8), _act(abits, symmetric=relu), relu, gen)
    y = m(x)
    r = _reference(m, x, m.last_int_output)
    assert np.array_equal(m.last_int_output.numpy(), r)
    assert len(np.unique(r)) > 2
    assert np.array_equal(_reference(m, x, None, engine=True), r)      # and the C++ engine
    # the float output is the dequantized engine output
    oq = m.out_quant.qparams()
    deq = ref.dequantize_linear(r.astype(np.uint8), np.float32(oq["scale"]), np.uint8(int(oq["zero_point"])))
    assert np.array_equal(y.numpy(), deq)


def test_ties_round_half_even_like_the_engine():
    """Power-of-two scales with S = 1/2: half of the accumulators are exact ties."""
    lin = QLinear(3, 4, weight_quant=T.UniformQuantizer(8, weight=True, per_channel=False),
                  in_quant=_act(8, symmetric=True), out_quant=_act(8, signed=True, symmetric=True))
    lin.in_quant.set_qparams(2.0 ** -4)
    lin.weight_quant.set_qparams(2.0 ** -3)
    lin.weight_quant.frozen = True
    lin.out_quant.set_qparams(2.0 ** -6)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1, 2, 3], [-1, 0, 5], [7, -3, 1], [0, 0, 1]]) * 2.0 ** -3)
        lin.bias.zero_()
    lin.eval()
    x = torch.arange(0, 48, dtype=torch.float32).reshape(16, 3) * 2.0 ** -4
    lin(x)
    got = lin.last_int_output.numpy()
    r = _reference(lin, x, got)
    assert np.array_equal(got, r)
    acc = x.numpy() * 16 @ (lin.weight.detach().numpy() * 8).T
    assert np.any(acc % 2 == 1)                          # odd accumulators are ties at S = 1/2
    assert np.array_equal(got, np.clip(np.round(acc / 2), -128, 127))   # np.round is half-even


def test_fp32_conversion_of_large_accumulators_like_the_engine():
    """acc = 2^25 + 2^17 + x: fl32(acc) drops the low bits (§4.1), so with S = 2^-18 the
    engine gives 128 where exact (or float64, onnx_ref) arithmetic gives 129 for x = 1."""
    lin = QLinear(1, 1, weight_quant=T.UniformQuantizer(8, weight=True, per_channel=False),
                  in_quant=_act(8, symmetric=True), out_quant=_act(8, signed=True, symmetric=False))
    lin.in_quant.set_qparams(1.0)
    lin.weight_quant.set_qparams(2.0 ** -9)
    lin.weight_quant.frozen = True
    lin.out_quant.set_qparams(2.0 ** 9, -128)
    with torch.no_grad():
        lin.weight.fill_(2.0 ** -9)
        lin.bias.fill_(2.0 ** 16 + 2.0 ** 8)              # int32 bias 2^25 + 2^17
    lin.eval()
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    lin(x)
    got = lin.last_int_output.numpy()
    assert np.array_equal(got, _reference(lin, x, got))
    exact = np.clip(np.rint((2.0 ** 25 + 2.0 ** 17 + x.numpy().astype(np.float64)) * 2.0 ** -18) - 128, -128, 127)
    assert got[1, 0] == 0 and exact[1, 0] == 1


@pytest.mark.parametrize("scheme", ["pot", "apot"])
@pytest.mark.parametrize("conv", [False, True])
def test_level_weights_eval_equals_reference(scheme, conv):
    """PoT / APoT 4-bit weights: integer levels fit int8, so the int8 golden model runs them."""
    gen = torch.Generator().manual_seed(3)
    wq = T.PoTQuantizer(4, weight=True) if scheme == "pot" else \
        T.APoTQuantizer(4, weight=True, weight_norm=False)
    m, x = _make(conv, wq, _act(8), _act(8, symmetric=True), True, gen)
    m(x)
    part = m.integer_params()["parts"][0]
    assert part.bits == 8 and float(part.w_int.abs().max()) <= 127
    allowed = set(wq.ls.ints.tolist()) | set((-wq.ls.ints).tolist())
    assert set(part.w_int.unique().tolist()) <= allowed
    assert np.array_equal(m.last_int_output.numpy(), _reference(m, x, m.last_int_output))


@pytest.mark.parametrize("scheme", ["deepshift", "log", "log_sqrt2", "apot"])
def test_shift_weights_eval_equals_shift_reference(scheme):
    """Shift-code weights (ints above int8 for log / DeepShift): the layer's accumulator
    and requantization equal reference.shift_accumulate (§12, rule 'exact') + §4.1."""
    gen = torch.Generator().manual_seed(4)
    wq = {"deepshift": lambda: T.DeepShiftQuantizer(5),
          "log": lambda: T.LogQuantizer(bits=4, weight=True),
          "log_sqrt2": lambda: T.LogQuantizer(bits=4, base="sqrt2", weight=True),
          "apot": lambda: T.APoTQuantizer(5, weight=True)}[scheme]()
    m, x = _make(False, wq, _act(8), _act(8, symmetric=True), True, gen)
    m(x)
    p = m.integer_params()
    part = p["parts"][0]
    signs, exps = part.codes["signs"], part.codes["exponents"]
    # the codes decode to the integer weights
    dec = (signs.to(torch.float64) * 2.0 ** exps.to(torch.float64)).sum(0)
    assert torch.equal(dec, part.w_int)
    xq, oq = p["x_qparams"], p["out_qparams"]
    xi = m.input_codes(x).numpy().astype(np.uint8)
    acc = ref.shift_accumulate(xi, signs.numpy().transpose(0, 2, 1), exps.numpy().transpose(0, 2, 1),
                               a_zero_point=int(xq["zero_point"]),
                               bias=p["bias_int"].numpy().astype(np.int32))
    params = ref.derive_requant("fp32", np.float32(xq["scale"]), part.scale.numpy().astype(np.float32),
                                np.float32(oq["scale"]))
    r = ref.requantize(np.asarray(acc, dtype=np.int64), params, int(oq["zero_point"]),
                       int(oq["zero_point"]), oq["qmax"])
    assert np.array_equal(m.last_int_output.numpy(), r)
    assert len(np.unique(r)) > 2


@pytest.mark.parametrize("outq", ["qn", "apot", "log"])
def test_threshold_outputs_are_multithreshold_on_the_accumulator(outq):
    gen = torch.Generator().manual_seed(5)
    oq = {"qn": lambda: T.QNActivation(2), "apot": lambda: T.APoTQuantizer(4, signed=False),
          "log": lambda: T.LogQuantizer(bits=3, signed=False)}[outq]()
    wq = T.UniformQuantizer(8, weight=True, per_channel=True)
    m, x = _make(False, wq, _act(8), oq, True, gen)
    y = m(x)
    p = m.integer_params()
    part = p["parts"][0]
    xi = m.input_codes(x).numpy().astype(np.uint8)
    acc = ref.accumulate(xi, part.w_int.numpy().astype(np.int8).T, np.uint8(int(p["x_zero_point"])),
                         part.zero_point.numpy().astype(np.int8), p["bias_int"].numpy().astype(np.int32))
    thr = oq.integer_thresholds(p["x_scale"], part.scale, relu=True).numpy()      # [C, n]
    count = (acc[..., None] >= thr[None]).sum(-1)
    levels = oq.level_codes().numpy()
    assert np.array_equal(m.last_int_output.numpy(), levels[count])
    assert len(np.unique(count)) > 1
    # and it agrees with the float definition of the quantizer away from the decision points
    z = torch.relu(torch.nn.functional.linear(m.in_quant.dequantize(torch.tensor(xi, dtype=torch.float64)),
                                              wq.dequantize(part.w_int).to(torch.float32), m.bias))
    oq.eval()
    direct = oq(z) if outq == "qn" else oq.dequantize(oq.int_repr(z))
    assert (direct - y).abs().max() <= oq.dequantize(torch.ones(())) * 1.001 + 1e-6
    assert float((direct == y).to(torch.float32).mean()) > 0.9


def test_pwlq_multi_accumulator_rule():
    """PWLQ: four integer parts, each an int32 accumulator; combined by the documented
    float32 rule (checked against an independent numpy evaluation)."""
    gen = torch.Generator().manual_seed(6)
    m, x = _make(False, T.PWLQQuantizer(4), _act(8), _act(8, symmetric=True), True, gen)
    m(x)
    p = m.integer_params()
    assert len(p["parts"]) == 4
    xi = m.input_codes(x).numpy().astype(np.uint8)
    zx = np.uint8(int(p["x_zero_point"]))
    total = None
    for j, part in enumerate(p["parts"]):
        acc = ref.accumulate(xi, part.w_int.numpy().astype(np.int8).T, zx, np.int8(0),
                             p["bias_int"].numpy().astype(np.int32) if j == 0 else None)
        S = ref.effective_scale_f32(np.float32(p["x_scale"]), part.scale.numpy().astype(np.float32),
                                    np.float32(p["out_qparams"]["scale"]))
        t = acc.astype(np.float64).astype(np.float32) * S
        total = t if total is None else (total + t).astype(np.float32)
    zy = int(p["out_qparams"]["zero_point"])
    r = np.clip(np.rint(np.clip(total.astype(np.float64), 0 - zy, 255 - zy)) + zy, max(0, zy), 255)
    assert np.array_equal(m.last_int_output.numpy(), r)
    # the parts sum to the PWLQ weight
    w_hat = sum(pt.scale.reshape(-1, 1).to(torch.float64) * pt.w_int for pt in p["parts"])
    assert float((w_hat - m.weight.detach().to(torch.float64)).abs().max()) < 0.2


def test_no_out_quant_dequantizes_the_accumulator():
    gen = torch.Generator().manual_seed(7)
    wq = T.UniformQuantizer(4, weight=True, per_channel=True)
    m, x = _make(False, wq, _act(8), None, False, gen)
    y = m(x)
    p = m.integer_params()
    part = p["parts"][0]
    xi = m.input_codes(x).numpy().astype(np.uint8)
    acc = ref.accumulate(xi, part.w_int.numpy().astype(np.int8).T, np.uint8(int(p["x_zero_point"])),
                         np.int8(0), p["bias_int"].numpy().astype(np.int32))
    s = (np.float32(p["x_scale"]) * part.scale.numpy().astype(np.float32))
    assert np.array_equal(y.numpy(), ref.dequantize_linear(acc.astype(np.int32), s, None))


def _tiny_cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 3))


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > 0).long() + (x[:, 0, 4:].mean((1, 2)) > 0).long()
    return x, y


def test_fold_bn_matches_conv_bn():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.eval()
    x = torch.randn(2, 3, 6, 6)
    f = T.fold_bn(conv, bn)
    assert torch.allclose(f(x), bn(conv(x)), atol=1e-5)
    seq = nn.Sequential(conv, bn).eval()
    ref_out = seq(x)
    T.fold_bn_sequential(seq)
    assert isinstance(seq[1], nn.Identity)
    assert torch.allclose(seq(x), ref_out, atol=1e-5)


def test_prepare_wires_layers_and_mixed_precision():
    model = _tiny_cnn().eval()
    T.fold_bn_sequential(model)
    cfg = {"default": {"weight": {"bits": 4}, "act": {"bits": 8}},
           "5": {"weight": {"scheme": "pot", "bits": 4}},
           "7": {"act": None}}
    q = T.prepare(model, cfg)
    layers = dict(T.quantized_layers(q))
    assert set(layers) == {"0", "5", "7"}
    assert layers["0"].activation == "relu" and isinstance(q[2], nn.Identity)
    assert layers["0"].weight_quant.bits == 4 and isinstance(layers["5"].weight_quant, T.PoTQuantizer)
    assert layers["5"].in_quant is layers["0"].out_quant and layers["5"].input_on_grid
    assert layers["7"].in_quant is layers["5"].out_quant and layers["7"].out_quant is None
    assert not layers["0"].input_on_grid
    x, _ = _data(32)
    T.calibrate(q, [x])
    q.eval()
    out = q(x)
    # each layer's eval forward equals the reference given the previous layer's integer output
    l0, l5 = layers["0"], layers["5"]
    y0 = l0.last_int_output.numpy()
    assert np.array_equal(y0, _reference(l0, x, None))
    h = torch.nn.functional.max_pool2d(l0.out_quant.dequantize(torch.tensor(y0)), 2).flatten(1)
    assert torch.equal(l5.input_codes(h), torch.nn.functional.max_pool2d(torch.tensor(y0), 2).flatten(1))
    assert out.shape == (32, 3) and torch.isfinite(out).all()


@pytest.mark.parametrize("wcfg,acfg", [
    ({"scheme": "uniform", "bits": 4}, {"scheme": "uniform", "bits": 4}),
    ({"scheme": "lsq", "bits": 4}, {"scheme": "lsq", "bits": 4}),
    ({"scheme": "apot", "bits": 4, "weight_norm": False}, {"scheme": "apot", "bits": 4}),
])
def test_qat_two_epochs_reduce_the_loss(wcfg, acfg):
    torch.manual_seed(0)
    x, y = _data(192)
    model = _tiny_cnn().eval()
    T.fold_bn_sequential(model)
    q = T.prepare(model, {"default": {"weight": wcfg, "act": acfg}, "7": {"act": None}})
    T.calibrate(q, [x[:64]])
    opt = torch.optim.Adam(q.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    q.eval()
    with torch.no_grad():
        before = float(loss_fn(q(x), y))
    q.train()
    for _ in range(2):
        for i in range(0, len(x), 32):
            opt.zero_grad()
            loss = loss_fn(q(x[i:i + 32]), y[i:i + 32])
            loss.backward()
            opt.step()
    q.eval()
    with torch.no_grad():
        after = float(loss_fn(q(x), y))
    assert after < before


def test_import_error_without_torch(monkeypatch):
    import builtins
    import importlib
    import sys

    real_import = builtins.__import__

    def fake(name, *a, **k):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *a, **k)

    saved = {k: v for k, v in sys.modules.items() if k.startswith("pyqinfer.train")}
    for k in saved:
        del sys.modules[k]
    monkeypatch.setattr(builtins, "__import__", fake)
    try:
        with pytest.raises(ImportError, match=r'pip install "pyqinfer\[train\]"'):
            importlib.import_module("pyqinfer.train")
    finally:
        monkeypatch.setattr(builtins, "__import__", real_import)
        sys.modules.update(saved)


def test_pyqinfer_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, pyqinfer, pyqinfer.reference, pyqinfer.ops; print('torch' in sys.modules)"
    import os
    import tempfile

    import pyqinfer
    root = os.path.dirname(os.path.dirname(pyqinfer.__file__))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tempfile.gettempdir(), env={**os.environ, "PYTHONPATH": root})
    assert out.stdout.strip() == "False"
