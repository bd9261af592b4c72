// Python bindings for pooling, add, concat, clip, requantize, quantize, dequantize.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace pyq {

void bind_eltwise(py::module_& m) { (void)m; }

}  // namespace pyq
