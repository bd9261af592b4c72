"""The convolution benchmark: pyqinfer against ONNX Runtime QLinearConv, in one process.

For each layer and thread count these engines are timed interleaved
(:mod:`pyqinfer.bench.timing`) on the same uint8 input, int8 weights packed once,
per-channel weight scales, int32 bias, uint8 output, fp32 requantization:

============  =================================================================
engine        what runs
============  =================================================================
pyq_nhwc      ``ops.qlinear_conv(..., layout="NHWC")`` (x [N,H,W,C] in, NHWC out)
pyq_nchw      ``ops.qlinear_conv(...)`` NCHW (transposes x and y every call)
ort           ONNX Runtime QLinearConv (NCHW), weights/scales/bias initializers
============  =================================================================

GOP/s = 2 * N*OH*OW * OC * KH*KW*C/group / median seconds. ``exact`` says whether
pyqinfer's output equals ORT's bit for bit. ``nchw%`` is the extra time of the
NCHW call over the NHWC one (the two layout transposes).
"""
from __future__ import annotations

import numpy as np

from .. import get_num_threads, ops, set_num_threads
from . import ort as _ort
from .gemm import _ForeignCpu, _loadavg, wait_for_idle
from .peak import available_cores
from .timing import time_interleaved

# name: (kind, C, OC, H, W, k, stride, group)
LAYERS = {
    "r18_3x3_64x56": ("resnet3x3", 64, 64, 56, 56, 3, 1, 1),
    "r18_3x3_128x28": ("resnet3x3", 128, 128, 28, 28, 3, 1, 1),
    "r18_3x3_256x14": ("resnet3x3", 256, 256, 14, 14, 3, 1, 1),
    "r18_3x3_512x7": ("resnet3x3", 512, 512, 7, 7, 3, 1, 1),
    "r18_3x3_64to128_s2": ("strided", 64, 128, 56, 56, 3, 2, 1),
    "mb2_dw_144x56": ("depthwise", 144, 144, 56, 56, 3, 1, 144),
    "mb2_dw_384x14": ("depthwise", 384, 384, 14, 14, 3, 1, 384),
    "mb2_pw_24to144x56": ("pointwise", 24, 144, 56, 56, 1, 1, 1),
    "mb2_pw_144to24x56": ("pointwise", 144, 24, 56, 56, 1, 1, 1),
    "mb2_pw_64to384x14": ("pointwise", 64, 384, 14, 14, 1, 1, 1),
    "mb2_pw_160to960x7": ("pointwise", 160, 960, 7, 7, 1, 1, 1),
}
QUICK_LAYERS = ["r18_3x3_64x56", "r18_3x3_512x7", "mb2_dw_144x56", "mb2_pw_24to144x56"]
ENGINES = ("pyq_nhwc", "pyq_nchw", "ort")
ZX, X_SCALE = 128, 0.02


class ConvCase:
    """Inputs, packed weights and engine callables of one layer (batch 1)."""

    def __init__(self, name, seed=0):
        kind, C, OC, H, W, k, s, g = LAYERS[name]
        self.name, self.kind, self.group = name, kind, g
        rng = np.random.default_rng([C, OC, H, k, s, g, seed])
        self.x = rng.integers(0, 256, (1, C, H, W), dtype=np.uint8)
        self.x_nhwc = np.ascontiguousarray(self.x.transpose(0, 2, 3, 1))
        self.w = rng.integers(-128, 128, (OC, C // g, k, k), dtype=np.int8)
        self.w_scale = rng.uniform(0.005, 0.01, OC).astype(np.float32)
        self.bias = rng.integers(-5000, 5000, OC).astype(np.int32)
        self.zw = np.zeros(OC, np.int8)  # ORT requires equal per-channel zero points
        self.packed = ops.pack_conv_weights(self.w, self.zw, g)
        p = k // 2
        self.attrs = dict(kernel_shape=[k, k], pads=[p] * 4, strides=[s, s], dilations=[1, 1], group=g)
        self.OH, self.OW = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
        self.OC = OC
        K = k * k * C // g
        self.ops = 2.0 * self.OH * self.OW * OC * K
        # |acc| has std ~ 74 * 64 * sqrt(K); aim the output at ~40 levels of std
        self.y_scale = np.float32(X_SCALE * 0.0075 * 74.0 * 64.0 * np.sqrt(K) / 40.0)
        self.zy = np.uint8(100)

    def _pyq(self, layout):
        x = self.x if layout == "NCHW" else self.x_nhwc
        a = self.attrs
        return lambda: ops.qlinear_conv(x, X_SCALE, np.uint8(ZX), self.packed, self.w_scale, self.zw,
                                        self.y_scale, self.zy, self.bias, pads=a["pads"], strides=a["strides"],
                                        group=self.group, layout=layout)

    def engines(self, threads, with_ort=True):
        fns = {"pyq_nhwc": self._pyq("NHWC"), "pyq_nchw": self._pyq("NCHW")}
        if with_ort:
            fns["ort"] = _ort.qlinear_conv(self.x, X_SCALE, np.uint8(ZX), self.w, self.w_scale, self.zw,
                                           self.y_scale, self.zy, self.bias, self.attrs,
                                           (1, self.OC, self.OH, self.OW), threads)
        return fns


def bench_layer(case, threads, *, min_runs=5, target_seconds=0.3, with_ort=True):
    """One record: every engine on ``case`` with ``threads`` threads."""
    fns = case.engines(threads, with_ort=with_ort)
    old = get_num_threads()
    set_num_threads(threads)
    try:
        with _ForeignCpu() as foreign:
            outs = {n: f() for n, f in fns.items()}  # correctness, and a warm-up
            times = time_interleaved(fns, min_runs=min_runs, target_seconds=target_seconds)
    finally:
        set_num_threads(old)
    gops = {n: case.ops / t["median"] / 1e9 for n, t in times.items()}
    rec = {
        "layer": case.name, "kind": case.kind, "threads": threads,
        "shape": {"C": int(case.x.shape[1]), "OC": case.OC, "H": int(case.x.shape[2]),
                  "W": int(case.x.shape[3]), "attrs": case.attrs},
        "gops": gops,
        "seconds": {n: t["median"] for n, t in times.items()},
        "runs": {n: t["runs"] for n, t in times.items()},
        "nchw_overhead": times["pyq_nchw"]["median"] / times["pyq_nhwc"]["median"] - 1.0,
        "exact_nhwc_nchw": bool(np.array_equal(outs["pyq_nhwc"].transpose(0, 3, 1, 2), outs["pyq_nchw"])),
        "loadavg_1min": _loadavg(),
        "other_cpu_fraction": foreign.fraction,
    }
    if with_ort:
        rec["exact_vs_ort"] = bool(np.array_equal(outs["pyq_nchw"], outs["ort"]))
        rec["ratio"] = {"nhwc_vs_ort": gops["pyq_nhwc"] / gops["ort"], "nchw_vs_ort": gops["pyq_nchw"] / gops["ort"]}
    return rec


def run_conv_bench(layers=None, threads=None, *, min_runs=5, target_seconds=0.3, with_ort=None,
                   progress=None, max_other=None, attempts=3):
    """Run the benchmark; a list of records, one per (threads, layer). See :func:`pyqinfer.bench.gemm.run_gemm_bench`
    for ``max_other`` / ``attempts``."""
    layers = list(layers or LAYERS)
    threads = threads or sorted({1, available_cores()})
    if with_ort is None:
        with_ort = _ort.available()
    cases = {}
    records = []
    for th in threads:
        for name in layers:
            case = cases.get(name) or cases.setdefault(name, ConvCase(name))
            tries = []
            for _ in range(max(1, attempts) if max_other is not None else 1):
                if max_other is not None:
                    wait_for_idle(max_other)
                tries.append(bench_layer(case, th, min_runs=min_runs, target_seconds=target_seconds,
                                         with_ort=with_ort))
                other = tries[-1]["other_cpu_fraction"]
                if max_other is None or other is None or other <= max_other:
                    break
            rec = min(tries, key=lambda r: r["other_cpu_fraction"] or 0.0)
            rec["attempts"] = len(tries)
            records.append(rec)
            if progress:
                progress(rec)
    return records


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def format_table(records, markdown=False):
    head = ["layer", "thr", "pyq NHWC", "pyq NCHW", "ORT", "NHWC/ORT", "NCHW/ORT", "nchw%", "exact", "other%"]
    rows = []
    for r in records:
        g, ratio = r["gops"], r.get("ratio", {})
        ex = r.get("exact_vs_ort")
        rows.append([r["layer"], str(r["threads"]), _fmt(g.get("pyq_nhwc"), ".1f"), _fmt(g.get("pyq_nchw"), ".1f"),
                     _fmt(g.get("ort"), ".1f"), _fmt(ratio.get("nhwc_vs_ort"), ".2f"),
                     _fmt(ratio.get("nchw_vs_ort"), ".2f"), _fmt(100 * r["nchw_overhead"], ".0f"),
                     "-" if ex is None else ("yes" if ex and r["exact_nhwc_nchw"] else "NO"),
                     _fmt(None if r.get("other_cpu_fraction") is None else 100 * r["other_cpu_fraction"], ".0f")])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * (len(head) - 3) + [":-:", "--:"]) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt_row = lambda row: "  ".join(c.rjust(w) for c, w in zip(row, widths))  # noqa: E731
    return "\n".join([fmt_row(head), fmt_row(["-" * w for w in widths])] + [fmt_row(r) for r in rows])


LEGEND = """\
GOP/s = 2*OH*OW*OC*KH*KW*C/group / median time (batch 1). pyqinfer ops.qlinear_conv, uint8 x, int8 weights
packed once, per-channel weight scales, int32 bias, uint8 output, mode=fp32; NHWC: x and y in NHWC;
NCHW: x and y in NCHW (two numpy transposes per call). ORT: onnxruntime QLinearConv (NCHW), weights,
scales and bias constant initializers. NHWC/ORT, NCHW/ORT: GOP/s ratios. nchw%: extra time of the NCHW
call over the NHWC call. exact: pyqinfer NCHW == ORT bit for bit (and NHWC == NCHW).
other%: CPU other processes used during the row, % of all cores (noise; want ~0)."""
