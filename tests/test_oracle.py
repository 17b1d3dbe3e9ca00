"""Tests that would catch a wrong number: the `evaluate` stage scored against oracles.

* Ground truth written as the seeds, the pseudo labels and the class scores must score exactly
  1.0 (seed mIoU over the whole threshold sweep, pseudo-label mIoU, both mAPs).
* The same ground truth given to the wrong images (each image gets the next image's mask, resized
  with nearest neighbour: the right classes in the wrong places) must score what an independent
  re-count in this file gives, far below 1.
* The mAP that `evaluate` reports is the mAP that training logged for its last epoch.
* V2: an R-CAM made from the ground truth scores 1.0 by the argmax over its C+1 channels, and
  ``seed.miou`` follows the map ``models/model.json`` names (R-CAM or CAM).

The pipeline's own outputs come from the session's tiny `dvc repro` (tests/conftest.py); each
test that writes files takes its private copy (`tiny_repo`) and runs `python -m stages.evaluate`
there directly (no DVC: the oracle files are not what the lock recorded).
"""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from e2e import run
from wsss import artifacts, io, packs
from wsss.data import files, voc

IGNORE = 255


# -- reading the copy's data ------------------------------------------------------------------------

def _data_root(repo: Path) -> Path:
    """The data root exactly as the stages resolve it, by the copy's own code (wherever the demo lives)."""
    code = ("from wsss.cli import data_root; from wsss.config import load_params; "
            "print(data_root(load_params()).resolve())")
    return Path(run([sys.executable, "-c", code], repo).stdout.strip().splitlines()[-1])


class Split:
    """The seed split's ids, labels and ground-truth masks, and the classification split, of one copy."""

    def __init__(self, repo: Path):
        self.repo = repo
        params = yaml.safe_load((repo / "params.yaml").read_text())
        self.num_thresholds = params["evaluate"]["num_thresholds"]
        self.first_threshold = params["evaluate"]["threshold_start"]     # the sweep's lowest: the best of a tie
        self.manifest = json.loads((repo / artifacts.MANIFEST).read_text())
        self.classes = self.manifest["classes"]
        self.k = len(self.classes) + 1
        self.name = params["data"]["seed_split"]
        self.ids = list(self.manifest["splits"][self.name])
        self.cls_ids = list(self.manifest["splits"][params["data"]["cls_split"]])
        root = _data_root(repo)
        self.gt = {i: files.read_mask(voc.mask_path(root, i)) for i in self.ids}
        self.keys = {i: [int(k) for k in self.manifest["labels"][i]] for i in self.ids}

    def other(self, image_id: str) -> np.ndarray:
        """The next image's mask (a derangement: never the image's own), resized to this image's size."""
        j = (self.ids.index(image_id) + 1) % len(self.ids)
        h, w = self.gt[image_id].shape
        return cv2.resize(self.gt[self.ids[j]], (w, h), interpolation=cv2.INTER_NEAREST)


# -- writing seeds, pseudo labels and scores ------------------------------------------------------------

def _channels(label_map: np.ndarray, keys: list[int], ignore_as: int | None = None) -> np.ndarray:
    """(k, H, W): 1.0 where ``label_map`` is each key, 0 elsewhere; ``ignore_as`` (a key) is also
    switched on at the pixels the ground truth ignores, which must then not count."""
    maps = [(label_map == k) for k in keys]
    if ignore_as is not None:
        maps = [m | ((label_map == IGNORE) & (k == ignore_as)) for m, k in zip(maps, keys)]
    return np.stack(maps).astype(np.float32) if maps else np.zeros((0, *label_map.shape), np.float32)


def _one_hot(label_map: np.ndarray, keys: list[int], ignore_as: int | None = None) -> np.ndarray:
    """(k+1, H, W) R-CAM: channel 0 background, then the keys."""
    bg = (label_map == 0)[None].astype(np.float32)
    return np.concatenate([bg, _channels(label_map, keys, ignore_as)])


def _write_seeds(s: Split, maps: dict[str, dict[str, np.ndarray]]) -> None:
    """maps[id] = {"cam": ..., optionally "rcam": ...} into the pack cams/ (replacing the run's)."""
    packs.replace_members(s.repo / artifacts.CAMS, {artifacts.cam_name(i): artifacts.cams_bytes(s.keys[i], maps[i])
                                                    for i in s.ids})


def _write_pseudo(s: Split, labels: dict[str, np.ndarray]) -> None:
    packs.replace_members(s.repo / artifacts.PSEUDO, {artifacts.label_name(i): files.palette_png(labels[i])
                                                      for i in s.ids})


def _true_labels(s: Split, ids: list[str]) -> np.ndarray:
    """(N, C) 0/1 image-level labels of ``ids`` from the manifest."""
    y = np.zeros((len(ids), s.k - 1), dtype=bool)
    for n, i in enumerate(ids):
        y[n, np.asarray(s.manifest["labels"][i], dtype=int) - 1] = True
    return y


def _write_val_scores(s: Split, scores: np.ndarray) -> None:
    io.save_npz(s.repo / artifacts.VAL_SCORES, scores=scores.astype(np.float32), ids=np.array(s.cls_ids))


def _set_seed_map(repo: Path, kind: str) -> None:
    info = json.loads((repo / artifacts.MODEL_INFO).read_text())
    info["seed_map"] = kind
    (repo / artifacts.MODEL_INFO).write_text(json.dumps(info, indent=2))


def _evaluate(repo: Path) -> dict:
    run([sys.executable, "-m", "stages.evaluate"], repo)
    return json.loads((repo / "metrics/evaluate.json").read_text())


def _sweep(repo: Path, column: str = "cam") -> list[float]:
    with open(repo / "plots/seed_sweep.csv") as f:
        return [float(r[column]) for r in csv.DictReader(f)]


# -- independent re-counts (no wsss.metrics) ------------------------------------------------------------

def _miou(preds: dict[str, np.ndarray], s: Split) -> float:
    """Mean IoU over the C+1 classes present in ground truth or prediction, gt 255 left out."""
    inter = np.zeros(s.k)
    union = np.zeros(s.k)
    for i, pred in preds.items():
        gt = s.gt[i]
        keep = gt != IGNORE
        for c in range(s.k):
            g, p = (gt == c) & keep, (pred == c) & keep
            inter[c] += np.count_nonzero(g & p)
            union[c] += np.count_nonzero(g | p)
    present = union > 0
    return float(np.mean(inter[present] / union[present]))


def _ap_two_levels(high: np.ndarray, positive: np.ndarray) -> float:
    """Non-interpolated AP of a ranking with two score levels (``high`` above the rest), ties as one
    threshold: recall and precision at the top level, then at everything."""
    n_pos, n_high = positive.sum(), high.sum()
    tp = (high & positive).sum()
    recall_high = tp / n_pos
    precision_high = tp / n_high if n_high else 0.0
    return float(recall_high * precision_high + (1 - recall_high) * n_pos / len(positive))


def _map_two_levels(high: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    per_image = [_ap_two_levels(h, t) for h, t in zip(high, y) if t.any()]
    per_class = [_ap_two_levels(high[:, c], y[:, c]) for c in range(y.shape[1]) if y[:, c].any()]
    return float(np.mean(per_image)), float(np.mean(per_class))


# -- the tests ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_oracle_scores_one_and_shuffled_oracle_scores_low(tiny_repo: Path):
    s = Split(tiny_repo)
    n_ignored = sum(int((g == IGNORE).sum()) for g in s.gt.values())
    assert n_ignored > 0, "the demo masks carry a 255 band: the ignore rule is under test"
    # every class of the masks is among the image's labels (else no CAM from labels could be perfect)
    for i in s.ids:
        assert set(np.unique(s.gt[i])) - {0, IGNORE} <= set(s.keys[i]), i
    y_val = _true_labels(s, s.cls_ids)

    # ground truth; the pixels the ground truth ignores are switched on as the first class, wrongly
    # and on purpose: they must not count
    _write_seeds(s, {i: {"cam": _channels(s.gt[i], s.keys[i], ignore_as=s.keys[i][0])} for i in s.ids})
    _write_pseudo(s, {i: np.where(s.gt[i] == IGNORE, s.keys[i][0], s.gt[i]) for i in s.ids})
    _write_val_scores(s, np.where(y_val, 1.0, -1.0))
    m = _evaluate(tiny_repo)
    assert m["seed"] == {"miou": 1.0, "map": "cam"}
    assert m["cam"]["miou"] == 1.0 and m["cam"]["pixel_accuracy"] == 1.0
    # 1 on the class, 0 elsewhere: every threshold of the sweep (in [0, 1)) splits perfectly
    assert _sweep(tiny_repo) == [1.0] * s.num_thresholds and m["cam"]["threshold"] == s.first_threshold
    per_class = json.loads((tiny_repo / "metrics/per_class.json").read_text())
    # every class occurs in the split, so none is left out of the means as absent
    assert [v["iou"] for v in per_class["cam"].values()] == [1.0] * s.k
    assert [v["iou"] for v in per_class["pseudo"].values()] == [1.0] * s.k
    assert m["pseudo"] == {"miou": 1.0, "pixel_accuracy": 1.0}
    assert m["cls"] == {"map_per_image": 1.0, "map_per_class": 1.0}

    # the same masks on the wrong images: each image's own classes, where the next image has them
    others = {i: s.other(i) for i in s.ids}
    _write_seeds(s, {i: {"cam": _channels(others[i], s.keys[i])} for i in s.ids})
    _write_pseudo(s, others)
    shuffled_val = np.roll(y_val, 1, axis=0)        # each val image scored as the previous one
    _write_val_scores(s, np.where(shuffled_val, 1.0, -1.0))
    m = _evaluate(tiny_repo)
    seed_expected = _miou({i: np.where(np.isin(o, s.keys[i]), o, 0) for i, o in others.items()}, s)
    pseudo_expected = _miou({i: np.where(o == IGNORE, 0, o) for i, o in others.items()}, s)  # unsure = background
    map_expected = _map_two_levels(shuffled_val, y_val)
    print(f"shuffled: seed mIoU {m['seed']['miou']:.4f} (re-count {seed_expected:.4f}), pseudo "
          f"{m['pseudo']['miou']:.4f} ({pseudo_expected:.4f}), mAP per image {m['cls']['map_per_image']:.4f}, "
          f"per class {m['cls']['map_per_class']:.4f} ({map_expected[0]:.4f}, {map_expected[1]:.4f})")
    assert m["seed"]["miou"] == pytest.approx(seed_expected, abs=1e-9)
    assert _sweep(tiny_repo) == pytest.approx([seed_expected] * s.num_thresholds, abs=1e-6)   # the csv keeps 6 decimals
    assert m["pseudo"]["miou"] == pytest.approx(pseudo_expected, abs=1e-9)
    assert m["cls"]["map_per_image"] == pytest.approx(map_expected[0], abs=1e-9)
    assert m["cls"]["map_per_class"] == pytest.approx(map_expected[1], abs=1e-9)
    # and far from the oracle's 1.0: on the tiny demo seed 0.18, pseudo 0.16, mAP 0.34 / 0.32 (a scorer
    # that looked at which classes an image has and not where they are would score near 1 here)
    assert max(m["seed"]["miou"], m["pseudo"]["miou"]) < 0.5
    assert max(m["cls"]["map_per_image"], m["cls"]["map_per_class"]) < 0.5


@pytest.mark.slow
def test_evaluate_map_is_the_map_training_logged(tiny_baseline: Path):
    """One model, two code paths: `evaluate` scores models/val_scores.npz (the stage's final
    predict_scores); training logged the last epoch's validation to DVCLive and model.json."""
    m = json.loads((tiny_baseline / "metrics/evaluate.json").read_text())["cls"]
    live = json.loads((tiny_baseline / artifacts.TRAIN_LIVE / "metrics.json").read_text())["epoch"]
    info = json.loads((tiny_baseline / artifacts.MODEL_INFO).read_text())
    epochs = yaml.safe_load((tiny_baseline / "params.yaml").read_text())["train"]["epochs"]
    assert info["summary"]["epoch"] == epochs          # the summary is the last epoch's
    for kind in ("map_per_image", "map_per_class"):
        tsv = tiny_baseline / artifacts.TRAIN_LIVE / "plots/metrics/epoch" / f"val_{kind}.tsv"
        with open(tsv) as f:
            curve = [float(r[f"val_{kind}"]) for r in csv.DictReader(f, delimiter="\t")]
        print(f"{kind}: evaluate {m[kind]!r}, DVCLive {live[f'val_{kind}']!r}, model.json {info['summary'][kind]!r}")
        assert len(curve) == epochs and curve[-1] == live[f"val_{kind}"]
        assert m[kind] == pytest.approx(live[f"val_{kind}"], abs=1e-6)
        assert m[kind] == pytest.approx(info["summary"][kind], abs=1e-6)
        assert 0.0 < m[kind] <= 1.0 and math.isfinite(m[kind])


@pytest.mark.slow
def test_rcam_oracle_and_the_lead_map(tiny_repo: Path):
    """V2 seeds by hand: R-CAM (k+1, H, W), channel 0 background, scored by the argmax."""
    s = Split(tiny_repo)
    others = {i: s.other(i) for i in s.ids}
    shuffled = _miou({i: np.where(np.isin(o, s.keys[i]), o, 0) for i, o in others.items()}, s)
    oracle_rcam = {i: _one_hot(s.gt[i], s.keys[i], ignore_as=s.keys[i][0]) for i in s.ids}
    oracle_cam = {i: _channels(s.gt[i], s.keys[i]) for i in s.ids}
    _set_seed_map(tiny_repo, "rcam")

    # R-CAM from the ground truth, CAM from the wrong images: the seeds (R-CAM) score 1.0
    _write_seeds(s, {i: {"cam": _channels(others[i], s.keys[i]), "rcam": oracle_rcam[i]} for i in s.ids})
    m = _evaluate(tiny_repo)
    print(f"R-CAM oracle: {m['rcam']}, CAM (shuffled) {m['cam']['miou']:.4f} (re-count {shuffled:.4f})")
    assert m["seed"] == {"miou": 1.0, "map": "rcam"}
    assert m["rcam"] == {"miou": 1.0, "pixel_accuracy": 1.0, "fg_sweep_miou": 1.0,
                         "fg_sweep_threshold": s.first_threshold}
    assert _sweep(tiny_repo, "rcam_fg") == [1.0] * s.num_thresholds
    assert m["cam"]["miou"] == pytest.approx(shuffled, abs=1e-9)
    run_info = json.loads((tiny_repo / "metrics/run.json").read_text())
    assert run_info["seed_map"] == "rcam"

    # the other way round: the seeds are the (wrong) R-CAMs, whatever the CAM scores
    _write_seeds(s, {i: {"cam": oracle_cam[i], "rcam": _one_hot(others[i], s.keys[i])} for i in s.ids})
    m = _evaluate(tiny_repo)
    assert m["seed"]["map"] == "rcam" and m["seed"]["miou"] == pytest.approx(shuffled, abs=1e-9)
    assert m["rcam"]["miou"] == pytest.approx(shuffled, abs=1e-9) and m["cam"]["miou"] == 1.0

    # a model.json that names R-CAM seeds with no R-CAM in the files is an error, not a CAM score
    _write_seeds(s, {i: {"cam": oracle_cam[i]} for i in s.ids})
    proc = run([sys.executable, "-m", "stages.evaluate"], tiny_repo, check=False)
    assert proc.returncode == 2 and "no 'rcam' maps" in proc.stderr
