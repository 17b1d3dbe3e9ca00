"""Several processes (torchrun): process-group set-up, DDP wrapping, who does the single-copy work.

``torchrun --nproc_per_node=N -m stages.train`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``;
:func:`setup` then joins the group (NCCL on CUDA, gloo on CPU) and gives each process its
device. One process (``WORLD_SIZE`` unset or 1) is the plain single-device run: nothing here
changes it.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn

from .errors import ParamsError

T = TypeVar("T")


def launch(nproc: int, module: str, device: torch.device) -> None:
    """Run ``python -m module`` on ``nproc`` processes under torchrun, in this process, and exit
    with their outcome.

    Returns (doing nothing) when this process is to do the work itself: ``nproc`` is 1, or
    torchrun already started it. Otherwise it does not return: torchrun's agent runs here, stops
    the workers on a signal (Ctrl-C, a scheduler's SIGTERM) and this process exits 128 + the
    signal's number, after the first worker printed the stage's one stop line; a failed worker's
    exit code is the stage's (the worker printed its one-line error). On CUDA every process takes
    a GPU of its own, so ``nproc`` may not exceed their number (ValueError).
    """
    if nproc <= 1 or "WORLD_SIZE" in os.environ:
        return
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise ValueError(f"{nproc} processes but {torch.cuda.device_count()} CUDA devices")
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = ["--standalone", f"--nproc_per_node={nproc}", "-m", module]
    print(f"launching {nproc} processes: torchrun {' '.join(args)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    for name in list(logging.root.manager.loggerDict):   # the agent's shutdown chatter: the workers say it
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(get_args_parser().parse_args(args))
    except SignalException as exc:     # Ctrl-C, SIGTERM: the workers stopped, the first said so
        raise SystemExit(128 + int(exc.sigval)) from None
    except ChildFailedError as exc:    # a worker failed, and said why in one line of its own
        code = exc.get_first_failure()[1].exitcode
        raise SystemExit(code if code > 0 else 128 - code) from None
    raise SystemExit(0)


def launch_stage(nproc: int, key: str, module: str, device: torch.device) -> None:
    """:func:`launch` for a stage whose parameter ``key`` holds ``nproc``: more processes than
    GPUs is a :class:`ParamsError` naming ``key``."""
    try:
        launch(nproc, module, device)
    except ValueError as exc:
        raise ParamsError(f"'{key}': {exc}") from None


def setup(default_device: torch.device) -> torch.device:
    """Join the process group if torchrun started several processes; this process's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return default_device
    if default_device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return torch.device("cuda", local)
    dist.init_process_group("gloo")
    return default_device


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def is_main() -> bool:
    return rank_and_world()[0] == 0


def shard(items: Sequence[T]) -> list[T]:
    """This process's share of ``items``: every world-th item from its rank (all of them alone)."""
    rank, world = rank_and_world()
    return list(items[rank::world])


def mean(t: torch.Tensor) -> torch.Tensor:
    """``t`` averaged over the processes (in place, and returned); ``t`` itself when alone."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` in a process group, else ``model`` itself.
    Unused parameters are allowed: V2's fusion branch gets no gradient when its losses weigh 0."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
