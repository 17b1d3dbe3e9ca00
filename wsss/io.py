"""Artifact I/O: atomic writes in formats that carry no code.

Everything the pipeline writes goes through here: a temporary file in the target's directory,
then ``os.replace`` so a reader (or an interrupted run) never sees half a file. Arrays are
``.npz`` read with ``allow_pickle=False``; weights are safetensors. Nothing here unpickles.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

import numpy as np

if TYPE_CHECKING:  # torch is imported where weights are handled, not by every reader
    import torch


class ArtifactError(RuntimeError):
    """An artifact is missing, unreadable or not what it should be."""


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; artifacts are ordinary files
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: not found (run the stage that makes it: dvc repro)") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON, not even UTF-8 text (binary data?): {exc}") from None


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Compressed ``.npz`` of plain numeric arrays (object arrays are refused)."""
    for name, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise TypeError(f"{path}: array '{name}' has dtype object, which would need pickle")
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` without pickle; a pickled or corrupt file is an error."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ArtifactError(f"{path}: not found") from None
    except ValueError as exc:  # object arrays: numpy refuses to unpickle
        raise ArtifactError(f"{path}: refused, it holds pickled objects ({exc})") from None
    except Exception as exc:  # zipfile / format errors
        raise ArtifactError(f"{path}: not a readable .npz archive ({exc})") from None


def save_weights(path: str | Path, state: Mapping[str, "torch.Tensor"], metadata: Mapping[str, str] | None = None) -> None:
    """Save a state dict as safetensors (contiguous CPU tensors; shared storage is copied)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata or {}))


def load_weights(path: str | Path) -> dict[str, "torch.Tensor"]:
    """Load a state dict safely: safetensors, or a torch file with ``weights_only=True``."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:
            raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(
            f"{path}: refused: not loadable with weights_only=True (a pickle with code, or corrupt): {exc}"
        ) from None
    if not isinstance(obj, Mapping):
        raise ArtifactError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return dict(obj)
