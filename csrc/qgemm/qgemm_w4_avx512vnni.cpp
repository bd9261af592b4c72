// AVX-512 VNNI path for weights of at most 4 bits, kept packed as nibbles
// (docs/semantics.md section 9.4): microkernel 6x64c8, 6 rows x 64 columns
// (4 zmm), K in pairs of 4-byte groups. One 64-byte load holds 16 columns x 2
// K groups: byte 4c+b of vector v has w''[8q+b][16v+c] in its low nibble and
// w''[8q+4+b][16v+c] in its high nibble, unpacked with p & 0x0F and
// (p >> 4) & 0x0F (vpandd / vpsrlw, off the vpdpbusd port) and fed to vpdpbusd
// as s8 operands in [0, 15]. The weights stream at half the bytes of the int8
// kernel, which is what makes batch-1 GEMV faster; compute-bound shapes run at
// about the int8 kernel's speed.
#include <immintrin.h>

#include <cstring>

#include "qgemm/avx512_w4_ukernel.h"

namespace pyq {
namespace {

constexpr int kNr = 64;
constexpr int kMr = 6;

inline int64_t k_pairs(int64_t K) { return (K + 7) / 8; }

size_t w4_packed_size(int64_t N, int64_t K) {
  const int64_t panels = (N + kNr - 1) / kNr;
  return static_cast<size_t>(panels * kNr * k_pairs(K) * 4);
}

// w_nk: nibble-domain values in [0, 15], N rows of K. Panel p holds columns
// [64p, 64p+64): for each pair q of K groups, nv*16 columns of 4 bytes. The last
// panel is only nv = ceil(cols/16) vectors wide. Past N and K the nibbles are 0.
void w4_pack(const int8_t* w_nk, int64_t N, int64_t K, uint8_t* dst) {
  const int64_t kq = k_pairs(K);
  const int64_t panels = (N + kNr - 1) / kNr;
  auto at = [&](int64_t n, int64_t k) -> uint32_t {
    return (n < N && k < K) ? static_cast<uint32_t>(w_nk[n * K + k]) & 0x0Fu : 0u;
  };
  for (int64_t pn = 0; pn < panels; ++pn) {
    const int64_t n0 = pn * kNr;
    const int64_t nv = (min64(kNr, N - n0) + 15) / 16;
    uint8_t* out = dst + pn * kNr * kq * 4;
    for (int64_t q = 0; q < kq; ++q) {
      for (int64_t c = 0; c < nv * 16; ++c) {
        for (int64_t b = 0; b < 4; ++b) {
          const int64_t n = n0 + c, k = 8 * q + b;
          *out++ = static_cast<uint8_t>(at(n, k) | (at(n, k + 4) << 4));
        }
      }
    }
  }
}

template <int MR, int NV, bool SIGNED_A>
struct Ukernel {
  static void run(const GemmProblem& p, int64_t m, const uint8_t* bp, int64_t n0, int64_t cnt) {
    ukernel_6x64c8<MR, NV, SIGNED_A, false>(p, m, bp, n0, cnt);
  }
};

void w4_compute(const GemmProblem& p, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  compute_panels_6x64<Ukernel>(p, m0, m1, p0, p1, kNr * k_pairs(p.K) * 4);
}

const GemmKernel kW4 = {"qgemm_6x64c8_w4_avx512vnni", kNr, kMr, w4_packed_size, w4_pack, w4_compute};

}  // namespace

const GemmKernel* avx512vnni_w4_gemm_kernel() { return &kW4; }

}  // namespace pyq
