// The GEMM epilogue shared by every kernel path: zero-point correction, then an
// int32 store or a requantized 8-bit store. Plain loops over one row segment;
// each ISA translation unit compiles (and auto-vectorizes) its own copy, so
// everything here has internal linkage (see requant_impl.h).
#pragma once
#include <cstdint>
#include <cstring>

#include "common/requant_impl.h"
#include "qgemm/qgemm.h"

namespace pyq {
namespace {

constexpr int kMaxEpilogueCols = 64;

// Local helpers instead of std::min: a std template instantiated in an ISA
// translation unit is a weak symbol the linker may pick for portable code.
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

template <typename T>
inline void requant_store(const GemmProblem& p, const int32_t* acc, int64_t n0, int64_t cnt, T* out) {
  const int32_t zp = p.zp_y, lo = p.lo, hi = p.hi;
  switch (p.mode) {
    case RequantMode::kFp32: {
      const float* s = p.scale + n0;
      for (int64_t j = 0; j < cnt; ++j) out[j] = static_cast<T>(rq_fp32(acc[j], s[j], zp, lo, hi));
      break;
    }
    case RequantMode::kQ31: {
      const int32_t* m = p.multiplier + n0;
      const int32_t* sh = p.shift + n0;
      for (int64_t j = 0; j < cnt; ++j) out[j] = static_cast<T>(rq_q31(acc[j], m[j], sh[j], zp, lo, hi));
      break;
    }
    case RequantMode::kQ31Single: {
      const int32_t* m = p.multiplier + n0;
      const int32_t* sh = p.shift + n0;
      for (int64_t j = 0; j < cnt; ++j)
        out[j] = static_cast<T>(rq_q31_single(acc[j], m[j], sh[j], zp, lo, hi));
      break;
    }
    case RequantMode::kPot: {
      const int32_t* rs = p.shift + n0;
      for (int64_t j = 0; j < cnt; ++j) out[j] = static_cast<T>(rq_pot(acc[j], rs[j], zp, lo, hi));
      break;
    }
  }
}

// raw: cnt (<= 64) raw dot products sum_k x'[m,k] * w'[k,n0+j].
inline void epilogue_row(const GemmProblem& p, int64_t m, int64_t n0, int64_t cnt, const int32_t* raw) {
  int32_t acc[kMaxEpilogueCols];
  const uint32_t* ct = reinterpret_cast<const uint32_t*>(p.colterm + n0);
  if (p.zw) {
    const uint32_t rs = static_cast<uint32_t>(p.rowsum[m]);
    const uint32_t* zw = reinterpret_cast<const uint32_t*>(p.zw + n0);
    for (int64_t j = 0; j < cnt; ++j)
      acc[j] = static_cast<int32_t>(static_cast<uint32_t>(raw[j]) + ct[j] - zw[j] * rs);
  } else {
    for (int64_t j = 0; j < cnt; ++j) acc[j] = static_cast<int32_t>(static_cast<uint32_t>(raw[j]) + ct[j]);
  }
  switch (p.out_kind) {
    case OutKind::kInt32:
      std::memcpy(static_cast<int32_t*>(p.out) + m * p.ldc + n0, acc, static_cast<size_t>(cnt) * 4);
      break;
    case OutKind::kUint8:
      requant_store(p, acc, n0, cnt, static_cast<uint8_t*>(p.out) + m * p.ldc + n0);
      break;
    case OutKind::kInt8:
      requant_store(p, acc, n0, cnt, static_cast<int8_t*>(p.out) + m * p.ldc + n0);
      break;
  }
}

}  // namespace
}  // namespace pyq
