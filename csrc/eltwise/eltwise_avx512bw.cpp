// The eltwise kernels of docs/semantics.md section 11 compiled for the avx512bw path
// (ISA flags from the file name; see CMakeLists.txt). The loops are in eltwise_impl.h.
#if defined(PYQ_X86)
#include "eltwise/eltwise_impl.h"

namespace pyq {
namespace {
const EltwiseKernels kTable = PYQ_EW_TABLE("avx512bw");
}  // namespace

const EltwiseKernels* eltwise_kernels_avx512bw() { return &kTable; }

}  // namespace pyq
#endif
