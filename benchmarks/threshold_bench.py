"""MultiThreshold: the C++ kernel (csrc/threshold/) vs the numpy step it replaced, in one run
(not a pytest-benchmark suite; run by hand):

    PYTHONPATH=. python benchmarks/threshold_bench.py [--threads 1,2] [--reps 15]

Layer: a 1x64x56x56 int32 accumulator, per-channel thresholds [64, T] (T = 3, 15, 255) and
per-tensor ones [1, T], NCHW and NHWC (the graph runner holds conv outputs NHWC), uint8 out.
"numpy" is the planner's previous step (``customops.numpy_int_count``: per-channel searchsorted
on int64 rows); "C++" is ``_core.multi_threshold_int`` with the table prepared once (the
planner's step), its algorithm picked by 'auto'. Models: the demo models cnn_thresh2 and
mlp_thresh2 planned twice, with ``customops.THRESHOLD_KERNEL`` False (numpy step) and True,
batch 1 and 64, whole-model latency. Both sides of every row are timed interleaved
(A, B, A, B, ...) and the medians compared; the ratio is numpy time / C++ time.
"""
import argparse
import statistics
import time
from pathlib import Path

import numpy as np

import pyqinfer
from pyqinfer import _core
from pyqinfer.graph import customops
from pyqinfer.ops import int_threshold_table


def interleaved(fa, fb, reps):
    ta, tb = [], []
    for _ in range(reps):
        for f, ts in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def layer_rows(threads, reps):
    rng = np.random.default_rng(0)
    x = rng.integers(-3000, 3000, (1, 64, 56, 56)).astype(np.int32)
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    print(f"\n### layer 1x64x56x56 int32 -> uint8 (threads {threads}, kernel path {pyqinfer.get_kernel_path()})\n")
    print("| T | thresholds | layout | numpy us | C++ us | algo | numpy / C++ |")
    print("|---|---|---|---|---|---|---|")
    for T in (3, 15, 255):
        for rows in (64, 1):
            Th = rng.integers(-3000, 3000, (rows, T))
            Ts = np.sort(Th, axis=1)
            tab = int_threshold_table(Th, np.int32, 1, 0, "uint8")
            for lay, xx, ax in (("NCHW", x, 1), ("NHWC", xh, 3)):
                def old():
                    return customops.numpy_int_count(xx, ax, Ts, None, 1, 0, "uint8")

                def new():
                    return _core.multi_threshold_int(xx, tab, ax, "uint8")
                assert np.array_equal(old(), new())
                a, b = interleaved(old, new, reps)
                algo = tab.algo(rows > 1 and ax == 3)
                print(f"| {T} | [{rows}, {T}] | {lay} | {a * 1e6:.0f} | {b * 1e6:.0f} | {algo} | {a / b:.1f}x |")


def model_rows(threads, reps):
    demo = Path(pyqinfer.__file__).parent / "data" / "demo"
    rng = np.random.default_rng(1)
    print(f"\n### demo models, whole-model latency (threads {threads})\n")
    print("| model | batch | numpy step us | C++ step us | numpy / C++ |")
    print("|---|---|---|---|---|")
    for name in ("cnn_thresh2", "mlp_thresh2"):
        try:
            customops.THRESHOLD_KERNEL = False
            m_old = pyqinfer.load(str(demo / f"{name}.onnx"))
        finally:
            customops.THRESHOLD_KERNEL = True
        m_new = pyqinfer.load(str(demo / f"{name}.onnx"))
        assert any(s.kernel.startswith("numpy thresholds") for s in m_old.plan.steps)
        assert any(s.kernel.startswith("C++ thresholds") for s in m_new.plan.steps)
        for batch in (1, 64):
            x = (rng.random((batch, 1, 8, 8)) * 16).astype(np.float32)
            assert np.array_equal(m_old(x), m_new(x))
            a, b = interleaved(lambda: m_old(x), lambda: m_new(x), reps * 20 if batch == 1 else reps * 4)
            print(f"| {name} | {batch} | {a * 1e6:.1f} | {b * 1e6:.1f} | {a / b:.2f}x |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    try:
        for t in [int(v) for v in args.threads.split(",")]:
            pyqinfer.set_num_threads(t)
            layer_rows(t, args.reps)
            model_rows(t, args.reps)
    finally:
        pyqinfer.set_num_threads(0)


if __name__ == "__main__":
    main()
