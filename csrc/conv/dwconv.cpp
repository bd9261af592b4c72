// Depthwise convolution operator: weight packing, size validation, zero-point
// folding, the indirection buffer and threading (see dwconv.h for the math).
#include "conv/dwconv.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/threadpool.h"

namespace pyq {

namespace {
std::atomic<bool> g_dw_quad_enabled{true};
}  // namespace

void set_dw_quad_enabled(bool on) { g_dw_quad_enabled.store(on); }
bool dw_quad_enabled() { return g_dw_quad_enabled.load(); }

bool dw_uses_quad_kernel(const DwPackedWeights& w, int64_t dil_w, OutKind out_kind, RequantMode mode) {
#if defined(PYQ_X86)
  return dw_quad_enabled() && active_path() == KernelPath::kAvx512vnni && w.packed_quads() && dil_w == 1 &&
         w.KH() <= 16 && (out_kind == OutKind::kInt32 || mode == RequantMode::kFp32);
#else
  (void)w, (void)dil_w, (void)out_kind, (void)mode;
  return false;
#endif
}

const DwKernel* dw_kernel_for(KernelPath p) {
  switch (p) {
#if defined(PYQ_X86)
    case KernelPath::kAvx512vnni:  // VNNI needs a reduction axis; depthwise has none
    case KernelPath::kAvx512bw: return avx512bw_dw_kernel();
    case KernelPath::kAvxVnni:
    case KernelPath::kAvx2: return avx2_dw_kernel();
#endif
    default: return scalar_dw_kernel();
  }
}

DwPackedWeights::DwPackedWeights(const uint8_t* w, bool w_signed, int64_t C, int64_t KH, int64_t KW,
                                 const int32_t* zero_points, int64_t n_zero_points)
    : C_(C), KH_(KH), KW_(KW), Cp_(dw_padded_channels(C)), signed_(w_signed) {
  if (C <= 0 || KH <= 0 || KW <= 0) throw std::invalid_argument("depthwise weights must have C, KH, KW > 0");
  if (KH * KW > (int64_t{1} << 20)) throw std::invalid_argument("depthwise kernel has too many taps");
  if (n_zero_points != 1 && n_zero_points != C)
    throw std::invalid_argument("w_zero_point must be a scalar or have C entries");
  const int32_t lo = w_signed ? -128 : 0, hi = w_signed ? 127 : 255;
  zp_.resize(C);
  for (int64_t c = 0; c < C; ++c) {
    zp_[c] = zero_points[n_zero_points == 1 ? 0 : c];
    if (zp_[c] < lo || zp_[c] > hi) throw std::invalid_argument("w_zero_point out of the range of w's dtype");
  }
  const int64_t T = KH * KW;
  buf_ = std::make_unique<AlignedBuffer>(static_cast<size_t>(T * Cp_) * sizeof(int32_t));  // zero-initialised
  int32_t* dst = reinterpret_cast<int32_t*>(buf_->data());
  std::vector<uint32_t> sum(C, 0);
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t t = 0; t < T; ++t) {
      const uint8_t b = w[c * T + t];
      const int32_t v = (w_signed ? static_cast<int32_t>(static_cast<int8_t>(b)) : static_cast<int32_t>(b)) - zp_[c];
      dst[t * Cp_ + c] = v;
      sum[c] += static_cast<uint32_t>(v);
    }
  }
  // Tap pairs for vpmaddwd: per pair q and 32-channel block b, 64 int16 lanes
  // [lo: 16 (w[2q], w[2q+1]) pairs | hi: 16 pairs], see dw_pair_index.
  const int64_t Tp = (T + 1) / 2;
  pairs_ = std::make_unique<AlignedBuffer>(static_cast<size_t>(Tp * Cp_ * 2) * sizeof(int16_t));
  int16_t* d2 = reinterpret_cast<int16_t*>(pairs_->data());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) d2[(t / 2) * Cp_ * 2 + dw_pair_index(c) + (t % 2)] = static_cast<int16_t>(dst[t * Cp_ + c]);
  wsum_.resize(C);
  for (int64_t c = 0; c < C; ++c) wsum_[c] = static_cast<int32_t>(sum[c]);
  bool fits = KW <= 4;
  for (int64_t i = 0; fits && i < T * Cp_; ++i) fits = dst[i] >= -128 && dst[i] <= 127;
  if (fits) {
    quads_ = std::make_unique<AlignedBuffer>(static_cast<size_t>(KH * Cp_) * sizeof(int32_t));  // zero-initialised
    int8_t* q = reinterpret_cast<int8_t*>(quads_->data());
    for (int64_t kh = 0; kh < KH; ++kh)
      for (int64_t kw = 0; kw < KW; ++kw)
        for (int64_t c = 0; c < C; ++c) q[(kh * Cp_ + c) * 4 + kw] = static_cast<int8_t>(dst[(kh * KW + kw) * Cp_ + c]);
  }
}

int64_t dw_output_size(int64_t in, int64_t k, int64_t stride, int64_t pad0, int64_t pad1, int64_t dil,
                       const char* axis) {
  if (stride < 1) throw std::invalid_argument(std::string("stride along ") + axis + " must be >= 1");
  if (dil < 1) throw std::invalid_argument(std::string("dilation along ") + axis + " must be >= 1");
  if (pad0 < 0 || pad1 < 0) throw std::invalid_argument(std::string("pads along ") + axis + " must be >= 0");
  const int64_t span = dil * (k - 1) + 1;
  const int64_t padded = in + pad0 + pad1;
  if (padded < span)
    throw std::invalid_argument(std::string("the dilated kernel (") + std::to_string(span) + ") is larger than the padded input along " + axis + " (" + std::to_string(padded) + ")");
  return (padded - span) / stride + 1;
}

namespace {

// Below this many multiply-adds a second thread costs more than it saves.
constexpr int64_t kMinMacsPerThread = int64_t{1} << 18;

size_t out_elem_size(OutKind k) { return k == OutKind::kInt32 ? 4 : 1; }

}  // namespace

void dwconv(const DwArgs& a) {
  const DwPackedWeights& w = *a.w;
  const int64_t N = a.N, H = a.H, W = a.W, C = a.C;
  if (N < 0 || H < 1 || W < 1) throw std::invalid_argument("x must have N >= 0 and H, W >= 1");
  if (C != w.C())
    throw std::invalid_argument("x has C=" + std::to_string(C) + " channels but the depthwise weights have C=" +
                                std::to_string(w.C()));
  const int64_t KH = w.KH(), KW = w.KW(), T = w.taps(), Cp = w.padded_channels();
  const int64_t OH = dw_output_size(H, KH, a.stride_h, a.pad_top, a.pad_bottom, a.dil_h, "H");
  const int64_t OW = dw_output_size(W, KW, a.stride_w, a.pad_left, a.pad_right, a.dil_w, "W");
  const int32_t xlo = a.x_signed ? -128 : 0, xhi = a.x_signed ? 127 : 255;
  if (a.x_zero_point < xlo || a.x_zero_point > xhi)
    throw std::invalid_argument("x_zero_point out of the range of x's dtype");

  DwProblem p;
  p.x_signed = a.x_signed;
  p.C = C;
  p.Cp = Cp;
  p.taps = T;
  p.ind_stride = (T + 1) / 2 * 2;
  p.w = w.packed();
  p.w2 = w.packed_pairs();
  p.epi.out_kind = a.out_kind;
  p.epi.zp_y = a.zp_y;
  p.epi.lo = a.lo;
  p.epi.hi = a.hi;
  if (a.out_kind != OutKind::kInt32) {
    const RequantParams* rq = a.requant;
    if (!rq) throw std::invalid_argument("8-bit output needs requantization parameters");
    const size_t need = static_cast<size_t>(C);
    const bool ok = (rq->mode == RequantMode::kFp32 && rq->scale.size() == need) ||
                    (rq->mode == RequantMode::kPot && rq->shift.size() == need) ||
                    ((rq->mode == RequantMode::kQ31 || rq->mode == RequantMode::kQ31Single) &&
                     rq->multiplier.size() == need && rq->shift.size() == need);
    if (!ok) throw std::invalid_argument("requantization parameters do not have C channels");
    const int32_t qmin = a.out_kind == OutKind::kInt8 ? -128 : 0, qmax = a.out_kind == OutKind::kInt8 ? 127 : 255;
    if (a.lo < qmin || a.hi > qmax || a.lo > a.hi) throw std::invalid_argument("clip bounds outside the output range");
    if (a.zp_y < qmin || a.zp_y > qmax) throw std::invalid_argument("y_zero_point out of the range of the output dtype");
    p.epi.mode = rq->mode;
    if (!rq->scale.empty()) p.epi.scale = rq->scale.data();
    if (!rq->multiplier.empty()) p.epi.multiplier = rq->multiplier.data();
    if (!rq->shift.empty()) p.epi.shift = rq->shift.data();
  }
  if (N == 0) return;

  // colterm = bias - za * wsum (mod 2^32); the za row makes padding taps add za * w'.
  AlignedBuffer colterm(static_cast<size_t>(Cp) * sizeof(int32_t));
  int32_t* ct = reinterpret_cast<int32_t*>(colterm.data());
  const uint32_t za = static_cast<uint32_t>(a.x_zero_point);
  for (int64_t c = 0; c < C; ++c) {
    const uint32_t b = a.bias ? static_cast<uint32_t>(a.bias[c]) : 0u;
    ct[c] = static_cast<int32_t>(b - za * static_cast<uint32_t>(w.wsum()[c]));
  }
  p.colterm = ct;
  AlignedBuffer zrow(static_cast<size_t>(Cp));
  std::memset(zrow.data(), static_cast<int>(static_cast<uint8_t>(a.x_zero_point)), static_cast<size_t>(Cp));

  const int64_t rows = N * OH;
#if defined(PYQ_X86)
  // The row-quad kernel: AVX-512 VNNI, KW <= 4 (packed_quads), KH <= 16 (its ring of
  // rows), dilation 1 along W, int32 output or fp32 requantization.
  if (dw_uses_quad_kernel(w, a.dil_w, a.out_kind, p.epi.mode)) {
    const uint8_t za_u = static_cast<uint8_t>(a.x_zero_point ^ (a.x_signed ? 0x80 : 0));
    AlignedBuffer ctq(static_cast<size_t>(Cp) * sizeof(int32_t));
    int32_t* ctu = reinterpret_cast<int32_t*>(ctq.data());
    for (int64_t c = 0; c < C; ++c) {
      const uint32_t b = a.bias ? static_cast<uint32_t>(a.bias[c]) : 0u;
      ctu[c] = static_cast<int32_t>(b - static_cast<uint32_t>(za_u) * static_cast<uint32_t>(w.wsum()[c]));
    }
    DwQuadArgs q{a.x, a.x_signed, N, H, W, C, Cp, KH, OH, OW, a.stride_h, a.stride_w, a.pad_top, a.pad_left,
                 a.dil_h, za_u, w.packed_quads(), ctu, a.out_kind, p.epi.scale, a.zp_y, a.lo, a.hi, a.out};
    const int64_t macs = rows * OW * C * T;
    int nt = get_num_threads();
    nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({nt, macs / kMinMacsPerThread, rows})));
    // Each task rebuilds the KH - 1 input rows it shares with its neighbour: 2 tasks per thread.
    const int64_t tasks = nt == 1 ? 1 : std::min<int64_t>(rows, 2 * nt);
    const DwQuadRowsFn fn = avx512vnni_dw_quad_rows();
    parallel_for(static_cast<int>(tasks), nt, [&](int task) {
      const int64_t r0 = rows * task / tasks, r1 = rows * (task + 1) / tasks;
      if (r0 < r1) fn(q, r0, r1);
    });
    return;
  }
#endif
  const DwKernel* kern = dw_kernel_for(active_path());
  const size_t row_bytes = static_cast<size_t>(OW * C) * out_elem_size(a.out_kind);
  const int64_t macs = rows * OW * C * T;
  int nthreads = get_num_threads();
  nthreads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({nthreads, macs / kMinMacsPerThread, rows})));
  const uint8_t* zr = zrow.data();
  // About 4 tasks per thread, so the pool can rebalance when a core is busy elsewhere.
  const int64_t tasks = nthreads == 1 ? 1 : std::min<int64_t>(rows, 4 * nthreads);
  parallel_for(static_cast<int>(tasks), nthreads, [&](int task) {
    const int64_t r0 = rows * task / tasks, r1 = rows * (task + 1) / tasks;
    if (r0 >= r1) return;
    std::vector<const uint8_t*> ind(static_cast<size_t>(OW * p.ind_stride), zr);
    AlignedBuffer acc(static_cast<size_t>(Cp) * sizeof(int32_t));
    std::vector<const uint8_t*> rowp(static_cast<size_t>(KH));
    const int64_t step_w = a.dil_w * C;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / OH, oh = r % OH;
      const uint8_t* img = a.x + n * H * W * C;
      const uint8_t** ip = ind.data();
      // Per kernel row, the input row (or null above/below the image); pixels whose
      // taps all lie inside the row width take pointers by offset, no checks.
      for (int64_t kh = 0; kh < KH; ++kh) {
        const int64_t ih = oh * a.stride_h - a.pad_top + kh * a.dil_h;
        rowp[kh] = ih >= 0 && ih < H ? img + ih * W * C : nullptr;
      }
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t iw0 = ow * a.stride_w - a.pad_left;
        const bool inside = iw0 >= 0 && iw0 + (KW - 1) * a.dil_w < W;
        for (int64_t kh = 0; kh < KH; ++kh) {
          const uint8_t* rp = rowp[kh];
          if (!rp) {
            for (int64_t kw = 0; kw < KW; ++kw) *ip++ = zr;
          } else if (inside) {
            const uint8_t* q = rp + iw0 * C;
            for (int64_t kw = 0; kw < KW; ++kw, q += step_w) *ip++ = q;
          } else {
            for (int64_t kw = 0; kw < KW; ++kw) {
              const int64_t iw = iw0 + kw * a.dil_w;
              *ip++ = iw >= 0 && iw < W ? rp + iw * C : zr;
            }
          }
        }
        ip += p.ind_stride - T;  // the pad pointer (if any) stays at the za row
      }
      kern->row(p, ind.data(), OW, static_cast<uint8_t*>(a.out) + static_cast<size_t>(r) * row_bytes,
                reinterpret_cast<int32_t*>(acc.data()));
    }
  });
}

}  // namespace pyq
