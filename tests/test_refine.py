"""Refinement: dense CRF, seed -> label conversions, confident labels, the per-split runner."""
from __future__ import annotations

import numpy as np
import pytest

from wsss import metrics
from wsss.data import files
from wsss.refine import labels, run
from wsss.refine.crf import CRFConfig, crf_from_labels, crf_from_probs
from wsss.refine.run import RefineConfig, pseudo_label, refine_split

IRN_CLEAN = CRFConfig(bilateral_sxy=50, bilateral_srgb=5)


def two_tone(h=40, w=60, edge=30) -> np.ndarray:
    img = np.full((h, w, 3), 30, dtype=np.uint8)
    img[:, edge:] = 220
    return img


def test_crf_labels_pull_noisy_boundary_to_image_edge():
    """A label map whose boundary sits 5 px off the image edge, with 10 % salt noise, is pulled to the edge."""
    img = two_tone()
    lab = np.zeros((40, 60), dtype=np.int64)
    lab[:, 25:] = 1
    flip = np.random.default_rng(0).random(lab.shape) < 0.1
    lab[flip] = 1 - lab[flip]
    out = crf_from_labels(img, lab, 2, gt_prob=0.7, cfg=IRN_CLEAN)
    assert (out[:, :30] == 0).all() and (out[:, 30:] == 1).all()


def test_crf_probs_follow_edge_and_are_distributions():
    img = two_tone()
    fg = np.zeros((40, 60), dtype=np.float32)
    fg[:, 24:] = 0.7   # the activation spills 6 px over the edge at 30
    probs = np.stack([1 - fg, fg])
    q = crf_from_probs(img, probs)
    assert q.shape == (2, 40, 60)
    np.testing.assert_allclose(q.sum(axis=0), 1.0, atol=1e-4)
    assert (q.argmax(0)[:, :30] == 0).all() and (q.argmax(0)[:, 30:] == 1).all()


def test_crf_size_mismatch():
    with pytest.raises(ValueError, match="differ in size"):
        crf_from_labels(two_tone(), np.zeros((10, 10), dtype=np.int64), 2)


def test_seed_labels_equal_threshold_labels():
    """Background padded at t, argmax == metrics.threshold_labels at t (fg iff score > t, ties to bg)."""
    rng = np.random.default_rng(1)
    cam = np.round(rng.random((3, 7, 9)), 1).astype(np.float32)  # many exact ties with t
    keys = [2, 5, 6]
    for t in (0.0, 0.3, 0.5, 1.0):
        compact = labels.seed_labels(labels.seed_scores({"cam": cam, "keys": keys}, "cam", t))
        np.testing.assert_array_equal(labels.to_class_ids(compact, keys), metrics.threshold_labels(cam, keys, t))


def test_rcam_scores_and_v1_refusal():
    rcam = np.zeros((2, 2, 2), dtype=np.float32)
    rcam[1, 0, 0] = 1.0
    maps = {"cam": np.zeros((1, 2, 2)), "rcam": rcam, "keys": np.array([4])}
    ids = labels.to_class_ids(labels.seed_labels(labels.seed_scores(maps, "rcam", 0.9)), [4])
    np.testing.assert_array_equal(ids, [[4, 0], [0, 0]])
    with pytest.raises(ValueError, match="R-CAM"):
        labels.seed_scores({"cam": rcam[:1], "keys": [4]}, "rcam", 0.5)


def test_to_class_ids_keeps_unsure():
    np.testing.assert_array_equal(labels.to_class_ids(np.array([[0, 1, 2, 255]]), [3, 7]), [[0, 3, 7, 255]])


def _cuts(cam, fg=0.3, bg=0.05, rcam_bg_scale=0.5, kind="cam"):
    maps = {"keys": np.arange(1, cam.shape[0] + 1), "cam": cam}
    if kind == "rcam":
        maps["rcam"] = cam
    return labels.confident_cuts(maps, kind, fg, bg, rcam_bg_scale)


def test_confident_labels_by_hand():
    """IRN's cam_to_ir_label on one class: > 0.3 foreground, <= 0.05 background, unsure between."""
    cam = np.array([[[0.9, 0.31, 0.3, 0.1, 0.05, 0.0]]])  # float64: 0.3 is exactly the threshold
    out = labels.confident_labels(*_cuts(cam))
    np.testing.assert_array_equal(out, [[1, 1, 255, 255, 0, 0]])
    two = np.concatenate([cam, cam[:, :, ::-1]])  # a second class, mirrored: the top class wins
    np.testing.assert_array_equal(labels.confident_labels(*_cuts(two)), [[1, 1, 255, 255, 2, 2]])
    with pytest.raises(ValueError):
        _cuts(cam, fg=0.05, bg=0.3)


def test_confident_labels_irn_rule_on_a_2x3_map():
    """IRN: ``conf = fg; conf[fg == 0] = 255; conf[bg + fg == 0] = 0``. Cleaning can make the low
    cut say background where the high cut says foreground (here the top row): the pixel keeps the
    high cut's class (the rule before overwrote it with background)."""
    high = np.array([[1, 1, 0], [0, 0, 2]], dtype=np.uint8)
    low = np.array([[0, 0, 1], [0, 2, 2]], dtype=np.uint8)
    np.testing.assert_array_equal(labels.confident_labels(high, low), [[1, 1, 255], [0, 255, 2]])


def test_confident_labels_sipe_rule_on_a_2x3_rcam():
    """SIPE's cam2ir on an R-CAM (background first): the high cut is its argmax, the low cut the
    argmax with the background halved; no thresholds (conf_fg / conf_bg play no part)."""
    rcam = np.array([[[0.6, 0.9, 0.3], [0.8, 0.5, 0.2]],      # background
                     [[0.4, 0.4, 0.4], [0.4, 0.1, 0.1]]],     # the class
                    dtype=np.float32)
    # (0.6, 0.4): bg wins, halved it loses -> unsure; (0.9, 0.4): bg even halved -> background;
    # (0.3, 0.4): class; (0.8, 0.4): tie after halving goes to bg -> background; (0.5, 0.1) bg;
    # (0.2, 0.1): bg wins, halved 0.1 ties -> background
    for fg, bg in [(0.3, 0.05), (0.9, 0.8)]:
        out = labels.confident_labels(*_cuts(rcam, fg, bg, kind="rcam"))
        np.testing.assert_array_equal(out, [[255, 0, 1], [0, 0, 0]])
    out = labels.confident_labels(*_cuts(rcam, rcam_bg_scale=0.25, kind="rcam"))
    np.testing.assert_array_equal(out, [[255, 255, 1], [255, 0, 255]])


def test_confident_label_cleans_both_cuts(monkeypatch):
    calls = []

    def clean(image, lab, n, gt_prob, cfg):
        calls.append(n)
        return np.zeros_like(lab)  # a cleaner that wipes everything to background

    monkeypatch.setattr(run.crf, "crf_from_labels", clean)
    maps = {"keys": np.array([2, 5]), "cam": np.full((2, 3, 3), 0.9, dtype=np.float32)}
    cfg = run.ConfidentConfig(kind="cam", fg_threshold=0.3, bg_threshold=0.05)
    out = run.confident_label(np.zeros((3, 3, 3), np.uint8), maps, cfg)
    assert calls == [3, 3] and (out == 0).all()


def test_pseudo_label_confusion_unsure_is_background():
    gt = np.array([[0, 1], [1, 255]], dtype=np.uint8)
    pred = np.array([[255, 1], [0, 3]], dtype=np.uint8)
    conf = metrics.pseudo_label_confusion(pred, gt, 4)
    assert conf[0, 0] == 1 and conf[1, 1] == 1 and conf[1, 0] == 1 and conf.sum() == 3
    with pytest.raises(ValueError, match="ground truth"):
        metrics.pseudo_label_confusion(pred[:1], gt, 4)


@pytest.mark.parametrize("method, unary", [("none", "prob"), ("crf", "prob"), ("crf", "labels")])
def test_refine_split_writes_palette_pngs(tmp_path, method, unary):
    """The runner (2 processes) writes one palette PNG per image, class ids of the image's keys,
    into a pack, reading the seed maps from a pack of two parts."""
    from wsss import artifacts, packs

    tasks, cams = [], {}
    for i in range(3):
        img = two_tone()
        cam = np.zeros((1, 40, 60), dtype=np.float32)
        cam[0, :, 26:] = 0.9
        (tmp_path / f"{i}.png").write_bytes(files.palette_png(img[..., 0]))  # unused: keep the image
        img_path = tmp_path / f"{i}.jpg"
        import cv2

        cv2.imwrite(str(img_path), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
        cams[artifacts.cam_name(str(i))] = artifacts.cams_bytes([5], {"cam": cam})
        tasks.append((img_path, str(i)))
    writer = packs.PackWriter(tmp_path / "cams", list(cams), per_part=2)   # two parts
    for name, data in cams.items():
        writer.add(name, data)
    writer.close()
    cfg = RefineConfig(method=method, kind="cam", bg_threshold=0.5, crf_unary=unary,
                       crf=IRN_CLEAN if unary == "labels" else CRFConfig())
    refine_split(tasks, tmp_path / "cams", cfg, tmp_path / "pseudo", workers=2)
    out = packs.Pack(tmp_path / "pseudo")
    assert list(out.members) == [artifacts.label_name(str(i)) for i in range(3)]
    for _, image_id in tasks:
        lab = files.read_mask(out.member(artifacts.label_name(image_id)))
        assert lab.shape == (40, 60) and set(np.unique(lab)) == {0, 5}
        if method == "crf":
            assert (lab[:, :30] == 0).all() and (lab[:, 30:] == 5).all()  # pulled to the edge at 30
        else:
            assert (lab[:, 26:] == 5).all() and (lab[:, :26] == 0).all()


def test_pseudo_label_unknown_method():
    maps = {"cam": np.zeros((1, 4, 4), dtype=np.float32), "keys": np.array([1])}
    with pytest.raises(ValueError, match="refine.method"):
        pseudo_label(np.zeros((4, 4, 3), np.uint8), maps, RefineConfig(method="magic", kind="cam", bg_threshold=0.5))
