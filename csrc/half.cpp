// Half to float conversion: see half.h.
#include "half.h"

#include <cstring>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define DCRF_HAVE_F16C_PATH 1
#endif

namespace dcrf {
namespace {

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1fu) {
    // Infinity, or a NaN with its payload kept and the quiet bit set (as VCVTPH2PS does).
    bits = sign | 0x7f800000u | (mantissa << 13) | (mantissa ? 0x00400000u : 0u);
  } else if (exponent != 0) {
    bits = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);  // normal: rebias the exponent
  } else if (mantissa == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal: mantissa * 2^-24, exact in float (an integer below 2^10 times a power of two).
    const float f = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &f, sizeof(bits));
    bits |= sign;
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

#ifdef DCRF_HAVE_F16C_PATH
__attribute__((target("avx,f16c"))) void half_to_float_f16c(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) dst[i] = half_bits_to_float(src[i]);
}

bool detect_f16c() {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx")) return false;  // includes the OS saving the YMM registers
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  return (c >> 29) & 1u;  // CPUID.1:ECX.F16C[bit 29]
}
#endif

}  // namespace

void half_to_float_portable(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = half_bits_to_float(src[i]);
}

bool cpu_has_f16c() {
#ifdef DCRF_HAVE_F16C_PATH
  static const bool has = detect_f16c();
  return has;
#else
  return false;
#endif
}

void half_to_float(const uint16_t* src, float* dst, int64_t n) {
#ifdef DCRF_HAVE_F16C_PATH
  if (cpu_has_f16c()) return half_to_float_f16c(src, dst, n);
#endif
  half_to_float_portable(src, dst, n);
}

}  // namespace dcrf
