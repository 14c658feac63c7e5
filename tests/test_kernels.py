"""The portable (baseline) hot loops against the ones picked for this CPU.

On an AVX2 machine the baseline loops never run unless forced with
DENSECRF_KERNELS=baseline, which the picker reads once per process; so each
set runs in a subprocess of its own.
"""
import os
import subprocess
import sys

import numpy as np

_SCRIPT = r"""
import sys, numpy as np, densecrf
sys.path.insert(0, sys.argv[2])
from reference import smooth_image, label_probs
h, w = 120, 150  # 18000 points: lattice builds and filters split across threads
img = smooth_image(h, w)
out = {"kernels": np.array(densecrf._build_info()["kernels"])}
for k in (3, 21, 40):  # one, three and five 8-lane blocks (40: the generic width)
    p = label_probs(h, w, k, sharpness=1.0)
    for th in (1, 2):
        out[f"K{k}_t{th}"] = densecrf.refine(img, p, n_iter=4, threads=th)
    # Logits far outside [-64, 64]: the softmax takes the max-shift path.
    crf = densecrf.DenseCRF(h * w, k, threads=2)
    crf.set_unary(-30.0 * np.log(p.reshape(-1, k)))
    crf.add_pairwise(np.random.default_rng(k).random((h * w, 3)).astype(np.float32) * 4, 2.0)
    out[f"K{k}_big"] = crf.inference(3)
np.savez(sys.argv[1], **out)
"""


def _run(tmp_path, name, kernels=None):
    env = dict(os.environ)
    env.pop("DENSECRF_KERNELS", None)
    if kernels:
        env["DENSECRF_KERNELS"] = kernels
    path = tmp_path / f"{name}.npz"
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    subprocess.run([sys.executable, "-c", _SCRIPT, str(path), tests_dir], env=env, check=True, timeout=300)
    return np.load(path)


def test_baseline_kernels_match_the_picked_ones(tmp_path):
    base = _run(tmp_path, "base", "baseline")
    best = _run(tmp_path, "best")
    assert str(base["kernels"]) == "baseline"
    for key in base.files:
        if key == "kernels":
            continue
        q = base[key]
        assert np.isfinite(q).all(), key
        # Rows are distributions: float32 sums of up to 40 terms, 1e-5.
        assert np.allclose(q.sum(-1), 1.0, atol=1e-5), key
        if str(best["kernels"]) == "baseline":  # no AVX2 here: the same loops
            assert np.array_equal(q, best[key]), key
        else:
            # AVX2 + FMA rounds each multiply-add once instead of twice (about
            # 6e-8 relative per step); after 3-4 iterations the two differ by
            # up to 4.2e-7 on this data; 2e-6 leaves 5x headroom.
            assert np.abs(q - best[key]).max() <= 2e-6, key
    for k in (3, 21, 40):  # the baseline loops are thread-count independent too
        assert np.array_equal(base[f"K{k}_t1"], base[f"K{k}_t2"])
