// pybind11 bindings: numpy arrays in, raw pointers and sizes to the core,
// numpy arrays out. Python (densecrf/) validates arguments first; the checks
// here are the native layer's own preconditions, so that a direct call of
// densecrf._C with a bad shape raises instead of crashing.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "crf.h"
#include "embed.h"
#include "half.h"
#include "kernels.h"
#include "labels.h"
#include "lattice.h"
#include "lattice_f64.h"
#include "parallel.h"

namespace py = pybind11;
using dcrf::CpuLattice;
using dcrf::PairwiseTerm;

namespace {

using FArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
// float64 arrays, C-contiguous: never a silent cast to or from float32 (the
// Python layer picks the lattice by dtype and converts explicitly).
using DArray = py::array_t<double, py::array::c_style>;

std::string shape_str(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  if (a.ndim() == 1) s << ",";
  s << ")";
  return s.str();
}

void require_2d(const py::array& a, const char* name, int64_t rows, int64_t cols) {
  if (a.ndim() != 2 || (rows >= 0 && a.shape(0) != rows) || (cols >= 0 && a.shape(1) != cols)) {
    std::ostringstream s;
    s << name << " must have shape (" << (rows >= 0 ? std::to_string(rows) : "N") << ", "
      << (cols >= 0 ? std::to_string(cols) : "C") << "), got " << shape_str(a);
    throw dcrf::InvalidArgument(s.str());
  }
}

std::shared_ptr<CpuLattice> make_lattice(FArray features, int threads, const std::string& table) {
  require_2d(features, "features", -1, -1);
  dcrf::LatticeTable kind;
  if (table == "auto") {
    kind = dcrf::LatticeTable::kAuto;
  } else if (table == "packed") {
    kind = dcrf::LatticeTable::kPacked;
  } else if (table == "general") {
    kind = dcrf::LatticeTable::kGeneral;
  } else {
    throw dcrf::InvalidArgument("_table must be 'auto', 'packed' or 'general', got '" + table + "'");
  }
  const int64_t n = features.shape(0);
  const int64_t d = features.shape(1);
  if (d < 1 || d > dcrf::kMaxDim) {
    throw dcrf::InvalidArgument("features must have 1 to " + std::to_string(dcrf::kMaxDim) + " columns, got shape " +
                                shape_str(features));
  }
  const float* ptr = features.data();
  py::gil_scoped_release nogil;
  return std::make_shared<CpuLattice>(ptr, n, static_cast<int>(d), threads, kind);
}

py::array_t<float> lattice_filter(const CpuLattice& lat, FArray values, bool transpose, int threads) {
  require_2d(values, "values", lat.n_points(), -1);
  const int64_t c = values.shape(1);
  py::array_t<float> out({static_cast<py::ssize_t>(lat.n_points()), static_cast<py::ssize_t>(c)});
  if (c > 0 && lat.n_points() > 0) {
    const float* in = values.data();
    float* o = out.mutable_data();
    py::gil_scoped_release nogil;
    lat.filter(in, o, static_cast<int>(c), transpose, threads);
  }
  return out;
}

std::shared_ptr<dcrf::CpuLattice64> make_lattice64(DArray features, int threads) {
  require_2d(features, "features", -1, -1);
  const int64_t n = features.shape(0);
  const int64_t d = features.shape(1);
  if (d < 1 || d > dcrf::kMaxDim) {
    throw dcrf::InvalidArgument("features must have 1 to " + std::to_string(dcrf::kMaxDim) + " columns, got shape " +
                                shape_str(features));
  }
  const double* ptr = features.data();
  py::gil_scoped_release nogil;
  return std::make_shared<dcrf::CpuLattice64>(ptr, n, static_cast<int>(d), threads);
}

py::array_t<double> lattice64_filter(const dcrf::CpuLattice64& lat, DArray values, bool transpose, int threads) {
  require_2d(values, "values", lat.n_points(), -1);
  const int64_t c = values.shape(1);
  py::array_t<double> out({static_cast<py::ssize_t>(lat.n_points()), static_cast<py::ssize_t>(c)});
  if (c > 0 && lat.n_points() > 0) {
    const double* in = values.data();
    double* o = out.mutable_data();
    py::gil_scoped_release nogil;
    lat.filter(in, o, static_cast<int>(c), transpose, threads);
  }
  return out;
}

std::shared_ptr<PairwiseTerm> make_term(std::shared_ptr<CpuLattice> lat, int normalization, int compat_kind,
                                        FArray compat, int n_labels, int threads) {
  // Arguments checked by the constructor (check_term_args).
  std::vector<float> c(compat.data(), compat.data() + compat.size());
  py::gil_scoped_release nogil;
  return std::make_shared<PairwiseTerm>(std::move(lat), static_cast<dcrf::Normalization>(normalization),
                                        static_cast<dcrf::CompatKind>(compat_kind), std::move(c), n_labels, threads);
}

py::array_t<float> term_filter(const PairwiseTerm& t, FArray values, bool transpose, int threads) {
  require_2d(values, "values", t.lattice().n_points(), -1);
  const int64_t c = values.shape(1);
  py::array_t<float> out({static_cast<py::ssize_t>(t.lattice().n_points()), static_cast<py::ssize_t>(c)});
  if (c > 0 && t.lattice().n_points() > 0) {
    const float* in = values.data();
    float* o = out.mutable_data();
    py::gil_scoped_release nogil;
    t.filter(in, o, static_cast<int>(c), transpose, threads);
  }
  return out;
}

py::array_t<float> term_apply(const PairwiseTerm& t, FArray q, bool transpose, int threads) {
  require_2d(q, "Q", t.lattice().n_points(), t.n_labels());
  py::array_t<float> out({static_cast<py::ssize_t>(q.shape(0)), static_cast<py::ssize_t>(q.shape(1))});
  if (q.size() > 0) {
    const float* in = q.data();
    float* o = out.mutable_data();
    py::gil_scoped_release nogil;
    t.apply(in, o, transpose, threads);
  }
  return out;
}

std::vector<const PairwiseTerm*> collect_terms(const std::vector<std::shared_ptr<PairwiseTerm>>& terms, int64_t n,
                                               int64_t k) {
  std::vector<const PairwiseTerm*> ptrs;
  for (const auto& t : terms) {
    if (!t) throw dcrf::InvalidArgument("terms must not contain None");
    if (t->lattice().n_points() != n || t->n_labels() != k) {
      throw dcrf::InvalidArgument("a pairwise term was built for " + std::to_string(t->lattice().n_points()) +
                                  " points and " + std::to_string(t->n_labels()) + " labels, the unary has " +
                                  std::to_string(n) + " points and " + std::to_string(k) + " labels");
    }
    ptrs.push_back(t.get());
  }
  return ptrs;
}

// The start distribution of mean field, channel-padded, computed with the
// unary (unary_from_probs(..., with_start=True)) and taken over by the
// next mean_field call given it: one use.
struct StartQ {
  dcrf::AlignedFloats q;
  int64_t n = 0, k = 0;
};

// Returns Q after n_iter iterations, starting from q0 (or softmax(-U)).
py::array_t<float> mean_field(FArray unary, const std::vector<std::shared_ptr<PairwiseTerm>>& terms, int n_iter,
                              py::object q0, int threads, bool check_finite, py::object start_obj) {
  require_2d(unary, "unary", -1, -1);
  const int64_t n = unary.shape(0), k = unary.shape(1);
  if (n_iter < 0) throw dcrf::InvalidArgument("n_iter must be >= 0, got " + std::to_string(n_iter));
  auto ptrs = collect_terms(terms, n, k);
  py::array_t<float> q({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(k)});
  const float* u = unary.data();
  float* qp = q.mutable_data();
  if (!q0.is_none()) {
    FArray init = q0.cast<FArray>();
    require_2d(init, "Q", n, k);
    std::copy(init.data(), init.data() + init.size(), qp);
  }
  const bool fresh = q0.is_none();
  dcrf::AlignedFloats taken;  // the start's buffer, moved out while the GIL is held: one use
  dcrf::AlignedFloats* start = nullptr;
  if (!start_obj.is_none()) {
    if (!fresh) throw dcrf::InvalidArgument("give Q or start, not both");
    StartQ& sq = start_obj.cast<StartQ&>();
    if (!sq.q) throw dcrf::InvalidArgument("this start distribution was used already");
    if (sq.n != n || sq.k != k) {
      throw dcrf::InvalidArgument("start distribution is for " + std::to_string(sq.n) + " points and " +
                                  std::to_string(sq.k) + " labels, the unary has " + std::to_string(n) + " and " +
                                  std::to_string(k));
    }
    taken = std::move(sq.q);
    start = &taken;
  }
  bool finite = true;
  {
    py::gil_scoped_release nogil;
    finite = dcrf::mean_field(u, qp, n, static_cast<int>(k), ptrs, n_iter, threads, fresh, start);
  }
  if (check_finite && !finite) {
    PyErr_SetString(PyExc_FloatingPointError, "mean-field logits overflowed float32");
    throw py::error_already_set();
  }
  return q;
}

// [N, nd + C] features of a grid (row-major over `spatial`): the positions
// divided by sdims, last axis first (x, y, ...), then the C columns of
// image [N, C] divided by srgb; every value the float32 quotient numpy
// would compute. In parallel, without temporaries.
py::array_t<float> grid_features(const std::vector<int64_t>& spatial, const std::vector<float>& sdims, py::object image,
                                 const std::vector<float>& srgb, int threads) {
  const int nd = static_cast<int>(spatial.size());
  if (nd < 1 || static_cast<int>(sdims.size()) != nd) {
    throw dcrf::InvalidArgument("grid_features: need one bandwidth per axis");
  }
  int64_t n = 1;
  for (int64_t s : spatial) {
    if (s < 1) throw dcrf::InvalidArgument("grid_features: axis sizes must be >= 1");
    n *= s;
  }
  FArray img;
  int64_t c = 0;
  if (!image.is_none()) {
    img = image.cast<FArray>();
    require_2d(img, "image", n, static_cast<int64_t>(srgb.size()));
    c = img.shape(1);
  }
  const int64_t dcols = nd + c;
  py::array_t<float> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(dcols)});
  // Column j holds axis nd-1-j: a table of coordinate / bandwidth per axis.
  std::vector<std::vector<float>> tab(nd);
  for (int j = 0; j < nd; ++j) {
    const int64_t len = spatial[nd - 1 - j];
    tab[j].resize(len);
    for (int64_t v = 0; v < len; ++v) tab[j][v] = static_cast<float>(v) / sdims[j];
  }
  float* o = out.mutable_data();
  const float* im = c ? img.data() : nullptr;
  py::gil_scoped_release nogil;
  const int64_t len0 = spatial[nd - 1];  // points per line of the last axis
  dcrf::parallel_for(n, threads <= 0 ? dcrf::default_threads() : threads, 4096, [&](int64_t b, int64_t e) {
    std::vector<int64_t> idx(nd);  // multi-index of point b, axis 0 first
    std::vector<float> fixed(nd);  // the columns that stay constant along a line
    int64_t rem = b;
    for (int a = nd - 1; a >= 0; --a) {
      idx[a] = rem % spatial[a];
      rem /= spatial[a];
    }
    int64_t i = b;
    while (i < e) {
      for (int j = 1; j < nd; ++j) fixed[j] = tab[j][idx[nd - 1 - j]];
      const int64_t x0 = idx[nd - 1];
      const int64_t stop = std::min<int64_t>(e, i + (len0 - x0));
      const float* t0 = tab[0].data() + x0 - i;
      for (int64_t p = i; p < stop; ++p) {
        float* row = o + p * dcols;
        row[0] = t0[p];
        for (int j = 1; j < nd; ++j) row[j] = fixed[j];
        for (int64_t ch = 0; ch < c; ++ch) row[nd + ch] = im[p * c + ch] / srgb[ch];
      }
      idx[nd - 1] += stop - i;
      i = stop;
      for (int a = nd - 1; a > 0 && idx[a] >= spatial[a]; --a) {  // next line
        idx[a] = 0;
        ++idx[a - 1];
      }
    }
  });
  return out;
}

// For tests: every point's simplex (remainder-0 vertex, ranks) and
// barycentric weights, [N, d+1] each, by the scalar locate_point or by the
// AVX2 8-point version (blocks of 8; a tail of fewer points stays scalar).
py::tuple locate_points(FArray features, bool vectorized) {
  require_2d(features, "features", -1, -1);
  const int64_t n = features.shape(0);
  const int d = static_cast<int>(features.shape(1));
  if (d < 1 || d > dcrf::kMaxDim) throw dcrf::InvalidArgument("features must have 1 to 32 columns");
  if (vectorized && !dcrf::locate8_supports(d)) throw dcrf::InvalidArgument("no 8-point version for this d");
  const int dp1 = d + 1;
  py::array_t<int32_t> rem0({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(dp1)});
  py::array_t<int32_t> rank({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(dp1)});
  py::array_t<float> bary({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(dp1)});
  float scale[dcrf::kMaxDim];
  dcrf::lattice_scale_factors(d, scale);
  const float* f = features.data();
  int32_t* r0 = rem0.mutable_data();
  int32_t* rk = rank.mutable_data();
  float* b = bary.mutable_data();
  int64_t i = 0;
  if (vectorized) {
    for (; i + 8 <= n; i += 8) {
      if (!dcrf::locate8_avx2(f + i * d, d, scale, r0 + i * dp1, rk + i * dp1, b + i * dp1)) {
        throw dcrf::InvalidArgument("a point in block " + std::to_string(i / 8) + " is not finite or out of range");
      }
    }
  }
  for (; i < n; ++i) {
    if (!dcrf::locate_point<0>(f + i * d, d, scale, r0 + i * dp1, rk + i * dp1, b + i * dp1)) {
      throw dcrf::InvalidArgument("point " + std::to_string(i) + " is not finite or out of range");
    }
  }
  return py::make_tuple(rem0, rank, bary);
}

// -log(max(p, clip)) for probabilities p [N, K], with the statistics the
// Python layer validates (min p, max p, max |row sum - 1|, flat index of the
// first NaN or infinity or -1) and, with_start, mean field's start
// max(p, clip) / sum (K <= kMaxRowLabels). Rows go out in chunks to whichever
// thread calls run(), first come first served: unary_from_probs runs it on
// its threads at once; refine's two chains (2-3 threads) each call run()
// when their other work is done, so that the one that finishes first takes
// more of it. Each element and row gives the same bits whoever computes it.
class UnaryJob {
 public:
  UnaryJob(FArray probs, float clip, bool with_start) : probs_(std::move(probs)), clip_(clip) {
    require_2d(probs_, "probs", -1, -1);
    n_ = probs_.shape(0);
    k_ = probs_.shape(1);
    if (!(clip > 0.0f && clip <= 1.0f))
      throw dcrf::InvalidArgument("clip must be in (0, 1], got " + std::to_string(clip));
    u_ = py::array_t<float>({static_cast<py::ssize_t>(n_), static_cast<py::ssize_t>(k_)});
    up_ = u_.mutable_data();
    if (n_ == 0 || k_ == 0) n_ = 0;  // nothing to compute (u keeps its shape)
    if (with_start && n_ > 0 && k_ <= dcrf::kMaxRowLabels) {
      start_ = std::make_shared<StartQ>();
      start_->q = dcrf::aligned_floats(static_cast<size_t>(n_) * dcrf::padded_channels(static_cast<int>(k_)));
      start_->n = n_;
      start_->k = k_;
    }
    with_start_ = with_start;
    total_.min = 3.0e38f;
    total_.max = -3.0e38f;
  }

  // Computes chunks of rows on `threads` native threads until none is left.
  void run(int threads) {
    if (n_ == 0) return;
    py::gil_scoped_release nogil;
    if (threads <= 0) threads = dcrf::default_threads();
    const int nt = static_cast<int>(std::min<int64_t>(threads, (n_ + kChunk - 1) / kChunk));
    dcrf::parallel_run(
        nt, [&](int, int) { dcrf::take_chunks(next_, n_, kChunk, [&](int64_t b, int64_t e) { chunk(b, e); }); });
  }

  // (u, min, max, worst row deviation, first bad index[, start or None]);
  // computes what no run() took, and waits for chunks other threads hold.
  py::tuple result() {
    run(1);
    {
      py::gil_scoped_release nogil;
      std::unique_lock<std::mutex> lk(mu_);
      done_cv_.wait(lk, [&] { return done_ >= n_; });
    }
    if (with_start_) {
      return py::make_tuple(u_, total_.min, total_.max, total_.worst_row_dev, total_.first_bad,
                            start_ ? py::cast(start_) : py::none());
    }
    return py::make_tuple(u_, total_.min, total_.max, total_.worst_row_dev, total_.first_bad);
  }

 private:
  // Rows per chunk: about 40k elements at K = 21, tens of microseconds.
  static constexpr int64_t kChunk = 2048;

  void chunk(int64_t b, int64_t e) {
    dcrf::UnaryStats st;
    const float* p = probs_.data();
    float* q0 = start_ ? start_->q.get() : nullptr;
    const int k = static_cast<int>(k_);
    if (!(q0 && dcrf::kernels().unary_rows(p, up_, q0, k, clip_, n_, b, e, &st))) {
      dcrf::kernels().unary_from_probs(p, up_, k, clip_, b, e, &st);
    }
    std::lock_guard<std::mutex> lk(mu_);
    total_.min = std::min(total_.min, st.min);
    total_.max = std::max(total_.max, st.max);
    total_.worst_row_dev = std::max(total_.worst_row_dev, st.worst_row_dev);
    if (st.first_bad >= 0 && (total_.first_bad < 0 || st.first_bad < total_.first_bad)) total_.first_bad = st.first_bad;
    done_ += e - b;
    if (done_ >= n_) done_cv_.notify_all();
  }

  FArray probs_;
  float clip_;
  int64_t n_ = 0, k_ = 0;
  py::array_t<float> u_;
  float* up_ = nullptr;
  std::shared_ptr<StartQ> start_;
  bool with_start_ = false;
  std::atomic<int64_t> next_{0};
  std::mutex mu_;
  std::condition_variable done_cv_;
  int64_t done_ = 0;
  dcrf::UnaryStats total_;
};

// The float32 values of float16 numbers given by their bits (a uint16 view of
// the float16 array), in an array of the same shape; exact. numpy's own cast
// takes 7-8 ms for a 480 x 360 x 11 map on the project's machine; F16C takes
// a small part of that.
py::array_t<float> half_to_float_array(py::array_t<uint16_t, py::array::c_style> bits, bool vectorized) {
  std::vector<py::ssize_t> shape(bits.shape(), bits.shape() + bits.ndim());
  py::array_t<float> out(shape);
  const uint16_t* src = bits.data();
  float* dst = out.mutable_data();
  const int64_t n = static_cast<int64_t>(bits.size());
  {
    py::gil_scoped_release nogil;
    if (vectorized) {
      dcrf::half_to_float(src, dst, n);
    } else {
      dcrf::half_to_float_portable(src, dst, n);
    }
  }
  return out;
}

template <typename T>
py::array argmax_into(const float* src, int64_t n, int64_t k, bool vectorized) {
  py::array_t<T> out(static_cast<py::ssize_t>(n));
  T* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    dcrf::argmax_rows(src, n, k, dst, vectorized);
  }
  return out;
}

// Arg-max labels of q [N, K] (csrc/labels.h): uint8 for K <= 256, uint16 for K <= 65536.
py::array argmax_labels(py::array_t<float, py::array::c_style> q, bool vectorized) {
  require_2d(q, "q", -1, -1);
  const int64_t n = q.shape(0), k = q.shape(1);
  if (k < 1 || k > 65536)
    throw dcrf::InvalidArgument("argmax_labels takes 1 to 65536 labels, got " + std::to_string(k));
  if (k <= 256) return argmax_into<uint8_t>(q.data(), n, k, vectorized);
  return argmax_into<uint16_t>(q.data(), n, k, vectorized);
}

py::tuple unary_from_probs(FArray probs, float clip, int threads, bool with_start) {
  UnaryJob job(std::move(probs), clip, with_start);
  job.run(threads);
  return job.result();
}

py::dict build_info() {
  py::dict d;
#if defined(__clang__)
  d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#else
  d["compiler"] = std::string("unknown");
#endif
  py::list feats;
#if defined(__AVX512F__)
  feats.append("avx512f");
#endif
#if defined(__AVX2__)
  feats.append("avx2");
#endif
#if defined(__FMA__)
  feats.append("fma");
#endif
#if defined(__SSE4_2__)
  feats.append("sse4.2");
#endif
#if defined(__SSE2__)
  feats.append("sse2");
#endif
  d["compiled_cpu_features"] = feats;
  d["kernels"] = std::string(dcrf::kernels().name);  // the hot loops picked for this CPU at run time
  d["max_feature_dim"] = dcrf::kMaxDim;
#if defined(DENSECRF_WITH_CUDA)
  d["cuda"] = true;
#else
  d["cuda"] = false;
#endif
#if defined(DENSECRF_CUDA_ARCHS)
  d["cuda_architectures"] = std::string(DENSECRF_CUDA_ARCHS);
#else
  d["cuda_architectures"] = std::string("");
#endif
  return d;
}

}  // namespace

#ifdef DENSECRF_WITH_CUDA
void register_cuda(py::module_& m);  // csrc/bindings_cuda.cpp
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "densecrf native core (permutohedral lattice, mean field)";
  py::register_exception<dcrf::InvalidArgument>(m, "NativeValueError", PyExc_ValueError);

  py::class_<CpuLattice, std::shared_ptr<CpuLattice>>(m, "Lattice")
      // _table: the vertex table to start from (tests compare them; "auto" in use)
      .def(py::init(&make_lattice), py::arg("features"), py::arg("threads") = 0, py::arg("_table") = "auto")
      .def_property_readonly("n_points", &CpuLattice::n_points)
      .def_property_readonly("dim", &CpuLattice::dim)
      .def_property_readonly("n_vertices", &CpuLattice::n_vertices)
      .def_property_readonly("memory_bytes", &CpuLattice::memory_bytes)
      .def_property_readonly("_table",  // which vertex table built it (tests)
                             [](const CpuLattice& l) {
                               switch (l.table()) {
                                 case dcrf::LatticeTable::kDense: return "dense";
                                 case dcrf::LatticeTable::kPacked: return "packed";
                                 default: return "general";
                               }
                             })
      // the splat rule (tests): whether a splat on `threads` threads gathers over entry lists
      .def("_splat_by_lists", &CpuLattice::splat_by_lists, py::arg("threads"))
      .def_property_readonly("_has_entry_lists", &CpuLattice::has_entry_lists)
      .def("_splat_scan_excess", &CpuLattice::splat_scan_excess, py::arg("threads"))
      .def_static(
          "_set_splat_mode",  // benchmarks and tests: "auto" (the rule), "scan" or "lists"
          [](const std::string& mode) {
            if (mode == "auto") return dcrf::set_splat_mode(dcrf::SplatMode::kAuto);
            if (mode == "scan") return dcrf::set_splat_mode(dcrf::SplatMode::kScan);
            if (mode == "lists") return dcrf::set_splat_mode(dcrf::SplatMode::kLists);
            throw dcrf::InvalidArgument("splat mode must be 'auto', 'scan' or 'lists', got '" + mode + "'");
          },
          py::arg("mode"))
      .def("filter", &lattice_filter, py::arg("values"), py::arg("transpose") = false, py::arg("threads") = 0);

  // The float64 lattice (csrc/lattice_f64.h): float64 arrays only.
  py::class_<dcrf::CpuLattice64, std::shared_ptr<dcrf::CpuLattice64>>(m, "Lattice64")
      .def(py::init(&make_lattice64), py::arg("features"), py::arg("threads") = 0)
      .def_property_readonly("n_points", &dcrf::CpuLattice64::n_points)
      .def_property_readonly("dim", &dcrf::CpuLattice64::dim)
      .def_property_readonly("n_vertices", &dcrf::CpuLattice64::n_vertices)
      .def_property_readonly("memory_bytes", &dcrf::CpuLattice64::memory_bytes)
      .def("filter", &lattice64_filter, py::arg("values"), py::arg("transpose") = false, py::arg("threads") = 0);

  py::class_<PairwiseTerm, std::shared_ptr<PairwiseTerm>>(m, "PairwiseTerm")
      .def(py::init(&make_term), py::arg("lattice"), py::arg("normalization"), py::arg("compat_kind"),
           py::arg("compat"), py::arg("n_labels"), py::arg("threads") = 0)
      .def_property_readonly("norm",
                             [](const PairwiseTerm& t) {
                               return py::array_t<float>(static_cast<py::ssize_t>(t.norm().size()), t.norm().data());
                             })
      .def("filter", &term_filter, py::arg("values"), py::arg("transpose") = false, py::arg("threads") = 0)
      .def("apply", &term_apply, py::arg("Q"), py::arg("transpose") = false, py::arg("threads") = 0);

  m.def("mean_field", &mean_field, py::arg("unary"), py::arg("terms"), py::arg("n_iter"), py::arg("Q") = py::none(),
        py::arg("threads") = 0, py::arg("check_finite") = false, py::arg("start") = py::none());
  py::class_<StartQ, std::shared_ptr<StartQ>>(m, "StartQ")
      .def_property_readonly("n_points", [](const StartQ& s) { return s.n; })
      .def_property_readonly("n_labels", [](const StartQ& s) { return s.k; })
      .def_property_readonly("used", [](const StartQ& s) { return !s.q; });
  m.def("_locate_points", &locate_points, py::arg("features"), py::arg("vectorized"));
  m.def("_cpu_has_avx2", &dcrf::cpu_has_avx2);
  m.def("_cpu_has_f16c", &dcrf::cpu_has_f16c);
  m.def("half_to_float", &half_to_float_array, py::arg("bits"), py::arg("vectorized") = true);
  m.def("argmax_labels", &argmax_labels, py::arg("q"), py::arg("vectorized") = true);
  m.def("grid_features", &grid_features, py::arg("spatial"), py::arg("sdims"), py::arg("image") = py::none(),
        py::arg("srgb") = std::vector<float>(), py::arg("threads") = 0);
  m.def("unary_from_probs", &unary_from_probs, py::arg("probs"), py::arg("clip"), py::arg("threads") = 0,
        py::arg("with_start") = false);
  py::class_<UnaryJob, std::shared_ptr<UnaryJob>>(m, "UnaryJob")
      .def(py::init<FArray, float, bool>(), py::arg("probs"), py::arg("clip"), py::arg("with_start") = false)
      .def("run", &UnaryJob::run, py::arg("threads") = 1)
      .def("result", &UnaryJob::result);
  m.def("set_num_threads", &dcrf::set_default_threads, py::arg("n"));
  m.def("get_num_threads", &dcrf::default_threads);
  m.def("hardware_threads", &dcrf::hardware_threads);
  m.def("build_info", &build_info);
#ifdef DENSECRF_WITH_CUDA
  register_cuda(m);
#endif
}
