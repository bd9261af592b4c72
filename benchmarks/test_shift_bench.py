"""Shift-vs-multiply benchmarks: the shift kernel, the multiply kernel on the same
PoT/APoT codes and the uniform int8 kernel, grouped by case so pytest-benchmark's
table compares them:

    pytest benchmarks/test_shift_bench.py --benchmark-only --benchmark-columns=median,ops,rounds

The inputs and engines are those of ``pyqinfer bench shift-vs-mul``
(pyqinfer.bench.shift), which adds GOP/s, ratios, bit-exactness and the energy model.
"""
import numpy as np
import pytest

import pyqinfer
from pyqinfer.bench.shift import CONV_LAYERS, GEMM_SHAPES, KERNELS, SCHEMES, Case

CASES = [n for n, *_ in GEMM_SHAPES] + [n for n, *_ in CONV_LAYERS]
_cache = {}


def _engines(name, scheme):
    key = (name, scheme)
    if key not in _cache:
        _cache.clear()  # one case at a time
        case = Case(name, scheme)
        _cache[key] = (case, case.engines())
    return _cache[key]


@pytest.fixture
def pyq_threads(gemm_threads):
    old = pyqinfer.get_num_threads()
    pyqinfer.set_num_threads(gemm_threads)
    yield gemm_threads
    pyqinfer.set_num_threads(old)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("name", CASES)
def test_shift_vs_mul(benchmark, name, scheme, kernel, pyq_threads):
    case, fns = _engines(name, scheme)
    benchmark.group = f"shift-vs-mul {name} {scheme} threads={pyq_threads}"
    benchmark.extra_info.update(case=name, scheme=scheme, kernel=kernel, threads=pyq_threads, macs=case.macs)
    out = benchmark(fns[kernel])
    assert out.dtype == np.int32 and out.size > 0
