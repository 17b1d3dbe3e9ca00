"""Packs: many small per-image files stored as a few zip parts, so that DVC tracks hundreds of
files instead of one per image (at MS COCO's size, per-image seed maps and pseudo labels were
about 180,000 files, and a no-op ``dvc repro`` spent most of its 25 s looking at them).

A pack is a folder::

    index.json          {"format": 1, "per_part": n, "parts": [...], "members": {name: part}}
    part-00000.zip      the first n members, stored (not recompressed), in the order given
    part-00001.zip      ...

Members are the bytes a per-image file would hold (a seed-map ``.npz``, a palette ``.png``), so
``unzip pack/part-*.zip`` gives back the per-image files. Which member goes in which part depends
only on the ordered list of names, so every number of writing processes gives the same parts.
Parts and the index are written atomically; a reader names the pack, the part and the member in
every error.
"""
from __future__ import annotations

import io as _io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .io import ArtifactError, read_json, write_bytes, write_json

INDEX = "index.json"
FORMAT = 1
PER_PART = 16                     # members per part: 5-30 MB of seed maps at VOC and COCO sizes
_STAMP = (1980, 1, 1, 0, 0, 0)    # a fixed time in every entry: the same members give the same bytes


def part_name(k: int) -> str:
    return f"part-{k:05d}.zip"


def parts_of(names: Sequence[str], per_part: int = PER_PART) -> list[list[str]]:
    """``names`` cut into consecutive parts of ``per_part`` (the last may be shorter)."""
    if len(set(names)) != len(names):
        seen: set[str] = set()
        twice = next(n for n in names if n in seen or seen.add(n))
        raise ArtifactError(f"pack member '{twice}' is named twice (two images with one id?)")
    return [list(names[i:i + per_part]) for i in range(0, len(names), per_part)]


def write_part(root: Path, k: int, members: Iterable[tuple[str, bytes]]) -> None:
    """Part ``k`` of the pack at ``root`` holding ``members`` (name, bytes), atomically."""
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_STAMP)
            info.create_system, info.external_attr = 3, 0o644 << 16     # the same bytes on every OS
            z.writestr(info, data)
    write_bytes(Path(root) / part_name(k), buf.getvalue())


def write_index(root: Path, names: Sequence[str], per_part: int = PER_PART) -> None:
    """The pack's index (write it last: a pack without one is unfinished); parts an earlier,
    larger pack left in ``root`` go."""
    parts = parts_of(names, per_part)
    write_json(Path(root) / INDEX, {"format": FORMAT, "per_part": per_part,
                                    "parts": [part_name(k) for k in range(len(parts))],
                                    "members": {n: k for k, part in enumerate(parts) for n in part}})
    for stale in sorted(Path(root).glob("part-*.zip"))[len(parts):]:
        stale.unlink()


class PackWriter:
    """Writes the pack of ``names`` (in that order) at ``root``: :meth:`add` each member of
    ``parts`` (all parts by default; a process writing a share passes its own and ``index=False``,
    and one process calls :func:`write_index` once all are done), in any order; a part is written
    as soon as all its members are in, so at most one part's bytes are held at a time when
    members come in order. An index already at ``root`` goes first, so a stopped run leaves a pack
    no reader takes for finished. :meth:`close` checks that nothing is missing and, if ``index``
    is true, writes the index."""

    def __init__(self, root: Path, names: Sequence[str], per_part: int = PER_PART,
                 parts: Iterable[int] | None = None, index: bool = True):
        self.root, self.names, self.per_part, self.index = Path(root), list(names), per_part, index
        self._parts = parts_of(self.names, per_part)
        mine = list(range(len(self._parts)) if parts is None else parts)
        if parts is not None and index:
            raise ValueError("a writer of some parts cannot write the index: write_index once all are written")
        if any(not 0 <= k < len(self._parts) for k in mine):
            raise ValueError(f"parts {mine} outside 0..{len(self._parts) - 1}")
        self._part_of = {n: k for k in mine for n in self._parts[k]}
        self._pending: dict[int, dict[str, bytes]] = {k: {} for k in mine}
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / INDEX).unlink(missing_ok=True)

    def add(self, name: str, data: bytes) -> None:
        k = self._part_of.get(name)
        if k is None or k not in self._pending:
            raise KeyError(f"{self.root}: '{name}' is not a member this writer still waits for")
        got = self._pending[k]
        got[name] = bytes(data)
        if len(got) == len(self._parts[k]):
            write_part(self.root, k, ((n, got[n]) for n in self._parts[k]))
            del self._pending[k]

    def close(self) -> None:
        if self._pending:
            missing = [n for k in self._pending for n in self._parts[k] if n not in self._pending[k]]
            raise ArtifactError(f"{self.root}: {len(missing)} members never written (e.g. {missing[:3]})")
        if self.index:
            write_index(self.root, self.names, self.per_part)


@dataclass(frozen=True)
class Member:
    """One member of a pack, readable like a file (``read_bytes``); prints as pack/part:name."""
    pack: "Pack"
    name: str

    def read_bytes(self) -> bytes:
        return self.pack.read(self.name)

    def exists(self) -> bool:
        return self.name in self.pack

    def __str__(self) -> str:
        return self.pack.where(self.name)

    def __reduce__(self):
        # sent to another process as (pack folder, name): a pool's tasks do not carry the index
        return _member, (str(self.pack.root), self.name)


def _member(root: str, name: str) -> Member:
    return opened(root).member(name)


class Pack:
    """Reads the pack at ``root``. Open parts are kept per process (a pack handed to worker
    processes opens its own), at most ``max_open`` at a time."""

    def __init__(self, root: Path, max_open: int = 8):
        self.root, self.max_open = Path(root), max_open
        index_path = self.root / INDEX
        if not index_path.is_file():
            raise ArtifactError(f"{index_path}: not found, so {self.root} is not a finished pack "
                                f"(re-run the stage that writes it: dvc repro)")
        index = read_json(index_path)
        if not isinstance(index, dict) or index.get("format") != FORMAT or \
                not isinstance(index.get("members"), dict) or not isinstance(index.get("parts"), list):
            raise ArtifactError(f"{index_path}: not a pack index of format {FORMAT}")
        self.parts: list[str] = index["parts"]
        self.members: dict[str, int] = index["members"]
        if any(not isinstance(k, int) or not 0 <= k < len(self.parts) for k in self.members.values()):
            raise ArtifactError(f"{index_path}: a member's part is not one of its {len(self.parts)} parts")
        self._open: dict[int, zipfile.ZipFile] = {}
        self._pid = os.getpid()

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def __len__(self) -> int:
        return len(self.members)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": {}}

    def member(self, name: str) -> Member:
        return Member(self, name)

    def where(self, name: str) -> str:
        k = self.members.get(name)
        return f"{self.root / self.parts[k]}:{name}" if k is not None else f"{self.root}:{name}"

    def _zip(self, k: int) -> zipfile.ZipFile:
        if os.getpid() != self._pid:            # a forked copy: its parent's open files are not its own
            self._open, self._pid = {}, os.getpid()
        z = self._open.get(k)
        if z is None:
            path = self.root / self.parts[k]
            try:
                z = zipfile.ZipFile(path)
            except FileNotFoundError:
                raise ArtifactError(f"{path}: part of {self.root} not found (dvc checkout, or dvc repro)") from None
            except zipfile.BadZipFile as exc:
                raise ArtifactError(f"{path}: not a readable zip part ({exc})") from None
            if len(self._open) >= self.max_open:
                self._open.pop(next(iter(self._open))).close()
            self._open[k] = z
        return z

    def read(self, name: str) -> bytes:
        k = self.members.get(name)
        if k is None:
            raise ArtifactError(f"{self.root}: no member '{name}' (its index lists {len(self.members)}; "
                                f"was the stage run on other images? dvc repro)")
        try:
            return self._zip(k).read(name)
        except KeyError:
            raise ArtifactError(f"{self.where(name)}: listed by the index but not in the part") from None
        except zipfile.BadZipFile as exc:
            raise ArtifactError(f"{self.where(name)}: unreadable ({exc})") from None

    def close(self) -> None:
        for z in self._open.values():
            z.close()
        self._open = {}


_OPENED: dict[str, tuple[tuple, Pack]] = {}


def opened(root: Path | str) -> Pack:
    """The pack at ``root``, read once per process (again if its index changed): for code that
    reads a few members per call, such as a pool's tasks."""
    index = Path(root) / INDEX
    try:
        st = index.stat()
        where, key = str(root), (st.st_mtime_ns, st.st_size, st.st_ino)
    except FileNotFoundError:
        return Pack(root)           # says what is missing
    if _OPENED.get(where, (None,))[0] != key:
        _OPENED[where] = (key, Pack(root))
    return _OPENED[where][1]


def replace_members(root: Path, members: dict[str, bytes]) -> None:
    """Rewrite the pack at ``root`` with some members' bytes replaced (the same names, order and
    parts; e.g. hand-corrected labels). Every name must already be a member."""
    pack = Pack(root)
    unknown = [n for n in members if n not in pack]
    if unknown:
        raise ArtifactError(f"{root}: no member {unknown[0]!r} to replace ({len(unknown)} unknown)")
    names = []
    for part in pack.parts:                     # the order they were written in
        with zipfile.ZipFile(Path(root) / part) as z:
            names += z.namelist()
    per_part = int(read_json(Path(root) / INDEX)["per_part"])
    writer = PackWriter(root, names, per_part)
    for n in names:
        writer.add(n, members[n] if n in members else pack.read(n))
    pack.close()
    writer.close()


def pack_files(paths: Sequence[Path], root: Path, per_part: int = PER_PART) -> None:
    """The pack at ``root`` of the files ``paths`` (members named by file name, in this order),
    reading one part's files at a time."""
    writer = PackWriter(root, [Path(f).name for f in paths], per_part)
    for f in paths:
        writer.add(Path(f).name, Path(f).read_bytes())
    writer.close()
