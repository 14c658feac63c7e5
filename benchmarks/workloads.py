"""Deterministic inputs for the benchmarks: the reference workload and the sweep generators.

The reference workload (500 x 375, K = 21, classic parameters) is
:func:`densecrf.bench.reference_workload`, the one ``densecrf bench``,
``benchmarks/ab.py`` and ``tools/golden.py`` use: the bundled CamVid frame
and a noisy "network output" made from its annotation. This module wraps it
as a :class:`Workload` and adds what only the scripts here need: the sweeps
over image size (N), label count (K) and feature dimension (d), built on the
same photo (:func:`densecrf.bench.reference_photo` at 500 x 375, mirror-tiled
or cropped to other sizes so that the statistics per pixel stay those of one
photo), with probabilities computed in row blocks (:func:`probs_from_regions`)
so that 2048^2 x 64 needs no float64 copy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from densecrf.bench import (
    CLASSIC,
    REF_HEIGHT,
    REF_LABELS,
    REF_WIDTH,
    reference_photo,
    reference_workload,
    synthetic_scene,
)

__all__ = [
    "CLASSIC",
    "REF_HEIGHT",
    "REF_LABELS",
    "REF_WIDTH",
    "Workload",
    "by_feature_dim",
    "by_labels",
    "by_size",
    "load",
    "photo",
    "probs_from_regions",
    "reference",
]


@dataclasses.dataclass
class Workload:
    """One benchmark input.

    image: ``[H, W, C]`` uint8 (C = 3 for photos; the d sweep uses other C).
    probs: ``[H, W, K]`` float32, rows summing to one.
    params: the CRF parameters (keys of :data:`CLASSIC`).
    source: where the image came from (densecrf.bench's source string).
    """

    name: str
    image: np.ndarray
    probs: np.ndarray
    params: dict
    source: str

    @property
    def height(self) -> int:
        return self.probs.shape[0]

    @property
    def width(self) -> int:
        return self.probs.shape[1]

    @property
    def n_pixels(self) -> int:
        return self.height * self.width

    @property
    def n_labels(self) -> int:
        return self.probs.shape[2]

    @property
    def feature_dim(self) -> int:
        """Dimension of the bilateral term's features: 2 positions + C channels."""
        return 2 + self.image.shape[2]

    def save(self, path: str) -> None:
        """Writes the arrays to ``path`` (an .npz, uncompressed) for a child process."""
        np.savez(path, image=self.image, probs=self.probs)


# -- images ------------------------------------------------------------------


def photo(width: int = REF_WIDTH, height: int = REF_HEIGHT):
    """(image [H, W, 3] uint8, regions [H, W], source): the reference photo and its annotation.

    densecrf.bench's photo at 500 x 375; for other sizes mirror-tiled
    (larger) or cropped (smaller) from it. Without Pillow, densecrf.bench's
    synthetic scene stands in.
    """
    ref = reference_photo(REF_WIDTH, REF_HEIGHT)
    if ref is None:
        image, labels, _ = synthetic_scene(REF_HEIGHT, REF_WIDTH, 256)
        source = "synthetic scene"
    else:
        image, labels, source = ref
    if (width, height) != (REF_WIDTH, REF_HEIGHT):
        image, labels = _tile(image, height, width), _tile(labels, height, width)
    # Copies: pydensecrf's bilateral term takes a writable uint8 buffer only.
    return np.array(image, order="C"), np.array(labels, order="C"), source


def _tile(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """Mirror-tiles (numpy 'symmetric' padding, repeatedly) or crops ``a`` to height x width."""
    while a.shape[0] < height or a.shape[1] < width:
        ph = min(max(height - a.shape[0], 0), a.shape[0])
        pw = min(max(width - a.shape[1], 0), a.shape[1])
        pad = [(0, ph), (0, pw)] + [(0, 0)] * (a.ndim - 2)
        a = np.pad(a, pad, mode="symmetric")
    return a[:height, :width]


# -- probabilities -----------------------------------------------------------


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


# -- workloads ---------------------------------------------------------------


def reference(n_labels: int = REF_LABELS) -> Workload:
    """The reference workload: densecrf.bench.reference_workload as a Workload."""
    image, probs, source = reference_workload(REF_WIDTH, REF_HEIGHT, n_labels)
    return Workload(f"ref-{REF_WIDTH}x{REF_HEIGHT}-K{n_labels}", image, probs, dict(CLASSIC), source)


def by_size(side: int, n_labels: int = REF_LABELS) -> Workload:
    """A side x side image (mirror-tiled photo), for the N sweep."""
    image, regions, source = photo(side, side)
    probs = probs_from_regions(regions, n_labels, seed=side)
    return Workload(f"N-{side}x{side}", image, probs, dict(CLASSIC), source)


def by_labels(n_labels: int, width: int = REF_WIDTH, height: int = REF_HEIGHT) -> Workload:
    """The reference photo with K labels, for the K sweep."""
    image, regions, source = photo(width, height)
    probs = probs_from_regions(regions, n_labels, seed=n_labels)
    return Workload(f"K-{n_labels}", image, probs, dict(CLASSIC), source)


def by_feature_dim(d: int, width: int = REF_WIDTH, height: int = REF_HEIGHT, n_labels: int = REF_LABELS) -> Workload:
    """The reference photo whose bilateral term has feature dimension ``d`` (2..8).

    The image gets C = d - 2 channels: R, G, B, then the R, G, B of the pixel
    4 rows down and 4 columns right (a 2-pixel patch feature, genuinely
    6-dimensional, unlike a linear mix of RGB). d = 2 leaves positions only.
    """
    if not 2 <= d <= 8:
        raise ValueError(f"d must be in 2..8, got {d}")
    image, regions, source = photo(width, height)
    shifted = np.pad(image, ((0, 4), (0, 4), (0, 0)), mode="symmetric")[4:, 4:]
    channels = np.concatenate([image, shifted], axis=2)[..., : d - 2]
    probs = probs_from_regions(regions, n_labels, seed=100 + d)
    return Workload(f"d-{d}", np.ascontiguousarray(channels), probs, dict(CLASSIC), source)


def load(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(image, probs) from a file written by :meth:`Workload.save`."""
    with np.load(path) as z:
        return z["image"], z["probs"]
