"""Stage `segment`: train the segmentation network (step 3) on the pseudo labels of
data.train_split (segment.labels: pseudo) or on its ground-truth masks (gt: the fully
supervised upper bound), through the same training loop as the classifier."""
from __future__ import annotations

import hashlib

from wsss import artifacts, distributed, io, packs, runtime
from wsss.checkpoint import Checkpointer, session
from wsss.cli import data_source, run_stage
from wsss.config import load_params, shaping, to_dict
from wsss.errors import DataError
from wsss.data.datasets import LabelledCrops
from wsss.models.segmenter import SegmenterConfig, build_segmenter
from wsss.segmentation import SegmentTask
from wsss.training import LoopConfig, run


def segmenter_config(p, classes) -> SegmenterConfig:
    s = p.segment
    classifier = io.read_json(artifacts.MODEL_INFO)["config"] if s.backbone == "classifier" else None
    return SegmenterConfig(backbone=s.backbone, num_classes=len(classes) + 1, output_stride=s.output_stride,
                           feature_stage=s.feature_stage, aspp_channels=s.aspp_channels,
                           aspp_rates=tuple(s.aspp_rates), class_names=("background", *classes),
                           classifier=classifier)


def main() -> None:
    p = load_params()
    distributed.launch_stage(p.segment.nproc, "segment.nproc", "stages.segment", runtime.device())
    s = p.segment
    manifest, source = data_source(p, artifacts.SEGMENT_MASKS)
    classes = manifest["classes"]
    split = p.data.train_split
    ids = manifest["splits"][split]
    if s.labels == "pseudo":
        pack = packs.Pack(artifacts.PSEUDO)
        label_paths = [pack.member(artifacts.label_name(i)) for i in ids]
        missing = [path for path, i in zip(label_paths, ids) if artifacts.label_name(i) not in pack]
    else:
        label_paths = [source.mask_path(i) if source.has_mask(i) else source.mask_root / f"(no mask: {i})"
                       for i in ids]
        missing = [path for path in label_paths if not path.exists()]
    if missing:
        what = "refine's pseudo labels" if s.labels == "pseudo" else "ground-truth masks"
        raise DataError(f"{missing[0]}: {len(missing)} of the {len(ids)} images of '{split}' have no "
                            f"{what} (segment.labels: {s.labels})")
    runtime.seed_everything(p.seed)
    device = distributed.setup(runtime.device())
    main_process = distributed.is_main()
    cfg = segmenter_config(p, classes)
    # backbone classifier: the SWTformer's trained weights (image-level labels only) are its start
    state = io.load_weights(artifacts.WEIGHTS) if s.backbone == "classifier" else None
    model = build_segmenter(cfg, s.pretrained, state)
    val = [(source.image_path(i), source.mask_path(i)) for i in source.masked(manifest["splits"][p.data.val_split])]
    task = SegmentTask(model, s.head_lr_mult, cfg.num_classes, val if s.validate and val else None, p.train.amp)
    loop = LoopConfig(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, weight_decay=s.weight_decay,
                      optimizer=s.optimizer, momentum=s.momentum, schedule=s.schedule,
                      warmup_epochs=s.warmup_epochs, num_workers=s.num_workers, amp=p.train.amp, seed=p.seed,
                      checkpoint_every=s.checkpoint_every, name="segment")
    crops = LabelledCrops([source.image_path(i) for i in ids], ids, label_paths, s.crop_size, s.resize_long, p.seed)
    start = "the classifier's weights" if s.backbone == "classifier" else f"pretrained={s.pretrained}"
    print(f"segment: {cfg.backbone} (output stride {model.backbone.feature_info.reduction()[-1]}, {start}) on {device}, "
          f"{len(ids)} images of '{split}' with {s.labels} labels, {s.epochs} epochs")
    params = shaping(p, "seed", "segment")
    params["segment"].pop("eval")       # scoring only
    fingerprint = {"params": {**params, "amp": p.train.amp}, "split": split,
                   "data": manifest["fingerprint"], "labels": _labels_fingerprint(label_paths)}
    checkpoint = Checkpointer(artifacts.SEGMENTER_CHECKPOINT, fingerprint)
    with session(artifacts.SEGMENT_LIVE, checkpoint, p.train.resume, main_process) as (live, resume):
        summary = run(task, crops, loop, device, live, checkpoint=checkpoint if main_process else None,
                      resume=resume)
    if not main_process:
        distributed.cleanup()
        return
    io.save_weights(artifacts.SEGMENTER_WEIGHTS, model.state_dict(), metadata={"backbone": cfg.backbone})
    io.write_json(artifacts.SEGMENTER_INFO, {"config": cfg.to_dict(), "labels": s.labels, "split": split,
                                             "images": len(ids), "summary": summary, "params": to_dict(p)["segment"],
                                             "versions": runtime.versions()})
    checkpoint.clear()
    distributed.cleanup()


def _labels_fingerprint(paths) -> str:
    """The label maps' content (a checkpoint made on other labels is not this run's)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


if __name__ == "__main__":
    run_stage("segment", main)
