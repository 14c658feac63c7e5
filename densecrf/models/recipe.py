"""Training data on the device: frames held as uint8 tensors, batches augmented there.

The fold trainer (:mod:`densecrf.models.folds`) decodes a fold's frames once
into ``[N, 3, H, W]`` uint8 images and ``[N, H, W]`` uint8 labels on the
training device, and draws each batch with one ``grid_sample`` per tensor:
random scale, crop (padding marked as the ignore index) and horizontal flip,
then photometric jitter. Nothing here reads files per step, so a GPU is not
left waiting for a CPU loader, and the same code runs on a CPU.

Also here: median-frequency class weights and the deterministic sparse
("scribble") labels of the weakly-supervised experiment.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from . import camvid


@dataclass(frozen=True)
class Augment:
    """What a training batch goes through (all random draws from the trainer's generator).

    ``crop`` = (W, H) of the training crops, in pixels of the scaled frame;
    ``scale`` = (lo, hi): each frame is resized by a factor drawn uniformly
    in that range before the crop (a crop larger than the scaled frame is
    padded with ignored pixels); ``flip``: horizontal flips with probability
    one half; ``jitter``: brightness, contrast and saturation each scaled by
    a factor drawn uniformly in 1 +- jitter.
    """

    crop: tuple[int, int]
    scale: tuple[float, float] = (1.0, 1.0)
    flip: bool = True
    jitter: float = 0.0


#: Today's recipe (the bundled network's): whole frames at 240 x 180, flips only.
CLASSIC = Augment(crop=(240, 180), scale=(1.0, 1.0), flip=True, jitter=0.0)
#: The stronger recipe: full-resolution 480 x 360 crops of frames scaled 0.5-2x, flips, photometric jitter.
STRONG = Augment(crop=(480, 360), scale=(0.5, 2.0), flip=True, jitter=0.25)


class FrameBank:
    """A split's frames on one device: ``images`` uint8 [N, 3, H, W], ``labels`` uint8 [N, H, W].

    ``size`` = (W, H) resizes at load time (image bilinear, labels nearest,
    with Pillow, as :func:`densecrf.models.camvid.load_pair` does);
    ``label_fn`` maps each label array (e.g. to sparse labels) before it is stored.
    """

    def __init__(self, pairs, device="cpu", size=None, label_fn=None, workers: int = 1):
        if not pairs:
            raise ValueError("no frames to load (empty list of (image, label) pairs)")
        load = partial(_load, size=size, label_fn=label_fn)
        if workers > 1:  # label_fn may be slow (scribbles: about 0.25 s a frame): decode in processes
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers) as pool:
                loaded = list(pool.map(load, pairs, chunksize=8))
        else:
            loaded = [load(pair) for pair in pairs]
        imgs, labs = [], []
        for (image_path, _), (image, labels) in zip(pairs, loaded, strict=True):
            if imgs and image.shape != imgs[0].shape:
                raise ValueError(f"{image_path} is {image.shape[:2]}, the first frame {imgs[0].shape[:2]}")
            imgs.append(image)
            labs.append(labels.astype(np.uint8))
        self.paths = [p for p, _ in pairs]
        self.images = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous().to(device)
        self.labels = torch.from_numpy(np.stack(labs)).to(device)

    def __len__(self) -> int:
        return self.images.shape[0]


def _load(pair, size, label_fn):
    image, labels = camvid.load_pair(*pair, size=size)
    return image, (label_fn(labels) if label_fn is not None else labels)


def _affine(n, src_hw, crop, aug: Augment, gen: torch.Generator):
    """Per-sample 2x3 matrices for ``affine_grid``: output crop pixels -> input frame (normalised)."""
    h, w = src_hw
    cw, ch = crop
    lo, hi = aug.scale
    s = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)
    # the crop covers cw/s x ch/s input pixels; its corner is uniform over where it fits
    # (over where the frame fits inside it, when the scaled frame is smaller than the crop)
    span_x, span_y = cw / s, ch / s
    ux, uy = torch.rand(n, generator=gen, dtype=torch.float64), torch.rand(n, generator=gen, dtype=torch.float64)
    x0 = torch.minimum(torch.zeros_like(s), w - span_x) + ux * (w - span_x).abs()
    y0 = torch.minimum(torch.zeros_like(s), h - span_y) + uy * (h - span_y).abs()
    flip = torch.rand(n, generator=gen, dtype=torch.float64) < 0.5 if aug.flip else torch.zeros(n, dtype=torch.bool)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = torch.where(flip, -1.0, 1.0) * span_x / w
    theta[:, 0, 2] = (2 * x0 + span_x) / w - 1
    theta[:, 1, 1] = span_y / h
    theta[:, 1, 2] = (2 * y0 + span_y) / h - 1
    return theta


def sample_batch(bank: FrameBank, index, aug: Augment, gen: torch.Generator):
    """A training batch from frames ``index``: images float [B, 3, H, W] in 0..1, labels int64 [B, H, W]
    (the ignore index where a crop runs past its frame) and ``inside`` float [B, H, W] (1 on pixels of
    the frame, 0 on the padding), all on the bank's device."""
    idx = torch.as_tensor(index, dtype=torch.long, device=bank.images.device)
    img = bank.images[idx].float() / 255.0
    lab = bank.labels[idx]
    n, _, h, w = img.shape
    cw, ch = aug.crop
    if (cw, ch) == (w, h) and aug.scale == (1.0, 1.0):  # whole frames: flips only, exact
        if aug.flip:
            flip = (torch.rand(n, generator=gen) < 0.5).to(img.device)
            img = torch.where(flip[:, None, None, None], img.flip(3), img)
            lab = torch.where(flip[:, None, None], lab.flip(2), lab)
        lab = lab.long()
        inside = torch.ones(lab.shape, device=img.device)
    else:
        theta = _affine(n, (h, w), (cw, ch), aug, gen).to(img.device, torch.float32)
        grid = F.affine_grid(theta, [n, 1, ch, cw], align_corners=False)
        img = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
        # labels + 1 so that 0 marks outside the frame (zeros padding), then -> ignore index
        shifted = F.grid_sample((lab.float() + 1).unsqueeze(1), grid, mode="nearest", align_corners=False)
        shifted = shifted.squeeze(1).round().long()
        inside = (shifted > 0).float()
        lab = torch.where(shifted == 0, camvid.IGNORE_INDEX, shifted - 1)
    if aug.jitter:
        j = aug.jitter

        def factor():
            return (1 - j + 2 * j * torch.rand(n, 1, 1, 1, generator=gen)).to(img.device)

        img = img * factor()  # brightness
        grey = img.mean(dim=(1, 2, 3), keepdim=True)
        img = (img - grey) * factor() + grey  # contrast
        lum = (0.299 * img[:, 0:1] + 0.587 * img[:, 1:2] + 0.114 * img[:, 2:3]).expand_as(img)
        img = (img - lum) * factor() + lum  # saturation
        img = img.clamp(0.0, 1.0)
    return img.contiguous(), lab.contiguous(), inside


def median_frequency_weights(labels: torch.Tensor, n_classes: int, ignore_index: int) -> torch.Tensor:
    """Median-frequency balancing (Eigen & Fergus, ICCV 2015; SegNet's CamVid weights):
    freq(c) = pixels of c / pixels of the frames where c appears; weight(c) = median(freq) / freq(c).
    A class absent from every frame gets weight 0."""
    lab = labels.reshape(labels.shape[0], -1).long()
    counts = torch.stack([(lab == c).sum(1) for c in range(n_classes)], 1).double()  # [N, K]
    valid = (lab != ignore_index).sum(1, keepdim=True).double()
    present = counts > 0
    total = (valid * present).sum(0)
    freq = torch.where(total > 0, counts.sum(0) / total.clamp(min=1), torch.zeros_like(total))
    # the middle value, or the mean of the two middle ones (torch.median would take the lower one)
    med = freq[freq > 0].quantile(0.5) if (freq > 0).any() else torch.tensor(1.0, dtype=torch.float64)
    return torch.where(freq > 0, med / freq.clamp(min=1e-12), torch.zeros_like(freq)).float()


def scribbles(labels: np.ndarray, n_classes: int, ignore_index: int, min_pixels: int = 50) -> np.ndarray:
    """Deterministic scribble-like sparse labels from a dense label map.

    Each 8-connected region of each class with at least ``min_pixels``
    pixels keeps its morphological skeleton (scikit-image's ``skeletonize``,
    one pixel wide) labelled with its class; every other pixel becomes
    ``ignore_index``. Smaller regions get no stroke, as an annotator's
    scribble would miss most specks. About 1-2 % of a CamVid frame's pixels
    stay labelled.
    """
    from scipy import ndimage
    from skimage.morphology import skeletonize

    out = np.full(labels.shape, ignore_index, dtype=np.uint8)
    eight = np.ones((3, 3), dtype=bool)
    for c in range(n_classes):
        mask = labels == c
        if not mask.any():
            continue
        comp, n = ndimage.label(mask, structure=eight)
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        keep = sizes >= min_pixels
        keep[0] = False
        big = keep[comp]
        if big.any():
            out[skeletonize(big) & big] = c
    return out
