"""The reader of a user's own data set with image-level labels only (``data.format: labels``).

``root`` holds the images (anywhere below it) and one labels file (``data.labels_file``)::

    root/labels.csv        image,labels[,split]   e.g.  images/cat1.jpg,cat;dog,train
    root/labels.json       {"images": {"images/cat1.jpg": ["cat", "dog"], ...},
                            "classes": [...], "splits": {"train": [...], ...}}   (classes, splits optional)
                           or simply {"images/cat1.jpg": ["cat", "dog"], ...}
    root/classes.txt       (optional) foreground class names in index order
    root/lists/<name>.txt  (optional) more splits: one image (path or id) per line
    root/masks/<id>.png    (optional) masks for some images: those are scored

- An image's **id** is its file name without the suffix; two images with one name are refused.
- **Labels** in a CSV cell are separated by ``;`` (or spaces, where no class name holds one).
- **Classes**: ``classes.txt``, else the JSON's ``classes``, else every name used, sorted.
- **Splits**: the CSV's ``split`` column or the JSON's ``splits``, then ``lists/<name>.txt``; the
  split ``all`` is every image.
- **Masks** are optional: where ``masks/<id>.png`` exists it is checked like a VOC mask and scored.

Every fault is a :class:`DataError` naming the file and the line (an unknown class, an image
without labels, a row whose image does not exist, a repeated image).
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Sequence

from ..errors import DataError
from .files import check_mask_values, read_image_notes, read_mask, read_text

_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
#: The split holding every image of the labels file.
ALL = "all"
MASKS = "masks"
LISTS = "lists"


def list_path(root: Path, split: str) -> Path:
    return Path(root) / LISTS / f"{split}.txt"


def load(root: Path, splits: Sequence[str], labels_file: str = "labels.csv"):
    """Read the labels file: ``(classes, split ids, payloads, sources)`` where a payload is
    ``{"image", "labels", "mask"}`` (paths relative to ``root``; mask None where there is none)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root not found (data.root must name the folder of your images)")
    path = root / labels_file
    if not path.exists():
        raise DataError(f"{path}: labels file not found (data.labels_file names it, relative to data.root)")
    if path.suffix.lower() == ".json":
        rows, declared, file_splits = _read_json(path)
    elif path.suffix.lower() == ".csv":
        rows, declared, file_splits = _read_csv(path)
    else:
        raise DataError(f"{path}: the labels file must be .csv or .json")
    classes = _classes(root, declared, rows)
    index = {name: k + 1 for k, name in enumerate(classes)}
    spaced = any(" " in c for c in classes)
    payloads: dict[str, dict] = {}
    where: dict[str, int] = {}
    for line, image, cell in rows:
        names = _tokens(cell, spaced)
        if not names:
            raise DataError(f"{path}: line {line}: image '{image}' has no labels (every image needs at least one)")
        unknown = [n for n in names if n not in index]
        if unknown:
            raise DataError(f"{path}: line {line}: unknown class {unknown[0]!r} for image '{image}' "
                            f"(known: {', '.join(classes)})")
        file = root / image
        if not file.is_file():
            raise DataError(f"{path}: line {line}: image '{image}' not found ({file})")
        image_id = Path(image).stem
        if image_id in payloads:
            raise DataError(f"{path}: line {line}: image '{image}' has the id '{image_id}' of the image on line "
                            f"{where[image_id]} ({payloads[image_id]['image']}): ids are file names without suffix "
                            "and must be unique")
        where[image_id] = line
        mask = root / MASKS / f"{image_id}.png"
        payloads[image_id] = {"image": Path(image).as_posix(), "labels": sorted({index[n] for n in names}),
                              "from": f"{labels_file} line {line}",
                              "mask": mask.relative_to(root).as_posix() if mask.exists() else None}
    split_ids, sources = {}, {}
    for s in dict.fromkeys(splits):
        if s == ALL:
            split_ids[s], sources[s] = list(payloads), path
        elif s in file_splits:
            split_ids[s], sources[s] = [_id_of(path, line, img, payloads) for line, img in file_splits[s]], path
        elif list_path(root, s).exists():
            lp = list_path(root, s)
            entries = [(n, t.strip()) for n, t in enumerate(read_text(lp).splitlines(), start=1) if t.strip()]
            split_ids[s], sources[s] = [_id_of(lp, n, t, payloads) for n, t in entries], lp
        else:
            known = sorted({ALL, *file_splits, *(p.stem for p in (root / LISTS).glob("*.txt"))})
            raise DataError(f"{path}: split '{s}' not found: not in the labels file, and {list_path(root, s)} does "
                            f"not exist (known splits: {', '.join(known)})")
        if not split_ids[s]:
            raise DataError(f"{sources[s]}: split '{s}' is empty")
        seen = set()
        for i in split_ids[s]:
            if i in seen:
                raise DataError(f"{sources[s]}: split '{s}' lists image '{i}' twice")
            seen.add(i)
    return classes, split_ids, payloads, sources


def _id_of(path: Path, line: int, token: str, payloads: dict[str, dict]) -> str:
    image_id = Path(token).stem
    if image_id not in payloads:
        raise DataError(f"{path}: line {line}: '{token}' is not an image of the labels file")
    return image_id


def _read_csv(path: Path):
    text = read_text(path)
    reader = csv.reader(text.splitlines())
    header = [h.strip().lower() for h in next(reader, [])]
    if "image" not in header or "labels" not in header:
        raise DataError(f"{path}: line 1: the header must name the columns 'image' and 'labels' (and optionally "
                        f"'split'), got {header}")
    col = {name: header.index(name) for name in ("image", "labels", "split") if name in header}
    rows, splits = [], {}
    for line, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) < len(header):
            raise DataError(f"{path}: line {line}: {len(cells)} cells, the header has {len(header)}")
        image = cells[col["image"]].strip()
        rows.append((line, image, cells[col["labels"]]))
        if "split" in col and cells[col["split"]].strip():
            splits.setdefault(cells[col["split"]].strip(), []).append((line, image))
    return rows, None, splits


def _read_json(path: Path):
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: must hold an object (image -> class names)")
    structured = isinstance(data.get("images"), dict)
    images = data["images"] if structured else data
    declared = data.get("classes") if structured else None
    splits_in = data.get("splits", {}) if structured else {}
    # JSON has no line numbers once parsed: each string's first line, found in one pass over the text
    first: dict[str, int] = {}
    for number, text in enumerate(read_text(path).splitlines(), start=1):
        for quoted in _JSON_STRING.findall(text):
            first.setdefault(quoted, number)

    def line_of(key: str) -> int:
        return first.get(json.dumps(key)[1:-1], 0)

    rows = []
    for image, names in images.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(f"{path}: line {line_of(image)}: the labels of '{image}' must be a list of class names")
        rows.append((line_of(image), image, names))
    splits = {name: [(line_of(i), i) for i in members] for name, members in splits_in.items()}
    return rows, declared, splits


def _tokens(cell, spaced: bool) -> list[str]:
    """A CSV cell's class names (``;``-separated, or by spaces too where no class name holds one);
    a JSON list as it is."""
    if not isinstance(cell, str):
        return list(cell)
    return [t.strip() for t in re.split(r";" if spaced else r"[;\s]+", cell) if t.strip()]


def _classes(root: Path, declared, rows) -> tuple[str, ...]:
    from . import voc

    if (Path(root) / "classes.txt").exists():
        return voc.class_names(root)
    if declared:
        return tuple(declared)
    semicolons = any(isinstance(cell, str) and ";" in cell for _, _, cell in rows)
    return tuple(sorted({n for _, _, cell in rows for n in _tokens(cell, semicolons)}))


def check_image(root: Path, image_id: str, payload: dict, class_index: dict[str, int], with_mask: bool,
                mask_dir: Path | None) -> dict:
    """Validate one image (it decodes) and, where it has one and it is asked for, its mask."""
    root = Path(root)
    path = root / payload["image"]
    rgb, notes = read_image_notes(path)
    h, w = rgb.shape[:2]
    record = {"labels": payload["labels"], "height": h, "width": w, "notes": notes, "image": payload["image"],
              "mask": None, "labels_from": payload["from"]}
    if with_mask and payload["mask"]:
        mpath = root / payload["mask"]
        mask = read_mask(mpath)
        if mask.shape != (h, w):
            raise DataError(f"{mpath}: mask is {mask.shape[1]}x{mask.shape[0]} but image {path.name} is {w}x{h}")
        record["mask"] = payload["mask"]
        record["mask_classes"] = check_mask_values(mpath, mask, payload["labels"], class_index, payload["from"])
    return record
