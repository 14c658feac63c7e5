"""COCO formats and COCO mask AP through pycocotools (imported on first use).

``pip install pycocotools``: the maintained implementation of COCO's
run-length encoding (RLE) and of its evaluation. Nothing here imports it
until a function needs it, so ``import densecrf`` does not.

- :func:`mask_ap`: COCO mask AP (``COCOeval`` with ``iouType='segm'``) of
  predicted instance masks against ground-truth masks, over a dataset.
- :func:`encode_masks` / :func:`decode_masks`: masks <-> RLE dicts whose
  ``counts`` are strings (JSON-ready).
- :func:`read_instances_json` / :func:`write_instances_json`: COCO's
  results format (a list of ``{"image_id", "category_id", "segmentation",
  "score"}``) for one or more images.
- :func:`write_panoptic` / :func:`read_panoptic`: COCO's panoptic format, a
  PNG whose colour encodes the segment id (id = R + 256 G + 256^2 B) and a
  JSON annotation with ``segments_info``.
- :func:`write_instance_pngs` / :func:`read_instance_pngs`: one 8-bit PNG per
  instance and a small JSON listing scores and classes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np

from . import _checks

__all__ = [
    "decode_masks",
    "encode_masks",
    "ids_to_rgb",
    "mask_ap",
    "read_instance_pngs",
    "read_instances_json",
    "read_panoptic",
    "rgb_to_ids",
    "write_instance_pngs",
    "write_instances_json",
    "write_panoptic",
]


def _mask_util():
    try:
        from pycocotools import mask as mask_util
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("COCO masks and mask AP need pycocotools: pip install pycocotools") from None
    return mask_util


def encode_masks(masks) -> list[dict]:
    """``[M, H, W]`` boolean masks -> M COCO RLE dicts ``{"size": [H, W], "counts": str}``."""
    mu = _mask_util()
    m = np.asarray(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be [M, H, W], got shape {_checks.shape_str(m.shape)}")
    if m.shape[0] == 0:
        return []
    rles = mu.encode(np.asfortranarray(np.moveaxis(m > 0.5 if m.dtype != bool else m, 0, -1).astype(np.uint8)))
    out = []
    for r in rles:
        out.append({"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")})
    return out


def decode_masks(rles, shape=None) -> np.ndarray:
    """COCO RLE dicts (or polygons with ``shape`` = (H, W)) -> ``[M, H, W]`` bool."""
    mu = _mask_util()
    out = []
    for k, r in enumerate(rles):
        if isinstance(r, dict) and "counts" in r:
            rr = dict(r)
            if isinstance(rr["counts"], list):  # uncompressed RLE
                rr = mu.frPyObjects(rr, *rr["size"])
            elif isinstance(rr["counts"], str):
                rr["counts"] = rr["counts"].encode("ascii")
            out.append(mu.decode(rr).astype(bool))
        elif isinstance(r, list) and shape is not None:  # polygons
            out.append(mu.decode(mu.merge(mu.frPyObjects(r, int(shape[0]), int(shape[1])))).astype(bool))
        else:
            raise ValueError(
                f"segmentation {k} is neither an RLE dict nor a polygon list (with a shape given): {str(r)[:80]}"
            )
    if not out:
        return np.zeros((0,) + tuple(shape or (0, 0)), dtype=bool)
    shapes = {m.shape for m in out}
    if len(shapes) > 1:
        raise ValueError(f"segmentations have different sizes: {sorted(shapes)}")
    return np.stack(out)


def _image_masks(item, name: str, k: int, with_scores: bool):
    if not isinstance(item, dict) or "masks" not in item or "classes" not in item:
        raise ValueError(
            f"{name}[{k}] must be a dict with 'masks' and 'classes'" + (" and 'scores'" if with_scores else "")
        )
    m = np.asarray(item["masks"])
    if m.ndim != 3:
        raise ValueError(f"{name}[{k}]['masks'] must be [M, H, W], got shape {_checks.shape_str(m.shape)}")
    cls = np.asarray(item["classes"]).reshape(-1)
    if cls.shape[0] != m.shape[0]:
        raise ValueError(f"{name}[{k}] has {m.shape[0]} masks but {cls.shape[0]} classes")
    if with_scores:
        s = np.asarray(item["scores"], dtype=np.float64).reshape(-1)
        if s.shape[0] != m.shape[0]:
            raise ValueError(f"{name}[{k}] has {m.shape[0]} masks but {s.shape[0]} scores")
        if not np.isfinite(s).all():
            raise ValueError(f"{name}[{k}]['scores'] must be finite")
        return m, cls, s
    crowd = np.asarray(item.get("iscrowd", np.zeros(m.shape[0])), dtype=bool).reshape(-1)
    return m, cls, crowd


def mask_ap(predictions, ground_truth, *, categories=None) -> dict:
    """COCO mask AP of instance predictions over a dataset (pycocotools' ``COCOeval``, ``iouType='segm'``).

    Args:
        predictions: one dict per image: ``"masks"`` ``[P, H, W]`` bool,
            ``"scores"`` ``[P]``, ``"classes"`` ``[P]`` int.
        ground_truth: one dict per image (same order): ``"masks"``
            ``[G, H, W]`` bool, ``"classes"`` ``[G]``, optionally
            ``"iscrowd"`` ``[G]``.
        categories: the category ids to evaluate (default: every class in
            the ground truth or the predictions).

    Returns:
        ``{"ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar100"}``
        from ``COCOeval.stats`` (COCO's defaults: IoU 0.5:0.05:0.95, 101
        recall points, at most 100 detections per image); NaN where COCO
        reports -1 (no ground truth in that range).
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("mask_ap needs pycocotools: pip install pycocotools") from None
    mu = _mask_util()
    if len(predictions) != len(ground_truth):
        raise ValueError(
            f"predictions and ground_truth must have one entry per image, got {len(predictions)} and "
            f"{len(ground_truth)}"
        )
    images, gt_anns, dt_anns, cats = [], [], [], set()
    for k, (pred, gt) in enumerate(zip(predictions, ground_truth, strict=True)):
        gm, gc, crowd = _image_masks(gt, "ground_truth", k, False)
        pm, pc, ps = _image_masks(pred, "predictions", k, True)
        if pm.shape[0] and gm.shape[0] and pm.shape[1:] != gm.shape[1:]:
            raise ValueError(f"image {k}: predicted masks are {pm.shape[1:]} but ground-truth masks {gm.shape[1:]}")
        h, w = (gm.shape[1:] if gm.shape[0] else pm.shape[1:]) or (1, 1)
        images.append({"id": k + 1, "height": int(h), "width": int(w)})
        for anns, masks, classes, extra in ((gt_anns, gm, gc, crowd), (dt_anns, pm, pc, ps)):
            for r, c, e in zip(
                mu.encode(np.asfortranarray(np.moveaxis(masks.astype(bool), 0, -1).astype(np.uint8)))
                if masks.shape[0]
                else [],
                classes,
                extra,
                strict=True,
            ):
                ann = {
                    "id": len(anns) + 1,
                    "image_id": k + 1,
                    "category_id": int(c),
                    "segmentation": r,
                    "area": float(mu.area(r)),
                    "bbox": [float(v) for v in mu.toBbox(r)],
                }
                if anns is gt_anns:
                    ann["iscrowd"] = int(e)
                else:
                    ann["score"], ann["iscrowd"] = float(e), 0
                anns.append(ann)
                cats.add(int(c))
    cat_ids = sorted(cats) if categories is None else sorted({int(c) for c in categories})
    cat_list = [{"id": c, "name": str(c)} for c in cat_ids]
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": images, "annotations": gt_anns, "categories": cat_list}
        coco_dt.dataset = {"images": images, "annotations": dt_anns, "categories": cat_list}
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")
    out = {n: (float(v) if v >= 0 else float("nan")) for n, v in zip(names, ev.stats[:6], strict=True)}
    out["ar100"] = float(ev.stats[8]) if ev.stats[8] >= 0 else float("nan")
    return out


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------
def _atomic_write(path, write) -> None:
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_instances_json(path, results) -> None:
    """Writes COCO's results format: ``results`` is a list of per-image dicts
    ``{"image_id", "masks" [M, H, W], "scores" [M], "classes" [M]}``;
    the file is one list of ``{"image_id", "category_id", "segmentation"
    (RLE), "score"}``, written atomically."""
    anns = []
    for k, r in enumerate(results):
        if "image_id" not in r:
            raise ValueError(f"results[{k}] needs an 'image_id'")
        m, c, s = _image_masks(r, "results", k, True)
        for rle, ci, si in zip(encode_masks(m), c, s, strict=True):
            anns.append({"image_id": r["image_id"], "category_id": int(ci), "segmentation": rle, "score": float(si)})

    def write(tmp):
        with open(tmp, "w") as fh:
            json.dump(anns, fh)

    _atomic_write(path, write)


def read_instances_json(path, image_id=None) -> dict:
    """Reads COCO instance annotations or results: a results list, or a
    dataset dict with ``"annotations"``. Returns ``{image_id: {"masks"
    [M, H, W] bool, "scores" [M] (1 where absent), "classes" [M],
    "boxes" [M, 4] (x0, y0, x1, y1)}}`` (only ``image_id``'s with it given)."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    sizes = {}
    if isinstance(data, dict):
        for im in data.get("images", []):
            sizes[im["id"]] = (im["height"], im["width"])
        data = data.get("annotations")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of annotations or a dict with 'annotations'")
    by_image = {}
    for k, a in enumerate(data):
        if not isinstance(a, dict) or "image_id" not in a or "segmentation" not in a:
            raise ValueError(f"{path}: annotation {k} lacks 'image_id' or 'segmentation'")
        if image_id is not None and a["image_id"] != image_id:
            continue
        by_image.setdefault(a["image_id"], []).append(a)
    out = {}
    for iid, anns in by_image.items():
        masks = decode_masks([a["segmentation"] for a in anns], sizes.get(iid))
        boxes = np.array(
            [
                [x, y, x + w, y + h]
                for x, y, w, h in (
                    [
                        _mask_util().toBbox(_mask_util().encode(np.asfortranarray(m.astype(np.uint8)))).tolist()
                        for m in masks
                    ]
                )
            ],
            dtype=np.float64,
        ).reshape(-1, 4)
        out[iid] = {
            "masks": masks,
            "scores": np.array([float(a.get("score", 1.0)) for a in anns]),
            "classes": np.array([int(a.get("category_id", 0)) for a in anns], dtype=np.int64),
            "boxes": boxes,
        }
    return out


def ids_to_rgb(ids) -> np.ndarray:
    """Segment ids ``[H, W]`` -> COCO panoptic colours ``[H, W, 3]`` uint8 (id = R + 256 G + 256^2 B)."""
    a = np.asarray(ids).astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= 256**3):
        raise ValueError(f"segment ids must be in [0, 256^3), got {int(a.min())}..{int(a.max())}")
    return np.stack([a % 256, a // 256 % 256, a // 65536], axis=-1).astype(np.uint8)


def rgb_to_ids(rgb) -> np.ndarray:
    """COCO panoptic colours ``[H, W, 3]`` -> segment ids ``[H, W]`` int64."""
    a = np.asarray(rgb).astype(np.int64)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"a panoptic PNG must be RGB [H, W, 3], got shape {_checks.shape_str(a.shape)}")
    return a[..., 0] + 256 * a[..., 1] + 65536 * a[..., 2]


def write_panoptic(png_path, json_path, ids, segments_info, *, image_id=None, file_name=None) -> None:
    """Writes one image's panoptic result in COCO's form: the RGB id PNG and a JSON
    ``{"image_id", "file_name", "segments_info"}`` (both atomically)."""
    from PIL import Image

    rgb = ids_to_rgb(ids)
    _atomic_write(png_path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))
    keep = ("id", "category_id", "iscrowd", "area", "bbox")
    segs = [{k: s[k] for k in keep if k in s} for s in segments_info]
    ann = {"image_id": image_id, "file_name": file_name or os.path.basename(os.fspath(png_path)), "segments_info": segs}

    def write(tmp):
        with open(tmp, "w") as fh:
            json.dump(ann, fh)

    _atomic_write(json_path, write)


def read_panoptic(png_path, json_path):
    """Reads what :func:`write_panoptic` writes: ``(ids [H, W] int64, segments_info)``."""
    from PIL import Image

    with Image.open(png_path) as im:
        ids = rgb_to_ids(np.asarray(im.convert("RGB")))
    with open(json_path) as fh:
        ann = json.load(fh)
    if isinstance(ann, dict) and "annotations" in ann:  # a whole COCO panoptic file: take the PNG's entry
        name = os.path.basename(os.fspath(png_path))
        ann = next((a for a in ann["annotations"] if a.get("file_name") == name), None)
        if ann is None:
            raise ValueError(f"{json_path} has no annotation for {name}")
    return ids, ann["segments_info"]


# --------------------------------------------------------------------------
# Per-instance PNGs
# --------------------------------------------------------------------------
def write_instance_pngs(directory, stem: str, masks, scores=None, classes=None) -> list[str]:
    """Writes one 8-bit PNG per instance, ``<stem>_<k>.png`` (k from 0, three
    digits; a soft mask as round(255 p), a boolean one as 0 / 255), and
    ``<stem>_instances.json`` listing ``{"file", "score", "category_id"}``;
    every file atomically. Returns the PNG paths."""
    from PIL import Image

    m = np.asarray(masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be [M, H, W], got shape {_checks.shape_str(m.shape)}")
    n = m.shape[0]
    s = np.ones(n) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    c = np.zeros(n, dtype=np.int64) if classes is None else np.asarray(classes).reshape(-1)
    if s.shape[0] != n or c.shape[0] != n:
        raise ValueError(f"{n} masks need {n} scores and classes, got {s.shape[0]} and {c.shape[0]}")
    os.makedirs(directory, exist_ok=True)
    paths, listing = [], []
    for k in range(n):
        mk = m[k]
        if mk.dtype != bool and (mk.size and (mk.min() < 0 or mk.max() > 1)):
            raise ValueError(f"mask {k} has values outside [0, 1]")
        arr = (mk.astype(bool) * 255 if mk.dtype == bool else np.rint(mk.astype(np.float64) * 255)).astype(np.uint8)
        name = f"{stem}_{k:03d}.png"
        path = os.path.join(directory, name)
        _atomic_write(path, lambda tmp, a=arr: Image.fromarray(a).save(tmp, format="PNG"))
        paths.append(path)
        listing.append({"file": name, "score": float(s[k]), "category_id": int(c[k])})

    def write(tmp):
        with open(tmp, "w") as fh:
            json.dump({"instances": listing}, fh, indent=1)

    _atomic_write(os.path.join(directory, f"{stem}_instances.json"), write)
    return paths


def read_instance_pngs(directory, stem: str) -> dict:
    """Reads what :func:`write_instance_pngs` writes (or bare ``<stem>_<k>.png``
    files, then scores 1 and class 0): ``{"masks" [M, H, W] float32 in [0, 1],
    "scores", "classes"}``."""
    from PIL import Image

    listing_path = os.path.join(directory, f"{stem}_instances.json")
    if os.path.exists(listing_path):
        with open(listing_path) as fh:
            listing = json.load(fh)["instances"]
    else:
        names = sorted(
            n
            for n in os.listdir(directory)
            if n.startswith(stem + "_") and n.endswith(".png") and n[len(stem) + 1 : -4].isdigit()
        )
        listing = [{"file": n} for n in names]
    masks = []
    for e in listing:
        with Image.open(os.path.join(directory, e["file"])) as im:
            if im.mode not in ("L", "1", "P", "I;16", "I"):
                raise ValueError(f"{e['file']}: an instance PNG must be single-channel, got mode {im.mode}")
            a = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        masks.append(a)
    if masks and len({m.shape for m in masks}) > 1:
        raise ValueError(f"instance PNGs of {stem} in {directory} have different sizes")
    return {
        "masks": np.stack(masks) if masks else np.zeros((0, 0, 0), np.float32),
        "scores": np.array([float(e.get("score", 1.0)) for e in listing]),
        "classes": np.array([int(e.get("category_id", 0)) for e in listing], dtype=np.int64),
    }
