// A small persistent thread pool. The calling thread takes part in the work, so
// `n` threads means the caller plus n-1 workers. Results never depend on the
// thread count: every output element is computed entirely by one thread, and
// int32 accumulation is modular anyway (docs/semantics.md, "Accumulation").
#pragma once
#include <cstdint>
#include <functional>

namespace pyq {

int get_num_threads();
// n <= 0 restores the default (PYQINFER_NUM_THREADS, else the CPUs this process may use).
void set_num_threads(int n);
int default_num_threads();

// Runs fn(task) for every task in [0, ntasks) using at most max_threads threads
// (including the caller). Concurrent callers are serialised; a nested call from
// inside a task runs serially on the calling thread.
void parallel_for(int ntasks, int max_threads, const std::function<void(int)>& fn);

// Runs fn(i0, i1) over [0, total) cut into at most one contiguous range per thread,
// each of at least `grain` elements (one range, on the caller, when total < 2 * grain).
// Every element is computed by exactly one call, so results do not depend on the split.
void parallel_ranges(int64_t total, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace pyq
