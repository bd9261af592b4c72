// The MultiThreshold kernels (docs/semantics.md 13.1) as plain loops, compiled
// once per ISA file that includes this header (threshold_scalar.cpp,
// threshold_avx2.cpp; threshold_avx512bw.cpp uses them for what it does not
// write with intrinsics). Internal linkage throughout: each ISA copy must stay
// in its own translation unit. Exact integer arithmetic only: int32 compares,
// uint32 (modular) scale and bias, the output truncated to its width (the
// Python layer checked that the result fits).
#pragma once
#include <cstdint>

#include "threshold/threshold.h"

// Calls FN<TI, TO>(args...) for the input kind and output width of ThresholdArgs A.
#define PYQ_THR_DISPATCH(A, FN, ...)                                                   \
  do {                                                                                 \
    switch ((A).in) {                                                                  \
      case ThrIn::kU8: PYQ_THR_DISPATCH_OUT(A, uint8_t, FN, __VA_ARGS__); break;       \
      case ThrIn::kS8: PYQ_THR_DISPATCH_OUT(A, int8_t, FN, __VA_ARGS__); break;        \
      case ThrIn::kU16: PYQ_THR_DISPATCH_OUT(A, uint16_t, FN, __VA_ARGS__); break;     \
      case ThrIn::kS16: PYQ_THR_DISPATCH_OUT(A, int16_t, FN, __VA_ARGS__); break;      \
      default: PYQ_THR_DISPATCH_OUT(A, int32_t, FN, __VA_ARGS__); break;               \
    }                                                                                  \
  } while (0)
#define PYQ_THR_DISPATCH_OUT(A, TI, FN, ...)                  \
  do {                                                        \
    if ((A).out_bytes == 1) FN<TI, uint8_t>(__VA_ARGS__);     \
    else if ((A).out_bytes == 2) FN<TI, uint16_t>(__VA_ARGS__); \
    else FN<TI, uint32_t>(__VA_ARGS__);                       \
  } while (0)

namespace pyq {
namespace {

// #{j < W : v > row[j]}
inline uint32_t thr_count(const int32_t* row, int64_t W, int32_t v) {
  uint32_t c = 0;
  for (int64_t j = 0; j < W; ++j) c += v > row[j] ? 1u : 0u;
  return c;
}

// The same count on a row padded to 2^k - 1 sorted entries (pads INT32_MAX): branchless
// binary search; after the loop every entry below pos is < v and every other entry >= v.
inline uint32_t thr_search(const int32_t* tree, int32_t k, int32_t v) {
  uint32_t pos = 0;
  for (uint32_t step = k > 0 ? 1u << (k - 1) : 0u; step; step >>= 1) pos += v > tree[pos + step - 1] ? step : 0u;
  return pos;
}

template <typename TI, typename TO>
void thr_span_scalar(const ThresholdArgs& a, int64_t i0, int64_t i1, int64_t r, ThrAlgo algo) {
  const TI* x = static_cast<const TI*>(a.x);
  TO* y = static_cast<TO*>(a.y);
  const uint32_t s = a.scale[r], b = a.bias[r];
  if (algo == ThrAlgo::kCount) {
    const int32_t* row = a.rows + r * a.W;
    for (int64_t i = i0; i < i1; ++i) y[i] = static_cast<TO>(s * thr_count(row, a.W, x[i]) + b);
  } else {
    const int32_t* tree = a.tree + r * a.P;
    for (int64_t i = i0; i < i1; ++i) y[i] = static_cast<TO>(s * thr_search(tree, a.k, x[i]) + b);
  }
}

template <typename TI, typename TO>
void thr_lanes_scalar(const ThresholdArgs& a, int64_t o0, int64_t o1, ThrAlgo algo) {
  const int64_t C = a.C;
  const TI* x = static_cast<const TI*>(a.x);
  TO* y = static_cast<TO*>(a.y);
  for (int64_t o = o0; o < o1; ++o) {
    const TI* xr = x + o * C;
    TO* yr = y + o * C;
    for (int64_t c = 0; c < C; ++c) {
      const uint32_t n = algo == ThrAlgo::kCount ? thr_count(a.rows + c * a.W, a.W, xr[c])
                                                 : thr_search(a.tree + c * a.P, a.k, xr[c]);
      yr[c] = static_cast<TO>(a.scale[c] * n + a.bias[c]);
    }
  }
}

[[maybe_unused]] void thr_span_plain(const ThresholdArgs& a, int64_t i0, int64_t i1, int64_t r, ThrAlgo algo) {
  PYQ_THR_DISPATCH(a, thr_span_scalar, a, i0, i1, r, algo);
}

[[maybe_unused]] void thr_lanes_plain(const ThresholdArgs& a, int64_t o0, int64_t o1, ThrAlgo algo) {
  PYQ_THR_DISPATCH(a, thr_lanes_scalar, a, o0, o1, algo);
}

}  // namespace
}  // namespace pyq
