"""Shared pytest configuration for the pyqinfer kernel tests.

Hypothesis profiles
    ci    (default) bounded example counts so the suite stays within minutes
    long  2000 examples per property; select it with ``--hypothesis-profile=long``
          (hypothesis' own pytest option) or ``PYQINFER_HYPOTHESIS_PROFILE=long``.
    sanitize  25 examples per property, derandomized: the sanitizer build
          (.ci/sanitize) runs ~20x slower, so the kernels' property tests run
          under it with this bounded, reproducible profile.

Kernel configuration fixtures
    kernel_path   parametrized over pyqinfer.kernel_paths(); forces the path and
                  restores "auto" afterwards
    num_threads   parametrized over THREAD_COUNTS; restores the default afterwards
    run_everywhere  calls a function once per (path, thread count) pair and
                  returns {(path, threads): result}; used inside hypothesis
                  examples so the (slow) reference runs once per example.
"""
import os

import pytest
from hypothesis import HealthCheck, settings

import pyqinfer

THREAD_COUNTS = (1, 2)

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("long", parent=settings.get_profile("ci"), max_examples=2000)
settings.register_profile("sanitize", parent=settings.get_profile("ci"), max_examples=25, derandomize=True,
                          database=None)
# The command-line option --hypothesis-profile is applied by hypothesis' plugin in
# pytest_configure, i.e. after this module is imported, so it wins over the env var.
settings.load_profile(os.environ.get("PYQINFER_HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption("--fuzz-long", action="store_true", default=False,
                     help="tests/test_fuzz_loader.py: the long fuzzing run (200,000 cases) instead of "
                          "PYQINFER_FUZZ_CASES (default 10,000)")


def restore_defaults():
    pyqinfer.set_kernel_path("auto")
    pyqinfer.set_num_threads(0)


@pytest.fixture(params=pyqinfer.kernel_paths())
def kernel_path(request):
    """Force each kernel path this CPU supports; restore "auto" afterwards."""
    pyqinfer.set_kernel_path(request.param)
    assert pyqinfer.get_kernel_path() == request.param
    try:
        yield request.param
    finally:
        pyqinfer.set_kernel_path("auto")


@pytest.fixture(params=THREAD_COUNTS, ids=lambda n: f"threads{n}")
def num_threads(request):
    """Run with 1 and 2 kernel threads; restore the default afterwards."""
    pyqinfer.set_num_threads(request.param)
    assert pyqinfer.get_num_threads() == request.param
    try:
        yield request.param
    finally:
        pyqinfer.set_num_threads(0)


@pytest.fixture(scope="session")
def run_everywhere():
    """run(fn) -> {(path, threads): fn()} over every kernel path and thread count.

    Session-scoped (hypothesis rejects function-scoped fixtures shared by
    examples); each call restores the defaults itself, even when fn raises.
    """

    def run(fn):
        out = {}
        try:
            for path in pyqinfer.kernel_paths():
                pyqinfer.set_kernel_path(path)
                for n in THREAD_COUNTS:
                    pyqinfer.set_num_threads(n)
                    out[(path, n)] = fn()
        finally:
            restore_defaults()
        return out

    return run


@pytest.fixture(autouse=True)
def _kernel_state_is_restored():
    """Every test starts from, and must leave, path "auto" with the default thread count."""
    restore_defaults()
    auto_path, default_threads = pyqinfer.get_kernel_path(), pyqinfer.get_num_threads()
    yield
    assert pyqinfer.get_kernel_path() == auto_path, "a test left a forced kernel path behind"
    assert pyqinfer.get_num_threads() == default_threads, "a test left a thread count behind"
