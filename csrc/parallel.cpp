#include "parallel.h"

#include <pthread.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "lattice.h"

namespace dcrf {
namespace {

// Spin-then-block: after a job, workers (and the caller waiting for them)
// poll for about this long before sleeping on a condition variable, because
// mean field runs dozens of short parallel regions per call and a futex
// wake-up costs tens of microseconds each time.
constexpr auto kSpin = std::chrono::microseconds(300);

// Between polls: a pause, and every few polls a yield, so that a spinning
// thread never holds up a thread that shares its core (a worker the
// scheduler put beside the caller, say).
inline void cpu_relax(int i) {
  if ((i & 7) == 7) {
    std::this_thread::yield();
    return;
  }
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_.store(true);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  // Returns false when the pool is busy (the caller then runs inline).
  bool try_run(int nthreads, const std::function<void(int, int)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    grow(nthreads - 1);
    {
      std::lock_guard<std::mutex> lk(mu_);
      fn_ = &fn;
      active_ = nthreads - 1;
      nthreads_ = nthreads;
      error_ = nullptr;
      pending_.store(nthreads - 1);
      generation_.fetch_add(1, std::memory_order_release);  // publishes the fields above
    }
    cv_.notify_all();
    std::exception_ptr mine;
    try {
      fn(0, nthreads);
    } catch (...) {
      mine = std::current_exception();
    }
    // Wait for the workers: spin first, then sleep.
    const auto until = std::chrono::steady_clock::now() + kSpin;
    for (int i = 0; pending_.load(std::memory_order_acquire) != 0; ++i) {
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) {
        std::unique_lock<std::mutex> lk(mu_);
        done_cv_.wait(lk, [&] { return pending_.load() == 0; });
        break;
      }
      cpu_relax(i);
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      fn_ = nullptr;
    }
    if (mine) std::rethrow_exception(mine);
    if (error_) std::rethrow_exception(error_);
    return true;
  }

 private:
  void grow(int n) {
    while (static_cast<int>(workers_.size()) < n) {
      const int id = static_cast<int>(workers_.size()) + 1;
      // The worker must know the generation current before this run starts,
      // or it could wait for a run it should take part in.
      const uint64_t start_gen = generation_.load();
      workers_.emplace_back([this, id, start_gen] { loop(id, start_gen); });
    }
  }

  // Waits until a new generation is published (or stop); returns false on stop.
  bool wait_for_work(uint64_t seen) {
    const auto until = std::chrono::steady_clock::now() + kSpin;
    for (int i = 0;; ++i) {
      if (stop_.load(std::memory_order_relaxed)) return false;
      if (generation_.load(std::memory_order_acquire) != seen) return true;
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) break;
      cpu_relax(i);
    }
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return stop_.load() || generation_.load() != seen; });
    return !stop_.load();
  }

  void loop(int id, uint64_t seen) {
    DenormalsAreZero ftz;  // workers only ever run densecrf's loops
    for (;;) {
      if (!wait_for_work(seen)) return;
      const std::function<void(int, int)>* fn;
      int nth;
      {
        // The fields were written before the generation was bumped (release)
        // and stay fixed until every active worker has finished.
        std::lock_guard<std::mutex> lk(mu_);
        seen = generation_.load();
        if (id > active_) continue;  // not needed this time
        fn = fn_;
        nth = nthreads_;
      }
      std::exception_ptr err;
      try {
        (*fn)(id, nth);
      } catch (...) {
        err = std::current_exception();
      }
      if (err) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!error_) error_ = err;
      }
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(mu_);  // the caller may be about to sleep
        done_cv_.notify_one();
      }
    }
  }

  std::mutex busy_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* fn_ = nullptr;
  int active_ = 0;
  int nthreads_ = 0;
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
};

std::atomic<Pool*> g_pool{nullptr};
std::mutex g_pool_init;
std::atomic<int> g_default_threads{0};

void after_fork_in_child() {
  // The parent's worker threads do not exist in the child: abandon (leak) the
  // old pool object rather than join threads that are not there.
  g_pool.store(nullptr);
  new (&g_pool_init) std::mutex();
}

Pool& pool() {
  Pool* p = g_pool.load();
  if (p) return *p;
  std::lock_guard<std::mutex> lk(g_pool_init);
  p = g_pool.load();
  if (!p) {
    static bool registered = false;
    if (!registered) {
      pthread_atfork(nullptr, nullptr, after_fork_in_child);
      registered = true;
    }
    p = new Pool();  // lives for the process: workers are joined never
    g_pool.store(p);
  }
  return *p;
}

}  // namespace

void parallel_run(int nthreads, const std::function<void(int, int)>& fn) {
  DenormalsAreZero ftz;  // this thread; the workers set it in their loop
  if (nthreads <= 1 || !pool().try_run(nthreads, fn)) {
    // Inline: run the same chunks one after another on this thread.
    for (int t = 0; t < std::max(nthreads, 1); ++t) fn(t, std::max(nthreads, 1));
  }
}

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

int default_threads() {
  const int n = g_default_threads.load();
  return n > 0 ? n : hardware_threads();
}

void set_default_threads(int n) { g_default_threads.store(n > 0 ? n : 0); }

}  // namespace dcrf
