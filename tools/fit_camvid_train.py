"""The counter-example of docs/fit.md: fitting on the network's train-split outputs.

Fits the CRF exactly as tools/fit_camvid.py does, but on the first 50 CamVid
*train* frames, whose softmax maps are over-confident (the network was
trained on them), and scores on the same 51 val frames as fit_camvid.py.

    python tools/camvid_probs.py /work/shared/data/camvid /work/fitdata/probs_train train 50
    python tools/fit_camvid_train.py /work/shared/data/camvid /work/fitdata/probs_train /work/fitdata/probs OUT.json
"""

import os
import sys
import time

import numpy as np
from skimage import io

import densecrf
from densecrf.models.camvid import IGNORE_INDEX
from densecrf.params import CRFParams

sys.path.insert(0, os.path.dirname(__file__))
from fit_camvid import N_FIT, load, print_table, score


def main(root, train_probs, val_probs, out):
    names = sorted(os.path.splitext(n)[0] for n in os.listdir(os.path.join(root, "train")) if n.endswith(".png"))[
        :N_FIT
    ]
    images = [io.imread(os.path.join(root, "train", n + ".png")) for n in names]
    labels = [io.imread(os.path.join(root, "trainannot", n + ".png")).astype(np.int64) for n in names]
    probs = [np.load(os.path.join(train_probs, n + ".npy")) for n in names]
    t0 = time.perf_counter()
    params = densecrf.fit(
        images,
        probs,
        labels,
        ignore_index=IGNORE_INDEX,
        search="gradient",
        compat="matrix",
        loss="ce+softiou",
        holdout=0.3,
        seed=0,
        verbose=True,
    )
    fit_time = time.perf_counter() - t0
    _, vi, vp, vl = load(root, val_probs)
    test = [vi[N_FIT:], vp[N_FIT:], vl[N_FIT:]]
    grid_best = CRFParams.from_dict(params.info["grid_best_params"])
    rows = [
        ("network alone", None),
        ("classic defaults", CRFParams()),
        ("best grid (train)", grid_best),
        ("fitted (train)", params),
    ]
    print_table(
        f"fitted on the first {N_FIT} train frames; scored on the {len(vi) - N_FIT} val frames after the first {N_FIT}",
        {label: score(p, *test) for label, p in rows},
    )
    print(f"fitting time: {fit_time:.1f} s; train held-out scores: {params.info.get('heldout_miou')}")
    params.save(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
