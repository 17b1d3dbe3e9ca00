"""End to end: the DVC pipeline on a tiny configuration, in a temporary copy of the repository."""
from __future__ import annotations

import io
import json
import math
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
import yaml

from e2e import copy_repo, fork, pack_ids, pack_member, run
from wsss import artifacts, packs


@pytest.fixture(scope="session")
def tiny_v2(tiny_baseline: Path, tmp_path_factory) -> Path:
    """The baseline after `dvc exp run -S model.version=v2 -n tiny-v2` (in its own copy): read only."""
    repo = fork(tiny_baseline, tmp_path_factory.mktemp("v2") / "repo")
    run(["dvc", "exp", "run", "-S", "model.version=v2", "-n", "tiny-v2"], repo)
    return repo


def _ids(repo: Path, split: str) -> list[str]:
    return (repo / "data/demo/ImageSets/Segmentation" / f"{split}.txt").read_text().split()


@pytest.mark.slow
def test_repro_produces_scored_seeds(tiny_baseline: Path):
    tiny_run = tiny_baseline
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
    both = list(dict.fromkeys(_ids(tiny_run, "train") + _ids(tiny_run, "train_aug")))
    assert pack_ids(tiny_run / "cams", ".npz") == both          # each image once, in the splits' order
    assert len(list((tiny_run / "cams").glob("part-*.zip"))) == math.ceil(len(both) / packs.PER_PART)
    assert len(list((tiny_run / "previews").glob("*.png"))) == 2
    run_info = json.loads((tiny_run / "metrics/run.json").read_text())
    assert {"torch", "timm", "dvc", "wsss"} <= set(run_info["versions"])
    shown = run(["dvc", "metrics", "show"], tiny_run).stdout
    assert "seed.miou" in shown and "cls.map_per_image" in shown
    live = json.loads((tiny_run / "dvclive/train/metrics.json").read_text())
    assert live["train"]["loss_cls"] > 0 and 0 < live["epoch"]["val_map_per_image"] <= 1
    # step 3: pseudo labels of the training split too, a segmenter trained on them, scored on val
    assert pack_ids(tiny_run / "pseudo", ".png") == both
    seg = json.loads((tiny_run / "metrics/segment.json").read_text())
    assert seg["labels"] == "pseudo" and seg["split"] == "val" and seg["images"] == len(_ids(tiny_run, "val"))
    assert all(0 < seg[k]["miou"] <= 1 for k in ("single_scale", "msc", "msc_crf"))
    bars = (tiny_run / "plots/segment_per_class.csv").read_text().splitlines()
    assert bars[0] == "class,iou,precision,recall" and len(bars) == 1 + 7
    seg_live = json.loads((tiny_run / "dvclive/segment/metrics.json").read_text())
    assert seg_live["train"]["loss_ce"] > 0 and 0 <= seg_live["epoch"]["val_miou"] <= 1
    assert "segment.json" in shown or "single_scale.miou" in shown


@pytest.mark.slow
def test_repro_is_deterministic_and_cached(tiny_repo: Path):
    """After `dvc repro`, nothing is left to do: `dvc status` is clean and a second `dvc repro` runs no
    stage at all (no always-changed stage). A forced re-train gives the same bytes and metrics."""
    assert run(["dvc", "status"], tiny_repo).stdout.strip() == "Data and pipelines are up to date."
    out = run(["dvc", "repro"], tiny_repo).stdout
    assert "Running stage" not in out and "Stage 'prepare' didn't change, skipping" in out
    before = (tiny_repo / "metrics/evaluate.json").read_text()
    weights = (tiny_repo / "models/model.safetensors").read_bytes()
    run(["dvc", "repro", "-f", "train"], tiny_repo)
    run(["dvc", "repro"], tiny_repo)
    assert (tiny_repo / "models/model.safetensors").read_bytes() == weights
    assert (tiny_repo / "metrics/evaluate.json").read_text() == before


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
    assert status.strip() == "Data and pipelines are up to date.", status
    out = run(["dvc", "repro"], clone, env=env).stdout
    for stage in ("demo", "prepare", "train", "cams", "relations", "refine", "evaluate", "segment", "segment_eval"):
        assert f"Stage '{stage}' didn't change, skipping" in out, out
    assert run(["dvc", "metrics", "show", "--json"], clone).stdout == run(["dvc", "metrics", "show", "--json"], repo).stdout
    assert (clone / "models/model.safetensors").read_bytes() == (repo / "models/model.safetensors").read_bytes()
    return {"push_s": pushed, "pull_s": pulled}


@pytest.mark.slow
def test_team_round_trip_local_remote(tiny_repo: Path, tmp_path: Path):
    """One clone runs the pipeline and pushes to a directory remote; a fresh clone pulls and has
    nothing left to do, with the same metrics."""
    times = _round_trip(tiny_repo, tmp_path / "clone", str(tmp_path / "store"), {})
    print(f"local remote: push {times['push_s']:.1f} s, pull {times['pull_s']:.1f} s")


@pytest.mark.slow
def test_team_round_trip_s3_remote(tiny_repo: Path, tmp_path: Path, s3_server):
    endpoint, env = s3_server
    times = _round_trip(tiny_repo, tmp_path / "clone", "s3://team/wsss", env, endpoint)
    print(f"S3 remote (moto): push {times['push_s']:.1f} s, pull {times['pull_s']:.1f} s")


def _set_root(repo: Path, root: str) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["root"] = root
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _ran(out: str) -> list[str]:
    return [ln.split("'")[1] for ln in out.splitlines() if ln.startswith("Running stage '")]


@pytest.mark.slow
def test_external_root_relative_and_absolute(tiny_repo: Path, tmp_path: Path):
    """A data set outside the repo, named absolutely or relatively, in the workspace and in a --temp
    experiment: the same data gives the same manifest (nothing downstream re-runs); `dvc status` is
    clean when nothing changed; a changed file under the root re-runs prepare, and what depends on
    the files the pipeline reads (here: a file no split lists re-runs prepare alone)."""
    data = tmp_path / "VOCdevkit" / "VOC2012"
    shutil.copytree(tiny_repo / "data/demo", data)
    manifest = (tiny_repo / "data/prepared/manifest.json").read_text()
    for root in (str(data), os.path.relpath(data, tiny_repo)):
        _set_root(tiny_repo, root)
        out = run(["dvc", "repro"], tiny_repo).stdout
        assert _ran(out) == ["demo", "prepare"], out       # the demo is not generated: a note only
        assert (tiny_repo / "data/prepared/manifest.json").read_text() == manifest
        assert not (tiny_repo / "data/demo/JPEGImages").exists()
        assert run(["dvc", "status"], tiny_repo).stdout.strip() == "Data and pipelines are up to date."
        (data / f"notes-{len(root)}.txt").write_text("a file no split lists")
        assert "prepare" in run(["dvc", "status"], tiny_repo).stdout
        out = run(["dvc", "repro"], tiny_repo).stdout
        assert _ran(out) == ["prepare"], out
    # a scored mask: what scores (cams' previews, evaluate) is stale, the classifier is not
    mask = data / "SegmentationClass" / f"{(data / 'ImageSets/Segmentation/train.txt').read_text().split()[0]}.png"
    mask.write_bytes(mask.read_bytes() + b"\0")       # bytes after the PNG end: same pixels, new file
    run(["dvc", "repro", "prepare"], tiny_repo)
    status = run(["dvc", "status"], tiny_repo).stdout
    stale = {ln[:-1] for ln in status.splitlines() if ln and not ln[0].isspace() and ln.endswith(":")}
    assert stale == {"cams", "evaluate"}, status
    assert "modified:           data/prepared/masks.json" in status, status
    # an annotation edited without changing the labels: the manifest (content, not bytes) is the same
    xml = data / "Annotations" / mask.with_suffix(".xml").name
    xml.write_text(xml.read_text().replace("</annotation>", "<!-- edited --></annotation>"))
    run(["dvc", "repro", "prepare"], tiny_repo)
    assert "train:" not in run(["dvc", "status"], tiny_repo).stdout
    # an image's label: training data changed, so train and everything after it are stale
    text = xml.read_text()
    absent = next(c for c in ("disc", "square", "triangle", "star", "cross", "ring") if f"<name>{c}</name>" not in text)
    xml.write_text(text.replace("</annotation>", f"<object><name>{absent}</name></object></annotation>"))
    run(["dvc", "repro", "prepare"], tiny_repo)
    assert "train:" in run(["dvc", "status"], tiny_repo).stdout
    # --temp (as --queue): an absolute root resolves in DVC's temporary copy; a data change is seen
    _set_root(tiny_repo, str(data))
    run(["dvc", "repro", "prepare"], tiny_repo)
    run(["dvc", "commit", "-f", "train", "cams", "relations", "refine", "evaluate", "segment", "segment_eval"], tiny_repo)
    run(["git", "add", "-A"], tiny_repo)
    run(["git", "commit", "-qm", "external root"], tiny_repo)
    (data / "notes-temp.txt").write_text("changed after the commit")
    out = run(["dvc", "exp", "run", "--temp", "-n", "tiny-external"], tiny_repo).stdout
    assert _ran(out) == ["prepare"], out


@pytest.mark.slow
def test_v2_experiment_scores_rcam(tiny_baseline: Path, tiny_v2: Path):
    """`dvc exp run -S model.version=v2` on the V1 workspace: V2 trains, stores CAM + R-CAM, and
    evaluate leads with the R-CAM (argmax over C+1), the CAM sweep reported beside it. With the
    default loss.grad_to (rcam) GSC and CCL train only the fused branch: V2's classifier is V1's,
    CAM and mAP equal to the digit; its health (seed shares, collapse watch) is recorded."""
    v1 = json.loads((tiny_baseline / "metrics/evaluate.json").read_text())
    tiny_run = tiny_v2
    m = json.loads((tiny_run / "metrics/evaluate.json").read_text())
    assert m["seed"]["map"] == "rcam" and m["seed"]["miou"] == m["rcam"]["miou"]
    assert 0.0 < m["rcam"]["miou"] <= 1.0 and 0.0 < m["cam"]["miou"] <= 1.0
    assert m["rcam"]["miou"] != v1["cam"]["miou"]
    assert m["cam"]["miou"] == v1["cam"]["miou"] and m["cls"] == v1["cls"]     # V1's classifier
    health = json.loads((tiny_run / "metrics/train.json").read_text())
    assert health["version"] == "v2" and set(health["collapse"]) >= {"collapsed", "epoch_seed_bg"}
    assert 0 <= health["last_epoch"]["seed_bg"] <= 1 and "rcam_bg" in health["last_epoch"]
    sweep = (tiny_run / "plots/seed_sweep.csv").read_text().splitlines()
    assert sweep[0] == "threshold,cam,rcam_fg" and len(sweep) == 21
    maps = artifacts.load_cams(pack_member(tiny_run / "cams", artifacts.cam_name(_ids(tiny_run, "train")[0])))
    assert maps["rcam"].shape == (len(maps["keys"]) + 1, *maps["cam"].shape[1:])
    live = json.loads((tiny_run / "dvclive/train/metrics.json").read_text())
    assert {"loss_cls", "loss_gsc", "loss_ccl", "loss_total", "health_seed_bg", "health_rcam_bg",
            "health_cam_in_seed", "health_cam_off_seed"} <= set(live["train"])
    shown = run(["dvc", "exp", "show", "--csv"], tiny_run).stdout
    assert "tiny-v2" in shown and "rcam.miou" in shown


@pytest.mark.slow
def test_crf_refinement_experiment(tiny_v2: Path, tmp_path: Path):
    """`dvc exp run -S refine.method=crf` (on V2's R-CAMs) re-runs only refine and evaluate, writes
    palette PNG pseudo labels and scores them."""
    from PIL import Image

    tiny_run = fork(tiny_v2, tmp_path / "repo")

    before = json.loads((tiny_run / "metrics/evaluate.json").read_text())
    out = run(["dvc", "exp", "run", "-S", "refine.method=crf", "-n", "tiny-crf"], tiny_run).stdout
    assert "Stage 'train' didn't change, skipping" in out and "Stage 'cams' didn't change, skipping" in out
    m = json.loads((tiny_run / "metrics/evaluate.json").read_text())
    assert m["seed"] == before["seed"] and 0.0 < m["pseudo"]["miou"] <= 1.0
    assert m["pseudo"]["miou"] != before["pseudo"]["miou"]
    info = json.loads((tiny_run / "pseudo/refine.json").read_text())
    assert info["method"] == "crf" and info["map"] == before["seed"]["map"]
    ids = _ids(tiny_run, "train")
    assert set(ids) <= set(pack_ids(tiny_run / "pseudo", ".png"))
    png = pack_member(tiny_run / "pseudo", artifacts.label_name(ids[0])).read_bytes()
    with Image.open(io.BytesIO(png)) as im:
        cam = artifacts.load_cams(pack_member(tiny_run / "cams", artifacts.cam_name(ids[0])))["cam"]
        assert im.mode == "P" and im.size[::-1] == cam.shape[1:]


@pytest.mark.slow
def test_irn_refinement_experiment(tiny_v2: Path, tmp_path: Path):
    """`dvc exp run -S refine.method=irn` (on V2's R-CAMs, then on its CAMs): confident labels of
    train_aug, a relation net, the walk; the classifier and seeds are reused."""
    from PIL import Image

    tiny_run = fork(tiny_v2, tmp_path / "repo")

    out = run(["dvc", "exp", "run", "-S", "refine.method=irn", "-S", "refine.irn.epochs=1",
               "-S", "refine.irn.batch_size=8", "-n", "tiny-irn"], tiny_run).stdout
    assert "Stage 'train' didn't change, skipping" in out and "Stage 'cams' didn't change, skipping" in out
    info = json.loads((tiny_run / "relations/relations.json").read_text())
    assert info["trained"] and info["split"] == "train_aug" and info["map"] == "rcam"
    assert sum(info["confident_pixels"].values()) == pytest.approx(1.0, abs=1e-3)
    aug = _ids(tiny_run, "train_aug")
    assert pack_ids(tiny_run / "relations/labels", ".png") == aug
    assert (tiny_run / "relations/relations.safetensors").stat().st_size > 0
    m = json.loads((tiny_run / "metrics/evaluate.json").read_text())
    assert 0.0 < m["pseudo"]["miou"] <= 1.0
    record = json.loads((tiny_run / "pseudo/refine.json").read_text())
    assert record["method"] == "irn" and record["relations"]["seconds"]["training"] > 0
    assert json.loads((tiny_run / "metrics/run.json").read_text())["refine"]["method"] == "irn"
    ids = _ids(tiny_run, "train")
    assert set(ids) <= set(pack_ids(tiny_run / "pseudo", ".png"))
    with Image.open(io.BytesIO(pack_member(tiny_run / "pseudo", artifacts.label_name(ids[0])).read_bytes())) as im:
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
def test_experiment_views(tiny_v2: Path, tmp_path: Path):
    """After V2, CRF and IRN experiments: README's `dvc exp show` lists each one's seed mIoU, mAP
    and key params (matching its metrics), and `dvc plots show` renders the training curves, the
    threshold sweep and the per-class IoU."""
    import csv
    import io as text_io

    tiny_run = fork(tiny_v2, tmp_path / "repo")
    run(["dvc", "exp", "run", "-S", "refine.method=crf", "-n", "tiny-crf"], tiny_run)
    run(["dvc", "exp", "run", "-S", "refine.method=irn", "-S", "refine.irn.epochs=1", "-S", "refine.irn.batch_size=8",
         "-S", "refine.map=cam", "-n", "tiny-irn-cam"], tiny_run)

    out = run(["dvc", "exp", "show", "--csv", "--drop", ".*", "--keep", EXP_COLUMNS], tiny_run).stdout
    rows = list(csv.DictReader(text_io.StringIO(out)))
    assert set(rows[0]) == {"Experiment", "rev", "seed.miou", "seed.map", "pseudo.miou", "cls.map_per_image",
                            "cls.map_per_class", "model.version", "model.backbone", "loss.w_gsc", "loss.w_ccl",
                            "train.epochs", "refine.method", "refine.map"}
    named = {r["Experiment"]: r for r in rows if r["Experiment"]}
    assert {"tiny-v2", "tiny-crf", "tiny-irn-cam"} <= set(named)
    assert named["tiny-v2"]["model.version"] == "v2" and named["tiny-v2"]["seed.map"] == "rcam"
    assert named["tiny-crf"]["refine.method"] == "crf" and named["tiny-irn-cam"]["refine.map"] == "cam"
    workspace = next(r for r in rows if r["rev"] == "workspace")
    m = json.loads((tiny_run / "metrics/evaluate.json").read_text())   # the last experiment's
    assert float(workspace["seed.miou"]) == pytest.approx(m["seed"]["miou"])
    assert float(workspace["cls.map_per_image"]) == pytest.approx(m["cls"]["map_per_image"])
    # the plots: dvc.yaml's two seed plots and DVCLive's training curves, rendered to HTML
    shown = json.loads(run(["dvc", "plots", "show", "--json"], tiny_run).stdout)["data"]
    from wsss.diagnostics import V2_KEYS

    curves = {f"dvclive/train/plots/metrics/{c}.tsv" for c in
              ("epoch/loss", "epoch/val_map_per_image", "epoch/val_map_per_class", "train/lr",
               "train/loss_cls", "train/loss_gsc", "train/loss_ccl", "train/loss_total",
               "epoch/loss_cls", "epoch/loss_gsc", "epoch/loss_ccl",
               *(f"{when}/health_{k}" for k in V2_KEYS for when in ("train", "epoch")))}
    # step 3: the segmenter's per-class bars and its curves (loss per step and epoch, val mIoU)
    curves |= {f"dvclive/segment/plots/metrics/{c}.tsv" for c in
               ("epoch/loss", "epoch/loss_ce", "epoch/health_labelled", "epoch/val_miou", "train/lr",
                "train/loss_ce", "train/loss_total", "train/health_labelled")}
    assert set(shown) == {"Seed mIoU vs background threshold", "Seed IoU per class (best threshold)",
                          "Segmenter IoU per class (val, best setting)"} | curves, sorted(set(shown) ^ curves)
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
def test_ground_truth_upper_bound_retrains_only_the_segmenter(tiny_repo: Path):
    """`-S segment.labels=gt`: the same segmenter on the training split's masks. Only prepare (which
    now fingerprints those masks), segment and segment_eval run; the classifier, its seeds and the
    pseudo labels are reused; the scores say which labels they came from."""
    pseudo = json.loads((tiny_repo / "metrics/segment.json").read_text())
    out = run(["dvc", "exp", "run", "-S", "segment.labels=gt", "-n", "tiny-gt"], tiny_repo).stdout
    assert _ran(out) == ["prepare", "segment", "segment_eval"], out
    gt = json.loads((tiny_repo / "metrics/segment.json").read_text())
    assert gt["labels"] == "gt" and pseudo["labels"] == "pseudo"
    assert json.loads((tiny_repo / "segmenter/model.json").read_text())["labels"] == "gt"
    assert 0 < gt["msc"]["miou"] <= 1


def _set_params(repo: Path, overrides: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in overrides.items():
        section, name = key.split(".")
        params[section][name] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _fingerprints(obj) -> list[str]:
    """Every ``fingerprint`` value of a masks record."""
    if isinstance(obj, dict):
        return [v for k, x in obj.items() for v in ([x] if k == "fingerprint" else _fingerprints(x))]
    return []


def _numbers(obj, prefix=""):
    """Every number of a metrics file, by its dotted key."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _numbers(val, f"{prefix}{key}.").items()}
    return {prefix[:-1]: obj} if isinstance(obj, (int, float)) and not isinstance(obj, bool) else {}


@pytest.mark.slow
def test_demo_in_coco_form_gives_the_same_scores(tiny_baseline: Path, tmp_path: Path):
    """`data.format: coco`: the demo written as COCO (same images; objects as polygons traced along
    pixel edges, rings as RLE, the ignore band as crowd regions), read by the COCO reader with
    pycocotools, masks rasterised by prepare. Same data, two readers: the rasterised masks equal
    the VOC masks (their fingerprints are equal), so every score of the pipeline must be equal:
    the bound on what rasterisation may change is 0 here, and it holds to the last digit."""
    repo = fork(tiny_baseline, tmp_path / "repo")
    _set_params(repo, {"data.format": "coco"})
    run(["dvc", "repro"], repo)
    assert (repo / "data/demo/annotations/instances_train_aug.json").exists()
    assert not (repo / "data/demo/JPEGImages").exists()
    masks = pack_ids(repo / "data/prepared/masks", ".png")
    assert masks == sorted(_ids(tiny_baseline, "train") + _ids(tiny_baseline, "val"))
    for name in ("masks.json", "segment_masks.json"):       # the same masks (fingerprints), other paths
        voc, got = (_numbers(json.loads((r / "data/prepared" / name).read_text())) for r in (tiny_baseline, repo))
        fingerprints = [json.loads((r / "data/prepared" / name).read_text()) for r in (tiny_baseline, repo)]
        assert got == voc and _fingerprints(fingerprints[0]) == _fingerprints(fingerprints[1]), name
    for name in ("evaluate.json", "segment.json"):
        voc, got = (_numbers(json.loads((r / "metrics" / name).read_text())) for r in (tiny_baseline, repo))
        assert got == voc, name
    assert json.loads((repo / "data/prepared/manifest.json").read_text())["format"] == "coco"


@pytest.mark.slow
def test_labels_only_demo_runs_the_whole_pipeline(tiny_baseline: Path, tmp_path: Path):
    """`data.format: labels`: the demo's images and a labels.csv, no masks. Classifier, seeds,
    pseudo labels and the segmenter all run; evaluate reports mAP (equal to the VOC run's: same
    images and labels) and says plainly that seed mIoU needs masks; so does segment_eval."""
    repo = fork(tiny_baseline, tmp_path / "repo")
    _set_params(repo, {"data.format": "labels"})
    out = run(["dvc", "repro"], repo).stdout
    assert "seed and pseudo-label mIoU need masks" in out and "the segmenter's mIoU needs masks" in out
    got = json.loads((repo / "metrics/evaluate.json").read_text())
    voc = json.loads((tiny_baseline / "metrics/evaluate.json").read_text())
    assert got["cls"] == voc["cls"] and got["seed"]["miou"] is None
    assert got["scored_images"] == {"split": "train", "masks": 0, "images": len(_ids(tiny_baseline, "train"))}
    assert set(_ids(tiny_baseline, "train_aug")) <= set(pack_ids(repo / "pseudo", ".png"))
    assert (repo / "segmenter/model.safetensors").exists()
    assert json.loads((repo / "metrics/segment.json").read_text())["images"] == 0


@pytest.mark.slow
def test_temp_experiment_reuses_the_classifier(tiny_repo: Path):
    tiny_run = tiny_repo
    """An experiment in a temporary copy (`--temp`, as `--queue` runs them) finds the trained
    classifier and seeds in the cache: the copy's data manifest hashes the same as the workspace's.
    (The copy starts from git: dvc.lock is committed, as a team does.)"""
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
