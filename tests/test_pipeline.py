"""End to end: the DVC pipeline on a tiny configuration, in a temporary copy of the repository."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY = {
    "data": {"demo": {"num_train_aug": 40, "num_train": 12, "num_val": 12, "min_size": 96, "max_size": 128}},
    "train": {"epochs": 2, "batch_size": 8, "resize_long": [96, 160], "num_workers": 0},
    "cams": {"scales": [1.0, 0.5], "num_previews": 2},
}


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = _merge(base[k], v) if isinstance(v, dict) else v
    return base


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", WSSS_DEVICE="cpu",
               DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@localhost",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@localhost", **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def copy_repo(dest: Path, overrides: dict) -> Path:
    """The repository's files (tracked and new, not ignored) in a fresh git repo, with tiny params."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\0")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file() and not f.startswith("dvc.lock"):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(_merge(params, overrides), sort_keys=False))
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "tiny"], dest)
    return dest


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    repo = copy_repo(tmp_path_factory.mktemp("repo"), TINY)
    run(["dvc", "repro"], repo)
    return repo


@pytest.mark.slow
def test_repro_produces_scored_seeds(tiny_run: Path):
    m = json.loads((tiny_run / "metrics/evaluate.json").read_text())
    assert 0.0 < m["seed"]["miou"] <= 1.0 and m["seed"]["map"] == "cam" and "rcam" not in m
    assert m["cam"]["miou"] == m["seed"]["miou"]
    assert 0.0 <= m["cam"]["threshold"] <= 0.95
    assert 0.0 < m["cls"]["map_per_image"] <= 1.0
    sweep = (tiny_run / "plots/seed_sweep.csv").read_text().splitlines()
    assert sweep[0] == "threshold,cam,rcam_fg" and len(sweep) == 21 and sweep[1].endswith(",NaN")
    assert max(float(r.split(",")[1]) for r in sweep[1:]) == pytest.approx(m["seed"]["miou"], abs=1e-6)
    # refine.method none: the CAM cut at refine.bg_threshold (0.5) is the sweep's point at 0.5
    at_half = next(float(r.split(",")[1]) for r in sweep[1:] if r.startswith("0.5000,"))
    assert m["pseudo"]["miou"] == pytest.approx(at_half, abs=1e-6)
    ids = (tiny_run / "data/prepared/VOC2012/ImageSets/Segmentation/train.txt").read_text().split()
    assert sorted(p.stem for p in (tiny_run / "cams/train").glob("*.npz")) == sorted(ids)
    assert len(list((tiny_run / "previews").glob("*.png"))) == 2
    run_info = json.loads((tiny_run / "metrics/run.json").read_text())
    assert {"torch", "timm", "dvc", "wsss"} <= set(run_info["versions"])
    shown = run(["dvc", "metrics", "show"], tiny_run).stdout
    assert "seed.miou" in shown and "cls.map_per_image" in shown
    live = json.loads((tiny_run / "dvclive/train/metrics.json").read_text())
    assert live["train"]["loss_cls"] > 0 and 0 < live["epoch"]["val_map_per_image"] <= 1


@pytest.mark.slow
def test_repro_is_deterministic_and_cached(tiny_run: Path):
    before = (tiny_run / "metrics/evaluate.json").read_text()
    weights = (tiny_run / "models/model.safetensors").read_bytes()
    # nothing changed: only the always-checked prepare stage runs, the rest is skipped
    out = run(["dvc", "repro"], tiny_run).stdout
    assert "Stage 'train' didn't change, skipping" in out
    run(["dvc", "repro", "-f", "train"], tiny_run)
    run(["dvc", "repro"], tiny_run)
    assert (tiny_run / "models/model.safetensors").read_bytes() == weights
    assert (tiny_run / "metrics/evaluate.json").read_text() == before


@pytest.fixture
def s3_server():
    """A local S3-protocol server (moto) on 127.0.0.1 with an empty bucket; yields (url, env)."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        pytest.skip(f"no local S3 server: {exc} (pip install 'moto[server]' dvc-s3)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - any failure to listen means: skip, saying why
        pytest.skip(f"the local S3 server (moto) could not start on 127.0.0.1:{port}: {exc}")
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket="team")
    yield endpoint, env
    server.stop()


def _round_trip(repo: Path, clone: Path, url: str, env: dict, endpoint: str | None = None) -> dict:
    """repo: dvc repro done. Set the remote, commit, push; clone, pull, check nothing is left to do."""
    run(["dvc", "remote", "add", "-f", "-d", "team", url], repo)
    if endpoint:
        run(["dvc", "remote", "modify", "team", "endpointurl", endpoint], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "pipeline results and the team remote"], repo)
    start = time.perf_counter()
    run(["dvc", "push"], repo, env=env)
    pushed = time.perf_counter() - start
    run(["git", "clone", "-q", str(repo), str(clone)], clone.parent)
    start = time.perf_counter()
    run(["dvc", "pull"], clone, env=env)
    pulled = time.perf_counter() - start
    status = run(["dvc", "status"], clone).stdout
    # only the always-changed prepare stage (it hashes the data) is ever listed
    assert [ln.strip() for ln in status.splitlines() if ln.strip()] == ["prepare:", "always changed"], status
    out = run(["dvc", "repro"], clone, env=env).stdout
    for stage in ("train", "cams", "relations", "refine", "evaluate"):
        assert f"Stage '{stage}' didn't change, skipping" in out, out
    assert run(["dvc", "metrics", "show", "--json"], clone).stdout == run(["dvc", "metrics", "show", "--json"], repo).stdout
    assert (clone / "models/model.safetensors").read_bytes() == (repo / "models/model.safetensors").read_bytes()
    return {"push_s": pushed, "pull_s": pulled}


@pytest.mark.slow
def test_team_round_trip_local_remote(tiny_run: Path, tmp_path: Path):
    """One clone runs the pipeline and pushes to a directory remote; a fresh clone pulls and has
    nothing left to do, with the same metrics."""
    times = _round_trip(tiny_run, tmp_path / "clone", str(tmp_path / "store"), {})
    print(f"local remote: push {times['push_s']:.1f} s, pull {times['pull_s']:.1f} s")


@pytest.mark.slow
def test_team_round_trip_s3_remote(tiny_run: Path, tmp_path: Path, s3_server):
    endpoint, env = s3_server
    times = _round_trip(tiny_run, tmp_path / "clone", "s3://team/wsss", env, endpoint)
    print(f"S3 remote (moto): push {times['push_s']:.1f} s, pull {times['pull_s']:.1f} s")


@pytest.mark.slow
def test_external_root_relative_and_absolute(tiny_run: Path, tmp_path: Path):
    """A VOC root outside the repo, named relatively or absolutely, gives the same manifest."""
    data = tmp_path / "VOCdevkit" / "VOC2012"
    shutil.copytree(tiny_run / "data/prepared/VOC2012", data)
    work = copy_repo(tmp_path / "repo", TINY)
    manifests = []
    for root in (os.path.relpath(data, work), str(data)):
        params = yaml.safe_load((work / "params.yaml").read_text())
        params["data"]["root"] = root
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run([sys.executable, "-m", "stages.prepare"], work)
        manifests.append(json.loads((work / "data/prepared/manifest.json").read_text()))
    assert manifests[0] == manifests[1]
    demo = json.loads((tiny_run / "data/prepared/manifest.json").read_text())
    assert manifests[0]["fingerprint"] == demo["fingerprint"]
    assert not (work / "data/prepared/VOC2012").exists()


@pytest.mark.slow
def test_v2_experiment_scores_rcam(tiny_run: Path):
    """`dvc exp run -S model.version=v2` on the V1 workspace: V2 trains, stores CAM + R-CAM, and
    evaluate leads with the R-CAM (argmax over C+1), the CAM sweep reported beside it."""
    v1 = json.loads((tiny_run / "metrics/evaluate.json").read_text())
    run(["dvc", "exp", "run", "-S", "model.version=v2", "-n", "tiny-v2"], tiny_run)
    m = json.loads((tiny_run / "metrics/evaluate.json").read_text())
    assert m["seed"]["map"] == "rcam" and m["seed"]["miou"] == m["rcam"]["miou"]
    assert 0.0 < m["rcam"]["miou"] <= 1.0 and 0.0 < m["cam"]["miou"] <= 1.0
    assert m["cam"]["miou"] != v1["cam"]["miou"]  # a different model was trained
    sweep = (tiny_run / "plots/seed_sweep.csv").read_text().splitlines()
    assert sweep[0] == "threshold,cam,rcam_fg" and len(sweep) == 21
    maps = np.load(next((tiny_run / "cams/train").glob("*.npz")), allow_pickle=False)
    assert maps["rcam"].shape == (len(maps["keys"]) + 1, *maps["cam"].shape[1:])
    live = json.loads((tiny_run / "dvclive/train/metrics.json").read_text())
    assert {"loss_cls", "loss_gsc", "loss_ccl", "loss_total"} <= set(live["train"])
    shown = run(["dvc", "exp", "show", "--csv"], tiny_run).stdout
    assert "tiny-v2" in shown and "rcam.miou" in shown


@pytest.mark.slow
def test_crf_refinement_experiment(tiny_run: Path):
    """`dvc exp run -S refine.method=crf` (after the V2 test: on V2's R-CAMs) re-runs only refine and
    evaluate, writes palette PNG pseudo labels and scores them."""
    from PIL import Image

    before = json.loads((tiny_run / "metrics/evaluate.json").read_text())
    out = run(["dvc", "exp", "run", "-S", "refine.method=crf", "-n", "tiny-crf"], tiny_run).stdout
    assert "Stage 'train' didn't change, skipping" in out and "Stage 'cams' didn't change, skipping" in out
    m = json.loads((tiny_run / "metrics/evaluate.json").read_text())
    assert m["seed"] == before["seed"] and 0.0 < m["pseudo"]["miou"] <= 1.0
    assert m["pseudo"]["miou"] != before["pseudo"]["miou"]
    info = json.loads((tiny_run / "pseudo/refine.json").read_text())
    assert info["method"] == "crf" and info["map"] == before["seed"]["map"]
    ids = (tiny_run / "data/prepared/VOC2012/ImageSets/Segmentation/train.txt").read_text().split()
    pngs = sorted((tiny_run / "pseudo/train").glob("*.png"))
    assert [p.stem for p in pngs] == sorted(ids)
    with Image.open(pngs[0]) as im:
        assert im.mode == "P" and im.size[::-1] == np.load(tiny_run / "cams/train" / f"{pngs[0].stem}.npz")["cam"].shape[1:]


@pytest.mark.slow
def test_irn_refinement_experiment(tiny_run: Path):
    """`dvc exp run -S refine.method=irn` (after the V2 test: on V2's R-CAMs, then on its CAMs):
    confident labels of train_aug, a relation net, the walk; the classifier and seeds are reused."""
    from PIL import Image

    out = run(["dvc", "exp", "run", "-S", "refine.method=irn", "-S", "refine.irn.epochs=1",
               "-S", "refine.irn.batch_size=8", "-n", "tiny-irn"], tiny_run).stdout
    assert "Stage 'train' didn't change, skipping" in out and "Stage 'cams' didn't change, skipping" in out
    info = json.loads((tiny_run / "relations/relations.json").read_text())
    assert info["trained"] and info["split"] == "train_aug" and info["map"] == "rcam"
    assert sum(info["confident_pixels"].values()) == pytest.approx(1.0, abs=1e-3)
    aug = (tiny_run / "data/prepared/VOC2012/ImageSets/Segmentation/train_aug.txt").read_text().split()
    assert sorted(p.stem for p in (tiny_run / "relations/labels").glob("*.png")) == sorted(aug)
    assert (tiny_run / "relations/relations.safetensors").stat().st_size > 0
    m = json.loads((tiny_run / "metrics/evaluate.json").read_text())
    assert 0.0 < m["pseudo"]["miou"] <= 1.0
    record = json.loads((tiny_run / "pseudo/refine.json").read_text())
    assert record["method"] == "irn" and record["relations"]["seconds"]["training"] > 0
    assert json.loads((tiny_run / "metrics/run.json").read_text())["refine"]["method"] == "irn"
    ids = (tiny_run / "data/prepared/VOC2012/ImageSets/Segmentation/train.txt").read_text().split()
    pngs = sorted((tiny_run / "pseudo/train").glob("*.png"))
    assert [p.stem for p in pngs] == sorted(ids)
    with Image.open(pngs[0]) as im:
        assert im.mode == "P"
    # a walk parameter re-runs the walk alone, not the relation net
    out = run(["dvc", "exp", "run", "-S", "refine.method=irn", "-S", "refine.irn.epochs=1",
               "-S", "refine.irn.batch_size=8", "-S", "refine.irn.bg_threshold=0.6", "-n", "tiny-irn-bg"],
              tiny_run).stdout
    assert "Stage 'relations' didn't change, skipping" in out and "Running stage 'refine'" in out
    # the same relation-net recipe on V2's CAMs (refine.map=cam): relations re-trains, seeds reused
    out = run(["dvc", "exp", "run", "-S", "refine.method=irn", "-S", "refine.irn.epochs=1",
               "-S", "refine.irn.batch_size=8", "-S", "refine.map=cam", "-n", "tiny-irn-cam"], tiny_run).stdout
    assert "Stage 'cams' didn't change, skipping" in out
    assert json.loads((tiny_run / "relations/relations.json").read_text())["map"] == "cam"
    assert 0.0 < json.loads((tiny_run / "metrics/evaluate.json").read_text())["pseudo"]["miou"] <= 1.0


# README "Comparing experiments": the columns of the focused `dvc exp show`
EXP_COLUMNS = (r"^(Experiment|rev|seed\.(miou|map)|pseudo\.miou|cls\.map_per_(image|class)|"
               r"model\.(version|backbone)|loss\.w_(gsc|ccl)|train\.epochs|refine\.(method|map))$")


@pytest.mark.slow
def test_experiment_views(tiny_run: Path, tmp_path: Path):
    """After the experiments above: README's `dvc exp show` lists each one's seed mIoU, mAP and
    key params (matching its metrics), and `dvc plots show` renders the training curves, the
    threshold sweep and the per-class IoU."""
    import csv
    import io as text_io

    out = run(["dvc", "exp", "show", "--csv", "--drop", ".*", "--keep", EXP_COLUMNS], tiny_run).stdout
    rows = list(csv.DictReader(text_io.StringIO(out)))
    assert set(rows[0]) == {"Experiment", "rev", "seed.miou", "seed.map", "pseudo.miou", "cls.map_per_image",
                            "cls.map_per_class", "model.version", "model.backbone", "loss.w_gsc", "loss.w_ccl",
                            "train.epochs", "refine.method", "refine.map"}
    named = {r["Experiment"]: r for r in rows if r["Experiment"]}
    assert {"tiny-v2", "tiny-crf", "tiny-irn", "tiny-irn-cam"} <= set(named)
    assert named["tiny-v2"]["model.version"] == "v2" and named["tiny-v2"]["seed.map"] == "rcam"
    assert named["tiny-crf"]["refine.method"] == "crf" and named["tiny-irn-cam"]["refine.map"] == "cam"
    workspace = next(r for r in rows if r["rev"] == "workspace")
    m = json.loads((tiny_run / "metrics/evaluate.json").read_text())   # the last experiment's
    assert float(workspace["seed.miou"]) == pytest.approx(m["seed"]["miou"])
    assert float(workspace["cls.map_per_image"]) == pytest.approx(m["cls"]["map_per_image"])
    # the plots: dvc.yaml's two seed plots and DVCLive's training curves, rendered to HTML
    shown = json.loads(run(["dvc", "plots", "show", "--json"], tiny_run).stdout)["data"]
    curves = {f"dvclive/train/plots/metrics/{c}.tsv" for c in
              ("epoch/loss", "epoch/val_map_per_image", "epoch/val_map_per_class", "train/lr",
               "train/loss_cls", "train/loss_gsc", "train/loss_ccl", "train/loss_total")}
    assert set(shown) == {"Seed mIoU vs background threshold", "Seed IoU per class (best threshold)"} | curves
    # the V2 workspace: both sweeps drawn; per-class bars hold one bar per class
    sweep = shown["Seed mIoU vs background threshold"][0]["content"]["data"]["values"]
    assert {r["field"] for r in sweep} == {"cam", "rcam_fg"} and len(sweep) == 2 * 20
    bars = shown["Seed IoU per class (best threshold)"][0]["content"]["data"]["values"]
    per_class = json.loads((tiny_run / "metrics/per_class.json").read_text())
    assert [r["class"] for r in bars] == list(per_class[per_class["seed_map"]])
    html = tmp_path / "plots"
    run(["dvc", "plots", "show", "-o", str(html)], tiny_run)
    page = (html / "index.html").read_text()
    assert "Seed IoU per class" in page and "val_map_per_image" in page


@pytest.mark.slow
def test_temp_experiment_reuses_the_classifier(tiny_run: Path):
    """An experiment in a temporary copy (`--temp`, as `--queue` runs them) finds the trained
    classifier and seeds in the cache: the copy's data manifest hashes the same as the workspace's.
    (The copy starts from git: dvc.lock is committed first, as a team does.)"""
    run(["git", "add", "-A"], tiny_run)
    run(["git", "commit", "-qm", "results"], tiny_run)
    out = run(["dvc", "exp", "run", "--temp", "-S", "refine.bg_threshold=0.4", "-n", "tiny-temp"], tiny_run).stdout
    assert "Stage 'train' didn't change, skipping" in out and "Stage 'cams' didn't change, skipping" in out
    assert "Running stage 'refine'" in out


@pytest.mark.parametrize("override, culprit", [
    ({"model": {"version": "v3"}}, "model.version"),
    ({"cams": {"scales": [1.0, 0]}}, "cams.scales"),
    ({"train": {"epoch": 3}}, "train.epoch"),
])
def test_bad_params_fail_before_work(tmp_path: Path, override: dict, culprit: str):
    repo = copy_repo(tmp_path, override)
    proc = run([sys.executable, "-m", "stages.prepare"], repo, check=False)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("prepare: error:") and culprit in lines[-1]
    assert not (repo / "data/prepared").exists()


def test_corrupt_image_fails_prepare_naming_file(tmp_path: Path):
    from wsss.data.demo import generate_demo

    data = tmp_path / "VOC2012"
    generate_demo(data, seed=1, n_train_aug=8, n_train=3, n_val=3, min_size=96, max_size=112)
    bad = data / "JPEGImages" / "demo_000002.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    repo = copy_repo(tmp_path / "repo", {"data": {"root": str(data)}})
    proc = run([sys.executable, "-m", "stages.prepare"], repo, check=False)
    assert proc.returncode == 2
    assert "demo_000002.jpg" in proc.stderr and "corrupt" in proc.stderr
    assert not (repo / "data/prepared/manifest.json").exists()
