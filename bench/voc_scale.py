"""What a no-op costs at VOC's size: the demo generated at VOC 2012 + SBD scale, then timed DVC calls.

The data set: 10,582 ``train_aug`` (of which 1,464 are ``train``) and 1,449 ``val`` images of
333-500 px a side (VOC's are around 500 x 375), in the VOC layout, generated once into ``--root``
(kept for the next run). In a fresh copy of the project (git ls-files) with ``data.root`` set to
that folder (absolute, outside the repository), the script times:

1. the first ``dvc repro prepare`` (DVC hashes the data folder once; prepare validates every image
   and mask and writes the manifest);
2. stand-in outputs for every later stage, with the real file counts (packs of a seed map and a
   pseudo label per image of train and train_aug, ...), recorded with ``dvc commit``: the
   stages cannot run here at this size on a CPU, and a no-op only checks their files' states;
3. a no-op ``dvc repro`` and ``dvc status`` of the whole pipeline, ``--repeats`` times each;
4. with ``--baseline-commit REV`` (e.g. the commit before this design), the same project at that
   commit: its ``prepare`` was ``always_changed`` and re-read every byte on every ``dvc repro``;
   its ``dvc repro prepare`` is what each of its no-ops cost at least.

    python bench/voc_scale.py --root /tmp/voc_scale --json bench/results/voc_scale.json
    python bench/voc_scale.py --root /tmp/voc_scale --baseline-commit 7021572

Target: a no-op ``dvc repro`` at most 10 s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wsss import artifacts, io, packs  # noqa: E402
from wsss.data.demo import generate_demo  # noqa: E402
from wsss.data.files import palette_png  # noqa: E402

VOC = dict(n_train_aug=10582, n_train=1464, n_val=1449, min_size=333, max_size=500, max_objects=3)
TARGET_NOOP_S = 10.0


def dvc(repo: Path, *args: str) -> float:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", WSSS_DEVICE="cpu",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    start = time.perf_counter()
    proc = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"dvc {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return took


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def ensure_data(root: Path, spec: dict, workers: int) -> float | None:
    """Generate the set into ``root`` unless a complete one is there; seconds, or None if kept.
    (The completion marker sits beside the folder, not in it: it is no file of the data set.)"""
    marker = root.with_name(root.name + ".complete.json")
    if marker.exists() and json.loads(marker.read_text()) == spec and root.is_dir():
        return None
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    generate_demo(root, seed=0, progress=True, workers=workers, **spec)
    took = time.perf_counter() - start
    marker.write_text(json.dumps(spec))
    return took


def project_copy(dest: Path, rev: str | None, data_root: Path, data_format: str = "voc") -> Path:
    """The project's files (at ``rev``, or the working tree's tracked and new ones) in a new git
    repo, reading ``data_root`` (in the layout ``data_format`` names)."""
    dest.mkdir(parents=True)
    if rev:
        subprocess.run(f"git archive {rev} | tar -x -C {dest}", shell=True, cwd=REPO, check=True)
    else:
        files = git(REPO, "ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
        for f in filter(None, files):
            if (REPO / f).is_file():
                (dest / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / f, dest / f)
    (dest / "dvc.lock").unlink(missing_ok=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["data"]["root"] = str(data_root)
    if data_format != "voc":          # (a commit from before data.format knows only VOC)
        params["data"]["format"] = data_format
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench")
    return dest


def stand_in_outputs(repo: Path) -> None:
    """Small files where every later stage's outputs go, as many as a real run writes."""
    os.chdir(repo)
    manifest = artifacts.load_manifest()
    splits = manifest["splits"]
    ids = list(dict.fromkeys(splits["train"] + splits["train_aug"]))   # cams and refine: each image once
    cam = artifacts.cams_bytes([1], {"cam": np.zeros((1, 4, 4), dtype=np.float16)})
    label = palette_png(np.zeros((4, 4), dtype=np.uint8))
    for root, member, data in ((artifacts.CAMS, artifacts.cam_name, cam), (artifacts.PSEUDO, artifacts.label_name, label)):
        writer = packs.PackWriter(root, [member(i) for i in ids])
        for i in ids:
            writer.add(member(i), data)
        writer.close()
    for i in splits["train"][:8]:
        io.write_bytes(artifacts.PREVIEWS / f"{i}.png", label)
    io.write_bytes(artifacts.WEIGHTS, b"stand-in")
    io.write_json(artifacts.MODEL_INFO, {"seed_map": "cam"})
    io.save_npz(artifacts.VAL_SCORES, scores=np.zeros((1, 1), np.float32))
    artifacts.CHECKPOINTS.mkdir(exist_ok=True)
    (artifacts.CHECKPOINTS / ".keep").write_text("")
    metrics = artifacts.TRAIN_LIVE / "plots" / "metrics"
    io.write_text(metrics / "train" / "loss_cls.tsv", "step\tloss_cls\n0\t1.0\n")
    io.write_json(artifacts.TRAIN_LIVE / "metrics.json", {})
    io.write_json(artifacts.RELATION_INFO, {"trained": False})
    io.write_json(artifacts.PSEUDO / "refine.json", {})
    for name in ("evaluate", "per_class", "run"):
        io.write_json(artifacts.METRICS / f"{name}.json", {})
    io.write_text(artifacts.PLOTS / "seed_sweep.csv", "threshold,cam,rcam_fg\n")
    io.write_text(artifacts.PLOTS / "seed_per_class.csv", "class,iou,precision,recall\n")
    # step 3: the segmenter and its scores
    io.write_bytes(artifacts.SEGMENTER_WEIGHTS, b"stand-in")
    io.write_json(artifacts.SEGMENTER_INFO, {})
    (artifacts.SEGMENTER / "checkpoints").mkdir(parents=True, exist_ok=True)
    (artifacts.SEGMENTER / "checkpoints" / ".keep").write_text("")
    io.write_text(artifacts.SEGMENT_LIVE / "plots" / "metrics" / "train" / "loss_ce.tsv", "step\tloss_ce\n0\t1.0\n")
    io.write_json(artifacts.SEGMENT_LIVE / "metrics.json", {})
    for name in ("segment", "segment_per_class"):
        io.write_json(artifacts.METRICS / f"{name}.json", {})
    io.write_text(artifacts.PLOTS / "segment_per_class.csv", "class,iou,precision,recall\n")
    os.chdir(REPO)


def timings(repo: Path, repeats: int) -> dict:
    out = {"repro_noop_s": [dvc(repo, "repro") for _ in range(repeats)],
           "status_s": [dvc(repo, "status") for _ in range(repeats)]}
    return {k: {"median": statistics.median(v), "runs": [round(x, 2) for x in v]} for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "wsss_voc_scale" / "VOC2012")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--baseline-commit", help="also time the project at this commit (the earlier design)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of VOC's image counts (a quick try: 0.02)")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    spec = {k: max(4, round(v * args.scale)) if k.startswith("n_") else v for k, v in VOC.items()}
    result: dict = {"data": dict(spec)}
    result["generate_s"] = ensure_data(root, spec, args.workers)
    result["data"]["files"] = sum(1 for p in root.rglob("*") if p.is_file())
    with tempfile.TemporaryDirectory() as tmp:
        repo = project_copy(Path(tmp) / "now", None, root)
        result["first_prepare_s"] = dvc(repo, "repro", "prepare")
        dvc(repo, "repro", "demo")              # with an outside data.root: only a note
        stand_in_outputs(repo)
        dvc(repo, "commit", "-f")
        result["now"] = timings(repo, args.repeats)
        if args.baseline_commit:
            old = project_copy(Path(tmp) / "before", args.baseline_commit, root)
            first = dvc(old, "repro", "prepare")
            again = [dvc(old, "repro", "prepare") for _ in range(args.repeats)]
            result["before"] = {"commit": args.baseline_commit, "first_prepare_s": first,
                                "repro_prepare_again_s": {"median": statistics.median(again),
                                                          "runs": [round(x, 2) for x in again]}}
    print(f"VOC-scale data: {result['data']['files']} files under {root}"
          + (f" (generated in {result['generate_s']:.0f} s)" if result["generate_s"] else ""))
    print(f"first `dvc repro prepare`: {result['first_prepare_s']:.1f} s")
    if "before" in result:
        b = result["before"]
        print(f"before ({b['commit']}): every `dvc repro` re-ran prepare: {b['repro_prepare_again_s']['median']:.1f} s "
              f"for prepare alone (first {b['first_prepare_s']:.1f} s)")
    return finish(result, args.repeats, args.json)


def finish(result: dict, repeats: int, json_path: Path | None) -> int:
    """Print the no-op figures, write the JSON; exit status 1 where the no-op misses its target."""
    now = result["now"]["repro_noop_s"]["median"]
    print(f"no-op `dvc repro`: {now:.1f} s (median of {repeats}; target <= {TARGET_NOOP_S:.0f} s), "
          f"`dvc status`: {result['now']['status_s']['median']:.1f} s")
    if json_path:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if now <= TARGET_NOOP_S else 1


if __name__ == "__main__":
    sys.exit(main())
