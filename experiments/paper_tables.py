"""The paper's Tables 1-3 and the refinement table, reproduced as DVC experiments (demo set by default).

Queues one ``dvc exp run`` per row (``--queue``, each with its ``-S`` overrides on top of
``params.yaml``), runs the queue (``dvc queue start``, one worker: CPU runs would only compete),
waits for it, then reads every experiment's metrics with ``dvc exp show --json`` and prints the
tables in Markdown. Run from the project directory, on a committed workspace:

    python experiments/paper_tables.py              # queue, run, print (Tables 1-3)
    python experiments/paper_tables.py --table refine   # seeds vs none / CRF / IRN pseudo labels
    python experiments/paper_tables.py --report     # only print, from experiments already run
    python experiments/paper_tables.py --dry-run    # print the dvc commands

Experiment names are ``tab-<row>``; re-running queues them again (``dvc exp remove`` first, or
``--report`` to read the ones that exist).
"""
from __future__ import annotations

import argparse
import sys
from functools import partial

from dvcexp import collect, run_queued

#: row name -> (description, -S overrides)
ROWS = {
    "v1": ("SWTformer-V1", ["model.version=v1"]),
    "v2-cls": ("V2, CLS only", ["model.version=v2", "loss.w_gsc=0", "loss.w_ccl=0"]),
    "v2-gsc": ("V2, CLS + GSC", ["model.version=v2", "loss.w_gsc=1", "loss.w_ccl=0"]),
    "v2-paper": ("V2, CLS + GSC + CCL (Eq. 6 as printed)",
                 ["model.version=v2", "loss.w_gsc=1", "loss.w_ccl=1", "loss.ccl=paper"]),
    "v2-contrastive": ("V2, CLS + GSC + CCL (contrastive)",
                       ["model.version=v2", "loss.w_gsc=1", "loss.w_ccl=1", "loss.ccl=contrastive"]),
    # the paper's and SIPE's exact reading, everything issue 13 made a parameter set back
    "v2-paper-reading": ("V2, CLS + GSC + CCL, the paper's reading (grad_to both, its seeds)",
                         ["model.version=v2", "loss.w_gsc=1", "loss.w_ccl=1", "loss.ccl=paper",
                          "loss.grad_to=both", "model.affinity=abs", "model.seed_features=tokens",
                          "model.every_class=false", "cams.seeds.features=tokens", "cams.seeds.affinity=abs",
                          "cams.seeds.bg_prototypes=1", "cams.seeds.every_class=false"]),
}
#: the refinement table: (model, seed map) x (none, crf, irn), everything else from params.yaml
SEEDS = {"v1": ("V1 CAM", ["model.version=v1"]),
         "v2": ("V2 R-CAM", ["model.version=v2"]),
         "v2cam": ("V2 CAM", ["model.version=v2", "refine.map=cam"])}
METHODS = ("none", "crf", "irn")
for _seed, (_what, _sets) in SEEDS.items():
    for _method in METHODS:
        ROWS[f"ref-{_seed}-{_method}"] = (f"{_what}, {_method}", [*_sets, f"refine.method={_method}"])
TABLES = {"paper": [r for r in ROWS if not r.startswith("ref-")], "refine": [r for r in ROWS if r.startswith("ref-")]}


def queue(rows: list[str], extra: list[str], dry: bool) -> None:
    run_queued({f"tab-{row}": [*ROWS[row][1], *extra] for row in rows}, dry=dry)


def _get(found: dict[str, dict], row: str, *path: str):
    """found[row][path[0]][path[1]]..., or None where any level is missing."""
    v = found.get(row)
    for key in path:
        v = None if v is None else v.get(key)
    return v


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def tables(found: dict[str, dict]) -> str:
    get = partial(_get, found)

    out = ["Table 1 analogue: classification mAP on the val split (%)", "",
           "| model | mAP per image | mAP per class |", "|---|---|---|"]
    for row in ("v1", "v2-paper"):
        out.append(f"| {ROWS[row][0]} | {_pct(get(row, 'cls', 'map_per_image'))} | "
                   f"{_pct(get(row, 'cls', 'map_per_class'))} |")
    out += ["", "Table 2 analogue: seed mIoU on the train split (%)", "",
            "| seeds | mIoU | how scored |", "|---|---|---|",
            f"| V1 CAM | {_pct(get('v1', 'cam', 'miou'))} | best background threshold "
            f"{get('v1', 'cam', 'threshold')} |",
            f"| V2 R-CAM | {_pct(get('v2-paper', 'rcam', 'miou'))} | argmax over C+1 |"]
    out += ["", "Table 3 analogue: V2 loss ablation, seed mIoU (%)", "",
            "| losses | seed mIoU | seeds scored | V2 CAM (sweep) | R-CAM (argmax) |", "|---|---|---|---|---|"]
    for row in ("v2-cls", "v2-gsc", "v2-paper", "v2-contrastive", "v2-paper-reading"):
        out.append(f"| {ROWS[row][0]} | {_pct(get(row, 'seed', 'miou'))} | {get(row, 'seed', 'map') or '-'} | "
                   f"{_pct(get(row, 'cam', 'miou'))} | {_pct(get(row, 'rcam', 'miou'))} |")
    return "\n".join(out)


def refine_table(found: dict[str, dict]) -> str:
    get = partial(_get, found)

    out = ["Refinement: seed and pseudo-label mIoU on the train split (%)", "",
           "| seeds | seed mIoU (as evaluate scores them) | none | CRF | IRN |", "|---|---|---|---|---|"]
    for seed, (what, _) in SEEDS.items():
        key = "cam" if seed != "v2" else "rcam"
        out.append(f"| {what} | {_pct(get(f'ref-{seed}-none', key, 'miou'))} | " +
                   " | ".join(_pct(get(f"ref-{seed}-{m}", "pseudo", "miou")) for m in METHODS) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", choices=[*TABLES, "all"], default="paper", help="which table's experiments")
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), help="which experiments (default: the table's)")
    ap.add_argument("--set", "-S", action="append", default=[], metavar="KEY=VALUE",
                    help="extra override for every row (e.g. data.root=../VOC2012)")
    ap.add_argument("--report", action="store_true", help="do not run; print from existing experiments")
    ap.add_argument("--dry-run", action="store_true", help="print the dvc commands only")
    args = ap.parse_args(argv)
    names = list(TABLES) if args.table == "all" else [args.table]
    if not args.report:
        queue(args.rows or [r for t in names for r in TABLES[t]], args.set, args.dry_run)
    if not args.dry_run:
        found = collect("tab-")
        print("\n\n".join((tables if t == "paper" else refine_table)(found) for t in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
