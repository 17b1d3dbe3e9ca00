"""Torch data sets over the manifest: augmented training crops and whole-image classification.

Augmentation follows AdvCAM/IRN/SIPE (SPEC "Data"): rescale the long side to a random length in
``resize_long``, horizontal flip, ImageNet normalisation, random crop (padding with zeros, i.e.
the mean colour, where the image is smaller than the crop); colour jitter only if asked.
Randomness comes from ``numpy.random.default_rng([seed, epoch, index])``: a sample's crop does
not depend on workers, processes or what ran before, so runs repeat exactly and resume exactly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset

from ..errors import DataError
from . import files

MEAN = np.array(IMAGENET_DEFAULT_MEAN, dtype=np.float32) * 255
STD = np.array(IMAGENET_DEFAULT_STD, dtype=np.float32) * 255


def normalize(img: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float32 (H, W, 3), ImageNet mean/std."""
    return (img.astype(np.float32) - MEAN) / STD


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """float (H, W, 3) -> (3, H, W) tensor."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def multi_hot(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Foreground indices 1..C -> (C,) float vector."""
    y = torch.zeros(num_classes)
    for k in labels:
        y[k - 1] = 1.0
    return y


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)


def rescale_long(img: np.ndarray, long_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = long_side / max(h, w)
    return resize(img, max(1, round(h * s)), max(1, round(w * s)))


def color_jitter(img: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by a factor in [1-s, 1+s] (uint8 in/out)."""
    x = img.astype(np.float32)
    b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
    x = x * b
    x = (x - x.mean()) * c + x.mean()
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - grey[..., None]) * s + grey[..., None]
    return np.clip(x, 0, 255).astype(np.uint8)


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Crop (size, size) at a random place; zero-pad (after normalisation) where smaller.
    Returns the crop and the box ``(top, left, height, width)`` of the image within it."""
    h, w = img.shape[:2]
    out = np.zeros((size, size, img.shape[2]), dtype=img.dtype)
    ch, cw = min(size, h), min(size, w)
    # offsets into the image (when larger) and into the output (when smaller)
    iy = rng.integers(0, h - ch + 1)
    ix = rng.integers(0, w - cw + 1)
    oy = rng.integers(0, size - ch + 1)
    ox = rng.integers(0, size - cw + 1)
    out[oy:oy + ch, ox:ox + cw] = img[iy:iy + ch, ix:ix + cw]
    return out, (int(oy), int(ox), int(ch), int(cw))


def box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boxes (B, 4) ``(top, left, height, width)`` -> pixel masks (B, 1, height, width) in {0, 1}:
    which pixels of each crop are the image (not padding)."""
    ys = torch.arange(height, device=boxes.device)
    xs = torch.arange(width, device=boxes.device)
    top, left, h, w = (boxes[:, i, None] for i in range(4))
    rows = (ys >= top) & (ys < top + h)                 # (B, height)
    cols = (xs >= left) & (xs < left + w)               # (B, width)
    return (rows[:, :, None] & cols[:, None, :])[:, None].float()


def _aligned(paths: Sequence[Path], ids: Sequence[str]) -> list[Path]:
    """``paths`` as a list, one per id (the data set's files come from the caller: the manifest's
    :class:`~wsss.data.source.Source`, which alone knows where they are); a pack member
    (:class:`wsss.packs.Member`) stays as it is."""
    paths = [x if hasattr(x, "read_bytes") else Path(x) for x in paths]
    if len(paths) != len(ids):
        raise ValueError(f"{len(paths)} paths for {len(ids)} ids")
    return paths


class EpochSeeded(Dataset):
    """A data set over ``ids`` whose item ``index`` draws from ``rng(index)``, a generator seeded
    by ``(seed, epoch, index)``: call :meth:`set_epoch` before iterating an epoch."""

    def __init__(self, ids: Sequence[str], seed: int):
        self.ids, self.seed, self.epoch = list(ids), seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating an epoch (workers are re-created per epoch and see it)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])


class TrainCrops(EpochSeeded):
    """Augmented training crops: item -> (image (3, crop, crop) float, labels (C,) float, index,
    box (4,) int64: where the image lies in the crop, the rest padding; see :func:`box_mask`)."""

    def __init__(self, image_paths: Sequence[Path], ids: Sequence[str], labels: dict[str, list[int]],
                 num_classes: int, crop_size: int, resize_long: Sequence[int], hflip: bool, jitter: float, seed: int):
        super().__init__(ids, seed)
        self.image_paths, self.labels = _aligned(image_paths, ids), labels
        self.num_classes, self.crop_size = num_classes, crop_size
        self.resize_long, self.hflip, self.jitter = tuple(resize_long), hflip, jitter

    def __getitem__(self, index: int):
        rng = self.rng(index)
        image_id = self.ids[index]
        img = files.read_image(self.image_paths[index])
        img = rescale_long(img, int(rng.integers(self.resize_long[0], self.resize_long[1] + 1)))
        if self.hflip and rng.random() < 0.5:
            img = img[:, ::-1]
        if self.jitter > 0:
            img = color_jitter(img, self.jitter, rng)
        img, box = random_crop(normalize(img), self.crop_size, rng)
        return to_tensor(img), multi_hot(self.labels[image_id], self.num_classes), index, torch.tensor(box)


class LabelledCrops(EpochSeeded):
    """Training crops with their label maps: item -> (image (3, S, S) float, labels int64 with 255
    = ignore / padding, taken on the ``stride`` grid: (S / stride, S / stride), the centre pixel of
    each cell). A random long side in ``resize_long``, a flip (p 0.5), one random crop for both:
    the labels ride along as a 4th channel, resized by nearest neighbour."""

    def __init__(self, image_paths: Sequence[Path], ids: Sequence[str], label_paths: Sequence[Path], crop_size: int,
                 resize_long: Sequence[int], seed: int, stride: int = 1, ignore: int = 255):
        if not ids:
            raise DataError("no training images for the label maps")
        super().__init__(ids, seed)
        self.image_paths, self.label_paths = _aligned(image_paths, ids), _aligned(label_paths, ids)
        self.crop_size, self.resize_long, self.stride, self.ignore = crop_size, tuple(resize_long), stride, ignore

    def __getitem__(self, index: int):
        rng = self.rng(index)
        img = files.read_image(self.image_paths[index])
        lab = files.read_mask(self.label_paths[index])
        if lab.shape != img.shape[:2]:
            raise DataError(f"{self.label_paths[index]}: labels {lab.shape} but image {img.shape[:2]}")
        long_side = int(rng.integers(self.resize_long[0], self.resize_long[1] + 1))
        s = long_side / max(img.shape[:2])
        h, w = max(1, round(img.shape[0] * s)), max(1, round(img.shape[1] * s))
        img = resize(img, h, w)
        lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.float32)
        if rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        # one crop for both: the labels shifted by 1 so that padding reads 0
        both, _ = random_crop(np.concatenate([normalize(img), lab[..., None] + 1], axis=2), self.crop_size, rng)
        k = self.stride
        grid = both[k // 2::k, k // 2::k, 3].astype(np.int64) - 1
        grid[grid < 0] = self.ignore
        return to_tensor(np.ascontiguousarray(both[..., :3])), torch.from_numpy(grid)


class WholeImages(Dataset):
    """Whole images resized to (size, size) for classification scoring: -> (image, labels, index)."""

    def __init__(self, image_paths: Sequence[Path], ids: Sequence[str], labels: dict[str, list[int]], num_classes: int,
                 size: int):
        self.image_paths = _aligned(image_paths, ids)
        self.ids, self.labels, self.num_classes, self.size = list(ids), labels, num_classes, size

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        img = resize(files.read_image(self.image_paths[index]), self.size, self.size)
        return to_tensor(normalize(img)), multi_hot(self.labels[image_id], self.num_classes), index
