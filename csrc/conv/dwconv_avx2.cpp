// AVX2 depthwise path: 16 channels x 2 taps per lo/hi ymm pair and vpmaddwd
// (dwconv_simd_impl.h), blocks of 32 channels (4 accumulators); the last C % 16
// channels go through a scalar loop (AVX2 has no masked byte load, and the input
// must not be read past its last channel).
#include <immintrin.h>

#include "conv/dwconv_simd_impl.h"

namespace pyq {
namespace {

struct Avx2Ops {
  using V = __m256i;
  using Mask = int;  // unused: the channel tail is scalar
  static constexpr int kBlock = 16;
  static V zero() { return _mm256_setzero_si256(); }
  static Mask tail_mask(int64_t) { return 0; }
  template <bool S, bool Masked>
  static void load_pair(const uint8_t* a, const uint8_t* b, Mask, V& lo, V& hi) {
    static_assert(!Masked, "AVX2 has no masked byte loads");
    const __m128i ba = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a));
    const __m128i bb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
    const V wa = S ? _mm256_cvtepi8_epi16(ba) : _mm256_cvtepu8_epi16(ba);
    const V wb = S ? _mm256_cvtepi8_epi16(bb) : _mm256_cvtepu8_epi16(bb);
    lo = _mm256_unpacklo_epi16(wa, wb);
    hi = _mm256_unpackhi_epi16(wa, wb);
  }
  static int64_t w_offset(int64_t c0) { return c0 / 32 * 64 + (c0 / 16 % 2) * 16; }
  static V wload(const int16_t* p) { return _mm256_load_si256(reinterpret_cast<const __m256i*>(p)); }
  static V madd(V acc, V x, V w) { return _mm256_add_epi32(acc, _mm256_madd_epi16(x, w)); }
  static void finish(V lo, V hi, const int32_t* ct, int32_t* acc) {
    const V c0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(ct));
    const V c1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(ct + 8));
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc), _mm256_add_epi32(c0, _mm256_permute2x128_si256(lo, hi, 0x20)));
    _mm256_store_si256(reinterpret_cast<__m256i*>(acc + 8), _mm256_add_epi32(c1, _mm256_permute2x128_si256(lo, hi, 0x31)));
  }
  static void store_pixel(const DwProblem& p, const int32_t* acc, void* out, int64_t pix) {
    dw_store_pixel(p, acc, out, pix);
  }
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

const DwKernel kAvx2 = {"dwconv_avx2_madd16", dw_simd::row<Avx2Ops>};

}  // namespace

const DwKernel* avx2_dw_kernel() { return &kAvx2; }

}  // namespace pyq
