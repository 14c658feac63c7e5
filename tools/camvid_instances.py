"""CamVid instance / panoptic evaluation of densecrf.refine_instances and refine_panoptic (issue 21).

CamVid has no instance labels. They are built here from the semantic ground
truth: thing instances are the 8-connected components of at least 300
pixels of Car, Pedestrian and Bicyclist (people or cars that touch merge
into one instance: CamVid's labels cannot separate them). Stuff is the other
eight classes; Unlabelled (11) is void.

Inputs come from the bundled network (``densecrf.models.pretrained()``, the
one trained on all of CamVid train; issue 20's per-fold models' weights
were not kept, so on the train drives its probabilities are on frames it
was trained on):

1. detector-style: per ground-truth instance, its box with each side moved
   by up to 8 % of the box's width (left/right) or height (top/bottom),
   uniformly at random; inside it the network's probability of the
   instance's class, reduced to 28 x 28 (area average) and pasted back
   bilinearly (densecrf.paste_masks), score 0.9; plus one false positive per
   image: a box of a typical size (width and height of a random true
   instance of the whole split) at a random place, a random thing class's
   probability inside, score 0.3. Seeded per frame.
2. network: the network's own thing predictions (argmax), split into
   8-connected components of at least 300 px; the mask is the network's
   probability of that class inside the component's box, the score the
   mean probability over the component.

Subcommands:

    python tools/camvid_instances.py cache ROOT        # network probabilities -> /tmp/inst_cache/<stem>.npz (float16)
    python tools/camvid_instances.py fit ROOT DRIVE KIND joint|binary|panoptic OUT.json [--step 3]
    python tools/camvid_instances.py eval ROOT SPLIT KIND NAME=PARAMS.json|none|textbook[:FIELD=V...][:merge=ids|score] ... [--step N] [--json OUT]
    python tools/camvid_instances.py table EVAL.json ...
    python tools/camvid_instances.py fits-table FIT.json ...
    python tools/camvid_instances.py pictures ROOT OUTDIR JOINT.json BINARY.json STEM [STEM ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

CACHE = os.environ.get("DENSECRF_INST_CACHE", "/tmp/inst_cache")
THING_CLASSES = (8, 9, 10)  # Car, Pedestrian, Bicyclist
STUFF_CLASSES = tuple(range(8))
IGNORE = 11
MIN_AREA = 300


def frames(root: str, which: str) -> list[tuple[str, str]]:
    """(image, label) paths: 'val', or a train drive id such as '0006R0'."""
    from densecrf.models import camvid

    if which == "val":
        return camvid.list_split(root, "val")
    pairs = [p for p in camvid.list_split(root, "train") if os.path.basename(p[0]).startswith(which + "_")]
    if not pairs:
        raise SystemExit(f"no train frames of drive {which!r} in {root}")
    return pairs


def cache(root: str) -> int:
    """The network's softmax at full resolution for val and the two held-out drives, float16 .npz."""
    import torch

    from densecrf.models import NET_SIZE, camvid, pretrained
    from densecrf.models.deeplab import logits_at_size

    os.makedirs(CACHE, exist_ok=True)
    net = pretrained()
    torch.set_num_threads(1)
    done = 0
    t0 = time.perf_counter()
    for which in ("val", "0006R0", "0001TP"):
        for img_path, lab_path in frames(root, which):
            stem = os.path.splitext(os.path.basename(img_path))[0]
            out = os.path.join(CACHE, stem + ".npz")
            if os.path.exists(out):
                continue
            image, _ = camvid.load_pair(img_path, lab_path)
            x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None] / 255.0
            with torch.no_grad():
                probs = torch.softmax(logits_at_size(net, x, NET_SIZE)[0], dim=0).permute(1, 2, 0).numpy()
            tmp = out + ".tmp.npz"
            np.savez_compressed(tmp, probs=probs.astype(np.float16))
            os.replace(tmp, out)
            done += 1
    print(f"cached {done} probability maps in {CACHE} ({time.perf_counter() - t0:.0f} s)")
    return 0


def load(root: str, which: str, limit: int | None = None, step: int = 1):
    """[(stem, image uint8 [H, W, 3], labels int64 [H, W], probs float32 [H, W, 11])] of a split or drive."""
    from densecrf.models import camvid

    out = []
    for img_path, lab_path in frames(root, which)[::step][:limit]:
        stem = os.path.splitext(os.path.basename(img_path))[0]
        image, labels = camvid.load_pair(img_path, lab_path)
        with np.load(os.path.join(CACHE, stem + ".npz")) as z:
            probs = z["probs"].astype(np.float32)
        probs /= probs.sum(-1, keepdims=True)  # float16 storage: back to sums of one
        out.append((stem, image, labels, probs))
    return out


def components(mask: np.ndarray, min_area: int = MIN_AREA) -> list[np.ndarray]:
    """8-connected components of at least min_area pixels, as boolean masks."""
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return []
    areas = np.bincount(lab.ravel(), minlength=n + 1)
    return [lab == k for k in range(1, n + 1) if areas[k] >= min_area]


def gt_instances(labels: np.ndarray):
    """Ground truth: (masks [G, H, W] bool, classes [G]) of thing components >= 300 px."""
    masks, classes = [], []
    for c in THING_CLASSES:
        for comp in components(labels == c):
            masks.append(comp)
            classes.append(c)
    h, w = labels.shape
    return np.array(masks, dtype=bool).reshape(-1, h, w), np.array(classes, dtype=np.int64)


def box_of(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def reduce28(prob: np.ndarray, box: np.ndarray, size: int = 28) -> np.ndarray:
    """The probability map's content of ``box`` reduced to size x size (area average,
    sampled at 4 x 4 sub-pixel points per cell: a box may cut pixels)."""
    h, w = prob.shape
    x0, y0, x1, y1 = box
    sub = 4
    t = (np.arange(size * sub) + 0.5) / (size * sub)
    xs = np.clip(np.floor(x0 + t * (x1 - x0)).astype(int), 0, w - 1)
    ys = np.clip(np.floor(y0 + t * (y1 - y0)).astype(int), 0, h - 1)
    inside_x = (x0 + t * (x1 - x0) >= 0) & (x0 + t * (x1 - x0) < w)
    inside_y = (y0 + t * (y1 - y0) >= 0) & (y0 + t * (y1 - y0) < h)
    v = prob[ys][:, xs] * (inside_y[:, None] & inside_x[None, :])  # outside the image: probability 0
    return v.reshape(size, sub, size, sub).mean(axis=(1, 3))


def detector_inputs(probs, gt_masks, gt_classes, typical_sizes, rng):
    """Detector-style inputs: (low-res masks [M, 28, 28], boxes [M, 4], scores [M], classes [M])."""
    h, w = probs.shape[:2]
    lows, boxes, scores, classes = [], [], [], []
    for m, c in zip(gt_masks, gt_classes, strict=True):
        b = box_of(m)
        bw, bh = b[2] - b[0], b[3] - b[1]
        jit = rng.uniform(-0.08, 0.08, size=4) * np.array([bw, bh, bw, bh])
        b = b + jit
        lows.append(reduce28(probs[..., c], b))
        boxes.append(b)
        scores.append(0.9)
        classes.append(int(c))
    # One false positive: a box of a typical size at a random place, a random thing class inside.
    bw, bh = typical_sizes[rng.integers(len(typical_sizes))]
    x0, y0 = rng.uniform(0, max(1.0, w - bw)), rng.uniform(0, max(1.0, h - bh))
    b = np.array([x0, y0, x0 + bw, y0 + bh])
    c = int(rng.choice(THING_CLASSES))
    lows.append(reduce28(probs[..., c], b))
    boxes.append(b)
    scores.append(0.3)
    classes.append(c)
    return np.array(lows, dtype=np.float32), np.array(boxes), np.array(scores), np.array(classes, dtype=np.int64)


def network_inputs(probs):
    """The network's own thing predictions split into components >= 300 px:
    (masks [M, H, W] soft: the class probability inside the component's box, scores, classes)."""
    pred = probs.argmax(-1)
    masks, scores, classes = [], [], []
    for c in THING_CLASSES:
        for comp in components(pred == c):
            x0, y0, x1, y1 = box_of(comp).astype(int)
            m = np.zeros(pred.shape, dtype=np.float32)
            m[y0:y1, x0:x1] = probs[y0:y1, x0:x1, c]
            masks.append(m)
            scores.append(float(probs[..., c][comp].mean()))
            classes.append(c)
    h, w = pred.shape
    return np.array(masks, dtype=np.float32).reshape(-1, h, w), np.array(scores), np.array(classes, dtype=np.int64)


def typical_sizes(data) -> np.ndarray:
    sizes = []
    for _, _, labels, _ in data:
        for m in gt_instances(labels)[0]:
            b = box_of(m)
            sizes.append((b[2] - b[0], b[3] - b[1]))
    return np.array(sizes)


def build(data, kind: str, seed: int = 0):
    """Per frame: dict(stem, image, labels, probs, gt_masks, gt_classes, masks (full-res soft), scores, classes)."""
    from densecrf.instances import paste_masks

    sizes = typical_sizes(data)
    items = []
    for j, (stem, image, labels, probs) in enumerate(data):
        gm, gc = gt_instances(labels)
        if kind == "detector":
            rng = np.random.default_rng([seed, j])
            low, boxes, scores, classes = detector_inputs(probs, gm, gc, sizes, rng)
            masks = paste_masks(low, boxes, labels.shape)
        else:
            masks, scores, classes = network_inputs(probs)
        items.append(
            {
                "stem": stem,
                "image": image,
                "labels": labels,
                "probs": probs,
                "gt_masks": gm,
                "gt_classes": gc,
                "masks": masks,
                "scores": scores,
                "classes": classes,
            }
        )
    return items


def gt_panoptic(labels, gm, gc):
    """Ground truth in COCO panoptic form: stuff classes one segment each, thing
    instances; Unlabelled and thing pixels of components < 300 px are void (0)."""
    ids = np.zeros(labels.shape, dtype=np.int64)
    info = []
    for m, c in zip(gm, gc, strict=True):
        info.append({"id": len(info) + 1, "category_id": int(c), "iscrowd": 0})
        ids[m] = len(info)
    for c in STUFF_CLASSES:
        region = labels == c
        if region.any():
            info.append({"id": len(info) + 1, "category_id": c, "iscrowd": 0})
            ids[region] = len(info)
    return ids, info


def stuff_map_of(probs):
    """The network's stuff: its argmax, thing classes void (-1)."""
    pred = probs.argmax(-1)
    return np.where(np.isin(pred, THING_CLASSES), -1, pred)


def evaluate(items, params, *, panoptic: bool = False, threads=None, device="cpu", merge: str | None = None) -> dict:
    """AP (COCO, pycocotools), PQ / SQ / RQ of things and stuff (accumulated), seconds per image."""
    from densecrf.coco import mask_ap
    from densecrf.instance_fit import per_image_counts
    from densecrf.instances import instances_to_panoptic, refine_instances, refine_panoptic
    from densecrf.metrics import PanopticQuality

    cats = {c: c in THING_CLASSES for c in range(11)}
    pq = PanopticQuality(cats)
    preds, gts, secs, empties, confident, per_image = [], [], 0.0, 0, 0, []
    for it in items:
        t = time.perf_counter()
        if panoptic:
            ids, info = refine_panoptic(
                it["image"],
                it["probs"],
                {"masks": it["masks"], "classes": it["classes"], "scores": it["scores"]},
                THING_CLASSES,
                params=params,
                threads=threads,
                device=device,
            )
            secs += time.perf_counter() - t
            masks = np.zeros(it["masks"].shape, dtype=bool)
            for s in info:
                if s["isthing"]:
                    masks[s["instance"]] = ids == s["id"]
        else:
            res = refine_instances(
                it["image"], it["masks"], it["scores"], params=params, threads=threads, device=device
            )
            secs += time.perf_counter() - t
            masks = res.masks
            stuff_map = stuff_map_of(it["probs"])
            # A refinement's overlaps are resolved as its id map says, the input's by the usual score
            # merge unless merge="ids" (a control: the input masks merged by probability times score).
            exclusive = res.exclusive_masks() if (merge or ("ids" if params.refine else "score")) == "ids" else masks
            ids, info = instances_to_panoptic(stuff_map, exclusive, it["classes"], it["scores"])
        conf = (it["masks"] > 0.5).any(axis=(1, 2))
        confident += int(conf.sum())
        empties += int((conf & ~masks.any(axis=(1, 2))).sum())
        gid, ginfo = gt_panoptic(it["labels"], it["gt_masks"], it["gt_classes"])
        pq.update(ids, info, gid, ginfo)
        one = PanopticQuality(cats)
        one.update(ids, info, gid, ginfo)
        per_image.append(per_image_counts(one).tolist())
        preds.append({"masks": masks, "scores": it["scores"], "classes": it["classes"]})
        gts.append({"masks": it["gt_masks"], "classes": it["gt_classes"]})
    ap = mask_ap(preds, gts, categories=THING_CLASSES)
    r = pq.compute()
    return {
        "ap": ap["ap"],
        "ap50": ap["ap50"],
        "pq_th": r["things"]["pq"],
        "sq_th": r["things"]["sq"],
        "rq_th": r["things"]["rq"],
        "pq_st": r["stuff"]["pq"],
        "sq_st": r["stuff"]["sq"],
        "rq_st": r["stuff"]["rq"],
        "pq": r["all"]["pq"],
        "s_per_image": secs / max(1, len(items)),
        "n_images": len(items),
        "n_instances": int(sum(len(g["masks"]) for g in gts)),
        "confident_emptied": empties,
        "confident_inputs": confident,
        "tp_th": int(pq.tp[list(THING_CLASSES)].sum()),
        "pq_counts": per_image,  # per image [summed IoU, TP, FP, FN] x the 11 classes, for the bootstrap
    }


def fit(root, drive, kind, mode, out, step, n_random, n_local):
    """fit_instances (mode joint or binary) or fit_panoptic (mode panoptic) on every STEP-th frame of a drive."""
    from densecrf.instance_fit import fit_instances, fit_panoptic

    items = build(load(root, drive, step=step), kind)
    images = [it["image"] for it in items]
    inputs = [{"masks": it["masks"], "scores": it["scores"], "classes": it["classes"]} for it in items]
    say = lambda s: print(s, flush=True)  # noqa: E731
    if mode == "panoptic":
        gts = [gt_panoptic(it["labels"], it["gt_masks"], it["gt_classes"]) for it in items]
        probs = [it["probs"] for it in items]
        p = fit_panoptic(images, probs, inputs, gts, THING_CLASSES, n_random=n_random, n_local=n_local, log=say)
    else:
        gts = [{"masks": it["gt_masks"], "classes": it["gt_classes"]} for it in items]
        # the stuff the instances are pasted over in evaluate(): guarded with the things
        stuff = [
            (stuff_map_of(it["probs"]), gt_panoptic(it["labels"], it["gt_masks"], it["gt_classes"])) for it in items
        ]
        p = fit_instances(images, inputs, gts, mode=mode, stuff=stuff, n_random=n_random, n_local=n_local, log=say)
    p.info.update({"drive": drive, "kind": kind, "frame_step": step})
    p.save(out)
    print(
        f"{out}: selected {p.info['selected']}, held-out input {p.info['held_out_input']}, "
        f"selected {p.info['held_out_selected']} ({p.info['seconds']} s, {p.info['crf_runs']} CRF runs)"
    )
    return 0


def pictures(root, outdir, params_joint, params_binary, frames_wanted, kind="detector"):
    """Side-by-side PNGs: input masks (pasted, > 0.5) | joint refinement | binary refinement,
    instance outlines and fills on the region of the true instances, 128 colours (small files)."""
    from PIL import Image
    from scipy import ndimage

    from densecrf.instances import InstanceParams, refine_instances

    os.makedirs(outdir, exist_ok=True)
    items = build(load(root, "val"), kind)
    items = [it for it in items if it["stem"] in frames_wanted]
    colours = np.array(
        [
            [255, 60, 60],
            [60, 200, 255],
            [255, 220, 0],
            [120, 255, 120],
            [255, 120, 255],
            [255, 160, 60],
            [160, 120, 255],
            [0, 255, 200],
        ],
        dtype=np.float64,
    )
    pj, pb = InstanceParams.load(params_joint), InstanceParams.load(params_binary)
    written = []
    for it in items:
        panels = []
        for masks in (
            it["masks"] > 0.5,
            refine_instances(it["image"], it["masks"], it["scores"], params=pj).masks,
            refine_instances(it["image"], it["masks"], it["scores"], params=pb).masks,
        ):
            img = it["image"].astype(np.float64).copy()
            for i, m in enumerate(masks):
                c = colours[i % len(colours)]
                img[m] = 0.55 * img[m] + 0.45 * c
                edge = m & ~ndimage.binary_erosion(m)
                img[edge] = c
            panels.append(img)
        # The region of the true instances (padded), at full resolution, at most 320 px wide per panel.
        ys, xs = np.nonzero(it["gt_masks"].any(axis=0))
        h, w = it["labels"].shape
        y0, y1 = max(0, ys.min() - 16), min(h, ys.max() + 17)
        x0, x1 = max(0, xs.min() - 16), min(w, xs.max() + 17)
        step = max(1, int(np.ceil((x1 - x0) / 320)))
        panels = [pn[y0:y1:step, x0:x1:step] for pn in panels]
        sep = np.full((panels[0].shape[0], 4, 3), 255.0)
        row = np.concatenate([panels[0], sep, panels[1], sep, panels[2]], axis=1).clip(0, 255).astype(np.uint8)
        path = os.path.join(outdir, f"instances_{kind}_{it['stem']}.png")
        Image.fromarray(row).quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        written.append(path)
        print(path, os.path.getsize(path), "bytes")
    return 0


def table(paths, n_boot: int = 1000) -> int:
    """Markdown tables of eval JSON files (figures in %, time in ms per image). Each row's
    change of PQ of things and of stuff against the first row comes with its 90 %
    paired bootstrap interval over the images (``n_boot`` resamples, seeded), from
    the per-image counts the eval stored; *TP th* counts the matched thing instances."""
    import json

    from densecrf.instance_fit import pq_gain_interval

    cats = {c: c in THING_CLASSES for c in range(11)}

    def change(r, ref, part):
        if r is ref or "pq_counts" not in r:
            return ""
        g, lo, hi = pq_gain_interval(
            np.array(r["pq_counts"]), np.array(ref["pq_counts"]), cats, part, n_boot, np.random.default_rng(0)
        )
        return f"{100 * g:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"

    for path in paths:
        with open(path) as fh:
            d = json.load(fh)
        res = d["results"]
        ref = res[next(iter(res))]
        print(
            f"\n{d['split']}, {d['kind']} inputs, every {d['step']}. frame: {ref['n_images']} images, "
            f"{ref['n_instances']} instances\n"
        )
        print(
            "| run | AP | AP50 | PQ th | SQ th | RQ th | TP th | PQ st | PQ | ΔPQ th [90 %] | ΔPQ st [90 %] | "
            "ms/img | emptied |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name, r in res.items():
            delta = "" if r is ref else f" ({100 * (r['ap'] - ref['ap']):+.1f})"
            print(
                f"| {name} | {100 * r['ap']:.1f}{delta} | {100 * r['ap50']:.1f} | {100 * r['pq_th']:.1f} | "
                f"{100 * r['sq_th']:.1f} | {100 * r['rq_th']:.1f} | {r.get('tp_th', '')} | {100 * r['pq_st']:.1f} | "
                f"{100 * r['pq']:.1f} | {change(r, ref, 'things')} | {change(r, ref, 'stuff')} | "
                f"{1000 * r['s_per_image']:.0f} | {r['confident_emptied']}/{r['confident_inputs']} |"
            )
    return 0


def fits_table(paths) -> int:
    """A markdown table of fit JSON files: held-out input -> selected, the selected
    finalist's bootstrap confidence, the chosen parameters."""
    import json

    print(
        "| fit | selected | held-out figures, input -> selected | confidence | power | score | fg_bias | "
        "min_prob | class | Gauss w | bilateral sxy / srgb / w | inst compat | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        with open(path) as fh:
            d = json.load(fh)
        info = d["info"]
        metrics = list(info["held_out_input"])
        figs = ", ".join(
            f"{m} {100 * info['held_out_input'][m]:.1f} -> {100 * info['held_out_selected'][m]:.1f}" for m in metrics
        )
        best = max((r["gain_confidence"] for r in info["finalists"]), default=0.0)
        sel = [r for r in info["finalists"] if r["held_out"] == info["held_out_selected"]]
        conf = f"{100 * sel[0]['gain_confidence']:.0f} %" if d["refine"] and sel else f"(best {100 * best:.0f} %)"
        name = f"{info['kind']} {info.get('mode', 'panoptic') if info['method'] == 'fit_instances' else 'panoptic'}, {info['drive']}"
        if not d["refine"]:
            print(f"| {name} | no refinement | {figs} | {conf} | | | | | | | | | {info['seconds']:.0f} |")
            continue
        g = "-" if d["gaussian_weight"] is None else f"{d['gaussian_weight']:.2f}"
        b = (
            "-"
            if d["bilateral_weight"] is None
            else f"{d['bilateral_sxy']:.1f} / {d['bilateral_srgb']:.1f} / {d['bilateral_weight']:.2f}"
        )
        print(
            f"| {name} | search | {figs} | {conf} | {d['power']:.2f} | {d['score_power']:.2f} | {d['fg_bias']:.2f} | "
            f"{d['min_prob']:.3g} | {d['class_power']:.2f} | {g} | {b} | {d['instance_compat']:.2f} | {info['seconds']:.0f} |"
        )
    return 0


def main(argv=None) -> int:
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache")
    c.add_argument("root")
    f = sub.add_parser("fit")
    f.add_argument("root")
    f.add_argument("drive")
    f.add_argument("kind", choices=("detector", "network"))
    f.add_argument("mode", choices=("joint", "binary", "panoptic"))
    f.add_argument("out")
    f.add_argument("--step", type=int, default=3, help="use every STEP-th frame of the drive (default 3)")
    f.add_argument("--n-random", type=int, default=20)
    f.add_argument("--n-local", type=int, default=10)
    pc = sub.add_parser("pictures")
    pc.add_argument("root")
    pc.add_argument("outdir")
    pc.add_argument("params_joint")
    pc.add_argument("params_binary")
    pc.add_argument("frames", nargs="+", help="val frame stems, e.g. 0016E5_07965")
    pc.add_argument("--kind", default="detector", choices=("detector", "network"))
    ft = sub.add_parser("fits-table")
    ft.add_argument("json", nargs="+")
    tb = sub.add_parser("table")
    tb.add_argument("json", nargs="+")
    e = sub.add_parser("eval")
    e.add_argument("root")
    e.add_argument("split", help="val, 0006R0 or 0001TP")
    e.add_argument("kind", choices=("detector", "network"))
    e.add_argument("params", nargs="+", help="NAME=PARAMS.json|none|textbook (the first is the table's reference)")
    e.add_argument("--panoptic", nargs="*", default=[], help="names of the params also run through refine_panoptic")
    e.add_argument(
        "--panoptic-only", nargs="*", default=[], help="names of the params run through refine_panoptic only"
    )
    e.add_argument("--step", type=int, default=1)
    e.add_argument("--json", help="write the results here")
    e.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    if a.cmd == "cache":
        return cache(a.root)
    if a.cmd == "table":
        return table(a.json)
    if a.cmd == "fits-table":
        return fits_table(a.json)
    if a.cmd == "pictures":
        return pictures(a.root, a.outdir, a.params_joint, a.params_binary, set(a.frames), a.kind)
    if a.cmd == "fit":
        return fit(a.root, a.drive, a.kind, a.mode, a.out, a.step, a.n_random, a.n_local)
    from densecrf.instances import InstanceParams

    items = build(load(a.root, a.split, step=a.step), a.kind)
    results = {}
    for spec in a.params:
        name, _, path = spec.partition("=")
        if path.split(":")[0] == "none":
            prm = InstanceParams.no_refinement()
        elif path.split(":")[0] == "textbook":
            prm = InstanceParams.textbook()
        else:
            prm = InstanceParams.load(path.split(":")[0])
        merge = None
        for kv in path.split(":")[1:]:  # overrides, e.g. file.json:n_iter=0, none:merge=ids
            k, v = kv.split("=")
            if k == "merge":
                merge = v
            else:
                prm = prm.replace(**{k: type(getattr(prm, k))(v) if getattr(prm, k) is not None else float(v)})
        runs = [] if name in a.panoptic_only else [(name, False)]
        runs += [(name + "+panoptic", True)] if name in a.panoptic or name in a.panoptic_only else []
        for label, pan in runs:
            results[label] = evaluate(items, prm, panoptic=pan, device=a.device, merge=merge)
            r = results[label]
            print(
                f"{a.split} {a.kind} {label:28s} AP {100 * r['ap']:5.1f} AP50 {100 * r['ap50']:5.1f} "
                f"PQth {100 * r['pq_th']:5.1f} SQth {100 * r['sq_th']:5.1f} RQth {100 * r['rq_th']:5.1f} "
                f"PQst {100 * r['pq_st']:5.1f} PQ {100 * r['pq']:5.1f} {r['s_per_image']:.3f} s/img "
                f"emptied {r['confident_emptied']}/{r['confident_inputs']}",
                flush=True,
            )
    if a.json:
        tmp = a.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump({"split": a.split, "kind": a.kind, "step": a.step, "results": results}, fh, indent=1)
        os.replace(tmp, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
