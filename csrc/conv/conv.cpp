#include "conv/conv.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/threadpool.h"

namespace pyq {

PackedConvWeights::PackedConvWeights(const uint8_t* w, bool w_signed, int64_t OC, int64_t Cg, int64_t KH,
                                     int64_t KW, int64_t groups, const int32_t* zero_points, int64_t n_zero_points)
    : OC_(OC), Cg_(Cg), KH_(KH), KW_(KW), groups_(groups), signed_(w_signed) {
  if (OC <= 0 || Cg <= 0 || KH <= 0 || KW <= 0 || groups <= 0)
    throw std::invalid_argument("conv weights must have positive dimensions and groups");
  if (OC % groups != 0) throw std::invalid_argument("OC must be divisible by group");
  if (n_zero_points != 1 && n_zero_points != OC)
    throw std::invalid_argument("w_zero_point must be a scalar or have OC entries");
  const int64_t OCg = OC / groups, K = KH * KW * Cg;
  std::vector<uint8_t> b(static_cast<size_t>(K * OCg));
  for (int64_t g = 0; g < groups; ++g) {
    // B[k][n] = w[g*OCg + n, c, kh, kw] with k = (kh*KW + kw)*Cg + c
    for (int64_t n = 0; n < OCg; ++n)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t kh = 0; kh < KH; ++kh)
          for (int64_t kw = 0; kw < KW; ++kw)
            b[static_cast<size_t>(((kh * KW + kw) * Cg + c) * OCg + n)] =
                w[(((g * OCg + n) * Cg + c) * KH + kh) * KW + kw];
    const int32_t* zp = n_zero_points == 1 ? zero_points : zero_points + g * OCg;
    packs_.push_back(
        std::make_unique<PackedWeights>(b.data(), w_signed, K, OCg, OCg, zp, n_zero_points == 1 ? 1 : OCg));
  }
  if (groups > 1 && Cg == 1 && OCg == 1)
    dw_ = std::make_unique<DwPackedWeights>(w, w_signed, OC, KH, KW, zero_points, n_zero_points);
}

size_t PackedConvWeights::packed_bytes() const {
  size_t total = 0;
  for (const auto& p : packs_) total += p->packed_bytes();
  return total;
}

void conv_output_hw(const ConvArgs& a, int64_t* OH, int64_t* OW) {
  const PackedConvWeights& w = *a.w;
  if (a.sh < 1 || a.sw < 1 || a.dh < 1 || a.dw < 1) throw std::invalid_argument("strides and dilations must be >= 1");
  if (a.pt < 0 || a.pl < 0 || a.pb < 0 || a.pr < 0) throw std::invalid_argument("pads must be >= 0");
  const int64_t eh = (w.KH() - 1) * a.dh + 1, ew = (w.KW() - 1) * a.dw + 1;
  const int64_t ph = a.H + a.pt + a.pb, pw = a.W + a.pl + a.pr;
  if (ph < eh || pw < ew)
    throw std::invalid_argument("the dilated kernel (" + std::to_string(eh) + "x" + std::to_string(ew) +
                                ") is larger than the padded input (" + std::to_string(ph) + "x" +
                                std::to_string(pw) + ")");
  *OH = (ph - eh) / a.sh + 1;
  *OW = (pw - ew) / a.sw + 1;
}

namespace {

constexpr int64_t kMinMacsPerThread = int64_t{1} << 19;
constexpr int64_t kMaxBlockRows = 96;
constexpr int64_t kBlockBytes = 192 * 1024;  // gathered rows per block: well inside L2

struct Geometry {
  int64_t N, H, W, C, OH, OW, KH, KW, Cg, K, sh, sw, dh, dw, pt, pl;
  uint8_t pad_byte;
};

// n bytes from s to d (not overlapping), inlined: 16-byte moves (the last one
// overlapping the previous) instead of a memcpy call per kernel tap, which
// dominated the gather of small-channel layers (a 48-byte run per 3x3 kernel row).
inline void copy_run(uint8_t* d, const uint8_t* s, int64_t n) {
  if (n >= 16) {
    if (n > 256) {
      std::memcpy(d, s, static_cast<size_t>(n));
      return;
    }
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) std::memcpy(d + i, s + i, 16);
    if (i < n) std::memcpy(d + n - 16, s + n - 16, 16);
  } else if (n >= 8) {
    std::memcpy(d, s, 8);
    std::memcpy(d + n - 8, s + n - 8, 8);
  } else if (n >= 4) {
    std::memcpy(d, s, 4);
    std::memcpy(d + n - 4, s + n - 4, 4);
  } else {
    for (int64_t i = 0; i < n; ++i) d[i] = s[i];
  }
}

// Output columns [lo, hi) whose kernel row (KW taps, dilation dw) lies inside
// the input: iw0 = ow*sw - pl >= 0 and iw0 + (KW-1)*dw < W (empty when the
// dilated kernel is wider than the input).
void inside_columns(const Geometry& G, int64_t* lo, int64_t* hi) {
  const int64_t last = G.W - (G.KW - 1) * G.dw - 1 + G.pl;  // largest ow*sw allowed
  *lo = (G.pl + G.sw - 1) / G.sw;
  *hi = last < 0 ? 0 : last / G.sw + 1;
}

// Walks output rows [q0, q0+rows) as segments of one output row each:
// fn(r, n, oh, ow, cnt) for the cnt pixels starting at block row r.
template <class Fn>
void for_each_segment(const Geometry& G, int64_t q0, int64_t rows, Fn&& fn) {
  const int64_t ohw = G.OH * G.OW;
  int64_t n = q0 / ohw, rem = q0 % ohw;
  int64_t oh = rem / G.OW, ow = rem % G.OW;
  for (int64_t r = 0; r < rows;) {
    const int64_t cnt = std::min(rows - r, G.OW - ow);
    fn(r, n, oh, ow, cnt);
    r += cnt;
    ow += cnt;
    if (ow == G.OW) {
      ow = 0;
      if (++oh == G.OH) {
        oh = 0;
        ++n;
      }
    }
  }
}

// Rows [q0, q0+rows) of the implicit im2col matrix of group g, K bytes each.
// pad: at least KW*Cg bytes of the padding byte. Per output-row segment and
// kernel row, so interior pixels are a tight loop of copies.
void gather_rows(const Geometry& G, const uint8_t* x, int64_t g, int64_t q0, int64_t rows, uint8_t* dst,
                 const uint8_t* pad) {
  const int64_t tap_run = G.KW * G.Cg;
  const bool contiguous_taps = G.dw == 1 && G.Cg == G.C;  // a kernel row of one pixel is one run of x
  int64_t in_lo, in_hi;
  inside_columns(G, &in_lo, &in_hi);
  if (!contiguous_taps) in_lo = in_hi = 0;  // every pixel tap by tap
  for_each_segment(G, q0, rows, [&](int64_t r, int64_t n, int64_t oh, int64_t ow, int64_t cnt) {
    const uint8_t* xn = x + n * G.H * G.W * G.C + g * G.Cg;
    const int64_t lo = std::min(std::max(in_lo, ow), ow + cnt), hi = std::max(std::min(in_hi, ow + cnt), lo);
    for (int64_t kh = 0; kh < G.KH; ++kh) {
      uint8_t* d0 = dst + r * G.K + kh * tap_run;
      const int64_t ih = oh * G.sh - G.pt + kh * G.dh;
      if (ih < 0 || ih >= G.H) {
        for (int64_t j = 0; j < cnt; ++j) copy_run(d0 + j * G.K, pad, tap_run);
        continue;
      }
      const uint8_t* xrow = xn + ih * G.W * G.C;
      const uint8_t* src = xrow + (lo * G.sw - G.pl) * G.C;
      const int64_t step = G.sw * G.C;
      for (int64_t c = lo; c < hi; ++c, src += step) copy_run(d0 + (c - ow) * G.K, src, tap_run);
      for (int64_t c = ow; c < ow + cnt; ++c) {
        if (c == lo) c = hi;  // interior done above
        if (c >= ow + cnt) break;
        uint8_t* d = d0 + (c - ow) * G.K;
        const int64_t iw0 = c * G.sw - G.pl;
        for (int64_t kw = 0; kw < G.KW; ++kw, d += G.Cg) {
          const int64_t iw = iw0 + kw * G.dw;
          copy_run(d, (iw < 0 || iw >= G.W) ? pad : xrow + iw * G.C, G.Cg);
        }
      }
    }
  });
}

// Indirect rows (groups = 1, dilation 1 along W): ptrs[r*KH + kh] is where the
// KW*C bytes of kernel row kh of output row q0+r start: in x itself when the
// whole run lies inside the input, the pad buffer when the input row is in the
// top or bottom padding, else a copy gathered into scratch (left/right edges).
// Built per output-row segment and kernel row, so an interior pixel costs one
// pointer add and store per kernel row (the per-pixel index arithmetic was a
// third of a 16-channel 3x3 layer's time).
void index_rows(const Geometry& G, const uint8_t* x, int64_t q0, int64_t rows, uint8_t* scratch,
                const uint8_t* pad, const uint8_t** ptrs) {
  const int64_t tap_run = G.KW * G.C;
  int64_t in_lo, in_hi;
  inside_columns(G, &in_lo, &in_hi);
  for_each_segment(G, q0, rows, [&](int64_t r, int64_t n, int64_t oh, int64_t ow, int64_t cnt) {
    const uint8_t* xn = x + n * G.H * G.W * G.C;
    const int64_t lo = std::min(std::max(in_lo, ow), ow + cnt), hi = std::max(std::min(in_hi, ow + cnt), lo);
    for (int64_t kh = 0; kh < G.KH; ++kh) {
      const uint8_t** dst = ptrs + r * G.KH + kh;
      const int64_t ih = oh * G.sh - G.pt + kh * G.dh;
      if (ih < 0 || ih >= G.H) {
        for (int64_t j = 0; j < cnt; ++j) dst[j * G.KH] = pad;
        continue;
      }
      const uint8_t* xrow = xn + ih * G.W * G.C;
      const uint8_t* src = xrow + (lo * G.sw - G.pl) * G.C;
      const int64_t step = G.sw * G.C;
      for (int64_t c = lo; c < hi; ++c, src += step) dst[(c - ow) * G.KH] = src;
      for (int64_t c = ow; c < ow + cnt; ++c) {
        if (c == lo) c = hi;  // interior done above
        if (c >= ow + cnt) break;
        uint8_t* d = scratch;
        scratch += tap_run;
        dst[(c - ow) * G.KH] = d;
        const int64_t iw0 = c * G.sw - G.pl;
        for (int64_t kw = 0; kw < G.KW; ++kw, d += G.C) {
          const int64_t iw = iw0 + kw;
          copy_run(d, (iw < 0 || iw >= G.W) ? pad : xrow + iw * G.C, G.C);
        }
      }
    }
  });
}

// rowsum[r] = sum of the uint8-domain bytes of indirect row r (for weight zero points).
void indirect_row_sums(const uint8_t* const* ptrs, int64_t rows, int64_t segs, int64_t seg, bool a_signed,
                       int32_t* rowsum) {
  for (int64_t r = 0; r < rows; ++r) {
    uint32_t sum = 0;
    for (int64_t s = 0; s < segs; ++s) {
      int32_t part = 0;
      activation_row_sums(ptrs[r * segs + s], 1, seg, seg, a_signed, &part);
      sum += static_cast<uint32_t>(part);
    }
    rowsum[r] = static_cast<int32_t>(sum);
  }
}

std::atomic<bool> g_indirect_enabled{true};

size_t out_elem_size(OutKind k) { return k == OutKind::kInt32 ? 4 : 1; }

}  // namespace

void set_conv_indirect_enabled(bool on) { g_indirect_enabled.store(on); }

void qconv(const ConvArgs& a) {
  const PackedConvWeights& w = *a.w;
  const int64_t groups = w.groups(), Cg = w.Cg(), OC = w.OC(), OCg = OC / groups;
  if (a.C != Cg * groups)
    throw std::invalid_argument("x has " + std::to_string(a.C) + " channels but the weights expect " +
                                std::to_string(Cg * groups));
  if (a.N < 0 || a.H <= 0 || a.W <= 0) throw std::invalid_argument("x must have positive spatial dimensions");
  int64_t OH, OW;
  conv_output_hw(a, &OH, &OW);
  const int64_t P = a.N * OH * OW;
  if (P == 0) return;
  const int64_t K = w.KH() * w.KW() * Cg;
  const GemmKernel* kern = gemm_kernel_for(active_path());

  // 1x1, stride 1, no padding: x itself is the GEMM's A, [N*H*W, C] (dilation is irrelevant).
  const bool direct = w.KH() == 1 && w.KW() == 1 && a.sh == 1 && a.sw == 1 && a.pt == 0 && a.pl == 0 &&
                      a.pb == 0 && a.pr == 0;
  const bool depthwise = groups > 1 && Cg == 1;
  if (depthwise && w.depthwise()) {
    // groups = C with one output per group: the dedicated kernel (csrc/conv/dwconv.*)
    // vectorizes over channels; a GEMM per group would have K = KH*KW and N = 1.
    DwArgs d{a.x,        a.x_signed,  a.N,    a.H,        a.W,          a.C,    a.x_zero_point, w.depthwise(),
             a.bias,     a.sh,        a.sw,   a.pt,       a.pl,         a.pb,   a.pr,           a.dh,
             a.dw,       a.out_kind,  a.out,  a.requant,  a.zp_y,       a.lo,   a.hi};
    dwconv(d);
    return;
  }

  // Per-group GEMM problems: zero points folded exactly as qgemm() does.
  std::vector<int32_t> colterm(static_cast<size_t>(OC));
  std::vector<GemmProblem> base(static_cast<size_t>(groups));
  bool any_zw = false;
  for (int64_t g = 0; g < groups; ++g) {
    const PackedWeights& pw = w.group(g);
    fold_zero_points(pw, a.x_zero_point, a.x_signed, a.bias ? a.bias + g * OCg : nullptr, 0,
                     colterm.data() + g * OCg);
    GemmProblem& p = base[static_cast<size_t>(g)];
    p.a_xor = a.x_signed ? 0x80808080u : 0u;
    p.N = OCg;
    p.K = K;
    p.packed = pw.packed_for(kern);
    p.colterm = colterm.data() + g * OCg;
    p.zw = pw.any_zw() ? pw.zw().data() : nullptr;
    any_zw = any_zw || pw.any_zw();
    p.out_kind = a.out_kind;
    p.ldc = OC;
    if (a.requant) {
      const RequantParams& rq = *a.requant;
      p.mode = rq.mode;
      if (!rq.scale.empty()) p.scale = rq.scale.data() + g * OCg;
      if (!rq.multiplier.empty()) p.multiplier = rq.multiplier.data() + g * OCg;
      if (!rq.shift.empty()) p.shift = rq.shift.data() + g * OCg;
    }
    p.zp_y = a.zp_y;
    p.lo = a.lo;
    p.hi = a.hi;
  }

  const Geometry geo{a.N, a.H, a.W, a.C, OH, OW, w.KH(), w.KW(), Cg, K, a.sh, a.sw, a.dh, a.dw, a.pt, a.pl,
                     static_cast<uint8_t>(a.x_zero_point & 0xFF)};
  // Indirect A (no gathered copy of interior rows) where the kernel has it and
  // every kernel row of a pixel is one run of x whose length is whole K groups.
  const GemmComputeFn ind = direct || groups != 1 || a.dw != 1 || (w.KW() * Cg) % 4 != 0 ||
                                    !g_indirect_enabled.load(std::memory_order_relaxed)
                                ? nullptr
                                : indirect_compute_for(kern);
  const int64_t mr = kern->mr;
  int64_t mb = std::min<int64_t>(kMaxBlockRows, kBlockBytes / K);
  mb = std::max<int64_t>(mr, mb / mr * mr);
  const int64_t panels = (OCg + kern->nr - 1) / kern->nr;
  const size_t esize = out_elem_size(a.out_kind);

  int nthreads = get_num_threads();
  const int64_t macs = P * OC * K;
  nthreads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nthreads, macs / kMinMacsPerThread)));
  // Work units: (group, pixel chunk), one task each: with few groups, chunks of
  // the output pixels of every group; with many groups, whole groups.
  // About 4 tasks per thread: the pool gives each thread its own share first and
  // lets the others take over what a late (descheduled or still waking) thread
  // has not started, so small layers do not fall back to one thread.
  const int64_t chunks = nthreads == 1 ? 1 : (groups >= 4 * nthreads ? 1 : (4 * nthreads + groups - 1) / groups);
  const int64_t units = groups * chunks;
  const int64_t T = units;
  auto chunk_start = [&](int64_t c) { return c == chunks ? P : std::min(P, (P * c / chunks + mr / 2) / mr * mr); };

  parallel_for(static_cast<int>(T), nthreads, [&](int t) {
    thread_local std::vector<uint8_t> buf;
    thread_local std::vector<int32_t> rowsum;
    thread_local std::vector<uint8_t> pad;
    if (!direct && (pad.size() < static_cast<size_t>(K) || pad[0] != geo.pad_byte))
      pad.assign(static_cast<size_t>(K), geo.pad_byte);
    thread_local std::vector<const uint8_t*> ptrs;
    if (!direct && buf.size() < static_cast<size_t>(mb * K)) buf.resize(static_cast<size_t>(mb * K));
    if (ind && ptrs.size() < static_cast<size_t>(mb * w.KH())) ptrs.resize(static_cast<size_t>(mb * w.KH()));
    if (any_zw && rowsum.size() < static_cast<size_t>(mb)) rowsum.resize(static_cast<size_t>(mb));
    const int64_t u0 = units * t / T, u1 = units * (t + 1) / T;
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t g = u / chunks, c = u % chunks;
      const int64_t q_end = chunk_start(c + 1);
      for (int64_t q0 = chunk_start(c); q0 < q_end; q0 += mb) {
        const int64_t rows = std::min(mb, q_end - q0);
        GemmProblem p = base[static_cast<size_t>(g)];
        if (direct) {
          p.a = a.x + q0 * a.C + g * Cg;
          p.lda = a.C;
        } else if (ind) {
          index_rows(geo, a.x, q0, rows, buf.data(), pad.data(), ptrs.data());
          p.a_ptrs = ptrs.data();
          p.a_segs = w.KH();
          p.a_seg = w.KW() * Cg;
        } else {
          gather_rows(geo, a.x, g, q0, rows, buf.data(), pad.data());
          p.a = buf.data();
          p.lda = K;
        }
        if (p.zw && ind) {
          indirect_row_sums(p.a_ptrs, rows, p.a_segs, p.a_seg, a.x_signed, rowsum.data());
          p.rowsum = rowsum.data();
        } else if (p.zw) {
          activation_row_sums(p.a, rows, K, p.lda, a.x_signed, rowsum.data());
          p.rowsum = rowsum.data();
        }
        p.M = rows;
        p.out = static_cast<uint8_t*>(a.out) + (q0 * OC + g * OCg) * static_cast<int64_t>(esize);
        (ind ? ind : kern->compute)(p, 0, rows, 0, panels);
      }
    }
  });
}

}  // namespace pyq
