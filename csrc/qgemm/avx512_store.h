// Storing a register tile of AVX-512 int32 accumulators (rows x NV zmm) through
// the epilogue, shared by the AVX-512 VNNI GEMM kernels (int8 and int4 weights).
// Internal linkage only: this is included into ISA-specific translation units.
#pragma once
#include <immintrin.h>

#include "qgemm/epilogue.h"

namespace pyq {
namespace {

template <int SETS, int MR, int NV>
__attribute__((always_inline)) inline void zero_tile(__m512i (&acc)[SETS][MR][NV]) {
#pragma GCC unroll 2
  for (int s = 0; s < SETS; ++s)
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[s][r][v] = _mm512_setzero_si512();
}

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

// The loops around a 6-row x 64-column AVX-512 microkernel, shared by the VNNI
// kernels: U<MR, NV, SIGNED_A>::run(p, m, panel, n0, cnt) computes rows
// [m, m+MR) of one panel whose first NV*16 columns are valid (cnt of them real).
template <template <int, int, bool> class U, int NV, bool SIGNED_A>
void rows_6x64(const GemmProblem& p, int64_t m0, int64_t m1, const uint8_t* bp, int64_t n0, int64_t cnt) {
  int64_t m = m0;
  for (; m + 6 <= m1; m += 6) U<6, NV, SIGNED_A>::run(p, m, bp, n0, cnt);
  switch (m1 - m) {
    case 5: U<5, NV, SIGNED_A>::run(p, m, bp, n0, cnt); break;
    case 4: U<4, NV, SIGNED_A>::run(p, m, bp, n0, cnt); break;
    case 3: U<3, NV, SIGNED_A>::run(p, m, bp, n0, cnt); break;
    case 2: U<2, NV, SIGNED_A>::run(p, m, bp, n0, cnt); break;
    case 1: U<1, NV, SIGNED_A>::run(p, m, bp, n0, cnt); break;
    default: break;
  }
}

// Rows [m0, m1) of panels [p0, p1); panel_bytes is the packed size of one
// 64-column panel (the last panel may be narrower: NV = ceil(cols / 16)).
template <template <int, int, bool> class U>
void compute_panels_6x64(const GemmProblem& p, int64_t m0, int64_t m1, int64_t p0, int64_t p1, int64_t panel_bytes) {
  for (int64_t pn = p0; pn < p1; ++pn) {
    const int64_t n0 = pn * 64;
    const int64_t cnt = min64(64, p.N - n0);
    const uint8_t* bp = p.packed + pn * panel_bytes;
    const int nv = static_cast<int>((cnt + 15) / 16);
    if (p.a_xor) {
      switch (nv) {
        case 4: rows_6x64<U, 4, true>(p, m0, m1, bp, n0, cnt); break;
        case 3: rows_6x64<U, 3, true>(p, m0, m1, bp, n0, cnt); break;
        case 2: rows_6x64<U, 2, true>(p, m0, m1, bp, n0, cnt); break;
        default: rows_6x64<U, 1, true>(p, m0, m1, bp, n0, cnt); break;
      }
    } else {
      switch (nv) {
        case 4: rows_6x64<U, 4, false>(p, m0, m1, bp, n0, cnt); break;
        case 3: rows_6x64<U, 3, false>(p, m0, m1, bp, n0, cnt); break;
        case 2: rows_6x64<U, 2, false>(p, m0, m1, bp, n0, cnt); break;
        default: rows_6x64<U, 1, false>(p, m0, m1, bp, n0, cnt); break;
      }
    }
  }
}

}  // namespace
}  // namespace pyq
