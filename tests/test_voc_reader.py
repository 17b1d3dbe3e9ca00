"""Tests of the VOC-layout reader (wsss.data.voc) and the manifest (wsss.data.manifest)."""
from __future__ import annotations

import json
import io
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
import pytest
from PIL import Image

from wsss.data import files, voc
from wsss.data.demo import DEMO_CLASSES, generate_demo
from wsss.data.manifest import build_manifest, resolve_root
from wsss.data.voc import VOC_CLASSES, DataError

VOC_INDEX = {n: i + 1 for i, n in enumerate(VOC_CLASSES)}
DEMO_INDEX = {n: i + 1 for i, n in enumerate(DEMO_CLASSES)}
SPLITS = ["train_aug", "train", "val"]
SCORED = ["train", "val"]
DEMO = dict(seed=3, n_train_aug=8, n_train=4, n_val=4, min_size=96, max_size=128)


def xml_text(*objects: tuple[str, int]) -> str:
    objs = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{difficult}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
        f"<xmax>5</xmax><ymax>5</ymax></bndbox></object>"
        for name, difficult in objects)
    return (f"<annotation><filename>x.jpg</filename><size><width>10</width><height>10</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


# ------------------------------------------------------------------------------- XML labels

def test_labels_from_xml(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(xml_text(("dog", 0), ("cat", 1), ("dog", 0), ("aeroplane", 0)))
    # dog=12, cat=8 (difficult still counts), dog again, aeroplane=1 -> sorted unique
    assert voc.parse_labels(path, VOC_INDEX) == [1, 8, 12]


def test_labels_difficult_only(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(xml_text(("person", 1)))
    assert voc.parse_labels(path, VOC_INDEX) == [15]


def test_labels_name_whitespace_stripped(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(xml_text(("  horse\n", 0)))
    assert voc.parse_labels(path, VOC_INDEX) == [13]


def test_unknown_class_named(tmp_path):
    path = tmp_path / "b.xml"
    path.write_text(xml_text(("dog", 0), ("unicorn", 0)))
    with pytest.raises(DataError) as info:
        voc.parse_labels(path, VOC_INDEX)
    msg = str(info.value)
    assert str(path) in msg and "'unicorn'" in msg


def test_malformed_xml_named(tmp_path):
    path = tmp_path / "c.xml"
    path.write_text("<annotation><object><name>dog</name></object>")  # unclosed
    with pytest.raises(DataError) as info:
        voc.parse_labels(path, VOC_INDEX)
    assert str(path) in str(info.value)
    assert "not valid XML" in str(info.value)


def test_missing_xml_named(tmp_path):
    path = tmp_path / "none.xml"
    with pytest.raises(DataError, match="annotation not found") as info:
        voc.parse_labels(path, VOC_INDEX)
    assert str(path) in str(info.value)


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


# ------------------------------------------------------------------------------- classes / splits

def test_class_names_fallback_and_file(tmp_path):
    assert voc.class_names(tmp_path) == VOC_CLASSES
    assert len(VOC_CLASSES) == 20
    (tmp_path / "classes.txt").write_text("disc\nsquare\n\nstar\n")
    assert voc.class_names(tmp_path) == ("disc", "square", "star")


@pytest.mark.parametrize("text,match", [
    ("\n\n", "empty class list"),
    ("a\nb\na\n", "duplicate"),
    ("background\na\n", "background"),
])
def test_bad_classes_txt(tmp_path, text, match):
    (tmp_path / "classes.txt").write_text(text)
    with pytest.raises(DataError, match=match) as info:
        voc.class_names(tmp_path)
    assert str(tmp_path / "classes.txt") in str(info.value)


def write_split(root: Path, split: str, text: str) -> Path:
    path = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_read_split_from_file(tmp_path):
    write_split(tmp_path, "train", "a\n  b \t\n\nc\r\n")   # blank lines, spaces around ids, CRLF
    assert voc.read_split(tmp_path, "train", ("x", "y")) == ["a", "b", "c"]


def test_missing_split_for_own_classes(tmp_path):
    with pytest.raises(DataError) as info:
        voc.read_split(tmp_path, "train", ("disc", "square"))
    assert str(tmp_path / "ImageSets" / "Segmentation" / "train.txt") in str(info.value)


def test_missing_split_for_voc_falls_back_to_shipped_list(tmp_path):
    ids = voc.read_split(tmp_path, "train", VOC_CLASSES)
    assert len(ids) == 1464
    assert len(set(ids)) == 1464
    assert voc.split_path(tmp_path, "train", VOC_CLASSES) == voc.SHIPPED_LISTS / "train.txt"
    # an own list wins over the shipped one
    write_split(tmp_path, "train", "only_this\n")
    assert voc.read_split(tmp_path, "train", VOC_CLASSES) == ["only_this"]


def test_missing_unknown_split_for_voc_is_error(tmp_path):
    with pytest.raises(DataError) as info:
        voc.read_split(tmp_path, "foo", VOC_CLASSES)
    assert "foo.txt" in str(info.value)


def test_empty_split(tmp_path):
    path = write_split(tmp_path, "val", "\n  \n")
    with pytest.raises(DataError, match="empty") as info:
        voc.read_split(tmp_path, "val", VOC_CLASSES)
    assert str(path) in str(info.value)


def test_duplicate_ids_in_split(tmp_path):
    write_split(tmp_path, "val", "a\nb\na\n")
    with pytest.raises(DataError, match="1 duplicate"):
        voc.read_split(tmp_path, "val", VOC_CLASSES)


# ------------------------------------------------------------------------------- images / masks

def test_read_image_and_mask_round_trip(tmp_path):
    rgb = np.zeros((6, 9, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    Image.fromarray(rgb).save(tmp_path / "x.png")
    img = files.read_image(tmp_path / "x.png")
    assert img.shape == (6, 9, 3)
    np.testing.assert_array_equal(img[0, 0], [200, 0, 0])  # RGB order, not cv2's BGR
    mask = np.array([[0, 1, 255], [2, 0, 1]], dtype=np.uint8)
    (tmp_path / "m.png").write_bytes(files.palette_png(mask))
    np.testing.assert_array_equal(files.read_mask(tmp_path / "m.png"), mask)


def test_rgb_mask_refused(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(DataError, match="mode RGB"):
        files.read_mask(tmp_path / "m.png")


def test_voc_palette_known_colours():
    pal = files.voc_palette()
    assert pal.shape == (256, 3)
    np.testing.assert_array_equal(pal[0], [0, 0, 0])
    np.testing.assert_array_equal(pal[1], [128, 0, 0])    # aeroplane
    np.testing.assert_array_equal(pal[2], [0, 128, 0])    # bicycle
    np.testing.assert_array_equal(pal[15], [192, 128, 128])  # person
    np.testing.assert_array_equal(pal[255], [224, 224, 192])  # ignore


# ------------------------------------------------------------------------------- manifest

@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "VOC2012"
    generate_demo(root, **DEMO)
    return root


@pytest.fixture
def copy_root(demo_root, tmp_path) -> Path:
    """A private copy of the demo root, to break."""
    root = tmp_path / "VOC2012"
    shutil.copytree(demo_root, root)
    return root


def manifest(root: Path) -> dict:
    return build_manifest(root, SPLITS, SCORED, progress=False)


def xml_labels(root: Path, image_id: str) -> list[int]:
    tree = ET.parse(root / "Annotations" / f"{image_id}.xml")
    return sorted({DEMO_INDEX[o.find("name").text] for o in tree.getroot().iter("object")})


def test_manifest_of_demo(demo_root):
    m = manifest(demo_root)
    assert m["classes"] == list(DEMO_CLASSES)
    assert m["counts"]["images"] == {"train_aug": 8, "train": 4, "val": 4}
    ids = [f"demo_{i:06d}" for i in range(12)]
    assert m["splits"]["train_aug"] == ids[:8]
    assert m["splits"]["train"] == ids[:4]
    assert m["splits"]["val"] == ids[8:]
    assert sorted(m["labels"]) == ids
    for i in ids:
        assert m["labels"][i] == xml_labels(demo_root, i)
        assert len(m["labels"][i]) >= 1
        with Image.open(demo_root / "JPEGImages" / f"{i}.jpg") as im:
            w, h = im.size
        assert m["sizes"][i] == [h, w]
        assert 96 <= h <= 128 and 96 <= w <= 128
    for s in SPLITS:
        for k, c in enumerate(DEMO_CLASSES):
            want = sum(1 for i in m["splits"][s] if k + 1 in xml_labels(demo_root, i))
            assert m["counts"]["class_images"][s][c] == want


def test_fingerprint_stable_and_sensitive(demo_root, copy_root):
    f1 = manifest(demo_root)["fingerprint"]
    assert manifest(demo_root)["fingerprint"] == f1
    assert manifest(copy_root)["fingerprint"] == f1  # content, not location
    # re-encode one image: still valid, different bytes
    jpg = copy_root / "JPEGImages" / "demo_000005.jpg"
    with Image.open(jpg) as im:
        rgb = im.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=40)
    assert buf.getvalue() != jpg.read_bytes()
    jpg.write_bytes(buf.getvalue())
    f2 = manifest(copy_root)["fingerprint"]
    assert f2 != f1


def test_fingerprint_changes_with_split_list(copy_root):
    f1 = manifest(copy_root)["fingerprint"]
    path = copy_root / "ImageSets" / "Segmentation" / "val.txt"
    ids = path.read_text().split()
    path.write_text("\n".join(reversed(ids)) + "\n")
    assert manifest(copy_root)["fingerprint"] != f1


def test_truncated_jpeg_named(copy_root):
    jpg = copy_root / "JPEGImages" / "demo_000002.jpg"
    data = jpg.read_bytes()
    jpg.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        manifest(copy_root)
    assert str(jpg) in str(info.value)


def test_garbage_jpeg_named(copy_root):
    jpg = copy_root / "JPEGImages" / "demo_000009.jpg"
    jpg.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError) as info:
        manifest(copy_root)
    assert str(jpg) in str(info.value)


def test_mask_of_wrong_size_named(copy_root):
    png = copy_root / "SegmentationClass" / "demo_000001.png"
    mask = files.read_mask(png)
    h, w = mask.shape
    png.write_bytes(files.palette_png(np.zeros((h + 3, w - 2), dtype=np.uint8)))
    with pytest.raises(DataError) as info:
        manifest(copy_root)
    msg = str(info.value)
    assert str(png) in msg
    assert f"{w - 2}x{h + 3}" in msg and f"{w}x{h}" in msg


def test_mask_value_out_of_range(copy_root):
    png = copy_root / "SegmentationClass" / "demo_000010.png"  # val: scored
    mask = files.read_mask(png)
    mask[0, 0] = len(DEMO_CLASSES) + 1  # 7: one past the last class
    png.write_bytes(files.palette_png(mask))
    with pytest.raises(DataError) as info:
        manifest(copy_root)
    assert str(png) in str(info.value)
    assert "[7]" in str(info.value)


def test_mask_only_checked_for_scored_splits(copy_root):
    # demo_000006 is in train_aug only (not train/val): its mask is neither read nor fingerprinted
    png = copy_root / "SegmentationClass" / "demo_000006.png"
    png.write_bytes(b"garbage")
    m = manifest(copy_root)
    assert "demo_000006" in m["labels"]
    with pytest.raises(DataError):
        build_manifest(copy_root, SPLITS, ["train_aug"], progress=False)


def test_missing_image_named(copy_root):
    jpg = copy_root / "JPEGImages" / "demo_000003.jpg"
    jpg.unlink()
    with pytest.raises(DataError, match="not found") as info:
        manifest(copy_root)
    assert str(jpg) in str(info.value)


def test_missing_mask_named(copy_root):
    png = copy_root / "SegmentationClass" / "demo_000000.png"
    png.unlink()
    with pytest.raises(DataError) as info:
        manifest(copy_root)
    assert str(png) in str(info.value)


def test_sbd_mask_used_where_fine_mask_absent(copy_root):
    fine = copy_root / "SegmentationClass" / "demo_000000.png"
    aug = copy_root / "SegmentationClassAug" / "demo_000000.png"
    aug.parent.mkdir()
    shutil.move(fine, aug)
    assert voc.mask_path(copy_root, "demo_000000") == aug
    manifest(copy_root)  # still valid


def test_xml_without_objects(copy_root):
    xml = copy_root / "Annotations" / "demo_000004.xml"
    xml.write_text("<annotation><filename>x</filename></annotation>")
    with pytest.raises(DataError, match="no image-level label") as info:
        manifest(copy_root)
    assert str(xml) in str(info.value)


def test_missing_root_and_split(tmp_path, copy_root):
    with pytest.raises(DataError, match="data root not found"):
        manifest(tmp_path / "nowhere")
    (copy_root / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(DataError) as info:
        manifest(copy_root)  # own classes: no shipped fallback
    assert "val.txt" in str(info.value)


# ------------------------------------------------------------------------------- resolve_root

def test_resolve_root_relative_to_project(tmp_path):
    proj = tmp_path / "proj"
    (proj / "data" / "VOC2012").mkdir(parents=True)
    assert resolve_root("data/VOC2012", proj) == (proj / "data" / "VOC2012").resolve()
    # not existing anywhere: still taken from the project dir
    assert resolve_root("data/missing", proj) == (proj / "data" / "missing").resolve()


def test_parallel_validation_gives_the_same_manifest(tmp_path):
    root = tmp_path / "VOC2012"
    generate_demo(root, seed=1, n_train_aug=60, n_train=6, n_val=6, min_size=64, max_size=96)
    one = build_manifest(root, SPLITS, SCORED, workers=1, progress=False)
    two = build_manifest(root, SPLITS, SCORED, workers=2, progress=False)  # 66 ids > 64: process pool
    assert two == one
    assert len(one["labels"]) == 66
    png = root / "SegmentationClass" / "demo_000065.png"  # the last val image
    png.write_bytes(files.palette_png(np.full((5, 5), 3, dtype=np.uint8)))
    with pytest.raises(DataError) as info:
        build_manifest(root, SPLITS, SCORED, workers=2, progress=False)
    assert str(png) in str(info.value)


# ------------------------------------------------------------------------------- datasets

def test_multi_hot():
    from wsss.data.datasets import multi_hot

    assert multi_hot([1, 3], 4).tolist() == [1.0, 0.0, 1.0, 0.0]
    assert multi_hot([], 2).tolist() == [0.0, 0.0]


def test_random_crop_pads_and_crops():
    from wsss.data.datasets import box_mask, random_crop

    img = np.arange(1, 16, dtype=np.float32).reshape(3, 5, 1)  # 3 x 5, no zero inside
    for seed in range(10):
        out, box = random_crop(img, 4, np.random.default_rng(seed))
        assert out.shape == (4, 4, 1)
        # the box says where the image lies: exactly the non-zero pixels
        mask = box_mask(torch.tensor([box]), 4, 4)[0, 0].numpy()
        assert box[2:] == (3, 4) and np.array_equal(mask > 0, out[..., 0] != 0)
        rows, cols = np.nonzero(out[..., 0])
        # all 3 rows of the image, 4 of its 5 columns, as one block; the rest is zero padding
        assert len(rows) == 12
        r0, c0 = rows.min(), cols.min()
        block = out[r0:r0 + 3, c0:c0 + 4, 0]
        assert (block != 0).all()
        starts = [x for x in range(2) if np.array_equal(block, img[:, x:x + 4, 0])]
        assert starts


def test_train_crops_deterministic(demo_root):
    from wsss.data.datasets import TrainCrops

    m = manifest(demo_root)
    ds = TrainCrops([demo_root / m["images"][i] for i in m["splits"]["train"]], m["splits"]["train"], m["labels"], len(DEMO_CLASSES), crop_size=64,
                    resize_long=[64, 128], hflip=True, jitter=0.3, seed=5)
    assert len(ds) == 4
    x, y, i, box = ds[2]
    assert x.shape == (3, 64, 64) and i == 2 and box.shape == (4,)
    assert y.tolist() == [1.0 if k + 1 in m["labels"]["demo_000002"] else 0.0 for k in range(6)]
    x_again, _, _, _ = ds[2]
    assert np.array_equal(x.numpy(), x_again.numpy())  # same seed, epoch and index
    ds.set_epoch(1)
    x_next, _, _, _ = ds[2]
    assert not np.array_equal(x.numpy(), x_next.numpy())


def test_whole_images(demo_root):
    from wsss.data.datasets import MEAN, STD, WholeImages

    m = manifest(demo_root)
    ds = WholeImages([demo_root / m["images"][i] for i in m["splits"]["val"]], m["splits"]["val"], m["labels"], len(DEMO_CLASSES), size=32)
    x, y, i = ds[0]
    assert x.shape == (3, 32, 32) and i == 0
    assert y.sum() == len(m["labels"]["demo_000008"])
    # normalised: undoing mean/std gives pixel values in 0..255
    pix = x.numpy().transpose(1, 2, 0) * STD + MEAN
    assert pix.min() >= -1e-3 and pix.max() <= 255 + 1e-3


def test_which_splits_are_scored_never_changes_what_training_reads(demo_root):
    """Scoring the training split's masks too (segment.labels gt) changes the masks records only:
    the manifest, which the classifier depends on, stays the same to the byte."""
    some = build_manifest(demo_root, SPLITS, ["train", "val"], progress=False)
    more = build_manifest(demo_root, SPLITS, ["train", "val", "train_aug"], progress=False)
    assert set(more.pop("masks")) == {"train", "val", "train_aug"} and set(some.pop("masks")) == {"train", "val"}
    assert json.dumps(some, sort_keys=True) == json.dumps(more, sort_keys=True)
