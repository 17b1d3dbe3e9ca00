"""Seed inference: multi-scale + flip CAMs for one image (SPEC "Seed inference").

At each scale the image is resized, padded (zeros after normalisation, as the training crops
are) to the model's ``pad_multiple`` so the Swin window layout matches training, run with its
horizontal flip as a batch of two, and the ReLU'd class maps of the valid region are resized to
the image size and summed. The sum is max-normalised per present class.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data.datasets import normalize, resize, to_tensor


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple))


@torch.no_grad()
def multiscale_maps(model: torch.nn.Module, image: np.ndarray, keys: Sequence[int], scales: Sequence[float],
                    flip: bool, device: torch.device, amp: bool = False) -> dict[str, np.ndarray]:
    """CAMs of one RGB uint8 image (H, W, 3) for the present classes ``keys`` (1..C).

    Returns ``{"cam": (k, H, W) float32 in [0, 1]}``, channel i for class ``keys[i]``.
    """
    h, w = image.shape[:2]
    idx = torch.as_tensor([k - 1 for k in keys], dtype=torch.long)
    total = torch.zeros((len(keys), h, w), dtype=torch.float32)
    use_amp = amp and device.type == "cuda"
    for s in scales:
        sh, sw = max(1, round(h * s)), max(1, round(w * s))
        x = to_tensor(normalize(resize(image, sh, sw)))[None]
        if flip:
            x = torch.cat([x, x.flip(-1)])
        x = _pad_to(x, model.pad_multiple).to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            out = model(x)
        cam = F.relu(out["cam_raw"].float())[:, idx.to(device)]  # (n, k, h', w')
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[..., :sh, :sw]
        if flip:
            cam = cam[0:1] + cam[1:2].flip(-1)
        cam = F.interpolate(cam, size=(h, w), mode="bilinear", align_corners=False)[0]
        total += cam.cpu()
    total /= total.flatten(1).amax(dim=1).clamp_min(0)[:, None, None] + 1e-5
    return {"cam": total.numpy()}
