// Requantization parameters (docs/semantics.md, "Requantization"). The
// derivation from float32 scales lives here, once; the per-element formulas are
// in requant_impl.h so every ISA translation unit can inline them.
#pragma once
#include <cstdint>
#include <vector>

namespace pyq {

enum class RequantMode : int32_t { kFp32 = 0, kQ31 = 1, kQ31Single = 2, kPot = 3 };

const char* mode_name(RequantMode m);
bool mode_from_name(const char* name, RequantMode* out);

struct RequantParams {
  RequantMode mode = RequantMode::kFp32;
  // One entry per output channel (a per-tensor scale is expanded to N entries).
  std::vector<float> scale;          // fp32: S = fl32(fl32(s_x*s_w)/s_y); pot: the same S
  std::vector<int32_t> multiplier;   // q31, q31_single: m in [0, 2^31)
  std::vector<int32_t> shift;        // q31, q31_single: sh (positive = left); pot: right shift rs
};

// Throws std::invalid_argument with a message naming the offending channel.
RequantParams derive_requant(RequantMode mode, float x_scale, const float* w_scale, int64_t n_w_scale,
                             float y_scale, int64_t n_channels);

// TFLite's QuantizeMultiplier (mantissa rounded half away from zero, 2^31 fixup,
// exponent < -31 flushes to zero). Returns false if sh > 30 (rejected by the contract).
bool quantize_multiplier(double m, int32_t* multiplier, int32_t* shift);

}  // namespace pyq
