"""One-node ONNX Runtime sessions with the weight as a constant initializer.

With B an initializer ORT pre-packs it once at session creation, which is the
fair comparison to :func:`pyqinfer.ops.pack_weights`.
"""
from __future__ import annotations

import numpy as np

OPSET = 21


def available():
    """True if onnx and onnxruntime import."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def version():
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def _runner(graph, input_name, value, threads):
    """A callable running the one-input ``graph`` on ``value`` with ``threads`` intra-op threads."""
    return graph_runner(graph, {input_name: value}, threads)


def graph_runner(graph, feed, threads, domains=()):
    """A callable running ``graph`` on the inputs ``feed`` (name -> array) with ``threads``
    intra-op threads; ``domains``: extra operator domains (e.g. "com.microsoft"), version 1.
    Returns the first output."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    opsets = [helper.make_opsetid("", OPSET)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets)
    onnx.checker.check_model(model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, feed)[0]


def _session(op, a, initializers, out_dtype, threads):
    from onnx import helper, numpy_helper

    names = ["a"] + [n for n, _ in initializers]
    node = helper.make_node(op, names, ["y"])
    elem = helper.np_dtype_to_tensor_dtype
    M, N = a.shape[0], np.asarray(dict(initializers)["b"]).shape[1]
    graph = helper.make_graph(
        [node], op,
        [helper.make_tensor_value_info("a", elem(a.dtype), list(a.shape))],
        [helper.make_tensor_value_info("y", elem(np.dtype(out_dtype)), [M, N])],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in initializers])
    return _runner(graph, "a", a, threads)


def matmul_integer(a, b, a_zero_point, b_zero_point, threads):
    """A callable running ORT MatMulInteger(a, B const) and returning the int32 output."""
    za = np.asarray(a_zero_point, a.dtype)
    zb = np.asarray(b_zero_point, b.dtype)
    return _session("MatMulInteger", a, [("b", b), ("a_zero_point", za), ("b_zero_point", zb)],
                    np.int32, threads)


def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point,
                   threads):
    """A callable running ORT QLinearMatMul with every input but ``a`` constant."""
    inits = [("a_scale", np.asarray(a_scale, np.float32)),
             ("a_zero_point", np.asarray(a_zero_point, a.dtype)),
             ("b", b),
             ("b_scale", np.asarray(b_scale, np.float32)),
             ("b_zero_point", np.asarray(b_zero_point, b.dtype)),
             ("y_scale", np.asarray(y_scale, np.float32)),
             ("y_zero_point", np.asarray(y_zero_point))]
    return _session("QLinearMatMul", a, inits, np.asarray(y_zero_point).dtype, threads)


def qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, bias,
                 attrs, out_shape, threads):
    """A callable running ORT QLinearConv (NCHW) with every input but ``x`` a constant initializer."""
    from onnx import helper, numpy_helper

    inits = [("x_scale", np.asarray(x_scale, np.float32)),
             ("x_zero_point", np.asarray(x_zero_point, x.dtype)),
             ("w", w),
             ("w_scale", np.asarray(w_scale, np.float32)),
             ("w_zero_point", np.asarray(w_zero_point, w.dtype)),
             ("y_scale", np.asarray(y_scale, np.float32)),
             ("y_zero_point", np.asarray(y_zero_point))]
    if bias is not None:
        inits.append(("B", np.asarray(bias, np.int32)))
    elem = helper.np_dtype_to_tensor_dtype
    node = helper.make_node("QLinearConv", ["x"] + [n for n, _ in inits], ["y"], **attrs)
    graph = helper.make_graph(
        [node], "QLinearConv",
        [helper.make_tensor_value_info("x", elem(x.dtype), list(x.shape))],
        [helper.make_tensor_value_info("y", elem(np.asarray(y_zero_point).dtype), list(out_shape))],
        [numpy_helper.from_array(v, n) for n, v in inits])
    return _runner(graph, "x", x, threads)
