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
from .instances import InstanceParams, instances_to_panoptic, refine_instances
from .metrics import PanopticQuality

__all__ = ["fit_instances", "score_instances"]

_BACKGROUND = 2**31 - 1  # the category of everything that is not an instance, in the things-only PQ
_METRICS = ("ap", "ap50", "pq")
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


def score_instances(predictions, ground_truth) -> dict:
    """``{"ap", "ap50", "pq"}`` of per-image predictions (dicts with ``masks``
    ``[P, H, W]`` bool, ``scores``, ``classes``) against ground truth (dicts
    with ``masks``, ``classes``): COCO mask AP (pycocotools) and the
    things' PQ accumulated over the images (everything else one background
    segment)."""
    from .coco import mask_ap

    ap = mask_ap(predictions, ground_truth)
    cats = {int(c): True for g in ground_truth for c in np.asarray(g["classes"]).reshape(-1)}
    cats.update({int(c): True for p in predictions for c in np.asarray(p["classes"]).reshape(-1)})
    cats[_BACKGROUND] = False
    pq = PanopticQuality(cats)
    for p, g in zip(predictions, ground_truth, strict=True):
        gm = np.asarray(g["masks"], dtype=bool)
        shape = gm.shape[1:] if gm.ndim == 3 and gm.shape[0] else np.asarray(p["masks"]).shape[1:]
        pid, pinfo = _thing_panoptic(np.asarray(p["masks"], dtype=bool), p["classes"], p["scores"], shape)
        gid, ginfo = _thing_panoptic(gm, g["classes"], None, shape)
        pq.update(pid, pinfo, gid, ginfo)
    res = pq.compute()
    return {"ap": ap["ap"], "ap50": ap["ap50"], "pq": res["things"]["pq"]}


class _Scorer:
    def __init__(self, images, inputs, gts, idx, threads, device):
        self.items = [(images[i], inputs[i], gts[i]) for i in idx]
        self.threads, self.device = threads, device
        self.n_runs = 0

    def __call__(self, prm: InstanceParams) -> dict:
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
                }
            )
            gts.append(gt)
            self.n_runs += 1
        return score_instances(preds, gts)


def _random_point(base: InstanceParams, rng) -> InstanceParams:
    def lu(lo, hi):
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

    return base.replace(
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


def _neighbours(p: InstanceParams, rng, n: int) -> list[InstanceParams]:
    names = [k for k in _LOG_PARAMS + _ADD_PARAMS if getattr(p, k) is not None]
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


def fit_instances(
    images,
    inputs,
    ground_truth,
    *,
    mode: str = "joint",
    metric: str = "ap",
    guard=("ap", "ap50", "pq"),
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
            the input on the held-out part.
        holdout: fraction of the images held out (or a list of indices).
        n_random, n_local, top: search sizes (module docstring).
        base: the parameters not searched (n_iter, crop_margin, ...).
        seed, threads, device: random seed; native threads; 'cpu' or 'cuda'.
        log: a callable taking one line of text (progress), or None.

    Returns:
        :class:`InstanceParams` whose ``info`` has the held-out scores of the
        input, the textbook parameters and the selected point, the search's
        best score, the number of CRF runs and the time.
    """
    t0 = time.perf_counter()
    n = len(images)
    if not (len(inputs) == len(ground_truth) == n):
        raise ValueError(
            f"images, inputs and ground_truth must have one entry per image, got {n}, {len(inputs)}, "
            f"{len(ground_truth)}"
        )
    if n < 2:
        raise ValueError(f"fit_instances needs at least 2 labelled images (a search and a held-out part), got {n}")
    for name in (metric, *guard):
        if name not in _METRICS:
            raise ValueError(f"metrics must be among {_METRICS}, got {name!r}")
    rng = np.random.default_rng(seed)
    search_idx, hold = _checks.holdout_split(n, holdout, rng)
    base = (base or InstanceParams()).replace(mode=mode, refine=True, info={})
    search = _Scorer(images, inputs, ground_truth, search_idx, threads, device)
    held = _Scorer(images, inputs, ground_truth, hold, threads, device)
    say = log or (lambda s: None)

    textbook = InstanceParams.textbook(n_iter=base.n_iter, mode=mode, crop_margin=base.crop_margin)
    tried = [(search(textbook), textbook)]
    say(f"textbook: {tried[0][0]}")
    for k in range(n_random):
        p = _random_point(base, rng)
        tried.append((search(p), p))
        say(f"random {k + 1}/{n_random}: {metric} {tried[-1][0][metric]:.4f}")
    tried.sort(key=lambda t: -_key(t[0], metric))
    best_s, best = tried[0]
    for k, p in enumerate(_neighbours(best, rng, n_local)):
        s = search(p)
        tried.append((s, p))
        if _key(s, metric) > _key(best_s, metric):
            best_s, best = s, p
            say(f"local {k + 1}/{n_local}: better, {metric} {s[metric]:.4f}")
    tried.sort(key=lambda t: -_key(t[0], metric))
    finalists = []
    for s, p in tried:
        if all(p is not q for _, q in finalists):
            finalists.append((s, p))
        if len(finalists) == top:
            break
    no_ref = InstanceParams.no_refinement(mode=mode)
    input_held = held(no_ref)
    say(f"held-out input: {input_held}")
    chosen, chosen_s, rows = no_ref, input_held, []
    for s, p in finalists:
        hs = held(p)
        rows.append({"search": s, "held_out": hs, "params": {k: v for k, v in p.to_dict().items() if k != "info"}})
        say(f"held-out candidate: {hs}")
        ok = all(_key(hs, g) >= _key(input_held, g) for g in guard)
        if ok and _key(hs, metric) > _key(chosen_s, metric):
            chosen, chosen_s = p, hs
    info = {
        "method": "fit_instances",
        "metric": metric,
        "guard": list(guard),
        "mode": mode,
        "n_images": n,
        "held_out_indices": hold,
        "held_out_input": input_held,
        "held_out_selected": chosen_s,
        "held_out_textbook": held(textbook),
        "search_best": tried[0][0],
        "finalists": rows,
        "selected": "no refinement" if not chosen.refine else "search",
        "crf_runs": search.n_runs + held.n_runs,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return chosen.replace(info=info)
