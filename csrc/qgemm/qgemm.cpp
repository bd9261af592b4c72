#include "qgemm/qgemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#include "common/threadpool.h"

namespace pyq {

AlignedBuffer::AlignedBuffer(size_t n) : size_(n) {
  const size_t rounded = (n + 63) / 64 * 64 + 64;
  data_ = static_cast<uint8_t*>(std::aligned_alloc(64, rounded));
  if (!data_) throw std::bad_alloc();
  std::memset(data_, 0, rounded);
}

AlignedBuffer::~AlignedBuffer() { std::free(data_); }

const GemmKernel* gemm_kernel_for(KernelPath p) {
  switch (p) {
#if defined(PYQ_X86)
    case KernelPath::kAvx512vnni: return avx512vnni_gemm_kernel();
    case KernelPath::kAvx512bw: return avx512bw_gemm_kernel();
    case KernelPath::kAvxVnni:  // no dedicated AVX-VNNI kernel yet: AVX2 is exact and close
    case KernelPath::kAvx2: return avx2_gemm_kernel();
#endif
    default: return scalar_gemm_kernel();
  }
}

const GemmKernel* gemm_kernel_for(KernelPath p, int weight_bits) {
#if defined(PYQ_X86)
  if (p == KernelPath::kAvx512vnni && weight_bits <= 4) return avx512vnni_w4_gemm_kernel();
#endif
  (void)weight_bits;
  return gemm_kernel_for(p);
}

GemmComputeFn indirect_compute_for(const GemmKernel* k) {
#if defined(PYQ_X86)
  if (k == avx512vnni_gemm_kernel()) return avx512vnni_indirect_compute;
#endif
  (void)k;
  return nullptr;
}

int32_t PackedWeights::domain_shift(const GemmKernel* k) const {
#if defined(PYQ_X86)
  if (k == avx512vnni_w4_gemm_kernel()) return signed_ ? 8 : 128;
#endif
  (void)k;
  return 0;
}

PackedWeights::PackedWeights(const uint8_t* b, bool b_signed, int64_t K, int64_t N, int64_t ldb,
                             const int32_t* zero_points, int64_t n_zero_points, int bits)
    : K_(K), N_(N), signed_(b_signed), bits_(bits) {
  if (K <= 0 || N <= 0) throw std::invalid_argument("weights must have K > 0 and N > 0");
  if (n_zero_points != 1 && n_zero_points != N)
    throw std::invalid_argument("weight zero point must be a scalar or have N entries");
  if (bits < (b_signed ? 2 : 1) || bits > 8) throw std::invalid_argument("weight bits out of range");
  // Declared width range, in the original domain.
  const int32_t qmin = b_signed ? -(1 << (bits - 1)) : 0;
  const int32_t qmax = b_signed ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
  for (int64_t i = 0; i < n_zero_points; ++i)
    if (zero_points[i] < qmin || zero_points[i] > qmax)
      throw std::invalid_argument("b_zero_point outside the declared weight width");
  if (bits < 8) {
    for (int64_t k = 0; k < K; ++k) {
      const uint8_t* row = b + k * ldb;
      for (int64_t n = 0; n < N; ++n) {
        const int32_t v = b_signed ? static_cast<int8_t>(row[n]) : static_cast<int32_t>(row[n]);
        if (v < qmin || v > qmax) throw std::invalid_argument("b has a value outside the declared weight width");
      }
    }
  }
  w_nk_.resize(static_cast<size_t>(N) * K);
  zp_.resize(N);
  zw_.resize(N);
  colsum_.assign(N, 0);
  const int32_t to_s8 = b_signed ? 0 : 128;
  for (int64_t n = 0; n < N; ++n) {
    zp_[n] = zero_points[n_zero_points == 1 ? 0 : n];
    zw_[n] = zp_[n] - to_s8;
    if (zw_[n] != 0) any_zw_ = true;
  }
  for (int64_t k = 0; k < K; ++k) {
    const uint8_t* row = b + k * ldb;
    for (int64_t n = 0; n < N; ++n) {
      const int32_t v = b_signed ? static_cast<int8_t>(row[n]) : static_cast<int32_t>(row[n]) - 128;
      w_nk_[n * K + k] = static_cast<int8_t>(v);
      colsum_[n] += v;  // |colsum| <= 128*K: fits int32 for K < 2^24; wraps harmlessly beyond
    }
  }
}

const uint8_t* PackedWeights::packed_for(const GemmKernel* k) const {
  std::lock_guard<std::mutex> g(mu_);
  auto it = packs_.find(k);
  if (it != packs_.end()) return it->second->data();
  auto buf = std::make_unique<AlignedBuffer>(k->packed_size(N_, K_));
  const int32_t shift = domain_shift(k);
  if (shift == 0) {
    k->pack(w_nk_.data(), N_, K_, buf->data());
  } else {  // the kernel's own weight domain (nibbles in [0, 15])
    std::vector<int8_t> shifted(w_nk_.size());
    for (size_t i = 0; i < w_nk_.size(); ++i) shifted[i] = static_cast<int8_t>(w_nk_[i] + shift);
    k->pack(shifted.data(), N_, K_, buf->data());
  }
  const uint8_t* p = buf->data();
  packs_.emplace(k, std::move(buf));
  return p;
}

size_t PackedWeights::packed_bytes() const {
  std::lock_guard<std::mutex> g(mu_);
  size_t total = 0;
  for (const auto& kv : packs_) total += kv.second->size();
  return total;
}

namespace {

// Below this many multiply-adds a second thread costs more than it saves.
constexpr int64_t kMinMacsPerThread = int64_t{1} << 19;

// Row sums of the activations as the kernel sees them: int8 activations enter
// as x ^ 0x80, which is x + 128 read as uint8.
void row_sums(const uint8_t* a, int64_t M, int64_t K, int64_t lda, bool a_signed, int32_t* out) {
  const uint8_t flip = a_signed ? 0x80 : 0x00;
  for (int64_t m = 0; m < M; ++m) {
    const uint8_t* row = a + m * lda;
    uint32_t s = 0;
    for (int64_t k = 0; k < K; ++k) s += static_cast<uint8_t>(row[k] ^ flip);
    out[m] = static_cast<int32_t>(s);
  }
}

}  // namespace

void qgemm(const GemmArgs& g) {
  const PackedWeights& w = *g.w;
  const int64_t M = g.M, N = w.N(), K = w.K();
  if (g.K != K) throw std::invalid_argument("activation K does not match the packed weights");
  if (M == 0) return;
  const GemmKernel* kern = gemm_kernel_for(active_path(), w.bits());

  // Zero-point folding (docs/semantics.md): with x' = x (+128 for int8) and
  // za' its zero point, sum (x'-za')(w'-zw') = raw - zw'*rowsum + colterm,
  // colterm = bias - za'*colsum + K*za'*zw', all modulo 2^32. A kernel with its
  // own weight domain (w'' = w' + shift, section 9.4) has zw'' = zw' + shift and
  // colsum'' = colsum' + K*shift.
  const uint32_t shift = static_cast<uint32_t>(w.domain_shift(kern));
  std::vector<int32_t> colterm(N), rowsum, zw_shifted;
  bool any_zw = w.any_zw();
  const int32_t* zw = w.zw().data();
  if (shift != 0) {
    zw_shifted.resize(N);
    any_zw = false;
    for (int64_t n = 0; n < N; ++n) {
      zw_shifted[n] = static_cast<int32_t>(static_cast<uint32_t>(w.zw()[n]) + shift);
      any_zw = any_zw || zw_shifted[n] != 0;
    }
    zw = zw_shifted.data();
  }
  fold_zero_points(w, g.a_zero_point, g.a_signed, g.bias, static_cast<int32_t>(shift), colterm.data());
  if (any_zw) {
    rowsum.resize(M);
    row_sums(g.a, M, K, g.lda, g.a_signed, rowsum.data());
  }

  GemmProblem p;
  p.a = g.a;
  p.lda = g.lda;
  p.a_xor = g.a_signed ? 0x80808080u : 0u;
  p.M = M;
  p.N = N;
  p.K = K;
  p.packed = w.packed_for(kern);
  p.colterm = colterm.data();
  p.zw = any_zw ? zw : nullptr;
  p.rowsum = any_zw ? rowsum.data() : nullptr;
  p.out_kind = g.out_kind;
  p.out = g.out;
  p.ldc = g.ldc;
  if (g.requant) {
    p.mode = g.requant->mode;
    if (!g.requant->scale.empty()) p.scale = g.requant->scale.data();
    if (!g.requant->multiplier.empty()) p.multiplier = g.requant->multiplier.data();
    if (!g.requant->shift.empty()) p.shift = g.requant->shift.data();
  }
  p.zp_y = g.zp_y;
  p.lo = g.lo;
  p.hi = g.hi;

  const int64_t panels = (N + kern->nr - 1) / kern->nr;
  const int64_t macs = M * N * K;
  int nthreads = get_num_threads();
  nthreads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nthreads, macs / kMinMacsPerThread)));
  // Split columns (panels) first: each thread then streams only its part of B.
  // Rows are split only when there are too few panels. About 4 tasks per thread
  // let a thread whose core is busy elsewhere be covered by the others.
  const int64_t want = 4 * static_cast<int64_t>(nthreads);
  const int64_t tp = nthreads == 1 ? 1 : std::min<int64_t>(panels, want);
  const int64_t mtiles = (M + kern->mr - 1) / kern->mr;
  const int64_t tm = nthreads == 1 ? 1 : std::max<int64_t>(1, std::min<int64_t>(mtiles, (want + tp - 1) / tp));
  const int64_t tasks = tp * tm;
  parallel_for(static_cast<int>(tasks), nthreads, [&](int t) {
    const int64_t ip = t / tm, im = t % tm;
    const int64_t p0 = panels * ip / tp, p1 = panels * (ip + 1) / tp;
    const int64_t m0 = mtiles * im / tm * kern->mr;
    const int64_t m1 = std::min<int64_t>(M, mtiles * (im + 1) / tm * kern->mr);
    if (p0 < p1 && m0 < m1) kern->compute(p, m0, m1, p0, p1);
  });
}

}  // namespace pyq

namespace pyq {

void fold_zero_points(const PackedWeights& w, int32_t a_zero_point, bool a_signed, const int32_t* bias,
                      int32_t domain_shift, int32_t* colterm) {
  const uint32_t za = static_cast<uint32_t>(a_zero_point + (a_signed ? 128 : 0));
  const uint32_t K = static_cast<uint32_t>(w.K());
  const uint32_t shift = static_cast<uint32_t>(domain_shift);
  for (int64_t n = 0; n < w.N(); ++n) {
    const uint32_t colsum = static_cast<uint32_t>(w.colsum()[n]) + K * shift;
    const uint32_t zw = static_cast<uint32_t>(w.zw()[n]) + shift;
    uint32_t t = bias ? static_cast<uint32_t>(bias[n]) : 0u;
    t -= za * colsum;
    t += K * za * zw;
    colterm[n] = static_cast<int32_t>(t);
  }
}

void activation_row_sums(const uint8_t* a, int64_t M, int64_t K, int64_t lda, bool a_signed, int32_t* rowsum) {
  row_sums(a, M, K, lda, a_signed, rowsum);
}

}  // namespace pyq
