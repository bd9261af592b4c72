// Python bindings for the depthwise convolution kernel (pyqinfer/ops/_dwconv.py
// gives the friendlier messages; this layer re-checks what C++ relies on).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/py_arrays.h"
#include "conv/dwconv.h"

namespace py = pybind11;

namespace pyq {
namespace {

using namespace pyq::pyarr;  // NOLINT: array predicates


std::shared_ptr<DwPackedWeights> pack(const py::array& w, const py::array& zero_points) {
  if (w.ndim() != 4 || w.shape(1) != 1) throw std::invalid_argument("w must be 4-D [C, 1, KH, KW]");
  if (!is_byte(w)) throw std::invalid_argument("w must be uint8 or int8");
  if (!c_contiguous(w)) throw std::invalid_argument("w must be C-contiguous");
  if (!is_dtype(zero_points, 'i', 4) || zero_points.ndim() != 1 || !c_contiguous(zero_points))
    throw std::invalid_argument("w_zero_point must be a contiguous 1-D int32 array");
  const auto* zp = static_cast<const int32_t*>(zero_points.data());
  const int64_t nzp = zero_points.shape(0);
  py::gil_scoped_release release;
  return std::make_shared<DwPackedWeights>(static_cast<const uint8_t*>(w.data()), is_dtype(w, 'i', 1), w.shape(0),
                                           w.shape(2), w.shape(3), zp, nzp);
}

std::vector<int64_t> ints(const std::vector<int64_t>& v, size_t n, const char* name) {
  if (v.size() != n) throw std::invalid_argument(std::string(name) + " must have " + std::to_string(n) + " entries");
  return v;
}

py::array dwconv_nhwc(const py::array& x, int32_t x_zero_point, const DwPackedWeights& w, const py::object& bias,
                      const std::string& out_dtype, const py::object& requant, int32_t y_zero_point, int32_t lo,
                      int32_t hi, const std::vector<int64_t>& strides, const std::vector<int64_t>& pads,
                      const std::vector<int64_t>& dilations) {
  if (x.ndim() != 4) throw std::invalid_argument("x must be 4-D NHWC [N, H, W, C]");
  if (!is_byte(x)) throw std::invalid_argument("x must be uint8 or int8");
  if (!c_contiguous(x)) throw std::invalid_argument("x must be C-contiguous");
  const auto s = ints(strides, 2, "strides");
  const auto pd = ints(pads, 4, "pads");  // ONNX order: top, left, bottom, right
  const auto d = ints(dilations, 2, "dilations");
  const int64_t N = x.shape(0), H = x.shape(1), W = x.shape(2), C = x.shape(3);
  if (C != w.C())
    throw std::invalid_argument("x has C=" + std::to_string(C) + " but the weights have C=" + std::to_string(w.C()));
  const int64_t OH = dw_output_size(H, w.KH(), s[0], pd[0], pd[2], d[0], "H");
  const int64_t OW = dw_output_size(W, w.KW(), s[1], pd[1], pd[3], d[1], "W");
  py::array bias_arr;
  const int32_t* bias_ptr = int32_vector_or_null(bias, C, &bias_arr, "C");
  OutKind kind;
  py::array out = make_output(out_dtype, {N, OH, OW, C}, &kind);
  const RequantParams* rq = checked_requant(requant, kind, C, y_zero_point, lo, hi, "C");
  DwArgs a{static_cast<const uint8_t*>(x.data()), is_dtype(x, 'i', 1), N, H, W, C, x_zero_point, &w, bias_ptr,
           s[0], s[1], pd[0], pd[1], pd[2], pd[3], d[0], d[1], kind, out.mutable_data(), rq, y_zero_point, lo, hi};
  {
    py::gil_scoped_release release;
    dwconv(a);
  }
  return out;
}

}  // namespace

void bind_dwconv(py::module_& m) {
  py::class_<DwPackedWeights, std::shared_ptr<DwPackedWeights>>(m, "DwPackedWeights")
      .def_property_readonly("C", &DwPackedWeights::C)
      .def_property_readonly("KH", &DwPackedWeights::KH)
      .def_property_readonly("KW", &DwPackedWeights::KW)
      .def_property_readonly("signed", &DwPackedWeights::weights_signed)
      .def_property_readonly("zero_points",
                             [](const DwPackedWeights& w) {
                               py::array_t<int32_t> a(static_cast<py::ssize_t>(w.zero_points().size()));
                               std::copy(w.zero_points().begin(), w.zero_points().end(), a.mutable_data());
                               return a;
                             })
      .def_property_readonly("packed_bytes", &DwPackedWeights::packed_bytes);
  m.def("pack_dw_weights", &pack, py::arg("w"), py::arg("zero_points"),
        "Pack depthwise weights [C, 1, KH, KW] (int8/uint8) with their int32 zero points (1 or C).");
  m.def("dwconv_nhwc", &dwconv_nhwc, py::arg("x"), py::arg("x_zero_point"), py::arg("packed"), py::arg("bias"),
        py::arg("out_dtype"), py::arg("requant"), py::arg("y_zero_point"), py::arg("lo"), py::arg("hi"),
        py::arg("strides"), py::arg("pads"), py::arg("dilations"),
        "Depthwise convolution of NHWC x; pads are (top, left, bottom, right). Returns NHWC.");
  m.def("dw_kernel_name", [] { return std::string(dw_kernel_for(active_path())->name); });
  m.def("dw_uses_quad_kernel",
        [](const DwPackedWeights& w, int64_t dil_w, const std::string& out_dtype, const std::string& mode) {
          const OutKind k = out_dtype == "int32" ? OutKind::kInt32 : out_dtype == "int8" ? OutKind::kInt8 : OutKind::kUint8;
          return dw_uses_quad_kernel(w, dil_w, k, mode == "fp32" ? RequantMode::kFp32 : RequantMode::kQ31);
        },
        py::arg("packed"), py::arg("dilation_w"), py::arg("out_dtype"), py::arg("mode"),
        "Whether a depthwise call with these weights runs the row-quad kernel (dwconv_avx512vnni.cpp).");
  m.def("set_dw_quad_enabled", &set_dw_quad_enabled, py::arg("on"),
        "Switch the row-quad depthwise kernel off (False) or on (True, the default); for A/B benchmarks.");
}

}  // namespace pyq
