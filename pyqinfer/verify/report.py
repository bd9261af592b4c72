"""Rendering a verify document (:class:`pyqinfer.verify.VerifyReport`) as text and as
a self-contained HTML page with inline-SVG error histograms (no matplotlib needed)."""
from __future__ import annotations

import html as _html

from .core import HIST_MAX


def _frac(rec, key="exact"):
    if not rec or rec.get("status") in ("n/a", "error") or "compared" not in rec:
        return {"n/a": "n/a", "error": "ERROR"}.get((rec or {}).get("status"), "-")
    return f"{rec[key]}/{rec['compared']}"


def _ort_col(t):
    """ORT exact/elements; '*' marks a mismatch inherited from upstream or in a float op outside the contract."""
    if not t:
        return "-"
    return _frac(t) + ("*" if t["status"] != "exact" and not t.get("counts", True) else "")


def _lsb(rec):
    if not rec or "compared" not in rec:
        return "-"
    if rec.get("max_lsb") is not None:
        return str(rec["max_lsb"])
    if "max_abs" in rec:   # float outputs: compared as float32 values; 0 when all equal fl32(reference)
        return f"{rec['max_abs']:.1e}" if rec["max_abs"] and rec.get("exact") != rec.get("compared") else "0"
    return "-"


def _float_cols(f):
    st = f.get("status")
    if st in ("n/a", "error"):
        return ("n/a" if st == "n/a" else "ERROR", "", "", "-")
    if f.get("kind") == "float" and "ties" not in f:
        return (_frac(f), "float", "", _lsb(f))
    ties = str(f.get("ties", 0)) + (f"+{f['saturation']}s" if f.get("saturation") else "")
    return (_frac(f), ties, str(f.get("real", 0) + f.get("unclassified", 0)), _lsb(f))


def text(doc) -> str:
    L = []
    ins = ", ".join(f"{k}: {v['dtype']}{v['shape']}" for k, v in doc["inputs"].items())
    src = "given inputs" if doc["seed"] is None else f"random inputs, seed {doc['seed']}, batch {doc['batch']}"
    L.append(f"verify {doc['model']} ({doc['format']}): {ins} ({src})")
    o = doc["ort"]
    if o["compared"]:
        L.append(f"ONNX Runtime {o['version']}: compared (graph optimization level '{o['level']}')")
    else:
        L.append(f"ONNX Runtime: not compared ({o['error'] or 'not installed'})")
    hdr = (f"{'#':>3} {'layer':<22} {'op':<24} {'elements':>8}  {'contract':>13}  {'float: exact':>13} "
           f"{'ties':>5} {'real':>5} {'maxLSB':>6}  {'ORT':>13} {'maxLSB':>6}")
    L.append(hdr)
    L.append("-" * len(hdr))
    for r in doc["layers"]:
        c, f, t = r["contract"], r["float"], r["ort"]
        fe, ft, frl, fl = _float_cols(f)
        mark = "" if r["contract_ok"] and r["ort_ok"] and not (f.get("real") or f.get("unclassified")) else "  <<"
        ccol = _frac(c) if c.get("status") != "n/a" else "n/a"
        if c.get("status") == "mismatch":
            ccol += f" ({c['max_lsb']})" if c.get("max_lsb") is not None else ""
        L.append(f"{r['index']:>3} {r['name'][:22]:<22} {r['kind'][:24]:<24} {r['elements']:>8}  {ccol:>13}  "
                 f"{fe:>13} {ft:>5} {frl:>5} {fl:>6}  {_ort_col(t):>13} {_lsb(t) if t else '-':>6}{mark}")
    L.append("")
    L.append("end to end (the float model on its own values; ORT on its own):")
    for r in doc["end_to_end"]:
        f, t = r["float"], r["ort"]
        L.append(f"  {r['output']}: {r['dtype']}{r['shape']}  float reference: {_frac(f)} exact, max "
                 f"{_lsb(f)}{' LSB' if f.get('max_lsb') is not None else ''}"
                 + (f";  ORT: {_frac(t)} exact, max {_lsb(t)}" if t else ""))
    if any(r["ort"] and r["ort"]["status"] != "exact" and not r["ort"].get("counts", True) for r in doc["layers"]):
        L.append("* ORT mismatch not counted: inherited from a differing input, or a float op outside the contract")
    fd = doc["first_divergent"]
    L.append("")
    L.append(f"first divergent layer: {fd['any'] or 'none'}"
             + "".join(f"; {k.replace('_', ' ')}: {fd[k]}" for k in ("contract", "float_real", "ort") if fd[k]))
    s = doc["summary"]
    L.append(f"float reference: {s['float_ties']} float-rounding ties, {s['float_real']} real errors "
             f"(docs/verify.md); contract: {s['contract_exact_layers']}/{s['layers']} layers exact, "
             f"{s['contract_na_layers']} n/a")
    if s.get("float_saturation"):
        L.append(f"accumulator saturation: {s['float_saturation']} element(s) where the declared acc_bits "
                 f"saturated (the contract's value; the float model has no accumulator width), marked 's'")
    for n in doc["notes"]:
        L.append(f"note: {n}")
    verdict = "BIT-EXACT" if doc["exit_status"] == 0 else "NOT BIT-EXACT"
    what = "the contract" + (" and ONNX Runtime" if doc["ort"]["compared"] else "")
    L.append(f"{verdict} with {what} (exit status {doc['exit_status']})")
    return "\n".join(L)


# ----------------------------------------------------------------- HTML

def _svg_hist(hist, w=260, h=70):
    """Bars for differences -HIST_MAX..HIST_MAX (engine - float reference, LSB); log-scaled heights."""
    import math
    if not hist:
        return ""
    keys = list(range(-HIST_MAX, HIST_MAX + 1))
    counts = [hist.get(str(k), 0) for k in keys]
    top = max(math.log10(c + 1) for c in counts) or 1
    bw = w / len(keys)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 14}" role="img">']
    for i, (k, c) in enumerate(zip(keys, counts)):
        if not c:
            continue
        bh = max(1.0, (h - 2) * math.log10(c + 1) / top)
        col = "#4a8" if k == 0 else ("#e92" if abs(k) == 1 else "#d33")
        lab = f"{'<=' if k == -HIST_MAX else '>=' if k == HIST_MAX else ''}{k}"
        parts.append(f'<rect x="{i * bw + 1:.1f}" y="{h - bh:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" '
                     f'fill="{col}"><title>{lab} LSB: {c}</title></rect>')
    for k in (-HIST_MAX, -1, 0, 1, HIST_MAX):
        i = keys.index(k)
        parts.append(f'<text x="{i * bw + bw / 2:.1f}" y="{h + 12}" font-size="9" text-anchor="middle">{k}</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:middle}th{background:#eee}
td.l{text-align:left}tr.bad td{background:#fde}tr.tie td{background:#fff6e0}.ok{color:#080}.bad{color:#c00}
code{background:#f4f4f4;padding:0 3px}"""


def html(doc) -> str:
    e = _html.escape
    rows = []
    for r in doc["layers"]:
        c, f, t = r["contract"], r["float"], r["ort"]
        fe, ft, frl, fl = _float_cols(f)
        bad = not (r["contract_ok"] and r["ort_ok"]) or f.get("real") or f.get("unclassified")
        cls = "bad" if bad else ("tie" if f.get("ties") else "")
        ex = ""
        if f.get("examples"):
            ex = "<br>".join(e(f"{x['index']}: engine {x['engine']}, reference {x['reference']}, contract "
                               f"{x['contract']}, exact {x['exact_value_approx']} (bound {x['bound']}): {x['class']}")
                             for x in f["examples"])
        rows.append(
            f"<tr class='{cls}'><td>{r['index']}</td><td class='l'>{e(r['name'])}</td><td class='l'>{e(r['kind'])}"
            f"</td><td>{r['elements']}</td><td>{e(_frac(c) if c.get('status') != 'n/a' else 'n/a')}</td>"
            f"<td>{e(fe)}</td><td>{e(ft)}</td><td>{e(frl)}</td><td>{e(fl)}</td>"
            f"<td>{e(_ort_col(t))}</td><td>{e(_lsb(t) if t else '-')}</td>"
            f"<td>{_svg_hist(f.get('hist'))}</td><td class='l' style='font-size:11px'>{ex}</td></tr>")
    e2e = "".join(
        f"<tr><td class='l'>{e(r['output'])}</td><td>{r['elements']}</td><td>{e(_frac(r['float']))}</td>"
        f"<td>{e(_lsb(r['float']))}</td><td>{e(_frac(r['ort']) if r['ort'] else '-')}</td>"
        f"<td>{_svg_hist(r['float'].get('hist'))}</td></tr>" for r in doc["end_to_end"])
    ok = doc["exit_status"] == 0
    fd = doc["first_divergent"]
    o = doc["ort"]
    ort_line = (f"ONNX Runtime {e(str(o['version']))} compared (level {e(o['level'])})" if o["compared"]
                else f"ONNX Runtime not compared ({e(str(o['error'] or 'not installed'))})")
    ins = ", ".join(f"{e(k)}: {v['dtype']}{v['shape']}" for k, v in doc["inputs"].items())
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>pyqinfer verify: {e(doc['model'])}</title>
<style>{_CSS}</style></head><body>
<h1>pyqinfer verify: {e(doc['model'])}</h1>
<p>Format {e(str(doc['format']))}; inputs {ins}; {'given inputs' if doc['seed'] is None else
f"random inputs (seed {doc['seed']}, batch {doc['batch']})"}; {ort_line}.</p>
<p class="{'ok' if ok else 'bad'}"><b>{'BIT-EXACT' if ok else 'NOT BIT-EXACT'}</b> with the contract
{'and ONNX Runtime' if o['compared'] else ''} (exit status {doc['exit_status']}). First divergent layer:
<b>{e(str(fd['any'] or 'none'))}</b>. Float reference: {doc['summary']['float_ties']} float-rounding ties,
{doc['summary']['float_real']} real errors, {doc['summary'].get('float_saturation', 0)} elements past a declared
accumulator width (saturation, marked s).</p>
<p>Each layer is fed with the engine's own inputs. <i>contract</i>: exact matches with
<code>pyqinfer.reference</code>; <i>float</i>: exact matches with the float64 reference, mismatches classified
as <i>ties</i> (the exact value lies within the documented float32 error of a rounding boundary and the
engine equals the contract) or <i>real</i>; histogram: engine &minus; float reference in LSB
(log scale; green 0, orange &plusmn;1, red beyond, end bins &le;&minus;{HIST_MAX} / &ge;{HIST_MAX}).
Definitions: docs/verify.md.</p>
<table><tr><th>#</th><th>layer</th><th>op</th><th>elements</th><th>contract</th><th>float exact</th>
<th>ties</th><th>real</th><th>max LSB</th><th>ORT</th><th>max LSB</th><th>engine &minus; float (LSB)</th>
<th>first mismatches</th></tr>
{''.join(rows)}</table>
<h2>End to end</h2><p>The float model evaluated on its own values, and ORT on its own.</p>
<table><tr><th>output</th><th>elements</th><th>float exact</th><th>max LSB</th><th>ORT</th><th>histogram</th></tr>
{e2e}</table>
{''.join(f'<p>note: {e(n)}</p>' for n in doc['notes'])}
</body></html>
"""
