"""Tests of SWTformer-V2: seeds, hierarchical feature fusion, the V2 model, its losses, seed
inference, seed scoring, seed-map artifacts and the V2 parameters."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from wsss import io
from wsss.artifacts import load_cams, save_cams
from wsss.config import ParamsError, validate_params
from wsss.inference import multiscale_maps
from wsss.losses import LossWeights, ccl_contrastive, ccl_paper, gsc_loss, total_loss
from wsss.metrics import SeedScorer
from wsss.models import ModelConfig, build_model
from wsss.models.hff import HierarchicalFeatureFusion
from wsss.models.seeds import (
    background_prototypes,
    class_prototypes,
    reactivate,
    structural_match,
    structural_seeds,
    token_affinity,
    with_background,
)
from wsss.models.swtformer import Seeding, SWTformerV1, SWTformerV2

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
CPU = torch.device("cpu")
DEMO_DIMS = [32, 64, 128, 256]  # swin_demo's stage channels


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def v2(num_classes=3, seed=0, **kw) -> SWTformerV2:
    torch.manual_seed(seed)
    return build_model(ModelConfig(version="v2", backbone="swin_demo", num_classes=num_classes,
                                   img_size=128, hff_dims=[8, 8, 16, 16], **kw))


def group_tokens(left: torch.Tensor, right: torch.Tensor, h=4, w=6) -> torch.Tensor:
    """Tokens (1, D, h, w): ``left`` in the left w/2 columns, ``right`` in the others."""
    t = torch.empty(1, left.numel(), h, w)
    t[0, :, :, : w // 2] = left[:, None, None]
    t[0, :, :, w // 2:] = right[:, None, None]
    return t


def grad_or_zero(p: torch.nn.Parameter) -> torch.Tensor:
    return torch.zeros_like(p) if p.grad is None else p.grad


def any_grad(module: torch.nn.Module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def no_grad_at_all(module: torch.nn.Module) -> bool:
    return all(p.grad is None or (p.grad == 0).all() for p in module.parameters())


# =============================================================================== seeds.py
# ------------------------------------------------------------------------------- with_background

def test_with_background_hand_case():
    cam = torch.tensor([[[[0.2, 0.9]], [[0.7, 0.4]]]])  # (1, 2, 1, 2)
    m = with_background(cam, torch.tensor([[1.0, 0.0]]))
    assert m.shape == (1, 3, 1, 2)
    torch.testing.assert_close(m[0, 1], cam[0, 0])                 # present class kept
    assert (m[0, 2] == 0).all()                                     # absent class zeroed
    torch.testing.assert_close(m[0, 0], torch.tensor([[0.8, 0.1]]))  # 1 - max(present) = 1 - class 1


def test_with_background_two_present_and_none_present():
    cam = torch.tensor([[[[0.2, 0.9]], [[0.7, 0.4]]]])
    both = with_background(cam, torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(both[0, 0], torch.tensor([[0.3, 0.1]]))  # 1 - max(0.2,0.7), 1 - max(0.9,0.4)
    none = with_background(cam, torch.tensor([[0.0, 0.0]]))
    assert (none[0, 0] == 1).all() and (none[0, 1:] == 0).all()


# ------------------------------------------------------------------------------- token_affinity

def test_token_affinity_abs_vs_relu():
    tokens = rand(2, 5, 3, 4, seed=1)
    t = tokens.flatten(2)  # (B, D, N)
    cos = F.cosine_similarity(t[:, :, :, None], t[:, :, None, :], dim=1)  # (B, N, N), a second way
    a, r = token_affinity(tokens, "abs"), token_affinity(tokens, "relu")
    assert a.shape == r.shape == (2, 12, 12)
    torch.testing.assert_close(a, cos.abs(), atol=1e-4, rtol=0)
    torch.testing.assert_close(r, cos.clamp_min(0), atol=1e-4, rtol=0)
    neg = cos < -1e-3
    pos = cos >= 0
    assert neg.any() and pos.any()
    assert (a[neg] > r[neg]).all() and (r[neg] == 0).all()        # differ exactly where cos < 0
    torch.testing.assert_close(a[pos], r[pos])                     # equal where cos >= 0
    torch.testing.assert_close(a, r.abs() + F.relu(-cos), atol=1e-4, rtol=0)
    diag = torch.diagonal(a, dim1=1, dim2=2)
    torch.testing.assert_close(diag, torch.ones_like(diag), atol=1e-4, rtol=0)


def test_token_affinity_bad_mode():
    with pytest.raises(ValueError, match="cos"):
        token_affinity(rand(1, 3, 2, 2), "cos")


# ------------------------------------------------------------------------------- structural_match

def test_structural_match_by_hand():
    """1x2 grid; a non-symmetric S shows rows (token i) vs columns (token j) are read right."""
    s = torch.tensor([[[1.0, 0.5], [0.25, 1.0]]])
    maps = torch.tensor([[[[0.2, 0.8]], [[0.8, 0.2]]]])  # (1, K=2, 1, 2)
    got = structural_match(s, maps, bg_weight=0.5)
    # token 0: row sum 1.5; token 1: row sum 1.25; each map sums to 1.0
    bg0 = 0.5 * (0.2 * 1 + 0.8 * 0.5) / (1.5 + 1.0 - (0.2 * 1 + 0.8 * 0.5))         # 0.5 * 0.6 / 1.9
    bg1 = 0.5 * (0.2 * 0.25 + 0.8 * 1) / (1.25 + 1.0 - (0.2 * 0.25 + 0.8 * 1))     # 0.5 * 0.85 / 1.4
    c0 = (0.8 * 1 + 0.2 * 0.5) / (1.5 + 1.0 - (0.8 * 1 + 0.2 * 0.5))              # 0.9 / 1.6
    c1 = (0.8 * 0.25 + 0.2 * 1) / (1.25 + 1.0 - (0.8 * 0.25 + 0.2 * 1))           # 0.4 / 1.85
    want = torch.tensor([[[[bg0, bg1]], [[c0, c1]]]])
    torch.testing.assert_close(got, want)
    assert c0 == pytest.approx(0.5625)
    # bg_weight multiplies only row 0
    got1 = structural_match(s, maps, bg_weight=1.0)
    torch.testing.assert_close(got1[:, 0], 2 * got[:, 0])
    torch.testing.assert_close(got1[:, 1], got[:, 1])


# ------------------------------------------------------------------------------- structural_seeds

E1, E2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])


def column_cam(cols_per_class, h=4, w=6) -> torch.Tensor:
    """CAM (1, C, h, w): class c is 1 on the column cols_per_class[c] (None = nowhere)."""
    cam = torch.zeros(1, len(cols_per_class), h, w)
    for c, col in enumerate(cols_per_class):
        if col is not None:
            cam[0, c, :, col] = 1.0
    return cam


def assert_one_hot(seeds):
    torch.testing.assert_close(seeds.sum(dim=1), torch.ones_like(seeds[:, 0]))
    assert ((seeds == 0) | (seeds == 1)).all()


@pytest.mark.parametrize("affinity", ["abs", "relu"])
def test_seeds_two_groups_two_classes(affinity):
    """Orthogonal groups, each class touches one column of its group: seeds fill the group.

    Left token: class 1 IoU = 4 / (12 + 4 - 4) = 1/3; background 0.5 * 8 / (12 + 16 - 8) = 0.2."""
    tokens = group_tokens(E1, E2)
    labels = torch.tensor([[1.0, 1.0]])
    m = with_background(column_cam([0, 5]), labels)
    seeds = structural_seeds(tokens, m, labels, affinity)
    assert seeds.shape == (1, 3, 4, 6)
    assert_one_hot(seeds)
    assert (seeds[0, 1, :, :3] == 1).all() and (seeds[0, 1, :, 3:] == 0).all()
    assert (seeds[0, 2, :, 3:] == 1).all() and (seeds[0, 2, :, :3] == 0).all()
    assert seeds[0, 0].sum() == 0


@pytest.mark.parametrize("affinity", ["abs", "relu"])
def test_seeds_two_groups_one_class(affinity):
    """One class on one left column: left group -> class 1, right group -> background
    (right token: background 0.5 * 12 / (12 + 20 - 12) = 0.3 > class 0)."""
    tokens = group_tokens(E1, E2)
    labels = torch.tensor([[1.0, 0.0]])
    cam = column_cam([0, 4])            # the absent class 2 has activation in the right group
    m = with_background(cam, labels)
    seeds = structural_seeds(tokens, m, labels, affinity)
    assert_one_hot(seeds)
    assert (seeds[0, 1, :, :3] == 1).all() and seeds[0, 1].sum() == 12
    assert (seeds[0, 0, :, 3:] == 1).all() and seeds[0, 0].sum() == 12
    assert (seeds[0, 2] == 0).all()     # absent class


def test_seeds_masked_by_labels_even_for_raw_maps():
    """Maps not built by with_background: an absent class winning the match is still dropped
    (those tokens are then left with no seed at all)."""
    tokens = group_tokens(E1, E2)
    labels = torch.tensor([[1.0, 0.0]])
    raw = torch.cat([torch.zeros(1, 1, 4, 6), column_cam([0, 5])], dim=1)  # bg 0, class 2 on the right
    seeds = structural_seeds(tokens, raw, labels, "relu")
    assert (seeds[0, 2] == 0).all()
    assert (seeds[0, 1, :, :3] == 1).all()
    assert (seeds[0, :, :, 3:] == 0).all()  # the right group would be class 2: masked, nothing left


def test_seeds_opposite_groups_abs_vs_relu():
    """Right tokens = -e1 (cos -1 with the left). ReLU keeps the groups apart (S = 0 across), so
    seeds are as for orthogonal groups. |cos| makes S = 1 everywhere: one structure of 24 tokens
    whose every row is the same; then class 1's IoU is 4 / 24 = 1/6 while the background's is
    0.5 * 20 / (24 + 20 - 20) = 5/12, so every token becomes background and the class loses its
    seed entirely (the paper's Eq. 4 merges opposite structures)."""
    tokens = group_tokens(E1, -E1)
    labels = torch.tensor([[1.0, 0.0]])
    m = with_background(column_cam([0, None]), labels)
    s_abs, s_relu = token_affinity(tokens, "abs"), token_affinity(tokens, "relu")
    left, right = torch.zeros(4, 6, dtype=torch.bool), torch.zeros(4, 6, dtype=torch.bool)
    left[:, :3], right[:, 3:] = True, True
    left, right = left.flatten(), right.flatten()
    cross = left[:, None] & right[None, :]
    torch.testing.assert_close(s_abs[0], torch.ones(24, 24), atol=1e-4, rtol=0)
    assert (s_relu[0][cross] == 0).all()
    torch.testing.assert_close(s_relu[0][left[:, None] & left[None, :]], torch.ones(144), atol=1e-4, rtol=0)

    match_abs = structural_match(s_abs, m)
    torch.testing.assert_close(match_abs[0, 1], torch.full((4, 6), 1 / 6), atol=1e-4, rtol=0)
    torch.testing.assert_close(match_abs[0, 0], torch.full((4, 6), 5 / 12), atol=1e-4, rtol=0)

    relu_seeds = structural_seeds(tokens, m, labels, "relu")
    abs_seeds = structural_seeds(tokens, m, labels, "abs")
    assert (relu_seeds[0, 1, :, :3] == 1).all() and (relu_seeds[0, 0, :, 3:] == 1).all()
    assert (abs_seeds[0, 0] == 1).all() and abs_seeds[0, 1].sum() == 0


@pytest.mark.parametrize("affinity", ["abs", "relu"])
def test_every_class_gives_each_labelled_class_the_cell_of_its_best_match(affinity):
    """A weak class map loses every token to the background: without ``every_class`` its seed
    region is empty (a zero prototype); with it, each present class left empty takes exactly one
    background cell, the one where its structural match is highest, and nothing else moves:
    classes that had seeds keep them, absent classes stay empty, padding is never a seed."""
    tokens = rand(2, 8, 3, 4, seed=21)
    maps = torch.full((2, 4, 3, 4), 0.02)
    maps[:, 0] = 1.0                                   # background strong everywhere
    maps[0, 1, 0, 0] = 1.0                             # image 0: class 1 clearly present at one token
    maps[1, 2, 2, 3] = 0.3                             # image 1: class 2 weak
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    valid = torch.ones(2, 1, 3, 4)
    valid[1, :, :, 0] = 0                              # image 1: its left column is padding
    plain = structural_seeds(tokens, maps, labels, affinity, valid=valid)
    fixed = structural_seeds(tokens, maps, labels, affinity, valid=valid, every_class=True)
    match = structural_match(token_affinity(tokens, affinity), maps, 0.5, valid)
    area = plain.flatten(2).sum(dim=2)
    empty = [(b, c) for b in range(2) for c in range(1, 4) if labels[b, c - 1] > 0 and area[b, c] == 0]
    assert empty, "the case is vacuous: no labelled class lost all its tokens"
    assert (fixed * (1 - valid) == 0).all()                          # no padded seed
    torch.testing.assert_close(fixed.sum(dim=1), valid[:, 0])        # one-hot on the image
    changed = (fixed != plain).flatten(2).any(dim=1)                 # (B, N) cells that moved
    for b in range(2):
        for c in range(1, 4):
            if labels[b, c - 1] == 0:
                assert fixed[b, c].sum() == 0
            elif (b, c) in empty:
                assert fixed[b, c].sum() == 1
                free = (plain[b, 0] > 0).flatten()
                best = match[b, c].flatten().masked_fill(~free, float("-inf")).argmax()
                assert fixed[b, c].flatten()[best] == 1 and plain[b, 0].flatten()[best] == 1
            else:
                torch.testing.assert_close(fixed[b, c], plain[b, c])
    assert changed.sum() == len(empty)


def test_seeds_no_gradient():
    tokens = rand(1, 4, 3, 5, seed=2).requires_grad_()
    maps = torch.rand(1, 3, 3, 5, generator=torch.Generator().manual_seed(3)).requires_grad_()
    seeds = structural_seeds(tokens, maps, torch.tensor([[1.0, 1.0]]))
    assert not seeds.requires_grad and seeds.grad_fn is None
    assert_one_hot(seeds)


# ------------------------------------------------------------------------------- prototypes / R-CAM

def test_class_prototypes_are_region_means():
    feats = rand(2, 5, 3, 4, seed=4)
    lab = torch.randint(0, 2, (2, 3, 4), generator=torch.Generator().manual_seed(5))  # classes 0, 1 only
    seeds = F.one_hot(lab, 3).permute(0, 3, 1, 2).float()  # class 2 empty
    protos = class_prototypes(seeds, feats)
    assert protos.shape == (2, 3, 5)
    for b in range(2):
        for k in range(2):
            mask = lab[b] == k
            assert mask.any()
            want = feats[b][:, mask].mean(dim=1)
            torch.testing.assert_close(protos[b, k], want)
        assert (protos[b, 2] == 0).all()


def test_reactivate_is_relu_cosine():
    feats = rand(1, 6, 3, 4, seed=6)
    protos = rand(1, 3, 6, seed=7)
    protos[0, 2] = 0
    r = reactivate(protos, feats)
    assert r.shape == (1, 3, 3, 4)
    for k in range(2):
        cos = F.cosine_similarity(feats[0], protos[0, k][:, None, None], dim=0)
        torch.testing.assert_close(r[0, k], cos.clamp_min(0), atol=1e-4, rtol=0)
    assert (r[0, 2] == 0).all()
    assert r.min() >= 0 and r.max() <= 1
    # a pixel equal to a prototype has R-CAM ~1 for it
    feats[0, :, 1, 2] = protos[0, 1]
    assert reactivate(protos, feats)[0, 1, 1, 2].item() == pytest.approx(1.0, abs=1e-4)


def _two_texture_background(seed=0):
    """Features (1, 4, 4, 6): a background of two textures (directions e0 and e1, with noise) in
    the left and right halves of rows 0-2, an object (e2) in row 3; the background region mask."""
    feats = torch.zeros(1, 4, 4, 6)
    feats[0, 0, :3, :3] = 1.0
    feats[0, 1, :3, 3:] = 1.0
    feats[0, 2, 3, :] = 1.0
    feats = feats + 0.05 * rand(1, 4, 4, 6, seed=seed)
    region = torch.zeros(1, 1, 4, 6)
    region[0, 0, :3] = 1.0
    return feats, region


def test_background_prototypes_find_the_two_textures():
    """Two background textures give two prototypes, each the mean feature of one texture's cells
    (whatever order); the object's cells (outside the region) are in neither."""
    feats, region = _two_texture_background()
    protos = background_prototypes(region, feats, k=2)
    assert protos.shape == (1, 2, 4)
    left, right = feats[0, :, :3, :3].flatten(1).mean(1), feats[0, :, :3, 3:].flatten(1).mean(1)
    got = sorted(protos[0], key=lambda p: -p[0].item())
    torch.testing.assert_close(got[0], left)
    torch.testing.assert_close(got[1], right)
    # the background channel (best match) is ~1 on both textures; one mean prototype is cos ~0.71
    best = reactivate(protos, feats).amax(dim=1)[0]
    one = reactivate(class_prototypes(region, feats), feats)[0, 0]
    assert best[:3].min() > 0.98 and one[:3].max() < 0.8
    assert best[3].max() < 0.2                     # the object matches neither texture


def test_background_prototypes_one_is_the_region_mean_and_empty_clusters_are_zero():
    feats, region = _two_texture_background(seed=1)
    torch.testing.assert_close(background_prototypes(region, feats, k=1), class_prototypes(region, feats))
    assert (background_prototypes(torch.zeros_like(region), feats, k=3) == 0).all()   # no region
    single = torch.zeros_like(region)
    single[0, 0, 1, 4] = 1.0                        # one cell, three prototypes: one is it, two are empty
    protos = background_prototypes(single, feats, k=3)[0]
    nonzero = [p for p in protos if p.abs().sum() > 0]
    assert len(nonzero) == 1
    torch.testing.assert_close(nonzero[0], feats[0, :, 1, 4])


def test_background_prototypes_are_deterministic_and_carry_gradient():
    feats, region = _two_texture_background(seed=2)
    feats = feats.repeat(2, 1, 1, 1).requires_grad_(True)
    region = region.repeat(2, 1, 1, 1)
    a = background_prototypes(region, feats, k=3)
    torch.testing.assert_close(a, background_prototypes(region, feats, k=3), rtol=0, atol=0)
    torch.testing.assert_close(a[0], a[1], rtol=0, atol=0)    # batch items independent, alike here
    a.sum().backward()
    assert feats.grad[:, :, :3].abs().sum() > 0     # through the region's cells
    assert (feats.grad[:, :, 3] == 0).all()         # not the cells outside it


# =============================================================================== hff.py

def stage_maps(grids, seed=0, requires_grad=False):
    return [rand(2, c, h, w, seed=seed + i).requires_grad_(requires_grad)
            for i, (c, (h, w)) in enumerate(zip(DEMO_DIMS, grids))]


GRIDS_128x192 = [(32, 48), (16, 24), (8, 12), (4, 6)]


def hff(detach=True, seed=0):
    torch.manual_seed(seed)
    return HierarchicalFeatureFusion(DEMO_DIMS, [8, 8, 16, 16], detach=detach)


def test_hff_shapes():
    f = hff()
    out = f(stage_maps(GRIDS_128x192))
    assert f.out_dim == 48
    assert out.shape == (2, 48, 8, 12)
    odd = f(stage_maps([(14, 10), (7, 5), (4, 3), (2, 2)]))
    assert odd.shape == (2, 48, 4, 3)
    assert torch.isfinite(odd).all()


def test_hff_part_norms():
    """Output = [d12 (16 ch) | stage 3 (16 ch) | stage 4 upsampled (16 ch)]: the (1, 2) half has norm
    sqrt(2) at every position, and so has the (3, 4) half (each part renormalised after resizing)."""
    out = hff()(stage_maps(GRIDS_128x192)).detach()
    n12, n3, n4 = (out[:, sl].norm(dim=1) for sl in (slice(0, 16), slice(16, 32), slice(32, 48)))
    torch.testing.assert_close(n12, torch.full_like(n12, math.sqrt(2)), atol=1e-4, rtol=0)
    torch.testing.assert_close(n3, torch.ones_like(n3), atol=1e-4, rtol=0)
    torch.testing.assert_close(n4, torch.ones_like(n4), atol=1e-4, rtol=0)


@pytest.mark.parametrize("detach", [True, False])
def test_hff_detach_cuts_input_gradients(detach):
    f = hff(detach=detach)
    stages = stage_maps(GRIDS_128x192, requires_grad=True)
    (f(stages) * rand(2, 48, 8, 12, seed=9)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in f.parameters())
    if detach:
        assert all(s.grad is None for s in stages)
    else:
        assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in stages)


# =============================================================================== swtformer.py (V2)

LABELS = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


@pytest.fixture(scope="module")
def v2_out():
    model = v2().eval()
    with torch.no_grad():
        out = model(rand(2, 3, 128, 192, seed=11), LABELS)
    return model, out


def test_v2_forward_without_labels_is_v1_like():
    model = v2().eval()
    with torch.no_grad():
        out = model(rand(1, 3, 128, 128, seed=10))
    assert set(out) == {"logits", "cam_raw"}
    assert out["cam_raw"].shape == (1, 3, 4, 4)


def test_v2_forward_with_labels(v2_out):
    model, out = v2_out
    assert set(out) == {"logits", "cam_raw", "rcam_raw", "cam_bg", "seeds", "prototypes"}
    assert out["cam_raw"].shape == (2, 3, 4, 6)
    assert out["prototypes"].shape == (2, 4, model.hff.out_dim)
    assert out["rcam_raw"].shape == out["cam_bg"].shape == (2, 4, 8, 12)
    assert out["seeds"].shape == (2, 4, 4, 6)
    present = torch.cat([torch.ones(2, 1), LABELS], dim=1).bool()
    cam_bg, rcam_raw, seeds = out["cam_bg"], out["rcam_raw"], out["seeds"]
    assert (cam_bg[~present] == 0).all()
    assert (seeds[~present] == 0).all()
    assert_one_hot(seeds)
    assert rcam_raw.min() >= 0 and rcam_raw.max() <= 1 + 1e-6
    assert (rcam_raw[~present] == 0).all()  # empty seed region -> zero prototype
    peaks = model.rcam(out).flatten(2).amax(dim=2)
    area = seeds.flatten(2).sum(dim=2)
    for b in range(2):
        for k in range(4):
            if present[b, k] and area[b, k] > 0:
                assert peaks[b, k].item() == pytest.approx(1.0, abs=1e-3)
            else:
                assert peaks[b, k].item() == 0
    assert (present & (area > 0)).sum() >= 2  # at least the cases checked are not all vacuous


def test_training_seeding_follows_the_model_config():
    """model.seed_features / model.every_class choose the seeds V2 trains with: the forward pass
    without a seeding equals the one with that Seeding (one background prototype), and differs
    from the paper's seeds here (so the check is not vacuous)."""
    model = v2(num_classes=3, affinity="relu", seed_features="fused", every_class=True).eval()
    assert model.training_seeding() == Seeding("fused", "relu", 0.5, 1, True)
    x = rand(2, 3, 128, 192, seed=11)
    with torch.no_grad():
        default = model(x, LABELS)
        chosen = model(x, LABELS, seeding=Seeding("fused", "relu", 0.5, 1, True))
        paper = model(x, LABELS, seeding=Seeding("tokens", "relu", 0.5, 1))
    torch.testing.assert_close(default["seeds"], chosen["seeds"])
    torch.testing.assert_close(default["rcam_raw"], chosen["rcam_raw"])
    assert default["seeds"].shape[-2:] == default["rcam_raw"].shape[-2:] != paper["seeds"].shape[-2:]
    assert (default["seeds"][:, 1:].flatten(2).sum(dim=2)[LABELS.bool()] > 0).all()   # every labelled class


@pytest.mark.parametrize("bg_prototypes", [1, 3])
def test_v2_seeds_located_on_the_fused_grid(bg_prototypes):
    """Seeding features fused: the structural match runs on F_hie's affinity and grid with M
    resized to it (``cam_bg``): one-hot seeds there, masked by the labels, equal to
    structural_seeds of F_hie and cam_bg; with several background prototypes only the background
    channel changes. Without a seeding the model seeds as it trains (tokens, one prototype)."""
    model = v2(num_classes=3, affinity="abs").eval()
    x = rand(2, 3, 128, 192, seed=11)
    fused = Seeding("fused", "relu", 0.5, bg_prototypes)
    with torch.no_grad():
        t_out, stages = model.features(x)
        f_out, f_hie = model.head(t_out), model.hff(stages)
        out = model.seed_maps(t_out, f_out, f_hie, LABELS, seeding=fused)
        one = model.seed_maps(t_out, f_out, f_hie, LABELS, seeding=Seeding("fused", "relu", 0.5, 1))
        default = model.seed_maps(t_out, f_out, f_hie, LABELS)
        forward = model(x, LABELS, seeding=fused)
    assert model.training_seeding() == Seeding("tokens", "abs", 0.5, 1)
    assert default["seeds"].shape == (2, 4, 4, 6)
    assert out["seeds"].shape == (2, 4, 8, 12) == out["rcam_raw"].shape
    assert_one_hot(out["seeds"])
    present = torch.cat([torch.ones(2, 1), LABELS], dim=1).bool()
    assert (out["seeds"][~present] == 0).all()
    torch.testing.assert_close(out["seeds"], structural_seeds(f_hie, out["cam_bg"], LABELS, "relu"))
    torch.testing.assert_close(forward["rcam_raw"], out["rcam_raw"])
    torch.testing.assert_close(out["rcam_raw"][:, 1:], one["rcam_raw"][:, 1:])
    if bg_prototypes == 1:
        torch.testing.assert_close(out["rcam_raw"], one["rcam_raw"])
    else:
        bg, bg_one = out["rcam_raw"][:, 0], one["rcam_raw"][:, 0]
        assert not torch.allclose(bg, bg_one)
        on_bg = out["seeds"][:, 0] > 0      # nearly every background seed cell is matched at least as well
        assert on_bg.any() and (bg[on_bg] >= bg_one[on_bg] - 0.05).float().mean() > 0.9


def test_v2_gradients_with_zero_weights():
    model = v2().train()
    out = model(rand(2, 3, 128, 128, seed=12), LABELS)
    terms = total_loss(out, LABELS, LossWeights(w_gsc=0.0, w_ccl=0.0))
    terms["total"].backward()
    assert no_grad_at_all(model.hff)
    assert any_grad(model.head) and any_grad(model.backbone)


def test_v2_gsc_term_reaches_hff_and_head():
    model = v2(hff_detach=True).train()
    out = model(rand(2, 3, 128, 128, seed=13), LABELS)
    terms = total_loss(out, LABELS, LossWeights(w_gsc=1.0, w_ccl=0.0))
    assert terms["gsc"].requires_grad and not terms["ccl"].requires_grad
    terms["gsc"].backward()
    assert any_grad(model.hff) and any_grad(model.head)


@pytest.mark.parametrize("grad_to", ["both", "rcam"])
def test_v2_consistency_terms_train_what_grad_to_says(grad_to):
    """grad_to both (the paper): GSC and CCL reach the CAM head and the fusion branch; rcam: the
    fusion branch only, the same values, and the classifier learns from L_CLS alone."""
    model = v2(hff_detach=True).train()
    out = model(rand(2, 3, 128, 128, seed=13), LABELS)
    terms = total_loss(out, LABELS, LossWeights(grad_to=grad_to))
    reference = total_loss(out, LABELS, LossWeights())
    for k in ("gsc", "ccl", "total"):
        assert terms[k].item() == pytest.approx(reference[k].item(), abs=1e-6)
    (terms["gsc"] + terms["ccl"]).backward()
    assert any_grad(model.hff)
    if grad_to == "both":
        assert any_grad(model.head) and any_grad(model.backbone)
    else:
        assert no_grad_at_all(model.head) and no_grad_at_all(model.backbone)


@pytest.mark.parametrize("detach", [True, False])
def test_v2_rcam_only_loss_and_backbone(detach):
    model = v2(hff_detach=detach).train()
    out = model(rand(2, 3, 128, 128, seed=14), LABELS)
    out["rcam_raw"].sum().backward()
    assert any_grad(model.hff)
    assert no_grad_at_all(model.head)  # seeds carry no gradient back to the head
    if detach:
        assert no_grad_at_all(model.backbone)
    else:
        assert any_grad(model.backbone)


def test_v2_new_parameters():
    model = v2()
    new = {id(p) for p in model.new_parameters()}
    assert {id(p) for p in model.head.parameters()} <= new
    assert {id(p) for p in model.hff.parameters()} <= new
    assert len(new) == len(list(model.head.parameters())) + len(list(model.hff.parameters()))
    assert not new & {id(p) for p in model.backbone.parameters()}


def test_v2_state_dict_round_trip(tmp_path):
    a, b = v2(seed=0).eval(), v2(seed=1).eval()
    x = rand(1, 3, 128, 128, seed=15)
    lab = LABELS[:1]
    with torch.no_grad():
        before_a, before_b = a(x, lab), b(x, lab)
    assert not torch.equal(before_a["rcam_raw"], before_b["rcam_raw"])
    io.save_weights(tmp_path / "w.safetensors", a.state_dict())
    b.load_state_dict(io.load_weights(tmp_path / "w.safetensors"))
    with torch.no_grad():
        after = b(x, lab)
    for k in before_a:
        torch.testing.assert_close(after[k], before_a[k], rtol=0, atol=0)


# ---------------------------------------------------------------- padding is never a seed

def _pad(x: torch.Tensor, right: int, bottom: int, seed: int) -> torch.Tensor:
    """x (B, K, h, w) with ``bottom`` rows and ``right`` columns of random garbage added."""
    b, k, h, w = x.shape
    out = rand(b, k, h + bottom, w + right, seed=seed) * 3
    out[..., :h, :w] = x
    return out


@pytest.mark.parametrize("right, bottom", [(0, 0), (2, 1), (3, 0), (0, 4)])
@pytest.mark.parametrize("affinity, seed_features, bg_prototypes, every_class",
                         [("abs", "tokens", 1, False), ("relu", "tokens", 1, False), ("relu", "fused", 1, True),
                          ("abs", "fused", 3, False), ("relu", "tokens", 2, True)])
def test_v2_seeds_and_rcam_ignore_whatever_padding_surrounds_them(right, bottom, affinity, seed_features,
                                                                   bg_prototypes, every_class):
    """The same tokens, CAM and fused features, once alone and once with padded tokens of random
    values around them, masked out: the same seeds, R-CAM and M on the image, and nothing
    (all channels 0) on the padding. Without the mask the padding changes the seeds."""
    model = v2(num_classes=3, affinity="abs")
    seeding = Seeding(seed_features, affinity, 0.5, bg_prototypes, every_class)
    g = 2 if seed_features == "fused" else 1          # the seeds' grid: fused cells per token
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    h, w = 3, 4
    t_out, f_out, f_hie = rand(2, 16, h, w, seed=1), rand(2, 3, h, w, seed=2), rand(2, 8, 2 * h, 2 * w, seed=3)
    alone = model.seed_maps(t_out, f_out, f_hie, labels, seeding=seeding)
    H, W = 32 * (h + bottom), 32 * (w + right)                  # the pixel mask: the image at top left
    valid = torch.zeros(2, 1, H, W)
    valid[..., : 32 * h, : 32 * w] = 1
    padded = model.seed_maps(_pad(t_out, right, bottom, 4), _pad(f_out, right, bottom, 5),
                             _pad(f_hie, 2 * right, 2 * bottom, 6), labels, valid, seeding)
    assert alone["seeds"].shape[-2:] == (g * h, g * w)
    torch.testing.assert_close(padded["seeds"][..., : g * h, : g * w], alone["seeds"])
    assert padded["seeds"].sum() == alone["seeds"].sum()          # no padded token is a seed
    for key in ("rcam_raw", "cam_bg"):
        torch.testing.assert_close(padded[key][..., : 2 * h, : 2 * w], alone[key], atol=1e-5, rtol=1e-5)
        assert padded[key].sum().item() == pytest.approx(padded[key][..., : 2 * h, : 2 * w].sum().item())
    assert padded["valid"].shape == (2, 1, 2 * (h + bottom), 2 * (w + right))
    if right or bottom:      # the check is not vacuous: unmasked, the padding moves the seeds
        unmasked = model.seed_maps(_pad(t_out, right, bottom, 4), _pad(f_out, right, bottom, 5),
                                   _pad(f_hie, 2 * right, 2 * bottom, 6), labels, seeding=seeding)
        assert not torch.equal(unmasked["seeds"][..., : g * h, : g * w], alone["seeds"]) or \
            not torch.allclose(unmasked["rcam_raw"][..., : 2 * h, : 2 * w], alone["rcam_raw"])


class _PointwiseFusion(torch.nn.Module):
    """A stand-in for the fusion whose output at a cell depends only on the pixels under it."""

    def __init__(self):
        super().__init__()
        self.fuse = torch.nn.Conv2d(3, 8, 1)

    def forward(self, stages):
        return self.fuse(F.avg_pool2d(stages[0], 16))


def test_v2_forward_masks_padding_through_its_grids():
    """The model's own forward with stand-ins for the backbone and the fusion whose output at a
    cell depends only on the pixels under it, zero on zero padding (a Swin window attends over
    the padding too, and so does the 3x3 CAM head at the image's edge, as a ResNet's convolutions
    see SIPE's padding): the mask reaches both grids, the seeds, M and the R-CAM."""
    model = v2(num_classes=3).eval()
    proj = torch.nn.Conv2d(3, model.backbone.num_features, 1, bias=False)
    model.features = lambda x: (proj(F.avg_pool2d(x, 32)), [x])
    model.hff = _PointwiseFusion()
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    image = rand(1, 3, 96, 128, seed=7)
    padded = torch.zeros(1, 3, 160, 224)
    padded[..., :96, :128] = image
    valid = torch.zeros(1, 1, 160, 224)
    valid[..., :96, :128] = 1
    with torch.no_grad():
        a, b = model(image, labels), model(padded, labels, valid=valid)
    torch.testing.assert_close(b["seeds"][..., :3, :4], a["seeds"])
    assert b["seeds"][..., 3:, :].sum() == 0 and b["seeds"][..., 4:].sum() == 0
    torch.testing.assert_close(b["rcam_raw"][..., :6, :8], a["rcam_raw"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["cam_bg"][..., :6, :8], a["cam_bg"], atol=1e-5, rtol=1e-5)


def test_multiscale_rcam_of_a_padded_image_is_the_unpadded_ones():
    """Seed inference pads a 96 x 128 image to 128 x 128 (swin_demo's multiple is 64). With the
    point-wise stand-ins, its R-CAM must be the one of the image run unpadded, up to the image's
    border: the masked maps are 0 on padding, which the upsampling must not blend in."""
    model = v2(num_classes=3).eval()
    proj = torch.nn.Conv2d(3, model.backbone.num_features, 1, bias=False)
    model.features = lambda x: (proj(F.avg_pool2d(x, 32)), [x])
    model.hff = _PointwiseFusion()
    img = (torch.rand(96, 128, 3, generator=torch.Generator().manual_seed(9)) * 255).to(torch.uint8).numpy()
    assert model.pad_multiple == 64
    got = multiscale_maps(model, img, [1, 2], [1.0], flip=False, device=CPU)["rcam"]
    from wsss.data.datasets import normalize, to_tensor
    with torch.no_grad():
        out = model(to_tensor(normalize(img))[None], torch.tensor([[1.0, 1.0, 0.0]]))
    want = F.interpolate(out["rcam_raw"][:, :3], size=(96, 128), mode="bilinear", align_corners=False)[0]
    want = want / (want.flatten(1).amax(dim=1)[:, None, None] + 1e-5)
    torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=1e-5)


def test_valid_grid_a_cell_is_the_image_where_any_pixel_is():
    from wsss.models.seeds import valid_grid
    valid = torch.zeros(1, 1, 64, 96)
    valid[..., :40, :33] = 1            # 40 rows: cells 0-1 of 32 px; 33 columns: cells 0-1
    assert valid_grid(valid, (2, 3))[0, 0].tolist() == [[1, 1, 0], [1, 1, 0]]
    assert valid_grid(valid, (4, 6))[0, 0].tolist() == [[1, 1, 1, 0, 0, 0]] * 3 + [[0] * 6]
    assert valid_grid(None, (2, 3)) is None


def test_gsc_over_the_image_only():
    cam, rcam = torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)
    rcam[0, :, 0, 0] = 1.0                 # differs by 1 on the one image cell (two channels)
    rcam[0, :, 1, 1] = 1.0                 # and on a padded cell
    valid = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert gsc_loss(cam, rcam).item() == pytest.approx(0.5)
    assert gsc_loss(cam, rcam, valid).item() == pytest.approx(1.0)
    full = torch.ones(1, 1, 2, 2)
    assert gsc_loss(cam, rcam, full).item() == pytest.approx(gsc_loss(cam, rcam).item())


def test_train_crops_mark_their_padding():
    """A crop larger than its image: the box covers the image pixels, the rest is padding."""
    from wsss.data.datasets import box_mask, random_crop
    img = np.ones((20, 30, 3), dtype=np.float32)
    out, box = random_crop(img, 64, np.random.default_rng(0))
    mask = box_mask(torch.tensor([box]), 64, 64)[0, 0]
    assert mask.sum().item() == 600 and torch.equal(mask.bool(), torch.from_numpy(out[..., 0] != 0))


# =============================================================================== losses.py

def test_gsc_hand_case():
    cam = torch.tensor([[[[0.0, 1.0]], [[0.5, 0.5]]]])
    rcam = torch.tensor([[[[0.5, 1.0]], [[0.0, 0.25]]]])
    # |diffs| = 0.5, 0, 0.5, 0.25 -> mean 0.3125
    assert gsc_loss(cam, rcam).item() == pytest.approx(0.3125)


def cosine_maps(cs) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, K, 1, 2) maps: CAM_k = [1, 0], R-CAM_k = [c_k, sqrt(1 - c_k^2)]: cos = c_k."""
    cam = torch.tensor([[[[1.0, 0.0]] for _ in cs]])
    rcam = torch.tensor([[[[c, math.sqrt(1 - c * c)]] for c in cs]])
    return cam, rcam


def paper_value(c):
    return 0.5 * ((2 / 3 * c) ** 2 + (1 - c) ** 2)


def test_ccl_paper_values():
    cam, rcam = cosine_maps([1.0, 1.0, 1.0])
    assert ccl_paper(cam, rcam, torch.tensor([[1.0, 1.0]])).item() == pytest.approx(2 / 9, abs=1e-6)
    for c in (0.0, 0.3, 0.8):
        cam, rcam = cosine_maps([c, c, c])
        assert ccl_paper(cam, rcam, torch.tensor([[1.0, 1.0]])).item() == pytest.approx(paper_value(c), abs=1e-6)
    # different cosines per class: the mean over the present classes
    cam, rcam = cosine_maps([0.2, 0.5, 0.9])
    want = (paper_value(0.2) + paper_value(0.5) + paper_value(0.9)) / 3
    assert ccl_paper(cam, rcam, torch.tensor([[1.0, 1.0]])).item() == pytest.approx(want, abs=1e-6)


def test_ccl_paper_minimum_at_9_over_13():
    cs = torch.linspace(0, 1, 1301)
    vals = torch.stack([ccl_paper(*cosine_maps([float(c)] * 2), torch.tensor([[1.0]])) for c in cs])
    best = cs[vals.argmin()].item()
    assert best == pytest.approx(9 / 13, abs=1e-3)
    assert vals.min().item() == pytest.approx(paper_value(9 / 13), abs=1e-6)
    assert vals.min() < vals[-1]  # c = 1 is not the optimum


def test_ccl_paper_absent_classes_ignored():
    labels = torch.tensor([[1.0, 0.0]])  # class 2 absent; background always present
    a = ccl_paper(*cosine_maps([0.4, 0.7, 0.1]), labels)
    b = ccl_paper(*cosine_maps([0.4, 0.7, 0.95]), labels)
    assert a.item() == pytest.approx(b.item(), abs=1e-7)
    assert a.item() == pytest.approx((paper_value(0.4) + paper_value(0.7)) / 2, abs=1e-6)


def one_hot_maps(order, k) -> torch.Tensor:
    """(1, k, 1, k): channel order[p] is 1 at pixel p."""
    m = torch.zeros(1, k, 1, k)
    for p, ch in enumerate(order):
        m[0, ch, 0, p] = 1.0
    return m


def test_ccl_contrastive_hand_cases():
    cam = one_hot_maps([0, 1, 2], 3)
    labels = torch.tensor([[1.0, 1.0]])
    assert ccl_contrastive(cam, cam.clone(), labels).item() == pytest.approx(0.0, abs=1e-6)
    # classes 1 and 2 swapped in R-CAM: pull (0 + 1 + 1) / 3, push (c_12 + c_21) / 6 pairs = 1/3
    swapped = one_hot_maps([0, 2, 1], 3)
    assert ccl_contrastive(cam, swapped, labels).item() == pytest.approx(2 / 3 + 1 / 3, abs=1e-6)
    # background and the class swapped: pull 1, push (1 + 1) / 2 = 1
    cam2, swapped2 = one_hot_maps([0, 1], 2), one_hot_maps([1, 0], 2)
    assert ccl_contrastive(cam2, swapped2, torch.tensor([[1.0]])).item() == pytest.approx(2.0, abs=1e-6)
    # class 2 absent: its R-CAM copying class 1 (c_12 = 1, c_22 = 0) is ignored -> 0 ...
    bad2 = cam.clone()
    bad2[0, 2] = cam[0, 1]
    assert ccl_contrastive(cam, bad2, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)
    # ... while with class 2 present: pull (0 + 0 + 1) / 3, push (c_12 + c_21) / 6 = 1 / 6
    assert ccl_contrastive(cam, bad2, labels).item() == pytest.approx(1 / 3 + 1 / 6, abs=1e-6)


# ------------------------------------------------------------------------------- total_loss

def fake_v2_out(seed=0, c=2):
    g = torch.Generator().manual_seed(seed)
    return {"logits": torch.randn(2, c, generator=g).requires_grad_(),
            "cam_raw": torch.randn(2, c, 3, 3, generator=g),
            "cam_bg": torch.rand(2, c + 1, 3, 3, generator=g).requires_grad_(),
            "rcam_raw": torch.rand(2, c + 1, 3, 3, generator=g).requires_grad_()}


def test_total_loss_v1_keys():
    out = fake_v2_out()
    terms = total_loss({"logits": out["logits"], "cam_raw": out["cam_raw"]}, torch.tensor([[1.0, 0], [0, 1]]))
    assert set(terms) == {"cls", "total"}
    assert torch.equal(terms["total"], terms["cls"])


@pytest.mark.parametrize("ccl", ["paper", "contrastive"])
def test_total_loss_v2_sum(ccl):
    out, labels = fake_v2_out(1), torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    w = LossWeights(w_gsc=0.7, w_ccl=1.3, ccl=ccl)
    terms = total_loss(out, labels, w)
    assert set(terms) == {"cls", "gsc", "ccl", "total"}
    want = terms["cls"] + 0.7 * terms["gsc"] + 1.3 * terms["ccl"]
    torch.testing.assert_close(terms["total"], want)
    # the terms are the functions' values on max-normed R-CAM
    rcam = out["rcam_raw"] / (out["rcam_raw"].flatten(2).amax(dim=2)[..., None, None] + 1e-5)
    torch.testing.assert_close(terms["gsc"], gsc_loss(out["cam_bg"], rcam))
    fn = ccl_paper if ccl == "paper" else ccl_contrastive
    torch.testing.assert_close(terms["ccl"], fn(out["cam_bg"], rcam, labels))


def test_total_loss_zero_weight_reported_not_summed():
    out, labels = fake_v2_out(2), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    terms = total_loss(out, labels, LossWeights(w_gsc=0.0, w_ccl=0.0))
    assert set(terms) == {"cls", "gsc", "ccl", "total"}
    assert terms["gsc"].item() > 0 and terms["ccl"].item() > 0
    assert not terms["gsc"].requires_grad and not terms["ccl"].requires_grad
    assert torch.equal(terms["total"], terms["cls"])
    one = total_loss(out, labels, LossWeights(w_gsc=1.0, w_ccl=0.0))
    torch.testing.assert_close(one["total"], one["cls"] + one["gsc"])
    assert one["gsc"].requires_grad and not one["ccl"].requires_grad


# =============================================================================== inference.py

def test_multiscale_maps_v2_and_flip():
    model = v2(num_classes=5).eval()
    img = (torch.rand(70, 90, 3, generator=torch.Generator().manual_seed(16)) * 255).to(torch.uint8).numpy()
    a = multiscale_maps(model, img, [2, 5], [1.0, 0.5], flip=True, device=CPU)
    assert set(a) == {"cam", "rcam"}
    assert a["cam"].shape == (2, 70, 90) and a["rcam"].shape == (3, 70, 90)
    for m in a.values():
        assert m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1
        for ch in m:
            assert ch.max() == 0 or ch.max() > 0.999
    assert a["rcam"][0].max() > 0.999  # the background always has seeds here
    b = multiscale_maps(model, img[:, ::-1].copy(), [2, 5], [1.0, 0.5], flip=True, device=CPU)
    for k in ("cam", "rcam"):
        torch.testing.assert_close(torch.from_numpy(a[k][..., ::-1].copy()), torch.from_numpy(b[k]),
                                   atol=1e-4, rtol=0)


def test_multiscale_maps_v1_only_cam():
    torch.manual_seed(0)
    model = build_model(ModelConfig("v1", "swin_demo", num_classes=5, img_size=128)).eval()
    assert isinstance(model, SWTformerV1) and not isinstance(model, SWTformerV2)
    img = np.full((40, 50, 3), 120, dtype=np.uint8)
    out = multiscale_maps(model, img, [3], [1.0], flip=False, device=CPU)
    assert set(out) == {"cam"} and out["cam"].shape == (1, 40, 50)


# =============================================================================== metrics.SeedScorer

GT = np.array([[0, 0, 1], [0, 1, 1]], dtype=np.uint8)
CAM = np.array([[[0.1, 0.5, 0.9], [0.2, 0.7, 0.8]]], dtype=np.float32)


def test_seed_scorer_hand_case():
    # argmax over rcam: [[0, 1, 1], [1, 1, 1]]
    rcam = np.array([[[0.9, 0.1, 0.0], [0.2, 0.1, 0.3]],
                     [[0.1, 0.8, 0.9], [0.6, 0.9, 0.7]]], dtype=np.float32)
    scorer = SeedScorer(["a", "b"], [0.3, 0.6])
    scorer.update({"keys": np.array([1]), "cam": CAM, "rcam": rcam}, GT)
    s = scorer.summary()
    assert set(s) == {"cam", "rcam_fg", "rcam"}
    # rcam argmax: bg TP 1 / union 3; class 1 TP 3 / union 5; class 'b' absent -> not averaged
    assert s["rcam"]["per_class"]["background"]["iou"] == pytest.approx(1 / 3)
    assert s["rcam"]["per_class"]["a"]["iou"] == pytest.approx(3 / 5)
    assert s["rcam"]["per_class"]["b"]["iou"] is None
    assert s["rcam"]["miou"] == pytest.approx(7 / 15)
    assert s["rcam"]["pixel_accuracy"] == pytest.approx(4 / 6)
    assert "threshold" not in s["rcam"]
    # cam sweep: t=0.3 -> fg where > 0.3: bg 2/3, a 3/4; t=0.6 -> exactly the ground truth
    assert s["cam"]["threshold"] == 0.6 and s["cam"]["miou"] == pytest.approx(1.0)
    assert [t for t, _ in s["cam"]["curve"]] == [0.3, 0.6]
    assert s["cam"]["curve"][0][1] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert {"threshold", "curve", "miou"} <= set(s["rcam_fg"])


def test_seed_scorer_v1_maps():
    scorer = SeedScorer(["a", "b"], [0.3, 0.6])
    scorer.update({"keys": np.array([1]), "cam": CAM}, GT)
    assert set(scorer.summary()) == {"cam"}


# =============================================================================== artifacts

def test_save_load_cams_with_rcam(tmp_path):
    g = np.random.default_rng(0)
    cam, rcam = g.random((2, 5, 7)).astype(np.float32), g.random((3, 5, 7)).astype(np.float32)
    path = tmp_path / "train" / "img.npz"
    save_cams(path, [2, 5], {"cam": cam, "rcam": rcam})
    got = load_cams(path, expect_shape=(5, 7))
    assert got["keys"].tolist() == [2, 5]
    assert got["rcam"].dtype == np.float32 and got["rcam"].shape == (3, 5, 7)
    np.testing.assert_allclose(got["rcam"], rcam, atol=1e-3)  # stored as float16
    np.testing.assert_allclose(got["cam"], cam, atol=1e-3)


def test_load_cams_rcam_wrong_channels(tmp_path):
    path = tmp_path / "bad.npz"
    save_cams(path, [2, 5], {"cam": np.zeros((2, 5, 7)), "rcam": np.zeros((2, 5, 7))})
    with pytest.raises(io.ArtifactError) as info:
        load_cams(path)
    assert str(path) in str(info.value) and "R-CAM" in str(info.value)


# =============================================================================== config

@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def mutated(raw: dict, dotted: str, value) -> dict:
    tree = copy.deepcopy(raw)
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        node = node[key]
    node[leaf] = value
    return tree


@pytest.mark.parametrize("key,value", [
    ("model.affinity", "cos"),
    ("loss.ccl", "foo"),
    ("model.hff_dims", [128, 128, 256]),
    ("model.hff_dims", [128, 128, 256, 0]),
    ("model.hff_detach", 1),
    ("model.bg_weight", 1.5),
    ("loss.w_gsc", -1),
    ("loss.w_ccl", -0.5),
    ("loss.grad_to", "cam"),
])
def test_v2_params_bad_values(raw, key, value):
    with pytest.raises(ParamsError, match=f"'{key}'"):
        validate_params(mutated(raw, key, value))


def test_v2_params_unknown_key(raw):
    with pytest.raises(ParamsError, match="'loss.w_foo'"):
        validate_params(mutated(raw, "loss.w_foo", 1.0))


def test_v2_params_valid_values(raw):
    tree = mutated(mutated(raw, "model.affinity", "relu"), "loss.ccl", "contrastive")
    tree = mutated(mutated(tree, "loss.w_gsc", 0), "model.version", "v2")
    p = validate_params(tree)
    assert p.model.affinity == "relu" and p.loss.ccl == "contrastive" and p.loss.w_gsc == 0


def test_loss_weights_ramp():
    """ramp_epochs: both V2 weights rise linearly from 0, reach full weight at the ramp's end, stay."""
    from wsss.losses import LossWeights

    w = LossWeights(w_gsc=2.0, w_ccl=0.5, ccl="contrastive", ramp_epochs=4)
    assert (w.at(0).w_gsc, w.at(0).w_ccl) == (0.0, 0.0)
    assert (w.at(1).w_gsc, w.at(1).w_ccl) == (0.5, 0.125)
    assert (w.at(4).w_gsc, w.at(10).w_ccl) == (2.0, 0.5)
    assert w.at(2).ccl == "contrastive"
    assert LossWeights(w_gsc=1.0, w_ccl=1.0).at(0) == LossWeights(w_gsc=1.0, w_ccl=1.0)  # no ramp: as given


def test_cam_panel_rows_for_cam_and_rcam():
    """Previews: one row per map; the R-CAM row has one more tile (its background channel)."""
    from wsss.viz import cam_panel

    image = np.zeros((20, 30, 3), dtype=np.uint8)
    maps = {"cam": np.random.default_rng(0).random((2, 20, 30)).astype(np.float32),
            "rcam": np.random.default_rng(1).random((3, 20, 30)).astype(np.float32)}
    panel = cam_panel(image, maps, [1, 3], ["a", "b", "c"], gt=np.zeros((20, 30), dtype=np.uint8))
    assert panel.shape == (40, 4 * 30, 3) and panel.dtype == np.uint8
    assert not panel[:20, 3 * 30:].any()  # the CAM row's missing 4th tile is padding (black) ...
    assert panel[20:, 3 * 30:].any()  # ... while the R-CAM row fills it
