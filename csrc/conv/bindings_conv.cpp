// Python bindings for convolution.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace pyq {

void bind_conv(py::module_& m) { (void)m; }

}  // namespace pyq
