// Python bindings for int4 and low-bit GEMM.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace pyq {

void bind_lowbit_gemm(py::module_& m) { (void)m; }

}  // namespace pyq
