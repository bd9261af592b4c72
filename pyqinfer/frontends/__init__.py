"""Model importers: each turns a file into a :class:`pyqinfer.graph.ir.Graph`.

Only ONNX today (:mod:`pyqinfer.frontends.onnx`); QONNX/Brevitas and the
``pyqinfer`` domain are to come (docs/model-format.md).
"""
