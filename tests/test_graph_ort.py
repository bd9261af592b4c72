"""Models quantized by onnxruntime.quantization.quantize_static (QDQ and QOperator,
per-tensor and per-channel, uint8 and int8 activations), run by pyqinfer and by
ONNX Runtime, compared element for element (np.array_equal), final outputs and
every quantized intermediate tensor.

What is bit-exact (docs/model-format.md, "Exactness against ONNX Runtime"):

* QOperator models: at ORT_ENABLE_ALL and ORT_DISABLE_ALL (ORT runs the same
  integer kernels either way).
* QDQ models with uint8 activations: at ORT_ENABLE_ALL, where ORT fuses every
  DQ->op->Q group into its integer kernels (QLinearConv, QGemm, QLinearAdd,
  QLinearAveragePool, QLinearGlobalAveragePool, QLinearConcat), which pyqinfer
  implements. At ORT_DISABLE_ALL ORT evaluates the float graph (the ONNX
  reference semantics), which differs from the fused kernels at ties in Add,
  AveragePool and GlobalAveragePool; tested below as the documented behaviour.
* QDQ models with int8 activations: ORT on x86 does not fuse most int8 QDQ
  groups (QDQIsInt8Allowed() is false off ARM) and runs them in float, so its
  output follows the float graph: exact here for the MLPs, not for the CNN.
"""
import logging
import zlib

import numpy as np
import onnx
import pytest

import pyqinfer

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")
import graph_models as gm  # noqa: E402

logging.getLogger().setLevel(logging.ERROR)  # quantize_static's pre-processing advice
LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
_CACHE = {}


def quantized(kind, fmt, per_channel, act, tmp_path_factory):
    key = (kind, fmt, per_channel, act)
    if key not in _CACHE:
        shape = {"cnn": [1, 3, 16, 16], "mlp": [1, 1, 8, 8], "mlp_residual": [1, 32]}[kind]
        model = getattr(gm, kind)()
        _CACHE[key] = gm.quantize(model, fmt, per_channel=per_channel, act=act, shape=shape,
                                  tmpdir=str(tmp_path_factory.mktemp("q")))
    return _CACHE[key]


def ort_outputs(model, feeds, names, level, dtypes):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for nm in names:
        if nm not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(
                nm, onnx.helper.np_dtype_to_tensor_dtype(dtypes[nm]), None))
    so = ort.SessionOptions()
    so.graph_optimization_level = LEVELS[level]
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip(names, s.run(names, feeds)))


def intermediates(m):
    g = m.graph
    return [t for t, v in g.tensors.items() if v.quant is not None and t not in g.inputs
            and t not in g.constants and "__pq" not in t]


def inputs_for(m, n, seed):
    shape = (n,) + tuple(m.inputs[0].shape[1:])
    rng = np.random.default_rng(seed)
    return {"input": (rng.normal(0, 1.5, shape)).astype(np.float32)}


def assert_same(ours, theirs, what):
    for name, b in theirs.items():
        a = ours[name]
        assert a.dtype == b.dtype and a.shape == b.shape, (what, name, a.dtype, b.dtype, a.shape, b.shape)
        assert np.array_equal(a, b), f"{what}: {name}: {(a != b).sum()} of {a.size} elements differ"


CASES = [(k, f, pc, a) for k in ("cnn", "mlp") for f in ("QOperator", "QDQ") for pc in (False, True)
         for a in ("uint8", "int8")]


@pytest.mark.parametrize("kind,fmt,per_channel,act", CASES)
def test_quantize_static_models_vs_ort(kind, fmt, per_channel, act, tmp_path_factory):
    q = quantized(kind, fmt, per_channel, act, tmp_path_factory)
    m = pyqinfer.load(q)
    # a stable seed: hash() of a tuple of str changes with PYTHONHASHSEED
    feeds = inputs_for(m, 48, seed=zlib.crc32(repr((kind, fmt, per_channel, act)).encode()) % 1000)
    outs = list(m.graph.outputs)
    levels = ["all", "none"] if fmt == "QOperator" else ["all"]
    if fmt == "QDQ" and act == "int8":
        if kind == "cnn":
            # ORT leaves int8 QDQ groups in float on x86: documented, not exact (see module doc)
            opt = _ort_optimized_ops(q)
            assert "Conv" in opt, "ORT now fuses every int8 QDQ conv on x86: revisit docs/model-format.md"
            return
        # every group runs in float in ORT, so exactness holds for these inputs only: about 2% of
        # seeds put one logit of 48x10 on a float rounding near-tie (1 LSB; docs/model-format.md)
        levels = ["all", "none"]
    ours_final = m.run(feeds)
    for lv in levels:
        theirs = ort_outputs(q, feeds, outs, lv, {})
        assert_same(ours_final, theirs, f"{kind} {fmt} pc={per_channel} {act} ORT level {lv}")
    if fmt == "QOperator":
        # every quantized intermediate too (adding outputs does not change ORT's QOperator kernels)
        names = intermediates(m)
        ours = m.run(feeds, outputs=names)
        theirs = ort_outputs(q, feeds, names, "all", {n: m.graph.tensors[n].dtype for n in names})
        assert_same(ours, theirs, f"{kind} {fmt} intermediates")
    # the free batch size: batch 1 gives the rows of the batch-48 run
    one = m.run({"input": feeds["input"][:1]})
    for k in outs:
        assert np.array_equal(one[k], ours_final[k][:1])


@pytest.mark.parametrize("opset", [17, 21])
@pytest.mark.parametrize("weight", ["int4", "uint4"])
def test_int4_weights_qdq(opset, weight, tmp_path_factory):
    """4-bit weights: com.microsoft Q/DQ below opset 21, standard INT4/UINT4 initializers at 21."""
    q = gm.quantize(gm.with_opset(gm.cnn(), opset), "QDQ", per_channel=True, act="uint8", weight=weight,
                    shape=[1, 3, 16, 16], tmpdir=str(tmp_path_factory.mktemp("q4")))
    domains = {n.domain for n in q.graph.node if n.op_type == "DequantizeLinear"}
    assert domains == ({"com.microsoft"} if opset < 21 else {""})
    m = pyqinfer.load(q)
    assert all("4-bit" in r["weights"] for r in m.layers() if r["weights"])
    feeds = inputs_for(m, 32, opset)
    assert_same(m.run(feeds), ort_outputs(q, feeds, list(m.graph.outputs), "all", {}), f"int4 opset {opset}")


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_symmetric_activations_keep_relu(kind, tmp_path_factory):
    """ActivationSymmetric=True keeps DQ->Relu->Q groups (zero point 128): they become an
    integer Clip, fused into the producing conv/gemm's clamp."""
    shape = {"cnn": [1, 3, 16, 16], "mlp": [1, 1, 8, 8]}[kind]
    q = gm.quantize(getattr(gm, kind)(), "QDQ", per_channel=True, act="uint8", shape=shape,
                    tmpdir=str(tmp_path_factory.mktemp("qs")), extra_options={"ActivationSymmetric": True})
    assert "Relu" in {n.op_type for n in q.graph.node}
    m = pyqinfer.load(q)
    assert any(r["fused"] for r in m.layers())
    feeds = inputs_for(m, 32, 11)
    assert_same(m.run(feeds), ort_outputs(q, feeds, list(m.graph.outputs), "all", {}), f"{kind} symmetric")


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_data_movement_model(fmt, tmp_path_factory):
    q = gm.quantize(gm.movement(), fmt, per_channel=True, act="uint8", shape=[1, 3, 8, 8],
                    tmpdir=str(tmp_path_factory.mktemp("mv")))
    m = pyqinfer.load(q)
    kinds = {r["kind"] for r in m.layers()}
    assert {"Pad", "Transpose", "DepthToSpace", "ResizeNearest", "SpaceToDepth"} <= kinds
    feeds = inputs_for(m, 16, 5)
    for lv in ("all", "none"):
        assert_same(m.run(feeds), ort_outputs(q, feeds, list(m.graph.outputs), lv, {}), f"movement {fmt} {lv}")


def test_float_first_layer(tmp_path_factory):
    """A first conv left in float (nodes_to_exclude) runs as numpy float ops and inspect says so.
    The float conv is outside the exactness contract; on this seed its quantized result
    still equals ORT's."""
    q = gm.quantize(gm.movement(), "QDQ", per_channel=True, act="uint8", shape=[1, 3, 8, 8],
                    tmpdir=str(tmp_path_factory.mktemp("ff")), nodes_to_exclude=["Conv4"])
    m = pyqinfer.load(q)
    fl = [(r["kind"], r["exact"]) for r in m.layers() if r["numpy_float"]]
    assert fl == [("FloatOp:Conv", False), ("FloatOp:Relu", True)]
    assert "2 numpy float ops" in m.summary()
    feeds = inputs_for(m, 16, 6)
    assert_same(m.run(feeds), ort_outputs(q, feeds, list(m.graph.outputs), "all", {}), "float first layer")


@pytest.mark.parametrize("kind", ["mlp", "mlp_residual", "cnn"])
@pytest.mark.parametrize("weight,per_channel", [("int8", False), ("uint8", True)])
def test_quantize_dynamic_models(kind, weight, per_channel, tmp_path_factory):
    """DynamicQuantizeLinear (numpy, ORT's rule) -> MatMulInteger/ConvInteger (kernels with a
    runtime zero point) -> Cast -> Mul -> Add (float32 elementwise, exact): the MLPs are
    bit-exact end to end (ORT fuses them into DynamicQuantizeMatMul at ORT_ENABLE_ALL).
    The CNN also has float AveragePool/GlobalAveragePool, run in numpy outside the exactness
    contract (their last-ulp differences move the next dynamic scale); its ConvInteger
    outputs before the first float average pool are compared instead."""
    q = gm.quantize_dynamic(getattr(gm, kind)(), weight, per_channel, tmpdir=str(tmp_path_factory.mktemp("qd")))
    m = pyqinfer.load(q)
    kinds = [r["kind"] for r in m.layers()]
    assert "DynamicQuantizeLinear" in kinds and "MatMulInteger" in kinds
    feeds = inputs_for(m, 24, 9)
    if kind == "cnn":
        first_avg = kinds.index("FloatOp:AveragePool")
        names = [st.node.outputs[0] for st in m.plan.steps[:first_avg] if st.node.kind == "ConvInteger"]
        assert len(names) == 3
        for lv in ("all", "none"):
            theirs = ort_outputs(q, feeds, names, lv, {n: np.dtype(np.int32) for n in names})
            assert_same(m.run(feeds, outputs=names), theirs, f"dynamic cnn {lv}")
        return
    for lv in ("all", "none"):
        assert_same(m.run(feeds), ort_outputs(q, feeds, list(m.graph.outputs), lv, {}), f"dynamic {kind} {lv}")


def _ort_optimized_ops(model):
    import os
    import tempfile
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    path = os.path.join(tempfile.mkdtemp(), "opt.onnx")
    so.optimized_model_filepath = path
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(path).graph.node}


def test_layout_nchw_plan_gives_the_same_bits(tmp_path_factory):
    q = quantized("cnn", "QDQ", True, "uint8", tmp_path_factory)
    feeds = inputs_for(pyqinfer.load(q), 4, 3)
    a = pyqinfer.load(q).run(feeds)
    b = pyqinfer.load(q, layout="NCHW").run(feeds)
    for k in a:
        assert np.array_equal(a[k], b[k])


def test_inspect_reports_kernels_and_macs(tmp_path_factory):
    q = quantized("cnn", "QOperator", True, "uint8", tmp_path_factory)
    m = pyqinfer.load(q)
    recs = m.layers()
    convs = [r for r in recs if r["kind"] == "QLinearConv"]
    assert len(convs) == 5
    assert any(r["kernel"].startswith("depthwise") for r in convs)
    assert any(r["kernel"].startswith("1x1 GEMM") for r in convs)
    # first conv: 3->8, 3x3, 16x16 output at batch 1
    assert convs[0]["macs"] == 8 * 16 * 16 * 3 * 9 and convs[0]["weight_bytes"] == 8 * 3 * 9 + 4 * 8
    assert not any(r["numpy_float"] for r in recs)
    assert "QLinearConv" in m.summary()


# ---- the quantized Add: ORT's fused rule vs the ONNX float rule

def _qdq_add_model(dt):
    from onnx import TensorProto as TP, helper, numpy_helper
    T = TP.UINT8 if dt == np.uint8 else TP.INT8
    inits = [numpy_helper.from_array(v, k) for k, v in {
        # scales where the two rules differ on one of the 65536 pairs (found by search)
        "sa": np.float32(0.061056941747665405), "za": dt(131 if dt == np.uint8 else 3),
        "sb": np.float32(0.0732201561331749), "zb": dt(90 if dt == np.uint8 else -38),
        "sc": np.float32(0.05481887236237526), "zc": dt(120 if dt == np.uint8 else -8)}.items()]
    nodes = [helper.make_node("DequantizeLinear", ["a", "sa", "za"], ["fa"]),
             helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["fb"]),
             helper.make_node("Add", ["fa", "fb"], ["fc"]),
             helper.make_node("QuantizeLinear", ["fc", "sc", "zc"], ["c"])]
    g = helper.make_graph(nodes, "add", [helper.make_tensor_value_info("a", T, [256, 256]),
                                         helper.make_tensor_value_info("b", T, [256, 256])],
                          [helper.make_tensor_value_info("c", T, [256, 256])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
def test_qdq_add_rules(dt):
    """All 65536 input pairs. add_rule='onnx' (dequantize, float32 add, quantize) is the ONNX
    float graph, i.e. ORT at ORT_DISABLE_ALL; the default 'onnxruntime' rule is ORT's fused
    QLinearAdd, i.e. ORT at ORT_ENABLE_ALL for uint8 (ORT does not fuse int8 QDQ Add on x86)."""
    model = _qdq_add_model(dt)
    v = np.arange(256, dtype=np.int64)
    if dt == np.int8:
        v = v - 128
    a, b = np.meshgrid(v, v, indexing="ij")
    feeds = {"a": a.astype(dt), "b": b.astype(dt)}
    fused = pyqinfer.load(model).run(feeds)["c"]
    onnx_rule = pyqinfer.load(model, add_rule="onnx").run(feeds)["c"]
    ort_none = ort_outputs(model, feeds, ["c"], "none", {})["c"]
    ort_all = ort_outputs(model, feeds, ["c"], "all", {})["c"]
    assert np.array_equal(onnx_rule, ort_none)
    if dt == np.uint8:
        assert np.array_equal(fused, ort_all)
        assert not np.array_equal(ort_all, ort_none), "ORT's fused and float Add now agree: update the docs"
    else:
        assert np.array_equal(onnx_rule, ort_all)
    assert np.abs(fused.astype(int) - onnx_rule.astype(int)).max() <= 1   # they differ only at near-ties


def test_every_kernel_path_and_thread_count(kernel_path, num_threads, tmp_path_factory):
    """The planned model computes the same bits on every kernel path and thread count
    (the plan is made under one path; the kernels dispatch at call time)."""
    q = quantized("cnn", "QOperator", True, "int8", tmp_path_factory)
    pyqinfer.set_kernel_path("auto")
    m = pyqinfer.load(q)                      # planned (weights packed) under the best path
    pyqinfer.set_kernel_path(kernel_path)     # run under this one
    feeds = inputs_for(m, 8, 21)
    assert_same(m.run(feeds), ort_outputs(q, feeds, list(m.graph.outputs), "all", {}),
                f"path {kernel_path} threads {num_threads}")
