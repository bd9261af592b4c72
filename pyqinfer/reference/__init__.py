"""pyqinfer.reference: the pure-Python golden model of docs/semantics.md.

Every C++ kernel is tested bit for bit against these functions. Written for
clarity: exact integers (Python ints or int64 where provably safe) and IEEE
float32 numpy arithmetic exactly where the contract says float32.
"""
from .accum import accumulate, accumulator_bound, can_overflow
from .arith import (INT32_MAX, INT32_MIN, mbqm_double, mbqm_single, quantize_multiplier,
                    rhaz, rne, rounding_divide_by_pot, srdhm, wrap32)
from .conv import conv_accumulate, conv_integer, conv_output_shape, qlinear_conv, same_pads
from .dtypes import dtype_range
from .eltwise import (ADD_RULES, add_params, clip, max_pool, ort_add_form, pool_geometry, qlinear_add,
                      qlinear_average_pool, qlinear_concat, qlinear_global_average_pool, relu,
                      requantize_int32, requantize_tensor)
from .lowbit import (NAMED_WIDTHS, check_lowbit, lowbit_accumulate, lowbit_accumulator_bound,
                     lowbit_can_overflow, lowbit_k_max, lowbit_matmul_integer, lowbit_qlinear_matmul,
                     lowbit_range, unpack_int4_tensor)
from .ops import MatMulInteger, QLinearMatMul, matmul_integer, qlinear_matmul
from .quant import QUANTIZE_RULES, dequantize_linear, pack_int4, quantize_linear, unpack_int4
from .requant import (MODES, Fp32Requant, PotRequant, Q31Requant, Q31SingleRequant,
                      RequantParams, activation_bounds, derive_requant, effective_scale_f32,
                      effective_scale_f64, requantize)

__all__ = [
    "MODES", "RequantParams", "derive_requant", "requantize", "activation_bounds",
    "effective_scale_f32", "effective_scale_f64",
    "Fp32Requant", "Q31Requant", "Q31SingleRequant", "PotRequant",
    "matmul_integer", "qlinear_matmul", "MatMulInteger", "QLinearMatMul", "accumulate",
    "accumulator_bound", "can_overflow",
    "quantize_linear", "dequantize_linear", "QUANTIZE_RULES", "pack_int4", "unpack_int4",
    "wrap32", "rne", "rhaz", "srdhm", "rounding_divide_by_pot", "quantize_multiplier",
    "mbqm_double", "mbqm_single", "INT32_MIN", "INT32_MAX", "dtype_range",
    "ADD_RULES", "add_params", "clip", "max_pool", "ort_add_form", "pool_geometry", "qlinear_add",
    "qlinear_average_pool", "qlinear_concat", "qlinear_global_average_pool", "relu",
    "requantize_int32", "requantize_tensor",
    "conv_accumulate", "conv_integer", "qlinear_conv", "conv_output_shape", "same_pads",
    "NAMED_WIDTHS", "lowbit_range", "check_lowbit", "unpack_int4_tensor", "lowbit_matmul_integer",
    "lowbit_qlinear_matmul", "lowbit_accumulate", "lowbit_accumulator_bound", "lowbit_can_overflow",
    "lowbit_k_max",
]
from .shift import (PRODUCT_RULES, check_shift_terms, shift_accumulate, shift_accumulator_bound,  # noqa: E402
                    shift_can_overflow_int32, shift_decode)

__all__ += ["PRODUCT_RULES", "check_shift_terms", "shift_accumulate", "shift_accumulator_bound",
            "shift_can_overflow_int32", "shift_decode"]
from . import shiftcodes  # noqa: E402
from .shiftcodes import deepshift_linear, shift_linear, to_fixed  # noqa: E402

__all__ += ["shiftcodes", "shift_linear", "deepshift_linear", "to_fixed"]
from . import pwlq, threshold  # noqa: E402
from .pwlq import pwlq_encode, pwlq_linear  # noqa: E402
from .threshold import multi_threshold  # noqa: E402

__all__ += ["pwlq", "threshold", "pwlq_encode", "pwlq_linear", "multi_threshold"]
