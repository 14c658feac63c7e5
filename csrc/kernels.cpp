#include "kernels.h"

#include <pthread.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace dcrf {
namespace {

// Buffers below this size are not cached (malloc serves them well).
constexpr size_t kPoolMinFloats = size_t(1) << 16;   // 256 KiB
constexpr size_t kPoolMaxBytes = size_t(512) << 20;  // cache at most 512 MiB
constexpr size_t kPoolMaxBuffers = 16;

struct Pool {
  std::mutex mu;
  std::vector<std::pair<size_t, float*>> free_list;  // (capacity in floats, buffer)
  size_t cached_bytes = 0;
};

Pool* g_buffer_pool = new Pool();  // never destroyed: buffers may return during exit

void pool_after_fork_in_child() { g_buffer_pool = new Pool(); }  // the old mutex may be held

float* raw_alloc(size_t n) {
  const size_t bytes = ((std::max<size_t>(n, 1) * sizeof(float) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw std::bad_alloc();
  return static_cast<float*>(p);
}

}  // namespace

void PoolDeleter::operator()(float* p) const {
  if (!p) return;
  if (capacity >= kPoolMinFloats) {
    Pool& pool = *g_buffer_pool;
    std::lock_guard<std::mutex> lk(pool.mu);
    const size_t bytes = capacity * sizeof(float);
    if (pool.free_list.size() < kPoolMaxBuffers && pool.cached_bytes + bytes <= kPoolMaxBytes) {
      pool.free_list.emplace_back(capacity, p);
      pool.cached_bytes += bytes;
      return;
    }
  }
  std::free(p);
}

AlignedFloats aligned_floats(size_t n) {
  static const bool registered = [] {
    pthread_atfork(nullptr, nullptr, pool_after_fork_in_child);
    return true;
  }();
  (void)registered;
  if (n >= kPoolMinFloats) {
    Pool& pool = *g_buffer_pool;
    std::lock_guard<std::mutex> lk(pool.mu);
    // The smallest cached buffer that fits and wastes at most half of itself.
    size_t best = pool.free_list.size();
    for (size_t i = 0; i < pool.free_list.size(); ++i) {
      const size_t cap = pool.free_list[i].first;
      if (cap >= n && cap <= 2 * n && (best == pool.free_list.size() || cap < pool.free_list[best].first)) best = i;
    }
    if (best < pool.free_list.size()) {
      auto entry = pool.free_list[best];
      pool.free_list.erase(pool.free_list.begin() + static_cast<std::ptrdiff_t>(best));
      pool.cached_bytes -= entry.first * sizeof(float);
      return AlignedFloats(entry.second, PoolDeleter{entry.first});
    }
  }
  return AlignedFloats(raw_alloc(n), PoolDeleter{n});
}

namespace {
// CPUID leaf 7, ECX bit 6 (read directly: not every compiler's
// __builtin_cpu_supports knows the name).
bool cpu_has_avx512vbmi2() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return (c >> 6) & 1u;
#else
  return false;
#endif
}

const Kernels* pick() {
  // DENSECRF_KERNELS=baseline, =avx2 or =avx512vl caps the choice (tests
  // run the other loops on AVX-512 machines this way); =avx2-wide picks the
  // test build of the 16-lane loops on AVX2; unset, the best the CPU
  // supports.
  const char* env = std::getenv("DENSECRF_KERNELS");
  const std::string want = env ? env : "";
  if (want == "baseline") return &kernels_base::table;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  // The 16-lane loops on 8-lane vectors: a test build (kernels_avx2wide.cpp).
  if (avx2 && want == "avx2-wide") return &kernels_avx2wide::table;
  if (avx2 && want != "avx2" && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) {
    // The 16-lane loops where 512-bit arithmetic runs at full clock: CPUs
    // with AVX512-VBMI2 (Intel from Ice Lake, AMD from Zen 4). Skylake-SP
    // and Cascade Lake, which lack it, lower their frequency under heavy
    // 512-bit use and get the 256-bit build. (Measured here on one Emerald
    // Rapids host only: benchmarks/RESULTS.md.)
    if (want != "avx512vl" && cpu_has_avx512vbmi2()) return &kernels_avx512::table;
    return &kernels_avx512vl::table;
  }
  if (avx2) return &kernels_avx2::table;
#endif
  return &kernels_base::table;
}
}  // namespace

const Kernels& kernels() {
  static const Kernels* k = pick();
  return *k;
}

}  // namespace dcrf
