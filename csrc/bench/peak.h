// Machine-peak microbenchmarks, used to report kernels as a fraction of peak.
#pragma once
#include <cstdint>

namespace pyq {
// Runs `iters` iterations of 12 independent zmm vpdpbusd chains on the calling
// thread and returns the elapsed seconds; each iteration is 12*64 u8 x s8 MACs.
double peak_avx512vnni_seconds(int64_t iters);
}  // namespace pyq
