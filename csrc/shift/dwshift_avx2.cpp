// AVX2 depthwise shift convolution rows (docs/semantics.md 12.4a, dwshift.h): int32
// lanes (vpsllvd; AVX2 has no 16-bit variable shift), 8 output channels per ymm, P
// output pixels per weight load; the same off-term count, xor sign and count
// correction as the AVX-512BW kernel.
#include <immintrin.h>

#include <cstring>

#include "qgemm/epilogue.h"  // requant_store
#include "shift/dwshift.h"

namespace pyq {
namespace {

inline void store8(const DwShiftRows& p, __m256i v, int64_t c0, int64_t pix) {
  const int64_t n = p.OC - c0;
  if (n <= 0) return;
  const int64_t cnt = n >= 8 ? 8 : n;
  alignas(32) int32_t tmp[8];
  if (p.epi32) {
    v = _mm256_add_epi32(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.addc + c0)));
    v = _mm256_max_epi32(v, _mm256_set1_epi32(p.lo));
    v = _mm256_min_epi32(v, _mm256_set1_epi32(p.hi));
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), v);
  } else {
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp),
                       _mm256_add_epi32(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.corr + c0))));
    dwshift_sat_wide(p, tmp, c0, cnt);  // the exact sums (fit int32 by the bound) + bias, saturated
  }
  const int64_t at = pix * p.OC + c0;
  if (p.epi.out_kind == OutKind::kInt32)
    std::memcpy(static_cast<int32_t*>(p.out) + at, tmp, static_cast<size_t>(cnt) * 4);
  else if (p.epi.out_kind == OutKind::kUint8)
    requant_store(p.epi, tmp, c0, cnt, static_cast<uint8_t*>(p.out) + at);
  else
    requant_store(p.epi, tmp, c0, cnt, static_cast<int8_t*>(p.out) + at);
}

template <int P, bool R>
inline void px(const DwShiftRows& p, const int32_t* const* rows, int64_t ow0, int64_t cb, int64_t pix0) {
  const int64_t OCp = p.OCp, T = p.T, step = p.sw * OCp;
  __m256i acc[P];
#pragma GCC unroll 4
  for (int q = 0; q < P; ++q) acc[q] = _mm256_setzero_si256();
  for (int64_t kh = 0; kh < p.KH; ++kh) {
    const int32_t* xr = rows[kh] + ow0 * step + cb;
    for (int64_t kw = 0; kw < p.KW; ++kw) {
      const int32_t* xp = xr + kw * p.dw * OCp;
      __m256i xv[P];
#pragma GCC unroll 4
      for (int q = 0; q < P; ++q) xv[q] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xp + q * step));
      const int64_t w0 = (kh * p.KW + kw) * T * OCp + cb;
      for (int64_t t = 0; t < T; ++t) {
        const int64_t wi = w0 + t * OCp;
        const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.w.lc + wi));
        const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.w.sm + wi));
        __m256i r = _mm256_setzero_si256();
        if constexpr (R) r = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.w.rc + wi));
#pragma GCC unroll 4
        for (int q = 0; q < P; ++q) {
          __m256i y = _mm256_sllv_epi32(xv[q], c);
          if constexpr (R) y = _mm256_srav_epi32(y, r);
          acc[q] = _mm256_add_epi32(acc[q], _mm256_xor_si256(y, s));
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int q = 0; q < P; ++q) store8(p, acc[q], cb, pix0 + ow0 + q);
}

template <bool R>
void row(const DwShiftRows& p, const void* const* rows_v, int64_t oh) {
  const int32_t* const* rows = reinterpret_cast<const int32_t* const*>(rows_v);
  const int64_t OW = p.OW, pix0 = oh * OW;
  for (int64_t cb = 0; cb < p.OC; cb += 8) {
    int64_t ow = 0;
    for (; ow + 4 <= OW; ow += 4) px<4, R>(p, rows, ow, cb, pix0);
    if (ow + 2 <= OW) px<2, R>(p, rows, ow, cb, pix0), ow += 2;
    if (ow < OW) px<1, R>(p, rows, ow, cb, pix0);
  }
}

}  // namespace

void dwshift_row_avx2_i32(const DwShiftRows& p, const void* const* rows, int64_t oh) {
  if (p.right_shifts)
    row<true>(p, rows, oh);
  else
    row<false>(p, rows, oh);
}

}  // namespace pyq
