"""Segmentation metrics: pixel and class accuracy, IoU, panoptic quality (per image and
accumulated over a dataset as COCO does), instance AP.

Conventions: label maps are integer arrays of any shape; ``ignore_index``
pixels of the ground truth are left out of every count. Semantic metrics are
accumulated over a dataset through a confusion matrix (rows: ground truth,
columns: prediction), so the mean IoU of a dataset is computed from the
summed counts, not averaged per image.
"""

from __future__ import annotations

import numbers

import numpy as np

# numpy only, by contract (pyproject.toml, [tool.importlinter]): these few checks are written here.
_INT32_MAX = 2**31 - 1


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _positive_int(x, name: str) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(x).__name__}")
    v = int(x)
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    if v > _INT32_MAX:
        raise ValueError(f"{name} = {v} exceeds the supported maximum 2^31-1")
    return v


def _labels(a, name: str) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except Exception as exc:  # a GPU tensor, an exotic array-like: say which argument
        raise TypeError(f"{name} could not be converted to a numpy array: {exc}") from exc
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be an integer label map, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def confusion_matrix(pred, target, n_classes: int, *, ignore_index: int | None = None) -> np.ndarray:
    """Counts ``[n_classes, n_classes]`` (int64): entry (t, p) = pixels of truth t predicted as p.

    Ground-truth pixels equal to ``ignore_index`` are skipped. Any other value
    outside ``[0, n_classes)`` in either map raises ValueError.
    """
    n = _positive_int(n_classes, "n_classes")
    p, t = _labels(pred, "pred"), _labels(target, "target")
    if p.shape != t.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {_shape_str(p.shape)} and {_shape_str(t.shape)}"
        )
    keep = np.ones(t.shape, dtype=bool) if ignore_index is None else t != ignore_index
    p, t = p[keep], t[keep]
    for arr, name in ((p, "pred"), (t, "target")):
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            bad = arr[(arr < 0) | (arr >= n)][0]
            raise ValueError(
                f"{name} has label {int(bad)} outside [0, {n})"
                + (
                    f" (and not the ignore index {ignore_index})"
                    if ignore_index is not None and name == "target"
                    else ""
                )
            )
    return np.bincount(t * n + p, minlength=n * n).reshape(n, n).astype(np.int64)


class SegmentationMetrics:
    """Accumulates a confusion matrix over images and reports semantic metrics.

    >>> m = SegmentationMetrics(3, ignore_index=255)
    >>> m.update([[0, 1], [2, 2]], [[0, 1], [1, 255]])
    >>> round(m.pixel_accuracy(), 4), round(m.mean_iou(), 4), round(m.mean_class_accuracy(), 4)
    (0.6667, 0.5, 0.75)
    """

    def __init__(self, n_classes: int, *, ignore_index: int | None = None):
        self.n_classes = _positive_int(n_classes, "n_classes")
        self.ignore_index = ignore_index
        self.confusion = np.zeros((self.n_classes, self.n_classes), dtype=np.int64)

    def update(self, pred, target) -> None:
        """Adds one image (or a batch: any shape, pred and target alike)."""
        self.confusion += confusion_matrix(pred, target, self.n_classes, ignore_index=self.ignore_index)

    def pixel_accuracy(self) -> float:
        """Correct pixels / counted pixels (NaN before any pixel is counted)."""
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else float("nan")

    def class_accuracy(self) -> np.ndarray:
        """Per class: correct / ground-truth pixels of that class (NaN for absent classes)."""
        gt = self.confusion.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(gt > 0, np.diag(self.confusion) / np.maximum(gt, 1), np.nan)

    def mean_class_accuracy(self) -> float:
        """Mean of class_accuracy over the classes present in the ground truth."""
        acc = self.class_accuracy()
        return float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")

    def iou(self) -> np.ndarray:
        """Per class: TP / (TP + FP + FN); NaN for classes absent from both maps."""
        tp = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(axis=0) + self.confusion.sum(axis=1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def mean_iou(self) -> float:
        """Mean IoU over the classes that occur in the prediction or the ground truth."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def _segments(classes: np.ndarray, instances: np.ndarray, keep: np.ndarray):
    """Segment id per pixel (-1 where not kept) and each segment's class."""
    pairs = np.stack([classes[keep], instances[keep]], axis=1)
    uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
    seg = np.full(classes.shape, -1, dtype=np.int64)
    seg[keep] = inv.reshape(-1)
    return seg, uniq[:, 0]


def panoptic_quality(
    pred_classes,
    pred_instances,
    gt_classes,
    gt_instances,
    n_classes: int,
    *,
    ignore_index: int | None = None,
    iou_threshold: float = 0.5,
) -> dict:
    r"""Panoptic quality PQ = SQ x RQ (Kirillov et al. 2019) of one image.

    A segment is a (class, instance id) pair of a map. Predicted and true
    segments of the same class match when their IoU exceeds ``iou_threshold``
    (0.5 makes the matching unique). Per class,
    :math:`PQ = \sum_{TP} IoU / (|TP| + |FP|/2 + |FN|/2)`,
    :math:`SQ = \sum_{TP} IoU / |TP|`, :math:`RQ = |TP| / (|TP| + |FP|/2 + |FN|/2)`.
    Pixels whose true class is ``ignore_index`` are left out of both maps.

    Returns ``{"pq", "sq", "rq"}`` averaged over the classes that have a
    segment in either map, and ``"per_class"``: ``{class: (pq, sq, rq, tp, fp, fn)}``.
    """
    n = _positive_int(n_classes, "n_classes")
    pc, pi = _labels(pred_classes, "pred_classes"), _labels(pred_instances, "pred_instances")
    gc, gi = _labels(gt_classes, "gt_classes"), _labels(gt_instances, "gt_instances")
    if not (pc.shape == pi.shape == gc.shape == gi.shape):
        raise ValueError(
            "the four maps must have one shape, got " + ", ".join(_shape_str(a.shape) for a in (pc, pi, gc, gi))
        )
    if not 0 < iou_threshold < 1:
        raise ValueError(f"iou_threshold must be in (0, 1), got {iou_threshold}")
    keep = np.ones(gc.shape, dtype=bool) if ignore_index is None else gc != ignore_index
    pseg, pcls = _segments(pc, pi, keep)
    gseg, gcls = _segments(gc, gi, keep)
    np_, ng = len(pcls), len(gcls)
    inter = np.bincount(gseg[keep] * max(np_, 1) + pseg[keep], minlength=ng * max(np_, 1)).reshape(ng, max(np_, 1))
    inter = inter[:, :np_]
    psize, gsize = np.bincount(pseg[keep], minlength=np_), np.bincount(gseg[keep], minlength=ng)
    per_class = {}
    for c in range(n):
        gidx, pidx = np.nonzero(gcls == c)[0], np.nonzero(pcls == c)[0]
        if len(gidx) == 0 and len(pidx) == 0:
            continue
        matched_iou = []
        used_p = set()
        for g in gidx:
            for p in pidx:
                if p in used_p:
                    continue
                i = inter[g, p]
                iou = i / (gsize[g] + psize[p] - i) if i else 0.0
                if iou > iou_threshold:
                    matched_iou.append(iou)
                    used_p.add(p)
                    break
        tp = len(matched_iou)
        fp, fn = len(pidx) - tp, len(gidx) - tp
        denom = tp + 0.5 * fp + 0.5 * fn
        sq = float(np.sum(matched_iou) / tp) if tp else 0.0
        rq = tp / denom if denom else 0.0
        per_class[c] = (sq * rq, sq, rq, tp, fp, fn)
    if not per_class:
        return {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "per_class": per_class}
    vals = np.array([v[:3] for v in per_class.values()])
    return {
        "pq": float(vals[:, 0].mean()),
        "sq": float(vals[:, 1].mean()),
        "rq": float(vals[:, 2].mean()),
        "per_class": per_class,
    }


def instance_average_precision(pred_masks, pred_scores, gt_masks, *, iou_threshold: float = 0.5) -> float:
    """Average precision of instance masks of one class at an IoU threshold.

    Predictions are taken in decreasing order of confidence; each is matched
    to the unmatched ground-truth mask it overlaps most, and counts as a true
    positive if that IoU is at least ``iou_threshold``. AP is the area under
    the precision-recall curve with precision made monotone (the maximum
    precision at any higher recall), as in PASCAL VOC from 2010 on.

    Args:
        pred_masks: ``[P, *spatial]`` booleans (or a list of masks).
        pred_scores: ``[P]`` confidences.
        gt_masks: ``[G, *spatial]`` booleans.

    Returns:
        AP in [0, 1]; NaN when there is no ground-truth mask.
    """
    pm = np.asarray(pred_masks, dtype=bool)
    gm = np.asarray(gt_masks, dtype=bool)
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    if pm.shape[0] != scores.shape[0]:
        raise ValueError(f"pred_masks has {pm.shape[0]} masks but pred_scores has {scores.shape[0]} values")
    if pm.shape[0] and gm.shape[0] and pm.shape[1:] != gm.shape[1:]:
        raise ValueError(f"mask shapes differ: {_shape_str(pm.shape[1:])} vs {_shape_str(gm.shape[1:])}")
    if not np.isfinite(scores).all():
        raise ValueError("pred_scores must be finite")
    n_gt = gm.shape[0]
    if n_gt == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    pf = pm.reshape(pm.shape[0], -1)[order].astype(np.float64)
    gf = gm.reshape(n_gt, -1).astype(np.float64)
    inter = pf @ gf.T
    union = pf.sum(1)[:, None] + gf.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    taken = np.zeros(n_gt, dtype=bool)
    tp = np.zeros(len(order))
    for k in range(len(order)):
        cand = np.where(taken, -1.0, iou[k])
        g = int(np.argmax(cand))
        if cand[g] >= iou_threshold:
            taken[g] = True
            tp[k] = 1
    ctp = np.cumsum(tp)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, len(order) + 1)
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[1.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum((r[1:] - r[:-1]) * p[1:]))


# --------------------------------------------------------------------------
# Panoptic quality over a dataset, as COCO's panoptic evaluation counts it
# --------------------------------------------------------------------------
VOID = 0  # the segment id of unlabelled pixels in COCO's panoptic format


def _dims(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def panoptic_from_labels(classes, instances, *, ignore_index: int | None = None, thing_classes=None):
    """A (class map, instance map) pair in COCO's panoptic form.

    Every distinct (class, instance id) pair becomes one segment (for
    classes not in ``thing_classes``, when that is given, the instance id is
    ignored: one segment per stuff class). Pixels of class ``ignore_index``
    get segment id 0 (void).

    Returns:
        ``(ids [*spatial] int64, segments)``: segment ids from 1 and
        ``[{"id", "category_id", "iscrowd": 0, "area"}]``.
    """
    c, i = _labels(classes, "classes"), _labels(instances, "instances")
    if c.shape != i.shape:
        raise ValueError(f"classes and instances must have one shape, got {_dims(c.shape)} and {_dims(i.shape)}")
    keep = np.ones(c.shape, dtype=bool) if ignore_index is None else c != ignore_index
    inst = i.copy()
    if thing_classes is not None:
        inst[~np.isin(c, np.asarray(list(thing_classes), dtype=np.int64))] = 0
    seg, cls = _segments(c, inst, keep)
    ids = seg + 1  # -1 (not kept) becomes 0, void
    areas = np.bincount(seg[keep], minlength=len(cls))
    return ids, [
        {"id": k + 1, "category_id": int(cls[k]), "iscrowd": 0, "area": int(areas[k])} for k in range(len(cls))
    ]


def _segment_table(ids, segments, name: str, categories) -> dict:
    """{segment id: (category, iscrowd)} checked against the id map (as COCO's evaluation checks it)."""
    table = {}
    for s in segments:
        if not isinstance(s, dict) or "id" not in s or "category_id" not in s:
            raise ValueError(f"{name} segments must be dicts with 'id' and 'category_id', got {s!r}")
        sid, cat = int(s["id"]), int(s["category_id"])
        if sid == VOID:
            raise ValueError(f"{name} segment id 0 is reserved for void pixels")
        if sid in table:
            raise ValueError(f"{name} segment id {sid} is listed twice")
        if cat not in categories:
            raise ValueError(
                f"{name} segment {sid} has category {cat}, which is not one of the categories {sorted(categories)}"
            )
        table[sid] = (cat, int(bool(s.get("iscrowd", 0))))
    present = set(np.unique(ids).tolist()) - {VOID}
    missing = present - set(table)
    if missing:
        raise ValueError(f"{name} id map has segment {min(missing)} that its segments list does not describe")
    absent = set(table) - present
    if absent and name == "pred":
        raise ValueError(f"pred segment {min(absent)} is listed but has no pixel in the id map")
    return table


class PanopticQuality:
    r"""PQ, SQ and RQ accumulated over a dataset, things and stuff apart, as COCO's panoptic evaluation.

    Per category, counts are summed over all images: a true positive is a
    (ground truth, prediction) pair of the same category whose IoU exceeds
    0.5, where the union leaves out the prediction's pixels on void (ground
    truth id 0); ground-truth segments marked ``iscrowd`` are never matched
    nor counted; an unmatched prediction is a false positive unless more than
    half of it lies on void or on a crowd region of its category; an
    unmatched, non-crowd ground-truth segment is a false negative. Then
    :math:`PQ_c = \sum_{TP} IoU / (TP + FP/2 + FN/2)`,
    :math:`SQ_c = \sum_{TP} IoU / TP` (0 when TP = 0),
    :math:`RQ_c = TP / (TP + FP/2 + FN/2)`, averaged over the categories with
    any TP, FP or FN (in all, things only, stuff only).

    This differs from :func:`panoptic_quality`, which scores one image and
    averages per-class figures over the classes present there: averaging
    that per image over a dataset weights an image with one small segment
    like one with many, and gives a class a 0 on every image where it has
    only a false positive. The accumulated figures are the ones papers
    report.

    Args:
        categories: ``{category_id: isthing}`` for every category that may
            appear (ids as in the segments' ``category_id``).

    >>> pq = PanopticQuality({1: True, 2: False})
    >>> ids = np.array([[1, 1, 2, 2]])
    >>> pq.update(ids, [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}],
    ...           ids, [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}])
    >>> pq.compute()["all"]["pq"]
    1.0
    """

    def __init__(self, categories: dict):
        if not isinstance(categories, dict) or not categories:
            raise ValueError(f"categories must be a non-empty dict {{category_id: isthing}}, got {categories!r}")
        self.categories = {int(k): bool(v) for k, v in categories.items()}
        n = len(self.categories)
        self._index = {c: k for k, c in enumerate(sorted(self.categories))}
        self.iou = np.zeros(n)  # summed IoU of true positives per category
        self.tp = np.zeros(n, dtype=np.int64)
        self.fp = np.zeros(n, dtype=np.int64)
        self.fn = np.zeros(n, dtype=np.int64)
        self.n_images = 0

    def update(self, pred_ids, pred_segments, gt_ids, gt_segments) -> None:
        """Adds one image in COCO's panoptic form: id maps (0 = void) and segment lists
        (dicts with ``id``, ``category_id`` and, for the ground truth, optionally ``iscrowd``)."""
        p, g = _labels(pred_ids, "pred_ids"), _labels(gt_ids, "gt_ids")
        if p.shape != g.shape:
            raise ValueError(f"pred_ids and gt_ids must have one shape, got {_dims(p.shape)} and {_dims(g.shape)}")
        if (p.size and p.min() < 0) or (g.size and g.min() < 0):
            raise ValueError("segment ids must be >= 0 (0 is void)")
        pt = _segment_table(p, pred_segments, "pred", self.categories)
        gt = _segment_table(g, gt_segments, "gt", self.categories)
        # Joint counts of (gt id, pred id) over all pixels, void included.
        pairs, inter = np.unique(np.stack([g.ravel(), p.ravel()]), axis=1, return_counts=True)
        overlap = {(int(a), int(b)): int(n) for a, b, n in zip(pairs[0], pairs[1], inter, strict=True)}
        parea = np.bincount(p.ravel()) if p.size else np.zeros(1, dtype=np.int64)
        garea = np.bincount(g.ravel()) if g.size else np.zeros(1, dtype=np.int64)
        matched_g, matched_p = set(), set()
        for (gi, pi), n in overlap.items():
            if gi == VOID or pi == VOID or gt[gi][1] or gt[gi][0] != pt[pi][0]:
                continue
            union = parea[pi] + garea[gi] - n - overlap.get((VOID, pi), 0)
            iou = n / union
            if iou > 0.5:
                k = self._index[gt[gi][0]]
                self.tp[k] += 1
                self.iou[k] += iou
                matched_g.add(gi)
                matched_p.add(pi)
        crowd = {}
        for gi, (cat, iscrowd) in gt.items():
            if iscrowd:
                crowd[cat] = gi
            elif gi not in matched_g:
                self.fn[self._index[cat]] += 1
        for pi, (cat, _) in pt.items():
            if pi in matched_p:
                continue
            ignored = overlap.get((VOID, pi), 0) + (overlap.get((crowd[cat], pi), 0) if cat in crowd else 0)
            if ignored / parea[pi] > 0.5:
                continue
            self.fp[self._index[cat]] += 1
        self.n_images += 1

    def per_class(self) -> dict:
        """``{category: {"pq", "sq", "rq", "tp", "fp", "fn"}}`` from the summed counts."""
        out = {}
        for c, k in self._index.items():
            tp, fp, fn = int(self.tp[k]), int(self.fp[k]), int(self.fn[k])
            denom = tp + 0.5 * fp + 0.5 * fn
            out[c] = {
                "pq": float(self.iou[k] / denom) if denom else 0.0,
                "sq": float(self.iou[k] / tp) if tp else 0.0,
                "rq": tp / denom if denom else 0.0,
                "tp": tp,
                "fp": fp,
                "fn": fn,
            }
        return out

    def compute(self) -> dict:
        """``{"all", "things", "stuff"}`` each ``{"pq", "sq", "rq", "n"}`` (n: categories
        averaged, NaN figures when none), and ``"per_class"``."""
        per = self.per_class()
        res = {"per_class": per}
        for name, want in (("all", None), ("things", True), ("stuff", False)):
            rows = [
                v
                for c, v in per.items()
                if (want is None or self.categories[c] == want) and v["tp"] + v["fp"] + v["fn"]
            ]
            if rows:
                res[name] = {m: float(np.mean([r[m] for r in rows])) for m in ("pq", "sq", "rq")} | {"n": len(rows)}
            else:
                res[name] = {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "n": 0}
        return res
