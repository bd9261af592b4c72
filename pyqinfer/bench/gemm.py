"""The GEMM benchmark: pyqinfer against ONNX Runtime and numpy, in one process.

For each shape (M, K, N) and thread count every engine is timed interleaved
(:mod:`pyqinfer.bench.timing`) on the same inputs:

==============  ===============================================================
engine          what runs
==============  ===============================================================
pyq_u8s8_i32    ``ops.matmul_integer`` uint8 A, int8 B packed once -> int32
pyq_u8s8_q8     ``ops.qlinear_matmul(mode="fp32")`` requantized to uint8
pyq_s8s8_i32    as pyq_u8s8_i32 with int8 activations
pyq_s8s8_q8     as pyq_u8s8_q8 with int8 activations and int8 output
pyq_u8s4_i32    as pyq_u8s8_i32 with int4 weights (``pack_weights(bits=4)``, nibbles on VNNI)
ort_u8s8_i32    ONNX Runtime MatMulInteger, B a constant initializer (pre-packed)
ort_s8s8_i32    the same with int8 activations
ort_u8s8_q8     ONNX Runtime QLinearMatMul u8s8 -> uint8, all but A constant
numpy_f32       ``a @ b`` in float32 (numpy's BLAS)
==============  ===============================================================

GOP/s = 2*M*N*K / median seconds. Ratios compare pyqinfer with ORT u8s8
MatMulInteger (int32 with int32, uint8 with QLinearMatMul's uint8); the
``exact_*`` fields say whether pyqinfer's output equals ORT's bit for bit
(``exact_u8s4_i32``: the int4-weight product equals the exact float64 sum).
``s4_vs_s8`` is the int4-weight GEMM over pyqinfer's own int8 GEMM in the same run.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import platform
import time

import numpy as np

from .. import __version__, _core, get_num_threads, ops, set_num_threads
from . import ort as _ort
from .peak import available_cores, measure_peak, peak_for_threads
from .timing import time_interleaved

#: The full shape set (M, K, N): batch-1 GEMV, small batch, square, and the N=K=4096 GEMV.
DEFAULT_SHAPES = [(1, 1024, 1024), (64, 1024, 1024), (512, 512, 512), (1024, 1024, 1024),
                  (2048, 2048, 2048), (1, 4096, 4096), (1, 8192, 8192)]
#: ``--quick``: the README's main job; well under 30 s on 2 cores.
QUICK_SHAPES = [(1, 1024, 1024), (64, 1024, 1024), (1024, 1024, 1024)]

ENGINES = ("pyq_u8s8_i32", "pyq_u8s8_q8", "pyq_s8s8_i32", "pyq_s8s8_q8",
           "ort_u8s8_i32", "ort_s8s8_i32", "ort_u8s8_q8", "pyq_u8s4_i32", "numpy_f32")
INT8_ENGINES = ENGINES[:-2]

# zero points and scales of the synthetic layer (realistic, nonzero activation zero points)
ZA_U8, ZA_S8, ZB = 128, -3, 0
# OpenBLAS workers spin for tens of ms after a call; measured: pyqinfer at 2 threads runs at
# half speed for ~50 ms after one numpy matmul
NUMPY_SETTLE_SECONDS = 0.3
A_SCALE, B_SCALE = 0.02, 0.01


def parse_shapes(text):
    """``"1x1024x1024,512x512x512"`` -> ``[(1, 1024, 1024), (512, 512, 512)]`` (M x K x N)."""
    shapes = []
    for item in str(text).split(","):
        item = item.strip().lower()
        if not item:
            continue
        parts = item.split("x")
        if len(parts) == 1 and parts[0].isdigit():  # "512" = 512^3
            parts = parts * 3
        try:
            m, k, n = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"bad shape {item!r}: expected MxKxN, e.g. 1x1024x1024") from None
        if min(m, k, n) <= 0:
            raise ValueError(f"bad shape {item!r}: M, K and N must be > 0")
        shapes.append((m, k, n))
    if not shapes:
        raise ValueError("no shapes given")
    return shapes


def _numpy_threads():
    """(context manager factory or None, description) for limiting numpy's BLAS threads."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        env = [f"{v}={os.environ[v]}" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                 "MKL_NUM_THREADS") if v in os.environ]
        desc = ("numpy uses its own BLAS thread count (threadpoolctl not installed"
                + (f"; {', '.join(env)}" if env else f"; default: up to {available_cores()}") + ")")
        return None, desc
    return (lambda n: threadpool_limits(limits=n, user_api="blas")), \
        "numpy BLAS threads limited to the thread count (threadpoolctl)"


def environment(peak=None):
    """Facts about this run: versions, CPU, kernel, peak."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    feats = dict(_core.cpu_features())
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "pyqinfer": __version__,
        "cpu": cpu,
        "cores": available_cores(),
        "cpu_features": [k for k, v in feats.items() if v],
        "kernel": _core.gemm_kernel_name(),
        "kernel_path": _core.get_kernel_path(),
        "onnxruntime": _ort.version(),
        "numpy": np.__version__,
        "numpy_threads": _numpy_threads()[1],
        "python": platform.python_version(),
        "peak": peak,
        "loadavg_1min": _loadavg(),
    }


class GemmCase:
    """Inputs and engine callables for one shape, reused across thread counts."""

    def __init__(self, M, K, N, seed=0):
        rng = np.random.default_rng([M, K, N, seed])
        self.shape = (M, K, N)
        self.a_u8 = rng.integers(0, 256, (M, K), dtype=np.uint8)
        self.a_s8 = rng.integers(-128, 128, (M, K), dtype=np.int8)
        self.b = rng.integers(-128, 128, (K, N), dtype=np.int8)
        self.w = ops.pack_weights(self.b, np.int8(ZB))
        self.b4 = rng.integers(-8, 8, (K, N), dtype=np.int8)
        self.w4 = ops.pack_weights(self.b4, np.int8(ZB), bits=4)
        self._exact4 = None
        self.a_f32 = self.a_u8.astype(np.float32)
        self.b_f32 = self.b.astype(np.float32)
        # |acc| has std ~ 74^2 sqrt(K); aim the requantized output at a std of ~40 levels
        eff = 40.0 / (74.0 * 74.0 * np.sqrt(K))
        self.y_scale = np.float32(A_SCALE * B_SCALE / eff)

    def engines(self, threads, with_ort=True):
        a_u8, a_s8, w, sy = self.a_u8, self.a_s8, self.w, self.y_scale
        zy_u8, zy_s8 = np.uint8(128), np.int8(0)
        fns = {
            "pyq_u8s8_i32": lambda: ops.matmul_integer(a_u8, w, ZA_U8),
            "pyq_u8s8_q8": lambda: ops.qlinear_matmul(a_u8, A_SCALE, ZA_U8, w, B_SCALE, ZB, sy,
                                                      zy_u8, mode="fp32"),
            "pyq_s8s8_i32": lambda: ops.matmul_integer(a_s8, w, ZA_S8),
            "pyq_s8s8_q8": lambda: ops.qlinear_matmul(a_s8, A_SCALE, ZA_S8, w, B_SCALE, ZB, sy,
                                                      zy_s8, mode="fp32"),
            "pyq_u8s4_i32": lambda: ops.matmul_integer(a_u8, self.w4, ZA_U8),
        }
        if with_ort:
            b = self.b
            fns["ort_u8s8_i32"] = _ort.matmul_integer(a_u8, b, ZA_U8, np.int8(ZB), threads)
            fns["ort_s8s8_i32"] = _ort.matmul_integer(a_s8, b, np.int8(ZA_S8), np.int8(ZB), threads)
            fns["ort_u8s8_q8"] = _ort.qlinear_matmul(a_u8, A_SCALE, np.uint8(ZA_U8), b, B_SCALE,
                                                     np.int8(ZB), sy, zy_u8, threads)
        a_f, b_f = self.a_f32, self.b_f32
        fns["numpy_f32"] = lambda: a_f @ b_f
        return fns

    def exact_int32(self, a, za):
        """The exact int32 product via float64 BLAS (exact: |acc| < 2^53, no int32 wrap here)."""
        return (a.astype(np.float64) - za) @ self.b.astype(np.float64)

    def exact_u8s4(self):
        """The exact int4-weight product (computed once per shape)."""
        if self._exact4 is None:
            self._exact4 = (self.a_u8.astype(np.float64) - ZA_U8) @ self.b4.astype(np.float64)
        return self._exact4


class _ForeignCpu:
    """CPU time other processes used while the block ran, as a fraction of the machine.

    Linux only (/proc/stat); ``fraction`` is None elsewhere. On a 2-core VM shared with
    other jobs this is the honest noise indicator for each row.
    """

    def __enter__(self):
        self.fraction = None
        self._t0, self._busy0, self._own0 = time.perf_counter(), self._busy(), self._own()
        return self

    def __exit__(self, *exc):
        busy1 = self._busy()
        if self._busy0 is None or busy1 is None:
            return False
        wall = time.perf_counter() - self._t0
        other = (busy1 - self._busy0) - (self._own() - self._own0)
        self.fraction = max(0.0, other) / (wall * available_cores()) if wall > 0 else None
        return False

    @staticmethod
    def _own():
        t = os.times()
        return t.user + t.system

    @staticmethod
    def _busy():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _equal(x, y):
    return bool(x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y))


def bench_case(case, threads, peak, *, min_runs=5, target_seconds=0.3, with_ort=True):
    """One record: every engine on ``case`` with ``threads`` threads."""
    M, K, N = case.shape
    fns = case.engines(threads, with_ort=with_ort)
    limit_numpy, _ = _numpy_threads()
    old = get_num_threads()
    set_num_threads(threads)
    try:
        with _ForeignCpu() as foreign:
            # numpy first, on its own: OpenBLAS synchronises its workers by spinning, so it
            # collapses when ORT's or pyqinfer's idle workers still spin on the 2 cores, and its
            # own spinning workers would slow whichever engine ran next
            np_fn = fns.pop("numpy_f32")
            with (limit_numpy(threads) if limit_numpy is not None else contextlib.nullcontext()):
                times = time_interleaved({"numpy_f32": np_fn}, min_runs=min_runs,
                                         target_seconds=target_seconds)
            time.sleep(NUMPY_SETTLE_SECONDS)
            # correctness (this is also a warm-up)
            exact = {"exact_u8s4_i32": bool(np.array_equal(fns["pyq_u8s4_i32"](), case.exact_u8s4()))}
            if with_ort:
                outs = {name: fns[name]() for name in INT8_ENGINES}
                exact = {
                    "exact_u8s8_i32": _equal(outs["pyq_u8s8_i32"], outs["ort_u8s8_i32"]),
                    "exact_s8s8_i32": _equal(outs["pyq_s8s8_i32"], outs["ort_s8s8_i32"]),
                    "exact_u8s8_q8": _equal(outs["pyq_u8s8_q8"], outs["ort_u8s8_q8"]),
                }
                if not (exact["exact_u8s8_i32"] and exact["exact_s8s8_i32"]):
                    # say who is right: the exact sum via float64
                    ref_u8 = case.exact_int32(case.a_u8, ZA_U8)
                    ref_s8 = case.exact_int32(case.a_s8, ZA_S8)
                    exact["pyq_equals_exact"] = bool(np.array_equal(outs["pyq_u8s8_i32"], ref_u8)
                                                     and np.array_equal(outs["pyq_s8s8_i32"], ref_s8))
                    exact["ort_equals_exact"] = bool(np.array_equal(outs["ort_u8s8_i32"], ref_u8)
                                                     and np.array_equal(outs["ort_s8s8_i32"], ref_s8))
                del outs
            times.update(time_interleaved(fns, min_runs=min_runs, target_seconds=target_seconds))
    finally:
        set_num_threads(old)
    ops_count = 2.0 * M * N * K
    gops = {n: ops_count / t["median"] / 1e9 for n, t in times.items()}
    pk = peak_for_threads(peak, threads)
    rec = {
        "M": M, "K": K, "N": N, "threads": threads,
        "gops": gops,
        "seconds": {n: t["median"] for n, t in times.items()},
        "runs": {n: t["runs"] for n, t in times.items()},
        "peak_gops": pk,
        "loadavg_1min": _loadavg(),
        "other_cpu_fraction": foreign.fraction,
        "frac_peak": {n: (gops[n] / pk if pk else None) for n in INT8_ENGINES + ("pyq_u8s4_i32",) if n in gops},
        "ratio": {"s4_vs_s8": gops["pyq_u8s4_i32"] / gops["pyq_u8s8_i32"]},
    }
    if with_ort:
        ort_u8 = gops["ort_u8s8_i32"]
        rec["ratio"].update({
            "u8s8_i32": gops["pyq_u8s8_i32"] / ort_u8,
            "s8s8_i32": gops["pyq_s8s8_i32"] / ort_u8,
            "s8s8_vs_ort_s8s8": gops["pyq_s8s8_i32"] / gops["ort_s8s8_i32"],
            "u8s8_q8": gops["pyq_u8s8_q8"] / gops["ort_u8s8_q8"],
        })
    rec.update(exact)
    return rec


def wait_for_idle(max_other, timeout=60.0, quiet_seconds=2.0):
    """Wait until other processes use at most ``max_other`` of the machine for ``quiet_seconds``.

    Returns the seconds waited (gives up after ``timeout``; the row's other% then tells).
    """
    t0 = time.perf_counter()
    quiet = 0.0
    while quiet < quiet_seconds and time.perf_counter() - t0 < timeout:
        with _ForeignCpu() as probe:
            time.sleep(0.25)
        if probe.fraction is None:
            break
        quiet = quiet + 0.25 if probe.fraction <= max_other else 0.0
    return time.perf_counter() - t0


def run_gemm_bench(shapes=None, threads=None, *, min_runs=5, target_seconds=0.3, peak=None,
                   with_ort=None, progress=None, max_other=None, attempts=3):
    """Run the benchmark; return a list of records (dicts), one per (threads, shape).

    ``shapes``: list of (M, K, N), default :data:`DEFAULT_SHAPES`. ``threads``: list of
    thread counts, default ``[1, cores]``. ``peak``: a :func:`measure_peak` result (measured
    if None). ``with_ort``: default True if onnxruntime imports. ``progress``: an optional
    callable taking each record as it is produced.

    ``max_other`` (a fraction, e.g. 0.05) is for shared machines: before each row wait
    (up to 60 s) until other processes are quiet, and re-measure a row during which they
    used more than ``max_other`` of the CPU, up to ``attempts`` times in all; the record
    kept is the attempt with the least foreign CPU, and ``attempts`` says how many ran.
    """
    shapes = list(shapes or DEFAULT_SHAPES)
    if threads is None:
        threads = sorted({1, available_cores()})
    if with_ort is None:
        with_ort = _ort.available()
    if peak is None:
        peak = measure_peak()
    return run_rows(shapes, threads, lambda shape: GemmCase(*shape),
                    lambda case, th: bench_case(case, th, peak, min_runs=min_runs, target_seconds=target_seconds,
                                                with_ort=with_ort),
                    max_other=max_other, attempts=attempts, progress=progress)


def run_rows(keys, threads, make_case, bench, *, max_other=None, attempts=3, progress=None):
    """The benchmarks' outer loop: for each thread count and key, ``bench(case, threads)``
    (one record; ``case = make_case(key)``, built once per key). With ``max_other`` (a
    fraction), wait for a quiet machine before each row and re-measure a row whose
    ``other_cpu_fraction`` exceeded it, up to ``attempts`` times; keep the cleanest."""
    cases = {}
    records = []
    for th in threads:
        for key in keys:
            case = cases[key] if key in cases else cases.setdefault(key, make_case(key))
            tries = []
            for _ in range(max(1, attempts) if max_other is not None else 1):
                if max_other is not None:
                    wait_for_idle(max_other)
                tries.append(bench(case, th))
                other = tries[-1]["other_cpu_fraction"]
                if max_other is None or other is None or other <= max_other:
                    break
            rec = min(tries, key=lambda r: r["other_cpu_fraction"] or 0.0)
            rec["attempts"] = len(tries)
            records.append(rec)
            if progress:
                progress(rec)
    return records


# ------------------------------------------------------------------------- formatting

_COLUMNS = [  # (header, engine) for the GOP/s columns
    ("u8s8", "pyq_u8s8_i32"), ("u8s8>u8", "pyq_u8s8_q8"), ("s8s8", "pyq_s8s8_i32"),
    ("s8s8>s8", "pyq_s8s8_q8"), ("ORT u8s8", "ort_u8s8_i32"), ("ORT s8s8", "ort_s8s8_i32"),
    ("ORT QLMM", "ort_u8s8_q8"), ("np f32", "numpy_f32"), ("u8s4", "pyq_u8s4_i32"),
]


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def format_table(records, markdown=False):
    """A text (or Markdown) table of :func:`run_gemm_bench` records."""
    head = ["M x K x N", "thr"] + [h for h, _ in _COLUMNS] + \
        ["u8s8/ORT", "s8s8/ORT", "u8>u8/QLMM", "s4/s8", "u8s8 %pk", "s8s8 %pk", "exact", "other%"]
    rows = []
    for r in records:
        g, ratio, fp = r["gops"], r.get("ratio", {}), r["frac_peak"]
        keys = ("exact_u8s8_i32", "exact_s8s8_i32", "exact_u8s8_q8", "exact_u8s4_i32")
        ex = [r.get(k) for k in keys]
        exact = "-" if all(e is None for e in ex) else (
            "yes" if all(e is not False for e in ex) else
            "NO(" + ",".join(n for n, e in zip(("u8", "s8", "q8", "s4"), ex) if e is False) + ")")
        rows.append([f"{r['M']}x{r['K']}x{r['N']}", str(r["threads"])]
                    + [_fmt(g.get(e), ".1f") for _, e in _COLUMNS]
                    + [_fmt(ratio.get("u8s8_i32"), ".2f"), _fmt(ratio.get("s8s8_i32"), ".2f"),
                       _fmt(ratio.get("u8s8_q8"), ".2f"), _fmt(ratio.get("s4_vs_s8"), ".2f"),
                       _fmt(None if fp.get("pyq_u8s8_i32") is None else 100 * fp["pyq_u8s8_i32"], ".1f"),
                       _fmt(None if fp.get("pyq_s8s8_i32") is None else 100 * fp["pyq_s8s8_i32"], ".1f"),
                       exact, _fmt(None if r.get("other_cpu_fraction") is None
                                   else 100 * r["other_cpu_fraction"], ".0f")])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * (len(head) - 3) + [":-:", "--:"]) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt_row = lambda row: "  ".join(c.rjust(w) for c, w in zip(row, widths))  # noqa: E731
    return "\n".join([fmt_row(head), fmt_row(["-" * w for w in widths])] + [fmt_row(r) for r in rows])


LEGEND = """\
GOP/s = 2*M*N*K / median time. u8s8/s8s8: pyqinfer ops.matmul_integer (int32 out), uint8/int8
activations, int8 weights packed once; u8s8>u8, s8s8>s8: ops.qlinear_matmul mode=fp32 (8-bit out).
np f32: numpy float32 a @ b, timed before (not interleaved with) the int8 engines.
u8s4: ops.matmul_integer with int4 weights (pack_weights(bits=4); packed nibbles on VNNI);
s4/s8: u8s4 GOP/s over pyqinfer's int8-weight u8s8 in the same run.
ORT u8s8/s8s8: onnxruntime MatMulInteger, weight a constant initializer; ORT QLMM: QLinearMatMul u8s8.
u8s8/ORT and s8s8/ORT: pyqinfer int32 GOP/s over ORT u8s8 MatMulInteger; u8>u8/QLMM: uint8-out
pyqinfer over ORT QLinearMatMul. %pk: of the measured VNNI peak x min(threads, cores).
exact: pyqinfer int32 == ORT int32 (u8s8 and s8s8) and uint8 == QLinearMatMul, bit for bit;
u8s4 == the exact float64 sum.
other%: CPU other processes used during the row, % of all cores (noise; want ~0)."""
