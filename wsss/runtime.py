"""Where code runs: device choice, seeding, and the versions a run records beside its metrics."""
from __future__ import annotations

import os
import platform
import random
from importlib import metadata

import numpy as np
import torch


def device() -> torch.device:
    """CUDA when present (``WSSS_DEVICE`` overrides, e.g. ``cpu``), else CPU."""
    forced = os.environ.get("WSSS_DEVICE")
    if forced:
        return torch.device(forced)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels where it has them."""
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
    """Versions of the project and the libraries its numbers depend on."""
    from . import __version__

    return {
        "wsss": __version__,
        "torch": torch.__version__,
        "timm": _version("timm"),
        "dvc": _version("dvc"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": str(device()),
        "cuda": torch.version.cuda or "none",
        "threads": torch.get_num_threads(),
    }
