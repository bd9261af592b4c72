// The MultiThreshold kernels (docs/semantics.md 13.1) for the scalar path; the loops are in threshold_impl.h.
#include "threshold/threshold_impl.h"

namespace pyq {
namespace {
const ThresholdKernels kTable = {"scalar", thr_span_plain, thr_lanes_plain};
}  // namespace

const ThresholdKernels* threshold_kernels_scalar() { return &kTable; }

}  // namespace pyq
