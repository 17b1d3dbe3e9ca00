"""Turn seed maps into label maps, image by image, on all cores with a progress bar.

Each image: read its seed maps and the image, make class-id labels with a *labeller*
(``labeller(image, maps) -> (H, W) uint8``: :func:`pseudo_label` for ``none`` / ``crf``,
:func:`confident_label` for IRN's training labels, :class:`wsss.refine.irn.Walker` for IRN)
and add its VOC palette PNG to a pack (:mod:`wsss.packs`, written atomically part by part). Workers are processes (the dense CRF is
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

from .. import packs
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


_WORK: dict = {}        # per process: the seed-map pack and the labeller (set once, not sent per image)


def _start(cams_root: str, labeller: Callable) -> None:
    from ..artifacts import cams_pack

    _WORK.update(cams=cams_pack(Path(cams_root)), labeller=labeller)


def _one(task: tuple[str, str]) -> bytes:
    from ..artifacts import read_cams

    image_path, image_id = task
    image = files.read_image(Path(image_path))
    maps = read_cams(_WORK["cams"], image_id, expect_shape=image.shape[:2])
    return files.palette_png(_WORK["labeller"](image, maps))


def label_images(tasks: Sequence[tuple[Path, str]], cams: Path, labeller: Callable, out: Path,
                 workers: int = 0, desc: str = "refine") -> None:
    """tasks: (image, id) per image, each id once; their seed maps are read from the pack at
    ``cams`` and their labels written as the pack at ``out`` (members ``<id>.png`` in the order of
    ``tasks``). ``workers`` 0 = all cores, 1 = in process (a labeller holding a torch model runs
    in process: torch uses the cores itself)."""
    from ..artifacts import label_name

    jobs = [(str(i), image_id) for i, image_id in tasks]
    writer = packs.PackWriter(out, [label_name(image_id) for _, image_id in jobs])
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(jobs), desc=desc, unit="img")
    if workers == 1:
        _start(str(cams), labeller)
        done = map(_one, jobs)
        for (_, image_id), png in zip(jobs, done):
            writer.add(label_name(image_id), png)
            bar.update()
        _WORK.clear()
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_start, initargs=(str(cams), labeller)) as pool:
            for (_, image_id), png in zip(jobs, pool.map(_one, jobs, chunksize=4)):
                writer.add(label_name(image_id), png)
                bar.update()
    bar.close()
    writer.close()


def refine_split(tasks: Sequence[tuple[Path, str]], cams: Path, cfg: RefineConfig, out: Path, workers: int = 0,
                 desc: str = "refine") -> None:
    """Pseudo labels by ``none`` or ``crf`` (see :func:`pseudo_label`) for every task."""
    label_images(tasks, cams, partial(pseudo_label, cfg=cfg), out, workers, desc)
