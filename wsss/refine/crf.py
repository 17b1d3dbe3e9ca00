"""Dense CRF refinement with pydensecrf (Kraehenbuehl & Koltun's fully connected CRF).

Two known-good ways to use it on seeds (SPEC "Refinement"):

- ``prob``: unary = -log of per-pixel class probabilities (PSA's CRF on CAMs:
  gaussian sxy 3 / compat 3, bilateral sxy 80 / srgb 13 / compat 10);
- ``labels``: unary from a hard label map trusted with probability ``gt_prob`` (IRN's label
  cleaning: gt_prob 0.7, gaussian 3 / 3, bilateral 50 / 5 / 10).

Both work on compact channels (background + the image's present classes), so the CRF's cost
does not grow with the number of classes in the data set.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels, unary_from_softmax


@dataclass(frozen=True)
class CRFConfig:
    """Pairwise kernels and iterations (defaults: PSA's probability-map setting)."""

    iterations: int = 10
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0

    @classmethod
    def from_params(cls, section) -> "CRFConfig":
        """From a params section holding the kernel keys (refine.crf, refine.irn.clean_crf)."""
        return cls(**{name: getattr(section, name) for name in cls.__dataclass_fields__})


def _infer(image: np.ndarray, unary: np.ndarray, n: int, cfg: CRFConfig) -> np.ndarray:
    h, w = image.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n)
    d.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    d.addPairwiseGaussian(sxy=cfg.gaussian_sxy, compat=cfg.gaussian_compat)
    d.addPairwiseBilateral(sxy=cfg.bilateral_sxy, srgb=cfg.bilateral_srgb,
                           rgbim=np.ascontiguousarray(image, dtype=np.uint8), compat=cfg.bilateral_compat)
    return np.asarray(d.inference(cfg.iterations), dtype=np.float32).reshape(n, h, w)


def crf_from_probs(image: np.ndarray, probs: np.ndarray, cfg: CRFConfig = CRFConfig()) -> np.ndarray:
    """image (H, W, 3) uint8 RGB, probs (n, H, W) >= 0 (normalised here per pixel) -> posterior (n, H, W)."""
    if probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"probabilities {probs.shape[1:]} and image {image.shape[:2]} differ in size")
    p = np.clip(probs.astype(np.float32), 1e-5, None)
    p /= p.sum(axis=0, keepdims=True)
    return _infer(image, unary_from_softmax(p), p.shape[0], cfg)


def crf_from_labels(image: np.ndarray, labels: np.ndarray, n: int, gt_prob: float = 0.7,
                    cfg: CRFConfig = CRFConfig()) -> np.ndarray:
    """image (H, W, 3) uint8, labels (H, W) in 0..n-1 (compact) -> refined labels (H, W) in 0..n-1."""
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels {labels.shape} and image {image.shape[:2]} differ in size")
    if n < 2:
        return np.zeros_like(labels)
    unary = unary_from_labels(labels.astype(np.int32), n, gt_prob=gt_prob, zero_unsure=False)
    return _infer(image, unary, n, cfg).argmax(axis=0).astype(labels.dtype)
