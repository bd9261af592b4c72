#include "common/cpu_features.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>

#if defined(PYQ_X86)
#include <cpuid.h>
#endif

namespace pyq {
namespace {

#if defined(PYQ_X86)
uint64_t read_xcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if defined(PYQ_X86)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  const bool avx = (c >> 28) & 1;
  const bool fma = (c >> 12) & 1;
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = read_xcr0();
  const bool ymm_os = (xcr0 & 0x6) == 0x6;
  const bool zmm_os = (xcr0 & 0xE6) == 0xE6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool avx2 = (b >> 5) & 1;
  const bool bmi2 = (b >> 8) & 1;
  const bool avx512f = (b >> 16) & 1;
  const bool avx512dq = (b >> 17) & 1;
  const bool avx512bw = (b >> 30) & 1;
  const bool avx512vl = (b >> 31) & 1;
  const bool avx512vnni = (c >> 11) & 1;
  unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
  __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1);
  const bool avxvnni = (a1 >> 4) & 1;
  f.avx2 = ymm_os && avx2 && fma && bmi2;
  f.avx512bw = f.avx2 && zmm_os && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512vnni = f.avx512bw && avx512vnni;
  f.avxvnni = f.avx2 && avxvnni;
#endif
  return f;
}

constexpr int kNoForce = -1;
std::atomic<int> g_forced{-2};  // -2: not yet initialised from the environment

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

const char* path_name(KernelPath p) {
  switch (p) {
    case KernelPath::kScalar: return "scalar";
    case KernelPath::kAvx2: return "avx2";
    case KernelPath::kAvxVnni: return "avxvnni";
    case KernelPath::kAvx512bw: return "avx512bw";
    case KernelPath::kAvx512vnni: return "avx512vnni";
  }
  return "?";
}

bool path_from_name(const std::string& name, KernelPath* out) {
  for (int i = 0; i <= static_cast<int>(KernelPath::kAvx512vnni); ++i) {
    if (name == path_name(static_cast<KernelPath>(i))) {
      *out = static_cast<KernelPath>(i);
      return true;
    }
  }
  return false;
}

bool path_supported(KernelPath p) {
  const CpuFeatures& f = cpu_features();
  switch (p) {
    case KernelPath::kScalar: return true;
    case KernelPath::kAvx2: return f.avx2;
    case KernelPath::kAvxVnni: return f.avxvnni;
    case KernelPath::kAvx512bw: return f.avx512bw;
    case KernelPath::kAvx512vnni: return f.avx512vnni;
  }
  return false;
}

std::vector<KernelPath> supported_paths() {
  std::vector<KernelPath> out;
  for (int i = 0; i <= static_cast<int>(KernelPath::kAvx512vnni); ++i) {
    if (path_supported(static_cast<KernelPath>(i))) out.push_back(static_cast<KernelPath>(i));
  }
  return out;
}

void force_path(const std::string& name) {
  if (name.empty() || name == "auto") {
    g_forced.store(kNoForce);
    return;
  }
  KernelPath p;
  if (!path_from_name(name, &p)) {
    throw std::invalid_argument("unknown kernel path '" + name +
                                "'; expected one of scalar, avx2, avxvnni, avx512bw, avx512vnni, auto");
  }
  if (!path_supported(p)) {
    throw std::invalid_argument("kernel path '" + name + "' is not supported by this CPU");
  }
  g_forced.store(static_cast<int>(p));
}

KernelPath active_path() {
  int forced = g_forced.load();
  if (forced == -2) {
    const char* env = std::getenv("PYQINFER_KERNEL_PATH");
    // An invalid environment value is reported by the Python layer at import;
    // here it simply falls back to automatic selection.
    try {
      force_path(env ? env : "");
    } catch (const std::invalid_argument&) {
      g_forced.store(kNoForce);
    }
    forced = g_forced.load();
  }
  if (forced >= 0) return static_cast<KernelPath>(forced);
  return supported_paths().back();
}

}  // namespace pyq
