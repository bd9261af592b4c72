// Python bindings for int4 and low-bit GEMM (docs/semantics.md section 9):
// packing weights of a declared width, ONNX-packed int4 weights, and a fast
// int4 unpack for packed activations. The GEMM itself is _core.qgemm.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/py_arrays.h"
#include "common/cpu_features.h"
#include "qgemm/qgemm.h"

namespace py = pybind11;

namespace pyq {
namespace {

using namespace pyq::pyarr;  // NOLINT: array predicates


const int32_t* check_zero_points(const py::array& zp, int64_t N, int64_t* n_out) {
  if (!is_dtype(zp, 'i', 4) || zp.ndim() != 1 || !c_contiguous(zp))
    throw std::invalid_argument("b_zero_point must be a contiguous 1-D int32 array");
  const int64_t n = zp.shape(0);
  if (n != 1 && n != N) throw std::invalid_argument("b_zero_point must have 1 or N entries");
  *n_out = n;
  return static_cast<const int32_t*>(zp.data());
}

// Element i of an ONNX-packed int4 buffer: the low nibble of byte i/2 for even
// i, the high nibble for odd i; sign-extended when signed.
inline uint8_t nibble(const uint8_t* p, int64_t i, bool is_signed) {
  const uint8_t v = (i & 1) ? static_cast<uint8_t>(p[i >> 1] >> 4) : static_cast<uint8_t>(p[i >> 1] & 0x0F);
  return is_signed && v >= 8 ? static_cast<uint8_t>(v | 0xF0) : v;
}

void unpack_into(const uint8_t* p, int64_t count, bool is_signed, uint8_t* out) {
  const int64_t pairs = count / 2;
  const uint8_t ext = is_signed ? 0xF0 : 0x00;
  for (int64_t i = 0; i < pairs; ++i) {
    const uint8_t lo = p[i] & 0x0F, hi = p[i] >> 4;
    out[2 * i] = static_cast<uint8_t>(lo | ((lo & 0x08) ? ext : 0));
    out[2 * i + 1] = static_cast<uint8_t>(hi | ((hi & 0x08) ? ext : 0));
  }
  if (count & 1) out[count - 1] = nibble(p, count - 1, is_signed);
}

const uint8_t* check_packed(const py::array& packed, int64_t count) {
  if (!is_dtype(packed, 'u', 1) || !c_contiguous(packed))
    throw std::invalid_argument("packed int4 data must be a C-contiguous uint8 array");
  if (count < 0 || packed.size() != (count + 1) / 2)
    throw std::invalid_argument("packed int4 data has " + std::to_string(packed.size()) + " bytes; " +
                                std::to_string(count) + " elements need " + std::to_string((count + 1) / 2));
  return static_cast<const uint8_t*>(packed.data());
}

std::shared_ptr<PackedWeights> pack_lowbit(const py::array& b, const py::array& zero_points, int bits) {
  if (b.ndim() != 2) throw std::invalid_argument("b must be 2-D [K, N]");
  const bool s8 = is_dtype(b, 'i', 1);
  if (!s8 && !is_dtype(b, 'u', 1)) throw std::invalid_argument("b must be uint8 or int8");
  if (!c_contiguous(b)) throw std::invalid_argument("b must be C-contiguous");
  const int64_t K = b.shape(0), N = b.shape(1);
  int64_t nzp = 0;
  const int32_t* zp = check_zero_points(zero_points, N, &nzp);
  py::gil_scoped_release release;
  return std::make_shared<PackedWeights>(static_cast<const uint8_t*>(b.data()), s8, K, N, N, zp, nzp, bits);
}

std::shared_ptr<PackedWeights> pack_int4(const py::array& packed, int64_t K, int64_t N, bool is_signed,
                                         const py::array& zero_points) {
  if (K <= 0 || N <= 0) throw std::invalid_argument("int4 weights must have K > 0 and N > 0");
  const uint8_t* p = check_packed(packed, K * N);
  int64_t nzp = 0;
  const int32_t* zp = check_zero_points(zero_points, N, &nzp);
  py::gil_scoped_release release;
  std::vector<uint8_t> b(static_cast<size_t>(K * N));
  unpack_into(p, K * N, is_signed, b.data());
  return std::make_shared<PackedWeights>(b.data(), is_signed, K, N, N, zp, nzp, 4);
}

py::array unpack_int4(const py::array& packed, int64_t count, bool is_signed) {
  const uint8_t* p = check_packed(packed, count);
  py::array out = is_signed ? py::array(py::array_t<int8_t>(count)) : py::array(py::array_t<uint8_t>(count));
  auto* dst = static_cast<uint8_t*>(out.mutable_data());
  {
    py::gil_scoped_release release;
    unpack_into(p, count, is_signed, dst);
  }
  return out;
}

}  // namespace

void bind_lowbit_gemm(py::module_& m) {
  m.def("pack_weights_lowbit", &pack_lowbit, py::arg("b"), py::arg("zero_points"), py::arg("bits"),
        "Pack b [K, N] (int8/uint8 container) whose values and zero points lie in the declared width.");
  m.def("pack_int4_weights", &pack_int4, py::arg("packed"), py::arg("K"), py::arg("N"), py::arg("signed"),
        py::arg("zero_points"), "Pack ONNX-packed int4/uint4 weights [K, N] (ceil(K*N/2) bytes).");
  m.def("unpack_int4", &unpack_int4, py::arg("packed"), py::arg("count"), py::arg("signed"),
        "The first `count` nibbles of ONNX-packed int4/uint4 data as a 1-D int8/uint8 array.");
  m.def(
      "weights_bits", [](const PackedWeights& w) { return w.bits(); }, py::arg("w"));
  m.def(
      "gemm_kernel_name_for",
      [](const PackedWeights& w) { return std::string(gemm_kernel_for(active_path(), w.bits())->name); },
      py::arg("w"), "The kernel the active path runs for these weights.");
}

}  // namespace pyq
