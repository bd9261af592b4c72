// Python bindings for the integer MultiThreshold kernel (docs/semantics.md 13.1).
// Thin: a ThresholdTable holds the prepared thresholds in the layouts the kernels
// read (rows, transposed columns, a binary-search tree per row); multi_threshold_int
// checks the arrays again (the Python layer, pyqinfer/ops/threshold.py, gives the
// friendlier messages), splits the work over threads and calls the kernel table of
// the active kernel path.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/py_arrays.h"
#include "common/threadpool.h"
#include "threshold/threshold.h"

namespace py = pybind11;

namespace pyq {
namespace {

using namespace pyq::pyarr;  // NOLINT: array predicates

// Compare-and-count up to this many thresholds per row, a binary search above
// (crossovers timed with both algorithms forced on a 1x64x56x56 int32 layer, W = 1..255, 1 thread;
// docs/performance.md, MultiThreshold. Both are exact, so only speed depends on them).
constexpr int64_t kCountMaxSpan = 6;    // one row for a run of elements (register search above)
constexpr int64_t kCountMaxLanes = 48;  // channels in the lanes (search above: 3 load steps, then gathers)

struct ThresholdTable {
  std::string in_dtype;
  ThrIn in = ThrIn::kS32;
  int64_t R = 0, W = 0, Cp = 0;
  int32_t P = 0, k = 0;
  std::vector<int32_t> rows, cols, tree;
  std::vector<uint32_t> scale, bias;
};

bool in_kind(const std::string& name, ThrIn* out) {
  static const char* names[] = {"uint8", "int8", "uint16", "int16", "int32"};
  for (int i = 0; i < 5; ++i)
    if (name == names[i]) {
      *out = static_cast<ThrIn>(i);
      return true;
    }
  return false;
}

std::vector<uint32_t> low32(const py::array& a, int64_t R, const char* name) {
  if (a.ndim() != 1 || a.shape(0) != R || a.dtype().kind() != 'i' || a.itemsize() != 8)
    throw std::invalid_argument(std::string(name) + " must be an int64 vector with one entry per threshold row");
  py::array c = py::array::ensure(a, py::array::c_style);
  const int64_t* p = static_cast<const int64_t*>(c.data());
  std::vector<uint32_t> v(static_cast<size_t>(R));
  for (int64_t i = 0; i < R; ++i) v[i] = static_cast<uint32_t>(static_cast<uint64_t>(p[i]));  // modulo 2^32
  return v;
}

std::shared_ptr<ThresholdTable> make_table(const py::array& rows, const py::array& scale, const py::array& bias,
                                           const std::string& in_dtype) {
  auto t = std::make_shared<ThresholdTable>();
  if (!in_kind(in_dtype, &t->in))
    throw std::invalid_argument("in_dtype must be uint8, int8, uint16, int16 or int32, got " + in_dtype);
  t->in_dtype = in_dtype;
  if (rows.ndim() != 2 || !is_dtype(rows, 'i', 4) || !c_contiguous(rows))
    throw std::invalid_argument("thresholds must be a C-contiguous int32 array [R, W]");
  t->R = rows.shape(0), t->W = rows.shape(1);
  if (t->R < 1) throw std::invalid_argument("thresholds need at least one row");
  if (t->W > (1 << 24)) throw std::invalid_argument("too many thresholds per row (more than 2^24)");
  const int32_t* r = static_cast<const int32_t*>(rows.data());
  t->rows.assign(r, r + t->R * t->W);
  for (int64_t i = 0; i < t->R; ++i)
    for (int64_t j = 1; j < t->W; ++j)
      if (r[i * t->W + j - 1] > r[i * t->W + j]) throw std::invalid_argument("threshold rows must be sorted ascending");
  t->scale = low32(scale, t->R, "scale");
  t->bias = low32(bias, t->R, "bias");
  while (((int64_t{1} << t->k) - 1) < t->W) ++t->k;
  t->P = static_cast<int32_t>((int64_t{1} << t->k) - 1);
  t->Cp = (t->R + 15) / 16 * 16;
  if (t->R * std::max<int64_t>(t->P, 1) >= INT32_MAX || t->Cp * std::max<int64_t>(t->P, 1) >= INT32_MAX)
    throw std::invalid_argument("the threshold table is too large");
  t->tree.assign(static_cast<size_t>(t->R * t->P), INT32_MAX);
  t->cols.assign(static_cast<size_t>(t->Cp * std::max<int64_t>(t->P, 1)), INT32_MAX);  // [P, Cp]
  for (int64_t i = 0; i < t->R; ++i)
    for (int64_t j = 0; j < t->W; ++j) {
      t->tree[i * t->P + j] = r[i * t->W + j];
      t->cols[j * t->Cp + i] = r[i * t->W + j];
    }
  // W = 0: never read, but keep the pointers non-null (row offsets r * W are then 0 + 0)
  if (t->rows.empty()) t->rows.push_back(INT32_MAX);
  if (t->tree.empty()) t->tree.push_back(INT32_MAX);
  return t;
}

bool use_count(const ThresholdTable& t, bool lanes, const std::string& algo) {
  if (algo == "count") return true;
  if (algo == "search") return false;
  if (algo != "auto") throw std::invalid_argument("algo must be auto, count or search, got " + algo);
  return t.W <= (lanes ? kCountMaxLanes : kCountMaxSpan);
}

py::array multi_threshold_int(const py::array& x, const ThresholdTable& t, int64_t axis, const std::string& out_dtype,
                              const std::string& algo) {
  const ThrIn in = t.in;
  static const char kKind[] = {'u', 'i', 'u', 'i', 'i'};
  static const int kSize[] = {1, 1, 2, 2, 4};
  const int ii = static_cast<int>(in);
  if (!is_dtype(x, kKind[ii], kSize[ii]) || !x.dtype().attr("isnative").cast<bool>())
    throw std::invalid_argument("x has dtype " + py::str(x.dtype()).cast<std::string>() +
                                " but the thresholds were prepared for " + t.in_dtype);
  if (!c_contiguous(x)) throw std::invalid_argument("x must be C-contiguous");
  const int64_t nd = x.ndim();
  if (axis < 0 || axis >= nd) throw std::invalid_argument("axis is out of range for x");
  int32_t out_bytes = 0;
  if (out_dtype == "uint8" || out_dtype == "int8") out_bytes = 1;
  else if (out_dtype == "uint16" || out_dtype == "int16") out_bytes = 2;
  else if (out_dtype == "uint32" || out_dtype == "int32") out_bytes = 4;
  else throw std::invalid_argument("out_dtype must be an integer type of at most 32 bits, got " + out_dtype);
  const int64_t C = x.shape(axis);
  if (t.R != 1 && t.R != C)
    throw std::invalid_argument("thresholds have " + std::to_string(t.R) + " rows but x has " + std::to_string(C) +
                                " channels");
  std::vector<py::ssize_t> shape(x.shape(), x.shape() + nd);
  check_output_shape(shape);
  py::array y;
  if (out_dtype == "uint8") y = py::array_t<uint8_t>(shape);
  else if (out_dtype == "int8") y = py::array_t<int8_t>(shape);
  else if (out_dtype == "uint16") y = py::array_t<uint16_t>(shape);
  else if (out_dtype == "int16") y = py::array_t<int16_t>(shape);
  else if (out_dtype == "uint32") y = py::array_t<uint32_t>(shape);
  else y = py::array_t<int32_t>(shape);
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.shape(d);
  for (int64_t d = axis + 1; d < nd; ++d) inner *= x.shape(d);
  const int64_t n = outer * C * inner;
  if (n == 0) return y;

  ThresholdArgs a{};
  a.x = x.data();
  a.y = y.mutable_data();
  a.in = in;
  a.out_bytes = out_bytes;
  a.C = C, a.inner = inner, a.R = t.R, a.W = t.W;
  a.rows = t.rows.data(), a.cols = t.cols.data(), a.Cp = t.Cp;
  a.tree = t.tree.data(), a.P = t.P, a.k = t.k;
  a.scale = t.scale.data(), a.bias = t.bias.data();
  const bool lanes = t.R != 1 && inner == 1;
  const ThrAlgo al = use_count(t, lanes, algo) ? ThrAlgo::kCount : ThrAlgo::kSearch;
  // elements per task: about 64K compare steps each
  const int64_t cost = al == ThrAlgo::kCount ? t.W / 4 + 1 : t.k + 1;
  const int64_t grain_elems = std::max<int64_t>(1, 65536 / cost);
  {
    py::gil_scoped_release release;
    const ThresholdKernels& k = *threshold_kernels_for(active_path());
    if (t.R == 1) {
      parallel_ranges(n, grain_elems, [&](int64_t i0, int64_t i1) { k.span(a, i0, i1, 0, al); });
    } else if (lanes) {
      parallel_ranges(outer, std::max<int64_t>(1, grain_elems / C), [&](int64_t o0, int64_t o1) { k.lanes(a, o0, o1, al); });
    } else {
      parallel_ranges(outer * C, std::max<int64_t>(1, grain_elems / inner), [&](int64_t q0, int64_t q1) {
        for (int64_t q = q0; q < q1; ++q) k.span(a, q * inner, (q + 1) * inner, q % C, al);
      });
    }
  }
  return y;
}

}  // namespace

void bind_threshold(py::module_& m) {
  py::class_<ThresholdTable, std::shared_ptr<ThresholdTable>>(m, "ThresholdTable")
      .def_property_readonly("rows", [](const ThresholdTable& t) { return t.R; })
      .def_property_readonly("width", [](const ThresholdTable& t) { return t.W; })
      .def_property_readonly("in_dtype", [](const ThresholdTable& t) { return t.in_dtype; })
      .def("algo", [](const ThresholdTable& t, bool lanes) { return use_count(t, lanes, "auto") ? "count" : "search"; },
           py::arg("lanes"), "the algorithm 'auto' picks: lanes = channels contiguous with one row per channel");
  m.def("threshold_table", &make_table, py::arg("thresholds"), py::arg("scale"), py::arg("bias"), py::arg("in_dtype"),
        "Prepared integer thresholds: count = #{j : x > thresholds[r, j]} (rows sorted ascending), "
        "y = scale[r] * count + bias[r] modulo 2^32 (docs/semantics.md 13.1)");
  m.def("multi_threshold_int", &multi_threshold_int, py::arg("x"), py::arg("table"), py::arg("axis"),
        py::arg("out_dtype"), py::arg("algo") = "auto");
  m.def("threshold_kernel_name", [] { return std::string(threshold_kernels_for(active_path())->name); });
}

}  // namespace pyq
