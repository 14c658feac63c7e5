// The permutohedral lattice in float64, for float64 inputs (gradcheck,
// studies that need the filter's rounding far below float32's). A plain,
// scalar implementation of the same algorithm as the float32 backend
// (lattice_cpu.cpp): the same elevation, rounding and ranking, the same
// vertex keys, numbered by first appearance in point order, the same blur
// and slice, all in double. It is not a tuned path: the float32 lattice
// stays the fast one and is not touched by this one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dcrf {

class CpuLattice64 {
 public:
  // features: [N, d] float64, row-major, already divided by the bandwidths.
  CpuLattice64(const double* features, int64_t n_points, int dim, int threads);

  int64_t n_points() const { return n_; }
  int dim() const { return d_; }
  int64_t n_vertices() const { return m_; }
  size_t memory_bytes() const;
  // The slice factor 1 / (1 + 2^-d), in double.
  double alpha() const;

  // out[N, C] = slice(blur(splat(in[N, C]))); `reverse` blurs the axes in
  // reverse order, the exact transpose of the forward filter. in and out
  // may alias. Deterministic: the splat adds in point order, the blur and
  // slice compute each row on its own.
  void filter(const double* in, double* out, int channels, bool reverse, int threads) const;

 private:
  int64_t n_ = 0;
  int d_ = 0;
  int64_t m_ = 0;
  std::vector<int32_t> offsets_;     // [N, d+1] vertex id of each entry
  std::vector<double> weights_;      // [N, d+1] barycentric weight of each entry
  std::vector<int32_t> neighbours_;  // [d+1, M, 2] blur neighbours (row ids: id+1, 0 = none)
};

}  // namespace dcrf
