"""The demo variants table: V1 and V2 on every named demo variant, mean +- std over training seeds.

One DVC experiment per (variant, version, seed), named ``var-<label>-<variant>-<version>-<seed>``:
``dvc exp run --queue -S data.demo.variant=<variant> -S model.version=<version> -S seed=<seed>``
(+ any ``-S`` given here, for every run). The queue is run, and the table printed: per variant,
V1's CAM seed mIoU, V2's CAM and R-CAM seed mIoU, both mAPs (per image), each mean +- sample std,
whether V2's background seeds collapsed in any run (``metrics/train.json``), and the targets of
issue 13: V2 R-CAM >= V1 CAM + 2, V2 CAM >= V1 CAM, V2 mAP >= V1 mAP - 1, on the means.

    python experiments/variants.py --label after                 # 4 variants x 2 versions x 3 seeds
    python experiments/variants.py --label before --report       # print from experiments already run
    python experiments/variants.py --label after --variants busy --seeds 0 --dry-run

Run from the project directory on a committed workspace (queued experiments start from HEAD).
"""
from __future__ import annotations

import argparse
import statistics
import sys

from dvcexp import add_common_args, collect, finish, run_queued

VARIANTS = ("standard", "large", "busy", "natural")
#: (column, version, path in metrics/evaluate.json)
COLUMNS = (("V1 CAM", "v1", ("cam", "miou")), ("V2 CAM", "v2", ("cam", "miou")),
           ("V2 R-CAM", "v2", ("rcam", "miou")), ("V1 mAP", "v1", ("cls", "map_per_image")),
           ("V2 mAP", "v2", ("cls", "map_per_image")))


def _value(tree, path):
    for key in path:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def _stats(xs: list[float]) -> dict:
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else float("nan"),
            "n": len(xs), "values": xs}


def summarise(found: dict, health: dict, variants, seeds) -> dict:
    """variant -> column -> stats (percent), plus ``collapsed`` (runs whose V2 seeds collapsed) and
    ``targets`` (issue 13's three checks on the means, None where a column is missing)."""
    out = {}
    for variant in variants:
        row: dict = {}
        for column, version, path in COLUMNS:
            xs = [100 * v for s in seeds if (v := _value(found.get(f"{variant}-{version}-{s}", {}), path)) is not None]
            if xs:
                row[column] = _stats(xs)
        row["collapsed"] = [s for s in seeds
                            if _value(health.get(f"{variant}-v2-{s}", {}), ("collapse", "collapsed"))]
        m = {k: v["mean"] for k, v in row.items() if isinstance(v, dict)}
        row["targets"] = {
            "R-CAM >= V1 CAM + 2": m["V2 R-CAM"] >= m["V1 CAM"] + 2 if {"V2 R-CAM", "V1 CAM"} <= m.keys() else None,
            "V2 CAM >= V1 CAM": m["V2 CAM"] >= m["V1 CAM"] if {"V2 CAM", "V1 CAM"} <= m.keys() else None,
            "V2 mAP >= V1 mAP - 1": m["V2 mAP"] >= m["V1 mAP"] - 1 if {"V2 mAP", "V1 mAP"} <= m.keys() else None,
        }
        out[variant] = row
    return out


def table(summary: dict) -> str:
    names = [c for c, _, _ in COLUMNS]
    lines = ["| variant | " + " | ".join(names) + " | V2 collapsed (seeds) | targets met |",
             "|---|" + "---|" * (len(names) + 2)]
    for variant, row in summary.items():
        cells = [f"{row[c]['mean']:.2f} +- {row[c]['std']:.2f}" if c in row else "-" for c in names]
        met = [k for k, ok in row["targets"].items() if ok]
        known = [k for k, ok in row["targets"].items() if ok is not None]
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {row['collapsed'] or 'none'} | "
                     f"{len(met)} of {len(known)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", required=True, help="names this set of runs (e.g. before, after)")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--versions", nargs="+", choices=["v1", "v2"], default=["v1", "v2"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1, help="queue workers (1 on a CPU)")
    add_common_args(ap)
    args = ap.parse_args(argv)
    prefix = f"var-{args.label}-"
    if not args.report:
        run_queued({f"{prefix}{v}-{ver}-{s}": [f"data.demo.variant={v}", f"model.version={ver}", f"seed={s}", *args.set]
                    for v in args.variants for ver in args.versions for s in args.seeds},
                   dry=args.dry_run, jobs=args.jobs)
    if args.dry_run:
        return 0
    summary = summarise(collect(prefix), collect(prefix, "metrics/train.json"), args.variants, args.seeds)
    return finish(summary, table(summary), args.json)


if __name__ == "__main__":
    sys.exit(main())
