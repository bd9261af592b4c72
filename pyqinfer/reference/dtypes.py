"""Quantized tensor types and argument validation shared by the reference ops."""
import numpy as np

# name -> (qmin, qmax, numpy storage dtype of unpacked values)
DTYPES = {
    "int8": (-128, 127, np.int8),
    "uint8": (0, 255, np.uint8),
    "int4": (-8, 7, np.int8),
    "uint4": (0, 15, np.uint8),
}


def dtype_name(dtype, name="dtype"):
    """Normalize 'int8' / np.int8 / np.dtype('int8') / ... to a DTYPES key."""
    if isinstance(dtype, str):
        key = dtype
    else:
        try:
            key = np.dtype(dtype).name
        except TypeError:
            raise TypeError(f"{name}: not a dtype: {dtype!r}") from None
    if key not in DTYPES:
        raise TypeError(f"{name} must be one of {sorted(DTYPES)}, got {key!r}")
    return key


def dtype_range(dtype):
    """(qmin, qmax) of a quantized dtype."""
    lo, hi, _ = DTYPES[dtype_name(dtype)]
    return lo, hi


def storage_dtype(dtype):
    return DTYPES[dtype_name(dtype)][2]


def check_int_array(x, name, dtypes=("int8", "uint8")):
    """An int8/uint8 numpy array (int4 values travel unpacked in int8/uint8)."""
    arr = np.asarray(x)
    if arr.dtype.name not in dtypes:
        raise TypeError(f"{name} must have dtype in {list(dtypes)}, got {arr.dtype}")
    return arr


def check_scale(scale, name, per_channel_len=None):
    """Scales are float32, finite and > 0. Returns a 1-D float32 array.

    A scalar (or size-1) scale is per-tensor. If per_channel_len is given a
    1-D scale of that length is also accepted; otherwise the scale must be a
    scalar. Non-float32 input is converted to float32 (RNE) first.
    """
    arr = np.asarray(scale)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real number, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if arr.ndim == 0 or arr.size == 1:
        arr = arr.reshape(1)
    elif per_channel_len is None or arr.ndim != 1 or arr.size != per_channel_len:
        expected = "a scalar" if per_channel_len is None else f"a scalar or shape ({per_channel_len},)"
        raise ValueError(f"{name} must be {expected}, got shape {np.shape(scale)}")
    if not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        raise ValueError(f"{name} must be finite and > 0, got {arr.tolist()}")
    return arr


def check_zero_point(zp, dtype, name, per_channel_len=None):
    """A zero point in range of `dtype`. Returns a 1-D int64 array.

    None means 0. A numpy-typed zero point must have the tensor's storage
    dtype; a Python int only has to be in range.
    """
    qmin, qmax = dtype_range(dtype)
    if zp is None:
        return np.zeros(1, dtype=np.int64)
    arr = np.asarray(zp)
    if isinstance(zp, (bool, np.bool_)) or arr.dtype.kind not in "iu" and arr.dtype != object:
        raise TypeError(f"{name} must be an integer, got {type(zp).__name__} ({arr.dtype})")
    if isinstance(zp, (np.ndarray, np.generic)) and arr.dtype != storage_dtype(dtype):
        raise TypeError(f"{name} must have dtype {np.dtype(storage_dtype(dtype)).name}, got {arr.dtype}")
    if arr.ndim == 0 or arr.size == 1:
        arr = arr.reshape(1)
    elif per_channel_len is None or arr.ndim != 1 or arr.size != per_channel_len:
        expected = "a scalar" if per_channel_len is None else f"a scalar or shape ({per_channel_len},)"
        raise ValueError(f"{name} must be {expected}, got shape {np.shape(zp)}")
    vals = [int(v) for v in arr.flat]
    if any(not qmin <= v <= qmax for v in vals):
        raise ValueError(f"{name} must lie in [{qmin}, {qmax}] for {dtype_name(dtype)}, got {vals}")
    return np.array(vals, dtype=np.int64)

