// Division by a divisor fixed for a whole launch, for the CUDA kernels'
// index arithmetic (t / channels, t / k, i / s): GPUs have no integer
// divide instruction, a 64-bit division by a run-time value is a long
// emulated sequence, and every kernel does one per element.
//
// The round-up method of Granlund and Montgomery ("Division by invariant
// integers using multiplication", PLDI 1994): with s = ceil(log2 d) and
// mul = floor(2^32 (2^s - d) / d) + 1, floor(n / d) = (mulhi(n, mul) + n)
// >> s for every 0 <= n < 2^31 and 1 <= d < 2^31 (the error of the scaled
// reciprocal, n (mul + 2^32) d - n 2^(32+s), stays below 2^(32+s)).
// Dividends of 2^31 or more take the plain 64-bit division, and so does
// every division when DENSECRF_CUDA_PLAIN_DIV=1 (read once; the before side
// of benchmarks/cuda_ab.py).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "lattice_math.h"  // DCRF_HOST_DEVICE

namespace dcrf {
namespace cuda {

struct FastDiv {
  int64_t d = 1;
  uint32_t mul = 1;
  uint32_t shift = 0;
  bool fast = true;  // the divisor is below 2^31 (and DENSECRF_CUDA_PLAIN_DIV is not 1)

  FastDiv() = default;
  // divisor >= 1 (a smaller one is taken as 1: the callers launch nothing
  // then); from 2^31 on every division takes the plain path.
  explicit FastDiv(int64_t divisor)
      : d(divisor < 1 ? 1 : divisor), fast(divisor < (int64_t{1} << 31) && !plain_only()) {
    if (divisor < 1) divisor = 1;
    if (!fast) return;
    const uint64_t ud = static_cast<uint64_t>(divisor);
    while ((uint64_t{1} << shift) < ud) ++shift;
    mul = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - ud)) / ud + 1);
  }

  DCRF_HOST_DEVICE uint32_t div32(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t hi = __umulhi(n, mul);
#else
    const uint32_t hi = static_cast<uint32_t>((static_cast<uint64_t>(n) * mul) >> 32);
#endif
    return (hi + n) >> shift;  // hi <= n < 2^31: no overflow
  }

  static bool plain_only() {
    static const bool plain = [] {
      const char* v = std::getenv("DENSECRF_CUDA_PLAIN_DIV");
      return v != nullptr && std::strcmp(v, "1") == 0;
    }();
    return plain;
  }

  // floor(n / d) for 0 <= n.
  DCRF_HOST_DEVICE int64_t div(int64_t n) const {
    return fast && n < (int64_t{1} << 31) ? static_cast<int64_t>(div32(static_cast<uint32_t>(n))) : n / d;
  }
};

}  // namespace cuda
}  // namespace dcrf
