r"""Instance and panoptic refinement with one dense CRF.

Instance masks from a detector (Mask R-CNN predicts each one at 28 x 28 in
its box and pastes it up) are blobby and overlap. :func:`refine_instances`
builds one dense CRF over the image whose labels are background plus the M
instances, so that boundaries follow the image and overlaps are resolved
jointly; :func:`refine_panoptic` does the same with the stuff classes of a
semantic network beside the thing instances and writes a COCO-style
panoptic map.

The unary model
---------------
A textbook CRF (energies :math:`-\log p`, Potts weights 3 and 10) empties
weak instances: inside a box that is mostly background, a foreground of
probability 0.6 has an energy margin of :math:`\log(0.6/0.4) = 0.4` over the
background, far below the Potts messages. The unary is therefore calibrated,
with knobs that :func:`densecrf.fit_instances` fits to a detector. With
:math:`p_i(x)` the soft mask of instance i (pasted, in [0, 1]), :math:`s_i`
its score and :math:`c(p) = \max(p, \text{min\_prob})`:

.. math::

    U_0(x) &= -\gamma \log c\big(1 - \max_j p_j(x)\big) \\
    U_i(x) &= -\gamma \log c\big(p_i(x)\big) - \alpha \log c(s_i) - b
              - \beta\, [p_i(x) > 0.5]

:math:`\gamma` (``power``) is a temperature on the mask probabilities (above 1
the unary outweighs the pairwise term), :math:`\alpha` (``score_power``)
weights the detection score, :math:`b` (``fg_bias``) is an instance prior
against the background prior :math:`1 - \max_j p_j`, and :math:`\beta`
(``confident_bonus``) a floor that holds the pixels the detector is sure of.
``min_prob`` bounds how far an instance may grow outside its mask. The
pairwise terms are the usual Gaussian and bilateral kernels with a
compatibility of 1 between background and an instance and
``instance_compat`` between two instances (times each term's weight).

Guarantees (``tests/test_instances.py`` checks them by brute force): the
refined masks have the image's shape (nothing outside it); an instance whose
input has a pixel above 0.5 (a *confident* instance) is never returned empty
(if the CRF empties it, it gets back its confident pixels that no other
instance holds, else those where its input beats the holder's without
emptying the holder, else one such pixel from an instance that keeps
others; only k instances whose confident pixels are fewer than k in all can
defeat this); in joint mode each pixel is in at most one instance.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from typing import NamedTuple

import numpy as np

from . import _checks
from .params import read_json, write_json

__all__ = [
    "InstanceParams",
    "InstanceResult",
    "instances_to_panoptic",
    "paste_masks",
    "refine_instances",
    "refine_panoptic",
]

FORMAT = "densecrf-instance-params"
VERSION = 1
_MODES = ("joint", "binary")


# --------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------
@dataclasses.dataclass
class InstanceParams:
    """Parameters of the instance CRF: the unary's calibration and the two pairwise terms.

    ``refine=False`` means *no refinement*: the input masks thresholded at
    0.5 are returned (what :func:`densecrf.fit_instances` returns when no
    candidate beats the input on its held-out images). A weight of None drops
    that pairwise term. See the module docstring for the formulas.

    The defaults are :func:`densecrf.fit_instances`' choice for detector-style
    inputs on CamVid (fitted on drive 0006R0, rounded to two digits; see
    docs/instances.md), not pydensecrf's classic parameters, which empty weak
    instances (:meth:`textbook`). Fit your own for another detector.
    """

    n_iter: int = 5
    power: float = 3.8
    score_power: float = 1.3
    fg_bias: float = 2.8
    confident_bonus: float = 0.0
    min_prob: float = 0.018
    class_power: float = 1.0
    gaussian_sxy: float = 3.0
    gaussian_weight: float | None = 0.6
    bilateral_sxy: float = 14.0
    bilateral_srgb: float = 14.0
    bilateral_weight: float | None = 3.7
    instance_compat: float = 1.0
    mode: str = "joint"
    crop_margin: float = 0.5
    refine: bool = True
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.n_iter, bool) or not isinstance(self.n_iter, numbers.Integral) or self.n_iter < 0:
            raise ValueError(f"n_iter must be a non-negative integer, got {self.n_iter!r}")
        self.n_iter = int(self.n_iter)
        for name in ("power", "gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            setattr(self, name, _checks.positive_scalar(getattr(self, name), name))
        for name in ("score_power", "fg_bias", "confident_bonus", "class_power", "instance_compat", "crop_margin"):
            setattr(self, name, _checks.finite_scalar(getattr(self, name), name))
        for name in ("gaussian_weight", "bilateral_weight"):
            if getattr(self, name) is not None:
                setattr(self, name, _checks.finite_scalar(getattr(self, name), name))
        self.min_prob = _checks.positive_scalar(self.min_prob, "min_prob")
        if not self.min_prob < 0.5:
            raise ValueError(f"min_prob must be in (0, 0.5), got {self.min_prob}")
        if self.crop_margin < 0:
            raise ValueError(f"crop_margin must be >= 0, got {self.crop_margin}")
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")
        if not isinstance(self.refine, (bool, np.bool_)):
            raise ValueError(f"refine must be True or False, got {self.refine!r}")
        self.refine = bool(self.refine)
        if not isinstance(self.info, dict):
            raise ValueError(f"info must be a dict, got {type(self.info).__name__}")

    @classmethod
    def textbook(cls, **kw) -> InstanceParams:
        """pydensecrf's classic CRF on -log p: power 1, no bias or floor, Gaussian
        (3 px, weight 3) and bilateral (80 px, 13, weight 10) Potts terms. It empties
        weak instances (the module docstring); kept as a reference."""
        base = {
            "power": 1.0,
            "score_power": 1.0,
            "fg_bias": 0.0,
            "confident_bonus": 0.0,
            "min_prob": 1e-4,
            "gaussian_sxy": 3.0,
            "gaussian_weight": 3.0,
            "bilateral_sxy": 80.0,
            "bilateral_srgb": 13.0,
            "bilateral_weight": 10.0,
            "instance_compat": 1.0,
        }
        return cls(**{**base, **kw})

    @classmethod
    def no_refinement(cls, **kw) -> InstanceParams:
        """The input masks as they are (thresholded at 0.5)."""
        return cls(refine=False, **kw)

    def replace(self, **kw) -> InstanceParams:
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"format": FORMAT, "version": VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict) -> InstanceParams:
        if not isinstance(d, dict):
            raise ValueError(f"instance CRF parameters must be a JSON object, got {type(d).__name__}")
        if d.get("format", FORMAT) != FORMAT:
            raise ValueError(f"not a densecrf instance parameter file (format {d.get('format')!r})")
        if d.get("version", VERSION) != VERSION:
            raise ValueError(
                f"instance parameter file version {d.get('version')!r} is not supported (this is {VERSION})"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names - {"format", "version"}
        if unknown:
            raise ValueError(f"unknown keys in instance CRF parameters: {sorted(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in names})

    def save(self, path) -> None:
        """Writes the JSON file atomically (a temporary file, then a rename)."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> InstanceParams:
        return cls.from_dict(read_json(path))


def _as_instance_params(params, overrides: dict) -> InstanceParams:
    if params is None:
        p = InstanceParams()
    elif isinstance(params, InstanceParams):
        p = params
    elif isinstance(params, dict):
        p = InstanceParams.from_dict(params)
    elif isinstance(params, (str, os.PathLike)):
        p = InstanceParams.load(params)
    else:
        raise TypeError(
            f"params must be an InstanceParams, a dict or a path to its JSON file, got {type(params).__name__}"
        )
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return p.replace(**overrides) if overrides else p


# --------------------------------------------------------------------------
# Pasting detector-style masks
# --------------------------------------------------------------------------
def _paste_weights(lo: float, hi: float, size: int, n_out: int) -> np.ndarray:
    """``[n_out, size]`` bilinear weights: output pixel x (centre x + 0.5) samples
    mask coordinate u = (x + 0.5 - lo) / (hi - lo) * size - 0.5 (mask pixel
    centres at integers), with zeros beyond the mask's edge."""
    u = (np.arange(n_out, dtype=np.float64) + 0.5 - lo) / (hi - lo) * size - 0.5
    i0 = np.floor(u).astype(np.int64)
    frac = u - i0
    w = np.zeros((n_out, size), dtype=np.float64)
    rows = np.arange(n_out)
    for idx, wt in ((i0, 1.0 - frac), (i0 + 1, frac)):
        ok = (idx >= 0) & (idx < size)
        w[rows[ok], idx[ok]] += wt[ok]
    return w


def paste_masks(masks, boxes, image_shape) -> np.ndarray:
    r"""Pastes low-resolution masks into their boxes, bilinearly, as Mask R-CNN does.

    Each mask ``[h, w]`` covers its box ``(x0, y0, x1, y1)`` (pixel
    coordinates: pixel (r, c) spans [c, c+1) x [r, r+1)); output pixel
    (r, c) samples the mask at
    :math:`u = (c + 0.5 - x_0) / (x_1 - x_0) \cdot w - 0.5` (and likewise v),
    bilinearly, with zero beyond the mask's edge: the same numbers as
    ``torch.nn.functional.grid_sample(..., align_corners=False)`` on the
    whole image (detectron2's ``paste_masks_in_image``). Boxes may reach
    beyond the image; what falls outside is cut off.

    Args:
        masks: ``[M, h, w]`` probabilities in [0, 1] (or booleans).
        boxes: ``[M, 4]`` as (x0, y0, x1, y1), x1 > x0 and y1 > y0.
        image_shape: (H, W) (extra trailing entries are ignored).

    Returns:
        ``[M, H, W]`` float32 in [0, 1].
    """
    m = _checks.as_array(masks, "masks")
    b = _checks.as_array(boxes, "boxes").astype(np.float64)
    if m.ndim != 3:
        raise ValueError(f"masks must be [M, h, w], got shape {_checks.shape_str(m.shape)}")
    if b.ndim != 2 or b.shape != (m.shape[0], 4):
        raise ValueError(
            f"boxes must be [M, 4] = ({m.shape[0]}, 4) (x0, y0, x1, y1), got shape {_checks.shape_str(b.shape)}"
        )
    if m.shape[0] and min(m.shape[1:]) < 1:
        raise ValueError(f"masks must have at least one pixel, got shape {_checks.shape_str(m.shape)}")
    if not np.isfinite(b).all():
        bad = np.argwhere(~np.isfinite(b))[0]
        raise ValueError(f"boxes must be finite; found {b[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
    bad = np.nonzero((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]))[0]
    if bad.size:
        raise ValueError(f"box {int(bad[0])} = {b[bad[0]].tolist()} is empty: need x1 > x0 and y1 > y0")
    if len(image_shape) < 2:
        raise ValueError(f"image_shape must be (H, W), got {tuple(image_shape)}")
    h, w = _checks.positive_int(int(image_shape[0]), "H"), _checks.positive_int(int(image_shape[1]), "W")
    mf = m.astype(np.float64)
    _check_unit_range(mf, "masks")
    out = np.empty((m.shape[0], h, w), dtype=np.float32)
    for i in range(m.shape[0]):
        wy = _paste_weights(b[i, 1], b[i, 3], m.shape[1], h)  # [H, h]
        wx = _paste_weights(b[i, 0], b[i, 2], m.shape[2], w)  # [W, w]
        out[i] = np.clip(wy @ mf[i] @ wx.T, 0.0, 1.0)
    return out


def _check_unit_range(a: np.ndarray, name: str) -> None:
    if a.size == 0:
        return
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{name} must be finite; found {a[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 1:
        v = lo if lo < 0 else hi
        at = np.argwhere(a == v)[0]
        raise ValueError(f"{name} must be probabilities in [0, 1]; found {v:g} at index {tuple(int(i) for i in at)}")


# --------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------
def _check_image(image) -> np.ndarray:
    im = _checks.as_f32(image, "image")
    if im.ndim == 2:
        im = im[..., None]
    if im.ndim != 3 or min(im.shape) < 1:
        raise ValueError(f"image must be [H, W, C] (or [H, W]), got shape {_checks.shape_str(np.shape(image))}")
    return im


def _instance_inputs(im, masks, scores, boxes, name="masks"):
    """(soft masks [M, H, W] float32, scores [M] float64, boxes [M, 4] or None) checked."""
    h, w = im.shape[:2]
    if boxes is not None:
        p = paste_masks(masks, boxes, (h, w))
        b = np.asarray(boxes, dtype=np.float64)
    else:
        m = _checks.as_array(masks, name)
        if m.ndim != 3 or m.shape[1:] != (h, w):
            raise ValueError(
                f"{name} must be [M, H, W] = (M, {h}, {w}) matching the image (or pass boxes= with "
                f"low-resolution masks), got shape {_checks.shape_str(m.shape)}"
            )
        p = m.astype(np.float32)  # a copy: never the caller's buffer
        _check_unit_range(p, name)
        b = None
    n = p.shape[0]
    if scores is None:
        s = np.ones(n, dtype=np.float64)
    else:
        s = _checks.as_array(scores, "scores").astype(np.float64).reshape(-1)
        if s.shape[0] != n:
            raise ValueError(
                f"scores must have one value per mask ({n}), got shape {_checks.shape_str(np.shape(scores))}"
            )
        _check_unit_range(s, "scores")
    return p, s, b


# --------------------------------------------------------------------------
# The unary and the CRF
# --------------------------------------------------------------------------
def _instance_energies(p: np.ndarray, s: np.ndarray, prm: InstanceParams, masks=None) -> np.ndarray:
    """``[M, ...]`` instance energies U_i (module docstring) for probabilities
    ``p`` ``[M, ...]``; the confident floor follows ``masks`` (default ``p``)."""
    eps = prm.min_prob
    shape = (-1,) + (1,) * (p.ndim - 1)
    u = -prm.power * np.log(np.maximum(p, eps))
    u -= (prm.score_power * np.log(np.maximum(s, eps)) + prm.fg_bias).reshape(shape)
    if prm.confident_bonus:
        u -= prm.confident_bonus * ((p if masks is None else masks) > 0.5)
    return u


def _compat(n_labels: int, n_first: int, inst_ratio: float, weight: float) -> np.ndarray:
    """``[K, K]`` energy compatibility: 0 on the diagonal, ``weight`` between
    two labels unless both are instances (index >= n_first): then
    ``weight * inst_ratio``. Equal to a Potts term of that weight when the ratio is 1."""
    c = np.ones((n_labels, n_labels), dtype=np.float32)
    c[n_first:, n_first:] *= np.float32(inst_ratio)
    np.fill_diagonal(c, 0.0)
    return c * np.float32(weight)


def _mean_field(im: np.ndarray, unary: np.ndarray, n_first: int, prm: InstanceParams, threads, device) -> np.ndarray:
    """Q ``[K, H, W]`` of the dense CRF with energies ``unary`` ``[K, H, W]``."""
    from .crf import DenseCRF2D

    k, h, w = unary.shape
    crf = DenseCRF2D(w, h, k, threads=threads)
    crf.set_unary(np.ascontiguousarray(unary.reshape(k, -1).T, dtype=np.float32))
    if prm.gaussian_weight:
        crf.add_pairwise_gaussian(prm.gaussian_sxy, _compat(k, n_first, prm.instance_compat, prm.gaussian_weight))
    if prm.bilateral_weight:
        crf.add_pairwise_bilateral(
            prm.bilateral_sxy, prm.bilateral_srgb, im, _compat(k, n_first, prm.instance_compat, prm.bilateral_weight)
        )
    q = np.asarray(crf.inference(prm.n_iter, device=device))
    return q.T.reshape(k, h, w)


def _rescue(labels: np.ndarray, p: np.ndarray, first: int, order) -> None:
    """Gives back pixels to confident instances (a pixel of ``p`` > 0.5) that
    ``labels`` (ids, instance i is ``first + i``) leaves empty; in place."""
    m = p.shape[0]
    counts = np.bincount(labels.ravel(), minlength=first + m)
    for i in order:
        conf = p[i] > 0.5
        if counts[first + i] or not conf.any():
            continue
        owner = labels - first  # instance index of each pixel's holder, < 0 for non-instances
        free = conf & (owner < 0)
        if free.any():
            take = free
        else:
            held = np.clip(owner, 0, m - 1)
            beats = conf & (p[i] > np.take_along_axis(p, held[None], 0)[0])
            # Drop the pixels of any holder that would lose all its pixels.
            lost = np.bincount(owner[beats], minlength=m)
            take = beats & (lost[held] < counts[first + held])
            if not take.any():
                cand = conf & (counts[first + held] >= 2)
                if not cand.any():
                    continue  # every confident pixel is some instance's only one
                score = np.where(cand, p[i] - np.take_along_axis(p, held[None], 0)[0], -np.inf)
                take = np.zeros_like(conf)
                take.flat[int(np.argmax(score))] = True
        np.subtract.at(counts, labels[take], 1)
        labels[take] = first + i
        counts[first + i] += int(take.sum())


class InstanceResult(NamedTuple):
    """What :func:`refine_instances` returns."""

    masks: np.ndarray  #: [M, H, W] bool, the refined masks
    ids: (
        np.ndarray
    )  #: [H, W] int32, 0 for background, i + 1 where instance i is (see :func:`refine_instances` for overlaps)

    def exclusive_masks(self) -> np.ndarray:
        """``[M, H, W]`` bool masks of :attr:`ids`: each pixel in at most one instance."""
        m = self.masks.shape[0]
        return self.ids[None] == np.arange(1, m + 1, dtype=np.int32)[:, None, None]


def _box_of(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _claim(ids: np.ndarray, best: np.ndarray, i: int, mine: np.ndarray, sure: np.ndarray) -> None:
    """Instance i takes the pixels of ``mine`` where its ``sure`` (foreground
    probability times score) beats ``best``, the holder's; in place."""
    win = mine & (sure > best)
    best[win] = sure[win]
    ids[win] = i + 1


def _drop_hidden(ids: np.ndarray, masks: np.ndarray, keep: float = 0.5) -> None:
    """Removes from ``ids`` (to 0) each instance holding less than ``keep`` of
    its mask, as the usual panoptic merge drops a mostly hidden instance; in place."""
    held = np.bincount(ids.ravel(), minlength=masks.shape[0] + 1)[1:]
    area = masks.reshape(masks.shape[0], -1).sum(axis=1)
    gone = np.flatnonzero((held > 0) & (held < keep * area)) + 1
    if gone.size:
        ids[np.isin(ids, gone)] = 0


def _exclusive_ids(masks: np.ndarray, p: np.ndarray, s: np.ndarray, order) -> np.ndarray:
    """The id map of possibly overlapping masks (see :func:`refine_instances`):
    a contested pixel to the highest ``p * s``, the higher score on a tie."""
    ids = np.zeros(masks.shape[1:], dtype=np.int32)
    best = np.full(masks.shape[1:], -1.0, dtype=np.float32)
    for i in order:
        _claim(ids, best, int(i), masks[i], p[i] * np.float32(s[i]))
    _drop_hidden(ids, masks)
    return ids


def _refine_one(im, masks, scores, boxes, prm: InstanceParams, threads, device) -> InstanceResult:
    p, s, b = _instance_inputs(im, masks, scores, boxes)
    n, (h, w) = p.shape[0], im.shape[:2]
    order = np.argsort(-s, kind="stable")
    if n == 0:
        return InstanceResult(np.zeros((0, h, w), dtype=bool), np.zeros((h, w), dtype=np.int32))
    if not prm.refine:
        out = p > 0.5
        return InstanceResult(out, _exclusive_ids(out, p, s, order))
    if prm.mode == "joint":
        bg = -prm.power * np.log(np.maximum(1.0 - p.max(axis=0), prm.min_prob))
        unary = np.concatenate([bg[None], _instance_energies(p, s, prm)], axis=0)
        labels = np.argmax(_mean_field(im, unary, 1, prm, threads, device), axis=0).astype(np.int32)
        _rescue(labels, p, 1, order)
        out = labels[None] == np.arange(1, n + 1, dtype=np.int32)[:, None, None]
        return InstanceResult(out, labels)
    out = np.zeros((n, h, w), dtype=bool)
    ids = np.zeros((h, w), dtype=np.int32)
    best = np.full((h, w), -1.0, dtype=np.float32)
    for i in order:
        box = tuple(b[i]) if b is not None else (_box_of(p[i] > 0.5) or _box_of(p[i] > prm.min_prob))
        if box is None:
            continue  # nothing of this instance anywhere: it stays empty
        x0, y0, x1, y1 = box
        mx, my = prm.crop_margin * (x1 - x0), prm.crop_margin * (y1 - y0)
        c0, c1 = max(0, int(np.floor(x0 - mx))), min(w, int(np.ceil(x1 + mx)))
        r0, r1 = max(0, int(np.floor(y0 - my))), min(h, int(np.ceil(y1 + my)))
        if c1 <= c0 or r1 <= r0:
            continue  # the box lies outside the image
        pc = p[i, r0:r1, c0:c1]
        bg = -prm.power * np.log(np.maximum(1.0 - pc, prm.min_prob))
        unary = np.stack([bg, _instance_energies(pc[None], s[i : i + 1], prm)[0]])
        q = _mean_field(np.ascontiguousarray(im[r0:r1, c0:c1]), unary, 1, prm, threads, device)
        mine = q[1] > q[0]
        if not mine.any():
            mine = pc > 0.5  # confident pixels come back (nothing competes in this mode)
        out[i, r0:r1, c0:c1] = mine
        _claim(ids[r0:r1, c0:c1], best[r0:r1, c0:c1], i, mine, q[1] * np.float32(s[i]))
    _drop_hidden(ids, out)
    return InstanceResult(out, ids)


def refine_instances(
    image,
    masks,
    scores=None,
    *,
    boxes=None,
    params=None,
    mode: str | None = None,
    threads: int | None = None,
    device="cpu",
    **overrides,
):
    """Refines instance masks along the image's edges with a dense CRF.

    Args:
        image: ``[H, W, C]`` (uint8 0..255, or float in the units of
            ``bilateral_srgb``) or ``[H, W]``. A list of images, or a
            ``[B, H, W, C]`` array, is a batch: then ``masks``, ``scores``
            and ``boxes`` are lists with one entry per image, and a list of
            results comes back.
        masks: ``[M, H, W]`` soft (in [0, 1]) or binary masks, possibly
            overlapping; with ``boxes``, ``[M, h, w]`` low-resolution masks
            (Mask R-CNN's 28 x 28) pasted into their boxes first
            (:func:`paste_masks`).
        scores: ``[M]`` detection scores in [0, 1] (default: all 1).
        boxes: ``[M, 4]`` (x0, y0, x1, y1) boxes of detector-style masks.
        params: an :class:`InstanceParams`, its dict, or a path to its JSON
            (what :func:`densecrf.fit_instances` returns / saves).
        mode: 'joint' (one CRF over background + all instances: each pixel in
            at most one instance) or 'binary' (each mask against its
            surroundings in a crop around its box, grown by ``crop_margin``
            of its size on each side, as CutLER's MaskCut does: independent
            proposals, which may still overlap). Default: the params' mode.
        threads: native threads (default: all cores).
        device: 'cpu', or 'cuda' / 'cuda:N' to run the mean field on the GPU.
        **overrides: any :class:`InstanceParams` field, replacing the params' value.

    Returns:
        :class:`InstanceResult` ``(masks [M, H, W] bool, ids [H, W] int32)``;
        for a batch, a list of them. See the module docstring for the unary
        model and the guarantees. ``ids`` puts each pixel in at most one
        instance: in joint mode it is the CRF's labelling (the masks are its
        classes); in binary mode, and without refinement, where masks
        overlap, a pixel goes to the instance with the highest foreground
        probability there (its own CRF's marginal, or its input mask without
        refinement) times its score, the higher score on a tie, and an
        instance left with less than half of its mask is dropped from
        ``ids`` (its pixels to 0), as the usual panoptic merge drops a mostly
        hidden instance. ``masks`` keep their overlaps (for mask AP);
        :meth:`InstanceResult.exclusive_masks` gives the masks of ``ids``.
    """
    prm = _as_instance_params(params, dict(overrides, mode=mode))
    batch = isinstance(image, (list, tuple)) or np.ndim(image) == 4
    if not batch:
        return _refine_one(_check_image(image), masks, scores, boxes, prm, threads, device)
    n = len(image)
    for name, v in (("masks", masks), ("scores", scores), ("boxes", boxes)):
        if v is not None and (not hasattr(v, "__len__") or len(v) != n):
            raise ValueError(
                f"a batch of {n} images needs {name} as a list of {n} entries, got "
                f"{type(v).__name__}" + (f" of length {len(v)}" if hasattr(v, "__len__") else "")
            )
    return [
        _refine_one(
            _check_image(image[j]),
            masks[j],
            None if scores is None else scores[j],
            None if boxes is None else boxes[j],
            prm,
            threads,
            device,
        )
        for j in range(n)
    ]


# --------------------------------------------------------------------------
# Panoptic
# --------------------------------------------------------------------------
def _segment_info(seg_id: int, category: int, mask: np.ndarray, isthing: bool, instance) -> dict:
    ys, xs = np.nonzero(mask)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    return {
        "id": seg_id,
        "category_id": int(category),
        "iscrowd": 0,
        "area": int(ys.size),
        "bbox": bbox,
        "isthing": bool(isthing),
        "instance": instance,
    }


def instances_to_panoptic(
    stuff_map, masks, classes, scores=None, *, void: int | None = None, overlap_threshold: float = 0.5
):
    """A COCO-style panoptic map from a stuff label map and instance masks, without a CRF.

    The usual merge (detectron2's ``combine_semantic_and_instance_outputs``):
    instances in decreasing score order each take their pixels not yet
    taken, and are dropped when less than ``overlap_threshold`` of the mask
    is left; then each stuff class of ``stuff_map`` takes its untaken pixels
    (a value equal to ``void``, or any value < 0, stays void: segment id 0).

    Args:
        stuff_map: ``[H, W]`` int class per pixel (thing classes there are
            treated as void where no instance covers them).
        masks: ``[M, H, W]`` bool; classes: ``[M]`` category of each.
        scores: ``[M]`` (default: all 1, input order).

    Returns:
        ``(ids [H, W] int32, segments_info)`` as :func:`refine_panoptic`.
    """
    st = _checks.as_array(stuff_map, "stuff_map")
    m = np.asarray(masks, dtype=bool)
    cls = np.asarray(classes).reshape(-1).astype(np.int64)
    if m.ndim != 3 or m.shape[1:] != st.shape or cls.shape[0] != m.shape[0]:
        raise ValueError(
            f"masks must be [M, H, W] = (M, {', '.join(map(str, st.shape))}) with one class each, got "
            f"masks {_checks.shape_str(m.shape)} and classes {_checks.shape_str(cls.shape)}"
        )
    s = np.ones(m.shape[0]) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    ids = np.zeros(st.shape, dtype=np.int32)
    info = []
    taken = np.zeros(st.shape, dtype=bool)
    for i in np.argsort(-s, kind="stable"):
        area = int(m[i].sum())
        mine = m[i] & ~taken
        if area == 0 or mine.sum() < overlap_threshold * area:
            continue
        ids[mine] = len(info) + 1
        taken |= mine
        info.append(_segment_info(len(info) + 1, cls[i], mine, True, int(i)))
    things = set(cls.tolist())
    for c in np.unique(st[~taken]):
        if c < 0 or (void is not None and c == void) or int(c) in things:
            continue
        region = (st == c) & ~taken
        ids[region] = len(info) + 1
        info.append(_segment_info(len(info) + 1, int(c), region, False, None))
    return ids, info


def refine_panoptic(
    image,
    semantic_probs,
    instances,
    thing_classes,
    *,
    params=None,
    threads: int | None = None,
    device="cpu",
    **overrides,
):
    r"""Refines a panoptic prediction with one dense CRF over stuff classes and thing instances.

    Labels: the stuff classes (every class of ``semantic_probs`` not in
    ``thing_classes``), the M thing instances, and one *void* label for thing
    probability that no instance covers. With :math:`p_k(x)` the semantic
    probabilities and instance i of class :math:`c_i`, soft mask
    :math:`m_i` and score :math:`s_i`, the label probabilities are
    :math:`P_{stuff\,k} = p_k`,
    :math:`P_i = p_{c_i}^{\,\text{class\_power}}\, m_i` (the mask weighted by
    its class probability) and
    :math:`P_{void} = \sum_{c} p_c \,(1 - \max_{i: c_i = c} m_i)` over thing
    classes c; the energies are :math:`-\gamma \log c(P)` with the instance
    terms of :func:`refine_instances` (score, bias, confident floor). A
    confident instance is never returned empty (see the module docstring).

    Args:
        image: ``[H, W, C]`` image.
        semantic_probs: ``[H, W, K]`` class probabilities (label axis last).
        instances: a dict with ``"masks"`` (``[M, H, W]``, or ``[M, h, w]``
            with ``"boxes"`` ``[M, 4]``), ``"classes"`` ``[M]`` (thing
            classes, indices into K) and optionally ``"scores"`` ``[M]``.
        thing_classes: the class indices that are things.
        params, threads, device, overrides: as :func:`refine_instances`
            (``mode`` is ignored: panoptic refinement is joint).

    Returns:
        ``(ids, segments_info)``: ``ids`` ``[H, W]`` int32 segment ids (0 is
        void), and per segment a dict ``{"id", "category_id", "iscrowd": 0,
        "area", "bbox": [x, y, w, h], "isthing", "instance"}`` where
        ``category_id`` is the class index and ``instance`` the index of the
        input instance (None for stuff): COCO's panoptic segments_info.
    """
    prm = _as_instance_params(params, overrides)
    im = _check_image(image)
    sp = _checks.as_f32(semantic_probs, "semantic_probs")
    h, w = im.shape[:2]
    if sp.ndim != 3 or sp.shape[:2] != (h, w) or sp.shape[2] < 1:
        raise ValueError(
            f"semantic_probs must be [H, W, K] = ({h}, {w}, K) matching the image, got {_checks.shape_str(sp.shape)}"
        )
    _check_unit_range(sp, "semantic_probs")
    k = sp.shape[2]
    if not isinstance(instances, dict) or "masks" not in instances or "classes" not in instances:
        raise TypeError("instances must be a dict with 'masks' and 'classes' (and optionally 'scores', 'boxes')")
    unknown = set(instances) - {"masks", "classes", "scores", "boxes"}
    if unknown:
        raise ValueError(f"unknown keys in instances: {sorted(unknown)}")
    things = sorted({int(c) for c in np.asarray(thing_classes).reshape(-1)})
    if any(c < 0 or c >= k for c in things):
        raise ValueError(f"thing_classes must be class indices in [0, {k}), got {things}")
    stuff = [c for c in range(k) if c not in set(things)]
    p, s, _ = _instance_inputs(im, instances["masks"], instances.get("scores"), instances.get("boxes"))
    cls = np.asarray(instances["classes"]).reshape(-1)
    if cls.shape[0] != p.shape[0] or not np.issubdtype(cls.dtype, np.integer):
        raise ValueError(f"instances['classes'] must be {p.shape[0]} integers (one per mask), got {cls!r}")
    bad = [int(c) for c in cls if int(c) not in set(things)]
    if bad:
        raise ValueError(f"instance class {bad[0]} is not one of thing_classes {things}")
    n = p.shape[0]
    if not prm.refine:
        pred = sp.argmax(-1)
        stuff_map = np.where(np.isin(pred, things), -1, pred)
        return instances_to_panoptic(stuff_map, p > 0.5, cls, s)
    sem = np.moveaxis(sp, -1, 0).astype(np.float64)  # [K, H, W]
    void = np.zeros((h, w))
    for c in things:
        mine = p[cls == c]
        void += sem[c] * (1.0 - (mine.max(axis=0) if len(mine) else 0.0))
    eps = prm.min_prob
    stuff_u = -prm.power * np.log(np.maximum(sem[stuff], eps))
    void_u = -prm.power * np.log(np.maximum(void, eps))
    inst_p = np.power(np.maximum(sem[cls], eps), prm.class_power) * p if n else np.zeros((0, h, w))
    inst_u = _instance_energies(inst_p, s, prm, masks=p)  # the floor follows the input mask
    first = len(stuff) + 1  # labels: stuff..., void, instances...
    unary = np.concatenate([stuff_u, void_u[None], inst_u], axis=0)
    labels = np.argmax(_mean_field(im, unary, first, prm, threads, device), axis=0).astype(np.int32)
    _rescue(labels, p, first, np.argsort(-s, kind="stable"))
    ids = np.zeros((h, w), dtype=np.int32)
    info = []
    for lab in range(unary.shape[0]):
        if lab == len(stuff):
            continue  # void
        region = labels == lab
        if not region.any():
            continue
        ids[region] = len(info) + 1
        if lab < len(stuff):
            info.append(_segment_info(len(info) + 1, stuff[lab], region, False, None))
        else:
            i = lab - first
            info.append(_segment_info(len(info) + 1, int(cls[i]), region, True, i))
    return ids, info
