"""Stopping a stage cleanly: Ctrl-C, SIGTERM or SIGHUP, or the dvc process that runs the stage
gone (DVC does not pass its own SIGTERM on), end the stage with one line, its worker processes
and temporary files with it. :func:`wsss.cli.run_stage` uses it; ``stages/__init__`` installs it
(:func:`stop_cleanly`) before the stage imports torch.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from .io import remove_temporaries


class StageStopped(SystemExit):
    """Raised in a stage's main thread by SIGINT, SIGTERM or SIGHUP (see :func:`run_stage`), or
    by code that relays a stop (``StageStopped(signum)``: a launcher whose workers a signal
    stopped).

    A SystemExit, so that code in between does not take it for an error (``except Exception``)
    and every ``finally`` runs on its way out (temporary files go); raised before
    :func:`run_stage` runs (while torch is imported, say) it ends Python with no traceback.
    """

    def __init__(self, signum: int, why: str = ""):
        super().__init__(128 + signum)
        self.signum, self.why = signum, why


#: How the process that installed the handlers is stopping: ``owner`` its pid (a forked worker
#: inherits the handlers, not the role), ``stage`` the stage's name once run_stage runs it,
#: ``pending`` why, when the watch on dvc stops it, ``watching`` the pid whose watch runs.
state = SimpleNamespace(owner=None, stage=None, signum=None, why="", at=0.0, pending="", watching=None)
#: what stops a stage: Ctrl-C, a scheduler's or ``kill``'s SIGTERM, the terminal closed
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                      if hasattr(signal, name))
_REPEAT_S = 2.0        # the same signal again this much later: stop at once, cleaning up or not
_WATCH_S = 0.5         # how often the stage checks that its dvc is still there


def stopped_line(stage: str, why: str) -> str:
    return f"{stage}: stopped {why} (outputs of this stage are incomplete; run dvc repro again)"


def reason(signum: int) -> str:
    return state.pending or ("by Ctrl-C" if signum == signal.SIGINT else f"by {signal.Signals(signum).name}")


def speaks_for_the_stage() -> bool:
    """One line per stop: under torchrun, which stops every process, the first process says it."""
    return os.environ.get("RANK", "0") == "0"


def _write_now(line: str) -> None:
    """A line on stderr from a signal handler: straight to the file descriptor (the handler may
    have interrupted a write to ``sys.stderr``, which must not be entered again)."""
    with suppress(OSError):
        os.write(2, (line + "\n").encode())


def _on_stop_signal(signum: int, frame) -> None:
    now = time.monotonic()
    if os.getpid() != state.owner:
        # a forked worker (DataLoader, process pool) that inherited the handler: go at once and
        # quietly (the stage reports), its temporary files with it. Not by raising: a pool
        # worker takes any exception for its task's and goes on to the next. Status 0: torch's
        # SIGCHLD check would raise "worker exited unexpectedly" in the stage as it cleans up
        remove_temporaries()
        os._exit(0)
    stage = state.stage or os.environ.get("DVC_STAGE") or "stage"
    if state.signum is not None:
        # the same stop once more: a terminal's Ctrl-C reaches every process of the group, the
        # stage ends its workers; a repeat later on means: now
        if now - state.at < _REPEAT_S:
            return
        remove_temporaries()
        _write_now(f"{stage}: stopped at once by a second {signal.Signals(signum).name} "
                   f"(outputs of this stage are incomplete; run dvc repro again)")
        os._exit(128 + signum)
    why = reason(signum)
    state.signum, state.why, state.at = signum, why, now
    _end_children()
    if state.stage is None and speaks_for_the_stage():   # before run_stage took over (imports)
        _write_now(stopped_line(stage, why))
    raise StageStopped(signum, why)


def _end_children() -> None:
    """SIGTERM to every process this one started (DataLoader workers, a CRF pool): they leave
    (:func:`_on_stop_signal`) at once, so the pool or loader this process unwinds through does
    not wait for the work still queued."""
    try:
        import psutil
        children = psutil.Process().children(recursive=True)
    except Exception:   # noqa: BLE001 - no psutil (DVC brings it), or /proc unreadable
        return
    for child in children:
        with suppress(Exception):
            child.terminate()


def stop_cleanly(package: str | None = None) -> None:
    """Turn SIGINT, SIGTERM and SIGHUP into :class:`StageStopped` in this process from now on (a
    signal the process was started ignoring stays ignored) and, under DVC, stop when the dvc
    process running this stage is gone. :func:`run_stage` calls it. A stage package's ``__init__`` may
    call it first thing, ``stop_cleanly(__name__)``, so that the stage also stops with one line
    while it imports torch: with ``package`` it acts only when Python runs
    ``python -m <package>.<module>`` (a test importing a stage keeps Ctrl-C as it was)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if package is not None:
        argv = list(getattr(sys, "orig_argv", []))
        module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
        if not module.startswith(package + "."):
            return
    state.owner = os.getpid()
    for signum in _STOP_SIGNALS:
        if signal.getsignal(signum) not in (signal.SIG_IGN, None):
            signal.signal(signum, _on_stop_signal)
    _watch_dvc()


def catch_stop_signals(stage: str) -> Callable[[], None]:
    """Stop handling for :func:`run_stage`; returns the function that puts things back as they
    were (in a process that goes on: a stop leaves them, the process is on its way out)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    before = {s: signal.getsignal(s) for s in _STOP_SIGNALS}
    hooks = threading.excepthook, sys.unraisablehook
    state.signum, state.why = None, ""
    stop_cleanly()
    state.stage = stage
    # once stopping, what breaks elsewhere is the stop's doing, not news: e.g. Python 3.11's
    # process pool thread trips over the futures the stop cancelled (InvalidStateError)
    threading.excepthook = lambda args: None if state.signum is not None else hooks[0](args)
    sys.unraisablehook = lambda unraisable: None if state.signum is not None else hooks[1](unraisable)

    def done() -> None:
        state.stage = None
        if state.signum is not None:
            return
        threading.excepthook, sys.unraisablehook = hooks
        for signum, handler in before.items():
            if handler is not None:
                signal.signal(signum, handler)
    return done


def _is_dvc(cmdline: list[str]) -> bool:
    """``dvc ...`` (a standalone build), or Python running it: ``python .../bin/dvc ...`` (the
    entry-point script), ``python -m dvc ...``."""
    names = [Path(arg).name.lower() for arg in cmdline[:3]]
    if names[:1] in (["dvc"], ["dvc.exe"]):
        return True
    return (bool(names) and names[0].startswith("python")
            and (names[1:2] == ["dvc"] or any(cmdline[i:i + 2] == ["-m", "dvc"] for i in (1, 2))))


def _watch_dvc() -> None:
    """Under DVC (it sets ``DVC_STAGE`` for every stage command), a daemon thread that stops this
    stage (SIGTERM to its main thread) once the dvc process running it is gone. DVC passes
    neither its SIGTERM nor its death on to the stage (SIGINT it ignores while the stage runs: a
    terminal's Ctrl-C reaches the stage itself), so the stage would run on, orphaned, writing
    outputs that no lock records, maybe beside the next ``dvc repro``.

    The dvc process is the nearest ancestor that is dvc; with none, a stage already orphaned
    (its parent init or a subreaper) lost it before it could look, and one run some other way
    (DVC's Python API) has nothing to watch. Needs psutil (DVC's own dependency)."""
    if "DVC_STAGE" not in os.environ or state.watching == os.getpid():
        return
    state.watching = os.getpid()
    try:
        import psutil
        dvc = next((p for p in psutil.Process().parents() if _is_dvc(_cmdline(p, psutil))), None)
        if dvc is None:
            parent = psutil.Process(os.getppid())
            if parent.pid != 1 and parent.name() not in ("systemd", "init"):
                return
    except Exception:   # noqa: BLE001 - no psutil, or the process table unreadable: no watch
        return

    def alive() -> bool:
        try:
            return dvc.is_running() and dvc.status() != psutil.STATUS_ZOMBIE
        except psutil.AccessDenied:
            return True
        except psutil.Error:
            return False

    def watch() -> None:
        while dvc is not None and alive():
            time.sleep(_WATCH_S)
        # not when stopping already, nor after run_stage gave the signals back (a test's process)
        if state.signum is None and signal.getsignal(signal.SIGTERM) is _on_stop_signal:
            state.pending = f"as its dvc process{f' (pid {dvc.pid})' if dvc else ''} has ended"
            signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)

    threading.Thread(target=watch, name="wsss-watch-dvc", daemon=True).start()


def _cmdline(process, psutil) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def close_progress_bars() -> None:
    """Close the tqdm bars a stop left open, so that the last line starts a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()) or ()):
        with suppress(Exception):
            bar.close()
