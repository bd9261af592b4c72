"""The eltwise benchmark: pooling, quantized add and concat against ONNX Runtime, in one process.

ResNet-like shapes, batch 1, uint8 activations. For each case and thread count
the engines run interleaved (:mod:`pyqinfer.bench.timing`) on the same input:

==========  ====================================================================
engine      what runs
==========  ====================================================================
pyq_nhwc    the pyqinfer op on NHWC tensors (``layout="NHWC"``; concat on the
            last axis)
pyq_nchw    the pyqinfer op on the NCHW tensors ORT gets (pools transpose in
            and out; add and concat need no transpose)
ort         the ONNX Runtime op (NCHW; scales and zero points constant
            initializers): MaxPool, com.microsoft QLinearGlobalAveragePool,
            QLinearAveragePool, QLinearAdd, QLinearConcat
==========  ====================================================================

Every pyqinfer output is checked equal to ORT's bit for bit first (``exact``).
Ratios are ORT's median time over pyqinfer's (above 1: pyqinfer is faster).

Run it as ``python -m pyqinfer.bench.eltwise [--threads 1,2] [--markdown]``.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .. import ops
from . import ort as _ort
from .conv import render_table, run_engines
from .gemm import _loadavg, run_rows
from .peak import available_cores

# name: (op, NCHW shape, description)
CASES = {
    "maxpool_3x3s2_64x112": ("max_pool", (1, 64, 112, 112), "max pool 3x3 stride 2 pads 1 (ResNet stem)"),
    "avgpool_3x3s1_64x56": ("avg_pool", (1, 64, 56, 56), "average pool 3x3 stride 1 pads 1, count_include_pad 0"),
    "gap_512x7": ("global_avg_pool", (1, 512, 7, 7), "global average pool (ResNet-18 head)"),
    "add_64x56": ("add", (1, 64, 56, 56), "residual add, equal shapes, other scales"),
    "add_se_64x56": ("add_channel", (1, 64, 56, 56), "add of a [1, C, 1, 1] per-channel tensor"),
    "concat_2x64x56": ("concat", (1, 64, 56, 56), "concat of two tensors on channels, one requantized"),
}
ENGINES = ("pyq_nhwc", "pyq_nchw", "ort")
QP = {"x": (np.float32(0.05), np.uint8(120)), "b": (np.float32(0.07), np.uint8(131)),
      "y": (np.float32(0.09), np.uint8(125))}


def _ort_runner(op, domain, inputs, consts, attrs, out_shape, threads):
    """A callable running one ORT node. ``inputs``: (name, array) fed per call;
    ``consts``: (name, array) initializers; the node's input names in order are
    ``attrs.pop('_order')``."""
    from onnx import helper, numpy_helper

    order = attrs.pop("_order")
    elem = helper.np_dtype_to_tensor_dtype
    node = helper.make_node(op, order, ["y"], domain=domain, **attrs)
    graph = helper.make_graph(
        [node], op, [helper.make_tensor_value_info(n, elem(v.dtype), list(v.shape)) for n, v in inputs],
        [helper.make_tensor_value_info("y", elem(np.dtype(np.uint8)), list(out_shape))],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in consts])
    return _ort.graph_runner(graph, dict(inputs), threads, (domain,) if domain else ())


class EltwiseCase:
    """Inputs and engine callables of one case (batch 1)."""

    def __init__(self, name, seed=0):
        self.op, shape, self.description = CASES[name]
        self.name = name
        rng = np.random.default_rng([len(name), seed])
        self.x = rng.integers(0, 256, shape, dtype=np.uint8)
        self.x_nhwc = np.ascontiguousarray(self.x.transpose(0, 2, 3, 1))
        N, C, H, W = shape
        if self.op == "add":
            self.b = rng.integers(0, 256, shape, dtype=np.uint8)
        elif self.op == "add_channel":
            self.b = rng.integers(0, 256, (1, C, 1, 1), dtype=np.uint8)
        elif self.op == "concat":
            self.b = rng.integers(0, 256, shape, dtype=np.uint8)
        if hasattr(self, "b"):
            self.b_nhwc = np.ascontiguousarray(self.b.transpose(0, 2, 3, 1))
        self.elements = self.x.size

    def _pyq(self, layout):
        x = self.x_nhwc if layout == "NHWC" else self.x
        (sx, zx), (sb, zb), (sy, zy) = QP["x"], QP["b"], QP["y"]
        if self.op == "max_pool":
            return lambda: ops.max_pool(x, [3, 3], [2, 2], [1, 1, 1, 1], layout=layout)
        if self.op == "avg_pool":
            return lambda: ops.qlinear_average_pool(x, sx, zx, sy, zy, [3, 3], [1, 1], [1, 1, 1, 1], 0, layout=layout)
        if self.op == "global_avg_pool":
            return lambda: ops.qlinear_global_average_pool(x, sx, zx, sy, zy, layout=layout)
        b = self.b_nhwc if layout == "NHWC" else self.b
        if self.op in ("add", "add_channel"):
            return lambda: ops.qlinear_add(x, sx, zx, b, sb, zb, sy, zy)
        axis = 3 if layout == "NHWC" else 1
        # the first input already has the output's scale and zero point (a copy), the second is requantized
        return lambda: ops.qlinear_concat(sy, zy, [(x, sy, zy), (b, sb, zb)], axis)

    def _ort(self, threads):
        (sx, zx), (sb, zb), (sy, zy) = QP["x"], QP["b"], QP["y"]
        x = self.x
        N, C, H, W = x.shape
        qx = [("x_scale", np.asarray(sx)), ("x_zero_point", np.asarray(zx))]
        qy = [("y_scale", np.asarray(sy)), ("y_zero_point", np.asarray(zy))]
        if self.op == "max_pool":
            attrs = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], _order=["x"])
            return _ort_runner("MaxPool", "", [("x", x)], [], attrs, (N, C, (H - 1) // 2 + 1, (W - 1) // 2 + 1),
                               threads)
        if self.op == "avg_pool":
            attrs = dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0,
                         _order=["x", "x_scale", "x_zero_point", "y_scale", "y_zero_point"])
            return _ort_runner("QLinearAveragePool", "com.microsoft", [("x", x)], qx + qy, attrs, x.shape, threads)
        if self.op == "global_avg_pool":
            attrs = dict(channels_last=0, _order=["x", "x_scale", "x_zero_point", "y_scale", "y_zero_point"])
            return _ort_runner("QLinearGlobalAveragePool", "com.microsoft", [("x", x)], qx + qy, attrs,
                               (N, C, 1, 1), threads)
        qb = [("b_scale", np.asarray(sb)), ("b_zero_point", np.asarray(zb))]
        if self.op in ("add", "add_channel"):
            attrs = dict(_order=["x", "x_scale", "x_zero_point", "b", "b_scale", "b_zero_point", "y_scale",
                                 "y_zero_point"])
            return _ort_runner("QLinearAdd", "com.microsoft", [("x", x), ("b", self.b)], qx + qb + qy, attrs,
                               x.shape, threads)
        attrs = dict(axis=1, _order=["y_scale", "y_zero_point", "x", "y_scale", "y_zero_point", "b", "b_scale",
                                     "b_zero_point"])
        return _ort_runner("QLinearConcat", "com.microsoft", [("x", x), ("b", self.b)], qy + qb, attrs,
                           (N, 2 * C, H, W), threads)

    def engines(self, threads, with_ort=True):
        fns = {"pyq_nhwc": self._pyq("NHWC"), "pyq_nchw": self._pyq("NCHW")}
        if with_ort:
            fns["ort"] = self._ort(threads)
        return fns

    def nchw(self, y_nhwc):
        """pyq_nhwc's output in ORT's NCHW layout, for the exactness check."""
        return y_nhwc.transpose(0, 3, 1, 2)


def bench_case(case, threads, *, min_runs=5, target_seconds=0.3, with_ort=True):
    """One record: every engine on ``case`` with ``threads`` threads."""
    outs, times, foreign = run_engines(case.engines(threads, with_ort=with_ort), threads, min_runs=min_runs,
                                       target_seconds=target_seconds)
    rec = {
        "case": case.name, "op": case.op, "shape": list(case.x.shape), "threads": threads,
        "description": case.description,
        "seconds": {n: t["median"] for n, t in times.items()},
        "runs": {n: t["runs"] for n, t in times.items()},
        "exact_nhwc_nchw": bool(np.array_equal(case.nchw(outs["pyq_nhwc"]), outs["pyq_nchw"])),
        "loadavg_1min": _loadavg(),
        "other_cpu_fraction": foreign.fraction,
    }
    if with_ort:
        sec = rec["seconds"]
        rec["exact_vs_ort"] = bool(np.array_equal(outs["pyq_nchw"], outs["ort"]))
        rec["ratio"] = {"nhwc_vs_ort": sec["ort"] / sec["pyq_nhwc"], "nchw_vs_ort": sec["ort"] / sec["pyq_nchw"]}
    return rec


def run_eltwise_bench(cases=None, threads=None, *, min_runs=5, target_seconds=0.3, with_ort=None,
                      progress=None, max_other=None, attempts=3):
    """Run the benchmark: a list of records, one per (threads, case); ``max_other`` as in
    :func:`pyqinfer.bench.gemm.run_gemm_bench` (wait for a quiet machine, retry noisy rows)."""
    cases = list(cases or CASES)
    threads = threads or sorted({1, available_cores()})
    if with_ort is None:
        with_ort = _ort.available()
    return run_rows(cases, threads, EltwiseCase,
                    lambda case, th: bench_case(case, th, min_runs=min_runs, target_seconds=target_seconds,
                                                with_ort=with_ort),
                    max_other=max_other, attempts=attempts, progress=progress)


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def format_table(records, markdown=False):
    head = ["case", "thr", "pyq NHWC us", "pyq NCHW us", "ORT us", "ORT/NHWC", "ORT/NCHW", "exact", "other%"]
    rows = []
    for r in records:
        s, ratio = r["seconds"], r.get("ratio", {})
        ex = r.get("exact_vs_ort")
        rows.append([r["case"], str(r["threads"]), _fmt(1e6 * s["pyq_nhwc"], ".1f"), _fmt(1e6 * s["pyq_nchw"], ".1f"),
                     _fmt(1e6 * s["ort"] if "ort" in s else None, ".1f"), _fmt(ratio.get("nhwc_vs_ort"), ".2f"),
                     _fmt(ratio.get("nchw_vs_ort"), ".2f"),
                     "-" if ex is None else ("yes" if ex and r["exact_nhwc_nchw"] else "NO"),
                     _fmt(None if r.get("other_cpu_fraction") is None else 100 * r["other_cpu_fraction"], ".0f")])
    return render_table(head, rows, markdown)


LEGEND = """\
Median microseconds per call (batch 1, uint8). pyq NHWC: the pyqinfer op on NHWC tensors (concat on the last
axis); pyq NCHW: on the NCHW tensors ORT gets (pools transpose in and out, add and concat need none). ORT:
onnxruntime MaxPool / com.microsoft QLinearAveragePool, QLinearGlobalAveragePool, QLinearAdd, QLinearConcat
(NCHW, scales and zero points constant initializers, ORT_ENABLE_ALL). ORT/NHWC, ORT/NCHW: ORT's time over
pyqinfer's (above 1: pyqinfer is faster). exact: pyqinfer == ORT bit for bit (and NHWC == NCHW).
other%: CPU other processes used during the row, % of all cores (noise; want ~0)."""


def main(argv=None, out=sys.stdout):
    p = argparse.ArgumentParser(prog="python -m pyqinfer.bench.eltwise",
                                description="Time pyqinfer's pooling, add and concat against ONNX Runtime "
                                            "(ResNet-like shapes, batch 1) and check they are bit-identical.",
                                epilog="cases: " + ", ".join(f"{k} ({v[2]})" for k, v in CASES.items()))
    p.add_argument("--cases", help="comma-separated case names (default: all)")
    p.add_argument("--threads", help="comma-separated thread counts (default: 1 and all cores)")
    p.add_argument("--repeats", type=int, default=5, help="at least N timed runs per engine (default 5)")
    p.add_argument("--min-time", type=float, default=0.3, help="time each engine for at least S seconds")
    p.add_argument("--max-other", type=float, default=None,
                   help="wait for other processes to use <= PCT%% of the CPU before each row; retry noisy rows")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--json", help="also write the records as JSON to PATH")
    args = p.parse_args(argv)
    cases = args.cases.split(",") if args.cases else None
    for c in cases or []:
        if c not in CASES:
            p.error(f"unknown case {c!r}; choose from {', '.join(CASES)}")
    threads = [int(t) for t in args.threads.split(",")] if args.threads else None
    if not _ort.available():
        print("onnx/onnxruntime not importable: timing pyqinfer only", file=out)
    records = run_eltwise_bench(cases, threads, min_runs=args.repeats, target_seconds=args.min_time,
                                max_other=None if args.max_other is None else args.max_other / 100.0)
    print(format_table(records, markdown=args.markdown), file=out)
    print("\n" + LEGEND, file=out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
