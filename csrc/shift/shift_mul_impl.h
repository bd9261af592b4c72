// The int32 multiply form of the shift weights (decoded values, docs/semantics.md
// section 12.4a): plain loops that each ISA translation unit compiles (and
// auto-vectorizes) on its own, so everything here has internal linkage.
#pragma once
#include <cstdint>

#include "shift/shift.h"

namespace pyq {
namespace {

// Rows [m0, m1), columns [n0, n1) (<= 64) of sum_k x[m,k] * w[k,n] with int32
// lanes. The caller guarantees the static bound is <= 2^31 - 1, so no partial sum
// overflows; the arithmetic is unsigned (modular) anyway.
inline void mul32_rows(const int32_t* x, int64_t K, const int32_t* w_kn, int64_t N, int64_t m0, int64_t m1,
                       int64_t n0, int64_t n1, int64_t* tile) {
  const int64_t cnt = n1 - n0;
  constexpr int kR = 4;
  int64_t m = m0;
  for (; m < m1; m += kR) {
    const int rows = static_cast<int>(m1 - m < kR ? m1 - m : kR);
    alignas(64) uint32_t acc[kR][kShiftPanel] = {};
    for (int64_t k = 0; k < K; ++k) {
      const uint32_t* wr = reinterpret_cast<const uint32_t*>(w_kn + k * N + n0);
      for (int r = 0; r < rows; ++r) {
        const uint32_t xv = static_cast<uint32_t>(x[(m + r) * K + k]);
        uint32_t* a = acc[r];
        for (int64_t j = 0; j < cnt; ++j) a[j] += xv * wr[j];
      }
    }
    for (int r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cnt; ++j) tile[(m - m0 + r) * kShiftPanel + j] = static_cast<int32_t>(acc[r][j]);
  }
}

}  // namespace
}  // namespace pyq
