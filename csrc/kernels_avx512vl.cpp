// Hot loops compiled with AVX-512F/VL on 256-bit vectors only (set by
// CMakeLists.txt on x86-64): the 8-lane code of kernels_avx2.cpp with 32
// vector registers instead of 16 and single-instruction masks. Picked on
// AVX-512 CPUs before Ice Lake (Skylake-SP, Cascade Lake), which lower
// their clock while 512-bit arithmetic runs; kernels_avx512.cpp's 16-lane
// loops are for the others. Same results as both.
#define DCRF_KERNEL_NS kernels_avx512vl
#if defined(__AVX512F__) && defined(__AVX512VL__) && defined(__FMA__)
#define DCRF_KERNEL_NAME "avx512vl+fma (256-bit)"
#else
#define DCRF_KERNEL_NAME "baseline (avx512 not enabled at compile time)"
#endif
#include "kernels_impl.h"
