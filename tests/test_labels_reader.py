"""The labels-only reader (data.format labels): CSV and JSON, class lists, splits, optional masks,
and every fault named with its file and line."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from wsss.data import labels
from wsss.data.files import palette_png
from wsss.data.manifest import build_manifest
from wsss.errors import DataError


def _images(root: Path, names, size=(20, 24)):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((*size, 3), 120, np.uint8))


def _csv(root: Path, text: str, images=("img/a.jpg", "img/b.png", "img/c.jpg", "img/d.jpg")):
    _images(root, images)
    (root / "labels.csv").write_text(text)


CSV = "image,labels,split\nimg/a.jpg,cat;dog,train\nimg/b.png,dog,train\nimg/c.jpg,cat,val\nimg/d.jpg,bird;dog,val\n"


def test_csv_with_splits_lists_and_derived_classes(tmp_path):
    _csv(tmp_path, CSV)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "small.txt").write_text("a\nimg/c.jpg\n")
    classes, splits, payloads, _ = labels.load(tmp_path, ["train", "val", "small", "all"])
    assert classes == ("bird", "cat", "dog")                        # every name used, sorted
    assert splits == {"train": ["a", "b"], "val": ["c", "d"], "small": ["a", "c"], "all": ["a", "b", "c", "d"]}
    assert payloads["a"]["labels"] == [2, 3] and payloads["d"]["labels"] == [1, 3]
    assert payloads["b"]["image"] == "img/b.png" and payloads["b"]["mask"] is None


def test_classes_txt_sets_the_order_and_names_may_hold_spaces(tmp_path):
    _csv(tmp_path, "image,labels\nimg/a.jpg,traffic light;person\nimg/b.png,person\n", images=("img/a.jpg", "img/b.png"))
    (tmp_path / "classes.txt").write_text("person\ntraffic light\n")
    classes, splits, payloads, _ = labels.load(tmp_path, ["all"])
    assert classes == ("person", "traffic light") and payloads["a"]["labels"] == [1, 2]


@pytest.mark.parametrize("structured", [True, False])
def test_json_forms(tmp_path, structured):
    _images(tmp_path, ["a.jpg", "b.jpg"])
    images = {"a.jpg": ["cat"], "b.jpg": ["dog", "cat"]}
    data = {"classes": ["dog", "cat"], "images": images, "splits": {"train": ["a.jpg"], "val": ["b"]}} \
        if structured else images
    (tmp_path / "labels.json").write_text(json.dumps(data, indent=1))
    classes, splits, payloads, _ = labels.load(tmp_path, ["train", "val"] if structured else ["all"], "labels.json")
    assert classes == (("dog", "cat") if structured else ("cat", "dog"))
    assert payloads["b"]["labels"] == [1, 2]
    if structured:
        assert splits == {"train": ["a"], "val": ["b"]}


@pytest.mark.parametrize("text, message", [
    ("image,labels\nimg/a.jpg,cat\nimg/b.png,lion\n", "labels.csv: line 3: unknown class 'lion' for image 'img/b.png'"),
    ("image,labels\nimg/a.jpg,cat\nimg/b.png, \n", "labels.csv: line 3: image 'img/b.png' has no labels"),
    ("image,labels\nimg/a.jpg,cat\nimg/zz.jpg,cat\n", "labels.csv: line 3: image 'img/zz.jpg' not found"),
    ("image,labels\nimg/a.jpg,cat\nother/a.jpg,cat\n", "labels.csv: line 3: image 'other/a.jpg' has the id 'a' of the "
                                                        "image on line 2"),
    ("file,classes\nimg/a.jpg,cat\n", "labels.csv: line 1: the header must name the columns 'image' and 'labels'"),
])
def test_faults_name_file_and_line(tmp_path, text, message):
    _csv(tmp_path, text, images=("img/a.jpg", "img/b.png", "other/a.jpg"))
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError) as info:
        labels.load(tmp_path, ["all"])
    assert message in str(info.value)


def test_unknown_split_lists_the_known_ones(tmp_path):
    _csv(tmp_path, CSV)
    with pytest.raises(DataError, match=r"split 'train_aug' not found.*known splits: all, train, val"):
        labels.load(tmp_path, ["train_aug"])


def test_masks_for_some_images_are_checked_and_counted(tmp_path):
    """Masks where given: counted per scored split, checked against the labels like VOC's."""
    _csv(tmp_path, CSV)
    (tmp_path / "masks").mkdir()
    mask = np.zeros((20, 24), np.uint8)
    mask[5:10, 5:10] = 2                                           # cat on image c (labelled cat)
    (tmp_path / "masks" / "c.png").write_bytes(palette_png(mask))
    m = build_manifest(tmp_path, ["train", "val"], ["val"], progress=False, fmt="labels", train="train",
                       held_out=["val"])
    assert m["masks"]["val"]["files"] == {"c": "masks/c.png"} and "masks" not in m["counts"]
    assert m["masks"]["val"]["count"] == 1
    mask[0, 0] = 3                                                  # dog: not among image c's labels
    (tmp_path / "masks" / "c.png").write_bytes(palette_png(mask))
    with pytest.raises(DataError, match=r"masks/c.png: mask holds class ids \[2, 3\].*labels.csv line 4"):
        build_manifest(tmp_path, ["train", "val"], ["val"], progress=False, fmt="labels")


def test_held_out_split_sharing_images_is_refused(tmp_path):
    _csv(tmp_path, CSV)
    with pytest.raises(DataError, match="held-out split 'all' shares 2 of its 4 ids"):
        build_manifest(tmp_path, ["train", "all"], [], progress=False, fmt="labels", train="train", held_out=["all"])


def test_json_fault_names_the_line(tmp_path):
    _images(tmp_path, ["a.jpg", "b.jpg"])
    (tmp_path / "labels.json").write_text('{\n  "a.jpg": ["cat"],\n  "b.jpg": ["cat", "lion"]\n}\n')
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match=r"labels.json: line 3: unknown class 'lion' for image 'b.jpg'"):
        labels.load(tmp_path, ["all"], "labels.json")


def test_labels_separated_by_spaces_when_no_name_holds_one(tmp_path):
    _csv(tmp_path, "image,labels\nimg/a.jpg,cat dog\nimg/b.png,dog\n", images=("img/a.jpg", "img/b.png"))
    classes, _, payloads, _ = labels.load(tmp_path, ["all"])
    assert classes == ("cat", "dog") and payloads["a"]["labels"] == [1, 2]
