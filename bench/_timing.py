"""Shared helpers of the bench scripts: alternating timing, summary statistics, a table, JSON.

On a noisy machine the load changes over seconds, so the variants of one benchmark are timed
in turns (A, B, A, B, ...): a slow spell hits them alike, and their medians compare fairly.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path


def time_alternating(variants: dict[str, Callable[[], object]], repeats: int, warmup: int,
                     progress: bool = True) -> dict[str, list[float]]:
    """Call each variant ``warmup`` times untimed, then ``repeats`` timed rounds, in turns.

    Returns the wall-clock seconds of each timed call, per variant name. The garbage collector
    runs before each call, outside the timing, so one variant's garbage is not charged to the next.
    """
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(warmup + repeats):
        timed = r >= warmup
        for name, fn in variants.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if timed:
                times[name].append(dt)
            if progress:
                label = f"round {r - warmup + 1}/{repeats}" if timed else f"warm-up {r + 1}/{warmup}"
                print(f"  {label:>16}  {name:<22} {dt:8.3f} s", file=sys.stderr, flush=True)
    return times


def stats(samples: list[float]) -> dict:
    return {"n": len(samples), "median": statistics.median(samples), "min": min(samples),
            "max": max(samples), "samples": samples}


def print_table(rows: dict[str, dict], unit: str = "s") -> None:
    """One line per variant: median, min, max (and the spread max/min)."""
    width = max(len(name) for name in rows)
    print(f"{'variant':<{width}}  {'median':>9}  {'min':>9}  {'max':>9}  {'max/min':>7}  n")
    for name, s in rows.items():
        print(f"{name:<{width}}  {s['median']:>8.3f}{unit}  {s['min']:>8.3f}{unit}  {s['max']:>8.3f}{unit}  "
              f"{s['max'] / s['min']:>7.2f}  {s['n']}")


def ratio(rows: dict[str, dict], num: str, den: str, target: float | None = None) -> dict:
    """Ratio of medians ``num / den`` (and of minima, for reference); prints one line."""
    r = {"numerator": num, "denominator": den,
         "ratio_of_medians": rows[num]["median"] / rows[den]["median"],
         "ratio_of_mins": rows[num]["min"] / rows[den]["min"], "target": target}
    line = f"{num} / {den}: {r['ratio_of_medians']:.3f} (medians), {r['ratio_of_mins']:.3f} (minima)"
    if target is not None:
        r["meets_target"] = r["ratio_of_medians"] <= target
        line += f"  target <= {target:.2f}: {'met' if r['meets_target'] else 'NOT met'}"
    print(line)
    return r


def environment() -> dict:
    """What the numbers depend on; the load average shows whether other work was running."""
    import numpy as np

    env = {"python": platform.python_version(), "numpy": np.__version__, "cpu_count": os.cpu_count(),
           "loadavg_1_5_15": list(os.getloadavg()), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    if "torch" in sys.modules:  # only the train-step benchmark uses torch
        import torch

        env.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return env


def print_environment(env: dict) -> None:
    load = ", ".join(f"{x:.2f}" for x in env["loadavg_1_5_15"])
    libs = f"torch {env['torch']} (threads: {env['torch_threads']}), " if "torch" in env else ""
    print(f"python {env['python']}, {libs}numpy {env['numpy']}, {env['cpu_count']} CPUs, load average {load}")
    if env["loadavg_1_5_15"][0] > 0.5 * (env["cpu_count"] or 1):
        print("warning: the machine is busy (load average above half the CPUs): expect noisy timings")


def write_json(path: str | os.PathLike, record: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
