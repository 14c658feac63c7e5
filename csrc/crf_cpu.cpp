#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "crf.h"
#include "parallel.h"

namespace dcrf {
namespace {
constexpr int64_t kGrain = 2048;

// exp(x) in float32, branch-free so that loops over it vectorise: x = n ln2 + r
// with |r| <= ln2/2, exp(r) by its degree-7 Taylor polynomial (truncation
// error below 6e-9 relative, under float32 resolution), 2^n by building the
// exponent bits. x is clamped to [-87, 88] so that 2^n stays a normal float;
// exp(-87) = 1.6e-38 is zero for every purpose here (softmax after the max
// is subtracted).
inline float fast_exp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = x * 1.44269504088896341f + magic;
  int32_t tb, mb;
  std::memcpy(&tb, &t, 4);
  std::memcpy(&mb, &magic, 4);
  const int32_t n = tb - mb;
  const float fn = t - magic;
  // ln2 split in a part exact in few bits and a correction (Cody-Waite).
  float r = x - fn * 0.693359375f;
  r = r + fn * 2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t eb = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &eb, 4);
  return p * scale;
}

inline void softmax_inplace(float* __restrict x, int k) {
  float mx = x[0];
  for (int c = 1; c < k; ++c) mx = std::max(mx, x[c]);
  for (int c = 0; c < k; ++c) x[c] = fast_exp(x[c] - mx);
  float sum = 0.0f;
  for (int c = 0; c < k; ++c) sum += x[c];
  const float inv = 1.0f / sum;
  for (int c = 0; c < k; ++c) x[c] *= inv;
}
}  // namespace

PairwiseTerm::PairwiseTerm(std::shared_ptr<const CpuLattice> lattice, Normalization norm,
                           CompatKind kind, std::vector<float> compat, int n_labels, int threads)
    : lattice_(std::move(lattice)), norm_type_(norm), kind_(kind), compat_(std::move(compat)),
      k_(n_labels) {
  const size_t want = kind == CompatKind::kPotts ? 1 : kind == CompatKind::kDiagonal
                                                           ? static_cast<size_t>(k_)
                                                           : static_cast<size_t>(k_) * k_;
  if (compat_.size() != want) {
    throw InvalidArgument("compatibility has " + std::to_string(compat_.size()) +
                          " values, expected " + std::to_string(want) + " for " +
                          std::to_string(k_) + " labels");
  }
  if (static_cast<int>(norm) < 0 || static_cast<int>(norm) > 3) {
    throw InvalidArgument("normalization must be 0..3, got " + std::to_string(static_cast<int>(norm)));
  }
  const int64_t n = lattice_->n_points();
  norm_.assign(n, 1.0f);
  lattice_->filter(norm_.data(), norm_.data(), 1, false, threads);
  if (norm_type_ == Normalization::kNone) return;
  scale_.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(norm_[i]) + 1e-20;
    scale_[i] = static_cast<float>(norm_type_ == Normalization::kSymmetric ? 1.0 / std::sqrt(v)
                                                                           : 1.0 / v);
  }
  splat_scaled_ = lattice_->csr_weights(scale_.data());
  slice_scaled_ = lattice_->slice_weights(scale_.data());
}

const float* PairwiseTerm::splat_weights(bool transpose) const {
  const bool scaled = norm_type_ == Normalization::kSymmetric ||
                      (!transpose && norm_type_ == Normalization::kBefore) ||
                      (transpose && norm_type_ == Normalization::kAfter);
  return scaled ? splat_scaled_.data() : nullptr;
}

const float* PairwiseTerm::slice_weights(bool transpose) const {
  const bool scaled = norm_type_ == Normalization::kSymmetric ||
                      (!transpose && norm_type_ == Normalization::kAfter) ||
                      (transpose && norm_type_ == Normalization::kBefore);
  return scaled ? slice_scaled_.data() : nullptr;
}

void PairwiseTerm::filter(const float* in, float* out, int channels, bool transpose,
                          int threads) const {
  lattice_->filter(in, out, channels, transpose, threads, splat_weights(transpose),
                   slice_weights(transpose));
}

void PairwiseTerm::add_message(const float* s, float* logits) const {
  switch (kind_) {
    case CompatKind::kPotts: {
      const float w = compat_[0];
      for (int c = 0; c < k_; ++c) logits[c] += w * s[c];
      break;
    }
    case CompatKind::kDiagonal:
      for (int c = 0; c < k_; ++c) logits[c] -= compat_[c] * s[c];
      break;
    case CompatKind::kMatrix:
      for (int a = 0; a < k_; ++a) {
        const float* row = compat_.data() + static_cast<size_t>(a) * k_;
        float acc = 0.0f;
        for (int b = 0; b < k_; ++b) acc += row[b] * s[b];
        logits[a] -= acc;
      }
      break;
  }
}

void PairwiseTerm::apply(const float* q, float* out, bool transpose, int threads) const {
  const int64_t n = lattice_->n_points();
  filter(q, out, k_, transpose, threads);
  parallel_for(n, threads, kGrain, [&](int64_t b, int64_t e) {
    std::vector<float> s(k_), m(k_);
    for (int64_t i = b; i < e; ++i) {
      float* row = out + i * k_;
      std::copy(row, row + k_, s.begin());
      if (kind_ == CompatKind::kMatrix && transpose) {
        for (int a = 0; a < k_; ++a) {
          float acc = 0.0f;
          for (int c = 0; c < k_; ++c) acc += compat_[static_cast<size_t>(c) * k_ + a] * s[c];
          row[a] = acc;
        }
        continue;
      }
      std::fill(m.begin(), m.end(), 0.0f);
      add_message(s.data(), m.data());  // m = -message
      for (int c = 0; c < k_; ++c) row[c] = -m[c];
    }
  });
}

void softmax_neg(const float* unary, float* out, int64_t n, int k, int threads) {
  parallel_for(n, threads, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float* o = out + i * k;
      for (int c = 0; c < k; ++c) o[c] = -unary[i * k + c];
      softmax_inplace(o, k);
    }
  });
}

void mean_field(const float* unary, float* q, int64_t n, int k,
                const std::vector<const PairwiseTerm*>& terms, int n_iter, int threads) {
  if (threads <= 0) threads = default_threads();
  if (n == 0 || k == 0) return;
  const size_t nt = terms.size();
  // Two blur buffers per term, [(M_t+1), K] each, allocated once for all
  // iterations.
  std::vector<std::vector<float>> buf_a(nt), buf_b(nt);
  for (size_t t = 0; t < nt; ++t) {
    const size_t rows = static_cast<size_t>(terms[t]->lattice().n_vertices() + 1);
    buf_a[t].resize(rows * k);
    buf_b[t].resize(rows * k);
  }
  std::vector<const float*> blurred(nt);
  std::vector<const int32_t*> offs(nt);
  std::vector<const float*> slw(nt);
  std::vector<int> dp1(nt);
  for (size_t t = 0; t < nt; ++t) {
    const CpuLattice& L = terms[t]->lattice();
    offs[t] = L.view().offsets;
    dp1[t] = L.dim() + 1;
    const float* w = terms[t]->slice_weights(false);
    // Without normalisation the plain slice weights (alpha included) apply.
    slw[t] = w ? w : L.plain_slice_weights();
  }

  for (int it = 0; it < n_iter; ++it) {
    for (size_t t = 0; t < nt; ++t) {
      const CpuLattice& L = terms[t]->lattice();
      L.splat(q, k, terms[t]->splat_weights(false), buf_a[t].data(), threads);
      blurred[t] = L.blur(buf_a[t].data(), buf_b[t].data(), k, false, threads);
    }
    // Fused epilogue: slice every term, apply its compatibility, add the
    // unary, softmax; one pass over the points.
    parallel_for(n, threads, kGrain, [&](int64_t b, int64_t e) {
      std::vector<float> sbuf(k);
      float* __restrict s = sbuf.data();
      for (int64_t i = b; i < e; ++i) {
        float* __restrict logits = q + i * k;
        const float* __restrict u = unary + i * k;
        for (int c = 0; c < k; ++c) logits[c] = -u[c];
        for (size_t t = 0; t < nt; ++t) {
          const int d1 = dp1[t];
          const bool potts = terms[t]->compat_kind() == CompatKind::kPotts;
          // A Potts weight folds into the slice weights: logits += w * slice.
          float* __restrict acc = potts ? logits : s;
          const float scale = potts ? terms[t]->compat()[0] : 1.0f;
          if (!potts) std::fill(s, s + k, 0.0f);
          for (int r = 0; r < d1; ++r) {
            const int64_t en = i * d1 + r;
            const float w = scale * slw[t][en];
            const float* __restrict x = blurred[t] + (static_cast<int64_t>(offs[t][en]) + 1) * k;
            for (int c = 0; c < k; ++c) acc[c] += w * x[c];
          }
          if (!potts) terms[t]->add_message(s, logits);
        }
        softmax_inplace(logits, k);
      }
    });
  }
}

}  // namespace dcrf
