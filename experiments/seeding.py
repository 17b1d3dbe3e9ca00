"""How V2 locates its seeds at inference, compared on trained models: the R-CAM's seed mIoU per
seeding, beside the CAM's.

For each workspace (a project directory after ``dvc repro``, or ``dvc exp apply <exp>``, holding
a trained V2 model in ``models/``), the seed maps of ``data.seed_split`` are computed once per
seeding (``cams.seeds``: features x affinity x background prototypes x every class) with the stored weights and
scored like ``evaluate`` does: the R-CAM by its argmax over C+1 channels, the CAM by the
background-threshold sweep (the same for every seeding: the CAM does not depend on it). Training
is not repeated: the seeding only changes inference, which is why it lives in ``cams.seeds``.

    python experiments/seeding.py                                    # the model of this workspace
    python experiments/seeding.py --workdirs runs/* --bg-prototypes 1 2 3 --json seeding.json

Prints one row per workspace and seeding, then per seeding the mean +- sample std over the
workspaces of the R-CAM's mIoU and of its margin over the CAM.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from wsss import runtime  # noqa: E402
from wsss.cli import data_source  # noqa: E402
from wsss.config import load_params, thresholds  # noqa: E402
from wsss.inference import multiscale_maps  # noqa: E402
from wsss.metrics import SeedScorer  # noqa: E402
from wsss.models import trained  # noqa: E402
from wsss.models.swtformer import Seeding  # noqa: E402


def score_workspace(workdir: Path, options: list[tuple[str, str, int, bool]]) -> list[dict]:
    """Seed mIoU (percent) of the R-CAM per seeding option, and of the CAM, for one workspace."""
    here = Path.cwd()
    os.chdir(workdir)
    try:
        p = load_params()
        manifest, source = data_source(p)
        device = runtime.device()
        model = trained.load_model(device)
        if model.cfg.version != "v2":
            raise SystemExit(f"{workdir}: the model in models/ is {model.cfg.version}; seeding is V2's")
        ids = manifest["splits"][p.data.seed_split]
        rows = []
        for features, affinity, k, every in options:
            seeding = Seeding(features, affinity, model.cfg.bg_weight, k, every)
            scorer = SeedScorer(manifest["classes"], thresholds(p))
            for image_id in tqdm(ids, desc=f"{workdir.name} {features}/{affinity}/{k}/{every}", unit="img", leave=False):
                image = source.image(image_id)
                keys = manifest["labels"][image_id]
                maps = multiscale_maps(model, image, keys, p.cams.scales, p.cams.flip, device, seeding=seeding)
                scorer.update({"keys": keys, **maps}, source.mask(image_id))
            s = scorer.summary()
            rows.append({"workdir": str(workdir), "features": features, "affinity": affinity, "bg_prototypes": k,
                         "every_class": every, "rcam": 100 * s["rcam"]["miou"], "cam": 100 * s["cam"]["miou"],
                         "rcam_bg_recall": s["rcam"]["per_class"]["background"]["recall"]})
        return rows
    finally:
        os.chdir(here)


def summarise(rows: list[dict]) -> list[dict]:
    """Per seeding: mean +- sample std of the R-CAM's mIoU and of its margin over the CAM."""
    out = []
    for key, group in itertools.groupby(sorted(rows, key=_key), key=_key):
        group = list(group)
        rcam = [r["rcam"] for r in group]
        margin = [r["rcam"] - r["cam"] for r in group]
        out.append({"features": key[0], "affinity": key[1], "bg_prototypes": key[2], "every_class": key[3],
                    "n": len(group),
                    "rcam_mean": statistics.fmean(rcam), "rcam_std": _std(rcam),
                    "margin_mean": statistics.fmean(margin), "margin_std": _std(margin),
                    "margin_min": min(margin)})
    return out


def _key(r: dict) -> tuple:
    return r["features"], r["affinity"], r["bg_prototypes"], r["every_class"]


def _std(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdirs", nargs="+", type=Path, default=[Path(".")])
    ap.add_argument("--features", nargs="+", choices=["tokens", "fused"], default=["tokens", "fused"])
    ap.add_argument("--affinity", nargs="+", choices=["abs", "relu"], default=["abs", "relu"])
    ap.add_argument("--bg-prototypes", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--every-class", nargs="+", choices=["no", "yes"], default=["no", "yes"])
    ap.add_argument("--json", help="also write every row and the summary to this JSON file")
    args = ap.parse_args(argv)
    options = list(itertools.product(args.features, args.affinity, args.bg_prototypes,
                                     [e == "yes" for e in args.every_class]))
    rows = []
    print("| workspace | features | affinity | bg prototypes | every class | R-CAM | CAM | R-CAM - CAM |")
    print("|---|---|---|---|---|---|---|---|")
    for workdir in args.workdirs:
        for r in score_workspace(workdir, options):
            rows.append(r)
            print(f"| {workdir} | {r['features']} | {r['affinity']} | {r['bg_prototypes']} | {r['every_class']} | {r['rcam']:.2f} | "
                  f"{r['cam']:.2f} | {r['rcam'] - r['cam']:+.2f} |", flush=True)
        if args.json:   # after each workspace, so that a failure later keeps what was scored
            Path(args.json).write_text(json.dumps({"rows": rows, "summary": summarise(rows)}, indent=2))
    summary = summarise(rows)
    print("\n| features | affinity | bg prototypes | every class | runs | R-CAM mean +- std | R-CAM - CAM mean +- std "
          "| worst |")
    print("|---|---|---|---|---|---|---|---|")
    for s in summary:
        print(f"| {s['features']} | {s['affinity']} | {s['bg_prototypes']} | {s['every_class']} | {s['n']} | {s['rcam_mean']:.2f} +- "
              f"{s['rcam_std']:.2f} | {s['margin_mean']:+.2f} +- {s['margin_std']:.2f} | {s['margin_min']:+.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
