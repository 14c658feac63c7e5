// Hot loops compiled with AVX-512F/VL on 256-bit vectors (set by
// CMakeLists.txt on x86-64): the same 8-lane code as kernels_avx2.cpp with
// 32 vector registers instead of 16 (fewer spills in the fused epilogue)
// and single-instruction masks; the same arithmetic, so the same results.
#define DCRF_KERNEL_NS kernels_avx512
#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__FMA__)
#define DCRF_KERNEL_NAME "avx512vl+fma (256-bit)"
#else
#define DCRF_KERNEL_NAME "baseline (avx512 not enabled at compile time)"
#endif
#include "kernels_impl.h"
