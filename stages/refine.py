"""Stage `refine`: pseudo labels (VOC palette PNGs) from the seeds of data.seed_split."""
from __future__ import annotations

import shutil

from wsss import artifacts, io
from wsss.cli import data_root, run_stage
from wsss.config import ParamsError, load_params
from wsss.data import voc
from wsss.refine.crf import CRFConfig
from wsss.refine.run import RefineConfig, refine_split


def main() -> None:
    p = load_params()
    manifest = artifacts.load_manifest()
    root = data_root(p)
    r, c = p.refine, p.refine.crf
    kind = io.read_json(artifacts.MODEL_INFO).get("seed_map", "cam") if r.map == "seed" else r.map
    cfg = RefineConfig(method=r.method, kind=kind, bg_threshold=r.bg_threshold, crf_unary=c.unary,
                       crf_gt_prob=c.gt_prob,
                       crf=CRFConfig(iterations=c.iterations, gaussian_sxy=c.gaussian_sxy,
                                     gaussian_compat=c.gaussian_compat, bilateral_sxy=c.bilateral_sxy,
                                     bilateral_srgb=c.bilateral_srgb, bilateral_compat=c.bilateral_compat))
    if kind == "rcam" and artifacts.load_model_config().version != "v2":
        raise ParamsError("params.yaml: 'refine.map' is 'rcam' but the trained model is V1 (no R-CAM): use cam or seed")
    split = p.data.seed_split
    shutil.rmtree(artifacts.PSEUDO, ignore_errors=True)
    tasks = [(voc.image_path(root, i), artifacts.cam_path(split, i), artifacts.pseudo_path(split, i))
             for i in manifest["splits"][split]]
    refine_split(tasks, cfg, r.workers, desc=f"refine {split} ({r.method}, {kind})")
    io.write_json(artifacts.PSEUDO / "refine.json", {"method": r.method, "map": kind, "split": split,
                                                     "images": len(tasks)})
    print(f"refine: {len(tasks)} pseudo labels ({r.method} on the {kind}) in {artifacts.PSEUDO / split}")


if __name__ == "__main__":
    run_stage("refine", main)
