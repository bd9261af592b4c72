"""The measured int8 peak of this machine: u8 x s8 ``vpdpbusd`` zmm throughput.

``pyqinfer._core.peak_avx512vnni_seconds(iters)`` runs ``iters * 12 * 64`` u8s8
multiply-accumulates (12 independent zmm accumulator chains) on the calling
thread and returns the seconds taken. 1 MAC = 2 ops. The peak for ``n`` threads
is the per-core peak times ``min(n, cores)``; it is a property of the core, not
of any GEMM, so it is the honest denominator for "% of peak".
"""
from __future__ import annotations

import os
import statistics

from .. import _core

MACS_PER_ITER = 12 * 64


def available_cores():
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def measure_peak(iters=10_000_000, repeats=5):
    """Per-core int8 peak as a dict, or with ``gops_per_core=None`` if unmeasurable.

    Keys: ``gops_per_core`` (median GOP/s over ``repeats``), ``samples`` (each
    repeat's GOP/s), ``cores``, ``method``, and ``error`` when the CPU lacks
    AVX-512 VNNI (then the peak is unknown).
    """
    result = {"gops_per_core": None, "samples": [], "cores": available_cores(),
              "method": f"vpdpbusd zmm, 12 chains, {iters} iters, median of {repeats}"}
    try:
        _core.peak_avx512vnni_seconds(max(1, iters // 10))  # warm-up: clocks, page-in
        samples = [2.0 * MACS_PER_ITER * iters / _core.peak_avx512vnni_seconds(iters) / 1e9
                   for _ in range(repeats)]
    except RuntimeError as e:
        result["error"] = str(e)
        return result
    result["samples"] = samples
    result["gops_per_core"] = statistics.median(samples)
    return result


def peak_for_threads(peak, threads):
    """GOP/s peak for ``threads`` threads given a :func:`measure_peak` result (None if unknown)."""
    per_core = peak.get("gops_per_core") if peak else None
    if per_core is None:
        return None
    return per_core * min(int(threads), int(peak["cores"]))
