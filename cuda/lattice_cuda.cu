// CUDA backend of the permutohedral lattice and of mean-field inference.
//
// Build (one pass per stage, all on the caller's stream):
//   1. embed: each point's d+1 simplex vertices (keys) and barycentric weights,
//      with lattice_math.h's embed_point, the very code the CPU runs;
//   2. insert: every entry (point, vertex) claims or finds the slot of its key
//      in an open-addressing table (atomicCAS on int32 entry ids; a claimed
//      slot never changes, so all entries of one key meet in one slot), then
//      atomicMin records the smallest entry of each slot;
//   3. number: an entry is "first" when it is its slot's smallest; an
//      inclusive scan over these flags numbers the vertices by first
//      appearance in point order (the CPU backend's numbering), whatever the
//      order in which threads won the CAS races;
//   4. neighbours: the blur neighbours of every vertex, looked up in the table;
//   5. splat lists: a stable radix sort of the entries by vertex id gives each
//      vertex its entries in ascending point order (CSR).
// Keys carry their segment (image of a batch): vertices of different
// segments never merge, so a batch is one lattice.
//
//   6. splat chunks: the list of a heavy vertex (more than kChunk entries,
//      e.g. a large uniform region) is cut into chunks of kChunk entries.
//
// Filter: splat (gather over the CSR list, one thread per vertex and channel;
// a heavy vertex sums its chunks' in-order partial sums, in order), d+1 blur
// passes (one thread per vertex and channel), slice (one thread per point
// and channel). Mean field: splat and blur per term, then a coalesced logits
// pass per (point, label) that slices every term and applies its
// compatibility, and a softmax per point; all on the caller's stream, scratch
// allocated once per call. No floating-point atomics anywhere; each output
// element is written by one thread summing in a fixed order: runs are
// bit-identical. Compiled with --fmad=false, so that the embedding rounds as
// the CPU's does (the same points land in the same simplices).
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "fast_div.h"
#include "lattice_cuda.h"
#include "lattice_math.h"

namespace dcrf {
namespace cuda {
namespace {

// ---------------------------------------------------------------------------
// Error handling: every CUDA call is checked and turned into an exception.

[[noreturn]] void throw_cuda(cudaError_t e, const char* what, const char* file, int line) {
  std::ostringstream s;
  s << "CUDA error " << cudaGetErrorName(e) << ": " << cudaGetErrorString(e) << " (in " << what << " at " << file << ":"
    << line << ")";
  if (e == cudaErrorNoKernelImageForDevice) {
    s << ". This build of densecrf has no code for this GPU";
#ifdef DENSECRF_CUDA_ARCHS
    s << " (built for " << DENSECRF_CUDA_ARCHS << ")";
#endif
    s << ": reinstall with -C cmake.define.DENSECRF_CUDA_ARCHITECTURES=\"<its sm>-real\"";
  }
  throw std::runtime_error(s.str());
}

inline void check(cudaError_t e, const char* what, const char* file, int line) {
  if (e != cudaSuccess) throw_cuda(e, what, file, line);
}

#define DCRF_CUDA_CHECK(expr) ::dcrf::cuda::check((expr), #expr, __FILE__, __LINE__)
// After a kernel launch: reports a bad configuration (or an earlier
// asynchronous fault) at the launch that found it.
#define DCRF_CUDA_LAUNCHED(name) ::dcrf::cuda::check(cudaGetLastError(), name, __FILE__, __LINE__)

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// Makes `device` current for the scope, restoring the previous one after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    DCRF_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device) {
      DCRF_CUDA_CHECK(cudaSetDevice(device));
      changed_ = true;
    }
  }
  ~DeviceGuard() {
    if (changed_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
  bool changed_ = false;
};

// Long-lived device memory: the arrays of a lattice or a term, carved out of
// one cudaMalloc each (fewer allocations per call), 256-byte aligned.
class Slab {
 public:
  template <class T>
  void add(T** ptr, size_t count) {
    items_.push_back({reinterpret_cast<void**>(ptr), count * sizeof(T)});
  }
  // Allocates and sets every added pointer (nullptr for empty arrays);
  // returns the base to cudaFree, or nullptr when all are empty.
  void* allocate() {
    size_t total = 0;
    for (const Item& it : items_) total += round_up(it.bytes);
    if (total == 0) {
      for (const Item& it : items_) *it.ptr = nullptr;
      return nullptr;
    }
    void* base = nullptr;
    DCRF_CUDA_CHECK(cudaMalloc(&base, total));
    char* p = static_cast<char*>(base);
    for (const Item& it : items_) {
      *it.ptr = it.bytes ? p : nullptr;
      p += round_up(it.bytes);
    }
    return base;
  }

 private:
  struct Item {
    void** ptr;
    size_t bytes;
  };
  static size_t round_up(size_t b) { return (b + 255) / 256 * 256; }
  std::vector<Item> items_;
};

void slab_free(void*& p) {
  if (p) cudaFree(p);  // errors ignored: runs in destructors
  p = nullptr;
}

// Per device (up to kMaxDevices; others go without a pool): densecrf's own
// memory pool for call scratch, created on first use. Its release threshold
// is unlimited, so memory freed at the end of a call stays reserved for the
// next one: the device's default pool gives freed memory back to the system
// at every synchronisation (threshold 0), and each call then mapped its
// scratch afresh. A pool of its own leaves other libraries' allocators (and
// the default pool they may tune) alone. empty_cache() trims it.
constexpr int kMaxDevices = 64;
std::mutex g_pool_mu;
cudaMemPool_t g_pools[kMaxDevices] = {};

// How a device allocates call scratch, decided on its first use.
enum class ScratchKind : int8_t { kUnknown, kPlain, kOwnPool, kDefaultPool };
ScratchKind g_pool_kind[kMaxDevices] = {};

// DENSECRF_CUDA_SCRATCH_POOL=0 takes the device's default pool instead
// (cudaMallocAsync, as before 2026-12-05): the before side of a benchmark.
bool own_pool_disabled() {
  const char* v = std::getenv("DENSECRF_CUDA_SCRATCH_POOL");
  return v && std::strcmp(v, "0") == 0;
}

// Where `device`'s call scratch comes from: densecrf's own pool (pool set),
// the default pool (cudaMallocAsync: async without a pool), or plain
// cudaMalloc where the device has no memory pools (or beyond kMaxDevices).
struct ScratchSource {
  cudaMemPool_t pool = nullptr;
  bool async = false;
};

ScratchSource scratch_source(int device) {
  if (device < 0 || device >= kMaxDevices) return {};
  std::lock_guard<std::mutex> lk(g_pool_mu);
  ScratchKind& kind = g_pool_kind[device];
  if (kind == ScratchKind::kUnknown) {
    kind = ScratchKind::kPlain;
    int supported = 0;
    if (cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, device) != cudaSuccess || !supported) {
      cudaGetLastError();
      return {};
    }
    if (own_pool_disabled()) {
      kind = ScratchKind::kDefaultPool;
      return {nullptr, true};
    }
    cudaMemPoolProps props;
    std::memset(&props, 0, sizeof(props));
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    cudaMemPool_t pool = nullptr;
    if (cudaMemPoolCreate(&pool, &props) != cudaSuccess) {
      cudaGetLastError();
      return {};
    }
    uint64_t keep = UINT64_MAX;
    if (cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep) != cudaSuccess) {
      cudaGetLastError();
      cudaMemPoolDestroy(pool);
      return {};
    }
    g_pools[device] = pool;
    kind = ScratchKind::kOwnPool;
  }
  if (kind == ScratchKind::kOwnPool) return {g_pools[device], true};
  return {nullptr, kind == ScratchKind::kDefaultPool};
}

// Scratch memory for one call, stream-ordered (from the device's scratch
// pool on the caller's stream; cudaMalloc where the device has no memory
// pools).
template <class T>
class Scratch {
 public:
  Scratch(size_t count, cudaStream_t stream, int device) : stream_(stream) {
    if (count == 0) return;
    const ScratchSource src = scratch_source(device);
    async_ = src.async;
    void* p = nullptr;
    if (src.pool) {
      DCRF_CUDA_CHECK(cudaMallocFromPoolAsync(&p, count * sizeof(T), src.pool, stream));
    } else if (async_) {
      DCRF_CUDA_CHECK(cudaMallocAsync(&p, count * sizeof(T), stream));
    } else {
      DCRF_CUDA_CHECK(cudaMalloc(&p, count * sizeof(T)));
    }
    ptr_ = static_cast<T*>(p);
  }
  ~Scratch() {
    if (!ptr_) return;
    if (async_) {
      cudaFreeAsync(ptr_, stream_);
    } else {
      cudaFree(ptr_);
    }
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
  cudaStream_t stream_;
  bool async_ = false;
};

// ---------------------------------------------------------------------------
// Launch shape: grid-stride loops over int64 ranges.

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(b, 1 << 20)));
}

// (The host emulation of tests/cuda_emu may predefine it to visit the range
// in another order, to show that no result depends on the thread order.)
#ifndef DCRF_GRID_STRIDE
#define DCRF_GRID_STRIDE(i, n)                                                           \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
#endif

template <class T>
struct ScaleArg {
  T v[kMaxDim];
};

// Segment b holds points [seg[b], seg[b+1]); returns the b holding `point`
// (the largest b with seg[b] <= point, so empty segments are skipped).
__device__ inline int segment_of(int64_t point, const int64_t* __restrict__ seg, int n_seg) {
  int lo = 0, hi = n_seg - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (seg[mid] <= point) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// The key hash of lattice_math.h with the segment mixed in.
__device__ inline uint32_t segment_hash(const int32_t* key, int d, int seg) {
  uint32_t h = hash_key(key, d) ^ (static_cast<uint32_t>(seg) * 0x9e3779b1u);
  h ^= h >> 15;
  h *= 0x2c1b3c6du;
  h ^= h >> 12;
  return h;
}

__device__ inline bool same_key(const int32_t* a, const int32_t* b, int d) {
  for (int i = 0; i < d; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

// Entries per splat chunk (see chunk_splat_kernel): long enough that the
// partial sums cost little, short enough that no thread walks a long list.
constexpr int64_t kChunk = 128;

constexpr int kErrNonFinite = 1;
constexpr int kErrTableFull = 2;

// ---------------------------------------------------------------------------
// Build kernels.

// keys: [N, d+1, d]; weights: [N, d+1].
template <int DC, class T>
__global__ void embed_kernel(const T* __restrict__ features, int64_t n, int d, ScaleArg<T> scale,
                             int32_t* __restrict__ keys, T* __restrict__ weights, int* __restrict__ error) {
  const int dp1 = d + 1;
  DCRF_GRID_STRIDE(i, n) {
    if (!embed_point<DC>(features + i * d, d, scale.v, keys + i * dp1 * d, weights + i * dp1)) {
      atomicOr(error, kErrNonFinite);
      // Defined keys for the rest of the build, which is then discarded.
      for (int k = 0; k < dp1 * d; ++k) keys[i * dp1 * d + k] = 0;
    }
  }
}

template <class T>
__global__ void fill_kernel(T* __restrict__ p, int64_t n, T value) {
  DCRF_GRID_STRIDE(i, n) { p[i] = value; }
}

// table: [cap] entry id owning each slot (-1 = empty); entry_slot: [E];
// slot_min: [cap] smallest entry of each slot.
__global__ void insert_kernel(const int32_t* __restrict__ keys, int64_t n_entries, int d,
                              const int64_t* __restrict__ seg, int n_seg, int32_t* table, uint64_t mask,
                              int32_t* __restrict__ entry_slot, int32_t* slot_min, int* __restrict__ error) {
  const int dp1 = d + 1;
  DCRF_GRID_STRIDE(e, n_entries) {
    const int32_t* key = keys + e * d;
    const int sg = segment_of(e / dp1, seg, n_seg);
    uint64_t s = segment_hash(key, d, sg) & mask;
    bool placed = false;
    for (uint64_t probe = 0; probe <= mask; ++probe) {
      // A slot goes from -1 to an entry id once and never changes again, and
      // every key was written by an earlier kernel: comparing with the
      // owner's key is race-free.
      const int32_t owner = atomicCAS(&table[s], -1, static_cast<int32_t>(e));
      if (owner == -1 ||
          (segment_of(owner / dp1, seg, n_seg) == sg && same_key(keys + static_cast<int64_t>(owner) * d, key, d))) {
        placed = true;
        break;
      }
      s = (s + 1) & mask;
    }
    if (!placed) {
      atomicOr(error, kErrTableFull);
      s = 0;
    }
    entry_slot[e] = static_cast<int32_t>(s);
    atomicMin(&slot_min[s], static_cast<int32_t>(e));
  }
}

__global__ void first_flag_kernel(const int32_t* __restrict__ entry_slot, const int32_t* __restrict__ slot_min,
                                  int64_t n_entries, int32_t* __restrict__ first) {
  DCRF_GRID_STRIDE(e, n_entries) { first[e] = slot_min[entry_slot[e]] == e ? 1 : 0; }
}

// incl: inclusive scan of the first flags; vertex of entry e = incl[first
// entry of its key] - 1. rep: [M] first entry of each vertex.
__global__ void number_kernel(const int32_t* __restrict__ entry_slot, const int32_t* __restrict__ slot_min,
                              const int32_t* __restrict__ incl, const int32_t* __restrict__ first, int64_t n_entries,
                              int64_t m, int32_t* __restrict__ offsets, int32_t* __restrict__ rep) {
  DCRF_GRID_STRIDE(e, n_entries) {
    const int32_t v = incl[slot_min[entry_slot[e]]] - 1;
    offsets[e] = v;
    if (first[e] && v >= 0 && v < m) rep[v] = static_cast<int32_t>(e);
  }
}

// neighbours: [d+1, M, 2] row ids (vertex + 1; 0 = no such vertex).
__global__ void neighbour_kernel(const int32_t* __restrict__ keys, const int32_t* __restrict__ rep,
                                 const int32_t* __restrict__ table, uint64_t mask, const int32_t* __restrict__ offsets,
                                 const int64_t* __restrict__ seg, int n_seg, int d, int64_t m,
                                 int32_t* __restrict__ neighbours) {
  const int dp1 = d + 1;
  int32_t nk[kMaxDim];
  DCRF_GRID_STRIDE(t, m * dp1) {
    const int j = static_cast<int>(t / m);
    const int64_t v = t - static_cast<int64_t>(j) * m;
    const int64_t e = rep[v];
    const int32_t* key = keys + e * d;
    const int sg = segment_of(e / dp1, seg, n_seg);
    for (int dir = 0; dir < 2; ++dir) {
      neighbour_key(key, d, j, dir == 0 ? 1 : -1, nk);
      uint64_t s = segment_hash(nk, d, sg) & mask;
      int32_t row = 0;
      for (uint64_t probe = 0; probe <= mask; ++probe) {
        const int32_t owner = table[s];
        if (owner == -1) break;
        if (segment_of(owner / dp1, seg, n_seg) == sg && same_key(keys + static_cast<int64_t>(owner) * d, nk, d)) {
          row = offsets[owner] + 1;
          break;
        }
        s = (s + 1) & mask;
      }
      neighbours[t * 2 + dir] = row;
    }
  }
}

__global__ void iota_kernel(int32_t* __restrict__ p, int64_t n) {
  DCRF_GRID_STRIDE(i, n) { p[i] = static_cast<int32_t>(i); }
}

// From the entries sorted by vertex (stable, so ascending entry id, hence
// ascending point, within a vertex): the CSR arrays.
template <class T>
__global__ void csr_kernel(const int32_t* __restrict__ sorted_vertex, const int32_t* __restrict__ sorted_entry,
                           const T* __restrict__ weights, int64_t n_entries, int dp1, int64_t m,
                           int64_t* __restrict__ begin, int32_t* __restrict__ point, T* __restrict__ weight) {
  DCRF_GRID_STRIDE(k, n_entries) {
    const int32_t v = sorted_vertex[k];
    const int32_t e = sorted_entry[k];
    point[k] = e / dp1;
    weight[k] = weights[e];
    if ((k == 0 || sorted_vertex[k - 1] != v) && v >= 0 && v < m) begin[v] = k;
    if (k == n_entries - 1) begin[m] = n_entries;
  }
}

// Chunks of heavy vertices: a vertex with more than kChunk entries has its
// list cut into ceil(count / kChunk) chunks of kChunk consecutive entries.
__global__ void chunk_count_kernel(const int64_t* __restrict__ begin, int64_t m, int32_t* __restrict__ count) {
  DCRF_GRID_STRIDE(v, m) {
    const int64_t cnt = begin[v + 1] - begin[v];
    count[v] = cnt > kChunk ? static_cast<int32_t>((cnt + kChunk - 1) / kChunk) : 0;
  }
}

// chunk_begin: [M+1] chunk ids of each vertex; chunk_vertex: [n_chunks].
__global__ void chunk_vertex_kernel(const int32_t* __restrict__ chunk_begin, int64_t m,
                                    int32_t* __restrict__ chunk_vertex) {
  DCRF_GRID_STRIDE(v, m) {
    for (int32_t j = chunk_begin[v]; j < chunk_begin[v + 1]; ++j) chunk_vertex[j] = static_cast<int32_t>(v);
  }
}

// ---------------------------------------------------------------------------
// exp, max, min and log in either scalar type (the float functions for float,
// so that the float32 path's arithmetic is exactly what it was).
__device__ inline float lattice_exp(float x) { return expf(x); }
__device__ inline double lattice_exp(double x) { return exp(x); }
__device__ inline float lattice_max(float a, float b) { return fmaxf(a, b); }
__device__ inline double lattice_max(double a, double b) { return fmax(a, b); }
__device__ inline float lattice_min(float a, float b) { return fminf(a, b); }
__device__ inline double lattice_min(double a, double b) { return fmin(a, b); }
__device__ inline float lattice_log(float x) { return logf(x); }
__device__ inline double lattice_log(double x) { return log(x); }

// Filter kernels, in the lattice's scalar type T (float or double). vals
// rows: row 0 zero, vertex v in row v+1.

// partial[j, c] = sum of chunk j's entries w_k pre[p_k] in[p_k, c], in order.
template <class T>
__global__ void chunk_splat_kernel(const T* __restrict__ in, int channels, const T* __restrict__ pre,
                                   const int64_t* __restrict__ begin, const int32_t* __restrict__ point,
                                   const T* __restrict__ weight, const int32_t* __restrict__ chunk_begin,
                                   const int32_t* __restrict__ chunk_vertex, int64_t n_chunks, FastDiv by_channels,
                                   T* __restrict__ partial) {
  DCRF_GRID_STRIDE(t, n_chunks * channels) {
    const int64_t j = by_channels.div(t);
    const int c = static_cast<int>(t - j * channels);
    const int64_t v = chunk_vertex[j];
    const int64_t b = begin[v] + (j - chunk_begin[v]) * kChunk;
    const int64_t end_v = begin[v + 1];
    const int64_t e = b + kChunk < end_v ? b + kChunk : end_v;
    T acc = T(0);
    for (int64_t k = b; k < e; ++k) {
      const int64_t p = point[k];
      const T w = pre ? weight[k] * pre[p] : weight[k];
      acc += w * in[p * channels + c];
    }
    partial[t] = acc;
  }
}

// vals[(v+1), c] = sum_k w_k pre[p_k] in[p_k, c] over v's entries in
// ascending point order: directly for a light vertex, as the in-order sum of
// its chunks' partial sums for a heavy one (a fixed tree: deterministic, and
// no thread walks a list longer than max(kChunk, count / kChunk)).
template <class T>
__global__ void splat_kernel(const T* __restrict__ in, int channels, const T* __restrict__ pre,
                             const int64_t* __restrict__ begin, const int32_t* __restrict__ point,
                             const T* __restrict__ weight, const int32_t* __restrict__ chunk_begin,
                             const T* __restrict__ partial, int64_t m, FastDiv by_channels, T* __restrict__ vals) {
  DCRF_GRID_STRIDE(t, m * channels) {
    const int64_t v = by_channels.div(t);
    const int c = static_cast<int>(t - v * channels);
    T acc = T(0);
    const int64_t cb = chunk_begin[v], ce = chunk_begin[v + 1];
    if (ce > cb) {
      for (int64_t j = cb; j < ce; ++j) acc += partial[j * channels + c];
    } else {
      const int64_t b = begin[v], e = begin[v + 1];
      for (int64_t k = b; k < e; ++k) {
        const int64_t p = point[k];
        const T w = pre ? weight[k] * pre[p] : weight[k];
        acc += w * in[p * channels + c];
      }
    }
    vals[(v + 1) * channels + c] = acc;
  }
}

// One blur pass along one axis: dst = src + (n1 + n2) / 2 (p. 6).
template <class T>
__global__ void blur_kernel(const T* __restrict__ src, const int32_t* __restrict__ nb, int channels, int64_t m,
                            FastDiv by_channels, T* __restrict__ dst) {
  DCRF_GRID_STRIDE(t, m * channels) {
    const int64_t v = by_channels.div(t);
    const int c = static_cast<int>(t - v * channels);
    const T o = src[(v + 1) * channels + c];
    const T n1 = src[static_cast<int64_t>(nb[2 * v]) * channels + c];
    const T n2 = src[static_cast<int64_t>(nb[2 * v + 1]) * channels + c];
    dst[(v + 1) * channels + c] = o + T(0.5) * (n1 + n2);
  }
}

// out[i, c] = sum_r (w_r alpha) post[i] vals[offsets_r + 1, c].
template <class T>
__global__ void slice_kernel(const T* __restrict__ vals, int channels, const T* __restrict__ post,
                             const int32_t* __restrict__ offsets, const T* __restrict__ weights, T alpha, int dp1,
                             int64_t n, FastDiv by_channels, T* __restrict__ out) {
  DCRF_GRID_STRIDE(t, n * channels) {
    const int64_t i = by_channels.div(t);
    const int c = static_cast<int>(t - i * channels);
    T acc = T(0);
    for (int r = 0; r < dp1; ++r) {
      const int64_t en = i * dp1 + r;
      T w = weights[en] * alpha;
      if (post) w = w * post[i];
      acc += w * vals[(static_cast<int64_t>(offsets[en]) + 1) * channels + c];
    }
    out[t] = acc;
  }
}

// ---------------------------------------------------------------------------
// Mean-field kernels.

template <class T>
__global__ void norm_scale_kernel(const T* __restrict__ norm, int64_t n, bool symmetric, T* __restrict__ scale) {
  DCRF_GRID_STRIDE(i, n) {
    scale[i] = normalization_scale(norm[i], symmetric);  // as the CPU backend
  }
}

template <class T>
__device__ inline void softmax_row(T* x, int k) {
  T mx = x[0];
  for (int c = 1; c < k; ++c) mx = lattice_max(mx, x[c]);
  for (int c = 0; c < k; ++c) x[c] = lattice_exp(x[c] - mx);
  T sum = T(0);
  for (int c = 0; c < k; ++c) sum += x[c];
  const T inv = T(1) / sum;
  for (int c = 0; c < k; ++c) x[c] *= inv;
}

template <class T>
__global__ void softmax_neg_kernel(const T* __restrict__ unary, int64_t n, int k, T* __restrict__ q) {
  DCRF_GRID_STRIDE(i, n) {
    T* row = q + i * k;
    for (int c = 0; c < k; ++c) row[c] = -unary[i * k + c];
    softmax_row<T>(row, k);
  }
}

constexpr int kMaxTerms = 16;

template <class T>
struct TermArg {
  const T* vals;           // [(M+1), K] blurred values
  const int32_t* offsets;  // [N, d+1]
  const T* weights;        // [N, d+1]
  const T* post;           // [N] slice scale or nullptr
  const T* compat;         // device [1], [K] or [K, K]
  T* slice_out;            // [N, K] sliced values of a matrix term (else nullptr)
  T alpha;
  T potts;  // compat[0] for a Potts term
  int dp1;
  int kind;  // 0 Potts, 1 diagonal, 2 matrix
};

template <class T>
struct TermsArg {
  TermArg<T> t[kMaxTerms];
  int count;
};

// The epilogue of one iteration, in three coalesced passes:
//   logits_kernel, one thread per (point, label): logits = -U + the Potts
//     and diagonal messages, term by term; a matrix term's sliced values go
//     to its slice_out buffer;
//   matrix_message_kernel, per matrix term and (point, label): logits -= W s;
//   softmax_kernel, one thread per point: q = softmax(logits), in place.
// The logits live in q (its old values were consumed by the splats).
template <class T>
__global__ void logits_kernel(const T* __restrict__ unary, TermsArg<T> terms, int64_t n, int k, FastDiv by_k,
                              T* __restrict__ q) {
  DCRF_GRID_STRIDE(t_id, n * k) {
    const int64_t i = by_k.div(t_id);
    const int c = static_cast<int>(t_id - i * k);
    T logit = -unary[t_id];
    for (int ti = 0; ti < terms.count; ++ti) {
      const TermArg<T>& t = terms.t[ti];
      const int64_t base = i * t.dp1;
      if (t.kind == 0) {
        // Potts folds into the slice weights: logit += (w * slice weight) x.
        for (int r = 0; r < t.dp1; ++r) {
          T w = t.weights[base + r] * t.alpha;
          if (t.post) w = w * t.post[i];
          w = t.potts * w;
          logit += w * t.vals[(static_cast<int64_t>(t.offsets[base + r]) + 1) * k + c];
        }
      } else {
        T acc = T(0);
        for (int r = 0; r < t.dp1; ++r) {
          T w = t.weights[base + r] * t.alpha;
          if (t.post) w = w * t.post[i];
          acc += w * t.vals[(static_cast<int64_t>(t.offsets[base + r]) + 1) * k + c];
        }
        if (t.kind == 1) {
          logit -= t.compat[c] * acc;
        } else {
          t.slice_out[t_id] = acc;
        }
      }
    }
    q[t_id] = logit;
  }
}

// q[i, a] -= sum_b W[a, b] s[i, b] for one matrix term.
template <class T>
__global__ void matrix_message_kernel(const T* __restrict__ s, const T* __restrict__ w, int64_t n, int k, FastDiv by_k,
                                      T* __restrict__ q) {
  DCRF_GRID_STRIDE(t_id, n * k) {
    const int64_t i = by_k.div(t_id);
    const int a = static_cast<int>(t_id - i * k);
    const T* row = w + static_cast<int64_t>(a) * k;
    const T* si = s + i * k;
    T acc = T(0);
    for (int b = 0; b < k; ++b) acc += row[b] * si[b];
    q[t_id] -= acc;
  }
}

template <class T>
__global__ void softmax_kernel(int64_t n, int k, T* __restrict__ q) {
  DCRF_GRID_STRIDE(i, n) { softmax_row<T>(q + i * k, k); }
}

// ---------------------------------------------------------------------------
// Layout kernels.

// Grid shape and bandwidths, passed by value (no upload, no wait).
template <class T>
struct GridArg {
  int64_t shape[kMaxDim];  // spatial sizes, slowest axis first
  T sdims[kMaxDim];        // position bandwidth of each feature column (x, y, ...)
  T schan[kMaxDim];        // bandwidth of each image channel
};

// out[p, :] = positions then channels, for a grid of shape spatial
// (row-major) per image of the batch.
template <class T>
__global__ void grid_features_kernel(const T* __restrict__ image, int64_t n_total, int64_t s, int n_axes, GridArg<T> g,
                                     int channels, bool channel_first, T* __restrict__ out) {
  const int nf = n_axes + channels;
  DCRF_GRID_STRIDE(i, n_total) {
    int64_t rest = i % s;
    T* o = out + i * nf;
    // Axis a (0 = slowest) goes to column n_axes-1-a: the last axis first.
    for (int a = n_axes - 1; a >= 0; --a) {
      const int64_t len = g.shape[a];
      const int64_t coord = rest % len;
      rest /= len;
      const int col = n_axes - 1 - a;
      o[col] = static_cast<T>(coord) / g.sdims[col];
    }
    if (channel_first) {
      const int64_t b = i / s, p = i - b * s;
      for (int c = 0; c < channels; ++c) o[n_axes + c] = image[(b * channels + c) * s + p] / g.schan[c];
    } else {
      for (int c = 0; c < channels; ++c) o[n_axes + c] = image[i * channels + c] / g.schan[c];
    }
  }
}

template <class T>
__global__ void unary_kernel(const T* __restrict__ probs, int64_t batch, int64_t s, int k, bool channel_first, T clip,
                             double scale, FastDiv by_k, FastDiv by_s, T* __restrict__ unary) {
  DCRF_GRID_STRIDE(t, batch * s * k) {
    const int64_t i = by_k.div(t);
    const int c = static_cast<int>(t - i * k);
    const int64_t b = by_s.div(i), p = i - b * s;
    T v = channel_first ? probs[(b * k + c) * s + p] : probs[t];
    if (scale > 0.0) v = static_cast<T>(scale * static_cast<double>(v) + (1.0 - scale) / k);
    if (clip > T(0)) v = lattice_min(lattice_max(v, clip), T(1));
    unary[t] = -lattice_log(v);
  }
}

template <class T>
__global__ void layout_kernel(const T* __restrict__ q, int64_t batch, int64_t s, int k, bool channel_first,
                              FastDiv by_k, FastDiv by_s, T* __restrict__ out) {
  DCRF_GRID_STRIDE(t, batch * s * k) {
    if (channel_first) {
      // t indexes out[b, c, p].
      const int64_t bc = by_s.div(t);
      const int64_t p = t - bc * s;
      const int64_t b = by_k.div(bc);
      const int c = static_cast<int>(bc - b * k);
      out[t] = q[(b * s + p) * k + c];
    } else {
      out[t] = q[t];
    }
  }
}

template <class T>
void upload(T* dst, const T* src, size_t count, cudaStream_t stream) {
  if (count) DCRF_CUDA_CHECK(cudaMemcpyAsync(dst, src, count * sizeof(T), cudaMemcpyHostToDevice, stream));
}

}  // namespace

// ---------------------------------------------------------------------------
// Devices and buffers.

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error of a missing driver
    return 0;
  }
  return n;
}

void device_info(int device, DeviceInfo* out) {
  std::memset(out, 0, sizeof(*out));
  DCRF_CUDA_CHECK(cudaDeviceGetAttribute(&out->major, cudaDevAttrComputeCapabilityMajor, device));
  DCRF_CUDA_CHECK(cudaDeviceGetAttribute(&out->minor, cudaDevAttrComputeCapabilityMinor, device));
  {
    DeviceGuard g(device);
    size_t free_bytes = 0, total = 0;
    DCRF_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
    out->total_gib = static_cast<double>(total) / (1024.0 * 1024.0 * 1024.0);
  }
  // The name from the driver's cuDeviceGetName, looked up at run time (no link-time dependency
  // on libcuda): cudaGetDeviceProperties segfaulted on the H200 machine (2026-12-04), twice,
  // once with a buffer far larger than the headers' struct. Without the driver's symbol the
  // name stays "CUDA device N".
  std::snprintf(out->name, sizeof(out->name), "CUDA device %d", device);
  if (void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)) {
    using GetName = int (*)(char*, int, int);  // CUresult cuDeviceGetName(char*, int, CUdevice)
    if (auto get = reinterpret_cast<GetName>(dlsym(lib, "cuDeviceGetName"))) {
      char name[sizeof(out->name)] = {};
      if (get(name, static_cast<int>(sizeof(name)) - 1, device) == 0 && name[0] != '\0')
        std::memcpy(out->name, name, sizeof(name));
    }
    dlclose(lib);
  }
}

size_t scratch_reserved(int device) {
  const cudaMemPool_t pool = scratch_source(device).pool;
  if (!pool) return 0;
  uint64_t v = 0;
  DCRF_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &v));
  return static_cast<size_t>(v);
}

void empty_cache(int device) {
  const cudaMemPool_t pool = scratch_source(device).pool;
  if (!pool) return;
  DeviceGuard g(device);
  DCRF_CUDA_CHECK(cudaDeviceSynchronize());  // frees still pending on a stream complete first
  DCRF_CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
}

void synchronize(int device) {
  DeviceGuard g(device);
  DCRF_CUDA_CHECK(cudaDeviceSynchronize());
}

EventTimer::EventTimer(int device) : device_(device) {
  DeviceGuard g(device);
  cudaEvent_t a = nullptr, b = nullptr;
  DCRF_CUDA_CHECK(cudaEventCreate(&a));
  const cudaError_t e = cudaEventCreate(&b);
  if (e != cudaSuccess) {
    cudaEventDestroy(a);
    DCRF_CUDA_CHECK(e);
  }
  start_ = a;
  stop_ = b;
}

EventTimer::~EventTimer() {
  if (start_) cudaEventDestroy(static_cast<cudaEvent_t>(start_));
  if (stop_) cudaEventDestroy(static_cast<cudaEvent_t>(stop_));
}

void EventTimer::start(void* stream) {
  DeviceGuard g(device_);
  DCRF_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(start_), as_stream(stream)));
}

void EventTimer::stop(void* stream) {
  DeviceGuard g(device_);
  DCRF_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(stop_), as_stream(stream)));
}

float EventTimer::elapsed_ms() const {
  DeviceGuard g(device_);
  DCRF_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(stop_)));
  float ms = 0.0f;
  DCRF_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_), static_cast<cudaEvent_t>(stop_)));
  return ms;
}

DeviceBuffer::DeviceBuffer(size_t nbytes, int device) : nbytes_(nbytes), device_(device) {
  DeviceGuard g(device);
  if (nbytes) DCRF_CUDA_CHECK(cudaMalloc(&ptr_, nbytes));
}

DeviceBuffer::~DeviceBuffer() {
  if (!ptr_) return;
  int prev = 0;
  const bool switched = cudaGetDevice(&prev) == cudaSuccess && prev != device_ && cudaSetDevice(device_) == cudaSuccess;
  cudaFree(ptr_);
  if (switched) cudaSetDevice(prev);
}

void DeviceBuffer::copy_from_host(const void* src, size_t nbytes, void* stream) {
  if (nbytes > nbytes_)
    throw InvalidArgument("copy of " + std::to_string(nbytes) + " bytes into a device buffer of " +
                          std::to_string(nbytes_));
  if (!nbytes) return;
  DeviceGuard g(device_);
  DCRF_CUDA_CHECK(cudaMemcpyAsync(ptr_, src, nbytes, cudaMemcpyHostToDevice, as_stream(stream)));
  // The host buffer may be freed when this returns.
  DCRF_CUDA_CHECK(cudaStreamSynchronize(as_stream(stream)));
}

void DeviceBuffer::copy_to_host(void* dst, size_t nbytes, void* stream) const {
  if (nbytes > nbytes_)
    throw InvalidArgument("copy of " + std::to_string(nbytes) + " bytes out of a device buffer of " +
                          std::to_string(nbytes_));
  if (!nbytes) return;
  DeviceGuard g(device_);
  DCRF_CUDA_CHECK(cudaMemcpyAsync(dst, ptr_, nbytes, cudaMemcpyDeviceToHost, as_stream(stream)));
  DCRF_CUDA_CHECK(cudaStreamSynchronize(as_stream(stream)));
}

// ---------------------------------------------------------------------------
// Lattice.

template <class T>
CudaLatticeT<T>::CudaLatticeT(const T* features, int64_t n_points, int dim, const std::vector<int64_t>& segments,
                              int device, void* stream_ptr)
    : n_(n_points), d_(dim), device_(device) {
  if (dim < 1 || dim > kMaxDim) {
    throw InvalidArgument("feature dimension must be in [1, " + std::to_string(kMaxDim) + "], got " +
                          std::to_string(dim));
  }
  if (n_points < 0) throw InvalidArgument("number of points must be >= 0");
  const int dp1 = d_ + 1;
  // Entry ids are int32 and the hash table holds at least 2 slots per entry
  // in at most 2^31 slots.
  if (n_points > (int64_t{1} << 30) / dp1) {
    throw InvalidArgument("too many points for one CUDA lattice: N*(d+1) = " + std::to_string(n_points * dp1) +
                          " exceeds 2^30");
  }
  if (segments.empty()) {
    segments_ = {0, n_points};
  } else {
    segments_ = segments;
    if (segments_.front() != 0 || segments_.back() != n_points) {
      throw InvalidArgument("segments must start at 0 and end at N = " + std::to_string(n_points));
    }
    for (size_t b = 1; b < segments_.size(); ++b) {
      if (segments_[b] < segments_[b - 1]) throw InvalidArgument("segments must be non-decreasing");
    }
    if (segments_.size() > static_cast<size_t>(INT_MAX)) throw InvalidArgument("too many segments");
  }
  if (n_ == 0) return;
  if (!features) throw InvalidArgument("features is a null pointer");

  DeviceGuard guard(device_);
  cudaStream_t stream = as_stream(stream_ptr);
  const int64_t n_entries = n_ * dp1;
  const int n_seg = static_cast<int>(segments_.size() - 1);

  try {
    {
      Slab slab;
      slab.add(&offsets_, n_entries);
      slab.add(&weights_, n_entries);
      slabs_[0] = slab.allocate();
    }

    Scratch<int64_t> seg(segments_.size(), stream, device_);
    upload(seg.get(), segments_.data(), segments_.size(), stream);
    Scratch<int> error(1, stream, device_);
    DCRF_CUDA_CHECK(cudaMemsetAsync(error.get(), 0, sizeof(int), stream));

    // 1. Embed.  keys: [E, d]
    Scratch<int32_t> keys(static_cast<size_t>(n_entries) * d_, stream, device_);
    ScaleArg<T> scale;
    lattice_scale_factors(d_, scale.v);
    const unsigned gb = blocks_for(n_);
    switch (d_) {
      case 2:
        embed_kernel<2, T><<<gb, kThreads, 0, stream>>>(features, n_, d_, scale, keys.get(), weights_, error.get());
        break;
      case 3:
        embed_kernel<3, T><<<gb, kThreads, 0, stream>>>(features, n_, d_, scale, keys.get(), weights_, error.get());
        break;
      case 5:
        embed_kernel<5, T><<<gb, kThreads, 0, stream>>>(features, n_, d_, scale, keys.get(), weights_, error.get());
        break;
      default:
        embed_kernel<0, T><<<gb, kThreads, 0, stream>>>(features, n_, d_, scale, keys.get(), weights_, error.get());
        break;
    }
    DCRF_CUDA_LAUNCHED("embed_kernel");

    // 2. Insert into a table of at least 2 slots per entry.
    uint64_t cap = 64;
    while (cap < static_cast<uint64_t>(n_entries) * 2) cap <<= 1;
    const uint64_t mask = cap - 1;
    Scratch<int32_t> table(cap, stream, device_);             // [cap] owner entry, -1 empty
    Scratch<int32_t> slot_min(cap, stream, device_);          // [cap] smallest entry
    Scratch<int32_t> entry_slot(n_entries, stream, device_);  // [E]
    DCRF_CUDA_CHECK(cudaMemsetAsync(table.get(), 0xff, cap * sizeof(int32_t), stream));
    fill_kernel<int32_t><<<blocks_for(cap), kThreads, 0, stream>>>(slot_min.get(), cap, INT32_MAX);
    DCRF_CUDA_LAUNCHED("fill_kernel");
    insert_kernel<<<blocks_for(n_entries), kThreads, 0, stream>>>(
        keys.get(), n_entries, d_, seg.get(), n_seg, table.get(), mask, entry_slot.get(), slot_min.get(), error.get());
    DCRF_CUDA_LAUNCHED("insert_kernel");

    // 3. Number the vertices by first appearance.
    Scratch<int32_t> first(n_entries, stream, device_);  // [E] 0/1
    Scratch<int32_t> incl(n_entries, stream, device_);   // [E] inclusive scan
    first_flag_kernel<<<blocks_for(n_entries), kThreads, 0, stream>>>(entry_slot.get(), slot_min.get(), n_entries,
                                                                      first.get());
    DCRF_CUDA_LAUNCHED("first_flag_kernel");
    {
      size_t temp_bytes = 0;
      DCRF_CUDA_CHECK(cub::DeviceScan::InclusiveSum(nullptr, temp_bytes, first.get(), incl.get(),
                                                    static_cast<int>(n_entries), stream));
      Scratch<unsigned char> temp(temp_bytes, stream, device_);
      DCRF_CUDA_CHECK(cub::DeviceScan::InclusiveSum(temp.get(), temp_bytes, first.get(), incl.get(),
                                                    static_cast<int>(n_entries), stream));
    }
    // The one host round trip of the build: the vertex count sizes the rest.
    int32_t host_m = 0;
    int host_error = 0;
    DCRF_CUDA_CHECK(
        cudaMemcpyAsync(&host_m, incl.get() + (n_entries - 1), sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
    DCRF_CUDA_CHECK(cudaMemcpyAsync(&host_error, error.get(), sizeof(int), cudaMemcpyDeviceToHost, stream));
    DCRF_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (host_error & kErrNonFinite) {
      throw InvalidArgument(
          "features must be finite and within the lattice key range (|feature / bandwidth| "
          "up to about 1e8): a NaN, infinite or too large value was found");
    }
    if (host_error & kErrTableFull)
      throw std::runtime_error("CUDA lattice build: hash table overflow (internal error)");
    if (host_m < 1 || host_m > n_entries) {
      throw std::runtime_error("CUDA lattice build: bad vertex count " + std::to_string(host_m) + " (internal error)");
    }
    m_ = host_m;

    Scratch<int32_t> rep(m_, stream, device_);  // [M] first entry of each vertex
    number_kernel<<<blocks_for(n_entries), kThreads, 0, stream>>>(entry_slot.get(), slot_min.get(), incl.get(),
                                                                  first.get(), n_entries, m_, offsets_, rep.get());
    DCRF_CUDA_LAUNCHED("number_kernel");

    // 4. Blur neighbours.
    {
      Slab slab;
      slab.add(&neighbours_, static_cast<size_t>(dp1) * m_ * 2);
      slab.add(&splat_begin_, m_ + 1);
      slab.add(&splat_point_, n_entries);
      slab.add(&splat_entry_, n_entries);
      slab.add(&splat_weight_, n_entries);
      slab.add(&chunk_begin_, m_ + 1);
      slabs_[1] = slab.allocate();
    }
    neighbour_kernel<<<blocks_for(m_ * dp1), kThreads, 0, stream>>>(keys.get(), rep.get(), table.get(), mask, offsets_,
                                                                    seg.get(), n_seg, d_, m_, neighbours_);
    DCRF_CUDA_LAUNCHED("neighbour_kernel");

    // 5. CSR splat lists: stable sort of the entries by vertex.
    {
      // Reuse the scan's buffers: first -> entry ids, incl -> sorted vertex ids.
      iota_kernel<<<blocks_for(n_entries), kThreads, 0, stream>>>(first.get(), n_entries);
      DCRF_CUDA_LAUNCHED("iota_kernel");
      int end_bit = 1;
      while (end_bit < 31 && (int64_t{1} << end_bit) <= m_) ++end_bit;
      size_t temp_bytes = 0;
      DCRF_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, offsets_, incl.get(), first.get(),
                                                      splat_entry_, static_cast<int>(n_entries), 0, end_bit, stream));
      Scratch<unsigned char> temp(temp_bytes, stream, device_);
      DCRF_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.get(), temp_bytes, offsets_, incl.get(), first.get(),
                                                      splat_entry_, static_cast<int>(n_entries), 0, end_bit, stream));
      csr_kernel<<<blocks_for(n_entries), kThreads, 0, stream>>>(incl.get(), splat_entry_, weights_, n_entries, dp1, m_,
                                                                 splat_begin_, splat_point_, splat_weight_);
      DCRF_CUDA_LAUNCHED("csr_kernel");
    }

    // 6. Chunks of the heavy vertices' lists (reusing first/incl as [M] scratch).
    chunk_count_kernel<<<blocks_for(m_), kThreads, 0, stream>>>(splat_begin_, m_, first.get());
    DCRF_CUDA_LAUNCHED("chunk_count_kernel");
    {
      size_t temp_bytes = 0;
      DCRF_CUDA_CHECK(cub::DeviceScan::InclusiveSum(nullptr, temp_bytes, first.get(), chunk_begin_ + 1,
                                                    static_cast<int>(m_), stream));
      Scratch<unsigned char> temp(temp_bytes, stream, device_);
      DCRF_CUDA_CHECK(cub::DeviceScan::InclusiveSum(temp.get(), temp_bytes, first.get(), chunk_begin_ + 1,
                                                    static_cast<int>(m_), stream));
    }
    DCRF_CUDA_CHECK(cudaMemsetAsync(chunk_begin_, 0, sizeof(int32_t), stream));
    int32_t host_chunks = 0;
    DCRF_CUDA_CHECK(cudaMemcpyAsync(&host_chunks, chunk_begin_ + m_, sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
    DCRF_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (host_chunks < 0 || host_chunks > n_entries) {
      throw std::runtime_error("CUDA lattice build: bad chunk count (internal error)");
    }
    n_chunks_ = host_chunks;
    if (n_chunks_ > 0) {
      Slab slab;
      slab.add(&chunk_vertex_, n_chunks_);
      slabs_[2] = slab.allocate();
      chunk_vertex_kernel<<<blocks_for(m_), kThreads, 0, stream>>>(chunk_begin_, m_, chunk_vertex_);
      DCRF_CUDA_LAUNCHED("chunk_vertex_kernel");
    }
    // Scratch buffers are released here, ordered after the kernels above.
  } catch (...) {
    // Wait for the work that may still use the buffers, then free them.
    cudaStreamSynchronize(stream);
    release();
    throw;
  }
}

template <class T>
CudaLatticeT<T>::~CudaLatticeT() {
  release();
}

template <class T>
void CudaLatticeT<T>::release() {
  if (!slabs_[0] && !slabs_[1] && !slabs_[2]) return;
  int prev = 0;
  const bool switched = cudaGetDevice(&prev) == cudaSuccess && prev != device_ && cudaSetDevice(device_) == cudaSuccess;
  for (void*& p : slabs_) slab_free(p);
  if (switched) cudaSetDevice(prev);
  offsets_ = nullptr;
  weights_ = nullptr;
  neighbours_ = nullptr;
  splat_begin_ = nullptr;
  splat_point_ = nullptr;
  splat_entry_ = nullptr;
  splat_weight_ = nullptr;
  chunk_begin_ = nullptr;
  chunk_vertex_ = nullptr;
}

template <class T>
size_t CudaLatticeT<T>::memory_bytes() const {
  const size_t e = static_cast<size_t>(n_) * (d_ + 1);
  if (n_ == 0) return 0;
  return e * (4 + 4 + 4 + 4 + 4) + static_cast<size_t>(d_ + 1) * m_ * 2 * 4 + static_cast<size_t>(m_ + 1) * 12 +
         static_cast<size_t>(n_chunks_) * 4;
}

template <class T>
void CudaLatticeT<T>::zero_rows(T* vals, T* tmp, int channels, void* stream) const {
  DeviceGuard guard(device_);
  DCRF_CUDA_CHECK(cudaMemsetAsync(vals, 0, sizeof(T) * channels, as_stream(stream)));
  DCRF_CUDA_CHECK(cudaMemsetAsync(tmp, 0, sizeof(T) * channels, as_stream(stream)));
}

template <class T>
void CudaLatticeT<T>::splat(const T* in, int channels, const T* pre, T* vals, T* partial, void* stream) const {
  if (n_ == 0 || channels <= 0) return;
  if (n_chunks_ > 0 && !partial) throw std::logic_error("CudaLattice::splat: partial buffer missing");
  DeviceGuard guard(device_);
  if (n_chunks_ > 0) {
    chunk_splat_kernel<<<blocks_for(n_chunks_ * channels), kThreads, 0, as_stream(stream)>>>(
        in, channels, pre, splat_begin_, splat_point_, splat_weight_, chunk_begin_, chunk_vertex_, n_chunks_,
        FastDiv(channels), partial);
    DCRF_CUDA_LAUNCHED("chunk_splat_kernel");
  }
  splat_kernel<<<blocks_for(m_ * channels), kThreads, 0, as_stream(stream)>>>(
      in, channels, pre, splat_begin_, splat_point_, splat_weight_, chunk_begin_, partial, m_, FastDiv(channels), vals);
  DCRF_CUDA_LAUNCHED("splat_kernel");
}

template <class T>
T* CudaLatticeT<T>::blur(T* vals, T* tmp, int channels, bool reverse, void* stream) const {
  if (n_ == 0 || channels <= 0) return vals;
  DeviceGuard guard(device_);
  for (int step = 0; step <= d_; ++step) {
    const int j = reverse ? d_ - step : step;
    const int32_t* nb = neighbours_ + static_cast<size_t>(j) * m_ * 2;
    blur_kernel<<<blocks_for(m_ * channels), kThreads, 0, as_stream(stream)>>>(vals, nb, channels, m_,
                                                                               FastDiv(channels), tmp);
    DCRF_CUDA_LAUNCHED("blur_kernel");
    std::swap(vals, tmp);
  }
  return vals;
}

template <class T>
void CudaLatticeT<T>::slice(const T* vals, int channels, const T* post, T* out, void* stream) const {
  if (n_ == 0 || channels <= 0) return;
  DeviceGuard guard(device_);
  slice_kernel<<<blocks_for(n_ * channels), kThreads, 0, as_stream(stream)>>>(
      vals, channels, post, offsets_, weights_, lattice_alpha_of<T>(d_), d_ + 1, n_, FastDiv(channels), out);
  DCRF_CUDA_LAUNCHED("slice_kernel");
}

template <class T>
void CudaLatticeT<T>::filter(const T* in, T* out, int channels, bool reverse, const T* pre, const T* post,
                             void* stream) const {
  if (n_ == 0 || channels <= 0) return;
  DeviceGuard guard(device_);
  const size_t rows = static_cast<size_t>(m_ + 1) * channels;
  Scratch<T> a(rows, as_stream(stream), device_), b(rows, as_stream(stream), device_);        // [(M+1), C]
  Scratch<T> partial(static_cast<size_t>(n_chunks_) * channels, as_stream(stream), device_);  // [chunks, C]
  zero_rows(a.get(), b.get(), channels, stream);
  splat(in, channels, pre, a.get(), partial.get(), stream);
  const T* res = blur(a.get(), b.get(), channels, reverse, stream);
  slice(res, channels, post, out, stream);
}

// ---------------------------------------------------------------------------
// Pairwise terms and mean field.

template <class T>
CudaPairwiseTermT<T>::CudaPairwiseTermT(std::shared_ptr<const CudaLatticeT<T>> lattice, int normalization,
                                        int compat_kind, std::vector<T> compat, int n_labels, void* stream)
    : lattice_(std::move(lattice)),
      norm_type_(normalization),
      kind_(compat_kind),
      compat_(std::move(compat)),
      k_(n_labels) {
  if (!lattice_) throw InvalidArgument("lattice must not be None");
  check_term_args(kind_, norm_type_, compat_.size(), k_);
  const int64_t n = lattice_->n_points();
  DeviceGuard guard(lattice_->device());
  cudaStream_t s = as_stream(stream);
  try {
    {
      Slab slab;
      slab.add(&compat_dev_, compat_.size());
      slab.add(&norm_, static_cast<size_t>(n));
      slab.add(&scale_, norm_type_ != 0 ? static_cast<size_t>(n) : 0);
      slab_ = slab.allocate();
    }
    upload(compat_dev_, compat_.data(), compat_.size(), s);
    if (n > 0) {
      fill_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(norm_, n, T(1));
      DCRF_CUDA_LAUNCHED("fill_kernel");
      lattice_->filter(norm_, norm_, 1, false, nullptr, nullptr, stream);
      if (norm_type_ != 0) {
        norm_scale_kernel<<<blocks_for(n), kThreads, 0, s>>>(norm_, n, norm_type_ == 3, scale_);
        DCRF_CUDA_LAUNCHED("norm_scale_kernel");
      }
    }
    // compat_ is a pageable host buffer: make sure its copy is done before
    // this object may go away.
    DCRF_CUDA_CHECK(cudaStreamSynchronize(s));
  } catch (...) {
    cudaStreamSynchronize(s);
    slab_free(slab_);
    throw;
  }
}

template <class T>
CudaPairwiseTermT<T>::~CudaPairwiseTermT() {
  int prev = 0;
  const int dev = lattice_ ? lattice_->device() : 0;
  const bool switched = cudaGetDevice(&prev) == cudaSuccess && prev != dev && cudaSetDevice(dev) == cudaSuccess;
  slab_free(slab_);
  if (switched) cudaSetDevice(prev);
}

// Which side of the filter carries the normalisation (as dcrf::PairwiseTerm):
// symmetric both; BEFORE scales the splat of K D^-1 (the slice of its
// adjoint), AFTER the slice of D^-1 K (the splat of its adjoint).
template <class T>
const T* CudaPairwiseTermT<T>::pre_scale(bool transpose) const {
  const bool scaled = norm_type_ == 3 || (!transpose && norm_type_ == 1) || (transpose && norm_type_ == 2);
  return scaled ? scale_ : nullptr;
}

template <class T>
const T* CudaPairwiseTermT<T>::post_scale(bool transpose) const {
  const bool scaled = norm_type_ == 3 || (!transpose && norm_type_ == 2) || (transpose && norm_type_ == 1);
  return scaled ? scale_ : nullptr;
}

template <class T>
void CudaPairwiseTermT<T>::filter(const T* in, T* out, int channels, bool transpose, void* stream) const {
  lattice_->filter(in, out, channels, transpose, pre_scale(transpose), post_scale(transpose), stream);
}

template <class T>
void mean_field(const T* unary, T* q, int64_t n, int k, const std::vector<const CudaPairwiseTermT<T>*>& terms,
                int n_iter, bool fresh, void* stream_ptr) {
  if (n_iter < 0) throw InvalidArgument("n_iter must be >= 0, got " + std::to_string(n_iter));
  if (k < 1) throw InvalidArgument("the number of labels must be >= 1, got " + std::to_string(k));
  if (terms.size() > static_cast<size_t>(kMaxTerms)) {
    throw InvalidArgument("the CUDA backend takes at most " + std::to_string(kMaxTerms) + " pairwise terms, got " +
                          std::to_string(terms.size()));
  }
  int device = 0;
  for (const CudaPairwiseTermT<T>* t : terms) {
    if (!t) throw InvalidArgument("terms must not contain None");
    if (t->lattice().n_points() != n || t->n_labels() != k) {
      throw InvalidArgument("a pairwise term was built for " + std::to_string(t->lattice().n_points()) +
                            " points and " + std::to_string(t->n_labels()) + " labels, the unary has " +
                            std::to_string(n) + " points and " + std::to_string(k) + " labels");
    }
    if (t != terms.front() && t->lattice().device() != terms.front()->lattice().device()) {
      throw InvalidArgument("all pairwise terms must live on the same CUDA device");
    }
    device = terms.front()->lattice().device();
  }
  if (terms.empty()) DCRF_CUDA_CHECK(cudaGetDevice(&device));
  if (n == 0) return;
  DeviceGuard guard(device);
  cudaStream_t stream = as_stream(stream_ptr);
  if (fresh) {
    softmax_neg_kernel<<<blocks_for(n), kThreads, 0, stream>>>(unary, n, k, q);
    DCRF_CUDA_LAUNCHED("softmax_neg_kernel");
  }
  if (n_iter == 0) return;

  // Scratch for all iterations: per term two blur buffers [(M_t+1), K], the
  // splat's chunk sums [chunks_t, K], and [N, K] sliced values for a matrix
  // compatibility.
  const size_t nt = terms.size();
  std::vector<std::unique_ptr<Scratch<T>>> buf_a(nt), buf_b(nt), partial(nt), sliced(nt);
  for (size_t t = 0; t < nt; ++t) {
    const size_t rows = static_cast<size_t>(terms[t]->lattice().n_vertices() + 1) * k;
    buf_a[t].reset(new Scratch<T>(rows, stream, device));
    buf_b[t].reset(new Scratch<T>(rows, stream, device));
    partial[t].reset(new Scratch<T>(static_cast<size_t>(terms[t]->lattice().n_chunks()) * k, stream, device));
    sliced[t].reset(new Scratch<T>(terms[t]->compat_kind() == 2 ? static_cast<size_t>(n) * k : 0, stream, device));
    terms[t]->lattice().zero_rows(buf_a[t]->get(), buf_b[t]->get(), k, stream);
  }

  // Where each term's blurred values end up depends only on d's parity, the
  // same every iteration: the epilogue's arguments are fixed.
  TermsArg<T> args;
  args.count = static_cast<int>(nt);
  std::vector<T*> result(nt);
  for (size_t t = 0; t < nt; ++t) {
    const CudaLatticeT<T>& L = terms[t]->lattice();
    result[t] = (L.dim() + 1) % 2 == 0 ? buf_a[t]->get() : buf_b[t]->get();
    TermArg<T>& a = args.t[t];
    a.vals = result[t];
    a.offsets = L.offsets();
    a.weights = L.weights();
    a.post = terms[t]->post_scale(false);
    a.compat = terms[t]->device_compat();
    a.slice_out = sliced[t]->get();
    a.alpha = lattice_alpha_of<T>(L.dim());
    a.potts = terms[t]->compat()[0];
    a.dp1 = L.dim() + 1;
    a.kind = terms[t]->compat_kind();
  }

  const FastDiv by_k(k);
  for (int it = 0; it < n_iter; ++it) {
    for (size_t t = 0; t < nt; ++t) {
      const CudaLatticeT<T>& L = terms[t]->lattice();
      L.splat(q, k, terms[t]->pre_scale(false), buf_a[t]->get(), partial[t]->get(), stream);
      T* res = L.blur(buf_a[t]->get(), buf_b[t]->get(), k, false, stream);
      if (res != result[t]) throw std::logic_error("CUDA mean field: blur result buffer mismatch");
    }
    logits_kernel<<<blocks_for(n * k), kThreads, 0, stream>>>(unary, args, n, k, by_k, q);
    DCRF_CUDA_LAUNCHED("logits_kernel");
    for (size_t t = 0; t < nt; ++t) {
      if (terms[t]->compat_kind() != 2) continue;
      matrix_message_kernel<<<blocks_for(n * k), kThreads, 0, stream>>>(sliced[t]->get(), terms[t]->device_compat(), n,
                                                                        k, by_k, q);
      DCRF_CUDA_LAUNCHED("matrix_message_kernel");
    }
    softmax_kernel<<<blocks_for(n), kThreads, 0, stream>>>(n, k, q);
    DCRF_CUDA_LAUNCHED("softmax_kernel");
  }
  // Scratch is released stream-ordered: no wait here.
}

// ---------------------------------------------------------------------------
// Layout helpers.

template <class T>
void grid_features(const T* image, T* out, int64_t batch, const std::vector<int64_t>& spatial,
                   const std::vector<T>& sdims, int channels, const std::vector<T>& schan, bool channel_first,
                   int device, void* stream_ptr) {
  const int n_axes = static_cast<int>(spatial.size());
  if (n_axes < 1) throw InvalidArgument("a grid needs at least one spatial axis");
  if (sdims.size() != spatial.size()) throw InvalidArgument("one position bandwidth per spatial axis is needed");
  if (channels < 0 || schan.size() != static_cast<size_t>(channels)) {
    throw InvalidArgument("one colour bandwidth per image channel is needed");
  }
  if (channels > 0 && !image) throw InvalidArgument("image is a null pointer");
  int64_t s = 1;
  for (int64_t len : spatial) {
    if (len < 1) throw InvalidArgument("grid sizes must be >= 1");
    s *= len;
  }
  if (batch < 0) throw InvalidArgument("batch must be >= 0");
  const int64_t n = batch * s;
  if (n == 0) return;
  if (n_axes + channels > kMaxDim) {
    throw InvalidArgument("a grid's features (axes + channels) must number at most " + std::to_string(kMaxDim));
  }
  GridArg<T> g;
  for (int a = 0; a < kMaxDim; ++a) {
    g.shape[a] = a < n_axes ? spatial[a] : 1;
    g.sdims[a] = a < n_axes ? sdims[a] : T(1);
    g.schan[a] = a < channels ? schan[a] : T(1);
  }
  DeviceGuard guard(device);
  grid_features_kernel<<<blocks_for(n), kThreads, 0, as_stream(stream_ptr)>>>(image, n, s, n_axes, g, channels,
                                                                              channel_first, out);
  DCRF_CUDA_LAUNCHED("grid_features_kernel");
}

template <class T>
void unary_from_probs(const T* probs, T* unary, int64_t batch, int64_t s, int k, bool channel_first, T clip,
                      double scale, int device, void* stream) {
  if (batch < 0 || s < 0 || k < 1) throw InvalidArgument("bad probability layout");
  const int64_t total = batch * s * k;
  if (total == 0) return;
  DeviceGuard guard(device);
  unary_kernel<<<blocks_for(total), kThreads, 0, as_stream(stream)>>>(probs, batch, s, k, channel_first, clip, scale,
                                                                      FastDiv(k), FastDiv(s), unary);
  DCRF_CUDA_LAUNCHED("unary_kernel");
}

template <class T>
void copy_labels_layout(const T* q, T* out, int64_t batch, int64_t s, int k, bool channel_first, int device,
                        void* stream) {
  if (batch < 0 || s < 0 || k < 1) throw InvalidArgument("bad probability layout");
  const int64_t total = batch * s * k;
  if (total == 0) return;
  DeviceGuard guard(device);
  layout_kernel<<<blocks_for(total), kThreads, 0, as_stream(stream)>>>(q, batch, s, k, channel_first, FastDiv(k),
                                                                       FastDiv(s), out);
  DCRF_CUDA_LAUNCHED("layout_kernel");
}

// The two scalar types: float (the default, pydensecrf's arithmetic) and
// double (float64 inputs).
template class CudaLatticeT<float>;
template class CudaLatticeT<double>;
template class CudaPairwiseTermT<float>;
template class CudaPairwiseTermT<double>;
#define DCRF_CUDA_INSTANTIATE(T)                                                                                      \
  template void mean_field<T>(const T*, T*, int64_t, int, const std::vector<const CudaPairwiseTermT<T>*>&, int, bool, \
                              void*);                                                                                 \
  template void grid_features<T>(const T*, T*, int64_t, const std::vector<int64_t>&, const std::vector<T>&, int,      \
                                 const std::vector<T>&, bool, int, void*);                                            \
  template void unary_from_probs<T>(const T*, T*, int64_t, int64_t, int, bool, T, double, int, void*);                \
  template void copy_labels_layout<T>(const T*, T*, int64_t, int64_t, int, bool, int, void*);
DCRF_CUDA_INSTANTIATE(float)
DCRF_CUDA_INSTANTIATE(double)
#undef DCRF_CUDA_INSTANTIATE

}  // namespace cuda
}  // namespace dcrf
