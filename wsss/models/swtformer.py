"""SWTformer: Swin Transformer classifiers whose patch tokens give class activation maps.

V1 (paper Eq. 1-2): the last stage's tokens ``T_out`` (B, D, h, w) go through a conv head to
``F_out`` (B, C, h, w); class scores are ``GAP(F_out)`` (B, C); the CAM is
``ReLU(F_out)`` divided by its spatial max per class.

V2 (paper section 3-4, 3-5) adds, given the image labels: the hierarchical fused feature
``F_hie`` (B, D', H/16, W/16) of all four stages (:mod:`.hff`); the (C+1) map ``M`` with a
background channel; one-hot seeds from the structural match of a feature affinity with ``M``;
per-class prototypes over the seed regions of ``F_hie``; and the R-CAM ``ReLU(cos(F_hie, P_k))``
(:mod:`.seeds`). How the seeds are located is a :class:`Seeding`: in training the model's own
(:meth:`SWTformerV2.training_seeding`, from the config: ``T_out``'s or ``F_hie``'s affinity,
every labelled class seeded or not, one background prototype; the paper's Eq. 4 and SIPE's
training use ``T_out``'s); at inference the caller may pass another (SIPE's inference code
locates them with ``F_hie``'s affinity; several background prototypes are this project's option).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import swin
from .hff import HierarchicalFeatureFusion
from .seeds import (background_prototypes, class_prototypes, masked, reactivate, resize_valid,
                    structural_seeds, valid_grid, with_background)


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
    # V2 only
    hff_dims: list[int] = field(default_factory=lambda: [128, 128, 256, 256])
    hff_detach: bool = True
    affinity: str = "abs"
    bg_weight: float = 0.5
    seed_features: str = "tokens"
    every_class: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Seeding:
    """How V2 locates its seeds and models the background.

    ``features``: whose affinity the structural match uses, ``tokens`` (``T_out``, paper Eq. 4;
    seeds on the token grid) or ``fused`` (``F_hie``, with ``M`` resized to its grid, as SIPE's
    inference code); ``affinity``: ``abs`` (|cos|, the paper) or ``relu`` (SIPE); ``bg_weight``:
    the background's structural match is multiplied by this (SIPE: 0.5); ``bg_prototypes``: 1
    (SIPE: the mean feature of the background seeds) or k > 1 (the centres of a k-means over them;
    the R-CAM's background channel is the best match of the k); ``every_class``: a present class
    the match left without a seed takes the cell of its best match (paper, SIPE: it stays without
    one, and its R-CAM channel is 0).
    """

    features: str = "tokens"
    affinity: str = "abs"
    bg_weight: float = 0.5
    bg_prototypes: int = 1
    every_class: bool = False


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

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                valid: torch.Tensor | None = None, seeding: Seeding | None = None) -> dict[str, torch.Tensor]:
        """x (B, 3, H, W) -> {"logits": (B, C), "cam_raw": F_out (B, C, H/32, W/32)} (labels, valid
        and seeding unused: V1's CAM is cropped to the image after the forward pass)."""
        t_out, _ = self.features(x)
        f_out = self.head(t_out)
        return {"logits": f_out.mean(dim=(2, 3)), "cam_raw": f_out}

    @staticmethod
    def cam(out: dict[str, torch.Tensor]) -> torch.Tensor:
        """C_out = Norm(ReLU(F_out)), (B, C, h, w) in [0, 1)."""
        return max_norm(F.relu(out["cam_raw"]))


class SWTformerV2(SWTformerV1):
    """V1 + hierarchical feature fusion + background-aware seeds, prototypes and R-CAM."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        in_dims = [info["num_chs"] for info in self.backbone.feature_info]
        self.hff = HierarchicalFeatureFusion(in_dims, cfg.hff_dims, detach=cfg.hff_detach)

    def new_parameters(self) -> list[nn.Parameter]:
        return [*self.head.parameters(), *self.hff.parameters()]

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None,
                valid: torch.Tensor | None = None, seeding: Seeding | None = None) -> dict[str, torch.Tensor]:
        """x (B, 3, H, W), labels (B, C) multi-hot or None, valid (B, 1, H, W) in {0, 1} or None:
        which pixels are the image (not padding; None: all of them); seeding: how to locate the
        seeds (None: :meth:`training_seeding`, what the model trains with).

        Without labels, as V1 (classification only). With labels, also, for h2, w2 = H/16, W/16
        (see :meth:`seed_maps`):

        - ``"cam_bg"`` (B, C+1, h2, w2): ``M`` (background + present classes, max-normed CAMs)
          bilinearly resized to the ``F_hie`` grid;
        - ``"rcam_raw"`` (B, C+1, h2, w2): ``ReLU(cos(F_hie, P_k))`` in [0, 1], not max-normed;
        - ``"seeds"`` (B, C+1, h, w): the one-hot seeds, on the token grid (H/32, W/32) or the
          fused grid (h2, w2), as ``seeding.features`` says;
        - ``"prototypes"`` (B, C+1, D'): the mean ``F_hie`` feature of each seed region (0: no seed;
          the background's one mean, whatever ``seeding.bg_prototypes``);
        - ``"valid"`` (B, 1, h2, w2): the cells of the ``F_hie`` grid that are the image.
        """
        t_out, stages = self.features(x)
        f_out = self.head(t_out)
        out = {"logits": f_out.mean(dim=(2, 3)), "cam_raw": f_out}
        if labels is None:
            return out
        return {**out, **self.seed_maps(t_out, f_out, self.hff(stages), labels, valid, seeding)}

    def training_seeding(self) -> Seeding:
        """The seeds the model trains with: by default the paper's (``T_out``'s affinity,
        ``cfg.affinity``, one background prototype); ``cfg.seed_features`` and ``cfg.every_class``
        as in :class:`Seeding`."""
        return Seeding(self.cfg.seed_features, self.cfg.affinity, self.cfg.bg_weight, 1, self.cfg.every_class)

    def seed_maps(self, t_out: torch.Tensor, f_out: torch.Tensor, f_hie: torch.Tensor, labels: torch.Tensor,
                  valid: torch.Tensor | None = None, seeding: Seeding | None = None) -> dict[str, torch.Tensor]:
        """V2's seeds, prototypes and R-CAM from T_out (B, D, h, w), F_out (B, C, h, w), F_hie
        (B, D', 2h, 2w) and labels (B, C); padding (``valid``, a pixel mask) masked out of every
        step: the CAMs are max-normed over the image's tokens, padded cells are neither
        affinity neighbours nor seeds nor in a prototype, and ``M`` and the R-CAM are 0 there.

        The seeds lie on the grid of the features whose affinity locates them
        (``seeding.features``): the token grid (``T_out``, with ``M`` on it) or the fused grid
        (``F_hie``, with ``M`` resized to it, as ``cam_bg``)."""
        seeding = seeding or self.training_seeding()
        f_hie = f_hie.float()
        grid = f_hie.shape[-2:]
        v_tok, v_hie = valid_grid(valid, f_out.shape[-2:]), valid_grid(valid, grid)
        m = masked(with_background(max_norm(masked(F.relu(f_out.float()), v_tok)), labels), v_tok)
        cam_bg = resize_valid(m, v_tok, v_hie, grid)
        if seeding.features == "fused":
            seeds = structural_seeds(f_hie, cam_bg, labels, seeding.affinity, seeding.bg_weight, v_hie,
                                     seeding.every_class)
        else:
            seeds = structural_seeds(t_out, m, labels, seeding.affinity, seeding.bg_weight, v_tok,
                                     seeding.every_class)
        on_hie = masked(F.interpolate(seeds, size=grid, mode="nearest"), v_hie)
        prototypes = class_prototypes(on_hie, f_hie)
        rcam = reactivate(prototypes, f_hie, valid=v_hie)
        if seeding.bg_prototypes > 1:
            bg = background_prototypes(on_hie[:, :1], f_hie, seeding.bg_prototypes)
            rcam = torch.cat([reactivate(bg, f_hie, valid=v_hie).amax(dim=1, keepdim=True), rcam[:, 1:]], dim=1)
        out = {"rcam_raw": rcam, "cam_bg": cam_bg, "seeds": seeds, "prototypes": prototypes}
        if valid is not None:
            out["valid"] = v_hie
        return out

    @staticmethod
    def rcam(out: dict[str, torch.Tensor]) -> torch.Tensor:
        """R-CAM = Norm(ReLU(cos(F_hie, P_k))), (B, C+1, h2, w2) in [0, 1)."""
        return max_norm(out["rcam_raw"])


MODELS = {"v1": SWTformerV1, "v2": SWTformerV2}


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.version not in MODELS:
        from ..config import ParamsError

        raise ParamsError(f"model.version: '{cfg.version}' is not one of {', '.join(MODELS)}")
    return MODELS[cfg.version](cfg)
