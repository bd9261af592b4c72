// Per-element requantization, exactly as docs/semantics.md writes it.
// Everything here has internal linkage (anonymous namespace) because this
// header is compiled into translation units with different ISA flags: an
// AVX-512 copy must never be merged by the linker into the portable code.
#pragma once
#include <cstdint>

#include "common/requant.h"

namespace pyq {
namespace {

inline int32_t rq_clamp(int64_t v, int32_t lo, int32_t hi) {
  return static_cast<int32_t>(v < lo ? lo : (v > hi ? hi : v));
}

inline int32_t wrap32(int64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(v))); }

// fp32 mode: zp + RNE(fl32(fl32(acc) * S)), clamped. Clamping in float first is
// equivalent (the bounds are integers) and keeps the magic-number rounding valid:
// for |v| < 2^22, (v + 1.5*2^23) - 1.5*2^23 is v rounded to nearest, ties to even.
inline int32_t rq_fp32(int32_t acc, float s, int32_t zp, int32_t lo, int32_t hi) {
  float v = static_cast<float>(acc) * s;
  const float flo = static_cast<float>(lo - zp);
  const float fhi = static_cast<float>(hi - zp);
  v = v < flo ? flo : v;
  v = v > fhi ? fhi : v;
  const float r = (v + 12582912.0f) - 12582912.0f;
  return static_cast<int32_t>(r) + zp;
}

// gemmlowp SaturatingRoundingDoublingHighMul: round half up of a*b/2^31.
inline int32_t srdhm(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  const int64_t ab = static_cast<int64_t>(a) * b;
  const int64_t nudge = ab >= 0 ? (int64_t{1} << 30) : (1 - (int64_t{1} << 30));
  return static_cast<int32_t>((ab + nudge) / (int64_t{1} << 31));  // truncating division
}

// gemmlowp RoundingDivideByPOT: round half away from zero of x/2^e, 0 <= e <= 31.
inline int32_t rounding_divide_by_pot(int32_t x, int e) {
  const int64_t mask = (int64_t{1} << e) - 1;
  const int64_t rem = static_cast<int64_t>(x) & mask;
  const int64_t thr = (mask >> 1) + (x < 0 ? 1 : 0);
  return static_cast<int32_t>((static_cast<int64_t>(x) >> e) + (rem > thr ? 1 : 0));
}

inline int32_t rq_q31(int32_t acc, int32_t m, int32_t sh, int32_t zp, int32_t lo, int32_t hi) {
  const int left = sh > 0 ? sh : 0;
  const int right = sh > 0 ? 0 : -sh;
  const int32_t shifted = wrap32(static_cast<int64_t>(acc) * (int64_t{1} << left));
  const int32_t r = rounding_divide_by_pot(srdhm(shifted, m), right);
  return rq_clamp(static_cast<int64_t>(r) + zp, lo, hi);
}

inline int32_t rq_q31_single(int32_t acc, int32_t m, int32_t sh, int32_t zp, int32_t lo, int32_t hi) {
  const int total = 31 - sh;  // in [1, 62]
  const int64_t r = (static_cast<int64_t>(acc) * m + (int64_t{1} << (total - 1))) >> total;
  return rq_clamp(r + zp, lo, hi);
}

inline int32_t rq_pot(int32_t acc, int32_t rs, int32_t zp, int32_t lo, int32_t hi) {
  int64_t r;
  if (rs >= 1) {
    // rs >= 32 always rounds to 0 for an int32 acc; cap to stay inside int64.
    const int s = rs > 40 ? 40 : rs;
    r = (static_cast<int64_t>(acc) + (int64_t{1} << (s - 1))) >> s;
  } else {
    // Any non-zero acc shifted left by 31 already saturates an 8-bit output.
    const int s = -rs > 31 ? 31 : -rs;
    r = static_cast<int64_t>(acc) * (int64_t{1} << s);
  }
  return rq_clamp(r + zp, lo, hi);
}

}  // namespace
}  // namespace pyq
