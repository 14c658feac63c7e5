// Hot loops compiled with -mavx2 -mfma (set by CMakeLists.txt on x86-64).
#define DCRF_KERNEL_NS kernels_avx2
#if defined(__AVX2__) && defined(__FMA__)
#define DCRF_KERNEL_NAME "avx2+fma"
#else
#define DCRF_KERNEL_NAME "baseline (avx2 not enabled at compile time)"
#endif
#include "kernels_impl.h"
