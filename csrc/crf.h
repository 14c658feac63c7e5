// Mean-field inference for a fully connected CRF with Gaussian pairwise
// terms (Kraehenbuehl and Koltun, NIPS 2011), on the CPU backend.
//
// Energy convention (Kraehenbuehl's code): the unary U[N, K] is an energy;
// a pairwise term's message is compat(filter(Q)), also an energy, and one
// iteration sets Q = softmax(-U - sum_t message_t(Q)). A Potts weight w gives
// the message -w * filter(Q) (so it adds +w * filter(Q) to the logits); a
// diagonal compatibility w[K] gives w * filter(Q); a matrix W[K, K] gives
// W @ filter(Q) per point.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "kernels.h"
#include "lattice.h"

namespace dcrf {

enum class Normalization : int { kNone = 0, kBefore = 1, kAfter = 2, kSymmetric = 3 };
enum class CompatKind : int { kPotts = 0, kDiagonal = 1, kMatrix = 2 };

class PairwiseTerm {
 public:
  // compat: 1 value (Potts), K values (diagonal) or K*K values (matrix, row-major).
  PairwiseTerm(std::shared_ptr<const CpuLattice> lattice, Normalization norm, CompatKind kind,
               std::vector<float> compat, int n_labels, int threads);

  const CpuLattice& lattice() const { return *lattice_; }
  Normalization normalization() const { return norm_type_; }
  CompatKind compat_kind() const { return kind_; }
  const std::vector<float>& compat() const { return compat_; }
  int n_labels() const { return k_; }
  // filter(1)[N]: the lattice's response to a constant 1 (before any scaling).
  const std::vector<float>& norm() const { return norm_; }

  // out[N, K] = kernel(in) with this term's normalisation; transpose applies
  // the adjoint. in and out may alias.
  void filter(const float* in, float* out, int channels, bool transpose, int threads) const;
  // out[N, K] = compat(filter(Q)): the message (an energy). Transposed
  // variant applies compat^T after the transposed filter.
  void apply(const float* q, float* out, bool transpose, int threads) const;

  // The normalisation as splat scale [N] and slice weights [N(d+1)]
  // (see CpuLattice::filter); null where the plain filter applies. The
  // scaled slice weights are computed on first use (filter and apply; mean
  // field scales per point instead, slice_scale).
  const float* splat_scale(bool transpose) const;
  const float* slice_weights(bool transpose) const;
  // The slice's per-point scale [N] (where slice_weights is not null), or null.
  const float* slice_scale(bool transpose) const;

 private:
  std::shared_ptr<const CpuLattice> lattice_;
  Normalization norm_type_;
  CompatKind kind_;
  std::vector<float> compat_;
  int k_;
  std::vector<float> norm_;    // [N] filter of ones
  UninitVector<float> scale_;  // [N] 1/sqrt(norm) or 1/norm, per mode
  mutable std::once_flag slice_once_;
  mutable UninitVector<float> slice_scaled_;  // [N(d+1)] slice weights * scale, once used
};

// Q[N, K] <- n_iter mean-field iterations. unary: [N, K] energies. With
// fresh = true the start is softmax(-U) and q is output only; otherwise q
// holds the starting distribution. Returns false when some row of the
// result is not finite (its logits overflowed float32).
// With `start` non-null and holding a buffer, that channel-padded [N, cp]
// start distribution (kernels' unary_rows) is used, and taken over, instead
// of computing softmax(-U); q is then output only.
bool mean_field(const float* unary, float* q, int64_t n, int k, const std::vector<const PairwiseTerm*>& terms,
                int n_iter, int threads, bool fresh = false, AlignedFloats* start = nullptr);

// out[N, K] = softmax(-U) per point (shifted by the row's max where a logit
// lies outside [-64, 64]; see softmax_shift in kernels_impl.h).
void softmax_neg(const float* unary, float* out, int64_t n, int k, int threads);

}  // namespace dcrf
