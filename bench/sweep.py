"""Benchmark: the background-threshold sweep of the evaluate stage, many thresholds against one.

sweep, T thresholds   ``wsss.metrics.ThresholdSweep(K, thresholds)``: ``update`` on every image,
                      then ``confusions()`` (what ``stages/evaluate.py`` does, minus file reading)
sweep, 1 threshold    the same with one threshold
naive, T thresholds   for reference: per threshold, ``threshold_labels`` + ``confusion`` on every image

All three run on the same synthetic data set, held in memory, timed in turns (A, B, C, A, ...);
the table gives median / min / max seconds per pass over the data set and the ratio of medians
sweep T / sweep 1 (target <= 2). Before timing, the sweep's confusion matrices are checked to
equal the naive ones at every threshold (an assertion).

The data: N images of H x W, each with 1-3 present classes of C (keys), VOC-like ground truth
(smooth regions of background and the present classes, a 5 px band of 255 along region borders)
and smooth CAMs in [0, 1] with ReLU zeros, max-normalised per class and rounded through float16
as the cams stage stores them (so exact ties with thresholds such as 0.0 and 0.5 do occur).

Run from the project directory:  python bench/sweep.py [options]
"""
from __future__ import annotations

import argparse
import os
import sys
from types import SimpleNamespace

import cv2
import numpy as np

from wsss.config import thresholds as config_thresholds
from wsss.metrics import IGNORE, ThresholdSweep, confusion, threshold_labels

from _timing import environment, print_environment, print_table, ratio, stats, time_alternating, write_json

TARGET = 2.0  # sweep with T thresholds / sweep with 1 threshold, ratio of medians

Image = tuple[np.ndarray, np.ndarray, np.ndarray]  # cam (k, H, W) float32, keys (k,) int64, gt (H, W) uint8


def _smooth(rng: np.random.Generator, n: int, height: int, width: int, cell: int = 80) -> np.ndarray:
    """n smooth random fields (n, H, W) in about [0, 1]: coarse uniform noise, bicubic upsampling."""
    coarse = rng.random((n, height // cell + 2, width // cell + 2), dtype=np.float32)
    return np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_CUBIC) for c in coarse])


def synthetic_images(n: int, height: int, width: int, num_classes: int, seed: int) -> list[Image]:
    rng = np.random.default_rng(seed)
    band = np.ones((5, 5), np.uint8)
    images = []
    for _ in range(n):
        k = int(rng.integers(1, 4))
        keys = np.sort(rng.choice(np.arange(1, num_classes + 1), size=k, replace=False)).astype(np.int64)
        regions = _smooth(rng, k + 1, height, width)  # channel 0: background
        gt = np.concatenate([[0], keys]).astype(np.uint8)[regions.argmax(axis=0)]
        border = np.zeros(gt.shape, np.uint8)
        border[:, 1:] |= gt[:, 1:] != gt[:, :-1]
        border[1:, :] |= gt[1:, :] != gt[:-1, :]
        gt[cv2.dilate(border, band) > 0] = IGNORE
        # CAMs: partly follow the object regions, partly not; ReLU; max-normalised; float16 round trip
        raw = 0.7 * regions[1:] + 0.3 * _smooth(rng, k, height, width) - 0.35
        cam = np.maximum(raw, 0)
        cam /= cam.reshape(k, -1).max(axis=1)[:, None, None] + 1e-5
        images.append((cam.astype(np.float16).astype(np.float32), keys, gt))
    return images


def run_sweep(images: list[Image], num_classes: int, thresholds: list[float]) -> np.ndarray:
    sweep = ThresholdSweep(num_classes, thresholds)
    for cam, keys, gt in images:
        sweep.update(cam, keys, gt)
    return sweep.confusions()


def run_naive(images: list[Image], num_classes: int, thresholds: list[float]) -> np.ndarray:
    out = np.zeros((len(thresholds), num_classes, num_classes), dtype=np.int64)
    for i, t in enumerate(sorted(thresholds)):
        for cam, keys, gt in images:
            out[i] += confusion(threshold_labels(cam, keys, t), gt, num_classes)
    return out


def cross_check(images: list[Image], num_classes: int, thresholds: list[float], single: float) -> None:
    """Assert that the sweep's confusion matrices equal the naive ones, at every threshold and at
    ``single`` alone (raised explicitly, so ``python -O`` does not skip it)."""
    def check(ok: bool, message: str) -> None:
        if not ok:
            raise AssertionError(message)

    ts = sorted(thresholds)
    naive = run_naive(images, num_classes, ts)
    swept = run_sweep(images, num_classes, ts)
    check(swept.shape == naive.shape, f"sweep gives {swept.shape} matrices, naive {naive.shape}")
    for t, a, b in zip(ts, swept, naive, strict=True):
        check(np.array_equal(a, b), f"threshold {t}: sweep and naive confusion matrices differ")
    one = run_sweep(images, num_classes, [single])[0]
    check(np.array_equal(one, run_naive(images, num_classes, [single])[0]),
          f"single threshold {single}: sweep and naive confusion matrices differ")
    total = int(sum((gt != IGNORE).sum() for _, _, gt in images))
    check(all(int(c.sum()) == total for c in swept), "a confusion matrix does not count every scored pixel")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--images", type=int, default=100, help="synthetic images")
    ap.add_argument("--height", type=int, default=375, help="image height")
    ap.add_argument("--width", type=int, default=500, help="image width")
    ap.add_argument("--num-classes", type=int, default=20, help="foreground classes C (K = C + 1)")
    ap.add_argument("--num-thresholds", type=int, default=20,
                    help="thresholds from 0.0 to 0.95, spaced as params.yaml's evaluate section")
    ap.add_argument("--single-threshold", type=float, default=0.5, help="threshold of the one-threshold variant")
    ap.add_argument("--repeats", type=int, default=7, help="timed passes per variant (>= 5 for a real run)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed passes per variant first")
    ap.add_argument("--skip-naive", action="store_true", help="do not time the naive way (still cross-checked)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    ap.add_argument("--json", metavar="PATH", help="write the settings, timings and ratios here")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        ap.error("--repeats must be >= 1 and --warmup >= 0")
    if args.num_thresholds < 2:
        ap.error("--num-thresholds must be >= 2 (the comparison is many thresholds against one)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    k = args.num_classes + 1
    thresholds = config_thresholds(SimpleNamespace(evaluate=SimpleNamespace(
        threshold_start=0.0, threshold_stop=0.95, num_thresholds=args.num_thresholds)))
    env = environment()
    print(f"threshold sweep: {args.images} images {args.height} x {args.width}, {k} classes with background, "
          f"{len(thresholds)} thresholds {thresholds[0]:g}..{thresholds[-1]:g} vs 1 ({args.single_threshold:g}); "
          f"{args.warmup} warm-up + {args.repeats} timed passes per variant, in turns")
    print_environment(env)

    images = synthetic_images(args.images, args.height, args.width, args.num_classes, args.seed)
    cross_check(images, k, thresholds, args.single_threshold)
    print(f"cross-check: sweep == naive confusion matrices at all {len(thresholds)} thresholds "
          f"and at {args.single_threshold:g} alone")

    many, one = f"sweep, {len(thresholds)} thresholds", "sweep, 1 threshold"
    variants = {many: lambda: run_sweep(images, k, thresholds),
                one: lambda: run_sweep(images, k, [args.single_threshold])}
    naive = f"naive, {len(thresholds)} thresholds"
    if not args.skip_naive:
        variants[naive] = lambda: run_naive(images, k, thresholds)

    times = time_alternating(variants, args.repeats, args.warmup)
    rows = {name: stats(t) for name, t in times.items()}
    print()
    print_table(rows)
    ratios = [ratio(rows, many, one, TARGET)]
    if not args.skip_naive:
        ratios.append(ratio(rows, naive, many))

    if args.json:
        env["loadavg_end"] = list(os.getloadavg())
        write_json(args.json, {"benchmark": "threshold_sweep", "settings": vars(args), "thresholds": thresholds,
                               "environment": env, "cross_check": "passed", "variants": rows, "ratios": ratios})
    return 0


if __name__ == "__main__":
    sys.exit(main())
