"""Training health statistics (wsss.diagnostics): hand-checkable batches and the collapse watch."""
from __future__ import annotations

import json

import pytest
import torch

from wsss.diagnostics import V1_KEYS, V2_KEYS, CollapseWatch, batch_health


def _v1_out():
    # two classes on a 2 x 2 grid; class 1 present, class 2 absent (and very active: ignored)
    cam = torch.tensor([[[[4.0, 0.0], [0.0, 0.0]], [[9.0, 9.0], [9.0, 9.0]]]])
    return {"logits": torch.zeros(1, 2), "cam_raw": cam}


def test_cam_foreground_share_counts_present_classes_over_the_image():
    labels = torch.tensor([[1.0, 0.0]])
    stats = batch_health(_v1_out(), labels)
    assert set(stats) == set(V1_KEYS)
    assert stats["cam_fg"].item() == pytest.approx(0.25, abs=1e-4)       # one token of four at 1
    # the right column is padding: one token of the two image tokens
    valid = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    assert batch_health(_v1_out(), labels, valid)["cam_fg"].item() == pytest.approx(0.5, abs=1e-4)
    # a flat CAM covers everything
    flat = {"cam_raw": torch.ones(1, 2, 2, 2)}
    assert batch_health(flat, labels)["cam_fg"].item() == pytest.approx(1.0, abs=1e-4)
    assert batch_health({"logits": torch.zeros(1, 2)}, labels) == {}     # no class maps, no health


def _v2_out():
    """One image, classes 1 (present) and 2 (absent), a 2 x 2 token grid and a 2 x 2 R-CAM grid."""
    cam = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]], [[3.0, 3.0], [3.0, 3.0]]]])
    seeds = torch.zeros(1, 3, 2, 2)
    seeds[0, 1, 0, 0] = seeds[0, 1, 0, 1] = 1      # the top row is class 1's seed
    seeds[0, 0, 1, 0] = seeds[0, 0, 1, 1] = 1      # the bottom row background
    rcam = torch.zeros(1, 3, 2, 2)
    rcam[0, 0] = torch.tensor([[0.1, 0.2], [0.9, 0.3]])
    rcam[0, 1] = torch.tensor([[0.8, 0.6], [0.1, 0.5]])
    rcam[0, 2] = torch.ones(2, 2)                   # an absent class never wins the argmax
    protos = torch.zeros(1, 3, 4)
    protos[0, 0] = torch.tensor([0.0, 1.5, 0.0, 0.0])
    protos[0, 1] = torch.tensor([0.6, 0.0, 0.8, 0.0])
    return {"logits": torch.zeros(1, 2), "cam_raw": cam, "seeds": seeds, "rcam_raw": rcam,
            "prototypes": protos}


def test_v2_health_by_hand():
    stats = {k: v.item() for k, v in batch_health(_v2_out(), torch.tensor([[1.0, 0.0]])).items()}
    assert set(stats) == set(V2_KEYS)
    assert stats["cam_fg"] == pytest.approx(0.375, abs=1e-4)       # (1 + 0.5) / 4
    assert stats["seed_bg"] == pytest.approx(0.5)
    # R-CAM max-normed per channel: bg [.11 .22; 1 .33], class 1 [1 .75; .125 .625] -> bg wins 1 of 4
    assert stats["rcam_bg"] == pytest.approx(0.25)
    assert stats["cam_in_seed"] == pytest.approx(0.75, abs=1e-4)    # class 1 on its seeds: (1 + .5) / 2
    assert stats["cam_off_seed"] == pytest.approx(0.0, abs=1e-4)    # and 0 off them
    assert stats["proto_bg"] == pytest.approx(1.5)
    assert stats["proto_fg"] == pytest.approx(1.0)


def test_v2_health_of_a_collapse():
    """Every token seeded with the class, a flat CAM, an empty background prototype: the shares
    are 0, the CAM as high off the seeds as on them (no token is off them here: 0 by convention)."""
    out = _v2_out()
    out["cam_raw"] = torch.ones(1, 2, 2, 2)
    out["seeds"] = torch.zeros(1, 3, 2, 2)
    out["seeds"][0, 1] = 1
    out["rcam_raw"][0, 0] = 0.0
    out["prototypes"][0, 0] = 0.0
    stats = batch_health(out, torch.tensor([[1.0, 0.0]]))
    assert stats["seed_bg"].item() == 0 and stats["rcam_bg"].item() == 0 and stats["proto_bg"].item() == 0
    assert stats["cam_fg"].item() == pytest.approx(1.0, abs=1e-4)


def test_v2_health_leaves_padding_out():
    out = _v2_out()
    out["valid"] = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])      # R-CAM grid: the bottom row is padding
    valid = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])             # pixels (here on the token grid)
    stats = batch_health(out, torch.tensor([[1.0, 0.0]]), valid)
    assert stats["seed_bg"].item() == 0            # the background seeds were all on padding
    assert stats["rcam_bg"].item() == 0
    assert stats["cam_fg"].item() == pytest.approx(0.75, abs=1e-4)


def test_collapse_watch_warns_once_per_run_of_collapsed_epochs():
    watch = CollapseWatch(0.02)
    said = [watch.update(e, s) for e, s in enumerate([0.5, 0.01, 0.005, 0.3, 0.01, 0.99, 0.995], start=1)]
    assert [w is not None for w in said] == [False, True, False, False, True, True, False]
    assert "background seeds have vanished in epoch 2" in said[1] and "1.00 %" in said[1]
    assert "train.collapse_floor" in said[1]
    assert "foreground seeds have vanished in epoch 6" in said[5]
    report = watch.report()
    assert report["collapsed"] and report["collapsed_epochs"] == [2, 3, 5, 6, 7]
    assert report["kinds"] == ["background", "foreground"]
    assert report["min_epoch_seed_bg"] == 0.005 and report["max_epoch_seed_bg"] == 0.995
    # a resumed run goes on from what the checkpoint's summary (JSON) kept
    again = CollapseWatch.restore(0.02, json.loads(json.dumps(report)))
    assert again.shares == watch.shares and again.update(8, 0.999) is None   # still the same run
    healthy = CollapseWatch(0.02)
    assert healthy.update(1, 0.02) is None and healthy.update(2, 0.98) is None
    assert not healthy.report()["collapsed"]
    with pytest.raises(ValueError):
        CollapseWatch(0.02).update(2, 0.5)


def test_v2_health_of_seeds_on_the_fused_grid():
    """Seeds located on the fused grid (a fused Seeding, twice the token grid): the
    shares are counted there, the CAM resized to it. The same seeds, each token's repeated over its
    2 x 2 cells, and a CAM constant over the token grid give the token-grid numbers."""
    out = _v2_out()
    out["cam_raw"] = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]], [[3.0, 3.0], [3.0, 3.0]]]])
    fine = dict(out, seeds=out["seeds"].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    labels = torch.tensor([[1.0, 0.0]])
    coarse, fused = batch_health(out, labels), batch_health(fine, labels)
    assert fused["seed_bg"].item() == pytest.approx(0.5) == coarse["seed_bg"].item()
    assert fused["cam_in_seed"].item() > fused["cam_off_seed"].item()
    for key in ("rcam_bg", "proto_bg", "proto_fg", "cam_fg"):
        assert fused[key].item() == pytest.approx(coarse[key].item(), abs=1e-5)
    valid = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])             # the bottom token row is padding
    assert batch_health(fine, labels, valid)["seed_bg"].item() == 0
