// Python bindings for pooling, add, concat, clip, requantize, quantize, dequantize
// (docs/semantics.md section 11). Thin: checks shapes and dtypes again (the
// Python layer, pyqinfer/ops/eltwise.py, gives the friendlier messages), derives
// the per-rule constants, splits the work over threads and calls the kernel
// table of the active kernel path.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/py_arrays.h"
#include "common/requant.h"
#include "common/threadpool.h"
#include "eltwise/eltwise.h"

namespace py = pybind11;

namespace pyq {
namespace {

using namespace pyq::pyarr;  // NOLINT: array predicates


void check_q8(const py::array& a, const char* name) {
  if (!is_u8(a) && !is_s8(a)) throw std::invalid_argument(std::string(name) + " must be uint8 or int8");
  if (!c_contiguous(a)) throw std::invalid_argument(std::string(name) + " must be C-contiguous");
}

void check_zp(int32_t zp, bool s8, const char* name) {
  if (zp < (s8 ? -128 : 0) || zp > (s8 ? 127 : 255))
    throw std::invalid_argument(std::string(name) + " is out of the range of the tensor's dtype");
}

void check_scale(float s, const char* name) {
  if (!std::isfinite(s) || !(s > 0)) throw std::invalid_argument(std::string(name) + " must be finite and > 0");
}

py::array empty_like_q8(bool s8, const std::vector<py::ssize_t>& shape) {
  if (s8) return py::array_t<int8_t>(shape);
  return py::array_t<uint8_t>(shape);
}

const EltwiseKernels& kernels() { return *eltwise_kernels_for(active_path()); }

// In-bounds taps of each output position along one axis (docs/semantics.md 11.1).
struct Taps {
  std::vector<int32_t> taps, off;
};

Taps axis_taps(int64_t n, int64_t out, int64_t k, int64_t s, int64_t p, int64_t d) {
  Taps t;
  t.off.push_back(0);
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t i = 0; i < k; ++i) {
      const int64_t idx = o * s - p + i * d;
      if (idx >= 0 && idx < n) t.taps.push_back(static_cast<int32_t>(idx));
    }
    if (static_cast<int64_t>(t.taps.size()) == t.off.back())
      throw std::invalid_argument("a pooling window has no tap inside the input");
    t.off.push_back(static_cast<int32_t>(t.taps.size()));
  }
  return t;
}

struct Geometry {
  int64_t N, H, W, C, OH, OW;
  Taps rows, cols;
};

// Output length along one axis (docs/semantics.md 11.1); span = in + pads - extent >= 0.
int64_t pool_out_size(int64_t in, int64_t pad0, int64_t span, int64_t stride, bool ceil_mode) {
  if (!ceil_mode) return span / stride + 1;
  int64_t out = (span + stride - 1) / stride + 1;
  if ((out - 1) * stride >= in + pad0) --out;  // a window starting in the bottom/right padding is dropped
  return out;
}

Geometry pool_geometry(const py::array& x, const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides,
                       const std::vector<int64_t>& pads, const std::vector<int64_t>& dilations, bool ceil_mode) {
  check_q8(x, "x");
  if (x.ndim() != 4) throw std::invalid_argument("x must be 4-D NHWC");
  if (kernel.size() != 2 || strides.size() != 2 || pads.size() != 4 || dilations.size() != 2)
    throw std::invalid_argument("kernel_shape, strides, dilations need 2 entries and pads 4");
  Geometry g;
  g.N = x.shape(0), g.H = x.shape(1), g.W = x.shape(2), g.C = x.shape(3);
  for (int i = 0; i < 2; ++i)
    if (kernel[i] < 1 || strides[i] < 1 || dilations[i] < 1)
      throw std::invalid_argument("kernel_shape, strides and dilations must be >= 1");
  const int64_t eh = (kernel[0] - 1) * dilations[0] + 1, ew = (kernel[1] - 1) * dilations[1] + 1;
  for (int i = 0; i < 4; ++i)
    if (pads[i] < 0 || pads[i] >= (i % 2 == 0 ? eh : ew))
      throw std::invalid_argument("pads must lie in [0, dilated kernel size)");
  if (g.H + pads[0] + pads[2] < eh || g.W + pads[1] + pads[3] < ew)
    throw std::invalid_argument("the padded input is smaller than the kernel");
  g.OH = pool_out_size(g.H, pads[0], g.H + pads[0] + pads[2] - eh, strides[0], ceil_mode);
  g.OW = pool_out_size(g.W, pads[1], g.W + pads[1] + pads[3] - ew, strides[1], ceil_mode);
  g.rows = axis_taps(g.H, g.OH, kernel[0], strides[0], pads[0], dilations[0]);
  g.cols = axis_taps(g.W, g.OW, kernel[1], strides[1], pads[1], dilations[1]);
  return g;
}

PoolArgs pool_args(const Geometry& g, const py::array& x, py::array& y) {
  PoolArgs a{};
  a.x = x.data();
  a.y = y.mutable_data();
  a.H = g.H, a.W = g.W, a.C = g.C, a.OH = g.OH, a.OW = g.OW;
  a.row_taps = g.rows.taps.data(), a.row_off = g.rows.off.data();
  a.col_taps = g.cols.taps.data(), a.col_off = g.cols.off.data();
  return a;
}

int64_t row_grain(const Geometry& g) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, g.OW * g.C)); }

py::array max_pool(const py::array& x, const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides,
                   const std::vector<int64_t>& pads, const std::vector<int64_t>& dilations, bool ceil_mode) {
  const Geometry g = pool_geometry(x, kernel, strides, pads, dilations, ceil_mode);
  const bool s8 = is_s8(x);
  py::array y = empty_like_q8(s8, {g.N, g.OH, g.OW, g.C});
  const PoolArgs a = pool_args(g, x, y);
  {
    py::gil_scoped_release release;
    const EltwiseKernels& k = kernels();
    parallel_ranges(g.N * g.OH, row_grain(g), [&](int64_t r0, int64_t r1) { (s8 ? k.max_pool_s8 : k.max_pool_u8)(a, r0, r1); });
  }
  return y;
}

py::array avg_pool(const py::array& x, float x_scale, int32_t x_zp, float y_scale, int32_t y_zp,
                   const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides,
                   const std::vector<int64_t>& pads, bool count_include_pad, bool ceil_mode) {
  const Geometry g = pool_geometry(x, kernel, strides, pads, {1, 1}, ceil_mode);
  const bool s8 = is_s8(x);
  check_scale(x_scale, "x_scale");
  check_scale(y_scale, "y_scale");
  check_zp(x_zp, s8, "x_zero_point");
  check_zp(y_zp, s8, "y_zero_point");
  py::array y = empty_like_q8(s8, {g.N, g.OH, g.OW, g.C});
  PoolArgs a = pool_args(g, x, y);
  a.x_scale = x_scale, a.y_scale = y_scale, a.x_zp = x_zp, a.y_zp = y_zp;
  a.kernel_size = kernel[0] * kernel[1];
  a.count_include_pad = count_include_pad;
  {
    py::gil_scoped_release release;
    const EltwiseKernels& k = kernels();
    parallel_ranges(g.N * g.OH, row_grain(g), [&](int64_t r0, int64_t r1) {
      std::vector<float> scratch(static_cast<size_t>(g.C));
      (s8 ? k.avg_pool_s8 : k.avg_pool_u8)(a, r0, r1, scratch.data());
    });
  }
  return y;
}

py::array global_avg_pool(const py::array& x, float x_scale, int32_t x_zp, float y_scale, int32_t y_zp) {
  check_q8(x, "x");
  if (x.ndim() != 4) throw std::invalid_argument("x must be 4-D NHWC");
  const bool s8 = is_s8(x);
  check_scale(x_scale, "x_scale");
  check_scale(y_scale, "y_scale");
  check_zp(x_zp, s8, "x_zero_point");
  check_zp(y_zp, s8, "y_zero_point");
  const int64_t N = x.shape(0), HW = x.shape(1) * x.shape(2), C = x.shape(3);
  if (HW < 1 || HW >= (int64_t{1} << 24)) throw std::invalid_argument("H*W must lie in [1, 2^24)");
  GapArgs a{};
  a.scale = x_scale / (y_scale * static_cast<float>(HW));
  if (!std::isfinite(a.scale)) throw std::invalid_argument("x_scale / (y_scale * H * W) overflows float32");
  py::array y = empty_like_q8(s8, {N, 1, 1, C});
  a.x = x.data(), a.y = y.mutable_data(), a.HW = HW, a.C = C, a.x_zp = x_zp, a.y_zp = y_zp;
  {
    py::gil_scoped_release release;
    const EltwiseKernels& k = kernels();
    const int64_t cblocks = (C + 63) / 64;
    parallel_ranges(N * cblocks, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, HW * 64)), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = t / cblocks, c0 = (t % cblocks) * 64;
        (s8 ? k.gap_s8 : k.gap_u8)(a, n, c0, std::min(C, c0 + 64));
      }
    });
  }
  return y;
}

AddArgs add_params(const std::string& rule, float sa, int32_t za, float sb, int32_t zb, float sc, int32_t zc) {
  AddArgs p{};
  p.za = za, p.zb = zb, p.zc = zc;
  if (rule == "onnxruntime") {
    p.rule = AddRule::kOnnxruntime;
    p.rA = sa / sc;
    p.rB = sb / sc;
    if (!std::isfinite(p.rA) || !std::isfinite(p.rB))
      throw std::invalid_argument("a_scale/c_scale or b_scale/c_scale overflows float32");
    const float t = p.rB * static_cast<float>(zb);
    p.F = static_cast<float>(zc) - std::fma(p.rA, static_cast<float>(za), t);
  } else if (rule == "tflite") {
    p.rule = AddRule::kTflite;
    const double twice_max = 2.0 * std::max(static_cast<double>(sa), static_cast<double>(sb));
    bool ok = quantize_multiplier(static_cast<double>(sa) / twice_max, &p.m_a, &p.sh_a);
    ok = ok && quantize_multiplier(static_cast<double>(sb) / twice_max, &p.m_b, &p.sh_b);
    ok = ok && quantize_multiplier(twice_max / (1048576.0 * static_cast<double>(sc)), &p.m_o, &p.sh_o);
    if (!ok) throw std::invalid_argument("tflite add: output multiplier too large");
  } else if (rule == "xnnpack") {
    p.rule = AddRule::kXnnpack;
    const float rA = sa / sc, rB = sb / sc;
    const float lo = std::ldexp(1.0f, -10), hi = 256.0f;
    if (!(rA >= lo && rA < hi) || !(rB >= lo && rB < hi))
      throw std::invalid_argument("xnnpack add needs a_scale/c_scale and b_scale/c_scale in [2^-10, 2^8)");
    int e = 0;
    std::frexp(std::max(rA, rB), &e);
    p.shift = 20 - (e - 1);
    p.xm_a = static_cast<int32_t>(std::lrint(std::ldexp(static_cast<double>(rA), p.shift)));
    p.xm_b = static_cast<int32_t>(std::lrint(std::ldexp(static_cast<double>(rB), p.shift)));
    p.bias = (1 << (p.shift - 1)) - p.xm_a * za - p.xm_b * zb;
  } else {
    throw std::invalid_argument("rule must be 'onnxruntime', 'tflite' or 'xnnpack', got '" + rule + "'");
  }
  return p;
}

// ONNX Runtime's broadcaster runs MLAS with input 0 as the span's scalar (and the
// operands swapped) when a's size is 1 at the innermost dimension of the common
// trailing rank whose broadcast size exceeds 1 (or at the outermost common one if
// none does); a 0-d a always is. docs/semantics.md 11.4, reference ort_add_form.
bool ort_a_is_scalar(const std::vector<int64_t>& as, const std::vector<int64_t>& bs) {
  if (as.empty()) return true;
  if (bs.empty()) return as.back() <= 1;
  const size_t m = std::min(as.size(), bs.size());
  int64_t da = 1;
  for (size_t i = 1; i <= m; ++i) {
    da = as[as.size() - i];
    const int64_t db = bs[bs.size() - i];
    const int64_t use = std::min(da, db) == 0 ? 0 : std::max(da, db);
    if (use <= 1 && i < m) continue;
    break;
  }
  return da <= 1;
}

// The broadcast output as spans: `outer` dimensions (sizes and element strides of
// a and b, innermost last) times an inner run of `inner` elements in which a and
// b advance by a_step / b_step (0 or 1). Dimensions of size 1 are dropped and
// neighbours with compatible strides merged.
struct AddSpans {
  std::vector<int64_t> out_shape;
  std::vector<int64_t> size, sa, sb;  // outer dimensions
  int64_t inner = 1, a_step = 0, b_step = 0, spans = 1;
};

AddSpans add_spans(const std::vector<int64_t>& as, const std::vector<int64_t>& bs) {
  AddSpans r;
  const size_t nd = std::max(as.size(), bs.size());
  std::vector<int64_t> a(nd, 1), b(nd, 1);
  std::copy(as.begin(), as.end(), a.begin() + static_cast<std::ptrdiff_t>(nd - as.size()));
  std::copy(bs.begin(), bs.end(), b.begin() + static_cast<std::ptrdiff_t>(nd - bs.size()));
  r.out_shape.resize(nd);
  for (size_t d = 0; d < nd; ++d) {
    if (a[d] != b[d] && a[d] != 1 && b[d] != 1)
      throw std::invalid_argument("b must have a shape that broadcasts with a's");
    r.out_shape[d] = a[d] == 1 ? b[d] : a[d];
  }
  // groups of (size, a stride, b stride), innermost first
  std::vector<int64_t> gs, ga, gb;
  int64_t ca = 1, cb = 1;  // contiguous element strides of a and b
  for (size_t k = nd; k-- > 0;) {
    const int64_t n = r.out_shape[k];
    const int64_t sa = a[k] == 1 ? 0 : ca, sb = b[k] == 1 ? 0 : cb;
    ca *= a[k], cb *= b[k];
    if (n == 1) continue;
    if (!gs.empty() && sa == ga.back() * gs.back() && sb == gb.back() * gs.back()) {
      gs.back() *= n;
    } else {
      gs.push_back(n), ga.push_back(sa), gb.push_back(sb);
    }
  }
  if (!gs.empty()) {
    r.inner = gs[0], r.a_step = ga[0], r.b_step = gb[0];
    for (size_t g = gs.size(); g-- > 1;) {
      r.size.push_back(gs[g]), r.sa.push_back(ga[g]), r.sb.push_back(gb[g]);
      r.spans *= gs[g];
    }
  }
  for (int64_t n : r.out_shape)
    if (n == 0) r.spans = 0;
  return r;
}

// Element offset of span s in an operand with outer strides `st`.
int64_t span_offset(const AddSpans& sp, const std::vector<int64_t>& st, int64_t s) {
  int64_t off = 0;
  for (size_t d = sp.size.size(); d-- > 0;) {  // innermost outer dimension last
    off += (s % sp.size[d]) * st[d];
    s /= sp.size[d];
  }
  return off;
}

bool all_outer_zero(const std::vector<int64_t>& st) {
  return std::all_of(st.begin(), st.end(), [](int64_t v) { return v == 0; });
}

// How many spans of the innermost outer dimension one kernel call may cover when one
// operand is the same contiguous run at every span and the other advances contiguously
// (1: no such form). The tiles stay small (<= 4 KiB).
int64_t repeat_tile(const AddSpans& sp) {
  if (sp.size.empty() || sp.inner >= 4096 || sp.a_step != 1 || sp.b_step != 1) return 1;
  const bool tile_a = all_outer_zero(sp.sa) && sp.sb.back() == sp.inner;
  const bool tile_b = all_outer_zero(sp.sb) && sp.sa.back() == sp.inner;
  if (!tile_a && !tile_b) return 1;
  return std::min<int64_t>(sp.size.back(), std::max<int64_t>(1, 4096 / sp.inner));
}

py::array qlinear_add(const py::array& a, float sa, int32_t za, const py::array& b, float sb, int32_t zb, float sc,
                      int32_t zc, const std::string& rule, int32_t lo, int32_t hi) {
  check_q8(a, "a");
  check_q8(b, "b");
  const bool s8 = is_s8(a);
  if (is_s8(b) != s8) throw std::invalid_argument("a and b must have the same dtype");
  check_scale(sa, "a_scale");
  check_scale(sb, "b_scale");
  check_scale(sc, "c_scale");
  check_zp(za, s8, "a_zero_point");
  check_zp(zb, s8, "b_zero_point");
  check_zp(zc, s8, "c_zero_point");
  if (lo > hi || lo < (s8 ? -128 : 0) || hi > (s8 ? 127 : 255)) throw std::invalid_argument("bad clip bounds");
  std::vector<int64_t> ash(a.shape(), a.shape() + a.ndim()), bsh(b.shape(), b.shape() + b.ndim());
  const AddSpans sp = add_spans(ash, bsh);
  // ORT's a-is-scalar form computes with the operands swapped; the integer rules are symmetric
  const bool swap = rule == "onnxruntime" && ort_a_is_scalar(ash, bsh);
  AddArgs p = swap ? add_params(rule, sb, zb, sa, za, sc, zc) : add_params(rule, sa, za, sb, zb, sc, zc);
  p.lo = lo, p.hi = hi;
  p.a_step = swap ? sp.b_step : sp.a_step;
  p.b_step = swap ? sp.a_step : sp.b_step;
  std::vector<py::ssize_t> shape(sp.out_shape.begin(), sp.out_shape.end());
  py::array y = empty_like_q8(s8, shape);
  const uint8_t* pa = static_cast<const uint8_t*>(a.data());
  const uint8_t* pb = static_cast<const uint8_t*>(b.data());
  uint8_t* py_ = static_cast<uint8_t*>(y.mutable_data());
  {
    py::gil_scoped_release release;
    const EltwiseKernels& k = kernels();
    auto kern = s8 ? k.add_s8 : k.add_u8;
    if (sp.spans == 1) {
      p.a = swap ? pb : pa, p.b = swap ? pa : pb, p.y = py_;
      parallel_ranges(sp.inner, 65536, [&](int64_t i0, int64_t i1) { kern(p, i0, i1); });
    } else if (const int64_t R = repeat_tile(sp); R > 1) {
      // One operand is a single run repeated at every span (a per-channel [C] or [1,1,1,C]
      // operand of an NHWC tensor): R copies of it let one kernel call cover R spans of the
      // other operand (same values, so the same bits) instead of one call per C elements.
      const bool tile_a = all_outer_zero(sp.sa);
      const int64_t inner = sp.inner, n_last = sp.size.back(), chunks = (n_last + R - 1) / R;
      const uint8_t* rep = tile_a ? pa : pb;
      std::vector<uint8_t> tile(static_cast<size_t>(R * inner));
      for (int64_t r = 0; r < R; ++r) std::memcpy(tile.data() + r * inner, rep, static_cast<size_t>(inner));
      parallel_ranges(sp.spans / n_last * chunks, std::max<int64_t>(1, 65536 / (R * inner)), [&](int64_t u0, int64_t u1) {
        AddArgs q = p;
        for (int64_t u = u0; u < u1; ++u) {
          const int64_t j0 = (u % chunks) * R, s = (u / chunks) * n_last + j0;
          const int64_t oa = span_offset(sp, sp.sa, s), ob = span_offset(sp, sp.sb, s);
          const uint8_t* qa = tile_a ? tile.data() : pa + oa;
          const uint8_t* qb = tile_a ? pb + ob : tile.data();
          q.a = swap ? qb : qa;
          q.b = swap ? qa : qb;
          q.y = py_ + s * inner;
          kern(q, 0, std::min(R, n_last - j0) * inner);
        }
      });
    } else {
      const int64_t inner = sp.inner;
      parallel_ranges(sp.spans, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, inner)), [&](int64_t s0, int64_t s1) {
        AddArgs q = p;
        for (int64_t s = s0; s < s1; ++s) {
          const int64_t oa = span_offset(sp, sp.sa, s), ob = span_offset(sp, sp.sb, s);
          q.a = swap ? pb + ob : pa + oa;
          q.b = swap ? pa + oa : pb + ob;
          q.y = py_ + s * inner;
          kern(q, 0, inner);
        }
      });
    }
  }
  return y;
}

py::array clip(const py::array& x, int32_t lo, int32_t hi) {
  check_q8(x, "x");
  const bool s8 = is_s8(x);
  if (lo > hi || lo < (s8 ? -128 : 0) || hi > (s8 ? 127 : 255)) throw std::invalid_argument("bad clip bounds");
  std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
  py::array y = empty_like_q8(s8, shape);
  const void* xp = x.data();
  void* yp = y.mutable_data();
  const int64_t n = x.size();
  {
    py::gil_scoped_release release;
    const EltwiseKernels& k = kernels();
    parallel_ranges(n, 1 << 18, [&](int64_t i0, int64_t i1) {
      if (s8)
        k.clip_s8(static_cast<const int8_t*>(xp) + i0, static_cast<int8_t*>(yp) + i0, i1 - i0, lo, hi);
      else
        k.clip_u8(static_cast<const uint8_t*>(xp) + i0, static_cast<uint8_t*>(yp) + i0, i1 - i0, lo, hi);
    });
  }
  return y;
}

// Per-channel parameters: 1 or C entries; returns nparams.
int64_t check_params(const py::array& scale, const py::array& zp, int64_t C) {
  if (!is_dtype(scale, 'f', 4) || scale.ndim() != 1 || !c_contiguous(scale))
    throw std::invalid_argument("scale must be a contiguous 1-D float32 array");
  if (!is_dtype(zp, 'i', 4) || zp.ndim() != 1 || !c_contiguous(zp))
    throw std::invalid_argument("zero_point must be a contiguous 1-D int32 array");
  const int64_t np_ = scale.shape(0);
  if ((np_ != 1 && np_ != C) || zp.shape(0) != np_)
    throw std::invalid_argument("scale and zero_point must have 1 or C (last axis) entries");
  const float* s = static_cast<const float*>(scale.data());
  for (int64_t i = 0; i < np_; ++i) check_scale(s[i], "scale");
  return np_;
}

py::array quantize(const py::array& x, const py::array& scale, const py::array& zp, const std::string& rule,
                   const std::string& dtype) {
  if (!is_dtype(x, 'f', 4) || x.ndim() != 2 || !c_contiguous(x))
    throw std::invalid_argument("x must be a contiguous 2-D float32 array [rows, C]");
  const int64_t R = x.shape(0), C = x.shape(1);
  const int64_t np_ = check_params(scale, zp, C);
  if (dtype != "uint8" && dtype != "int8") throw std::invalid_argument("dtype must be uint8 or int8");
  const bool s8 = dtype == "int8";
  QuantArgs a{};
  if (rule == "onnx") a.rule = QuantRule::kOnnx;
  else if (rule == "torch") a.rule = QuantRule::kTorch;
  else if (rule == "tflite") a.rule = QuantRule::kTflite;
  else throw std::invalid_argument("rule must be 'onnx', 'torch' or 'tflite', got '" + rule + "'");
  const int32_t* z = static_cast<const int32_t*>(zp.data());
  for (int64_t i = 0; i < np_; ++i) check_zp(z[i], s8, "zero_point");
  std::vector<float> s(static_cast<const float*>(scale.data()), static_cast<const float*>(scale.data()) + np_);
  if (a.rule == QuantRule::kTorch)
    for (auto& v : s) v = 1.0f / v;  // fl32(1 / s)
  py::array y = empty_like_q8(s8, {R, C});
  a.x = static_cast<const float*>(x.data()), a.y = y.mutable_data(), a.scale = s.data(), a.zp = z;
  a.nparams = np_, a.C = C, a.qmin = s8 ? -128 : 0, a.qmax = s8 ? 127 : 255;
  {
    py::gil_scoped_release release;
    const EltwiseKernels& k = kernels();
    parallel_ranges(R, std::max<int64_t>(1, 65536 / std::max<int64_t>(C, 1)),
          [&](int64_t r0, int64_t r1) { (s8 ? k.quantize_s8 : k.quantize_u8)(a, r0, r1); });
  }
  return y;
}

py::array dequantize(const py::array& q, const py::array& scale, const py::array& zp) {
  if (q.ndim() != 2 || !c_contiguous(q)) throw std::invalid_argument("q must be a contiguous 2-D array [rows, C]");
  const bool s8 = is_s8(q), u8 = is_u8(q), s32 = is_dtype(q, 'i', 4);
  if (!s8 && !u8 && !s32) throw std::invalid_argument("q must be uint8, int8 or int32");
  const int64_t R = q.shape(0), C = q.shape(1);
  const int64_t np_ = check_params(scale, zp, C);
  const int32_t* z = static_cast<const int32_t*>(zp.data());
  for (int64_t i = 0; i < np_; ++i) {
    if (s32 && z[i] != 0) throw std::invalid_argument("zero_point must be 0 for int32 input");
    if (!s32) check_zp(z[i], s8, "zero_point");
  }
  py::array_t<float> y({R, C});
  DequantArgs a{q.data(), y.mutable_data(), static_cast<const float*>(scale.data()), z, np_, C};
  {
    py::gil_scoped_release release;
    const EltwiseKernels& k = kernels();
    parallel_ranges(R, std::max<int64_t>(1, 65536 / std::max<int64_t>(C, 1)), [&](int64_t r0, int64_t r1) {
      (s32 ? k.dequantize_s32 : s8 ? k.dequantize_s8 : k.dequantize_u8)(a, r0, r1);
    });
  }
  return y;
}

py::array requantize(const py::array& x, const RequantParams& rq, int32_t zp, int32_t lo, int32_t hi,
                     const std::string& dtype) {
  if (!is_dtype(x, 'i', 4) || x.ndim() != 2 || !c_contiguous(x))
    throw std::invalid_argument("x must be a contiguous 2-D int32 array [rows, C]");
  if (dtype != "uint8" && dtype != "int8") throw std::invalid_argument("dtype must be uint8 or int8");
  const bool s8 = dtype == "int8";
  const int64_t R = x.shape(0), C = x.shape(1);
  const size_t np_ = rq.mode == RequantMode::kFp32 ? rq.scale.size() : rq.shift.size();
  if (np_ != 1 && static_cast<int64_t>(np_) != C)
    throw std::invalid_argument("requantization parameters must have 1 or C (last axis) channels");
  check_zp(zp, s8, "y_zero_point");
  if (lo > hi || lo < (s8 ? -128 : 0) || hi > (s8 ? 127 : 255)) throw std::invalid_argument("bad clip bounds");
  py::array y = empty_like_q8(s8, {R, C});
  RequantArgs a{static_cast<const int32_t*>(x.data()), y.mutable_data(), static_cast<int32_t>(rq.mode),
                rq.scale.empty() ? nullptr : rq.scale.data(), rq.multiplier.empty() ? nullptr : rq.multiplier.data(),
                rq.shift.empty() ? nullptr : rq.shift.data(), static_cast<int64_t>(np_), C, zp, lo, hi};
  {
    py::gil_scoped_release release;
    const EltwiseKernels& k = kernels();
    parallel_ranges(R, std::max<int64_t>(1, 32768 / std::max<int64_t>(C, 1)),
          [&](int64_t r0, int64_t r1) { (s8 ? k.requantize_s8 : k.requantize_u8)(a, r0, r1); });
  }
  return y;
}

// ORT's QLinearConcat: each input is requantized through a 256-entry table
// y = sat(rne(fl32(fl32(s_x * fl32(x - zx)) / s_y)) + zy), or copied when its
// (scale, zero point) equal the output's. Portable code on every path: a copy
// and a byte lookup.
py::array concat(const std::vector<py::array>& xs, const std::vector<float>& scales, const std::vector<int32_t>& zps,
                 float y_scale, int32_t y_zp, int64_t axis) {
  if (xs.empty()) throw std::invalid_argument("inputs must not be empty");
  if (scales.size() != xs.size() || zps.size() != xs.size())
    throw std::invalid_argument("one scale and one zero point per input");
  check_q8(xs[0], "inputs[0]");
  const bool s8 = is_s8(xs[0]);
  const int64_t nd = xs[0].ndim();
  if (axis < 0 || axis >= nd) throw std::invalid_argument("axis out of range");
  check_scale(y_scale, "y_scale");
  check_zp(y_zp, s8, "y_zero_point");
  std::vector<py::ssize_t> shape(xs[0].shape(), xs[0].shape() + nd);
  int64_t total_axis = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    check_q8(xs[i], "inputs[i]");
    if (is_s8(xs[i]) != s8 || xs[i].ndim() != nd) throw std::invalid_argument("inputs differ in dtype or rank");
    for (int64_t d = 0; d < nd; ++d)
      if (d != axis && xs[i].shape(d) != shape[d]) throw std::invalid_argument("inputs differ outside the axis");
    check_scale(scales[i], "x_scale");
    check_zp(zps[i], s8, "x_zero_point");
    total_axis += xs[i].shape(axis);
  }
  shape[axis] = total_axis;
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= shape[d];
  for (int64_t d = axis + 1; d < nd; ++d) inner *= shape[d];
  py::array y = empty_like_q8(s8, shape);
  uint8_t* out = static_cast<uint8_t*>(y.mutable_data());
  const int64_t out_row = total_axis * inner;
  int64_t col = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const uint8_t* in = static_cast<const uint8_t*>(xs[i].data());
    const int64_t len = xs[i].shape(axis) * inner;
    const bool copy = scales[i] == y_scale && zps[i] == y_zp;
    const EltwiseKernels& k = kernels();
    {
      py::gil_scoped_release release;
      for (int64_t o = 0; o < outer; ++o) {
        const uint8_t* src = in + o * len;
        uint8_t* dst = out + o * out_row + col;
        if (copy)
          std::memcpy(dst, src, static_cast<size_t>(len));
        else if (s8)
          k.concat_requant_s8(reinterpret_cast<const int8_t*>(src), reinterpret_cast<int8_t*>(dst), len, scales[i],
                              zps[i], y_scale, y_zp);
        else
          k.concat_requant_u8(src, dst, len, scales[i], zps[i], y_scale, y_zp);
      }
    }
    col += len;
  }
  return y;
}

}  // namespace

void bind_eltwise(py::module_& m) {
  m.def("eltwise_kernel_name", [] { return std::string(kernels().name); });
  m.def("max_pool", &max_pool, py::arg("x"), py::arg("kernel_shape"), py::arg("strides"), py::arg("pads"),
        py::arg("dilations"), py::arg("ceil_mode") = false);
  m.def("avg_pool", &avg_pool, py::arg("x"), py::arg("x_scale"), py::arg("x_zero_point"), py::arg("y_scale"),
        py::arg("y_zero_point"), py::arg("kernel_shape"), py::arg("strides"), py::arg("pads"),
        py::arg("count_include_pad"), py::arg("ceil_mode") = false);
  m.def("global_avg_pool", &global_avg_pool, py::arg("x"), py::arg("x_scale"), py::arg("x_zero_point"),
        py::arg("y_scale"), py::arg("y_zero_point"));
  m.def("qlinear_add", &qlinear_add, py::arg("a"), py::arg("a_scale"), py::arg("a_zero_point"), py::arg("b"),
        py::arg("b_scale"), py::arg("b_zero_point"), py::arg("c_scale"), py::arg("c_zero_point"), py::arg("rule"),
        py::arg("lo"), py::arg("hi"));
  m.def("clip", &clip, py::arg("x"), py::arg("lo"), py::arg("hi"));
  m.def("quantize", &quantize, py::arg("x"), py::arg("scale"), py::arg("zero_point"), py::arg("rule"),
        py::arg("dtype"));
  m.def("dequantize", &dequantize, py::arg("q"), py::arg("scale"), py::arg("zero_point"));
  m.def("requantize", &requantize, py::arg("x"), py::arg("params"), py::arg("y_zero_point"), py::arg("lo"),
        py::arg("hi"), py::arg("dtype"));
  m.def("concat", &concat, py::arg("inputs"), py::arg("scales"), py::arg("zero_points"), py::arg("y_scale"),
        py::arg("y_zero_point"), py::arg("axis"));
}

}  // namespace pyq
