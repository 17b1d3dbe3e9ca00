"""Pictures for people: CAM heat maps over the image, and VOC palette label maps."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from .data.files import voc_palette


def heat_overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB image (H, W, 3) uint8 blended with a JET heat map of ``cam`` (H, W) in [0, 1]."""
    heat = cv2.applyColorMap(np.uint8(np.clip(cam, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]
    return np.uint8(image * (1 - alpha) + heat * alpha)


def _caption(tile: np.ndarray, text: str) -> np.ndarray:
    tile = tile.copy()
    cv2.rectangle(tile, (0, 0), (tile.shape[1], 16), (0, 0, 0), -1)
    cv2.putText(tile, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def cam_panel(image: np.ndarray, maps: dict[str, np.ndarray], keys: Sequence[int], class_names: Sequence[str],
              gt: np.ndarray | None = None) -> np.ndarray:
    """One row per map kind (e.g. CAM, R-CAM): the image (or ground truth), then one heat map per
    present class (and the background first, for maps that have it), captioned. RGB uint8 mosaic."""
    pal = voc_palette()
    rows = []
    for kind, m in maps.items():
        first = _caption(image, "image") if not rows else (
            _caption(pal[gt], "ground truth") if gt is not None else np.zeros_like(image))
        names = [class_names[k - 1] for k in keys]
        if m.shape[0] == len(keys) + 1:  # a map with its own background channel first (R-CAM)
            names = ["background", *names]
        tiles = [first] + [_caption(heat_overlay(image, m[i]), f"{kind}: {n}") for i, n in enumerate(names)]
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, axis=0)


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB uint8 image as PNG bytes."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
