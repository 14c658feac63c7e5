"""The CUDA backend: lattices, filters and mean field on device pointers.

Every native CUDA call of the package goes through this module's ``_C``
(the host emulation of tests/cuda_emu replaces it), and this module says
whether the backend can run (:func:`require_cuda`). Arrays arrive as
:class:`densecrf.arrays.Buf` on a :class:`densecrf.arrays.Place` (library,
device, stream); outputs are allocated on the same place.

The kernels (``cuda/lattice_cuda.cu``) implement the same lattice as the CPU
backend: same embedding (the same source, compiled by nvcc), same vertex
numbering, per-vertex sums in the same order, no FMA contraction. Results
are deterministic and agree with the CPU backend to float32 rounding of the
softmax. A place of dtype float64 runs the double instantiation of the same
kernels (``_C.CudaLattice64``, ``_C.cuda_mean_field64``, ...): the float64
CPU backend's arithmetic, on the device.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _checks, arrays
from .._native import _C, build_info
from .problem import Problem

_NO_CUDA_BUILD = (
    "densecrf was built without CUDA support: no CUDA compiler (nvcc) was found when it was "
    "built, or it was built with -C cmake.define.DENSECRF_CUDA=OFF. Reinstall it with nvcc on "
    "PATH (or CUDACXX set) to use device='cuda', or use the CPU backend (device='cpu')."
)


def _built_with_cuda() -> bool:
    return bool(build_info().get("cuda", False)) and hasattr(_C, "cuda_device_count")


def cuda_available() -> bool:
    """True when this build has the CUDA backend and at least one CUDA device is visible.

    Never raises: a missing driver or device gives False.
    """
    if not _built_with_cuda():
        return False
    try:
        return int(_C.cuda_device_count()) > 0
    except Exception:  # pragma: no cover - defensive: a broken driver install
        return False


def require_cuda() -> None:
    """Raises RuntimeError unless the CUDA backend can run: the one place that says why not."""
    if not _built_with_cuda():
        raise RuntimeError(_NO_CUDA_BUILD)
    if int(_C.cuda_device_count()) == 0:
        raise RuntimeError(
            "densecrf has its CUDA backend but no CUDA device is visible (no GPU, no driver, or "
            "CUDA_VISIBLE_DEVICES hides them); use device='cpu'"
        )


def device_name(device: int = 0) -> str:
    """Name, compute capability and memory of a CUDA device, e.g. for benchmark records."""
    require_cuda()
    return _C.cuda_device_name(int(device))


def memory_reserved(device=0) -> int:
    """Bytes densecrf's scratch memory pool holds on a CUDA device.

    Each call's scratch (blur buffers, the lattice build's tables) comes from
    a pool of densecrf's own that keeps freed memory for the next call
    instead of returning it at every synchronisation; this is what it holds
    now. 0 where the device has no memory pools. Other allocations (the
    lattices' arrays, results) are not counted.
    """
    require_cuda()
    return int(_C.cuda_scratch_reserved(arrays.parse_device(device)))


def empty_cache(device=0) -> None:
    """Gives the unused memory of densecrf's scratch pool on ``device`` back
    (waits for the device first), as ``torch.cuda.empty_cache`` does for torch's."""
    require_cuda()
    _C.cuda_empty_cache(arrays.parse_device(device))


class DeviceArray:
    """A float32 (or float64) C-contiguous array in GPU memory owned by densecrf: no torch or CuPy needed.

    Results of calls on DeviceArray inputs are DeviceArrays. It exposes
    ``__cuda_array_interface__`` (so ``cupy.asarray`` / ``torch.as_tensor`` can view it
    without a copy) and ``.numpy()`` to copy it back to the host.
    """

    def __init__(self, shape, device=0, dtype=np.float32):
        require_cuda()
        self.shape = tuple(int(s) for s in shape)
        self.device = arrays.parse_device(device)
        self.dtype = _checks.dtype_arg(dtype)
        self._buf = _C.CudaBuffer(max(1, math.prod(self.shape)) * self.dtype.itemsize, self.device)

    @classmethod
    def from_numpy(cls, a, device=0, dtype=np.float32) -> DeviceArray:
        """Copies a host array (converted to ``dtype``, float32 unless asked) to the device."""
        h = np.ascontiguousarray(a, dtype=dtype)
        out = cls(h.shape, device, h.dtype)
        if h.size:
            out.upload(h, 0)
        return out

    @property
    def ptr(self) -> int:
        return int(self._buf.ptr)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def upload(self, h: np.ndarray, stream: int) -> None:
        """Copies the C-contiguous host array ``h`` of this array's dtype (as many values) in, on ``stream``."""
        self._buf.upload(h, stream)

    def download(self, out: np.ndarray, stream: int) -> None:
        """Copies the values into the C-contiguous host array ``out`` of this array's dtype, on ``stream``."""
        self._buf.download(out, stream)

    def copy(self, stream: int = 0) -> DeviceArray:
        """A new device array with the same values (copied on ``stream``)."""
        a = DeviceArray(self.shape, self.device, self.dtype)
        copy = _C.cuda_copy_labels_layout64 if self.dtype == np.float64 else _C.cuda_copy_labels_layout
        copy(self.ptr, a.ptr, 1, 1, max(1, a.size), False, self.device, stream)
        return a

    def numpy(self) -> np.ndarray:
        """A host copy (waits for the device's legacy default stream)."""
        out = np.empty(self.shape, dtype=self.dtype)
        if out.size:
            self.download(out, 0)
        return out

    def reshape(self, *shape) -> DeviceArray:
        """A view with another shape (same memory)."""
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        if math.prod(shape) != self.size:
            raise ValueError(f"cannot reshape {_checks.shape_str(self.shape)} into {_checks.shape_str(shape)}")
        v = object.__new__(DeviceArray)
        v.shape, v.device, v.dtype, v._buf = tuple(int(s) for s in shape), self.device, self.dtype, self._buf
        return v

    @property
    def __cuda_array_interface__(self) -> dict:
        typestr = "<f8" if self.dtype == np.float64 else "<f4"
        return {"shape": self.shape, "typestr": typestr, "data": (self.ptr, False), "version": 3, "strides": None}

    def __repr__(self) -> str:
        extra = ", dtype=float64" if self.dtype == np.float64 else ""
        return f"DeviceArray(shape={self.shape}, device=cuda:{self.device}{extra})"


def place_of(items, device, dtype=np.float32) -> arrays.Place:
    """Where a call on ``items`` runs (see :func:`densecrf.arrays.place_of`), computing
    in ``dtype`` (float32 or float64), after checking that the backend can run at all."""
    require_cuda()
    return arrays.place_of(items, device, DeviceArray, dtype)


class CudaBackend:
    """Dense-CRF work on one :class:`densecrf.arrays.Place`.

    Methods (the CPU backend has the same): :meth:`refine` for a checked
    :class:`Problem` over a batch, :meth:`mean_field` over built terms,
    :meth:`lattice` and :meth:`filter`.
    """

    def __init__(self, place: arrays.Place):
        self.place = place
        # the native names of the place's scalar type: CudaLattice or CudaLattice64, ...
        self._suffix = "64" if place.f64 else ""
        self._np = place.dtype

    def _native(self, name: str):
        return getattr(_C, name + self._suffix)

    # -- building blocks ----------------------------------------------------
    def lattice(self, features: arrays.Buf, segments=None):
        """The lattice of features ``[N, d]`` (segments: point offsets of the items
        of a batch, whose vertices never mix; default one item)."""
        n, d = features.shape[0], features.shape[-1]
        seg = [0, n] if segments is None else list(segments)
        return self._native("CudaLattice")(features.ptr, n, d, seg, self.place.device, self.place.stream)

    def term(self, lattice, kind: int, values: np.ndarray, normalization: int, labels: int):
        """A pairwise term (normalisation computed) over ``lattice``."""
        return self._native("CudaPairwiseTerm")(
            lattice, int(normalization), kind, np.ascontiguousarray(values, dtype=self._np), labels, self.place.stream
        )

    def filter(self, lattice, values: arrays.Buf, transpose: bool = False, normalization=None) -> arrays.Buf:
        """``values`` ``[N, C]`` filtered by ``lattice`` (K, or the normalised kernel)."""
        out = self.place.empty(values.shape)
        c = values.shape[-1]
        if normalization is None:
            lattice.filter(values.ptr, out.ptr, c, bool(transpose), 0, 0, self.place.stream)
        else:
            term = self._native("CudaPairwiseTerm")(
                lattice, int(normalization), 0, np.ones(1, self._np), 1, self.place.stream
            )
            term.filter(values.ptr, out.ptr, c, bool(transpose), self.place.stream)
        return out

    def mean_field(self, unary: arrays.Buf, terms, n_iter: int, q0: arrays.Buf | None = None) -> arrays.Buf:
        """Q ``[N, K]`` after ``n_iter`` iterations from softmax(-unary), or from ``q0``
        (which is written: pass a copy of the caller's array)."""
        n, k = unary.shape
        if q0 is None:
            q = self.place.empty((n, k))
            self._native("cuda_mean_field")(unary.ptr, q.ptr, n, k, list(terms), n_iter, True, self.place.stream)
        else:
            q = q0
            self._native("cuda_mean_field")(unary.ptr, q.ptr, n, k, list(terms), n_iter, False, self.place.stream)
        return q

    # -- the refine problem --------------------------------------------------
    def refine(self, problem: Problem, items) -> list:
        """Refined probabilities of a batch, laid out as its probabilities.

        ``items``: list of (image Buf, probs Buf, count, spatial): ``count``
        images of shape ``spatial`` stacked in each array (labels and channels
        first or last, as ``problem.channels_first``). The whole batch is one
        lattice build per term (each image a segment of its own) and one
        mean-field run. Returns one Buf per item.
        """
        place, dev, stream = self.place, self.place.device, self.place.stream
        k, c, first = problem.labels, problem.channels, problem.channels_first
        counts = [b * math.prod(sp) for _, _, b, sp in items]
        n = sum(counts)
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        segments = [0]
        for _, _, b, sp in items:
            for _ in range(b):  # every image of a batch is a segment of its own
                segments.append(segments[-1] + math.prod(sp))
        clip_v = 0.0 if problem.clip is None else problem.clip
        scale_v = 0.0 if problem.scale is None else problem.scale
        unary = place.empty((n, k))
        for (_img, prb, b, sp), st in zip(items, starts[:-1], strict=True):
            self._native("cuda_unary_from_probs")(
                prb.ptr, unary.at(int(st) * k), b, math.prod(sp), k, first, clip_v, scale_v, dev, stream
            )
        features = []
        for t in problem.terms:
            # bandwidths rounded to the computation's dtype, as the CPU backends take them
            sd = [float(self._np.type(v)) for v in t.sxy]
            sc = [] if t.srgb is None else [float(self._np.type(v)) for v in t.srgb]
            feats = place.empty((n, t.dim))
            for (img, _prb, b, sp), st in zip(items, starts[:-1], strict=True):
                self._native("cuda_grid_features")(
                    img.ptr if t.srgb is not None else 0,
                    feats.at(int(st) * t.dim),
                    b,
                    list(sp),
                    sd,
                    c if t.srgb is not None else 0,
                    sc,
                    first,
                    dev,
                    stream,
                )
            features.append(feats)
        if n == 0:
            return [place.empty(prb.shape) for _, prb, _, _ in items]
        lattices, terms = [], []
        for f, t in zip(features, problem.terms, strict=True):
            lattices.append(self.lattice(f, segments))
            terms.append(self.term(lattices[-1], t.compat_kind, t.compat, t.normalization, k))
        q = self.mean_field(unary, terms, problem.n_iter)
        outs = []
        for (_img, prb, b, sp), st in zip(items, starts[:-1], strict=True):
            out = place.empty(prb.shape)
            self._native("cuda_copy_labels_layout")(q.at(int(st) * k), out.ptr, b, math.prod(sp), k, first, dev, stream)
            outs.append(out)
        return outs
