// Shared by every depthwise row kernel (dwconv_<isa>.cpp): the per-pixel epilogue.
// Compiled into translation units with different ISA flags, so everything here
// has internal linkage (see qgemm/epilogue.h, whose requant_store it reuses).
#pragma once
#include <cstring>

#include "conv/dwconv.h"
#include "qgemm/epilogue.h"

namespace pyq {
namespace {

// acc: the C accumulators of output pixel `pix` of the row (colterm included).
inline void dw_store_pixel(const DwProblem& p, const int32_t* acc, void* out, int64_t pix) {
  const int64_t C = p.C;
  switch (p.epi.out_kind) {
    case OutKind::kInt32:
      std::memcpy(static_cast<int32_t*>(out) + pix * C, acc, static_cast<size_t>(C) * 4);
      break;
    case OutKind::kUint8:
      requant_store(p.epi, acc, 0, C, static_cast<uint8_t*>(out) + pix * C);
      break;
    case OutKind::kInt8:
      requant_store(p.epi, acc, 0, C, static_cast<int8_t*>(out) + pix * C);
      break;
  }
}

}  // namespace
}  // namespace pyq
