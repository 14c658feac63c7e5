// Hot loops compiled with AVX-512F/VL (set by CMakeLists.txt on x86-64):
// the 8-lane code of kernels_avx2.cpp with 32 vector registers instead of
// 16 and single-instruction masks, and for rows of 9-32 channels mean
// field's splat, blur and fused pass on 16-lane vectors (kernels_wide.h).
// The same arithmetic lane by lane and the same order of reductions, so
// the same results.
#define DCRF_KERNEL_NS kernels_avx512
#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__FMA__)
#define DCRF_KERNEL_NAME "avx512f+fma (512-bit rows)"
#define DCRF_WIDE_ROWS 1
#else
#define DCRF_KERNEL_NAME "baseline (avx512 not enabled at compile time)"
#endif
#include "kernels_impl.h"
