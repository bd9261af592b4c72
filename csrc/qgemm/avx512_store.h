// Storing a register tile of AVX-512 int32 accumulators (rows x NV zmm) through
// the epilogue, shared by the AVX-512 VNNI GEMM kernels (int8 and int4 weights).
// Internal linkage only: this is included into ISA-specific translation units.
#pragma once
#include <immintrin.h>

#include "qgemm/epilogue.h"

namespace pyq {
namespace {

// The epilogue of docs/semantics.md on the accumulators while they are still in
// registers, for int32 output and the fp32 mode (the common cases; the other
// modes go through epilogue.h). Every float operation names its rounding
// (round to nearest even), so the result does not depend on MXCSR. With K
// small (pointwise convolutions) this is where most of the time goes.
template <int MR, int NV, int SETS>
__attribute__((always_inline)) inline void store_in_registers(const GemmProblem& p, int64_t m, int64_t n0, int64_t cnt,
                                                              __m512i (&acc)[SETS][MR][NV]) {
  constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const int64_t last = cnt - 16 * (NV - 1);  // columns in the last vector, 1..16
  const __mmask16 tail = static_cast<__mmask16>(last >= 16 ? 0xFFFF : (1u << last) - 1);
  __m512i ct[NV], zw[NV];
  __m512 sc[NV];
  const bool fp32 = p.out_kind != OutKind::kInt32;
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    const __mmask16 k = v == NV - 1 ? tail : static_cast<__mmask16>(0xFFFF);
    ct[v] = _mm512_maskz_loadu_epi32(k, p.colterm + n0 + 16 * v);
    zw[v] = p.zw ? _mm512_maskz_loadu_epi32(k, p.zw + n0 + 16 * v) : _mm512_setzero_si512();
    sc[v] = fp32 ? _mm512_maskz_loadu_ps(k, p.scale + n0 + 16 * v) : _mm512_setzero_ps();
  }
  const __m512 flo = _mm512_set1_ps(static_cast<float>(p.lo - p.zp_y));
  const __m512 fhi = _mm512_set1_ps(static_cast<float>(p.hi - p.zp_y));
  const __m512i zp = _mm512_set1_epi32(p.zp_y);
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    const __m512i rs = _mm512_set1_epi32(p.rowsum ? p.rowsum[m + r] : 0);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __mmask16 k = v == NV - 1 ? tail : static_cast<__mmask16>(0xFFFF);
      __m512i a = acc[0][r][v];
      if constexpr (SETS == 2) a = _mm512_add_epi32(a, acc[SETS - 1][r][v]);
      a = _mm512_add_epi32(a, ct[v]);
      if (p.zw) a = _mm512_sub_epi32(a, _mm512_mullo_epi32(zw[v], rs));  // all modulo 2^32
      const int64_t col = n0 + 16 * v;
      if (!fp32) {
        _mm512_mask_storeu_epi32(static_cast<int32_t*>(p.out) + (m + r) * p.ldc + col, k, a);
        continue;
      }
      __m512 f = _mm512_cvt_roundepi32_ps(a, kRne);
      f = _mm512_mul_round_ps(f, sc[v], kRne);
      f = _mm512_min_ps(_mm512_max_ps(f, flo), fhi);
      const __m512i q = _mm512_add_epi32(_mm512_cvt_roundps_epi32(f, kRne), zp);  // in [lo, hi] now
      const __m128i bytes = _mm512_cvtepi32_epi8(q);  // truncation is exact: every value fits 8 bits
      if (p.out_kind == OutKind::kUint8)
        _mm_mask_storeu_epi8(static_cast<uint8_t*>(p.out) + (m + r) * p.ldc + col, k, bytes);
      else
        _mm_mask_storeu_epi8(static_cast<int8_t*>(p.out) + (m + r) * p.ldc + col, k, bytes);
    }
  }
}

// acc[SETS][MR][NV]: SETS accumulator sets to be summed (kernels with few rows
// keep two to hide latency). int32 output and fp32 requantization stay in
// registers; the other modes go through a tile in memory and epilogue_row.
template <int MR, int NV, int SETS>
__attribute__((always_inline)) inline void store_tile(const GemmProblem& p, int64_t m, int64_t n0, int64_t cnt,
                                                      __m512i (&acc)[SETS][MR][NV]) {
  if (p.out_kind == OutKind::kInt32 || p.mode == RequantMode::kFp32) {
    store_in_registers<MR, NV, SETS>(p, m, n0, cnt, acc);
    return;
  }
  alignas(64) int32_t tile[MR][kMaxEpilogueCols];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      __m512i s = acc[0][r][v];
      if constexpr (SETS == 2) s = _mm512_add_epi32(s, acc[SETS - 1][r][v]);
      _mm512_store_si512(reinterpret_cast<void*>(&tile[r][16 * v]), s);
    }
  }
  for (int r = 0; r < MR; ++r) epilogue_row(p, m + r, n0, cnt, tile[r]);
}

}  // namespace
}  // namespace pyq
