"""What keeping the padding out of V2's seeds changes at inference, on one trained model.

Computes the seed maps of ``data.seed_split`` with the trained model in ``models/`` twice, with
the padding masked out of V2's steps (as the ``cams`` stage does) and with it let in (as before
issue 12), and scores both against the masks like ``evaluate``: the R-CAM by its argmax, the
CAM by the background-threshold sweep. Same weights, same images: the difference is the mask's.

    python experiments/padding.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss import runtime  # noqa: E402
from wsss.cli import data_source  # noqa: E402
from wsss.config import load_params, thresholds  # noqa: E402
from wsss.inference import multiscale_maps, seeding  # noqa: E402
from wsss.metrics import SeedScorer  # noqa: E402
from wsss.models import trained  # noqa: E402


def main() -> int:
    p = load_params()
    manifest, source = data_source(p)
    device = runtime.device()
    model = trained.load_model(device)
    seeds = seeding(p.cams.seeds, model) if model.cfg.version == "v2" else None    # as the cams stage
    scorers = {mask: SeedScorer(manifest["classes"], thresholds(p)) for mask in (True, False)}
    pixels = {"padded share of the inputs": [0, 0]}
    for image_id in tqdm(manifest["splits"][p.data.seed_split], desc="padding", unit="img"):
        image = source.image(image_id)
        gt = source.mask(image_id)
        keys = manifest["labels"][image_id]
        for mask, scorer in scorers.items():
            maps = multiscale_maps(model, image, keys, p.cams.scales, p.cams.flip, device, mask_padding=mask,
                                   seeding=seeds)
            scorer.update({"keys": keys, **maps}, gt)
        h, w = image.shape[:2]
        for s in p.cams.scales:
            sh, sw = max(1, round(h * s)), max(1, round(w * s))
            m = model.pad_multiple
            pixels["padded share of the inputs"][0] += sh * sw
            pixels["padded share of the inputs"][1] += (-(-sh // m) * m) * (-(-sw // m) * m)
    valid, total = pixels["padded share of the inputs"]
    print(f"model {model.cfg.version}, split {p.data.seed_split}, scales {p.cams.scales}: "
          f"{100 * (1 - valid / total):.1f} % of the input pixels are padding")
    print("| padding | R-CAM mIoU (argmax) | CAM mIoU (best threshold) |")
    print("|---|---|---|")
    for mask, scorer in scorers.items():
        s = scorer.summary()
        rcam = f"{100 * s['rcam']['miou']:.2f}" if "rcam" in s else "-"
        print(f"| {'masked out' if mask else 'let in (before)'} | {rcam} | "
              f"{100 * s['cam']['miou']:.2f} at {s['cam']['threshold']} |")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
