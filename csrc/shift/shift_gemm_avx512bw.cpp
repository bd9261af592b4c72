// AVX-512BW shift GEMM (docs/semantics.md section 12.4a): lanes are the 64 columns
// of a panel, one broadcast activation per row, one variable shift per term:
//   int16 lanes (vpsllvw, 32 columns per zmm) over k blocks whose partial bound
//   fits int16, widened (vpmovsxwd) into int32 after each block;
//   int32 lanes (vpsllvd, 16 columns per zmm) when the whole bound fits int32;
//   wider panels go to the portable int64/int128 code.
// Signs: a negative term adds (x << e) ^ -1 = -(x << e) - 1, and the number of
// negative terms of the column is added back at the end; off terms shift by 32,
// which gives 0. Right shifts (rule deepshift) are an arithmetic vpsrav after the
// left shift (one of the two counts is 0). All lane arithmetic is modular and the
// plan (shift.cpp) guarantees every block's exact sum fits its lanes.
// The rows-in-lanes kernels (exponent buckets and fixed chunks, 32 rows per zmm)
// follow the column kernels.
#include <immintrin.h>

#include <cstring>

#include "shift/shift_mul_impl.h"

namespace pyq {
namespace {

template <int MR, bool R>
void int16_rows(const ShiftProblem& p, int64_t m, const int16_t* base, const int32_t* ends, int64_t nblocks,
                int32_t (*acc32)[kShiftPanel]) {
  const int T = p.T;
  const int64_t re = p.row_elems, K = p.K;
  const int16_t* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = p.x16 + (m + r) * K;
  int64_t k = 0;
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t ke = ends[b];
    __m512i acc[MR][2];
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
    for (; k < ke; ++k) {
      const int16_t* rec = base + k * T * re;
      for (int t = 0; t < T; ++t, rec += re) {
        const __m512i c0 = _mm512_loadu_si512(rec), c1 = _mm512_loadu_si512(rec + 32);
        const __m512i s0 = _mm512_loadu_si512(rec + 64), s1 = _mm512_loadu_si512(rec + 96);
        __m512i r0 = _mm512_setzero_si512(), r1 = r0;
        if constexpr (R) {
          r0 = _mm512_loadu_si512(rec + 128);
          r1 = _mm512_loadu_si512(rec + 160);
        }
#pragma GCC unroll 6
        for (int r = 0; r < MR; ++r) {
          const __m512i xv = _mm512_set1_epi16(xr[r][k]);
          __m512i v0 = _mm512_sllv_epi16(xv, c0), v1 = _mm512_sllv_epi16(xv, c1);
          if constexpr (R) {
            v0 = _mm512_srav_epi16(v0, r0);
            v1 = _mm512_srav_epi16(v1, r1);
          }
          acc[r][0] = _mm512_add_epi16(acc[r][0], _mm512_xor_si512(v0, s0));
          acc[r][1] = _mm512_add_epi16(acc[r][1], _mm512_xor_si512(v1, s1));
        }
      }
    }
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
      for (int v = 0; v < 2; ++v) {
        int32_t* dst = acc32[r] + 32 * v;
        const __m512i lo = _mm512_cvtepi16_epi32(_mm512_castsi512_si256(acc[r][v]));
        const __m512i hi = _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(acc[r][v], 1));
        _mm512_storeu_si512(dst, _mm512_add_epi32(_mm512_loadu_si512(dst), lo));
        _mm512_storeu_si512(dst + 16, _mm512_add_epi32(_mm512_loadu_si512(dst + 16), hi));
      }
  }
}

template <int MR, bool R>
void int32_rows(const ShiftProblem& p, int64_t m, const int16_t* base, int32_t (*acc32)[kShiftPanel]) {
  const int T = p.T;
  const int64_t re = p.row_elems, K = p.K;
  const int32_t* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = p.x + (m + r) * K;
  __m512i acc[MR][4];
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_setzero_si512();
  const int16_t* rec = base;
  for (int64_t k = 0; k < K; ++k) {
    for (int t = 0; t < T; ++t, rec += re) {
      __m512i c[4], s[4], rr[4];
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) {
        c[v] = _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(rec + 16 * v)));
        s[v] = _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(rec + 64 + 16 * v)));
        if constexpr (R)
          rr[v] = _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(rec + 128 + 16 * v)));
      }
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) {
        const __m512i xv = _mm512_set1_epi32(xr[r][k]);
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) {
          __m512i y = _mm512_sllv_epi32(xv, c[v]);
          if constexpr (R) y = _mm512_srav_epi32(y, rr[v]);
          acc[r][v] = _mm512_add_epi32(acc[r][v], _mm512_xor_si512(y, s[v]));
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) _mm512_storeu_si512(acc32[r] + 16 * v, acc[r][v]);
}

// int32 lanes from the int32 records: 6 rows x 32 columns (half h of the panel).
template <int MR, bool R>
void int32_rows_p32(const ShiftProblem& p, int64_t m, const int32_t* base, int h, int32_t (*acc32)[kShiftPanel]) {
  const int T = p.T;
  const int64_t re = p.row_elems, K = p.K;
  const int32_t* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = p.x + (m + r) * K;
  __m512i acc[MR][2];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
  const int32_t* rec = base + 32 * h;
  for (int64_t k = 0; k < K; ++k) {
    for (int t = 0; t < T; ++t, rec += re) {
      const __m512i c0 = _mm512_loadu_si512(rec), c1 = _mm512_loadu_si512(rec + 16);
      const __m512i s0 = _mm512_loadu_si512(rec + 64), s1 = _mm512_loadu_si512(rec + 80);
      __m512i r0 = _mm512_setzero_si512(), r1 = r0;
      if constexpr (R) {
        r0 = _mm512_loadu_si512(rec + 128);
        r1 = _mm512_loadu_si512(rec + 144);
      }
#pragma GCC unroll 6
      for (int r = 0; r < MR; ++r) {
        const __m512i xv = _mm512_set1_epi32(xr[r][k]);
        __m512i v0 = _mm512_sllv_epi32(xv, c0), v1 = _mm512_sllv_epi32(xv, c1);
        if constexpr (R) {
          v0 = _mm512_srav_epi32(v0, r0);
          v1 = _mm512_srav_epi32(v1, r1);
        }
        acc[r][0] = _mm512_add_epi32(acc[r][0], _mm512_xor_si512(v0, s0));
        acc[r][1] = _mm512_add_epi32(acc[r][1], _mm512_xor_si512(v1, s1));
      }
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    _mm512_storeu_si512(acc32[r] + 32 * h, acc[r][0]);
    _mm512_storeu_si512(acc32[r] + 32 * h + 16, acc[r][1]);
  }
}

template <bool R>
void panel(const ShiftProblem& p, int64_t m0, int64_t m1, int64_t pn, int64_t* tile, LaneMode mode) {
  const int16_t* base = p.pack16 + pn * p.K * p.T * p.row_elems;
  const int64_t n0 = pn * kShiftPanel;
  const int64_t cnt = p.N - n0 < kShiftPanel ? p.N - n0 : kShiftPanel;
  const int32_t* ends = p.block_end + p.block_begin[pn];
  const int64_t nblocks = p.block_begin[pn + 1] - p.block_begin[pn];
  constexpr int kMr = 6;
  alignas(64) int32_t acc32[kMr][kShiftPanel];
  for (int64_t m = m0; m < m1; m += kMr) {
    const int rows = static_cast<int>(m1 - m < kMr ? m1 - m : kMr);
    if (mode == LaneMode::kInt16) {
      std::memset(acc32, 0, sizeof(acc32));
      switch (rows) {
        case 6: int16_rows<6, R>(p, m, base, ends, nblocks, acc32); break;
        case 5: int16_rows<5, R>(p, m, base, ends, nblocks, acc32); break;
        case 4: int16_rows<4, R>(p, m, base, ends, nblocks, acc32); break;
        case 3: int16_rows<3, R>(p, m, base, ends, nblocks, acc32); break;
        case 2: int16_rows<2, R>(p, m, base, ends, nblocks, acc32); break;
        default: int16_rows<1, R>(p, m, base, ends, nblocks, acc32); break;
      }
    } else if (p.pack32) {
      const int32_t* base32 = p.pack32 + pn * p.K * p.T * p.row_elems;
      for (int h = 0; h < (cnt > 32 ? 2 : 1); ++h) {
        switch (rows) {
          case 6: int32_rows_p32<6, R>(p, m, base32, h, acc32); break;
          case 5: int32_rows_p32<5, R>(p, m, base32, h, acc32); break;
          case 4: int32_rows_p32<4, R>(p, m, base32, h, acc32); break;
          case 3: int32_rows_p32<3, R>(p, m, base32, h, acc32); break;
          case 2: int32_rows_p32<2, R>(p, m, base32, h, acc32); break;
          default: int32_rows_p32<1, R>(p, m, base32, h, acc32); break;
        }
      }
    } else {  // int32 lanes from the int16 records, 4 rows at a time (16 accumulators)
      for (int r0 = 0; r0 < rows; r0 += 4) {
        const int rr = rows - r0 < 4 ? rows - r0 : 4;
        switch (rr) {
          case 4: int32_rows<4, R>(p, m + r0, base, acc32 + r0); break;
          case 3: int32_rows<3, R>(p, m + r0, base, acc32 + r0); break;
          case 2: int32_rows<2, R>(p, m + r0, base, acc32 + r0); break;
          default: int32_rows<1, R>(p, m + r0, base, acc32 + r0); break;
        }
      }
    }
    for (int r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cnt; ++j)
        tile[(m - m0 + r) * kShiftPanel + j] = static_cast<int64_t>(acc32[r][j]) + p.negcnt[n0 + j];
  }
}

}  // namespace

void shift_compute_avx512bw(const ShiftProblem& p, int64_t m0, int64_t m1, int64_t pn, int64_t* tile) {
  const LaneMode mode = static_cast<LaneMode>(p.lane_mode[pn]);
  if (mode == LaneMode::kWide) {
    shift_compute_scalar(p, m0, m1, pn, tile);
    return;
  }
  if (p.right_shifts)
    panel<true>(p, m0, m1, pn, tile, mode);
  else
    panel<false>(p, m0, m1, pn, tile, mode);
}

namespace {

// The rows-in-lanes panel driver: acc [64 columns][32] int32 of panel pn, zeroed, then
// per k block (its table, 16 KB, stays in L1 for all columns) and column,
// column(X, records, a0, a1) adds the column's block records into its two vectors.
template <typename Column>
inline void rows_panel(const int16_t* xt, const uint16_t* stream, const int64_t* start, int64_t nkb, int64_t N,
                       int64_t pn, int32_t* acc, Column column) {
  const int64_t n0 = pn * kShiftPanel;
  const int64_t cnt = N - n0 < kShiftPanel ? N - n0 : kShiftPanel;
  for (int64_t j = 0; j < cnt; ++j) {
    _mm512_storeu_si512(acc + j * 32, _mm512_setzero_si512());
    _mm512_storeu_si512(acc + j * 32 + 16, _mm512_setzero_si512());
  }
  for (int64_t kb = 0; kb < nkb; ++kb) {
    const char* X = reinterpret_cast<const char*>(xt + kb * kShiftBucketRows * 32);
    for (int64_t j = 0; j < cnt; ++j) {
      __m512i a0 = _mm512_loadu_si512(acc + j * 32), a1 = _mm512_loadu_si512(acc + j * 32 + 16);
      column(X, stream + start[(n0 + j) * nkb + kb], a0, a1);
      _mm512_storeu_si512(acc + j * 32, a0);
      _mm512_storeu_si512(acc + j * 32 + 16, a1);
    }
  }
}

// Exponent buckets: for each group, d = the sum of the group's table rows (x or -x;
// vpaddw with a memory operand, 4 per chunk on two chains; <= 128 rows, so d is exact
// in int16), then acc += d << e in int32 (rows 0..15, 16..31; the column bound is
// <= 2^31 - 1). One add per term for 32 rows, no sign operation.
inline void bucket_column(const char* X, const uint16_t* q, __m512i& a0, __m512i& a1) {
  while (q[0] != 0xFFFF) {
    const int e = q[0], chunks = q[1];
    q += 2;
    __m512i d0 = _mm512_setzero_si512(), d1 = _mm512_setzero_si512();
    for (int c = 0; c < chunks; ++c, q += 4) {
      d0 = _mm512_add_epi16(d0, _mm512_load_si512(X + q[0]));
      d1 = _mm512_add_epi16(d1, _mm512_load_si512(X + q[1]));
      d0 = _mm512_add_epi16(d0, _mm512_load_si512(X + q[2]));
      d1 = _mm512_add_epi16(d1, _mm512_load_si512(X + q[3]));
    }
    const __m512i d = _mm512_add_epi16(d0, d1);  // modular; the group's sum fits int16
    const __m128i c = _mm_cvtsi32_si128(e);
    a0 = _mm512_add_epi32(a0, _mm512_sll_epi32(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(d)), c));
    a1 = _mm512_add_epi32(a1, _mm512_sll_epi32(_mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(d, 1)), c));
  }
}

// Fixed chunks: C (16, 8 or 4) table rows per chunk summed in int16 on two chains
// (C * 255 < 2^15: exact), then the sum's even and odd rows (the low and high int16 of each int32
// lane) scaled by 2^e into int32:
//   even = (d << 16) >>arith (16 - e),  odd = (d & 0xFFFF0000) >>arith (16 - e),
// exact for e <= 16 (only zero bits leave on the right). Every term is one vpaddw
// with a memory operand; the offsets come four per 64-bit load; the chunk count is
// and the 4-term tail counts are the only data-dependent branches.
template <int C>
inline const uint16_t* chunks(const char* X, const uint16_t* q, int nch, __m512i& ev, __m512i& od) {
  const __m512i hi = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  for (int c = 0; c < nch; ++c, q += C + 1) {
    uint64_t o;
    std::memcpy(&o, q + 1, 8);
    __m512i d0 = _mm512_load_si512(X + (o & 0xFFFF)), d1 = _mm512_load_si512(X + ((o >> 16) & 0xFFFF));
    d0 = _mm512_add_epi16(d0, _mm512_load_si512(X + ((o >> 32) & 0xFFFF)));
    d1 = _mm512_add_epi16(d1, _mm512_load_si512(X + (o >> 48)));
#pragma GCC unroll 4
    for (int i = 4; i < C; i += 4) {
      std::memcpy(&o, q + 1 + i, 8);
      d0 = _mm512_add_epi16(d0, _mm512_load_si512(X + (o & 0xFFFF)));
      d1 = _mm512_add_epi16(d1, _mm512_load_si512(X + ((o >> 16) & 0xFFFF)));
      d0 = _mm512_add_epi16(d0, _mm512_load_si512(X + ((o >> 32) & 0xFFFF)));
      d1 = _mm512_add_epi16(d1, _mm512_load_si512(X + (o >> 48)));
    }
    const __m512i d = _mm512_add_epi16(d0, d1);
    const __m128i sh = _mm_cvtsi32_si128(q[0]);
    ev = _mm512_add_epi32(ev, _mm512_sra_epi32(_mm512_slli_epi32(d, 16), sh));
    od = _mm512_add_epi32(od, _mm512_sra_epi32(_mm512_and_si512(d, hi), sh));
  }
  return q;
}

// A column's block: its C-term chunks, then the 4-term chunks of each group's rest
// (a group of L terms pads to a multiple of 4, not of C).
template <int C>
inline void chunk_column(const char* X, const uint16_t* q, __m512i& ev, __m512i& od) {
  const int nc = q[0], n4 = q[1];
  chunks<4>(X, chunks<C>(X, q + 2, nc, ev, od), n4, ev, od);
}

// Packed fields: a table row is 48 rows as six 10-bit fields per uint64. A chunk of
// 4 rows sums in place (4 * 255 < 2^10); each chunk's even fields (0, 2, 4 at bits 0,
// 20, 40) go to le and the whole chunk to la, so that after a group of <= 64 terms
// (field sums < 2^14) o = la - le holds the odd fields at bits 10, 30, 50 without
// overlap. The flush pairs field 2p (low half) with 2p + 1 (high half) in each
// uint64 lane and shifts the pair by e at once: the operator admits only columns
// whose term sum 255 * sum 2^e is below 2^32, so neither half carries.
inline void packed_column(const char* X, const uint16_t* q, __m512i (&a)[3]) {
  const __m512i even = _mm512_set1_epi64(static_cast<long long>(0x3FFull | 0x3FFull << 20 | 0x3FFull << 40));
  const __m512i low20 = _mm512_set1_epi64(0xFFFFF), low32 = _mm512_set1_epi64(0xFFFFFFFFll);
  while (q[0] != 0xFFFF) {
    const int e = q[0], nch = q[1];
    q += 2;
    __m512i le = _mm512_setzero_si512(), la = _mm512_setzero_si512();
    for (int c = 0; c < nch; ++c, q += 4) {
      uint64_t o;
      std::memcpy(&o, q, 8);
      __m512i d0 = _mm512_load_si512(X + (o & 0xFFFF));
      __m512i d1 = _mm512_load_si512(X + ((o >> 32) & 0xFFFF));
      d0 = _mm512_add_epi64(d0, _mm512_load_si512(X + ((o >> 16) & 0xFFFF)));
      d1 = _mm512_add_epi64(d1, _mm512_load_si512(X + (o >> 48)));
      d0 = _mm512_add_epi64(d0, d1);
      le = _mm512_add_epi64(le, _mm512_and_si512(d0, even));
      la = _mm512_add_epi64(la, d0);
    }
    const __m512i o = _mm512_sub_epi64(la, le);
    const __m128i sh = _mm_cvtsi32_si128(e);
    // mask ? low : high (0xCA); each high part lands at bits 32.. with zeros around it
    const __m512i p0 = _mm512_ternarylogic_epi64(low20, le, _mm512_srli_epi64(_mm512_slli_epi64(o, 34), 12), 0xCA);
    const __m512i p1 = _mm512_ternarylogic_epi64(low32, _mm512_srli_epi64(_mm512_slli_epi64(le, 24), 44),
                                                 _mm512_srli_epi64(_mm512_slli_epi64(o, 14), 12), 0xCA);
    const __m512i p2 = _mm512_ternarylogic_epi64(low32, _mm512_srli_epi64(le, 40), _mm512_srli_epi64(o, 18), 0xCA);
    a[0] = _mm512_add_epi64(a[0], _mm512_sll_epi64(p0, sh));
    a[1] = _mm512_add_epi64(a[1], _mm512_sll_epi64(p1, sh));
    a[2] = _mm512_add_epi64(a[2], _mm512_sll_epi64(p2, sh));
  }
}

}  // namespace

void shift_bucket_avx512bw(const int16_t* xt, const uint16_t* stream, const int64_t* start, int64_t nkb, int64_t N,
                           int64_t pn, int32_t* acc) {
  rows_panel(xt, stream, start, nkb, N, pn, acc, bucket_column);
}

void shift_chunks_avx512bw(const int16_t* xt, const uint16_t* stream, const int64_t* start, int64_t nkb, int64_t N,
                           int64_t pn, int C, int32_t* acc) {
  if (C == 16)
    rows_panel(xt, stream, start, nkb, N, pn, acc, chunk_column<16>);
  else
    rows_panel(xt, stream, start, nkb, N, pn, acc, chunk_column<8>);
}

void shift_packed_avx512bw(const uint64_t* xt, int64_t table_rows, const uint16_t* stream, const int64_t* start,
                           int64_t nkb, int64_t n0, int64_t n1, uint32_t* acc) {
  for (int64_t j = 0; j < (n1 - n0) * kShiftPackedLanes; j += 16) _mm512_storeu_si512(acc + j, _mm512_setzero_si512());
  for (int64_t kb = 0; kb < nkb; ++kb) {
    const char* X = reinterpret_cast<const char*>(xt + kb * table_rows * 8);
    for (int64_t n = n0; n < n1; ++n) {
      uint32_t* c = acc + (n - n0) * kShiftPackedLanes;
      __m512i a[3];
#pragma GCC unroll 3
      for (int f = 0; f < 3; ++f) a[f] = _mm512_loadu_si512(c + 16 * f);
      packed_column(X, stream + start[n * nkb + kb], a);
#pragma GCC unroll 3
      for (int f = 0; f < 3; ++f) _mm512_storeu_si512(c + 16 * f, a[f]);
    }
  }
}

void shift_mul32_avx512bw(const int32_t* x, int64_t K, const int32_t* w_kn, int64_t N, int64_t m0, int64_t m1,
                          int64_t n0, int64_t n1, int64_t* tile) {
  mul32_rows(x, K, w_kn, N, m0, m1, n0, n1, tile);
}

}  // namespace pyq
