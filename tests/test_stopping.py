"""Stopping is clean: Ctrl-C, SIGTERM, or the dvc that runs a stage gone, stop the stage with one
line and no traceback, its worker processes and temporary files with it; a full disk is one line
naming the file, the previous version of that file kept.

The fast tests run small stand-in stages (a process pool, a DataLoader); the slow ones stop
``dvc repro`` itself while the tiny pipeline trains, as a terminal's Ctrl-C and as SIGTERM do.
"""
from __future__ import annotations

import contextlib
import copy
import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from e2e import BIN, REPO, TINY, _merge, copy_repo, fork, run
from wsss import io
from wsss.cli import run_stage
from wsss.stopping import _is_dvc
from wsss.errors import ArtifactError

STOPPED = re.compile(r"^(\w+): stopped (by Ctrl-C|by SIGTERM|as its dvc process( \(pid \d+\))? has ended) "
                     r"\(outputs of this stage are incomplete; run dvc repro again\)$")


# ----------------------------------------------------------------------------------------- helpers

def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    env.update(PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", WSSS_DEVICE="cpu", DVC_NO_ANALYTICS="1",
               PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def _as_a_terminal_would() -> None:
    """Ctrl-C's signal at its default in the child, as a terminal starts a command: pytest may
    itself run with SIGINT ignored (started with ``&`` or ``nohup`` by a script), and an ignored
    signal stays ignored across exec, which the stages respect."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Running:
    """A command in a session (process group) of its own, its stdout and stderr read as they come."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict | None = None):
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env or _env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                     preexec_fn=_as_a_terminal_would)
        self.lines: list[str] = []
        # text mode splits tqdm's carriage-return updates into lines too
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    def wait_for(self, pattern: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(re.search(pattern, line) for line in list(self.lines)):
            ended = self.proc.poll()
            assert ended is None, f"ended ({ended}) before {pattern!r}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {pattern!r} in {timeout} s:\n{self.output}"
            time.sleep(0.05)

    def output_closed(self, timeout: float) -> bool:
        """Whether every process holding the output (the command, its children) has ended."""
        self._reader.join(timeout)
        return not self._reader.is_alive()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def kill_group(self) -> None:
        """Whatever a failed test left of the group (nothing, when stopping works)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _processes_in(folder: Path) -> list[psutil.Process]:
    """Processes working in ``folder`` (a copy of the repository: DVC, its stages, their workers)."""
    folder = str(folder.resolve())
    found = []
    for p in psutil.process_iter(["cwd"]):
        cwd = p.info.get("cwd")
        if cwd and (cwd == folder or cwd.startswith(folder + os.sep)):
            found.append(p)
    return _alive(found)


def _gone(procs_now, timeout: float) -> tuple[list, float]:
    """Poll until ``procs_now()`` is empty; what is left and the seconds waited."""
    start = time.monotonic()
    left = procs_now()
    while left and time.monotonic() - start < timeout:
        time.sleep(0.1)
        left = procs_now()
    return left, time.monotonic() - start


def _temporaries(root: Path) -> list[str]:
    """Dot files under ``root`` (outside .git and .dvc) that are not ignore files: io.atomic_path's
    temporary files are ``.<name>.<random>.<suffix>``."""
    return sorted(str(f.relative_to(root)) for f in root.rglob(".*")
                  if f.is_file() and not {".git", ".dvc"} & set(f.relative_to(root).parts)
                  and not f.name.endswith("ignore"))


def _stopped_lines(output: str) -> list[str]:
    """The stop lines, without the blanks before them: a progress bar closed by the stop clears
    its line with spaces, which the next line follows (a terminal shows it after them)."""
    return [line.strip() for line in output.splitlines() if ": stopped " in line]


# ------------------------------------------------------------- stand-in stages: pool and DataLoader

FAKE_STAGE = textwrap.dedent('''
    import os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    time.sleep(float(os.environ.get("FAKE_START_AFTER", "0")))
    from wsss import io
    from wsss.cli import run_stage
    from wsss.stopping import _is_dvc


    def work(i):
        with io.atomic_path(Path("out") / f"{i}.txt") as tmp:   # open at any moment of a stop
            tmp.write_text("half")
            time.sleep(0.2)
            tmp.write_text(str(i))
        return i


    def main():
        if sys.argv[1] == "pool":        # as refine's CRF pool and prepare's hashing
            with ProcessPoolExecutor(2) as pool:
                for i in pool.map(work, range(10_000), chunksize=2):
                    if i == 0:
                        print("ready", flush=True)
        else:                            # as train's DataLoader workers
            import torch
            from torch.utils.data import DataLoader, Dataset

            class Slow(Dataset):
                def __len__(self):
                    return 10_000

                def __getitem__(self, i):
                    time.sleep(0.05)
                    return torch.zeros(3)

            for j, _ in enumerate(DataLoader(Slow(), batch_size=2, num_workers=2)):
                work(j)
                if j == 0:
                    print("ready", flush=True)


    if __name__ == "__main__":
        run_stage("fake", main)
''')


@pytest.fixture
def fake_stage(tmp_path: Path) -> Path:
    (tmp_path / "fake_stage.py").write_text(FAKE_STAGE)
    return tmp_path


def _start_fake(folder: Path, kind: str) -> tuple[Running, list[psutil.Process]]:
    r = Running([sys.executable, "fake_stage.py", kind], folder)
    r.wait_for("^ready$", 60)
    workers = psutil.Process(r.proc.pid).children(recursive=True)
    assert len(workers) >= 2, workers
    return r, workers


@pytest.mark.parametrize("kind", ["pool", "loader"])
@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C", "SIGHUP"])
def test_a_stopped_stage_ends_its_workers_and_temporary_files(fake_stage: Path, kind: str, how: str):
    r, workers = _start_fake(fake_stage, kind)
    try:
        start = time.monotonic()
        if how == "SIGTERM":
            r.proc.send_signal(signal.SIGTERM)            # a scheduler, `kill`
        else:   # a terminal's Ctrl-C, or the terminal closed: the whole group
            os.killpg(r.proc.pid, signal.SIGINT if how == "Ctrl-C" else signal.SIGHUP)
        rc = r.proc.wait(30)
        took = time.monotonic() - start
        assert r.output_closed(10)
        left, _ = _gone(lambda: _alive(workers), 10)
    finally:
        r.kill_group()
    signum = signal.SIGINT if how == "Ctrl-C" else getattr(signal, how)
    assert rc == 128 + signum
    assert r.output.splitlines()[-1] == (
        f"fake: stopped by {how} (outputs of this stage are incomplete; run dvc repro again)"), r.output
    assert r.output.splitlines()[:-1] == ["ready"], r.output          # nothing else: no traceback
    assert left == []
    assert _temporaries(fake_stage) == []
    assert took < 15


def _fake_dvc(folder: Path, wait: bool) -> Path:
    """A process named like dvc that runs the stand-in stage as DVC does (``DVC_STAGE`` set);
    ``wait=False``: it leaves at once, before the stage has got going."""
    fake = folder / "bin" / "dvc"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f"#!{sys.executable}\nimport os, subprocess, sys\n"
                    f"os.environ.update(DVC_STAGE='fake', FAKE_START_AFTER='{0 if wait else 0.5}')\n"
                    f"subprocess.{'run' if wait else 'Popen'}([sys.executable, 'fake_stage.py', 'pool'])\n")
    fake.chmod(0o755)
    return fake


def test_a_stage_stops_when_its_dvc_is_gone(tmp_path: Path, fake_stage: Path):
    """DVC neither passes SIGTERM on nor takes its stage with it: the stage watches its dvc."""
    r = Running([sys.executable, str(_fake_dvc(tmp_path, wait=True)), "repro"], fake_stage)
    try:
        r.wait_for("^ready$", 60)
        stage = psutil.Process(r.proc.pid).children()[0]
        workers = stage.children(recursive=True)
        start = time.monotonic()
        r.proc.send_signal(signal.SIGKILL)     # no handler of dvc's own can run: the stage notices
        r.proc.wait(10)
        assert r.output_closed(20), r.output
        took = time.monotonic() - start
        left, _ = _gone(lambda: _alive([stage, *workers]), 10)
    finally:
        r.kill_group()
    assert left == []
    assert r.output.splitlines()[-1] == (
        f"fake: stopped as its dvc process (pid {r.proc.pid}) has ended (outputs of this stage are "
        f"incomplete; run dvc repro again)"), r.output
    assert "Traceback" not in r.output
    assert _temporaries(fake_stage) == []
    assert took < 15


def test_a_stage_whose_dvc_is_gone_before_it_looks_stops_too(tmp_path: Path, fake_stage: Path):
    r = Running([sys.executable, str(_fake_dvc(tmp_path, wait=False)), "repro"], fake_stage)
    try:
        r.proc.wait(30)
        assert r.output_closed(30), r.output
    finally:
        r.kill_group()
    assert r.output.splitlines()[-1] == ("fake: stopped as its dvc process has ended (outputs of this "
                                         "stage are incomplete; run dvc repro again)"), r.output
    assert "Traceback" not in r.output
    assert _temporaries(fake_stage) == []


@pytest.mark.parametrize("cmdline, is_dvc", [
    (["/venv/bin/python3.11", "/venv/bin/dvc", "repro"], True),           # the entry-point script
    (["/usr/local/bin/dvc", "exp", "run"], True),                          # a standalone build
    (["python", "-m", "dvc", "exp", "exec-run"], True),
    (["python", "-m", "pytest", "tests"], False),
    (["code", "/home/me/dvc"], False),                                      # a folder named dvc
    (["/bin/bash", "--noprofile", "--norc", "-c", "dvc repro"], False),    # a shell (DVC's own, say)
    ([], False),                                                            # a process not ours to read
])
def test_which_ancestor_is_dvc(cmdline: list[str], is_dvc: bool):
    assert _is_dvc(cmdline) is is_dvc


def test_a_stop_while_the_stage_imports_is_one_line_too(tmp_path: Path):
    """``stop_cleanly(__name__)`` in a stage package's __init__: from the first import on."""
    pkg = tmp_path / "somestages"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from wsss.cli import stop_cleanly\nstop_cleanly(__name__)\n")
    (pkg / "slow.py").write_text("import time\nprint('importing', flush=True)\n"
                                 "time.sleep(60)   # importing torch, say\n")
    r = Running([sys.executable, "-m", "somestages.slow"], tmp_path, _env(DVC_STAGE="slow"))
    try:
        r.wait_for("^importing$", 30)
        r.proc.send_signal(signal.SIGTERM)
        rc = r.proc.wait(10)
        assert r.output_closed(10)
    finally:
        r.kill_group()
    assert rc == 128 + signal.SIGTERM
    assert r.output.splitlines() == [
        "importing", "slow: stopped by SIGTERM (outputs of this stage are incomplete; run dvc repro again)"]
    # imported, not run as `python -m somestages.<module>` (a test, say): Ctrl-C is left as it was
    probe = subprocess.run([sys.executable, "-c", "import signal, somestages; "
                            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"],
                           cwd=tmp_path, env=_env(), capture_output=True, text=True, check=True,
                           preexec_fn=_as_a_terminal_would)
    assert probe.stdout.strip() == "True"


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_atomic_write_leaves_no_temporary_file_when_stopped(tmp_path: Path, stop):
    path = tmp_path / "a.json"
    io.write_text(path, "before")
    with pytest.raises(stop):
        with io.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise stop()
    assert path.read_text() == "before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_remove_temporaries_removes_this_process_blocks_only(tmp_path: Path, monkeypatch):
    parents = tmp_path / ".b.txt.0123456789ab.tmp"    # a block of the process this one forked from
    parents.write_text("theirs")
    monkeypatch.setitem(io._temporaries, parents, os.getppid())
    with pytest.raises(LookupError):
        with io.atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            io.remove_temporaries()          # what a worker told to stop does before os._exit
            assert not tmp.exists()
            raise LookupError("the worker would be gone by now")
    assert sorted(p.name for p in tmp_path.iterdir()) == [parents.name]


# ------------------------------------------------------------------------------------- full disk

def _no_space(code: int = errno.ENOSPC):
    def write(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return write


@pytest.mark.parametrize("code, what", [(errno.ENOSPC, "no space left on device"),
                                        (errno.EDQUOT, "disk quota exceeded")])
def test_full_disk_names_the_file_and_keeps_its_previous_version(tmp_path: Path, monkeypatch, code, what):
    monkeypatch.chdir(tmp_path)
    io.write_json("models/model.json", {"v": 1})
    monkeypatch.setattr(Path, "write_bytes", _no_space(code))
    with pytest.raises(ArtifactError) as caught:
        io.write_json("models/model.json", {"v": 2})
    assert str(caught.value) == (f"{what} writing models/model.json "
                                 f"(free some space or move the cache: dvc cache dir)")
    monkeypatch.undo()
    assert io.read_json(tmp_path / "models/model.json") == {"v": 1}
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model.json"]


def test_full_disk_seen_by_a_writer_that_does_not_say_so(tmp_path: Path, monkeypatch):
    """torch.save on a full disk: "RuntimeError: [enforce fail at inline_container.cc] unexpected
    pos"; safetensors: "SafetensorError: ... No space left on device (os error 28)"."""
    path = tmp_path / "last.pt"

    def fail(exc):
        with io.atomic_path(path, suffix=".pt") as tmp:
            tmp.write_bytes(b"partial")
            raise exc

    with pytest.raises(RuntimeError, match="unexpected pos"):     # space left: the error as it is
        fail(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"))
    full = os.statvfs_result((4096, 4096, 1000, 0, 0, 100, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda _: full)
    with pytest.raises(ArtifactError, match=r"^no space left on device writing .*last\.pt \("):
        fail(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"))
    monkeypatch.undo()

    class SafetensorError(Exception):
        pass

    with pytest.raises(ArtifactError, match="^no space left on device writing"):
        fail(SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_full_disk_for_real(tmp_path: Path):
    """/dev/full answers every write with the kernel's own ENOSPC (it cannot be renamed onto,
    so the writer inside the block writes there)."""
    with pytest.raises(ArtifactError, match=r"^no space left on device writing .*scores\.npz \("):
        with io.atomic_path(tmp_path / "scores.npz"):
            with open("/dev/full", "wb") as f:
                f.write(b"\0" * 65536)
                f.flush()
    assert list(tmp_path.iterdir()) == []


def test_run_stage_full_disk_is_one_line(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    real_write_bytes = Path.write_bytes
    io.write_text("models/model.json", "previous")

    def main():
        monkeypatch.setattr(Path, "write_bytes", _no_space())
        io.write_text("models/model.json", "new")

    with pytest.raises(SystemExit) as ended:
        run_stage("train", main)
    monkeypatch.setattr(Path, "write_bytes", real_write_bytes)    # the disk has room again
    assert ended.value.code == 2
    assert capsys.readouterr().err == ("train: error: no space left on device writing models/model.json "
                                       "(free some space or move the cache: dvc cache dir)\n")
    assert (tmp_path / "models/model.json").read_text() == "previous"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model.json"]

    def elsewhere():     # a write not through wsss.io (a library's): the file when Python knows it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "dvclive/train/metrics.json")

    with pytest.raises(SystemExit) as ended:
        run_stage("train", elsewhere)
    assert ended.value.code == 2
    assert capsys.readouterr().err == ("train: error: no space left on device writing "
                                       "dvclive/train/metrics.json (free some space or move the cache: "
                                       "dvc cache dir)\n")


def test_run_stage_puts_the_signal_handlers_back(capsys):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    run_stage("x", lambda: None)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert capsys.readouterr().err.startswith("x: done in ")


# ---------------------------------------------------------------- dvc repro stopped while training

#: the tiny configuration, smaller still: one epoch of two steps, and one DataLoader worker (a
#: process to end as well)
SMALLER = {"data": {"demo": {"num_train_aug": 16}}, "train": {"epochs": 1, "num_workers": 1}}


@pytest.fixture(scope="module")
def before_train(tmp_path_factory) -> Path:
    """The :data:`SMALLER` configuration with every stage that ``train`` depends on run,
    whatever they are."""
    repo = copy_repo(tmp_path_factory.mktemp("stopping"), _merge(copy.deepcopy(TINY), SMALLER))
    upstream = run([sys.executable, "-c", "from dvc.repo import Repo\n"
                    "print(*[s.addressing for s in Repo().stage.collect('train', with_deps=True)])"],
                   repo).stdout.split()
    upstream.remove("train")
    if upstream:
        run(["dvc", "repro", *upstream], repo)
    return repo


def _stop_dvc_repro_while_training(repo: Path, send, env: dict | None = None) -> Running:
    r = Running(["dvc", "repro"], repo, env)
    try:
        r.wait_for(r"epoch 1/", 180)          # train's first epoch under way (its progress bar)
        train = [p for p in _processes_in(repo) if "stages.train" in " ".join(p.cmdline())]
        train = [p for p in train if p.ppid() not in {q.pid for q in train}]   # not its workers
        assert len(train) == 1, r.output
        deadline = time.monotonic() + 60     # and its DataLoader worker started
        while not train[0].children():
            assert time.monotonic() < deadline and r.proc.poll() is None, r.output
            time.sleep(0.05)
        start = time.monotonic()
        send(r.proc)
        r.proc.wait(30)
        left, took = _gone(lambda: _processes_in(repo), 20)
        assert left == [], [p.cmdline() for p in _alive(left)]
        assert took < 15
        assert r.output_closed(10)
        r.took = time.monotonic() - start
    finally:
        r.kill_group()
    return r


@pytest.mark.slow
def test_sigterm_to_dvc_repro_stops_the_training(before_train: Path, tmp_path: Path):
    repo = fork(before_train, tmp_path / "repo")
    r = _stop_dvc_repro_while_training(repo, lambda dvc: dvc.send_signal(signal.SIGTERM))
    assert r.proc.returncode == -signal.SIGTERM          # DVC lets SIGTERM end it at once
    stopped = _stopped_lines(r.output)
    assert len(stopped) == 1 and STOPPED.match(stopped[0]), r.output
    assert stopped[0].startswith("train: stopped as its dvc process")
    assert "Traceback" not in r.output
    assert _temporaries(repo) == []
    # and the next run trains (afresh, or on from a checkpoint) to the end
    again = run(["dvc", "repro", "train"], repo, check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "train: done in" in again.stdout + again.stderr
    assert "Traceback" not in again.stdout + again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("shell, status", [("/bin/bash", "130"), ("/bin/sh", "-2")])
def test_ctrl_c_to_dvc_repro_stops_the_training(before_train: Path, tmp_path: Path, shell: str,
                                                status: str):
    """DVC runs a stage's command through ``$SHELL -c`` (``/bin/sh`` when unset, as on CI). bash
    hands its process over to the command; dash stays as its parent and, in Ctrl-C's process
    group, dies of the SIGINT itself at once: DVC then reports -2, while the stage still stops
    as it should (one line, nothing left running, no temporary files)."""
    if not Path(shell).exists():
        pytest.skip(f"no {shell}")
    repo = fork(before_train, tmp_path / "repo")
    r = _stop_dvc_repro_while_training(repo, lambda dvc: os.killpg(dvc.pid, signal.SIGINT),
                                       _env(SHELL=shell))
    assert r.proc.returncode != 0
    stopped = _stopped_lines(r.output)
    assert stopped == ["train: stopped by Ctrl-C (outputs of this stage are incomplete; "
                       "run dvc repro again)"], r.output
    assert "Traceback" not in r.output
    # DVC's own line after it: the stage failed, with Ctrl-C's status (the stage's, or the shell's)
    assert r.output.splitlines()[-1].endswith(f"exited with {status}"), r.output
    assert _temporaries(repo) == []
