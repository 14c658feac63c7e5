// The AVX-512 build's 16-lane loops (kernels_wide.h) compiled for AVX2 + FMA,
// each 16-lane operation split in two by the compiler: never picked by
// default, only with DENSECRF_KERNELS=avx2-wide, so that machines without
// AVX-512 (CI among them) can check that those loops give the 8-lane
// loops' bits. Slower than kernels_avx2.cpp; not for use.
#define DCRF_KERNEL_NS kernels_avx2wide
#if defined(__AVX2__) && defined(__FMA__)
#define DCRF_KERNEL_NAME "avx2+fma (512-bit rows on 256-bit vectors, test build)"
#define DCRF_WIDE_ROWS 1
#else
#define DCRF_KERNEL_NAME "baseline (avx2 not enabled at compile time)"
#endif
#include "kernels_impl.h"
