// pybind11 bindings of the CUDA backend (compiled by g++; no CUDA header).
//
// Device arrays cross this layer as integers: a device pointer (uintptr_t),
// sizes, the CUDA device ordinal and the caller's stream (the cudaStream_t
// handle as an integer, e.g. torch.cuda.current_stream().cuda_stream; 0 is
// the legacy default stream). The Python layer (densecrf/cuda.py) checks
// shapes, dtypes, devices and contiguity; the checks here are the native
// layer's own preconditions. Work is enqueued on the stream; the calls
// return without waiting except where stated.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "lattice.h"
#include "lattice_cuda.h"

namespace py = pybind11;
using dcrf::cuda::CudaLattice;
using dcrf::cuda::CudaPairwiseTerm;
using dcrf::cuda::DeviceBuffer;

namespace {

void* as_ptr(uintptr_t p) { return reinterpret_cast<void*>(p); }
float* as_fptr(uintptr_t p) { return reinterpret_cast<float*>(p); }

void require_ptr(uintptr_t p, const char* name) {
  if (p == 0) throw dcrf::InvalidArgument(std::string(name) + " is a null device pointer");
}

std::shared_ptr<CudaLattice> make_lattice(uintptr_t features, int64_t n_points, int dim, std::vector<int64_t> segments,
                                          int device, uintptr_t stream) {
  if (n_points > 0) require_ptr(features, "features");
  py::gil_scoped_release nogil;
  return std::make_shared<CudaLattice>(reinterpret_cast<const float*>(features), n_points, dim, segments, device,
                                       as_ptr(stream));
}

void lattice_filter(const CudaLattice& lat, uintptr_t in, uintptr_t out, int channels, bool transpose, uintptr_t pre,
                    uintptr_t post, uintptr_t stream) {
  if (channels < 0) throw dcrf::InvalidArgument("channels must be >= 0, got " + std::to_string(channels));
  if (lat.n_points() == 0 || channels == 0) return;
  require_ptr(in, "values");
  require_ptr(out, "out");
  py::gil_scoped_release nogil;
  lat.filter(as_fptr(in), as_fptr(out), channels, transpose, as_fptr(pre), as_fptr(post), as_ptr(stream));
}

std::shared_ptr<CudaPairwiseTerm> make_term(std::shared_ptr<CudaLattice> lat, int normalization, int compat_kind,
                                            py::array_t<float, py::array::c_style | py::array::forcecast> compat,
                                            int n_labels, uintptr_t stream) {
  std::vector<float> c(compat.data(), compat.data() + compat.size());
  py::gil_scoped_release nogil;
  return std::make_shared<CudaPairwiseTerm>(std::move(lat), normalization, compat_kind, std::move(c), n_labels,
                                            as_ptr(stream));
}

void term_filter(const CudaPairwiseTerm& t, uintptr_t in, uintptr_t out, int channels, bool transpose,
                 uintptr_t stream) {
  if (channels < 0) throw dcrf::InvalidArgument("channels must be >= 0, got " + std::to_string(channels));
  if (t.lattice().n_points() == 0 || channels == 0) return;
  require_ptr(in, "values");
  require_ptr(out, "out");
  py::gil_scoped_release nogil;
  t.filter(as_fptr(in), as_fptr(out), channels, transpose, as_ptr(stream));
}

void mean_field(uintptr_t unary, uintptr_t q, int64_t n, int k,
                const std::vector<std::shared_ptr<CudaPairwiseTerm>>& terms, int n_iter, bool fresh, uintptr_t stream) {
  if (n < 0) throw dcrf::InvalidArgument("n must be >= 0, got " + std::to_string(n));
  std::vector<const CudaPairwiseTerm*> ptrs;
  for (const auto& t : terms) {
    if (!t) throw dcrf::InvalidArgument("terms must not contain None");
    ptrs.push_back(t.get());
  }
  if (n > 0) {
    require_ptr(unary, "unary");
    require_ptr(q, "Q");
  }
  py::gil_scoped_release nogil;
  dcrf::cuda::mean_field(reinterpret_cast<const float*>(unary), as_fptr(q), n, k, ptrs, n_iter, fresh, as_ptr(stream));
}

std::shared_ptr<DeviceBuffer> make_buffer(size_t nbytes, int device) {
  py::gil_scoped_release nogil;
  return std::make_shared<DeviceBuffer>(nbytes, device);
}

void buffer_upload(DeviceBuffer& b, py::array host, uintptr_t stream) {
  if (!(host.flags() & py::array::c_style)) throw dcrf::InvalidArgument("host array must be C-contiguous");
  const size_t nbytes = static_cast<size_t>(host.nbytes());
  const void* src = host.data();
  py::gil_scoped_release nogil;
  b.copy_from_host(src, nbytes, as_ptr(stream));
}

void buffer_download(const DeviceBuffer& b, py::array host, uintptr_t stream) {
  if (!(host.flags() & py::array::c_style) || !host.writeable()) {
    throw dcrf::InvalidArgument("host array must be C-contiguous and writeable");
  }
  const size_t nbytes = static_cast<size_t>(host.nbytes());
  void* dst = host.mutable_data();
  py::gil_scoped_release nogil;
  b.copy_to_host(dst, nbytes, as_ptr(stream));
}

}  // namespace

void register_cuda(py::module_& m) {
  m.def("cuda_device_count", &dcrf::cuda::device_count,
        "Number of visible CUDA devices (0 without a driver or device; never raises).");
  m.def(
      "cuda_device_name",
      [](int device) {
        dcrf::cuda::DeviceInfo info{};
        dcrf::cuda::device_info(device, &info);
        std::ostringstream s;
        s << info.name << " (sm_" << info.major << info.minor << ", " << info.total_gib << " GiB)";
        return s.str();
      },
      py::arg("device") = 0);

  m.def(
      "cuda_synchronize",
      [](int device) {
        py::gil_scoped_release nogil;
        dcrf::cuda::synchronize(device);
      },
      py::arg("device") = 0, "Waits for all work on the device.");

  py::class_<dcrf::cuda::EventTimer>(m, "CudaEventTimer")
      .def(py::init<int>(), py::arg("device") = 0)
      .def(
          "start", [](dcrf::cuda::EventTimer& t, uintptr_t stream) { t.start(as_ptr(stream)); }, py::arg("stream") = 0)
      .def(
          "stop", [](dcrf::cuda::EventTimer& t, uintptr_t stream) { t.stop(as_ptr(stream)); }, py::arg("stream") = 0)
      .def(
          "elapsed_ms",
          [](const dcrf::cuda::EventTimer& t) {
            py::gil_scoped_release nogil;
            return t.elapsed_ms();
          },
          "Milliseconds between start and stop (waits for stop).");

  py::class_<DeviceBuffer, std::shared_ptr<DeviceBuffer>>(m, "CudaBuffer")
      .def(py::init(&make_buffer), py::arg("nbytes"), py::arg("device") = 0)
      .def_property_readonly("ptr", [](const DeviceBuffer& b) { return reinterpret_cast<uintptr_t>(b.data()); })
      .def_property_readonly("nbytes", &DeviceBuffer::nbytes)
      .def_property_readonly("device", &DeviceBuffer::device)
      .def("upload", &buffer_upload, py::arg("host"), py::arg("stream") = 0,
           "Copies a C-contiguous host array into the buffer; waits for the copy.")
      .def("download", &buffer_download, py::arg("host"), py::arg("stream") = 0,
           "Copies the buffer into a C-contiguous writeable host array; waits for the stream.");

  py::class_<CudaLattice, std::shared_ptr<CudaLattice>>(m, "CudaLattice")
      .def(py::init(&make_lattice), py::arg("features"), py::arg("n_points"), py::arg("dim"),
           py::arg("segments") = std::vector<int64_t>(), py::arg("device") = 0, py::arg("stream") = 0)
      .def_property_readonly("n_points", &CudaLattice::n_points)
      .def_property_readonly("dim", &CudaLattice::dim)
      .def_property_readonly("n_vertices", &CudaLattice::n_vertices)
      .def_property_readonly("n_segments", &CudaLattice::n_segments)
      .def_property_readonly("n_chunks", &CudaLattice::n_chunks)
      .def_property_readonly("device", &CudaLattice::device)
      .def_property_readonly("memory_bytes", &CudaLattice::memory_bytes)
      .def("filter", &lattice_filter, py::arg("values"), py::arg("out"), py::arg("channels"),
           py::arg("transpose") = false, py::arg("pre") = 0, py::arg("post") = 0, py::arg("stream") = 0);

  py::class_<CudaPairwiseTerm, std::shared_ptr<CudaPairwiseTerm>>(m, "CudaPairwiseTerm")
      .def(py::init(&make_term), py::arg("lattice"), py::arg("normalization"), py::arg("compat_kind"),
           py::arg("compat"), py::arg("n_labels"), py::arg("stream") = 0)
      .def_property_readonly("norm_ptr",
                             [](const CudaPairwiseTerm& t) { return reinterpret_cast<uintptr_t>(t.norm()); })
      .def("filter", &term_filter, py::arg("values"), py::arg("out"), py::arg("channels"), py::arg("transpose") = false,
           py::arg("stream") = 0);

  m.def("cuda_mean_field", &mean_field, py::arg("unary"), py::arg("Q"), py::arg("n"), py::arg("k"), py::arg("terms"),
        py::arg("n_iter"), py::arg("fresh"), py::arg("stream") = 0);

  m.def(
      "cuda_grid_features",
      [](uintptr_t image, uintptr_t out, int64_t batch, std::vector<int64_t> spatial, std::vector<float> sdims,
         int channels, std::vector<float> schan, bool channel_first, int device, uintptr_t stream) {
        require_ptr(out, "out");
        py::gil_scoped_release nogil;
        dcrf::cuda::grid_features(reinterpret_cast<const float*>(image), as_fptr(out), batch, spatial, sdims, channels,
                                  schan, channel_first, device, as_ptr(stream));
      },
      py::arg("image"), py::arg("out"), py::arg("batch"), py::arg("spatial"), py::arg("sdims"), py::arg("channels"),
      py::arg("schan"), py::arg("channel_first") = false, py::arg("device") = 0, py::arg("stream") = 0);

  m.def(
      "cuda_unary_from_probs",
      [](uintptr_t probs, uintptr_t unary, int64_t batch, int64_t s, int k, bool channel_first, float clip,
         double scale, int device, uintptr_t stream) {
        require_ptr(probs, "probs");
        require_ptr(unary, "unary");
        py::gil_scoped_release nogil;
        dcrf::cuda::unary_from_probs(reinterpret_cast<const float*>(probs), as_fptr(unary), batch, s, k, channel_first,
                                     clip, scale, device, as_ptr(stream));
      },
      py::arg("probs"), py::arg("unary"), py::arg("batch"), py::arg("s"), py::arg("k"), py::arg("channel_first"),
      py::arg("clip"), py::arg("scale"), py::arg("device") = 0, py::arg("stream") = 0);

  m.def(
      "cuda_copy_labels_layout",
      [](uintptr_t q, uintptr_t out, int64_t batch, int64_t s, int k, bool channel_first, int device,
         uintptr_t stream) {
        require_ptr(q, "Q");
        require_ptr(out, "out");
        py::gil_scoped_release nogil;
        dcrf::cuda::copy_labels_layout(reinterpret_cast<const float*>(q), as_fptr(out), batch, s, k, channel_first,
                                       device, as_ptr(stream));
      },
      py::arg("Q"), py::arg("out"), py::arg("batch"), py::arg("s"), py::arg("k"), py::arg("channel_first"),
      py::arg("device") = 0, py::arg("stream") = 0);
}
