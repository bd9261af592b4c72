// The eltwise kernels of docs/semantics.md section 11 compiled for the avx512bw path
// (ISA flags from the file name; see CMakeLists.txt). The loops are in eltwise_impl.h.
#if defined(PYQ_X86)
#include <immintrin.h>

#include "eltwise/eltwise_impl.h"

namespace pyq {
namespace {

// 16 elements (mask k) of a span as float32: contiguous (S = 1) or the span's scalar (S = 0).
template <typename T, int S>
__attribute__((always_inline)) inline __m512 load16(const T* p, int64_t i, __mmask16 k) {
  if constexpr (S == 0) return _mm512_set1_ps(static_cast<float>(p[0]));
  const __m128i b = _mm_maskz_loadu_epi8(k, p + i);
  const __m512i w = static_cast<T>(-1) < 0 ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
  return _mm512_cvtepi32_ps(w);  // exact: |value| <= 255
}

// ORT's add rule (docs/semantics.md 11.4) with explicit AVX-512 instead of the
// compiler's vectorization of add_span: y = rne(clamp(fma(a, rA, fma(b, rB, F)))),
// the scalar-b form folding fma(b, rB, F) once, exactly as add_span does.
// vfmadd is the fused multiply-add of __builtin_fmaf; max/min take the clamp's
// NaN-to-lo order; the rounding mode is named, not read from MXCSR.
template <typename T, int AS, int BS>
void add_ort_span(const AddArgs& p, int64_t i0, int64_t i1) {
  constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const T* A = static_cast<const T*>(p.a);
  T* Y = static_cast<T*>(p.y);
  const __m512 rA = _mm512_set1_ps(p.rA), rB = _mm512_set1_ps(p.rB), F = _mm512_set1_ps(p.F);
  const __m512 flo = _mm512_set1_ps(static_cast<float>(p.lo)), fhi = _mm512_set1_ps(static_cast<float>(p.hi));
  const __m512 G = BS == 0 ? _mm512_set1_ps(__builtin_fmaf(static_cast<float>(static_cast<const T*>(p.b)[0]),
                                                           p.rB, p.F))
                           : F;
  for (int64_t i = i0; i < i1; i += 16) {
    const __mmask16 k = i1 - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (i1 - i)) - 1);
    const __m512 t = BS == 0 ? G : _mm512_fmadd_ps(load16<T, BS>(static_cast<const T*>(p.b), i, k), rB, F);
    __m512 v = _mm512_fmadd_ps(load16<T, AS>(A, i, k), rA, t);
    v = _mm512_min_ps(_mm512_max_ps(v, flo), fhi);
    const __m512i q = _mm512_cvt_roundps_epi32(v, kRne);  // in [lo, hi]: the byte truncation is exact
    _mm_mask_storeu_epi8(Y + i, k, _mm512_cvtepi32_epi8(q));
  }
}

template <typename T>
void add_avx512(const AddArgs& p, int64_t i0, int64_t i1) {
  if (p.rule != AddRule::kOnnxruntime) {
    add<T>(p, i0, i1);
    return;
  }
  if (p.a_step && p.b_step) add_ort_span<T, 1, 1>(p, i0, i1);
  else if (p.a_step) add_ort_span<T, 1, 0>(p, i0, i1);
  else if (p.b_step) add_ort_span<T, 0, 1>(p, i0, i1);
  else add<T>(p, i0, i1);
}

EltwiseKernels make_table() {
  EltwiseKernels k = PYQ_EW_TABLE("avx512bw");
  k.add_u8 = add_avx512<uint8_t>;
  k.add_s8 = add_avx512<int8_t>;
  return k;
}

const EltwiseKernels kTable = make_table();
}  // namespace

const EltwiseKernels* eltwise_kernels_avx512bw() { return &kTable; }

}  // namespace pyq
#endif
