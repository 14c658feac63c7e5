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
#include <list>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "lattice.h"
#include "lattice_cuda.h"

namespace py = pybind11;
using dcrf::cuda::CudaLatticeT;
using dcrf::cuda::CudaPairwiseTermT;
using dcrf::cuda::DeviceBuffer;

namespace {

void* as_ptr(uintptr_t p) { return reinterpret_cast<void*>(p); }
template <class T>
T* as_tptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

void require_ptr(uintptr_t p, const char* name) {
  if (p == 0) throw dcrf::InvalidArgument(std::string(name) + " is a null device pointer");
}

// Everything below is a template over the scalar type T (float, or double
// for float64 inputs), registered twice by register_scalar.
template <class T>
std::shared_ptr<CudaLatticeT<T>> make_lattice(uintptr_t features, int64_t n_points, int dim,
                                              std::vector<int64_t> segments, int device, uintptr_t stream) {
  if (n_points > 0) require_ptr(features, "features");
  py::gil_scoped_release nogil;
  return std::make_shared<CudaLatticeT<T>>(as_tptr<const T>(features), n_points, dim, segments, device, as_ptr(stream));
}

template <class T>
void lattice_filter(const CudaLatticeT<T>& lat, uintptr_t in, uintptr_t out, int channels, bool transpose,
                    uintptr_t pre, uintptr_t post, uintptr_t stream) {
  if (channels < 0) throw dcrf::InvalidArgument("channels must be >= 0, got " + std::to_string(channels));
  if (lat.n_points() == 0 || channels == 0) return;
  require_ptr(in, "values");
  require_ptr(out, "out");
  py::gil_scoped_release nogil;
  lat.filter(as_tptr<const T>(in), as_tptr<T>(out), channels, transpose, as_tptr<const T>(pre), as_tptr<const T>(post),
             as_ptr(stream));
}

template <class T>
std::shared_ptr<CudaPairwiseTermT<T>> make_term(std::shared_ptr<CudaLatticeT<T>> lat, int normalization,
                                                int compat_kind,
                                                py::array_t<T, py::array::c_style | py::array::forcecast> compat,
                                                int n_labels, uintptr_t stream) {
  std::vector<T> c(compat.data(), compat.data() + compat.size());
  py::gil_scoped_release nogil;
  return std::make_shared<CudaPairwiseTermT<T>>(std::move(lat), normalization, compat_kind, std::move(c), n_labels,
                                                as_ptr(stream));
}

template <class T>
void term_filter(const CudaPairwiseTermT<T>& t, uintptr_t in, uintptr_t out, int channels, bool transpose,
                 uintptr_t stream) {
  if (channels < 0) throw dcrf::InvalidArgument("channels must be >= 0, got " + std::to_string(channels));
  if (t.lattice().n_points() == 0 || channels == 0) return;
  require_ptr(in, "values");
  require_ptr(out, "out");
  py::gil_scoped_release nogil;
  t.filter(as_tptr<const T>(in), as_tptr<T>(out), channels, transpose, as_ptr(stream));
}

template <class T>
void mean_field(uintptr_t unary, uintptr_t q, int64_t n, int k,
                const std::vector<std::shared_ptr<CudaPairwiseTermT<T>>>& terms, int n_iter, bool fresh,
                uintptr_t stream) {
  if (n < 0) throw dcrf::InvalidArgument("n must be >= 0, got " + std::to_string(n));
  std::vector<const CudaPairwiseTermT<T>*> ptrs;
  for (const auto& t : terms) {
    if (!t) throw dcrf::InvalidArgument("terms must not contain None");
    ptrs.push_back(t.get());
  }
  if (n > 0) {
    require_ptr(unary, "unary");
    require_ptr(q, "Q");
  }
  py::gil_scoped_release nogil;
  dcrf::cuda::mean_field<T>(as_tptr<const T>(unary), as_tptr<T>(q), n, k, ptrs, n_iter, fresh, as_ptr(stream));
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

// The lattice, term, mean-field and layout bindings of one scalar type: the
// float ones under their plain names, the double ones with the suffix "64"
// (CudaLattice64, cuda_mean_field64, ...). Device pointers are T*.
template <class T>
void register_scalar(py::module_& m, const std::string& suffix) {
  // Names live as long as the module (pybind11 may keep the pointer).
  static std::list<std::string> names;
  auto name = [&suffix](const char* base) {
    names.push_back(std::string(base) + suffix);
    return names.back().c_str();
  };
  py::class_<CudaLatticeT<T>, std::shared_ptr<CudaLatticeT<T>>>(m, name("CudaLattice"))
      .def(py::init(&make_lattice<T>), py::arg("features"), py::arg("n_points"), py::arg("dim"),
           py::arg("segments") = std::vector<int64_t>(), py::arg("device") = 0, py::arg("stream") = 0)
      .def_property_readonly("n_points", &CudaLatticeT<T>::n_points)
      .def_property_readonly("dim", &CudaLatticeT<T>::dim)
      .def_property_readonly("n_vertices", &CudaLatticeT<T>::n_vertices)
      .def_property_readonly("n_segments", &CudaLatticeT<T>::n_segments)
      .def_property_readonly("n_chunks", &CudaLatticeT<T>::n_chunks)
      .def_property_readonly("device", &CudaLatticeT<T>::device)
      .def_property_readonly("memory_bytes", &CudaLatticeT<T>::memory_bytes)
      .def("filter", &lattice_filter<T>, py::arg("values"), py::arg("out"), py::arg("channels"),
           py::arg("transpose") = false, py::arg("pre") = 0, py::arg("post") = 0, py::arg("stream") = 0);

  py::class_<CudaPairwiseTermT<T>, std::shared_ptr<CudaPairwiseTermT<T>>>(m, name("CudaPairwiseTerm"))
      .def(py::init(&make_term<T>), py::arg("lattice"), py::arg("normalization"), py::arg("compat_kind"),
           py::arg("compat"), py::arg("n_labels"), py::arg("stream") = 0)
      .def_property_readonly("norm_ptr",
                             [](const CudaPairwiseTermT<T>& t) { return reinterpret_cast<uintptr_t>(t.norm()); })
      .def("filter", &term_filter<T>, py::arg("values"), py::arg("out"), py::arg("channels"),
           py::arg("transpose") = false, py::arg("stream") = 0);

  m.def(name("cuda_mean_field"), &mean_field<T>, py::arg("unary"), py::arg("Q"), py::arg("n"), py::arg("k"),
        py::arg("terms"), py::arg("n_iter"), py::arg("fresh"), py::arg("stream") = 0);

  m.def(
      name("cuda_grid_features"),
      [](uintptr_t image, uintptr_t out, int64_t batch, std::vector<int64_t> spatial, std::vector<T> sdims,
         int channels, std::vector<T> schan, bool channel_first, int device, uintptr_t stream) {
        require_ptr(out, "out");
        py::gil_scoped_release nogil;
        dcrf::cuda::grid_features<T>(as_tptr<const T>(image), as_tptr<T>(out), batch, spatial, sdims, channels, schan,
                                     channel_first, device, as_ptr(stream));
      },
      py::arg("image"), py::arg("out"), py::arg("batch"), py::arg("spatial"), py::arg("sdims"), py::arg("channels"),
      py::arg("schan"), py::arg("channel_first") = false, py::arg("device") = 0, py::arg("stream") = 0);

  m.def(
      name("cuda_unary_from_probs"),
      [](uintptr_t probs, uintptr_t unary, int64_t batch, int64_t s, int k, bool channel_first, T clip, double scale,
         int device, uintptr_t stream) {
        require_ptr(probs, "probs");
        require_ptr(unary, "unary");
        py::gil_scoped_release nogil;
        dcrf::cuda::unary_from_probs<T>(as_tptr<const T>(probs), as_tptr<T>(unary), batch, s, k, channel_first, clip,
                                        scale, device, as_ptr(stream));
      },
      py::arg("probs"), py::arg("unary"), py::arg("batch"), py::arg("s"), py::arg("k"), py::arg("channel_first"),
      py::arg("clip"), py::arg("scale"), py::arg("device") = 0, py::arg("stream") = 0);

  m.def(
      name("cuda_copy_labels_layout"),
      [](uintptr_t q, uintptr_t out, int64_t batch, int64_t s, int k, bool channel_first, int device,
         uintptr_t stream) {
        require_ptr(q, "Q");
        require_ptr(out, "out");
        py::gil_scoped_release nogil;
        dcrf::cuda::copy_labels_layout<T>(as_tptr<const T>(q), as_tptr<T>(out), batch, s, k, channel_first, device,
                                          as_ptr(stream));
      },
      py::arg("Q"), py::arg("out"), py::arg("batch"), py::arg("s"), py::arg("k"), py::arg("channel_first"),
      py::arg("device") = 0, py::arg("stream") = 0);
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

  m.def("cuda_scratch_reserved", &dcrf::cuda::scratch_reserved, py::arg("device") = 0,
        "Bytes held by densecrf's scratch memory pool on the device.");
  m.def(
      "cuda_empty_cache",
      [](int device) {
        py::gil_scoped_release nogil;
        dcrf::cuda::empty_cache(device);
      },
      py::arg("device") = 0, "Waits for the device, then releases the scratch pool's unused memory.");
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

  register_scalar<float>(m, "");
  register_scalar<double>(m, "64");
}
