"""``pyqinfer verify``: prove, layer by layer, that the engine computes what the model means.

* :func:`verify` runs the integer engine with every intermediate tensor and
  compares each layer, fed with the engine's own inputs, with
  - the **contract** (``pyqinfer.reference``, docs/semantics.md): must be bit-exact;
  - the **float reference** (:mod:`.floatref`: dequantize, float64 op, quantize
    with round-half-to-even): every mismatch classified exactly as a float32
    rounding **tie** or a **real** error (:mod:`.exact`);
  - **ONNX Runtime** when installed (:mod:`.ortref`).
* :class:`VerifyReport` renders the result as text, JSON (schema
  ``pyqinfer.verify/1``) and a self-contained HTML page (:mod:`.report`).

See docs/verify.md for the definitions and a worked example.
"""
from .core import SCHEMA, VerifyReport, random_inputs, verify
from .exact import classify, gamma, rne_fraction
from .floatref import FloatReference, NoFloatReference, RefOut

__all__ = ["SCHEMA", "VerifyReport", "verify", "random_inputs", "classify", "gamma", "rne_fraction",
           "FloatReference", "NoFloatReference", "RefOut"]
