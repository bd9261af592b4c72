"""Functional integer operators, with ONNX names and argument order.

Every function validates its inputs and raises ``TypeError``/``ValueError``
naming the argument; the arithmetic is defined in ``docs/semantics.md`` and
mirrored by :mod:`pyqinfer.reference`. One module per op family.
"""
from .gemm import (  # noqa: F401
    MODES,
    PackedInt4,
    PackedWeights,
    activation_bounds,
    matmul_integer,
    pack_int4,
    pack_weights,
    qlinear_matmul,
)

from . import conv as _conv, eltwise as _eltwise
from .conv import *  # noqa: F401,F403
from .eltwise import *  # noqa: F401,F403

__all__ = _conv.__all__ + _eltwise.__all__ + [
    "MODES",
    "PackedWeights",
    "PackedInt4",
    "pack_int4",
    "pack_weights",
    "matmul_integer",
    "qlinear_matmul",
    "activation_bounds",
]
