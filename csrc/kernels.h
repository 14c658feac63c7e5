// Hot CPU loops (splat, blur, slice, fused mean-field epilogue) over
// channel-padded buffers: every row holds Cp = round_up(C, 8) floats and
// starts 32-byte aligned, so the loops run on whole 8-lane vectors.
//
// The loops are compiled four times: for the x86-64 baseline (SSE2), with
// AVX2 + FMA, and twice with AVX-512F/VL (32 registers): on 256-bit vectors
// only, and with mean field's loops on 512-bit vectors for 9-64 channels,
// for CPUs that keep their clock under 512-bit arithmetic. kernels() picks
// the best the CPU supports at run time. A fifth build, of the 512-bit
// loops on AVX2 (kernels_avx2wide.cpp), is for tests only. All are deterministic; the
// baseline may differ from the others in the last bits (FMA contraction),
// so results are bit-identical on a given machine.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>

namespace dcrf {

constexpr int kLanes = 8;
inline int padded_channels(int c) { return (c + kLanes - 1) / kLanes * kLanes; }
// Labels up to which rows are unrolled into registers (8 blocks of 8); the
// hot loops run a generic loop over blocks above.
constexpr int kMaxRowLabels = 64;

// 64-byte aligned float buffer, uninitialised. Large buffers come from and
// return to a small process-wide cache, so that repeated calls on images of
// one size do not pay the kernel's zeroing of fresh pages each time.
struct PoolDeleter {
  size_t capacity = 0;  // floats
  void operator()(float* p) const;
};
using AlignedFloats = std::unique_ptr<float[], PoolDeleter>;
AlignedFloats aligned_floats(size_t n);

// One pairwise term as the fused epilogue sees it.
struct EpilogueTerm {
  const float* blurred;      // [(M+1), Cp] blurred vertex values (row 0 zero)
  const int32_t* offsets;    // [N, d+1]
  const float* slice_w;      // [N, d+1] barycentric weights
  const float* slice_scale;  // [N] per-point scale of the slice (normalisation), or null
  float slice_mult;          // alpha: entry weight = w * (slice_mult * compat * slice_scale[i])
  int dp1;                   // d + 1
  int compat_kind;           // 0 Potts, 1 diagonal, 2 matrix
  const float* compat;       // 1, K or K*K values
};

// Statistics gathered while computing a unary from probabilities.
struct UnaryStats {
  float min = 0.0f, max = 0.0f;  // of the finite probabilities
  float worst_row_dev = 0.0f;    // max over rows of |sum_k p - 1| (float32 sums)
  int64_t first_bad = -1;        // index of the first NaN or infinity, or -1
};

struct Kernels {
  const char* name;
  // vals[v+1] = sum over entries e = i(d+1)+r with off[e] = v, in point
  // order, of w[e] * scale[i] * in[i], for v in [vb, ve), scanning points
  // [pb, pe) (which must include every point touching those vertices).
  // scale may be null (1). m: the lattice's vertex count ([0, m) skips the
  // per-entry range test).
  void (*splat)(const int32_t* off, const float* w, const float* scale, int dp1, const float* in, float* vals, int cp,
                int64_t pb, int64_t pe, int64_t vb, int64_t ve, int64_t m);
  // dst[v+1] = src[v+1] + (src[n1] + src[n2]) / 2, v in [vb, ve).
  void (*blur)(const int32_t* nb, const float* src, float* dst, int cp, int64_t vb, int64_t ve);
  // out[i] = sum_r (mult * w[i(d+1)+r]) * vals[off[i(d+1)+r] + 1], i in [ib, ie).
  void (*slice)(const int32_t* off, const float* w, float mult, int dp1, const float* vals, float* out, int cp,
                int64_t ib, int64_t ie);
  // q[i] = softmax(-u[i] - sum_t message_t) over the first k of cp lanes
  // (pad lanes set to 0), i in [ib, ie). u is [n, k] (unpadded), q [n, cp].
  // With out ([n, k], unpadded) non-null the rows go there instead of q,
  // and the return value says whether all of them are finite (true
  // without out).
  bool (*epilogue)(const float* u, float* q, int k, int cp, int64_t n, const EpilogueTerm* terms, int nterms,
                   int64_t ib, int64_t ie, float* out);
  // q[i] = softmax(-u[i]) (pad lanes 0), i in [ib, ie); u is [n, k], q [n, cp].
  void (*softmax_neg)(const float* u, float* q, int k, int cp, int64_t n, int64_t ib, int64_t ie);
  // u[i] = -log(max(p[i], clip)) for rows [ib, ie) of p [N, k], with the
  // range, row-sum and finiteness statistics of those rows.
  void (*unary_from_probs)(const float* p, float* u, int k, float clip, int64_t ib, int64_t ie, UnaryStats* st);
  // The same for K <= kMaxRowLabels, row by row, also writing q0[i] = c / sum(c) with
  // c = max(p[i], clip) into the channel-padded q0 [n, cp] (pad lanes 0):
  // the softmax(-u) that starts mean field. p is [n, k]. Returns false
  // (writing nothing) for K > kMaxRowLabels.
  bool (*unary_rows)(const float* p, float* u, float* q0, int k, float clip, int64_t n, int64_t ib, int64_t ie,
                     UnaryStats* st);
  // splat as a gather: vals[v+1] = sum over k in [begin[v], begin[v+1]) of
  // (w[k] * scale[point[k]]) * in[point[k]], in that order, for v in
  // [vb, ve). With each vertex's entries listed in ascending point order
  // (CpuLattice's entry lists) this is splat's sum, operation for
  // operation: the same bits. Each row is written once, so vertex ranges
  // may be cut anywhere (by entries, for balance).
  void (*splat_csr)(const int64_t* begin, const int32_t* point, const float* w, const float* scale, const float* in,
                    float* vals, int cp, int64_t vb, int64_t ve);
};

const Kernels& kernels();

namespace kernels_base {
extern const Kernels table;
}
namespace kernels_avx2 {
extern const Kernels table;
}
namespace kernels_avx512 {
extern const Kernels table;
}
namespace kernels_avx512vl {
extern const Kernels table;
}
namespace kernels_avx2wide {
extern const Kernels table;
}

}  // namespace dcrf
