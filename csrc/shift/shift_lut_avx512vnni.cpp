// AVX-512 VNNI multiply kernel for shift weights with at most 16 distinct int8
// values (docs/semantics.md section 12.4a): the weights are 4-bit indices into a
// 16-entry table (index 0 is the value 0), packed exactly like the int4 kernel's
// nibbles and run through the same 6x64c8 microkernel (qgemm/avx512_w4_ukernel.h)
// with one vpshufb per weight vector (the table broadcast to the four 128-bit
// lanes) decoding them into s8 weights for vpdpbusd. The table is the 64 bytes
// before GemmProblem::packed. Batch-1 GEMV streams half the bytes of the int8 kernel.
#include "qgemm/avx512_w4_ukernel.h"
#include "shift/shift.h"

namespace pyq {
namespace {

size_t lut4_packed_size(int64_t N, int64_t K) { return avx512vnni_w4_gemm_kernel()->packed_size(N, K); }
void lut4_pack(const int8_t* idx_nk, int64_t N, int64_t K, uint8_t* dst) {
  avx512vnni_w4_gemm_kernel()->pack(idx_nk, N, K, dst);
}

template <int MR, int NV, bool SIGNED_A>
struct LutUkernel {
  static void run(const GemmProblem& p, int64_t m, const uint8_t* bp, int64_t n0, int64_t cnt) {
    ukernel_6x64c8<MR, NV, SIGNED_A, true>(p, m, bp, n0, cnt);
  }
};

void lut4_compute(const GemmProblem& p, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  compute_panels_6x64<LutUkernel>(p, m0, m1, p0, p1, 64 * ((p.K + 7) / 8) * 4);
}

const GemmKernel kLut4 = {"shift_lut4_6x64c8_avx512vnni", 64, 6, lut4_packed_size, lut4_pack, lut4_compute};

}  // namespace

const GemmKernel* avx512vnni_lut4_gemm_kernel() { return &kLut4; }

}  // namespace pyq
