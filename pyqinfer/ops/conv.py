"""Convolution operators: QLinearConv and ConvInteger (NHWC inside, NCHW accepted)."""

__all__ = []
