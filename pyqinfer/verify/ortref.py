"""ONNX Runtime as a peer: run the original model with every compared tensor
added as a graph output (on a copy of the model), so each layer can be compared.

ORT's values are *propagated* (each layer sees ORT's own inputs), so the first
layer where ORT and the engine differ is where they start to diverge; later
layers may differ because of it.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

import numpy as np


def available() -> Tuple[bool, Optional[str]]:
    try:
        import onnxruntime as ort
    except ImportError:
        return False, None
    return True, ort.__version__


def onnx_tensor_names(proto) -> set:
    """Names of tensors the ONNX graph computes (node outputs)."""
    return {o for n in proto.graph.node for o in n.output if o}


def run_ort(proto, feeds: Dict[str, np.ndarray], names: Iterable[str], dtypes: Dict[str, np.dtype],
            level: str = "all") -> Dict[str, np.ndarray]:
    """Run ``proto`` with ONNX Runtime (CPU) and return ``{name: array}`` for ``names``.

    ``level``: 'all' (ORT_ENABLE_ALL, the default: ORT fuses QDQ groups into its
    integer kernels) or 'none' (ORT_DISABLE_ALL: the float graph).
    """
    import onnx
    import onnxruntime as ort
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    names = list(dict.fromkeys(names))
    for nm in names:
        if nm not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(
                nm, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtypes[nm])), None))
    so = ort.SessionOptions()
    so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                   "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[level]
    so.log_severity_level = 3
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    want = {i.name for i in s.get_inputs()}
    out = s.run(names, {k: v for k, v in feeds.items() if k in want})
    return dict(zip(names, out))
