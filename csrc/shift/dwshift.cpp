// Depthwise shift convolution operator (see dwshift.h and docs/semantics.md 12.4a):
// packing, validation, the static bound and lane choice, the per-thread rings of padded
// x - za rows, threading, and the portable int64 row kernel.
#include "shift/dwshift.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>

#include "common/threadpool.h"
#include "conv/dwconv.h"  // dw_output_size
#include "qgemm/epilogue.h"  // requant_store

namespace pyq {

DwShiftPacked::DwShiftPacked(const int8_t* signs, const int8_t* exponents, int T, int64_t OC, int64_t C, int64_t KH,
                             int64_t KW, ShiftRule rule)
    : T_(T), OC_(OC), C_(C), KH_(KH), KW_(KW), rule_(rule) {
  if (T < 1 || T > 3) throw std::invalid_argument("a shift weight has 1 to 3 terms, got T = " + std::to_string(T));
  if (OC <= 0 || C <= 0 || KH <= 0 || KW <= 0)
    throw std::invalid_argument("depthwise shift weights must have OC, C, KH, KW > 0");
  if (OC % C != 0)
    throw std::invalid_argument("the " + std::to_string(OC) + " output channels are not a multiple of C = " +
                                std::to_string(C) + " (depthwise: group = C)");
  if (KH > kDwShiftMaxTaps || KW > kDwShiftMaxTaps || KH * KW > kDwShiftMaxTaps)
    throw std::invalid_argument("depthwise shift kernel has more than 2^20 taps");
  if (OC > (int64_t{1} << 24)) throw std::invalid_argument("depthwise shift weights have too many channels");
  OCp_ = (OC + kDwShiftChannelPad - 1) / kDwShiftChannelPad * kDwShiftChannelPad;
  const int64_t taps = KH * KW;
  const int elo = rule == ShiftRule::kExact ? 0 : -31, ehi = 30;
  const size_t n = static_cast<size_t>(taps * T * OCp_);
  lc_.assign(n, 32);  // padded channels: off terms
  sm_.assign(n, 0);
  rc_.assign(n, 0);
  sg_.assign(n, 0);
  ex_.assign(n, 0);
  negcnt_.assign(static_cast<size_t>(OCp_), 0);
  hist_.assign(static_cast<size_t>(OC * 62), 0);
  for (int t = 0; t < T; ++t)
    for (int64_t oc = 0; oc < OC; ++oc)
      for (int64_t tap = 0; tap < taps; ++tap) {
        const int64_t src = (t * OC + oc) * taps + tap;
        const int s = signs[src], e = exponents[src];
        if (s < -1 || s > 1) throw std::invalid_argument("signs must be in {-1, 0, +1}");
        if (s == 0) continue;
        if (e < elo || e > ehi)
          throw std::invalid_argument("exponent " + std::to_string(e) + " is outside [" + std::to_string(elo) + ", " +
                                      std::to_string(ehi) + "] of the rule");
        const size_t d = static_cast<size_t>((tap * T + t) * OCp_ + oc);
        lc_[d] = e >= 0 ? e : 0;
        rc_[d] = e < 0 ? -e : 0;
        sm_[d] = s < 0 ? -1 : 0;
        sg_[d] = static_cast<int8_t>(s);
        ex_[d] = static_cast<int8_t>(e);
        negcnt_[static_cast<size_t>(oc)] += s < 0;
        ++hist_[static_cast<size_t>(oc * 62 + e + 31)];
        right_shifts_ = right_shifts_ || e < 0;
      }
  lc16_.assign(lc_.begin(), lc_.end());
  sm16_.assign(sm_.begin(), sm_.end());
  rc16_.assign(rc_.begin(), rc_.end());
}

int64_t DwShiftPacked::channel_bound(int64_t oc, int64_t max_a) const {
  __int128 tot = 0;
  for (int e = -31; e <= 30; ++e) {
    const int32_t cnt = hist_[static_cast<size_t>(oc * 62 + e + 31)];
    if (!cnt) continue;
    const __int128 one = e >= 0 ? static_cast<__int128>(max_a) << e : -((-static_cast<__int128>(max_a)) >> -e);
    tot += one * cnt;  // ceil(max_a / 2^-e) for e < 0
  }
  return tot > std::numeric_limits<int64_t>::max() ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(tot);
}

int64_t DwShiftPacked::tap_bound(int64_t tap, int64_t oc, int64_t max_a) const {
  int64_t tot = 0;  // T <= 3 terms, max_a <= 2^31, e <= 30: below 2^63
  for (int t = 0; t < T_; ++t) {
    const size_t d = static_cast<size_t>((tap * T_ + t) * OCp_ + oc);
    if (!sg_[d]) continue;
    const int e = ex_[d];
    tot += (e >= 0 ? max_a << e : -((-max_a) >> -e)) + (sg_[d] < 0);
  }
  return tot;
}

size_t DwShiftPacked::packed_bytes() const {
  return (lc_.size() + sm_.size() + rc_.size() + negcnt_.size()) * 4 + (lc16_.size() * 3) * 2 + sg_.size() * 2;
}

void dwshift_row_scalar(const DwShiftRows& p, const void* const* rows, int64_t oh) {
  const int64_t OCp = p.OCp, OC = p.OC, T = p.T;
  std::vector<int64_t> acc(static_cast<size_t>(OC));
  std::vector<int32_t> fin(static_cast<size_t>(OC));
  for (int64_t ow = 0; ow < p.OW; ++ow) {
    std::fill(acc.begin(), acc.end(), 0);
    for (int64_t kh = 0; kh < p.KH; ++kh)
      for (int64_t kw = 0; kw < p.KW; ++kw) {
        const int32_t* xp = static_cast<const int32_t*>(rows[kh]) + (ow * p.sw + kw * p.dw) * OCp;
        const int64_t tap = kh * p.KW + kw;
        for (int64_t t = 0; t < T; ++t) {
          const int8_t* sg = p.w.sg + (tap * T + t) * OCp;
          const int8_t* ex = p.w.ex + (tap * T + t) * OCp;
          for (int64_t oc = 0; oc < OC; ++oc) {
            if (!sg[oc]) continue;
            const int64_t x = xp[oc];
            const int e = ex[oc];
            const int64_t v = e >= 0 ? x * (int64_t{1} << e) : (x >> -e);  // arithmetic: floor (section 12.1)
            acc[static_cast<size_t>(oc)] += sg[oc] > 0 ? v : -v;
          }
        }
      }
    const int64_t at = (oh * p.OW + ow) * OC;
    for (int64_t oc = 0; oc < OC; ++oc) {
      int64_t r = acc[static_cast<size_t>(oc)] + (p.bias ? p.bias[oc] : 0);
      fin[static_cast<size_t>(oc)] = static_cast<int32_t>(std::min<int64_t>(std::max<int64_t>(r, p.lo), p.hi));
    }
    if (p.epi.out_kind == OutKind::kInt32)
      std::memcpy(static_cast<int32_t*>(p.out) + at, fin.data(), static_cast<size_t>(OC) * 4);
    else if (p.epi.out_kind == OutKind::kUint8)
      requant_store(p.epi, fin.data(), 0, OC, static_cast<uint8_t*>(p.out) + at);
    else
      requant_store(p.epi, fin.data(), 0, OC, static_cast<int8_t*>(p.out) + at);
  }
}

namespace {

struct Plan {
  DwShiftLanes lanes = DwShiftLanes::kWide;
  DwShiftRowFn fn = dwshift_row_scalar;
  const char* path = "scalar";
  bool epi32 = false;
  int64_t OH = 0, OW = 0;
  std::vector<int64_t> blk_end;  // int16 blocks: tap index ending each block, then a sentinel
};

// Cuts the taps greedily into blocks whose partial bound plus negative-term count fits
// int16 for every channel (section 12.3); false when one tap alone does not fit or the
// blocks average fewer than 2 taps (widening then costs more than int16 lanes save).
bool int16_blocks(const DwShiftPacked& w, int64_t max_a, std::vector<int64_t>* ends) {
  const int64_t taps = w.taps(), OC = w.OC();
  std::vector<int64_t> part(static_cast<size_t>(OC), 0), tb(static_cast<size_t>(OC));
  ends->clear();
  for (int64_t tap = 0; tap < taps; ++tap) {
    bool fits = true;
    for (int64_t oc = 0; oc < OC; ++oc) {
      tb[static_cast<size_t>(oc)] = w.tap_bound(tap, oc, max_a);
      if (tb[static_cast<size_t>(oc)] > INT16_MAX) return false;
      fits = fits && part[static_cast<size_t>(oc)] + tb[static_cast<size_t>(oc)] <= INT16_MAX;
    }
    if (!fits) {
      ends->push_back(tap);
      std::fill(part.begin(), part.end(), 0);
    }
    for (int64_t oc = 0; oc < OC; ++oc) part[static_cast<size_t>(oc)] += tb[static_cast<size_t>(oc)];
  }
  ends->push_back(taps);
  if (taps < 2 * static_cast<int64_t>(ends->size())) return false;
  ends->push_back(taps + 1);  // sentinel: never reached
  return true;
}

// Checks the arguments and picks the lanes and the kernel (section 12.3).
Plan make_plan(const DwShiftArgs& a) {
  if (!a.w) throw std::invalid_argument("missing weights");
  const DwShiftPacked& w = *a.w;
  if (a.N < 0 || a.H < 1 || a.W < 1) throw std::invalid_argument("x must have N >= 0 and H, W >= 1");
  if (a.C != w.C())
    throw std::invalid_argument("x has C=" + std::to_string(a.C) + " channels but the depthwise shift weights have C=" +
                                std::to_string(w.C()));
  if (a.acc_bits < 8 || a.acc_bits > 32) throw std::invalid_argument("acc_bits must be in [8, 32]");
  const int32_t xlo = a.x_signed ? -128 : 0, xhi = a.x_signed ? 127 : 255;
  if (a.x_zero_point < xlo || a.x_zero_point > xhi)
    throw std::invalid_argument("x_zero_point out of the range of x's dtype");
  if (w.rule() == ShiftRule::kDeepShift && (!a.x_signed || a.x_zero_point != 0))
    throw std::invalid_argument("rule 'deepshift' needs int8 activations with zero point 0");
  Plan pl;
  pl.OH = dw_output_size(a.H, w.KH(), a.stride_h, a.pad_top, a.pad_bottom, a.dil_h, "H");
  pl.OW = dw_output_size(a.W, w.KW(), a.stride_w, a.pad_left, a.pad_right, a.dil_w, "W");
  const int64_t max_a = std::max<int64_t>(a.x_zero_point - xlo, xhi - a.x_zero_point);
  int64_t worst = 0;  // max over channels of bound + negative-term count
  pl.epi32 = true;
  for (int64_t oc = 0; oc < w.OC(); ++oc) {
    const int64_t b = w.channel_bound(oc, max_a);
    worst = std::max(worst, b + w.negcnt()[static_cast<size_t>(oc)]);
    const int64_t bb = a.bias ? (a.bias[oc] < 0 ? -int64_t{a.bias[oc]} : int64_t{a.bias[oc]}) : 0;
    if (b + bb > INT32_MAX) pl.epi32 = false;
  }
#if defined(PYQ_X86)
  const KernelPath path = active_path();
  if ((path == KernelPath::kAvx512bw || path == KernelPath::kAvx512vnni) && worst <= INT32_MAX) {
    pl.path = "avx512bw";
    if (worst <= INT16_MAX) {
      pl.lanes = DwShiftLanes::kInt16;
      pl.fn = dwshift_row_avx512bw_i16;
    } else if (int16_blocks(w, max_a, &pl.blk_end)) {
      pl.lanes = DwShiftLanes::kInt16Blocks;
      pl.fn = dwshift_row_avx512bw_i16_blocks;
    } else {
      pl.lanes = DwShiftLanes::kInt32;
      pl.fn = dwshift_row_avx512bw_i32;
    }
  } else if ((path == KernelPath::kAvx2 || path == KernelPath::kAvxVnni) && worst <= INT32_MAX) {
    pl.path = "avx2";
    pl.lanes = DwShiftLanes::kInt32;
    pl.fn = dwshift_row_avx2_i32;
  }
#else
  (void)worst;
#endif
  return pl;
}

// A per-thread scratch buffer, 64-byte aligned, grown on demand (the ring of padded rows).
struct Scratch {
  void* p = nullptr;
  size_t n = 0;
  ~Scratch() { std::free(p); }
  void* get(size_t bytes) {
    if (bytes > n) {
      std::free(p);
      p = nullptr;
      n = 0;
      const size_t r = (bytes + 63) / 64 * 64;
      p = std::aligned_alloc(64, r);
      if (!p) throw std::bad_alloc();
      n = r;
    }
    return p;
  }
};

// Padded input row r of image n into dst ([Wp][OCp]): x - za, channel oc = input
// channel oc / m, 0 in the padding (pixels and channels).
template <typename L>
void fill_row(const DwShiftArgs& a, int64_t n, int64_t Wp, int64_t OCp, int64_t OC, int64_t r, L* dst) {
  const int64_t m = OC / a.C, C = a.C;
  const int32_t za = a.x_zero_point;
  const int64_t ih = r - a.pad_top;
  if (ih < 0 || ih >= a.H) {
    std::memset(dst, 0, static_cast<size_t>(Wp * OCp) * sizeof(L));
    return;
  }
  std::memset(dst, 0, static_cast<size_t>(a.pad_left * OCp) * sizeof(L));
  std::memset(dst + (a.pad_left + a.W) * OCp, 0, static_cast<size_t>((Wp - a.pad_left - a.W) * OCp) * sizeof(L));
  for (int64_t iw = 0; iw < a.W; ++iw) {
    L* d = dst + (a.pad_left + iw) * OCp;
    const uint8_t* s = a.x + ((n * a.H + ih) * a.W + iw) * C;
    if (a.x_signed) {
      const int8_t* ss = reinterpret_cast<const int8_t*>(s);
      if (m == 1)
        for (int64_t c = 0; c < C; ++c) d[c] = static_cast<L>(ss[c] - za);
      else
        for (int64_t oc = 0; oc < OC; ++oc) d[oc] = static_cast<L>(ss[oc / m] - za);
    } else {
      if (m == 1)
        for (int64_t c = 0; c < C; ++c) d[c] = static_cast<L>(s[c] - za);
      else
        for (int64_t oc = 0; oc < OC; ++oc) d[oc] = static_cast<L>(s[oc / m] - za);
    }
    for (int64_t oc = OC; oc < OCp; ++oc) d[oc] = 0;
  }
}

// Output rows [r0, r1) (r = n * OH + oh) on the calling thread: each padded input row
// they read is converted once into the thread's ring of span_h rows (the rows of one
// output row are the last span_h converted), then the row kernel runs.
template <typename L>
void run_rows(const DwShiftArgs& a, const DwShiftRows& p, const Plan& pl, int64_t r0, int64_t r1) {
  thread_local Scratch ring;
  const int64_t span = (p.KH - 1) * p.dh + 1, rowlen = p.Wp * p.OCp;
  L* buf = static_cast<L*>(ring.get(static_cast<size_t>(span * rowlen) * sizeof(L)));
  std::vector<const void*> rows(static_cast<size_t>(p.KH));
  const int64_t out_image = pl.OH * pl.OW * p.OC * (a.out_kind == OutKind::kInt32 ? 4 : 1);
  DwShiftRows q = p;
  int64_t cur = -1, next = 0;  // the image, and the next padded row to convert
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / pl.OH, oh = r % pl.OH, base = oh * p.sh;
    if (n != cur) {
      cur = n;
      next = base;
      q.out = static_cast<uint8_t*>(a.out) + n * out_image;
    }
    next = std::max(next, base);
    for (; next < base + span; ++next) fill_row<L>(a, n, p.Wp, p.OCp, p.OC, next, buf + (next % span) * rowlen);
    for (int64_t kh = 0; kh < p.KH; ++kh) rows[static_cast<size_t>(kh)] = buf + ((base + kh * p.dh) % span) * rowlen;
    pl.fn(q, rows.data(), oh);
  }
}

const char* lanes_name(DwShiftLanes l) {
  return l == DwShiftLanes::kInt16         ? "int16"
         : l == DwShiftLanes::kInt16Blocks ? "int16blocks"
         : l == DwShiftLanes::kInt32       ? "int32"
                                           : "int64";
}

// Below about this many term operations per thread a second thread costs more than it saves.
constexpr int64_t kMinOpsPerThread = int64_t{1} << 17;

}  // namespace

std::string dwshift_kernel_name(const DwShiftArgs& a) {
  const Plan pl = make_plan(a);
  return std::string("dwshift_") + pl.path + ":" + lanes_name(pl.lanes);
}

void dwshift_conv(const DwShiftArgs& a) {
  const Plan pl = make_plan(a);
  const DwShiftPacked& w = *a.w;
  if (!a.out) throw std::invalid_argument("missing output");
  if (a.N == 0) return;
  const int64_t OC = w.OC(), OCp = w.padded_channels();
  const int64_t Wp = a.W + a.pad_left + a.pad_right, span = (w.KH() - 1) * a.dil_h + 1;
  if (Wp > (int64_t{1} << 34) / (OCp * 4) / span)
    throw std::invalid_argument("the padded input rows are too large for the depthwise shift kernel");

  // epilogue constants: the negative-term count (added back) and count + bias (int32 epilogue)
  std::vector<int32_t> corr(static_cast<size_t>(OCp), 0), addc(static_cast<size_t>(OCp), 0);
  for (int64_t oc = 0; oc < OC; ++oc) {
    corr[static_cast<size_t>(oc)] = w.negcnt()[static_cast<size_t>(oc)];
    const uint32_t b = a.bias ? static_cast<uint32_t>(a.bias[oc]) : 0u;
    addc[static_cast<size_t>(oc)] = static_cast<int32_t>(static_cast<uint32_t>(corr[static_cast<size_t>(oc)]) + b);
  }
  DwShiftRows p;
  p.Wp = Wp;
  p.OCp = OCp;
  p.OC = OC;
  p.OW = pl.OW;
  p.KH = w.KH();
  p.KW = w.KW();
  p.sh = a.stride_h;
  p.sw = a.stride_w;
  p.dh = a.dil_h;
  p.dw = a.dil_w;
  p.T = w.T();
  p.right_shifts = w.right_shifts();
  p.w = w.terms();
  p.blk_end = pl.blk_end.empty() ? nullptr : pl.blk_end.data();
  p.corr = corr.data();
  p.addc = addc.data();
  p.bias = a.bias;
  p.epi32 = pl.epi32;
  p.lo = a.acc_bits == 32 ? INT32_MIN : -(int32_t{1} << (a.acc_bits - 1));
  p.hi = a.acc_bits == 32 ? INT32_MAX : (int32_t{1} << (a.acc_bits - 1)) - 1;
  p.epi.out_kind = a.out_kind;
  if (a.out_kind != OutKind::kInt32) {
    if (!a.requant) throw std::invalid_argument("8-bit output needs requantization parameters");
    const RequantParams& rq = *a.requant;
    p.epi.mode = rq.mode;
    p.epi.scale = rq.scale.empty() ? nullptr : rq.scale.data();
    p.epi.multiplier = rq.multiplier.empty() ? nullptr : rq.multiplier.data();
    p.epi.shift = rq.shift.empty() ? nullptr : rq.shift.data();
    p.epi.zp_y = a.zp_y;
    p.epi.lo = a.lo;
    p.epi.hi = a.hi;
  }

  const int64_t row_ops = pl.OW * OCp * w.taps() * w.T();
  const int64_t grain = std::max<int64_t>(1, kMinOpsPerThread / std::max<int64_t>(1, row_ops));
  parallel_ranges(a.N * pl.OH, grain, [&](int64_t r0, int64_t r1) {
    if (pl.lanes == DwShiftLanes::kInt16 || pl.lanes == DwShiftLanes::kInt16Blocks)
      run_rows<int16_t>(a, p, pl, r0, r1);
    else
      run_rows<int32_t>(a, p, pl, r0, r1);
  });
}

}  // namespace pyq
