"""CPU feature detection, kernel path dispatch, thread count and GIL release."""
import os
import subprocess
import tempfile
import sys
import threading
import time

import numpy as np
import pytest

import pyqinfer
import pyqinfer.ops as ops

# kernel path -> the cpu_features() flag it needs
PATH_FEATURE = {"avx2": "avx2", "avx512bw": "avx512bw", "avx512vnni": "avx512vnni", "avxvnni": "avxvnni"}


def run_python(code, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("PYQINFER_")}
    full.update(env)
    # Run outside the source tree: `python -c` puts the working directory first on
    # sys.path, and the source folder has no compiled module after `pip install .`.
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120,
                          cwd=tempfile.gettempdir())


def test_cpu_features_is_a_dict_of_bools():
    f = pyqinfer.cpu_features()
    assert isinstance(f, dict) and f
    assert {"avx2", "avx512bw", "avx512vnni"} <= set(f)
    assert all(isinstance(k, str) and type(v) is bool for k, v in f.items())
    f["avx2"] = not f["avx2"]  # a copy: mutating it does not change the detection
    assert pyqinfer.cpu_features()["avx2"] != f["avx2"]


def test_kernel_paths_start_with_scalar_and_follow_the_features():
    paths = pyqinfer.kernel_paths()
    assert paths[0] == "scalar"
    assert len(set(paths)) == len(paths)
    f = pyqinfer.cpu_features()
    for p in paths[1:]:
        assert f[PATH_FEATURE[p]], f"path {p} listed without its CPU feature"
    for p, feat in PATH_FEATURE.items():
        if f.get(feat) and p != "avxvnni":
            assert p in paths, f"CPU has {feat} but path {p} is missing"
    assert pyqinfer.get_kernel_path() == paths[-1]  # auto = the best (last) path


def test_set_kernel_path_rejects_nonsense():
    before = pyqinfer.get_kernel_path()
    # a name the CPU does not support is rejected like an unknown one ("" means auto, like the env var)
    unsupported = [p for p in PATH_FEATURE if p not in pyqinfer.kernel_paths()]
    for bad in ["nonsense", "SCALAR", "avx1024", *unsupported]:
        with pytest.raises(ValueError) as info:
            pyqinfer.set_kernel_path(bad)
        assert "scalar" in str(info.value)  # lists the available paths
        assert pyqinfer.get_kernel_path() == before


def test_forcing_each_path(kernel_path):
    assert pyqinfer.get_kernel_path() == kernel_path
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    b = np.ones((4, 2), np.int8)
    assert ops.matmul_integer(a, b).tolist() == [[6, 6], [22, 22], [38, 38]]
    pyqinfer.set_kernel_path("auto")
    assert pyqinfer.get_kernel_path() == pyqinfer.kernel_paths()[-1]
    pyqinfer.set_kernel_path(kernel_path)  # the fixture restores "auto" after the test


def test_env_kernel_path_scalar_in_subprocess():
    r = run_python("import pyqinfer; print(pyqinfer.get_kernel_path())", PYQINFER_KERNEL_PATH="scalar")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "scalar"
    r = run_python("import pyqinfer; print(pyqinfer.get_kernel_path())", PYQINFER_KERNEL_PATH="auto")
    assert r.returncode == 0 and r.stdout.strip() == pyqinfer.kernel_paths()[-1], r.stderr


def test_env_kernel_path_invalid_fails_import_clearly():
    r = run_python("import pyqinfer", PYQINFER_KERNEL_PATH="nonsense")
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "PYQINFER_KERNEL_PATH" in r.stderr and "'nonsense'" in r.stderr
    assert "scalar" in r.stderr  # names what is available


def test_env_num_threads_in_subprocess():
    r = run_python("import pyqinfer; print(pyqinfer.get_num_threads())", PYQINFER_NUM_THREADS="1")
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr


def test_num_threads_round_trip():
    default = pyqinfer.get_num_threads()
    if "PYQINFER_NUM_THREADS" not in os.environ:
        assert default == len(os.sched_getaffinity(0))
    try:
        for n in (1, 2, 3, 1):
            pyqinfer.set_num_threads(n)
            assert pyqinfer.get_num_threads() == n
        pyqinfer.set_num_threads(0)
        assert pyqinfer.get_num_threads() == default
        pyqinfer.set_num_threads(-5)
        assert pyqinfer.get_num_threads() == default
    finally:
        pyqinfer.set_num_threads(0)


def test_gil_released_during_gemm():
    """While one thread is inside a long GEMM, another Python thread keeps running.

    The GEMM runs on 1 kernel thread so the counting thread has a core of its own.
    With the GIL held for the whole call, no counter sample could fall strictly
    inside the call; the margins make the check independent of scheduler noise.
    """
    pyqinfer.set_kernel_path("scalar")
    pyqinfer.set_num_threads(1)
    try:
        a = np.ones((1536, 2048), np.uint8)
        w = ops.pack_weights(np.ones((2048, 1536), np.int8))
        ops.matmul_integer(a[:8], w)  # pack once outside the timed call
        window = {}
        stop = threading.Event()

        def gemm():
            window["start"] = time.perf_counter()
            out = ops.matmul_integer(a, w)
            window["end"] = time.perf_counter()
            window["ok"] = bool(np.all(out == 2048))
            stop.set()

        t = threading.Thread(target=gemm)
        samples = []
        count = 0
        t.start()
        while not stop.is_set():
            count += 1
            if count % 1000 == 0:
                samples.append(time.perf_counter())
        t.join()
    finally:
        pyqinfer.set_kernel_path("auto")
        pyqinfer.set_num_threads(0)
    assert window["ok"]
    start, end = window["start"], window["end"]
    duration = end - start
    assert duration > 0.05, f"GEMM too short ({duration:.3f}s) to observe the GIL"
    inside = [s for s in samples if start + 0.1 * duration < s < end - 0.1 * duration]
    assert len(inside) >= 3, (f"the counting thread made {len(inside)} progress samples during an "
                              f"{duration:.3f}s GEMM ({len(samples)} in total): GIL not released?")
