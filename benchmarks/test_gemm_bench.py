"""GEMM benchmarks: pyqinfer u8s8 / s8s8 against ONNX Runtime MatMulInteger u8s8.

Grouped by shape, so pytest-benchmark's table compares the engines per shape:

    pytest benchmarks/test_gemm_bench.py --benchmark-only --benchmark-columns=median,ops,rounds

The inputs and engines are those of ``pyqinfer bench gemm`` (pyqinfer.bench.gemm):
weights packed once (pyqinfer) or a constant initializer (ORT pre-packs), int32
output. ``pyqinfer bench gemm`` adds GOP/s, ratios and % of peak.
"""
import numpy as np
import pytest

from pyqinfer.bench import ort
from pyqinfer.bench.gemm import DEFAULT_SHAPES, GemmCase

ENGINES = [
    "pyq_u8s8_i32",
    "pyq_s8s8_i32",
    pytest.param("ort_u8s8_i32", marks=pytest.mark.ort),
]

_cache = {}


def _engines(shape, threads):
    key = (shape, threads)
    if key not in _cache:
        _cache.clear()  # one shape at a time: 2048^3 inputs are not small
        case = GemmCase(*shape)
        _cache[key] = (case, case.engines(threads, with_ort=ort.available()))
    return _cache[key]


def _id(shape):
    return "x".join(map(str, shape))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("shape", DEFAULT_SHAPES, ids=_id)
def test_gemm(benchmark, shape, engine, pyq_threads):
    M, K, N = shape
    _, fns = _engines(shape, pyq_threads)
    benchmark.group = f"gemm {_id(shape)} threads={pyq_threads}"
    benchmark.extra_info.update(M=M, K=K, N=N, threads=pyq_threads, ops=2 * M * N * K)
    out = benchmark(fns[engine])
    assert out.shape == (M, N) and out.dtype == np.int32


@pytest.mark.ort
@pytest.mark.parametrize("shape", DEFAULT_SHAPES[:2], ids=_id)
def test_gemm_bit_exact_vs_ort(shape, pyq_threads):
    """Not a benchmark (skipped by --benchmark-only): the timed engines agree bit for bit."""
    _, fns = _engines(shape, pyq_threads)
    np.testing.assert_array_equal(fns["pyq_u8s8_i32"](), fns["ort_u8s8_i32"]())
    np.testing.assert_array_equal(fns["pyq_s8s8_i32"](), fns["ort_s8s8_i32"]())
