// AVX2 path: microkernel 4x16c4 (4 rows, 16 columns = 2 ymm, K in groups of 4
// bytes) on the exact int16 widening of qgemm_int16_impl.h: per (row, ymm) and
// K group, two vpmaddwd and two vpaddd. 8 accumulators + 4 weight registers +
// the split activations fit the 16 ymm registers.
#include <immintrin.h>

#include "qgemm/qgemm_int16_impl.h"

namespace pyq {
namespace {

struct Avx2Ops {
  using V = __m256i;
  static constexpr int kLanes = 8;
  static V zero() { return _mm256_setzero_si256(); }
  static V load(const void* p) { return _mm256_load_si256(static_cast<const __m256i*>(p)); }
  static void store(void* p, V v) { _mm256_store_si256(static_cast<__m256i*>(p), v); }
  static V set1(int32_t x) { return _mm256_set1_epi32(x); }
  static V and_(V a, V b) { return _mm256_and_si256(a, b); }
  static V xor_(V a, V b) { return _mm256_xor_si256(a, b); }
  static V srli16_8(V a) { return _mm256_srli_epi16(a, 8); }
  static V madd16(V a, V b) { return _mm256_madd_epi16(a, b); }
  static V add32(V a, V b) { return _mm256_add_epi32(a, b); }
};

using Avx2Kernel = int16_gemm::Kernel<Avx2Ops, 4, 16>;

const GemmKernel kAvx2 = {"qgemm_4x16c4_avx2_madd16", 16, 4, Avx2Kernel::packed_size, Avx2Kernel::pack,
                          Avx2Kernel::compute};

}  // namespace

const GemmKernel* avx2_gemm_kernel() { return &kAvx2; }

}  // namespace pyq
