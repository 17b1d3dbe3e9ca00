"""The segmentation network of step 3: DeepLabV3 from library parts.

A timm backbone (``features_only``, its last stages dilated to ``output_stride`` by timm) feeds
torchvision's ASPP (``torchvision.models.segmentation.deeplabv3.ASPP``: 1x1, three dilated 3x3
and an image-pooling branch, projected to ``aspp_channels``), then a 3x3 conv + BN + ReLU and a
1x1 classifier: torchvision's ``DeepLabHead`` with its width and rates as parameters (theirs is
256 channels at rates 12 / 24 / 36). The logits are upsampled bilinearly to the input size.

Why timm for the backbone: it is the library the classifier already stands on; any of its
hundreds of ImageNet classifiers (ResNet-101, the literature's DeepLab setting; small ResNets)
becomes a dilated feature extractor by name, and its ImageNet weights come from its hub when
online or from a local file (a torchvision ResNet checkpoint fits timm's ResNets key for key).
Weights trained on segmentation masks are refused (:func:`check_not_segmentation`): the
COCO-trained DeepLab weights torchvision ships saw the VOC classes with full masks.

``backbone: classifier`` takes the trained SWTformer's own Swin backbone (timm's Swin, with the
weights the classifier learnt from image-level labels only) as the feature extractor
(:class:`ClassifierFeatures`): the CPU demo has no ImageNet weights, and a segmenter from
scratch there learns where objects are but not which class they are.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.segmentation.deeplabv3 import ASPP

from ..errors import BackboneError
from ..io import load_weights

#: key fragments of a segmentation network's state dict (torchvision's DeepLab / FCN / LR-ASPP,
#: mmsegmentation, segmentation_models_pytorch): a file holding one is not ImageNet weights
SEGMENTATION_KEYS = ("aux_classifier.", "classifier.4.", "decode_head.", "auxiliary_head.", "segmentation_head.",
                     "decoder.", "aspp.", "head.aspp", "classifier.0.convs")
#: torchvision weight names trained on masks of the VOC classes
SEGMENTATION_WEIGHT_NAMES = ("coco_with_voc_labels", "deeplabv3_", "fcn_", "lraspp_")


@dataclass(frozen=True)
class SegmenterConfig:
    backbone: str = "resnet18"        # a timm model with features_only support
    num_classes: int = 21             # background + the data set's classes
    output_stride: int = 16           # 8, 16 or 32 (DeepLab: 16 in training, 8 at test in the paper)
    feature_stage: int = -1           # which of the backbone's stages feeds ASPP (-1: the last)
    aspp_channels: int = 256
    aspp_rates: tuple[int, ...] = (6, 12, 18)
    class_names: tuple[str, ...] = field(default_factory=tuple)
    classifier: dict | None = None    # backbone "classifier": the SWTformer's ModelConfig (as a dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["aspp_rates"], d["class_names"] = list(self.aspp_rates), list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SegmenterConfig":
        return cls(**{**d, "aspp_rates": tuple(d["aspp_rates"]), "class_names": tuple(d.get("class_names", ()))})


class _Info:
    """timm's ``feature_info`` interface, for one feature map."""

    def __init__(self, channels: int, reduction: int):
        self._channels, self._reduction = [channels], [reduction]

    def channels(self) -> list[int]:
        return self._channels

    def reduction(self) -> list[int]:
        return self._reduction


class ClassifierFeatures(nn.Module):
    """The SWTformer's Swin backbone as a feature extractor: x (B, 3, H, W) -> [T_out (B, D,
    ceil(H/s), ceil(W/s))], the final-normed last-stage tokens the CAM head reads (s: the
    backbone's last stride, 16 for ``swin_demo_p2``). The input is zero-padded to the backbone's
    multiple (its windows tile the grid as in training) and the map cropped back to the image's cells."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        from . import swin

        self.backbone = classifier.backbone
        self.multiple = swin.pad_multiple(self.backbone)
        self.stride = swin.stage_strides(self.backbone)[-1]
        self.feature_info = _Info(self.backbone.num_features, self.stride)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        from . import swin

        h, w = x.shape[-2:]
        m = self.multiple
        x = F.pad(x, (0, (-w) % m, 0, (-h) % m))
        swin.match_training_layout(self.backbone, x.shape[-2], x.shape[-1])
        t_out, _ = self.backbone.forward_intermediates(x, norm=False)
        t = t_out.permute(0, 3, 1, 2)
        return [t[..., :-(-h // self.stride), :-(-w // self.stride)].contiguous()]


class Segmenter(nn.Module):
    """x (B, 3, H, W), ImageNet-normalised -> logits (B, K, H, W), K = ``cfg.num_classes``."""

    def __init__(self, cfg: SegmenterConfig, backbone: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone if backbone is not None else create_backbone(cfg)
        in_ch = self.backbone.feature_info.channels()[-1]
        w = cfg.aspp_channels
        self.head = nn.Sequential(ASPP(in_ch, list(cfg.aspp_rates), w),
                                  nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                                  nn.Conv2d(w, cfg.num_classes, 1))

    def new_parameters(self):
        """The head (trained from scratch; DeepLab gives it a higher learning rate)."""
        return list(self.head.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)[-1]                       # (B, C, H / os, W / os)
        return F.interpolate(self.head(features), size=x.shape[-2:], mode="bilinear", align_corners=False)


def create_backbone(cfg: SegmenterConfig, pretrained: str = "none", classifier_state: dict | None = None) -> nn.Module:
    """timm ``features_only`` backbone of ``cfg`` (one stage out), with ``pretrained``: ``none``,
    ``timm`` (its hub's ImageNet weights) or a local file of ImageNet classification weights
    (safetensors, or a torch file loadable with ``weights_only=True``). ``backbone: classifier``:
    the SWTformer of ``cfg.classifier``, its weights from ``classifier_state`` (its state dict;
    None: left at init, for loading a trained segmenter's weights over it)."""
    if cfg.backbone == "classifier":
        from .swtformer import ModelConfig, build_model

        if cfg.classifier is None:
            raise BackboneError("segment.backbone: classifier needs the classifier's config (models/model.json)")
        model = build_model(ModelConfig(**cfg.classifier))
        if classifier_state is not None:
            model.load_state_dict(classifier_state)
        return ClassifierFeatures(model)
    if not timm.is_model(cfg.backbone):
        raise BackboneError(f"segment.backbone: unknown timm model '{cfg.backbone}'")
    kwargs = dict(features_only=True, out_indices=(cfg.feature_stage,))
    if cfg.output_stride != 32:
        kwargs["output_stride"] = cfg.output_stride
    try:
        model = timm.create_model(cfg.backbone, pretrained=pretrained == "timm", **kwargs)
    except (RuntimeError, TypeError, ValueError, AssertionError) as exc:
        raise BackboneError(f"segment.backbone: timm cannot build '{cfg.backbone}' as a feature extractor "
                            f"with output stride {cfg.output_stride}: {exc}") from None
    if pretrained not in ("none", "timm"):
        load_backbone_file(model, Path(pretrained), cfg.backbone)
    return model


def check_not_segmentation(source: str, keys) -> None:
    """Refuse weights trained on segmentation masks (by their name or their tensors' names)."""
    low = source.lower()
    hit = next((k for k in keys if any(f in k for f in SEGMENTATION_KEYS)), None)
    named = next((n for n in SEGMENTATION_WEIGHT_NAMES if n in Path(low).name), None)
    if hit or named:
        why = f"it holds segmentation-head tensors (e.g. '{hit}')" if hit else f"its name says so ('{named}')"
        raise BackboneError(
            f"segment.pretrained: '{source}' looks like a segmentation model's weights ({why}). Weights "
            f"trained on segmentation masks (e.g. torchvision's COCO-trained DeepLab, which saw the VOC "
            f"classes with full masks) would make the result not weakly supervised: give ImageNet "
            f"classification weights (segment.pretrained: timm, or a file of them)")


def load_backbone_file(model: nn.Module, path: Path, name: str) -> dict:
    """Load an ImageNet checkpoint of timm model ``name`` into its feature extractor ``model``:
    every backbone tensor must be in the file (the classifier's ``fc`` / ``head`` and the stages
    past the one used are left out). One :class:`BackboneError` line otherwise."""
    if not path.exists():
        raise BackboneError(f"segment.pretrained: '{path}' does not exist (none | timm | a local file)")
    try:
        if path.suffix == ".safetensors":
            state = load_weights(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("state_dict", "model"):
                if isinstance(state, dict) and isinstance(state.get(key), dict):
                    state = state[key]
    except Exception as exc:  # noqa: BLE001 - any unreadable file: one line
        raise BackboneError(f"segment.pretrained: '{path}' is not loadable as weights "
                            f"(safetensors, or torch with weights_only=True): {exc}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"segment.pretrained: '{path}' holds no state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    check_not_segmentation(str(path), state)
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        what = (f"{len(missing)} of its {len(own)} tensors are not in the file (e.g. {missing[:3]})" if missing
                else f"{len(wrong)} tensors have other shapes (e.g. '{wrong[0]}': {tuple(state[wrong[0]].shape)} "
                     f"in the file, {tuple(own[wrong[0]].shape)} in the model)")
        raise BackboneError(f"segment.pretrained: '{path}' does not fit timm's '{name}': {what}")
    model.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
    return {"loaded": len(own) - len(missing), "unused": sorted(k for k in state if k not in own)[:20]}


def build_segmenter(cfg: SegmenterConfig, pretrained: str = "none", classifier_state: dict | None = None) -> Segmenter:
    return Segmenter(cfg, create_backbone(cfg, pretrained, classifier_state))


def load_segmenter(weights: Path, info: Path, device=None) -> Segmenter:
    """The trained segmenter from its safetensors weights and its ``model.json``, in eval mode."""
    from ..io import ArtifactError, read_json

    cfg = SegmenterConfig.from_dict(read_json(info)["config"])
    model = Segmenter(cfg)
    state = load_weights(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArtifactError(f"{weights}: does not fit the segmenter of {info} ({cfg.backbone}): "
                            f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.to(device or "cpu").eval()
