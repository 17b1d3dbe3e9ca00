"""What every stage entry point shares: one clear line on a known fault, and the data root."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from . import artifacts, distributed, runtime
from .config import ParamsError
from .data.manifest import resolve_root
from .data.voc import DataError
from .checkpoint import CheckpointError
from .io import ArtifactError
from .models.swin import BackboneError
from .training import TrainingError

KNOWN_FAULTS = (ParamsError, DataError, ArtifactError, BackboneError, TrainingError, CheckpointError)


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a known fault prints ``<stage>: error: <message>`` and exits 2."""
    start = time.perf_counter()
    try:
        main()
    except KNOWN_FAULTS as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"{name}: done in {time.perf_counter() - start:.1f} s", file=sys.stderr)


def launch_processes(nproc: int, key: str, module: str) -> None:
    """With ``nproc`` > 1 (the param ``key``), hand this stage over to torchrun running
    ``python -m module`` on that many processes (this call then does not return); else return
    and do the work here. More processes than GPUs is refused naming ``key``."""
    try:
        distributed.launch(nproc, module, runtime.device())
    except ValueError as exc:
        raise ParamsError(f"'{key}': {exc}") from None


def data_root(p: SimpleNamespace, project_dir: Path | None = None) -> Path:
    """The VOC2012 folder the run reads: the generated demo, or ``data.root`` resolved."""
    project_dir = Path.cwd() if project_dir is None else Path(project_dir)
    if p.data.root == "demo":
        return project_dir / artifacts.DEMO_ROOT
    return resolve_root(p.data.root, project_dir)
