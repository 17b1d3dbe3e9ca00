"""Where code runs: device choice, seeding, and the versions a run records beside its metrics."""
from __future__ import annotations

import os
import platform
import random
from importlib import metadata

import sys
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch loads in the stages that compute with it; evaluate records versions without it
    import torch


def device() -> "torch.device":
    """CUDA when present (``WSSS_DEVICE`` overrides, e.g. ``cpu``), else CPU."""
    import torch

    forced = os.environ.get("WSSS_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels where it has them."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict:
    """Versions of the project and the libraries its numbers depend on; where this process
    computes with torch (it is loaded), also its device, CUDA version and thread count."""
    from . import __version__

    out = {
        "wsss": __version__,
        "torch": _version("torch"),
        "timm": _version("timm"),
        "dvc": _version("dvc"),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        # the CPU's vector instructions pick torch's kernels, whose float sums differ: results are
        # bit-identical on one machine, not across machines (README "Results on the demo set")
        out.update({"device": str(device()), "cuda": torch.version.cuda or "none",
                    "threads": torch.get_num_threads(), "cpu": _cpu_model(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability()})
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "unknown")
    except OSError:
        return platform.processor() or "unknown"


def bounded_map(fn, items, workers: int):
    """``fn`` over ``items`` in ``workers`` processes (in this process when ``workers`` <= 1),
    yielding results as they finish (in any order), with at most twice ``workers`` tasks in
    flight: memory does not grow with the number of items, however slow the consumer."""
    if workers <= 1:
        yield from map(fn, items)
        return
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    items = iter(items)
    with ProcessPoolExecutor(workers) as pool:
        pending = set()
        try:
            for item in items:
                pending.add(pool.submit(fn, item))
                if len(pending) >= 2 * workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()
