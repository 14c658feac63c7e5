"""The reference workload, defined once, and its timings (``densecrf bench``).

The reference workload (DESIGN.md, "Speed and memory"): a 500 x 375 image,
K = 21 labels, pydensecrf's classic parameters (Gaussian sxy 3 compat 3,
bilateral sxy 80 srgb 13 compat 10), 5 mean-field iterations. The image is
the bundled CamVid demo frame resized to the requested size (a synthetic
scene of flat regions when Pillow is missing); the probabilities are a
confident but noisy "network output" made from its annotation mapped onto K
labels, so the CRF has errors to fix along the edges. The repository's
``benchmarks/`` (``workloads.py``), ``benchmarks/ab.py`` and
``tools/golden.py`` build on :func:`reference_workload` and
:func:`reference_photo`: its arrays are part of their records, so it changes
only on purpose.

:func:`run` times, at each thread count, the bilateral lattice build, one
filter of K channels through it, one mean-field iteration (both terms) and
the whole ``refine`` call (lattice builds included). When pydensecrf is
importable its whole call is timed beside ours, after checking that the two
agree: MAP labels equal on at least 99.9 % of the pixels (the lattices are
the same approximation, so only float rounding at near-ties may differ).
Figures are medians over ``repeat`` runs after one warm-up run.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any, TypedDict

import numpy as np

from ._version import __version__
from .crf import DenseCRF2D, refine
from .features import bilateral_features, unary_from_softmax
from .lattice import PermutohedralLattice

__all__ = [
    "AGREEMENT",
    "CLASSIC",
    "REF_HEIGHT",
    "REF_LABELS",
    "REF_WIDTH",
    "ClassicParams",
    "median_time",
    "pydensecrf_refine",
    "reference_photo",
    "reference_workload",
    "run",
    "synthetic_scene",
]


class ClassicParams(TypedDict):
    """The keyword arguments of :func:`densecrf.refine` that :data:`CLASSIC` sets."""

    gaussian_sxy: float
    gaussian_compat: float
    bilateral_sxy: float
    bilateral_srgb: float
    bilateral_compat: float


#: The classic parameters (pydensecrf's README, Kraehenbuehl and Koltun 2011).
CLASSIC: ClassicParams = {
    "gaussian_sxy": 3.0,
    "gaussian_compat": 3.0,
    "bilateral_sxy": 80.0,
    "bilateral_srgb": 13.0,
    "bilateral_compat": 10.0,
}
AGREEMENT = 0.999  # share of pixels whose MAP label must equal pydensecrf's before it is timed
REF_WIDTH, REF_HEIGHT, REF_LABELS = 500, 375, 21

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def synthetic_scene(
    height: int = REF_HEIGHT, width: int = REF_WIDTH, n_labels: int = REF_LABELS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A deterministic image of flat regions, its ``[H, W]`` labels and noisy ``[H, W, K]`` probabilities."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    truth = ((xx * 5 // max(width, 1)) + 5 * (yy * 5 // max(height, 1))) % n_labels
    colours = rng.integers(0, 256, size=(n_labels, 3))
    image = np.clip(colours[truth] + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)
    return image, truth, _noisy_probs(truth, n_labels, rng)


def _noisy_probs(truth: np.ndarray, n_labels: int, rng: np.random.Generator) -> np.ndarray:
    logits = rng.normal(0.0, 1.0, (*truth.shape, n_labels))
    logits += 1.2 * (np.arange(n_labels) == truth[..., None])  # the true label is preferred, often not the MAP
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return probs.astype(np.float32)


def reference_photo(width: int = REF_WIDTH, height: int = REF_HEIGHT) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(image [H, W, 3] uint8, annotation [H, W] int64, source) of the bundled frame resized to width x height.

    Bilinear for the image, nearest for the annotation (CamVid's 11 classes,
    11 = unlabelled). None without Pillow or the bundled files.
    """
    try:
        from PIL import Image

        with Image.open(os.path.join(_DATA, "camvid_0016E5_08093.png")) as im:
            # writable: pydensecrf's bilateral term needs it
            image = np.array(im.convert("RGB").resize((width, height), Image.Resampling.BILINEAR))
        with Image.open(os.path.join(_DATA, "camvid_0016E5_08093_labels.png")) as lab:
            labels = np.asarray(lab.resize((width, height), Image.Resampling.NEAREST), dtype=np.int64)
    except (ImportError, OSError):
        return None
    return image, labels, "bundled CamVid frame, resized"


def reference_workload(
    width: int = REF_WIDTH, height: int = REF_HEIGHT, n_labels: int = REF_LABELS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, str]:
    """(image [H, W, 3] uint8, probabilities [H, W, K] float32, source) of the reference workload."""
    photo = reference_photo(width, height)
    if photo is None:
        image, _, probs = synthetic_scene(height, width, n_labels, seed)
        return image, probs, "synthetic scene"
    image, labels, source = photo
    return image, _noisy_probs(labels % n_labels, n_labels, np.random.default_rng(seed)), source


# -- timing ------------------------------------------------------------------------
def median_time(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def pydensecrf_refine(
    image: np.ndarray, probs: np.ndarray, n_iter: int, params: dict[str, float] | None = None
) -> np.ndarray:
    """The same CRF with pydensecrf: ``[H, W, K]`` marginals. ``params``: the
    keys of :data:`CLASSIC` (default: those values). Also the pydensecrf
    call of the side-by-side script in ``benchmarks/``."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax as pyd_unary_from_softmax

    p = CLASSIC if params is None else params
    h, w, k = probs.shape
    d = dcrf.DenseCRF2D(w, h, k)
    d.setUnaryEnergy(np.ascontiguousarray(pyd_unary_from_softmax(probs.transpose(2, 0, 1))))
    d.addPairwiseGaussian(sxy=p["gaussian_sxy"], compat=p["gaussian_compat"])
    d.addPairwiseBilateral(
        sxy=p["bilateral_sxy"],
        srgb=p["bilateral_srgb"],
        rgbim=np.ascontiguousarray(image),
        compat=p["bilateral_compat"],
    )
    return np.asarray(d.inference(n_iter)).reshape(k, h, w).transpose(1, 2, 0)


def _time_threads(image: np.ndarray, probs: np.ndarray, n_iter: int, t: int, repeat: int) -> dict[str, float]:
    """Median times of the four stages at ``t`` threads."""
    height, width, n_labels = probs.shape
    feats = bilateral_features(image, CLASSIC["bilateral_sxy"], CLASSIC["bilateral_srgb"])
    values = np.ascontiguousarray(probs.reshape(-1, n_labels))
    lat = PermutohedralLattice(feats, threads=t)
    crf = DenseCRF2D(width, height, n_labels, threads=t)
    crf.set_unary(unary_from_softmax(probs))
    crf.add_pairwise_gaussian(CLASSIC["gaussian_sxy"], CLASSIC["gaussian_compat"])
    crf.add_pairwise_bilateral(CLASSIC["bilateral_sxy"], CLASSIC["bilateral_srgb"], image, CLASSIC["bilateral_compat"])
    q0 = crf.start_inference()
    return {
        "lattice build": median_time(lambda: PermutohedralLattice(feats, threads=t), repeat),
        f"one filter (K={n_labels})": median_time(lambda: lat.filter(values), repeat),
        "one iteration": median_time(lambda: crf.step_inference(q0), repeat),
        "whole refine": median_time(lambda: refine(image, probs, n_iter=n_iter, threads=t, **CLASSIC), repeat),
    }


def run(
    width: int = REF_WIDTH,
    height: int = REF_HEIGHT,
    n_labels: int = REF_LABELS,
    n_iter: int = 5,
    threads: tuple[int, ...] = (1, 2),
    repeat: int = 5,
    compare: bool = True,
    out: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Times the workload; prints a table through ``out`` and returns the figures (seconds)."""
    image, probs, source = reference_workload(width, height, n_labels)
    out(
        f"densecrf {__version__} bench: {width} x {height} ({source}), K={n_labels}, classic parameters, "
        f"{n_iter} iterations; medians of {repeat} runs"
    )
    results: dict[str, Any] = {"width": width, "height": height, "n_labels": n_labels, "n_iter": n_iter, "threads": {}}
    for t in threads:
        results["threads"][t] = _time_threads(image, probs, n_iter, t, repeat)
    ours = refine(image, probs, n_iter=n_iter, threads=threads[0], **CLASSIC)
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
                out(
                    f"pydensecrf: MAP labels agree on only {100 * agree:.3f} % of pixels (< {100 * AGREEMENT:g} %): "
                    "not timed, the outputs differ"
                )
            else:
                dt = median_time(lambda: pydensecrf_refine(image, probs, n_iter), repeat)
                results["pydensecrf whole refine"] = dt
                best = min(r["whole refine"] for r in results["threads"].values())
                out(
                    f"pydensecrf whole refine (1 thread): {dt * 1e3:.1f} ms; MAP labels agree on "
                    f"{100 * agree:.3f} % of pixels; densecrf (its best thread count) is {dt / best:.1f}x faster"
                )
    return results
