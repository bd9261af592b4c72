"""pyqinfer.train: quantization-aware training and post-training quantization (PyTorch).

An optional extra: ``pip install "pyqinfer[train]"`` installs PyTorch. Nothing
else in pyqinfer imports torch.

* Quantizers, one module per family, each an ``nn.Module`` with a training
  (fake-quant, differentiable) forward and an integer form for the engine:
  :mod:`.uniform` (symmetric / asymmetric, per tensor / per channel, STE, LSQ),
  :mod:`.dsq`, :mod:`.pot` (PoT, DeepShift-Q), :mod:`.apot`, :mod:`.logq`
  (Miyashita), :mod:`.pwlq`, :mod:`.qn` (Quantization Networks thresholds),
  :mod:`.lqnet` (LQ-Net basis on an integer codebook).
* :mod:`.observers`: post-training calibration (min/max, percentile, MSE).
* :mod:`.export`: ``export(model, example_input, path)``, the ONNX file
  ``pyqinfer.load`` runs bit-exactly (standard-domain ops).
* :mod:`.layers`: ``QLinear``, ``QConv2d``, ``fold_bn``, ``prepare`` (one
  config dict, per layer: mixed precision), ``calibrate``.
* :mod:`.qops`: ``QAdd``, ``QGlobalAvgPool``, ``QAvgPool2d``, ``QConcat`` (docs/semantics.md §11);
  :mod:`.graph`: graph mode (``torch.fx``) of ``prepare`` for residual / concat models,
  ``fold_bn_graph``.
* The eval-mode forward of a prepared model computes what the integer engine
  computes (``docs/semantics.md`` §4.1, §5, §10; see ``docs/training.md``).
"""
try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError(
        'pyqinfer.train needs PyTorch: pip install "pyqinfer[train]"') from e

from .apot import APoTQuantizer, apot_levels, apot_levels_repo
from .dsq import DSQQuantizer
from .export import ExportError, export
from .graph import UnsupportedNodeError, fold_bn_graph, prepare_graph
from .layers import (QConv2d, QLinear, calibrate, fold_bn, fold_bn_sequential, prepare,
                     quantized_layers, quantized_modules)
from .logq import LogQuantizer, log_levels, miyashita_range
from .lqnet import LQNetQuantizer
from .observers import OBSERVERS, MinMaxObserver, MSEObserver, PercentileObserver
from .pot import DeepShiftQuantizer, PoTQuantizer, deepshift_levels, pot_levels
from .qops import QAdd, QAvgPool2d, QConcat, QGlobalAvgPool
from .pwlq import PWLQQuantizer, pwlq_breakpoint, pwlq_levels
from .qn import QNActivation
from .rounding import project_to_levels, round_rne, round_stochastic
from .uniform import UniformQuantizer, qrange

__all__ = [
    "UniformQuantizer", "qrange", "DSQQuantizer", "PoTQuantizer", "DeepShiftQuantizer",
    "pot_levels", "deepshift_levels", "APoTQuantizer", "apot_levels", "apot_levels_repo",
    "LogQuantizer", "log_levels", "miyashita_range", "PWLQQuantizer", "pwlq_breakpoint",
    "pwlq_levels", "QNActivation", "LQNetQuantizer",
    "OBSERVERS", "MinMaxObserver", "PercentileObserver", "MSEObserver",
    "QLinear", "QConv2d", "prepare", "calibrate", "fold_bn", "fold_bn_sequential",
    "quantized_layers", "quantized_modules", "QAdd", "QGlobalAvgPool", "QAvgPool2d", "QConcat",
    "prepare_graph", "fold_bn_graph", "UnsupportedNodeError", "export", "ExportError", "round_rne", "round_stochastic", "project_to_levels",
]
