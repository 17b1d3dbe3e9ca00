"""DVC's plots as PNG files: the pictures of `dvc plots show` / `dvc plots diff`, for a README or a paper.

`dvc plots diff <rev> ... --json` gives each plot as a Vega-Lite spec with its data; this
renders the chosen ones with vl-convert (no browser needed): ``pip install -e ".[docs]"``.
Missing values (NaN: a V1 run has no R-CAM curve) are left out of the lines, as in the HTML.

    python experiments/plot_images.py                          # the workspace, into docs/plots/
    python experiments/plot_images.py tab-v1 tab-v2-paper -o docs/plots   # experiments side by side
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

DEFAULT_PLOTS = ("Seed mIoU vs background threshold", "Seed IoU per class (best threshold)",
                 "dvclive/train/plots/metrics/epoch/val_map_per_image.tsv",
                 "dvclive/train/plots/metrics/train/loss_total.tsv")


def file_name(plot_id: str) -> str:
    stem = plot_id.removeprefix("dvclive/train/plots/metrics/").removesuffix(".tsv")
    return re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_") + ".png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("revs", nargs="*", help="git revisions or experiment names (none: the workspace)")
    ap.add_argument("-o", "--out", type=Path, default=Path("docs/plots"))
    ap.add_argument("--plot", action="append", help=f"plot ids to render (default: {', '.join(DEFAULT_PLOTS)})")
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    try:
        import vl_convert
    except ImportError:
        sys.exit('vl-convert is not installed: pip install -e ".[docs]"')
    cmd = ["dvc", "plots", "diff", *args.revs, "--json"] if args.revs else ["dvc", "plots", "show", "--json"]
    shown = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)["data"]
    args.out.mkdir(parents=True, exist_ok=True)
    for plot_id in args.plot or DEFAULT_PLOTS:
        if plot_id not in shown:
            sys.exit(f"no plot '{plot_id}'; there are: {', '.join(shown)}")
        spec = shown[plot_id][0]["content"]
        for row in spec.get("data", {}).get("values", []):
            if row.get("dvc_inferred_y_value") in ("", "NaN"):
                row["dvc_inferred_y_value"] = None     # a gap in the line, not a point at 0
        path = args.out / file_name(plot_id)
        path.write_bytes(vl_convert.vegalite_to_png(spec, scale=args.scale))
        print(path)


if __name__ == "__main__":
    main()
