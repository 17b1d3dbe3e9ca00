"""IRN-style refinement: train a relation (boundary) net from confident labels, then random-walk
the seeds over its affinities (Ahn et al., "Weakly Supervised Learning of Instance Segmentation
with Inter-pixel Relations", 2019; SPEC "Refinement").

1. Confident labels of the classifier's training split (:func:`wsss.refine.run.confident_label`,
   written as palette PNGs with 255 = unsure).
2. :func:`train_relations`: random rescale / flip / crop of image and labels together; labels
   taken on the stride-4 grid; :func:`wsss.refine.affinity.relation_loss` over the pairs within
   ``train_radius``; only the boundary head learns (the classifier is frozen).
3. :class:`Walker`: the boundary map of the whole image (the sigmoid of the mean of its and
   its flip's logits) -> affinities within ``walk_radius`` -> the seeds, resized onto the
   stride-4 grid (an R-CAM raised to ``rcam_power`` first, as SIPE), times ``1 - boundary``,
   walked ``iterations`` steps with ``beta`` -> back to full size, divided by their global
   maximum -> labels: a CAM gets a constant background channel at ``bg_threshold`` and the
   argmax (IRN's ``make_sem_seg_labels``); an R-CAM's walked channels (background included)
   go by their argmax (SIPE's ``make_seg_labels``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.datasets import LabelledCrops, normalize, to_tensor
from ..models.relations import RelationNet
from ..training import LoopConfig, Task, TrainingError, run
from . import affinity, labels

STRIDE = 4   # the relation net's grid, whatever the backbone's patch size (RelationNet.logits)


@dataclass(frozen=True)
class IRNConfig:
    epochs: int = 15
    batch_size: int = 16
    crop_size: int = 128
    resize_long: tuple[int, int] = (96, 192)
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dim: int = 32
    train_radius: int = 5
    walk_radius: int = 5
    beta: float = 10.0
    iterations: int = 16
    bg_threshold: float = 0.75
    rcam_power: float = 1.5
    seed: int = 0
    amp: bool = False

    @classmethod
    def from_params(cls, irn, seed: int, amp: bool = False) -> "IRNConfig":
        """From the ``refine.irn`` params section, the global seed and ``train.amp``."""
        names = set(cls.__dataclass_fields__) - {"seed", "resize_long", "amp"}
        return cls(**{n: getattr(irn, n) for n in names}, resize_long=tuple(irn.resize_long), seed=seed, amp=amp)


class LabelCrops(LabelledCrops):
    """Training crops with their confident labels on the stride-4 grid:
    item -> (image (3, S, S) float, labels (S/4, S/4) int64 with 255 = unsure / padding)."""

    def __init__(self, image_paths: Sequence[Path], ids: Sequence[str], label_paths: Sequence[Path], cfg: IRNConfig):
        if not ids:
            raise TrainingError("the relation net has no training images")
        super().__init__(image_paths, ids, label_paths, cfg.crop_size, cfg.resize_long, cfg.seed, STRIDE, affinity.IGNORE)


def loop_config(cfg: IRNConfig) -> LoopConfig:
    """How the boundary head is optimised: ``adamw`` with half an epoch of warm-up + cosine, or
    ``sgd`` as IRN's ``PolyOptimizer``: plain SGD (IRN's call passes its weight decay where SGD
    takes the momentum: in effect none), learning rate ``lr * (1 - step / total) ** 0.9``."""
    if cfg.optimizer not in ("adamw", "sgd"):
        raise ValueError(f"refine.irn.optimizer: '{cfg.optimizer}' is not adamw or sgd")
    sgd = cfg.optimizer == "sgd"
    return LoopConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                      optimizer=cfg.optimizer, momentum=0.0, schedule="poly" if sgd else "cosine",
                      warmup_epochs=0.5, min_lr_ratio=0.01, num_workers=0, amp=cfg.amp, seed=cfg.seed,
                      name="relations")


class RelationTask(Task):
    """IRN's relation loss of the boundary head over the pairs within ``train_radius`` of the
    confident labels' stride-4 grid (:class:`LabelCrops`); only the head trains."""

    nan_hint = "lower refine.irn.lr or check the confident labels"

    def __init__(self, net: RelationNet, cfg: IRNConfig):
        self.model, self.cfg = net, cfg

    def param_groups(self, cfg: LoopConfig) -> list[dict]:
        # weight decay on every parameter of the head, as IRN's optimizer
        return [{"params": list(self.model.head.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay}]

    def forward(self, net, batch, device):
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        return {"boundary": net(x)}, (y,)

    def loss(self, out, targets, epochs):
        r = self.cfg.train_radius
        terms = affinity.relation_loss(affinity.boundary_to_affinity(out["boundary"].float(), r),
                                       affinity.pair_labels(targets[0], r))
        return terms, {}


def train_relations(net: RelationNet, dataset: LabelCrops, cfg: IRNConfig, device: torch.device,
                    live=None, checkpoint=None, resume=None) -> dict:
    """Train ``net.head`` in place through the training loop (:func:`wsss.training.run`); return
    the last epoch's summary (its mean loss terms as ``loss_*``)."""
    summary = run(RelationTask(net, cfg), dataset, loop_config(cfg), device, live, checkpoint, resume)
    return {"epoch": summary["epoch"], "loss_total": summary["loss"],
            **{f"loss_{k}": v for k, v in summary.get("terms", {}).items()}}


class Walker:
    """Seed maps of one image -> class-id labels by the random walk over the relation net's affinity."""

    def __init__(self, net: RelationNet, kind: str, cfg: IRNConfig, device: torch.device):
        self.net, self.kind, self.cfg, self.device = net.to(device).eval(), kind, cfg, device

    @torch.no_grad()
    def boundary(self, image: np.ndarray) -> torch.Tensor:
        """Boundary map (ceil(H/4), ceil(W/4)) of an RGB image: the sigmoid of the mean of its
        and its flip's logits (IRN's ``EdgeDisplacement``)."""
        h, w = image.shape[:2]
        x = to_tensor(normalize(image))[None]
        x = torch.cat([x, x.flip(-1)])
        m = self.net.pad_multiple
        x = F.pad(x, (0, (-w) % m, 0, (-h) % m)).to(self.device)
        b = self.net.logits(x)
        gh, gw = -(-h // STRIDE), -(-w // STRIDE)
        # each copy was padded on its right: its valid cells come first; the flip's are mirrored back
        return torch.sigmoid((b[0, :gh, :gw] + b[1, :gh, :gw].flip(-1)) / 2)

    @torch.no_grad()
    def scores(self, image: np.ndarray, maps: dict[str, np.ndarray]) -> torch.Tensor:
        """The walked seeds at full size: (k, H, W) for a CAM, (k + 1, H, W) with the background
        first for an R-CAM (not yet normalised: :func:`walked_labels` divides by the global max)."""
        h, w = image.shape[:2]
        b = self.boundary(image)
        gh, gw = b.shape
        if self.kind == "rcam":
            x = torch.from_numpy(labels.seed_scores(maps, "rcam", 0.0))
        else:
            x = torch.from_numpy(maps["cam"].astype(np.float32))
        # seeds onto the boundary's stride-4 grid (as SIPE resizes its IS-CAMs)
        x = F.interpolate(x[None], size=(gh, gw), mode="bilinear", align_corners=False)[0].to(self.device)
        walked = walk(x, b, self.kind, self.cfg)
        return F.interpolate(walked[None], size=(gh * STRIDE, gw * STRIDE), mode="bilinear",
                             align_corners=False)[0, :, :h, :w]

    def __call__(self, image: np.ndarray, maps: dict[str, np.ndarray]) -> np.ndarray:
        """Class-id labels (H, W) uint8 (:func:`walked_labels` of :meth:`scores`)."""
        compact = walked_labels(self.scores(image, maps), self.kind, self.cfg.bg_threshold)
        return labels.to_class_ids(compact.cpu().numpy(), [int(k) for k in maps["keys"]])


def walk(seeds: torch.Tensor, boundary: torch.Tensor, kind: str, cfg: IRNConfig) -> torch.Tensor:
    """The random walk of seeds (K, h, w) >= 0 on the boundary's grid (h, w) in [0, 1]: an
    R-CAM raised to ``rcam_power`` first (SIPE), then times ``1 - boundary`` (IRN and SIPE: no
    seed mass starts on a boundary), walked ``iterations`` steps over the affinities within
    ``walk_radius`` raised to ``beta``. Returns (K, h, w)."""
    x = seeds.clamp_min(0)
    if kind == "rcam":
        x = x ** cfg.rcam_power
    x = x * (1.0 - boundary)
    aff = affinity.boundary_to_affinity(boundary[None], cfg.walk_radius)[0]
    return affinity.random_walk(x, aff, cfg.walk_radius, cfg.beta, cfg.iterations)


def walked_labels(walked: torch.Tensor, kind: str, bg_threshold: float) -> torch.Tensor:
    """Compact labels (H, W) uint8 from walked seeds (K, H, W): divided by their *global*
    maximum (one scale for all channels, as IRN); a CAM's classes then compete with a constant
    background at ``bg_threshold`` (IRN's ``sem_seg_bg_thres``), an R-CAM's channels
    (background first) by themselves (SIPE); the argmax, ties to the background."""
    walked = walked / (walked.max() + 1e-5)
    if kind == "cam":
        walked = torch.cat([torch.full((1, *walked.shape[1:]), bg_threshold, dtype=walked.dtype,
                                       device=walked.device), walked])
    return walked.argmax(dim=0).to(torch.uint8)
