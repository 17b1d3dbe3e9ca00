"""Hierarchical feature fusion (SWTformer-V2, paper section 3-4 and Fig. 3).

The four Swin stage maps (strides 4, 8, 16, 32) are each projected by a 1x1 conv and
L2-normalised along channels (as SIPE does with its side branches). They are then joined in
two steps: (a) stage 1 is brought down to stage 2's grid by a stride-2 conv and concatenated with
stage 2; stage 4 is brought up to stage 3's grid by bilinear interpolation and concatenated with
stage 3; (b) the (1, 2) pair is brought down to the (3, 4) grid by a stride-2 conv and
concatenated with it. The result ``F_hie`` lies on the stride-16 grid.

Every strided conv's output and the upsampled stage 4 are L2-normalised again (the fused (1, 2)
pair to norm sqrt(2)), so each stage weighs the same in the cosine similarities the prototypes are
matched with (SIPE's fused feature has that property; the paper's figure does not say).
``detach=True`` cuts the side branches off the backbone's graph, as SIPE does: the fusion then learns only from the losses that reach it, and cannot pull the
backbone's features towards itself.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def l2_normalize(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Divide each position's channel vector of x (B, D, h, w) by its L2 norm (+eps)."""
    return x / (x.norm(dim=1, keepdim=True) + eps)


def _down(in_dim: int) -> nn.Conv2d:
    return nn.Conv2d(in_dim, in_dim, kernel_size=3, stride=2, padding=1, bias=False)


class HierarchicalFeatureFusion(nn.Module):
    """Four stage maps -> ``F_hie`` (B, sum(dims), H/16, W/16).

    Args:
        in_dims: channels of the four stage maps (Swin-T: 96, 192, 384, 768).
        dims: channels of each projection (SIPE's side branches: 128, 128, 256, 256).
        detach: feed the branches detached stage maps (no gradient back into the backbone).
    """

    def __init__(self, in_dims: Sequence[int], dims: Sequence[int], detach: bool = True):
        super().__init__()
        if len(in_dims) != 4 or len(dims) != 4:
            raise ValueError(f"HFF needs four stages, got in_dims={list(in_dims)} dims={list(dims)}")
        self.detach = detach
        self.out_dim = int(sum(dims))
        self.proj = nn.ModuleList(nn.Conv2d(i, o, kernel_size=1, bias=False) for i, o in zip(in_dims, dims))
        self.down1 = _down(dims[0])                 # stage 1 -> stage 2 grid
        self.down12 = _down(dims[0] + dims[1])      # (1, 2) -> (3, 4) grid
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, stages: Sequence[torch.Tensor]) -> torch.Tensor:
        """stages: four (B, in_dims[s], h_s, w_s) maps, h_s = ceil(H / 2^(s+2)) -> (B, out_dim, h_2, w_2)."""
        s1, s2, s3, s4 = (l2_normalize(p(s.detach() if self.detach else s)) for p, s in zip(self.proj, stages))
        d1 = l2_normalize(self.down1(s1))
        d1 = _fit(d1, s2.shape[-2:])
        # a bilinear blend of unit vectors is shorter than 1: renormalise after upsampling
        up4 = l2_normalize(F.interpolate(s4, size=s3.shape[-2:], mode="bilinear", align_corners=False))
        low = torch.cat([d1, s2], dim=1)
        high = torch.cat([s3, up4], dim=1)
        # the fused (1, 2) pair gets norm sqrt(2), as the (3, 4) pair has: both halves weigh the same
        d12 = l2_normalize(_fit(self.down12(low), high.shape[-2:])) * math.sqrt(2.0)
        return torch.cat([d12, high], dim=1)


def _fit(x: torch.Tensor, size) -> torch.Tensor:
    """Crop or zero-pad x (B, D, h, w) at the bottom/right to ``size`` (a strided conv of an odd grid)."""
    h, w = size
    x = x[..., :h, :w]
    return F.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2]))
