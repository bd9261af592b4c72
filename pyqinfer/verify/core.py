"""The ``verify`` driver: run the engine with every intermediate, then compare each
layer with the contract, the float reference and ONNX Runtime (docs/verify.md)."""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from .contract import NoContract, contract
from .exact import classify, fmt, rne_fraction
from .floatref import FloatReference, NoFloatReference
from . import ortref

SCHEMA = "pyqinfer.verify/1"
HIST_MAX = 8          # histogram bins: differences -8..8 in LSB, beyond that in the end bins
MAX_CLASSIFY = 200_000  # mismatches classified exactly per layer (the rest are counted 'unclassified')
MAX_EXAMPLES = 5


# ----------------------------------------------------------------- inputs

def random_inputs(model, seed: int = 0, batch: int = 1) -> Dict[str, np.ndarray]:
    """Random inputs of the model's dtypes and shapes (free leading dimension = ``batch``,
    other free dimensions 1). A float input that feeds a QuantizeLinear is drawn uniformly
    over that quantizer's representable range widened by 5% on each side (so saturation
    is exercised too); other float inputs are N(0, 1); integer inputs uniform over the dtype."""
    rng = np.random.default_rng(seed)
    g = model.graph
    cons = g.consumers()
    feeds = {}
    for io in model.inputs:
        if io.shape is None:
            raise ValueError(f"input {io.name!r} has no shape in the model; give --inputs")
        shape = [d if isinstance(d, int) and d > 0 else (batch if k == 0 else 1) for k, d in enumerate(io.shape)]
        dt = np.dtype(io.dtype)
        if dt.kind in "iu":
            ii = np.iinfo(dt)
            feeds[io.name] = rng.integers(ii.min, int(ii.max) + 1, shape, dtype=dt)
        elif dt.kind == "f":
            q = next((n for n in cons.get(io.name, []) if n.kind == "QuantizeLinear"), None)
            if q is not None:
                t = g.tensors[q.outputs[0]]
                qmin, qmax = (0, 255) if t.dtype == np.uint8 else (-128, 127)
                s, z = t.quant.scale.astype(np.float64), t.quant.zero_point
                lo, hi = float(np.min((qmin - z) * s)), float(np.max((qmax - z) * s))
                span = hi - lo
                feeds[io.name] = rng.uniform(lo - 0.05 * span, hi + 0.05 * span, shape).astype(dt)
            else:
                feeds[io.name] = rng.normal(0, 1, shape).astype(dt)
        elif dt.kind == "b":
            feeds[io.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            raise ValueError(f"input {io.name!r}: cannot draw random values of dtype {dt}; give --inputs")
    return feeds


# ----------------------------------------------------------------- comparisons

def _hist(d):
    d = np.clip(d, -HIST_MAX, HIST_MAX)
    vals, counts = np.unique(d, return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(vals, counts)}


def _cmp_exact(e, o):
    """Engine vs a value that must be bit-identical (contract, ORT): counts and max difference."""
    if o is None:
        return None
    e, o = np.asarray(e), np.asarray(o)
    if e.shape != o.shape:
        return {"status": "mismatch", "compared": int(e.size), "exact": 0, "max_lsb": None,
                "error": f"shape {list(e.shape)} vs {list(o.shape)}"}
    if e.dtype.kind in "iu" and o.dtype.kind in "iu":
        d = np.abs(e.astype(np.int64) - o.astype(np.int64))
        n_ex = int((d == 0).sum())
        rec = {"compared": int(e.size), "exact": n_ex, "max_lsb": int(d.max()) if d.size else 0}
    else:
        ef, of = e.astype(np.float64), o.astype(np.float64)
        same = (ef == of) | (np.isnan(ef) & np.isnan(of))
        n_ex = int(same.sum())
        diff = np.abs(ef - of)
        rec = {"compared": int(e.size), "exact": n_ex, "max_lsb": None,
               "max_abs": float(np.nanmax(diff)) if diff.size and not same.all() else 0.0}
    rec["status"] = "exact" if rec["exact"] == rec["compared"] else "mismatch"
    return rec


def _cmp_float(node, e, r, c):
    """Engine vs the float reference, every mismatch classified (docs/verify.md)."""
    e = np.asarray(e)
    if e.shape != r.value.shape:
        return {"status": "error", "error": f"shape {list(e.shape)} vs reference {list(r.value.shape)}"}
    if not r.integer or e.dtype.kind not in "iu":
        ef = e.astype(np.float64)
        f32 = r.value.astype(e.dtype) if e.dtype.kind == "f" else r.value
        n_ex = int((e == f32).sum())
        diff = np.abs(ef - r.value)
        rec = {"kind": "float", "compared": int(e.size), "exact": n_ex,
               "max_abs": float(diff.max()) if diff.size else 0.0,
               "max_rel": float((diff / np.maximum(np.abs(r.value), 1e-30)).max()) if diff.size else 0.0}
        if node.kind == "DequantizeLinear":   # one float32 rounding of an exact product: must be exact
            rec.update(ties=0, real=int(e.size) - n_ex)
        rec["status"] = "exact" if n_ex == e.size else ("real" if rec.get("real") else "float")
        return rec
    ei = e.astype(np.int64).reshape(-1)
    fi = np.asarray(r.value).reshape(-1)
    if fi.dtype == object:     # a reference beyond int64 (an unbounded accumulator): beyond any engine value
        fi = np.clip(fi, -2 ** 63, 2 ** 63 - 1).astype(np.int64)
    d = ei - fi
    mism = np.flatnonzero(d)
    rec = {"kind": "int", "compared": int(e.size), "exact": int(e.size - mism.size), "ties": 0, "real": 0,
           "saturation": 0, "unclassified": 0, "misrounded_reference": 0,
           "max_lsb": int(np.abs(d).max()) if d.size else 0, "hist": _hist(d), "examples": []}
    if r.note:
        rec["note"] = r.note
    sat = None if r.saturated is None else np.asarray(r.saturated, bool).reshape(-1)
    rnd = r.round_exact or rne_fraction

    def klass(i, cf, V, E):
        cval = None if cf is None else int(cf[i])
        if sat is not None and sat[i] and (cval is None or int(ei[i]) == cval):
            return "saturation"
        return classify(int(ei[i]), int(fi[i]), cval, V, E, r.boundary)
    if mism.size:
        cf = None
        if c is not None and np.asarray(c).shape == e.shape:
            cf = np.asarray(c).astype(np.int64).reshape(-1)
        cand = mism
        if sat is not None:   # the declared accumulator saturated: the contract's value, not the float one
            s_ok = sat[cand] if cf is None else (sat[cand] & (ei[cand] == cf[cand]))
            rec["saturation"] = int(s_ok.sum())
            cand = cand[~s_ok]
        n_left = cand.size
        # without a rounding, or where the engine differs from the contract, or by more than 1: real at once
        if cf is not None:
            cand = cand[ei[cand] == cf[cand]]
        cand = cand[np.abs(d[cand]) == 1] if r.exact is not None else cand[:0]
        real_now = n_left - cand.size
        todo, rest = cand[:MAX_CLASSIFY], cand[MAX_CLASSIFY:]
        rec["unclassified"] = int(rest.size)
        rec["real"] = int(real_now)
        exact_vals = dict(zip(todo.tolist(), r.exact(todo))) if todo.size else {}
        for i in todo.tolist():
            V, E = exact_vals[i]
            cls = classify(int(ei[i]), int(fi[i]), None if cf is None else int(cf[i]), V, E, r.boundary)
            rec["ties" if cls == "tie" else "real"] += 1
            if cls == "tie" and rnd(V) != int(fi[i]):   # float64 itself rounded V to the wrong side
                rec["misrounded_reference"] += 1
        ex_idx = list(mism[:MAX_EXAMPLES])
        vals = dict(zip(ex_idx, r.exact(np.asarray(ex_idx)))) if r.exact is not None else {}
        for i in ex_idx:
            V, E = vals.get(i, (None, None))
            cval = None if cf is None else int(cf[i])
            rec["examples"].append({
                "index": [int(v) for v in np.unravel_index(i, e.shape)], "engine": int(ei[i]),
                "reference": int(fi[i]), "contract": cval,
                "exact_value": None if V is None else f"{V.numerator}/{V.denominator}",
                "exact_value_approx": fmt(V), "bound": fmt(E),
                "class": klass(i, cf, V, E)})
    rec["status"] = ("exact" if not mism.size else "real" if rec["real"] or rec["unclassified"] else
                     "saturation" if rec["saturation"] else "ties")
    return rec


# ----------------------------------------------------------------- driver

class VerifyReport:
    """The result of :func:`verify`: ``to_dict()`` (the JSON document), ``text()``,
    ``html()``, ``exit_status`` (0 iff bit-exact with the contract and with ORT when compared)."""

    def __init__(self, doc: dict):
        self.doc = doc

    @property
    def exit_status(self) -> int:
        return self.doc["exit_status"]

    @property
    def bit_exact(self) -> bool:
        return self.doc["bit_exact"]

    @property
    def layers(self) -> List[dict]:
        return self.doc["layers"]

    def layer(self, name: str) -> dict:
        for r in self.doc["layers"]:
            if r["name"] == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict:
        return self.doc

    def text(self) -> str:
        from .report import text
        return text(self.doc)

    def html(self) -> str:
        from .report import html
        return html(self.doc)


def _load(model, onnx_model, add_rule):
    from ..graph.runner import Model
    if isinstance(model, Model):
        if add_rule is not None:
            raise ValueError("add_rule applies when verify() loads the model; the given Model is already planned")
        return model, onnx_model
    from ..frontends.onnx import load_model_proto
    proto = load_model_proto(model)
    return Model(proto, add_rule=add_rule), proto


def verify(model, inputs: Optional[Dict[str, np.ndarray]] = None, *, seed: int = 0, batch: int = 1,
           onnx_model=None, use_ort: bool = True, ort_level: str = "all", add_rule: Optional[str] = None
           ) -> VerifyReport:
    """Verify the engine on one model and one input set.

    ``model``: a path, bytes, ``onnx.ModelProto`` or an already loaded
    :class:`pyqinfer.graph.runner.Model` (then pass ``onnx_model`` too for the
    ONNX Runtime comparison and the float functions of lookup tables).
    ``inputs``: ``{name: array}``; default :func:`random_inputs` (``seed``, ``batch``).
    ``use_ort``: compare with ONNX Runtime when it is installed.
    """
    m, proto = _load(model, onnx_model, add_rule)
    g = m.graph
    feeds = dict(inputs) if inputs is not None else random_inputs(m, seed, batch)
    names = [o for n in g.nodes for o in n.outputs]
    eng = m.run(feeds, outputs=names)
    feeds = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
    env = {**g.constants, **feeds, **eng}
    rule = m.plan.add_rule
    fr = FloatReference(g, proto, add_rule=rule)
    own = {**g.constants, **{k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in feeds.items()}}
    notes = []

    ort_info = {"available": False, "version": None, "compared": False, "error": None, "level": ort_level}
    ort_vals = {}
    have, ver = ortref.available()
    ort_info.update(available=have, version=ver)
    if use_ort and have:
        if proto is None:
            ort_info["error"] = "no ONNX model given (verify(Model) without onnx_model=)"
        else:
            onames = ortref.onnx_tensor_names(proto)
            want = [nm for nm in names if nm in onames] + [o for o in g.outputs if o not in names]
            try:
                ort_vals = ortref.run_ort(proto, feeds, want, {nm: g.tensors[nm].dtype for nm in want}, ort_level)
                ort_info["compared"] = True
            except Exception as ex:  # ORT refuses the model: reported, not compared
                ort_info["error"] = f"{type(ex).__name__}: {ex}"
    elif not use_ort:
        ort_info["error"] = "disabled (--no-ort)"

    layers = []
    for k, node in enumerate(g.nodes):
        out = node.outputs[0]
        e = eng[out]
        ins = [env[i] if i else None for i in node.inputs]
        ty = g.tensors.get(out)
        rec = {"index": k, "name": node.name, "kind": node.kind if node.kind != "FloatOp" else
               f"FloatOp:{node.attrs['op']}", "output": out, "dtype": e.dtype.name, "shape": list(e.shape),
               "elements": int(e.size)}
        c = None
        try:
            c = contract(g, node, ins, rule)
            rec["contract"] = _cmp_exact(e, c)
        except NoContract as ex:
            rec["contract"] = {"status": "n/a", "note": str(ex)}
        except Exception as ex:
            rec["contract"] = {"status": "error", "error": f"{type(ex).__name__}: {ex}"}
        try:
            r = fr.evaluate(node, ins)
            rec["float"] = _cmp_float(node, e, r, c)
        except NoFloatReference as ex:
            rec["float"] = {"status": "n/a", "note": str(ex)}
        except Exception as ex:
            rec["float"] = {"status": "error", "error": f"{type(ex).__name__}: {ex}"}
        exact_op = node.kind != "FloatOp" or bool(node.attrs.get("exact"))
        if out in ort_vals:
            rec["ort"] = _cmp_exact(e, ort_vals[out])
            # a mismatch is inherited when ORT fed this layer other values than the engine did
            # (it is then attributed upstream); inputs ORT does not expose count as equal
            rec["ort"]["inherited"] = any(
                i in ort_vals and not (ort_vals[i].shape == env[i].shape and np.array_equal(ort_vals[i], env[i]))
                for i in node.inputs if i)
            rec["ort"]["counts"] = exact_op and not rec["ort"]["inherited"]
        else:
            rec["ort"] = None
        rec["contract_ok"] = rec["contract"]["status"] in ("exact", "n/a")
        rec["ort_ok"] = rec["ort"] is None or rec["ort"]["status"] == "exact" or not rec["ort"]["counts"]
        layers.append(rec)
        # the float model on its own values (end to end)
        oins = [own[i] if i else None for i in node.inputs]
        try:
            r2 = fr.evaluate(node, oins)
            v = r2.value
            if r2.integer and ty is not None and ty.dtype.kind in "iu":   # the float run has no width: clamp
                ii = np.iinfo(ty.dtype)
                v = np.clip(v, int(ii.min), int(ii.max)).astype(ty.dtype)
            own[out] = v
        except Exception as ex:
            try:
                own[out] = np.asarray(contract(g, node, oins, rule))
                notes.append(f"{node.name}: no float reference ({ex}); the end-to-end float run used the contract")
            except Exception:
                own[out] = e
                notes.append(f"{node.name}: no float reference ({ex}); the end-to-end float run used the engine")

    e2e = []
    for o in g.outputs:
        e = eng[o]
        f = own[o]
        rec = {"output": o, "dtype": e.dtype.name, "shape": list(e.shape), "elements": int(e.size)}
        if e.dtype.kind in "iu":
            d = e.astype(np.int64) - np.asarray(f).astype(np.int64)
            rec["float"] = {"compared": int(e.size), "exact": int((d == 0).sum()),
                            "max_lsb": int(np.abs(d).max()) if d.size else 0, "hist": _hist(d)}
        else:
            diff = np.abs(e.astype(np.float64) - np.asarray(f, np.float64))
            rec["float"] = {"compared": int(e.size), "exact": int((e == np.asarray(f).astype(e.dtype)).sum()),
                            "max_abs": float(diff.max()) if diff.size else 0.0}
        rec["ort"] = _cmp_exact(e, ort_vals[o]) if o in ort_vals else None
        e2e.append(rec)

    def first(pred):
        return next((r["name"] for r in layers if pred(r)), None)

    fd = {"contract": first(lambda r: not r["contract_ok"]),
          "float_real": first(lambda r: r["float"].get("real", 0) or r["float"].get("unclassified", 0)
                              or r["float"]["status"] == "error"),
          "ort": first(lambda r: not r["ort_ok"])}
    fd["any"] = first(lambda r: r["name"] in fd.values())
    bit_exact = all(r["contract_ok"] for r in layers)
    ort_exact = all(r["ort_ok"] for r in layers)
    doc = {
        "schema": SCHEMA, "model": g.name, "format": g.meta.get("format"),
        "inputs": {k: {"dtype": v.dtype.name, "shape": list(v.shape)} for k, v in feeds.items()},
        "seed": None if inputs is not None else seed, "batch": None if inputs is not None else batch,
        "add_rule": rule or "per node (default onnxruntime)",
        "ort": ort_info, "layers": layers, "end_to_end": e2e, "first_divergent": fd,
        "notes": notes,
        "summary": {
            "layers": len(layers),
            "contract_exact_layers": sum(r["contract"]["status"] == "exact" for r in layers),
            "contract_na_layers": sum(r["contract"]["status"] == "n/a" for r in layers),
            "float_ties": sum(r["float"].get("ties", 0) or 0 for r in layers),
            "float_saturation": sum(r["float"].get("saturation", 0) or 0 for r in layers),
            "float_real": sum((r["float"].get("real", 0) or 0) + (r["float"].get("unclassified", 0) or 0)
                              for r in layers),
            "ort_layers_compared": sum(r["ort"] is not None for r in layers),
            "ort_exact_layers": sum(r["ort"] is not None and r["ort"]["status"] == "exact" for r in layers),
        },
        "bit_exact": bit_exact, "ort_exact": ort_exact if ort_info["compared"] else None,
    }
    doc["exit_status"] = 0 if bit_exact and (not ort_info["compared"] or ort_exact) else 1
    return VerifyReport(doc)
