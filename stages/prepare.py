"""Stage `prepare`: validate the data set under data.root and write the manifest later stages read.

DVC re-runs this stage when any file under data.root changes (dvc.yaml lists ``${data.root}``,
hashed with DVC's state cache: an unchanged data set is not re-read). The manifest's fingerprint
covers the files training reads, masks.json the scored masks (read only by cams' previews and
evaluate), segment_masks.json the segmenter's (data.val_split's and, with segment.labels gt,
data.train_split's), so a change elsewhere under the root re-runs nothing else, and a corrected
mask re-scores (or re-trains the segmenter on it) without retraining the classifier.
"""
from __future__ import annotations

import os
import shutil

from wsss import artifacts, io, packs
from wsss.cli import data_root, run_stage
from wsss.config import load_params
from wsss.data.manifest import build_manifest


def main() -> None:
    p = load_params()
    root = data_root(p)
    splits = [p.data.train_split, p.data.seed_split, p.data.cls_split, p.data.val_split, *p.cams.splits]
    # masks: the seeds' scored split and the segmenter's validation split; with segment.labels gt,
    # the training split's too (the upper bound trains on them)
    scored = [p.data.seed_split, p.data.val_split] + ([p.data.train_split] if p.segment.labels == "gt" else [])
    # COCO's masks are rasterised here, once, and read back by every later stage; into a new folder
    # that replaces the old one only once the whole data set has passed (bad input loses nothing)
    masks_dir = artifacts.PREPARED_MASKS.with_name(f".{artifacts.PREPARED_MASKS.name}.tmp")
    shutil.rmtree(masks_dir, ignore_errors=True)
    masks_dir.mkdir(parents=True)
    io.write_text(masks_dir / "README.txt", "data.format coco: the scored splits' masks, rasterised by prepare "
                  "from the annotations (wsss/data/coco.py states the rules), as a pack of <id>.png "
                  "(wsss/packs.py; unzip part-*.zip gives the PNG files); an empty pack otherwise.\n")
    try:
        manifest = build_manifest(root, splits, scored=scored, train=p.data.train_split,
                                  held_out=[p.data.cls_split, p.data.val_split], workers=os.cpu_count() or 1,
                                  fmt=p.data.format, labels_file=p.data.labels_file, mask_dir=masks_dir)
    except BaseException:
        shutil.rmtree(masks_dir, ignore_errors=True)
        raise
    # kept as a pack (wsss.packs): at COCO's size, tens of thousands of files DVC would look at
    packed = artifacts.PREPARED_MASKS.with_name(f".{artifacts.PREPARED_MASKS.name}.pack.tmp")
    try:
        shutil.rmtree(packed, ignore_errors=True)
        packs.pack_files(sorted(masks_dir.glob("*.png")), packed)
        shutil.move(str(masks_dir / "README.txt"), packed / "README.txt")
        shutil.rmtree(artifacts.PREPARED_MASKS, ignore_errors=True)
        os.replace(packed, artifacts.PREPARED_MASKS)
    finally:
        shutil.rmtree(masks_dir, ignore_errors=True)
        shutil.rmtree(packed, ignore_errors=True)
    masks = manifest.pop("masks")
    io.write_json(artifacts.MASKS, {"split": p.data.seed_split, **masks[p.data.seed_split]})
    io.write_json(artifacts.SEGMENT_MASKS, {s: masks[s] for s in dict.fromkeys(scored[1:])})
    io.write_json(artifacts.MANIFEST, manifest)
    counts = manifest["counts"]
    for name, n in counts.get("left_out", {}).items():
        print(f"prepare: {n} images of {name} have no annotation and are left out (no image-level label)")
    partial = "".join(f"; {s}: masks for {m['count']} of {counts['images'][s]} images" for s, m in masks.items()
                      if m["count"] < counts["images"][s])
    print(f"prepare: {manifest['format']}, {len(manifest['classes'])} classes; "
          + ", ".join(f"{s}: {n}" for s, n in counts["images"].items()) + partial)


if __name__ == "__main__":
    run_stage("prepare", main)
