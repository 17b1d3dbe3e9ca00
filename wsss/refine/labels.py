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


def confident_cuts(maps: dict[str, np.ndarray], kind: str, fg_threshold: float, bg_threshold: float,
                   rcam_bg_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The two compact label maps (H, W) that confident labels combine: a *high* cut (little
    foreground) and a *low* cut (much foreground).

    - CAM (IRN's ``cam_to_ir_label``): the argmax with a constant background at ``fg_threshold``
      (high) and at ``bg_threshold`` (low);
    - R-CAM (SIPE's ``cam2ir``): the argmax of the R-CAM (high) and the argmax with its
      background channel multiplied by ``rcam_bg_scale`` (low; SIPE: 0.5). No thresholds.
    """
    if kind == "rcam":
        rcam = seed_scores(maps, "rcam", 0.0)
        low = rcam.copy()
        low[0] *= rcam_bg_scale
        return seed_labels(rcam), seed_labels(low)
    if fg_threshold < bg_threshold:
        raise ValueError(f"fg_threshold {fg_threshold} must be >= bg_threshold {bg_threshold}")
    return (seed_labels(seed_scores(maps, "cam", fg_threshold)),
            seed_labels(seed_scores(maps, "cam", bg_threshold)))


def confident_labels(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """IRN's rule for confident regions from two compact label maps (each already cleaned, e.g.
    by a label CRF): the high cut's class where it says foreground; background only where
    *both* cuts say background; unsure (255) where the high cut says background and the low
    cut foreground. Returns compact labels (H, W) uint8."""
    out = high.astype(np.uint8).copy()
    out[high == 0] = IGNORE
    out[(high == 0) & (low == 0)] = 0
    return out
