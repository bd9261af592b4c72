// Quantized GEMM operator: C[M,N] = requant( sum_k (A[m,k]-za)(B[k,n]-zb[n]) + bias[n] ).
// Semantics: docs/semantics.md. The operator (this header, qgemm.cpp) owns
// packing, zero-point folding, threading and path selection; the microkernels
// (qgemm_<isa>.cpp) only compute tiles of raw u8 x s8 dot products and hand
// them to the shared epilogue (epilogue.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "common/cpu_features.h"
#include "common/requant.h"

namespace pyq {

// 64-byte aligned, zero-initialised byte buffer.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t n);
  ~AlignedBuffer();
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

enum class OutKind : int32_t { kInt32 = 0, kUint8 = 1, kInt8 = 2 };

// Everything a microkernel needs for one call. All per-channel arrays have N entries.
struct GemmProblem {
  const uint8_t* a = nullptr;  // activations, row-major, row stride lda bytes
  int64_t lda = 0;
  uint32_t a_xor = 0;  // 0x80808080 for int8 activations: x ^ 0x80 == x + 128 as uint8
  int64_t M = 0, N = 0, K = 0;
  // Indirect A (convolution without a gathered im2col): when a_ptrs is set, row m
  // is a_segs runs of a_seg bytes (a_seg a multiple of 4, K = a_segs * a_seg), run s
  // starting at a_ptrs[m * a_segs + s]; a and lda are unused. Only for the
  // compute function indirect_compute_for() returns.
  const uint8_t* const* a_ptrs = nullptr;
  int64_t a_segs = 0, a_seg = 0;
  const uint8_t* packed = nullptr;  // path-specific layout of the s8 weights
  // Epilogue: acc = raw + colterm[n] - zw[n] * rowsum[m] (mod 2^32), then store or requantize.
  const int32_t* colterm = nullptr;
  const int32_t* zw = nullptr;      // null when every weight zero point (s8 domain) is 0
  const int32_t* rowsum = nullptr;  // sum_k of the uint8-domain activations; null with zw
  OutKind out_kind = OutKind::kInt32;
  void* out = nullptr;
  int64_t ldc = 0;  // in elements
  RequantMode mode = RequantMode::kFp32;
  const float* scale = nullptr;
  const int32_t* multiplier = nullptr;
  const int32_t* shift = nullptr;
  int32_t zp_y = 0, lo = 0, hi = 0;
};

struct GemmKernel {
  const char* name;
  int nr;  // columns per packed panel
  int mr;  // rows per register tile (for work splitting)
  size_t (*packed_size)(int64_t N, int64_t K);
  // w_nk: the s8-domain weights, N rows of K.
  void (*pack)(const int8_t* w_nk, int64_t N, int64_t K, uint8_t* dst);
  // Computes rows [m0, m1) of panels [p0, p1) including the epilogue.
  void (*compute)(const GemmProblem& p, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
};

const GemmKernel* scalar_gemm_kernel();
#if defined(PYQ_X86)
const GemmKernel* avx2_gemm_kernel();
const GemmKernel* avx512bw_gemm_kernel();
const GemmKernel* avx512vnni_gemm_kernel();
// Weights of at most 4 bits kept as packed nibbles (qgemm_w4_avx512vnni.cpp). Its
// pack() takes nibble-domain values in [0, 15] instead of s8-domain weights.
const GemmKernel* avx512vnni_w4_gemm_kernel();
#endif
const GemmKernel* gemm_kernel_for(KernelPath p);
// The kernel for weights of a declared width: <= 4 bits take the packed-nibble
// kernel on the VNNI path; every other case is gemm_kernel_for(p).
const GemmKernel* gemm_kernel_for(KernelPath p, int weight_bits);

// A compute function with k's packed layout, tiles and epilogue that reads A
// through GemmProblem::a_ptrs; null when k has none (then gather A instead).
using GemmComputeFn = void (*)(const GemmProblem& p, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
GemmComputeFn indirect_compute_for(const GemmKernel* k);
#if defined(PYQ_X86)
void avx512vnni_indirect_compute(const GemmProblem& p, int64_t m0, int64_t m1, int64_t p0, int64_t p1);
#endif

// Weights packed once, reused across calls. The uint8 weight dtype is mapped to
// the int8 domain at pack time: (w - zw) == ((w - 128) - (zw - 128)).
// `bits` is the declared width (docs/semantics.md section 9): the values (and
// zero points) must lie in [0, 2^bits-1] (unsigned) or [-2^(bits-1), 2^(bits-1)-1]
// (signed, bits >= 2); std::invalid_argument otherwise.
class PackedWeights {
 public:
  PackedWeights(const uint8_t* b, bool b_signed, int64_t K, int64_t N, int64_t ldb,
                const int32_t* zero_points, int64_t n_zero_points, int bits = 8);
  int64_t K() const { return K_; }
  int64_t N() const { return N_; }
  bool weights_signed() const { return signed_; }
  int bits() const { return bits_; }
  // What a kernel's weight domain adds to the s8-domain weights and zero points:
  // 0, or for the nibble kernel 8 (signed) / 128 (unsigned), giving [0, 15].
  int32_t domain_shift(const GemmKernel* k) const;
  const std::vector<int32_t>& zw() const { return zw_; }  // s8 domain
  bool any_zw() const { return any_zw_; }
  const std::vector<int32_t>& colsum() const { return colsum_; }
  const std::vector<int32_t>& zero_points() const { return zp_; }  // as given, original domain
  // The packed buffer for a kernel, built on first use.
  const uint8_t* packed_for(const GemmKernel* k) const;
  size_t packed_bytes() const;

 private:
  int64_t K_, N_;
  bool signed_;
  int bits_;
  std::vector<int8_t> w_nk_;
  std::vector<int32_t> zp_, zw_, colsum_;
  bool any_zw_ = false;
  mutable std::mutex mu_;
  mutable std::map<const GemmKernel*, std::unique_ptr<AlignedBuffer>> packs_;
};

struct GemmArgs {
  const uint8_t* a;
  bool a_signed;
  int64_t M, K, lda;
  int32_t a_zero_point;  // in the activation dtype's domain
  const PackedWeights* w;
  const int32_t* bias;  // N entries or null
  OutKind out_kind;
  void* out;
  int64_t ldc;
  const RequantParams* requant;  // null for int32 output
  int32_t zp_y, lo, hi;
};

// The whole operator: folds zero points, splits the work across threads and
// runs the active kernel path. Thread-safe; does not touch Python.
void qgemm(const GemmArgs& args);

}  // namespace pyq

namespace pyq {

// Zero-point folding shared by the operators built on the GEMM microkernels
// (docs/semantics.md section 8): colterm[n] = bias[n] - za'*colsum[n] +
// K*za'*zw'[n] (mod 2^32), with za' the activation zero point in the uint8
// domain (+128 for int8 activations). bias may be null. colterm has w.N() entries.
// domain_shift: the kernel's own weight domain (PackedWeights::domain_shift, 0
// for the int8 kernels) raises zw' and colsum by shift and K*shift.
void fold_zero_points(const PackedWeights& w, int32_t a_zero_point, bool a_signed, const int32_t* bias,
                      int32_t domain_shift, int32_t* colterm);

// rowsum[m] = sum_k a'[m,k] (mod 2^32), a' the uint8-domain activations the
// microkernel sees (int8 enters as x ^ 0x80). Needed only when w.any_zw().
void activation_row_sums(const uint8_t* a, int64_t M, int64_t K, int64_t lda, bool a_signed, int32_t* rowsum);

}  // namespace pyq
