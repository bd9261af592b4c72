// One K group (4 bytes of K) of the 6x64c4 VNNI register tile on int8 weights: MR
// broadcast activation words times NV zmm of packed weights, MR x NV vpdpbusd.
// Shared by the int8 GEMM (qgemm_avx512vnni.cpp) and the hybrid shift kernel
// (shift/shift_hybrid_avx512vnni.cpp); load_a4 also by the nibble kernels.
// Internal linkage only: this is included into ISA-specific translation units.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace pyq {
namespace {

inline int32_t load_a4(const uint8_t* a) {
  int32_t v;
  std::memcpy(&v, a, 4);
  return v;
}

// The MR x NV vpdpbusd of one K group, weights already in registers. SIGNED_A: int8
// activations enter vpdpbusd (unsigned x signed) as a + 128 (xor 0x80).
template <int MR, int NV, bool SIGNED_A>
__attribute__((always_inline)) inline void dpbusd_rows(__m512i (&acc)[MR][NV], const uint8_t* const (&a)[MR],
                                                       int64_t off, const __m512i (&bv)[NV], __m512i flip) {
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    __m512i av = _mm512_set1_epi32(load_a4(a[r] + off));
    if constexpr (SIGNED_A) av = _mm512_xor_si512(av, flip);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av, bv[v]);
  }
}

template <int MR, int NV, bool SIGNED_A>
__attribute__((always_inline)) inline void kgroup_i8(__m512i (&acc)[MR][NV], const uint8_t* const (&a)[MR],
                                                     int64_t off, const uint8_t* b, __m512i flip) {
  __m512i bv[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_si512(reinterpret_cast<const void*>(b + 64 * v));
  dpbusd_rows<MR, NV, SIGNED_A>(acc, a, off, bv, flip);
}

}  // namespace
}  // namespace pyq
