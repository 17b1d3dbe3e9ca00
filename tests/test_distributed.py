"""Several processes: the distributed sampler splits exactly one process's batches, and two CPU
processes (torchrun, gloo, DDP) train to the weights one process gets with the same global batch."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from test_pipeline import BIN, TINY, copy_repo, run
from wsss import io
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


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path: Path):
    """Same global batch (8) on one process and split 4 + 4 over two DDP processes on CPU:
    the trained weights agree to float rounding (gradient all-reduce sums in another order)."""
    weights = []
    for name, cmd in (("one", [sys.executable, "-m", "stages.train"]),
                      ("two", [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "stages.train"])):
        repo = copy_repo(tmp_path / name, TINY)
        run([sys.executable, "-m", "stages.prepare"], repo)
        run(cmd, repo, env={"OMP_NUM_THREADS": "1"})
        weights.append(io.load_weights(repo / "models/model.safetensors"))
        assert not (repo / "checkpoints/last.pt").exists()
    one, two = weights
    assert one.keys() == two.keys()
    worst = max((one[k].float() - two[k].float()).abs().max().item() for k in one)
    print(f"max |one process - two processes| over all weights: {worst:.3g}")
    assert worst < 1e-4
