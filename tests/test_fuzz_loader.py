"""Fuzzing the model loader, importer, planner and runner (docs/robustness.md, "Fuzzing").

Mutants of valid models (tests/fuzz_models.py: byte-level and structural) are
loaded and, when they load, run. Every case must end in one of

* an exception of the allowed classes, ``ValueError`` or ``TypeError`` (pyqinfer's
  UnsupportedModelError and GraphError are ValueErrors; protobuf's DecodeError
  and onnx's errors on unreadable tensors are re-raised as ValueError naming the
  tensor) -- but not one the importer's safety net converted from an internal
  KeyError/IndexError/AttributeError (those are bugs: a check is missing);
* a run whose outputs are bit for bit ONNX Runtime's on the same mutant and inputs,
  or, when ONNX Runtime refuses the mutant itself, a run that finished (counted);
  ONNX Runtime runs in a separate process (fuzz_models.OrtWorker) because it
  crashes on some mutants pyqinfer runs (counted as "ort_crashed");

never a crash, a hang (a watchdog kills the process after CASE_TIMEOUT s and
prints the stack), a MemoryError (absurd shapes are rejected before allocating)
or any other exception.

Bounded in CI: PYQINFER_FUZZ_CASES cases (default 10,000, about a minute) with
seed PYQINFER_FUZZ_SEED (default 20261125). The long run for a release:
``pytest tests/test_fuzz_loader.py --fuzz-long`` (200,000 cases, about 20 minutes)
or any count with the environment variable. A failure prints the seed and case
index; ``python tests/test_fuzz_loader.py SEED CASE`` replays one case.
"""
import collections
import faulthandler
import os
import sys
import tempfile
import time

import numpy as np
import pytest

import pyqinfer

import fuzz_models as fm
import graph_models as gm

SEED = int(os.environ.get("PYQINFER_FUZZ_SEED", "20261125"))
CASES = int(os.environ.get("PYQINFER_FUZZ_CASES", "10000"))
LONG_CASES = 200_000
CASE_TIMEOUT = 60.0           # watchdog: a case that takes longer is a hang
SLOW_CASE = 10.0              # a case slower than this fails the test (reject fast)
ALLOWED = (ValueError, TypeError)
INTERNAL = (KeyError, IndexError, AttributeError)


def qconv_seed():
    """A minimal QOperator QLinearConv model (no ONNX Runtime quantizer needed)."""
    import onnx
    from onnx import TensorProto as TP, helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = {"xs": np.float32(0.1), "xz": np.uint8(128), "w": rng.integers(-128, 128, (4, 3, 3, 3)).astype(np.int8),
             "ws": np.float32(0.01), "wz": np.int8(0), "ys": np.float32(0.2), "yz": np.uint8(100)}
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], name="conv1",
                            pads=[1, 1, 1, 1])
    g = helper.make_graph([node], "t", [helper.make_tensor_value_info("x", TP.UINT8, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TP.UINT8, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def qonnx_seed():
    """A QONNX MLP (Quant on input, weights and activations; MatMul, Add, Relu)."""
    import test_qonnx as tq
    rng = np.random.default_rng(3)
    W1, W2 = rng.normal(size=(12, 8)).astype(np.float32), rng.normal(size=(8, 5)).astype(np.float32)
    m, _ = tq.mlp_model(W1, W2, rng.normal(size=8).astype(np.float32), 0.05, 1, 4, 0, 0, "ROUND")
    return m


# Seeds ONNX Runtime cannot run (pyqinfer-domain and QONNX ops): their mutants are checked for
# a clean exception or a finished run, not against ORT
NOT_ORT = ("demo_cnn_log5", "demo_mlp_thresh2", "qonnx_mlp")


def seed_models(tmpdir):
    import onnx
    from pyqinfer.demo import DATA_DIR
    seeds = {"qconv": qconv_seed()}
    for kind, fmt, shape in (("cnn", "QDQ", [1, 3, 16, 16]), ("cnn", "QOperator", [1, 3, 16, 16]),
                             ("mlp", "QDQ", [1, 1, 8, 8]), ("movement", "QDQ", [1, 3, 8, 8]),
                             ("mlp_residual", "QOperator", [1, 32])):
        seeds[f"{kind}_{fmt}"] = gm.quantize(getattr(gm, kind)(), fmt, per_channel=True, act="uint8", shape=shape,
                                             tmpdir=tmpdir)
    # the pyqinfer domain: ShiftConv + ShiftMatMul (5-bit log weights), MultiThreshold
    for name in ("cnn_log5", "mlp_thresh2"):
        seeds[f"demo_{name}"] = onnx.load(os.path.join(DATA_DIR, f"{name}.onnx"))
    seeds["qonnx_mlp"] = qonnx_seed()
    return seeds


def inputs_for(model, case):
    rng = np.random.default_rng(case)
    feeds = {}
    for io in model.inputs:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in io.shape]
        if io.dtype.kind == "f":
            feeds[io.name] = rng.normal(0, 1, shape).astype(io.dtype)
        elif io.dtype.kind in "iu":
            info = np.iinfo(io.dtype)
            feeds[io.name] = rng.integers(max(info.min, -128), min(info.max, 255), shape, endpoint=True).astype(io.dtype)
        else:
            feeds[io.name] = rng.integers(0, 2, shape).astype(io.dtype)
    return feeds


def same(a, b):
    if not isinstance(b, np.ndarray) or a.shape != b.shape or a.dtype != b.dtype:
        return False
    return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def run_case(mutant, case, ort, tmpdir=None):
    """Outcome of one case: (kind, detail); kind "rejected", "ran+ort", "ran", "ort_crashed",
    "noinput" or "BUG"."""
    try:
        if tmpdir is not None and isinstance(mutant, bytes):
            path = os.path.join(tmpdir, "m.onnx")
            with open(path, "wb") as f:
                f.write(mutant)
            m = pyqinfer.load(path)
        else:
            m = pyqinfer.load(mutant)
        if any(io.shape is None for io in m.inputs):
            return "noinput", "an input of unknown shape"
        feeds = inputs_for(m, case)
        ours = m.run(feeds)
    except ALLOWED as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, INTERNAL):
            return "BUG", f"{type(e).__name__} from internal {type(cause).__name__}: {e}"
        if isinstance(e, MemoryError):
            return "BUG", f"MemoryError: {e}"
        if not str(e):
            return "BUG", f"{type(e).__name__} without a message"
        return "rejected", type(e).__name__
    except BaseException as e:  # noqa: BLE001 -- any other exception is a finding
        if isinstance(e, KeyboardInterrupt):
            raise
        return "BUG", f"{type(e).__name__}: {e}"
    theirs, crashed = ort.run(mutant if isinstance(mutant, bytes) else mutant.SerializeToString(), feeds)
    if crashed:
        return "ort_crashed", "ONNX Runtime crashed or hung on the mutant (pyqinfer ran it)"
    if theirs is None:
        return "ran", "ONNX Runtime refuses the mutant"
    for name, v in theirs.items():
        if name in ours and not same(ours[name], v):
            return "BUG", f"output {name!r} differs from ONNX Runtime"
    return "ran+ort", ""


def fuzz(seeds, seed, n, ort, start=0):
    """Run n cases; returns (counts, bugs, slowest)."""
    counts = collections.Counter()
    bugs = []
    slowest = (0.0, None)
    tmpdir = tempfile.mkdtemp()
    for case, name, what, mutant in fm.Mutator(seed).mutants(seeds, n, start):
        faulthandler.dump_traceback_later(CASE_TIMEOUT, exit=True)
        t = time.perf_counter()
        try:
            kind, detail = run_case(mutant, case, ort, tmpdir if case % 50 == 0 else None)
        finally:
            faulthandler.cancel_dump_traceback_later()
        dt = time.perf_counter() - t
        slowest = max(slowest, (dt, case))
        if dt > SLOW_CASE:
            kind, detail = "BUG", f"took {dt:.1f} s"
        counts[kind] += 1
        counts["bytes" if isinstance(mutant, bytes) else "structural"] += 1
        if kind == "BUG":
            bugs.append(f"case {case} (seed {seed}) on {name}: {what}\n    -> {detail}")
    return counts, bugs, slowest


@pytest.fixture(scope="module")
def ort():
    w = fm.OrtWorker()
    yield w
    w.close()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return seed_models(str(tmp_path_factory.mktemp("fuzzseeds")))


def test_seed_models_are_valid_and_match_ort(seeds, ort):
    """The seeds themselves load, run and give ORT's bits (the fuzzer starts from valid models)."""
    assert set(NOT_ORT) <= set(seeds)
    for name, model in seeds.items():
        kind, detail = run_case(model, 0, ort)
        assert kind == ("ran" if name in NOT_ORT else "ran+ort"), f"seed {name}: {kind} {detail}"


def test_mutator_is_deterministic(seeds):
    a = [(c, n, w) for c, n, w, _ in fm.Mutator(5).mutants(seeds, 40)]
    b = [(c, n, w) for c, n, w, _ in fm.Mutator(5).mutants(seeds, 40)]
    assert a == b
    assert next(fm.Mutator(5).mutants(seeds, 1, start=17))[:3] == a[17]   # replay one case alone
    assert len({w for _, _, w in a}) > 30


def test_fuzz_loader(seeds, ort, request):
    n = LONG_CASES if request.config.getoption("--fuzz-long") else CASES
    t0 = time.perf_counter()
    counts, bugs, slowest = fuzz(seeds, SEED, n, ort)
    took = time.perf_counter() - t0
    summary = (f"{n} cases (seed {SEED}) in {took:.1f} s: {dict(counts)}; slowest case {slowest[1]} "
               f"{slowest[0] * 1e3:.0f} ms")
    print("\n" + summary)
    assert not bugs, f"{len(bugs)} findings; {summary}\n" + "\n".join(bugs[:25])
    assert sum(counts[k] for k in ("rejected", "ran", "ran+ort", "ort_crashed", "noinput")) == n
    # the mix is meaningful: most mutants are rejected, a good share still runs and is checked against ORT
    assert counts["rejected"] > n // 2 and counts["ran+ort"] > n // 50, summary
    assert counts["bytes"] > n // 5 and counts["structural"] > n // 2, summary


# Findings of longer runs with other seeds, replayed (each was an internal error or an
# OverflowError instead of a clear ValueError): zero points of another dtype than the input,
# an infinite QONNX bit width, a Quant without outputs, QLinearConcat without axis, a fused
# QuantizeLinear without its scale; duplicated initializers (ORT then ran the layer in float)
@pytest.mark.parametrize("seed,case", [(20261125, 345), (20261125, 1119), (20261125, 1529), (1, 13643),
                                       (3, 14869), (4, 6547), (7, 17457)])
def test_fuzz_findings_stay_fixed(seeds, ort, seed, case):
    _, name, what, mutant = next(fm.Mutator(seed).mutants(seeds, 1, start=case))
    kind, detail = run_case(mutant, case, ort)
    assert kind != "BUG", f"case {case} (seed {seed}) on {name}: {what} -> {detail}"


@pytest.mark.parametrize("what,mutate", [
    ("input dim 2^40", lambda m: m.graph.input[0].type.tensor_type.shape.dim[2].__setattr__("dim_value", 2 ** 40)),
    ("input dim 10^9", lambda m: m.graph.input[0].type.tensor_type.shape.dim[1].__setattr__("dim_value", 10 ** 9)),
])
def test_absurd_input_shapes_rejected_before_allocating(seeds, what, mutate):
    import onnx
    m = onnx.ModelProto()
    m.CopyFrom(seeds["cnn_QDQ"])
    mutate(m)
    with pytest.raises(ValueError, match=r"input 'input': shape .* elements .* the limit is"):
        pyqinfer.load(m)


def test_unreadable_initializers_name_the_tensor(seeds):
    import onnx
    from pyqinfer.graph import UnsupportedModelError
    for field, value, msg in (("data_type", 99, "element type 99"), ("dims", [5, 7], "cannot be read"),
                              ("dims", [2 ** 40, 2 ** 40], "claims"), ("dims", [-3], "negative dimension")):
        m = onnx.ModelProto()
        m.CopyFrom(seeds["qconv"])
        init = [i for i in m.graph.initializer if i.name == "w"][0]
        if field == "dims":
            del init.dims[:]
            init.dims.extend(value)
        else:
            init.data_type = value
        with pytest.raises(UnsupportedModelError, match=f"initializer 'w'.*{msg}"):
            pyqinfer.load(m)
    m = onnx.ModelProto()
    m.CopyFrom(seeds["qconv"])
    init = [i for i in m.graph.initializer if i.name == "w"][0]
    init.data_location = onnx.TensorProto.EXTERNAL
    e = init.external_data.add()
    e.key, e.value = "location", "../../../etc/passwd"
    with pytest.raises(UnsupportedModelError, match="initializer 'w' keeps its data in an external file"):
        pyqinfer.load(m)


def test_schema_checks_name_the_node(seeds):
    import onnx
    from onnx import helper
    from pyqinfer.graph import UnsupportedModelError
    m = onnx.ModelProto()
    m.CopyFrom(seeds["qconv"])
    m.graph.node[0].attribute.append(helper.make_attribute("blocksize", 3))
    with pytest.raises(UnsupportedModelError, match=r"'conv1' \(QLinearConv\): unknown attribute 'blocksize'"):
        pyqinfer.load(m)
    m.CopyFrom(seeds["qconv"])
    m.opset_import[0].version = 99
    with pytest.raises(UnsupportedModelError, match=r"'conv1' \(QLinearConv\): the model declares ai.onnx opset 99"):
        pyqinfer.load(m)
    m.CopyFrom(seeds["qconv"])
    m.opset_import[0].version = 1
    with pytest.raises(UnsupportedModelError, match=r"ai.onnx has no op 'QLinearConv' at opset 1"):
        pyqinfer.load(m)
    m.CopyFrom(seeds["qconv"])
    del m.graph.node[0].input[3:]
    with pytest.raises(UnsupportedModelError, match=r"'conv1' \(QLinearConv\): has 3 inputs; the op takes 8 to 9"):
        pyqinfer.load(m)
    m.CopyFrom(seeds["qconv"])
    z = [i for i in m.graph.initializer if i.name == "yz"][0]
    z.CopyFrom(onnx.numpy_helper.from_array(np.array(300, np.int32), "yz"))
    with pytest.raises(UnsupportedModelError, match=r"'conv1' \(QLinearConv\): y must be uint8 or int8"):
        pyqinfer.load(m)


if __name__ == "__main__":   # replay: python tests/test_fuzz_loader.py SEED CASE
    seed, case = int(sys.argv[1]), int(sys.argv[2])
    sm = seed_models(tempfile.mkdtemp())
    c, name, what, mutant = next(fm.Mutator(seed).mutants(sm, 1, start=case))
    print(f"case {c} on {name}: {what}")
    w = fm.OrtWorker()
    print(run_case(mutant, c, w))
    w.close()
