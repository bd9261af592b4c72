"""pyqinfer: a bit-exact integer inference engine for quantized neural networks.

The C++ kernels live in ``pyqinfer._core``; ``pyqinfer.ops`` is the functional
API, ``pyqinfer.reference`` the pure-Python golden model every kernel is tested
against, and ``docs/semantics.md`` the contract both implement.
"""
import os as _os

from . import _core

__version__ = "0.1.0"


def cpu_features():
    """The CPU features pyqinfer detected at run time, as a dict of booleans."""
    return dict(_core.cpu_features())


def kernel_paths():
    """Kernel paths this CPU can run, slowest first (``scalar`` is always there)."""
    return list(_core.kernel_paths())


def get_kernel_path():
    """The kernel path the operators use now."""
    return _core.get_kernel_path()


def set_kernel_path(name):
    """Force a kernel path (one of :func:`kernel_paths`), or ``"auto"`` for the best.

    The environment variable ``PYQINFER_KERNEL_PATH`` sets the initial value.
    Results are bit-identical on every path; forcing one is for testing and benchmarking.
    """
    try:
        _core.set_kernel_path(str(name))
    except ValueError as e:
        raise ValueError(f"{e} (available here: {', '.join(kernel_paths())})") from None


def get_num_threads():
    """Threads the kernels use (the calling thread included)."""
    return _core.get_num_threads()


def set_num_threads(n):
    """Set the kernel thread count; ``n <= 0`` restores the default.

    The default is ``PYQINFER_NUM_THREADS`` if set, else the CPUs this process may
    run on. Results are bit-identical for every thread count.
    """
    _core.set_num_threads(int(n))


_env_path = _os.environ.get("PYQINFER_KERNEL_PATH", "")
if _env_path not in ("", "auto") and _env_path not in kernel_paths():
    raise ImportError(
        f"PYQINFER_KERNEL_PATH={_env_path!r} is not a kernel path this CPU supports "
        f"(available: {', '.join(kernel_paths())})"
    )

from . import ops  # noqa: E402
from . import quant  # noqa: E402
from .graph import UnsupportedModelError, load  # noqa: E402

__all__ = [
    "cpu_features",
    "kernel_paths",
    "get_kernel_path",
    "set_kernel_path",
    "get_num_threads",
    "set_num_threads",
    "ops",
    "quant",
    "load",
    "UnsupportedModelError",
]
