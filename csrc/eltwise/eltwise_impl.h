// The eltwise kernels, written once as plain loops that the compiler
// vectorizes for each ISA file that includes this header (eltwise_scalar.cpp,
// eltwise_avx2.cpp, eltwise_avx512bw.cpp). Internal linkage throughout: each
// ISA copy must stay in its own translation unit. Every loop is exact: integer
// ops, or float32 operations in the order docs/semantics.md section 11 writes
// (the build uses -ffp-contract=off; the one fused multiply-add, ORT's add
// rule, is an explicit __builtin_fmaf, which is exact on every path).
#pragma once
#include <cstdint>

#include "common/requant_impl.h"
#include "eltwise/eltwise.h"

#define PYQ_EW_TABLE(NAME)                                                                                  \
  {                                                                                                         \
    NAME, max_pool<uint8_t>, max_pool<int8_t>, avg_pool<uint8_t>, avg_pool<int8_t>, gap<uint8_t, uint32_t>, \
        gap<int8_t, int32_t>, add<uint8_t>, add<int8_t>, clip<uint8_t>, clip<int8_t>, quantize<uint8_t>,    \
        quantize<int8_t>, dequantize<uint8_t>, dequantize<int8_t>, dequantize<int32_t>, requantize<uint8_t>, \
        requantize<int8_t>, concat_requant<uint8_t>, concat_requant<int8_t>                                 \
  }

namespace pyq {
namespace {

// RNE of a float32 already clamped to |v| < 2^22 (magic-number rounding).
inline float ew_rne(float v) { return (v + 12582912.0f) - 12582912.0f; }

// NaN-safe clamp: a NaN becomes lo (inputs are checked for NaN in Python).
inline float ew_clampf(float v, float lo, float hi) {
  v = v > lo ? v : lo;
  return v < hi ? v : hi;
}

template <typename T>
void max_pool(const PoolArgs& a, int64_t r0, int64_t r1) {
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  const int64_t C = a.C;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / a.OH, oh = r % a.OH;
    const T* img = x + n * a.H * a.W * C;
    for (int64_t ow = 0; ow < a.OW; ++ow) {
      T* out = y + (r * a.OW + ow) * C;
      bool first = true;
      for (int32_t i = a.row_off[oh]; i < a.row_off[oh + 1]; ++i) {
        const T* row = img + static_cast<int64_t>(a.row_taps[i]) * a.W * C;
        for (int32_t j = a.col_off[ow]; j < a.col_off[ow + 1]; ++j) {
          const T* in = row + static_cast<int64_t>(a.col_taps[j]) * C;
          if (first) {
            for (int64_t c = 0; c < C; ++c) out[c] = in[c];
            first = false;
          } else {
            for (int64_t c = 0; c < C; ++c) out[c] = in[c] > out[c] ? in[c] : out[c];
          }
        }
      }
    }
  }
}

// ORT QLinearAveragePool: per-channel float32 sum over the taps, h outer, w inner.
template <typename T>
void avg_pool(const PoolArgs& a, int64_t r0, int64_t r1, float* acc) {
  const T* x = static_cast<const T*>(a.x);
  T* y = static_cast<T*>(a.y);
  const int64_t C = a.C;
  const float sx = a.x_scale, sy = a.y_scale, zy = static_cast<float>(a.y_zp);
  const int32_t zx = a.x_zp;
  const float qmin = sizeof(T) == 1 && static_cast<T>(-1) < 0 ? -128.0f : 0.0f;
  const float qmax = qmin < 0 ? 127.0f : 255.0f;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / a.OH, oh = r % a.OH;
    const T* img = x + n * a.H * a.W * C;
    const int32_t nrows = a.row_off[oh + 1] - a.row_off[oh];
    for (int64_t ow = 0; ow < a.OW; ++ow) {
      for (int64_t c = 0; c < C; ++c) acc[c] = 0.0f;
      for (int32_t i = a.row_off[oh]; i < a.row_off[oh + 1]; ++i) {
        const T* row = img + static_cast<int64_t>(a.row_taps[i]) * a.W * C;
        for (int32_t j = a.col_off[ow]; j < a.col_off[ow + 1]; ++j) {
          const T* in = row + static_cast<int64_t>(a.col_taps[j]) * C;
          for (int64_t c = 0; c < C; ++c) acc[c] = acc[c] + sx * static_cast<float>(static_cast<int32_t>(in[c]) - zx);
        }
      }
      const int64_t cnt = a.count_include_pad ? a.kernel_size
                                              : static_cast<int64_t>(nrows) * (a.col_off[ow + 1] - a.col_off[ow]);
      const float fcnt = static_cast<float>(cnt);
      T* out = y + (r * a.OW + ow) * C;
      for (int64_t c = 0; c < C; ++c) {
        const float v = (acc[c] / fcnt) / sy + zy;
        out[c] = static_cast<T>(static_cast<int32_t>(ew_rne(ew_clampf(v, qmin, qmax))));
      }
    }
  }
}

// Global average pool: exact integer channel sums, then the fp32 requantization.
// Acc is uint32 for uint8 (255 * 2^24 < 2^32) and int32 for int8 (|sum| <= 2^31).
template <typename T, typename Acc>
void gap(const GapArgs& a, int64_t n, int64_t c0, int64_t c1) {
  const T* x = static_cast<const T*>(a.x) + n * a.HW * a.C;
  T* y = static_cast<T*>(a.y) + n * a.C;
  const int32_t qmin = static_cast<T>(-1) < 0 ? -128 : 0, qmax = qmin < 0 ? 127 : 255;
  constexpr int64_t kBlock = 256;
  Acc sum[kBlock];
  for (int64_t cb = c0; cb < c1; cb += kBlock) {
    const int64_t len = c1 - cb < kBlock ? c1 - cb : kBlock;
    for (int64_t c = 0; c < len; ++c) sum[c] = 0;
    for (int64_t p = 0; p < a.HW; ++p) {
      const T* in = x + p * a.C + cb;
      for (int64_t c = 0; c < len; ++c) sum[c] += static_cast<Acc>(in[c]);
    }
    for (int64_t c = 0; c < len; ++c) {
      const int64_t acc = static_cast<int64_t>(sum[c]) - static_cast<int64_t>(a.x_zp) * a.HW;  // |acc| < 2^32
      float v = static_cast<float>(acc) * a.scale;  // int64 -> float32 rounds RNE
      v = ew_clampf(v, static_cast<float>(qmin - a.y_zp), static_cast<float>(qmax - a.y_zp));
      y[cb + c] = static_cast<T>(static_cast<int32_t>(ew_rne(v)) + a.y_zp);
    }
  }
}

// AS, BS: the element steps of A and B (0: the span's scalar, 1: contiguous), as
// template parameters so that every combination vectorizes.
template <typename T, int AS, int BS>
void add_span(const AddArgs& p, int64_t i0, int64_t i1) {
  const T* A = static_cast<const T*>(p.a);
  const T* B = static_cast<const T*>(p.b);
  T* Y = static_cast<T*>(p.y);
  if (p.rule == AddRule::kOnnxruntime) {
    const float flo = static_cast<float>(p.lo), fhi = static_cast<float>(p.hi);
    if (BS == 0) {
      // ORT folds the scalar into the constant with the same FMA: fma(b, rB, F)
      const float G = __builtin_fmaf(static_cast<float>(B[0]), p.rB, p.F);
      for (int64_t i = i0; i < i1; ++i) {
        const float v = __builtin_fmaf(static_cast<float>(A[i * AS]), p.rA, G);
        Y[i] = static_cast<T>(static_cast<int32_t>(ew_rne(ew_clampf(v, flo, fhi))));
      }
    } else {
      for (int64_t i = i0; i < i1; ++i) {
        const float t = __builtin_fmaf(static_cast<float>(B[i * BS]), p.rB, p.F);
        const float v = __builtin_fmaf(static_cast<float>(A[i * AS]), p.rA, t);
        Y[i] = static_cast<T>(static_cast<int32_t>(ew_rne(ew_clampf(v, flo, fhi))));
      }
    }
  } else if (p.rule == AddRule::kTflite) {
    for (int64_t i = i0; i < i1; ++i) {
      const int32_t va = (static_cast<int32_t>(A[i * AS]) - p.za) * (1 << 20);
      const int32_t vb = (static_cast<int32_t>(B[i * BS]) - p.zb) * (1 << 20);
      const int32_t s = rounding_divide_by_pot(srdhm(va, p.m_a), -p.sh_a) +
                        rounding_divide_by_pot(srdhm(vb, p.m_b), -p.sh_b);
      Y[i] = static_cast<T>(rq_q31(s, p.m_o, p.sh_o, p.zc, p.lo, p.hi));
    }
  } else {
    for (int64_t i = i0; i < i1; ++i) {
      const int32_t acc = p.bias + static_cast<int32_t>(A[i * AS]) * p.xm_a + static_cast<int32_t>(B[i * BS]) * p.xm_b;
      int32_t r = (acc >> p.shift) + p.zc;
      r = r < p.lo ? p.lo : r;
      r = r > p.hi ? p.hi : r;
      Y[i] = static_cast<T>(r);
    }
  }
}

template <typename T>
void add(const AddArgs& p, int64_t i0, int64_t i1) {
  if (p.a_step && p.b_step) add_span<T, 1, 1>(p, i0, i1);
  else if (p.a_step) add_span<T, 1, 0>(p, i0, i1);
  else if (p.b_step) add_span<T, 0, 1>(p, i0, i1);
  else add_span<T, 0, 0>(p, i0, i1);
}

template <typename T>
void clip(const T* x, T* y, int64_t n, int32_t lo, int32_t hi) {
  const T l = static_cast<T>(lo), h = static_cast<T>(hi);
  for (int64_t i = 0; i < n; ++i) {
    const T v = x[i] < l ? l : x[i];
    y[i] = v > h ? h : v;
  }
}

// One quantized value from a float32 value v = x / s (or x * (1/s)) already computed.
template <typename T, QuantRule R>
inline T quant_one(float v, int32_t zp, int32_t qmin, int32_t qmax) {
  v = ew_clampf(v, static_cast<float>(qmin - zp), static_cast<float>(qmax - zp));  // |v| <= 255
  int32_t r;
  if (R == QuantRule::kTflite) {
    r = static_cast<int32_t>(v);  // truncation; v - r is exact
    const float frac = v - static_cast<float>(r);
    r += (frac >= 0.5f ? 1 : 0) - (frac <= -0.5f ? 1 : 0);
  } else {
    r = static_cast<int32_t>(ew_rne(v));
  }
  return static_cast<T>(r + zp);
}

// The rule is a template parameter so that each loop is branch-free and vectorizes.
template <typename T, QuantRule R>
void quantize_rule(const QuantArgs& a, int64_t r0, int64_t r1) {
  T* y = static_cast<T*>(a.y);
  const float* x = a.x;
  const int32_t qmin = a.qmin, qmax = a.qmax;
  if (a.nparams == 1) {
    const float s = a.scale[0];
    const int32_t zp = a.zp[0];
    const int64_t i0 = r0 * a.C, i1 = r1 * a.C;
    for (int64_t i = i0; i < i1; ++i)
      y[i] = quant_one<T, R>(R == QuantRule::kTorch ? x[i] * s : x[i] / s, zp, qmin, qmax);
    return;
  }
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * a.C;
    T* out = y + r * a.C;
    for (int64_t c = 0; c < a.C; ++c)
      out[c] = quant_one<T, R>(R == QuantRule::kTorch ? xr[c] * a.scale[c] : xr[c] / a.scale[c], a.zp[c], qmin, qmax);
  }
}

template <typename T>
void quantize(const QuantArgs& a, int64_t r0, int64_t r1) {
  switch (a.rule) {
    case QuantRule::kTorch: quantize_rule<T, QuantRule::kTorch>(a, r0, r1); break;
    case QuantRule::kTflite: quantize_rule<T, QuantRule::kTflite>(a, r0, r1); break;
    default: quantize_rule<T, QuantRule::kOnnx>(a, r0, r1); break;
  }
}

template <typename T>
void dequantize(const DequantArgs& a, int64_t r0, int64_t r1) {
  const T* q = static_cast<const T*>(a.q);
  if (a.nparams == 1) {
    const float s = a.scale[0];
    const int64_t zp = a.zp[0];
    for (int64_t i = r0 * a.C; i < r1 * a.C; ++i)
      a.y[i] = static_cast<float>(static_cast<int64_t>(q[i]) - zp) * s;  // int64 -> float: one RNE
    return;
  }
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = 0; c < a.C; ++c) {
      const int64_t i = r * a.C + c;
      a.y[i] = static_cast<float>(static_cast<int64_t>(q[i]) - a.zp[c]) * a.scale[c];
    }
}

template <typename T>
void requantize(const RequantArgs& a, int64_t r0, int64_t r1) {
  T* y = static_cast<T*>(a.y);
  for (int64_t r = r0; r < r1; ++r) {
    const int32_t* x = a.x + r * a.C;
    T* out = y + r * a.C;
    for (int64_t c = 0; c < a.C; ++c) {
      const int64_t k = a.nparams == 1 ? 0 : c;
      int32_t v;
      switch (static_cast<RequantMode>(a.mode)) {
        case RequantMode::kFp32: v = rq_fp32(x[c], a.scale[k], a.zp, a.lo, a.hi); break;
        case RequantMode::kQ31: v = rq_q31(x[c], a.multiplier[k], a.shift[k], a.zp, a.lo, a.hi); break;
        case RequantMode::kQ31Single:
          v = a.multiplier[k] == 0 ? rq_clamp(a.zp, a.lo, a.hi)
                                   : rq_q31_single(x[c], a.multiplier[k], a.shift[k], a.zp, a.lo, a.hi);
          break;
        default: v = rq_pot(x[c], a.shift[k], a.zp, a.lo, a.hi); break;
      }
      out[c] = static_cast<T>(v);
    }
  }
}

// Concat's requantization, element by element (vectorized by the compiler):
// y = rne(clamp(fl32(fl32(s * fl32(x - z)) / s_y), qmin - z_y, qmax - z_y)) + z_y,
// the float32 operations of docs/semantics.md 11.5 in order (no contraction, a
// true division). Bounds are integers, so clamping before rounding is the sat().
template <typename T>
void concat_requant(const T* x, T* y, int64_t n, float s, int32_t z, float s_y, int32_t z_y) {
  const int32_t qmin = static_cast<T>(-1) < 0 ? -128 : 0, qmax = qmin < 0 ? 127 : 255;
  const float lo = static_cast<float>(qmin - z_y), hi = static_cast<float>(qmax - z_y);
  for (int64_t i = 0; i < n; ++i) {
    const float d = s * static_cast<float>(static_cast<int32_t>(x[i]) - z);
    const float t = ew_clampf(d / s_y, lo, hi);
    y[i] = static_cast<T>(static_cast<int32_t>(ew_rne(t)) + z_y);
  }
}

}  // namespace
}  // namespace pyq
