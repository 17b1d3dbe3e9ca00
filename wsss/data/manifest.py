"""The manifest: a validated, content-hashed index of the data set that later stages read.

``build_manifest`` checks every id of every split the pipeline uses (image decodes, labels are
known classes, scored splits have masks of the image's size) before any training, through the
reader ``data.format`` names (:mod:`.voc`, :mod:`.coco`, :mod:`.labels`: the only modules that know
a layout), and records ids, labels, sizes, class names, where each image and mask is, counts and
MD5 fingerprints of the content read (the scored masks apart from the rest), so a change of the
data re-runs what depends on it. Data that contradicts itself is refused (a mask
with classes its image is not labelled with, a held-out split sharing images with the training
split); oddities that are read fine (EXIF rotation tags, bytes after a JPEG's end, a PNG named
.jpg) are summarised on stderr, one line per kind, and leave the manifest unchanged.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from ..errors import DataError
from . import FORMATS, files

def reader(fmt: str):
    """The reader module of ``data.format``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown data format '{fmt}' (known: {', '.join(FORMATS)})")
    return importlib.import_module(f"{__package__}.{fmt}")


def resolve_root(root: str, project_dir: Path) -> Path:
    """Absolute data root. A relative root is taken from the project directory, exactly as DVC
    takes prepare's dependency ``${data.root}``: the stage reads the folder DVC hashed."""
    path = Path(root)
    return path if path.is_absolute() else (Path(project_dir).resolve() / path).resolve()


def _check(image_id: str, payload, with_mask: bool, *, fmt: str, root: Path, class_index: dict,
           mask_dir: Path | None) -> tuple[str, dict]:
    """One id's record (in a worker): the reader's checks, plus MD5s of the image and mask bytes."""
    record = reader(fmt).check_image(root, image_id, payload, class_index, with_mask, mask_dir)
    record["md5"] = hashlib.md5((root / record["image"]).read_bytes()).hexdigest()
    if record["mask"] and "mask_md5" not in record:
        record["mask_md5"] = hashlib.md5((root / record["mask"]).read_bytes()).hexdigest()
    return image_id, record


def build_manifest(root: Path, splits: Sequence[str], scored: Sequence[str], workers: int = 1,
                   progress: bool = True, *, train: str | None = None, held_out: Sequence[str] = (),
                   fmt: str = "voc", labels_file: str = "labels.csv", mask_dir: Path | None = None) -> dict:
    """Validate ``splits`` under ``root`` (masks for the ``scored`` ones) and index them.

    ``fmt`` (``data.format``) picks the reader; it alone knows where files lie. The manifest
    records, per id, the image's path relative to ``root`` (``images``) and, per scored split, its
    masks' paths (``masks``: relative to ``root``, or for COCO to ``mask_dir``, where ``prepare``
    rasterises them; an image without a mask is absent), so later stages read through
    :class:`wsss.data.source.Source` and never build a layout path.

    ``held_out`` splits (e.g. the classification split scored for mAP) must share no id with
    the ``train`` split; both must be among ``splits``. Raises :class:`DataError` naming
    the first bad file (in split order) or missing list; warns on stderr about files that read
    fine but are odd (see :func:`files.read_image_notes`).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root not found (data.root must name the data set's folder, "
                        f"data.format '{fmt}')")
    options = {"labels_file": labels_file} if fmt == "labels" else {}
    loaded = reader(fmt).load(root, list(dict.fromkeys(splits)), **options)
    classes, split_ids, payloads, sources = loaded[:4]
    left_out = loaded[4] if len(loaded) > 4 else {}
    class_index = {name: i + 1 for i, name in enumerate(classes)}
    if held_out:
        check_held_out(sources, split_ids, train, held_out)
    need_mask: dict[str, bool] = {}
    for s, ids in split_ids.items():
        for i in ids:
            need_mask[i] = need_mask.get(i, False) or s in scored
    if fmt == "coco" and any(need_mask.values()):
        if mask_dir is None:
            raise ValueError("COCO masks are rasterised into mask_dir: name one")
        Path(mask_dir).mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {}
    check = partial(_check, fmt=fmt, root=root, class_index=class_index, mask_dir=mask_dir)
    ids = list(need_mask)
    with_masks = [need_mask[i] for i in ids]
    items = [payloads[i] for i in ids]
    bar = tqdm(total=len(ids), desc="validate", disable=not progress, unit="img")
    if workers > 1 and len(ids) > 64:
        # fresh worker processes (spawn), not forks: a fork would share, and page by page copy,
        # the reader's whole index (COCO's annotations: gigabytes) in every worker
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for image_id, rec in pool.map(check, ids, items, with_masks, chunksize=32):
                records[image_id] = rec
                bar.update()
    else:
        for image_id, payload, wm in zip(ids, items, with_masks):
            records[image_id] = check(image_id, payload, wm)[1]
            bar.update()
    bar.close()
    mask_base = Path(mask_dir) if fmt == "coco" else root
    check_masks_hold_classes(mask_base, [i for i in ids if need_mask[i] and records[i]["mask"]], records)
    for line in note_warnings(ids, records):
        print(f"prepare: warning: {line}", file=sys.stderr)

    scored_ids = {s: [i for i in split_ids[s] if records[i]["mask"]] for s in dict.fromkeys(scored) if s in split_ids}
    # no absolute paths in here: the manifest (a DVC output) must hash the same in every clone,
    # wherever the project and the data live, or a teammate's pulled pipeline would all re-run
    return {
        "format": fmt,
        "classes": list(classes),
        "splits": split_ids,
        "labels": {i: records[i]["labels"] for i in ids},
        "sizes": {i: [records[i]["height"], records[i]["width"]] for i in ids},
        "images": {i: records[i]["image"] for i in ids},
        # where the mask paths (in "masks", which prepare writes apart) start: the data root, or
        # prepare's rasterised masks (COCO)
        "mask_base": "prepared" if fmt == "coco" else "root",
        "counts": {
            "images": {s: len(v) for s, v in split_ids.items()},
            "class_images": {
                s: {c: sum(1 for i in v if k + 1 in records[i]["labels"]) for k, c in enumerate(classes)}
                for s, v in split_ids.items()
            },
            **({"left_out": left_out} if left_out else {}),
        },
        # what training reads (images, labels, splits, class names) apart from the masks, which only
        # scoring, previews and the segmenter read: prepare writes them to two files, so a corrected
        # mask re-scores without retraining. Content, not file names: the same data in another
        # layout has the same fingerprint.
        "fingerprint": _digest([classes, split_ids] + [[i, records[i]["md5"], records[i]["labels"]] for i in ids]),
        # per scored split, its masks' paths and fingerprint: prepare writes them apart from the
        # manifest (masks.json, segment_masks.json), so that scoring another split, or the segmenter
        # on ground truth, never changes what training depends on; the stages that read a split's
        # masks depend on its record alone
        "masks": {s: {"count": len(m), "fingerprint": _digest([[i, records[i]["mask_md5"]] for i in m]),
                      "files": {i: records[i]["mask"] for i in m}}
                  for s, m in scored_ids.items()},
    }


def check_held_out(sources: dict[str, Path], split_ids: dict[str, list[str]], train: str | None,
                   held_out: Sequence[str]) -> None:
    """Refuse a held-out split that shares ids with the training split (its scores would be
    measured on trained-on images), naming both splits, the count and the first few ids."""
    if train is None:
        raise ValueError("held-out splits need the training split they are held out from (train=...)")
    for name in (train, *held_out):
        if name not in split_ids:
            raise ValueError(f"split '{name}' is not among the validated splits {list(split_ids)}")
    trained = set(split_ids[train])
    for name in held_out:
        shared = [i for i in split_ids[name] if i in trained]
        if shared:
            more = ", ..." if len(shared) > 5 else ""
            raise DataError(
                f"{sources[name]}: held-out split '{name}' shares {len(shared)} of its "
                f"{len(split_ids[name])} ids with the training split '{train}' ({', '.join(shared[:5])}{more}): "
                "held-out images must not be trained on")


def check_masks_hold_classes(base: Path, masked: Sequence[str], records: dict[str, dict]) -> None:
    """Refuse scored masks (paths under ``base``) of which none holds a class id (only 0 and 255)
    although every image is labelled: binary masks with 255 for objects, even where each one's
    objects are too small for :func:`files.check_mask_values` to tell. One such mask alone is
    allowed (VOC paints some images' objects 255 whole)."""
    if len(masked) < 2 or any(records[i]["mask_classes"] for i in masked):
        return
    first = masked[0]
    raise DataError(
        f"{Path(base) / records[first]['mask']}: this and all other {len(masked) - 1} scored masks hold no class id "
        f"(only 0 and 255) although every image is labelled (e.g. {records[first]['labels_from']}: "
        f"{records[first]['labels']}): {files.DISAGREE_HINT}")


def note_warnings(ids: Sequence[str], records: dict[str, dict]) -> list[str]:
    """One line per kind of oddity in the records' ``notes``, with a count and a first example
    (paths relative to the data root): EXIF rotation tags, bytes after the end, a format unlike the name."""
    def where(image_id: str) -> str:
        return records[image_id]["image"]

    def some(n: int, noun: str, verb: str) -> str:
        """'1 image carries', '2 images carry'."""
        one = {"carry": "carries", "hold": "holds"}[verb]
        return f"1 {noun} {one}" if n == 1 else f"{n} {noun}s {verb}"

    noted = [(i, records[i].get("notes", {})) for i in ids]
    lines = []
    rotated = [(i, n["orientation"]) for i, n in noted if "orientation" in n]
    if rotated:
        lines.append(f"{some(len(rotated), 'image', 'carry')} an EXIF rotation tag (e.g. {where(rotated[0][0])}: "
                     f"{rotated[0][1]}); images are read in stored pixel order, as their masks were drawn")
    trailing = [(i, n["trailing"]) for i, n in noted if "trailing" in n]
    if trailing:
        lines.append(f"{some(len(trailing), 'image', 'carry')} bytes after the end of the image data "
                     f"(e.g. {where(trailing[0][0])}: {trailing[0][1]} bytes); the extra bytes are ignored")
    formats: dict[str, list[str]] = {}
    for i, n in noted:
        if "format" in n:
            formats.setdefault(n["format"], []).append(i)
    for fmt, named in formats.items():
        suffix = Path(records[named[0]]["image"]).suffix
        lines.append(f"{some(len(named), 'image file', 'hold')} {fmt} data under a {suffix} name "
                     f"(e.g. {where(named[0])}); each is read as {fmt}")
    return lines


def _digest(obj) -> str:
    """MD5 of a JSON-able object (ids, labels, MD5s of files): changes when any part does."""
    return hashlib.md5(json.dumps(obj, separators=(",", ":")).encode()).hexdigest()
