// A pairwise term's message for one point, -compat(s), added to its logits:
// written once for PairwiseTerm::apply (crf_cpu.cpp) and the fused
// mean-field pass of every kernel build (kernels_impl.h).
//
// Internal linkage on purpose: each translation unit compiles its own copy
// with its own instruction set and contraction (the AVX2 + FMA kernels
// contract the matrix product into FMAs, the portable code does not). One
// inline function shared by all of them would be a single copy chosen by
// the linker, possibly the AVX2 one, run on any CPU.
#pragma once

#include <cstdint>

namespace dcrf {
namespace {

// x[0..k) += -compat(s[0..k)): kind 0 Potts (compat[0] = w, adds +w s),
// 1 diagonal (compat [K]), 2 matrix (compat [K, K] row-major, W s).
inline void add_compat_message(int kind, const float* compat, const float* s, float* x, int k) {
  if (kind == 0) {
    const float w = compat[0];
    for (int c = 0; c < k; ++c) x[c] += w * s[c];
  } else if (kind == 1) {
    for (int c = 0; c < k; ++c) x[c] -= compat[c] * s[c];
  } else {
    for (int a = 0; a < k; ++a) {
      const float* row = compat + static_cast<int64_t>(a) * k;
      float m = 0.0f;
      for (int c = 0; c < k; ++c) m += row[c] * s[c];
      x[a] -= m;
    }
  }
}

}  // namespace
}  // namespace dcrf
