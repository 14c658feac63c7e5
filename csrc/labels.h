// Arg-max labels of a probability map.
#pragma once

#include <cstdint>

namespace dcrf {

// out[i] = the index of the largest value of row i of q [n, k], as numpy's
// argmax along the last axis gives it: the first of equal maxima (-0 and +0
// equal), the first NaN where a row has one. With `vectorized`, rows of 2 to
// 16 labels go through AVX2 on CPUs that have it (one row per iteration, no
// dependency between rows); others, and every row with a NaN, through a
// scalar loop. Both give the same labels.
void argmax_rows(const float* q, int64_t n, int64_t k, uint8_t* out, bool vectorized);
void argmax_rows(const float* q, int64_t n, int64_t k, uint16_t* out, bool vectorized);

}  // namespace dcrf
