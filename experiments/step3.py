"""Step 3's results table: pseudo-label mIoU on ``train`` and the segmenter's mIoU on ``val`` for
V1 and V2 seeds refined by none / CRF / IRN, and the segmenter trained on ground truth.

Each row is ``dvc exp run -n step3-<row> -S ...`` in this workspace, one after the other, in an
order that lets DVC reuse what the previous row made (the V1 classifier for the V1 rows, the V2
one for the V2 rows; a queued experiment would retrain the classifier, whose checkpoint is a
``persist`` output that DVC's run cache never restores). The metrics are read from the
workspace after each run and written to ``--json``; the workspace ends on the last row's
parameters (``git checkout params.yaml && dvc repro`` goes back, retraining the classifier).

    python experiments/step3.py --json experiments/results/step3.json
    python experiments/step3.py --report experiments/results/step3.json    # the table again
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROWS = {
    "v1-none": ["model.version=v1", "refine.method=none", "segment.labels=pseudo"],
    "v1-crf": ["model.version=v1", "refine.method=crf", "segment.labels=pseudo"],
    "v1-irn": ["model.version=v1", "refine.method=irn", "segment.labels=pseudo"],
    "gt": ["model.version=v1", "refine.method=none", "segment.labels=gt"],
    "v2-none": ["model.version=v2", "refine.method=none", "segment.labels=pseudo"],
    "v2-crf": ["model.version=v2", "refine.method=crf", "segment.labels=pseudo"],
    "v2-irn": ["model.version=v2", "refine.method=irn", "segment.labels=pseudo"],
}


def read_row() -> dict:
    ev = json.loads(Path("metrics/evaluate.json").read_text())
    seg = json.loads(Path("metrics/segment.json").read_text())
    return {"seed_map": ev["seed"]["map"], "seed_miou": ev["seed"]["miou"], "pseudo_miou": ev["pseudo"]["miou"],
            "map_per_image": ev["cls"]["map_per_image"], "labels": seg["labels"],
            **{f"segment_{k}": seg[k]["miou"] for k in ("single_scale", "msc", "msc_crf") if k in seg}}


def table(rows: dict[str, dict]) -> str:
    gt = rows.get("gt", {}).get("segment_msc")
    out = ["| row | seeds (mIoU on train) | pseudo labels on train | segmenter on val: single scale | msc + flip "
           "| msc + CRF | msc / ground-truth msc | seconds |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        ratio = f"{r['segment_msc'] / gt:.2f}" if gt and name != "gt" else ("1" if name == "gt" else "")
        pseudo = "(ground truth)" if name == "gt" else f"{100 * r['pseudo_miou']:.2f}"
        out.append(f"| {name} | {r['seed_map']} {100 * r['seed_miou']:.2f} | {pseudo} | "
                   f"{100 * r['segment_single_scale']:.2f} | {100 * r['segment_msc']:.2f} | "
                   f"{100 * r.get('segment_msc_crf', float('nan')):.2f} | {ratio} | {r.get('seconds', 0):.0f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument("--set", "-S", action="append", default=[], metavar="KEY=VALUE", help="for every row")
    ap.add_argument("--json", type=Path, default=Path("experiments/results/step3.json"))
    ap.add_argument("--report", type=Path, help="print the table of this JSON and stop")
    args = ap.parse_args(argv)
    if args.report:
        print(table(json.loads(args.report.read_text())["rows"]))
        return 0
    done = json.loads(args.json.read_text())["rows"] if args.json.exists() else {}
    for name in args.rows:
        sets = ROWS[name] + args.set
        cmd = ["dvc", "exp", "run", "-n", f"step3-{name}", *[a for s in sets for a in ("-S", s)]]
        print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(proc.stdout[-2000:] + proc.stderr[-2000:], file=sys.stderr)
            return proc.returncode
        done[name] = {**read_row(), "seconds": time.perf_counter() - start, "set": sets}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": done}, indent=2) + "\n")
        print(table({name: done[name]}).splitlines()[-1], flush=True)
    print(table(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
