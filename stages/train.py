"""Stage `train`: train the SWTformer classifier; save safetensors weights and val scores."""
from __future__ import annotations

import numpy as np

from wsss import artifacts, distributed, io, runtime
from wsss.checkpoint import Checkpointer, session
from wsss.classifier import TrainConfig, fit, predict_scores
from wsss.cli import data_source, run_stage
from wsss.config import load_params, shaping, to_dict
from wsss.data.datasets import TrainCrops, WholeImages
from wsss.losses import LossWeights
from wsss.models import ModelConfig, build_model
from wsss.models.swin import load_pretrained


def main() -> None:
    p = load_params()
    distributed.launch_stage(p.train.nproc, "train.nproc", "stages.train", runtime.device())   # > 1: torchrun takes over
    manifest, source = data_source(p)
    classes, labels = manifest["classes"], manifest["labels"]
    t = p.train
    runtime.seed_everything(p.seed)
    device = distributed.setup(runtime.device())   # several processes under torchrun: DDP
    main_process = distributed.is_main()
    cfg = ModelConfig(version=p.model.version, backbone=p.model.backbone, num_classes=len(classes),
                      img_size=t.crop_size, head_kernel=p.model.head_kernel,
                      drop_path_rate=p.model.drop_path_rate, class_names=classes,
                      hff_dims=p.model.hff_dims, hff_detach=p.model.hff_detach, affinity=p.model.affinity,
                      bg_weight=p.model.bg_weight, seed_features=p.model.seed_features,
                      every_class=p.model.every_class)
    model = build_model(cfg)
    weights_info = load_pretrained(model.backbone, p.model.backbone, p.model.pretrained,
                                   partial=p.model.pretrained_partial)
    train_ids, val_ids = manifest["splits"][p.data.train_split], manifest["splits"][p.data.cls_split]
    train_set = TrainCrops([source.image_path(i) for i in train_ids], train_ids, labels, len(classes), t.crop_size,
                           t.resize_long, t.hflip, t.color_jitter, p.seed)
    val_set = WholeImages([source.image_path(i) for i in val_ids], val_ids, labels, len(classes), t.cls_size)
    tc = TrainConfig(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, head_lr_mult=t.head_lr_mult,
                     weight_decay=t.weight_decay, warmup_epochs=t.warmup_epochs, min_lr_ratio=t.min_lr_ratio,
                     num_workers=t.num_workers, amp=t.amp, seed=p.seed, checkpoint_every=t.checkpoint_every,
                     collapse_floor=t.collapse_floor,
                     loss=LossWeights(w_gsc=p.loss.w_gsc, w_ccl=p.loss.w_ccl, ccl=p.loss.ccl,
                                     ramp_epochs=p.loss.ramp_epochs, grad_to=p.loss.grad_to))
    loaded = f"{weights_info['loaded']} tensors loaded"
    if weights_info.get("partial"):
        loaded += (f"; partial: {len(weights_info['missing'])} backbone tensors left at init, "
                   f"{len(weights_info['unexpected'])} unused (listed in models/model.json)")
    print(f"train: {cfg.version} on {device}, {len(train_set)} images, {t.epochs} epochs, "
          f"pretrained={p.model.pretrained} ({loaded})")
    # what makes a checkpoint this run's: everything that shapes training, and the data
    fingerprint = {"params": shaping(p, "seed", "model", "loss", "train"),
                   "splits": [p.data.train_split, p.data.cls_split], "data": manifest["fingerprint"]}
    checkpoint = Checkpointer(artifacts.CHECKPOINT, fingerprint)
    with session(artifacts.TRAIN_LIVE, checkpoint, t.resume, main_process) as (live, resume):
        summary = fit(model, train_set, val_set, tc, device, live,
                      checkpoint=checkpoint if main_process else None, resume=resume)
    if not main_process:     # the first process writes the outputs
        distributed.cleanup()
        return
    scores, _ = predict_scores(model, val_set, device, t.batch_size, t.num_workers, t.amp)
    io.save_weights(artifacts.WEIGHTS, model.state_dict(), metadata={"version": cfg.version})
    io.save_npz(artifacts.VAL_SCORES, scores=scores.astype(np.float32), ids=np.array(val_ids))
    # V2's seeds are its R-CAMs, unless neither GSC nor CCL trained the fusion branch (Table 3, row 1)
    seed_map = "rcam" if cfg.version == "v2" and (p.loss.w_gsc > 0 or p.loss.w_ccl > 0) else "cam"
    io.write_json(artifacts.MODEL_INFO, {"config": cfg.to_dict(), "seed_map": seed_map, "summary": summary,
                                         "pretrained": {"source": p.model.pretrained, **weights_info},
                                         "params": to_dict(p), "versions": runtime.versions()})
    health = {"version": cfg.version, "last_epoch": summary.get("health", {})}
    if "collapse" in summary:
        health["collapse"] = summary["collapse"]
        if summary["collapse"]["collapsed"]:
            c = summary["collapse"]
            print(f"train: WARNING: V2's seeds collapsed ({' and '.join(c['kinds'])} seeds vanished) in "
                  f"epochs {c['collapsed_epochs']} (recorded in {artifacts.TRAIN_HEALTH})")
    io.write_json(artifacts.TRAIN_HEALTH, health)
    checkpoint.clear()
    distributed.cleanup()


if __name__ == "__main__":
    run_stage("train", main)
