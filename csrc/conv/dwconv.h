// Depthwise 2-D convolution (groups = C, one output channel per input channel), NHWC:
//   acc[n,oh,ow,c] = wrap32( sum_{kh,kw} (x[n,ih,iw,c] - za) * (w[c,kh,kw] - zw[c]) + bias[c] )
//   ih = oh*stride_h - pad_top + kh*dil_h, iw likewise; taps outside the input contribute 0
// then int32 output or the requantization of docs/semantics.md section 4 and a clamp.
//
// How the kernels compute it. The weights are packed once as w'[t][c] = w[c,t] -
// zw[c] (exact, |w'| <= 255), tap-major, channels padded with zeros to a multiple
// of kDwChannelPad: as int32 (the scalar path and the AVX2 channel tail) and as
// int16 tap pairs for vpmaddwd (the SIMD paths; layout in dwconv_simd_impl.h).
// Activations are only widened (zero- or sign-extended from their own dtype, so
// |x| <= 255 and every pair sum x0*w0 + x1*w1 is exact in int32), never shifted,
// and the zero point is folded:
//   acc = sum_t x_t * w'_t + colterm[c],   colterm[c] = bias[c] - za * sum_t w'_t[c]
// (all modulo 2^32, which section 2.1 allows). A tap outside the input points at a
// row of za bytes (the indirection buffer), so it adds za * w'_t, which the fold
// cancels: padding costs no branch in the inner loop.
//
// The operator (dwconv.cpp) builds the indirection pointers of one output row
// (OW x taps), splits output rows over threads and calls the active path's row
// kernel (dwconv_<isa>.cpp), which computes all taps of one output pixel for a
// block of channels in registers, then runs the shared epilogue over the pixel's C
// channels.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/cpu_features.h"
#include "common/requant.h"
#include "qgemm/qgemm.h"  // AlignedBuffer, OutKind, GemmProblem (its epilogue fields)

namespace pyq {

// Channel padding of the packed weights, the za row and the accumulator scratch:
// a multiple of every path's channel block (32), so kernels may read whole vectors.
constexpr int64_t kDwChannelPad = 64;

inline int64_t dw_padded_channels(int64_t C) { return (C + kDwChannelPad - 1) / kDwChannelPad * kDwChannelPad; }

// Where channel c's weight pair (w[2q][c], w[2q+1][c]) sits (int16 offset) in a
// tap-pair row of the packed_pairs() layout. Per 32-channel block, vpunpck{l,h}wd
// of the widened activations of two taps yields, per 128-bit lane, channels
// 0-3 (lo) and 4-7 (hi) of each 8: the lo zmm holds channels
// {0-3, 8-11, 16-19, 24-27}, the hi zmm {4-7, 12-15, 20-23, 28-31}; an AVX2 ymm
// is the lower or upper half of these for 16 channels.
inline int64_t dw_pair_index(int64_t c) {
  const int64_t b = c / 32, r = c % 32, half = r / 16, r2 = r % 16;
  const int64_t hi = (r2 % 8) / 4, lane = r2 / 8, idx = r2 % 4;
  return b * 64 + hi * 32 + (half * 8 + lane * 4 + idx) * 2;
}

class DwPackedWeights {
 public:
  // w: [C, KH, KW] (ONNX [C, 1, KH, KW]) bytes of int8 (w_signed) or uint8;
  // zero_points: 1 or C values in w's dtype domain.
  DwPackedWeights(const uint8_t* w, bool w_signed, int64_t C, int64_t KH, int64_t KW, const int32_t* zero_points,
                  int64_t n_zero_points);
  int64_t C() const { return C_; }
  int64_t KH() const { return KH_; }
  int64_t KW() const { return KW_; }
  int64_t taps() const { return KH_ * KW_; }
  int64_t padded_channels() const { return Cp_; }
  bool weights_signed() const { return signed_; }
  const std::vector<int32_t>& zero_points() const { return zp_; }
  // int32 [taps][padded_channels()], 64-byte aligned: w - zw, zero in the padding.
  const int32_t* packed() const { return reinterpret_cast<const int32_t*>(buf_->data()); }
  // int16 [(taps+1)/2][padded_channels() * 2] tap pairs (dwconv_simd_impl.h), 64-byte aligned.
  const int16_t* packed_pairs() const { return reinterpret_cast<const int16_t*>(pairs_->data()); }
  // sum over taps of w - zw, per channel (wrapping int32).
  const std::vector<int32_t>& wsum() const { return wsum_; }
  // int8 quads for vpdpbusd, [KH][padded_channels()] int32 words, each the bytes
  // (w'[kh][0], w'[kh][1], w'[kh][2], w'[kh][3]) (0 past KW), 64-byte aligned; null
  // unless KW <= 4 and every w - zw fits int8 (e.g. int8 weights with zero point 0).
  const int32_t* packed_quads() const { return quads_ ? reinterpret_cast<const int32_t*>(quads_->data()) : nullptr; }
  size_t packed_bytes() const { return buf_->size() + pairs_->size() + (quads_ ? quads_->size() : 0); }

 private:
  int64_t C_, KH_, KW_, Cp_;
  bool signed_;
  std::vector<int32_t> zp_, wsum_;
  std::unique_ptr<AlignedBuffer> buf_, pairs_, quads_;
};

// One call's constants, shared by every row.
struct DwProblem {
  bool x_signed = false;
  int64_t C = 0, Cp = 0, taps = 0;
  int64_t ind_stride = 0;            // pointers per pixel in the indirection buffer: taps rounded up to even
  const int32_t* w = nullptr;        // DwPackedWeights::packed()
  const int16_t* w2 = nullptr;       // DwPackedWeights::packed_pairs()
  const int32_t* colterm = nullptr;  // Cp entries: bias - za * wsum (wrapping)
  GemmProblem epi;                   // only the epilogue fields: out_kind, mode, scale, multiplier, shift, zp_y, lo, hi
};

struct DwKernel {
  const char* name;
  // Output pixels [0, npix) of one row: ind holds npix * ind_stride pointers,
  // pixel-major, each to channel 0 of an input pixel or of the za row
  // (padded_channels bytes); an odd tap count is padded with one za-row pointer
  // (its pair weight is 0).
  // out points at the row's first output element (npix * C elements of the output
  // type); acc is scratch of Cp int32, 64-byte aligned.
  void (*row)(const DwProblem& p, const uint8_t* const* ind, int64_t npix, void* out, int32_t* acc);
};

const DwKernel* scalar_dw_kernel();
#if defined(PYQ_X86)
const DwKernel* avx2_dw_kernel();
const DwKernel* avx512bw_dw_kernel();
#endif
const DwKernel* dw_kernel_for(KernelPath p);

struct DwArgs {
  const uint8_t* x;  // NHWC, C-contiguous
  bool x_signed;
  int64_t N, H, W, C;
  int32_t x_zero_point;  // in x's dtype domain
  const DwPackedWeights* w;
  const int32_t* bias;  // C entries or null
  int64_t stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, dil_h, dil_w;
  OutKind out_kind;
  void* out;  // [N, OH, OW, C], C-contiguous
  const RequantParams* requant;  // null for int32 output
  int32_t zp_y, lo, hi;
};

// The row-quad depthwise kernel (dwconv_avx512vnni.cpp, docs/semantics.md 10.4):
// for KW <= 4, dilation 1 along W and int8-range weights, each input row is
// rebuilt once per thread as quads Q[iw][c] = (x[iw][c], .., x[iw+3][c]) (bytes,
// int8 x flipped to uint8 by x ^ 0x80), so one vpdpbusd per kernel row and 16
// channels accumulates all taps of that row; the fp32 epilogue runs in registers.
struct DwQuadArgs {
  const uint8_t* x;  // NHWC
  bool x_signed;
  int64_t N, H, W, C, Cp, KH, OH, OW;
  int64_t stride_h, stride_w, pad_top, pad_left, dil_h;
  uint8_t za_u;            // the input zero point as stored in the quads (za ^ 0x80 for int8 x)
  const int32_t* wq;       // DwPackedWeights::packed_quads()
  const int32_t* colterm;  // Cp entries: bias - za_u * wsum (wrapping)
  OutKind out_kind;        // kInt32, or 8-bit with fp32 requantization
  const float* scale;      // C entries (8-bit output)
  int32_t zp_y, lo, hi;
  void* out;
};

// Whether dwconv() runs the row-quad kernel for these weights and this call:
// the AVX-512 VNNI path, packed_quads(), KH <= 16 (the kernel's ring of rows),
// dilation 1 along W, int32 output or fp32 requantization, and not switched off
// (set_dw_quad_enabled(false), for A/B benchmarks; both kernels are bit-exact).
bool dw_uses_quad_kernel(const DwPackedWeights& w, int64_t dil_w, OutKind out_kind, RequantMode mode);
void set_dw_quad_enabled(bool on);
bool dw_quad_enabled();

// Output rows [r0, r1) (r = n * OH + oh); thread-safe, allocates its own rows.
using DwQuadRowsFn = void (*)(const DwQuadArgs& a, int64_t r0, int64_t r1);
#if defined(PYQ_X86)
DwQuadRowsFn avx512vnni_dw_quad_rows();
#endif

// Output size along one axis; throws std::invalid_argument naming the axis if < 1.
int64_t dw_output_size(int64_t in, int64_t k, int64_t stride, int64_t pad0, int64_t pad1, int64_t dil,
                       const char* axis);

// The whole operator; validates sizes (std::invalid_argument), thread-safe, no Python.
void dwconv(const DwArgs& args);

}  // namespace pyq
