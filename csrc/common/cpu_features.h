// Run-time CPU feature detection and the kernel-path registry selector.
#pragma once
#include <string>
#include <vector>

namespace pyq {

struct CpuFeatures {
  bool avx2 = false;        // AVX2 + FMA, with OS support for ymm state
  bool avx512bw = false;    // AVX-512 F/BW/VL/DQ, with OS support for zmm state
  bool avx512vnni = false;  // AVX-512 VNNI (vpdpbusd on zmm)
  bool avxvnni = false;     // AVX-VNNI (VEX-encoded vpdpbusd on ymm)
};

const CpuFeatures& cpu_features();

// Kernel paths, fastest last. A path is usable iff the CPU has its features.
enum class KernelPath { kScalar = 0, kAvx2 = 1, kAvxVnni = 2, kAvx512bw = 3, kAvx512vnni = 4 };

const char* path_name(KernelPath p);
bool path_from_name(const std::string& name, KernelPath* out);
bool path_supported(KernelPath p);
std::vector<KernelPath> supported_paths();

// The path the operators use: the forced one if set (API or PYQINFER_KERNEL_PATH),
// else the best supported one.
KernelPath active_path();
// Force a path ("" or "auto" restores automatic selection). Throws
// std::invalid_argument for an unknown or unsupported path.
void force_path(const std::string& name);

}  // namespace pyq
