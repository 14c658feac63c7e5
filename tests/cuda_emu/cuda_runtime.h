// Host emulation of the slice of the CUDA runtime that cuda/lattice_cuda.cu
// uses, for testing the CUDA backend's logic on machines without a GPU.
// Kernels become plain functions (the launch brackets are stripped by
// emulate.py) and run sequentially: blockIdx = threadIdx = 0, blockDim =
// gridDim = 1, so every grid-stride loop visits its whole range in order.
// "Device" memory is host memory. Races cannot be found this way; the logic,
// the indexing and the numerics can.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <unordered_map>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __restrict__ __restrict

struct dcrf_emu_dim3 {
  unsigned x = 0;
};
static const dcrf_emu_dim3 blockIdx{0}, threadIdx{0}, blockDim{1}, gridDim{1};

typedef int cudaError_t;
typedef void* cudaStream_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorNoKernelImageForDevice = 209 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaDeviceAttr {
  cudaDevAttrMemoryPoolsSupported,
  cudaDevAttrComputeCapabilityMajor,
  cudaDevAttrComputeCapabilityMinor
};
struct cudaDeviceProp {
  char name[256];
  int major;
  int minor;
  size_t totalGlobalMem;
};

inline const char* cudaGetErrorName(cudaError_t) { return "cudaErrorEmulated"; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated error"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidValue; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::strcpy(p->name, "host emulation");
  p->major = 0;
  p->minor = 0;
  p->totalGlobalMem = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMemoryPoolsSupported ? 1 : 0;  // compute capability 0.0: the emulation
  return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  *free_bytes = *total = 0;
  return cudaSuccess;
}
// Fresh memory is filled with garbage so that a missing initialisation shows.
inline cudaError_t cudaMalloc(void** p, size_t n) {
  *p = std::malloc(n ? n : 1);
  std::memset(*p, 0xA5, n);
  return *p ? cudaSuccess : cudaErrorInvalidValue;
}
inline cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t) { return cudaMalloc(p, n); }
inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}

// Memory pools: a pool counts the bytes it reserves. Memory freed back to
// it stays reserved (as a pool with an unlimited release threshold keeps
// it) until cudaMemPoolTrimTo; the blocks themselves go back to malloc.
struct dcrf_emu_pool {
  size_t reserved = 0;  // bytes of live blocks plus freed, kept ones
  size_t live = 0;
  uint64_t release_threshold = 0;
};
typedef dcrf_emu_pool* cudaMemPool_t;
enum cudaMemAllocationType { cudaMemAllocationTypePinned = 1 };
enum cudaMemLocationType { cudaMemLocationTypeDevice = 1 };
enum cudaMemPoolAttr { cudaMemPoolAttrReleaseThreshold, cudaMemPoolAttrReservedMemCurrent };
struct cudaMemLocation {
  cudaMemLocationType type;
  int id;
};
struct cudaMemPoolProps {
  cudaMemAllocationType allocType;
  int handleTypes;
  cudaMemLocation location;
};
struct dcrf_emu_block {
  cudaMemPool_t pool;
  size_t bytes;
};
inline std::unordered_map<void*, dcrf_emu_block>& dcrf_emu_blocks() {
  static std::unordered_map<void*, dcrf_emu_block> blocks;
  return blocks;
}
inline cudaError_t cudaMemPoolCreate(cudaMemPool_t* pool, const cudaMemPoolProps* props) {
  if (props->location.type != cudaMemLocationTypeDevice || props->location.id != 0) return cudaErrorInvalidValue;
  *pool = new dcrf_emu_pool();
  return cudaSuccess;
}
inline cudaError_t cudaMemPoolDestroy(cudaMemPool_t pool) {
  delete pool;
  return cudaSuccess;
}
inline cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  if (attr != cudaMemPoolAttrReleaseThreshold) return cudaErrorInvalidValue;
  pool->release_threshold = *static_cast<uint64_t*>(value);
  return cudaSuccess;
}
inline cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value) {
  *static_cast<uint64_t*>(value) = attr == cudaMemPoolAttrReservedMemCurrent ? pool->reserved : pool->release_threshold;
  return cudaSuccess;
}
inline cudaError_t cudaMallocFromPoolAsync(void** p, size_t n, cudaMemPool_t pool, cudaStream_t s) {
  const cudaError_t e = cudaMalloc(p, n);
  if (e != cudaSuccess) return e;
  dcrf_emu_blocks()[*p] = {pool, n};
  pool->live += n;
  pool->reserved = std::max(pool->reserved, pool->live);  // a free block is reused before the pool grows
  return cudaSuccess;
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  auto& blocks = dcrf_emu_blocks();
  auto it = blocks.find(p);
  if (it != blocks.end()) {
    it->second.pool->live -= it->second.bytes;
    if (it->second.pool->release_threshold == 0) it->second.pool->reserved = it->second.pool->live;
    blocks.erase(it);
  }
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t keep) {
  pool->reserved = std::max(pool->live, std::min(pool->reserved, keep));
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) {
  std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) {
  std::memcpy(d, s, n);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
typedef struct dcrf_emu_event* cudaEvent_t;
inline cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = reinterpret_cast<cudaEvent_t>(new char[1]);
  return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete[] reinterpret_cast<char*>(e);
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
  *ms = 0.0f;
  return cudaSuccess;
}

inline int atomicCAS(int* p, int cmp, int val) {
  const int old = *p;
  if (old == cmp) *p = val;
  return old;
}
inline int atomicMin(int* p, int v) {
  const int old = *p;
  *p = std::min(old, v);
  return old;
}
inline int atomicOr(int* p, int v) {
  const int old = *p;
  *p = old | v;
  return old;
}
