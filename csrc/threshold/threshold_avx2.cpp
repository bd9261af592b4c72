// The MultiThreshold kernels (docs/semantics.md 13.1) for the avx2 path: the loops of
// threshold_impl.h compiled with AVX2 flags (the compiler vectorizes the counts).
#if defined(PYQ_X86)
#include "threshold/threshold_impl.h"

namespace pyq {
namespace {
const ThresholdKernels kTable = {"avx2", thr_span_plain, thr_lanes_plain};
}  // namespace

const ThresholdKernels* threshold_kernels_avx2() { return &kTable; }

}  // namespace pyq
#endif
