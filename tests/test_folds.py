"""The fixed CamVid folds: disjoint drives, counts from the data's README, val never in a fold's training set."""

from __future__ import annotations

import os

import pytest

from densecrf.models import camvid

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "camvid")


def test_fold_definitions_hold_each_drive_once():
    for fold in camvid.FOLDS.values():
        drives = set(fold["train"]) | {fold["heldout"]}
        assert drives == set(camvid.DRIVES)
        assert fold["heldout"] not in fold["train"]


def test_drive_of_rejects_unknown_names():
    assert camvid.drive_of("/x/0016E5_08093.png") == "0016E5"
    with pytest.raises(ValueError, match="drive id"):
        camvid.drive_of("frame_001.png")
    with pytest.raises(ValueError, match="fold must be"):
        camvid.fold_split(ROOT, "C", "train")


@pytest.mark.skipif(not os.path.isdir(ROOT), reason="CamVid not at ../shared/data/camvid")
def test_fold_splits_on_the_data():
    # Counts per drive in the train split as listed on this data: 0001TP 62, 0006R0 101, 0016E5 204 (367 in all,
    # the README's total); val is 101 frames of 0016E5.
    sizes = {(f, p): len(camvid.fold_split(ROOT, f, p)) for f in camvid.FOLDS for p in ("train", "heldout", "val")}
    assert sizes == {
        ("A", "train"): 62 + 204,
        ("A", "heldout"): 101,
        ("A", "val"): 101,
        ("B", "train"): 101 + 204,
        ("B", "heldout"): 62,
        ("B", "val"): 101,
    }
    for f in camvid.FOLDS:
        train = {os.path.basename(p) for p, _ in camvid.fold_split(ROOT, f, "train")}
        held = {os.path.basename(p) for p, _ in camvid.fold_split(ROOT, f, "heldout")}
        val = {os.path.basename(p) for p, _ in camvid.fold_split(ROOT, f, "val")}
        assert not train & held and not train & val and not held & val
