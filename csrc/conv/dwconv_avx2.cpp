// AVX2 depthwise path: 8 channels per ymm, blocks of 32 channels (4
// accumulators); the last C % 8 channels go through a scalar loop (AVX2 has no
// masked byte load, and the input must not be read past its last channel).
#include <immintrin.h>

#include "conv/dwconv_simd_impl.h"

namespace pyq {
namespace {

struct Avx2Ops {
  using V = __m256i;
  static constexpr int kLanes = 8;
  static V load(const int32_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }
  static void store(int32_t* p, V v) { _mm256_store_si256(reinterpret_cast<__m256i*>(p), v); }
  template <bool S>
  static V load_x(const uint8_t* p) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return S ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
  }
  static V madd(V acc, V x, V w) { return _mm256_add_epi32(acc, _mm256_mullo_epi32(x, w)); }
  template <bool S>
  static void tail(const DwProblem& p, const uint8_t* const* pt, int64_t c0, int32_t* acc) {
    for (int64_t c = c0; c < p.C; ++c) {
      uint32_t s = static_cast<uint32_t>(p.colterm[c]);
      const int32_t* w = p.w + c;
      for (int64_t t = 0; t < p.taps; ++t, w += p.Cp) {
        const int32_t x = S ? static_cast<int32_t>(static_cast<int8_t>(pt[t][c])) : static_cast<int32_t>(pt[t][c]);
        s += static_cast<uint32_t>(x * *w);
      }
      acc[c] = static_cast<int32_t>(s);
    }
  }
};

const DwKernel kAvx2 = {"dwconv_avx2_mul32", dw_simd::row<Avx2Ops>};

}  // namespace

const DwKernel* avx2_dw_kernel() { return &kAvx2; }

}  // namespace pyq
