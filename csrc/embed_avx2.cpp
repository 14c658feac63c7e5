// locate_point (lattice_math.h) for 8 points at once on AVX2 vectors, one
// lane per point. Compiled with -mavx2 and without FMA or contraction
// (CMakeLists.txt), with the scalar code's operations in the scalar code's
// order, so every lane's rounding is the scalar's: the same simplices and
// the same weights, bit for bit (tests/test_lattice.py compares them).
#include "embed.h"

#if defined(__AVX2__)
#include <immintrin.h>

namespace dcrf {
namespace {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

inline v8f bcast(float x) { return x - v8f{}; }
inline v8i ibcast(int32_t x) { return x - v8i{}; }

template <int D>
bool locate8(const float* f, const float* scale, int32_t* rem0_out, int32_t* rank_out, float* bary_out) {
  constexpr int dp1 = D + 1;
  v8f x[D];  // x[j][l] = feature j of point l
  for (int j = 0; j < D; ++j) {
    for (int l = 0; l < 8; ++l) x[j][l] = f[l * D + j];
  }
  v8f elevated[dp1];
  v8f sm = bcast(0.0f);
  for (int j = D; j > 0; --j) {
    const v8f cf = x[j - 1] * scale[j - 1];
    elevated[j] = sm - static_cast<float>(j) * cf;
    sm += cf;
  }
  elevated[0] = sm;

  const float down = 1.0f / static_cast<float>(dp1);
  const float up = static_cast<float>(dp1);
  v8f rem0[dp1];
  v8f sum = bcast(0.0f);
  v8i ok = ibcast(-1);
  for (int i = 0; i <= D; ++i) {
    const v8f v = (v8f)_mm256_round_ps((__m256)(down * elevated[i]), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    rem0[i] = v * up;
    const v8f a = (v8f)((v8i)rem0[i] & ibcast(0x7fffffff));  // |rem0|; NaN stays NaN
    ok &= (v8i)(a < 1.0e9f);
    sum += v;
  }
  for (int l = 0; l < 8; ++l) {
    if (!ok[l]) return false;
  }

  v8f resid[dp1];
  v8i rank[dp1];
  for (int i = 0; i <= D; ++i) {
    resid[i] = elevated[i] - rem0[i];
    rank[i] = ibcast(0);
  }
  for (int i = 0; i < D; ++i) {
    for (int j = i + 1; j <= D; ++j) {
      const v8i lt = (v8i)(resid[i] < resid[j]);  // -1 where true
      rank[i] -= lt;
      rank[j] += 1 + lt;
    }
  }
  const v8i isum = __builtin_convertvector(sum, v8i);
  for (int i = 0; i <= D; ++i) {
    const v8i r = rank[i] + isum;
    const v8i wrap = (v8i)(r > ibcast(D)) - (v8i)(r < ibcast(0));  // masks are -1: (r<0) - (r>d)
    rank[i] = r + wrap * dp1;
    rem0[i] += __builtin_convertvector(wrap, v8f) * up;
  }

  // Barycentric weights: y[d - rank[i]] = (elevated[i] - rem0[i]) / (d+1),
  // b[0] = y[0] + (1 - y[d]), b[p] = y[p] - y[p-1]: each the single
  // rounding that the scalar code's += / -= sequence gives.
  v8f y[dp1];
  for (int p = 0; p <= D; ++p) y[p] = bcast(0.0f);
  for (int i = 0; i <= D; ++i) {
    const v8f v = (elevated[i] - rem0[i]) * down;
    const v8i pos = ibcast(D) - rank[i];
    for (int p = 0; p <= D; ++p) y[p] = pos == ibcast(p) ? v : y[p];
  }
  v8f b[dp1];
  b[0] = y[0] + (1.0f - y[D]);
  for (int p = 1; p <= D; ++p) b[p] = y[p] - y[p - 1];

  for (int l = 0; l < 8; ++l) {
    for (int i = 0; i <= D; ++i) {
      rem0_out[l * dp1 + i] = static_cast<int32_t>(rem0[i][l]);
      rank_out[l * dp1 + i] = rank[i][l];
      bary_out[l * dp1 + i] = b[i][l];
    }
  }
  return true;
}

}  // namespace

bool locate8_avx2(const float* f, int d, const float* scale, int32_t* rem0, int32_t* rank, float* bary) {
  switch (d) {
    case 2: return locate8<2>(f, scale, rem0, rank, bary);
    case 3: return locate8<3>(f, scale, rem0, rank, bary);
    case 4: return locate8<4>(f, scale, rem0, rank, bary);
    case 5: return locate8<5>(f, scale, rem0, rank, bary);
    case 6: return locate8<6>(f, scale, rem0, rank, bary);
    case 7: return locate8<7>(f, scale, rem0, rank, bary);
    case 8: return locate8<8>(f, scale, rem0, rank, bary);
    default: return false;
  }
}

}  // namespace dcrf
#else
namespace dcrf {
bool locate8_avx2(const float*, int, const float*, int32_t*, int32_t*, float*) { return false; }
}  // namespace dcrf
#endif
