// Pooling, quantized add, clip, requantize, quantize and dequantize kernels
// (docs/semantics.md section 11). Every kernel works on a range of rows or
// elements, so the dispatcher (eltwise.cpp) can split the work over threads;
// one table of kernels per kernel path, compiled from eltwise_impl.h with that
// path's ISA flags.
#pragma once
#include <cstdint>

#include "common/cpu_features.h"

namespace pyq {

// NHWC pooling over one batch of images. Output row r = n * OH + oh.
struct PoolArgs {
  const void* x;  // [N, H, W, C]
  void* y;        // [N, OH, OW, C]
  int64_t H, W, C, OH, OW;
  // In-bounds input rows of output row oh: row_taps[row_off[oh] .. row_off[oh + 1]); likewise columns.
  const int32_t* row_taps;
  const int32_t* row_off;
  const int32_t* col_taps;
  const int32_t* col_off;
  // average pool (ORT float rule) only
  float x_scale, y_scale;
  int32_t x_zp, y_zp;
  int64_t kernel_size;  // kh * kw
  bool count_include_pad;
};

// Global average pool over [N, HW, C]; S = fl32(s_x / fl32(s_y * fl32(HW))).
struct GapArgs {
  const void* x;
  void* y;  // [N, C]
  int64_t HW, C;
  float scale;
  int32_t x_zp, y_zp;
};

enum class AddRule : int32_t { kOnnxruntime = 0, kTflite = 1, kXnnpack = 2 };

// One span of a (broadcast) add: elements i of the span read A[i * a_step] and
// B[i * b_step] (steps 0 or 1) and write Y[i]. The binding splits the broadcast
// output into spans and, for ORT's a-is-scalar form, swaps the operands
// (docs/semantics.md 11.4), so the kernel never needs to know which is which.
struct AddArgs {
  const void* a;
  const void* b;
  void* y;
  int64_t a_step, b_step;
  AddRule rule;
  int32_t lo, hi;  // output clamp (dtype range intersected with the clip)
  // onnxruntime: y = fma(a, rA, fma(b, rB, F))
  float rA, rB, F;
  // tflite
  int32_t za, zb, zc, m_a, sh_a, m_b, sh_b, m_o, sh_o;
  // xnnpack
  int32_t xm_a, xm_b, shift, bias;
};

enum class QuantRule : int32_t { kOnnx = 0, kTorch = 1, kTflite = 2 };

// Elementwise conversions over a [rows, C] view; per-channel parameters index
// the last axis (C), per-tensor ones are arrays of one entry (nparams == 1).
struct QuantArgs {
  const float* x;
  void* y;
  QuantRule rule;
  const float* scale;  // onnx, tflite: s; torch: fl32(1 / s)
  const int32_t* zp;
  int64_t nparams, C;
  int32_t qmin, qmax;
};

struct DequantArgs {
  const void* q;  // int8 / uint8 / int32
  float* y;
  const float* scale;
  const int32_t* zp;
  int64_t nparams, C;
};

struct RequantArgs {
  const int32_t* x;
  void* y;
  int32_t mode;  // RequantMode
  const float* scale;
  const int32_t* multiplier;
  const int32_t* shift;
  int64_t nparams, C;
  int32_t zp, lo, hi;
};

struct EltwiseKernels {
  const char* name;
  // rows [r0, r1) of the output; scratch holds C floats (average pool)
  void (*max_pool_u8)(const PoolArgs&, int64_t r0, int64_t r1);
  void (*max_pool_s8)(const PoolArgs&, int64_t r0, int64_t r1);
  void (*avg_pool_u8)(const PoolArgs&, int64_t r0, int64_t r1, float* scratch);
  void (*avg_pool_s8)(const PoolArgs&, int64_t r0, int64_t r1, float* scratch);
  // image n, channels [c0, c1)
  void (*gap_u8)(const GapArgs&, int64_t n, int64_t c0, int64_t c1);
  void (*gap_s8)(const GapArgs&, int64_t n, int64_t c0, int64_t c1);
  // elements [i0, i1) of one span
  void (*add_u8)(const AddArgs&, int64_t i0, int64_t i1);
  void (*add_s8)(const AddArgs&, int64_t i0, int64_t i1);
  void (*clip_u8)(const uint8_t* x, uint8_t* y, int64_t n, int32_t lo, int32_t hi);
  void (*clip_s8)(const int8_t* x, int8_t* y, int64_t n, int32_t lo, int32_t hi);
  // rows [r0, r1) of C elements
  void (*quantize_u8)(const QuantArgs&, int64_t r0, int64_t r1);
  void (*quantize_s8)(const QuantArgs&, int64_t r0, int64_t r1);
  void (*dequantize_u8)(const DequantArgs&, int64_t r0, int64_t r1);
  void (*dequantize_s8)(const DequantArgs&, int64_t r0, int64_t r1);
  void (*dequantize_s32)(const DequantArgs&, int64_t r0, int64_t r1);
  void (*requantize_u8)(const RequantArgs&, int64_t r0, int64_t r1);
  void (*requantize_s8)(const RequantArgs&, int64_t r0, int64_t r1);
  // n bytes of one concat input requantized to the output's (s_y, z_y) (docs/semantics.md 11.5)
  void (*concat_requant_u8)(const uint8_t* x, uint8_t* y, int64_t n, float s, int32_t z, float s_y, int32_t z_y);
  void (*concat_requant_s8)(const int8_t* x, int8_t* y, int64_t n, float s, int32_t z, float s_y, int32_t z_y);
};

const EltwiseKernels* eltwise_kernels_scalar();
#if defined(PYQ_X86)
const EltwiseKernels* eltwise_kernels_avx2();
const EltwiseKernels* eltwise_kernels_avx512bw();
#endif
const EltwiseKernels* eltwise_kernels_for(KernelPath p);

}  // namespace pyq
