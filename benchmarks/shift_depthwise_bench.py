"""Depthwise ShiftConv: the depthwise shift kernel (csrc/shift/dwshift*) vs the per-group
shift-GEMM path it replaces vs pyqinfer's int8 depthwise ``qlinear_conv``, in one process
(not a pytest-benchmark suite; run by hand):

    PYTHONPATH=. python benchmarks/shift_depthwise_bench.py [--threads 1,2] [--channels 32,64,128,256]
        [--sizes 56,28,14] [--schemes pot3,pot4,pot5] [--json out.json]

Layers: batch 1, C channels, HxH input, 3x3 depthwise (group = C), pads 1, stride 1,
uint8 NHWC activations with zero point 128 (the graph runner's native layout), bias,
fp32 requantization to uint8 (per-channel weight scale) for all three engines:

* ``new``: ``ops.shift_conv`` on weights packed with ``group=C`` (the depthwise shift
  kernel, int32 accumulators, then the requantization), what the graph runner plans now;
* ``old``: the graph runner's previous step, verbatim: one im2col of the whole input, then
  per group a numpy slice of its columns and one C++ shift GEMM (``customops.ShiftLayer``),
  then the requantization (``customops._finish``);
* ``int8``: ``ops.qlinear_conv`` with uniform int8 weights of the same shape (the int8
  depthwise kernel; row-quad VNNI kernel on AVX-512 VNNI).

Weights: one signed PoT term per tap (10 % zero), exponent 0..3 (``pot3``: the whole
bound fits int16 lanes), 0..6 (``pot4``, 4-bit PoT: 9 * 128 * 2^6 > 2^15, int16 blocks
of 3 taps widened into int32) or 0..14 (``pot5``, 5-bit PoT: int32 lanes). The three engines
of a row are timed interleaved (pyqinfer.bench.timing.time_interleaved, medians); ``new``
and ``old`` outputs are checked equal. Ratios are time ratios (< 1: ``new`` is faster).
"""
import argparse
import json
import os

import numpy as np

import pyqinfer
import pyqinfer.ops as ops
from pyqinfer import _core
from pyqinfer.bench.timing import time_interleaved
from pyqinfer.graph import customops

SCHEMES = {"pot3": 3, "pot4": 6, "pot5": 14}


def old_per_group(s, e, bias, za, C, rq):
    """The graph step before the depthwise kernel (customops.build_shift_conv, group > 1)."""
    T, OC, Cg, KH, KW = s.shape
    to_kn = lambda v: np.ascontiguousarray(v.transpose(0, 3, 4, 2, 1).reshape(T, KH * KW * Cg, -1))  # noqa: E731
    layers = [customops.ShiftLayer(to_kn(s[:, gi:gi + 1]), to_kn(e[:, gi:gi + 1]), "exact", np.uint8, za,
                                   bias[gi:gi + 1], 32) for gi in range(C)]
    for layer in layers:
        layer.packed()

    def f(x):
        cols, (nb, OH, OW) = customops.im2col_nhwc(x, za, KH, KW, (1, 1, 1, 1), (1, 1), (1, 1))
        cols = cols.reshape(cols.shape[0], KH * KW, C)
        acc = np.empty((cols.shape[0], OC), np.int32)
        for gi, layer in enumerate(layers):
            cg = np.ascontiguousarray(cols[:, :, gi:gi + 1]).reshape(cols.shape[0], KH * KW)
            acc[:, gi:gi + 1] = layer.accumulate(cg)
        return customops._finish(acc, rq).reshape(nb, OH, OW, OC)
    return f


def row(C, H, scheme, threads, target):
    rng = np.random.default_rng(C * 1000 + H)
    za, xs, ys = 128, np.float32(0.02), np.float32(0.05)
    x = rng.integers(0, 256, (1, H, H, C)).astype(np.uint8)
    s = rng.choice(np.array([-1, 0, 1], np.int8), (1, C, 1, 3, 3), p=[0.45, 0.1, 0.45])
    e = rng.integers(0, SCHEMES[scheme] + 1, s.shape).astype(np.int8)
    bias = rng.integers(-1000, 1000, C).astype(np.int32)
    ws = rng.uniform(0.001, 0.002, C).astype(np.float32)
    w = ops.pack_shift_conv_weights(s, e, group=C)
    geo = dict(pads=(1, 1, 1, 1), layout="NHWC")

    def new():
        return ops.shift_conv(x, w, x_zero_point=za, bias=bias, x_scale=xs, w_scale=ws, y_scale=ys,
                              y_zero_point=np.uint8(0), kernel="shift", **geo)
    rq = (_core.derive_requant("fp32", float(xs), ws, float(ys), C), "uint8", 0, 0, 255)
    old_f = old_per_group(s, e, bias, za, C, rq)
    w8 = ops.pack_conv_weights(rng.integers(-128, 128, (C, 1, 3, 3)).astype(np.int8), np.int8(0), group=C)

    def int8():
        return ops.qlinear_conv(x, xs, np.uint8(za), w8, ws, np.int8(0), ys, np.uint8(0), bias, group=C,
                                kernel_shape=[3, 3], **geo)
    pyqinfer.set_num_threads(threads)
    try:
        got, want = new(), old_f(x)
        assert np.array_equal(got, want), "new and old per-group outputs differ"
        xn = np.ascontiguousarray(x)
        lanes = _core.dwshift_kernel_name(xn, za, w.depthwise, 32, (1, 1, 1, 1), (1, 1), (1, 1))
        t = time_interleaved({"new": new, "old": lambda: old_f(x), "int8": int8}, target_seconds=target)
    finally:
        pyqinfer.set_num_threads(0)
    med = {k: v["median"] for k, v in t.items()}
    return dict(C=C, H=H, scheme=scheme, threads=threads, kernel=lanes, us={k: v * 1e6 for k, v in med.items()},
                new_over_old=med["new"] / med["old"], new_over_int8=med["new"] / med["int8"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--channels", default="32,64,128,256")
    ap.add_argument("--sizes", default="56,28,14")
    ap.add_argument("--schemes", default="pot3,pot4,pot5")
    ap.add_argument("--target", type=float, default=0.3, help="seconds of timed calls per engine and row")
    ap.add_argument("--json", help="write the records here")
    a = ap.parse_args()
    recs = []
    print(f"# {pyqinfer.get_kernel_path()} path, load average {os.getloadavg()[0]:.1f}")
    print(f"{'scheme':6} {'thr':>3} {'C':>4} {'HxW':>6} {'kernel':24} {'new us':>8} {'old us':>9} {'int8 us':>8} "
          f"{'new/old':>8} {'new/int8':>8}")
    for scheme in a.schemes.split(","):
        for threads in (int(v) for v in a.threads.split(",")):
            for C in (int(v) for v in a.channels.split(",")):
                for H in (int(v) for v in a.sizes.split(",")):
                    r = row(C, H, scheme, threads, a.target)
                    recs.append(r)
                    u = r["us"]
                    print(f"{scheme:6} {threads:3} {C:4} {H:>3}x{H:<2} {r['kernel']:24} {u['new']:8.0f} "
                          f"{u['old']:9.0f} {u['int8']:8.0f} {r['new_over_old']:8.3f} {r['new_over_int8']:8.2f}",
                          flush=True)
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(recs, f, indent=1)


if __name__ == "__main__":
    main()
