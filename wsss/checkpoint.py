"""Resumable training: the checkpoint of a run in progress and the check that it belongs to this run.

``checkpoints/last.pt`` holds model, optimizer, scheduler and gradient-scaler states, the place
reached (epochs completed, batches of the next epoch done, global step) with the running loss
sums of that epoch, torch's RNG states, the last epoch summary, and a *fingerprint*: the
parameters that shape training and the data's fingerprint, as JSON. It is written atomically at
the end of every epoch (and every ``train.checkpoint_every`` steps), loaded with
``torch.load(weights_only=True)`` (tensors, numbers, strings only: nothing in it can run code),
and deleted once the trained model is saved, so only an interrupted run leaves one behind. DVC
keeps the folder across runs (``persist: true``).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch

from . import io


from .errors import CheckpointError  # noqa: F401


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} in the checkpoint, {vb!r} now")
    return out


class Checkpointer:
    """Save / load / clear the checkpoint of one training run identified by ``fingerprint``."""

    def __init__(self, path: Path, fingerprint: dict):
        self.path, self.fingerprint = Path(path), fingerprint

    def save(self, *, epoch: int, step: int, model, optimizer, scheduler, scaler, summary: dict,
             batch: int = 0, sums: dict | None = None) -> None:
        """``epoch`` epochs complete and ``batch`` batches of the next one (``sums``: their loss sums)."""
        state = {
            "fingerprint": json.dumps(self.fingerprint, sort_keys=True),
            "epoch": epoch, "batch": batch, "step": step, "summary": json.dumps(summary),
            "sums": json.dumps(sums or {}),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            # this process's GPU only: a run may resume on another number of GPUs
            "cuda_rng": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],
        }
        with io.atomic_path(self.path, suffix=".pt") as tmp:
            torch.save(state, tmp)

    def load(self) -> dict | None:
        """The checkpoint's state, or None when there is none. Refuses another run's checkpoint
        (naming what differs) and one that is not plain weights and numbers."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{self.path}: refused: not loadable with weights_only=True "
                                  f"(a pickle with code, or corrupt): {exc}") from None
        saved = json.loads(state.get("fingerprint", "{}"))
        differences = _diff(saved, self.fingerprint)
        if differences:
            raise CheckpointError(
                f"{self.path} was made by a run with other parameters or data ({'; '.join(differences[:5])}): "
                f"delete it to start afresh, or set train.resume: never")
        state["summary"] = json.loads(state["summary"])
        state["sums"] = json.loads(state.get("sums", "{}"))
        state.setdefault("batch", 0)
        return state

    def clear(self) -> None:
        """The run is complete: drop the checkpoint (the folder stays, DVC tracks it)."""
        self.path.unlink(missing_ok=True)
        io.write_json(self.path.parent / "status.json", {"checkpoint": None, "note": "the last run completed"})


def restore(state: dict, model, optimizer, scheduler, scaler) -> None:
    """Put a loaded checkpoint's states back into the training objects (and torch's RNG)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_rng"][0])


def rewind_live(plots_dir: Path, step: int) -> None:
    """Drop what DVCLive logged after a checkpoint taken at ``step``, before resuming from it.

    ``plots_dir`` holds DVCLive's ``<group>/<name>.tsv`` curves (a ``step`` column first). The
    per-step curves (``train/``) keep the rows before ``step``; the per-epoch ones (``epoch/``),
    logged at the step an epoch ends, keep those up to it: an end-of-epoch checkpoint is taken
    after its epoch's row. The resumed run logs the rest again, so no step appears twice.
    """
    for tsv in Path(plots_dir).glob("*/*.tsv"):
        lines = tsv.read_text().splitlines()
        last = step if tsv.parent.name == "epoch" else step - 1
        kept = lines[:1] + [ln for ln in lines[1:] if int(ln.split("\t", 1)[0]) <= last]
        if len(kept) < len(lines):
            io.write_text(tsv, "\n".join(kept) + "\n")



@contextmanager
def session(live_dir: Path, checkpoint: Checkpointer, resume_mode: str, main_process: bool = True):
    """One training run's ``(live, resume)``: the checkpoint, loaded when ``resume_mode`` is
    ``auto`` (else None), and a DVCLive logger writing under ``live_dir`` (None on every process
    but the first), its curves rewound to the checkpoint's step and counting on from it."""
    resume = checkpoint.load() if resume_mode == "auto" else None
    if not main_process:
        yield None, resume
        return
    from dvclive import Live

    if resume is not None:
        rewind_live(Path(live_dir) / "plots/metrics", resume["step"])
    with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, resume=resume is not None) as live:
        if resume is not None:
            live.step = resume["step"]      # DVCLive would go on from the last step it logged
        yield live, resume
