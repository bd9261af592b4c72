// The row-quad depthwise kernel (AVX-512 VNNI), see DwQuadArgs in dwconv.h.
//
// Each input row a task needs is rebuilt once (per 64-channel group and column
// tile) into quads
//   Q[j][c] = bytes (x[iw][c], x[iw+1][c], x[iw+2][c], x[iw+3][c]),  iw = j * stride_w - pad_left,
// in natural channel order (x outside the row reads the zero point za_u), so an
// output pixel's kernel row is one vpdpbusd per 16 channels: u8 quads times the
// int8 weight quads (w'[kh][0..3], 0 past KW), exact products summed into int32
// lanes that wrap like the contract's accumulator (docs/semantics.md 2.1). int8 x
// is flipped to uint8 (x ^ 0x80, i.e. x + 128) and the zero point with it, which
// the fold colterm = bias - za_u * wsum cancels exactly.
//
// The quads of a 64-channel group come from: a vpermd that transposes the 4x4
// dwords of the group (so that the in-lane unpacks below leave channels in
// natural order), vpunpck{l,h}bw of columns iw and iw+1 (pairs), and
// vpunpck{l,h}wd of the pairs at iw and iw+2 (quads; 16 channels per zmm); with
// stride 1 that is 7 shuffles per group and column. A task walks channel groups
// and 32-column tiles outermost and keeps a ring of KH built tiles (plus a tile of
// za quads for rows outside the image) while its output rows walk down.
//
// Where the time goes (144 channels 56x56, 1 thread, ~100 us a call): about a
// third building quads, half the vpdpbusd and the fp32 epilogue (which share the
// vector pipes), the rest per-call overhead. Tiling for L1 did not change it: the
// loop is bound by the vector pipes, not by L2.
//
// Internal linkage; no std:: templates (ISA translation unit).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "conv/dwconv.h"

namespace pyq {
namespace {

constexpr int kMaxRing = 16;  // kernel rows held per task; taller kernels take the generic path

inline __m512i transpose_dwords(__m512i v) {
  const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_epi32(idx, v);
}

// Output columns per tile: a tile's quad rows (kTile * 64 channels * 4 bytes each)
// and the ring of KH of them stay in L1 while the tile's output rows are computed.
constexpr int64_t kTile = 32;

// Builds the quads of one input row for channel group g (64 channels) and quad
// columns [j0, j1) (j serves output column j; its first input column is
// iw = j * stride_w - pad_left) into q[(j - j0) * 64 + c] (xr: the row's first
// byte; never null here, rows outside the image use the za tile).
void build_tile(const DwQuadArgs& a, const uint8_t* xr, int64_t g, int64_t j0, int64_t j1, int32_t* q) {
  const int64_t C = a.C, W = a.W, sw = a.stride_w;
  const __m512i za = _mm512_set1_epi8(static_cast<char>(a.za_u));
  const __m512i flip = _mm512_set1_epi8(a.x_signed ? static_cast<char>(0x80) : 0);
  const int64_t left = C - g;  // channels of this group inside x
  const __mmask64 m = left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
  auto col = [&](int64_t iw) -> __m512i {
    if (iw < 0 || iw >= W) return za;  // za is the same in every lane: no transpose needed
    const __m512i v = _mm512_maskz_loadu_epi8(m, xr + iw * C + g);
    return transpose_dwords(_mm512_xor_si512(v, flip));
  };
  auto store = [&](int32_t* dst, __m512i p0l, __m512i p0h, __m512i p2l, __m512i p2h) {
    _mm512_store_si512(dst, _mm512_unpacklo_epi16(p0l, p2l));
    _mm512_store_si512(dst + 16, _mm512_unpackhi_epi16(p0l, p2l));
    _mm512_store_si512(dst + 32, _mm512_unpacklo_epi16(p0h, p2h));
    _mm512_store_si512(dst + 48, _mm512_unpackhi_epi16(p0h, p2h));
  };
  int64_t iw = j0 * sw - a.pad_left;
  int32_t* dst = q;
  if (sw == 1) {  // sliding: one new column per quad; pairs (iw, iw+1) reused twice
    __m512i x1 = col(iw + 1), x2 = col(iw + 2);
    const __m512i x0 = col(iw);
    __m512i p0l = _mm512_unpacklo_epi8(x0, x1), p0h = _mm512_unpackhi_epi8(x0, x1);
    __m512i p1l = _mm512_unpacklo_epi8(x1, x2), p1h = _mm512_unpackhi_epi8(x1, x2);
    for (int64_t j = j0; j < j1; ++j, ++iw, dst += 64) {
      const __m512i x3 = col(iw + 3);
      const __m512i p2l = _mm512_unpacklo_epi8(x2, x3), p2h = _mm512_unpackhi_epi8(x2, x3);
      store(dst, p0l, p0h, p2l, p2h);
      x2 = x3;
      p0l = p1l, p0h = p1h;
      p1l = p2l, p1h = p2h;
    }
  } else if (sw == 2) {  // the pair (iw+2, iw+3) is the next quad's (iw, iw+1)
    const __m512i x0 = col(iw), x1 = col(iw + 1);
    __m512i p0l = _mm512_unpacklo_epi8(x0, x1), p0h = _mm512_unpackhi_epi8(x0, x1);
    for (int64_t j = j0; j < j1; ++j, iw += 2, dst += 64) {
      const __m512i x2 = col(iw + 2), x3 = col(iw + 3);
      const __m512i p2l = _mm512_unpacklo_epi8(x2, x3), p2h = _mm512_unpackhi_epi8(x2, x3);
      store(dst, p0l, p0h, p2l, p2h);
      p0l = p2l, p0h = p2h;
    }
  } else {
    for (int64_t j = j0; j < j1; ++j, iw += sw, dst += 64) {
      const __m512i x0 = col(iw), x1 = col(iw + 1), x2 = col(iw + 2), x3 = col(iw + 3);
      store(dst, _mm512_unpacklo_epi8(x0, x1), _mm512_unpackhi_epi8(x0, x1), _mm512_unpacklo_epi8(x2, x3),
            _mm512_unpackhi_epi8(x2, x3));
    }
  }
}

// 8-bit output of 64 channels (four accumulators of 16) at once: the fp32 rule of
// docs/semantics.md 4.1 with the clamp moved after the conversion, which gives
// the same bytes: f is first bounded above by 2^31 (a larger f would convert to
// the "indefinite" INT32_MIN), a too negative f converts to INT32_MIN, and then
// saturating packs (int32 -> int16, + zp saturating, -> 8 bit) and a byte
// min/max clamp to [lo, hi]; every saturation bound contains [lo - zp, hi - zp],
// and rne commutes with clamping to integer bounds. The packs interleave the four
// accumulators per 128-bit lane, which the 4x4 dword transpose undoes. Small:
// every scale is below 1, so |f| < 2^31 already (|fl32(acc)| <= 2^31) and the
// bound is skipped.
template <bool S, bool Small>
inline __m512i requant64(const __m512i* acc, const __m512* s, __m512i zp16, __m512i lo8, __m512i hi8) {
  constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m512 big = _mm512_set1_ps(2147483520.0f);  // the largest float32 below 2^31
  __m512i r[4];
  for (int k = 0; k < 4; ++k) {
    const __m512 f = _mm512_mul_round_ps(_mm512_cvt_roundepi32_ps(acc[k], kRne), s[k], kRne);
    r[k] = _mm512_cvt_roundps_epi32(Small ? f : _mm512_min_ps(f, big), kRne);
  }
  const __m512i w01 = _mm512_adds_epi16(_mm512_packs_epi32(r[0], r[1]), zp16);
  const __m512i w23 = _mm512_adds_epi16(_mm512_packs_epi32(r[2], r[3]), zp16);
  __m512i b = S ? _mm512_packs_epi16(w01, w23) : _mm512_packus_epi16(w01, w23);
  b = S ? _mm512_min_epi8(_mm512_max_epi8(b, lo8), hi8) : _mm512_min_epu8(_mm512_max_epu8(b, lo8), hi8);
  return transpose_dwords(b);
}

// Output row r, channel group g (64 channels, all inside C), output columns
// [j0, j1): 8-bit output (fp32 requantization), KH = 3, four accumulators of 16
// channels per pixel.
template <bool S, bool Small>
void compute_tile_q8(const DwQuadArgs& a, const int32_t* const* qrows, int64_t r, int64_t g, int64_t j0,
                     int64_t j1) {
  constexpr int KH = 3;
  const int64_t C = a.C, Cp = a.Cp, OW = a.OW;
  const int64_t left = C - g;
  const __mmask64 m = left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
  const __m512i zp16 = _mm512_set1_epi16(static_cast<int16_t>(a.zp_y));
  const __m512i lo8 = _mm512_set1_epi8(static_cast<char>(a.lo)), hi8 = _mm512_set1_epi8(static_cast<char>(a.hi));
  __m512i wv[KH][4], ct[4];
  __m512 sc[4];
  for (int k = 0; k < 4; ++k) {
    for (int kh = 0; kh < KH; ++kh) wv[kh][k] = _mm512_load_si512(a.wq + kh * Cp + g + 16 * k);
    ct[k] = _mm512_load_si512(a.colterm + g + 16 * k);
    const int64_t ck = left - 16 * k;  // the scales are C floats: mask the padding channels
    const __mmask16 mk = ck >= 16 ? static_cast<__mmask16>(0xFFFF) : ck <= 0 ? 0 : static_cast<__mmask16>((1u << ck) - 1);
    sc[k] = _mm512_maskz_loadu_ps(mk, a.scale + g + 16 * k);
  }
  uint8_t* o = static_cast<uint8_t*>(a.out) + (r * OW + j0) * C + g;
  for (int64_t j = j0; j < j1; ++j, o += C) {
    __m512i acc[4] = {ct[0], ct[1], ct[2], ct[3]};
    for (int kh = 0; kh < KH; ++kh) {
      const int32_t* qp = qrows[kh] + (j - j0) * 64;
      for (int k = 0; k < 4; ++k) acc[k] = _mm512_dpbusd_epi32(acc[k], _mm512_load_si512(qp + 16 * k), wv[kh][k]);
    }
    _mm512_mask_storeu_epi8(o, m, requant64<S, Small>(acc, sc, zp16, lo8, hi8));
  }
}

// The same for any KH and any output kind (int32 or fp32-requantized 8 bit), 16
// channels at a time.
void compute_tile(const DwQuadArgs& a, const int32_t* const* qrows, int64_t r, int64_t g, int64_t j0, int64_t j1) {
  constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const int64_t C = a.C, Cp = a.Cp, OW = a.OW, KH = a.KH;
  const __m512 flo = _mm512_set1_ps(static_cast<float>(a.lo - a.zp_y));
  const __m512 fhi = _mm512_set1_ps(static_cast<float>(a.hi - a.zp_y));
  const __m512i zp = _mm512_set1_epi32(a.zp_y);
  const bool i32 = a.out_kind == OutKind::kInt32;
  for (int64_t c0 = g; c0 < g + 64 && c0 < C; c0 += 16) {
    const __mmask16 m = C - c0 >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (C - c0)) - 1);
    const __m512i ct = _mm512_load_si512(a.colterm + c0);
    const __m512 sc = i32 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, a.scale + c0);
    for (int64_t j = j0; j < j1; ++j) {
      __m512i acc = ct;
      for (int64_t kh = 0; kh < KH; ++kh)
        acc = _mm512_dpbusd_epi32(acc, _mm512_load_si512(qrows[kh] + (j - j0) * 64 + (c0 - g)),
                                  _mm512_load_si512(a.wq + kh * Cp + c0));
      const int64_t off = (r * OW + j) * C + c0;
      if (i32) {
        _mm512_mask_storeu_epi32(static_cast<int32_t*>(a.out) + off, m, acc);
      } else {
        __m512 f = _mm512_mul_round_ps(_mm512_cvt_roundepi32_ps(acc, kRne), sc, kRne);
        f = _mm512_min_ps(_mm512_max_ps(f, flo), fhi);
        const __m128i b = _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvt_roundps_epi32(f, kRne), zp));
        _mm_mask_storeu_epi8(static_cast<uint8_t*>(a.out) + off, m, b);  // in [lo, hi]: exact
      }
    }
  }
}

void quad_rows(const DwQuadArgs& a, int64_t r0, int64_t r1) {
  const int64_t KH = a.KH;
  if (KH > kMaxRing) return;  // the operator never routes such kernels here
  constexpr size_t kTileInts = static_cast<size_t>(kTile) * 64;
  AlignedBuffer buf((static_cast<size_t>(KH) + 1) * kTileInts * sizeof(int32_t));
  int32_t* base = reinterpret_cast<int32_t*>(buf.data());
  int32_t* zatile = base + static_cast<size_t>(KH) * kTileInts;  // quads of za: any group, any columns
  const uint32_t zb = a.za_u;
  const __m512i zq = _mm512_set1_epi32(static_cast<int32_t>(zb | zb << 8 | zb << 16 | zb << 24));
  for (size_t i = 0; i < kTileInts; i += 16) _mm512_store_si512(zatile + i, zq);
  const bool q8 = a.out_kind != OutKind::kInt32 && KH == 3;
  bool small = q8;
  for (int64_t c = 0; small && c < a.C; ++c) small = a.scale[c] < 1.0f;
  const bool s8 = a.out_kind == OutKind::kInt8;
  void (*q8_tile)(const DwQuadArgs&, const int32_t* const*, int64_t, int64_t, int64_t, int64_t) =
      s8 ? (small ? compute_tile_q8<true, true> : compute_tile_q8<true, false>)
         : (small ? compute_tile_q8<false, true> : compute_tile_q8<false, false>);
  int64_t tag[kMaxRing];  // n * H + ih of the row held by each ring slot, -1: empty
  const int32_t* rows[kMaxRing];
  int64_t want[kMaxRing];
  // Channel group and column tile outermost, so that the ring of KH quad rows of one
  // (group, tile) stays in L1 while the task's output rows walk down the image.
  for (int64_t g = 0; g < a.C; g += 64) {
    for (int64_t j0 = 0; j0 < a.OW; j0 += kTile) {
      const int64_t j1 = j0 + kTile < a.OW ? j0 + kTile : a.OW;
      for (int64_t i = 0; i < KH; ++i) tag[i] = -1;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t n = r / a.OH, oh = r % a.OH;
        for (int64_t kh = 0; kh < KH; ++kh) {
          const int64_t ih = oh * a.stride_h - a.pad_top + kh * a.dil_h;
          want[kh] = ih >= 0 && ih < a.H ? n * a.H + ih : -1;
        }
        for (int64_t kh = 0; kh < KH; ++kh) {
          if (want[kh] < 0) {
            rows[kh] = zatile;
            continue;
          }
          int64_t slot = -1;
          for (int64_t i = 0; i < KH && slot < 0; ++i)
            if (tag[i] == want[kh]) slot = i;
          if (slot < 0) {  // a slot this output row does not need (one exists: KH slots, KH rows)
            for (int64_t i = 0; i < KH && slot < 0; ++i) {
              bool needed = false;
              for (int64_t j = 0; j < KH; ++j) needed = needed || tag[i] == want[j];
              if (!needed || tag[i] < 0) slot = i;
            }
            tag[slot] = want[kh];
            build_tile(a, a.x + want[kh] * a.W * a.C, g, j0, j1, base + static_cast<size_t>(slot) * kTileInts);
          }
          rows[kh] = base + static_cast<size_t>(slot) * kTileInts;
        }
        if (q8 && a.C - g >= 64)
          q8_tile(a, rows, r, g, j0, j1);
        else
          compute_tile(a, rows, r, g, j0, j1);
      }
    }
  }
}

}  // namespace

DwQuadRowsFn avx512vnni_dw_quad_rows() { return quad_rows; }

}  // namespace pyq
