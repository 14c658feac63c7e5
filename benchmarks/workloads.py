"""Deterministic inputs for the benchmarks: the reference workload and the sweep generators.

The reference workload is the PASCAL-VOC-sized case of DESIGN.md ("Speed and
memory"): a 500 x 375 photo, K = 21 labels, a Gaussian term (sxy 3, compat 3)
and a bilateral term (sxy 80, srgb 13, compat 10). The photo is one CamVid
frame (480 x 360, scaled by 25/24 to exactly 500 x 375) read at run time from
``$DENSECRF_CAMVID`` (default ``/work/shared/data/camvid``); the data never
enters the repository. Without it a synthetic image with regions, edges and
texture stands in, and ``Workload.source`` says which one was used.

Probabilities are softmax(logits) with logits = a per-region label preference
(the CamVid annotation, or the synthetic regions, mapped onto K labels) plus
smooth noise plus pixel noise: a confident but imperfect "network output"
whose errors the CRF can fix along the image's edges.
"""

from __future__ import annotations

import dataclasses
import glob
import os

import numpy as np

# The classic parameters (pydensecrf's README, Kraehenbuehl and Koltun 2011):
# one definition for the package's `densecrf bench` and these scripts.
from densecrf.bench import CLASSIC

CAMVID_DIR = os.environ.get("DENSECRF_CAMVID", "/work/shared/data/camvid")
REF_WIDTH, REF_HEIGHT, REF_LABELS = 500, 375, 21


@dataclasses.dataclass
class Workload:
    """One benchmark input.

    image: ``[H, W, C]`` uint8 (C = 3 for photos; the d sweep uses other C).
    probs: ``[H, W, K]`` float32, rows summing to one.
    params: the CRF parameters (keys of :data:`CLASSIC`).
    source: where the image came from ("camvid:<file>" or "synthetic").
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

def _camvid_frame():
    """(image [360, 480, 3] uint8, labels [360, 480] uint8, file name) or None."""
    files = sorted(glob.glob(os.path.join(CAMVID_DIR, "val", "*.png")))
    if not files:
        return None
    try:
        from PIL import Image
    except ImportError:
        return None
    # The 11th frame: a street with cars, poles and pavement, more edges than the first.
    path = files[min(10, len(files) - 1)]
    image = np.asarray(Image.open(path).convert("RGB"))
    ann = os.path.join(CAMVID_DIR, "valannot", os.path.basename(path))
    labels = np.asarray(Image.open(ann)) if os.path.exists(ann) else None
    return image, labels, os.path.basename(path)


def _resize(a: np.ndarray, width: int, height: int, nearest: bool) -> np.ndarray:
    from PIL import Image

    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(a).resize((width, height), resample))


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


def synthetic_photo(height: int, width: int, seed: int = 0):
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


def photo(width: int = REF_WIDTH, height: int = REF_HEIGHT):
    """(image [H, W, 3] uint8, regions [H, W] uint8, source).

    The CamVid frame scaled to 500 x 375 when asked for that size; for other
    sizes it is mirror-tiled (larger) or cropped (smaller) from the 500 x 375
    version, so that the statistics per pixel (edges, colours, lattice
    occupancy) stay those of one photo whatever the size.
    """
    frame = _camvid_frame()
    if frame is not None and frame[1] is not None:
        image, labels, name = frame
        image = _resize(image, REF_WIDTH, REF_HEIGHT, nearest=False)
        labels = _resize(labels, REF_WIDTH, REF_HEIGHT, nearest=True)
        source = f"camvid:{name}"
    else:
        image, labels = synthetic_photo(REF_HEIGHT, REF_WIDTH)
        source = "synthetic"
    if (width, height) != (REF_WIDTH, REF_HEIGHT):
        image, labels = _tile(image, height, width), _tile(labels, height, width)
    # Copies: PIL's arrays are read-only, and pydensecrf's bilateral term
    # takes a writable uint8 buffer only.
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

def probs_from_regions(regions: np.ndarray, n_labels: int, *, seed: int = 0,
                       preference: float = 3.5, smooth_noise: float = 1.0,
                       pixel_noise: float = 1.0) -> np.ndarray:
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
        rows = sub[y0] * (1 - fy) + sub[y1] * fy                      # [rows, w_coarse, K]
        logits = _bilinear_upsample(rows.transpose(1, 0, 2), w, r1 - r0).transpose(1, 0, 2)
        logits = logits + rng.normal(0.0, pixel_noise, logits.shape).astype(np.float32)
        lab = (regions[r0:r1].astype(np.int64) % k)
        np.put_along_axis(logits, lab[..., None],
                          np.take_along_axis(logits, lab[..., None], axis=2) + np.float32(preference), axis=2)
        logits -= logits.max(axis=2, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=2, keepdims=True)
        out[r0:r1] = logits
    return out


# -- workloads ---------------------------------------------------------------

def reference(n_labels: int = REF_LABELS) -> Workload:
    """The reference workload: 500 x 375 photo, K = 21, classic parameters."""
    image, regions, source = photo()
    probs = probs_from_regions(regions, n_labels)
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


def by_feature_dim(d: int, width: int = REF_WIDTH, height: int = REF_HEIGHT,
                   n_labels: int = REF_LABELS) -> Workload:
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
