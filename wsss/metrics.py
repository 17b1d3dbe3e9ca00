"""Scoring: confusion matrices, IoU / precision / recall, the background-threshold sweep, mAP.

Conventions: label maps hold 0 = background, 1..C = classes, 255 = ignore. A confusion matrix
``conf[g, p]`` counts pixels of ground-truth class g predicted as p, over K = C + 1 classes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

IGNORE = 255


def confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 confusion of two label maps of one shape; gt == 255 is skipped."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    keep = gt != IGNORE
    idx = gt[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(conf: np.ndarray, class_names: Sequence[str] | None = None) -> dict:
    """IoU, precision and recall per class and their means, from a (K, K) confusion matrix.

    A class absent from both ground truth and prediction has no IoU (NaN) and is left out of
    the mean, as in every VOC scorer.
    """
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    gt_total = conf.sum(axis=1)
    pred_total = conf.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (gt_total + pred_total - tp)
        precision = tp / pred_total
        recall = tp / gt_total
    names = list(class_names) if class_names is not None else [str(k) for k in range(len(tp))]
    return {
        "miou": float(np.nanmean(iou)),
        "pixel_accuracy": float(tp.sum() / max(conf.sum(), 1)),
        "per_class": {
            n: {"iou": _num(iou[k]), "precision": _num(precision[k]), "recall": _num(recall[k])}
            for k, n in enumerate(names)
        },
    }


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


class ThresholdSweep:
    """Confusion matrices for many background thresholds, from one pass over the images.

    A pixel is predicted background where no present class's score exceeds the threshold, else
    the present class with the highest score (as :func:`threshold_labels`, ties to background).
    Each image is reduced once to (gt, argmax class, threshold bin) counts, where the bin counts
    how many thresholds the pixel's top score reaches; prefix sums over bins then give every threshold's confusion matrix.
    """

    def __init__(self, num_classes: int, thresholds: Sequence[float]):
        self.k = num_classes
        self.thresholds = np.asarray(sorted(thresholds), dtype=np.float64)
        t = len(self.thresholds)
        # counts[g, c, b]: gt g, top class c, top score reaches exactly the first b thresholds
        self.counts = np.zeros((self.k, self.k, t + 1), dtype=np.int64)

    def update(self, fg_scores: np.ndarray, keys: Sequence[int], gt: np.ndarray) -> None:
        """fg_scores (k, H, W) for the classes ``keys`` (indices 1..C); gt (H, W)."""
        keys = np.asarray(keys, dtype=np.int64)
        if fg_scores.shape[1:] != gt.shape:
            raise ValueError(f"scores {fg_scores.shape[1:]} and ground truth {gt.shape} differ in shape")
        keep = gt != IGNORE
        g = gt[keep].astype(np.int64)
        if len(keys) == 0:
            top_class = np.zeros_like(g)
            bins = np.zeros_like(g)
        else:
            s = fg_scores[:, keep].astype(np.float64)
            top = s.argmax(axis=0)
            top_class = keys[top]
            top_score = s[top, np.arange(s.shape[1])]
            bins = np.searchsorted(self.thresholds, top_score, side="left")  # thresholds < score
        t1 = len(self.thresholds) + 1
        idx = (g * self.k + top_class) * t1 + bins
        self.counts += np.bincount(idx, minlength=self.k * self.k * t1).reshape(self.k, self.k, t1)

    def confusions(self) -> np.ndarray:
        """(T, K, K): the confusion matrix at each threshold (in sorted order)."""
        t = len(self.thresholds)
        # pixels whose top score reaches threshold i are those in bins > i
        reach = np.cumsum(self.counts[..., ::-1], axis=-1)[..., ::-1]  # reach[..., b] = sum bins >= b
        out = np.zeros((t, self.k, self.k), dtype=np.int64)
        for i in range(t):
            fg = reach[..., i + 1]  # (K, K): gt x top class, foreground at this threshold
            out[i] = fg
            out[i, :, 0] += (self.counts.sum(axis=-1) - fg).sum(axis=1)  # the rest is background
        # a top class of 0 only arises for images with no keys: always background
        return out

    def results(self) -> list[tuple[float, np.ndarray]]:
        return list(zip(self.thresholds.tolist(), self.confusions()))


class SeedScorer:
    """Scores of a split's seed maps, image by image (SPEC "Scoring").

    ``cam`` (foreground channels) is scored by the background-threshold sweep. ``rcam`` (V2:
    background channel first) is scored by the argmax over its C+1 channels, as SIPE does, and,
    as extra information, by the sweep over its foreground channels (``rcam_fg``).
    """

    def __init__(self, class_names: Sequence[str], thresholds: Sequence[float]):
        self.names = ["background", *class_names]
        self.thresholds = list(thresholds)
        self.sweeps: dict[str, ThresholdSweep] = {}
        self.argmax: dict[str, np.ndarray] = {}

    def _sweep(self, kind: str) -> ThresholdSweep:
        if kind not in self.sweeps:
            self.sweeps[kind] = ThresholdSweep(len(self.names), self.thresholds)
        return self.sweeps[kind]

    def update(self, maps: dict[str, np.ndarray], gt: np.ndarray) -> None:
        """maps: ``keys`` (k,), ``cam`` (k, H, W) and optionally ``rcam`` (k+1, H, W); gt (H, W)."""
        keys = [int(k) for k in maps["keys"]]
        self._sweep("cam").update(maps["cam"], keys, gt)
        if "rcam" in maps:
            self._sweep("rcam_fg").update(maps["rcam"][1:], keys, gt)
            conf = confusion(argmax_labels(maps["rcam"], [0, *keys]), gt, len(self.names))
            self.argmax["rcam"] = self.argmax.get("rcam", 0) + conf

    def merge(self, other: "SeedScorer") -> "SeedScorer":
        """Add ``other``'s counts (the same classes and thresholds, other images): scoring a split in
        parts, in parallel, gives exactly the counts of one pass."""
        if other.names != self.names or other.thresholds != self.thresholds:
            raise ValueError("merging scorers of other classes or thresholds")
        for kind, sweep in other.sweeps.items():
            self._sweep(kind).counts += sweep.counts
        for kind, conf in other.argmax.items():
            self.argmax[kind] = self.argmax.get(kind, 0) + conf
        return self

    def summary(self) -> dict[str, dict]:
        """Per map kind: ``miou``, ``pixel_accuracy``, ``per_class``; sweeps also ``threshold`` (the
        best) and ``curve`` [(threshold, miou), ...]."""
        out: dict[str, dict] = {}
        for kind, sweep in self.sweeps.items():
            curve = [(t, scores(conf, self.names)) for t, conf in sweep.results()]
            best_t, best = max(curve, key=lambda tc: tc[1]["miou"])
            out[kind] = {**best, "threshold": best_t, "curve": [(t, s["miou"]) for t, s in curve]}
        for kind, conf in self.argmax.items():
            out[kind] = scores(conf, self.names)
        return out


def pseudo_label_confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int, name="pseudo labels") -> np.ndarray:
    """Confusion of a pseudo-label map against ground truth; an unsure pixel (255) counts as background."""
    if pred.shape != gt.shape:
        raise ValueError(f"{name}: {pred.shape} but the ground truth is {gt.shape}")
    if pred.max(initial=0) >= num_classes and not np.all((pred < num_classes) | (pred == IGNORE)):
        raise ValueError(f"{name}: labels beyond the {num_classes - 1} classes")
    return confusion(np.where(pred == IGNORE, 0, pred), gt, num_classes)


def argmax_labels(scores_: np.ndarray, keys: Sequence[int]) -> np.ndarray:
    """Label map from (k, H, W) scores whose channels are the classes ``keys`` (0 may be one)."""
    keys = np.asarray(keys, dtype=np.uint8)
    return keys[np.argmax(scores_, axis=0)]


def threshold_labels(fg_scores: np.ndarray, keys: Sequence[int], threshold: float) -> np.ndarray:
    """Label map: background where no score exceeds ``threshold``, else the top class."""
    if len(keys) == 0:
        return np.zeros(fg_scores.shape[1:], dtype=np.uint8)
    bg = np.full((1,) + fg_scores.shape[1:], threshold, dtype=np.float64)
    return argmax_labels(np.concatenate([bg, fg_scores.astype(np.float64)]), [0, *keys])


def average_precision(scores_: np.ndarray, positives: np.ndarray) -> float:
    """Non-interpolated AP of one ranking (sklearn's definition): mean precision at each positive."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(positives, scores_))


def mean_ap(scores_: np.ndarray, labels: np.ndarray) -> dict:
    """Classification mAP two ways, from (N, C) scores and (N, C) 0/1 labels.

    ``per_image``: AP of each image's ranking of the classes, averaged over images (MCTformer's
    ``compute_mAP``, which the paper's Table 1 uses). ``per_class``: AP of each class's ranking
    of the images, averaged over classes with at least one positive (VOC's usual mAP).
    """
    scores_ = np.asarray(scores_, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    per_image = [average_precision(s, y) for s, y in zip(scores_, labels) if y.any()]
    per_class = [average_precision(scores_[:, c], labels[:, c]) for c in range(labels.shape[1])
                 if labels[:, c].any()]
    return {
        "map_per_image": float(np.mean(per_image)) if per_image else float("nan"),
        "map_per_class": float(np.mean(per_class)) if per_class else float("nan"),
        "ap_per_class": [average_precision(scores_[:, c], labels[:, c]) if labels[:, c].any() else None
                         for c in range(labels.shape[1])],
    }
