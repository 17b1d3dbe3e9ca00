"""Stage `prepare`: generate the demo set (data.root = demo), validate the data, write the manifest."""
from __future__ import annotations

import os
import shutil

from wsss import artifacts, io
from wsss.cli import data_root, run_stage
from wsss.config import load_params
from wsss.data.demo import generate_demo
from wsss.data.manifest import build_manifest


def main() -> None:
    p = load_params()
    root = data_root(p)
    if p.data.root == "demo":
        d = p.data.demo
        shutil.rmtree(root, ignore_errors=True)
        generate_demo(root, seed=d.seed, n_train_aug=d.num_train_aug, n_train=d.num_train, n_val=d.num_val,
                      min_size=d.min_size, max_size=d.max_size, max_objects=d.max_objects, progress=True)
    splits = [p.data.train_split, p.data.seed_split, p.data.cls_split, *p.cams.splits]
    manifest = build_manifest(root, splits, scored=[p.data.seed_split], workers=os.cpu_count() or 1)
    io.write_json(artifacts.MANIFEST, manifest)
    counts = manifest["counts"]["images"]
    print(f"prepare: {len(manifest['classes'])} classes; " + ", ".join(f"{s}: {n}" for s, n in counts.items()))


if __name__ == "__main__":
    run_stage("prepare", main)
