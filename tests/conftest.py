"""Shared fixtures. The end-to-end ones run the pipeline once per session and hand each test that
changes it its own copy, so every test passes alone or in any order."""
from __future__ import annotations

from pathlib import Path

import pytest

from e2e import TINY, copy_repo, fork, run


@pytest.fixture(scope="session")
def tiny_baseline(tmp_path_factory) -> Path:
    """The tiny configuration after `dvc repro`, results committed. Read it; do not change it
    (take :func:`tiny_repo` for that)."""
    repo = copy_repo(tmp_path_factory.mktemp("baseline"), TINY)
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny results"], repo)
    return repo


@pytest.fixture
def tiny_repo(tiny_baseline: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`tiny_baseline` for a test that runs experiments or changes files."""
    return fork(tiny_baseline, tmp_path / "repo")
