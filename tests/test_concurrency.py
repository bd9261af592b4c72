"""Thread safety of a loaded model (docs/robustness.md, "Thread-safety contract").

One :class:`pyqinfer.graph.runner.Model` is run from 8 Python threads at once;
every thread must get exactly the bits a single-threaded run gives, call after
call, with the kernel thread pool at 1 and 2 threads. Each thread feeds its own
input (and some threads another batch size), so a result delivered to the wrong
caller, a buffer shared between calls or a half-initialized per-shape cache
(the planner's first-call validation, auto-pad and Resize index caches) would
show up as a mismatch.
"""
import threading

import numpy as np
import pytest

import pyqinfer

import graph_models as gm

N_THREADS = 8
ROUNDS = 3          # fresh model each round: the first calls race through the per-shape caches
CALLS = 12          # runs per thread per round

_CACHE = {}


def quantized(kind, fmt, tmp_path_factory):
    key = (kind, fmt)
    if key not in _CACHE:
        model = getattr(gm, kind)()
        shape = {"cnn": [1, 3, 16, 16], "mlp": [1, 1, 8, 8], "movement": [1, 3, 8, 8]}[kind]
        _CACHE[key] = gm.quantize(model, fmt, per_channel=True, act="uint8", shape=shape,
                                  tmpdir=str(tmp_path_factory.mktemp(f"{kind}{fmt}")))
    return _CACHE[key]


def feeds_for(m, k):
    """Input k: batch 1, 2 or 3 (by thread), values seeded by k."""
    io = m.inputs[0]
    shape = [1 + k % 3] + [d for d in io.shape[1:]]
    rng = np.random.default_rng(1000 + k)
    return {io.name: rng.normal(0, 1, shape).astype(np.float32)}


def start_and_join(worker, n):
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in ts), "a thread hung"


def hammer(m, feeds, expect, calls):
    """Run ``m`` from N_THREADS threads released together; return the mismatches."""
    barrier = threading.Barrier(N_THREADS)
    errors = []

    def worker(k):
        try:
            barrier.wait()
            for c in range(calls):
                got = m.run(feeds[k])
                for name, ref in expect[k].items():
                    if got[name].dtype != ref.dtype or not np.array_equal(got[name], ref):
                        errors.append(f"thread {k} call {c}: output {name!r} differs")
        except Exception as e:  # noqa: BLE001 -- reported as a failure below
            errors.append(f"thread {k}: {type(e).__name__}: {e}")

    start_and_join(worker, N_THREADS)
    return errors


@pytest.mark.parametrize("kind,fmt", [("cnn", "QDQ"), ("cnn", "QOperator"), ("mlp", "QDQ"), ("movement", "QDQ")])
def test_eight_threads_one_model(kind, fmt, num_threads, tmp_path_factory):
    q = quantized(kind, fmt, tmp_path_factory)
    single = pyqinfer.load(q)
    feeds = [feeds_for(single, k) for k in range(N_THREADS)]
    expect = [single.run(f) for f in feeds]           # single-threaded, one call at a time
    assert len({v.tobytes() for e in expect for v in e.values()}) > 1   # the inputs differ
    for r in range(ROUNDS):
        m = pyqinfer.load(q) if r else single          # round 0: the warmed model; then fresh ones
        errors = hammer(m, feeds, expect, CALLS)
        assert not errors, "\n".join(errors[:10])
    # and the model still gives the single-threaded bits afterwards
    for f, e in zip(feeds, expect):
        got = single.run(f)
        assert all(np.array_equal(got[k], v) for k, v in e.items())


def test_concurrent_runs_on_every_kernel_path(kernel_path, tmp_path_factory):
    """Forced kernel path (process-wide), 2 kernel threads, 8 callers: identical bits."""
    q = quantized("cnn", "QOperator", tmp_path_factory)
    pyqinfer.set_num_threads(2)
    try:
        m = pyqinfer.load(q)
        feeds = [feeds_for(m, k) for k in range(N_THREADS)]
        expect = [m.run(f) for f in feeds]
        errors = hammer(pyqinfer.load(q), feeds, expect, 4)
        assert not errors, "\n".join(errors[:10])
    finally:
        pyqinfer.set_num_threads(0)


def test_different_models_at_once(tmp_path_factory):
    """Two models run concurrently (4 threads each) do not disturb each other."""
    m1 = pyqinfer.load(quantized("cnn", "QDQ", tmp_path_factory))
    m2 = pyqinfer.load(quantized("mlp", "QDQ", tmp_path_factory))
    models = [m1 if k % 2 else m2 for k in range(N_THREADS)]
    feeds = [feeds_for(models[k], k) for k in range(N_THREADS)]
    expect = [models[k].run(feeds[k]) for k in range(N_THREADS)]
    barrier = threading.Barrier(N_THREADS)
    errors = []

    def worker(k):
        try:
            barrier.wait()
            for _ in range(8):
                got = models[k].run(feeds[k])
                if not all(np.array_equal(got[n], v) for n, v in expect[k].items()):
                    errors.append(f"thread {k}: output differs")
        except Exception as e:  # noqa: BLE001
            errors.append(f"thread {k}: {type(e).__name__}: {e}")

    start_and_join(worker, N_THREADS)
    assert not errors, "\n".join(errors[:10])


def test_set_num_threads_while_running(tmp_path_factory):
    """Changing the kernel thread count while other threads run a model is safe and
    does not change any result (results never depend on the thread count)."""
    q = quantized("cnn", "QOperator", tmp_path_factory)
    m = pyqinfer.load(q)
    feeds = [feeds_for(m, k) for k in range(4)]
    expect = [m.run(f) for f in feeds]
    stop = threading.Event()
    errors = []

    def worker(k):
        try:
            while not stop.is_set():
                got = m.run(feeds[k])
                if not all(np.array_equal(got[n], v) for n, v in expect[k].items()):
                    errors.append(f"thread {k}: output differs")
        except Exception as e:  # noqa: BLE001
            errors.append(f"thread {k}: {type(e).__name__}: {e}")

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    try:
        for n in (1, 2, 3, 1, 2, 0) * 5:
            pyqinfer.set_num_threads(n)
    finally:
        stop.set()
        for t in ts:
            t.join(timeout=300)
        pyqinfer.set_num_threads(0)
    assert not errors, "\n".join(errors[:10])
