"""``pyqinfer demo``: every shipped demo model on the engine over the digits test split.

The models (``pyqinfer/data/demo/``) were trained and exported by
``scripts/make_demo_models.py`` (PyTorch, scikit-learn): a small CNN and an MLP
on scikit-learn's ``load_digits``, one model per quantization scheme.
``manifest.json`` holds what training measured; ``digits_test.npz`` the test
split and, per model, the eval-mode outputs of the trained quantized model (the
float reference of docs/training.md: what the engine must compute bit for bit).

Per model the demo reports:

* ``accuracy``: the engine's top-1 accuracy on the 360 test images, next to the
  float (unquantized) model's accuracy from the manifest;
* ``= QAT model``: elements of the engine's output equal, bit for bit, to the
  trained model's eval-mode output (exact/total);
* ``= float ref``: :func:`pyqinfer.verify` on the test split: elements of the
  engine's output equal to the float reference of the graph run end to end
  (exact/total); the row also requires every layer to be bit-exact with the
  contract (``pyqinfer.reference``);
* weight bytes as the engine stores them, the median latency of one image
  (batch 1, all threads), and for the shift schemes (PoT, APoT, log) the speed
  of ``pyqinfer.ops.shift_matmul``'s shift kernel relative to its multiply
  kernel on the same power-of-two terms and the layers' real inputs
  (:func:`shift_vs_multiply`; the two kernels must agree bit for bit). The
  5-bit log models (levels up to 2^14, wider than int8) are
  ``pyqinfer.ShiftConv`` / ``ShiftMatMul`` layers; their multiply kernel is the
  int32 one.

Models in the ``pyqinfer`` ONNX domain that this pyqinfer cannot load yet
(manifest ``checked: false``: written without the export check) are listed as
pending with the reason; once ``pyqinfer.load`` imports the domain they run and
are checked like the others. Exit status 0 iff every exported model is bit-exact in both senses.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "demo")
SHIFT_SCHEMES = ("pot4", "apot4", "log4", "log5")
LATENCY_RUNS = 30


def data_dir():
    return DATA_DIR


def load_manifest(path=None):
    d = path or DATA_DIR
    with open(os.path.join(d, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def _progress(i, n, label, stream):
    if stream is None:
        return
    width = 24
    done = int(width * i / max(n, 1))
    bar = "#" * done + "." * (width - done)
    end = "\n" if i == n else ""
    if stream.isatty():
        stream.write(f"\r[{bar}] {i}/{n} {label:<16s}{end}")
    else:
        stream.write(f"[{bar}] {i}/{n} {label}\n")
    stream.flush()


def _shift_terms(w):
    """Integer weights -> power-of-two terms (signs, exponents) int8 [T, ...]: the set bits of |w|
    (one term for PoT and log levels, two or three for APoT)."""
    mag = np.abs(w.astype(np.int64))
    sign = np.sign(w).astype(np.int8)
    T = max(1, max(bin(int(v)).count("1") for v in np.unique(mag)))
    signs = np.zeros((T,) + w.shape, np.int8)
    exps = np.zeros((T,) + w.shape, np.int8)
    for t in range(T):
        low = mag & -mag                       # lowest set bit (0 where mag == 0)
        has = low > 0
        signs[t][has] = sign[has]
        exps[t][has] = np.log2(low[has]).astype(np.int8)
        mag = mag - low
    return signs, exps


def shift_vs_multiply(model, feeds, target_seconds=0.04):
    """Speed of the shift kernel relative to the multiply kernel (pyqinfer.ops.shift_matmul, the same
    terms, ``kernel="shift"`` vs ``"multiply"``: the int8 VNNI GEMM when the levels fit int8) on
    every weight layer of ``model`` with its real input codes from ``feeds``, summed over the
    layers (im2col once, outside the timing), as a speed ratio like ``pyqinfer bench shift-vs-mul``:
    multiply time / shift time, so below 1 means the shift kernel is slower. Returns
    (ratio, bit_exact) or (None, None) when the model has no shift-representable layer."""
    from .bench.timing import time_interleaved
    from .ops import shift as sh

    g = model.graph
    layers = [n for n in g.nodes if (n.kind in ("QLinearConv", "QLinearMatMul")
                                     and not np.any(n.params["w_zero_point"]) and n.attrs.get("group", 1) == 1)
              or (n.kind in ("ShiftConv", "ShiftMatMul") and n.attrs.get("rule") == "exact"
                  and n.attrs.get("group", 1) == 1)]
    if not layers:
        return None, None
    acts = model.run(feeds, outputs=[n.inputs[0] for n in layers])
    t_shift = t_mul = 0.0
    exact = True
    for n in layers:
        x = acts[n.inputs[0]]
        za = g.tensors[n.inputs[0]].quant.zero_point[0]
        za = x.dtype.type(za)
        if n.kind in ("ShiftConv", "ShiftMatMul"):      # the layer's own terms (codes wider than int8)
            signs, exps = n.params["signs"], n.params["exponents"]
        else:
            signs, exps = _shift_terms(n.params["w"])
        if n.kind in ("QLinearConv", "ShiftConv"):
            pw = sh.pack_shift_conv_weights(signs, exps)
            a, _ = sh.im2col_nhwc(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), int(za), pw.kernel_shape,
                                  n.attrs["pads"], n.attrs["strides"], n.attrs["dilations"])
            pw = pw.gemm
        else:
            pw = sh.pack_shift_weights(signs, exps)
            a = x.reshape(-1, x.shape[-1])
        a = np.ascontiguousarray(a)
        ys = sh.shift_matmul(a, pw, a_zero_point=za, kernel="shift")
        ym = sh.shift_matmul(a, pw, a_zero_point=za, kernel="multiply")
        exact = exact and np.array_equal(ys, ym)
        r = time_interleaved({"shift": lambda: sh.shift_matmul(a, pw, a_zero_point=za, kernel="shift"),
                              "multiply": lambda: sh.shift_matmul(a, pw, a_zero_point=za, kernel="multiply")},
                             target_seconds=target_seconds, settle_seconds=0.002, rounds=2)
        t_shift += r["shift"]["median"]
        t_mul += r["multiply"]["median"]
    return t_mul / t_shift, bool(exact)


def _shift_ratio(model_rec, model, feeds):
    """Shift-vs-multiply speed ratio for a shift scheme (None for the others; "n/a" without
    pyqinfer.ops.shift)."""
    if model_rec["scheme"] not in SHIFT_SCHEMES:
        return None, None
    try:
        from .ops import shift  # noqa: F401
    except ImportError:
        return "n/a", None
    ratio, exact = shift_vs_multiply(model, feeds)
    return (None if ratio is None else round(ratio, 3)), exact


def run_model(rec, x, y, ref, d):
    """Run one shipped model; returns its result record."""
    import pyqinfer
    from .verify import verify

    path = os.path.join(d, rec["file"])
    m = pyqinfer.load(path)
    name = m.inputs[0].name
    out = m.run({name: x})[m.outputs[0].name]
    pred = out.argmax(1)
    correct = int((pred == y).sum())
    same = out.shape == ref.shape and out.dtype == ref.dtype
    exact_ref = int((out.view(np.uint32) == ref.view(np.uint32)).sum()) if same else 0
    rep = verify(m, {name: x}, use_ort=False).to_dict()
    e2e = rep["end_to_end"][0]["float"]
    times = []
    for i in range(LATENCY_RUNS):
        xi = x[i % len(x)][None]
        t = time.perf_counter()
        m.run({name: xi})
        times.append(time.perf_counter() - t)
    wbytes = int(sum(r["weight_bytes"] for r in m.layers()))
    ratio, shift_exact = _shift_ratio(rec, m, {name: x})
    return {
        "name": rec["name"], "net": rec["net"], "scheme": rec["scheme"], "bits": rec["bits"],
        "file": rec["file"], "n": int(len(y)), "correct": correct, "accuracy": correct / len(y),
        "manifest_correct": rec["correct"], "float_correct": rec["float_correct"],
        "float_accuracy": rec["float_accuracy"],
        "exact_vs_qat": exact_ref, "exact_vs_float_ref": int(e2e["exact"]), "elements": int(out.size),
        "contract_bit_exact": bool(rep["bit_exact"]),
        "contract_layers": [rep["summary"]["contract_exact_layers"], rep["summary"]["contract_na_layers"],
                            rep["summary"]["layers"]],
        "float_ties": rep["summary"]["float_ties"], "float_real": rep["summary"]["float_real"],
        "weight_bytes": wbytes, "latency_ms": float(np.median(times) * 1e3),
        "shift_vs_mul": ratio, "shift_kernels_equal": shift_exact,
        "bit_exact": bool(rep["bit_exact"]) and exact_ref == out.size and correct == rec["correct"]
        and shift_exact is not False,
    }


def run(path=None, progress=sys.stderr):
    """Run every shipped model; returns the JSON document (schema ``pyqinfer.demo/1``)."""
    import pyqinfer

    d = path or DATA_DIR
    man = load_manifest(d)
    data = np.load(os.path.join(d, "digits_test.npz"))
    x = np.ascontiguousarray(data["x_test"], np.float32)
    y = data["y_test"]
    recs = man["models"]
    rows, t0 = [], time.perf_counter()
    for i, rec in enumerate(recs):
        _progress(i, len(recs), rec["name"], progress)
        try:
            rows.append(run_model(rec, x, y, data["ref_" + rec["name"]], d))
        except pyqinfer.UnsupportedModelError as e:
            if rec.get("checked", True) or "domain" not in str(e):
                raise
            # a pyqinfer-domain model this pyqinfer cannot load yet (manifest: checked false)
            rows.append({"name": rec["name"], "net": rec["net"], "scheme": rec["scheme"], "bits": rec["bits"],
                         "pending": f"needs {rec.get('requires', 'the pyqinfer-domain importer')}", "error": str(e),
                         "qat_correct": rec["correct"], "float_correct": rec["float_correct"], "n": int(len(y))})
    _progress(len(recs), len(recs), "done", progress)
    done = [r for r in rows if "pending" not in r]
    return {"schema": "pyqinfer.demo/1", "dataset": man["dataset"], "n_test": int(len(y)),
            "threads": os.cpu_count(), "version": pyqinfer.__version__, "models": rows,
            "bit_exact": all(r["bit_exact"] for r in done) and bool(done),
            "seconds": round(time.perf_counter() - t0, 2)}


def _fmt_ratio(v):
    if v is None:
        return "-"
    return v if isinstance(v, str) else f"{v:.2f}x"


def _fmt_float_ref(r):
    """exact/total vs the float reference; short of the total, '*' with the cause (ties, real errors)."""
    txt = f"{r['exact_vs_float_ref']}/{r['elements']}"
    if r["exact_vs_float_ref"] < r["elements"]:
        txt += f" *{r['float_ties']}t" + (f"/{r['float_real']}r" if r["float_real"] else "")
    return txt


def table(doc):
    n = doc["n_test"]
    hdr = ["model", "bits", "accuracy", "float acc", "= QAT model", "= float ref", "weight B",
           "us/img", "shift/mul"]
    lines = []
    for r in doc["models"]:
        if "pending" in r:
            lines.append([r["name"], r["bits"], f"({100 * r['qat_correct'] / n:.2f})",
                          f"{100 * r['float_correct'] / n:.2f}", "pending", "", "", "", ""])
            continue
        ok = "" if r["bit_exact"] else " !"
        lines.append([r["name"], r["bits"], f"{100 * r['accuracy']:.2f}", f"{100 * r['float_accuracy']:.2f}",
                      f"{r['exact_vs_qat']}/{r['elements']}{ok}", _fmt_float_ref(r),
                      str(r["weight_bytes"]), f"{1e3 * r['latency_ms']:.0f}", _fmt_ratio(r["shift_vs_mul"])])
    w = [max(len(h), *(len(l[k]) for l in lines)) for k, h in enumerate(hdr)]
    fmt = lambda row: "  ".join(c.rjust(w[k]) if k >= 2 else c.ljust(w[k])  # noqa: E731
                                for k, c in enumerate(row)).rstrip()
    out = [f"pyqinfer demo: {len(doc['models'])} models on the digits test split ({n} images), "
           f"{doc['seconds']:.1f} s", "", fmt(hdr), fmt(["-" * k for k in w])]
    out += [fmt(l) for l in lines]
    out.append("")
    out.append("accuracy: the engine's top-1 accuracy (%); float acc: the unquantized model; "
               "= QAT model: output elements bit-identical to the trained quantized model's eval-mode "
               "output; = float ref: equal to pyqinfer.verify's float reference run end to end "
               "(and every layer bit-exact with the contract); us/img: median microseconds per image, batch 1; "
               "shift/mul: speed of the shift kernel relative to the multiply kernel (int8 VNNI; int32 for the log5 codes) on the "
               "same power-of-two terms and the layers' real inputs, all layers (below 1: shift is "
               "slower; both give the same bits; see pyqinfer bench shift-vs-mul).")
    short = [r for r in doc["models"] if "pending" not in r and r["exact_vs_float_ref"] < r["elements"]]
    if short:
        out.append("*Nt: the float reference run end to end differs on some outputs because N of its layer "
                   "elements sit on a float32 rounding tie that it rounds the other way (an Nr would count real "
                   "errors); the layers themselves are bit-exact with the contract. `pyqinfer verify MODEL "
                   "--inputs x.npz` lists them (docs/verify.md).")
    pend = [r for r in doc["models"] if "pending" in r]
    if pend:
        out.append("pending (accuracy in parentheses from PyTorch): " + "; ".join(
            f"{r['name']}: {r['pending']}" for r in pend[:1]) + ("" if len(pend) == 1 else
                                                                f" (and {len(pend) - 1} more like it)"))
    out.append("all models that ran are bit-exact" if doc["bit_exact"] else "NOT BIT-EXACT: rows marked '!'")
    return "\n".join(out)


def main(args):
    try:
        import onnx  # noqa: F401
    except ImportError:
        print("pyqinfer demo needs the onnx package to read the demo models: pip install onnx", file=sys.stderr)
        return 1
    doc = run(progress=None if args.quiet else sys.stderr)
    if args.json:
        text = json.dumps(doc, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w", encoding="utf-8") as f:
                f.write(text + "\n")
            print(table(doc))
    else:
        print(table(doc))
    return 0 if doc["bit_exact"] else 1
