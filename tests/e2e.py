"""Helpers of the end-to-end tests: a tiny configuration and a copy of the repository to run it in."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY = {
    "data": {"demo": {"num_train_aug": 40, "num_train": 12, "num_val": 12, "min_size": 96, "max_size": 128}},
    "train": {"epochs": 2, "batch_size": 8, "resize_long": [96, 160], "num_workers": 0},
    # train_aug too: the segmenter trains on its pseudo labels, the IRN experiments' relation net on its seeds
    "cams": {"scales": [1.0, 0.5], "num_previews": 2, "splits": ["train", "train_aug"]},
    "segment": {"epochs": 2, "batch_size": 8, "num_workers": 0, "eval": {"scales": [1.0, 1.5]}},
}


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = _merge(base[k], v) if isinstance(v, dict) else v
    return base


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", WSSS_DEVICE="cpu",
               DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@localhost",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@localhost", **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def copy_repo(dest: Path, overrides: dict) -> Path:
    """The repository's files (tracked and new, not ignored) in a fresh git repo, with tiny params."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file() and not f.startswith("dvc.lock"):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(_merge(params, overrides), sort_keys=False))
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "tiny"], dest)
    return dest


def fork(repo: Path, dest: Path) -> Path:
    """A copy of a repository that has run the pipeline (git history, DVC cache, outputs, experiments),
    for a test that changes it: the original stays as it was for every other test."""
    shutil.copytree(repo, dest, symlinks=True)
    # DVC's state database keys files by inode: a copy re-hashes once and then trusts it again
    shutil.rmtree(dest / ".dvc" / "tmp", ignore_errors=True)
    return dest


def pack_ids(root: Path, suffix: str) -> list[str]:
    """The image ids of a pack's members (``cams/``: ``.npz``, ``pseudo/``: ``.png``), in order."""
    from wsss import packs

    members = list(packs.Pack(root).members)
    assert all(m.endswith(suffix) for m in members), members[:3]
    return [m[: -len(suffix)] for m in members]


def pack_member(root: Path, name: str):
    """A file-like handle (``read_bytes()``) on one member of the pack at ``root``."""
    from wsss import packs

    return packs.Pack(root).member(name)
