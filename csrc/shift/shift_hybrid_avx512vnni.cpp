// Hybrid PoT/APoT GEMM for AVX-512 VNNI (docs/semantics.md section 12.4a): the
// columns [0, Nv) of a layer run on the int8 VNNI microkernel (6 rows x 64 columns,
// vpdpbusd on the decoded int8 weights), the columns [Nv, N) on rows-in-lanes
// shift-add units (vpaddw of table rows x / -x, one arithmetic shift per unit), and
// both in the same loop body: after every `period` K groups of a VNNI tile one
// shift unit is consumed, so the load/ALU pipes that vpdpbusd leaves idle do the
// shift work. The two parts sum disjoint columns, each exactly (the VNNI sums are
// exact below the static bound, the units in int16 then int32 below it), so the
// result is the exact sum whatever the interleaving.
//
// A row block is at most 30 rows (5 VNNI tiles); its activation table holds, per
// block of kShiftBucketK k's, rows 0..126 = x, 127..253 = -x (x = a - za as int16,
// 32 lanes = rows, lanes >= rows zero) and row 254 = 0. A unit is three uint64:
// [kb | (16 - e) << 16 | column << 32], then 8 byte offsets (64 * table row) into
// table block kb: 8 terms of exponent e of one shift column (padding: the zero row).
#include <immintrin.h>

#include <cstring>

#include "qgemm/avx512_store.h"
#include "qgemm/avx512vnni_kgroup.h"
#include "shift/shift.h"

namespace pyq {
namespace {

constexpr int64_t kTableBytes = int64_t{kShiftBucketRows} * 64;

// The shift job of a task: its row blocks one after the other, one table at a time
// (built when the job reaches the block); the VNNI tiles of any rows consume it.
struct Side {
  const char* xt;
  const uint64_t* u;
  const uint64_t* end;
  int32_t* sacc;  // [Ns][32] int32: per column the even rows in [0, 16), the odd in [16, 32)
  const HybridBlock* h;
  int64_t m0, m1, b;  // the task's rows, the current block
  int16_t* table;
  int32_t* sacc_all;
};

void build_table(const HybridBlock& h, int64_t m0, int64_t nrows, int16_t* xt);

// Start block b of the job (or end it: u == end stays).
__attribute__((noinline)) void next_block(Side& s) {
  const int64_t r0 = s.m0 + s.b * kHybridRows;
  if (r0 >= s.m1) return;
  build_table(*s.h, r0, s.m1 - r0 < kHybridRows ? s.m1 - r0 : kHybridRows, s.table);
  s.sacc = s.sacc_all + s.b * s.h->Ns * 32;
  std::memset(s.sacc, 0, static_cast<size_t>(s.h->Ns) * 32 * 4);
  s.u = s.h->units;
  s.end = s.h->units + 3 * s.h->nunits;
  ++s.b;
}

// One unit: d = sum of 8 table rows (|d| <= 8 * 255, exact in int16), then
// even = (d << 16) >>arith (16 - e), odd = (d & 0xFFFF0000) >>arith (16 - e), exact for
// e <= 16, added to the column's int32 lanes.
__attribute__((always_inline)) inline void unit(Side& s) {
  const uint64_t h = s.u[0], o = s.u[1], o2 = s.u[2];
  s.u += 3;
  const char* X = s.xt + static_cast<int64_t>(h & 0xFFFF) * kTableBytes;
  __m512i d = _mm512_load_si512(X + (o & 0xFFFF));
  d = _mm512_add_epi16(d, _mm512_load_si512(X + ((o >> 16) & 0xFFFF)));
  d = _mm512_add_epi16(d, _mm512_load_si512(X + ((o >> 32) & 0xFFFF)));
  d = _mm512_add_epi16(d, _mm512_load_si512(X + (o >> 48)));
  d = _mm512_add_epi16(d, _mm512_load_si512(X + (o2 & 0xFFFF)));
  d = _mm512_add_epi16(d, _mm512_load_si512(X + ((o2 >> 16) & 0xFFFF)));
  d = _mm512_add_epi16(d, _mm512_load_si512(X + ((o2 >> 32) & 0xFFFF)));
  d = _mm512_add_epi16(d, _mm512_load_si512(X + (o2 >> 48)));
  const __m128i sh = _mm_cvtsi32_si128(static_cast<int>((h >> 16) & 0xFFFF));
  int32_t* A = s.sacc + (h >> 32) * 32;
  const __m512i ev = _mm512_sra_epi32(_mm512_slli_epi32(d, 16), sh);
  const __m512i od = _mm512_sra_epi32(_mm512_and_si512(d, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))), sh);
  _mm512_store_si512(A, _mm512_add_epi32(_mm512_load_si512(A), ev));
  _mm512_store_si512(A + 16, _mm512_add_epi32(_mm512_load_si512(A + 16), od));
}

// Rows [m, m + MR) of one VNNI panel, one shift unit after every `period` K groups
// while units remain. The last, partial K group reads its activations from a
// zero-padded copy (the packed weights are zero past K).
template <int MR, int NV, bool SIGNED_A>
void tile(const GemmProblem& p, int64_t m, const uint8_t* bp, int64_t n0, int64_t cnt, int period, Side& s) {
  const int64_t K = p.K, kfull = K / 4;
  const __m512i flip = _mm512_set1_epi32(static_cast<int32_t>(0x80808080u));
  const uint8_t* a[MR];
  for (int r = 0; r < MR; ++r) a[r] = p.a + (m + r) * p.lda;
  __m512i acc[1][MR][NV];
  zero_tile<1, MR, NV>(acc);
  // Fused: `period` K groups, then one unit, while units remain; then the plain loop.
  int64_t off = 0, g = 0;
  for (; g + period <= kfull && s.u != s.end; g += period) {
    for (int i = 0; i < period; ++i, off += 4) {
      kgroup_i8<MR, NV, SIGNED_A>(acc[0], a, off, bp, flip);
      bp += NV * 64;
    }
    unit(s);
    if (s.u == s.end) next_block(s);
  }
  uint8_t tail[MR][4] = {};
  int64_t count = kfull - g;
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t i = 0; i < count; ++i, off += 4) {
      kgroup_i8<MR, NV, SIGNED_A>(acc[0], a, off, bp, flip);
      bp += NV * 64;
    }
    if (pass == 1 || K % 4 == 0) break;
    for (int r = 0; r < MR; ++r) {
      std::memcpy(tail[r], a[r] + off, static_cast<size_t>(K % 4));
      a[r] = tail[r];
    }
    off = 0;
    count = 1;
  }
  store_tile<MR, NV, 1>(p, m, n0, cnt, acc);
}

template <int NV, bool SIGNED_A>
void rows(const GemmProblem& p, int64_t m0, int64_t m1, const uint8_t* bp, int64_t n0, int64_t cnt, int period,
          Side& s) {
  int64_t m = m0;
  for (; m + 6 <= m1; m += 6) tile<6, NV, SIGNED_A>(p, m, bp, n0, cnt, period, s);
  switch (m1 - m) {
    case 5: tile<5, NV, SIGNED_A>(p, m, bp, n0, cnt, period, s); break;
    case 4: tile<4, NV, SIGNED_A>(p, m, bp, n0, cnt, period, s); break;
    case 3: tile<3, NV, SIGNED_A>(p, m, bp, n0, cnt, period, s); break;
    case 2: tile<2, NV, SIGNED_A>(p, m, bp, n0, cnt, period, s); break;
    case 1: tile<1, NV, SIGNED_A>(p, m, bp, n0, cnt, period, s); break;
    default: break;
  }
}

// Panel by panel over all the task's rows (B's panel stays in L2, as in the int8 GEMM).
template <bool SIGNED_A>
void panels(const GemmProblem& p, int64_t m0, int64_t m1, int period, Side& s) {
  const int64_t panel_bytes = 64 * ((p.K + 3) / 4) * 4;
  for (int64_t n0 = 0, pn = 0; n0 < p.N; n0 += 64, ++pn) {
    const int64_t cnt = p.N - n0 < 64 ? p.N - n0 : 64;
    const uint8_t* bp = p.packed + pn * panel_bytes;
    switch ((cnt + 15) / 16) {
      case 4: rows<4, SIGNED_A>(p, m0, m1, bp, n0, cnt, period, s); break;
      case 3: rows<3, SIGNED_A>(p, m0, m1, bp, n0, cnt, period, s); break;
      case 2: rows<2, SIGNED_A>(p, m0, m1, bp, n0, cnt, period, s); break;
      default: rows<1, SIGNED_A>(p, m0, m1, bp, n0, cnt, period, s); break;
    }
  }
}

}  // namespace

// The activation table of rows [m0, m0 + nrows) (nrows <= 32): 16 rows' 4 k bytes per
// gather, transposed to k-major with vpshufb + vpermd, widened, a - za and za - a.
namespace {
void build_table(const HybridBlock& h, int64_t m0, int64_t nrows, int16_t* xt) {
  const int64_t K = h.K, nkb = (K + kShiftBucketK - 1) / kShiftBucketK;
  const uint8_t* a = h.a + m0 * h.lda;
  const __m512i za = _mm512_set1_epi16(static_cast<int16_t>(h.za));
  const __mmask32 lanes = nrows >= 32 ? ~__mmask32{0} : ((__mmask32{1} << nrows) - 1);
  const __mmask16 lo_rows = static_cast<__mmask16>(lanes & 0xFFFF), hi_rows = static_cast<__mmask16>(lanes >> 16);
  const __m512i idx_lo = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(static_cast<int32_t>(h.lda)));
  const __m512i idx_hi = _mm512_add_epi32(idx_lo, _mm512_set1_epi32(static_cast<int32_t>(16 * h.lda)));
  const __m512i bytes = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
  const __m512i dwords = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  auto row = [&](int64_t k) { return xt + (k / kShiftBucketK) * kShiftBucketRows * 32 + (k % kShiftBucketK) * 32; };
  auto put = [&](int64_t k, __m256i v8) {
    const __m512i v = h.s8 ? _mm512_cvtepi8_epi16(v8) : _mm512_cvtepu8_epi16(v8);
    const __m512i x = _mm512_maskz_sub_epi16(lanes, v, za);
    int16_t* pos = row(k);
    _mm512_store_si512(pos, x);
    _mm512_store_si512(pos + kShiftBucketK * 32, _mm512_sub_epi16(_mm512_setzero_si512(), x));
  };
  const int64_t kfull = K / 4 * 4;
  for (int64_t k = 0; k < kfull; k += 4) {
    __m512i lo = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), lo_rows, idx_lo, a + k, 1);
    __m512i hi = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), hi_rows, idx_hi, a + k, 1);
    lo = _mm512_permutexvar_epi32(dwords, _mm512_shuffle_epi8(lo, bytes));  // 128-bit lane j = k + j, rows 0..15
    hi = _mm512_permutexvar_epi32(dwords, _mm512_shuffle_epi8(hi, bytes));
    put(k, _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_castsi512_si128(lo)), _mm512_castsi512_si128(hi), 1));
    put(k + 1, _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_extracti32x4_epi32(lo, 1)),
                                       _mm512_extracti32x4_epi32(hi, 1), 1));
    put(k + 2, _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_extracti32x4_epi32(lo, 2)),
                                       _mm512_extracti32x4_epi32(hi, 2), 1));
    put(k + 3, _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_extracti32x4_epi32(lo, 3)),
                                       _mm512_extracti32x4_epi32(hi, 3), 1));
  }
  for (int64_t k = kfull; k < K; ++k) {  // the last K % 4 k's
    alignas(32) uint8_t col[32] = {};
    for (int64_t r = 0; r < nrows; ++r) col[r] = a[r * h.lda + k];
    put(k, _mm256_load_si256(reinterpret_cast<const __m256i*>(col)));
  }
  for (int64_t kb = 0; kb < nkb; ++kb)  // the zero rows
    _mm512_store_si512(xt + (kb * kShiftBucketRows + 2 * kShiftBucketK) * 32, _mm512_setzero_si512());
}

}  // namespace

void shift_hybrid_block_avx512vnni(const HybridBlock& h, const GemmProblem& p, int64_t m0, int64_t nrows,
                                   int16_t* xt, int32_t* sacc) {
  Side s{reinterpret_cast<const char*>(xt), nullptr, nullptr, sacc, &h, m0, m0 + nrows, 0, xt, sacc};
  next_block(s);
  if (p.a_xor)
    panels<true>(p, m0, m0 + nrows, h.period, s);
  else
    panels<false>(p, m0, m0 + nrows, h.period, s);
  while (s.u != s.end) {  // the units the VNNI tiles did not absorb
    unit(s);
    if (s.u == s.end) next_block(s);
  }
}

}  // namespace pyq
