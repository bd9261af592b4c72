// Depthwise shift convolution (docs/semantics.md section 12.4a, "Depthwise kernel"):
// group = C, channel multiplier m = OC / C >= 1, NHWC 8-bit activations, weights of
// T <= 3 signed power-of-two terms per tap, output channel oc reading input channel
// oc / m:
//   acc[n,oh,ow,oc] = sat_W( sum_{kh,kw} sum_t p(x[n,ih,iw,oc/m] - za, s, e) + bias[oc] )
// with p of section 12.1 (rule exact or deepshift) and padding taps adding 0.
//
// How it is computed. The operator (dwshift.cpp) picks the lane width for the whole
// layer from the static bound of section 12.3 and splits the output rows over
// threads; each thread converts the input rows its output rows read, once, into its
// own ring of padded rows of x - za (int16 or int32, output channels padded to a
// multiple of kDwShiftChannelPad, channel oc holding input channel oc / m, padding
// pixels and channels 0). The row kernels
// (dwshift.cpp: portable int64; dwshift_avx512bw.cpp: int16 / int32 lanes;
// dwshift_avx2.cpp: int32 lanes) put output channels in lanes: per pixel, tap and
// term one variable left shift of the pixel's channel vector (count 32 for an off
// term gives 0), for right shifts one arithmetic right shift, and the sign by xor
// with the per-channel mask (adds -(y) - 1; the count of negative terms is added
// back in the epilogue). The lane sums are exact by the bound, so the epilogue is
// sat_W(sum + bias) per element, then the int32 store or section 4's
// requantization (qgemm/epilogue.h). ISA files use only the plain structs below.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/cpu_features.h"
#include "common/requant.h"
#include "qgemm/qgemm.h"  // GemmProblem (its epilogue fields), OutKind
#include "shift/shift.h"  // ShiftRule

namespace pyq {

constexpr int64_t kDwShiftChannelPad = 64;         // output-channel padding of every packed array
constexpr int64_t kDwShiftMaxTaps = int64_t{1} << 20;  // keeps every int64 sum below 2^61

// int16: the whole sum in int16 lanes; int16 blocks: blocks of taps summed in int16
// lanes, each widened into int32 lanes; int32; wide: the portable int64 code.
enum class DwShiftLanes : int32_t { kInt16 = 0, kInt32 = 1, kWide = 2, kInt16Blocks = 3 };

// The packed terms as plain pointers, each [taps][T][OCp]: left count (e >= 0: e,
// else 0; off term: 32), sign mask (0 or -1), right count (e < 0: -e, else 0), as
// int32 and int16, and sign and exponent (the portable code; the exponent is any
// value when the sign is 0).
struct DwShiftTerms {
  const int32_t* lc = nullptr;
  const int32_t* sm = nullptr;
  const int32_t* rc = nullptr;
  const int16_t* lc16 = nullptr;
  const int16_t* sm16 = nullptr;
  const int16_t* rc16 = nullptr;
  const int8_t* sg = nullptr;
  const int8_t* ex = nullptr;
};

// One image's constants for the row kernels.
struct DwShiftRows {
  int64_t Wp = 0, OCp = 0, OC = 0, OW = 0, KH = 0, KW = 0;
  int64_t sh = 1, sw = 1, dh = 1, dw = 1;
  int T = 1;
  bool right_shifts = false;
  DwShiftTerms w;
  const int64_t* blk_end = nullptr;  // int16 blocks: the tap index ending each block, then a sentinel
  const int32_t* corr = nullptr;  // [OCp] negative-term count per channel
  const int32_t* addc = nullptr;  // [OCp] wrap32(count + bias): the int32 epilogue
  const int32_t* bias = nullptr;  // [OC] or null: the int64 epilogue
  bool epi32 = true;              // bound + |bias| <= 2^31 - 1 for every channel
  int32_t lo = INT32_MIN, hi = INT32_MAX;  // the acc_bits range
  GemmProblem epi;  // the output: out_kind, and for 8-bit output mode, scale / multiplier / shift, zp_y, lo, hi
  void* out = nullptr;  // [OH][OW][OC] of this image (int32, uint8 or int8)
};

// The int64 epilogue: sum[j] = sat_W(sum[j] + bias) for channels [c0, c0 + cnt) of
// one pixel, sum the exact lane sums (count added back). Internal linkage: ISA files
// include it.
static inline void dwshift_sat_wide(const DwShiftRows& p, int32_t* sum, int64_t c0, int64_t cnt) {
  for (int64_t j = 0; j < cnt; ++j) {
    int64_t r = static_cast<int64_t>(sum[j]) + (p.bias ? p.bias[c0 + j] : 0);
    r = r < p.lo ? p.lo : r > p.hi ? p.hi : r;
    sum[j] = static_cast<int32_t>(r);
  }
}

// Output row oh of one image; rows[kh] is the padded input row of kernel row kh
// ([Wp][OCp] x - za: int16 for int16 lanes, else int32).
using DwShiftRowFn = void (*)(const DwShiftRows& p, const void* const* rows, int64_t oh);

void dwshift_row_scalar(const DwShiftRows& p, const void* const* rows, int64_t oh);  // int32 rows, int64 sums
#if defined(PYQ_X86)
void dwshift_row_avx512bw_i16(const DwShiftRows& p, const void* const* rows, int64_t oh);
void dwshift_row_avx512bw_i32(const DwShiftRows& p, const void* const* rows, int64_t oh);
void dwshift_row_avx512bw_i16_blocks(const DwShiftRows& p, const void* const* rows, int64_t oh);
void dwshift_row_avx2_i32(const DwShiftRows& p, const void* const* rows, int64_t oh);
#endif

// Terms packed once: signs, exponents int8 [T][OC][KH][KW] (ONNX [OC, 1, KH, KW] per
// term), C input channels (OC a multiple of C). std::invalid_argument on bad values
// (section 12.1: signs in {-1, 0, 1}, exponents of active terms in the rule's range).
class DwShiftPacked {
 public:
  DwShiftPacked(const int8_t* signs, const int8_t* exponents, int T, int64_t OC, int64_t C, int64_t KH, int64_t KW,
                ShiftRule rule);
  int T() const { return T_; }
  int64_t OC() const { return OC_; }
  int64_t C() const { return C_; }
  int64_t KH() const { return KH_; }
  int64_t KW() const { return KW_; }
  int64_t taps() const { return KH_ * KW_; }
  int64_t padded_channels() const { return OCp_; }
  ShiftRule rule() const { return rule_; }
  bool right_shifts() const { return right_shifts_; }
  // Section 12.3's bound of channel oc without the bias, for activations of range max_a.
  int64_t channel_bound(int64_t oc, int64_t max_a) const;
  // The same for the terms of one tap, plus their negative-term count.
  int64_t tap_bound(int64_t tap, int64_t oc, int64_t max_a) const;
  const std::vector<int32_t>& negcnt() const { return negcnt_; }  // OCp entries
  DwShiftTerms terms() const {
    return {lc_.data(), sm_.data(), rc_.data(), lc16_.data(), sm16_.data(), rc16_.data(), sg_.data(), ex_.data()};
  }
  size_t packed_bytes() const;

 private:
  int T_;
  int64_t OC_, C_, KH_, KW_, OCp_;
  ShiftRule rule_;
  bool right_shifts_ = false;
  std::vector<int32_t> negcnt_, lc_, sm_, rc_;
  std::vector<int16_t> lc16_, sm16_, rc16_;
  std::vector<int8_t> sg_, ex_;
  std::vector<int32_t> hist_;  // [OC][62]: active terms per exponent (index e + 31)
};

struct DwShiftArgs {
  const uint8_t* x = nullptr;  // NHWC [N, H, W, C], C-contiguous, uint8 or int8
  bool x_signed = false;
  int64_t N = 0, H = 0, W = 0, C = 0;
  int32_t x_zero_point = 0;
  const DwShiftPacked* w = nullptr;
  const int32_t* bias = nullptr;  // OC entries or null
  int acc_bits = 32;
  int64_t stride_h = 1, stride_w = 1, pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int64_t dil_h = 1, dil_w = 1;
  OutKind out_kind = OutKind::kInt32;
  const RequantParams* requant = nullptr;  // 8-bit output: section 4 with OC channels (checked by the caller)
  int32_t zp_y = 0, lo = 0, hi = 0;        // 8-bit output: zero point and clamp
  void* out = nullptr;  // [N, OH, OW, OC] int32, or uint8 / int8 (requantized)
};

// The lane width and kernel the operator runs for these arguments on the active path,
// e.g. "dwshift_avx512bw:int16".
std::string dwshift_kernel_name(const DwShiftArgs& args);
// The whole operator: validates (std::invalid_argument), thread-safe, no Python.
void dwshift_conv(const DwShiftArgs& args);

}  // namespace pyq
