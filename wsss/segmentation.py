"""Step 3: the segmenter's part in the training loop, its predictions on whole images, and their score.

- :class:`SegmentTask`: per-pixel cross-entropy over the label maps (255 = ignore: the pseudo
  labels' unsure pixels, VOC's boundary band, the crop's padding); the share of labelled pixels as
  the batch's health; after each epoch the single-scale mIoU of the validation images.
- :func:`predict`: softmax probabilities (K, H, W) of a whole image of any size, averaged over
  scales and flips (DeepLab's multi-scale + flip inference when given several).
- :class:`Scorer`: the confusion matrix over a split -> mIoU, pixel accuracy, per-class IoU /
  precision / recall (:func:`wsss.metrics.scores`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from . import metrics
from .data import files
from .errors import DataError
from .inference import scaled_input
from .training import LoopConfig, Task, param_groups

IGNORE = 255


class SegmentTask(Task):
    """Crops (image, labels (S, S) int64) -> cross-entropy; ``val``: (image path, mask path) pairs
    scored single-scale after each epoch (``val_miou``), or None."""

    nan_hint = "lower segment.lr, check the label maps, or turn train.amp off"

    def __init__(self, model: nn.Module, head_lr_mult: float, num_classes: int,
                 val: Sequence[tuple[Path, Path]] | None = None, amp: bool = False):
        self.model, self.head_lr_mult, self.num_classes, self.val, self.amp = model, head_lr_mult, num_classes, val, amp

    def param_groups(self, cfg: LoopConfig) -> list[dict]:
        return param_groups(self.model, cfg.lr, self.head_lr_mult, cfg.weight_decay)

    def forward(self, net, batch, device):
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        return {"logits": net(x)}, (y,)

    def loss(self, out, targets, epochs):
        (y,) = targets
        labelled = (y != IGNORE).float().mean()
        if labelled == 0:      # a crop of padding and unsure pixels only: nothing to learn, no NaN
            ce = out["logits"].float().sum() * 0.0
        else:
            ce = F.cross_entropy(out["logits"].float(), y, ignore_index=IGNORE)
        return {"ce": ce, "total": ce}, {"labelled": labelled}

    def validate(self, device):
        if not self.val:
            return {}
        scorer = Scorer(self.num_classes)
        was_training = self.model.training
        for image_path, mask_path in self.val:
            image = files.read_image(image_path)
            probs = predict(self.model, image, [1.0], False, device, self.amp)
            scorer.update(probs.argmax(0), files.read_mask(mask_path), mask_path)
        self.model.train(was_training)
        return {"miou": scorer.summary()["miou"]}


@torch.no_grad()
def predict(model: nn.Module, image: np.ndarray, scales: Sequence[float], flip: bool, device: torch.device,
            amp: bool = False) -> np.ndarray:
    """Softmax probabilities (K, H, W) float32 of an RGB uint8 image (H, W, 3): the mean over
    ``scales`` (the image resized by each) and, with ``flip``, the mirrored copies."""
    model.eval()
    h, w = image.shape[:2]
    total = torch.zeros((model.cfg.num_classes, h, w), device=device)
    use_amp = amp and device.type == "cuda"
    for s in scales:
        x, _ = scaled_input(image, s, flip)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(x.to(device))
        p = torch.softmax(logits.float(), dim=1)
        if flip:
            p = p[:1] + p[1:].flip(-1)
        total += F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)[0]
    return (total / total.sum(dim=0, keepdim=True)).cpu().numpy()


class Scorer:
    """Confusion matrix of class-id predictions against masks (255 ignored)."""

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None):
        self.conf = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.class_names = class_names

    def update(self, pred: np.ndarray, gt: np.ndarray, name: str | Path = "prediction") -> None:
        self.conf += metrics.pseudo_label_confusion(pred.astype(np.uint8), gt, len(self.conf), name)

    def summary(self) -> dict:
        return metrics.scores(self.conf, self.class_names)


def score_split(model: nn.Module, items: Sequence[tuple[Path, Path]], settings: dict[str, dict], num_classes: int,
                class_names: Sequence[str], device: torch.device, amp: bool = False, crf_cfg=None,
                desc: str = "segment val") -> dict[str, dict]:
    """Score ``model`` on (image, mask) pairs under each named setting ``{"scales": [...],
    "flip": bool, "crf": bool}``; the settings that differ only by ``crf`` share one prediction.
    Returns per setting :func:`wsss.metrics.scores` (mIoU, pixel accuracy, per class)."""
    from .refine import crf as dense_crf

    scorers = {name: Scorer(num_classes, class_names) for name in settings}
    for image_path, mask_path in tqdm(items, desc=desc, unit="img"):
        image, gt = files.read_image(image_path), files.read_mask(mask_path)
        if gt.shape != image.shape[:2]:
            raise DataError(f"{mask_path}: mask {gt.shape} but image {image.shape[:2]}")
        cache: dict[tuple, np.ndarray] = {}
        for name, s in settings.items():
            key = (tuple(s["scales"]), bool(s["flip"]))
            if key not in cache:
                cache[key] = predict(model, image, s["scales"], s["flip"], device, amp)
            probs = cache[key]
            if s.get("crf"):
                probs = dense_crf.crf_from_probs(image, probs, crf_cfg)
            scorers[name].update(probs.argmax(0), gt, mask_path)
    return {name: sc.summary() for name, sc in scorers.items()}
