// The SIMD depthwise row kernel shared by the AVX2 and AVX-512BW paths
// ("unipass": all taps of one output pixel for a block of channels, in registers,
// then the epilogue over the pixel's channels).
//
// Two taps at a time: the activation bytes of taps 2q and 2q+1 are widened to
// int16 exactly (vpmovzxbw / vpmovsxbw) and interleaved per channel
// (vpunpck{l,h}wd), so one vpmaddwd by the packed int16 pair (w'[2q], w'[2q+1])
// adds x0*w0 + x1*w1 to a channel's int32 lane: |x| <= 255, |w'| <= 255, so the
// pair sum is exact, and vpaddd wraps (docs/semantics.md 2.1). The interleave
// leaves channels in the order of dw_pair_index (dwconv.h); finish() restores it.
//
// Each ISA translation unit includes this with its own flags and a traits struct,
// so everything here has internal linkage (see qgemm/epilogue.h).
#pragma once
#include "conv/dwconv_impl.h"

namespace pyq {
namespace {
namespace dw_simd {

// Ops must provide: type V, type Mask, kBlock (channels per lo/hi vector pair) and
// static: template <bool S, bool Masked> load_pair(xa, xb, Mask, V& lo, V& hi)
// (kBlock bytes of two taps, widened and interleaved; Masked reads only the
// mask's channels), w_offset(c0) (int16 offset of channel c0's lo weights in a
// pair row; hi is 32 further), wload(const int16_t*) (aligned), madd(acc, x, w)
// (acc + vpmaddwd(x, w)), zero(), finish(lo, hi, colterm, acc) (restore the
// channel order, add colterm, store kBlock int32), tail_mask(n),
// store_pixel(p, acc, out, pix) (the epilogue of one pixel's C accumulators), and
// template <bool S> tail(p, pt, c0, acc) for the last C - c0 < kBlock channels.
template <class Ops, bool S>
struct Row {
  using V = typename Ops::V;
  using Mask = typename Ops::Mask;
  static constexpr int kB = Ops::kBlock;

  template <int NU, bool Masked>
  static inline void block(const DwProblem& p, const uint8_t* const* pt, int64_t c0, int32_t* acc, Mask m) {
    V lo[NU], hi[NU];
    for (int u = 0; u < NU; ++u) lo[u] = hi[u] = Ops::zero();
    const int64_t pairs = p.ind_stride / 2, row = p.Cp * 2;
    const int16_t* w = p.w2;
    for (int64_t q = 0; q < pairs; ++q, w += row, pt += 2) {
      const uint8_t* xa = pt[0] + c0;
      const uint8_t* xb = pt[1] + c0;
      for (int u = 0; u < NU; ++u) {
        V a_lo, a_hi;
        Ops::template load_pair<S, Masked>(xa + u * kB, xb + u * kB, m, a_lo, a_hi);
        const int16_t* wu = w + Ops::w_offset(c0 + u * kB);
        lo[u] = Ops::madd(lo[u], a_lo, Ops::wload(wu));
        hi[u] = Ops::madd(hi[u], a_hi, Ops::wload(wu + 32));
      }
    }
    for (int u = 0; u < NU; ++u) Ops::finish(lo[u], hi[u], p.colterm + c0 + u * kB, acc + c0 + u * kB);
  }

  static void run(const DwProblem& p, const uint8_t* const* ind, int64_t npix, void* out, int32_t* acc) {
    const int64_t C = p.C;
    for (int64_t pix = 0; pix < npix; ++pix) {
      const uint8_t* const* pt = ind + pix * p.ind_stride;
      int64_t c0 = 0;
      for (; c0 + 2 * kB <= C; c0 += 2 * kB) block<2, false>(p, pt, c0, acc, Ops::tail_mask(kB));
      for (; c0 + kB <= C; c0 += kB) block<1, false>(p, pt, c0, acc, Ops::tail_mask(kB));
      if (c0 < C) Ops::template tail<S>(p, pt, c0, acc);
      Ops::store_pixel(p, acc, out, pix);
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
