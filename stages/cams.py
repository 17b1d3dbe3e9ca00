"""Stage `cams`: multi-scale + flip seed maps for every image of cams.splits, and previews."""
from __future__ import annotations

from tqdm import tqdm

from wsss import artifacts, io, runtime
from wsss.cli import data_root, run_stage
from wsss.config import load_params
from wsss.data import voc
from wsss.inference import multiscale_maps
from wsss.viz import cam_panel, png_bytes


def main() -> None:
    p = load_params()
    manifest = artifacts.load_manifest()
    root = data_root(p)
    device = runtime.device()
    model = artifacts.load_model(device)
    classes = manifest["classes"]
    previews = set(manifest["splits"][p.data.seed_split][: p.cams.num_previews])
    for split in p.cams.splits:
        for image_id in tqdm(manifest["splits"][split], desc=f"cams {split}", unit="img"):
            image = voc.read_image(voc.image_path(root, image_id))
            keys = manifest["labels"][image_id]
            maps = multiscale_maps(model, image, keys, p.cams.scales, p.cams.flip, device, amp=p.train.amp)
            artifacts.save_cams(artifacts.cam_path(split, image_id), keys, maps)
            if image_id in previews:
                gt = voc.read_mask(voc.mask_path(root, image_id)) if split == p.data.seed_split else None
                panel = cam_panel(image, maps, keys, classes, gt)
                io.write_bytes(artifacts.PREVIEWS / f"{image_id}.png", png_bytes(panel))
                previews.discard(image_id)


if __name__ == "__main__":
    run_stage("cams", main)
