"""Stage `refine`: pseudo labels (VOC palette PNGs, in the pack ``pseudo/``) from the seeds of
data.seed_split (scored by `evaluate`) and of data.train_split (the segmenter trains on them), one
method for both."""
from __future__ import annotations

import shutil
import time

from wsss import artifacts, io, runtime
from wsss.cli import data_source, run_stage
from wsss.config import load_params
from wsss.models import trained
from wsss.refine.crf import CRFConfig
from wsss.refine.irn import IRNConfig, Walker
from wsss.refine.run import RefineConfig, label_images, refine_split


def main() -> None:
    p = load_params()
    manifest, source = data_source(p)
    r = p.refine
    kind = artifacts.seed_kind(r.map)
    splits = [s for s in dict.fromkeys([p.data.seed_split, p.data.train_split]) if s in p.cams.splits]
    shutil.rmtree(artifacts.PSEUDO, ignore_errors=True)
    # an image in several splits (VOC's train is inside train_aug) is labelled once
    ids = list(dict.fromkeys(i for split in splits for i in manifest["splits"][split]))
    tasks = [(source.image_path(i), i) for i in ids]
    split = " + ".join(splits)
    desc = f"refine {split} ({r.method}, {kind})"
    start = time.perf_counter()
    if r.method == "irn":
        device = runtime.device()
        cfg = IRNConfig.from_params(r.irn, p.seed, p.train.amp)
        walker = Walker(trained.load_relation_net(cfg.dim, device), kind, cfg, device)
        label_images(tasks, artifacts.CAMS, walker, artifacts.PSEUDO, workers=1, desc=desc)
    else:
        cfg = RefineConfig(method=r.method, kind=kind, bg_threshold=r.bg_threshold, crf_unary=r.crf.unary,
                           crf_gt_prob=r.crf.gt_prob, crf=CRFConfig.from_params(r.crf))
        refine_split(tasks, artifacts.CAMS, cfg, artifacts.PSEUDO, r.workers, desc=desc)
    seconds = time.perf_counter() - start
    record = {"method": r.method, "map": kind, "splits": splits, "images": len(tasks), "seconds": round(seconds, 2)}
    if r.method == "irn":
        relations = io.read_json(artifacts.RELATION_INFO)
        record["relations"] = {k: relations[k] for k in ("split", "images", "confident_pixels", "seconds", "summary")}
    io.write_json(artifacts.PSEUDO / "refine.json", record)
    print(f"refine: {len(tasks)} pseudo labels ({r.method} on the {kind}) of {split} in {artifacts.PSEUDO} "
          f"in {seconds:.1f} s")


if __name__ == "__main__":
    run_stage("refine", main)
