// Permutohedral-lattice math shared by the CPU backend (g++) and the CUDA
// backend (nvcc). Everything here is a pure function of its arguments: no
// allocation, no framework types, no globals.
//
// Reference: A. Adams, J. Baek, M. A. Davis, "Fast High-Dimensional Filtering
// Using the Permutohedral Lattice", Eurographics 2010 (page numbers below).
// The arithmetic order follows Kraehenbuehl's implementation (the SSE path of
// permutohedral.cpp used by pydensecrf), so that the same features put the
// same points into the same simplices with the same weights.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define DCRF_HOST_DEVICE __host__ __device__
#else
#define DCRF_HOST_DEVICE
#endif

namespace dcrf {

// Largest feature dimension the lattice accepts. Stack buffers in the
// per-point math are sized by it; d = 1..16 is the documented range, larger
// d works up to this bound (cost grows as (d+1)^2 per point).
constexpr int kMaxDim = 32;

// Per-axis scale of the elevation matrix E (p. 5), times the inverse of the
// expected standard deviation of the blur, sqrt(2/3) (d+1) (p. 6). Computed in
// double and rounded once, as Kraehenbuehl's code does.
DCRF_HOST_DEVICE inline void lattice_scale_factors(int d, float* scale) {
  const float inv_std_dev = static_cast<float>(sqrt(2.0 / 3.0) * (d + 1));
  for (int i = 0; i < d; ++i) {
    scale[i] =
        static_cast<float>(1.0 / sqrt(static_cast<double>((i + 2) * (i + 1))) * static_cast<double>(inv_std_dev));
  }
}

// Slice normalisation: the blur kernel [1/2, 1, 1/2] applied along d+1 axes
// has total mass 2^(d+1) at the origin ratio 1 + 2^-d; dividing by it makes a
// constant signal come back unchanged on a uniform lattice.
DCRF_HOST_DEVICE inline float lattice_alpha(int d) { return 1.0f / (1.0f + powf(2.0f, static_cast<float>(-d))); }

// The float64 lattice's scale factors and slice normalisation: the same
// formulas, never rounded to float (as csrc/lattice_f64.cpp).
DCRF_HOST_DEVICE inline void lattice_scale_factors(int d, double* scale) {
  const double inv_std_dev = sqrt(2.0 / 3.0) * (d + 1);
  for (int i = 0; i < d; ++i) scale[i] = inv_std_dev / sqrt(static_cast<double>((i + 2) * (i + 1)));
}
DCRF_HOST_DEVICE inline double lattice_alpha64(int d) { return 1.0 / (1.0 + pow(2.0, -static_cast<double>(d))); }

// The slice normalisation in the lattice's scalar type.
template <class T>
DCRF_HOST_DEVICE inline T lattice_alpha_of(int d);
template <>
DCRF_HOST_DEVICE inline float lattice_alpha_of<float>(int d) {
  return lattice_alpha(d);
}
template <>
DCRF_HOST_DEVICE inline double lattice_alpha_of<double>(int d) {
  return lattice_alpha64(d);
}

// Rounding and magnitude in either scalar type (rintf / fabsf for float, so
// that the float path's arithmetic is exactly what it was).
DCRF_HOST_DEVICE inline float lattice_rint(float x) { return rintf(x); }
DCRF_HOST_DEVICE inline double lattice_rint(double x) { return rint(x); }
DCRF_HOST_DEVICE inline float lattice_fabs(float x) { return fabsf(x); }
DCRF_HOST_DEVICE inline double lattice_fabs(double x) { return fabs(x); }

// Locates one point with features f[0..d) in the lattice: the remainder-0
// vertex rem0[d+1] (coordinates summing to zero) and the rank[d+1] of each
// coordinate, which together name the enclosing simplex, and the point's
// barycentric weights bary[d+1] w.r.t. the simplex's vertices.
// Returns false when a coordinate is NaN, infinite or outside the int32 key
// range. DC is the compile-time dimension (0 = runtime d, at most kMaxDim).
// T: float (the float32 backends) or double (the CUDA float64 lattice; the
// same steps as csrc/lattice_f64.cpp's locate_point64).
template <int DC, class T>
DCRF_HOST_DEVICE inline bool locate_point(const T* f, int d_rt, const T* scale, int32_t* rem0_out, int32_t* rank_out,
                                          T* bary) {
  constexpr int cap = DC > 0 ? DC : kMaxDim;
  const int d = DC > 0 ? DC : d_rt;
  T elevated[cap + 1];
  T rem0[cap + 1];
  int rank[cap + 1];
  T b[cap + 2];

  // Elevate: y = E f (p. 5), accumulated from the last axis down.
  T sm = T(0);
  for (int j = d; j > 0; --j) {
    const T cf = f[j - 1] * scale[j - 1];
    elevated[j] = sm - static_cast<T>(j) * cf;
    sm += cf;
  }
  elevated[0] = sm;

  // Nearest remainder-0 lattice point: round each coordinate to a multiple of
  // d+1 (ties to even, as the default FPU rounding mode does).
  const T down = T(1) / static_cast<T>(d + 1);
  const T up = static_cast<T>(d + 1);
  T sum = T(0);
  bool ok = true;
  for (int i = 0; i <= d; ++i) {
    const T v = lattice_rint(down * elevated[i]);
    rem0[i] = v * up;
    // NaN, infinity, or a coordinate beyond the int32 key range (with room
    // for the canonical offsets and blur neighbours, at most d+1 away).
    ok = ok && lattice_fabs(rem0[i]) < T(1.0e9);
    sum += v;
  }
  if (!ok) return false;

  // Rank of each coordinate's remainder in decreasing order (p. 10). The
  // comparisons are data-dependent and about as often true as false: counted
  // as integers rather than branched on (a mispredicted branch each).
  T resid[cap + 1];
  for (int i = 0; i <= d; ++i) {
    rank[i] = 0;
    resid[i] = elevated[i] - rem0[i];
  }
  for (int i = 0; i < d; ++i) {
    for (int j = i + 1; j <= d; ++j) {
      const int lt = resid[i] < resid[j];
      rank[i] += lt;
      rank[j] += 1 - lt;
    }
  }

  // Bring the point back onto the plane sum(x) = 0 when rounding left it off
  // (branch-free as well: wrap = +1 below 0, -1 above d, else 0; adding
  // 0 * up leaves rem0 unchanged, so the result is the branching version's).
  const int isum = static_cast<int>(sum);
  for (int i = 0; i <= d; ++i) {
    const int r = rank[i] + isum;
    const int wrap = (r < 0) - (r > d);
    rank[i] = r + wrap * (d + 1);
    rem0[i] += static_cast<T>(wrap) * up;
  }

  // Barycentric coordinates (p. 10).
  for (int i = 0; i <= d + 1; ++i) b[i] = T(0);
  for (int i = 0; i <= d; ++i) {
    const T v = (elevated[i] - rem0[i]) * down;
    b[d - rank[i]] += v;
    b[d - rank[i] + 1] -= v;
  }
  b[0] += T(1) + b[d + 1];
  for (int i = 0; i <= d; ++i) {
    bary[i] = b[i];
    rem0_out[i] = static_cast<int32_t>(rem0[i]);
    rank_out[i] = rank[i];
  }
  return true;
}

// keys[(d+1), d]: the first d coordinates of each vertex of the simplex
// (rem0, rank). Vertex r is the remainder-0 point plus the canonical offset
// of remainder r: +r for coordinates of rank <= d-r, r-(d+1) otherwise.
DCRF_HOST_DEVICE inline void simplex_keys(const int32_t* rem0, const int32_t* rank, int d, int32_t* keys) {
  for (int r = 0; r <= d; ++r) {
    for (int i = 0; i < d; ++i) {
      const int c = rank[i] <= d - r ? r : r - (d + 1);
      keys[r * d + i] = rem0[i] + c;
    }
  }
}

// Embeds one point: the keys [(d+1), d] of its simplex's vertices and its
// barycentric weights [d+1] (locate_point + simplex_keys).
template <int DC, class T>
DCRF_HOST_DEVICE inline bool embed_point(const T* f, int d_rt, const T* scale, int32_t* keys, T* bary) {
  constexpr int cap = DC > 0 ? DC : kMaxDim;
  const int d = DC > 0 ? DC : d_rt;
  int32_t rem0[cap + 1];
  int32_t rank[cap + 1];
  if (!locate_point<DC>(f, d, scale, rem0, rank, bary)) return false;
  simplex_keys(rem0, rank, d, keys);
  return true;
}

// 32-bit hash of a lattice key of d int32 coordinates (FNV-1a over words
// followed by a final avalanche).
DCRF_HOST_DEVICE inline uint32_t hash_key(const int32_t* key, int d) {
  uint32_t h = 2166136261u;
  for (int i = 0; i < d; ++i) {
    h ^= static_cast<uint32_t>(key[i]);
    h *= 16777619u;
  }
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  return h;
}

// Key of the blur neighbour of `key` along axis j (0..d), direction +1 or -1:
// the lattice vector along axis j is (d+1) e_j - 1 (p. 6).
DCRF_HOST_DEVICE inline void neighbour_key(const int32_t* key, int d, int j, int dir, int32_t* out) {
  for (int k = 0; k < d; ++k) out[k] = key[k] - dir;
  if (j < d) out[j] = key[j] + dir * d;
}

// A pairwise term's per-point normalisation scale from its filter of ones
// n: 1 / sqrt(n) (symmetric) or 1 / n (before, after). In double, rounded
// once; the 1e-20 keeps an isolated point (n = 0) finite.
DCRF_HOST_DEVICE inline float normalization_scale(float filtered_one, bool symmetric) {
  const double v = static_cast<double>(filtered_one) + 1e-20;
  return static_cast<float>(symmetric ? 1.0 / sqrt(v) : 1.0 / v);
}
DCRF_HOST_DEVICE inline double normalization_scale(double filtered_one, bool symmetric) {
  const double v = filtered_one + 1e-20;  // as densecrf/backends/cpu64.py
  return symmetric ? 1.0 / sqrt(v) : 1.0 / v;
}

}  // namespace dcrf
