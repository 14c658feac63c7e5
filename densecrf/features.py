"""Unary energies from network outputs and pairwise features from images.

Shapes follow the numpy convention of this package: per-pixel probabilities
are ``[*spatial, K]`` with the label axis last by default (``channel_axis`` as
in scikit-image), unaries are ``[N, K]`` energies with N the number of points
in C order, features are ``[N, d]``.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _checks
from ._native import _C


def _labels_last(a: np.ndarray, channel_axis: int, name: str) -> np.ndarray:
    if a.ndim < 1:
        raise ValueError(f"{name} must have a label axis, got a scalar")
    if not -a.ndim <= channel_axis < a.ndim:
        raise ValueError(
            f"channel_axis={channel_axis} is out of range for {name} of shape {_checks.shape_str(a.shape)}"
        )
    return np.moveaxis(a, channel_axis, -1)


def unary_from_softmax(
    probs, *, scale: float | None = None, clip: float | None = 1e-5, channel_axis: int = -1
) -> np.ndarray:
    r"""Unary energies :math:`U = -\log p` from class probabilities.

    Args:
        probs: ``[*spatial, K]`` probabilities (label axis at ``channel_axis``).
            They should sum to one over the labels; they are not renormalised.
        scale: if given, in (0, 1]: mixes the probabilities with the uniform
            distribution, ``scale * p + (1 - scale) / K`` (confidence in the model).
        clip: lower bound applied before the logarithm (so that p = 0 gives a
            finite energy, -log(clip)); None disables it (then p must be > 0).
        channel_axis: the label axis of ``probs``.

    Returns:
        ``[N, K]`` float32 energies, N = prod(spatial) in C order.
    """
    p = _checks.as_f32(probs, "probs")
    p = _labels_last(p, channel_axis, "probs")
    return _unary_from_probs(p, scale=scale, clip=clip)


def _unary_job(p: np.ndarray, *, scale, clip):
    """A ``_C.UnaryJob`` for refine's shared unary pass (see
    :func:`_unary_from_probs`'s ``job``), or None where the pass does not
    take that form (no clip, or ``scale`` given)."""
    if clip is None or scale is not None or p.shape[-1] < 1:
        return None
    c = _clip_value(clip)
    return _C.UnaryJob(np.ascontiguousarray(p.reshape(-1, p.shape[-1])), c, True)


def _clip_value(clip) -> float:
    c = _checks.positive_scalar(clip, "clip")
    if c > 1:
        raise ValueError(f"clip must be in (0, 1], got {c}")
    return c


def _unary_from_probs(
    p: np.ndarray, *, scale, clip, with_stats: bool = False, threads: int = 0, with_start: bool = False, job=None
):
    """unary_from_softmax on float32 probabilities with the labels last.

    Checks finiteness on the way (native, one pass) and the [0, 1] range;
    with ``with_stats`` it returns ``(u, (min, max, max |sum_k p - 1|))``
    instead and leaves the range check to the caller. ``threads``: native
    threads (0: the default). ``with_start`` (with ``with_stats``) adds a
    third item: mean field's start distribution softmax(-u), computed in the
    same pass as ``max(p, clip) / sum(max(p, clip))`` (a ``_C.StartQ``, or
    None where that pass does not apply: no clip, ``scale`` given, K > 64).
    ``job``: the :func:`_unary_job` of the same ``p``, ``clip`` and
    ``scale`` (with ``with_start``), which other threads may have run in
    part; this call runs what is left on ``threads`` and takes its result.
    """
    k = p.shape[-1]
    if k < 1:
        raise ValueError(f"probs must have at least one label, got shape {_checks.shape_str(p.shape)}")
    # A job holds its own contiguous copy, and is made only with a clip and
    # no scale: flat is read only without one.
    flat = np.ascontiguousarray(p.reshape(-1, k)) if job is None else np.empty((0, k), np.float32)
    if scale is not None:
        s = _checks.positive_scalar(scale, "scale")
        if s > 1:
            raise ValueError(f"scale must be in (0, 1], got {s}")
    if clip is None:
        _checks.check_finite(p, "probs")
        lo, hi = (float(p.min()), float(p.max())) if p.size else (0.0, 0.0)
        dev = float(np.abs(flat.sum(axis=1, dtype=np.float64) - 1.0).max()) if flat.size else 0.0
        if lo <= 0 and scale is None:
            raise ValueError("probs contains zeros and clip=None: -log(0) is infinite")
        u = None
    else:
        c = _clip_value(clip)
        # -log(max(p, clip)) in float32 (pydensecrf.utils computes the same
        # with numpy; the native log differs by at most 1 ulp of float32).
        start_ok = with_start and scale is None
        if job is not None:
            job.run(threads)
            u, lo, hi, dev, bad, *start = job.result()
        else:
            u, lo, hi, dev, bad, *start = _C.unary_from_probs(flat, c, threads, start_ok)
        if bad >= 0:
            idx = np.unravel_index(int(bad), p.shape)
            raise ValueError(f"probs must be finite; found {p[idx]} at index {tuple(int(i) for i in idx)}")
    if not with_stats:
        check_prob_range(lo, hi, p.size)
    if scale is not None:
        mixed = (s * flat.astype(np.float64) + (1.0 - s) / k).astype(np.float32)
        if clip is None:
            u = -np.log(mixed)
        else:
            u = _C.unary_from_probs(mixed, c, threads)[0]
    elif u is None:
        u = np.log(flat)
        np.negative(u, out=u)
    if with_stats and with_start:
        return u, (float(lo), float(hi), float(dev)), (start[0] if clip is not None and start else None)
    return (u, (float(lo), float(hi), float(dev))) if with_stats else u


def check_prob_range(lo: float, hi: float, size: int) -> None:
    if size and (lo < 0 or hi > 1.0 + 1e-3):
        # 1e-3: room for float32 rounding of probabilities that sum to one.
        raise ValueError(f"probs must lie in [0, 1]; found values in [{lo:g}, {hi:g}]")


def _grid_features(spatial, sdims, image=None, srgb=None, threads=None, srgb_name="srgb") -> np.ndarray:
    """``[N, ndim (+ C)]`` float32: grid positions / sdims (last axis first),
    then, with ``image`` (float32 C-contiguous ``[*spatial, C]``), the channels / srgb.

    Built natively in one parallel pass; every value is the float32
    quotient of the plain numpy expression.
    """
    spatial = tuple(_checks.positive_int(s, "spatial") for s in spatial)
    nd = len(spatial)
    s = _checks.per_axis(sdims, nd, "sxy")
    if image is None:
        return _C.grid_features(list(spatial), s, None, [], _checks.threads_arg(threads))
    c = image.shape[-1]
    sc = _checks.per_axis(srgb, c, srgb_name)
    return _C.grid_features(list(spatial), s, image.reshape(-1, c), sc, _checks.threads_arg(threads))


def unary_from_labels(labels, n_labels: int, *, gt_prob: float = 0.5, unknown: int | None = None) -> np.ndarray:
    """Unary energies from a hard label map with a confidence.

    A pixel labelled ``l`` gets probability ``gt_prob`` for ``l`` and
    ``(1 - gt_prob) / (K - 1)`` for every other label; pixels equal to
    ``unknown`` (if given, e.g. 255 or -1) get the uniform distribution.

    Args:
        labels: integer array of any shape, values in ``[0, n_labels)`` or ``unknown``.
        n_labels: K >= 2.
        gt_prob: confidence in the labels, in (0, 1).
        unknown: label value meaning "could be anything".

    Returns:
        ``[N, K]`` float32 energies, N = labels.size in C order.
    """
    lab = _checks.as_array(labels, "labels")
    if not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == np.bool_):
        if np.issubdtype(lab.dtype, np.floating) and np.all(np.isfinite(lab)) and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int64)
        else:
            raise TypeError(f"labels must be integers, got dtype {lab.dtype}")
    lab = lab.astype(np.int64).ravel()
    k = _checks.positive_int(n_labels, "n_labels", minimum=2)
    g = _checks.positive_scalar(gt_prob, "gt_prob")
    if not 0 < g < 1:
        raise ValueError(f"gt_prob must be in (0, 1), got {g}")
    known = np.ones(lab.shape, dtype=bool)
    if unknown is not None:
        if not isinstance(unknown, numbers.Integral):
            raise TypeError(f"unknown must be an integer label value, got {unknown!r}")
        known = lab != int(unknown)
    bad = known & ((lab < 0) | (lab >= k))
    if bad.any():
        raise ValueError(f"labels must be in [0, {k}) (or the unknown value); found {int(lab[bad][0])}")
    u = np.full((lab.size, k), -np.log((1.0 - g) / (k - 1)), dtype=np.float32)
    idx = np.nonzero(known)[0]
    u[idx, lab[idx]] = -np.log(g)
    u[~known] = -np.log(1.0 / k)
    return u


def gaussian_features(shape, sdims) -> np.ndarray:
    """Position features for a Gaussian (smoothness) kernel on a grid.

    Args:
        shape: the grid shape, e.g. ``(H, W)`` or ``(D, H, W)``.
        sdims: bandwidth per axis (a number broadcasts), in pixels.

    Returns:
        ``[prod(shape), len(shape)]`` float32: the index of each point along
        each axis (C order, 'ij' indexing) divided by that axis' bandwidth.
    """
    shape = tuple(_checks.positive_int(s, "shape") for s in shape)
    if not shape:
        raise ValueError("shape must have at least one axis")
    s = _checks.per_axis(sdims, len(shape), "sdims")
    grids = np.meshgrid(
        *[np.arange(n, dtype=np.float32) / np.float32(b) for n, b in zip(shape, s, strict=True)], indexing="ij"
    )
    return np.ascontiguousarray(np.stack([g.ravel() for g in grids], axis=1), dtype=np.float32)


def bilateral_features(image, sdims, schan, *, channel_axis: int | None = -1) -> np.ndarray:
    """Position and colour features for a bilateral (appearance) kernel.

    Args:
        image: ``[*spatial, C]`` image or volume (any real dtype; uint8 values
            are used as 0..255), or ``[*spatial]`` with ``channel_axis=None``.
        sdims: positional bandwidth per spatial axis (a number broadcasts).
        schan: bandwidth per channel (a number broadcasts), in image units.
        channel_axis: the channel axis of ``image``, or None for one channel.

    Returns:
        ``[N, len(spatial) + C]`` float32: positions / sdims then channels / schan.
    """
    im = _checks.as_f32(image, "image")
    if channel_axis is None:
        im = im[..., None]
    else:
        im = _labels_last(im, channel_axis, "image")
    spatial = im.shape[:-1]
    if len(spatial) < 1 or min(spatial, default=0) < 1:
        raise ValueError(
            f"image must have at least one non-empty spatial axis, got shape {_checks.shape_str(im.shape)}"
        )
    c = im.shape[-1]
    if c < 1:
        raise ValueError(f"image must have at least one channel, got shape {_checks.shape_str(im.shape)}")
    pos = gaussian_features(spatial, sdims)
    sc = np.asarray(_checks.per_axis(schan, c, "schan"), dtype=np.float32)
    col = im.reshape(-1, c) / sc
    return np.ascontiguousarray(np.concatenate([pos, col], axis=1), dtype=np.float32)
