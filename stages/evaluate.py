"""Stage `evaluate`: seed mIoU on data.seed_split, mAP on data.cls_split.

CAMs are scored by the background-threshold sweep; V2's R-CAMs by the argmax over their C+1
channels (and the sweep over their foreground channels, for information). ``seed.miou`` leads
with the map ``models/model.json`` names as the seeds: the R-CAM for V2, the CAM for V1.
"""
from __future__ import annotations

import os
from functools import partial

import numpy as np
from tqdm import tqdm

from wsss import artifacts, io, metrics, packs, runtime
from wsss.cli import data_source, run_stage
from wsss.config import load_params, thresholds
from wsss.data import files

#: Images per task of the scoring pool.
CHUNK = 16


def main() -> None:
    p = load_params()
    manifest, source = data_source(p, artifacts.MASKS)
    classes = manifest["classes"]
    lead = io.read_json(artifacts.MODEL_INFO).get("seed_map", "cam")
    split = p.data.seed_split
    ids = manifest["splits"][split]
    masked = source.masked(ids)   # all of them, except with data.format labels (masks where given)
    refine_info = io.read_json(artifacts.PSEUDO / "refine.json")
    cls = classification(p, manifest, classes)
    if masked:
        report, per_class, seeds = seed_scores(p, source, masked, split, classes, lead)
    else:
        why = (f"seed and pseudo-label mIoU need masks: none of the {len(ids)} images of '{split}' has one "
               f"(data.format {manifest.get('format', 'voc')}; give masks/<id>.png for some to score them)")
        report, per_class, seeds = {"seed": {"miou": None, "map": lead, "note": why}}, {}, None
        print(f"evaluate: {why}")
    report["scored_images"] = {"split": split, "masks": len(masked), "images": len(ids)}
    report["cls"] = {"map_per_image": cls["map_per_image"], "map_per_class": cls["map_per_class"]}
    io.write_json(artifacts.METRICS / "evaluate.json", report)
    io.write_json(artifacts.METRICS / "per_class.json", {
        "seed_map": lead, **per_class, "refine": refine_info, "ap": dict(zip(classes, cls["ap_per_class"]))})
    io.write_json(artifacts.METRICS / "run.json", {"versions": runtime.versions(), "split": split, "seed_map": lead,
                                                   "refine": refine_info, "images": len(ids),
                                                   "masks": len(masked)})
    # both columns always (dvc.yaml plots both): a V1 run has no R-CAM, its rcam_fg cells are NaN
    # (which the plots leave out; an empty cell would be drawn as 0)
    cam = seeds["cam"] if seeds else {"curve": []}
    fg_curve = dict(seeds["rcam_fg"]["curve"]) if seeds and "rcam_fg" in seeds else {}
    io.write_text(artifacts.PLOTS / "seed_sweep.csv", "threshold,cam,rcam_fg\n" + "".join(
        f"{t:.4f},{m:.6f},{_f(fg_curve.get(t))}\n" for t, m in cam["curve"]))
    io.write_text(artifacts.PLOTS / "seed_per_class.csv", "class,iou,precision,recall\n" + "".join(
        f"{n},{_f(v['iou'])},{_f(v['precision'])},{_f(v['recall'])}\n"
        for n, v in (seeds[lead]["per_class"].items() if seeds else ())))
    maps = f"mAP per image {100 * cls['map_per_image']:.2f}, per class {100 * cls['map_per_class']:.2f}"
    if not seeds:
        print(f"evaluate: {maps}")
        return
    extra = f" (CAM {100 * cam['miou']:.2f} at threshold {cam['threshold']:.2f})" if lead != "cam" else \
        f" at threshold {cam['threshold']:.2f}"
    part = "" if len(masked) == len(ids) else f" on the {len(masked)} of {len(ids)} images with masks"
    print(f"evaluate: seed mIoU ({lead}){part} {100 * seeds[lead]['miou']:.2f}{extra}; pseudo labels "
          f"({refine_info['method']}) {100 * report['pseudo']['miou']:.2f}; {maps}")


def seed_scores(p, source, masked, split, classes, lead):
    """Seed and pseudo-label scores over the ``masked`` ids: (report, per-class record, seeds).
    Images are scored in parallel (evaluate.workers), in chunks whose counts add up exactly; no
    process holds more than one image's maps."""
    items = [(i, source.mask_path(i)) for i in masked]
    chunks = [items[k:k + CHUNK] for k in range(0, len(items), CHUNK)]
    score = partial(_score_chunk, classes=classes, thresholds=thresholds(p))
    workers = min(p.evaluate.workers or os.cpu_count() or 1, len(chunks))
    scorer = metrics.SeedScorer(classes, thresholds(p))
    pseudo_conf = np.zeros((len(classes) + 1,) * 2, dtype=np.int64)
    with tqdm(total=len(items), desc=f"score {split}", unit="img") as bar:
        for part, conf, n in runtime.bounded_map(score, chunks, workers):
            scorer.merge(part)
            pseudo_conf += conf
            bar.update(n)
    seeds = scorer.summary()
    pseudo = metrics.scores(pseudo_conf, ["background", *classes])
    if lead not in seeds:
        raise io.ArtifactError(f"{artifacts.CAMS}: no '{lead}' maps, which "
                               f"{artifacts.MODEL_INFO} names as the seeds (re-run cams)")
    cam = seeds["cam"]
    report = {"seed": {"miou": seeds[lead]["miou"], "map": lead},
              "cam": {"miou": cam["miou"], "threshold": cam["threshold"], "pixel_accuracy": cam["pixel_accuracy"]}}
    if "rcam" in seeds:
        rcam, fg = seeds["rcam"], seeds["rcam_fg"]
        report["rcam"] = {"miou": rcam["miou"], "pixel_accuracy": rcam["pixel_accuracy"],
                          "fg_sweep_miou": fg["miou"], "fg_sweep_threshold": fg["threshold"]}
    report["pseudo"] = {"miou": pseudo["miou"], "pixel_accuracy": pseudo["pixel_accuracy"]}
    per_class = {"cam_threshold": cam["threshold"],
                 **{kind: seeds[kind]["per_class"] for kind in ("cam", "rcam") if kind in seeds},
                 "pseudo": pseudo["per_class"]}
    return report, per_class, seeds


def _score_chunk(items, classes, thresholds):
    """One chunk's counts: (SeedScorer, pseudo-label confusion, images)."""
    scorer = metrics.SeedScorer(classes, thresholds)
    conf = np.zeros((len(classes) + 1,) * 2, dtype=np.int64)
    cams, labels = packs.opened(artifacts.CAMS), packs.opened(artifacts.PSEUDO)
    for image_id, mask_path in items:
        gt = files.read_mask(mask_path)
        scorer.update(artifacts.read_cams(cams, image_id, expect_shape=gt.shape), gt)
        pseudo = labels.member(artifacts.label_name(image_id))
        conf += metrics.pseudo_label_confusion(files.read_mask(pseudo), gt, len(classes) + 1, pseudo)
    return scorer, conf, len(items)


def classification(p, manifest, classes) -> dict:
    """mAP of the classifier's scores on data.cls_split (written by train)."""
    val = io.load_npz(artifacts.VAL_SCORES)
    val_ids = [str(i) for i in val["ids"]]
    if val_ids != manifest["splits"][p.data.cls_split]:
        raise io.ArtifactError(f"{artifacts.VAL_SCORES}: ids do not match split '{p.data.cls_split}' (re-run train)")
    y = np.stack([np.isin(np.arange(1, len(classes) + 1), manifest["labels"][i]) for i in val_ids])
    return metrics.mean_ap(val["scores"], y)


def _f(x) -> str:
    return "NaN" if x is None else f"{x:.6f}"


if __name__ == "__main__":
    run_stage("evaluate", main)
