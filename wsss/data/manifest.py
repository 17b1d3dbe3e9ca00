"""The manifest: a validated, content-hashed index of the data set that later stages read.

``build_manifest`` checks every id of every split the pipeline uses (image decodes, XML parses
with known classes, scored splits have masks of the image's size) before any training, and
records ids, labels, sizes, class names, counts and MD5 fingerprints of every file read (the
scored masks apart from the rest), so a change of the data re-runs what depends on it. Data that contradicts itself is refused (a mask
with classes its image is not labelled with, a held-out split sharing images with the training
split); oddities that are read fine (EXIF rotation tags, bytes after a JPEG's end, a PNG named
.jpg) are summarised on stderr, one line per kind, and leave the manifest unchanged.
"""
from __future__ import annotations

import hashlib
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from . import voc

def resolve_root(root: str, project_dir: Path) -> Path:
    """Absolute data root. A relative root is taken from the project directory, exactly as DVC
    takes prepare's dependency ``${data.root}``: the stage reads the folder DVC hashed."""
    path = Path(root)
    return path if path.is_absolute() else (Path(project_dir).resolve() / path).resolve()


def _check(image_id: str, with_mask: bool, root: Path, class_index: dict) -> tuple[str, dict]:
    return image_id, voc.check_image(root, image_id, class_index, with_mask)


def build_manifest(root: Path, splits: Sequence[str], scored: Sequence[str], workers: int = 1,
                   progress: bool = True, *, train: str | None = None, held_out: Sequence[str] = ()) -> dict:
    """Validate ``splits`` under ``root`` (masks for the ``scored`` ones) and index them.

    ``held_out`` splits (e.g. the classification split scored for mAP) must share no id with
    the ``train`` split; both must be among ``splits``. Raises :class:`voc.DataError` naming
    the first bad file (in split order) or missing list; warns on stderr about files that read
    fine but are odd (see :func:`voc.read_image_notes`).
    """
    root = Path(root)
    if not root.is_dir():
        raise voc.DataError(f"{root}: data root not found (data.root must name the VOC2012 folder)")
    classes = voc.class_names(root)
    class_index = {name: i + 1 for i, name in enumerate(classes)}
    split_ids = {s: voc.read_split(root, s, classes) for s in dict.fromkeys(splits)}
    if held_out:
        check_held_out(root, classes, split_ids, train, held_out)
    need_mask: dict[str, bool] = {}
    for s, ids in split_ids.items():
        for i in ids:
            need_mask[i] = need_mask.get(i, False) or s in scored
    records: dict[str, dict] = {}
    check = partial(_check, root=root, class_index=class_index)
    ids = list(need_mask)
    with_masks = [need_mask[i] for i in ids]
    bar = tqdm(total=len(ids), desc="validate", disable=not progress, unit="img")
    if workers > 1 and len(ids) > 64:
        with ProcessPoolExecutor(workers) as pool:
            for image_id, rec in pool.map(check, ids, with_masks, chunksize=32):
                records[image_id] = rec
                bar.update()
    else:
        for image_id, wm in zip(ids, with_masks):
            records[image_id] = check(image_id, wm)[1]
            bar.update()
    bar.close()
    check_masks_hold_classes(root, [i for i in ids if need_mask[i]], records)
    for line in note_warnings(root, ids, records):
        print(f"prepare: warning: {line}", file=sys.stderr)

    files = []
    for s in split_ids:
        files.append(voc.split_path(root, s, classes))
    for i in ids:
        files += [voc.image_path(root, i), voc.xml_path(root, i)]
    if (root / "classes.txt").exists():
        files.append(root / "classes.txt")
    scored_masks = {s: [voc.mask_path(root, i) for i in split_ids[s]] for s in dict.fromkeys(scored) if s in split_ids}
    # no paths in here: the manifest (a DVC output) must hash the same in every clone, wherever
    # the project and the data live, or a teammate's pulled pipeline would all re-run
    return {
        "classes": list(classes),
        "splits": split_ids,
        "labels": {i: records[i]["labels"] for i in ids},
        "sizes": {i: [records[i]["height"], records[i]["width"]] for i in ids},
        "counts": {
            "images": {s: len(v) for s, v in split_ids.items()},
            "class_images": {
                s: {c: sum(1 for i in v if k + 1 in records[i]["labels"]) for k, c in enumerate(classes)}
                for s, v in split_ids.items()
            },
        },
        # what training reads (images, labels, lists, class names) apart from the masks, which only
        # scoring and previews read: prepare writes them to two files, so a corrected mask re-scores
        # without retraining
        "fingerprint": _fingerprint(files, root),
        # per scored split: the stages that read a split's masks depend on its record alone
        "masks": {s: {"count": len(m), "fingerprint": _fingerprint(m, root)} for s, m in scored_masks.items()},
    }


def check_held_out(root: Path, classes: Sequence[str], split_ids: dict[str, list[str]], train: str | None,
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
            raise voc.DataError(
                f"{voc.split_path(root, name, classes)}: held-out split '{name}' shares {len(shared)} of its "
                f"{len(split_ids[name])} ids with the training split '{train}' ({', '.join(shared[:5])}{more}): "
                "held-out images must not be trained on")


def check_masks_hold_classes(root: Path, masked: Sequence[str], records: dict[str, dict]) -> None:
    """Refuse scored masks of which none holds a class id (only 0 and 255) although every image
    is labelled: binary masks with 255 for objects, even where each one's objects are too small
    for :func:`voc.check_mask_values` to tell. One such mask alone is allowed (VOC paints some
    images' objects 255 whole)."""
    if len(masked) < 2 or any(records[i]["mask_classes"] for i in masked):
        return
    first = masked[0]
    xml_name = voc.xml_path(root, first).relative_to(root).as_posix()
    raise voc.DataError(
        f"{voc.mask_path(root, first)}: this and all other {len(masked) - 1} scored masks hold no class id "
        f"(only 0 and 255) although every image is labelled (e.g. {xml_name}: {records[first]['labels']}): "
        f"{voc.DISAGREE_HINT}")


def note_warnings(root: Path, ids: Sequence[str], records: dict[str, dict]) -> list[str]:
    """One line per kind of oddity in the records' ``notes``, with a count and a first example
    (paths relative to ``root``): EXIF rotation tags, bytes after the end, a format unlike the name."""
    def where(image_id: str) -> str:
        return voc.image_path(root, image_id).relative_to(root).as_posix()

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
        suffix = voc.image_path(root, named[0]).suffix
        lines.append(f"{some(len(named), 'image file', 'hold')} {fmt} data under a {suffix} name "
                     f"(e.g. {where(named[0])}); each is read as {fmt}")
    return lines


def _fingerprint(files: list[Path], root: Path) -> str:
    """MD5 over the relative names and bytes of every file read: changes when any does."""
    h = hashlib.md5()
    for p in files:
        p = Path(p)
        try:
            name = str(p.relative_to(root))
        except ValueError:  # a shipped split list
            name = "shipped/" + p.name
        h.update(name.encode() + b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()
