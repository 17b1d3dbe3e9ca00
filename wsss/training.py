"""The one training loop: every model this project trains (the SWTformer classifier, IRN's
relation net, the segmenter) goes through :func:`run`.

What the loop owns, for all of them: the sample order (:class:`EpochShuffle`, from the seed and
the epoch), the optimizer and its learning-rate schedule (:class:`LoopConfig`), AMP with a
gradient scaler on CUDA (``enabled=``: the same code runs on the CPU, nothing else branches on
the device), DDP when the stage runs under torchrun (:mod:`wsss.distributed`), a progress bar,
DVCLive logging (``train/loss_*`` and ``train/lr`` per step, ``epoch/*`` per epoch), the stop on a
non-finite loss, and checkpoints that resume a killed run to the same weights
(:class:`wsss.checkpoint.Checkpointer`).

What a model brings is a :class:`Task`: its parameter groups, one batch's loss terms (and the
statistics that tell a run went wrong), what to check at the end of an epoch, and its validation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from . import distributed
from .checkpoint import Checkpointer, restore
from .errors import TrainingError  # noqa: F401  (raised here; re-exported for callers)


@dataclass(frozen=True)
class LoopConfig:
    """How a model is optimised. ``optimizer``: ``adamw`` or ``sgd`` (with ``momentum``);
    ``schedule``: ``cosine`` (linear warm-up over ``warmup_epochs``, then cosine down to
    ``min_lr_ratio``) or ``poly`` (``(1 - step / total) ** 0.9``, DeepLab's and IRN's)."""

    epochs: int
    batch_size: int                 # the global batch (split over the DDP processes)
    lr: float
    weight_decay: float
    optimizer: str = "adamw"
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.01
    num_workers: int = 0
    amp: bool = True
    seed: int = 0
    checkpoint_every: int = 0       # also checkpoint every this many steps within an epoch (0: epoch ends only)
    name: str = "train"             # what the progress bar and the messages call this run


class Task:
    """What one model brings to :func:`run`. ``model`` is what is trained, wrapped by DDP and
    checkpointed; the methods below have defaults a simple model can keep."""

    model: nn.Module
    nan_hint: str = "lower the learning rate or check the data"

    def param_groups(self, cfg: LoopConfig) -> list[dict]:
        """The optimizer's groups (default: every trainable parameter at ``cfg.lr``, no decay on
        norms and biases)."""
        return param_groups(self.model, cfg.lr, 1.0, cfg.weight_decay, new_params=[])

    def forward(self, net: nn.Module, batch, device: torch.device) -> tuple[dict, tuple]:
        """One batch from the loader -> (the model's output, the targets :meth:`loss` needs), run
        under autocast. ``net`` is the model or its DDP wrapper: call it, not ``model``."""
        raise NotImplementedError

    def loss(self, out: dict, targets: tuple,
             epochs: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(loss terms with their sum as ``total``, health statistics), each 0-d, computed outside
        autocast; ``epochs``: the fractional number of epochs done (for warm-ups of loss terms)."""
        raise NotImplementedError

    def end_epoch(self, epoch: int, means: dict[str, float]) -> tuple[dict, str | None]:
        """After each epoch, in every process, with the epoch's mean terms and ``health_*``:
        (what the summary records, a warning to print or None)."""
        return {}, None

    def restore(self, summary: dict) -> None:
        """A run resumes: rebuild what :meth:`end_epoch` keeps from the checkpoint's summary."""

    def validate(self, device: torch.device) -> dict[str, float]:
        """The first process, after each epoch: numbers logged as ``epoch/val_<name>``."""
        return {}


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


def param_groups(model: nn.Module, lr: float, head_lr_mult: float, weight_decay: float,
                 new_params=None) -> list[dict]:
    """Pre-trained layers at ``lr``, new layers (``new_params``; default the model's
    ``new_parameters()``, when it has that method) at ``lr * head_lr_mult``; no decay on norms,
    biases and position tables. Frozen parameters are left out."""
    if new_params is None:
        new_params = model.new_parameters() if hasattr(model, "new_parameters") else []
    new_ids = {id(p) for p in new_params}
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


def poly(total_steps: int, power: float = 0.9) -> Callable[[int], float]:
    """LR factor per step: ``(1 - step / total) ** power`` (DeepLab's and IRN's schedule)."""
    return lambda step: max(0.0, 1 - step / total_steps) ** power


def make_optimizer(groups: list[dict], cfg: LoopConfig, steps_per_epoch: int):
    """(optimizer, LambdaLR schedule) of ``cfg`` over ``groups``."""
    if cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    elif cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    else:
        raise ValueError(f"{cfg.name}: optimizer '{cfg.optimizer}' is not adamw or sgd")
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "cosine":
        factor = warmup_cosine(total, round(cfg.warmup_epochs * steps_per_epoch), cfg.min_lr_ratio)
    elif cfg.schedule == "poly":
        factor = poly(total)
    else:
        raise ValueError(f"{cfg.name}: schedule '{cfg.schedule}' is not cosine or poly")
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Stepper:
    """One optimisation step of ``task`` (its optimizer, schedule and gradient scaler): the body
    of :func:`run`'s loop, and what ``bench/`` times."""

    def __init__(self, task: Task, net: nn.Module, cfg: LoopConfig, device: torch.device, steps_per_epoch: int):
        self.task, self.net, self.cfg, self.device = task, net, cfg, device
        self.steps_per_epoch = steps_per_epoch
        self.optimizer, self.schedule = make_optimizer(task.param_groups(cfg), cfg, steps_per_epoch)
        self.use_amp = cfg.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.use_amp)

    def step(self, batch, step: int, epoch: int) -> dict[str, float]:
        """Train on one batch (step ``step`` of the run, in epoch ``epoch``, 0-based); return the
        global batch's loss terms and ``health_*`` statistics (the processes' mean)."""
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            out, targets = self.task.forward(self.net, batch, self.device)
        terms, health = self.task.loss(out, targets, step / self.steps_per_epoch)
        # the global batch's terms and health (the mean of the processes' shares): every process
        # logs and checks the same numbers, so a NaN on one of them stops all of them together
        names = list(terms) + [f"health_{k}" for k in health]
        stacked = torch.stack([v.detach().float() for v in (*terms.values(), *health.values())])
        values = dict(zip(names, distributed.mean(stacked).tolist()))
        if not math.isfinite(values["total"]):
            hint = self.task.nan_hint
            raise TrainingError(
                f"{self.cfg.name}: loss is {values['total']} at epoch {epoch + 1}, step {step + 1} "
                f"(lr {self.optimizer.param_groups[0]['lr']:.3g}): training stopped. {hint[0].upper()}{hint[1:]}.")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["total"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        return values


def run(task: Task, train_set: Dataset, cfg: LoopConfig, device: torch.device, live=None,
        checkpoint: Checkpointer | None = None, resume: dict | None = None) -> dict:
    """Train ``task.model`` in place; return the last epoch's summary (epoch, mean loss, lr, the
    mean of each loss term, health, what :meth:`Task.end_epoch` and :meth:`Task.validate` add).

    ``live`` is a DVCLive ``Live`` (or None): every step logs each loss term (``train/loss_*``),
    the lr and the batch's health statistics (``train/health_*``); every epoch their means
    (``epoch/loss``, ``epoch/health_*``) and the validation (``epoch/val_*``). ``checkpoint``
    saves the state at the end of every epoch (and every ``cfg.checkpoint_every`` steps within
    one); ``resume`` (a loaded checkpoint) continues from the epoch and batch it reached: with
    the sample order and augmentation drawn from (seed, epoch, index) and torch's RNG restored,
    the result is the same as an uninterrupted run's.
    """
    model = task.model
    model.to(device).train()
    rank, world = distributed.rank_and_world()
    if cfg.batch_size % world:
        raise TrainingError(f"{cfg.name}: batch_size={cfg.batch_size} (the global batch) does not split "
                            f"over {world} processes")
    sampler = EpochShuffle(len(train_set), cfg.seed, cfg.batch_size, rank, world)
    # the loader's own generator: starting an epoch's iterator (which draws worker seeds) leaves
    # torch's global RNG (drop path) alone, so a run resumed within an epoch stays on its stream
    loader = DataLoader(train_set, batch_size=cfg.batch_size // world, sampler=sampler, drop_last=True,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed))
    net = distributed.wrap(model, device)   # DDP when several processes: gradients averaged over all
    steps_per_epoch = len(loader)     # (sampler at skip 0)
    if steps_per_epoch == 0:
        raise TrainingError(f"{cfg.name}: the training split has {len(train_set)} images, fewer than one "
                            f"batch of batch_size={cfg.batch_size}")
    stepper = Stepper(task, net, cfg, device, steps_per_epoch)
    optimizer, schedule, scaler = stepper.optimizer, stepper.schedule, stepper.scaler
    summary: dict = {}
    step, first_epoch, first_batch, partial = 0, 0, 0, {}
    if resume is not None:
        restore(resume, model, optimizer, schedule, scaler)
        step, first_epoch, summary = resume["step"], resume["epoch"], resume["summary"]
        first_batch, partial = resume["batch"], resume["sums"]
        task.restore(summary)
        tqdm.write(f"{cfg.name}: resuming at epoch {first_epoch + 1}, batch {first_batch} (step {step})")
    if rank > 0:
        # a random stream of its own for drop path (all processes were seeded alike, and a resumed
        # run restored the first process's state); the first keeps the one-process stream. DDP
        # starts every process from the first one's weights, so the model is the same everywhere.
        torch.manual_seed(cfg.seed * 1_000_003 + rank * 7_919 + step)

    def save(epoch_done: int, batch: int, sums: dict) -> None:
        checkpoint.save(epoch=epoch_done, batch=batch, step=step, sums=sums, model=model, optimizer=optimizer,
                        scheduler=schedule, scaler=scaler, summary=summary)

    lr = optimizer.param_groups[0]["lr"]
    for epoch in range(first_epoch, cfg.epochs):
        skip = first_batch if epoch == first_epoch else 0
        sampler.set_epoch(epoch, skip)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        sums: dict[str, float] = dict(partial) if epoch == first_epoch else {}
        bar = tqdm(loader, desc=f"{cfg.name} epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False,
                   disable=rank > 0, initial=skip, total=steps_per_epoch)
        for batch, item in enumerate(bar, start=skip + 1):
            values = stepper.step(item, step, epoch)
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
        extra, warning = task.end_epoch(epoch + 1, means)
        terms = {k: v for k, v in means.items() if k != "total" and not k.startswith("health_")}
        summary = {"epoch": epoch + 1, "loss": means["total"], "lr": lr, "terms": terms, "health": health, **extra}
        if rank > 0:     # logging, validation and checkpoints are the first process's
            continue
        if warning:
            tqdm.write(warning)
        validation = task.validate(device)
        summary.update(validation)
        shown = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
        shown.update({k: v for k, v in health.items() if k in ("seed_bg", "rcam_bg")})
        tqdm.write(f"{cfg.name} " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in shown.items()))
        if live is not None:
            live.log_metric("epoch/loss", summary["loss"], plot=True)
            for k, v in terms.items():
                live.log_metric(f"epoch/loss_{k}", v)
            for k, v in health.items():
                live.log_metric(f"epoch/health_{k}", v)
            for k, v in validation.items():
                live.log_metric(f"epoch/val_{k}", v)
        if checkpoint is not None:
            save(epoch + 1, 0, {})
    return summary
