// The exact int16-widening GEMM shared by the pre-VNNI paths (AVX2, AVX-512BW).
// vpmaddubsw saturates its int16 pair sums (255*127*2 > 32767), so it is never
// used. Instead, per K group of 4 bytes, the activation bytes x0..x3 are
// broadcast into every 32-bit lane and split into 16-bit lanes
//   lo = v & 0x00FF00FF   -> (x0, x2)      hi = v >> 8 (per 16 bits) -> (x1, x3)
// and the weights are packed per K group as two int16 vectors, lane j holding
// (w0_j, w2_j) in B02 and (w1_j, w3_j) in B13, so that
//   vpmaddwd(lo, B02) + vpmaddwd(hi, B13) = x0w0 + x1w1 + x2w2 + x3w3
// exactly (|255 * 128 * 2| < 2^31), accumulated with wrapping vpaddd.
//
// Each ISA translation unit includes this with its own flags and a traits struct
// (the vector type and its few intrinsics), so everything here has internal
// linkage (see epilogue.h).
#pragma once
#include <cstring>

#include "qgemm/epilogue.h"

namespace pyq {
namespace {
namespace int16_gemm {

// Ops must provide: type V, kLanes (int32 lanes per vector), and static
// zero(), load(const void*) (aligned), store(void*, V) (aligned), set1(int32_t),
// and_(V, V), xor_(V, V), srli16_8(V), madd16(V, V), add32(V, V).
template <class Ops, int MR, int NR>
struct Kernel {
  using V = typename Ops::V;
  static constexpr int kLanes = Ops::kLanes;
  static constexpr int kVecBytes = kLanes * 4;
  static constexpr int kMaxNv = NR / kLanes;
  static_assert(NR % kLanes == 0 && NR <= kMaxEpilogueCols, "panel width");

  static int64_t k_groups(int64_t K) { return (K + 3) / 4; }
  // Per K group and column: 4 weights as int16.
  static int64_t panel_bytes(int64_t K) { return NR * k_groups(K) * 8; }

  static size_t packed_size(int64_t N, int64_t K) {
    const int64_t panels = (N + NR - 1) / NR;
    return static_cast<size_t>(panels * panel_bytes(K));
  }

  // Panel p holds columns [NR*p, NR*p + NR): for each K group g and each vector
  // v of kLanes columns, B02 then B13 (kVecBytes each). The last panel is only
  // nv = ceil(cols / kLanes) vectors wide.
  static void pack(const int8_t* w_nk, int64_t N, int64_t K, uint8_t* dst) {
    const int64_t kg = k_groups(K);
    const int64_t panels = (N + NR - 1) / NR;
    for (int64_t pn = 0; pn < panels; ++pn) {
      const int64_t n0 = pn * NR;
      const int64_t nv = (min64(NR, N - n0) + kLanes - 1) / kLanes;
      int16_t* out = reinterpret_cast<int16_t*>(dst + pn * panel_bytes(K));
      for (int64_t g = 0; g < kg; ++g) {
        for (int64_t v = 0; v < nv; ++v) {
          for (int64_t odd = 0; odd < 2; ++odd) {  // B02, then B13
            for (int64_t j = 0; j < kLanes; ++j) {
              const int64_t n = n0 + v * kLanes + j;
              for (int64_t h = 0; h < 2; ++h) {
                const int64_t k = 4 * g + 2 * h + odd;
                *out++ = (n < N && k < K) ? w_nk[n * K + k] : int16_t{0};
              }
            }
          }
        }
      }
    }
  }

  static int32_t load_a4(const uint8_t* a) {
    int32_t v;
    std::memcpy(&v, a, 4);
    return v;
  }

  template <int R, int NV, bool SIGNED_A>
  __attribute__((always_inline)) static inline void kgroup(V (&acc)[R][NV], const uint8_t* const (&a)[R],
                                                           int64_t off, const uint8_t* b, V flip, V mask) {
    V b02[NV], b13[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      b02[v] = Ops::load(b + (2 * v) * kVecBytes);
      b13[v] = Ops::load(b + (2 * v + 1) * kVecBytes);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      V x = Ops::set1(load_a4(a[r] + off));
      if constexpr (SIGNED_A) x = Ops::xor_(x, flip);
      const V lo = Ops::and_(x, mask);
      const V hi = Ops::srli16_8(x);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v)
        acc[r][v] = Ops::add32(acc[r][v], Ops::add32(Ops::madd16(lo, b02[v]), Ops::madd16(hi, b13[v])));
    }
  }

  template <int R, int NV, bool SIGNED_A>
  static void ukernel(const GemmProblem& p, int64_t m, const uint8_t* bp, int64_t n0, int64_t cnt) {
    const int64_t K = p.K;
    const V flip = Ops::set1(static_cast<int32_t>(0x80808080u));
    const V mask = Ops::set1(0x00FF00FF);
    const uint8_t* a[R];
    for (int r = 0; r < R; ++r) a[r] = p.a + (m + r) * p.lda;

    V acc[R][NV];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = Ops::zero();

    // The last, partial K group runs through the same loop body (a second call
    // site makes GCC keep the accumulators in memory): the packed weights are
    // zero past K, so the missing activation bytes come from a local copy.
    uint8_t tail[R][4] = {};
    int64_t off = 0, count = K / 4;
    for (int pass = 0; pass < 2; ++pass) {
      for (int64_t i = 0; i < count; ++i, off += 4) {
        kgroup<R, NV, SIGNED_A>(acc, a, off, bp, flip, mask);
        bp += NV * 2 * kVecBytes;
      }
      if (pass == 1 || K % 4 == 0) break;
      for (int r = 0; r < R; ++r) {
        std::memcpy(tail[r], a[r] + off, static_cast<size_t>(K % 4));
        a[r] = tail[r];
      }
      off = 0;
      count = 1;
    }

    alignas(64) int32_t tile[R][NR];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) Ops::store(&tile[r][kLanes * v], acc[r][v]);
    for (int r = 0; r < R; ++r) epilogue_row(p, m + r, n0, cnt, tile[r]);
  }

  // Rows [m0, m1): full MR-row tiles, then one tile of the remaining rows.
  template <int R, int NV, bool SIGNED_A>
  static void rows(const GemmProblem& p, int64_t m0, int64_t m1, const uint8_t* bp, int64_t n0, int64_t cnt) {
    if constexpr (R == MR) {
      for (; m0 + MR <= m1; m0 += MR) ukernel<MR, NV, SIGNED_A>(p, m0, bp, n0, cnt);
    }
    if constexpr (R > 1) {
      if (m1 - m0 == R - 1) return ukernel<R - 1, NV, SIGNED_A>(p, m0, bp, n0, cnt);
      rows<R - 1, NV, SIGNED_A>(p, m0, m1, bp, n0, cnt);
    }
  }

  // Dispatch on the vector count of the panel (only the last one may be narrower).
  template <int NV, bool SIGNED_A>
  static void panel(const GemmProblem& p, int64_t m0, int64_t m1, const uint8_t* bp, int64_t n0, int64_t cnt) {
    if constexpr (NV > 1) {
      if ((cnt + kLanes - 1) / kLanes < NV) return panel<NV - 1, SIGNED_A>(p, m0, m1, bp, n0, cnt);
    }
    rows<MR, NV, SIGNED_A>(p, m0, m1, bp, n0, cnt);
  }

  template <bool SIGNED_A>
  static void compute_panels(const GemmProblem& p, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
    for (int64_t pn = p0; pn < p1; ++pn) {
      const int64_t n0 = pn * NR;
      const int64_t cnt = min64(NR, p.N - n0);
      panel<kMaxNv, SIGNED_A>(p, m0, m1, p.packed + pn * panel_bytes(p.K), n0, cnt);
    }
  }

  static void compute(const GemmProblem& p, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
    if (p.a_xor)
      compute_panels<true>(p, m0, m1, p0, p1);
    else
      compute_panels<false>(p, m0, m1, p0, p1);
  }
};

}  // namespace int16_gemm
}  // namespace
}  // namespace pyq
