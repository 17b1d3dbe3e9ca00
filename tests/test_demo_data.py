"""Tests of the synthetic demo data set (wsss.data.demo)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss.data import demo
from wsss.data.demo import DEMO_CLASSES, generate_demo

C = len(DEMO_CLASSES)
TINY = dict(seed=7, n_train_aug=12, n_train=4, n_val=4, min_size=96, max_size=128)
SAMPLE = dict(seed=11, n_train_aug=50, n_train=10, n_val=10, min_size=96, max_size=128)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("tiny") / "VOC2012"
    return root, generate_demo(root, **TINY)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """60 images on disk, for the statistical checks."""
    root = tmp_path_factory.mktemp("sample") / "VOC2012"
    generate_demo(root, **SAMPLE)
    return root


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_list(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def ids_of(root: Path) -> list[str]:
    return read_list(root, "train_aug") + read_list(root, "val")


def load(root: Path, image_id: str):
    """(RGB image, mask, palette-mode?, XML objects as [(name, (xmin, ymin, xmax, ymax), truncated)])."""
    img = np.array(Image.open(root / "JPEGImages" / f"{image_id}.jpg").convert("RGB"))
    with Image.open(root / "SegmentationClass" / f"{image_id}.png") as im:
        mode, palette = im.mode, im.getpalette()
        mask = np.array(im)
    xml = ET.parse(root / "Annotations" / f"{image_id}.xml").getroot()
    objects = []
    for obj in xml.iter("object"):
        box = tuple(int(obj.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax"))
        objects.append((obj.find("name").text, box, int(obj.find("truncated").text)))
    size = tuple(int(xml.find(f"size/{k}").text) for k in ("width", "height", "depth"))
    return img, mask, mode, palette, objects, size


# ------------------------------------------------------------------------------- layout / API
def test_layout_splits_and_summary(tiny):
    root, summary = tiny
    train_aug, train, val = (read_list(root, s) for s in ("train_aug", "train", "val"))
    assert len(train_aug) == 12 and len(train) == 4 and len(val) == 4
    assert train == train_aug[:4]                       # train is a subset (prefix) of train_aug
    assert not set(val) & set(train_aug)
    assert len(set(train_aug)) == 12 and len(set(val)) == 4
    assert (root / "classes.txt").read_text().splitlines() == list(DEMO_CLASSES)
    for image_id in train_aug + val:
        assert image_id.startswith("demo_")
        for folder, ext in (("JPEGImages", "jpg"), ("Annotations", "xml"), ("SegmentationClass", "png")):
            assert (root / folder / f"{image_id}.{ext}").is_file()
    assert len(list((root / "JPEGImages").iterdir())) == 16
    assert not list(root.rglob(".*")), "temporary files left behind"
    assert summary["num_images"] == 16
    assert summary["splits"] == {"train_aug": 12, "train": 4, "val": 4}
    assert set(summary["class_counts"]) == set(DEMO_CLASSES)
    # class_counts = number of images showing each class
    expected = dict.fromkeys(DEMO_CLASSES, 0)
    for image_id in train_aug + val:
        for name in {o[0] for o in load(root, image_id)[4]}:
            expected[name] += 1
    assert summary["class_counts"] == expected


def test_refuses_non_empty_root_and_bad_arguments(tmp_path):
    (tmp_path / "x.txt").write_text("occupied")
    with pytest.raises(FileExistsError):
        generate_demo(tmp_path, **TINY)
    with pytest.raises(ValueError):
        generate_demo(tmp_path / "a", **{**TINY, "n_train": 13})
    with pytest.raises(ValueError):
        generate_demo(tmp_path / "b", **{**TINY, "min_size": 130})


# ------------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_other_seed_other_images(tiny, tmp_path):
    root, _ = tiny
    again = tmp_path / "again"
    generate_demo(again, progress=True, **TINY)         # progress bar must not change the output
    first, second = all_files(root), all_files(again)
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first), "same seed must give byte-identical files"

    other = tmp_path / "other"
    generate_demo(other, **{**TINY, "seed": TINY["seed"] + 1})
    jpgs = [k for k in first if k.endswith(".jpg")]
    third = all_files(other)
    assert sum(first[k] != third[k] for k in jpgs) == len(jpgs), "another seed must change every image"


def test_image_does_not_depend_on_the_others(tiny, tmp_path):
    root, _ = tiny
    small = tmp_path / "small"
    generate_demo(small, **{**TINY, "n_train_aug": 3, "n_train": 1, "n_val": 0})
    for image_id in read_list(small, "train_aug"):
        for rel in (f"JPEGImages/{image_id}.jpg", f"SegmentationClass/{image_id}.png", f"Annotations/{image_id}.xml"):
            assert (small / rel).read_bytes() == (root / rel).read_bytes()


# ------------------------------------------------------------------------------- masks vs labels
def test_masks_match_annotations(tiny):
    root, _ = tiny
    names = {n: k for k, n in enumerate(DEMO_CLASSES, start=1)}
    for image_id in ids_of(root):
        img, mask, mode, palette, objects, size = load(root, image_id)
        h, w = mask.shape
        assert mode == "P"
        assert palette[:6] == [0, 0, 0, 128, 0, 0] and palette[255 * 3:256 * 3] == [224, 224, 192]
        assert img.shape == (h, w, 3) and size == (w, h, 3)
        assert 96 <= h <= 128 and 96 <= w <= 128
        values = set(np.unique(mask).tolist())
        assert values <= set(range(C + 1)) | {255}
        assert 1 <= len(objects) <= 3
        xml_classes = {names[o[0]] for o in objects}
        assert values - {0, 255} == xml_classes
        # ignore band: present, and no two different real labels touch (4-neighbourhood)
        assert 255 in values
        for a, b in ((mask[1:], mask[:-1]), (mask[:, 1:], mask[:, :-1])):
            change = (a != b) & (a != 255) & (b != 255)
            assert not change.any(), f"{image_id}: label change without ignore band"
        # the boxes (1-based, inclusive) of a class cover all of its labelled pixels
        for k in xml_classes:
            cover = np.zeros_like(mask, dtype=bool)
            for name, (x0, y0, x1, y1), _ in objects:
                assert 1 <= x0 <= x1 <= w and 1 <= y0 <= y1 <= h
                if names[name] == k:
                    cover[y0 - 1:y1, x0 - 1:x1] = True
            assert not ((mask == k) & ~cover).any()


def test_rendered_objects_stay_visible_and_inside():
    """Internal invariants: >= 35 % visible, >= 150 labelled pixels, <= ~30 % cut by the border."""
    occluded = 0
    for i in range(60):
        img, mask, inst, objects = demo._render_sample(3, i, 96, 128, 3)
        h, w = mask.shape
        for j, obj in enumerate(objects):
            visible = inst == j + 1
            assert visible.sum() >= 0.35 * obj.area
            assert ((mask == obj.cls) & visible).sum() >= 150
            inside = np.count_nonzero(obj.patch[obj.clip(h, w)[1]])
            assert inside >= 0.7 * obj.area - 1
            assert obj.truncated == (inside < obj.area)
            occluded += visible.sum() < inside
    assert occluded > 0


# ------------------------------------------------------------------------------- fairness
def test_colour_alone_does_not_define_the_class(sample):
    """Hue narrows a class to two candidates (each hue sector is shared by two classes), so a
    colour-only classifier cannot name the class: the best hue-sector rule is right about half
    the time, and every class shows up in two sectors, every sector in two classes."""
    import cv2

    from wsss.data import demo

    sector_of = []
    for image_id in ids_of(sample):
        img, mask = load(sample, image_id)[:2]
        for k in set(np.unique(mask).tolist()) - {0, 255}:
            hsv = cv2.cvtColor(img[mask == k][None].astype(np.uint8), cv2.COLOR_RGB2HSV)[0]
            hue = np.median(hsv[:, 0].astype(np.float64))
            sector_of.append((k, int(hue // (180 / demo._HUE_SECTORS)) % demo._HUE_SECTORS))
    pairs = np.zeros((C + 1, demo._HUE_SECTORS), int)
    for k, s in sector_of:
        pairs[k, s] += 1
    assert set(k for k, _ in sector_of) == set(range(1, C + 1))
    for k in range(1, C + 1):                 # each class spreads over (about) two sectors
        top2 = np.sort(pairs[k])[-2:]
        assert top2.min() >= 0.2 * pairs[k].sum()
    for s in range(demo._HUE_SECTORS):        # and no sector belongs to one class only
        col = pairs[1:, s]
        if col.sum() >= 8:
            assert np.sort(col)[-2] >= 0.2 * col.sum()
    # best possible colour-only rule: for each sector, guess its most frequent class
    best = pairs[1:].max(axis=0).sum() / len(sector_of)
    assert best < 0.75


def test_sample_has_multi_object_images_and_occlusion(sample):
    multi = touching = 0
    for image_id in ids_of(sample):
        mask, objects = load(sample, image_id)[1], load(sample, image_id)[4]
        multi += len(objects) >= 2
        # two different classes separated only by the ignore band: one object occludes another
        present = sorted(set(np.unique(mask).tolist()) - {0, 255})
        for a in present:
            near = np.zeros_like(mask, dtype=bool)
            ys, xs = np.nonzero(mask == a)
            for dy in range(-3, 4):
                for dx in range(-3, 4):
                    near[np.clip(ys + dy, 0, mask.shape[0] - 1), np.clip(xs + dx, 0, mask.shape[1] - 1)] = True
            if any((near & (mask == b)).any() for b in present if b != a):
                touching += 1
                break
    assert multi >= 1
    assert touching >= 1


# ------------------------------------------------------------------------------- the VOC reader
def test_voc_reader_reads_it(tiny):
    voc = pytest.importorskip("wsss.data.voc")
    root, _ = tiny
    classes = voc.class_names(root)
    assert classes == DEMO_CLASSES
    index = {n: k for k, n in enumerate(classes, start=1)}
    for split in ("train_aug", "train", "val"):
        for image_id in voc.read_split(root, split, classes):
            record = voc.check_image(root, image_id, None, index, with_mask=True)
            assert record["labels"]


# ------------------------------------------------------------------------------- variants
def _saturation(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb[None].astype(np.uint8), cv2.COLOR_RGB2HSV)[0, :, 1].astype(np.float64)


def _variant_stats(style, n=24):
    """Per variant: object extents (fractions of the short side), background saturation and
    high-frequency energy, object saturation, over ``n`` rendered images."""
    import cv2

    extents, bg_sat, bg_edges, obj_sat = [], [], [], []
    for i in range(n):
        img, mask, inst, objects = demo._render_sample(5, i, 96, 128, 3, style)
        short = min(mask.shape)
        for obj in objects:        # the patch is 2 * (ceil(0.62 d) + 3) + 1 pixels wide
            extents.append((obj.patch.shape[0] // 2 - 3) / demo._SHAPE_REACH / short)
        bg = mask == 0
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)
        lap = np.abs(cv2.Laplacian(cv2.GaussianBlur(grey, (0, 0), 1.0), cv2.CV_64F))
        bg_sat.append(_saturation(img[bg]).mean())
        bg_edges.append(lap[bg].mean())
        obj_sat.append(_saturation(img[(mask > 0) & (mask != 255)]).mean())
    return np.array(extents), np.mean(bg_sat), np.mean(bg_edges), np.mean(obj_sat)


def test_variants_change_what_they_say():
    stats = {name: _variant_stats(style) for name, style in demo.VARIANTS.items()}
    for name, style in demo.VARIANTS.items():
        ext = stats[name][0]
        lo, hi = style.extent
        assert lo - 0.02 <= ext.min() and ext.max() <= hi + 0.02, name      # sizes drawn in the range
    assert np.median(stats["large"][0]) > np.median(stats["standard"][0]) + 0.12
    # busy backgrounds: more colourful and far more structure than the muted clutter
    assert stats["busy"][1] > stats["standard"][1] + 15
    assert stats["busy"][2] > 1.5 * stats["standard"][2]
    # natural textures: objects tinted, not painted in saturated colour
    assert stats["natural"][3] < stats["busy"][3] - 15


@pytest.mark.parametrize("variant", ["large", "busy", "natural"])
def test_variants_keep_the_data_set_rules(variant, tmp_path):
    """Every variant is a valid VOC-layout set whose image labels are right (objects visible
    enough, masks agreeing with the XML), as the standard demo."""
    root = tmp_path / variant
    summary = generate_demo(root, **TINY, style=demo.VARIANTS[variant])
    assert summary["num_images"] == 16
    names = {n: k for k, n in enumerate(DEMO_CLASSES, start=1)}
    for image_id in ids_of(root):
        img, mask, mode, palette, objects, size = load(root, image_id)
        assert {names[o[0]] for o in objects} == set(np.unique(mask).tolist()) - {0, 255}
        for a, b in ((mask[1:], mask[:-1]), (mask[:, 1:], mask[:, :-1])):
            assert not ((a != b) & (a != 255) & (b != 255)).any()
    for i in range(30):
        _, mask, inst, objects = demo._render_sample(3, i, 96, 128, 3, demo.VARIANTS[variant])
        for j, obj in enumerate(objects):
            assert (inst == j + 1).sum() >= 0.35 * obj.area
            assert ((mask == obj.cls) & (inst == j + 1)).sum() >= 150


def test_standard_variant_is_the_default_and_styles_are_checked(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_demo(a, **TINY)
    generate_demo(b, **TINY, style=demo.demo_style("standard"))
    assert all_files(a) == all_files(b)
    s = demo.demo_style("natural", extent=[0.2, 0.3])
    assert s.extent == (0.2, 0.3) and s.background == "busy" and s.texture == "natural"
    assert demo.demo_style("large", background="busy").extent == demo.VARIANTS["large"].extent
    for bad in (dict(variant="huge"), dict(extent=[0.5, 0.2]), dict(extent=[0.1, 0.95]),
                dict(background="noisy"), dict(texture="wood")):
        with pytest.raises(ValueError):
            demo.demo_style(**bad)


def test_params_offer_exactly_the_generators_choices():
    """params.yaml's choices (wsss.config, which must not import the generator: every stage
    would depend on it) are the generator's own."""
    from wsss.config import SCHEMA

    d = SCHEMA["data"]["demo"]
    assert d["variant"].check("standard") is None
    for key, options in (("variant", demo.VARIANTS), ("background", demo._BACKGROUNDS), ("texture", demo._TEXTURES)):
        for name in options:
            assert d[key].check(name) is None, (key, name)
        assert d[key].check("nonsense") is not None
    assert d["background"].check(None) is None and d["extent"].check(None) is None
    assert d["extent"].check([0.05, 0.8]) is None and d["extent"].check([0.04, 0.5]) is not None
