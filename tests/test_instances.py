"""refine_instances / refine_panoptic / paste_masks / fit_instances, and the panoptic and COCO metrics.

References: brute-force checks of the guarantees on synthetic scenes with
known shapes, hand-computed pastes, PQ and AP, and torch's grid_sample for
the paste (where torch is installed).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import densecrf
from conftest import PACKAGE_PARENT
from densecrf import metrics as M
from densecrf.instances import InstanceParams, instances_to_panoptic, paste_masks, refine_instances, refine_panoptic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = ["cpu"] + (["cuda"] if densecrf.cuda_available() else [])

# Parameters that suit the synthetic scenes (a calibrated unary: the textbook
# ones empty weak instances, which is what the rescue tests rely on).
GOOD = {
    "power": 2.0,
    "fg_bias": 1.0,
    "gaussian_weight": 1.0,
    "bilateral_sxy": 10.0,
    "bilateral_srgb": 20.0,
    "bilateral_weight": 4.0,
}


def _scene(rng, h=48, w=64, n=3, blur=True):
    """Image with n flat-coloured rectangles (known shapes, may overlap: later on top)
    on a grey background + noise; true masks (visible parts) and soft, blobby input masks."""
    from scipy import ndimage

    img = np.full((h, w, 3), 120.0)
    owner = np.zeros((h, w), dtype=int)
    boxes = []
    for i in range(n):
        bh, bw = rng.integers(h // 4, h // 2), rng.integers(w // 5, w // 2)
        y0, x0 = rng.integers(0, h - bh), rng.integers(0, w - bw)
        owner[y0 : y0 + bh, x0 : x0 + bw] = i + 1
        boxes.append((x0, y0, x0 + bw, y0 + bh))
    colours = rng.uniform(0, 255, size=(n + 1, 3))
    colours[0] = 120.0
    img = colours[owner] + rng.normal(0, 6, size=(h, w, 3))
    gt = np.stack([owner == i + 1 for i in range(n)])
    full = np.zeros((n, h, w))
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        full[i, y0:y1, x0:x1] = 1.0  # the whole rectangle: inputs overlap where shapes do
    soft = np.stack([ndimage.gaussian_filter(f, 3.0) for f in full]) if blur else full
    soft = np.clip(0.05 + 0.9 * soft, 0, 1)
    return np.clip(img, 0, 255).astype(np.uint8), gt, soft.astype(np.float32), np.array(boxes, dtype=float)


def _iou(a, b):
    u = (a | b).sum()
    return (a & b).sum() / u if u else 1.0


# ---------------------------------------------------------------------------
# paste_masks
# ---------------------------------------------------------------------------
def test_paste_by_hand():
    # A 2 x 2 mask into box (0, 0, 4, 4) of a 4 x 5 image: pixel c samples
    # u = (c + 0.5) / 4 * 2 - 0.5 = c / 2 - 0.25 -> weights on (m0, m1):
    # c=0: (0.75, 0), c=1: (0.75, 0.25), c=2: (0.25, 0.75), c=3: (0, 0.75), c=4: u = 1.75 -> (0, 0.25).
    w = np.array([[0.75, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 0.75], [0.0, 0.25]])
    m = np.array([[0.2, 1.0], [0.6, 0.0]])
    out = paste_masks(m[None], [[0, 0, 4, 4]], (4, 5))[0]
    expect = w[:4] @ m @ w.T  # rows: the same weights (box height 4, image height 4)
    np.testing.assert_allclose(out, expect, atol=1e-6)  # float32 output of float64 arithmetic
    assert out[0, 4] == pytest.approx(0.75 * 0.25 * 1.0, abs=1e-6)


def test_paste_matches_grid_sample(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    h, w = 37, 53
    masks = rng.uniform(size=(5, 28, 28))
    boxes = np.array(
        [
            [3.2, 4.7, 30.1, 20.0],
            [-5.0, -3.0, 12.0, 40.0],
            [40.5, 30.2, 70.0, 50.0],
            [0.0, 0.0, 53.0, 37.0],
            [10.0, 10.0, 11.5, 12.0],
        ]
    )
    out = paste_masks(masks, boxes, (h, w))
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        # detectron2's paste: normalised sample coordinates of pixel centres, grid_sample(align_corners=False)
        gx = (torch.arange(w, dtype=torch.float64) + 0.5 - x0) / (x1 - x0) * 2 - 1
        gy = (torch.arange(h, dtype=torch.float64) + 0.5 - y0) / (y1 - y0) * 2 - 1
        grid = torch.stack([gx[None, :].expand(h, w), gy[:, None].expand(h, w)], dim=-1)[None]
        ref = F.grid_sample(torch.from_numpy(masks[i])[None, None], grid, align_corners=False)[0, 0].numpy()
        np.testing.assert_allclose(out[i], ref, atol=1e-6)  # float32 rounding of values in [0, 1]


def test_paste_rejects_bad_boxes():
    with pytest.raises(ValueError, match="box 1"):
        paste_masks(np.zeros((2, 4, 4)), [[0, 0, 2, 2], [3, 0, 3, 2]], (8, 8))
    with pytest.raises(ValueError, match=r"\[M, 4\]"):
        paste_masks(np.zeros((2, 4, 4)), [[0, 0, 2, 2]], (8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        paste_masks(np.full((1, 4, 4), 1.5), [[0, 0, 2, 2]], (8, 8))


# ---------------------------------------------------------------------------
# refine_instances: guarantees, brute force
# ---------------------------------------------------------------------------
def _check_guarantees(res, soft, joint):
    m, h, w = soft.shape
    assert res.masks.shape == (m, h, w) and res.masks.dtype == bool  # nothing outside the image
    assert res.ids.shape == (h, w)
    confident = (soft > 0.5).any(axis=(1, 2))
    assert not (confident & ~res.masks.any(axis=(1, 2))).any(), "a confident instance came back empty"
    if joint:
        assert res.masks.sum(axis=0).max() <= 1  # each pixel in at most one instance
        np.testing.assert_array_equal(res.ids, (res.masks * np.arange(1, m + 1)[:, None, None]).sum(axis=0))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["joint", "binary"])
@pytest.mark.parametrize(
    "prm",
    [
        InstanceParams.textbook(),
        InstanceParams(**GOOD),
        InstanceParams(power=0.3, bilateral_weight=40.0, gaussian_weight=20.0),
    ],
    ids=["textbook", "fitted", "extreme"],
)
def test_guarantees(seed, mode, prm):
    rng = np.random.default_rng(seed)
    img, _gt, soft, _ = _scene(rng, n=int(rng.integers(1, 5)))
    scores = rng.uniform(0.05, 1.0, size=len(soft))
    before = soft.copy()
    res = refine_instances(img, soft, scores, mode=mode, params=prm)
    np.testing.assert_array_equal(soft, before)  # the input is not modified
    _check_guarantees(res, soft, mode == "joint")


def test_textbook_empties_and_rescue_restores():
    # Weak foreground (0.6) in a mostly-background box: the textbook CRF
    # empties it (the failure); the result must still hold the
    # confident pixels, from the rescue.
    rng = np.random.default_rng(3)
    h, w = 40, 40
    img = rng.normal(128, 20, size=(h, w, 3)).clip(0, 255).astype(np.uint8)
    soft = np.zeros((1, h, w), dtype=np.float32)
    soft[0, 18:22, 18:22] = 0.6
    res = refine_instances(img, soft, [0.5], params=InstanceParams.textbook(), threads=1)
    assert res.masks[0].any()
    np.testing.assert_array_equal(res.masks[0], soft[0] > 0.5)  # nothing else claims them: all come back


def test_rescue_when_all_confident_pixels_are_held():
    # Two identical masks: the joint CRF gives the pixels to one; the other
    # gets back one pixel (its input beats no one's, so the single-pixel step).
    img = np.full((20, 20, 3), 100, dtype=np.uint8)
    img[5:15, 5:15] = 200
    soft = np.zeros((2, 20, 20), dtype=np.float32)
    soft[:, 5:15, 5:15] = 0.9
    res = refine_instances(img, soft, [0.9, 0.8], **GOOD)
    _check_guarantees(res, soft, True)
    assert sorted(res.masks.sum(axis=(1, 2)).tolist()) == [1, 99]
    # k instances whose confident pixels are fewer than k: the documented limit.
    one = np.zeros((2, 20, 20), dtype=np.float32)
    one[:, 10, 10] = 0.9
    res = refine_instances(img, one, [0.9, 0.8], **GOOD)
    assert res.masks.sum() == 1 and res.masks[0, 10, 10]  # the higher score keeps the pixel


def test_overlap_resolved_by_appearance():
    # Two rectangles overlap; both inputs claim the overlap with 0.9; the
    # image shows the second one on top there: the joint CRF must give the
    # overlap to it (the bilateral term), which thresholding cannot.
    h, w = 40, 60
    img = np.full((h, w, 3), 60, dtype=np.uint8)
    img[5:30, 5:35] = (220, 40, 40)
    img[15:38, 25:55] = (40, 40, 220)
    soft = np.full((2, h, w), 0.02, dtype=np.float32)
    soft[0, 5:30, 5:35] = 0.9
    soft[1, 15:38, 25:55] = 0.9
    res = refine_instances(img, soft, [0.9, 0.9], **GOOD)
    overlap = np.zeros((h, w), bool)
    overlap[15:30, 25:35] = True
    assert res.masks[1][overlap].mean() > 0.95  # 5 %: a few boundary pixels may go either way
    gt0 = np.zeros((h, w), bool)
    gt0[5:30, 5:35] = True
    gt0 &= ~overlap
    assert _iou(res.masks[0], gt0) > 0.9 > _iou(soft[0] > 0.5, gt0)


@pytest.mark.parametrize("seed", range(3))
def test_refinement_sharpens_blobby_masks(seed):
    # Masks blurred (sigma 3 px) and reduced: the CRF with calibrated
    # parameters gets closer to the true shapes than the 0.5 threshold.
    rng = np.random.default_rng(10 + seed)
    img, gt, soft, _ = _scene(rng, n=2)
    low = np.stack([s[::4, ::4] for s in soft])  # 12 x 16 "detector" masks of the whole image
    pasted = paste_masks(low, [[0, 0, 64, 48]] * len(low), (48, 64))
    res = refine_instances(img, pasted, None, **GOOD)
    before = np.mean([_iou(p > 0.5, g) for p, g in zip(pasted, gt, strict=True)])
    after = np.mean([_iou(r, g) for r, g in zip(res.masks, gt, strict=True)])
    assert after > before + 0.02  # 2 points: well above the run-to-run identity of a deterministic CRF


def test_detector_style_equals_pasting_first(rng):
    img, _gt, _soft, boxes = _scene(rng, n=3)
    low = rng.uniform(0, 1, size=(3, 28, 28)).astype(np.float32)
    a = refine_instances(img, low, [0.9, 0.5, 0.7], boxes=boxes, **GOOD)
    b = refine_instances(img, paste_masks(low, boxes, img.shape), [0.9, 0.5, 0.7], **GOOD)
    np.testing.assert_array_equal(a.masks, b.masks)


def test_binary_mode_crops_and_may_overlap():
    h, w = 40, 60
    img = np.full((h, w, 3), 60, dtype=np.uint8)
    img[5:30, 5:35] = (220, 40, 40)
    soft = np.zeros((2, h, w), dtype=np.float32)
    soft[:, 5:30, 5:35] = 0.9  # two proposals of the same object
    res = refine_instances(img, soft, [0.9, 0.8], mode="binary", crop_margin=0.2, **GOOD)
    assert (res.masks[0] & res.masks[1]).sum() > 0.9 * 25 * 30  # independent: both keep the object
    # Nothing outside the crop (the box from the confident pixels, grown by 20 % on each side).
    crop = np.zeros((h, w), bool)
    crop[0:35, 0:41] = True
    assert not (res.masks & ~crop).any()
    assert (res.ids[5:30, 5:35] == 1).all()  # the higher score on top in the id map


def test_no_refinement_is_the_thresholded_input(rng):
    img, _gt, soft, _ = _scene(rng)
    res = refine_instances(img, soft, params=InstanceParams.no_refinement())
    np.testing.assert_array_equal(res.masks, soft > 0.5)


def _ids_brute_force(masks, weight, scores):
    """The id map rule of refine_instances written pixel by pixel: among the
    masks holding a pixel, the highest weight wins, the higher score on a tie
    (then the lower index); an instance holding less than half its mask is removed."""
    m, h, w = masks.shape
    ids = np.zeros((h, w), dtype=np.int32)
    for y in range(h):
        for x in range(w):
            cands = [i for i in range(m) if masks[i, y, x]]
            if cands:
                ids[y, x] = 1 + max(cands, key=lambda i: (weight[i, y, x], scores[i], -i))
    for i in range(m):
        held = int((ids == i + 1).sum())
        if 0 < held < 0.5 * masks[i].sum():
            ids[ids == i + 1] = 0
    return ids


def test_id_map_of_overlapping_inputs_by_hand():
    p = np.zeros((3, 4, 6), dtype=np.float32)
    p[0, :, 0:4] = 0.9  # 0.9 * 0.6 = 0.54
    p[1, :, 3:6] = 0.7  # 0.7 * 0.9 = 0.63: takes column 3 from instance 0
    p[2, 1:3, 1:6] = 0.75  # 0.75 * 0.8 = 0.60: beats 0 in columns 1-2 and loses to 1 in 3-5:
    s = np.array([0.6, 0.9, 0.8])  # it holds 4 of its 10 pixels and is removed; 0 holds 8 of 16, kept
    res = refine_instances(np.zeros((4, 6, 3), np.uint8), p, s, params=InstanceParams.no_refinement())
    want = np.array([[1, 1, 1, 2, 2, 2]] * 4)
    want[1:3, 1:3] = 0  # instance 2's pixels, gone with it
    np.testing.assert_array_equal(res.ids, want)
    np.testing.assert_array_equal(res.ids, _ids_brute_force(p > 0.5, p * s[:, None, None], s))
    np.testing.assert_array_equal(res.masks, p > 0.5)  # the masks keep their overlaps
    ex = res.exclusive_masks()
    assert ex.sum(axis=0).max() == 1 and not (ex & ~res.masks).any()


def test_id_map_of_binary_mode_follows_the_marginals(rng):
    # With no pairwise term the mean field is the softmax of the unary, so each
    # instance's foreground marginal follows from the module docstring's formula.
    img, _gt, soft, _ = _scene(rng, n=4)
    s = np.array([0.9, 0.5, 0.7, 0.7])
    prm = InstanceParams(mode="binary", power=1.5, fg_bias=0.3, confident_bonus=0.5, score_power=1.0).replace(
        gaussian_weight=None, bilateral_weight=0.0
    )
    res = refine_instances(img, soft, s, params=prm)
    c = lambda v: np.maximum(v, prm.min_prob)  # noqa: E731
    u_bg = -prm.power * np.log(c(1.0 - soft))
    u_fg = (
        -prm.power * np.log(c(soft))
        - prm.score_power * np.log(c(s))[:, None, None]
        - prm.fg_bias
        - prm.confident_bonus * (soft > 0.5)
    )
    q_fg = 1.0 / (1.0 + np.exp(u_fg - u_bg))
    assert (res.masks.sum(axis=0) > 1).sum() > 50  # the scene has overlaps to resolve
    # Outside an instance's crop q_fg is irrelevant: its mask is False there.
    want = _ids_brute_force(res.masks, q_fg * s[:, None, None], s)
    # float32 in the library against float64 here: a near-tie may flip (at most a few pixels).
    assert (res.ids != want).sum() <= 3
    assert not (res.exclusive_masks() & ~res.masks).any()


def test_score_instances_uses_the_id_map():
    from densecrf.instance_fit import score_instances

    gt = np.zeros((1, 8, 8), bool)
    gt[0, :, :4] = True
    pred = np.zeros((2, 8, 8), bool)
    pred[0, :, :6] = True  # IoU 4/6 with the truth
    pred[1] = ~gt[0]  # a false positive that holds the truth's right neighbour
    ids = np.where(gt[0], 1, 2)  # the id map gives columns 4-5 to instance 1: instance 0 matches exactly
    common = {"masks": pred, "scores": np.array([0.9, 0.8]), "classes": np.array([1, 1])}
    truth = [{"masks": gt, "classes": np.array([1])}]
    merged = score_instances([common], truth)["pq"]
    by_ids = score_instances([dict(common, ids=ids)], truth)["pq"]
    # Usual merge: instance 0 (higher score) takes its 48 pixels, instance 1 keeps 32 of 48 (>= half): one TP
    # of IoU 32/48 and one FP -> PQ (2/3) / (1 + 0.5 * 1) = 4/9. With the id map: IoU 1, one FP -> 1 / 1.5.
    assert merged == pytest.approx(4 / 9) and by_ids == pytest.approx(2 / 3)


def test_batch_equals_single(rng):
    scenes = [_scene(np.random.default_rng(s)) for s in range(2)]
    batch = refine_instances([s[0] for s in scenes], [s[2] for s in scenes], None, **GOOD)
    for s, r in zip(scenes, batch, strict=True):
        one = refine_instances(s[0], s[2], **GOOD)
        np.testing.assert_array_equal(one.masks, r.masks)


def test_empty_and_bad_inputs(rng):
    img = rng.integers(0, 255, size=(10, 12, 3)).astype(np.uint8)
    res = refine_instances(img, np.zeros((0, 10, 12)))
    assert res.masks.shape == (0, 10, 12) and not res.ids.any()
    with pytest.raises(ValueError, match=r"\(M, 10, 12\)"):
        refine_instances(img, np.zeros((2, 10, 11)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        refine_instances(img, np.full((1, 10, 12), -0.5))
    with pytest.raises(ValueError, match="one value per mask"):
        refine_instances(img, np.zeros((2, 10, 12)), [0.5])
    with pytest.raises(ValueError, match="mode"):
        refine_instances(img, np.zeros((1, 10, 12)), mode="pairs")
    with pytest.raises(ValueError, match="list of 2"):
        refine_instances([img, img], [np.zeros((1, 10, 12))])


def test_params_json_roundtrip(tmp_path):
    p = InstanceParams(power=2.5, gaussian_weight=None, mode="binary", info={"x": 1})
    p.save(tmp_path / "p.json")
    assert InstanceParams.load(tmp_path / "p.json") == p
    with pytest.raises(ValueError, match="unknown keys"):
        InstanceParams.from_dict({"powr": 2})


@pytest.mark.skipif(len(DEVICES) < 2, reason="no CUDA device")
def test_cuda_matches_cpu(rng):
    img, _gt, soft, _ = _scene(rng, h=96, w=128, n=4)
    a = refine_instances(img, soft, **GOOD)
    b = refine_instances(img, soft, device="cuda", **GOOD)
    _check_guarantees(b, soft, True)
    assert (a.ids == b.ids).mean() > 0.995  # lattice rounding may flip a few boundary pixels (CPU vs GPU)


# ---------------------------------------------------------------------------
# refine_panoptic
# ---------------------------------------------------------------------------
def test_panoptic_format(rng, tmp_path):
    img, gt, soft, _ = _scene(rng, n=3)
    h, w = img.shape[:2]
    k = 4  # classes 0, 1 stuff; 2, 3 things
    sem = rng.uniform(0.1, 1, size=(h, w, k))
    sem[..., 2] += 2 * gt[0] + 2 * gt[1]
    sem[..., 3] += 2 * gt[2]
    sem /= sem.sum(-1, keepdims=True)
    inst = {"masks": soft, "classes": np.array([2, 2, 3]), "scores": np.array([0.9, 0.8, 0.7])}
    ids, info = refine_panoptic(img, sem, inst, [2, 3], **GOOD)
    assert ids.shape == (h, w)
    assert sorted(s["id"] for s in info) == list(range(1, len(info) + 1))
    assert set(np.unique(ids)) - {0} == {s["id"] for s in info}
    for s in info:
        region = ids == s["id"]
        ys, xs = np.nonzero(region)
        assert s["iscrowd"] == 0 and s["area"] == region.sum()
        assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        if s["isthing"]:
            assert s["category_id"] == inst["classes"][s["instance"]]
        else:
            assert s["category_id"] in (0, 1) and s["instance"] is None
    assert len([s for s in info if not s["isthing"]]) == len({s["category_id"] for s in info if not s["isthing"]})
    confident = np.nonzero((soft > 0.5).any(axis=(1, 2)))[0]
    assert set(confident) <= {s["instance"] for s in info if s["isthing"]}  # never emptied
    # COCO panoptic files round-trip.
    from densecrf.coco import read_panoptic, write_panoptic

    pytest.importorskip("PIL")
    write_panoptic(tmp_path / "p.png", tmp_path / "p.json", ids, info, image_id=7)
    ids2, info2 = read_panoptic(tmp_path / "p.png", tmp_path / "p.json")
    np.testing.assert_array_equal(ids2, ids)
    assert [s["category_id"] for s in info2] == [s["category_id"] for s in info]
    with pytest.raises(ValueError, match="thing_classes"):
        refine_panoptic(img, sem, {"masks": soft, "classes": np.array([2, 2, 1])}, [2, 3])


# ---------------------------------------------------------------------------
# PanopticQuality (COCO's accumulation), by hand
# ---------------------------------------------------------------------------
def _segs(*cats, crowd=()):
    return [{"id": i + 1, "category_id": c, "iscrowd": int(i + 1 in crowd)} for i, c in enumerate(cats)]


def test_pq_by_hand():
    # 1 x 10 strip. gt: thing A (cat 1) at 0..3, stuff (cat 2) at 4..7, void at 8..9.
    gt = np.array([[1, 1, 1, 1, 2, 2, 2, 2, 0, 0]])
    # pred: A at 0..2 (IoU 3/4), stuff at 3..7 (IoU 4/5), a thing at 8..9 (all on void: ignored).
    pred = np.array([[1, 1, 1, 2, 2, 2, 2, 2, 3, 3]])
    pq = M.PanopticQuality({1: True, 2: False})
    pq.update(pred, _segs(1, 2, 1), gt, _segs(1, 2))
    r = pq.compute()
    assert r["things"]["pq"] == pytest.approx(0.75) and r["stuff"]["pq"] == pytest.approx(0.8)
    assert r["all"]["pq"] == pytest.approx((0.75 + 0.8) / 2) and r["per_class"][1]["fp"] == 0
    # Void in the union: pred thing over 0..5 and 8..9 would be IoU 4 / (8 - 2 void) = 0.667 with the gt thing.
    pq2 = M.PanopticQuality({1: True, 2: False})
    pred2 = np.array([[1, 1, 1, 1, 1, 1, 2, 2, 1, 1]])
    pq2.update(pred2, _segs(1, 2), gt, _segs(1, 2))
    assert pq2.per_class()[1]["tp"] == 1
    assert pq2.per_class()[1]["sq"] == pytest.approx(4 / 6)
    # stuff: gt 4..7 vs pred 6..7: IoU 2/4 = 0.5, not > 0.5: one FN and one FP.
    assert (pq2.per_class()[2]["fn"], pq2.per_class()[2]["fp"]) == (1, 1)


def test_pq_crowd():
    # gt: a crowd region of cat 1 at 0..5, a real instance at 6..9.
    gt = np.array([[1, 1, 1, 1, 1, 1, 2, 2, 2, 2]])
    # pred: a thing on the crowd (ignored, not FP), the instance matched.
    pred = np.array([[1, 1, 1, 1, 0, 0, 2, 2, 2, 2]])
    pq = M.PanopticQuality({1: True})
    pq.update(pred, _segs(1, 1), gt, _segs(1, 1, crowd=(1,)))
    c = pq.per_class()[1]
    assert (c["tp"], c["fp"], c["fn"]) == (1, 0, 0) and c["pq"] == pytest.approx(1.0)


def test_pq_accumulated_differs_from_per_image_mean():
    # Categories: 1 and 2 things, 3 stuff. Image 1: perfect. Image 2: the
    # thing of class 1 missed and a false positive of class 1 elsewhere; the
    # stuff shifted (IoU 2/6, unmatched).
    cls1 = np.array([[1, 1, 2, 2, 3, 3]])
    g2, p2 = np.array([[1, 1, 3, 3, 3, 3]]), np.array([[3, 3, 3, 3, 1, 1]])
    pq = M.PanopticQuality({1: True, 2: True, 3: False})
    pq.update(*M.panoptic_from_labels(cls1, np.zeros_like(cls1)), *M.panoptic_from_labels(cls1, np.zeros_like(cls1)))
    pq.update(*M.panoptic_from_labels(p2, np.zeros_like(p2)), *M.panoptic_from_labels(g2, np.zeros_like(g2)))
    r = pq.compute()
    # Summed counts: class 1 TP 1 (IoU 1), FP 1, FN 1 -> 1 / 2; class 2 -> 1; class 3 TP 1, FP 1, FN 1 -> 1 / 2.
    assert r["things"]["pq"] == pytest.approx(0.75) and r["stuff"]["pq"] == pytest.approx(0.5)
    assert r["all"]["pq"] == pytest.approx(2 / 3)
    # The per-image function averaged over images: image 1 scores 1 on its
    # classes, image 2 scores 0 on its two classes: 0.5, not 2/3.
    per_image = [
        M.panoptic_quality(p, np.zeros_like(p), g, np.zeros_like(g), 4)["pq"] for p, g in ((cls1, cls1), (p2, g2))
    ]
    assert per_image == [1.0, 0.0]
    assert np.mean(per_image) == pytest.approx(0.5) != r["all"]["pq"]


def test_panoptic_from_labels_and_checks():
    cls = np.array([[0, 0, 1, 1, 2]])
    ins = np.array([[5, 6, 1, 2, 0]])
    ids, segs = M.panoptic_from_labels(cls, ins, ignore_index=2, thing_classes=[1])
    assert ids[0, 4] == 0 and ids[0, 0] == ids[0, 1] and ids[0, 2] != ids[0, 3]
    assert sorted(s["area"] for s in segs) == [1, 1, 2]
    pq = M.PanopticQuality({0: False, 1: True})
    with pytest.raises(ValueError, match="not one of the categories"):
        pq.update(ids, [dict(s, category_id=9) for s in segs], ids, segs)
    with pytest.raises(ValueError, match="does not describe"):
        pq.update(ids, segs[:1], ids, segs)


# ---------------------------------------------------------------------------
# COCO mask AP (pycocotools), by hand
# ---------------------------------------------------------------------------
def test_mask_ap_by_hand():
    pytest.importorskip("pycocotools")
    from densecrf.coco import mask_ap

    g = np.zeros((1, 20, 20), bool)
    g[0, 0:10, 0:10] = True
    p = np.zeros((2, 20, 20), bool)
    p[0, 0:10, 0:8] = True  # IoU 0.8
    p[1, 12:18, 12:18] = True  # a false positive, lower score
    r = mask_ap([{"masks": p, "scores": [0.9, 0.5], "classes": [1, 1]}], [{"masks": g, "classes": [1]}])
    # The top detection matches at IoU thresholds 0.50 .. 0.80 (7 of 10): precision 1 at recall 1 there, else 0.
    assert r["ap"] == pytest.approx(0.7) and r["ap50"] == pytest.approx(1.0) and r["ap75"] == pytest.approx(1.0)
    # Scores swapped: the false positive first, precision 1/2 at recall 1 at every threshold.
    p2 = np.stack([p[1], np.zeros_like(p[1])])
    p2[1, 0:10, 0:10] = True
    r2 = mask_ap([{"masks": p2, "scores": [0.9, 0.5], "classes": [1, 1]}], [{"masks": g, "classes": [1]}])
    assert r2["ap"] == pytest.approx(0.5)
    # The VOC-style numpy AP of densecrf.metrics agrees at 0.5 on this case.
    assert M.instance_average_precision(p2, [0.9, 0.5], g) == pytest.approx(0.5)


def test_mask_ap_matches_cocoeval_directly(rng):
    # The same tiny dataset through pycocotools' own COCO/loadRes/COCOeval path.
    pytest.importorskip("pycocotools")
    import contextlib
    import io

    from pycocotools import mask as mu
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from densecrf.coco import mask_ap

    preds, gts = [], []
    for k in range(3):
        _img, gt, soft, _ = _scene(np.random.default_rng(100 + k), n=3)
        preds.append({"masks": soft > rng.uniform(0.3, 0.7), "scores": rng.uniform(size=3), "classes": [1, 2, 1]})
        gts.append({"masks": gt, "classes": [1, 2, 1]})
    ours = mask_ap(preds, gts)
    ds = {"images": [], "annotations": [], "categories": [{"id": 1}, {"id": 2}]}
    res = []
    for k, (p, g) in enumerate(zip(preds, gts, strict=True)):
        ds["images"].append({"id": k + 1, "height": 48, "width": 64})
        for m, c in zip(g["masks"], g["classes"], strict=True):
            r = mu.encode(np.asfortranarray(m.astype(np.uint8)))
            ds["annotations"].append(
                {
                    "id": len(ds["annotations"]) + 1,
                    "image_id": k + 1,
                    "category_id": c,
                    "segmentation": r,
                    "area": float(mu.area(r)),
                    "iscrowd": 0,
                    "bbox": list(mu.toBbox(r)),
                }
            )
        for m, c, s in zip(p["masks"], p["classes"], p["scores"], strict=True):
            res.append(
                {
                    "image_id": k + 1,
                    "category_id": c,
                    "score": float(s),
                    "segmentation": mu.encode(np.asfortranarray(m.astype(np.uint8))),
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = ds
        cg.createIndex()
        ev = COCOeval(cg, cg.loadRes(res), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ours["ap"] == pytest.approx(ev.stats[0], abs=1e-12) and ours["ap50"] == pytest.approx(ev.stats[1], abs=1e-12)


def test_instances_json_roundtrip(tmp_path, rng):
    pytest.importorskip("pycocotools")
    from densecrf.coco import read_instances_json, write_instances_json

    _img, gt, _soft, _ = _scene(rng, n=2)
    write_instances_json(tmp_path / "r.json", [{"image_id": 3, "masks": gt, "scores": [0.5, 0.25], "classes": [1, 4]}])
    back = read_instances_json(tmp_path / "r.json")[3]
    np.testing.assert_array_equal(back["masks"], gt)
    assert back["scores"].tolist() == [0.5, 0.25] and back["classes"].tolist() == [1, 4]
    assert json.load(open(tmp_path / "r.json"))[0]["segmentation"]["size"] == [48, 64]


# ---------------------------------------------------------------------------
# fit_instances
# ---------------------------------------------------------------------------
def _fit_data(n, blur):
    images, inputs, gts = [], [], []
    for s in range(n):
        img, gt, soft, _ = _scene(np.random.default_rng(200 + s), n=2, blur=blur)
        images.append(img)
        inputs.append({"masks": soft, "scores": np.array([0.9, 0.8]), "classes": np.array([1, 1])})
        gts.append({"masks": gt, "classes": np.array([1, 1])})
    return images, inputs, gts


def test_fit_never_worse_than_input_on_held_out():
    pytest.importorskip("pycocotools")
    images, inputs, gts = _fit_data(6, blur=True)
    p = densecrf.fit_instances(images, inputs, gts, n_random=3, n_local=2, top=2, holdout=0.5, seed=1)
    info = p.info
    for g in ("ap", "ap50", "pq"):
        assert info["held_out_selected"][g] >= info["held_out_input"][g]
    if p.refine:
        assert info["held_out_selected"]["ap"] > info["held_out_input"]["ap"]


def test_fit_returns_no_refinement_for_perfect_inputs():
    # Inputs equal to the truth, where rectangles do not overlap: nothing can
    # beat them, so the fit must say "no refinement".
    pytest.importorskip("pycocotools")
    images, inputs, gts = _fit_data(4, blur=False)
    for inp, g in zip(inputs, gts, strict=True):
        inp["masks"] = g["masks"].astype(np.float32)
    p = densecrf.fit_instances(images, inputs, gts, n_random=2, n_local=0, top=2, holdout=0.5)
    assert not p.refine and p.info["selected"] == "no refinement"


def test_fit_selection_needs_a_reliable_gain():
    # Every finalist's bootstrap confidence is recorded, and a selected point
    # has one at or above the threshold; with the threshold at its top (no
    # resample may tie or lose) on these few images the same search returns
    # no refinement unless a finalist won on every resample.
    pytest.importorskip("pycocotools")
    images, inputs, gts = _fit_data(6, blur=True)
    p = densecrf.fit_instances(images, inputs, gts, n_random=3, n_local=2, top=2, holdout=0.5, seed=1)
    rows = p.info["finalists"]
    assert rows and all(0.0 <= r["gain_confidence"] <= 1.0 for r in rows)
    if p.refine:
        sel = [r for r in rows if r["held_out"] == p.info["held_out_selected"]]
        assert sel and sel[0]["gain_confidence"] >= 0.9 and sel[0]["no_worse"]
    strict = densecrf.fit_instances(
        images, inputs, gts, n_random=3, n_local=2, top=2, holdout=0.5, seed=1, confidence=0.999, n_boot=1000
    )
    if strict.refine:
        sel = [r for r in strict.info["finalists"] if r["held_out"] == strict.info["held_out_selected"]]
        assert sel[0]["gain_confidence"] >= 0.999
    with pytest.raises(ValueError, match="confidence"):
        densecrf.fit_instances(images, inputs, gts, confidence=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        densecrf.fit_instances(images, inputs, gts, n_boot=0)


def _stuff_of(gts, stuff_class=0):
    """Per image: a stuff map (stuff_class everywhere, as a network that sees no
    things would say) and the panoptic truth (the instances, stuff_class elsewhere)."""
    out = []
    for g in gts:
        m = np.asarray(g["masks"], dtype=bool)
        ids = np.zeros(m.shape[1:], dtype=np.int64)
        info = []
        for i, mi in enumerate(m):
            ids[mi] = i + 1
            info.append({"id": i + 1, "category_id": int(g["classes"][i])})
        ids[ids == 0] = len(info) + 1
        info.append({"id": len(info) + 1, "category_id": stuff_class})
        out.append((np.full(m.shape[1:], stuff_class, dtype=np.int64), (ids, info)))
    return out


def test_fit_with_stuff_scores_and_guards_the_stuff_pq():
    pytest.importorskip("pycocotools")
    from densecrf.metrics import PanopticQuality

    images, inputs, gts = _fit_data(6, blur=True)
    stuff = _stuff_of(gts)
    p = densecrf.fit_instances(images, inputs, gts, stuff=stuff, n_random=3, n_local=2, top=2, holdout=0.5, seed=1)
    info = p.info
    assert info["guard"] == ["ap", "ap50", "pq", "pq_stuff"] and info["stuff_guarded"]
    for g in ("ap", "ap50", "pq", "pq_stuff"):
        assert info["held_out_selected"][g] >= info["held_out_input"][g]
    # The held-out input's stuff PQ by hand: its masks (> 0.5) merged over the
    # stuff map in decreasing score order, against the panoptic truth.
    pq = PanopticQuality({0: False, 1: True})
    for j in info["held_out_indices"]:
        masks = inputs[j]["masks"] > 0.5
        pq.update(*instances_to_panoptic(stuff[j][0], masks, inputs[j]["classes"], inputs[j]["scores"]), *stuff[j][1])
    # the same sums in the same order: equal up to float64 rounding of the division
    assert info["held_out_input"]["pq_stuff"] == pytest.approx(pq.compute()["stuff"]["pq"], abs=1e-12)
    # without stuff: no stuff figure, the old guard
    q = densecrf.fit_instances(images, inputs, gts, n_random=1, n_local=0, top=1, holdout=0.5, seed=1)
    assert "pq_stuff" not in q.info["held_out_input"] and q.info["guard"] == ["ap", "ap50", "pq"]


def test_stuff_guard_declines_a_gain_on_things_that_costs_stuff():
    # The selection alone (fit's step 3) with scorers that say: the candidate
    # gains on every things figure on every held-out image (bootstrap
    # confidence 1) and loses 0.01 of stuff PQ. Guarding things only it is
    # chosen; guarding stuff too, no refinement.
    from densecrf.instance_fit import _scored, _search_and_select

    cats = {1: True}

    def counts(iou):  # 4 images, one category: summed IoU, TP 4, no FP or FN: PQ iou / 4
        return np.tile(np.array([[iou], [4.0], [0.0], [0.0]]), (4, 1, 1))

    inp = _scored({"ap": 0.3, "ap50": 0.5, "pq": 0.5, "pq_stuff": 0.60}, counts(2.0), cats, "things")
    gain = _scored({"ap": 0.4, "ap50": 0.6, "pq": 0.6, "pq_stuff": 0.59}, counts(2.4), cats, "things")
    for guard, refined in ((("ap", "ap50", "pq"), True), (("ap", "ap50", "pq", "pq_stuff"), False)):
        chosen, info = _search_and_select(
            lambda p: gain,
            lambda p: gain if p.refine else inp,
            InstanceParams(),
            "joint",
            metric="ap",
            guard=guard,
            confidence=0.9,
            n_boot=200,
            n_random=2,
            n_local=1,
            top=2,
            rng=np.random.default_rng(0),
            boot_rng=np.random.default_rng(1),
            say=lambda s: None,
            panoptic=False,
        )
        assert chosen.refine is refined, guard
        assert all(r["gain_confidence"] == 1.0 for r in info["finalists"])


def test_fit_checks_its_stuff():
    images, inputs, gts = _fit_data(3, blur=True)
    stuff = _stuff_of(gts)
    with pytest.raises(ValueError, match="needs stuff"):
        densecrf.fit_instances(images, inputs, gts, guard=("ap", "pq_stuff"))
    with pytest.raises(ValueError, match=r"one \(stuff_map, ground_truth\) per image"):
        densecrf.fit_instances(images, inputs, gts, stuff=stuff[:2])
    with pytest.raises(ValueError, match=r"stuff\[1\]'s map holds thing class 1"):
        densecrf.fit_instances(images, inputs, gts, stuff=[stuff[0], _stuff_of(gts[1:2], stuff_class=1)[0], stuff[2]])
    small = [(m[:10], gt) for m, gt in stuff]
    with pytest.raises(ValueError, match=r"stuff\[0\]'s map must be an integer \[H, W\]"):
        densecrf.fit_instances(images, inputs, gts, stuff=small)
    with pytest.raises(ValueError, match=r"stuff\[0\] must be \(stuff_map"):
        densecrf.fit_instances(images, inputs, gts, stuff=[m for m, _ in stuff])


def test_gain_confidence_by_hand():
    from densecrf.instance_fit import gain_confidence

    rng = np.random.default_rng(0)
    cats = {0: True, 1: True}
    # Per image [iou, tp, fp, fn] x 2 categories. The reference misses every segment the candidate finds.
    cand = np.tile(np.array([[0.9, 0.8], [1, 1], [0, 0], [0, 0]]), (5, 1, 1))
    ref = np.tile(np.array([[0.0, 0.0], [0, 0], [0, 0], [1, 1]]), (5, 1, 1))
    assert gain_confidence(cand, ref, cats, "all", 200, rng) == 1.0
    assert gain_confidence(ref, cand, cats, "all", 200, rng) == 0.0
    assert gain_confidence(cand, cand, cats, "all", 200, rng) == 0.0  # a tie is no gain
    # One image of five better, one worse by as much: wins only in resamples that draw the better one more often.
    mixed = ref.copy()
    mixed[0] = cand[0]
    worse = ref.copy()
    worse[1] = cand[1]
    c = gain_confidence(mixed, worse, cats, "all", 2000, rng)
    assert (
        0.3 < c < 0.42
    )  # P(more draws of image 0 than of image 1) in 5 draws = (1 - P(tie) 0.279) / 2 = 0.36; 2000 resamples: sd 0.011


def test_pq_gain_interval_by_hand():
    from densecrf.instance_fit import gain_confidence, per_image_counts, pq_gain_interval
    from densecrf.metrics import PanopticQuality

    rng = np.random.default_rng(1)
    cats = {0: True, 1: True}
    cand = np.tile(np.array([[0.9, 0.8], [1, 1], [0, 0], [0, 0]]), (5, 1, 1))
    ref = np.tile(np.array([[0.0, 0.0], [0, 0], [0, 0], [1, 1]]), (5, 1, 1))
    # Every image alike: every resample gives the same gain, PQ (0.9 + 0.8) / 2 against 0.
    g, lo, hi = pq_gain_interval(cand, ref, cats, "all", 200, rng)
    assert g == pytest.approx(0.85) and lo == pytest.approx(0.85) and hi == pytest.approx(0.85)
    # One image better, another worse by as much: no gain on the whole set, an interval on both sides of 0.
    mixed, worse = ref.copy(), ref.copy()
    mixed[0], worse[1] = cand[0], cand[1]
    g, lo, hi = pq_gain_interval(mixed, worse, cats, "all", 2000, rng)
    assert g == pytest.approx(0.0) and lo < 0 < hi
    # The 90 % interval's ends sit where the bootstrap's win rate says: about 36 % of resamples gain
    # (test_gain_confidence_by_hand), so the 5 % and 95 % quantiles are a loss and a gain.
    assert gain_confidence(mixed, worse, cats, "all", 2000, rng) < 0.5
    # The counts of a real PanopticQuality: one image, a prediction covering its segment exactly.
    ids = np.zeros((4, 4), dtype=np.int64)
    ids[:2] = 1
    info = [{"id": 1, "category_id": 0, "iscrowd": 0}]
    pq = PanopticQuality({0: True})
    pq.update(ids, info, ids, info)
    c = per_image_counts(pq)
    assert c.shape == (4, 1) and c[:, 0].tolist() == [1.0, 1.0, 0.0, 0.0]  # IoU 1, one TP, no FP or FN
    with pytest.raises(ValueError, match="same shape"):
        pq_gain_interval(cand, ref[:3], cats, "all", 10, rng)
    with pytest.raises(ValueError, match="level"):
        pq_gain_interval(cand, ref, cats, "all", 10, rng, level=1.0)
    # No stuff segment anywhere: PQ of stuff is undefined in every resample.
    g, lo, hi = pq_gain_interval(cand, ref, cats, "stuff", 10, rng)
    assert np.isnan(lo) and np.isnan(hi)


def _panoptic_fit_data(n, blur=True):
    images, probs, inputs, gts = [], [], [], []
    for s in range(n):
        rng = np.random.default_rng(300 + s)
        img, gt, soft, _ = _scene(rng, n=2, blur=blur)
        h, w = img.shape[:2]
        sem = rng.uniform(0.1, 1, size=(h, w, 3))  # classes 0, 1 stuff (left / right half), 2 things
        sem[:, : w // 2, 0] += 1.5
        sem[:, w // 2 :, 1] += 1.5
        sem[..., 2] += 2.5 * soft.max(axis=0)
        sem /= sem.sum(-1, keepdims=True)
        ids = np.where(np.arange(w)[None, :] < w // 2, 1, 2) * np.ones((h, 1), dtype=np.int64)
        info = [{"id": 1, "category_id": 0}, {"id": 2, "category_id": 1}]
        for i, m in enumerate(gt):
            ids[m] = 3 + i
            info.append({"id": 3 + i, "category_id": 2})
        images.append(img)
        probs.append(sem.astype(np.float32))
        inputs.append({"masks": soft, "classes": np.array([2, 2]), "scores": np.array([0.9, 0.8])})
        gts.append((ids, info))
    return images, probs, inputs, gts


def test_fit_panoptic_never_worse_than_input_on_held_out():
    images, probs, inputs, gts = _panoptic_fit_data(6)
    p = densecrf.fit_panoptic(images, probs, inputs, gts, [2], n_random=3, n_local=2, top=2, holdout=0.5, seed=1)
    info = p.info
    assert info["method"] == "fit_panoptic" and len(info["held_out_indices"]) == 3
    for g in ("pq", "pq_things", "pq_stuff"):
        assert info["held_out_selected"][g] >= info["held_out_input"][g]
    if p.refine:
        assert info["held_out_selected"]["pq"] > info["held_out_input"]["pq"]
    # The held-out input row is refine_panoptic without refinement, scored here by hand.
    from densecrf.metrics import PanopticQuality

    pq = PanopticQuality({0: False, 1: False, 2: True})
    for j in info["held_out_indices"]:
        ids, segs = refine_panoptic(images[j], probs[j], inputs[j], [2], params=InstanceParams.no_refinement())
        pq.update(ids, segs, *gts[j])
    assert info["held_out_input"]["pq"] == pytest.approx(pq.compute()["all"]["pq"], abs=1e-12)  # the same sums
    assert p.to_dict()["class_power"] > 0 and InstanceParams.from_dict(p.to_dict()) == p


def test_fit_panoptic_returns_no_refinement_for_perfect_inputs():
    # Instances and stuff probabilities equal to the truth: nothing can beat them.
    images, probs, inputs, gts = _panoptic_fit_data(4, blur=False)
    for sp, inp, (ids, _) in zip(probs, inputs, gts, strict=True):
        inp["masks"] = np.stack([(ids == 3), (ids == 4)]).astype(np.float32)
        sp[:] = 0.0
        sp[..., 0] = ids == 1
        sp[..., 1] = ids == 2
        sp[..., 2] = ids >= 3
    p = densecrf.fit_panoptic(images, probs, inputs, gts, [2], n_random=2, n_local=0, top=2, holdout=0.5)
    assert not p.refine and p.info["selected"] == "no refinement"
    assert p.info["held_out_selected"]["pq"] == pytest.approx(
        1.0
    )  # every segment matched with IoU 1: PQ is 1 up to float rounding (approx's 1e-6)


def test_fit_panoptic_checks_its_arguments():
    images, probs, inputs, gts = _panoptic_fit_data(3)
    with pytest.raises(ValueError, match="metrics must be"):
        densecrf.fit_panoptic(images, probs, inputs, gts, [2], metric="ap")
    with pytest.raises(ValueError, match="one entry per image"):
        densecrf.fit_panoptic(images, probs[:2], inputs, gts, [2])
    with pytest.raises(ValueError, match=r"ground_truth\[0\] must be \(ids, segments_info\)"):
        densecrf.fit_panoptic(images, probs, inputs, [g[0] for g in gts], [2])
    bad = [(g[0], g[1] + [{"id": 9, "category_id": 7}]) for g in gts]
    with pytest.raises(ValueError, match="category 7"):
        densecrf.fit_panoptic(images, probs, inputs, bad, [2])


def test_import_stays_light():
    code = (
        "import sys, densecrf, densecrf.instances, densecrf.instance_fit, densecrf.coco, densecrf.metrics; "
        "print('torch' in sys.modules, 'pycocotools' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=PACKAGE_PARENT),
        cwd=PACKAGE_PARENT,
    ).stdout.split()
    assert out == ["False", "False"]


def test_instances_to_panoptic_drops_mostly_hidden():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :, :3] = True
    masks[1, :, 1:3] = True  # entirely under instance 0 (higher score): dropped
    ids, info = instances_to_panoptic(np.zeros((4, 4), int), masks, [5, 5], [0.9, 0.8])
    assert [s["instance"] for s in info if s["isthing"]] == [0]
    assert (ids[:, 3] == 2).all() and info[1]["category_id"] == 0


def test_instance_pngs_roundtrip(tmp_path, rng):
    pytest.importorskip("PIL")
    from densecrf.coco import read_instance_pngs, write_instance_pngs

    _img, gt, soft, _ = _scene(rng, n=3)
    write_instance_pngs(tmp_path, "f", soft, [0.9, 0.5, 0.1], [1, 2, 3])
    back = read_instance_pngs(tmp_path, "f")
    np.testing.assert_allclose(back["masks"], soft, atol=0.5 / 255 + 1e-6)  # 8-bit quantisation: half a step
    assert back["scores"].tolist() == [0.9, 0.5, 0.1] and back["classes"].tolist() == [1, 2, 3]
    write_instance_pngs(tmp_path / "b", "g", gt)
    np.testing.assert_array_equal(read_instance_pngs(tmp_path / "b", "g")["masks"] > 0.5, gt)
    os.remove(tmp_path / "b" / "g_instances.json")  # bare PNGs: scores 1, class 0
    assert read_instance_pngs(tmp_path / "b", "g")["scores"].tolist() == [1.0, 1.0, 1.0]


def test_fit_checks_its_arguments():
    images, inputs, gts = _fit_data(3, blur=True)
    with pytest.raises(ValueError, match="holdout"):
        densecrf.fit_instances(images, inputs, gts, holdout=1)
    with pytest.raises(ValueError, match="holdout"):
        densecrf.fit_instances(images, inputs, gts, holdout=[0, 1, 2])
    with pytest.raises(ValueError, match="one entry per image"):
        densecrf.fit_instances(images, inputs[:2], gts)
    with pytest.raises(ValueError, match="metrics must be"):
        densecrf.fit_instances(images, inputs, gts, metric="iou")
