"""Data that contradicts itself is refused, odd but readable files are read (issue items 4, 5).

Every case starts from a small generated demo set (wsss.data.demo) and damages real files the
way a user's conversion or copying would.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss.data import files, voc
from wsss.data.demo import DEMO_CLASSES, generate_demo
from wsss.data.manifest import build_manifest
from wsss.data.voc import DataError

DEMO = dict(seed=3, n_train_aug=8, n_train=4, n_val=4, min_size=96, max_size=128)
SPLITS = ["train_aug", "train", "val"]
SCORED = ["train", "val"]
ROTATED = "an EXIF rotation tag"


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("checks") / "VOC2012"
    generate_demo(root, **DEMO)
    return root


@pytest.fixture
def root(demo_root, tmp_path) -> Path:
    """A private copy of the demo set, to damage."""
    copy = tmp_path / "VOC2012"
    shutil.copytree(demo_root, copy)
    return copy


def manifest(root: Path, **kw) -> dict:
    return build_manifest(root, SPLITS, SCORED, progress=False, **kw)


def jpg(root: Path, image_id: str) -> Path:
    return root / "JPEGImages" / f"{image_id}.jpg"


def png(root: Path, image_id: str) -> Path:
    return root / "SegmentationClass" / f"{image_id}.png"


def encode(rgb: np.ndarray, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format=fmt, **kw)
    return out.getvalue()


def scored_ids(root: Path) -> list[str]:
    classes = voc.class_names(root)
    return list(dict.fromkeys(i for s in SCORED for i in voc.read_split(root, s, classes)))


def warnings(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("prepare: warning:")]


# ------------------------------------------------------------------------------- the demo passes

def test_demo_data_passes_without_warnings(demo_root, capsys):
    m = manifest(demo_root, train="train_aug", held_out=["val"])
    assert m["counts"]["images"] == {"train_aug": 8, "train": 4, "val": 4}
    assert warnings(capsys) == []
    index = {n: k for k, n in enumerate(DEMO_CLASSES, start=1)}
    for image_id in scored_ids(demo_root):
        record = voc.check_image(demo_root, image_id, None, index, with_mask=True)
        assert record["notes"] == {}
        assert record["mask_classes"] and set(record["mask_classes"]) <= set(record["labels"])


# ------------------------------------------------------------------------------- masks vs labels

def test_rgb_mask_fixed_with_quantize_refused(root):
    # the user's masks were RGB (VOC colours); read_mask refuses those, so they "fixed" them with
    # PIL's quantize(), which numbers the colours anew: ids no longer mean classes
    for image_id in scored_ids(root):
        rgb = files.voc_palette()[files.read_mask(png(root, image_id))]
        png(root, image_id).write_bytes(encode(rgb, "PNG"))
    with pytest.raises(DataError, match="mode RGB"):
        manifest(root)
    quantized = {}
    for image_id in scored_ids(root):
        with Image.open(png(root, image_id)) as im:
            q = im.quantize()
        q.save(png(root, image_id))
        quantized[image_id] = np.array(q)
    first = scored_ids(root)[0]   # demo_000000, labelled square (2) only
    ids = sorted(int(v) for v in np.unique(quantized[first]) if v not in (0, 255))
    assert ids != [2]
    with pytest.raises(DataError) as info:
        manifest(root)
    msg = str(info.value)
    names = ", ".join(DEMO_CLASSES[k - 1] for k in ids)
    assert msg.startswith(f"{png(root, first)}: mask holds class ids {ids} ({names}) but the image's labels "
                          f"(Annotations/{first}.xml) are [2] (square): masks and labels disagree; usual causes: ")
    assert "quantize()" in msg and "classes.txt" in msg and "binary masks" in msg
    assert "\n" not in msg


def test_classes_txt_in_another_order_refused(root):
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in reversed(DEMO_CLASSES)))
    # now ring=1, cross=2, star=3, triangle=4, square=5, disc=6; demo_000000's mask still says 2
    with pytest.raises(DataError) as info:
        manifest(root)
    msg = str(info.value)
    assert msg.startswith(f"{png(root, 'demo_000000')}: mask holds class ids [2] (cross) but the image's "
                          "labels (Annotations/demo_000000.xml) are [5] (square): masks and labels disagree")
    assert "a classes.txt in another order than the masks" in msg


def binary(mask: np.ndarray) -> np.ndarray:
    """What a binary-mask tool writes: 255 on objects, 0 elsewhere, no boundary band."""
    return np.where((mask > 0) & (mask < 255), 255, 0).astype(np.uint8)


def test_binary_mask_with_large_objects_refused(root):
    path = png(root, "demo_000007")   # train_aug only: scored when train_aug is
    mask = files.read_mask(path)
    share = float((binary(mask) == 255).mean())
    assert share > 0.25
    path.write_bytes(files.palette_png(binary(mask)))
    manifest(root)   # not scored here: not read
    with pytest.raises(DataError) as info:
        build_manifest(root, SPLITS, ["train_aug"], progress=False)
    msg = str(info.value)
    assert msg.startswith(f"{path}: mask holds no class id but 255 (ignore) covers {share:.0%} of its pixels "
                          "while the image's labels (Annotations/demo_000007.xml) are [1, 2] (disc, square): "
                          "masks and labels disagree")
    assert "binary masks with 255 for objects" in msg


def test_all_binary_masks_refused_even_with_small_objects(root):
    ids = voc.read_split(root, "train", DEMO_CLASSES)
    for image_id in ids:
        mask = binary(files.read_mask(png(root, image_id)))
        assert (mask == 255).mean() <= 0.25   # each one alone passes the per-mask rule
        png(root, image_id).write_bytes(files.palette_png(mask))
    with pytest.raises(DataError) as info:
        build_manifest(root, SPLITS, ["train"], progress=False)
    msg = str(info.value)
    assert msg.startswith(f"{png(root, ids[0])}: this and all other 3 scored masks hold no class id (only 0 and "
                          "255) although every image is labelled (e.g. Annotations/demo_000000.xml: [2])")
    assert "binary masks with 255 for objects" in msg


def test_voc_like_masks_stay_accepted(root):
    # one image whose objects are all painted 255 (VOC does so for some objects), with less
    # than a quarter of the pixels: allowed; a labelled class without pixels is allowed too
    path = png(root, "demo_000001")
    mask = files.read_mask(path)
    assert 0 < (binary(mask) == 255).mean() < 0.25
    path.write_bytes(files.palette_png(np.where(binary(mask) == 255, 255, mask).astype(np.uint8)))
    path = png(root, "demo_000002")   # labels disc (1) and star (5): drop the disc from the mask
    mask = files.read_mask(path)
    path.write_bytes(files.palette_png(np.where(mask == 1, 0, mask).astype(np.uint8)))
    manifest(root)


# ------------------------------------------------------------------------------- held-out splits

def test_held_out_split_sharing_training_ids_refused(root):
    val = root / "ImageSets" / "Segmentation" / "val.txt"
    val.write_text(val.read_text() + "demo_000001\ndemo_000005\n")
    with pytest.raises(DataError) as info:
        manifest(root, train="train_aug", held_out=["val"])
    assert str(info.value) == (
        f"{val}: held-out split 'val' shares 2 of its 6 ids with the training split 'train_aug' "
        "(demo_000001, demo_000005): held-out images must not be trained on")
    # without a held-out split named, the same data is indexed as before
    assert manifest(root)["counts"]["images"]["val"] == 6


def test_seed_split_inside_training_split_is_the_protocol(demo_root, capsys):
    m = manifest(demo_root, train="train_aug", held_out=["val"])
    assert set(m["splits"]["train"]) <= set(m["splits"]["train_aug"])
    assert capsys.readouterr().err == ""


def test_held_out_needs_known_splits(demo_root):
    with pytest.raises(ValueError, match="'test'"):
        manifest(demo_root, train="train_aug", held_out=["test"])
    with pytest.raises(ValueError, match="train="):
        manifest(demo_root, held_out=["val"])


# ------------------------------------------------------------------------------- EXIF rotation

def exif(orientation: int) -> Image.Exif:
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags


def test_exif_rotated_images_read_in_stored_order(root, capsys):
    # non-square: the stored 104x128 pixels with "rotate 90 degrees" in the EXIF tag
    path = jpg(root, "demo_000001")
    stored = files.read_image(path)
    assert stored.shape == (128, 104, 3)
    path.write_bytes(encode(stored, "JPEG", quality=95, exif=exif(6)))
    # square: a red square top left, drawn where the mask says square (2) is
    square = np.full((64, 64, 3), 40, dtype=np.uint8)
    square[:32, :32] = (220, 20, 20)
    jpg(root, "demo_000000").write_bytes(encode(square, "JPEG", quality=95, exif=exif(6)))
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:32, :32] = 2
    png(root, "demo_000000").write_bytes(files.palette_png(mask))

    m = manifest(root)
    assert m["sizes"]["demo_000001"] == [128, 104] and m["sizes"]["demo_000000"] == [64, 64]
    assert warnings(capsys) == [
        f"prepare: warning: 2 images carry {ROTATED} (e.g. JPEGImages/demo_000000.jpg: 6); "
        "images are read in stored pixel order, as their masks were drawn"]
    got = files.read_image(jpg(root, "demo_000000"))
    assert got[:32, :32, 0].mean() > 180 and got[:32, 32:, 0].mean() < 80   # not turned
    again = files.read_image(path)
    assert again.shape == stored.shape
    assert np.abs(again.astype(int) - stored).mean() < 4
    assert files.image_size(path) == (128, 104)


# ------------------------------------------------------------------------------- readable oddities

def test_bytes_after_the_end_marker_read(root, capsys):
    path = jpg(root, "demo_000003")
    pixels = files.read_image(path)
    path.write_bytes(path.read_bytes() + b"\x00\x00camera junk\xff\xd9" * 4)
    np.testing.assert_array_equal(files.read_image(path), pixels)
    manifest(root)
    assert warnings(capsys) == [
        "prepare: warning: 1 image carries bytes after the end of the image data "
        "(e.g. JPEGImages/demo_000003.jpg: 60 bytes); the extra bytes are ignored"]


@pytest.mark.parametrize("fmt,kw", [("PNG", {}), ("WebP", {"lossless": True})])
def test_other_format_named_jpg_read(root, capsys, fmt, kw):
    for image_id in ("demo_000002", "demo_000009"):
        path = jpg(root, image_id)
        pixels = files.read_image(path)
        path.write_bytes(encode(pixels, fmt.upper(), **kw))
        np.testing.assert_array_equal(files.read_image(path), pixels)   # both lossless
    manifest(root)
    assert warnings(capsys) == [
        f"prepare: warning: 2 image files hold {fmt} data under a .jpg name (e.g. JPEGImages/demo_000002.jpg); "
        f"each is read as {fmt}"]


def test_warnings_leave_the_manifest_alone(tmp_path, capsys):
    root = tmp_path / "VOC2012"
    generate_demo(root, seed=1, n_train_aug=60, n_train=6, n_val=6, min_size=64, max_size=80)
    clean = build_manifest(root, SPLITS, SCORED, progress=False)
    assert warnings(capsys) == []
    for image_id in ("demo_000003", "demo_000064"):
        path = jpg(root, image_id)
        path.write_bytes(encode(files.read_image(path), "PNG"))
    path = jpg(root, "demo_000010")
    path.write_bytes(encode(files.read_image(path), "JPEG", exif=exif(8)) + b"tail")
    one = build_manifest(root, SPLITS, SCORED, workers=1, progress=False)
    first = warnings(capsys)
    two = build_manifest(root, SPLITS, SCORED, workers=2, progress=False)   # 66 ids: a process pool
    assert warnings(capsys) == first and len(first) == 3
    assert two == one
    assert {k: v for k, v in one.items() if k != "fingerprint"} == \
        {k: v for k, v in clean.items() if k != "fingerprint"}
    text = json.dumps(one)
    assert str(tmp_path) not in text and "warning" not in text and "notes" not in text


# ------------------------------------------------------------------------------- broken images

def jpeg_with_thumbnail(rgb: np.ndarray) -> bytes:
    """A JPEG whose APP1 segment carries a complete thumbnail JPEG (with its own FFD9), as
    cameras write EXIF thumbnails."""
    main = encode(rgb, "JPEG", quality=95)
    thumb = encode(np.ascontiguousarray(rgb[::8, ::8]), "JPEG", quality=50)
    payload = b"Exif\x00\x00" + thumb
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return main[:2] + app1 + main[2:]


def test_truncated_jpeg_refused_despite_thumbnail_end_marker(root):
    path = jpg(root, "demo_000002")
    data = jpeg_with_thumbnail(files.read_image(path))
    path.write_bytes(data)
    manifest(root)   # whole: fine
    cut = data[: int(len(data) * 0.8)]
    assert b"\xff\xd9" in cut   # the thumbnail's end marker survives the cut
    path.write_bytes(cut)
    with pytest.raises(DataError) as info:
        manifest(root)
    assert str(info.value) == f"{path}: truncated JPEG: the data ends before the end-of-image marker (FFD9)"


def test_truncated_png_named_jpg_refused(root):
    path = jpg(root, "demo_000001")
    data = encode(files.read_image(path), "PNG")
    path.write_bytes(data[:-40])
    with pytest.raises(DataError) as info:
        files.read_image(path)
    assert str(info.value) == f"{path}: truncated PNG: the data ends before the IEND chunk"


def test_undecodable_jpeg_refused(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(b"\xff\xd8\xff\xd9")   # structurally whole, but no image in it
    with pytest.raises(DataError) as info:
        files.read_image(path)
    assert str(info.value) == f"{path}: not a readable image (JPEG data that does not decode)"
    path.write_bytes(b"not an image at all")
    with pytest.raises(DataError) as info:
        files.read_image(path)
    assert str(info.value) == f"{path}: not a readable image (neither JPEG, PNG nor WebP data)"


# ------------------------------------------------------------------------------- text files

BOM = "\ufeff"


def test_byte_order_mark_ignored(root):
    sets = root / "ImageSets" / "Segmentation"
    for split in SPLITS:
        path = sets / f"{split}.txt"
        path.write_text(BOM + path.read_text(), encoding="utf-8")
    (root / "classes.txt").write_text(BOM + (root / "classes.txt").read_text(), encoding="utf-8")
    assert (root / "classes.txt").read_bytes().startswith(b"\xef\xbb\xbf")
    m = manifest(root)
    assert m["classes"] == list(DEMO_CLASSES)
    assert m["splits"]["train"][0] == "demo_000000"


def test_id_with_a_space_refused(root):
    path = root / "ImageSets" / "Segmentation" / "val.txt"
    path.write_text("demo_000008\ndemo_000009\n\ndemo 000010\ndemo_000011\n")
    with pytest.raises(DataError) as info:
        manifest(root)
    assert str(info.value) == (f"{path}: line 4 holds 2 tokens ('demo 000010'): a split list holds one "
                               "image id per line, and ids hold no spaces")


def test_duplicate_ids_named_with_lines(root):
    path = root / "ImageSets" / "Segmentation" / "train.txt"
    path.write_text("demo_000000\ndemo_000001\ndemo_000000\ndemo_000002\ndemo_000001\ndemo_000000\n")
    with pytest.raises(DataError) as info:
        manifest(root)
    assert str(info.value) == (f"{path}: split 'train' lists 2 duplicate id(s): demo_000000 (lines 1, 3, 6), "
                               "demo_000001 (lines 2, 5)")


def test_split_list_not_utf8_refused(root):
    path = root / "ImageSets" / "Segmentation" / "val.txt"
    path.write_bytes(b"demo_000008\ndemo_\xe9\n")
    with pytest.raises(DataError) as info:
        manifest(root)
    assert str(info.value).startswith(f"{path}: not UTF-8 text (")
