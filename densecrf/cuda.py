"""CUDA backend: dense-CRF mean field on the GPU, batched and deterministic.

Arrays may be numpy arrays (copied to the GPU and back), torch CUDA tensors
or CuPy arrays (and other ``__cuda_array_interface__`` / DLPack CUDA arrays
when torch or CuPy is installed to receive the result). Device arrays stay on
their device: the work runs on the array library's current stream
(``torch.cuda.current_stream()``, ``cupy.cuda.get_current_stream()``) and the
result is an array of the same library on the same device, produced without
a copy through the host. numpy inputs run on the legacy default stream of
``device`` and come back as numpy arrays.

The native kernels (``cuda/lattice_cuda.cu``) implement the same lattice as
the CPU backend: same embedding (the same source, compiled by nvcc), same
vertex numbering, per-vertex sums in the same order, no FMA contraction. The
results are deterministic (bit-identical from run to run on one device) and
agree with the CPU backend to float32 rounding of the softmax (CPU and GPU
exponentials differ in the last bits).

Batches: B images of one size are one call; a list of images of different
sizes is one call too (all images share one lattice structure whose vertices
never cross images, so each image is filtered with its own lattice).

Nothing here imports torch or CuPy at import time.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from . import _checks
from ._native import _C, build_info

_NO_CUDA_BUILD = (
    "densecrf was built without CUDA support: no CUDA compiler (nvcc) was found when it was "
    "built, or it was built with -C cmake.define.DENSECRF_CUDA=OFF. Reinstall it with nvcc on "
    "PATH (or CUDACXX set) to use device='cuda', or use the CPU backend (device='cpu')."
)
_F32 = 4  # bytes per float32


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


# ---------------------------------------------------------------------------
# Array kinds: where a call runs and how its buffers are made.


def _torch():
    return sys.modules.get("torch")


def _is_torch(x) -> bool:
    t = _torch()
    return t is not None and isinstance(x, t.Tensor)


def _is_cupy(x) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def _parse_device(device) -> int:
    if device is None:
        return 0
    if isinstance(device, (int, np.integer)) and not isinstance(device, bool):
        return int(device)
    s = str(device)
    if s == "cuda":
        return 0
    if s.startswith("cuda:") and s[5:].isdigit():
        return int(s[5:])
    raise ValueError(f"device must be 'cuda', 'cuda:N' or an integer ordinal, got {device!r}")


class DeviceArray:
    """A float32 C-contiguous array in GPU memory owned by densecrf: no torch or CuPy needed.

    Results of calls on DeviceArray inputs are DeviceArrays. It exposes
    ``__cuda_array_interface__`` (so ``cupy.asarray`` / ``torch.as_tensor`` can view it
    without a copy) and ``.numpy()`` to copy it back to the host.
    """

    def __init__(self, shape, device=0):
        require_cuda()
        self.shape = tuple(int(s) for s in shape)
        self.device = _parse_device(device)
        self.dtype = np.dtype(np.float32)
        self._buf = _C.CudaBuffer(max(1, math.prod(self.shape)) * _F32, self.device)

    @classmethod
    def from_numpy(cls, a, device=0) -> "DeviceArray":
        """Copies a host array (converted to float32) to the device."""
        h = np.ascontiguousarray(a, dtype=np.float32)
        out = cls(h.shape, device)
        if h.size:
            out._buf.upload(h, 0)
        return out

    @property
    def ptr(self) -> int:
        return int(self._buf.ptr)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def numpy(self) -> np.ndarray:
        """A host copy (waits for the device's legacy default stream)."""
        out = np.empty(self.shape, dtype=np.float32)
        if out.size:
            self._buf.download(out, 0)
        return out

    def reshape(self, *shape) -> "DeviceArray":
        """A view with another shape (same memory)."""
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        if math.prod(shape) != self.size:
            raise ValueError(f"cannot reshape {_checks.shape_str(self.shape)} into {_checks.shape_str(shape)}")
        v = object.__new__(DeviceArray)
        v.shape, v.device, v.dtype, v._buf = tuple(int(s) for s in shape), self.device, self.dtype, self._buf
        return v

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": "<f4", "data": (self.ptr, False), "version": 3, "strides": None}

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self.shape}, device=cuda:{self.device})"


class _Buf:
    """A float32 C-contiguous device array: the owning object and its raw pointer."""

    __slots__ = ("obj", "ptr", "shape")

    def __init__(self, obj, ptr: int, shape):
        self.obj = obj
        self.ptr = int(ptr)
        self.shape = tuple(int(s) for s in shape)

    def at(self, offset_floats: int) -> int:
        return self.ptr + offset_floats * _F32


class _Ctx:
    """Where a call runs: the array library ('numpy', 'torch' or 'cupy'), the device ordinal and the stream."""

    def __init__(self, kind: str, device: int, torch_device=None):
        self.kind = kind
        self.device = device
        self.torch_device = torch_device
        if kind == "torch":
            self.stream = int(_torch().cuda.current_stream(torch_device).cuda_stream)
        elif kind == "cupy":
            import cupy

            with cupy.cuda.Device(device):
                self.stream = int(cupy.cuda.get_current_stream().ptr)
        else:
            self.stream = 0

    @classmethod
    def of(cls, arrays, device=None) -> "_Ctx":
        """The context of the first device array among `arrays`, else numpy on `device`."""
        require_cuda()
        for x in arrays:
            if isinstance(x, DeviceArray):
                return cls("raw", x.device)
            if _is_torch(x):
                if not x.is_cuda:
                    continue
                return cls("torch", x.device.index if x.device.index is not None else _torch().cuda.current_device(), x.device)
            if hasattr(x, "__cuda_array_interface__"):
                if _is_cupy(x) or "cupy" in sys.modules or _importable("cupy"):
                    import cupy

                    dev = x.device.id if _is_cupy(x) else cupy.cuda.Device().id
                    return cls("cupy", int(dev))
                if _torch() is not None or _importable("torch"):
                    import torch

                    t = torch.as_tensor(x, device="cuda")
                    return cls("torch", t.device.index, t.device)
                raise TypeError(
                    f"{type(x).__name__} is a CUDA array, but neither CuPy nor torch is installed to hold "
                    "the result; install one of them or pass numpy arrays"
                )
            if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__") and not isinstance(x, np.ndarray):
                dev_type, dev_id = x.__dlpack_device__()
                if int(dev_type) == 2:  # kDLCUDA
                    if not _importable("torch"):
                        raise TypeError(f"{type(x).__name__} is a DLPack CUDA array; install torch or CuPy to pass it")
                    import torch

                    return cls("torch", int(dev_id), torch.device("cuda", int(dev_id)))
        return cls("numpy", _parse_device(device))

    # -- inputs -----------------------------------------------------------
    def put(self, x, name: str, *, finite: bool = True) -> _Buf:
        """x as a float32 C-contiguous device array of this context (no host copy for device inputs)."""
        if self.kind == "torch":
            torch = _torch()
            if not _is_torch(x):
                if hasattr(x, "__cuda_array_interface__"):
                    x = torch.as_tensor(x, device=self.torch_device)  # a view, no copy
                elif hasattr(x, "__dlpack__") and not isinstance(x, np.ndarray):
                    x = torch.from_dlpack(x)
                else:
                    x = torch.as_tensor(_checks.as_f32(x, name, finite=finite), device=self.torch_device)
            if not x.is_cuda or x.device.index != self.device:
                raise ValueError(f"{name} is on {x.device}, expected cuda:{self.device} like the other arrays")
            if x.is_complex() or x.dtype == torch.bool:
                raise TypeError(f"{name} has dtype {x.dtype}; expected real values")
            x = x.detach().to(torch.float32).contiguous()
            return _Buf(x, x.data_ptr(), x.shape)
        if self.kind == "raw":
            if isinstance(x, DeviceArray):
                if x.device != self.device:
                    raise ValueError(f"{name} is on cuda:{x.device}, expected cuda:{self.device} like the other arrays")
                return _Buf(x, x.ptr, x.shape)
            if hasattr(x, "__cuda_array_interface__") or _is_torch(x):
                raise TypeError(f"{name}: DeviceArray inputs cannot be mixed with other libraries' device arrays")
            a = DeviceArray.from_numpy(_checks.as_f32(x, name, finite=finite), self.device)
            return _Buf(a, a.ptr, a.shape)
        if self.kind == "cupy":
            import cupy

            with cupy.cuda.Device(self.device):
                if isinstance(x, np.ndarray) or not hasattr(x, "__cuda_array_interface__"):
                    x = _checks.as_f32(x, name, finite=finite)
                a = cupy.ascontiguousarray(cupy.asarray(x, dtype=cupy.float32))
            return _Buf(a, a.data.ptr, a.shape)
        a = _checks.as_f32(x, name, finite=finite)
        buf = _C.CudaBuffer(max(a.nbytes, _F32), self.device)
        buf.upload(a, self.stream)
        return _Buf(buf, buf.ptr, a.shape)

    def shape_of(self, x):
        if isinstance(x, DeviceArray) or _is_torch(x) or hasattr(x, "__cuda_array_interface__"):
            return tuple(int(s) for s in x.shape)
        return tuple(np.shape(x))

    # -- outputs ----------------------------------------------------------
    def empty(self, shape) -> _Buf:
        shape = tuple(int(s) for s in shape)
        if self.kind == "torch":
            t = _torch().empty(shape, dtype=_torch().float32, device=self.torch_device)
            return _Buf(t, t.data_ptr(), shape)
        if self.kind == "cupy":
            import cupy

            with cupy.cuda.Device(self.device):
                a = cupy.empty(shape, dtype=cupy.float32)
            return _Buf(a, a.data.ptr, shape)
        if self.kind == "raw":
            a = DeviceArray(shape, self.device)
            return _Buf(a, a.ptr, shape)
        n = max(1, math.prod(shape))
        buf = _C.CudaBuffer(n * _F32, self.device)
        return _Buf(buf, buf.ptr, shape)

    def result(self, b: _Buf):
        """The user-facing array of a buffer: the device array itself, or a numpy copy."""
        if self.kind == "numpy":
            out = np.empty(b.shape, dtype=np.float32)
            if out.size:
                b.obj.download(out, self.stream)
            return out
        return b.obj

    def moveaxis(self, b: _Buf, src: int, dst: int) -> _Buf:
        """A C-contiguous copy with axis src moved to dst, on the device."""
        if src % len(b.shape) == dst % len(b.shape):
            return b
        if self.kind == "torch":
            t = _torch().movedim(b.obj, src, dst).contiguous()
            return _Buf(t, t.data_ptr(), t.shape)
        if self.kind == "cupy":
            import cupy

            with cupy.cuda.Device(self.device):
                a = cupy.ascontiguousarray(cupy.moveaxis(b.obj, src, dst))
            return _Buf(a, a.data.ptr, a.shape)
        raise ValueError("DeviceArray inputs need the label axis last (channel_axis=-1)")


def _importable(name: str) -> bool:
    if name in sys.modules:
        return True
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ---------------------------------------------------------------------------
# Terms.


def _term_spec(compat, normalization, k: int):
    from .crf import Normalization, _compat_arg, _enum_arg

    kind, values = _compat_arg(compat, k)
    norm = _enum_arg(normalization, Normalization, "normalization")
    return kind, np.ascontiguousarray(values, dtype=np.float32), int(norm)


def _run_mean_field(ctx: _Ctx, unary: _Buf, n: int, k: int, segments, pairwise, n_iter: int, q0: _Buf | None):
    """pairwise: list of (features _Buf [N, d], kind, values, norm). Returns Q _Buf [N, K]."""
    keep = []
    terms = []
    for feats, kind, values, norm in pairwise:
        d = feats.shape[-1]
        lat = _C.CudaLattice(feats.ptr, n, d, list(segments), ctx.device, ctx.stream)
        terms.append(_C.CudaPairwiseTerm(lat, norm, kind, values, k, ctx.stream))
        keep.append(lat)
    if q0 is None:
        q = ctx.empty((n, k))
        _C.cuda_mean_field(unary.ptr, q.ptr, n, k, terms, n_iter, True, ctx.stream)
    else:
        q = q0
        _C.cuda_mean_field(unary.ptr, q.ptr, n, k, terms, n_iter, False, ctx.stream)
    return q


# ---------------------------------------------------------------------------
# Public API.


def mean_field(unary, pairwise, *, n_iter: int = 5, Q=None, device=None):
    r"""Mean-field inference on the GPU for one problem or a batch of B problems of one size.

    Iterates :math:`Q \leftarrow \operatorname{softmax}(-U - \sum_t \mu_t(\bar K_t Q))` as
    :meth:`densecrf.DenseCRF.inference` does, entirely on the device.

    Args:
        unary: ``[N, K]`` or ``[B, N, K]`` energies.
        pairwise: list of ``(features, compat)`` or ``(features, compat, normalization)``;
            features ``[N, d]`` or ``[B, N, d]`` (divided by the bandwidths), compat a Potts
            weight, a ``[K]`` diagonal or a ``[K, K]`` matrix, normalization as in
            :meth:`densecrf.DenseCRF.add_pairwise` (default 'symmetric').
        n_iter: iterations (0 returns softmax(-U), or Q).
        Q: optional starting distribution, the shape of unary (not modified).
        device: CUDA device for numpy inputs ('cuda', 'cuda:N' or N).

    Returns:
        Q, the shape of ``unary``: a numpy array for numpy input, else an array
        of the input's library on its device.
    """
    n_iter = _checks.positive_int(n_iter, "n_iter", minimum=0)
    items = [unary] + [p[0] for p in pairwise] + ([Q] if Q is not None else [])
    ctx = _Ctx.of(items, device)
    ushape = ctx.shape_of(unary)
    if len(ushape) not in (2, 3):
        raise ValueError(f"unary must be [N, K] or [B, N, K], got shape {_checks.shape_str(ushape)}")
    batch = 1 if len(ushape) == 2 else ushape[0]
    n_per, k = ushape[-2], ushape[-1]
    if k < 1:
        raise ValueError(f"unary must have at least one label, got shape {_checks.shape_str(ushape)}")
    n = batch * n_per
    u = ctx.put(unary, "unary")
    specs = []
    for t, p in enumerate(pairwise):
        if not 2 <= len(p) <= 3:
            raise ValueError(f"pairwise[{t}] must be (features, compat) or (features, compat, normalization)")
        fshape = ctx.shape_of(p[0])
        if len(fshape) != len(ushape) or tuple(fshape[:-1]) != tuple(ushape[:-1]) or not 1 <= fshape[-1] <= 32:
            raise ValueError(
                f"pairwise[{t}] features must have shape ({', '.join(map(str, ushape[:-1]))}, d) "
                f"with 1 <= d <= 32, got {_checks.shape_str(fshape)}"
            )
        f = ctx.put(p[0], f"pairwise[{t}] features")
        kind, values, norm = _term_spec(p[1], p[2] if len(p) == 3 else "symmetric", k)
        specs.append((_Buf(f.obj, f.ptr, (n, fshape[-1])), kind, values, norm))
    q0 = None
    if Q is not None:
        if tuple(ctx.shape_of(Q)) != tuple(ushape):
            raise ValueError(f"Q must have the shape of unary {_checks.shape_str(ushape)}, got {_checks.shape_str(ctx.shape_of(Q))}")
        # A fresh buffer: the caller's array is never written (put may return a view of it).
        q0 = _copy(ctx, ctx.put(Q, "Q"))
    segments = [b * n_per for b in range(batch + 1)]
    if n == 0:
        out = ctx.empty(ushape)
        return ctx.result(out)
    q = _run_mean_field(ctx, u, n, k, segments, specs, n_iter, q0)
    return ctx.result(_Buf(q.obj.reshape(ushape) if ctx.kind != "numpy" else q.obj, q.ptr, ushape))


def _copy(ctx: _Ctx, b: _Buf) -> _Buf:
    if ctx.kind == "torch":
        t = b.obj.clone()
        return _Buf(t, t.data_ptr(), b.shape)
    if ctx.kind == "raw":
        a = DeviceArray(b.shape, ctx.device)
        _C.cuda_copy_labels_layout(b.ptr, a.ptr, 1, 1, max(1, a.size), False, ctx.device, ctx.stream)
        return _Buf(a, a.ptr, b.shape)
    if ctx.kind == "cupy":
        a = b.obj.copy()
        return _Buf(a, a.data.ptr, b.shape)
    return b  # numpy inputs were uploaded into a fresh buffer already


def filter(features, values, *, transpose: bool = False, normalization=None, device=None):
    """Permutohedral-lattice Gaussian filter on the GPU (see :class:`densecrf.PermutohedralLattice`).

    features ``[N, d]`` or ``[B, N, d]``; values ``[N, C]`` or ``[B, N, C]`` (each of the B
    point sets filtered with its own lattice). ``normalization`` None filters with K;
    otherwise a :class:`densecrf.Normalization` as in a pairwise term. ``transpose`` applies
    the adjoint. Returns an array of the shape of ``values``.
    """
    ctx = _Ctx.of([features, values], device)
    fshape, vshape = ctx.shape_of(features), ctx.shape_of(values)
    if len(fshape) not in (2, 3) or not 1 <= fshape[-1] <= 32:
        raise ValueError(f"features must be [N, d] or [B, N, d] with 1 <= d <= 32, got {_checks.shape_str(fshape)}")
    if len(vshape) != len(fshape) or tuple(vshape[:-1]) != tuple(fshape[:-1]):
        raise ValueError(f"values must have shape ({', '.join(map(str, fshape[:-1]))}, C), got {_checks.shape_str(vshape)}")
    batch = 1 if len(fshape) == 2 else fshape[0]
    n_per, d, c = fshape[-2], fshape[-1], vshape[-1]
    n = batch * n_per
    out = ctx.empty(vshape)
    if n == 0 or c == 0:
        return ctx.result(out)
    f = ctx.put(features, "features")
    v = ctx.put(values, "values")
    lat = _C.CudaLattice(f.ptr, n, d, [b * n_per for b in range(batch + 1)], ctx.device, ctx.stream)
    if normalization is None:
        lat.filter(v.ptr, out.ptr, c, bool(transpose), 0, 0, ctx.stream)
    else:
        from .crf import Normalization, _enum_arg

        norm = int(_enum_arg(normalization, Normalization, "normalization"))
        term = _C.CudaPairwiseTerm(lat, norm, 0, np.ones(1, np.float32), 1, ctx.stream)
        term.filter(v.ptr, out.ptr, c, bool(transpose), ctx.stream)
    return ctx.result(out)


def _refine_core(ctx: _Ctx, items, *, channels_first: bool, n_iter, gaussian_sxy, gaussian_compat,
                 bilateral_sxy, bilateral_srgb, bilateral_compat, clip, scale, normalization):
    """items: list of (image _Buf, probs _Buf, batch, spatial, C, K). Returns one Q _Buf per item, laid out as its probs."""
    nd = len(items[0][3])
    k = items[0][5]
    c = items[0][4]
    counts = [b * math.prod(sp) for _, _, b, sp, _, _ in items]
    n = sum(counts)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    segments = [0]
    for _, _, b, sp, _, _ in items:
        s = math.prod(sp)
        for _ in range(b):  # every image of a batch is a segment of its own
            segments.append(segments[-1] + s)
    clip_v = 0.0 if clip is None else _checks.positive_scalar(clip, "clip")
    if clip_v > 1:
        raise ValueError(f"clip must be in (0, 1], got {clip_v}")
    scale_v = 0.0
    if scale is not None:
        scale_v = _checks.positive_scalar(scale, "scale")
        if scale_v > 1:
            raise ValueError(f"scale must be in (0, 1], got {scale_v}")
    unary = ctx.empty((n, k))
    for (img, prb, b, sp, _, _), st in zip(items, starts):
        _C.cuda_unary_from_probs(prb.ptr, unary.at(int(st) * k), b, math.prod(sp), k, channels_first,
                                 clip_v, scale_v, ctx.device, ctx.stream)
    specs = []
    if gaussian_compat is not None:
        sd = [float(np.float32(v)) for v in _checks.per_axis(gaussian_sxy, nd, "gaussian_sxy")]
        feats = ctx.empty((n, nd))
        for (img, prb, b, sp, _, _), st in zip(items, starts):
            _C.cuda_grid_features(0, feats.at(int(st) * nd), b, list(sp), sd, 0, [], channels_first,
                                  ctx.device, ctx.stream)
        specs.append((feats,) + _term_spec(gaussian_compat, normalization, k))
    if bilateral_compat is not None:
        sd = [float(np.float32(v)) for v in _checks.per_axis(bilateral_sxy, nd, "bilateral_sxy")]
        sc = [float(np.float32(v)) for v in _checks.per_axis(bilateral_srgb, c, "bilateral_srgb")]
        if nd + c > 32:
            raise ValueError(f"the bilateral features have {nd} positions + {c} channels > 32 dimensions")
        feats = ctx.empty((n, nd + c))
        for (img, prb, b, sp, _, _), st in zip(items, starts):
            _C.cuda_grid_features(img.ptr, feats.at(int(st) * (nd + c)), b, list(sp), sd, c, sc,
                                  channels_first, ctx.device, ctx.stream)
        specs.append((feats,) + _term_spec(bilateral_compat, normalization, k))
    if n == 0:
        return [ctx.empty(prb.shape) for _, prb, _, _, _, _ in items]
    q = _run_mean_field(ctx, unary, n, k, segments, specs, n_iter, None)
    outs = []
    for (img, prb, b, sp, _, _), st in zip(items, starts):
        out = ctx.empty(prb.shape)
        _C.cuda_copy_labels_layout(q.at(int(st) * k), out.ptr, b, math.prod(sp), k, channels_first,
                                   ctx.device, ctx.stream)
        outs.append(out)
    return outs


_REFINE_DEFAULTS = dict(n_iter=5, gaussian_sxy=3.0, gaussian_compat=3.0, bilateral_sxy=80.0,
                        bilateral_srgb=13.0, bilateral_compat=10.0, clip=1e-5, scale=None,
                        normalization="symmetric")


def refine(image, probs, *, channel_axis: int = -1, device=None, **params):
    """:func:`densecrf.refine` on the GPU: the same arguments, the same result up to float32 rounding.

    ``image`` ``[*spatial, C]`` (or ``[*spatial]``), ``probs`` ``[*spatial, K]`` with the label
    axis at ``channel_axis``; numpy arrays (run on ``device``, result in numpy) or device
    arrays (result on their device). Keyword parameters as :func:`densecrf.refine`
    (n_iter, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat,
    clip, scale, normalization). Probabilities are not checked to sum to one for device
    arrays (that check would wait for the GPU).
    """
    p = _refine_params(params)
    ctx = _Ctx.of([probs, image], device)
    pshape = ctx.shape_of(probs)
    if len(pshape) < 2:
        raise ValueError(f"probs must be [*spatial, K] with at least one spatial axis, got shape {_checks.shape_str(pshape)}")
    if not -len(pshape) <= channel_axis < len(pshape):
        raise ValueError(f"channel_axis={channel_axis} is out of range for probs of shape {_checks.shape_str(pshape)}")
    axis = channel_axis % len(pshape)
    if ctx.kind == "numpy":
        pr = _checks.as_f32(probs, "probs")
        pr = np.ascontiguousarray(np.moveaxis(pr, axis, -1))
        _check_sums(pr, channel_axis)
        prb = ctx.put(pr, "probs")
    else:
        prb = ctx.moveaxis(ctx.put(probs, "probs"), axis, -1)
    spatial, k = prb.shape[:-1], prb.shape[-1]
    if k < 1 or min(spatial) < 1:
        raise ValueError(f"probs must have at least one label and one pixel, got shape {_checks.shape_str(pshape)}")
    ishape = ctx.shape_of(image)
    if tuple(ishape) == tuple(spatial):
        ishape = tuple(ishape) + (1,)
    if len(ishape) != len(spatial) + 1 or tuple(ishape[:-1]) != tuple(spatial):
        raise ValueError(f"image must have shape ({', '.join(map(str, spatial))}, C) matching probs' spatial shape, got {_checks.shape_str(ctx.shape_of(image))}")
    img = ctx.put(image, "image")
    (out,) = _refine_core(ctx, [(img, prb, 1, tuple(spatial), ishape[-1], k)], channels_first=False, **p)
    if axis != len(pshape) - 1:
        out = ctx.moveaxis(out, -1, axis) if ctx.kind != "numpy" else out
    res = ctx.result(out)
    if ctx.kind == "numpy" and axis != len(pshape) - 1:
        res = np.ascontiguousarray(np.moveaxis(res, -1, axis))
    return res


def refine_batch(images, probs, *, channels_first: bool = True, device=None, **params):
    """Refines a batch of images in one call: B images of one size, or a list of any sizes.

    Layouts (``channels_first=True``, torch's): ``images`` ``[B, C, *spatial]`` and
    ``probs`` ``[B, K, *spatial]``; with ``channels_first=False``: ``[B, *spatial, C]`` and
    ``[B, *spatial, K]``. Either argument may instead be a list of per-image arrays
    (``[C, *spatial_b]`` / ``[K, *spatial_b]``, or channels-last) whose sizes differ; all
    images share K, C and the number of spatial axes. Every image gets its own lattice
    (vertices never cross images) but the whole batch is one lattice build and one
    mean-field run. Keyword parameters as :func:`densecrf.refine`.

    Returns Q in the layout of ``probs``: one array, or a list for list input.
    """
    p = _refine_params(params)
    as_list = isinstance(probs, (list, tuple))
    if as_list != isinstance(images, (list, tuple)):
        raise TypeError("images and probs must both be arrays or both be lists")
    plist = list(probs) if as_list else [probs]
    ilist = list(images) if as_list else [images]
    if len(plist) != len(ilist):
        raise ValueError(f"got {len(ilist)} images and {len(plist)} probability maps")
    if not plist:
        return []
    ctx = _Ctx.of(plist + ilist, device)
    items = []
    for j, (im, pr) in enumerate(zip(ilist, plist)):
        ps = ctx.shape_of(pr)
        lead = 0 if as_list else 1  # a batch axis
        if len(ps) < 2 + lead:
            raise ValueError(f"probs[{j}] has shape {_checks.shape_str(ps)}: too few axes")
        b = 1 if as_list else ps[0]
        body = ps[lead:]
        k = body[0] if channels_first else body[-1]
        spatial = tuple(body[1:]) if channels_first else tuple(body[:-1])
        ims = ctx.shape_of(im)
        ibody = ims[lead:]
        if len(ibody) == len(spatial):
            c = 1
            ispatial = tuple(ibody)
        else:
            c = ibody[0] if channels_first else ibody[-1]
            ispatial = tuple(ibody[1:]) if channels_first else tuple(ibody[:-1])
        if ispatial != spatial or (not as_list and ims[0] != b):
            raise ValueError(f"images[{j}] has shape {_checks.shape_str(ims)}, which does not match probs of shape {_checks.shape_str(ps)}")
        if items and (k != items[0][5] or c != items[0][4] or len(spatial) != len(items[0][3])):
            raise ValueError("all images must share the number of labels, of channels and of spatial axes")
        if k < 1 or min(spatial, default=0) < 1:
            raise ValueError(f"probs[{j}] must have at least one label and one pixel, got shape {_checks.shape_str(ps)}")
        if ctx.kind == "numpy":
            _check_sums(np.moveaxis(_checks.as_f32(pr, "probs"), lead if channels_first else -1, -1), "labels")
        items.append((ctx.put(im, f"images[{j}]"), ctx.put(pr, f"probs[{j}]"), b, spatial, c, k))
    outs = _refine_core(ctx, items, channels_first=channels_first, **p)
    res = [ctx.result(o) for o in outs]
    return res if as_list else res[0]


def _refine_params(params) -> dict:
    unknown = set(params) - set(_REFINE_DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    p = dict(_REFINE_DEFAULTS)
    p.update(params)
    p["n_iter"] = _checks.positive_int(p["n_iter"], "n_iter", minimum=0)
    return p


def _check_sums(p_last: np.ndarray, axis) -> None:
    sums = p_last.sum(axis=-1, dtype=np.float64)
    if sums.size and float(np.abs(sums - 1.0).max()) > 1e-2:
        # 1e-2: as densecrf.refine (a float16 softmax is off by up to ~K * 5e-4).
        raise ValueError(
            f"probs must sum to one over the label axis ({axis}); pass softmax probabilities"
        )


__all__ = ["DeviceArray", "cuda_available", "device_name", "filter", "mean_field", "refine", "refine_batch", "require_cuda"]
