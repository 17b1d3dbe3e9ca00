"""Benchmark: the cams stage on one process against the same images shared out over N (cams.nproc).

Each variant runs ``python -m stages.cams`` in a scratch copy of the project that holds this
workspace's trained ``models/`` and ``data/prepared/`` (run ``dvc repro`` or ``dvc pull`` first),
with ``cams.nproc`` set; the runs alternate (1, N, 1, N, ...). The whole stage is timed, start-up
included: model load, the torchrun launch and every image of ``cams.splits``. After timing, the
two variants' seed maps are compared file by file (they are expected to be bit-identical when
every process runs one thread; the script reports the largest difference either way).

On CPU the one-process run uses all cores through PyTorch's threads; N processes get
``OMP_NUM_THREADS=1`` each (torchrun's default). On CUDA each process takes a GPU.

Run from the project directory:  python bench/cams_processes.py [--nproc 2] [--repeats 2] [--json PATH]
"""
from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _timing import environment, print_table, ratio, stats, write_json  # noqa: E402
from wsss import packs  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]


def scratch_copy(dest: Path) -> Path:
    for name in ("stages", "wsss", "params.yaml"):
        src = PROJECT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    for name in ("models", "data/prepared"):
        if not (PROJECT / name).exists():
            sys.exit(f"{name}/ is missing: run `dvc repro` (or `dvc pull`) first")
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).symlink_to(PROJECT / name)
    return dest


def run_cams(repo: Path, nproc: int) -> float:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["cams"]["nproc"] = nproc
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for out in ("cams", "previews"):
        shutil.rmtree(repo / out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stages.cams"], cwd=repo, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def largest_difference(a: Path, b: Path) -> tuple[int, float]:
    """Members and the largest difference of two seed-map packs, which must hold the same
    members in the same parts (the part files byte-identical where the maps are)."""
    x_pack, y_pack = packs.Pack(a), packs.Pack(b)
    if x_pack.members != y_pack.members or x_pack.parts != y_pack.parts:
        raise AssertionError("the two variants wrote different packs")
    worst = 0.0
    for name in x_pack.members:
        x, y = np.load(io.BytesIO(x_pack.read(name))), np.load(io.BytesIO(y_pack.read(name)))
        worst = max([worst] + [float(np.abs(x[k].astype(np.float64) - y[k]).max()) for k in x.files])
    return len(x_pack), worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    names = {1: "1 process", args.nproc: f"{args.nproc} processes"}
    times: dict[str, list[float]] = {n: [] for n in names.values()}
    with tempfile.TemporaryDirectory() as tmp:
        repo = scratch_copy(Path(tmp))
        for r in range(args.repeats):
            for nproc, name in names.items():
                times[name].append(run_cams(repo, nproc))
                print(f"round {r + 1}: {name}: {times[name][-1]:.1f} s", file=sys.stderr)
                if r == args.repeats - 1:
                    shutil.copytree(repo / "cams", Path(tmp) / f"cams_{nproc}")
        count, worst = largest_difference(Path(tmp) / "cams_1", Path(tmp) / f"cams_{args.nproc}")
    rows = {name: stats(t) for name, t in times.items()}
    print_table(rows)
    speed = ratio(rows, names[1], names[args.nproc])   # > 1: the processes are faster
    print(f"{count} files; largest seed-map difference between the variants: {worst:.3g}")
    if args.json:
        write_json(args.json, {"environment": environment(), "rows": rows, "speedup": speed,
                               "files": count, "max_abs_difference": worst})


if __name__ == "__main__":
    main()
