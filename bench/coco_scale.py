"""What COCO's size costs: the demo generated at MS COCO 2014's counts, in COCO form, then timed.

The data set: 82,783 ``train_aug`` images (COCO's train2014 count; ``train`` is a list of the
first ``--seed-images`` of them, where seeds are scored) and 40,504 ``val`` (val2014's), of
96-160 px (the demo's size: COCO's are about 640 x 480, which this machine cannot generate at
this count in reasonable time; the file count is COCO's, per-image work is extrapolated),
generated once in the VOC layout and written in COCO form (``wsss.data.forms.write_coco``) into
``--root``. In a fresh copy of the project with ``data.format: coco`` and ``data.root`` set to it:

1. the first ``dvc repro prepare``: DVC hashes the folder; prepare reads the annotation files
   with pycocotools, validates every image and rasterises the masks of the scored splits
   (``train`` and ``val``); its time and peak memory (its largest process, and its process tree);
2. stand-in outputs for every later stage (``dvc commit``), then a no-op ``dvc repro`` and
   ``dvc status``, ``--repeats`` times, and ``dvc status <stage>`` per stage (where the time goes);
3. ``evaluate``'s scoring (``stages.evaluate.seed_scores``: parallel, bounded) on 1/8, 1/4,
   1/2 and all of the ``train`` list's images with stand-in seed maps and pseudo labels of the
   real shapes: seconds and peak memory per size (target: memory flat in the number of images).

    python bench/coco_scale.py --root /tmp/wsss_coco_scale/coco --json bench/results/coco_scale.json
    python bench/coco_scale.py --scale 0.02          # a quick try

Targets: a no-op ``dvc repro`` at most 10 s; evaluate's memory independent of the image count.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from voc_scale import dvc, finish, project_copy, stand_in_outputs, timings  # noqa: E402

from wsss import artifacts, io, packs  # noqa: E402
from wsss.data.demo import generate_demo  # noqa: E402
from wsss.data.files import palette_png, read_mask  # noqa: E402
from wsss.data.forms import write_coco  # noqa: E402

COCO = dict(n_train_aug=82783, n_val=40504, min_size=96, max_size=160, max_objects=3)


def ensure_data(root: Path, spec: dict, workers: int) -> dict:
    """Generate (VOC layout, in a folder beside) and write the COCO form into ``root`` unless a
    complete one is there; the seconds each took (empty if kept)."""
    marker = root.with_name(root.name + ".complete.json")
    if marker.exists() and json.loads(marker.read_text()) == spec and root.is_dir():
        return {}
    voc = root.with_name(root.name + ".voc")
    shutil.rmtree(voc, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    generate_demo(voc, seed=0, progress=True, workers=workers, **spec)
    took = {"generate_s": time.perf_counter() - start}
    start = time.perf_counter()
    write_coco(voc, root, annotated=["train_aug", "val"], listed=["train"])
    took["write_coco_s"] = time.perf_counter() - start
    shutil.rmtree(voc)
    marker.write_text(json.dumps(spec))
    return took


def run_measured(repo: Path, *args: str) -> dict:
    """``dvc <args>`` with its process tree's memory polled every 0.2 s: seconds, the peak
    resident memory of its largest process and of the whole tree (MiB; pages shared between
    processes are counted in each)."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", WSSS_DEVICE="cpu",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    start = time.perf_counter()
    proc = psutil.Popen(["dvc", *args], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    single = total = 0.0
    while proc.poll() is None:
        try:
            rss = [p.memory_info().rss for p in [proc, *proc.children(recursive=True)]]
        except psutil.Error:
            continue
        single, total = max(single, max(rss) / 2**20), max(total, sum(rss) / 2**20)
        time.sleep(0.2)
    took = time.perf_counter() - start
    out = proc.stdout.read().decode(errors="replace")
    if proc.returncode:
        raise SystemExit(f"dvc {' '.join(args)} failed:\n{out[-3000:]}")
    return {"seconds": took, "peak_process_mib": round(single), "peak_tree_mib": round(total)}


def status_by_stage(repo: Path) -> dict:
    """Seconds of ``dvc status <stage>`` (that stage alone) per stage: where a no-op's time goes."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return {name: round(dvc(repo, "status", name), 2) for name in stages}


def evaluate_scaling(repo: Path, sizes: list[int], workers: int) -> list[dict]:
    """``seed_scores`` on growing prefixes of the scored split, each in a fresh process."""
    rows = []
    for n in sizes:
        code = (f"import json, resource, time, sys; sys.path.insert(0, {str(REPO)!r}); "
                "from stages.evaluate import seed_scores; from wsss.cli import data_source; "
                "from wsss.config import load_params; from wsss import artifacts; p = load_params(); "
                f"p.evaluate.workers = {workers}; m, s = data_source(p, artifacts.MASKS); ids = s.masked(m['splits']['train'])[:{n}]; "
                "t = time.perf_counter(); r, _, _ = seed_scores(p, s, ids, 'train', m['classes'], 'cam'); "
                "t = time.perf_counter() - t; "
                "own = int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) / 1024; "
                "kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024; "
                "print(json.dumps({'images': len(ids), 'seconds': t, 'peak_main_mib': own, "
                "'peak_worker_mib': kids, 'miou': r['seed']['miou']}))")
        proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True,
                              env=dict(os.environ, WSSS_DEVICE="cpu"))
        if proc.returncode:
            raise SystemExit(f"evaluate at {n} images failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"evaluate: {rows[-1]}", flush=True)
    return rows


def stand_in_maps(repo: Path) -> None:
    """Seed maps and pseudo labels of the real shapes for the scored split (random values)."""
    os.chdir(repo)
    manifest = artifacts.load_manifest()
    masks = io.read_json(artifacts.MASKS)["files"]
    rng = np.random.default_rng(0)
    ids = manifest["splits"]["train"]
    prepared = packs.Pack(artifacts.PREPARED_MASKS)
    cams = packs.PackWriter(artifacts.CAMS, [artifacts.cam_name(i) for i in ids])
    pseudo = packs.PackWriter(artifacts.PSEUDO, [artifacts.label_name(i) for i in ids])
    for i in ids:
        h, w = manifest["sizes"][i]
        keys = np.array(manifest["labels"][i], dtype=np.int16)
        cams.add(artifacts.cam_name(i), artifacts.cams_bytes(keys, {"cam": rng.random((len(keys), h, w))}))
        pseudo.add(artifacts.label_name(i), palette_png(read_mask(prepared.member(masks[i]))))
    cams.close()
    pseudo.close()
    os.chdir(REPO)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "wsss_coco_scale" / "coco")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of COCO's image counts")
    ap.add_argument("--seed-images", type=int, default=8000, help="images of the scored 'train' list")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    root = args.root.resolve()
    spec = {k: max(8, round(v * args.scale)) if k.startswith("n_") else v for k, v in COCO.items()}
    spec["n_train"] = min(args.seed_images, spec["n_train_aug"])
    root.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {"data": dict(spec), **ensure_data(root, spec, args.workers)}
    result["data"]["files"] = sum(1 for p in root.rglob("*") if p.is_file())
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        repo = project_copy(Path(tmp) / "now", None, root, "coco")
        first = run_measured(repo, "repro", "prepare")
        result["first_prepare_s"] = first["seconds"]
        result["first_prepare_memory_mib"] = {k: v for k, v in first.items() if k != "seconds"}
        print(f"first prepare: {first}", flush=True)
        dvc(repo, "repro", "demo")
        stand_in_outputs(repo)
        dvc(repo, "commit", "-f")
        result["now"] = timings(repo, args.repeats)
        result["status_by_stage_s"] = status_by_stage(repo)
        result["files"] = {d: sum(1 for p in (repo / d).rglob("*") if p.is_file())
                           for d in ("cams", "pseudo", "data/prepared/masks")}
        print(f"no-op: {result['now']}; by stage: {result['status_by_stage_s']}; files: {result['files']}", flush=True)
        stand_in_maps(repo)
        n = spec["n_train"]
        result["evaluate"] = evaluate_scaling(repo, sorted({max(1, n // 8), max(1, n // 4), max(1, n // 2), n}),
                                              args.workers)
    print(f"COCO-scale data: {result['data']['files']} files under {root}")
    print(f"first `dvc repro prepare`: {result['first_prepare_s']:.1f} s, memory {result['first_prepare_memory_mib']}")
    print(f"`dvc status <stage>` seconds: {result['status_by_stage_s']}; files: {result['files']}")
    return finish(result, args.repeats, args.json)


if __name__ == "__main__":
    sys.exit(main())
