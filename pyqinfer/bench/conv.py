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
torch         optional, when ``import torch`` works: PyTorch's x86 quantized
              conv (``torch.ops.quantized.conv2d``, qengine "x86", weights
              prepacked once, x a quint8 tensor in channels_last memory, i.e.
              NHWC bytes, output channels_last); float bias ``b * s_x * s_w``
============  =================================================================

GOP/s = 2 * N*OH*OW * OC * KH*KW*C/group / median seconds. ``exact`` says whether
pyqinfer's output equals ORT's bit for bit. ``nchw%`` is the extra time of the
NCHW call over the NHWC one (the two layout transposes). PyTorch rounds
differently (a float bias, its own requantization), so for it the record holds
the fraction of output bytes equal to pyqinfer's (``torch_match``), not
``exact``. torch is never required: without it the column is "-".
"""
from __future__ import annotations

import numpy as np

from .. import get_num_threads, ops, set_num_threads
from . import ort as _ort
from .gemm import _ForeignCpu, _loadavg, run_rows
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
    # the 3x3 layers of benchmarks/graph_runner.py's small ResNet (issue 5)
    "small_3x3_16x32": ("small3x3", 16, 16, 32, 32, 3, 1, 1),
    "small_3x3_32x16": ("small3x3", 32, 32, 16, 16, 3, 1, 1),
}
QUICK_LAYERS = ["r18_3x3_64x56", "r18_3x3_512x7", "mb2_dw_144x56", "mb2_pw_24to144x56"]
ENGINES = ("pyq_nhwc", "pyq_nchw", "ort", "torch")


def torch_available():
    """True if PyTorch imports and has the x86 (or fbgemm) quantized engine."""
    try:
        import torch
    except ImportError:
        return False
    return bool({"x86", "fbgemm"} & set(torch.backends.quantized.supported_engines))


def _torch_conv(case, threads):
    """A callable running PyTorch's quantized conv2d on ``case`` with ``threads`` threads;
    returns uint8 NCHW (a channels_last view)."""
    import warnings

    import torch

    engines = torch.backends.quantized.supported_engines
    torch.backends.quantized.engine = "x86" if "x86" in engines else "fbgemm"
    a = case.attrs
    with warnings.catch_warnings():  # quantized tensor constructors are deprecated (still there in 2.13)
        warnings.simplefilter("ignore")
        xq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(case.x), X_SCALE, ZX).contiguous(
            memory_format=torch.channels_last)
        wq = torch._make_per_channel_quantized_tensor(torch.from_numpy(case.w),
                                                      torch.from_numpy(case.w_scale.astype(np.float64)),
                                                      torch.zeros(case.OC, dtype=torch.long), 0)
    bias = torch.from_numpy((case.bias * (X_SCALE * case.w_scale.astype(np.float64))).astype(np.float32))
    packed = torch.ops.quantized.conv2d_prepack(wq, bias, a["strides"], a["pads"][:2], a["dilations"], a["group"])
    conv = torch.ops.quantized.conv2d
    ys, zy = float(case.y_scale), int(case.zy)
    torch.set_num_threads(threads)  # process-wide; only this engine uses torch

    return lambda: conv(xq, packed, ys, zy).int_repr().numpy()
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

    def engines(self, threads, with_ort=True, with_torch=False):
        fns = {"pyq_nhwc": self._pyq("NHWC"), "pyq_nchw": self._pyq("NCHW")}
        if with_ort:
            fns["ort"] = _ort.qlinear_conv(self.x, X_SCALE, np.uint8(ZX), self.w, self.w_scale, self.zw,
                                           self.y_scale, self.zy, self.bias, self.attrs,
                                           (1, self.OC, self.OH, self.OW), threads)
        if with_torch:
            fns["torch"] = _torch_conv(self, threads)
        return fns


def run_engines(fns, threads, *, min_runs=5, target_seconds=0.3):
    """Each engine once (the outputs, and a warm-up), then timed interleaved, with pyqinfer
    set to ``threads`` threads; returns (outputs, times, the other-CPU meter)."""
    old = get_num_threads()
    set_num_threads(threads)
    try:
        with _ForeignCpu() as foreign:
            outs = {n: f() for n, f in fns.items()}
            times = time_interleaved(fns, min_runs=min_runs, target_seconds=target_seconds)
    finally:
        set_num_threads(old)
    return outs, times, foreign


def bench_layer(case, threads, *, min_runs=5, target_seconds=0.3, with_ort=True, with_torch=False):
    """One record: every engine on ``case`` with ``threads`` threads."""
    fns = case.engines(threads, with_ort=with_ort, with_torch=with_torch)
    outs, times, foreign = run_engines(fns, threads, min_runs=min_runs, target_seconds=target_seconds)
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
    rec["ratio"] = {}
    if with_ort:
        rec["exact_vs_ort"] = bool(np.array_equal(outs["pyq_nchw"], outs["ort"]))
        rec["ratio"] = {"nhwc_vs_ort": gops["pyq_nhwc"] / gops["ort"], "nchw_vs_ort": gops["pyq_nchw"] / gops["ort"]}
    if with_torch:
        import torch

        rec["torch_version"] = torch.__version__
        rec["torch_engine"] = torch.backends.quantized.engine
        rec["torch_match"] = float(np.mean(outs["torch"] == outs["pyq_nchw"]))
        rec["ratio"]["nhwc_vs_torch"] = gops["pyq_nhwc"] / gops["torch"]
    return rec


def run_conv_bench(layers=None, threads=None, *, min_runs=5, target_seconds=0.3, with_ort=None,
                   progress=None, max_other=None, attempts=3, with_torch=None):
    """Run the benchmark; a list of records, one per (threads, layer). See :func:`pyqinfer.bench.gemm.run_gemm_bench`
    for ``max_other`` / ``attempts``. ``with_torch`` (default: whether torch imports; the
    environment variable PYQINFER_BENCH_TORCH=0 turns it off) adds PyTorch's quantized conv."""
    import os

    layers = list(layers or LAYERS)
    threads = threads or sorted({1, available_cores()})
    if with_ort is None:
        with_ort = _ort.available()
    if with_torch is None:
        with_torch = os.environ.get("PYQINFER_BENCH_TORCH", "1") != "0" and torch_available()
    return run_rows(layers, threads, ConvCase,
                    lambda case, th: bench_layer(case, th, min_runs=min_runs, target_seconds=target_seconds,
                                                 with_ort=with_ort, with_torch=with_torch),
                    max_other=max_other, attempts=attempts, progress=progress)


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def format_table(records, markdown=False):
    torch_cols = any("torch" in r["gops"] for r in records)
    head = ["layer", "thr", "pyq NHWC", "pyq NCHW", "ORT", "NHWC/ORT", "NCHW/ORT", "nchw%"]
    head += ["torch", "NHWC/torch", "torch=%"] if torch_cols else []
    head += ["exact", "other%"]
    rows = []
    for r in records:
        g, ratio = r["gops"], r.get("ratio", {})
        ex = r.get("exact_vs_ort")
        row = [r["layer"], str(r["threads"]), _fmt(g.get("pyq_nhwc"), ".1f"), _fmt(g.get("pyq_nchw"), ".1f"),
               _fmt(g.get("ort"), ".1f"), _fmt(ratio.get("nhwc_vs_ort"), ".2f"),
               _fmt(ratio.get("nchw_vs_ort"), ".2f"), _fmt(100 * r["nchw_overhead"], ".0f")]
        if torch_cols:
            tm = r.get("torch_match")
            row += [_fmt(g.get("torch"), ".1f"), _fmt(ratio.get("nhwc_vs_torch"), ".2f"),
                    _fmt(None if tm is None else 100 * tm, ".1f")]
        row += ["-" if ex is None else ("yes" if ex and r["exact_nhwc_nchw"] else "NO"),
                _fmt(None if r.get("other_cpu_fraction") is None else 100 * r["other_cpu_fraction"], ".0f")]
        rows.append(row)
    return render_table(head, rows, markdown)


def render_table(head, rows, markdown=False):
    """Rows of strings as a Markdown table (first column left, the last two centred and
    right, the rest right-aligned) or as right-aligned plain text."""
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
torch (only when PyTorch imports; PYQINFER_BENCH_TORCH=0 skips it): torch.ops.quantized.conv2d, qengine x86,
channels_last uint8 in and out; NHWC/torch: GOP/s ratio; torch=%: % of output bytes equal to pyqinfer's
(PyTorch uses a float bias and its own rounding, so it is not expected to be bit-exact).
other%: CPU other processes used during the row, % of all cores (noise; want ~0)."""
