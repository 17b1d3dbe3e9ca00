"""Turn seed maps into label maps, image by image, on all cores with a progress bar.

Each image: read its seed maps and the image, make class-id labels with a *labeller*
(``labeller(image, maps) -> (H, W) uint8``: :func:`pseudo_label` for ``none`` / ``crf``,
:func:`confident_label` for IRN's training labels, :class:`wsss.refine.irn.Walker` for IRN)
and write a VOC palette PNG (atomically). Workers are processes (the dense CRF is
single-threaded C++); the order of work does not change any result.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from .. import io
from ..data import files
from . import crf, labels


@dataclass(frozen=True)
class RefineConfig:
    method: str                  # none | crf
    kind: str                    # cam | rcam: which seed map
    bg_threshold: float          # CAM background score (none, crf prob)
    crf_unary: str = "prob"      # prob | labels
    crf_gt_prob: float = 0.7
    crf: crf.CRFConfig = crf.CRFConfig()


def pseudo_label(image: np.ndarray, maps: dict[str, np.ndarray], cfg: RefineConfig) -> np.ndarray:
    """Class-id label map (H, W) uint8 of one image from its seed maps."""
    scores = labels.seed_scores(maps, cfg.kind, cfg.bg_threshold)
    if cfg.method == "none":
        compact = labels.seed_labels(scores)
    elif cfg.method == "crf" and cfg.crf_unary == "prob":
        compact = labels.seed_labels(crf.crf_from_probs(image, scores, cfg.crf))
    elif cfg.method == "crf":
        compact = crf.crf_from_labels(image, labels.seed_labels(scores), scores.shape[0], cfg.crf_gt_prob, cfg.crf)
    else:
        raise ValueError(f"refine.method: unknown method '{cfg.method}'")
    return labels.to_class_ids(compact, [int(k) for k in maps["keys"]])


@dataclass(frozen=True)
class ConfidentConfig:
    """Confident labels: two cuts of the seeds (IRN's thresholds for a CAM, SIPE's halved
    background for an R-CAM; :func:`wsss.refine.labels.confident_cuts`), each cleaned by a
    label CRF, combined by IRN's rule (:func:`wsss.refine.labels.confident_labels`)."""

    kind: str                    # cam | rcam
    fg_threshold: float          # CAM only
    bg_threshold: float          # CAM only
    rcam_bg_scale: float = 0.5   # R-CAM only
    clean: bool = True
    gt_prob: float = 0.7
    crf: crf.CRFConfig = crf.CRFConfig(bilateral_sxy=50, bilateral_srgb=5)


def confident_label(image: np.ndarray, maps: dict[str, np.ndarray], cfg: ConfidentConfig) -> np.ndarray:
    """Class-id labels (H, W) uint8 with 255 = unsure, for training the relation net."""
    n = len(maps["keys"]) + 1
    cuts = labels.confident_cuts(maps, cfg.kind, cfg.fg_threshold, cfg.bg_threshold, cfg.rcam_bg_scale)
    if cfg.clean:
        cuts = tuple(crf.crf_from_labels(image, cut, n, gt_prob=cfg.gt_prob, cfg=cfg.crf) for cut in cuts)
    return labels.to_class_ids(labels.confident_labels(*cuts), [int(k) for k in maps["keys"]])


def _one(task: tuple) -> str:
    image_path, cam_path, out_path, labeller = task
    from ..artifacts import load_cams

    image = files.read_image(Path(image_path))
    maps = load_cams(Path(cam_path), expect_shape=image.shape[:2])
    io.write_bytes(out_path, files.palette_png(labeller(image, maps)))
    return out_path


def label_images(tasks: Sequence[tuple[Path, Path, Path]], labeller: Callable, workers: int = 0,
                 desc: str = "refine") -> None:
    """tasks: (image, seed maps, output PNG) per image. ``workers`` 0 = all cores, 1 = in process
    (a labeller holding a torch model runs in process: torch uses the cores itself)."""
    jobs = [(str(i), str(c), str(o), labeller) for i, c, o in tasks]
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(jobs), desc=desc, unit="img")
    if workers == 1:
        for job in jobs:
            _one(job)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(_one, jobs, chunksize=4):
                bar.update()
    bar.close()


def refine_split(tasks: Sequence[tuple[Path, Path, Path]], cfg: RefineConfig, workers: int = 0,
                 desc: str = "refine") -> None:
    """Pseudo labels by ``none`` or ``crf`` (see :func:`pseudo_label`) for every task."""
    label_images(tasks, partial(pseudo_label, cfg=cfg), workers, desc)
