"""The one reader of the MS COCO layout (COCO 2014, or the demo written in COCO form).

``root`` holds, per split ``<s>`` made of an annotation file::

    root/<s>/<file_name>                      images (e.g. train2014/COCO_train2014_000000000009.jpg)
    root/annotations/instances_<s>.json       COCO instance annotations (polygons or RLE)
    root/lists/<name>.txt                     (optional) a split listing ids of the files above

Read with pycocotools, no conversion step. The rules, the same in every stage (masks are
rasterised once, by ``prepare``, and read back from its PNGs):

- **Classes**: the categories of the annotation file in its order, mapped to 1..C (COCO 2014:
  80 classes, ids 1..90 with gaps become 1..80), names from the file. Every annotation file read
  must list the same categories in the same order.
- **Image ids**: the file name without its suffix (``COCO_val2014_000000000042``): unique across
  the files, and the name of every artifact made from the image.
- **Image-level labels**: the categories of all the image's annotations, crowd ones included (a
  crowd of people is people in the image). An image without any annotation (COCO 2014 has about
  1 % of them) is left out of its split, counted, and reported by ``prepare``, as peers do.
- **Masks** (:func:`rasterise`): objects are painted largest first, so where two overlap the
  smaller one wins (drawn in the file's order, a person on a sofa or a cup on a table would vanish
  under the larger object); then every crowd region is set to 255 (ignore) wherever it lies: its
  pixels mix the members and the background between them, so no one label is right there.
"""
from __future__ import annotations

import contextlib
import hashlib
import io as _io
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import io
from ..errors import DataError
from .files import IGNORE, check_mask_values, palette_png, read_image_notes

#: What a split that is not an annotation file is read from.
LISTS = "lists"


def annotation_path(root: Path, split: str) -> Path:
    return Path(root) / "annotations" / f"instances_{split}.json"


def list_path(root: Path, split: str) -> Path:
    return Path(root) / LISTS / f"{split}.txt"


def split_path(root: Path, split: str) -> Path:
    """The file that defines ``split``: its annotation file, else its list."""
    ann = annotation_path(root, split)
    return ann if ann.exists() else list_path(root, split)


def load(root: Path, splits: Sequence[str]):
    """Read the annotation files (and lists) that define ``splits``: ``(classes, split ids,
    payloads, sources, left out)``. A payload holds an image's path (relative to ``root``), size,
    annotation file and annotations (class 1..C, crowd flag, segmentation); ``left out`` counts, per
    annotation file, its images without any annotation. A list's ids are looked up in every
    ``annotations/instances_*.json`` present."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root not found (data.root must name the folder holding the "
                        "image folders and annotations/)")
    files = [annotation_path(root, s) for s in dict.fromkeys(splits) if annotation_path(root, s).exists()]
    lists = [s for s in dict.fromkeys(splits) if not annotation_path(root, s).exists()]
    for s in lists:
        if not list_path(root, s).exists():
            raise DataError(f"{annotation_path(root, s)}: split '{s}' not found (neither this annotation file nor "
                            f"{list_path(root, s)} exists)")
    if lists:   # a list may name images of any annotation file
        files += [p for p in sorted((root / "annotations").glob("instances_*.json")) if p not in files]
    if not files:
        raise DataError(f"{root / 'annotations'}: no instances_*.json annotation file")
    classes: tuple[str, ...] | None = None
    first: Path | None = None
    images: dict[str, dict] = {}
    by_file: dict[Path, list[str]] = {}
    left_out: dict[str, int] = {}
    for path in files:
        names, ids, skipped = _read_file(root, path, images)
        if classes is None:
            classes, first = names, path
        elif names != classes:
            raise DataError(f"{path}: its categories differ from those of {first} (every annotation file must "
                            "list the same categories in the same order)")
        by_file[path] = ids
        if skipped:
            left_out[path.relative_to(root).as_posix()] = skipped
    split_ids, sources = {}, {}
    for s in dict.fromkeys(splits):
        path = split_path(root, s)
        sources[s] = path
        split_ids[s] = by_file[path] if path in by_file else _read_list(path, s, images)
        if not split_ids[s]:
            raise DataError(f"{path}: split '{s}' holds no annotated image")
    return classes, split_ids, images, sources, left_out


def _read_file(root: Path, path: Path, images: dict[str, dict]) -> tuple[tuple[str, ...], list[str], int]:
    """Add the annotated images of one annotation file to ``images``; return its class names, its
    ids in file order and how many images it has without any annotation."""
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(_io.StringIO()):     # pycocotools prints its progress
            coco = COCO(str(path))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable COCO annotation file ({exc})") from None
    except KeyError as exc:
        raise DataError(f"{path}: not a COCO instance annotation file (no {exc} key)") from None
    cats = coco.dataset.get("categories") or []
    if not cats:
        raise DataError(f"{path}: no categories")
    names = tuple(str(c["name"]) for c in cats)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{path}: duplicate category names {dup}")
    index = {c["id"]: k + 1 for k, c in enumerate(cats)}
    folder = path.stem[len("instances_"):]
    ids, skipped = [], 0
    for info in coco.dataset.get("images", []):
        anns = coco.imgToAnns.get(info["id"], [])
        if not anns:
            skipped += 1
            continue
        image_id = Path(info["file_name"]).stem
        if image_id in images:
            raise DataError(f"{path}: image '{info['file_name']}' (id {info['id']}) has the same name as an image of "
                            f"{images[image_id]['source']}: ids are file names and must be unique")
        rec = {"image": f"{folder}/{info['file_name']}", "height": int(info["height"]), "width": int(info["width"]),
               "source": path.relative_to(root).as_posix(), "anns": []}
        for a in anns:
            if a["category_id"] not in index:
                raise DataError(f"{path}: annotation {a.get('id')} of image {info['id']} has category_id "
                                f"{a['category_id']}, not among the file's categories")
            rec["anns"].append({"cls": index[a["category_id"]], "crowd": bool(a.get("iscrowd", 0)),
                                "segmentation": a.get("segmentation")})
        images[image_id] = rec
        ids.append(image_id)
    return names, ids, skipped


def _read_list(path: Path, split: str, images: dict[str, dict]) -> list[str]:
    from .files import read_text

    ids = []
    seen: dict[str, int] = {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        token = line.strip()
        if not token:
            continue
        image_id = Path(token).stem
        if image_id not in images:
            raise DataError(f"{path}: line {number}: '{token}' is not an annotated image of any "
                            f"annotations/instances_*.json")
        if image_id in seen:
            raise DataError(f"{path}: line {number}: '{token}' is listed twice (first on line {seen[image_id]})")
        seen[image_id] = number
        ids.append(image_id)
    return ids


def labels_of(rec: dict) -> list[int]:
    """Sorted unique class indices (1..C) of an image's annotations (crowd ones included)."""
    return sorted({a["cls"] for a in rec["anns"]})


def _decode(segmentation, height: int, width: int) -> np.ndarray:
    """One annotation's segmentation (polygons, uncompressed or compressed RLE) -> (H, W) bool."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        rle = segmentation
    else:
        raise ValueError(f"unknown segmentation {type(segmentation).__name__}")
    with warnings.catch_warnings():   # pycocotools 2.0.x's own numpy 2 copy= deprecation, once per call
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def rasterise(anns: Sequence[dict], height: int, width: int) -> np.ndarray:
    """The class-index mask (H, W) uint8 of one image's annotations (see the module's rules):
    objects largest first (the smaller one wins an overlap, ties in the file's order), then every
    crowd region 255."""
    mask = np.zeros((height, width), np.uint8)
    objects = []
    crowd = np.zeros((height, width), bool)
    for a in anns:
        region = _decode(a["segmentation"], height, width)
        if a["crowd"]:
            crowd |= region
        else:
            objects.append((-int(region.sum()), len(objects), a["cls"], region))
    for _, _, cls, region in sorted(objects, key=lambda o: o[:2]):
        mask[region] = cls
    mask[crowd] = IGNORE
    return mask


def check_image(root: Path, image_id: str, rec: dict, class_index: dict[str, int], with_mask: bool,
                mask_dir: Path | None) -> dict:
    """Validate one annotated image (decodes, has the annotated size) and, with a mask, rasterise
    its annotations to ``mask_dir/<id>.png``; the record of :func:`wsss.data.manifest.check`."""
    path = Path(root) / rec["image"]
    rgb, notes = read_image_notes(path)
    h, w = rgb.shape[:2]
    if (h, w) != (rec["height"], rec["width"]):
        raise DataError(f"{path}: image is {w}x{h} but {Path(root) / rec['source']} says {rec['width']}x{rec['height']}")
    labels = labels_of(rec)
    record = {"labels": labels, "height": h, "width": w, "notes": notes, "image": rec["image"], "mask": None,
              "labels_from": rec["source"]}
    if with_mask:
        try:
            mask = rasterise(rec["anns"], h, w)
        except Exception as exc:   # pycocotools' own errors are plain exceptions
            raise DataError(f"{Path(root) / rec['source']}: an annotation of image '{rec['image']}' does not "
                            f"rasterise ({exc})") from None
        data = palette_png(mask)
        io.write_bytes(Path(mask_dir) / f"{image_id}.png", data)
        record["mask"] = f"{image_id}.png"
        record["mask_md5"] = hashlib.md5(data).hexdigest()
        record["mask_classes"] = check_mask_values(Path(mask_dir) / f"{image_id}.png", mask, labels, class_index,
                                                   rec["source"])
    return record
