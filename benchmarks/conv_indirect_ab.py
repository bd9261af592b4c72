"""A/B of the dense-convolution input paths against ONNX Runtime, in one process
(not a pytest-benchmark suite; run by hand):

    PYTHONPATH=. python benchmarks/conv_indirect_ab.py [--threads 1,2] [--layers a,b]

For each 3x3 layer of `pyqinfer bench conv` (ResNet-18 and the graph runner's small
16/32-channel layers; batch 1, NHWC, uint8, per-channel weights, fp32 mode) it times,
interleaved with medians (pyqinfer.bench.timing): `indirect` (the default: the VNNI
microkernel reads each kernel row of a pixel in place through row pointers),
`gathered` (the same call with `_core.set_conv_indirect_enabled(False)`: blocks of
im2col rows copied first) and ORT's QLinearConv, after checking all three outputs
are bit-identical. The `_core.qconv` binding is called directly (no Python argument
handling), so the ratios are about the kernels.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pyqinfer import _core, set_num_threads  # noqa: E402
from pyqinfer.bench import conv as bc  # noqa: E402
from pyqinfer.bench.peak import available_cores  # noqa: E402
from pyqinfer.bench.timing import time_interleaved  # noqa: E402

DEFAULT = ["small_3x3_16x32", "small_3x3_32x16", "r18_3x3_64x56", "r18_3x3_128x28", "r18_3x3_256x14",
           "r18_3x3_512x7", "r18_3x3_64to128_s2"]
PEAK_PER_CORE = 470.0  # GOP/s, docs/performance.md "Measured peak"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--layers", default=",".join(DEFAULT))
    ap.add_argument("--target-seconds", type=float, default=0.3)
    args = ap.parse_args()
    # ratios are speed ratios (GOP/s over GOP/s = the other's time over this one's): > 1 is faster
    print("| layer | thr | indirect us | gathered us | ORT us | indirect GOP/s | %pk | indirect/gathered "
          "| indirect/ORT | gathered/ORT | exact |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|")
    for thr in (int(t) for t in args.threads.split(",")):
        set_num_threads(thr)
        for name in args.layers.split(","):
            c = bc.ConvCase(name)
            a = c.attrs
            rq = _core.derive_requant("fp32", bc.X_SCALE, c.w_scale, float(c.y_scale), c.OC)

            def pyq(on, c=c, a=a, rq=rq):
                def f():
                    _core.set_conv_indirect_enabled(on)
                    return _core.qconv(c.x_nhwc, bc.ZX, c.packed._core, a["strides"], a["pads"], (1, 1), c.bias,
                                       "uint8", rq, int(c.zy), 0, 255)
                return f
            fns = {"indirect": pyq(True), "gathered": pyq(False), "ort": c.engines(thr, True)["ort"]}
            outs = {k: f() for k, f in fns.items()}
            ref = outs["ort"]
            exact = all(np.array_equal(np.ascontiguousarray(v.transpose(0, 3, 1, 2)), ref)
                        for k, v in outs.items() if k != "ort")
            t = time_interleaved(fns, target_seconds=args.target_seconds)
            _core.set_conv_indirect_enabled(True)
            i, g, o = (t[k]["median"] for k in ("indirect", "gathered", "ort"))
            gops = c.ops / i / 1e9
            pk = gops / (PEAK_PER_CORE * min(thr, available_cores())) * 100
            print(f"| {name} | {thr} | {i * 1e6:.1f} | {g * 1e6:.1f} | {o * 1e6:.1f} | {gops:.0f} | {pk:.0f} | "
                  f"{g / i:.2f} | {o / i:.2f} | {o / g:.2f} | {'yes' if exact else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
