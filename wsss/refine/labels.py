"""Seeds -> label maps: the pseudo labels of ``refine.method: none``, CRF inputs, confident labels.

Seed maps come per image as ``keys`` (k,) (classes 1..C), ``cam`` (k, H, W) and, for V2,
``rcam`` (k+1, H, W) whose channel 0 is the background. Everything here works on *compact*
channels (0 = background, i = ``keys[i-1]``) and :func:`to_class_ids` maps back to 0..C.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

IGNORE = 255


def seed_scores(maps: dict[str, np.ndarray], kind: str, bg_threshold: float) -> np.ndarray:
    """Compact scores (k+1, H, W): a CAM gets a constant background channel at ``bg_threshold``
    (IRN's padding); an R-CAM brings its own background channel."""
    if kind == "rcam":
        if "rcam" not in maps:
            raise ValueError("seed maps hold no R-CAM (a V1 model): use the CAM")
        return maps["rcam"].astype(np.float32)
    # float64, as the evaluate stage's sweep compares scores with thresholds: same cut, same pixels
    cam = maps["cam"].astype(np.float64)
    bg = np.full((1, *cam.shape[1:]), bg_threshold, dtype=np.float64)
    return np.concatenate([bg, cam])


def foreground_scores(maps: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """Foreground scores (k, H, W) to cut at thresholds: the CAM, or the R-CAM's class channels
    zeroed where its background channel wins (an R-CAM's background is its own, not a threshold)."""
    if kind == "cam":
        return maps["cam"].astype(np.float32)
    rcam = seed_scores(maps, "rcam", 0.0)
    return np.where(np.argmax(rcam, axis=0)[None] > 0, rcam[1:], 0.0).astype(np.float32)


def seed_labels(scores: np.ndarray) -> np.ndarray:
    """Compact label map (H, W) uint8: the argmax, ties to the background (channel 0).

    For a CAM with its background at t, a pixel is foreground iff some class scores > t, as
    :func:`wsss.metrics.threshold_labels`.
    """
    return np.argmax(scores, axis=0).astype(np.uint8)


def to_class_ids(compact: np.ndarray, keys: Sequence[int]) -> np.ndarray:
    """Compact labels (0 = background, i = keys[i-1], 255 kept) -> class ids 0..C (uint8)."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    lut[: len(keys) + 1] = [0, *keys]
    return lut[compact.astype(np.uint8)]


def confident_labels(fg_scores: np.ndarray, fg_threshold: float, bg_threshold: float,
                     clean=None) -> np.ndarray:
    """IRN's confident regions from foreground scores (k, H, W): compact labels with 255 = unsure.

    Foreground where the top class beats ``fg_threshold`` (high), background where no class
    beats ``bg_threshold`` (low), unsure in between. ``clean`` (compact labels, n) -> labels,
    e.g. a dense CRF on hard labels, is applied to both cuts first, as IRN does.
    """
    if fg_threshold < bg_threshold:
        raise ValueError(f"fg_threshold {fg_threshold} must be >= bg_threshold {bg_threshold}")
    n = fg_scores.shape[0] + 1

    def cut(t: float) -> np.ndarray:
        pad = np.full((1, *fg_scores.shape[1:]), t, dtype=np.float64)
        labels = seed_labels(np.concatenate([pad, fg_scores.astype(np.float64)]))
        return clean(labels, n) if clean is not None else labels

    fg, bg = cut(fg_threshold), cut(bg_threshold)
    out = fg.copy()
    out[fg == 0] = IGNORE
    out[bg == 0] = 0
    return out
