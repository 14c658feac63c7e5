"""Fits the CRF to the bundled CamVid network and scores it: the table of docs/fit.md.

Needs the network's softmax maps on CamVid val (tools/camvid_probs.py).
Fits on the first 50 val frames by sorted name (30 % of them held out for
selection and early stopping), scores on the other 51 at full resolution
(480 x 360, ignore index 11): the network alone, the classic defaults, the
best grid point and the fitted parameters. Writes the fitted parameters
(with their provenance and scores in ``info``) to OUT.

    python tools/fit_camvid.py /work/shared/data/camvid /work/fitdata/probs \\
        densecrf/models/weights/crf_params_camvid.json
"""

import os
import sys
import time

import numpy as np
from skimage import io

import densecrf
from densecrf.metrics import SegmentationMetrics
from densecrf.models.camvid import CLASSES, IGNORE_INDEX
from densecrf.params import CRFParams

N_FIT = 50


def load(root, probs_dir):
    names = sorted(os.path.splitext(n)[0] for n in os.listdir(os.path.join(root, "val")) if n.endswith(".png"))
    images = [io.imread(os.path.join(root, "val", n + ".png")) for n in names]
    labels = [io.imread(os.path.join(root, "valannot", n + ".png")).astype(np.int64) for n in names]
    probs = [np.load(os.path.join(probs_dir, n + ".npy")) for n in names]
    return names, images, probs, labels


def score(params, images, probs, labels):
    m = SegmentationMetrics(len(CLASSES), ignore_index=IGNORE_INDEX)
    for im, p, lab in zip(images, probs, labels, strict=True):
        if params is None:
            pred = p.argmax(-1)
        else:
            pred = densecrf.refine(im, p.astype(np.float32), params=params).argmax(-1)
        m.update(pred, lab)
    return m


def print_table(title, results):
    """Mean IoU and per-class IoU (%) of each row's SegmentationMetrics."""
    print(f"\n{title}")
    print(f"{'':<18} {'mIoU':>6}  " + " ".join(f"{c[:6]:>6}" for c in CLASSES))
    for label, m in results.items():
        print(f"{label:<18} {100 * m.mean_iou():6.2f}  " + " ".join(f"{100 * v:6.1f}" for v in m.iou()))


def main(root, probs_dir, out, *extra):
    names, images, probs, labels = load(root, probs_dir)
    fit_sl, test_sl = slice(0, N_FIT), slice(N_FIT, None)
    t0 = time.perf_counter()
    params = densecrf.fit(
        images[fit_sl],
        probs[fit_sl],
        labels[fit_sl],
        ignore_index=IGNORE_INDEX,
        search="gradient",
        compat="matrix",
        loss="ce+softiou",
        holdout=0.3,
        seed=0,
        verbose=True,
    )
    fit_time = time.perf_counter() - t0
    grid_best = CRFParams.from_dict(params.info["grid_best_params"])
    test = [images[test_sl], probs[test_sl], labels[test_sl]]
    rows = [
        ("network alone", None),
        ("classic defaults", CRFParams()),
        ("best grid point", grid_best),
        ("fitted", params),
    ]
    results = {label: score(p, *test) for label, p in rows}
    print_table(
        f"CamVid val, the {len(names) - N_FIT} frames after the first {N_FIT} (480 x 360, ignore index {IGNORE_INDEX})",
        results,
    )
    print(f"fitting time: {fit_time:.1f} s on {densecrf.get_num_threads()} threads ({N_FIT} images)")
    params.info["provenance"] = (
        f"densecrf.fit on the bundled DeepLabLite's softmax maps (input 240 x 180, logits resized to 480 x 360) "
        f"of the first {N_FIT} CamVid val frames by sorted name; tools/fit_camvid.py"
    )
    params.info["fit_frames"] = names[fit_sl]
    params.info["test_miou"] = {label: round(float(m.mean_iou()), 6) for label, m in results.items()}
    params.info["test_frames"] = f"{names[N_FIT]} .. {names[-1]} ({len(names) - N_FIT} frames)"
    params.info["fit_time_s"] = round(fit_time, 1)
    params.save(out)
    print(f"wrote {out}")
    g, b = params.to_dict()["gaussian"], params.to_dict()["bilateral"]
    print(f"gaussian sxy {g['sxy']:.2f}; bilateral sxy {b['sxy']:.2f} srgb {b['srgb']:.2f}")
    for name, c in (("gaussian", g["compat"]), ("bilateral", b["compat"])):
        if c is None or isinstance(c, float):
            print(f"{name} compat: {c}")
            continue
        c = np.asarray(c)
        c = np.diag(c) if c.ndim == 1 else c
        print(
            f"{name} compat diagonal (-: attraction to the same label): "
            + " ".join(f"{cl[:6]} {v:+.2f}" for cl, v in zip(CLASSES, np.diag(c), strict=True))
        )
        off = c - np.diag(np.diag(c))
        order = np.argsort(-np.abs(off).ravel())[:6]
        print(
            f"{name} compat largest off-diagonal entries (row receives, column sends): "
            + ", ".join(f"{CLASSES[i // c.shape[0]]}<-{CLASSES[i % c.shape[0]]} {off.ravel()[i]:+.2f}" for i in order)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
