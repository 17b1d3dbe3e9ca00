"""Stage `segment_eval`: score the segmenter on data.val_split's masks, single-scale, multi-scale
+ flip (segment.eval.scales) and, with segment.eval.crf, multi-scale + dense CRF: mIoU, pixel
accuracy and per-class IoU / precision / recall to metrics/, per-class bars to plots/."""
from __future__ import annotations

from wsss import artifacts, io, runtime
from wsss.cli import data_source, run_stage
from wsss.config import load_params
from wsss.models.segmenter import load_segmenter
from wsss.refine.crf import CRFConfig
from wsss.segmentation import score_split


def main() -> None:
    p = load_params()
    e = p.segment.eval
    manifest, source = data_source(p, artifacts.SEGMENT_MASKS)
    device = runtime.device()
    model = load_segmenter(artifacts.SEGMENTER_WEIGHTS, artifacts.SEGMENTER_INFO, device)
    info = io.read_json(artifacts.SEGMENTER_INFO)
    split = p.data.val_split
    ids = manifest["splits"][split]
    items = [(source.image_path(i), source.mask_path(i)) for i in source.masked(ids)]
    if not items:   # data.format labels without masks: a segmenter, but nothing to score it on
        why = (f"the segmenter's mIoU needs masks: none of the {len(ids)} images of '{split}' has one "
               f"(data.format {manifest.get('format', 'voc')})")
        io.write_json(artifacts.METRICS / "segment.json", {"labels": info["labels"], "split": split, "images": 0,
                                                           "note": why})
        io.write_json(artifacts.METRICS / "segment_per_class.json", {})
        io.write_text(artifacts.PLOTS / "segment_per_class.csv", "class,iou,precision,recall\n")
        print(f"segment_eval: {why}")
        return
    settings = {"single_scale": {"scales": [1.0], "flip": False},
                "msc": {"scales": list(e.scales), "flip": e.flip}}
    if e.crf:
        settings["msc_crf"] = {"scales": list(e.scales), "flip": e.flip, "crf": True}
    results = score_split(model, items, settings, model.cfg.num_classes, list(model.cfg.class_names), device,
                          p.train.amp, CRFConfig.from_params(e.crf_kernels), desc=f"segment {split}")
    best = max(results, key=lambda k: results[k]["miou"])
    io.write_json(artifacts.METRICS / "segment.json", {
        "labels": info["labels"], "split": split, "images": len(items),
        **{name: {"miou": r["miou"], "pixel_accuracy": r["pixel_accuracy"]} for name, r in results.items()}})
    io.write_json(artifacts.METRICS / "segment_per_class.json", {name: r["per_class"] for name, r in results.items()})
    io.write_text(artifacts.PLOTS / "segment_per_class.csv", "class,iou,precision,recall\n" + "".join(
        f"{n},{_f(v['iou'])},{_f(v['precision'])},{_f(v['recall'])}\n" for n, v in results[best]["per_class"].items()))
    print(f"segment_eval ({info['labels']} labels, {split}): " + ", ".join(
        f"{name} mIoU {100 * r['miou']:.2f}" for name, r in results.items()))


def _f(x) -> str:
    return "NaN" if x is None else f"{x:.6f}"


if __name__ == "__main__":
    run_stage("segment_eval", main)
