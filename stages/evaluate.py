"""Stage `evaluate`: seed mIoU (background-threshold sweep) on data.seed_split, mAP on data.cls_split."""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from wsss import artifacts, io, metrics, runtime
from wsss.cli import data_root, run_stage
from wsss.config import load_params, thresholds
from wsss.data import voc


def main() -> None:
    p = load_params()
    manifest = artifacts.load_manifest()
    root = data_root(p)
    classes = manifest["classes"]
    names = ["background", *classes]
    sweep = metrics.ThresholdSweep(len(names), thresholds(p))
    split = p.data.seed_split
    for image_id in tqdm(manifest["splits"][split], desc=f"score {split}", unit="img"):
        gt = voc.read_mask(voc.mask_path(root, image_id))
        maps = artifacts.load_cams(artifacts.cam_path(split, image_id), expect_shape=gt.shape)
        sweep.update(maps["cam"], maps["keys"], gt)
    curve = [(t, metrics.scores(conf, names)) for t, conf in sweep.results()]
    best_t, best = max(curve, key=lambda tc: tc[1]["miou"])

    val = io.load_npz(artifacts.VAL_SCORES)
    val_ids = [str(i) for i in val["ids"]]
    if val_ids != manifest["splits"][p.data.cls_split]:
        raise io.ArtifactError(f"{artifacts.VAL_SCORES}: ids do not match split '{p.data.cls_split}' (re-run train)")
    y = np.stack([np.isin(np.arange(1, len(classes) + 1), manifest["labels"][i]) for i in val_ids])
    cls = metrics.mean_ap(val["scores"], y)

    io.write_json(artifacts.METRICS / "evaluate.json", {
        "seed": {"miou": best["miou"], "threshold": best_t, "pixel_accuracy": best["pixel_accuracy"]},
        "cls": {"map_per_image": cls["map_per_image"], "map_per_class": cls["map_per_class"]},
    })
    io.write_json(artifacts.METRICS / "per_class.json", {
        "seed_threshold": best_t,
        "seed": best["per_class"],
        "ap": dict(zip(classes, cls["ap_per_class"])),
    })
    io.write_json(artifacts.METRICS / "run.json", {"versions": runtime.versions(), "split": split, "seed_map": "cam",
                                                   "images": len(manifest["splits"][split])})
    io.write_text(artifacts.PLOTS / "seed_sweep.csv",
                  "threshold,miou\n" + "".join(f"{t:.4f},{s['miou']:.6f}\n" for t, s in curve))
    io.write_text(artifacts.PLOTS / "seed_per_class.csv", "class,iou,precision,recall\n" + "".join(
        f"{n},{_f(v['iou'])},{_f(v['precision'])},{_f(v['recall'])}\n" for n, v in best["per_class"].items()))
    print(f"evaluate: seed mIoU {100 * best['miou']:.2f} at threshold {best_t:.2f}; "
          f"mAP per image {100 * cls['map_per_image']:.2f}, per class {100 * cls['map_per_class']:.2f}")


def _f(x) -> str:
    return "" if x is None else f"{x:.6f}"


if __name__ == "__main__":
    run_stage("evaluate", main)
