// AVX-512 VNNI path: microkernel 6x64c4 (6 rows, 64 columns = 4 zmm, K in groups
// of 4 bytes), one vpdpbusd per (row, zmm) per K group. 24 accumulators cover
// vpdpbusd's 4-cycle latency at 1/cycle; B is packed into 64-column panels so a
// K group of a panel is four aligned zmm loads. For 1-2 rows the K loop keeps two
// accumulator sets so there are still >= 4 independent chains.
#include <immintrin.h>

#include <cstring>

#include "qgemm/avx512_store.h"
#include "qgemm/avx512vnni_kgroup.h"

namespace pyq {
namespace {

constexpr int kNr = 64;
constexpr int kMr = 6;

inline int64_t k_groups(int64_t K) { return (K + 3) / 4; }

size_t vnni_packed_size(int64_t N, int64_t K) {
  const int64_t panels = (N + kNr - 1) / kNr;
  return static_cast<size_t>(panels * kNr * k_groups(K) * 4);
}

// Panel p holds columns [64p, 64p+64): for each K group g, nv*16 columns of
// 4 consecutive k bytes. The last panel is only nv = ceil(cols/16) vectors wide.
void vnni_pack(const int8_t* w_nk, int64_t N, int64_t K, uint8_t* dst) {
  const int64_t kg = k_groups(K);
  const int64_t panels = (N + kNr - 1) / kNr;
  for (int64_t pn = 0; pn < panels; ++pn) {
    const int64_t n0 = pn * kNr;
    const int64_t nv = (min64(kNr, N - n0) + 15) / 16;
    uint8_t* out = dst + pn * kNr * kg * 4;
    for (int64_t g = 0; g < kg; ++g) {
      for (int64_t c = 0; c < nv * 16; ++c) {
        for (int64_t b = 0; b < 4; ++b) {
          const int64_t n = n0 + c, k = 4 * g + b;
          *out++ = (n < N && k < K) ? static_cast<uint8_t>(w_nk[n * K + k]) : 0;
        }
      }
    }
  }
}

template <int MR, int NV, bool SIGNED_A>
void ukernel_6x64c4(const GemmProblem& p, int64_t m, const uint8_t* bp, int64_t n0, int64_t cnt) {
  // With 1-2 rows there are too few independent vpdpbusd chains to cover the
  // 4-cycle latency, so even and odd K groups accumulate separately.
  constexpr int kSets = MR <= 2 ? 2 : 1;
  const int64_t K = p.K;
  const int64_t kfull = K / 4;
  const __m512i flip = _mm512_set1_epi32(static_cast<int32_t>(0x80808080u));
  const uint8_t* a[MR];
  for (int r = 0; r < MR; ++r) a[r] = p.a + (m + r) * p.lda;

  __m512i acc[kSets][MR][NV];
  zero_tile<kSets, MR, NV>(acc);

  int64_t g = 0;
  if constexpr (kSets == 2) {
    for (; g + 1 < kfull; g += 2) {
      kgroup_i8<MR, NV, SIGNED_A>(acc[0], a, 4 * g, bp, flip);
      kgroup_i8<MR, NV, SIGNED_A>(acc[kSets - 1], a, 4 * g + 4, bp + NV * 64, flip);
      bp += 2 * NV * 64;
    }
  }
  // The last, partial K group runs through the same loop body (a second call
  // site makes GCC keep the accumulators in memory): the packed weights are zero
  // past K, so the missing activation bytes just have to come from a local copy.
  uint8_t tail[MR][4] = {};
  int64_t off = 4 * g, count = kfull - g;
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

  store_tile<MR, NV, kSets>(p, m, n0, cnt, acc);
}

template <int MR, int NV, bool SIGNED_A>
struct Ukernel {
  static void run(const GemmProblem& p, int64_t m, const uint8_t* bp, int64_t n0, int64_t cnt) {
    ukernel_6x64c4<MR, NV, SIGNED_A>(p, m, bp, n0, cnt);
  }
};

// The same tile reading A through p.a_ptrs: a_segs runs of a_seg bytes per row
// (a multiple of 4, so no partial K group), e.g. one run per kernel row of a
// convolution, pointing into the NHWC input itself.
template <int MR, int NV, bool SIGNED_A>
void ukernel_indirect(const GemmProblem& p, int64_t m, const uint8_t* bp, int64_t n0, int64_t cnt) {
  constexpr int kSets = MR <= 2 ? 2 : 1;
  const int64_t segs = p.a_segs, groups = p.a_seg / 4;
  const __m512i flip = _mm512_set1_epi32(static_cast<int32_t>(0x80808080u));
  const uint8_t* const* ptrs = p.a_ptrs + m * segs;

  __m512i acc[kSets][MR][NV];
  zero_tile<kSets, MR, NV>(acc);

  for (int64_t s = 0; s < segs; ++s) {
    const uint8_t* a[MR];
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) a[r] = ptrs[r * segs + s];
    int64_t g = 0;
    if constexpr (kSets == 2) {
      for (; g + 1 < groups; g += 2) {
        kgroup_i8<MR, NV, SIGNED_A>(acc[0], a, 4 * g, bp, flip);
        kgroup_i8<MR, NV, SIGNED_A>(acc[kSets - 1], a, 4 * g + 4, bp + NV * 64, flip);
        bp += 2 * NV * 64;
      }
    }
    for (; g < groups; ++g) {
      kgroup_i8<MR, NV, SIGNED_A>(acc[0], a, 4 * g, bp, flip);
      bp += NV * 64;
    }
  }
  store_tile<MR, NV, kSets>(p, m, n0, cnt, acc);
}

template <int MR, int NV, bool SIGNED_A>
struct UkernelIndirect {
  static void run(const GemmProblem& p, int64_t m, const uint8_t* bp, int64_t n0, int64_t cnt) {
    ukernel_indirect<MR, NV, SIGNED_A>(p, m, bp, n0, cnt);
  }
};

void vnni_compute(const GemmProblem& p, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  compute_panels_6x64<Ukernel>(p, m0, m1, p0, p1, kNr * k_groups(p.K) * 4);
}

const GemmKernel kVnni = {"qgemm_6x64c4_avx512vnni", kNr, kMr, vnni_packed_size, vnni_pack, vnni_compute};

}  // namespace

const GemmKernel* avx512vnni_gemm_kernel() { return &kVnni; }

void avx512vnni_indirect_compute(const GemmProblem& p, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  compute_panels_6x64<UkernelIndirect>(p, m0, m1, p0, p1, kNr * k_groups(p.K) * 4);
}

}  // namespace pyq
