"""Resumable training: a killed CPU run continues from its checkpoint (end of an epoch, or within
one) to the same weights and the same DVCLive curves as an uninterrupted run; another run's
checkpoint is refused, naming what differs."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from e2e import TINY, _merge, copy_repo, run
from wsss.checkpoint import CheckpointError, Checkpointer, rewind_live

EPOCHS = {"train": {"epochs": 4}}
# drop path on: the resumed run must also continue torch's RNG stream where it stopped
STOCHASTIC = {"model": {"drop_path_rate": 0.1}}


def _train_cmd() -> list[str]:
    return [sys.executable, "-m", "stages.train"]


def _kill_after_first_checkpoint(repo: Path, timeout: float = 300) -> tuple[int, int]:
    """Start training, SIGKILL it as soon as a checkpoint exists; its (epochs done, batches done)."""
    import os

    env = dict(os.environ, WSSS_DEVICE="cpu")
    proc = subprocess.Popen(_train_cmd(), cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = repo / "checkpoints/last.pt"
    deadline = time.time() + timeout
    while not ckpt.exists():
        assert proc.poll() is None, "training ended before writing a checkpoint"
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(ckpt, weights_only=True)
    return state["epoch"], state["batch"]


@pytest.mark.slow
@pytest.mark.parametrize("every, where", [(0, "end of epoch 1"), (2, "epoch 1, after batch 2 of 5")])
def test_killed_training_resumes_to_the_same_weights(tmp_path: Path, every: int, where: str):
    tiny = {**_merge(json.loads(json.dumps(TINY)), EPOCHS), **STOCHASTIC}
    tiny["train"]["checkpoint_every"] = every
    whole = copy_repo(tmp_path / "whole", tiny)
    run([sys.executable, "-m", "stages.demo"], whole)
    run([sys.executable, "-m", "stages.prepare"], whole)
    run(_train_cmd(), whole)
    assert not (whole / "checkpoints/last.pt").exists()          # a finished run leaves none

    broken = copy_repo(tmp_path / "broken", tiny)
    run([sys.executable, "-m", "stages.demo"], broken)
    run([sys.executable, "-m", "stages.prepare"], broken)
    epoch, batch = _kill_after_first_checkpoint(broken)
    # 40 images, batch 8: 5 steps an epoch; the first checkpoint is at the end of epoch 1, or
    # (checkpoint_every 2) at step 2, within it
    assert (epoch, batch) == ((1, 0) if every == 0 else (0, 2)), where
    assert not (broken / "models/model.safetensors").exists()
    out = run(_train_cmd(), broken)
    assert f"resuming at epoch {epoch + 1}, batch {batch}" in out.stdout + out.stderr
    a = (whole / "models/model.safetensors").read_bytes()
    b = (broken / "models/model.safetensors").read_bytes()
    assert a == b, "resumed weights differ from the uninterrupted run's"
    assert (whole / "models/val_scores.npz").read_bytes() == (broken / "models/val_scores.npz").read_bytes()
    assert not (broken / "checkpoints/last.pt").exists()
    # the DVCLive curves too: every step once, same values (what the killed run logged after its
    # checkpoint was rewound before resuming)
    curves = sorted(p.relative_to(whole) for p in (whole / "dvclive/train/plots/metrics").rglob("*.tsv"))
    # per step: 2 losses, lr, CAM foreground share; per epoch: loss, the cls term, its mean, 2 mAPs
    assert len(curves) == 9
    for rel in curves:
        assert (whole / rel).read_text() == (broken / rel).read_text(), rel


@pytest.mark.slow
def test_checkpoint_of_other_params_is_refused(tmp_path: Path):
    tiny = _merge(json.loads(json.dumps(TINY)), EPOCHS)
    repo = copy_repo(tmp_path / "repo", tiny)
    run([sys.executable, "-m", "stages.demo"], repo)
    run([sys.executable, "-m", "stages.prepare"], repo)
    _kill_after_first_checkpoint(repo)
    params = (repo / "params.yaml").read_text().replace("lr: 0.0005", "lr: 0.0002")
    (repo / "params.yaml").write_text(params)
    proc = run(_train_cmd(), repo, check=False)
    assert proc.returncode == 2
    last = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("train: error:") and "checkpoints/last.pt" in last and "train.lr" in last
    assert "train.resume: never" in last
    # train.resume: never starts afresh (and the old checkpoint is replaced, then cleared)
    (repo / "params.yaml").write_text(params.replace("resume: auto", "resume: never"))
    run(_train_cmd(), repo)
    assert (repo / "models/model.safetensors").exists() and not (repo / "checkpoints/last.pt").exists()


def test_checkpointer_round_trip_and_refusal(tmp_path: Path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    fp = {"params": {"train": {"lr": 0.1, "epochs": 3}}, "data": "abc"}
    ck = Checkpointer(tmp_path / "c" / "last.pt", fp)
    assert ck.load() is None
    ck.save(epoch=2, step=10, model=model, optimizer=opt, scheduler=sched, scaler=scaler, summary={"loss": 0.5})
    state = ck.load()
    assert state["epoch"] == 2 and state["step"] == 10 and state["summary"] == {"loss": 0.5}
    assert torch.equal(state["model"]["weight"], model.weight.detach())
    other = Checkpointer(tmp_path / "c" / "last.pt", {"params": {"train": {"lr": 0.2, "epochs": 3}}, "data": "abc"})
    with pytest.raises(CheckpointError, match=r"params\.train\.lr: 0\.1 in the checkpoint, 0\.2 now"):
        other.load()
    data = Checkpointer(tmp_path / "c" / "last.pt", {**fp, "data": "xyz"})
    with pytest.raises(CheckpointError, match="data: 'abc' in the checkpoint, 'xyz' now"):
        data.load()
    ck.clear()
    assert ck.load() is None and json.loads((tmp_path / "c" / "status.json").read_text())["checkpoint"] is None


def test_checkpoint_that_is_a_malicious_pickle_is_refused(tmp_path: Path):
    from test_io import _evil_bytes

    target = tmp_path / "PWNED"
    path = tmp_path / "last.pt"
    path.write_bytes(_evil_bytes(target))
    with pytest.raises(CheckpointError, match="refused"):
        Checkpointer(path, {}).load()
    assert not target.exists()


def test_rewind_live_drops_rows_logged_after_the_checkpoint(tmp_path: Path):
    """Per-step curves keep steps < the checkpoint's, per-epoch curves keep steps <= it."""
    (tmp_path / "train").mkdir()
    (tmp_path / "epoch").mkdir()
    (tmp_path / "train/loss.tsv").write_text("step\tloss\n" + "".join(f"{s}\t0.{s}\n" for s in range(8)))
    (tmp_path / "epoch/loss.tsv").write_text("step\tloss\n3\t0.5\n6\t0.4\n")
    rewind_live(tmp_path, 6)       # an end-of-epoch checkpoint after 6 steps: epoch 2's row stays
    assert (tmp_path / "train/loss.tsv").read_text().splitlines()[1:] == [f"{s}\t0.{s}" for s in range(6)]
    assert (tmp_path / "epoch/loss.tsv").read_text().splitlines() == ["step\tloss", "3\t0.5", "6\t0.4"]
    rewind_live(tmp_path, 4)       # within epoch 2, after 4 steps
    assert [ln.split("\t")[0] for ln in (tmp_path / "train/loss.tsv").read_text().splitlines()] == \
        ["step", "0", "1", "2", "3"]
    assert (tmp_path / "epoch/loss.tsv").read_text().splitlines() == ["step\tloss", "3\t0.5"]
