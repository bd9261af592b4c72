// MultiThreshold on integer inputs (docs/semantics.md 13.1): per element,
// count = #{j : x > U[r, j]} over one sorted int32 row U[r] of the prepared
// thresholds, y = (uint32)(scale[r] * count + bias[r]) stored in the low bytes
// of a 1-, 2- or 4-byte integer output. The Python layer
// (pyqinfer/ops/threshold.py) turns a model's thresholds (x >= T, any integer
// or float T, an optional per-channel sign) into this form at plan time; the
// output range is checked there too, so the truncation to the output width is
// exact. Every kernel works on a range of rows or runs, so the dispatcher can
// split the work over threads; one table of kernels per kernel path.
#pragma once
#include <cstdint>

#include "common/cpu_features.h"

namespace pyq {

enum class ThrIn : int32_t { kU8 = 0, kS8 = 1, kU16 = 2, kS16 = 3, kS32 = 4 };

// x viewed as [outer, C, inner]; the channel of an element is its middle index.
struct ThresholdArgs {
  const void* x;
  void* y;
  ThrIn in;
  int32_t out_bytes;  // 1, 2 or 4
  int64_t C, inner;
  int64_t R;             // threshold rows: 1 (every channel) or C
  int64_t W;             // thresholds per row (sorted ascending, INT32_MAX pads never count)
  const int32_t* rows;   // [R, W]
  const int32_t* cols;   // [P, Cp] (tree rows transposed, Cp = C rounded up to 16); R == C only
  int64_t Cp;
  const int32_t* tree;   // [R, P], P = 2^k - 1 >= W, rows padded with INT32_MAX (binary search)
  int32_t P, k;
  const uint32_t* scale;  // [R]
  const uint32_t* bias;   // [R]
};

enum class ThrAlgo : int32_t { kCount = 0, kSearch = 1 };

struct ThresholdKernels {
  const char* name;
  // elements [i0, i1) of the flattened tensor, all of threshold row r (r = 0 when R == 1,
  // or one run of `inner` elements of channel r)
  void (*span)(const ThresholdArgs&, int64_t i0, int64_t i1, int64_t r, ThrAlgo algo);
  // rows [o0, o1) of [outer, C] with the channel axis contiguous (inner == 1, R == C)
  void (*lanes)(const ThresholdArgs&, int64_t o0, int64_t o1, ThrAlgo algo);
};

const ThresholdKernels* threshold_kernels_scalar();
#if defined(PYQ_X86)
const ThresholdKernels* threshold_kernels_avx2();
const ThresholdKernels* threshold_kernels_avx512bw();
#endif
const ThresholdKernels* threshold_kernels_for(KernelPath p);

}  // namespace pyq
