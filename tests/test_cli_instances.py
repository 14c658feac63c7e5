"""``densecrf refine-instances`` and ``densecrf refine-panoptic`` end to end on a synthetic scene."""

from __future__ import annotations

import json

import numpy as np
import pytest

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("pycocotools")

from densecrf import cli  # noqa: E402
from densecrf.coco import (  # noqa: E402
    read_instance_pngs,
    read_instances_json,
    read_panoptic,
    write_instance_pngs,
    write_instances_json,
)
from densecrf.instances import InstanceParams  # noqa: E402


def _run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture
def scene(tmp_path):
    """An image of two flat rectangles and soft, too-large input masks (PNG folder and COCO JSON)."""
    rng = np.random.default_rng(0)
    h, w = 40, 56
    img = np.full((h, w, 3), 70.0)
    img[5:25, 5:25] = (220, 60, 60)
    img[15:35, 30:50] = (60, 60, 220)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "frame.png")
    soft = np.full((2, h, w), 0.05, dtype=np.float32)
    soft[0, 3:28, 3:28] = 0.8
    soft[1, 13:38, 27:53] = 0.8
    write_instance_pngs(tmp_path / "in", "frame", soft, [0.9, 0.8], [1, 2])
    write_instances_json(
        tmp_path / "in.json", [{"image_id": 4, "masks": soft > 0.5, "scores": [0.9, 0.8], "classes": [1, 2]}]
    )
    return tmp_path, img, soft


def test_refine_instances_pngs(capsys, scene):
    tmp, _img, soft = scene
    rc, out, err = _run(
        capsys, "refine-instances", tmp / "frame.png", tmp / "in", "-o", tmp / "out", "--params", _params(tmp)
    )
    assert rc == 0, err
    back = read_instance_pngs(tmp / "out", "frame")
    masks = back["masks"] > 0.5
    assert masks.shape == soft.shape and back["classes"].tolist() == [1, 2]
    assert masks.sum(axis=0).max() <= 1  # joint mode: no pixel in two instances
    truth = np.zeros(soft.shape[1:], bool)
    truth[5:25, 5:25] = True
    iou = (masks[0] & truth).sum() / (masks[0] | truth).sum()
    assert iou > 0.85 > ((soft[0] > 0.5) & truth).sum() / ((soft[0] > 0.5) | truth).sum()  # the CRF trims to the edges
    assert "2 instances refined" in out


def _params(tmp):
    path = tmp / "p.json"
    InstanceParams(power=2.0, fg_bias=0.0, bilateral_sxy=10.0, bilateral_srgb=20.0, bilateral_weight=5.0).save(path)
    return path


def test_refine_instances_json(capsys, scene):
    tmp, _img, soft = scene
    rc, _out, err = _run(
        capsys, "refine-instances", tmp / "frame.png", tmp / "in.json", "-o", tmp / "out.json", "--mode", "binary"
    )
    assert rc == 0, err
    back = read_instances_json(tmp / "out.json")
    assert list(back) == [4] and back[4]["masks"].shape == soft.shape
    assert json.load(open(tmp / "out.json"))[0]["segmentation"]["counts"]  # RLE strings


def test_refine_panoptic(capsys, scene):
    tmp, img, _soft = scene
    h, w = img.shape[:2]
    probs = np.full((h, w, 3), 1 / 3, dtype=np.float32)  # class 0 stuff, 1 and 2 things
    probs[..., 0] += 0.2
    probs[..., 1:] -= 0.1
    np.save(tmp / "probs.npy", probs)
    rc, _out, err = _run(
        capsys,
        "refine-panoptic",
        tmp / "frame.png",
        tmp / "probs.npy",
        tmp / "in",
        "-o",
        tmp / "pan.png",
        "--things",
        1,
        2,
        "--params",
        _params(tmp),
    )
    assert rc == 0, err
    ids, info = read_panoptic(tmp / "pan.png", tmp / "pan.json")
    assert ids.shape == (h, w)
    assert {s["category_id"] for s in info} == {0, 1, 2}
    for s in info:
        assert s["area"] == (ids == s["id"]).sum() and s["iscrowd"] == 0


def test_errors_are_one_line(capsys, scene):
    tmp, _img, _soft = scene
    rc, _out, err = _run(capsys, "refine-instances", tmp / "frame.png", tmp / "missing.json", "-o", tmp / "o.json")
    assert rc == 2 and err.count("\n") == 1 and "missing.json" in err
    small = np.zeros((10, 10, 3), np.uint8)
    Image.fromarray(small).save(tmp / "small.png")
    rc, _out, err = _run(capsys, "refine-instances", tmp / "small.png", tmp / "in", "-o", tmp / "o", "--stem", "frame")
    assert rc == 2 and "40 x 56" in err and err.count("\n") == 1
    rc, _out, err = _run(
        capsys, "refine-panoptic", tmp / "frame.png", tmp / "in", tmp / "in", "-o", tmp / "p.png", "--things", 1
    )
    assert rc == 2 and err.count("\n") == 1
