"""A/B of the shift kernel's variants against the multiply kernel on the same codes, by
thread CPU time as well as wall time (on a loaded machine the CPU time is the steadier
figure: it leaves out the time other processes hold the cores).

    PYTHONPATH=. python benchmarks/micro/shift_ab_cputime.py 1024 1 pot4 [repeats]

Arguments: M=K=N, threads, scheme (pot4, apot4 of pyqinfer.bench.shift, or poteE: pot4
with exponents folded to 0..E), repeats (best of). Variants (_core.set_shift_rows_variant):
4 column kernels, 1 exponent buckets, 2 chunks of 8, 3 chunks of 16, 5 packed fields (the
default from 32 rows); every output is
checked against the int64 oracle first.
"""
import os
import sys
import time

import numpy as np

import pyqinfer
from pyqinfer import _core, ops
from pyqinfer.bench.shift import make_terms
from pyqinfer.reference.shift_conv import shift_accumulate_int64


def main(argv):
    size = int(argv[1]) if len(argv) > 1 else 1024
    threads = int(argv[2]) if len(argv) > 2 else 1
    scheme = argv[3] if len(argv) > 3 else "pot4"
    reps = int(argv[4]) if len(argv) > 4 else 5
    M = K = N = size
    pyqinfer.set_num_threads(threads)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (M, K), dtype=np.uint8)
    if scheme.startswith("pote"):
        s, e = make_terms("pot4", K, N, rng)
        e = (e % (int(scheme[4:]) + 1)).astype(np.int8)
    else:
        s, e = make_terms(scheme, K, N, rng)
    w = ops.pack_shift_weights(s, e)
    want = shift_accumulate_int64(a, s, e, a_zero_point=128)

    def engine(v):
        def run():
            if v == "mul":
                return ops.shift_matmul(a, w, a_zero_point=128, kernel="multiply")
            _core.set_shift_rows_variant(v)
            return ops.shift_matmul(a, w, a_zero_point=128, kernel="shift")
        return run

    fns = {v: engine(v) for v in (4, 1, 2, 3, 5, "mul")}
    names = {}
    try:
        for v, f in fns.items():
            assert np.array_equal(f(), want), v
            names[v] = ops.shift_kernel_name(a, w, a_zero_point=128, kernel="multiply" if v == "mul" else "shift")
        wall = {v: 1e9 for v in fns}
        cpu = {v: 1e9 for v in fns}
        for _ in range(reps):
            for v, f in fns.items():
                time.sleep(0.05)
                f()
                t, c, n = time.perf_counter(), time.process_time(), 0
                while time.perf_counter() - t < 0.2:
                    f()
                    n += 1
                wall[v] = min(wall[v], (time.perf_counter() - t) / n)
                cpu[v] = min(cpu[v], (time.process_time() - c) / n / threads)
    finally:
        _core.set_shift_rows_variant(0)
    ops_ = 2.0 * M * K * N
    print(f"M=K=N={size} threads={threads} scheme={scheme} load={os.getloadavg()[0]:.1f}  (GOP/s, x multiply)")
    for v in fns:
        gw, gc = ops_ / wall[v] / 1e9, ops_ / cpu[v] / 1e9
        print(f"  {names[v]:42s} wall {gw:6.1f} {gw * wall['mul'] / ops_ * 1e9:5.3f}x"
              f"   cpu-time {gc:6.1f} {gc * cpu['mul'] / ops_ * 1e9:5.3f}x")


if __name__ == "__main__":
    main(sys.argv)
