"""Shift route against the multiply route, and the packed-field kernel against the chunks
of 16, at GEMM shapes other than 1024^3 (docs/performance.md "Shift vs multiply"): thread
CPU time, best of 5 alternating rounds, every shift output checked against the int64 oracle.

    PYTHONPATH=. python benchmarks/micro/shift_shapes_ab.py [threads]
"""
import sys
import time

import numpy as np

import pyqinfer
from pyqinfer import _core, ops
from pyqinfer.bench.shift import make_terms
from pyqinfer.reference.shift_conv import shift_accumulate_int64

SHAPES = [(32, 1024, 1024), (48, 1024, 1024), (96, 1024, 1024), (256, 1024, 1024),
          (49, 4608, 512), (52, 1024, 1024), (56, 1024, 1024),
          (196, 2304, 256), (784, 1152, 128), (3136, 576, 64)]


def cpu_time(fn, seconds=0.15):
    fn()
    c, n = time.process_time(), 0
    while time.process_time() - c < seconds:
        fn()
        n += 1
    return (time.process_time() - c) / n


def main(argv):
    threads = int(argv[1]) if len(argv) > 1 else 1
    pyqinfer.set_num_threads(threads)
    rng = np.random.default_rng(0)
    print(f"threads={threads}, pot4, uint8 zp 128; ratios of speed (time of the other / time of the first)")
    for M, K, N in SHAPES:
        a = rng.integers(0, 256, (M, K), dtype=np.uint8)
        s, e = make_terms("pot4", K, N, rng)
        w = ops.pack_shift_weights(s, e)
        want = shift_accumulate_int64(a, s, e, a_zero_point=128)

        def shift(v):
            def run():
                _core.set_shift_rows_variant(v)
                try:
                    return ops.shift_matmul(a, w, a_zero_point=128, kernel="shift")
                finally:
                    _core.set_shift_rows_variant(0)
            return run
        fns = {"shift": shift(0), "chunk16": shift(3),
               "mul": lambda: ops.shift_matmul(a, w, a_zero_point=128, kernel="multiply")}
        for name in ("shift", "chunk16"):
            assert np.array_equal(fns[name](), want), name
        best = {}
        for _ in range(5):
            for name, fn in fns.items():
                best[name] = min(best.get(name, 1e9), cpu_time(fn))
        print(f"  {M}x{K}x{N}: shift x multiply {best['mul'] / best['shift']:.3f}, "
              f"chunk16 x multiply {best['mul'] / best['chunk16']:.3f}, shift x chunk16 {best['chunk16'] / best['shift']:.2f} "
              f"({ops.shift_kernel_name(a, w, a_zero_point=128, kernel='shift')})")


if __name__ == "__main__":
    main(sys.argv)
