// Python bindings for convolution: pack_conv_weights and qconv (NHWC). The
// Python layer (pyqinfer/ops/conv.py) validates with friendlier messages and
// handles NCHW; this layer re-checks every size before touching memory.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/py_arrays.h"
#include "common/requant.h"
#include "conv/conv.h"

namespace py = pybind11;

namespace pyq {
namespace {

using namespace pyq::pyarr;  // NOLINT: array predicates


std::shared_ptr<PackedConvWeights> pack_conv_weights(const py::array& w, const py::array& zero_points,
                                                     int64_t groups) {
  if (w.ndim() != 4) throw std::invalid_argument("w must be 4-D [OC, C/group, KH, KW]");
  if (!is_u8(w) && !is_s8(w)) throw std::invalid_argument("w must be uint8 or int8");
  if (!c_contiguous(w)) throw std::invalid_argument("w must be C-contiguous");
  if (!is_dtype(zero_points, 'i', 4) || zero_points.ndim() != 1 || !c_contiguous(zero_points))
    throw std::invalid_argument("w_zero_point must be a contiguous 1-D int32 array");
  const int64_t OC = w.shape(0), Cg = w.shape(1), KH = w.shape(2), KW = w.shape(3);
  if (groups < 1 || OC % groups != 0) throw std::invalid_argument("group must be >= 1 and divide OC");
  const int64_t nzp = zero_points.shape(0);
  if (nzp != 1 && nzp != OC) throw std::invalid_argument("w_zero_point must have 1 or OC entries");
  const auto* zp = static_cast<const int32_t*>(zero_points.data());
  const int32_t lo = is_s8(w) ? -128 : 0, hi = is_s8(w) ? 127 : 255;
  for (int64_t i = 0; i < nzp; ++i)
    if (zp[i] < lo || zp[i] > hi) throw std::invalid_argument("w_zero_point out of the range of w's dtype");
  const bool s = is_s8(w);
  const auto* data = static_cast<const uint8_t*>(w.data());
  py::gil_scoped_release release;
  return std::make_shared<PackedConvWeights>(data, s, OC, Cg, KH, KW, groups, zp, nzp);
}

py::array qconv_py(const py::array& x, int32_t x_zero_point, const PackedConvWeights& w,
                const std::vector<int64_t>& strides, const std::vector<int64_t>& pads,
                const std::vector<int64_t>& dilations, const py::object& bias, const std::string& out_dtype,
                const py::object& requant, int32_t y_zero_point, int32_t lo, int32_t hi) {
  if (x.ndim() != 4) throw std::invalid_argument("x must be 4-D NHWC [N, H, W, C]");
  if (!is_u8(x) && !is_s8(x)) throw std::invalid_argument("x must be uint8 or int8");
  if (!c_contiguous(x)) throw std::invalid_argument("x must be C-contiguous");
  if (strides.size() != 2 || dilations.size() != 2 || pads.size() != 4)
    throw std::invalid_argument("strides and dilations need 2 entries, pads 4");
  ConvArgs a;
  a.x = static_cast<const uint8_t*>(x.data());
  a.x_signed = is_s8(x);
  a.x_zero_point = x_zero_point;
  if (x_zero_point < (a.x_signed ? -128 : 0) || x_zero_point > (a.x_signed ? 127 : 255))
    throw std::invalid_argument("x_zero_point out of the range of x's dtype");
  a.N = x.shape(0);
  a.H = x.shape(1);
  a.W = x.shape(2);
  a.C = x.shape(3);
  a.sh = strides[0];
  a.sw = strides[1];
  a.dh = dilations[0];
  a.dw = dilations[1];
  a.pt = pads[0];
  a.pl = pads[1];
  a.pb = pads[2];
  a.pr = pads[3];
  a.w = &w;
  if (a.C != w.Cg() * w.groups())
    throw std::invalid_argument("x has " + std::to_string(a.C) + " channels but the packed weights expect " +
                                std::to_string(w.Cg() * w.groups()));
  if (a.H <= 0 || a.W <= 0) throw std::invalid_argument("x must have H > 0 and W > 0");
  int64_t OH, OW;
  conv_output_hw(a, &OH, &OW);
  const int64_t OC = w.OC();
  py::array bias_arr;
  a.bias = int32_vector_or_null(bias, OC, &bias_arr, "OC");
  py::array out = output_with_epilogue(&a, out_dtype, {a.N, OH, OW, OC}, OC, requant, y_zero_point, lo, hi, "OC");
  {
    py::gil_scoped_release release;
    qconv(a);
  }
  return out;
}

}  // namespace

void bind_conv(py::module_& m) {
  py::class_<PackedConvWeights, std::shared_ptr<PackedConvWeights>>(m, "PackedConvWeights")
      .def_property_readonly("OC", &PackedConvWeights::OC)
      .def_property_readonly("Cg", &PackedConvWeights::Cg)
      .def_property_readonly("KH", &PackedConvWeights::KH)
      .def_property_readonly("KW", &PackedConvWeights::KW)
      .def_property_readonly("groups", &PackedConvWeights::groups)
      .def_property_readonly("signed", &PackedConvWeights::weights_signed)
      .def_property_readonly("packed_bytes", &PackedConvWeights::packed_bytes);
  m.def("pack_conv_weights", &pack_conv_weights, py::arg("w"), py::arg("zero_points"), py::arg("groups"));
  m.def("set_conv_indirect_enabled", &set_conv_indirect_enabled, py::arg("on"),
        "Dense convolutions read the input through row pointers (default) or gather it (False; A/B only).");
  m.def("qconv", &qconv_py, py::arg("x"), py::arg("x_zero_point"), py::arg("packed"), py::arg("strides"),
        py::arg("pads"), py::arg("dilations"), py::arg("bias"), py::arg("out_dtype"), py::arg("requant"),
        py::arg("y_zero_point"), py::arg("lo"), py::arg("hi"));
}

}  // namespace pyq
