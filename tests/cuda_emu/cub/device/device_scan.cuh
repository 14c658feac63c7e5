#pragma once
#include "../../cuda_runtime.h"
namespace cub {
struct DeviceScan {
  template <class T>
  static cudaError_t InclusiveSum(void* temp, size_t& bytes, const T* in, T* out, int n, cudaStream_t) {
    if (!temp) {
      bytes = 16;
      return cudaSuccess;
    }
    T run = 0;
    for (int i = 0; i < n; ++i) {
      run += in[i];
      out[i] = run;
    }
    return cudaSuccess;
  }
};
}  // namespace cub
