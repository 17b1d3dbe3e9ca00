"""The SWTformer classifier's part in the training loop (:mod:`wsss.training`): its loss (the
classification loss, and V2's GSC and CCL), the health statistics that tell a V2 run collapsed
(:mod:`wsss.diagnostics`), and the validation mAP."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import diagnostics, losses, metrics
from .checkpoint import Checkpointer
from .data.datasets import box_mask
from .training import LoopConfig, Task, param_groups, run


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    head_lr_mult: float
    weight_decay: float
    warmup_epochs: float
    min_lr_ratio: float
    num_workers: int
    amp: bool
    seed: int
    loss: losses.LossWeights = losses.LossWeights()
    checkpoint_every: int = 0    # also checkpoint every this many steps within an epoch (0: epoch ends only)
    collapse_floor: float = 0.02  # V2: an epoch whose mean background seed share is below this (or above 1 - this) is collapsed

    def loop(self) -> LoopConfig:
        return LoopConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                          optimizer="adamw", schedule="cosine", warmup_epochs=self.warmup_epochs,
                          min_lr_ratio=self.min_lr_ratio, num_workers=self.num_workers, amp=self.amp, seed=self.seed,
                          checkpoint_every=self.checkpoint_every, name="train")


class ClassifierTask(Task):
    """Crops (image, labels (C,), index[, the image's box in the crop]) -> the classification loss
    (+ V2's terms, weighted by ``cfg.loss`` at the epoch reached); the batch's health; the val mAP
    of ``val_set`` (a :class:`wsss.data.datasets.WholeImages`) after each epoch; V2's
    :class:`wsss.diagnostics.CollapseWatch` over the epochs' background seed shares."""

    nan_hint = "lower train.lr, check the data, or turn train.amp off"

    def __init__(self, model: nn.Module, cfg: TrainConfig, val_set: Dataset | None = None,
                 cls_batch_size: int | None = None):
        self.model, self.cfg, self.val_set = model, cfg, val_set
        self.cls_batch_size = cls_batch_size or cfg.batch_size
        self.watch = diagnostics.CollapseWatch(cfg.collapse_floor)

    def param_groups(self, cfg: LoopConfig) -> list[dict]:
        return param_groups(self.model, cfg.lr, self.cfg.head_lr_mult, cfg.weight_decay)

    def forward(self, net, batch, device):
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        valid = box_mask(batch[3].to(device), x.shape[-2], x.shape[-1]) if len(batch) > 3 else None
        return (net(x, y) if valid is None else net(x, y, valid=valid)), (y, valid)

    def loss(self, out, targets, epochs):
        y, valid = targets
        return losses.total_loss(out, y, self.cfg.loss.at(epochs)), diagnostics.batch_health(out, y, valid)

    def end_epoch(self, epoch, means):
        if "health_seed_bg" not in means:
            return {}, None
        warning = self.watch.update(epoch, means["health_seed_bg"])
        return {"collapse": self.watch.report()}, warning

    def restore(self, summary):
        self.watch = diagnostics.CollapseWatch.restore(self.cfg.collapse_floor, summary.get("collapse"))

    def validate(self, device):
        if self.val_set is None:
            return {}
        s, y = predict_scores(self.model, self.val_set, device, self.cls_batch_size, self.cfg.num_workers,
                              self.cfg.amp, desc="val mAP")
        m = metrics.mean_ap(s, y)
        return {"map_per_image": m["map_per_image"], "map_per_class": m["map_per_class"]}


@torch.no_grad()
def predict_scores(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int,
                   num_workers: int = 0, amp: bool = False, desc: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """Class logits (N, C) and labels (N, C) over a :class:`WholeImages` data set, in its order."""
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    all_scores, all_labels = [], []
    use_amp = amp and device.type == "cuda"
    for x, y, _ in tqdm(loader, desc=desc, leave=False, unit="batch"):
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(x.to(device, non_blocking=True))["logits"]
        all_scores.append(logits.float().cpu())
        all_labels.append(y)
    model.train(was_training)
    return torch.cat(all_scores).numpy(), torch.cat(all_labels).numpy()


def fit(model: nn.Module, train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig,
        device: torch.device, live=None, cls_batch_size: int | None = None,
        checkpoint: Checkpointer | None = None, resume: dict | None = None) -> dict:
    """Train the classifier ``model`` in place through :func:`wsss.training.run`; return the last
    epoch's summary (loss, lr, health, val mAP; V2: ``collapse``, the watch's report, whose
    ``collapsed`` says whether its background (or foreground) seeds all but vanished)."""
    return run(ClassifierTask(model, cfg, val_set, cls_batch_size), train_set, cfg.loop(), device, live,
               checkpoint, resume)
