// Portable shift GEMM: every term of every weight, one at a time, in int64 (or
// int128 when the static bound exceeds 2^62), the plainest statement of
// docs/semantics.md section 12.2 in C++. The SIMD kernels hand their wide panels here.
#include "shift/shift_mul_impl.h"

namespace pyq {
namespace {

template <typename Acc>
void term_sums(const ShiftProblem& p, int64_t m0, int64_t m1, int64_t pn, int64_t* tile) {
  const __int128 cap = static_cast<__int128>(1) << 62;
  const int64_t n0 = pn * kShiftPanel;
  const int64_t cnt = p.N - n0 < kShiftPanel ? p.N - n0 : kShiftPanel;
  const int T = p.T;
  for (int64_t m = m0; m < m1; ++m) {
    const int32_t* xr = p.x + m * p.K;
    for (int64_t j = 0; j < cnt; ++j) {
      const int8_t* d = p.terms + (n0 + j) * p.K * T * 2;
      Acc s = 0;
      for (int64_t k = 0; k < p.K; ++k) {
        const int64_t x = xr[k];
        for (int t = 0; t < T; ++t, d += 2) {
          if (d[0] == 0) continue;
          const int e = d[1];
          // exact: x * 2^e; deepshift right shifts: floor(x / 2^-e) (arithmetic shift)
          const int64_t v = e >= 0 ? x * (int64_t{1} << e) : (x >> -e);
          s += d[0] > 0 ? static_cast<Acc>(v) : -static_cast<Acc>(v);
        }
      }
      const __int128 w = s;
      tile[(m - m0) * kShiftPanel + j] = static_cast<int64_t>(w > cap ? cap : (w < -cap ? -cap : w));
    }
  }
}

}  // namespace

void shift_compute_scalar(const ShiftProblem& p, int64_t m0, int64_t m1, int64_t pn, int64_t* tile) {
  if (p.wide128)
    term_sums<__int128>(p, m0, m1, pn, tile);
  else
    term_sums<int64_t>(p, m0, m1, pn, tile);
}

void shift_mul32_scalar(const int32_t* x, int64_t K, const int32_t* w_kn, int64_t N, int64_t m0, int64_t m1,
                        int64_t n0, int64_t n1, int64_t* tile) {
  mul32_rows(x, K, w_kn, N, m0, m1, n0, n1, tile);
}

}  // namespace pyq
