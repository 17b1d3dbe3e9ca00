"""Relation net: a class-boundary head on a trained, frozen SWTformer backbone (IRN's edge branch).

Each of the four Swin stage maps (strides 4, 8, 16, 32 with 4 px patches; 2, 4, 8, 16 with 2 px
patches) goes through a 1x1 conv + GroupNorm + ReLU to ``dim`` channels and is brought to the
stride-4 grid (bilinearly up, or by area averaging down); the four are
concatenated and one 1x1 conv (with bias) gives the boundary logit, as IRN's edge branch does
with its five ResNet levels.
The backbone runs in eval mode without gradients (IRN trains only its branches); only the head
is trained and saved. :mod:`wsss.refine.affinity` turns the boundary map into affinities.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _branch(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_dim, out_dim, 1, bias=False), nn.GroupNorm(4, out_dim), nn.ReLU(inplace=True))


class BoundaryHead(nn.Module):
    """Four stage maps -> boundary logits (B, 1, h, w) on ``grid`` (default: stage 1's)."""

    def __init__(self, in_dims: list[int], dim: int = 32):
        super().__init__()
        self.sides = nn.ModuleList(_branch(c, dim) for c in in_dims)
        self.out = nn.Conv2d(dim * len(in_dims), 1, 1)

    def forward(self, stages: list[torch.Tensor], grid: tuple[int, int] | None = None) -> torch.Tensor:
        grid = tuple(grid or stages[0].shape[-2:])
        sides = [_to_grid(side(s), grid) for side, s in zip(self.sides, stages)]
        return self.out(torch.cat(sides, dim=1))


def _to_grid(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """x (B, D, h, w) on ``grid``: itself, area-averaged down, or bilinearly up."""
    if tuple(x.shape[-2:]) == grid:
        return x
    if x.shape[-2] >= grid[0] and x.shape[-1] >= grid[1]:
        return F.adaptive_avg_pool2d(x, grid)
    return F.interpolate(x, size=grid, mode="bilinear", align_corners=False)


class RelationNet(nn.Module):
    """A frozen SWTformer (V1 or V2; only its backbone is used) + a trainable :class:`BoundaryHead`."""

    def __init__(self, classifier: nn.Module, dim: int = 32):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.head = BoundaryHead([info["num_chs"] for info in classifier.backbone.feature_info], dim)

    @property
    def pad_multiple(self) -> int:
        return self.classifier.pad_multiple

    def train(self, mode: bool = True) -> "RelationNet":
        super().train(mode)
        self.classifier.eval()       # the backbone stays frozen (no dropout / drop-path)
        return self

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W), H and W multiples of :attr:`pad_multiple` -> boundary logits (B, H/4, W/4)."""
        with torch.no_grad():
            _, stages = self.classifier.features(x)
        return self.head([s.float() for s in stages], (-(-x.shape[-2] // 4), -(-x.shape[-1] // 4)))[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) -> boundary (B, H/4, W/4) in [0, 1]: the sigmoid of :meth:`logits`."""
        return torch.sigmoid(self.logits(x))
