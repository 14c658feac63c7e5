#include "kernels.h"

#include <cstdlib>
#include <new>

namespace dcrf {

AlignedFloats aligned_floats(size_t n) {
  const size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
  void* p = std::aligned_alloc(64, bytes == 0 ? 64 : bytes);
  if (!p) throw std::bad_alloc();
  return AlignedFloats(static_cast<float*>(p));
}

namespace {
const Kernels* pick() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &kernels_avx2::table;
#endif
  return &kernels_base::table;
}
}  // namespace

const Kernels& kernels() {
  static const Kernels* k = pick();
  return *k;
}

}  // namespace dcrf
