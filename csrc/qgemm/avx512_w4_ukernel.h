// The 6x64c8 nibble microkernel (6 rows x 64 columns, K in pairs of 4-byte
// groups, low nibbles = group 2q, high nibbles = group 2q+1), shared by the
// int4-weight kernel (qgemm_w4_avx512vnni.cpp: the nibble is the weight in
// [0, 15]) and the shift-weight LUT kernel (shift/shift_lut_avx512vnni.cpp, LUT =
// true: the nibble indexes a 16-entry int8 table, the 64 bytes before
// GemmProblem::packed, decoded with one vpshufb). Internal linkage only.
#pragma once
#include <immintrin.h>

#include <cstring>

#include "qgemm/avx512_store.h"
#include "qgemm/avx512vnni_kgroup.h"

namespace pyq {
namespace {

// One K group of 4 for all rows: HI selects the high nibbles (K group 2q+1).
template <int MR, int NV, bool HI, bool SIGNED_A, bool LUT>
__attribute__((always_inline)) inline void kgroup(__m512i (&acc)[MR][NV], const uint8_t* const (&a)[MR], int64_t off,
                                                  const uint8_t* b, __m512i mask, __m512i flip,
                                                  __m512i lut) {
  __m512i bv[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    __m512i p = _mm512_load_si512(reinterpret_cast<const void*>(b + 64 * v));
    if constexpr (HI) p = _mm512_srli_epi16(p, 4);
    bv[v] = _mm512_and_si512(p, mask);
    if constexpr (LUT) bv[v] = _mm512_shuffle_epi8(lut, bv[v]);
  }
  dpbusd_rows<MR, NV, SIGNED_A>(acc, a, off, bv, flip);
}

template <int MR, int NV, bool SIGNED_A, bool LUT>
void ukernel_6x64c8(const GemmProblem& p, int64_t m, const uint8_t* bp, int64_t n0, int64_t cnt) {
  // With 1-2 rows the low and high nibbles accumulate separately so there are
  // enough independent vpdpbusd chains to cover its latency.
  constexpr int kSets = MR <= 2 ? 2 : 1;
  const int64_t K = p.K;
  const int64_t kfull = K / 8;
  const __m512i flip = _mm512_set1_epi32(static_cast<int32_t>(0x80808080u));
  const __m512i mask = _mm512_set1_epi8(0x0F);
  const __m512i lut = LUT ? _mm512_loadu_si512(p.packed - 64) : _mm512_setzero_si512();
  const uint8_t* a[MR];
  for (int r = 0; r < MR; ++r) a[r] = p.a + (m + r) * p.lda;

  __m512i acc[kSets][MR][NV];
#pragma GCC unroll 2
  for (int s = 0; s < kSets; ++s)
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[s][r][v] = _mm512_setzero_si512();

  // The last, partial pair of K groups runs through the same loop body with the
  // activations copied into a zero-padded local buffer (the nibbles past K are 0,
  // so the padding contributes nothing; the copy only keeps the reads in bounds).
  uint8_t tail[MR][8] = {};
  int64_t off = 0, count = kfull;
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t i = 0; i < count; ++i, off += 8) {
      kgroup<MR, NV, false, SIGNED_A, LUT>(acc[0], a, off, bp, mask, flip, lut);
      kgroup<MR, NV, true, SIGNED_A, LUT>(acc[kSets - 1], a, off + 4, bp, mask, flip, lut);
      bp += NV * 64;
    }
    if (pass == 1 || K % 8 == 0) break;
    for (int r = 0; r < MR; ++r) {
      std::memcpy(tail[r], a[r] + off, static_cast<size_t>(K % 8));
      a[r] = tail[r];
    }
    off = 0;
    count = 1;
  }

  store_tile<MR, NV, kSets>(p, m, n0, cnt, acc);
}

}  // namespace
}  // namespace pyq
