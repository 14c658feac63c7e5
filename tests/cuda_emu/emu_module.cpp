// The CUDA bindings over the host emulation (see cuda_runtime.h here).
#include <pybind11/pybind11.h>

#include <pybind11/stl.h>

#include <vector>

#include "fast_div.h"
#include "lattice.h"

void register_cuda(pybind11::module_& m);

PYBIND11_MODULE(DCRF_EMU_MODULE, m) {
  m.doc() = "densecrf CUDA backend compiled for the host emulation (tests only)";
  pybind11::register_exception<dcrf::InvalidArgument>(m, "NativeValueError", PyExc_ValueError);
  register_cuda(m);
  // The kernels' divisions (cuda/fast_div.h), on the host: floor(n / d) for each n.
  m.def("_fast_div", [](int64_t d, const std::vector<int64_t>& ns) {
    const dcrf::cuda::FastDiv f(d);
    std::vector<int64_t> out;
    out.reserve(ns.size());
    for (int64_t n : ns) out.push_back(f.div(n));
    return out;
  });
  // Whether FastDiv(d) takes the multiply-high path (DENSECRF_CUDA_PLAIN_DIV=1 turns it off).
  m.def("_fast_div_is_fast", [](int64_t d) { return dcrf::cuda::FastDiv(d).fast; });
}
