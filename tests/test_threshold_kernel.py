"""The C++ integer MultiThreshold kernel (csrc/threshold/, docs/semantics.md 13.1) against the golden
model pyqinfer.reference.threshold, bit for bit, on every kernel path, both algorithms
(compare-and-count, binary search) and 'auto', threads 1 and 2."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyqinfer
from pyqinfer import _core
from pyqinfer.ops import int_threshold_table, multi_threshold
from pyqinfer.ops.threshold import KERNEL_IN_DTYPES
from pyqinfer.reference import threshold as ref

ALGOS = ("count", "search", "auto")
OUT = {"uint8": (0, 255), "int8": (-128, 127), "int16": (-(2 ** 15), 2 ** 15 - 1),
       "int32": (-(2 ** 31), 2 ** 31 - 1)}
# widths around the kernels' switches: count/search crossovers, register search (P <= 16, <= 32), gather
B_CHOICES = [0, 1, 2, 3, 7, 8, 15, 16, 17, 24, 25, 31, 32, 33, 63, 64, 127, 255]


def kernel_results(run_everywhere, x, tab, ax, od):
    """{(path, threads, algo): y} from the raw kernel."""
    out = {}
    for key, ys in run_everywhere(lambda: [_core.multi_threshold_int(x, tab, ax, od, a) for a in ALGOS]).items():
        for a, y in zip(ALGOS, ys):
            out[key + (a,)] = y
    return out


def draw_thresholds(data, rng, rows, B, xdt):
    """Integer thresholds with duplicates, the dtype's extremes and values beyond its range."""
    info = np.iinfo(xdt)
    lo, hi = int(info.min), int(info.max)
    span = data.draw(st.sampled_from([4, 50, 400, hi - lo]))
    mid = data.draw(st.sampled_from([0, lo, hi, (lo + hi) // 2]))
    T = rng.integers(max(lo - 3, mid - span), min(hi + 3, mid + span) + 1, (rows, B), dtype=np.int64)
    special = np.array([lo, hi, lo - 1, hi + 1, lo + 1, hi - 1, 0, -(2 ** 40), 2 ** 40, 2 ** 31, -(2 ** 31) - 1])
    if B:
        m = rng.random((rows, B)) < data.draw(st.sampled_from([0.0, 0.1, 0.5]))
        T[m] = rng.choice(special, int(m.sum()))
        if data.draw(st.booleans()):                   # duplicates
            T[:, B // 2:] = T[:, :1]
    return T


def draw_x(rng, shape, xdt, T):
    info = np.iinfo(xdt)
    x = rng.integers(int(info.min), int(info.max) + 1, shape, dtype=np.int64)
    flat = x.reshape(-1)
    if T.size and flat.size:                           # exact ties with thresholds (and their neighbours)
        k = flat.size // 2
        picks = rng.choice(T.reshape(-1), k) + rng.integers(-1, 2, k)
        flat[rng.choice(flat.size, k, replace=False)] = np.clip(picks, info.min, info.max)
    flat[:2] = [info.min, info.max][: flat.size]
    return flat.reshape(shape).astype(xdt)


def draw_out(data, B):
    od = data.draw(st.sampled_from(sorted(OUT)))
    lo, hi = OUT[od]
    s = data.draw(st.integers(-4, 4)) if B else data.draw(st.integers(-(2 ** 40), 2 ** 40))
    if B and data.draw(st.booleans()):
        s = data.draw(st.sampled_from([1, -1]))
    lo_b = max(lo, lo - s * B)
    hi_b = min(hi, hi - s * B)
    if lo_b > hi_b:
        s, lo_b, hi_b = 0, lo, hi
    b = data.draw(st.sampled_from([lo_b, hi_b, data.draw(st.integers(lo_b, hi_b))]))
    return od, s, b


def draw_shape(data, B):
    """(shape, layout, channel axis) with the reference's work bounded (elements * thresholds)."""
    budget = max(64, 30000 // max(B, 1))
    kind = data.draw(st.sampled_from(["nchw4", "nhwc4", "2d", "other"]))
    C = data.draw(st.sampled_from([1, 3, 5, 16, 17, 33, 40]))
    if kind == "2d":
        N = data.draw(st.integers(1, max(1, min(12, budget // C))))
        shape, layout = (N, C), data.draw(st.sampled_from(["NCHW", "NHWC"]))
    elif kind == "other":
        nlead = data.draw(st.sampled_from([0, 2, 3]))                   # ranks 1, 3, 4 (channel last or 1)
        lead = data.draw(st.lists(st.integers(1, 4), min_size=nlead, max_size=nlead))
        shape, layout = tuple(lead) + (C,), data.draw(st.sampled_from(["NCHW", "NHWC"]))
    else:
        N = data.draw(st.integers(1, 2))
        H = data.draw(st.integers(1, 9))
        W = data.draw(st.integers(1, 9))
        while N * C * H * W > budget and H * W > 1:
            H, W = max(1, H - 1), max(1, W - 1)
        shape, layout = ((N, C, H, W), "NCHW") if kind == "nchw4" else ((N, H, W, C), "NHWC")
    return shape, layout


def draw_case(data):
    """Width, shape and layout, an rng, the input dtype, the channel axis and thresholds (one row
    or one per channel)."""
    B = data.draw(st.sampled_from(B_CHOICES))
    shape, layout = draw_shape(data, B)
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    xdt = data.draw(st.sampled_from(KERNEL_IN_DTYPES))
    ax = ref.channel_axis(len(shape), layout)
    rows = data.draw(st.sampled_from([1, shape[ax]]))
    return B, shape, layout, rng, xdt, ax, draw_thresholds(data, rng, rows, B, xdt)


@settings(max_examples=150)
@given(data=st.data())
def test_kernel_matches_reference(data, run_everywhere):
    B, shape, layout, rng, xdt, ax, T = draw_case(data)
    x = draw_x(rng, shape, xdt, T)
    od, s, b = draw_out(data, B)
    want = ref.multi_threshold(x, T, s, b, data_layout=layout, out_dtype=od)
    tab = int_threshold_table(T, xdt, s, b, od)
    assert tab is not None
    for key, got in kernel_results(run_everywhere, x, tab, ax, od).items():
        assert got.dtype == want.dtype and got.shape == want.shape, key
        assert np.array_equal(got, want), key
    got = multi_threshold(x, T, s, b, data_layout=layout, out_dtype=od)
    assert got.dtype == want.dtype and np.array_equal(got, want)


@settings(max_examples=80)
@given(data=st.data())
def test_sign_and_float_thresholds(data, run_everywhere):
    """The planner's per-channel sign (count of sign[c] * x >= T) and float thresholds (+-inf, halves)."""
    B, shape, layout, rng, xdt, ax, T = draw_case(data)
    if data.draw(st.booleans()):
        T = T.astype(np.float64) + rng.choice([0.0, 0.5, -0.5, 0.25], T.shape)
        if B:
            T[rng.random(T.shape) < 0.1] = np.inf
            T[rng.random(T.shape) < 0.1] = -np.inf
    x = draw_x(rng, shape, xdt, np.nan_to_num(T, posinf=0, neginf=0).astype(np.int64))
    sign = rng.choice([-1, 1], shape[ax]).astype(np.int64)
    od, s, b = draw_out(data, B)
    sh = [1] * x.ndim
    sh[ax] = shape[ax]
    want = ref.multi_threshold(x.astype(np.int64) * sign.reshape(sh), T, s, b, data_layout=layout, out_dtype=od)
    tab = int_threshold_table(T, xdt, s, b, od, sign=sign)
    assert tab is not None
    for key, got in kernel_results(run_everywhere, x, tab, ax, od).items():
        assert got.dtype == want.dtype and np.array_equal(got, want), key


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case", ["span_nchw", "flat_per_tensor", "lanes_nhwc", "lanes_2d"])
def test_loop_edges(kernel_path, num_threads, algo, case):
    """Sizes that cross the 4-vector / 4-row steps and their tails, for every width class."""
    rng = np.random.default_rng(7)
    for B in (3, 15, 16, 31, 40, 255):
        if case == "span_nchw":
            x = rng.integers(-300, 300, (2, 3, 9, 15), dtype=np.int32)      # runs of 135 = 2 x 64 + 7
            T, ax = np.sort(rng.integers(-300, 300, (3, B)), 1), 1
        elif case == "flat_per_tensor":
            x = rng.integers(-300, 300, (1, 3, 11, 7), dtype=np.int32)
            T, ax = rng.integers(-300, 300, (1, B)), 1
        elif case == "lanes_nhwc":
            x = rng.integers(-300, 300, (1, 3, 3, 37), dtype=np.int32)      # 9 rows = 2 x 4 + 1
            T, ax = rng.integers(-300, 300, (37, B)), 3
        else:
            x = rng.integers(-300, 300, (6, 19), dtype=np.int32)
            T, ax = rng.integers(-300, 300, (19, B)), 1
        layout = "NHWC" if case == "lanes_nhwc" else "NCHW"
        want = ref.multi_threshold(x, T, 1, -2, data_layout=layout, out_dtype="int16")
        got = _core.multi_threshold_int(x, int_threshold_table(T, x.dtype, 1, -2, "int16"), ax, "int16", algo)
        assert np.array_equal(got, want), (B, case)


def test_threads_split_big_tensor(run_everywhere):
    """A tensor large enough to be split over threads: same bits for every path and thread count."""
    rng = np.random.default_rng(3)
    x = rng.integers(-2 ** 31, 2 ** 31, (1, 64, 56, 56), dtype=np.int64).astype(np.int32)
    for T, ax, layout in ((np.sort(rng.integers(-2 ** 31, 2 ** 31, (64, 15)), 1), 1, "NCHW"),
                          (rng.integers(-2 ** 31, 2 ** 31, (56, 255)), 3, "NHWC")):
        tab = int_threshold_table(T, np.int32, 1, 0, "uint8")
        res = kernel_results(run_everywhere, x, tab, ax, "uint8")
        # oracle for the big tensor: numpy int64 counts, themselves checked against the reference on
        # a slice (the kernel is elementwise)
        xm = np.moveaxis(x, ax, -1)
        Tb = T if T.shape[0] == 1 else T[np.arange(xm.shape[-1])]
        cnt = np.zeros(xm.shape, np.int64)
        for j in range(T.shape[1]):
            cnt += xm >= Tb[:, j]
        want = np.moveaxis(cnt, -1, ax).astype(np.uint8)
        sl = (slice(0, 1), slice(None), slice(0, 1), slice(0, 2)) if ax == 1 else \
            (slice(0, 1), slice(0, 1), slice(0, 2), slice(None))
        assert np.array_equal(want[sl], ref.multi_threshold(x[sl], T, data_layout=layout, out_dtype="uint8"))
        for key, got in res.items():
            assert np.array_equal(got, want), key


def test_table_reduction():
    """Always/never thresholds leave the rows (into the bias / dropped); rows sorted, x > t - 1."""
    T = np.array([[-200, 5, 300, 5, -128, 127, 128]])
    tab = int_threshold_table(T, np.int8, 2, 1, "int16")
    assert tab.width == 3 and tab.rows == 1 and tab.in_dtype == "int8"   # 5, 5, 127 stay
    x = np.arange(-128, 128, dtype=np.int8)
    assert np.array_equal(multi_threshold(x[None], T, 2, 1, out_dtype="int16"),
                          ref.multi_threshold(x[None], T, 2, 1, out_dtype="int16"))
    # static range not in the output type: no table, the numpy path checks the actual values
    assert int_threshold_table(T, np.int8, 2, 250, "uint8") is None
    assert multi_threshold(np.array([[-128]], np.int8), T, 2, 250, out_dtype="uint8")[0, 0] == 254
    with pytest.raises(ValueError, match="range"):
        multi_threshold(np.array([[127]], np.int8), T, 2, 250, out_dtype="uint8")
    # dtypes the kernel does not take
    assert int_threshold_table(T, np.uint32, 1, 0, "int32") is None
    assert int_threshold_table(T, np.int32, 1, 0, "int64") is None


def test_errors():
    T = np.array([[1, 2, 3]], dtype=np.int32)
    one, zero = np.array([1]), np.array([0])
    with pytest.raises(ValueError, match="sorted"):
        _core.threshold_table(np.array([[3, 2]], np.int32), one, zero, "int32")
    with pytest.raises(ValueError, match="int32 array"):
        _core.threshold_table(T.astype(np.int64), one, zero, "int32")
    with pytest.raises(ValueError, match="int32 array"):
        _core.threshold_table(T[0], one, zero, "int32")
    with pytest.raises(ValueError, match="scale"):
        _core.threshold_table(T, np.array([1, 2]), zero, "int32")
    with pytest.raises(ValueError, match="bias"):
        _core.threshold_table(T, one, np.array([0.5]), "int32")
    with pytest.raises(ValueError, match="in_dtype"):
        _core.threshold_table(T, one, zero, "uint32")
    with pytest.raises(ValueError, match="at least one row"):
        _core.threshold_table(np.zeros((0, 3), np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64), "int32")
    tab = _core.threshold_table(T, one, zero, "int32")
    x = np.zeros((2, 3), np.int32)
    with pytest.raises(ValueError, match="prepared for int32"):
        _core.multi_threshold_int(x.astype(np.int16), tab, 1, "uint8")
    with pytest.raises(ValueError, match="prepared for int32"):
        _core.multi_threshold_int(x.astype(">i4"), tab, 1, "uint8")
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.multi_threshold_int(np.zeros((3, 4), np.int32).T, tab, 1, "uint8")
    with pytest.raises(ValueError, match="axis"):
        _core.multi_threshold_int(x, tab, 2, "uint8")
    with pytest.raises(ValueError, match="axis"):
        _core.multi_threshold_int(x, tab, -1, "uint8")
    with pytest.raises(ValueError, match="out_dtype"):
        _core.multi_threshold_int(x, tab, 1, "float32")
    with pytest.raises(ValueError, match="algo"):
        _core.multi_threshold_int(x, tab, 1, "uint8", "fast")
    tab3 = _core.threshold_table(np.zeros((3, 2), np.int32), np.ones(3, np.int64), np.zeros(3, np.int64), "int32")
    with pytest.raises(ValueError, match="3 rows but x has 2 channels"):
        _core.multi_threshold_int(np.zeros((4, 2), np.int32), tab3, 1, "uint8")
    with pytest.raises(TypeError):
        _core.multi_threshold_int(x, "not a table", 1, "uint8")
    # the Python API keeps its checks on the kernel path
    with pytest.raises(ValueError, match="channels"):
        multi_threshold(np.zeros((2, 3), np.int32), np.zeros((2, 1), np.int64), out_dtype="uint8")
    with pytest.raises(ValueError, match="out_scale"):
        multi_threshold(np.zeros((2, 3), np.int32), np.zeros((1, 1), np.int64), 0.5, out_dtype="int8")
    with pytest.raises(TypeError, match="out_dtype"):
        multi_threshold(np.zeros((2, 3), np.int32), np.zeros((1, 1)), out_dtype="float32")
    with pytest.raises(ValueError, match="NaN"):
        multi_threshold(np.zeros((2, 3), np.int32), np.array([[np.nan]]), out_dtype="uint8")
    with pytest.raises(ValueError, match="2\\^53"):
        multi_threshold(np.zeros((2, 3), np.int32), np.array([[2 ** 60]]), out_dtype="uint8")
    # empty tensors and zero thresholds
    assert multi_threshold(np.zeros((0, 3), np.int32), np.zeros((3, 2)), out_dtype="uint8").shape == (0, 3)
    assert multi_threshold(np.zeros((2, 3), np.int16), np.zeros((1, 0)), 5, 7, out_dtype="int8").tolist() == \
        [[7, 7, 7], [7, 7, 7]]


def test_graph_runner_steps(kernel_path):
    """The demo threshold models: every MultiThreshold step runs the C++ kernel (named in inspect)
    and gives the reference's bits, and the numpy int64 searchsorted step's (an int64 input)."""
    from pathlib import Path
    demo = Path(pyqinfer.__file__).parent / "data" / "demo"
    rng = np.random.default_rng(0)
    seen = 0
    for name in ("cnn_thresh2", "mlp_thresh2"):
        m = pyqinfer.load(str(demo / f"{name}.onnx"))
        for st_ in m.plan.steps:
            n = st_.node
            if n.kind != "MultiThreshold":
                continue
            seen += 1
            assert st_.kernel.startswith("C++ thresholds ("), st_.kernel
            shape = m.plan.g.tensors[n.inputs[0]].shape
            shape = (3,) + tuple(shape[1:])
            layout = n.attrs.get("data_layout", "NCHW")
            if st_.in_layouts and st_.in_layouts[0] == "NHWC":
                shape, layout = (shape[0], shape[2], shape[3], shape[1]), "NHWC"
            T = n.params["thresholds"]
            x = rng.integers(int(T.min()) - 5, int(T.max()) + 6, shape).astype(np.int32)
            x.reshape(-1)[: T.size] = T.reshape(-1)[: x.size]            # ties
            got = st_.fast(x)
            sign = n.params.get("sign")
            xs = x.astype(np.int64)
            if sign is not None:
                sh = [1] * x.ndim
                sh[ref.channel_axis(x.ndim, layout)] = sign.size
                xs = xs * sign.reshape(sh)
            want = ref.multi_threshold(xs, T, n.attrs.get("out_scale"), n.attrs.get("out_bias"),
                                       data_layout=layout, out_dtype=n.attrs.get("out_dtype"))
            assert got.dtype == want.dtype and np.array_equal(got, want)
            assert np.array_equal(st_.fast(x.astype(np.int64)), want)   # the numpy step
    assert seen == 4
