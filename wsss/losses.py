"""Training losses. V1: L_CLS only (paper Eq. 2, the standard multi-label soft margin loss)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label soft margin over C classes: logits (B, C), labels (B, C) in {0, 1} -> scalar.

    Eq. 2 of the paper is printed without the sigmoid and the minus sign; this is the loss it
    names (mean over classes and batch of the binary cross-entropy of sigmoid(logits)).
    """
    return F.multilabel_soft_margin_loss(logits.float(), labels.float())


def total_loss(out: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """All loss terms of one batch, with their weighted sum under ``"total"``."""
    cls = classification_loss(out["logits"], labels)
    return {"cls": cls, "total": cls}
