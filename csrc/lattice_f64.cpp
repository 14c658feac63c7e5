// Float64 permutohedral lattice (see lattice_f64.h): build, splat, blur,
// slice. The build is single-threaded; blur and slice split rows over
// threads, each row computed by one thread, so the result does not depend
// on the thread count.
#include "lattice_f64.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "lattice.h"
#include "lattice_math.h"
#include "parallel.h"

namespace dcrf {
namespace {

// Points or vertices per chunk below which blur and slice do not split.
constexpr int64_t kGrain64 = 2048;

// locate_point (lattice_math.h) in double: the same steps in the same order
// (elevation E f from the last axis down, rounding to the nearest multiple
// of d+1 with ties to even, ranks of the remainders, the wrap back onto the
// plane, barycentric weights; Adams et al. 2010, pp. 5-10). Returns false
// for a NaN, an infinity or a coordinate beyond the int32 key range.
bool locate_point64(const double* f, int d, const double* scale, int32_t* rem0_out, int32_t* rank_out, double* bary) {
  double elevated[kMaxDim + 1];
  double rem0[kMaxDim + 1];
  double resid[kMaxDim + 1];
  int rank[kMaxDim + 1];
  double b[kMaxDim + 2];

  double sm = 0.0;
  for (int j = d; j > 0; --j) {
    const double cf = f[j - 1] * scale[j - 1];
    elevated[j] = sm - static_cast<double>(j) * cf;
    sm += cf;
  }
  elevated[0] = sm;

  const double down = 1.0 / static_cast<double>(d + 1);
  const double up = static_cast<double>(d + 1);
  double sum = 0.0;
  for (int i = 0; i <= d; ++i) {
    const double v = std::rint(down * elevated[i]);
    rem0[i] = v * up;
    // !(x < 1e9) is also true for NaN.
    if (!(std::fabs(rem0[i]) < 1.0e9)) return false;
    sum += v;
  }

  for (int i = 0; i <= d; ++i) {
    rank[i] = 0;
    resid[i] = elevated[i] - rem0[i];
  }
  for (int i = 0; i < d; ++i) {
    for (int j = i + 1; j <= d; ++j) {
      if (resid[i] < resid[j]) {
        ++rank[i];
      } else {
        ++rank[j];
      }
    }
  }

  const int isum = static_cast<int>(sum);
  for (int i = 0; i <= d; ++i) {
    int r = rank[i] + isum;
    if (r < 0) {
      r += d + 1;
      rem0[i] += up;
    } else if (r > d) {
      r -= d + 1;
      rem0[i] -= up;
    }
    rank[i] = r;
  }

  for (int i = 0; i <= d + 1; ++i) b[i] = 0.0;
  for (int i = 0; i <= d; ++i) {
    const double v = (elevated[i] - rem0[i]) * down;
    b[d - rank[i]] += v;
    b[d - rank[i] + 1] -= v;
  }
  b[0] += 1.0 + b[d + 1];
  for (int i = 0; i <= d; ++i) {
    bary[i] = b[i];
    rem0_out[i] = static_cast<int32_t>(rem0[i]);
    rank_out[i] = rank[i];
  }
  return true;
}

// Open-addressing table from d-dimensional int32 keys to ids in order of
// first insertion (hash_key of lattice_math.h, linear probing).
class KeyTable64 {
 public:
  explicit KeyTable64(int d) : d_(d) { slots_.assign(1024, 0); }

  int64_t size() const { return size_; }
  const int32_t* key(int64_t id) const { return keys_.data() + id * d_; }

  int32_t find_or_insert(const int32_t* k) {
    if ((size_ + 1) * 2 > static_cast<int64_t>(slots_.size())) grow();
    const uint64_t mask = slots_.size() - 1;
    for (uint64_t s = hash_key(k, d_) & mask;; s = (s + 1) & mask) {
      const int64_t slot = slots_[s];
      if (slot == 0) {
        if (size_ >= std::numeric_limits<int32_t>::max() - 1) {
          throw InvalidArgument("lattice has more than 2^31 vertices");
        }
        keys_.insert(keys_.end(), k, k + d_);
        slots_[s] = ++size_;
        return static_cast<int32_t>(size_ - 1);
      }
      if (std::equal(k, k + d_, key(slot - 1))) return static_cast<int32_t>(slot - 1);
    }
  }

  int32_t find(const int32_t* k) const {
    const uint64_t mask = slots_.size() - 1;
    for (uint64_t s = hash_key(k, d_) & mask;; s = (s + 1) & mask) {
      const int64_t slot = slots_[s];
      if (slot == 0) return -1;
      if (std::equal(k, k + d_, key(slot - 1))) return static_cast<int32_t>(slot - 1);
    }
  }

 private:
  void grow() {
    std::vector<int64_t> bigger(slots_.size() * 2, 0);
    const uint64_t mask = bigger.size() - 1;
    for (int64_t id = 0; id < size_; ++id) {
      uint64_t s = hash_key(key(id), d_) & mask;
      while (bigger[s] != 0) s = (s + 1) & mask;
      bigger[s] = id + 1;
    }
    slots_.swap(bigger);
  }

  int d_;
  int64_t size_ = 0;
  std::vector<int64_t> slots_;  // id + 1, or 0 for empty
  std::vector<int32_t> keys_;   // [size, d]
};

}  // namespace

CpuLattice64::CpuLattice64(const double* features, int64_t n_points, int dim, int threads) : n_(n_points), d_(dim) {
  if (dim < 1 || dim > kMaxDim) {
    throw InvalidArgument("feature dimension must be in [1, " + std::to_string(kMaxDim) + "], got " +
                          std::to_string(dim));
  }
  if (n_points < 0) throw InvalidArgument("number of points must be >= 0");
  const int dp1 = d_ + 1;
  if (n_points > (std::numeric_limits<int32_t>::max() - 1) / dp1) {
    throw InvalidArgument("too many points for one lattice: N*(d+1) = " + std::to_string(n_points * dp1) +
                          " exceeds 2^31-1");
  }
  (void)threads;  // the build is sequential (ids in first-appearance order)
  // Elevation scale (p. 5) times the inverse standard deviation of the blur
  // (p. 6), as lattice_scale_factors but never rounded to float.
  const double inv_std_dev = std::sqrt(2.0 / 3.0) * dp1;
  double scale[kMaxDim];
  for (int i = 0; i < d_; ++i) scale[i] = inv_std_dev / std::sqrt(static_cast<double>((i + 2) * (i + 1)));

  offsets_.resize(static_cast<size_t>(n_) * dp1);
  weights_.resize(static_cast<size_t>(n_) * dp1);
  KeyTable64 table(d_);
  int32_t rem0[kMaxDim + 1], rank[kMaxDim + 1];
  int32_t keys[(kMaxDim + 1) * kMaxDim];
  for (int64_t i = 0; i < n_; ++i) {
    double* w = weights_.data() + i * dp1;
    if (!locate_point64(features + i * d_, d_, scale, rem0, rank, w)) {
      throw InvalidArgument(
          "features must be finite and within the lattice key range (|feature / bandwidth| "
          "up to about 1e8): a NaN, infinite or too large value was found at point " +
          std::to_string(i));
    }
    simplex_keys(rem0, rank, d_, keys);
    for (int r = 0; r <= d_; ++r) offsets_[i * dp1 + r] = table.find_or_insert(keys + r * d_);
  }
  m_ = table.size();

  // Blur neighbours: one lookup per vertex and axis in the + direction; u
  // is v's + neighbour exactly when v is u's - neighbour.
  neighbours_.assign(static_cast<size_t>(dp1) * m_ * 2, 0);
  int32_t scratch[kMaxDim];
  for (int64_t v = 0; v < m_; ++v) {
    for (int j = 0; j <= d_; ++j) {
      neighbour_key(table.key(v), d_, j, 1, scratch);
      const int32_t id = table.find(scratch);
      if (id < 0) continue;
      neighbours_[(static_cast<size_t>(j) * m_ + v) * 2] = id + 1;
      neighbours_[(static_cast<size_t>(j) * m_ + id) * 2 + 1] = static_cast<int32_t>(v) + 1;
    }
  }
}

size_t CpuLattice64::memory_bytes() const {
  return offsets_.size() * sizeof(int32_t) + weights_.size() * sizeof(double) + neighbours_.size() * sizeof(int32_t);
}

double CpuLattice64::alpha() const { return 1.0 / (1.0 + std::pow(2.0, -static_cast<double>(d_))); }

void CpuLattice64::filter(const double* in, double* out, int C, bool reverse, int threads) const {
  if (C <= 0 || n_ == 0) return;
  if (threads <= 0) threads = default_threads();
  const int dp1 = d_ + 1;
  const size_t c = static_cast<size_t>(C);
  // [(M+1), C] each; row 0 stays zero (the missing neighbour).
  std::vector<double> a((static_cast<size_t>(m_) + 1) * c, 0.0);
  std::vector<double> b((static_cast<size_t>(m_) + 1) * c, 0.0);

  // Splat: a scatter in point order, on one thread (every vertex sums its
  // entries in ascending point order).
  for (int64_t i = 0; i < n_; ++i) {
    const double* x = in + i * c;
    for (int r = 0; r < dp1; ++r) {
      const int64_t e = i * dp1 + r;
      const double w = weights_[e];
      double* row = a.data() + (static_cast<size_t>(offsets_[e]) + 1) * c;
      for (size_t k = 0; k < c; ++k) row[k] += w * x[k];
    }
  }

  // Blur: [1/2, 1, 1/2] along each lattice axis (p. 6).
  double* src = a.data();
  double* dst = b.data();
  for (int step = 0; step <= d_; ++step) {
    const int j = reverse ? d_ - step : step;
    const int32_t* nb = neighbours_.data() + static_cast<size_t>(j) * m_ * 2;
    parallel_for(m_, threads, kGrain64, [&](int64_t lo, int64_t hi) {
      for (int64_t v = lo; v < hi; ++v) {
        const double* s0 = src + (static_cast<size_t>(v) + 1) * c;
        const double* sp = src + static_cast<size_t>(nb[2 * v]) * c;
        const double* sm = src + static_cast<size_t>(nb[2 * v + 1]) * c;
        double* o = dst + (static_cast<size_t>(v) + 1) * c;
        for (size_t k = 0; k < c; ++k) o[k] = s0[k] + 0.5 * (sp[k] + sm[k]);
      }
    });
    std::swap(src, dst);
  }

  // Slice: alpha times the barycentric interpolation.
  const double al = alpha();
  parallel_for(n_, threads, kGrain64, [&](int64_t lo, int64_t hi) {
    std::vector<double> acc(c);
    for (int64_t i = lo; i < hi; ++i) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int r = 0; r < dp1; ++r) {
        const int64_t e = i * dp1 + r;
        const double w = al * weights_[e];
        const double* row = src + (static_cast<size_t>(offsets_[e]) + 1) * c;
        for (size_t k = 0; k < c; ++k) acc[k] += w * row[k];
      }
      std::copy(acc.begin(), acc.end(), out + i * c);
    }
  });
}

}  // namespace dcrf
