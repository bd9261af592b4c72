"""Pooling, quantized add, concat, clip, requantize, quantize and dequantize."""

__all__ = []
