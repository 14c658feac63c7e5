#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "compat_message.h"
#include "crf.h"
#include "kernels.h"
#include "parallel.h"

namespace dcrf {
namespace {
constexpr int64_t kGrain = 2048;

}  // namespace

PairwiseTerm::PairwiseTerm(std::shared_ptr<const CpuLattice> lattice, Normalization norm, CompatKind kind,
                           std::vector<float> compat, int n_labels, int threads)
    : lattice_(std::move(lattice)), norm_type_(norm), kind_(kind), compat_(std::move(compat)), k_(n_labels) {
  check_term_args(static_cast<int>(kind), static_cast<int>(norm), compat_.size(), k_);
  const int64_t n = lattice_->n_points();
  norm_.resize(n);
  lattice_->filter_ones(norm_.data(), threads);
  if (norm_type_ == Normalization::kNone) return;
  scale_.resize(n);
  const bool symmetric = norm_type_ == Normalization::kSymmetric;
  parallel_for(n, threads, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      scale_[i] = normalization_scale(norm_[i], symmetric);
    }
  });
}

const float* PairwiseTerm::splat_scale(bool transpose) const {
  const bool scaled = norm_type_ == Normalization::kSymmetric || (!transpose && norm_type_ == Normalization::kBefore) ||
                      (transpose && norm_type_ == Normalization::kAfter);
  return scaled ? scale_.data() : nullptr;
}

const float* PairwiseTerm::slice_scale(bool transpose) const {
  const bool scaled = norm_type_ == Normalization::kSymmetric || (!transpose && norm_type_ == Normalization::kAfter) ||
                      (transpose && norm_type_ == Normalization::kBefore);
  return scaled ? scale_.data() : nullptr;
}

const float* PairwiseTerm::slice_weights(bool transpose) const {
  const float* s = slice_scale(transpose);
  if (!s) return nullptr;
  std::call_once(slice_once_, [&] { slice_scaled_ = lattice_->slice_weights(s, 0); });
  return slice_scaled_.data();
}

void PairwiseTerm::filter(const float* in, float* out, int channels, bool transpose, int threads) const {
  lattice_->filter(in, out, channels, transpose, threads, splat_scale(transpose), slice_weights(transpose));
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
      add_compat_message(static_cast<int>(kind_), compat_.data(), s.data(), m.data(), k_);  // m = -message
      for (int c = 0; c < k_; ++c) row[c] = -m[c];
    }
  });
}

void softmax_neg(const float* unary, float* out, int64_t n, int k, int threads) {
  if (threads <= 0) threads = default_threads();
  const int cp = padded_channels(k);
  const Kernels& K = kernels();
  parallel_for(n, threads, kGrain, [&](int64_t b, int64_t e) {
    AlignedFloats q = aligned_floats(cp);
    for (int64_t i = b; i < e; ++i) {
      K.softmax_neg(unary + i * k, q.get(), k, cp, n - i, 0, 1);
      std::memcpy(out + i * k, q.get(), sizeof(float) * k);
    }
  });
}

bool mean_field(const float* unary, float* q, int64_t n, int k, const std::vector<const PairwiseTerm*>& terms,
                int n_iter, int threads, bool fresh, AlignedFloats* start) {
  if (threads <= 0) threads = default_threads();
  if (n == 0 || k == 0) return true;
  const int cp = padded_channels(k);
  const bool given = start != nullptr && *start;
  if (n_iter == 0) {
    if (given) {
      const float* s = start->get();
      parallel_for(n, threads, kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) std::memcpy(q + i * k, s + i * cp, sizeof(float) * k);
      });
    } else if (fresh) {
      softmax_neg(unary, q, n, k, threads);
    }
    return true;
  }
  std::atomic<bool> finite{true};
  const Kernels& K = kernels();
  const size_t nt = terms.size();
  // A channel-padded copy of Q, and two blur buffers per term
  // [(M_t+1), cp], allocated once for all iterations. U stays unpadded.
  AlignedFloats qp = given ? std::move(*start) : aligned_floats(static_cast<size_t>(n) * cp);
  if (!given)
    parallel_for(n, threads, kGrain, [&](int64_t b, int64_t e) {
      if (fresh) {
        K.softmax_neg(unary, qp.get(), k, cp, n, b, e);
        return;
      }
      for (int64_t i = b; i < e; ++i) {
        std::memcpy(qp.get() + i * cp, q + i * k, sizeof(float) * k);
        std::fill(qp.get() + i * cp + k, qp.get() + (i + 1) * cp, 0.0f);
      }
    });
  std::vector<AlignedFloats> buf_a, buf_b;
  std::vector<EpilogueTerm> ep(nt);
  for (size_t t = 0; t < nt; ++t) {
    const CpuLattice& L = terms[t]->lattice();
    const size_t rows = static_cast<size_t>(L.n_vertices() + 1);
    buf_a.push_back(aligned_floats(rows * cp));
    buf_b.push_back(aligned_floats(rows * cp));
    ep[t].offsets = L.view().offsets;
    ep[t].slice_w = L.barycentric_weights();
    ep[t].slice_scale = terms[t]->slice_scale(false);  // per point, or null
    ep[t].slice_mult = L.alpha();
    ep[t].dp1 = L.dim() + 1;
    ep[t].compat_kind = static_cast<int>(terms[t]->compat_kind());
    ep[t].compat = terms[t]->compat().data();
  }

  // Splat and blur of term t on `th` threads.
  auto splat_blur = [&](size_t t, int th) {
    const CpuLattice& L = terms[t]->lattice();
    L.splat_padded(qp.get(), cp, terms[t]->splat_scale(false), buf_a[t].get(), th);
    ep[t].blurred = L.blur_padded(buf_a[t].get(), buf_b[t].get(), cp, false, th);
  };
  // With no more threads than terms (2 threads and the usual 2 terms of an
  // image CRF), each thread splats and blurs whole terms alone, in parallel
  // with the others: the bilateral lattice's splat hardly speeds up when
  // split (every point touches vertices of both halves), while the two
  // terms cost about the same. Terms go to threads largest first, each to
  // the least loaded thread, by entries plus vertices. Same bits: a splat or
  // blur gives the same result on any number of threads.
  const bool by_term = threads >= 2 && threads <= static_cast<int>(nt);
  std::vector<int> owner(nt, 0);
  if (by_term) {
    std::vector<size_t> order(nt);
    std::vector<double> cost(nt), load(threads, 0.0);
    for (size_t t = 0; t < nt; ++t) {
      const CpuLattice& L = terms[t]->lattice();
      order[t] = t;
      cost[t] = static_cast<double>(L.dim() + 1) * static_cast<double>(L.n_points() + L.n_vertices());
    }
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return cost[a] > cost[b]; });
    for (size_t t : order) {
      const int w = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
      owner[t] = w;
      load[w] += cost[t];
    }
  }

  // The fused pass: chunks of rows (about 16 per thread, at least kGrain
  // rows) on at most as many threads as there are chunks.
  const int64_t pass_chunk = std::max<int64_t>(kGrain, n / (static_cast<int64_t>(threads) * 16));
  const int pass_threads = static_cast<int>(std::min<int64_t>(threads, (n + pass_chunk - 1) / pass_chunk));

  for (int it = 0; it < n_iter; ++it) {
    if (by_term) {
      parallel_run(threads, [&](int tid, int) {
        for (size_t t = 0; t < nt; ++t) {
          if (owner[t] == tid) splat_blur(t, 1);
        }
      });
    } else {
      for (size_t t = 0; t < nt; ++t) splat_blur(t, threads);
    }
    // Fused epilogue: slice every term, apply its compatibility, add the
    // unary, softmax; one pass over the points. The last iteration writes
    // the unpadded result straight into q.
    // Rows are handed out in chunks, first come first served (take_chunks).
    // Each row's result does not depend on who computes it or with which
    // neighbours.
    float* out = it + 1 == n_iter ? q : nullptr;
    std::atomic<int64_t> next{0};
    parallel_run(pass_threads, [&](int, int) {
      take_chunks(next, n, pass_chunk, [&](int64_t b, int64_t e) {
        if (!K.epilogue(unary, qp.get(), k, cp, n, ep.data(), static_cast<int>(nt), b, e, out)) {
          finite.store(false, std::memory_order_relaxed);
        }
      });
    });
  }
  return finite.load();
}

}  // namespace dcrf
