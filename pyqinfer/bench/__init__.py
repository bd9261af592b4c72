"""pyqinfer.bench: reproducible performance measurements.

- :mod:`pyqinfer.bench.peak`: the measured int8 VNNI peak of this machine.
- :mod:`pyqinfer.bench.gemm`: the GEMM benchmark, pyqinfer against ONNX Runtime
  and numpy, timed interleaved in one process.
- :mod:`pyqinfer.bench.ort`: one-node ONNX Runtime sessions with constant weights.
- :mod:`pyqinfer.bench.timing`: warm-up + interleaved adaptive median timing.

The command line front end is ``pyqinfer bench gemm`` (see :mod:`pyqinfer.cli`).
"""
from .gemm import DEFAULT_SHAPES, QUICK_SHAPES, parse_shapes, run_gemm_bench
from .peak import measure_peak

__all__ = ["DEFAULT_SHAPES", "QUICK_SHAPES", "parse_shapes", "run_gemm_bench", "measure_peak"]
