"""Determinism across kernel paths, thread counts and batch splits, at the model level
(the kernel tests compare each op with the reference on every path; test_graph_ort
compares one model with ONNX Runtime on every path). Here: one model's outputs are
the same bytes on every (kernel path, thread count) this machine has, and running a
batch of 8 at once equals running it as 8 x 1, 2 x 4 or 5 + 3 (no result depends on
which rows share a call: per-row requantization, per-image pooling)."""
import numpy as np
import pytest

import pyqinfer

import graph_models as gm

_CACHE = {}
SPLITS = ((8,), (1,) * 8, (4, 4), (5, 3))


def quantized(kind, fmt, tmp_path_factory):
    key = (kind, fmt)
    if key not in _CACHE:
        shape = {"cnn": [1, 3, 16, 16], "mlp_residual": [1, 32], "movement": [1, 3, 8, 8]}[kind]
        _CACHE[key] = gm.quantize(getattr(gm, kind)(), fmt, per_channel=True, act="uint8", shape=shape,
                                  tmpdir=str(tmp_path_factory.mktemp(f"{kind}{fmt}")))
    return _CACHE[key]


def run_split(m, x, split):
    name = m.inputs[0].name
    outs, k = [], 0
    for b in split:
        outs.append(m.run({name: x[k:k + b]}))
        k += b
    return {o: np.concatenate([r[o] for r in outs]) for o in outs[0]}


@pytest.mark.parametrize("kind,fmt", [("cnn", "QOperator"), ("cnn", "QDQ"), ("mlp_residual", "QDQ"),
                                      ("movement", "QDQ")])
def test_same_bytes_on_every_path_thread_count_and_split(kind, fmt, tmp_path_factory, run_everywhere):
    q = quantized(kind, fmt, tmp_path_factory)
    m = pyqinfer.load(q)
    shape = [8] + list(m.inputs[0].shape[1:])
    x = np.random.default_rng(7).normal(0, 1.5, shape).astype(np.float32)

    def all_splits():
        return {split: run_split(m, x, split) for split in SPLITS}

    results = run_everywhere(all_splits)      # {(path, threads): {split: outputs}}
    assert len(results) == 2 * len(pyqinfer.kernel_paths())
    (path0, th0), first = next(iter(results.items()))
    ref = first[SPLITS[0]]
    assert all(v.shape[0] == 8 for v in ref.values())
    for (path, th), by_split in results.items():
        for split, outs in by_split.items():
            for name, v in outs.items():
                assert v.dtype == ref[name].dtype and v.tobytes() == ref[name].tobytes(), (
                    f"{name}: path {path} threads {th} split {split} differs from path {path0} threads {th0} "
                    f"batch 8")
