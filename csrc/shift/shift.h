// Shift GEMM for power-of-two weights (docs/semantics.md section 12): weights are
// sums of T <= 3 signed power-of-two terms, acc = sat_W( sum_k sum_t p(a, s, e) + bias ).
// The operator (this header, shift.cpp) owns packing, validation, the static
// bound of section 12.3 and the lane choice, threading, saturation and the
// epilogue; the microkernels (shift_gemm_<isa>.cpp) compute exact term sums of a
// block of rows x one 64-column panel into an int64 tile.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/cpu_features.h"
#include "common/requant.h"
#include "qgemm/qgemm.h"

namespace pyq {

enum class ShiftRule : int32_t { kExact = 0, kDeepShift = 1 };
enum class ShiftKernel : int32_t { kShift = 0, kMultiply = 1, kAuto = 2, kHybrid = 3 };
enum class ShiftActType : int32_t { kU8 = 0, kS8 = 1, kS16 = 2, kS32 = 3 };

constexpr int kShiftPanel = 64;      // columns per packed panel
constexpr int kShiftOffCount = 32;   // shift count of a switched-off term: vpsllvw/vpsllvd give 0

// Lane width chosen per panel from the static bound (section 12.3).
enum class LaneMode : int32_t { kInt16 = 0, kInt32 = 1, kWide = 2 };

struct ShiftPlan {
  std::vector<int32_t> mode;         // LaneMode per panel
  std::vector<int64_t> block_begin;  // per panel: first index into block_end (int16 panels)
  std::vector<int32_t> block_end;    // k end (exclusive) of each int16 block, panel after panel
};

// Everything a microkernel needs. x is the activation minus its zero point.
struct ShiftProblem {
  const int32_t* x = nullptr;   // M rows of K
  const int16_t* x16 = nullptr; // the same values as int16 (set when they fit)
  int64_t M = 0, K = 0, N = 0;
  int T = 1;
  bool right_shifts = false;
  // Per panel, per k, per t: 64 int16 left-shift counts, 64 int16 sign masks (0 or -1),
  // and (right_shifts only) 64 int16 right-shift counts.
  const int16_t* pack16 = nullptr;
  int64_t row_elems = 0;  // int16 elements per (k, t) record: 128 or 192
  // The same records widened to int32 (row_elems int32 each), or null: saves the
  // int32-lane kernel one vpmovsxwd per vector; built for batches of >= 8 rows.
  const int32_t* pack32 = nullptr;
  const int8_t* terms = nullptr;  // [N][K][T][2] (sign, exponent), the scalar layout
  const int64_t* negcnt = nullptr;  // per column: terms with sign -1
  // The plan as plain arrays (ISA files instantiate no std templates).
  const int32_t* lane_mode = nullptr;    // per panel
  const int64_t* block_begin = nullptr;  // per panel + 1
  const int32_t* block_end = nullptr;
  bool wide128 = false;  // the wide scalar code needs 128-bit sums
};

// Rows [m0, m1) of panel pn into tile[(m - m0) * 64 + j] (exact sums, clamped to
// +-2^62 when wider than int64; the final saturation to <= 32 bits is unaffected).
using ShiftComputeFn = void (*)(const ShiftProblem& p, int64_t m0, int64_t m1, int64_t pn, int64_t* tile);

// The portable code (every lane mode) and the AVX-512BW kernels (int16 / int32
// lanes; wide panels go to the portable code).
void shift_compute_scalar(const ShiftProblem& p, int64_t m0, int64_t m1, int64_t pn, int64_t* tile);
#if defined(PYQ_X86)
void shift_compute_avx512bw(const ShiftProblem& p, int64_t m0, int64_t m1, int64_t pn, int64_t* tile);
void shift_compute_avx2(const ShiftProblem& p, int64_t m0, int64_t m1, int64_t pn, int64_t* tile);
#endif

// Multiply kernel on decoded int32 weights [K][N] with int32 lanes (bound <= 2^31-1):
// rows [m0, m1), columns [n0, n1) into tile (row stride 64, n1 - n0 <= 64).
using ShiftMulFn = void (*)(const int32_t* x, int64_t K, const int32_t* w_kn, int64_t N, int64_t m0, int64_t m1,
                            int64_t n0, int64_t n1, int64_t* tile);
void shift_mul32_scalar(const int32_t* x, int64_t K, const int32_t* w_kn, int64_t N, int64_t m0, int64_t m1,
                        int64_t n0, int64_t n1, int64_t* tile);
#if defined(PYQ_X86)
void shift_mul32_avx512bw(const int32_t* x, int64_t K, const int32_t* w_kn, int64_t N, int64_t m0, int64_t m1,
                          int64_t n0, int64_t n1, int64_t* tile);
#endif

#if defined(PYQ_X86)
// 4-bit LUT weights for AVX-512 VNNI (shift_lut_avx512vnni.cpp): the decoded values
// of a layer with <= 16 distinct int8 values, as 4-bit indices into a 16-entry table.
const GemmKernel* avx512vnni_lut4_gemm_kernel();
// Its pack() takes the indices in [0, 15]; the table (16 int8 values, repeated to
// 64 bytes) is the 64 bytes just before GemmProblem::packed.
#endif

// The exponent-bucket form of weights without right shifts (section 12.4a): per
// column and per block of kShiftBucketK k's, groups sharing an exponent, each
// [e, nchunks] then 4 * nchunks byte offsets (64 * row) into the block's table of
// activation vectors (rows 0..126: x, 127..253: -x, 254: zero, the padding), all
// uint16; then 0xFFFF. A group
// holds at most 128 offsets, so its sum is exact in int16 for |x| <= 255.
constexpr int kShiftBucketK = 127;
constexpr int kShiftBucketRows = 255;  // table rows per block
struct ShiftBuckets {
  std::vector<uint16_t> stream;
  std::vector<int64_t> start;  // [N][nkb]
  int64_t nkb = 0;
};

// Exponent-bucket kernel (AVX-512BW): 32 rows as int16 lanes; xt holds nkb tables of
// kShiftBucketRows x 32 int16; accumulates sum over groups of 2^e * (table sums)
// into acc [64 columns][32 rows] int32 for panel pn.
void shift_bucket_avx512bw(const int16_t* xt, const uint16_t* stream, const int64_t* start, int64_t nkb, int64_t N,
                           int64_t pn, int32_t* acc);

// The chunked form (section 12.4a): per column and k block (the same tables as the
// buckets), [nC, n4], nC records of C + 1 uint16 ([16 - e, C offsets]: C terms of one
// exponent e <= 16), then n4 records of 5 uint16 ([16 - e, 4 offsets]): a group of
// L terms gives L / C full chunks and its rest in chunks of 4, padded with the zero
// row. C is 8 or 16.
constexpr int kShiftChunkMaxExp = 16;
// Chunk kernel (AVX-512BW): as shift_bucket_avx512bw, but with a fixed C terms per
// chunk and one shift per chunk; acc [64 columns][32] int32 holds, per column, the
// even rows 0, 2, .., 30 in [0, 16) and the odd rows in [16, 32).
void shift_chunks_avx512bw(const int16_t* xt, const uint16_t* stream, const int64_t* start, int64_t nkb, int64_t N,
                           int64_t pn, int C, int32_t* acc);

// The packed-field form (section 12.4a): 48 rows per 64-byte table row, as six
// 10-bit fields per uint64 (row 8f + i is field f of qword i). Table rows per block of
// kbk k's (K split into equal blocks of at most kShiftPackedMaxK): x' (the activation
// offset to [0, 255]), 255 - x' (negative terms), and a zero row (the padding). Per column and block, groups of at most
// kShiftPackedGroup terms of one exponent: [e, nchunks], 4 * nchunks byte offsets
// (64 * row); then 0xFFFF. colsum[n] = sum_k w[k, n] and comp[n] = 255 * (sum of 2^e
// over the column's negative terms) turn the table sums into sum_k w * (a - za).
constexpr int kShiftPackedMaxK = 383;  // measured best of 255 / 383 / 511 at K = 1024
constexpr int kShiftPackedLanes = 48;
constexpr int kShiftPackedGroup = 64;  // 64 * 255 < 2^14: a group's field sums stay in 14 bits
struct ShiftPackedStream {
  ShiftBuckets b;
  std::vector<int64_t> colsum, comp;
  int64_t kbk = 0;  // k's per block; a block's table has 2 * kbk + 1 rows
};
// Columns [n0, n1) of the packed-field kernel (AVX-512BW): xt holds nkb tables of
// table_rows x 8 uint64; acc [(n1 - n0)][48] uint32 gets each row's table sum
// (sum over terms of 2^e * (x' or 255 - x')); row 8f + i of a column is element
// 16 * (f / 2) + 2 * i + f % 2.
void shift_packed_avx512bw(const uint64_t* xt, int64_t table_rows, const uint16_t* stream, const int64_t* start,
                           int64_t nkb, int64_t n0, int64_t n1, uint32_t* acc);

// The hybrid kernel (shift_hybrid_avx512vnni.cpp, section 12.4a): VNNI tiles on the
// decoded int8 weights of columns [0, Nv) with shift-add units of columns [Nv, N)
// interleaved in their K loop. A unit is 3 uint64: kb | (16 - e) << 16 | column << 32
// (column counted from Nv), then 8 uint16 byte offsets into table block kb.
constexpr int64_t kHybridRows = 30;  // rows per block: 5 VNNI tiles of 6, one 32-lane table
struct HybridBlock {
  const uint8_t* a = nullptr;
  int64_t lda = 0;
  bool s8 = false;
  int32_t za = 0;
  int64_t K = 0, Ns = 0;
  const uint64_t* units = nullptr;
  int64_t nunits = 0;
  int period = 1;  // one unit after every `period` K groups of a VNNI tile
};
struct ShiftHybrid {
  int64_t Nv = 0;
  std::unique_ptr<AlignedBuffer> packed;  // VNNI layout of the int8 weights of columns [0, Nv)
  std::vector<int32_t> colsum;            // [Nv]
  std::vector<uint64_t> units;            // the shift columns' units, k block by k block
};
#if defined(PYQ_X86)
// Rows [m0, m0 + nrows) (a task's rows, any number): p is the VNNI problem of columns
// [0, Nv) (its own epilogue stores them), run panel by panel over all the rows; the
// shift job walks the rows in blocks of kHybridRows, one activation table at a time
// (xt: nkb * kShiftBucketRows * 32 int16, 64-byte aligned), into sacc: per block
// [Ns][32] int32 shift-column sums (even rows in lanes 0..15, odd in 16..31).
void shift_hybrid_block_avx512vnni(const HybridBlock& h, const GemmProblem& p, int64_t m0, int64_t nrows,
                                   int16_t* xt, int32_t* sacc);
#endif
// A/B knobs of the hybrid (every choice is bit-exact): period >= 1, or 0 for the
// default; ns: the number of shift columns (0: the automatic split).
void set_shift_hybrid(int period, int64_t ns);

// Which kernel the shift route takes for layers the rows-in-lanes kernels can run
// (A/B benchmarks; every choice is bit-exact): 0 auto (chunks of 16 when every
// exponent is <= 16, else buckets unless every panel has int16 column lanes), forced: 1 buckets, 2 chunks of 8, 3 chunks of 16 (2 and 3 fall back to
// buckets when an exponent exceeds 16), 4 the column kernels, 5 the packed fields.
void set_shift_rows_variant(int v);
int shift_rows_variant();

// Terms packed once, reused across calls.
class PackedShift {
 public:
  // signs, exponents: int8 [T][K][N], contiguous. std::invalid_argument on bad values.
  PackedShift(const int8_t* signs, const int8_t* exponents, int T, int64_t K, int64_t N, ShiftRule rule);
  int64_t K() const { return K_; }
  int64_t N() const { return N_; }
  int T() const { return T_; }
  ShiftRule rule() const { return rule_; }
  bool right_shifts() const { return right_shifts_; }
  // Whether the weights have integer values (a multiply form): rule exact, or
  // deepshift without right shifts.
  bool decodable() const { return !right_shifts_; }
  bool fits_int8() const { return decodable() && wmin_ >= -128 && wmax_ <= 127; }
  bool fits_int32() const { return decodable() && wmin_ >= INT32_MIN && wmax_ <= INT32_MAX; }
  int distinct_values() const { return distinct_; }  // 17 means "more than 16"
  int64_t wmin() const { return wmin_; }
  int64_t wmax() const { return wmax_; }

  // bound[n] of section 12.3 without the bias, plus the negative-term count
  // (the kernels' one's-complement correction needs the headroom), for max_a.
  __int128 column_bound(int64_t n, int64_t max_a) const;
  __int128 worst_bound(int64_t max_a) const;  // max over n, cached per max_a
  const ShiftPlan& plan_for(int64_t max_a, bool x_fits_int16) const;

  const int8_t* terms() const { return terms_.data(); }
  const int16_t* pack16() const;  // built on first use
  const int32_t* pack32() const;  // built on first use
  const ShiftBuckets& buckets() const;  // built on first use (decodable() only)
  const ShiftBuckets& chunks(int C) const;  // built on first use (decodable(), max_exponent() <= 16)
  const ShiftPackedStream& packed_stream() const;  // built on first use (decodable())
  // max over n of 255 * (sum of 2^e over the column's active terms): the packed-field
  // kernel's largest table sum (its uint32 row sums need packed_span() < 2^32).
  int64_t packed_span() const { return packed_span_; }
  int max_exponent() const;  // of the active terms (-32 when none)
  int64_t row_elems() const { return right_shifts_ ? 3 * kShiftPanel : 2 * kShiftPanel; }
  const int64_t* negcnt() const { return negcnt_.data(); }
  const std::vector<int64_t>& decoded_nk() const;  // [N][K], built on first use (decodable only)
  // decoded value of weight i = n * K + k: sum_t s * 2^e (decodable only)
  int64_t decoded(int64_t i) const {
    int64_t v = 0;
    for (int t = 0; t < T_; ++t) {
      const int8_t* d = &terms_[static_cast<size_t>((i * T_ + t) * 2)];
      if (d[0]) v += d[0] * (int64_t{1} << d[1]);
    }
    return v;
  }
  const PackedWeights& int8_weights() const;  // decoded values as int8 (fits_int8 only)
  const std::vector<int32_t>& int32_weights_kn() const;  // decoded values [K][N] (fits_int32 only)
  // decoded values as 4-bit LUT indices, packed for the LUT kernel (distinct <= 16, fits int8)
  const uint8_t* lut4_packed() const;
  const std::vector<int32_t>& lut4_colsum() const;  // sum_k w[k, n]
  // Units of 8 terms of column n (all k blocks), for the hybrid split.
  int64_t hybrid_units(int64_t n) const;
  // The hybrid's data for VNNI columns [0, Nv), built on first use (fits_int8,
  // max_exponent() <= 16).
  const ShiftHybrid& hybrid(int64_t Nv) const;
  size_t packed_bytes() const;

 private:
  int64_t K_, N_;
  int T_;
  ShiftRule rule_;
  bool right_shifts_ = false;
  int64_t wmin_ = 0, wmax_ = 0;
  int64_t packed_span_ = INT64_MAX;  // decodable weights only
  int distinct_ = 0;
  std::vector<int8_t> terms_;     // [N][K][T][2]
  mutable std::vector<int16_t> pack16_;   // [panel][K][T][row_elems]
  std::vector<int64_t> negcnt_;   // [N]
  std::vector<int32_t> hist_;     // [N][62]: active terms per exponent e (index e + 31)
  mutable std::vector<int64_t> w_nk_;     // decoded values [N][K] (wide multiply only)
  std::vector<int8_t> lut_;       // the distinct values (<= 16)
  mutable std::mutex mu_;
  mutable std::map<int64_t, std::unique_ptr<ShiftPlan>> plans_;
  mutable std::map<int64_t, __int128> worst_;
  mutable std::unique_ptr<PackedWeights> w8_;
  mutable std::vector<int32_t> w32_kn_;
  mutable std::vector<int32_t> pack32_;
  mutable std::unique_ptr<ShiftBuckets> buckets_;
  mutable std::unique_ptr<ShiftBuckets> chunks_[2];  // C = 8, 16
  mutable std::unique_ptr<ShiftPackedStream> packed_;
  mutable std::unique_ptr<AlignedBuffer> lut4_;
  mutable std::vector<int32_t> lut4_colsum_;
  mutable std::vector<int64_t> hybrid_units_;
  mutable std::map<int64_t, std::unique_ptr<ShiftHybrid>> hybrids_;
};

struct ShiftArgs {
  const void* a = nullptr;  // [M, K] contiguous
  ShiftActType a_type = ShiftActType::kU8;
  int64_t M = 0, K = 0;
  int32_t a_zero_point = 0;
  const PackedShift* w = nullptr;
  const int32_t* bias = nullptr;  // N entries or null
  int acc_bits = 32;
  ShiftKernel kernel = ShiftKernel::kAuto;
  OutKind out_kind = OutKind::kInt32;
  void* out = nullptr;  // [M, N]
  const RequantParams* requant = nullptr;
  int32_t zp_y = 0, lo = 0, hi = 0;
};

// The kernel shift_gemm would run, by name (for tests and benchmarks).
std::string shift_gemm_kernel_name(const ShiftArgs& args);

// The whole operator. Thread-safe; does not touch Python. std::invalid_argument on
// bad arguments (e.g. kernel=multiply for weights with right shifts).
void shift_gemm(const ShiftArgs& args);

}  // namespace pyq
