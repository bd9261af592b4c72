// The SIMD depthwise row kernel shared by the AVX2 and AVX-512BW paths
// ("unipass": all taps of one output pixel for a block of channels, in registers,
// then the epilogue over the pixel's channels). Per tap and vector of channels:
// one widening load of the activation bytes (vpmovzxbd / vpmovsxbd, exact), one
// vpmulld by the packed int32 w' = w - zw (|x * w'| <= 255 * 255, exact), one
// wrapping vpaddd. No int16 saturation anywhere (docs/semantics.md 2.1).
//
// Each ISA translation unit includes this with its own flags and a traits struct,
// so everything here has internal linkage (see qgemm/epilogue.h).
#pragma once
#include "conv/dwconv_impl.h"

namespace pyq {
namespace {
namespace dw_simd {

// Ops must provide: type V, kLanes (int32 lanes), and static load(const int32_t*)
// (aligned), store(int32_t*, V) (aligned), template <bool S> V load_x(const uint8_t*)
// (kLanes bytes widened to int32: sign-extended if S), madd(V acc, V x, V w) = acc + x*w
// (low 32 bits), and template <bool S> void tail(p, pt, c0, acc): channels
// [c0, C) of one pixel, fewer than kLanes, without reading input bytes past C.
template <class Ops, bool S>
struct Row {
  using V = typename Ops::V;
  static constexpr int kL = Ops::kLanes;

  template <int NV>
  static inline void block(const DwProblem& p, const uint8_t* const* pt, int64_t c0, int32_t* acc) {
    V a[NV];
    for (int j = 0; j < NV; ++j) a[j] = Ops::load(p.colterm + c0 + j * kL);
    const int32_t* w = p.w + c0;
    for (int64_t t = 0; t < p.taps; ++t, w += p.Cp) {
      const uint8_t* x = pt[t] + c0;
      for (int j = 0; j < NV; ++j) a[j] = Ops::madd(a[j], Ops::template load_x<S>(x + j * kL), Ops::load(w + j * kL));
    }
    for (int j = 0; j < NV; ++j) Ops::store(acc + c0 + j * kL, a[j]);
  }

  static void run(const DwProblem& p, const uint8_t* const* ind, int64_t npix, void* out, int32_t* acc) {
    const int64_t C = p.C, T = p.taps;
    for (int64_t pix = 0; pix < npix; ++pix) {
      const uint8_t* const* pt = ind + pix * T;
      int64_t c0 = 0;
      for (; c0 + 4 * kL <= C; c0 += 4 * kL) block<4>(p, pt, c0, acc);
      for (; c0 + kL <= C; c0 += kL) block<1>(p, pt, c0, acc);
      if (c0 < C) Ops::template tail<S>(p, pt, c0, acc);
      dw_store_pixel(p, acc, out, pix);
    }
  }
};

template <class Ops>
void row(const DwProblem& p, const uint8_t* const* ind, int64_t npix, void* out, int32_t* acc) {
  if (p.x_signed)
    Row<Ops, true>::run(p, ind, npix, out, acc);
  else
    Row<Ops, false>::run(p, ind, npix, out, acc);
}

}  // namespace dw_simd
}  // namespace
}  // namespace pyq
