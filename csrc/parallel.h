// A small persistent thread pool. Work is split into contiguous chunks,
// equal and in a fixed order (parallel_for) or handed out first come first
// served (take_chunks); either way every output element is written by
// exactly one thread and does not depend on which, so results never depend
// on the thread count.
//
// Only one parallel region runs at a time: a region started while another is
// running (another Python thread, or a nested call) runs on the calling
// thread alone, which gives the same bits. After fork() the child gets a new,
// empty pool (the parent's workers do not exist there).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif

namespace dcrf {

// Flushes denormal floats to zero (FTZ and DAZ) on this thread while alive.
// Confident distributions put values near 1e-38 into the filters, and
// denormal arithmetic is tens of times slower on x86; values that small are
// zero for every purpose here. The caller's mode is restored afterwards.
class DenormalsAreZero {
 public:
#if defined(__SSE__) || defined(__x86_64__)
  DenormalsAreZero() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }
  ~DenormalsAreZero() { _mm_setcsr(saved_); }

 private:
  unsigned int saved_;
#endif
};

// Runs fn(tid, nthreads) on nthreads threads (the caller is tid 0) and
// returns when all are done. Exceptions from workers are rethrown here.
void parallel_run(int nthreads, const std::function<void(int, int)>& fn);

// fn(begin, end) over [0, n) split into at most `threads` contiguous chunks.
// Chunks smaller than `grain` are not split further.
template <class F>
void parallel_for(int64_t n, int threads, int64_t grain, F&& fn) {
  if (n <= 0) return;
  int64_t max_chunks = grain > 0 ? (n + grain - 1) / grain : n;
  int nt = threads < 1 ? 1 : threads;
  if (max_chunks < nt) nt = static_cast<int>(max_chunks);
  if (nt <= 1) {
    DenormalsAreZero ftz;
    fn(int64_t(0), n);
    return;
  }
  parallel_run(nt, [&](int tid, int nth) {
    const int64_t b = n * tid / nth;
    const int64_t e = n * (tid + 1) / nth;
    if (b < e) fn(b, e);
  });
}

// Inside a parallel region: fn(begin, end) over chunks of [0, n) of `chunk`
// items, each taken by whichever thread asks first from the shared counter
// `next` (start it at 0), until none is left. A thread the host slows down
// takes fewer chunks, where a fixed split would make the others wait.
template <class F>
void take_chunks(std::atomic<int64_t>& next, int64_t n, int64_t chunk, F&& fn) {
  for (;;) {
    const int64_t b = next.fetch_add(chunk, std::memory_order_relaxed);
    if (b >= n) return;
    fn(b, std::min(n, b + chunk));
  }
}

}  // namespace dcrf
