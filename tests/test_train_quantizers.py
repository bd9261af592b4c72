"""pyqinfer.train quantizers: integer rules, gradients, level sets and tie rules."""
from fractions import Fraction
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyqinfer.reference as ref  # noqa: E402
import pyqinfer.train as T  # noqa: E402
from pyqinfer.train.uniform import LSQ_MIN_STEP  # noqa: E402


# ----------------------------------------------------------------- uniform
@pytest.mark.parametrize("bits,signed,symmetric", [(8, False, False), (8, True, True), (4, True, True),
                                                   (3, False, True), (2, True, False)])
def test_int_repr_is_quantize_linear_onnx(bits, signed, symmetric):
    g = torch.Generator().manual_seed(bits)
    q = T.UniformQuantizer(bits, signed=signed, symmetric=symmetric)
    x = torch.randn(300, generator=g) * 3
    q.init_from(x)
    s = q.scale.detach()
    ties = (torch.arange(-20, 20, dtype=torch.float32) + 0.5) * s       # exact half steps
    x = torch.cat([x, ties, torch.tensor([float("inf"), -float("inf"), 1e30])])
    got = q.int_repr(x).numpy()
    zp = int(q.zero_point)
    dt = "int8" if signed else "uint8"
    want = ref.quantize_linear(x.numpy(), np.float32(s), np.dtype(dt).type(zp), rule="onnx")
    assert np.array_equal(got, np.clip(want, q.qmin, q.qmax))
    # the training forward (no stochastic rounding) is the dequantized integer
    assert torch.equal(q.fake_quant(x[:340]), ((q.int_repr(x[:340]) - zp) * s.double()).float())


def test_int_repr_divides_like_onnx_not_torch():
    """docs/semantics.md §5's FBGEMM counterexample: x / s = 127.499992 gives 127 (onnx),
    x * fl32(1/s) = 127.5 gives 128 (torch rule, PyTorch's fake quant)."""
    q = T.UniformQuantizer(8, signed=False, symmetric=True)
    q.set_qparams(np.float32(0.00214854861))
    x = torch.tensor([np.float32(0.273939937)])
    assert q.int_repr(x).tolist() == [127.0]
    assert float(torch.fake_quantize_per_tensor_affine(x, float(np.float32(0.00214854861)), 0, 0, 255)
                 / np.float32(0.00214854861)) > 127.9      # PyTorch's own rule gives 128
    assert torch.equal(q.fake_quant(x), 127.0 * q.scale.reshape(1))


def test_per_channel_int_repr():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 3, 3, 3, generator=g) * torch.arange(1, 7).reshape(6, 1, 1, 1)
    q = T.UniformQuantizer(4, per_channel=True, weight=True)
    got = q.int_repr(w)
    s = q.scale.detach()
    assert s.shape == (6,)
    want = ref.quantize_linear(w.reshape(6, -1).T.numpy(), s.numpy(), np.zeros(6, np.int8), rule="onnx",
                               dtype="int8")
    assert np.array_equal(got.reshape(6, -1).T.numpy(), np.clip(want, -8, 7))
    assert float(got.abs().max()) == 7


def test_ste_clipped_and_identity():
    x = torch.tensor([-10.0, -0.3, 0.2, 0.7, 10.0], requires_grad=True)
    for mode, want in (("clipped", [0, 1, 1, 1, 0]), ("identity", [1, 1, 1, 1, 1])):
        q = T.UniformQuantizer(4, ste=mode)
        q.set_qparams(0.25)
        x.grad = None
        q(x).sum().backward()
        assert x.grad.tolist() == want


def test_lsq_step_gradient_and_init():
    x = torch.tensor([-3.0, -0.26, 0.1, 0.37, 5.0])
    q = T.UniformQuantizer(4, lsq=True, weight=True)     # signed: Q_N = 8, Q_P = 7
    q(x)                                                  # init
    assert math.isclose(float(q.scale.detach()), 2 * float(x.abs().mean()) / math.sqrt(7), rel_tol=1e-6)
    q.set_qparams(0.25)
    q.scale.grad = None
    q(x).sum().backward()
    v = x / 0.25
    inside = (v >= -8) & (v <= 7)
    dq = torch.where(inside, torch.round(v) - v, torch.where(v < -8, -8.0, 7.0))
    g = 1 / math.sqrt(x.numel() * 7)
    assert math.isclose(float(q.scale.grad), float(dq.sum()) * g, rel_tol=1e-5)
    assert float(q.scale.grad) != 0


def test_stochastic_rounding_seeded_unbiased_and_off_in_eval():
    x = torch.full((20000,), 0.3)
    a = T.UniformQuantizer(8, symmetric=True, rounding="stochastic", seed=7)
    b = T.UniformQuantizer(8, symmetric=True, rounding="stochastic", seed=7)
    for q in (a, b):
        q.set_qparams(1.0)
    ya, yb = a(x), b(x)
    assert torch.equal(ya, yb)
    assert set(ya.unique().tolist()) == {0.0, 1.0}
    assert abs(float(ya.mean()) - 0.3) < 0.02
    a.eval()
    assert float(a(x).abs().max()) == 0.0
    assert float(a.int_repr(x).abs().max()) == 0.0


def test_dsq_hard_forward_soft_backward():
    q = T.DSQQuantizer(4, signed=True)
    u = T.UniformQuantizer(4, signed=True)
    x = torch.linspace(-2, 2, 101, requires_grad=True)
    for m in (q, u):
        m.set_qparams(0.25)
    y = q(x)
    assert torch.equal(y, u(x))
    assert torch.equal(q.int_repr(x), u.int_repr(x))
    y.sum().backward()
    g = x.grad[(x.abs() < 1.8)]
    a = 0.4
    k = math.log((2 - a) / a)
    peak = k / (2 * (1 - a))                                      # d soft / dv at a cell centre
    assert math.isclose(float(g.max()), peak, rel_tol=0.01)
    assert float(g.min()) < 0.8 * peak                            # flatter towards the cell edges
    assert math.isclose(1 - math.tanh(k / 2), a, rel_tol=1e-12)  # the note's alpha = 1 - tanh(k Delta / 2)


# ------------------------------------------------------------- level sets
def test_apot_paper_levels_b4_k2():
    ls = T.apot_levels(4, 2)
    want = [0, Fraction(1, 48), Fraction(1, 24), Fraction(1, 16), Fraction(1, 12), Fraction(1, 8),
            Fraction(1, 6), Fraction(3, 16), Fraction(1, 4), Fraction(1, 3), Fraction(3, 8), Fraction(1, 2),
            Fraction(2, 3), Fraction(11, 16), Fraction(3, 4), 1]
    assert [Fraction(int(i), ls.max_int) for i in ls.ints] == want
    assert torch.equal(T.apot_levels_repo(4).ints, ls.ints)       # the repo's B=4 is the paper's k=2
    assert len(T.apot_levels(4, 4)) == len(T.apot_levels(4, 1)) == 16


@pytest.mark.parametrize("B,M", [(2, Fraction(1, 2)), (3, Fraction(5, 8)), (4, Fraction(3, 4)),
                                 (5, Fraction(25, 32)), (6, Fraction(7, 8))])
def test_apot_repo_levels_and_scale(B, M):
    """The repo's max sum M (the note's table): levels = ints / max_int = raw / M."""
    from pyqinfer.train.apot import _REPO_TERMS
    ls = T.apot_levels_repo(B)
    assert len(ls) == 2 ** B
    D = 2 ** max(e for es in _REPO_TERMS[B] for e in es)         # ints = raw * D
    assert Fraction(ls.max_int, D) == M
    assert all(sum(2 ** e for e in t) == int(i) for t, i in zip(ls.terms, ls.ints))
    assert torch.allclose(ls.proj_values.double(), ls.values, atol=1e-7)


def _repo_projection(x, B):
    """yhhhli/APoT_Quantization's weight projection, transcribed (torch.min(dim=0) first minimum)."""
    sets = {3: ([0.0, 0.5, 0.25, 0.0625], [0.0, 0.125])}[B]
    values = [a + b for a in sets[0] for b in sets[1]]
    value_s = torch.tensor(list(set(values)))
    value_s = value_s.mul(1.0 / torch.max(value_s))
    xhard = x.abs()
    idxs = (xhard.unsqueeze(0) - value_s.unsqueeze(1)).abs().min(dim=0)[1]
    return value_s[idxs] * x.sign()


def test_apot_tie_rule_is_the_repo_scan_order():
    q = T.APoTQuantizer(4, weight=True, weight_norm=False, learn_alpha=False, alpha_init=1.0)
    vals = q.ls.proj_values
    mids = (vals[1:] + vals[:-1]) / 2                               # float32 midpoints
    x = torch.cat([mids, -mids, torch.rand(200) * 2 - 1])
    got = q.int_repr(x).to(torch.float32) * q.int_scale
    assert torch.equal(got, _repo_projection(torch.clamp(x, -1, 1), 3))
    exact = (mids - vals[:-1]) == (vals[1:] - mids)
    assert bool(exact.any())                                        # real ties were exercised


def test_pot_levels_and_linear_vs_log_rounding():
    assert T.pot_levels(3).ints.tolist() == [0, 1, 2, 4, 8, 16, 32, 64]
    assert T.deepshift_levels(5).max_int == 2 ** 15
    pot = T.PoTQuantizer(4, weight=True, learn_alpha=False, alpha_init=1.0)
    ds = T.DeepShiftQuantizer(5)
    x = torch.tensor([1.45 * 2 ** -3, 1.40 * 2 ** -3, 1.55 * 2 ** -3])
    # linear domain (APoT/PoT): decision point 1.5 * 2^n; log domain (DeepShift): sqrt(2) * 2^n
    assert (pot.dequantize(pot.int_repr(x)) / 2 ** -3).tolist() == [1.0, 1.0, 2.0]
    assert (ds.dequantize(ds.int_repr(x)) / 2 ** -3).tolist() == [2.0, 1.0, 2.0]
    assert ds.int_repr(torch.tensor([0.0, 1e-9, -3.0])).tolist() == [0.0, 1.0, -2.0 ** 15]


def test_log_quantizer_ranges_zero_code_and_sqrt2():
    assert T.miyashita_range(3, 0) == (-7, -1)
    q = T.LogQuantizer(c_min=-4, c_max=0, signed=False, zero="below")
    x = torch.tensor([0.0, 2 ** -6, 2 ** -4.6, 2 ** -4.4, 0.3, 0.7, 5.0])
    assert (q.dequantize(q.int_repr(x))).tolist() == [0, 0, 0, 2 ** -4, 0.25, 0.5, 1.0]
    qn = T.LogQuantizer(c_min=-4, c_max=0, signed=False, zero="none")
    assert qn.dequantize(qn.int_repr(x))[:3].tolist() == [0, 2 ** -4, 2 ** -4]
    s = T.LogQuantizer(c_min=-4, c_max=0, base="sqrt2", signed=False)
    assert s.ls.values.tolist() == [0, 0.25, 0.375, 0.5, 0.75, 1.0]   # odd codes 1.5 * 2^n
    # log-domain decision points between 2^-1 (code -2) and the odd code -1: 2^(-1.5/2)... = 2^-0.75
    y = s.dequantize(s.int_repr(torch.tensor([2 ** -0.76, 2 ** -0.74])))
    assert y.tolist() == [0.5, 0.75]
    auto = T.LogQuantizer(bits=4, signed=True, weight=True)
    w = torch.tensor([0.9, -0.01, 0.2])
    auto.int_repr(w)
    assert auto.c_max == 0 and auto.c_min == -6


def test_rcf_alpha_gradient():
    q = T.APoTQuantizer(3, weight=True, weight_norm=False, alpha_init=2.0)
    w = torch.tensor([-5.0, -1.0, 0.3, 1.1, 3.0], requires_grad=True)
    y = q(w)
    y.sum().backward()
    u = w.detach() / 2.0
    qv = y.detach() / 2.0
    want = torch.where(u.abs() > 1, torch.sign(u), qv - u).sum()
    assert math.isclose(float(q.alpha.grad), float(want), rel_tol=1e-6)
    assert float(q.alpha.grad) != 0
    assert w.grad.tolist() == [1.0] * 5                 # weights: gradient not clipped
    a = T.APoTQuantizer(3, signed=False, alpha_init=2.0)
    x = torch.tensor([-1.0, 0.5, 3.0], requires_grad=True)
    a(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0]           # activations: clipped


def test_apot_weight_normalization():
    q = T.APoTQuantizer(4, weight=True)
    w = torch.randn(64) * 0.01 + 0.5
    n = q.transform(w)
    assert abs(float(n.mean())) < 1e-5 and abs(float(n.std()) - 1) < 1e-5
    assert float(q.alpha.detach()) == 1.0
    q(w)
    assert float(q.alpha.detach()) == 3.0                         # the repo's alpha_w init


# ------------------------------------------------------------------- PWLQ
def test_pwlq_breakpoint_closed_forms_and_search():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 2000, generator=g, dtype=torch.float64)
    w[:, 0] = 5 * w.std(1)                      # m~ = max|w| / std close to 5
    m = w.abs().max(1).values
    sd = w.std(1)
    p = T.pwlq_breakpoint(w, 4, "gaussian")
    mt = m / sd
    assert torch.allclose(p, torch.log(0.86143114 * mt + 0.607901097) * sd)
    assert torch.allclose(T.pwlq_breakpoint(w, 4, "laplace"), (0.80304483 * mt.sqrt() - 0.31667855) * sd)
    assert torch.allclose(p / sd, torch.full((4,), math.log(0.86143114 * 5 + 0.607901097), dtype=torch.float64), atol=0.1)
    ps = T.pwlq_breakpoint(w, 4, "search")
    assert bool(((ps > 0) & (ps <= m / 2)).all())


def test_pwlq_levels_bias_correction_and_error():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 500, generator=g)
    q = T.PWLQQuantizer(4, bias_correction=False)
    parts = q.integer_parts(w)
    w_hat = sum(pt.scale.reshape(-1, 1).double() * pt.w_int for pt in parts)
    p = parts[0].codes["breakpoint"]
    m = parts[0].codes["range"]
    for c in range(2):
        lv = torch.tensor(T.pwlq_levels(4, float(p[c]), float(m[c])), dtype=torch.float64)
        assert len(lv) <= 31
        assert float((w_hat[c].unsqueeze(1) - lv.unsqueeze(0)).abs().min(1).values.max()) < 1e-6
    centre = parts[0].w_int
    assert float(centre.max()) <= 7 and float(centre.min()) >= -8
    err_pw = float(((w_hat - w.double()) ** 2).mean())
    u = T.UniformQuantizer(4, per_channel=True, weight=True)
    err_u = float(((u(w) - w) ** 2).mean())
    assert err_pw < err_u
    bc = T.PWLQQuantizer(4, bias_correction=True)
    w_bc = sum(pt.scale.reshape(-1, 1).double() * pt.w_int for pt in bc.integer_parts(w))
    assert torch.allclose(w_bc.std(1), w.double().std(1), rtol=1e-5)


# --------------------------------------------------------- QN and LQ-Net
def test_qn_soft_to_hard_and_strict_eval():
    q = T.QNActivation(2)
    q.init_from(torch.tensor([3.0]))                     # beta = 1, alpha = 1, thresholds 0.5 1.5 2.5
    x = torch.tensor([0.2, 0.5, 0.7, 1.5, 2.0, 2.6, 9.0])
    q.eval()
    assert q(x).tolist() == [0, 0, 1, 1, 2, 3, 3]         # strict: 0.5 and 1.5 stay below
    q.train()
    q.set_temperature(1.0)
    soft = q(x).detach()
    q.set_temperature(200.0)
    hard = q(x).detach()
    assert float((soft - torch.tensor([0, 0, 1, 1, 2, 3, 3.0])).abs().max()) > 0.2
    assert float((hard - torch.tensor([0, 0.5, 1, 1.5, 2, 3, 3])).abs().max()) < 1e-3
    xg = torch.tensor([0.9], requires_grad=True)
    q.set_temperature(2.0)
    q(xg).sum().backward()
    assert float(q.beta.grad) != 0 and float(q.alpha.grad) != 0 and float(xg.grad) != 0


def test_lqnet_integer_codebook_and_qem():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(3, 400, generator=g)
    q = T.LQNetQuantizer(2)
    part = q.integer_parts(w)[0]
    v_int, s = q.rounded_basis()
    levels = (v_int @ q.E.t())
    for c in range(3):
        assert set(part.w_int[c].unique().tolist()) <= set(levels[c].tolist())
    assert float(part.w_int.abs().max()) <= 127
    err0 = float(((part.scale.reshape(-1, 1).double() * part.w_int - w.double()) ** 2).mean())
    q.train()
    for _ in range(30):
        q(w)
    part = q.integer_parts(w)[0]
    err1 = float(((part.scale.reshape(-1, 1).double() * part.w_int - w.double()) ** 2).mean())
    assert err1 < err0


# -------------------------------------------------------------- observers
def test_observers_clip_outliers():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20000, generator=g)
    x[:2] = 40.0
    ranges = {}
    for name in ("minmax", "percentile", "mse"):
        q = T.UniformQuantizer(4, signed=True, observer=name)
        q.calibrate(True)(x)
        q.calibrate(False)
        q.init_from(None)
        ranges[name] = float(q.scale)
        err = float(((q.fake_quant(x) - x)[2:] ** 2).mean())
        ranges[name + "_err"] = err
    assert ranges["percentile"] < ranges["minmax"] / 5 and ranges["mse"] < ranges["minmax"] / 5
    assert ranges["mse_err"] < ranges["minmax_err"]


def test_project_to_levels_ties_and_stochastic():
    lv = torch.tensor([0.0, 1.0, 2.0])
    v, i = T.project_to_levels(torch.tensor([0.5, 1.5]), lv)
    assert v.tolist() == [0.0, 1.0]                        # first listed level wins a tie
    v, _ = T.project_to_levels(torch.tensor([0.5, 1.5]), torch.tensor([2.0, 1.0, 0.0]))
    assert v.tolist() == [1.0, 2.0]
    gen = torch.Generator().manual_seed(0)
    v, _ = T.project_to_levels(torch.full((10000,), 0.25), lv, "stochastic", gen)
    assert abs(float(v.mean()) - 0.25) < 0.02 and set(v.unique().tolist()) == {0.0, 1.0}


def test_lsq_step_stays_positive_after_an_optimizer_step():
    """A large step on the learned scale would make it negative; the forward projects it back."""
    x = torch.tensor([-3.0, -0.26, 0.1, 0.37, 5.0])
    q = T.UniformQuantizer(4, lsq=True, weight=True)
    q(x)
    with torch.no_grad():
        q.scale.fill_(-0.5)          # what SGD with a large learning rate did in a QAT run
    y = q(x)
    assert float(q.scale.detach()) == pytest.approx(LSQ_MIN_STEP)
    assert torch.isfinite(y).all()
    assert float(q.qparams()["scale"]) > 0
