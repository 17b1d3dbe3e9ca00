"""Stage `cams`: multi-scale + flip seed maps for every image of cams.splits, and previews.

With ``cams.nproc`` > 1 (or under torchrun) every process takes every world-th image (of the
splits' images, each once) and writes its own files: the outputs are the one-process outputs."""
from __future__ import annotations

from tqdm import tqdm

from wsss import artifacts, distributed, io, runtime
from wsss.cli import data_source, run_stage
from wsss.config import load_params
from wsss.inference import multiscale_maps, seeding
from wsss.models import trained
from wsss.viz import cam_panel, png_bytes


def main() -> None:
    p = load_params()
    distributed.launch_stage(p.cams.nproc, "cams.nproc", "stages.cams", runtime.device())   # > 1: torchrun takes over
    manifest, source = data_source(p, artifacts.MASKS)
    device = distributed.setup(runtime.device())
    rank, world = distributed.rank_and_world()
    model = trained.load_model(device)
    seeds = seeding(p.cams.seeds, model) if model.cfg.version == "v2" else None
    classes = manifest["classes"]
    # previews: the first images of the seed split, drawn with their ground truth (by whichever
    # process holds them)
    previews = set(manifest["splits"][p.data.seed_split][: p.cams.num_previews])
    # an image listed by several splits (VOC's train is inside train_aug) is computed once and
    # written under each of them
    where: dict[str, list[str]] = {}
    for split in p.cams.splits:
        for image_id in manifest["splits"][split]:
            where.setdefault(image_id, []).append(split)
    ids = distributed.shard(list(where))
    desc = f"cams {' + '.join(p.cams.splits)}" + (f" (process 1 of {world})" if world > 1 else "")
    for image_id in tqdm(ids, desc=desc, unit="img", disable=rank > 0):
        image = source.image(image_id)
        keys = manifest["labels"][image_id]
        maps = multiscale_maps(model, image, keys, p.cams.scales, p.cams.flip, device, amp=p.train.amp,
                               seeding=seeds)
        for split in where[image_id]:
            artifacts.save_cams(artifacts.cam_path(split, image_id), keys, maps)
        if p.data.seed_split in where[image_id] and image_id in previews:
            gt = source.mask(image_id) if source.has_mask(image_id) else None
            panel = cam_panel(image, maps, keys, classes, gt)
            io.write_bytes(artifacts.PREVIEWS / f"{image_id}.png", png_bytes(panel))
    distributed.cleanup()


if __name__ == "__main__":
    run_stage("cams", main)
