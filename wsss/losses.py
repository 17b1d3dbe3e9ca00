"""Training losses: L_CLS (paper Eq. 2) for V1; L_CLS + w_gsc L_GSC + w_ccl L_CCL (Eq. 5-7) for V2."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .models.swtformer import max_norm


@dataclass(frozen=True)
class LossWeights:
    """The V2 terms' weights, the reading of Eq. 6 (``paper`` or ``contrastive``), an optional
    linear ramp of both weights from 0 over the first ``ramp_epochs`` (0: full weight at once, as
    the paper; a from-scratch model has no CAM worth matching at first), and what the two terms
    train: ``both`` maps (the paper, SIPE: the CAM is pulled towards the R-CAM as much as the
    reverse) or the ``rcam`` only (the CAM is their fixed target; the classifier learns from
    L_CLS alone)."""

    w_gsc: float = 1.0
    w_ccl: float = 1.0
    ccl: str = "paper"
    ramp_epochs: float = 0.0
    grad_to: str = "both"      # both: GSC and CCL train the CAM and the R-CAM | rcam: the R-CAM only

    def at(self, epoch: float) -> "LossWeights":
        """The weights in force after ``epoch`` (fractional) epochs of training."""
        f = 1.0 if self.ramp_epochs <= 0 else min(1.0, epoch / self.ramp_epochs)
        return replace(self, w_gsc=self.w_gsc * f, w_ccl=self.w_ccl * f, ramp_epochs=0.0)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label soft margin over C classes: logits (B, C), labels (B, C) in {0, 1} -> scalar.

    Eq. 2 of the paper is printed without the sigmoid and the minus sign; this is the loss it
    names (mean over classes and batch of the binary cross-entropy of sigmoid(logits)).
    """
    return F.multilabel_soft_margin_loss(logits.float(), labels.float())


def gsc_loss(cam: torch.Tensor, rcam: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 5 as SIPE computes it, mean |CAM - R-CAM| over batch, the C+1 channels and pixels;
    with ``valid`` (B, 1, h, w), over the image's pixels only (SIPE averages over the whole crop,
    its CAM zeroed on the padding and its IS-CAM not).

    cam, rcam: (B, C+1, h, w), both max-normed, on the same grid.
    """
    diff = (cam - rcam).abs()
    if valid is None:
        return diff.mean()
    v = valid.to(diff.dtype)
    return (diff * v).sum() / (v.sum() * diff.shape[1]).clamp_min(1.0)


def _class_cosines(cam: torch.Tensor, rcam: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, K, h, w) x2 -> (B, K, K): cosine of CAM channel k with R-CAM channel l, maps flattened."""
    a = F.normalize(cam.flatten(2), dim=2, eps=eps)
    b = F.normalize(rcam.flatten(2), dim=2, eps=eps)
    return a @ b.transpose(1, 2)


def _present(labels: torch.Tensor) -> torch.Tensor:
    """(B, C) multi-hot -> (B, C+1) with the background always present."""
    return torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1).float()


def ccl_paper(cam: torch.Tensor, rcam: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 6 as printed: 1/2 [((2/3) c)^2 + (1 - c)^2], c = cos(CAM_k, R-CAM_k) per present class
    (background included), averaged over them. Smallest at c = 9/13, not at 1."""
    c = torch.diagonal(_class_cosines(cam, rcam), dim1=1, dim2=2)  # (B, K)
    per_class = 0.5 * ((2.0 / 3.0 * c) ** 2 + (1.0 - c) ** 2)
    present = _present(labels)
    return (per_class * present).sum() / present.sum()


def ccl_contrastive(cam: torch.Tensor, rcam: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class-wise contrastive reading of Eq. 6: for the present classes (background included),
    the same class in CAM and R-CAM is pulled to cosine 1, different classes pushed to cosine 0.

    ``mean_k (1 - c_kk) + mean_{k != l} c_kl`` (maps are non-negative, so c_kl >= 0).
    """
    cos = _class_cosines(cam, rcam)
    present = _present(labels)
    pair = present[:, :, None] * present[:, None, :]
    eye = torch.eye(cos.shape[1], device=cos.device, dtype=cos.dtype)[None]
    pull = ((1.0 - cos) * pair * eye).sum() / (pair * eye).sum()
    off = pair * (1 - eye)
    push = (cos * off).sum() / off.sum().clamp_min(1.0)
    return pull + push


CCL = {"paper": ccl_paper, "contrastive": ccl_contrastive}


def total_loss(out: dict[str, torch.Tensor], labels: torch.Tensor,
               weights: LossWeights | None = None) -> dict[str, torch.Tensor]:
    """All loss terms of one batch, with their weighted sum under ``"total"``.

    A V1 output (no ``rcam_raw``) has the one term ``cls``. A V2 output also has ``gsc`` and
    ``ccl``, always reported; a term whose weight is 0 is computed without gradient and left out
    of the sum, so with both weights 0 the fusion branch gets no gradient at all.
    """
    cls = classification_loss(out["logits"], labels)
    terms = {"cls": cls}
    total = cls
    if "rcam_raw" in out:
        w = weights or LossWeights()
        cam = out["cam_bg"].float()
        if w.grad_to == "rcam":
            cam = cam.detach()
        rcam = max_norm(out["rcam_raw"].float())
        for name, weight, fn in (("gsc", w.w_gsc, lambda: gsc_loss(cam, rcam, out.get("valid"))),
                                 ("ccl", w.w_ccl, lambda: CCL[w.ccl](cam, rcam, labels))):
            if weight > 0:
                value = fn()
                total = total + weight * value
            else:
                with torch.no_grad():
                    value = fn()
            terms[name] = value
    terms["total"] = total
    return terms
