// Port microbenchmarks behind docs/performance.md "Shift vs multiply" (Zen 4, one core,
// L1-resident data, thread CPU time; cycles at the clock given on the command line):
//   1. one vpaddw per table row ("term slot" of the rows-in-lanes shift kernels) with
//      fixed addresses, offsets loaded one per 16-bit load, and four per 64-bit load;
//   2. a 6x64 vpdpbusd tile step (4 B loads, 6 broadcasts, 24 vpdpbusd = 1536 MACs)
//      interleaved with S table slots (32 int16 shift-add MACs each): how much
//      shift-add work co-issues with VNNI (the hybrid idea of issue 4).
// Build: g++ -O3 -mavx512f -mavx512bw -mavx512vnni -mbmi2 shift_rows_ports.cpp -o ports
// Run:   ./ports 3.66      (the core clock in GHz)
#include <immintrin.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <vector>

static double cpu() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

alignas(64) static int16_t table[255 * 32];
alignas(64) static uint8_t B[16384];
alignas(64) static uint8_t A[6 * 1024 + 64];
static volatile int sink;
static void keep(__m512i v) {
  alignas(64) int32_t o[16];
  _mm512_store_si512(o, v);
  sink = o[0] + o[15];
}

template <int V>
static double slots(const uint16_t* idx, int nt) {
  const char* X = reinterpret_cast<const char*>(table);
  double best = 1e9;
  for (int rep = 0; rep < 30; ++rep) {
    const double t0 = cpu();
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (int it = 0; it < 20; ++it) {
      if (V == 0) {  // fixed addresses
        for (int i = 0; i < nt; i += 4) {
          const char* b = X + ((i * 64) & (16383 - 255));
          a0 = _mm512_add_epi16(a0, _mm512_load_si512(b));
          a1 = _mm512_add_epi16(a1, _mm512_load_si512(b + 64));
          a2 = _mm512_add_epi16(a2, _mm512_load_si512(b + 128));
          a3 = _mm512_add_epi16(a3, _mm512_load_si512(b + 192));
        }
      } else if (V == 1) {  // one 16-bit offset load per slot
        const uint16_t* q = idx;
        for (int i = 0; i < nt; i += 4, q += 4) {
          a0 = _mm512_add_epi16(a0, _mm512_load_si512(X + q[0]));
          a1 = _mm512_add_epi16(a1, _mm512_load_si512(X + q[1]));
          a2 = _mm512_add_epi16(a2, _mm512_load_si512(X + q[2]));
          a3 = _mm512_add_epi16(a3, _mm512_load_si512(X + q[3]));
        }
      } else {  // four offsets per 64-bit load
        const uint64_t* q = reinterpret_cast<const uint64_t*>(idx);
        for (int i = 0; i < nt; i += 4, ++q) {
          const uint64_t o = *q;
          a0 = _mm512_add_epi16(a0, _mm512_load_si512(X + (o & 0xffff)));
          a1 = _mm512_add_epi16(a1, _mm512_load_si512(X + ((o >> 16) & 0xffff)));
          a2 = _mm512_add_epi16(a2, _mm512_load_si512(X + ((o >> 32) & 0xffff)));
          a3 = _mm512_add_epi16(a3, _mm512_load_si512(X + (o >> 48)));
        }
      }
    }
    const double t = cpu() - t0;
    if (t < best) best = t;
    keep(_mm512_add_epi16(_mm512_add_epi16(a0, a1), _mm512_add_epi16(a2, a3)));
  }
  return best / (20.0 * nt);
}

#define ROW(r)                                                                                          \
  {                                                                                                     \
    const __m512i a = _mm512_set1_epi32(*reinterpret_cast<const int*>(ap + r * 1024));                 \
    c##r##0 = _mm512_dpbusd_epi32(c##r##0, a, b0);                                                      \
    c##r##1 = _mm512_dpbusd_epi32(c##r##1, a, b1);                                                      \
    c##r##2 = _mm512_dpbusd_epi32(c##r##2, a, b2);                                                      \
    c##r##3 = _mm512_dpbusd_epi32(c##r##3, a, b3);                                                      \
    if (S / 4 > r) {                                                                                    \
      const uint64_t o = q[r];                                                                          \
      d0 = _mm512_add_epi16(d0, _mm512_load_si512(X + (o & 0xffff)));                                   \
      d1 = _mm512_add_epi16(d1, _mm512_load_si512(X + ((o >> 16) & 0xffff)));                           \
      d0 = _mm512_add_epi16(d0, _mm512_load_si512(X + ((o >> 32) & 0xffff)));                           \
      d1 = _mm512_add_epi16(d1, _mm512_load_si512(X + (o >> 48)));                                      \
    }                                                                                                   \
  }
#define DECL(r) __m512i c##r##0 = _mm512_setzero_si512(), c##r##1 = c##r##0, c##r##2 = c##r##0, c##r##3 = c##r##0;
#define SUM(r) s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(c##r##0, c##r##1), _mm512_add_epi32(c##r##2, c##r##3)));

template <int S>
static double tile_steps(const uint16_t* idx, int steps) {
  DECL(0) DECL(1) DECL(2) DECL(3) DECL(4) DECL(5)
  __m512i d0 = _mm512_setzero_si512(), d1 = d0;
  const char* X = reinterpret_cast<const char*>(table);
  double best = 1e9;
  for (int rep = 0; rep < 30; ++rep) {
    const double t0 = cpu();
    const uint64_t* q = reinterpret_cast<const uint64_t*>(idx);
    for (int st = 0; st < steps; ++st) {
      const uint8_t* bp = B + ((st * 256) & 16383);
      const __m512i b0 = _mm512_load_si512(bp), b1 = _mm512_load_si512(bp + 64);
      const __m512i b2 = _mm512_load_si512(bp + 128), b3 = _mm512_load_si512(bp + 192);
      const uint8_t* ap = A + ((st * 4) & 1023);
      ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
      q += S / 4;
    }
    const double t = cpu() - t0;
    if (t < best) best = t;
  }
  __m512i s = _mm512_add_epi16(d0, d1);
  SUM(0) SUM(1) SUM(2) SUM(3) SUM(4) SUM(5)
  keep(s);
  return best / steps;
}

int main(int argc, char** argv) {
  const double ghz = argc > 1 ? atof(argv[1]) : 3.66;
  std::mt19937 rng(1);
  const int nt = 1 << 14, steps = 1 << 14;
  std::vector<uint16_t> idx(steps * 24 + 64);
  for (auto& v : idx) v = static_cast<uint16_t>(64 * (rng() % 255));
  for (auto& v : B) v = static_cast<uint8_t>(rng());
  for (auto& v : A) v = static_cast<uint8_t>(rng());
  std::printf("cycles per table slot (vpaddw zmm, [row]; 32 shift-add MACs):\n");
  std::printf("  fixed addresses          %.2f\n", slots<0>(idx.data(), nt) * ghz * 1e9);
  std::printf("  16-bit offset loads      %.2f\n", slots<1>(idx.data(), nt) * ghz * 1e9);
  std::printf("  64-bit offset loads (x4) %.2f\n", slots<2>(idx.data(), nt) * ghz * 1e9);
  std::printf("6x64 vpdpbusd tile step (1536 MACs) + S table slots:\n");
  const double c[] = {tile_steps<0>(idx.data(), steps), tile_steps<4>(idx.data(), steps), tile_steps<8>(idx.data(), steps),
                      tile_steps<12>(idx.data(), steps), tile_steps<16>(idx.data(), steps), tile_steps<24>(idx.data(), steps)};
  const int S[] = {0, 4, 8, 12, 16, 24};
  for (int i = 0; i < 6; ++i)
    std::printf("  S=%2d: %.1f cycles, %.1f MAC/cycle (%.2fx the tile alone)\n", S[i], c[i] * ghz * 1e9,
                (1536 + 32 * S[i]) / (c[i] * ghz * 1e9), (1536 + 32.0 * S[i]) / c[i] / (1536 / c[0]));
}
