"""Build pyqinfer: setuptools drives CMake, which builds the pybind11 module
`pyqinfer._core` with per-file ISA flags (see CMakeLists.txt)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


def _drop_stale_cache(build_temp):
    """pip builds each install in a throw-away environment, but the CMake build
    folder lives in the source tree: a cache that names tools from an environment
    that is gone (ninja, cmake, python) would fail the next build, so start afresh."""
    cache = build_temp / "CMakeCache.txt"
    if not cache.exists():
        return
    for line in cache.read_text(errors="replace").splitlines():
        for key in ("CMAKE_MAKE_PROGRAM:", "CMAKE_COMMAND:", "Python_EXECUTABLE:"):
            if line.startswith(key):
                path = line.split("=", 1)[-1].strip()
                if path and not Path(path).exists():
                    shutil.rmtree(build_temp, ignore_errors=True)
                    return
    if f"Python_EXECUTABLE:FILEPATH={sys.executable}" not in cache.read_text(errors="replace"):
        shutil.rmtree(build_temp, ignore_errors=True)


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_type = os.environ.get("PYQINFER_BUILD_TYPE", "Release")
        build_temp = Path(self.build_temp).resolve() / build_type
        _drop_stale_cache(build_temp)
        build_temp.mkdir(parents=True, exist_ok=True)
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={build_type}",
        ]
        if os.environ.get("PYQINFER_SANITIZE", "") not in ("", "0"):
            args.append("-DPYQ_SANITIZE=ON")
        if os.environ.get("PYQINFER_WERROR", "") not in ("", "0"):
            args.append("-DPYQ_WERROR=ON")
        try:
            import ninja

            args += ["-GNinja", f"-DCMAKE_MAKE_PROGRAM={Path(ninja.BIN_DIR) / 'ninja'}"]
        except ImportError:
            pass
        subprocess.run(["cmake", str(ROOT), *args], cwd=build_temp, check=True)
        jobs = str(os.cpu_count() or 2)
        subprocess.run(["cmake", "--build", ".", "-j", jobs], cwd=build_temp, check=True)


setup(
    name="pyqinfer",
    version="0.1.0",
    description="Bit-exact integer inference engine for quantized neural networks",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["pyqinfer", "pyqinfer.*"]),
    python_requires=">=3.9",
    # onnx: pyqinfer.load reads ONNX files (the demo models of `pyqinfer demo` among them)
    install_requires=["numpy>=1.22", "onnx>=1.16"],
    # the demo models and test split (scripts/make_demo_models.py), read by `pyqinfer demo`
    package_data={"pyqinfer": ["data/demo/*.onnx", "data/demo/*.npz", "data/demo/*.json"]},
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-benchmark>=4",
            "hypothesis>=6",
            "onnx>=1.16",
            "onnxruntime>=1.17",
        ],
        "train": ["torch==2.13.0"],
        "plot": ["matplotlib>=3.5"],
    },
    entry_points={"console_scripts": ["pyqinfer=pyqinfer.cli:main"]},
    ext_modules=[CMakeExtension("pyqinfer._core")],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
