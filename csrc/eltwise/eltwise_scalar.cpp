// The eltwise kernels of docs/semantics.md section 11 compiled for the scalar path
// (ISA flags from the file name; see CMakeLists.txt). The loops are in eltwise_impl.h.
#include "eltwise/eltwise_impl.h"

namespace pyq {
namespace {
const EltwiseKernels kTable = PYQ_EW_TABLE("scalar");
}  // namespace

const EltwiseKernels* eltwise_kernels_scalar() { return &kTable; }

}  // namespace pyq
