// Portable depthwise path: per output pixel, the plain loop over taps and
// channels with wrapping uint32 accumulation. It is the fallback on every CPU and
// the simplest statement of what the SIMD paths compute.
#include "conv/dwconv_impl.h"

namespace pyq {
namespace {

template <bool XSigned>
inline int32_t widen(uint8_t b) {
  return XSigned ? static_cast<int32_t>(static_cast<int8_t>(b)) : static_cast<int32_t>(b);
}

template <bool XSigned>
void scalar_row_t(const DwProblem& p, const uint8_t* const* ind, int64_t npix, void* out, int32_t* acc) {
  const int64_t C = p.C, Cp = p.Cp, T = p.taps;
  uint32_t* s = reinterpret_cast<uint32_t*>(acc);
  for (int64_t pix = 0; pix < npix; ++pix) {
    const uint8_t* const* pt = ind + pix * p.ind_stride;
    for (int64_t c = 0; c < C; ++c) s[c] = static_cast<uint32_t>(p.colterm[c]);
    for (int64_t t = 0; t < T; ++t) {
      const uint8_t* x = pt[t];
      const int32_t* w = p.w + t * Cp;
      for (int64_t c = 0; c < C; ++c) s[c] += static_cast<uint32_t>(widen<XSigned>(x[c]) * w[c]);  // |x*w| <= 65025
    }
    dw_store_pixel(p, acc, out, pix);
  }
}

void scalar_row(const DwProblem& p, const uint8_t* const* ind, int64_t npix, void* out, int32_t* acc) {
  if (p.x_signed)
    scalar_row_t<true>(p, ind, npix, out, acc);
  else
    scalar_row_t<false>(p, ind, npix, out, acc);
}

const DwKernel kScalar = {"dwconv_scalar", scalar_row};

}  // namespace

const DwKernel* scalar_dw_kernel() { return &kScalar; }

}  // namespace pyq
