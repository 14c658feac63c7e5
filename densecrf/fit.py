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
):
    """Adam on random crops; returns [(held-out score, params, step)] of every evaluation."""
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
        opt.step()
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
    holdout=0.3,
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
            stopping, or a list of their indices.
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
    rng = np.random.default_rng(seed)
    fit_idx, hold = _checks.holdout_split(len(images), holdout, rng)
    if search == "gradient" and importlib.util.find_spec("torch") is None:
        # said after the arguments are checked (a bad one is named first, with or
        # without torch) and before the grid search runs, not after it
        raise ImportError(
            "fit(search='gradient') needs torch (pip install 'densecrf[torch]'); "
            "search='grid' or 'random' run without it"
        )
    if len(hold) < MIN_HELDOUT:
        notes.append(
            f"the held-out part has {len(hold)} image{'s' if len(hold) != 1 else ''} (fewer than "
            f"{MIN_HELDOUT}): the choice between candidates rests on very few images and may not "
            "carry over to new ones; give more labelled images or a larger holdout"
        )
    log = print if verbose else (lambda *a, **kw: None)
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
        points = _random_points(n_random, rng)
    else:
        from .params import as_params

        points = [as_params(g) for g in grid] if grid is not None else default_grid()
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
        "settings": {
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
            "grid_points": len(points),
        },
    }
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    if verbose:
        print(format_table(chosen.info))
    return chosen


def format_table(info: dict) -> str:
    """The before/after table of a fit's ``info``: held-out mean IoU of each reference."""
    rows = [
        ("network alone", "network"),
        ("classic defaults", "defaults"),
        ("best grid point", "grid_best"),
        ("gradient descent", "gradient"),
        (f"selected ({info.get('selected')})", "selected"),
    ]
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
