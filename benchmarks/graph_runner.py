"""Whole-model timing of the graph runner vs ONNX Runtime, and the runner's per-step
Python overhead (not a pytest-benchmark suite; run by hand):

    PYTHONPATH=. python benchmarks/graph_runner.py [--batch 1,8] [--threads 1]

Model: tests/graph_models.resnet_small (stem conv, 4 residual blocks of two 3x3 convs,
a strided transition conv, global pool, gemm; 16/32 channels, 32x32 input) quantized
with onnxruntime.quantization.quantize_static (per-channel, uint8 activations), QDQ and
QOperator. Both engines run the same file in the same process, interleaved; medians.
The overhead is the median over 300 runs of (run time - time inside the step callables),
divided by the number of steps (an instrumented run; the transposes between layouts and
the input checks count as overhead).
"""
import argparse
import logging
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
logging.disable(logging.WARNING)


def median_time(fn, reps):
    # As in pyqinfer/bench/timing.py: sleep first and discard one call, so the other engine's
    # idle-spinning workers (ORT's intra-op threads spin for tens of ms after a run) do not
    # hold the second core during this block
    time.sleep(0.05)
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    import onnxruntime as ort

    import graph_models as gm
    import pyqinfer
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    pyqinfer.set_num_threads(args.threads)
    for fmt in ("QDQ", "QOperator"):
        q = gm.quantize(gm.resnet_small(), fmt, per_channel=True, act="uint8", shape=[1, 3, 32, 32])
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(q.SerializeToString(), so, providers=["CPUExecutionProvider"])
        for batch in (int(b) for b in args.batch.split(",")):
            m = pyqinfer.load(q)
            feeds = {"input": np.random.default_rng(0).normal(0, 1, (batch, 3, 32, 32)).astype(np.float32)}
            assert np.array_equal(m.run(feeds)[m.graph.outputs[0]], sess.run(None, feeds)[0]), "not bit-exact"
            for _ in range(20):
                m.run(feeds)
                sess.run(None, feeds)
            tp, to = [], []
            for _ in range(5):
                tp.append(median_time(lambda: m.run(feeds), 60))
                to.append(median_time(lambda: sess.run(None, feeds), 60))
            tp, to = statistics.median(tp), statistics.median(to)
            acc = [0.0]

            def wrap(f):
                def g(*a):
                    t0 = time.perf_counter()
                    r = f(*a)
                    acc[0] += time.perf_counter() - t0
                    return r
                return g
            for st in m.plan.steps:
                st.fast = wrap(st.fast)
            over, tots = [], []
            for _ in range(300):     # per run: total - time inside the steps; median over runs
                acc[0] = 0.0
                t0 = time.perf_counter()
                m.run(feeds)
                tots.append(time.perf_counter() - t0)
                over.append(tots[-1] - acc[0])
            tot, ovh = statistics.median(tots), statistics.median(over)
            steps = len(m.plan.steps)
            print(f"{fmt:9} batch {batch} threads {args.threads}: {steps} steps; pyqinfer {tp * 1e6:7.1f} us, "
                  f"ORT {to * 1e6:7.1f} us, pyqinfer/ORT {tp / to:.2f}; runner overhead "
                  f"{ovh * 1e6 / steps:.2f} us/step = {ovh / tot * 100:.0f}% of the run")


if __name__ == "__main__":
    main()
