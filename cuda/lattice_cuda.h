// CUDA backend of the permutohedral lattice (cuda/lattice_cuda.cu).
//
// A plain C++ header: no CUDA type appears here, so g++-compiled code (the
// bindings) can include it. Device pointers are T* (float, or double for
// float64 inputs) and int32_t* into GPU memory, the stream is a cudaStream_t passed as void* (0 = the legacy
// default stream), the device is a CUDA ordinal. Every call enqueues its work
// on the given stream and returns without waiting for it, except where a
// result must come back to the host (the vertex count at build time).
//
// Batches: one CudaLattice holds the lattices of B point sets ("segments",
// e.g. B images, of equal or different sizes) stored back to back. Vertices
// are never shared between segments, so filtering the concatenated points is
// filtering every segment with its own lattice, in one launch per stage.
//
// Determinism: vertices are numbered by first appearance in point order (as
// the CPU backend numbers them); splat is a gather over a per-vertex list of
// entries in ascending point order; every output element is written by one
// thread; no floating-point atomics. Same input, same device: same bits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lattice.h"

namespace dcrf {
namespace cuda {

// Number of visible CUDA devices; 0 (never an exception) when the driver or
// device is missing.
int device_count();
// Name, compute capability and memory of a device, as plain data; throws on a bad ordinal.
// (It returned a std::string from one cudaGetDeviceProperties call until 2026-12-04, when that
// call alone segfaulted on an H200 machine while every other CUDA call worked: see the .cu.)
struct DeviceInfo {
  char name[256];
  int major, minor;
  double total_gib;
};
void device_info(int device, DeviceInfo* out);

// Blocks the host until all work on `device` is done.
void synchronize(int device);

// Call scratch comes from a memory pool of densecrf's own per device that
// keeps freed memory reserved for the next call (0 bytes and no-ops where
// the device has no memory pools). scratch_reserved: the bytes it holds;
// empty_cache: waits for the device, then gives all unused memory back.
size_t scratch_reserved(int device);
void empty_cache(int device);

// Device-side timing with a pair of CUDA events recorded on a stream.
class EventTimer {
 public:
  explicit EventTimer(int device);
  ~EventTimer();
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  void start(void* stream);
  void stop(void* stream);
  // Milliseconds between start and stop; waits for the stop event.
  float elapsed_ms() const;

 private:
  void* start_ = nullptr;  // cudaEvent_t
  void* stop_ = nullptr;   // cudaEvent_t
  int device_ = 0;
};

// Owned device memory (cudaMalloc), freed in the destructor.
class DeviceBuffer {
 public:
  DeviceBuffer(size_t nbytes, int device);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* data() const { return ptr_; }
  size_t nbytes() const { return nbytes_; }
  int device() const { return device_; }
  // Stream-ordered copies; copy_to_host waits for the stream.
  void copy_from_host(const void* src, size_t nbytes, void* stream);
  void copy_to_host(void* dst, size_t nbytes, void* stream) const;

 private:
  void* ptr_ = nullptr;
  size_t nbytes_ = 0;
  int device_ = 0;
};

// The lattice in scalar type T: float (the default; the arithmetic of the
// CPU backend and pydensecrf) or double (float64 inputs: the embedding,
// weights, filter and mean field all in double, as csrc/lattice_f64.cpp).
// Keys, vertex numbering and the splat order are the same for both.
template <class T>
class CudaLatticeT {
 public:
  // features: device [N, d] of T, row-major, divided by the bandwidths.
  // segments: host [B+1] point offsets, segments[0] = 0, segments[B] = N,
  // non-decreasing; empty means one segment. Waits for the stream once (to
  // learn the vertex count); throws InvalidArgument for non-finite features.
  CudaLatticeT(const T* features, int64_t n_points, int dim, const std::vector<int64_t>& segments, int device,
               void* stream);
  ~CudaLatticeT();
  CudaLatticeT(const CudaLatticeT&) = delete;
  CudaLatticeT& operator=(const CudaLatticeT&) = delete;

  int64_t n_points() const { return n_; }
  int dim() const { return d_; }
  int64_t n_vertices() const { return m_; }
  int device() const { return device_; }
  int64_t n_segments() const { return static_cast<int64_t>(segments_.size()) - 1; }
  // Splat chunks: vertices with more than 128 entries (large uniform regions
  // put thousands of points on one vertex) are summed in chunks of 128.
  int64_t n_chunks() const { return n_chunks_; }
  const std::vector<int64_t>& segments() const { return segments_; }
  size_t memory_bytes() const;
  // Device arrays: [N, d+1] vertex id and barycentric weight of each entry.
  const int32_t* offsets() const { return offsets_; }
  const T* weights() const { return weights_; }

  // out[N, C] = post[i] * slice(blur(splat(pre[j] * in[j]))). pre / post:
  // device [N] per-point scales or nullptr (1). reverse blurs the axes in
  // reverse order (the transpose). in and out may alias. Scratch: two
  // [(M+1), C] buffers per call, stream-ordered (cudaMallocAsync).
  void filter(const T* in, T* out, int channels, bool reverse, const T* pre, const T* post, void* stream) const;

  // Stages, for callers that keep their own buffers. vals and tmp: device
  // [(M+1), C]; row 0 of both must be zero (zero_rows does it). partial:
  // device [n_chunks(), C] scratch of the splat of heavy vertices (null when
  // n_chunks() is 0). Scales as in filter. blur returns vals or tmp (the result).
  void zero_rows(T* vals, T* tmp, int channels, void* stream) const;
  void splat(const T* in, int channels, const T* pre, T* vals, T* partial, void* stream) const;
  T* blur(T* vals, T* tmp, int channels, bool reverse, void* stream) const;
  void slice(const T* vals, int channels, const T* post, T* out, void* stream) const;

 private:
  void release();  // frees the device buffers (destructor, failed build)

  int64_t n_ = 0;
  int d_ = 0;
  int64_t m_ = 0;
  int device_ = 0;
  std::vector<int64_t> segments_;                 // host [B+1]
  void* slabs_[3] = {nullptr, nullptr, nullptr};  // owned cudaMalloc blocks holding the arrays below
  // Device arrays (in slabs_).
  int32_t* offsets_ = nullptr;      // [N, d+1] vertex id of each entry
  T* weights_ = nullptr;            // [N, d+1] barycentric weights
  int32_t* neighbours_ = nullptr;   // [d+1, M, 2] row ids (vertex+1, 0 = none)
  int64_t* splat_begin_ = nullptr;  // [M+1] CSR row pointers
  int32_t* splat_point_ = nullptr;  // [N(d+1)] point of each CSR entry, ascending per vertex
  int32_t* splat_entry_ = nullptr;  // [N(d+1)] entry of each CSR entry
  T* splat_weight_ = nullptr;       // [N(d+1)] weight of each CSR entry
  int64_t n_chunks_ = 0;
  int32_t* chunk_begin_ = nullptr;   // [M+1] first splat chunk of each vertex (heavy vertices only)
  int32_t* chunk_vertex_ = nullptr;  // [n_chunks] vertex of each chunk
};

// A pairwise term on the device: a lattice, a normalisation (0 none,
// 1 before, 2 after, 3 symmetric, as dcrf::Normalization), a compatibility
// (0 Potts: 1 value, 1 diagonal: K values, 2 matrix: K*K values row-major)
// and the per-point scales of the normalisation, computed at construction
// from filter(1) on the stream.
template <class T>
class CudaPairwiseTermT {
 public:
  CudaPairwiseTermT(std::shared_ptr<const CudaLatticeT<T>> lattice, int normalization, int compat_kind,
                    std::vector<T> compat, int n_labels, void* stream);
  ~CudaPairwiseTermT();
  CudaPairwiseTermT(const CudaPairwiseTermT&) = delete;
  CudaPairwiseTermT& operator=(const CudaPairwiseTermT&) = delete;

  const CudaLatticeT<T>& lattice() const { return *lattice_; }
  int normalization() const { return norm_type_; }
  int compat_kind() const { return kind_; }
  int n_labels() const { return k_; }
  const std::vector<T>& compat() const { return compat_; }
  const T* device_compat() const { return compat_dev_; }
  const T* norm() const { return norm_; }  // device [N] filter(1)
  // Per-point scales for splat and slice; nullptr = 1 (see dcrf::PairwiseTerm).
  const T* pre_scale(bool transpose) const;
  const T* post_scale(bool transpose) const;

  // out[N, C] = the term's normalised kernel applied to in (or its adjoint).
  void filter(const T* in, T* out, int channels, bool transpose, void* stream) const;

 private:
  std::shared_ptr<const CudaLatticeT<T>> lattice_;
  int norm_type_;
  int kind_;
  std::vector<T> compat_;
  int k_;
  void* slab_ = nullptr;     // owned cudaMalloc block holding the arrays below
  T* compat_dev_ = nullptr;  // device copy of compat_
  T* norm_ = nullptr;        // [N] filter(1)
  T* scale_ = nullptr;       // [N] 1/sqrt(norm) or 1/norm (nullptr for none)
};

// Q[N, K] <- n_iter mean-field iterations on the device, with no host round
// trip: Q = softmax(-U - sum_t compat_t(filter_t(Q))). unary, q: device
// [N, K]. fresh: start from softmax(-U) (q is output only); otherwise from q.
// All terms must cover the same N points and K labels (at most 16 terms).
// Scratch (per term two [(M_t+1), K] blur buffers, [chunks_t, K] splat
// partial sums, and [N, K] for a matrix compatibility) is allocated once per
// call, stream-ordered, and reused by every iteration.
template <class T>
void mean_field(const T* unary, T* q, int64_t n, int k, const std::vector<const CudaPairwiseTermT<T>*>& terms,
                int n_iter, bool fresh, void* stream);

// float (the default) and double (float64 inputs), instantiated in the .cu.
using CudaLattice = CudaLatticeT<float>;
using CudaLattice64 = CudaLatticeT<double>;
using CudaPairwiseTerm = CudaPairwiseTermT<float>;
using CudaPairwiseTerm64 = CudaPairwiseTermT<double>;

// Layout helpers for the Python layer (no framework on the device path).
//
// grid_features: out[B * prod(spatial), n_axes + C] features of B grids of
// shape spatial (row-major, last axis fastest): the position of each axis,
// last axis first (x, y, ... as pydensecrf), divided by sdims[that axis in
// x, y order], then the image channels (image: device T
// [B, prod(spatial), C], or [B, C, prod(spatial)] when channel_first; may be
// null when C = 0) divided by schan[C]. n_axes + C <= kMaxDim.
template <class T>
void grid_features(const T* image, T* out, int64_t batch, const std::vector<int64_t>& spatial,
                   const std::vector<T>& sdims, int channels, const std::vector<T>& schan, bool channel_first,
                   int device, void* stream);

// unary[B*S, K] = -log(clip(p)) for probs laid out [B, K, S] (channel_first)
// or [B, S, K]; scale in (0, 1] mixes with the uniform distribution first
// (scale <= 0: none); clip <= 0: none.
template <class T>
void unary_from_probs(const T* probs, T* unary, int64_t batch, int64_t s, int k, bool channel_first, T clip,
                      double scale, int device, void* stream);

// Copies q[B*S, K] into out laid out [B, K, S] (channel_first) or [B, S, K].
template <class T>
void copy_labels_layout(const T* q, T* out, int64_t batch, int64_t s, int k, bool channel_first, int device,
                        void* stream);

}  // namespace cuda
}  // namespace dcrf
