"""Stage `evaluate`: seed mIoU on data.seed_split, mAP on data.cls_split.

CAMs are scored by the background-threshold sweep; V2's R-CAMs by the argmax over their C+1
channels (and the sweep over their foreground channels, for information). ``seed.miou`` leads
with the map ``models/model.json`` names as the seeds: the R-CAM for V2, the CAM for V1.
"""
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
    lead = io.read_json(artifacts.MODEL_INFO).get("seed_map", "cam")
    scorer = metrics.SeedScorer(classes, thresholds(p))
    split = p.data.seed_split
    pseudo_conf = np.zeros((len(classes) + 1,) * 2, dtype=np.int64)
    for image_id in tqdm(manifest["splits"][split], desc=f"score {split}", unit="img"):
        gt = voc.read_mask(voc.mask_path(root, image_id))
        scorer.update(artifacts.load_cams(artifacts.cam_path(split, image_id), expect_shape=gt.shape), gt)
        pseudo_conf += metrics.pseudo_label_confusion(voc.read_mask(artifacts.pseudo_path(split, image_id)), gt,
                                                      len(classes) + 1, artifacts.pseudo_path(split, image_id))
    seeds = scorer.summary()
    pseudo = metrics.scores(pseudo_conf, ["background", *classes])
    refine_info = io.read_json(artifacts.PSEUDO / "refine.json")
    if lead not in seeds:
        raise io.ArtifactError(f"{artifacts.cam_path(split, '*')}: no '{lead}' maps, which "
                               f"{artifacts.MODEL_INFO} names as the seeds (re-run cams)")

    val = io.load_npz(artifacts.VAL_SCORES)
    val_ids = [str(i) for i in val["ids"]]
    if val_ids != manifest["splits"][p.data.cls_split]:
        raise io.ArtifactError(f"{artifacts.VAL_SCORES}: ids do not match split '{p.data.cls_split}' (re-run train)")
    y = np.stack([np.isin(np.arange(1, len(classes) + 1), manifest["labels"][i]) for i in val_ids])
    cls = metrics.mean_ap(val["scores"], y)

    cam = seeds["cam"]
    report = {"seed": {"miou": seeds[lead]["miou"], "map": lead},
              "cam": {"miou": cam["miou"], "threshold": cam["threshold"], "pixel_accuracy": cam["pixel_accuracy"]}}
    if "rcam" in seeds:
        rcam, fg = seeds["rcam"], seeds["rcam_fg"]
        report["rcam"] = {"miou": rcam["miou"], "pixel_accuracy": rcam["pixel_accuracy"],
                          "fg_sweep_miou": fg["miou"], "fg_sweep_threshold": fg["threshold"]}
    report["pseudo"] = {"miou": pseudo["miou"], "pixel_accuracy": pseudo["pixel_accuracy"]}
    report["cls"] = {"map_per_image": cls["map_per_image"], "map_per_class": cls["map_per_class"]}
    io.write_json(artifacts.METRICS / "evaluate.json", report)
    io.write_json(artifacts.METRICS / "per_class.json", {
        "seed_map": lead, "cam_threshold": cam["threshold"],
        **{kind: seeds[kind]["per_class"] for kind in ("cam", "rcam") if kind in seeds},
        "pseudo": pseudo["per_class"], "refine": refine_info,
        "ap": dict(zip(classes, cls["ap_per_class"])),
    })
    io.write_json(artifacts.METRICS / "run.json", {"versions": runtime.versions(), "split": split, "seed_map": lead,
                                                   "refine": refine_info,
                                                   "images": len(manifest["splits"][split])})
    # both columns always (dvc.yaml plots both): a V1 run has no R-CAM, its rcam_fg cells are NaN
    # (which the plots leave out; an empty cell would be drawn as 0)
    fg_curve = dict(seeds["rcam_fg"]["curve"]) if "rcam_fg" in seeds else {}
    io.write_text(artifacts.PLOTS / "seed_sweep.csv", "threshold,cam,rcam_fg\n" + "".join(
        f"{t:.4f},{m:.6f},{_f(fg_curve.get(t))}\n" for t, m in cam["curve"]))
    io.write_text(artifacts.PLOTS / "seed_per_class.csv", "class,iou,precision,recall\n" + "".join(
        f"{n},{_f(v['iou'])},{_f(v['precision'])},{_f(v['recall'])}\n" for n, v in seeds[lead]["per_class"].items()))
    extra = f" (CAM {100 * cam['miou']:.2f} at threshold {cam['threshold']:.2f})" if lead != "cam" else \
        f" at threshold {cam['threshold']:.2f}"
    print(f"evaluate: seed mIoU ({lead}) {100 * seeds[lead]['miou']:.2f}{extra}; pseudo labels "
          f"({refine_info['method']}) {100 * pseudo['miou']:.2f}; "
          f"mAP per image {100 * cls['map_per_image']:.2f}, per class {100 * cls['map_per_class']:.2f}")


def _f(x) -> str:
    return "NaN" if x is None else f"{x:.6f}"


if __name__ == "__main__":
    run_stage("evaluate", main)
