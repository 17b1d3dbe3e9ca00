"""Benchmark: the segmenter's training step in the project's loop against a bare step of the same
library model on the same batch; and the multi-scale + flip evaluation's images per second.

project  ``wsss.training.Stepper.step`` over ``wsss.segmentation.SegmentTask``: the segmenter's
         forward under autocast (CUDA only), the cross-entropy (255 ignored) and the labelled
         share, the processes' mean of the terms, the finiteness check, ``zero_grad``,
         ``scaler.scale(loss).backward()``, ``scaler.step``, ``scaler.update``, ``schedule.step``.
bare     the same network (``wsss.models.segmenter.Segmenter``: timm backbone + torchvision
         ASPP), ``F.cross_entropy(ignore_index=255)``, ``zero_grad``, ``backward``, ``AdamW.step``.
eval     ``wsss.segmentation.predict`` over random images at the given scales, with flip:
         images per second (the ``msc`` setting of segment_eval, without the CRF).

Both steps get the same random batch and weights; they are timed in turns after warm-up steps.
Target: project / bare <= 1.10 (ratio of medians).

Run from the project directory:  python bench/segment_step.py [options]
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from wsss.models.segmenter import SegmenterConfig, build_segmenter
from wsss.segmentation import IGNORE, SegmentTask, predict
from wsss.training import LoopConfig, Stepper

from _timing import environment, print_environment, print_table, ratio, stats, time_alternating, write_json

TARGET = 1.10


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--backbone", default="resnet18", help="timm model (params.yaml segment.backbone)")
    ap.add_argument("--output-stride", type=int, default=8)
    ap.add_argument("--feature-stage", type=int, default=3)
    ap.add_argument("--aspp-channels", type=int, default=64)
    ap.add_argument("--aspp-rates", type=int, nargs=3, default=[2, 4, 6])
    ap.add_argument("--num-classes", type=int, default=7, help="with the background (demo: 7, VOC: 21)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--size", type=int, default=128, help="square training crop")
    ap.add_argument("--eval-size", type=int, nargs=2, default=[128, 160], help="evaluation image H W")
    ap.add_argument("--eval-images", type=int, default=8)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.75, 1.0, 1.25, 1.5])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: os.cpu_count())")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--json", metavar="PATH")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count())
    device = torch.device(args.device)
    cfg = SegmenterConfig(backbone=args.backbone, num_classes=args.num_classes, output_stride=args.output_stride,
                          feature_stage=args.feature_stage, aspp_channels=args.aspp_channels,
                          aspp_rates=tuple(args.aspp_rates))
    env = environment()
    print(f"segment step: {args.backbone} os {args.output_stride}, batch {args.batch_size} x 3 x {args.size}^2, "
          f"{args.num_classes} classes, {device}")
    print_environment(env)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.size, args.size, generator=g)
    y = torch.randint(0, args.num_classes, (args.batch_size, args.size, args.size), generator=g)
    y[:, :4] = IGNORE
    torch.manual_seed(0)
    project_model = build_segmenter(cfg).to(device).train()
    bare_model = copy.deepcopy(project_model)
    loop = LoopConfig(epochs=10, batch_size=args.batch_size, lr=1e-3, weight_decay=1e-4, warmup_epochs=1,
                      amp=True, name="segment")
    stepper = Stepper(SegmentTask(project_model, 1.0, args.num_classes), project_model, loop, device, 100)
    batch = (x.to(device), y.to(device))
    count = {"step": 0}

    def project():
        stepper.step(batch, count["step"], 0)
        count["step"] += 1

    optimizer = torch.optim.AdamW(bare_model.parameters(), lr=1e-3, weight_decay=1e-4)

    def bare():
        loss = F.cross_entropy(bare_model(batch[0]), batch[1], ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        float(loss.detach())

    rows = {name: stats(t) for name, t in time_alternating({"project": project, "bare": bare},
                                                           args.repeats, args.warmup).items()}
    print()
    print_table(rows)
    r = ratio(rows, "project", "bare", TARGET)

    model = project_model.eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (*args.eval_size, 3), dtype=np.uint8) for _ in range(args.eval_images)]
    predict(model, images[0], args.scales, True, device)       # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for im in images:
        predict(model, im, args.scales, True, device, amp=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    ips = len(images) / (time.perf_counter() - t0)
    print(f"msc + flip evaluation ({args.scales}, {args.eval_size[0]}x{args.eval_size[1]} px): {ips:.2f} images/s")
    if args.json:
        env["loadavg_end"] = list(os.getloadavg())
        write_json(args.json, {"benchmark": "segment_step", "settings": vars(args), "device": str(device),
                               "environment": env, "variants": rows, "ratio": r, "eval_images_per_second": ips})
    return 0


if __name__ == "__main__":
    sys.exit(main())
