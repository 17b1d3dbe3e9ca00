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

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data import voc
from ..data.datasets import EpochSeeded, normalize, random_crop, resize, to_tensor
from ..models.relations import RelationNet
from ..training import EpochShuffle, TrainingError, warmup_cosine
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

    @classmethod
    def from_params(cls, irn, seed: int) -> "IRNConfig":
        """From the ``refine.irn`` params section and the global seed."""
        names = set(cls.__dataclass_fields__) - {"seed", "resize_long"}
        return cls(**{n: getattr(irn, n) for n in names}, resize_long=tuple(irn.resize_long), seed=seed)


class LabelCrops(EpochSeeded):
    """Training crops with their confident labels on the stride-4 grid:
    item -> (image (3, S, S) float, labels (S/4, S/4) int64 with 255 = unsure / padding)."""

    def __init__(self, root: Path, ids: Sequence[str], label_paths: Sequence[Path], cfg: IRNConfig):
        if not ids:
            raise TrainingError("the relation net has no training images")
        super().__init__(ids, cfg.seed)
        self.root, self.label_paths, self.cfg = Path(root), list(label_paths), cfg

    def __getitem__(self, index: int):
        cfg = self.cfg
        rng = self.rng(index)
        img = voc.read_image(voc.image_path(self.root, self.ids[index]))
        lab = voc.read_mask(self.label_paths[index])
        if lab.shape != img.shape[:2]:
            raise voc.DataError(f"{self.label_paths[index]}: labels {lab.shape} but image {img.shape[:2]}")
        long_side = int(rng.integers(cfg.resize_long[0], cfg.resize_long[1] + 1))
        s = long_side / max(img.shape[:2])
        h, w = max(1, round(img.shape[0] * s)), max(1, round(img.shape[1] * s))
        img = resize(img, h, w)
        lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.float32)
        if rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        # one crop for both: the labels ride along as a 4th channel, shifted by 1 so padding reads 0
        both, _ = random_crop(np.concatenate([normalize(img), lab[..., None] + 1], axis=2), cfg.crop_size, rng)
        grid = both[STRIDE // 2::STRIDE, STRIDE // 2::STRIDE, 3].astype(np.int64) - 1
        grid[grid < 0] = affinity.IGNORE
        return to_tensor(np.ascontiguousarray(both[..., :3])), torch.from_numpy(grid)


def make_optimizer(params, cfg: IRNConfig, total_steps: int, warmup_steps: int):
    """(optimizer, LambdaLR schedule) for the boundary head: ``adamw`` with warm-up + cosine, or
    ``sgd`` as IRN's ``PolyOptimizer``: plain SGD (IRN's call passes its weight decay where SGD
    takes the momentum: in effect none), learning rate ``lr * (1 - step / total) ** 0.9``."""
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.0, weight_decay=cfg.weight_decay)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (1 - step / total_steps) ** 0.9)
    if cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps, 0.01))
    raise ValueError(f"refine.irn.optimizer: '{cfg.optimizer}' is not adamw or sgd")


def train_relations(net: RelationNet, dataset: LabelCrops, cfg: IRNConfig, device: torch.device,
                    live=None) -> dict:
    """Train ``net.head`` in place (:func:`make_optimizer`); return the last epoch's mean losses."""
    net.to(device).train()
    sampler = EpochShuffle(len(dataset), cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True)
    steps = len(loader)
    if steps == 0:
        raise TrainingError(f"{len(dataset)} training images are fewer than one batch of "
                            f"refine.irn.batch_size={cfg.batch_size}")
    optimizer, schedule = make_optimizer(net.head.parameters(), cfg, cfg.epochs * steps, steps // 2)
    summary: dict = {}
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        sums: dict[str, float] = {}
        bar = tqdm(loader, desc=f"relations epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False)
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            boundary = net(x)
            terms = affinity.relation_loss(affinity.boundary_to_affinity(boundary, cfg.train_radius),
                                           affinity.pair_labels(y, cfg.train_radius))
            if not torch.isfinite(terms["total"]):
                raise TrainingError(f"relation loss is {terms['total'].item()} at epoch {epoch + 1}: "
                                    f"lower refine.irn.lr or check the confident labels")
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            schedule.step()
            values = {k: float(v.detach()) for k, v in terms.items()}
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{values['total']:.4f}")
            if live is not None:
                for k, v in values.items():
                    live.log_metric(f"train/loss_{k}", v)
                live.next_step()
        summary = {"epoch": epoch + 1, **{f"loss_{k}": v / steps for k, v in sums.items()}}
        tqdm.write("relations " + " ".join(f"{k}={v:.4g}" for k, v in summary.items()))
    return summary


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
