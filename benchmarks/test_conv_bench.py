"""Convolution benchmarks: pyqinfer qlinear_conv (NHWC and NCHW) against ONNX Runtime QLinearConv.

Grouped by layer, so pytest-benchmark's table compares the engines per layer:

    pytest benchmarks/test_conv_bench.py --benchmark-only --benchmark-columns=median,ops,rounds

The layers and engines are those of ``pyqinfer bench conv`` (pyqinfer.bench.conv):
ResNet-18 3x3, a strided 3x3, MobileNetV2 depthwise and pointwise layers, batch 1,
weights packed once (pyqinfer) or constant initializers (ORT). ``pyqinfer bench
conv`` adds GOP/s, ratios and the bit-exactness check.
"""
import numpy as np
import pytest

from conftest import cached_engines
from pyqinfer.bench import ort
from pyqinfer.bench.conv import LAYERS, ConvCase

ENGINES = ["pyq_nhwc", "pyq_nchw", pytest.param("ort", marks=pytest.mark.ort)]


def _engines(name, threads):
    def build():
        case = ConvCase(name)
        return case, case.engines(threads, with_ort=ort.available())
    return cached_engines(("conv", name, threads), build)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_conv(benchmark, layer, engine, pyq_threads):
    case, fns = _engines(layer, pyq_threads)
    benchmark.group = f"conv {layer} threads={pyq_threads}"
    benchmark.extra_info.update(layer=layer, threads=pyq_threads, ops=case.ops)
    out = benchmark(fns[engine])
    assert out.dtype == np.uint8 and out.size == case.OC * case.OH * case.OW
