"""The one reader of the PASCAL VOC 2012 layout (real VOC + SBD, or the generated demo).

``root`` is the ``VOC2012`` folder itself::

    root/JPEGImages/<id>.jpg
    root/Annotations/<id>.xml              image-level labels: every <object><name>
    root/SegmentationClass/<id>.png        palette or index PNG, 0 = background, 255 = ignore
    root/SegmentationClassAug/<id>.png     (optional, SBD masks)
    root/ImageSets/Segmentation/<split>.txt
    root/classes.txt                       (optional) foreground class names in index order

Every fault is a :class:`DataError` naming the file and what is wrong with it. Images are read
in stored pixel order (an EXIF rotation tag is not applied), as VOC's masks were drawn; a file
that decodes is read whatever its name says (a PNG named ``.jpg``, bytes after a JPEG's end), and
:func:`check_image` reports such oddities in its record's ``notes`` for the caller to summarise.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence


VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
#: Split lists shipped with the project, used only for the VOC classes and these split names.
SHIPPED_LISTS = Path(__file__).parent / "lists" / "voc12"
SHIPPED_SPLITS = ("train", "train_aug", "val")


from ..errors import DataError  # noqa: F401
from .files import check_mask_values, read_image_notes, read_mask, read_text


def class_names(root: Path) -> tuple[str, ...]:
    """Foreground classes in index order: ``root/classes.txt`` if present, else the 20 VOC classes."""
    path = Path(root) / "classes.txt"
    if not path.exists():
        return VOC_CLASSES
    names = [line.strip() for line in read_text(path).splitlines() if line.strip()]
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
    """The ids of ``split``, one per non-blank line; two tokens on a line or a repeated id is an error."""
    path = split_path(root, split, classes)
    ids, lines = [], []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        tokens = line.split()
        if len(tokens) > 1:
            raise DataError(f"{path}: line {number} holds {len(tokens)} tokens ({line.strip()!r}): "
                            "a split list holds one image id per line, and ids hold no spaces")
        if tokens:
            ids.append(tokens[0])
            lines.append(number)
    if not ids:
        raise DataError(f"{path}: split '{split}' is empty")
    _refuse_duplicates(path, split, ids, lines)
    return ids


def _refuse_duplicates(path: Path, split: str, ids: list[str], lines: list[int]) -> None:
    """A DataError naming the first few ids listed more than once and their line numbers."""
    where: dict[str, list[int]] = {}
    for image_id, number in zip(ids, lines):
        where.setdefault(image_id, []).append(number)
    dups = {i: n for i, n in where.items() if len(n) > 1}
    if not dups:
        return
    shown = [f"{i} (lines {', '.join(map(str, n))})" for i, n in list(dups.items())[:5]]
    more = f" and {len(dups) - 5} more" if len(dups) > 5 else ""
    raise DataError(f"{path}: split '{split}' lists {len(dups)} duplicate id(s): {', '.join(shown)}{more}")


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


def load(root: Path, splits: Sequence[str]):
    """``(classes, split ids, payloads, sources)`` of ``splits``: the ids of each split's list, a
    payload per id (its image-level labels are read from its XML by :func:`check_image`)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root not found (data.root must name the VOC2012 folder)")
    classes = class_names(root)
    split_ids = {s: read_split(root, s, classes) for s in dict.fromkeys(splits)}
    payloads = {i: None for ids in split_ids.values() for i in ids}
    return classes, split_ids, payloads, {s: split_path(root, s, classes) for s in split_ids}


def check_image(root: Path, image_id: str, payload, class_index: dict[str, int], with_mask: bool,
                mask_dir: Path | None = None) -> dict:
    """Validate one id: image decodes, XML parses with known classes and at least one label,
    mask (if asked) exists with the image's size, values in 0..C or 255 and class ids that are
    among the image's labels.

    Returns ``{"labels", "height", "width", "notes", "image", "mask", "labels_from"}`` (paths
    relative to ``root``, mask None without one; where the labels were read) and, with a mask, ``mask_classes`` (the class ids it holds);
    ``notes`` (see :func:`read_image_notes`) holds what the caller may warn about, so workers of a
    process pool print nothing.
    """
    root = Path(root)
    img = image_path(root, image_id)
    rgb, notes = read_image_notes(img)
    h, w = rgb.shape[:2]
    xml = xml_path(root, image_id)
    labels = parse_labels(xml, class_index)
    if not labels:
        raise DataError(f"{xml}: no <object> with a class name: no image-level label")
    record = {"labels": labels, "height": h, "width": w, "notes": notes,
              "image": img.relative_to(root).as_posix(), "mask": None, "labels_from": xml.relative_to(root).as_posix()}
    if with_mask:
        mpath = mask_path(root, image_id)
        mask = read_mask(mpath)
        if mask.shape != (h, w):
            raise DataError(f"{mpath}: mask is {mask.shape[1]}x{mask.shape[0]} but image {img.name} is {w}x{h}")
        record["mask"] = mpath.relative_to(root).as_posix()
        record["mask_classes"] = check_mask_values(mpath, mask, labels, class_index,
                                                   xml.relative_to(root).as_posix())
    return record


