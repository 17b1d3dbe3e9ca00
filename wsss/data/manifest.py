"""The manifest: a validated, content-hashed index of the data set that later stages read.

``build_manifest`` checks every id of every split the pipeline uses (image decodes, XML parses
with known classes, scored splits have masks of the image's size) before any training, and
records ids, labels, sizes, class names, counts and an MD5 fingerprint of every file read, so a
change of the data re-runs what depends on it.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from . import voc

DVC_EXP_TMP = os.sep.join(("", ".dvc", "tmp", "exps", ""))


def resolve_root(root: str, project_dir: Path) -> Path:
    """Absolute data root. A relative root is taken from the project directory; inside a queued
    ``dvc exp run`` (a temporary copy under ``<repo>/.dvc/tmp/exps/``) a relative root that
    does not exist there is taken from the original repository instead."""
    path = Path(os.path.expanduser(root))
    if path.is_absolute():
        return path
    project_dir = Path(project_dir).resolve()
    candidate = project_dir / path
    text = str(project_dir) + os.sep
    if not candidate.exists() and DVC_EXP_TMP in text:
        original = Path(text.split(DVC_EXP_TMP)[0])
        if (original / path).exists():
            return (original / path).resolve()
    return candidate.resolve()


def _check(image_id: str, with_mask: bool, root: Path, class_index: dict) -> tuple[str, dict]:
    return image_id, voc.check_image(root, image_id, class_index, with_mask)


def build_manifest(root: Path, splits: Sequence[str], scored: Sequence[str], workers: int = 1,
                   progress: bool = True) -> dict:
    """Validate ``splits`` under ``root`` (masks for the ``scored`` ones) and index them.

    Raises :class:`voc.DataError` naming the first bad file (in split order) or missing list.
    """
    root = Path(root)
    if not root.is_dir():
        raise voc.DataError(f"{root}: data root not found (data.root must name the VOC2012 folder)")
    classes = voc.class_names(root)
    class_index = {name: i + 1 for i, name in enumerate(classes)}
    split_ids = {s: voc.read_split(root, s, classes) for s in dict.fromkeys(splits)}
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

    files = []
    for s in split_ids:
        files.append(voc.split_path(root, s, classes))
    for i in ids:
        files += [voc.image_path(root, i), voc.xml_path(root, i)]
        if need_mask[i]:
            files.append(voc.mask_path(root, i))
    if (root / "classes.txt").exists():
        files.append(root / "classes.txt")
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
        "fingerprint": _fingerprint(files, root),
    }


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
