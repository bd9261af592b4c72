// AVX-512BW depthwise path (also used on the AVX-512 VNNI path: depthwise has no
// reduction axis for vpdpbusd): 32 channels x 2 taps per lo/hi zmm pair and
// vpmaddwd (dwconv_simd_impl.h), blocks of 64 channels (4 accumulators), masked
// byte loads for the last C % 32 channels.
#include <immintrin.h>

#include "conv/dwconv_simd_impl.h"

namespace pyq {
namespace {

struct Avx512Ops {
  using V = __m512i;
  using Mask = __mmask32;
  static constexpr int kBlock = 32;
  static V zero() { return _mm512_setzero_si512(); }
  static Mask tail_mask(int64_t n) { return n >= 32 ? ~Mask{0} : static_cast<Mask>((1u << n) - 1); }
  template <bool S>
  static V widen(__m256i b) { return S ? _mm512_cvtepi8_epi16(b) : _mm512_cvtepu8_epi16(b); }
  template <bool S, bool Masked>
  static void load_pair(const uint8_t* a, const uint8_t* b, Mask m, V& lo, V& hi) {
    const __m256i ba = Masked ? _mm256_maskz_loadu_epi8(m, a) : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a));
    const __m256i bb = Masked ? _mm256_maskz_loadu_epi8(m, b) : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b));
    const V wa = widen<S>(ba), wb = widen<S>(bb);
    lo = _mm512_unpacklo_epi16(wa, wb);
    hi = _mm512_unpackhi_epi16(wa, wb);
  }
  static int64_t w_offset(int64_t c0) { return c0 / 32 * 64; }
  static V wload(const int16_t* p) { return _mm512_load_si512(p); }
  static V madd(V acc, V x, V w) { return _mm512_add_epi32(acc, _mm512_madd_epi16(x, w)); }
  static void finish(V lo, V hi, const int32_t* ct, int32_t* acc) {
    const V i0 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    const V i1 = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    _mm512_store_si512(acc, _mm512_add_epi32(_mm512_load_si512(ct), _mm512_permutex2var_epi32(lo, i0, hi)));
    _mm512_store_si512(acc + 16, _mm512_add_epi32(_mm512_load_si512(ct + 16), _mm512_permutex2var_epi32(lo, i1, hi)));
  }
  template <bool S>
  static void tail(const DwProblem& p, const uint8_t* const* pt, int64_t c0, int32_t* acc) {
    dw_simd::Row<Avx512Ops, S>::template block<1, true>(p, pt, c0, acc, tail_mask(p.C - c0));
  }
};

const DwKernel kAvx512bw = {"dwconv_avx512bw_madd16", dw_simd::row<Avx512Ops>};

}  // namespace

const DwKernel* avx512bw_dw_kernel() { return &kAvx512bw; }

}  // namespace pyq
