// Small numpy-array predicates shared by the binding files (csrc/**/bindings*.cpp).
// Only binding files include this (they are compiled for the baseline ISA).
#pragma once
#include <pybind11/numpy.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/requant.h"
#include "qgemm/qgemm.h"  // OutKind

namespace pyq {
namespace pyarr {

inline bool is_dtype(const pybind11::array& a, char kind, int itemsize) {
  return a.dtype().kind() == kind && a.itemsize() == itemsize;
}
inline bool is_u8(const pybind11::array& a) { return is_dtype(a, 'u', 1); }
inline bool is_s8(const pybind11::array& a) { return is_dtype(a, 'i', 1); }
inline bool is_byte(const pybind11::array& a) { return is_u8(a) || is_s8(a); }
inline bool c_contiguous(const pybind11::array& a) { return (a.flags() & pybind11::array::c_style) != 0; }

// An optional contiguous int32 vector of n entries (a bias): null for None. `keep`
// holds the array alive for as long as the pointer is used.
inline const int32_t* int32_vector_or_null(const pybind11::object& obj, int64_t n, pybind11::array* keep,
                                           const char* what) {
  if (obj.is_none()) return nullptr;
  *keep = pybind11::array::ensure(obj);
  if (!*keep || !is_dtype(*keep, 'i', 4) || keep->ndim() != 1 || keep->shape(0) != n || !c_contiguous(*keep))
    throw std::invalid_argument(std::string("bias must be a contiguous int32 array of ") + what + " entries");
  return static_cast<const int32_t*>(keep->data());
}

// Rejects, before anything is allocated, an output with a negative dimension or
// more than 2^31 - 1 elements (the kernels index rows and pixels with int32 in
// places; docs/robustness.md). Overflow-safe: the product is never formed past the limit.
inline void check_output_shape(const std::vector<pybind11::ssize_t>& shape) {
  int64_t n = 1;
  for (pybind11::ssize_t d : shape)
    if (d < 0) throw std::invalid_argument("output shape has a negative dimension");
  for (pybind11::ssize_t d : shape) {
    if (d == 0) return;
    if (n > INT32_MAX / d) {
      std::string s;
      for (pybind11::ssize_t e : shape) s += (s.empty() ? "" : ", ") + std::to_string(e);
      throw std::invalid_argument("the output (" + s + ") would have more than 2^31 - 1 elements");
    }
    n *= d;
  }
}

// A fresh output array of out_dtype ("int32", "uint8" or "int8") and its OutKind.
inline pybind11::array make_output(const std::string& out_dtype, const std::vector<pybind11::ssize_t>& shape,
                                   OutKind* kind) {
  check_output_shape(shape);
  if (out_dtype == "int32") {
    *kind = OutKind::kInt32;
    return pybind11::array_t<int32_t>(shape);
  }
  if (out_dtype == "uint8") {
    *kind = OutKind::kUint8;
    return pybind11::array_t<uint8_t>(shape);
  }
  if (out_dtype == "int8") {
    *kind = OutKind::kInt8;
    return pybind11::array_t<int8_t>(shape);
  }
  throw std::invalid_argument("out_dtype must be int32, uint8 or int8");
}

// The requantization parameters for an 8-bit output of n channels, checked
// (channel count, clip bounds and output zero point in the output range);
// null for int32 output.
inline const RequantParams* checked_requant(const pybind11::object& requant, OutKind kind, int64_t n,
                                            int32_t y_zero_point, int32_t lo, int32_t hi, const char* what) {
  if (kind == OutKind::kInt32) return nullptr;
  if (requant.is_none()) throw std::invalid_argument("8-bit output needs requantization parameters");
  const RequantParams* rq = requant.cast<const RequantParams*>();
  const size_t need = static_cast<size_t>(n);
  const bool ok = (rq->mode == RequantMode::kFp32 && rq->scale.size() == need) ||
                  (rq->mode == RequantMode::kPot && rq->shift.size() == need) ||
                  ((rq->mode == RequantMode::kQ31 || rq->mode == RequantMode::kQ31Single) &&
                   rq->multiplier.size() == need && rq->shift.size() == need);
  if (!ok) throw std::invalid_argument(std::string("requantization parameters do not have ") + what + " channels");
  const int32_t qmin = kind == OutKind::kInt8 ? -128 : 0, qmax = kind == OutKind::kInt8 ? 127 : 255;
  if (lo < qmin || hi > qmax || lo > hi) throw std::invalid_argument("clip bounds outside the output range");
  if (y_zero_point < qmin || y_zero_point > qmax)
    throw std::invalid_argument("y_zero_point out of the range of the output dtype");
  return rq;
}

// The output array of a call and its epilogue fields in args (out_kind, requant, zp_y,
// lo, hi, out: the argument structs of the GEMM-like operators share these names);
// zp_y, lo and hi keep their defaults for int32 output (no requantization).
template <typename Args>
pybind11::array output_with_epilogue(Args* args, const std::string& out_dtype,
                                     const std::vector<pybind11::ssize_t>& shape, int64_t n,
                                     const pybind11::object& requant, int32_t y_zero_point, int32_t lo, int32_t hi,
                                     const char* what) {
  pybind11::array out = make_output(out_dtype, shape, &args->out_kind);
  args->requant = checked_requant(requant, args->out_kind, n, y_zero_point, lo, hi, what);
  if (args->requant) {
    args->zp_y = y_zero_point;
    args->lo = lo;
    args->hi = hi;
  }
  args->out = out.mutable_data();
  return out;
}

}  // namespace pyarr
}  // namespace pyq
