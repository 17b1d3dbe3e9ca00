"""Stage `demo`: generate the embedded demo set into data/demo when data.root names it, in the
layout data.format names: voc (as generated), coco (the same images, objects as COCO polygons / RLE,
wsss.data.forms) or labels (the same images and a labels.csv, no masks).

When data.root names another data set, the stage writes only a note there: the demo costs nothing
and nothing downstream depends on it (`prepare` depends on ``${data.root}`` itself).
"""
from __future__ import annotations

import os
import shutil

from wsss import artifacts
from wsss.cli import data_root, run_stage
from wsss.config import load_params
from wsss.data.demo import demo_style, generate_demo
from wsss.data.forms import write_coco, write_labels


def main() -> None:
    p = load_params()
    out = artifacts.DEMO_ROOT
    tmp = out.with_name(f".{out.name}.tmp")          # a stopped run never leaves half a data set at out
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if data_root(p) != out.resolve():
            tmp.mkdir(parents=True)
            (tmp / "README.txt").write_text(f"data.root is '{p.data.root}': the demo set is generated only when "
                                            f"data.root is '{out.as_posix()}'.\n")
            what = f"not generated (data.root is '{p.data.root}')"
        else:
            d = p.data.demo
            style = demo_style(d.variant, d.extent, d.background, d.texture)
            made = tmp if p.data.format == "voc" else out.with_name(f".{out.name}.voc.tmp")
            shutil.rmtree(made, ignore_errors=True)
            summary = generate_demo(made, seed=d.seed, n_train_aug=d.num_train_aug, n_train=d.num_train,
                                    n_val=d.num_val, min_size=d.min_size, max_size=d.max_size,
                                    max_objects=d.max_objects, style=style, progress=True,
                                    workers=os.cpu_count() or 1)
            if p.data.format == "coco":
                write_coco(made, tmp, annotated=["train_aug", "val"], listed=["train"])
            elif p.data.format == "labels":
                write_labels(made, tmp, rows=["train_aug", "val"], listed=["train"])
            if made != tmp:
                shutil.rmtree(made)
            what = (f"{summary['num_images']} images in {out}, {p.data.format} layout (variant {d.variant}: objects "
                    f"{style.extent[0]:g}-{style.extent[1]:g} of the short side, {style.background} "
                    f"background, {style.texture} textures)")
    except BaseException:   # also a stop (Ctrl-C, SIGTERM): no half-written set is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(out.with_name(f".{out.name}.voc.tmp"), ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    print(f"demo: {what}")


if __name__ == "__main__":
    run_stage("demo", main)
