"""What every stage entry point shares: one clear line on a known fault, a full disk or a stop
(Ctrl-C, SIGTERM, the dvc running the stage gone), and the data root."""
from __future__ import annotations

import sys
import time
from contextlib import suppress
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from . import artifacts, io
from .data.manifest import resolve_root
from .data.source import Source
from .errors import KNOWN_FAULTS
from .io import out_of_space, out_of_space_message, remove_temporaries
from .stopping import (StageStopped, catch_stop_signals, close_progress_bars, reason, speaks_for_the_stage,
                       state, stop_cleanly, stopped_line)

__all__ = ["StageStopped", "data_root", "data_source", "run_stage", "stop_cleanly"]


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's ``main`` and end with one line on stderr.

    * a known fault: ``<stage>: error: <message>``, exit status 2; a full disk likewise, naming
      the file (:func:`wsss.io.atomic_path`);
    * Ctrl-C, SIGTERM or SIGHUP, or the dvc that runs this stage gone (SIGTERM or kill to
      ``dvc repro`` leaves its stage running otherwise): the stage stops, its temporary files
      and worker processes go, and it prints ``<stage>: stopped by SIGTERM (outputs of this stage are
      incomplete; run dvc repro again)``, exit status 128 + the signal's number.
    """
    start = time.perf_counter()
    done = catch_stop_signals(name)
    try:
        fault = None
        try:
            main()
        except BaseException as exc:   # noqa: BLE001 - what is not ours to report is raised again
            if isinstance(exc, StageStopped) and state.signum is None:   # relayed by the stage's code
                state.signum, state.why = exc.signum, exc.why or reason(exc.signum)
            if state.signum is None:
                if isinstance(exc, KNOWN_FAULTS):
                    fault = str(exc)
                elif isinstance(exc, Exception) and out_of_space(exc):
                    fault = out_of_space_message(exc)
                else:
                    raise
        if state.signum is not None:    # also when ``main`` got to its end: dvc must not go on
            remove_temporaries()        # what a block that swallowed the stop may have left
            close_progress_bars()
            if speaks_for_the_stage():
                with suppress(OSError):     # SIGHUP: the terminal may be gone
                    print(stopped_line(name, state.why), file=sys.stderr, flush=True)
            sys.exit(128 + state.signum)
        if fault is not None:
            print(f"{name}: error: {fault}", file=sys.stderr)
            sys.exit(2)
        print(f"{name}: done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    finally:
        done()


def data_root(p: SimpleNamespace, project_dir: Path | None = None) -> Path:
    """The data set's folder, ``data.root`` resolved (the demo's default: ``data/demo``)."""
    return resolve_root(p.data.root, Path.cwd() if project_dir is None else Path(project_dir))


def data_source(p: SimpleNamespace, masks: Path | None = None) -> tuple[dict, Source]:
    """The prepared manifest and the :class:`Source` that finds its images and the masks recorded
    in ``masks`` (``artifacts.MASKS``: the seed split's; ``artifacts.SEGMENT_MASKS``: the
    segmenter's splits; None: no masks), the record the calling stage depends on."""
    manifest = artifacts.load_manifest()
    files: dict[str, str] = {}
    if masks is not None:
        record = io.read_json(masks)
        for part in ([record] if "split" in record else record.values()):
            files.update(part.get("files", {}))
    return manifest, Source(data_root(p), manifest, files)
