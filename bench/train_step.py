"""Benchmark: one training step of the project against a bare timm Swin step, same batch, same process.

project  ``wsss.training.Stepper.step``, the very body of the training loop (``wsss.training.run``)
         over the classifier's task: ``model(x, y)`` under autocast (CUDA only),
         ``losses.total_loss``, the batch's health statistics, the finiteness check,
         ``zero_grad``, ``scaler.scale(loss).backward()``, ``scaler.step``, ``scaler.update``,
         ``schedule.step``. Not timed: data loading, tqdm, DVCLive.
bare     ``timm.create_model(backbone, num_classes=C)`` with its own linear head,
         ``F.multilabel_soft_margin_loss``, ``zero_grad``, ``backward``, ``AdamW.step``.

Both get the same random batch (x ~ N(0, 1), multi-hot labels), random weights and the same
drop-path rate. They are timed in turns (A, B, A, B, ...) after warm-up steps; the table gives
median / min / max seconds per step and the ratio of medians project / bare (target <= 1.10).

``--version v2`` measures V2 against bare (``ModelConfig(version="v2")``, nothing else changes);
add ``--compare-v1`` to time V1, V2 and bare in turns and also report V2 / V1.

Run from the project directory:  python bench/train_step.py [options]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import timm
import torch
import torch.nn.functional as F

from wsss.models import ModelConfig, build_model
from wsss.models.swin import SMALL_BASE, SMALL_CONFIGS
from wsss.classifier import ClassifierTask, TrainConfig
from wsss.training import Stepper

from _timing import environment, print_environment, print_table, ratio, stats, time_alternating, write_json

TARGET = 1.10  # project step / bare step, ratio of medians
TARGET_V2 = 1.15  # V2 step / V1 step (issue 3: the paper says HFF adds no significant cost)

# params.yaml's train section (demo: 480 train_aug images / batch 16 = 30 steps per epoch). The
# timing does not depend on these values; they only keep the optimizer and schedule as in a run.
TRAIN = TrainConfig(epochs=30, batch_size=16, lr=5e-4, head_lr_mult=10.0, weight_decay=0.05,
                    warmup_epochs=2, min_lr_ratio=0.01, num_workers=0, amp=True, seed=0)
STEPS_PER_EPOCH = 30


class ProjectStep:
    """One iteration of the training loop: :class:`wsss.training.Stepper` (the body of
    ``wsss.training.run``) over the classifier's task, as the train stage builds it."""

    def __init__(self, version: str, args: argparse.Namespace, cfg: TrainConfig, device: torch.device,
                 x: torch.Tensor, y: torch.Tensor):
        model_cfg = ModelConfig(version=version, backbone=args.backbone, num_classes=args.num_classes,
                                img_size=args.size, drop_path_rate=args.drop_path_rate)
        self.model = build_model(model_cfg)
        self.model.to(device).train()
        self.stepper = Stepper(ClassifierTask(self.model, cfg), self.model, cfg.loop(), device, STEPS_PER_EPOCH)
        self.batch, self.step = (x, y, torch.arange(len(x))), 0

    def __call__(self) -> float:
        values = self.stepper.step(self.batch, self.step, self.step // STEPS_PER_EPOCH)
        self.step += 1
        return values["total"]


class BareStep:
    """timm Swin with its own linear head, multi-label soft margin loss, AdamW."""

    def __init__(self, args: argparse.Namespace, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor):
        name, extra = args.backbone, {}
        if name in SMALL_CONFIGS:  # the project's CPU demo backbones are timm Swin-T variants
            name, extra = SMALL_BASE, SMALL_CONFIGS[args.backbone]
        self.model = timm.create_model(name, pretrained=False, num_classes=args.num_classes, img_size=args.size,
                                       drop_path_rate=args.drop_path_rate, **extra).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.x, self.y = x, y

    def __call__(self) -> float:
        logits = self.model(self.x)
        loss = F.multilabel_soft_margin_loss(logits, self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def random_batch(batch: int, size: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ~ N(0, 1) (normalised scale) and 1-3 positive classes per image, as float multi-hot."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = torch.zeros(batch, num_classes)
    for i in range(batch):
        k = int(torch.randint(1, 4, (1,), generator=g))
        y[i, torch.randperm(num_classes, generator=g)[:k]] = 1.0
    return x, y


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--version", default="v1", help="model.version of the project's model (v1, v2)")
    ap.add_argument("--compare-v1", action="store_true",
                    help="with --version v2: also time v1, in turns with v2 and bare, and report v2 / v1")
    ap.add_argument("--backbone", default="swin_tiny_patch4_window7_224",
                    help="a timm Swin name, or swin_nano / swin_micro (fast smoke tests)")
    ap.add_argument("--batch-size", type=int, default=16, help="images per step")
    ap.add_argument("--size", type=int, default=224, help="square input size (the training crop)")
    ap.add_argument("--num-classes", type=int, default=20, help="foreground classes C")
    ap.add_argument("--drop-path-rate", type=float, default=0.1, help="for both models")
    ap.add_argument("--repeats", type=int, default=7, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: os.cpu_count())")
    ap.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch")
    ap.add_argument("--json", metavar="PATH", help="write the settings, timings and ratios here")
    args = ap.parse_args(argv)
    if args.compare_v1 and args.version == "v1":
        ap.error("--compare-v1 compares v1 with another --version (e.g. --version v2)")
    if args.repeats < 1 or args.warmup < 0:
        ap.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count())
    device = torch.device("cpu")
    cfg = dataclasses.replace(TRAIN, batch_size=args.batch_size, seed=args.seed)
    env = environment()
    print(f"train step: {args.backbone}, batch {args.batch_size} x 3 x {args.size} x {args.size}, "
          f"{args.num_classes} classes, drop_path_rate {args.drop_path_rate}, {device}; "
          f"{args.warmup} warm-up + {args.repeats} timed steps per variant, in turns")
    print_environment(env)

    x, y = random_batch(args.batch_size, args.size, args.num_classes, args.seed)
    versions = ["v1", args.version] if args.compare_v1 else [args.version]
    variants = {}
    for version in versions:
        torch.manual_seed(args.seed)
        try:
            variants[f"project {version}"] = ProjectStep(version, args, cfg, device, x, y)
        except (ValueError, NotImplementedError) as exc:
            print(f"error: wsss.models.build_model cannot build model version '{version}': {exc}\n"
                  f"nothing was measured; implement '{version}' in wsss/models/ first, or use --version v1",
                  file=sys.stderr)
            return 2
    torch.manual_seed(args.seed)
    variants["bare timm"] = BareStep(args, cfg, x, y)

    times = time_alternating(variants, args.repeats, args.warmup)
    rows = {name: stats(t) for name, t in times.items()}
    print()
    print_table(rows)
    main_name = f"project {args.version}"
    ratios = [ratio(rows, main_name, "bare timm", TARGET if args.version == "v1" else None)]
    if args.compare_v1:
        ratios.append(ratio(rows, "project v1", "bare timm", TARGET))
        ratios.append(ratio(rows, main_name, "project v1", TARGET_V2))

    if args.json:
        env["loadavg_end"] = list(os.getloadavg())
        write_json(args.json, {"benchmark": "train_step", "settings": vars(args), "train_config":
                               dataclasses.asdict(cfg), "device": str(device), "environment": env,
                               "variants": rows, "ratios": ratios})
    return 0


if __name__ == "__main__":
    sys.exit(main())
