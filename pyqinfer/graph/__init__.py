"""Graph layer: the IR (:mod:`.ir`), the planner and the runner.

``pyqinfer.load`` imports a model file into a :class:`~pyqinfer.graph.ir.Graph`
(:mod:`pyqinfer.frontends`), plans it once and returns a :class:`Model`.
"""
from .ir import Graph, GraphError, KINDS, Node, QParams, Tensor  # noqa: F401


class UnsupportedModelError(ValueError):
    """The model uses an op, attribute or pattern pyqinfer cannot run exactly.

    The message names the node, its op type and what is missing."""


def load(model, **options):
    """Load an ONNX model (path, bytes or ``onnx.ModelProto``) and plan it: see :class:`Model`."""
    from .runner import Model
    return Model(model, **options)


__all__ = ["Graph", "GraphError", "KINDS", "Node", "QParams", "Tensor", "UnsupportedModelError", "load"]
