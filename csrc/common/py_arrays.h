// Small numpy-array predicates shared by the binding files (csrc/**/bindings*.cpp).
// Only binding files include this (they are compiled for the baseline ISA).
#pragma once
#include <pybind11/numpy.h>

namespace pyq {
namespace pyarr {

inline bool is_dtype(const pybind11::array& a, char kind, int itemsize) {
  return a.dtype().kind() == kind && a.itemsize() == itemsize;
}
inline bool is_u8(const pybind11::array& a) { return is_dtype(a, 'u', 1); }
inline bool is_s8(const pybind11::array& a) { return is_dtype(a, 'i', 1); }
inline bool is_byte(const pybind11::array& a) { return is_u8(a) || is_s8(a); }
inline bool c_contiguous(const pybind11::array& a) { return (a.flags() & pybind11::array::c_style) != 0; }

}  // namespace pyarr
}  // namespace pyq
