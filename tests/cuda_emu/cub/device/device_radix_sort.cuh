#pragma once
#include "../../cuda_runtime.h"
namespace cub {
struct DeviceRadixSort {
  // Stable sort of (key, value) pairs by the key bits [begin_bit, end_bit).
  template <class K, class V>
  static cudaError_t SortPairs(void* temp, size_t& bytes, const K* kin, K* kout, const V* vin, V* vout, int n,
                               int begin_bit, int end_bit, cudaStream_t) {
    if (!temp) {
      bytes = 16;
      return cudaSuccess;
    }
    const unsigned long long mask = ((end_bit >= 64 ? ~0ull : ((1ull << end_bit) - 1)) >> begin_bit) << begin_bit;
    std::vector<int> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) {
      return (static_cast<unsigned long long>(static_cast<unsigned>(kin[a])) & mask) <
             (static_cast<unsigned long long>(static_cast<unsigned>(kin[b])) & mask);
    });
    std::vector<K> ko(n);
    std::vector<V> vo(n);
    for (int i = 0; i < n; ++i) {
      ko[i] = kin[idx[i]];
      vo[i] = vin[idx[i]];
    }
    std::copy(ko.begin(), ko.end(), kout);
    std::copy(vo.begin(), vo.end(), vout);
    return cudaSuccess;
  }
};
}  // namespace cub
