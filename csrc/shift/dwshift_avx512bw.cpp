// AVX-512BW depthwise shift convolution rows (docs/semantics.md 12.4a, dwshift.h):
// output channels in lanes, 16 per zmm (int32 lanes, vpsllvd) or 32 (int16 lanes,
// vpsllvw), P output pixels per weight load. Per tap and term: y = x << lc
// (lc = 32 for an off term gives 0), for right shifts y >>= rc (arithmetic: floor),
// acc += y ^ sm (sm = -1 adds -y - 1; the count is added back in the epilogue).
// The plan (dwshift.cpp) guarantees every lane sum is exact; the epilogue is
// sat_W(sum + bias) in int32 (bound + |bias| <= 2^31 - 1) or int64.
#include <immintrin.h>

#include "qgemm/epilogue.h"  // requant_store
#include "shift/dwshift.h"

namespace pyq {
namespace {

// Channels [c0, c0 + 16) (those below OC) of output pixel pix: v holds the lane sums
// minus the negative-term counts; sat_W(sum + bias), then the int32 store or the
// requantization (fp32 in registers, the other modes through requant_store).
__attribute__((always_inline)) inline void store16(const DwShiftRows& p, __m512i v, int64_t c0, int64_t pix) {
  const int64_t n = p.OC - c0;
  if (n <= 0) return;
  const int64_t cnt = n >= 16 ? 16 : n;
  const __mmask16 k = static_cast<__mmask16>((1u << cnt) - 1);
  alignas(64) int32_t tmp[16];
  if (p.epi32) {
    v = _mm512_add_epi32(v, _mm512_loadu_si512(p.addc + c0));
    v = _mm512_max_epi32(v, _mm512_set1_epi32(p.lo));
    v = _mm512_min_epi32(v, _mm512_set1_epi32(p.hi));
  } else {
    _mm512_store_si512(tmp, _mm512_add_epi32(v, _mm512_loadu_si512(p.corr + c0)));  // exact, fits int32
    dwshift_sat_wide(p, tmp, c0, cnt);
    v = _mm512_load_si512(tmp);
  }
  const int64_t at = pix * p.OC + c0;
  const GemmProblem& e = p.epi;
  if (e.out_kind == OutKind::kInt32) {
    _mm512_mask_storeu_epi32(static_cast<int32_t*>(p.out) + at, k, v);
  } else if (e.mode == RequantMode::kFp32) {  // rq_fp32 (common/requant_impl.h) in 16 lanes
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_maskz_loadu_ps(k, e.scale + c0));
    f = _mm512_max_ps(f, _mm512_set1_ps(static_cast<float>(e.lo - e.zp_y)));
    f = _mm512_min_ps(f, _mm512_set1_ps(static_cast<float>(e.hi - e.zp_y)));
    f = _mm512_sub_ps(_mm512_add_ps(f, _mm512_set1_ps(12582912.0f)), _mm512_set1_ps(12582912.0f));
    const __m512i q = _mm512_add_epi32(_mm512_cvttps_epi32(f), _mm512_set1_epi32(e.zp_y));  // in [lo, hi]
    _mm_mask_storeu_epi8(static_cast<int8_t*>(p.out) + at, k, _mm512_cvtepi32_epi8(q));
  } else {
    _mm512_store_si512(tmp, v);
    if (e.out_kind == OutKind::kUint8)
      requant_store(e, tmp, c0, cnt, static_cast<uint8_t*>(p.out) + at);
    else
      requant_store(e, tmp, c0, cnt, static_cast<int8_t*>(p.out) + at);
  }
}

// The lane type: int16 (32 channels per zmm) or int32 (16).
template <bool W16>
struct Lanes {
  using E = int32_t;
  static constexpr int64_t kWidth = 16;
  static const E* lc(const DwShiftTerms& w) { return w.lc; }
  static const E* sm(const DwShiftTerms& w) { return w.sm; }
  static const E* rc(const DwShiftTerms& w) { return w.rc; }
  static __m512i sllv(__m512i x, __m512i c) { return _mm512_sllv_epi32(x, c); }
  static __m512i srav(__m512i x, __m512i c) { return _mm512_srav_epi32(x, c); }
  static __m512i add(__m512i a, __m512i b) { return _mm512_add_epi32(a, b); }
};
template <>
struct Lanes<true> {
  using E = int16_t;
  static constexpr int64_t kWidth = 32;
  static const E* lc(const DwShiftTerms& w) { return w.lc16; }
  static const E* sm(const DwShiftTerms& w) { return w.sm16; }
  static const E* rc(const DwShiftTerms& w) { return w.rc16; }
  static __m512i sllv(__m512i x, __m512i c) { return _mm512_sllv_epi16(x, c); }
  static __m512i srav(__m512i x, __m512i c) { return _mm512_srav_epi16(x, c); }
  static __m512i add(__m512i a, __m512i b) { return _mm512_add_epi16(a, b); }
};

// P output pixels [ow0, ow0 + P) of one row, channels [cb, cb + kWidth). B (int16 lanes
// only): the taps run in blocks (p.blk_end), each summed in int16 lanes (exact: its
// partial bound fits) and widened into two int32 accumulators per pixel.
template <int P, bool R, bool W16, bool B>
inline void px(const DwShiftRows& p, const typename Lanes<W16>::E* const* rows, int64_t ow0, int64_t cb,
               int64_t pix0) {
  using L = Lanes<W16>;
  using E = typename L::E;
  static_assert(W16 || !B, "tap blocks are int16 lanes");
  const int64_t OCp = p.OCp, T = p.T, step = p.sw * OCp;
  const E *lc = L::lc(p.w), *sm = L::sm(p.w), *rc = L::rc(p.w);
  __m512i acc[P], lo[P], hi[P];
#pragma GCC unroll 8
  for (int q = 0; q < P; ++q) acc[q] = lo[q] = hi[q] = _mm512_setzero_si512();
  const int64_t* bend = p.blk_end;
  for (int64_t kh = 0; kh < p.KH; ++kh) {
    const E* xr = rows[kh] + ow0 * step + cb;
    for (int64_t kw = 0; kw < p.KW; ++kw) {
      const E* xp = xr + kw * p.dw * OCp;
      __m512i xv[P];
#pragma GCC unroll 8
      for (int q = 0; q < P; ++q) xv[q] = _mm512_loadu_si512(xp + q * step);
      const int64_t tap = kh * p.KW + kw, w0 = tap * T * OCp + cb;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t wi = w0 + t * OCp;
        const __m512i c = _mm512_loadu_si512(lc + wi), s = _mm512_loadu_si512(sm + wi);
        __m512i r = _mm512_setzero_si512();
        if constexpr (R) r = _mm512_loadu_si512(rc + wi);
#pragma GCC unroll 8
        for (int q = 0; q < P; ++q) {
          __m512i y = L::sllv(xv[q], c);
          if constexpr (R) y = L::srav(y, r);
          acc[q] = L::add(acc[q], _mm512_xor_si512(y, s));
        }
      }
      if constexpr (B) {
        if (tap + 1 == *bend) {
          ++bend;
#pragma GCC unroll 8
          for (int q = 0; q < P; ++q) {
            lo[q] = _mm512_add_epi32(lo[q], _mm512_cvtepi16_epi32(_mm512_castsi512_si256(acc[q])));
            hi[q] = _mm512_add_epi32(hi[q], _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(acc[q], 1)));
            acc[q] = _mm512_setzero_si512();
          }
        }
      }
    }
  }
#pragma GCC unroll 8
  for (int q = 0; q < P; ++q) {
    const int64_t pix = pix0 + ow0 + q;
    if constexpr (B) {
      store16(p, lo[q], cb, pix);
      store16(p, hi[q], cb + 16, pix);
    } else if constexpr (W16) {  // widen: channels cb..cb+15, cb+16..cb+31
      store16(p, _mm512_cvtepi16_epi32(_mm512_castsi512_si256(acc[q])), cb, pix);
      store16(p, _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(acc[q], 1)), cb + 16, pix);
    } else {
      store16(p, acc[q], cb, pix);
    }
  }
}

// One output row. Pixel groups of 8 (4 with tap blocks: 3 accumulators per pixel).
template <bool W16, bool R, bool B>
void row(const DwShiftRows& p, const void* const* rows_v, int64_t oh) {
  using E = typename Lanes<W16>::E;
  constexpr int kP = B ? 4 : 8;
  const E* const* rows = reinterpret_cast<const E* const*>(rows_v);
  const int64_t OW = p.OW, pix0 = oh * OW;
  for (int64_t cb = 0; cb < p.OC; cb += Lanes<W16>::kWidth) {
    int64_t ow = 0;
    for (; ow + kP <= OW; ow += kP) px<kP, R, W16, B>(p, rows, ow, cb, pix0);
    if (kP > 4 && ow + 4 <= OW) px<4, R, W16, B>(p, rows, ow, cb, pix0), ow += 4;
    if (ow + 2 <= OW) px<2, R, W16, B>(p, rows, ow, cb, pix0), ow += 2;
    if (ow < OW) px<1, R, W16, B>(p, rows, ow, cb, pix0);
  }
}

}  // namespace

void dwshift_row_avx512bw_i16(const DwShiftRows& p, const void* const* rows, int64_t oh) {
  if (p.right_shifts)
    row<true, true, false>(p, rows, oh);
  else
    row<true, false, false>(p, rows, oh);
}

void dwshift_row_avx512bw_i16_blocks(const DwShiftRows& p, const void* const* rows, int64_t oh) {
  if (p.right_shifts)
    row<true, true, true>(p, rows, oh);
  else
    row<true, false, true>(p, rows, oh);
}

void dwshift_row_avx512bw_i32(const DwShiftRows& p, const void* const* rows, int64_t oh) {
  if (p.right_shifts)
    row<false, true, false>(p, rows, oh);
  else
    row<false, false, false>(p, rows, oh);
}

}  // namespace pyq
