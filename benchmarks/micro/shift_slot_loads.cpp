// Cycles per table slot of the rows-in-lanes shift kernels (docs/performance.md "Shift vs
// multiply"): vpaddw zmm, [table row] with 4 accumulators, L1-resident 255-row table.
// variant 0: one 16-bit offset load per slot; 1: fixed addresses; 2: the same as 0;
// 3: offsets two per 32-bit load; 4: four per 64-bit load; 5: LCG-random rows, no loads.
// Build: g++ -O3 -mavx512f -mavx512bw -mavx2 -mbmi2 shift_slot_loads.cpp -o slots
// Prints ns per slot (thread CPU time, best of 50); cycles = ns * GHz.
#include <immintrin.h>
#include <cstdio>
#include <cstdint>
#include <vector>
#include <chrono>
#include <random>
#include <ctime>
static double cpu(){timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID,&t); return t.tv_sec+t.tv_nsec*1e-9;}
alignas(64) int16_t table[255*32];
int main(){
  std::mt19937 rng(1);
  const int NT=1<<14; // terms per pass
  std::vector<uint16_t> idx(NT*2);
  for(auto&v:idx) v=64*(rng()%255);
  for(int i=0;i<255*32;i++) table[i]=i;
  const char* X=(const char*)table;
  // 1: indexed loads, 4 chains
  for(int variant=0;variant<6;variant++){
    double best=1e9; __m512i sink=_mm512_setzero_si512();
    for(int rep=0;rep<50;rep++){
      double c0=cpu();
      for(int it=0;it<20;it++){
        __m512i a0=_mm512_setzero_si512(),a1=a0,a2=a0,a3=a0;
        const uint16_t* q=idx.data();
        if(variant==0){
          for(int i=0;i<NT;i+=4,q+=4){
            a0=_mm512_add_epi16(a0,_mm512_load_si512(X+q[0]));
            a1=_mm512_add_epi16(a1,_mm512_load_si512(X+q[1]));
            a2=_mm512_add_epi16(a2,_mm512_load_si512(X+q[2]));
            a3=_mm512_add_epi16(a3,_mm512_load_si512(X+q[3]));
          }
        } else if(variant==1){ // fixed offsets (no index load)
          for(int i=0;i<NT;i+=4){
            const char* b=X+((i*64)&(16383-255));
            a0=_mm512_add_epi16(a0,_mm512_load_si512(b));
            a1=_mm512_add_epi16(a1,_mm512_load_si512(b+64));
            a2=_mm512_add_epi16(a2,_mm512_load_si512(b+128));
            a3=_mm512_add_epi16(a3,_mm512_load_si512(b+192));
          }
        } else if(variant==2){ // ymm indexed loads: 2 per term
          for(int i=0;i<NT;i+=4,q+=4){
            a0=_mm512_add_epi16(a0,_mm512_load_si512(X+q[0]));
            a1=_mm512_add_epi16(a1,_mm512_load_si512(X+q[1]));
            a2=_mm512_add_epi16(a2,_mm512_load_si512(X+q[2]));
            a3=_mm512_add_epi16(a3,_mm512_load_si512(X+q[3]));
          }
        } else if(variant==4){ // 64-bit index load
          const uint64_t* q64=(const uint64_t*)idx.data();
          for(int i=0;i<NT;i+=4,q64+=1){
            uint64_t u=q64[0];
            a0=_mm512_add_epi16(a0,_mm512_load_si512(X+(u&0xffff)));
            a1=_mm512_add_epi16(a1,_mm512_load_si512(X+((u>>16)&0xffff)));
            a2=_mm512_add_epi16(a2,_mm512_load_si512(X+((u>>32)&0xffff)));
            a3=_mm512_add_epi16(a3,_mm512_load_si512(X+(u>>48)));
          }
        } else if(variant==5){ // random but from a register-rotating pattern: no index loads
          uint64_t u=0x0123456789abcdefull;
          for(int i=0;i<NT;i+=4){
            u=u*6364136223846793005ull+1442695040888963407ull;
            a0=_mm512_add_epi16(a0,_mm512_load_si512(X+((u>>10)&0x3fc0)));
            a1=_mm512_add_epi16(a1,_mm512_load_si512(X+((u>>24)&0x3fc0)));
            a2=_mm512_add_epi16(a2,_mm512_load_si512(X+((u>>38)&0x3fc0)));
            a3=_mm512_add_epi16(a3,_mm512_load_si512(X+((u>>50)&0x3fc0)));
          }
        } else { // 32-bit index load + shift extraction
          const uint32_t* q32=(const uint32_t*)idx.data();
          for(int i=0;i<NT;i+=4,q32+=2){
            uint32_t u=q32[0], v=q32[1];
            a0=_mm512_add_epi16(a0,_mm512_load_si512(X+(u&0xffff)));
            a1=_mm512_add_epi16(a1,_mm512_load_si512(X+(u>>16)));
            a2=_mm512_add_epi16(a2,_mm512_load_si512(X+(v&0xffff)));
            a3=_mm512_add_epi16(a3,_mm512_load_si512(X+(v>>16)));
          }
        }
        sink=_mm512_add_epi16(sink,_mm512_add_epi16(_mm512_add_epi16(a0,a1),_mm512_add_epi16(a2,a3)));
      }
      double t=cpu()-c0; if(t<best)best=t;
    }
    int16_t o[32]; _mm512_storeu_si512(o,sink);
    printf("variant %d: %.3f ns per term-vector (%d)\n",variant,best/(20.0*NT)*1e9,o[0]);
  }
}
