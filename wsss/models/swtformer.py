"""SWTformer: Swin Transformer classifiers whose patch tokens give class activation maps.

V1 (paper Eq. 1-2): the last stage's tokens ``T_out`` (B, D, h, w) go through a conv head to
``F_out`` (B, C, h, w); class scores are ``GAP(F_out)`` (B, C); the CAM is
``ReLU(F_out)`` divided by its spatial max per class.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import swin


@dataclass
class ModelConfig:
    """Everything needed to rebuild a trained model (stored beside its weights)."""

    version: str
    backbone: str
    num_classes: int
    img_size: int
    head_kernel: int = 3
    drop_path_rate: float = 0.0
    class_names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def max_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Divide each (B, K) map of x (B, K, H, W) by its spatial max (+eps). Non-negative input."""
    return x / (x.flatten(2).amax(dim=2)[..., None, None] + eps)


class SWTformerV1(nn.Module):
    """Swin backbone + patch-token conv head (MCTformer-style 3x3) + GAP classifier."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = swin.create_backbone(cfg.backbone, cfg.img_size, cfg.drop_path_rate)
        dim = self.backbone.num_features
        self.head = nn.Conv2d(dim, cfg.num_classes, cfg.head_kernel, padding=cfg.head_kernel // 2, bias=False)
        nn.init.trunc_normal_(self.head.weight, std=0.02)  # timm head init: unit-scale logits at start

    @property
    def pad_multiple(self) -> int:
        """Inference inputs are padded to a multiple of this (see :func:`swin.match_training_layout`)."""
        return swin.pad_multiple(self.backbone)

    def new_parameters(self) -> list[nn.Parameter]:
        """Layers not in the ImageNet checkpoint (they learn at a higher rate)."""
        return list(self.head.parameters())

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x (B, 3, H, W) -> T_out (B, D, H/32, W/32) (final-normed) and the four stage maps."""
        swin.match_training_layout(self.backbone, x.shape[-2], x.shape[-1])
        t_out, stages = self.backbone.forward_intermediates(x, norm=False)
        return t_out.permute(0, 3, 1, 2).contiguous(), stages

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, 3, H, W) -> {"logits": (B, C), "cam_raw": F_out (B, C, H/32, W/32)}."""
        t_out, _ = self.features(x)
        f_out = self.head(t_out)
        return {"logits": f_out.mean(dim=(2, 3)), "cam_raw": f_out}

    @staticmethod
    def cam(out: dict[str, torch.Tensor]) -> torch.Tensor:
        """C_out = Norm(ReLU(F_out)), (B, C, h, w) in [0, 1)."""
        return max_norm(F.relu(out["cam_raw"]))


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.version == "v1":
        return SWTformerV1(cfg)
    from ..config import ParamsError

    raise ParamsError(f"model.version: '{cfg.version}' is not implemented yet (use v1)")
