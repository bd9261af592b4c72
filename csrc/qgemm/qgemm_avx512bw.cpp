// AVX-512BW path (no VNNI): microkernel 4x64c4 (4 rows, 64 columns = 4 zmm, K in
// groups of 4 bytes) on the exact int16 widening of qgemm_int16_impl.h: per
// (row, zmm) and K group, two vpmaddwd and two vpaddd. 16 accumulators + 8
// weight registers + the split activations fit the 32 zmm registers.
#include <immintrin.h>

#include "qgemm/qgemm_int16_impl.h"

namespace pyq {
namespace {

struct Avx512bwOps {
  using V = __m512i;
  static constexpr int kLanes = 16;
  static V zero() { return _mm512_setzero_si512(); }
  static V load(const void* p) { return _mm512_load_si512(p); }
  static void store(void* p, V v) { _mm512_store_si512(p, v); }
  static V set1(int32_t x) { return _mm512_set1_epi32(x); }
  static V and_(V a, V b) { return _mm512_and_si512(a, b); }
  static V xor_(V a, V b) { return _mm512_xor_si512(a, b); }
  static V srli16_8(V a) { return _mm512_srli_epi16(a, 8); }
  static V madd16(V a, V b) { return _mm512_madd_epi16(a, b); }
  static V add32(V a, V b) { return _mm512_add_epi32(a, b); }
};

using Avx512bwKernel = int16_gemm::Kernel<Avx512bwOps, 4, 64>;

const GemmKernel kAvx512bw = {"qgemm_4x64c4_avx512bw_madd16", 64, 4, Avx512bwKernel::packed_size,
                              Avx512bwKernel::pack, Avx512bwKernel::compute};

}  // namespace

const GemmKernel* avx512bw_gemm_kernel() { return &kAvx512bw; }

}  // namespace pyq
