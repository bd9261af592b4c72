"""Exact rational classification of a mismatch against the float reference (docs/verify.md).

Every float32 and float64 number is a binary fraction, so ``fractions.Fraction``
represents scales, dequantized values and the float32 multiplier exactly. For
one output element the float reference supplies

* ``V``: the exact real value the float model means, in output integer units
  with the zero point added (``V = real / y_scale + y_zero_point``), computed
  from the exact integer accumulator and the exact scales, and
* ``E``: the documented worst-case error of the engine's float32 path for that
  element (an upper bound on ``|P - V|``, where ``P`` is the value the engine
  rounds), built from the unit roundoff ``u = 2^-24`` of binary32 and
  ``gamma(k) = k*u / (1 - k*u)`` (Higham, *Accuracy and Stability of Numerical
  Algorithms*, lemma 3.1).

A mismatch (engine ``e`` != float reference ``f``) is a **tie** when

1. the engine equals the contract (``e == c``, pyqinfer.reference on the same
   inputs), and
2. ``|e - f| == 1``, and
3. the rounding boundary between them, ``b = min(e, f) + 1/2``, satisfies
   ``|V - b| <= E``.

Then some evaluation within the documented float32 error rounds to ``e`` and
another to ``f``: both are legitimate outcomes of "round the real value to the
nearest integer", and which one the engine gets is decided by float32 rounding
of the multiplier, not by a bug. Every other mismatch is **real**.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Optional

import numpy as np

#: unit roundoff of IEEE binary32 with round-to-nearest
U = Fraction(1, 2 ** 24)
HALF = Fraction(1, 2)


def gamma(k: int) -> Fraction:
    """gamma_k = k*u / (1 - k*u): bound on |prod (1 + d_i)^(+-1) - 1| for k roundings, |d_i| <= u."""
    return k * U / (1 - k * U)


def F(x) -> Fraction:
    """The exact rational value of a Python/numpy int or float (floats are binary fractions)."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, (int, np.integer)):
        return Fraction(int(x))
    return Fraction(float(x))


def rne_fraction(v: Fraction) -> int:
    """Round a rational to the nearest integer, ties to even."""
    fl = v.numerator // v.denominator
    r = v - fl
    if r > HALF or (r == HALF and fl % 2 == 1):
        return fl + 1
    return fl


def half_boundary(lo: int, hi: int) -> Fraction:
    """The rounding boundary between the integers ``lo`` and ``hi = lo + 1`` of a
    round-to-nearest rule (any tie rule): ``lo + 1/2``."""
    return Fraction(lo) + HALF


def directed_boundary(mode: str):
    """The boundary between ``lo`` and ``lo + 1`` of a directed rounding (QONNX ``FLOOR``,
    ``CEIL``, ``DOWN`` toward zero, ``UP`` away from zero): an integer, not a half."""
    def b(lo: int, hi: int) -> Fraction:
        if mode == "FLOOR":
            return Fraction(hi)
        if mode == "CEIL":
            return Fraction(lo)
        if mode == "DOWN":
            return Fraction(hi if lo >= 0 else lo)
        if mode == "UP":
            return Fraction(lo if lo >= 0 else hi)
        raise ValueError(f"not a directed rounding mode: {mode!r}")
    return b


def round_half_up(v: Fraction) -> int:
    """floor(v + 1/2): round half up (the ``pot`` and ``q31_single`` requantization rules)."""
    w = v + HALF
    return w.numerator // w.denominator


def classify(e: int, f: int, c: Optional[int], V: Optional[Fraction], E: Optional[Fraction],
             boundary=None) -> str:
    """'tie' or 'real' for one mismatching element (``e != f``); see the module docstring.

    ``c`` is the contract's value (None if there is no contract for the op),
    ``V``/``E`` the exact value and error bound (None if the op has no rounding:
    then every mismatch is real). ``boundary(lo, hi)`` gives the rounding boundary
    between two adjacent integers (default :func:`half_boundary`, round to nearest).
    """
    if c is not None and e != c:
        return "real"
    if V is None or E is None or abs(e - f) != 1:
        return "real"
    b = (boundary or half_boundary)(min(e, f), max(e, f))
    return "tie" if abs(V - b) <= E else "real"


def fmt(v: Optional[Fraction], digits: int = 12) -> Optional[str]:
    """A short decimal rendering of a Fraction (the exact value is also given as p/q in reports)."""
    if v is None:
        return None
    return f"{float(v):.{digits}g}"
