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
  (batch 1, all threads), and for shift schemes the shift-vs-multiply speed
  (``n/a`` until ``pyqinfer.ops.shift`` exists).

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
SHIFT_SCHEMES = ("pot4", "apot4", "log4")
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


def _shift_ratio(model_rec):
    """Shift-vs-multiply speed of a shift scheme. The shift kernels (pyqinfer.ops.shift) and a
    pyqinfer-domain model that uses them are not on main yet, so this is "n/a" for now."""
    if model_rec["scheme"] not in SHIFT_SCHEMES:
        return None
    return "n/a"


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
        "shift_vs_mul": _shift_ratio(rec),
        "bit_exact": bool(rep["bit_exact"]) and exact_ref == out.size and correct == rec["correct"],
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
                      f"{r['exact_vs_qat']}/{r['elements']}{ok}", f"{r['exact_vs_float_ref']}/{r['elements']}",
                      str(r["weight_bytes"]), f"{1e3 * r['latency_ms']:.0f}", r["shift_vs_mul"] or "-"])
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
               "(and every layer bit-exact with the contract); us/img: median microseconds per image, batch 1.")
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
