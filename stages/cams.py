"""Stage `cams`: multi-scale + flip seed maps for every image of cams.splits, and previews.

The maps go into the pack ``cams/`` (:mod:`wsss.packs`), one member per image (an image in
several splits is computed once). With ``cams.nproc`` > 1 (or under torchrun) every process takes
every world-th part of the pack and writes it; the first writes the index once all are done: the
outputs are the one-process outputs."""
from __future__ import annotations

from tqdm import tqdm

from wsss import artifacts, distributed, io, packs, runtime
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
    # an image listed by several splits (VOC's train is inside train_aug) is computed once
    ids = list(dict.fromkeys(i for split in p.cams.splits for i in manifest["splits"][split]))
    seed_split = set(manifest["splits"][p.data.seed_split])
    names = [artifacts.cam_name(i) for i in ids]
    parts = packs.parts_of(ids)
    mine = distributed.shard(range(len(parts)))
    writer = packs.PackWriter(artifacts.CAMS, names, parts=mine, index=False)
    desc = f"cams {' + '.join(p.cams.splits)}" + (f" (process 1 of {world})" if world > 1 else "")
    for image_id in tqdm([i for k in mine for i in parts[k]], desc=desc, unit="img", disable=rank > 0):
        image = source.image(image_id)
        keys = manifest["labels"][image_id]
        maps = multiscale_maps(model, image, keys, p.cams.scales, p.cams.flip, device, amp=p.train.amp,
                               seeding=seeds)
        writer.add(artifacts.cam_name(image_id), artifacts.cams_bytes(keys, maps, artifacts.cam_name(image_id)))
        if image_id in seed_split and image_id in previews:
            gt = source.mask(image_id) if source.has_mask(image_id) else None
            panel = cam_panel(image, maps, keys, classes, gt)
            io.write_bytes(artifacts.PREVIEWS / f"{image_id}.png", png_bytes(panel))
    writer.close()
    distributed.barrier()
    if rank == 0:
        packs.write_index(artifacts.CAMS, names)
    distributed.cleanup()


if __name__ == "__main__":
    run_stage("cams", main)
