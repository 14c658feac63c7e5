r"""Fit a dense CRF's parameters to a model: ``densecrf.fit`` (the command line's ``densecrf fit`` calls it).

Dense-CRF post-processing helps only when its parameters suit the network
underneath: the classic ones (Gaussian sxy 3 compat 3, bilateral sxy 80
srgb 13 compat 10) can smooth thin classes away. :func:`fit` learns them
from a few labelled images (image, the network's probabilities, labels):

1. The given images are split into a fitting part and a held-out part
   (``holdout``). Every candidate is scored on the held-out part by mean IoU
   of the exact native :func:`densecrf.refine` at full resolution.
2. Candidates: the network alone (no CRF), the classic defaults, and a
   coarse grid (``search='grid'``) or random points (``search='random'``)
   over the kernel weights and bandwidths. These need neither torch nor
   gradients.
3. ``search='gradient'`` (default) then starts from the best of those and
   descends, through the unrolled mean field of
   :class:`densecrf.nn.CRFasRNN`, a cross-entropy loss (plus a soft-IoU term
   with ``loss='ce+softiou'``) on random crops of the fitting part at full
   resolution (so bandwidths keep their pixel meaning). It learns the
   kernel weights (one per term, or one per term and class with
   ``compat='diagonal'``), the log-bandwidths and, with ``compat='matrix'``,
   a full ``[K, K]`` compatibility shared by the terms. The parameters are
   scored on the held-out part every ``eval_every`` steps; it stops after
   ``patience`` scores without improvement.
4. The result is the candidate with the best held-out mean IoU, so it is
   never worse there than the defaults, than the network alone (then the
   returned parameters have no terms: ``refine`` returns the network's
   probabilities) or than the best grid point.
5. A UserWarning (also kept in ``info['warnings']`` and printed by
   :func:`format_table`) says when the network alone was selected (no CRF
   helped), when fewer than :data:`MIN_HELDOUT` images were held out, and
   when gradient descent stopped at its step limit still improving (its
   best held-out score at its last evaluation).

Cross-validation (``groups=`` or ``cv=``) replaces the single held-out
split when the images come in groups (drives, videos): frames of one group
are near-duplicates of each other, so a split that puts some in the fitting
part and others in the held-out part scores candidates on what they were
fitted to. Each fold (a group, or one of ``cv`` contiguous blocks of the
images in the given order) is held out once; every candidate's gain over
the network is measured per fold; the candidate with the best mean gain is
kept only if that gain is clearly positive (:data:`NO_CRF_SE`,
:data:`NO_CRF_MIN_POSITIVE`), else the result is "no CRF". Gradient descent
on this path shrinks a learned compatibility toward Potts (:data:`SHRINK`)
and keeps the bandwidths inside :data:`BANDWIDTH_BOUNDS`; see :func:`fit`.

The returned :class:`densecrf.params.CRFParams` carries an ``info`` dict:
held-out scores of every reference, the selected candidate, the fitting
time and the settings. ``params.save(path)`` writes the JSON file that
``refine(params=...)``, ``DenseCRF2D.add_params`` and
``CRFasRNN.from_params`` read.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import numbers
import os
import time
import warnings

import numpy as np

from . import _checks
from .io import IMAGE_EXTS, PROB_EXTS, InputError, read_image, read_labels, read_npy
from .metrics import SegmentationMetrics
from .params import CRFParams

__all__ = ["FolderMatch", "default_grid", "describe", "fit", "format_table", "load_folders", "match_folders"]

SEARCHES = ("gradient", "grid", "random")
COMPATS = ("potts", "diagonal", "matrix")
LOSSES = ("ce", "ce+softiou")
_CLIP = 1e-5  # refine's clip of the probabilities before the logarithm
# Fewer held-out images than this gets a warning. The selection takes the
# best of ~40 candidates by held-out mean IoU; with a handful of images one
# unusual frame (a class present in it alone, a badly labelled one) holds a
# fifth or more of the evidence and decides the choice, and the best of many
# noisy scores overstates what it will give on new images. Five is a
# judgement, not a derived bound: the least that keeps any one image under
# a fifth of the held-out part, and what 0.3 of a 16-image set gives.
MIN_HELDOUT = 5
# Bounds on the bandwidths gradient descent may reach (pixels; colour in
# 0..255 image units), applied to the log-bandwidths after every Adam step:
# - gaussian_sxy 0.5..20: under half a pixel the kernel reaches no
#   neighbour (the term only rescales the pixel's own label); over 20 pixels
#   a smoothness kernel spreads across thin classes (poles, signs: 2-10
#   pixels wide at 480 x 360) whatever its weight.
# - bilateral_sxy 10..200: under 10 pixels it repeats the Gaussian term;
#   200 pixels spans most of a 480 x 360 image (the classic 80 and the
#   grid's 30 and 80 sit well inside).
# - bilateral_srgb 2..60: under 2 units, sensor and compression noise of a
#   few levels splits pixels of one surface apart; over 60 the colour term
#   no longer tells apart surfaces that differ by a few tens of levels,
#   the edges it is there for.
# The default grid and random points lie inside them; ``bounds=`` overrides.
BANDWIDTH_BOUNDS = {"gaussian_sxy": (0.5, 20.0), "bilateral_sxy": (10.0, 200.0), "bilateral_srgb": (2.0, 60.0)}
# Default shrinkage toward Potts on the cross-validated path (``shrink=``):
# the loss is the mean cross-entropy per pixel, so a compatibility whose
# entries differ from the nearest Potts matrix by d in total squared
# distance costs SHRINK * d nats per pixel. With 1e-3, moving one entry by 1
# (a third of a typical Potts weight of 3) pays when it lowers the mean
# cross-entropy by 0.001 nats per pixel: when it moves 0.2 % of the pixels
# from probability 0.5 to 0.9 on their true label (ln 1.8 = 0.59 nats
# each). Moving all 121 entries of an 11-class matrix by 1 costs 0.12 nats
# per pixel, as much as moving a fifth of all pixels that way. So a few
# well-supported departures from Potts survive, and a matrix that only
# fits the noise of a few images does not. This is a judgement, not a
# derived optimum.
SHRINK = 1e-3
# The "no CRF" rule of the cross-validated path: the selected candidate is
# kept only if its mean gain over the folds minus NO_CRF_SE standard errors
# is above zero AND it gains on at least NO_CRF_MIN_POSITIVE of the folds.
# One standard error is the usual margin of cross-validated selection (the
# "one-standard-error rule" of Breiman et al., CART, 1984; glmnet's
# lambda.1se); two standard errors with 2-5 folds (drives, videos) would
# demand nearly equal gains on every fold.
# The fold count guards against one fold's large gain hiding losses on the
# others, which a mean with few folds can do.
NO_CRF_SE = 1.0
NO_CRF_MIN_POSITIVE = 0.5


def default_grid() -> list[CRFParams]:
    """The coarse grid: 3 Gaussian weights (0 drops the term) x 2 bilateral
    bandwidths in pixels x 2 in colour x 3 bilateral weights: 36 points."""
    pts = []
    for gc in (None, 1.0, 3.0):
        for bsxy in (30.0, 80.0):
            for bsrgb in (5.0, 13.0):
                for bc in (1.0, 3.0, 6.0):
                    pts.append(
                        CRFParams(gaussian_compat=gc, bilateral_sxy=bsxy, bilateral_srgb=bsrgb, bilateral_compat=bc)
                    )
    return pts


def _random_points(n: int, rng) -> list[CRFParams]:
    """n log-uniform points: Gaussian weight 0.1..5 (dropped one time in four),
    bilateral sxy 10..120, srgb 3..30, weight 0.3..10."""

    def lu(lo, hi):
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

    return [
        CRFParams(
            gaussian_compat=None if rng.random() < 0.25 else lu(0.1, 5.0),
            bilateral_sxy=lu(10.0, 120.0),
            bilateral_srgb=lu(3.0, 30.0),
            bilateral_compat=lu(0.3, 10.0),
        )
        for _ in range(n)
    ]


def no_crf() -> CRFParams:
    """Parameters without terms: ``refine`` returns the (clipped) probabilities."""
    return CRFParams(gaussian_compat=None, bilateral_compat=None)


# --------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------
def _check_inputs(images, probs, labels, ignore_index):
    for name, seq in (("images", images), ("probs", probs), ("labels", labels)):
        if isinstance(seq, np.ndarray) or not hasattr(seq, "__len__"):
            raise TypeError(f"{name} must be a list of arrays (one per image), got {type(seq).__name__}")
    n = len(images)
    if len(probs) != n or len(labels) != n:
        raise ValueError(f"images, probs and labels must have the same length, got {n}, {len(probs)}, {len(labels)}")
    if n < 2:
        raise ValueError(f"fit needs at least 2 labelled images (a fitting and a held-out part), got {n}")
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral)):
        raise ValueError(f"ignore_index must be an integer or None, got {ignore_index!r}")
    k = None
    for i, (im, p, lab) in enumerate(zip(images, probs, labels, strict=True)):
        im, p, lab = np.asarray(im), np.asarray(p), np.asarray(lab)
        if p.ndim != 3 or p.shape[2] < 2 or p.shape[0] < 1 or p.shape[1] < 1:
            raise ValueError(f"probs[{i}] must have shape [H, W, K] with K >= 2, got {p.shape}")
        if not np.issubdtype(p.dtype, np.floating):
            raise ValueError(f"probs[{i}] must be floating point probabilities, got dtype {p.dtype}")
        if k is None:
            k = p.shape[2]
        elif p.shape[2] != k:
            raise ValueError(f"probs[{i}] has {p.shape[2]} classes, probs[0] has {k}")
        if im.ndim != 3 or im.shape[:2] != p.shape[:2] or im.shape[2] != 3:
            raise ValueError(f"images[{i}] must have shape {p.shape[:2] + (3,)} (RGB, as probs[{i}]), got {im.shape}")
        if lab.shape != p.shape[:2]:
            raise ValueError(f"labels[{i}] must have shape {p.shape[:2]} (as probs[{i}]), got {lab.shape}")
        if not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"labels[{i}] must be integers, got dtype {lab.dtype}")
        bad = (lab < 0) | (lab >= k)
        if ignore_index is not None:
            bad &= lab != ignore_index
        if bad.any():
            v = int(lab[bad].ravel()[0])
            raise ValueError(
                f"labels[{i}] has value {v} outside 0..{k - 1}"
                + (f" (ignore_index {ignore_index})" if ignore_index is not None else " (no ignore_index)")
            )
        if not np.isfinite(p).all():
            raise ValueError(f"probs[{i}] has non-finite values")
    return k


# --------------------------------------------------------------------------
# Cross-validation folds and bandwidth bounds
# --------------------------------------------------------------------------
def _cv_folds(n: int, groups, cv) -> list[tuple[str, list[int]]]:
    """[(fold name, image indices)] of the cross-validation: one fold per group
    (leave-one-group-out; the groups in order of first appearance, merged
    into ``cv`` runs of neighbours when there are more), or ``cv``
    contiguous blocks of the images in the given order without groups."""
    if cv is not None and (isinstance(cv, bool) or not isinstance(cv, numbers.Integral) or cv < 2):
        raise ValueError(f"cv must be an integer >= 2 (the number of folds; cross-validation needs 2), got {cv!r}")
    n_folds = None if cv is None else int(cv)
    if groups is None:
        if n_folds is None:
            raise ValueError("cross-validation needs groups or cv")
        if n_folds > n:
            raise ValueError(f"cv={cv} folds of {n} images: each fold needs at least one image")
        blocks = np.array_split(np.arange(n), n_folds)
        return [(f"images {b[0]}-{b[-1]}" if len(b) > 1 else f"image {b[0]}", b.tolist()) for b in blocks]
    if isinstance(groups, (str, bytes)) or not hasattr(groups, "__len__"):
        raise ValueError(f"groups must be a sequence of one group per image, got {type(groups).__name__}")
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} images: give one group per image")
    members: dict = {}
    for i, g in enumerate(groups):
        g = g.item() if isinstance(g, np.generic) else g
        try:
            members.setdefault(g, []).append(i)
        except TypeError:
            raise ValueError(f"groups[{i}] = {g!r} is not hashable (a group is a name: str, int, ...)") from None
    names = list(members)
    if len(names) < 2:
        raise ValueError(
            f"groups has a single group ({names[0]!r}): leave-one-group-out needs at least 2 groups "
            "(or pass cv=N without groups for N contiguous blocks)"
        )
    if n_folds is not None and n_folds > len(names):
        raise ValueError(f"cv={cv} folds of {len(names)} groups: cv may not exceed the number of groups")
    runs = [[j] for j in range(len(names))] if n_folds is None else np.array_split(np.arange(len(names)), n_folds)
    return [("+".join(str(names[j]) for j in run), sorted(i for j in run for i in members[names[j]])) for run in runs]


def _resolve_bounds(bounds, cv_path: bool):
    """The bandwidth bounds in force: None (off) or {name: (lo, hi)} over BANDWIDTH_BOUNDS' names."""
    if bounds is None:
        return dict(BANDWIDTH_BOUNDS) if cv_path else None
    if bounds is False:
        return None
    if bounds is True:
        return dict(BANDWIDTH_BOUNDS)
    if not isinstance(bounds, dict):
        raise ValueError(f"bounds must be a dict {{name: (lo, hi)}}, True, False or None, got {bounds!r}")
    out = dict(BANDWIDTH_BOUNDS)
    for key, v in bounds.items():
        if key not in BANDWIDTH_BOUNDS:
            raise ValueError(f"bounds names unknown bandwidth {key!r}; known: {sorted(BANDWIDTH_BOUNDS)}")
        try:
            lo, hi = (float(x) for x in v)
        except (TypeError, ValueError):
            raise ValueError(f"bounds[{key!r}] must be a pair (lo, hi), got {v!r}") from None
        if not (0 < lo <= hi < float("inf")):
            raise ValueError(f"bounds[{key!r}] must satisfy 0 < lo <= hi < inf, got {v!r}")
        out[key] = (lo, hi)
    return out


def _inside_bounds(points: list[CRFParams], bounds, *, user: bool) -> list[CRFParams]:
    """The candidate points inside the bounds: the caller's own grid (``user``)
    must lie inside them (ValueError naming the point); the default grid and
    random points are clipped into them."""
    if bounds is None:
        return points
    out = []
    for j, p in enumerate(points):
        vals = {"gaussian_sxy": [p.gaussian_sxy] if p.gaussian_compat is not None else []}
        vals["bilateral_sxy"] = [p.bilateral_sxy] if p.bilateral_compat is not None else []
        # srgb: one bandwidth, or one per colour channel
        srgb = np.atleast_1d(np.asarray(p.bilateral_srgb, dtype=np.float64)).tolist()
        vals["bilateral_srgb"] = srgb if p.bilateral_compat is not None else []
        if user:
            for key, vs in vals.items():
                lo, hi = bounds[key]
                for v in vs:
                    if not lo <= v <= hi:
                        raise ValueError(f"grid[{j}] has {key} {v:g} outside the bounds [{lo:g}, {hi:g}]")
            out.append(p)
            continue

        def clip(key, v):
            return float(min(max(v, bounds[key][0]), bounds[key][1]))

        out.append(
            dataclasses.replace(
                p,
                gaussian_sxy=clip("gaussian_sxy", p.gaussian_sxy),
                bilateral_sxy=clip("bilateral_sxy", p.bilateral_sxy),
                bilateral_srgb=[clip("bilateral_srgb", v) for v in p.bilateral_srgb]
                if isinstance(p.bilateral_srgb, list)
                else clip("bilateral_srgb", p.bilateral_srgb),
            )
        )
    return out


# --------------------------------------------------------------------------
# Scoring: the exact native refine at full resolution
# --------------------------------------------------------------------------
class _Scorer:
    def __init__(self, images, probs, labels, idx, k, ignore_index, threads):
        self.images = [images[i] for i in idx]
        self.probs = [probs[i] for i in idx]
        self.labels = [labels[i] for i in idx]
        self.k, self.ignore, self.threads = k, ignore_index, threads

    def metrics(self, params: CRFParams) -> SegmentationMetrics:
        from .crf import refine

        m = SegmentationMetrics(self.k, ignore_index=self.ignore)
        for im, p, lab in zip(self.images, self.probs, self.labels, strict=True):
            if params.gaussian_compat is None and params.bilateral_compat is None:
                pred = np.asarray(p).argmax(-1)  # no terms: the network's own argmax
            else:
                pred = refine(im, np.asarray(p, dtype=np.float32), params=params, threads=self.threads).argmax(-1)
            m.update(pred, lab)
        return m

    def __call__(self, params: CRFParams) -> float:
        return float(self.metrics(params).mean_iou())


# --------------------------------------------------------------------------
# Gradient descent through CRFasRNN
# --------------------------------------------------------------------------
def _gradient(
    start: CRFParams,
    images,
    probs,
    labels,
    fit_idx,
    score,
    *,
    k,
    ignore_index,
    compat,
    loss,
    balanced,
    crop,
    steps,
    batch,
    lr,
    eval_every,
    patience,
    threads,
    rng,
    log,
    shrink=0.0,
    bounds=None,
):
    """Adam on random crops; returns [(held-out score, params, step)] of every evaluation.

    ``score`` None: no evaluation, the history holds the parameters after the
    last step only (score None). ``shrink`` > 0 adds ``shrink`` times the
    squared Frobenius distance of each term's compatibility to its nearest
    Potts matrix (:func:`_potts_distance`) to the loss; ``bounds`` (a dict as
    :data:`BANDWIDTH_BOUNDS`) clamps the log-bandwidths after every step.
    Both off (0, None): the same steps, bit for bit, as without them."""
    import torch
    import torch.nn.functional as F

    from .nn import CRFasRNN

    p0 = dataclasses.replace(start, info={})
    # A dropped term re-enters with weight 0: the same CRF, and descent can still grow it.
    if p0.gaussian_compat is None:
        p0.gaussian_compat = 0.0
    if p0.bilateral_compat is None:
        p0.bilateral_compat = 0.0
    layer = CRFasRNN.from_params(p0, k, learn_bandwidths=True, threads=threads)
    if compat == "diagonal" and not layer.per_class_weights:
        layer = CRFasRNN(
            k,
            p0.n_iter,
            spatial_sxy=p0.gaussian_sxy,
            spatial_weight=1.0,
            bilateral_sxy=p0.bilateral_sxy,
            bilateral_srgb=p0.bilateral_srgb if isinstance(p0.bilateral_srgb, float) else p0.bilateral_srgb[0],
            bilateral_weight=1.0,
            per_class_weights=True,
            learn_bandwidths=True,
            normalization=p0.normalization,
            threads=threads,
        )
        with torch.no_grad():
            # Potts weights w are -diag(w) with mu = -I: start from the same weights per class.
            layer.weights["spatial"].fill_(float(p0.gaussian_compat) if isinstance(p0.gaussian_compat, float) else 1.0)
            layer.weights["bilateral"].fill_(
                float(p0.bilateral_compat) if isinstance(p0.bilateral_compat, float) else 1.0
            )
    if compat != "matrix":
        layer.compat.requires_grad_(False)
    clamps = _log_bounds(layer, bounds) if bounds else {}

    def clamp():
        with torch.no_grad():
            for key, (lo, hi) in clamps.items():
                layer.log_bandwidths[key].clamp_(lo, hi)

    clamp()  # a start outside the bounds (the classic defaults under narrow ones) enters them
    shrinking = shrink > 0 and compat in ("diagonal", "matrix")
    opt = torch.optim.Adam([t for t in layer.parameters() if t.requires_grad], lr=lr)
    ignore = -100 if ignore_index is None else ignore_index
    cw = None
    if balanced:
        # Class weights 1 / sqrt(frequency) over the fitting part, scaled so that
        # the average pixel weighs 1: rare (often thin) classes count more, as
        # they do in mean IoU, without letting a handful of pixels dominate.
        counts = np.zeros(k)
        for i in fit_idx:
            lab = np.asarray(labels[i]).ravel()
            counts += np.bincount(lab[(lab >= 0) & (lab < k)], minlength=k)[:k]
        freq = counts / max(counts.sum(), 1.0)
        w = np.where(freq > 0, 1.0 / np.sqrt(np.maximum(freq, 1e-12)), 0.0)
        w /= max((freq * w).sum(), 1e-12)
        cw = torch.as_tensor(w, dtype=torch.float32)

    def sample():
        i = fit_idx[int(rng.integers(len(fit_idx)))]
        h, w = labels[i].shape
        ch, cw = min(crop, h), min(crop, w)
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        sl = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        p = np.clip(np.asarray(probs[i][sl], dtype=np.float32), _CLIP, None)
        logit = torch.from_numpy(np.log(p)).permute(2, 0, 1)[None]
        im = torch.from_numpy(np.asarray(images[i][sl], dtype=np.float32)).permute(2, 0, 1)[None]
        lab = torch.from_numpy(np.asarray(labels[i][sl], dtype=np.int64))[None]
        return logit, im, lab

    history = []
    best, since = -1.0, 0
    stopped_early = False
    for step in range(1, steps + 1):
        opt.zero_grad()
        total = 0.0
        for _ in range(batch):
            logit, im, lab = sample()
            z = layer(logit, im)
            valid = lab != ignore
            if not valid.any():
                continue
            lval = F.cross_entropy(z, lab, weight=cw, ignore_index=ignore)
            if loss == "ce+softiou":
                q = torch.softmax(z, 1)[0].permute(1, 2, 0)[valid[0]]  # [M, K]
                y = F.one_hot(lab[0][valid[0]], k).to(q.dtype)
                inter = (q * y).sum(0)
                union = (q + y - q * y).sum(0)
                present = y.sum(0) > 0
                lval = lval + (1.0 - inter[present] / union[present].clamp_min(1e-6)).mean()
            (lval / batch).backward()
            total += float(lval.detach()) / batch
        if shrinking:
            pen = shrink * _potts_distance(layer)
            pen.backward()
            total += float(pen.detach())
        opt.step()
        clamp()
        if score is None:
            if step == steps:
                history.append((None, layer.to_params(), step))
            continue
        if step % eval_every == 0 or step == steps:
            prm = layer.to_params()
            s = score(prm)
            history.append((s, prm, step))
            log(f"  step {step}: loss {total:.4f}, held-out mIoU {100 * s:.2f}  {describe(prm)}")
            if s > best + 1e-9:
                best, since = s, 0
            else:
                since += 1
                if since >= patience:
                    log(f"  early stop: {patience} evaluations without improvement")
                    stopped_early = True
                    break
    return history, stopped_early


def _potts_distance(layer):
    """Sum over the layer's terms of ||M_t - P(M_t)||_F^2, M_t = mu diag(w_t) the term's
    compatibility (as :meth:`CRFasRNN.to_params` writes it) and P(M) = mean(diag M) I the
    nearest Potts matrix to M in the Frobenius norm: zero exactly for Potts terms."""
    import torch

    eye = torch.eye(layer.n_classes, dtype=layer.compat.dtype)
    total = layer.compat.new_zeros(())
    for name in layer.weights:
        w = layer.weights[name]
        m = layer.compat * (w.reshape(1, -1) if w.dim() else w)
        total = total + ((m - torch.diagonal(m).mean() * eye) ** 2).sum()
    return total


def _log_bounds(layer, bounds):
    """{log-bandwidth key: (lo, hi)} of the layer's learned bandwidths: float tensors whose
    exp lies inside the bounds (log(lo) rounded to float32 can exp to just under lo)."""
    import torch

    names = {"spatial_sxy": "gaussian_sxy", "bilateral_sxy": "bilateral_sxy", "bilateral_srgb": "bilateral_srgb"}
    out = {}
    for key, param in layer.log_bandwidths.items():
        if names.get(key) not in bounds:
            continue
        lo, hi = bounds[names[key]]
        tlo = torch.log(torch.tensor(lo, dtype=param.dtype))
        thi = torch.log(torch.tensor(hi, dtype=param.dtype))
        inf = torch.tensor(float("inf"), dtype=param.dtype)
        while float(tlo.exp()) < lo:
            tlo = torch.nextafter(tlo, inf)
        while float(thi.exp()) > hi:
            thi = torch.nextafter(thi, -inf)
        out[key] = (float(tlo), float(thi))
    return out


def _still_improving(history, stopped_early: bool) -> bool:
    """Whether descent ended at its step limit with its best held-out score at
    the last evaluation (the first of equal scores counts, as in the selection)."""
    if stopped_early or not history:
        return False
    best = max(range(len(history)), key=lambda j: history[j][0])
    return best == len(history) - 1


def describe(p: CRFParams) -> str:
    def c(v):
        if v is None:
            return "off"
        if isinstance(v, float):
            return f"{v:.3g}"
        shape = "x".join(map(str, np.shape(v)))
        return f"[{shape}] mean |{np.abs(np.asarray(v)).mean():.3g}|"

    srgb = p.bilateral_srgb if isinstance(p.bilateral_srgb, float) else p.bilateral_srgb[0]
    return (
        f"gaussian(sxy {p.gaussian_sxy:.3g}, compat {c(p.gaussian_compat)}) "
        f"bilateral(sxy {p.bilateral_sxy:.3g}, srgb {srgb:.3g}, compat {c(p.bilateral_compat)})"
    )


# --------------------------------------------------------------------------
# The public function
# --------------------------------------------------------------------------
def fit(
    images,
    probs,
    labels,
    *,
    ignore_index: int | None = None,
    search: str = "gradient",
    holdout=None,
    groups=None,
    cv: int | None = None,
    shrink: float | None = None,
    bounds=None,
    compat: str | bool = "potts",
    loss: str = "ce",
    balanced: bool = True,
    crop: int = 160,
    n_iter: int = 5,
    steps: int = 80,
    batch: int = 2,
    lr: float = 0.03,
    eval_every: int = 10,
    patience: int = 3,
    grid=None,
    n_random: int = 24,
    seed: int = 0,
    threads: int | None = None,
    verbose: bool = False,
) -> CRFParams:
    """Learns dense-CRF parameters for a model from labelled images; see the module docstring.

    Args:
        images: list of ``[H, W, 3]`` images (uint8 0..255; float in the same
            units as ``bilateral_srgb``). Sizes may differ between images.
        probs: list of ``[H, W, K]`` probabilities (the network's softmax).
        labels: list of ``[H, W]`` integer labels in ``0..K-1`` or ``ignore_index``.
        ignore_index: label value left out of the loss and the scores.
        search: 'gradient' (grid, then gradient descent; needs torch),
            'grid' (the coarse grid of :func:`default_grid` or ``grid``) or
            'random' (``n_random`` log-uniform points).
        holdout: fraction of the images held out for selection and early
            stopping, or a list of their indices (default 0.3). Not with
            ``groups`` or ``cv``.
        groups: one hashable per image (a drive, a video, a patient): turns
            on cross-validation. Each distinct group is held out once
            (leave-one-group-out); with ``cv`` and more than ``cv`` groups,
            neighbouring groups (in order of first appearance) are merged
            into ``cv`` folds. Fewer than 2 groups, or a length other than
            the number of images: ValueError.
        cv: number of folds (>= 2). Without ``groups`` the images form
            ``cv`` contiguous blocks *in the given order*, not random folds:
            adjacent frames of a video are near-duplicates, and random folds
            would score a candidate on frames next to those it was fitted
            on. Pass the images in recording order, or pass ``groups``.

            On the cross-validated path every candidate (the network, the
            defaults, each grid or random point) is scored on each fold
            (mean IoU over the fold's images); its gain on a fold is its mIoU
            minus the network's there, and the selection takes the best mean
            gain over the folds. With ``search='gradient'``, descent runs once
            per fold (fitting on the other folds, early-stopped and scored on
            the fold; its start is the candidate with the best mean gain on
            the other folds, so the fold stays held out); the gradient
            candidate's per-fold gains are those runs' best held-out gains,
            and its parameters come from one final run on all images for the
            median (rounded up) of the per-fold best step counts: the folds
            say how long descent keeps helping on unseen groups, the final
            run uses all the evidence for that long. Its gains are therefore
            those of the procedure, not of the final parameters themselves,
            which no image is left to score. The "no CRF" rule: the
            selected candidate is returned only if its mean gain minus
            :data:`NO_CRF_SE` standard errors (over the folds) is above 0
            and it gains on at least :data:`NO_CRF_MIN_POSITIVE` of the folds;
            otherwise the parameters without terms are returned, with a
            UserWarning.
        shrink: strength of an L2 penalty, added to gradient descent's loss,
            on the distance of each term's learned compatibility (its
            ``[K, K]`` matrix with ``compat='matrix'``, its per-class weights
            with ``compat='diagonal'``) to the nearest Potts matrix
            (``mean(diag) * I``): ``shrink * ||M - P(M)||_F^2`` per term.
            Default (None): :data:`SHRINK` on the cross-validated path, 0
            (off) on the holdout path, whose results stay as they were.
            No effect with ``compat='potts'``.
        bounds: bandwidth bounds for gradient descent, applied to the
            log-bandwidths after every Adam step: a dict over the names of
            :data:`BANDWIDTH_BOUNDS` (``gaussian_sxy``, ``bilateral_sxy``,
            ``bilateral_srgb``: ``(lo, hi)``, the missing ones from it), True
            (:data:`BANDWIDTH_BOUNDS`) or False (none). Default (None):
            :data:`BANDWIDTH_BOUNDS` on the cross-validated path, none on the
            holdout path (as before). With bounds in force, a point of the
            caller's ``grid`` outside them is a ValueError; the default grid
            and random points are clipped into them.
        compat: 'potts' (one weight per term), 'diagonal' (one per term and
            class) or 'matrix' (a learned ``[K, K]`` compatibility shared by
            the terms, times one weight per term); True means 'matrix',
            False 'potts'. Only gradient descent learns more than Potts.
        loss: 'ce' (cross-entropy) or 'ce+softiou' (plus 1 - soft IoU averaged
            over the classes present in the crop).
        balanced: weight the cross-entropy by 1 / sqrt(class frequency) in
            the fitting part (normalised to an average pixel weight of 1), so
            that rare classes count as they do in mean IoU.
        crop: side of the random crops gradient descent trains on, in pixels
            at full resolution (bandwidths keep their pixel meaning).
        n_iter: mean-field iterations, in training and in the result.
        steps, batch, lr, eval_every, patience: Adam steps, crops per step,
            learning rate, steps between held-out scores, scores without
            improvement before stopping.
        grid: a list of CRFParams (or dicts) to use as the grid instead of
            :func:`default_grid`.
        seed: for the split, the crops and the random points.
        threads: native threads (default: all cores).
        verbose: print progress and the before/after table.

    Returns:
        The selected :class:`CRFParams`; ``info`` holds ``heldout_miou``
        (network, defaults, grid_best, gradient (when run), selected),
        ``selected`` (its name), ``per_class_iou``, ``time_s``, ``warnings``
        (the texts of the UserWarnings issued, see the module docstring), the
        split and the settings. The inputs are not modified.

        On the cross-validated path ``info['cv']`` replaces the held-out
        scores: ``folds`` (``name``: the group, groups joined by '+', or
        'images i-j'; ``indices``), ``network_miou`` (per fold),
        ``candidate`` (the name of the best candidate by mean gain, before
        the rule), ``gains`` and ``mean_gains`` of the references
        (network, defaults, grid_best, gradient when run, selected; their
        names in ``reference_names``), ``mean_gain``, ``se_gain`` (standard
        error over the folds) and ``n_positive`` of the selected candidate,
        ``verdict`` ('crf' or 'no CRF') with its ``reason``, the ``rule`` and,
        for gradient descent, the per-fold best steps and the final run's
        steps. Gains are fractions of mean IoU (0.01 = one point).
    """
    t0 = time.perf_counter()
    notes: list[str] = []  # what the caller should know: warned and kept in info["warnings"]
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    if isinstance(compat, bool):
        compat = "matrix" if compat else "potts"
    if compat not in COMPATS:
        raise ValueError(f"compat must be one of {COMPATS} (or a bool), got {compat!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    for name, v, lo in (
        ("crop", crop, 8),
        ("steps", steps, 1),
        ("batch", batch, 1),
        ("eval_every", eval_every, 1),
        ("patience", patience, 1),
        ("n_random", n_random, 1),
        ("n_iter", n_iter, 1),
    ):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if not (isinstance(lr, numbers.Real) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    k = _check_inputs(images, probs, labels, ignore_index)
    cv_path = groups is not None or cv is not None
    if cv_path and holdout is not None:
        raise ValueError(
            f"holdout={holdout!r} and groups=/cv= exclude each other: cross-validation holds out every "
            "fold in turn (pass holdout only without groups and cv)"
        )
    if shrink is None:
        shrink = SHRINK if cv_path else 0.0
    if isinstance(shrink, bool) or not isinstance(shrink, numbers.Real) or not (0 <= shrink < float("inf")):
        raise ValueError(f"shrink must be a finite number >= 0 (0 turns it off), got {shrink!r}")
    shrink = float(shrink)
    bnds = _resolve_bounds(bounds, cv_path)
    folds = _cv_folds(len(images), groups, cv) if cv_path else None
    rng = np.random.default_rng(seed)
    if not cv_path:
        fit_idx, hold = _checks.holdout_split(len(images), 0.3 if holdout is None else holdout, rng)
    if search == "gradient" and importlib.util.find_spec("torch") is None:
        # said after the arguments are checked (a bad one is named first, with or
        # without torch) and before the grid search runs, not after it
        raise ImportError(
            "fit(search='gradient') needs torch (pip install 'densecrf[torch]'); "
            "search='grid' or 'random' run without it"
        )
    log = print if verbose else (lambda *a, **kw: None)
    if search == "random":
        points = _random_points(n_random, rng) if cv_path else None
    else:
        from .params import as_params

        points = [as_params(g) for g in grid] if grid is not None else default_grid()
    gkw = {
        "k": k,
        "ignore_index": ignore_index,
        "compat": compat,
        "loss": loss,
        "balanced": balanced,
        "crop": crop,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "eval_every": eval_every,
        "patience": patience,
        "threads": threads,
        "log": log,
        "shrink": shrink,
        "bounds": bnds,
    }
    settings = {
        "compat": compat,
        "loss": loss,
        "balanced": bool(balanced),
        "crop": crop,
        "n_iter": n_iter,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "eval_every": eval_every,
        "patience": patience,
        "seed": seed,
        "ignore_index": ignore_index,
        "shrink": shrink,
        "bounds": None if bnds is None else {key: list(v) for key, v in bnds.items()},
    }
    if cv_path:
        points = _inside_bounds(points, bnds, user=grid is not None and search != "random")
        return _fit_cv(images, probs, labels, folds, points, search, n_iter, seed, t0, notes, settings, verbose, **gkw)
    if len(hold) < MIN_HELDOUT:
        notes.append(
            f"the held-out part has {len(hold)} image{'s' if len(hold) != 1 else ''} (fewer than "
            f"{MIN_HELDOUT}): the choice between candidates rests on very few images and may not "
            "carry over to new ones; give more labelled images or a larger holdout"
        )
    score = _Scorer(images, probs, labels, hold, k, ignore_index, threads)

    def with_iter(p):
        return dataclasses.replace(p, n_iter=n_iter, info={})

    scores = {}
    cands = []  # (name, params, held-out mIoU), in order of preference on ties
    for name, p in (("network", no_crf()), ("defaults", with_iter(CRFParams()))):
        s = score(p)
        scores[name] = s
        cands.append((name, p, s))
        log(f"{name:>10}: held-out mIoU {100 * s:.2f}")
    if search == "random":
        points = _random_points(n_random, rng)  # drawn after the split, as before groups and cv existed
    if bnds is not None:
        points = _inside_bounds(points, bnds, user=grid is not None and search != "random")
    best_grid = None
    for j, p in enumerate(points):
        p = with_iter(p)
        s = score(p)
        cands.append((f"{'random' if search == 'random' else 'grid'}[{j}]", p, s))
        if best_grid is None or s > best_grid[1]:
            best_grid = (p, s)
        log(f"  {'random' if search == 'random' else 'grid'}[{j}] {describe(p)}: {100 * s:.2f}")
    scores["grid_best"] = best_grid[1]
    log(f"{'grid best':>10}: held-out mIoU {100 * best_grid[1]:.2f}  {describe(best_grid[0])}")
    if search == "gradient":
        start = max(((p, s) for name, p, s in cands if name != "network"), key=lambda t: t[1])[0]
        hist, stopped_early = _gradient(
            start,
            images,
            probs,
            labels,
            fit_idx,
            score,
            k=k,
            ignore_index=ignore_index,
            compat=compat,
            loss=loss,
            balanced=balanced,
            crop=crop,
            steps=steps,
            batch=batch,
            lr=lr,
            eval_every=eval_every,
            patience=patience,
            threads=threads,
            rng=rng,
            log=log,
            shrink=shrink,
            bounds=bnds,
        )
        s, p, step = max(hist, key=lambda t: t[0])
        p = with_iter(p)
        scores["gradient"] = s
        cands.append((f"gradient[step {step}]", p, s))
        if _still_improving(hist, stopped_early):
            notes.append(
                f"gradient descent reached its step limit (steps={steps}) with its best held-out score "
                f"at its last evaluation (step {hist[-1][2]}): it was still improving; more steps "
                "(steps=, --steps) may find better parameters"
            )
    # max() keeps the first of equal scores: the network, then the defaults, the grid, gradient descent.
    name, chosen, s = max(cands, key=lambda t: t[2])
    scores["selected"] = s
    if name == "network":
        notes.append(
            f"no CRF setting beat the network alone on the held-out images (mean IoU "
            f"{100 * s:.2f}): the returned parameters have no terms, and refine with them returns "
            "the network's probabilities"
        )
    elapsed = time.perf_counter() - t0
    chosen = dataclasses.replace(chosen, info={})
    per_class = {"network": score.metrics(cands[0][1]).iou().tolist(), "selected": score.metrics(chosen).iou().tolist()}
    chosen.info = {
        "method": "densecrf.fit",
        "search": search,
        "selected": name,
        "no_crf": name == "network",
        "heldout_miou": {key: round(v, 6) for key, v in scores.items()},
        "grid_best_params": {
            key: v for key, v in best_grid[0].to_dict().items() if key not in ("format", "version", "info")
        },
        "heldout_per_class_iou": {
            key: [None if np.isnan(x) else round(x, 6) for x in v] for key, v in per_class.items()
        },
        "n_images": len(images),
        "heldout_indices": hold,
        "time_s": round(elapsed, 2),
        "warnings": list(notes),
        "settings": {**settings, "grid_points": len(points)},
    }
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    if verbose:
        print(format_table(chosen.info))
    return chosen


def _gain_stats(gains) -> tuple[float, float, int]:
    """(mean, standard error of the mean, number of positive) of per-fold gains."""
    g = np.asarray(gains, dtype=np.float64)
    se = float(g.std(ddof=1) / np.sqrt(len(g))) if len(g) > 1 else float("nan")
    return float(g.mean()), se, int((g > 0).sum())


def _verdict(name: str, gains) -> tuple[str, str]:
    """('crf' or 'no CRF', the reason) of the candidate ``name`` with per-fold ``gains``: the no-CRF rule."""
    mean, se, n_pos = _gain_stats(gains)
    n_f = len(gains)
    if name == "network":
        return "no CRF", "no CRF candidate gained on average over the folds"
    if not mean - NO_CRF_SE * se > 0:
        return "no CRF", (
            f"{name}'s mean gain {100 * mean:+.2f} points minus {NO_CRF_SE:g} standard error "
            f"({100 * se:.2f}) is not above 0"
        )
    if n_pos < NO_CRF_MIN_POSITIVE * n_f:
        return "no CRF", f"{name} gains on {n_pos} of {n_f} folds only (the rule asks for at least half)"
    return "crf", (
        f"{name}'s mean gain {100 * mean:+.2f} points minus {NO_CRF_SE:g} standard error "
        f"({100 * se:.2f}) is above 0 and it gains on {n_pos} of {n_f} folds"
    )


def _fit_cv(images, probs, labels, folds, points, search, n_iter, seed, t0, notes, settings, verbose, **gkw):
    """The cross-validated path of :func:`fit` (groups= or cv=); see its docstring."""
    k, ignore_index, threads, log = gkw["k"], gkw["ignore_index"], gkw["threads"], gkw["log"]
    n_f = len(folds)
    scorers = [_Scorer(images, probs, labels, idx, k, ignore_index, threads) for _, idx in folds]
    log(f"cross-validation, {n_f} folds: " + ", ".join(f"{name} ({len(idx)} images)" for name, idx in folds))
    if len(images) < MIN_HELDOUT:
        notes.append(
            f"cross-validation rests on {len(images)} images (fewer than {MIN_HELDOUT}): the choice between "
            "candidates may not carry over to new ones; give more labelled images"
        )

    def with_iter(p):
        return dataclasses.replace(p, n_iter=n_iter, info={})

    def per_fold(p):
        return [sc(p) for sc in scorers]

    net = per_fold(no_crf())
    cands = [("network", no_crf(), [0.0] * n_f)]  # (name, params, per-fold gains), preferred first on ties

    def add(name, p):
        gains = [s - b for s, b in zip(per_fold(p), net, strict=True)]
        cands.append((name, p, gains))
        log(f"  {name} {describe(p)}: mean gain {100 * np.mean(gains):+.2f}")

    log(f"   network: mIoU per fold {' '.join(f'{100 * s:.2f}' for s in net)}")
    add("defaults", with_iter(CRFParams()))
    kind = "random" if search == "random" else "grid"
    for j, p in enumerate(points):
        add(f"{kind}[{j}]", with_iter(p))
    best_grid = max(cands[2:], key=lambda c: np.mean(c[2]))
    gradient = None
    if search == "gradient":
        best_steps, fold_gains, improving = [], [], []
        for f, (fname, _) in enumerate(folds):
            others = [j for j in range(n_f) if j != f]
            # the start is chosen without the fold it is scored on: the per-fold gain stays held out
            start = max((c for c in cands if c[0] != "network"), key=lambda c: np.mean([c[2][j] for j in others]))
            fit_idx = sorted(i for j in others for i in folds[j][1])
            log(f"gradient descent, fold {fname}: from {start[0]}, fitting on {len(fit_idx)} images")
            hist, stopped = _gradient(
                start[1], images, probs, labels, fit_idx, scorers[f], rng=np.random.default_rng([seed, f]), **gkw
            )
            s_best, _, step = max(hist, key=lambda t: t[0])
            best_steps.append(step)
            fold_gains.append(s_best - net[f])
            if _still_improving(hist, stopped):
                improving.append(fname)
        # Final parameters: one run on all images for the median best step count
        # (rounded up): the per-fold runs say how long descent helps on new
        # groups; a run on all images uses every group's evidence for that long.
        final_steps = int(np.ceil(np.median(best_steps)))
        start = max((c for c in cands if c[0] != "network"), key=lambda c: np.mean(c[2]))
        log(f"gradient descent, all images: from {start[0]}, {final_steps} steps")
        hist, _ = _gradient(
            start[1],
            images,
            probs,
            labels,
            list(range(len(images))),
            None,
            rng=np.random.default_rng([seed, n_f]),
            **{**gkw, "steps": final_steps},
        )
        cands.append((f"gradient[{final_steps} steps]", with_iter(hist[-1][1]), fold_gains))
        gradient = {"best_steps": best_steps, "final_steps": final_steps, "start": start[0]}
        if improving:
            notes.append(
                f"gradient descent reached its step limit (steps={gkw['steps']}) still improving on "
                f"fold{'s' if len(improving) > 1 else ''} {', '.join(improving)}: more steps "
                "(steps=, --steps) may find better parameters"
            )
    # max() keeps the first of equal means: the network, the defaults, the grid, gradient descent.
    name, chosen, gains = max(cands, key=lambda c: np.mean(c[2]))
    mean, se, n_pos = _gain_stats(gains)
    verdict, reason = _verdict(name, gains)
    if verdict == "no CRF":
        notes.append(
            f"cross-validation says no CRF: {reason}; the returned parameters have no terms, and refine "
            "with them returns the network's probabilities"
        )
    refs = {"network": cands[0], "defaults": cands[1], "grid_best": best_grid}
    if search == "gradient":
        refs["gradient"] = cands[-1]
    refs["selected"] = (name, chosen, gains)

    def r6(v):
        return [round(float(x), 6) for x in v]

    out = no_crf() if verdict == "no CRF" else dataclasses.replace(chosen, info={})
    out.info = {
        "method": "densecrf.fit",
        "search": search,
        "selection": "cv",
        "selected": name if verdict == "crf" else "network",
        "no_crf": verdict == "no CRF",
        "cv": {
            "folds": [{"name": fname, "indices": list(idx)} for fname, idx in folds],
            "network_miou": r6(net),
            "candidate": name,
            "reference_names": {key: c[0] for key, c in refs.items()},
            "gains": {key: r6(c[2]) for key, c in refs.items()},
            "mean_gains": {key: round(float(np.mean(c[2])), 6) for key, c in refs.items()},
            "mean_gain": round(mean, 6),
            "se_gain": round(se, 6),
            "n_positive": n_pos,
            "verdict": verdict,
            "reason": reason,
            "rule": {"se_factor": NO_CRF_SE, "min_positive_fraction": NO_CRF_MIN_POSITIVE},
            "gradient": gradient,
        },
        "grid_best_params": {
            key: v for key, v in best_grid[1].to_dict().items() if key not in ("format", "version", "info")
        },
        "n_images": len(images),
        "time_s": round(time.perf_counter() - t0, 2),
        "warnings": list(notes),
        "settings": {**settings, "grid_points": len(points), "folds": n_f},
    }
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=3)
    if verbose:
        print(format_table(out.info))
    return out


def _format_cv(info: dict) -> list[str]:
    cv = info["cv"]
    names = [f["name"] for f in cv["folds"]]
    lines = [
        f"cross-validated gain in mean IoU over the network alone, points ({len(names)} folds: {', '.join(names)})",
        f"  {'':<36} {'mean':>7} {'s.e.':>6}  per fold",
        f"  {'network alone (mIoU)':<36} {'':>7} {'':>6}  " + " ".join(f"{100 * v:6.2f}" for v in cv["network_miou"]),
    ]
    rows = [("classic defaults", "defaults"), ("best grid point", "grid_best"), ("gradient descent", "gradient")]
    rows.append((f"selected ({cv['candidate']})", "selected"))
    for label, key in rows:
        if key not in cv["gains"]:
            continue
        mean, se, _ = _gain_stats(cv["gains"][key])
        per = " ".join(f"{100 * v:+6.2f}" for v in cv["gains"][key])
        lines.append(f"  {label:<36} {100 * mean:+7.2f} {100 * se:6.2f}  {per}")
    g = np.asarray(cv["gains"]["selected"])
    lines.append(
        f"expected gain: {100 * cv['mean_gain']:+.2f} points of mean IoU (standard error {100 * cv['se_gain']:.2f}; "
        f"from {100 * g.min():+.2f} to {100 * g.max():+.2f} over the folds)"
    )
    lines.append(f"verdict: {'no CRF' if cv['verdict'] == 'no CRF' else 'CRF'} ({cv['reason']})")
    return lines


def format_table(info: dict) -> str:
    """The before/after table of a fit's ``info``: held-out mean IoU of each reference."""
    rows = [
        ("network alone", "network"),
        ("classic defaults", "defaults"),
        ("best grid point", "grid_best"),
        ("gradient descent", "gradient"),
        (f"selected ({info.get('selected')})", "selected"),
    ]
    if "cv" in info:
        lines = _format_cv(info)
        lines.append(f"fitting time: {info['time_s']:.1f} s")
        lines += [f"warning: {note}" for note in info.get("warnings", [])]
        return "\n".join(lines)
    s = info["heldout_miou"]
    lines = [f"held-out mean IoU ({len(info['heldout_indices'])} images)", f"  {'':<32} mIoU"]
    for label, key in rows:
        if key in s:
            lines.append(f"  {label:<32} {100 * s[key]:6.2f}")
    lines.append(f"fitting time: {info['time_s']:.1f} s")
    lines += [f"warning: {note}" for note in info.get("warnings", [])]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Folders of images, probability maps and labels (what ``densecrf fit`` reads)
# --------------------------------------------------------------------------
def _stems(folder: str, exts: tuple[str, ...], what: str) -> dict[str, str]:
    if not os.path.isdir(folder):
        raise InputError(f"{what} folder {folder} does not exist")
    out = {}
    for n in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(n)
        if ext.lower() in exts:
            out[stem] = os.path.join(folder, n)
    if not out:
        raise InputError(f"{what} folder {folder} has no {'/'.join(exts)} files")
    return out


@dataclasses.dataclass
class FolderMatch:
    """Files of three folders matched by stem: ``triples[i]`` = (image, probs, labels) paths of ``names[i]``.

    ``unused`` counts the files of the probs and labels folders whose stem
    has no image: a labels folder may hold a whole dataset's annotations
    while the images folder holds the subset to fit on.
    """

    names: list[str]
    triples: list[tuple[str, str, str]]
    unused: dict[str, int]


def match_folders(images_dir: str, probs_dir: str, labels_dir: str) -> FolderMatch:
    """Matches the folders by file stem; every image needs its probability map and its label image.

    Raises InputError naming the first image without one of them.
    """
    ims = _stems(images_dir, IMAGE_EXTS, "images")
    prs = _stems(probs_dir, PROB_EXTS, "probs")
    labs = _stems(labels_dir, (".png",), "labels")
    names = sorted(ims)
    for other, what in ((prs, "probs"), (labs, "labels")):
        missing = [s for s in names if s not in other]
        if missing:
            raise InputError(
                f"unmatched file names: {missing[0]!r} is in images but not in {what} "
                f"({len(missing)} of {len(names)} images have no {what} file)"
            )
    unused = {"probs": sum(s not in ims for s in prs), "labels": sum(s not in ims for s in labs)}
    return FolderMatch(names, [(ims[s], prs[s], labs[s]) for s in names], unused)


def load_folders(images_dir: str, probs_dir: str, labels_dir: str):
    """(names, images, probs, labels) from three folders matched by file stem (:func:`match_folders`).

    Read through :mod:`densecrf.io`: images as ``[H, W, 3]`` uint8 RGB (grey
    and RGBA converted), label PNGs (palette or grey) as ``[H, W]`` class
    indices, probability maps from ``.npy`` or ``.npz`` without pickled
    objects. Files of the probs and labels folders without an image are not read.
    """
    return read_matched(match_folders(images_dir, probs_dir, labels_dir))


def read_matched(match: FolderMatch):
    """(names, images, probs, labels) of a :class:`FolderMatch`, each checked against its image's size."""
    images, probs, labels = [], [], []
    for s, (ip, pp, lp) in zip(match.names, match.triples, strict=True):
        im = read_image(ip, f"image of {s!r}")
        lab = read_labels(lp, f"label image of {s!r}")
        p = read_npy(pp, f"probabilities of {s!r}")
        if p.ndim != 3 or p.shape[:2] != im.shape[:2]:
            raise InputError(f"{pp} has shape {p.shape}, expected [H, W, K] with H, W = {im.shape[:2]} of its image")
        if lab.shape != im.shape[:2]:
            raise InputError(f"{lp} has shape {lab.shape}, expected {im.shape[:2]} (its image's size, one channel)")
        images.append(im)
        probs.append(p)
        labels.append(lab)
    return list(match.names), images, probs, labels
