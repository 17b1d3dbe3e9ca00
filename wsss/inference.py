"""Seed inference: multi-scale + flip CAMs (and V2's R-CAMs) for one image (SPEC "Seed inference").

At each scale the image is resized, padded (zeros after normalisation, as the training crops
are) to the model's ``pad_multiple`` so the Swin window layout matches training, run with its
horizontal flip as a batch of two (with the image's labels, which V2's seeds need, and the mask
of the pixels that are the image, which keeps the padding out of V2's seeds), and the
ReLU'd class maps of the valid region are resized to the image size and summed. The sum is
max-normalised per channel. V2's R-CAMs (background + present classes) are aggregated the same way.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data.datasets import normalize, resize, to_tensor
from .models.seeds import resize_valid
from .models.swtformer import Seeding


def seeding(seeds, model: torch.nn.Module) -> Seeding:
    """V2's seeding at inference from the ``cams.seeds`` parameters (features, affinity,
    bg_prototypes, every_class) and the trained model's own background weight."""
    return Seeding(seeds.features, seeds.affinity, model.cfg.bg_weight, seeds.bg_prototypes, seeds.every_class)


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple))


def _to_image(maps: torch.Tensor, padded: tuple[int, int], valid: tuple[int, int], size: tuple[int, int],
              flip: bool, cells: torch.Tensor | None = None) -> torch.Tensor:
    """Maps (n, K, h', w') of a padded (pair of) input(s) -> (K, H, W): upsampled to the padded
    input, cropped to the valid region, the flipped copy flipped back and added, resized to the
    image. With ``cells`` (n, 1, h', w'), the cells that are the image, the upsampling takes its
    values from those only (V2's masked maps are 0 on padding, which must not darken the image's
    border): :func:`wsss.models.seeds.resize_valid`."""
    if cells is None:
        maps = F.interpolate(maps, size=padded, mode="bilinear", align_corners=False)
    else:
        maps = resize_valid(maps, cells, None, padded)
    maps = maps[..., :valid[0], :valid[1]]
    if flip:
        maps = maps[0:1] + maps[1:2].flip(-1)
    return F.interpolate(maps[0:1], size=size, mode="bilinear", align_corners=False)[0]


def scaled_input(image: np.ndarray, scale: float, flip: bool) -> tuple[torch.Tensor, tuple[int, int]]:
    """An RGB uint8 image (H, W, 3) resized by ``scale``, normalised: (1, 3, h, w), or with
    ``flip`` (2, 3, h, w), the mirrored copy second; and its size (h, w)."""
    h, w = image.shape[:2]
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    x = to_tensor(normalize(resize(image, sh, sw)))[None]
    return (torch.cat([x, x.flip(-1)]) if flip else x), (sh, sw)


@torch.no_grad()
def multiscale_maps(model: torch.nn.Module, image: np.ndarray, keys: Sequence[int], scales: Sequence[float],
                    flip: bool, device: torch.device, amp: bool = False,
                    mask_padding: bool = True, seeding: Seeding | None = None) -> dict[str, np.ndarray]:
    """Seed maps of one RGB uint8 image (H, W, 3) for its present classes ``keys`` (1..C).

    ``seeding``: how a V2 model locates its seeds at each scale (None: as it trained, the
    paper's; :func:`seeding` reads ``cams.seeds``). ``mask_padding`` False lets the padding into
    V2's seeds as before issue 12 (for ``experiments/padding.py``, which measures what the mask
    changes).

    Returns ``{"cam": (k, H, W)}``, channel i for class ``keys[i]``, and for a V2 model also
    ``{"rcam": (k + 1, H, W)}``, channel 0 the background and channel i + 1 class ``keys[i]``;
    float32 in [0, 1], each channel max-normalised after summing over scales and flips.
    """
    h, w = image.shape[:2]
    fg = torch.as_tensor([k - 1 for k in keys], dtype=torch.long, device=device)
    with_bg = torch.cat([torch.zeros(1, dtype=torch.long, device=device), fg + 1])
    labels = torch.zeros((1, model.cfg.num_classes), device=device)
    labels[0, fg] = 1.0
    totals: dict[str, torch.Tensor] = {}
    use_amp = amp and device.type == "cuda"
    for s in scales:
        x, (sh, sw) = scaled_input(image, s, flip)
        x = _pad_to(x, model.pad_multiple).to(device)
        valid = torch.zeros((x.shape[0], 1, *x.shape[-2:]), device=device)
        valid[..., :sh, :sw] = 1.0       # each copy (the flip too) was padded on its right and bottom
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            out = model(x, labels.expand(x.shape[0], -1), valid=valid if mask_padding else None, seeding=seeding)
        per_scale = {"cam": F.relu(out["cam_raw"].float())[:, fg]}
        if "rcam_raw" in out:
            per_scale["rcam"] = out["rcam_raw"].float()[:, with_bg]
        for name, m in per_scale.items():
            cells = out.get("valid") if name == "rcam" else None     # the R-CAM is 0 on padding
            m = _to_image(m, tuple(x.shape[-2:]), (sh, sw), (h, w), flip, cells).cpu()
            totals[name] = totals[name] + m if name in totals else m
    return {name: (t / (t.flatten(1).amax(dim=1).clamp_min(0)[:, None, None] + 1e-5)).numpy()
            for name, t in totals.items()}
