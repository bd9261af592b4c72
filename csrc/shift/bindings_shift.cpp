// Python bindings for the shift GEMM (docs/semantics.md section 12): packing the
// terms of power-of-two weights and running the shift or the multiply kernel.
// pyqinfer/ops/shift.py gives the friendlier messages; this layer re-checks sizes.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>  // std::array arguments

#include <array>
#include <memory>
#include <stdexcept>
#include <string>

#include "common/py_arrays.h"
#include "conv/dwconv.h"  // dw_output_size
#include "shift/dwshift.h"
#include "shift/shift.h"

namespace py = pybind11;

namespace pyq {
namespace {

using namespace pyq::pyarr;  // NOLINT: array predicates

// signs and exponents: int8, C-contiguous, the same shape of ndim dimensions (layout
// names them in the message); the rule by name.
ShiftRule checked_terms(const py::array& signs, const py::array& exponents, int ndim, const char* layout,
                        const std::string& rule) {
  if (!is_s8(signs) || !is_s8(exponents)) throw std::invalid_argument("signs and exponents must be int8");
  if (signs.ndim() != ndim || exponents.ndim() != ndim)
    throw std::invalid_argument(std::string("signs and exponents must be ") + layout);
  for (int i = 0; i < ndim; ++i)
    if (signs.shape(i) != exponents.shape(i)) throw std::invalid_argument("signs and exponents differ in shape");
  if (!c_contiguous(signs) || !c_contiguous(exponents))
    throw std::invalid_argument("signs and exponents must be C-contiguous");
  if (rule == "exact") return ShiftRule::kExact;
  if (rule == "deepshift") return ShiftRule::kDeepShift;
  throw std::invalid_argument("rule must be 'exact' or 'deepshift'");
}

std::shared_ptr<PackedShift> pack_shift(const py::array& signs, const py::array& exponents, const std::string& rule) {
  const ShiftRule r = checked_terms(signs, exponents, 3, "[T, K, N]", rule);
  const int T = static_cast<int>(signs.shape(0));
  const int64_t K = signs.shape(1), N = signs.shape(2);
  const auto* s = static_cast<const int8_t*>(signs.data());
  const auto* e = static_cast<const int8_t*>(exponents.data());
  py::gil_scoped_release release;
  return std::make_shared<PackedShift>(s, e, T, K, N, r);
}

ShiftArgs make_args(const py::array& a, int32_t a_zero_point, const PackedShift& w, int acc_bits,
                    const std::string& kernel) {
  if (a.ndim() != 2) throw std::invalid_argument("a must be 2-D [M, K]");
  if (!c_contiguous(a)) throw std::invalid_argument("a must be C-contiguous");
  ShiftArgs g;
  if (is_u8(a))
    g.a_type = ShiftActType::kU8;
  else if (is_s8(a))
    g.a_type = ShiftActType::kS8;
  else if (is_dtype(a, 'i', 2))
    g.a_type = ShiftActType::kS16;
  else if (is_dtype(a, 'i', 4))
    g.a_type = ShiftActType::kS32;
  else
    throw std::invalid_argument("a must be uint8, int8, int16 or int32");
  g.a = a.data();
  g.M = a.shape(0);
  g.K = a.shape(1);
  if (g.K != w.K())
    throw std::invalid_argument("a has K=" + std::to_string(g.K) + " but the weights have K=" + std::to_string(w.K()));
  g.a_zero_point = a_zero_point;
  g.w = &w;
  g.acc_bits = acc_bits;
  if (kernel == "shift")
    g.kernel = ShiftKernel::kShift;
  else if (kernel == "multiply")
    g.kernel = ShiftKernel::kMultiply;
  else if (kernel == "auto")
    g.kernel = ShiftKernel::kAuto;
  else if (kernel == "hybrid")
    g.kernel = ShiftKernel::kHybrid;
  else
    throw std::invalid_argument("kernel must be 'shift', 'multiply', 'hybrid' or 'auto'");
  return g;
}

py::array shift_gemm_py(const py::array& a, int32_t a_zero_point, const PackedShift& w, const py::object& bias,
                        int acc_bits, const std::string& kernel, const std::string& out_dtype,
                        const py::object& requant, int32_t y_zero_point, int32_t lo, int32_t hi) {
  ShiftArgs g = make_args(a, a_zero_point, w, acc_bits, kernel);
  const int64_t N = w.N();
  py::array bias_arr;
  g.bias = int32_vector_or_null(bias, N, &bias_arr, "N");
  py::array out = output_with_epilogue(&g, out_dtype, {g.M, N}, N, requant, y_zero_point, lo, hi, "N");
  {
    py::gil_scoped_release release;
    shift_gemm(g);
  }
  return out;
}

}  // namespace

void bind_shift(py::module_& m) {
  py::class_<PackedShift, std::shared_ptr<PackedShift>>(m, "PackedShift")
      .def_property_readonly("K", &PackedShift::K)
      .def_property_readonly("N", &PackedShift::N)
      .def_property_readonly("T", &PackedShift::T)
      .def_property_readonly("decodable", &PackedShift::decodable)
      .def_property_readonly("fits_int8", &PackedShift::fits_int8)
      .def_property_readonly("distinct_values", &PackedShift::distinct_values)
      .def_property_readonly("packed_bytes", &PackedShift::packed_bytes);
  m.def("set_shift_rows_variant", &set_shift_rows_variant, py::arg("variant"),
        "The rows-in-lanes shift kernel for A/B benchmarks (all bit-exact): 0 auto, 1 exponent buckets, "
        "2 chunks of 8, 3 chunks of 16, 4 the column kernels, 5 the packed fields.");
  m.def("shift_rows_variant", &shift_rows_variant);
  m.def("set_shift_hybrid", &set_shift_hybrid, py::arg("period") = 0, py::arg("ns") = 0,
        "A/B knobs of the hybrid kernel (all bit-exact): one shift unit per `period` VNNI K groups (0: the "
        "default), `ns` shift columns (0: the automatic split).");
  m.def("pack_shift", &pack_shift, py::arg("signs"), py::arg("exponents"), py::arg("rule"),
        "Pack shift-weight terms (int8 [T, K, N] signs and exponents) for shift_gemm.");
  m.def("shift_gemm", &shift_gemm_py, py::arg("a"), py::arg("a_zero_point"), py::arg("packed"), py::arg("bias"),
        py::arg("acc_bits"), py::arg("kernel"), py::arg("out_dtype"), py::arg("requant"), py::arg("y_zero_point"),
        py::arg("lo"), py::arg("hi"));
  m.def(
      "shift_gemm_kernel_name",
      [](const py::array& a, int32_t a_zero_point, const PackedShift& w, int acc_bits, const std::string& kernel,
         const py::object& bias) {
        ShiftArgs g = make_args(a, a_zero_point, w, acc_bits, kernel);
        py::array bias_arr;  // the bias decides whether saturation is possible (routes that need none)
        g.bias = int32_vector_or_null(bias, w.N(), &bias_arr, "N");
        return shift_gemm_kernel_name(g);
      },
      py::arg("a"), py::arg("a_zero_point"), py::arg("packed"), py::arg("acc_bits"), py::arg("kernel"),
      py::arg("bias") = py::none(),
      "The kernel shift_gemm runs for these arguments on the active path.");
}

// ---------------------------------------------------------------- depthwise shift convolution
// (csrc/shift/dwshift.h, docs/semantics.md 12.4a): group = C, 8-bit NHWC activations, int32 out.

namespace {

std::shared_ptr<DwShiftPacked> pack_dwshift(const py::array& signs, const py::array& exponents, int64_t C,
                                            const std::string& rule) {
  const ShiftRule r = checked_terms(signs, exponents, 4, "[T, OC, KH, KW]", rule);
  const int T = static_cast<int>(signs.shape(0));
  const int64_t OC = signs.shape(1), KH = signs.shape(2), KW = signs.shape(3);
  const auto* s = static_cast<const int8_t*>(signs.data());
  const auto* e = static_cast<const int8_t*>(exponents.data());
  py::gil_scoped_release release;
  return std::make_shared<DwShiftPacked>(s, e, T, OC, C, KH, KW, r);
}

DwShiftArgs dwshift_args(const py::array& x, int32_t x_zero_point, const DwShiftPacked& w, int acc_bits,
                         const std::array<int64_t, 4>& pads, const std::array<int64_t, 2>& strides,
                         const std::array<int64_t, 2>& dilations) {
  if (x.ndim() != 4) throw std::invalid_argument("x must be NHWC [N, H, W, C]");
  if (!is_byte(x)) throw std::invalid_argument("x must be uint8 or int8 (8-bit activations)");
  if (!c_contiguous(x)) throw std::invalid_argument("x must be C-contiguous");
  DwShiftArgs a;
  a.x = static_cast<const uint8_t*>(x.data());
  a.x_signed = is_s8(x);
  a.N = x.shape(0);
  a.H = x.shape(1);
  a.W = x.shape(2);
  a.C = x.shape(3);
  a.x_zero_point = x_zero_point;
  a.w = &w;
  a.acc_bits = acc_bits;
  a.pad_top = pads[0];
  a.pad_left = pads[1];
  a.pad_bottom = pads[2];
  a.pad_right = pads[3];
  a.stride_h = strides[0];
  a.stride_w = strides[1];
  a.dil_h = dilations[0];
  a.dil_w = dilations[1];
  return a;
}

py::array dwshift_conv_py(const py::array& x, int32_t x_zero_point, const DwShiftPacked& w, const py::object& bias,
                          int acc_bits, const std::array<int64_t, 4>& pads, const std::array<int64_t, 2>& strides,
                          const std::array<int64_t, 2>& dilations, const std::string& out_dtype,
                          const py::object& requant, int32_t y_zero_point, int32_t lo, int32_t hi) {
  DwShiftArgs a = dwshift_args(x, x_zero_point, w, acc_bits, pads, strides, dilations);
  py::array bias_arr;
  a.bias = int32_vector_or_null(bias, w.OC(), &bias_arr, "OC");
  const int64_t OH = dw_output_size(a.H, w.KH(), a.stride_h, a.pad_top, a.pad_bottom, a.dil_h, "H");
  const int64_t OW = dw_output_size(a.W, w.KW(), a.stride_w, a.pad_left, a.pad_right, a.dil_w, "W");
  py::array out =
      output_with_epilogue(&a, out_dtype, {a.N, OH, OW, w.OC()}, w.OC(), requant, y_zero_point, lo, hi, "OC");
  {
    py::gil_scoped_release release;
    dwshift_conv(a);
  }
  return out;
}

}  // namespace

void bind_dwshift(py::module_& m) {
  py::class_<DwShiftPacked, std::shared_ptr<DwShiftPacked>>(m, "DwShiftPacked")
      .def_property_readonly("T", &DwShiftPacked::T)
      .def_property_readonly("OC", &DwShiftPacked::OC)
      .def_property_readonly("C", &DwShiftPacked::C)
      .def_property_readonly("kernel_shape", [](const DwShiftPacked& w) { return py::make_tuple(w.KH(), w.KW()); })
      .def_property_readonly("right_shifts", &DwShiftPacked::right_shifts)
      .def_property_readonly("packed_bytes", &DwShiftPacked::packed_bytes);
  m.def("pack_dwshift", &pack_dwshift, py::arg("signs"), py::arg("exponents"), py::arg("C"), py::arg("rule"),
        "Pack depthwise shift-conv terms (int8 [T, OC, KH, KW]; OC a multiple of C) for dwshift_conv.");
  m.def("dwshift_conv", &dwshift_conv_py, py::arg("x"), py::arg("x_zero_point"), py::arg("packed"), py::arg("bias"),
        py::arg("acc_bits"), py::arg("pads"), py::arg("strides"), py::arg("dilations"), py::arg("out_dtype") = "int32",
        py::arg("requant") = py::none(), py::arg("y_zero_point") = 0, py::arg("lo") = 0, py::arg("hi") = 0,
        "Depthwise shift convolution of NHWC 8-bit x (semantics 12.4a): int32 accumulators [N, OH, OW, OC], or "
        "with out_dtype uint8 / int8 their requantization (section 4) clamped to [lo, hi].");
  m.def(
      "dwshift_kernel_name",
      [](const py::array& x, int32_t x_zero_point, const DwShiftPacked& w, int acc_bits,
         const std::array<int64_t, 4>& pads, const std::array<int64_t, 2>& strides,
         const std::array<int64_t, 2>& dilations) {
        return dwshift_kernel_name(dwshift_args(x, x_zero_point, w, acc_bits, pads, strides, dilations));
      },
      py::arg("x"), py::arg("x_zero_point"), py::arg("packed"), py::arg("acc_bits"), py::arg("pads"),
      py::arg("strides"), py::arg("dilations"),
      "The kernel and lane width dwshift_conv runs for these arguments on the active path (bias aside).");
}

}  // namespace pyq
