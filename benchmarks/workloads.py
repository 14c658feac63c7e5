"""Deterministic inputs for the benchmarks: the reference workload on the CamVid data, and the sweeps.

The reference workload itself (photo scaling and tiling, probabilities,
parameters, :class:`Workload`) is defined once, in :mod:`densecrf.bench`;
this module supplies the photo the benchmarks use: one CamVid frame read at
run time from ``$DENSECRF_CAMVID`` (default ``/work/shared/data/camvid``),
never copied into the repository, and the sweep generators (N, K, d) built
on the same definitions. Without the data :mod:`densecrf.bench` falls back
to its bundled frame (``Workload.source`` says which one was used).
"""

from __future__ import annotations

import glob
import os

import numpy as np

from densecrf.bench import (  # noqa: F401  (CLASSIC, Workload, ...: the names the scripts use from here)
    CLASSIC,
    REF_HEIGHT,
    REF_LABELS,
    REF_WIDTH,
    Frame,
    Workload,
    probs_from_regions,
    reference_photo,
    reference_workload,
    synthetic_photo,
)

CAMVID_DIR = os.environ.get("DENSECRF_CAMVID", "/work/shared/data/camvid")


def _camvid_frame() -> Frame | None:
    """(image [360, 480, 3] uint8, labels [360, 480] uint8, "camvid:<file>") or None."""
    files = sorted(glob.glob(os.path.join(CAMVID_DIR, "val", "*.png")))
    if not files:
        return None
    try:
        from PIL import Image
    except ImportError:
        return None
    # The 11th frame: a street with cars, poles and pavement, more edges than the first.
    path = files[min(10, len(files) - 1)]
    ann = os.path.join(CAMVID_DIR, "valannot", os.path.basename(path))
    if not os.path.exists(ann):
        return None
    image = np.asarray(Image.open(path).convert("RGB"))
    return image, np.asarray(Image.open(ann)), f"camvid:{os.path.basename(path)}"


def photo(width: int = REF_WIDTH, height: int = REF_HEIGHT):
    """(image [H, W, 3] uint8, regions [H, W] uint8, source): the CamVid frame as densecrf.bench.reference_photo."""
    return reference_photo(width, height, _camvid_frame())


# -- workloads ---------------------------------------------------------------

def reference(n_labels: int = REF_LABELS) -> Workload:
    """The reference workload: 500 x 375 photo, K = 21, classic parameters."""
    return reference_workload(n_labels=n_labels, frame=_camvid_frame())


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
