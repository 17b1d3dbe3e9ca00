"""The COCO reader (data.format coco): class mapping, labels, the mask rules by hand, faults named,
and the demo written in COCO form read back to the same manifest and masks as its VOC form."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from wsss.data import coco
from wsss.data.demo import generate_demo
from wsss.data.files import read_mask
from wsss.data.forms import write_coco, write_labels
from wsss.data.manifest import build_manifest
from wsss.errors import DataError

SPLITS = ["train_aug", "train", "val"]


def _square(x0, y0, x1, y1) -> list[list[float]]:
    """A polygon along the pixel edges of the pixels x0..x1-1, y0..y1-1."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _rle(region: np.ndarray, compressed: bool = True) -> dict:
    rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
    if compressed:
        return {"size": rle["size"], "counts": rle["counts"].decode()}
    flat = region.astype(np.uint8).ravel(order="F")          # column-major runs, starting with zeros
    runs, value, n = [], 0, 0
    for v in flat:
        if v == value:
            n += 1
        else:
            runs.append(n)
            value, n = v, 1
    runs.append(n)
    return {"size": list(region.shape), "counts": runs}


def _write_set(root: Path, images: dict[str, list[dict]], categories=None, split="train2014", size=(10, 12)):
    """An annotation file ``instances_<split>.json`` and its images (grey), annotations per file name."""
    h, w = size
    categories = categories or [{"id": 5, "name": "cat"}, {"id": 1, "name": "dog"}, {"id": 90, "name": "cup"}]
    infos, anns = [], []
    for n, (name, objects) in enumerate(images.items(), start=1):
        (root / split).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / split / name), np.full((h, w, 3), 100, np.uint8))
        infos.append({"id": n, "file_name": name, "height": h, "width": w})
        for o in objects:
            anns.append({"id": len(anns) + 1, "image_id": n, "iscrowd": 0, **o})
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(
        json.dumps({"images": infos, "annotations": anns, "categories": categories}))


def test_rasterise_smaller_object_wins_and_crowd_is_ignored():
    """Painted largest first: the small square (listed first) stays on top of the large one; the
    crowd region is 255 wherever it lies, over objects too; all three segmentation encodings."""
    crowd = np.zeros((10, 12), bool)
    crowd[0:2, 8:12] = True
    anns = [{"cls": 2, "crowd": False, "segmentation": _square(3, 3, 5, 5)},              # small, first
            {"cls": 1, "crowd": False, "segmentation": _rle(np.pad(np.ones((8, 8), bool), ((1, 1), (1, 3))), False)},
            {"cls": 3, "crowd": True, "segmentation": _rle(crowd)}]
    mask = coco.rasterise(anns, 10, 12)
    expect = np.zeros((10, 12), np.uint8)
    expect[1:9, 1:9] = 1
    expect[3:5, 3:5] = 2
    expect[0:2, 8:12] = 255
    assert np.array_equal(mask, expect)


def test_categories_map_to_file_order_and_crowd_counts_as_a_label(tmp_path):
    """ids 5, 1, 90 in that file order become classes 1, 2, 3 named from the file; an image's
    crowd-only category is among its labels; an image without annotations is left out, counted."""
    crowd = np.zeros((10, 12), bool)
    crowd[5:, :] = True
    _write_set(tmp_path, {
        "a.jpg": [{"category_id": 90, "segmentation": _square(0, 0, 4, 4)},
                  {"category_id": 1, "segmentation": _rle(crowd), "iscrowd": 1}],
        "b.jpg": [{"category_id": 5, "segmentation": _square(2, 2, 6, 6)}],
        "empty.jpg": [],
    })
    classes, splits, payloads, sources, left_out = coco.load(tmp_path, ["train2014"])
    assert classes == ("cat", "dog", "cup")
    assert splits == {"train2014": ["a", "b"]}
    assert left_out == {"annotations/instances_train2014.json": 1}
    assert coco.labels_of(payloads["a"]) == [2, 3] and coco.labels_of(payloads["b"]) == [1]
    assert payloads["a"]["image"] == "train2014/a.jpg"
    m = build_manifest(tmp_path, ["train2014"], ["train2014"], progress=False, fmt="coco", mask_dir=tmp_path / "m")
    assert m["labels"] == {"a": [2, 3], "b": [1]} and m["counts"]["left_out"] == left_out
    mask = read_mask(tmp_path / "m" / m["masks"]["train2014"]["files"]["a"])
    assert (mask[:4, :4] == 3).all() and (mask[5:] == 255).all() and mask[4, 6] == 0


def test_list_split_reads_ids_of_any_annotation_file(tmp_path):
    _write_set(tmp_path, {"a.jpg": [{"category_id": 5, "segmentation": _square(0, 0, 4, 4)}],
                          "b.jpg": [{"category_id": 1, "segmentation": _square(0, 0, 4, 4)}]})
    _write_set(tmp_path, {"c.jpg": [{"category_id": 90, "segmentation": _square(0, 0, 4, 4)}]}, split="val2014")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "sub.txt").write_text("b\n\nc.jpg\n")
    _, splits, _, sources, _ = coco.load(tmp_path, ["train2014", "sub"])
    assert splits["sub"] == ["b", "c"] and sources["sub"] == tmp_path / "lists" / "sub.txt"


@pytest.mark.parametrize("fault, message", [
    ("unknown_category", "annotations/instances_train2014.json: annotation 1 of image 1 has category_id 7"),
    ("size", "train2014/a.jpg: image is 12x10 but"),
    ("categories_differ", "instances_val2014.json: its categories differ from those of"),
    ("list_id", "lists/sub.txt: line 2: 'zzz' is not an annotated image"),
    ("missing_split", "split 'nope' not found"),
    ("not_json", "instances_train2014.json: not a readable COCO annotation file"),
])
def test_faults_name_the_file(tmp_path, fault, message):
    _write_set(tmp_path, {"a.jpg": [{"category_id": 7 if fault == "unknown_category" else 5,
                                     "segmentation": _square(0, 0, 4, 4)}]})
    splits = ["train2014"]
    if fault == "size":
        path = tmp_path / "annotations" / "instances_train2014.json"
        data = json.loads(path.read_text())
        data["images"][0]["height"] = 11
        path.write_text(json.dumps(data))
    if fault == "categories_differ":
        _write_set(tmp_path, {"c.jpg": [{"category_id": 1, "segmentation": _square(0, 0, 4, 4)}]}, split="val2014",
                   categories=[{"id": 1, "name": "dog"}, {"id": 5, "name": "cat"}, {"id": 90, "name": "cup"}])
        splits = ["train2014", "val2014"]
    if fault == "list_id":
        (tmp_path / "lists").mkdir()
        (tmp_path / "lists" / "sub.txt").write_text("a\nzzz\n")
        splits = ["train2014", "sub"]
    if fault == "missing_split":
        splits = ["nope"]
    if fault == "not_json":
        (tmp_path / "annotations" / "instances_train2014.json").write_text("{not json")
    with pytest.raises(DataError) as info:
        build_manifest(tmp_path, splits, splits, progress=False, fmt="coco", mask_dir=tmp_path / "m")
    assert message in str(info.value)


@pytest.fixture(scope="module")
def demo_forms(tmp_path_factory):
    """A small demo set in VOC form and written in COCO and labels forms."""
    base = tmp_path_factory.mktemp("forms")
    voc = base / "voc"
    generate_demo(voc, seed=4, n_train_aug=24, n_train=8, n_val=8, min_size=80, max_size=128)
    write_coco(voc, base / "coco", annotated=["train_aug", "val"], listed=["train"])
    write_labels(voc, base / "labels", rows=["train_aug", "val"], listed=["train"])
    return base


def test_demo_in_coco_form_reads_back_to_the_same_data(demo_forms):
    """Same images, labels, splits and content fingerprint; the rasterised masks equal the VOC
    masks pixel for pixel (polygons traced along pixel edges, rings as RLE, the 255 band as crowd)."""
    kw = dict(train="train_aug", held_out=["val"], progress=False)
    a = build_manifest(demo_forms / "voc", SPLITS, ["train", "val"], **kw)
    b = build_manifest(demo_forms / "coco", SPLITS, ["train", "val"], fmt="coco", mask_dir=demo_forms / "masks", **kw)
    for key in ("classes", "splits", "labels", "sizes", "fingerprint"):
        assert a[key] == b[key], key
    for split in ("train", "val"):           # the same masks, under other paths
        assert {k: v for k, v in a["masks"][split].items() if k != "files"} == \
            {k: v for k, v in b["masks"][split].items() if k != "files"}
    for i in a["splits"]["train"] + a["splits"]["val"]:
        split = "train" if i in a["splits"]["train"] else "val"
        voc_mask = read_mask(demo_forms / "voc" / a["masks"][split]["files"][i])
        coco_mask = read_mask(demo_forms / "masks" / b["masks"][split]["files"][i])
        assert np.array_equal(voc_mask, coco_mask), i
    data = json.loads((demo_forms / "coco" / "annotations" / "instances_val.json").read_text())
    kinds = {("polygon" if isinstance(a["segmentation"], list) else "rle", a["iscrowd"]) for a in data["annotations"]}
    assert ("polygon", 0) in kinds and ("rle", 1) in kinds           # both encodings are exercised


def test_demo_in_labels_form_has_the_same_labels_and_no_masks(demo_forms):
    kw = dict(train="train_aug", held_out=["val"], progress=False)
    a = build_manifest(demo_forms / "voc", SPLITS, ["train", "val"], **kw)
    c = build_manifest(demo_forms / "labels", SPLITS, ["train", "val"], fmt="labels", **kw)
    for key in ("classes", "splits", "labels", "sizes", "fingerprint"):
        assert a[key] == c[key], key
    assert c["masks"]["train"]["count"] == 0 and c["masks"]["val"]["count"] == 0
    assert c["masks"]["train"]["files"] == {} and c["masks"]["val"]["files"] == {}
