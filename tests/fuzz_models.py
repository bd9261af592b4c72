"""A deterministic mutator of ONNX models for tests/test_fuzz_loader.py.

``Mutator(seed).mutants(seeds, n)`` yields ``(case id, description, model)`` where
model is bytes (byte-level mutations of the serialized file) or an
``onnx.ModelProto`` (structural mutations). Same seed, same cases, on any machine
(numpy's PCG64 and the protobuf serialization of the seed models are deterministic).

Byte-level: truncation, bit flips, byte overwrites, insertions and deletions, a
chunk duplicated. Structural (1 to 3 per case): graph input/output dims negative,
zero, huge or symbolic; element types swapped (inputs, initializers, Cast targets,
Q/DQ output_dtype); dangling input names; cycles (self loops and back edges);
duplicate producers; huge or invalid attributes (kernel_shape 10^9, pads, strides
0, dilations, group mismatch, axis out of range, perm, blocksize); missing,
resized or re-typed initializers (wrong sizes); scales 0, negative, NaN, inf,
denormal, huge; zero points out of range or of another type; dropped or swapped
inputs; op types and domains changed; nodes dropped or duplicated.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HUGE = (2 ** 31, 2 ** 31 - 1, 10 ** 9, 2 ** 40, 2 ** 62, 2 ** 63 - 1)
BAD_INTS = (0, -1, -2, -(2 ** 31), 2 ** 16 + 1) + HUGE
ELEM_TYPES = (TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, TensorProto.INT64,
              TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BOOL, TensorProto.STRING, TensorProto.INT16,
              TensorProto.UINT16, TensorProto.BFLOAT16, TensorProto.INT4, TensorProto.UINT4, 0, 99)
BAD_FLOATS = (0.0, -0.0, -1.0, -0.1, float("nan"), float("inf"), -float("inf"), 1e-45, 1e-38, 3e38, 1e30)
OPS = ("Conv", "QLinearConv", "MatMul", "Gemm", "Add", "MaxPool", "AveragePool", "Relu", "Clip", "Reshape",
       "Flatten", "Concat", "QuantizeLinear", "DequantizeLinear", "Identity", "Transpose", "Resize", "Pad",
       "GlobalAveragePool", "QLinearMatMul", "Softmax", "Loop", "If", "Scan", "NonZero", "Unknown")


class Mutator:
    def __init__(self, seed: int):
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)

    # --------------------------------------------------------------- helpers
    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def chance(self, p):
        return self.rng.random() < p

    # ------------------------------------------------------------ byte level
    def mutate_bytes(self, data: bytes):
        b = bytearray(data)
        n = len(b)
        kind = self.pick(("truncate", "flip", "flip", "overwrite", "insert", "delete", "dup"))
        if kind == "truncate":
            cut = int(self.rng.integers(0, n))
            return f"truncate at {cut}/{n}", bytes(b[:cut])
        if kind == "flip":
            k = int(self.rng.integers(1, 9))
            pos = self.rng.integers(0, n, k)
            for p in pos:
                b[int(p)] ^= 1 << int(self.rng.integers(8))
            return f"{k} bit flips at {sorted(int(p) for p in pos)[:4]}", bytes(b)
        if kind == "overwrite":
            p = int(self.rng.integers(0, n))
            k = int(self.rng.integers(1, 17))
            b[p:p + k] = self.rng.integers(0, 256, k, dtype=np.uint8).tobytes()[: max(0, n - p)]
            return f"overwrite {k} bytes at {p}", bytes(b)
        if kind == "insert":
            p = int(self.rng.integers(0, n))
            k = int(self.rng.integers(1, 9))
            return f"insert {k} bytes at {p}", bytes(b[:p]) + self.rng.integers(0, 256, k, dtype=np.uint8).tobytes() + bytes(b[p:])
        if kind == "delete":
            p = int(self.rng.integers(0, n))
            k = int(self.rng.integers(1, 9))
            return f"delete {k} bytes at {p}", bytes(b[:p] + b[p + k:])
        p, q = sorted(int(v) for v in self.rng.integers(0, n, 2))
        return f"duplicate bytes {p}:{q}", bytes(b[:q] + b[p:q] + b[q:])

    # ------------------------------------------------------------ structural
    def _names(self, m):
        g = m.graph
        tensors = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {i.name for i in g.initializer}
        return sorted(t for t in tensors if t)

    def m_dims(self, m):
        vis = list(m.graph.input) + list(m.graph.output)
        vi = self.pick(vis)
        dims = vi.type.tensor_type.shape.dim
        if not len(dims):
            return "no dims"
        d = dims[int(self.rng.integers(len(dims)))]
        v = self.pick(("neg", "zero", "huge", "sym", "big"))
        if v == "sym":
            d.dim_param = "fuzz"
            return f"{vi.name} dim symbolic"
        val = {"neg": -int(self.rng.integers(1, 5)), "zero": 0, "huge": int(self.pick(HUGE)),
               "big": int(self.rng.integers(2, 1024))}[v]
        d.dim_value = val
        return f"{vi.name} dim -> {val}"

    def m_elem_type(self, m):
        g = m.graph
        where = self.pick(("input", "output", "init", "cast", "qdtype"))
        t = self.pick(ELEM_TYPES)
        if where == "input" and len(g.input):
            vi = self.pick(list(g.input))
            vi.type.tensor_type.elem_type = t
            return f"input {vi.name} elem_type {t}"
        if where == "output" and len(g.output):
            vi = self.pick(list(g.output))
            vi.type.tensor_type.elem_type = t
            return f"output {vi.name} elem_type {t}"
        if where == "init" and len(g.initializer):
            init = self.pick(list(g.initializer))
            if self.chance(0.5) and t not in (0, 99, TensorProto.STRING):
                # re-encode the values with the new type (a well-formed tensor of another dtype)
                try:
                    arr = numpy_helper.to_array(init)
                    dt = helper.tensor_dtype_to_np_dtype(t)
                    with np.errstate(all="ignore"):
                        new = numpy_helper.from_array(arr.astype(dt), init.name)
                    init.CopyFrom(new)
                    return f"initializer {init.name} recast to {t}"
                except Exception:  # noqa: BLE001 -- types numpy_helper cannot convert: keep raw bytes
                    pass
            init.data_type = t
            return f"initializer {init.name} data_type {t} (raw bytes kept)"
        for n in self._nodes_of(m, ("Cast", "QuantizeLinear", "DequantizeLinear")):
            for a in n.attribute:
                if a.name in ("to", "output_dtype"):
                    a.i = t
                    return f"{n.name} {a.name} -> {t}"
            if n.op_type != "DequantizeLinear":
                n.attribute.append(helper.make_attribute("output_dtype" if n.op_type != "Cast" else "to", t))
                return f"{n.name} output type -> {t}"
        return "no element type to change"

    def _nodes_of(self, m, ops):
        nodes = [n for n in m.graph.node if n.op_type in ops]
        self.rng.shuffle(nodes)
        return nodes

    def m_dangling(self, m):
        nodes = [n for n in m.graph.node if len(n.input)]
        if not nodes:
            return "no node inputs"
        n = self.pick(nodes)
        k = int(self.rng.integers(len(n.input)))
        n.input[k] = self.pick(("nonexistent", "", n.input[k] + "_x"))
        return f"{n.name} input {k} -> {n.input[k]!r}"

    def m_graph_io(self, m):
        g = m.graph
        v = self.pick(("dangling_out", "drop_out", "drop_in", "dup_out", "out_is_input", "out_is_init"))
        if v == "dangling_out" and len(g.output):
            g.output[0].name = "nowhere"
        elif v == "drop_out" and len(g.output):
            del g.output[0]
        elif v == "drop_in" and len(g.input):
            del g.input[0]
        elif v == "dup_out" and len(g.output):
            g.output.append(g.output[0])
        elif v == "out_is_input" and len(g.output) and len(g.input):
            g.output[0].name = g.input[0].name
        elif v == "out_is_init" and len(g.output) and len(g.initializer):
            g.output[0].name = self.pick(list(g.initializer)).name
        return f"graph io: {v}"

    def m_cycle(self, m):
        nodes = list(m.graph.node)
        if len(nodes) < 2:
            return "too few nodes"
        i, j = sorted(int(v) for v in self.rng.choice(len(nodes), 2, replace=False))
        a, b = nodes[i], nodes[j]
        if not len(a.input) or not len(b.output):
            return "no edge"
        if self.chance(0.3):
            a.input[0] = a.output[0]          # self loop
            return f"self loop on {a.name}"
        a.input[0] = b.output[0]              # back edge: a (earlier) reads b (later)
        return f"cycle {a.name} <- {b.name}"

    def m_dup_producer(self, m):
        nodes = list(m.graph.node)
        if len(nodes) < 2:
            return "too few nodes"
        a, b = (nodes[int(v)] for v in self.rng.choice(len(nodes), 2, replace=False))
        b.output[0] = a.output[0]
        return f"{b.name} also produces {a.output[0]}"

    def m_attr(self, m):
        nodes = [n for n in m.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")] or list(m.graph.node)
        if not nodes:
            return "no nodes"
        n = self.pick(nodes)
        name = self.pick(("kernel_shape", "pads", "strides", "dilations", "group", "axis", "perm", "blocksize",
                          "transB", "transA", "alpha", "beta", "auto_pad", "ceil_mode", "count_include_pad",
                          "allowzero", "mode", "channels_last", "min", "max", "axes", "storage_order"))
        ints_len = {"kernel_shape": 2, "pads": 4, "strides": 2, "dilations": 2, "perm": 4, "axes": 1}
        if name in ints_len:
            ln = ints_len[name] + int(self.rng.integers(-1, 2))
            vals = [int(self.pick(BAD_INTS + (1, 2, 3))) for _ in range(max(ln, 1))]
            attr = helper.make_attribute(name, vals)
        elif name in ("alpha", "beta", "min", "max"):
            attr = helper.make_attribute(name, float(self.pick(BAD_FLOATS + (1.0, 2.0))))
        elif name in ("auto_pad", "mode"):
            attr = helper.make_attribute(name, self.pick(("SAME_UPPER", "VALID", "SAME_LOWER", "NOTSET", "bogus",
                                                          "linear", "nearest", "reflect", "edge", "CRD", "")))
        else:
            attr = helper.make_attribute(name, int(self.pick(BAD_INTS + (1, 2, 3, 4, 8))))
        for k, a in enumerate(n.attribute):
            if a.name == name:
                del n.attribute[k]
                break
        n.attribute.append(attr)
        return f"{n.name} attr {name}={helper.get_attribute_value(attr)!r}"

    def m_drop_init(self, m):
        g = m.graph
        if not len(g.initializer):
            return "no initializer"
        k = int(self.rng.integers(len(g.initializer)))
        name = g.initializer[k].name
        del g.initializer[k]
        return f"initializer {name} removed"

    def m_resize_init(self, m):
        g = m.graph
        if not len(g.initializer):
            return "no initializer"
        init = self.pick(list(g.initializer))
        arr = numpy_helper.to_array(init)
        v = self.pick(("truncate", "grow", "reshape", "dims_only", "scalar", "empty"))
        if v == "dims_only":
            del init.dims[:]
            init.dims.extend([int(self.rng.integers(0, 5)) for _ in range(int(self.rng.integers(0, 4)))])
            return f"initializer {init.name} dims -> {list(init.dims)} (data kept)"
        flat = arr.reshape(-1)
        if v == "truncate":
            new = flat[: max(0, flat.size - int(self.rng.integers(1, 4)))]
        elif v == "grow":
            new = np.concatenate([flat, flat[:3]]) if flat.size else np.zeros(3, arr.dtype)
        elif v == "reshape":
            new = flat.reshape(-1, 1) if flat.size else flat.reshape(0, 2)
        elif v == "scalar":
            new = np.asarray(flat[0] if flat.size else 0, arr.dtype)
        else:
            new = np.zeros((0,) + arr.shape[1:], arr.dtype)
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(new), init.name))
        return f"initializer {init.name} {v} {arr.shape} -> {new.shape}"

    def _scale_inits(self, m):
        g = m.graph
        return [i for i in g.initializer if i.data_type == TensorProto.FLOAT and ("scale" in i.name.lower()
                or i.name.endswith(("xs", "ws", "ys", "_s")) or len(i.dims) <= 1)]

    def m_scale(self, m):
        cands = self._scale_inits(m)
        if not cands:
            return "no scale"
        init = self.pick(cands)
        arr = numpy_helper.to_array(init).copy()
        v = np.float32(self.pick(BAD_FLOATS))
        if arr.size:
            arr.reshape(-1)[int(self.rng.integers(arr.size))] = v
        init.CopyFrom(numpy_helper.from_array(arr, init.name))
        return f"scale {init.name} element -> {v}"

    def m_zero_point(self, m):
        g = m.graph
        cands = [i for i in g.initializer if i.data_type in (TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32)
                 and ("zero" in i.name.lower() or i.name.endswith("z") or numpy_helper.to_array(i).size <= 64)]
        if not cands:
            return "no zero point"
        init = self.pick(cands)
        arr = numpy_helper.to_array(init)
        val = int(self.pick((256, -129, 300, -1, 2 ** 31 - 1, -(2 ** 31), 1000, 128, 255, -128, 127)))
        dt = self.pick((np.int32, np.int64, np.int16, np.uint16, arr.dtype))
        with np.errstate(all="ignore"):
            new = np.full(arr.shape, val).astype(dt)
        init.CopyFrom(numpy_helper.from_array(new, init.name))
        return f"zero point {init.name} -> {val} as {np.dtype(dt).name}"

    def m_node(self, m):
        g = m.graph
        if not len(g.node):
            return "no nodes"
        k = int(self.rng.integers(len(g.node)))
        n = g.node[k]
        v = self.pick(("drop", "dup", "op", "domain", "swap_inputs", "drop_input", "extra_input", "extra_output"))
        if v == "drop":
            del g.node[k]
        elif v == "dup":
            c = g.node.add()
            c.CopyFrom(n)
        elif v == "op":
            n.op_type = self.pick(OPS)
        elif v == "domain":
            n.domain = self.pick(("com.microsoft", "ai.onnx.ml", "bogus", "ai.onnx"))
        elif v == "swap_inputs" and len(n.input) >= 2:
            i, j = (int(x) for x in self.rng.choice(len(n.input), 2, replace=False))
            n.input[i], n.input[j] = n.input[j], n.input[i]
        elif v == "drop_input" and len(n.input):
            del n.input[int(self.rng.integers(len(n.input)))]
        elif v == "extra_input":
            n.input.append(self.pick(self._names(m)) if self._names(m) else "x")
        elif v == "extra_output":
            n.output.append(f"extra_{k}")
        return f"node {n.name} ({n.op_type}): {v}"

    def m_opset(self, m):
        o = m.opset_import[0] if len(m.opset_import) else m.opset_import.add()
        o.version = int(self.pick((1, 6, 10, 13, 17, 21, 22, 99, 0, -1)))
        if self.chance(0.2):
            m.ir_version = int(self.pick((0, 3, 99)))
        return f"opset {o.version}"

    STRUCT = ("m_dims", "m_dims", "m_elem_type", "m_dangling", "m_graph_io", "m_cycle", "m_dup_producer",
              "m_attr", "m_attr", "m_attr", "m_drop_init", "m_resize_init", "m_resize_init", "m_scale", "m_scale",
              "m_zero_point", "m_zero_point", "m_node", "m_node", "m_opset")

    def mutate_struct(self, model: onnx.ModelProto):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        k = int(self.rng.integers(1, 4))
        what = []
        for _ in range(k):
            fn = getattr(self, self.pick(self.STRUCT))
            try:
                what.append(fn(m))
            except Exception as e:  # noqa: BLE001 -- an earlier mutation left nothing this one can read
                what.append(f"{fn.__name__} skipped ({type(e).__name__})")
        return "; ".join(what), m

    def mutants(self, seeds, n, start=0):
        """Cases start .. start+n-1 over the seed models: (case index, seed name, description,
        bytes or ModelProto). Case i depends only on (seed, i), so any case can be
        regenerated alone: ``next(Mutator(seed).mutants(seeds, 1, start=i))``."""
        blobs = {name: m.SerializeToString() for name, m in seeds.items()}
        names = sorted(seeds)
        for case in range(start, start + n):
            self.rng = np.random.default_rng([self.seed, case])
            name = names[case % len(names)]
            if self.chance(0.35):
                what, mut = self.mutate_bytes(blobs[name])
            else:
                what, mut = self.mutate_struct(seeds[name])
            yield case, name, what, mut


def ort_outputs(data: bytes, feeds):
    """ONNX Runtime's outputs {name: array} for a serialized model, or None when it
    refuses it. Runs in the OrtWorker's process (ONNX Runtime itself can crash on
    a malformed model; that must not take the fuzzing process with it)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.intra_op_num_threads = 1
    try:
        s = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        names = [o.name for o in s.get_outputs()]
        return dict(zip(names, s.run(names, feeds)))
    except Exception:  # noqa: BLE001 -- ORT's own rejection of a malformed model
        return None


class OrtWorker:
    """ONNX Runtime in a separate (spawned) process, restarted when it crashes or hangs."""

    def __init__(self, timeout=60.0):
        import multiprocessing as mp
        self.ctx = mp.get_context("spawn")
        self.timeout = timeout
        self.crashes = 0
        self.pool = None

    def _pool(self):
        from concurrent.futures import ProcessPoolExecutor
        if self.pool is None:
            self.pool = ProcessPoolExecutor(1, mp_context=self.ctx)
        return self.pool

    def run(self, data, feeds):
        """(outputs or None, crashed?)"""
        from concurrent.futures import TimeoutError as FutTimeout
        from concurrent.futures.process import BrokenProcessPool
        try:
            return self._pool().submit(ort_outputs, data, feeds).result(timeout=self.timeout), False
        except (BrokenProcessPool, FutTimeout):
            self.crashes += 1
            self.close()
            return None, True

    def close(self):
        if self.pool is not None:
            for p in list(getattr(self.pool, "_processes", {}).values()):
                p.kill()
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
