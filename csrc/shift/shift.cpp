#include "shift/shift.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/threadpool.h"
#include "qgemm/epilogue.h"

namespace pyq {

namespace {

constexpr int kExpBins = 62;  // exponents -31 .. 30
constexpr int64_t kTileRows = 48;
constexpr int64_t kMinTermsPerThread = int64_t{1} << 18;

// ceil(max_a * 2^e): the bound of one term product (section 12.3).
inline int64_t term_bound(int64_t max_a, int e) {
  if (e >= 0) return max_a << e;  // max_a <= 2^31, e <= 30
  return (max_a + (int64_t{1} << -e) - 1) >> -e;
}

}  // namespace

PackedShift::PackedShift(const int8_t* signs, const int8_t* exponents, int T, int64_t K, int64_t N, ShiftRule rule)
    : K_(K), N_(N), T_(T), rule_(rule) {
  if (T < 1 || T > 3) throw std::invalid_argument("a shift weight has 1 to 3 terms (T)");
  if (K <= 0 || N <= 0) throw std::invalid_argument("shift weights must have K > 0 and N > 0");
  const int elo = rule == ShiftRule::kExact ? 0 : -31, ehi = 30;
  const int64_t KN = K * N;
  for (int64_t i = 0; i < T * KN; ++i) {
    const int s = signs[i], e = exponents[i];
    if (s < -1 || s > 1) throw std::invalid_argument("signs must be in {-1, 0, +1}");
    if (s != 0 && (e < elo || e > ehi))
      throw std::invalid_argument("exponent " + std::to_string(e) + " is outside [" + std::to_string(elo) + ", " +
                                  std::to_string(ehi) + "] of the rule");
    if (s != 0 && e < 0) right_shifts_ = true;
  }
  terms_.resize(static_cast<size_t>(N * K * T * 2));
  negcnt_.assign(N, 0);
  hist_.assign(static_cast<size_t>(N * kExpBins), 0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      for (int t = 0; t < T; ++t) {
        const int64_t src = t * KN + k * N + n;
        const int8_t s = signs[src], e = s ? exponents[src] : 0;
        int8_t* d = &terms_[static_cast<size_t>(((n * K + k) * T + t) * 2)];
        d[0] = s;
        d[1] = e;
        if (s < 0) ++negcnt_[n];
        if (s != 0) ++hist_[n * kExpBins + e + 31];
      }
  if (!right_shifts_) {  // integer values: the multiply form
    __int128 span = 0;  // 255 * sum of 2^e per column: counts < 2^31 times 255 * 2^30 fit __int128
    for (int64_t n = 0; n < N; ++n) {
      __int128 c = 0;
      for (int i = 31; i < kExpBins; ++i) c += static_cast<__int128>(hist_[n * kExpBins + i]) * (int64_t{255} << (i - 31));
      span = std::max(span, c);
    }
    packed_span_ = static_cast<int64_t>(std::min<__int128>(span, INT64_MAX));
    wmin_ = INT64_MAX;
    wmax_ = INT64_MIN;
    std::vector<int64_t> seen;
    for (int64_t i = 0; i < N * K; ++i) {
      const int64_t v = decoded(i);
      wmin_ = std::min(wmin_, v);
      wmax_ = std::max(wmax_, v);
      if (seen.size() <= 16 && std::find(seen.begin(), seen.end(), v) == seen.end()) seen.push_back(v);
    }
    // The LUT kernel's table: index 0 is the value 0 (the padding past K), then
    // the other values in increasing order.
    if (std::find(seen.begin(), seen.end(), int64_t{0}) == seen.end()) seen.push_back(0);
    distinct_ = static_cast<int>(std::min<size_t>(seen.size(), 17));
    if (distinct_ <= 16 && wmin_ >= -128 && wmax_ <= 127) {
      std::sort(seen.begin(), seen.end(), [](int64_t a, int64_t b) { return (a != 0 && b == 0) ? false : (a == 0 && b != 0) ? true : a < b; });
      for (int64_t v : seen) lut_.push_back(static_cast<int8_t>(v));
    }
  } else {
    distinct_ = 17;
  }
}

__int128 PackedShift::column_bound(int64_t n, int64_t max_a) const {
  __int128 b = negcnt_[n];
  const int32_t* h = &hist_[static_cast<size_t>(n * kExpBins)];
  for (int i = 0; i < kExpBins; ++i)
    if (h[i]) b += static_cast<__int128>(h[i]) * term_bound(max_a, i - 31);
  return b;
}

__int128 PackedShift::worst_bound(int64_t max_a) const {
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = worst_.find(max_a);
    if (it != worst_.end()) return it->second;
  }
  __int128 worst = 0;
  for (int64_t n = 0; n < N_; ++n) worst = std::max(worst, column_bound(n, max_a));
  std::lock_guard<std::mutex> g(mu_);
  worst_[max_a] = worst;
  return worst;
}

const ShiftPlan& PackedShift::plan_for(int64_t max_a, bool x_fits_int16) const {
  const int64_t key = max_a * 2 + (x_fits_int16 ? 1 : 0);
  std::lock_guard<std::mutex> g(mu_);
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  auto plan = std::make_unique<ShiftPlan>();
  const int64_t panels = (N_ + kShiftPanel - 1) / kShiftPanel;
  std::vector<int64_t> cur(kShiftPanel), tb(kShiftPanel);
  for (int64_t pn = 0; pn < panels; ++pn) {
    const int64_t n0 = pn * kShiftPanel, cnt = std::min<int64_t>(kShiftPanel, N_ - n0);
    __int128 worst = 0;
    for (int64_t j = 0; j < cnt; ++j) worst = std::max(worst, column_bound(n0 + j, max_a));
    plan->block_begin.push_back(static_cast<int64_t>(plan->block_end.size()));
    if (worst > INT32_MAX) {
      plan->mode.push_back(static_cast<int32_t>(LaneMode::kWide));
      continue;
    }
    // int16 lanes over k blocks whose partial bound (plus the negative-term
    // count, the one's-complement correction) is at most 2^15 - 1.
    bool int16_ok = x_fits_int16;
    std::vector<int32_t> ends;
    std::fill(cur.begin(), cur.end(), 0);
    for (int64_t k = 0; int16_ok && k < K_; ++k) {
      bool cut = false;
      for (int64_t j = 0; j < cnt; ++j) {
        int64_t b = 0;
        const int8_t* d = &terms_[static_cast<size_t>(((n0 + j) * K_ + k) * T_ * 2)];
        for (int t = 0; t < T_; ++t)
          if (d[2 * t]) b += term_bound(max_a, d[2 * t + 1]) + (d[2 * t] < 0 ? 1 : 0);
        if (b > 32767) int16_ok = false;
        tb[j] = b;
        if (cur[j] + b > 32767) cut = true;
      }
      if (!int16_ok) break;
      if (cut) {
        ends.push_back(static_cast<int32_t>(k));
        std::fill(cur.begin(), cur.end(), 0);
      }
      for (int64_t j = 0; j < cnt; ++j) cur[j] += tb[j];
    }
    ends.push_back(static_cast<int32_t>(K_));
    // Short blocks spend more on widening than int16 lanes save.
    if (int16_ok && K_ >= 8 * static_cast<int64_t>(ends.size())) {
      plan->mode.push_back(static_cast<int32_t>(LaneMode::kInt16));
      plan->block_end.insert(plan->block_end.end(), ends.begin(), ends.end());
    } else {
      plan->mode.push_back(static_cast<int32_t>(LaneMode::kInt32));
    }
  }
  plan->block_begin.push_back(static_cast<int64_t>(plan->block_end.size()));
  const ShiftPlan& ref = *plan;
  plans_.emplace(key, std::move(plan));
  return ref;
}

const int16_t* PackedShift::pack16() const {
  std::lock_guard<std::mutex> g(mu_);
  if (pack16_.empty()) {
    // The SIMD layout: per 64-column panel, per k, per term: shift counts, sign masks.
    const int64_t panels = (N_ + kShiftPanel - 1) / kShiftPanel;
    const int64_t re = row_elems();
    std::vector<int16_t> pack16(static_cast<size_t>(panels * K_ * T_ * re), 0);
    for (int64_t pn = 0; pn < panels; ++pn)
      for (int64_t k = 0; k < K_; ++k)
        for (int t = 0; t < T_; ++t) {
          int16_t* rec = &pack16[static_cast<size_t>(((pn * K_ + k) * T_ + t) * re)];
          for (int j = 0; j < kShiftPanel; ++j) {
            const int64_t n = pn * kShiftPanel + j;
            int s = 0, e = 0;
            if (n < N_) {
              const int8_t* d = &terms_[static_cast<size_t>(((n * K_ + k) * T_ + t) * 2)];
              s = d[0];
              e = d[1];
            }
            rec[j] = static_cast<int16_t>(s == 0 ? kShiftOffCount : (e > 0 ? e : 0));
            rec[kShiftPanel + j] = static_cast<int16_t>(s < 0 ? -1 : 0);
            if (right_shifts_) rec[2 * kShiftPanel + j] = static_cast<int16_t>(s != 0 && e < 0 ? -e : 0);
          }
        }
    pack16_ = std::move(pack16);
  }
  return pack16_.data();
}

const std::vector<int64_t>& PackedShift::decoded_nk() const {
  std::lock_guard<std::mutex> g(mu_);
  if (w_nk_.empty()) {
    w_nk_.resize(static_cast<size_t>(N_ * K_));
    for (int64_t i = 0; i < N_ * K_; ++i) w_nk_[static_cast<size_t>(i)] = decoded(i);
  }
  return w_nk_;
}

const int32_t* PackedShift::pack32() const {
  pack16();
  std::lock_guard<std::mutex> g(mu_);
  if (pack32_.empty()) pack32_.assign(pack16_.begin(), pack16_.end());
  return pack32_.data();
}

namespace {

constexpr uint16_t kZeroRow = 64 * 2 * kShiftBucketK;  // the zero row of a block's table

// The table offsets of column n's active terms in k block kb, grouped by exponent:
// rows[e] (the caller's array covers every exponent the terms use).
// kbk: k's per block (kShiftBucketK, or the packed fields' block).
template <size_t E>
void block_rows(const std::vector<int8_t>& terms, int64_t K, int T, int64_t n, int64_t kb,
                std::vector<uint16_t> (&rows)[E], int64_t kbk = kShiftBucketK) {
  for (auto& r : rows) r.clear();
  const int64_t k1 = std::min<int64_t>(K, (kb + 1) * kbk);
  for (int64_t k = kb * kbk; k < k1; ++k)
    for (int t = 0; t < T; ++t) {
      const int8_t* d = &terms[static_cast<size_t>(((n * K + k) * T + t) * 2)];
      const int64_t off = k - kb * kbk;
      if (d[0] != 0) rows[d[1]].push_back(static_cast<uint16_t>(64 * (d[0] > 0 ? off : kbk + off)));
    }
}

// The rows-in-lanes streams (section 12.4a): per column n and k block kb, the table
// offsets of the active terms grouped by exponent (rows[e], e in [0, 30]); emit(rows,
// stream) appends the block's records.
// The records lie in the order a panel's kernel reads them when panel_major (panel,
// k block, column), else column by column.
template <typename Emit>
void fill_rows_stream(ShiftBuckets* b, const std::vector<int8_t>& terms, int64_t K, int64_t N, int T, Emit emit,
                      int64_t kbk = kShiftBucketK, bool panel_major = false) {
  b->nkb = (K + kbk - 1) / kbk;
  b->start.resize(static_cast<size_t>(N * b->nkb));
  std::vector<uint16_t> rows[31];
  auto one = [&](int64_t n, int64_t kb) {
    b->start[n * b->nkb + kb] = static_cast<int64_t>(b->stream.size());
    block_rows(terms, K, T, n, kb, rows, kbk);
    emit(rows, &b->stream);
  };
  if (panel_major) {
    for (int64_t n0 = 0; n0 < N; n0 += kShiftPanel)
      for (int64_t kb = 0; kb < b->nkb; ++kb)
        for (int64_t n = n0; n < std::min<int64_t>(N, n0 + kShiftPanel); ++n) one(n, kb);
  } else {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t kb = 0; kb < b->nkb; ++kb) one(n, kb);
  }
}
template <typename Emit>
std::unique_ptr<ShiftBuckets> rows_stream(const std::vector<int8_t>& terms, int64_t K, int64_t N, int T, Emit emit) {
  auto b = std::make_unique<ShiftBuckets>();
  fill_rows_stream(b.get(), terms, K, N, T, emit);
  return b;
}

}  // namespace

const ShiftBuckets& PackedShift::buckets() const {
  std::lock_guard<std::mutex> g(mu_);
  if (!buckets_)
    buckets_ = rows_stream(terms_, K_, N_, T_, [](const std::vector<uint16_t>* rows, std::vector<uint16_t>* st) {
      for (int e = 0; e < 31; ++e)
        for (size_t i = 0; i < rows[e].size(); i += 128) {  // groups of <= 128 offsets
          const size_t cnt = std::min<size_t>(128, rows[e].size() - i), chunks = (cnt + 3) / 4;
          st->push_back(static_cast<uint16_t>(e));
          st->push_back(static_cast<uint16_t>(chunks));
          st->insert(st->end(), rows[e].begin() + i, rows[e].begin() + i + cnt);
          st->insert(st->end(), 4 * chunks - cnt, kZeroRow);
        }
      st->push_back(0xFFFF);
    });
  return *buckets_;
}

const ShiftPackedStream& PackedShift::packed_stream() const {
  if (!decodable()) throw std::logic_error("the packed-field kernel needs exponents >= 0");
  std::lock_guard<std::mutex> g(mu_);
  if (!packed_) {
    auto p = std::make_unique<ShiftPackedStream>();
    const int64_t nkb = (K_ + kShiftPackedMaxK - 1) / kShiftPackedMaxK;
    p->kbk = (K_ + nkb - 1) / nkb;
    const uint16_t kZero = static_cast<uint16_t>(64 * 2 * p->kbk);  // <= 64 * 766
    fill_rows_stream(
        &p->b, terms_, K_, N_, T_,
        [kZero](const std::vector<uint16_t>* rows, std::vector<uint16_t>* st) {
          for (int e = 0; e < 31; ++e)
            for (size_t i = 0; i < rows[e].size(); i += kShiftPackedGroup) {
              const size_t cnt = std::min<size_t>(kShiftPackedGroup, rows[e].size() - i), chunks = (cnt + 3) / 4;
              st->push_back(static_cast<uint16_t>(e));
              st->push_back(static_cast<uint16_t>(chunks));
              st->insert(st->end(), rows[e].begin() + i, rows[e].begin() + i + cnt);
              st->insert(st->end(), 4 * chunks - cnt, kZero);
            }
          st->push_back(0xFFFF);
        },
        p->kbk, true);
    p->colsum.assign(static_cast<size_t>(N_), 0);
    p->comp.assign(static_cast<size_t>(N_), 0);
    for (int64_t n = 0; n < N_; ++n)
      for (int64_t k = 0; k < K_; ++k)
        for (int t = 0; t < T_; ++t) {
          const int8_t* d = &terms_[static_cast<size_t>(((n * K_ + k) * T_ + t) * 2)];
          if (d[0] == 0) continue;
          p->colsum[n] += d[0] * (int64_t{1} << d[1]);
          if (d[0] < 0) p->comp[n] += int64_t{255} << d[1];
        }
    packed_ = std::move(p);
  }
  return *packed_;
}

int PackedShift::max_exponent() const {
  for (int i = kExpBins - 1; i >= 0; --i)
    for (int64_t n = 0; n < N_; ++n)
      if (hist_[static_cast<size_t>(n * kExpBins + i)]) return i - 31;
  return -32;
}

const ShiftBuckets& PackedShift::chunks(int C) const {
  if (max_exponent() > kShiftChunkMaxExp) throw std::logic_error("chunks need exponents in [0, 16]");
  std::lock_guard<std::mutex> g(mu_);
  auto& slot = chunks_[C == 16 ? 1 : 0];
  if (!slot)
    slot = rows_stream(terms_, K_, N_, T_, [C](const std::vector<uint16_t>* rows, std::vector<uint16_t>* st) {
      // [n_C, n_4], the C-term records, then the 4-term records of each group's rest
      const size_t head = st->size();
      st->push_back(0);
      st->push_back(0);
      std::vector<uint16_t> tail;
      uint16_t nc = 0, n4 = 0;  // <= 3 * 127 terms per column and block
      auto emit = [](std::vector<uint16_t>* out, int e, const uint16_t* o, size_t cnt, size_t size) {
        out->push_back(static_cast<uint16_t>(kShiftChunkMaxExp - e));
        out->insert(out->end(), o, o + cnt);
        out->insert(out->end(), size - cnt, kZeroRow);
      };
      for (int e = 0; e <= kShiftChunkMaxExp; ++e) {
        const size_t L = rows[e].size(), full = L / C * C;
        for (size_t i = 0; i < full; i += C, ++nc) emit(st, e, rows[e].data() + i, C, C);
        for (size_t i = full; i < L; i += 4, ++n4) emit(&tail, e, rows[e].data() + i, std::min<size_t>(4, L - i), 4);
      }
      st->insert(st->end(), tail.begin(), tail.end());
      (*st)[head] = nc;
      (*st)[head + 1] = n4;
    });
  return *slot;
}

const PackedWeights& PackedShift::int8_weights() const {
  std::lock_guard<std::mutex> g(mu_);
  if (!w8_) {
    std::vector<int8_t> b(static_cast<size_t>(K_ * N_));
    for (int64_t n = 0; n < N_; ++n)
      for (int64_t k = 0; k < K_; ++k) b[k * N_ + n] = static_cast<int8_t>(decoded(n * K_ + k));
    const int32_t zp = 0;
    w8_ = std::make_unique<PackedWeights>(reinterpret_cast<const uint8_t*>(b.data()), true, K_, N_, N_, &zp, 1, 8);
  }
  return *w8_;
}

const std::vector<int32_t>& PackedShift::int32_weights_kn() const {
  std::lock_guard<std::mutex> g(mu_);
  if (w32_kn_.empty()) {
    w32_kn_.resize(static_cast<size_t>(K_ * N_));
    for (int64_t n = 0; n < N_; ++n)
      for (int64_t k = 0; k < K_; ++k) w32_kn_[k * N_ + n] = static_cast<int32_t>(decoded(n * K_ + k));
  }
  return w32_kn_;
}

#if defined(PYQ_X86)
const uint8_t* PackedShift::lut4_packed() const {
  std::lock_guard<std::mutex> g(mu_);
  if (!lut4_) {
    const GemmKernel* kern = avx512vnni_lut4_gemm_kernel();
    lut4_ = std::make_unique<AlignedBuffer>(64 + kern->packed_size(N_, K_));
    uint8_t* lut = lut4_->data();
    for (int i = 0; i < 64; ++i) lut[i] = static_cast<uint8_t>(i % 16 < static_cast<int>(lut_.size()) ? lut_[i % 16] : 0);
    std::vector<int8_t> idx(static_cast<size_t>(N_ * K_));
    lut4_colsum_.assign(N_, 0);
    for (int64_t i = 0; i < N_ * K_; ++i) {
      const int8_t v = static_cast<int8_t>(decoded(i));
      idx[static_cast<size_t>(i)] = static_cast<int8_t>(std::find(lut_.begin(), lut_.end(), v) - lut_.begin());
      lut4_colsum_[i / K_] += v;
    }
    kern->pack(idx.data(), N_, K_, lut + 64);
  }
  return lut4_->data() + 64;
}

const std::vector<int32_t>& PackedShift::lut4_colsum() const {
  lut4_packed();
  return lut4_colsum_;
}
#endif

namespace {

// Per column n and k block: the active terms' table offsets grouped by exponent
// (rows[e], e <= 16), as rows_stream; visit(n, kb, rows) sees each.
template <typename Visit>
void hybrid_groups(const std::vector<int8_t>& terms, int64_t K, int T, int64_t n0, int64_t n1, bool kb_major,
                   Visit visit) {
  const int64_t nkb = (K + kShiftBucketK - 1) / kShiftBucketK;
  std::vector<uint16_t> rows[kShiftChunkMaxExp + 1];
  auto one = [&](int64_t n, int64_t kb) {
    block_rows(terms, K, T, n, kb, rows);
    visit(n, kb, rows);
  };
  if (kb_major) {
    for (int64_t kb = 0; kb < nkb; ++kb)
      for (int64_t n = n0; n < n1; ++n) one(n, kb);
  } else {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t kb = 0; kb < nkb; ++kb) one(n, kb);
  }
}

}  // namespace

int64_t PackedShift::hybrid_units(int64_t n) const {
  std::lock_guard<std::mutex> g(mu_);
  if (hybrid_units_.empty()) {
    std::vector<int64_t> cnt(static_cast<size_t>(N_), 0);
    hybrid_groups(terms_, K_, T_, 0, N_, false, [&](int64_t c, int64_t, const std::vector<uint16_t>* rows) {
      for (int e = 0; e <= kShiftChunkMaxExp; ++e) cnt[c] += static_cast<int64_t>((rows[e].size() + 7) / 8);
    });
    hybrid_units_ = std::move(cnt);
  }
  return hybrid_units_[n];
}

#if defined(PYQ_X86)
const ShiftHybrid& PackedShift::hybrid(int64_t Nv) const {
  if (!fits_int8() || max_exponent() > kShiftChunkMaxExp || Nv < 1 || Nv >= N_)
    throw std::logic_error("the hybrid needs int8 values, exponents <= 16 and 1 <= Nv < N");
  std::lock_guard<std::mutex> g(mu_);
  auto it = hybrids_.find(Nv);
  if (it != hybrids_.end()) return *it->second;
  auto h = std::make_unique<ShiftHybrid>();
  h->Nv = Nv;
  std::vector<int8_t> w(static_cast<size_t>(Nv * K_));
  h->colsum.assign(static_cast<size_t>(Nv), 0);
  for (int64_t i = 0; i < Nv * K_; ++i) {
    w[static_cast<size_t>(i)] = static_cast<int8_t>(decoded(i));
    h->colsum[static_cast<size_t>(i / K_)] += w[static_cast<size_t>(i)];
  }
  const GemmKernel* kern = avx512vnni_gemm_kernel();
  h->packed = std::make_unique<AlignedBuffer>(kern->packed_size(Nv, K_));
  kern->pack(w.data(), Nv, K_, h->packed->data());
  hybrid_groups(terms_, K_, T_, Nv, N_, true, [&](int64_t n, int64_t kb, const std::vector<uint16_t>* rows) {
    for (int e = 0; e <= kShiftChunkMaxExp; ++e)
      for (size_t i = 0; i < rows[e].size(); i += 8) {
        uint16_t o[8];
        for (size_t j = 0; j < 8; ++j) o[j] = i + j < rows[e].size() ? rows[e][i + j] : kZeroRow;
        uint64_t lo = 0, hi = 0;
        for (int j = 3; j >= 0; --j) {
          lo = (lo << 16) | o[j];
          hi = (hi << 16) | o[4 + j];
        }
        h->units.push_back(static_cast<uint64_t>(kb) | static_cast<uint64_t>(kShiftChunkMaxExp - e) << 16 |
                           static_cast<uint64_t>(n - Nv) << 32);
        h->units.push_back(lo);
        h->units.push_back(hi);
      }
  });
  const ShiftHybrid& ref = *h;
  hybrids_.emplace(Nv, std::move(h));
  return ref;
}
#endif

size_t PackedShift::packed_bytes() const {
  std::lock_guard<std::mutex> g(mu_);
  size_t total = pack16_.size() * 2 + terms_.size() + w_nk_.size() * 8;
  if (w8_) total += w8_->packed_bytes();
  total += w32_kn_.size() * 4 + pack32_.size() * 4;
  if (lut4_) total += lut4_->size();
  for (const auto& h : hybrids_) total += h.second->packed->size() + h.second->units.size() * 8 + h.second->colsum.size() * 4;
  if (buckets_) total += buckets_->stream.size() * 2 + buckets_->start.size() * 8;
  for (const auto& c : chunks_)
    if (c) total += c->stream.size() * 2 + c->start.size() * 8;
  if (packed_) total += packed_->b.stream.size() * 2 + packed_->b.start.size() * 8 + packed_->colsum.size() * 16;
  return total;
}

// ------------------------------------------------------------------ operator

namespace {

std::atomic<int> g_rows_variant{0};
std::atomic<int> g_hybrid_period{0};
std::atomic<int64_t> g_hybrid_ns{0};
constexpr int kHybridDefaultPeriod = 2;  // measured: 0.93x vs 0.89x (period 1) at 1024^3

enum class Route { kShift, kShiftBucket, kShiftPacked, kMulInt8, kMulLut4, kMulInt32, kMulWide, kHybrid };

struct Prepared {
  Route route = Route::kShift;
  int64_t max_a = 0;
  bool x16_ok = false;
  const ShiftPlan* plan = nullptr;
  ShiftComputeFn compute = nullptr;
  ShiftMulFn mul32 = nullptr;
  int chunk = 0;  // kShiftBucket: terms per chunk (8, 16), or 0 for the exponent groups
  int64_t hybrid_nv = 0;  // kHybrid: VNNI columns [0, hybrid_nv)
  int hybrid_period = 1;
  bool wide128 = false;
  bool no_saturation = false;
  std::string name;
};

void act_range(ShiftActType t, int64_t* lo, int64_t* hi) {
  switch (t) {
    case ShiftActType::kU8: *lo = 0; *hi = 255; break;
    case ShiftActType::kS8: *lo = -128; *hi = 127; break;
    case ShiftActType::kS16: *lo = -32768; *hi = 32767; break;
    default: *lo = INT32_MIN; *hi = INT32_MAX; break;
  }
}

void check_args(const ShiftArgs& g) {
  const PackedShift& w = *g.w;
  if (g.K != w.K()) throw std::invalid_argument("activation K does not match the shift weights");
  if (g.M < 0) throw std::invalid_argument("M must be >= 0");
  if (g.acc_bits < 8 || g.acc_bits > 32) throw std::invalid_argument("acc_bits must be in [8, 32]");
  int64_t lo, hi;
  act_range(g.a_type, &lo, &hi);
  if (g.a_zero_point < lo || g.a_zero_point > hi) throw std::invalid_argument("a_zero_point out of a's range");
  const bool eight = g.a_type == ShiftActType::kU8 || g.a_type == ShiftActType::kS8;
  if (g.a_zero_point != 0 && (!eight || w.rule() != ShiftRule::kExact))
    throw std::invalid_argument("a_zero_point must be 0 for 16/32-bit activations and for rule deepshift");
  if (w.rule() == ShiftRule::kDeepShift && g.a_type == ShiftActType::kU8)
    throw std::invalid_argument("rule deepshift needs signed activations (int8, int16, int32)");
}

// The hybrid's column split (section 12.4a), in units of one 6x64x4 VNNI step: a
// row block of 30 rows runs 5 * panels(Nv) * ceil(K/4) steps and absorbs one unit per
// `period` of them; units beyond that run alone (about kAloneCost of a step each),
// absorbed ones cost kFusedCost extra: 0.17 measured at 1024^3 with one table per
// thread (0.09 in the port microbenchmark), against the 256 / 1536 = 0.167 step of
// VNNI work a unit replaces, so the model finds no profitable split for the layers
// measured so far and kernel="hybrid" takes the multiply route there. Nv runs over
// multiples of 64; the split with the lowest modelled cost wins if it beats all
// columns on VNNI (5 * ceil(N/64) * ceil(K/4) steps). Returns Nv (0: no split; the
// caller then takes the multiply route).
constexpr double kAloneCost = 0.5, kFusedCost = 0.17;
int64_t hybrid_split(const PackedShift& w, int period) {
  const int64_t N = w.N(), kg = (w.K() + 3) / 4;
  const int64_t forced = g_hybrid_ns.load();
  if (forced > 0) return forced < N ? N - forced : 0;
  int64_t best_nv = 0;
  double best = 5.0 * static_cast<double>((N + 63) / 64 * kg);
  int64_t units = 0;  // of columns [Nv, N)
  for (int64_t nv = N - 1; nv >= 64; --nv) {
    units += w.hybrid_units(nv);
    if (nv % 64 != 0) continue;
    const double steps = 5.0 * static_cast<double>(nv / 64 * kg);
    const double cap = steps / period, u = static_cast<double>(units);
    const double cost = steps + kFusedCost * std::min(u, cap) + kAloneCost * std::max(0.0, u - cap);
    if (cost < best) {
      best = cost;
      best_nv = nv;
    }
  }
  return best_nv;
}

Prepared prepare(const ShiftArgs& g) {
  check_args(g);
  const PackedShift& w = *g.w;
  Prepared pr;
  int64_t lo, hi;
  act_range(g.a_type, &lo, &hi);
  pr.max_a = std::max<int64_t>(g.a_zero_point - lo, hi - g.a_zero_point);
  pr.x16_ok = pr.max_a <= 32768;  // every a - za fits int16
  const __int128 worst = w.worst_bound(pr.max_a);
  int64_t max_bias = 0;
  for (int64_t n = 0; g.bias && n < w.N(); ++n) max_bias = std::max<int64_t>(max_bias, std::abs(int64_t{g.bias[n]}));
  // |exact| <= worst + max|bias| <= 2^(W-1) - 1: the saturation is the identity, so the
  // multiply kernels may add the bias and requantize in their own epilogue.
  pr.no_saturation = worst + max_bias <= (int64_t{1} << (g.acc_bits - 1)) - 1;
  pr.wide128 = worst > (static_cast<__int128>(1) << 62);
  const bool eight = g.a_type == ShiftActType::kU8 || g.a_type == ShiftActType::kS8;
  const KernelPath path = active_path();
  const bool fits32 = worst <= INT32_MAX;
  ShiftKernel kern = g.kernel;
  if (kern == ShiftKernel::kAuto) {
    kern = w.decodable() ? ShiftKernel::kMultiply : ShiftKernel::kShift;
    // Values past int8 with an int32 bound would take the int32-lane multiply
    // kernel; the shift kernels measured faster there for 8-bit activations (1.4-5x)
    // and for 16-bit activations from 8 rows on (1.3-2.2x; 0.66-1.04x for one row).
    if (kern == ShiftKernel::kMultiply && !(eight && w.fits_int8()) && w.fits_int32() && fits32 &&
        (eight || g.M >= 8))
      kern = ShiftKernel::kShift;
  }
#if defined(PYQ_X86)
  if (kern == ShiftKernel::kHybrid) {
    // VNNI columns + shift columns in one loop: int8 values, exponents <= 16, an
    // int32 bound and no saturation (the VNNI epilogue stores the final values).
    const int period = g_hybrid_period.load() > 0 ? g_hybrid_period.load() : kHybridDefaultPeriod;
    // Fewer rows than one block: the block's table and the tiles' bookkeeping cost more
    // than the split can save (a GEMV ran at 0.06x of the multiply route with a split).
    const int64_t nv = path == KernelPath::kAvx512vnni && eight && w.fits_int8() && fits32 && pr.no_saturation &&
                               (g.M >= kHybridRows || g_hybrid_ns.load() > 0) &&
                               w.max_exponent() <= kShiftChunkMaxExp && w.K() < 65536 * kShiftBucketK
                           ? hybrid_split(w, period)
                           : 0;
    if (nv > 0) {
      pr.route = Route::kHybrid;
      pr.hybrid_nv = nv;
      pr.hybrid_period = period;
      pr.name = "hybrid_vnni" + std::to_string(nv) + "+shift" + std::to_string(w.N() - nv) + "_p" +
                std::to_string(period) + "_avx512vnni";
      return pr;
    }
  }
#endif
  if (kern == ShiftKernel::kHybrid) kern = w.decodable() ? ShiftKernel::kMultiply : ShiftKernel::kShift;
  if (kern == ShiftKernel::kMultiply) {
    if (!w.decodable())
      throw std::invalid_argument(
          "kernel='multiply' needs integer weight values; rule deepshift with negative exponents floors each "
          "term product (section 12.1) and has no multiply form: use kernel='shift' or 'auto'");
    if (eight && w.fits_int8() && fits32) {
#if defined(PYQ_X86)
      if (path == KernelPath::kAvx512vnni && w.distinct_values() <= 16 && g.M <= 16) {
        pr.route = Route::kMulLut4;
        pr.name = "mul_lut4_6x64c8_avx512vnni";
        return pr;
      }
#endif
      pr.route = Route::kMulInt8;
      pr.name = std::string("mul_int8:") + gemm_kernel_for(path)->name;
      return pr;
    }
    if (w.fits_int32() && fits32) {
      pr.route = Route::kMulInt32;
      pr.mul32 = shift_mul32_scalar;
      pr.name = "mul_int32_scalar";
#if defined(PYQ_X86)
      if (path == KernelPath::kAvx512bw || path == KernelPath::kAvx512vnni) {
        pr.mul32 = shift_mul32_avx512bw;
        pr.name = "mul_int32_avx512bw";
      }
#endif
      return pr;
    }
    pr.route = Route::kMulWide;
    pr.name = pr.wide128 ? "mul_int128_scalar" : "mul_int64_scalar";
    return pr;
  }
  pr.route = Route::kShift;
  pr.plan = &w.plan_for(pr.max_a, pr.x16_ok);
#if defined(PYQ_X86)
  // Rows in lanes: 8-bit activations (a group of 128 fits int16), no right shifts, an
  // int32 column bound, enough rows for the 32 int16 lanes. Chunks (every exponent
  // <= 16) measured at or above the int16 column lanes; the exponent buckets only
  // where some panel would run on int32 column lanes. A forced variant
  // (set_shift_rows_variant) overrides the rule.
  const bool all16 = std::all_of(pr.plan->mode.begin(), pr.plan->mode.end(),
                                 [](int32_t m) { return m == static_cast<int32_t>(LaneMode::kInt16); });
  const int v = g_rows_variant.load();
  const bool chunkable = w.max_exponent() <= kShiftChunkMaxExp;
  // Packed fields: 48 rows per table load instead of 32, any zero point, columns
  // whose table sums fit uint32; measured 1.1-2.0x the chunks of 16 from 32 rows on
  // (1024^3 pot4: 0.46x the multiply kernel against 0.31x).
  if ((path == KernelPath::kAvx512bw || path == KernelPath::kAvx512vnni) && eight && w.decodable() &&
      g.M >= 32 && (v == 0 || v == 5) && w.packed_span() < (int64_t{1} << 32)) {
    pr.route = Route::kShiftPacked;
    pr.name = "shift_packed48_avx512bw";
    return pr;
  }
  if ((path == KernelPath::kAvx512bw || path == KernelPath::kAvx512vnni) && eight && w.decodable() &&
      worst <= INT32_MAX && g.M >= 32 && pr.max_a <= 255 && (v == 0 ? chunkable || !all16 : v != 4)) {
    pr.route = Route::kShiftBucket;
    if (v != 1 && chunkable) pr.chunk = v == 2 ? 8 : 16;
    pr.name = pr.chunk ? "shift_chunk" + std::to_string(pr.chunk) + "_avx512bw" : "shift_bucket_avx512bw";
    return pr;
  }
#endif
  pr.compute = shift_compute_scalar;
  pr.name = "shift_scalar";
#if defined(PYQ_X86)
  if (path == KernelPath::kAvx512bw || path == KernelPath::kAvx512vnni) {
    pr.compute = shift_compute_avx512bw;
    pr.name = "shift_avx512bw";
  } else if (path == KernelPath::kAvx2 || path == KernelPath::kAvxVnni) {
    pr.compute = shift_compute_avx2;
    pr.name = "shift_avx2";
  }
#endif
  int c16 = 0, c32 = 0, cw = 0;
  for (int32_t m : pr.plan->mode) (m == 0 ? c16 : (m == 1 ? c32 : cw))++;
  pr.name += ":int16x" + std::to_string(c16) + ",int32x" + std::to_string(c32) + ",wide" +
             std::string(pr.wide128 ? "128" : "64") + "x" + std::to_string(cw);
  return pr;
}

// x = a - za as int32 (and int16 when every value fits).
void load_activations(const ShiftArgs& g, std::vector<int32_t>* x, std::vector<int16_t>* x16, bool want16) {
  const int64_t n = g.M * g.K;
  x->resize(static_cast<size_t>(n));
  int32_t* d = x->data();
  const int32_t za = g.a_zero_point;
  switch (g.a_type) {
    case ShiftActType::kU8: {
      const uint8_t* s = static_cast<const uint8_t*>(g.a);
      for (int64_t i = 0; i < n; ++i) d[i] = static_cast<int32_t>(s[i]) - za;
      break;
    }
    case ShiftActType::kS8: {
      const int8_t* s = static_cast<const int8_t*>(g.a);
      for (int64_t i = 0; i < n; ++i) d[i] = static_cast<int32_t>(s[i]) - za;
      break;
    }
    case ShiftActType::kS16: {
      const int16_t* s = static_cast<const int16_t*>(g.a);
      for (int64_t i = 0; i < n; ++i) d[i] = s[i];
      break;
    }
    default: std::memcpy(d, g.a, static_cast<size_t>(n) * 4); break;
  }
  if (want16) {
    x16->resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) (*x16)[i] = static_cast<int16_t>(d[i]);
  }
}

// acc = sat_W(sum + bias), then the int32 store or the requantized 8-bit store.
void finish_row(const ShiftArgs& g, const GemmProblem& ep, int64_t m, int64_t n0, int64_t cnt, const int64_t* sums) {
  int32_t acc[kShiftPanel];
  const int64_t lo = -(int64_t{1} << (g.acc_bits - 1)), hi = (int64_t{1} << (g.acc_bits - 1)) - 1;
  for (int64_t j = 0; j < cnt; ++j) {
    int64_t v = sums[j] + (g.bias ? g.bias[n0 + j] : 0);  // |sums| <= 2^62: no overflow
    acc[j] = static_cast<int32_t>(v < lo ? lo : (v > hi ? hi : v));
  }
  const int64_t N = g.w->N();
  switch (g.out_kind) {
    case OutKind::kInt32:
      std::memcpy(static_cast<int32_t*>(g.out) + m * N + n0, acc, static_cast<size_t>(cnt) * 4);
      break;
    case OutKind::kUint8: requant_store(ep, acc, n0, cnt, static_cast<uint8_t*>(g.out) + m * N + n0); break;
    case OutKind::kInt8: requant_store(ep, acc, n0, cnt, static_cast<int8_t*>(g.out) + m * N + n0); break;
  }
}

GemmProblem epilogue_params(const ShiftArgs& g) {
  GemmProblem ep;
  if (g.requant) {
    ep.mode = g.requant->mode;
    if (!g.requant->scale.empty()) ep.scale = g.requant->scale.data();
    if (!g.requant->multiplier.empty()) ep.multiplier = g.requant->multiplier.data();
    if (!g.requant->shift.empty()) ep.shift = g.requant->shift.data();
  }
  ep.zp_y = g.zp_y;
  ep.lo = g.lo;
  ep.hi = g.hi;
  return ep;
}

// The wide multiply form: int64 products (|x| <= 2^31, |w| < 2^32), int64 or int128 sums.
template <typename Acc>
void mul_wide(const int32_t* x, int64_t K, const std::vector<int64_t>& w_nk, int64_t m0, int64_t m1, int64_t n0,
              int64_t n1, int64_t* tile) {
  const __int128 cap = static_cast<__int128>(1) << 62;
  for (int64_t m = m0; m < m1; ++m)
    for (int64_t n = n0; n < n1; ++n) {
      Acc s = 0;
      const int64_t* wr = &w_nk[static_cast<size_t>(n * K)];
      const int32_t* xr = x + m * K;
      for (int64_t k = 0; k < K; ++k) s += static_cast<Acc>(static_cast<int64_t>(xr[k]) * wr[k]);
      const __int128 v = s;
      tile[(m - m0) * kShiftPanel + (n - n0)] = static_cast<int64_t>(v > cap ? cap : (v < -cap ? -cap : v));
    }
}

int threads_for(int64_t work) {
  const int64_t n = std::min<int64_t>(get_num_threads(), std::max<int64_t>(1, work / kMinTermsPerThread));
  return static_cast<int>(std::max<int64_t>(1, n));
}

#if defined(PYQ_X86)
// The 4-bit LUT multiply: raw = sum_k a'[m,k] * w[k,n] on the VNNI LUT kernel with
// a' = a (uint8) or a + 128 (int8); acc = raw - za' * colsum[n] (+ bias when `direct`)
// modulo 2^32, exact because the bound is <= 2^31 - 1. direct: the kernel's own
// epilogue writes the final output (saturation is the identity); else int32 sums to out32.
void run_lut4(const ShiftArgs& g, int32_t* out32, bool direct) {
  const PackedShift& w = *g.w;
  const GemmKernel* kern = avx512vnni_lut4_gemm_kernel();
  const bool s8 = g.a_type == ShiftActType::kS8;
  const std::vector<int32_t>& colsum = w.lut4_colsum();
  std::vector<int32_t> colterm(static_cast<size_t>(w.N()));
  const uint32_t za = static_cast<uint32_t>(g.a_zero_point + (s8 ? 128 : 0));
  for (int64_t n = 0; n < w.N(); ++n) {
    const uint32_t b = direct && g.bias ? static_cast<uint32_t>(g.bias[n]) : 0u;
    colterm[n] = static_cast<int32_t>(b - za * static_cast<uint32_t>(colsum[n]));
  }
  GemmProblem p = direct ? epilogue_params(g) : GemmProblem();
  p.a = static_cast<const uint8_t*>(g.a);
  p.lda = g.K;
  p.a_xor = s8 ? 0x80808080u : 0u;
  p.M = g.M;
  p.N = w.N();
  p.K = g.K;
  p.packed = w.lut4_packed();
  p.colterm = colterm.data();
  p.out_kind = direct ? g.out_kind : OutKind::kInt32;
  p.out = direct ? g.out : out32;
  p.ldc = w.N();
  const int64_t panels = (w.N() + kern->nr - 1) / kern->nr;
  const int nthreads = threads_for(g.M * g.K * w.N());
  const int64_t tasks = nthreads == 1 ? 1 : std::min<int64_t>(panels, 4 * nthreads);
  parallel_for(static_cast<int>(tasks), nthreads, [&](int t) {
    const int64_t p0 = panels * t / tasks, p1 = panels * (t + 1) / tasks;
    if (p0 < p1) kern->compute(p, 0, g.M, p0, p1);
  });
}
#endif

// The rows-in-lanes routes' tasks: row blocks x groups of panels, rows first (each
// task builds the activation table of its row blocks once), about 4 per thread.
struct TaskGrid {
  int64_t rblocks, panels, tm = 1, tp = 1;
  TaskGrid(int64_t rb, int64_t pn, int nthreads) : rblocks(rb), panels(pn) {
    if (nthreads == 1) return;
    const int64_t want = 4 * static_cast<int64_t>(nthreads);
    tm = std::min<int64_t>(rblocks, want);
    tp = std::max<int64_t>(1, std::min<int64_t>(panels, (want + tm - 1) / tm));
  }
  int tasks() const { return static_cast<int>(tm * tp); }
  // task t: panels [p0, p1), row blocks [r0, r1)
  void ranges(int t, int64_t* p0, int64_t* p1, int64_t* r0, int64_t* r1) const {
    const int64_t ip = t / tm, im = t % tm;
    *p0 = panels * ip / tp;
    *p1 = panels * (ip + 1) / tp;
    *r0 = rblocks * im / tm;
    *r1 = rblocks * (im + 1) / tm;
  }
};

// n elements of store (grown as needed, kept for later calls), 64-byte aligned.
template <typename T>
T* aligned64(std::vector<T>& store, int64_t n) {
  const size_t want = static_cast<size_t>(n) + 64 / sizeof(T);
  if (store.size() < want) store.resize(want);
  return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(store.data()) + 63) & ~uintptr_t{63});
}

#if defined(PYQ_X86)
// The exponent-bucket route: tasks over blocks of 32 rows x groups of panels; each
// task transposes its rows' activations (a - za as int16) once and runs every panel.
// direct: the saturation is the identity and the output int32 (no int64 stage).
void run_buckets(const ShiftArgs& g, const GemmProblem& ep, int chunk, bool direct) {
  const PackedShift& w = *g.w;
  const ShiftBuckets& b = chunk ? w.chunks(chunk) : w.buckets();
  const int64_t M = g.M, N = w.N(), K = w.K(), xt_elems = b.nkb * kShiftBucketRows * 32;
  const int64_t panels = (N + kShiftPanel - 1) / kShiftPanel, rblocks = (M + 31) / 32;
  const int nthreads = threads_for(M * N * K * w.T());
  const TaskGrid grid(rblocks, panels, nthreads);
  const bool s8 = g.a_type == ShiftActType::kS8;
  parallel_for(grid.tasks(), nthreads, [&](int t) {
    int64_t p0, p1, r0, r1;
    grid.ranges(t, &p0, &p1, &r0, &r1);
    // One table per thread, reused across calls (64-byte aligned for the kernel's loads).
    thread_local std::vector<int16_t> xt_store;
    int16_t* xt = aligned64(xt_store, xt_elems);
    alignas(64) int32_t acc[kShiftPanel * 32];
    int64_t sums[32][kShiftPanel];
    for (int64_t rb = r0; rb < r1; ++rb) {
      const int64_t m0 = rb * 32, rows = std::min<int64_t>(32, M - m0);
      // per block: rows 0..126 x, 127..253 -x, 254 zero (rows past M and k past K are 0)
      if (rows < 32) {
        std::memset(xt, 0, static_cast<size_t>(xt_elems) * 2);
      } else {  // every x / -x row below K is written below: zero the zero rows and the tail
        for (int64_t kb = 0; kb < b.nkb; ++kb)
          std::memset(xt + (kb * kShiftBucketRows + 2 * kShiftBucketK) * 32, 0, 64);
        const int64_t tail = K - (b.nkb - 1) * kShiftBucketK;  // k's used in the last block
        int16_t* last = xt + (b.nkb - 1) * kShiftBucketRows * 32;
        std::memset(last + tail * 32, 0, static_cast<size_t>(kShiftBucketK - tail) * 64);
        std::memset(last + (kShiftBucketK + tail) * 32, 0, static_cast<size_t>(kShiftBucketK - tail) * 64);
      }
      const uint8_t* a8 = static_cast<const uint8_t*>(g.a) + m0 * K;
      const int32_t za = g.a_zero_point;
      for (int64_t k = 0; k < K; ++k) {
        int16_t* pos = xt + (k / kShiftBucketK) * kShiftBucketRows * 32 + (k % kShiftBucketK) * 32;
        int16_t* neg = pos + kShiftBucketK * 32;
        for (int64_t r = 0; r < rows; ++r) {
          const int32_t a = s8 ? static_cast<int8_t>(a8[r * K + k]) : a8[r * K + k];
          pos[r] = static_cast<int16_t>(a - za);
          neg[r] = static_cast<int16_t>(za - a);
        }
      }
      for (int64_t pn = p0; pn < p1; ++pn) {
        if (chunk)
          shift_chunks_avx512bw(xt, b.stream.data(), b.start.data(), b.nkb, N, pn, chunk, acc);
        else
          shift_bucket_avx512bw(xt, b.stream.data(), b.start.data(), b.nkb, N, pn, acc);
        const int64_t n0 = pn * kShiftPanel, cnt = std::min<int64_t>(kShiftPanel, N - n0);
        // acc is [column][32 lanes]: transposed column by column (sequential reads);
        // chunks hold the even rows in lanes 0..15, the odd in 16..31
        if (direct) {  // sat_W is the identity: acc + bias is the int32 output
          // row by row: sequential stores (a column of 32 rows 4N bytes apart would
          // share an L1 set), reads 128 bytes apart from the L1-resident acc
          uint32_t bias[kShiftPanel];
          for (int64_t j = 0; j < cnt; ++j) bias[j] = g.bias ? static_cast<uint32_t>(g.bias[n0 + j]) : 0u;
          for (int64_t r = 0; r < rows; ++r) {
            const int32_t* src = acc + (chunk ? (r & 1) * 16 + (r >> 1) : r);
            int32_t* out = static_cast<int32_t*>(g.out) + (m0 + r) * N + n0;
            for (int64_t j = 0; j < cnt; ++j) out[j] = static_cast<int32_t>(static_cast<uint32_t>(src[j * 32]) + bias[j]);
          }
          continue;
        }
        for (int64_t j = 0; j < cnt; ++j)
          for (int64_t l = 0; l < 32; ++l) sums[chunk ? (l & 15) * 2 + (l >> 4) : l][j] = acc[j * 32 + l];
        for (int64_t r = 0; r < rows; ++r) finish_row(g, ep, m0 + r, n0, cnt, sums[r]);
      }
    }
  });
}
#endif

#if defined(PYQ_X86)
// The packed-field route: tasks over blocks of 48 rows x groups of panels, as the
// bucket route. A block's table holds x' = a (uint8) or a + 128 (int8) in field
// r / 8 of qword r % 8, then 255 - x'; the kernel's sums become
// sum_k w * (a - za) = sum - (za + 128 * s8) * colsum[n] - comp[n], exact in int64.
inline int64_t packed_lane(int64_t r) {  // row r = 8f + i of a column's 48 uint32
  const int64_t f = r / 8, i = r % 8;
  return 16 * (f / 2) + 2 * i + f % 2;
}
constexpr int64_t kPackedTailRows = 8;
void run_packed(const ShiftArgs& g, const GemmProblem& ep, bool direct) {
  const PackedShift& w = *g.w;
  const ShiftPackedStream& ps = w.packed_stream();
  const ShiftBuckets& b = ps.b;
  constexpr int64_t R = kShiftPackedLanes;
  const int64_t M = g.M, N = w.N(), K = w.K(), kbk = ps.kbk, trows = 2 * kbk + 1, xt_words = b.nkb * trows * 8;
  const int64_t panels = (N + kShiftPanel - 1) / kShiftPanel, rblocks = (M + R - 1) / R;
  const int nthreads = threads_for(M * N * K * w.T());
  const TaskGrid grid(rblocks, panels, nthreads);
  const bool s8 = g.a_type == ShiftActType::kS8;
  const int64_t zeff = g.a_zero_point + (s8 ? 128 : 0);
  constexpr uint64_t kFull = 255ull | 255ull << 10 | 255ull << 20 | 255ull << 30 | 255ull << 40 | 255ull << 50;
  parallel_for(grid.tasks(), nthreads, [&](int t) {
    int64_t p0, p1, r0, r1;
    grid.ranges(t, &p0, &p1, &r0, &r1);
    thread_local std::vector<uint64_t> xt_store;
    uint64_t* xt = aligned64(xt_store, xt_words);
    thread_local std::vector<uint32_t> acc_store;
    uint32_t* acc = aligned64(acc_store, kShiftPanel * R);
    int64_t sums[kShiftPanel];
    for (int64_t rb = r0; rb < r1; ++rb) {
      const int64_t m0 = rb * R, rows = std::min<int64_t>(R, M - m0);
      // k by k (sequential stores; the block's 48 activation rows stay in L1): qword i
      // of row k holds x' of rows i, 8 + i, .., 40 + i; rows past M are 0.
      const uint8_t* a8 = static_cast<const uint8_t*>(g.a) + m0 * K;
      const uint8_t flip = s8 ? 0x80 : 0;
      for (int64_t kb = 0; kb < b.nkb; ++kb) {
        uint64_t* tab = xt + kb * trows * 8;
        const int64_t k0 = kb * kbk, k1 = std::min<int64_t>(K, k0 + kbk);
        for (int64_t k = k0; k < k1; ++k) {
          uint64_t* pos = tab + (k - k0) * 8;
          for (int i = 0; i < 8; ++i) {
            uint64_t v = 0;
            for (int f = 0; f < 6; ++f) {
              const int64_t r = 8 * f + i;
              if (r < rows) v |= static_cast<uint64_t>(static_cast<uint8_t>(a8[r * K + k] ^ flip)) << (10 * f);
            }
            pos[i] = v;
            pos[kbk * 8 + i] = kFull - v;
          }
        }
        std::memset(tab + 2 * kbk * 8, 0, 64);  // the zero row
      }
      for (int64_t pn = p0; pn < p1; ++pn) {
        const int64_t n0 = pn * kShiftPanel, cnt = std::min<int64_t>(kShiftPanel, N - n0);
        shift_packed_avx512bw(xt, trows, b.stream.data(), b.start.data(), b.nkb, n0, n0 + cnt, acc);
        int64_t fix[kShiftPanel];
        for (int64_t j = 0; j < cnt; ++j) fix[j] = -zeff * ps.colsum[n0 + j] - ps.comp[n0 + j];
        if (direct) {  // sat_W is the identity: the exact sum + bias is the int32 output
          for (int64_t j = 0; j < cnt; ++j) fix[j] += g.bias ? g.bias[n0 + j] : 0;
          for (int64_t r = 0; r < rows; ++r) {
            const uint32_t* src = acc + packed_lane(r);
            int32_t* out = static_cast<int32_t*>(g.out) + (m0 + r) * N + n0;
            for (int64_t j = 0; j < cnt; ++j) out[j] = static_cast<int32_t>(src[j * R] + fix[j]);
          }
          continue;
        }
        for (int64_t r = 0; r < rows; ++r) {
          const uint32_t* src = acc + packed_lane(r);
          for (int64_t j = 0; j < cnt; ++j) sums[j] = src[j * R] + fix[j];
          finish_row(g, ep, m0 + r, n0, cnt, sums);
        }
      }
    }
  });
}
#endif

#if defined(PYQ_X86)
// The hybrid route: one task per thread, a range of whole row blocks
// (kHybridRows rows); the VNNI tiles of columns [0, Nv) run panel by panel over all
// its rows (their epilogue adds the bias and stores or requantizes), the shift job's
// units of columns [Nv, N) inside them, block after block; then the shift columns'
// store (sat_W is the identity: the route needs no saturation). Panels over all rows
// keep B's panel in L2 as the int8 GEMM does: groups of 30-90 rows under the panel
// loop re-read B (1 MB at 1024^2, one core's L2) and measured ~9 % slower.
void run_hybrid(const ShiftArgs& g, const GemmProblem& ep, const Prepared& pr) {
  const PackedShift& w = *g.w;
  const ShiftHybrid& hy = w.hybrid(pr.hybrid_nv);
  const int64_t M = g.M, N = w.N(), K = w.K(), Nv = hy.Nv, Ns = N - Nv;
  const bool s8 = g.a_type == ShiftActType::kS8;
  std::vector<int32_t> colterm(static_cast<size_t>(Nv));
  const uint32_t za = static_cast<uint32_t>(g.a_zero_point + (s8 ? 128 : 0));
  for (int64_t n = 0; n < Nv; ++n)
    colterm[n] = static_cast<int32_t>((g.bias ? static_cast<uint32_t>(g.bias[n]) : 0u) -
                                      za * static_cast<uint32_t>(hy.colsum[n]));
  GemmProblem p = ep;
  p.a = static_cast<const uint8_t*>(g.a);
  p.lda = K;
  p.a_xor = s8 ? 0x80808080u : 0u;
  p.M = M;
  p.N = Nv;
  p.K = K;
  p.packed = hy.packed->data();
  p.colterm = colterm.data();
  p.out_kind = g.out_kind;
  p.out = g.out;
  p.ldc = N;
  HybridBlock hb;
  hb.a = p.a;
  hb.lda = K;
  hb.s8 = s8;
  hb.za = g.a_zero_point;
  hb.K = K;
  hb.Ns = Ns;
  hb.units = hy.units.data();
  hb.nunits = static_cast<int64_t>(hy.units.size() / 3);
  hb.period = pr.hybrid_period;
  const int64_t xt_elems = (K + kShiftBucketK - 1) / kShiftBucketK * kShiftBucketRows * 32;
  const int64_t blocks = (M + kHybridRows - 1) / kHybridRows;
  const int nthreads = threads_for(M * N * K);
  const int64_t tasks = std::min<int64_t>(blocks, nthreads);
  parallel_for(static_cast<int>(tasks), nthreads, [&](int t) {
    const int64_t b0 = blocks * t / tasks, b1 = blocks * (t + 1) / tasks;
    const int64_t m0 = b0 * kHybridRows, rows_total = std::min<int64_t>(M, b1 * kHybridRows) - m0;
    std::vector<int16_t> xt_store(static_cast<size_t>(xt_elems + 32));
    std::vector<int32_t> sacc_store(static_cast<size_t>((b1 - b0) * Ns * 32 + 16));
    int16_t* xt = reinterpret_cast<int16_t*>((reinterpret_cast<uintptr_t>(xt_store.data()) + 63) & ~uintptr_t{63});
    int32_t* sacc = reinterpret_cast<int32_t*>((reinterpret_cast<uintptr_t>(sacc_store.data()) + 63) & ~uintptr_t{63});
    int64_t sums[kShiftPanel];
    if (rows_total > 0) {
      shift_hybrid_block_avx512vnni(hb, p, m0, rows_total, xt, sacc);
      for (int64_t r = 0; r < rows_total; ++r) {
        const int64_t blk = r / kHybridRows, rr = r % kHybridRows;
        const int32_t* src = sacc + blk * Ns * 32 + (rr & 1) * 16 + (rr >> 1);
        if (g.out_kind == OutKind::kInt32) {
          int32_t* out = static_cast<int32_t*>(g.out) + (m0 + r) * N + Nv;
          for (int64_t j = 0; j < Ns; ++j)
            out[j] = static_cast<int32_t>(static_cast<uint32_t>(src[j * 32]) +
                                          (g.bias ? static_cast<uint32_t>(g.bias[Nv + j]) : 0u));
          continue;
        }
        for (int64_t j0 = 0; j0 < Ns; j0 += kShiftPanel) {
          const int64_t cnt = std::min<int64_t>(kShiftPanel, Ns - j0);
          for (int64_t j = 0; j < cnt; ++j) sums[j] = src[(j0 + j) * 32];
          finish_row(g, ep, m0 + r, Nv + j0, cnt, sums);
        }
      }
    }
  });
}
#endif

}  // namespace

std::string shift_gemm_kernel_name(const ShiftArgs& args) { return prepare(args).name; }

void set_shift_hybrid(int period, int64_t ns) {
  if (period < 0 || period > 64) throw std::invalid_argument("hybrid period must be in [0, 64] (0: default)");
  if (ns < 0) throw std::invalid_argument("hybrid shift columns must be >= 0 (0: automatic)");
  g_hybrid_period.store(period);
  g_hybrid_ns.store(ns);
}

void set_shift_rows_variant(int v) {
  if (v < 0 || v > 5)
    throw std::invalid_argument(
        "rows variant must be 0 (auto), 1 (buckets), 2 (chunk8), 3 (chunk16), 4 (columns), 5 (packed fields)");
  g_rows_variant.store(v);
}
int shift_rows_variant() { return g_rows_variant.load(); }

void shift_gemm(const ShiftArgs& g) {
  const Prepared pr = prepare(g);
  const PackedShift& w = *g.w;
  const int64_t M = g.M, N = w.N(), K = w.K();
  if (M == 0) return;
  const GemmProblem ep = epilogue_params(g);
  const int64_t panels = (N + kShiftPanel - 1) / kShiftPanel;

  const bool direct = pr.no_saturation;
  if ((pr.route == Route::kMulInt8 || pr.route == Route::kMulLut4) && direct) {
    // Nothing saturates: the int8 GEMM's own epilogue adds the bias and requantizes.
#if defined(PYQ_X86)
    if (pr.route == Route::kMulLut4) {
      run_lut4(g, nullptr, true);
      return;
    }
#endif
    GemmArgs ga{static_cast<const uint8_t*>(g.a), g.a_type == ShiftActType::kS8, M, K, K, g.a_zero_point,
                &w.int8_weights(), g.bias, g.out_kind, g.out, N, g.requant, g.zp_y, g.lo, g.hi};
    qgemm(ga);
    return;
  }
  if (pr.route == Route::kMulInt8 || pr.route == Route::kMulLut4) {
    // The int8 GEMM gives the exact sum (the bound is <= 2^31 - 1, so nothing
    // wraps); bias and saturation follow in int64.
    std::vector<int32_t> raw(static_cast<size_t>(M * N));
#if defined(PYQ_X86)
    if (pr.route == Route::kMulLut4) run_lut4(g, raw.data(), false);
#endif
    if (pr.route == Route::kMulInt8) {
      GemmArgs ga{static_cast<const uint8_t*>(g.a), g.a_type == ShiftActType::kS8, M, K, K, g.a_zero_point,
                  &w.int8_weights(), nullptr, OutKind::kInt32, raw.data(), N, nullptr, 0, 0, 0};
      qgemm(ga);
    }
    const int nthreads = threads_for(M * N * 16);
    const int64_t tasks = std::min<int64_t>(M, 4 * nthreads);
    parallel_for(static_cast<int>(tasks), nthreads, [&](int t) {
      int64_t sums[kShiftPanel];
      for (int64_t m = M * t / tasks; m < M * (t + 1) / tasks; ++m)
        for (int64_t n0 = 0; n0 < N; n0 += kShiftPanel) {
          const int64_t cnt = std::min<int64_t>(kShiftPanel, N - n0);
          for (int64_t j = 0; j < cnt; ++j) sums[j] = raw[m * N + n0 + j];
          finish_row(g, ep, m, n0, cnt, sums);
        }
    });
    return;
  }

#if defined(PYQ_X86)
  if (pr.route == Route::kHybrid) {
    run_hybrid(g, ep, pr);
    return;
  }
  if (pr.route == Route::kShiftBucket) {
    run_buckets(g, ep, pr.chunk, pr.no_saturation && g.out_kind == OutKind::kInt32);
    return;
  }
  if (pr.route == Route::kShiftPacked) {
    // A last row block of a few rows costs a whole 48-row block; up to kPackedTailRows
    // rows cost less on the column kernels (1 / 8 rows at 26-29 / 43-49 GOP/s against a
    // whole block's 48 rows at ~200, 1 thread): they run there.
    const int64_t tail = M % kShiftPackedLanes;
    if (tail > 0 && tail <= kPackedTailRows && M > tail) {
      ShiftArgs head = g, rest = g;
      head.M = M - tail;
      run_packed(head, ep, pr.no_saturation && g.out_kind == OutKind::kInt32);
      const int64_t out_bytes = g.out_kind == OutKind::kInt32 ? 4 : 1;
      rest.M = tail;
      rest.a = static_cast<const uint8_t*>(g.a) + (M - tail) * K;
      rest.out = static_cast<char*>(g.out) + (M - tail) * N * out_bytes;
      shift_gemm(rest);  // < 32 rows: not the packed route again
      return;
    }
    run_packed(g, ep, pr.no_saturation && g.out_kind == OutKind::kInt32);
    return;
  }
#endif
  std::vector<int32_t> x;
  std::vector<int16_t> x16;
  load_activations(g, &x, &x16, pr.route == Route::kShift && pr.x16_ok);
  ShiftProblem sp;
  sp.x = x.data();
  sp.x16 = x16.empty() ? nullptr : x16.data();
  sp.M = M;
  sp.K = K;
  sp.N = N;
  sp.T = w.T();
  sp.right_shifts = w.right_shifts();
  sp.pack16 = w.pack16();
  sp.row_elems = w.row_elems();
  // The int32 layout pays off when rows reuse it; it takes 4 bytes per count.
  const bool any32 = pr.plan && std::find(pr.plan->mode.begin(), pr.plan->mode.end(),
                                          static_cast<int32_t>(LaneMode::kInt32)) != pr.plan->mode.end();
  if (pr.route == Route::kShift && any32 && M >= 8 && N * K * w.T() <= (int64_t{1} << 24)) sp.pack32 = w.pack32();  // <= 128 MB
  sp.terms = w.terms();
  sp.negcnt = w.negcnt();
  if (pr.plan) {
    sp.lane_mode = pr.plan->mode.data();
    sp.block_begin = pr.plan->block_begin.data();
    sp.block_end = pr.plan->block_end.data();
  }
  sp.wide128 = pr.wide128;
  const int32_t* w32 = pr.route == Route::kMulInt32 ? w.int32_weights_kn().data() : nullptr;

  const int64_t mtiles = (M + kTileRows - 1) / kTileRows;
  const int nthreads = threads_for(M * N * K * w.T());
  const int64_t want = 4 * static_cast<int64_t>(nthreads);
  const int64_t tp = nthreads == 1 ? 1 : std::min<int64_t>(panels, want);
  const int64_t tm = nthreads == 1 ? 1 : std::max<int64_t>(1, std::min<int64_t>(mtiles, (want + tp - 1) / tp));
  parallel_for(static_cast<int>(tp * tm), nthreads, [&](int t) {
    const int64_t ip = t / tm, im = t % tm;
    const int64_t p0 = panels * ip / tp, p1 = panels * (ip + 1) / tp;
    const int64_t r0 = mtiles * im / tm, r1 = mtiles * (im + 1) / tm;
    std::vector<int64_t> tile(static_cast<size_t>(kTileRows * kShiftPanel));
    for (int64_t pn = p0; pn < p1; ++pn) {
      const int64_t n0 = pn * kShiftPanel, cnt = std::min<int64_t>(kShiftPanel, N - n0);
      for (int64_t rt = r0; rt < r1; ++rt) {
        const int64_t m0 = rt * kTileRows, m1 = std::min<int64_t>(M, m0 + kTileRows);
        switch (pr.route) {
          case Route::kShift: pr.compute(sp, m0, m1, pn, tile.data()); break;
          case Route::kMulInt32: pr.mul32(x.data(), K, w32, N, m0, m1, n0, n0 + cnt, tile.data()); break;
          default:
            if (pr.wide128)
              mul_wide<__int128>(x.data(), K, w.decoded_nk(), m0, m1, n0, n0 + cnt, tile.data());
            else
              mul_wide<int64_t>(x.data(), K, w.decoded_nk(), m0, m1, n0, n0 + cnt, tile.data());
            break;
        }
        for (int64_t m = m0; m < m1; ++m) finish_row(g, ep, m, n0, cnt, &tile[(m - m0) * kShiftPanel]);
      }
    }
  });
}

}  // namespace pyq
