"""IRN-style refinement: pair geometry, boundary -> affinity, pair labels, loss, random walk,
joint crops, the relation net and the walker, on small cases whose answers are known."""
from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from wsss.data import files
from wsss.models import ModelConfig, build_model
from wsss.models.relations import RelationNet
from wsss.refine import affinity
from wsss.refine.irn import (STRIDE, IRNConfig, LabelCrops, Walker, loop_config, train_relations, walk,
                             walked_labels)
from wsss.training import make_optimizer


# --- pair geometry -------------------------------------------------------------------------

@pytest.mark.parametrize("radius", [2, 3, 5, 10])
def test_displacements_are_half_of_the_disc(radius):
    d = affinity.displacements(radius)
    disc = [(y, x) for y in range(-radius, radius + 1) for x in range(-radius, radius + 1)
            if 0 < y * y + x * x < radius * radius]
    assert len(d) * 2 == len(disc) and len(set(d)) == len(d)
    assert not any((-y, -x) in d for y, x in d)        # one direction per pair
    assert affinity.displacements(2) == ((0, 1), (1, -1), (1, 0), (1, 1))


def test_path_cells_are_irns():
    """IRN's PathIndex: the cells of the box spanned by the two ends that lie within distance 1
    (strictly) of the line through them, both ends included."""
    box = lambda dy, dx: {(y, x) for y in range(min(0, dy), max(0, dy) + 1)  # noqa: E731
                          for x in range(min(0, dx), max(0, dx) + 1)}
    assert set(affinity.path_cells(0, 3)) == {(0, 0), (0, 1), (0, 2), (0, 3)}
    assert set(affinity.path_cells(1, -1)) == box(1, -1)                # 4 cells (rounding kept 2)
    assert set(affinity.path_cells(2, 1)) == box(2, 1)                  # 6: off-line cells at 0.89
    assert set(affinity.path_cells(3, 1)) == box(3, 1)                  # 8: at 0.95
    assert set(affinity.path_cells(2, 2)) == box(2, 2) - {(0, 2), (2, 0)}   # the far corners at 1.41
    assert set(affinity.path_cells(1, -3)) == box(1, -3)                # 8: corners at 3/sqrt(10)
    # (2, -3): 8 of the 12 cells of its box, (0, -2) and (2, -1) at 4/sqrt(13) = 1.11 left out
    assert set(affinity.path_cells(2, -3)) == {(0, 0), (0, -1), (1, 0), (1, -1), (1, -2), (1, -3), (2, -2), (2, -3)}
    for radius in (5, 10):
        for dy, dx in affinity.displacements(radius):
            cells = affinity.path_cells(dy, dx)
            assert (0, 0) in cells and (dy, dx) in cells and len(set(cells)) == len(cells)
            # the same set by plain geometry: box cells whose centre is closer than 1 to the line
            near = {c for c in box(dy, dx) if abs(dy * c[1] - dx * c[0]) / math.hypot(dy, dx) < 1 - 1e-12}
            assert set(cells) == near, (dy, dx)
    # with the rounded points on the line, 26 of the 34 displacements at radius 5 got fewer cells
    assert sum(len(affinity.path_cells(*d)) > max(abs(d[0]), abs(d[1])) + 1
               for d in affinity.displacements(5)) == 26


def test_path_on_a_3x3_grid():
    """One boundary cell at the top middle of a 3x3 grid: IRN's path from (0, 0) to (1, 1) holds
    it (the whole 2x2 box), so the pair is cut; (1, 0) -> (1, 2) along the middle row is not."""
    b = torch.zeros(1, 3, 3)
    b[0, 0, 1] = 0.9
    aff = affinity.boundary_to_affinity(b, radius=3)[0]
    d = affinity.displacements(3)
    assert aff[d.index((1, 1)), 0, 0].item() == pytest.approx(0.1)    # rounding said 1.0
    assert aff[d.index((1, -1)), 0, 2].item() == pytest.approx(0.1)
    assert aff[d.index((0, 2)), 1, 0].item() == 1.0
    assert aff[d.index((1, 0)), 0, 1].item() == pytest.approx(0.1)    # an end is on the boundary
    assert aff[d.index((2, 1)), 0, 0].item() == pytest.approx(0.1)    # box rows 0-2, cols 0-1
    assert aff[d.index((1, 2)), 1, 0].item() == 1.0                   # box rows 1-2: not row 0


def test_source_cells_leave_irns_border_band_out():
    keep = affinity.source_cells(5, 7, radius=3)        # band of 2
    want = torch.zeros(5, 7, dtype=torch.bool)
    want[:3, 2:5] = True
    assert torch.equal(keep, want)


def test_boundary_wall_cuts_affinity():
    """A vertical wall (boundary 1 in column 2) of a 5x5 grid: pairs across it, or leaving the
    grid, have affinity 0; pairs on one side have affinity 1."""
    b = torch.zeros(1, 5, 5)
    b[:, :, 2] = 1.0
    aff = affinity.boundary_to_affinity(b, radius=3)[0]
    for k, (dy, dx) in enumerate(affinity.displacements(3)):
        for y in range(5):
            for x in range(5):
                ty, tx = y + dy, x + dx
                inside = 0 <= ty < 5 and 0 <= tx < 5
                same_side = inside and x != 2 and tx != 2 and (x < 2) == (tx < 2)
                assert aff[k, y, x].item() == (1.0 if same_side else 0.0), (dy, dx, y, x)


def test_affinity_takes_the_largest_boundary_on_the_line():
    b = torch.zeros(1, 1, 6)
    b[0, 0, 2], b[0, 0, 4] = 0.3, 0.8
    aff = affinity.boundary_to_affinity(b, radius=4)[0]
    k = affinity.displacements(4).index((0, 3))
    assert aff[k, 0, 0].item() == pytest.approx(0.7)     # cells 0..3 pass the 0.3
    assert aff[k, 0, 1].item() == pytest.approx(0.2)     # cells 1..4 pass the 0.8
    assert aff[k, 0, 3].item() == 0.0                    # 3 + 3 leaves the grid


LAB = torch.tensor([[[0, 0, 1, 255],
                     [0, 3, 3, 0],
                     [3, 3, 3, 3]]])


def test_pair_labels_by_hand():
    """Radius 2 on a 3x4 grid: IRN's sources are rows 0-1, columns 1-2 (the bottom row and the
    outer columns are no source); a pair touching 255 is not used."""
    pairs = affinity.pair_labels(LAB, radius=2)
    d = affinity.displacements(2)                      # (0, 1), (1, -1), (1, 0), (1, 1)
    at = lambda kind, y, x: [d[k] for k in range(len(d)) if pairs[kind][0, k, y, x]]  # noqa: E731
    assert at("bg_pos", 0, 1) == [(1, -1)] and at("neg", 0, 1) == [(0, 1), (1, 0), (1, 1)]
    assert at("neg", 0, 2) == [(1, -1), (1, 0), (1, 1)] and at("bg_pos", 0, 2) == []   # (0, 3) is 255
    assert at("fg_pos", 1, 1) == list(d)
    assert at("fg_pos", 1, 2) == [(1, -1), (1, 0), (1, 1)] and at("neg", 1, 2) == [(0, 1)]
    assert [int(pairs[k].sum()) for k in ("bg_pos", "fg_pos", "neg")] == [1, 7, 7]
    # (0, 0) -> (0, 1) is a background pair, but (0, 0) is in the border band: no source
    assert not any(pairs[k][0, :, 0, 0].any() for k in pairs)
    assert not any(pairs[k][0, :, 2].any() for k in pairs)


def test_relation_loss_by_hand():
    pairs = affinity.pair_labels(LAB, radius=2)
    shape = pairs["neg"].shape
    half = affinity.relation_loss(torch.full(shape, 0.5), pairs)
    assert half["total"].item() == pytest.approx(math.log(2), rel=1e-4)
    perfect = (pairs["bg_pos"] | pairs["fg_pos"]).float()     # related where the labels agree
    assert affinity.relation_loss(perfect, pairs)["total"].item() < 1e-4
    assert affinity.relation_loss(1 - perfect, pairs)["total"].item() > 5
    # each kind averaged over its own pairs: bg_pos / 4 + fg_pos / 4 + neg / 2
    aff = torch.full(shape, 0.5)
    aff[pairs["bg_pos"]] = 0.25
    t = affinity.relation_loss(aff, pairs)
    assert t["bg_pos"].item() == pytest.approx(-math.log(0.25 + 1e-5))
    assert t["total"].item() == pytest.approx(-math.log(0.25 + 1e-5) / 4 + math.log(2) * 3 / 4, rel=1e-4)


# --- random walk ---------------------------------------------------------------------------

def test_transition_matrix_by_hand():
    """A 1x2 grid: A = [[1, a^b], [a^b, 1]], rows normalised."""
    aff = torch.zeros(len(affinity.displacements(2)), 1, 2)
    aff[affinity.displacements(2).index((0, 1)), 0, 0] = 0.5
    m = affinity.transition_matrix(aff, radius=2, beta=2).to_dense()
    q = 0.25 / 1.25
    assert torch.allclose(m, torch.tensor([[1 - q, q], [q, 1 - q]]))


def test_random_walk_stays_in_its_block():
    """Affinity 1 inside two blocks and 0 between them (a boundary wall): what starts in the left
    block never reaches the right one, and evens out over its own block."""
    b = torch.zeros(1, 6, 7)
    b[:, :, 3] = 1.0
    aff = affinity.boundary_to_affinity(b, radius=3)[0]
    x = torch.zeros(2, 6, 7)
    x[0, 2, 1] = 9.0                   # channel 0: a point in the left block
    x[1, :, 4:] = 1.0                  # channel 1: the right block
    out = affinity.random_walk(x, aff, radius=3, beta=10, iterations=300)
    assert out[0, :, 3:].abs().max().item() == 0.0
    assert torch.allclose(out[0, :, :3], out[0, :, :3].mean().expand(6, 3), atol=1e-3)
    # the walk conserves the degree-weighted sum (A symmetric, T = A D^-1): the limit is 9 d_p / sum d
    cells = [(y, x) for y in range(6) for x in range(3)]
    degree = {c: sum((c[0] - o[0]) ** 2 + (c[1] - o[1]) ** 2 < 9 for o in cells) for c in cells}
    assert out[0, 0, 0].item() == pytest.approx(9.0 * degree[(2, 1)] / sum(degree.values()), rel=1e-3)
    assert out[1, :, :4].abs().max().item() == 0.0 and torch.allclose(out[1, :, 4:], torch.ones(6, 3))


def test_sparse_walk_equals_dense_matrix_power():
    """x T^t by t sparse products == the dense matrix power of the same transition matrix."""
    g = torch.Generator().manual_seed(0)
    aff = torch.rand(len(affinity.displacements(3)), 5, 6, generator=g)
    x = torch.rand(3, 5, 6, generator=g)
    walked = affinity.random_walk(x, aff, radius=3, beta=3, iterations=16)
    m = affinity.transition_matrix(aff, radius=3, beta=3).to_dense().double()
    dense = (torch.linalg.matrix_power(m, 16) @ x.reshape(3, -1).T.double()).T.reshape(3, 5, 6)
    assert torch.allclose(walked.double(), dense, atol=1e-5)
    rows = m.sum(dim=1)
    assert torch.allclose(rows, torch.ones_like(rows))


# --- confident labels ----------------------------------------------------------------------

def test_walk_on_4_cells_is_irns():
    """IRN's make_sem_seg_labels on a 1x4 grid, beta 1, one step. The boundary (0, 0, 1, 0)
    links cells 0 and 1 only. Seeds times (1 - boundary): class A (1, .5, .8, .2) -> (1, .5, 0, .2),
    class B (.05, .05, .05, .15) -> (.05, .05, 0, .15). One step averages cells 0 and 1:
    A (.75, .75, 0, .2), B (.05, .05, 0, .15). One global max (.75): A (1, 1, 0, .267),
    B (.067, .067, 0, .2); background .25 -> labels (A, A, bg, A)."""
    cfg = IRNConfig(walk_radius=2, beta=1.0, iterations=1, bg_threshold=0.25)
    boundary = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    seeds = torch.tensor([[[1.0, 0.5, 0.8, 0.2]], [[0.05, 0.05, 0.05, 0.15]]])
    walked = walk(seeds, boundary, "cam", cfg)
    torch.testing.assert_close(walked, torch.tensor([[[0.75, 0.75, 0.0, 0.2]], [[0.05, 0.05, 0.0, 0.15]]]))
    assert walked_labels(walked, "cam", 0.25)[0].tolist() == [1, 1, 0, 1]
    # each channel by its own max (the rule before) would give B the last cell: (A, A, bg, B)
    per_channel = walked / walked.flatten(1).amax(1)[:, None, None]
    assert torch.cat([torch.full((1, 1, 4), 0.25), per_channel]).argmax(0)[0].tolist() == [1, 1, 0, 2]


def test_walk_of_an_rcam_is_sipes():
    """SIPE's make_seg_labels: the R-CAM (background first) to the power 1.5, then the walk, then
    the argmax over its own channels (no threshold). Two linked cells, bg (.5, .5), class
    (.9, .05): averaged as they are, bg .5 beats .475; to the power 1.5, .354 loses to .433."""
    boundary = torch.zeros(1, 2)
    rcam = torch.tensor([[[0.5, 0.5]], [[0.9, 0.05]]])
    cfg = IRNConfig(walk_radius=2, beta=1.0, iterations=1, bg_threshold=0.99)
    assert walked_labels(walk(rcam, boundary, "rcam", cfg), "rcam", 0.99)[0].tolist() == [1, 1]
    plain = replace(cfg, rcam_power=1.0)
    assert walked_labels(walk(rcam, boundary, "rcam", plain), "rcam", 0.99)[0].tolist() == [0, 0]


def test_sgd_is_irns_poly_schedule():
    cfg = IRNConfig(optimizer="sgd", lr=0.1, weight_decay=1e-4, epochs=2)
    p = torch.nn.Parameter(torch.zeros(1))
    opt, schedule = make_optimizer([{"params": [p]}], loop_config(cfg), steps_per_epoch=5)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0
    lrs = []
    for _ in range(3):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs == pytest.approx([0.1, 0.1 * 0.9 ** 0.9, 0.1 * 0.8 ** 0.9])
    with pytest.raises(ValueError, match="refine.irn.optimizer"):
        loop_config(replace(cfg, optimizer="adam"))


# --- data, net, walker ---------------------------------------------------------------------

def _write_images(root, n=4, size=(70, 90)):
    """Images whose left part is red (class 5) and the rest dark (background), with labels to match."""
    ids, paths = [], []
    (root / "JPEGImages").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        img = np.full((*size, 3), 30, dtype=np.uint8)
        cut = 20 + 10 * i
        img[:, :cut] = (220, 20, 20)
        lab = np.zeros(size, dtype=np.uint8)
        lab[:, :cut] = 5
        lab[:, cut - 4:cut + 4] = 255
        image_id = f"im{i}"
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
        (root / "labels" / f"{image_id}.png").write_bytes(files.palette_png(lab))
        ids.append(image_id)
        paths.append(root / "labels" / f"{image_id}.png")
    return ids, paths


def test_label_crops_keep_image_and_labels_aligned(tmp_path):
    ids, paths = _write_images(tmp_path)
    cfg = IRNConfig(crop_size=64, resize_long=(60, 120), seed=3)
    ds = LabelCrops([tmp_path / "JPEGImages" / f"{i}.jpg" for i in ids], ids, paths, cfg)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 64, 64) and y.shape == (64 // STRIDE, 64 // STRIDE) and y.dtype == torch.int64
            assert set(y.unique().tolist()) <= {0, 5, 255}
            # where a cell is labelled, the image under it says the same: red = 5, dark = 0
            red = x[0, STRIDE // 2::STRIDE, STRIDE // 2::STRIDE] > 1.0
            dark = x.abs().sum(0)[STRIDE // 2::STRIDE, STRIDE // 2::STRIDE] > 0   # padding is exactly 0
            assert torch.all(red[y == 5]) and not torch.any(red[y == 0])
            assert torch.all(y[~dark] == 255)
    assert torch.equal(ds[1][1], ds[1][1])          # the same (seed, epoch, index) -> the same crop


def _tiny_classifier(backbone="swin_demo"):
    cfg = ModelConfig(version="v1", backbone=backbone, num_classes=20, img_size=64)
    torch.manual_seed(0)
    return build_model(cfg).eval()


@pytest.mark.parametrize("backbone", ["swin_demo", "swin_demo_p2"])
def test_relation_net_shapes_and_frozen_backbone(tmp_path, backbone):
    """The boundary map is on the stride-4 grid whatever the patch size (swin_demo_p2's first
    stage is at stride 2: it is averaged down)."""
    net = RelationNet(_tiny_classifier(backbone), dim=8)
    x = torch.randn(2, 3, 64, 96)
    b = net(x)
    assert b.shape == (2, 16, 24) and b.min() >= 0 and b.max() <= 1
    b.mean().backward()
    assert all(p.grad is None for p in net.classifier.parameters())
    assert all(p.grad is not None for p in net.head.parameters())
    net.train()
    assert not net.classifier.training and net.head.training


def test_train_relations_moves_only_the_head(tmp_path):
    ids, paths = _write_images(tmp_path)
    net = RelationNet(_tiny_classifier(), dim=8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = IRNConfig(epochs=2, batch_size=2, crop_size=64, resize_long=(60, 100), dim=8, train_radius=3)
    summary = train_relations(net, LabelCrops([tmp_path / "JPEGImages" / f"{i}.jpg" for i in ids], ids, paths, cfg), cfg, torch.device("cpu"))
    assert summary["epoch"] == 2 and math.isfinite(summary["loss_total"])
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("classifier."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))


def test_walker_boundary_is_the_sigmoid_of_the_mean_logit():
    """IRN's EdgeDisplacement: sigmoid((logit(image) + flip(logit(flipped image))) / 2), not the
    mean of the two sigmoids."""
    from wsss.data.datasets import normalize, to_tensor
    net = RelationNet(_tiny_classifier(), dim=8)
    with torch.no_grad():
        net.head.out.weight.mul_(200)                 # logits far from 0: the two rules part
    walker = Walker(net, "cam", IRNConfig(), torch.device("cpu"))
    image = np.random.default_rng(1).integers(0, 255, size=(40, 70, 3), dtype=np.uint8)
    x = to_tensor(normalize(image))[None]
    x = torch.nn.functional.pad(torch.cat([x, x.flip(-1)]), (0, (-70) % net.pad_multiple, 0, (-40) % net.pad_multiple))
    with torch.no_grad():
        logits = net.logits(x)[:, :10, :18]
    want = torch.sigmoid((logits[0] + logits[1].flip(-1)) / 2)
    torch.testing.assert_close(walker.boundary(image), want)
    other = (torch.sigmoid(logits[0]) + torch.sigmoid(logits[1].flip(-1))) / 2
    assert (other - want).abs().max() > 1e-3


def test_walker_boundary_is_flip_symmetric_and_labels_are_class_ids():
    net = RelationNet(_tiny_classifier(), dim=8)
    walker = Walker(net, "cam", IRNConfig(walk_radius=3, iterations=8, bg_threshold=0.5), torch.device("cpu"))
    half = np.random.default_rng(0).integers(0, 255, size=(52, 50, 3), dtype=np.uint8)
    image = np.concatenate([half, half[:, ::-1]], axis=1)       # 52 x 100, mirror-symmetric
    b = walker.boundary(image)
    assert b.shape == (13, 25)
    assert torch.allclose(b, b.flip(-1), atol=1e-6)
    cam = np.zeros((2, 52, 100), dtype=np.float32)
    cam[0, :, :30], cam[1, :, 70:] = 1.0, 1.0
    out = walker(image, {"keys": np.array([4, 9]), "cam": cam})
    assert out.shape == (52, 100) and out.dtype == np.uint8
    assert set(np.unique(out).tolist()) <= {0, 4, 9}
    assert (out[:, :20] == 4).mean() > 0.9 and (out[:, 80:] == 9).mean() > 0.9
    rcam_walker = Walker(net, "rcam", IRNConfig(walk_radius=3, iterations=8), torch.device("cpu"))
    rcam = np.concatenate([1 - cam.max(0, keepdims=True), cam])
    out = rcam_walker(image, {"keys": np.array([4, 9]), "cam": cam, "rcam": rcam})
    assert (out[:, 40:60] == 0).mean() > 0.9 and (out[:, :20] == 4).mean() > 0.9
