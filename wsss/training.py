"""Classifier training: AdamW, warm-up + cosine, AMP on CUDA, DVCLive logging, tqdm progress.

The same code runs on CPU and CUDA: autocast and the gradient scaler are switched on only where
they exist (``enabled=``), nothing else branches on the device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from . import diagnostics, distributed, losses, metrics
from .checkpoint import Checkpointer, restore
from .data.datasets import box_mask


from .errors import TrainingError  # noqa: F401


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    head_lr_mult: float
    weight_decay: float
    warmup_epochs: float
    min_lr_ratio: float
    num_workers: int
    amp: bool
    seed: int
    loss: losses.LossWeights = losses.LossWeights()
    checkpoint_every: int = 0    # also checkpoint every this many steps within an epoch (0: epoch ends only)
    collapse_floor: float = 0.02  # V2: an epoch whose mean background seed share is below this (or above 1 - this) is collapsed


class EpochShuffle(Sampler[int]):
    """A fresh permutation each epoch from ``(seed, epoch)``: the order repeats run after run.

    Distributed: the permutation is cut into global batches of ``global_batch`` and process
    ``rank`` of ``world`` takes its contiguous share of each (batches of global_batch / world),
    so N processes see together exactly the batches one process sees; the incomplete last
    global batch is dropped (as one process's ``drop_last``). ``skip`` global batches at the start
    of the epoch are left out: a run resumed within an epoch continues with the batch it was at.
    """

    def __init__(self, n: int, seed: int, global_batch: int = 1, rank: int = 0, world: int = 1):
        self.n, self.seed, self.epoch, self.skip = n, seed, 0, 0
        self.global_batch, self.rank, self.world = global_batch, rank, world
        self.share = global_batch // world

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        for k in range(self.skip, self.n // self.global_batch):
            start = k * self.global_batch + self.rank * self.share
            yield from order[start:start + self.share]

    def __len__(self) -> int:
        return max(0, self.n // self.global_batch - self.skip) * self.share


def param_groups(model: nn.Module, lr: float, head_lr_mult: float, weight_decay: float) -> list[dict]:
    """Backbone at ``lr``, new layers at ``lr * head_lr_mult``; no decay on norms, biases, tables."""
    new_ids = {id(p) for p in model.new_parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or "relative_position_bias_table" in name
        groups.setdefault((id(p) in new_ids, no_decay), []).append(p)
    out = []
    for (is_new, no_decay), params in sorted(groups.items()):
        out.append({"params": params, "lr": lr * (head_lr_mult if is_new else 1.0),
                    "weight_decay": 0.0 if no_decay else weight_decay,
                    "name": ("new" if is_new else "backbone") + ("_no_decay" if no_decay else "")})
    return out


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """LR factor per step: linear warm-up from ~0 to 1, then cosine down to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@torch.no_grad()
def predict_scores(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int,
                   num_workers: int = 0, amp: bool = False, desc: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """Class logits (N, C) and labels (N, C) over a :class:`WholeImages` data set, in its order."""
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    all_scores, all_labels = [], []
    use_amp = amp and device.type == "cuda"
    for x, y, _ in tqdm(loader, desc=desc, leave=False, unit="batch"):
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(x.to(device, non_blocking=True))["logits"]
        all_scores.append(logits.float().cpu())
        all_labels.append(y)
    model.train(was_training)
    return torch.cat(all_scores).numpy(), torch.cat(all_labels).numpy()


def fit(model: nn.Module, train_set: Dataset, val_set: Dataset | None, cfg: TrainConfig,
        device: torch.device, live=None, cls_batch_size: int | None = None,
        checkpoint: Checkpointer | None = None, resume: dict | None = None) -> dict:
    """Train ``model`` in place; return the last epoch's summary (loss, lr, val mAP).

    ``live`` is a DVCLive ``Live`` (or None): every step logs each loss term, the lr and the
    batch's health statistics (:mod:`wsss.diagnostics`: for V2 the background shares of the seeds
    and of the R-CAM's argmax, the CAM on and off the seeds), every epoch logs the epoch's
    means of those, and the validation mAP. A V2 epoch whose background (or foreground) seeds all
    but vanished (:class:`wsss.diagnostics.CollapseWatch`) prints a warning; the summary's
    ``collapse`` records which epochs. ``checkpoint`` saves the state at
    the end of every epoch (and every ``cfg.checkpoint_every`` steps within one); ``resume`` (a
    loaded checkpoint) continues from the epoch and batch it reached: with the sample order and
    augmentation drawn from (seed, epoch, index) and torch's RNG restored, the result is the
    same as an uninterrupted run's.
    """
    model.to(device).train()
    rank, world = distributed.rank_and_world()
    if cfg.batch_size % world:
        raise TrainingError(f"train.batch_size={cfg.batch_size} (the global batch) does not split over {world} processes")
    sampler = EpochShuffle(len(train_set), cfg.seed, cfg.batch_size, rank, world)
    # the loader's own generator: starting an epoch's iterator (which draws worker seeds) leaves
    # torch's global RNG (drop path) alone, so a run resumed within an epoch stays on its stream
    loader = DataLoader(train_set, batch_size=cfg.batch_size // world, sampler=sampler, drop_last=True,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed))
    net = distributed.wrap(model, device)   # DDP when several processes: gradients averaged over all
    steps_per_epoch = len(loader)     # (sampler at skip 0)
    if steps_per_epoch == 0:
        raise TrainingError(f"the training split has {len(train_set)} images, fewer than one batch "
                            f"of train.batch_size={cfg.batch_size}")
    optimizer = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.head_lr_mult, cfg.weight_decay), lr=cfg.lr)
    total = cfg.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total, round(cfg.warmup_epochs * steps_per_epoch), cfg.min_lr_ratio))
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    summary: dict = {}
    step, first_epoch, first_batch, partial = 0, 0, 0, {}
    watch = diagnostics.CollapseWatch(cfg.collapse_floor)
    if resume is not None:
        restore(resume, model, optimizer, schedule, scaler)
        step, first_epoch, summary = resume["step"], resume["epoch"], resume["summary"]
        first_batch, partial = resume["batch"], resume["sums"]
        watch = diagnostics.CollapseWatch.restore(cfg.collapse_floor, summary.get("collapse"))
        tqdm.write(f"resuming at epoch {first_epoch + 1}, batch {first_batch} (step {step})")
    if rank > 0:
        # a random stream of its own for drop path (all processes were seeded alike, and a resumed
        # run restored the first process's state); the first keeps the one-process stream. DDP
        # starts every process from the first one's weights, so the model is the same everywhere.
        torch.manual_seed(cfg.seed * 1_000_003 + rank * 7_919 + step)

    def save(epoch_done: int, batch: int, sums: dict) -> None:
        checkpoint.save(epoch=epoch_done, batch=batch, step=step, sums=sums, model=model, optimizer=optimizer,
                        scheduler=schedule, scaler=scaler, summary=summary)

    for epoch in range(first_epoch, cfg.epochs):
        skip = first_batch if epoch == first_epoch else 0
        sampler.set_epoch(epoch, skip)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        sums: dict[str, float] = dict(partial) if epoch == first_epoch else {}
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False, disable=rank > 0,
                   initial=skip, total=steps_per_epoch)
        for batch, item in enumerate(bar, start=skip + 1):
            # (image, labels, index) and, from crops that may be padded, the image's box in the crop
            x, y = item[0].to(device, non_blocking=True), item[1].to(device, non_blocking=True)
            valid = box_mask(item[3].to(device), x.shape[-2], x.shape[-1]) if len(item) > 3 else None
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                out = net(x, y) if valid is None else net(x, y, valid=valid)
            terms = losses.total_loss(out, y, cfg.loss.at(step / steps_per_epoch))
            loss = terms["total"]
            health = diagnostics.batch_health(out, y, valid)
            # the global batch's terms and health (the mean of the processes' shares): every process
            # logs and checks the same numbers, so a NaN on one of them stops all of them together
            names = list(terms) + [f"health_{k}" for k in health]
            stacked = torch.stack([v.detach().float() for v in (*terms.values(), *health.values())])
            values = dict(zip(names, distributed.mean(stacked).tolist()))
            if not math.isfinite(values["total"]):
                raise TrainingError(
                    f"loss is {values['total']} at epoch {epoch + 1}, step {step + 1} "
                    f"(lr {optimizer.param_groups[0]['lr']:.3g}): training stopped. Lower train.lr, "
                    f"check the data, or turn train.amp off.")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            step += 1
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            lr = optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{values['total']:.4f}", lr=f"{lr:.2e}")
            if live is not None:
                for k, v in values.items():
                    live.log_metric(f"train/{k}" if k.startswith("health_") else f"train/loss_{k}", v)
                live.log_metric("train/lr", lr)
                live.next_step()
            if (checkpoint is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0
                    and batch < steps_per_epoch):
                save(epoch, batch, sums)     # within the epoch (its end is saved below, after validation)
        means = {k: v / steps_per_epoch for k, v in sums.items()}
        health = {k.removeprefix("health_"): v for k, v in means.items() if k.startswith("health_")}
        warning = watch.update(epoch + 1, health["seed_bg"]) if "seed_bg" in health else None
        summary = {"epoch": epoch + 1, "loss": means["total"], "lr": lr, "health": health}
        if watch.shares:
            summary["collapse"] = watch.report()
        if rank > 0:     # logging, validation and checkpoints are the first process's
            continue
        if warning:
            tqdm.write(warning)
        if val_set is not None:
            s, y = predict_scores(model, val_set, device, cls_batch_size or cfg.batch_size, cfg.num_workers,
                                  cfg.amp, desc="val mAP")
            m = metrics.mean_ap(s, y)
            summary.update(map_per_image=m["map_per_image"], map_per_class=m["map_per_class"])
        shown = {k: v for k, v in summary.items() if k not in ("health", "collapse")}
        shown.update({k: v for k, v in health.items() if k in ("seed_bg", "rcam_bg")})
        tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
        if live is not None:
            live.log_metric("epoch/loss", summary["loss"], plot=True)
            for k, v in health.items():
                live.log_metric(f"epoch/health_{k}", v)
            for k in ("map_per_image", "map_per_class"):
                if k in summary:
                    live.log_metric(f"epoch/val_{k}", summary[k])
        if checkpoint is not None:
            save(epoch + 1, 0, {})
    return summary
