"""The fold trainer's pieces: device-side augmentation, class weights, scribbles, the U-Net,
the trainer end to end on a tiny CamVid-layout folder, and the run packer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from conftest import PACKAGE_PARENT  # noqa: E402
from densecrf.models import camvid, recipe  # noqa: E402
from densecrf.models.unet import UNet  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bank(n=3, h=36, w=48):
    rng = np.random.default_rng(0)
    bank = recipe.FrameBank.__new__(recipe.FrameBank)
    bank.images = torch.from_numpy(rng.integers(0, 256, (n, 3, h, w), dtype=np.uint8))
    labels = np.zeros((n, h, w), np.uint8)
    labels[:, :, w // 2 :] = 3  # left half class 0, right half class 3
    bank.labels = torch.from_numpy(labels)
    bank.paths = [f"f{i}" for i in range(n)]
    return bank


def test_whole_frame_recipe_flips_images_and_labels_together():
    bank = _bank()
    x, y, inside = recipe.sample_batch(
        bank, [0, 1, 2, 0, 1, 2, 0, 1], recipe.Augment(crop=(48, 36)), torch.Generator().manual_seed(1)
    )
    assert x.shape == (8, 3, 36, 48) and y.shape == (8, 36, 48) and bool((inside == 1).all())
    flipped = y[:, 0, 0] == 3
    assert 0 < int(flipped.sum()) < 8  # 8 fair coins: all equal has probability 2/256, and seed 1 gives a mix
    for i in range(8):
        src = bank.images[[0, 1, 2, 0, 1, 2, 0, 1][i]].float() / 255
        want = src.flip(2) if flipped[i] else src
        assert torch.equal(x[i], want)  # whole frames: flips are exact, no resampling


def test_scaled_crops_mark_padding_as_ignored_and_keep_labels_valid():
    bank = _bank()
    aug = recipe.Augment(crop=(48, 36), scale=(0.5, 0.5), flip=False, jitter=0.0)
    x, y, inside = recipe.sample_batch(bank, [0, 1], aug, torch.Generator().manual_seed(0))
    # at scale 0.5 the frame covers a quarter of the crop; the rest is padding
    frac = float(inside.mean())
    assert abs(frac - 0.25) < 0.05  # 0.25 exactly up to nearest-neighbour sampling at the frame's border
    assert set(torch.unique(y).tolist()) <= {0, 3, camvid.IGNORE_INDEX}
    assert bool(((y == camvid.IGNORE_INDEX) == (inside == 0)).all())
    # the same generator state gives the same batch (reproducible from the seed)
    x2, y2, _ = recipe.sample_batch(bank, [0, 1], aug, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_upscaled_crop_is_inside_the_frame_and_jitter_stays_in_range():
    bank = _bank()
    aug = recipe.Augment(crop=(24, 18), scale=(2.0, 2.0), flip=True, jitter=0.5)
    x, y, inside = recipe.sample_batch(bank, [0, 1, 2], aug, torch.Generator().manual_seed(3))
    # a 2x frame is larger than the crop: no padding, no ignored label
    assert bool((inside == 1).all()) and not bool((y == camvid.IGNORE_INDEX).any())
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_median_frequency_weights_on_known_counts():
    labels = torch.zeros(2, 1, 10, dtype=torch.uint8)
    labels[0, 0, :8] = 1  # frame 0: 8 px class 1, 2 px class 0; frame 1: 10 px class 0
    labels[1] = 0
    labels[0, 0, 9] = 5  # one ignored pixel (ignore index 5)
    w = recipe.median_frequency_weights(labels, 3, ignore_index=5)
    # freq(0) = 11 / 19 (frames 0 and 1 have it, 9 + 10 valid pixels); freq(1) = 8 / 9; class 2 absent
    f0, f1 = 11 / 19, 8 / 9
    med = (f0 + f1) / 2  # median of two present classes
    assert torch.allclose(w, torch.tensor([med / f0, med / f1, 0.0]), rtol=1e-6)  # float32 rounding


def test_scribbles_are_thin_strokes_inside_their_regions():
    labels = np.full((40, 60), 11, np.uint8)
    labels[5:35, 5:25] = 1  # a 30 x 20 block
    labels[5:35, 30:55] = 2
    labels[0:3, 0:3] = 4  # 9 pixels: below min_pixels, no stroke
    s = recipe.scribbles(labels, 11, 11, min_pixels=50)
    for c in (1, 2):
        stroke = s == c
        assert stroke.any() and bool((labels[stroke] == c).all())
        assert stroke.sum() < 0.2 * (labels == c).sum()  # a skeleton, far thinner than the region
    assert not (s == 4).any()
    assert set(np.unique(s).tolist()) <= {1, 2, 11}


def test_unet_shapes_and_odd_sizes():
    net = UNet(5, width=4).eval()
    for h, w in ((32, 48), (37, 53)):
        with torch.no_grad():
            assert net(torch.rand(2, 3, h, w)).shape == (2, 5, h, w)
            assert net(torch.rand(1, 3, h, w), scales=(0.75, 1.0)).shape == (1, 5, h, w)
    assert 2.5e6 < sum(p.numel() for p in UNet(11).parameters()) < 3.5e6  # the docstring's "about 2.9 million"


def _tiny_camvid(root, n_per_drive=2, h=36, w=48):
    rng = np.random.default_rng(0)
    for split, drives in (("train", camvid.DRIVES), ("val", ("0016E5",))):
        os.makedirs(os.path.join(root, split))
        os.makedirs(os.path.join(root, split + "annot"))
        for d in drives:
            for i in range(n_per_drive):
                stem = f"{d}_{split}{i:03d}"
                img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                lab = np.zeros((h, w), np.uint8)
                lab[:, w // 2 :] = 3
                lab[: h // 3] = 0
                lab[h // 3 :, : w // 2] = 5
                Image.fromarray(img).save(
                    os.path.join(root, split, stem + ".jpg" if split == "train" else stem + ".png")
                )
                Image.fromarray(lab).save(os.path.join(root, split + "annot", stem + ".png"))


def _folds(*args, cwd):
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-m", "densecrf.models.folds", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_trainer_end_to_end_resume_finetune_and_pack(tmp_path):
    data = str(tmp_path / "camvid")
    _tiny_camvid(data)
    out = str(tmp_path / "runs" / "A_strong")
    common = ["--data", data, "--fold", "A", "--width", "4", "--batch", "2", "--epochs", "2", "--crop", "48", "36"]
    _folds(*common, "--recipe", "strong", "--out", out, cwd=PACKAGE_PARENT)
    log = open(os.path.join(out, "log.txt")).read()
    assert "4 frames of fold A" in log  # JPEG training frames of 0001TP and 0016E5, 2 each
    result = json.load(open(os.path.join(out, "result.json")))
    assert result["heldout"]["frames"] == 2 and result["val"]["frames"] == 2
    assert 0.0 <= result["heldout"]["miou"] <= 1.0
    # a rerun resumes from last.pt at the end: no epoch is trained again
    r = _folds(*common, "--recipe", "strong", "--out", out, "--eval", "", cwd=PACKAGE_PARENT)
    assert "resumed from" in r.stdout and "epoch 1/2" not in r.stdout
    # the CRF-as-RNN fine-tune and its control start from it
    for head in ("crf", "none"):
        ft = str(tmp_path / "runs" / f"A_{head}")
        _folds(
            "--data",
            data,
            "--fold",
            "A",
            "--init",
            os.path.join(out, "final.pt"),
            "--head",
            head,
            "--epochs",
            "1",
            "--batch",
            "2",
            "--eval",
            "",
            "--out",
            ft,
            cwd=PACKAGE_PARENT,
        )
        ck = torch.load(os.path.join(ft, "final.pt"))
        assert ck["args"]["head"] == head and ck["args"]["recipe"] == "strong"
        assert (ck.get("crf") is not None) == (head == "crf")
    # pack and unpack: the same weights (to float16) and logs
    packed, back = str(tmp_path / "packed"), str(tmp_path / "back")
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    for cmd in (["pack", str(tmp_path / "runs"), packed], ["unpack", packed, back]):
        subprocess.run(
            [sys.executable, os.path.join(ROOT, "tools", "pack_runs.py"), *cmd],
            check=True,
            env=env,
            capture_output=True,
        )
    a = torch.load(os.path.join(out, "final.pt"))["model"]
    b = torch.load(os.path.join(back, "A_strong", "final.pt"))["model"]
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            assert torch.equal(a[k].half(), b[k])
    assert open(os.path.join(back, "A_strong", "log.txt")).read() == open(os.path.join(out, "log.txt")).read()


def test_trainer_rejects_inconsistent_flags(tmp_path):
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    for args, msg in ((["--head", "crf"], "give --init"), (["--crf-loss", "1e-9"], "use it with --sparse")):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "densecrf.models.folds",
                "--data",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
                "--fold",
                "A",
                *args,
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=PACKAGE_PARENT,
            timeout=120,
        )
        assert r.returncode == 2 and msg in r.stderr
