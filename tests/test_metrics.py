"""Tests of the scorers (wsss.metrics): confusion, IoU, the threshold sweep, mAP."""
from __future__ import annotations

import math

import numpy as np
import pytest

from wsss.metrics import (
    IGNORE,
    SeedScorer,
    ThresholdSweep,
    argmax_labels,
    average_precision,
    confusion,
    mean_ap,
    scores,
    threshold_labels,
)

# ------------------------------------------------------------------------------- confusion

GT = np.array([[0, 1, 2],
               [1, 1, IGNORE],
               [2, 0, 0]], dtype=np.uint8)
PRED = np.array([[0, 1, 1],
                 [1, 2, 0],
                 [2, 2, 0]], dtype=np.uint8)
# (gt, pred) pairs, row by row: (0,0) (1,1) (2,1) / (1,1) (1,2) [ignored] / (2,2) (0,2) (0,0)
CONF = np.array([[2, 0, 1],
                 [0, 2, 1],
                 [0, 1, 1]])


def test_confusion_hand_case():
    conf = confusion(PRED, GT, 3)
    assert conf.dtype == np.int64
    np.testing.assert_array_equal(conf, CONF)
    assert conf.sum() == 8  # 9 pixels, one ignored


def test_confusion_ignore_pixel_prediction_does_not_matter():
    pred = PRED.copy()
    pred[1, 2] = 2
    np.testing.assert_array_equal(confusion(pred, GT, 3), CONF)


def test_confusion_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        confusion(PRED[:2], GT, 3)


# ------------------------------------------------------------------------------- scores

def test_scores_by_hand():
    s = scores(CONF, ["bg", "a", "b"])
    pc = s["per_class"]
    # tp = [2, 2, 1], gt totals (rows) = [3, 3, 2], predicted totals (columns) = [2, 3, 3]
    assert pc["bg"]["iou"] == pytest.approx(2 / (3 + 2 - 2))
    assert pc["a"]["iou"] == pytest.approx(2 / (3 + 3 - 2))
    assert pc["b"]["iou"] == pytest.approx(1 / (2 + 3 - 1))
    assert [pc[n]["precision"] for n in ("bg", "a", "b")] == pytest.approx([2 / 2, 2 / 3, 1 / 3])
    assert [pc[n]["recall"] for n in ("bg", "a", "b")] == pytest.approx([2 / 3, 2 / 3, 1 / 2])
    assert s["miou"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 4) / 3)  # 17/36
    assert s["pixel_accuracy"] == pytest.approx(5 / 8)


def test_scores_default_names():
    s = scores(CONF)
    assert list(s["per_class"]) == ["0", "1", "2"]


def test_scores_absent_class_excluded_from_mean():
    conf = np.zeros((4, 4), dtype=np.int64)
    conf[:3, :3] = CONF  # class 3: neither in ground truth nor predicted
    s = scores(conf)
    assert s["per_class"]["3"] == {"iou": None, "precision": None, "recall": None}
    assert s["miou"] == pytest.approx(17 / 36)


def test_scores_class_never_predicted():
    # class 2 is in the ground truth but never predicted: IoU 0 (counts in the mean), precision None
    conf = np.array([[3, 0, 0],
                     [0, 2, 0],
                     [1, 1, 0]])
    s = scores(conf)
    c2 = s["per_class"]["2"]
    assert c2["iou"] == 0.0 and c2["recall"] == 0.0 and c2["precision"] is None
    assert s["miou"] == pytest.approx((3 / 4 + 2 / 3 + 0) / 3)


# ------------------------------------------------------------------------------- threshold sweep

def sweep_by_threshold(k, thresholds, images):
    sweep = ThresholdSweep(k, thresholds)
    for fg, keys, gt in images:
        sweep.update(fg, keys, gt)
    return dict(sweep.results())


def brute_force(k, t, images):
    return sum(confusion(threshold_labels(fg, keys, t), gt, k) for fg, keys, gt in images)


def random_images(rng, k, thresholds, n):
    """n images with random present classes (some with none), scores that often tie a threshold
    exactly or each other, and ignore pixels."""
    images = []
    grid = np.asarray(thresholds, dtype=np.float64)
    for i in range(n):
        h, w = rng.integers(2, 9, size=2)
        nk = 0 if i == 0 else int(rng.integers(1, k))
        keys = sorted(rng.choice(np.arange(1, k), size=nk, replace=False).tolist())
        fg = rng.random((nk, h, w))
        tie = rng.random((nk, h, w)) < 0.4
        fg[tie] = rng.choice(grid, size=int(tie.sum()))  # exact threshold values
        if nk >= 2:  # some exact ties between two classes
            fg[1, 0, :] = fg[0, 0, :]
        fg = fg.astype(np.float32) if i % 2 else fg
        gt = rng.integers(0, k, size=(h, w)).astype(np.uint8)
        gt[rng.random((h, w)) < 0.15] = IGNORE
        images.append((fg, keys, gt))
    return images


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sweep_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    k = 5
    thresholds = [round(0.05 * i, 6) for i in range(20)]
    images = random_images(rng, k, thresholds, n=7)
    # given unsorted: results come back sorted
    shuffled = list(rng.permutation(thresholds))
    got = sweep_by_threshold(k, shuffled, images)
    assert list(got) == sorted(thresholds)
    for t in thresholds:
        want = brute_force(k, t, images)
        np.testing.assert_array_equal(got[t], want, err_msg=f"threshold {t}")
    # every threshold's matrix counts every labelled pixel once
    total = sum(int((gt != IGNORE).sum()) for _, _, gt in images)
    assert all(c.sum() == total for c in got.values())


def test_sweep_random_thresholds_float32_scores():
    rng = np.random.default_rng(5)
    k = 4
    thresholds = sorted(rng.random(7).tolist())
    images = []
    for _ in range(5):
        keys = [1, 3]
        fg = rng.random((2, 6, 5)).astype(np.float32)
        gt = rng.integers(0, k, size=(6, 5)).astype(np.uint8)
        images.append((fg, keys, gt))
    got = sweep_by_threshold(k, thresholds, images)
    for t in thresholds:
        np.testing.assert_array_equal(got[t], brute_force(k, t, images))


SCORES_1x4 = np.array([[[0.1, 0.4, 0.6, 0.9]]])  # (k=1, H=1, W=4), class 2
GT_1x4 = np.array([[0, 0, 2, 2]], dtype=np.uint8)


def test_sweep_hand_case_clean_threshold():
    (t, conf), = ThresholdSweep_results(3, [0.5], [(SCORES_1x4, [2], GT_1x4)])
    assert t == 0.5
    np.testing.assert_array_equal(conf, [[2, 0, 0], [0, 0, 0], [0, 0, 2]])
    s = scores(conf)
    assert s["miou"] == 1.0  # class 1 absent: left out
    assert s["per_class"]["1"]["iou"] is None


def test_sweep_hand_case_low_threshold():
    (t, conf), = ThresholdSweep_results(3, [0.05], [(SCORES_1x4, [2], GT_1x4)])
    np.testing.assert_array_equal(conf, [[0, 0, 2], [0, 0, 0], [0, 0, 2]])
    s = scores(conf)
    assert s["per_class"]["0"]["iou"] == 0.0
    assert s["per_class"]["2"]["iou"] == 0.5
    assert s["miou"] == 0.25


def test_sweep_hand_case_several_thresholds():
    res = dict(ThresholdSweep_results(3, [0.95, 0.5, 0.05, 0.4], [(SCORES_1x4, [2], GT_1x4)]))
    # foreground = scores strictly above t: 0.05 -> 4 px, 0.4 -> 2 (0.4 itself is a tie), 0.5 -> 2, 0.95 -> 0
    assert {t: int(c[:, 2].sum()) for t, c in res.items()} == {0.05: 4, 0.4: 2, 0.5: 2, 0.95: 0}


def test_sweep_tie_is_background():
    fg = np.array([[[0.5, 0.5000001, 0.4999999]]])
    gt = np.array([[1, 1, 1]], dtype=np.uint8)
    (t, conf), = ThresholdSweep_results(2, [0.5], [(fg, [1], gt)])
    np.testing.assert_array_equal(conf, [[0, 0], [2, 1]])
    # the same as threshold_labels
    np.testing.assert_array_equal(threshold_labels(fg, [1], 0.5), [[0, 1, 0]])


def test_sweep_ties_between_classes_go_to_first_key():
    fg = np.array([[[0.7]], [[0.7]]])
    gt = np.array([[3]], dtype=np.uint8)
    (t, conf), = ThresholdSweep_results(4, [0.2], [(fg, [1, 3], gt)])
    assert conf[3, 1] == 1
    assert threshold_labels(fg, [1, 3], 0.2)[0, 0] == 1


def test_sweep_image_without_keys_is_background():
    gt = np.array([[0, 1], [2, IGNORE]], dtype=np.uint8)
    fg = np.zeros((0, 2, 2))
    res = ThresholdSweep_results(3, [0.0, 0.5], [(fg, [], gt)])
    for _, conf in res:
        np.testing.assert_array_equal(conf, [[1, 0, 0], [1, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(threshold_labels(fg, [], 0.0), np.zeros((2, 2)))


def test_sweep_shape_mismatch():
    sweep = ThresholdSweep(3, [0.5])
    with pytest.raises(ValueError, match="differ in shape"):
        sweep.update(np.zeros((1, 2, 3)), [1], np.zeros((3, 2), dtype=np.uint8))


def ThresholdSweep_results(k, thresholds, images):  # noqa: N802 - reads as the class it drives
    sweep = ThresholdSweep(k, thresholds)
    for fg, keys, gt in images:
        sweep.update(fg, keys, gt)
    return sweep.results()


def test_argmax_labels():
    s = np.array([[[0.2, 0.9]], [[0.5, 0.1]]])
    np.testing.assert_array_equal(argmax_labels(s, [0, 7]), [[7, 0]])


# ------------------------------------------------------------------------------- mAP

def hand_ap(score, positive):
    """Mean, over the positives, of the precision at the positive's rank (no ties in score)."""
    order = np.argsort(-np.asarray(score), kind="stable")
    pos = np.asarray(positive, dtype=bool)[order]
    hits = np.cumsum(pos)
    ranks = np.arange(1, len(pos) + 1)
    return float(np.mean((hits / ranks)[pos]))


SCORES = np.array([[0.6, 0.9, 0.2],
                   [0.3, 0.8, 0.1],
                   [0.5, 0.4, 0.7]])
LABELS = np.array([[1, 0, 1],
                   [0, 0, 1],
                   [0, 0, 0]])  # class 1 has no positive; image 2 has no positive


def test_hand_ap_helper_itself():
    # ranking neg, pos, pos: precisions 1/2 and 2/3
    assert hand_ap([0.9, 0.6, 0.2], [0, 1, 1]) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_average_precision_matches_hand():
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.permutation(10) / 10.0  # distinct
        y = rng.random(10) < 0.4
        if not y.any():
            y[0] = True
        assert average_precision(s, y) == pytest.approx(hand_ap(s, y))


def test_mean_ap_hand_example():
    r = mean_ap(SCORES, LABELS)
    # per image: img0 ranks c1(neg) c0(pos) c2(pos): (1/2 + 2/3)/2 = 7/12
    #            img1 ranks c1 c0 c2(pos): 1/3;  img2 has no positive: skipped
    ap_img = [hand_ap(SCORES[0], LABELS[0]), hand_ap(SCORES[1], LABELS[1])]
    assert ap_img == pytest.approx([7 / 12, 1 / 3])
    assert r["map_per_image"] == pytest.approx(np.mean(ap_img))
    assert r["map_per_image"] == pytest.approx(11 / 24)
    # per class: c0 images ranked 0(pos) 2 1: 1;  c1 no positive: skipped;
    #            c2 ranked 2(neg) 0(pos) 1(pos): 7/12
    assert r["ap_per_class"][0] == pytest.approx(hand_ap(SCORES[:, 0], LABELS[:, 0])) == pytest.approx(1.0)
    assert r["ap_per_class"][1] is None
    assert r["ap_per_class"][2] == pytest.approx(hand_ap(SCORES[:, 2], LABELS[:, 2])) == pytest.approx(7 / 12)
    assert r["map_per_class"] == pytest.approx((1 + 7 / 12) / 2)


def test_mean_ap_skipping_changes_the_result():
    """The skipped image/class really is skipped (not counted as AP 0)."""
    r = mean_ap(SCORES, LABELS)
    assert r["map_per_image"] != pytest.approx((7 / 12 + 1 / 3 + 0) / 3)
    assert r["map_per_class"] != pytest.approx((1 + 0 + 7 / 12) / 3)


def test_mean_ap_no_positive_anywhere():
    r = mean_ap(SCORES, np.zeros_like(LABELS))
    assert math.isnan(r["map_per_image"]) and math.isnan(r["map_per_class"])
    assert r["ap_per_class"] == [None, None, None]


def test_mean_ap_perfect_ranking():
    labels = np.array([[1, 0], [0, 1], [1, 1]])
    s = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.6]])
    r = mean_ap(s, labels)
    assert r["map_per_image"] == 1.0
    assert r["map_per_class"] == 1.0


def _square(x: int) -> int:
    return x * x


def test_scoring_in_parallel_chunks_equals_one_pass():
    """evaluate scores a split in chunks, in processes: merged counts equal one scorer's, exactly."""
    from wsss.runtime import bounded_map

    rng = np.random.default_rng(0)
    images = []
    for _ in range(7):
        gt = rng.integers(0, 4, size=(9, 11)).astype(np.uint8)
        gt[0, :3] = 255
        keys = np.array(sorted(rng.choice([1, 2, 3], size=2, replace=False)))
        images.append(({"keys": keys, "cam": rng.random((2, 9, 11)).astype(np.float32),
                        "rcam": rng.random((3, 9, 11)).astype(np.float32)}, gt))
    names, ts = ["a", "b", "c"], [0.1, 0.3, 0.5, 0.7]
    whole = SeedScorer(names, ts)
    for maps, gt in images:
        whole.update(maps, gt)
    parts = SeedScorer(names, ts)
    for chunk in (images[:3], images[3:4], images[4:]):
        part = SeedScorer(names, ts)
        for maps, gt in chunk:
            part.update(maps, gt)
        parts.merge(part)
    a, b = whole.summary(), parts.summary()
    assert a.keys() == b.keys() == {"cam", "rcam_fg", "rcam"}
    for kind in a:
        assert a[kind]["miou"] == b[kind]["miou"] and a[kind]["per_class"] == b[kind]["per_class"]
    with pytest.raises(ValueError):
        parts.merge(SeedScorer(names, [0.2]))
    assert sorted(bounded_map(_square, range(20), workers=2)) == [x * x for x in range(20)]
    assert list(bounded_map(_square, range(5), workers=1)) == [0, 1, 4, 9, 16]
