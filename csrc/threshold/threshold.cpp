#include "threshold/threshold.h"

namespace pyq {

const ThresholdKernels* threshold_kernels_for(KernelPath p) {
  switch (p) {
#if defined(PYQ_X86)
    case KernelPath::kAvx512vnni:  // nothing here uses VNNI: the AVX-512BW build is the widest
    case KernelPath::kAvx512bw: return threshold_kernels_avx512bw();
    case KernelPath::kAvxVnni:
    case KernelPath::kAvx2: return threshold_kernels_avx2();
#endif
    default: return threshold_kernels_scalar();
  }
}

}  // namespace pyq
