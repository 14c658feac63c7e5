"""The reference workload, defined once, and its timings (``densecrf bench``).

The reference workload (DESIGN.md, "Speed and memory"): a 500 x 375 photo,
K = 21 labels, pydensecrf's classic parameters (Gaussian sxy 3 compat 3,
bilateral sxy 80 srgb 13 compat 10), 5 mean-field iterations. The photo is a
CamVid frame (480 x 360) and its annotation scaled to exactly 500 x 375: the
bundled demo frame by default; the repository's ``benchmarks/`` pass the
frame they read from the CamVid data (:func:`reference_workload`'s
``frame``). Other sizes are mirror-tiled (larger) or cropped (smaller) from
the 500 x 375 version, so the statistics per pixel (edges, colours, lattice
occupancy) stay those of one photo whatever the size. Without Pillow a
synthetic photo stands in, and ``Workload.source`` says which one was used.

Probabilities are softmax(logits) with logits = a per-region label
preference (the annotation mapped onto K labels) plus smooth noise plus
pixel noise: a confident but imperfect "network output" whose errors the CRF
can fix along the image's edges.

:func:`run` times, at each thread count, the bilateral lattice build, one
filter of K channels through it, one mean-field iteration (both terms) and
the whole ``refine`` call (lattice builds included). When pydensecrf is
importable its whole call is timed beside ours, after checking that the two
agree: MAP labels equal on at least 99.9 % of the pixels (the lattices are
the same approximation, so only float rounding at near-ties may differ).
Figures are medians over ``repeat`` runs after one warm-up run.
"""

from __future__ import annotations

import dataclasses
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
    "Workload",
    "bundled_frame",
    "median_time",
    "probs_from_regions",
    "pydensecrf_refine",
    "reference_photo",
    "reference_workload",
    "run",
    "synthetic_photo",
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

#: (image [H, W, 3] uint8, labels [H, W] integers, source name): a photo and its annotation.
Frame = tuple[np.ndarray, np.ndarray, str]


@dataclasses.dataclass
class Workload:
    """One benchmark input.

    image: ``[H, W, C]`` uint8 (C = 3 for photos; a feature-dimension sweep may use other C).
    probs: ``[H, W, K]`` float32, rows summing to one.
    params: the CRF parameters (keys of :data:`CLASSIC`).
    source: where the image came from ("camvid:<file>" or "synthetic").
    """

    name: str
    image: np.ndarray
    probs: np.ndarray
    params: ClassicParams
    source: str

    @property
    def height(self) -> int:
        return int(self.probs.shape[0])

    @property
    def width(self) -> int:
        return int(self.probs.shape[1])

    @property
    def n_pixels(self) -> int:
        return self.height * self.width

    @property
    def n_labels(self) -> int:
        return int(self.probs.shape[2])

    @property
    def feature_dim(self) -> int:
        """Dimension of the bilateral term's features: 2 positions + C channels."""
        return 2 + int(self.image.shape[2])

    def save(self, path: str) -> None:
        """Writes the arrays to ``path`` (an .npz, uncompressed) for a child process."""
        np.savez(path, image=self.image, probs=self.probs)


# -- photos ------------------------------------------------------------------------
def bundled_frame() -> Frame | None:
    """The bundled demo frame and its annotation, or None without Pillow."""
    try:
        from PIL import Image
    except ImportError:
        return None
    name = "camvid_0016E5_08093.png"
    with Image.open(os.path.join(_DATA, name)) as im:
        image = np.asarray(im.convert("RGB"))
    with Image.open(os.path.join(_DATA, "camvid_0016E5_08093_labels.png")) as lab:
        labels = np.asarray(lab)
    return image, labels, f"camvid:{name}"


def _resize(a: np.ndarray, width: int, height: int, nearest: bool) -> np.ndarray:
    from PIL import Image

    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(a).resize((width, height), resample))


def synthetic_photo(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic photo-like image: (image [H, W, 3] uint8, regions [H, W] uint8).

    Sky-like gradient, a ground plane, overlapping rectangles and ellipses of
    distinct colours (hard edges), a sinusoidal texture and mild noise.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = 90 + 60 * yy / height
    img[..., 1] = 120 + 40 * xx / width
    img[..., 2] = 200 - 80 * yy / height
    regions = np.zeros((height, width), np.uint8)
    ground = yy > 0.6 * height
    img[ground] = (110, 90, 100)
    regions[ground] = 1
    for r in range(2, 14):
        cy, cx = rng.uniform(0.1, 0.95) * height, rng.uniform(0.0, 1.0) * width
        ry, rx = rng.uniform(0.05, 0.25) * height, rng.uniform(0.03, 0.2) * width
        if r % 2:
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
        else:
            mask = (np.abs(yy - cy) < ry) & (np.abs(xx - cx) < rx)
        img[mask] = rng.uniform(20, 235, 3)
        regions[mask] = r
    img += 12 * np.sin(xx / 3.1 + 2 * np.sin(yy / 17.0))[..., None]
    img += rng.normal(0, 5, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), regions


def _tile(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """Mirror-tiles (numpy 'symmetric' padding, repeatedly) or crops ``a`` to height x width."""
    while a.shape[0] < height or a.shape[1] < width:
        ph = min(max(height - a.shape[0], 0), a.shape[0])
        pw = min(max(width - a.shape[1], 0), a.shape[1])
        pad = [(0, ph), (0, pw)] + [(0, 0)] * (a.ndim - 2)
        a = np.pad(a, pad, mode="symmetric")
    return a[:height, :width]


def reference_photo(
    width: int = REF_WIDTH, height: int = REF_HEIGHT, frame: Frame | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """(image [H, W, 3] uint8, regions [H, W], source) of the reference photo at width x height.

    ``frame``: the photo and its annotation (default: :func:`bundled_frame`),
    scaled to 500 x 375 (bilinear image, nearest labels), then tiled or
    cropped to the size asked for. A synthetic photo without Pillow.
    """
    if frame is None:
        frame = bundled_frame()
    if frame is not None:
        image, labels, source = frame
        image = _resize(np.asarray(image), REF_WIDTH, REF_HEIGHT, nearest=False)
        labels = _resize(np.asarray(labels), REF_WIDTH, REF_HEIGHT, nearest=True)
    else:
        image, labels = synthetic_photo(REF_HEIGHT, REF_WIDTH)
        source = "synthetic"
    if (width, height) != (REF_WIDTH, REF_HEIGHT):
        image, labels = _tile(image, height, width), _tile(labels, height, width)
    # Copies: PIL's arrays are read-only, and pydensecrf's bilateral term takes a writable uint8 buffer only.
    return np.array(image, order="C"), np.array(labels, order="C"), source


# -- probabilities -----------------------------------------------------------------
def _bilinear_upsample(coarse: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear interpolation of ``[h, w, C]`` onto ``[height, width, C]`` (corners aligned)."""
    h, w = coarse.shape[:2]
    y = np.linspace(0.0, h - 1.0, height)
    x = np.linspace(0.0, w - 1.0, width)
    y0 = np.minimum(y.astype(np.int64), h - 2) if h > 1 else np.zeros(height, np.int64)
    x0 = np.minimum(x.astype(np.int64), w - 2) if w > 1 else np.zeros(width, np.int64)
    fy = (y - y0)[:, None, None].astype(np.float32)
    fx = (x - x0)[None, :, None].astype(np.float32)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    c = coarse.astype(np.float32)
    top = c[y0][:, x0] * (1 - fx) + c[y0][:, x1] * fx
    bottom = c[y1][:, x0] * (1 - fx) + c[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def probs_from_regions(
    regions: np.ndarray,
    n_labels: int,
    *,
    seed: int = 0,
    preference: float = 3.5,
    smooth_noise: float = 1.0,
    pixel_noise: float = 1.0,
) -> np.ndarray:
    """``[H, W, K]`` float32 softmax probabilities aligned with ``regions``.

    logits[l] = preference * [l == regions % K] + smooth noise (a coarse
    random field, one cell per 24 pixels, bilinearly upsampled) + pixel noise.
    Computed in row blocks so that 2048^2 x 64 needs no float64 copy.
    """
    h, w = regions.shape
    k = int(n_labels)
    rng = np.random.default_rng(seed)
    cell = 24
    coarse = rng.normal(0.0, smooth_noise, (h // cell + 2, w // cell + 2, k)).astype(np.float32)
    out = np.empty((h, w, k), np.float32)
    block = max(1, (1 << 22) // max(w * k, 1))
    ys = np.linspace(0.0, coarse.shape[0] - 1.0, h)
    for r0 in range(0, h, block):
        r1 = min(h, r0 + block)
        # Interpolate only the coarse rows this block touches.
        lo = int(np.floor(ys[r0]))
        hi = min(coarse.shape[0], int(np.floor(ys[r1 - 1])) + 2)
        sub = coarse[lo:hi]
        y = ys[r0:r1] - lo
        y0 = np.minimum(y.astype(np.int64), max(sub.shape[0] - 2, 0))
        y1 = np.minimum(y0 + 1, sub.shape[0] - 1)
        fy = (y - y0).astype(np.float32)[:, None, None]
        rows = sub[y0] * (1 - fy) + sub[y1] * fy  # [rows, w_coarse, K]
        logits = _bilinear_upsample(rows.transpose(1, 0, 2), w, r1 - r0).transpose(1, 0, 2)
        logits = logits + rng.normal(0.0, pixel_noise, logits.shape).astype(np.float32)
        lab = regions[r0:r1].astype(np.int64) % k
        np.put_along_axis(
            logits, lab[..., None], np.take_along_axis(logits, lab[..., None], axis=2) + np.float32(preference), axis=2
        )
        logits -= logits.max(axis=2, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=2, keepdims=True)
        out[r0:r1] = logits
    return out


def reference_workload(
    width: int = REF_WIDTH,
    height: int = REF_HEIGHT,
    n_labels: int = REF_LABELS,
    *,
    frame: Frame | None = None,
    seed: int = 0,
) -> Workload:
    """The reference workload (at another size or K if asked): photo, probabilities, classic parameters."""
    image, regions, source = reference_photo(width, height, frame)
    probs = probs_from_regions(regions, n_labels, seed=seed)
    return Workload(f"ref-{width}x{height}-K{n_labels}", image, probs, ClassicParams(**CLASSIC), source)


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


def _time_threads(w: Workload, n_iter: int, t: int, repeat: int) -> dict[str, float]:
    """Median times of the four stages at ``t`` threads."""
    feats = bilateral_features(w.image, CLASSIC["bilateral_sxy"], CLASSIC["bilateral_srgb"])
    values = np.ascontiguousarray(w.probs.reshape(-1, w.n_labels))
    lat = PermutohedralLattice(feats, threads=t)
    crf = DenseCRF2D(w.width, w.height, w.n_labels, threads=t)
    crf.set_unary(unary_from_softmax(w.probs))
    crf.add_pairwise_gaussian(CLASSIC["gaussian_sxy"], CLASSIC["gaussian_compat"])
    crf.add_pairwise_bilateral(
        CLASSIC["bilateral_sxy"], CLASSIC["bilateral_srgb"], w.image, CLASSIC["bilateral_compat"]
    )
    q0 = crf.start_inference()
    return {
        "lattice build": median_time(lambda: PermutohedralLattice(feats, threads=t), repeat),
        f"one filter (K={w.n_labels})": median_time(lambda: lat.filter(values), repeat),
        "one iteration": median_time(lambda: crf.step_inference(q0), repeat),
        "whole refine": median_time(lambda: refine(w.image, w.probs, n_iter=n_iter, threads=t, **CLASSIC), repeat),
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
    w = reference_workload(width, height, n_labels)
    out(
        f"densecrf {__version__} bench: {width} x {height} ({w.source}), K={n_labels}, classic parameters, "
        f"{n_iter} iterations; medians of {repeat} runs"
    )
    results: dict[str, Any] = {"width": width, "height": height, "n_labels": n_labels, "n_iter": n_iter, "threads": {}}
    for t in threads:
        results["threads"][t] = _time_threads(w, n_iter, t, repeat)
    ours = refine(w.image, w.probs, n_iter=n_iter, threads=threads[0], **CLASSIC)
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
            theirs = pydensecrf_refine(w.image, w.probs, n_iter)
            agree = float((theirs.argmax(-1) == ours.argmax(-1)).mean())
            results["pydensecrf agreement"] = agree
            if agree < AGREEMENT:
                out(
                    f"pydensecrf: MAP labels agree on only {100 * agree:.3f} % of pixels (< {100 * AGREEMENT:g} %): "
                    "not timed, the outputs differ"
                )
            else:
                dt = median_time(lambda: pydensecrf_refine(w.image, w.probs, n_iter), repeat)
                results["pydensecrf whole refine"] = dt
                best = min(r["whole refine"] for r in results["threads"].values())
                out(
                    f"pydensecrf whole refine (1 thread): {dt * 1e3:.1f} ms; MAP labels agree on "
                    f"{100 * agree:.3f} % of pixels; densecrf (its best thread count) is {dt / best:.1f}x faster"
                )
    return results
