"""Eltwise benchmarks: pyqinfer's pooling, add and concat against ONNX Runtime.

Grouped by case, so pytest-benchmark's table compares the engines per case:

    pytest benchmarks/test_eltwise_bench.py --benchmark-only --benchmark-columns=median,ops,rounds

The cases and engines are those of ``python -m pyqinfer.bench.eltwise``
(pyqinfer.bench.eltwise): max pool 3x3/2 on 64x112x112, average pool 3x3 on
64x56x56, global average pool 512x7x7, residual and per-channel add on 64x56x56,
concat of two 64x56x56 tensors; uint8, batch 1. The module adds ratios and the
bit-exactness check against ORT.
"""
import numpy as np
import pytest

from conftest import cached_engines
from pyqinfer.bench import ort
from pyqinfer.bench.eltwise import CASES, EltwiseCase

ENGINES = ["pyq_nhwc", "pyq_nchw", pytest.param("ort", marks=pytest.mark.ort)]


def _engines(name, threads):
    def build():
        case = EltwiseCase(name)
        return case, case.engines(threads, with_ort=ort.available())
    return cached_engines(("eltwise", name, threads), build)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", list(CASES))
def test_eltwise(benchmark, case, engine, pyq_threads):
    c, fns = _engines(case, pyq_threads)
    benchmark.group = f"eltwise {case} threads={pyq_threads}"
    benchmark.extra_info.update(case=case, threads=pyq_threads, elements=c.elements)
    out = benchmark(fns[engine])
    assert out.dtype == np.uint8 and out.ndim == 4
    nchw = c.nchw(out) if engine == "pyq_nhwc" else out
    other = fns["pyq_nchw"]() if engine == "ort" else fns["ort"]() if "ort" in fns else fns["pyq_nchw"]()
    assert np.array_equal(nchw, other)  # pyqinfer is bit-exact with ONNX Runtime (NCHW)
