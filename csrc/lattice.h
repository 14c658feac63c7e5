// Backend-neutral permutohedral-lattice API. A lattice is described by a
// plain struct of raw pointers and sizes (LatticeView); the CPU backend
// (lattice_cpu.cpp) owns its buffers in host memory, the CUDA backend
// (cuda/lattice_cuda.cu) in device memory. No Python, numpy, torch or CUDA
// type appears here.
//
// Layout conventions: points x channels, row-major. An "entry" e = i*(d+1)+r
// is point i's r-th simplex vertex. Vertex ids are 0-based; blur buffers hold
// M+1 rows where row 0 is a permanent zero row and vertex v lives in row v+1,
// so that a missing neighbour (stored as 0) reads zeros.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "lattice_math.h"

namespace dcrf {

// std::vector whose resize leaves new elements of trivial types
// uninitialised: for buffers that are written in full right after, where
// value-initialisation would be a wasted pass over memory.
template <class T>
struct UninitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  template <class U>
  UninitAllocator(const UninitAllocator<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
};
template <class T>
using UninitVector = std::vector<T, UninitAllocator<T>>;

struct LatticeView {
  int64_t n_points = 0;                 // N
  int dim = 0;                          // d
  int64_t n_vertices = 0;               // M
  const int32_t* offsets = nullptr;     // [N, d+1] vertex id of each entry
  const float* weights = nullptr;       // [N, d+1] barycentric weight of each entry
  const int32_t* neighbours = nullptr;  // [d+1, M, 2] blur neighbours (row ids: id+1, 0 = none)
  // Splat as a gather needs, per vertex, its entries in ascending point
  // order. A backend keeps either CSR lists (CUDA) or, where the vertices are
  // numbered by first appearance in point order (CPU), the first and last
  // point touching each vertex, so that the owner of a vertex range scans
  // just the points that can touch it, in order. Unused fields are null.
  const int64_t* splat_begin = nullptr;         // [M+1] CSR row pointers
  const int32_t* splat_point = nullptr;         // [N(d+1)] point of each CSR entry
  const int32_t* vertex_first_point = nullptr;  // [M] first point touching each vertex (non-decreasing)
  const int32_t* vertex_last_point = nullptr;   // [M] last point touching each vertex
};

// Error raised for invalid input; the bindings map it to ValueError.
struct InvalidArgument : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// A pairwise term's arguments, checked alike by both backends: compat_kind
// 0 (Potts: 1 value), 1 (diagonal: K values) or 2 (matrix: K*K values),
// normalization 0..3, at least one label.
inline void check_term_args(int compat_kind, int normalization, size_t n_compat, int n_labels) {
  if (n_labels < 1) throw InvalidArgument("n_labels must be >= 1, got " + std::to_string(n_labels));
  if (compat_kind < 0 || compat_kind > 2) {
    throw InvalidArgument("compat_kind must be 0 (Potts), 1 (diagonal) or 2 (matrix), got " +
                          std::to_string(compat_kind));
  }
  if (normalization < 0 || normalization > 3) {
    throw InvalidArgument("normalization must be 0..3, got " + std::to_string(normalization));
  }
  const size_t k = static_cast<size_t>(n_labels);
  const size_t want = compat_kind == 0 ? 1 : compat_kind == 1 ? k : k * k;
  if (n_compat != want) {
    throw InvalidArgument("compatibility has " + std::to_string(n_compat) + " values, expected " +
                          std::to_string(want) + " for " + std::to_string(n_labels) + " labels");
  }
}

// Which vertex table numbered a lattice's vertices (all give the same
// lattice): kAuto picks the first that applies, a dense array (d <= 4, keys
// in a small box), packed 64-bit keys (d <= 8), the general hash table;
// kPacked and kGeneral skip the ones before (tests compare them).
enum class LatticeTable { kAuto, kDense, kPacked, kGeneral };

// Host-memory lattice (CPU backend).
class CpuLattice {
 public:
  // features: [N, d] float32, row-major, already divided by the bandwidths.
  CpuLattice(const float* features, int64_t n_points, int dim, int threads, LatticeTable table = LatticeTable::kAuto);

  LatticeView view() const;
  int64_t n_points() const { return n_; }
  int dim() const { return d_; }
  int64_t n_vertices() const { return m_; }
  size_t memory_bytes() const;
  // The table the build used (never kAuto); the lattice is the same either way.
  LatticeTable table() const { return table_; }
  // Barycentric weights [N(d+1)]; the plain slice weight is alpha times these.
  const float* barycentric_weights() const { return weights_.data(); }
  float alpha() const { return lattice_alpha(d_); }

  // out[N, C] = slice(blur(splat(in[N, C]))). splat_scale ([N], or null)
  // multiplies each point's value before the splat; slice_w ([N(d+1)],
  // alpha included, or null for the plain weights) replaces the slice
  // weights. `reverse` blurs the axes in reverse order: the transpose of the
  // forward filter. in and out may alias.
  void filter(const float* in, float* out, int channels, bool reverse, int threads, const float* splat_scale = nullptr,
              const float* slice_w = nullptr) const;
  // out[N] = filter of a constant 1 (the normalisation's), the same bits as
  // filter() on ones; from the weight sums the build kept, when it ran as
  // one chunk.
  void filter_ones(float* out, int threads) const;

  // The three stages over channel-padded buffers (see kernels.h): rows of
  // cp = padded_channels(C) floats, 32-byte aligned. in/out: [N, cp];
  // vals, tmp: [(M+1), cp] with row 0 kept zero. blur returns the buffer
  // holding the result (vals or tmp).
  //
  // splat_padded's schedule is a rule on cost: equal vertex ranges, each
  // thread scanning in point order the points that can touch its range
  // (owner computes), unless the slowest thread would then scan more than
  // kScanExcess times its share of the points; then a gather over
  // per-vertex entry lists (built once, on first need), cut by entries.
  // Both sum every vertex's entries in ascending point order: same bits.
  void splat_padded(const float* in, int cp, const float* splat_scale, float* vals, int threads) const;
  float* blur_padded(float* vals, float* tmp, int cp, bool reverse, int threads) const;
  void slice_padded(const float* vals, int cp, const float* slice_w, float* out, int threads) const;

 private:
  void filter_one(const float* in, float* out, bool reverse, int threads, const float* splat_scale,
                  const float* slice_w) const;
  void blur_slice_one(std::vector<float>& a, float* out, bool reverse, int threads, const float* slice_w) const;

 public:
  // Per-entry slice weights for a per-point scale s[N]: w_e * alpha * s[i].
  UninitVector<float> slice_weights(const float* point_scale, int threads = 0) const;
  // Whether a splat on `threads` threads gathers over entry lists (the rule
  // above, for min(threads, cores) vertex ranges), and whether the lists
  // exist yet (tests).
  bool splat_by_lists(int threads) const;
  // The owner-computes split's slowest thread's points to scan over its
  // share N / threads (1 = perfect balance), for `threads` vertex ranges.
  double splat_scan_excess(int threads) const;
  bool has_entry_lists() const { return !list_begin_.empty(); }

 private:
  int64_t n_ = 0;
  int d_ = 0;
  int64_t m_ = 0;
  UninitVector<int32_t> offsets_;     // [N, d+1]
  UninitVector<float> weights_;       // [N, d+1]
  UninitVector<int32_t> neighbours_;  // [d+1, M, 2]
  std::vector<int32_t> first_point_;  // [M] first point touching each vertex
  std::vector<int32_t> last_point_;   // [M] last point touching each vertex
  LatticeTable table_ = LatticeTable::kGeneral;
  std::vector<float> weight_sums_;  // [M] per-vertex weight sums in point order, or empty

  // Owner computes' split: range t of nt equal vertex ranges, [vb, ve), and
  // the points that can touch it, [pb, pe) (empty ranges when vb == ve).
  struct OwnerRange {
    int64_t vb, ve, pb, pe;
  };
  OwnerRange owner_range(int t, int nt) const;

  // Entry lists of the gather splat, built by build_lists on first need.
  void build_lists(int threads) const;
  mutable std::once_flag lists_once_;
  mutable UninitVector<int64_t> list_begin_;  // [M+1] start of each vertex's entries
  mutable UninitVector<int32_t> list_point_;  // [N(d+1)] point of each entry, ascending within a vertex
  mutable UninitVector<float> list_weight_;   // [N(d+1)] barycentric weight of each entry
  // splat_by_lists' answer per thread count (0 unknown, 1 no, 2 yes), guarded by rule_mu_.
  mutable std::mutex rule_mu_;
  mutable std::vector<int8_t> by_lists_;
};

// Overrides the splat rule process-wide, for benchmarks and tests: kAuto
// (the rule), kScan (always owner computes), kLists (always the gather, on
// any thread count). Results are the same bits in every mode.
enum class SplatMode { kAuto = 0, kScan = 1, kLists = 2 };
void set_splat_mode(SplatMode mode);

// Number of worker threads used when a call passes threads <= 0.
int default_threads();
void set_default_threads(int n);
int hardware_threads();

}  // namespace dcrf
