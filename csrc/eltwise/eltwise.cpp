#include "eltwise/eltwise.h"

namespace pyq {

const EltwiseKernels* eltwise_kernels_for(KernelPath p) {
  switch (p) {
#if defined(PYQ_X86)
    case KernelPath::kAvx512vnni:  // nothing here uses VNNI: the AVX-512BW build is the widest
    case KernelPath::kAvx512bw: return eltwise_kernels_avx512bw();
    case KernelPath::kAvxVnni:
    case KernelPath::kAvx2: return eltwise_kernels_avx2();
#endif
    default: return eltwise_kernels_scalar();
  }
}

}  // namespace pyq
