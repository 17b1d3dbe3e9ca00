"""Headline numbers as mean +- std over training seeds: one DVC experiment per (version, seed).

Training is deterministic on one machine, not across machines (float reductions differ with the CPU
and its thread count), so one run's number says little about the next machine's. This script
queues ``dvc exp run --queue -n seed-<version>-<seed> -S seed=<seed> -S model.version=<version>``
for every pair, runs the queue (one worker), and prints per version the mean +- sample standard
deviation (n - 1) and each seed's value. Run from the project directory on a committed workspace:

    python experiments/seeds.py                      # V1 and V2, seeds 0 1 2: queue, run, print
    python experiments/seeds.py --seeds 0 1 2 3 4 --versions v1
    python experiments/seeds.py --report             # only print, from experiments already run
    python experiments/seeds.py --json results.json  # also write the numbers as JSON

Any other override goes to every run with ``-S`` (e.g. ``-S data.root=/data/VOC2012``).
"""
from __future__ import annotations

import argparse
import statistics
import sys

from dvcexp import add_common_args, collect, finish, run_queued

#: (column, path in metrics/evaluate.json)
METRICS = (("seed mIoU", ("seed", "miou")), ("CAM mIoU (best threshold)", ("cam", "miou")),
           ("R-CAM mIoU", ("rcam", "miou")), ("pseudo-label mIoU", ("pseudo", "miou")),
           ("mAP per image", ("cls", "map_per_image")), ("mAP per class", ("cls", "map_per_class")))


def _value(metrics: dict, path: tuple[str, ...]):
    for key in path:
        metrics = metrics.get(key) if isinstance(metrics, dict) else None
    return metrics


def summarise(found: dict[str, dict], versions: list[str], seeds: list[int]) -> dict:
    """version -> column -> {"mean", "std", "n", "values": {seed: value}} (percent)."""
    out: dict = {}
    for version in versions:
        for column, path in METRICS:
            values = {s: 100 * v for s in seeds
                      if (v := _value(found.get(f"{version}-{s}", {}), path)) is not None}
            if not values:
                continue
            xs = list(values.values())
            out.setdefault(version, {})[column] = {
                "mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else float("nan"),
                "n": len(xs), "values": values}
    return out


def table(summary: dict) -> str:
    lines = ["| version | metric | mean +- std (%) | n | per seed |", "|---|---|---|---|---|"]
    for version, columns in summary.items():
        for column, s in columns.items():
            per = ", ".join(f"{seed}: {v:.2f}" for seed, v in s["values"].items())
            lines.append(f"| {version} | {column} | {s['mean']:.2f} +- {s['std']:.2f} | {s['n']} | {per} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--versions", nargs="+", choices=["v1", "v2"], default=["v1", "v2"])
    add_common_args(ap)
    args = ap.parse_args(argv)
    if not args.report:
        run_queued({f"seed-{v}-{s}": [f"seed={s}", f"model.version={v}", *args.set]
                    for v in args.versions for s in args.seeds}, dry=args.dry_run)
    if args.dry_run:
        return 0
    summary = summarise(collect("seed-"), args.versions, args.seeds)
    return finish(summary, table(summary), args.json)


if __name__ == "__main__":
    sys.exit(main())
