// AVX2 shift GEMM (docs/semantics.md section 12.4a): int32 lanes (vpsllvd, 8
// columns per ymm; AVX2 has no 16-bit variable shift), 2 rows x 32 columns per
// register tile, the same one's-complement sign trick and off-term count as the
// AVX-512BW kernel. Panels whose bound exceeds int32 go to the portable code.
#include <immintrin.h>

#include "shift/shift_mul_impl.h"

namespace pyq {
namespace {

template <int MR, bool R>
void rows_half(const ShiftProblem& p, int64_t m, const int16_t* base, int half, int32_t (*acc32)[kShiftPanel]) {
  const int T = p.T;
  const int64_t re = p.row_elems, K = p.K;
  __m256i acc[MR][4];
#pragma GCC unroll 2
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[r][v] = _mm256_setzero_si256();
  const int16_t* rec = base + 32 * half;
  for (int64_t k = 0; k < K; ++k) {
    for (int t = 0; t < T; ++t, rec += re) {
      __m256i c[4], s[4], rr[4];
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) {
        c[v] = _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rec + 8 * v)));
        s[v] = _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rec + 64 + 8 * v)));
        if constexpr (R) rr[v] = _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rec + 128 + 8 * v)));
      }
#pragma GCC unroll 2
      for (int r = 0; r < MR; ++r) {
        const __m256i xv = _mm256_set1_epi32(p.x[(m + r) * K + k]);
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) {
          __m256i y = _mm256_sllv_epi32(xv, c[v]);
          if constexpr (R) y = _mm256_srav_epi32(y, rr[v]);
          acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_xor_si256(y, s[v]));
        }
      }
    }
  }
#pragma GCC unroll 2
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc32[r] + 32 * half + 8 * v), acc[r][v]);
}

template <bool R>
void panel(const ShiftProblem& p, int64_t m0, int64_t m1, int64_t pn, int64_t* tile) {
  const int16_t* base = p.pack16 + pn * p.K * p.T * p.row_elems;
  const int64_t n0 = pn * kShiftPanel;
  const int64_t cnt = p.N - n0 < kShiftPanel ? p.N - n0 : kShiftPanel;
  alignas(32) int32_t acc32[2][kShiftPanel];
  for (int64_t m = m0; m < m1; m += 2) {
    const int rows = m1 - m < 2 ? 1 : 2;
    for (int half = 0; half < (cnt > 32 ? 2 : 1); ++half) {
      if (rows == 2)
        rows_half<2, R>(p, m, base, half, acc32);
      else
        rows_half<1, R>(p, m, base, half, acc32);
    }
    for (int r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cnt; ++j)
        tile[(m - m0 + r) * kShiftPanel + j] = static_cast<int64_t>(acc32[r][j]) + p.negcnt[n0 + j];
  }
}

}  // namespace

void shift_compute_avx2(const ShiftProblem& p, int64_t m0, int64_t m1, int64_t pn, int64_t* tile) {
  if (static_cast<LaneMode>(p.lane_mode[pn]) == LaneMode::kWide) {
    shift_compute_scalar(p, m0, m1, pn, tile);
    return;
  }
  if (p.right_shifts)
    panel<true>(p, m0, m1, pn, tile);
  else
    panel<false>(p, m0, m1, pn, tile);
}

}  // namespace pyq
