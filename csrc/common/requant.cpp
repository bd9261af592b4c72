#include "common/requant.h"

#include <cmath>
#include <cstring>
#include <sstream>
#include <stdexcept>

namespace pyq {

const char* mode_name(RequantMode m) {
  switch (m) {
    case RequantMode::kFp32: return "fp32";
    case RequantMode::kQ31: return "q31";
    case RequantMode::kQ31Single: return "q31_single";
    case RequantMode::kPot: return "pot";
  }
  return "?";
}

bool mode_from_name(const char* name, RequantMode* out) {
  for (int i = 0; i <= 3; ++i) {
    if (std::strcmp(name, mode_name(static_cast<RequantMode>(i))) == 0) {
      *out = static_cast<RequantMode>(i);
      return true;
    }
  }
  return false;
}

bool quantize_multiplier(double m, int32_t* multiplier, int32_t* shift) {
  if (m == 0.0) {
    *multiplier = 0;
    *shift = 0;
    return true;
  }
  int e = 0;
  const double q = std::frexp(m, &e);  // q in [0.5, 1)
  int64_t q_fixed = static_cast<int64_t>(std::round(q * 2147483648.0));  // round half away from zero
  if (q_fixed == (int64_t{1} << 31)) {
    q_fixed /= 2;
    ++e;
  }
  if (e < -31) {
    *multiplier = 0;
    *shift = 0;
    return true;
  }
  if (e > 30) return false;
  *multiplier = static_cast<int32_t>(q_fixed);
  *shift = e;
  return true;
}

RequantParams derive_requant(RequantMode mode, float x_scale, const float* w_scale, int64_t n_w_scale,
                             float y_scale, int64_t n_channels) {
  RequantParams p;
  p.mode = mode;
  const auto ws = [&](int64_t c) { return w_scale[n_w_scale == 1 ? 0 : c]; };
  if (mode == RequantMode::kFp32 || mode == RequantMode::kPot) {
    p.scale.resize(n_channels);
    for (int64_t c = 0; c < n_channels; ++c) {
      const float xw = x_scale * ws(c);
      p.scale[c] = xw / y_scale;
      if (!std::isfinite(p.scale[c])) {
        std::ostringstream msg;
        msg << "effective scale s_x*s_w/s_y of channel " << c << " overflows float32";
        throw std::invalid_argument(msg.str());
      }
    }
  }
  if (mode == RequantMode::kPot) {
    p.shift.resize(n_channels);
    for (int64_t c = 0; c < n_channels; ++c) {
      int e = 0;
      const float mant = std::frexp(p.scale[c], &e);
      if (!(mant == 0.5f)) {
        std::ostringstream msg;
        msg.precision(9);
        msg << "requant mode 'pot' needs an exact power-of-two scale, but channel " << c
            << " has s_x*s_w/s_y = " << p.scale[c];
        throw std::invalid_argument(msg.str());
      }
      p.shift[c] = 1 - e;  // S = 2^(e-1) = 2^-rs
    }
  }
  if (mode == RequantMode::kQ31 || mode == RequantMode::kQ31Single) {
    p.multiplier.resize(n_channels);
    p.shift.resize(n_channels);
    for (int64_t c = 0; c < n_channels; ++c) {
      const double m = static_cast<double>(x_scale) * static_cast<double>(ws(c)) / static_cast<double>(y_scale);
      if (!quantize_multiplier(m, &p.multiplier[c], &p.shift[c])) {
        std::ostringstream msg;
        msg.precision(9);
        msg << "requant mode '" << mode_name(mode) << "': channel " << c << " has s_x*s_w/s_y = " << m
            << ", too large for a Q31 multiplier (must be < 2^30)";
        throw std::invalid_argument(msg.str());
      }
    }
  }
  return p;
}

}  // namespace pyq
