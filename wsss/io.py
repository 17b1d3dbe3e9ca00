"""Artifact I/O: atomic writes in formats that carry no code.

Everything the pipeline writes goes through here: a temporary file in the target's directory,
then ``os.replace`` so a reader (or an interrupted run) never sees half a file. Arrays are
``.npz`` read with ``allow_pickle=False``; weights are safetensors. Nothing here unpickles.
"""
from __future__ import annotations

import contextlib
import errno
import io as _io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

import numpy as np

if TYPE_CHECKING:  # torch is imported where weights are handled, not by every reader
    import torch


from .errors import ArtifactError  # noqa: F401


#: how a temporary file is made: new, never through a link, mode 0666 less the umask (mkstemp's
#: 0600 would make artifacts unlike ordinary files)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
#: The temporary files of :func:`atomic_path` blocks in progress, with the process that made each
#: (a forked worker holds a copy of the table and removes only its own).
_temporaries: dict[Path, int] = {}


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    However the block ends (an error, Ctrl-C, a stop signal: see :func:`wsss.cli.run_stage`)
    the temporary file is removed and ``path`` keeps its previous version. A full disk (or
    quota) is an :class:`ArtifactError` naming ``path``.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            # named (and on the table) before it exists: a signal at any point leaves no file unknown
            tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}{suffix or '.tmp'}"
            _temporaries[tmp] = os.getpid()
            try:
                os.close(os.open(tmp, _CREATE, 0o666))
                break
            except FileExistsError:
                _temporaries.pop(tmp, None)
                tmp = None
        else:
            raise FileExistsError(f"{path}: no free temporary name beside it")
        yield tmp
        os.replace(tmp, path)
    except Exception as exc:
        # checked before the partial file goes: a writer that does not say ENOSPC (torch.save)
        # still leaves the disk full at this point
        if not isinstance(exc, ArtifactError) and out_of_space(exc, path.parent):
            raise ArtifactError(out_of_space_message(exc, path)) from None
        raise
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            _temporaries.pop(tmp, None)


def remove_temporaries() -> None:
    """Remove this process's temporary files of :func:`atomic_path` blocks still in progress:
    for a process about to end without unwinding (``os._exit``), e.g. a worker told to stop."""
    pid = os.getpid()
    for tmp, owner in list(_temporaries.items()):
        if owner == pid:
            with contextlib.suppress(OSError):
                tmp.unlink()
            _temporaries.pop(tmp, None)


_NO_SPACE = {errno.ENOSPC: "no space left on device", getattr(errno, "EDQUOT", -1): "disk quota exceeded"}
_NO_SPACE_TEXT = ("no space left on device", "disk quota exceeded", "os error 28")
_LOW_SPACE = 1 << 20   # bytes: a failed write with less than this left is put down to the full disk


def out_of_space(exc: BaseException, directory: str | Path | None = None) -> bool:
    """Whether ``exc`` comes from a full disk (or quota): ENOSPC / EDQUOT, a writer's message
    saying so (safetensors), or an I/O-ish failure (torch.save's "unexpected pos") while
    ``directory``'s file system has next to nothing left."""
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return True
    if any(text in str(exc).lower() for text in _NO_SPACE_TEXT):
        return True
    if directory is not None and isinstance(exc, (OSError, RuntimeError)):
        try:
            st = os.statvfs(directory)
        except (OSError, AttributeError):   # AttributeError: no statvfs (Windows)
            return False
        return st.f_bavail * st.f_frsize < _LOW_SPACE
    return False


def out_of_space_message(exc: BaseException, path: str | Path | None = None) -> str:
    """One line: what ran out, the file being written (relative to the working directory when
    inside it), and what to do."""
    what = _NO_SPACE.get(getattr(exc, "errno", None), None)
    if what is None:
        what = "disk quota exceeded" if "quota" in str(exc).lower() else "no space left on device"
    path = path if path is not None else getattr(exc, "filename", None)
    where = ""
    if path is not None:
        path = Path(os.fsdecode(path))
        with contextlib.suppress(ValueError):
            path = path.absolute().relative_to(Path.cwd())
        where = f" writing {path}"
    return f"{what}{where} (free some space or move the cache: dvc cache dir)"


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


def npz_bytes(where: str | Path, **arrays: np.ndarray) -> bytes:
    """A compressed ``.npz`` of plain numeric arrays, as bytes (object arrays are refused;
    ``where`` names the file or pack member in that error)."""
    for name, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise TypeError(f"{where}: array '{name}' has dtype object, which would need pickle")
    buf = _io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Compressed ``.npz`` of plain numeric arrays (object arrays are refused), atomically."""
    write_bytes(path, npz_bytes(path, **arrays))


def load_npz(path) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` (a path, or anything with ``read_bytes()`` such as a
    pack member) without pickle; a missing, pickled or corrupt file is an error naming it."""
    try:
        data = path.read_bytes() if hasattr(path, "read_bytes") else Path(path).read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: not found") from None
    if not data.startswith(b"PK"):          # an .npz is a zip archive
        what = "refused, it holds pickled objects" if data[:1] == b"\x80" else "not a .npz archive"
        raise ArtifactError(f"{path}: {what} (it starts with {data[:8]!r})")
    try:
        with np.load(_io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
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
