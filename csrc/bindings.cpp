// The pybind11 module pyqinfer._core: a thin layer that checks array shapes and
// dtypes (the Python layer in pyqinfer/ops.py gives the friendlier messages),
// releases the GIL and calls the operators.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "common/py_arrays.h"
#include "bench/peak.h"
#include "common/cpu_features.h"
#include "common/requant.h"
#include "common/threadpool.h"
#include "qgemm/qgemm.h"

namespace py = pybind11;
using pyq::OutKind;
using pyq::PackedWeights;
using pyq::RequantMode;
using pyq::RequantParams;

namespace {

using namespace pyq::pyarr;  // NOLINT: array predicates




template <typename T>
py::array_t<T> vec_to_array(const std::vector<T>& v) {
  py::array_t<T> out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

std::shared_ptr<PackedWeights> pack_weights(const py::array& b, const py::array& zero_points) {
  if (b.ndim() != 2) throw std::invalid_argument("b must be 2-D [K, N]");
  if (!is_u8(b) && !is_s8(b)) throw std::invalid_argument("b must be uint8 or int8");
  if (!c_contiguous(b)) throw std::invalid_argument("b must be C-contiguous");
  if (!is_dtype(zero_points, 'i', 4) || zero_points.ndim() != 1 || !c_contiguous(zero_points))
    throw std::invalid_argument("b_zero_point must be a contiguous 1-D int32 array");
  const int64_t K = b.shape(0), N = b.shape(1);
  const auto* zp = static_cast<const int32_t*>(zero_points.data());
  const int64_t nzp = zero_points.shape(0);
  const int32_t lo = is_s8(b) ? -128 : 0, hi = is_s8(b) ? 127 : 255;
  for (int64_t i = 0; i < nzp; ++i)
    if (zp[i] < lo || zp[i] > hi) throw std::invalid_argument("b_zero_point out of the range of b's dtype");
  py::gil_scoped_release release;
  return std::make_shared<PackedWeights>(static_cast<const uint8_t*>(b.data()), is_s8(b), K, N, N, zp, nzp);
}

std::shared_ptr<RequantParams> derive(const std::string& mode, float x_scale, const py::array& w_scale,
                                      float y_scale, int64_t n) {
  RequantMode m;
  if (!pyq::mode_from_name(mode.c_str(), &m))
    throw std::invalid_argument("unknown requant mode '" + mode + "'; expected fp32, q31, q31_single or pot");
  if (!is_dtype(w_scale, 'f', 4) || w_scale.ndim() != 1 || !c_contiguous(w_scale))
    throw std::invalid_argument("w_scale must be a contiguous 1-D float32 array");
  const int64_t nw = w_scale.shape(0);
  if (nw != 1 && nw != n) throw std::invalid_argument("w_scale must have 1 or N entries");
  return std::make_shared<RequantParams>(
      pyq::derive_requant(m, x_scale, static_cast<const float*>(w_scale.data()), nw, y_scale, n));
}

py::array qgemm(const py::array& a, int32_t a_zero_point, const PackedWeights& w, const py::object& bias,
                const std::string& out_dtype, const py::object& requant, int32_t y_zero_point, int32_t lo,
                int32_t hi) {
  if (a.ndim() != 2) throw std::invalid_argument("a must be 2-D [M, K]");
  if (!is_u8(a) && !is_s8(a)) throw std::invalid_argument("a must be uint8 or int8");
  if (!c_contiguous(a)) throw std::invalid_argument("a must be C-contiguous");
  const int64_t M = a.shape(0), K = a.shape(1), N = w.N();
  if (K != w.K()) throw std::invalid_argument("a has K=" + std::to_string(K) + " but the weights have K=" +
                                              std::to_string(w.K()));
  const bool a_signed = is_s8(a);
  if (a_zero_point < (a_signed ? -128 : 0) || a_zero_point > (a_signed ? 127 : 255))
    throw std::invalid_argument("a_zero_point out of the range of a's dtype");
  py::array bias_arr;
  const int32_t* bias_ptr = int32_vector_or_null(bias, N, &bias_arr, "N");
  OutKind kind;
  py::array out = make_output(out_dtype, {M, N}, &kind);
  const RequantParams* rq = checked_requant(requant, kind, N, y_zero_point, lo, hi, "N");
  pyq::GemmArgs g{static_cast<const uint8_t*>(a.data()), a_signed, M, K, K, a_zero_point, &w, bias_ptr,
                  kind, out.mutable_data(), N, rq, y_zero_point, lo, hi};
  {
    py::gil_scoped_release release;
    pyq::qgemm(g);
  }
  return out;
}

}  // namespace

// Each op family binds its own functions (csrc/<family>/bindings_<family>.cpp).
namespace pyq {
void bind_lowbit_gemm(py::module_& m);  // csrc/qgemm/bindings_lowbit.cpp: int4 / low-bit GEMM
void bind_conv(py::module_& m);         // csrc/conv/bindings_conv.cpp
void bind_dwconv(py::module_& m);       // csrc/conv/bindings_dwconv.cpp: depthwise kernel
void bind_eltwise(py::module_& m);      // csrc/eltwise/bindings_eltwise.cpp: pool, add, concat, (re)quantize
void bind_shift(py::module_& m);        // csrc/shift/bindings_shift.cpp: shift GEMM for power-of-two weights
void bind_dwshift(py::module_& m);      // csrc/shift/bindings_shift.cpp: depthwise shift convolution
void bind_threshold(py::module_& m);    // csrc/threshold/bindings_threshold.cpp: integer MultiThreshold
}  // namespace pyq

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyqinfer C++ kernels (see docs/semantics.md for what they compute)";

  m.def("cpu_features", [] {
    const auto& f = pyq::cpu_features();
    py::dict d;
    d["avx2"] = f.avx2;
    d["avx512bw"] = f.avx512bw;
    d["avx512vnni"] = f.avx512vnni;
    d["avxvnni"] = f.avxvnni;
    return d;
  });
  m.def("kernel_paths", [] {
    std::vector<std::string> out;
    for (auto p : pyq::supported_paths()) out.emplace_back(pyq::path_name(p));
    return out;
  });
  m.def("get_kernel_path", [] { return std::string(pyq::path_name(pyq::active_path())); });
  m.def("set_kernel_path", &pyq::force_path, py::arg("name"));
  m.def("gemm_kernel_name", [] { return std::string(pyq::gemm_kernel_for(pyq::active_path())->name); });
  m.def("get_num_threads", &pyq::get_num_threads);
  m.def("set_num_threads", &pyq::set_num_threads, py::arg("n"));

  py::class_<PackedWeights, std::shared_ptr<PackedWeights>>(m, "PackedWeights")
      .def_property_readonly("K", &PackedWeights::K)
      .def_property_readonly("N", &PackedWeights::N)
      .def_property_readonly("signed", &PackedWeights::weights_signed)
      .def_property_readonly("zero_points", [](const PackedWeights& w) { return vec_to_array(w.zero_points()); })
      .def_property_readonly("packed_bytes", &PackedWeights::packed_bytes);
  m.def("pack_weights", &pack_weights, py::arg("b"), py::arg("zero_points"));

  py::class_<RequantParams, std::shared_ptr<RequantParams>>(m, "RequantParams")
      .def_property_readonly("mode", [](const RequantParams& r) { return std::string(pyq::mode_name(r.mode)); })
      .def_property_readonly("scale", [](const RequantParams& r) { return vec_to_array(r.scale); })
      .def_property_readonly("multiplier", [](const RequantParams& r) { return vec_to_array(r.multiplier); })
      .def_property_readonly("shift", [](const RequantParams& r) { return vec_to_array(r.shift); });
  m.def("derive_requant", &derive, py::arg("mode"), py::arg("x_scale"), py::arg("w_scale"), py::arg("y_scale"),
        py::arg("n"));

  m.def("qgemm", &qgemm, py::arg("a"), py::arg("a_zero_point"), py::arg("packed"), py::arg("bias"),
        py::arg("out_dtype"), py::arg("requant"), py::arg("y_zero_point"), py::arg("lo"), py::arg("hi"));

#if defined(PYQ_X86)
  m.def("peak_avx512vnni_seconds", [](int64_t iters) {
    if (!pyq::cpu_features().avx512vnni) throw std::runtime_error("this CPU has no AVX-512 VNNI");
    py::gil_scoped_release release;
    return pyq::peak_avx512vnni_seconds(iters);
  });
#endif

  pyq::bind_lowbit_gemm(m);
  pyq::bind_conv(m);
  pyq::bind_dwconv(m);
  pyq::bind_eltwise(m);
  pyq::bind_shift(m);
  pyq::bind_dwshift(m);
  pyq::bind_threshold(m);
}
