// Co-issue of packed-field shift chunks (semantics 12.4a "packed fields": 4 table rows of
// 48 rows each, vpaddq, the even/odd split, a 17-op group flush every 12 chunks) with a
// 6x64 vpdpbusd tile step (4 B loads, 6 broadcasts, 24 vpdpbusd = 1536 MACs): the
// L1-resident upper bound of a hybrid whose shift units are packed-field chunks
// (docs/performance.md "The hybrid kernel"). C chunks per step = 192 * C shift MACs.
// Build: g++ -O3 -mavx512f -mavx512bw -mavx512vnni -mbmi2 shift_vnni_packed_coissue.cpp -o pcoissue
// Cycles assume 3.66 GHz (measured with a dependent-add loop on the benchmark VM).
#include <immintrin.h>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <vector>
#include <random>
#include <ctime>
static double cpu(){timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID,&t); return t.tv_sec+t.tv_nsec*1e-9;}
alignas(64) uint64_t table[343*8];   // one 171-k block: x', 255 - x', zero (22 KB)
alignas(64) uint8_t B[16384];
alignas(64) uint8_t A[6*4096];
#define DECL(r) __m512i c##r##0=_mm512_setzero_si512(),c##r##1=c##r##0,c##r##2=c##r##0,c##r##3=c##r##0;
#define SUM(r) s=_mm512_add_epi32(s,_mm512_add_epi32(_mm512_add_epi32(c##r##0,c##r##1),_mm512_add_epi32(c##r##2,c##r##3)));
#define ROW(r) { __m512i a=_mm512_set1_epi32(*(const int*)(ap+r*1024)); \
  c##r##0=_mm512_dpbusd_epi32(c##r##0,a,b0); c##r##1=_mm512_dpbusd_epi32(c##r##1,a,b1); \
  c##r##2=_mm512_dpbusd_epi32(c##r##2,a,b2); c##r##3=_mm512_dpbusd_epi32(c##r##3,a,b3); \
  if (C > r) { uint64_t o; std::memcpy(&o,q,8); q+=4; \
    __m512i d0=_mm512_load_si512(X+(o&0xffff)); __m512i d1=_mm512_load_si512(X+((o>>32)&0xffff)); \
    d0=_mm512_add_epi64(d0,_mm512_load_si512(X+((o>>16)&0xffff))); d1=_mm512_add_epi64(d1,_mm512_load_si512(X+(o>>48))); \
    d0=_mm512_add_epi64(d0,d1); le=_mm512_add_epi64(le,_mm512_and_si512(d0,even)); la=_mm512_add_epi64(la,d0); } }
template<int C>
double run(const uint16_t* idx, int steps){
  DECL(0) DECL(1) DECL(2) DECL(3) DECL(4) DECL(5)
  const __m512i even=_mm512_set1_epi64((long long)(0x3FFull|0x3FFull<<20|0x3FFull<<40));
  const __m512i low20=_mm512_set1_epi64(0xFFFFF), low32=_mm512_set1_epi64(0xFFFFFFFFll);
  __m512i le=_mm512_setzero_si512(), la=le, g0=le, g1=le, g2=le;
  const char* X=(const char*)table;
  double best=1e9;
  for(int rep=0;rep<30;rep++){
    double t0=cpu();
    const uint16_t* q=idx; int chunks=0;
    for(int s=0;s<steps;s++){
      const uint8_t* bp=B+((s*256)&16383);
      __m512i b0=_mm512_load_si512(bp),b1=_mm512_load_si512(bp+64),b2=_mm512_load_si512(bp+128),b3=_mm512_load_si512(bp+192);
      const uint8_t* ap=A+((s*4)&1023);
      ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
      chunks+=C;
      if(C && chunks>=12){ chunks-=12;   // the group flush (17 ops)
        const __m512i o=_mm512_sub_epi64(la,le); const __m128i sh=_mm_cvtsi32_si128(s&3);
        g0=_mm512_add_epi64(g0,_mm512_sll_epi64(_mm512_ternarylogic_epi64(low20,le,_mm512_srli_epi64(_mm512_slli_epi64(o,34),12),0xCA),sh));
        g1=_mm512_add_epi64(g1,_mm512_sll_epi64(_mm512_ternarylogic_epi64(low32,_mm512_srli_epi64(_mm512_slli_epi64(le,24),44),_mm512_srli_epi64(_mm512_slli_epi64(o,14),12),0xCA),sh));
        g2=_mm512_add_epi64(g2,_mm512_sll_epi64(_mm512_ternarylogic_epi64(low32,_mm512_srli_epi64(le,40),_mm512_srli_epi64(o,18),0xCA),sh));
        le=_mm512_setzero_si512(); la=le; }
      if((s&1023)==1023) q=idx;
    }
    double t=cpu()-t0; if(t<best)best=t;
  }
  __m512i s=_mm512_add_epi64(_mm512_add_epi64(g0,g1),_mm512_add_epi64(g2,la)); SUM(0) SUM(1) SUM(2) SUM(3) SUM(4) SUM(5)
  int o[16]; _mm512_storeu_si512(o,s); if(o[0]==12345) puts("");
  return best/steps*3.66e9;
}
int main(){
  std::mt19937 rng(1); const int steps=1<<14;
  std::vector<uint16_t> idx(1024*24+64); for(auto&v:idx) v=64*(rng()%343);
  for(int i=0;i<16384;i++) B[i]=rng();
  for(int i=0;i<6*4096;i++) A[i]=rng();
  for(int i=0;i<343*8;i++) table[i]=rng()&0x0FF3FCFF3FCFF3FCull;
  // The tile alone: 23.9 cycles per step (64.3 MAC/cycle) in shift_vnni_coissue.cpp's S=0.
  // run<0> here measures ~54 cycles: with the shift state live across the loop GCC spills
  // tile accumulators, so it is not printed as the baseline.
  const double t0=23.9;
  double t;
  t=run<1>(idx.data(),steps); printf("C=1: %.2f cycles, MAC/cycle %.1f (%.2fx the tile alone, 23.9 cycles)\n",t,(1536+192)/t,(1536+192)/t/(1536/t0));
  t=run<2>(idx.data(),steps); printf("C=2: %.2f cycles, MAC/cycle %.1f (%.2fx)\n",t,(1536+384)/t,(1536+384)/t/(1536/t0));
  t=run<3>(idx.data(),steps); printf("C=3: %.2f cycles, MAC/cycle %.1f (%.2fx)\n",t,(1536+576)/t,(1536+576)/t/(1536/t0));
  t=run<4>(idx.data(),steps); printf("C=4: %.2f cycles, MAC/cycle %.1f (%.2fx)\n",t,(1536+768)/t,(1536+768)/t/(1536/t0));
  t=run<6>(idx.data(),steps); printf("C=6: %.2f cycles, MAC/cycle %.1f (%.2fx)\n",t,(1536+1152)/t,(1536+1152)/t/(1536/t0));
}
