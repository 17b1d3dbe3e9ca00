"""How the IRN walk's defaults were chosen: score the walk over a grid of its parameters.

Uses the relation net in ``relations/`` (train it first: ``dvc exp run -S refine.method=irn``,
or ``dvc repro`` with ``refine.method: irn``) and the seeds in ``cams/``, and scores the walked
seeds of ``data.seed_split`` against its masks for every (beta, iterations, walk radius): walked
CAMs by the background-threshold sweep (the best threshold and the curve), walked R-CAMs by their
argmax. This reads the ground truth, which is the point: it is how the defaults in
``params.yaml`` were set, and the README says so. The pipeline itself never reads a threshold
off the ground truth.

    python experiments/irn_sweep.py --beta 5 10 15 --iterations 8 16 32 --radius 3 5 8
"""
from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss import artifacts, io, runtime  # noqa: E402
from wsss.cli import data_source  # noqa: E402
from wsss.config import load_params, thresholds  # noqa: E402
from wsss.metrics import SeedScorer  # noqa: E402
from wsss.models import trained  # noqa: E402
from wsss.refine.irn import IRNConfig, Walker  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--beta", type=float, nargs="+", default=[10.0])
    ap.add_argument("--iterations", type=int, nargs="+", default=[16])
    ap.add_argument("--radius", type=int, nargs="+", default=[5])
    args = ap.parse_args(argv)
    p = load_params()
    manifest, source = data_source(p)
    kind = io.read_json(artifacts.RELATION_INFO)["map"]
    device = runtime.device()
    net = trained.load_relation_net(p.refine.irn.dim, device)
    base = IRNConfig.from_params(p.refine.irn, p.seed)
    split = p.data.seed_split
    data, cams = [], artifacts.cams_pack()
    for image_id in manifest["splits"][split]:
        image = source.image(image_id)
        data.append((image, artifacts.read_cams(cams, image_id, image.shape[:2]),
                     source.mask(image_id)))
    print(f"| beta | iterations | radius | mIoU ({'best bg threshold' if kind == 'cam' else 'argmax'}) |")
    print("|---|---|---|---|")
    for beta, iterations, radius in itertools.product(args.beta, args.iterations, args.radius):
        walker = Walker(net, kind, replace(base, beta=beta, iterations=iterations, walk_radius=radius), device)
        scorer = SeedScorer(manifest["classes"], thresholds(p))
        for image, maps, gt in data:
            walked = walker.scores(image, maps)
            walked = (walked / (walked.max() + 1e-5)).cpu().numpy()     # IRN's global max, as the walker
            scorer.update({"keys": maps["keys"], "cam": walked[1:] if kind == "rcam" else walked,
                           **({"rcam": walked} if kind == "rcam" else {})}, gt)
        s = scorer.summary()
        result = (f"{100 * s['cam']['miou']:.2f} at {s['cam']['threshold']}" if kind == "cam"
                  else f"{100 * s['rcam']['miou']:.2f}")
        print(f"| {beta:g} | {iterations} | {radius} | {result} |", flush=True)
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
