// The MultiThreshold kernels (docs/semantics.md 13.1) for the avx512bw path (ISA
// flags from the file name; see CMakeLists.txt). 16 int32 lanes per vector, the
// input widened exactly to int32; four vectors in flight per step.
//   span  (one threshold row for a run of elements: per-tensor thresholds, or one
//          channel of an NCHW tensor): compare-and-count against broadcast
//          thresholds, or a branchless binary search whose row sits in one or two
//          registers (vpermd / vpermt2d, rows up to 31 entries) or, for longer
//          rows, searches 31 splitters in registers first and gathers the rest.
//   lanes (channels contiguous, per-channel thresholds: NHWC or [N, C]): the
//          channels in the lanes; compare-and-count against the transposed
//          thresholds [P, Cp], or a binary search whose first three steps load
//          and blend from them and whose others gather from each lane's row.
#if defined(PYQ_X86)
#include <immintrin.h>

#include "threshold/threshold_impl.h"

namespace pyq {
namespace {

constexpr int kNV = 4;  // vectors per step

template <typename TI>
__attribute__((always_inline)) inline __m512i load16(const TI* p, __mmask16 k) {
  if constexpr (sizeof(TI) == 1) {
    const __m128i b = _mm_maskz_loadu_epi8(k, p);
    return static_cast<TI>(-1) < 0 ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
  } else if constexpr (sizeof(TI) == 2) {
    const __m256i h = _mm256_maskz_loadu_epi16(k, p);
    return static_cast<TI>(-1) < 0 ? _mm512_cvtepi16_epi32(h) : _mm512_cvtepu16_epi32(h);
  } else {
    return _mm512_maskz_loadu_epi32(k, p);
  }
}

// The low bytes of each lane (the Python layer checked the values fit the output type).
template <typename TO>
__attribute__((always_inline)) inline void store16(TO* p, __mmask16 k, __m512i v) {
  if constexpr (sizeof(TO) == 1) _mm_mask_storeu_epi8(p, k, _mm512_cvtepi32_epi8(v));
  else if constexpr (sizeof(TO) == 2) _mm256_mask_storeu_epi16(p, k, _mm512_cvtepi32_epi16(v));
  else _mm512_mask_storeu_epi32(p, k, v);
}

inline __mmask16 tail_mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
}

// ---------------------------------------------------------------- span
// NV vectors at x[i + 16 q], q < NV (the last one masked by kl), of threshold row r.
enum class Lookup { kReg16, kReg32, kGather };

template <typename TI, typename TO, int NV>
__attribute__((always_inline)) inline void span_count(const ThresholdArgs& a, const TI* x, TO* y, __mmask16 kl,
                                                      const int32_t* row, __m512i s, __m512i b) {
  __m512i xv[NV], acc[NV];
  const __m512i one = _mm512_set1_epi32(1);
  for (int q = 0; q < NV; ++q) {
    xv[q] = load16(x + 16 * q, q == NV - 1 ? kl : static_cast<__mmask16>(0xFFFF));
    acc[q] = _mm512_setzero_si512();
  }
  for (int64_t j = 0; j < a.W; ++j) {
    const __m512i t = _mm512_set1_epi32(row[j]);
    for (int q = 0; q < NV; ++q) acc[q] = _mm512_mask_add_epi32(acc[q], _mm512_cmpgt_epi32_mask(xv[q], t), acc[q], one);
  }
  for (int q = 0; q < NV; ++q)
    store16(y + 16 * q, q == NV - 1 ? kl : static_cast<__mmask16>(0xFFFF),
            _mm512_add_epi32(_mm512_mullo_epi32(acc[q], s), b));
}

template <typename TI, typename TO, int NV, Lookup L>
__attribute__((always_inline)) inline void span_search(const ThresholdArgs& a, const TI* x, TO* y, __mmask16 kl,
                                                       const int32_t* tree, __m512i t0, __m512i t1, __m512i s,
                                                       __m512i b) {
  __m512i xv[NV], pos[NV];
  for (int q = 0; q < NV; ++q) {
    xv[q] = load16(x + 16 * q, q == NV - 1 ? kl : static_cast<__mmask16>(0xFFFF));
    pos[q] = _mm512_setzero_si512();
  }
  int32_t step = a.k > 0 ? 1 << (a.k - 1) : 0;
  if constexpr (L == Lookup::kGather) {
    // The first 5 steps only ever read the 31 entries tree[(i + 1) * 2^(k - 5) - 1] (held in
    // t0, t1): a binary search over them gives pos / 2^(k - 5); the remaining k - 5 steps gather.
    for (int32_t ts = 16; ts; ts >>= 1) {
      const __m512i off = _mm512_set1_epi32(ts - 1), st = _mm512_set1_epi32(ts);
      for (int q = 0; q < NV; ++q) {
        const __m512i v = _mm512_permutex2var_epi32(t0, _mm512_add_epi32(pos[q], off), t1);
        pos[q] = _mm512_mask_add_epi32(pos[q], _mm512_cmpgt_epi32_mask(xv[q], v), pos[q], st);
      }
    }
    const __m128i sh = _mm_cvtsi32_si128(a.k - 5);
    for (int q = 0; q < NV; ++q) pos[q] = _mm512_sll_epi32(pos[q], sh);
    step >>= 5;
  }
  for (; step; step >>= 1) {
    const __m512i off = _mm512_set1_epi32(step - 1), st = _mm512_set1_epi32(step);
    for (int q = 0; q < NV; ++q) {
      const __m512i idx = _mm512_add_epi32(pos[q], off);
      __m512i v;
      if constexpr (L == Lookup::kReg16) v = _mm512_permutexvar_epi32(idx, t0);
      else if constexpr (L == Lookup::kReg32) v = _mm512_permutex2var_epi32(t0, idx, t1);
      else v = _mm512_i32gather_epi32(idx, tree, 4);
      pos[q] = _mm512_mask_add_epi32(pos[q], _mm512_cmpgt_epi32_mask(xv[q], v), pos[q], st);
    }
  }
  for (int q = 0; q < NV; ++q)
    store16(y + 16 * q, q == NV - 1 ? kl : static_cast<__mmask16>(0xFFFF),
            _mm512_add_epi32(_mm512_mullo_epi32(pos[q], s), b));
}

template <typename TI, typename TO, int NV, bool COUNT, Lookup L>
__attribute__((always_inline)) inline void span_step(const ThresholdArgs& a, const TI* x, TO* y, __mmask16 kl,
                                                     const int32_t* row, const int32_t* tree, __m512i t0, __m512i t1,
                                                     __m512i s, __m512i b) {
  if constexpr (COUNT) span_count<TI, TO, NV>(a, x, y, kl, row, s, b);
  else span_search<TI, TO, NV, L>(a, x, y, kl, tree, t0, t1, s, b);
}

template <typename TI, typename TO, bool COUNT, Lookup L>
void span_loop(const ThresholdArgs& a, int64_t i0, int64_t i1, int64_t r) {
  const TI* x = static_cast<const TI*>(a.x);
  TO* y = static_cast<TO*>(a.y);
  const int32_t* row = a.rows + r * a.W;
  const int32_t* tree = a.tree + r * a.P;
  const __m512i s = _mm512_set1_epi32(static_cast<int32_t>(a.scale[r]));
  const __m512i b = _mm512_set1_epi32(static_cast<int32_t>(a.bias[r]));
  const __m512i never = _mm512_set1_epi32(INT32_MAX);
  __m512i t0 = never, t1 = never;
  if (L == Lookup::kGather && !COUNT) {  // P > 32, k > 5: the top 5 levels (span_search)
    alignas(64) int32_t top[32];
    for (int i = 0; i < 31; ++i) top[i] = tree[(static_cast<int64_t>(i) + 1) * (int64_t{1} << (a.k - 5)) - 1];
    top[31] = INT32_MAX;
    t0 = _mm512_load_si512(top);
    t1 = _mm512_load_si512(top + 16);
  } else if (L != Lookup::kGather && a.P > 0) {
    t0 = _mm512_mask_loadu_epi32(never, tail_mask(a.P), tree);
    if (a.P > 16) t1 = _mm512_mask_loadu_epi32(never, tail_mask(a.P - 16), tree + 16);
  }
  const __mmask16 full = 0xFFFF;
  int64_t i = i0;
  for (; i + 16 * kNV <= i1; i += 16 * kNV) span_step<TI, TO, kNV, COUNT, L>(a, x + i, y + i, full, row, tree, t0, t1, s, b);
  for (; i < i1; i += 16) span_step<TI, TO, 1, COUNT, L>(a, x + i, y + i, tail_mask(i1 - i), row, tree, t0, t1, s, b);
}

template <typename TI, typename TO>
void span_typed(const ThresholdArgs& a, int64_t i0, int64_t i1, int64_t r, ThrAlgo algo) {
  if (algo == ThrAlgo::kCount) span_loop<TI, TO, true, Lookup::kGather>(a, i0, i1, r);
  else if (a.P <= 16) span_loop<TI, TO, false, Lookup::kReg16>(a, i0, i1, r);
  else if (a.P <= 32) span_loop<TI, TO, false, Lookup::kReg32>(a, i0, i1, r);
  else span_loop<TI, TO, false, Lookup::kGather>(a, i0, i1, r);
}

void span_avx512(const ThresholdArgs& a, int64_t i0, int64_t i1, int64_t r, ThrAlgo algo) {
  PYQ_THR_DISPATCH(a, span_typed, a, i0, i1, r, algo);
}

// ---------------------------------------------------------------- lanes
// NV rows x[q * C + c0 .. + 16) (lanes masked by k) of channels c0 .. c0 + 15.
template <typename TI, typename TO, int NV, bool COUNT>
__attribute__((always_inline)) inline void lanes_step(const ThresholdArgs& a, const TI* x, TO* y, int64_t c0,
                                                      __mmask16 k) {
  const int64_t C = a.C;
  __m512i xv[NV], acc[NV];
  for (int q = 0; q < NV; ++q) {
    xv[q] = load16(x + q * C, k);
    acc[q] = _mm512_setzero_si512();
  }
  if constexpr (COUNT) {
    const __m512i one = _mm512_set1_epi32(1);
    const int32_t* col = a.cols + c0;
    for (int64_t j = 0; j < a.W; ++j) {
      const __m512i t = _mm512_loadu_si512(col + j * a.Cp);
      for (int q = 0; q < NV; ++q)
        acc[q] = _mm512_mask_add_epi32(acc[q], _mm512_cmpgt_epi32_mask(xv[q], t), acc[q], one);
    }
  } else {
    // The first three steps read one of 1, 2, 4 entries per lane at fixed positions: plain loads
    // from the transposed rows (shared by the NV rows) and blends by the earlier steps' outcomes.
    const int32_t* col = a.cols + c0;
    int32_t step = a.k > 0 ? 1 << (a.k - 1) : 0;
    __mmask16 m1[NV], m2[NV];
    if (step) {
      const __m512i st = _mm512_set1_epi32(step), v = _mm512_loadu_si512(col + (step - 1) * a.Cp);
      for (int q = 0; q < NV; ++q) {
        m1[q] = _mm512_cmpgt_epi32_mask(xv[q], v);
        acc[q] = _mm512_mask_add_epi32(acc[q], m1[q], acc[q], st);
      }
      step >>= 1;
    }
    if (step) {
      const __m512i st = _mm512_set1_epi32(step);
      const __m512i v0 = _mm512_loadu_si512(col + (step - 1) * a.Cp);
      const __m512i v1 = _mm512_loadu_si512(col + (3 * step - 1) * a.Cp);
      for (int q = 0; q < NV; ++q) {
        m2[q] = _mm512_cmpgt_epi32_mask(xv[q], _mm512_mask_blend_epi32(m1[q], v0, v1));
        acc[q] = _mm512_mask_add_epi32(acc[q], m2[q], acc[q], st);
      }
      step >>= 1;
    }
    if (step) {
      const __m512i st = _mm512_set1_epi32(step);
      const __m512i v0 = _mm512_loadu_si512(col + (step - 1) * a.Cp);
      const __m512i v1 = _mm512_loadu_si512(col + (3 * step - 1) * a.Cp);
      const __m512i v2 = _mm512_loadu_si512(col + (5 * step - 1) * a.Cp);
      const __m512i v3 = _mm512_loadu_si512(col + (7 * step - 1) * a.Cp);
      for (int q = 0; q < NV; ++q) {
        const __m512i v = _mm512_mask_blend_epi32(m1[q], _mm512_mask_blend_epi32(m2[q], v0, v1),
                                                  _mm512_mask_blend_epi32(m2[q], v2, v3));
        acc[q] = _mm512_mask_add_epi32(acc[q], _mm512_cmpgt_epi32_mask(xv[q], v), acc[q], st);
      }
      step >>= 1;
    }
    const __m512i base = _mm512_mullo_epi32(
        _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(c0)),
                         _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)),
        _mm512_set1_epi32(a.P));
    for (; step; step >>= 1) {
      const __m512i off = _mm512_add_epi32(base, _mm512_set1_epi32(step - 1)), st = _mm512_set1_epi32(step);
      for (int q = 0; q < NV; ++q) {
        const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), k, _mm512_add_epi32(acc[q], off),
                                                      a.tree, 4);
        acc[q] = _mm512_mask_add_epi32(acc[q], k & _mm512_cmpgt_epi32_mask(xv[q], v), acc[q], st);
      }
    }
  }
  const __m512i s = _mm512_maskz_loadu_epi32(k, a.scale + c0), b = _mm512_maskz_loadu_epi32(k, a.bias + c0);
  for (int q = 0; q < NV; ++q) store16(y + q * C, k, _mm512_add_epi32(_mm512_mullo_epi32(acc[q], s), b));
}

template <typename TI, typename TO, bool COUNT>
void lanes_loop(const ThresholdArgs& a, int64_t o0, int64_t o1) {
  const TI* x = static_cast<const TI*>(a.x);
  TO* y = static_cast<TO*>(a.y);
  const int64_t C = a.C;
  int64_t o = o0;
  for (; o + kNV <= o1; o += kNV)
    for (int64_t c0 = 0; c0 < C; c0 += 16)
      lanes_step<TI, TO, kNV, COUNT>(a, x + o * C + c0, y + o * C + c0, c0, tail_mask(C - c0));
  for (; o < o1; ++o)
    for (int64_t c0 = 0; c0 < C; c0 += 16)
      lanes_step<TI, TO, 1, COUNT>(a, x + o * C + c0, y + o * C + c0, c0, tail_mask(C - c0));
}

template <typename TI, typename TO>
void lanes_typed(const ThresholdArgs& a, int64_t o0, int64_t o1, ThrAlgo algo) {
  if (algo == ThrAlgo::kCount) lanes_loop<TI, TO, true>(a, o0, o1);
  else lanes_loop<TI, TO, false>(a, o0, o1);
}

void lanes_avx512(const ThresholdArgs& a, int64_t o0, int64_t o1, ThrAlgo algo) {
  PYQ_THR_DISPATCH(a, lanes_typed, a, o0, o1, algo);
}

const ThresholdKernels kTable = {"avx512bw", span_avx512, lanes_avx512};

}  // namespace

const ThresholdKernels* threshold_kernels_avx512bw() { return &kTable; }

}  // namespace pyq
#endif
