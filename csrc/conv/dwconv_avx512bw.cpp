// AVX-512BW depthwise path (also used on the AVX-512 VNNI path: depthwise has no
// reduction axis for vpdpbusd): 32 channels x 2 taps per lo/hi zmm pair and
// vpmaddwd (dwconv_simd_impl.h), blocks of 64 channels (4 accumulators), masked
// byte loads for the last C % 32 channels; int32 output and the fp32 epilogue
// 16 channels per zmm from the pixel's scratch row.
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
  // int32 output and fp32 requantization: 16 channels per zmm, the explicit
  // round-to-nearest-even of qgemm/avx512_store.h (docs/semantics.md section 8);
  // the other modes go through the shared scalar epilogue. Everything is read
  // into locals first: the byte stores may alias p.
  static void store_pixel(const DwProblem& p, const int32_t* acc, void* out, int64_t pix) {
    constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const int64_t C = p.C;
    if (p.epi.out_kind == OutKind::kInt32) {
      int32_t* o = static_cast<int32_t*>(out) + pix * C;
      int64_t c = 0;
      for (; c + 16 <= C; c += 16) _mm512_storeu_si512(o + c, _mm512_load_si512(acc + c));
      if (c < C) _mm512_mask_storeu_epi32(o + c, static_cast<__mmask16>((1u << (C - c)) - 1), _mm512_load_si512(acc + c));
      return;
    }
    if (p.epi.mode != RequantMode::kFp32) {
      dw_store_pixel(p, acc, out, pix);
      return;
    }
    uint8_t* o = static_cast<uint8_t*>(out) + pix * C;  // int8 output: the same bytes
    const float* sc = p.epi.scale;
    const __m512 flo = _mm512_set1_ps(static_cast<float>(p.epi.lo - p.epi.zp_y));
    const __m512 fhi = _mm512_set1_ps(static_cast<float>(p.epi.hi - p.epi.zp_y));
    const V zp = _mm512_set1_epi32(p.epi.zp_y);
    auto q16 = [&](int64_t c, __m512 s) {
      __m512 f = _mm512_mul_round_ps(_mm512_cvt_roundepi32_ps(_mm512_load_si512(acc + c), kRne), s, kRne);
      f = _mm512_min_ps(_mm512_max_ps(f, flo), fhi);
      return _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvt_roundps_epi32(f, kRne), zp));  // in [lo, hi]: exact
    };
    int64_t c = 0;
    for (; c + 16 <= C; c += 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(o + c), q16(c, _mm512_loadu_ps(sc + c)));
    if (c < C) {
      const __mmask16 k = static_cast<__mmask16>((1u << (C - c)) - 1);
      _mm_mask_storeu_epi8(o + c, k, q16(c, _mm512_maskz_loadu_ps(k, sc + c)));
    }
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
