// TEMPORARY: the avx2 microkernel is being written; until then this path runs
// the portable kernel so that the build and dispatch can be exercised.
#include "qgemm/qgemm.h"

namespace pyq {
const GemmKernel* avx2_gemm_kernel() { return scalar_gemm_kernel(); }
}  // namespace pyq
