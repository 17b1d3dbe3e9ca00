"""The demo (or any VOC-layout set) written in the other layouts: COCO, and labels only.

The same image files (byte for byte) and the same labels, so that one data set read by two
readers must give the same scores (the end-to-end test checks it):

- :func:`write_coco`: ``<split>/<id>.jpg`` and ``annotations/instances_<split>.json`` per
  annotated split, ``lists/<split>.txt`` for the others (VOC's ``train`` lies inside
  ``train_aug``). Each connected region of a class becomes one object: a polygon traced along
  the pixel edges (it rasterises back to the same pixels), or RLE where the region has a hole
  (a polygon cannot). VOC's 255 band becomes crowd regions (COCO's only "ignore"), one per class,
  each band pixel given to the class of an object next to it. Category ids have gaps, as COCO's
  (1, 3, 5, ...): the reader must map them to 1..C.
- :func:`write_labels`: ``images/<id>.jpg``, ``labels.csv`` (image, labels, split), ``lists/``
  for the splits inside others, ``classes.txt``; no masks.
"""
from __future__ import annotations

import csv
import io as _io
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .. import io
from . import voc
from .files import IGNORE, read_mask


def _labels_of(root: Path, image_id: str, class_index: dict[str, int]) -> list[int]:
    return voc.parse_labels(voc.xml_path(root, image_id), class_index)


def _band_owner(mask: np.ndarray) -> np.ndarray:
    """For each 255 pixel, the class of an object next to it (the largest id among the nearest
    labelled neighbours, found by growing the labels over the band); 0 where none is found."""
    grown = np.where(mask == IGNORE, 0, mask).astype(np.uint8)
    band = mask == IGNORE
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(8):
        wider = cv2.dilate(grown, kernel)
        grown = np.where(band & (grown == 0), wider, grown)
        if not (band & (grown == 0)).any():
            break
    return np.where(band, grown, 0)


def _rle(region: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _polygons(region: np.ndarray) -> list[list[float]] | None:
    """Polygons along the pixel edges of a hole-free region (traced at twice the resolution,
    which puts the outline a quarter pixel outside the boundary pixels' centres: pycocotools
    rasterises it back to exactly these pixels); None where the region has a hole."""
    h, w = region.shape
    up = cv2.resize(region.astype(np.uint8), (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None or (hierarchy[0][:, 3] != -1).any():
        return None
    polys = [((c.reshape(-1, 2) + 0.5) / 2).ravel().round(2).tolist() for c in contours]
    return polys if all(len(p) >= 6 for p in polys) else None


def coco_annotations(mask: np.ndarray, labels: Sequence[int]) -> list[dict]:
    """Objects (one per 8-connected region of each class) and crowd regions (the 255 band, per
    owning class) of one VOC mask, as COCO annotations without ids: ``cls`` is 1..C."""
    anns = []
    for k in labels:
        count, comps = cv2.connectedComponents((mask == k).astype(np.uint8), connectivity=8)
        for c in range(1, count):
            region = comps == c
            polys = _polygons(region)
            anns.append({"cls": k, "iscrowd": 0, "segmentation": polys if polys is not None else _rle(region),
                         "area": int(region.sum()), "bbox": list(cv2.boundingRect(region.astype(np.uint8)))})
    owner = _band_owner(mask)
    for k in labels:
        region = owner == k
        if region.any():
            anns.append({"cls": k, "iscrowd": 1, "segmentation": _rle(region), "area": int(region.sum()),
                         "bbox": list(cv2.boundingRect(region.astype(np.uint8)))})
    return anns


def write_coco(voc_root: Path, out: Path, annotated: Sequence[str], listed: Sequence[str] = ()) -> dict:
    """Write the VOC-layout set at ``voc_root`` in COCO form at ``out``: one annotation file and
    image folder per ``annotated`` split, a list per ``listed`` one. Returns counts."""
    voc_root, out = Path(voc_root), Path(out)
    classes = voc.class_names(voc_root)
    class_index = {n: k + 1 for k, n in enumerate(classes)}
    cat_ids = [2 * k + 1 for k in range(len(classes))]
    categories = [{"id": cid, "name": n, "supercategory": "demo"} for cid, n in zip(cat_ids, classes)]
    counts = {}
    next_image, next_ann = 1, 1
    for split in annotated:
        images, annotations = [], []
        for image_id in voc.read_split(voc_root, split, classes):
            data = voc.image_path(voc_root, image_id).read_bytes()
            io.write_bytes(out / split / f"{image_id}.jpg", data)
            mask = read_mask(voc.mask_path(voc_root, image_id))
            labels = _labels_of(voc_root, image_id, class_index)
            anns = coco_annotations(mask, labels)
            if sorted({a["cls"] for a in anns}) != labels:
                raise voc.DataError(f"{voc.xml_path(voc_root, image_id)}: labels {labels} but its mask's regions "
                                    f"give {sorted({a['cls'] for a in anns})}: not representable as COCO objects")
            h, w = mask.shape
            images.append({"id": next_image, "file_name": f"{image_id}.jpg", "height": h, "width": w})
            for a in anns:
                annotations.append({"id": next_ann, "image_id": next_image, "category_id": cat_ids[a["cls"] - 1],
                                    "segmentation": a["segmentation"], "area": a["area"], "iscrowd": a["iscrowd"],
                                    "bbox": a["bbox"]})
                next_ann += 1
            next_image += 1
        io.write_json(out / "annotations" / f"instances_{split}.json",
                      {"info": {"description": "wsss demo in COCO form"}, "images": images,
                       "annotations": annotations, "categories": categories})
        counts[split] = len(images)
    for split in listed:
        ids = voc.read_split(voc_root, split, classes)
        io.write_text(out / "lists" / f"{split}.txt", "".join(f"{i}\n" for i in ids))
        counts[split] = len(ids)
    return counts


def write_labels(voc_root: Path, out: Path, rows: Sequence[str], listed: Sequence[str] = ()) -> dict:
    """Write the VOC-layout set at ``voc_root`` as a labels-only set at ``out``: its images, a
    ``labels.csv`` with a row per image of the ``rows`` splits (its split in the ``split``
    column), lists for the ``listed`` splits, ``classes.txt``; no masks."""
    voc_root, out = Path(voc_root), Path(out)
    classes = voc.class_names(voc_root)
    class_index = {n: k + 1 for k, n in enumerate(classes)}
    text = _io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["image", "labels", "split"])
    counts = {}
    for split in rows:
        ids = voc.read_split(voc_root, split, classes)
        for image_id in ids:
            io.write_bytes(out / "images" / f"{image_id}.jpg", voc.image_path(voc_root, image_id).read_bytes())
            names = [classes[k - 1] for k in _labels_of(voc_root, image_id, class_index)]
            writer.writerow([f"images/{image_id}.jpg", ";".join(names), split])
        counts[split] = len(ids)
    io.write_text(out / "labels.csv", text.getvalue())
    for split in listed:
        ids = voc.read_split(voc_root, split, classes)
        io.write_text(out / "lists" / f"{split}.txt", "".join(f"{i}\n" for i in ids))
        counts[split] = len(ids)
    io.write_text(out / "classes.txt", "".join(f"{c}\n" for c in classes))
    return counts

