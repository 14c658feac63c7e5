"""Metrics against hand-computed cases."""

import doctest

import numpy as np
import pytest

import densecrf.metrics as M


def test_confusion_and_semantic_metrics_by_hand():
    # Counted pixels (truth, pred): (0, 0), (1, 1), (1, 2); 255 is ignored.
    pred = [[0, 1], [2, 2]]
    target = [[0, 1], [1, 255]]
    cm = M.confusion_matrix(pred, target, 3, ignore_index=255)
    assert np.array_equal(cm, [[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    m = M.SegmentationMetrics(3, ignore_index=255)
    m.update(pred, target)
    assert m.pixel_accuracy() == pytest.approx(2 / 3)  # float64 ratios of counts: approx's 1e-6 is rounding only
    # IoU: class 0: 1/1; class 1: 1 / (1 + 0 + 1); class 2: 0 / (0 + 1 + 0)
    assert np.allclose(m.iou(), [1.0, 0.5, 0.0])
    assert m.mean_iou() == pytest.approx(0.5)
    # class accuracy: class 2 has no ground truth: NaN, left out of the mean
    acc = m.class_accuracy()
    assert acc[0] == 1.0 and acc[1] == 0.5 and np.isnan(acc[2])
    assert m.mean_class_accuracy() == pytest.approx(0.75)
    # accumulation over images sums the counts (not a mean of per-image IoUs)
    m.update([[1]], [[1]])
    assert np.allclose(m.iou(), [1.0, 2 / 3, 0.0])


def test_confusion_rejects_bad_labels():
    with pytest.raises(ValueError, match="outside"):
        M.confusion_matrix([[3]], [[0]], 3)
    with pytest.raises(ValueError, match="outside"):
        M.confusion_matrix([[0]], [[255]], 3)  # 255 without ignore_index
    with pytest.raises(ValueError, match="same shape"):
        M.confusion_matrix([[0, 1]], [[0]], 3)
    with pytest.raises(TypeError, match="integer"):
        M.confusion_matrix([[0.5]], [[0]], 3)


def test_panoptic_quality_by_hand():
    # Class 0 is one background segment; class 1 has instances.
    gt_cls = np.zeros((4, 4), int)
    gt_ins = np.zeros((4, 4), int)
    gt_cls[0:2, 0:2], gt_ins[0:2, 0:2] = 1, 1  # car A, 4 px
    gt_cls[2:4, 2:4], gt_ins[2:4, 2:4] = 1, 2  # car B, 4 px
    pr_cls = np.zeros((4, 4), int)
    pr_ins = np.zeros((4, 4), int)
    pr_cls[0:2, 0:2], pr_ins[0:2, 0:2] = 1, 7  # car a: A plus one pixel, IoU 4/5
    pr_cls[0, 2], pr_ins[0, 2] = 1, 7
    pr_cls[3, 0:2], pr_ins[3, 0:2] = 1, 8  # car b: on background, a false positive
    res = M.panoptic_quality(pr_cls, pr_ins, gt_cls, gt_ins, 2)
    # cars: TP 1 (IoU 0.8), FP 1, FN 1: SQ 0.8, RQ 1 / 2, PQ 0.4
    pq1, sq1, rq1, tp, fp, fn = res["per_class"][1]
    assert (tp, fp, fn) == (1, 1, 1)
    assert sq1 == pytest.approx(0.8) and rq1 == pytest.approx(0.5) and pq1 == pytest.approx(0.4)
    # background: 8 true px, 9 predicted, 5 shared: IoU 5/12 < 0.5, no match
    assert res["per_class"][0][3:] == (0, 1, 1)
    assert res["pq"] == pytest.approx(0.2) and res["sq"] == pytest.approx(0.4) and res["rq"] == pytest.approx(0.25)
    # identical maps: PQ = SQ = RQ = 1
    same = M.panoptic_quality(gt_cls, gt_ins, gt_cls, gt_ins, 2)
    assert same["pq"] == same["sq"] == same["rq"] == 1.0
    # ignored pixels leave both maps: ignoring car B's pixels removes the FN
    gt_void = gt_cls.copy()
    gt_void[2:4, 2:4] = 255
    res2 = M.panoptic_quality(pr_cls, pr_ins, gt_void, gt_ins, 2, ignore_index=255)
    assert res2["per_class"][1][3:] == (1, 1, 0)


def test_instance_ap_by_hand():
    def mask(*idx):
        m = np.zeros(10, bool)
        m[list(idx)] = True
        return m

    gts = [mask(0, 1, 2), mask(4, 5, 6, 7, 8), mask(9)]
    preds = [
        mask(0, 1, 2),  # 0.9: G1 exactly: TP
        mask(3),  # 0.8: nothing: FP
        mask(4, 5, 6),  # 0.7: G2, IoU 3/5: TP
        mask(0, 1, 2),
    ]  # 0.6: G1 again, already taken: FP
    scores = [0.9, 0.8, 0.7, 0.6]
    # precision 1, 1/2, 2/3, 1/2 at recall 1/3, 1/3, 2/3, 2/3; monotone
    # precision 1 up to recall 1/3 and 2/3 up to 2/3: AP = 1/3 + 2/9
    assert M.instance_average_precision(preds, scores, gts) == pytest.approx(1 / 3 + 2 / 9)
    # the order follows the scores, not the list order
    perm = [2, 0, 3, 1]
    assert M.instance_average_precision([preds[i] for i in perm], [scores[i] for i in perm], gts) == pytest.approx(
        1 / 3 + 2 / 9
    )
    # a stricter threshold turns the 3/5 match into a miss: AP = 1/3
    assert M.instance_average_precision(preds, scores, gts, iou_threshold=0.7) == pytest.approx(1 / 3)
    assert np.isnan(M.instance_average_precision(preds, scores, np.zeros((0, 10), bool)))
    with pytest.raises(ValueError, match="pred_scores"):
        M.instance_average_precision(preds, scores[:2], gts)


def test_docstring_example():
    # the class docstring's example, checked as a doctest
    result = doctest.testmod(M, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0
