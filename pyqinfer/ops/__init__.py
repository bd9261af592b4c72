"""Functional integer operators, with ONNX names and argument order.

Every function validates its inputs and raises ``TypeError``/``ValueError``
naming the argument; the arithmetic is defined in ``docs/semantics.md`` and
mirrored by :mod:`pyqinfer.reference`. One module per op family.
"""
from . import conv as _conv, eltwise as _eltwise, gemm as _gemm, shift as _shift, threshold as _threshold
from .conv import *  # noqa: F401,F403
from .eltwise import *  # noqa: F401,F403
from .gemm import *  # noqa: F401,F403
from .shift import *  # noqa: F401,F403
from .threshold import *  # noqa: F401,F403

__all__ = _gemm.__all__ + _conv.__all__ + _eltwise.__all__ + _shift.__all__ + _threshold.__all__
