"""CUDA backend API: dense-CRF mean field on the GPU, batched and deterministic.

Arrays may be numpy arrays (copied to the GPU and back), torch CUDA tensors
or CuPy arrays (and other ``__cuda_array_interface__`` / DLPack CUDA arrays
when torch or CuPy is installed to receive the result). Device arrays stay on
their device: the work runs on the array library's current stream
(``torch.cuda.current_stream()``, ``cupy.cuda.get_current_stream()``) and the
result is an array of the same library on the same device, produced without
a copy through the host. numpy inputs run on the legacy default stream of
``device`` and come back as numpy arrays. (The conversions are
:mod:`densecrf.arrays`'; the kernels are driven by
:class:`densecrf.backends.CudaBackend`.)

The native kernels (``cuda/lattice_cuda.cu``) implement the same lattice as
the CPU backend: same embedding (the same source, compiled by nvcc), same
vertex numbering, per-vertex sums in the same order, no FMA contraction. The
results are deterministic (bit-identical from run to run on one device) and
agree with the CPU backend to float32 rounding of the softmax (CPU and GPU
exponentials differ in the last bits). ``dtype=numpy.float64`` runs the same
kernels in double (inputs converted to float64, results float64): the float64
CPU backend's answers to double rounding.

Batches: B images of one size are one call; a list of images of different
sizes is one call too (all images share one lattice structure whose vertices
never cross images, so each image is filtered with its own lattice).

Nothing here imports torch or CuPy at import time.
"""

from __future__ import annotations

from . import _checks
from .backends import pipeline as _pipeline
from .backends.cuda import (
    CudaBackend,
    DeviceArray,
    cuda_available,
    device_name,
    empty_cache,
    memory_reserved,
    place_of,
    require_cuda,
)
from .backends.problem import Normalization, compat_arg, enum_arg


def mean_field(unary, pairwise, *, n_iter: int = 5, Q=None, device=None, dtype=None):
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
        dtype: ``numpy.float32`` (None, the default) or ``numpy.float64``: the
            dtype of the whole computation and of the result, whatever the inputs'.

    Returns:
        Q, the shape of ``unary``, in ``dtype``: a numpy array for numpy input, else an
        array of the input's library on its device.
    """
    n_iter = _checks.positive_int(n_iter, "n_iter", minimum=0)
    items = [unary] + [p[0] for p in pairwise] + ([Q] if Q is not None else [])
    place = place_of(items, device, _checks.dtype_arg(dtype))
    ushape = place.shape_of(unary)
    if len(ushape) not in (2, 3):
        raise ValueError(f"unary must be [N, K] or [B, N, K], got shape {_checks.shape_str(ushape)}")
    batch = 1 if len(ushape) == 2 else ushape[0]
    n_per, k = ushape[-2], ushape[-1]
    if k < 1:
        raise ValueError(f"unary must have at least one label, got shape {_checks.shape_str(ushape)}")
    n = batch * n_per
    u = place.put(unary, "unary")
    specs = []
    for t, p in enumerate(pairwise):
        if not 2 <= len(p) <= 3:
            raise ValueError(f"pairwise[{t}] must be (features, compat) or (features, compat, normalization)")
        fshape = place.shape_of(p[0])
        if len(fshape) != len(ushape) or tuple(fshape[:-1]) != tuple(ushape[:-1]) or not 1 <= fshape[-1] <= 32:
            raise ValueError(
                f"pairwise[{t}] features must have shape ({', '.join(map(str, ushape[:-1]))}, d) "
                f"with 1 <= d <= 32, got {_checks.shape_str(fshape)}"
            )
        f = place.put(p[0], f"pairwise[{t}] features")
        kind, values = compat_arg(p[1], k, place.dtype)
        norm = enum_arg(p[2] if len(p) == 3 else "symmetric", Normalization, "normalization")
        specs.append((f.view((n, fshape[-1])), kind, values, norm))
    q0 = None
    if Q is not None:
        if tuple(place.shape_of(Q)) != tuple(ushape):
            raise ValueError(
                f"Q must have the shape of unary {_checks.shape_str(ushape)}, got {_checks.shape_str(place.shape_of(Q))}"
            )
        # A fresh buffer: the caller's array is never written (put may return a view of it).
        q0 = place.copy(place.put(Q, "Q")).view((n, k))
    if n == 0:
        return place.result(place.empty(ushape))
    backend = CudaBackend(place)
    segments = [b * n_per for b in range(batch + 1)]
    lattices, terms = [], []
    for f, kind, values, norm in specs:
        lattices.append(backend.lattice(f, segments))
        terms.append(backend.term(lattices[-1], kind, values, norm, k))
    q = backend.mean_field(u.view((n, k)), terms, n_iter, q0)
    return place.result(q.view(ushape))


def filter(features, values, *, transpose: bool = False, normalization=None, device=None, dtype=None):
    """Permutohedral-lattice Gaussian filter on the GPU (see :class:`densecrf.PermutohedralLattice`).

    features ``[N, d]`` or ``[B, N, d]``; values ``[N, C]`` or ``[B, N, C]`` (each of the B
    point sets filtered with its own lattice). ``normalization`` None filters with K;
    otherwise a :class:`densecrf.Normalization` as in a pairwise term. ``transpose`` applies
    the adjoint. ``dtype``: float32 (None) or ``numpy.float64``, as :func:`mean_field`.
    Returns an array of the shape of ``values``, in ``dtype``.
    """
    place = place_of([features, values], device, _checks.dtype_arg(dtype))
    fshape, vshape = place.shape_of(features), place.shape_of(values)
    if len(fshape) not in (2, 3) or not 1 <= fshape[-1] <= 32:
        raise ValueError(f"features must be [N, d] or [B, N, d] with 1 <= d <= 32, got {_checks.shape_str(fshape)}")
    if len(vshape) != len(fshape) or tuple(vshape[:-1]) != tuple(fshape[:-1]):
        raise ValueError(
            f"values must have shape ({', '.join(map(str, fshape[:-1]))}, C), got {_checks.shape_str(vshape)}"
        )
    batch = 1 if len(fshape) == 2 else fshape[0]
    n_per, d, c = fshape[-2], fshape[-1], vshape[-1]
    n = batch * n_per
    if n == 0 or c == 0:
        return place.result(place.empty(vshape))
    norm = None if normalization is None else enum_arg(normalization, Normalization, "normalization")
    f = place.put(features, "features")
    v = place.put(values, "values")
    backend = CudaBackend(place)
    lat = backend.lattice(f.view((n, d)), [b * n_per for b in range(batch + 1)])
    out = backend.filter(lat, v.view((n, c)), transpose, norm)
    return place.result(out.view(vshape))


def refine(image, probs, *, channel_axis: int = -1, device=None, volume: bool = False, **params):
    """:func:`densecrf.refine` on the GPU: the same arguments, the same result up to float32
    rounding (to float64 rounding with ``dtype=numpy.float64``).

    ``image`` ``[*spatial, C]`` (or ``[*spatial]``), ``probs`` ``[*spatial, K]`` with the label
    axis at ``channel_axis``; numpy arrays (run on ``device``, default 'cuda', result in numpy)
    or device arrays (result on their device). Keyword parameters as :func:`densecrf.refine`
    (n_iter, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat,
    clip, scale, normalization, params; ``volume=True`` for 3 or more spatial axes; ``image_range``,
    images in 0..255 units unless stated). A float RGB image in 0..1 passed without ``image_range``
    is warned about; on device arrays that check reads the image's maximum (one reduction and a
    wait for it), which a stated ``image_range`` skips.
    Probabilities are not checked to sum to one for device arrays (that check would wait
    for the GPU).
    """
    return _pipeline.refine(
        image, probs, channel_axis=channel_axis, volume=volume, device="cuda" if device is None else device, **params
    )


def refine_batch(images, probs, *, channels_first: bool = True, device=None, **params):
    """:func:`densecrf.refine_batch` on the GPU, channels first by default (torch's layout).

    The same as ``densecrf.refine_batch(images, probs, device=device or 'cuda',
    channels_first=channels_first, volume=True, ...)``, kept for code written before
    :func:`densecrf.refine_batch` took ``device``: ``images`` ``[B, C, *spatial]`` and
    ``probs`` ``[B, K, *spatial]`` (or lists of per-image arrays of different sizes);
    with ``channels_first=False``, ``[B, *spatial, C]`` and ``[B, *spatial, K]``. Every
    image gets its own lattice (vertices never cross images) but the whole batch is one
    lattice build and one mean-field run. Returns Q in the layout of ``probs``: one
    array, or a list for list input.
    """
    params.setdefault("volume", True)
    return _pipeline.refine_batch(
        images, probs, channels_first=channels_first, device="cuda" if device is None else device, **params
    )


__all__ = [
    "DeviceArray",
    "cuda_available",
    "device_name",
    "empty_cache",
    "filter",
    "mean_field",
    "memory_reserved",
    "refine",
    "refine_batch",
    "require_cuda",
]
