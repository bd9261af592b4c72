// Co-issue of shift-add table slots with a 6x64 vpdpbusd tile step (docs/performance.md
// "Shift vs multiply", the hybrid): 4 B loads, 6 broadcasts, 24 vpdpbusd (1536 MACs) per
// step plus S table slots (vpaddw zmm, [row]; 32 MACs each; offsets four per 64-bit load).
// Build: g++ -O3 -mavx512f -mavx512bw -mavx512vnni -mavx2 -mbmi2 shift_vnni_coissue.cpp -o coissue
// Cycles assume 3.66 GHz (measured with a dependent-add loop on the benchmark VM).
#include <immintrin.h>
#include <cstdio>
#include <cstdint>
#include <vector>
#include <random>
#include <ctime>
static double cpu(){timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID,&t); return t.tv_sec+t.tv_nsec*1e-9;}
alignas(64) int16_t table[255*32];
alignas(64) uint8_t B[16384];
alignas(64) uint8_t A[6*4096];
#define ROW(r) { __m512i a=_mm512_set1_epi32(*(const int*)(ap+r*1024)); \
  c##r##0=_mm512_dpbusd_epi32(c##r##0,a,b0); c##r##1=_mm512_dpbusd_epi32(c##r##1,a,b1); \
  c##r##2=_mm512_dpbusd_epi32(c##r##2,a,b2); c##r##3=_mm512_dpbusd_epi32(c##r##3,a,b3); \
  if (S/4 > r) { uint64_t o=q[r]; \
    d0=_mm512_add_epi16(d0,_mm512_load_si512(X+(o&0xffff))); d1=_mm512_add_epi16(d1,_mm512_load_si512(X+((o>>16)&0xffff))); \
    d0=_mm512_add_epi16(d0,_mm512_load_si512(X+((o>>32)&0xffff))); d1=_mm512_add_epi16(d1,_mm512_load_si512(X+(o>>48))); } }
#define DECL(r) __m512i c##r##0=_mm512_setzero_si512(),c##r##1=c##r##0,c##r##2=c##r##0,c##r##3=c##r##0;
#define SUM(r) s=_mm512_add_epi32(s,_mm512_add_epi32(_mm512_add_epi32(c##r##0,c##r##1),_mm512_add_epi32(c##r##2,c##r##3)));
template<int S>
double run(const uint16_t* idx, int steps){
  DECL(0) DECL(1) DECL(2) DECL(3) DECL(4) DECL(5)
  __m512i d0=_mm512_setzero_si512(), d1=d0;
  const char* X=(const char*)table;
  double best=1e9;
  for(int rep=0;rep<30;rep++){
    double t0=cpu();
    const uint64_t* q=(const uint64_t*)idx;
    for(int s=0;s<steps;s++){
      const uint8_t* bp=B+((s*256)&16383);
      __m512i b0=_mm512_load_si512(bp),b1=_mm512_load_si512(bp+64),b2=_mm512_load_si512(bp+128),b3=_mm512_load_si512(bp+192);
      const uint8_t* ap=A+((s*4)&1023);
      ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
      q+=S/4;
    }
    double t=cpu()-t0; if(t<best)best=t;
  }
  __m512i s=_mm512_add_epi16(d0,d1); SUM(0) SUM(1) SUM(2) SUM(3) SUM(4) SUM(5)
  int o[16]; _mm512_storeu_si512(o,s); if(o[0]==12345) puts("");
  return best/steps*3.66e9;
}
int main(){
  std::mt19937 rng(1); const int steps=1<<14;
  std::vector<uint16_t> idx(steps*24+64); for(auto&v:idx) v=64*(rng()%255);
  for(int i=0;i<16384;i++) B[i]=rng();
  for(int i=0;i<6*4096;i++) A[i]=rng();
  double t0=run<0>(idx.data(),steps);
  printf("S=0:  %.2f cycles per step (24 vpdpbusd = 1536 MAC)\n",t0);
  double t;
  t=run<4>(idx.data(),steps);  printf("S=4:  %.2f cycles, MAC/cycle %.1f\n",t,(1536+128)/t);
  t=run<8>(idx.data(),steps);  printf("S=8:  %.2f cycles, MAC/cycle %.1f\n",t,(1536+256)/t);
  t=run<12>(idx.data(),steps); printf("S=12: %.2f cycles, MAC/cycle %.1f\n",t,(1536+384)/t);
  t=run<16>(idx.data(),steps); printf("S=16: %.2f cycles, MAC/cycle %.1f\n",t,(1536+512)/t);
  t=run<24>(idx.data(),steps); printf("S=24: %.2f cycles, MAC/cycle %.1f\n",t,(1536+768)/t);
  t0=run<0>(idx.data(),steps); printf("S=0 again: %.2f cycles, VNNI alone: %.1f MAC/cycle\n",t0,1536/t0);
}
