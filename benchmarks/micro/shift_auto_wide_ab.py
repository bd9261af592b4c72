"""A/B behind kernel="auto"'s rule for weights whose values do not fit int8 (PoT
exponents 0..E, docs/performance.md "Auto route for values past int8"): the shift
kernel vs the multiply kernel (int32 lanes, or int64 when the bound passes int32) on
the same weights, by thread CPU time (best of 5), uint8 and int16 activations.

    PYTHONPATH=. python benchmarks/micro/shift_auto_wide_ab.py [threads]
"""
import os, sys, time
import numpy as np
import pyqinfer
from pyqinfer import ops
threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
pyqinfer.set_num_threads(threads)
rng = np.random.default_rng(0)
def bench(f, reps=5):
    f(); best = 1e9
    for _ in range(reps):
        c, n, t = time.process_time(), 0, time.perf_counter()
        while time.perf_counter() - t < 0.15:
            f(); n += 1
        best = min(best, (time.process_time() - c) / n / threads)
    return best
for (E, K, N) in [(10, 1024, 1024), (16, 1024, 1024), (20, 512, 512)]:
    for dt in ("uint8", "int16"):
        for M in (1, 8, 16, 32, 64, 256):
            s = rng.choice(np.array([-1, 0, 1], np.int8), (1, K, N))
            e = rng.integers(0, E + 1, (1, K, N)).astype(np.int8)
            w = ops.pack_shift_weights(s, e)
            if dt == "uint8":
                a = rng.integers(0, 256, (M, K), dtype=np.uint8); za = 128
            else:
                a = rng.integers(-300, 300, (M, K)).astype(np.int16); za = None
            r = {}
            outs = {}
            for k in ("shift", "multiply"):
                outs[k] = ops.shift_matmul(a, w, a_zero_point=za, kernel=k)
                r[k] = bench(lambda: ops.shift_matmul(a, w, a_zero_point=za, kernel=k))
            assert np.array_equal(outs["shift"], outs["multiply"])
            names = {k: ops.shift_kernel_name(a, w, a_zero_point=za, kernel=k) for k in r}
            g = {k: 2 * M * K * N / v / 1e9 for k, v in r.items()}
            print(f"E={E} K=N={K} {dt} M={M:4d}: shift {g['shift']:7.1f} ({names['shift'][:30]}) mul {g['multiply']:7.1f} ({names['multiply']})  shift/mul {g['shift']/g['multiply']:.2f}", flush=True)
# 16-bit activations with an int32 bound (the int32 multiply kernel's other use)
for (E, K, N, amax) in [(7, 128, 1024, 32767), (7, 256, 1024, 2000)]:
    for M in (1, 8, 16, 64, 256):
        s = rng.choice(np.array([-1, 0, 1], np.int8), (1, K, N))
        e = rng.integers(0, E + 1, (1, K, N)).astype(np.int8)
        w = ops.pack_shift_weights(s, e)
        a = rng.integers(-amax, amax, (M, K)).astype(np.int16)
        outs = {k: ops.shift_matmul(a, w, kernel=k) for k in ("shift", "multiply")}
        assert np.array_equal(outs["shift"], outs["multiply"])
        r = {k: bench(lambda: ops.shift_matmul(a, w, kernel=k)) for k in ("shift", "multiply")}
        names = {k: ops.shift_kernel_name(a, w, kernel=k) for k in r}
        g = {k: 2 * M * K * N / v / 1e9 for k, v in r.items()}
        print(f"E={E} K={K} N={N} int16 |a|<{amax} M={M:4d}: shift {g['shift']:7.1f} ({names['shift'][:30]}) "
              f"mul {g['multiply']:7.1f} ({names['multiply']})  shift/mul {g['shift']/g['multiply']:.2f}", flush=True)
print("load", os.getloadavg())
