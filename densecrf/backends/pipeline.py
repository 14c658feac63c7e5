"""The one refine pipeline: arrays in, problem described, a backend runs it, arrays out.

:func:`refine` and :func:`refine_batch` serve :func:`densecrf.refine`,
:func:`densecrf.refine_batch` and :mod:`densecrf.cuda` alike:

1. settings: the CRF arguments, or a ``params=`` file (:func:`problem.settings`);
2. shapes: each image and probability map checked (:func:`problem.probs_layout`,
   :func:`problem.image_layout`);
3. the :class:`problem.Problem` (terms, compatibilities, normalisation,
   unary clip and scale, iterations), checked against those shapes;
4. the arrays converted once (:mod:`densecrf.arrays`): float32 host arrays
   for the CPU backend, device buffers on the arrays' own library and stream
   for the CUDA backend;
5. ``backend.refine(problem, items)``, then the results in the caller's
   layout and library.
"""

from __future__ import annotations

import numpy as np

from .. import _checks, arrays
from ..features import check_prob_range
from . import cuda as _cuda
from .cpu import CpuBackend, sums_message
from .cpu64 import Cpu64Backend
from .problem import describe, image_layout, probs_layout, settings, uses_image, warn_image_units

# warnings.warn's stacklevel, seen from a _refine_* function, that names the
# caller of densecrf.refine / refine_batch / densecrf.cuda.refine: above
# _refine_* come pipeline.refine, the public function, then the caller.
_CALLER = 4


def refine(
    image,
    probs,
    *,
    channel_axis: int = -1,
    volume: bool = False,
    device="cpu",
    threads=None,
    params=None,
    image_range=None,
    dtype=None,
    **kwargs,
):
    """:func:`densecrf.refine` (see there) on ``device``."""
    s = settings(params, **kwargs)
    dt = _checks.dtype_arg(dtype)
    if arrays.is_cpu(device):
        return _refine_cpu(image, probs, channel_axis, volume, threads, s, image_range, dt)
    return _refine_cuda(image, probs, channel_axis, volume, device, s, image_range, dt)


def _refine_cpu(image, probs, channel_axis, volume, threads, s, image_range, dt=np.float32):
    if dt == np.float64:
        p = arrays.host64(probs, "probs")
        im = arrays.host64(image, "image")
    else:
        p = arrays.host(probs, "probs", finite=False)  # finiteness: checked natively with the unary
        im = arrays.host(image, "image")
    axis, spatial, k = probs_layout(p.shape, channel_axis, volume=volume)
    c = image_layout(im.shape, spatial, p.shape, axis)
    backend = Cpu64Backend(threads) if dt == np.float64 else CpuBackend(threads)
    problem = describe(
        s, labels=k, ndim=len(spatial), channels=c, label_axis=channel_axis, image_range=image_range, dtype=dt
    )
    if uses_image(problem):
        warn_image_units(
            image_range,
            c,
            arrays.is_float(image),
            lambda: im.max() if im.size else 0.0,
            what="image",
            stacklevel=_CALLER,
        )
    try:
        (q,) = backend.refine(problem, [(im, np.moveaxis(p, axis, -1), 1, spatial)])
    except ValueError as exc:
        if "finite" in str(exc):  # report the index in the caller's layout
            _checks.check_finite(p, "probs")
        raise
    return np.ascontiguousarray(np.moveaxis(q, -1, channel_axis))


def _refine_cuda(image, probs, channel_axis, volume, device, s, image_range, dt=np.float32):
    place = _cuda.place_of([probs, image], device, dt)
    pshape = place.shape_of(probs)
    axis, spatial, k = probs_layout(pshape, channel_axis, volume=volume)
    c = image_layout(place.shape_of(image), spatial, pshape, axis)
    problem = describe(
        s, labels=k, ndim=len(spatial), channels=c, label_axis=channel_axis, image_range=image_range, dtype=dt
    )
    if place.kind == "numpy":
        # Host arrays are checked on the host (device arrays are not: that
        # would wait for the GPU), with the label axis moved there too.
        host = place.host(probs, "probs")
        prb = place.upload(_checked_host_probs(np.ascontiguousarray(np.moveaxis(host, axis, -1)), channel_axis))
    else:
        prb = place.moveaxis(place.put(probs, "probs"), axis, -1)
    img = place.put(image, "image")
    if uses_image(problem):
        warn_image_units(
            image_range, c, arrays.is_float(image), lambda: place.peak(img), what="image", stacklevel=_CALLER
        )
    (out,) = _cuda.CudaBackend(place).refine(problem, [(img, prb, 1, tuple(spatial))])
    last = len(pshape) - 1
    if place.kind == "numpy":
        res = place.result(out)
        return res if axis == last else np.ascontiguousarray(np.moveaxis(res, -1, axis))
    return place.result(out if axis == last else place.moveaxis(out, -1, axis))


def _checked_host_probs(p_last: np.ndarray, label_axis) -> np.ndarray:
    """Host probabilities (labels last) checked as the CPU backend checks them: sums, range."""
    sums = p_last.sum(axis=-1, dtype=np.float64)
    if sums.size and float(np.abs(sums - 1.0).max()) > 1e-2:
        # 1e-2: as the CPU backend (a float16 softmax is off by up to ~K * 5e-4).
        raise ValueError(sums_message(sums, label_axis))
    if p_last.size:
        check_prob_range(float(p_last.min()), float(p_last.max()), p_last.size)
    return p_last


def refine_batch(
    images,
    probs,
    *,
    channels_first: bool = False,
    volume: bool = False,
    device="cpu",
    threads=None,
    params=None,
    image_range=None,
    dtype=None,
    **kwargs,
):
    """:func:`densecrf.refine_batch` (see there) on ``device``."""
    s = settings(params, **kwargs)
    dt = _checks.dtype_arg(dtype)
    as_list = isinstance(probs, (list, tuple))
    if as_list != isinstance(images, (list, tuple)):
        raise TypeError("images and probs must both be arrays or both be lists")
    plist = list(probs) if as_list else [probs]
    ilist = list(images) if as_list else [images]
    if len(plist) != len(ilist):
        raise ValueError(f"got {len(ilist)} images and {len(plist)} probability maps")
    if not plist:
        return []
    names = [(f"images[{j}]", f"probs[{j}]") if as_list else ("images", "probs") for j in range(len(plist))]
    if arrays.is_cpu(device):
        res = _refine_batch_cpu(ilist, plist, names, as_list, channels_first, volume, threads, s, image_range, dt)
    else:
        res = _refine_batch_cuda(ilist, plist, names, as_list, channels_first, volume, device, s, image_range, dt)
    return res if as_list else res[0]


def _batch_problem(ishapes, pshapes, as_list, channels_first, volume, s, image_range, dt=np.float32):
    """(per entry (count, spatial, K, C), the Problem) of a batch."""
    layouts = [
        _batch_layout(i, p, j, as_list, channels_first, volume)
        for j, (i, p) in enumerate(zip(ishapes, pshapes, strict=True))
    ]
    k, c, nd = layouts[0][2], layouts[0][3], len(layouts[0][1])
    if any((lk, lc, len(sp)) != (k, c, nd) for _, sp, lk, lc in layouts):
        raise ValueError("all images must share the number of labels, of channels and of spatial axes")
    problem = describe(
        s,
        labels=k,
        ndim=nd,
        channels=c,
        channels_first=channels_first,
        label_axis=0 if channels_first else -1,
        image_range=image_range,
        dtype=dt,
    )
    return layouts, problem


def _warn_batch_units(problem, image_range, originals, names, peaks) -> None:
    """The image-units warning for the first image of a batch that looks like 0..1 values."""
    if not uses_image(problem) or image_range is not None or problem.channels != 3:
        return
    for x, (iname, _), peak in zip(originals, names, peaks, strict=True):
        if not arrays.is_float(x):
            continue
        m = float(peak())
        if 0.0 < m <= 1.0:
            # warn_image_units words the warning; one per call. stacklevel: this
            # function, then _refine_batch_*, pipeline.refine_batch, the public function.
            warn_image_units(image_range, problem.channels, True, lambda m=m: m, what=iname, stacklevel=_CALLER + 1)
            return


def _refine_batch_cpu(
    ilist, plist, names, as_list, channels_first, volume, threads, s, image_range, dt=np.float32
) -> list:
    if dt == np.float64:
        plist = [arrays.host64(p, n) for p, (_, n) in zip(plist, names, strict=True)]
    else:
        plist = [
            arrays.host(p, n, finite=False) for p, (_, n) in zip(plist, names, strict=True)
        ]  # finite: checked natively
    originals = ilist
    host = arrays.host64 if dt == np.float64 else arrays.host
    ilist = [host(im, n) for im, (n, _) in zip(ilist, names, strict=True)]
    layouts, problem = _batch_problem(
        [im.shape for im in ilist], [p.shape for p in plist], as_list, channels_first, volume, s, image_range, dt
    )
    _warn_batch_units(
        problem, image_range, originals, names, [(lambda im=im: im.max() if im.size else 0.0) for im in ilist]
    )
    backend = Cpu64Backend(threads) if dt == np.float64 else CpuBackend(threads)
    try:
        return backend.refine(
            problem, [(im, pr, b, sp) for im, pr, (b, sp, _, _) in zip(ilist, plist, layouts, strict=True)]
        )
    except ValueError as exc:
        if "finite" in str(exc):  # name the map and the index in the caller's layout
            for pr, (_, n) in zip(plist, names, strict=True):
                _checks.check_finite(pr, n)
        raise


def _refine_batch_cuda(
    ilist, plist, names, as_list, channels_first, volume, device, s, image_range, dt=np.float32
) -> list:
    place = _cuda.place_of(plist + ilist, device, dt)
    layouts, problem = _batch_problem(
        [place.shape_of(im) for im in ilist],
        [place.shape_of(p) for p in plist],
        as_list,
        channels_first,
        volume,
        s,
        image_range,
        dt,
    )
    lead_label = (0 if as_list else 1) if channels_first else -1  # the label axis of each probs array
    items = []
    for im, pr, (b, sp, _, _), (iname, pname) in zip(ilist, plist, layouts, names, strict=True):
        if place.kind == "numpy":
            h = place.host(pr, pname)
            _checked_host_probs(np.moveaxis(h, lead_label, -1), problem.label_axis)
            prb = place.upload(h)
        else:
            prb = place.put(pr, pname)
        items.append((place.put(im, iname), prb, b, sp))
    _warn_batch_units(problem, image_range, ilist, names, [lambda buf=item[0]: place.peak(buf) for item in items])
    return [place.result(o) for o in _cuda.CudaBackend(place).refine(problem, items)]


def _batch_layout(ishape, pshape, j: int, as_list: bool, channels_first: bool, volume: bool):
    """(count, spatial, K, C) of one entry of a batch."""
    lead = 0 if as_list else 1  # a batch axis
    if len(pshape) < 2 + lead:
        raise ValueError(
            f"probs[{j}] has shape {_checks.shape_str(pshape)}: too few axes"
            + ("" if as_list else "; a batch array is [B, *spatial, K] ([B, K, *spatial] channels first)")
        )
    b = 1 if as_list else pshape[0]
    body = pshape[lead:]
    k = body[0] if channels_first else body[-1]
    spatial = tuple(body[1:]) if channels_first else tuple(body[:-1])
    ibody = ishape[lead:]
    if len(ibody) == len(spatial):
        c, ispatial = 1, tuple(ibody)
    else:
        c = ibody[0] if channels_first else ibody[-1]
        ispatial = tuple(ibody[1:]) if channels_first else tuple(ibody[:-1])
    if ispatial != spatial or (not as_list and ishape[0] != b):
        raise ValueError(
            f"images[{j}] has shape {_checks.shape_str(ishape)}, which does not match probs of shape "
            f"{_checks.shape_str(pshape)} (channels_first={channels_first})"
        )
    if k < 1 or min(spatial, default=0) < 1:
        raise ValueError(
            f"probs[{j}] must have at least one label and one pixel, got shape {_checks.shape_str(pshape)}"
        )
    if len(spatial) > 2 and not volume:
        raise ValueError(
            f"probs[{j}] of shape {_checks.shape_str(pshape)} is a {len(spatial)}-D volume per image; "
            "pass volume=True to refine volumes"
        )
    return b, spatial, k, c
