"""Several processes: the distributed sampler splits exactly one process's batches, two CPU
processes (torchrun, gloo, DDP) train to the weights one process gets with the same global batch,
and the cams stage shared out over two processes writes the one-process outputs."""
from __future__ import annotations

import math
import sys
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from e2e import BIN, TINY, copy_repo, run
from wsss import distributed, io, packs
from wsss.training import EpochShuffle


@pytest.mark.parametrize("n, batch, world", [(40, 8, 2), (41, 8, 4), (23, 6, 3)])
def test_ranks_share_each_global_batch(n, batch, world):
    one = list(EpochShuffle(n, seed=5, global_batch=batch))
    assert len(one) == (n // batch) * batch
    shares = [list(EpochShuffle(n, seed=5, global_batch=batch, rank=r, world=world)) for r in range(world)]
    b = batch // world
    rebuilt = [i for k in range(n // batch) for r in range(world) for i in shares[r][k * b:(k + 1) * b]]
    assert rebuilt == one                                   # same batches, same order
    assert all(len(s) == len(shares[0]) for s in shares)    # every process takes as many steps


@pytest.mark.parametrize("world", [1, 2])
def test_skipped_batches_resume_the_same_order(world):
    """A run resumed after 3 of an epoch's batches goes on with the 4th, on any number of processes."""
    n, batch, skip = 43, 8, 3
    whole = list(EpochShuffle(n, seed=1, global_batch=batch))
    for rank in range(world):
        sampler = EpochShuffle(n, seed=1, global_batch=batch, rank=rank, world=world)
        sampler.set_epoch(0, skip)
        full = EpochShuffle(n, seed=1, global_batch=batch, rank=rank, world=world)
        share = batch // world
        assert list(sampler) == list(full)[skip * share:] and len(sampler) == len(list(sampler))
    one = EpochShuffle(n, seed=1, global_batch=batch)
    one.set_epoch(0, skip)
    assert list(one) == whole[skip * batch:]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path: Path):
    """Same global batch (8) on one process and split 4 + 4 over two DDP processes on CPU:
    the trained weights agree to float rounding (gradient all-reduce sums in another order)."""
    weights = []
    for name, cmd in (("one", [sys.executable, "-m", "stages.train"]),
                      ("two", [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "stages.train"])):
        repo = copy_repo(tmp_path / name, TINY)
        run([sys.executable, "-m", "stages.demo"], repo)
        run([sys.executable, "-m", "stages.prepare"], repo)
        run(cmd, repo, env={"OMP_NUM_THREADS": "1"})
        weights.append(io.load_weights(repo / "models/model.safetensors"))
        assert not (repo / "checkpoints/last.pt").exists()
    one, two = weights
    assert one.keys() == two.keys()
    worst = max((one[k].float() - two[k].float()).abs().max().item() for k in one)
    print(f"max |one process - two processes| over all weights: {worst:.3g}")
    assert worst < 1e-4


@pytest.mark.parametrize("n, world", [(10, 2), (7, 3), (2, 4)])
def test_shards_partition_the_items(monkeypatch, n, world):
    items = [f"img{i}" for i in range(n)]
    shards = []
    for rank in range(world):
        monkeypatch.setattr(distributed, "rank_and_world", lambda r=rank: (r, world))
        shards.append(distributed.shard(items))
    assert sorted(sum(shards, [])) == sorted(items)                     # every item once
    assert max(map(len, shards)) - min(map(len, shards)) <= 1           # balanced
    monkeypatch.setattr(distributed, "rank_and_world", lambda: (0, 1))
    assert distributed.shard(items) == items


def test_launch_hands_over_to_torchrun_only_from_a_plain_run(monkeypatch):
    import torch.distributed.run as torchrun

    calls = []
    monkeypatch.setattr(torchrun, "run", lambda args: calls.append(args))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cpu = torch.device("cpu")
    distributed.launch(1, "stages.cams", cpu)                   # one process: do it here
    monkeypatch.setenv("WORLD_SIZE", "2")
    distributed.launch(2, "stages.cams", cpu)                   # torchrun started us already
    assert calls == []
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(SystemExit) as done:                      # CPU: gloo, any number of processes
        distributed.launch(3, "stages.cams", cpu)
    assert done.value.code == 0 and len(calls) == 1
    assert (calls[0].standalone, calls[0].nproc_per_node, calls[0].module, calls[0].training_script) == \
        (True, "3", True, "stages.cams")
    t = torch.tensor([1.0, 3.0])
    assert distributed.mean(t) is t and t.tolist() == [1.0, 3.0]        # no group: unchanged


def _set_params(repo: Path, **sections) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_cams_shared_over_two_processes_match_one_process(tmp_path: Path):
    """cams.nproc=2 hands the stage to torchrun; each process writes every other image's maps and
    the previews it holds in the seed split. train_aug first: a preview image is at other places
    in the two splits, so another process may hold it there (it must not be drawn without GT)."""
    repo = copy_repo(tmp_path / "repo", TINY)
    _set_params(repo, cams={"splits": ["train_aug", "train"]})
    run([sys.executable, "-m", "stages.demo"], repo)
    run([sys.executable, "-m", "stages.prepare"], repo)
    # a failing process fails the stage: no model yet
    _set_params(repo, cams={"nproc": 2})
    failed = run([sys.executable, "-m", "stages.cams"], repo, check=False)
    assert failed.returncode != 0 and "cams: error:" in failed.stderr and "models/model.json" in failed.stderr
    _set_params(repo, cams={"nproc": 1})
    for stage in ("train", "cams"):
        run([sys.executable, "-m", f"stages.{stage}"], repo, env={"OMP_NUM_THREADS": "1"})
    (repo / "cams").rename(repo / "cams_one")
    (repo / "previews").rename(repo / "previews_one")
    _set_params(repo, cams={"nproc": 2})
    proc = run([sys.executable, "-m", "stages.cams"], repo)
    assert "launching 2 processes" in proc.stderr
    one, two = packs.Pack(repo / "cams_one"), packs.Pack(repo / "cams")
    assert one.members == two.members and len(one) == 40          # train (12) is inside train_aug (40)
    parts = sorted(p.name for p in (repo / "cams").iterdir())
    assert parts == sorted(p.name for p in (repo / "cams_one").iterdir()) and len(parts) == 1 + math.ceil(40 / packs.PER_PART)
    worst = 0.0
    for rel in one.members:
        a, b = np.load(BytesIO(one.read(rel))), np.load(BytesIO(two.read(rel)))
        assert a.files == b.files
        for k in a.files:
            assert a[k].shape == b[k].shape
            worst = max(worst, float(np.abs(a[k].astype(np.float64) - b[k]).max()))
    print(f"max |one process - two processes| over all seed maps: {worst:.3g}")
    assert worst == 0.0     # same arithmetic per image (one thread each): bit-identical
    previews = sorted(p.name for p in (repo / "previews_one").iterdir())
    assert len(previews) == 2 and previews == sorted(p.name for p in (repo / "previews").iterdir())
    for name in previews:   # the same panels, ground truth included
        assert (repo / "previews" / name).read_bytes() == (repo / "previews_one" / name).read_bytes()


def test_more_processes_than_gpus_refused_naming_the_key(monkeypatch):
    from wsss.config import ParamsError
    from wsss.distributed import launch_stage

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cuda = torch.device("cuda")
    with pytest.raises(ParamsError, match=r"'train.nproc': 2 processes but 1 CUDA devices"):
        launch_stage(2, "train.nproc", "stages.train", cuda)
    launch_stage(1, "train.nproc", "stages.train", cuda)          # one process: nothing to launch
