"""A/B of the hybrid kernel (kernel="hybrid": VNNI tiles + shift-add units in one loop)
against the multiply route on the same codes (the int8 VNNI GEMM on the decoded
weights), pyqinfer's int8 GEMM / convolution on uniform int8 weights, and the shift
kernel, by thread CPU time (the machine is shared: CPU time leaves out the time
other processes hold the cores); medians of rounds that alternate the engines.

    PYTHONPATH=. python benchmarks/micro/shift_hybrid_ab.py [threads] [rounds] [case,...]

Cases: gemm1024 (1024^3), gemm256 (256x1024x1024), conv28 (ResNet-18 3x3, 28x28x128 ->
128, batch 1, NHWC), each with pot4 and apot4 codes (pyqinfer.bench.shift). Every output
is checked bit for bit first (shift, multiply, hybrid against the int64 oracle; int8
against the exact sum). Extra A/B rows: PYQ_HYBRID_AB="period:ns,..." forces the hybrid's
knobs (_core.set_shift_hybrid).
"""
import os
import sys
import time

import numpy as np

import pyqinfer
from pyqinfer import _core, ops
from pyqinfer.bench.shift import Case

CASES = {"gemm1024": "gemm 1024x1024x1024", "gemm256": "gemm 256x1024x1024", "conv28": "conv3x3 28x28x128"}


def main(argv):
    threads = int(argv[1]) if len(argv) > 1 else 1
    rounds = int(argv[2]) if len(argv) > 2 else 7
    names = argv[3].split(",") if len(argv) > 3 else list(CASES)
    extra = [tuple(int(v) for v in c.split(":")) for c in os.environ.get("PYQ_HYBRID_AB", "").split(",") if c]
    pyqinfer.set_num_threads(threads)
    for name in names:
        for scheme in ("pot4", "apot4"):
            case = Case(CASES[name], scheme)
            fns = case.engines()
            for period, ns in extra:
                def forced(f=fns["hybrid"], period=period, ns=ns):
                    _core.set_shift_hybrid(period, ns)
                    try:
                        return f()
                    finally:
                        _core.set_shift_hybrid(0, 0)
                fns[f"hybrid p{period} ns{ns}"] = forced
            outs = {k: f() for k, f in fns.items()}
            ex = case.exact({k: v for k, v in outs.items() if not k.startswith("hybrid ")})
            want = outs["multiply"]
            for k, v in outs.items():
                if k.startswith("hybrid "):
                    ex[k] = bool(np.array_equal(v, want)) and ex["multiply"]
            assert all(ex.values()), ex
            cpu = {k: [] for k in fns}
            for _ in range(rounds):
                for k, f in fns.items():
                    c, n, t = time.process_time(), 0, time.perf_counter()
                    while time.perf_counter() - t < 0.2:
                        f()
                        n += 1
                    cpu[k].append((time.process_time() - c) / n / threads)
            med = {k: float(np.median(v)) for k, v in cpu.items()}
            hname = ops.shift_kernel_name(case.a, case.w, a_zero_point=case.za, kernel="hybrid") \
                if case.kind == "gemm" else "(im2col) hybrid"
            print(f"{CASES[name]} {scheme} threads={threads} load={os.getloadavg()[0]:.1f} hybrid={hname}")
            for k in fns:
                g = 2.0 * case.macs / med[k] / 1e9
                print(f"  {k:18s} {g:7.1f} GOP/s  x int8 {med['int8'] / med[k]:5.3f}  x multiply "
                      f"{med['multiply'] / med[k]:5.3f}  bit_exact={ex[k]}", flush=True)


if __name__ == "__main__":
    main(sys.argv)
