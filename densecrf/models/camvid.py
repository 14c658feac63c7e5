"""CamVid (11 classes, SegNet layout): train/, trainannot/, val/, valannot/ of PNGs.

Index 11 (Unlabelled) is the ignore index. The data are read from the given
folder at run time; nothing of the dataset lives in this package.
"""

from __future__ import annotations

import os

import numpy as np

CLASSES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
IGNORE_INDEX = 11
PALETTE = np.array(
    [
        [128, 128, 128],
        [128, 0, 0],
        [192, 192, 128],
        [128, 64, 128],
        [60, 40, 222],
        [128, 128, 0],
        [192, 128, 128],
        [64, 64, 128],
        [64, 0, 128],
        [64, 64, 0],
        [0, 128, 192],
        [0, 0, 0],
    ],
    dtype=np.uint8,
)


def list_split(root: str, split: str) -> list[tuple[str, str]]:
    """(image, label) paths of a split ('train' or 'val'), sorted by name."""
    img_dir, lab_dir = os.path.join(root, split), os.path.join(root, split + "annot")
    if not os.path.isdir(img_dir) or not os.path.isdir(lab_dir):
        raise FileNotFoundError(f"{root} has no {split}/ and {split}annot/ folders (CamVid layout)")
    # images as PNG (the dataset's own) or JPEG (a re-encoded copy); labels always PNG, matched by stem
    names = sorted(n for n in os.listdir(img_dir) if os.path.splitext(n)[1].lower() in (".png", ".jpg", ".jpeg"))
    pairs = [(os.path.join(img_dir, n), os.path.join(lab_dir, os.path.splitext(n)[0] + ".png")) for n in names]
    missing = [lab for _, lab in pairs if not os.path.exists(lab)]
    if missing:
        raise FileNotFoundError(f"label file missing for {len(missing)} images, e.g. {missing[0]}")
    return pairs


#: The three drives of CamVid's train and val splits (file names start with them).
DRIVES = ("0001TP", "0006R0", "0016E5")

#: Fixed cross-drive folds (issue "A bundled network that holds up"): each
#: trains on two drives of the train split and holds the third out for
#: reporting only. Val (101 frames of 0016E5, whose other 204 frames are in
#: train) never trains a fold model; its figures are near-domain ones.
FOLDS = {
    "A": {"train": ("0001TP", "0016E5"), "heldout": "0006R0"},
    "B": {"train": ("0006R0", "0016E5"), "heldout": "0001TP"},
}


def drive_of(path: str) -> str:
    """The drive id of a CamVid frame (the file name's prefix before '_')."""
    name = os.path.basename(path)
    drive = name.split("_", 1)[0]
    if drive not in DRIVES:
        raise ValueError(f"{path}: file name does not start with a CamVid drive id {DRIVES}")
    return drive


def fold_split(root: str, fold: str, part: str) -> list[tuple[str, str]]:
    """(image, label) pairs of a fold's ``part``: 'train' (its two drives of the train split),
    'heldout' (its held-out drive, from the train split) or 'val' (the val split, unchanged)."""
    if fold not in FOLDS:
        raise ValueError(f"fold must be one of {sorted(FOLDS)}, got {fold!r}")
    if part == "val":
        return list_split(root, "val")
    if part not in ("train", "heldout"):
        raise ValueError(f"part must be 'train', 'heldout' or 'val', got {part!r}")
    drives = FOLDS[fold]["train"] if part == "train" else (FOLDS[fold]["heldout"],)
    return [pair for pair in list_split(root, "train") if drive_of(pair[0]) in drives]


def load_pair(image_path: str, label_path: str, size: tuple[int, int] | None = None):
    """uint8 RGB image [H, W, 3] and int64 labels [H, W]; resized to size = (W, H) if given."""
    from PIL import Image

    img = Image.open(image_path).convert("RGB")
    lab = Image.open(label_path)
    if size is not None:
        img = img.resize(size, Image.BILINEAR)
        lab = lab.resize(size, Image.NEAREST)
    image, labels = np.asarray(img, dtype=np.uint8), np.asarray(lab, dtype=np.int64)
    if image.shape[:2] != labels.shape:
        raise ValueError(f"{image_path} is {image.shape[:2]} but its labels are {labels.shape}")
    return image, labels


class CamVid:
    """A map-style dataset of (image [3, H, W] float 0..1, labels [H, W] int64) torch tensors.

    ``size`` = (W, H) resizes; ``flip`` adds random horizontal flips and
    ``crop`` = (W, H) random crops of that size (training).
    """

    def __init__(
        self,
        root: str,
        split: str,
        size: tuple[int, int] | None = None,
        flip: bool = False,
        seed: int = 0,
        crop: tuple[int, int] | None = None,
    ):
        self.pairs = list_split(root, split)
        self.size, self.flip, self.crop = size, flip, crop
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        import torch

        image, labels = load_pair(*self.pairs[i], size=self.size)
        if self.flip and self.rng.random() < 0.5:
            image, labels = image[:, ::-1], labels[:, ::-1]
        if self.crop is not None:
            cw, ch = self.crop
            h, w = labels.shape
            if cw > w or ch > h:
                raise ValueError(f"crop {cw}x{ch} is larger than the {w}x{h} image {self.pairs[i][0]}")
            y0, x0 = int(self.rng.integers(0, h - ch + 1)), int(self.rng.integers(0, w - cw + 1))
            image, labels = image[y0 : y0 + ch, x0 : x0 + cw], labels[y0 : y0 + ch, x0 : x0 + cw]
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255.0
        return x, torch.from_numpy(np.ascontiguousarray(labels))
