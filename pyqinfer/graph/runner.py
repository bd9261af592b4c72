"""The runner: :class:`Model` loads, plans once and runs a quantized model.

>>> import pyqinfer                                          # doctest: +SKIP
>>> m = pyqinfer.load("model.onnx")                          # doctest: +SKIP
>>> m.inputs                                                 # doctest: +SKIP
[IOInfo(name='input', dtype=dtype('float32'), shape=('N', 3, 32, 32))]
>>> y = m(x)          # single-input models; m.run({"input": x}) returns a dict  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..ops._checks import check_alloc
from .ir import Graph
from .planner import NCHW, NHWC, Plan, _layout_of


@dataclass(frozen=True)
class IOInfo:
    """A model input or output: ``shape`` has ints, a str for a free (symbolic)
    dimension such as the batch, or None where unknown."""
    name: str
    dtype: np.dtype
    shape: Optional[Tuple]



def _step_args(vals, ins, perms):
    """A step's input arrays, each transposed into the layout the step wants (4-D only)."""
    args = []
    for i, p in zip(ins, perms):
        v = vals[i]
        if p is not None and v.ndim == 4:
            v = np.ascontiguousarray(v.transpose(p))
        args.append(v)
    return args

class Model:
    """A loaded, planned model. Create with :func:`pyqinfer.load`.

    ``model``: a path, bytes or ``onnx.ModelProto``. Options:

    * ``add_rule``: override the quantized-add rule of every QLinearAdd:
      ``"onnxruntime"`` (default, ONNX Runtime's fused kernel), ``"onnx"`` (the
      ONNX reference: dequantize, float32 add, quantize), ``"tflite"``, ``"xnnpack"``.
    * ``layout``: ``"auto"`` (convolutions and pools chain in NHWC) or ``"NCHW"``
      (every op converts in and out; for measuring the difference).
    """

    def __init__(self, model, *, add_rule: Optional[str] = None, layout: str = "auto"):
        if isinstance(model, Graph):
            graph = model
        else:
            from ..frontends.onnx import import_onnx
            graph = import_onnx(model)
        graph.check()
        self.graph = graph
        self.plan = Plan(graph, add_rule=add_rule, layout=layout)
        self._steps = self.plan.steps
        # the run loop's per-step data: (step, input slots, transposes to apply, output slot, slots to free)
        lay = self.plan.layouts
        self._loop = []
        for st in self._steps:
            names = [x for x in st.node.inputs if x]
            perms = tuple(None if lay[nm] == want else ((0, 2, 3, 1) if want == NHWC else (0, 3, 1, 2))
                          for nm, want in zip(names, st.in_layouts))
            self._loop.append((st, tuple(st.ins), perms, st.outs[0], tuple(st.free_after), len(st.outs) > 1))
        # the same, for runs whose input shapes have been seen: a single input needing no
        # transpose is passed as its slot (the common step)
        self._warm_loop = [(st, ins[0] if len(ins) == 1 and perms[0] is None else ins, perms, out, frees, multi,
                            len(ins) == 1 and perms[0] is None) for st, ins, perms, out, frees, multi in self._loop]
        self._warm = set()        # input-shape tuples a full (non-recording) run has completed
        self.inputs: List[IOInfo] = [IOInfo(i, graph.tensors[i].dtype, graph.tensors[i].shape) for i in graph.inputs]
        self._infer_shapes()
        self.outputs: List[IOInfo] = [IOInfo(o, graph.tensors[o].dtype, graph.tensors[o].shape) for o in graph.outputs]

    # ------------------------------------------------------------------ shapes
    def _infer_shapes(self):
        """Shapes of every tensor by one run at batch 1 on zero inputs (symbolic dims -> 1).
        Also validates the plan at load. Output shapes keep the inputs' symbolic batch
        dimension where a second run at batch 2 shows it is free."""
        self.shapes: Dict[str, tuple] = {}
        feeds = {}
        for io in self.inputs:
            if io.shape is None:
                return
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in io.shape]
            check_alloc(f"input {io.name!r}", shape, io.dtype.itemsize)
            feeds[io.name] = np.zeros(shape, io.dtype)
        vals = self._execute(feeds, record=True)
        for name, slot in self.plan.slot.items():
            v = vals[slot] if slot < len(vals) else None
            if isinstance(v, np.ndarray):
                lay = self.plan.layouts.get(name, NCHW)
                self.shapes[name] = tuple(_layout_of(v, lay, NCHW).shape) if lay == NHWC and v.ndim == 4 else v.shape
        sym = [io for io in self.inputs if io.shape and isinstance(io.shape[0], str) or
               (io.shape and io.shape[0] is None)]
        batch_names = {io.shape[0] for io in sym}
        for name in self.graph.outputs + list(self.graph.tensors):
            t = self.graph.tensors.get(name)
            if t is None or name not in self.shapes:
                continue
            shp = self.shapes[name]
            if sym and len(batch_names) == 1 and len(shp) >= 1 and shp[0] == 1 and not (
                    name in self.graph.inputs):
                t.shape = (next(iter(batch_names)) or "N",) + tuple(shp[1:])
            elif name not in self.graph.inputs:
                t.shape = shp

    # ------------------------------------------------------------------ running
    def _check_feeds(self, feeds):
        if not isinstance(feeds, dict):
            raise TypeError(f"run() takes a dict {{input name: numpy array}}, got {type(feeds).__name__}")
        names = [io.name for io in self.inputs]
        unknown = [k for k in feeds if k not in names]
        missing = [k for k in names if k not in feeds]
        if unknown or missing:
            raise ValueError(f"inputs must be exactly {names}; " +
                             (f"unknown: {unknown}. " if unknown else "") + (f"missing: {missing}" if missing else ""))
        out = {}
        for io in self.inputs:
            x = feeds[io.name]
            if not isinstance(x, np.ndarray):
                raise TypeError(f"input {io.name!r} must be a numpy array, got {type(x).__name__}")
            if x.dtype != io.dtype:
                raise TypeError(f"input {io.name!r} must have dtype {io.dtype}, got {x.dtype}")
            if io.shape is not None:
                if x.ndim != len(io.shape) or any(isinstance(d, int) and d > 0 and d != s
                                                  for d, s in zip(io.shape, x.shape)):
                    raise ValueError(f"input {io.name!r} must have shape {self._fmt_shape(io.shape)}, got {x.shape}")
            if x.size == 0:
                raise ValueError(f"input {io.name!r} is empty (shape {x.shape})")
            out[io.name] = np.ascontiguousarray(x)
        return out

    @staticmethod
    def _fmt_shape(shape):
        return "(" + ", ".join(str(d) if d is not None else "?" for d in shape) + ")"

    def _execute(self, feeds, record=False):
        plan = self.plan
        vals = [None] * plan.n_slots
        for slot, v in plan.const_vals:
            vals[slot] = v
        for name, slot in zip(self.graph.inputs, plan.input_slots):
            vals[slot] = feeds[name]
        # Input shapes a full run has already seen: every step has validated its shapes
        # (they follow from the inputs' shapes), so the loop skips the per-step check
        warm_key = tuple(feeds[name].shape for name in self.graph.inputs)
        if not record and warm_key in self._warm:
            return self._execute_warm(vals)
        for st, ins, perms, out, frees, multi in self._loop:
            if len(ins) == 1:
                v = vals[ins[0]]
                p = perms[0]
                if p is not None and v.ndim == 4:
                    v = np.ascontiguousarray(v.transpose(p))
                key = v.shape
                if key in st.seen:
                    vals[out] = st.fast(v)
                else:
                    vals[out] = st.slow(v)
                    st.seen.add(key)
            else:
                args = _step_args(vals, ins, perms)
                key = tuple(a.shape for a in args)
                if key in st.seen:
                    vals[out] = st.fast(*args)
                else:
                    vals[out] = st.slow(*args)
                    st.seen.add(key)
            if multi:
                for slot, v in zip(st.outs, vals[out]):
                    vals[slot] = v
            if frees and not record:
                for i in frees:
                    vals[i] = None
        self._warm.add(warm_key)
        return vals

    def _execute_warm(self, vals):
        """The run loop once every step has seen these shapes: fast paths only."""
        for st, ins, perms, out, frees, multi, single in self._warm_loop:
            if single:                        # one input already in the step's layout
                vals[out] = st.fast(vals[ins])
            else:
                vals[out] = st.fast(*_step_args(vals, ins, perms))
            if multi:
                for slot, v in zip(st.outs, vals[out]):
                    vals[slot] = v
            for i in frees:
                vals[i] = None
        return vals

    def run(self, feeds: Dict[str, np.ndarray], outputs: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
        """Run the model: ``feeds`` maps every input name to a numpy array of the
        input's dtype and shape (free dimensions such as the batch may take any
        size). Returns ``{output name: array}`` in the ONNX layout. ``outputs`` may
        also name intermediate tensors (for per-layer comparisons)."""
        feeds = self._check_feeds(feeds)
        names = self.graph.outputs if outputs is None else list(outputs)
        vals = self._execute(feeds, record=any(o not in self.graph.outputs for o in names))
        res = {}
        for name in names:
            if name not in self.plan.slot:
                raise ValueError(f"{name!r} is not a tensor of this model")
            v = vals[self.plan.slot[name]]
            if v is None:
                raise ValueError(f"{name!r} is not kept after the run; ask for a graph output")
            res[name] = _layout_of(v, self.plan.layouts.get(name, NCHW), NCHW)
        return res

    def __call__(self, *args):
        if len(self.inputs) != 1 or len(args) != 1:
            raise TypeError(f"Model(x) needs a single-input model and one array; this model has inputs "
                            f"{[i.name for i in self.inputs]}: use run({{name: array}})")
        out = self.run({self.inputs[0].name: args[0]})
        return out[self.graph.outputs[0]] if len(out) == 1 else out

    # ------------------------------------------------------------------ memory
    def memory(self, batch: int = 1) -> dict:
        """Memory of one run at ``batch`` (free leading dimensions set to it), in bytes:

        * ``weights``: the model's resident constants (packed weights, biases, tables,
          constant tensors), allocated once at load;
        * ``inputs``: the input arrays of that run;
        * ``planned_peak``: the planner's estimate, the largest sum of the tensors alive
          at one step (inputs, intermediates not yet freed, the step's outputs) with the
          shapes of a run at ``batch``;
        * ``measured_peak``: the inputs plus the peak of the numpy buffers allocated
          during one real run on zero inputs, measured with :mod:`tracemalloc` (numpy
          reports its data buffers to it; layout transposes and op temporaries
          included; the kernels' own C++ scratch, a few hundred KiB per thread at
          most, is not).

        ``pyqinfer inspect`` prints them (tests/test_memory.py checks them)."""
        import tracemalloc
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        feeds = {}
        for io in self.inputs:
            if io.shape is None:
                raise ValueError(f"input {io.name!r} has an unknown shape; memory() needs every input shape")
            feeds[io.name] = np.zeros([d if isinstance(d, int) and d > 0 else batch for d in io.shape], io.dtype)
        weights = sum(int(v.nbytes) for v in self.graph.constants.values())
        for st in self._steps:
            weights += int(st.info.get("weight_bytes", 0))
        was_tracing = tracemalloc.is_tracing()
        if not was_tracing:
            tracemalloc.start()
        try:
            self.run(feeds)     # first call at this shape: validating path, caches filled
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            self.run(feeds)
            measured = tracemalloc.get_traced_memory()[1] - base
        finally:
            if not was_tracing:
                tracemalloc.stop()
        inputs = sum(int(v.nbytes) for v in feeds.values())
        return {"batch": batch, "weights": weights, "inputs": inputs,
                "planned_peak": self._planned_peak(batch), "measured_peak": inputs + int(measured)}

    def _planned_peak(self, batch):
        """Largest sum of live tensor bytes over the steps (shapes from the batch-1 shape
        inference, the leading dimension scaled to ``batch`` for batch-free tensors)."""
        nbytes = {}
        for name, slot in self.plan.slot.items():
            shp = self.shapes.get(name)
            t = self.graph.tensors.get(name)
            if shp is None or t is None:
                continue
            n = int(np.prod(shp, dtype=np.int64)) * t.dtype.itemsize
            if isinstance(t.shape, tuple) and t.shape and isinstance(t.shape[0], str):
                n *= batch
            nbytes[slot] = n
        consts = {s for s, _ in self.plan.const_vals}
        live = {s for s in self.plan.input_slots}
        peak = cur = sum(nbytes.get(s, 0) for s in live)
        for st in self._steps:
            for o in st.outs:
                if o not in live and o not in consts:
                    live.add(o)
                    cur += nbytes.get(o, 0)
            peak = max(peak, cur)
            for i in st.free_after:
                if i in live:
                    live.discard(i)
                    cur -= nbytes.get(i, 0)
        return int(peak)

    # ------------------------------------------------------------------ inspect
    def layers(self) -> List[dict]:
        """One record per planned step: name, kind, source op, dtypes, schemes,
        weight bytes, MACs at batch 1, kernel, layout, whether it runs as a numpy float op."""
        recs = []
        for st in self._steps:
            n = st.node
            x = self.graph.tensors.get(n.inputs[0]) if n.inputs else None
            y = self.graph.tensors.get(n.outputs[0])
            yshape = self.shapes.get(n.outputs[0])
            macs = 0
            if "macs_per_out" in st.info and yshape is not None:
                macs = int(np.prod(yshape, dtype=np.int64)) * st.info["macs_per_out"]
            recs.append({
                "name": n.name, "kind": n.kind if n.kind != "FloatOp" else f"FloatOp:{n.attrs['op']}",
                "in": f"{x.dtype.name}" + (f" {x.quant.describe()}" if x is not None and x.quant else "") if x else "",
                "out": f"{y.dtype.name}" + (f" {y.quant.describe()}" if y is not None and y.quant else "") if y else "",
                "out_shape": yshape, "weights": st.info.get("weights", ""),
                "weight_bytes": st.info.get("weight_bytes", 0), "macs": macs, "kernel": st.kernel,
                "layout": st.out_layout, "numpy_float": st.numpy_float, "exact": st.exact,
                "fused": n.attrs.get("fused"), "rule": st.info.get("rule"),
            })
        return recs

    def summary(self) -> str:
        """A human-readable table of :meth:`layers`."""
        recs = self.layers()
        lines = [f"model {self.graph.name}  ({self.graph.meta.get('format', '?')}, opset "
                 f"{self.graph.meta.get('opset', '?')}, {self.graph.meta.get('producer', '')})"]
        for io in self.inputs:
            lines.append(f"  input  {io.name}: {io.dtype.name} {self._fmt_shape(io.shape or ())}")
        for io in self.outputs:
            lines.append(f"  output {io.name}: {io.dtype.name} {self._fmt_shape(io.shape or ())}")
        hdr = (f"{'#':>3} {'layer':<24} {'kind':<24} {'in -> out':<17} {'out shape':<16} {'weights':<19} "
               f"{'w bytes':>8} {'MACs':>10}  kernel")
        lines.append(hdr)
        tot_b = tot_m = 0
        for k, r in enumerate(recs):
            tot_b += r["weight_bytes"]
            tot_m += r["macs"]
            io = f"{r['in'].split(' ')[0]} -> {r['out'].split(' ')[0]}".replace("uint8", "u8").replace(
                "int8", "i8").replace("float32", "f32").replace("int32", "i32")
            shp = "x".join(str(d) for d in r["out_shape"]) if r["out_shape"] is not None else "?"
            extra = []
            if r["fused"]:
                extra.append("fused " + ", ".join(r["fused"]))
            if r["rule"]:
                extra.append(f"rule {r['rule']}")
            if r["numpy_float"]:
                extra.append("NUMPY FLOAT" + ("" if r["exact"] else ", not bit-exact"))
            kern = r["kernel"] + (f" [{'; '.join(extra)}]" if extra else "")
            lines.append(f"{k:>3} {r['name'][:24]:<24} {r['kind'][:24]:<24} {io:<17} {shp:<16} {r['weights'][:19]:<19} "
                         f"{r['weight_bytes']:>8} {r['macs']:>10}  {kern}")
        lines.append(f"total: {len(recs)} steps, {tot_b} weight bytes, {tot_m} MACs at batch 1; "
                     f"{sum(r['numpy_float'] for r in recs)} numpy float ops")
        return "\n".join(lines)

    def __repr__(self):
        return (f"Model({self.graph.name!r}, inputs={[(i.name, i.dtype.name, i.shape) for i in self.inputs]}, "
                f"outputs={[(o.name, o.dtype.name, o.shape) for o in self.outputs]}, {len(self._steps)} steps)")
