// Quantized 2-D convolution, NHWC (docs/semantics.md section 10), built on the
// GEMM microkernels of csrc/qgemm through GemmKernel::compute: 1x1 stride-1
// unpadded convolutions run the GEMM on the input in place; every other
// convolution gathers blocks of output-pixel rows (padding taps = the input
// zero point) into a small per-thread buffer and runs the GEMM on each block.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "conv/dwconv.h"
#include "qgemm/qgemm.h"

namespace pyq {

// Weights [OC, C/groups, KH, KW] (ONNX) packed once: per group a GEMM B of
// [K = KH*KW*Cg, OC/groups] with k = (kh*KW + kw)*Cg + c (the NHWC gather order).
class PackedConvWeights {
 public:
  PackedConvWeights(const uint8_t* w_oihw, bool w_signed, int64_t OC, int64_t Cg, int64_t KH, int64_t KW,
                    int64_t groups, const int32_t* zero_points, int64_t n_zero_points);
  int64_t OC() const { return OC_; }
  int64_t Cg() const { return Cg_; }
  int64_t KH() const { return KH_; }
  int64_t KW() const { return KW_; }
  int64_t groups() const { return groups_; }
  bool weights_signed() const { return signed_; }
  const PackedWeights& group(int64_t g) const { return *packs_[static_cast<size_t>(g)]; }
  // Set for depthwise weights (groups = C, one output per group): the dedicated kernel's packing.
  const DwPackedWeights* depthwise() const { return dw_.get(); }
  size_t packed_bytes() const;

 private:
  int64_t OC_, Cg_, KH_, KW_, groups_;
  bool signed_;
  std::vector<std::unique_ptr<PackedWeights>> packs_;
  std::unique_ptr<DwPackedWeights> dw_;
};

struct ConvArgs {
  const uint8_t* x = nullptr;  // NHWC [N, H, W, C], contiguous
  bool x_signed = false;
  int32_t x_zero_point = 0;  // in x's dtype domain
  int64_t N = 0, H = 0, W = 0, C = 0;
  int64_t sh = 1, sw = 1, dh = 1, dw = 1;
  int64_t pt = 0, pl = 0, pb = 0, pr = 0;
  const PackedConvWeights* w = nullptr;
  const int32_t* bias = nullptr;  // OC entries or null
  OutKind out_kind = OutKind::kInt32;
  void* out = nullptr;  // NHWC [N, OH, OW, OC], contiguous
  const RequantParams* requant = nullptr;  // OC channels; null for int32 output
  int32_t zp_y = 0, lo = 0, hi = 0;
};

// Output spatial size; throws std::invalid_argument if the dilated kernel does
// not fit the padded input.
void conv_output_hw(const ConvArgs& a, int64_t* OH, int64_t* OW);

// Indirect A for dense convolutions on the kernel paths that have it (default
// on; off = the gathered path, for A/B benchmarks; both are bit-exact).
void set_conv_indirect_enabled(bool on);

// The whole operator. Thread-safe; does not touch Python.
void qconv(const ConvArgs& a);

}  // namespace pyq
