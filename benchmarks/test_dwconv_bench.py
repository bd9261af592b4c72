"""Depthwise 3x3 convolution (MobileNetV2-like layers, batch 1): pyqinfer's
depthwise kernel against ONNX Runtime QLinearConv with group = C.

As a pytest-benchmark suite (grouped by layer)::

    pytest benchmarks/test_dwconv_bench.py --benchmark-only --benchmark-columns=median,ops,rounds

As a script, one run printing GOP/s and ratios for threads 1 and 2 (interleaved
median timing, pyqinfer.bench.timing)::

    python benchmarks/test_dwconv_bench.py [--threads 1 2] [--target-seconds 0.5]

Engines: ``pyq`` (NHWC in, NHWC out, weights packed once, fp32 requant with
per-channel scales, uint8 x, int8 w); ``pyq_madd16`` (the same call with the
row-quad kernel switched off: the previous madd16 kernel, an A/B in one run);
``ort_nchw`` (standard QLinearConv, NCHW in and out; ORT may insert its own NHWC
layout transforms); ``ort_nhwc`` (com.microsoft.QLinearConv channels_last=1, ORT's NHWC contrib op, no layout
conversion). The outputs of every engine are checked equal first (fp32 mode is
bit-exact with ORT). Ratios are against the faster ORT variant.
"""
import argparse
import sys

import numpy as np
import pytest

import pyqinfer
from conftest import cached_engines
from pyqinfer.bench import ort
from pyqinfer.bench.timing import time_interleaved
from pyqinfer.ops import _dwconv as D

# (C, H, W, stride): MobileNetV2 depthwise 3x3 layers; pads 1 all around.
LAYERS = [(144, 56, 56, 1), (192, 28, 28, 1), (384, 14, 14, 1), (960, 7, 7, 1), (144, 56, 56, 2), (576, 14, 14, 2)]


class DwLayer:
    def __init__(self, C, H, W, stride, seed=0):
        rng = np.random.default_rng(seed)
        self.C, self.H, self.W, self.stride = C, H, W, stride
        self.x = rng.integers(0, 256, (1, H, W, C), dtype=np.int64).astype(np.uint8)  # NHWC
        self.w = rng.integers(-127, 128, (C, 1, 3, 3), dtype=np.int64).astype(np.int8)
        self.bias = rng.integers(-2000, 2000, C, dtype=np.int64).astype(np.int32)
        self.x_s, self.x_zp = np.float32(0.05), np.uint8(128)
        self.w_s = (0.002 + 0.002 * rng.random(C)).astype(np.float32)
        self.y_s, self.y_zp = np.float32(0.2), np.uint8(100)
        self.OH = (H + 2 - 3) // stride + 1
        self.OW = (W + 2 - 3) // stride + 1
        self.ops = 2 * self.OH * self.OW * C * 9

    def name(self):
        return f"{self.C}ch_{self.H}x{self.W}_s{self.stride}"

    def pyq(self):
        pw = D.pack_depthwise_weights(self.w, np.int8(0))
        rq = D.derive_requant("fp32", self.x_s, self.w_s, self.y_s, self.C)
        x, s = self.x, (self.stride, self.stride)
        return lambda: D.depthwise_conv_nhwc(x, 128, pw, self.bias, "uint8", rq, 100, 0, 255, None, s,
                                             (1, 1, 1, 1), (1, 1))

    def _ort(self, threads, channels_last):
        import onnx
        import onnxruntime as rt
        from onnx import helper, numpy_helper

        C = self.C
        inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in [
            ("x_scale", self.x_s), ("x_zero_point", self.x_zp), ("w", self.w), ("w_scale", self.w_s),
            ("w_zero_point", np.zeros(C, np.int8)), ("y_scale", self.y_s), ("y_zero_point", self.y_zp),
            ("B", self.bias)]]
        attrs = dict(group=C, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[self.stride] * 2)
        if channels_last:
            node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point",
                                                    "y_scale", "y_zero_point", "B"], ["y"], domain="com.microsoft",
                                    channels_last=1, **attrs)
            xin, yshape = self.x, [1, self.OH, self.OW, C]
        else:
            node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point",
                                                    "y_scale", "y_zero_point", "B"], ["y"], **attrs)
            xin, yshape = np.ascontiguousarray(self.x.transpose(0, 3, 1, 2)), [1, C, self.OH, self.OW]
        graph = helper.make_graph(
            [node], "dw", [helper.make_tensor_value_info("x", onnx.TensorProto.UINT8, list(xin.shape))],
            [helper.make_tensor_value_info("y", onnx.TensorProto.UINT8, yshape)], inits)
        opsets = [helper.make_opsetid("", ort.OPSET), helper.make_opsetid("com.microsoft", 1)]
        model = helper.make_model(graph, opset_imports=opsets)
        so = rt.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = rt.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        feed = {"x": xin}
        if channels_last:
            return lambda: sess.run(None, feed)[0]
        return lambda: sess.run(None, feed)[0]  # NCHW

    def pyq_madd16(self):
        """The same call with the row-quad kernel switched off (the AVX-512BW madd16
        kernel on this path), for the A/B columns; restores the switch."""
        f = self.pyq()

        def run():
            pyqinfer._core.set_dw_quad_enabled(False)
            try:
                return f()
            finally:
                pyqinfer._core.set_dw_quad_enabled(True)
        return run

    def engines(self, threads, with_ort=True):
        fns = {"pyq": self.pyq(), "pyq_madd16": self.pyq_madd16()}
        if with_ort:
            fns["ort_nchw"] = self._ort(threads, False)
            try:
                fns["ort_nhwc"] = self._ort(threads, True)
            except Exception as e:  # noqa: BLE001 - the contrib op is optional
                print(f"# ort_nhwc unavailable: {type(e).__name__}: {str(e)[:100]}", file=sys.stderr)
        return fns

    def check(self, fns):
        """Every engine computes the same bits (NHWC)."""
        want = fns["pyq"]()
        for name, fn in fns.items():
            got = fn()
            if name == "ort_nchw":
                got = got.transpose(0, 2, 3, 1)
            if not np.array_equal(got, want):
                raise AssertionError(f"{self.name()}: {name} differs from pyq in {(got != want).sum()} outputs")


# ----------------------------------------------------------------------------- pytest-benchmark

ENGINES = ["pyq", "pyq_madd16", pytest.param("ort_nchw", marks=pytest.mark.ort), pytest.param("ort_nhwc", marks=pytest.mark.ort)]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("layer", LAYERS, ids=lambda l: f"{l[0]}ch_{l[1]}x{l[2]}_s{l[3]}")
def test_dwconv(benchmark, layer, engine, pyq_threads):
    def build():
        lay = DwLayer(*layer)
        fns = lay.engines(pyq_threads, with_ort=ort.available())
        lay.check(fns)
        return lay, fns

    lay, fns = cached_engines(("dwconv", layer, pyq_threads), build)
    if engine not in fns:
        pytest.skip(f"{engine} unavailable")
    benchmark.group = f"dwconv {lay.name()} threads={pyq_threads}"
    benchmark.extra_info.update(C=lay.C, H=lay.H, W=lay.W, stride=lay.stride, threads=pyq_threads, ops=lay.ops)
    benchmark(fns[engine])


# ----------------------------------------------------------------------------- script

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--target-seconds", type=float, default=0.5)
    args = ap.parse_args(argv)
    with_ort = ort.available()
    print(f"# pyqinfer {pyqinfer._core.dw_kernel_name()}, onnxruntime {ort.version()}; GOP/s = 2*OH*OW*C*9 / median")
    print(f"{'layer':<18} {'thr':>3} {'pyq us':>9} {'pyq GOP/s':>9} {'madd16 us':>9} {'ortNCHW us':>10} "
          f"{'ortNHWC us':>10} {'ort best GOP/s':>14} {'ratio':>6} {'madd16 ratio':>12}")
    old = pyqinfer.get_num_threads()
    try:
        for threads in args.threads:
            pyqinfer.set_num_threads(threads)
            for layer in LAYERS:
                lay = DwLayer(*layer)
                fns = lay.engines(threads, with_ort)
                lay.check(fns)
                t = time_interleaved(fns, target_seconds=args.target_seconds)
                us = {k: v["median"] * 1e6 for k, v in t.items()}
                ort_best = min((us[k] for k in ("ort_nchw", "ort_nhwc") if k in us), default=float("nan"))
                print(f"{lay.name():<18} {threads:>3} {us['pyq']:9.1f} {lay.ops / us['pyq'] / 1e3:9.1f} "
                      f"{us['pyq_madd16']:9.1f} {us.get('ort_nchw', float('nan')):10.1f} "
                      f"{us.get('ort_nhwc', float('nan')):10.1f} {lay.ops / ort_best / 1e3:14.1f} "
                      f"{ort_best / us['pyq']:6.2f} {ort_best / us['pyq_madd16']:12.2f}", flush=True)
    finally:
        pyqinfer.set_num_threads(old)


if __name__ == "__main__":
    main()
