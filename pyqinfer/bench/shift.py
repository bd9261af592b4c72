"""The shift-vs-multiply benchmark: shift kernel, multiply kernel on the same codes,
and pyqinfer's uniform int8 kernel, in one run (docs/semantics.md §12.4a).

For each case (GEMV, GEMM, ResNet-18-like 3x3 convolution) and weight scheme the
three kernels are timed interleaved (:mod:`pyqinfer.bench.timing`) on the same
activations:

==========  ==================================================================
kernel      what runs
==========  ==================================================================
shift       ``ops.shift_matmul(kernel="shift")`` / ``ops.shift_conv``: every
            product a shift (int16 / int32 lanes by the static bound)
multiply    ``kernel="multiply"``: the same terms decoded once (int8 VNNI GEMM,
            or the 4-bit table kernel for batch <= 16 when <= 16 values)
int8        ``ops.matmul_integer`` / ``ops.conv_integer`` with random int8
            weights of the same shape (the uniform 8-bit baseline)
==========  ==================================================================

Schemes (weights as terms; the code formats map b-bit codes to these):
``pot4`` one term, sign and exponent 0..6 or the zero code (15 levels, a 4-bit
code); ``apot4`` two terms 2^{0,2,4} + {0, 2^1} with a common sign, or zero (13
levels, fits a 4-bit code; an APoT-style additive set).

GOP/s = 2 * MACs / median seconds. ``bit_exact``: shift and multiply against the
int64 oracle built from the decoded weights (``shift_accumulate_int64``, rule
exact; for convolutions an independent float64 sliding-window sum), int8 against
the exact float64 product.

The energy column is a **hardware model**, not a CPU measurement: Horowitz,
"Computing's Energy Problem", ISSCC 2014, 45 nm, 0.9 V, arithmetic only (no
memory): a multiply-accumulate is an 8-bit multiply (0.2 pJ) plus a 32-bit add
(0.1 pJ); a shift-add is a 32-bit add (0.1 pJ) plus a shift, which the table does
not list and is modelled as a 16-bit add (0.05 pJ, an assumption); off terms cost
nothing. On a CPU the instruction overhead dominates (x86 note §9).
"""
from __future__ import annotations

import time

import numpy as np

from .. import _core, get_num_threads, ops, set_num_threads
from ..reference.shift_conv import shift_accumulate_int64
from .timing import time_interleaved

PJ_MUL8, PJ_ADD32, PJ_ADD16 = 0.2, 0.1, 0.05
PJ_MAC = PJ_MUL8 + PJ_ADD32
PJ_SHIFT_ADD = PJ_ADD16 + PJ_ADD32

SCHEMES = ("pot4", "apot4")
KERNELS = ("shift", "multiply", "int8", "hybrid")
#: extra shift engines of ``--ab-rows`` (GEMM cases): the kernel forced with
#: ``_core.set_shift_rows_variant`` (1 exponent buckets, 2 chunks of 8, 3 chunks of 16,
#: 4 the column kernels, 5 the packed fields; all but 4 need >= 32 rows and 8-bit activations)
AB_ROWS = {"shift:bucket": 1, "shift:chunk8": 2, "shift:chunk16": 3, "shift:columns": 4, "shift:packed48": 5}

#: (name, M, K, N) GEMV and GEMM shapes
GEMM_SHAPES = [("gemv 1x4096x4096", 1, 4096, 4096), ("gemv 1x8192x8192", 1, 8192, 8192),
               ("gemm 256x1024x1024", 256, 1024, 1024), ("gemm 1024x1024x1024", 1024, 1024, 1024)]
#: (name, H=W, C, OC) ResNet-18-like 3x3 stride-1 pad-1 layers, batch 1
CONV_LAYERS = [("conv3x3 56x56x64", 56, 64, 64), ("conv3x3 28x28x128", 28, 128, 128),
               ("conv3x3 14x14x256", 14, 256, 256), ("conv3x3 7x7x512", 7, 512, 512)]
QUICK = ["gemv 1x4096x4096", "gemm 256x1024x1024", "conv3x3 28x28x128"]


def make_terms(scheme, K, N, rng, T_shape=None):
    """Random weights of ``scheme`` as terms (signs, exponents) int8 [T, K, N]."""
    if scheme == "pot4":
        sign = rng.choice(np.array([-1, 1], np.int8), (1, K, N))
        zero = rng.random((1, K, N)) < 1 / 15
        s = np.where(zero, 0, sign).astype(np.int8)
        e = rng.integers(0, 7, (1, K, N)).astype(np.int8)
        return s, e
    if scheme == "apot4":
        sign = rng.choice(np.array([-1, 1], np.int8), (K, N))
        zero = rng.random((K, N)) < 1 / 13
        s1 = np.where(zero, 0, sign)
        e1 = rng.choice(np.array([0, 2, 4], np.int8), (K, N))
        on2 = (rng.random((K, N)) < 0.5) & ~zero
        s2 = np.where(on2, sign, 0)
        e2 = np.ones((K, N), np.int8)
        return np.stack([s1, s2]).astype(np.int8), np.stack([e1, e2]).astype(np.int8)
    raise ValueError(f"unknown scheme {scheme!r}; choose from {SCHEMES}")


def _model_pj(signs, macs_per_weight):
    """(shift-kernel pJ, multiply pJ) of the hardware model for one pass over the weights."""
    terms = int(np.count_nonzero(signs))
    weights = signs.shape[1] * signs.shape[2]
    return terms * macs_per_weight * PJ_SHIFT_ADD, weights * macs_per_weight * PJ_MAC


def _conv_oracle(x_nhwc, za, w_dec):
    """Exact int64 3x3 pad-1 convolution via float64 sliding windows (independent of im2col)."""
    xp = np.pad(x_nhwc.astype(np.float64) - za, ((0, 0), (1, 1), (1, 1), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))  # n, H, W, C, 3, 3
    return np.einsum("nhwcij,ocij->nhwo", win, w_dec.astype(np.float64), optimize=True).astype(np.int64)


class Case:
    """Inputs and the three engines of one (shape, scheme)."""

    def __init__(self, name, scheme, seed=0):
        self.name, self.scheme = name, scheme
        rng = np.random.default_rng([seed, len(name), SCHEMES.index(scheme)])
        self.za = 128
        gemm = {n: (m, k, nn) for n, m, k, nn in GEMM_SHAPES}
        conv = {n: (h, c, oc) for n, h, c, oc in CONV_LAYERS}
        if name in gemm:
            M, K, N = gemm[name]
            self.kind, self.macs = "gemm", M * K * N
            self.a = rng.integers(0, 256, (M, K), dtype=np.uint8)
            self.signs, self.exps = make_terms(scheme, K, N, rng)
            self.w = ops.pack_shift_weights(self.signs, self.exps)
            self.b8 = rng.integers(-128, 128, (K, N), dtype=np.int8)
            self.w8 = ops.pack_weights(self.b8)
            self.macs_per_weight = M
        elif name in conv:
            H, C, OC = conv[name]
            self.kind, self.macs = "conv", H * H * 9 * C * OC
            self.a = rng.integers(0, 256, (1, H, H, C), dtype=np.uint8)
            s, e = make_terms(scheme, 9 * C, OC, rng)
            # terms as [T, OC, C, KH, KW]
            self.signs = s.reshape(s.shape[0], C, 3, 3, OC).transpose(0, 4, 1, 2, 3).copy()
            self.exps = e.reshape(e.shape[0], C, 3, 3, OC).transpose(0, 4, 1, 2, 3).copy()
            self.w = ops.pack_shift_conv_weights(self.signs, self.exps)
            self.b8 = rng.integers(-128, 128, (OC, C, 3, 3), dtype=np.int8)
            self.w8 = ops.pack_conv_weights(self.b8)
            self.macs_per_weight = H * H
        else:
            raise ValueError(f"unknown case {name!r}")

    def engines(self, ab_rows=False):
        a, za = self.a, self.za
        if self.kind == "gemm":
            def shift(variant):
                def run():
                    _core.set_shift_rows_variant(variant)
                    return ops.shift_matmul(a, self.w, a_zero_point=za, kernel="shift")
                return run

            fns = {
                "shift": shift(0),
                "multiply": lambda: ops.shift_matmul(a, self.w, a_zero_point=za, kernel="multiply"),
                "int8": lambda: ops.matmul_integer(a, self.w8, za),
                "hybrid": lambda: ops.shift_matmul(a, self.w, a_zero_point=za, kernel="hybrid"),
            }
            if ab_rows:
                fns.update({name: shift(v) for name, v in AB_ROWS.items()})
            return fns
        geo = dict(pads=(1, 1, 1, 1), layout="NHWC")
        return {
            "shift": lambda: ops.shift_conv(a, self.w, x_zero_point=za, kernel="shift", **geo),
            "multiply": lambda: ops.shift_conv(a, self.w, x_zero_point=za, kernel="multiply", **geo),
            "int8": lambda: ops.conv_integer(a, self.w8, np.uint8(za), **geo),
            "hybrid": lambda: ops.shift_conv(a, self.w, x_zero_point=za, kernel="hybrid", **geo),
        }

    def exact(self, outs):
        """{kernel: bool} bit-exactness of each output against its oracle."""
        if self.kind == "gemm":
            want = shift_accumulate_int64(self.a, self.signs, self.exps, a_zero_point=self.za)
            want8 = ((self.a.astype(np.float64) - self.za) @ self.b8.astype(np.float64)).astype(np.int64)
        else:
            dec = np.sum(np.where(self.signs != 0, self.signs.astype(np.int64) << np.where(self.signs != 0, self.exps, 0), 0), axis=0)
            want = _conv_oracle(self.a, self.za, dec)
            want8 = _conv_oracle(self.a, self.za, self.b8)
        return {k: bool(np.array_equal(y, want8 if k == "int8" else want)) for k, y in outs.items()}

    def im2col_seconds(self, repeats=5):
        """The gather cost of the convolution path (median)."""
        if self.kind != "conv":
            return None
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ops.shift.im2col_nhwc(self.a, self.za, (3, 3), (1, 1, 1, 1), (1, 1), (1, 1))
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts))


def bench_case(name, scheme, threads, *, min_runs=5, target_seconds=0.3, ab_rows=False):
    """Records (one per kernel) for one (case, scheme) at ``threads`` threads; with
    ``ab_rows`` (GEMM cases) also one per forced rows-in-lanes variant (``AB_ROWS``)."""
    case = Case(name, scheme)
    fns = case.engines(ab_rows)
    old = get_num_threads()
    set_num_threads(threads)
    try:
        outs = {k: f() for k, f in fns.items()}  # also the warm-up
        exact = case.exact(outs)
        del outs
        times = time_interleaved(fns, min_runs=min_runs, target_seconds=target_seconds)
        gather = case.im2col_seconds()
        kernel_names = {}
        if case.kind == "gemm":
            for k in fns:
                if k != "int8":
                    _core.set_shift_rows_variant(AB_ROWS.get(k, 0))
                    kernel_names[k] = ops.shift_kernel_name(case.a, case.w, a_zero_point=case.za,
                                                            kernel=k if k in ("multiply", "hybrid") else "shift")
    finally:
        set_num_threads(old)
        _core.set_shift_rows_variant(0)
    shift_pj, mul_pj = _model_pj(case.signs if case.kind == "gemm" else
                                 case.signs.reshape(case.signs.shape[0], case.signs.shape[1], -1),
                                 case.macs_per_weight)
    recs = []
    for k in fns:
        sec = times[k]["median"]
        recs.append({
            "shape": name, "scheme": scheme if k != "int8" else "int8", "kernel": k, "threads": threads,
            "gops": 2.0 * case.macs / sec / 1e9, "seconds": sec, "runs": times[k]["runs"],
            "bit_exact": exact[k], "macs": case.macs,
            "model_energy_uj": (shift_pj if k.startswith("shift") else mul_pj) / 1e6,  # hybrid: as multiply (most columns)
            "kernel_name": kernel_names.get(k),
            "im2col_seconds": gather if k != "int8" else None,
            "codes_scheme": scheme,
        })
    for r in recs:
        r["vs_multiply"] = r["gops"] / recs[1]["gops"]
        r["vs_int8"] = r["gops"] / recs[2]["gops"]
    return recs


def run(names=None, schemes=SCHEMES, threads=2, *, min_runs=5, target_seconds=0.3, progress=None, ab_rows=False):
    names = list(names or [n for n, *_ in GEMM_SHAPES] + [n for n, *_ in CONV_LAYERS])
    records = []
    for name in names:
        for scheme in schemes:
            recs = bench_case(name, scheme, threads, min_runs=min_runs, target_seconds=target_seconds,
                              ab_rows=ab_rows)
            records.extend(recs)
            if progress:
                progress(recs)
    return records


def format_table(records):
    head = ["shape", "scheme", "kernel", "GOP/s", "x mul", "x int8", "bit_exact", "model uJ*", "note"]
    rows = []
    for r in records:
        note = r.get("kernel_name") or ""
        if r.get("im2col_seconds") is not None:
            note = f"im2col {1e3 * r['im2col_seconds']:.2f} ms of {1e3 * r['seconds']:.2f} ms"
        rows.append([r["shape"], r["codes_scheme"], r["kernel"], f"{r['gops']:.1f}", f"{r['vs_multiply']:.2f}",
                     f"{r['vs_int8']:.2f}", "yes" if r["bit_exact"] else "NO", f"{r['model_energy_uj']:.1f}", note])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = lambda row: "  ".join(c.ljust(w) if i in (0, 1, 2, 8) else c.rjust(w)  # noqa: E731
                                for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


LEGEND = """\
GOP/s = 2*MACs / median time (interleaved timing, same activations: uint8, zero point 128).
shift: kernel="shift"; multiply: kernel="multiply" on the same terms; int8: uniform int8 weights.
x mul, x int8: GOP/s over the multiply / int8 kernel of the same row group, same run.
bit_exact: shift and multiply == the int64 oracle of the decoded weights; int8 == exact float64 sum.
model uJ*: HARDWARE MODEL, not a CPU measurement: Horowitz ISSCC 2014 45 nm arithmetic energy,
  MAC = 8b mult 0.2 pJ + 32b add 0.1 pJ; shift-add = 32b add 0.1 pJ + shift modelled as a 16b add
  0.05 pJ (the table has no shift); off terms free; memory traffic excluded.
hybrid: kernel="hybrid": VNNI tiles on the decoded int8 values of most columns with shift-add
  units of the other columns in the same loop (section 12.4a); falls back to multiply where
  it does not apply (the kernel name says which).
shift:bucket, shift:chunk8, shift:chunk16, shift:columns, shift:packed48 (--ab-rows): the shift kernel with its
  variant forced (A/B in the same run; the plain shift row takes the automatic choice).
note: the shift kernel's lane plan (int16/int32/wide panels) or the multiply route; for
  convolutions the im2col gather time inside the measured time."""


def plot(records, path):
    """A bar chart of GOP/s per shape and kernel; needs matplotlib (extra 'plot')."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'pyqinfer[plot]' (or pip install matplotlib)") from None
    groups = []
    for r in records:
        key = (r["shape"], r["codes_scheme"])
        if key not in groups:
            groups.append(key)
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(groups)), 4.5))
    width = 0.8 / len(KERNELS)
    for i, k in enumerate(KERNELS):
        vals = [next((r["gops"] for r in records if (r["shape"], r["codes_scheme"]) == g and r["kernel"] == k), 0)
                for g in groups]
        ax.bar(np.arange(len(groups)) + (i - (len(KERNELS) - 1) / 2) * width, vals, width, label=k)
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels([f"{s}\n{sc}" for s, sc in groups], fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("GOP/s (median)")
    ax.set_yscale("log")
    ax.set_title("pyqinfer shift vs multiply vs int8 (same run)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
