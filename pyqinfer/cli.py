"""The ``pyqinfer`` command line: ``selfcheck``, ``bench gemm``, ``bench conv``, ``run``, ``inspect``, ``verify`` and ``demo``.

Every entry point is ``main(argv=None) -> int`` so tests can call it in-process.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

EPILOG = """\
examples:
  pyqinfer selfcheck                         # bit-exactness of every kernel path (~seconds)
  pyqinfer bench gemm --quick                # small shape set, 1 and all threads
  pyqinfer bench gemm --threads 1,2          # the full shape set of docs/performance.md
  pyqinfer bench gemm --shapes 1x4096x4096,1024 --threads 1 --json out.json
  pyqinfer bench gemm --quick --json -       # JSON on stdout, no table
  pyqinfer demo                              # the shipped digits models: accuracy, bit-exactness, latency
  pyqinfer inspect model.onnx                # layers, schemes, weight bytes, MACs, kernels
  pyqinfer run model.onnx --inputs x.npz --out y.npz
  pyqinfer verify model.onnx --html report.html   # per layer: contract, float reference, ORT
  python -m pyqinfer --help                  # the same without the console script

environment: PYQINFER_NUM_THREADS (default thread count), PYQINFER_KERNEL_PATH
(force a kernel path: scalar, avx2, avx512bw, avx512vnni, or auto).
"""

RUN_EPILOG = """\
examples:
  python -c "import numpy as np; np.savez('x.npz', input=np.random.rand(1, 3, 32, 32).astype('float32'))"
  pyqinfer run model.onnx --inputs x.npz --out y.npz
  pyqinfer run model.onnx --inputs x.npz --add-rule onnx     # ONNX reference rule for quantized Add

Unsupported models fail with an error naming the node, its op type and what is missing.
"""

VERIFY_DESCRIPTION = """\
Run MODEL with the integer engine, keeping every intermediate tensor, and
compare each layer, fed with the engine's own inputs, with:
  1. the integer contract (pyqinfer.reference): must be bit-exact;
  2. a float64 reference of the same graph (dequantize, float64 op, quantize
     with round-half-to-even and saturation), every mismatch classified with
     exact rational arithmetic as a float32-rounding 'tie' or a 'real' error;
  3. ONNX Runtime when it is installed (a copy of the model with the
     intermediates as outputs).
Prints per layer: elements compared, exact matches, ties, real errors, the
maximum difference in LSB, and the first divergent layer. Definitions and a
worked example: docs/verify.md.
"""

VERIFY_EPILOG = """\
columns: contract = exact matches with pyqinfer.reference / elements (the
engine must equal it); float = exact matches with the float64 reference, then
its mismatches split into 'ties' (the engine equals the contract, differs from
the float reference by 1 LSB, and the exact real value lies within the
documented float32 error of the rounding boundary between them) and 'real'
errors; maxLSB = largest |difference|; ORT = exact matches with ONNX Runtime.

exit status: 0 bit-exact with the contract (and with ORT when compared); 1 not
bit-exact; 2 the model or inputs could not be verified.

examples:
  pyqinfer verify model.onnx                           # random inputs, seed 0, batch 1
  pyqinfer verify model.onnx --seed 3 --batch 8 --no-ort
  pyqinfer verify model.onnx --inputs x.npz --json report.json --html report.html
  pyqinfer verify model.onnx --json - | jq .first_divergent
"""

GEMM_EPILOG = """\
shapes are MxKxN (A is [M,K], B is [K,N]); a single number S means SxSxS.
default shapes: 1x1024x1024, 64x1024x1024, 512x512x512, 1024x1024x1024,
2048x2048x2048, 1x4096x4096, 1x8192x8192. --quick: 1x1024x1024, 64x1024x1024, 1024x1024x1024.

Each engine is warmed up and timed interleaved with the others (blocks of calls,
round-robin), until it has --repeats samples and --min-time seconds; the median is
reported. GOP/s = 2*M*N*K / median seconds. Columns are explained under the table.

examples:
  pyqinfer bench gemm --threads 1,2
  pyqinfer bench gemm --shapes 1x1024x1024,2048 --threads 1 --repeats 10
  pyqinfer bench gemm --quick --json results.json
  pyqinfer bench gemm --quick --kernel-path avx2    # time a slower kernel path
  pyqinfer bench gemm --threads 1,2 --max-other 5   # on a shared VM: wait for quiet, retry noisy rows
"""


CONV_EPILOG = """\
layers (batch 1, uint8 x, int8 w, per-channel scales, int32 bias, uint8 out, fp32 mode):
  r18_3x3_64x56 r18_3x3_128x28 r18_3x3_256x14 r18_3x3_512x7   ResNet-18 3x3, pad 1
  r18_3x3_64to128_s2                                           3x3 stride 2, 56x56 -> 28x28
  mb2_dw_144x56 mb2_dw_384x14                                  depthwise 3x3 (group = C)
  mb2_pw_24to144x56 mb2_pw_144to24x56 mb2_pw_64to384x14 mb2_pw_160to960x7   pointwise 1x1
--quick: r18_3x3_64x56, r18_3x3_512x7, mb2_dw_144x56, mb2_pw_24to144x56.

examples:
  pyqinfer bench conv --threads 1,2
  pyqinfer bench conv --layers r18_3x3_64x56,mb2_pw_24to144x56 --threads 2 --json out.json
"""

# ------------------------------------------------------------------------- selfcheck

SELFCHECK_SHAPES = [(1, 1, 1), (1, 16, 3), (5, 37, 19), (7, 64, 65), (13, 200, 70), (70, 300, 129)]
DTYPE_PAIRS = [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8), (np.int8, np.uint8)]


def _pow2(x):
    return np.float32(2.0 ** np.round(np.log2(x)))


def _selfcheck_case(rng, a_dt, b_dt, M, K, N, per_channel, mode):
    """Random operands for one check; pot mode gets power-of-two scales."""
    from . import reference as R

    ai, bi = np.iinfo(a_dt), np.iinfo(b_dt)
    a = rng.integers(ai.min, ai.max + 1, (M, K)).astype(a_dt)
    b = rng.integers(bi.min, bi.max + 1, (K, N)).astype(b_dt)
    za = a_dt(rng.integers(ai.min, ai.max + 1))
    zb = rng.integers(bi.min, bi.max + 1, N if per_channel else None)
    zb = np.asarray(zb).astype(b_dt)
    sa = np.float32(rng.uniform(1e-3, 0.1))
    sb = np.asarray(rng.uniform(1e-3, 0.1, N if per_channel else None), np.float32)
    bias = rng.integers(-2**20, 2**20, N).astype(np.int32)
    if mode == "pot":
        sa, sb = _pow2(sa), np.asarray(2.0 ** np.round(np.log2(sb)), np.float32)
    acc = R.accumulate(a, b, za, zb, bias).astype(np.float64)
    S = 100.0 / max(np.abs(acc).max(), 1.0)
    sy = np.float32(float(sa) * float(np.max(sb)) / S)
    if mode == "pot":
        # every channel's effective scale must be a power of two: use one b scale
        sb = np.asarray(np.full(N, np.max(sb)) if per_channel else np.max(sb), np.float32)
        sy = _pow2(sy)
    out_dt = a_dt if rng.integers(2) else (np.int8 if a_dt == np.uint8 else np.uint8)
    oi = np.iinfo(out_dt)
    zy = out_dt(rng.integers(oi.min // 2 + oi.max // 4, oi.max // 2 + oi.max // 4 + 1))
    return dict(a=a, a_scale=sa, a_zero_point=za, b=b, b_scale=sb, b_zero_point=zb,
                y_scale=sy, y_zero_point=zy, bias=bias)


def run_selfcheck(out=None, verbose=False):
    """Compare every kernel path (and 1 vs all threads) with pyqinfer.reference.

    Returns the number of mismatching checks (0 = all bit-exact).
    """
    out = out or sys.stdout  # looked up per call: pytest capsys replaces sys.stdout
    import pyqinfer
    from pyqinfer import ops
    from pyqinfer import reference as R

    from .bench import ort as _ort
    from .bench.peak import available_cores

    t_start = time.perf_counter()
    feats = pyqinfer.cpu_features()
    print(f"pyqinfer {pyqinfer.__version__}  (numpy {np.__version__}, "
          f"onnxruntime {_ort.version() or 'not installed'})", file=out)
    print("cpu features: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in feats.items()), file=out)
    print(f"kernel paths: {', '.join(pyqinfer.kernel_paths())}  (active: {pyqinfer.get_kernel_path()}, "
          f"gemm kernel {pyqinfer._core.gemm_kernel_name()})", file=out)
    print(f"threads: {pyqinfer.get_num_threads()}  (cores available: {available_cores()})", file=out)

    old_path, old_threads = pyqinfer.get_kernel_path(), pyqinfer.get_num_threads()
    thread_counts = sorted({1, max(old_threads, 2)})
    failures, checks = [], 0
    rng = np.random.default_rng(20240611)
    cases = []
    for (M, K, N) in SELFCHECK_SHAPES:
        for a_dt, b_dt in DTYPE_PAIRS:
            per_channel = bool(rng.integers(2))
            for mode in ("int32",) + tuple(ops.MODES):
                c = _selfcheck_case(rng, a_dt, b_dt, M, K, N, per_channel,
                                    "fp32" if mode == "int32" else mode)
                clip = None if mode == "int32" else [None, "relu", "relu6"][int(rng.integers(3))]
                if mode == "int32":
                    # a bias near INT32_MAX makes the accumulator wrap modulo 2^32 in some columns
                    c["bias"] = c["bias"] + np.int32(2**31 - 2**21)
                    want = R.accumulate(c["a"], c["b"], c["a_zero_point"], c["b_zero_point"],
                                        c["bias"]).astype(np.int32)
                else:
                    want = R.qlinear_matmul(**c, mode=mode, clip=clip)
                cases.append(((M, K, N), np.dtype(a_dt).name, np.dtype(b_dt).name, per_channel,
                              mode, clip, c, want))
    try:
        for path in pyqinfer.kernel_paths():
            pyqinfer.set_kernel_path(path)
            for th in thread_counts:
                pyqinfer.set_num_threads(th)
                bad = 0
                for shape, adt, bdt, per_channel, mode, clip, c, want in cases:
                    checks += 1
                    try:
                        if mode == "int32":
                            got = ops.matmul_integer(c["a"], c["b"], c["a_zero_point"],
                                                     c["b_zero_point"], bias=c["bias"])
                        else:
                            w = ops.pack_weights(c["b"], c["b_zero_point"])
                            got = ops.qlinear_matmul(c["a"], c["a_scale"], c["a_zero_point"], w,
                                                     c["b_scale"], c["b_zero_point"], c["y_scale"],
                                                     c["y_zero_point"], c["bias"], mode=mode, clip=clip)
                        ok = got.dtype == want.dtype and np.array_equal(got, want)
                        detail = "" if ok else (f"dtype {got.dtype} vs {want.dtype}" if got.dtype != want.dtype
                                                else f"{int(np.sum(got != want))}/{want.size} differ")
                    except Exception as e:  # a crash is a failure too
                        ok, detail = False, f"{type(e).__name__}: {e}"
                    if not ok:
                        bad += 1
                        failures.append(f"path={path} threads={th} shape={'x'.join(map(str, shape))} "
                                        f"a={adt} b={bdt} per_channel={per_channel} mode={mode} "
                                        f"clip={clip}: {detail}")
                n = len(cases)
                print(f"  path {path:<11} threads {th}: {n - bad}/{n} bit-exact", file=out)
    finally:
        pyqinfer.set_kernel_path(old_path)
        pyqinfer.set_num_threads(old_threads)
    for f in failures[: (None if verbose else 20)]:
        print("  MISMATCH " + f, file=out)
    if len(failures) > 20 and not verbose:
        print(f"  ... {len(failures) - 20} more (--verbose shows all)", file=out)
    status = "OK" if not failures else f"FAILED ({len(failures)} of {checks} checks)"
    print(f"selfcheck: {status}: {checks} checks against pyqinfer.reference "
          f"(int32 + requant modes {', '.join(ops.MODES)}) in {time.perf_counter() - t_start:.1f} s",
          file=out)
    return len(failures)


# ------------------------------------------------------------------------- bench gemm

def _int_list(text):
    try:
        vals = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {text!r}")
    return vals


def _shape_list(text):
    from .bench.gemm import parse_shapes

    try:
        return parse_shapes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _write_json(args, env, records, out):
    """Write ``--json`` output; True when it went to stdout (then nothing else is printed)."""
    if not args.json:
        return False
    doc = {"environment": env, "command": "pyqinfer " + " ".join(args.argv), "records": records}
    text = json.dumps(doc, indent=1)
    if args.json == "-":
        print(text, file=out)
        return True
    with open(args.json, "w") as f:
        f.write(text + "\n")
    return False


def run_bench_gemm(args, out=None):
    out = out or sys.stdout  # looked up per call: pytest capsys replaces sys.stdout
    import pyqinfer
    from .bench import gemm
    from .bench.peak import available_cores, measure_peak

    shapes = args.shapes or (gemm.QUICK_SHAPES if args.quick else gemm.DEFAULT_SHAPES)
    threads = args.threads or sorted({1, available_cores()})
    target = args.min_time if args.min_time is not None else (0.1 if args.quick else 0.3)
    to_stdout_json = args.json == "-"
    log = sys.stderr if to_stdout_json else out
    old_path = pyqinfer.get_kernel_path()
    if args.kernel_path:
        pyqinfer.set_kernel_path(args.kernel_path)
    try:
        peak = measure_peak(repeats=3 if args.quick else 5)
        env = gemm.environment(peak)
        _print_env(env, log)

        def progress(rec):
            if not to_stdout_json:
                return
            print(f"  {rec['M']}x{rec['K']}x{rec['N']} threads={rec['threads']} done", file=log)

        records = gemm.run_gemm_bench(shapes, threads, min_runs=args.repeats, target_seconds=target,
                                      peak=peak, with_ort=False if args.no_ort else None,
                                      progress=progress,
                                      max_other=None if args.max_other is None else args.max_other / 100)
    finally:
        pyqinfer.set_kernel_path(old_path)
    env["loadavg_1min_end"] = gemm._loadavg()
    if _write_json(args, env, records, out):
        return 0
    for th in threads:
        recs = [r for r in records if r["threads"] == th]
        pk = recs[0]["peak_gops"] if recs else None
        print(f"\n## threads = {th}  (peak {'unknown' if pk is None else f'{pk:.0f} GOP/s'})", file=out)
        print(gemm.format_table(recs, markdown=args.markdown), file=out)
    print("\n" + gemm.LEGEND, file=out)
    bad = [r for r in records if r.get("exact_u8s8_i32") is False or r.get("exact_s8s8_i32") is False]
    if bad:
        print(f"\nWARNING: pyqinfer's int32 output differs from ORT's in {len(bad)} rows; "
              "see pyq_equals_exact / ort_equals_exact in --json", file=out)
    bad4 = [r for r in records if r.get("exact_u8s4_i32") is False]
    if bad4:
        print(f"\nWARNING: pyqinfer's int4-weight output differs from the exact sum in {len(bad4)} rows", file=out)
    if args.json:
        print(f"\nwrote {args.json}", file=out)
    return 0


def _layer_list(text):
    from .bench.conv import LAYERS

    names = [t.strip() for t in str(text).split(",") if t.strip()]
    bad = [n for n in names if n not in LAYERS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown layer(s) {bad or text!r}; choose from {', '.join(LAYERS)}")
    return names


def run_bench_conv(args, out=None):
    out = out or sys.stdout  # looked up per call: pytest capsys replaces sys.stdout
    import pyqinfer
    from .bench import conv, gemm
    from .bench.peak import available_cores

    layers = args.layers or (conv.QUICK_LAYERS if args.quick else list(conv.LAYERS))
    threads = args.threads or sorted({1, available_cores()})
    target = args.min_time if args.min_time is not None else (0.1 if args.quick else 0.3)
    to_stdout_json = args.json == "-"
    log = sys.stderr if to_stdout_json else out
    old_path = pyqinfer.get_kernel_path()
    if args.kernel_path:
        pyqinfer.set_kernel_path(args.kernel_path)
    try:
        env = gemm.environment({})
        print(f"pyqinfer {env['pyqinfer']}, kernel {env['kernel']} (path {env['kernel_path']}); "
              f"onnxruntime {env['onnxruntime'] or 'not installed'}", file=log)
        print(f"cpu: {env['cpu']}, {env['cores']} cores; load average {env['loadavg_1min']:.2f}", file=log)
        if (env["loadavg_1min"] or 0) > 0.5:
            print(f"WARNING: load average {env['loadavg_1min']:.2f}: other processes are running; "
                  "multi-threaded figures on a 2-core machine will be unreliable", file=log)

        def progress(rec):
            if to_stdout_json:
                print(f"  {rec['layer']} threads={rec['threads']} done", file=log)

        records = conv.run_conv_bench(layers, threads, min_runs=args.repeats, target_seconds=target,
                                      with_ort=False if args.no_ort else None, progress=progress,
                                      max_other=None if args.max_other is None else args.max_other / 100)
    finally:
        pyqinfer.set_kernel_path(old_path)
    env["loadavg_1min_end"] = gemm._loadavg()
    if _write_json(args, env, records, out):
        return 0
    for th in threads:
        print(f"\n## threads = {th}", file=out)
        print(conv.format_table([r for r in records if r["threads"] == th], markdown=args.markdown), file=out)
    print("\n" + conv.LEGEND, file=out)
    bad = [r["layer"] for r in records if r.get("exact_vs_ort") is False or not r["exact_nhwc_nchw"]]
    if bad:
        print(f"\nWARNING: outputs differ (from ORT or between layouts) in: {', '.join(bad)}", file=out)
    if args.json:
        print(f"\nwrote {args.json}", file=out)
    return 0


def _shift_case_list(text):
    from .bench.shift import CONV_LAYERS, GEMM_SHAPES

    known = [n for n, *_ in GEMM_SHAPES] + [n for n, *_ in CONV_LAYERS]
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown case(s) {bad or text!r}; choose from {', '.join(known)}")
    return names


def run_bench_shift(args, out=sys.stdout):
    import pyqinfer
    from .bench import gemm, shift
    from .bench.peak import available_cores

    names = args.cases or (shift.QUICK if args.quick else None)
    schemes = args.schemes.split(",") if args.schemes else list(shift.SCHEMES)
    bad = [s for s in schemes if s not in shift.SCHEMES]
    if bad:
        print(f"error: unknown scheme(s) {bad}; choose from {', '.join(shift.SCHEMES)}", file=sys.stderr)
        return 2
    if args.plot:  # fail before the run, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("error: --plot needs matplotlib: pip install 'pyqinfer[plot]' (or pip install matplotlib)",
                  file=sys.stderr)
            return 2
    threads = args.threads or available_cores()
    # --json - keeps stdout for the JSON document; the log goes to stderr
    log = sys.stderr if args.json == "-" else out
    restore = pyqinfer.get_kernel_path()
    try:
        if args.kernel_path:
            pyqinfer.set_kernel_path(args.kernel_path)
        env = gemm.environment({})
        print(f"pyqinfer {env['pyqinfer']}, path {env['kernel_path']}; cpu: {env['cpu']}, {env['cores']} cores; "
              f"threads {threads}; load average {env['loadavg_1min']:.2f}", file=log)
        records = shift.run(names, schemes, threads, min_runs=args.repeats,
                            target_seconds=args.min_time or (0.1 if args.quick else 0.3),
                            progress=lambda recs: print(f"  {recs[0]['shape']} {recs[0]['codes_scheme']} done",
                                                        file=log), ab_rows=args.ab_rows)
    finally:
        pyqinfer.set_kernel_path(restore)
    env["loadavg_1min_end"] = gemm._loadavg()
    if _write_json(args, env, records, out):
        return 0
    print(shift.format_table(records), file=out)
    print("\n" + shift.LEGEND, file=out)
    if args.plot:
        shift.plot(records, args.plot)
        print(f"\nwrote {args.plot}", file=out)
    bad = [f"{r['shape']}/{r['codes_scheme']}/{r['kernel']}" for r in records if not r["bit_exact"]]
    if bad:
        print(f"\nWARNING: not bit-exact: {', '.join(bad)}", file=out)
    if args.json:
        print(f"\nwrote {args.json}", file=out)
    return 1 if bad else 0


def _print_env(env, out):
    pk = env["peak"]
    per_core = pk.get("gops_per_core")
    print(f"pyqinfer {env['pyqinfer']}, kernel {env['kernel']} (path {env['kernel_path']}); "
          f"onnxruntime {env['onnxruntime'] or 'not installed'}; numpy {env['numpy']}", file=out)
    print(f"cpu: {env['cpu']}, {env['cores']} cores; load average {env['loadavg_1min']:.2f}", file=out)
    if per_core is None:
        print(f"int8 peak: unknown ({pk.get('error', 'not measured')})", file=out)
    else:
        print(f"int8 peak (measured, vpdpbusd): {per_core:.0f} GOP/s per core", file=out)
    print(env["numpy_threads"], file=out)
    if (env["loadavg_1min"] or 0) > 0.5:
        print(f"WARNING: load average {env['loadavg_1min']:.2f}: other processes are running; "
              "multi-threaded figures on a 2-core machine will be unreliable", file=out)


# ------------------------------------------------------------------------- models

def _load_model(path, **kw):
    from .graph import load
    return load(path, **kw)


def _read_feeds(path, model):
    """{input name: array} from an .npz (keys = input names) or, for a one-input model,
    an .npz with a single array of any key or a .npy file."""
    import numpy as np
    if path.endswith(".npy"):
        feeds = {"": np.load(path)}
    else:
        with np.load(path) as z:
            feeds = {k: z[k] for k in z.files}
    names = [i.name for i in model.inputs]
    if len(names) == 1 and len(feeds) == 1 and names[0] not in feeds:
        feeds = {names[0]: next(iter(feeds.values()))}
    return feeds


def run_model(args, out=None):
    import numpy as np
    out = out or sys.stdout
    if args.threads is not None:
        from . import set_num_threads
        set_num_threads(args.threads)
    try:
        model = _load_model(args.model, add_rule=args.add_rule)
        res = model.run(_read_feeds(args.inputs, model))
    except (ValueError, TypeError, OSError) as e:
        print(f"pyqinfer run: error: {e}", file=sys.stderr)
        return 1
    for k, v in res.items():
        print(f"{k}: {v.dtype.name} {list(v.shape)}", file=out)
    if args.out:
        np.savez(args.out, **res)
        print(f"wrote {args.out}", file=out)
    return 0


def inspect_model(args, out=None):
    import json
    out = out or sys.stdout
    try:
        model = _load_model(args.model)
    except (ValueError, TypeError, OSError) as e:
        print(f"pyqinfer inspect: error: {e}", file=sys.stderr)
        return 1
    try:
        mem = model.memory(args.batch)
    except (ValueError, TypeError) as e:   # unknown input shapes, or the run itself fails
        mem = {"error": str(e)}
    if args.json:
        recs = model.layers()
        for r in recs:
            r["out_shape"] = list(r["out_shape"]) if r["out_shape"] is not None else None
        json.dump({"inputs": [[i.name, i.dtype.name, list(i.shape or ())] for i in model.inputs],
                   "outputs": [[o.name, o.dtype.name, list(o.shape or ())] for o in model.outputs],
                   "layers": recs, "memory": mem}, out, indent=1, default=str)
        print(file=out)
        return 0
    if args.graph:
        print(model.graph.pretty(), file=out)
        print(file=out)
    print(model.summary(), file=out)
    if "error" in mem:
        print(f"memory: not measured ({mem['error']})", file=out)
    else:
        print(f"memory at batch {mem['batch']}: weights {_kib(mem['weights'])}; peak of a run "
              f"{_kib(mem['measured_peak'])} measured (numpy buffers incl. inputs {_kib(mem['inputs'])}), "
              f"{_kib(mem['planned_peak'])} planned (live tensors)", file=out)
    return 0


def _kib(n):
    return f"{n} B" if n < 10240 else f"{n / 1024:.1f} KiB" if n < 10 * 1024 * 1024 else f"{n / 2**20:.1f} MiB"


def verify_model(args, out=None):
    """pyqinfer verify: exit 0 iff bit-exact with the contract (and ORT when compared),
    1 if not, 2 if the model or the inputs cannot be verified at all."""
    from .graph import load
    from .verify import verify
    out = out or sys.stdout
    if args.threads is not None:
        from . import set_num_threads
        set_num_threads(args.threads)
    if args.batch < 1:
        print("pyqinfer verify: error: --batch must be >= 1", file=sys.stderr)
        return 2
    try:
        from .frontends.onnx import load_model_proto
        proto = load_model_proto(args.model)
        model = load(proto, add_rule=args.add_rule)
        feeds = _read_feeds(args.inputs, model) if args.inputs else None
        rep = verify(model, feeds, seed=args.seed, batch=args.batch, onnx_model=proto, use_ort=not args.no_ort,
                     ort_level=args.ort_level)
    except (ValueError, TypeError, OSError, KeyError) as e:
        print(f"pyqinfer verify: error: {e}", file=sys.stderr)
        return 2
    if args.json != "-":
        print(rep.text(), file=out)
    if args.json:
        text = json.dumps(rep.to_dict(), indent=1)
        if args.json == "-":
            print(text, file=out)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
            print(f"wrote {args.json}", file=out)
    if args.html:
        with open(args.html, "w") as f:
            f.write(rep.html())
        print(f"wrote {args.html}", file=out)
    return rep.exit_status


# ------------------------------------------------------------------------- parser

def build_parser():
    p = argparse.ArgumentParser(
        prog="pyqinfer",
        description="pyqinfer: a bit-exact integer inference engine. Check the kernels on this "
                    "machine and benchmark them against ONNX Runtime.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    sc = sub.add_parser("selfcheck", help="bit-exactness of every kernel path vs pyqinfer.reference",
                        description="Print version, CPU features, kernel paths and threads, then run "
                                    "every kernel path (1 thread and all threads) against the "
                                    "pure-Python reference on small random shapes: int32 "
                                    "MatMulInteger (with an accumulator that wraps) and "
                                    "QLinearMatMul in every requant mode. Exits 1 on any mismatch.")
    sc.add_argument("-v", "--verbose", action="store_true", help="list every mismatch")

    bench = sub.add_parser("bench", help="benchmarks (bench gemm, bench conv, bench shift-vs-mul)",
                           description="Benchmarks. Run 'pyqinfer bench gemm --help'.")
    bsub = bench.add_subparsers(dest="bench", metavar="BENCH")
    g = bsub.add_parser("gemm", help="int8 GEMM: pyqinfer vs ONNX Runtime vs numpy",
                        description="Time pyqinfer's u8s8 and s8s8 GEMM (int32 and requantized "
                                    "8-bit output) against ONNX Runtime MatMulInteger / "
                                    "QLinearMatMul and numpy float32, and check pyqinfer's output "
                                    "equals ORT's bit for bit; also pyqinfer's int4-weight GEMM "
                                    "against its int8 GEMM (s4/s8).",
                        epilog=GEMM_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("--shapes", type=_shape_list, metavar="MxKxN,...",
                   help="comma-separated shapes (default: the full set; see below)")
    g.add_argument("--threads", type=_int_list, metavar="N,...",
                   help="comma-separated thread counts (default: 1 and all cores)")
    g.add_argument("--repeats", type=int, default=5, metavar="N",
                   help="at least N timed runs per engine (default 5)")
    g.add_argument("--min-time", type=float, metavar="S",
                   help="time each engine for at least S seconds (default 0.3, 0.1 with --quick)")
    g.add_argument("--quick", action="store_true", help="small shape set, short timing (< ~30 s)")
    g.add_argument("--json", metavar="PATH", help="also write the records as JSON to PATH ('-': stdout only)")
    g.add_argument("--markdown", action="store_true", help="print Markdown tables")
    g.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    g.add_argument("--max-other", type=float, metavar="PCT",
                   help="for shared machines: wait until other processes use <= PCT%% of the CPU "
                        "before each row, and re-measure (3 attempts in all) a row during which "
                        "they used more; the cleanest attempt is kept (column other%%)")
    g.add_argument("--kernel-path", metavar="NAME",
                   help="force a pyqinfer kernel path for the run (default: the active one)")

    c = bsub.add_parser("conv", help="int8 convolution: pyqinfer vs ONNX Runtime QLinearConv",
                        description="Time pyqinfer's qlinear_conv (NHWC and NCHW) against ONNX Runtime "
                                    "QLinearConv on ResNet-18 3x3 layers, a strided layer and "
                                    "MobileNetV2-style depthwise and pointwise layers (batch 1), and "
                                    "check the outputs are bit-identical.",
                        epilog=CONV_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--layers", type=_layer_list, metavar="NAME,...", help="comma-separated layer names (default: all)")
    c.add_argument("--threads", type=_int_list, metavar="N,...",
                   help="comma-separated thread counts (default: 1 and all cores)")
    c.add_argument("--repeats", type=int, default=5, metavar="N", help="at least N timed runs per engine (default 5)")
    c.add_argument("--min-time", type=float, metavar="S",
                   help="time each engine for at least S seconds (default 0.3, 0.1 with --quick)")
    c.add_argument("--quick", action="store_true", help="four layers, short timing")
    c.add_argument("--json", metavar="PATH", help="also write the records as JSON to PATH ('-': stdout only)")
    c.add_argument("--markdown", action="store_true", help="print Markdown tables")
    c.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    c.add_argument("--max-other", type=float, metavar="PCT",
                   help="wait for other processes to use <= PCT%% of the CPU before each row; retry noisy rows")
    c.add_argument("--kernel-path", metavar="NAME", help="force a pyqinfer kernel path for the run")

    sv = bsub.add_parser("shift-vs-mul", help="power-of-two weights: shift kernel vs multiply kernel vs int8",
                         description="For GEMV, GEMM and ResNet-18-like 3x3 convolutions with PoT/APoT "
                                     "weights: the throughput of the shift kernel, the multiply kernel on "
                                     "the same codes and the uniform int8 kernel, in one run, with the "
                                     "bit-exactness of each and a modelled (Horowitz 45 nm) energy column.")
    sv.add_argument("--cases", type=_shift_case_list, metavar="NAME,...",
                    help="comma-separated case names (default: all; see the table's shape column)")
    sv.add_argument("--schemes", metavar="S,...", help="comma-separated weight schemes (default: pot4,apot4)")
    sv.add_argument("--threads", type=int, metavar="N", help="thread count (default: all cores)")
    sv.add_argument("--repeats", type=int, default=5, metavar="N", help="at least N timed runs per kernel")
    sv.add_argument("--min-time", type=float, metavar="S", help="time each kernel for at least S seconds")
    sv.add_argument("--quick", action="store_true", help="three cases, short timing")
    sv.add_argument("--json", metavar="PATH", help="write the records as JSON to PATH ('-': stdout only)")
    sv.add_argument("--plot", metavar="PNG", help="write a bar chart (needs matplotlib: the 'plot' extra)")
    sv.add_argument("--kernel-path", metavar="NAME", help="force a pyqinfer kernel path for the run")
    sv.add_argument("--ab-rows", action="store_true",
                    help="GEMM cases: also time the shift kernel with each variant forced (exponent "
                         "buckets, chunks of 8, chunks of 16, column lanes, packed fields), interleaved in "
                         "the same run")

    r = sub.add_parser("run", help="run a quantized ONNX model on inputs from an .npz file",
                       description="Load MODEL (a quantized ONNX file: QDQ or QOperator, see "
                                   "docs/model-format.md), run it on the arrays of --inputs (an .npz "
                                   "whose keys are the model's input names; a model with one input also "
                                   "accepts an .npz with a single array of any key or a .npy file) and "
                                   "write the outputs to --out (.npz, keys = output names).",
                       epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("model", metavar="MODEL", help="path of the .onnx file")
    r.add_argument("--inputs", required=True, metavar="X.npz", help="input arrays (.npz, or .npy for one input)")
    r.add_argument("--out", metavar="Y.npz", help="where to write the outputs (default: print a summary only)")
    r.add_argument("--add-rule", choices=("onnxruntime", "onnx", "tflite", "xnnpack"),
                   help="rule of every quantized Add (default: onnxruntime, the fused kernel of ORT)")
    r.add_argument("--threads", type=int, metavar="N", help="kernel threads (default: all CPUs)")

    ins = sub.add_parser("inspect", help="show how a model is planned: layers, schemes, bytes, MACs, kernels",
                         description="Import and plan MODEL and print one row per step: the integer op "
                                     "(or numpy float op), input and output dtypes with quantization "
                                     "parameters, weight scheme and bit width, weight bytes, MACs at "
                                     "batch 1, and the kernel that will run it. Numpy float ops are "
                                     "marked (and whether they are bit-exact). The last line gives the "
                                     "memory of one run at --batch: resident weights, and the peak of "
                                     "the activation buffers, measured (tracemalloc) and planned.",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    ins.add_argument("model", metavar="MODEL", help="path of the .onnx file")
    ins.add_argument("--graph", action="store_true", help="also print the imported IR graph")
    ins.add_argument("--json", action="store_true", help="print the layer records as JSON instead")
    ins.add_argument("--batch", type=int, default=1, metavar="N",
                     help="batch size (free leading dimension) for the memory figures (default 1)")

    v = sub.add_parser("verify", help="prove a model bit-exact layer by layer (contract, float reference, ORT)",
                       description=VERIFY_DESCRIPTION,
                       epilog=VERIFY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("model", metavar="MODEL", help="path of the .onnx file")
    v.add_argument("--inputs", metavar="X.npz",
                   help="input arrays (.npz keyed by input name, or .npy for one input); default: random "
                        "inputs of the right dtype and shape (--seed, --batch)")
    v.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the random inputs (default 0)")
    v.add_argument("--batch", type=int, default=1, metavar="N",
                   help="size of a free leading (batch) dimension for random inputs (default 1)")
    v.add_argument("--json", metavar="PATH", help="write the machine-readable report to PATH ('-': stdout only)")
    v.add_argument("--html", metavar="PATH", help="write a self-contained HTML report with per-layer histograms")
    v.add_argument("--no-ort", action="store_true", help="do not compare with ONNX Runtime")
    v.add_argument("--ort-level", choices=("all", "none"), default="all",
                   help="ORT graph optimization level: 'all' (fused integer kernels, default) or 'none' "
                        "(ORT evaluates the float QDQ graph)")
    v.add_argument("--add-rule", choices=("onnxruntime", "onnx", "tflite", "xnnpack"),
                   help="rule of every quantized Add (default: onnxruntime)")
    v.add_argument("--threads", type=int, metavar="N", help="kernel threads (default: all CPUs)")

    d = sub.add_parser("demo", help="the shipped digits models (every scheme) on the engine: accuracy, "
                                    "bit-exactness, weight bytes, latency (under a minute)",
                       description="The README's main job: runs every shipped demo model (a CNN and an MLP "
                                   "trained on scikit-learn's digits, one per quantization scheme, made by "
                                   "scripts/make_demo_models.py) over the test split and prints one table: "
                                   "accuracy vs the float model, bit-exactness vs the trained quantized model "
                                   "and vs pyqinfer.verify's float reference, weight bytes, latency per image. "
                                   "Exit status 0 iff every model is bit-exact.")
    d.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH ('-': stdout, no table)")
    d.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    d.add_argument("--selfcheck", action="store_true", help="run 'pyqinfer selfcheck' first")
    return p


def main(argv=None):
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if args.command == "selfcheck":
        return 1 if run_selfcheck(verbose=args.verbose) else 0
    if args.command == "bench":
        if args.bench not in ("gemm", "conv", "shift-vs-mul"):
            parser.error("bench needs a benchmark name: 'pyqinfer bench gemm', 'bench conv' or "
                         "'bench shift-vs-mul' (see --help)")
        if args.repeats < 1:
            parser.error("--repeats must be >= 1")
        if args.bench == "shift-vs-mul":
            return run_bench_shift(args)
        return run_bench_gemm(args) if args.bench == "gemm" else run_bench_conv(args)
    if args.command == "run":
        return run_model(args)
    if args.command == "inspect":
        return inspect_model(args)
    if args.command == "verify":
        return verify_model(args)
    if args.command == "demo":
        if args.selfcheck:
            if run_selfcheck():
                print("demo: selfcheck failed", file=sys.stderr)
                return 1
            print()
        from .demo import main as demo_main
        return demo_main(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
