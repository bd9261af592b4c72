#include "common/threadpool.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <algorithm>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

namespace pyq {
namespace {

thread_local bool t_inside_pool_task = false;

class Pool {
 public:
  ~Pool() { stop_workers(); }

  int size() {
    std::lock_guard<std::mutex> g(run_mu_);
    return nthreads_;
  }

  void resize(int n) {
    std::lock_guard<std::mutex> g(run_mu_);
    if (n == nthreads_) return;
    stop_workers();
    nthreads_ = n;
    start_workers();
  }

  void run(int ntasks, int max_threads, const std::function<void(int)>& fn) {
    if (ntasks <= 0) return;
    if (t_inside_pool_task || max_threads <= 1 || ntasks == 1) {
      run_serial(ntasks, fn);
      return;
    }
    std::lock_guard<std::mutex> g(run_mu_);
    const int helpers = std::min(std::min(nthreads_, max_threads), ntasks) - 1;
    if (helpers <= 0) {
      run_serial(ntasks, fn);
      return;
    }
    if (static_cast<size_t>(ntasks) > claims_.size()) {
      // No helper is inside a region now (run_mu_ is held), so reallocating is safe.
      std::vector<std::atomic<uint64_t>> fresh(static_cast<size_t>(ntasks) * 2);
      for (auto& c : fresh) c.store(0);
      claims_.swap(fresh);
    }
    uint64_t gen;
    {
      std::lock_guard<std::mutex> lk(mu_);
      fn_ = &fn;
      ntasks_ = ntasks;
      active_helpers_ = helpers;
      participants_ = helpers + 1;
      closed_ = false;
      gen = generation_.load() + 1;
      generation_.store(gen);
    }
    cv_.notify_all();
    work(0, gen);
    // Every task is claimed now. Close the region so that helpers that have not
    // woken up yet skip it (a descheduled worker must not stall the caller), and
    // wait only for helpers that are still running a task they claimed.
    {
      std::lock_guard<std::mutex> lk(mu_);
      closed_ = true;
    }
    auto t0 = std::chrono::steady_clock::now();
    while (inside_.load(std::memory_order_acquire) != 0) {
      if (std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(200)) {
        std::unique_lock<std::mutex> lk(mu_);
        done_cv_.wait(lk, [&] { return inside_.load() == 0; });
        break;
      }
    }
  }

 private:
  static void run_serial(int ntasks, const std::function<void(int)>& fn) {
    const bool prev = t_inside_pool_task;
    t_inside_pool_task = true;
    for (int t = 0; t < ntasks; ++t) fn(t);
    t_inside_pool_task = prev;
  }

  bool claim(int t, uint64_t gen) {
    uint64_t old = claims_[t].load(std::memory_order_relaxed);
    return old != gen && claims_[t].compare_exchange_strong(old, gen, std::memory_order_acq_rel);
  }

  // Participant i (0 = the caller) first runs its own contiguous block of tasks
  // [i*T/P, (i+1)*T/P) in order, so the same thread touches the same weights call
  // after call and finds them in its own caches; then it takes over any task
  // nobody has started (load balance when a core is busy with something else),
  // from the last task down, i.e. from the far end of the other blocks, whose
  // owners work upwards. Contiguous blocks rather than tasks i, i+P, ...: with
  // interleaved ownership two threads write neighbouring output columns at the
  // same moment, and an output row that is not 64-byte aligned (numpy's arrays
  // are 16-byte aligned) then has a cache line shared by both at every task
  // boundary (2-thread 512^3 int8 GEMM: ~2 % slower, docs/performance.md).
  void work(int participant, uint64_t gen) {
    const bool prev = t_inside_pool_task;
    t_inside_pool_task = true;
    const int b0 = static_cast<int>(static_cast<int64_t>(ntasks_) * participant / participants_);
    const int b1 = static_cast<int>(static_cast<int64_t>(ntasks_) * (participant + 1) / participants_);
    for (int t = b0; t < b1; ++t)
      if (claim(t, gen)) (*fn_)(t);
    for (int t = ntasks_ - 1; t >= 0; --t)
      if (claim(t, gen)) (*fn_)(t);
    t_inside_pool_task = prev;
  }

  void worker_loop(int index, uint64_t seen) {
    for (;;) {
      // Spin for a short while before sleeping, so back-to-back kernel calls
      // do not pay a futex wake-up each time.
      auto t0 = std::chrono::steady_clock::now();
      while (generation_.load(std::memory_order_acquire) == seen && !stop_.load(std::memory_order_relaxed)) {
        if (std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(100)) break;
      }
      uint64_t gen;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation_.load() != seen || stop_.load(); });
        if (stop_.load()) return;
        seen = gen = generation_.load();
        if (closed_ || index >= active_helpers_) continue;
        inside_.fetch_add(1);
      }
      work(index + 1, gen);
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (inside_.fetch_sub(1) == 1) done_cv_.notify_all();
      }
    }
  }

  void start_workers() {
    stop_.store(false);
    // A new worker must not mistake the last finished region for a new one.
    const uint64_t current = generation_.load();
    for (int i = 0; i + 1 < nthreads_; ++i) workers_.emplace_back([this, i, current] { worker_loop(i, current); });
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_.store(true);
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::mutex run_mu_;  // one parallel region at a time
  std::mutex mu_;      // guards generation_ changes, closed_, and entering a region
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> generation_{0};  // written under mu_, read lock-free while spinning
  bool closed_ = true;
  std::atomic<int> inside_{0};  // helpers currently running tasks of the open region
  int nthreads_ = 1;
  int active_helpers_ = 0;
  const std::function<void(int)>* fn_ = nullptr;
  int ntasks_ = 0;
  int participants_ = 1;
  std::vector<std::atomic<uint64_t>> claims_;  // claims_[t] == generation: task t taken
};

Pool& pool() {
  static Pool* p = [] {
    auto* q = new Pool();  // leaked on purpose: no joins during interpreter teardown
    q->resize(default_num_threads());
    return q;
  }();
  return *p;
}

}  // namespace

int default_num_threads() {
  if (const char* env = std::getenv("PYQINFER_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

int get_num_threads() { return pool().size(); }

void set_num_threads(int n) { pool().resize(n <= 0 ? default_num_threads() : n); }

void parallel_for(int ntasks, int max_threads, const std::function<void(int)>& fn) {
  pool().run(ntasks, max_threads, fn);
}

void parallel_ranges(int64_t total, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (total <= 0) return;
  const int nt = get_num_threads();
  const int64_t ntasks = std::min<int64_t>(nt, std::max<int64_t>(1, total / std::max<int64_t>(grain, 1)));
  if (ntasks <= 1) {
    fn(0, total);
    return;
  }
  parallel_for(static_cast<int>(ntasks), nt, [&](int t) { fn(total * t / ntasks, total * (t + 1) / ntasks); });
}

}  // namespace pyq
