"""Stage `relations`: IRN's relation net from confident labels of data.train_split's seeds.

Runs only when refine.method is irn; otherwise it records that nothing was trained (a DVC stage
always exists, and this one then costs nothing).
"""
from __future__ import annotations

import shutil
import time
from functools import partial

import numpy as np
from dvclive import Live

from wsss import artifacts, io, packs, runtime
from wsss.cli import data_source, run_stage
from wsss.config import load_params
from wsss.data import files
from wsss.models import trained
from wsss.models.relations import RelationNet
from wsss.refine.crf import CRFConfig
from wsss.refine.irn import IRNConfig, LabelCrops, train_relations
from wsss.refine.run import ConfidentConfig, confident_label, label_images


def main() -> None:
    p = load_params()
    shutil.rmtree(artifacts.RELATIONS, ignore_errors=True)
    if p.refine.method != "irn":
        io.write_json(artifacts.RELATION_INFO, {"trained": False, "reason": f"refine.method is {p.refine.method}"})
        print(f"relations: nothing to train (refine.method is {p.refine.method})")
        return
    manifest, source = data_source(p)
    irn = p.refine.irn
    kind = artifacts.seed_kind(p.refine.map)
    runtime.seed_everything(p.seed)
    device = runtime.device()
    split = p.data.train_split
    ids = manifest["splits"][split]
    conf = ConfidentConfig(kind=kind, fg_threshold=irn.conf_fg, bg_threshold=irn.conf_bg,
                           rcam_bg_scale=irn.rcam_bg_scale, clean=irn.clean,
                           gt_prob=irn.clean_crf.gt_prob, crf=CRFConfig.from_params(irn.clean_crf))
    start = time.perf_counter()
    image_paths = [source.image_path(i) for i in ids]
    label_images(list(zip(image_paths, ids)), artifacts.CAMS, partial(confident_label, cfg=conf),
                 artifacts.RELATION_LABELS, p.refine.workers, desc=f"confident labels {split} ({kind})")
    pack = packs.Pack(artifacts.RELATION_LABELS)
    label_paths = [pack.member(artifacts.label_name(i)) for i in ids]
    label_seconds = time.perf_counter() - start
    counts = np.zeros(3)
    for path in label_paths:
        lab = files.read_mask(path)
        counts += [(lab == 0).sum(), ((lab > 0) & (lab < 255)).sum(), (lab == 255).sum()]
    cfg = IRNConfig.from_params(irn, p.seed, p.train.amp)
    net = RelationNet(trained.load_model(device), cfg.dim)
    start = time.perf_counter()
    with Live(dir=str(artifacts.RELATIONS / "live"), dvcyaml=None, save_dvc_exp=False) as live:
        summary = train_relations(net, LabelCrops(image_paths, ids, label_paths, cfg), cfg, device, live)
    train_seconds = time.perf_counter() - start
    io.save_weights(artifacts.RELATION_WEIGHTS, net.head.state_dict(), metadata={"kind": kind})
    fractions = dict(zip(["background", "foreground", "unsure"], (counts / counts.sum()).round(4).tolist()))
    io.write_json(artifacts.RELATION_INFO, {
        "trained": True, "map": kind, "split": split, "images": len(ids), "confident_pixels": fractions,
        "seconds": {"confident_labels": round(label_seconds, 1), "training": round(train_seconds, 1)},
        "summary": summary, "versions": runtime.versions()})
    print(f"relations: confident labels {fractions} in {label_seconds:.0f} s, "
          f"relation net trained in {train_seconds:.0f} s on {device}")


if __name__ == "__main__":
    run_stage("relations", main)
