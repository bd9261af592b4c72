// AVX-512BW depthwise path (also used on the AVX-512 VNNI path: depthwise has no
// reduction axis for vpdpbusd): 16 channels per zmm, blocks of 64 channels (4
// accumulators), a masked byte load for the last C % 16 channels.
#include <immintrin.h>

#include "conv/dwconv_simd_impl.h"

namespace pyq {
namespace {

struct Avx512Ops {
  using V = __m512i;
  static constexpr int kLanes = 16;
  static V load(const int32_t* p) { return _mm512_load_si512(p); }
  static void store(int32_t* p, V v) { _mm512_store_si512(p, v); }
  template <bool S>
  static V widen(__m128i b) { return S ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b); }
  template <bool S>
  static V load_x(const uint8_t* p) { return widen<S>(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static V madd(V acc, V x, V w) { return _mm512_add_epi32(acc, _mm512_mullo_epi32(x, w)); }
  template <bool S>
  static void tail(const DwProblem& p, const uint8_t* const* pt, int64_t c0, int32_t* acc) {
    const __mmask16 m = static_cast<__mmask16>((1u << (p.C - c0)) - 1);
    V a = load(p.colterm + c0);
    const int32_t* w = p.w + c0;
    for (int64_t t = 0; t < p.taps; ++t, w += p.Cp) a = madd(a, widen<S>(_mm_maskz_loadu_epi8(m, pt[t] + c0)), load(w));
    store(acc + c0, a);
  }
};

const DwKernel kAvx512bw = {"dwconv_avx512bw_mul32", dw_simd::row<Avx512Ops>};

}  // namespace

const DwKernel* avx512bw_dw_kernel() { return &kAvx512bw; }

}  // namespace pyq
