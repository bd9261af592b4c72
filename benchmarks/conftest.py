"""pytest-benchmark suites, run by hand:

    pytest benchmarks/ --benchmark-only                      # time everything
    pytest benchmarks/ --benchmark-only --gemm-threads 1     # single-threaded
    pytest benchmarks/ --benchmark-disable -q                # smoke: each case runs once

Tests needing ONNX Runtime carry the ``ort`` marker and are skipped if onnx or
onnxruntime does not import.
"""
import pytest

import pyqinfer
from pyqinfer.bench import ort as _ort

_engine_cache = {}


def cached_engines(key, build):
    """``build()`` (a case and its engines) for ``key``, kept until another key is asked
    for: the suites walk their cases in order, and some cases' inputs are not small."""
    if key not in _engine_cache:
        _engine_cache.clear()
        _engine_cache[key] = build()
    return _engine_cache[key]


def pytest_addoption(parser):
    parser.addoption("--gemm-threads", type=int, default=0,
                     help="pyqinfer and ORT thread count for benchmarks/ (default: all cores)")


def pytest_configure(config):
    config.addinivalue_line("markers", "ort: needs onnx and onnxruntime (skipped without them)")


def pytest_collection_modifyitems(config, items):
    if _ort.available():
        return
    skip = pytest.mark.skip(reason="onnx/onnxruntime not importable")
    for item in items:
        if "ort" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def pyq_threads(gemm_threads):
    """pyqinfer's thread count set to --gemm-threads for the test, restored afterwards."""
    old = pyqinfer.get_num_threads()
    pyqinfer.set_num_threads(gemm_threads)
    yield gemm_threads
    pyqinfer.set_num_threads(old)


@pytest.fixture(scope="session")
def gemm_threads(pytestconfig):
    from pyqinfer.bench.peak import available_cores

    return pytestconfig.getoption("--gemm-threads") or available_cores()
