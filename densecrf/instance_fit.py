"""Fit the instance CRF to a detector: ``densecrf.fit_instances``.

The unary calibration and the pairwise terms of :func:`densecrf.refine_instances`
suit one detector and not another (a textbook CRF empties weak instances).
:func:`fit_instances` chooses them from a few labelled images:

1. The images are split into a search part and a held-out part (``holdout``).
2. Search: ``n_random`` log-uniform random points over the unary's
   calibration (``power``, ``score_power``, ``fg_bias``,
   ``confident_bonus``, ``min_prob``), the kernel weights and bandwidths and
   the instance/instance compatibility, plus pydensecrf's textbook
   parameters, each scored on the search part; then ``n_local`` moves of one
   parameter at a time around the best point (x or / 1.5, or +- 0.5 for the
   additive ones), kept when they score better.
3. Selection on the held-out part: the ``top`` best points of the search
   and the input masks themselves (no refinement) are scored there; the
   best point by ``metric`` that is also no worse than the input on each
   of ``guard`` wins, else *no refinement* is returned
   (``InstanceParams(refine=False)``: the input masks thresholded at 0.5).
   So on the held-out images the result is never worse than the input.
   It must also gain *reliably* there: its gain in PQ (of things for
   :func:`fit_instances`, over all segments for :func:`fit_panoptic`)
   over the input must be positive in at least ``confidence`` (0.9) of
   ``n_boot`` paired bootstrap resamples of the held-out images. A point
   that wins by a hair on a few images wins by chance as often as not, and
   then loses on the next drive (docs/instances.md saw exactly that). PQ
   is resampled because it is a sum of per-image counts; AP ranks the
   detections of the whole set, so its resampling would rerun COCO's
   evaluation a thousand times per candidate.

:func:`fit_panoptic` does the same for :func:`densecrf.refine_panoptic`
(stuff classes and thing instances in one CRF), scored by PQ over all
segments, of things and of stuff, with ``class_power`` (how much the
semantic class probability weighs on an instance) searched as well.

Instances are pasted over stuff in a panoptic output, so a refinement that
gains on things can lose on stuff, which an instance fit does not see.
Given ``stuff`` (per image the stuff map the instances will be pasted over
and the panoptic ground truth), :func:`fit_instances` also scores the PQ of
stuff (``"pq_stuff"``) of the instances pasted over that map as
:func:`densecrf.instances.instances_to_panoptic` does, and guards it.

Scores: COCO mask AP at 0.5:0.95 (``"ap"``) and 0.5 (``"ap50"``) through
pycocotools (:func:`densecrf.coco.mask_ap`), and PQ of things
(``"pq"``; :class:`densecrf.metrics.PanopticQuality`, with everything that
is not an instance as one background segment, the instances merged into a
panoptic map by :func:`densecrf.instances.instances_to_panoptic`).
"""

from __future__ import annotations

import time

import numpy as np

from . import _checks
from .instances import InstanceParams, instances_to_panoptic, refine_instances, refine_panoptic
from .metrics import PanopticQuality

__all__ = ["fit_instances", "fit_panoptic", "score_instances"]

_BACKGROUND = 2**31 - 1  # the category of everything that is not an instance, in the things-only PQ
_METRICS = ("ap", "ap50", "pq")
_STUFF_METRICS = (*_METRICS, "pq_stuff")  # fit_instances given stuff
_PANOPTIC_METRICS = ("pq", "pq_things", "pq_stuff")
_LOG_PARAMS = (
    "power",
    "min_prob",
    "gaussian_weight",
    "bilateral_sxy",
    "bilateral_srgb",
    "bilateral_weight",
    "instance_compat",
)
_ADD_PARAMS = ("score_power", "fg_bias", "confident_bonus")


def _thing_panoptic(masks, classes, scores, shape):
    """Instances merged over one background segment (not void)."""
    return instances_to_panoptic(np.full(shape, _BACKGROUND, dtype=np.int64), masks, classes, scores)


def _counts(pq: PanopticQuality) -> np.ndarray:
    """``[4, n_categories]``: summed IoU, TP, FP and FN of a PanopticQuality."""
    return np.stack([pq.iou, pq.tp, pq.fp, pq.fn]).astype(np.float64)


def _totals(per_image: np.ndarray, categories: dict) -> dict:
    """``PanopticQuality(categories).compute()`` over the images whose counts
    (``[n, 4, n_categories]``, from :func:`_counts`) are given: the counts
    summed, the figures by the metric's own definition."""
    pq = PanopticQuality(categories)
    iou, tp, fp, fn = per_image.sum(axis=0) if len(per_image) else np.zeros((4, len(categories)))
    pq.iou = iou
    pq.tp, pq.fp, pq.fn = (np.rint(x).astype(np.int64) for x in (tp, fp, fn))
    pq.n_images = len(per_image)
    return pq.compute()


def _per_image_counts(pairs, categories: dict) -> np.ndarray:
    """``[n, 4, n_categories]`` counts of (prediction, ground truth) pairs in COCO's
    panoptic form, ``((ids, segments), (ids, segments))`` per image."""
    rows = []
    for (pid, pinfo), (gid, ginfo) in pairs:
        one = PanopticQuality(categories)
        one.update(pid, pinfo, gid, ginfo)
        rows.append(_counts(one))
    return np.array(rows).reshape(-1, 4, len(categories))


def _stuff_pq(predictions, masks, stuff) -> float:
    """PQ of stuff of the instances (``masks``, their overlaps resolved or not)
    pasted over each image's stuff map by instances_to_panoptic, against its
    panoptic ground truth; ``stuff`` as fit_instances takes it."""
    cats = {int(c): True for p in predictions for c in np.asarray(p["classes"]).reshape(-1)}
    pairs = []
    for p, m, (stuff_map, gt) in zip(predictions, masks, stuff, strict=True):
        for seg in gt[1]:
            cats.setdefault(int(seg["category_id"]), False)
        for c in np.unique(stuff_map[stuff_map >= 0]):
            cats.setdefault(int(c), False)
        pairs.append((instances_to_panoptic(stuff_map, m, p["classes"], p["scores"]), gt))
    return _totals(_per_image_counts(pairs, cats), cats)["stuff"]["pq"]


def _score_instances(predictions, ground_truth, stuff=None) -> tuple[dict, np.ndarray, dict]:
    """score_instances' figures (with ``"pq_stuff"`` given ``stuff``), the per-image
    PQ counts of things ``[n, 4, n_categories]`` and the PQ's categories."""
    from .coco import mask_ap

    ap = mask_ap(predictions, ground_truth)
    cats = {int(c): True for g in ground_truth for c in np.asarray(g["classes"]).reshape(-1)}
    cats.update({int(c): True for p in predictions for c in np.asarray(p["classes"]).reshape(-1)})
    cats[_BACKGROUND] = False
    pairs, merged = [], []
    for p, g in zip(predictions, ground_truth, strict=True):
        gm = np.asarray(g["masks"], dtype=bool)
        shape = gm.shape[1:] if gm.ndim == 3 and gm.shape[0] else np.asarray(p["masks"]).shape[1:]
        pm = np.asarray(p["masks"], dtype=bool)
        if p.get("ids") is not None:  # overlaps already resolved: the masks of the id map
            pm = np.asarray(p["ids"])[None] == np.arange(1, pm.shape[0] + 1)[:, None, None]
        merged.append(pm)
        pred = _thing_panoptic(pm, p["classes"], p["scores"], shape)
        pairs.append((pred, _thing_panoptic(gm, g["classes"], None, shape)))
    per_image = _per_image_counts(pairs, cats)
    res = _totals(per_image, cats)
    figures = {"ap": ap["ap"], "ap50": ap["ap50"], "pq": res["things"]["pq"]}
    if stuff is not None:
        figures["pq_stuff"] = _stuff_pq(predictions, merged, stuff)
    return figures, per_image, cats


def score_instances(predictions, ground_truth) -> dict:
    """``{"ap", "ap50", "pq"}`` of per-image predictions (dicts with ``masks``
    ``[P, H, W]`` bool, ``scores``, ``classes``) against ground truth (dicts
    with ``masks``, ``classes``): COCO mask AP (pycocotools) and the
    things' PQ accumulated over the images (everything else one background
    segment). PQ merges overlapping masks the usual way (decreasing score,
    an instance with less than half of its mask left dropped), unless a
    prediction holds ``ids`` (``[H, W]``, 0 or i + 1, as
    :attr:`InstanceResult.ids <densecrf.instances.InstanceResult.ids>`): then
    instance i's segment is where ``ids`` is i + 1."""
    return _score_instances(predictions, ground_truth)[0]


class _Scored(dict):
    """Scores (a dict of figures) with what the bootstrap resamples: the per-image
    PQ counts ``per_image`` ``[n, 4, n_categories]`` over ``categories``, and
    ``part``, the PQ compared ('things' or 'all')."""

    per_image: np.ndarray
    categories: dict
    part: str


def _scored(figures: dict, per_image: np.ndarray, categories: dict, part: str) -> _Scored:
    s = _Scored(figures)
    s.per_image, s.categories, s.part = per_image, categories, part
    return s


class _Scorer:
    def __init__(self, images, inputs, gts, idx, threads, device, stuff=None):
        self.items = [(images[i], inputs[i], gts[i]) for i in idx]
        self.stuff = None if stuff is None else [stuff[i] for i in idx]
        self.threads, self.device = threads, device
        self.n_runs = 0

    def __call__(self, prm: InstanceParams) -> _Scored:
        preds, gts = [], []
        for im, inp, gt in self.items:
            r = refine_instances(
                im,
                inp["masks"],
                inp.get("scores"),
                boxes=inp.get("boxes"),
                params=prm,
                threads=self.threads,
                device=self.device,
            )
            n = r.masks.shape[0]
            preds.append(
                {
                    "masks": r.masks,
                    "classes": inp["classes"],
                    "scores": np.ones(n) if inp.get("scores") is None else inp["scores"],
                    # A refinement's overlaps as its id map resolves them; the input's by the usual merge.
                    "ids": r.ids if prm.refine else None,
                }
            )
            gts.append(gt)
            self.n_runs += 1
        figures, per_image, cats = _score_instances(preds, gts, self.stuff)
        return _scored(figures, per_image, cats, "things")


class _PanopticScorer:
    """PQ of refine_panoptic's output over all segments, of things and of stuff."""

    def __init__(self, images, probs, inputs, gts, things, categories, idx, threads, device):
        self.items = [(images[i], probs[i], inputs[i], gts[i]) for i in idx]
        self.things, self.categories = things, categories
        self.threads, self.device = threads, device
        self.n_runs = 0

    def __call__(self, prm: InstanceParams) -> _Scored:
        pairs = []
        for im, sp, inp, gt in self.items:
            pairs.append(
                (refine_panoptic(im, sp, inp, self.things, params=prm, threads=self.threads, device=self.device), gt)
            )
            self.n_runs += 1
        per_image = _per_image_counts(pairs, self.categories)
        res = _totals(per_image, self.categories)
        figures = {"pq": res["all"]["pq"], "pq_things": res["things"]["pq"], "pq_stuff": res["stuff"]["pq"]}
        return _scored(figures, per_image, self.categories, "all")


def _random_point(base: InstanceParams, rng, panoptic: bool = False) -> InstanceParams:
    def lu(lo, hi):
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

    p = base.replace(
        power=lu(0.5, 6.0),
        score_power=float(rng.uniform(0.0, 2.0)),
        fg_bias=float(rng.uniform(-1.0, 3.0)),
        confident_bonus=float(rng.uniform(0.0, 3.0)) if rng.random() < 0.5 else 0.0,
        min_prob=lu(1e-4, 0.1),
        gaussian_weight=None if rng.random() < 0.25 else lu(0.3, 5.0),
        bilateral_sxy=lu(10.0, 100.0),
        bilateral_srgb=lu(3.0, 30.0),
        bilateral_weight=lu(0.3, 10.0),
        instance_compat=lu(0.5, 3.0),
        refine=True,
        info={},
    )
    # Drawn after the others, so that an instance fit's points are the same as before fit_panoptic existed.
    return p.replace(class_power=lu(0.3, 3.0)) if panoptic else p


def _neighbours(p: InstanceParams, rng, n: int, panoptic: bool = False) -> list[InstanceParams]:
    log_params = _LOG_PARAMS + (("class_power",) if panoptic else ())
    names = [k for k in log_params + _ADD_PARAMS if getattr(p, k) is not None]
    out = []
    for _ in range(n):
        k = names[int(rng.integers(len(names)))]
        v = getattr(p, k)
        if k in _ADD_PARAMS:
            nv = max(0.0, v + float(rng.choice([-0.5, 0.5]))) if k != "fg_bias" else v + float(rng.choice([-0.5, 0.5]))
        else:
            nv = v * float(rng.choice([1 / 1.5, 1.5]))
            if k == "min_prob":
                nv = min(nv, 0.4)
        out.append(p.replace(**{k: nv}, info={}))
    return out


def _key(s: dict, metric: str) -> float:
    v = s[metric]
    return -np.inf if np.isnan(v) else v


def gain_confidence(
    candidate: np.ndarray, reference: np.ndarray, categories: dict, part: str, n_boot: int, rng
) -> float:
    """The fraction of ``n_boot`` paired bootstrap resamples of the images in which the
    candidate's PQ beats the reference's (ties count as no gain).

    ``candidate`` and ``reference`` are per-image counts ``[n, 4, n_categories]``
    (summed IoU, TP, FP, FN, categories in sorted order as
    :class:`densecrf.metrics.PanopticQuality` keeps them) on the same images;
    ``categories`` ``{category: isthing}``; ``part`` the PQ compared: 'all',
    'things' or 'stuff', as ``PanopticQuality.compute()`` names them."""
    n = candidate.shape[0]
    if n == 0 or n_boot <= 0:
        return 0.0
    wins = 0
    for rows in rng.integers(n, size=(n_boot, n)):
        gain = _totals(candidate[rows], categories)[part]["pq"] - _totals(reference[rows], categories)[part]["pq"]
        wins += bool(gain > 0)  # NaN (no segment at all in the resample) is no gain
    return wins / n_boot


def per_image_counts(pq: PanopticQuality) -> np.ndarray:
    """``[4, n_categories]``: the summed IoU, TP, FP and FN that a
    :class:`densecrf.metrics.PanopticQuality` fed one image holds, in the
    layout :func:`gain_confidence` and :func:`pq_gain_interval` take (stack
    one per image)."""
    return _counts(pq)


def pq_gain_interval(
    candidate: np.ndarray, reference: np.ndarray, categories: dict, part: str, n_boot: int, rng, level: float = 0.9
) -> tuple[float, float, float]:
    """The candidate's PQ minus the reference's on the images given, and the
    central ``level`` interval of that difference over ``n_boot`` paired
    bootstrap resamples of the images: ``(gain, low, high)``.

    Inputs as :func:`gain_confidence`. A resample in which either PQ is
    undefined (no segment of ``part`` at all) is left out; NaNs come back when
    every resample is."""
    if candidate.shape != reference.shape or candidate.ndim != 3 or candidate.shape[1] != 4:
        raise ValueError(
            f"candidate and reference must be per-image counts [n, 4, n_categories] of the same shape, got "
            f"{candidate.shape} and {reference.shape}"
        )
    if not 0 < float(level) < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    n = candidate.shape[0]
    gain = _totals(candidate, categories)[part]["pq"] - _totals(reference, categories)[part]["pq"]
    diffs = []
    for rows in rng.integers(n, size=(max(0, int(n_boot)), n)) if n else ():
        d = _totals(candidate[rows], categories)[part]["pq"] - _totals(reference[rows], categories)[part]["pq"]
        if not np.isnan(d):
            diffs.append(d)
    if not diffs:
        return float(gain), float("nan"), float("nan")
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return float(gain), float(lo), float(hi)


def _check_common(n, lengths, metric, guard, allowed, confidence, n_boot):
    if any(m != n for m in lengths):
        raise ValueError(
            f"images, inputs and ground_truth must have one entry per image, got {n}, " + ", ".join(map(str, lengths))
        )
    if n < 2:
        raise ValueError(f"fitting needs at least 2 labelled images (a search and a held-out part), got {n}")
    for name in (metric, *guard):
        if name not in allowed:
            raise ValueError(f"metrics must be among {allowed}, got {name!r}")
    if not 0 <= float(confidence) < 1:
        raise ValueError(f"confidence must be in [0, 1), got {confidence!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")


def _search_and_select(
    search, held, base, mode, *, metric, guard, confidence, n_boot, n_random, n_local, top, rng, boot_rng, say, panoptic
):
    """Steps 2 and 3 of the module docstring; returns (chosen params, info)."""
    textbook = InstanceParams.textbook(n_iter=base.n_iter, mode=mode, crop_margin=base.crop_margin)
    tried = [(search(textbook), textbook)]
    say(f"textbook: {dict(tried[0][0])}")
    for k in range(n_random):
        p = _random_point(base, rng, panoptic)
        tried.append((search(p), p))
        say(f"random {k + 1}/{n_random}: {metric} {tried[-1][0][metric]:.4f}")
    tried.sort(key=lambda t: -_key(t[0], metric))
    best_s, best = tried[0]
    for k, p in enumerate(_neighbours(best, rng, n_local, panoptic)):
        s = search(p)
        tried.append((s, p))
        if _key(s, metric) > _key(best_s, metric):
            best_s, best = s, p
            say(f"local {k + 1}/{n_local}: better, {metric} {s[metric]:.4f}")
    tried.sort(key=lambda t: -_key(t[0], metric))
    finalists: list = []
    for s, p in tried:
        if all(p is not q for _, q in finalists):
            finalists.append((s, p))
        if len(finalists) == top:
            break
    no_ref = InstanceParams.no_refinement(mode=mode)
    input_held = held(no_ref)
    say(f"held-out input: {dict(input_held)}")
    chosen, chosen_s, rows = no_ref, input_held, []
    for s, p in finalists:
        hs = held(p)
        conf = gain_confidence(hs.per_image, input_held.per_image, hs.categories, hs.part, n_boot, boot_rng)
        no_worse = all(_key(hs, g) >= _key(input_held, g) for g in guard)
        rows.append(
            {
                "search": dict(s),
                "held_out": dict(hs),
                "gain_confidence": conf,
                "no_worse": no_worse,
                "params": {k: v for k, v in p.to_dict().items() if k != "info"},
            }
        )
        say(f"held-out candidate: {dict(hs)}, PQ gain in {100 * conf:.1f} % of resamples")
        if no_worse and conf >= confidence and _key(hs, metric) > _key(chosen_s, metric):
            chosen, chosen_s = p, hs
    info = {
        "metric": metric,
        "guard": list(guard),
        "confidence": float(confidence),
        "n_boot": int(n_boot),
        "held_out_input": dict(input_held),
        "held_out_selected": dict(chosen_s),
        "held_out_textbook": dict(held(textbook)),
        "search_best": dict(tried[0][0]),
        "finalists": rows,
        "selected": "no refinement" if not chosen.refine else "search",
    }
    return chosen, info


def _fit(make_scorer, n: int, header: dict, *, mode, panoptic, holdout, base, seed, log, **search) -> InstanceParams:
    """Steps 1 to 3 of the module docstring for either fit: the split, the scorers
    (``make_scorer(indices)``), the search and the selection; ``info`` starts with ``header``."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    search_idx, hold = _checks.holdout_split(n, holdout, rng)
    base = (base or InstanceParams()).replace(mode=mode, refine=True, info={})
    scorer, held = make_scorer(search_idx), make_scorer(hold)
    chosen, info = _search_and_select(
        scorer,
        held,
        base,
        mode,
        rng=rng,
        boot_rng=np.random.default_rng([seed, 1]),
        say=log or (lambda s: None),
        panoptic=panoptic,
        **search,
    )
    info = {
        **header,
        "n_images": n,
        "held_out_indices": hold,
        **info,
        "crf_runs": scorer.n_runs + held.n_runs,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return chosen.replace(info=info)


def _checked_stuff(stuff, images, inputs, ground_truth) -> list:
    """fit_instances' ``stuff``, checked: one (stuff map, panoptic ground truth) per
    image, maps of the image's size without thing classes. Returns int64 maps."""
    stuff = list(stuff)
    if len(stuff) != len(images):
        raise ValueError(f"stuff must have one (stuff_map, ground_truth) per image: {len(images)}, got {len(stuff)}")
    things = {int(c) for x in (*inputs, *ground_truth) for c in np.asarray(x["classes"]).reshape(-1)}
    out = []
    for j, entry in enumerate(stuff):
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
            raise ValueError(f"stuff[{j}] must be (stuff_map, (ids, segments_info)), got {type(entry).__name__}")
        stuff_map, gt = entry
        m = np.asarray(stuff_map)
        shape = np.shape(images[j])[:2]
        if m.shape != shape or not np.issubdtype(m.dtype, np.integer):
            raise ValueError(
                f"stuff[{j}]'s map must be an integer [H, W] = {shape} array, got {m.dtype} {_checks.shape_str(m.shape)}"
            )
        bad = sorted(things & {int(c) for c in np.unique(m)})
        if bad:
            raise ValueError(f"stuff[{j}]'s map holds thing class {bad[0]}: set thing pixels to -1 (void)")
        if not (isinstance(gt, (tuple, list)) and len(gt) == 2 and np.shape(gt[0]) == shape):
            raise ValueError(f"stuff[{j}]'s ground truth must be (ids [H, W] = {shape}, segments_info)")
        out.append((m.astype(np.int64), gt))
    return out


def fit_instances(
    images,
    inputs,
    ground_truth,
    *,
    mode: str = "joint",
    metric: str = "ap",
    guard=None,
    stuff=None,
    confidence: float = 0.9,
    n_boot: int = 1000,
    holdout=0.3,
    n_random: int = 24,
    n_local: int = 12,
    top: int = 4,
    base: InstanceParams | None = None,
    seed: int = 0,
    threads: int | None = None,
    device="cpu",
    log=None,
) -> InstanceParams:
    """Fits :func:`densecrf.refine_instances`' parameters to a detector on labelled images.

    Args:
        images: list of ``[H, W, 3]`` images.
        inputs: per image a dict: ``"masks"`` (``[M, H, W]`` soft masks, or
            ``[M, h, w]`` with ``"boxes"``), ``"scores"`` ``[M]``,
            ``"classes"`` ``[M]``: the detector's output.
        ground_truth: per image a dict: ``"masks"`` ``[G, H, W]`` bool,
            ``"classes"`` ``[G]``.
        mode: 'joint' or 'binary' (see refine_instances).
        metric: what the selection maximises: 'ap' (COCO mask AP 0.5:0.95),
            'ap50' or 'pq' (things).
        guard: metrics on which the selected point must be no worse than
            the input on the held-out part (default: 'ap', 'ap50' and
            'pq', and 'pq_stuff' given ``stuff``).
        stuff: None, or per image ``(stuff_map, panoptic_ground_truth)``:
            the ``[H, W]`` int map of stuff classes that the instances will
            be pasted over (any value < 0 void; no thing class, that is, no
            class of the inputs or of ``ground_truth``), e.g. a semantic
            network's argmax with its thing classes set to -1, and the
            image's ground truth in COCO panoptic form ``(ids,
            segments_info)``. The scores then include ``"pq_stuff"``: the
            PQ of stuff of the refined instances (their overlaps resolved
            by the id map) pasted over the stuff map by
            :func:`densecrf.instances.instances_to_panoptic`, the input's
            by its usual merge.
        confidence: the fraction of bootstrap resamples of the held-out
            images in which the selected point's things PQ must beat the
            input's (module docstring); 0 turns the test off.
        n_boot: bootstrap resamples.
        holdout: fraction of the images held out (or a list of indices).
        n_random, n_local, top: search sizes (module docstring).
        base: the parameters not searched (n_iter, crop_margin, ...).
        seed, threads, device: random seed; native threads; 'cpu' or 'cuda'.
        log: a callable taking one line of text (progress), or None.

    Returns:
        :class:`InstanceParams` whose ``info`` has the held-out scores of the
        input, the textbook parameters and the selected point, each
        finalist's held-out scores and bootstrap confidence, the search's
        best score, the number of CRF runs and the time.
    """
    n = len(images)
    if guard is None:
        guard = ("ap", "ap50", "pq") if stuff is None else ("ap", "ap50", "pq", "pq_stuff")
    allowed = _METRICS if stuff is None else _STUFF_METRICS
    if stuff is None and (metric == "pq_stuff" or "pq_stuff" in guard):
        raise ValueError("'pq_stuff' needs stuff (the stuff maps and panoptic ground truth)")
    _check_common(n, (len(inputs), len(ground_truth)), metric, guard, allowed, confidence, n_boot)
    if stuff is not None:
        stuff = _checked_stuff(stuff, images, inputs, ground_truth)
    return _fit(
        lambda idx: _Scorer(images, inputs, ground_truth, idx, threads, device, stuff),
        n,
        {"method": "fit_instances", "mode": mode, "stuff_guarded": stuff is not None},
        mode=mode,
        panoptic=False,
        metric=metric,
        guard=guard,
        confidence=confidence,
        n_boot=n_boot,
        holdout=holdout,
        n_random=n_random,
        n_local=n_local,
        top=top,
        base=base,
        seed=seed,
        log=log,
    )


def fit_panoptic(
    images,
    semantic_probs,
    inputs,
    ground_truth,
    thing_classes,
    *,
    metric: str = "pq",
    guard=("pq", "pq_things", "pq_stuff"),
    confidence: float = 0.9,
    n_boot: int = 1000,
    holdout=0.3,
    n_random: int = 24,
    n_local: int = 12,
    top: int = 4,
    base: InstanceParams | None = None,
    seed: int = 0,
    threads: int | None = None,
    device="cpu",
    log=None,
) -> InstanceParams:
    """Fits :func:`densecrf.refine_panoptic`'s parameters on labelled images, as
    :func:`fit_instances` does for instances (module docstring).

    Args:
        images: list of ``[H, W, 3]`` images.
        semantic_probs: per image ``[H, W, K]`` class probabilities.
        inputs: per image the ``instances`` dict of refine_panoptic
            (``"masks"``, ``"classes"``, optionally ``"scores"``, ``"boxes"``).
        ground_truth: per image ``(ids, segments_info)`` in COCO's panoptic
            form (ids ``[H, W]``, 0 void; segments with ``id``,
            ``category_id`` and optionally ``iscrowd``), categories being
            class indices.
        thing_classes: the class indices that are things.
        metric: 'pq' (all segments), 'pq_things' or 'pq_stuff'.
        guard: metrics on which the selected point must be no worse than
            the input (the semantic arg-max for stuff, the instances
            thresholded at 0.5, merged) on the held-out part.
        confidence: as :func:`fit_instances`, the bootstrap resampling PQ
            over all segments.
        n_boot, holdout, n_random, n_local, top, base, seed, threads, device, log:
            as :func:`fit_instances`.

    Returns:
        :class:`InstanceParams` for refine_panoptic (``class_power``
        included), with ``info`` as :func:`fit_instances`.
    """
    n = len(images)
    _check_common(
        n, (len(semantic_probs), len(inputs), len(ground_truth)), metric, guard, _PANOPTIC_METRICS, confidence, n_boot
    )
    k = {int(np.shape(p)[-1]) for p in semantic_probs}
    if len(k) != 1:
        raise ValueError(f"semantic_probs must have one number of classes K for every image, got {sorted(k)}")
    things = sorted({int(c) for c in np.asarray(thing_classes).reshape(-1)})
    categories = {c: c in set(things) for c in range(k.pop())}
    for j, gt in enumerate(ground_truth):
        if not (isinstance(gt, (tuple, list)) and len(gt) == 2):
            raise ValueError(f"ground_truth[{j}] must be (ids, segments_info), got {type(gt).__name__}")
        for seg in gt[1]:
            if int(seg["category_id"]) not in categories:
                raise ValueError(
                    f"ground_truth[{j}] has a segment of category {seg['category_id']}, not a class index of "
                    f"semantic_probs (0..{len(categories) - 1})"
                )
    return _fit(
        lambda idx: _PanopticScorer(
            images, semantic_probs, inputs, ground_truth, things, categories, idx, threads, device
        ),
        n,
        {"method": "fit_panoptic", "thing_classes": things},
        mode="joint",
        panoptic=True,
        metric=metric,
        guard=guard,
        confidence=confidence,
        n_boot=n_boot,
        holdout=holdout,
        n_random=n_random,
        n_local=n_local,
        top=top,
        base=base,
        seed=seed,
        log=log,
    )
