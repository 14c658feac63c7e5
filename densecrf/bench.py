"""Timings of the reference workload: ``densecrf bench`` (and ``python -m densecrf.bench``).

The reference workload (DESIGN.md, "Speed and memory"): a 500 x 375 image,
K = 21 labels, pydensecrf's classic parameters (Gaussian sxy 3 compat 3,
bilateral sxy 80 srgb 13 compat 10), 5 mean-field iterations. The image is
the bundled CamVid demo frame resized to the requested size (a synthetic
scene of flat regions when pillow is missing); the probabilities are a
confident but noisy "network output" made from its annotation mapped onto K
labels, so the CRF has errors to fix along the edges.

Timed, at each thread count: the bilateral lattice build, one filter of K
channels through it, one mean-field iteration (both terms) and the whole
``refine`` call (lattice builds included). When pydensecrf is importable its
whole call is timed beside ours, after checking that the two agree: MAP
labels equal on at least 99.9 % of the pixels (the lattices are the same
approximation, so only float rounding at near-ties may differ). Figures are
medians over ``repeat`` runs after one warm-up run.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import numpy as np

CLASSIC = {"gaussian_sxy": 3.0, "gaussian_compat": 3.0, "bilateral_sxy": 80.0, "bilateral_srgb": 13.0,
           "bilateral_compat": 10.0}
AGREEMENT = 0.999  # share of pixels whose MAP label must equal pydensecrf's before it is timed

_DATA = os.path.join(os.path.dirname(__file__), "data")


def synthetic_scene(height: int = 375, width: int = 500, n_labels: int = 21, seed: int = 0):
    """A deterministic image of flat regions, its ``[H, W]`` labels and noisy ``[H, W, K]`` probabilities."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    truth = ((xx * 5 // max(width, 1)) + 5 * (yy * 5 // max(height, 1))) % n_labels
    colours = rng.integers(0, 256, size=(n_labels, 3))
    image = np.clip(colours[truth] + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)
    return image, truth, _noisy_probs(truth, n_labels, rng)


def _noisy_probs(truth: np.ndarray, n_labels: int, rng) -> np.ndarray:
    logits = rng.normal(0.0, 1.0, (*truth.shape, n_labels))
    logits += 1.2 * (np.arange(n_labels) == truth[..., None])  # the true label is preferred, often not the MAP
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return probs.astype(np.float32)


def reference_workload(width: int = 500, height: int = 375, n_labels: int = 21, seed: int = 0):
    """(image [H, W, 3] uint8, probabilities [H, W, K] float32, source) of the reference workload."""
    try:
        from PIL import Image

        with Image.open(os.path.join(_DATA, "camvid_0016E5_08093.png")) as im:
            image = np.array(im.convert("RGB").resize((width, height), Image.BILINEAR))  # writable: pydensecrf needs it
        with Image.open(os.path.join(_DATA, "camvid_0016E5_08093_labels.png")) as lab:
            truth = np.asarray(lab.resize((width, height), Image.NEAREST), dtype=np.int64) % n_labels
        return image, _noisy_probs(truth, n_labels, np.random.default_rng(seed)), "bundled CamVid frame, resized"
    except (ImportError, OSError):
        image, _, probs = synthetic_scene(height, width, n_labels, seed)
        return image, probs, "synthetic scene"


def median_time(fn, repeat: int = 5) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def pydensecrf_refine(image: np.ndarray, probs: np.ndarray, n_iter: int, params: dict | None = None) -> np.ndarray:
    """The same CRF with pydensecrf: ``[H, W, K]`` marginals. ``params``: the
    keys of :data:`CLASSIC` (default: those values). Also the pydensecrf
    call of the side-by-side script in ``benchmarks/``."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    p = CLASSIC if params is None else params
    h, w, k = probs.shape
    d = dcrf.DenseCRF2D(w, h, k)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.transpose(2, 0, 1))))
    d.addPairwiseGaussian(sxy=p["gaussian_sxy"], compat=p["gaussian_compat"])
    d.addPairwiseBilateral(sxy=p["bilateral_sxy"], srgb=p["bilateral_srgb"],
                           rgbim=np.ascontiguousarray(image), compat=p["bilateral_compat"])
    return np.asarray(d.inference(n_iter)).reshape(k, h, w).transpose(1, 2, 0)


def run(width: int = 500, height: int = 375, n_labels: int = 21, n_iter: int = 5, threads=(1, 2),
        repeat: int = 5, compare: bool = True, out=print) -> dict:
    """Times the workload; prints a table through ``out`` and returns the figures (seconds)."""
    import densecrf

    image, probs, source = reference_workload(width, height, n_labels)
    out(f"densecrf {densecrf.__version__} bench: {width} x {height} ({source}), K={n_labels}, classic parameters, "
        f"{n_iter} iterations; medians of {repeat} runs")
    results: dict = {"width": width, "height": height, "n_labels": n_labels, "n_iter": n_iter, "threads": {}}
    feats = densecrf.bilateral_features(image, CLASSIC["bilateral_sxy"], CLASSIC["bilateral_srgb"])
    values = np.ascontiguousarray(probs.reshape(-1, n_labels))
    unary = densecrf.unary_from_softmax(probs)
    ours = None
    for t in threads:
        lat = densecrf.PermutohedralLattice(feats, threads=t)
        crf = densecrf.DenseCRF2D(width, height, n_labels, threads=t)
        crf.set_unary(unary)
        crf.add_pairwise_gaussian(CLASSIC["gaussian_sxy"], CLASSIC["gaussian_compat"])
        crf.add_pairwise_bilateral(CLASSIC["bilateral_sxy"], CLASSIC["bilateral_srgb"], image,
                                   CLASSIC["bilateral_compat"])
        q0 = crf.start_inference()
        row = {
            "lattice build": median_time(lambda: densecrf.PermutohedralLattice(feats, threads=t), repeat),
            f"one filter (K={n_labels})": median_time(lambda: lat.filter(values), repeat),
            "one iteration": median_time(lambda: crf.step_inference(q0), repeat),
            "whole refine": median_time(lambda: densecrf.refine(image, probs, n_iter=n_iter, threads=t, **CLASSIC),
                                        repeat),
        }
        results["threads"][t] = row
        if ours is None:
            ours = densecrf.refine(image, probs, n_iter=n_iter, threads=t, **CLASSIC)
    names = list(next(iter(results["threads"].values())))
    out(f"{'':<22s}" + "".join(f"{f'{t} thread' + ('s' if t != 1 else ''):>12s}" for t in threads))
    for name in names:
        out(f"{name:<22s}" + "".join(f"{results['threads'][t][name] * 1e3:>9.1f} ms" for t in threads))
    if compare:
        try:
            import pydensecrf.densecrf  # noqa: F401
        except ImportError:
            out("pydensecrf: not installed (pip install pydensecrf2), no side-by-side figure")
        else:
            theirs = pydensecrf_refine(image, probs, n_iter)
            agree = float((theirs.argmax(-1) == ours.argmax(-1)).mean())
            results["pydensecrf agreement"] = agree
            if agree < AGREEMENT:
                out(f"pydensecrf: MAP labels agree on only {100 * agree:.3f} % of pixels (< {100 * AGREEMENT:g} %): "
                    "not timed, the outputs differ")
            else:
                dt = median_time(lambda: pydensecrf_refine(image, probs, n_iter), repeat)
                results["pydensecrf whole refine"] = dt
                best = min(r["whole refine"] for r in results["threads"].values())
                out(f"pydensecrf whole refine (1 thread): {dt * 1e3:.1f} ms; MAP labels agree on "
                    f"{100 * agree:.3f} % of pixels; densecrf (its best thread count) is {dt / best:.1f}x faster")
    return results


def run_suite(folder: str) -> int:
    """``pytest FOLDER --benchmark-only``: the repository's pytest-benchmark suite; returns pytest's exit code."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"benchmark folder not found: {folder} (the repository's benchmarks/)")
    try:
        import pytest_benchmark  # noqa: F401
    except ImportError:
        raise ImportError("--suite needs pytest-benchmark: pip install 'densecrf[bench]'") from None
    return subprocess.call([sys.executable, "-m", "pytest", folder, "--benchmark-only", "-q"])


if __name__ == "__main__":
    from .cli import main

    raise SystemExit(main(["bench", *sys.argv[1:]]))
