// Hot loops for the x86-64 baseline (or any other architecture).
#define DCRF_KERNEL_NS kernels_base
#define DCRF_KERNEL_NAME "baseline"
#include "kernels_impl.h"
