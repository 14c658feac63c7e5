"""pydensecrf's ``utils`` module: unaries and pairwise features in pydensecrf's layouts.

Unaries are returned as ``[n_labels, N]`` and features as ``[d, N]``, with
the same values pydensecrf.utils computes.
"""

from __future__ import annotations

import logging
import numbers

import numpy as np

from ... import _checks
from ..._native import _C


def unary_from_labels(labels, n_labels, gt_prob, zero_unsure=True):
    """Unary ``[n_labels, N]`` from a label map: ``gt_prob`` on the given label.

    With ``zero_unsure`` (the default), label value 0 means "unknown" (uniform)
    and labels 1..n_labels map to rows 0..n_labels-1.
    """
    if not 0 < gt_prob < 1:
        raise ValueError(f"gt_prob must be in (0, 1), got {gt_prob}")
    lab = np.asarray(labels).ravel()
    if not np.issubdtype(lab.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {lab.dtype}")
    n_labels = _checks.positive_int(n_labels, "n_labels", minimum=2)
    lo, hi = (0, n_labels) if zero_unsure else (0, n_labels - 1)
    if lab.size and (lab.min() < lo or lab.max() > hi):
        raise ValueError(f"labels must be in [{lo}, {hi}], found values in [{int(lab.min())}, {int(lab.max())}]")
    other = -np.log((1.0 - gt_prob) / (n_labels - 1))
    u = np.full((n_labels, lab.size), other, dtype=np.float32)
    rows = lab - 1 if zero_unsure else lab
    cols = np.arange(lab.size)
    known = lab != 0 if zero_unsure else np.ones(lab.size, dtype=bool)
    u[rows[known], cols[known]] = -np.log(gt_prob)
    if zero_unsure:
        u[:, ~known] = -np.log(1.0 / n_labels)
    return u


def compute_unary(labels, M, GT_PROB=0.5):
    """Deprecated alias of unary_from_labels (as in pydensecrf)."""
    logging.warning("pydensecrf.compute_unary is deprecated, use unary_from_labels instead.")
    return unary_from_labels(labels, M, GT_PROB)


def unary_from_softmax(sm, scale=None, clip=1e-5):
    """Unary ``[n_classes, N]`` = -log(p) from probabilities ``sm`` with the classes first."""
    p = _checks.as_array(sm, "sm")
    if p.ndim < 1 or p.shape[0] < 1:
        raise ValueError(
            f"sm must have the classes (at least one) as its first axis, got shape {_checks.shape_str(p.shape)}"
        )
    _checks.as_f32(p, "sm")  # finite check only: the computation below follows pydensecrf's dtypes
    k = p.shape[0]
    if scale is not None:
        if not 0 < scale <= 1:
            raise ValueError(f"scale needs to be in (0, 1], got {scale}")
        p = scale * p + (1 - scale) * (np.ones(p.shape) / k)
    if clip is not None and 0 < clip <= 1:
        # -log(max(p, clip)) in float32 by the same native code as
        # densecrf.unary_from_softmax (within 1 ulp of numpy's log).
        flat = np.ascontiguousarray(np.asarray(p, dtype=np.float32).reshape(k, -1).T)
        return np.ascontiguousarray(_C.unary_from_probs(flat, float(clip), 0)[0].T)
    if clip is not None:
        p = np.clip(p, clip, 1.0)
    return np.ascontiguousarray(-np.log(p).reshape(k, -1), dtype=np.float32)


def softmax_to_unary(sm, GT_PROB=1):
    """Deprecated alias of unary_from_softmax (as in pydensecrf)."""
    logging.warning("pydensecrf.softmax_to_unary is deprecated, use unary_from_softmax instead.")
    return unary_from_softmax(sm, None if GT_PROB == 1 else GT_PROB, clip=None)


def create_pairwise_gaussian(sdims, shape):
    """Position features ``[len(sdims), prod(shape)]``: index along each axis / sdims ('ij' order)."""
    shape = tuple(_checks.positive_int(s, "shape") for s in shape)
    sdims = _checks.per_axis(sdims, len(shape), "sdims")
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    out = np.stack(grids).astype(np.float32)
    for axis, s in enumerate(sdims):
        out[axis] /= s
    return out.reshape(len(sdims), -1)


def create_pairwise_bilateral(sdims, schan, img, chdim=-1):
    """Position and channel features ``[len(sdims) + C, N]``.

    ``chdim`` is the channel axis of ``img``; -1 means ``img`` has no channel axis.
    """
    im = _checks.as_array(img, "img")
    if chdim == -1:
        chans = im[np.newaxis].astype(np.float32)
    else:
        if not -im.ndim <= chdim < im.ndim:
            raise ValueError(f"chdim={chdim} is out of range for img of shape {_checks.shape_str(im.shape)}")
        chans = np.moveaxis(im, chdim, 0).astype(np.float32)
    if chans.ndim < 2 or chans.size == 0:
        raise ValueError(f"img must have at least one non-empty spatial axis, got shape {_checks.shape_str(im.shape)}")
    _checks.as_f32(chans, "img")  # finite and within float32
    if isinstance(schan, numbers.Real):
        chans = chans / _checks.positive_scalar(schan, "schan")
    else:
        schan = _checks.per_axis(schan, chans.shape[0], "schan")
        for c, s in enumerate(schan):
            chans[c] /= s
    sdims = _checks.per_axis(sdims, chans.ndim - 1, "sdims")
    pos = np.stack(np.meshgrid(*[np.arange(s) for s in chans.shape[1:]], indexing="ij")).astype(np.float32)
    for axis, s in enumerate(sdims):
        pos[axis] /= s
    feats = np.concatenate([pos, chans])
    return feats.reshape(feats.shape[0], -1)
