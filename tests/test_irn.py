"""IRN-style refinement: pair geometry, boundary -> affinity, pair labels, loss, random walk,
joint crops, the relation net and the walker, on small cases whose answers are known."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from wsss.data import voc
from wsss.models import ModelConfig, build_model
from wsss.models.relations import RelationNet
from wsss.refine import affinity, labels
from wsss.refine.irn import STRIDE, IRNConfig, LabelCrops, Walker, train_relations
from wsss.refine.run import ConfidentConfig, confident_label


# --- pair geometry -------------------------------------------------------------------------

@pytest.mark.parametrize("radius", [2, 3, 5, 10])
def test_displacements_are_half_of_the_disc(radius):
    d = affinity.displacements(radius)
    disc = [(y, x) for y in range(-radius, radius + 1) for x in range(-radius, radius + 1)
            if 0 < y * y + x * x < radius * radius]
    assert len(d) * 2 == len(disc) and len(set(d)) == len(d)
    assert not any((-y, -x) in d for y, x in d)        # one direction per pair
    assert affinity.displacements(2) == ((0, 1), (1, -1), (1, 0), (1, 1))


def test_line_cells_by_hand():
    assert affinity.line_cells(0, 3) == ((0, 0), (0, 1), (0, 2), (0, 3))
    assert affinity.line_cells(2, 2) == ((0, 0), (1, 1), (2, 2))
    assert affinity.line_cells(1, -2) == ((0, 0), (0, -1), (1, -2)) or \
        affinity.line_cells(1, -2) == ((0, 0), (1, -1), (1, -2))
    for dy, dx in affinity.displacements(5):
        cells = affinity.line_cells(dy, dx)
        assert cells[0] == (0, 0) and cells[-1] == (dy, dx)
        # consecutive cells touch (8-connected): a wall one cell thick cannot be jumped over
        assert all(max(abs(a[0] - b[0]), abs(a[1] - b[1])) == 1 for a, b in zip(cells, cells[1:]))


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


def test_pair_labels_by_hand():
    lab = torch.tensor([[[0, 0, 1, 255]]])
    pairs = affinity.pair_labels(lab, radius=2)
    k = affinity.displacements(2).index((0, 1))
    assert pairs["bg_pos"][0, k, 0].tolist() == [True, False, False, False]
    assert pairs["neg"][0, k, 0].tolist() == [False, True, False, False]   # 0 | 1
    assert not pairs["fg_pos"].any()                                        # 1 | 255 is unsure
    assert sum(int(v.sum()) for v in pairs.values()) == 2                   # vertical pairs leave the grid
    two = torch.tensor([[[3, 3], [3, 0]]])
    p2 = affinity.pair_labels(two, radius=2)
    # the six pairs of a 2x2 grid: three 3-3, three 3|0
    assert int(p2["fg_pos"].sum()) == 3 and int(p2["neg"].sum()) == 3 and int(p2["bg_pos"].sum()) == 0


def test_relation_loss_by_hand():
    lab = torch.tensor([[[0, 0, 1, 1]]])
    pairs = affinity.pair_labels(lab, radius=2)
    half = affinity.relation_loss(torch.full((1, 4, 1, 4), 0.5), pairs)
    assert half["total"].item() == pytest.approx(math.log(2), rel=1e-4)
    k = affinity.displacements(2).index((0, 1))
    perfect = torch.zeros(1, 4, 1, 4)
    perfect[0, k, 0] = torch.tensor([1.0, 0.0, 1.0, 0.0])  # 0-0 related, 0|1 not, 1-1 related
    assert affinity.relation_loss(perfect, pairs)["total"].item() < 1e-4
    assert affinity.relation_loss(1 - perfect, pairs)["total"].item() > 5


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

def test_confident_label_on_rcam_uses_its_background():
    """R-CAM: a class is confident only where it beats the background channel and conf_fg."""
    rcam = np.zeros((2, 1, 4), dtype=np.float32)
    rcam[0] = [[0.9, 0.1, 0.1, 0.1]]                 # background channel
    rcam[1] = [[0.95, 0.8, 0.2, 0.01]]               # class 7
    maps = {"keys": np.array([7]), "cam": rcam[1:].copy(), "rcam": rcam}
    cfg = ConfidentConfig(kind="rcam", fg_threshold=0.5, bg_threshold=0.05, clean=False)
    image = np.zeros((1, 4, 3), dtype=np.uint8)
    # 0.95 beats the background 0.9: confident class; 0.8 confident; 0.2 unsure; 0.01 background
    assert confident_label(image, maps, cfg).tolist() == [[7, 7, 255, 0]]
    fg = labels.foreground_scores(maps, "rcam")
    assert fg.tolist() == [[[0.949999988079071, 0.800000011920929, 0.20000000298023224, 0.0]]]
    cam_cfg = ConfidentConfig(kind="cam", fg_threshold=0.5, bg_threshold=0.05, clean=False)
    assert confident_label(image, maps, cam_cfg).tolist() == [[7, 7, 255, 0]]


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
        (root / "labels" / f"{image_id}.png").write_bytes(voc.palette_png(lab))
        ids.append(image_id)
        paths.append(root / "labels" / f"{image_id}.png")
    return ids, paths


def test_label_crops_keep_image_and_labels_aligned(tmp_path):
    ids, paths = _write_images(tmp_path)
    cfg = IRNConfig(crop_size=64, resize_long=(60, 120), seed=3)
    ds = LabelCrops(tmp_path, ids, paths, cfg)
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


def _tiny_classifier():
    cfg = ModelConfig(version="v1", backbone="swin_demo", num_classes=20, img_size=64)
    torch.manual_seed(0)
    return build_model(cfg).eval()


def test_relation_net_shapes_and_frozen_backbone(tmp_path):
    net = RelationNet(_tiny_classifier(), dim=8)
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
    summary = train_relations(net, LabelCrops(tmp_path, ids, paths, cfg), cfg, torch.device("cpu"))
    assert summary["epoch"] == 2 and math.isfinite(summary["loss_total"])
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("classifier."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))


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
