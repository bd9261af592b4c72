#!/usr/bin/env python
"""Train the demo models that ``pyqinfer demo`` runs, and write them to pyqinfer/data/demo/.

Needs PyTorch and scikit-learn (``pip install "pyqinfer[train]" scikit-learn``); the
shipped files need neither. Deterministic: fixed seeds, CPU, one thread.

1. scikit-learn's bundled ``load_digits`` (8x8 images, 0..16; no download),
   scaled to [0, 1], split 80/20 stratified (seed 0): 1437 training and 360 test images.
2. A small float CNN (conv 3x3 16 + BN + ReLU, max pool, conv 3x3 32 + BN + ReLU,
   max pool, fc 128 -> 10) and an MLP (64 -> 64 -> 32 -> 10, ReLU), trained with Adam.
3. Per scheme: BatchNorm folded, ``pyqinfer.train.prepare`` with the scheme's
   config, PTQ (``calibrate`` on the training set), then a short QAT (a few epochs
   at a small learning rate) and the eval-mode (integer) accuracy of both.
4. ``pyqinfer.train.export`` of the QAT model (checked against the eval model at
   export), its eval-mode outputs on the test split as the reference that the
   engine must reproduce bit for bit.

Models using the ``pyqinfer`` ONNX domain (the threshold activations, the 5-bit
log weights as shift layers) are
written without the export check when this pyqinfer cannot load that domain
yet (manifest ``checked: false``); ``pyqinfer demo`` lists them as pending until
it can, then runs and checks them like the others.

Outputs: ``<net>_<scheme>.onnx``, ``digits_test.npz`` (x_test [360,1,8,8] float32,
y_test, ``ref_<model>`` eval-mode outputs of each model) and ``manifest.json``
(per model: net, scheme, bits, float/PTQ/QAT accuracy and correct counts, file).

Run: ``python scripts/make_demo_models.py [--out DIR] [--nets cnn,mlp] [--schemes ...]``.
"""
import argparse
import collections
import copy
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "pyqinfer", "data", "demo")

SEED = 0
FLOAT_EPOCHS = 40
QAT_EPOCHS = 6

# scheme -> (description, weight bits label, activation bits label)
SCHEMES = collections.OrderedDict([
    ("int8", "uniform W8A8"),
    ("int4", "uniform W4A8 (per-channel weights)"),
    ("mixed", "mixed: 8-bit weights in the first and last layer, 4-bit inside; 4-bit activations except the logits"),
    ("pot4", "power-of-two 4-bit weights, A8"),
    ("apot4", "additive powers-of-two 4-bit weights (RCF clipping), A8"),
    ("log4", "logarithmic (base 2) 4-bit weights, A8"),
    ("pwlq4", "piecewise-linear 4-bit weights (post-training, bias correction), A8"),
    ("thresh2", "Quantization Networks 2-bit threshold activations, W8"),
    ("log5", "logarithmic (base 2) 5-bit weights: levels up to 2^14, pyqinfer.ShiftConv / ShiftMatMul layers, A8"),
])
DOMAIN_SCHEMES = ("thresh2", "log5")      # exported with pyqinfer_domain=True


def nets(torch, nn):
    def cnn():
        return nn.Sequential(collections.OrderedDict([
            ("conv1", nn.Conv2d(1, 16, 3, padding=1)), ("bn1", nn.BatchNorm2d(16)), ("relu1", nn.ReLU()),
            ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("bn2", nn.BatchNorm2d(32)), ("relu2", nn.ReLU()),
            ("pool2", nn.MaxPool2d(2)),
            ("flatten", nn.Flatten()), ("fc", nn.Linear(32 * 2 * 2, 10))]))

    def mlp():
        return nn.Sequential(collections.OrderedDict([
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(64, 64)), ("relu1", nn.ReLU()),
            ("fc2", nn.Linear(64, 32)), ("relu2", nn.ReLU()),
            ("fc3", nn.Linear(32, 10))]))
    return {"cnn": (cnn, ["conv1", "conv2", "fc"]), "mlp": (mlp, ["fc1", "fc2", "fc3"])}


def scheme_config(scheme, layers):
    first, last = layers[0], layers[-1]
    a8 = {"scheme": "uniform", "bits": 8}
    cfg = {"default": {"weight": {"scheme": "uniform", "bits": 8, "per_channel": True}, "act": dict(a8)}}
    w4 = {"pot4": {"scheme": "pot", "bits": 4}, "apot4": {"scheme": "apot", "bits": 4, "weight_norm": False},
          "log4": {"scheme": "log", "bits": 4}, "log5": {"scheme": "log", "bits": 5}, "pwlq4": {"scheme": "pwlq", "bits": 4, "breakpoint": "search",
                                                           "bias_correction": True},
          "int4": {"scheme": "uniform", "bits": 4, "per_channel": True}}
    if scheme in w4:
        cfg["default"]["weight"] = w4[scheme]
    elif scheme == "mixed":
        cfg["default"] = {"weight": {"scheme": "uniform", "bits": 4, "per_channel": True},
                          "act": {"scheme": "uniform", "bits": 4, "observer": "mse"}}
        cfg[first] = {"weight": {"scheme": "uniform", "bits": 8}}
        cfg[last] = {"weight": {"scheme": "uniform", "bits": 8}, "act": dict(a8)}
    elif scheme == "thresh2":
        cfg["default"]["act"] = {"scheme": "qn", "bits": 2}
        cfg[last] = {"act": dict(a8)}
    elif scheme != "int8":
        raise ValueError(scheme)
    return cfg


def bits_label(q, qt):
    """'W8A8' style summary and per-layer list from the prepared model."""
    per = []
    for name, m in qt.quantized_layers(q):
        wq = m.weight_quant.qparams()
        aq = m.out_quant.qparams() if m.out_quant is not None else None
        per.append({"layer": name, "weight_scheme": wq.get("scheme"), "weight_bits": wq.get("bits"),
                    "act_scheme": None if aq is None else aq.get("scheme"),
                    "act_bits": None if aq is None else aq.get("bits")})
    wb = sorted({p["weight_bits"] for p in per})
    ab = sorted({p["act_bits"] for p in per if p["act_bits"] is not None})
    return "W" + "/".join(map(str, wb)) + "A" + "/".join(map(str, ab)), per


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--nets", default="cnn,mlp")
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    args = ap.parse_args(argv)

    import torch
    from torch import nn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    import pyqinfer.train as qt

    torch.set_num_threads(1)
    t0 = time.time()
    os.makedirs(args.out, exist_ok=True)
    digits = load_digits()
    X = (digits.images.astype(np.float32) / 16.0)[:, None]          # [N, 1, 8, 8] in [0, 1]
    y = digits.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=SEED, stratify=y)
    Xtr, Ytr, Xte = torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte)

    def accuracy(model, x=Xte, t=yte):
        model.eval()
        with torch.no_grad():
            out = model(x)
        pred = out.argmax(1).numpy()
        return int((pred == t).sum()), out

    def train(model, epochs, lr, seed, hook=None):
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
        for ep in range(epochs):
            if hook:
                hook(ep)
            model.train()
            perm = torch.randperm(len(Xtr), generator=g)
            for i in range(0, len(perm), 64):
                idx = perm[i:i + 64]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(Xtr[idx]), Ytr[idx])
                loss.backward()
                opt.step()
            sched.step()
        return model

    manifest = {"dataset": "sklearn load_digits (8x8), x / 16, 80/20 stratified split, seed 0",
                "n_test": int(len(yte)), "models": []}
    refs = {}
    for net in args.nets.split(","):
        make, layers = nets(torch, nn)[net]
        torch.manual_seed(SEED)
        fnet = train(make(), FLOAT_EPOCHS, 1e-2, SEED)
        fcorrect, _ = accuracy(fnet)
        print(f"{net}: float accuracy {fcorrect}/{len(yte)} ({time.time() - t0:.1f} s)", file=sys.stderr)
        folded = qt.fold_bn_sequential(copy.deepcopy(fnet).eval())
        for scheme in args.schemes.split(","):
            torch.manual_seed(SEED)
            cfg = scheme_config(scheme, layers)
            q = qt.prepare(folded, cfg)
            qt.calibrate(q, [Xtr])
            ptq_correct, _ = accuracy(q)
            hook = None
            if scheme == "thresh2":
                qns = [m for m in q.modules() if isinstance(m, qt.QNActivation)]

                def hook(ep, qns=qns):       # QN: raise the sigmoid temperature every epoch
                    for m in qns:
                        m.set_temperature(1.0 + 10.0 * ep)
            train(q, QAT_EPOCHS, 1e-3, SEED + 1, hook)
            qat_correct, out = accuracy(q)
            wa, per = bits_label(q, qt)
            name = f"{net}_{scheme}"
            rec = {"name": name, "net": net, "scheme": scheme, "description": SCHEMES[scheme], "bits": wa,
                   "layers": per, "config": cfg,
                   "float_correct": fcorrect, "float_accuracy": fcorrect / len(yte),
                   "ptq_correct": ptq_correct, "ptq_accuracy": ptq_correct / len(yte),
                   "correct": qat_correct, "accuracy": qat_correct / len(yte), "qat_epochs": QAT_EPOCHS}
            kw = dict(pyqinfer_domain=scheme in DOMAIN_SCHEMES, doc_string=f"pyqinfer demo model {name}: {SCHEMES[scheme]}")
            path = os.path.join(args.out, name + ".onnx")
            try:
                qt.export(q, Xte[:8], path, **kw)
                rec["checked"] = True
            except qt.ExportError as e:
                if "does not import" not in str(e):
                    raise
                # the pyqinfer-domain importer is not in this pyqinfer: write the file unchecked;
                # `pyqinfer demo` runs (and checks) it once pyqinfer.load imports the domain
                qt.export(q, Xte[:8], path, check=False, **kw)
                rec["checked"] = False
                rec["requires"] = "the pyqinfer-domain importer (pyqinfer.MultiThreshold)"
            rec["file"] = name + ".onnx"
            refs["ref_" + name] = out.numpy().astype(np.float32)
            manifest["models"].append(rec)
            print(f"  {name:14s} {wa:10s} PTQ {ptq_correct}/{len(yte)}  QAT {qat_correct}/{len(yte)}"
                  f"{'' if rec['checked'] else '  (written unchecked: needs ' + rec['requires'] + ')'}"
                  f"  ({time.time() - t0:.1f} s)",
                  file=sys.stderr)
    np.savez_compressed(os.path.join(args.out, "digits_test.npz"), x_test=xte, y_test=yte.astype(np.int64),
                        **refs)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out} in {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
