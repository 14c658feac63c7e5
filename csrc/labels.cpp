// Arg-max labels: see labels.h.
#include "labels.h"

#include "embed.h"  // cpu_has_avx2

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define DCRF_HAVE_AVX2_ARGMAX 1
#endif

namespace dcrf {
namespace {

template <typename T>
inline T argmax_row(const float* r, int64_t k) {
  int64_t best = 0;
  float top = r[0];
  bool nan = !(top == top);
  for (int64_t j = 1; j < k; ++j) {  // selects, not branches: maxima fall anywhere in a row
    const float x = r[j];
    const bool up = x > top;
    best = up ? j : best;
    top = up ? x : top;
    nan |= !(x == x);
  }
  if (nan) {  // numpy's argmax gives the first NaN
    best = 0;
    while (r[best] == r[best]) ++best;
  }
  return static_cast<T>(best);
}

template <typename T>
void argmax_scalar(const float* q, int64_t n, int64_t k, T* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = argmax_row<T>(q + i * k, k);
}

#ifdef DCRF_HAVE_AVX2_ARGMAX
// 2 <= k <= 16: a row in two 8-lane vectors (masked loads: nothing read past
// the row's end, absent lanes -inf), its maximum by a tree of max, then the
// first lane equal to it. A row with a NaN takes the scalar path.
template <typename T>
__attribute__((target("avx2"))) void argmax_avx2(const float* q, int64_t n, int k, T* out) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i kk = _mm256_set1_epi32(k);
  const __m256i m0 = _mm256_cmpgt_epi32(kk, lane);
  const __m256i m1 = _mm256_cmpgt_epi32(kk, _mm256_add_epi32(lane, _mm256_set1_epi32(8)));
  const __m256 ninf = _mm256_set1_ps(-__builtin_inff());
  const __m256 f0 = _mm256_castsi256_ps(m0), f1 = _mm256_castsi256_ps(m1);
  const bool two = k > 8;
  for (int64_t i = 0; i < n; ++i) {
    const float* r = q + i * k;
    const __m256 a = _mm256_blendv_ps(ninf, _mm256_maskload_ps(r, m0), f0);
    const __m256 b = two ? _mm256_blendv_ps(ninf, _mm256_maskload_ps(r + 8, m1), f1) : ninf;
    const __m256 unordered = _mm256_or_ps(_mm256_cmp_ps(a, a, _CMP_UNORD_Q), _mm256_cmp_ps(b, b, _CMP_UNORD_Q));
    if (_mm256_movemask_ps(unordered)) {
      out[i] = argmax_row<T>(r, k);
      continue;
    }
    __m256 m = _mm256_max_ps(a, b);
    m = _mm256_max_ps(m, _mm256_permute2f128_ps(m, m, 1));
    m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, _MM_SHUFFLE(1, 0, 3, 2)));
    m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, _MM_SHUFFLE(2, 3, 0, 1)));
    const unsigned hits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, m, _CMP_EQ_OQ))) |
                          (static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(b, m, _CMP_EQ_OQ))) << 8);
    out[i] = static_cast<T>(__builtin_ctz(hits));  // hits != 0: the maximum is one of the lanes
  }
}
#endif

template <typename T>
void argmax_any(const float* q, int64_t n, int64_t k, T* out, bool vectorized) {
#ifdef DCRF_HAVE_AVX2_ARGMAX
  if (vectorized && k >= 2 && k <= 16 && cpu_has_avx2()) return argmax_avx2<T>(q, n, static_cast<int>(k), out);
#endif
  (void)vectorized;
  argmax_scalar<T>(q, n, k, out);
}

}  // namespace

void argmax_rows(const float* q, int64_t n, int64_t k, uint8_t* out, bool vectorized) {
  argmax_any(q, n, k, out, vectorized);
}
void argmax_rows(const float* q, int64_t n, int64_t k, uint16_t* out, bool vectorized) {
  argmax_any(q, n, k, out, vectorized);
}

}  // namespace dcrf
