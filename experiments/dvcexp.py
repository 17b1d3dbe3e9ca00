"""Queue DVC experiments, run the queue, read their metrics back: what the experiment scripts share.

Run from the project directory on a committed workspace (queued experiments start from git HEAD).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def dvc(*args: str, dry: bool = False) -> str:
    cmd = ["dvc", *args]
    print("$ " + " ".join(cmd), file=sys.stderr)
    if dry:
        return ""
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def run_queued(experiments: dict[str, list[str]], dry: bool = False, poll_s: float = 30, jobs: int = 1) -> None:
    """Queue ``name -> [-S overrides]`` as ``dvc exp run --queue -n name -S ...``, start ``jobs``
    workers (1 on a CPU: runs would only compete) and wait until the queue is empty; failures are
    printed."""
    for name, sets in experiments.items():
        dvc("exp", "run", "--queue", "-n", name, *[a for s in sets for a in ("-S", s)], dry=dry)
    dvc("queue", "start", "--jobs", str(jobs), dry=dry)
    if dry:
        return
    while True:
        status = dvc("queue", "status")
        if not any(word in status for word in ("Queued", "Running")):
            break
        time.sleep(poll_s)
    if "Failed" in status:
        print(status, file=sys.stderr)


def collect(prefix: str, metrics_file: str = "metrics/evaluate.json") -> dict[str, dict]:
    """Experiment name (without ``prefix``) -> its metrics, for every experiment named ``prefix...``
    that finished: a queued, running or failed one is left out (``dvc exp show`` gives those the
    metrics of the commit they started from, which are not theirs). Where one name exists on
    several commits, the newest commit's experiment counts (``dvc exp show`` lists HEAD first)."""
    data = json.loads(dvc("exp", "show", "--json", "--no-fetch", "--all-commits"))
    found: dict[str, dict] = {}
    for commit in data:
        for exp in commit.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            if state not in (None, "success"):
                continue
            for rev in exp.get("revs") or []:
                name = rev.get("name")
                metrics = (rev.get("data") or {}).get("metrics") or {}
                values = (metrics.get(metrics_file) or {}).get("data")
                if name and name.startswith(prefix) and values and not rev.get("error"):
                    found.setdefault(name[len(prefix):], values)
    return found


def add_common_args(ap: argparse.ArgumentParser) -> None:
    """The options every experiment script takes: overrides, report only, dry run, JSON output."""
    ap.add_argument("--set", "-S", action="append", default=[], metavar="KEY=VALUE",
                    help="extra override for every run")
    ap.add_argument("--report", action="store_true", help="do not run; print from existing experiments")
    ap.add_argument("--dry-run", action="store_true", help="print the dvc commands only")
    ap.add_argument("--json", help="also write the summary to this JSON file")


def finish(summary: dict, text: str, json_path: str | None) -> int:
    """Print the table ``text``, write ``summary`` to ``json_path`` if given; 1 if nothing was found."""
    print(text)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(summary, f, indent=2)
    return 0 if summary else 1
