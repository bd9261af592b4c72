// Portable path: the plain triple loop over the unpacked s8 weights. It is the
// fallback on every CPU and the simplest statement of what the SIMD paths compute.
#include <cstring>

#include "qgemm/epilogue.h"

namespace pyq {
namespace {

constexpr int kNr = 16;

size_t scalar_packed_size(int64_t N, int64_t K) { return static_cast<size_t>(N * K); }

void scalar_pack(const int8_t* w_nk, int64_t N, int64_t K, uint8_t* dst) {
  std::memcpy(dst, w_nk, static_cast<size_t>(N * K));
}

void scalar_compute(const GemmProblem& p, int64_t m0, int64_t m1, int64_t p0, int64_t p1) {
  const int8_t* w = reinterpret_cast<const int8_t*>(p.packed);
  const uint8_t flip = static_cast<uint8_t>(p.a_xor & 0xFF);
  int32_t raw[kNr];
  for (int64_t pn = p0; pn < p1; ++pn) {
    const int64_t n0 = pn * kNr;
    const int64_t cnt = p.N - n0 < kNr ? p.N - n0 : kNr;
    for (int64_t m = m0; m < m1; ++m) {
      const uint8_t* a = p.a + m * p.lda;
      for (int64_t j = 0; j < cnt; ++j) {
        const int8_t* wr = w + (n0 + j) * p.K;
        uint32_t s = 0;  // modular int32 accumulation
        for (int64_t k = 0; k < p.K; ++k)
          s += static_cast<uint32_t>(static_cast<int32_t>(static_cast<uint8_t>(a[k] ^ flip)) * wr[k]);
        raw[j] = static_cast<int32_t>(s);
      }
      epilogue_row(p, m, n0, cnt, raw);
    }
  }
}

const GemmKernel kScalar = {"scalar", kNr, 1, scalar_packed_size, scalar_pack, scalar_compute};

}  // namespace

const GemmKernel* scalar_gemm_kernel() { return &kScalar; }

}  // namespace pyq
