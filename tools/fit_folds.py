"""Fit dense-CRF parameters on one fold model's held-out drive, score them on the other fold's.

    python tools/fit_folds.py --data ../shared/data/camvid --probs /work/fold_probs \
        --json benchmarks/results/folds_2026-12-04/crf_transfer.json

Issue "A bundled network that holds up": a network's outputs on its own
training frames are over-confident and the held-out drive is for reporting,
so parameters are fitted on fold A's model's outputs on its held-out drive
(0006R0) and carried to fold B's model, scored on B's held-out drive
(0001TP) and on val; and the other way round. ``--probs`` holds the float16
maps that ``tools/eval_folds.py --probs`` wrote (``RUN/{heldout,val}/<stem>.npy``).
Rows: the network alone, the classic parameters, the transferred fit.
The fit selects by cross-validation over contiguous blocks of the source
drive's frames (``cv``; adjacent frames are near-duplicates) when
``densecrf.fit`` supports it, else on its last 30 % as one contiguous block.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import time

import numpy as np

import densecrf
from densecrf.metrics import SegmentationMetrics
from densecrf.models import camvid
from densecrf.params import CRFParams

OTHER = {"A": "B", "B": "A"}


def load(data, probs_root, fold, split):
    pairs = camvid.fold_split(data, fold, split)
    images, probs, labels = [], [], []
    for image_path, label_path in pairs:
        image, lab = camvid.load_pair(image_path, label_path)
        stem = os.path.splitext(os.path.basename(image_path))[0]
        images.append(image)
        probs.append(np.load(os.path.join(probs_root, f"{fold}_strong", split, stem + ".npy")).astype(np.float32))
        labels.append(lab.astype(np.int32))
    return images, probs, labels


def miou(images, probs, labels, params):
    m = SegmentationMetrics(len(camvid.CLASSES), ignore_index=camvid.IGNORE_INDEX)
    for image, p, lab in zip(images, probs, labels, strict=True):
        q = p if params is None else densecrf.refine(image, p, params=params)
        m.update(q.argmax(-1), lab)
    return m.mean_iou()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--probs", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--search", default="grid")
    ap.add_argument("--cv", type=int, default=5)
    ap.add_argument(
        "--pooled",
        action="store_true",
        help="instead: fit on both folds' held-out outputs pooled, cross-validated by drive (the parameters to ship)",
    )
    args = ap.parse_args()
    if args.pooled:
        return pooled(args)
    has_cv = "cv" in inspect.signature(densecrf.fit).parameters
    out = {"search": args.search, "cv": args.cv if has_cv else None}
    classic = CRFParams(n_iter=5)
    for src in ("A", "B"):
        dst = OTHER[src]
        t0 = time.time()
        imgs, probs, labs = load(args.data, args.probs, src, "heldout")
        kw = {"ignore_index": camvid.IGNORE_INDEX, "search": args.search, "n_iter": 5}
        if has_cv:
            kw["cv"] = args.cv
        else:
            n = len(imgs)
            kw["holdout"] = list(range(n - max(1, round(0.3 * n)), n))
        params = densecrf.fit(imgs, probs, labs, **kw)
        entry = {
            "fitted_on": f"fold {src} model, held-out drive {camvid.FOLDS[src]['heldout']}",
            "fit_s": round(time.time() - t0, 1),
        }
        entry["params"] = {k: v for k, v in params.to_dict().items() if k != "info"}
        entry["fit_info"] = {k: params.info.get(k) for k in ("selected", "no_crf", "heldout_miou", "cv", "warnings")}
        for split in ("heldout", "val"):
            di, dp, dl = load(args.data, args.probs, dst, split)
            entry[f"{dst}_{split}"] = {
                "network": round(miou(di, dp, dl, None), 5),
                "classic": round(miou(di, dp, dl, classic), 5),
                "fitted": round(miou(di, dp, dl, params), 5),
            }
            print(src, "->", dst, split, entry[f"{dst}_{split}"], flush=True)
        out[f"{src}_to_{dst}"] = entry
        with open(args.json + ".tmp", "w") as fh:
            json.dump(out, fh, indent=1)
        os.replace(args.json + ".tmp", args.json)


def pooled(args):
    """Both held-out drives' outputs (fold A's model on 0006R0, fold B's on 0001TP) in one fit, leave-one-drive-out."""
    images, probs, labels, groups = [], [], [], []
    for fold in ("A", "B"):
        i, p, lab = load(args.data, args.probs, fold, "heldout")
        images += i
        probs += p
        labels += lab
        groups += [camvid.FOLDS[fold]["heldout"]] * len(i)
    t0 = time.time()
    params = densecrf.fit(
        images, probs, labels, ignore_index=camvid.IGNORE_INDEX, search=args.search, n_iter=5, groups=groups
    )
    out = json.load(open(args.json)) if os.path.exists(args.json) else {}
    out["pooled"] = {
        "fit_s": round(time.time() - t0, 1),
        "params": {k: v for k, v in params.to_dict().items() if k != "info"},
        "fit_info": {k: params.info.get(k) for k in ("selected", "no_crf", "cv", "warnings")},
    }
    print("pooled:", params.info.get("cv", {}).get("reason"), flush=True)
    with open(args.json + ".tmp", "w") as fh:
        json.dump(out, fh, indent=1)
    os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
