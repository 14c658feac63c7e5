// The CUDA bindings over the host emulation (see cuda_runtime.h here).
#include <pybind11/pybind11.h>

#include "lattice.h"

void register_cuda(pybind11::module_& m);

PYBIND11_MODULE(DCRF_EMU_MODULE, m) {
  m.doc() = "densecrf CUDA backend compiled for the host emulation (tests only)";
  pybind11::register_exception<dcrf::InvalidArgument>(m, "NativeValueError", PyExc_ValueError);
  register_cuda(m);
}
