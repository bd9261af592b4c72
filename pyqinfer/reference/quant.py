"""Quantize / dequantize of float32 tensors and int4 packing (docs/semantics.md 5, 1.2).

Scale and zero point are per-tensor (scalar) or per channel along the last axis.
"""
import numpy as np

from .arith import rhaz, rne
from .dtypes import check_scale, check_zero_point, dtype_name, dtype_range, storage_dtype


def _scaled_onnx(x, s):
    """ONNX QuantizeLinear / ORT MLAS: fl32(x / s)."""
    return x / s


def _scaled_torch(x, s):
    """PyTorch / FBGEMM: fl32(x * fl32(1 / s)), a reciprocal product."""
    return x * (np.float32(1) / s)


# rule -> (float32 scaling, rounding to integer)
QUANTIZE_RULES = {
    "onnx": (_scaled_onnx, rne),
    "torch": (_scaled_torch, rne),
    "tflite": (_scaled_onnx, rhaz),  # TfLiteRound = std::round: ties away from zero
}


def _float32_input(x):
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"x must be a real array, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if np.any(np.isnan(arr)):
        raise ValueError("x contains NaN; NaN has no quantized value")
    return arr


def _channel_len(arr):
    return arr.shape[-1] if arr.ndim >= 1 else None


def _bcast(v):
    """A per-tensor parameter as a scalar (keeps the input's shape), else the [C] array."""
    return v if v.size > 1 else v[0]


def quantize_linear(x, scale, zero_point, rule="onnx", dtype=None):
    """q = sat(round(scaled(x, s)) + zp), rule in QUANTIZE_RULES.

    x is converted to float32 first. dtype: 'int8', 'uint8', 'int4', 'uint4'
    (int4 values are returned unpacked in int8 / uint8); if None it is the
    numpy dtype of zero_point (int8 or uint8), or uint8 when zero_point is None
    (the ONNX default). Saturation is applied to the float value before
    rounding, which is the same as after because the bounds are integers;
    +-inf saturate.
    """
    if rule not in QUANTIZE_RULES:
        raise ValueError(f"rule must be one of {sorted(QUANTIZE_RULES)}, got {rule!r}")
    if dtype is None:
        if zero_point is None:
            dtype = "uint8"
        elif isinstance(zero_point, (np.ndarray, np.generic)):
            dtype = np.asarray(zero_point).dtype.name
        else:
            raise TypeError("dtype is required when zero_point is a plain Python int")
    dt = dtype_name(dtype)
    x = _float32_input(x)
    s = check_scale(scale, "scale", per_channel_len=_channel_len(x))
    zp = check_zero_point(zero_point, dt, "zero_point", per_channel_len=_channel_len(x))
    qmin, qmax = dtype_range(dt)
    scaled_fn, round_fn = QUANTIZE_RULES[rule]
    zp = _bcast(zp)
    with np.errstate(over="ignore", under="ignore"):
        v = scaled_fn(x, _bcast(s))
    assert v.dtype == np.float32
    v = np.clip(v.astype(np.float64), qmin - zp, qmax - zp)
    q = np.asarray(round_fn(v)) + zp
    return q.astype(storage_dtype(dt))


def dequantize_linear(q, scale, zero_point=None):
    """x = fl32(fl32(q - zp) * s), float32. q: int8/uint8 (or int4 unpacked), int32 with zp 0."""
    q = np.asarray(q)
    if q.dtype.name not in ("int8", "uint8", "int32"):
        raise TypeError(f"q must have dtype int8, uint8 or int32, got {q.dtype}")
    s = check_scale(scale, "scale", per_channel_len=_channel_len(q))
    if q.dtype == np.int32:
        if zero_point is not None and np.any(np.asarray(zero_point) != 0):
            raise ValueError("zero_point must be 0 for int32 (bias) tensors")
        zp = np.zeros(1, np.int64)
    else:
        zp = check_zero_point(zero_point, q.dtype.name, "zero_point", per_channel_len=_channel_len(q))
    diff = q.astype(np.int64) - _bcast(zp)  # exact
    diff_f32 = diff.astype(np.float64).astype(np.float32)  # |diff| < 2^33: one RNE rounding
    return diff_f32 * _bcast(s)


def pack_int4(values, signed):
    """Pack int4 (signed) / uint4 values two per byte, ONNX order.

    The input is flattened row-major; element 2i goes to the low nibble of
    byte i, element 2i+1 to the high nibble; an odd length is padded with a
    zero high nibble. Returns uint8 [ceil(n / 2)].
    """
    dt = "int4" if signed else "uint4"
    qmin, qmax = dtype_range(dt)
    v = np.asarray(values)
    if v.dtype.kind not in "iu":
        raise TypeError(f"values must be an integer array, got dtype {v.dtype}")
    v = v.astype(np.int64).reshape(-1)
    if v.size and (v.min() < qmin or v.max() > qmax):
        raise ValueError(f"values must lie in [{qmin}, {qmax}] for {dt}")
    if v.size % 2:
        v = np.append(v, 0)
    nib = v & 0xF  # two's-complement low nibble
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed, count, signed):
    """Inverse of pack_int4: the first `count` nibbles as int8 (signed) or uint8, 1-D."""
    p = np.asarray(packed)
    if p.dtype != np.uint8:
        raise TypeError(f"packed must have dtype uint8, got {p.dtype}")
    p = p.reshape(-1).astype(np.int64)
    count = int(count)
    if count < 0 or p.size != (count + 1) // 2:
        raise ValueError(f"packed has {p.size} bytes; count={count} needs {(count + 1) // 2}")
    nib = np.empty(2 * p.size, dtype=np.int64)
    nib[0::2] = p & 0xF
    nib[1::2] = p >> 4
    nib = nib[:count]
    if signed:
        nib = np.where(nib >= 8, nib - 16, nib)
        return nib.astype(np.int8)
    return nib.astype(np.uint8)
