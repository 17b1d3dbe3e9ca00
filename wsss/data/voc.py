"""The one reader of the PASCAL VOC 2012 layout (real VOC + SBD, or the generated demo).

``root`` is the ``VOC2012`` folder itself::

    root/JPEGImages/<id>.jpg
    root/Annotations/<id>.xml              image-level labels: every <object><name>
    root/SegmentationClass/<id>.png        palette or index PNG, 0 = background, 255 = ignore
    root/SegmentationClassAug/<id>.png     (optional, SBD masks)
    root/ImageSets/Segmentation/<split>.txt
    root/classes.txt                       (optional) foreground class names in index order

Every fault is a :class:`DataError` naming the file and what is wrong with it.
"""
from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
IGNORE = 255
#: Split lists shipped with the project, used only for the VOC classes and these split names.
SHIPPED_LISTS = Path(__file__).parent / "lists" / "voc12"
SHIPPED_SPLITS = ("train", "train_aug", "val")


class DataError(ValueError):
    """The data set is missing a file or holds a bad one; the message names it."""


def class_names(root: Path) -> tuple[str, ...]:
    """Foreground classes in index order: ``root/classes.txt`` if present, else the 20 VOC classes."""
    path = Path(root) / "classes.txt"
    if not path.exists():
        return VOC_CLASSES
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: empty class list")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{path}: duplicate class names {dup}")
    if "background" in names:
        raise DataError(f"{path}: list foreground classes only ('background' is class 0)")
    return tuple(names)


def split_path(root: Path, split: str, classes: Sequence[str]) -> Path:
    """Where the ids of ``split`` are listed; shipped VOC lists stand in only for VOC itself."""
    path = Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"
    if path.exists():
        return path
    if tuple(classes) == VOC_CLASSES and split in SHIPPED_SPLITS:
        return SHIPPED_LISTS / f"{split}.txt"
    raise DataError(f"{path}: split list '{split}' not found")


def read_split(root: Path, split: str, classes: Sequence[str]) -> list[str]:
    path = split_path(root, split, classes)
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{path}: split '{split}' is empty")
    dup = len(ids) - len(set(ids))
    if dup:
        raise DataError(f"{path}: split '{split}' lists {dup} duplicate id(s)")
    return ids


def image_path(root: Path, image_id: str) -> Path:
    return Path(root) / "JPEGImages" / f"{image_id}.jpg"


def xml_path(root: Path, image_id: str) -> Path:
    return Path(root) / "Annotations" / f"{image_id}.xml"


def mask_path(root: Path, image_id: str) -> Path:
    """``SegmentationClass`` (fine masks), else ``SegmentationClassAug`` (SBD) where only it exists."""
    fine = Path(root) / "SegmentationClass" / f"{image_id}.png"
    if fine.exists():
        return fine
    aug = Path(root) / "SegmentationClassAug" / f"{image_id}.png"
    return aug if aug.exists() else fine


def parse_labels(path: Path, class_index: dict[str, int]) -> list[int]:
    """Sorted, unique foreground indices (1..C) of the ``<object><name>`` tags of one XML file.

    Objects marked difficult count as present, as in IRN and MCTformer.
    """
    try:
        tree = ET.parse(path)
    except FileNotFoundError:
        raise DataError(f"{path}: annotation not found") from None
    except ET.ParseError as exc:
        raise DataError(f"{path}: not valid XML ({exc})") from None
    labels = set()
    for obj in tree.getroot().iter("object"):
        name_el = obj.find("name")
        name = (name_el.text or "").strip() if name_el is not None else ""
        if name not in class_index:
            raise DataError(f"{path}: unknown class name '{name}' (known: {', '.join(class_index)})")
        labels.add(class_index[name])
    return sorted(labels)


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 array (H, W, 3); a missing, truncated or corrupt file is a :class:`DataError`."""
    data = np.fromfile(path, dtype=np.uint8) if Path(path).exists() else None
    if data is None:
        raise DataError(f"{path}: image not found")
    # a JPEG ends with the EOI marker; a truncated file decodes to grey rubbish without it
    if Path(path).suffix.lower() in (".jpg", ".jpeg") and not _jpeg_complete(data):
        raise DataError(f"{path}: corrupt or truncated JPEG")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _jpeg_complete(data: np.ndarray) -> bool:
    if data.size < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return False
    tail = data[-64:].tobytes().rstrip(b"\x00\n\r ")
    return tail.endswith(b"\xff\xd9")


def read_mask(path: Path) -> np.ndarray:
    """Class-index mask (H, W) uint8 from a palette or grey PNG (values 0..C or 255)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DataError(f"{path}: mask must be a palette or greyscale PNG, got mode {im.mode}")
            return np.array(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: mask not found") from None
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable PNG ({exc})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image after a full decode (so corruption is caught)."""
    h, w = read_image(path).shape[:2]
    return h, w


def check_image(root: Path, image_id: str, class_index: dict[str, int], with_mask: bool) -> dict:
    """Validate one id: image decodes, XML parses with known classes and at least one label,
    mask (if asked) exists with the image's size and values in 0..C or 255."""
    img = image_path(root, image_id)
    h, w = image_size(img)
    labels = parse_labels(xml_path(root, image_id), class_index)
    if not labels:
        raise DataError(f"{xml_path(root, image_id)}: no <object> with a class name: no image-level label")
    record = {"labels": labels, "height": h, "width": w}
    if with_mask:
        mpath = mask_path(root, image_id)
        mask = read_mask(mpath)
        if mask.shape != (h, w):
            raise DataError(f"{mpath}: mask is {mask.shape[1]}x{mask.shape[0]} but image {img.name} is {w}x{h}")
        bad = np.setdiff1d(np.unique(mask), np.r_[np.arange(len(class_index) + 1), IGNORE])
        if bad.size:
            raise DataError(f"{mpath}: mask holds values {bad.tolist()} outside 0..{len(class_index)} and 255")
    return record


@lru_cache(maxsize=1)
def voc_palette() -> np.ndarray:
    """The standard 256-entry VOC colour map (256, 3) uint8: the index's bits spread over R, G, B."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, rgb = i, [0, 0, 0]
        for j in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - j)
            c >>= 3
        pal[i] = rgb
    return pal


def palette_png(mask: np.ndarray) -> bytes:
    """A label map (H, W) uint8 as palette-PNG bytes with the VOC colours (255 = ignore)."""
    im = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="L")
    im.putpalette(voc_palette().ravel().tolist())
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()
